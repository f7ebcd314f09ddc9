//! Where cached responses live: in this process ([`MemoryStore`]) or in Redis, shared by
//! every replica ([`RedisStore`]).
//!
//! Coalescing of in-flight requests is always in-process; only completed responses go to a
//! store.

use std::{
    fmt,
    sync::Arc,
    time::{Duration, SystemTime, UNIX_EPOCH},
};

use bytes::{Buf, BufMut, Bytes, BytesMut};
use futures_util::future::BoxFuture;
use http::{HeaderMap, HeaderName, HeaderValue, StatusCode};
use portcullis_core::remote::{Guarded, RemoteHealth, Unavailable};
use tokio::time::Instant;
use tower::BoxError;

use crate::Key;

/// A completed response as the cache keeps it: status, headers (hop-by-hop and `set-cookie`
/// already removed) and the whole body.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CachedResponse {
    /// The status code (always 2xx for what the layer stores).
    pub status: StatusCode,
    /// The response headers.
    pub headers: HeaderMap,
    /// The whole body.
    pub body: Bytes,
}

/// A cached response found by [`CacheStore::get`], with how long ago it was stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CacheHit {
    /// The stored response.
    pub response: CachedResponse,
    /// Time since it was stored (sent to the client as `age`).
    pub age: Duration,
}

/// Storage for completed responses, keyed by [`Key`].
///
/// Implementations must not serve an entry after its `ttl`. Errors are reported, not hidden:
/// the layer logs them at `warn` and carries on as on a miss, so a broken store never fails a
/// request. A remote store that cannot be reached should fail with
/// [`Unavailable`] in the error's chain (as [`RedisStore`] does): the layer then uses its
/// in-process cache instead, without a log line per request (the store logs the outage).
pub trait CacheStore: Send + Sync + fmt::Debug + 'static {
    /// The response stored under `key`, if any and still fresh.
    fn get<'a>(&'a self, key: &'a Key) -> BoxFuture<'a, Result<Option<CacheHit>, BoxError>>;

    /// Store `response` under `key` for `ttl`.
    fn put<'a>(
        &'a self,
        key: &'a Key,
        response: CachedResponse,
        ttl: Duration,
    ) -> BoxFuture<'a, Result<(), BoxError>>;
}

// === impl MemoryStore ===

/// An in-process [`CacheStore`] on a `moka` cache bounded by entries and by bytes.
///
/// Freshness is checked against `tokio::time::Instant` on every read (so paused-clock tests
/// and the TTL agree); moka's own per-entry expiry only frees memory behind it. Cloning
/// shares the cache.
#[derive(Clone)]
pub struct MemoryStore {
    cache: moka::future::Cache<Key, Arc<MemoryEntry>>,
    max_bytes: u64,
}

struct MemoryEntry {
    /// [`entry_bytes`] of `response`, computed once.
    bytes: u64,
    response: CachedResponse,
    stored: Instant,
    ttl: Duration,
}

struct EntryTtl;

impl moka::Expiry<Key, Arc<MemoryEntry>> for EntryTtl {
    fn expire_after_create(
        &self,
        _key: &Key,
        value: &Arc<MemoryEntry>,
        _created_at: std::time::Instant,
    ) -> Option<Duration> {
        Some(value.ttl)
    }
}

/// What an entry costs besides its body and headers: the key, the `Arc`, the timestamps and
/// moka's own bookkeeping, roughly.
pub const ENTRY_OVERHEAD_BYTES: u64 = 256;

/// What each header costs besides its name and value (the `HeaderMap` slot), roughly.
const HEADER_OVERHEAD_BYTES: u64 = 32;

/// Bytes an entry holds: body, headers and [`ENTRY_OVERHEAD_BYTES`].
fn entry_bytes(r: &CachedResponse) -> u64 {
    let headers: u64 = r
        .headers
        .iter()
        .map(|(n, v)| (n.as_str().len() + v.len()) as u64 + HEADER_OVERHEAD_BYTES)
        .sum();
    r.body.len() as u64 + headers + ENTRY_OVERHEAD_BYTES
}

impl MemoryStore {
    /// A store holding at most `max_entries` responses and
    /// [`DEFAULT_MAX_BYTES`](crate::DEFAULT_MAX_BYTES) bytes; see
    /// [`bounded`](Self::bounded).
    pub fn new(max_entries: u64) -> Self {
        Self::bounded(max_entries, crate::DEFAULT_MAX_BYTES)
    }

    /// A store holding at most `max_entries` responses and at most `max_bytes` bytes of them
    /// (bodies, headers and [`ENTRY_OVERHEAD_BYTES`] each); the least recently used go first.
    /// A response larger than `max_bytes` on its own is not stored.
    ///
    /// # Why one weight for two bounds
    ///
    /// moka bounds one quantity. Each entry weighs its size in bytes, but at least
    /// `max_bytes / max_entries` (the *quantum*), against a capacity of `max_bytes`: so at
    /// most `max_entries` entries fit (each weighs at least a quantum) and never more than
    /// `max_bytes` bytes (each weighs at least its size). The price is that small entries
    /// are counted as a quantum (with the defaults, 26 KiB, above most chat answers), so
    /// a cache of small answers is bounded by `max_entries`, as before.
    pub fn bounded(max_entries: u64, max_bytes: u64) -> Self {
        let max_bytes = max_bytes.max(1);
        let quantum = (max_bytes / max_entries.max(1)).max(1);
        Self {
            cache: moka::future::Cache::builder()
                .max_capacity(max_bytes)
                .weigher(move |_key: &Key, entry: &Arc<MemoryEntry>| -> u32 {
                    // Bodies are capped by the layer's body cap; a weight past u32 saturates.
                    u32::try_from(entry.bytes.max(quantum)).unwrap_or(u32::MAX)
                })
                .expire_after(EntryTtl)
                .build(),
            max_bytes,
        }
    }

    /// Bytes held, approximately (moka applies writes lazily): the sum of the entries' weights,
    /// which is at least their size (see [`bounded`](Self::bounded)).
    pub fn weighted_size(&self) -> u64 {
        self.cache.weighted_size()
    }

    /// Number of entries, approximately (moka applies writes lazily).
    pub fn entry_count(&self) -> u64 {
        self.cache.entry_count()
    }
}

impl fmt::Debug for MemoryStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MemoryStore")
            .field("entries", &self.cache.entry_count())
            .field("weighted_size", &self.cache.weighted_size())
            .field("max_bytes", &self.max_bytes)
            .finish()
    }
}

impl CacheStore for MemoryStore {
    fn get<'a>(&'a self, key: &'a Key) -> BoxFuture<'a, Result<Option<CacheHit>, BoxError>> {
        Box::pin(async move {
            let Some(entry) = self.cache.get(key).await else {
                return Ok(None);
            };
            let age = entry.stored.elapsed();
            if age >= entry.ttl {
                self.cache.invalidate(key).await;
                return Ok(None);
            }
            Ok(Some(CacheHit {
                response: entry.response.clone(),
                age,
            }))
        })
    }

    fn put<'a>(
        &'a self,
        key: &'a Key,
        response: CachedResponse,
        ttl: Duration,
    ) -> BoxFuture<'a, Result<(), BoxError>> {
        Box::pin(async move {
            let bytes = entry_bytes(&response);
            if bytes > self.max_bytes {
                tracing::debug!(key = %key.short(), bytes, "response larger than the whole cache; not stored");
                return Ok(());
            }
            let entry = MemoryEntry {
                bytes,
                response: compact(response),
                stored: Instant::now(),
                ttl,
            };
            self.cache.insert(*key, Arc::new(entry)).await;
            Ok(())
        })
    }
}

/// `response` in allocations of its own. The body and header values hyper hands over are
/// slices of its connection read buffer (8 KiB and more): kept as they are, each small cached
/// answer would hold its whole buffer alive, and a cache of 10,000 chat answers of 400 bytes
/// held over 130 MB while it counted 4 MB.
fn compact(response: CachedResponse) -> CachedResponse {
    let mut headers = HeaderMap::with_capacity(response.headers.len());
    for (name, value) in &response.headers {
        if let Ok(mut v) = HeaderValue::from_bytes(value.as_bytes()) {
            v.set_sensitive(value.is_sensitive());
            headers.append(name.clone(), v);
        }
    }
    CachedResponse {
        status: response.status,
        headers,
        body: Bytes::copy_from_slice(&response.body),
    }
}

// === impl RedisStore ===

/// Default prefix of [`RedisStore`] keys: `portcullis:dedup:<64 hex digits>`.
pub const REDIS_KEY_PREFIX: &str = "portcullis:dedup:";

/// How long one (re)connection attempt may take. Requests never wait for it longer than the
/// call bound: a reconnect runs in the background and the next probe picks it up.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(1);

/// The connection's own response timeout: only a backstop, so that calls the health's bound
/// gave up on do not pile up on a hung connection. It must not be shorter than any call
/// bound ([`RedisStore::with_call_timeout`]), which is what cuts requests.
const RESPONSE_BACKSTOP: Duration = Duration::from_secs(1);

/// One attempt per (re)connect (the [`RemoteHealth`] back-off paces them, not the client's
/// retry loop, which would hold each command for seconds) and a backstop response timeout.
fn manager_config() -> redis::aio::ConnectionManagerConfig {
    redis::aio::ConnectionManagerConfig::new()
        .set_number_of_retries(0)
        .set_connection_timeout(Some(CONNECT_TIMEOUT))
        .set_response_timeout(Some(RESPONSE_BACKSTOP))
}

/// A [`CacheStore`] in Redis, shared by every gateway replica that points at it.
///
/// Entries are written with `SET key value PX ttl`, in a compact binary encoding (version
/// byte, status, store time, headers, body). Every command goes through the store's
/// [`RemoteHealth`]: it is bounded (default
/// [`DEFAULT_CALL_TIMEOUT`](portcullis_core::remote::DEFAULT_CALL_TIMEOUT), 50 ms), and after a
/// failure Redis is left alone for a back-off (default 1 s). A call that gets no answer fails
/// with [`Unavailable`] in its chain, which the layer answers from its in-process cache
/// instead (see [`DedupCacheLayer::with_store`](crate::DedupCacheLayer::with_store)).
/// Cloning shares the connection and the health.
#[derive(Clone)]
pub struct RedisStore {
    conn: redis::aio::ConnectionManager,
    health: RemoteHealth,
    prefix: Arc<str>,
}

impl RedisStore {
    /// Connect to `url` (e.g. `redis://127.0.0.1:6379`), failing now if Redis is unreachable.
    /// The connection is re-established in the background if it drops later. To start
    /// without Redis, use [`lazy`](Self::lazy).
    pub async fn connect(url: &str) -> Result<Self, redis::RedisError> {
        let client = redis::Client::open(url)?;
        let health = RemoteHealth::new(store_name(&client));
        let conn = client
            .get_connection_manager_with_config(manager_config())
            .await?;
        Ok(Self::new(Guarded::new(conn, health)))
    }

    /// A store for `url` that connects on first use (and in the background after a drop), so
    /// it can be made while Redis is down. Fails only on a malformed URL. Must be called
    /// within a tokio runtime.
    pub fn lazy(url: &str) -> Result<Self, redis::RedisError> {
        let client = redis::Client::open(url)?;
        let health = RemoteHealth::new(store_name(&client));
        let conn = redis::aio::ConnectionManager::new_lazy_with_config(client, manager_config())?;
        Ok(Self::new(Guarded::new(conn, health)))
    }

    /// A store on a connection you configured yourself.
    ///
    /// Pass a [`Guarded`] connection to share its [`RemoteHealth`] with other stores (one
    /// outage state, one log line per transition); a bare `ConnectionManager` gets a health of
    /// its own. Configure the connection with no retries of its own and a response timeout no
    /// shorter than the call bound (see [`connect`](Self::connect)), or reconnects and the
    /// connection's own timeout decide instead of the bound.
    pub fn new(conn: impl Into<Guarded<redis::aio::ConnectionManager>>) -> Self {
        let (conn, health) = conn.into().into_parts();
        Self {
            conn,
            health,
            prefix: REDIS_KEY_PREFIX.into(),
        }
    }

    /// Bound each command by `timeout` instead of 50 ms; past it the call counts as a miss
    /// (the layer answers from its in-process cache).
    pub fn with_call_timeout(mut self, timeout: Duration) -> Self {
        self.health = self.health.with_call_timeout(timeout);
        self
    }

    /// After a failure, leave Redis alone for `backoff` instead of 1 s before probing again.
    pub fn with_backoff(mut self, backoff: Duration) -> Self {
        self.health = self.health.with_backoff(backoff);
        self
    }

    /// Use `prefix` instead of [`REDIS_KEY_PREFIX`] (to keep several deployments, or tests,
    /// apart on one Redis).
    pub fn with_prefix(mut self, prefix: impl Into<Arc<str>>) -> Self {
        self.prefix = prefix.into();
        self
    }

    /// Whether Redis answers, and how often it went away.
    pub fn health(&self) -> &RemoteHealth {
        &self.health
    }

    /// The Redis key an entry for `key` is stored under.
    pub fn redis_key(&self, key: &Key) -> String {
        format!("{}{}", self.prefix, key.to_hex())
    }

    /// Run the command `cmd` through the health: bounded, skipped while backing off. A
    /// connection found dead is re-dialled once within the bound (the manager starts the new
    /// connection when it sees the old one dead), so Redis is back at the first probe after
    /// it returns. `GET` and `SET` are safe to send twice.
    async fn query<T: redis::FromRedisValue>(&self, cmd: &redis::Cmd) -> Result<T, Unavailable> {
        self.health
            .call(async {
                let mut conn = self.conn.clone();
                match cmd.query_async(&mut conn).await {
                    Err(e) if e.is_connection_refusal() || e.is_connection_dropped() => {
                        cmd.query_async(&mut conn).await
                    }
                    other => other,
                }
            })
            .await
    }
}

/// `redis at HOST:PORT`: the address only, never the URL (it may hold a password).
fn store_name(client: &redis::Client) -> String {
    format!("redis at {}", client.get_connection_info().addr())
}

impl fmt::Debug for RedisStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RedisStore")
            .field("prefix", &self.prefix)
            .field("health", &self.health)
            .finish_non_exhaustive()
    }
}

impl CacheStore for RedisStore {
    fn get<'a>(&'a self, key: &'a Key) -> BoxFuture<'a, Result<Option<CacheHit>, BoxError>> {
        Box::pin(async move {
            let mut cmd = redis::cmd("GET");
            cmd.arg(self.redis_key(key));
            let raw: Option<Vec<u8>> = self.query(&cmd).await?;
            let Some(raw) = raw else { return Ok(None) };
            let (response, stored_ms) = decode(Bytes::from(raw))?;
            let age = Duration::from_millis(unix_millis().saturating_sub(stored_ms));
            Ok(Some(CacheHit { response, age }))
        })
    }

    fn put<'a>(
        &'a self,
        key: &'a Key,
        response: CachedResponse,
        ttl: Duration,
    ) -> BoxFuture<'a, Result<(), BoxError>> {
        Box::pin(async move {
            let ttl_ms = u64::try_from(ttl.as_millis()).unwrap_or(u64::MAX).max(1);
            let mut cmd = redis::cmd("SET");
            cmd.arg(self.redis_key(key))
                .arg(encode(&response, unix_millis()).as_ref())
                .arg("PX")
                .arg(ttl_ms);
            let () = self.query(&cmd).await?;
            Ok(())
        })
    }
}

fn unix_millis() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

const ENCODING_VERSION: u8 = 1;

/// Why a stored entry could not be read back.
#[derive(Debug, thiserror::Error)]
#[error("corrupt cache entry: {0}")]
pub struct CorruptEntry(&'static str);

/// `version u8 | status u16 | stored_at_ms u64 | n_headers u32 |
/// n * (name_len u16 | name | value_len u32 | value) | body`, integers big-endian.
pub(crate) fn encode(r: &CachedResponse, stored_at_ms: u64) -> Bytes {
    let headers_len: usize = r
        .headers
        .iter()
        .map(|(n, v)| 6 + n.as_str().len() + v.len())
        .sum();
    let mut out = BytesMut::with_capacity(15 + headers_len + r.body.len());
    out.put_u8(ENCODING_VERSION);
    out.put_u16(r.status.as_u16());
    out.put_u64(stored_at_ms);
    out.put_u32(r.headers.len() as u32);
    for (name, value) in &r.headers {
        out.put_u16(name.as_str().len() as u16);
        out.put_slice(name.as_str().as_bytes());
        out.put_u32(value.len() as u32);
        out.put_slice(value.as_bytes());
    }
    out.put_slice(&r.body);
    out.freeze()
}

pub(crate) fn decode(mut b: Bytes) -> Result<(CachedResponse, u64), CorruptEntry> {
    fn need(b: &Bytes, n: usize) -> Result<(), CorruptEntry> {
        if b.remaining() < n {
            Err(CorruptEntry("truncated"))
        } else {
            Ok(())
        }
    }
    need(&b, 15)?;
    if b.get_u8() != ENCODING_VERSION {
        return Err(CorruptEntry("unknown version"));
    }
    let status = StatusCode::from_u16(b.get_u16()).map_err(|_| CorruptEntry("bad status"))?;
    let stored_at = b.get_u64();
    let n = b.get_u32() as usize;
    let mut headers = HeaderMap::with_capacity(n.min(256));
    for _ in 0..n {
        need(&b, 2)?;
        let len = b.get_u16() as usize;
        need(&b, len)?;
        let name = HeaderName::from_bytes(&b.split_to(len))
            .map_err(|_| CorruptEntry("bad header name"))?;
        need(&b, 4)?;
        let len = b.get_u32() as usize;
        need(&b, len)?;
        let value = HeaderValue::from_maybe_shared(b.split_to(len))
            .map_err(|_| CorruptEntry("bad header value"))?;
        headers.append(name, value);
    }
    Ok((
        CachedResponse {
            status,
            headers,
            body: b,
        },
        stored_at,
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> CachedResponse {
        let mut headers = HeaderMap::new();
        headers.insert("content-type", "application/json".parse().unwrap());
        headers.append("x-multi", "one".parse().unwrap());
        headers.append("x-multi", "two".parse().unwrap());
        CachedResponse {
            status: StatusCode::CREATED,
            headers,
            body: Bytes::from_static(b"{\"id\":\"x\"}"),
        }
    }

    /// A cached answer must not hold the read buffer its bytes came in (see [`compact`]).
    #[tokio::test]
    async fn stored_answers_do_not_pin_the_buffer_they_were_read_into() {
        let buffer = Bytes::from(vec![b'x'; 64 * 1024]);
        let range = buffer.as_ptr() as usize..buffer.as_ptr() as usize + buffer.len();
        let mut headers = HeaderMap::new();
        headers.insert(
            "x-request-id",
            HeaderValue::from_maybe_shared(buffer.slice(100..110)).unwrap(),
        );
        let response = CachedResponse {
            status: StatusCode::OK,
            headers,
            body: buffer.slice(0..100),
        };
        let store = MemoryStore::bounded(10, 1 << 20);
        let key = Key([7; 32]);
        store
            .put(&key, response.clone(), Duration::from_secs(60))
            .await
            .unwrap();
        let hit = store.get(&key).await.unwrap().unwrap().response;
        assert_eq!(hit, response, "the same answer");
        let inside = |p: *const u8| range.contains(&(p as usize));
        assert!(!inside(hit.body.as_ptr()), "body copied out");
        assert!(
            !inside(hit.headers["x-request-id"].as_bytes().as_ptr()),
            "header value copied out"
        );
    }

    #[test]
    fn encoding_round_trips() {
        let r = sample();
        let (back, at) = decode(encode(&r, 1234)).unwrap();
        assert_eq!(back, r);
        assert_eq!(at, 1234);
        let empty = CachedResponse {
            status: StatusCode::OK,
            headers: HeaderMap::new(),
            body: Bytes::new(),
        };
        assert_eq!(decode(encode(&empty, 0)).unwrap().0, empty);
    }

    #[test]
    fn corrupt_entries_are_errors_not_panics() {
        let good = encode(&sample(), 1);
        for cut in 0..good.len() - 10 {
            // Every truncation inside the header section fails cleanly.
            let _ = decode(good.slice(..cut));
        }
        assert!(decode(good.slice(..10)).is_err());
        let mut wrong_version = good.to_vec();
        wrong_version[0] = 9;
        assert!(decode(Bytes::from(wrong_version)).is_err());
    }

    fn of_size(body: usize) -> CachedResponse {
        CachedResponse {
            status: StatusCode::OK,
            headers: HeaderMap::new(),
            body: Bytes::from(vec![b'x'; body]),
        }
    }

    /// Issue 14: 40 answers of 5 MiB added 330 MiB, the cache being bounded by count only.
    /// Scaled down: 40 answers of 100 KiB into a 1 MiB cache of up to 1000 entries.
    #[tokio::test]
    async fn memory_store_is_bounded_by_bytes() {
        const MIB: u64 = 1024 * 1024;
        let store = MemoryStore::bounded(1000, MIB);
        for i in 0..40u8 {
            let key = Key([i; 32]);
            store
                .put(&key, of_size(100 * 1024), Duration::from_secs(60))
                .await
                .unwrap();
            // The entry just written is there (least recently used go first).
            assert!(store.get(&key).await.unwrap().is_some(), "entry {i}");
            store.cache.run_pending_tasks().await;
            assert!(
                store.weighted_size() <= MIB,
                "{} bytes",
                store.weighted_size()
            );
        }
        store.cache.run_pending_tasks().await;
        let held = store.entry_count();
        assert!(
            (8..=10).contains(&held),
            "{held} entries of 100 KiB in 1 MiB"
        );
    }

    #[tokio::test]
    async fn memory_store_is_still_bounded_by_entries() {
        let store = MemoryStore::bounded(10, 1024 * 1024);
        for i in 0..50u8 {
            store
                .put(&Key([i; 32]), of_size(10), Duration::from_secs(60))
                .await
                .unwrap();
        }
        store.cache.run_pending_tasks().await;
        assert!(store.entry_count() <= 10, "{}", store.entry_count());
    }

    #[tokio::test]
    async fn a_response_larger_than_the_cache_is_not_stored() {
        let store = MemoryStore::bounded(10, 1000);
        let key = Key([1; 32]);
        store
            .put(&key, of_size(2000), Duration::from_secs(60))
            .await
            .unwrap();
        assert_eq!(store.get(&key).await.unwrap(), None);
        store
            .put(&key, of_size(10), Duration::from_secs(60))
            .await
            .unwrap();
        assert!(store.get(&key).await.unwrap().is_some());
    }

    #[tokio::test(start_paused = true)]
    async fn memory_store_respects_ttl_on_the_tokio_clock() {
        let store = MemoryStore::new(10);
        let key = Key([7; 32]);
        assert_eq!(store.get(&key).await.unwrap(), None);
        store
            .put(&key, sample(), Duration::from_secs(10))
            .await
            .unwrap();
        tokio::time::advance(Duration::from_secs(4)).await;
        let hit = store.get(&key).await.unwrap().expect("fresh");
        assert_eq!(hit.response, sample());
        assert_eq!(hit.age, Duration::from_secs(4));
        tokio::time::advance(Duration::from_secs(6)).await;
        assert_eq!(store.get(&key).await.unwrap(), None, "expired at ttl");
    }
}
