//! The response future of [`DedupCache`](crate::DedupCache).

use std::{
    fmt,
    future::Future,
    pin::Pin,
    task::{Context, Poll},
};

use http::Response;
use tower::BoxError;

type Inner<RB> = Pin<Box<dyn Future<Output = Result<Response<RB>, BoxError>> + Send>>;

/// Response future of [`DedupCache`](crate::DedupCache).
///
/// Boxed: the request path reads the body, awaits the cache and the in-flight map, and may
/// spawn the shared call, which a hand-written state machine would only obscure. Dropping it
/// does not cancel a shared call that other requests are waiting on.
pub struct ResponseFuture<RB> {
    inner: Inner<RB>,
}

impl<RB> ResponseFuture<RB> {
    pub(crate) fn new(inner: Inner<RB>) -> Self {
        Self { inner }
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
