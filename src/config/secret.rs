//! Secrets in the configuration: `env:NAME` / `os.environ/NAME` references resolved at load,
//! never shown by `Debug` or `Serialize`.

use std::fmt;

use portcullis_core::ConfigProblem;
use serde::{Deserialize, Serialize};

/// A configuration value that may be a secret reference: `env:NAME` or `os.environ/NAME`.
///
/// After [`Config::load`], [`Secret::expose`] returns the resolved value. `Debug` and
/// `Serialize` never show a resolved secret.
#[derive(Clone, Default, PartialEq, Eq)]
pub struct Secret {
    raw: String,
    resolved: Option<String>,
}

impl Secret {
    /// A literal value (no reference).
    pub fn literal(v: impl Into<String>) -> Self {
        Self {
            raw: v.into(),
            resolved: None,
        }
    }

    /// The environment variable this refers to, if it is a reference.
    pub fn env_name(&self) -> Option<&str> {
        self.raw
            .strip_prefix("env:")
            .or_else(|| self.raw.strip_prefix("os.environ/"))
            .map(str::trim)
    }

    /// The value to use.
    pub fn expose(&self) -> &str {
        self.resolved.as_deref().unwrap_or(&self.raw)
    }

    /// True when empty.
    pub fn is_empty(&self) -> bool {
        self.expose().is_empty()
    }

    pub(super) fn resolve(&mut self, path: &str, problems: &mut Vec<ConfigProblem>) {
        if let Some(name) = self.env_name() {
            match std::env::var(name) {
                // Secrets travel in headers: a line break (a stray newline from `echo` into a
                // file) would be refused at the first request, so `check` refuses it now.
                Ok(v) if v.contains(['\r', '\n']) => problems.push(ConfigProblem::new(
                    path,
                    format!(
                        "environment variable {name} contains a line break (referenced by {path})"
                    ),
                )),
                Ok(v) => self.resolved = Some(v),
                Err(_) => problems.push(ConfigProblem::new(
                    path,
                    format!("environment variable {name} is not set (referenced by {path})"),
                )),
            }
        }
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.env_name() {
            Some(n) => write!(f, "Secret(env:{n})"),
            None if self.raw.is_empty() => f.write_str("Secret(\"\")"),
            None => f.write_str("Secret(***)"),
        }
    }
}

impl Serialize for Secret {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        // Only references are shown; literal secrets are masked.
        match self.env_name() {
            Some(_) => s.serialize_str(&self.raw),
            None if self.raw.is_empty() => s.serialize_str(""),
            None => s.serialize_str("***"),
        }
    }
}

impl<'de> Deserialize<'de> for Secret {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        String::deserialize(d).map(Secret::literal)
    }
}
