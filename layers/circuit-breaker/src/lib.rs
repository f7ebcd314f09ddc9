//! A per-upstream circuit breaker as a tower layer: after `failure_threshold` consecutive
//! failed requests (once enough traffic was seen) calls fail fast with [`CircuitOpen`] until a
//! probe shows the upstream is back.
//!
//! - **Closed**: calls go through. A response with status >= 500 or an error from the inner
//!   service (connect error, timeout) is a failure; anything else, 4xx included, is a success
//!   and resets the count. `failure_threshold` failed requests in a row open the breaker, once
//!   `minimum_requests` requests completed within `window` (see [`Config`] for the model).
//!   Outcomes are counted per client request, not per attempt: the attempts a retry layer
//!   makes for one request carry one [`ClientRequest`] and count once.
//! - **Open**: calls fail at once with [`CircuitOpen`] (carrying `retry_after`); the inner
//!   service is not called. After `open_timeout` the next call becomes the probe.
//! - **Half-open**: one probe at a time goes through; other calls fail fast. A failed probe
//!   re-opens the breaker for another `open_timeout`; `success_threshold` successful probes
//!   close it. A probe whose future is dropped (the client went away) frees its slot.
//!
//! Transitions are logged (`warn` when opening, `info` otherwise) and published as the gauge
//! `portcullis_circuit_breaker_state{upstream}` (0 closed, 1 open, 2 half-open).
//! [`BreakerHandle`] reads the state and resets it (for `/health/upstreams` and the admin
//! endpoint).
//!
//! # Example
//!
//! ```
//! use std::time::Duration;
//!
//! use bytes::Bytes;
//! use http::{Request, Response, StatusCode};
//! use http_body_util::Full;
//! use portcullis_circuit_breaker::{CircuitBreakerLayer, Config, State};
//! use portcullis_core::{error::find_in_chain, CircuitOpen};
//! use tower::{service_fn, BoxError, ServiceBuilder, ServiceExt};
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), BoxError> {
//! //! // `minimum_requests: 1`: no volume gate, so two failures are enough in this example.
//! let config = Config {
//!     failure_threshold: 2,
//!     minimum_requests: 1,
//!     open_timeout: Duration::from_secs(30),
//!     ..Config::default()
//! };
//! let layer = CircuitBreakerLayer::from_config("openai", &config).expect("valid config");
//! let handle = layer.handle();
//!
//! let upstream = service_fn(|_req: Request<Full<Bytes>>| async {
//!     let mut res = Response::new(Full::new(Bytes::from_static(b"down")));
//!     *res.status_mut() = StatusCode::SERVICE_UNAVAILABLE;
//!     Ok::<_, BoxError>(res)
//! });
//! let svc = ServiceBuilder::new().layer(layer).service(upstream);
//!
//! for _ in 0..2 {
//!     let res = svc.clone().oneshot(Request::new(Full::default())).await?;
//!     assert_eq!(res.status(), StatusCode::SERVICE_UNAVAILABLE);
//! }
//! assert_eq!(handle.state(), State::Open);
//!
//! let err = svc.clone().oneshot(Request::new(Full::default())).await.unwrap_err();
//! let open = find_in_chain::<CircuitOpen>(&*err).expect("a CircuitOpen error");
//! assert_eq!(open.upstream, "openai");
//! assert!(open.retry_after <= Duration::from_secs(30));
//!
//! handle.reset();
//! assert_eq!(handle.state(), State::Closed);
//! # Ok(())
//! # }
//! ```

mod config;
pub mod future;
mod layer;
mod request;
mod service;
mod state;

pub use config::{Config, MAX_MINIMUM_REQUESTS};
pub use layer::CircuitBreakerLayer;
pub use portcullis_core::CircuitOpen;
pub use request::ClientRequest;
pub use service::CircuitBreaker;
pub use state::{BreakerHandle, State, PROBE_IN_FLIGHT_RETRY_AFTER};
