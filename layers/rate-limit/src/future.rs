//! The response future of [`RateLimit`](crate::RateLimit).

use std::{
    fmt,
    future::Future,
    pin::Pin,
    task::{ready, Context, Poll},
};

use http::Response;
use pin_project_lite::pin_project;
use portcullis_core::RateLimitOutcome;
use tower::BoxError;

use crate::{error::insert_limit_headers, Decision, RateLimited};

type BoxedCall<RB> = Pin<Box<dyn Future<Output = Result<Response<RB>, BoxError>> + Send>>;

pin_project! {
    /// Resolves to the inner service's response (with `x-ratelimit-*` headers and a
    /// [`RateLimitOutcome`] extension added) or to a boxed [`RateLimited`].
    pub struct ResponseFuture<F, RB> {
        #[pin]
        state: State<F, RB>,
    }
}

pin_project! {
    #[project = StateProj]
    enum State<F, RB> {
        // Refused synchronously.
        Limited { error: Option<RateLimited> },
        // Allowed synchronously: the inner call is in flight.
        Called { #[pin] future: F, decision: Decision },
        // Queueing, per-model limits or Redis: decided asynchronously.
        Boxed { future: BoxedCall<RB> },
    }
}

impl<F, RB> ResponseFuture<F, RB> {
    pub(crate) fn limited(error: RateLimited) -> Self {
        Self {
            state: State::Limited { error: Some(error) },
        }
    }

    pub(crate) fn called(future: F, decision: Decision) -> Self {
        Self {
            state: State::Called { future, decision },
        }
    }

    pub(crate) fn boxed(future: BoxedCall<RB>) -> Self {
        Self {
            state: State::Boxed { future },
        }
    }
}

impl<F, RB, E> Future for ResponseFuture<F, RB>
where
    F: Future<Output = Result<Response<RB>, E>>,
    E: Into<BoxError>,
{
    type Output = Result<Response<RB>, BoxError>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        match self.project().state.project() {
            StateProj::Limited { error } => match error.take() {
                Some(e) => Poll::Ready(Err(portcullis_core::error::Refused::boxed(e))),
                None => panic!("ResponseFuture polled after completion"),
            },
            StateProj::Called { future, decision } => {
                let mut response = ready!(future.poll(cx)).map_err(Into::into)?;
                insert_limit_headers(
                    response.headers_mut(),
                    decision.limit,
                    decision.remaining,
                    decision.reset_after,
                );
                response.extensions_mut().insert(RateLimitOutcome::Allowed);
                Poll::Ready(Ok(response))
            }
            StateProj::Boxed { future } => future.as_mut().poll(cx),
        }
    }
}

impl<F, RB> fmt::Debug for ResponseFuture<F, RB> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let state = match &self.state {
            State::Limited { .. } => "limited",
            State::Called { .. } => "called",
            State::Boxed { .. } => "queued",
        };
        f.debug_struct("ResponseFuture")
            .field("state", &state)
            .finish()
    }
}
