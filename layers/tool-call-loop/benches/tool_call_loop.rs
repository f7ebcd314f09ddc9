//! The tool-call-loop layer on its success path (mode `block`, one `x-session-id` session)
//! beside the bare inner service: a chat-completions answer without tool calls, one with a
//! tool call, and the same call streamed as ~50 events of argument deltas.
//!
//! Run with: `cargo bench -p portcullis-tool-call-loop`

use std::{
    collections::VecDeque,
    convert::Infallible,
    pin::Pin,
    sync::{
        atomic::{AtomicUsize, Ordering},
        Arc,
    },
    task::{Context, Poll},
};

use bytes::Bytes;
use criterion::{criterion_group, criterion_main, Criterion};
use http::{Request, Response};
use http_body::{Body, Frame};
use http_body_util::{BodyExt, Full};
use portcullis_tool_call_loop::{Config, Mode, ToolCallLoopLayer, X_PORTCULLIS_TOOL_CALL_LOOP};
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
    frames: Vec<Bytes>,
}

/// The arguments of the call an agent makes; `pattern` tells two calls apart.
fn arguments(pattern: &str) -> String {
    json!({
        "command": format!("grep -rn \"fn {pattern}\" src/upstream --include=*.rs"),
        "cwd": "/home/dev/portcullis",
        "max_output_bytes": 65536,
        "timeout_ms": 30000,
    })
    .to_string()
}

fn usage() -> serde_json::Value {
    json!({"prompt_tokens": 1843, "completion_tokens": 52, "total_tokens": 1895,
        "prompt_tokens_details": {"cached_tokens": 1536}})
}

fn json_answer(message: serde_json::Value, finish_reason: &str) -> Answer {
    let body = json!({
        "id": "chatcmpl-B9MHDbslfkBeAs8l4bebGdFOJ6PeG",
        "object": "chat.completion",
        "created": 1741570283,
        "model": "gpt-4o-2024-08-06",
        "choices": [{"index": 0, "message": message, "logprobs": null, "finish_reason": finish_reason}],
        "usage": usage(),
        "service_tier": "default",
        "system_fingerprint": "fp_eb9dce56a8",
    });
    Answer {
        content_type: "application/json",
        frames: vec![Bytes::from(body.to_string())],
    }
}

/// An answer in prose (~1 KB), the common case: nothing to record but the end of a streak.
fn prose() -> Answer {
    let text = "The router resolves a model in three steps: an exact name, then the longest \
                prefix, then `*`. Each `[[models]]` entry lists its upstreams in order; the \
                first healthy one is tried, and on a retryable failure the next one.\n\n"
        .repeat(4);
    json_answer(
        json!({"role": "assistant", "content": text, "refusal": null}),
        "stop",
    )
}

/// An answer calling `run_shell` with [`arguments`]`(pattern)`.
fn tool_call(pattern: &str) -> Answer {
    json_answer(
        json!({"role": "assistant", "content": null, "refusal": null, "tool_calls": [{
            "id": "call_Vq7GSnHcLnqhL0tC1W3A0fTq", "type": "function",
            "function": {"name": "run_shell", "arguments": arguments(pattern)},
        }]}),
        "tool_calls",
    )
}

/// The same call streamed: a first chunk naming the tool, the arguments in 3-byte deltas,
/// the finish chunk, a usage chunk and `[DONE]` (~50 events).
fn streamed_tool_call(pattern: &str) -> Answer {
    let chunk = |choices: serde_json::Value, usage: serde_json::Value| {
        let event = json!({
            "id": "chatcmpl-B9MHDbslfkBeAs8l4bebGdFOJ6PeG",
            "object": "chat.completion.chunk",
            "created": 1741570283,
            "model": "gpt-4o-2024-08-06",
            "system_fingerprint": "fp_eb9dce56a8",
            "choices": choices,
            "usage": usage,
        });
        Bytes::from(format!("data: {event}\n\n"))
    };
    let mut frames = vec![chunk(
        json!([{"index": 0, "delta": {"role": "assistant", "content": null, "tool_calls": [{
            "index": 0, "id": "call_Vq7GSnHcLnqhL0tC1W3A0fTq", "type": "function",
            "function": {"name": "run_shell", "arguments": ""}}]},
            "logprobs": null, "finish_reason": null}]),
        json!(null),
    )];
    let args = arguments(pattern);
    for piece in args.as_bytes().chunks(3) {
        let piece = std::str::from_utf8(piece).expect("ASCII arguments");
        frames.push(chunk(
            json!([{"index": 0, "delta": {"tool_calls": [{"index": 0, "function": {"arguments": piece}}]},
                "logprobs": null, "finish_reason": null}]),
            json!(null),
        ));
    }
    frames.push(chunk(
        json!([{"index": 0, "delta": {}, "logprobs": null, "finish_reason": "tool_calls"}]),
        json!(null),
    ));
    frames.push(chunk(json!([]), usage()));
    frames.push(Bytes::from_static(b"data: [DONE]\n\n"));
    Answer {
        content_type: "text/event-stream",
        frames,
    }
}

/// A ready upstream answering `answers` in turn. An agent rarely makes the same call twice in
/// a row: alternating two calls keeps every answer on the success path (a streak of one)
/// under the default `max_repeats`.
fn upstream(
    answers: Vec<Answer>,
) -> impl Service<
    Request<Full<Bytes>>,
    Response = Response<Frames>,
    Error = Infallible,
    Future = std::future::Ready<Result<Response<Frames>, Infallible>>,
> + Clone {
    let answers: Arc<[Answer]> = answers.into();
    let turn = Arc::new(AtomicUsize::new(0));
    service_fn(move |_req: Request<Full<Bytes>>| {
        let a = &answers[turn.fetch_add(1, Ordering::Relaxed) % answers.len()];
        std::future::ready(Ok(Response::builder()
            .header("content-type", a.content_type)
            .body(Frames(a.frames.iter().cloned().collect()))
            .unwrap()))
    })
}

fn request(stream: bool) -> Request<Full<Bytes>> {
    let body = if stream {
        &br#"{"model":"gpt-4o","stream":true,"stream_options":{"include_usage":true},"messages":[{"role":"user","content":"Where is fn resolve?"}]}"#[..]
    } else {
        &br#"{"model":"gpt-4o","messages":[{"role":"user","content":"Where is fn resolve?"}]}"#[..]
    };
    Request::post("/v1/chat/completions")
        .header("content-type", "application/json")
        .header("authorization", "Bearer sk-bench")
        .header("x-session-id", "agent-run-1")
        .body(Full::new(Bytes::from_static(body)))
        .unwrap()
}

fn bench(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let layer = ToolCallLoopLayer::from_config(&Config {
        mode: Mode::Block,
        ..Config::default()
    })
    .expect("valid config");
    let cases = [
        ("json_no_tool_call", vec![prose()], false),
        (
            "json_tool_call",
            vec![tool_call("resolve"), tool_call("forward")],
            false,
        ),
        (
            "sse_tool_call",
            vec![streamed_tool_call("resolve"), streamed_tool_call("forward")],
            true,
        ),
    ];

    let mut group = c.benchmark_group("tool_call_loop");
    for (name, answers, stream) in cases {
        let bare = upstream(answers.clone());
        let watched = layer.layer(upstream(answers.clone()));
        // The layer must stay on its success path: every answer passes whole, unmarked.
        rt.block_on(async {
            for i in 0..8 {
                let resp = watched.clone().oneshot(request(stream)).await.unwrap();
                assert!(resp.headers().get(X_PORTCULLIS_TOOL_CALL_LOOP).is_none());
                let got = resp.into_body().collect().await.unwrap().to_bytes();
                assert_eq!(got, answers[i % answers.len()].frames.concat(), "{name}");
            }
        });

        group.bench_function(format!("{name}_bare"), |b| {
            b.to_async(&rt).iter(|| {
                let svc = bare.clone();
                async move {
                    let resp = svc.oneshot(request(stream)).await.unwrap();
                    resp.into_body().collect().await.unwrap().to_bytes().len()
                }
            })
        });
        group.bench_function(format!("{name}_layer"), |b| {
            b.to_async(&rt).iter(|| {
                let svc = watched.clone();
                async move {
                    let resp = svc.oneshot(request(stream)).await.unwrap();
                    resp.into_body().collect().await.unwrap().to_bytes().len()
                }
            })
        });
    }
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
