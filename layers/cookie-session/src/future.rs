//! The response future of [`CookieSession`](crate::CookieSession).

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::task::{ready, Context, Poll};

use http::Response;
use pin_project_lite::pin_project;
use tower::BoxError;
use url::Url;

use crate::service::Target;
use crate::CookieJar;

/// The URL the request went to, or what makes it when a response sets a cookie.
pub(crate) type Destination = Result<Url, Target>;

pin_project! {
    /// The inner call; stores the response's cookies in the jar when it completes.
    pub struct ResponseFuture<F> {
        #[pin]
        inner: F,
        store: Option<(CookieJar, Destination)>,
    }
}

impl<F> ResponseFuture<F> {
    pub(crate) fn new(inner: F, store: Option<(CookieJar, Destination)>) -> Self {
        Self { inner, store }
    }
}

impl<F> fmt::Debug for ResponseFuture<F> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ResponseFuture")
            .field(
                "host",
                &self.store.as_ref().and_then(|(_, to)| match to {
                    Ok(url) => url.host_str().map(str::to_owned),
                    Err(target) => target.url().and_then(|u| u.host_str().map(str::to_owned)),
                }),
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
        if let (Ok(response), Some((jar, to))) = (&result, this.store.take()) {
            if response.headers().contains_key(http::header::SET_COOKIE) {
                if let Ok(url) = to.or_else(|target| target.url().ok_or(())) {
                    jar.store_response_cookies(&url, response.headers());
                }
            }
        }
        Poll::Ready(result.map_err(Into::into))
    }
}
