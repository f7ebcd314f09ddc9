//! [`LoopDetectionBody`]: the response body, passed through while its text is watched.

use std::{
    collections::VecDeque,
    fmt,
    pin::Pin,
    task::{ready, Context, Poll},
};

use bytes::Bytes;
use http::HeaderMap;
use http_body::{Body, Frame, SizeHint};
use portcullis_core::body::Backlog;
use tower::BoxError;

use crate::{
    sse::{data_payload, Flow, Framer},
    watch::Watch,
    LoopDetected,
};

/// The body of a response that went through [`LoopDetection`](crate::LoopDetection).
///
/// Unwatched responses pass through frame by frame. A watched stream is passed on an event at
/// a time (see the crate docs); when its text starts looping, the upstream body is dropped,
/// which cancels the upstream call, and one error event ends the stream.
pub struct LoopDetectionBody<B> {
    /// What to send before reading `inner` (a buffered JSON body and its trailers or error,
    /// events of a stream).
    out: Backlog,
    /// Boxed so the body is `Unpin` and can be dropped early (which cancels the upstream).
    inner: Option<Pin<Box<B>>>,
    scan: Option<Box<Scan>>,
}

struct Scan {
    framer: Framer,
    watch: Watch,
}

impl<B> LoopDetectionBody<B> {
    pub(crate) fn passthrough(inner: B) -> Self {
        Self::buffered(VecDeque::new(), Some(Box::pin(inner)))
    }

    pub(crate) fn buffered(queue: VecDeque<Bytes>, rest: Option<Pin<Box<B>>>) -> Self {
        Self {
            out: Backlog {
                queue,
                ..Backlog::default()
            },
            inner: rest,
            scan: None,
        }
    }

    pub(crate) fn with_tail(
        mut self,
        trailers: Option<HeaderMap>,
        error: Option<BoxError>,
    ) -> Self {
        self.out.trailers = trailers;
        self.out.error = error;
        self
    }

    pub(crate) fn watched(inner: B, watch: Watch, max_event_bytes: usize) -> Self {
        Self {
            out: Backlog::default(),
            inner: Some(Box::pin(inner)),
            scan: Some(Box::new(Scan {
                framer: Framer::new(max_event_bytes),
                watch,
            })),
        }
    }

    /// The stream loops: drop the upstream and queue the error event.
    fn cut(&mut self) {
        self.inner = None;
        if let Some(scan) = self.scan.take() {
            if let Some(d) = scan.watch.found {
                let err = LoopDetected::new(scan.watch.api, d);
                crate::report(&err, d.at_char, true);
                self.out.queue.push_back(scan.watch.api.error_event(
                    LoopDetected::CODE,
                    "api_error",
                    &err.stream_message(),
                ));
            }
        }
    }
}

fn on_line(watch: &mut Watch, line: &[u8]) -> Flow {
    if let Some(payload) = data_payload(line) {
        watch.sse_payload(payload);
        if watch.found.is_some() {
            return Flow::Stop;
        }
    }
    Flow::Continue
}

impl<B> Body for LoopDetectionBody<B>
where
    B: Body<Data = Bytes>,
    B::Error: Into<BoxError>,
{
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let this = self.get_mut();
        loop {
            if let Some(frame) = this.out.pop() {
                return Poll::Ready(Some(frame));
            }
            let Some(inner) = this.inner.as_mut() else {
                return Poll::Ready(None);
            };
            let frame = ready!(inner.as_mut().poll_frame(cx));
            let Some(scan) = this.scan.as_deref_mut() else {
                return Poll::Ready(frame.map(|f| f.map_err(Into::into)));
            };
            let Scan { framer, watch } = scan;
            let flow = match frame {
                Some(Ok(frame)) => match frame.into_data() {
                    Ok(data) => framer.feed(data, &mut this.out.queue, &mut |l| on_line(watch, l)),
                    Err(frame) => {
                        let flow = framer.finish(&mut this.out.queue, &mut |l| on_line(watch, l));
                        this.out.trailers = frame.into_trailers().ok();
                        flow
                    }
                },
                Some(Err(e)) => {
                    // The upstream failed mid-stream: what was held goes out before the error.
                    framer.finish(&mut this.out.queue, &mut |_| Flow::Continue);
                    this.out.error = Some(e.into());
                    this.inner = None;
                    Flow::Continue
                }
                None => {
                    let flow = framer.finish(&mut this.out.queue, &mut |l| on_line(watch, l));
                    this.inner = None;
                    flow
                }
            };
            if flow == Flow::Stop {
                this.out.trailers = None;
                this.cut();
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        self.out
            .is_end_stream(self.inner.as_deref(), self.scan.is_some())
    }

    fn size_hint(&self) -> SizeHint {
        self.out
            .size_hint(self.inner.as_deref(), self.scan.is_some())
    }
}

impl<B> fmt::Debug for LoopDetectionBody<B> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("LoopDetectionBody")
            .field("queued", &self.out.queue.len())
            .field("watched", &self.scan.is_some())
            .field("done", &self.inner.is_none())
            .finish_non_exhaustive()
    }
}
