//! Errors that cross layer boundaries.
//!
//! Each layer defines its own error types; the few here are read by more than one layer
//! (the retry layer must not retry an open breaker, the router fails over on it).

use std::time::Duration;

/// The circuit breaker in front of an upstream is open: the call was not made.
#[derive(Debug, Clone, thiserror::Error)]
#[error("circuit breaker for upstream {upstream:?} is open; retry in {retry_after:?}")]
pub struct CircuitOpen {
    /// The upstream whose breaker is open.
    pub upstream: String,
    /// How long until the breaker lets a probe through.
    pub retry_after: Duration,
}

/// Find an error of type `E` anywhere in `err`'s source chain.
pub fn find_in_chain<'a, E: std::error::Error + 'static>(
    err: &'a (dyn std::error::Error + 'static),
) -> Option<&'a E> {
    let mut cur: Option<&(dyn std::error::Error + 'static)> = Some(err);
    while let Some(e) = cur {
        if let Some(found) = e.downcast_ref::<E>() {
            return Some(found);
        }
        cur = e.source();
    }
    None
}
