//! The client span of one upstream attempt (HTTP client semantic conventions): opened by
//! the upstream client for each request it sends, closed when
//! the upstream's response body ends, so its duration is what the attempt cost.

use std::{
    pin::Pin,
    sync::Arc,
    task::{Context, Poll},
    time::Instant,
};

use axum::body::Body;
use bytes::Bytes;
use http::{Request, Response};
use http_body::{Body as HttpBody, Frame, SizeHint};
use opentelemetry::{trace::Status, KeyValue};
use pin_project_lite::pin_project;
use tower::BoxError;
use tracing_opentelemetry::OpenTelemetrySpanExt;

/// How an attempt failed before a response arrived: the kind names the `error.type` of the
/// span and the `outcome` label of the attempt histogram.
#[derive(Debug)]
pub enum AttemptError {
    /// No response headers within the upstream's timeout.
    Timeout(BoxError),
    /// Connect, TLS or transport failure.
    Connect(BoxError),
}

impl AttemptError {
    fn kind(&self) -> &'static str {
        match self {
            AttemptError::Timeout(_) => "timeout",
            AttemptError::Connect(_) => "connect_error",
        }
    }

    fn into_inner(self) -> BoxError {
        match self {
            AttemptError::Timeout(e) | AttemptError::Connect(e) => e,
        }
    }
}

/// One upstream attempt being observed.
#[derive(Debug)]
pub struct Attempt {
    span: tracing::Span,
    upstream: Arc<str>,
    start: Instant,
}

impl Attempt {
    /// Open the client span for `req` (a child of the current span: the retry layer's
    /// `upstream_attempt`, else the request span) and put its `traceparent` on `req`.
    pub fn start(upstream: &Arc<str>, req: &mut Request<Body>) -> Self {
        let method = req.method().clone();
        let uri = req.uri();
        let path = uri.path();
        let span = tracing::info_span!(
            "upstream_request",
            otel.name = %format_args!("{method} {path}"),
            otel.kind = "client",
            upstream = %upstream,
        );
        if !span.is_disabled() {
            // No query string: some APIs take keys there (`?key=`), and it is never needed to
            // tell attempts apart.
            let scheme = uri.scheme_str().unwrap_or("http");
            let host = uri.host().unwrap_or("");
            let port = uri
                .port_u16()
                .unwrap_or(if scheme == "https" { 443 } else { 80 });
            let attrs = [
                KeyValue::new("http.request.method", method.to_string()),
                KeyValue::new("server.address", host.to_string()),
                KeyValue::new("server.port", i64::from(port)),
                KeyValue::new(
                    "url.full",
                    match uri.port_u16() {
                        Some(p) => format!("{scheme}://{host}:{p}{path}"),
                        None => format!("{scheme}://{host}{path}"),
                    },
                ),
                KeyValue::new("portcullis.upstream", upstream.to_string()),
            ];
            for kv in attrs {
                span.set_attribute(kv.key, kv.value);
            }
        }
        let fallback = req
            .extensions()
            .get::<super::propagation::TraceContext>()
            .copied();
        super::propagation::inject(&span, req.headers_mut(), fallback.as_ref());
        Self {
            span,
            upstream: upstream.clone(),
            start: Instant::now(),
        }
    }

    /// The span, for instrumenting the attempt's future.
    pub fn span(&self) -> &tracing::Span {
        &self.span
    }

    /// Record the outcome; a response's body keeps the span open until it ends.
    pub fn finish(
        self,
        result: Result<Response<Body>, AttemptError>,
    ) -> Result<Response<Body>, BoxError> {
        let elapsed = self.start.elapsed().as_secs_f64();
        let span = self.span;
        match result {
            Ok(resp) => {
                let status = resp.status();
                if !span.is_disabled() {
                    span.set_attribute("http.response.status_code", i64::from(status.as_u16()));
                    if status.is_client_error() || status.is_server_error() {
                        let code = status.as_u16().to_string();
                        span.set_attribute("error.type", code.clone());
                        span.set_status(Status::error(code));
                    }
                }
                metrics::histogram!(
                    "portcullis_upstream_attempt_duration_seconds",
                    "upstream" => self.upstream.to_string(),
                    "outcome" => status.as_u16().to_string()
                )
                .record(elapsed);
                Ok(resp.map(|inner| {
                    Body::new(SpanBody {
                        inner,
                        span: Some(span),
                    })
                }))
            }
            Err(e) => {
                let kind = e.kind();
                let e = e.into_inner();
                if !span.is_disabled() {
                    span.set_attribute("error.type", kind);
                    span.set_status(Status::error(kind));
                }
                span.in_scope(|| tracing::info!(error = %e, "upstream attempt failed"));
                metrics::histogram!(
                    "portcullis_upstream_attempt_duration_seconds",
                    "upstream" => self.upstream.to_string(),
                    "outcome" => kind
                )
                .record(elapsed);
                Err(e)
            }
        }
    }
}

pin_project! {
    /// A response body that holds a span open until the body ends or is dropped.
    #[derive(Debug)]
    pub struct SpanBody {
        #[pin]
        inner: Body,
        span: Option<tracing::Span>,
    }
}

impl HttpBody for SpanBody {
    type Data = Bytes;
    type Error = axum::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        let this = self.project();
        let polled = this.inner.poll_frame(cx);
        match &polled {
            Poll::Ready(Some(Err(e))) => {
                if let Some(span) = this.span.take() {
                    span.set_attribute("error.type", "body_error");
                    span.set_status(Status::error(e.to_string()));
                }
            }
            Poll::Ready(None) => {
                this.span.take();
            }
            _ => {}
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}
