//! Assembly: the one place where the layers are stacked, each line saying why it sits there.
//!
//! Outermost first:
//! access log -> rescue -> auth -> validation -> memory routing -> rate limit -> dedup/cache
//! -> model router + fallbacks -> (per upstream) retry -> circuit breaker -> cookie session
//! -> hyper client.

use std::{collections::HashMap, net::SocketAddr, path::PathBuf, sync::Arc};

use axum::{
    body::Body,
    extract::ConnectInfo,
    routing::{get, post, post_service},
    Router,
};
use http::Request;
use portcullis_circuit_breaker::CircuitBreakerLayer;
use portcullis_cookie_session::{CookieJar, CookieSessionLayer};
use portcullis_core::{CacheOutcome, ClientIp, ConfigProblem};
use portcullis_dedup_cache::DedupCacheLayer;
use portcullis_memory_routing::{MemoryRouter, MemoryRoutingLayer};
use portcullis_rate_limit::RateLimitLayer;
use portcullis_retry::RetryLayer;
use portcullis_validation::ValidationLayer;
use tower::{util::BoxCloneSyncService, BoxError, ServiceBuilder, ServiceExt};
use tower_http::request_id::{MakeRequestUuid, PropagateRequestIdLayer, SetRequestIdLayer};

use crate::{
    admin,
    auth::AuthLayer,
    config::{Config, StateBackend},
    error::RescueLayer,
    state::{AppState, UpstreamHealth},
    telemetry::access_log::{AccessLogLayer, RecordRequestLayer},
    upstream::{
        client::ClientOptions,
        router::{ModelRoute, UpstreamRoute, UpstreamService},
        ModelRouter, Upstream, UpstreamClient,
    },
};

/// A built gateway: the axum app and the state behind it.
#[derive(Debug)]
pub struct Gateway {
    /// The full HTTP app (proxied routes and the gateway's own endpoints).
    pub app: Router,
    /// What the gateway's own endpoints read (also handy to tests).
    pub state: AppState,
    /// Cookie persistence, when `cookies.persist_path` is set.
    pub cookie_persist: Option<CookiePersist>,
}

/// Where and what to save on shutdown.
#[derive(Debug, Clone)]
pub struct CookiePersist {
    /// `cookies.persist_path`.
    pub path: PathBuf,
    /// Jars by upstream name.
    pub jars: Vec<(String, CookieJar)>,
    /// How often changed jars are saved while running.
    pub interval: std::time::Duration,
}

impl CookiePersist {
    /// Save changed jars every `interval` until the task is aborted.
    pub fn spawn_autosave(&self) -> tokio::task::JoinHandle<()> {
        portcullis_cookie_session::persist::spawn_autosave(
            self.path.clone(),
            self.jars.clone(),
            self.interval,
        )
    }

    /// Save every jar atomically.
    pub fn save(&self) -> Result<(), BoxError> {
        let jars: Vec<(&str, &CookieJar)> =
            self.jars.iter().map(|(n, j)| (n.as_str(), j)).collect();
        portcullis_cookie_session::persist::save_all(&self.path, &jars)?;
        Ok(())
    }
}

/// Why the gateway could not be built from a valid config.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct BuildError(pub String);

/// The compiled memory-routing patterns of `config` (also used by `portcullis route`).
pub fn memory_router(config: &Config) -> Result<MemoryRouter, Vec<ConfigProblem>> {
    MemoryRouter::new(&config.memory_routing)
}

/// Build the gateway from a validated config.
pub async fn build(config: Config) -> Result<Gateway, BuildError> {
    let config = Arc::new(config);
    let problems = |ps: Vec<ConfigProblem>| {
        BuildError(
            ps.iter()
                .map(ToString::to_string)
                .collect::<Vec<_>>()
                .join("; "),
        )
    };

    // Shared state backend (Redis) for rate limits and the dedup cache.
    let redis = match config.state.backend {
        StateBackend::Memory => None,
        StateBackend::Redis => {
            let url = config.state.redis_url.expose();
            let client = redis::Client::open(url)
                .map_err(|e| BuildError(format!("state.redis_url: {e}")))?;
            let conn = redis::aio::ConnectionManager::new(client)
                .await
                .map_err(|e| BuildError(format!("state.redis_url: cannot connect: {e}")))?;
            Some(conn)
        }
    };

    // Cookie jars: loaded from persist_path when set, one per upstream.
    let persist_path = config.cookies.persist_path().map(PathBuf::from);
    let mut loaded_jars: HashMap<String, CookieJar> = match &persist_path {
        Some(p) => portcullis_cookie_session::persist::load_all(p)
            .map_err(|e| BuildError(format!("cookies.persist_path: {e}")))?,
        None => HashMap::new(),
    };

    let mut routes = Vec::new();
    let mut health = Vec::new();
    let mut persisted = Vec::new();
    let mut sockets = Vec::new();
    for u in &config.upstreams {
        let upstream = Upstream::from_config(u)
            .map_err(|e| BuildError(format!("upstreams {:?}: {e}", u.name)))?;
        let client = UpstreamClient::new(&ClientOptions {
            name: u.name.clone(),
            timeout: u.timeout,
            connect_timeout: u.connect_timeout,
            ca_file: (!u.ca_file.is_empty()).then(|| PathBuf::from(&u.ca_file)),
        })
        .map_err(|e| BuildError(format!("upstreams {:?}: {e}", u.name)))?;
        // WebSocket handshakes use the same client's TLS roots and timeouts.
        sockets.push((u.name.clone(), client.clone()));
        let jar = u.cookies.then(|| match loaded_jars.remove(&u.name) {
            Some(j) => {
                j.set_max_cookies(config.cookies.max_cookies);
                j
            }
            None => config.cookies.new_jar(),
        });
        let breaker = config.circuit_breaker.enabled.then(|| {
            CircuitBreakerLayer::new(u.name.clone(), config.circuit_breaker.config.clone())
        });
        let retry = config
            .retry
            .enabled
            .then(|| RetryLayer::from_config(&config.retry))
            .transpose()
            .map_err(problems)?;
        let service: UpstreamService = BoxCloneSyncService::new(
            ServiceBuilder::new()
                // Retry outside the breaker: a retry sees an open breaker at once and gives up,
                // so the router can fail over instead of waiting.
                .option_layer(retry)
                // One breaker per upstream, counting every attempt's outcome.
                .option_layer(breaker.clone())
                // Inside retry: the cookie a failed attempt received goes out on the next one.
                .option_layer(jar.clone().map(CookieSessionLayer::new))
                .service(client)
                .map_err(Into::<BoxError>::into),
        );
        health.push(UpstreamHealth {
            name: u.name.clone(),
            base_url: u.base_url.clone(),
            breaker: breaker.as_ref().map(|b| b.handle()),
            jar: jar.clone(),
        });
        if let Some(j) = &jar {
            persisted.push((u.name.clone(), j.clone()));
        }
        routes.push(UpstreamRoute {
            upstream,
            service,
            strip_set_cookie: u.cookies,
        });
    }

    let failover_on = config.retry.retry_on.clone();
    let models = config
        .models
        .iter()
        .map(|m| ModelRoute {
            name: m.name.clone(),
            upstream: m.upstream.clone(),
            model: m.model.clone(),
            fallbacks: m.fallbacks.clone(),
        })
        .collect();
    let router = ModelRouter::new(models, routes, failover_on, config.server.max_body_bytes);

    let memory = Arc::new(memory_router(&config).map_err(problems)?);
    let memory_layer = config
        .memory_routing
        .enabled
        .then(|| MemoryRoutingLayer::new(memory.clone()));

    // WebSocket handshakes (/v1/responses, /v1/realtime): the same edge, auth and memory
    // routing as the proxied routes; no body to validate, cache or route on (the model is in
    // the query), and the bytes after the 101 are the upstream's and the client's own.
    let sockets = BoxCloneSyncService::new(
        ServiceBuilder::new()
            .layer(AccessLogLayer)
            .layer(RescueLayer)
            .map_request(client_ip)
            .layer(AuthLayer::new(
                config.server.api_keys.iter().map(|k| k.expose()),
            ))
            .option_layer(memory_layer.clone())
            .service(crate::upstream::websocket::WebSocketProxy::new(
                router.clone(),
                sockets,
            )),
    );

    let rate_limit = if config.rate_limit.enabled {
        let rl = &config.rate_limit;
        let mut layer = match &redis {
            Some(conn) => RateLimitLayer::from_config_with_backend(
                rl,
                portcullis_rate_limit::Backend::Redis(portcullis_rate_limit::RedisStore::new(
                    conn.clone(),
                )),
            ),
            None => RateLimitLayer::from_config(rl),
        }
        .map_err(problems)?
        .with_max_body_bytes(config.server.max_body_bytes);
        for m in &config.models {
            if let Some(q) = &m.rate_limit {
                layer = layer.with_model_limit(m.name.as_str(), *q);
            }
        }
        Some(layer)
    } else {
        None
    };

    let dedup = if config.dedup.enabled {
        let dc = config.dedup.config.clone();
        let layer = match &redis {
            Some(conn) if dc.caching() => DedupCacheLayer::with_store(
                dc,
                Arc::new(portcullis_dedup_cache::RedisStore::new(conn.clone())),
            ),
            _ => DedupCacheLayer::new(dc),
        };
        Some(layer.with_max_body_bytes(config.server.max_body_bytes))
    } else {
        None
    };

    let validation = ValidationLayer::from_config(&config.validation)
        .map_err(problems)?
        .with_max_body_bytes(config.server.max_body_bytes);

    let proxy = ServiceBuilder::new()
        // Outermost: the access log and metrics see every request's final status.
        .layer(AccessLogLayer)
        // Every error below becomes a response in the caller's API shape.
        .layer(RescueLayer)
        // The client IP (for rate limits keyed on it) from the accepted connection.
        .map_request(client_ip)
        // Reject unauthenticated callers before reading their bodies.
        .layer(AuthLayer::new(
            config.server.api_keys.iter().map(|k| k.expose()),
        ))
        // Size cap and body checks: nothing invalid goes further, and later layers get the
        // parsed model and stream flag (RequestMeta) without parsing again.
        .layer(validation)
        // The memory user id exists before anything keys on it.
        .option_layer(memory_layer)
        // Hand the model and user id to the access log and request span now, so answers made
        // above the router (cache hits, rate-limit refusals) are logged under them too.
        .layer(RecordRequestLayer::new(
            config.models.iter().map(|m| m.name.as_str()),
        ))
        // May key on that user id; rejects before any upstream work.
        .option_layer(rate_limit)
        // Identical in-flight requests of one caller share one upstream call; the key
        // includes the caller's identity. Without it every answer is a cache `bypass`.
        .option_layer(dedup)
        .map_response(mark_cache_bypass)
        .service(router.clone());
    let proxy = BoxCloneSyncService::new(proxy);

    let state = AppState {
        config: config.clone(),
        models: crate::models::ModelCatalog::new(router.clone(), &config.models),
        router,
        upstreams: Arc::new(health),
        memory,
        api_keys: Arc::new(
            config
                .server
                .api_keys
                .iter()
                .map(|k| portcullis_core::ApiKeyHash::of(k.expose()))
                .collect(),
        ),
    };

    let app = Router::new()
        .route("/v1/chat/completions", post_service(proxy.clone()))
        .route("/v1/completions", post_service(proxy.clone()))
        .route("/v1/embeddings", post_service(proxy.clone()))
        .route("/v1/messages", post_service(proxy))
        .route("/v1/models", get(admin::models))
        .route("/health", get(admin::health))
        .route("/health/upstreams", get(admin::health_upstreams))
        .route("/memory-routing/info", get(admin::memory_info))
        .route("/metrics", get(admin::metrics))
        .route(
            "/admin/circuit-breakers/{upstream}/reset",
            post(admin::reset_breaker),
        )
        .fallback(admin::not_found)
        .with_state(state.clone())
        // Outside the routes: a handshake is told by its headers, whatever a path's routes are.
        .layer(crate::upstream::websocket::WebSocketLayer::new(sockets))
        .layer(
            ServiceBuilder::new()
                // A request id on every request and response, kept from the client if sent.
                .layer(SetRequestIdLayer::x_request_id(MakeRequestUuid))
                .layer(PropagateRequestIdLayer::x_request_id()),
        );

    let cookie_persist = persist_path.map(|path| CookiePersist {
        path,
        jars: persisted,
        interval: config.cookies.save_interval,
    });
    Ok(Gateway {
        app,
        state,
        cookie_persist,
    })
}

/// `x-portcullis-cache` is on every proxied answer; without the dedup layer it is `bypass`.
fn mark_cache_bypass(mut resp: http::Response<Body>) -> http::Response<Body> {
    if resp.extensions().get::<CacheOutcome>().is_none() {
        resp.extensions_mut().insert(CacheOutcome::Bypass);
        resp.headers_mut().insert(
            portcullis_core::headers::X_PORTCULLIS_CACHE,
            CacheOutcome::Bypass.header_value(),
        );
    }
    resp
}

fn client_ip(mut req: Request<Body>) -> Request<Body> {
    if let Some(ConnectInfo(addr)) = req.extensions().get::<ConnectInfo<SocketAddr>>().cloned() {
        req.extensions_mut().insert(ClientIp(addr.ip()));
    }
    req
}
