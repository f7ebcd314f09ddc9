//! `[[upstreams]]` and `[[models]]`: where requests go, and the checks that tie the two lists
//! together (every model names a known upstream, every fallback a known model).

use std::{collections::BTreeMap, collections::HashSet, path::Path, time::Duration};

use portcullis_core::ConfigProblem;
use serde::{Deserialize, Serialize};

use super::{problems::list, Secret};

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
    /// What `models[].upstream` refers to; also the `upstream` label of logs and metrics.
    pub name: String,
    /// Scheme, host and optional path prefix; request paths are appended after the prefix.
    pub base_url: String,
    /// The upstream's API key (a secret reference such as `env:NAME`).
    #[serde(default)]
    pub api_key: Option<Secret>,
    /// Several provider keys used in turn (secrets, like `api_key`); a key answered 429, 401
    /// or 403 rests (its `Retry-After`, else 60 s) while the others serve.
    #[serde(default)]
    pub api_keys: Vec<Secret>,
    /// Active health check: `GET path` every `interval`; failing takes the upstream out of
    /// its models' rotation until it passes again.
    #[serde(default)]
    pub health_check: HealthCheckConfig,
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
    /// The API shape the upstream speaks: `any` (requests go as the client sent them),
    /// `openai` (chat completions; `/v1/messages` and `/v1/responses` are translated to it) or
    /// `anthropic` (messages; `/v1/chat/completions` and `/v1/responses` are translated).
    #[serde(default)]
    pub api: portcullis_translate::Api,
    /// When non-zero: no first response byte by then (from the request's start) counts as
    /// a timeout, retried and failed over like one; zero: only `timeout` applies.
    #[serde(default, with = "humantime_serde")]
    pub first_byte_timeout: Duration,
    /// When non-zero: a response body silent this long is ended (a stream with the error
    /// event of the caller's API).
    #[serde(default, with = "humantime_serde")]
    pub idle_timeout: Duration,
    /// `upstream`: one jar shared by all callers (what Cloudflare's clearance needs);
    /// `caller`: one jar per caller identity (kept in memory; bounded by
    /// `cookies.max_callers`, least recently used evicted).
    #[serde(default)]
    pub cookie_scope: portcullis_cookie_session::CookieScope,
}

impl UpstreamConfig {
    /// The effective auth mode.
    pub fn auth_mode(&self) -> AuthMode {
        self.auth
            .unwrap_or(if self.api_key.is_some() || !self.api_keys.is_empty() {
                AuthMode::Bearer
            } else {
                AuthMode::Passthrough
            })
    }

    /// Whether this upstream is Anthropic's own API: `api = "anthropic"`, or a base URL on
    /// `api.anthropic.com` (also behind a router that names it in its path, as Supermemory's
    /// does). A model-less Anthropic request (message batches, files: the SDK sends
    /// `anthropic-version` on every request) goes to the first such upstream, not to `*`.
    pub fn speaks_anthropic(&self) -> bool {
        use portcullis_translate::Api;
        match self.api {
            Api::Anthropic => true,
            Api::OpenAi | Api::OpenAiResponses => false,
            Api::Any => url::Url::parse(&self.base_url).is_ok_and(|u| {
                let routed = u.path().trim_end_matches('/');
                u.host_str() == Some("api.anthropic.com")
                    || routed.ends_with("/https://api.anthropic.com")
            }),
        }
    }
}

#[cfg(test)]
mod tests {
    use figment::providers::Format as _;

    use super::*;

    fn upstream(base_url: &str, api: &str) -> UpstreamConfig {
        figment::Figment::from(figment::providers::Toml::string(&format!(
            "name = \"u\"\nbase_url = \"{base_url}\"\napi = \"{api}\"\n"
        )))
        .extract()
        .unwrap()
    }

    #[test]
    fn anthropics_own_api_is_told_by_its_api_or_its_host() {
        assert!(upstream("https://api.anthropic.com", "any").speaks_anthropic());
        assert!(upstream(
            "https://api.supermemory.ai/v3/https://api.anthropic.com",
            "any"
        )
        .speaks_anthropic());
        assert!(upstream("http://127.0.0.1:9", "anthropic").speaks_anthropic());
        assert!(!upstream("https://api.openai.com", "any").speaks_anthropic());
        assert!(!upstream("https://api.anthropic.com.evil.example", "any").speaks_anthropic());
        assert!(!upstream("https://api.anthropic.com", "openai").speaks_anthropic());
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
fn one() -> u32 {
    1
}

/// `[[models]]`: what clients may ask for and where it goes.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ModelConfig {
    /// Name clients use: exact, `prefix*`, or `*`.
    pub name: String,
    /// The `[[upstreams]]` entry that serves it.
    pub upstream: String,
    /// Model name sent upstream instead of the client's.
    #[serde(default)]
    pub model: Option<String>,
    /// Other model names tried in order when this one fails.
    #[serde(default)]
    pub fallbacks: Vec<String>,
    /// This deployment's share when several `[[models]]` entries have one name (>= 1).
    #[serde(default = "one")]
    pub weight: u32,
    /// A tighter rate limit for this model (the rate-limit layer's own quota type).
    #[serde(default)]
    pub rate_limit: Option<portcullis_rate_limit::Quota>,
    /// Body defaults merged into the request before sending (the client's own values win,
    /// objects are merged key by key), e.g. `thinking = { type = "enabled", budget_tokens =
    /// 4096 }`.
    #[serde(default)]
    pub params: serde_json::Map<String, serde_json::Value>,
    /// Extra request headers for this model; values may be secrets.
    #[serde(default)]
    pub headers: BTreeMap<String, Secret>,
}

/// `upstreams[].health_check`: `{ path = "/v1/models", interval = "30s" }`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct HealthCheckConfig {
    /// Path (and query) under the upstream's `base_url` to `GET`; empty: no active check.
    pub path: String,
    /// Time between two checks.
    #[serde(with = "humantime_serde")]
    pub interval: Duration,
}

impl Default for HealthCheckConfig {
    fn default() -> Self {
        Self {
            path: String::new(),
            interval: Duration::from_secs(30),
        }
    }
}

impl HealthCheckConfig {
    /// Whether an active check runs.
    pub fn enabled(&self) -> bool {
        !self.path.is_empty()
    }
}

/// The top-level request fields an upstream of `api` understands (for `check`'s warning about
/// `params` it would not).
fn api_fields(api: portcullis_translate::Api) -> Vec<&'static str> {
    use portcullis_translate::Api;
    use portcullis_validation::{known_fields, Route};
    let routes: &[Route] = match api {
        Api::OpenAi => &[
            Route::ChatCompletions,
            Route::Completions,
            Route::Embeddings,
        ],
        Api::OpenAiResponses => &[
            Route::ChatCompletions,
            Route::Completions,
            Route::Embeddings,
            Route::Responses,
        ],
        Api::Anthropic => &[Route::Messages],
        Api::Any => &Route::ALL,
    };
    routes
        .iter()
        .flat_map(|r| known_fields(*r).iter().copied())
        .collect()
}

/// Settings that load but will not do what they say: `params` keys the model's upstream API
/// has no field for.
pub(super) fn warnings(
    upstreams: &[UpstreamConfig],
    models: &[ModelConfig],
    warnings: &mut Vec<ConfigProblem>,
) {
    for (i, m) in models.iter().enumerate() {
        let Some(u) = upstreams.iter().find(|u| u.name == m.upstream) else {
            continue;
        };
        let fields = api_fields(u.api);
        for key in m.params.keys() {
            if !fields.contains(&key.as_str()) {
                warnings.push(ConfigProblem::new(
                    format!("models[{i}].params.{key}"),
                    format!(
                        "upstream {:?} (api = \"{}\") has no request field {key:?}; it is sent \
                         as it is",
                        u.name, u.api
                    ),
                ));
            }
        }
    }
}

/// Read a PEM CA file into root certificates; the error is a message for `check`. The
/// upstream client loads `ca_file` with this same function, so a file that passes `check`
/// also loads.
pub fn read_ca_file(
    path: &Path,
) -> Result<Vec<rustls::pki_types::CertificateDer<'static>>, String> {
    let pem = std::fs::read(path).map_err(|e| format!("cannot read {}: {e}", path.display()))?;
    let certs: Result<Vec<_>, _> = rustls_pemfile::certs(&mut pem.as_slice()).collect();
    let certs =
        certs.map_err(|e| format!("{}: not a PEM certificate file: {e}", path.display()))?;
    if certs.is_empty() {
        return Err(format!("{}: no certificates found", path.display()));
    }
    Ok(certs)
}

/// Check both lists and the references between them.
pub(super) fn check(
    upstreams: &[UpstreamConfig],
    models: &[ModelConfig],
    problems: &mut Vec<ConfigProblem>,
) {
    let mut p = |path: String, msg: String| problems.push(ConfigProblem::new(path, msg));

    let mut names = HashSet::new();
    for (i, u) in upstreams.iter().enumerate() {
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
                // /health/upstreams shows base_url: credentials belong in api_key or headers.
                if !url.username().is_empty() || url.password().is_some() {
                    p(
                        at("base_url"),
                        "must not carry credentials (user:password@); use api_key or headers"
                            .into(),
                    );
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
        if matches!(auth, AuthMode::Bearer | AuthMode::XApiKey)
            && u.api_key.is_none()
            && u.api_keys.is_empty()
        {
            p(
                at("api_key"),
                format!("required when auth = \"{}\" (or api_keys)", auth.as_str()),
            );
        }
        if !u.api_keys.is_empty() {
            if u.api_key.is_some() {
                p(
                    at("api_keys"),
                    "set either api_key or api_keys, not both (list every key in api_keys)".into(),
                );
            }
            if !matches!(auth, AuthMode::Bearer | AuthMode::XApiKey) {
                p(
                    at("api_keys"),
                    format!(
                        "needs auth = \"bearer\" or \"x-api-key\" (auth is \"{}\")",
                        auth.as_str()
                    ),
                );
            }
        }
        if u.health_check.enabled() && u.health_check.interval.is_zero() {
            p(at("health_check.interval"), "must be > 0".into());
        }
        if u.health_check.enabled()
            && http::uri::PathAndQuery::try_from(u.health_check.path.as_str()).is_err()
        {
            p(at("health_check.path"), "is not a valid path".into());
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
            if let Err(e) = read_ca_file(Path::new(&u.ca_file)) {
                p(at("ca_file"), e);
            }
        }
    }

    for (i, m) in models.iter().enumerate() {
        let at = |k: &str| format!("models[{i}].{k}");
        if m.name.trim().is_empty() {
            p(at("name"), "must not be empty".into());
        }
        if m.weight == 0 {
            p(at("weight"), "must be >= 1".into());
        }
        // Entries sharing a name are one model's deployments: what belongs to the model (its
        // fallbacks and rate limit) must not disagree between them. An entry that leaves it
        // unset shares the other entries' setting.
        if let Some((j, o)) = models[..i].iter().enumerate().find(|(_, o)| {
            o.name == m.name
                && !o.fallbacks.is_empty()
                && !m.fallbacks.is_empty()
                && o.fallbacks != m.fallbacks
        }) {
            p(
                at("fallbacks"),
                format!(
                    "differs from models[{j}].fallbacks {:?}; deployments of {:?} share one \
                     fallbacks list",
                    o.fallbacks, m.name
                ),
            );
        }
        if let Some((j, _)) = models[..i].iter().enumerate().find(|(_, o)| {
            o.name == m.name
                && o.rate_limit.is_some()
                && m.rate_limit.is_some()
                && o.rate_limit != m.rate_limit
        }) {
            p(
                at("rate_limit"),
                format!(
                    "differs from models[{j}].rate_limit; the limit is the model's, shared by \
                     its deployments"
                ),
            );
        }
        if m.name.len() > 1 && m.name[..m.name.len() - 1].contains('*') {
            p(
                at("name"),
                "\"*\" is only allowed at the end (prefix match) or alone".into(),
            );
        }
        if !upstreams.iter().any(|u| u.name == m.upstream) {
            p(
                at("upstream"),
                format!(
                    "unknown upstream {:?}; configured: {}",
                    m.upstream,
                    list(upstreams.iter().map(|u| u.name.as_str()))
                ),
            );
        }
        for name in m.headers.keys() {
            if http::HeaderName::from_bytes(name.as_bytes()).is_err() {
                p(
                    format!("models[{i}].headers.{name}"),
                    "is not a valid header name".into(),
                );
            }
        }
        for (j, f) in m.fallbacks.iter().enumerate() {
            if f == &m.name {
                p(
                    format!("models[{i}].fallbacks[{j}]"),
                    "a model cannot fall back to itself".into(),
                );
            } else if !models.iter().any(|o| &o.name == f) {
                p(
                    format!("models[{i}].fallbacks[{j}]"),
                    format!("unknown model {f:?}"),
                );
            }
        }
        if let Some(q) = &m.rate_limit {
            for problem in q.validate() {
                p(at(&format!("rate_limit.{}", problem.path)), problem.message);
            }
        }
    }
    if upstreams.is_empty() {
        p(
            "upstreams".into(),
            "at least one upstream is required".into(),
        );
    }
    if models.is_empty() {
        p("models".into(), "at least one model is required".into());
    }
}
