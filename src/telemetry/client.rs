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

/// One upstream's `portcullis_upstream_attempt_duration_seconds` handles by outcome (a status
/// or an error kind: at most ~900 of them), registered once instead of on every attempt.
#[derive(Debug, Clone)]
pub struct AttemptMetrics {
    upstream: Arc<str>,
    by_outcome: Arc<std::sync::RwLock<foldhash::HashMap<Outcome, metrics::Histogram>>>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
enum Outcome {
    Status(u16),
    Error(&'static str),
}

impl AttemptMetrics {
    /// The handles of `upstream`'s attempts.
    pub fn new(upstream: Arc<str>) -> Self {
        Self {
            upstream,
            by_outcome: Arc::default(),
        }
    }

    fn record(&self, outcome: Outcome, seconds: f64) {
        let cached = self
            .by_outcome
            .read()
            .ok()
            .and_then(|m| m.get(&outcome).cloned());
        let histogram = cached.unwrap_or_else(|| {
            let label = match outcome {
                Outcome::Status(s) => s.to_string(),
                Outcome::Error(kind) => kind.to_string(),
            };
            let h = metrics::histogram!(
                "portcullis_upstream_attempt_duration_seconds",
                "upstream" => self.upstream.to_string(),
                "outcome" => label
            );
            if let Ok(mut m) = self.by_outcome.write() {
                m.insert(outcome, h.clone());
            }
            h
        });
        histogram.record(seconds);
    }
}

/// One upstream attempt being observed.
#[derive(Debug)]
pub struct Attempt {
    span: tracing::Span,
    metrics: AttemptMetrics,
    start: Instant,
}

impl Attempt {
    /// Open the client span for `req` (a child of the current span: the retry layer's
    /// `upstream_attempt`, else the request span) and put its `traceparent` on `req`.
    pub fn start(metrics: &AttemptMetrics, req: &mut Request<Body>) -> Self {
        let upstream = &metrics.upstream;
        let method = req.method().clone();
        let uri = req.uri();
        let path = uri.path();
        let span = tracing::info_span!(
            "upstream_request",
            otel.name = %format_args!("{method} {path}"),
            otel.kind = "client",
            upstream = %upstream,
        );
        if super::exported(&span) {
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
            super::set_attributes(&span, attrs, None);
        }
        let fallback = req
            .extensions()
            .get::<super::access_log::RequestSlot>()
            .and_then(|s| s.trace())
            .copied();
        super::propagation::inject(&span, req.headers_mut(), fallback.as_ref());
        Self {
            span,
            metrics: metrics.clone(),
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
                if super::exported(&span) {
                    let code =
                        KeyValue::new("http.response.status_code", i64::from(status.as_u16()));
                    if status.is_client_error() || status.is_server_error() {
                        let kind = status.as_u16().to_string();
                        let error = KeyValue::new("error.type", kind.clone());
                        super::set_attributes(&span, [code, error], Some(Status::error(kind)));
                    } else {
                        super::set_attributes(&span, [code], None);
                    }
                }
                self.metrics
                    .record(Outcome::Status(status.as_u16()), elapsed);
                // Nothing to hold open when the span is disabled (no exporter, no pretty
                // log): the body goes on unwrapped.
                if span.is_disabled() {
                    return Ok(resp);
                }
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
                if super::exported(&span) {
                    let error = KeyValue::new("error.type", kind);
                    super::set_attributes(&span, [error], Some(Status::error(kind)));
                }
                span.in_scope(|| tracing::info!(error = %e, "upstream attempt failed"));
                self.metrics.record(Outcome::Error(kind), elapsed);
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
                    let error = KeyValue::new("error.type", "body_error");
                    super::set_attributes(&span, [error], Some(Status::error(e.to_string())));
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
