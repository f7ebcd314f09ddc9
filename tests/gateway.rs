//! End to end over real sockets: the gateway (`stack::build` + `server::serve`) in front of
//! the mock upstream.

mod support;

use std::time::{Duration, Instant};

use http::Method;
use portcullis_mock::{MockResponse, MockUpstream};
use serde_json::json;
use support::*;

async fn setup(extra: &str) -> (MockUpstream, TestGateway) {
    let mock = MockUpstream::start().await.unwrap();
    let gw = TestGateway::start(&mock_config(&mock.url(), extra)).await;
    (mock, gw)
}

#[tokio::test]
async fn every_route_reaches_the_upstream() {
    let (mock, gw) = setup("").await;

    let r = post_json(&gw.url("/v1/chat/completions"), &chat("gpt-4o-mini"), &[]).await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.json()["object"], "chat.completion");
    assert_eq!(r.json()["model"], "gpt-4o-mini");
    assert_eq!(r.header("x-portcullis-upstream"), Some("mock"));
    assert_eq!(r.header("x-portcullis-attempts"), Some("1"));
    // Dedup is off by default: every answer is a cache bypass.
    assert_eq!(r.header("x-portcullis-cache"), Some("bypass"));
    assert!(r.header("x-request-id").is_some_and(|v| !v.is_empty()));

    let r = post_json(
        &gw.url("/v1/completions"),
        &json!({"model": "gpt-3.5-turbo-instruct", "prompt": "Say hi"}),
        &[],
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.json()["object"], "text_completion");

    let r = post_json(
        &gw.url("/v1/embeddings"),
        &json!({"model": "text-embedding-3-small", "input": ["a", "b"]}),
        &[],
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.json()["data"].as_array().unwrap().len(), 2);

    let r = post_json(&gw.url("/v1/messages"), &messages("claude-3-5-haiku"), &[]).await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.json()["type"], "message");

    let paths: Vec<String> = mock.requests().iter().map(|r| r.path.clone()).collect();
    assert_eq!(
        paths,
        [
            "/v1/chat/completions",
            "/v1/completions",
            "/v1/embeddings",
            "/v1/messages"
        ]
    );
}

#[tokio::test]
async fn other_methods_on_the_proxied_paths_pass_through() {
    // POSTs to these paths go around the router (App in src/stack.rs; their request ids are
    // held by `request_id_is_kept_or_generated`); any other method is passed through as it
    // came, like every other `/v1` path: OpenAI serves stored chat completions on the same
    // path (`GET /v1/chat/completions` lists them).
    let (mock, gw) = setup("").await;
    let r = get(&gw.url("/v1/chat/completions?model=gpt-4o&limit=2"), &[]).await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.json()["object"], "list");
    assert_eq!(r.json()["data"][0]["model"], "gpt-4o");
    assert_eq!(r.header("x-portcullis-upstream"), Some("mock"));
    assert_eq!(r.header("allow"), None, "not a 405: no Allow header");
    assert!(r.header("x-request-id").is_some_and(|v| !v.is_empty()));
    let r = send(
        Method::DELETE,
        &gw.url("/v1/chat/completions/chatcmpl-1"),
        "",
        &[],
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.json()["object"], "chat.completion.deleted");
    // The upstream's own 405 (a method no API takes there) comes back as it sent it.
    let r = send(Method::DELETE, &gw.url("/v1/messages"), "", &[]).await;
    assert_eq!(r.status, 405, "{}", r.text());
    assert_eq!(r.json()["error"]["code"], "method_not_allowed");
    let seen: Vec<(Method, String)> = mock
        .requests()
        .iter()
        .map(|r| (r.method.clone(), r.path.clone()))
        .collect();
    assert_eq!(
        seen,
        [
            (
                Method::GET,
                "/v1/chat/completions?model=gpt-4o&limit=2".into()
            ),
            (Method::DELETE, "/v1/chat/completions/chatcmpl-1".into()),
            (Method::DELETE, "/v1/messages".into()),
        ]
    );
}

#[tokio::test]
async fn a_method_a_gateway_route_does_not_take_is_a_json_405() {
    let (mock, gw) = setup("").await;
    for (path, shape_anthropic) in [("/health", false), ("/v1/models", false)] {
        let r = send(Method::DELETE, &gw.url(path), "", &[]).await;
        assert_eq!(r.status, 405, "DELETE {path}: {}", r.text());
        assert_eq!(r.header("allow"), Some("GET,HEAD"), "DELETE {path}");
        assert_eq!(r.header("x-portcullis-error"), Some("method_not_allowed"));
        let json = r.json();
        assert_eq!(json["error"]["code"], "method_not_allowed", "{json}");
        assert_eq!(json["type"].is_string(), shape_anthropic, "{json}");
        assert!(
            json["error"]["message"].as_str().unwrap().contains(path),
            "{json}"
        );
    }
    assert!(mock.requests().is_empty());
}

#[tokio::test]
async fn models_endpoint_lists_configured_models() {
    let (_mock, gw) = setup(
        r#"
[[models]]
name = "gpt-4o-mini"
upstream = "mock"
"#,
    )
    .await;
    let r = get(&gw.url("/v1/models"), &[]).await;
    assert_eq!(r.status, 200);
    let ids: Vec<&str> = r.json()["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["id"].as_str().unwrap().to_string().leak() as &str)
        .collect();
    assert!(ids.contains(&"gpt-4o-mini"), "{ids:?}");
    assert_eq!(r.json()["object"], "list");
}

#[tokio::test]
async fn model_rewrite_and_prefix_routing() {
    let mock_a = MockUpstream::start().await.unwrap();
    let mock_b = MockUpstream::start().await.unwrap();
    let toml = format!(
        r#"
[[upstreams]]
name = "a"
base_url = "{}"
[[upstreams]]
name = "b"
base_url = "{}"

[[models]]
name = "fast"
upstream = "a"
model = "gpt-4o-mini-2024-07-18"
[[models]]
name = "claude-*"
upstream = "b"
[[models]]
name = "*"
upstream = "a"
"#,
        mock_a.url(),
        mock_b.url()
    );
    let gw = TestGateway::start(&toml).await;

    let r = post_json(&gw.url("/v1/chat/completions"), &chat("fast"), &[]).await;
    assert_eq!(r.status, 200);
    assert_eq!(
        mock_a.last_request().unwrap().json().unwrap()["model"],
        "gpt-4o-mini-2024-07-18"
    );
    assert_eq!(r.header("x-portcullis-upstream"), Some("a"));

    let r = post_json(&gw.url("/v1/messages"), &messages("claude-sonnet-4"), &[]).await;
    assert_eq!(r.status, 200);
    assert_eq!(r.header("x-portcullis-upstream"), Some("b"));
    assert_eq!(
        mock_b.last_request().unwrap().json().unwrap()["model"],
        "claude-sonnet-4"
    );
}

#[tokio::test]
async fn unknown_model_is_404_listing_configured_models() {
    let mock = MockUpstream::start().await.unwrap();
    let toml = format!(
        r#"
[[upstreams]]
name = "mock"
base_url = "{}"
[[models]]
name = "gpt-4o"
upstream = "mock"
[[models]]
name = "claude-*"
upstream = "mock"
"#,
        mock.url()
    );
    let gw = TestGateway::start(&toml).await;
    let r = post_json(&gw.url("/v1/chat/completions"), &chat("llama-3"), &[]).await;
    assert_eq!(r.status, 404);
    assert_eq!(r.header("x-portcullis-error"), Some("model_not_found"));
    let msg = r.json()["error"]["message"].as_str().unwrap().to_string();
    assert!(
        msg.contains("llama-3") && msg.contains("gpt-4o") && msg.contains("claude-*"),
        "{msg}"
    );
    assert_eq!(r.json()["error"]["code"], "model_not_found");

    // Anthropic shape on /v1/messages.
    let r = post_json(&gw.url("/v1/messages"), &messages("llama-3"), &[]).await;
    assert_eq!(r.status, 404);
    assert_eq!(r.json()["type"], "error");
    assert_eq!(r.json()["error"]["type"], "not_found_error");
    assert_eq!(mock.request_count(), 0);
}

#[tokio::test]
async fn api_keys_guard_proxied_routes() {
    let (mock, gw) = setup("[server]\napi_keys = [\"gw-key-1\", \"gw-key-2\"]").await;
    let url = gw.url("/v1/chat/completions");
    let r = post_json(&url, &chat("m"), &[]).await;
    assert_eq!(r.status, 401);
    assert_eq!(r.header("x-portcullis-error"), Some("unauthorized"));
    let r = post_json(&url, &chat("m"), &[("authorization", "Bearer wrong")]).await;
    assert_eq!(r.status, 401);
    let r = post_json(&url, &chat("m"), &[("authorization", "Bearer gw-key-2")]).await;
    assert_eq!(r.status, 200, "{}", r.text());
    let r = post_json(
        &gw.url("/v1/messages"),
        &messages("m"),
        &[("x-api-key", "gw-key-1")],
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.text());
    // The model list is guarded too; health stays open.
    assert_eq!(get(&gw.url("/v1/models"), &[]).await.status, 401);
    assert_eq!(
        get(&gw.url("/v1/models"), &[("x-api-key", "gw-key-1")])
            .await
            .status,
        200
    );
    assert_eq!(get(&gw.url("/health"), &[]).await.status, 200);
    // The two proxied requests, and the `*` entry's upstream asked for its models once (by
    // the caller let in).
    let paths: Vec<String> = mock.requests().into_iter().map(|r| r.path).collect();
    assert_eq!(
        paths,
        ["/v1/chat/completions", "/v1/messages", "/v1/models"],
        "{paths:?}"
    );
}

#[tokio::test]
async fn oversized_body_is_413_and_never_sent() {
    let (mock, gw) = setup("[server]\nmax_body_bytes = 1024").await;
    let big = json!({"model": "m", "messages": [{"role": "user", "content": "x".repeat(4096)}]});
    let r = post_json(&gw.url("/v1/chat/completions"), &big, &[]).await;
    assert_eq!(r.status, 413);
    assert_eq!(r.header("x-portcullis-error"), Some("body_too_large"));
    assert_eq!(mock.request_count(), 0);
}

#[tokio::test]
async fn malformed_json_is_400_naming_the_problem() {
    let (mock, gw) = setup("").await;
    let r = send(
        Method::POST,
        &gw.url("/v1/chat/completions"),
        "{\"model\": \"m\", ",
        &[("content-type", "application/json")],
    )
    .await;
    assert_eq!(r.status, 400);
    assert_eq!(r.header("x-portcullis-error"), Some("invalid_request"));
    assert!(r.json()["error"]["message"]
        .as_str()
        .unwrap()
        .contains("JSON"));
    assert_eq!(mock.request_count(), 0);
}

#[tokio::test]
async fn streaming_arrives_incrementally() {
    let (mock, gw) = setup("").await;
    mock.set_chunk_delay(Duration::from_millis(150));
    let mut body = chat("gpt-4o");
    body["stream"] = json!(true);
    let start = Instant::now();
    let s = post_stream(&gw.url("/v1/chat/completions"), &body, &[]).await;
    assert_eq!(s.status, 200);
    assert!(s
        .headers
        .get("content-type")
        .unwrap()
        .to_str()
        .unwrap()
        .starts_with("text/event-stream"));
    assert!(s.chunks.len() >= 3, "got {} chunks", s.chunks.len());
    let first = s.chunks.first().unwrap().0 - start;
    let last = s.chunks.last().unwrap().0 - start;
    // With several events 150 ms apart, a buffering proxy delivers everything at once.
    assert!(
        last - first >= Duration::from_millis(300),
        "first chunk at {first:?}, last at {last:?}: the stream was buffered"
    );
    let text = s.text();
    assert!(text.contains("data: [DONE]"), "{text}");
}

#[tokio::test]
async fn anthropic_streaming_passes_events_through() {
    let (mock, gw) = setup("").await;
    mock.set_chunk_delay(Duration::from_millis(100));
    let mut body = messages("claude-3-5-haiku");
    body["stream"] = json!(true);
    let s = post_stream(&gw.url("/v1/messages"), &body, &[]).await;
    assert_eq!(s.status, 200);
    let text = s.text();
    for ev in [
        "message_start",
        "content_block_delta",
        "message_delta",
        "message_stop",
    ] {
        assert!(
            text.contains(&format!("event: {ev}")),
            "missing {ev}: {text}"
        );
    }
    let spread = s.chunks.last().unwrap().0 - s.chunks.first().unwrap().0;
    assert!(spread >= Duration::from_millis(200), "buffered: {spread:?}");
}

#[tokio::test]
async fn client_going_away_cancels_the_upstream_stream() {
    let (mock, gw) = setup("").await;
    mock.set_chunk_delay(Duration::from_millis(500));
    let mut body = chat("gpt-4o");
    body["stream"] = json!(true);
    // Read the first chunk, then drop the connection.
    let req = http::Request::post(gw.url("/v1/chat/completions"))
        .header("content-type", "application/json")
        .body(http_body_util::Full::new(bytes::Bytes::from(
            body.to_string(),
        )))
        .unwrap();
    let resp = client().request(req).await.unwrap();
    let mut b = resp.into_body();
    use http_body_util::BodyExt;
    let first = b.frame().await.unwrap().unwrap();
    assert!(first.is_data());
    drop(b);
    // The gateway drops the upstream response when its client leaves, so the mock sees its
    // stream's receiver go away long before the stream would have ended.
    assert!(
        eventually(Duration::from_secs(2), || mock.streams_cancelled() == 1).await,
        "upstream stream not cancelled"
    );
    let r = post_json(&gw.url("/v1/chat/completions"), &chat("gpt-4o"), &[]).await;
    assert_eq!(r.status, 200);
}

#[tokio::test]
async fn request_id_is_kept_or_generated() {
    let (mock, gw) = setup("").await;
    let r = post_json(
        &gw.url("/v1/chat/completions"),
        &chat("m"),
        &[("x-request-id", "client-chosen-42")],
    )
    .await;
    assert_eq!(r.header("x-request-id"), Some("client-chosen-42"));
    assert_eq!(
        mock.last_request().unwrap().header("x-request-id"),
        Some("client-chosen-42")
    );
    let r = post_json(&gw.url("/v1/chat/completions"), &chat("m"), &[]).await;
    let id = r.header("x-request-id").unwrap();
    assert_eq!(id.len(), 36, "uuid expected: {id}");
}

#[tokio::test]
async fn upstream_auth_and_headers() {
    std::env::set_var("PORTCULLIS_TEST_UPSTREAM_KEY", "sk-upstream-secret");
    let mock = MockUpstream::start().await.unwrap();
    let toml = format!(
        r#"
[[upstreams]]
name = "bearer"
base_url = "{url}"
api_key = "env:PORTCULLIS_TEST_UPSTREAM_KEY"
headers = {{ "x-extra" = "yes", "x-team-key" = "os.environ/PORTCULLIS_TEST_UPSTREAM_KEY" }}
[[upstreams]]
name = "anthropic"
base_url = "{url}"
api_key = "literal-ant-key"
auth = "x-api-key"
[[models]]
name = "claude-*"
upstream = "anthropic"
[[models]]
name = "*"
upstream = "bearer"
"#,
        url = mock.url()
    );
    let gw = TestGateway::start(&toml).await;
    post_json(
        &gw.url("/v1/chat/completions"),
        &chat("m"),
        &[
            ("authorization", "Bearer client-key"),
            ("connection", "keep-alive, x-hop"),
            ("x-hop", "1"),
            ("cookie", "gateway=1"),
            ("openai-organization", "org-1"),
        ],
    )
    .await;
    let req = mock.last_request().unwrap();
    assert_eq!(
        req.header("authorization"),
        Some("Bearer sk-upstream-secret")
    );
    assert_eq!(req.header("x-extra"), Some("yes"));
    assert_eq!(req.header("x-team-key"), Some("sk-upstream-secret"));
    assert_eq!(req.header("openai-organization"), Some("org-1"));
    assert!(req.header("x-hop").is_none());
    assert!(req.header("cookie").is_none());
    assert_eq!(req.header("host"), Some(mock.addr().to_string().as_str()));

    post_json(
        &gw.url("/v1/messages"),
        &messages("claude-3"),
        &[
            ("x-api-key", "client-key"),
            ("anthropic-version", "2023-06-01"),
        ],
    )
    .await;
    let req = mock.last_request().unwrap();
    assert_eq!(req.header("x-api-key"), Some("literal-ant-key"));
    assert!(req.header("authorization").is_none());
    assert_eq!(req.header("anthropic-version"), Some("2023-06-01"));
}

#[tokio::test]
async fn base_url_path_prefix_is_kept() {
    let mock = MockUpstream::start().await.unwrap();
    let toml = format!(
        r#"
[[upstreams]]
name = "supermemory"
base_url = "{}/v3/https://api.anthropic.com"
[[models]]
name = "*"
upstream = "supermemory"
"#,
        mock.url()
    );
    let gw = TestGateway::start(&toml).await;
    let r = post_json(&gw.url("/v1/messages"), &messages("claude-3"), &[]).await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(
        mock.last_request().unwrap().path,
        "/v3/https://api.anthropic.com/v1/messages"
    );
}

#[tokio::test]
async fn https_upstream_with_its_own_ca() {
    let ck = rcgen::generate_simple_self_signed(vec!["localhost".to_string()]).unwrap();
    let cert_pem = ck.cert.pem();
    let key_pem = ck.signing_key.serialize_pem();
    let mock = MockUpstream::start_tls(&cert_pem, &key_pem).await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let ca = dir.path().join("ca.pem");
    std::fs::write(&ca, &cert_pem).unwrap();
    let toml = format!(
        r#"
[[upstreams]]
name = "tls"
base_url = "{}"
ca_file = "{}"
[[models]]
name = "*"
upstream = "tls"
"#,
        mock.url(),
        ca.display()
    );
    assert!(mock.url().starts_with("https://"));
    let gw = TestGateway::start(&toml).await;
    let r = post_json(&gw.url("/v1/chat/completions"), &chat("m"), &[]).await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(mock.request_count(), 1);

    // Without the CA the certificate is not trusted: a clear 502.
    let toml = toml.replace(&format!("ca_file = \"{}\"", ca.display()), "");
    let gw = TestGateway::start(&toml).await;
    let r = post_json(
        &gw.url("/v1/chat/completions"),
        &chat("m"),
        &[("x-should-retry", "false")],
    )
    .await;
    assert_eq!(r.status, 502, "{}", r.text());
    assert_eq!(r.header("x-portcullis-error"), Some("upstream_error"));
    let msg = r.json()["error"]["message"]
        .as_str()
        .unwrap()
        .to_lowercase();
    assert!(msg.contains("certificate"), "{msg}");
}

#[tokio::test]
async fn unreachable_upstream_is_502() {
    // A port nothing listens on.
    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let gw = TestGateway::start(&mock_config(
        &format!("http://127.0.0.1:{port}"),
        "[retry]\nbase_delay = \"1ms\"\nmax_delay = \"2ms\"\n[circuit_breaker]\nenabled = false",
    ))
    .await;
    let r = post_json(&gw.url("/v1/chat/completions"), &chat("m"), &[]).await;
    assert_eq!(r.status, 502);
    assert_eq!(r.header("x-portcullis-error"), Some("upstream_error"));
    assert_eq!(r.header("x-portcullis-attempts"), Some("3"));
    let r = post_json(&gw.url("/v1/messages"), &messages("m"), &[]).await;
    assert_eq!(r.json()["type"], "error");
    assert_eq!(r.json()["error"]["type"], "api_error");
}

#[tokio::test]
async fn hanging_upstream_is_504() {
    let mock = MockUpstream::start().await.unwrap();
    mock.set_default(Some(MockResponse::ok().hang()));
    let toml = format!(
        r#"
[[upstreams]]
name = "slow"
base_url = "{}"
timeout = "300ms"
[[models]]
name = "*"
upstream = "slow"
[retry]
max_attempts = 1
"#,
        mock.url()
    );
    let gw = TestGateway::start(&toml).await;
    let start = Instant::now();
    let r = post_json(&gw.url("/v1/chat/completions"), &chat("m"), &[]).await;
    assert_eq!(r.status, 504, "{}", r.text());
    assert_eq!(r.header("x-portcullis-error"), Some("upstream_timeout"));
    assert!(start.elapsed() < Duration::from_secs(5));
}

#[tokio::test]
async fn upstream_reset_is_502() {
    let (mock, gw) = setup("[retry]\nmax_attempts = 1").await;
    mock.push(MockResponse::ok().reset());
    let r = post_json(&gw.url("/v1/chat/completions"), &chat("m"), &[]).await;
    assert_eq!(r.status, 502, "{}", r.text());
    assert_eq!(r.header("x-portcullis-error"), Some("upstream_error"));
}

#[tokio::test]
async fn upstream_json_errors_pass_through_unchanged() {
    let (mock, gw) = setup("").await;
    let err =
        json!({"error": {"message": "bad param", "type": "invalid_request_error", "code": "bad"}});
    mock.push(MockResponse::json(400, err.clone()));
    let r = post_json(&gw.url("/v1/chat/completions"), &chat("m"), &[]).await;
    assert_eq!(r.status, 400);
    assert_eq!(r.json(), err);
    assert!(r.header("x-portcullis-error").is_none());
    assert_eq!(mock.request_count(), 1);
}

#[tokio::test]
async fn an_upstream_cannot_pose_as_the_gateway() {
    let (mock, gw) = setup("").await;
    mock.push(
        MockResponse::ok()
            .header("x-portcullis-cache", "hit")
            .header("x-portcullis-attempts", "4294967295")
            .header("x-portcullis-error", "forged")
            .header("x-portcullis-upstream", "elsewhere")
            .header("connection", "x-hop-secret")
            .header("x-hop-secret", "1"),
    );
    let r = post_json(&gw.url("/v1/chat/completions"), &chat("m"), &[]).await;
    assert_eq!(r.status, 200);
    assert_eq!(r.header("x-portcullis-cache"), Some("bypass"));
    assert_eq!(r.header("x-portcullis-attempts"), Some("1"));
    assert_eq!(r.header("x-portcullis-upstream"), Some("mock"));
    assert!(r.header("x-portcullis-error").is_none());
    assert!(
        r.header("x-hop-secret").is_none(),
        "named in Connection: hop-by-hop"
    );
}

/// A gateway with `server` settings on the serving threads (as `portcullis serve`), or on the
/// test's own runtime (as a library user's `serve_live`).
async fn serving(mock: &MockUpstream, server: &str, on_caller: bool) -> TestGateway {
    let toml = mock_config(&mock.url(), &format!("[server]\nthreads = 2\n{server}"));
    match on_caller {
        true => TestGateway::start_on_caller(&toml).await,
        false => TestGateway::start(&toml).await,
    }
}

/// Requests on connections of their own are answered; a stream in flight when the shutdown
/// signal comes finishes, and the server returns after it.
async fn shutdown_drains_a_stream(on_caller: bool) {
    let mock = MockUpstream::start().await.unwrap();
    let mut gw = serving(&mock, "shutdown_grace = \"10s\"", on_caller).await;
    // Eight clients at once, each on a connection of its own (spread over the threads).
    let url = gw.url("/v1/chat/completions");
    let answers = futures_util::future::join_all((0..8).map(|i| {
        let url = url.clone();
        async move { post_json(&url, &chat(&format!("m{i}")), &[]).await }
    }))
    .await;
    for r in &answers {
        assert_eq!(r.status, 200, "{}", r.text());
        assert_eq!(r.json()["object"], "chat.completion");
        assert_eq!(r.header("x-portcullis-upstream"), Some("mock"));
    }
    assert_eq!(mock.request_count(), 8);
    mock.set_chunk_delay(Duration::from_millis(100));
    let mut body = chat("m");
    body["stream"] = json!(true);
    let stream = tokio::spawn(async move { post_stream(&url, &body, &[]).await });
    // Let the stream start, then signal shutdown while it is in flight.
    assert!(eventually(Duration::from_secs(5), || mock.request_count() == 9).await);
    let server = gw.signal_shutdown();
    let s = stream.await.unwrap();
    assert_eq!(s.status, 200);
    assert!(
        s.text().contains("[DONE]"),
        "stream cut short: {}",
        s.text()
    );
    assert!(server.await.unwrap().unwrap(), "drained within grace");
}

/// A stream that outlasts `shutdown_grace`: the server returns at the end of the grace,
/// saying the drain was cut. Returns the stream's client task.
async fn shutdown_grace_bounds_the_drain(on_caller: bool) -> tokio::task::JoinHandle<Streamed> {
    let mock = MockUpstream::start().await.unwrap();
    mock.set_chunk_delay(Duration::from_secs(5));
    let mut gw = serving(&mock, "shutdown_grace = \"200ms\"", on_caller).await;
    let url = gw.url("/v1/chat/completions");
    let mut body = chat("m");
    body["stream"] = json!(true);
    let stream = tokio::spawn(async move { post_stream(&url, &body, &[]).await });
    assert!(eventually(Duration::from_secs(5), || mock.request_count() == 1).await);
    let start = Instant::now();
    let drained = gw.signal_shutdown().await.unwrap().unwrap();
    assert!(!drained);
    assert!(
        start.elapsed() < Duration::from_secs(3),
        "{:?}",
        start.elapsed()
    );
    stream
}

#[tokio::test]
async fn shutdown_drains_an_in_flight_stream() {
    shutdown_drains_a_stream(false).await;
}

#[tokio::test]
async fn shutdown_drains_an_in_flight_stream_on_the_callers_runtime() {
    shutdown_drains_a_stream(true).await;
}

#[tokio::test]
async fn shutdown_grace_bounds_the_drain_and_stops_the_threads() {
    let stream = shutdown_grace_bounds_the_drain(false).await;
    // The stream's connection went with its thread: the client sees it end, cut short (the
    // helper panics on the broken body, or returns what came before the cut).
    let ended = tokio::time::timeout(Duration::from_secs(5), stream)
        .await
        .expect("the client is not left hanging");
    if let Ok(s) = ended {
        assert!(!s.text().contains("[DONE]"));
    }
}

#[tokio::test]
async fn shutdown_grace_bounds_the_drain_on_the_callers_runtime() {
    // The connection's task is the caller's to end (its runtime goes on): not awaited here.
    let _stream = shutdown_grace_bounds_the_drain(true).await;
}

#[tokio::test]
async fn health_and_unknown_routes() {
    let (_mock, gw) = setup("").await;
    let r = get(&gw.url("/health"), &[]).await;
    assert_eq!(r.json(), json!({"status": "healthy"}));
    let r = get(&gw.url("/nope"), &[]).await;
    assert_eq!(r.status, 404);
    // The root: what Claude Code's `HEAD /` at start gets.
    let r = send(Method::HEAD, &gw.url("/"), bytes::Bytes::new(), &[]).await;
    assert_eq!(r.status, 200);
    assert!(r.body.is_empty());
    let r = get(&gw.url("/"), &[]).await;
    assert_eq!(r.json(), json!({"name": "portcullis", "status": "healthy"}));
    let r = get(&gw.url("/health/upstreams"), &[]).await;
    let ups = r.json()["upstreams"].as_array().unwrap().clone();
    assert_eq!(ups[0]["name"], "mock");
    assert_eq!(ups[0]["circuit"], "closed");
    assert_eq!(ups[0]["cookies"], 0);
}

/// A client still uploading when the gateway answers early (a 413 for a body over the cap,
/// declared or streamed) reads that answer: the rest of its body is read and dropped for a
/// while, where closing the connection with it unread resets the connection under the
/// client's next write and loses the answer.
#[tokio::test]
async fn an_upload_answered_early_gets_its_answer_not_a_reset() {
    let (mock, gw) = setup("[server]\nmax_body_bytes = 1024").await;
    for path in ["/v1/chat/completions", "/v1/files"] {
        for _ in 0..3 {
            let r = send(
                Method::POST,
                &gw.url(path),
                vec![b'x'; 16 * 1024 * 1024],
                &[("content-type", "application/json")],
            )
            .await;
            assert_eq!(r.status, 413, "{path}");
        }
    }
    assert_eq!(mock.request_count(), 0);
}

/// A client that asked `Expect: 100-continue` and is refused (a body over the cap) gets the 413
/// at once, never a `100 Continue` telling it to send the body that would be dropped.
#[tokio::test]
async fn an_upload_refused_before_its_100_continue_is_never_asked_for() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let (mock, gw) = setup("[server]\nmax_body_bytes = 1024").await;
    for path in ["/v1/chat/completions", "/v1/files"] {
        let addr = gw
            .url("")
            .trim_start_matches("http://")
            .trim_end_matches('/')
            .to_string();
        let mut tcp = tokio::net::TcpStream::connect(&addr)
            .await
            .expect("connect");
        let head = format!(
            "POST {path} HTTP/1.1\r\nhost: {addr}\r\ncontent-type: application/json\r\n\
             content-length: 16777216\r\nexpect: 100-continue\r\n\r\n"
        );
        tcp.write_all(head.as_bytes()).await.expect("head");
        let mut got = Vec::new();
        let mut buf = [0u8; 4096];
        while !got.windows(4).any(|w| w == b"\r\n\r\n") {
            let n = tokio::time::timeout(Duration::from_secs(5), tcp.read(&mut buf))
                .await
                .expect("an answer")
                .expect("read");
            assert!(n > 0, "closed before an answer");
            got.extend_from_slice(&buf[..n]);
        }
        let text = String::from_utf8_lossy(&got);
        assert!(text.starts_with("HTTP/1.1 413"), "{path}: {text}");
        assert!(!text.contains("100 Continue"), "{path}: {text}");
    }
    assert_eq!(mock.request_count(), 0);
}

fn zstd_json(v: &serde_json::Value) -> Vec<u8> {
    zstd::encode_all(v.to_string().as_bytes(), 3).unwrap()
}

fn gzip_bytes(data: &[u8]) -> Vec<u8> {
    use std::io::Write as _;
    let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    e.write_all(data).unwrap();
    e.finish().unwrap()
}

#[tokio::test]
async fn compressed_request_bodies_are_decoded_for_the_layers_and_the_upstream() {
    // Codex sends long Responses requests as `Content-Encoding: zstd`; the providers take
    // them, so the gateway must: validation, routing and the upstream all get the JSON.
    let (mock, gw) = setup("[server]\nmax_body_bytes = 65536").await;
    let zstd_h = [
        ("content-type", "application/json"),
        ("content-encoding", "zstd"),
    ];
    let body = json!({"model": "gpt-5", "input": "hi", "instructions": "be brief"});
    let r = send(
        Method::POST,
        &gw.url("/v1/responses"),
        zstd_json(&body),
        &zstd_h,
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.json()["model"], "gpt-5");
    let seen = mock.last_request().unwrap();
    assert_eq!(
        seen.json().unwrap(),
        body,
        "the upstream gets the JSON, plain"
    );
    assert_eq!(seen.header("content-encoding"), None);
    assert_eq!(
        seen.header("content-length"),
        Some(seen.body.len().to_string().as_str())
    );

    let gzip_h = [
        ("content-type", "application/json"),
        ("content-encoding", "gzip"),
    ];
    let msg = messages("claude-sonnet-4-5");
    let r = send(
        Method::POST,
        &gw.url("/v1/messages"),
        gzip_bytes(msg.to_string().as_bytes()),
        &gzip_h,
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.json()["type"], "message");

    // Validation reads the decoded body: its errors name the field, as for a plain one.
    let bad = json!({"model": "gpt-4o", "messages": "not a list"});
    let r = send(
        Method::POST,
        &gw.url("/v1/chat/completions"),
        zstd_json(&bad),
        &zstd_h,
    )
    .await;
    assert_eq!(r.status, 400, "{}", r.text());
    assert!(r.text().contains("messages"), "{}", r.text());

    // A bomb: 1 MiB of spaces in 100-odd bytes of zstd. The cap is on the decoded size.
    let mut big = b"{\"model\":\"gpt-4o\",\"messages\":[],\"pad\":\"".to_vec();
    big.extend(std::iter::repeat_n(b' ', 1 << 20));
    big.extend_from_slice(b"\"}");
    let bomb = zstd::encode_all(&big[..], 19).unwrap();
    assert!(bomb.len() < 1024, "{}", bomb.len());
    let r = send(Method::POST, &gw.url("/v1/chat/completions"), bomb, &zstd_h).await;
    assert_eq!(r.status, 413, "{}", r.text());
    assert_eq!(r.header("x-portcullis-error"), Some("body_too_large"));

    // Not zstd at all: a 400 that says so.
    let r = send(
        Method::POST,
        &gw.url("/v1/chat/completions"),
        "{\"model\":\"gpt-4o\"}",
        &zstd_h,
    )
    .await;
    assert_eq!(r.status, 400, "{}", r.text());
    assert!(r.text().contains("not valid zstd"), "{}", r.text());

    // A coding no layer could read: 415, in the caller's shape.
    let r = send(
        Method::POST,
        &gw.url("/v1/messages"),
        "x",
        &[
            ("content-type", "application/json"),
            ("content-encoding", "compress"),
        ],
    )
    .await;
    assert_eq!(r.status, 415, "{}", r.text());
    assert_eq!(
        r.header("x-portcullis-error"),
        Some("unsupported_content_encoding")
    );
    assert_eq!(r.json()["type"], "error", "Anthropic's shape: {}", r.text());
    // Only the two good requests went upstream.
    assert_eq!(mock.request_count(), 2);
}
