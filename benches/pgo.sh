#!/usr/bin/env bash
# A profile-guided build of the gateway (PGO): build it instrumented, run it under the traffic
# of the load benchmark (every layer on, and every layer off), and build it again with what it
# counted, so LLVM lays out and inlines for the paths requests take.
#
#   bash benches/pgo.sh                      # -> target/pgo/release/portcullis
#   AGAINST=target/pgo/release/portcullis bash benches/load.sh   # then: release and PGO, one run
#   NO_BUILD=1 bash benches/pgo.sh           # only the last build, from the kept profile
#                                            # (target/pgo/merged.profdata) after a code change
#                                            # that adds no dependency: a crate's symbol names
#                                            # carry a hash of its dependencies, so one new
#                                            # dependency of portcullis-core renamed every
#                                            # function of the gateway's crates and the kept
#                                            # profile matched none of them (measured, round 33:
#                                            # 0.66x against 0.81x; train again then)
#
# Why: a request runs ~140k instructions spread over some twelve layers and the libraries under
# them, and no function holds more than a few percent of it; what the hardware spends most on
# is fetching that much code (callgrind's cache model: ~8k L1 instruction misses per request
# with every layer on, 2.8k for the pass-through). PGO moves the hot code together and the
# cold code (errors, config, admin) out of its way. Measured in benches/HISTORY.md
# ("Profile-guided builds").
#
# The training traffic is the benchmark's own shape and more: JSON and streamed chat
# completions (wrk, each request its own prompt), HTTP/2 (h2load), an agent's 30 KB
# conversation (benches/agent_body.py), Anthropic messages,
# Responses, embeddings, count_tokens, model lists; against every layer on and every layer off.
# A profile from other traffic still builds (LLVM ignores what it cannot match); it only
# helps less.
#
# Needs llvm-profdata of rustc's own LLVM major version (rustc -vV; `apt-get install -y
# llvm-22` for rustc 1.95's LLVM 22, or `rustup component add llvm-tools`), wrk and h2load
# (apt-get install -y wrk nghttp2-client), python3.
set -euo pipefail
cd "$(dirname "$0")/.."
root=$PWD
major=$(rustc -vV | awk '/^LLVM version/ {split($3, v, "."); print v[1]}')
sysroot=$(rustc --print sysroot)
profdata=$(command -v "llvm-profdata-$major" ||
  find "$sysroot/lib/rustlib" -name llvm-profdata -type f 2>/dev/null | head -1 || true)
if [ -z "$profdata" ]; then
  echo "llvm-profdata for LLVM $major not found: apt-get install -y llvm-$major" \
    "(or rustup component add llvm-tools)" >&2
  exit 1
fi
merged=$root/target/pgo/merged.profdata

if [ -z "${NO_BUILD:-}" ]; then
  command -v wrk >/dev/null || { echo "wrk is not installed: apt-get install -y wrk" >&2; exit 1; }
  command -v h2load >/dev/null ||
    { echo "h2load is not installed: apt-get install -y nghttp2-client" >&2; exit 1; }
  raw=$root/target/pgo/raw
  echo "1/3 instrumented build (target/pgo/gen)" >&2
  RUSTFLAGS="-Cprofile-generate=$raw" CARGO_TARGET_DIR=target/pgo/gen \
    cargo build --release --quiet --bin portcullis
  cargo build --release --quiet --example mock_upstream
  # The build's own scripts and proc macros were instrumented too and counted into the same
  # directory: only the gateway's counts go into the profile.
  rm -rf "$raw"
  mkdir -p "$raw"

  echo "2/3 training" >&2
  MOCK=127.0.0.1:19701 GW=127.0.0.1:19702
  tmp=$(mktemp -d)
  pids=()
  cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; rm -rf "$tmp"; }
  trap cleanup EXIT
  target/release/examples/mock_upstream --listen $MOCK >"$tmp/mock.log" 2>&1 & pids+=($!)
  h2() { # path body [h2load options...]
    local path=$1 body=$2; shift 2
    printf '%s' "$body" >"$tmp/body.json"
    local out
    out=$(h2load "$@" -d "$tmp/body.json" -H 'content-type: application/json' \
      -H 'authorization: Bearer sk-train' -H 'x-api-key: sk-train' \
      -H 'anthropic-version: 2023-06-01' "http://$GW$path" 2>&1)
    # Training on error answers would lay the binary out for errors: say so.
    awk -v p="$path" '/^requests:/ {n = $2} /^status codes:/ {ok = $3}
      END { if (ok != n) printf "warning: %s: %s of %s answers were 2xx\n", p, ok, n > "/dev/stderr" }' <<<"$out"
  }
  train() { # config
    sed -e "s#@MOCK@#http://$MOCK#" -e "s#@AUDIT@#$tmp/audit.jsonl#" "$1" >"$tmp/gw.toml"
    target/pgo/gen/release/portcullis serve --config "$tmp/gw.toml" --listen $GW \
      >"$tmp/gw.log" 2>&1 &
    local gw=$!
    pids+=("$gw")
    for _ in $(seq 100); do curl -sf "http://$GW/v1/models" >/dev/null 2>&1 && break; sleep 0.1; done
    STREAM=false wrk -t2 -c16 -d8s -s benches/chat.lua "http://$GW" >/dev/null
    STREAM=true wrk -t2 -c16 -d6s -s benches/chat.lua "http://$GW" >/dev/null
    h2 /v1/chat/completions '{"model":"gpt-4o-mini","messages":[{"role":"user","content":"hello h2"}]}' \
      -c 8 -m 8 -n 20000
    # An agent's long conversation (tool calls, escapes), as coding agents send it.
    h2 /v1/chat/completions "$(python3 benches/agent_body.py 30000)" --h1 -c 4 -n 2000
    h2 /v1/messages '{"model":"claude-sonnet-4-5","max_tokens":64,"messages":[{"role":"user","content":"hi"}]}' \
      --h1 -c 4 -n 5000
    h2 /v1/messages '{"model":"claude-sonnet-4-5","max_tokens":64,"stream":true,"messages":[{"role":"user","content":"hi"}]}' \
      --h1 -c 4 -n 3000
    h2 /v1/responses '{"model":"gpt-4o-mini","input":"hello"}' --h1 -c 4 -n 3000
    h2 /v1/embeddings '{"model":"text-embedding-3-small","input":"hello"}' --h1 -c 4 -n 3000
    h2 /v1/messages/count_tokens '{"model":"claude-sonnet-4-5","messages":[{"role":"user","content":"hi"}]}' \
      --h1 -c 4 -n 2000
    for _ in $(seq 200); do curl -s -o /dev/null "http://$GW/v1/models"; done
    # A clean exit writes the counters (SIGTERM: the gateway drains and returns from main).
    kill -TERM "$gw"
    wait "$gw" || true
  }
  train benches/load.toml
  train benches/load-bare.toml
  "$profdata" merge -o "$merged" "$raw"
fi
[ -f "$merged" ] || { echo "no profile at $merged: run without NO_BUILD first" >&2; exit 1; }

echo "3/3 optimised build (target/pgo/release/portcullis)" >&2
# A profile from older code still applies to the functions that did not change (and whose
# crate's dependencies did not: see NO_BUILD above).
RUSTFLAGS="-Cprofile-use=$merged -Cllvm-args=-no-pgo-warn-mismatch" CARGO_TARGET_DIR=target/pgo \
  cargo build --release --quiet --bin portcullis
ls -l target/pgo/release/portcullis
