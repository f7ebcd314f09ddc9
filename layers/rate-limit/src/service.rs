//! [`RateLimit`]: the service that charges each request to its caller's bucket.

use std::{
    sync::Arc,
    task::{Context, Poll},
};

use bytes::Bytes;
use http::{Request, Response};
use portcullis_core::RequestMeta;
use tokio::time::Instant;
use tower::{BoxError, Service};

use crate::{
    error::insert_limit_headers, future::ResponseFuture, layer::Shared, Decision, Limiter, RateKey,
    RateLimited,
};

/// Charges each request to its caller's bucket; answers [`RateLimited`] (boxed) when the
/// bucket is empty, or waits for a slot when queueing is on. See [`RateLimitLayer`].
///
/// Allowed responses get `x-ratelimit-limit`, `x-ratelimit-remaining` and
/// `x-ratelimit-reset` headers. Clones share the buckets.
///
/// [`RateLimitLayer`]: crate::RateLimitLayer
#[derive(Debug, Clone)]
pub struct RateLimit<S> {
    inner: S,
    shared: Arc<Shared>,
}

impl<S> RateLimit<S> {
    /// Wrap `inner` with the limits of `layer` (same as `layer.layer(inner)`).
    pub fn new(inner: S, layer: &crate::RateLimitLayer) -> Self {
        Self::from_shared(inner, layer.shared.clone())
    }

    pub(crate) fn from_shared(inner: S, shared: Arc<Shared>) -> Self {
        Self { inner, shared }
    }

    /// The inner service.
    pub fn get_ref(&self) -> &S {
        &self.inner
    }

    /// The inner service, mutably.
    pub fn get_mut(&mut self) -> &mut S {
        &mut self.inner
    }

    /// Unwrap the inner service.
    pub fn into_inner(self) -> S {
        self.inner
    }
}

impl<S, B, RB> Service<Request<B>> for RateLimit<S>
where
    S: Service<Request<B>, Response = Response<RB>> + Clone + Send + 'static,
    S::Future: Send + 'static,
    S::Error: Into<BoxError>,
    B: http_body::Body<Data = Bytes> + From<Bytes> + Send + 'static,
    B::Error: Into<BoxError>,
    RB: Send + 'static,
{
    type Response = Response<RB>;
    type Error = BoxError;
    type Future = ResponseFuture<S::Future, RB>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        // Unlike tower's `RateLimit`, capacity cannot be reserved here: which bucket to
        // charge depends on the request (its API key, user id, IP, model), which poll_ready
        // has not seen. So readiness is the inner service's, and the bucket is charged in
        // `call`.
        self.inner.poll_ready(cx).map_err(Into::into)
    }

    fn call(&mut self, req: Request<B>) -> Self::Future {
        let shared = &self.shared;
        let key = RateKey::from_request(shared.key, &req);

        // The common case (in-memory buckets, no per-model limits) decides synchronously and
        // calls the inner service without boxing or an extra task state.
        let mut first = None;
        if let (Limiter::Memory(memory), true) = (&shared.limiter, shared.models.is_empty()) {
            let d = memory.check(&key, 1);
            if d.allowed {
                tracing::trace!(?key, remaining = d.remaining, "rate limit: allowed");
                return ResponseFuture::called(self.inner.call(req), d);
            }
            if shared.queue_timeout.is_zero() {
                return ResponseFuture::limited(refuse(&key, &d));
            }
            first = Some(d);
        }

        // Slow path: the ready service goes into the future (it may wait before calling).
        let clone = self.inner.clone();
        let inner = std::mem::replace(&mut self.inner, clone);
        ResponseFuture::boxed(Box::pin(admit_then_call(
            shared.clone(),
            inner,
            req,
            key,
            first,
        )))
    }
}

async fn admit_then_call<S, B, RB>(
    shared: Arc<Shared>,
    mut inner: S,
    req: Request<B>,
    key: RateKey,
    first: Option<Decision>,
) -> Result<Response<RB>, BoxError>
where
    S: Service<Request<B>, Response = Response<RB>>,
    S::Error: Into<BoxError>,
    B: http_body::Body<Data = Bytes> + From<Bytes> + Send + 'static,
    B::Error: Into<BoxError>,
{
    // One deadline for every limit the request must pass: queue_timeout bounds the total wait.
    let deadline = Instant::now() + shared.queue_timeout;
    let mut report = admit(&shared.limiter, &key, deadline, first).await?;

    let mut req = req;
    if !shared.models.is_empty() {
        let (with_body, model) = model_of(req, shared.max_body_bytes).await?;
        req = with_body;
        if let Some(limit) = model.as_deref().and_then(|m| shared.model_limit(m)) {
            let model_key = key.for_model(&limit.pattern);
            // A request refused here has already been charged to the caller's main bucket:
            // it was a request the caller made, and a refund cannot be made atomic with
            // governor. The model check comes second because it is the rarer, tighter one.
            let d = admit(&limit.limiter, &model_key, deadline, None).await?;
            tracing::trace!(?key, model = %limit.pattern, remaining = d.remaining, "model rate limit: allowed");
            if d.remaining < report.remaining {
                report = d;
            }
        }
    }

    let mut response = inner.call(req).await.map_err(Into::into)?;
    insert_limit_headers(
        response.headers_mut(),
        report.limit,
        report.remaining,
        report.reset_after,
    );
    Ok(response)
}

/// Let the request through `limiter`, waiting for a slot while the wait ends before
/// `deadline`; a request whose wait would end later is refused at once, not after waiting.
async fn admit(
    limiter: &Limiter,
    key: &RateKey,
    deadline: Instant,
    first: Option<Decision>,
) -> Result<Decision, BoxError> {
    let mut d = match first {
        Some(d) => d,
        None => limiter.check(key, 1).await,
    };
    loop {
        if d.allowed {
            return Ok(d);
        }
        let wake = Instant::now() + d.retry_after;
        if wake > deadline {
            return Err(refuse(key, &d).into());
        }
        tracing::debug!(
            ?key,
            wait_ms = d.retry_after.as_millis() as u64,
            "rate limit: queued"
        );
        tokio::time::sleep_until(wake).await;
        // Not a reservation: another request may take the slot first, then this one waits
        // again if the deadline still allows.
        d = limiter.check(key, 1).await;
    }
}

fn refuse(key: &RateKey, d: &Decision) -> RateLimited {
    tracing::debug!(
        ?key,
        retry_after_ms = d.retry_after.as_millis() as u64,
        "rate limit: refused"
    );
    RateLimited::from_decision(d)
}

/// The requested model: from the `RequestMeta` extension, or else from the JSON body (which
/// is then put back, and a `RequestMeta` inserted so later layers need not parse it again).
async fn model_of<B>(
    req: Request<B>,
    max_body_bytes: usize,
) -> Result<(Request<B>, Option<Arc<str>>), BoxError>
where
    B: http_body::Body<Data = Bytes> + From<Bytes> + Send + 'static,
    B::Error: Into<BoxError>,
{
    if let Some(meta) = req.extensions().get::<RequestMeta>() {
        let model = meta.model.clone();
        return Ok((req, model));
    }
    let (mut parts, body) = req.into_parts();
    let bytes = portcullis_core::body::collect_limited(body, max_body_bytes).await?;
    let meta = parse_meta(&bytes);
    let model = meta.as_ref().and_then(|m| m.model.clone());
    if let Some(meta) = meta {
        parts.extensions.insert(meta);
    }
    Ok((Request::from_parts(parts, B::from(bytes)), model))
}

fn parse_meta(body: &[u8]) -> Option<RequestMeta> {
    #[derive(serde::Deserialize)]
    struct Peek {
        model: Option<String>,
        stream: Option<bool>,
    }
    let peek: Peek = serde_json::from_slice(body).ok()?;
    Some(RequestMeta {
        model: peek.model.map(Into::into),
        stream: peek.stream.unwrap_or(false),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_model_and_stream() {
        let m = parse_meta(br#"{"model":"gpt-4o","stream":true,"messages":[]}"#).unwrap();
        assert_eq!(m.model.as_deref(), Some("gpt-4o"));
        assert!(m.stream);
        let m = parse_meta(br#"{"messages":[]}"#).unwrap();
        assert_eq!(m.model, None);
        assert!(parse_meta(b"not json").is_none());
        assert!(parse_meta(br#"{"model":5}"#).is_none());
    }
}
