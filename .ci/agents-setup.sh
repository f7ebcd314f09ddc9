#!/usr/bin/env bash
# Installs (once) the real coding agents tests/agents.rs drives through the gateway: OpenAI's
# Codex CLI, Anthropic's Claude Code, opencode and Continue's CLI `cn` (npm), aider (PyPI, in
# its own venv <dir>/aider: it pins its own openai and litellm), and the Vercel AI SDK with its
# OpenAI and Anthropic providers (tests/translation.rs, tests/sdk/check_ai_sdk.mjs), from the npm registry, at
# pinned versions, into $PORTCULLIS_AGENTS (default target/agents). Idempotent: the marker <dir>/.installed holds the
# installed versions; a second run is a no-op. Needs node and npm (apt-get install -y nodejs npm).
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
dir="${PORTCULLIS_AGENTS:-$root/target/agents}"
packages=(@openai/codex@0.171.0 @anthropic-ai/claude-code@2.1.197 opencode-ai@1.18.33
  @continuedev/cli@1.5.47 ai@6.0.333 @ai-sdk/openai@3.0.141 @ai-sdk/anthropic@3.0.140 zod@4.6.7)
python_packages=(aider-chat==0.86.2)
mkdir -p "$dir"
exec 9>"$dir.lock"
flock 9
if [ "$(cat "$dir/.installed" 2>/dev/null)" = "${packages[*]} ${python_packages[*]}" ]; then
  echo "agents-setup: $dir already has ${packages[*]} ${python_packages[*]}"
  exit 0
fi
command -v npm >/dev/null || { echo "npm is not installed: apt-get install -y nodejs npm" >&2; exit 1; }
npm install --prefix "$dir" --no-audit --no-fund --loglevel=error "${packages[@]}"
# npm no longer runs install scripts unasked: Claude Code's puts its native binary in place.
node "$dir/node_modules/@anthropic-ai/claude-code/install.cjs"
"$dir/node_modules/.bin/codex" --version
"$dir/node_modules/.bin/claude" --version
"$dir/node_modules/.bin/opencode" --version
"$dir/node_modules/.bin/cn" --version
python3 -m venv "$dir/aider"
"$dir/aider/bin/pip" install --quiet --disable-pip-version-check "${python_packages[@]}"
"$dir/aider/bin/aider" --version
echo "${packages[*]} ${python_packages[*]}" > "$dir/.installed"
echo "agents-setup: installed ${packages[*]} ${python_packages[*]} into $dir"
