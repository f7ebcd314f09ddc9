//! [`ToolCallLoopBody`]: the response body, passed through while its tool calls are read.

use std::{
    collections::VecDeque,
    fmt,
    pin::Pin,
    sync::Arc,
    task::{ready, Context, Poll},
};

use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};
use portcullis_core::body::Backlog;
use tower::BoxError;

use crate::{
    calls::{Event, StreamCalls},
    layer::Shared,
    session::{SessionKey, Verdict},
    sse::{ends_event, Flow, Framer},
    Api, ToolCallLoop,
};

/// The body of a response that went through [`ToolCallLoopDetection`](crate::ToolCallLoopDetection).
///
/// Unwatched and non-streamed bodies pass through as they are. A watched stream is passed on
/// an event at a time; at the event that ends the answer (`[DONE]`, `response.completed`,
/// `message_stop`, or the end of the body) its tool calls are recorded, and a blocked loop
/// replaces that event with one error event.
pub struct ToolCallLoopBody<B> {
    /// What to send before reading `inner` (a buffered answer, events, an error event).
    out: Backlog,
    inner: Option<Pin<Box<B>>>,
    scan: Option<Box<Scan>>,
}

struct Scan {
    framer: Framer,
    watch: Watch,
    /// Every frame so far ended between events and held nothing the watch reacts to: frames
    /// pass without being cut into lines ([`StreamCalls::may_react`]). The first frame that
    /// does not is read line by line, and every frame after it.
    unread: bool,
}

struct Watch {
    calls: StreamCalls,
    api: Api,
    key: SessionKey,
    shared: Arc<Shared>,
    /// The answer's calls were recorded.
    recorded: bool,
    /// The answer is a blocked loop.
    blocked: Option<ToolCallLoop>,
}

impl Watch {
    /// Record the answer once; `Stop` if it is a blocked loop.
    fn end(&mut self) -> Flow {
        if self.recorded {
            return Flow::Continue;
        }
        self.recorded = true;
        let Some(calls) = self.calls.finish() else {
            return Flow::Continue;
        };
        match crate::judge(&self.shared, self.api, self.key, &calls, true) {
            Verdict::Block { tool, repeats } => {
                self.blocked = Some(ToolCallLoop {
                    tool: tool.to_string(),
                    repeats,
                });
                Flow::Stop
            }
            _ => Flow::Continue,
        }
    }

    fn line(&mut self, line: &[u8]) -> Flow {
        if self.recorded {
            return Flow::Continue;
        }
        match self.calls.line(line) {
            Event::End => self.end(),
            Event::More => Flow::Continue,
        }
    }
}

impl<B> ToolCallLoopBody<B> {
    pub(crate) fn passthrough(inner: B) -> Self {
        Self {
            out: Backlog::default(),
            inner: Some(Box::pin(inner)),
            scan: None,
        }
    }

    pub(crate) fn buffered(bytes: Bytes, rest: Option<Pin<Box<B>>>) -> Self {
        Self {
            out: Backlog {
                queue: if bytes.is_empty() {
                    VecDeque::new()
                } else {
                    VecDeque::from([bytes])
                },
                ..Backlog::default()
            },
            inner: rest,
            scan: None,
        }
    }

    pub(crate) fn failed(error: BoxError) -> Self {
        Self {
            out: Backlog {
                error: Some(error),
                ..Backlog::default()
            },
            inner: None,
            scan: None,
        }
    }

    pub(crate) fn watched(inner: B, api: Api, key: SessionKey, shared: Arc<Shared>) -> Self {
        Self {
            out: Backlog::default(),
            inner: Some(Box::pin(inner)),
            scan: Some(Box::new(Scan {
                unread: true,
                framer: Framer::new(shared.max_event_bytes),
                watch: Watch {
                    calls: StreamCalls::new(api),
                    api,
                    key,
                    shared,
                    recorded: false,
                    blocked: None,
                },
            })),
        }
    }

    fn blocked(&mut self) {
        self.inner = None;
        self.out.trailers = None;
        if let Some(scan) = self.scan.take() {
            if let Some(err) = scan.watch.blocked {
                self.out.queue.push_back(scan.watch.api.error_event(
                    ToolCallLoop::CODE,
                    ToolCallLoop::ERROR_TYPE,
                    &err.to_string(),
                ));
            }
        }
    }
}

impl<B> Body for ToolCallLoopBody<B>
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
            let flow = match frame {
                Some(Ok(frame)) => match frame.into_data() {
                    Ok(data) => {
                        let Scan {
                            framer,
                            watch,
                            unread,
                        } = scan;
                        // Text events (most of a stream) pass whole while nothing came that
                        // the watch reads; the end is then recorded when the body ends.
                        if *unread && ends_event(&data) && !StreamCalls::may_react(watch.api, &data)
                        {
                            return Poll::Ready(Some(Ok(Frame::data(data))));
                        }
                        *unread = false;
                        framer.feed(data, &mut this.out.queue, &mut |l| watch.line(l))
                    }
                    Err(frame) => {
                        this.out.trailers = frame.into_trailers().ok();
                        finish(scan, &mut this.out.queue)
                    }
                },
                Some(Err(e)) => {
                    // The upstream failed: the answer is incomplete and is not recorded; what
                    // was held goes out before the error.
                    scan.watch.recorded = true;
                    scan.framer
                        .finish(&mut this.out.queue, &mut |_| Flow::Continue);
                    this.inner = None;
                    this.scan = None;
                    this.out.error = Some(e.into());
                    continue;
                }
                None => {
                    this.inner = None;
                    finish(scan, &mut this.out.queue)
                }
            };
            if flow == Flow::Stop {
                this.blocked();
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

/// The body ended: its last event is read, then the answer is recorded if no end event did.
fn finish(scan: &mut Scan, queue: &mut VecDeque<Bytes>) -> Flow {
    let Scan { framer, watch, .. } = scan;
    let flow = framer.finish(queue, &mut |l| watch.line(l));
    if flow == Flow::Continue {
        watch.end()
    } else {
        flow
    }
}

impl<B> fmt::Debug for ToolCallLoopBody<B> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ToolCallLoopBody")
            .field("queued", &self.out.queue.len())
            .field("watched", &self.scan.is_some())
            .field("done", &self.inner.is_none())
            .finish_non_exhaustive()
    }
}
