//! What the gateway's own endpoints see: the configuration, the router, and per-upstream
//! health handles. Built by [`stack::build`](crate::stack::build), read by [`admin`](crate::admin).

use std::{
    fmt,
    future::Future,
    pin::Pin,
    sync::{Arc, OnceLock, Weak},
};

use portcullis_circuit_breaker::BreakerHandle;
use portcullis_cookie_session::CookieJar;
use portcullis_core::ConfigProblem;
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
    /// The process's reloader, for `POST /admin/reload`.
    pub reload: ReloadHook,
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

/// What `POST /admin/reload` answers: a short summary of the configuration now serving, or
/// every problem that made the reload refuse it (key paths and messages, never a value).
pub type ReloadResult = Result<serde_json::Value, Vec<ConfigProblem>>;

/// A reloader, as the admin endpoint sees it (the real one is `reload::Reloader`).
pub trait Reload: Send + Sync {
    /// Re-read the configuration and, if it is valid, serve it; `trigger` names the cause in
    /// the logs.
    fn reload(
        &self,
        trigger: &'static str,
    ) -> Pin<Box<dyn Future<Output = ReloadResult> + Send + '_>>;
}

/// How `POST /admin/reload` reaches the process's reloader. Unset when the gateway runs
/// without one (built with `stack::build` and served as is, as most tests do).
///
/// Cloning shares it: every stack a reloader builds carries the same hook. It holds the
/// reloader weakly, because the reloader holds the stacks.
#[derive(Clone, Default)]
pub struct ReloadHook(Arc<OnceLock<Weak<dyn Reload>>>);

impl ReloadHook {
    /// Point the hook at `reloader`; a hook already set keeps its reloader (returns false).
    pub fn set(&self, reloader: Weak<dyn Reload>) -> bool {
        self.0.set(reloader).is_ok()
    }

    /// The reloader, while it exists.
    pub fn get(&self) -> Option<Arc<dyn Reload>> {
        self.0.get().and_then(Weak::upgrade)
    }
}

impl fmt::Debug for ReloadHook {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ReloadHook")
            .field("set", &self.0.get().is_some())
            .finish()
    }
}
