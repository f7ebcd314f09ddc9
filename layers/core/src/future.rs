//! The boxed response future of layers whose request path is `async` code, and
//! [`call_if_ready`], for a layer that can call its inner service at once.

use std::{
    fmt,
    future::Future,
    pin::Pin,
    task::{Context, Poll},
};

use http::Response;
use tower::{BoxError, Service};

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

/// Call `service` at once if it is ready now, else hand `req` back.
///
/// For a layer whose `poll_ready` does not ready its inner service (it may answer without
/// it), or that decides in `call` what to send on: calling the service it holds, here, spares
/// the future a clone of every layer below (and their reference counts) per request. Readiness
/// is polled with a no-op waker; a service not ready now has its request handed back, and the
/// caller readies a clone in its future with the real waker (`ServiceExt::oneshot`), so no
/// wake-up is waited on that would not come.
pub fn call_if_ready<S, R>(service: &mut S, req: R) -> Result<Result<S::Future, S::Error>, R>
where
    S: Service<R>,
{
    match service.poll_ready(&mut Context::from_waker(std::task::Waker::noop())) {
        Poll::Ready(Ok(())) => Ok(Ok(service.call(req))),
        Poll::Ready(Err(e)) => Ok(Err(e)),
        Poll::Pending => Err(req),
    }
}
