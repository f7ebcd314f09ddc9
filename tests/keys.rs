//! Gateway keys with policy (`[[keys]]`): the key never goes upstream, its `models`, its own
//! rate limit and `max_concurrency`, and the endpoints it guards.

mod support;

use std::time::Duration;

use http::Method;
use portcullis_mock::MockUpstream;
use serde_json::json;
use support::{chat, get, mock_config, post_json, post_stream, send, TestGateway};

const KEYS: &str = r#"
[[keys]]
name = "team-a"
key = "gk-team-a"
models = ["gpt-*"]
rate_limit = { requests_per_minute = 60, burst = 3 }

[[keys]]
name = "team-b"
key = "gk-team-b"
max_concurrency = 1

[server]
api_keys = ["gk-plain"]
"#;

async fn setup() -> (MockUpstream, TestGateway) {
    let mock = MockUpstream::start().await.unwrap();
    let gw = TestGateway::start(&mock_config(&mock.url(), KEYS)).await;
    (mock, gw)
}

#[tokio::test]
async fn the_gateway_key_never_goes_upstream() {
    let (mock, gw) = setup().await;
    // Anthropic client with passthrough: gateway key in Authorization, provider key in x-api-key.
    let r = post_json(
        &gw.url("/v1/chat/completions"),
        &chat("gpt-4o"),
        &[
            ("authorization", "Bearer gk-team-a"),
            ("x-api-key", "sk-provider"),
        ],
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.text());
    let seen = mock.last_request().unwrap();
    assert!(
        seen.header("authorization").is_none(),
        "the gateway key stayed here"
    );
    assert_eq!(seen.header("x-api-key"), Some("sk-provider"));
    // The other way round.
    let r = post_json(
        &gw.url("/v1/chat/completions"),
        &chat("gpt-4o"),
        &[
            ("x-api-key", "gk-plain"),
            ("authorization", "Bearer sk-provider"),
        ],
    )
    .await;
    assert_eq!(r.status, 200);
    let seen = mock.last_request().unwrap();
    assert!(seen.header("x-api-key").is_none());
    assert_eq!(seen.header("authorization"), Some("Bearer sk-provider"));
    // No key, a wrong key.
    assert_eq!(
        post_json(&gw.url("/v1/chat/completions"), &chat("gpt-4o"), &[])
            .await
            .status,
        401
    );
    let r = post_json(
        &gw.url("/v1/chat/completions"),
        &chat("gpt-4o"),
        &[("authorization", "Bearer nope")],
    )
    .await;
    assert_eq!(r.status, 401);
    assert!(
        !r.text().contains("nope"),
        "a presented key is never echoed"
    );
}

#[tokio::test]
async fn a_key_uses_only_its_models_and_its_own_limit() {
    let (mock, gw) = setup().await;
    let auth = [("authorization", "Bearer gk-team-a")];
    let r = post_json(
        &gw.url("/v1/chat/completions"),
        &chat("claude-sonnet-4-5"),
        &auth,
    )
    .await;
    assert_eq!(r.status, 403);
    assert_eq!(r.header("x-portcullis-error"), Some("model_not_allowed"));
    assert_eq!(r.json()["error"]["type"], "permission_error");
    let r = post_json(
        &gw.url("/v1/messages"),
        &json!({"model": "claude-x", "max_tokens": 8, "messages": [{"role": "user", "content": "hi"}]}),
        &auth,
    )
    .await;
    assert_eq!(r.status, 403);
    assert_eq!(
        r.json()["error"]["type"],
        "permission_error",
        "Anthropic's shape"
    );
    assert_eq!(mock.request_count(), 0);
    // Its own burst of 3; another key is not charged.
    let mut statuses = Vec::new();
    for _ in 0..4 {
        statuses.push(
            post_json(&gw.url("/v1/chat/completions"), &chat("gpt-4o"), &auth)
                .await
                .status
                .as_u16(),
        );
    }
    assert_eq!(statuses, [200, 200, 200, 429]);
    let r = post_json(
        &gw.url("/v1/chat/completions"),
        &chat("gpt-4o"),
        &[("authorization", "Bearer gk-team-b")],
    )
    .await;
    assert_eq!(r.status, 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn max_concurrency_holds_until_the_stream_ends() {
    let (mock, gw) = setup().await;
    mock.set_chunk_delay(Duration::from_millis(150));
    let url = gw.url("/v1/chat/completions");
    let auth = [("authorization", "Bearer gk-team-b")];
    let mut body = chat("gpt-4o");
    body["stream"] = json!(true);
    let first = {
        let url = url.clone();
        let body = body.clone();
        tokio::spawn(async move {
            post_stream(&url, &body, &[("authorization", "Bearer gk-team-b")]).await
        })
    };
    assert!(support::eventually(Duration::from_secs(5), || mock.request_count() == 1).await);
    let r = post_json(&url, &chat("gpt-4o"), &auth).await;
    assert_eq!(r.status, 429, "{}", r.text());
    assert!(r.text().contains("max_concurrency"));
    assert_eq!(first.await.unwrap().status, 200);
    mock.set_chunk_delay(Duration::ZERO);
    let r = post_json(&url, &chat("gpt-4o"), &auth).await;
    assert_eq!(r.status, 200, "the slot is free once the stream ended");
}

#[tokio::test]
async fn with_keys_set_the_informational_endpoints_need_one_too() {
    let (_mock, gw) = setup().await;
    for path in ["/metrics", "/memory-routing/info", "/v1/models"] {
        assert_eq!(get(&gw.url(path), &[]).await.status, 401, "{path}");
        assert_eq!(
            get(&gw.url(path), &[("authorization", "Bearer gk-team-b")])
                .await
                .status,
            200,
            "{path}"
        );
    }
    assert_eq!(get(&gw.url("/health"), &[]).await.status, 200);
}

#[tokio::test]
async fn caller_scoped_cookies_stay_with_their_caller() {
    let mock = MockUpstream::start().await.unwrap();
    let toml = format!(
        "[[upstreams]]\nname = \"m\"\nbase_url = \"{}\"\ncookie_scope = \"caller\"\n[[models]]\nname = \"*\"\nupstream = \"m\"\n",
        mock.url()
    );
    let gw = TestGateway::start(&toml).await;
    mock.push(portcullis_mock::MockResponse::ok().set_cookie("session=caller-one; Path=/"));
    let one = [("authorization", "Bearer sk-one")];
    let two = [("authorization", "Bearer sk-two")];
    let url = gw.url("/v1/chat/completions");
    assert_eq!(post_json(&url, &chat("m"), &one).await.status, 200);
    let _ = post_json(&url, &chat("m"), &two).await;
    assert!(
        mock.last_request().unwrap().header("cookie").is_none(),
        "caller one's session cookie went out on caller two's request"
    );
    let _ = post_json(&url, &chat("m"), &one).await;
    assert_eq!(
        mock.last_request().unwrap().header("cookie"),
        Some("session=caller-one")
    );
}

#[tokio::test]
async fn a_browser_page_of_an_allowed_origin_gets_its_preflight_and_cors_headers() {
    let mock = MockUpstream::start().await.unwrap();
    let toml = mock_config(
        &mock.url(),
        &KEYS.replace(
            "api_keys = [\"gk-plain\"]",
            "api_keys = [\"gk-plain\"]\ncors_origins = [\"https://app.example.com\"]",
        ),
    );
    let gw = TestGateway::start(&toml).await;
    let origin = ("origin", "https://app.example.com");
    // The preflight carries no key: answered by the gateway, before the key check.
    let pre = send(
        Method::OPTIONS,
        &gw.url("/v1/chat/completions"),
        "",
        &[
            origin,
            ("access-control-request-method", "POST"),
            (
                "access-control-request-headers",
                "authorization,content-type,x-stainless-os",
            ),
        ],
    )
    .await;
    assert!(pre.status.is_success(), "{:?} {}", pre.status, pre.text());
    assert_eq!(
        pre.header("access-control-allow-origin"),
        Some("https://app.example.com")
    );
    assert!(pre
        .header("access-control-allow-methods")
        .is_some_and(|m| m.contains("POST")));
    assert_eq!(
        pre.header("access-control-allow-headers"),
        Some("authorization,content-type,x-stainless-os")
    );
    assert_eq!(mock.request_count(), 0, "a preflight never goes upstream");

    // The call itself, with its key: the answer names the origin and shows the gateway's
    // headers to the page.
    let r = post_json(
        &gw.url("/v1/chat/completions"),
        &chat("gpt-4o-mini"),
        &[origin, ("authorization", "Bearer gk-plain")],
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(
        r.header("access-control-allow-origin"),
        Some("https://app.example.com")
    );
    let exposed = r.header("access-control-expose-headers").unwrap_or("");
    assert!(
        exposed.contains("x-request-id") && exposed.contains("x-portcullis-error"),
        "{exposed}"
    );
    // Its errors too (a page must read why it was refused).
    let r = post_json(
        &gw.url("/v1/chat/completions"),
        &chat("gpt-4o-mini"),
        &[origin],
    )
    .await;
    assert_eq!(r.status, 401);
    assert_eq!(
        r.header("access-control-allow-origin"),
        Some("https://app.example.com")
    );

    // Another origin is not named: the browser keeps the page out.
    let other = send(
        Method::OPTIONS,
        &gw.url("/v1/chat/completions"),
        "",
        &[
            ("origin", "https://evil.example"),
            ("access-control-request-method", "POST"),
        ],
    )
    .await;
    assert!(other.header("access-control-allow-origin").is_none());
}

#[tokio::test]
async fn without_cors_origins_no_cors_headers_are_sent() {
    let (_mock, gw) = setup().await;
    let pre = send(
        Method::OPTIONS,
        &gw.url("/v1/chat/completions"),
        "",
        &[
            ("origin", "https://app.example.com"),
            ("access-control-request-method", "POST"),
        ],
    )
    .await;
    // Keys are set: the preflight is a request without one.
    assert_eq!(pre.status, 401);
    assert!(pre.header("access-control-allow-origin").is_none());
}
