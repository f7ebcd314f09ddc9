//! The bodies the audit layer watches: the response's (usage, end, bounded copy) and, with
//! `include_bodies`, the request's (a bounded copy as the inner service reads it).

use std::{
    pin::Pin,
    sync::{Arc, Mutex},
    task::{Context, Poll},
};

use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};
use pin_project_lite::pin_project;

use crate::line::{Ending, Pending};

/// The first bytes of a body, up to a limit.
#[derive(Debug, Default)]
pub(crate) struct Capture {
    pub(crate) buf: Vec<u8>,
    pub(crate) limit: usize,
    pub(crate) truncated: bool,
}

impl Capture {
    pub(crate) fn new(limit: usize) -> Self {
        Self {
            buf: Vec::new(),
            limit,
            truncated: false,
        }
    }

    pub(crate) fn push(&mut self, data: &[u8]) {
        let room = self.limit.saturating_sub(self.buf.len());
        if data.len() > room {
            self.truncated = true;
        }
        self.buf.extend_from_slice(&data[..data.len().min(room)]);
    }
}

pin_project! {
    /// The request body as the inner service sees it: unchanged; with `include_bodies`, its
    /// first bytes are copied for the audit line as they are read.
    #[derive(Debug)]
    pub struct AuditRequestBody<B> {
        #[pin]
        inner: B,
        capture: Option<Arc<Mutex<Capture>>>,
    }
}

impl<B> AuditRequestBody<B> {
    pub(crate) fn new(inner: B, capture: Option<Arc<Mutex<Capture>>>) -> Self {
        Self { inner, capture }
    }

    /// The wrapped body.
    pub fn into_inner(self) -> B {
        self.inner
    }
}

impl<B> Body for AuditRequestBody<B>
where
    B: Body<Data = Bytes>,
{
    type Data = Bytes;
    type Error = B::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        let this = self.project();
        let polled = this.inner.poll_frame(cx);
        if let (Poll::Ready(Some(Ok(frame))), Some(c)) = (&polled, this.capture.as_ref()) {
            if let Some(d) = frame.data_ref() {
                c.lock().unwrap_or_else(|p| p.into_inner()).push(d);
            }
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

pin_project! {
    /// The response body, passed on unchanged while its usage is read
    /// ([`Sniffer`](portcullis_core::usage::Sniffer), line by line, never buffering a
    /// stream) and, with `include_bodies`, its first bytes copied. When it ends, fails or is
    /// dropped, the request's audit line is queued and its usage counted.
    pub struct AuditBody<B> {
        #[pin]
        inner: B,
        pending: Option<Box<Pending>>,
        empty: bool,
    }

    impl<B> PinnedDrop for AuditBody<B> {
        fn drop(this: Pin<&mut Self>) {
            let this = this.project();
            if let Some(p) = this.pending.take() {
                // A body that was empty from the start may be dropped without being polled.
                p.complete(if *this.empty { Ending::Complete } else { Ending::Aborted });
            }
        }
    }
}

impl<B: std::fmt::Debug> std::fmt::Debug for AuditBody<B> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AuditBody")
            .field("inner", &self.inner)
            .finish_non_exhaustive()
    }
}

impl<B: Body> AuditBody<B> {
    pub(crate) fn new(inner: B, pending: Box<Pending>) -> Self {
        Self {
            empty: inner.is_end_stream(),
            inner,
            pending: Some(pending),
        }
    }
}

impl<B> AuditBody<B> {
    fn end(self: Pin<&mut Self>, ending: Ending) {
        if let Some(p) = self.project().pending.take() {
            p.complete(ending);
        }
    }
}

impl<B> Body for AuditBody<B>
where
    B: Body<Data = Bytes>,
{
    type Data = Bytes;
    type Error = B::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        let this = self.as_mut().project();
        let polled = this.inner.poll_frame(cx);
        match &polled {
            Poll::Ready(Some(Ok(frame))) => {
                if let (Some(p), Some(d)) = (this.pending.as_mut(), frame.data_ref()) {
                    p.feed(d);
                }
                if self.inner.is_end_stream() {
                    self.end(Ending::Complete);
                }
            }
            Poll::Ready(Some(Err(_))) => self.end(Ending::Failed),
            Poll::Ready(None) => self.end(Ending::Complete),
            Poll::Pending => {}
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}
