//! Attacks on a running gateway over raw sockets (issue 14): slow request heads, trickled
//! bodies, connection floods, client-chosen metric labels, streams cut midway (for a caller
//! and for the callers coalesced behind it), one caller's upstream session reaching another
//! after a restart. Each shows the clear error or the bound that holds.

mod support;

use std::time::{Duration, Instant};

use portcullis_mock::MockUpstream;
use support::{get, mock_config, post_json, TestGateway};
use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::TcpStream,
};

async fn gateway(extra: &str) -> (MockUpstream, TestGateway) {
    let mock = MockUpstream::start().await.unwrap();
    let gw = TestGateway::start(&mock_config(&mock.url(), extra)).await;
    (mock, gw)
}

/// Read until the server closes the connection (or `limit` passes); what it sent.
async fn read_to_close(s: &mut TcpStream, limit: Duration) -> Option<String> {
    let mut out = Vec::new();
    let mut buf = [0u8; 4096];
    let deadline = Instant::now() + limit;
    loop {
        let left = deadline.checked_duration_since(Instant::now())?;
        match tokio::time::timeout(left, s.read(&mut buf)).await {
            Err(_) => return None,
            Ok(Ok(0)) | Ok(Err(_)) => return Some(String::from_utf8_lossy(&out).into_owned()),
            Ok(Ok(n)) => out.extend_from_slice(&buf[..n]),
        }
    }
}

#[tokio::test]
async fn a_request_head_sent_slowly_is_cut_off() {
    let (_mock, gw) = gateway("[server]\nheader_read_timeout = \"300ms\"").await;
    let mut s = TcpStream::connect(gw.addr).await.unwrap();
    s.write_all(b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\n")
        .await
        .unwrap();
    let start = Instant::now();
    let closed = read_to_close(&mut s, Duration::from_secs(5)).await;
    assert!(closed.is_some(), "a slowloris connection stays open");
    assert!(
        start.elapsed() < Duration::from_secs(3),
        "{:?}",
        start.elapsed()
    );
}

#[tokio::test]
async fn a_trickled_body_is_408_and_the_connection_closed() {
    let (mock, gw) = gateway("[server]\nbody_read_timeout = \"400ms\"").await;
    let mut s = TcpStream::connect(gw.addr).await.unwrap();
    s.write_all(
        b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\ncontent-type: application/json\r\ncontent-length: 1000\r\n\r\n{\"model\":",
    )
    .await
    .unwrap();
    let reply = read_to_close(&mut s, Duration::from_secs(5))
        .await
        .expect("answered and closed");
    assert!(reply.starts_with("HTTP/1.1 408"), "{reply}");
    assert!(reply.contains("request_timeout"), "{reply}");
    assert_eq!(mock.request_count(), 0);
}

#[tokio::test]
async fn past_max_connections_new_ones_wait() {
    let (_mock, gw) = gateway("[server]\nmax_connections = 1").await;
    // One keep-alive connection holds the only slot.
    let mut first = TcpStream::connect(gw.addr).await.unwrap();
    first
        .write_all(b"GET /health HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .unwrap();
    let mut buf = [0u8; 1024];
    let n = first.read(&mut buf).await.unwrap();
    assert!(String::from_utf8_lossy(&buf[..n]).starts_with("HTTP/1.1 200"));
    // A second client waits in the backlog...
    let url = gw.url("/health");
    let second = tokio::spawn(async move { get(&url, &[]).await.status });
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(
        !second.is_finished(),
        "a second connection was served past max_connections"
    );
    // ... and is served once the slot frees.
    drop(first);
    let status = tokio::time::timeout(Duration::from_secs(5), second)
        .await
        .expect("served after the first closed")
        .unwrap();
    assert_eq!(status, 200);
}

#[tokio::test]
async fn client_chosen_model_names_never_become_metric_labels() {
    let mock = MockUpstream::start().await.unwrap();
    let toml = format!(
        "[[upstreams]]\nname = \"m\"\nbase_url = \"{}\"\n[[models]]\nname = \"gpt-4o\"\nupstream = \"m\"\n",
        mock.url()
    );
    let gw = TestGateway::start(&toml).await;
    for i in 0..50 {
        let model = format!("attack-{i}-{}", "x".repeat(10_000));
        let r = post_json(&gw.url("/v1/chat/completions"), &support::chat(&model), &[]).await;
        assert_eq!(r.status, 404);
    }
    let metrics = get(&gw.url("/metrics"), &[]).await.text();
    assert!(
        !metrics.contains("attack-"),
        "a client string became a label"
    );
    assert!(
        metrics.len() < 200_000,
        "/metrics is {} bytes",
        metrics.len()
    );
    assert!(metrics.contains("model=\"other\""));
}

#[tokio::test]
async fn a_stream_cut_midway_ends_with_the_callers_error_event() {
    let (mock, gw) = gateway("[retry]\nenabled = false").await;
    // OpenAI shape: an error data line, no [DONE].
    mock.push(portcullis_mock::MockResponse::ok().abort_after(2));
    let s = support::post_stream(
        &gw.url("/v1/chat/completions"),
        &serde_json::json!({"model": "m", "stream": true, "messages": [{"role": "user", "content": "a b c d e f"}]}),
        &[],
    )
    .await;
    let text = s.text();
    assert!(text.contains("\"code\":\"upstream_error\""), "{text}");
    assert!(!text.contains("[DONE]"), "{text}");
    // Anthropic shape.
    mock.push(portcullis_mock::MockResponse::ok().abort_after(2));
    let s = support::post_stream(
        &gw.url("/v1/messages"),
        &serde_json::json!({"model": "c", "max_tokens": 16, "stream": true, "messages": [{"role": "user", "content": "a b c d"}]}),
        &[],
    )
    .await;
    let text = s.text();
    assert!(text.contains("event: error"), "{text}");
    assert!(text.contains("\"type\":\"error\""), "{text}");
}

#[tokio::test]
async fn a_silent_stream_is_ended_by_idle_timeout_and_a_late_first_byte_is_retried() {
    let mock = MockUpstream::start().await.unwrap();
    let toml = format!(
        "[[upstreams]]\nname = \"mock\"\nbase_url = \"{}\"\nidle_timeout = \"300ms\"\nfirst_byte_timeout = \"1s\"\n\
         [[models]]\nname = \"*\"\nupstream = \"mock\"\n[retry]\nbase_delay = \"1ms\"\n",
        mock.url()
    );
    let gw = TestGateway::start(&toml).await;
    let body = serde_json::json!({"model": "m", "stream": true, "messages": [{"role": "user", "content": "a b c"}]});
    // Events 2 s apart: the stream goes silent after its first event and is ended with the
    // client's error event after 300 ms, not after the upstream's 2 s.
    mock.push(portcullis_mock::MockResponse::ok().chunk_delay(Duration::from_secs(2)));
    let start = Instant::now();
    let s = support::post_stream(&gw.url("/v1/chat/completions"), &body, &[]).await;
    assert_eq!(s.status, 200);
    let text = s.text();
    assert!(text.contains("\"code\":\"upstream_timeout\""), "{text}");
    assert!(!text.contains("[DONE]"), "{text}");
    assert!(
        start.elapsed() < Duration::from_millis(1500),
        "{:?}",
        start.elapsed()
    );
    // No first byte within first_byte_timeout: a timeout, retried, and the retry answers.
    mock.push(portcullis_mock::MockResponse::ok().delay(Duration::from_secs(3)));
    let before = mock.request_count();
    let start = Instant::now();
    let s = support::post_stream(&gw.url("/v1/chat/completions"), &body, &[]).await;
    assert_eq!(s.status, 200);
    assert!(
        s.text().contains("[DONE]"),
        "the retry answered: {}",
        s.text()
    );
    assert_eq!(
        mock.request_count() - before,
        2,
        "the late first byte was retried"
    );
    assert!(
        start.elapsed() < Duration::from_millis(2500),
        "{:?}",
        start.elapsed()
    );
}

/// `cookie_scope = "caller"` keeps an upstream's session cookie with the caller it was set
/// for; the gateway used to persist only shared jars, so a restart lost it. Restored, it must
/// still reach that caller only, and the file must name callers by hash, never by key.
#[tokio::test]
async fn a_callers_session_cookie_survives_a_restart_and_never_reaches_another_caller() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("cookies.json");
    let mock = MockUpstream::start().await.unwrap();
    let config = format!(
        "[[upstreams]]\nname = \"mock\"\nbase_url = \"{}\"\nauth = \"passthrough\"\ncookie_scope = \"caller\"\n\
         [[models]]\nname = \"*\"\nupstream = \"mock\"\n[cookies]\npersist_path = \"{}\"\n",
        mock.url(),
        path.display()
    );
    let a = [("authorization", "Bearer sk-caller-a-0451")];
    let b = [("authorization", "Bearer sk-caller-b-0452")];
    let url_of = |gw: &TestGateway| gw.url("/v1/chat/completions");
    let cookie_sent = |mock: &MockUpstream| {
        mock.last_request()
            .unwrap()
            .header("cookie")
            .map(str::to_owned)
    };

    let gw = TestGateway::start(&config).await;
    mock.push(portcullis_mock::MockResponse::ok().set_cookie("sid=session-of-a; Path=/; HttpOnly"));
    assert_eq!(
        post_json(&url_of(&gw), &support::chat("m"), &a)
            .await
            .status,
        200
    );
    assert_eq!(
        post_json(&url_of(&gw), &support::chat("m"), &b)
            .await
            .status,
        200
    );
    assert_eq!(
        cookie_sent(&mock),
        None,
        "b got a's session before the restart"
    );
    assert!(gw.shutdown().await, "drained");

    let file = std::fs::read_to_string(&path).expect("shutdown saves the caller jars");
    assert!(file.contains("session-of-a"), "{file}");
    assert!(
        !file.contains("sk-caller"),
        "a key in the cookie file: {file}"
    );
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
    }

    let gw = TestGateway::start(&config).await;
    assert_eq!(
        post_json(&url_of(&gw), &support::chat("m"), &b)
            .await
            .status,
        200
    );
    assert_eq!(cookie_sent(&mock), None, "b got a's restored session");
    assert_eq!(
        post_json(&url_of(&gw), &support::chat("m"), &a)
            .await
            .status,
        200
    );
    assert_eq!(
        cookie_sent(&mock).as_deref(),
        Some("sid=session-of-a"),
        "a's session was lost in the restart"
    );
}

/// With dedup on, two identical streamed requests at once; the upstream's stream breaks after
/// its first byte (cut midway, or silent past `idle_timeout`). Neither caller may see a clean
/// end: both get the error event of interface.md "Streams". Streamed requests are not
/// coalesced (each makes its own call); a request that did not ask for a stream but gets one
/// is led and followed, and the follower then makes its own call: each of them must still see
/// how its own stream ended.
#[tokio::test]
async fn identical_streams_coalesced_or_not_each_end_with_the_error_event_when_the_upstream_breaks()
{
    use portcullis_mock::MockResponse;
    let mock = MockUpstream::start().await.unwrap();
    let toml = format!(
        "[[upstreams]]\nname = \"mock\"\nbase_url = \"{}\"\nidle_timeout = \"300ms\"\n\
         [[models]]\nname = \"*\"\nupstream = \"mock\"\n[dedup]\nenabled = true\n[retry]\nenabled = false\n",
        mock.url()
    );
    let gw = TestGateway::start(&toml).await;
    let url = gw.url("/v1/chat/completions");
    let chunk = |text: &str| {
        format!(
            "data: {}\n\n",
            serde_json::json!({"id": "c", "object": "chat.completion.chunk",
                               "choices": [{"index": 0, "delta": {"content": text}}]})
        )
    };
    let breaks: [(&str, MockResponse, &str); 3] = [
        (
            "cut midway",
            MockResponse::ok().abort_after(2),
            "upstream_error",
        ),
        (
            "silent past idle_timeout",
            MockResponse::ok().chunk_delay(Duration::from_secs(3)),
            "upstream_timeout",
        ),
        (
            "an unasked-for stream cut midway",
            // The delay holds the leader's call open until the follower has joined it.
            MockResponse::sse(200, [chunk("one "), chunk("two "), chunk("three")])
                .delay(Duration::from_millis(300))
                .abort_after(2),
            "upstream_error",
        ),
    ];
    for (how, script, code) in breaks {
        let stream = !how.contains("unasked");
        let body = serde_json::json!({"model": "m", "stream": stream,
            "messages": [{"role": "user", "content": format!("same prompt: {how}")}]});
        mock.clear();
        // Enough scripts for every upstream call the two requests may make.
        mock.push_n(2, script);
        let (a, b) = tokio::join!(
            support::post_stream(&url, &body, &[("authorization", "Bearer sk-same")]),
            support::post_stream(&url, &body, &[("authorization", "Bearer sk-same")]),
        );
        let mut outcomes = [&a, &b].map(|s| {
            s.headers
                .get("x-portcullis-cache")
                .map(|v| v.to_str().unwrap().to_owned())
        });
        outcomes.sort();
        let want = if stream {
            ["bypass", "bypass"] // streamed requests are never coalesced
        } else {
            ["bypass", "miss"] // a leader, and a follower sent on its own by the leader's stream
        };
        assert_eq!(outcomes, want.map(|o| Some(o.to_owned())), "{how}");
        for (who, s) in [("first", a), ("second", b)] {
            let text = s.text();
            assert_eq!(s.status, 200, "{how}, {who}: {text}");
            assert!(
                text.contains(&format!("\"code\":\"{code}\"")),
                "{how}, {who} caller: the stream ended without the error event: {text}"
            );
            assert!(!text.contains("[DONE]"), "{how}, {who}: {text}");
            assert!(
                text.contains("\"content\""),
                "{how}, {who}: the first event got through: {text}"
            );
        }
        assert_eq!(
            mock.request_count(),
            2,
            "{how}: each stream is its own call"
        );
    }
}

/// A body of more JSON values than a layer builds a tree of (262,144: token ids, or an attack
/// on memory, a 10 MB body of `0,0,…` made a ~270 MB tree) goes through every layer whole,
/// without one: validation checks it as `lenient` does (the mistyped `max_tokens` that a
/// small body is refused for is the provider's to judge), the commands layer sends it on
/// unread, the router writes the model rewrite in place.
#[tokio::test]
async fn a_body_of_too_many_values_goes_through_whole() {
    let (mock, gw) = gateway(
        r#"
[[models]]
name = "m"
upstream = "mock"
model = "gpt-4o-2024-08-06"

[dedup]
enabled = true

[commands]
enabled = true
"#,
    )
    .await;
    let body = |n: usize| {
        serde_json::json!({"model": "m", "max_tokens": "ten", "x": vec![7; n],
            "messages": [{"role": "user", "content": "!/show"}]})
    };
    let small = post_json(&gw.url("/v1/chat/completions"), &body(10), &[]).await;
    assert_eq!(small.status, 400, "{:?}", small.body);
    let r = post_json(&gw.url("/v1/chat/completions"), &body(300_000), &[]).await;
    assert_eq!(r.status, 200, "{:?}", String::from_utf8_lossy(&r.body));
    let sent = mock.last_request().unwrap().json().unwrap();
    assert_eq!(sent["model"], "gpt-4o-2024-08-06");
    assert_eq!(sent["x"].as_array().map(Vec::len), Some(300_000));
    assert_eq!(sent["messages"], body(1)["messages"]);
}
