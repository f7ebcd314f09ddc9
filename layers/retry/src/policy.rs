//! The pure parts of the retry decision: which responses are retried, how long to wait.

use std::time::{Duration, SystemTime};

use http::{HeaderMap, StatusCode};
use rand::Rng;

use crate::Config;

/// How much of a 429 body is read to tell "out of quota" from "slow down": quota errors are
/// a few hundred bytes of JSON.
pub(crate) const QUOTA_PEEK_BYTES: usize = 64 * 1024;

/// The wait an upstream asked for, from its response headers, or `None` if it asked for none
/// (or wrote something unreadable).
///
/// In order of precedence:
/// - `retry-after-ms: 1500.5`: milliseconds, a non-negative decimal (OpenAI, Azure);
/// - `Retry-After: 2`: seconds, a non-negative integer (a decimal is accepted too);
/// - `Retry-After: Wed, 21 Oct 2015 07:28:00 GMT`: an HTTP date, counted from `now`;
///   a date in the past means "now" (`Duration::ZERO`).
///
/// A header that does not parse is ignored, and the next form is tried.
pub fn parse_retry_after(headers: &HeaderMap, now: SystemTime) -> Option<Duration> {
    let ms = headers
        .get("retry-after-ms")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| non_negative_secs(v.trim().parse::<f64>().ok()? / 1000.0));
    if ms.is_some() {
        return ms;
    }
    let value = headers
        .get(http::header::RETRY_AFTER)?
        .to_str()
        .ok()?
        .trim();
    if let Ok(secs) = value.parse::<u64>() {
        return Some(Duration::from_secs(secs));
    }
    if let Some(d) = value.parse::<f64>().ok().and_then(non_negative_secs) {
        return Some(d);
    }
    let date = httpdate::parse_http_date(value).ok()?;
    Some(date.duration_since(now).unwrap_or(Duration::ZERO))
}

fn non_negative_secs(secs: f64) -> Option<Duration> {
    // try_from_secs_f64 also rejects NaN, infinities and values too large for a Duration.
    if secs < 0.0 {
        return None;
    }
    Duration::try_from_secs_f64(secs).ok()
}

/// The longest backoff after failed attempt number `attempt` (1-based):
/// `min(max_delay, base_delay * 2^(attempt - 1))`.
pub(crate) fn backoff_cap(base: Duration, max: Duration, attempt: u32) -> Duration {
    2u32.checked_pow(attempt.saturating_sub(1))
        .and_then(|factor| base.checked_mul(factor))
        .map_or(max, |d| d.min(max))
}

/// "Full jitter": a uniform wait in `[0, cap]`, so clients that failed together do not
/// retry together.
pub(crate) fn full_jitter<R: Rng + ?Sized>(cap: Duration, rng: &mut R) -> Duration {
    let cap_nanos = u64::try_from(cap.as_nanos()).unwrap_or(u64::MAX);
    Duration::from_nanos(rng.random_range(0..=cap_nanos))
}

/// The jittered backoff after failed attempt number `attempt`.
pub(crate) fn backoff(config: &Config, attempt: u32) -> Duration {
    full_jitter(
        backoff_cap(config.base_delay, config.max_delay, attempt),
        &mut rand::rng(),
    )
}

/// `x-should-retry: true|false`, the upstream's own verdict (OpenAI and Anthropic send it).
fn should_retry_header(headers: &HeaderMap) -> Option<bool> {
    // Named once: a name given as text is parsed at each lookup.
    static X_SHOULD_RETRY: http::HeaderName = http::HeaderName::from_static("x-should-retry");
    let v = headers.get(&X_SHOULD_RETRY)?.to_str().ok()?.trim();
    if v.eq_ignore_ascii_case("true") {
        Some(true)
    } else if v.eq_ignore_ascii_case("false") {
        Some(false)
    } else {
        None
    }
}

/// Whether a response with this status and these headers may be retried (before attempts,
/// `Retry-After`, budget and quota are considered).
///
/// `x-should-retry: false` always wins. `x-should-retry: true` adds statuses the OpenAI SDK
/// would retry (408, 409, 429 and every 5xx) even when they are not in `retry_on`; it never
/// makes a success, a redirect or another 4xx retryable, because repeating those cannot
/// change the answer.
pub(crate) fn status_is_retryable(
    config: &Config,
    status: StatusCode,
    headers: &HeaderMap,
) -> bool {
    let code = status.as_u16();
    // Almost every answer: a status below 400 that `retry_on` does not name is retryable
    // whatever `x-should-retry` says, so the header is not looked up (a config validated by
    // `Config::validate` names only 400..=599).
    if code < 400 && !config.retry_on.contains(&code) {
        return false;
    }
    by_the_header_rules(config, status, headers)
}

/// [`status_is_retryable`]'s rules in full, with `x-should-retry` always looked up.
fn by_the_header_rules(config: &Config, status: StatusCode, headers: &HeaderMap) -> bool {
    let code = status.as_u16();
    match should_retry_header(headers) {
        Some(false) => false,
        Some(true) => {
            matches!(code, 408 | 409 | 429)
                || status.is_server_error()
                || config.retry_on.contains(&code)
        }
        None => config.retry_on.contains(&code),
    }
}

/// Whether a 429 body says the account is out of credit (`insufficient_quota`): that is
/// billing, not load, and no retry will fix it.
pub(crate) fn is_insufficient_quota(body: &[u8]) -> bool {
    let Ok(json) = serde_json::from_slice::<serde_json::Value>(body) else {
        return false;
    };
    let error = &json["error"];
    ["code", "type"]
        .iter()
        .any(|k| error[k].as_str() == Some("insufficient_quota"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::HeaderValue;
    use proptest::prelude::*;
    use rand::{rngs::StdRng, SeedableRng};

    fn headers(pairs: &[(&'static str, &'static str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.append(*k, HeaderValue::from_static(v));
        }
        h
    }

    #[test]
    fn retry_after_seconds() {
        let now = SystemTime::now();
        let h = headers(&[("retry-after", "7")]);
        assert_eq!(parse_retry_after(&h, now), Some(Duration::from_secs(7)));
        let h = headers(&[("retry-after", " 0 ")]);
        assert_eq!(parse_retry_after(&h, now), Some(Duration::ZERO));
        let h = headers(&[("retry-after", "1.5")]);
        assert_eq!(
            parse_retry_after(&h, now),
            Some(Duration::from_millis(1500))
        );
    }

    #[test]
    fn retry_after_http_date() {
        let now = httpdate::parse_http_date("Wed, 21 Oct 2015 07:28:00 GMT").unwrap();
        let h = headers(&[("retry-after", "Wed, 21 Oct 2015 07:28:42 GMT")]);
        assert_eq!(parse_retry_after(&h, now), Some(Duration::from_secs(42)));
        // A date already past means: retry now.
        let h = headers(&[("retry-after", "Wed, 21 Oct 2015 07:00:00 GMT")]);
        assert_eq!(parse_retry_after(&h, now), Some(Duration::ZERO));
    }

    #[test]
    fn retry_after_ms_wins() {
        let now = SystemTime::now();
        let h = headers(&[("retry-after-ms", "250.5"), ("retry-after", "9")]);
        assert_eq!(
            parse_retry_after(&h, now),
            Some(Duration::from_micros(250_500))
        );
        // An unreadable retry-after-ms falls back to Retry-After.
        let h = headers(&[("retry-after-ms", "soon"), ("retry-after", "9")]);
        assert_eq!(parse_retry_after(&h, now), Some(Duration::from_secs(9)));
    }

    #[test]
    fn retry_after_garbage_is_ignored() {
        let now = SystemTime::now();
        for v in ["soon", "-3", "NaN", "inf", "", "1e400", "Wed, 99 Foo 2015"] {
            let h = headers(&[("retry-after", v)]);
            assert_eq!(parse_retry_after(&h, now), None, "retry-after: {v:?}");
            let h = headers(&[("retry-after-ms", v)]);
            assert_eq!(parse_retry_after(&h, now), None, "retry-after-ms: {v:?}");
        }
        assert_eq!(parse_retry_after(&HeaderMap::new(), now), None);
        let mut h = HeaderMap::new();
        h.insert("retry-after", HeaderValue::from_bytes(b"\xff1").unwrap());
        assert_eq!(parse_retry_after(&h, now), None);
    }

    #[test]
    fn backoff_cap_doubles_then_saturates() {
        let base = Duration::from_millis(100);
        let max = Duration::from_secs(1);
        let caps: Vec<u64> = (1..=6)
            .map(|a| backoff_cap(base, max, a).as_millis() as u64)
            .collect();
        assert_eq!(caps, [100, 200, 400, 800, 1000, 1000]);
        assert_eq!(backoff_cap(base, max, u32::MAX), max);
        assert_eq!(backoff_cap(Duration::MAX, Duration::MAX, 40), Duration::MAX);
    }

    #[test]
    fn jitter_spreads_over_the_whole_range() {
        let mut rng = StdRng::seed_from_u64(7);
        let cap = Duration::from_millis(100);
        let waits: Vec<Duration> = (0..1000).map(|_| full_jitter(cap, &mut rng)).collect();
        assert!(waits.iter().all(|w| *w <= cap));
        assert!(waits.iter().any(|w| *w < cap / 10));
        assert!(waits.iter().any(|w| *w > cap * 9 / 10));
        assert_eq!(full_jitter(Duration::ZERO, &mut rng), Duration::ZERO);
    }

    #[test]
    fn statuses_and_should_retry() {
        let c = Config::default();
        let s = |n| StatusCode::from_u16(n).unwrap();
        let none = HeaderMap::new();
        assert!(status_is_retryable(&c, s(503), &none));
        assert!(status_is_retryable(&c, s(429), &none));
        assert!(!status_is_retryable(&c, s(400), &none));
        assert!(!status_is_retryable(&c, s(501), &none));
        assert!(!status_is_retryable(&c, s(200), &none));

        let no = headers(&[("x-should-retry", "false")]);
        assert!(!status_is_retryable(&c, s(503), &no));
        assert!(!status_is_retryable(&c, s(429), &no));

        let yes = headers(&[("x-should-retry", "TRUE")]);
        assert!(status_is_retryable(&c, s(409), &yes));
        assert!(status_is_retryable(&c, s(408), &yes));
        assert!(status_is_retryable(&c, s(501), &yes));
        assert!(!status_is_retryable(&c, s(400), &yes));
        assert!(!status_is_retryable(&c, s(401), &yes));
        assert!(!status_is_retryable(&c, s(200), &yes));

        let junk = headers(&[("x-should-retry", "maybe")]);
        assert!(status_is_retryable(&c, s(503), &junk));
        assert!(!status_is_retryable(&c, s(409), &junk));
    }

    #[test]
    fn the_early_answer_below_400_is_what_the_header_rules_give() {
        // An unvalidated config (a library user's) may name any status.
        let odd = Config {
            retry_on: vec![200, 304, 503],
            ..Config::default()
        };
        let header_states = [
            HeaderMap::new(),
            headers(&[("x-should-retry", "true")]),
            headers(&[("x-should-retry", "false")]),
            headers(&[("x-should-retry", "maybe")]),
        ];
        for config in [Config::default(), odd] {
            for code in 100..=599 {
                let status = StatusCode::from_u16(code).unwrap();
                for h in &header_states {
                    assert_eq!(
                        status_is_retryable(&config, status, h),
                        by_the_header_rules(&config, status, h),
                        "{code} {h:?} {:?}",
                        config.retry_on
                    );
                }
            }
        }
        let odd = Config {
            retry_on: vec![200],
            ..Config::default()
        };
        assert!(status_is_retryable(&odd, StatusCode::OK, &HeaderMap::new()));
        assert!(!status_is_retryable(
            &odd,
            StatusCode::OK,
            &headers(&[("x-should-retry", "false")])
        ));
    }

    #[test]
    fn quota_bodies() {
        assert!(is_insufficient_quota(
            br#"{"error":{"message":"You exceeded your current quota","type":"insufficient_quota","param":null,"code":"insufficient_quota"}}"#
        ));
        assert!(is_insufficient_quota(
            br#"{"error":{"type":"requests","code":"insufficient_quota"}}"#
        ));
        assert!(is_insufficient_quota(
            br#"{"error":{"type":"insufficient_quota"}}"#
        ));
        assert!(!is_insufficient_quota(
            br#"{"error":{"type":"requests","code":"rate_limit_exceeded"}}"#
        ));
        assert!(!is_insufficient_quota(
            br#"{"type":"error","error":{"type":"rate_limit_error"}}"#
        ));
        assert!(!is_insufficient_quota(b"insufficient_quota"));
        assert!(!is_insufficient_quota(b""));
    }

    proptest! {
        #[test]
        fn backoff_never_exceeds_its_caps(
            base_ms in 0u64..100_000,
            max_ms in 0u64..1_000_000,
            attempt in 1u32..200,
            seed in any::<u64>(),
        ) {
            let base = Duration::from_millis(base_ms);
            let max = Duration::from_millis(max_ms);
            let mut rng = StdRng::seed_from_u64(seed);
            let wait = full_jitter(backoff_cap(base, max, attempt), &mut rng);
            prop_assert!(wait <= max);
            let exp = 2u128.checked_pow(attempt - 1).map_or(u128::MAX, |f| f.saturating_mul(base.as_nanos()));
            prop_assert!(wait.as_nanos() <= exp);
        }

        #[test]
        fn retry_after_seconds_round_trip(secs in 0u64..10_000_000) {
            let mut h = HeaderMap::new();
            h.insert("retry-after", HeaderValue::from(secs));
            prop_assert_eq!(parse_retry_after(&h, SystemTime::now()), Some(Duration::from_secs(secs)));
        }
    }
}
