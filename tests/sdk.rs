//! The official OpenAI and Anthropic Python SDKs, unchanged, against the gateway in front of
//! the mock upstream: chat, streaming chat, embeddings, completions, models, messages,
//! streaming messages, stored chat completions, and their own NotFoundError / BadRequestError.
//!
//! The SDKs come from the project's venv (`.ci/telemetry-setup.sh` creates it on first use).

mod support;

use std::{path::PathBuf, process::Command};

use portcullis_mock::MockUpstream;
use support::TestGateway;

fn venv_python() -> PathBuf {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    let setup = root.join(".ci/telemetry-setup.sh");
    let status = Command::new("bash")
        .arg(&setup)
        .status()
        .expect("run .ci/telemetry-setup.sh");
    assert!(status.success(), "creating the Python venv failed");
    let venv = std::env::var_os("PORTCULLIS_PYVENV")
        .map(PathBuf::from)
        .unwrap_or_else(|| root.join("target/pyvenv"));
    venv.join("bin/python")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn official_sdks_work_unchanged() {
    let python = tokio::task::spawn_blocking(venv_python).await.unwrap();
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
    let url = format!("http://{}", gw.addr);
    let out = tokio::task::spawn_blocking(move || {
        Command::new(python)
            .arg(script)
            .env("GATEWAY_URL", url)
            .env_remove("OPENAI_BASE_URL")
            .env_remove("ANTHROPIC_BASE_URL")
            .output()
            .expect("run python")
    })
    .await
    .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "SDK checks failed:\n{stdout}\n{stderr}"
    );
    assert!(stdout.contains("16 passed, 0 failed"), "{stdout}");
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
