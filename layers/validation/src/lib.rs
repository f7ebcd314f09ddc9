//! A tower layer that checks LLM API request bodies (OpenAI chat completions, completions,
//! embeddings, responses; Anthropic messages and count_tokens) before anything goes upstream.
//!
//! [`ValidationLayer`] reads the body of `POST` requests to the [`Route`]s
//! (`/v1/chat/completions`, `/v1/completions`, `/v1/embeddings`, `/v1/responses`,
//! `/v1/messages`, `/v1/messages/count_tokens`; the query string, e.g. `?beta=true`, does not
//! matter), up to a size cap ([`ValidationLayer::with_max_body_bytes`], default
//! [`portcullis_core::body::DEFAULT_MAX_BODY_BYTES`]). It checks the body against the route's
//! own schema at the configured [`Level`], and either fails with [`InvalidRequest`] (naming the
//! field, e.g. `messages[2].content[0].type`) without calling the inner service, or passes the
//! same bytes on with a [`RequestMeta`](portcullis_core::RequestMeta) extension (model and
//! stream flag) so later layers need not parse the body again. Other requests pass through
//! unread.
//!
//! | level | checks |
//! | --- | --- |
//! | `lenient` | a JSON object with a non-empty string `model` |
//! | `moderate` (default) | also what no version of the route's API accepts: missing or mistyped `messages` / `input` (embeddings) / Anthropic `max_tokens` (not on count_tokens), messages that are not objects or lack a string `role`, content that is neither a string nor an array of objects with a string `type`, and wrong JSON types of documented fields (`max_tokens` a string, `tools` not an array of objects, `stream` not a boolean...). New roles, block and item types and top-level fields pass |
//! | `strict` | also the enumerations (roles, content block / part / input item / tool types, known values such as `reasoning_effort`), numeric ranges and integer-ness, non-empty lists, per-role required fields (`tool_call_id`, `content`...), and rejects top-level fields the API does not define (and duplicate keys), naming them |
//!
//! A body of more JSON values than a tree holds (262,144 array items and object members,
//! [`portcullis_core::json_skim::MAX_VALUES`]; only token ids come near it, and a tree of a
//! 10 MB body of `0,0,0,…` would take ~270 MB) is checked as `lenient` checks it, whatever the
//! level: the rules above it are left to the provider.
//!
//! On `/v1/responses`, `model` may be left out when a `prompt` template is given (the stored
//! prompt names the model); the request then carries no model in its `RequestMeta`. `input`
//! is optional there (`previous_response_id`, `conversation` or `prompt` can carry it). On
//! `/v1/completions`, `prompt` is only required at strict (the API defaults a missing one).
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
//! let layer = ValidationLayer::new(Config { level: Level::Moderate })
//!     .with_max_body_bytes(1 << 20); // the gateway passes `server.max_body_bytes`
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
//!     .body(Full::from(r#"{"model":"gpt-4o","messages":[{"role":"user","content":"hi"}],"max_tokens":"64"}"#))
//!     .unwrap();
//! let err = svc.oneshot(bad).await.unwrap_err();
//! // A `Refused` (400 invalid_request for an edge to render) wrapping the typed error.
//! let err = portcullis_core::error::find_in_chain::<InvalidRequest>(&*err).unwrap();
//! assert_eq!(err.field, "max_tokens");
//! assert_eq!(err.to_string(), "max_tokens: must be an integer, got a string");
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

pub use config::{Config, Level};
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
        let arena = bumpalo::Bump::new();
        match crate::json::parse(body, &arena) {
            Ok(crate::json::Node::Obj(fields)) => fields.len(),
            _ => 0,
        }
    }

    /// Validate as the gateway does with dedup on: also write the canonical form; returns
    /// its length (0 when invalid or none was written).
    pub fn validate_with_canonical(route: crate::Route, level: crate::Level, body: &[u8]) -> usize {
        match crate::validate::check(route, level, body, true) {
            Ok((_, Some(canonical))) => canonical.len(),
            _ => 0,
        }
    }
}
