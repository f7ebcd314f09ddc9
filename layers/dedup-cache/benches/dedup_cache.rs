//! Dedup key cost for 1 KB and 100 KB chat bodies (stream-written canonical JSON against the
//! `serde_json::Value` round trip it replaces), and a cache hit through the layer.

use std::{convert::Infallible, hint::black_box, time::Duration};

use bytes::Bytes;
use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use http::{Request, Response};
use http_body_util::Full;
use portcullis_dedup_cache::{canonical_json, dedup_key, Config, DedupCacheLayer};
use tower::{service_fn, Layer, ServiceExt};

/// An OpenAI-style chat body of about `size` bytes, keys deliberately unsorted.
fn chat_body(size: usize) -> Vec<u8> {
    let mut messages = Vec::new();
    let mut total = 0;
    let mut i = 0;
    while total < size {
        let content = format!("message {i}: {}", "lorem ipsum dolor sit amet ".repeat(8));
        total += content.len() + 40;
        messages.push(serde_json::json!({ "role": if i % 2 == 0 { "user" } else { "assistant" }, "content": content }));
        i += 1;
    }
    let body = serde_json::json!({
        "model": "gpt-4o-mini",
        "temperature": 0.2,
        "messages": messages,
        "max_tokens": 512,
    });
    // Reverse the top-level order so the canonicalizer has real sorting to do.
    let text = serde_json::to_string_pretty(&body).unwrap();
    text.replacen("\"max_tokens\"", "\"zz_max_tokens\"", 1)
        .into_bytes()
}

fn via_value(body: &[u8]) -> Vec<u8> {
    let mut v: serde_json::Value = serde_json::from_slice(body).unwrap();
    v.sort_all_objects();
    serde_json::to_vec(&v).unwrap()
}

fn keys(c: &mut Criterion) {
    let (parts, ()) = Request::post("/v1/chat/completions")
        .header("authorization", "Bearer sk-bench")
        .body(())
        .unwrap()
        .into_parts();
    let mut group = c.benchmark_group("dedup_key");
    for (label, size) in [("1KB", 1024), ("100KB", 100 * 1024)] {
        let body = chat_body(size);
        assert_eq!(canonical_json(&body).unwrap(), via_value(&body));
        group.throughput(Throughput::Bytes(body.len() as u64));
        group.bench_with_input(BenchmarkId::new("key", label), &body, |b, body| {
            b.iter(|| dedup_key(black_box(&parts), black_box(body)))
        });
        group.bench_with_input(
            BenchmarkId::new("canonical_stream", label),
            &body,
            |b, body| b.iter(|| canonical_json(black_box(body))),
        );
        group.bench_with_input(
            BenchmarkId::new("canonical_via_value", label),
            &body,
            |b, body| b.iter(|| via_value(black_box(body))),
        );
    }
    group.finish();
}

fn cache_hit(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let layer = DedupCacheLayer::new(Config {
        cache_ttl: Duration::from_secs(3600),
        ..Config::default()
    });
    let svc = layer.layer(service_fn(|_req: Request<Full<Bytes>>| async {
        Ok::<_, Infallible>(Response::new(Full::new(Bytes::from(vec![b'x'; 2048]))))
    }));
    let body = Bytes::from(chat_body(1024));
    let req = || {
        Request::post("/v1/chat/completions")
            .header("authorization", "Bearer sk-bench")
            .body(Full::new(body.clone()))
            .unwrap()
    };
    rt.block_on(async {
        let r = svc.clone().oneshot(req()).await.unwrap();
        assert_eq!(r.headers()["x-portcullis-cache"], "miss");
        let r = svc.clone().oneshot(req()).await.unwrap();
        assert_eq!(r.headers()["x-portcullis-cache"], "hit");
    });
    c.bench_function("layer/cache_hit_1KB_request", |b| {
        b.to_async(&rt)
            .iter(|| async { svc.clone().oneshot(req()).await.unwrap() })
    });
}

criterion_group!(benches, keys, cache_hit);
criterion_main!(benches);
