//! Collecting bodies with a size cap.

use bytes::{Buf, Bytes, BytesMut};
use http_body::Body;
use http_body_util::BodyExt;

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
pub async fn collect_limited<B>(body: B, limit: usize) -> Result<Bytes, CollectError>
where
    B: Body,
    B::Error: Into<tower::BoxError>,
{
    if let Some(upper) = body.size_hint().upper() {
        if upper > limit as u64 {
            return Err(CollectError::TooLarge { limit });
        }
    }
    let mut body = std::pin::pin!(body);
    let mut first: Option<Bytes> = None;
    let mut buf: Option<BytesMut> = None;
    let mut len = 0usize;
    while let Some(frame) = body.frame().await {
        let frame = frame.map_err(|e| CollectError::Read(e.into()))?;
        let Ok(mut data) = frame.into_data() else {
            continue; // trailers are dropped
        };
        let chunk = data.copy_to_bytes(data.remaining());
        len += chunk.len();
        if len > limit {
            return Err(CollectError::TooLarge { limit });
        }
        // Single-chunk bodies (the common case) are returned without copying.
        match (&mut first, &mut buf) {
            (None, None) => first = Some(chunk),
            (Some(f), None) => {
                let mut b = BytesMut::with_capacity(f.len() + chunk.len());
                b.extend_from_slice(f);
                b.extend_from_slice(&chunk);
                first = None;
                buf = Some(b);
            }
            (_, Some(b)) => b.extend_from_slice(&chunk),
        }
    }
    Ok(match (first, buf) {
        (_, Some(b)) => b.freeze(),
        (Some(f), None) => f,
        (None, None) => Bytes::new(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use http_body_util::{Full, StreamBody};

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

    #[tokio::test]
    async fn caps_streams_without_size_hint() {
        let chunks = (0..10).map(|_| {
            Ok::<_, std::convert::Infallible>(http_body::Frame::data(Bytes::from_static(b"abcd")))
        });
        let body = StreamBody::new(futures_stream(chunks.collect()));
        let e = collect_limited(body, 20).await.unwrap_err();
        assert!(matches!(e, CollectError::TooLarge { .. }));
        let chunks = (0..3).map(|_| {
            Ok::<_, std::convert::Infallible>(http_body::Frame::data(Bytes::from_static(b"abcd")))
        });
        let b = collect_limited(StreamBody::new(futures_stream(chunks.collect())), 20)
            .await
            .unwrap();
        assert_eq!(&b[..], b"abcdabcdabcd");
    }

    fn futures_stream<T>(items: Vec<T>) -> impl futures_util::Stream<Item = T> {
        futures_util::stream::iter(items)
    }
}
