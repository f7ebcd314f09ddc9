//! The table of sections: every top-level key of the config file and its type. A layer's
//! section is the layer crate's own `Config`, read as it is (no mirror types), wrapped in
//! [`Toggle`] when the layer can be switched off.
//!
//! A new layer adds its line to the table below and, in this file, one [`LayerSection`] (or
//! [`Section`]) impl saying how it is checked and named in `portcullis check`'s summary.

use std::ops::{Deref, DerefMut};

use figment::value::{Dict, Value};
use portcullis_core::ConfigProblem;
use serde::{de::DeserializeOwned, Serialize};

use super::{
    problems::deserialize_at, KeyConfig, ModelConfig, ServerConfig, StateConfig, TelemetryConfig,
    UpstreamConfig,
};

// Layers are listed outermost first, as `stack.rs` stacks them (the order of `check`'s list).
sections_table! {
    /// `[server]`
    server: ServerConfig,
    /// `[validation]`
    validation: portcullis_validation::Config,
    /// `[memory_routing]`
    memory_routing: Toggle<portcullis_memory_routing::Config, true>,
    /// `[commands]`
    commands: Toggle<portcullis_commands::Config, false>,
    /// `[rate_limit]`
    rate_limit: Toggle<portcullis_rate_limit::Config, false>,
    /// `[dedup]`
    dedup: Toggle<portcullis_dedup_cache::Config, false>,
    /// `[tool_call_loop]`
    tool_call_loop: Toggle<portcullis_tool_call_loop::Config, false>,
    /// `[loop_detection]`
    loop_detection: Toggle<portcullis_loop_detection::Config, false>,
    /// `[retry]`
    retry: Toggle<portcullis_retry::Config, true>,
    /// `[circuit_breaker]`
    circuit_breaker: Toggle<portcullis_circuit_breaker::Config, true>,
    /// `[cookies]`
    cookies: portcullis_cookie_session::Config,
    /// `[translation]`
    translation: portcullis_translate::StoreConfig,
    /// `[audit]`
    audit: portcullis_audit::Config,
    /// `[telemetry]`
    telemetry: TelemetryConfig,
    /// `[state]`
    state: StateConfig,
}

/// One `[section]` of the config file: how it is read, checked and summarised.
pub trait Section: Sized {
    /// Read the section from the merged figment value at `key`; every failure is pushed with
    /// its full key path.
    fn read(key: &str, value: &Value, problems: &mut Vec<ConfigProblem>) -> Option<Self>;

    /// Problems, with paths relative to the section (`max_attempts`, `patterns[3].pattern`).
    fn problems(&self) -> Vec<ConfigProblem> {
        Vec::new()
    }

    /// Settings that load but are almost certainly mistakes, paths as for `problems`.
    fn warnings(&self) -> Vec<ConfigProblem> {
        Vec::new()
    }

    /// How the layer this section stacks is named in `check`'s layer list; `None` when the
    /// section stacks no layer (or it is switched off).
    fn layer_name(&self, _key: &str, _config: &Config) -> Option<String> {
        None
    }
}

/// Plain serde sections read themselves with serde (`deny_unknown_fields` in each type).
macro_rules! serde_read {
    () => {
        fn read(
            key: &str,
            value: &figment::value::Value,
            problems: &mut Vec<portcullis_core::ConfigProblem>,
        ) -> Option<Self> {
            super::problems::deserialize_at(key, value, problems)
        }
    };
}
pub(super) use serde_read;

/// A layer's section with an `enabled` switch beside the layer's own keys; `ON` is the
/// default of `enabled`. Derefs to the layer's `Config`.
///
/// # Why not `#[serde(flatten)]`
/// serde cannot combine `flatten` with the layer's `deny_unknown_fields`, and unknown keys
/// must be errors that name the key. So `enabled` is taken out of the table first and the
/// rest is read as the layer's `Config`, keeping figment's key paths.
#[derive(Debug, Clone, Serialize)]
pub struct Toggle<C, const ON: bool> {
    /// Whether the layer is stacked.
    pub enabled: bool,
    /// The layer's own configuration.
    #[serde(flatten)]
    pub config: C,
}

impl<C: Default, const ON: bool> Default for Toggle<C, ON> {
    fn default() -> Self {
        Self {
            enabled: ON,
            config: C::default(),
        }
    }
}

impl<C, const ON: bool> Deref for Toggle<C, ON> {
    type Target = C;
    fn deref(&self) -> &C {
        &self.config
    }
}

impl<C, const ON: bool> DerefMut for Toggle<C, ON> {
    fn deref_mut(&mut self) -> &mut C {
        &mut self.config
    }
}

/// What a layer's `Config` adds to being a [`Section`] inside a [`Toggle`].
pub trait LayerSection: DeserializeOwned {
    /// Problems, relative to the section.
    fn problems(&self) -> Vec<ConfigProblem>;
    /// Likely mistakes, relative to the section.
    fn warnings(&self) -> Vec<ConfigProblem> {
        Vec::new()
    }
    /// The name in `check`'s layer list when enabled; default: the section key.
    fn layer_name(&self, key: &str) -> String {
        key.to_string()
    }
}

impl<C: LayerSection + Default, const ON: bool> Section for Toggle<C, ON> {
    fn read(key: &str, value: &Value, problems: &mut Vec<ConfigProblem>) -> Option<Self> {
        let Some(dict) = value.as_dict() else {
            // Not a table: let serde say so, with the key path.
            return deserialize_at::<C>(key, value, problems).map(|config| Self {
                enabled: ON,
                config,
            });
        };
        let mut rest: Dict = dict.clone();
        let enabled = match rest.remove("enabled") {
            None => Some(ON),
            Some(v) => deserialize_at::<bool>(&format!("{key}.enabled"), &v, problems),
        };
        let config = deserialize_at::<C>(key, &Value::from(rest), problems);
        Some(Self {
            enabled: enabled?,
            config: config?,
        })
    }

    fn problems(&self) -> Vec<ConfigProblem> {
        self.config.problems()
    }

    fn warnings(&self) -> Vec<ConfigProblem> {
        self.config.warnings()
    }

    fn layer_name(&self, key: &str, _config: &Config) -> Option<String> {
        self.enabled.then(|| self.config.layer_name(key))
    }
}

// === The layers ===

impl LayerSection for portcullis_memory_routing::Config {
    fn problems(&self) -> Vec<ConfigProblem> {
        self.validate()
    }
    fn warnings(&self) -> Vec<ConfigProblem> {
        portcullis_memory_routing::Config::warnings(self)
    }
}

impl LayerSection for portcullis_rate_limit::Config {
    fn problems(&self) -> Vec<ConfigProblem> {
        self.validate()
    }
}

impl LayerSection for portcullis_dedup_cache::Config {
    fn problems(&self) -> Vec<ConfigProblem> {
        self.validate()
    }
    fn layer_name(&self, key: &str) -> String {
        if self.cache_ttl.is_zero() {
            key.to_string()
        } else {
            format!(
                "{key} (cache {})",
                humantime::format_duration(self.cache_ttl)
            )
        }
    }
}

impl LayerSection for portcullis_commands::Config {
    fn problems(&self) -> Vec<ConfigProblem> {
        self.validate()
    }
}

/// `[audit]`: the usage table is always kept (for `GET /admin/usage`); `path` adds the file.
impl Section for portcullis_audit::Config {
    serde_read!();
    fn problems(&self) -> Vec<ConfigProblem> {
        self.validate()
    }
    fn layer_name(&self, key: &str, _config: &Config) -> Option<String> {
        (!self.path.is_empty()).then(|| format!("{key} ({})", self.path))
    }
}

impl LayerSection for portcullis_tool_call_loop::Config {
    fn problems(&self) -> Vec<ConfigProblem> {
        self.validate()
    }
}

impl LayerSection for portcullis_loop_detection::Config {
    fn problems(&self) -> Vec<ConfigProblem> {
        self.validate()
    }
}

impl LayerSection for portcullis_retry::Config {
    fn problems(&self) -> Vec<ConfigProblem> {
        self.validate()
    }
}

impl LayerSection for portcullis_circuit_breaker::Config {
    fn problems(&self) -> Vec<ConfigProblem> {
        self.validate()
    }
}

/// `[validation]` is always stacked; only its level changes.
impl Section for portcullis_validation::Config {
    serde_read!();
    fn problems(&self) -> Vec<ConfigProblem> {
        self.validate()
    }
    fn layer_name(&self, key: &str, _config: &Config) -> Option<String> {
        Some(format!("{key} ({})", self.level))
    }
}

/// `[cookies]` holds the jars' settings; the layer is stacked per upstream (`cookies = true`).
impl Section for portcullis_cookie_session::Config {
    serde_read!();
    fn problems(&self) -> Vec<ConfigProblem> {
        self.validate()
    }
    fn layer_name(&self, _key: &str, config: &Config) -> Option<String> {
        config
            .upstreams
            .iter()
            .any(|u| u.cookies)
            .then(|| "cookie_session".to_string())
    }
}

/// `[translation]`: the Responses API's stored answers for translated upstreams; the layer
/// itself is stacked per upstream (`api`).
impl Section for portcullis_translate::StoreConfig {
    serde_read!();
    fn problems(&self) -> Vec<ConfigProblem> {
        self.validate()
    }
    fn layer_name(&self, _key: &str, _config: &Config) -> Option<String> {
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn read<T: Section>(toml: &str) -> (Option<T>, Vec<ConfigProblem>) {
        let figment = figment::Figment::from(figment::providers::Serialized::defaults(Dict::new()))
            .merge(<figment::providers::Toml as figment::providers::Format>::string(toml));
        let root: Dict = figment.extract().unwrap();
        let mut problems = Vec::new();
        let v = T::read("retry", &root["retry"], &mut problems);
        (v, problems)
    }

    type Retry = Toggle<portcullis_retry::Config, true>;

    #[test]
    fn enabled_is_taken_out_and_the_rest_is_the_layers_config() {
        let (r, p) = read::<Retry>("[retry]\nenabled = false\nmax_attempts = 5");
        assert!(p.is_empty(), "{p:?}");
        let r = r.unwrap();
        assert!(!r.enabled);
        assert_eq!(r.max_attempts, 5);
        let (r, _) = read::<Retry>("[retry]\nmax_attempts = 2");
        assert!(r.unwrap().enabled, "absent enabled keeps the default");
        let (r, _) = read::<Toggle<portcullis_retry::Config, false>>("[retry]\nmax_attempts = 2");
        assert!(!r.unwrap().enabled);
    }

    #[test]
    fn problems_keep_their_key_paths() {
        let (r, p) = read::<Retry>("[retry]\nenabled = \"yes\"\nbudget = { ttl_s = 3 }");
        assert!(r.is_none());
        let paths: Vec<_> = p.iter().map(|p| p.path.as_str()).collect();
        assert_eq!(paths, ["retry.enabled", "retry.budget.ttl_s"], "{p:?}");
        let (_, p) = read::<Retry>("[retry]\nmax_atempts = 3");
        assert_eq!(p[0].path, "retry.max_atempts");
        assert!(p[0].message.contains("unknown key"), "{p:?}");
    }
}
