//! A Python venv for end-to-end tests that need Python tools (Arize Phoenix as the OTLP
//! receiver; the official openai/anthropic SDKs).
//!
//! One venv per work tree, at `$PORTCULLIS_PYVENV` or `target/pyvenv`, created on first use and
//! extended with whatever packages a test asks for, under a `flock` on `<venv>.lock` so parallel
//! tests (and `.ci/telemetry-setup.sh`, which uses the same lock and marker) never race. The
//! marker `<venv>/.installed` lists installed package names, one a line.
#![allow(dead_code, unreachable_pub, missing_docs)]

use std::{
    path::{Path, PathBuf},
    process::Command,
};

/// The venv's directory.
pub fn venv_dir() -> PathBuf {
    match std::env::var_os("PORTCULLIS_PYVENV") {
        Some(p) if !p.is_empty() => PathBuf::from(p),
        _ => Path::new(env!("CARGO_MANIFEST_DIR")).join("target/pyvenv"),
    }
}

const ENSURE: &str = r#"
set -eu
v="$1"; shift
mkdir -p "$(dirname "$v")"
exec 9>"$v.lock"
flock 9
[ -x "$v/bin/python" ] || python3 -m venv "$v"
missing=""
for p in "$@"; do
  grep -qxF "$p" "$v/.installed" 2>/dev/null || missing="$missing $p"
done
if [ -n "$missing" ]; then
  "$v/bin/python" -m pip install --quiet --disable-pip-version-check $missing
  { cat "$v/.installed" 2>/dev/null || true; printf '%s\n' $missing; } | sort -u > "$v/.installed.tmp"
  mv "$v/.installed.tmp" "$v/.installed"
fi
"#;

/// The venv, with `packages` installed (pip names, e.g. `arize-phoenix`). Panics, naming the
/// cause, when it cannot be made: tests that need it must fail, not skip.
pub fn venv_with(packages: &[&str]) -> PathBuf {
    let dir = venv_dir();
    let out = Command::new("bash")
        .arg("-c")
        .arg(ENSURE)
        .arg("pyvenv")
        .arg(&dir)
        .args(packages)
        .output()
        .unwrap_or_else(|e| panic!("cannot run bash to create the Python venv: {e}"));
    assert!(
        out.status.success(),
        "creating the Python venv {} with {packages:?} failed ({}):\n{}\n{}\n\
         (.ci/telemetry-setup.sh creates it; python3 with venv and pip must be installed)",
        dir.display(),
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr),
    );
    dir
}

/// A program installed in the venv (`bin/NAME`).
pub fn bin(venv: &Path, name: &str) -> PathBuf {
    venv.join("bin").join(name)
}
