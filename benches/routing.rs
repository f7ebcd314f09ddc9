//! The per-request routing path: read `model` from the body (the core peek parser), pick the
//! `[[models]]` entry (the core pattern set), rewrite the model for the upstream.

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use portcullis::upstream::router::{rewrite_model, ModelRoute};
use portcullis_core::pattern::PatternSet;

fn model(name: &str, upstream: &str) -> ModelRoute {
    ModelRoute {
        name: name.into(),
        upstream: upstream.into(),
        model: None,
        fallbacks: vec![],
        weight: 1,
        params: None,
        headers: std::sync::Arc::new([]),
    }
}

fn body(bytes: usize) -> Vec<u8> {
    let content = "x".repeat(bytes.saturating_sub(120));
    serde_json::to_vec(&serde_json::json!({
        "model": "claude-sonnet-4",
        "messages": [{"role": "user", "content": content}],
        "max_tokens": 256
    }))
    .unwrap()
}

fn bench(c: &mut Criterion) {
    let mut models: Vec<ModelRoute> = (0..50)
        .map(|i| model(&format!("gpt-4o-variant-{i}"), "openai"))
        .collect();
    models.push(model("claude-*", "anthropic"));
    models.push(model("claude-sonnet-*", "anthropic-fast"));
    models.push(model("*", "openai"));
    let models: PatternSet<ModelRoute> = models
        .into_iter()
        .map(|m| (portcullis_core::pattern::ModelPattern::parse(&m.name), m))
        .collect();
    let resolve = |models: &PatternSet<ModelRoute>, name: &str| models.lookup(name).cloned();

    let mut g = c.benchmark_group("resolve");
    g.bench_function("exact (53 entries)", |b| {
        b.iter(|| resolve(&models, std::hint::black_box("gpt-4o-variant-42")))
    });
    g.bench_function("longest prefix", |b| {
        b.iter(|| resolve(&models, std::hint::black_box("claude-sonnet-4")))
    });
    g.bench_function("star", |b| {
        b.iter(|| resolve(&models, std::hint::black_box("llama-3.1-70b")))
    });
    g.finish();

    let mut g = c.benchmark_group("route_request");
    for size in [1024usize, 100 * 1024] {
        let b_ = body(size);
        g.throughput(Throughput::Bytes(b_.len() as u64));
        g.bench_with_input(BenchmarkId::new("parse+resolve", size), &b_, |b, body| {
            b.iter(|| {
                let meta = portcullis_core::meta::parse(body).unwrap();
                let m = meta.model.unwrap();
                resolve(&models, &m).map(|e| e.upstream.len())
            })
        });
        g.bench_with_input(
            BenchmarkId::new("parse+resolve+rewrite", size),
            &b_,
            |b, body| {
                b.iter(|| {
                    let meta = portcullis_core::meta::parse(body).unwrap();
                    let _ = resolve(&models, &meta.model.unwrap());
                    rewrite_model(body, "claude-sonnet-4-20250514").unwrap()
                })
            },
        );
    }
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
