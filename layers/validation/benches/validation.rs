//! Validation throughput (MB/s) at each level for a 1 KB and a 100 KB chat request and for the
//! agent requests of the corpora (Anthropic messages, OpenAI responses), and the parse that
//! dominates it: the borrowed tree the validator uses against `serde_json::Value`.

use std::hint::black_box;

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use portcullis_validation::{validate, Level, Route};
use serde_json::{json, Value};

/// A chat request of about `size` bytes: a system prompt, then user and assistant turns with
/// multi-line text (so strings carry escapes, as real prompts do) and a tool call.
fn chat_request(size: usize) -> Vec<u8> {
    let mut messages =
        vec![json!({"role": "system", "content": "You are a helpful assistant.\nAnswer briefly."})];
    let mut i = 0;
    loop {
        let body = json!({
            "model": "gpt-4o-mini",
            "messages": messages,
            "temperature": 0.7,
            "max_completion_tokens": 512,
            "stream": true,
            "stream_options": {"include_usage": true},
        });
        let bytes = serde_json::to_vec(&body).unwrap();
        if bytes.len() >= size {
            return bytes;
        }
        let turn = match i % 3 {
            0 => {
                json!({"role": "user", "content": format!("Question {i}: what does line {i} of the log mean?\n> error: connection reset by peer (os error 104)\nThanks — “quoted”.")})
            }
            1 => {
                json!({"role": "assistant", "content": null, "tool_calls": [{"id": format!("call_{i}"), "type": "function", "function": {"name": "search_logs", "arguments": "{\"q\":\"reset\"}"}}]})
            }
            _ => {
                json!({"role": "tool", "tool_call_id": format!("call_{}", i - 1), "content": [{"type": "text", "text": "The peer closed the TCP connection.\nRetry with backoff."}]})
            }
        };
        messages.push(turn);
        i += 1;
    }
}

fn bench(c: &mut Criterion) {
    let bodies = [
        ("1KB", chat_request(1024)),
        ("100KB", chat_request(100 * 1024)),
    ];

    let mut group = c.benchmark_group("validate_chat");
    for (name, body) in &bodies {
        group.throughput(Throughput::Bytes(body.len() as u64));
        for level in Level::ALL {
            assert!(validate(Route::ChatCompletions, level, body).is_ok());
            group.bench_with_input(BenchmarkId::new(level.as_str(), name), body, |b, body| {
                b.iter(|| validate(Route::ChatCompletions, level, black_box(body)))
            });
        }
        // What the gateway does with dedup on: the dedup key's canonical form written from
        // the tree too (compare `dedup_key/canonical_stream`, the dedup layer's own walk).
        // Not for a stream (the dedup layer passes those by), so this body does not ask for
        // one; `moderate_no_stream` is the same check without the form.
        let text = String::from_utf8_lossy(body).replace(r#""stream":true"#, r#""stream":false"#);
        let body = &text.into_bytes();
        assert!(
            portcullis_validation::__bench::validate_with_canonical(
                Route::ChatCompletions,
                Level::Moderate,
                body
            ) > 0
        );
        group.bench_with_input(
            BenchmarkId::new("moderate_no_stream", name),
            body,
            |b, body| b.iter(|| validate(Route::ChatCompletions, Level::Moderate, black_box(body))),
        );
        // The walk the form spares the dedup layer, on the same body.
        group.bench_with_input(BenchmarkId::new("dedup_walk", name), body, |b, body| {
            b.iter(|| portcullis_dedup_cache::canonical_json(black_box(body)))
        });
        group.bench_with_input(
            BenchmarkId::new("moderate_with_canonical", name),
            body,
            |b, body| {
                b.iter(|| {
                    portcullis_validation::__bench::validate_with_canonical(
                        Route::ChatCompletions,
                        Level::Moderate,
                        black_box(body),
                    )
                })
            },
        );
    }
    group.finish();

    let agents: [(&str, Route, &[u8]); 2] = [
        (
            "messages_agent",
            Route::Messages,
            include_bytes!("../../../tests/corpora/messages/accept/01_claude_code_agent_beta.json"),
        ),
        (
            "responses_agent",
            Route::Responses,
            include_bytes!(
                "../../../tests/corpora/responses/accept/11_codex_stateless_reasoning.json"
            ),
        ),
    ];
    let mut group = c.benchmark_group("validate_agent");
    for (name, route, body) in agents {
        group.throughput(Throughput::Bytes(body.len() as u64));
        for level in [Level::Lenient, Level::Moderate] {
            assert!(validate(route, level, body).is_ok());
            group.bench_with_input(BenchmarkId::new(level.as_str(), name), body, |b, body| {
                b.iter(|| validate(route, level, black_box(body)))
            });
        }
    }
    group.finish();

    let mut group = c.benchmark_group("parse");
    for (name, body) in &bodies {
        group.throughput(Throughput::Bytes(body.len() as u64));
        group.bench_with_input(BenchmarkId::new("borrowed_tree", name), body, |b, body| {
            b.iter(|| portcullis_validation::__bench::parse_borrowed(black_box(body)))
        });
        group.bench_with_input(
            BenchmarkId::new("serde_json_value", name),
            body,
            |b, body| {
                b.iter(|| serde_json::from_slice::<Value>(black_box(body)).map(|v| v.is_object()))
            },
        );
    }
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
