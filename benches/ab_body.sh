#!/usr/bin/env bash
# A/B of two gateway builds, every layer on (benches/load.toml; CONFIG=benches/load-bare.toml
# for the bare gateway), with one large request body:
# each build behind its own port in front of one mock upstream, h2load (HTTP/1.1, 8
# connections, 8 s) against each in turn, three rounds; requests/s and the gateway's CPU per
# request from /proc.
#
#   python3 benches/agent_body.py > /tmp/agent.json
#   AGAINST=/other/target/release/portcullis BODY=/tmp/agent.json bash benches/ab_body.sh
#
# Needs h2load (apt-get install -y nghttp2-client). Builds release binaries first (NO_BUILD=1:
# use what is in target/release). Every request carries the same body, so the dedup layer
# shares some of them between concurrent requests, in both builds alike.
set -euo pipefail
cd "$(dirname "$0")/.."
: "${AGAINST:?AGAINST=/path/to/another/portcullis}" "${BODY:?BODY=request.json}"
# The gateway in its own invocation, as in benches/load.sh (no dev-dependency features).
[ -n "${NO_BUILD:-}" ] || { cargo build --release --quiet --example mock_upstream &&
  cargo build --release --quiet --bin portcullis; }
tmp=$(mktemp -d); pids=()
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; rm -rf "$tmp"; }
trap cleanup EXIT
target/release/examples/mock_upstream --listen 127.0.0.1:19601 >/dev/null 2>&1 & pids+=($!)
for v in this against; do
  sed -e "s#@MOCK@#http://127.0.0.1:19601#" -e "s#@AUDIT@#$tmp/audit-$v.jsonl#" "${CONFIG:-benches/load.toml}" >"$tmp/$v.toml"
done
target/release/portcullis serve --config "$tmp/this.toml" --listen 127.0.0.1:19602 >/dev/null 2>&1 & pids+=($!); this=$!
"$AGAINST" serve --config "$tmp/against.toml" --listen 127.0.0.1:19603 >/dev/null 2>&1 & pids+=($!); against=$!
for port in 19602 19603; do
  for _ in $(seq 100); do curl -sf -o /dev/null "http://127.0.0.1:$port/health" && break; sleep 0.1; done
done
cpu() { awk '{print $14 + $15}' "/proc/$1/stat"; }
tick=$(getconf CLK_TCK)
echo "| round | build | requests/s | requests | CPU µs/request |"
echo "| --- | --- | ---: | ---: | ---: |"
for round in 1 2 3; do
  for pair in "this:19602:$this" "against:19603:$against"; do
    IFS=: read -r name port pid <<<"$pair"
    c0=$(cpu "$pid")
    out=$(h2load --h1 -c 8 -D 8 -d "$BODY" -H 'content-type: application/json' \
      -H 'authorization: Bearer sk-bench' "http://127.0.0.1:$port/v1/chat/completions" 2>&1)
    c1=$(cpu "$pid")
    ok=$(echo "$out" | awk '/^requests:/ {print $8}')
    rps=$(echo "$out" | awk '/^finished in/ {print $4}')
    us=$(awk -v a="$c0" -v b="$c1" -v n="$ok" -v t="$tick" 'BEGIN { printf "%.0f", n ? (b - a) * 1e6 / t / n : 0 }')
    echo "| $round | $name | $rps | $ok | $us |"
  done
done
