//! [`Rechain`]: how the layer hands on a body it read only part of, without reading the rest.

use std::pin::Pin;

use bytes::Bytes;
use futures_util::FutureExt as _;
use http_body_util::{BodyExt as _, Full};
use portcullis_core::body::Prefixed;

/// A body type the layer can rebuild from the bytes it already read and the unread rest.
///
/// A request body over the body cap (and a response of unknown length that turns out over
/// it) is not buffered: the layer reads up to the cap, then passes on a body that yields
/// those bytes and then the rest as it arrives
/// ([`Prefixed`], made by `portcullis_core::body::Collected::into_body`). A generic layer
/// needs a way to turn that back into the service's body type; this is it.
///
/// Implemented for axum's `Body` (feature `axum`, on by default: `Body::new` wraps it, no
/// copy, nothing buffered) and for `http_body_util::Full<Bytes>` (a `Full` body is in memory
/// already, so it is collected at once). For a body type of your own, wrap the prefixed body
/// as it is, e.g. in a boxed variant.
///
/// # Why a trait and not `B: From<Prefixed<B>>`
///
/// Neither `From` nor axum's `Body` belongs to this crate, so the impl for the gateway's body
/// type could only live in `portcullis-core` (owner of `Prefixed`), pulling axum into the crate
/// every layer depends on. A trait of this crate's own can be implemented here for the body
/// types that matter, and by users for theirs.
pub trait Rechain: Sized {
    /// The body yielding `body`'s prefix, then the rest of the original body.
    fn rechain(body: Prefixed<Pin<Box<Self>>>) -> Self;
}

#[cfg(feature = "axum")]
impl Rechain for axum_core::body::Body {
    fn rechain(body: Prefixed<Pin<Box<Self>>>) -> Self {
        Self::new(body)
    }
}

impl Rechain for Full<Bytes> {
    fn rechain(body: Prefixed<Pin<Box<Self>>>) -> Self {
        // Both parts are in memory: the collect is ready at its first poll.
        let bytes = body
            .collect()
            .now_or_never()
            .map(|collected| match collected {
                Ok(c) => c.to_bytes(),
                Err(never) => match never {},
            })
            .unwrap_or_default();
        Full::new(bytes)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_full_body_is_rechained_whole() {
        let rest = Box::pin(Full::new(Bytes::from_static(b"cd")));
        let body = Full::rechain(Prefixed::new(Bytes::from_static(b"ab"), Some(rest)));
        let bytes = body.collect().now_or_never().unwrap().unwrap().to_bytes();
        assert_eq!(&bytes[..], b"abcd");
    }
}
