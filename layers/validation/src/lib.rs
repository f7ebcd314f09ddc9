//! A tower layer that checks LLM API request bodies (OpenAI chat completions, completions,
//! embeddings; Anthropic messages) before anything goes upstream.
//!
//! [`ValidationLayer`] reads the body of `POST /v1/chat/completions`, `/v1/completions`,
//! `/v1/embeddings` and `/v1/messages` (up to `max_body_bytes`), checks it at the configured
//! [`Level`], and either fails with [`InvalidRequest`] (naming the field, e.g.
//! `messages[2].role`) without calling the inner service, or passes the same bytes on with a
//! [`RequestMeta`](portcullis_core::RequestMeta) extension (model and stream flag) so later
//! layers need not parse the body again. Other requests pass through unread.
//!
//! | level | checks |
//! | --- | --- |
//! | `lenient` | a JSON object with a non-empty string `model` |
//! | `moderate` (default) | also required fields and their types (`messages` with known roles and content, Anthropic `max_tokens`, `input`, `prompt`) and numeric ranges (`temperature`, `top_p`, `n`, `max_tokens`...) |
//! | `strict` | also rejects top-level fields the API does not define (and duplicate keys), naming them |
//!
//! The rules are also available as a pure function, [`validate`].
//!
//! # Example
//!
//! ```
//! use bytes::Bytes;
//! use http::{Request, Response};
//! use http_body_util::Full;
//! use portcullis_core::RequestMeta;
//! use portcullis_validation::{Config, InvalidRequest, Level, ValidationLayer};
//! use tower::{service_fn, BoxError, ServiceBuilder, ServiceExt};
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() {
//! let layer = ValidationLayer::new(Config { level: Level::Moderate, ..Config::default() });
//! let svc = ServiceBuilder::new().layer(layer).service(service_fn(|req: Request<Full<Bytes>>| async move {
//!     // Only valid requests get here, and they say what they ask for.
//!     let model = req.extensions().get::<RequestMeta>().and_then(|m| m.model.clone());
//!     Ok::<_, BoxError>(Response::new(format!("model {}", model.as_deref().unwrap_or("?"))))
//! }));
//!
//! let ok = Request::post("/v1/chat/completions")
//!     .body(Full::from(r#"{"model":"gpt-4o","messages":[{"role":"user","content":"hi"}]}"#))
//!     .unwrap();
//! assert_eq!(svc.clone().oneshot(ok).await.unwrap().into_body(), "model gpt-4o");
//!
//! let bad = Request::post("/v1/chat/completions")
//!     .body(Full::from(r#"{"model":"gpt-4o","messages":[],"temperature":3}"#))
//!     .unwrap();
//! let err = svc.oneshot(bad).await.unwrap_err();
//! let err = err.downcast_ref::<InvalidRequest>().unwrap();
//! assert_eq!(err.field, "messages");
//! assert_eq!(err.to_string(), "messages: must not be empty");
//! # }
//! ```
//!
//! # Errors
//!
//! The service's errors are boxed ([`tower::BoxError`]); find them with
//! `portcullis_core::error::find_in_chain`: [`InvalidRequest`] (answer `400 invalid_request`),
//! [`BodyTooLarge`] (`413 body_too_large`), [`BodyReadError`] (the client went away).

mod config;
mod error;
pub mod future;
mod json;
mod layer;
mod route;
mod service;
mod validate;

pub use config::{Config, Level, DEFAULT_MAX_BODY_BYTES};
pub use error::{BodyReadError, BodyTooLarge, InvalidRequest};
pub use layer::ValidationLayer;
pub use route::Route;
pub use service::Validation;
pub use validate::{known_fields, validate};

#[doc(hidden)]
pub mod __bench {
    //! Parsers compared by the bench; not part of the API.

    /// Parse with the borrowed tree the validator uses; returns the number of top-level items.
    pub fn parse_borrowed(body: &[u8]) -> usize {
        match crate::json::parse(body) {
            Ok(crate::json::Node::Obj(fields)) => fields.len(),
            _ => 0,
        }
    }
}
