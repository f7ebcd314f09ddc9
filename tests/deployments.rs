//! End to end (issue 11): one model's deployments spread by weight, failover between them
//! before the fallbacks, open breakers and failing health checks taking a deployment out of
//! rotation, and provider-key rotation, against several mock upstreams.

mod support;

use std::time::Duration;

use portcullis_mock::{MockResponse, MockUpstream};
use support::*;

const NO_RETRY: &str = "[retry]\nenabled = false\n";

fn upstream(name: &str, url: &str, extra: &str) -> String {
    format!("[[upstreams]]\nname = \"{name}\"\nbase_url = \"{url}\"\nauth = \"none\"\n{extra}\n")
}

fn deployment(name: &str, upstream: &str, extra: &str) -> String {
    format!("[[models]]\nname = \"{name}\"\nupstream = \"{upstream}\"\n{extra}\n")
}

/// Chat requests (not health checks) the mock received.
fn chats(m: &MockUpstream) -> usize {
    m.requests()
        .iter()
        .filter(|r| r.path == "/v1/chat/completions")
        .count()
}

async fn mocks(n: usize) -> Vec<MockUpstream> {
    let mut v = Vec::new();
    for _ in 0..n {
        v.push(MockUpstream::start().await.unwrap());
    }
    v
}

async fn ask(gw: &TestGateway, model: &str) -> Resp {
    post_json(&gw.url("/v1/chat/completions"), &chat(model), &[]).await
}

#[tokio::test]
async fn requests_are_split_by_weight() {
    let m = mocks(3).await;
    let mut toml = String::new();
    for (i, (name, w)) in [("a", 1), ("b", 2), ("c", 3)].into_iter().enumerate() {
        toml += &upstream(name, &m[i].url(), "");
        toml += &deployment("gpt-x", name, &format!("weight = {w}"));
    }
    let gw = TestGateway::start(&toml).await;
    let mut seen = std::collections::HashMap::<String, usize>::new();
    for _ in 0..1000 {
        let r = ask(&gw, "gpt-x").await;
        assert_eq!(r.status, 200, "{}", r.text());
        *seen
            .entry(r.header("x-portcullis-upstream").unwrap().to_string())
            .or_default() += 1;
    }
    for (i, (name, w)) in [("a", 1.0), ("b", 2.0), ("c", 3.0)].into_iter().enumerate() {
        let expected = 1000.0 * w / 6.0;
        let got = seen.get(name).copied().unwrap_or(0) as f64;
        assert!(
            (got - expected).abs() <= expected * 0.1,
            "{name}: {got} requests, expected {expected} ± 10 %: {seen:?}"
        );
        assert_eq!(
            chats(&m[i]) as f64,
            got,
            "x-portcullis-upstream names who answered"
        );
    }
}

#[tokio::test]
async fn smooth_split_even_over_a_short_window() {
    let m = mocks(2).await;
    let toml = upstream("a", &m[0].url(), "")
        + &upstream("b", &m[1].url(), "")
        + &deployment("gpt-x", "a", "weight = 3")
        + &deployment("gpt-x", "b", "weight = 1");
    let gw = TestGateway::start(&toml).await;
    let mut order = String::new();
    for _ in 0..8 {
        order += ask(&gw, "gpt-x")
            .await
            .header("x-portcullis-upstream")
            .unwrap();
    }
    assert_eq!(order, "aabaaaba");
}

#[tokio::test]
async fn a_failed_deployment_fails_over_to_another_before_the_fallbacks() {
    let m = mocks(3).await;
    let toml = upstream("a", &m[0].url(), "")
        + &upstream("b", &m[1].url(), "")
        + &upstream("c", &m[2].url(), "")
        + &deployment("gpt-x", "a", "fallbacks = [\"backup\"]")
        + &deployment("gpt-x", "b", "")
        + &deployment("backup", "c", "")
        + NO_RETRY
        + "[circuit_breaker]\nenabled = false\n";
    let gw = TestGateway::start(&toml).await;
    // Whichever deployment is picked first fails; the other one answers, the fallback is
    // never asked.
    m[0].set_default(Some(MockResponse::status(503)));
    for _ in 0..4 {
        let r = ask(&gw, "gpt-x").await;
        assert_eq!(r.status, 200, "{}", r.text());
        assert_eq!(r.header("x-portcullis-upstream"), Some("b"));
    }
    assert_eq!(
        chats(&m[2]),
        0,
        "the fallback is not tried while a deployment serves"
    );
    assert!(chats(&m[0]) >= 1, "a was tried");
    // Connect errors fail over too.
    let dead = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        format!("http://{}", l.local_addr().unwrap())
    };
    let toml = upstream("a", &dead, "")
        + &upstream("b", &m[1].url(), "")
        + &upstream("c", &m[2].url(), "")
        + &deployment("gpt-x", "a", "weight = 5\nfallbacks = [\"backup\"]")
        + &deployment("gpt-x", "b", "")
        + &deployment("backup", "c", "")
        + NO_RETRY;
    let gw = TestGateway::start(&toml).await;
    let r = ask(&gw, "gpt-x").await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.header("x-portcullis-upstream"), Some("b"));
    assert_eq!(r.header("x-portcullis-attempts"), Some("2"));

    // Every deployment failing: now the fallback serves.
    m[1].set_default(Some(MockResponse::status(503)));
    let r = ask(&gw, "gpt-x").await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.header("x-portcullis-upstream"), Some("c"));
    assert_eq!(
        r.json()["model"],
        "backup",
        "the fallback gets its own name"
    );
}

#[tokio::test]
async fn a_deployment_with_an_open_breaker_is_skipped() {
    let m = mocks(2).await;
    let toml = upstream("a", &m[0].url(), "")
        + &upstream("b", &m[1].url(), "")
        + &deployment("gpt-x", "a", "")
        + &deployment("gpt-x", "b", "")
        + NO_RETRY
        + "[circuit_breaker]\nfailure_threshold = 1\nminimum_requests = 1\nopen_timeout = \"60s\"\n";
    let gw = TestGateway::start(&toml).await;
    m[0].push(MockResponse::status(503));
    // a is picked first, fails (its breaker opens), b answers.
    let r = ask(&gw, "gpt-x").await;
    assert_eq!(r.header("x-portcullis-upstream"), Some("b"));
    assert_eq!(chats(&m[0]), 1);
    for _ in 0..10 {
        let r = ask(&gw, "gpt-x").await;
        assert_eq!(r.status, 200, "{}", r.text());
        assert_eq!(r.header("x-portcullis-upstream"), Some("b"));
        assert_eq!(
            r.header("x-portcullis-attempts"),
            Some("1"),
            "the open deployment is not even asked"
        );
    }
    assert_eq!(chats(&m[0]), 1, "nothing more went to the open breaker");

    // Every deployment out: they are still tried rather than failing untried.
    let toml = upstream("a", &m[0].url(), "")
        + &deployment("solo", "a", "")
        + NO_RETRY
        + "[circuit_breaker]\nfailure_threshold = 1\nminimum_requests = 1\nopen_timeout = \"60s\"\n";
    let gw = TestGateway::start(&toml).await;
    m[0].push(MockResponse::status(503));
    assert_eq!(ask(&gw, "solo").await.status, 503);
    let r = ask(&gw, "solo").await;
    assert_eq!(r.status, 503);
    assert_eq!(r.header("x-portcullis-error"), Some("circuit_open"));
}

#[tokio::test]
async fn a_failing_health_check_takes_a_deployment_out_until_it_passes() {
    let m = mocks(2).await;
    let check = "health_check = { path = \"/v1/models\", interval = \"50ms\" }";
    let toml = upstream("a", &m[0].url(), check)
        + &upstream("b", &m[1].url(), "")
        + &deployment("gpt-x", "a", "")
        + &deployment("gpt-x", "b", "")
        + NO_RETRY;
    let gw = TestGateway::start(&toml).await;
    let health = |gw: &TestGateway| {
        gw.state
            .upstreams
            .iter()
            .find(|u| u.name == "a")
            .and_then(|u| u.health.as_ref())
            .map(|h| h.get().as_str())
    };
    assert!(
        eventually(Duration::from_secs(5), || health(&gw) == Some("passing")).await,
        "{:?}",
        health(&gw)
    );
    let r = get(&gw.url("/health/upstreams"), &[]).await;
    let ups = r.json()["upstreams"].clone();
    assert_eq!(ups[0]["health"], "passing", "{ups}");
    assert_eq!(ups[1]["health"], "unchecked", "{ups}");

    // The health path fails: a leaves the rotation.
    m[0].set_default(Some(MockResponse::status(503)));
    assert!(eventually(Duration::from_secs(5), || health(&gw) == Some("failing")).await);
    let before = chats(&m[0]);
    for _ in 0..6 {
        let r = ask(&gw, "gpt-x").await;
        assert_eq!(r.header("x-portcullis-upstream"), Some("b"), "{}", r.text());
    }
    assert_eq!(
        chats(&m[0]),
        before,
        "no request went to the failing deployment"
    );
    let r = get(&gw.url("/health/upstreams"), &[]).await;
    assert_eq!(r.json()["upstreams"][0]["health"], "failing");
    let metrics = get(&gw.url("/metrics"), &[]).await.text();
    assert!(
        metrics
            .lines()
            .any(|l| l.starts_with("portcullis_upstream_health{upstream=\"a\"} 0")),
        "{metrics}"
    );

    // It passes again: back in rotation.
    m[0].set_default(None);
    assert!(eventually(Duration::from_secs(5), || health(&gw) == Some("passing")).await);
    let mut names = Vec::new();
    for _ in 0..4 {
        names.push(
            ask(&gw, "gpt-x")
                .await
                .header("x-portcullis-upstream")
                .unwrap()
                .to_string(),
        );
    }
    assert!(names.iter().any(|n| n == "a"), "{names:?}");
    assert!(
        m[0].requests()
            .iter()
            .any(|r| r.path == "/v1/models" && r.method == http::Method::GET),
        "the check GETs its path"
    );
}

#[tokio::test]
async fn provider_keys_take_turns_and_a_refused_key_rests() {
    let m = mocks(1).await;
    let toml = format!(
        "[[upstreams]]\nname = \"u\"\nbase_url = \"{}\"\napi_keys = [\"sk-zero\", \"sk-one\", \"sk-two\"]\n\
         health_check = {{ path = \"/v1/models\", interval = \"1h\" }}\n{}{NO_RETRY}",
        m[0].url(),
        deployment("*", "u", "")
    );
    let gw = TestGateway::start(&toml).await;
    let auths = |m: &MockUpstream| -> Vec<String> {
        m.requests()
            .iter()
            .filter(|r| r.path == "/v1/chat/completions")
            .map(|r| r.header("authorization").unwrap_or("").to_string())
            .collect()
    };
    // The health check sends a key too (with its credentials).
    assert!(
        eventually(Duration::from_secs(5), || m[0]
            .requests()
            .iter()
            .any(|r| r.path == "/v1/models"))
        .await
    );
    let check = m[0]
        .requests()
        .into_iter()
        .find(|r| r.path == "/v1/models")
        .unwrap();
    assert!(check
        .header("authorization")
        .unwrap()
        .starts_with("Bearer sk-"));
    m[0].clear();

    for _ in 0..3 {
        assert_eq!(ask(&gw, "gpt-4o").await.status, 200);
    }
    let mut used = auths(&m[0]);
    used.sort();
    assert_eq!(
        used,
        ["Bearer sk-one", "Bearer sk-two", "Bearer sk-zero"],
        "in turn"
    );

    // The next key is answered 429: it rests (Retry-After 120) while the others serve.
    m[0].clear();
    m[0].push(MockResponse::status(429).retry_after("120"));
    let r = ask(&gw, "gpt-4o").await;
    assert_eq!(r.status, 429);
    let resting = auths(&m[0])[0].clone();
    let r = get(&gw.url("/health/upstreams"), &[]).await;
    assert_eq!(r.json()["upstreams"][0]["keys"], 3);
    assert_eq!(r.json()["upstreams"][0]["keys_resting"], 1);
    assert!(!r.text().contains("sk-"), "never a key: {}", r.text());
    m[0].clear();
    for _ in 0..6 {
        assert_eq!(ask(&gw, "gpt-4o").await.status, 200);
    }
    let used = auths(&m[0]);
    assert_eq!(used.len(), 6);
    assert!(!used.contains(&resting), "{resting} rests: {used:?}");
}

#[tokio::test]
async fn a_retry_after_a_429_goes_out_with_the_next_key() {
    let m = mocks(1).await;
    let toml = format!(
        "[[upstreams]]\nname = \"u\"\nbase_url = \"{}\"\nauth = \"x-api-key\"\napi_keys = [\"k0\", \"k1\"]\n{}\
         [retry]\nbase_delay = \"1ms\"\nmax_delay = \"2ms\"\n",
        m[0].url(),
        deployment("*", "u", "")
    );
    let gw = TestGateway::start(&toml).await;
    m[0].push(MockResponse::status(429));
    let r = ask(&gw, "claude-x").await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.header("x-portcullis-attempts"), Some("2"));
    let keys: Vec<_> = m[0]
        .requests()
        .iter()
        .map(|r| r.header("x-api-key").unwrap_or("").to_string())
        .collect();
    assert_eq!(keys, ["k0", "k1"]);
    assert!(m[0].requests()[0].header("authorization").is_none());
}

#[tokio::test]
async fn deployments_and_keys_pass_check() {
    let toml = r#"
[[upstreams]]
name = "a"
base_url = "http://127.0.0.1:1"
api_keys = ["k1", "k2"]
health_check = { path = "/health", interval = "10s" }

[[upstreams]]
name = "b"
base_url = "http://127.0.0.1:2"

[[models]]
name = "m"
upstream = "a"
weight = 3
fallbacks = ["n"]

[[models]]
name = "m"
upstream = "b"

[[models]]
name = "n"
upstream = "b"
"#;
    let loaded = portcullis::config::Config::from_toml(toml).unwrap();
    assert_eq!(loaded.config.upstreams[0].auth_mode().as_str(), "bearer");
    let bad = r#"
[[upstreams]]
name = "a"
base_url = "http://127.0.0.1:1"
api_key = "x"
api_keys = ["k1"]
health_check = { path = "/h", interval = "0s" }

[[upstreams]]
name = "p"
base_url = "http://127.0.0.1:1"
auth = "passthrough"
api_keys = ["k1"]

[[models]]
name = "m"
upstream = "a"
weight = 0
fallbacks = ["n"]

[[models]]
name = "m"
upstream = "a"
fallbacks = ["o"]

[[models]]
name = "n"
upstream = "a"

[[models]]
name = "o"
upstream = "a"
"#;
    let err = portcullis::config::Config::from_toml(bad)
        .unwrap_err()
        .to_string();
    for path in [
        "upstreams[0].api_keys",
        "upstreams[0].health_check.interval",
        "upstreams[1].api_keys",
        "models[0].weight",
        "models[1].fallbacks",
    ] {
        assert!(err.contains(path), "{path} missing from: {err}");
    }
}
