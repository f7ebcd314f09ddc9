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

// === Refusals: a layer's "no" that the edge renders without knowing the layer ===

/// What a layer's refusal of a request means over HTTP: its status, a stable
/// `x-portcullis-error` code, the headers that go with it (`Retry-After`, limit headers) and
/// the typed outcomes it stands for (the access log and metrics read those).
///
/// A layer that refuses a request returns its own typed error wrapped in [`Refused`]; the
/// gateway's edge finds the `Refused` in the error chain and renders it in the caller's API
/// shape, so adding a layer with a new failure mode needs no change at the edge. The typed
/// error stays findable with [`find_in_chain`].
pub trait Refusal: std::error::Error + Send + Sync + 'static {
    /// The HTTP status.
    fn status(&self) -> http::StatusCode;
    /// The `x-portcullis-error` code (interface.md's table), e.g. `rate_limited`.
    fn code(&self) -> &'static str;
    /// Headers for the response (e.g. `Retry-After`); none by default.
    fn headers(&self) -> http::HeaderMap {
        http::HeaderMap::new()
    }
    /// Typed outcomes for the response's extensions; none by default.
    fn outcomes(&self, _extensions: &mut http::Extensions) {}
}

/// A layer's refusal, boxed for the edge: see [`Refusal`]. `source()` is the layer's own
/// typed error.
#[derive(Debug)]
pub struct Refused(Box<dyn Refusal>);

impl Refused {
    /// Wrap a refusal.
    pub fn new(refusal: impl Refusal) -> Self {
        Self(Box::new(refusal))
    }

    /// Wrap a refusal and box it as a `tower::BoxError`.
    pub fn boxed(refusal: impl Refusal) -> tower::BoxError {
        Box::new(Self::new(refusal))
    }

    /// The refusal.
    pub fn refusal(&self) -> &dyn Refusal {
        &*self.0
    }
}

impl std::fmt::Display for Refused {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        std::fmt::Display::fmt(&self.0, f)
    }
}

impl std::error::Error for Refused {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        Some(&*self.0)
    }
}

impl Refusal for CircuitOpen {
    fn status(&self) -> http::StatusCode {
        http::StatusCode::SERVICE_UNAVAILABLE
    }
    fn code(&self) -> &'static str {
        "circuit_open"
    }
    fn headers(&self) -> http::HeaderMap {
        retry_after_header(self.retry_after)
    }
    fn outcomes(&self, extensions: &mut http::Extensions) {
        extensions.insert(crate::BreakerState::Open);
    }
}

/// `Retry-After` in whole seconds, rounded up, at least 1.
pub fn retry_after_header(d: Duration) -> http::HeaderMap {
    let secs = d.as_secs() + u64::from(d.subsec_nanos() > 0);
    let mut h = http::HeaderMap::with_capacity(1);
    h.insert(
        http::header::RETRY_AFTER,
        crate::headers::int_value(secs.max(1)),
    );
    h
}

#[cfg(test)]
mod refusal_tests {
    use super::*;

    #[test]
    fn the_typed_error_stays_findable_and_the_refusal_renders() {
        let e = Refused::boxed(CircuitOpen {
            upstream: "u".into(),
            retry_after: Duration::from_millis(1500),
        });
        let open = find_in_chain::<CircuitOpen>(&*e).expect("typed error in the chain");
        assert_eq!(open.upstream, "u");
        let r = find_in_chain::<Refused>(&*e).unwrap().refusal();
        assert_eq!(r.status(), 503);
        assert_eq!(r.code(), "circuit_open");
        assert_eq!(r.headers()["retry-after"], "2");
        let mut ext = http::Extensions::new();
        r.outcomes(&mut ext);
        assert_eq!(
            ext.get::<crate::BreakerState>(),
            Some(&crate::BreakerState::Open)
        );
        assert_eq!(e.to_string(), open.to_string());
    }
}
