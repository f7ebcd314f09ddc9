//! Settings of the rate-limit layer.

use std::time::Duration;

use portcullis_core::ConfigProblem;
use serde::{Deserialize, Serialize};

/// Settings of the rate limiter (the `[rate_limit]` section, minus `enabled`, which is the
/// binary's business: a disabled limiter is simply not stacked).
///
/// ```
/// let config: portcullis_rate_limit::Config = serde_json::from_str(
///     r#"{ "requests_per_minute": 120, "key": "user_id", "queue_timeout": "2s" }"#,
/// ).unwrap();
/// assert_eq!(config.burst, 10);
/// assert_eq!(config.key, portcullis_rate_limit::KeyKind::UserId);
/// assert_eq!(config.queue_timeout, std::time::Duration::from_secs(2));
/// assert!(config.validate().is_empty());
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    /// Sustained rate: one request is let through every `60s / requests_per_minute`.
    pub requests_per_minute: u32,
    /// How many requests may arrive at once after a quiet period (the bucket's capacity).
    pub burst: u32,
    /// Whose budget a request is charged to.
    pub key: KeyKind,
    /// `> 0`: a request over the limit waits up to this long for its slot instead of being
    /// answered 429 at once. A request whose wait would be longer is refused immediately.
    #[serde(with = "humantime_serde")]
    pub queue_timeout: Duration,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            requests_per_minute: 60,
            burst: 10,
            key: KeyKind::ApiKey,
            queue_timeout: Duration::ZERO,
        }
    }
}

impl Config {
    /// Every problem with these settings, each with its key (relative to the section).
    pub fn validate(&self) -> Vec<ConfigProblem> {
        self.quota().validate()
    }

    /// The rate and burst of these settings.
    pub fn quota(&self) -> Quota {
        Quota {
            requests_per_minute: self.requests_per_minute,
            burst: self.burst,
        }
    }
}

/// Whose budget a request is charged to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum KeyKind {
    /// The caller's API key (`Authorization: Bearer K` or `x-api-key: K`), hashed. A request
    /// without a key is charged to its client IP (the `ClientIp` extension), and one without
    /// either to a single shared `anonymous` bucket.
    #[default]
    ApiKey,
    /// The memory user id (the `UserId` extension set by the memory-routing layer); absent:
    /// the `default` user.
    UserId,
    /// The client IP (the `ClientIp` extension set by the server); absent: one `unknown` bucket.
    Ip,
    /// One bucket for all callers: a cap on the whole gateway.
    Global,
}

/// A rate: `requests_per_minute` sustained, up to `burst` at once.
///
/// Used for the layer's own limit ([`Config::quota`]) and for per-model limits
/// ([`RateLimitLayer::with_model_limit`](crate::RateLimitLayer::with_model_limit)); the binary
/// can deserialize `models[].rate_limit` straight into it.
///
/// ```
/// let q: portcullis_rate_limit::Quota =
///     serde_json::from_str(r#"{ "requests_per_minute": 6, "burst": 2 }"#).unwrap();
/// assert_eq!(q.emission_interval(), std::time::Duration::from_secs(10));
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Quota {
    /// Sustained rate: one request every `60s / requests_per_minute`.
    pub requests_per_minute: u32,
    /// The bucket's capacity.
    pub burst: u32,
}

impl Default for Quota {
    fn default() -> Self {
        Self {
            requests_per_minute: 60,
            burst: 10,
        }
    }
}

impl Quota {
    /// A quota of `requests_per_minute` with `burst`.
    pub fn new(requests_per_minute: u32, burst: u32) -> Self {
        Self {
            requests_per_minute,
            burst,
        }
    }

    /// Every problem with this quota, each with its key.
    pub fn validate(&self) -> Vec<ConfigProblem> {
        let mut problems = Vec::new();
        if self.requests_per_minute < 1 {
            problems.push(ConfigProblem::new("requests_per_minute", "must be >= 1"));
        }
        if self.burst < 1 {
            problems.push(ConfigProblem::new("burst", "must be >= 1"));
        }
        problems
    }

    /// The GCRA emission interval: the time one request's worth of budget takes to refill.
    ///
    /// Values below 1 are treated as 1 so an unvalidated quota cannot divide by zero.
    pub fn emission_interval(&self) -> Duration {
        // Same integer-nanosecond division as governor's `Quota::per_minute`, so the memory
        // and Redis backends agree to the nanosecond.
        Duration::from_secs(60) / self.requests_per_minute.max(1)
    }

    /// The bucket capacity, at least 1.
    pub fn capacity(&self) -> u32 {
        self.burst.max(1)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_match_the_interface() {
        let c: Config = serde_json::from_str("{}").unwrap();
        assert_eq!(c, Config::default());
        assert_eq!(c.requests_per_minute, 60);
        assert_eq!(c.burst, 10);
        assert_eq!(c.key, KeyKind::ApiKey);
        assert_eq!(c.queue_timeout, Duration::ZERO);
        assert!(c.validate().is_empty());
    }

    #[test]
    fn key_kinds_are_snake_case() {
        for (s, k) in [
            ("api_key", KeyKind::ApiKey),
            ("user_id", KeyKind::UserId),
            ("ip", KeyKind::Ip),
            ("global", KeyKind::Global),
        ] {
            let c: Config = serde_json::from_str(&format!(r#"{{"key":"{s}"}}"#)).unwrap();
            assert_eq!(c.key, k);
        }
        assert!(serde_json::from_str::<Config>(r#"{"key":"apikey"}"#).is_err());
    }

    #[test]
    fn unknown_fields_are_rejected() {
        let e = serde_json::from_str::<Config>(r#"{"rpm": 5}"#).unwrap_err();
        assert!(e.to_string().contains("rpm"), "{e}");
        assert!(serde_json::from_str::<Quota>(r#"{"key": "ip"}"#).is_err());
    }

    #[test]
    fn reports_every_problem() {
        let c: Config =
            serde_json::from_str(r#"{ "requests_per_minute": 0, "burst": 0 }"#).unwrap();
        let paths: Vec<_> = c.validate().into_iter().map(|p| p.path).collect();
        assert_eq!(paths, ["requests_per_minute", "burst"]);
    }

    #[test]
    fn emission_interval() {
        assert_eq!(
            Quota::new(60, 1).emission_interval(),
            Duration::from_secs(1)
        );
        assert_eq!(
            Quota::new(1, 1).emission_interval(),
            Duration::from_secs(60)
        );
        assert_eq!(
            Quota::new(0, 0).emission_interval(),
            Duration::from_secs(60)
        );
        assert_eq!(Quota::new(0, 0).capacity(), 1);
    }
}
