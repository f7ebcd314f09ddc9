//! Tool-call loop detection for portcullis: stops agents that make the same tool call over and
//! over, per session, as a tower layer.
//!
//! An agent stuck in a loop asks for the same tool with the same arguments again and again,
//! paying for a model call each time. [`ToolCallLoopDetection`] reads the tool calls of every
//! answer, counts **identical consecutive** ones per session, and acts when a session passes
//! `max_repeats` within `ttl`.
//!
//! # Behaviour in detail
//! - **Sessions**: [`session_key`] (the caller's identity, then `x-session-id` or the memory
//!   user id). At most [`DEFAULT_MAX_SESSIONS`] are kept (`moka`, least recently used go
//!   first), each forgotten `ttl` after its last answer.
//! - **What is compared**: an answer's tool calls, in order, each as its name plus its
//!   [`canonical_arguments`] (JSON with sorted keys). An answer making the same calls as the
//!   previous answer of its session continues the streak; different calls start a new one; an
//!   answer without tool calls ends it. (An answer with several parallel calls counts once, as
//!   that list: an agent alternating `[read a, read b]` loops too.)
//! - **Where calls are read** (the API is decided by the request path; other paths, error
//!   statuses and compressed bodies pass through): `/v1/chat/completions`
//!   `choices[].message.tool_calls` or streamed `delta.tool_calls` (arguments assembled per
//!   index); `/v1/responses` `function_call` (and `custom_tool_call`) output items, streamed as
//!   `response.output_item.done`; `/v1/messages` `tool_use` blocks, streamed as
//!   `content_block_start` + `input_json_delta`.
//! - **When the count passes `max_repeats`** ([`Mode`]):
//!   - `block`: the answer that repeats is refused. Non-streamed: it is replaced by a
//!     [`ToolCallLoop`] error (boxed `tower::BoxError`; the edge renders `409
//!     tool_call_loop`). Streamed: the calls are only known once the answer is complete, so
//!     the stream is passed on an event at a time and the event that ends the answer
//!     (`data: [DONE]`, `response.completed`, `message_stop`, or the end of the body) is
//!     replaced by one error event in the caller's shape (code `tool_call_loop`). The client
//!     has then seen the call's deltas but never its completion, and gets an error: the
//!     request fails, as a non-streamed one would. The next request is *not* blocked in
//!     advance: if the agent changes course, it goes through.
//!   - `warn`: the answer goes through with a `warn` log and the response header
//!     [`X_PORTCULLIS_TOOL_CALL_LOOP`]` = warn`. A stream's headers are sent before its calls
//!     are known, so for a stream the header goes on the session's next response.
//!   - `chance_then_block`: the first time, the answer goes through (header value `chance`,
//!     on the next response for a stream) and the session's **next request** gets a note,
//!     appended as a user message in that request's shape, telling the model it is repeating
//!     the same call with the same arguments and should try something else. If the next
//!     answer repeats the call again, it is blocked as in `block`.
//! - Malformed events and JSON never fail anything: they pass through and are not counted.
//!
//! # Example
//! ```
//! use std::convert::Infallible;
//!
//! use bytes::Bytes;
//! use http::{Request, Response};
//! use http_body_util::Full;
//! use portcullis_tool_call_loop::{Config, ToolCallLoop, ToolCallLoopLayer};
//! use tower::{service_fn, ServiceBuilder, ServiceExt};
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), tower::BoxError> {
//! let layer = ToolCallLoopLayer::from_config(&Config::default()).expect("valid config");
//! let svc = ServiceBuilder::new()
//!     .layer(layer)
//!     .service(service_fn(|_req: Request<Full<Bytes>>| async {
//!         let answer = r#"{"content":[{"type":"tool_use","id":"t1","name":"read_file",
//!                          "input":{"path":"src/main.rs"}}],"stop_reason":"tool_use"}"#;
//!         let resp = Response::builder()
//!             .header("content-type", "application/json")
//!             .body(Full::new(Bytes::from_static(answer.as_bytes())))
//!             .unwrap();
//!         Ok::<_, Infallible>(resp)
//!     }));
//! let request = || {
//!     Request::post("/v1/messages")
//!         .header("x-api-key", "sk-ant-example")
//!         .header("x-session-id", "agent-run-1")
//!         .body(Full::new(Bytes::new()))
//!         .unwrap()
//! };
//!
//! for _ in 0..3 {
//!     svc.clone().oneshot(request()).await?; // max_repeats = 3 identical calls are fine
//! }
//! let error = svc.clone().oneshot(request()).await.unwrap_err();
//! let looped = portcullis_core::error::find_in_chain::<ToolCallLoop>(&*error).unwrap();
//! assert_eq!((looped.tool.as_str(), looped.repeats), ("read_file", 4));
//! # Ok(())
//! # }
//! ```

mod api;
mod body;
mod calls;
mod config;
mod error;
pub mod future;
mod layer;
mod note;
mod service;
mod session;
mod sse;

pub use api::Api;
pub use body::ToolCallLoopBody;
pub use calls::{canonical_arguments, ToolCall};
pub use config::{Config, Mode};
pub use error::ToolCallLoop;
pub use layer::{ToolCallLoopLayer, DEFAULT_MAX_EVENT_BYTES};
pub use service::ToolCallLoopDetection;
pub use session::{session_key, SessionKey, DEFAULT_MAX_SESSIONS, X_SESSION_ID};

use http::{HeaderName, Response};
use portcullis_core::headers::ReadableBody;

use crate::{layer::Shared, session::Verdict};

/// The response header saying a tool-call loop was let through: `warn` (mode `warn`) or
/// `chance` (mode `chance_then_block`, the session's next request gets a note).
pub const X_PORTCULLIS_TOOL_CALL_LOOP: HeaderName =
    HeaderName::from_static("x-portcullis-tool-call-loop");

/// The counter of loops found, labelled `action` = `block`, `warn` or `chance`.
pub const TOOL_CALL_LOOPS_METRIC: &str = "portcullis_tool_call_loops_total";

/// Record an answer's calls for its session, log and count what it means.
pub(crate) fn judge(
    shared: &Shared,
    api: Api,
    key: SessionKey,
    calls: &[ToolCall],
    streamed: bool,
) -> Verdict {
    let verdict = shared.sessions.record(key, calls, streamed);
    match &verdict {
        Verdict::Allow => {}
        Verdict::LetThrough {
            header,
            tool,
            repeats,
        } => {
            tracing::warn!(api = api.as_str(), tool = %tool, repeats, streamed, action = *header,
                "tool call loop: the same call was repeated; let through");
            metrics::counter!(TOOL_CALL_LOOPS_METRIC, "action" => *header).increment(1);
        }
        Verdict::Block { tool, repeats } => {
            tracing::warn!(api = api.as_str(), tool = %tool, repeats, streamed,
                "tool call loop: the same call was repeated; blocked");
            metrics::counter!(TOOL_CALL_LOOPS_METRIC, "action" => "block").increment(1);
        }
    }
    verdict
}

/// How a response's body is read.
pub(crate) enum Kind {
    Pass,
    Sse,
    Json,
}

pub(crate) fn kind<B>(resp: &Response<B>) -> Kind {
    match ReadableBody::of(resp.status(), resp.headers()) {
        None => Kind::Pass,
        Some(ReadableBody::Sse) => Kind::Sse,
        Some(ReadableBody::Json) => Kind::Json,
    }
}
