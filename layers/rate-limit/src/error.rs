//! The error a request over its limit fails with, and the headers that describe a limit.

use std::time::Duration;

use http::{header::RETRY_AFTER, HeaderMap, HeaderName};
use portcullis_core::{error::Refusal, headers::int_value, RateLimitOutcome};

use crate::Decision;

/// `x-ratelimit-limit`: the bucket's capacity (the configured burst).
pub const X_RATELIMIT_LIMIT: HeaderName = HeaderName::from_static("x-ratelimit-limit");
/// `x-ratelimit-remaining`: requests that may still be sent at once.
pub const X_RATELIMIT_REMAINING: HeaderName = HeaderName::from_static("x-ratelimit-remaining");
/// `x-ratelimit-reset`: whole seconds until the bucket is full again.
pub const X_RATELIMIT_RESET: HeaderName = HeaderName::from_static("x-ratelimit-reset");

/// The request is over its rate limit (and could not be queued): answer 429 `rate_limited`.
///
/// The binary renders it in the caller's API shape and adds [`RateLimited::headers`] so
/// every 429 carries the same `Retry-After` and `x-ratelimit-*` headers. It is the
/// [`RateLimitOutcome::Limited`] outcome: a refused request has no response to carry the
/// extension, so the edge finds this error with `portcullis_core::error::find_in_chain`
/// (see [`RateLimited::outcome`]).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("rate limit exceeded; retry in {}s", secs_ceil(*retry_after))]
pub struct RateLimited {
    /// How long until this request would be let through.
    pub retry_after: Duration,
    /// The bucket's capacity (the configured burst).
    pub limit: u32,
    /// Requests that may still be sent at once (0 when limited).
    pub remaining: u32,
    /// How long until the bucket is full again.
    pub reset_after: Duration,
}

impl RateLimited {
    /// The refusal a denied [`Decision`] stands for.
    pub fn from_decision(d: &Decision) -> Self {
        Self {
            retry_after: d.retry_after,
            limit: d.limit,
            remaining: d.remaining,
            reset_after: d.reset_after,
        }
    }

    /// The outcome this refusal stands for: always [`RateLimitOutcome::Limited`].
    pub fn outcome(&self) -> RateLimitOutcome {
        RateLimitOutcome::Limited
    }

    /// `Retry-After` (whole seconds, rounded up, at least 1) and the `x-ratelimit-*` headers.
    pub fn headers(&self) -> HeaderMap {
        let mut h = HeaderMap::with_capacity(4);
        h.insert(RETRY_AFTER, int_value(secs_ceil(self.retry_after).max(1)));
        insert_limit_headers(&mut h, self.limit, self.remaining, self.reset_after);
        h
    }
}

impl Refusal for RateLimited {
    fn status(&self) -> http::StatusCode {
        http::StatusCode::TOO_MANY_REQUESTS
    }
    fn code(&self) -> &'static str {
        "rate_limited"
    }
    fn headers(&self) -> HeaderMap {
        RateLimited::headers(self)
    }
    fn outcomes(&self, extensions: &mut http::Extensions) {
        extensions.insert(self.outcome());
    }
}

/// Add `x-ratelimit-limit`, `x-ratelimit-remaining` and `x-ratelimit-reset` to `headers`.
pub fn insert_limit_headers(headers: &mut HeaderMap, limit: u32, remaining: u32, reset: Duration) {
    headers.insert(X_RATELIMIT_LIMIT, int_value(limit));
    headers.insert(X_RATELIMIT_REMAINING, int_value(remaining));
    headers.insert(X_RATELIMIT_RESET, int_value(secs_ceil(reset)));
}

/// Whole seconds, rounded up: a client that waits this long is never early.
pub(crate) fn secs_ceil(d: Duration) -> u64 {
    d.as_secs() + u64::from(d.subsec_nanos() > 0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn headers_round_up_and_retry_after_is_at_least_one() {
        let e = RateLimited {
            retry_after: Duration::from_millis(1),
            limit: 10,
            remaining: 0,
            reset_after: Duration::from_millis(9_001),
        };
        let h = e.headers();
        assert_eq!(h[RETRY_AFTER], "1");
        assert_eq!(h[X_RATELIMIT_LIMIT], "10");
        assert_eq!(h[X_RATELIMIT_REMAINING], "0");
        assert_eq!(h[X_RATELIMIT_RESET], "10");

        let e = RateLimited {
            retry_after: Duration::ZERO,
            ..e
        };
        assert_eq!(e.headers()[RETRY_AFTER], "1");
        let e = RateLimited {
            retry_after: Duration::from_secs(6),
            ..e
        };
        assert_eq!(e.headers()[RETRY_AFTER], "6");
        assert_eq!(e.to_string(), "rate limit exceeded; retry in 6s");
    }
}
