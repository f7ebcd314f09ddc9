//! `GET /v1/models`: the configured models in OpenAI's list shape, with each pattern entry
//! (`claude-*`, `*`) listed as the models its upstream's own `GET /v1/models` reports.
//!
//! The list is also Anthropic's shape: each entry carries Anthropic's fields beside OpenAI's
//! (`type: "model"`, `display_name`, `created_at`) and the list its paging fields
//! (`has_more`, `first_id`, `last_id`), so both SDKs' `models.list()` read it whole; each
//! client ignores the other API's fields.
//!
//! An upstream is asked at most once a minute per caller credential: with `auth =
//! "passthrough"` the caller's key is what the upstream sees, and model lists differ by key and
//! organization, so the cache key is the upstream and a hash of the credential headers sent.
//! The question goes through the upstream's service stack (retry, breaker, cookies) and is
//! bounded by [`FETCH_TIMEOUT`]; when it fails (error, non-2xx, not a model list) the pattern
//! itself is listed, and that answer is kept for the minute too, so a dead upstream does not
//! cost every caller a timeout.

use std::{
    collections::{HashMap, HashSet},
    sync::Arc,
    time::Duration,
};

use axum::body::Body;
use http::{HeaderMap, HeaderName, HeaderValue, Request};
use http_body_util::BodyExt;
use portcullis_core::ModelPattern;
use tower::ServiceExt;

use crate::{config::ModelConfig, upstream::ModelRouter};

/// How long an upstream's answer is kept.
pub const LIST_TTL: Duration = Duration::from_secs(60);
/// How long an upstream has to answer (retries included).
pub const FETCH_TIMEOUT: Duration = Duration::from_secs(5);
/// Upstream x caller pairs kept at once; the least recently used go first.
const MAX_CACHED_LISTS: u64 = 4096;
/// A model list larger than this is not a model list.
const MAX_LIST_BYTES: usize = 4 * 1024 * 1024;

/// The caller's headers sent with the question, and hashed into the cache key: whatever
/// decides which models an account sees. Nothing else of the caller's goes upstream.
const FORWARDED: [&str; 5] = [
    "authorization",
    "x-api-key",
    "openai-organization",
    "openai-project",
    "anthropic-version",
];

/// Anthropic's `GET /v1/models` requires a version; OpenAI-shaped upstreams ignore it.
const ANTHROPIC_VERSION: &str = "2023-06-01";

/// One model an upstream reported.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
struct Reported {
    id: String,
    /// OpenAI's `created` (Unix seconds; 0 when only Anthropic's `created_at` was given).
    created: i64,
    /// Anthropic's `display_name`, when the upstream gave one.
    display_name: Option<String>,
    /// Anthropic's `created_at` (RFC 3339), when the upstream gave one.
    created_at: Option<String>,
}

type Reports = Option<Arc<[Reported]>>;

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
struct CacheKey {
    upstream: Arc<str>,
    caller: [u8; 32],
}

/// The model list behind `GET /v1/models`. Cloning shares the cache.
#[derive(Clone)]
pub struct ModelCatalog {
    inner: Arc<Inner>,
}

struct Inner {
    router: ModelRouter,
    /// `[[models]]` name and upstream, in config order.
    entries: Vec<(String, String)>,
    cache: moka::future::Cache<CacheKey, Reports>,
}

impl std::fmt::Debug for ModelCatalog {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ModelCatalog")
            .field("entries", &self.inner.entries.len())
            .field("cached_lists", &self.inner.cache.entry_count())
            .finish()
    }
}

impl ModelCatalog {
    /// List `models`, asking their upstreams through `router`'s service stacks.
    pub fn new(router: ModelRouter, models: &[ModelConfig]) -> Self {
        Self {
            inner: Arc::new(Inner {
                router,
                entries: models
                    .iter()
                    .map(|m| (m.name.clone(), m.upstream.clone()))
                    .collect(),
                cache: moka::future::Cache::builder()
                    .max_capacity(MAX_CACHED_LISTS)
                    .time_to_live(LIST_TTL)
                    .build(),
            }),
        }
    }

    /// The list for a caller with these request headers, OpenAI's list shape.
    pub async fn list(&self, caller: &HeaderMap) -> serde_json::Value {
        let forwarded = forwarded_headers(caller);
        let key = caller_hash(&forwarded);
        // Each upstream behind a pattern entry is asked once, all of them at the same time.
        let mut upstreams: Vec<&str> = self
            .inner
            .entries
            .iter()
            .filter(|(name, _)| !matches!(ModelPattern::parse(name), ModelPattern::Exact(_)))
            .map(|(_, upstream)| upstream.as_str())
            .collect();
        upstreams.sort_unstable();
        upstreams.dedup();
        let asked = futures_util::future::join_all(upstreams.iter().map(|u| {
            let cache_key = CacheKey {
                upstream: (*u).into(),
                caller: key,
            };
            let forwarded = forwarded.clone();
            async move {
                let reports = self
                    .inner
                    .cache
                    .get_with(cache_key, fetch(&self.inner.router, u, forwarded))
                    .await;
                (*u, reports)
            }
        }))
        .await;
        let reports: HashMap<&str, Reports> = asked.into_iter().collect();
        let data = expand(&self.inner.entries, &reports, |id| {
            self.inner.router.resolve(id).map(|r| r.name.as_str())
        });
        let id_at =
            |i: Option<&serde_json::Value>| i.map_or(serde_json::Value::Null, |m| m["id"].clone());
        serde_json::json!({
            "object": "list",
            "first_id": id_at(data.first()),
            "last_id": id_at(data.last()),
            "has_more": false,
            "data": data,
        })
    }
}

/// The list entries: exact names as configured; a pattern as the reported models it matches
/// and would route (a model that an exact name or a longer prefix claims is listed there,
/// not under `*`), or as itself when its upstream's list is unknown. No id twice.
fn expand<'a>(
    entries: &[(String, String)],
    reports: &HashMap<&str, Reports>,
    resolve: impl Fn(&str) -> Option<&'a str>,
) -> Vec<serde_json::Value> {
    let mut seen = HashSet::new();
    let mut out = Vec::new();
    let mut push = |id: &str, reported: Option<&Reported>, upstream: &str| {
        if seen.insert(id.to_string()) {
            let created = reported.map_or(0, |r| r.created);
            let created_at = reported
                .and_then(|r| r.created_at.clone())
                .unwrap_or_else(|| {
                    // Whole seconds, as Anthropic writes them: `...T00:00:00Z`.
                    let secs = u64::try_from(created).unwrap_or(0);
                    let at = std::time::UNIX_EPOCH + Duration::from_secs(secs);
                    humantime::format_rfc3339_seconds(at).to_string()
                });
            let display_name = reported
                .and_then(|r| r.display_name.as_deref())
                .unwrap_or(id);
            out.push(serde_json::json!({
                "id": id,
                "object": "model",
                "created": created,
                "owned_by": upstream,
                "type": "model",
                "display_name": display_name,
                "created_at": created_at,
            }));
        }
    };
    for (name, upstream) in entries {
        let pattern = ModelPattern::parse(name);
        if matches!(pattern, ModelPattern::Exact(_)) {
            push(name, None, upstream);
            continue;
        }
        match reports.get(upstream.as_str()).cloned().flatten() {
            Some(models) => {
                for m in models.iter() {
                    if pattern.matches(&m.id) && resolve(&m.id) == Some(name.as_str()) {
                        push(&m.id, Some(m), upstream);
                    }
                }
            }
            None => push(name, None, upstream),
        }
    }
    out
}

fn forwarded_headers(caller: &HeaderMap) -> HeaderMap {
    let mut out = HeaderMap::new();
    for name in FORWARDED {
        for v in caller.get_all(name) {
            out.append(HeaderName::from_static(name), v.clone());
        }
    }
    out
}

/// A hash of exactly what is forwarded: callers who send the same credentials share a list.
fn caller_hash(forwarded: &HeaderMap) -> [u8; 32] {
    let mut h = blake3::Hasher::new();
    for name in FORWARDED {
        for v in forwarded.get_all(name) {
            h.update(name.as_bytes());
            h.update(b"\0");
            h.update(v.as_bytes());
            h.update(b"\0");
        }
    }
    *h.finalize().as_bytes()
}

/// Ask `upstream` for its models; `None` when it cannot say.
async fn fetch(router: &ModelRouter, upstream: &str, forwarded: HeaderMap) -> Reports {
    let asked = tokio::time::timeout(FETCH_TIMEOUT, ask(router, upstream, forwarded)).await;
    match asked {
        Ok(Ok(models)) => {
            tracing::debug!(upstream, models = models.len(), "upstream model list");
            Some(models.into())
        }
        Ok(Err(why)) => {
            tracing::warn!(upstream, error = %why, "upstream model list unavailable; listing the pattern");
            None
        }
        Err(_) => {
            tracing::warn!(upstream, timeout = ?FETCH_TIMEOUT, "upstream model list timed out; listing the pattern");
            None
        }
    }
}

async fn ask(
    router: &ModelRouter,
    upstream: &str,
    forwarded: HeaderMap,
) -> Result<Vec<Reported>, String> {
    let (template, service) = router
        .upstream(upstream)
        .ok_or_else(|| format!("no upstream named {upstream:?}"))?;
    let uri = template
        .uri_for("/v1/models")
        .map_err(|e| format!("url: {e}"))?;
    let mut headers = forwarded;
    template.prepare_headers(&mut headers);
    if !headers.contains_key("anthropic-version") {
        headers.insert(
            "anthropic-version",
            HeaderValue::from_static(ANTHROPIC_VERSION),
        );
    }
    let mut req = Request::get(uri)
        .body(Body::empty())
        .map_err(|e| e.to_string())?;
    *req.headers_mut() = headers;
    let resp = service
        .clone()
        .oneshot(req)
        .await
        .map_err(|e| e.to_string())?;
    let status = resp.status();
    if !status.is_success() {
        return Err(format!("status {status}"));
    }
    let body = http_body_util::Limited::new(resp.into_body(), MAX_LIST_BYTES)
        .collect()
        .await
        .map_err(|e| format!("body: {e}"))?
        .to_bytes();
    parse_list(&body)
}

/// The ids (and `created`) of an OpenAI or Anthropic model list: `{"data": [{"id": ...}]}`.
fn parse_list(body: &[u8]) -> Result<Vec<Reported>, String> {
    let v: serde_json::Value =
        serde_json::from_slice(body).map_err(|e| format!("not JSON: {e}"))?;
    let data = v
        .get("data")
        .and_then(|d| d.as_array())
        .ok_or("no \"data\" list")?;
    Ok(data
        .iter()
        .filter_map(|m| {
            let id = m.get("id")?.as_str()?;
            let text = |key: &str| m.get(key).and_then(|v| v.as_str()).map(str::to_owned);
            Some(Reported {
                id: id.to_string(),
                created: m.get("created").and_then(|c| c.as_i64()).unwrap_or(0),
                display_name: text("display_name"),
                created_at: text("created_at"),
            })
        })
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn reported(ids: &[&str]) -> Reports {
        Some(
            ids.iter()
                .map(|id| Reported {
                    id: id.to_string(),
                    created: 1,
                    ..Reported::default()
                })
                .collect::<Vec<_>>()
                .into(),
        )
    }

    fn ids(list: &[serde_json::Value]) -> Vec<(String, String)> {
        list.iter()
            .map(|m| {
                (
                    m["id"].as_str().unwrap().to_string(),
                    m["owned_by"].as_str().unwrap().to_string(),
                )
            })
            .collect()
    }

    #[test]
    fn patterns_expand_to_the_models_they_route() {
        let entries: Vec<(String, String)> = [("*", "b"), ("claude-*", "a"), ("gpt-4o", "c")]
            .iter()
            .map(|(n, u)| (n.to_string(), u.to_string()))
            .collect();
        let resolve = |id: &str| -> Option<&str> {
            Some(if id == "gpt-4o" {
                "gpt-4o"
            } else if id.starts_with("claude-") {
                "claude-*"
            } else {
                "*"
            })
        };
        let reports: HashMap<&str, Reports> = [
            ("a", reported(&["claude-x", "claude-y", "other"])),
            ("b", reported(&["gpt-4o", "gpt-4o-mini", "claude-x", "o3"])),
        ]
        .into_iter()
        .collect();
        let list = expand(&entries, &reports, resolve);
        assert_eq!(
            ids(&list),
            [
                ("gpt-4o-mini", "b"),
                ("o3", "b"),
                ("claude-x", "a"),
                ("claude-y", "a"),
                ("gpt-4o", "c"),
            ]
            .map(|(i, u)| (i.to_string(), u.to_string()))
        );
        assert_eq!(list[0]["created"], 1);
        // Anthropic's fields beside OpenAI's: both SDKs read the same list.
        assert_eq!(list[0]["type"], "model");
        assert_eq!(list[0]["display_name"], "gpt-4o-mini");
        assert_eq!(list[0]["created_at"], "1970-01-01T00:00:01Z");

        // An upstream that could not say: its pattern is listed as itself.
        let reports: HashMap<&str, Reports> = [("a", None), ("b", reported(&["gpt-4o-mini"]))]
            .into_iter()
            .collect();
        let list = expand(&entries, &reports, resolve);
        assert_eq!(
            ids(&list),
            [("gpt-4o-mini", "b"), ("claude-*", "a"), ("gpt-4o", "c")]
                .map(|(i, u)| (i.to_string(), u.to_string()))
        );
    }

    #[test]
    fn the_cache_key_is_the_forwarded_credentials() {
        let mut a = HeaderMap::new();
        a.insert("authorization", "Bearer one".parse().unwrap());
        a.insert("user-agent", "x".parse().unwrap());
        let mut b = a.clone();
        b.insert("user-agent", "y".parse().unwrap());
        assert_eq!(
            caller_hash(&forwarded_headers(&a)),
            caller_hash(&forwarded_headers(&b))
        );
        assert!(forwarded_headers(&a).get("user-agent").is_none());
        b.insert("authorization", "Bearer two".parse().unwrap());
        assert_ne!(
            caller_hash(&forwarded_headers(&a)),
            caller_hash(&forwarded_headers(&b))
        );
        b.remove("authorization");
        b.insert("x-api-key", "one".parse().unwrap());
        assert_ne!(
            caller_hash(&forwarded_headers(&a)),
            caller_hash(&forwarded_headers(&b))
        );
    }

    #[test]
    fn openai_and_anthropic_lists_parse() {
        let openai = br#"{"object":"list","data":[{"id":"gpt-4o","object":"model","created":5,"owned_by":"openai"}]}"#;
        assert_eq!(
            parse_list(openai).unwrap(),
            vec![Reported {
                id: "gpt-4o".into(),
                created: 5,
                ..Reported::default()
            }]
        );
        let anthropic = br#"{"data":[{"type":"model","id":"claude-sonnet-4-5","display_name":"Claude","created_at":"2025-09-29T00:00:00Z"}],"has_more":false}"#;
        let parsed = parse_list(anthropic).unwrap();
        assert_eq!(parsed[0].id, "claude-sonnet-4-5");
        assert_eq!(parsed[0].display_name.as_deref(), Some("Claude"));
        assert_eq!(
            parsed[0].created_at.as_deref(),
            Some("2025-09-29T00:00:00Z")
        );
        assert!(parse_list(b"<html>").is_err());
        assert!(parse_list(br#"{"error":{}}"#).is_err());
    }
}
