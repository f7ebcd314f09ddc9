//! The validation layer against a mock inner service: what reaches it, what does not.

use std::{
    collections::VecDeque,
    pin::Pin,
    sync::{
        atomic::{AtomicUsize, Ordering},
        Arc,
    },
    task::{Context, Poll},
};

use bytes::Bytes;
use http::{Method, Request, Response};
use http_body::{Body, Frame, SizeHint};
use http_body_util::BodyExt;
use portcullis_core::{
    body::DEFAULT_MAX_BODY_BYTES,
    error::{find_in_chain, Refused},
    CanonicalBody, RequestMeta,
};
use portcullis_validation::{
    BodyReadError, BodyTooLarge, Config, InvalidRequest, Level, Validation, ValidationLayer,
};
use tokio_test::{assert_pending, assert_ready_ok};
use tower::{BoxError, Layer, Service, ServiceExt};
use tower_test::mock;

/// A request body that counts how often it is polled, can arrive in chunks without a size
/// hint, and can fail.
#[derive(Debug)]
struct TestBody {
    chunks: VecDeque<Bytes>,
    exact_size: bool,
    fail: bool,
    polls: Arc<AtomicUsize>,
}

impl TestBody {
    fn chunked(chunks: impl IntoIterator<Item = &'static [u8]>) -> Self {
        Self {
            chunks: chunks.into_iter().map(Bytes::from_static).collect(),
            exact_size: false,
            fail: false,
            polls: Arc::default(),
        }
    }

    fn failing() -> Self {
        Self {
            fail: true,
            ..Self::chunked([&b"{\"model\":"[..]])
        }
    }

    async fn into_bytes(self) -> Bytes {
        self.collect().await.unwrap().to_bytes()
    }
}

impl From<Bytes> for TestBody {
    fn from(b: Bytes) -> Self {
        Self {
            chunks: VecDeque::from([b]),
            exact_size: true,
            fail: false,
            polls: Arc::default(),
        }
    }
}

impl From<&'static str> for TestBody {
    fn from(s: &'static str) -> Self {
        Bytes::from_static(s.as_bytes()).into()
    }
}

impl Body for TestBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        self: Pin<&mut Self>,
        _cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let this = self.get_mut();
        this.polls.fetch_add(1, Ordering::SeqCst);
        match this.chunks.pop_front() {
            Some(c) => Poll::Ready(Some(Ok(Frame::data(c)))),
            None if this.fail => Poll::Ready(Some(Err("connection reset by peer".into()))),
            None => Poll::Ready(None),
        }
    }

    fn size_hint(&self) -> SizeHint {
        let len: usize = self.chunks.iter().map(Bytes::len).sum();
        if self.exact_size {
            SizeHint::with_exact(len as u64)
        } else {
            SizeHint::default()
        }
    }
}

type Mock = mock::Mock<Request<TestBody>, Response<&'static str>>;
type Handle = mock::Handle<Request<TestBody>, Response<&'static str>>;

fn service(config: Config) -> (Validation<Mock>, Handle) {
    capped(config, DEFAULT_MAX_BODY_BYTES)
}

fn capped(config: Config, max_body_bytes: usize) -> (Validation<Mock>, Handle) {
    let (inner, handle) = mock::pair();
    let layer = ValidationLayer::new(config).with_max_body_bytes(max_body_bytes);
    (layer.layer(inner), handle)
}

fn post(path: &str, body: impl Into<TestBody>) -> Request<TestBody> {
    Request::post(path)
        .header("x-trace", "t-1")
        .body(body.into())
        .unwrap()
}

const CHAT: &str =
    r#"{"model":"gpt-4o","stream":true,"messages":[{"role":"user","content":"hi"}]}"#;

/// Call `svc` with `req`, expecting an error without the inner service seeing a request.
async fn rejected(
    mut svc: Validation<Mock>,
    mut handle: Handle,
    req: Request<TestBody>,
) -> BoxError {
    let err = svc.ready().await.unwrap().call(req).await.unwrap_err();
    drop(svc);
    assert!(
        handle.next_request().await.is_none(),
        "the inner service was called"
    );
    err
}

#[tokio::test]
async fn invalid_bodies_never_reach_the_inner_service() {
    let (svc, handle) = service(Config::default());
    let body = r#"{"model":"gpt-4o","messages":[{"role":"user","content":"a"},{"role":"user","content":5}]}"#;
    let err = rejected(svc, handle, post("/v1/chat/completions", body)).await;
    let invalid = find_in_chain::<InvalidRequest>(&*err).expect("an InvalidRequest");
    assert_eq!(invalid.field, "messages[1].content");
    assert!(invalid.message.ends_with("got a number"), "{invalid}");

    // The new routes are checked too.
    for (path, body, field) in [
        ("/v1/responses", r#"{"model":"gpt-5","input":7}"#, "input"),
        (
            "/v1/messages/count_tokens",
            r#"{"model":"claude-x","messages":{}}"#,
            "messages",
        ),
    ] {
        let (svc, handle) = service(Config::default());
        let err = rejected(svc, handle, post(path, body)).await;
        assert_eq!(find_in_chain::<InvalidRequest>(&*err).unwrap().field, field);
    }

    let (svc, handle) = service(Config::default());
    let err = rejected(svc, handle, post("/v1/embeddings", "not json")).await;
    let invalid = find_in_chain::<InvalidRequest>(&*err).unwrap();
    assert_eq!(invalid.field, "");
    assert!(
        invalid
            .message
            .starts_with("request body is not valid JSON: expected"),
        "{invalid}"
    );
}

#[tokio::test]
async fn valid_bodies_reach_the_inner_service_unchanged_with_request_meta() {
    let (mut svc, mut handle) = service(Config::default());
    // Chunks, so the layer has to reassemble them.
    let (a, b) = CHAT.as_bytes().split_at(20);
    let req = post("/v1/chat/completions", TestBody::chunked([a, b]));
    let call = tokio::spawn(svc.ready().await.unwrap().call(req));

    let (req, send) = handle.next_request().await.unwrap();
    assert_eq!(req.method(), Method::POST);
    assert_eq!(req.uri().path(), "/v1/chat/completions");
    assert_eq!(req.headers()["x-trace"], "t-1");
    let meta = req.extensions().get::<RequestMeta>().cloned().unwrap();
    assert_eq!(meta.model.as_deref(), Some("gpt-4o"));
    assert!(meta.stream);
    assert_eq!(req.into_body().into_bytes().await, CHAT.as_bytes());
    send.send_response(Response::new("ok"));
    assert_eq!(call.await.unwrap().unwrap().into_body(), "ok");
}

/// What the inner service sees of a request through a layer with `with_canonical_body`:
/// the canonical form left on it, if any, made from the very body it gets.
async fn canonical_seen(level: Level, on: bool, body: &'static str) -> Option<String> {
    let (inner, mut handle) = mock::pair();
    let mut svc = ValidationLayer::new(Config { level })
        .with_canonical_body(on)
        .layer(inner);
    let call = tokio::spawn(
        svc.ready()
            .await
            .unwrap()
            .call(post("/v1/chat/completions", body)),
    );
    let (req, send): (Request<TestBody>, _) = handle.next_request().await.unwrap();
    let canonical = req.extensions().get::<CanonicalBody>().cloned();
    let body = req.into_body().into_bytes().await;
    send.send_response(Response::new("ok"));
    call.await.unwrap().unwrap();
    canonical.map(|c| {
        let of_body = c.of(&body).expect("made from the body passed on");
        String::from_utf8(of_body.to_vec()).unwrap()
    })
}

#[tokio::test]
async fn the_canonical_form_is_left_for_the_dedup_key_when_asked() {
    let body = r#"{ "model": "m", "messages": [{"role": "user", "content": "a\/b \u00e9"}] }"#;
    let dedup = portcullis_dedup_cache::canonical_json(body.as_bytes()).unwrap();
    assert_eq!(
        canonical_seen(Level::Moderate, true, body).await.as_deref(),
        Some(std::str::from_utf8(&dedup).unwrap())
    );
    assert_eq!(
        canonical_seen(Level::Moderate, true, body).await.as_deref(),
        Some(r#"{"messages":[{"content":"a/b é","role":"user"}],"model":"m"}"#)
    );
    assert!(canonical_seen(Level::Strict, true, body).await.is_some());
    // Not asked; lenient (no tree to write it from); a stream (the dedup cache passes it by).
    assert_eq!(canonical_seen(Level::Moderate, false, body).await, None);
    assert_eq!(canonical_seen(Level::Lenient, true, body).await, None);
    assert_eq!(canonical_seen(Level::Moderate, true, CHAT).await, None);
}

#[tokio::test]
async fn the_level_comes_from_the_config() {
    let body = r#"{"model":"m","messages":[{"role":"user","content":"x"}],"foo":1}"#;
    let (svc, handle) = service(Config {
        level: Level::Strict,
    });
    let err = rejected(svc, handle, post("/v1/chat/completions", body)).await;
    assert_eq!(err.to_string(), r#"foo: unknown field "foo""#);

    // Lenient lets through what moderate would reject.
    let (mut svc, mut handle) = service(Config {
        level: Level::Lenient,
    });
    let call = tokio::spawn(svc.ready().await.unwrap().call(post(
        "/v1/messages",
        r#"{"model":"claude-x","messages":[]}"#,
    )));
    let (_, send) = handle.next_request().await.unwrap();
    send.send_response(Response::new("ok"));
    call.await.unwrap().unwrap();
}

#[tokio::test]
async fn too_large_by_content_length_is_rejected_before_reading() {
    let (svc, handle) = capped(Config::default(), 16);
    let body = TestBody::chunked([CHAT.as_bytes()]);
    let polls = body.polls.clone();
    let mut req = post("/v1/chat/completions", body);
    req.headers_mut()
        .insert(http::header::CONTENT_LENGTH, CHAT.len().into());
    let err = rejected(svc, handle, req).await;
    assert_eq!(
        find_in_chain::<BodyTooLarge>(&*err),
        Some(&BodyTooLarge { limit: 16 })
    );
    assert_eq!(polls.load(Ordering::SeqCst), 0, "the body was read");
}

#[tokio::test]
async fn too_large_without_content_length_is_rejected_while_reading() {
    let (svc, handle) = capped(Config::default(), 100);
    let body = TestBody::chunked([&[b' '; 30][..]; 10]);
    let polls = body.polls.clone();
    let err = rejected(svc, handle, post("/v1/completions", body)).await;
    assert_eq!(err.to_string(), "request body is larger than 100 bytes");
    assert!(find_in_chain::<BodyTooLarge>(&*err).is_some());
    // Wrapped for the edge: it renders 413 body_too_large without knowing this crate.
    let refusal = find_in_chain::<Refused>(&*err).unwrap().refusal();
    assert_eq!(
        (refusal.status().as_u16(), refusal.code()),
        (413, "body_too_large")
    );
    // It stopped at the fourth chunk (120 bytes), not at the end of the body.
    assert_eq!(polls.load(Ordering::SeqCst), 4);
}

#[tokio::test]
async fn a_body_exactly_at_the_limit_passes() {
    let (mut svc, mut handle) = capped(Config::default(), CHAT.len());
    let mut req = post("/v1/chat/completions", CHAT);
    req.headers_mut()
        .insert(http::header::CONTENT_LENGTH, CHAT.len().into());
    let call = tokio::spawn(svc.ready().await.unwrap().call(req));
    let (_, send) = handle.next_request().await.unwrap();
    send.send_response(Response::new("ok"));
    call.await.unwrap().unwrap();
}

#[tokio::test]
async fn body_read_errors_are_reported_and_never_reach_the_inner_service() {
    let (svc, handle) = service(Config::default());
    let err = rejected(svc, handle, post("/v1/messages", TestBody::failing())).await;
    let read = find_in_chain::<BodyReadError>(&*err).expect("a BodyReadError");
    assert_eq!(read.source.to_string(), "connection reset by peer");
}

#[tokio::test]
async fn other_requests_pass_through_unread() {
    for (method, path) in [
        (Method::GET, "/v1/models"),
        (Method::GET, "/health"),
        (Method::POST, "/v1/messages/batches"),
        (Method::GET, "/v1/responses/resp_123"),
        (Method::POST, "/v1/responses/resp_123/cancel"),
        (Method::DELETE, "/v1/responses/resp_123"),
        (Method::POST, "/admin/circuit-breakers/openai/reset"),
        // OpenAI's stored-completions listing shares the chat path.
        (Method::GET, "/v1/chat/completions"),
    ] {
        let (mut svc, mut handle) = capped(Config::default(), 1);
        let body = TestBody::chunked([&b"not json, and over the limit"[..]]);
        let polls = body.polls.clone();
        let req = Request::builder()
            .method(method.clone())
            .uri(path)
            .body(body)
            .unwrap();
        let call = tokio::spawn(svc.ready().await.unwrap().call(req));
        let (req, send) = handle.next_request().await.unwrap();
        assert_eq!(req.uri().path(), path);
        assert!(req.extensions().get::<RequestMeta>().is_none());
        assert_eq!(
            polls.load(Ordering::SeqCst),
            0,
            "{method} {path}: body was read"
        );
        send.send_response(Response::new("passed"));
        assert_eq!(call.await.unwrap().unwrap().into_body(), "passed");
    }
}

#[tokio::test]
async fn inner_errors_pass_through() {
    let (mut svc, mut handle) = service(Config::default());
    let call = tokio::spawn(
        svc.ready()
            .await
            .unwrap()
            .call(post("/v1/chat/completions", CHAT)),
    );
    let (_, send) = handle.next_request().await.unwrap();
    send.send_error("upstream down");
    let err = call.await.unwrap().unwrap_err();
    assert_eq!(err.to_string(), "upstream down");
}

#[tokio::test]
async fn poll_ready_is_the_inner_services() {
    let (mut svc, mut handle) = mock::spawn_layer::<Request<TestBody>, Response<&'static str>, _>(
        ValidationLayer::new(Config::default()),
    );
    handle.allow(0);
    assert_pending!(svc.poll_ready());
    handle.allow(1);
    assert_ready_ok!(svc.poll_ready());
}

#[test]
fn the_body_cap_is_the_layers_not_the_configs() {
    let layer = ValidationLayer::from_config(&Config::default()).unwrap();
    assert_eq!(layer.config(), &Config::default());
    assert_eq!(layer.max_body_bytes(), DEFAULT_MAX_BODY_BYTES);
    assert_eq!(
        ValidationLayer::default().max_body_bytes(),
        DEFAULT_MAX_BODY_BYTES
    );
    let layer = layer.with_max_body_bytes(5);
    assert_eq!(layer.max_body_bytes(), 5);
    assert_eq!(layer.config().level, Level::Moderate);
}

#[tokio::test]
async fn the_anthropic_beta_query_does_not_change_the_route() {
    // The Anthropic SDK's beta client posts to /v1/messages?beta=true.
    let (svc, handle) = service(Config::default());
    let err = rejected(
        svc,
        handle,
        post(
            "/v1/messages?beta=true",
            r#"{"model":"claude-x","messages":[]}"#,
        ),
    )
    .await;
    assert_eq!(err.to_string(), "max_tokens: is required");

    let (mut svc, mut handle) = service(Config::default());
    let body = r#"{"model":"claude-x","max_tokens":5,"messages":[{"role":"system","content":"s"},{"role":"user","content":"u"}],"context_management":{"edits":[]}}"#;
    let call = tokio::spawn(
        svc.ready()
            .await
            .unwrap()
            .call(post("/v1/messages?beta=true", body)),
    );
    let (req, send) = handle.next_request().await.unwrap();
    assert_eq!(req.uri().query(), Some("beta=true"));
    send.send_response(Response::new("ok"));
    call.await.unwrap().unwrap();
}

#[test]
fn the_service_is_send_and_clone_for_a_send_inner() {
    fn assert_send_clone<T: Send + Clone>(_: &T) {}
    let (svc, _handle) = service(Config::default());
    assert_send_clone(&svc);
    let fut = svc.clone().oneshot(post("/v1/chat/completions", CHAT));
    fn assert_send<T: Send>(_: &T) {}
    assert_send(&fut);
}
