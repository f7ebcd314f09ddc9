//! Retries for calls to LLM upstreams: exponential backoff with full jitter, `Retry-After`,
//! a retry budget, and request bodies buffered so they can be sent again.
//!
//! [`Retry`] wraps any `tower::Service<http::Request<B>, Response = http::Response<RB>>`.
//! For each request it makes up to [`Config::max_attempts`] attempts:
//!
//! - **What is retried**: responses whose status is in [`Config::retry_on`] (default 429,
//!   500, 502, 503, 504, 529) and every error of the inner service (connect errors, resets,
//!   timeouts), except an error holding a [`portcullis_core::CircuitOpen`]: that one is
//!   returned at once so a router above can fail over.
//! - **What is not**: any other status (a 400 or 401 will not change on retry);
//!   a response with `x-should-retry: false`; a 429 whose JSON body has `error.code` or
//!   `error.type` `insufficient_quota` (billing, not load; its body is returned intact).
//!   `x-should-retry: true` makes 408, 409, 429 and any 5xx retryable even if not in
//!   `retry_on`, as the OpenAI SDK does; it never makes another status retryable.
//! - **How long to wait**: a uniform random wait in
//!   `[0, min(max_delay, base_delay * 2^(attempt - 1))]` ("full jitter"), unless
//!   [`Config::respect_retry_after`] and the response says `retry-after-ms` or `Retry-After`
//!   (seconds or an HTTP date, see [`parse_retry_after`]): then exactly that. A wait longer
//!   than [`Config::max_retry_after`] is not waited for: the response is returned as it is.
//!   The failed response is dropped before the wait, so it holds no connection.
//! - **Retry budget**: every request deposits into a tower
//!   [`TpsBudget`](tower::retry::budget::TpsBudget), every retry withdraws; when it is empty
//!   the last response or error is returned. All clones of a [`RetryLayer`] share it.
//! - **Bodies**: a request body whose `size_hint` says it is at most
//!   [`Config::max_replay_body_bytes`] is buffered and replayed on each attempt (method,
//!   URI, headers and extensions are cloned too). Any other body is sent once, never retried.
//! - **Streaming**: a response is retried only on its status and headers. Once a response is
//!   handed to the caller it is never retried, so a streamed body is never retried after
//!   its first byte.
//! - **Reporting**: every response gets `x-portcullis-attempts: N` (also `1`) and an
//!   [`Attempts(N)`](portcullis_core::Attempts) extension; errors are wrapped in
//!   [`Attempted`], which carries `N`. Each attempt runs in an `upstream_attempt`
//!   tracing span with an `attempt` field; an `info` event before each wait gives the wait
//!   in milliseconds and the reason.
//!
//! # Example
//! ```
//! use std::sync::{
//!     atomic::{AtomicUsize, Ordering},
//!     Arc,
//! };
//! use std::{convert::Infallible, time::Duration};
//!
//! use bytes::Bytes;
//! use http::{Request, Response, StatusCode};
//! use http_body_util::Full;
//! use portcullis_retry::{Config, RetryLayer};
//! use tower::{service_fn, ServiceBuilder, ServiceExt};
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() {
//! let calls = Arc::new(AtomicUsize::new(0));
//! let upstream = {
//!     let calls = calls.clone();
//!     // Overloaded once, then fine.
//!     service_fn(move |_req: Request<Full<Bytes>>| {
//!         let n = calls.fetch_add(1, Ordering::SeqCst);
//!         async move {
//!             let status = if n == 0 { StatusCode::SERVICE_UNAVAILABLE } else { StatusCode::OK };
//!             let mut resp = Response::new(Full::new(Bytes::from_static(b"{}")));
//!             *resp.status_mut() = status;
//!             Ok::<_, Infallible>(resp)
//!         }
//!     })
//! };
//!
//! let layer = RetryLayer::from_config(&Config {
//!     base_delay: Duration::from_millis(1),
//!     ..Config::default()
//! })
//! .expect("valid config");
//! let svc = ServiceBuilder::new().layer(layer).service(upstream);
//!
//! let req = Request::post("http://upstream/v1/chat/completions")
//!     .body(Full::new(Bytes::from_static(br#"{"model":"gpt-4o-mini"}"#)))
//!     .unwrap();
//! let resp = svc.oneshot(req).await.unwrap();
//! assert_eq!(resp.status(), StatusCode::OK);
//! assert_eq!(resp.headers()["x-portcullis-attempts"], "2");
//! assert_eq!(calls.load(Ordering::SeqCst), 2);
//! # }
//! ```

mod config;
pub mod future;
mod layer;
mod policy;
mod service;

pub use config::{BudgetConfig, Config};
pub use future::ResponseFuture;
pub use layer::RetryLayer;
pub use policy::parse_retry_after;
pub use service::{Attempted, Retry};
