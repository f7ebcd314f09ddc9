//! The future returned by [`Retry`](crate::Retry).

use std::{
    fmt,
    future::Future,
    pin::Pin,
    task::{Context, Poll},
};

use http::Response;
use tower::BoxError;

type BoxFuture<RB> = Pin<Box<dyn Future<Output = Result<Response<RB>, BoxError>> + Send>>;

/// Response future of [`Retry`](crate::Retry): resolves to the first response that is not
/// retried, or to an [`Attempted`](crate::Attempted) error.
///
/// It is boxed: an attempt loop that buffers bodies and sleeps between attempts is clearer
/// as `async` code than as a hand-written state machine, and one allocation per request is
/// small beside an upstream round trip.
pub struct ResponseFuture<RB> {
    inner: BoxFuture<RB>,
}

impl<RB> ResponseFuture<RB> {
    pub(crate) fn new(
        inner: impl Future<Output = Result<Response<RB>, BoxError>> + Send + 'static,
    ) -> Self {
        Self {
            inner: Box::pin(inner),
        }
    }
}

impl<RB> Future for ResponseFuture<RB> {
    type Output = Result<Response<RB>, BoxError>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        self.inner.as_mut().poll(cx)
    }
}

impl<RB> fmt::Debug for ResponseFuture<RB> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ResponseFuture").finish_non_exhaustive()
    }
}
