//! Errors the dedup/cache layer returns.

use std::{error::Error, fmt, sync::Arc};

/// The shared upstream call failed: every request waiting on it (the leader and its followers)
/// gets a clone of this.
///
/// The original error is kept, not just its message: `source()` returns it, so
/// `portcullis_core::error::find_in_chain` still finds e.g. a `CircuitOpen` or a timeout in it
/// and the edge answers each waiter as it would have answered the leader.
#[derive(Clone)]
pub struct SharedError {
    inner: Arc<dyn Error + Send + Sync + 'static>,
}

impl SharedError {
    pub(crate) fn new(inner: Arc<dyn Error + Send + Sync + 'static>) -> Self {
        Self { inner }
    }

    /// The error the inner service returned.
    pub fn inner(&self) -> &(dyn Error + Send + Sync + 'static) {
        &*self.inner
    }
}

impl fmt::Debug for SharedError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("SharedError").field(&self.inner).finish()
    }
}

impl fmt::Display for SharedError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "shared upstream call failed: {}", self.inner)
    }
}

impl Error for SharedError {
    fn source(&self) -> Option<&(dyn Error + 'static)> {
        // Not `Some(&self.inner)`: `Arc<E>`'s own `Error` impl would hide `E` from downcasts.
        Some(&*self.inner)
    }
}

/// The shared upstream call ended without a result (its task panicked, or the runtime shut
/// down under it).
#[derive(Debug, Clone, thiserror::Error)]
#[error("the shared upstream call ended without a result")]
pub struct SharedCallLost;

/// Reading the request body failed (the client went away, or sent a broken body).
#[derive(Debug, thiserror::Error)]
#[error("reading the request body: {0}")]
pub struct RequestBodyError(#[source] pub tower::BoxError);

/// Reading the upstream's response body failed while the layer buffered it.
#[derive(Debug, thiserror::Error)]
#[error("reading the response body: {0}")]
pub struct ResponseBodyError(#[source] pub tower::BoxError);

#[cfg(test)]
mod tests {
    use super::*;
    use portcullis_core::{error::find_in_chain, CircuitOpen};
    use std::time::Duration;

    #[test]
    fn typed_errors_stay_findable_through_the_share() {
        let original: tower::BoxError = Box::new(CircuitOpen {
            upstream: "openai".into(),
            retry_after: Duration::from_secs(7),
        });
        let shared = SharedError::new(Arc::from(original));
        let follower = shared.clone();
        let boxed: tower::BoxError = Box::new(follower);
        let found = find_in_chain::<CircuitOpen>(&*boxed).expect("found through source()");
        assert_eq!(found.retry_after, Duration::from_secs(7));
        assert!(boxed.to_string().contains("openai"), "{boxed}");
    }
}
