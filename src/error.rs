//! One response format at the edge: every error a layer returns becomes an HTTP response in
//! the caller's API shape (OpenAI or Anthropic) with `x-portcullis-error: CODE`.
//!
//! Layers return typed errors boxed as `BoxError`; [`classify`] finds the known types anywhere
//! in the source chain, and [`Rescue`] makes the stack infallible ("always try to return a
//! response").

use std::{
    convert::Infallible,
    future::Future,
    pin::Pin,
    task::{Context, Poll},
};

use axum::body::Body;
use futures_util::FutureExt as _;
use http::{header, HeaderMap, HeaderValue, Request, Response, StatusCode};
use portcullis_core::{
    body::CollectError,
    error::{find_in_chain, Refused},
    headers::{int_value, X_PORTCULLIS_ATTEMPTS, X_PORTCULLIS_ERROR, X_PORTCULLIS_UPSTREAM},
    ErrorCode,
};
use tower::{BoxError, Layer, Service};

use crate::upstream::{
    passthrough::NoUpstream,
    router::{MissingModel, RoutedError},
    ModelNotFound, UpstreamConnectError, UpstreamHtml, UpstreamTimeout,
};

/// Which API's error shape a caller expects.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ApiShape {
    /// `{"error":{"message","type","code"}}`
    OpenAi,
    /// `{"type":"error","error":{"type","message"}}`
    Anthropic,
}

impl ApiShape {
    /// `/v1/messages` speaks Anthropic; everything else OpenAI.
    pub fn from_path(path: &str) -> Self {
        if path.ends_with("/v1/messages") || path.starts_with("/v1/messages") {
            ApiShape::Anthropic
        } else {
            ApiShape::OpenAi
        }
    }
}

/// The request body was not fully received within `server.body_read_timeout`: `408`, and
/// the connection is closed.
#[derive(Debug, Clone, thiserror::Error)]
#[error("the request body was not received within {limit:?} (server.body_read_timeout)")]
pub struct BodyReadTimeout {
    /// The timeout that passed.
    pub limit: std::time::Duration,
}

/// The caller sent no valid gateway API key.
#[derive(Debug, Clone, thiserror::Error)]
#[error("{0}")]
pub struct Unauthorized(pub &'static str);

/// A gateway error ready to render.
#[derive(Debug, Clone)]
pub struct GatewayError {
    /// HTTP status.
    pub status: StatusCode,
    /// `x-portcullis-error` code.
    pub code: &'static str,
    /// What the caller reads: says what was wrong and, where it helps, what to do.
    pub message: String,
    /// Extra response headers (Retry-After, rate-limit headers, attempts, upstream).
    pub headers: HeaderMap,
    /// Typed outcomes for the access log and metrics of the error response: where the
    /// request went before it failed ([`RouteInfo`]), a layer's decision (rate limit,
    /// breaker state).
    pub extensions: http::Extensions,
}

impl GatewayError {
    /// A new error.
    pub fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> Self {
        Self {
            status,
            code,
            message: message.into(),
            headers: HeaderMap::new(),
            extensions: http::Extensions::new(),
        }
    }

    /// Render in `shape`.
    pub fn into_response(self, shape: ApiShape) -> Response<Body> {
        let (kind_openai, kind_anthropic) = error_types(self.status);
        let body = match shape {
            ApiShape::OpenAi => serde_json::json!({
                "error": { "message": self.message, "type": kind_openai, "code": self.code }
            }),
            ApiShape::Anthropic => serde_json::json!({
                "type": "error",
                "error": { "type": kind_anthropic, "message": self.message }
            }),
        };
        let mut resp = Response::new(Body::from(body.to_string()));
        *resp.status_mut() = self.status;
        let h = resp.headers_mut();
        h.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        );
        h.insert(X_PORTCULLIS_ERROR, HeaderValue::from_static(self.code));
        h.extend(self.headers);
        resp.extensions_mut().extend(self.extensions);
        resp.extensions_mut().insert(ErrorCode(self.code));
        resp
    }
}

/// The `type` field for each shape: what the official SDKs and clients expect per status.
fn error_types(status: StatusCode) -> (&'static str, &'static str) {
    match status.as_u16() {
        400 => ("invalid_request_error", "invalid_request_error"),
        401 => ("authentication_error", "authentication_error"),
        403 => ("permission_error", "permission_error"),
        404 => ("invalid_request_error", "not_found_error"),
        405 => ("invalid_request_error", "invalid_request_error"),
        409 => ("invalid_request_error", "invalid_request_error"),
        408 => ("invalid_request_error", "timeout_error"),
        413 => ("invalid_request_error", "request_too_large"),
        429 => ("rate_limit_error", "rate_limit_error"),
        503 => ("service_unavailable", "overloaded_error"),
        504 => ("timeout", "api_error"),
        _ => ("api_error", "api_error"),
    }
}

/// Map any error from the stack to the gateway error the caller sees.
pub fn classify(err: &(dyn std::error::Error + 'static)) -> GatewayError {
    let mut g = classify_inner(err);
    if let Some(r) = find_in_chain::<RoutedError>(err) {
        g.headers
            .insert(X_PORTCULLIS_ATTEMPTS, int_value(r.route.attempts));
        if let Ok(v) = HeaderValue::from_str(&r.route.upstream) {
            g.headers.insert(X_PORTCULLIS_UPSTREAM, v);
        }
        g.extensions.insert(r.route.clone());
    }
    g
}

fn classify_inner(err: &(dyn std::error::Error + 'static)) -> GatewayError {
    use StatusCode as S;
    if let Some(e) = find_in_chain::<Unauthorized>(err) {
        return GatewayError::new(S::UNAUTHORIZED, "unauthorized", e.0);
    }
    // Before refusals: a layer reading the body reports the timeout as its own read error.
    if let Some(e) = find_in_chain::<BodyReadTimeout>(err) {
        let mut g = GatewayError::new(S::REQUEST_TIMEOUT, "request_timeout", e.to_string());
        g.headers
            .insert(header::CONNECTION, HeaderValue::from_static("close"));
        return g;
    }
    // A layer's refusal: it says its own status, code, headers and outcomes.
    if let Some(r) = find_in_chain::<Refused>(err) {
        let r = r.refusal();
        let mut g = GatewayError::new(r.status(), r.code(), r.to_string());
        g.headers = r.headers();
        r.outcomes(&mut g.extensions);
        return g;
    }
    if let Some(e) = find_in_chain::<CollectError>(err) {
        return match e {
            CollectError::TooLarge { limit } => GatewayError::new(
                S::PAYLOAD_TOO_LARGE,
                "body_too_large",
                format!("request body is larger than server.max_body_bytes ({limit} bytes)"),
            ),
            CollectError::Read(e) => GatewayError::new(
                S::BAD_REQUEST,
                "invalid_request",
                format!("could not read the request body: {e}"),
            ),
        };
    }
    if let Some(e) = find_in_chain::<MissingModel>(err) {
        return GatewayError::new(S::BAD_REQUEST, "invalid_request", e.0.clone());
    }
    if let Some(e) = find_in_chain::<NoUpstream>(err) {
        return GatewayError::new(S::NOT_FOUND, "not_found", e.to_string());
    }
    if let Some(e) = find_in_chain::<ModelNotFound>(err) {
        return GatewayError::new(S::NOT_FOUND, "model_not_found", e.to_string());
    }
    if let Some(e) = find_in_chain::<UpstreamTimeout>(err) {
        return GatewayError::new(S::GATEWAY_TIMEOUT, "upstream_timeout", e.to_string());
    }
    if let Some(e) = find_in_chain::<UpstreamHtml>(err) {
        return GatewayError::new(S::BAD_GATEWAY, "upstream_error", e.to_string());
    }
    if let Some(e) = find_in_chain::<UpstreamConnectError>(err) {
        return GatewayError::new(S::BAD_GATEWAY, "upstream_error", e.to_string());
    }
    // Unclassified: the detail goes to the log (the rescue layer logs every 5xx with its
    // error), the caller gets a generic message.
    GatewayError::new(
        S::BAD_GATEWAY,
        "upstream_error",
        "the request failed on its way to or from the upstream; the gateway's log has the details",
    )
}

// === impl Rescue ===

/// Makes a fallible stack infallible by rendering its errors in the caller's API shape.
#[derive(Debug, Clone, Copy, Default)]
pub struct RescueLayer;

impl<S> Layer<S> for RescueLayer {
    type Service = Rescue<S>;
    fn layer(&self, inner: S) -> Self::Service {
        Rescue {
            inner,
            not_ready: None,
        }
    }
}

/// See [`RescueLayer`].
#[derive(Debug, Clone)]
pub struct Rescue<S> {
    inner: S,
    not_ready: Option<GatewayError>,
}

impl<S> Service<Request<Body>> for Rescue<S>
where
    S: Service<Request<Body>, Response = Response<Body>>,
    S::Error: Into<BoxError>,
    S::Future: Send + 'static,
{
    type Response = Response<Body>;
    type Error = Infallible;
    type Future = Pin<Box<dyn Future<Output = Result<Response<Body>, Infallible>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        match self.inner.poll_ready(cx) {
            Poll::Pending => Poll::Pending,
            Poll::Ready(Ok(())) => Poll::Ready(Ok(())),
            Poll::Ready(Err(e)) => {
                // The inner service cannot take this request; `call` answers it from here.
                let e: BoxError = e.into();
                tracing::warn!(error = %e, "service not ready");
                self.not_ready = Some(classify(&*e));
                Poll::Ready(Ok(()))
            }
        }
    }

    fn call(&mut self, req: Request<Body>) -> Self::Future {
        let shape = ApiShape::from_path(req.uri().path());
        if let Some(g) = self.not_ready.take() {
            return Box::pin(async move { Ok(g.into_response(shape)) });
        }
        // A map, not an async block: a block would keep the inner future twice in its state
        // (captured, then awaited), and every request's boxed future is copied whole.
        Box::pin(self.inner.call(req).map(move |result| {
            Ok(match result {
                Ok(r) => r,
                Err(e) => {
                    let e: BoxError = e.into();
                    let g = classify(&*e);
                    if g.status.is_server_error() {
                        tracing::warn!(code = g.code, error = %e, "request failed");
                    } else {
                        tracing::debug!(code = g.code, error = %e, "request rejected");
                    }
                    g.into_response(shape)
                }
            })
        }))
    }
}
