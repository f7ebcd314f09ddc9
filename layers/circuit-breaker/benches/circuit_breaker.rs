//! The breaker on the success path beside the bare inner service.

use std::convert::Infallible;

use criterion::{criterion_group, criterion_main, Criterion};
use http::{Request, Response};
use portcullis_circuit_breaker::{CircuitBreakerLayer, Config};
use tower::{service_fn, Layer, Service, ServiceExt};

async fn ok(_req: Request<()>) -> Result<Response<()>, Infallible> {
    Ok(Response::new(()))
}

fn bench(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .build()
        .expect("runtime");
    let mut group = c.benchmark_group("circuit_breaker");

    group.bench_function("bare", |b| {
        let mut svc = service_fn(ok);
        b.to_async(&rt).iter(|| {
            let fut = svc.call(Request::new(()));
            async move { fut.await.expect("ok") }
        })
    });

    group.bench_function("closed", |b| {
        let mut svc = CircuitBreakerLayer::new("bench", Config::default()).layer(service_fn(ok));
        b.to_async(&rt).iter(|| {
            let fut = svc.call(Request::new(()));
            async move { fut.await.expect("ok") }
        })
    });

    group.bench_function("closed_via_ready", |b| {
        let svc = CircuitBreakerLayer::new("bench", Config::default()).layer(service_fn(ok));
        b.to_async(&rt)
            .iter(|| svc.clone().oneshot(Request::new(())))
    });

    group.bench_function("open_fail_fast", |b| {
        let layer = CircuitBreakerLayer::new(
            "bench",
            Config {
                failure_threshold: 1,
                minimum_requests: 1,
                ..Config::default()
            },
        );
        let mut svc = layer.layer(service_fn(|_req: Request<()>| async {
            let mut res = Response::new(());
            *res.status_mut() = http::StatusCode::BAD_GATEWAY;
            Ok::<_, Infallible>(res)
        }));
        rt.block_on(svc.call(Request::new(()))).expect("502 passes");
        b.to_async(&rt).iter(|| {
            let fut = svc.call(Request::new(()));
            async move { fut.await.expect_err("open") }
        })
    });
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
