//! The response future of [`CircuitBreaker`](crate::CircuitBreaker).

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::task::{ready, Context, Poll};

use http::Response;
use pin_project_lite::pin_project;
use portcullis_core::{BreakerState, CircuitOpen};
use tower::BoxError;

use crate::state::Permit;

pin_project! {
    /// Either the breaker's immediate [`CircuitOpen`] error, or the inner call, whose outcome
    /// is reported to the breaker when it completes. Its response carries the
    /// [`BreakerState`] the call was admitted in (`Closed`, or `HalfOpen` for a probe).
    pub struct ResponseFuture<F> {
        #[pin]
        kind: Kind<F>,
    }
}

pin_project! {
    #[project = KindProj]
    enum Kind<F> {
        Open { error: Option<CircuitOpen> },
        Called {
            #[pin]
            future: F,
            // Dropped unsettled if this future is dropped first: that frees a probe slot.
            permit: Option<Permit>,
        },
    }
}

impl<F> ResponseFuture<F> {
    pub(crate) fn open(error: CircuitOpen) -> Self {
        Self {
            kind: Kind::Open { error: Some(error) },
        }
    }

    pub(crate) fn called(future: F, permit: Permit) -> Self {
        Self {
            kind: Kind::Called {
                future,
                permit: Some(permit),
            },
        }
    }
}

impl<F> fmt::Debug for ResponseFuture<F> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let kind = match &self.kind {
            Kind::Open { .. } => "open",
            Kind::Called { .. } => "called",
        };
        f.debug_struct("ResponseFuture")
            .field("kind", &kind)
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
        match self.project().kind.project() {
            KindProj::Open { error } => {
                let error = error
                    .take()
                    .expect("circuit breaker ResponseFuture polled after completion");
                Poll::Ready(Err(portcullis_core::error::Refused::boxed(error)))
            }
            KindProj::Called { future, permit } => {
                let mut result = ready!(future.poll(cx));
                let success = match &result {
                    Ok(response) => response.status().as_u16() < 500,
                    Err(_) => false,
                };
                if let Some(permit) = permit.take() {
                    let state: BreakerState = permit.state();
                    if let Ok(response) = &mut result {
                        response.extensions_mut().insert(state);
                    }
                    permit.record(success);
                }
                Poll::Ready(result.map_err(Into::into))
            }
        }
    }
}
