//! Whether an upstream may take requests: its circuit breaker (passive health, what real
//! requests showed) and its active health check (`health_check.path`, asked every
//! `interval`). Either one out takes the upstream out of its models' rotation.

use std::sync::{
    atomic::{AtomicU8, Ordering},
    Arc, Weak,
};

use axum::body::Body;
use http::{HeaderMap, Method, Request};
use tower::ServiceExt;

use super::{router::UpstreamService, Upstream};
use crate::config::HealthCheckConfig;

/// The outcome of the last active check.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Health {
    /// No check configured, or none has finished yet.
    Unchecked,
    /// The last check answered 2xx.
    Passing,
    /// The last check failed (non-2xx, connect error, timeout).
    Failing,
}

impl Health {
    /// As shown on `/health/upstreams`.
    pub fn as_str(self) -> &'static str {
        match self {
            Health::Unchecked => "unchecked",
            Health::Passing => "passing",
            Health::Failing => "failing",
        }
    }

    /// The `portcullis_upstream_health` gauge: 1 passing, 0 failing, -1 unchecked.
    pub fn gauge(self) -> f64 {
        match self {
            Health::Unchecked => -1.0,
            Health::Passing => 1.0,
            Health::Failing => 0.0,
        }
    }
}

/// The shared result of an upstream's active check. Cloning shares it.
#[derive(Debug, Clone, Default)]
pub struct HealthState(Arc<AtomicU8>);

impl HealthState {
    /// The last result.
    pub fn get(&self) -> Health {
        match self.0.load(Ordering::Acquire) {
            1 => Health::Passing,
            2 => Health::Failing,
            _ => Health::Unchecked,
        }
    }

    /// Record a result; returns the previous one.
    pub fn set(&self, h: Health) -> Health {
        let v = match h {
            Health::Unchecked => 0,
            Health::Passing => 1,
            Health::Failing => 2,
        };
        match self.0.swap(v, Ordering::AcqRel) {
            1 => Health::Passing,
            2 => Health::Failing,
            _ => Health::Unchecked,
        }
    }
}

/// Whether a breaker would refuse a call made now (`stack.rs` asks the breaker's handle).
pub type BreakerRefuses = Arc<dyn Fn() -> bool + Send + Sync>;

/// Passive and active health of one upstream, as the router asks it.
#[derive(Clone, Default)]
pub struct UpstreamStatus {
    /// Its breaker's view, when the breaker layer is on.
    pub breaker_refuses: Option<BreakerRefuses>,
    /// Its active check's last result.
    pub check: HealthState,
}

impl std::fmt::Debug for UpstreamStatus {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("UpstreamStatus")
            .field("available", &self.available())
            .field("check", &self.check.get())
            .finish()
    }
}

impl UpstreamStatus {
    /// Whether the upstream takes requests now: its breaker would let a call through (an open
    /// breaker whose `open_timeout` has passed does: that call is its probe, and skipping it
    /// forever would never close it), and its active check is not failing.
    pub fn available(&self) -> bool {
        let breaker_ok = self
            .breaker_refuses
            .as_ref()
            .is_none_or(|refuses| !refuses());
        breaker_ok && self.check.get() != Health::Failing
    }
}

/// Run `upstream`'s active health check every `interval` until `alive` is gone (the gateway
/// that owns the check was dropped or replaced). `service` is the upstream's client with its
/// credentials (key rotation included) but without retry or breaker: a check is one attempt,
/// and its failures must not open the breaker that real requests drive.
pub fn spawn_health_check(
    upstream: Upstream,
    cfg: &HealthCheckConfig,
    service: UpstreamService,
    state: HealthState,
    alive: Weak<()>,
) -> tokio::task::JoinHandle<()> {
    let path = if cfg.path.starts_with('/') {
        cfg.path.clone()
    } else {
        format!("/{}", cfg.path)
    };
    let interval = cfg.interval;
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(interval);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            if alive.upgrade().is_none() {
                return;
            }
            let result = check_once(&upstream, &path, service.clone()).await;
            let now = if result.is_ok() {
                Health::Passing
            } else {
                Health::Failing
            };
            metrics::gauge!("portcullis_upstream_health", "upstream" => upstream.name.to_string())
                .set(now.gauge());
            let before = state.set(now);
            match (&result, before) {
                (Err(why), Health::Passing | Health::Unchecked) => tracing::warn!(
                    upstream = %upstream.name, %path, reason = %why,
                    "health check failing; upstream out of rotation"
                ),
                (Ok(()), Health::Failing) => tracing::info!(
                    upstream = %upstream.name, %path,
                    "health check passing again; upstream back in rotation"
                ),
                _ => {}
            }
        }
    })
}

async fn check_once(
    upstream: &Upstream,
    path: &str,
    service: UpstreamService,
) -> Result<(), String> {
    let mut headers = HeaderMap::new();
    upstream.prepare_headers(&mut headers);
    let mut req = Request::builder()
        .method(Method::GET)
        .uri(upstream.uri_for(path).map_err(|e| e.to_string())?)
        .body(Body::empty())
        .map_err(|e| e.to_string())?;
    *req.headers_mut() = headers;
    match service.oneshot(req).await {
        Ok(resp) if resp.status().is_success() => Ok(()),
        Ok(resp) => Err(format!("status {}", resp.status().as_u16())),
        Err(e) => Err(e.to_string()),
    }
}
