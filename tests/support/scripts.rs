//! Check scripts in other languages (the official SDKs, the agent SDKs) run against a gateway:
//! each prints one line per check and "N passed, N failed", and exits non-zero on a failure.
#![allow(dead_code, unreachable_pub, missing_docs)]

use std::{
    path::{Path, PathBuf},
    process::Command,
};

/// The project venv's Python (`.ci/telemetry-setup.sh` creates it on first use, with the
/// official SDKs and the OpenAI Agents SDK).
pub fn venv_python() -> PathBuf {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let status = Command::new("bash")
        .arg(root.join(".ci/telemetry-setup.sh"))
        .status()
        .expect("run .ci/telemetry-setup.sh");
    assert!(status.success(), "creating the Python venv failed");
    std::env::var_os("PORTCULLIS_PYVENV")
        .map(PathBuf::from)
        .unwrap_or_else(|| root.join("target/pyvenv"))
        .join("bin/python")
}

/// Run `program script` with `GATEWAY_URL=url` (and no provider URL or key of the caller's
/// environment), assert it passed exactly `passed` checks and failed none; its output.
pub async fn run_checks(
    program: impl Into<PathBuf>,
    script: PathBuf,
    url: String,
    passed: usize,
) -> String {
    let program = program.into();
    let what = script.display().to_string();
    let out = tokio::task::spawn_blocking(move || {
        Command::new(&program)
            .arg(script)
            .env("GATEWAY_URL", url)
            .env_remove("OPENAI_BASE_URL")
            .env_remove("ANTHROPIC_BASE_URL")
            .env_remove("OPENAI_API_KEY")
            .output()
            .unwrap_or_else(|e| panic!("run {}: {e}", program.display()))
    })
    .await
    .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{what} failed:\n{stdout}\n{stderr}");
    assert!(
        stdout.contains(&format!("{passed} passed, 0 failed")),
        "{stdout}"
    );
    stdout
}
