//! The gateway's own sections: `[server]`, `[telemetry]`, `[state]`.

use std::{net::SocketAddr, path::Path, sync::Arc, time::Duration};

use portcullis_core::ConfigProblem;
use rustls::pki_types::{pem::PemObject, CertificateDer, PrivateKeyDer};
use serde::{Deserialize, Serialize};

use super::{sections::serde_read, Secret, Section};

/// The most serving threads `server.threads` may ask for.
pub const MAX_THREADS: usize = 1024;

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
    /// Largest request body accepted; every layer that reads a body uses this cap.
    pub max_body_bytes: usize,
    /// How long in-flight requests may run after a shutdown signal.
    #[serde(with = "humantime_serde")]
    pub shutdown_grace: Duration,
    /// A client that has not sent its whole request head by then is disconnected.
    #[serde(with = "humantime_serde")]
    pub header_read_timeout: Duration,
    /// A request body not fully received by then is answered 408 and the connection closed.
    #[serde(with = "humantime_serde")]
    pub body_read_timeout: Duration,
    /// Connections accepted at once; past it new ones wait in the kernel's backlog.
    pub max_connections: usize,
    /// Serving threads of `portcullis serve`, each with a single-threaded runtime and its own
    /// upstream connection pools, serving the connections handed to it from accept to close
    /// (see `crate::workers`); `0`: one per CPU core.
    pub threads: usize,
    /// CIDRs whose `X-Forwarded-For` is believed for the client IP (rate limits keyed on it,
    /// the loopback rule of `/admin/*`).
    pub trusted_proxies: Vec<String>,
    /// PEM certificate chain (server certificate first); with `tls_key`, the listener speaks
    /// TLS (ALPN `h2`, `http/1.1`). Empty: plain TCP.
    pub tls_cert: String,
    /// PEM private key (PKCS#8, PKCS#1 or SEC1) of `tls_cert`.
    pub tls_key: String,
    /// Browser origins (`https://app.example.com`, or `*` for any) allowed to call the
    /// gateway from a web page: preflights are answered before the key check, answers carry
    /// the CORS headers. Empty (the default): no CORS headers, preflights go where any other
    /// request goes.
    pub cors_origins: Vec<String>,
}

impl Default for ServerConfig {
    fn default() -> Self {
        Self {
            listen: "127.0.0.1:8764".into(),
            api_keys: Vec::new(),
            admin_key: Secret::default(),
            max_body_bytes: portcullis_core::body::DEFAULT_MAX_BODY_BYTES,
            shutdown_grace: Duration::from_secs(30),
            header_read_timeout: Duration::from_secs(10),
            body_read_timeout: Duration::from_secs(60),
            max_connections: 10_000,
            threads: 0,
            trusted_proxies: Vec::new(),
            tls_cert: String::new(),
            tls_key: String::new(),
            cors_origins: Vec::new(),
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

    /// Whether the listener terminates TLS (`tls_cert` and `tls_key` both set).
    pub fn tls_enabled(&self) -> bool {
        !self.tls_cert.is_empty() && !self.tls_key.is_empty()
    }

    /// The listener's rustls configuration from `tls_cert` and `tls_key` (no ALPN set: that
    /// is the server's choice); `None` when TLS is off. Load-time validation calls this same
    /// function, so a pair that passes `portcullis check` also serves. Problems are keyed
    /// `tls_cert` / `tls_key` (relative to `[server]`) and never quote the files' contents.
    pub fn tls_config(&self) -> Result<Option<rustls::ServerConfig>, Vec<ConfigProblem>> {
        match (self.tls_cert.is_empty(), self.tls_key.is_empty()) {
            (true, true) => return Ok(None),
            (false, true) => {
                return Err(vec![ConfigProblem::new(
                    "tls_key",
                    "must be set together with server.tls_cert (TLS needs both)",
                )])
            }
            (true, false) => {
                return Err(vec![ConfigProblem::new(
                    "tls_cert",
                    "must be set together with server.tls_key (TLS needs both)",
                )])
            }
            (false, false) => {}
        }
        let cert_path = Path::new(&self.tls_cert);
        let key_path = Path::new(&self.tls_key);
        let certs = read_cert_chain(cert_path).map_err(|m| ConfigProblem::new("tls_cert", m));
        let key = read_private_key(key_path).map_err(|m| ConfigProblem::new("tls_key", m));
        let (certs, key) = match (certs, key) {
            (Ok(c), Ok(k)) => (c, k),
            (c, k) => return Err(c.err().into_iter().chain(k.err()).collect()),
        };
        // The provider the upstream client installs as the process default (aws-lc-rs),
        // named here so that `check` needs no process-wide state.
        let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
        let builder = rustls::ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .map_err(|e| vec![ConfigProblem::new("tls_cert", e.to_string())])?;
        builder
            .with_no_client_auth()
            .with_single_cert(certs, key)
            .map(Some)
            .map_err(|e| vec![tls_pair_problem(cert_path, key_path, &e)])
    }
}

/// Every certificate of a PEM file. A PEM syntax error is reported without its details:
/// rustls quotes the offending line, which in a misplaced key file would be key material.
fn read_cert_chain(path: &Path) -> Result<Vec<CertificateDer<'static>>, String> {
    let pem = std::fs::read(path).map_err(|e| format!("cannot read {}: {e}", path.display()))?;
    let certs = CertificateDer::pem_slice_iter(&pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|_| format!("{}: not a valid PEM file", path.display()))?;
    if certs.is_empty() {
        return Err(format!(
            "{}: no certificate found (expected a PEM \"BEGIN CERTIFICATE\" block)",
            path.display()
        ));
    }
    Ok(certs)
}

/// The first private key of a PEM file (PKCS#8, PKCS#1 or SEC1).
fn read_private_key(path: &Path) -> Result<PrivateKeyDer<'static>, String> {
    use rustls::pki_types::pem::Error;
    let pem = std::fs::read(path).map_err(|e| format!("cannot read {}: {e}", path.display()))?;
    PrivateKeyDer::from_pem_slice(&pem).map_err(|e| match e {
        Error::NoItemsFound => format!(
            "{}: no private key found (expected a PEM \"BEGIN PRIVATE KEY\", \"BEGIN RSA \
             PRIVATE KEY\" or \"BEGIN EC PRIVATE KEY\" block)",
            path.display()
        ),
        _ => format!("{}: not a valid PEM file", path.display()),
    })
}

/// What rustls found wrong with a certificate chain and key that both parsed as PEM.
fn tls_pair_problem(cert: &Path, key: &Path, e: &rustls::Error) -> ConfigProblem {
    use rustls::{Error, InconsistentKeys};
    match e {
        Error::InconsistentKeys(InconsistentKeys::KeyMismatch) => ConfigProblem::new(
            "tls_key",
            format!(
                "{} is not the private key of the certificate in {}",
                key.display(),
                cert.display()
            ),
        ),
        Error::General(_) => ConfigProblem::new(
            "tls_key",
            format!("{}: not a private key rustls can use", key.display()),
        ),
        // Anything else is about the certificate (it did not parse as X.509, ...).
        other => ConfigProblem::new("tls_cert", format!("{}: {other}", cert.display())),
    }
}

impl Section for ServerConfig {
    serde_read!();
    fn problems(&self) -> Vec<ConfigProblem> {
        let mut p = Vec::new();
        if self.listen.parse::<SocketAddr>().is_err() {
            p.push(ConfigProblem::new(
                "listen",
                format!(
                    "{:?} is not a socket address like 127.0.0.1:8764",
                    self.listen
                ),
            ));
        }
        if self.max_body_bytes == 0 {
            p.push(ConfigProblem::new("max_body_bytes", "must be >= 1"));
        }
        for (key, d) in [
            ("header_read_timeout", self.header_read_timeout),
            ("body_read_timeout", self.body_read_timeout),
        ] {
            if d.is_zero() {
                p.push(ConfigProblem::new(key, "must be > 0"));
            }
        }
        if self.max_connections == 0 {
            p.push(ConfigProblem::new("max_connections", "must be >= 1"));
        }
        if self.threads > MAX_THREADS {
            p.push(ConfigProblem::new(
                "threads",
                format!("must be at most {MAX_THREADS} (0: one per CPU core)"),
            ));
        }
        for (i, cidr) in self.trusted_proxies.iter().enumerate() {
            if parse_cidr(cidr).is_none() {
                p.push(ConfigProblem::new(
                    format!("trusted_proxies[{i}]"),
                    format!("{cidr:?} is not an address or CIDR like 10.0.0.0/8"),
                ));
            }
        }
        for (i, origin) in self.cors_origins.iter().enumerate() {
            if !valid_origin(origin) {
                p.push(ConfigProblem::new(
                    format!("cors_origins[{i}]"),
                    format!(
                        "{origin:?} is not an origin like https://app.example.com \
                         (scheme and host, no path) or *"
                    ),
                ));
            }
        }
        if let Err(tls) = self.tls_config() {
            p.extend(tls);
        }
        p
    }
}

/// `*`, or a browser origin: `http(s)://host[:port]`, nothing after.
fn valid_origin(o: &str) -> bool {
    if o == "*" {
        return true;
    }
    let Ok(uri) = o.parse::<http::Uri>() else {
        return false;
    };
    matches!(uri.scheme_str(), Some("http" | "https"))
        && uri.host().is_some_and(|h| !h.is_empty())
        && uri
            .path_and_query()
            .is_none_or(|p| p.as_str().is_empty() || p.as_str() == "/")
        && !o.ends_with('/')
}

/// Log output format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    /// Compact lines for a terminal.
    #[default]
    Pretty,
    /// One JSON object per line.
    Json,
}

/// `[telemetry]`
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TelemetryConfig {
    /// `pretty` for people at a terminal, `json` (one object per line) for log pipelines.
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

impl Section for TelemetryConfig {
    serde_read!();
    fn problems(&self) -> Vec<ConfigProblem> {
        let mut p = Vec::new();
        if !self.otlp_endpoint.is_empty() {
            match url::Url::parse(&self.otlp_endpoint) {
                Ok(u) if matches!(u.scheme(), "http" | "https") => {}
                _ => p.push(ConfigProblem::new(
                    "otlp_endpoint",
                    format!(
                        "{:?} is not an http(s) URL like http://127.0.0.1:4318",
                        self.otlp_endpoint
                    ),
                )),
            }
        }
        if self.service_name.is_empty() {
            p.push(ConfigProblem::new("service_name", "must not be empty"));
        }
        p
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
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct StateConfig {
    /// Where rate-limit buckets and the dedup cache live.
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

impl Section for StateConfig {
    serde_read!();
    fn problems(&self) -> Vec<ConfigProblem> {
        let url = &self.redis_url;
        if self.backend == StateBackend::Redis
            && url.env_name().is_none()
            && !url.expose().starts_with("redis://")
            && !url.expose().starts_with("rediss://")
        {
            return vec![ConfigProblem::new(
                "redis_url",
                "must start with redis:// or rediss://",
            )];
        }
        Vec::new()
    }
}

/// `a.b.c.d/n`, `::1/128` or a bare address (a /32 or /128): the network and prefix length.
pub fn parse_cidr(s: &str) -> Option<(std::net::IpAddr, u8)> {
    let (addr, len) = match s.split_once('/') {
        Some((a, l)) => (a, Some(l)),
        None => (s, None),
    };
    let ip: std::net::IpAddr = addr.trim().parse().ok()?;
    let max = if ip.is_ipv4() { 32 } else { 128 };
    let len = match len {
        Some(l) => l.trim().parse::<u8>().ok().filter(|l| *l <= max)?,
        None => max,
    };
    Some((ip, len))
}

/// `[[keys]]`: a gateway key with its own policy (`server.api_keys` are keys without one).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KeyConfig {
    /// Shown in logs, metrics, spans and the audit line; never the key itself.
    pub name: String,
    /// What the client sends (`Authorization: Bearer K` or `x-api-key: K`); a secret.
    pub key: Secret,
    /// Binds the memory user id: client headers cannot override it.
    #[serde(default)]
    pub user_id: Option<String>,
    /// Model names or patterns this key may use; empty: every model. Others answer
    /// `403 model_not_allowed`.
    #[serde(default)]
    pub models: Vec<String>,
    /// This key's own rate limit.
    #[serde(default)]
    pub rate_limit: Option<portcullis_rate_limit::Quota>,
    /// > 0: at most this many requests of this key in flight (429 when over).
    #[serde(default)]
    pub max_concurrency: u32,
}

/// Check `[[keys]]` (names and keys unique and non-empty, quotas valid).
pub(super) fn check_keys(keys: &[KeyConfig], problems: &mut Vec<ConfigProblem>) {
    let mut names = std::collections::HashSet::new();
    for (i, k) in keys.iter().enumerate() {
        let at = |f: &str| format!("keys[{i}].{f}");
        if k.name.trim().is_empty() {
            problems.push(ConfigProblem::new(at("name"), "must not be empty"));
        } else if !names.insert(k.name.as_str()) {
            problems.push(ConfigProblem::new(
                at("name"),
                format!("duplicate key name {:?}", k.name),
            ));
        }
        if k.key.env_name().is_none() && k.key.is_empty() {
            problems.push(ConfigProblem::new(at("key"), "must not be empty"));
        }
        if let Some(q) = &k.rate_limit {
            for p in q.validate() {
                problems.push(ConfigProblem::new(
                    at(&format!("rate_limit.{}", p.path)),
                    p.message,
                ));
            }
        }
        for (j, m) in k.models.iter().enumerate() {
            if m.trim().is_empty() || (m.len() > 1 && m[..m.len() - 1].contains('*')) {
                problems.push(ConfigProblem::new(
                    format!("keys[{i}].models[{j}]"),
                    "a model name, a \"prefix*\" or \"*\"",
                ));
            }
        }
    }
}
