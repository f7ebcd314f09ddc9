//! Run with: cargo run --example own_stack
//!
//! Four portcullis layers in your own axum app, without the portcullis binary: validation,
//! memory routing, retry and a circuit breaker, around a flaky upstream (a `service_fn` here;
//! a hyper client in real life). Errors the layers add are typed; `HandleErrorLayer` turns
//! them into responses. The program serves on a free port, sends itself three requests, prints
//! what came back, and exits.

use std::{
    sync::{
        atomic::{AtomicUsize, Ordering},
        Arc,
    },
    time::Duration,
};

use axum::{
    body::Body,
    error_handling::HandleErrorLayer,
    http::{Request, Response, StatusCode},
    response::IntoResponse,
    routing::post_service,
    Router,
};
use http_body_util::BodyExt;
use portcullis_circuit_breaker::CircuitBreakerLayer;
use portcullis_core::{error::find_in_chain, CircuitOpen, UserId};
use portcullis_memory_routing::{MemoryRoutingLayer, Pattern};
use portcullis_retry::RetryLayer;
use portcullis_validation::{InvalidRequest, ValidationLayer};
use tower::{service_fn, BoxError, ServiceBuilder};

/// Turn the layers' typed errors into HTTP responses.
async fn handle_error(err: BoxError) -> impl IntoResponse {
    if let Some(e) = find_in_chain::<InvalidRequest>(&*err) {
        return (StatusCode::BAD_REQUEST, format!("invalid request: {e}"));
    }
    if let Some(e) = find_in_chain::<CircuitOpen>(&*err) {
        return (StatusCode::SERVICE_UNAVAILABLE, format!("{e}"));
    }
    (StatusCode::BAD_GATEWAY, format!("upstream failed: {err}"))
}

#[tokio::main]
async fn main() -> Result<(), BoxError> {
    // The "upstream": fails every other call with 503, and echoes the memory user id.
    let calls = Arc::new(AtomicUsize::new(0));
    let upstream = {
        let calls = calls.clone();
        service_fn(move |req: Request<Body>| {
            let n = calls.fetch_add(1, Ordering::SeqCst);
            async move {
                let user = req
                    .extensions()
                    .get::<UserId>()
                    .map(|u| u.to_string())
                    .unwrap_or_default();
                let status = if n % 2 == 0 {
                    StatusCode::SERVICE_UNAVAILABLE
                } else {
                    StatusCode::OK
                };
                let mut resp = Response::new(Body::from(format!("{{\"served_user\":\"{user}\"}}")));
                *resp.status_mut() = status;
                Ok::<_, BoxError>(resp)
            }
        })
    };

    let memory = portcullis_memory_routing::Config {
        patterns: vec![Pattern {
            header: "user-agent".into(),
            pattern: "OpenAIClientImpl/Java".into(),
            user_id: "pycharm-ai".into(),
        }],
        ..Default::default()
    };
    let retry = portcullis_retry::Config {
        base_delay: Duration::from_millis(10),
        ..Default::default()
    };
    let stack = ServiceBuilder::new()
        .layer(HandleErrorLayer::new(handle_error))
        .layer(ValidationLayer::from_config(&Default::default()).map_err(|p| format!("{p:?}"))?)
        .layer(MemoryRoutingLayer::from_config(&memory).map_err(|p| format!("{p:?}"))?)
        .layer(RetryLayer::from_config(&retry).map_err(|p| format!("{p:?}"))?)
        .layer(
            CircuitBreakerLayer::from_config("demo", &Default::default())
                .map_err(|p| format!("{p:?}"))?,
        )
        .service(upstream);

    let app = Router::new().route("/v1/chat/completions", post_service(stack));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    tokio::spawn(async move { axum::serve(listener, app).await });

    let client = hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
        .build_http::<String>();
    let good = r#"{"model":"gpt-4o-mini","messages":[{"role":"user","content":"hi"}]}"#;
    let bad = r#"{"model":"gpt-4o-mini","messages":[{"role":"robot","content":"hi"}]}"#;
    for (label, body) in [
        ("valid", good),
        ("valid again", good),
        ("invalid role", bad),
    ] {
        let req = Request::post(format!("http://{addr}/v1/chat/completions"))
            .header("content-type", "application/json")
            .header("user-agent", "OpenAIClientImpl/Java")
            .body(body.to_string())?;
        let resp = client.request(req).await?;
        let status = resp.status();
        let attempts = resp
            .headers()
            .get("x-portcullis-attempts")
            .and_then(|v| v.to_str().ok())
            .unwrap_or("-")
            .to_string();
        let text = resp.into_body().collect().await?.to_bytes();
        println!(
            "{label:>12}: {status} attempts={attempts} {}",
            String::from_utf8_lossy(&text)
        );
    }
    println!("upstream calls: {}", calls.load(Ordering::SeqCst));
    Ok(())
}
