//! Configuration: figment sources, the typed sections, and validation that reports every
//! problem with its key path.
//!
//! Sources, later wins: the embedded defaults (`src/defaults.toml`) < a TOML or YAML file <
//! `PORTCULLIS_SECTION__KEY` environment variables < command-line flags.
//!
//! # Why validation walks the raw value
//! serde stops at the first error, but `portcullis check` must report *every* problem. So the
//! merged figment value is deserialized section by section (and list entry by list entry),
//! each failure is recorded with its key path, and the typed sections are then checked for
//! meaning (ranges, references between upstreams and models, secrets that resolve).

use std::{
    collections::{BTreeMap, HashSet},
    fmt,
    net::SocketAddr,
    path::{Path, PathBuf},
    time::Duration,
};

use figment::{
    providers::{Env, Format, Toml, Yaml},
    value::{Dict, Value},
    Figment,
};
use portcullis_core::ConfigProblem;
use serde::{de::DeserializeOwned, Deserialize, Serialize};

const EMBEDDED_DEFAULTS: &str = include_str!("defaults.toml");

/// Environment variable naming the config file when `--config` is not given.
pub const CONFIG_ENV: &str = "PORTCULLIS_CONFIG";

// === Sections ===

/// The whole gateway configuration.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Config {
    /// `[server]`
    pub server: ServerConfig,
    /// `[[upstreams]]`
    pub upstreams: Vec<UpstreamConfig>,
    /// `[[models]]`
    pub models: Vec<ModelConfig>,
    /// `[memory_routing]`
    pub memory_routing: MemoryRoutingConfig,
    /// `[cookies]`
    pub cookies: CookiesConfig,
    /// `[retry]`
    pub retry: RetryConfig,
    /// `[circuit_breaker]`
    pub circuit_breaker: CircuitBreakerConfig,
    /// `[dedup]`
    pub dedup: DedupConfig,
    /// `[rate_limit]`
    pub rate_limit: RateLimitConfig,
    /// `[validation]`
    pub validation: ValidationConfig,
    /// `[telemetry]`
    pub telemetry: TelemetryConfig,
    /// `[state]`
    pub state: StateConfig,
}

/// `[server]`: the listener and the gateway's own access control.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ServerConfig {
    /// Address to listen on.
    pub listen: String,
    /// When non-empty, clients must present one of these keys.
    pub api_keys: Vec<Secret>,
    /// Guards `/admin/*`; empty: only loopback clients may call them.
    pub admin_key: Secret,
    /// Largest request body accepted.
    pub max_body_bytes: usize,
    /// How long in-flight requests may run after a shutdown signal.
    #[serde(with = "humantime_serde")]
    pub shutdown_grace: Duration,
}

impl Default for ServerConfig {
    fn default() -> Self {
        Self {
            listen: "127.0.0.1:8764".into(),
            api_keys: Vec::new(),
            admin_key: Secret::default(),
            max_body_bytes: 10 * 1024 * 1024,
            shutdown_grace: Duration::from_secs(30),
        }
    }
}

impl ServerConfig {
    /// The parsed listen address (validated at load).
    pub fn listen_addr(&self) -> SocketAddr {
        self.listen
            .parse()
            .unwrap_or_else(|_| SocketAddr::from(([127, 0, 0, 1], 8764)))
    }
}

/// How the gateway authenticates to an upstream.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum AuthMode {
    /// `Authorization: Bearer <api_key>`
    Bearer,
    /// `x-api-key: <api_key>` (Anthropic)
    XApiKey,
    /// The caller's own `Authorization` / `x-api-key` goes through unchanged.
    Passthrough,
    /// No credentials are sent.
    None,
}

impl AuthMode {
    /// The config spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            AuthMode::Bearer => "bearer",
            AuthMode::XApiKey => "x-api-key",
            AuthMode::Passthrough => "passthrough",
            AuthMode::None => "none",
        }
    }
}

/// `[[upstreams]]`: one provider the gateway forwards to.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UpstreamConfig {
    /// Name that models refer to.
    pub name: String,
    /// Base URL; request paths are appended after its path.
    pub base_url: String,
    /// The upstream's API key (a secret reference such as `env:NAME`).
    #[serde(default)]
    pub api_key: Option<Secret>,
    /// How to authenticate; unset: `bearer` when `api_key` is set, else `passthrough`.
    #[serde(default)]
    pub auth: Option<AuthMode>,
    /// Extra headers sent on every request; values may be secrets.
    #[serde(default)]
    pub headers: BTreeMap<String, Secret>,
    /// Whole-request timeout (until the response headers arrive).
    #[serde(default = "default_timeout", with = "humantime_serde")]
    pub timeout: Duration,
    /// TCP + TLS connect timeout.
    #[serde(default = "default_connect_timeout", with = "humantime_serde")]
    pub connect_timeout: Duration,
    /// Keep a persistent cookie jar for this upstream.
    #[serde(default = "yes")]
    pub cookies: bool,
    /// PEM file with extra trusted root certificates.
    #[serde(default)]
    pub ca_file: String,
}

impl UpstreamConfig {
    /// The effective auth mode.
    pub fn auth_mode(&self) -> AuthMode {
        self.auth.unwrap_or(if self.api_key.is_some() {
            AuthMode::Bearer
        } else {
            AuthMode::Passthrough
        })
    }
}

fn default_timeout() -> Duration {
    Duration::from_secs(600)
}
fn default_connect_timeout() -> Duration {
    Duration::from_secs(10)
}
fn yes() -> bool {
    true
}

/// A per-model rate limit (`models[].rate_limit`).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ModelRateLimit {
    /// Sustained rate.
    pub requests_per_minute: u32,
    /// Bucket size.
    #[serde(default = "default_burst")]
    pub burst: u32,
}

fn default_burst() -> u32 {
    10
}

/// `[[models]]`: what clients may ask for and where it goes.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ModelConfig {
    /// Name clients use: exact, `prefix*`, or `*`.
    pub name: String,
    /// Upstream name.
    pub upstream: String,
    /// Model name sent upstream instead of the client's.
    #[serde(default)]
    pub model: Option<String>,
    /// Other model names tried in order when this one fails.
    #[serde(default)]
    pub fallbacks: Vec<String>,
    /// A tighter rate limit for this model.
    #[serde(default)]
    pub rate_limit: Option<ModelRateLimit>,
}

/// One memory-routing pattern.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct PatternConfig {
    /// Header whose value is matched.
    pub header: String,
    /// Regex (case-insensitive).
    pub pattern: String,
    /// User id chosen when it matches.
    pub user_id: String,
}

/// `[memory_routing]`
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct MemoryRoutingConfig {
    /// Stack the layer.
    pub enabled: bool,
    /// Header set on the upstream request.
    pub upstream_header: String,
    /// Header a client may use to name its user id.
    pub client_header: String,
    /// User id when nothing else decides.
    pub default_user_id: String,
    /// Ordered patterns; the first match wins.
    pub patterns: Vec<PatternConfig>,
}

impl Default for MemoryRoutingConfig {
    fn default() -> Self {
        Self {
            enabled: true,
            upstream_header: "x-sm-user-id".into(),
            client_header: "x-memory-user-id".into(),
            default_user_id: "default".into(),
            patterns: Vec::new(),
        }
    }
}

/// `[cookies]`
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct CookiesConfig {
    /// Where jars are saved and loaded; empty: memory only.
    pub persist_path: String,
    /// Most cookies one upstream's jar holds (expired first, then the oldest, are evicted).
    pub max_cookies: usize,
    /// With `persist_path`: how often changed jars are saved (and once at shutdown).
    #[serde(with = "humantime_serde")]
    pub save_interval: Duration,
}

impl Default for CookiesConfig {
    fn default() -> Self {
        Self {
            persist_path: String::new(),
            max_cookies: 1000,
            save_interval: Duration::from_secs(30),
        }
    }
}

/// `[retry]`
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RetryConfig {
    /// Stack the layer.
    pub enabled: bool,
    /// Total attempts, the first included.
    pub max_attempts: u32,
    /// First backoff step.
    #[serde(with = "humantime_serde")]
    pub base_delay: Duration,
    /// Backoff cap.
    #[serde(with = "humantime_serde")]
    pub max_delay: Duration,
    /// Statuses that are retried.
    pub retry_on: Vec<u16>,
    /// Let `Retry-After` set the wait.
    pub respect_retry_after: bool,
    /// A longer `Retry-After` is not waited for.
    #[serde(with = "humantime_serde")]
    pub max_retry_after: Duration,
}

impl Default for RetryConfig {
    fn default() -> Self {
        Self {
            enabled: true,
            max_attempts: 3,
            base_delay: Duration::from_millis(100),
            max_delay: Duration::from_secs(10),
            retry_on: vec![429, 500, 502, 503, 504, 529],
            respect_retry_after: true,
            max_retry_after: Duration::from_secs(30),
        }
    }
}

/// `[circuit_breaker]`
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct CircuitBreakerConfig {
    /// Stack the layer.
    pub enabled: bool,
    /// Consecutive failures that open it.
    pub failure_threshold: u32,
    /// How long it stays open before a probe.
    #[serde(with = "humantime_serde")]
    pub open_timeout: Duration,
    /// Probe successes that close it.
    pub success_threshold: u32,
}

impl Default for CircuitBreakerConfig {
    fn default() -> Self {
        Self {
            enabled: true,
            failure_threshold: 5,
            open_timeout: Duration::from_secs(30),
            success_threshold: 1,
        }
    }
}

/// `[dedup]`
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct DedupConfig {
    /// Stack the layer (coalesce identical in-flight requests).
    pub enabled: bool,
    /// > 0: replay completed 2xx responses for this long.
    #[serde(with = "humantime_serde")]
    pub cache_ttl: Duration,
    /// Cache bound.
    pub max_entries: u64,
}

impl Default for DedupConfig {
    fn default() -> Self {
        Self {
            enabled: false,
            cache_ttl: Duration::ZERO,
            max_entries: 10_000,
        }
    }
}

/// What a rate-limit bucket is keyed on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RateLimitKey {
    /// The caller's API key (hashed).
    ApiKey,
    /// The memory user id.
    UserId,
    /// The client IP.
    Ip,
    /// One bucket for everyone.
    Global,
}

/// `[rate_limit]`
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RateLimitConfig {
    /// Stack the layer.
    pub enabled: bool,
    /// Sustained rate.
    pub requests_per_minute: u32,
    /// Bucket size.
    pub burst: u32,
    /// What the bucket is keyed on.
    pub key: RateLimitKey,
    /// > 0: wait up to this long for a slot instead of answering 429.
    #[serde(with = "humantime_serde")]
    pub queue_timeout: Duration,
}

impl Default for RateLimitConfig {
    fn default() -> Self {
        Self {
            enabled: false,
            requests_per_minute: 60,
            burst: 10,
            key: RateLimitKey::ApiKey,
            queue_timeout: Duration::ZERO,
        }
    }
}

/// How strictly request bodies are checked.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum ValidationLevel {
    /// Also reject unknown top-level fields.
    Strict,
    /// Required fields, types and ranges.
    #[default]
    Moderate,
    /// A JSON object with a `model`.
    Lenient,
}

/// `[validation]`
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ValidationConfig {
    /// Level.
    pub level: ValidationLevel,
}

/// Log output format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    /// For humans.
    #[default]
    Pretty,
    /// One JSON object per line.
    Json,
}

/// `[telemetry]`
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TelemetryConfig {
    /// Log format.
    pub log_format: LogFormat,
    /// OTLP/HTTP base URL; empty: no trace export.
    pub otlp_endpoint: String,
    /// `service.name` of exported spans.
    pub service_name: String,
}

impl Default for TelemetryConfig {
    fn default() -> Self {
        Self {
            log_format: LogFormat::Pretty,
            otlp_endpoint: String::new(),
            service_name: "portcullis".into(),
        }
    }
}

/// Where shared state lives.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum StateBackend {
    /// In this process.
    #[default]
    Memory,
    /// In Redis, shared across replicas.
    Redis,
}

/// `[state]`
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct StateConfig {
    /// Backend.
    pub backend: StateBackend,
    /// Redis URL (may be a secret reference).
    pub redis_url: Secret,
}

impl Default for StateConfig {
    fn default() -> Self {
        Self {
            backend: StateBackend::Memory,
            redis_url: Secret::literal("redis://127.0.0.1:6379"),
        }
    }
}

// === Secrets ===

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

    fn resolve(&mut self, path: &str, problems: &mut Vec<ConfigProblem>) {
        if let Some(name) = self.env_name() {
            match std::env::var(name) {
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

// === Loading ===

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

/// Every problem found while loading, each with its key path.
#[derive(Debug, Clone)]
pub struct ConfigErrors(pub Vec<ConfigProblem>);

impl fmt::Display for ConfigErrors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, p) in self.0.iter().enumerate() {
            if i > 0 {
                writeln!(f)?;
            }
            write!(f, "{p}")?;
        }
        Ok(())
    }
}

impl std::error::Error for ConfigErrors {}

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
        let path = locate(file);
        let mut figment = Figment::from(Toml::string(EMBEDDED_DEFAULTS));
        let source = match &path {
            None => Source::Embedded,
            Some(p) => {
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
                Source::File(p.clone())
            }
        };
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
        Self::from_figment(&figment, source)
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
        macro_rules! section {
            ($field:ident) => {
                if let Some(v) = root.get(stringify!($field)) {
                    if let Some(s) = deserialize_at(stringify!($field), v, &mut problems) {
                        cfg.$field = s;
                    }
                }
            };
        }
        section!(server);
        section!(memory_routing);
        section!(cookies);
        section!(retry);
        section!(circuit_breaker);
        section!(dedup);
        section!(rate_limit);
        section!(validation);
        section!(telemetry);
        section!(state);
        cfg.upstreams = list_at("upstreams", root.get("upstreams"), &mut problems);
        cfg.models = list_at("models", root.get("models"), &mut problems);

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
        for (i, u) in self.upstreams.iter_mut().enumerate() {
            if let Some(k) = &mut u.api_key {
                k.resolve(&format!("upstreams[{i}].api_key"), problems);
            }
            for (name, v) in u.headers.iter_mut() {
                v.resolve(&format!("upstreams[{i}].headers.{name}"), problems);
            }
        }
        self.state.redis_url.resolve("state.redis_url", problems);
    }

    /// Check meaning: ranges, names, references. Pushes every problem found.
    fn validate(&self, problems: &mut Vec<ConfigProblem>, warnings: &mut Vec<ConfigProblem>) {
        let mut p = |path: String, msg: String| problems.push(ConfigProblem::new(path, msg));

        // [server]
        if self.server.listen.parse::<SocketAddr>().is_err() {
            p(
                "server.listen".into(),
                format!(
                    "{:?} is not a socket address like 127.0.0.1:8764",
                    self.server.listen
                ),
            );
        }
        if self.server.max_body_bytes == 0 {
            p("server.max_body_bytes".into(), "must be >= 1".into());
        }

        // [[upstreams]]
        let mut names = HashSet::new();
        for (i, u) in self.upstreams.iter().enumerate() {
            let at = |k: &str| format!("upstreams[{i}].{k}");
            if u.name.trim().is_empty() {
                p(at("name"), "must not be empty".into());
            } else if !names.insert(u.name.as_str()) {
                p(at("name"), format!("duplicate upstream name {:?}", u.name));
            }
            match url::Url::parse(&u.base_url) {
                Ok(url) if matches!(url.scheme(), "http" | "https") && url.host().is_some() => {
                    if url.query().is_some() || url.fragment().is_some() {
                        p(at("base_url"), "must not have a query or fragment".into());
                    }
                }
                Ok(url) => p(
                    at("base_url"),
                    format!(
                        "{:?}: scheme must be http or https with a host (got {:?})",
                        u.base_url,
                        url.scheme()
                    ),
                ),
                Err(e) => p(
                    at("base_url"),
                    format!("{:?} is not a URL: {e}", u.base_url),
                ),
            }
            let auth = u.auth_mode();
            if matches!(auth, AuthMode::Bearer | AuthMode::XApiKey) && u.api_key.is_none() {
                p(
                    at("api_key"),
                    format!("required when auth = \"{}\"", auth.as_str()),
                );
            }
            for name in u.headers.keys() {
                if http::HeaderName::from_bytes(name.as_bytes()).is_err() {
                    p(
                        format!("upstreams[{i}].headers.{name}"),
                        "is not a valid header name".into(),
                    );
                }
            }
            if u.timeout.is_zero() {
                p(at("timeout"), "must be > 0".into());
            }
            if u.connect_timeout.is_zero() {
                p(at("connect_timeout"), "must be > 0".into());
            }
            if !u.ca_file.is_empty() {
                if let Err(e) = crate::upstream::client::read_ca_file(Path::new(&u.ca_file)) {
                    p(at("ca_file"), e);
                }
            }
        }

        // [[models]]
        let mut model_names = HashSet::new();
        for (i, m) in self.models.iter().enumerate() {
            let at = |k: &str| format!("models[{i}].{k}");
            if m.name.trim().is_empty() {
                p(at("name"), "must not be empty".into());
            } else if !model_names.insert(m.name.as_str()) {
                p(at("name"), format!("duplicate model name {:?}", m.name));
            }
            if m.name.len() > 1 && m.name[..m.name.len() - 1].contains('*') {
                p(
                    at("name"),
                    "\"*\" is only allowed at the end (prefix match) or alone".into(),
                );
            }
            if !self.upstreams.iter().any(|u| u.name == m.upstream) {
                p(
                    at("upstream"),
                    format!(
                        "unknown upstream {:?}; configured: {}",
                        m.upstream,
                        list(self.upstreams.iter().map(|u| u.name.as_str()))
                    ),
                );
            }
            for (j, f) in m.fallbacks.iter().enumerate() {
                if f == &m.name {
                    p(
                        format!("models[{i}].fallbacks[{j}]"),
                        "a model cannot fall back to itself".into(),
                    );
                } else if !self.models.iter().any(|o| &o.name == f) {
                    p(
                        format!("models[{i}].fallbacks[{j}]"),
                        format!("unknown model {f:?}"),
                    );
                }
            }
            if let Some(rl) = &m.rate_limit {
                if rl.requests_per_minute == 0 {
                    p(at("rate_limit.requests_per_minute"), "must be >= 1".into());
                }
                if rl.burst == 0 {
                    p(at("rate_limit.burst"), "must be >= 1".into());
                }
            }
        }
        if self.upstreams.is_empty() {
            p(
                "upstreams".into(),
                "at least one upstream is required".into(),
            );
        }
        if self.models.is_empty() {
            p("models".into(), "at least one model is required".into());
        }

        // Layer sections: each layer crate validates its own config.
        crate::stack::validate_layers(self, &mut |path, msg| p(path, msg), warnings);

        // [telemetry]
        if !self.telemetry.otlp_endpoint.is_empty() {
            match url::Url::parse(&self.telemetry.otlp_endpoint) {
                Ok(u) if matches!(u.scheme(), "http" | "https") => {}
                _ => p(
                    "telemetry.otlp_endpoint".into(),
                    format!(
                        "{:?} is not an http(s) URL like http://127.0.0.1:4318",
                        self.telemetry.otlp_endpoint
                    ),
                ),
            }
        }
        if self.telemetry.service_name.is_empty() {
            p("telemetry.service_name".into(), "must not be empty".into());
        }
        // [state]
        if self.state.backend == StateBackend::Redis
            && self.state.redis_url.env_name().is_none()
            && !self.state.redis_url.expose().starts_with("redis://")
            && !self.state.redis_url.expose().starts_with("rediss://")
        {
            p(
                "state.redis_url".into(),
                "must start with redis:// or rediss://".into(),
            );
        }
    }

    /// One-paragraph summary for `portcullis check`.
    pub fn summary(&self) -> String {
        use std::fmt::Write;
        let mut s = String::new();
        let _ = writeln!(s, "listen: {}", self.server.listen);
        let _ = writeln!(s, "upstreams:");
        for u in &self.upstreams {
            let _ = writeln!(
                s,
                "  {} -> {} (auth {}, cookies {})",
                u.name,
                u.base_url,
                u.auth_mode().as_str(),
                if u.cookies { "on" } else { "off" }
            );
        }
        let _ = writeln!(s, "models:");
        for m in &self.models {
            let _ = write!(s, "  {} -> {}", m.name, m.upstream);
            if let Some(r) = &m.model {
                let _ = write!(s, " (as {r})");
            }
            if !m.fallbacks.is_empty() {
                let _ = write!(s, " fallbacks [{}]", m.fallbacks.join(", "));
            }
            let _ = writeln!(s);
        }
        let _ = writeln!(s, "layers: {}", self.enabled_layers().join(", "));
        s
    }

    /// Names of the layers this config stacks, outermost first.
    pub fn enabled_layers(&self) -> Vec<String> {
        let mut v = vec![format!("validation ({:?})", self.validation.level).to_lowercase()];
        if self.memory_routing.enabled {
            v.push("memory_routing".into());
        }
        if self.rate_limit.enabled {
            v.push("rate_limit".into());
        }
        if self.dedup.enabled {
            v.push(if self.dedup.cache_ttl.is_zero() {
                "dedup".into()
            } else {
                format!(
                    "dedup (cache {})",
                    humantime::format_duration(self.dedup.cache_ttl)
                )
            });
        }
        if self.retry.enabled {
            v.push("retry".into());
        }
        if self.circuit_breaker.enabled {
            v.push("circuit_breaker".into());
        }
        if self.upstreams.iter().any(|u| u.cookies) {
            v.push("cookie_session".into());
        }
        v
    }
}

const SECTIONS: &[&str] = &[
    "server",
    "upstreams",
    "models",
    "memory_routing",
    "cookies",
    "retry",
    "circuit_breaker",
    "dedup",
    "rate_limit",
    "validation",
    "telemetry",
    "state",
];

fn list<'a>(it: impl Iterator<Item = &'a str>) -> String {
    let v: Vec<&str> = it.collect();
    if v.is_empty() {
        "none".into()
    } else {
        v.join(", ")
    }
}

fn deserialize_at<T: DeserializeOwned>(
    path: &str,
    v: &Value,
    problems: &mut Vec<ConfigProblem>,
) -> Option<T> {
    match v.deserialize::<T>() {
        Ok(t) => Some(t),
        Err(e) => {
            for err in e {
                problems.push(figment_problem(path, &err));
            }
            None
        }
    }
}

fn list_at<T: DeserializeOwned>(
    path: &str,
    v: Option<&Value>,
    problems: &mut Vec<ConfigProblem>,
) -> Vec<T> {
    let Some(v) = v else { return Vec::new() };
    let Some(items) = v.as_array() else {
        problems.push(ConfigProblem::new(
            path,
            format!("must be a list ([[{path}]] tables in TOML)"),
        ));
        return Vec::new();
    };
    items
        .iter()
        .enumerate()
        .filter_map(|(i, item)| deserialize_at(&format!("{path}[{i}]"), item, problems))
        .collect()
}

/// Turn one figment error into a problem whose path is the full key path.
fn figment_problem(base: &str, err: &figment::Error) -> ConfigProblem {
    use figment::error::Kind;
    let mut path = base.to_string();
    for seg in &err.path {
        if seg.parse::<usize>().is_ok() {
            path.push_str(&format!("[{seg}]"));
        } else {
            if !path.is_empty() {
                path.push('.');
            }
            path.push_str(seg);
        }
    }
    let join = |path: &str, k: &str| {
        // figment's path may already end with the offending key.
        if path == k || path.ends_with(&format!(".{k}")) {
            path.to_string()
        } else if path.is_empty() {
            k.to_string()
        } else {
            format!("{path}.{k}")
        }
    };
    match &err.kind {
        Kind::UnknownField(field, expected) => ConfigProblem::new(
            join(&path, field),
            format!("unknown key; expected one of {}", expected.join(", ")),
        ),
        Kind::MissingField(field) => ConfigProblem::new(join(&path, field), "is required"),
        Kind::DuplicateField(field) => ConfigProblem::new(join(&path, field), "is set twice"),
        other => {
            let mut msg = other.to_string();
            if let Some(md) = &err.metadata {
                msg.push_str(&format!(" (from {})", md.name));
            }
            ConfigProblem::new(
                if path.is_empty() {
                    "config".into()
                } else {
                    path
                },
                msg,
            )
        }
    }
}
