//! End to end (issue 3): retries, Retry-After, Cloudflare cookies, the circuit breaker, the
//! admin reset, model fallbacks and cookie persistence, through the real gateway on a socket in
//! front of the mock upstream.

mod support;

use std::time::{Duration, Instant};

use http::Method;
use portcullis_mock::{MockResponse, MockUpstream};
use serde_json::json;
use support::*;

/// Fast backoff so retries cost milliseconds, not the default 100ms+.
const FAST_RETRY: &str = "[retry]\nbase_delay = \"10ms\"\nmax_delay = \"20ms\"\n";

async fn setup(extra: &str) -> (MockUpstream, TestGateway) {
    let mock = MockUpstream::start().await.unwrap();
    let gw = TestGateway::start(&mock_config(&mock.url(), extra)).await;
    (mock, gw)
}

/// The `/health/upstreams` entry named `name`.
async fn upstream_health(gw: &TestGateway, name: &str) -> (serde_json::Value, String) {
    let r = get(&gw.url("/health/upstreams"), &[]).await;
    assert_eq!(r.status, 200, "{}", r.text());
    let entry = r.json()["upstreams"]
        .as_array()
        .expect("upstreams array")
        .iter()
        .find(|u| u["name"] == name)
        .unwrap_or_else(|| panic!("no upstream {name} in {}", r.text()))
        .clone();
    (entry, r.text())
}

/// The `cf-ray` a scripted Cloudflare response will carry (the mock generates it; its Debug
/// output shows the header).
fn cf_ray_of(r: &MockResponse) -> String {
    let dbg = format!("{r:?}");
    let re = regex::Regex::new(r"[0-9a-f]{16}-[A-Z]{3}").unwrap();
    re.find(&dbg)
        .unwrap_or_else(|| panic!("no cf-ray in {dbg}"))
        .as_str()
        .to_string()
}

// === Retries ===

#[tokio::test]
async fn retries_503s_then_succeeds_resending_the_same_body() {
    let (mock, gw) = setup(FAST_RETRY).await;
    mock.push_n(2, MockResponse::status(503));
    let body = json!({
        "model": "gpt-4o-mini",
        "messages": [{"role": "user", "content": "retry me"}],
        "temperature": 0.5
    });
    let r = post_json(&gw.url("/v1/chat/completions"), &body, &[]).await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.json()["object"], "chat.completion");
    assert_eq!(r.header("x-portcullis-attempts"), Some("3"));
    assert_eq!(r.header("x-portcullis-upstream"), Some("mock"));

    let seen = mock.requests();
    assert_eq!(seen.len(), 3);
    assert!(!seen[0].body.is_empty());
    for req in &seen[1..] {
        assert_eq!(req.body, seen[0].body, "every attempt sends the same body");
        assert_eq!(req.path, "/v1/chat/completions");
    }
    assert_eq!(
        seen[0].json().unwrap()["messages"][0]["content"],
        "retry me"
    );
}

#[tokio::test]
async fn retry_after_one_second_is_waited_for() {
    // A tiny base delay: only Retry-After can explain a one second wait.
    let (mock, gw) = setup("[retry]\nbase_delay = \"1ms\"\nmax_delay = \"5ms\"").await;
    mock.push(MockResponse::status(429).retry_after("1"));
    let start = Instant::now();
    let r = post_json(&gw.url("/v1/chat/completions"), &chat("gpt-4o-mini"), &[]).await;
    let elapsed = start.elapsed();
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.header("x-portcullis-attempts"), Some("2"));
    assert!(elapsed >= Duration::from_millis(900), "{elapsed:?}");
    assert!(elapsed < Duration::from_secs(5), "{elapsed:?}");
    assert_eq!(mock.request_count(), 2);
}

#[tokio::test]
async fn retry_after_above_the_cap_returns_the_429_at_once() {
    let (mock, gw) =
        setup("[retry]\nbase_delay = \"10ms\"\nmax_delay = \"20ms\"\nmax_retry_after = \"2s\"")
            .await;
    mock.push(MockResponse::status(429).retry_after("60"));
    let start = Instant::now();
    let r = post_json(&gw.url("/v1/chat/completions"), &chat("gpt-4o-mini"), &[]).await;
    assert!(
        start.elapsed() < Duration::from_secs(1),
        "{:?}",
        start.elapsed()
    );
    assert_eq!(r.status, 429, "{}", r.text());
    assert_eq!(r.header("x-portcullis-attempts"), Some("1"));
    assert_eq!(
        r.header("retry-after"),
        Some("60"),
        "the upstream's own answer"
    );
    assert_eq!(r.json()["error"]["message"], "mock error");
    assert_eq!(mock.request_count(), 1);
}

#[tokio::test]
async fn client_errors_and_insufficient_quota_pass_through_unretried() {
    let (mock, gw) = setup(FAST_RETRY).await;
    let url = gw.url("/v1/chat/completions");

    let bad = json!({"error": {
        "message": "Invalid value for 'foo'.", "type": "invalid_request_error",
        "param": "foo", "code": "invalid_value"
    }});
    mock.push(MockResponse::json(400, bad.clone()));
    let r = post_json(&url, &chat("gpt-4o-mini"), &[]).await;
    assert_eq!(r.status, 400);
    assert_eq!(r.header("x-portcullis-attempts"), Some("1"));
    assert_eq!(r.body, bad.to_string(), "body passes through byte for byte");
    assert!(
        r.header("x-portcullis-error").is_none(),
        "not a gateway error"
    );
    assert_eq!(mock.request_count(), 1);

    let quota = json!({"error": {
        "message": "You exceeded your current quota, please check your plan and billing details.",
        "type": "insufficient_quota", "param": null, "code": "insufficient_quota"
    }});
    mock.push(MockResponse::json(429, quota.clone()));
    // Were it retried, this would be the answer.
    mock.push(MockResponse::status(200));
    let r = post_json(&url, &chat("gpt-4o-mini"), &[]).await;
    assert_eq!(r.status, 429);
    assert_eq!(r.header("x-portcullis-attempts"), Some("1"));
    assert_eq!(r.body, quota.to_string());
    assert_eq!(mock.request_count(), 2);
}

// === Cloudflare ===

#[tokio::test]
async fn cloudflare_cookie_from_the_failed_attempt_gets_the_retry_through() {
    let (mock, gw) = setup(FAST_RETRY).await;
    const VALUE: &str = "abc-clearance-7f3e91";
    mock.require_cookie("cf_clearance", VALUE);
    let url = gw.url("/v1/chat/completions");

    let r = post_json(&url, &chat("gpt-4o-mini"), &[]).await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.header("x-portcullis-attempts"), Some("2"));
    assert!(r.header("set-cookie").is_none());
    let seen = mock.requests();
    assert_eq!(seen.len(), 2);
    assert!(seen[0].header("cookie").is_none());
    assert_eq!(
        seen[1].header("cookie"),
        Some(format!("cf_clearance={VALUE}").as_str())
    );

    // The jar keeps it: the next client request goes through at once.
    let r = post_json(&url, &chat("gpt-4o-mini"), &[]).await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.header("x-portcullis-attempts"), Some("1"));
    assert_eq!(mock.request_count(), 3);
    assert!(mock
        .last_request()
        .unwrap()
        .header("cookie")
        .unwrap()
        .contains(VALUE));

    let (entry, text) = upstream_health(&gw, "mock").await;
    assert!(entry["cookies"].as_u64().unwrap() >= 1, "{text}");
    assert!(!text.contains(VALUE), "cookie value leaked: {text}");
    assert!(!text.contains("cf_clearance"), "cookie name leaked: {text}");

    // A Set-Cookie on a successful answer is the gateway's to keep, not the client's.
    mock.push(MockResponse::ok().set_cookie("__cf_bm=bm-42; Path=/; HttpOnly"));
    let r = post_json(&url, &chat("gpt-4o-mini"), &[]).await;
    assert_eq!(r.status, 200);
    assert!(r.header("set-cookie").is_none(), "{:?}", r.headers);
    let r = post_json(&url, &chat("gpt-4o-mini"), &[]).await;
    assert_eq!(r.status, 200);
    let cookie = mock
        .last_request()
        .unwrap()
        .header("cookie")
        .unwrap()
        .to_string();
    assert!(
        cookie.contains("__cf_bm=bm-42") && cookie.contains(VALUE),
        "{cookie}"
    );
}

#[tokio::test]
async fn cloudflare_page_without_retries_is_a_502_naming_code_and_ray() {
    for extra in ["[retry]\nenabled = false", "[retry]\nmax_attempts = 1"] {
        let (mock, gw) = setup(extra).await;
        let page = MockResponse::cloudflare(503, 1200);
        let ray = cf_ray_of(&page);
        mock.push(page);
        let r = post_json(&gw.url("/v1/chat/completions"), &chat("gpt-4o-mini"), &[]).await;
        assert_eq!(r.status, 502, "{extra}: {}", r.text());
        assert_eq!(r.header("x-portcullis-error"), Some("upstream_error"));
        assert!(r.header("set-cookie").is_none());
        let body = r.json();
        assert_eq!(body["error"]["code"], "upstream_error");
        let msg = body["error"]["message"].as_str().unwrap();
        assert!(msg.contains("HTML"), "{msg}");
        assert!(msg.contains("1200"), "{msg}");
        assert!(msg.contains(&ray), "{msg} lacks {ray}");
        assert_eq!(mock.request_count(), 1, "{extra}");
    }
}

// === Circuit breaker ===

const BREAKER: &str = r#"
[retry]
max_attempts = 1
[circuit_breaker]
failure_threshold = 2
minimum_requests = 1
open_timeout = "300ms"
"#;

#[tokio::test]
async fn breaker_opens_fails_fast_and_closes_after_a_probe() {
    let (mock, gw) = setup(BREAKER).await;
    let url = gw.url("/v1/chat/completions");
    mock.push_n(2, MockResponse::status(500));

    for _ in 0..2 {
        let r = post_json(&url, &chat("gpt-4o-mini"), &[]).await;
        assert_eq!(r.status, 500, "{}", r.text());
    }
    let (entry, _) = upstream_health(&gw, "mock").await;
    assert_eq!(entry["circuit"], "open");

    let start = Instant::now();
    let r = post_json(&url, &chat("gpt-4o-mini"), &[]).await;
    assert!(start.elapsed() < Duration::from_millis(250));
    assert_eq!(r.status, 503, "{}", r.text());
    assert_eq!(r.header("x-portcullis-error"), Some("circuit_open"));
    assert_eq!(r.json()["error"]["code"], "circuit_open");
    let retry_after: u64 = r
        .header("retry-after")
        .expect("Retry-After")
        .parse()
        .unwrap();
    assert!(retry_after >= 1);
    assert_eq!(mock.request_count(), 2, "an open breaker sends nothing");

    // Anthropic callers get Anthropic's error shape.
    let r = post_json(&gw.url("/v1/messages"), &messages("claude-3-5-haiku"), &[]).await;
    assert_eq!(r.status, 503);
    assert_eq!(r.header("x-portcullis-error"), Some("circuit_open"));
    assert!(r.header("retry-after").is_some());
    let body = r.json();
    assert_eq!(body["type"], "error");
    assert_eq!(body["error"]["type"], "overloaded_error");
    assert!(body["error"]["message"].as_str().unwrap().contains("mock"));
    assert_eq!(mock.request_count(), 2);

    // The configured open_timeout must pass before the half-open probe.
    tokio::time::sleep(Duration::from_millis(350)).await;
    let r = post_json(&url, &chat("gpt-4o-mini"), &[]).await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(mock.request_count(), 3);
    let (entry, _) = upstream_health(&gw, "mock").await;
    assert_eq!(entry["circuit"], "closed");
    let r = post_json(&url, &chat("gpt-4o-mini"), &[]).await;
    assert_eq!(r.status, 200);
    assert_eq!(mock.request_count(), 4);
}

const OPEN_FOR_LONG: &str = r#"
[retry]
max_attempts = 1
[circuit_breaker]
failure_threshold = 1
minimum_requests = 1
open_timeout = "60s"
"#;

async fn open_the_breaker(mock: &MockUpstream, gw: &TestGateway) {
    mock.push(MockResponse::status(500));
    let r = post_json(&gw.url("/v1/chat/completions"), &chat("m"), &[]).await;
    assert_eq!(r.status, 500);
    let r = post_json(&gw.url("/v1/chat/completions"), &chat("m"), &[]).await;
    assert_eq!(r.status, 503, "{}", r.text());
    assert_eq!(upstream_health(gw, "mock").await.0["circuit"], "open");
}

#[tokio::test]
async fn admin_reset_from_loopback_without_admin_key() {
    let (mock, gw) = setup(OPEN_FOR_LONG).await;
    open_the_breaker(&mock, &gw).await;
    let r = send(
        Method::POST,
        &gw.url("/admin/circuit-breakers/mock/reset"),
        "",
        &[],
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.json()["circuit"], "closed");
    assert_eq!(upstream_health(&gw, "mock").await.0["circuit"], "closed");
    let r = post_json(&gw.url("/v1/chat/completions"), &chat("m"), &[]).await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(mock.request_count(), 2);

    let r = send(
        Method::POST,
        &gw.url("/admin/circuit-breakers/nope/reset"),
        "",
        &[],
    )
    .await;
    assert_eq!(r.status, 404, "{}", r.text());
}

#[tokio::test]
async fn admin_reset_with_admin_key() {
    let (mock, gw) = setup(&format!("{OPEN_FOR_LONG}\n[server]\nadmin_key = \"adm\"")).await;
    open_the_breaker(&mock, &gw).await;
    let url = gw.url("/admin/circuit-breakers/mock/reset");

    for headers in [&[][..], &[("authorization", "Bearer wrong")][..]] {
        let r = send(Method::POST, &url, "", headers).await;
        assert_eq!(r.status, 401, "{headers:?}: {}", r.text());
        assert_eq!(upstream_health(&gw, "mock").await.0["circuit"], "open");
    }
    let r = send(Method::POST, &url, "", &[("authorization", "Bearer adm")]).await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(upstream_health(&gw, "mock").await.0["circuit"], "closed");

    let r = send(
        Method::POST,
        &gw.url("/admin/circuit-breakers/nope/reset"),
        "",
        &[("authorization", "Bearer adm")],
    )
    .await;
    assert_eq!(r.status, 404, "{}", r.text());
}

// === Fallbacks ===

fn fallback_config(a: &MockUpstream, b: &MockUpstream, extra: &str) -> String {
    format!(
        r#"
[[upstreams]]
name = "a"
base_url = "{}"
[[upstreams]]
name = "b"
base_url = "{}"

[[models]]
name = "primary"
upstream = "a"
fallbacks = ["backup"]
[[models]]
name = "backup"
upstream = "b"

{extra}
"#,
        a.url(),
        b.url()
    )
}

#[tokio::test]
async fn fallback_serves_from_the_backup_when_the_primary_keeps_failing() {
    let a = MockUpstream::start().await.unwrap();
    let b = MockUpstream::start().await.unwrap();
    a.set_default(Some(MockResponse::status(503)));
    let gw = TestGateway::start(&fallback_config(&a, &b, FAST_RETRY)).await;

    let r = post_json(&gw.url("/v1/chat/completions"), &chat("primary"), &[]).await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.header("x-portcullis-upstream"), Some("b"));
    assert_eq!(a.request_count(), 3, "a got its retries first");
    assert_eq!(b.request_count(), 1);
    assert_eq!(r.header("x-portcullis-attempts"), Some("4"));
    assert_eq!(
        a.last_request().unwrap().json().unwrap()["model"],
        "primary"
    );
    assert_eq!(b.last_request().unwrap().json().unwrap()["model"], "backup");
    assert_eq!(r.json()["model"], "backup");
}

#[tokio::test]
async fn fallback_skips_an_open_breaker_without_calling_it() {
    let a = MockUpstream::start().await.unwrap();
    let b = MockUpstream::start().await.unwrap();
    a.set_default(Some(MockResponse::status(503)));
    let extra = "[retry]\nmax_attempts = 1\n[circuit_breaker]\nfailure_threshold = 2\nminimum_requests = 1\nopen_timeout = \"60s\"";
    let gw = TestGateway::start(&fallback_config(&a, &b, extra)).await;
    let url = gw.url("/v1/chat/completions");

    for i in 1..=2 {
        let r = post_json(&url, &chat("primary"), &[]).await;
        assert_eq!(r.status, 200, "{}", r.text());
        assert_eq!(r.header("x-portcullis-upstream"), Some("b"));
        assert_eq!(a.request_count(), i);
    }
    assert_eq!(upstream_health(&gw, "a").await.0["circuit"], "open");

    let r = post_json(&url, &chat("primary"), &[]).await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.header("x-portcullis-upstream"), Some("b"));
    assert_eq!(a.request_count(), 2, "a's open breaker keeps it out");
    assert_eq!(b.request_count(), 3);
    assert_eq!(b.last_request().unwrap().json().unwrap()["model"], "backup");
}

// === Cookie persistence ===

#[tokio::test]
async fn cookies_persist_across_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("cookies.json");
    let mock = MockUpstream::start().await.unwrap();
    const VALUE: &str = "persisted-clearance-5d1";
    mock.require_cookie("cf_clearance", VALUE);
    let extra = format!(
        "{FAST_RETRY}\n[cookies]\npersist_path = \"{}\"",
        path.display()
    );
    let config = mock_config(&mock.url(), &extra);

    let gw = TestGateway::start(&config).await;
    let r = post_json(&gw.url("/v1/chat/completions"), &chat("m"), &[]).await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.header("x-portcullis-attempts"), Some("2"));
    assert!(gw.shutdown().await, "drained");
    assert!(path.exists(), "shutdown saves the jars");
    assert_eq!(mock.request_count(), 2);

    // The challenge cookie is a session cookie (no Expires/Max-Age): it must survive too.
    let gw = TestGateway::start(&config).await;
    let (entry, _) = upstream_health(&gw, "mock").await;
    assert!(entry["cookies"].as_u64().unwrap() >= 1, "{entry}");
    let r = post_json(&gw.url("/v1/chat/completions"), &chat("m"), &[]).await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.header("x-portcullis-attempts"), Some("1"));
    assert_eq!(mock.request_count(), 3);
    assert_eq!(
        mock.last_request().unwrap().header("cookie"),
        Some(format!("cf_clearance={VALUE}").as_str())
    );
}
