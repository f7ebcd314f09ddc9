//! End to end (issue 4): rate limits, dedup and the response cache, and request validation,
//! through the real gateway on a socket in front of the mock upstream. The Redis tests start
//! their own `redis-server` on a free port.

mod support;

use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use http::Method;
use portcullis_mock::{MockResponse, MockUpstream, RedisServer};
use serde_json::json;
use support::*;

async fn setup(extra: &str) -> (MockUpstream, TestGateway) {
    let mock = MockUpstream::start().await.unwrap();
    let gw = TestGateway::start(&mock_config(&mock.url(), extra)).await;
    (mock, gw)
}

/// Unique per call and per run, so state left in Redis by earlier runs never matches.
fn nonce(tag: &str) -> String {
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_nanos();
    format!("{tag}-{}-{nanos}", std::process::id())
}

fn bearer(key: &str) -> String {
    format!("Bearer {key}")
}

// === Rate limits ===

const RATE_API_KEY: &str = r#"
[rate_limit]
enabled = true
requests_per_minute = 60
burst = 3
key = "api_key"
"#;

#[tokio::test]
async fn rate_limit_per_api_key() {
    let (mock, gw) = setup(RATE_API_KEY).await;
    let url = gw.url("/v1/chat/completions");
    let alice = bearer("sk-alice");

    for i in 0..3 {
        let r = post_json(&url, &chat("m"), &[("authorization", &alice)]).await;
        assert_eq!(r.status, 200, "request {i}: {}", r.text());
        assert_eq!(r.header("x-ratelimit-limit"), Some("3"));
        assert_eq!(
            r.header("x-ratelimit-remaining"),
            Some((2 - i).to_string().as_str())
        );
    }
    let r = post_json(&url, &chat("m"), &[("authorization", &alice)]).await;
    assert_eq!(r.status, 429, "{}", r.text());
    assert_eq!(r.header("x-portcullis-error"), Some("rate_limited"));
    assert_eq!(r.json()["error"]["code"], "rate_limited");
    assert_eq!(r.json()["error"]["type"], "rate_limit_error");
    let retry_after: u64 = r
        .header("retry-after")
        .expect("Retry-After")
        .parse()
        .unwrap();
    assert!(retry_after >= 1);
    assert_eq!(r.header("x-ratelimit-limit"), Some("3"));
    assert_eq!(r.header("x-ratelimit-remaining"), Some("0"));
    let reset: u64 = r
        .header("x-ratelimit-reset")
        .expect("reset")
        .parse()
        .unwrap();
    assert!(reset >= 1, "{reset}");
    assert_eq!(mock.request_count(), 3, "the refused request never left");

    // Another caller has its own bucket.
    let r = post_json(&url, &chat("m"), &[("authorization", &bearer("sk-bob"))]).await;
    assert_eq!(r.status, 200, "{}", r.text());
    let r = post_json(
        &url,
        &messages("claude-3-5-haiku"),
        &[("x-api-key", "sk-carol")],
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(mock.request_count(), 5);
}

#[tokio::test]
async fn rate_limit_429_on_messages_has_anthropic_shape() {
    let (mock, gw) = setup(&RATE_API_KEY.replace("burst = 3", "burst = 1")).await;
    let url = gw.url("/v1/messages");
    let h = [("x-api-key", "sk-ant-dave")];
    let r = post_json(&url, &messages("claude-3-5-haiku"), &h).await;
    assert_eq!(r.status, 200, "{}", r.text());
    let r = post_json(&url, &messages("claude-3-5-haiku"), &h).await;
    assert_eq!(r.status, 429, "{}", r.text());
    assert_eq!(r.header("x-portcullis-error"), Some("rate_limited"));
    assert!(r.header("retry-after").is_some());
    let body = r.json();
    assert_eq!(body["type"], "error");
    assert_eq!(body["error"]["type"], "rate_limit_error");
    assert!(body["error"]["message"].is_string());
    assert_eq!(mock.request_count(), 1);
}

#[tokio::test]
async fn rate_limit_per_memory_user_id() {
    let (mock, gw) = setup(
        "[rate_limit]\nenabled = true\nrequests_per_minute = 60\nburst = 1\nkey = \"user_id\"",
    )
    .await;
    let url = gw.url("/v1/chat/completions");
    // The same API key for everyone: only the user id separates them.
    let alice = [
        ("authorization", "Bearer shared"),
        ("x-memory-user-id", "alice"),
    ];
    let bob = [
        ("authorization", "Bearer shared"),
        ("x-memory-user-id", "bob"),
    ];
    assert_eq!(post_json(&url, &chat("m"), &alice).await.status, 200);
    let r = post_json(&url, &chat("m"), &alice).await;
    assert_eq!(r.status, 429, "{}", r.text());
    let r = post_json(&url, &chat("m"), &bob).await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(post_json(&url, &chat("m"), &bob).await.status, 429);
    assert_eq!(mock.request_count(), 2);
    let users: Vec<String> = mock
        .requests()
        .iter()
        .map(|r| r.header("x-sm-user-id").unwrap_or("").to_string())
        .collect();
    assert_eq!(users, ["alice", "bob"]);
}

#[tokio::test]
async fn rate_limit_queue_waits_for_a_slot_instead_of_429() {
    let (mock, gw) = setup(
        "[rate_limit]\nenabled = true\nrequests_per_minute = 600\nburst = 1\nqueue_timeout = \"2s\"",
    )
    .await;
    let url = gw.url("/v1/chat/completions");
    let h = [("authorization", "Bearer sk-queue")];
    assert_eq!(post_json(&url, &chat("m"), &h).await.status, 200);
    let start = Instant::now();
    let r = post_json(&url, &chat("m"), &h).await;
    let waited = start.elapsed();
    assert_eq!(r.status, 200, "{}", r.text());
    // One slot every 100ms; the first request itself took a little of that.
    assert!(waited >= Duration::from_millis(50), "{waited:?}");
    assert!(waited < Duration::from_secs(1), "{waited:?}");
    assert_eq!(mock.request_count(), 2);
}

#[tokio::test]
async fn rate_limit_in_redis_is_shared_by_two_gateways() {
    let redis = RedisServer::start();
    let mock = MockUpstream::start().await.unwrap();
    let config = mock_config(
        &mock.url(),
        &format!(
            "[rate_limit]\nenabled = true\nrequests_per_minute = 60\nburst = 2\nkey = \"api_key\"\n\
             [state]\nbackend = \"redis\"\nredis_url = \"{}\"",
            redis.url()
        ),
    );
    let gw1 = TestGateway::start(&config).await;
    let gw2 = TestGateway::start(&config).await;
    let key = bearer(&nonce("sk-redis-rl"));
    let h = [("authorization", key.as_str())];

    let r = post_json(&gw1.url("/v1/chat/completions"), &chat("m"), &h).await;
    assert_eq!(r.status, 200, "{}", r.text());
    let r = post_json(&gw2.url("/v1/chat/completions"), &chat("m"), &h).await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.header("x-ratelimit-remaining"), Some("0"));
    for gw in [&gw1, &gw2] {
        let r = post_json(&gw.url("/v1/chat/completions"), &chat("m"), &h).await;
        assert_eq!(r.status, 429, "{}", r.text());
        assert_eq!(r.header("x-portcullis-error"), Some("rate_limited"));
    }
    assert_eq!(mock.request_count(), 2);
    // Another key is untouched.
    let other = bearer(&nonce("sk-redis-rl-other"));
    let r = post_json(
        &gw2.url("/v1/chat/completions"),
        &chat("m"),
        &[("authorization", other.as_str())],
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.text());
}

// === Dedup and cache ===

/// Fire `n` identical requests at once.
async fn concurrent(
    url: &str,
    body: &serde_json::Value,
    headers: &[(&str, &str)],
    n: usize,
) -> Vec<Resp> {
    let tasks: Vec<_> = (0..n)
        .map(|_| {
            let url = url.to_string();
            let body = body.clone();
            let headers: Vec<(String, String)> = headers
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect();
            tokio::spawn(async move {
                let h: Vec<(&str, &str)> = headers
                    .iter()
                    .map(|(k, v)| (k.as_str(), v.as_str()))
                    .collect();
                post_json(&url, &body, &h).await
            })
        })
        .collect();
    let mut out = Vec::new();
    for t in tasks {
        out.push(t.await.unwrap());
    }
    out
}

fn cache_header(r: &Resp) -> String {
    r.header("x-portcullis-cache")
        .unwrap_or("<none>")
        .to_string()
}

#[tokio::test]
async fn identical_concurrent_requests_share_one_upstream_call() {
    let (mock, gw) = setup("[dedup]\nenabled = true").await;
    mock.set_default(Some(MockResponse::ok().delay(Duration::from_millis(300))));
    let url = gw.url("/v1/chat/completions");
    let rs = concurrent(&url, &chat("m"), &[("authorization", "Bearer sk-d")], 8).await;

    assert_eq!(mock.request_count(), 1);
    let mut kinds: Vec<String> = rs.iter().map(cache_header).collect();
    kinds.sort();
    let mut expected = vec!["coalesced".to_string(); 7];
    expected.push("miss".into());
    expected.sort();
    assert_eq!(kinds, expected);
    for r in &rs {
        assert_eq!(r.status, 200, "{}", r.text());
        assert_eq!(r.body, rs[0].body, "every caller gets the same answer");
    }
    assert_eq!(rs[0].json()["object"], "chat.completion");
}

#[tokio::test]
async fn dedup_never_shares_between_callers() {
    let (mock, gw) = setup("[dedup]\nenabled = true").await;
    mock.set_default(Some(MockResponse::ok().delay(Duration::from_millis(300))));
    let url = gw.url("/v1/chat/completions");

    let a = {
        let url = url.clone();
        tokio::spawn(async move {
            post_json(&url, &chat("m"), &[("authorization", "Bearer sk-one")]).await
        })
    };
    let b = post_json(&url, &chat("m"), &[("authorization", "Bearer sk-two")]).await;
    let a = a.await.unwrap();
    assert_eq!((a.status.as_u16(), b.status.as_u16()), (200, 200));
    assert_eq!(
        (cache_header(&a).as_str(), cache_header(&b).as_str()),
        ("miss", "miss")
    );
    assert_eq!(mock.request_count(), 2, "different API keys");

    let a = {
        let url = url.clone();
        tokio::spawn(async move {
            post_json(
                &url,
                &chat("m"),
                &[
                    ("authorization", "Bearer sk-one"),
                    ("x-memory-user-id", "alice"),
                ],
            )
            .await
        })
    };
    let b = post_json(
        &url,
        &chat("m"),
        &[
            ("authorization", "Bearer sk-one"),
            ("x-memory-user-id", "bob"),
        ],
    )
    .await;
    let a = a.await.unwrap();
    assert_eq!(
        (cache_header(&a).as_str(), cache_header(&b).as_str()),
        ("miss", "miss")
    );
    assert_eq!(mock.request_count(), 4, "different memory user ids");
}

#[tokio::test]
async fn cache_replays_until_the_ttl_passes() {
    let (mock, gw) = setup("[dedup]\nenabled = true\ncache_ttl = \"1s\"").await;
    let url = gw.url("/v1/chat/completions");
    let h = [("authorization", "Bearer sk-cache")];

    let first = post_json(&url, &chat("m"), &h).await;
    assert_eq!(first.status, 200);
    assert_eq!(cache_header(&first), "miss");
    let second = post_json(&url, &chat("m"), &h).await;
    assert_eq!(second.status, 200);
    assert_eq!(cache_header(&second), "hit");
    assert_eq!(second.body, first.body);
    assert_eq!(mock.request_count(), 1);

    // The configured TTL has to pass; nothing to script instead.
    tokio::time::sleep(Duration::from_millis(1200)).await;
    let third = post_json(&url, &chat("m"), &h).await;
    assert_eq!(cache_header(&third), "miss");
    assert_eq!(mock.request_count(), 2);
    assert_ne!(third.body, first.body, "a fresh completion (new id)");
}

#[tokio::test]
async fn no_cache_and_streams_bypass() {
    let (mock, gw) = setup("[dedup]\nenabled = true\ncache_ttl = \"60s\"").await;
    let url = gw.url("/v1/chat/completions");
    let h = [("authorization", "Bearer sk-bypass")];
    assert_eq!(cache_header(&post_json(&url, &chat("m"), &h).await), "miss");
    assert_eq!(mock.request_count(), 1);

    let r = post_json(
        &url,
        &chat("m"),
        &[
            ("authorization", "Bearer sk-bypass"),
            ("cache-control", "no-cache"),
        ],
    )
    .await;
    assert_eq!(r.status, 200);
    assert_eq!(cache_header(&r), "bypass");
    assert_eq!(mock.request_count(), 2);

    let mut body = chat("m");
    body["stream"] = json!(true);
    for i in 0..2 {
        let s = post_stream(&url, &body, &h).await;
        assert_eq!(s.status, 200);
        assert_eq!(
            s.headers
                .get("x-portcullis-cache")
                .and_then(|v| v.to_str().ok()),
            Some("bypass")
        );
        assert!(s.text().contains("data: [DONE]"), "{}", s.text());
        assert_eq!(mock.request_count(), 3 + i);
    }
}

#[tokio::test]
async fn cache_in_redis_is_shared_by_two_gateways() {
    let redis = RedisServer::start();
    let mock = MockUpstream::start().await.unwrap();
    let config = mock_config(
        &mock.url(),
        &format!(
            "[dedup]\nenabled = true\ncache_ttl = \"30s\"\n\
             [state]\nbackend = \"redis\"\nredis_url = \"{}\"",
            redis.url()
        ),
    );
    let gw1 = TestGateway::start(&config).await;
    let gw2 = TestGateway::start(&config).await;
    let body = json!({
        "model": "m",
        "messages": [{"role": "user", "content": nonce("redis-cache")}]
    });
    let h = [("authorization", "Bearer sk-redis-cache")];

    let r1 = post_json(&gw1.url("/v1/chat/completions"), &body, &h).await;
    assert_eq!(r1.status, 200, "{}", r1.text());
    assert_eq!(cache_header(&r1), "miss");
    let r2 = post_json(&gw2.url("/v1/chat/completions"), &body, &h).await;
    assert_eq!(r2.status, 200, "{}", r2.text());
    assert_eq!(cache_header(&r2), "hit");
    assert_eq!(r2.body, r1.body);
    assert_eq!(mock.request_count(), 1);

    // Another caller is not served the cached answer.
    let r3 = post_json(
        &gw2.url("/v1/chat/completions"),
        &body,
        &[("authorization", "Bearer sk-redis-cache-2")],
    )
    .await;
    assert_eq!(cache_header(&r3), "miss");
    assert_eq!(mock.request_count(), 2);
}

#[tokio::test]
async fn the_key_is_the_same_whether_validation_or_the_dedup_layer_writes_the_canonical_form() {
    // Two gateways, one Redis: at `moderate` the validation layer writes the body's canonical
    // form from its tree for the dedup key; at `lenient` it builds no tree, and the dedup
    // layer walks the body itself. A request cached by one, spelled another way (member
    // order, whitespace, `\/`, `\u` escapes, a float as written), is a hit on the other.
    let redis = RedisServer::start();
    let mock = MockUpstream::start().await.unwrap();
    let config = |level: &str| {
        mock_config(
            &mock.url(),
            &format!(
                "[dedup]\nenabled = true\ncache_ttl = \"30s\"\n\
                 [state]\nbackend = \"redis\"\nredis_url = \"{}\"\n\
                 [validation]\nlevel = \"{level}\"",
                redis.url()
            ),
        )
    };
    let tree = TestGateway::start(&config("moderate")).await;
    let walk = TestGateway::start(&config("lenient")).await;
    let id = nonce("canonical");
    let one = format!(
        r#"{{ "model": "m", "temperature": 0.50, "messages": [ {{ "role": "user",
            "content": "{id} a\/b \"q\"\n", "name": "\u00e9" }} ] }}"#
    );
    let other = format!(
        r#"{{"messages":[{{"name":"é","content":"{id} a/b \"q\"\n","role":"user"}}],"model":"m","temperature":0.5}}"#
    );
    let h = [
        ("content-type", "application/json"),
        ("authorization", "Bearer sk-canonical"),
    ];
    let url = |gw: &TestGateway| gw.url("/v1/chat/completions");

    let first = send(Method::POST, &url(&tree), one.clone(), &h).await;
    assert_eq!(first.status, 200, "{}", first.text());
    assert_eq!(cache_header(&first), "miss");
    let second = send(Method::POST, &url(&walk), other.clone(), &h).await;
    assert_eq!(
        (second.status.as_u16(), cache_header(&second).as_str()),
        (200, "hit")
    );
    assert_eq!(second.body, first.body);
    // And the other way round, with a body of its own.
    let id2 = nonce("canonical-2");
    let (one, other) = (one.replace(&id, &id2), other.replace(&id, &id2));
    assert_eq!(
        cache_header(&send(Method::POST, &url(&walk), one, &h).await),
        "miss"
    );
    assert_eq!(
        cache_header(&send(Method::POST, &url(&tree), other, &h).await),
        "hit"
    );
    assert_eq!(mock.request_count(), 2);
}

// === Validation ===

/// Posts `body` to `path` and expects a 400 naming `field`, in the route's error shape, with
/// nothing sent upstream.
async fn rejected(
    gw: &TestGateway,
    mock: &MockUpstream,
    path: &str,
    body: serde_json::Value,
    field: &str,
) {
    let r = post_json(&gw.url(path), &body, &[]).await;
    assert_eq!(r.status, 400, "{body}: {}", r.text());
    assert_eq!(r.header("x-portcullis-error"), Some("invalid_request"));
    let v = r.json();
    let msg = if path == "/v1/messages" {
        assert_eq!(v["type"], "error", "{v}");
        assert_eq!(v["error"]["type"], "invalid_request_error");
        v["error"]["message"].as_str().unwrap().to_string()
    } else {
        assert_eq!(v["error"]["code"], "invalid_request", "{v}");
        assert_eq!(v["error"]["type"], "invalid_request_error");
        v["error"]["message"].as_str().unwrap().to_string()
    };
    assert!(msg.contains(field), "{msg:?} does not name {field}");
    assert_eq!(mock.request_count(), 0, "{body} reached the upstream");
}

#[tokio::test]
async fn moderate_validation_rejects_before_the_upstream() {
    let (mock, gw) = setup("").await;
    let chat_path = "/v1/chat/completions";
    rejected(&gw, &mock, chat_path, json!({"model": "m"}), "messages").await;
    rejected(
        &gw,
        &mock,
        chat_path,
        json!({"model": "m", "messages": [
            {"role": "user", "content": "hi"},
            {"role": "robot", "content": 5}
        ]}),
        "messages[1].content",
    )
    .await;
    rejected(
        &gw,
        &mock,
        chat_path,
        json!({"model": "m", "messages": [{"role": "user", "content": "hi"}], "temperature": "hot"}),
        "temperature",
    )
    .await;
    rejected(
        &gw,
        &mock,
        "/v1/messages",
        json!({"model": "claude-3-5-haiku", "messages": [{"role": "user", "content": "hi"}]}),
        "max_tokens",
    )
    .await;
    rejected(
        &gw,
        &mock,
        "/v1/embeddings",
        json!({"model": "text-embedding-3-small"}),
        "input",
    )
    .await;
    // Unknown fields are fine at this level.
    let mut body = chat("m");
    body["x_custom_field"] = json!(1);
    let r = post_json(&gw.url(chat_path), &body, &[]).await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(mock.request_count(), 1);
}

#[tokio::test]
async fn strict_validation_names_unknown_fields() {
    let (mock, gw) = setup("[validation]\nlevel = \"strict\"").await;
    let mut body = chat("m");
    body["frobnicate_level"] = json!(11);
    rejected(&gw, &mock, "/v1/chat/completions", body, "frobnicate_level").await;
    let r = post_json(&gw.url("/v1/chat/completions"), &chat("m"), &[]).await;
    assert_eq!(r.status, 200, "{}", r.text());
}

#[tokio::test]
async fn lenient_validation_lets_a_chat_without_messages_through() {
    let (mock, gw) = setup("[validation]\nlevel = \"lenient\"").await;
    let r = post_json(&gw.url("/v1/chat/completions"), &json!({"model": "m"}), &[]).await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(mock.request_count(), 1);
    assert_eq!(
        mock.last_request().unwrap().json().unwrap(),
        json!({"model": "m"})
    );
    // Even lenient needs a model.
    let r = post_json(
        &gw.url("/v1/chat/completions"),
        &json!({"messages": []}),
        &[],
    )
    .await;
    assert_eq!(r.status, 400, "{}", r.text());
    assert_eq!(mock.request_count(), 1);
}
