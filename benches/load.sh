#!/usr/bin/env bash
# End-to-end load benchmark, measured in one run on one machine:
#   1. the mock upstream, direct;
#   2. a minimal hyper pass-through proxy in front of it (benches/passthrough_proxy.rs);
#   3. portcullis with every optional layer off (benches/load-bare.toml);
#   4. portcullis with every layer on (benches/load.toml).
# Non-streaming and streaming chat requests; requests/s, p50, p99 (wrk) and RSS.
#
#   bash benches/load.sh [DURATION_SECONDS] [CONNECTIONS]
#
# Needs wrk (apt-get install -y wrk). Builds release binaries first. Prints a markdown table.
set -euo pipefail
cd "$(dirname "$0")/.."
DUR="${1:-10}"
CONN="${2:-64}"
THREADS=2
command -v wrk >/dev/null || { echo "wrk is not installed: apt-get install -y wrk" >&2; exit 1; }

cargo build --release --quiet --bin portcullis --example mock_upstream --example passthrough_proxy
BIN=target/release
MOCK=127.0.0.1:9101 PASS=127.0.0.1:9102 GW=127.0.0.1:9103 BARE=127.0.0.1:9104
tmp=$(mktemp -d)
pids=()
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; rm -rf "$tmp"; }
trap cleanup EXIT

$BIN/examples/mock_upstream --listen $MOCK >"$tmp/mock.log" 2>&1 & pids+=($!); MOCK_PID=$!
$BIN/examples/passthrough_proxy $PASS http://$MOCK >"$tmp/pass.log" 2>&1 & pids+=($!); PASS_PID=$!
sed "s#@MOCK@#http://$MOCK#" benches/load.toml >"$tmp/load.toml"
RUST_LOG=warn $BIN/portcullis serve --config "$tmp/load.toml" --listen $GW >"$tmp/gw.log" 2>&1 & pids+=($!); GW_PID=$!
sed "s#@MOCK@#http://$MOCK#" benches/load-bare.toml >"$tmp/bare.toml"
RUST_LOG=warn $BIN/portcullis serve --config "$tmp/bare.toml" --listen $BARE >"$tmp/bare.log" 2>&1 & pids+=($!); BARE_PID=$!
for a in $MOCK $PASS $GW $BARE; do
  for _ in $(seq 100); do curl -sf "http://$a/v1/models" >/dev/null 2>&1 && break; sleep 0.1; done
done

cat >"$tmp/chat.lua" <<'LUA'
-- Every request has its own prompt (thread id + counter), so dedup never coalesces them.
local n = 0
function setup(thread) n = n + 1; thread:set("tid", n) end
local counter = 0
function request()
  counter = counter + 1
  local body = '{"model":"gpt-4o-mini","stream":' .. os.getenv("STREAM") ..
    ',"messages":[{"role":"user","content":"hello ' .. tostring(tid) .. '-' .. counter .. '"}]}'
  return wrk.format("POST", "/v1/chat/completions",
    {["Content-Type"] = "application/json", ["Authorization"] = "Bearer sk-bench"}, body)
end
function done(summary, latency, requests)
  local errs = summary.errors.connect + summary.errors.read + summary.errors.write +
    summary.errors.timeout + summary.errors.status
  io.write(string.format("RESULT %.1f %.3f %.3f %d\n", summary.requests / (summary.duration / 1e6),
    latency:percentile(50) / 1000, latency:percentile(99) / 1000, errs))
end
LUA

rss() { awk '/VmRSS/ {printf "%.1f", $2/1024}' "/proc/$1/status"; }
declare -A R
run() { # name addr pid stream
  local out
  out=$(STREAM=$4 wrk -t$THREADS -c$CONN -d"${DUR}s" -s "$tmp/chat.lua" "http://$2" | grep '^RESULT')
  read -r _ rps p50 p99 errs <<<"$out"
  R[$1-$4]="$rps $p50 $p99 $errs $(rss "$3")"
}
for stream in false true; do
  run direct $MOCK $MOCK_PID $stream
  run passthrough $PASS $PASS_PID $stream
  run portcullis-bare $BARE $BARE_PID $stream
  run portcullis $GW $GW_PID $stream
done

echo
echo "machine: $(nproc) cores, $(awk '/MemTotal/ {printf "%.0f GiB", $2/1048576}' /proc/meminfo), $(uname -m); wrk -t$THREADS -c$CONN -d${DUR}s"
echo
echo "| target | mode | requests/s | p50 ms | p99 ms | errors | RSS MiB |"
echo "| --- | --- | ---: | ---: | ---: | ---: | ---: |"
for stream in false true; do
  mode=$([ $stream = true ] && echo streaming || echo json)
  for t in direct passthrough portcullis-bare portcullis; do
    read -r rps p50 p99 errs mem <<<"${R[$t-$stream]}"
    echo "| $t | $mode | $rps | $p50 | $p99 | $errs | $mem |"
  done
done
echo
for stream in false true; do
  read -r prps _ pp99 _ _ <<<"${R[passthrough-$stream]}"
  read -r grps _ gp99 _ _ <<<"${R[portcullis-$stream]}"
  mode=$([ $stream = true ] && echo streaming || echo json)
  awk -v m="$mode" -v a="$grps" -v b="$prps" -v c="$gp99" -v d="$pp99" \
    'BEGIN { printf "%s: portcullis/passthrough requests/s = %.2fx, p99 = %.2fx\n", m, a/b, c/d }'
done
