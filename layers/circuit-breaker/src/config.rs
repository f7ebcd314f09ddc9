//! Settings of one circuit breaker.

use std::time::Duration;

use portcullis_core::ConfigProblem;
use serde::{Deserialize, Serialize};

/// Settings of a circuit breaker (the `[circuit_breaker]` section, minus `enabled`, which is
/// the binary's business: a disabled breaker is simply not stacked).
///
/// # The model
///
/// Outcomes are counted per *client request*, not per upstream attempt (see
/// [`ClientRequest`](crate::ClientRequest)): a request's outcome is that of its latest
/// attempt. A closed breaker opens when both hold:
///
/// - the last `failure_threshold` requests all failed (consecutive failures), and
/// - at least `minimum_requests` requests completed within the last `window` (the volume
///   gate, resilience4j's `minimumNumberOfCalls` over a sliding time window), so a handful of
///   requests, from one caller or a few, cannot open the breaker for everyone.
///
/// With the defaults (5 failures, 10 requests in 60 s) an upstream that fails everything opens
/// once 10 requests reached it within a minute; at lower traffic it stays closed and the
/// retries and failover handle the failures. `minimum_requests = 1` turns the gate off
/// (the breaker then opens after `failure_threshold` failed requests, whatever the traffic).
/// The volume count starts over whenever the breaker closes.
///
/// ```
/// let config: portcullis_circuit_breaker::Config =
///     serde_json::from_str(r#"{ "failure_threshold": 3, "open_timeout": "10s" }"#).unwrap();
/// assert_eq!(config.open_timeout, std::time::Duration::from_secs(10));
/// assert_eq!(config.success_threshold, 1);
/// assert!(config.validate().is_empty());
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    /// Consecutive failures (status >= 500, or an error from the inner service such as a
    /// connect error or timeout) that open a closed breaker.
    pub failure_threshold: u32,
    /// How long an open breaker fails calls fast before it lets one probe through.
    #[serde(with = "humantime_serde")]
    pub open_timeout: Duration,
    /// Successful probes in a row that close a half-open breaker.
    pub success_threshold: u32,
    /// Requests that must have completed within `window` before failures can open the breaker
    /// (1 to 10000; 1: no volume gate).
    pub minimum_requests: u32,
    /// The sliding window `minimum_requests` is counted in.
    #[serde(with = "humantime_serde")]
    pub window: Duration,
}

/// The largest `minimum_requests` accepted: the breaker keeps that many timestamps.
pub const MAX_MINIMUM_REQUESTS: u32 = 10_000;

impl Default for Config {
    fn default() -> Self {
        Self {
            failure_threshold: 5,
            open_timeout: Duration::from_secs(30),
            success_threshold: 1,
            minimum_requests: 10,
            window: Duration::from_secs(60),
        }
    }
}

impl Config {
    /// Every problem with these settings, each with its key (relative to the section).
    pub fn validate(&self) -> Vec<ConfigProblem> {
        let mut problems = Vec::new();
        if self.failure_threshold < 1 {
            problems.push(ConfigProblem::new("failure_threshold", "must be >= 1"));
        }
        if self.open_timeout.is_zero() {
            problems.push(ConfigProblem::new("open_timeout", "must be > 0"));
        }
        if self.success_threshold < 1 {
            problems.push(ConfigProblem::new("success_threshold", "must be >= 1"));
        }
        if !(1..=MAX_MINIMUM_REQUESTS).contains(&self.minimum_requests) {
            problems.push(ConfigProblem::new(
                "minimum_requests",
                format!("must be between 1 and {MAX_MINIMUM_REQUESTS}"),
            ));
        }
        if self.window.is_zero() {
            problems.push(ConfigProblem::new("window", "must be > 0"));
        }
        problems
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_match_the_interface() {
        let c: Config = serde_json::from_str("{}").unwrap();
        assert_eq!(c, Config::default());
        assert_eq!(c.failure_threshold, 5);
        assert_eq!(c.open_timeout, Duration::from_secs(30));
        assert_eq!(c.success_threshold, 1);
        assert_eq!(c.minimum_requests, 10);
        assert_eq!(c.window, Duration::from_secs(60));
        assert!(c.validate().is_empty());
    }

    #[test]
    fn reports_every_problem() {
        let c: Config = serde_json::from_str(
            r#"{ "failure_threshold": 0, "open_timeout": "0s", "success_threshold": 0,
                 "minimum_requests": 0, "window": "0s" }"#,
        )
        .unwrap();
        let paths: Vec<_> = c.validate().into_iter().map(|p| p.path).collect();
        assert_eq!(
            paths,
            [
                "failure_threshold",
                "open_timeout",
                "success_threshold",
                "minimum_requests",
                "window"
            ]
        );
        let c = Config {
            minimum_requests: MAX_MINIMUM_REQUESTS + 1,
            ..Config::default()
        };
        assert_eq!(c.validate()[0].path, "minimum_requests");
    }

    #[test]
    fn unknown_keys_are_rejected() {
        let err = serde_json::from_str::<Config>(r#"{ "failure_treshold": 3 }"#).unwrap_err();
        assert!(err.to_string().contains("failure_treshold"), "{err}");
    }

    #[test]
    fn round_trips() {
        let c = Config {
            failure_threshold: 2,
            open_timeout: Duration::from_millis(250),
            success_threshold: 3,
            minimum_requests: 4,
            window: Duration::from_secs(90),
        };
        let json = serde_json::to_string(&c).unwrap();
        assert!(json.contains("\"250ms\""), "{json}");
        assert!(json.contains("\"1m 30s\""), "{json}");
        assert_eq!(serde_json::from_str::<Config>(&json).unwrap(), c);
    }
}
