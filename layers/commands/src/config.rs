//! Settings of the commands layer.

use std::time::Duration;

use portcullis_core::ConfigProblem;
use serde::{Deserialize, Serialize};

/// Settings of in-chat commands (the `[commands]` section, minus `enabled`, which is the
/// binary's business: a disabled layer is simply not stacked).
///
/// ```
/// let config: portcullis_commands::Config =
///     serde_json::from_str(r#"{ "prefix": "//", "session_ttl": "30m" }"#).unwrap();
/// assert_eq!(config.prefix, "//");
/// assert_eq!(config.session_ttl, std::time::Duration::from_secs(1800));
/// assert_eq!(config.max_sessions, 100_000);
/// assert!(config.validate().is_empty());
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    /// What a last user message must start with (after leading whitespace) to be a command.
    pub prefix: String,
    /// Sessions kept at most; past it the least recently used are forgotten.
    pub max_sessions: u64,
    /// A session's settings are forgotten after this long without a request.
    #[serde(with = "humantime_serde")]
    pub session_ttl: Duration,
    /// Body params one session may hold (`!/set(temperature=0.2, ...)`).
    pub max_params: usize,
}

/// The longest command text read (prefix included); a longer one is answered as invalid.
pub const MAX_COMMAND_BYTES: usize = 16 * 1024;

impl Default for Config {
    fn default() -> Self {
        Self {
            prefix: "!/".to_owned(),
            max_sessions: 100_000,
            session_ttl: Duration::from_secs(3600),
            max_params: 32,
        }
    }
}

impl Config {
    /// Every problem with these settings, each with its key (relative to the section).
    pub fn validate(&self) -> Vec<ConfigProblem> {
        let mut problems = Vec::new();
        if self.prefix.trim().is_empty() {
            problems.push(ConfigProblem::new("prefix", "must not be empty"));
        } else if self.prefix.trim() != self.prefix {
            problems.push(ConfigProblem::new(
                "prefix",
                "must not start or end with whitespace",
            ));
        } else if self.prefix.len() > 64 {
            problems.push(ConfigProblem::new("prefix", "must be at most 64 bytes"));
        }
        if self.max_sessions < 1 {
            problems.push(ConfigProblem::new("max_sessions", "must be >= 1"));
        }
        if self.session_ttl.is_zero() {
            problems.push(ConfigProblem::new("session_ttl", "must be > 0"));
        }
        if self.max_params < 1 {
            problems.push(ConfigProblem::new("max_params", "must be >= 1"));
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
        assert_eq!(c.prefix, "!/");
        assert_eq!(c.session_ttl, Duration::from_secs(3600));
        assert!(c.validate().is_empty());
    }

    #[test]
    fn unknown_fields_and_every_problem() {
        let e = serde_json::from_str::<Config>(r#"{"enabled":true}"#).unwrap_err();
        assert!(e.to_string().contains("enabled"), "{e}");
        let c: Config = serde_json::from_str(
            r#"{"prefix":" ","max_sessions":0,"session_ttl":"0s","max_params":0}"#,
        )
        .unwrap();
        let paths: Vec<_> = c.validate().into_iter().map(|p| p.path).collect();
        assert_eq!(
            paths,
            ["prefix", "max_sessions", "session_ttl", "max_params"]
        );
    }
}
