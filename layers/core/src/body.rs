//! Collecting request and response bodies with a size cap, in two modes.
//!
//! - [`collect_limited`]: the whole body or an error. For a layer that cannot go on without
//!   the body (the router needs the `model`), a body over the cap is the caller's mistake.
//! - [`collect_up_to`]: the whole body, or, past the cap, what was read plus the unread
//!   rest ([`Collected::Partial`]). For a layer that would *like* the body but can step aside
//!   without it (a cache), so an over-cap body still goes through, unbuffered:
//!   [`Collected::into_body`] gives a [`Prefixed`] body that yields the prefix, then the rest,
//!   without copying either.

use std::{
    collections::VecDeque,
    pin::Pin,
    task::{ready, Context, Poll},
};

use bytes::{Buf, Bytes, BytesMut};
use http_body::{Body, Frame, SizeHint};
use http_body_util::BodyExt;
use pin_project_lite::pin_project;

/// The request body cap every layer uses unless told otherwise (the gateway's
/// `server.max_body_bytes` default): 10 MiB, well above any chat request, far below what
/// would hurt a process that buffers a few hundred of them at once.
pub const DEFAULT_MAX_BODY_BYTES: usize = 10 * 1024 * 1024;

/// Why a body could not be collected.
#[derive(Debug, thiserror::Error)]
pub enum CollectError {
    /// The body is larger than the limit.
    #[error("body is larger than {limit} bytes")]
    TooLarge {
        /// The limit that was exceeded.
        limit: usize,
    },
    /// Reading the body failed.
    #[error("reading body: {0}")]
    Read(#[source] tower::BoxError),
}

/// Collect `body` into one buffer, failing as soon as it passes `limit` bytes.
///
/// Trailers are dropped. A body that arrives in one chunk (the common case) is returned
/// without a copy.
pub async fn collect_limited<B>(body: B, limit: usize) -> Result<Bytes, CollectError>
where
    B: Body,
    B::Error: Into<tower::BoxError>,
{
    if body.size_hint().lower() > limit as u64 {
        return Err(CollectError::TooLarge { limit });
    }
    let mut body = std::pin::pin!(body);
    let mut acc = Accumulator::default();
    // The same loop as `read_into`'s, written out: calling `read_into` here (one more future
    // nested in every caller's) measured 0.56k-0.65k more instructions per JSON request
    // (callgrind, release build), and every request's body is read through this.
    while let Some(frame) = body.frame().await {
        let frame = frame.map_err(|e| CollectError::Read(e.into()))?;
        let Ok(mut data) = frame.into_data() else {
            continue; // trailers are dropped
        };
        acc.push(data.copy_to_bytes(data.remaining()));
        if acc.len > limit {
            return Err(CollectError::TooLarge { limit });
        }
        // A body that says it has ended is not polled for its `None`: that poll would go
        // through every wrapper of the body (and hyper's channel) to learn nothing.
        if body.is_end_stream() {
            break;
        }
    }
    Ok(acc.finish())
}

/// What [`collect_up_to`] read.
#[derive(Debug)]
pub enum Collected<B> {
    /// The whole body, at most `limit` bytes (trailers dropped).
    Complete(Bytes),
    /// The body is longer than `limit`: `prefix` is what was read (a little more than
    /// `limit`, up to the end of the chunk that crossed it, or nothing when the body's size
    /// hint already said it was too large) and `rest` is the body, positioned after it.
    Partial {
        /// The bytes already read.
        prefix: Bytes,
        /// The unread remainder (trailers included).
        rest: B,
    },
}

impl<B> Collected<B> {
    /// The whole body, if it was within the limit.
    pub fn complete(&self) -> Option<&Bytes> {
        match self {
            Collected::Complete(bytes) => Some(bytes),
            Collected::Partial { .. } => None,
        }
    }

    /// A body that yields everything the original would have: the bytes already read, then
    /// the rest. Nothing is copied.
    pub fn into_body(self) -> Prefixed<B> {
        match self {
            Collected::Complete(bytes) => Prefixed::new(bytes, None),
            Collected::Partial { prefix, rest } => Prefixed::new(prefix, Some(rest)),
        }
    }

    /// Read whatever is left, with no limit, and return the whole body in one buffer.
    ///
    /// Only for a caller that has nothing better to do with an over-cap body than buffer
    /// it (e.g. one that can only rebuild a body `From<Bytes>`); bound it some other way.
    pub async fn into_bytes(self) -> Result<Bytes, CollectError>
    where
        B: Body + Unpin,
        B::Error: Into<tower::BoxError>,
    {
        match self {
            Collected::Complete(bytes) => Ok(bytes),
            Collected::Partial { prefix, mut rest } => {
                let mut acc = Accumulator::default();
                acc.push(prefix);
                read_into(&mut acc, &mut rest, usize::MAX).await?;
                Ok(acc.finish())
            }
        }
    }
}

/// Read `body` up to `limit` bytes: the whole body ([`Collected::Complete`]) or, past the
/// limit, the part read and the rest ([`Collected::Partial`]), so the caller can still pass
/// the body on, unbuffered, with [`Collected::into_body`].
///
/// Only a read failure is an error ([`CollectError::Read`]). A body whose size hint is
/// already over `limit` is not read at all.
pub async fn collect_up_to<B>(mut body: B, limit: usize) -> Result<Collected<B>, CollectError>
where
    B: Body + Unpin,
    B::Error: Into<tower::BoxError>,
{
    if body.size_hint().lower() > limit as u64 {
        return Ok(Collected::Partial {
            prefix: Bytes::new(),
            rest: body,
        });
    }
    let mut acc = Accumulator::default();
    if read_into(&mut acc, &mut body, limit).await? {
        Ok(Collected::Complete(acc.finish()))
    } else {
        Ok(Collected::Partial {
            prefix: acc.finish(),
            rest: body,
        })
    }
}

/// Read data frames into `acc` until the body ends (`true`) or `acc` passes `limit`
/// (`false`). Trailers are skipped.
async fn read_into<B>(
    acc: &mut Accumulator,
    body: &mut B,
    limit: usize,
) -> Result<bool, CollectError>
where
    B: Body + Unpin,
    B::Error: Into<tower::BoxError>,
{
    while let Some(frame) = body.frame().await {
        let frame = frame.map_err(|e| CollectError::Read(e.into()))?;
        let Ok(mut data) = frame.into_data() else {
            continue;
        };
        acc.push(data.copy_to_bytes(data.remaining()));
        if acc.len > limit {
            return Ok(false);
        }
        // Not polled for its `None` once it says it has ended (see `collect_limited`).
        if body.is_end_stream() {
            break;
        }
    }
    Ok(true)
}

/// Chunks read so far. One chunk, the common case, is kept as it came, without a copy.
#[derive(Default)]
struct Accumulator {
    first: Option<Bytes>,
    buf: Option<BytesMut>,
    len: usize,
}

impl Accumulator {
    fn push(&mut self, chunk: Bytes) {
        if chunk.is_empty() {
            return;
        }
        self.len = self.len.saturating_add(chunk.len());
        match (&mut self.first, &mut self.buf) {
            (None, None) => self.first = Some(chunk),
            (Some(f), None) => {
                let mut b = BytesMut::with_capacity(f.len() + chunk.len());
                b.extend_from_slice(f);
                b.extend_from_slice(&chunk);
                self.first = None;
                self.buf = Some(b);
            }
            (_, Some(b)) => b.extend_from_slice(&chunk),
        }
    }

    fn finish(self) -> Bytes {
        match (self.first, self.buf) {
            (_, Some(b)) => b.freeze(),
            (Some(f), None) => f,
            (None, None) => Bytes::new(),
        }
    }
}

pin_project! {
    /// A body made of bytes already read and, optionally, the rest of the body they came
    /// from: yields the prefix as one data frame, then every frame of the rest.
    ///
    /// Made by [`Collected::into_body`].
    #[derive(Debug)]
    pub struct Prefixed<B> {
        prefix: Option<Bytes>,
        #[pin]
        rest: Option<B>,
    }
}

impl<B> Prefixed<B> {
    /// `prefix`, then (if any) every frame of `rest`.
    pub fn new(prefix: Bytes, rest: Option<B>) -> Self {
        Self {
            prefix: (!prefix.is_empty()).then_some(prefix),
            rest,
        }
    }

    /// The prefix and the rest, as given.
    pub fn into_parts(self) -> (Bytes, Option<B>) {
        (self.prefix.unwrap_or_default(), self.rest)
    }
}

impl<B> Body for Prefixed<B>
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
        if let Some(prefix) = this.prefix.take() {
            return Poll::Ready(Some(Ok(Frame::data(prefix))));
        }
        match this.rest.as_pin_mut() {
            Some(rest) => Poll::Ready(ready!(rest.poll_frame(cx))),
            None => Poll::Ready(None),
        }
    }

    fn is_end_stream(&self) -> bool {
        self.prefix.is_none() && self.rest.as_ref().is_none_or(Body::is_end_stream)
    }

    fn size_hint(&self) -> SizeHint {
        let prefix = self.prefix.as_ref().map_or(0, |p| p.len() as u64);
        let mut hint = self
            .rest
            .as_ref()
            .map_or_else(|| SizeHint::with_exact(0), Body::size_hint);
        // Upper first: `set_lower` checks against the old upper bound.
        if let Some(upper) = hint.upper() {
            hint.set_upper(upper.saturating_add(prefix));
        }
        hint.set_lower(hint.lower().saturating_add(prefix));
        hint
    }
}

/// What a body that watches its inner body sends before reading it again: data frames
/// queued (a buffered answer, the events cut from a stream, an error event), then trailers,
/// then an error, in that order. Loop detection's and the tool-call loop's bodies keep one.
#[derive(Debug, Default)]
pub struct Backlog {
    /// Data frames, sent first.
    pub queue: VecDeque<Bytes>,
    /// Trailers met while buffering, sent after the queue.
    pub trailers: Option<http::HeaderMap>,
    /// An error met while buffering, sent last.
    pub error: Option<tower::BoxError>,
}

impl Backlog {
    /// The next frame to send, if anything is left.
    pub fn pop(&mut self) -> Option<Result<Frame<Bytes>, tower::BoxError>> {
        if let Some(data) = self.queue.pop_front() {
            return Some(Ok(Frame::data(data)));
        }
        if let Some(t) = self.trailers.take() {
            return Some(Ok(Frame::trailers(t)));
        }
        self.error.take().map(Err)
    }

    /// Whether a body that sends this backlog, then what is left of `inner` (`None` once it
    /// ended), has ended. While `watching`, the inner body's end may still hold an unfinished
    /// event, sent at the end, so it has not.
    pub fn is_end_stream<B: Body>(&self, inner: Option<&B>, watching: bool) -> bool {
        self.queue.is_empty()
            && self.trailers.is_none()
            && self.error.is_none()
            && inner.is_none_or(|inner| !watching && inner.is_end_stream())
    }

    /// The size of such a body: unknown while `watching` (an event may be cut or added),
    /// else the queue's bytes plus the inner body's hint.
    pub fn size_hint<B: Body>(&self, inner: Option<&B>, watching: bool) -> SizeHint {
        if watching {
            return SizeHint::default();
        }
        let queued: u64 = self.queue.iter().map(|b| b.len() as u64).sum();
        let Some(inner) = inner else {
            return SizeHint::with_exact(queued);
        };
        let h = inner.size_hint();
        let mut out = SizeHint::new();
        out.set_lower(h.lower() + queued);
        if let Some(u) = h.upper() {
            out.set_upper(u + queued);
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http_body_util::{Full, StreamBody};

    #[test]
    fn a_backlog_sends_its_data_then_trailers_then_its_error() {
        let mut trailers = http::HeaderMap::new();
        trailers.insert("x-t", http::HeaderValue::from_static("1"));
        let mut b = Backlog {
            queue: VecDeque::from([Bytes::from_static(b"a"), Bytes::from_static(b"bc")]),
            trailers: Some(trailers),
            error: Some("cut".into()),
        };
        let none: Option<&Full<Bytes>> = None;
        assert!(!b.is_end_stream(none, false));
        assert_eq!(b.size_hint(none, false).exact(), Some(3));
        assert_eq!(
            b.size_hint(none, true).upper(),
            None,
            "unknown while watching"
        );
        let mut kinds = Vec::new();
        while let Some(f) = b.pop() {
            kinds.push(match f {
                Ok(f) if f.is_data() => format!("data {:?}", f.into_data().unwrap()),
                Ok(f) => format!("trailers {:?}", f.into_trailers().unwrap().get("x-t")),
                Err(e) => format!("error {e}"),
            });
        }
        assert_eq!(
            kinds,
            [
                "data b\"a\"",
                "data b\"bc\"",
                "trailers Some(\"1\")",
                "error cut"
            ]
        );
        assert!(b.is_end_stream(none, false));
    }

    #[test]
    fn a_backlog_before_an_inner_body_adds_to_its_size_and_waits_for_its_end() {
        let b = Backlog {
            queue: VecDeque::from([Bytes::from_static(b"abcd")]),
            ..Backlog::default()
        };
        let inner = Full::new(Bytes::from_static(b"xyz"));
        assert_eq!(b.size_hint(Some(&inner), false).exact(), Some(7));
        assert!(!b.is_end_stream(Some(&inner), false));
        let empty = Backlog::default();
        let done = Full::new(Bytes::new());
        assert!(empty.is_end_stream(Some(&done), false));
        // A watched inner body may still hold an event it sends at its end.
        assert!(!empty.is_end_stream(Some(&done), true));
        assert_eq!(empty.size_hint(Some(&inner), false).exact(), Some(3));
    }

    type Chunk = Result<Frame<Bytes>, std::convert::Infallible>;

    fn chunks(
        n: usize,
        chunk: &'static [u8],
    ) -> StreamBody<futures_util::stream::Iter<std::vec::IntoIter<Chunk>>> {
        let items: Vec<Chunk> = (0..n)
            .map(|_| Ok(Frame::data(Bytes::from_static(chunk))))
            .collect();
        StreamBody::new(futures_util::stream::iter(items))
    }

    #[tokio::test]
    async fn collects_and_caps() {
        let b = collect_limited(Full::new(Bytes::from_static(b"hello")), 10)
            .await
            .unwrap();
        assert_eq!(&b[..], b"hello");
        let e = collect_limited(Full::new(Bytes::from_static(b"hello")), 3)
            .await
            .unwrap_err();
        assert!(matches!(e, CollectError::TooLarge { limit: 3 }));
    }

    /// One data frame, then the end: a body that says so, and counts its polls.
    struct Ends {
        data: Option<Bytes>,
        polls: usize,
    }

    impl Body for Ends {
        type Data = Bytes;
        type Error = std::convert::Infallible;

        fn poll_frame(
            mut self: Pin<&mut Self>,
            _: &mut Context<'_>,
        ) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
            self.polls += 1;
            Poll::Ready(self.data.take().map(|d| Ok(Frame::data(d))))
        }

        fn is_end_stream(&self) -> bool {
            self.data.is_none()
        }
    }

    #[tokio::test]
    async fn a_body_that_says_it_ended_is_not_polled_again() {
        let ends = || Ends {
            data: Some(Bytes::from_static(b"whole")),
            polls: 0,
        };
        let mut body = ends();
        let read = collect_limited(&mut body, 10).await.unwrap();
        assert_eq!((&read[..], body.polls), (&b"whole"[..], 1));
        let mut body = ends();
        let read = collect_up_to(&mut body, 10).await.unwrap();
        assert_eq!(read.complete().map(|b| &b[..]), Some(&b"whole"[..]));
        assert_eq!(body.polls, 1);
        // Over the limit, it is still a partial read.
        let mut body = ends();
        assert!(collect_up_to(&mut body, 3)
            .await
            .unwrap()
            .complete()
            .is_none());
    }

    #[tokio::test]
    async fn caps_streams_without_size_hint() {
        let e = collect_limited(chunks(10, b"abcd"), 20).await.unwrap_err();
        assert!(matches!(e, CollectError::TooLarge { .. }));
        let b = collect_limited(chunks(3, b"abcd"), 20).await.unwrap();
        assert_eq!(&b[..], b"abcdabcdabcd");
    }

    #[tokio::test]
    async fn up_to_returns_a_body_within_the_limit_whole() {
        let c = collect_up_to(chunks(3, b"abcd"), 12).await.unwrap();
        assert_eq!(c.complete().map(|b| &b[..]), Some(&b"abcdabcdabcd"[..]));
        let one = Bytes::from_static(b"single chunk");
        let c = collect_up_to(Full::new(one.clone()), 100).await.unwrap();
        // One chunk is kept as it came: the same allocation, no copy.
        assert_eq!(c.complete().unwrap().as_ptr(), one.as_ptr());
    }

    #[tokio::test]
    async fn up_to_stops_past_the_limit_and_keeps_the_rest() {
        let c = collect_up_to(chunks(10, b"abcd"), 6).await.unwrap();
        let Collected::Partial { prefix, rest } = c else {
            panic!("expected a partial read");
        };
        assert_eq!(
            &prefix[..],
            b"abcdabcd",
            "stops at the chunk that crosses the limit"
        );
        let rest = rest.collect().await.unwrap().to_bytes();
        assert_eq!(rest.len(), 32, "the rest is unread");
    }

    #[tokio::test]
    async fn up_to_trusts_a_size_hint_over_the_limit() {
        let c = collect_up_to(Full::new(Bytes::from_static(b"0123456789")), 4)
            .await
            .unwrap();
        let Collected::Partial { prefix, rest } = c else {
            panic!("expected a partial read");
        };
        assert!(prefix.is_empty());
        assert_eq!(rest.size_hint().exact(), Some(10));
    }

    #[tokio::test]
    async fn a_partial_read_rechains_into_the_original_body() {
        for limit in [0, 3, 4, 5, 39, 40, 41] {
            let c = collect_up_to(chunks(10, b"abcd"), limit).await.unwrap();
            let whole = c.into_body().collect().await.unwrap().to_bytes();
            assert_eq!(whole, "abcd".repeat(10).as_bytes(), "limit {limit}");
        }
        let c = collect_up_to(chunks(10, b"abcd"), 6).await.unwrap();
        let body = c.into_body();
        assert_eq!(body.size_hint().lower(), 8, "the prefix counts in the hint");
        let c = collect_up_to(chunks(10, b"abcd"), 6).await.unwrap();
        assert_eq!(
            &c.into_bytes().await.unwrap()[..],
            "abcd".repeat(10).as_bytes()
        );
    }

    #[tokio::test]
    async fn prefixed_bodies_end() {
        let b: Prefixed<Full<Bytes>> = Prefixed::new(Bytes::new(), None);
        assert!(b.is_end_stream());
        assert_eq!(b.size_hint().exact(), Some(0));
        let b = Prefixed::new(
            Bytes::from_static(b"ab"),
            Some(Full::new(Bytes::from_static(b"cd"))),
        );
        assert!(!b.is_end_stream());
        assert_eq!(b.size_hint().exact(), Some(4));
        assert_eq!(&b.collect().await.unwrap().to_bytes()[..], b"abcd");
    }

    #[tokio::test]
    async fn read_errors_are_reported() {
        let items: Vec<Result<Frame<Bytes>, std::io::Error>> = vec![
            Ok(Frame::data(Bytes::from_static(b"ab"))),
            Err(std::io::Error::other("gone")),
        ];
        let body = StreamBody::new(futures_util::stream::iter(items));
        let e = collect_up_to(body, 100).await.unwrap_err();
        assert!(matches!(e, CollectError::Read(_)), "{e}");
    }
}
