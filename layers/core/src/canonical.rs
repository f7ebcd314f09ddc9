//! A request body's canonical JSON form, handed from a layer that has parsed the body to one
//! that needs that form.
//!
//! The dedup cache keys requests on their body "up to key order and whitespace": its key
//! hashes the canonical form (members in key order at every depth, no whitespace, strings
//! and numbers as `serde_json` writes them). Writing that form means walking the whole body,
//! which the validation layer, earlier in the stack, has just done. With
//! `ValidationLayer::with_canonical_body` it writes the form from the tree it built and
//! leaves it on the request as a [`CanonicalBody`]; the dedup cache takes it instead of
//! walking the body a second time. A conversation of 100 KB is then walked once, not twice.
//!
//! The form belongs to the exact body it was made from. A layer between the two that
//! replaces the body (the in-chat commands may rewrite it) makes it stale, and
//! [`CanonicalBody::of`] says so: it compares the body's bytes by where they are in memory
//! (the extension keeps them alive, so no other body can be there), never by content.

use std::sync::Arc;

use bytes::Bytes;

/// The canonical JSON form of one request body (see the module docs). Cheap to clone.
#[derive(Clone)]
pub struct CanonicalBody(Arc<(Bytes, Vec<u8>)>);

impl CanonicalBody {
    /// `canonical`, the canonical form of `body`.
    pub fn new(body: Bytes, canonical: Vec<u8>) -> Self {
        Self(Arc::new((body, canonical)))
    }

    /// The canonical form, if it was made from this very `body` (the same bytes in memory,
    /// as a body passed on unchanged is); `None` for any other, equal or not.
    ///
    /// ```
    /// use bytes::Bytes;
    /// use portcullis_core::CanonicalBody;
    ///
    /// let text = br#"{ "b": 1, "a": 2 }"#;
    /// let body = Bytes::copy_from_slice(text);
    /// let canonical = CanonicalBody::new(body.clone(), br#"{"a":2,"b":1}"#.to_vec());
    /// assert_eq!(canonical.of(&body), Some(&br#"{"a":2,"b":1}"#[..]));
    /// assert_eq!(canonical.of(&body.slice(..)), Some(&br#"{"a":2,"b":1}"#[..]));
    /// // The same text in another buffer is another body: a layer made it.
    /// assert_eq!(canonical.of(&Bytes::copy_from_slice(text)), None);
    /// ```
    pub fn of(&self, body: &Bytes) -> Option<&[u8]> {
        let (from, canonical) = &*self.0;
        (from.as_ptr() == body.as_ptr() && from.len() == body.len()).then_some(&canonical[..])
    }
}

impl std::fmt::Debug for CanonicalBody {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // The text is a request's: its length only.
        f.debug_struct("CanonicalBody")
            .field("len", &self.0 .1.len())
            .finish_non_exhaustive()
    }
}
