//! Per-caller rate limits for portcullis: GCRA buckets keyed by API key, user id, client IP
//! or one global bucket, in memory or in Redis, as a tower layer.
//!
//! Each request is charged to a [`RateKey`] chosen by [`KeyKind`]; the bucket allows
//! `burst` requests at once and refills one every `60s / requests_per_minute`. Over the
//! limit, the service fails with a boxed [`RateLimited`] that carries `retry_after` and the
//! numbers for the `x-ratelimit-*` headers ([`RateLimited::headers`]); the gateway's edge
//! renders it as `429 rate_limited`. With a `queue_timeout`, a request waits for its slot
//! instead when that wait fits. Allowed responses carry `x-ratelimit-limit` (the burst),
//! `x-ratelimit-remaining` and `x-ratelimit-reset` (whole seconds until the bucket is full).
//! Optional per-model limits ([`RateLimitLayer::with_model_limit`]) hold an expensive model
//! tighter. See the [`limiter`] module for the algorithm, memory bounds and backends.
//!
//! # Behaviour in detail
//! - Keys are 16-byte hashes ([`RateKey`]); raw API keys and user ids are never stored.
//!   `api_key` falls back to the client IP, then to one shared `anonymous` bucket.
//! - `x-ratelimit-limit` is the burst (the bucket's capacity), so `remaining` counts down
//!   from it and `reset` is when it is back at `limit`.
//! - Queueing (`queue_timeout > 0`) sleeps only when the slot comes within the timeout, then
//!   checks again; it is not a reservation, so under contention a request may wait again
//!   (never past its deadline) and order is not strictly first-come first-served.
//! - A per-model limit is checked after the caller's main limit, with the same key and one
//!   deadline for both; a request refused by the model limit still counts against the
//!   main limit. Reported headers are those of whichever limit has less room.
//! - Capacity is decided in `call`, not `poll_ready`: the bucket depends on the request.
//!   `poll_ready` is the inner service's; a request that may wait gives that readiness back
//!   in `call` and readies a clone of the inner service only once admitted, so queued
//!   requests hold no inner capacity (see [`RateLimit`]).
//! - Allowed responses carry a [`RateLimitOutcome`](portcullis_core::RateLimitOutcome)
//!   extension (`Allowed` or `Queued(waited)`); a refusal is the [`RateLimited`] error.
//! - With the Redis backend, every Redis call is bounded (50 ms by default,
//!   [`RedisStore::with_call_timeout`]); while Redis is unavailable, checks use local
//!   in-memory buckets of the same quota (limits hold per replica), Redis is probed again once
//!   a second, and the outage and the recovery are logged once each (see [`RedisLimiter`]).
//!
//! # Example
//! ```
//! use std::convert::Infallible;
//!
//! use bytes::Bytes;
//! use http::{Request, Response};
//! use http_body_util::Full;
//! use portcullis_rate_limit::{Config, RateLimitLayer, RateLimited};
//! use tower::{service_fn, ServiceBuilder, ServiceExt};
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), tower::BoxError> {
//! let config = Config { requests_per_minute: 60, burst: 1, ..Config::default() };
//! let svc = ServiceBuilder::new()
//!     .layer(RateLimitLayer::from_config(&config).expect("valid config"))
//!     .service(service_fn(|_req: Request<Full<Bytes>>| async {
//!         Ok::<_, Infallible>(Response::new(Full::new(Bytes::from_static(b"{}"))))
//!     }));
//! let request = || {
//!     Request::post("/v1/chat/completions")
//!         .header("authorization", "Bearer sk-example")
//!         .body(Full::new(Bytes::new()))
//!         .unwrap()
//! };
//!
//! let response = svc.clone().oneshot(request()).await?;
//! assert_eq!(response.headers()["x-ratelimit-remaining"], "0");
//!
//! let error = svc.clone().oneshot(request()).await.unwrap_err();
//! let limited = portcullis_core::error::find_in_chain::<RateLimited>(&*error).unwrap();
//! assert_eq!(limited.headers()["retry-after"], "1");
//! # Ok(())
//! # }
//! ```

mod config;
mod error;
pub mod future;
mod key;
mod layer;
pub mod limiter;
mod redis;
mod service;

pub use config::{Config, KeyKind, Quota};
pub use error::{
    insert_limit_headers, RateLimited, X_RATELIMIT_LIMIT, X_RATELIMIT_REMAINING, X_RATELIMIT_RESET,
};
pub use key::RateKey;
pub use layer::RateLimitLayer;
pub use limiter::{Backend, Decision, Limiter, MemoryLimiter, DEFAULT_PRUNE_INTERVAL};
pub use redis::{RedisLimiter, RedisStore, DEFAULT_PREFIX};
pub use service::RateLimit;
