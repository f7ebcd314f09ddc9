//! The commands layer beside the bare inner service: a chat request without a command (the
//! common case: the layer only reads the body and looks for the prefix) and a `!/show`
//! answered by the layer itself.
//!
//! Run with: `cargo bench -p portcullis-commands`

use std::convert::Infallible;

use bytes::Bytes;
use criterion::{criterion_group, criterion_main, Criterion};
use http::{Request, Response};
use http_body_util::{BodyExt, Full};
use portcullis_commands::{CommandsLayer, Config, X_PORTCULLIS_COMMAND};
use serde_json::json;
use tower::{service_fn, Layer, ServiceExt};

/// A chat request (~2 KB): a system prompt, two earlier turns and `last` as the user's message.
fn chat(last: &str) -> Bytes {
    let answer = "The breaker opens after five failures in a row and stays open for 30 s; \
                  then one request is let through to probe the upstream.\n\n"
        .repeat(3);
    let body = json!({
        "model": "gpt-4o-mini",
        "temperature": 0.7,
        "stream": false,
        "messages": [
            {"role": "system", "content": "You are a concise assistant for the portcullis \
                gateway's operators. Answer with the config keys involved and an example.\n\
                Never invent keys that do not exist."},
            {"role": "user", "content": "When does the circuit breaker open, and for how long?"},
            {"role": "assistant", "content": answer},
            {"role": "user", "content": "And which settings change that? Show me the section \
                of portcullis.toml with every key and its default, please."},
            {"role": "assistant", "content": "```toml\n[circuit_breaker]\nfailure_threshold = 5\n\
                minimum_requests = 10\nopen_for = \"30s\"\nhalf_open_probes = 1\n```"},
            {"role": "user", "content": last},
        ],
    });
    Bytes::from(body.to_string())
}

/// What the upstream answers (~1 KB chat completion).
fn answer() -> Bytes {
    let text = "`failure_threshold` counts consecutive failures; `minimum_requests` keeps a \
                quiet upstream from tripping on its first error.\n"
        .repeat(5);
    Bytes::from(
        json!({
            "id": "chatcmpl-B9MHDbslfkBeAs8l4bebGdFOJ6PeG",
            "object": "chat.completion",
            "created": 1741570283,
            "model": "gpt-4o-mini-2024-07-18",
            "choices": [{"index": 0, "message": {"role": "assistant", "content": text,
                "refusal": null}, "logprobs": null, "finish_reason": "stop"}],
            "usage": {"prompt_tokens": 412, "completion_tokens": 118, "total_tokens": 530},
            "system_fingerprint": "fp_eb9dce56a8",
        })
        .to_string(),
    )
}

fn request(body: &Bytes) -> Request<Full<Bytes>> {
    Request::post("/v1/chat/completions")
        .header("content-type", "application/json")
        .header("authorization", "Bearer sk-bench")
        .header("x-session-id", "chat-42")
        .body(Full::new(body.clone()))
        .unwrap()
}

fn bench(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let answer = answer();
    let upstream = service_fn(move |_req: Request<Full<Bytes>>| {
        let resp = Response::builder()
            .header("content-type", "application/json")
            .body(Full::new(answer.clone()))
            .unwrap();
        std::future::ready(Ok::<_, Infallible>(resp))
    });
    let layer = CommandsLayer::from_config(&Config::default()).expect("valid config");
    let commands = layer.layer(upstream.clone());
    let plain = chat("Thanks. Does a half-open probe count towards `minimum_requests`?");
    let show = chat("!/show");

    // The plain request must go on to the upstream and `!/show` be answered by the layer.
    rt.block_on(async {
        let resp = commands.clone().oneshot(request(&plain)).await.unwrap();
        assert!(!resp.body().is_answer());
        let resp = commands.clone().oneshot(request(&show)).await.unwrap();
        assert_eq!(resp.headers()[X_PORTCULLIS_COMMAND], "show");
    });

    let mut group = c.benchmark_group("commands");
    group.bench_function("bare", |b| {
        b.to_async(&rt).iter(|| {
            let svc = upstream.clone();
            let req = request(&plain);
            async move {
                let resp = svc.oneshot(req).await.unwrap();
                resp.into_body().collect().await.unwrap().to_bytes().len()
            }
        })
    });
    for (name, body) in [("no_command", &plain), ("show", &show)] {
        group.bench_function(name, |b| {
            b.to_async(&rt).iter(|| {
                let svc = commands.clone();
                let req = request(body);
                async move {
                    let resp = svc.oneshot(req).await.unwrap();
                    resp.into_body().collect().await.unwrap().to_bytes().len()
                }
            })
        });
    }
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
