//! A tower layer that gives every request a memory user id, so each client's memory stays its
//! own when the upstream is a memory service (e.g. Supermemory's memory router).
//!
//! The id is, in this order:
//! 0. the id bound to the caller's gateway key: a [`BoundUserId`] request extension (the
//!    gateway's auth sets it for a `[[keys]]` entry with a `user_id`);
//! 1. unless [`Config::trust_client_header`] is false, the client's explicit id: [`Config::client_header`] (`x-memory-user-id`), else an
//!    [`Config::upstream_header`] (`x-sm-user-id`) the client already sends; trimmed, and used
//!    only if it is 1 to 256 bytes of printable ASCII (otherwise ignored, logged at debug);
//! 2. else the `user_id` of the first [`Pattern`] *in config order* whose regex matches its
//!    header's value: header names and regexes are case-insensitive, regexes are unanchored
//!    and compiled once at load; a header sent several times matches if any value does;
//! 3. else [`Config::default_user_id`].
//!
//! Matching work per request is bounded: at most [`MAX_PATTERNS`] patterns (checked by
//! [`Config::validate`]), each header's first [`MAX_MATCHED_VALUES`] values, each value's
//! first [`MAX_MATCHED_BYTES`] bytes.
//!
//! The request then goes on with the upstream header set to that id (replacing any the
//! client sent) and the client header removed, and with two extensions: the [`Decision`] (what `GET /memory-routing/info`
//! shows) and a [`portcullis_core::UserId`], which the rate-limit and dedup layers key on.
//! Every decision is a `tracing` debug event (user id, source, pattern index; for a default,
//! the values the patterns saw) and counts in `portcullis_memory_routing_decisions_total{source}`.
//!
//! [`Config::validate`] names every bad regex, header name and user id by its key path;
//! [`Config::warnings`] flags patterns that can never win and domain-like unescaped dots.
//!
//! # Example
//! ```
//! use std::convert::Infallible;
//! use http::{Request, Response};
//! use portcullis_core::UserId;
//! use portcullis_memory_routing::{Config, Decision, MemoryRoutingLayer, Pattern};
//! use tower::{service_fn, ServiceBuilder, ServiceExt};
//!
//! # tokio_test::block_on(async {
//! let config = Config {
//!     patterns: vec![Pattern {
//!         header: "user-agent".into(),
//!         pattern: "OpenAIClientImpl/Java".into(),
//!         user_id: "pycharm-ai".into(),
//!     }],
//!     ..Config::default()
//! };
//! let svc = ServiceBuilder::new()
//!     .layer(MemoryRoutingLayer::from_config(&config).expect("valid config"))
//!     .service(service_fn(|req: Request<String>| async move {
//!         // What the upstream sees.
//!         assert_eq!(req.headers()["x-sm-user-id"], "pycharm-ai");
//!         assert_eq!(req.extensions().get::<UserId>().unwrap().as_str(), "pycharm-ai");
//!         assert!(!req.extensions().get::<Decision>().unwrap().is_default);
//!         Ok::<_, Infallible>(Response::new(String::new()))
//!     }));
//!
//! let req = Request::builder()
//!     .header("User-Agent", "OpenAIClientImpl/Java (JetBrains)")
//!     .body(String::new())
//!     .unwrap();
//! svc.oneshot(req).await.unwrap();
//! # });
//! ```

mod config;
mod layer;
mod router;
mod service;

pub use config::{Config, Pattern, MAX_PATTERNS, MAX_USER_ID_LEN};
pub use layer::MemoryRoutingLayer;
pub use portcullis_core::BoundUserId;
pub use router::{
    Decision, MemoryRouter, MAX_MATCHED_BYTES, MAX_MATCHED_VALUES, PATTERN_SIZE_LIMIT,
};
pub use service::MemoryRouting;
