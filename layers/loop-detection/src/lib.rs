//! Loop detection for portcullis: ends LLM answers whose text repeats itself, as a tower layer.
//!
//! A model caught in a loop writes the same paragraph again and again until it runs out of
//! tokens, and the caller pays for every one. [`LoopDetection`] watches the text of answers
//! (chat completions, the Responses API and Anthropic messages, streamed or not) and stops an
//! answer as soon as it ends in a pattern of `min_pattern_length..=max_pattern_length`
//! characters repeated `min_repetitions` times in a row (see [`LoopDetector`] for the
//! algorithm, its linear time and its bounded memory).
//!
//! # Behaviour in detail
//! - The API is decided by the request path: `/v1/chat/completions` (`choices[].delta.content`,
//!   or `choices[].message.content`), `/v1/responses` (`response.output_text.delta` events, or
//!   `output[].content[].text`), `/v1/messages` (`content_block_delta` events with a
//!   `text_delta`, or `content[].text`). Other paths, error statuses, compressed bodies and
//!   requests carrying the [`LoopDetectionOff`] extension pass through untouched.
//! - **Streams** (`text/event-stream`) are passed on an event at a time: the bytes of an event
//!   are held back until its blank line arrives (events larger than
//!   [`DEFAULT_MAX_EVENT_BYTES`] are passed on unread), so when the text starts looping the
//!   event that completed the loop is not sent; the upstream body is dropped (which cancels
//!   the upstream call) and one error event in the caller's shape ends the stream (interface.md
//!   "Streams"): `data: {"error":{"message":..,"type":"api_error","code":"loop_detected"}}` and
//!   no `[DONE]` for chat completions, `event: error` + `{"type":"error","error":{..}}` for
//!   messages, an `error` event `{"type":"error","code":"loop_detected",..}` for responses.
//!   `Content-Length` is removed from watched streams.
//! - **Non-streamed JSON answers** (up to [`LoopDetectionLayer::with_max_json_bytes`], 10 MiB
//!   by default; larger ones pass unchecked) are read whole, then either passed on unchanged or
//!   replaced by a [`LoopDetected`] error (boxed as `tower::BoxError`), which the gateway's
//!   edge renders as `502 loop_detected` in the caller's shape.
//! - Each choice of a chat completion (`n > 1`) is watched on its own (the first 8); in the
//!   other APIs the texts of an answer are watched as one text.
//! - Every loop found is logged (`tracing`, `warn`) and counted in the `metrics` counter
//!   `portcullis_loops_detected_total{api}` (`api` is `chat_completions`, `responses` or
//!   `messages`).
//! - Malformed events and JSON never fail anything: they pass through unread.
//!
//! # Example
//! ```
//! use std::convert::Infallible;
//!
//! use bytes::Bytes;
//! use http::{Request, Response};
//! use http_body_util::{BodyExt, Full};
//! use portcullis_loop_detection::{Config, LoopDetected, LoopDetectionLayer};
//! use tower::{service_fn, ServiceBuilder, ServiceExt};
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), tower::BoxError> {
//! let layer = LoopDetectionLayer::from_config(&Config::default()).expect("valid config");
//! let svc = ServiceBuilder::new()
//!     .layer(layer)
//!     .service(service_fn(|_req: Request<Full<Bytes>>| async {
//!         let sentence = "I am going to read the file again to be completely sure. ";
//!         let answer = serde_json::json!({
//!             "choices": [{ "index": 0, "message": { "role": "assistant",
//!                 "content": sentence.repeat(10) } }]
//!         });
//!         let resp = Response::builder()
//!             .header("content-type", "application/json")
//!             .body(Full::new(Bytes::from(answer.to_string())))
//!             .unwrap();
//!         Ok::<_, Infallible>(resp)
//!     }));
//!
//! let request = Request::post("/v1/chat/completions").body(Full::new(Bytes::new()))?;
//! let error = svc.clone().oneshot(request).await.unwrap_err();
//! let found = portcullis_core::error::find_in_chain::<LoopDetected>(&*error).unwrap();
//! assert_eq!(found.pattern_length, 57);
//!
//! // Other paths are not watched.
//! let request = Request::post("/v1/embeddings").body(Full::new(Bytes::new()))?;
//! let response = svc.oneshot(request).await?;
//! assert!(!response.into_body().collect().await?.to_bytes().is_empty());
//! # Ok(())
//! # }
//! ```

mod api;
mod body;
mod config;
mod detector;
mod error;
pub mod future;
mod layer;
mod scan;
mod service;
mod sse;
mod watch;

pub use api::Api;
pub use body::LoopDetectionBody;
pub use config::{Config, MAX_PATTERN_LENGTH_LIMIT};
pub use detector::{Detection, LoopDetector};
pub use error::LoopDetected;
pub use layer::{LoopDetectionLayer, DEFAULT_MAX_EVENT_BYTES};
pub use service::LoopDetection;

/// A request extension that turns loop detection off for that request: its answer passes
/// through unwatched. (The in-chat `!/set(loop_detection=off)` command inserts it.)
///
/// ```
/// let mut request = http::Request::new(());
/// request.extensions_mut().insert(portcullis_loop_detection::LoopDetectionOff);
/// ```
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct LoopDetectionOff;

/// The counter of loops found.
pub const LOOPS_DETECTED_METRIC: &str = "portcullis_loops_detected_total";

/// Log and count a loop found.
pub(crate) fn report(err: &LoopDetected, at_char: u64, streamed: bool) {
    tracing::warn!(
        api = err.api.as_str(),
        pattern_length = err.pattern_length,
        repetitions = err.repetitions,
        at_char,
        streamed,
        "loop detected; the answer was cut"
    );
    metrics::counter!(LOOPS_DETECTED_METRIC, "api" => err.api.as_str()).increment(1);
}
