//! Cost of one rate-limit check (memory backend), with one hot key and with 100k keys, and of
//! a request through the layer.
//!
//! Run with: `cargo bench -p portcullis-rate-limit -- --warm-up-time 1 --measurement-time 3`

use std::{convert::Infallible, hint::black_box};

use bytes::Bytes;
use criterion::{criterion_group, criterion_main, Criterion};
use http::{Request, Response};
use http_body_util::Full;
use portcullis_rate_limit::{KeyKind, Limiter, MemoryLimiter, Quota, RateKey, RateLimitLayer};
use tower::{Layer, Service, ServiceExt};

fn keys(n: usize) -> Vec<RateKey> {
    (0..n)
        .map(|i| RateKey::derive("api_key", &i.to_le_bytes()))
        .collect()
}

fn check(c: &mut Criterion) {
    // Checks run inside the runtime in the gateway (where the pruning task lives).
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let _guard = rt.enter();
    // A quota no bench run can exhaust, so every check takes the allow path (the common
    // one); and one so small that every check is refused.
    let roomy = Quota::new(u32::MAX, u32::MAX);
    let mut group = c.benchmark_group("memory_check");

    let limiter = MemoryLimiter::new(roomy);
    let key = RateKey::derive("api_key", b"hot");
    group.bench_function("1_key", |b| b.iter(|| black_box(limiter.check(&key, 1))));

    let limiter = MemoryLimiter::new(roomy);
    let many = keys(100_000);
    for k in &many {
        limiter.check(k, 1);
    }
    let mut i = 0;
    group.bench_function("100k_keys", |b| {
        b.iter(|| {
            i = (i + 1) % many.len();
            black_box(limiter.check(&many[i], 1))
        })
    });

    let limiter = MemoryLimiter::new(Quota::new(1, 1));
    limiter.check(&key, 1);
    group.bench_function("1_key_refused", |b| {
        b.iter(|| black_box(limiter.check(&key, 1)))
    });
    group.finish();

    group = c.benchmark_group("key");
    let req = Request::post("/v1/chat/completions")
        .header(
            "authorization",
            "Bearer sk-0123456789abcdef0123456789abcdef",
        )
        .body(())
        .unwrap();
    group.bench_function("from_api_key_header", |b| {
        b.iter(|| black_box(RateKey::from_request(KeyKind::ApiKey, &req)))
    });
    group.finish();
}

fn layer(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let inner = tower::service_fn(|_req: Request<Full<Bytes>>| async {
        Ok::<_, Infallible>(Response::new(Full::new(Bytes::new())))
    });
    let limited = RateLimitLayer::new(
        Limiter::Memory(MemoryLimiter::new(Quota::new(u32::MAX, u32::MAX))),
        KeyKind::ApiKey,
    )
    .layer(inner);
    let request = || {
        Request::post("/v1/chat/completions")
            .header("authorization", "Bearer sk-bench")
            .body(Full::new(Bytes::new()))
            .unwrap()
    };
    let mut group = c.benchmark_group("layer");
    group.bench_function("bare_service", |b| {
        b.to_async(&rt).iter(|| {
            let mut svc = inner;
            async move { black_box(svc.ready().await.unwrap().call(request()).await) }
        })
    });
    group.bench_function("rate_limited_service", |b| {
        b.to_async(&rt).iter(|| {
            let mut svc = limited.clone();
            async move { black_box(svc.ready().await.unwrap().call(request()).await) }
        })
    });
    group.finish();
}

criterion_group!(benches, check, layer);
criterion_main!(benches);
