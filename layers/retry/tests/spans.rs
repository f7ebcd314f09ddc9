//! The retry layer's tracing: one `upstream_attempt` span per attempt and an event before
//! each wait.
//!
//! Alone in its own test binary: tracing caches each callsite's interest process-wide, and a
//! test on another thread hitting the same callsite with no subscriber can race this test's
//! scoped subscriber (tokio-rs/tracing callsite-interest race), which made it flaky in CI.

use std::sync::{Arc, Mutex};

use bytes::Bytes;
use http::{Request, Response, StatusCode};
use http_body::Body;
use http_body_util::{BodyExt, Full};
use portcullis_retry::{Config, Retry, RetryLayer};
use tower::{Layer, ServiceExt};
use tower_test::mock;

type Req = Request<Full<Bytes>>;
type Resp = Response<Full<Bytes>>;
type Handle = mock::Handle<Req, Resp>;

fn layer(config: Config) -> RetryLayer {
    RetryLayer::from_config(&config).expect("valid config")
}

fn service(config: Config) -> (Retry<mock::Mock<Req, Resp>>, Handle) {
    let (mock, handle) = mock::pair::<Req, Resp>();
    (layer(config).layer(mock), handle)
}

fn request(body: &'static str) -> Req {
    Request::post("http://upstream/v1/chat/completions")
        .header("content-type", "application/json")
        .body(Full::new(Bytes::from_static(body.as_bytes())))
        .unwrap()
}

fn response(status: u16, body: &'static str) -> Resp {
    let mut r = Response::new(Full::new(Bytes::from_static(body.as_bytes())));
    *r.status_mut() = StatusCode::from_u16(status).unwrap();
    r
}

fn with_header(mut r: Resp, name: &'static str, value: &str) -> Resp {
    r.headers_mut().insert(name, value.parse().unwrap());
    r
}

fn attempts(r: &Resp) -> &str {
    r.headers()["x-portcullis-attempts"].to_str().unwrap()
}

async fn body_string<B: Body<Data = Bytes>>(b: B) -> String
where
    B::Error: std::fmt::Debug,
{
    String::from_utf8(b.collect().await.unwrap().to_bytes().to_vec()).unwrap()
}

/// Answer the next request with `resp`, returning the request's body.
async fn answer(handle: &mut Handle, resp: Resp) -> (http::request::Parts, String) {
    let (req, send) = handle.next_request().await.expect("a request");
    let (parts, body) = req.into_parts();
    send.send_response(resp);
    (parts, body_string(body).await)
}

#[tokio::test(start_paused = true)]
async fn each_attempt_is_its_own_span() {
    use tracing_subscriber::{layer::SubscriberExt, registry::LookupSpan};

    #[derive(Clone, Default)]
    struct Spans(Arc<Mutex<Vec<String>>>);
    struct Field<'a>(&'a mut String);
    impl tracing::field::Visit for Field<'_> {
        fn record_debug(&mut self, f: &tracing::field::Field, v: &dyn std::fmt::Debug) {
            self.0.push_str(&format!(" {}={:?}", f.name(), v));
        }
    }
    impl<S: tracing::Subscriber + for<'a> LookupSpan<'a>> tracing_subscriber::Layer<S> for Spans {
        fn on_new_span(
            &self,
            attrs: &tracing::span::Attributes<'_>,
            _: &tracing::span::Id,
            _: tracing_subscriber::layer::Context<'_, S>,
        ) {
            let mut s = attrs.metadata().name().to_string();
            attrs.record(&mut Field(&mut s));
            self.0.lock().unwrap().push(s);
        }
        fn on_event(
            &self,
            event: &tracing::Event<'_>,
            _: tracing_subscriber::layer::Context<'_, S>,
        ) {
            let mut s = String::from("event");
            event.record(&mut Field(&mut s));
            self.0.lock().unwrap().push(s);
        }
    }

    let spans = Spans::default();
    let _guard =
        tracing::subscriber::set_default(tracing_subscriber::registry().with(spans.clone()));

    let (svc, mut handle) = service(Config::default());
    let call = svc.oneshot(request("{}"));
    let drive = async {
        answer(
            &mut handle,
            with_header(response(503, ""), "retry-after", "2"),
        )
        .await;
        answer(&mut handle, response(200, "ok")).await;
    };
    let (resp, ()) = tokio::join!(call, drive);
    assert_eq!(attempts(&resp.unwrap()), "2");

    let seen = spans.0.lock().unwrap().clone();
    let attempt_spans: Vec<&String> = seen
        .iter()
        .filter(|s| s.starts_with("upstream_attempt"))
        .collect();
    assert_eq!(
        attempt_spans,
        ["upstream_attempt attempt=1", "upstream_attempt attempt=2"]
    );
    let wait = seen
        .iter()
        .find(|s| s.contains("retrying upstream request"))
        .expect("an event before the wait");
    assert!(wait.contains("wait_ms=2000"), "{wait}");
    assert!(wait.contains("reason=status 503"), "{wait}");
}
