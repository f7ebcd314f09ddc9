//! [`CommandsBody`]: the inner service's body, or the gateway's own answer.

use std::{
    pin::Pin,
    task::{Context, Poll},
};

use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};
use pin_project_lite::pin_project;

pin_project! {
    /// The response body of [`Commands`](crate::Commands): the inner service's, untouched, or
    /// the answer to a command (one data frame).
    #[derive(Debug)]
    pub struct CommandsBody<B> {
        #[pin]
        inner: Option<B>,
        answer: Option<Bytes>,
    }
}

impl<B> CommandsBody<B> {
    pub(crate) fn inner(body: B) -> Self {
        Self {
            inner: Some(body),
            answer: None,
        }
    }

    pub(crate) fn answer(data: Bytes) -> Self {
        Self {
            inner: None,
            answer: (!data.is_empty()).then_some(data),
        }
    }

    /// Whether the gateway answered (a command) rather than the inner service.
    pub fn is_answer(&self) -> bool {
        self.inner.is_none()
    }
}

impl<B> Body for CommandsBody<B>
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
        match this.inner.as_pin_mut() {
            Some(body) => body.poll_frame(cx),
            None => Poll::Ready(this.answer.take().map(|d| Ok(Frame::data(d)))),
        }
    }

    fn is_end_stream(&self) -> bool {
        match &self.inner {
            Some(body) => body.is_end_stream(),
            None => self.answer.is_none(),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match &self.inner {
            Some(body) => body.size_hint(),
            None => SizeHint::with_exact(self.answer.as_ref().map_or(0, |d| d.len() as u64)),
        }
    }
}
