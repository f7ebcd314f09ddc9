//! The error a non-streamed answer that repeats itself is replaced with.

use crate::{Api, Detection};

/// The answer repeated itself: the gateway's edge renders it as `502 loop_detected` in the
/// caller's API shape. Returned (boxed as `tower::BoxError`) instead of a non-streamed
/// response; a stream ends with an error event instead (see the crate docs).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "loop detected: the answer repeated a {pattern_length}-character pattern {repetitions} times in a row"
)]
pub struct LoopDetected {
    /// Which API answered.
    pub api: Api,
    /// Length of the repeated pattern, in characters.
    pub pattern_length: usize,
    /// How many times it was seen in a row.
    pub repetitions: usize,
}

impl LoopDetected {
    /// The `x-portcullis-error` code and the streams' error `code`.
    pub const CODE: &'static str = "loop_detected";

    pub(crate) fn new(api: Api, d: Detection) -> Self {
        Self {
            api,
            pattern_length: d.pattern_length,
            repetitions: d.repetitions,
        }
    }

    /// The message of the error event a stream ends with.
    pub(crate) fn stream_message(&self) -> String {
        format!("{self}; the stream was ended")
    }
}

/// The edge renders it as `502 loop_detected` in the caller's shape.
impl portcullis_core::error::Refusal for LoopDetected {
    fn status(&self) -> http::StatusCode {
        http::StatusCode::BAD_GATEWAY
    }
    fn code(&self) -> &'static str {
        Self::CODE
    }
}
