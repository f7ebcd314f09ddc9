//! The gateway's own endpoints: health, upstream health, models, memory-routing info,
//! metrics and the guarded admin actions.

use std::net::SocketAddr;

use axum::{
    extract::{ConnectInfo, Path, State},
    http::{HeaderMap, StatusCode},
    response::{IntoResponse, Response},
    Json,
};
use serde_json::json;

use crate::{
    auth::admin_allowed,
    error::{ApiShape, GatewayError},
    state::AppState,
    upstream::health::Health,
};

/// `GET /health`
pub async fn health() -> Json<serde_json::Value> {
    Json(json!({ "status": "healthy" }))
}

/// `GET /` (and `HEAD /`, which Claude Code sends when it starts, to warm its connection):
/// the gateway's name, no key needed, nothing about its configuration.
pub async fn root() -> Json<serde_json::Value> {
    Json(json!({ "name": "portcullis", "status": "healthy" }))
}

/// `GET /health/upstreams`: breaker state and cookie counts (never cookie values).
pub async fn health_upstreams(State(state): State<AppState>) -> Json<serde_json::Value> {
    let upstreams: Vec<_> = state
        .upstreams
        .iter()
        .map(|u| {
            let circuit = u
                .breaker
                .as_ref()
                .map(|b| b.state().as_str())
                .unwrap_or("closed");
            let retry_after = u
                .breaker
                .as_ref()
                .and_then(|b| b.retry_after())
                .map(|d| d.as_secs_f64().ceil() as u64);
            let cookies = u.jar.as_ref().map(|j| j.len()).unwrap_or(0);
            metrics::gauge!("portcullis_cookies", "upstream" => u.name.clone()).set(cookies as f64);
            json!({
                "name": u.name,
                "base_url": u.base_url,
                "circuit": circuit,
                "circuit_retry_after_secs": retry_after,
                "cookies": cookies,
                "cookies_enabled": u.jar.is_some(),
                "circuit_breaker_enabled": u.breaker.is_some(),
                "keys": u.keys.as_ref().map_or(0, |k| k.len()),
                "keys_resting": u.keys.as_ref().map_or(0, |k| k.resting()),
                "health": u.health.as_ref().map_or(Health::Unchecked, |h| h.get()).as_str(),
            })
        })
        .collect();
    Json(json!({ "upstreams": upstreams }))
}

/// With gateway keys set, the caller must present one (the proxied routes' rule).
fn guard(state: &AppState, headers: &HeaderMap) -> Option<Response> {
    state.keys.check(headers).err().map(|e| {
        GatewayError::new(StatusCode::UNAUTHORIZED, "unauthorized", e.0)
            .into_response(ApiShape::OpenAi)
    })
}

/// `GET /v1/models`: the configured models, OpenAI list shape, pattern entries expanded from
/// their upstreams' own lists (guarded like the proxied routes when gateway keys are set).
pub async fn models(State(state): State<AppState>, headers: HeaderMap) -> Response {
    if let Some(r) = guard(&state, &headers) {
        return r;
    }
    Json(state.models.list(&headers).await).into_response()
}

/// `GET /memory-routing/info`: the decision for the caller's own headers.
pub async fn memory_info(State(state): State<AppState>, headers: HeaderMap) -> Response {
    if let Some(r) = guard(&state, &headers) {
        return r;
    }
    let decision = state.memory.decide(&headers);
    Json(decision).into_response()
}

/// `GET /metrics`: Prometheus text format.
pub async fn metrics(State(state): State<AppState>, headers: HeaderMap) -> Response {
    if let Some(r) = guard(&state, &headers) {
        return r;
    }
    // Gauges that are state, not events, are refreshed at scrape time.
    for u in state.upstreams.iter() {
        if let Some(b) = &u.breaker {
            let v = match b.state().as_str() {
                "closed" => 0.0,
                "open" => 1.0,
                _ => 2.0,
            };
            metrics::gauge!("portcullis_circuit_breaker_state", "upstream" => u.name.clone())
                .set(v);
        }
        if let Some(j) = &u.jar {
            metrics::gauge!("portcullis_cookies", "upstream" => u.name.clone()).set(j.len() as f64);
        }
        if let Some(h) = &u.health {
            metrics::gauge!("portcullis_upstream_health", "upstream" => u.name.clone())
                .set(h.get().gauge());
        }
    }
    (
        [(
            http::header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        crate::telemetry::metrics::render(),
    )
        .into_response()
}

/// The guard of `/admin/*`: `server.admin_key` as a bearer token, else loopback clients only
/// (behind a trusted local reverse proxy the peer is the proxy: the client is in
/// `X-Forwarded-For`).
fn admin_guard(state: &AppState, peer: SocketAddr, headers: &HeaderMap) -> Option<Response> {
    let trusted: Vec<_> = state
        .config
        .server
        .trusted_proxies
        .iter()
        .filter_map(|c| crate::config::gateway::parse_cidr(c))
        .collect();
    let peer = SocketAddr::new(
        crate::auth::client_ip_of(peer.ip(), headers, &trusted),
        peer.port(),
    );
    let admin_key = state.config.server.admin_key.expose();
    if admin_allowed(admin_key, headers, Some(peer)) {
        return None;
    }
    let (status, msg) = if admin_key.is_empty() {
        (
            StatusCode::FORBIDDEN,
            "admin endpoints answer only loopback clients when server.admin_key is not set",
        )
    } else {
        (
            StatusCode::UNAUTHORIZED,
            "admin key required: Authorization: Bearer <server.admin_key>",
        )
    };
    Some(GatewayError::new(status, "unauthorized", msg).into_response(ApiShape::OpenAi))
}

/// `GET /admin/usage`: requests, tokens and errors per key name and model since start.
pub async fn usage(
    State(state): State<AppState>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
) -> Response {
    if let Some(r) = admin_guard(&state, peer, &headers) {
        return r;
    }
    Json(state.usage.usage().to_json()).into_response()
}

/// `POST /admin/circuit-breakers/{upstream}/reset`
pub async fn reset_breaker(
    State(state): State<AppState>,
    Path(upstream): Path<String>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
) -> Response {
    if let Some(r) = admin_guard(&state, peer, &headers) {
        return r;
    }
    let Some(u) = state.upstreams.iter().find(|u| u.name == upstream) else {
        return GatewayError::new(
            StatusCode::NOT_FOUND,
            "not_found",
            format!("no upstream named {upstream:?}"),
        )
        .into_response(ApiShape::OpenAi);
    };
    match &u.breaker {
        Some(b) => {
            b.reset();
            tracing::info!(upstream = %u.name, "circuit breaker reset by admin");
            Json(json!({ "upstream": u.name, "circuit": b.state().as_str() })).into_response()
        }
        None => GatewayError::new(
            StatusCode::CONFLICT,
            "circuit_breaker_disabled",
            "circuit_breaker.enabled is false",
        )
        .into_response(ApiShape::OpenAi),
    }
}

/// `POST /admin/reload`: re-read the configuration (as `SIGHUP` does). A valid one replaces
/// the running stack (200 and a short summary); an invalid one is refused (422 and every
/// problem, key path and message, never a value) and the running one keeps serving.
pub async fn reload(
    State(state): State<AppState>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
) -> Response {
    if let Some(r) = admin_guard(&state, peer, &headers) {
        return r;
    }
    let Some(reloader) = state.reload.get() else {
        return GatewayError::new(
            StatusCode::NOT_IMPLEMENTED,
            "reload_unavailable",
            "this gateway was built without a reloader (portcullis serve has one)",
        )
        .into_response(ApiShape::OpenAi);
    };
    match reloader.reload("POST /admin/reload").await {
        Ok(summary) => Json(summary).into_response(),
        Err(problems) => {
            let message = format!(
                "configuration refused ({} problem(s)); the running configuration keeps serving",
                problems.len()
            );
            let problems: Vec<_> = problems
                .iter()
                .map(|p| json!({ "path": p.path, "message": p.message }))
                .collect();
            let body = json!({
                "error": {
                    "message": message,
                    "type": "invalid_request_error",
                    "code": "invalid_config",
                },
                "problems": problems,
            });
            (
                StatusCode::UNPROCESSABLE_ENTITY,
                [(
                    portcullis_core::headers::X_PORTCULLIS_ERROR,
                    "invalid_config",
                )],
                Json(body),
            )
                .into_response()
        }
    }
}

/// A method a gateway route does not take (`POST /health`, `DELETE /v1/models`): 405 in the
/// caller's shape (axum adds the `Allow` header).
pub async fn method_not_allowed(method: http::Method, uri: http::Uri) -> Response {
    GatewayError::new(
        StatusCode::METHOD_NOT_ALLOWED,
        "method_not_allowed",
        format!("method {method} is not allowed on {}", uri.path()),
    )
    .into_response(ApiShape::from_path(uri.path()))
}

/// Anything else: 404 in OpenAI's shape.
pub async fn not_found(uri: http::Uri) -> Response {
    GatewayError::new(
        StatusCode::NOT_FOUND,
        "not_found",
        format!("no route for {}", uri.path()),
    )
    .into_response(ApiShape::from_path(uri.path()))
}
