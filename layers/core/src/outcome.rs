//! What each layer decided about a request, as typed extensions.
//!
//! A layer inserts its outcome into the extensions of the response it returns, so the
//! binary's access log and metrics read `response.extensions().get::<CacheOutcome>()`
//! instead of parsing the layer's headers back. Where a layer fails the request instead, its
//! error type says what happened (see each type's docs for where to find it then).

use std::{fmt, sync::Arc, time::Duration};

use http::HeaderValue;
use serde::Serialize;

/// What the dedup/cache layer did with a request; also its `x-portcullis-cache` header.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum CacheOutcome {
    /// This request made the upstream call (alone, or as the leader of identical ones).
    Miss,
    /// Replayed from the cache; no upstream call.
    Hit,
    /// Shared the upstream call of an identical request in flight.
    Coalesced,
    /// The layer stepped aside (not cacheable, streaming, too large, asked not to).
    Bypass,
}

impl CacheOutcome {
    /// `miss`, `hit`, `coalesced` or `bypass`: the `x-portcullis-cache` value.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Miss => "miss",
            Self::Hit => "hit",
            Self::Coalesced => "coalesced",
            Self::Bypass => "bypass",
        }
    }

    /// The value for the `x-portcullis-cache` header.
    pub fn header_value(self) -> HeaderValue {
        HeaderValue::from_static(self.as_str())
    }
}

impl fmt::Display for CacheOutcome {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// What the rate limiter decided about a request that it let through.
///
/// A refused request has no response to carry this: the limiter fails it with its own error
/// (`portcullis_rate_limit::RateLimited`, found with
/// [`find_in_chain`](crate::error::find_in_chain)), which stands for [`Self::Limited`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum RateLimitOutcome {
    /// Let through at once.
    Allowed,
    /// Let through after waiting this long for a slot (`queue_timeout > 0`).
    Queued(Duration),
    /// Refused.
    Limited,
}

impl RateLimitOutcome {
    /// `allowed`, `queued` or `limited`, for logs and metric labels.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Allowed => "allowed",
            Self::Queued(_) => "queued",
            Self::Limited => "limited",
        }
    }
}

impl fmt::Display for RateLimitOutcome {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Queued(waited) => write!(f, "queued {}ms", waited.as_millis()),
            other => f.write_str(other.as_str()),
        }
    }
}

/// Where a circuit breaker stood for a request: the state it was admitted in.
///
/// On a response: `Closed` (an ordinary call) or `HalfOpen` (the call was a probe). A
/// request the breaker refused fails with [`CircuitOpen`](crate::CircuitOpen) instead, which
/// stands for `Open` (or for a half-open breaker whose one probe is already in flight).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum BreakerState {
    /// Calls go through; failures are counted.
    Closed,
    /// Calls fail fast until `open_timeout` has passed.
    Open,
    /// Probes are let through one at a time; everything else fails fast.
    HalfOpen,
}

impl BreakerState {
    /// `"closed"`, `"open"` or `"half_open"` (as in `/health/upstreams`).
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Closed => "closed",
            Self::Open => "open",
            Self::HalfOpen => "half_open",
        }
    }
}

impl fmt::Display for BreakerState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Upstream attempts made for a request (the `x-portcullis-attempts` header): `0` for an
/// answer that never reached an upstream (a cache hit).
///
/// The retry layer inserts it on the response it returns; when it gives up with an error,
/// the error (`portcullis_retry::Attempted`) carries the same count.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct Attempts(pub u32);

/// Where a request went: the model asked for, the `[[models]]` entry it matched, the upstream
/// that answered, the attempts made. Inserted by the gateway's model router on the response
/// (and on an error response, by the edge); read by the access log and metrics.
#[derive(Debug, Clone)]
pub struct RouteInfo {
    /// The model the client asked for.
    pub model: Arc<str>,
    /// The `[[models]]` entry it matched (a configured name: the metrics label).
    pub entry: Option<Arc<str>>,
    /// The upstream that answered.
    pub upstream: Arc<str>,
    /// Upstream attempts made.
    pub attempts: u32,
    /// The memory user id, when memory routing chose one.
    pub user_id: Option<Arc<str>>,
}

/// The `x-portcullis-error` code of a response the gateway made itself (e.g.
/// `rate_limited`), for logs and metrics.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ErrorCode(pub &'static str);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_match_the_headers_and_health_endpoint() {
        let all = [
            CacheOutcome::Miss,
            CacheOutcome::Hit,
            CacheOutcome::Coalesced,
            CacheOutcome::Bypass,
        ];
        let names: Vec<_> = all.iter().map(|o| o.as_str()).collect();
        assert_eq!(names, ["miss", "hit", "coalesced", "bypass"]);
        assert_eq!(CacheOutcome::Hit.header_value(), "hit");
        assert_eq!(BreakerState::HalfOpen.to_string(), "half_open");
        assert_eq!(
            RateLimitOutcome::Queued(Duration::from_millis(1500)).to_string(),
            "queued 1500ms"
        );
        assert_eq!(RateLimitOutcome::Limited.as_str(), "limited");
    }
}
