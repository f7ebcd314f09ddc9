//! The npm packages end-to-end tests drive through the gateway: the real agents (Codex CLI,
//! Claude Code) and the Vercel AI SDK, installed once by `.ci/agents-setup.sh` at pinned
//! versions into `$PORTCULLIS_AGENTS` or `target/agents`.
#![allow(dead_code, unreachable_pub, missing_docs)]

use std::{
    path::{Path, PathBuf},
    process::Command,
};

/// The install directory, filled on first use (the script is idempotent and locked).
pub fn agents_dir() -> PathBuf {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let status = Command::new("bash")
        .arg(root.join(".ci/agents-setup.sh"))
        .status()
        .expect("run .ci/agents-setup.sh");
    assert!(
        status.success(),
        "installing the npm packages failed (needs node and npm)"
    );
    std::env::var_os("PORTCULLIS_AGENTS")
        .map(PathBuf::from)
        .unwrap_or_else(|| root.join("target/agents"))
}
