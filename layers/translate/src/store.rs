//! The Responses API's stored state, for upstreams that have none: the items of the answers
//! this layer translated, so a client's `item_reference` and `previous_response_id` resolve.
//!
//! OpenAI keeps every response (`store`, default true) and clients lean on it: the Vercel AI
//! SDK's OpenAI provider sends an earlier answer back as `{"type": "item_reference", "id":
//! "msg_.."}` instead of its text, and many apps continue a conversation with
//! `previous_response_id`. Anthropic and chat upstreams keep nothing, so without this the
//! second turn of such a client is refused. The layer keeps, per caller ([`CallerId`]: one
//! caller can never reference another's items), each translated answer's output items by id
//! and its whole conversation (input as resolved, then output) by response id, in memory,
//! bounded in bytes and dropped after [`StoreConfig::ttl`] without use. A request with
//! `store: false` (Codex sends it) is not kept.
//!
//! In one process the items live in memory; with [`ResponseStore::with_redis`] (the gateway's
//! `state.backend = "redis"`) they are also written to Redis, so the replica that serves the
//! next turn finds what another one answered. Every Redis call is bounded (the
//! [`RemoteHealth`] shared with the other stores); while Redis is away the local copy still
//! serves the replica that answered, and a reference it does not hold is refused, clearly.

use std::{sync::Arc, time::Duration};

use bytes::Bytes;
use moka::sync::Cache;
use portcullis_core::{
    remote::{Guarded, RemoteHealth},
    CallerId, ConfigProblem,
};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use crate::{api::Format, error::TranslateError};

/// Settings of the store (the gateway's `[translation]` section).
///
/// ```
/// let c: portcullis_translate::StoreConfig =
///     serde_json::from_str(r#"{"store_max_bytes": 1048576, "store_ttl": "10m"}"#).unwrap();
/// assert_eq!(c.store_ttl, std::time::Duration::from_secs(600));
/// assert!(c.validate().is_empty());
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct StoreConfig {
    /// The most bytes of stored items (their JSON) kept; least recently used go first. `0`
    /// keeps nothing (references are then refused).
    pub store_max_bytes: u64,
    /// How long an item is kept after it was last stored or used.
    #[serde(with = "humantime_serde")]
    pub store_ttl: Duration,
}

/// Default of [`StoreConfig::store_max_bytes`]: 64 MiB.
pub const DEFAULT_STORE_MAX_BYTES: u64 = 64 * 1024 * 1024;

/// Default of [`StoreConfig::store_ttl`]: one hour.
pub const DEFAULT_STORE_TTL: Duration = Duration::from_secs(3600);

impl Default for StoreConfig {
    fn default() -> Self {
        StoreConfig {
            store_max_bytes: DEFAULT_STORE_MAX_BYTES,
            store_ttl: DEFAULT_STORE_TTL,
        }
    }
}

impl StoreConfig {
    /// Every problem with these settings, each with its key.
    pub fn validate(&self) -> Vec<ConfigProblem> {
        let mut problems = Vec::new();
        if self.store_max_bytes > 0 && self.store_ttl.is_zero() {
            problems.push(ConfigProblem::new(
                "store_ttl",
                "must be more than 0s (set store_max_bytes = 0 to keep nothing)",
            ));
        }
        problems
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
enum Key {
    /// An output item, by its id.
    Item(CallerId, Box<str>),
    /// A response's conversation (input then output items, a JSON array), by response id.
    Conversation(CallerId, Box<str>),
    /// The response object itself (`GET /v1/responses/{id}`), by response id.
    Response(CallerId, Box<str>),
}

/// Ids longer than this are never looked up (a client names them; keys stay small).
const MAX_ID_LEN: usize = 256;

impl Key {
    fn id(&self) -> &str {
        match self {
            Key::Item(_, id) | Key::Conversation(_, id) | Key::Response(_, id) => id,
        }
    }

    /// The Redis key: prefix, caller (hex), kind, id.
    fn redis(&self, prefix: &str) -> String {
        let (caller, kind) = match self {
            Key::Item(c, _) => (c, "i"),
            Key::Conversation(c, _) => (c, "c"),
            Key::Response(c, _) => (c, "r"),
        };
        format!("{prefix}{}:{kind}:{}", caller.to_hex(), self.id())
    }
}

/// The default prefix of the store's Redis keys.
pub const REDIS_KEY_PREFIX: &str = "portcullis:responses:";

/// The store's copy in Redis, shared by every replica pointing at it: `SET key json PX ttl`,
/// read back with `GETEX key PX ttl` (each use keeps an item as long again, as in memory).
#[derive(Clone)]
pub struct RedisItems {
    conn: redis::aio::ConnectionManager,
    health: RemoteHealth,
    prefix: Arc<str>,
}

impl std::fmt::Debug for RedisItems {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisItems")
            .field("prefix", &self.prefix)
            .field("health", &self.health)
            .finish_non_exhaustive()
    }
}

impl RedisItems {
    /// On `conn` (a [`Guarded`] connection shares its health with the other stores).
    pub fn new(conn: impl Into<Guarded<redis::aio::ConnectionManager>>) -> Self {
        let (conn, health) = conn.into().into_parts();
        RedisItems {
            conn,
            health,
            prefix: REDIS_KEY_PREFIX.into(),
        }
    }

    /// Use `prefix` instead of [`REDIS_KEY_PREFIX`].
    pub fn with_prefix(mut self, prefix: impl Into<Arc<str>>) -> Self {
        self.prefix = prefix.into();
        self
    }

    async fn get(&self, key: &Key, ttl: Duration) -> Option<Bytes> {
        let mut cmd = redis::cmd("GETEX");
        cmd.arg(key.redis(&self.prefix)).arg("PX").arg(millis(ttl));
        let mut conn = self.conn.clone();
        match self
            .health
            .call(async { cmd.query_async::<Option<Vec<u8>>>(&mut conn).await })
            .await
        {
            Ok(v) => v.map(Bytes::from),
            Err(e) => {
                tracing::debug!(error = %e, "stored responses: Redis did not answer a read");
                None
            }
        }
    }

    async fn delete(&self, keys: &[Key]) {
        let mut cmd = redis::cmd("DEL");
        for k in keys {
            cmd.arg(k.redis(&self.prefix));
        }
        let mut conn = self.conn.clone();
        if let Err(e) = self
            .health
            .call(async { cmd.query_async::<()>(&mut conn).await })
            .await
        {
            tracing::debug!(error = %e, "stored responses: Redis did not take a delete");
        }
    }

    async fn set(&self, key: Key, value: Bytes, ttl: Duration) {
        let mut cmd = redis::cmd("SET");
        cmd.arg(key.redis(&self.prefix))
            .arg(value.as_ref())
            .arg("PX")
            .arg(millis(ttl));
        let mut conn = self.conn.clone();
        if let Err(e) = self
            .health
            .call(async { cmd.query_async::<()>(&mut conn).await })
            .await
        {
            tracing::debug!(error = %e, "stored responses: Redis did not take a write");
        }
    }
}

fn millis(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX).max(1)
}

/// The store: cheap to clone (every clone is the same store).
#[derive(Clone)]
pub struct ResponseStore {
    cache: Option<Cache<Key, Bytes>>,
    remote: Option<RedisItems>,
    ttl: Duration,
}

impl std::fmt::Debug for ResponseStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ResponseStore")
            .field("enabled", &self.cache.is_some())
            .field("remote", &self.remote)
            .field("ttl", &self.ttl)
            .finish()
    }
}

impl Default for ResponseStore {
    fn default() -> Self {
        Self::new(&StoreConfig::default())
    }
}

impl ResponseStore {
    /// A store with these settings.
    pub fn new(config: &StoreConfig) -> Self {
        let cache = (config.store_max_bytes > 0).then(|| {
            Cache::builder()
                .max_capacity(config.store_max_bytes)
                // The JSON's size and the key's: what the entry costs, near enough.
                .weigher(|k: &Key, v: &Bytes| {
                    u32::try_from(v.len() + k.id().len() + 64).unwrap_or(u32::MAX)
                })
                .time_to_idle(config.store_ttl)
                .build()
        });
        ResponseStore {
            cache,
            remote: None,
            ttl: config.store_ttl,
        }
    }

    /// Also keep the items in Redis, for the other replicas (a disabled store stays off).
    pub fn with_redis(mut self, remote: RedisItems) -> Self {
        if self.cache.is_some() {
            self.remote = Some(remote);
        }
        self
    }

    /// A store that keeps nothing.
    pub fn disabled() -> Self {
        ResponseStore {
            cache: None,
            remote: None,
            ttl: Duration::ZERO,
        }
    }

    /// The entry for `key`: in memory, else in Redis (then kept in memory too).
    async fn lookup(&self, cache: &Cache<Key, Bytes>, key: Key) -> Option<Bytes> {
        if key.id().len() > MAX_ID_LEN {
            return None;
        }
        if let Some(v) = cache.get(&key) {
            return Some(v);
        }
        let v = self.remote.as_ref()?.get(&key, self.ttl).await?;
        cache.insert(key, v.clone());
        Some(v)
    }

    /// The stored response `id` of `caller` (`GET /v1/responses/{id}`).
    pub async fn response(&self, caller: CallerId, id: &str) -> Option<Bytes> {
        let cache = self.cache.as_ref()?;
        self.lookup(cache, Key::Response(caller, id.into())).await
    }

    /// The input items of the stored response `id` of `caller`, oldest first
    /// (`GET /v1/responses/{id}/input_items`): its conversation without its output.
    pub async fn input_items(&self, caller: CallerId, id: &str) -> Option<Vec<Value>> {
        let cache = self.cache.as_ref()?;
        let response: Value = serde_json::from_slice(&self.response(caller, id).await?).ok()?;
        let outputs = response
            .get("output")
            .and_then(Value::as_array)
            .map_or(0, Vec::len);
        let conv = self
            .lookup(cache, Key::Conversation(caller, id.into()))
            .await?;
        let mut items: Vec<Value> = serde_json::from_slice(&conv).ok()?;
        items.truncate(items.len().saturating_sub(outputs));
        // As OpenAI lists them: a message's text as a content part, every item with an id
        // (one the client gave none gets one made from the response's id and its place, the
        // same on every read: `after` pages by it).
        let base = id.strip_prefix("resp_").unwrap_or(id);
        for (i, item) in items.iter_mut().enumerate() {
            if item.get("id").and_then(Value::as_str).is_none() {
                if let Value::Object(map) = item {
                    let kind = match map.get("type").and_then(Value::as_str) {
                        None | Some("message") => "msg",
                        Some(_) => "item",
                    };
                    map.insert("id".into(), Value::String(format!("{kind}_{base}_in{i}")));
                }
            }
            if item.get("type").is_none() && item.get("role").is_some() {
                item["type"] = Value::String("message".into());
            }
            if let Some(Value::String(text)) = item.get("content") {
                let kind = match item.get("role").and_then(Value::as_str) {
                    Some("assistant") => "output_text",
                    _ => "input_text",
                };
                let parts = serde_json::json!([{"type": kind, "text": text}]);
                item["content"] = parts;
            }
        }
        Some(items)
    }

    /// Forget the stored response `id` of `caller` and its items; whether it was there.
    pub async fn delete(&self, caller: CallerId, id: &str) -> bool {
        let Some(cache) = &self.cache else {
            return false;
        };
        let Some(stored) = self.response(caller, id).await else {
            return false;
        };
        let mut keys = vec![
            Key::Response(caller, id.into()),
            Key::Conversation(caller, id.into()),
        ];
        if let Ok(Value::Object(r)) = serde_json::from_slice::<Value>(&stored) {
            let items = r
                .get("output")
                .and_then(Value::as_array)
                .into_iter()
                .flatten();
            keys.extend(
                items
                    .filter_map(|i| i.get("id").and_then(Value::as_str))
                    .map(|i| Key::Item(caller, i.into())),
            );
        }
        for k in &keys {
            cache.invalidate(k);
        }
        if let Some(remote) = &self.remote {
            remote.delete(&keys).await;
        }
        true
    }

    /// Bytes held in memory (moka's weighted size; eviction runs in the background).
    pub fn weighted_size(&self) -> u64 {
        self.cache.as_ref().map_or(0, |c| {
            c.run_pending_tasks();
            c.weighted_size()
        })
    }

    /// Read a Responses request for the store: each `item_reference` replaced by the item
    /// it names, a `previous_response_id`'s conversation put before the input. Returns the
    /// body to translate (the same bytes when nothing was replaced) and, unless the request
    /// says `store: false`, what [`Pending::record`] needs to keep the answer.
    ///
    /// What the stored items add counts against `limit` (the body limit): a request naming
    /// one large item many times, or a long conversation, is refused, not built in memory.
    pub async fn prepare(
        &self,
        caller: CallerId,
        body: Bytes,
        limit: usize,
    ) -> Result<(Bytes, Option<Pending>), TranslateError> {
        let Some(cache) = &self.cache else {
            return Ok((body, None));
        };
        let refs = has_refs(&body);
        if nothing_to_do(&body, refs) {
            return Ok((body, None));
        }
        // Not JSON, or not an object: translation says what is wrong with it.
        let Ok(Value::Object(mut req)) = serde_json::from_slice::<Value>(&body) else {
            return Ok((body, None));
        };
        let keep = req.get("store") != Some(&Value::Bool(false));
        let previous = match req.get("previous_response_id") {
            Some(Value::String(id)) => Some(id.clone()),
            _ => None,
        };
        if !keep && !refs && previous.is_none() {
            return Ok((body, None));
        }
        let mut input = match req.remove("input") {
            Some(Value::Array(items)) => items,
            Some(Value::String(s)) => {
                vec![serde_json::json!({"type": "message", "role": "user", "content": s})]
            }
            Some(Value::Null) | None => Vec::new(),
            Some(other) => {
                // Not a list or a string: put it back for translation to refuse.
                req.insert("input".into(), other);
                return Ok((body, None));
            }
        };
        let mut changed = false;
        let mut size = body.len();
        let mut grow = |added: usize| {
            size = size.saturating_add(added);
            if size > limit {
                return Err(TranslateError::InvalidRequest {
                    format: Format::Responses,
                    message: format!(
                        "the input with the stored items it names is over the body limit \
                         ({limit} bytes)"
                    ),
                });
            }
            Ok(())
        };
        if let Some(id) = previous {
            let conv = self
                .lookup(cache, Key::Conversation(caller, id.as_str().into()))
                .await;
            let Some(conv) = conv else {
                return Err(self.unknown("previous_response_id", "response", &id));
            };
            grow(conv.len())?;
            let earlier: Vec<Value> = serde_json::from_slice(&conv).unwrap_or_default();
            input.splice(0..0, earlier);
            req.remove("previous_response_id");
            changed = true;
        }
        if refs {
            for (i, item) in input.iter_mut().enumerate() {
                if item.get("type").and_then(Value::as_str) != Some("item_reference") {
                    continue;
                }
                let id = item.get("id").and_then(Value::as_str).unwrap_or_default();
                let Some(stored) = self.lookup(cache, Key::Item(caller, id.into())).await else {
                    return Err(self.unknown(&format!("input[{i}]"), "item", id));
                };
                grow(stored.len())?;
                *item = serde_json::from_slice(&stored).unwrap_or(Value::Null);
                changed = true;
            }
        }
        let pending = keep.then(|| Pending {
            store: self.clone(),
            caller,
            input: input.clone(),
        });
        if !changed {
            return Ok((body, pending));
        }
        req.insert("input".into(), Value::Array(input));
        let out = serde_json::to_vec(&req).map_err(|e| TranslateError::InvalidRequest {
            format: Format::Responses,
            message: e.to_string(),
        })?;
        Ok((Bytes::from(out), pending))
    }

    fn unknown(&self, field: &str, what: &str, id: &str) -> TranslateError {
        let id: String = id.chars().take(100).collect();
        TranslateError::InvalidRequest {
            format: Format::Responses,
            message: format!(
                "{field}: no stored {what} {id:?}. This gateway translates the Responses API for \
                 this upstream and keeps the answers it translated for their caller ({}, for {} \
                 after last use); send the items themselves instead",
                if self.remote.is_some() {
                    "in memory and Redis"
                } else {
                    "in memory, not across replicas"
                },
                humantime::format_duration(self.ttl)
            ),
        }
    }
}

/// Whether a Responses body may hold `item_reference` items (a search, no parse).
fn has_refs(body: &[u8]) -> bool {
    memchr::memmem::find(body, b"item_reference").is_some()
}

/// A request (`refs`: [`has_refs`]) that keeps nothing and names nothing stored (`store: false`, no
/// `previous_response_id`, no `item_reference`; Codex sends these), told by a skim of its
/// top level, not a parse: large agent bodies are not read into a tree for nothing.
fn nothing_to_do(body: &[u8], refs: bool) -> bool {
    use portcullis_core::json_skim;
    if refs {
        return false;
    }
    let (mut unstored, mut previous) = (false, false);
    let read = json_skim::object(body, json_skim::ws(body, 0), |key, value| {
        match key {
            b"store" => unstored = value == b"false",
            b"previous_response_id" => previous = value != b"null",
            _ => {}
        }
        Some(())
    });
    read.is_some() && unstored && !previous
}

/// Whether `path` is `/v1/responses/{id}` (or below it) for an id the gateway made
/// ([`KEPT_ID_PREFIX`](crate::response::KEPT_ID_PREFIX)).
///
/// ```
/// use portcullis_translate::store::is_kept_response_path;
///
/// assert!(is_kept_response_path("/v1/responses/resp_pc0123abcd/input_items"));
/// assert!(!is_kept_response_path("/v1/responses/resp_68af01"));
/// assert!(!is_kept_response_path("/v1/responses"));
/// ```
pub fn is_kept_response_path(path: &str) -> bool {
    path.strip_prefix("/v1/responses/")
        .is_some_and(|rest| rest.starts_with(crate::response::KEPT_ID_PREFIX))
}

/// What a Responses answer needs to be kept: the caller and the request's input as resolved.
#[derive(Debug)]
pub struct Pending {
    store: ResponseStore,
    caller: CallerId,
    input: Vec<Value>,
}

impl Pending {
    /// Keep `response` (a Responses object, `completed` or `incomplete`) in memory: each
    /// output item by its id, and the conversation by the response's id. Returns the entries
    /// for Redis, if the store has it.
    fn keep(self, response: &Map<String, Value>) -> Option<(RedisItems, Vec<(Key, Bytes)>)> {
        let cache = self.store.cache.as_ref()?;
        let (Some(Value::String(id)), Some(Value::Array(output))) =
            (response.get("id"), response.get("output"))
        else {
            return None;
        };
        let mut entries = Vec::with_capacity(output.len() + 1);
        for item in output {
            if let (Some(item_id), Ok(json)) = (
                item.get("id").and_then(Value::as_str),
                serde_json::to_vec(item),
            ) {
                entries.push((Key::Item(self.caller, item_id.into()), Bytes::from(json)));
            }
        }
        let mut conv = self.input;
        conv.extend(output.iter().cloned());
        if let Ok(json) = serde_json::to_vec(&conv) {
            entries.push((
                Key::Conversation(self.caller, id.as_str().into()),
                Bytes::from(json),
            ));
        }
        if let Ok(json) = serde_json::to_vec(response) {
            entries.push((
                Key::Response(self.caller, id.as_str().into()),
                Bytes::from(json),
            ));
        }
        for (k, v) in &entries {
            cache.insert(k.clone(), v.clone());
        }
        Some((self.store.remote.clone()?, entries))
    }

    /// Keep a streamed answer's final object; Redis is written in the background (the
    /// stream's body cannot wait).
    pub fn record(self, response: &Map<String, Value>) {
        let ttl = self.store.ttl;
        if let Some((remote, entries)) = self.keep(response) {
            if let Ok(rt) = tokio::runtime::Handle::try_current() {
                rt.spawn(async move {
                    for (k, v) in entries {
                        remote.set(k, v, ttl).await;
                    }
                });
            }
        }
    }

    /// Keep a non-streamed answer (`body`, the translated Responses object), Redis written
    /// before the answer goes out (each write bounded), so the next turn finds it anywhere.
    pub async fn record_body(self, body: &[u8]) {
        let Ok(Value::Object(r)) = serde_json::from_slice::<Value>(body) else {
            return;
        };
        let ttl = self.store.ttl;
        if let Some((remote, entries)) = self.keep(&r) {
            for (k, v) in entries {
                remote.set(k, v, ttl).await;
            }
        }
    }
}

#[cfg(test)]
#[path = "store_tests.rs"]
mod tests;
