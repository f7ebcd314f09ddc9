//! Settings of the dedup/cache layer.

use std::time::Duration;

use portcullis_core::ConfigProblem;
use serde::{Deserialize, Serialize};

/// Settings of the dedup/cache layer (the `[dedup]` section, minus `enabled`, which is the
/// binary's business: a disabled layer is simply not stacked).
///
/// The cap on the bodies the layer buffers is not a setting of the section: it is the
/// gateway's own body cap, given with
/// [`DedupCacheLayer::with_max_body_bytes`](crate::DedupCacheLayer::with_max_body_bytes).
///
/// ```
/// let config: portcullis_dedup_cache::Config =
///     serde_json::from_str(r#"{ "cache_ttl": "30s", "max_entries": 500 }"#).unwrap();
/// assert_eq!(config.cache_ttl, std::time::Duration::from_secs(30));
/// assert!(config.coalesce);
/// assert!(config.validate().is_empty());
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    /// Identical requests in flight at the same time share one upstream call.
    pub coalesce: bool,
    /// `> 0`: completed 2xx non-streaming responses are replayed for this long. `0s`: no cache.
    #[serde(with = "humantime_serde")]
    pub cache_ttl: Duration,
    /// Most responses the in-memory cache holds (least recently used go first).
    pub max_entries: u64,
    /// The in-memory cache's total size bound in bytes (bodies + headers + a small per-entry
    /// overhead), least recently used evicted first. See
    /// [`MemoryStore::bounded`](crate::MemoryStore::bounded) for how the two bounds combine.
    pub max_bytes: u64,
}

/// Default of [`Config::max_bytes`]: 256 MiB.
pub const DEFAULT_MAX_BYTES: u64 = 256 * 1024 * 1024;

impl Default for Config {
    fn default() -> Self {
        Self {
            coalesce: true,
            cache_ttl: Duration::ZERO,
            max_entries: 10_000,
            max_bytes: DEFAULT_MAX_BYTES,
        }
    }
}

impl Config {
    /// Whether responses are cached (`cache_ttl > 0`).
    pub fn caching(&self) -> bool {
        !self.cache_ttl.is_zero()
    }

    /// Every problem with these settings, each with its key (relative to the section).
    pub fn validate(&self) -> Vec<ConfigProblem> {
        let mut problems = Vec::new();
        if self.caching() && self.max_entries < 1 {
            problems.push(ConfigProblem::new(
                "max_entries",
                "must be >= 1 when cache_ttl > 0",
            ));
        }
        if self.caching() && self.max_bytes < 1 {
            problems.push(ConfigProblem::new(
                "max_bytes",
                "must be >= 1 when cache_ttl > 0",
            ));
        }
        problems
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_match_the_interface() {
        let c: Config = serde_json::from_str("{}").unwrap();
        assert_eq!(c, Config::default());
        assert!(c.coalesce);
        assert_eq!(c.cache_ttl, Duration::ZERO);
        assert!(!c.caching());
        assert_eq!(c.max_entries, 10_000);
        assert_eq!(c.max_bytes, 268_435_456, "interface.md [dedup] max_bytes");
        assert!(c.validate().is_empty());
    }

    #[test]
    fn reports_every_problem() {
        let c: Config =
            serde_json::from_str(r#"{ "cache_ttl": "5m", "max_entries": 0, "max_bytes": 0 }"#)
                .unwrap();
        let paths: Vec<_> = c.validate().into_iter().map(|p| p.path).collect();
        assert_eq!(paths, ["max_entries", "max_bytes"]);
    }

    #[test]
    fn zero_entries_is_fine_without_a_cache() {
        let c = Config {
            max_entries: 0,
            ..Config::default()
        };
        assert!(c.validate().is_empty());
    }

    #[test]
    fn unknown_keys_are_rejected() {
        let e = serde_json::from_str::<Config>(r#"{ "ttl": "1s" }"#).unwrap_err();
        assert!(e.to_string().contains("ttl"), "{e}");
    }

    #[test]
    fn round_trips() {
        let c = Config {
            coalesce: false,
            cache_ttl: Duration::from_millis(1500),
            max_entries: 7,
            max_bytes: 4096,
        };
        let back: Config = serde_json::from_str(&serde_json::to_string(&c).unwrap()).unwrap();
        assert_eq!(back, c);
    }
}
