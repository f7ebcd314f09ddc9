//! The response future of [`Validation`](crate::Validation).

use std::{
    fmt,
    future::Future,
    pin::Pin,
    task::{ready, Context, Poll},
};

use bytes::Bytes;
use http::{request::Parts, Request};
use portcullis_core::body::CollectError;
use tower::{BoxError, Service};

use crate::{validate, BodyReadError, BodyTooLarge, Level, Route};

type ReadBody = Pin<Box<dyn Future<Output = Result<Bytes, CollectError>> + Send>>;

pin_project_lite::pin_project! {
    /// Reads and checks the body, then runs the inner service's future. Requests that are not
    /// checked go straight to the inner future, with no allocation.
    pub struct ResponseFuture<S, B>
    where
        S: Service<Request<B>>,
    {
        #[pin]
        state: State<S, B>,
    }
}

pin_project_lite::pin_project! {
    #[project = StateProj]
    enum State<S, B>
    where
        S: Service<Request<B>>,
    {
        Reading {
            read: ReadBody,
            // Options so they can be moved out when the body is in; always Some before that.
            parts: Option<Parts>,
            inner: Option<S>,
            route: Route,
            level: Level,
        },
        Inner {
            #[pin]
            fut: S::Future,
        },
        Failed {
            err: Option<BoxError>,
        },
    }
}

impl<S, B> ResponseFuture<S, B>
where
    S: Service<Request<B>>,
{
    pub(crate) fn inner(fut: S::Future) -> Self {
        Self {
            state: State::Inner { fut },
        }
    }

    pub(crate) fn failed(err: BoxError) -> Self {
        Self {
            state: State::Failed { err: Some(err) },
        }
    }

    pub(crate) fn reading(
        read: ReadBody,
        parts: Parts,
        inner: S,
        route: Route,
        level: Level,
    ) -> Self {
        Self {
            state: State::Reading {
                read,
                parts: Some(parts),
                inner: Some(inner),
                route,
                level,
            },
        }
    }
}

impl<S, B> Future for ResponseFuture<S, B>
where
    S: Service<Request<B>>,
    S::Error: Into<BoxError>,
    B: From<Bytes>,
{
    type Output = Result<S::Response, BoxError>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let mut this = self.project();
        loop {
            match this.state.as_mut().project() {
                StateProj::Inner { fut } => return fut.poll(cx).map_err(Into::into),
                StateProj::Failed { err } => {
                    return Poll::Ready(Err(err
                        .take()
                        .unwrap_or_else(|| "polled after completion".into())));
                }
                StateProj::Reading {
                    read,
                    parts,
                    inner,
                    route,
                    level,
                } => {
                    let route = *route;
                    let bytes = match ready!(read.as_mut().poll(cx)) {
                        Ok(bytes) => bytes,
                        Err(CollectError::TooLarge { limit }) => {
                            tracing::debug!(%route, limit, "request rejected: body over the limit");
                            return Poll::Ready(Err(BodyTooLarge { limit }.into()));
                        }
                        Err(CollectError::Read(source)) => {
                            tracing::debug!(%route, error = %source, "reading the request body failed");
                            return Poll::Ready(Err(BodyReadError { source }.into()));
                        }
                    };
                    let (Some(mut parts), Some(mut inner)) = (parts.take(), inner.take()) else {
                        return Poll::Ready(Err("polled after completion".into()));
                    };
                    match validate(route, *level, &bytes) {
                        Ok(meta) => {
                            tracing::trace!(%route, model = ?meta.model, stream = meta.stream, "request body is valid");
                            parts.extensions.insert(meta);
                            let fut = inner.call(Request::from_parts(parts, B::from(bytes)));
                            this.state.set(State::Inner { fut });
                        }
                        Err(err) => {
                            tracing::debug!(%route, level = %level, field = %err.field, reason = %err.message, "request rejected: invalid body");
                            return Poll::Ready(Err(err.into()));
                        }
                    }
                }
            }
        }
    }
}

impl<S, B> fmt::Debug for ResponseFuture<S, B>
where
    S: Service<Request<B>>,
{
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let state = match &self.state {
            State::Reading { .. } => "reading",
            State::Inner { .. } => "inner",
            State::Failed { .. } => "failed",
        };
        f.debug_struct("ResponseFuture")
            .field("state", &state)
            .finish()
    }
}
