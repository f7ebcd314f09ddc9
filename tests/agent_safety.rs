//! Agent safety through the real binary stack: answers that loop are cut (streams end with
//! the error event of the caller's API, plain answers are a 502), and the same tool call over
//! and over in one session is blocked with a 409.

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
