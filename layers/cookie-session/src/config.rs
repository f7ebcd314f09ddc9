//! Settings of the cookie jars.

use std::path::PathBuf;
use std::time::Duration;

use portcullis_core::ConfigProblem;
use serde::{Deserialize, Serialize};

use crate::jar::DEFAULT_MAX_COOKIES;
use crate::scope::DEFAULT_MAX_CALLERS;
use crate::CookieJar;

/// Settings shared by every upstream's jar (the `[cookies]` section; whether an upstream
/// gets a jar at all is its own `cookies = true|false`).
///
/// The gateway reads this type as its `[cookies]` section, every key included
/// (`cookies.max_cookies`, `cookies.max_callers`, `cookies.save_interval`).
///
/// ```
/// let config: portcullis_cookie_session::Config =
///     serde_json::from_str(r#"{ "persist_path": "/var/lib/portcullis/cookies.json" }"#).unwrap();
/// assert_eq!(config.max_cookies, 1000);
/// assert!(config.validate().is_empty());
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    /// Where the jars are saved and loaded at start; empty: they live in memory only.
    pub persist_path: PathBuf,
    /// Most cookies one jar holds (expired ones go first, then the oldest).
    pub max_cookies: usize,
    /// Most callers' jars one upstream with `cookie_scope = "caller"` keeps (the least
    /// recently used is evicted, cookies and all, to make room).
    pub max_callers: usize,
    /// With `persist_path`, how often changed jars are saved (plus once at shutdown).
    #[serde(with = "humantime_serde")]
    pub save_interval: Duration,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            persist_path: PathBuf::new(),
            max_cookies: DEFAULT_MAX_COOKIES,
            max_callers: DEFAULT_MAX_CALLERS,
            save_interval: Duration::from_secs(30),
        }
    }
}

impl Config {
    /// Every problem with these settings, each with its key (relative to the section).
    pub fn validate(&self) -> Vec<ConfigProblem> {
        let mut problems = Vec::new();
        if self.max_cookies < 1 {
            problems.push(ConfigProblem::new("max_cookies", "must be >= 1"));
        }
        if self.max_callers < 1 {
            problems.push(ConfigProblem::new("max_callers", "must be >= 1"));
        }
        if self.save_interval.is_zero() {
            problems.push(ConfigProblem::new("save_interval", "must be > 0"));
        }
        if self
            .persist_path
            .as_os_str()
            .to_string_lossy()
            .ends_with('/')
        {
            problems.push(ConfigProblem::new(
                "persist_path",
                "must name a file, not a directory",
            ));
        }
        problems
    }

    /// The file to persist to, if any.
    pub fn persist_path(&self) -> Option<&std::path::Path> {
        (!self.persist_path.as_os_str().is_empty()).then_some(self.persist_path.as_path())
    }

    /// A new empty jar with this bound.
    pub fn new_jar(&self) -> CookieJar {
        CookieJar::with_max_cookies(self.max_cookies)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults() {
        let c: Config = serde_json::from_str("{}").unwrap();
        assert_eq!(c, Config::default());
        assert_eq!(c.persist_path(), None);
        assert_eq!(c.max_cookies, 1000);
        assert_eq!(c.max_callers, 1000);
        assert_eq!(c.save_interval, Duration::from_secs(30));
        assert!(c.validate().is_empty());
    }

    #[test]
    fn reports_every_problem() {
        let c: Config = serde_json::from_str(
            r#"{ "persist_path": "/tmp/", "max_cookies": 0, "max_callers": 0, "save_interval": "0s" }"#,
        )
        .unwrap();
        let paths: Vec<_> = c.validate().into_iter().map(|p| p.path).collect();
        assert_eq!(
            paths,
            [
                "max_cookies",
                "max_callers",
                "save_interval",
                "persist_path"
            ]
        );
    }

    #[test]
    fn unknown_keys_are_rejected() {
        let err = serde_json::from_str::<Config>(r#"{ "persist": "x" }"#).unwrap_err();
        assert!(err.to_string().contains("persist"), "{err}");
    }
}
