//! The boxed response future of layers whose request path is `async` code.

use std::{
    fmt,
    future::Future,
    pin::Pin,
    task::{Context, Poll},
};

use http::Response;
use tower::BoxError;

/// A boxed `Future<Output = Result<Response<RB>, BoxError>>` with a name and a `Debug`.
///
/// For layers (retry, dedup cache) whose request path reads bodies, sleeps or awaits shared
/// state: that is clearer as `async` code than as a hand-written state machine, and one
/// allocation per request is small beside an upstream round trip.
pub struct BoxResponseFuture<RB> {
    inner: Pin<Box<dyn Future<Output = Result<Response<RB>, BoxError>> + Send>>,
}

impl<RB> BoxResponseFuture<RB> {
    /// Box `future`.
    pub fn new(
        future: impl Future<Output = Result<Response<RB>, BoxError>> + Send + 'static,
    ) -> Self {
        Self {
            inner: Box::pin(future),
        }
    }
}

impl<RB> Future for BoxResponseFuture<RB> {
    type Output = Result<Response<RB>, BoxError>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        self.inner.as_mut().poll(cx)
    }
}

impl<RB> fmt::Debug for BoxResponseFuture<RB> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("BoxResponseFuture").finish_non_exhaustive()
    }
}
