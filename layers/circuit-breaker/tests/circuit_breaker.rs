//! The circuit breaker against a `tower_test` mock, with paused time.

use std::time::Duration;

use http::{Request, Response, StatusCode};
use portcullis_circuit_breaker::{
    BreakerHandle, CircuitBreakerLayer, ClientRequest, Config, State, PROBE_IN_FLIGHT_RETRY_AFTER,
};
use portcullis_core::{error::find_in_chain, CircuitOpen};
use tokio_test::{assert_pending, assert_ready, assert_ready_ok};
use tower::{BoxError, Layer};
use tower_test::mock::{self, Handle, Mock};

type Req = Request<&'static str>;
type Res = Response<&'static str>;

const OPEN: Duration = Duration::from_secs(30);

/// The old counting: no volume gate, so `failure_threshold` failures alone open it.
fn config(failure_threshold: u32, success_threshold: u32) -> Config {
    Config {
        failure_threshold,
        open_timeout: OPEN,
        success_threshold,
        minimum_requests: 1,
        ..Config::default()
    }
}

struct Harness {
    svc: tower_test::mock::Spawn<portcullis_circuit_breaker::CircuitBreaker<Mock<Req, Res>>>,
    handle: Handle<Req, Res>,
    breaker: BreakerHandle,
}

fn harness(config: Config) -> Harness {
    let layer = CircuitBreakerLayer::from_config("up", &config).expect("valid config");
    let breaker = layer.handle();
    let (mock, handle) = mock::pair::<Req, Res>();
    let svc = tower_test::mock::Spawn::new(layer.layer(mock));
    Harness {
        svc,
        handle,
        breaker,
    }
}

fn status(code: u16) -> Res {
    let mut res = Response::new("body");
    *res.status_mut() = StatusCode::from_u16(code).unwrap();
    res
}

impl Harness {
    /// The next request at the mock; fails (instead of hanging) if the breaker kept it back.
    async fn next_request(&mut self) -> (Req, tower_test::mock::SendResponse<Res>) {
        tokio::time::timeout(Duration::from_secs(3600), self.handle.next_request())
            .await
            .expect("the call did not reach the upstream (breaker open?)")
            .expect("the call reached the upstream")
    }

    /// One call that reaches the mock, answered with `code` (or an error for `None`).
    async fn call_answered(&mut self, code: Option<u16>) -> Result<Res, BoxError> {
        assert_ready_ok!(self.svc.poll_ready());
        let fut = self.svc.call(Request::new("req"));
        let (_req, send) = self.next_request().await;
        match code {
            Some(code) => send.send_response(status(code)),
            None => send.send_error("connect error"),
        }
        fut.await
    }

    /// One call that must fail fast without reaching the mock; returns its error.
    async fn call_rejected(&mut self) -> CircuitOpen {
        assert_ready_ok!(self.svc.poll_ready());
        let err = self
            .svc
            .call(Request::new("req"))
            .await
            .expect_err("the breaker should fail fast");
        assert_pending!(self.handle.poll_request(), "upstream must not be called");
        find_in_chain::<CircuitOpen>(&*err)
            .expect("a CircuitOpen error")
            .clone()
    }

    /// One attempt of the client request `of`, answered with `code`.
    async fn attempt(&mut self, of: &ClientRequest, code: u16) -> Res {
        assert_ready_ok!(self.svc.poll_ready());
        let mut req = Request::new("req");
        req.extensions_mut().insert(of.clone());
        let fut = self.svc.call(req);
        let (_req, send) = self.next_request().await;
        send.send_response(status(code));
        fut.await.unwrap()
    }

    async fn fail_n(&mut self, n: u32) {
        for _ in 0..n {
            let res = self.call_answered(Some(503)).await.unwrap();
            assert_eq!(res.status(), 503, "5xx responses pass through unchanged");
        }
    }
}

#[tokio::test(start_paused = true)]
async fn opens_after_n_consecutive_5xx() {
    let mut h = harness(config(3, 1));
    h.fail_n(2).await;
    assert_eq!(h.breaker.state(), State::Closed);
    assert_eq!(h.breaker.consecutive_failures(), 2);
    h.fail_n(1).await;
    assert_eq!(h.breaker.state(), State::Open);
    let open = h.call_rejected().await;
    assert_eq!(open.upstream, "up");
    assert_eq!(open.retry_after, OPEN);
}

#[tokio::test(start_paused = true)]
async fn opens_after_consecutive_errors() {
    let mut h = harness(config(2, 1));
    assert!(h.call_answered(None).await.is_err());
    assert!(h.call_answered(None).await.is_err());
    assert_eq!(h.breaker.state(), State::Open);
    h.call_rejected().await;
}

#[tokio::test(start_paused = true)]
async fn mixed_5xx_and_errors_count_together() {
    let mut h = harness(config(2, 1));
    h.fail_n(1).await;
    assert!(h.call_answered(None).await.is_err());
    assert_eq!(h.breaker.state(), State::Open);
}

#[tokio::test(start_paused = true)]
async fn success_and_4xx_reset_the_count() {
    let mut h = harness(config(3, 1));
    h.fail_n(2).await;
    h.call_answered(Some(200)).await.unwrap();
    assert_eq!(h.breaker.consecutive_failures(), 0);
    h.fail_n(2).await;
    // A 4xx is the caller's problem, not the upstream's: it is a success for the breaker.
    let res = h.call_answered(Some(429)).await.unwrap();
    assert_eq!(res.status(), 429);
    assert_eq!(h.breaker.consecutive_failures(), 0);
    h.fail_n(2).await;
    assert_eq!(h.breaker.state(), State::Closed);
    h.fail_n(1).await;
    assert_eq!(h.breaker.state(), State::Open);
}

#[tokio::test(start_paused = true)]
async fn retry_after_shrinks_as_time_passes() {
    let mut h = harness(config(1, 1));
    h.fail_n(1).await;
    assert_eq!(h.call_rejected().await.retry_after, OPEN);
    assert_eq!(h.breaker.retry_after(), Some(OPEN));

    tokio::time::advance(Duration::from_secs(10)).await;
    assert_eq!(h.call_rejected().await.retry_after, Duration::from_secs(20));

    tokio::time::advance(Duration::from_millis(19_500)).await;
    assert_eq!(
        h.call_rejected().await.retry_after,
        Duration::from_millis(500)
    );
    assert_eq!(h.breaker.retry_after(), Some(Duration::from_millis(500)));

    tokio::time::advance(Duration::from_millis(500)).await;
    assert_eq!(
        h.breaker.retry_after(),
        None,
        "a call now would be the probe"
    );
}

#[tokio::test(start_paused = true)]
async fn after_open_timeout_exactly_one_probe_passes() {
    let mut h = harness(config(1, 1));
    h.fail_n(1).await;
    tokio::time::advance(OPEN).await;

    assert_ready_ok!(h.svc.poll_ready());
    let probe = h.svc.call(Request::new("probe"));
    assert_eq!(h.breaker.state(), State::HalfOpen);
    let (req, send) = h.handle.next_request().await.unwrap();
    assert_eq!(*req.body(), "probe");

    // While the probe is out, everyone else fails fast.
    let open = h.call_rejected().await;
    assert_eq!(open.retry_after, PROBE_IN_FLIGHT_RETRY_AFTER);
    assert_eq!(h.breaker.retry_after(), Some(PROBE_IN_FLIGHT_RETRY_AFTER));

    send.send_response(status(200));
    assert_eq!(probe.await.unwrap().status(), 200);
    assert_eq!(h.breaker.state(), State::Closed);
    h.call_answered(Some(200)).await.unwrap();
}

#[tokio::test(start_paused = true)]
async fn probe_failure_reopens_with_a_new_timeout() {
    let mut h = harness(config(1, 1));
    h.fail_n(1).await;
    tokio::time::advance(OPEN + Duration::from_secs(5)).await;

    assert!(h.call_answered(None).await.is_err(), "the probe fails");
    assert_eq!(h.breaker.state(), State::Open);
    assert_eq!(h.call_rejected().await.retry_after, OPEN);

    tokio::time::advance(OPEN).await;
    let res = h.call_answered(Some(500)).await.unwrap();
    assert_eq!(res.status(), 500);
    assert_eq!(h.breaker.state(), State::Open, "a 5xx probe re-opens too");
}

#[tokio::test(start_paused = true)]
async fn success_threshold_two_needs_two_probes() {
    let mut h = harness(config(1, 2));
    h.fail_n(1).await;
    tokio::time::advance(OPEN).await;

    h.call_answered(Some(200)).await.unwrap();
    assert_eq!(h.breaker.state(), State::HalfOpen);
    h.call_answered(Some(204)).await.unwrap();
    assert_eq!(h.breaker.state(), State::Closed);
}

#[tokio::test(start_paused = true)]
async fn failure_after_one_good_probe_reopens() {
    let mut h = harness(config(1, 2));
    h.fail_n(1).await;
    tokio::time::advance(OPEN).await;
    h.call_answered(Some(200)).await.unwrap();
    h.call_answered(Some(502)).await.unwrap();
    assert_eq!(h.breaker.state(), State::Open);
    tokio::time::advance(OPEN).await;
    // The count of good probes starts over.
    h.call_answered(Some(200)).await.unwrap();
    assert_eq!(h.breaker.state(), State::HalfOpen);
}

#[tokio::test(start_paused = true)]
async fn reset_closes_an_open_breaker() {
    let mut h = harness(config(1, 1));
    h.fail_n(1).await;
    assert_eq!(h.breaker.state(), State::Open);
    h.breaker.reset();
    assert_eq!(h.breaker.state(), State::Closed);
    assert_eq!(h.breaker.retry_after(), None);
    h.call_answered(Some(200)).await.unwrap();
}

#[tokio::test(start_paused = true)]
async fn reset_forgets_counted_failures() {
    let mut h = harness(config(2, 1));
    h.fail_n(1).await;
    h.breaker.reset();
    h.fail_n(1).await;
    assert_eq!(h.breaker.state(), State::Closed);
}

#[tokio::test(start_paused = true)]
async fn dropped_probe_releases_the_slot() {
    let mut h = harness(config(1, 1));
    h.fail_n(1).await;
    tokio::time::advance(OPEN).await;

    assert_ready_ok!(h.svc.poll_ready());
    let probe = h.svc.call(Request::new("probe"));
    let (_req, _send) = h.handle.next_request().await.unwrap();
    h.call_rejected().await;
    drop(probe); // the client went away

    assert_eq!(h.breaker.state(), State::HalfOpen);
    assert_eq!(h.breaker.retry_after(), None);
    h.call_answered(Some(200)).await.unwrap();
    assert_eq!(h.breaker.state(), State::Closed);
}

#[tokio::test(start_paused = true)]
async fn a_stale_outcome_does_not_touch_a_new_phase() {
    let mut h = harness(config(1, 1));
    // A slow call admitted while closed...
    assert_ready_ok!(h.svc.poll_ready());
    let slow = h.svc.call(Request::new("slow"));
    let (_req, slow_send) = h.handle.next_request().await.unwrap();
    // ...the breaker opens and a probe is let through after the timeout...
    h.fail_n(1).await;
    tokio::time::advance(OPEN).await;
    assert_ready_ok!(h.svc.poll_ready());
    let probe = h.svc.call(Request::new("probe"));
    let (_req, probe_send) = h.handle.next_request().await.unwrap();
    // ...the slow call's failure must not be taken for the probe's.
    slow_send.send_error("timeout");
    assert!(slow.await.is_err());
    assert_eq!(h.breaker.state(), State::HalfOpen);
    probe_send.send_response(status(200));
    probe.await.unwrap();
    assert_eq!(h.breaker.state(), State::Closed);
}

#[tokio::test(start_paused = true)]
async fn clones_share_one_breaker() {
    let layer = CircuitBreakerLayer::new("shared", config(1, 1));
    let (mock_a, mut handle_a) = mock::pair::<Req, Res>();
    let (mock_b, mut handle_b) = mock::pair::<Req, Res>();
    let mut a = tower_test::mock::Spawn::new(layer.clone().layer(mock_a));
    let mut b = tower_test::mock::Spawn::new(layer.layer(mock_b));

    assert_ready_ok!(a.poll_ready());
    let fut = a.call(Request::new("a"));
    handle_a
        .next_request()
        .await
        .unwrap()
        .1
        .send_response(status(500));
    fut.await.unwrap();

    assert_ready_ok!(b.poll_ready());
    let err = b.call(Request::new("b")).await.unwrap_err();
    assert!(find_in_chain::<CircuitOpen>(&*err).is_some());
    assert_pending!(handle_b.poll_request());
}

#[tokio::test(start_paused = true)]
async fn poll_ready_passes_through() {
    let mut h = harness(config(1, 1));
    h.handle.allow(0);
    assert_pending!(h.svc.poll_ready());
    h.handle.allow(1);
    assert_ready_ok!(h.svc.poll_ready());

    let mut h = harness(config(1, 1));
    h.handle.send_error("broken");
    let err = assert_ready!(h.svc.poll_ready()).unwrap_err();
    assert_eq!(err.to_string(), "broken");
}

#[test]
fn state_names() {
    assert_eq!(State::Closed.as_str(), "closed");
    assert_eq!(State::Open.as_str(), "open");
    assert_eq!(State::HalfOpen.as_str(), "half_open");
    assert_eq!(
        serde_json::to_string(&[State::Closed, State::Open, State::HalfOpen]).unwrap(),
        r#"["closed","open","half_open"]"#
    );
}

#[test]
fn from_config_reports_problems() {
    let bad = Config {
        failure_threshold: 0,
        open_timeout: Duration::ZERO,
        success_threshold: 1,
        ..Config::default()
    };
    let problems = CircuitBreakerLayer::from_config("x", &bad).unwrap_err();
    assert_eq!(problems.len(), 2);
}

#[tokio::test(start_paused = true)]
async fn responses_carry_the_state_their_call_was_admitted_in() {
    let mut h = harness(config(1, 1));
    let res = h.call_answered(Some(200)).await.unwrap();
    assert_eq!(res.extensions().get(), Some(&State::Closed));
    let res = h.call_answered(Some(503)).await.unwrap();
    assert_eq!(
        res.extensions().get(),
        Some(&State::Closed),
        "admitted closed"
    );
    assert_eq!(h.breaker.state(), State::Open);

    tokio::time::advance(OPEN).await;
    let res = h.call_answered(Some(200)).await.unwrap();
    assert_eq!(
        res.extensions().get::<portcullis_core::BreakerState>(),
        Some(&State::HalfOpen),
        "the probe"
    );
    assert_eq!(h.breaker.state(), State::Closed);
}

// === Issue 14: one caller must not open the breaker for everyone ===

#[tokio::test(start_paused = true)]
async fn retry_attempts_of_one_request_count_once() {
    // Threshold 5 and no volume gate: only the per-request counting keeps it closed.
    let mut h = harness(config(5, 1));
    for _ in 0..2 {
        // One client request, retried three times (retry clones its extensions into each
        // attempt), every attempt answered 503.
        let request = ClientRequest::new();
        for _ in 0..3 {
            assert_eq!(h.attempt(&request, 503).await.status(), 503);
        }
    }
    assert_eq!(h.breaker.consecutive_failures(), 2, "two failed requests");
    assert_eq!(h.breaker.state(), State::Closed);
    h.call_answered(Some(200)).await.unwrap();
}

#[tokio::test(start_paused = true)]
async fn a_request_whose_retry_succeeded_is_a_success() {
    let mut h = harness(config(2, 1));
    h.fail_n(1).await;
    let request = ClientRequest::new();
    h.attempt(&request, 503).await;
    assert_eq!(h.breaker.state(), State::Open, "2 failed requests open it");

    let mut h = harness(config(3, 1));
    h.fail_n(1).await;
    let request = ClientRequest::new();
    h.attempt(&request, 503).await;
    assert_eq!(h.breaker.consecutive_failures(), 2);
    h.attempt(&request, 200).await;
    assert_eq!(h.breaker.consecutive_failures(), 0, "the request recovered");
    h.fail_n(2).await;
    assert_eq!(h.breaker.state(), State::Closed);
}

#[tokio::test(start_paused = true)]
async fn marks_are_per_breaker() {
    // A request that fails over to a second upstream counts at both breakers.
    let request = ClientRequest::new();
    let mut a = harness(config(1, 1));
    let mut b = harness(config(1, 1));
    a.attempt(&request, 503).await;
    b.attempt(&request, 503).await;
    assert_eq!(a.breaker.state(), State::Open);
    assert_eq!(b.breaker.state(), State::Open);
}

#[tokio::test(start_paused = true)]
async fn a_request_counts_again_after_the_breaker_closed() {
    let mut h = harness(config(1, 1));
    let request = ClientRequest::new();
    h.attempt(&request, 503).await;
    assert_eq!(h.breaker.state(), State::Open);
    h.breaker.reset();
    // The same request's next attempt belongs to a new phase: it counts.
    h.attempt(&request, 503).await;
    assert_eq!(h.breaker.state(), State::Open);
}

fn gated(failure_threshold: u32, minimum_requests: u32) -> Config {
    Config {
        failure_threshold,
        open_timeout: OPEN,
        minimum_requests,
        window: Duration::from_secs(60),
        ..Config::default()
    }
}

#[tokio::test(start_paused = true)]
async fn opens_only_after_minimum_requests_in_the_window() {
    let mut h = harness(gated(2, 10));
    h.fail_n(9).await;
    assert_eq!(
        h.breaker.state(),
        State::Closed,
        "9 requests: below the gate"
    );
    assert_eq!(h.breaker.consecutive_failures(), 9);
    h.fail_n(1).await;
    assert_eq!(h.breaker.state(), State::Open);
}

#[tokio::test(start_paused = true)]
async fn requests_older_than_the_window_do_not_count() {
    let mut h = harness(gated(2, 4));
    h.fail_n(2).await;
    tokio::time::advance(Duration::from_secs(61)).await;
    h.fail_n(2).await;
    assert_eq!(
        h.breaker.state(),
        State::Closed,
        "only 2 requests in the window"
    );
    h.fail_n(2).await;
    assert_eq!(h.breaker.state(), State::Open, "4 within 60 s, all failed");
}

#[tokio::test(start_paused = true)]
async fn defaults_need_ten_requests() {
    let mut h = harness(Config::default());
    // The attack of issue 14: two requests, three attempts each, all 503.
    for _ in 0..2 {
        let request = ClientRequest::new();
        for _ in 0..3 {
            h.attempt(&request, 503).await;
        }
    }
    assert_eq!(h.breaker.state(), State::Closed);
    h.call_answered(Some(200)).await.unwrap();

    // A real outage: ten failed requests within the minute open it.
    let mut h = harness(Config::default());
    h.fail_n(9).await;
    assert_eq!(h.breaker.state(), State::Closed);
    h.fail_n(1).await;
    assert_eq!(h.breaker.state(), State::Open);
}

#[tokio::test(start_paused = true)]
async fn the_volume_gate_starts_over_when_the_breaker_closes() {
    let mut h = harness(gated(1, 3));
    h.fail_n(3).await;
    assert_eq!(h.breaker.state(), State::Open);
    tokio::time::advance(OPEN).await;
    h.call_answered(Some(200)).await.unwrap();
    assert_eq!(h.breaker.state(), State::Closed);
    h.fail_n(2).await;
    assert_eq!(h.breaker.state(), State::Closed);
    h.fail_n(1).await;
    assert_eq!(h.breaker.state(), State::Open);
}

#[test]
fn mark_inserts_once() {
    let req = ClientRequest::mark(Request::new(()));
    let first = req.extensions().get::<ClientRequest>().unwrap().clone();
    let req = ClientRequest::mark(req);
    assert!(req
        .extensions()
        .get::<ClientRequest>()
        .unwrap()
        .same_as(&first));
    assert!(!first.same_as(&ClientRequest::new()));
}
