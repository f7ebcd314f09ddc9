//! Settings of the audit layer.

use portcullis_core::ConfigProblem;
use serde::{Deserialize, Serialize};

/// Settings of the audit log (the `[audit]` section).
///
/// ```
/// let config: portcullis_audit::Config =
///     serde_json::from_str(r#"{ "path": "/var/log/portcullis/audit.jsonl" }"#).unwrap();
/// assert!(!config.include_bodies);
/// assert_eq!(config.queue, 10_000);
/// assert!(config.validate().is_empty());
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    /// Non-empty: one JSON line per proxied request is appended to this file. Empty: no file
    /// (the usage table is still kept).
    pub path: String,
    /// Add the request and response bodies (each up to `max_body_bytes`) to the lines.
    pub include_bodies: bool,
    /// Lines waiting for the writer at most; past it lines are dropped (and counted), never
    /// waited for.
    pub queue: usize,
    /// With `include_bodies`: the most of each body written.
    pub max_body_bytes: usize,
    /// Distinct (key, model) pairs counted in the usage table; later pairs are counted
    /// together under key `other`, model `other`.
    pub max_usage_entries: usize,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            path: String::new(),
            include_bodies: false,
            queue: 10_000,
            max_body_bytes: 64 * 1024,
            max_usage_entries: 1000,
        }
    }
}

impl Config {
    /// Every problem with these settings, each with its key (relative to the section).
    pub fn validate(&self) -> Vec<ConfigProblem> {
        let mut problems = Vec::new();
        if !self.path.is_empty() && self.path.trim() != self.path {
            problems.push(ConfigProblem::new(
                "path",
                "must not start or end with whitespace",
            ));
        }
        if self.queue < 1 {
            problems.push(ConfigProblem::new("queue", "must be >= 1"));
        }
        if self.max_usage_entries < 1 {
            problems.push(ConfigProblem::new("max_usage_entries", "must be >= 1"));
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
        assert_eq!((c.path.as_str(), c.include_bodies), ("", false));
        assert_eq!(c.max_body_bytes, 65536);
        assert!(c.validate().is_empty());
    }

    #[test]
    fn unknown_fields_and_every_problem() {
        let e = serde_json::from_str::<Config>(r#"{"enabled":true}"#).unwrap_err();
        assert!(e.to_string().contains("enabled"), "{e}");
        let c: Config =
            serde_json::from_str(r#"{"path":" x","queue":0,"max_usage_entries":0}"#).unwrap();
        let paths: Vec<_> = c.validate().into_iter().map(|p| p.path).collect();
        assert_eq!(paths, ["path", "queue", "max_usage_entries"]);
    }
}
