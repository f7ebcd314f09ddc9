//! The retry layer on the success path, beside the bare inner service.

use std::convert::Infallible;

use bytes::Bytes;
use criterion::{criterion_group, criterion_main, Criterion};
use http::{Request, Response};
use http_body_util::Full;
use portcullis_retry::RetryLayer;
use tower::{service_fn, Layer, ServiceExt};

fn request() -> Request<Full<Bytes>> {
    Request::post("http://upstream/v1/chat/completions")
        .header("content-type", "application/json")
        .header("authorization", "Bearer sk-bench")
        .body(Full::new(Bytes::from_static(
            br#"{"model":"gpt-4o-mini","messages":[{"role":"user","content":"hi"}]}"#,
        )))
        .unwrap()
}

fn bench(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let inner = service_fn(|_req: Request<Full<Bytes>>| async {
        Ok::<_, Infallible>(Response::new(Full::new(Bytes::from_static(b"{}"))))
    });
    let retry = RetryLayer::default().layer(inner);

    let mut group = c.benchmark_group("success_path");
    group.bench_function("bare", |b| {
        b.to_async(&rt)
            .iter(|| async { inner.oneshot(request()).await.unwrap() })
    });
    group.bench_function("retry", |b| {
        b.to_async(&rt)
            .iter(|| async { retry.clone().oneshot(request()).await.unwrap() })
    });
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
