//! Settings of the loop-detection layer.

use portcullis_core::ConfigProblem;
use serde::{Deserialize, Serialize};

/// The longest pattern that may be configured: the detector keeps about
/// `2 * max_pattern_length` 4-byte words per watched answer, and up to two and a half times
/// that more while the text is periodic (see [`LoopDetector`](crate::LoopDetector)).
pub const MAX_PATTERN_LENGTH_LIMIT: usize = 100_000;

/// Settings of loop detection (the `[loop_detection]` section, minus `enabled`, which is the
/// binary's business: a disabled layer is simply not stacked).
///
/// ```
/// let config: portcullis_loop_detection::Config =
///     serde_json::from_str(r#"{ "min_repetitions": 5 }"#).unwrap();
/// assert_eq!(config.min_pattern_length, 50);
/// assert_eq!(config.max_pattern_length, 500);
/// assert_eq!(config.min_repetitions, 5);
/// assert!(config.validate().is_empty());
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    /// The shortest repeated pattern that counts, in characters (Unicode scalar values).
    /// Shorter repetitions (closing braces, blank lines, a row of `=`) are normal text.
    pub min_pattern_length: usize,
    /// The longest repeated pattern looked for, in characters.
    pub max_pattern_length: usize,
    /// A pattern seen this many times in a row ends the answer.
    pub min_repetitions: usize,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            min_pattern_length: 50,
            max_pattern_length: 500,
            min_repetitions: 4,
        }
    }
}

impl Config {
    /// The fewest characters a loop takes: `min_repetitions` copies of a pattern of
    /// `min_pattern_length` (clamped as the detector clamps them).
    pub fn shortest_loop(&self) -> usize {
        self.min_pattern_length
            .max(1)
            .saturating_mul(self.min_repetitions.clamp(2, 1000))
    }

    /// Every problem with these settings, each with its key (relative to the section).
    pub fn validate(&self) -> Vec<ConfigProblem> {
        let mut problems = Vec::new();
        if self.min_pattern_length < 1 {
            problems.push(ConfigProblem::new("min_pattern_length", "must be >= 1"));
        }
        if self.max_pattern_length < self.min_pattern_length {
            problems.push(ConfigProblem::new(
                "max_pattern_length",
                format!(
                    "must be >= min_pattern_length ({})",
                    self.min_pattern_length
                ),
            ));
        }
        if self.max_pattern_length > MAX_PATTERN_LENGTH_LIMIT {
            problems.push(ConfigProblem::new(
                "max_pattern_length",
                format!("must be <= {MAX_PATTERN_LENGTH_LIMIT}"),
            ));
        }
        // One occurrence is not a repetition.
        if self.min_repetitions < 2 {
            problems.push(ConfigProblem::new("min_repetitions", "must be >= 2"));
        }
        if self.min_repetitions > 1000 {
            problems.push(ConfigProblem::new("min_repetitions", "must be <= 1000"));
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
        assert_eq!(
            (
                c.min_pattern_length,
                c.max_pattern_length,
                c.min_repetitions
            ),
            (50, 500, 4)
        );
        assert!(c.validate().is_empty());
    }

    #[test]
    fn unknown_fields_are_rejected() {
        let e = serde_json::from_str::<Config>(r#"{"enabled": true}"#).unwrap_err();
        assert!(e.to_string().contains("enabled"), "{e}");
    }

    #[test]
    fn reports_every_problem() {
        let c = Config {
            min_pattern_length: 0,
            max_pattern_length: 200_000,
            min_repetitions: 1,
        };
        let paths: Vec<_> = c.validate().into_iter().map(|p| p.path).collect();
        assert_eq!(
            paths,
            [
                "min_pattern_length",
                "max_pattern_length",
                "min_repetitions"
            ]
        );
        let c = Config {
            min_pattern_length: 60,
            max_pattern_length: 50,
            min_repetitions: 3,
        };
        assert_eq!(c.validate()[0].path, "max_pattern_length");
    }
}
