//! [`ResponseFuture`]: the future of [`ToolCallLoopDetection`](crate::ToolCallLoopDetection).

use std::{
    fmt,
    future::Future,
    pin::Pin,
    task::{Context, Poll},
};

use futures_util::future::BoxFuture;
use http::Response;
use tower::BoxError;

use crate::ToolCallLoopBody;

/// The response of the inner service, its tool calls recorded (a boxed future: the layer may
/// read the request body to add a note and the response body to judge it, one await after the
/// other, and an LLM call dwarfs the allocation).
pub struct ResponseFuture<B> {
    inner: BoxFuture<'static, Result<Response<ToolCallLoopBody<B>>, BoxError>>,
}

impl<B> ResponseFuture<B> {
    pub(crate) fn new(
        inner: impl Future<Output = Result<Response<ToolCallLoopBody<B>>, BoxError>> + Send + 'static,
    ) -> Self {
        Self {
            inner: Box::pin(inner),
        }
    }
}

impl<B> Future for ResponseFuture<B> {
    type Output = Result<Response<ToolCallLoopBody<B>>, BoxError>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        self.inner.as_mut().poll(cx)
    }
}

impl<B> fmt::Debug for ResponseFuture<B> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ResponseFuture").finish_non_exhaustive()
    }
}
