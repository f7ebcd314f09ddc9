//! Helpers shared by the retry layer's test binaries: a retry stack around a `tower_test`
//! mock and small request/response builders.
#![allow(dead_code, unreachable_pub)]

use std::time::Duration;

use bytes::Bytes;
use http::{Request, Response, StatusCode};
use http_body::Body;
use http_body_util::{BodyExt, Full};
use portcullis_retry::{Config, Retry, RetryLayer};
use tower::Layer;
use tower_test::mock;

pub type Req = Request<Full<Bytes>>;
pub type Resp = Response<Full<Bytes>>;
pub type Handle = mock::Handle<Req, Resp>;

pub fn layer(config: Config) -> RetryLayer {
    RetryLayer::from_config(&config).expect("valid config")
}

pub fn service(config: Config) -> (Retry<mock::Mock<Req, Resp>>, Handle) {
    let (mock, handle) = mock::pair::<Req, Resp>();
    (layer(config).layer(mock), handle)
}

pub fn request(body: &'static str) -> Req {
    Request::post("http://upstream/v1/chat/completions")
        .header("content-type", "application/json")
        .body(Full::new(Bytes::from_static(body.as_bytes())))
        .unwrap()
}

pub fn response(status: u16, body: &'static str) -> Resp {
    let mut r = Response::new(Full::new(Bytes::from_static(body.as_bytes())));
    *r.status_mut() = StatusCode::from_u16(status).unwrap();
    r
}

pub fn with_header(mut r: Resp, name: &'static str, value: &str) -> Resp {
    r.headers_mut().insert(name, value.parse().unwrap());
    r
}

pub fn attempts(r: &Resp) -> &str {
    r.headers()["x-portcullis-attempts"].to_str().unwrap()
}

pub async fn body_string<B: Body<Data = Bytes>>(b: B) -> String
where
    B::Error: std::fmt::Debug,
{
    String::from_utf8(b.collect().await.unwrap().to_bytes().to_vec()).unwrap()
}

/// The result of a spawned call; fails (rather than hangs) if it is still waiting on an
/// upstream nobody answers, e.g. because it retried when it should not have.
pub async fn done<T>(call: tokio::task::JoinHandle<T>) -> T {
    // Paused time jumps straight here once every task is idle.
    tokio::time::timeout(Duration::from_secs(24 * 3600), call)
        .await
        .expect("call still in flight: an unexpected retry?")
        .unwrap()
}

/// The next request the mock gets, or `None` once every mock is dropped; fails (rather than
/// hangs) if neither happens, e.g. because a retry never readied or called the service.
pub async fn next_request<T, U>(
    handle: &mut mock::Handle<T, U>,
) -> Option<(T, mock::SendResponse<U>)> {
    // Paused time jumps straight here once every task is idle.
    tokio::time::timeout(Duration::from_secs(24 * 3600), handle.next_request())
        .await
        .expect("no request reached the upstream, and the upstream was not dropped: a retry that never readied or called it?")
}

/// Answer the next request with `resp`, returning the request's body.
pub async fn answer(handle: &mut Handle, resp: Resp) -> (http::request::Parts, String) {
    let (req, send) = next_request(handle).await.expect("a request");
    let (parts, body) = req.into_parts();
    send.send_response(resp);
    (parts, body_string(body).await)
}
