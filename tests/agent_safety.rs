//! Agent safety through the real binary stack: answers that loop are cut (streams end with
//! the error event of the caller's API, plain answers are a 502), and the same tool call over
//! and over in one session is blocked with a 409. The mock streams tool calls in each API shape
//! (chat `tool_calls` deltas, Anthropic `input_json_delta`, Responses
//! `function_call_arguments.delta`) as the request's `x-mock-tool-call` header scripts, and the
//! tool-call loop layer blocks, warns or gives one chance as its mode says.

mod support;

use portcullis_mock::{MockResponse, MockUpstream};
use serde_json::json;
use support::{mock_config, post_json, post_stream, TestGateway};

const LOOPING: &str = "I will check the configuration file again to be sure it is right. ";

async fn setup(extra: &str) -> (MockUpstream, TestGateway) {
    let mock = MockUpstream::start().await.unwrap();
    let gw = TestGateway::start(&mock_config(&mock.url(), extra)).await;
    (mock, gw)
}

#[tokio::test]
async fn a_looping_stream_ends_with_the_error_event_and_a_plain_one_is_502() {
    let (mock, gw) = setup("[loop_detection]\nenabled = true\nmin_repetitions = 4").await;
    mock.set_default(Some(MockResponse::ok().content(&LOOPING.repeat(8))));
    let s = post_stream(
        &gw.url("/v1/chat/completions"),
        &json!({"model": "m", "stream": true, "messages": [{"role": "user", "content": "go"}]}),
        &[],
    )
    .await;
    assert_eq!(s.status, 200);
    let text = s.text();
    assert!(text.contains("\"code\":\"loop_detected\""), "{text}");
    assert!(
        !text.contains("[DONE]"),
        "a cut stream never says it is done"
    );

    let r = post_json(
        &gw.url("/v1/chat/completions"),
        &json!({"model": "m", "messages": [{"role": "user", "content": "go"}]}),
        &[],
    )
    .await;
    assert_eq!(r.status, 502);
    assert_eq!(r.header("x-portcullis-error"), Some("loop_detected"));
    assert_eq!(r.json()["error"]["code"], "loop_detected");

    // Anthropic's shape on /v1/messages.
    let r = post_json(
        &gw.url("/v1/messages"),
        &json!({"model": "claude", "max_tokens": 64, "messages": [{"role": "user", "content": "go"}]}),
        &[],
    )
    .await;
    assert_eq!(r.status, 502);
    assert_eq!(r.json()["type"], "error");

    // An answer that does not loop is untouched.
    mock.set_default(Some(
        MockResponse::ok().content("A short and honest answer."),
    ));
    let r = post_json(
        &gw.url("/v1/chat/completions"),
        &json!({"model": "m", "messages": [{"role": "user", "content": "go"}]}),
        &[],
    )
    .await;
    assert_eq!(r.status, 200);
}

#[tokio::test]
async fn loop_detection_is_off_by_default() {
    let (mock, gw) = setup("").await;
    mock.set_default(Some(MockResponse::ok().content(&LOOPING.repeat(8))));
    let r = post_json(
        &gw.url("/v1/chat/completions"),
        &json!({"model": "m", "messages": [{"role": "user", "content": "go"}]}),
        &[],
    )
    .await;
    assert_eq!(r.status, 200);
}

fn tool_call_answer() -> serde_json::Value {
    json!({
        "id": "chatcmpl-1", "object": "chat.completion", "created": 0, "model": "m",
        "choices": [{"index": 0, "finish_reason": "tool_calls", "message": {
            "role": "assistant", "content": null,
            "tool_calls": [{"id": "call_1", "type": "function",
                "function": {"name": "read_file", "arguments": "{\"path\": \"a.txt\"}"}}]}}],
        "usage": {"prompt_tokens": 5, "completion_tokens": 5, "total_tokens": 10}
    })
}

#[tokio::test]
async fn the_same_tool_call_over_and_over_is_blocked_per_session() {
    let (mock, gw) = setup("[tool_call_loop]\nenabled = true\nmax_repeats = 2").await;
    mock.set_default(Some(MockResponse::json(200, tool_call_answer())));
    let url = gw.url("/v1/chat/completions");
    let body = json!({"model": "m", "messages": [{"role": "user", "content": "read a.txt"}]});
    let statuses = |session: &'static str| {
        let url = url.clone();
        let body = body.clone();
        async move {
            let mut out = Vec::new();
            for _ in 0..3 {
                let r = post_json(&url, &body, &[("x-session-id", session)]).await;
                out.push((
                    r.status.as_u16(),
                    r.header("x-portcullis-error").map(str::to_string),
                ));
            }
            out
        }
    };
    let a = statuses("session-a").await;
    assert_eq!(a[0].0, 200);
    assert_eq!(a[1].0, 200);
    assert_eq!(a[2], (409, Some("tool_call_loop".into())), "{a:?}");
    // Another session has its own history.
    let b = statuses("session-b").await;
    assert_eq!(b[0].0, 200, "{b:?}");
}

#[tokio::test]
async fn in_chat_commands_are_answered_by_the_gateway_and_change_the_session() {
    let (mock, gw) = setup("[commands]\nenabled = true").await;
    let url = gw.url("/v1/chat/completions");
    let ask =
        |text: &str| json!({"model": "gpt-4o", "messages": [{"role": "user", "content": text}]});
    let session = [("x-session-id", "s1")];
    let r = post_json(&url, &ask("!/help"), &session).await;
    assert_eq!(r.status, 200);
    assert_eq!(r.header("x-portcullis-command"), Some("help"));
    assert!(r.json()["choices"][0]["message"]["content"]
        .as_str()
        .unwrap()
        .contains("!/set"));
    assert_eq!(mock.request_count(), 0, "answered with no upstream call");
    let r = post_json(
        &url,
        &ask("!/set(model=gpt-4o-mini, temperature=0.1)"),
        &session,
    )
    .await;
    assert_eq!(r.header("x-portcullis-command"), Some("set"));
    let r = post_json(&url, &ask("!/set(oops"), &session).await;
    assert_eq!(
        r.status, 200,
        "a malformed command is explained, never a 5xx"
    );
    assert_eq!(r.header("x-portcullis-command"), Some("invalid"));
    // The session's next request goes as the model it chose, with its params.
    let r = post_json(&url, &ask("hello"), &session).await;
    assert_eq!(r.status, 200);
    let sent = mock.last_request().unwrap().json().unwrap();
    assert_eq!(sent["model"], "gpt-4o-mini");
    assert_eq!(sent["temperature"], 0.1);
    // Another session is untouched.
    let _ = post_json(&url, &ask("hello"), &[("x-session-id", "s2")]).await;
    assert_eq!(
        mock.last_request().unwrap().json().unwrap()["model"],
        "gpt-4o"
    );
}

#[tokio::test]
async fn the_audit_log_names_the_key_and_usage_adds_up() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("audit.jsonl");
    let (_mock, gw) = setup(&format!(
        "[audit]\npath = \"{}\"\n[[keys]]\nname = \"team-a\"\nkey = \"gk-a\"\n",
        path.display()
    ))
    .await;
    let auth = [("authorization", "Bearer gk-a")];
    for _ in 0..2 {
        let r = post_json(
            &gw.url("/v1/chat/completions"),
            &json!({"model": "gpt-4o", "messages": [{"role": "user", "content": "hi"}]}),
            &auth,
        )
        .await;
        assert_eq!(r.status, 200);
    }
    let usage = support::get(&gw.url("/admin/usage"), &[]).await;
    assert_eq!(usage.status, 200, "{}", usage.text());
    let text = usage.text();
    assert!(text.contains("team-a"), "{text}");
    // Lines are written in the background: poll briefly.
    let mut lines = String::new();
    for _ in 0..50 {
        lines = std::fs::read_to_string(&path).unwrap_or_default();
        if lines.lines().count() >= 2 {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    assert_eq!(lines.lines().count(), 2, "{lines}");
    let first: serde_json::Value = serde_json::from_str(lines.lines().next().unwrap()).unwrap();
    assert_eq!(first["key"], "team-a");
    assert_eq!(first["status"], 200);
    assert!(first["input_tokens"].as_u64().unwrap() > 0, "{first}");
    assert!(!lines.contains("gk-a"), "the key itself is never written");
}

#[tokio::test]
async fn a_command_cannot_switch_to_a_model_the_key_may_not_use() {
    let (mock, gw) = setup(
        "[commands]\nenabled = true\n[[keys]]\nname = \"k\"\nkey = \"gk\"\nmodels = [\"gpt-4o-mini\"]\n",
    )
    .await;
    let url = gw.url("/v1/chat/completions");
    let auth = [("authorization", "Bearer gk"), ("x-session-id", "s")];
    let ask = |text: &str| json!({"model": "gpt-4o-mini", "messages": [{"role": "user", "content": text}]});
    let r = post_json(&url, &ask("!/set(model=gpt-5-pro)"), &auth).await;
    assert_eq!(r.status, 200);
    let r = post_json(&url, &ask("hello"), &auth).await;
    assert_eq!(r.status, 403, "{}", r.text());
    assert_eq!(r.header("x-portcullis-error"), Some("model_not_allowed"));
    assert_eq!(mock.request_count(), 0);
}

// === streamed tool calls from the mock, in each API shape ===

/// The three API shapes the tool-call loop layer reads.
const SHAPES: [&str; 3] = ["/v1/chat/completions", "/v1/messages", "/v1/responses"];

/// An agent's request in the shape of `path`; the mock answers it with the tool call that the
/// `x-mock-tool-call` header scripts.
fn agent_request(path: &str, stream: bool) -> serde_json::Value {
    match path {
        "/v1/responses" => json!({"model": "m", "stream": stream, "input": "fix the bug"}),
        _ => json!({"model": "m", "stream": stream, "max_tokens": 256,
                    "messages": [{"role": "user", "content": "fix the bug"}]}),
    }
}

/// How an answer in this shape ends when nothing cuts it.
fn normal_end(path: &str) -> &'static str {
    match path {
        "/v1/chat/completions" => "data: [DONE]",
        "/v1/messages" => "event: message_stop",
        _ => "event: response.completed",
    }
}

/// The stream made the tool call (its name and an argument delta reached the client).
fn assert_streamed_call(path: &str, text: &str) {
    assert!(text.contains("\"read_file\""), "{path}: {text}");
    let delta = match path {
        "/v1/chat/completions" => "\"tool_calls\":[{\"function\":{\"arguments\":",
        "/v1/messages" => "\"input_json_delta\"",
        _ => "response.function_call_arguments.delta",
    };
    assert!(text.contains(delta), "{path}: {text}");
}

/// A stream that went through whole, with no tool-call-loop error.
fn assert_whole(path: &str, text: &str) {
    assert_streamed_call(path, text);
    assert!(text.contains(normal_end(path)), "{path}: {text}");
    assert!(!text.contains("tool call loop"), "{path}: {text}");
}

/// A stream cut by the layer: the call's deltas arrived, then one error event in the caller's
/// shape instead of the end of the answer.
fn assert_blocked(path: &str, text: &str) {
    assert_streamed_call(path, text);
    assert!(!text.contains(normal_end(path)), "{path}: {text}");
    let last = text.trim_end().rsplit("\n\n").next().unwrap();
    let data: serde_json::Value = serde_json::from_str(
        last.lines()
            .find_map(|l| l.strip_prefix("data: "))
            .unwrap_or_else(|| panic!("{path}: no data line in the last event: {text}")),
    )
    .unwrap();
    match path {
        "/v1/chat/completions" => assert_eq!(data["error"]["code"], "tool_call_loop", "{text}"),
        "/v1/messages" => {
            assert!(last.starts_with("event: error"), "{text}");
            assert_eq!(data["type"], "error", "{text}");
            assert!(data["error"]["message"]
                .as_str()
                .unwrap()
                .contains("read_file"));
        }
        _ => {
            assert!(last.starts_with("event: error"), "{text}");
            assert_eq!(
                (&data["type"], &data["code"]),
                (&json!("error"), &json!("tool_call_loop"))
            );
        }
    }
}

const READ_A: &str = r#"read_file {"path": "src/a.rs", "lines": [1, 200]}"#;

async fn streamed_call(
    gw: &TestGateway,
    path: &str,
    session: &str,
    call: &str,
) -> support::Streamed {
    let s = post_stream(
        &gw.url(path),
        &agent_request(path, true),
        &[("x-session-id", session), ("x-mock-tool-call", call)],
    )
    .await;
    assert_eq!(s.status, 200, "{path}: {}", s.text());
    s
}

#[tokio::test]
async fn streamed_tool_calls_in_each_shape_are_blocked_past_max_repeats() {
    let (_mock, gw) =
        setup("[tool_call_loop]\nenabled = true\nmax_repeats = 2\nmode = \"block\"").await;
    for path in SHAPES {
        let session = format!("block{path}");
        for _ in 0..2 {
            assert_whole(
                path,
                &streamed_call(&gw, path, &session, READ_A).await.text(),
            );
        }
        assert_blocked(
            path,
            &streamed_call(&gw, path, &session, READ_A).await.text(),
        );
        // Other arguments are another call: the streak starts over.
        let other = r#"read_file {"path": "src/b.rs"}"#;
        assert_whole(
            path,
            &streamed_call(&gw, path, &session, other).await.text(),
        );
        // Another session has its own history.
        let fresh = format!("other{path}");
        assert_whole(path, &streamed_call(&gw, path, &fresh, READ_A).await.text());

        // The same calls answered whole: the third is a 409 in the caller's shape.
        let plain = format!("plain{path}");
        let mut statuses = Vec::new();
        for _ in 0..3 {
            let r = post_json(
                &gw.url(path),
                &agent_request(path, false),
                &[("x-session-id", &plain), ("x-mock-tool-call", READ_A)],
            )
            .await;
            statuses.push((
                r.status.as_u16(),
                r.header("x-portcullis-error").map(str::to_owned),
            ));
        }
        assert_eq!(
            statuses,
            [
                (200, None),
                (200, None),
                (409, Some("tool_call_loop".to_owned()))
            ],
            "{path}"
        );
    }
}

#[tokio::test]
async fn streamed_tool_call_loops_in_each_shape_only_warn_in_warn_mode() {
    let (_mock, gw) =
        setup("[tool_call_loop]\nenabled = true\nmax_repeats = 2\nmode = \"warn\"").await;
    for path in SHAPES {
        let session = format!("warn{path}");
        let mut warned = Vec::new();
        for _ in 0..4 {
            let s = streamed_call(&gw, path, &session, READ_A).await;
            assert_whole(path, &s.text());
            warned.push(s.headers.get("x-portcullis-tool-call-loop").cloned());
        }
        // A stream's headers leave before its calls are known: the third answer (the first
        // past max_repeats) is flagged on the session's next response.
        assert_eq!(warned[..3], [None, None, None], "{path}");
        assert_eq!(
            warned[3].as_ref().map(|v| v.to_str().unwrap()),
            Some("warn"),
            "{path}"
        );
    }
}

#[tokio::test]
async fn chance_then_block_gives_a_streamed_loop_one_note_in_each_shape_then_blocks() {
    let (mock, gw) =
        setup("[tool_call_loop]\nenabled = true\nmax_repeats = 2\nmode = \"chance_then_block\"")
            .await;
    for path in SHAPES {
        let session = format!("chance{path}");
        for _ in 0..3 {
            // The third repeats past max_repeats: it is the chance, it goes through.
            assert_whole(
                path,
                &streamed_call(&gw, path, &session, READ_A).await.text(),
            );
        }
        assert!(!mock
            .last_request()
            .unwrap()
            .json()
            .unwrap()
            .to_string()
            .contains("Note from the gateway"));
        // The next request carries the note to the model; the answer repeats anyway: blocked.
        let s = streamed_call(&gw, path, &session, READ_A).await;
        let sent = mock.last_request().unwrap().json().unwrap().to_string();
        assert!(sent.contains("Note from the gateway"), "{path}: {sent}");
        assert!(sent.contains("read_file"), "{path}: {sent}");
        assert_eq!(
            s.headers
                .get("x-portcullis-tool-call-loop")
                .map(|v| v.to_str().unwrap()),
            Some("chance"),
            "{path}"
        );
        assert_blocked(path, &s.text());
    }
}
