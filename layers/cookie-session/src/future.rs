//! The response future of [`CookieSession`](crate::CookieSession).

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::task::{ready, Context, Poll};

use http::Response;
use pin_project_lite::pin_project;
use tower::BoxError;
use url::Url;

use crate::CookieJar;

pin_project! {
    /// The inner call; stores the response's cookies in the jar when it completes.
    pub struct ResponseFuture<F> {
        #[pin]
        inner: F,
        store: Option<(CookieJar, Url)>,
    }
}

impl<F> ResponseFuture<F> {
    pub(crate) fn new(inner: F, store: Option<(CookieJar, Url)>) -> Self {
        Self { inner, store }
    }
}

impl<F> fmt::Debug for ResponseFuture<F> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ResponseFuture")
            .field(
                "host",
                &self.store.as_ref().and_then(|(_, url)| url.host_str()),
            )
            .finish()
    }
}

impl<F, RB, E> Future for ResponseFuture<F>
where
    F: Future<Output = Result<Response<RB>, E>>,
    E: Into<BoxError>,
{
    type Output = Result<Response<RB>, BoxError>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        let result = ready!(this.inner.poll(cx));
        if let (Ok(response), Some((jar, url))) = (&result, this.store.take()) {
            jar.store_response_cookies(&url, response.headers());
        }
        Poll::Ready(result.map_err(Into::into))
    }
}
