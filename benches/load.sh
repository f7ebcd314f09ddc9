#!/usr/bin/env bash
# End-to-end load benchmark, measured in one run on one machine, side by side:
#   1. the mock upstream, direct;
#   2. a minimal hyper pass-through proxy in front of it (benches/passthrough_proxy.rs);
#   3. portcullis with every optional layer off (benches/load-bare.toml);
#   4. portcullis with every layer on (benches/load.toml), JSON access log and audit log on.
#
#   bash benches/load.sh [DURATION_SECONDS] [CONNECTIONS]      # the comparison
#   bash benches/load.sh soak [REQUESTS]                       # RSS over many requests
#   bash benches/load.sh latency [ROUNDS] [SECONDS]            # the fixed-rate phase alone,
#                                    # ROUNDS times (default 3 x 10 s), the targets interleaved
#   bash benches/load.sh ratios [ROUNDS] [SECONDS]             # JSON requests/s and CPU per
#                                    # request against the pass-through, ROUNDS short rounds
#                                    # (default 5 x 10 s), the targets taking turns within each;
#                                    # the median of the rounds' ratios (a host that swings
#                                    # between phases moves one round, not the result)
#   CACHE_TTL=5m bash benches/load.sh soak [REQUESTS]          # ... with the answer cache on
#   AGAINST=/other/target/release/portcullis bash benches/load.sh   # also another build of the
#                                    # gateway (every layer on), in the same run: an A/B of a change
#   AGAINST=target/release/portcullis AGAINST_DEDUP=off bash benches/load.sh   # or the same
#                                    # build with every layer on but dedup (the issue's measure)
#   AGAINST=target/release/portcullis AGAINST_CONFIG=benches/load-defaults.toml bash benches/load.sh
#                                    # ... or with another configuration (here the defaults)
#
# The comparison: JSON and streamed chat requests with wrk (requests/s, p50, p99, CPU per
# request, RSS); the added p99 at a fixed 200 requests/s (benches/fixed_rate.rs, open loop);
# HTTP/2 with prior knowledge (h2load). The soak: REQUESTS (default 1,000,000) JSON requests,
# each with its own prompt and its own gateway-side rate-limit key (a distinct Authorization
# per request), with dedup on; RSS sampled every 5 s.
#
# Needs wrk and h2load (apt-get install -y wrk nghttp2-client). Builds release binaries first.
# Prints markdown tables.
set -euo pipefail
cd "$(dirname "$0")/.."
MODE=compare
if [ "${1:-}" = soak ]; then MODE=soak; shift; SOAK_N="${1:-1000000}"; fi
if [ "${1:-}" = latency ]; then MODE=latency; shift; ROUNDS="${1:-3}"; shift || true; fi
if [ "${1:-}" = ratios ]; then MODE=ratios; shift; ROUNDS="${1:-5}"; shift || true; fi
DUR="${1:-10}"
CONN="${2:-32}"
THREADS=2
command -v wrk >/dev/null || { echo "wrk is not installed: apt-get install -y wrk" >&2; exit 1; }

# The gateway on its own, as `cargo build --release` makes it: built in one invocation with
# the examples, it would get the features the package's dev-dependencies turn on (tokio's
# `test-util`, whose clock takes a lock on every read).
if [ -z "${NO_BUILD:-}" ]; then
  cargo build --release --quiet --example mock_upstream --example passthrough_proxy --example fixed_rate
  cargo build --release --quiet --bin portcullis
fi
BIN="${BIN:-target/release}"
MOCK=127.0.0.1:9101 PASS=127.0.0.1:9102 GW=127.0.0.1:9103 BARE=127.0.0.1:9104
tmp=$(mktemp -d)
pids=()
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; rm -rf "$tmp"; }
trap cleanup EXIT

config() { sed -e "s#@MOCK@#http://$MOCK#" -e "s#@AUDIT@#$tmp/audit-$2.jsonl#" "$1" >"$tmp/$2.toml"; }
$BIN/examples/mock_upstream --listen $MOCK >"$tmp/mock.log" 2>&1 & pids+=($!); MOCK_PID=$!
$BIN/examples/passthrough_proxy $PASS http://$MOCK >"$tmp/pass.log" 2>&1 & pids+=($!); PASS_PID=$!
config benches/load.toml gw
# CACHE_TTL=5m: the dedup layer also caches answers (every soak request is a distinct body, so
# the cache fills to its bounds and must stay there).
[ -n "${CACHE_TTL:-}" ] && sed -i "s/^cache_ttl = .*/cache_ttl = \"$CACHE_TTL\"/" "$tmp/gw.toml"
# The access log (JSON, info level) goes to a file, as it would in production.
$BIN/portcullis serve --config "$tmp/gw.toml" --listen $GW >"$tmp/gw.log" 2>&1 & pids+=($!); GW_PID=$!
config benches/load-bare.toml bare
$BIN/portcullis serve --config "$tmp/bare.toml" --listen $BARE >"$tmp/bare.log" 2>&1 & pids+=($!); BARE_PID=$!
TARGETS="direct passthrough portcullis-bare portcullis"
if [ -n "${AGAINST:-}" ]; then
  AGW=127.0.0.1:9106
  # AGAINST_CONFIG=file: that gateway runs this configuration instead (benches/load-defaults.toml:
  # what a user who writes no configuration gets, pretty logs included).
  config "${AGAINST_CONFIG:-benches/load.toml}" against
  # AGAINST_DEDUP=off: that gateway runs every layer but dedup.
  if [ "${AGAINST_DEDUP:-on}" = off ]; then
    sed -i '/^\[dedup\]/,/^\[/ s/^enabled = true/enabled = false/' "$tmp/against.toml"
  fi
  "$AGAINST" serve --config "$tmp/against.toml" --listen $AGW >"$tmp/against.log" 2>&1 & pids+=($!); AGW_PID=$!
  TARGETS="$TARGETS portcullis-against"
fi
# Wait (up to 10 s) until a server at this address answers.
wait_up() { for _ in $(seq 100); do curl -sf "http://$1/v1/models" >/dev/null 2>&1 && return; sleep 0.1; done; }
for a in $MOCK $PASS $GW $BARE ${AGW:-}; do wait_up "$a"; done


rss() { awk '/VmRSS/ {printf "%.1f", $2/1024}' "/proc/$1/status"; }
# User + system CPU time of a process, in clock ticks.
cpu() { awk '{print $14 + $15}' "/proc/$1/stat"; }
HZ=$(getconf CLK_TCK)
# The CPU's family and model too: a VM's model name ("AMD EPYC") hides its generation, and the
# gateway's ratio depends on it (its code outgrows a small instruction cache; see round 17 in
# benches/HISTORY.md).
machine="$(nproc) cores, $(awk '/MemTotal/ {printf "%.0f GiB", $2/1048576}' /proc/meminfo), $(uname -m), $(awk -F': ' '
  /^model name/ && !n { n = $2 } /^cpu family/ && !f { f = $2 } /^model\t/ && !m { m = $2 }
  END { printf "%s (family %s, model %s)", n, f, m }' /proc/cpuinfo)"

if [ $MODE = soak ]; then
  echo "machine: $machine"
  echo "soak: $SOAK_N JSON requests, each with its own prompt and rate-limit key, dedup on, cache_ttl ${CACHE_TTL:-0s}"
  echo
  echo "| requests so far | RSS MiB |"
  echo "| ---: | ---: |"
  echo "| 0 | $(rss $GW_PID) |"
  # wrk has no request count: run it in 5 s slices until enough requests were sent.
  sent=0
  while [ "$sent" -lt "$SOAK_N" ]; do
    out=$(KEYS=distinct STREAM=false wrk -t$THREADS -c$CONN -d5s -s benches/chat.lua "http://$GW" | grep '^RESULT')
    read -r _ _ _ _ errs reqs <<<"$out"
    sent=$((sent + reqs))
    echo "| $sent | $(rss $GW_PID) |$([ "$errs" != 0 ] && echo " $errs errors |")"
  done
  exit 0
fi

if [ $MODE = latency ]; then
  # The added latency one user of a quiet gateway sees is small against the mock's own and
  # moves from run to run: several short rounds, the targets taking turns within each.
  echo "machine: $machine"
  echo "fixed rate, 200 requests/s, $ROUNDS rounds of ${DUR}s (JSON, open loop, latency from the scheduled start)"
  echo
  echo "| round | target | p50 ms | p99 ms | added p50 ms | added p99 ms | errors |"
  echo "| ---: | --- | ---: | ---: | ---: | ---: | ---: |"
  for round in $(seq "$ROUNDS"); do
    dp50=0 dp99=0
    targets="direct:$MOCK passthrough:$PASS portcullis-bare:$BARE portcullis:$GW"
    [ -z "${AGAINST:-}" ] || targets="$targets portcullis-against:$AGW" # another build too
    for t in $targets; do
      name=${t%%:*} addr=${t#*:}
      read -r _ _ errs p50 p99 _ <<<"$($BIN/examples/fixed_rate "http://$addr/v1/chat/completions" 200 "$DUR" | grep '^RESULT')"
      [ "$name" = direct ] && dp50=$p50 dp99=$p99
      awk -v r="$round" -v n="$name" -v a="$p50" -v b="$p99" -v c="$dp50" -v d="$dp99" -v e="$errs" \
        'BEGIN { printf "| %s | %s | %.3f | %.3f | %.3f | %.3f | %s |\n", r, n, a, b, a-c, b-d, e }'
    done
  done
  exit 0
fi

if [ $MODE = ratios ]; then
  # Each round measures every target once, back to back, and divides by the pass-through of
  # the same round; the medians of those ratios are the result.
  echo "machine: $machine"
  echo "JSON, $ROUNDS rounds of ${DUR}s, wrk -t$THREADS -c$CONN, the targets taking turns within each round"
  echo
  echo "| round | target | requests/s | CPU µs/req | requests/s ratio | CPU ratio |"
  echo "| ---: | --- | ---: | ---: | ---: | ---: |"
  declare -A RATIOS
  for round in $(seq "$ROUNDS"); do
    prps="" pus=""
    for t in passthrough:$PASS:$PASS_PID portcullis-bare:$BARE:$BARE_PID portcullis:$GW:$GW_PID \
      ${AGW:+portcullis-against:$AGW:$AGW_PID}; do
      IFS=: read -r name host port pid <<<"$t"
      c0=$(cpu "$pid")
      out=$(STREAM=false wrk -t$THREADS -c$CONN -d"${DUR}s" -s benches/chat.lua "http://$host:$port" | grep '^RESULT')
      c1=$(cpu "$pid")
      read -r _ rps _ _ _ reqs <<<"$out"
      us=$(awk -v t=$((c1 - c0)) -v hz="$HZ" -v n="$reqs" 'BEGIN { printf "%.1f", t / hz * 1e6 / n }')
      [ "$name" = passthrough ] && prps=$rps pus=$us
      row=$(awk -v a="$rps" -v b="$prps" -v c="$us" -v d="$pus" 'BEGIN { printf "%.3f %.3f", a/b, c/d }')
      RATIOS[$name]="${RATIOS[$name]:-} ${row% *}/${row#* }"
      echo "| $round | $name | $rps | $us | ${row% *} | ${row#* } |"
    done
  done
  echo
  # The median (and range) of a column of numbers (POSIX awk: no asort).
  med() { sort -g | awk '{ v[NR] = $1 } END { printf "%.2f %.2f %.2f", (NR % 2) ? v[(NR + 1) / 2] : (v[NR / 2] + v[NR / 2 + 1]) / 2, v[1], v[NR] }'; }
  for name in portcullis-bare portcullis ${AGW:+portcullis-against}; do
    # shellcheck disable=SC2086
    read -r m lo hi <<<"$(printf '%s\n' ${RATIOS[$name]} | cut -d/ -f1 | med)"
    # shellcheck disable=SC2086
    read -r k _ _ <<<"$(printf '%s\n' ${RATIOS[$name]} | cut -d/ -f2 | med)"
    echo "json: $name/passthrough requests/s = ${m}x (median of $ROUNDS rounds, ${lo}x-${hi}x), CPU/request = ${k}x"
  done
  exit 0
fi

declare -A R
run() { # name addr pid stream
  local out c0 c1
  c0=$(cpu "$3")
  out=$(STREAM=$4 wrk -t$THREADS -c$CONN -d"${DUR}s" -s benches/chat.lua "http://$2" | grep '^RESULT')
  c1=$(cpu "$3")
  read -r _ rps p50 p99 errs reqs <<<"$out"
  local us
  us=$(awk -v t=$((c1 - c0)) -v hz="$HZ" -v n="$reqs" 'BEGIN { printf "%.1f", t / hz * 1e6 / n }')
  R[$1-$4]="$rps $p50 $p99 $errs $(rss "$3") $us"
}
for stream in false true; do
  run direct $MOCK $MOCK_PID $stream
  run passthrough $PASS $PASS_PID $stream
  run portcullis-bare $BARE $BARE_PID $stream
  run portcullis $GW $GW_PID $stream
  [ -z "${AGAINST:-}" ] || run portcullis-against $AGW $AGW_PID $stream
done

# Added latency at a fixed, light rate (open loop): what one user of a quiet gateway sees.
declare -A F
for t in direct:$MOCK passthrough:$PASS portcullis:$GW; do
  name=${t%%:*} addr=${t#*:}
  read -r _ n errs p50 p99 max <<<"$($BIN/examples/fixed_rate "http://$addr/v1/chat/completions" 200 "$DUR" | grep '^RESULT')"
  F[$name]="$n $errs $p50 $p99 $max"
done

# HTTP/2 with prior knowledge (h2c), 32 connections x 8 streams. h2load sends one body, so
# dedup would coalesce the identical requests in flight: this phase runs against a gateway
# with every layer on but dedup.
declare -A H
if command -v h2load >/dev/null; then
  awk '/^\[/ {d = ($0 == "[dedup]")} d && /^enabled = true$/ {$0 = "enabled = false"} {print}' \
    "$tmp/gw.toml" >"$tmp/h2.toml"
  H2=127.0.0.1:9105
  $BIN/portcullis serve --config "$tmp/h2.toml" --listen $H2 >"$tmp/h2.log" 2>&1 & pids+=($!); H2_PID=$!
  wait_up "$H2"
  H2_TARGETS="passthrough:$PASS:$PASS_PID portcullis:$H2:$H2_PID"
  if [ -n "${AGAINST:-}" ]; then # the other build, the same way
    AH2=127.0.0.1:9107
    "$AGAINST" serve --config "$tmp/h2.toml" --listen $AH2 >"$tmp/ah2.log" 2>&1 & pids+=($!); AH2_PID=$!
    wait_up "$AH2"
    H2_TARGETS="$H2_TARGETS portcullis-against:$AH2:$AH2_PID"
  fi
  printf '{"model":"gpt-4o-mini","messages":[{"role":"user","content":"hello h2"}]}' >"$tmp/h2body.json"
  for t in $H2_TARGETS; do
    IFS=: read -r name host port pid <<<"$t"
    c0=$(cpu "$pid")
    out=$(h2load -c "$CONN" -m 8 -t $THREADS -D "$DUR" -d "$tmp/h2body.json" \
      -H 'content-type: application/json' -H 'authorization: Bearer sk-bench' \
      "http://$host:$port/v1/chat/completions" 2>&1)
    c1=$(cpu "$pid")
    rps=$(awk '/^finished in/ {gsub(",", ""); print $4}' <<<"$out")
    done_n=$(awk '/^requests:/ {print $8}' <<<"$out")
    ok=$(awk '/^status codes:/ {print $3}' <<<"$out")
    us=$(awk -v t=$((c1 - c0)) -v hz="$HZ" -v n="${done_n:-1}" 'BEGIN { printf "%.1f", t / hz * 1e6 / (n > 0 ? n : 1) }')
    H[$name]="$rps $done_n $ok $us"
  done
fi

echo
echo "machine: $machine; wrk -t$THREADS -c$CONN -d${DUR}s"
echo
echo "| target | mode | requests/s | p50 ms | p99 ms | errors | CPU µs/req | RSS MiB |"
echo "| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: |"
for stream in false true; do
  mode=$([ $stream = true ] && echo streaming || echo json)
  for t in $TARGETS; do
    read -r rps p50 p99 errs mem us <<<"${R[$t-$stream]}"
    echo "| $t | $mode | $rps | $p50 | $p99 | $errs | $us | $mem |"
  done
done
echo
echo "fixed rate, 200 requests/s for ${DUR}s (JSON, open loop, latency from the scheduled start):"
echo
echo "| target | requests | errors | p50 ms | p99 ms | max ms |"
echo "| --- | ---: | ---: | ---: | ---: | ---: |"
for t in direct passthrough portcullis; do
  read -r n errs p50 p99 max <<<"${F[$t]}"
  echo "| $t | $n | $errs | $p50 | $p99 | $max |"
done
if [ ${#H[@]} -gt 0 ]; then
  echo
  echo "HTTP/2 prior knowledge, h2load -c$CONN -m8 -D${DUR} (portcullis: every layer but dedup):"
  echo
  echo "| target | requests/s | requests | 2xx | CPU µs/req |"
  echo "| --- | ---: | ---: | ---: | ---: |"
  for t in passthrough portcullis ${AH2:+portcullis-against}; do
    read -r rps n ok us <<<"${H[$t]}"
    echo "| $t | $rps | $n | $ok | $us |"
  done
fi
echo
for stream in false true; do
  read -r prps _ pp99 _ _ pus <<<"${R[passthrough-$stream]}"
  read -r grps _ gp99 _ _ gus <<<"${R[portcullis-$stream]}"
  mode=$([ $stream = true ] && echo streaming || echo json)
  awk -v m="$mode" -v a="$grps" -v b="$prps" -v c="$gp99" -v d="$pp99" -v e="$gus" -v f="$pus" \
    'BEGIN { printf "%s: portcullis/passthrough requests/s = %.2fx, p99 = %.2fx, CPU/request = %.2fx\n", m, a/b, c/d, e/f }'
  if [ -n "${AGAINST:-}" ]; then
    read -r arps _ _ _ _ aus <<<"${R[portcullis-against-$stream]}"
    awk -v m="$mode" -v a="$arps" -v b="$prps" -v e="$aus" -v f="$pus" \
      'BEGIN { printf "%s: against/passthrough requests/s = %.2fx, CPU/request = %.2fx\n", m, a/b, e/f }'
  fi
done
read -r _ _ _ dp99 _ <<<"${F[direct]}"
read -r _ _ _ pp99 _ <<<"${F[passthrough]}"
read -r _ _ _ gp99 _ <<<"${F[portcullis]}"
awk -v d="$dp99" -v p="$pp99" -v g="$gp99" \
  'BEGIN { printf "200 req/s: added p99 portcullis %.3f ms / passthrough %.3f ms = %.2fx\n", g-d, p-d, ((p-d) > 0 ? (g-d)/(p-d) : 0) }'
if [ ${#H[@]} -gt 0 ]; then
  read -r prps _ _ pus <<<"${H[passthrough]}"
  read -r grps _ _ gus <<<"${H[portcullis]}"
  awk -v a="$grps" -v b="$prps" -v e="$gus" -v f="$pus" \
    'BEGIN { printf "http/2: portcullis/passthrough requests/s = %.2fx, CPU/request = %.2fx\n", a/b, e/f }'
  if [ -n "${AH2:-}" ]; then
    read -r arps _ _ aus <<<"${H[portcullis-against]}"
    awk -v a="$arps" -v b="$prps" -v e="$aus" -v f="$pus" \
      'BEGIN { printf "http/2: against/passthrough requests/s = %.2fx, CPU/request = %.2fx\n", a/b, e/f }'
  fi
fi
