//! [`RateLimit`]: the service that charges each request to its caller's bucket.

use std::{
    sync::Arc,
    task::{Context, Poll},
};

use bytes::Bytes;
use http::{Request, Response};
use portcullis_core::{error::Refused, RateLimitOutcome};
use tokio::time::Instant;
use tower::{BoxError, Service, ServiceExt};

use crate::{
    error::insert_limit_headers, future::ResponseFuture, layer::Shared, Decision, Limiter, RateKey,
    RateLimited,
};

/// Charges each request to its caller's bucket; answers [`RateLimited`] (boxed) when the
/// bucket is empty, or waits for a slot when queueing is on. See [`RateLimitLayer`].
///
/// Allowed responses get `x-ratelimit-limit`, `x-ratelimit-remaining` and
/// `x-ratelimit-reset` headers and a [`RateLimitOutcome`] extension (`Allowed`, or
/// `Queued(waited)`). Clones share the buckets.
///
/// # Readiness
///
/// `poll_ready` is the inner service's, so backpressure reaches the caller. A request that
/// is let through at once is sent on the service `poll_ready` readied. A request that may
/// wait (queueing, a per-model limit that reads the body, the Redis backend) or is refused
/// drops that service in `call`, giving back whatever its readiness reserved (a concurrency
/// permit, a buffer slot), and its future readies a clone only once it is admitted: a
/// request waiting for its slot never holds capacity another request could use.
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

    portcullis_core::define_inner_service_accessors!();
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
        // Unlike tower's `RateLimit`, bucket capacity cannot be reserved here: which bucket
        // to charge depends on the request (its API key, user id, IP, model), which
        // poll_ready has not seen. So readiness is the inner service's, and the bucket is
        // charged in `call`, which also gives the readiness back if the request may wait.
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
                release_readiness(&mut self.inner);
                return ResponseFuture::limited(refuse(&key, &d));
            }
            first = Some(d);
        }

        // Slow path: the request may wait. The readied service must not wait with it (it
        // would hold its reservation all that time): drop it, and let the future ready a
        // clone once the request is admitted.
        let inner = release_readiness(&mut self.inner);
        ResponseFuture::boxed(Box::pin(admit_then_call(
            shared.clone(),
            inner,
            req,
            key,
            first,
        )))
    }
}

/// Drop the service `poll_ready` readied, giving back whatever its readiness reserved, and
/// leave an unready clone in its place; returns another unready clone for a future to ready
/// (with `ServiceExt::ready`/`oneshot`) when it sends.
fn release_readiness<S: Clone>(inner: &mut S) -> S {
    let unready = inner.clone();
    drop(std::mem::replace(inner, unready));
    inner.clone()
}

async fn admit_then_call<S, B, RB>(
    shared: Arc<Shared>,
    inner: S,
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
    let start = Instant::now();
    let deadline = start + shared.queue_timeout;
    let mut report = admit(&shared.limiter, &key, deadline, first).await?;

    let mut req = req;
    if !shared.models.is_empty() {
        let (with_body, meta) = portcullis_core::meta::peek(req, shared.max_body_bytes).await?;
        req = with_body;
        let model = meta.and_then(|m| m.model);
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

    let waited = start.elapsed();
    // Readied only now, after every wait: see "Readiness" on `RateLimit`.
    let mut response = inner.oneshot(req).await.map_err(Into::into)?;
    insert_limit_headers(
        response.headers_mut(),
        report.limit,
        report.remaining,
        report.reset_after,
    );
    let outcome = if waited.is_zero() {
        RateLimitOutcome::Allowed
    } else {
        RateLimitOutcome::Queued(waited)
    };
    response.extensions_mut().insert(outcome);
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
            return Err(Refused::boxed(refuse(key, &d)));
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
