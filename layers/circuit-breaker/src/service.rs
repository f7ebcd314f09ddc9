//! [`CircuitBreaker`]: the service.

use std::sync::Arc;
use std::task::{Context, Poll};

use http::{Request, Response};
use tower::{BoxError, Service};

use crate::future::ResponseFuture;
use crate::state::{BreakerHandle, Shared};
use crate::{ClientRequest, Config};

/// Fails calls fast with [`CircuitOpen`](portcullis_core::CircuitOpen) while the upstream
/// behind `S` keeps failing.
///
/// A response with status >= 500 or an error from `S` (connect error, timeout, ...) is a
/// failure; anything else, 4xx included, is a success. Clones share one breaker. Attempts that
/// carry the same [`ClientRequest`] count as one request.
///
/// Each response carries the [`BreakerState`](portcullis_core::BreakerState) its call was
/// admitted in (`Closed`, or `HalfOpen` for a probe); a refused call fails with
/// [`CircuitOpen`](portcullis_core::CircuitOpen), which stands for `Open`.
#[derive(Clone, Debug)]
pub struct CircuitBreaker<S> {
    inner: S,
    shared: Arc<Shared>,
}

impl<S> CircuitBreaker<S> {
    /// Wrap `inner` in a new, closed breaker of its own.
    pub fn new(inner: S, name: impl Into<String>, config: Config) -> Self {
        let name: String = name.into();
        Self::with_shared(inner, Shared::new(Arc::from(name), config))
    }

    pub(crate) fn with_shared(inner: S, shared: Arc<Shared>) -> Self {
        Self { inner, shared }
    }

    /// A handle on this breaker's state.
    pub fn handle(&self) -> BreakerHandle {
        BreakerHandle {
            shared: Arc::clone(&self.shared),
        }
    }

    portcullis_core::define_inner_service_accessors!();
}

impl<S, B, RB> Service<Request<B>> for CircuitBreaker<S>
where
    S: Service<Request<B>, Response = Response<RB>>,
    S::Error: Into<BoxError>,
{
    type Response = Response<RB>;
    type Error = BoxError;
    type Future = ResponseFuture<S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        // Readiness stays the inner service's: an open breaker does not make the stack look
        // unready, it answers each call at once instead.
        self.inner.poll_ready(cx).map_err(Into::into)
    }

    fn call(&mut self, req: Request<B>) -> Self::Future {
        let request = req.extensions().get::<ClientRequest>().cloned();
        match self.shared.acquire(request) {
            Ok(permit) => ResponseFuture::called(self.inner.call(req), permit),
            Err(open) => ResponseFuture::open(open),
        }
    }
}
