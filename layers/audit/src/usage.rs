//! [`UsageTable`]: requests, tokens and errors per gateway key and model since start, for
//! `GET /admin/usage`.

use std::{
    collections::HashMap,
    fmt,
    sync::{Arc, Mutex},
    time::SystemTime,
};

use serde::Serialize;
use serde_json::{json, Value};

/// Counts for one (key, model) pair.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct Counts {
    /// Requests answered (whatever their status).
    pub requests: u64,
    /// Of those, failed ones: a status of 400 or more, or a body that failed mid-way.
    pub errors: u64,
    /// Input tokens reported by the upstream (cached ones included).
    pub input_tokens: u64,
    /// Output tokens reported by the upstream.
    pub output_tokens: u64,
    /// Input tokens served from the provider's prompt cache.
    pub cached_tokens: u64,
}

impl Counts {
    fn add(&mut self, other: &Counts) {
        self.requests = self.requests.saturating_add(other.requests);
        self.errors = self.errors.saturating_add(other.errors);
        self.input_tokens = self.input_tokens.saturating_add(other.input_tokens);
        self.output_tokens = self.output_tokens.saturating_add(other.output_tokens);
        self.cached_tokens = self.cached_tokens.saturating_add(other.cached_tokens);
    }
}

/// The label of the pair that takes every pair past the table's cap, and the model of
/// requests that matched no `[[models]]` entry.
pub const OTHER: &str = "other";

type Pair = (Option<Arc<str>>, Arc<str>);

/// Models per key; requests without a key under `None`. Two levels so a lookup borrows the
/// names (`&str`) instead of building a pair.
#[derive(Default)]
struct Pairs {
    anonymous: HashMap<Arc<str>, Counts>,
    by_key: HashMap<Arc<str>, HashMap<Arc<str>, Counts>>,
    len: usize,
}

impl Pairs {
    fn get_mut(&mut self, key: Option<&str>, model: &str) -> Option<&mut Counts> {
        match key {
            None => self.anonymous.get_mut(model),
            Some(k) => self.by_key.get_mut(k)?.get_mut(model),
        }
    }

    fn insert(&mut self, key: Option<&str>, model: &str, counts: Counts) {
        let models = match key {
            None => &mut self.anonymous,
            Some(k) => self.by_key.entry(Arc::from(k)).or_default(),
        };
        models.insert(Arc::from(model), counts);
        self.len += 1;
    }

    fn rows(&self) -> Vec<(Pair, Counts)> {
        let anonymous = self.anonymous.iter().map(|(m, c)| ((None, m.clone()), *c));
        let keyed = self.by_key.iter().flat_map(|(k, models)| {
            models
                .iter()
                .map(move |(m, c)| ((Some(k.clone()), m.clone()), *c))
        });
        anonymous.chain(keyed).collect()
    }
}

/// Requests, tokens and errors per gateway key name and `[[models]]` entry since start.
///
/// Keys are [`KeyName`](crate::KeyName)s (`null` for requests without one), models the
/// entry a request matched (`RouteInfo.entry`, else `other`): configured names only, so
/// clients cannot grow it. It is bounded all the same: past `max_entries` distinct pairs,
/// new pairs are counted together under key `other`, model `other`.
///
/// Shared in an `Arc` by the layer, its services and the [`AuditHandle`](crate::AuditHandle).
pub struct UsageTable {
    since: SystemTime,
    max_entries: usize,
    pairs: Mutex<Pairs>,
}

impl fmt::Debug for UsageTable {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("UsageTable")
            .field("max_entries", &self.max_entries)
            .finish_non_exhaustive()
    }
}

impl UsageTable {
    /// An empty table that keeps at most `max_entries` pairs (at least 1).
    pub fn new(max_entries: usize) -> Self {
        Self {
            since: SystemTime::now(),
            max_entries: max_entries.max(1),
            pairs: Mutex::new(Pairs::default()),
        }
    }

    /// Count `counts` for the pair (`key`, `model`).
    pub fn record(&self, key: Option<&str>, model: &str, counts: &Counts) {
        let mut pairs = self.pairs.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(c) = pairs.get_mut(key, model) {
            c.add(counts);
            return;
        }
        let (key, model) = if pairs.len + 1 >= self.max_entries {
            // The last slot is kept for the overflow pair.
            (Some(OTHER), OTHER)
        } else {
            (key, model)
        };
        if let Some(c) = pairs.get_mut(key, model) {
            c.add(counts);
            return;
        }
        pairs.insert(key, model, *counts);
    }

    /// Counts of one pair (`None`: never seen).
    pub fn get(&self, key: Option<&str>, model: &str) -> Option<Counts> {
        let mut pairs = self.pairs.lock().unwrap_or_else(|p| p.into_inner());
        pairs.get_mut(key, model).map(|c| *c)
    }

    /// Distinct pairs counted (the overflow pair included).
    pub fn len(&self) -> usize {
        self.pairs.lock().unwrap_or_else(|p| p.into_inner()).len
    }

    /// Whether nothing was counted yet.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The body of `GET /admin/usage`:
    ///
    /// ```json
    /// {"since": "2025-01-01T00:00:00.000Z",
    ///  "totals": {"requests": 3, "errors": 1, "input_tokens": 40, "output_tokens": 9, "cached_tokens": 0},
    ///  "usage": [{"key": "team-a", "model": "gpt-4o-mini", "requests": 2, "errors": 0, ...},
    ///            {"key": null, "model": "other", ...}]}
    /// ```
    ///
    /// Rows are sorted by key (`null` first), then model.
    pub fn to_json(&self) -> Value {
        let mut rows: Vec<(Pair, Counts)> = {
            let pairs = self.pairs.lock().unwrap_or_else(|p| p.into_inner());
            pairs.rows()
        };
        rows.sort_by(|a, b| a.0.cmp(&b.0));
        let mut totals = Counts::default();
        let usage: Vec<Value> = rows
            .iter()
            .map(|((key, model), c)| {
                totals.add(c);
                json!({
                    "key": key.as_deref(),
                    "model": &**model,
                    "requests": c.requests,
                    "errors": c.errors,
                    "input_tokens": c.input_tokens,
                    "output_tokens": c.output_tokens,
                    "cached_tokens": c.cached_tokens,
                })
            })
            .collect();
        json!({
            "since": humantime::format_rfc3339_millis(self.since).to_string(),
            "totals": totals,
            "usage": usage,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn one(input: u64) -> Counts {
        Counts {
            requests: 1,
            input_tokens: input,
            ..Counts::default()
        }
    }

    #[test]
    fn counts_per_pair_and_caps_the_pairs() {
        let t = UsageTable::new(3);
        t.record(Some("a"), "m", &one(1));
        t.record(Some("a"), "m", &one(2));
        t.record(None, "m", &one(4));
        t.record(Some("b"), "m", &one(8));
        t.record(Some("c"), "n", &one(16));
        assert_eq!(t.get(Some("a"), "m").unwrap().input_tokens, 3);
        assert_eq!(t.get(None, "m").unwrap().requests, 1);
        let other = t.get(Some(OTHER), OTHER).unwrap();
        assert_eq!((other.requests, other.input_tokens), (2, 24));
        assert_eq!(t.len(), 3);
        let j = t.to_json();
        assert_eq!(j["totals"]["requests"], 5);
        assert_eq!(j["totals"]["input_tokens"], 31);
        assert_eq!(j["usage"][0]["key"], Value::Null);
        assert_eq!(j["usage"].as_array().unwrap().len(), 3);
        assert!(j["since"].as_str().unwrap().ends_with('Z'));
    }
}
