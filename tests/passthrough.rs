//! Every request real clients send goes through: the Responses API, count_tokens, every other
//! `/v1/*` path (streamed, size-capped), transparency of query strings and headers, and 404s
//! for unknown paths in the caller's shape.

mod support;

use std::time::Duration;

use bytes::Bytes;
use futures_util::stream;
use http::{Method, Request, StatusCode};
use http_body_util::{BodyExt, StreamBody};
use hyper::body::Frame;
use hyper_util::{client::legacy::Client, rt::TokioExecutor};
use portcullis_mock::{MockResponse, MockUpstream};
use serde_json::json;
use support::{get, mock_config, post_json, post_stream, send, TestGateway};

async fn setup(extra: &str) -> (MockUpstream, TestGateway) {
    let mock = MockUpstream::start().await.unwrap();
    let gw = TestGateway::start(&mock_config(&mock.url(), extra)).await;
    (mock, gw)
}

/// Two mock upstreams, `a` and `b` (with `b_extra` in its table), and the gateway in front
/// of them with these `[[models]]`.
async fn two_upstreams(b_extra: &str, models: &str) -> (MockUpstream, MockUpstream, TestGateway) {
    let a = MockUpstream::start().await.unwrap();
    let b = MockUpstream::start().await.unwrap();
    let toml = format!(
        "[[upstreams]]\nname = \"a\"\nbase_url = \"{}\"\n\
         [[upstreams]]\nname = \"b\"\nbase_url = \"{}\"\n{b_extra}\n{models}",
        a.url(),
        b.url()
    );
    let gw = TestGateway::start(&toml).await;
    (a, b, gw)
}

#[tokio::test]
async fn responses_api_plain_and_streaming() {
    let (mock, gw) = setup("").await;
    let url = gw.url("/v1/responses");
    let body = json!({"model": "gpt-5", "input": [{"role": "user", "content": [{"type": "input_text", "text": "hi"}]}],
                      "reasoning": {"effort": "low"}, "store": false});
    let r = post_json(&url, &body, &[]).await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.json()["object"], "response");
    assert_eq!(r.header("x-portcullis-upstream"), Some("mock"));
    assert_eq!(
        mock.last_request().unwrap().json().unwrap(),
        body,
        "sent as it came"
    );

    let mut body = body.clone();
    body["stream"] = json!(true);
    let s = post_stream(&url, &body, &[]).await;
    assert_eq!(s.status, 200);
    let text = s.text();
    let events: Vec<&str> = text
        .lines()
        .filter_map(|l| l.strip_prefix("event: "))
        .collect();
    assert_eq!(events.first(), Some(&"response.created"));
    assert_eq!(events.last(), Some(&"response.completed"));
    assert!(events.contains(&"response.output_text.delta"));
}

#[tokio::test]
async fn count_tokens_needs_no_max_tokens() {
    let (mock, gw) = setup("").await;
    let body = json!({"model": "claude-sonnet-4-5", "system": "be brief",
                      "messages": [{"role": "user", "content": "hello there"}]});
    let r = post_json(&gw.url("/v1/messages/count_tokens"), &body, &[]).await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert!(r.json()["input_tokens"].as_u64().unwrap() >= 1);
    assert!(mock
        .last_request()
        .unwrap()
        .path
        .ends_with("/v1/messages/count_tokens"));
    // Its own shape: a body Anthropic refuses is refused here, in Anthropic's error shape.
    let r = post_json(
        &gw.url("/v1/messages/count_tokens"),
        &json!({"model": "c", "messages": {}}),
        &[],
    )
    .await;
    assert_eq!(r.status, 400);
    assert_eq!(r.json()["type"], "error");
}

#[tokio::test]
async fn stored_responses_and_other_paths_pass_through_with_method_and_query() {
    let (mock, gw) = setup("").await;
    for (method, path) in [
        (
            Method::GET,
            "/v1/responses/resp_123?include[]=reasoning.encrypted_content",
        ),
        (Method::DELETE, "/v1/responses/resp_123"),
        (
            Method::GET,
            "/v1/responses/resp_123/input_items?limit=5&order=asc",
        ),
        (Method::POST, "/v1/responses/resp_123/cancel"),
        // One the mock does not know: its own 404 comes back, not the gateway's.
        (Method::GET, "/v1/batches?limit=2"),
    ] {
        let r = send(
            method.clone(),
            &gw.url(path),
            Bytes::new(),
            &[("authorization", "Bearer sk-caller")],
        )
        .await;
        assert!(
            r.header("x-portcullis-error").is_none(),
            "{method} {path}: {}",
            r.text()
        );
        assert!(
            r.status.is_success() || r.text().contains("mock upstream"),
            "{method} {path}: {} {}",
            r.status,
            r.text()
        );
        let seen = mock.last_request().unwrap();
        assert_eq!(seen.method, method);
        assert_eq!(
            seen.path, path,
            "path and query reach the upstream unchanged"
        );
        assert_eq!(seen.header("authorization"), Some("Bearer sk-caller"));
        assert_eq!(r.header("x-portcullis-upstream"), Some("mock"));
    }
}

#[tokio::test]
async fn json_pass_through_is_routed_by_its_model() {
    let (mock_a, mock_b, gw) = two_upstreams(
        "",
        r#"
[[models]]
name = "omni-moderation-latest"
upstream = "b"
model = "omni-moderation-2024-09-26"
[[models]]
name = "*"
upstream = "a"
"#,
    )
    .await;
    let r = post_json(
        &gw.url("/v1/moderations"),
        &json!({"model": "omni-moderation-latest", "input": "hi"}),
        &[],
    )
    .await;
    assert_eq!(r.header("x-portcullis-upstream"), Some("b"));
    assert_eq!(
        mock_b.last_request().unwrap().json().unwrap()["model"],
        "omni-moderation-2024-09-26"
    );
    assert_eq!(mock_a.request_count(), 0);
    // No model: the header names the upstream, else the `*` model's.
    let _ = send(
        Method::GET,
        &gw.url("/v1/batches"),
        Bytes::new(),
        &[("x-portcullis-upstream", "b")],
    )
    .await;
    assert_eq!(mock_b.request_count(), 2);
    assert!(
        mock_b
            .last_request()
            .unwrap()
            .header("x-portcullis-upstream")
            .is_none(),
        "the gateway's header stays here"
    );
    let _ = send(Method::GET, &gw.url("/v1/batches"), Bytes::new(), &[]).await;
    assert_eq!(mock_a.request_count(), 1);
    // A header naming no upstream, in OpenAI's shape.
    let r = send(
        Method::GET,
        &gw.url("/v1/batches"),
        Bytes::new(),
        &[("x-portcullis-upstream", "nope")],
    )
    .await;
    assert_eq!(r.status, 404);
    assert_eq!(r.json()["error"]["code"], "not_found");
    assert!(r.json()["error"]["message"]
        .as_str()
        .unwrap()
        .contains("a, b"));
}

#[tokio::test]
async fn a_body_less_request_is_routed_by_the_model_its_uri_names() {
    // `client.chat.completions.list(model=...)`: the model is in the query, as a WebSocket
    // handshake's is; `client.models.retrieve(id)`: in the path.
    let (mock_a, mock_b, gw) = two_upstreams(
        "",
        r#"
[[models]]
name = "gpt-4o*"
upstream = "b"
model = "gpt-4o-2024-08-06"
[[models]]
name = "*"
upstream = "a"
"#,
    )
    .await;
    let upstream_of = |path: &'static str, headers: &'static [(&'static str, &'static str)]| {
        let url = gw.url(path);
        async move {
            let r = send(Method::GET, &url, Bytes::new(), headers).await;
            assert_eq!(r.status, 200, "{path}: {}", r.text());
            r.header("x-portcullis-upstream").unwrap().to_owned()
        }
    };
    assert_eq!(
        upstream_of("/v1/chat/completions?model=gpt-4o-mini&limit=5", &[]).await,
        "b"
    );
    // Sent as it came: the query is the caller's (no model rewrite on a pass-through).
    assert_eq!(
        mock_b.last_request().unwrap().path,
        "/v1/chat/completions?model=gpt-4o-mini&limit=5"
    );
    assert_eq!(upstream_of("/v1/chat/completions", &[]).await, "a");
    // A model no entry names but `*`: the `*` model's upstream, as before.
    assert_eq!(upstream_of("/v1/chat/completions?model=o3", &[]).await, "a");
    // The header still names the upstream first.
    assert_eq!(
        upstream_of(
            "/v1/chat/completions?model=gpt-4o",
            &[("x-portcullis-upstream", "a")]
        )
        .await,
        "a"
    );
    // A model's own path names it too (retrieve a model, delete a fine-tune), percent-decoded.
    assert_eq!(upstream_of("/v1/models/gpt-4o-mini", &[]).await, "b");
    assert_eq!(
        mock_b.last_request().unwrap().path,
        "/v1/models/gpt-4o-mini"
    );
    assert_eq!(upstream_of("/v1/models/gpt%2D4o", &[]).await, "b");
    assert_eq!(upstream_of("/v1/models/o3", &[]).await, "a");
    assert_eq!((mock_a.request_count(), mock_b.request_count()), (4, 3));
}

#[tokio::test]
async fn without_a_star_model_or_header_a_model_less_path_is_404() {
    let mock = MockUpstream::start().await.unwrap();
    let toml = format!(
        "[[upstreams]]\nname = \"m\"\nbase_url = \"{}\"\n[[models]]\nname = \"gpt-4o\"\nupstream = \"m\"\n",
        mock.url()
    );
    let gw = TestGateway::start(&toml).await;
    let r = get(&gw.url("/v1/files"), &[]).await;
    assert_eq!(r.status, 404);
    assert!(r.text().contains("x-portcullis-upstream"));
    assert!(r.text().contains("?model="), "{}", r.text());
    assert_eq!(mock.request_count(), 0);
    // A configured model in the query takes it to that model's upstream.
    let r = get(&gw.url("/v1/chat/completions?model=gpt-4o"), &[]).await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(mock.request_count(), 1);
}

fn rss_bytes() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        .map_or(0, |kb| kb * 1024)
}

/// A multipart upload of `total` bytes, generated chunk by chunk (never held whole).
fn upload_body(
    total: usize,
    chunk: usize,
) -> StreamBody<impl futures_util::Stream<Item = Result<Frame<Bytes>, std::io::Error>>> {
    let piece = Bytes::from(vec![b'x'; chunk]);
    let n = total / chunk;
    StreamBody::new(stream::iter(
        (0..n).map(move |_| Ok(Frame::data(piece.clone()))),
    ))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_50_mb_upload_streams_through_without_buffering() {
    let (mock, gw) = setup("[server]\nmax_body_bytes = 104857600").await;
    mock.set_recording(true);
    let total = 50 * 1024 * 1024;
    let client: Client<_, StreamBody<_>> = Client::builder(TokioExecutor::new()).build_http();
    // Warm up the connection pools, then measure.
    let _ = get(&gw.url("/v1/files"), &[]).await;
    let before = rss_bytes();
    let req = Request::post(gw.url("/v1/files"))
        .header("content-type", "multipart/form-data; boundary=xyz")
        .header("content-length", total.to_string())
        .body(upload_body(total, 64 * 1024))
        .unwrap();
    let resp = client.request(req).await.unwrap();
    let status = resp.status();
    let body = resp.into_body().collect().await.unwrap().to_bytes();
    let grown = rss_bytes().saturating_sub(before);
    assert_eq!(status, StatusCode::OK, "{}", String::from_utf8_lossy(&body));
    let v: serde_json::Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(v["bytes"], total as u64, "every byte arrived");
    let seen = mock.last_request().unwrap();
    assert_eq!(seen.body_len, total as u64);
    assert_eq!(
        seen.header("content-length"),
        Some(total.to_string().as_str())
    );
    // The process's RSS, other tests of this binary running beside it (a panicking one
    // loads debug info for its backtrace, several MB): half the upload is the bound, which a
    // body held whole (50 MB, more with copies) cannot pass.
    assert!(
        grown < 25 * 1024 * 1024,
        "RSS grew by {} MB for a 50 MB upload",
        grown / (1024 * 1024)
    );
}

#[tokio::test]
async fn uploads_over_the_body_cap_are_413() {
    let (mock, gw) = setup("[server]\nmax_body_bytes = 100000").await;
    // Declared too large: refused before the upstream is contacted.
    let r = send(
        Method::POST,
        &gw.url("/v1/files"),
        vec![b'x'; 200_000],
        &[("content-type", "application/octet-stream")],
    )
    .await;
    assert_eq!(r.status, 413);
    assert_eq!(r.header("x-portcullis-error"), Some("body_too_large"));
    assert_eq!(mock.request_count(), 0);
    // No length: cut off while streaming, still a 413.
    let client: Client<_, StreamBody<_>> = Client::builder(TokioExecutor::new()).build_http();
    let req = Request::post(gw.url("/v1/uploads/up_1/parts"))
        .header("content-type", "application/octet-stream")
        .body(upload_body(1_000_000, 10_000))
        .unwrap();
    let resp = tokio::time::timeout(Duration::from_secs(10), client.request(req))
        .await
        .expect("answered")
        .unwrap();
    assert_eq!(resp.status(), StatusCode::PAYLOAD_TOO_LARGE);
}

#[tokio::test]
async fn query_strings_and_provider_headers_reach_the_upstream_unchanged() {
    let (mock, gw) = setup("").await;
    let headers = [
        (
            "anthropic-beta",
            "context-management-2025-06-27,interleaved-thinking-2025-05-14",
        ),
        ("anthropic-version", "2023-06-01"),
        ("x-stainless-lang", "python"),
        ("x-stainless-package-version", "0.72.0"),
        ("x-api-key", "sk-ant-caller"),
    ];
    let body = json!({"model": "claude-sonnet-4-5", "max_tokens": 64,
        "messages": [{"role": "system", "content": "sys"}, {"role": "user", "content": "hi"}],
        "context_management": {"edits": []}, "thinking": {"type": "enabled", "budget_tokens": 1024}});
    let r = post_json(&gw.url("/v1/messages?beta=true"), &body, &headers).await;
    assert_eq!(r.status, 200, "{}", r.text());
    let seen = mock.last_request().unwrap();
    assert_eq!(seen.path, "/v1/messages?beta=true");
    for (k, v) in headers {
        assert_eq!(seen.header(k), Some(v), "{k}");
    }
    let headers = [
        ("openai-beta", "responses=v1"),
        ("openai-organization", "org-123"),
        ("openai-project", "proj_1"),
        ("x-stainless-os", "Linux"),
    ];
    let r = post_json(
        &gw.url("/v1/chat/completions?api-version=2024-10-21"),
        &support::chat("m"),
        &headers,
    )
    .await;
    assert_eq!(r.status, 200);
    let seen = mock.last_request().unwrap();
    assert_eq!(seen.path, "/v1/chat/completions?api-version=2024-10-21");
    for (k, v) in headers {
        assert_eq!(seen.header(k), Some(v), "{k}");
    }
}

#[tokio::test]
async fn unknown_paths_are_404_in_the_callers_shape_and_logged() {
    let (mock, gw) = setup("").await;
    let metrics = |s: &str| {
        s.lines()
            .filter(|l| l.starts_with("portcullis_requests_total") && l.contains("status=\"404\""))
            .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
            .sum::<f64>()
    };
    let before = metrics(&get(&gw.url("/metrics"), &[]).await.text());
    let r = post_json(&gw.url("/v2/chat"), &json!({}), &[]).await;
    assert_eq!(r.status, 404);
    assert_eq!(r.json()["error"]["code"], "not_found");
    let r = post_json(&gw.url("/v1/messagesx"), &json!({}), &[]).await;
    assert!(
        r.status.is_success() || r.status == 404,
        "under /v1 it is passed through"
    );
    let r = get(&gw.url("/anthropic/v1/messages/unknown"), &[]).await;
    assert_eq!(r.status, 404);
    assert!(mock.requests().iter().all(|q| !q.path.starts_with("/v2")));
    // Logged and counted like any request (the access log sits in front of the 404).
    let after = metrics(&get(&gw.url("/metrics"), &[]).await.text());
    assert!(after >= before + 2.0, "404s counted: {before} -> {after}");
}

#[tokio::test]
async fn an_html_error_page_on_a_pass_through_path_is_a_502_but_an_html_file_is_content() {
    let (mock, gw) = setup("[retry]\nenabled = false").await;
    mock.push(MockResponse::cloudflare(403, 1020));
    let r = get(&gw.url("/v1/files/file_1/content"), &[]).await;
    assert_eq!(r.status, 502);
    assert!(r.text().contains("1020"));
    mock.push(MockResponse::body(
        200,
        "text/html",
        "<html><title>my page</title></html>",
    ));
    let r = get(&gw.url("/v1/files/file_2/content"), &[]).await;
    assert_eq!(r.status, 200);
    assert!(r.text().contains("my page"));
}

#[tokio::test]
async fn a_compressed_json_pass_through_is_routed_by_its_model_and_sent_plain() {
    // Codex's `/v1/responses/compact` is not an API route here: it is passed through, and a
    // zstd body naming a model still reaches that model's upstream.
    let models = "[[models]]\nname = \"gpt-5*\"\nupstream = \"b\"\n\
                  [[models]]\nname = \"*\"\nupstream = \"a\"\n";
    let (mock_a, mock_b, gw) = two_upstreams("", models).await;
    let body = json!({"model": "gpt-5", "input": [{"role": "user", "content": "hi"}]});
    let zstd = zstd::encode_all(body.to_string().as_bytes(), 3).unwrap();
    let r = send(
        Method::POST,
        &gw.url("/v1/responses/compact"),
        zstd,
        &[
            ("content-type", "application/json"),
            ("content-encoding", "zstd"),
        ],
    )
    .await;
    assert_eq!(r.header("x-portcullis-upstream"), Some("b"), "{}", r.text());
    let seen = mock_b.last_request().unwrap();
    assert_eq!(seen.json().unwrap(), body);
    assert_eq!(seen.header("content-encoding"), None);
    // A coding the gateway does not know goes on as it came, for the upstream to judge.
    let r = send(
        Method::POST,
        &gw.url("/v1/files"),
        "raw",
        &[
            ("content-type", "application/octet-stream"),
            ("content-encoding", "compress"),
        ],
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.text());
    let seen = mock_a.last_request().unwrap();
    assert_eq!(seen.header("content-encoding"), Some("compress"));
    assert_eq!(&seen.body[..], b"raw");
}

#[tokio::test]
async fn a_model_less_anthropic_request_goes_to_the_upstream_that_speaks_anthropic() {
    // As the embedded defaults: `claude-*` on Anthropic, `*` on OpenAI. The Anthropic SDK's
    // files and message batches name no model (a batch's models are in its requests), but
    // carry `anthropic-version`; sent to `*` they would reach OpenAI (`a` here).
    let models = "[[models]]\nname = \"claude-*\"\nupstream = \"b\"\n\
                  [[models]]\nname = \"*\"\nupstream = \"a\"\n";
    let (openai, anthropic, gw) = two_upstreams("api = \"anthropic\"", models).await;
    let version = ("anthropic-version", "2023-06-01");
    let upstream_of = |r: &support::Resp| r.header("x-portcullis-upstream").map(str::to_owned);
    let r = send(Method::GET, &gw.url("/v1/files"), Bytes::new(), &[version]).await;
    assert_eq!(upstream_of(&r).as_deref(), Some("b"), "{}", r.text());
    let r = send(Method::GET, &gw.url("/v1/files"), Bytes::new(), &[]).await;
    assert_eq!(upstream_of(&r).as_deref(), Some("a"), "{}", r.text());
    let batch = json!({"requests": [{"custom_id": "1", "params": {
        "model": "claude-sonnet-4-5", "max_tokens": 8,
        "messages": [{"role": "user", "content": "hi"}]}}]});
    let r = post_json(&gw.url("/v1/messages/batches"), &batch, &[version]).await;
    assert_eq!(upstream_of(&r).as_deref(), Some("b"), "{}", r.text());
    assert_eq!(anthropic.last_request().unwrap().json().unwrap(), batch);
    // The path alone says it (a batch's results fetched without the SDK).
    let r = get(&gw.url("/v1/messages/batches/msgbatch_1/results"), &[]).await;
    assert_eq!(upstream_of(&r).as_deref(), Some("b"), "{}", r.text());
    // A model only `*` claims does not outweigh the header.
    let r = get(&gw.url("/v1/models/some-model"), &[version]).await;
    assert_eq!(upstream_of(&r).as_deref(), Some("b"), "{}", r.text());
    assert_eq!((openai.request_count(), anthropic.request_count()), (1, 4));
}
