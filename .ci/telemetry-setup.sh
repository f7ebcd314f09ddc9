#!/usr/bin/env bash
# Creates (once) the Python venv the end-to-end tests use: Arize Phoenix as the real OTLP/HTTP
# receiver for tests/telemetry.rs, the official openai/anthropic SDKs for the SDK tests, and
# the OpenAI Agents SDK (tests/sdk/check_agents_sdk.py).
# Idempotent: the marker <venv>/.installed lists installed packages, one a line; a second run
# is a no-op. Same lock and marker as tests/support/python.rs, so tests may run alongside.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
v="${PORTCULLIS_PYVENV:-$root/target/pyvenv}"
packages=(arize-phoenix openai anthropic openai-agents==0.24.0)
mkdir -p "$(dirname "$v")"
exec 9>"$v.lock"
flock 9
[ -x "$v/bin/python" ] || python3 -m venv "$v"
missing=()
for p in "${packages[@]}"; do
  grep -qxF "$p" "$v/.installed" 2>/dev/null || missing+=("$p")
done
if [ ${#missing[@]} -eq 0 ]; then
  echo "telemetry-setup: $v already has ${packages[*]}"
  exit 0
fi
# arize-phoenix is large: several minutes on a slow link.
"$v/bin/python" -m pip install --quiet --disable-pip-version-check "${missing[@]}"
{ cat "$v/.installed" 2>/dev/null || true; printf '%s\n' "${missing[@]}"; } | sort -u > "$v/.installed.tmp"
mv "$v/.installed.tmp" "$v/.installed"
echo "telemetry-setup: installed ${missing[*]} into $v"
