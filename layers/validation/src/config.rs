//! Configuration of the validation layer.

use std::fmt;

use portcullis_core::ConfigProblem;
use serde::{Deserialize, Serialize};

/// How much of a request body is checked. Each level includes the checks of the levels below.
/// Levels are ordered: `Lenient < Moderate < Strict`.
#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize,
)]
#[serde(rename_all = "lowercase")]
pub enum Level {
    /// The body is a well-formed JSON object with a string `model`.
    Lenient,
    /// Also the fields each API requires, their types and the ranges of numeric parameters.
    #[default]
    Moderate,
    /// Also rejects top-level fields the API does not define, naming them.
    Strict,
}

impl Level {
    /// Every level, lowest first.
    pub const ALL: [Level; 3] = [Level::Lenient, Level::Moderate, Level::Strict];

    /// The name used in configuration files.
    pub fn as_str(self) -> &'static str {
        match self {
            Level::Lenient => "lenient",
            Level::Moderate => "moderate",
            Level::Strict => "strict",
        }
    }
}

impl fmt::Display for Level {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Configuration of [`ValidationLayer`](crate::ValidationLayer).
///
/// The gateway's `[validation]` section sets `level`; `max_body_bytes` comes from
/// `server.max_body_bytes`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    /// How much is checked.
    pub level: Level,
    /// Bodies larger than this are rejected with [`BodyTooLarge`](crate::BodyTooLarge).
    pub max_body_bytes: usize,
}

/// Default for [`Config::max_body_bytes`]: 10 MiB.
pub const DEFAULT_MAX_BODY_BYTES: usize = 10 * 1024 * 1024;

impl Default for Config {
    fn default() -> Self {
        Self {
            level: Level::default(),
            max_body_bytes: DEFAULT_MAX_BODY_BYTES,
        }
    }
}

impl Config {
    /// Every problem with this configuration, each with its key path.
    pub fn validate(&self) -> Vec<ConfigProblem> {
        let mut problems = Vec::new();
        if self.max_body_bytes == 0 {
            problems.push(ConfigProblem::new("max_body_bytes", "must be >= 1"));
        }
        problems
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_match_the_interface() {
        let c = Config::default();
        assert_eq!(c.level, Level::Moderate);
        assert_eq!(c.max_body_bytes, 10_485_760);
        assert!(c.validate().is_empty());
    }

    #[test]
    fn levels_are_lowercase_and_unknown_keys_fail() {
        let c: Config = serde_json::from_str(r#"{"level":"strict"}"#).unwrap();
        assert_eq!(c.level, Level::Strict);
        assert_eq!(c.max_body_bytes, DEFAULT_MAX_BODY_BYTES);
        let c: Config = serde_json::from_str(r#"{"level":"lenient","max_body_bytes":5}"#).unwrap();
        assert_eq!((c.level, c.max_body_bytes), (Level::Lenient, 5));
        assert!(serde_json::from_str::<Config>(r#"{"level":"Strict"}"#).is_err());
        let e = serde_json::from_str::<Config>(r#"{"levle":"strict"}"#).unwrap_err();
        assert!(e.to_string().contains("levle"), "{e}");
        assert_eq!(
            serde_json::to_string(&Level::Moderate).unwrap(),
            r#""moderate""#
        );
    }

    #[test]
    fn zero_body_limit_is_a_problem() {
        let c = Config {
            max_body_bytes: 0,
            ..Config::default()
        };
        assert_eq!(
            c.validate(),
            vec![ConfigProblem::new("max_body_bytes", "must be >= 1")]
        );
    }
}
