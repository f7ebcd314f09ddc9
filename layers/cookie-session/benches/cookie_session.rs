//! The cookie layer on the success path beside the bare inner service, and the jar lookup.

use std::convert::Infallible;

use criterion::{criterion_group, criterion_main, Criterion};
use http::header::SET_COOKIE;
use http::{HeaderMap, Request, Response};
use portcullis_cookie_session::{CookieJar, CookieSessionLayer};
use tower::{service_fn, Layer, Service};
use url::Url;

const URI: &str = "https://api.example.com/v1/chat/completions";

fn jar_with_three() -> CookieJar {
    let jar = CookieJar::new();
    let mut headers = HeaderMap::new();
    for v in [
        "cf_clearance=0123456789abcdef0123456789abcdef; Path=/; Domain=.example.com; HttpOnly; Secure",
        "__cf_bm=fedcba9876543210fedcba9876543210; Path=/; Domain=.example.com; HttpOnly; Secure",
        "session=abc; Path=/v1",
    ] {
        headers.append(SET_COOKIE, v.parse().expect("valid header"));
    }
    jar.store_response_cookies(&Url::parse(URI).expect("url"), &headers);
    assert_eq!(jar.len(), 3);
    jar
}

async fn ok(_req: Request<()>) -> Result<Response<()>, Infallible> {
    Ok(Response::new(()))
}

fn bench(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .build()
        .expect("runtime");
    let url = Url::parse(URI).expect("url");
    let jar = jar_with_three();

    c.bench_function("jar/cookie_header_for_3_cookies", |b| {
        b.iter(|| jar.cookie_header_for(std::hint::black_box(&url)))
    });

    let mut group = c.benchmark_group("cookie_session");
    group.bench_function("bare", |b| {
        let mut svc = service_fn(ok);
        b.to_async(&rt).iter(|| {
            let fut = svc.call(Request::post(URI).body(()).expect("request"));
            async move { fut.await.expect("ok") }
        })
    });
    group.bench_function("layer_3_cookies", |b| {
        let mut svc = CookieSessionLayer::new(jar.clone()).layer(service_fn(ok));
        b.to_async(&rt).iter(|| {
            let fut = svc.call(Request::post(URI).body(()).expect("request"));
            async move { fut.await.expect("ok") }
        })
    });
    group.bench_function("layer_empty_jar", |b| {
        let mut svc = CookieSessionLayer::new(CookieJar::new()).layer(service_fn(ok));
        b.to_async(&rt).iter(|| {
            let fut = svc.call(Request::post(URI).body(()).expect("request"));
            async move { fut.await.expect("ok") }
        })
    });
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
