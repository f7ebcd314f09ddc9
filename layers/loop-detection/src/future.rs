//! [`ResponseFuture`]: waits for the inner response, then watches its body.

use std::{
    collections::VecDeque,
    future::Future,
    pin::Pin,
    sync::Arc,
    task::{ready, Context, Poll},
};

use bytes::{Bytes, BytesMut};
use http::{header, Response};
use http_body::Body;
use pin_project_lite::pin_project;
use portcullis_core::headers::ReadableBody;
use tower::BoxError;

use crate::{layer::Shared, watch::Watch, Api, LoopDetected, LoopDetectionBody};

pin_project! {
    /// The future of [`LoopDetection`](crate::LoopDetection): the inner response with its body
    /// watched. A non-streamed JSON answer is read whole first (up to the layer's
    /// `max_json_bytes`), so a looping one becomes a [`LoopDetected`] error instead.
    pub struct ResponseFuture<F, B> {
        #[pin]
        state: State<F, B>,
    }
}

pin_project! {
    #[project = StateProj]
    enum State<F, B> {
        Calling {
            #[pin]
            future: F,
            watch: Option<(Api, Arc<Shared>)>,
        },
        Collecting {
            parts: Option<http::response::Parts>,
            body: Option<Pin<Box<B>>>,
            buf: BytesMut,
            api: Api,
            shared: Arc<Shared>,
        },
    }
}

impl<F, B> ResponseFuture<F, B> {
    pub(crate) fn new(future: F, watch: Option<(Api, Arc<Shared>)>) -> Self {
        Self {
            state: State::Calling { future, watch },
        }
    }
}

/// How a response's body is watched.
enum Kind {
    Pass,
    Sse,
    Json,
}

fn kind<B>(resp: &Response<B>) -> Kind {
    match ReadableBody::of(resp.status(), resp.headers()) {
        None => Kind::Pass,
        Some(ReadableBody::Sse) => Kind::Sse,
        Some(ReadableBody::Json) => Kind::Json,
    }
}

impl<F, B, E> Future for ResponseFuture<F, B>
where
    F: Future<Output = Result<Response<B>, E>>,
    E: Into<BoxError>,
    B: Body<Data = Bytes>,
    B::Error: Into<BoxError>,
{
    type Output = Result<Response<LoopDetectionBody<B>>, BoxError>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        loop {
            let next = match self.as_mut().project().state.project() {
                StateProj::Calling { future, watch } => {
                    let resp = ready!(future.poll(cx)).map_err(Into::into)?;
                    let Some((api, shared)) = watch.take() else {
                        return Poll::Ready(Ok(resp.map(LoopDetectionBody::passthrough)));
                    };
                    match kind(&resp) {
                        Kind::Pass => {
                            return Poll::Ready(Ok(resp.map(LoopDetectionBody::passthrough)))
                        }
                        Kind::Sse => {
                            let (mut parts, body) = resp.into_parts();
                            // The stream may end early with an error event: its length changes.
                            parts.headers.remove(header::CONTENT_LENGTH);
                            let watch = Watch::new(api, shared.config.clone());
                            let body =
                                LoopDetectionBody::watched(body, watch, shared.max_event_bytes);
                            return Poll::Ready(Ok(Response::from_parts(parts, body)));
                        }
                        Kind::Json => {
                            let (parts, body) = resp.into_parts();
                            State::Collecting {
                                parts: Some(parts),
                                body: Some(Box::pin(body)),
                                buf: BytesMut::new(),
                                api,
                                shared,
                            }
                        }
                    }
                }
                StateProj::Collecting {
                    parts,
                    body,
                    buf,
                    api,
                    shared,
                } => {
                    let Some(inner) = body.as_mut() else {
                        return Poll::Ready(Err("response future polled after completion".into()));
                    };
                    let frame = ready!(inner.as_mut().poll_frame(cx));
                    let (trailers, error) = match frame {
                        Some(Ok(frame)) => match frame.into_data() {
                            Ok(data) => {
                                buf.extend_from_slice(&data);
                                if buf.len() <= shared.max_json_bytes {
                                    continue;
                                }
                                // Too large to hold: passed on unread.
                                let queue = VecDeque::from([buf.split().freeze()]);
                                let body = LoopDetectionBody::buffered(queue, body.take());
                                return Poll::Ready(Ok(Response::from_parts(
                                    parts.take().unwrap_or_else(empty_parts),
                                    body,
                                )));
                            }
                            Err(frame) => (frame.into_trailers().ok(), None),
                        },
                        // Reading failed: what was read goes on, then the error.
                        Some(Err(e)) => (None, Some(e.into())),
                        None => (None, None),
                    };
                    body.take();
                    let whole = buf.split().freeze();
                    if error.is_none() {
                        let mut watch = Watch::new(*api, shared.config.clone());
                        watch.json(&whole);
                        if let Some(d) = watch.found {
                            let err = LoopDetected::new(*api, d);
                            crate::report(&err, d.at_char, false);
                            return Poll::Ready(Err(portcullis_core::error::Refused::boxed(err)));
                        }
                    }
                    let queue = if whole.is_empty() {
                        VecDeque::new()
                    } else {
                        VecDeque::from([whole])
                    };
                    let body = LoopDetectionBody::buffered(queue, None).with_tail(trailers, error);
                    return Poll::Ready(Ok(Response::from_parts(
                        parts.take().unwrap_or_else(empty_parts),
                        body,
                    )));
                }
            };
            self.as_mut().project().state.set(next);
        }
    }
}

/// Only reached if the future is polled after it completed.
fn empty_parts() -> http::response::Parts {
    Response::new(()).into_parts().0
}

impl<F, B> std::fmt::Debug for ResponseFuture<F, B> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ResponseFuture").finish_non_exhaustive()
    }
}
