//! The gateway's own sections: `[server]`, `[telemetry]`, `[state]`.

use std::{net::SocketAddr, time::Duration};

use portcullis_core::ConfigProblem;
use serde::{Deserialize, Serialize};

use super::{sections::serde_read, Secret, Section};

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
}

impl Default for ServerConfig {
    fn default() -> Self {
        Self {
            listen: "127.0.0.1:8764".into(),
            api_keys: Vec::new(),
            admin_key: Secret::default(),
            max_body_bytes: portcullis_core::body::DEFAULT_MAX_BODY_BYTES,
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
        p
    }
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
#[derive(Debug, Clone, Serialize, Deserialize)]
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
