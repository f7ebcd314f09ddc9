//! Assembly: the one place where the layers are stacked, each line saying why it sits there.
//!
//! Outermost first:
//! access log -> rescue -> auth -> validation -> memory routing -> rate limit -> dedup/cache
//! -> model router (deployments, then fallbacks) -> (per upstream) retry -> circuit breaker
//! -> cookie session -> provider-key rotation -> hyper client.
//!
//! A hot reload builds a new stack with [`build_carrying`], handing it the previous build's
//! [`StackState`]: rate-limit buckets, breakers, cookie jars and the rest carry over by
//! upstream and model name.

use std::{
    collections::HashMap,
    convert::Infallible,
    fmt,
    net::SocketAddr,
    path::PathBuf,
    sync::Arc,
    task::{Context, Poll},
};

use axum::{
    body::Body,
    extract::ConnectInfo,
    routing::{any_service, get, post},
    Router,
};
use futures_util::future::Either;
use http::{HeaderValue, Method, Request};
use portcullis_audit::{AuditHandle, AuditLayer, AuditRecordLayer};
use portcullis_circuit_breaker::CircuitBreakerLayer;
use portcullis_commands::CommandsLayer;
use portcullis_cookie_session::{CookieScope, CookieSessionLayer, Jars};
use portcullis_core::{CacheOutcome, ClientIp, ConfigProblem};
use portcullis_dedup_cache::DedupCacheLayer;
use portcullis_loop_detection::LoopDetectionLayer;
use portcullis_memory_routing::{MemoryRouter, MemoryRoutingLayer};
use portcullis_rate_limit::{Backend, Limiter, RateLimitLayer};
use portcullis_retry::RetryLayer;
use portcullis_tool_call_loop::ToolCallLoopLayer;
use portcullis_translate::{RedisItems, ResponseStore, TranslateLayer};
use portcullis_validation::ValidationLayer;
use tower::{util::BoxCloneSyncService, BoxError, Service, ServiceBuilder, ServiceExt};
use tower_http::cors::{AllowHeaders, AllowMethods, AllowOrigin, Cors, CorsLayer};
use tower_http::request_id::{
    MakeRequestId, PropagateRequestId, PropagateRequestIdLayer, RequestId, SetRequestId,
    SetRequestIdLayer,
};

use crate::{
    admin,
    auth::{AuthLayer, KeyPolicyLayer, Keys},
    config::{Config, StateBackend},
    error::RescueLayer,
    state::{AppState, ReloadHook, UpstreamHealth},
    telemetry::access_log::{AccessLogLayer, RecordRequestLayer},
    upstream::{
        client::ClientOptions,
        health::{spawn_health_check, HealthState, UpstreamStatus},
        keys::{KeyRing, KeyRotationLayer},
        passthrough,
        router::{ModelRoute, UpstreamRoute, UpstreamService},
        ModelRouter, Upstream, UpstreamClient,
    },
};

/// A built gateway: the app and the state behind it.
#[derive(Debug)]
pub struct Gateway {
    /// The full HTTP app (proxied routes and the gateway's own endpoints).
    pub app: App,
    /// What the gateway's own endpoints read (also handy to tests).
    pub state: AppState,
    /// Cookie persistence, when `cookies.persist_path` is set.
    pub cookie_persist: Option<CookiePersist>,
    /// The audit writer (reopened on SIGHUP, flushed at exit).
    pub audit: AuditHandle,
    /// What a rebuild for a changed configuration takes over ([`build_carrying`]).
    pub carry: StackState,
    /// The active health checks' tasks: they stop when the gateway is dropped or replaced.
    pub health_checks: HealthChecks,
}

/// Where and what to save on shutdown.
#[derive(Debug, Clone)]
pub struct CookiePersist {
    /// `cookies.persist_path`.
    pub path: PathBuf,
    /// Jars by upstream name (shared or per caller).
    pub jars: Vec<(String, Jars)>,
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
        let jars: Vec<(&str, &Jars)> = self.jars.iter().map(|(n, j)| (n.as_str(), j)).collect();
        portcullis_cookie_session::persist::save(&self.path, &jars)?;
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
    build_carrying(config, &StackState::default()).await
}

/// Build the gateway from a validated config, taking over `prev`'s state (the previous
/// build's [`Gateway::carry`]) for the upstreams and models that still exist, by name. A
/// piece carries over when what it was made from is unchanged (see [`StackState`]); the rest
/// starts fresh. Both stacks may serve at once: clones share the carried state.
pub async fn build_carrying(config: Config, prev: &StackState) -> Result<Gateway, BuildError> {
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
        // The same store: one connection and one health (warned about once) across reloads.
        StateBackend::Redis if prev.same(&config, |c| &c.state) => prev.redis.clone(),
        StateBackend::Redis => {
            let url = config.state.redis_url.expose();
            let client = redis::Client::open(url)
                .map_err(|e| BuildError(format!("state.redis_url: {e}")))?;
            // One health for both stores: each Redis call bounded (50 ms), a failed Redis
            // probed once a second meanwhile, one warning when it goes and one when it is back.
            // Named by address only: the URL may hold a password.
            let health = portcullis_core::remote::RemoteHealth::new(format!(
                "redis at {}",
                client.get_connection_info().addr()
            ));
            // Lazy: the gateway starts while Redis is down, on local state until it answers.
            // No retries in the client: they would hold calls for seconds; the health paces
            // reconnects instead.
            let manager = redis::aio::ConnectionManagerConfig::new()
                .set_number_of_retries(0)
                .set_connection_timeout(Some(std::time::Duration::from_secs(1)))
                .set_response_timeout(Some(health.call_timeout()));
            let conn = redis::aio::ConnectionManager::new_lazy_with_config(client, manager)
                .map_err(|e| BuildError(format!("state.redis_url: {e}")))?;
            Some(portcullis_core::remote::Guarded::new(conn, health))
        }
    };

    // The Responses API's stored answers, for translated upstreams: kept across reloads
    // while its settings and the state backend are the same; in Redis too when the state
    // is there, so the replica serving a later turn finds what another answered.
    let responses = match &prev.responses {
        Some(r) if prev.same(&config, |c| &c.translation) && prev.same(&config, |c| &c.state) => {
            r.clone()
        }
        _ => {
            let store = ResponseStore::new(&config.translation);
            match &redis {
                Some(conn) => store.with_redis(RedisItems::new(conn.clone())),
                None => store,
            }
        }
    };

    // Cookie jars: loaded from persist_path when set, per upstream (shared or per caller). A
    // reload keeping the path keeps the running jars instead: they hold the newer cookies.
    let persist_path = config.cookies.persist_path().map(PathBuf::from);
    let mut loaded_jars: HashMap<String, Jars> = match &persist_path {
        _ if prev.same(&config, |c| &c.cookies.persist_path) => HashMap::new(),
        Some(p) => portcullis_cookie_session::persist::load(p)
            .map_err(|e| BuildError(format!("cookies.persist_path: {e}")))?,
        None => HashMap::new(),
    };

    let mut routes = Vec::new();
    let mut health = Vec::new();
    let mut persisted = Vec::new();
    // Health-check tasks end once this is dropped (the gateway was dropped or replaced).
    let alive = Arc::new(());
    let mut sockets = Vec::new();
    let mut checks = HealthChecks::default();
    let mut carried = HashMap::new();
    // A pool per serving thread, in every upstream's client (the count reads the CPU quota
    // from cgroup files: once per build, not per upstream).
    let threads = crate::workers::resolve(config.server.threads);
    for u in &config.upstreams {
        let before = prev.upstream(&u.name);
        // Whether the Responses API is translated for it: its sockets are refused, and a
        // Responses answer the gateway made may be read back through it.
        let translates_responses = !u.api.speaks(portcullis_translate::Format::Responses);
        let upstream = Upstream::from_config(u)
            .map_err(|e| BuildError(format!("upstreams {:?}: {e}", u.name)))?;
        let client = UpstreamClient::new(&ClientOptions {
            name: u.name.clone(),
            timeout: u.timeout,
            connect_timeout: u.connect_timeout,
            first_byte_timeout: u.first_byte_timeout,
            idle_timeout: u.idle_timeout,
            ca_file: (!u.ca_file.is_empty()).then(|| PathBuf::from(&u.ca_file)),
            threads,
        })
        .map_err(|e| BuildError(format!("upstreams {:?}: {e}", u.name)))?;
        // WebSocket handshakes use the same client's TLS roots and timeouts (a translated
        // upstream's are refused: the bytes of a socket cannot be translated).
        sockets.push(crate::upstream::websocket::SocketUpstream {
            name: u.name.clone(),
            client: client.clone(),
            translated: translates_responses,
        });
        // The running jars (a reload) hold newer cookies than the file; else the saved jars of
        // this upstream's scope, bounded, else empty ones.
        let jars = u
            .cookies
            .then(|| match before.and_then(|(_, c)| c.jars.clone()) {
                Some(Jars::Upstream(j)) if matches!(u.cookie_scope, CookieScope::Upstream) => {
                    j.set_max_cookies(config.cookies.max_cookies);
                    Jars::Upstream(j)
                }
                Some(Jars::Caller(j)) if matches!(u.cookie_scope, CookieScope::Caller) => {
                    j.set_limits(config.cookies.max_callers, config.cookies.max_cookies);
                    Jars::Caller(j)
                }
                _ => Jars::restore(u.cookie_scope, loaded_jars.remove(&u.name), &config.cookies),
            });
        let jar = jars.as_ref().and_then(Jars::shared).cloned();
        let breaker = config.circuit_breaker.enabled.then(|| {
            before
                .and_then(|(_, c)| c.breaker.clone())
                .filter(|_| prev.same(&config, |c| &c.circuit_breaker.config))
                .unwrap_or_else(|| {
                    CircuitBreakerLayer::new(u.name.clone(), config.circuit_breaker.config.clone())
                })
        });
        // Several provider keys: one per attempt, innermost, so a retry after a 429 goes out
        // with the next key and every attempt's answer is fed back to the key it used.
        // The same keys (values and auth) keep their rest state.
        let same_keys = before.and_then(|(pu, c)| {
            c.keys
                .clone()
                .filter(|_| pu.api_keys == u.api_keys && pu.auth_mode() == u.auth_mode())
        });
        let keys = match same_keys {
            Some(k) => Some(k),
            None => (!u.api_keys.is_empty())
                .then(|| {
                    KeyRing::new(&u.name, u.auth_mode(), &u.api_keys)
                        .map(|k| k.with_retry_after_parser(portcullis_retry::parse_retry_after))
                })
                .transpose()
                .map_err(|e| BuildError(format!("upstreams {:?}: {e}", u.name)))?,
        };
        let keyed = ServiceBuilder::new()
            .option_layer(keys.clone().map(KeyRotationLayer::new))
            .service(client);
        // The retry budget carries over while `[retry]` is unchanged.
        let retry = match before.and_then(|(_, c)| c.retry.clone()) {
            Some(r) if config.retry.enabled && prev.same(&config, |c| &c.retry.config) => Some(r),
            _ => config
                .retry
                .enabled
                .then(|| RetryLayer::from_config(&config.retry))
                .transpose()
                .map_err(problems)?,
        };
        let resilient = ServiceBuilder::new()
            // Retry outside the breaker: a retry sees an open breaker at once and gives up,
            // so the router can fail over instead of waiting.
            .option_layer(retry.clone())
            // One breaker per upstream, counting every attempt's outcome.
            .option_layer(breaker.clone())
            // Inside retry: the cookie a failed attempt received goes out on the next one.
            .option_layer(jars.clone().map(CookieSessionLayer::new))
            .service(keyed.clone())
            .map_err(Into::<BoxError>::into);
        let service: UpstreamService = match u.api {
            portcullis_translate::Api::Any => BoxCloneSyncService::new(resilient),
            // Translation outermost, per upstream (its `api` decides the shape): retries
            // re-send the translated body and judge the upstream's own statuses, and the
            // router, fallbacks and every layer above see the client's shape.
            api => BoxCloneSyncService::new(
                ServiceBuilder::new()
                    .map_response(|r: http::Response<_>| r.map(Body::new))
                    .layer(
                        TranslateLayer::new(api)
                            .with_max_body_bytes(config.server.max_body_bytes)
                            // One store for every upstream: a turn may go to another one.
                            .with_store(responses.clone()),
                    )
                    .service(resilient),
            ),
        };
        let status = UpstreamStatus {
            // An open breaker whose open_timeout has passed lets a call through (the probe
            // that may close it): only one that would refuse takes the upstream out.
            breaker_refuses: breaker.as_ref().map(|b| {
                let handle = b.handle();
                Arc::new(move || handle.retry_after().is_some()) as _
            }),
            // The last result stands until the new check (which runs at once) answers.
            check: before
                .filter(|(pu, _)| pu.health_check.enabled() && u.health_check.enabled())
                .map(|(_, c)| c.health.clone())
                .unwrap_or_default(),
        };
        if u.health_check.enabled() {
            // Through the client with the upstream's credentials, but not retry or breaker.
            let probe = BoxCloneSyncService::new(keyed.map_err(Into::<BoxError>::into));
            let task = spawn_health_check(
                upstream.clone(),
                &u.health_check,
                probe,
                status.check.clone(),
                Arc::downgrade(&alive),
            );
            checks.0.push(task.abort_handle());
        }
        if let Some(j) = &jars {
            persisted.push((u.name.clone(), j.clone()));
        }
        carried.insert(
            u.name.clone(),
            CarriedUpstream {
                retry,
                breaker: breaker.clone(),
                jars,
                keys: keys.clone(),
                health: status.check.clone(),
            },
        );
        health.push(UpstreamHealth {
            name: u.name.clone(),
            base_url: u.base_url.clone(),
            breaker: breaker.as_ref().map(|b| b.handle()),
            jar: jar.clone(),
            keys,
            health: u.health_check.enabled().then(|| status.check.clone()),
            alive: alive.clone(),
        });
        routes.push(UpstreamRoute {
            upstream,
            service,
            strip_set_cookie: u.cookies,
            status,
            speaks_anthropic: u.speaks_anthropic(),
            translated: translates_responses,
        });
    }

    let failover_on = config.retry.retry_on.clone();
    let models = config
        .models
        .iter()
        .map(|m| {
            Ok(ModelRoute {
                name: m.name.clone(),
                upstream: m.upstream.clone(),
                model: m.model.clone(),
                fallbacks: m.fallbacks.clone(),
                weight: m.weight,
                params: (!m.params.is_empty()).then(|| Arc::new(m.params.clone())),
                headers: model_headers(m)?,
            })
        })
        .collect::<Result<Vec<_>, BuildError>>()?;
    let router = ModelRouter::new(models, routes, failover_on, config.server.max_body_bytes);

    let memory = Arc::new(memory_router(&config).map_err(problems)?);
    let memory_layer = config
        .memory_routing
        .enabled
        .then(|| MemoryRoutingLayer::new(memory.clone()));

    let mut model_limits = HashMap::new();
    let rate_limit = if config.rate_limit.enabled {
        let rl = &config.rate_limit;
        let backend = match &redis {
            Some(conn) => Backend::Redis(portcullis_rate_limit::RedisStore::new(conn.clone())),
            None => Backend::Memory,
        };
        // Buckets carry over while what they count is unchanged: the same store, and for the
        // main limit the same quota and key, for a model's limit the same quota.
        let same_store = prev.same(&config, |c| &c.state);
        let main = prev
            .rate_limit
            .as_ref()
            .filter(|l| same_store && l.limiter().quota() == rl.quota())
            .filter(|_| prev.same(&config, |c| &c.rate_limit.key));
        let mut layer = match main {
            Some(l) => RateLimitLayer::new(l.limiter().clone(), rl.key)
                .with_queue_timeout(rl.queue_timeout),
            None => {
                RateLimitLayer::from_config_with_backend(rl, backend.clone()).map_err(problems)?
            }
        }
        .with_max_body_bytes(config.server.max_body_bytes);
        for m in &config.models {
            if let Some(q) = &m.rate_limit {
                let limiter = prev
                    .model_limits
                    .get(&m.name)
                    .filter(|l| same_store && l.quota() == *q)
                    .cloned()
                    .unwrap_or_else(|| backend.limiter(*q));
                model_limits.insert(m.name.clone(), limiter.clone());
                layer = layer.with_model_limiter(m.name.as_str(), limiter);
            }
        }
        Some(layer)
    } else {
        None
    };

    let dedup = if config.dedup.enabled {
        let dc = config.dedup.config.clone();
        // The in-flight map and the cache carry over while their settings and store do.
        let before = prev.dedup.clone().filter(|_| {
            prev.same(&config, |c| &c.dedup.config) && prev.same(&config, |c| &c.state)
        });
        let layer = match (before, &redis) {
            (Some(layer), _) => layer,
            (None, Some(conn)) if dc.caching() => DedupCacheLayer::with_store(
                dc,
                Arc::new(portcullis_dedup_cache::RedisStore::new(conn.clone())),
            ),
            (None, _) => DedupCacheLayer::new(dc),
        };
        Some(layer.with_max_body_bytes(config.server.max_body_bytes))
    } else {
        None
    };

    // The dedup key hashes the body's canonical form: validation, which has the body parsed,
    // writes it from its tree, so the dedup layer does not walk the body a second time.
    let dedup_keys =
        config.dedup.enabled && (config.dedup.config.coalesce || config.dedup.config.caching());
    let validation = ValidationLayer::from_config(&config.validation)
        .map_err(problems)?
        .with_max_body_bytes(config.server.max_body_bytes)
        .with_canonical_body(dedup_keys);

    // Gateway keys keep their own limits and in-flight counts, by name.
    let keys = Keys::from_config_carrying(&config, &prev.keys);
    let trusted: Arc<Vec<(std::net::IpAddr, u8)>> = Arc::new(
        config
            .server
            .trusted_proxies
            .iter()
            .filter_map(|c| crate::config::gateway::parse_cidr(c))
            .collect(),
    );
    // The client IP (for rate limits keyed on it, the loopback rule of /admin/*).
    let client_ip = move |mut req: Request<Body>| {
        if let Some(ConnectInfo(addr)) = req.extensions().get::<ConnectInfo<SocketAddr>>().cloned()
        {
            let ip = crate::auth::client_ip_of(addr.ip(), req.headers(), &trusted);
            req.extensions_mut().insert(ClientIp(ip));
        }
        req
    };
    // WebSocket handshakes (/v1/responses, /v1/realtime): the same edge, auth and memory
    // routing as the proxied routes; no body to validate, cache or route on (the model is in
    // the query), and the bytes after the 101 are the upstream's and the client's own.
    let sockets = BoxCloneSyncService::new(
        ServiceBuilder::new()
            .layer(AccessLogLayer)
            .layer(RescueLayer)
            .map_request(client_ip.clone())
            // One token per client request: the breaker counts a request once, whatever its
            // retries (outside the router and retry, which copy it into every attempt).
            .map_request(portcullis_circuit_breaker::ClientRequest::mark)
            .layer(AuthLayer::new(keys.clone()))
            .option_layer(memory_layer.clone())
            .service(crate::upstream::websocket::WebSocketProxy::new(
                router.clone(),
                sockets,
            )),
    );

    // The audit line and usage table: beside the access log, they see the final status.
    // The writer and the usage table carry over while `[audit]` is unchanged.
    let audit = match &prev.audit {
        Some(a) if prev.same(&config, |c| &c.audit) => a.clone(),
        _ => {
            AuditLayer::from_config(&config.audit).map_err(|e| BuildError(format!("audit: {e}")))?
        }
    }
    .with_model_entries(config.models.iter().map(|m| m.name.as_str()));
    // Sessions (in-chat settings, tool-call histories) carry over while their settings do.
    let commands = config.commands.enabled.then(|| {
        match &prev.commands {
            Some(l) if prev.same(&config, |c| &c.commands.config) => l.clone(),
            _ => CommandsLayer::new(config.commands.config.clone()),
        }
        .with_max_body_bytes(config.server.max_body_bytes)
    });
    let tool_call_loop = config.tool_call_loop.enabled.then(|| {
        match &prev.tool_call_loop {
            Some(l) if prev.same(&config, |c| &c.tool_call_loop.config) => l.clone(),
            _ => ToolCallLoopLayer::new(config.tool_call_loop.config.clone()),
        }
        .with_max_body_bytes(config.server.max_body_bytes)
    });
    let audit_handle = audit.handle();
    let proxy = ServiceBuilder::new()
        // Outermost: the access log and metrics see every request's final status.
        .layer(AccessLogLayer)
        .map_response(|r: http::Response<_>| r.map(Body::new))
        .layer(audit.clone())
        .map_request(|r: Request<_>| r.map(Body::new))
        // Every error below becomes a response in the caller's API shape.
        .layer(RescueLayer)
        // The client IP (for rate limits keyed on it) from the accepted connection.
        .map_request(client_ip.clone())
        // One token per client request: the breaker counts a request once, whatever its
        // retries (outside the router and retry, which copy it into every attempt).
        .map_request(portcullis_circuit_breaker::ClientRequest::mark)
        // Reject unauthenticated callers before reading their bodies.
        .layer(AuthLayer::new(keys.clone()))
        // A compressed body (`Content-Encoding: zstd`, as Codex sends) is decoded as it is
        // read, for every layer below and the upstream; a coding no layer could read: 415.
        .filter(crate::decode::api_request)
        // Size cap and body checks: nothing invalid goes further, and later layers get the
        // parsed model and stream flag (RequestMeta) without parsing again.
        .layer(validation)
        // The memory user id exists before anything keys on it.
        .option_layer(memory_layer.clone())
        // Hand the model and user id to the access log and request span now, so answers made
        // above the router (cache hits, rate-limit refusals) are logged under them too.
        .layer(RecordRequestLayer::new(
            config.models.iter().map(|m| m.name.as_str()),
        ))
        // The same for the audit line (key, user, model of refusals made above the router).
        .layer(AuditRecordLayer)
        // In-chat commands read the last user message and answer before anything is spent.
        .option_layer(commands.clone().map(|l| {
            ServiceBuilder::new()
                .map_response(|r: http::Response<_>| r.map(Body::new))
                .layer(l)
        }))
        // The key's policy needs the model as it will be sent: after commands, which may
        // switch a session's model, so `!/set(model=..)` cannot reach a model the key may not.
        .layer(KeyPolicyLayer)
        // May key on that user id; rejects before any upstream work.
        .option_layer(rate_limit.clone())
        // Identical in-flight requests of one caller share one upstream call; the key
        // includes the caller's identity. Without it every answer is a cache `bypass`.
        .option_layer(dedup.clone())
        .map_response(mark_cache_bypass)
        // Around the router, so they watch the final answer the client gets (after retries
        // and failover): the same tool call over and over in one session ...
        .option_layer(tool_call_loop.clone().map(|l| {
            ServiceBuilder::new()
                .map_response(|r: http::Response<_>| r.map(Body::new))
                .layer(l)
        }))
        // ... and an answer repeating itself, cut as it streams.
        .option_layer(config.loop_detection.enabled.then(|| {
            ServiceBuilder::new()
                .map_response(|r: http::Response<_>| r.map(Body::new))
                .layer(LoopDetectionLayer::new(
                    config.loop_detection.config.clone(),
                ))
        }))
        .service(router.clone());
    let proxy = BoxCloneSyncService::new(proxy);

    // Every other /v1/* path: the same edge, keys, memory routing and limits, but no body
    // checks and no dedup (uploads and binary bodies stream through, never buffered whole);
    // retry, breaker and cookies apply per upstream as above (retry only replays a body
    // small enough to buffer).
    let max_body = config.server.max_body_bytes;
    let passthrough = ServiceBuilder::new()
        .layer(AccessLogLayer)
        .map_response(|r: http::Response<_>| r.map(Body::new))
        .layer(audit.clone())
        .map_request(|r: Request<_>| r.map(Body::new))
        .layer(RescueLayer)
        .map_request(client_ip.clone())
        // One token per client request: the breaker counts a request once, whatever its
        // retries (outside the router and retry, which copy it into every attempt).
        .map_request(portcullis_circuit_breaker::ClientRequest::mark)
        .layer(AuthLayer::new(keys.clone()))
        // A compressed body in a coding the gateway knows is decoded as it streams (so a
        // JSON one can name its model); any other goes on as it came.
        .map_request(crate::decode::passthrough_request)
        // A JSON body naming a model is read once (it routes and keys limits); any other
        // body is left alone.
        .filter_async(move |req| passthrough::peek_json(req, max_body))
        .layer(KeyPolicyLayer)
        .option_layer(memory_layer.clone())
        .layer(RecordRequestLayer::new(
            config.models.iter().map(|m| m.name.as_str()),
        ))
        .option_layer(rate_limit.clone())
        .map_response(mark_cache_bypass)
        .service(router.passthrough());
    let passthrough = BoxCloneSyncService::new(passthrough);

    // Paths the gateway does not know: 404 in the caller's shape, logged like any request.
    let unknown =
        ServiceBuilder::new()
            .layer(AccessLogLayer)
            .service_fn(|req: Request<Body>| async move {
                Ok::<_, std::convert::Infallible>(admin::not_found(req.uri().clone()).await)
            });

    let state = AppState {
        config: config.clone(),
        models: crate::models::ModelCatalog::new(router.clone(), &config.models),
        router,
        upstreams: Arc::new(health),
        memory,
        keys: keys.clone(),
        usage: audit_handle.clone(),
        reload: prev.reload.clone(),
    };

    // A POST to a proxied path is an API call (the full stack); any other method on it is
    // passed through like every other `/v1` path: OpenAI serves stored chat completions
    // there (`GET /v1/chat/completions` lists them, `client.chat.completions.list()`).
    let mut routes = Router::new();
    for path in PROXY_PATHS {
        routes = routes.route(
            path,
            any_service(passthrough.clone()).post_service(proxy.clone()),
        );
    }
    let cors = cors(&config.server.cors_origins);
    let router = routes
        .route("/v1/{*rest}", any_service(passthrough))
        .route("/v1/models", get(admin::models))
        .route("/", get(admin::root))
        .route("/health", get(admin::health))
        .route("/health/upstreams", get(admin::health_upstreams))
        .route("/memory-routing/info", get(admin::memory_info))
        .route("/metrics", get(admin::metrics))
        .route(
            "/admin/circuit-breakers/{upstream}/reset",
            post(admin::reset_breaker),
        )
        .route("/admin/usage", get(admin::usage))
        .route("/admin/reload", post(admin::reload))
        // After every route: it is the 405 of each route registered above (a JSON error in
        // the caller's shape, with axum's `Allow` header), not of routes added later.
        .method_not_allowed_fallback(admin::method_not_allowed)
        .fallback_service(unknown)
        .with_state(state.clone())
        // Outside the routes: a handshake is told by its headers, whatever a path's routes are.
        .layer(crate::upstream::websocket::WebSocketLayer::new(sockets))
        .layer(request_ids())
        .layer(tower::util::option_layer(cors.clone()));
    let app = App {
        proxy: ServiceBuilder::new()
            .option_layer(cors)
            .layer(request_ids())
            .service(proxy),
        router,
    };

    let cookie_persist = persist_path.map(|path| CookiePersist {
        path,
        jars: persisted,
        interval: config.cookies.save_interval,
    });
    let carry = StackState {
        config: Some(config),
        redis,
        upstreams: carried,
        rate_limit,
        model_limits,
        dedup,
        commands,
        tool_call_loop,
        audit: Some(audit),
        responses: Some(responses),
        keys,
        reload: prev.reload.clone(),
    };
    Ok(Gateway {
        app,
        state,
        cookie_persist,
        audit: audit_handle,
        carry,
        health_checks: checks,
    })
}

/// A model's `headers`, parsed (names and values were checked at load; secrets are marked
/// sensitive so they never show in a `Debug`).
fn model_headers(
    m: &crate::config::ModelConfig,
) -> Result<Arc<[(http::HeaderName, http::HeaderValue)]>, BuildError> {
    m.headers
        .iter()
        .map(|(name, value)| {
            let n = http::HeaderName::from_bytes(name.as_bytes()).map_err(|_| {
                BuildError(format!("models {:?}: headers.{name}: invalid name", m.name))
            })?;
            let mut v = http::HeaderValue::from_str(value.expose()).map_err(|_| {
                BuildError(format!(
                    "models {:?}: headers.{name}: invalid value",
                    m.name
                ))
            })?;
            v.set_sensitive(true);
            Ok((n, v))
        })
        .collect()
}

/// The paths of the proxied LLM calls: POST on each goes through the full stack (`proxy`).
const PROXY_PATHS: [&str; 6] = [
    "/v1/chat/completions",
    "/v1/completions",
    "/v1/embeddings",
    "/v1/messages",
    "/v1/messages/count_tokens",
    "/v1/responses",
];

/// A request id on every request and response, kept from the client if sent.
fn request_ids() -> tower::layer::util::Stack<
    PropagateRequestIdLayer,
    tower::layer::util::Stack<SetRequestIdLayer<UuidRequestId>, tower::layer::util::Identity>,
> {
    ServiceBuilder::new()
        .layer(SetRequestIdLayer::x_request_id(UuidRequestId))
        .layer(PropagateRequestIdLayer::x_request_id())
        .into_inner()
}

type ProxyService = BoxCloneSyncService<Request<Body>, http::Response<Body>, Infallible>;
type ProxyWithIds = tower::util::Either<Cors<IdProxy>, IdProxy>;
type IdProxy = SetRequestId<PropagateRequestId<ProxyService>, UuidRequestId>;

/// `server.cors_origins` as tower-http's CORS layer, outermost (a browser's preflight carries
/// no key: it is answered before the key check), or `None` when the list is empty. Methods
/// and request headers are mirrored from the preflight (the SDKs send `x-stainless-*`,
/// `anthropic-version`, `openai-beta`...); the gateway's own answer headers are exposed to
/// the page. No credentials mode: keys travel in headers the page sets, not cookies.
fn cors(origins: &[String]) -> Option<CorsLayer> {
    if origins.is_empty() {
        return None;
    }
    let allow = if origins.iter().any(|o| o == "*") {
        AllowOrigin::any()
    } else {
        // Checked at load (`server.cors_origins[i]`).
        AllowOrigin::list(origins.iter().filter_map(|o| HeaderValue::from_str(o).ok()))
    };
    Some(
        CorsLayer::new()
            .allow_origin(allow)
            .allow_methods(AllowMethods::mirror_request())
            .allow_headers(AllowHeaders::mirror_request())
            .expose_headers([
                http::header::HeaderName::from_static("x-request-id"),
                portcullis_core::headers::X_PORTCULLIS_UPSTREAM,
                portcullis_core::headers::X_PORTCULLIS_ATTEMPTS,
                portcullis_core::headers::X_PORTCULLIS_CACHE,
                portcullis_core::headers::X_PORTCULLIS_ERROR,
                http::header::RETRY_AFTER,
            ])
            .max_age(std::time::Duration::from_secs(3600)),
    )
}

/// A random (v4) UUID as the request id, lower-case and hyphenated, as tower-http's
/// `MakeRequestUuid` makes it, written straight into the header value's bytes: no `fmt`, no
/// intermediate `String`.
#[derive(Debug, Clone, Copy)]
pub struct UuidRequestId;

impl MakeRequestId for UuidRequestId {
    fn make_request_id<B>(&mut self, _: &Request<B>) -> Option<RequestId> {
        let mut buf = [0u8; uuid::fmt::Hyphenated::LENGTH];
        let id = uuid::Uuid::new_v4().hyphenated().encode_lower(&mut buf);
        // New on every request: never indexed by HTTP/2's header compression, on the way
        // back to the client and on to the upstream.
        http::HeaderValue::from_str(id)
            .ok()
            .map(|v| RequestId::new(portcullis_core::headers::never_indexed(v)))
    }
}

/// The response future of [`App`]: the proxy stack's (called on a connection's own instance
/// of it, or on a clone readied in the future) or the router's.
pub type AppFuture = Either<
    Either<
        <ProxyWithIds as Service<Request<Body>>>::Future,
        tower::util::Oneshot<ProxyWithIds, Request<Body>>,
    >,
    tower::util::Oneshot<Router, Request<Body>>,
>;

/// A connection's own instance of the proxy stack, made on its first proxied request and
/// called by its next ones (see [`App::handle_held`]).
pub type HeldProxy = Option<ProxyWithIds>;

/// The gateway's HTTP app: a POST to one of the proxied paths (almost every request) goes
/// straight to the proxy stack, with the same request-id layers the router puts around it;
/// everything else goes through axum's router. The router would send those POSTs to the very
/// same service; going around it skips its path lookup, its method dispatch and the two
/// extensions it adds to every request (`MatchedPath`, the path parameters), which nothing
/// here reads. Any other method on those paths meets the router, which passes it through
/// (stored chat completions, WebSocket handshakes). The router's WebSocket layer is not on
/// this path: a handshake is never a POST.
#[derive(Clone)]
pub struct App {
    proxy: ProxyWithIds,
    router: Router,
}

impl fmt::Debug for App {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("App").finish_non_exhaustive()
    }
}

impl Service<Request<Body>> for App {
    type Response = http::Response<Body>;
    type Error = Infallible;
    type Future = AppFuture;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        // Each request readies its own clone, as the router does for its routes.
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: Request<Body>) -> Self::Future {
        self.handle(req)
    }
}

impl App {
    /// Serve `req` with a clone of the one service it needs (what `call` does, from a
    /// shared reference: the server takes the app of the gateway live at each request).
    pub fn handle(&self, req: Request<Body>) -> AppFuture {
        if is_proxied(&req) {
            Either::Left(Either::Right(self.proxy.clone().oneshot(req)))
        } else {
            Either::Right(self.router.clone().oneshot(req))
        }
    }

    /// [`Self::handle`] for a connection that keeps its own instance of the proxy stack in
    /// `held` (made from this app, which the caller checks): a proxied request is called on
    /// it at once when it is ready, as the stack always is, instead of on a clone of the whole
    /// stack made for it (a box, and a reference count taken and given back for every layer's
    /// shared state, on every request).
    pub fn handle_held(&self, held: &mut HeldProxy, req: Request<Body>) -> AppFuture {
        if !is_proxied(&req) {
            return Either::Right(self.router.clone().oneshot(req));
        }
        let proxy = held.get_or_insert_with(|| self.proxy.clone());
        match portcullis_core::future::call_if_ready(proxy, req) {
            Ok(Ok(called)) => Either::Left(Either::Left(called)),
            Ok(Err(never)) => match never {},
            // Not ready now (no layer of the stack holds requests back today): a clone, readied
            // in the future as before.
            Err(req) => Either::Left(Either::Right(self.proxy.clone().oneshot(req))),
        }
    }
}

/// A POST to one of the proxied paths (almost every request): the proxy stack's, not the
/// router's.
fn is_proxied(req: &Request<Body>) -> bool {
    req.method() == Method::POST && PROXY_PATHS.contains(&req.uri().path())
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

// === Carry-over (hot reload) ===

/// The state one build hands to the next on a hot reload ([`build_carrying`]): what a
/// configuration change must not reset, by upstream, model and key name. Cloning shares it.
///
/// A piece carries over when what it was made from is unchanged, and starts fresh otherwise:
///
/// | piece | carried while unchanged |
/// | --- | --- |
/// | an upstream's breaker | the upstream (by name) and `[circuit_breaker]` |
/// | an upstream's retry budget | the upstream and `[retry]` |
/// | an upstream's cookie jars | the upstream, `cookies = true` and its `cookie_scope` (limits follow `[cookies]`) |
/// | an upstream's provider-key rest state | the upstream, its `api_keys` and `auth` |
/// | an upstream's last health-check result | the upstream with a `health_check.path` (its new check runs at once) |
/// | the rate-limit buckets | `[state]`, and the quota and `key` (a model's: its `rate_limit`) |
/// | a gateway key's own limit and in-flight count | the key (by name) and its `rate_limit` / `max_concurrency` |
/// | the dedup in-flight map and cache | `[dedup]` and `[state]` |
/// | in-chat command and tool-call sessions | `[commands]`, `[tool_call_loop]` |
/// | the audit writer and the `/admin/usage` counters | `[audit]` |
/// | the Redis connection | `[state]` |
///
/// Metrics live in the process's one recorder and carry over anyway.
#[derive(Debug, Clone, Default)]
pub struct StackState {
    /// The config the pieces were made for (`None`: a first build, nothing to carry).
    config: Option<Arc<Config>>,
    redis: Option<portcullis_core::remote::Guarded<redis::aio::ConnectionManager>>,
    upstreams: HashMap<String, CarriedUpstream>,
    rate_limit: Option<RateLimitLayer>,
    /// The limiters of `[[models]] rate_limit`, by model name.
    model_limits: HashMap<String, Limiter>,
    dedup: Option<DedupCacheLayer>,
    commands: Option<CommandsLayer>,
    tool_call_loop: Option<ToolCallLoopLayer>,
    audit: Option<AuditLayer>,
    responses: Option<ResponseStore>,
    keys: Keys,
    reload: ReloadHook,
}

#[derive(Debug, Clone)]
struct CarriedUpstream {
    retry: Option<RetryLayer>,
    breaker: Option<CircuitBreakerLayer>,
    jars: Option<Jars>,
    keys: Option<KeyRing>,
    health: HealthState,
}

impl StackState {
    /// Nothing to carry yet, but every stack built from here on reaches `reload` from
    /// `POST /admin/reload`.
    pub fn with_reload_hook(reload: ReloadHook) -> Self {
        Self {
            reload,
            ..Self::default()
        }
    }

    /// The config this state was built for, if any.
    pub fn config(&self) -> Option<&Arc<Config>> {
        self.config.as_ref()
    }

    /// Whether the part of the config that `part` picks is the same in `config` as in the
    /// config this state was made for (false for a first build).
    fn same<T: PartialEq + ?Sized>(&self, config: &Config, part: impl Fn(&Config) -> &T) -> bool {
        self.config
            .as_ref()
            .is_some_and(|c| part(c) == part(config))
    }

    /// The upstream called `name` in the previous config, and its state.
    fn upstream(&self, name: &str) -> Option<(&crate::config::UpstreamConfig, &CarriedUpstream)> {
        let config = self.config.as_ref()?;
        let u = config.upstreams.iter().find(|u| u.name == name)?;
        Some((u, self.upstreams.get(name)?))
    }
}

/// The active health-check tasks of one build. They stop when this is dropped, or at
/// [`stop`](Self::stop) (a reload replaced the build while its requests finish).
#[derive(Debug, Default)]
pub struct HealthChecks(Vec<tokio::task::AbortHandle>);

impl HealthChecks {
    /// Stop every task now.
    pub fn stop(&self) {
        for task in &self.0 {
            task.abort();
        }
    }

    /// How many tasks this build started.
    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// Whether it started none.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

impl Drop for HealthChecks {
    fn drop(&mut self) {
        self.stop();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A proxy stack that counts its own clones.
    struct Counted(Arc<std::sync::atomic::AtomicUsize>);

    impl Clone for Counted {
        fn clone(&self) -> Self {
            self.0.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            Self(self.0.clone())
        }
    }

    impl Service<Request<Body>> for Counted {
        type Response = http::Response<Body>;
        type Error = Infallible;
        type Future = std::future::Ready<Result<http::Response<Body>, Infallible>>;

        fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
            Poll::Ready(Ok(()))
        }

        fn call(&mut self, _: Request<Body>) -> Self::Future {
            std::future::ready(Ok(http::Response::new(Body::from("proxied"))))
        }
    }

    #[tokio::test]
    async fn a_connection_calls_its_own_instance_of_the_proxy_stack() {
        let clones = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let count = || clones.load(std::sync::atomic::Ordering::Relaxed);
        let proxy: ProxyService = BoxCloneSyncService::new(Counted(clones.clone()));
        let app = App {
            proxy: tower::util::Either::Right(
                ServiceBuilder::new().layer(request_ids()).service(proxy),
            ),
            router: Router::new(),
        };
        let post = || {
            Request::post("/v1/chat/completions")
                .body(Body::from("{}"))
                .unwrap()
        };
        let mut held = None;
        for _ in 0..3 {
            let resp = app.handle_held(&mut held, post()).await.unwrap();
            assert_eq!(resp.status(), 200);
            assert!(resp.headers().contains_key("x-request-id"));
        }
        assert_eq!(count(), 1, "one clone, for the connection");
        // Not for the router's requests.
        let resp = app
            .handle_held(
                &mut held,
                Request::get("/v1/nothing").body(Body::empty()).unwrap(),
            )
            .await
            .unwrap();
        assert_eq!(resp.status(), 404);
        assert_eq!(count(), 1);
        // Without an instance of its own, a request clones the stack.
        app.handle(post()).await.unwrap();
        assert_eq!(count(), 2);
    }

    #[test]
    fn request_ids_are_lower_case_hyphenated_v4_uuids_as_tower_http_makes_them() {
        let req = Request::new(());
        let mut ids = std::collections::HashSet::new();
        for _ in 0..100 {
            let id = UuidRequestId.make_request_id(&req).unwrap();
            // New on every request: never indexed by HTTP/2's header compression.
            assert!(id.header_value().is_sensitive());
            let text = id.header_value().to_str().unwrap().to_string();
            let parsed = uuid::Uuid::parse_str(&text).unwrap();
            assert_eq!(parsed.get_version_num(), 4, "{text}");
            assert_eq!(
                text,
                parsed.hyphenated().to_string(),
                "lower case, hyphenated"
            );
            assert!(ids.insert(text), "ids differ");
        }
        let tower_http = tower_http::request_id::MakeRequestUuid
            .make_request_id(&req)
            .unwrap();
        assert_eq!(
            tower_http.header_value().len(),
            UuidRequestId
                .make_request_id(&req)
                .unwrap()
                .header_value()
                .len()
        );
    }
}
