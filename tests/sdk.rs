//! The official OpenAI and Anthropic Python SDKs, unchanged, against the gateway in front of
//! the mock upstream: chat, streaming chat, embeddings, completions, models, messages,
//! streaming messages, stored chat completions, and their own NotFoundError / BadRequestError;
//! then the rest of their surface (files, audio, images, batches, conversations, uploads, ...)
//! as each SDK sends it, with the layers at their defaults and with every layer on.
//!
//! The SDKs come from the project's venv (`.ci/telemetry-setup.sh` creates it on first use).

#[path = "support/scripts.rs"]
mod scripts;
mod support;

use std::path::PathBuf;

use portcullis_mock::MockUpstream;
use support::TestGateway;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn official_sdks_work_unchanged() {
    let python = tokio::task::spawn_blocking(scripts::venv_python)
        .await
        .unwrap();
    let mock = MockUpstream::start().await.unwrap();
    // No "*" entry: an unknown model must reach the SDKs as their own NotFoundError.
    let toml = format!(
        r#"
[[upstreams]]
name = "mock"
base_url = "{}"
[[models]]
name = "gpt-*"
upstream = "mock"
[[models]]
name = "text-embedding-*"
upstream = "mock"
[[models]]
name = "claude-*"
upstream = "mock"
"#,
        mock.url()
    );
    let gw = TestGateway::start(&toml).await;
    let script = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/sdk/check_sdks.py");
    scripts::run_checks(python, script, format!("http://{}", gw.addr), 16).await;
    // The SDKs really went through the gateway to the upstream.
    assert_eq!(
        mock.request_count(),
        19,
        "chat, stream, embeddings, completions, the models list expanding `gpt-*` from the \
         upstream's own list, messages, stream, responses, stream, count_tokens, beta messages, \
         the stored chat completion's list, retrieve, messages, update and delete, the models \
         list asked again for the Anthropic client's own key, and two model retrieves"
    );
}

/// What `tests/sdk/check_sdk_surface.py` sends, in order: method and path (query cut off).
const SURFACE: &[(&str, &str)] = &[
    ("POST", "/v1/files"),
    ("GET", "/v1/files"),
    ("GET", "/v1/files/file-abc"),
    ("GET", "/v1/files/file-abc/content"),
    ("DELETE", "/v1/files/file-abc"),
    ("POST", "/v1/audio/transcriptions"),
    ("POST", "/v1/audio/speech"),
    ("POST", "/v1/moderations"),
    ("POST", "/v1/images/generations"),
    ("POST", "/v1/images/edits"),
    ("POST", "/v1/batches"),
    ("GET", "/v1/batches"),
    ("GET", "/v1/responses/resp_1"),
    ("GET", "/v1/responses/resp_1/input_items"),
    ("POST", "/v1/responses/resp_1/cancel"),
    ("DELETE", "/v1/responses/resp_1"),
    ("POST", "/v1/conversations"),
    ("GET", "/v1/conversations/conv_1/items"),
    ("POST", "/v1/vector_stores"),
    ("POST", "/v1/uploads"),
    ("POST", "/v1/uploads/upload_1/parts"),
    ("POST", "/v1/containers"),
    ("POST", "/v1/messages/batches"),
    ("GET", "/v1/messages/batches"),
    ("POST", "/v1/files"),
    ("GET", "/v1/files"),
];

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn official_sdks_reach_every_other_endpoint_through_the_gateway() {
    // Files, audio, images, moderations, batches, stored responses, conversations, vector
    // stores, uploads, containers, Anthropic's batches and Files API: each as the SDK sends it,
    // to the `*` model's upstream, with the layers at their defaults and with every layer on.
    let python = tokio::task::spawn_blocking(scripts::venv_python)
        .await
        .unwrap();
    let script = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/sdk/check_sdk_surface.py");
    let every_layer = r#"
[rate_limit]
enabled = true
requests_per_minute = 6000
burst = 100
[dedup]
enabled = true
cache_ttl = "1m"
[loop_detection]
enabled = true
[tool_call_loop]
enabled = true
[commands]
enabled = true
[validation]
level = "strict"
"#;
    for extra in ["", every_layer] {
        let mock = MockUpstream::start().await.unwrap();
        let gw = TestGateway::start(&format!(
            "{extra}\n[[upstreams]]\nname = \"mock\"\nbase_url = \"{}\"\n\
             [[models]]\nname = \"*\"\nupstream = \"mock\"\n",
            mock.url()
        ))
        .await;
        let url = format!("http://{}", gw.addr);
        scripts::run_checks(&python, script.clone(), url, SURFACE.len()).await;
        let seen = mock.requests();
        let sent: Vec<(String, &str)> = seen
            .iter()
            .map(|r| (r.method.to_string(), r.path.split('?').next().unwrap_or("")))
            .collect();
        let want: Vec<(String, &str)> = SURFACE.iter().map(|(m, p)| (m.to_string(), *p)).collect();
        assert_eq!(sent, want, "with {extra:?}");
        // Multipart forms arrive whole, as the SDK wrote them.
        let upload = &seen[0];
        let line = br#"{"custom_id": "a"}"#;
        assert!(
            upload.body.windows(line.len()).any(|w| w == line)
                && upload.body_len == upload.body.len() as u64,
            "{:?}",
            String::from_utf8_lossy(&upload.body)
        );
        // Anthropic's Files API: the beta the caller asked for reaches the upstream.
        let beta = seen[SURFACE.len() - 2].headers.get("anthropic-beta");
        assert!(
            beta.is_some_and(|v| v == "files-api-2025-04-14"),
            "{beta:?}"
        );
    }
}
