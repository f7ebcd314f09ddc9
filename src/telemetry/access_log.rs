//! One log event and one set of metrics per proxied request, with what every layer decided.

use std::{
    future::Future,
    pin::Pin,
    task::{Context, Poll},
    time::Instant,
};

use axum::body::Body;
use http::{Request, Response};
use portcullis_core::headers::{X_PORTCULLIS_CACHE, X_REQUEST_ID};
use tower::{Layer, Service};
use tracing::Instrument;

use crate::{error::ErrorCode, upstream::RouteInfo};

/// Wraps the proxy stack: opens the request span and, when the response head is ready,
/// logs `method path model upstream status latency_ms request_id attempts cache user_id error`
/// and counts the request in `portcullis_requests_total` / `portcullis_request_duration_seconds`.
#[derive(Debug, Clone, Copy, Default)]
pub struct AccessLogLayer;

impl<S> Layer<S> for AccessLogLayer {
    type Service = AccessLog<S>;
    fn layer(&self, inner: S) -> Self::Service {
        AccessLog { inner }
    }
}

/// See [`AccessLogLayer`].
#[derive(Debug, Clone)]
pub struct AccessLog<S> {
    inner: S,
}

impl<S> Service<Request<Body>> for AccessLog<S>
where
    S: Service<Request<Body>, Response = Response<Body>>,
    S::Future: Send + 'static,
    S::Error: Send + 'static,
{
    type Response = Response<Body>;
    type Error = S::Error;
    type Future = Pin<Box<dyn Future<Output = Result<Response<Body>, S::Error>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: Request<Body>) -> Self::Future {
        let start = Instant::now();
        let method = req.method().clone();
        let path = req.uri().path().to_string();
        let request_id = req
            .headers()
            .get(X_REQUEST_ID)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
            .to_string();
        let span = tracing::info_span!(
            "request",
            http.request.method = %method,
            url.path = %path,
            request_id = %request_id,
        );
        let fut = self.inner.call(req).instrument(span.clone());
        Box::pin(async move {
            let result = fut.await;
            if let Ok(resp) = &result {
                let _enter = span.enter();
                let status = resp.status().as_u16();
                let latency = start.elapsed();
                let route = resp.extensions().get::<RouteInfo>();
                let model = route.map(|r| &*r.model).unwrap_or("");
                let upstream = route.map(|r| &*r.upstream).unwrap_or("");
                let attempts = route.map(|r| r.attempts).unwrap_or(0);
                let user_id = route.and_then(|r| r.user_id.as_deref()).unwrap_or("");
                let cache = resp
                    .headers()
                    .get(X_PORTCULLIS_CACHE)
                    .and_then(|v| v.to_str().ok())
                    .unwrap_or("");
                let error = resp
                    .extensions()
                    .get::<ErrorCode>()
                    .map(|e| e.0)
                    .unwrap_or("");
                tracing::info!(
                    target: "portcullis::access",
                    method = %method,
                    path = %path,
                    model,
                    upstream,
                    status,
                    latency_ms = latency.as_secs_f64() * 1000.0,
                    request_id = %request_id,
                    attempts,
                    cache,
                    user_id,
                    error,
                    "request"
                );
                let labels = [
                    ("model", model.to_string()),
                    ("upstream", upstream.to_string()),
                    ("status", status.to_string()),
                ];
                metrics::counter!("portcullis_requests_total", &labels).increment(1);
                metrics::histogram!(
                    "portcullis_request_duration_seconds",
                    &[
                        ("model", model.to_string()),
                        ("upstream", upstream.to_string())
                    ]
                )
                .record(latency.as_secs_f64());
                if attempts > 1 {
                    metrics::counter!("portcullis_upstream_retries_total", "upstream" => upstream.to_string())
                        .increment(u64::from(attempts - 1));
                }
                if attempts > 0 {
                    metrics::counter!("portcullis_upstream_attempts_total", "upstream" => upstream.to_string())
                        .increment(u64::from(attempts));
                }
                if !cache.is_empty() {
                    metrics::counter!("portcullis_cache_total", "outcome" => cache.to_string())
                        .increment(1);
                }
                if error == "rate_limited" {
                    metrics::counter!("portcullis_rate_limited_total").increment(1);
                }
            }
            result
        })
    }
}
