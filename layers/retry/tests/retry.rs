//! The retry layer against `tower_test` mocks, with paused time.

use std::{
    convert::Infallible,
    pin::Pin,
    task::{Context, Poll},
    time::Duration,
};

use bytes::Bytes;
use http::Request;
use http_body::{Body, Frame, SizeHint};
use portcullis_core::{error::find_in_chain, CircuitOpen};
use portcullis_retry::{Attempted, BudgetConfig, Config, RetryLayer};
use tokio::time::Instant;
use tower::{BoxError, Layer, ServiceExt};
use tower_test::mock;

mod support;

use support::*;

#[tokio::test(start_paused = true)]
async fn retries_503_until_200_and_replays_identical_requests() {
    let (svc, mut handle) = service(Config::default());
    let mut req = request(r#"{"model":"m"}"#);
    req.extensions_mut()
        .insert(portcullis_core::UserId::new("u1"));
    let start = Instant::now();
    let call = tokio::spawn(svc.oneshot(req));

    let mut seen = Vec::new();
    for resp in [
        response(503, "busy"),
        response(503, "busy"),
        response(200, "ok"),
    ] {
        let (parts, body) = answer(&mut handle, resp).await;
        assert_eq!(parts.method, http::Method::POST);
        assert_eq!(parts.uri, "http://upstream/v1/chat/completions");
        assert_eq!(parts.headers["content-type"], "application/json");
        assert_eq!(
            parts.extensions.get::<portcullis_core::UserId>(),
            Some(&portcullis_core::UserId::new("u1"))
        );
        seen.push(body);
    }
    let resp = done(call).await.unwrap();
    assert_eq!(resp.status(), 200);
    assert_eq!(attempts(&resp), "3");
    assert_eq!(body_string(resp.into_body()).await, "ok");
    assert_eq!(seen, [r#"{"model":"m"}"#; 3]);
    // Full jitter: at most base (100ms) after the first failure, 200ms after the second.
    assert!(
        start.elapsed() <= Duration::from_millis(300),
        "{:?}",
        start.elapsed()
    );
}

#[tokio::test(start_paused = true)]
async fn backoff_stays_within_the_exponential_cap() {
    let config = Config {
        max_attempts: 6,
        base_delay: Duration::from_secs(1),
        max_delay: Duration::from_secs(3),
        ..Config::default()
    };
    // Caps: 1s, 2s, 3s, 3s, 3s. Run a few requests to exercise the randomness.
    for _ in 0..5 {
        let (svc, mut handle) = service(config.clone());
        let call = tokio::spawn(svc.oneshot(request("{}")));
        let mut last = Instant::now();
        let mut waits = Vec::new();
        for i in 0..6 {
            answer(&mut handle, response(if i < 5 { 500 } else { 200 }, "")).await;
            let now = Instant::now();
            if i > 0 {
                waits.push(now - last);
            }
            last = now;
        }
        let resp = done(call).await.unwrap();
        assert_eq!(attempts(&resp), "6");
        for (wait, cap) in waits.iter().zip([1, 2, 3, 3, 3]) {
            assert!(*wait <= Duration::from_secs(cap), "{waits:?}");
        }
    }
}

#[tokio::test(start_paused = true)]
async fn other_4xx_are_not_retried() {
    let (svc, mut handle) = service(Config::default());
    let call = tokio::spawn(svc.oneshot(request("{}")));
    answer(&mut handle, response(400, r#"{"error":{"message":"bad"}}"#)).await;
    let resp = done(call).await.unwrap();
    assert_eq!(resp.status(), 400);
    assert_eq!(attempts(&resp), "1");
    assert_eq!(
        body_string(resp.into_body()).await,
        r#"{"error":{"message":"bad"}}"#
    );
    assert!(next_request(&mut handle).await.is_none());
}

#[tokio::test(start_paused = true)]
async fn insufficient_quota_429_is_not_retried_and_its_body_is_intact() {
    let body = r#"{"error":{"message":"You exceeded your current quota","type":"insufficient_quota","param":null,"code":"insufficient_quota"}}"#;
    let (svc, mut handle) = service(Config::default());
    let call = tokio::spawn(svc.oneshot(request("{}")));
    let resp = with_header(response(429, body), "x-request-id", "abc");
    answer(&mut handle, resp).await;
    let resp = done(call).await.unwrap();
    assert_eq!(resp.status(), 429);
    assert_eq!(attempts(&resp), "1");
    assert_eq!(resp.headers()["x-request-id"], "abc");
    assert_eq!(body_string(resp.into_body()).await, body);
    assert!(next_request(&mut handle).await.is_none());
}

#[tokio::test(start_paused = true)]
async fn rate_limit_429_is_retried() {
    let (svc, mut handle) = service(Config::default());
    let call = tokio::spawn(svc.oneshot(request("{}")));
    let limited = r#"{"error":{"type":"requests","code":"rate_limit_exceeded"}}"#;
    answer(&mut handle, response(429, limited)).await;
    answer(&mut handle, response(200, "ok")).await;
    let resp = done(call).await.unwrap();
    assert_eq!(resp.status(), 200);
    assert_eq!(attempts(&resp), "2");
}

#[tokio::test(start_paused = true)]
async fn retry_after_seconds_is_waited_exactly() {
    let (svc, mut handle) = service(Config::default());
    let call = tokio::spawn(svc.oneshot(request("{}")));
    let start = Instant::now();
    answer(
        &mut handle,
        with_header(response(429, ""), "retry-after", "1"),
    )
    .await;
    let (_, _) = answer(&mut handle, response(200, "ok")).await;
    // The asked second (to the timer's millisecond), not a jittered backoff.
    let waited = start.elapsed();
    assert!(
        waited >= Duration::from_secs(1) && waited <= Duration::from_millis(1002),
        "{waited:?}"
    );
    let resp = done(call).await.unwrap();
    assert_eq!(attempts(&resp), "2");
}

#[tokio::test(start_paused = true)]
async fn retry_after_ms_and_http_date_are_waited() {
    let (svc, mut handle) = service(Config::default());
    let call = tokio::spawn(svc.oneshot(request("{}")));
    let start = Instant::now();
    let r = with_header(response(503, ""), "retry-after-ms", "2500");
    answer(&mut handle, with_header(r, "retry-after", "20")).await;
    answer(&mut handle, response(200, "ok")).await;
    let waited = start.elapsed();
    assert!(
        waited >= Duration::from_millis(2500) && waited <= Duration::from_millis(2502),
        "{waited:?}"
    );
    done(call).await.unwrap();

    // An HTTP date is counted from the wall clock, which paused time does not move.
    let (svc, mut handle) = service(Config::default());
    let call = tokio::spawn(svc.oneshot(request("{}")));
    let start = Instant::now();
    let when = httpdate::fmt_http_date(std::time::SystemTime::now() + Duration::from_secs(5));
    answer(
        &mut handle,
        with_header(response(503, ""), "retry-after", &when),
    )
    .await;
    answer(&mut handle, response(200, "ok")).await;
    let waited = start.elapsed();
    // HTTP dates have whole seconds, so the wait is a little over 4s to 5s.
    assert!(
        waited > Duration::from_secs(3) && waited <= Duration::from_secs(5),
        "{waited:?}"
    );
    done(call).await.unwrap();
}

#[tokio::test(start_paused = true)]
async fn retry_after_is_ignored_when_not_respected() {
    let config = Config {
        respect_retry_after: false,
        ..Config::default()
    };
    let (svc, mut handle) = service(config);
    let call = tokio::spawn(svc.oneshot(request("{}")));
    let start = Instant::now();
    answer(
        &mut handle,
        with_header(response(503, ""), "retry-after", "120"),
    )
    .await;
    answer(&mut handle, response(200, "ok")).await;
    assert!(start.elapsed() <= Duration::from_millis(100));
    assert_eq!(attempts(&done(call).await.unwrap()), "2");
}

#[tokio::test(start_paused = true)]
async fn retry_after_beyond_max_is_returned_at_once() {
    let (svc, mut handle) = service(Config::default());
    let call = tokio::spawn(svc.oneshot(request("{}")));
    let start = Instant::now();
    let r = with_header(
        response(429, r#"{"error":{"code":"rate_limit_exceeded"}}"#),
        "retry-after",
        "31",
    );
    answer(&mut handle, r).await;
    let resp = done(call).await.unwrap();
    assert_eq!(start.elapsed(), Duration::ZERO);
    assert_eq!(resp.status(), 429);
    assert_eq!(resp.headers()["retry-after"], "31");
    assert_eq!(attempts(&resp), "1");
    assert_eq!(
        body_string(resp.into_body()).await,
        r#"{"error":{"code":"rate_limit_exceeded"}}"#
    );
    assert!(next_request(&mut handle).await.is_none());
}

#[tokio::test(start_paused = true)]
async fn x_should_retry_false_is_obeyed() {
    let (svc, mut handle) = service(Config::default());
    let call = tokio::spawn(svc.oneshot(request("{}")));
    answer(
        &mut handle,
        with_header(response(503, "no"), "x-should-retry", "false"),
    )
    .await;
    let resp = done(call).await.unwrap();
    assert_eq!(resp.status(), 503);
    assert_eq!(attempts(&resp), "1");
    assert!(next_request(&mut handle).await.is_none());
}

#[tokio::test(start_paused = true)]
async fn x_should_retry_true_retries_a_409_but_not_a_400() {
    let (svc, mut handle) = service(Config::default());
    let call = tokio::spawn(svc.oneshot(request("{}")));
    answer(
        &mut handle,
        with_header(response(409, ""), "x-should-retry", "true"),
    )
    .await;
    answer(&mut handle, response(200, "ok")).await;
    assert_eq!(attempts(&done(call).await.unwrap()), "2");

    let (svc, mut handle) = service(Config::default());
    let call = tokio::spawn(svc.oneshot(request("{}")));
    answer(
        &mut handle,
        with_header(response(400, ""), "x-should-retry", "true"),
    )
    .await;
    assert_eq!(done(call).await.unwrap().status(), 400);
    assert!(next_request(&mut handle).await.is_none());
}

#[tokio::test(start_paused = true)]
async fn errors_are_retried_and_the_last_is_returned_with_attempts() {
    let (svc, mut handle) = service(Config::default());
    let call = tokio::spawn(svc.oneshot(request("{}")));
    for i in 0..3 {
        let (_, send) = next_request(&mut handle).await.unwrap();
        send.send_error(std::io::Error::new(
            std::io::ErrorKind::ConnectionRefused,
            format!("connection refused {i}"),
        ));
    }
    let err = done(call).await.unwrap_err();
    let attempted = err.downcast_ref::<Attempted>().expect("Attempted");
    assert_eq!(attempted.attempts, 3);
    assert_eq!(err.to_string(), "connection refused 2");
    assert!(find_in_chain::<std::io::Error>(&*err).is_some());
}

#[tokio::test(start_paused = true)]
async fn an_error_then_success_is_a_success() {
    let (svc, mut handle) = service(Config::default());
    let call = tokio::spawn(svc.oneshot(request("{}")));
    let (_, send) = next_request(&mut handle).await.unwrap();
    send.send_error("connection reset");
    answer(&mut handle, response(200, "ok")).await;
    let resp = done(call).await.unwrap();
    assert_eq!(attempts(&resp), "2");
}

#[tokio::test(start_paused = true)]
async fn circuit_open_is_not_retried() {
    let (svc, mut handle) = service(Config::default());
    let call = tokio::spawn(svc.oneshot(request("{}")));
    let (_, send) = next_request(&mut handle).await.unwrap();
    send.send_error(CircuitOpen {
        upstream: "openai".into(),
        retry_after: Duration::from_secs(30),
    });
    let err = done(call).await.unwrap_err();
    assert_eq!(err.downcast_ref::<Attempted>().unwrap().attempts, 1);
    let open = find_in_chain::<CircuitOpen>(&*err).expect("CircuitOpen in chain");
    assert_eq!(open.retry_after, Duration::from_secs(30));
    assert!(next_request(&mut handle).await.is_none());
}

#[tokio::test(start_paused = true)]
async fn circuit_open_on_a_retry_stops_there() {
    let (svc, mut handle) = service(Config::default());
    let call = tokio::spawn(svc.oneshot(request("{}")));
    answer(&mut handle, response(503, "")).await;
    let (_, send) = next_request(&mut handle).await.unwrap();
    send.send_error(CircuitOpen {
        upstream: "openai".into(),
        retry_after: Duration::from_secs(30),
    });
    let err = done(call).await.unwrap_err();
    assert_eq!(err.downcast_ref::<Attempted>().unwrap().attempts, 2);
    assert!(find_in_chain::<CircuitOpen>(&*err).is_some());
    assert!(next_request(&mut handle).await.is_none());
}

#[tokio::test(start_paused = true)]
async fn an_empty_budget_stops_retries() {
    // A reserve of exactly one retry (1/s for 1s), and no retries earned by traffic.
    let layer = layer(Config {
        budget: BudgetConfig {
            ttl: Duration::from_secs(1),
            min_per_sec: 1,
            retry_percent: 0.0,
        },
        ..Config::default()
    });
    let (mock, mut handle) = mock::pair::<Req, Resp>();
    // Two services from one layer share the budget.
    let first = layer.layer(mock.clone());
    let second = layer.clone().layer(mock);

    let call = tokio::spawn(first.oneshot(request("{}")));
    answer(&mut handle, response(503, "")).await;
    answer(&mut handle, response(200, "ok")).await;
    assert_eq!(attempts(&done(call).await.unwrap()), "2");

    let call = tokio::spawn(second.oneshot(request("{}")));
    answer(&mut handle, response(503, "busy")).await;
    let resp = done(call).await.unwrap();
    assert_eq!(resp.status(), 503);
    assert_eq!(attempts(&resp), "1");
    assert_eq!(body_string(resp.into_body()).await, "busy");

    // Errors too.
    let (mock, mut handle) = mock::pair::<Req, Resp>();
    let svc = layer.layer(mock);
    let call = tokio::spawn(svc.oneshot(request("{}")));
    let (_, send) = next_request(&mut handle).await.unwrap();
    send.send_error("reset");
    let err = done(call).await.unwrap_err();
    assert_eq!(err.downcast_ref::<Attempted>().unwrap().attempts, 1);
}

#[tokio::test(start_paused = true)]
async fn max_attempts_one_never_retries() {
    let (svc, mut handle) = service(Config {
        max_attempts: 1,
        ..Config::default()
    });
    let call = tokio::spawn(svc.oneshot(request("{}")));
    answer(&mut handle, response(503, "busy")).await;
    let resp = done(call).await.unwrap();
    assert_eq!(resp.status(), 503);
    assert_eq!(attempts(&resp), "1");
    assert!(next_request(&mut handle).await.is_none());
}

/// A body that streams chunks and, when `known` is false, does not know its size.
struct Chunks {
    chunks: Vec<Bytes>,
    known: bool,
}

impl Body for Chunks {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        _cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        if self.chunks.is_empty() {
            Poll::Ready(None)
        } else {
            Poll::Ready(Some(Ok(Frame::data(self.chunks.remove(0)))))
        }
    }

    fn size_hint(&self) -> SizeHint {
        if self.known {
            SizeHint::with_exact(self.chunks.iter().map(|c| c.len() as u64).sum())
        } else {
            SizeHint::new()
        }
    }
}

impl From<Bytes> for Chunks {
    fn from(b: Bytes) -> Self {
        Chunks {
            chunks: vec![b],
            known: true,
        }
    }
}

type StreamReq = Request<Chunks>;

fn chunked(known: bool) -> StreamReq {
    Request::post("http://upstream/v1/chat/completions")
        .body(Chunks {
            chunks: vec![Bytes::from_static(b"{\"a\":"), Bytes::from_static(b"1}")],
            known,
        })
        .unwrap()
}

#[tokio::test(start_paused = true)]
async fn bodies_over_the_cap_or_of_unknown_size_are_sent_once() {
    let config = Config {
        max_replay_body_bytes: 4,
        ..Config::default()
    };
    for (cfg, known) in [(config, true), (Config::default(), false)] {
        let (mock, mut handle) = mock::pair::<StreamReq, Resp>();
        let svc = layer(cfg).layer(mock);
        let call = tokio::spawn(svc.oneshot(chunked(known)));
        let (req, send) = next_request(&mut handle).await.unwrap();
        send.send_response(response(503, "busy"));
        assert_eq!(body_string(req.into_body()).await, "{\"a\":1}");
        let resp = done(call).await.unwrap();
        assert_eq!(resp.status(), 503);
        assert_eq!(attempts(&resp), "1");
        assert!(next_request(&mut handle).await.is_none());
    }
}

#[tokio::test(start_paused = true)]
async fn chunked_bodies_within_the_cap_are_replayed_whole() {
    let (mock, mut handle) = mock::pair::<StreamReq, Resp>();
    let svc = layer(Config::default()).layer(mock);
    let call = tokio::spawn(svc.oneshot(chunked(true)));
    for status in [502, 200] {
        let (req, send) = next_request(&mut handle).await.unwrap();
        send.send_response(response(status, ""));
        assert_eq!(body_string(req.into_body()).await, "{\"a\":1}");
    }
    assert_eq!(attempts(&done(call).await.unwrap()), "2");
}

#[tokio::test(start_paused = true)]
async fn body_read_errors_are_reported_without_an_attempt() {
    struct Broken;
    impl Body for Broken {
        type Data = Bytes;
        type Error = std::io::Error;
        fn poll_frame(
            self: Pin<&mut Self>,
            _: &mut Context<'_>,
        ) -> Poll<Option<Result<Frame<Bytes>, std::io::Error>>> {
            Poll::Ready(Some(Err(std::io::Error::other("client went away"))))
        }
        fn size_hint(&self) -> SizeHint {
            SizeHint::with_exact(3)
        }
    }
    impl From<Bytes> for Broken {
        fn from(_: Bytes) -> Self {
            Broken
        }
    }
    let (mock, mut handle) = mock::pair::<Request<Broken>, Resp>();
    let svc = layer(Config::default()).layer(mock);
    let err: BoxError = done(tokio::spawn(svc.oneshot(Request::new(Broken))))
        .await
        .unwrap_err();
    assert_eq!(err.downcast_ref::<Attempted>().unwrap().attempts, 0);
    assert!(find_in_chain::<std::io::Error>(&*err).is_some());
    assert!(next_request(&mut handle).await.is_none());
}

#[test]
fn invalid_config_is_refused_by_from_config() {
    let problems = RetryLayer::from_config(&Config {
        max_attempts: 0,
        ..Config::default()
    })
    .unwrap_err();
    assert_eq!(problems[0].to_string(), "max_attempts: must be >= 1");
}

#[tokio::test(start_paused = true)]
async fn the_final_response_carries_its_attempts_as_an_extension() {
    let (svc, mut handle) = service(Config::default());
    let call = tokio::spawn(svc.oneshot(request("{}")));
    answer(&mut handle, response(503, "")).await;
    answer(&mut handle, response(200, "ok")).await;
    let resp = done(call).await.unwrap();
    assert_eq!(resp.extensions().get(), Some(&portcullis_core::Attempts(2)));

    // A request that ends in an error reports its attempts through `Attempted`.
    let (svc, mut handle) = service(Config {
        max_attempts: 1,
        ..Config::default()
    });
    let call = tokio::spawn(svc.oneshot(request("{}")));
    let (_, send) = next_request(&mut handle).await.unwrap();
    send.send_error("reset");
    let err = done(call).await.unwrap_err();
    let attempted = find_in_chain::<Attempted>(&*err).unwrap();
    assert_eq!(attempted.attempts(), portcullis_core::Attempts(1));
}
