//! Errors: what this crate refuses ([`TranslateError`]), and an upstream's error answer
//! rewritten in the client's API ([`map_error`]).
//!
//! # Status and type table
//!
//! Statuses are chosen so the client's SDK raises the matching exception class
//! (openai-python / anthropic-sdk-python `_make_status_error`).
//!
//! | Anthropic upstream (status, `error.type`) | OpenAI client gets (status, `type`, `code`) |
//! | --- | --- |
//! | 400 `invalid_request_error` | 400 `invalid_request_error` |
//! | 401 `authentication_error` | 401 `authentication_error` |
//! | 402 `billing_error` | 429 `insufficient_quota` (`x-should-retry: false`: billing does not heal by retrying) |
//! | 403 `permission_error` | 403 `permission_error` |
//! | 404 `not_found_error` | 404 `invalid_request_error`, code `not_found_error` |
//! | 413 `request_too_large` | 413 `invalid_request_error`, code `request_too_large` |
//! | 429 `rate_limit_error` | 429 `rate_limit_error` |
//! | 500 `api_error` | 500 `server_error` |
//! | 504 `timeout_error` | 504 `timeout` |
//! | 529 `overloaded_error` | 503 `server_error`, code `overloaded_error` |
//!
//! | OpenAI-shaped upstream (status, `type`/`code`) | Anthropic client gets (status, `error.type`) |
//! | --- | --- |
//! | 400, 422 | same status, `invalid_request_error` |
//! | 401 | 401 `authentication_error` |
//! | 403 | 403 `permission_error` |
//! | 404 | 404 `not_found_error` |
//! | 409 | 409 `invalid_request_error` |
//! | 413 | 413 `request_too_large` |
//! | 429 `insufficient_quota` | 402 `billing_error` |
//! | 429 otherwise | 429 `rate_limit_error` |
//! | 503 | 529 `overloaded_error` (what Anthropic clients back off on) |
//! | 504 | 504 `timeout_error` |
//! | other 5xx | same status, `api_error` |
//!
//! The message is kept word for word. Bodies of other shapes are understood too: vLLM's
//! `{"object":"error","message":..}`, a bare `{"message":..}`, `{"error":"text"}` and plain
//! text (its first 500 characters).

use bytes::Bytes;
use http::StatusCode;
use serde_json::{json, Value};

use crate::{api::Format, Api};

/// Something this crate will not translate. Boxed as `tower::BoxError` by the layer; the
/// gateway's rescue layer answers it in the client's shape with [`TranslateError::status`]
/// and [`TranslateError::code`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TranslateError {
    /// A request field the target API cannot carry.
    #[error("{field} cannot be translated to the {target} API: {reason}")]
    Unsupported {
        /// The field, as a path in the client's request (`n`, `messages[2].content[0]`).
        field: String,
        /// The API the request had to be translated to.
        target: Format,
        /// Why.
        reason: String,
    },
    /// An endpoint the upstream's API has no equivalent of.
    #[error("{path} is not available on an upstream that speaks the {api} API")]
    UnsupportedPath {
        /// The request path.
        path: String,
        /// The upstream's API.
        api: Api,
    },
    /// The client's body is not a request of its endpoint's shape.
    #[error("the body is not a valid {format} request: {message}")]
    InvalidRequest {
        /// The endpoint's shape.
        format: Format,
        /// What serde said.
        message: String,
    },
    /// The upstream answered something that is not a response of its API's shape.
    #[error("the upstream's {format} answer could not be translated: {message}")]
    InvalidUpstream {
        /// The upstream's shape.
        format: Format,
        /// What went wrong.
        message: String,
    },
}

impl TranslateError {
    pub(crate) fn unsupported(
        field: impl Into<String>,
        target: Format,
        reason: impl Into<String>,
    ) -> Self {
        TranslateError::Unsupported {
            field: field.into(),
            target,
            reason: reason.into(),
        }
    }

    /// The HTTP status to answer with: 400 for what the client sent, 404 for a path,
    /// 502 for what the upstream sent.
    pub fn status(&self) -> StatusCode {
        match self {
            TranslateError::Unsupported { .. } | TranslateError::InvalidRequest { .. } => {
                StatusCode::BAD_REQUEST
            }
            TranslateError::UnsupportedPath { .. } => StatusCode::NOT_FOUND,
            TranslateError::InvalidUpstream { .. } => StatusCode::BAD_GATEWAY,
        }
    }

    /// The `x-portcullis-error` code.
    pub fn code(&self) -> &'static str {
        match self {
            // interface.md: what the upstream's API cannot carry is a 400 invalid_request
            // naming the field and the API; an endpoint it lacks is a 404.
            TranslateError::Unsupported { .. } => "invalid_request",
            TranslateError::UnsupportedPath { .. } => "not_found",
            TranslateError::InvalidRequest { .. } => "invalid_request",
            TranslateError::InvalidUpstream { .. } => "upstream_error",
        }
    }

    /// A complete JSON error body in `client`'s shape (for callers without a rescue layer).
    pub fn to_body(&self, client: Format) -> Bytes {
        let kind = match self.status().as_u16() {
            404 if client.is_anthropic() => ErrorKind::NotFound,
            400 | 404 => ErrorKind::InvalidRequest,
            _ => ErrorKind::Server,
        };
        render(client, kind, &self.to_string(), Some(self.code())).1
    }
}

/// The class of an error, common to both APIs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorKind {
    /// 400 / 422.
    InvalidRequest,
    /// 401.
    Authentication,
    /// 403.
    Permission,
    /// 404.
    NotFound,
    /// 409.
    Conflict,
    /// 413.
    TooLarge,
    /// 429.
    RateLimit,
    /// Out of credit (Anthropic 402 `billing_error`, OpenAI 429 `insufficient_quota`).
    Billing,
    /// Overloaded (Anthropic 529, OpenAI 503).
    Overloaded,
    /// 504.
    Timeout,
    /// Other 5xx.
    Server,
}

/// An upstream error answer rewritten for the client.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MappedError {
    /// The status to answer with.
    pub status: StatusCode,
    /// The JSON body.
    pub body: Bytes,
    /// `x-should-retry: false` should be sent (a billing error: the OpenAI SDKs would
    /// retry a 429 otherwise).
    pub no_retry: bool,
}

/// What an upstream error says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UpstreamError {
    /// Its class.
    pub kind: ErrorKind,
    /// Its message.
    pub message: String,
    /// Its own type or code (`overloaded_error`, `context_length_exceeded`).
    pub code: Option<String>,
}

/// Read an upstream error answer of `status` and `body` (any shape).
pub fn parse_error(status: StatusCode, body: &[u8]) -> UpstreamError {
    let v: Option<Value> = serde_json::from_slice(body).ok();
    let err = v.as_ref().and_then(|v| v.get("error"));
    let message = err
        .and_then(|e| e.get("message").and_then(Value::as_str))
        .or_else(|| err.and_then(Value::as_str))
        .or_else(|| v.as_ref().and_then(|v| v.get("message")?.as_str()))
        .map(str::to_owned)
        .unwrap_or_else(|| {
            let text = String::from_utf8_lossy(body);
            let t: String = text.trim().chars().take(500).collect();
            if t.is_empty() {
                format!("upstream answered {status}")
            } else {
                t
            }
        });
    let ty = err
        .and_then(|e| e.get("type").and_then(Value::as_str))
        .or_else(|| v.as_ref().and_then(|v| v.get("type")?.as_str()))
        .filter(|t| *t != "error");
    let code = err.and_then(|e| e.get("code").and_then(Value::as_str));
    let kind = match (status.as_u16(), ty.unwrap_or(""), code.unwrap_or("")) {
        (_, "billing_error", _) | (_, "insufficient_quota", _) | (_, _, "insufficient_quota") => {
            ErrorKind::Billing
        }
        (_, "overloaded_error", _) => ErrorKind::Overloaded,
        (400 | 422, ..) => ErrorKind::InvalidRequest,
        (401, ..) => ErrorKind::Authentication,
        (402, ..) => ErrorKind::Billing,
        (403, ..) => ErrorKind::Permission,
        (404, ..) => ErrorKind::NotFound,
        (409, ..) => ErrorKind::Conflict,
        (413, ..) => ErrorKind::TooLarge,
        (429, ..) => ErrorKind::RateLimit,
        (503 | 529, ..) => ErrorKind::Overloaded,
        (408 | 504, ..) => ErrorKind::Timeout,
        (s, ..) if s < 500 => ErrorKind::InvalidRequest,
        _ => ErrorKind::Server,
    };
    UpstreamError {
        kind,
        message,
        code: code.or(ty).map(str::to_owned),
    }
}

/// Rewrite an upstream error answer for a client speaking `client`.
pub fn map_error(client: Format, status: StatusCode, body: &[u8]) -> MappedError {
    let e = parse_error(status, body);
    let (mut st, body) = render(client, e.kind, &e.message, e.code.as_deref());
    // Keep statuses the table does not name (422, 502) where the class allows.
    if matches!(e.kind, ErrorKind::InvalidRequest | ErrorKind::Server)
        && (status.is_client_error() || status.is_server_error())
    {
        st = status;
    }
    MappedError {
        status: st,
        body,
        no_retry: e.kind == ErrorKind::Billing && !client.is_anthropic(),
    }
}

/// Status and body of an error of `kind` in `client`'s shape.
pub(crate) fn render(
    client: Format,
    kind: ErrorKind,
    message: &str,
    code: Option<&str>,
) -> (StatusCode, Bytes) {
    let (status, body) = if client.is_anthropic() {
        let (status, ty) = anthropic_kind(kind);
        (
            status,
            json!({"type":"error","error":{"type":ty,"message":message}}),
        )
    } else {
        let (status, ty) = openai_kind(kind);
        let code = match kind {
            ErrorKind::Billing => Some("insufficient_quota"),
            _ => code,
        };
        (
            status,
            json!({"error":{"message":message,"type":ty,"param":null,"code":code}}),
        )
    };
    (
        StatusCode::from_u16(status).unwrap_or(StatusCode::BAD_GATEWAY),
        Bytes::from(body.to_string()),
    )
}

pub(crate) fn anthropic_kind(kind: ErrorKind) -> (u16, &'static str) {
    match kind {
        ErrorKind::InvalidRequest => (400, "invalid_request_error"),
        ErrorKind::Authentication => (401, "authentication_error"),
        ErrorKind::Billing => (402, "billing_error"),
        ErrorKind::Permission => (403, "permission_error"),
        ErrorKind::NotFound => (404, "not_found_error"),
        ErrorKind::Conflict => (409, "invalid_request_error"),
        ErrorKind::TooLarge => (413, "request_too_large"),
        ErrorKind::RateLimit => (429, "rate_limit_error"),
        ErrorKind::Overloaded => (529, "overloaded_error"),
        ErrorKind::Timeout => (504, "timeout_error"),
        ErrorKind::Server => (500, "api_error"),
    }
}

pub(crate) fn openai_kind(kind: ErrorKind) -> (u16, &'static str) {
    match kind {
        ErrorKind::InvalidRequest => (400, "invalid_request_error"),
        ErrorKind::Authentication => (401, "authentication_error"),
        ErrorKind::Billing => (429, "insufficient_quota"),
        ErrorKind::Permission => (403, "permission_error"),
        ErrorKind::NotFound => (404, "invalid_request_error"),
        ErrorKind::Conflict => (409, "invalid_request_error"),
        ErrorKind::TooLarge => (413, "invalid_request_error"),
        ErrorKind::RateLimit => (429, "rate_limit_error"),
        ErrorKind::Overloaded => (503, "server_error"),
        ErrorKind::Timeout => (504, "timeout"),
        ErrorKind::Server => (500, "server_error"),
    }
}

/// The gateway's edge renders a translation error like any layer's refusal.
impl portcullis_core::error::Refusal for TranslateError {
    fn status(&self) -> StatusCode {
        TranslateError::status(self)
    }
    fn code(&self) -> &'static str {
        TranslateError::code(self)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn v(b: &Bytes) -> Value {
        serde_json::from_slice(b).unwrap()
    }

    #[test]
    fn anthropic_overloaded_becomes_openai_503() {
        let body =
            br#"{"type":"error","error":{"type":"overloaded_error","message":"Overloaded"}}"#;
        let m = map_error(
            Format::ChatCompletions,
            StatusCode::from_u16(529).unwrap(),
            body,
        );
        assert_eq!(m.status, 503);
        let j = v(&m.body);
        assert_eq!(j["error"]["message"], "Overloaded");
        assert_eq!(j["error"]["type"], "server_error");
        assert_eq!(j["error"]["code"], "overloaded_error");
    }

    #[test]
    fn anthropic_billing_is_not_retried_by_openai_clients() {
        let body = br#"{"type":"error","error":{"type":"billing_error","message":"credit balance too low"}}"#;
        let m = map_error(Format::Responses, StatusCode::PAYMENT_REQUIRED, body);
        assert_eq!(m.status, 429);
        assert!(m.no_retry);
        assert_eq!(v(&m.body)["error"]["code"], "insufficient_quota");
    }

    #[test]
    fn openai_errors_to_anthropic() {
        let cases: &[(u16, &[u8], u16, &str)] = &[
            (400, br#"{"error":{"message":"bad","type":"invalid_request_error","code":null}}"#, 400, "invalid_request_error"),
            (401, br#"{"error":{"message":"key","type":"invalid_request_error","code":"invalid_api_key"}}"#, 401, "authentication_error"),
            (429, br#"{"error":{"message":"quota","type":"insufficient_quota","code":"insufficient_quota"}}"#, 402, "billing_error"),
            (429, br#"{"error":{"message":"slow down","type":"requests","code":"rate_limit_exceeded"}}"#, 429, "rate_limit_error"),
            (503, br#"{"object":"error","message":"busy","type":"ServiceUnavailable","code":503}"#, 529, "overloaded_error"),
            (404, br#"{"error":"model 'x' not found"}"#, 404, "not_found_error"),
            (502, b"<html>bad gateway</html>", 502, "api_error"),
            (422, br#"{"detail":"x"}"#, 422, "invalid_request_error"),
        ];
        for (status, body, want_status, want_type) in cases {
            let m = map_error(
                Format::Messages,
                StatusCode::from_u16(*status).unwrap(),
                body,
            );
            assert_eq!(m.status, *want_status, "{status}");
            let j = v(&m.body);
            assert_eq!(j["type"], "error");
            assert_eq!(j["error"]["type"], *want_type, "{status}");
        }
        let m = map_error(
            Format::Messages,
            StatusCode::NOT_FOUND,
            br#"{"error":"model 'x' not found"}"#,
        );
        assert_eq!(v(&m.body)["error"]["message"], "model 'x' not found");
    }

    #[test]
    fn translate_error_bodies() {
        let e = TranslateError::unsupported("n", Format::Messages, "only one choice");
        assert_eq!(e.status(), 400);
        let j = v(&e.to_body(Format::ChatCompletions));
        assert_eq!(j["error"]["code"], "invalid_request");
        assert!(j["error"]["message"]
            .as_str()
            .unwrap()
            .contains("anthropic messages"));
    }
}
