//! What the gateway's own endpoints see: the configuration, the router, and per-upstream
//! health handles. Built by [`stack::build`](crate::stack::build), read by [`admin`](crate::admin).

use std::sync::Arc;

use portcullis_circuit_breaker::BreakerHandle;
use portcullis_cookie_session::CookieJar;
use portcullis_memory_routing::MemoryRouter;

use crate::{
    config::Config,
    models::ModelCatalog,
    upstream::{health::HealthState, keys::KeyRing, ModelRouter},
};

/// The state behind the gateway's own endpoints. Cloning shares it.
#[derive(Clone, Debug)]
pub struct AppState {
    /// The loaded configuration.
    pub config: Arc<Config>,
    /// The model router (for `GET /v1/models`).
    pub router: ModelRouter,
    /// `GET /v1/models`, with pattern entries expanded from the upstreams' own lists.
    pub models: ModelCatalog,
    /// Per-upstream health handles, in config order.
    pub upstreams: Arc<Vec<UpstreamHealth>>,
    /// The compiled memory-routing patterns (for `GET /memory-routing/info`).
    pub memory: Arc<MemoryRouter>,
    /// The gateway keys (hashes, never in clear): they guard `/v1/models`,
    /// `/memory-routing/info` and `/metrics` too.
    pub keys: crate::auth::Keys,
    /// Requests, tokens and errors per key and model since start (`GET /admin/usage`).
    pub usage: portcullis_audit::AuditHandle,
}

/// What `/health/upstreams` and `/metrics` read about one upstream.
#[derive(Clone, Debug)]
pub struct UpstreamHealth {
    /// The `[[upstreams]]` name.
    pub name: String,
    /// Its base URL, shown on `/health/upstreams` (it holds no credentials: keys live in
    /// headers, and a URL with user info fails `check`).
    pub base_url: String,
    /// Its breaker, when the breaker layer is on.
    pub breaker: Option<BreakerHandle>,
    /// Its cookie jar, when cookies are on.
    pub jar: Option<CookieJar>,
    /// Its provider keys, when `api_keys` is set.
    pub keys: Option<KeyRing>,
    /// Its active health check's result, when `health_check.path` is set.
    pub health: Option<HealthState>,
    /// Keeps the gateway's health-check tasks running while this state exists.
    pub alive: Arc<()>,
}
