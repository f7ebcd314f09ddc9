//! Request deduplication and response caching for LLM API calls, as a tower layer.
//!
//! Identical requests in flight at the same time share one upstream call: the first (the
//! *leader*) makes it, the others (*followers*) wait and get a copy of its exact response
//! (status, headers, body, extensions). The call runs in its own task, so it goes on for the
//! followers if the leader's client disconnects. With `cache_ttl > 0`, completed 2xx
//! non-streaming responses are also replayed for that long, from memory ([`MemoryStore`]) or
//! Redis ([`RedisStore`]). Every Redis call is bounded (50 ms by default); while Redis is
//! unavailable the cache is kept in memory instead, Redis is probed again once a second, and
//! the outage and the recovery are logged once each
//! ([`DedupCacheLayer::with_store`]).
//!
//! "Identical" is decided by [`dedup_key`]: method, path and query, the JSON body in canonical
//! form (key order and whitespace do not matter), the caller's identity
//! ([`CallerId`](portcullis_core::CallerId): the gateway key that matched, from the
//! extension the gateway's auth sets, and every credential header that goes upstream; and the
//! memory [`UserId`](portcullis_core::UserId)) and a few response-shaping headers
//! ([`VARY_HEADERS`]). One caller's answer never reaches another.
//!
//! Every response that passes gets `x-portcullis-cache` and the same value as a
//! [`CacheOutcome`](portcullis_core::CacheOutcome) extension, for logs and metrics:
//! - `miss`: this request made the upstream call (alone or as a leader);
//! - `hit`: replayed from the cache (with `age` in seconds, and an
//!   [`Attempts(0)`](portcullis_core::Attempts) extension: no upstream call);
//! - `coalesced`: shared another request's call;
//! - `bypass`: the layer stepped aside: a method other than GET/POST, `Cache-Control:
//!   no-cache`/`no-store` (or `Pragma: no-cache`), a streaming request (`RequestMeta::stream`,
//!   else `"stream": true` in the body, read with `portcullis_core::meta::parse`, which
//!   also inserts the `RequestMeta` for the layers after this one), a body over the body cap
//!   ([`DedupCacheLayer::with_max_body_bytes`], default
//!   `portcullis_core::body::DEFAULT_MAX_BODY_BYTES`), or a follower whose leader got a
//!   response that could not be shared.
//!
//! # Readiness
//!
//! [`DedupCache`] is always ready, and each request readies a clone of the inner service
//! (`ServiceExt::oneshot`) only when it actually sends, as tower's and linkerd's retry
//! layers do for their retries. A request may be answered without the inner service (a
//! hit, a follower), so the inner service's backpressure must not hold it back; and a
//! request that waits (for its body, the cache, the leader it follows) must not hold
//! capacity the inner service's readiness reserved (a concurrency permit, a buffer slot)
//! that another request could use.
//!
//! # Responses that cannot be shared
//!
//! A response that is `text/event-stream` or declares a length over the body cap is handed
//! to the leader untouched, as a stream; its followers then make their own calls (`bypass`).
//! A stream is never shared, so no follower can see a clean end where the leader's stream
//! broke: each caller reads its own stream, and sees how that one ended (the gateway's error
//! event when it broke after its first byte; `tests/hostile.rs` holds both to it).
//! A response of unknown length (chunked) is read up to the cap; past it, the leader gets a
//! body that yields what was read and then the rest as it arrives ([`Rechain`]), so no more
//! than the cap is ever buffered; it is not cached, and the followers make their own calls,
//! as for the others. A request body of unknown length over the cap is handed on the same
//! way, unbuffered (`bypass`). The service's body types must implement [`Rechain`] (axum's
//! `Body` and `Full<Bytes>` do).
//!
//! # Memory
//!
//! The in-memory cache is bounded by `max_entries` and by `max_bytes` (bodies, headers and a
//! small overhead per entry, least recently used evicted first; see
//! [`MemoryStore::bounded`]). In flight, each shared call buffers at most the body cap.
//!
//! # Errors
//!
//! If the inner service fails, the leader and its followers all get a [`SharedError`] whose
//! `source()` is the original error, so typed errors (`CircuitOpen`, timeouts) are still
//! found by `portcullis_core::error::find_in_chain`. [`SharedCallLost`] means the shared call's
//! task died without a result (a panic in the inner service); [`RequestBodyError`] and
//! [`ResponseBodyError`] mean a body could not be read. The in-flight entry is removed however
//! the call ends, so a key is never stuck.
//!
//! # Example
//!
//! ```
//! use std::{convert::Infallible, time::Duration};
//!
//! use bytes::Bytes;
//! use http::{Request, Response};
//! use http_body_util::{BodyExt, Full};
//! use portcullis_dedup_cache::{Config, DedupCacheLayer};
//! use tower::{service_fn, ServiceBuilder, ServiceExt};
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() {
//! let layer = DedupCacheLayer::new(Config {
//!     cache_ttl: Duration::from_secs(60),
//!     ..Config::default()
//! });
//! let svc = ServiceBuilder::new()
//!     .layer(layer)
//!     .service(service_fn(|_req: Request<Full<Bytes>>| async {
//!         Ok::<_, Infallible>(Response::new(Full::new(Bytes::from_static(b"{\"id\":1}"))))
//!     }));
//!
//! let ask = |body: &'static str| {
//!     Request::post("/v1/chat/completions")
//!         .header("authorization", "Bearer sk-mine")
//!         .body(Full::new(Bytes::from_static(body.as_bytes())))
//!         .unwrap()
//! };
//! let first = svc.clone().oneshot(ask(r#"{"model":"m","messages":[]}"#)).await.unwrap();
//! assert_eq!(first.headers()["x-portcullis-cache"], "miss");
//!
//! // Same request, keys in another order: answered from the cache.
//! let again = svc.clone().oneshot(ask(r#"{ "messages": [], "model": "m" }"#)).await.unwrap();
//! assert_eq!(again.headers()["x-portcullis-cache"], "hit");
//! let body = again.into_body().collect().await.unwrap().to_bytes();
//! assert_eq!(&body[..], b"{\"id\":1}");
//! # }
//! ```

mod body;
mod config;
mod error;
pub mod future;
mod key;
mod layer;
mod service;
mod store;

pub use body::Rechain;
pub use config::{Config, DEFAULT_MAX_BYTES};
pub use error::{RequestBodyError, ResponseBodyError, SharedCallLost, SharedError};
pub use key::{canonical_json, dedup_key, Key, VARY_HEADERS};
pub use layer::DedupCacheLayer;
pub use service::DedupCache;
pub use store::{
    CacheHit, CacheStore, CachedResponse, CorruptEntry, MemoryStore, RedisStore,
    ENTRY_OVERHEAD_BYTES, REDIS_KEY_PREFIX,
};
