//! [`ResponseFuture`]: the inner service's response, its body wrapped for the audit line.

use std::{
    fmt,
    future::Future,
    pin::Pin,
    task::{ready, Context, Poll},
};

use http::Response;
use http_body::Body;
use pin_project_lite::pin_project;

use crate::{
    line::{Ending, Pending, Started},
    AuditBody,
};

pin_project! {
    /// The response future of [`Audit`](crate::Audit): no allocation beyond the line's state,
    /// as the layer only wraps what the inner service returns.
    pub struct ResponseFuture<F> {
        #[pin]
        inner: F,
        started: Option<Started>,
    }

    impl<F> PinnedDrop for ResponseFuture<F> {
        fn drop(this: Pin<&mut Self>) {
            // Dropped before the response head (the client went away while waiting): the
            // request still gets its line, without a status.
            if let Some(started) = this.project().started.take() {
                Box::new(Pending::failed(started)).complete(Ending::Aborted);
            }
        }
    }
}

impl<F> ResponseFuture<F> {
    pub(crate) fn new(inner: F, started: Started) -> Self {
        Self {
            inner,
            started: Some(started),
        }
    }
}

impl<F> fmt::Debug for ResponseFuture<F> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ResponseFuture").finish_non_exhaustive()
    }
}

impl<F, B, E> Future for ResponseFuture<F>
where
    F: Future<Output = Result<Response<B>, E>>,
    B: Body,
{
    type Output = Result<Response<AuditBody<B>>, E>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        let result = ready!(this.inner.poll(cx));
        let Some(started) = this.started.take() else {
            // Polled after completion: a caller bug; nothing more to record.
            return Poll::Pending;
        };
        Poll::Ready(match result {
            Ok(resp) => {
                let pending = Box::new(Pending::new(started, &resp));
                Ok(resp.map(|body| AuditBody::new(body, pending)))
            }
            Err(e) => {
                Box::new(Pending::failed(started)).complete(Ending::NoResponse);
                Err(e)
            }
        })
    }
}
