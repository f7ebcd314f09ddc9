//! Configuration of the retry layer.

use std::time::Duration;

use portcullis_core::ConfigProblem;
use serde::{Deserialize, Serialize};

/// How the retry layer decides whether, when and how often to retry.
///
/// Durations (de)serialize as humantime strings (`"100ms"`, `"30s"`). Every field has a
/// default, so `{}` is a valid config; unknown keys are rejected.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    /// Total attempts, the first one included: `1` never retries.
    pub max_attempts: u32,
    /// Cap of the first backoff; the cap doubles with every retry.
    #[serde(with = "humantime_serde")]
    pub base_delay: Duration,
    /// No backoff is ever longer than this.
    #[serde(with = "humantime_serde")]
    pub max_delay: Duration,
    /// Response statuses that are retried (connect errors and timeouts always are).
    pub retry_on: Vec<u16>,
    /// Whether `retry-after-ms` / `Retry-After` set the wait instead of the backoff.
    pub respect_retry_after: bool,
    /// A `Retry-After` longer than this is not waited for: the response is returned as is.
    #[serde(with = "humantime_serde")]
    pub max_retry_after: Duration,
    /// The retry budget that keeps retries a fraction of the traffic.
    pub budget: BudgetConfig,
    /// Request bodies up to this size are buffered so they can be replayed; a larger body
    /// (or one whose size is not known up front) is sent once and never retried. Default:
    /// `portcullis_core::body::DEFAULT_MAX_BODY_BYTES`.
    pub max_replay_body_bytes: usize,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            max_attempts: 3,
            base_delay: Duration::from_millis(100),
            max_delay: Duration::from_secs(10),
            retry_on: vec![429, 500, 502, 503, 504, 529],
            respect_retry_after: true,
            max_retry_after: Duration::from_secs(30),
            budget: BudgetConfig::default(),
            max_replay_body_bytes: portcullis_core::body::DEFAULT_MAX_BODY_BYTES,
        }
    }
}

/// The retry budget (tower's [`TpsBudget`](tower::retry::budget::TpsBudget)): retries may
/// be at most `retry_percent` of the requests of the last `ttl`, plus `min_per_sec` retries
/// per second that are always allowed.
///
/// # Why a budget and not only `max_attempts`?
/// When an upstream is down, `max_attempts = 3` triples the load on it exactly when it can
/// least take it. A budget lets a few requests retry, then stops retry storms.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct BudgetConfig {
    /// How long a request counts towards the budget (1s to 60s).
    #[serde(with = "humantime_serde")]
    pub ttl: Duration,
    /// Retries per second allowed regardless of traffic.
    pub min_per_sec: u32,
    /// Retries allowed per request (`0.2`: one retry per five requests), `0` to `1000`.
    pub retry_percent: f32,
}

impl Default for BudgetConfig {
    fn default() -> Self {
        Self {
            ttl: Duration::from_secs(10),
            min_per_sec: 10,
            retry_percent: 0.2,
        }
    }
}

impl Config {
    /// Every problem in this config, each with its key path relative to the `retry` section
    /// (`max_attempts`, `retry_on[2]`, `budget.ttl`). Empty means valid.
    pub fn validate(&self) -> Vec<ConfigProblem> {
        let mut problems = Vec::new();
        if self.max_attempts < 1 {
            problems.push(ConfigProblem::new("max_attempts", "must be >= 1"));
        }
        if self.base_delay > self.max_delay {
            problems.push(ConfigProblem::new(
                "base_delay",
                format!(
                    "must be <= max_delay ({})",
                    humantime_serde::re::humantime::format_duration(self.max_delay)
                ),
            ));
        }
        for (i, status) in self.retry_on.iter().enumerate() {
            // Retrying a success or a redirect would repeat a call that already worked.
            if !(400..=599).contains(status) {
                problems.push(ConfigProblem::new(
                    format!("retry_on[{i}]"),
                    format!("{status} is not an error status (400..=599)"),
                ));
            }
        }
        problems.extend(self.budget.validate().into_iter().map(|p| ConfigProblem {
            path: format!("budget.{}", p.path),
            message: p.message,
        }));
        problems
    }
}

impl BudgetConfig {
    /// Every problem in this budget config, paths relative to the budget section.
    ///
    /// These are the bounds [`TpsBudget::new`](tower::retry::budget::TpsBudget::new) asserts.
    pub fn validate(&self) -> Vec<ConfigProblem> {
        let mut problems = Vec::new();
        if self.ttl < Duration::from_secs(1) || self.ttl > Duration::from_secs(60) {
            problems.push(ConfigProblem::new("ttl", "must be between 1s and 60s"));
        }
        if self.min_per_sec >= i32::MAX as u32 {
            problems.push(ConfigProblem::new(
                "min_per_sec",
                format!("must be < {}", i32::MAX),
            ));
        }
        if !(self.retry_percent.is_finite() && (0.0..=1000.0).contains(&self.retry_percent)) {
            problems.push(ConfigProblem::new(
                "retry_percent",
                "must be between 0 and 1000",
            ));
        }
        problems
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_valid_and_match_the_interface() {
        let c = Config::default();
        assert!(c.validate().is_empty());
        assert_eq!(c.max_attempts, 3);
        assert_eq!(c.retry_on, [429, 500, 502, 503, 504, 529]);
        assert_eq!(c.max_retry_after, Duration::from_secs(30));
    }

    #[test]
    fn deserializes_humantime_and_fills_defaults() {
        let c: Config = serde_json::from_str(
            r#"{"max_attempts":5,"base_delay":"250ms","budget":{"ttl":"5s"}}"#,
        )
        .unwrap();
        assert_eq!(c.max_attempts, 5);
        assert_eq!(c.base_delay, Duration::from_millis(250));
        assert_eq!(c.max_delay, Duration::from_secs(10));
        assert_eq!(c.budget.ttl, Duration::from_secs(5));
        assert_eq!(c.budget.min_per_sec, 10);
        let back: Config = serde_json::from_value(serde_json::to_value(&c).unwrap()).unwrap();
        assert_eq!(back, c);
    }

    #[test]
    fn unknown_keys_are_rejected() {
        let e = serde_json::from_str::<Config>(r#"{"max_attempt":5}"#).unwrap_err();
        assert!(e.to_string().contains("max_attempt"), "{e}");
        let e = serde_json::from_str::<Config>(r#"{"budget":{"ttl_s":5}}"#).unwrap_err();
        assert!(e.to_string().contains("ttl_s"), "{e}");
    }

    #[test]
    fn validate_reports_every_problem_with_its_path() {
        let c = Config {
            max_attempts: 0,
            base_delay: Duration::from_secs(20),
            retry_on: vec![503, 200, 600],
            budget: BudgetConfig {
                ttl: Duration::from_millis(500),
                min_per_sec: u32::MAX,
                retry_percent: f32::NAN,
            },
            ..Config::default()
        };
        let problems: Vec<String> = c.validate().iter().map(ToString::to_string).collect();
        assert_eq!(
            problems,
            [
                "max_attempts: must be >= 1",
                "base_delay: must be <= max_delay (10s)",
                "retry_on[1]: 200 is not an error status (400..=599)",
                "retry_on[2]: 600 is not an error status (400..=599)",
                "budget.ttl: must be between 1s and 60s",
                "budget.min_per_sec: must be < 2147483647",
                "budget.retry_percent: must be between 0 and 1000",
            ]
        );
    }
}
