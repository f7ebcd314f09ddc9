//! Translation between LLM API shapes: OpenAI chat completions, OpenAI Responses and
//! Anthropic Messages — requests, responses, streams (event by event) and errors — and a
//! tower layer that puts it in front of an upstream speaking one API.
//!
//! - [`TranslateLayer`] / [`Translate`]: for an upstream with [`Api::OpenAi`] or
//!   [`Api::Anthropic`], a client request to `/v1/chat/completions`, `/v1/messages` or
//!   `/v1/responses` in another shape is rewritten to the upstream's (path, body,
//!   `anthropic-version`, auth header style, `content-length`), and the answer back:
//!   JSON, SSE streams (translated as events arrive, never collected) and errors (mapped to
//!   the client's error shape and an SDK-meaningful status). [`Api::Any`] and same-shape
//!   requests pass through with no body work. Endpoints the upstream's API lacks fail with
//!   [`TranslateError::UnsupportedPath`] (see [`route`]).
//! - Pure functions: [`chat_to_messages`], [`messages_to_chat`], [`responses_to_chat`],
//!   [`responses_to_messages`] (requests); [`messages_to_chat_response`],
//!   [`chat_to_messages_response`], [`chat_to_responses_response`],
//!   [`messages_to_responses_response`] (answers); [`map_error`] (errors);
//!   [`StreamTranslator`] (streams); [`translate_request`] / [`translate_response`] on bytes.
//! - [`types`]: serde types of the three APIs, tolerant of fields they do not know.
//!
//! The crate README (`layers/translate/README.md`) has the tables of every mapping, every default, and every field that is
//! refused or dropped on purpose.
//!
//! # Example
//! ```
//! use std::convert::Infallible;
//!
//! use bytes::Bytes;
//! use http::{Request, Response};
//! use http_body_util::{BodyExt, Full};
//! use portcullis_translate::{Api, TranslateLayer};
//! use tower::{service_fn, ServiceBuilder, ServiceExt};
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() {
//! // An Anthropic-only upstream.
//! let upstream = service_fn(|req: Request<Full<Bytes>>| async move {
//!     assert_eq!(req.uri().path(), "/v1/messages");
//!     assert_eq!(req.headers()["anthropic-version"], "2023-06-01");
//!     let body = r#"{"id":"msg_1","type":"message","role":"assistant","model":"claude-sonnet-4-5",
//!         "content":[{"type":"text","text":"Hello!"}],"stop_reason":"end_turn",
//!         "usage":{"input_tokens":9,"output_tokens":3}}"#;
//!     let mut resp = Response::new(Full::new(Bytes::from(body)));
//!     resp.headers_mut().insert("content-type", "application/json".parse().unwrap());
//!     Ok::<_, Infallible>(resp)
//! });
//! let svc = ServiceBuilder::new()
//!     .layer(TranslateLayer::new(Api::Anthropic))
//!     .service(upstream);
//!
//! // An OpenAI chat completions client.
//! let req = Request::post("https://api.anthropic.com/v1/chat/completions")
//!     .body(Full::new(Bytes::from(
//!         r#"{"model":"claude-sonnet-4-5","messages":[{"role":"user","content":"Hi"}]}"#,
//!     )))
//!     .unwrap();
//! let resp = svc.oneshot(req).await.unwrap();
//! let body = resp.into_body().collect().await.unwrap().to_bytes();
//! let json: serde_json::Value = serde_json::from_slice(&body).unwrap();
//! assert_eq!(json["choices"][0]["message"]["content"], "Hello!");
//! assert_eq!(json["choices"][0]["finish_reason"], "stop");
//! assert_eq!(json["usage"]["prompt_tokens"], 9);
//! # }
//! ```

mod api;
mod body;
mod compact;
mod config;
pub mod count;
pub mod custom;
pub mod error;
pub mod future;
mod layer;
pub mod legacy;
pub mod request;
pub mod response;
mod service;
mod sse;
pub mod store;
pub mod stream;
pub mod types;

pub use api::{Api, Format};
pub use body::TranslateBody;
pub use config::Config;
pub use error::{map_error, parse_error, ErrorKind, MappedError, TranslateError, UpstreamError};
pub use future::ResponseFuture;
pub use layer::TranslateLayer;
pub use request::{
    chat_to_messages, effort_for_budget, messages_to_chat, responses_to_chat,
    responses_to_messages, thinking_budget, translate_request, Plan, UnknownEffort,
    DEFAULT_MAX_TOKENS,
};
pub use response::{
    chat_to_messages_response, chat_to_responses_response, messages_to_chat_response,
    messages_to_responses_response, translate_response, Reply, StopReason, Usage,
};
pub use service::{
    route, Route, Translate, ANTHROPIC_VERSION, MAX_RESPONSE_BYTES, X_PORTCULLIS_TRANSLATED,
};
pub use sse::MAX_EVENT_BYTES;
pub use store::{RedisItems, ResponseStore, StoreConfig};
pub use stream::StreamTranslator;
