//! Settings of the tool-call-loop layer.

use std::time::Duration;

use portcullis_core::ConfigProblem;
use serde::{Deserialize, Serialize};

/// Settings of tool-call loop detection (the `[tool_call_loop]` section, minus `enabled`,
/// which is the binary's business: a disabled layer is simply not stacked).
///
/// ```
/// let config: portcullis_tool_call_loop::Config =
///     serde_json::from_str(r#"{ "ttl": "10m", "mode": "chance_then_block" }"#).unwrap();
/// assert_eq!(config.max_repeats, 3);
/// assert_eq!(config.ttl, std::time::Duration::from_secs(600));
/// assert_eq!(config.mode, portcullis_tool_call_loop::Mode::ChanceThenBlock);
/// assert!(config.validate().is_empty());
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    /// Identical consecutive tool calls allowed in one session; the next identical one is a
    /// loop.
    pub max_repeats: u32,
    /// A session's history is forgotten after this long without an answer.
    #[serde(with = "humantime_serde")]
    pub ttl: Duration,
    /// What happens to a loop.
    pub mode: Mode,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            max_repeats: 3,
            ttl: Duration::from_secs(300),
            mode: Mode::Block,
        }
    }
}

/// What happens when a session repeats a tool call more than `max_repeats` times.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Mode {
    /// The answer is refused: a [`ToolCallLoop`](crate::ToolCallLoop) error (`409
    /// tool_call_loop`), or an error event ending the stream.
    #[default]
    Block,
    /// The answer goes through with a `tracing` warning and the response header
    /// `x-portcullis-tool-call-loop: warn`.
    Warn,
    /// The first time, the answer goes through and the session's next request gets a note
    /// asking the model to try something else; if the call is repeated again, it is blocked.
    ChanceThenBlock,
}

impl Config {
    /// Every problem with these settings, each with its key (relative to the section).
    pub fn validate(&self) -> Vec<ConfigProblem> {
        let mut problems = Vec::new();
        if self.max_repeats < 1 {
            problems.push(ConfigProblem::new("max_repeats", "must be >= 1"));
        }
        if self.ttl.is_zero() {
            problems.push(ConfigProblem::new("ttl", "must be > 0"));
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
        assert_eq!(c.max_repeats, 3);
        assert_eq!(c.ttl, Duration::from_secs(300));
        assert_eq!(c.mode, Mode::Block);
        assert!(c.validate().is_empty());
    }

    #[test]
    fn modes_and_unknown_fields() {
        for (s, m) in [
            ("block", Mode::Block),
            ("warn", Mode::Warn),
            ("chance_then_block", Mode::ChanceThenBlock),
        ] {
            let c: Config = serde_json::from_str(&format!(r#"{{"mode":"{s}"}}"#)).unwrap();
            assert_eq!(c.mode, m);
        }
        assert!(serde_json::from_str::<Config>(r#"{"mode":"Block"}"#).is_err());
        let e = serde_json::from_str::<Config>(r#"{"enabled":true}"#).unwrap_err();
        assert!(e.to_string().contains("enabled"), "{e}");
    }

    #[test]
    fn reports_every_problem() {
        let c: Config = serde_json::from_str(r#"{"max_repeats":0,"ttl":"0s"}"#).unwrap();
        let paths: Vec<_> = c.validate().into_iter().map(|p| p.path).collect();
        assert_eq!(paths, ["max_repeats", "ttl"]);
    }
}
