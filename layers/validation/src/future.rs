//! The response future of [`Validation`](crate::Validation).

use std::{
    fmt,
    future::Future,
    pin::Pin,
    task::{ready, Context, Poll},
};

use bytes::Bytes;
use http::{request::Parts, Request};
use portcullis_core::{body::CollectError, CanonicalBody};
use tower::{BoxError, Service};

use portcullis_core::error::Refused;

use crate::{validate::check, BodyReadError, BodyTooLarge, Level, Route};

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
            // Options so they can be moved out once the body is in; Some until then.
            parts: Option<Parts>,
            inner: Option<S>,
            route: Route,
            level: Level,
            // Leave the body's canonical form on the request (`CanonicalBody`).
            canonical: bool,
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
        canonical: bool,
    ) -> Self {
        Self {
            state: State::Reading {
                read,
                parts: Some(parts),
                inner: Some(inner),
                route,
                level,
                canonical,
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
                    canonical,
                } => {
                    let (route, level, canonical) = (*route, *level, *canonical);
                    let read = ready!(read.as_mut().poll(cx));
                    let next = match (read, parts.take(), inner.take()) {
                        (Ok(bytes), Some(mut parts), Some(mut inner)) => {
                            match check(route, level, &bytes, canonical) {
                                Ok((meta, canonical)) => {
                                    tracing::trace!(%route, model = ?meta.model, stream = meta.stream, "request body is valid");
                                    parts.extensions.insert(meta);
                                    if let Some(canonical) = canonical {
                                        parts
                                            .extensions
                                            .insert(CanonicalBody::new(bytes.clone(), canonical));
                                    }
                                    Ok(inner.call(Request::from_parts(parts, B::from(bytes))))
                                }
                                Err(err) => {
                                    tracing::debug!(%route, %level, field = %err.field, reason = %err.message, "request rejected: invalid body");
                                    Err(Refused::boxed(err))
                                }
                            }
                        }
                        (Err(CollectError::TooLarge { limit }), ..) => {
                            tracing::debug!(%route, limit, "request rejected: body over the limit");
                            Err(Refused::boxed(BodyTooLarge { limit }))
                        }
                        (Err(CollectError::Read(source)), ..) => {
                            tracing::debug!(%route, error = %source, "reading the request body failed");
                            Err(Refused::boxed(BodyReadError { source }))
                        }
                        (Ok(_), ..) => Err("polled after completion".into()),
                    };
                    // Either way the body future is done with; drop it (and the client's body) now.
                    match next {
                        Ok(fut) => this.state.set(State::Inner { fut }),
                        Err(err) => {
                            this.state.set(State::Failed { err: None });
                            return Poll::Ready(Err(err));
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
