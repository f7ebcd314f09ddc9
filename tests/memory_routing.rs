//! End to end (issue 5): memory routing through the real gateway (the `x-sm-user-id` the
//! upstream sees), `GET /memory-routing/info` against `portcullis route`, and a
//! Supermemory-style upstream.

mod support;

use std::process::Command;

use portcullis_mock::MockUpstream;
use serde_json::{json, Value};
use support::*;

const PATTERNS: &str = r#"
[memory_routing]
patterns = [
  { header = "user-agent", pattern = "OpenAIClientImpl/Java", user_id = "pycharm-ai" },
  { header = "user-agent", pattern = "^claude-cli/", user_id = "claude-code" },
]
"#;

const PYCHARM_UA: &str = "OpenAIClientImpl/Java (JetBrains AI Assistant)";
const CLAUDE_UA: &str = "claude-cli/1.0.83 (external, cli)";
const CURL_UA: &str = "curl/8.5.0";

async fn setup(extra: &str) -> (MockUpstream, TestGateway) {
    let mock = MockUpstream::start().await.unwrap();
    let gw = TestGateway::start(&mock_config(&mock.url(), extra)).await;
    (mock, gw)
}

/// Sends a chat with `headers`; returns what the mock saw as `x-sm-user-id`, and whether it saw
/// any `x-memory-user-id`.
async fn upstream_user(
    gw: &TestGateway,
    mock: &MockUpstream,
    headers: &[(&str, &str)],
) -> (Option<String>, bool) {
    let r = post_json(&gw.url("/v1/chat/completions"), &chat("m"), headers).await;
    assert_eq!(r.status, 200, "{}", r.text());
    let seen = mock.last_request().expect("the mock got the request");
    (
        seen.header("x-sm-user-id").map(str::to_string),
        seen.headers.contains_key("x-memory-user-id"),
    )
}

#[tokio::test]
async fn upstream_sees_the_user_id_chosen_per_client() {
    let (mock, gw) = setup(PATTERNS).await;
    let cases: &[(&[(&str, &str)], &str)] = &[
        (&[("user-agent", PYCHARM_UA)], "pycharm-ai"),
        (&[("user-agent", CLAUDE_UA)], "claude-code"),
        (&[("user-agent", CURL_UA)], "default"),
        (&[], "default"),
        // Anchored: claude-cli later in the string does not match.
        (&[("user-agent", "wrapper claude-cli/1.0")], "default"),
        // The explicit id wins over a matching pattern and is not forwarded.
        (
            &[("user-agent", CLAUDE_UA), ("x-memory-user-id", "alice")],
            "alice",
        ),
        // A client's own x-sm-user-id wins over a pattern.
        (
            &[("user-agent", PYCHARM_UA), ("x-sm-user-id", "bob")],
            "bob",
        ),
    ];
    for (headers, want) in cases {
        let (user, forwarded_client_header) = upstream_user(&gw, &mock, headers).await;
        assert_eq!(user.as_deref(), Some(*want), "{headers:?}");
        assert!(
            !forwarded_client_header,
            "{headers:?}: x-memory-user-id leaked upstream"
        );
    }
    assert!(mock
        .requests()
        .iter()
        .all(|r| !r.headers.contains_key("x-memory-user-id")));
    assert_eq!(mock.request_count(), cases.len());
}

#[tokio::test]
async fn disabled_memory_routing_adds_no_header() {
    let (mock, gw) = setup(&format!("{PATTERNS}enabled = false\n")).await;
    for ua in [PYCHARM_UA, CLAUDE_UA, CURL_UA] {
        let (user, _) = upstream_user(&gw, &mock, &[("user-agent", ua)]).await;
        assert_eq!(user, None, "{ua}");
    }
}

/// `portcullis route --config <file> --header ...`, parsed.
fn route_cli(config: &std::path::Path, headers: &[(&str, &str)]) -> Value {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_portcullis"));
    cmd.arg("route").arg("--config").arg(config);
    for (k, v) in headers {
        cmd.arg("--header").arg(format!("{k}: {v}"));
    }
    let out = cmd
        .env_remove("PORTCULLIS_CONFIG")
        .output()
        .expect("run portcullis route");
    assert!(
        out.status.success(),
        "route failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!(
            "route printed no JSON ({e}): {}",
            String::from_utf8_lossy(&out.stdout)
        )
    })
}

#[tokio::test]
async fn info_endpoint_and_route_command_agree() {
    let (_mock, gw) = setup(PATTERNS).await;
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("portcullis.toml");
    std::fs::write(&config, PATTERNS).unwrap();

    let pattern = |p: &str, u: &str| json!({"header": "user-agent", "pattern": p, "user_id": u});
    let cases: Vec<(Vec<(&str, &str)>, Value)> = vec![
        (
            vec![("user-agent", PYCHARM_UA)],
            json!({
                "user_id": "pycharm-ai",
                "matched_pattern": pattern("OpenAIClientImpl/Java", "pycharm-ai"),
                "custom_header_present": false,
                "is_default": false
            }),
        ),
        (
            vec![("user-agent", CLAUDE_UA)],
            json!({
                "user_id": "claude-code",
                "matched_pattern": pattern("^claude-cli/", "claude-code"),
                "custom_header_present": false,
                "is_default": false
            }),
        ),
        (
            vec![("user-agent", CURL_UA)],
            json!({
                "user_id": "default",
                "matched_pattern": null,
                "custom_header_present": false,
                "is_default": true
            }),
        ),
        (
            vec![("user-agent", CLAUDE_UA), ("x-memory-user-id", "alice")],
            json!({
                "user_id": "alice",
                "matched_pattern": null,
                "custom_header_present": true,
                "is_default": false
            }),
        ),
    ];
    for (headers, want) in cases {
        let r = get(&gw.url("/memory-routing/info"), &headers).await;
        assert_eq!(r.status, 200, "{}", r.text());
        assert_eq!(r.json(), want, "GET /memory-routing/info with {headers:?}");
        let cli = route_cli(&config, &headers);
        assert_eq!(cli, want, "portcullis route with {headers:?}");
    }
}

#[tokio::test]
async fn supermemory_style_upstream() {
    const VAR: &str = "E2E_SUPERMEMORY_KEY";
    // Unique to this test and not PORTCULLIS_-prefixed (that would be config for `route`).
    std::env::set_var(VAR, "sm-secret-123");
    let mock = MockUpstream::start().await.unwrap();
    let toml = format!(
        r#"
[[upstreams]]
name = "supermemory"
base_url = "{}/v3/https://api.anthropic.com"
auth = "passthrough"
headers = {{ "x-supermemory-api-key" = "env:{VAR}" }}

[[models]]
name = "claude-*"
upstream = "supermemory"

{PATTERNS}
"#,
        mock.url()
    );
    let gw = TestGateway::start(&toml).await;
    let r = post_json(
        &gw.url("/v1/messages"),
        &messages("claude-sonnet-4"),
        &[
            ("user-agent", CLAUDE_UA),
            ("x-api-key", "sk-ant-client"),
            ("anthropic-version", "2023-06-01"),
            ("x-sm-conversation-id", "conv-42"),
        ],
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.json()["type"], "message");
    assert_eq!(r.header("x-portcullis-upstream"), Some("supermemory"));

    let seen = mock.last_request().unwrap();
    assert_eq!(seen.path, "/v3/https://api.anthropic.com/v1/messages");
    assert_eq!(seen.header("x-supermemory-api-key"), Some("sm-secret-123"));
    assert_eq!(seen.header("x-sm-user-id"), Some("claude-code"));
    assert_eq!(seen.header("x-sm-conversation-id"), Some("conv-42"));
    assert_eq!(seen.header("x-api-key"), Some("sk-ant-client"));
    assert_eq!(seen.header("anthropic-version"), Some("2023-06-01"));
    assert_eq!(seen.json().unwrap()["model"], "claude-sonnet-4");
}
