//! The error a blocked tool-call loop is answered with.

/// The session repeated the same tool call (same name, same arguments) more than
/// `max_repeats` times in a row: the gateway's edge renders it as `409 tool_call_loop` in the
/// caller's API shape. Returned (boxed as `tower::BoxError`) instead of a non-streamed answer;
/// a stream ends with an error event carrying the same message instead.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "tool call loop: the tool {tool:?} was called {repeats} times in a row with the same arguments; try a different approach"
)]
pub struct ToolCallLoop {
    /// The (first) tool of the repeated call.
    pub tool: String,
    /// How many identical calls in a row the session has made, this one included.
    pub repeats: u32,
}

impl ToolCallLoop {
    /// The `x-portcullis-error` code and the streams' error `code`.
    pub const CODE: &'static str = "tool_call_loop";
    /// The error `type` of the stream error event (and what the edge should use for 409).
    pub const ERROR_TYPE: &'static str = "invalid_request_error";
}

/// The edge renders it as `409 tool_call_loop` in the caller's shape.
impl portcullis_core::error::Refusal for ToolCallLoop {
    fn status(&self) -> http::StatusCode {
        http::StatusCode::CONFLICT
    }
    fn code(&self) -> &'static str {
        Self::CODE
    }
}
