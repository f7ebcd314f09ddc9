//! [`TranslateBody`]: the response body of [`Translate`](crate::Translate): the upstream's
//! own body, a translated JSON body, or a stream translated event by event.

use std::{
    pin::Pin,
    task::{ready, Context, Poll},
};

use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};
use pin_project_lite::pin_project;
use tower::BoxError;

use crate::{compact::Compacting, store::Pending, StreamTranslator};

pin_project! {
    /// A response body that is passed through, replaced, or translated as it streams.
    #[derive(Debug)]
    pub struct TranslateBody<B> {
        #[pin]
        kind: Kind<B>,
    }
}

pin_project! {
    #[project = KindProj]
    #[derive(Debug)]
    enum Kind<B> {
        Passthrough { #[pin] body: B },
        Full { data: Option<Bytes> },
        Stream {
            #[pin]
            body: B,
            translator: Box<StreamTranslator>,
            ended: bool,
            // Where the answer is kept once complete (a Responses client's, see crate::store).
            pending: Option<Box<Pending>>,
        },
        // A compaction's stream while the model writes the summary (crate::compact).
        Compacting { state: Box<Compacting> },
    }
}

impl<B> TranslateBody<B> {
    /// The upstream's body, untouched.
    pub fn passthrough(body: B) -> Self {
        TranslateBody {
            kind: Kind::Passthrough { body },
        }
    }

    /// A complete body.
    pub fn full(data: Bytes) -> Self {
        TranslateBody {
            kind: Kind::Full {
                data: (!data.is_empty()).then_some(data),
            },
        }
    }

    /// A compaction's stream ([`Compacting`]).
    pub(crate) fn compacting(state: Compacting) -> Self {
        TranslateBody {
            kind: Kind::Compacting {
                state: Box::new(state),
            },
        }
    }

    /// `body`, an SSE stream, translated by `translator` as it arrives.
    pub fn stream(body: B, translator: StreamTranslator) -> Self {
        Self::stream_kept(body, translator, None)
    }

    /// As [`stream`](Self::stream), the completed answer kept by `pending`.
    pub fn stream_kept(
        body: B,
        mut translator: StreamTranslator,
        pending: Option<Pending>,
    ) -> Self {
        if pending.is_some() {
            translator.keep_response();
        }
        TranslateBody {
            kind: Kind::Stream {
                body,
                translator: Box::new(translator),
                ended: false,
                pending: pending.map(Box::new),
            },
        }
    }
}

impl<B> Body for TranslateBody<B>
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
        match self.project().kind.project() {
            KindProj::Passthrough { body } => body.poll_frame(cx).map_err(Into::into),
            KindProj::Full { data } => Poll::Ready(data.take().map(|d| Ok(Frame::data(d)))),
            KindProj::Compacting { state } => {
                state.poll_next(cx).map(|d| d.map(|d| Ok(Frame::data(d))))
            }
            KindProj::Stream {
                mut body,
                translator,
                ended,
                pending,
            } => loop {
                if *ended {
                    return Poll::Ready(None);
                }
                let out = match ready!(body.as_mut().poll_frame(cx)) {
                    Some(Ok(frame)) => match frame.into_data() {
                        Ok(data) => {
                            let out = translator.feed(&data);
                            // The client's stream is complete: stop reading upstream.
                            *ended = translator.is_done();
                            out
                        }
                        Err(_) => continue, // trailers: SSE has none worth translating
                    },
                    Some(Err(e)) => {
                        *ended = true;
                        let e: BoxError = e.into();
                        translator.fail(&format!("the upstream stream failed: {e}"))
                    }
                    None => {
                        *ended = true;
                        translator.finish()
                    }
                };
                if *ended {
                    if let (Some(p), Some(r)) = (pending.take(), translator.take_response()) {
                        p.record(&r);
                    }
                }
                if !out.is_empty() {
                    return Poll::Ready(Some(Ok(Frame::data(out))));
                }
            },
        }
    }

    fn is_end_stream(&self) -> bool {
        match &self.kind {
            Kind::Passthrough { body } => body.is_end_stream(),
            Kind::Full { data } => data.is_none(),
            Kind::Stream { ended, .. } => *ended,
            Kind::Compacting { state } => state.is_done(),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match &self.kind {
            Kind::Passthrough { body } => body.size_hint(),
            Kind::Full { data } => {
                SizeHint::with_exact(data.as_ref().map_or(0, |d| d.len() as u64))
            }
            Kind::Stream { .. } | Kind::Compacting { .. } => SizeHint::default(),
        }
    }
}
