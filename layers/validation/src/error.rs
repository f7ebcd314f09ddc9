//! The failures this layer adds, each a [`Refusal`] (returned wrapped in
//! [`Refused`](portcullis_core::error::Refused)): [`InvalidRequest`] is `400 invalid_request`,
//! [`BodyTooLarge`] `413 body_too_large`, [`BodyReadError`] `400 invalid_request`.

use std::fmt;

use http::StatusCode;
use portcullis_core::error::Refusal;

/// The request body failed validation; the request was not passed on.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct InvalidRequest {
    /// Path of the offending field, e.g. `messages[2].role`; empty when the whole body is at
    /// fault (not JSON, not an object).
    pub field: String,
    /// What is wrong, lowercase.
    pub message: String,
}

impl InvalidRequest {
    /// A problem with `field` (use `""` for the whole body).
    pub fn new(field: impl Into<String>, message: impl Into<String>) -> Self {
        Self {
            field: field.into(),
            message: message.into(),
        }
    }
}

impl fmt::Display for InvalidRequest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.field.is_empty() {
            f.write_str(&self.message)
        } else {
            write!(f, "{}: {}", self.field, self.message)
        }
    }
}

impl std::error::Error for InvalidRequest {}

/// The request body is larger than the configured limit; it was not (fully) read.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
#[error("request body is larger than {limit} bytes")]
pub struct BodyTooLarge {
    /// The limit in bytes (`max_body_bytes`).
    pub limit: usize,
}

/// Reading the request body failed, typically because the client went away.
#[derive(Debug, thiserror::Error)]
#[error("reading the request body failed: {source}")]
pub struct BodyReadError {
    /// The body's own error.
    #[source]
    pub source: tower::BoxError,
}

impl Refusal for InvalidRequest {
    fn status(&self) -> StatusCode {
        StatusCode::BAD_REQUEST
    }
    fn code(&self) -> &'static str {
        "invalid_request"
    }
}

impl Refusal for BodyTooLarge {
    fn status(&self) -> StatusCode {
        StatusCode::PAYLOAD_TOO_LARGE
    }
    fn code(&self) -> &'static str {
        "body_too_large"
    }
}

impl Refusal for BodyReadError {
    fn status(&self) -> StatusCode {
        StatusCode::BAD_REQUEST
    }
    fn code(&self) -> &'static str {
        "invalid_request"
    }
}
