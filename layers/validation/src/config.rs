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
    /// Also the JSON types of every documented field and the fields every version of the API
    /// requires; new roles, block types and fields pass.
    #[default]
    Moderate,
    /// Also the enumerations (roles, block and item types, known values), numeric ranges,
    /// per-role requirements, and rejects top-level fields the API does not define.
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

/// Configuration of [`ValidationLayer`](crate::ValidationLayer): the gateway's `[validation]`
/// section, embedded as is.
///
/// The body size cap is not here: it is the server's (`server.max_body_bytes`), and is given
/// to the layer with [`ValidationLayer::with_max_body_bytes`](crate::ValidationLayer::with_max_body_bytes).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    /// How much is checked.
    pub level: Level,
}

impl Config {
    /// Every problem with this configuration, each with its key path. Every `Config` that
    /// deserializes is valid today; the method is kept so the gateway checks every section
    /// the same way.
    pub fn validate(&self) -> Vec<ConfigProblem> {
        Vec::new()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_match_the_interface() {
        let c = Config::default();
        assert_eq!(c.level, Level::Moderate);
        assert!(c.validate().is_empty());
    }

    #[test]
    fn levels_are_lowercase_and_unknown_keys_fail() {
        let c: Config = serde_json::from_str(r#"{"level":"strict"}"#).unwrap();
        assert_eq!(c.level, Level::Strict);
        let c: Config = serde_json::from_str("{}").unwrap();
        assert_eq!(c, Config::default());
        assert!(serde_json::from_str::<Config>(r#"{"level":"Strict"}"#).is_err());
        let e = serde_json::from_str::<Config>(r#"{"levle":"strict"}"#).unwrap_err();
        assert!(e.to_string().contains("levle"), "{e}");
        // The cap moved to the server section; here it is an unknown key.
        let e = serde_json::from_str::<Config>(r#"{"max_body_bytes":5}"#).unwrap_err();
        assert!(e.to_string().contains("max_body_bytes"), "{e}");
        assert_eq!(
            serde_json::to_string(&Level::Moderate).unwrap(),
            r#""moderate""#
        );
    }
}
