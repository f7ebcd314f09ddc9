//! The audit layer beside the bare inner service, each response body driven to its end (where
//! usage is counted and the line queued): with no `path` (usage counting only) and with a file
//! in a temp dir (lines appended by the background writer), on a JSON answer with usage and on
//! a streamed answer (~50 events, usage in the last chunk).
//!
//! Run with: `cargo bench -p portcullis-audit`

use std::{
    collections::VecDeque,
    convert::Infallible,
    fs::File,
    io::{BufRead, BufReader},
    pin::Pin,
    sync::Arc,
    task::{Context, Poll},
};

use bytes::Bytes;
use criterion::{criterion_group, criterion_main, Criterion};
use http::{Request, Response};
use http_body::{Body, Frame};
use http_body_util::{BodyExt, Full};
use portcullis_audit::{AuditLayer, AuditRequestBody, Config, KeyName};
use portcullis_core::{RequestMeta, RouteInfo};
use serde_json::json;
use tower::{service_fn, Layer, Service, ServiceExt};

/// The upstream body: one frame per SSE event (a JSON answer is one frame).
struct Frames(VecDeque<Bytes>);

impl Body for Frames {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        _: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        Poll::Ready(self.0.pop_front().map(|b| Ok(Frame::data(b))))
    }
}

/// What the upstream answers: a content type and the frames of the body.
#[derive(Clone)]
struct Answer {
    content_type: &'static str,
    frames: Arc<[Bytes]>,
}

fn usage() -> serde_json::Value {
    json!({"prompt_tokens": 412, "completion_tokens": 118, "total_tokens": 530,
        "prompt_tokens_details": {"cached_tokens": 256}})
}

/// A chat completion (~1 KB) with usage.
fn json_answer() -> Answer {
    let text = "`failure_threshold` counts consecutive failures; `minimum_requests` keeps a \
                quiet upstream from tripping on its first error.\n"
        .repeat(5);
    let body = json!({
        "id": "chatcmpl-B9MHDbslfkBeAs8l4bebGdFOJ6PeG",
        "object": "chat.completion",
        "created": 1741570283,
        "model": "gpt-4o-mini-2024-07-18",
        "choices": [{"index": 0, "message": {"role": "assistant", "content": text,
            "refusal": null}, "logprobs": null, "finish_reason": "stop"}],
        "usage": usage(),
        "system_fingerprint": "fp_eb9dce56a8",
    });
    Answer {
        content_type: "application/json",
        frames: vec![Bytes::from(body.to_string())].into(),
    }
}

/// The same kind of answer streamed: 46 content chunks of a word or two, the finish chunk, a
/// usage chunk (`stream_options.include_usage`) and `[DONE]`.
fn streamed_answer() -> Answer {
    let chunk = |choices: serde_json::Value, usage: serde_json::Value| {
        let event = json!({
            "id": "chatcmpl-B9MHDbslfkBeAs8l4bebGdFOJ6PeG",
            "object": "chat.completion.chunk",
            "created": 1741570283,
            "model": "gpt-4o-mini-2024-07-18",
            "system_fingerprint": "fp_eb9dce56a8",
            "choices": choices,
            "usage": usage,
        });
        Bytes::from(format!("data: {event}\n\n"))
    };
    let words = "`failure_threshold` counts consecutive failures; `minimum_requests` keeps a \
                 quiet upstream from tripping on its first error, and `open_for` is how long \
                 the breaker stays open before one probe is let through. ";
    let mut frames = vec![chunk(
        json!([{"index": 0, "delta": {"role": "assistant", "content": "", "refusal": null},
            "logprobs": null, "finish_reason": null}]),
        json!(null),
    )];
    for token in words.split_inclusive(' ').cycle().take(46) {
        frames.push(chunk(
            json!([{"index": 0, "delta": {"content": token}, "logprobs": null, "finish_reason": null}]),
            json!(null),
        ));
    }
    frames.push(chunk(
        json!([{"index": 0, "delta": {}, "logprobs": null, "finish_reason": "stop"}]),
        json!(null),
    ));
    frames.push(chunk(json!([]), usage()));
    frames.push(Bytes::from_static(b"data: [DONE]\n\n"));
    Answer {
        content_type: "text/event-stream",
        frames: frames.into(),
    }
}

/// A ready upstream answering `answer`, with the route the gateway's router would record.
fn upstream<B>(
    answer: Answer,
) -> impl Service<
    Request<B>,
    Response = Response<Frames>,
    Error = Infallible,
    Future = std::future::Ready<Result<Response<Frames>, Infallible>>,
> + Clone {
    let route = RouteInfo {
        model: Arc::from("gpt-4o-mini"),
        entry: Some(Arc::from("gpt-4o-mini")),
        upstream: Arc::from("openai"),
        attempts: 1,
        user_id: None,
    };
    service_fn(move |_req: Request<B>| {
        let mut resp = Response::builder()
            .header("content-type", answer.content_type)
            .body(Frames(answer.frames.iter().cloned().collect()))
            .unwrap();
        resp.extensions_mut().insert(route.clone());
        std::future::ready(Ok(resp))
    })
}

/// A chat request as it reaches the audit layer in the gateway: key name and model known.
fn request(stream: bool) -> Request<Full<Bytes>> {
    let body = if stream {
        &br#"{"model":"gpt-4o-mini","stream":true,"stream_options":{"include_usage":true},"messages":[{"role":"user","content":"When does the breaker open?"}]}"#[..]
    } else {
        &br#"{"model":"gpt-4o-mini","messages":[{"role":"user","content":"When does the breaker open?"}]}"#[..]
    };
    let mut req = Request::post("/v1/chat/completions")
        .header("content-type", "application/json")
        .header("authorization", "Bearer sk-bench")
        .header("x-request-id", "01JQ3Z9X8M2V4K6T7N5R0B1C2D")
        .header("x-session-id", "chat-42")
        .body(Full::new(Bytes::from_static(body)))
        .unwrap();
    req.extensions_mut().insert(KeyName::new("team-a"));
    req.extensions_mut().insert(RequestMeta {
        model: Some(Arc::from("gpt-4o-mini")),
        stream,
    });
    req
}

fn bench(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("audit.jsonl");
    let counting = AuditLayer::from_config(&Config::default()).expect("valid config");
    let writing = AuditLayer::from_config(&Config {
        path: path.to_string_lossy().into_owned(),
        ..Config::default()
    })
    .expect("valid config, file opened");

    let mut group = c.benchmark_group("audit");
    for (name, answer, stream) in [
        ("json", json_answer(), false),
        ("sse", streamed_answer(), true),
    ] {
        let bare = upstream::<Full<Bytes>>(answer.clone());
        group.bench_function(format!("{name}_bare"), |b| {
            b.to_async(&rt).iter(|| {
                let svc = bare.clone();
                async move {
                    let resp = svc.oneshot(request(stream)).await.unwrap();
                    resp.into_body().collect().await.unwrap().to_bytes().len()
                }
            })
        });
        for (layer_name, layer) in [("usage_only", &counting), ("file", &writing)] {
            let svc = layer.layer(upstream::<AuditRequestBody<Full<Bytes>>>(answer.clone()));
            group.bench_function(format!("{name}_{layer_name}"), |b| {
                b.to_async(&rt).iter(|| {
                    let svc = svc.clone();
                    async move {
                        let resp = svc.oneshot(request(stream)).await.unwrap();
                        resp.into_body().collect().await.unwrap().to_bytes().len()
                    }
                })
            });
        }
    }
    group.finish();

    // Every request was counted with its tokens, and each line reached the file (a full queue
    // would have measured the cheaper path that drops lines).
    let handle = writing.handle();
    rt.block_on(handle.flush());
    assert_eq!(handle.dropped(), 0, "lines dropped: the writer fell behind");
    let usage = counting.usage().to_json();
    assert_eq!(usage["usage"][0]["key"], "team-a", "{usage}");
    assert!(
        usage["usage"][0]["input_tokens"].as_u64() > Some(0),
        "{usage}"
    );
    let mut first = String::new();
    BufReader::new(File::open(&path).expect("audit log"))
        .read_line(&mut first)
        .expect("a line");
    let first: serde_json::Value = serde_json::from_str(&first).expect("JSON line");
    assert_eq!(first["output_tokens"], 118, "{first}");
}

criterion_group!(benches, bench);
criterion_main!(benches);
