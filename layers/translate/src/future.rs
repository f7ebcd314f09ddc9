//! The response future of [`Translate`](crate::Translate).

use std::{
    fmt,
    future::Future,
    pin::Pin,
    task::{Context, Poll},
};

use http::Response;
use tower::BoxError;

use crate::TranslateBody;

type Inner<B> =
    Pin<Box<dyn Future<Output = Result<Response<TranslateBody<B>>, BoxError>> + Send + 'static>>;

/// Response future of [`Translate`](crate::Translate).
///
/// Boxed: a translated call awaits the request body, the upstream, and (non-streamed) the
/// response body in turn; a hand-written state machine would buy one allocation per request
/// on a path that already parses and writes JSON.
pub struct ResponseFuture<B> {
    pub(crate) inner: Inner<B>,
}

impl<B> Future for ResponseFuture<B> {
    type Output = Result<Response<TranslateBody<B>>, BoxError>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        self.inner.as_mut().poll(cx)
    }
}

impl<B> fmt::Debug for ResponseFuture<B> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ResponseFuture").finish_non_exhaustive()
    }
}
