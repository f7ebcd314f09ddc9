//! The official OpenAI and Anthropic Python SDKs, unchanged, against the gateway in front of
//! the mock upstream: chat, streaming chat, embeddings, completions, models, messages,
//! streaming messages, stored chat completions, and their own NotFoundError / BadRequestError.
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
