//! The retry layer's tracing: one `upstream_attempt` span per attempt and an event before
//! each wait.
//!
//! Alone in its own test binary: tracing caches each callsite's interest process-wide, and a
//! test on another thread hitting the same callsite with no subscriber can race this test's
//! scoped subscriber (tokio-rs/tracing callsite-interest race), which made it flaky in CI.

use std::sync::{Arc, Mutex};

use portcullis_retry::Config;
use tower::ServiceExt;

mod support;

use support::*;

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
