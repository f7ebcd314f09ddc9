//! Configuration: figment sources, the typed sections, and validation that reports every
//! problem with its key path.
//!
//! Sources, later wins: the embedded defaults (`defaults.toml`) < a TOML or YAML file <
//! `PORTCULLIS_SECTION__KEY` environment variables < command-line flags.
//!
//! | module | holds |
//! | --- | --- |
//! | this one | loading, the `check` summary |
//! | [`sections`] | the table of sections ([`Config`]): each layer crate's own `Config`, in a [`Toggle`] when it can be switched off |
//! | [`gateway`] | `[server]`, `[telemetry]`, `[state]` |
//! | [`upstreams`] | `[[upstreams]]`, `[[models]]` and the references between them |
//! | [`secret`] | `env:NAME` / `os.environ/NAME` references |
//! | `problems` | figment errors turned into key paths |
//!
//! # Why validation walks the raw value
//! serde stops at the first error, but `portcullis check` must report *every* problem. So the
//! merged figment value is read section by section (and list entry by list entry), each
//! failure is recorded with its key path, and the typed sections are then checked for meaning
//! (ranges, references between upstreams and models, secrets that resolve).

// Defines `Config` from the table of sections in `sections.rs`: each line is a config key
// and its type; the type's `Section` impl says how it is read, checked and named in
// `check`'s layer list. Defined before the modules so `sections.rs` can use it.
macro_rules! sections_table {
    ($( $(#[$doc:meta])* $key:ident : $ty:ty, )*) => {
        /// The whole gateway configuration.
        #[derive(Debug, Clone, Default, serde::Serialize)]
        pub struct Config {
            /// `[[upstreams]]`
            pub upstreams: Vec<UpstreamConfig>,
            /// `[[models]]`
            pub models: Vec<ModelConfig>,
            /// `[[keys]]`
            pub keys: Vec<KeyConfig>,
            $( $(#[$doc])* pub $key: $ty, )*
        }

        /// Every top-level key.
        pub(super) const SECTIONS: &[&str] = &[
            "upstreams", "models", "keys", $(stringify!($key)),*
        ];

        pub(super) fn read_sections(cfg: &mut Config, root: &Dict, problems: &mut Vec<ConfigProblem>) {
            $(
                if let Some(v) = root.get(stringify!($key)) {
                    if let Some(s) = <$ty as Section>::read(stringify!($key), v, problems) {
                        cfg.$key = s;
                    }
                }
            )*
        }

        impl Config {
            pub(super) fn check_sections(
                &self,
                problems: &mut Vec<ConfigProblem>,
                warnings: &mut Vec<ConfigProblem>,
            ) {
                let at = |key: &str, p: ConfigProblem| {
                    ConfigProblem::new(format!("{key}.{}", p.path), p.message)
                };
                $(
                    let key = stringify!($key);
                    problems.extend(self.$key.problems().into_iter().map(|p| at(key, p)));
                    warnings.extend(self.$key.warnings().into_iter().map(|p| at(key, p)));
                )*
            }

            /// Names of the layers this config stacks, outermost first.
            pub fn enabled_layers(&self) -> Vec<String> {
                let mut v = Vec::new();
                $( v.extend(self.$key.layer_name(stringify!($key), self)); )*
                v
            }
        }
    };
}

pub mod gateway;
mod problems;
pub mod secret;
pub mod sections;
pub mod upstreams;

use std::{
    fmt,
    path::{Path, PathBuf},
};

use figment::{
    providers::{Env, Format, Toml, Yaml},
    value::Dict,
    Figment,
};
use portcullis_core::ConfigProblem;

pub use gateway::{KeyConfig, LogFormat, ServerConfig, StateBackend, StateConfig, TelemetryConfig};
pub use problems::ConfigErrors;
use problems::{figment_problem, list_at};
pub use secret::Secret;
use sections::{read_sections, SECTIONS};
pub use sections::{Config, Section, Toggle};
pub use upstreams::{AuthMode, HealthCheckConfig, ModelConfig, UpstreamConfig};

const EMBEDDED_DEFAULTS: &str = include_str!("defaults.toml");

/// Environment variable naming the config file when `--config` is not given.
pub const CONFIG_ENV: &str = "PORTCULLIS_CONFIG";

/// Where the configuration came from, for the start-up log and `check`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Source {
    /// The embedded defaults only (plus environment).
    Embedded,
    /// A file.
    File(PathBuf),
}

impl fmt::Display for Source {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Source::Embedded => f.write_str("embedded defaults"),
            Source::File(p) => write!(f, "{}", p.display()),
        }
    }
}

/// Command-line overrides, applied last.
#[derive(Debug, Clone, Default)]
pub struct Overrides {
    /// `--listen`
    pub listen: Option<String>,
}

/// A loaded, validated configuration and the warnings found on the way.
#[derive(Debug, Clone)]
pub struct Loaded {
    /// The configuration.
    pub config: Config,
    /// Where it came from.
    pub source: Source,
    /// Problems that do not stop the gateway (e.g. a pattern that can never win).
    pub warnings: Vec<ConfigProblem>,
}

/// Pick the config file: `--config`, else `$PORTCULLIS_CONFIG`, else `./portcullis.toml` if present.
pub fn locate(explicit: Option<&Path>) -> Option<PathBuf> {
    if let Some(p) = explicit {
        return Some(p.to_path_buf());
    }
    if let Some(p) = std::env::var_os(CONFIG_ENV).filter(|p| !p.is_empty()) {
        return Some(PathBuf::from(p));
    }
    let local = PathBuf::from("portcullis.toml");
    local.exists().then_some(local)
}

impl Config {
    /// Load from the usual sources, validate, resolve secrets.
    pub fn load(file: Option<&Path>, overrides: &Overrides) -> Result<Loaded, ConfigErrors> {
        let source = match locate(file) {
            None => Source::Embedded,
            Some(p) => Source::File(p),
        };
        Self::load_from(&source, overrides)
    }

    /// Load again from the sources a [`load`](Self::load) found (a reload reads the same file,
    /// or again none, whatever appeared since), with the environment as it is now.
    pub fn load_from(source: &Source, overrides: &Overrides) -> Result<Loaded, ConfigErrors> {
        let mut figment = Figment::from(Toml::string(EMBEDDED_DEFAULTS));
        if let Source::File(p) = source {
            if !p.exists() {
                return Err(ConfigErrors(vec![ConfigProblem::new(
                    "config",
                    format!("file {} does not exist", p.display()),
                )]));
            }
            let ext = p.extension().and_then(|e| e.to_str()).unwrap_or("");
            figment = match ext {
                "yaml" | "yml" => figment.merge(Yaml::file_exact(p)),
                "toml" => figment.merge(Toml::file_exact(p)),
                other => {
                    return Err(ConfigErrors(vec![ConfigProblem::new(
                        "config",
                        format!(
                            "{}: unknown extension {other:?}; use .toml, .yaml or .yml",
                            p.display()
                        ),
                    )]))
                }
            };
        }
        figment = figment.merge(
            // Only PORTCULLIS_SECTION__KEY variables are configuration. A flat variable
            // (PORTCULLIS_CONFIG, or a deployment's own PORTCULLIS_FOO) is not; a nested one
            // with a typo (PORTCULLIS_RETRY__MAX_ATEMPTS) is still an unknown-key error.
            Env::prefixed("PORTCULLIS_")
                .filter(|k| k.as_str().contains("__"))
                .split("__"),
        );
        if let Some(l) = &overrides.listen {
            figment = figment.merge(("server.listen", l.as_str()));
        }
        Self::from_figment(&figment, source.clone())
    }

    /// Load from TOML text only (tests, `check` on a string).
    pub fn from_toml(text: &str) -> Result<Loaded, ConfigErrors> {
        let figment = Figment::from(Toml::string(EMBEDDED_DEFAULTS)).merge(Toml::string(text));
        Self::from_figment(&figment, Source::Embedded)
    }

    fn from_figment(figment: &Figment, source: Source) -> Result<Loaded, ConfigErrors> {
        let mut problems = Vec::new();
        let root: Dict = match figment.extract::<Dict>() {
            Ok(d) => d,
            Err(e) => {
                for err in e {
                    problems.push(figment_problem("", &err));
                }
                return Err(ConfigErrors(problems));
            }
        };
        let mut cfg = Config::default();
        for key in root.keys() {
            if !SECTIONS.contains(&key.as_str()) {
                problems.push(ConfigProblem::new(
                    key.clone(),
                    format!("unknown key; expected one of {}", SECTIONS.join(", ")),
                ));
            }
        }
        read_sections(&mut cfg, &root, &mut problems);
        cfg.upstreams = list_at("upstreams", root.get("upstreams"), &mut problems);
        cfg.models = list_at("models", root.get("models"), &mut problems);
        cfg.keys = list_at("keys", root.get("keys"), &mut problems);

        let mut warnings = Vec::new();
        cfg.validate(&mut problems, &mut warnings);
        cfg.resolve_secrets(&mut problems);
        if problems.is_empty() {
            Ok(Loaded {
                config: cfg,
                source,
                warnings,
            })
        } else {
            Err(ConfigErrors(problems))
        }
    }

    fn resolve_secrets(&mut self, problems: &mut Vec<ConfigProblem>) {
        for (i, k) in self.server.api_keys.iter_mut().enumerate() {
            k.resolve(&format!("server.api_keys[{i}]"), problems);
        }
        self.server.admin_key.resolve("server.admin_key", problems);
        for (i, k) in self.keys.iter_mut().enumerate() {
            k.key.resolve(&format!("keys[{i}].key"), problems);
        }
        for (i, u) in self.upstreams.iter_mut().enumerate() {
            if let Some(k) = &mut u.api_key {
                k.resolve(&format!("upstreams[{i}].api_key"), problems);
            }
            for (j, k) in u.api_keys.iter_mut().enumerate() {
                k.resolve(&format!("upstreams[{i}].api_keys[{j}]"), problems);
            }
            for (name, v) in u.headers.iter_mut() {
                v.resolve(&format!("upstreams[{i}].headers.{name}"), problems);
            }
        }
        for (i, m) in self.models.iter_mut().enumerate() {
            for (name, v) in m.headers.iter_mut() {
                v.resolve(&format!("models[{i}].headers.{name}"), problems);
            }
        }
        self.state.redis_url.resolve("state.redis_url", problems);
    }

    /// Check meaning: ranges, names, references. Pushes every problem found.
    fn validate(&self, problems: &mut Vec<ConfigProblem>, warnings: &mut Vec<ConfigProblem>) {
        upstreams::check(&self.upstreams, &self.models, problems);
        upstreams::warnings(&self.upstreams, &self.models, warnings);
        gateway::check_keys(&self.keys, problems);
        self.check_sections(problems, warnings);
    }

    /// One-paragraph summary for `portcullis check`.
    pub fn summary(&self) -> String {
        use std::fmt::Write;
        let mut s = String::new();
        let _ = write!(s, "listen: {}", self.server.listen);
        if self.server.tls_enabled() {
            let _ = write!(s, " (TLS, certificate {})", self.server.tls_cert);
        }
        let _ = writeln!(s);
        let _ = writeln!(s, "upstreams:");
        for u in &self.upstreams {
            let _ = writeln!(
                s,
                "  {} -> {} (api {}, auth {}, cookies {})",
                u.name,
                u.base_url,
                u.api,
                u.auth_mode().as_str(),
                if u.cookies { "on" } else { "off" }
            );
            if !u.api_keys.is_empty() {
                let _ = writeln!(s, "    {} provider keys in rotation", u.api_keys.len());
            }
            if u.health_check.enabled() {
                let _ = writeln!(
                    s,
                    "    health check GET {} every {}",
                    u.health_check.path,
                    humantime::format_duration(u.health_check.interval)
                );
            }
        }
        let _ = writeln!(s, "models:");
        for m in &self.models {
            let _ = write!(s, "  {} -> {}", m.name, m.upstream);
            if let Some(r) = &m.model {
                let _ = write!(s, " (as {r})");
            }
            if self.models.iter().filter(|o| o.name == m.name).count() > 1 {
                let _ = write!(s, " weight {}", m.weight);
            }
            if !m.fallbacks.is_empty() {
                let _ = write!(s, " fallbacks [{}]", m.fallbacks.join(", "));
            }
            let _ = writeln!(s);
        }
        let _ = writeln!(s, "layers: {}", self.enabled_layers().join(", "));
        s
    }
}
