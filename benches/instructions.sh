#!/usr/bin/env bash
# Instructions per request, counted by valgrind's callgrind: the same count for the same
# binary and requests whatever else the machine is doing, so one layer's cost shows even
# where wall-clock runs on a shared machine swing by more than that layer costs.
#
#   bash benches/instructions.sh [REQUESTS]             # pass-through, bare, the defaults
#                                                       # (benches/load-defaults.toml: pretty
#                                                       # logs), every layer, and every layer
#                                                       # but one, for each layer
#   ONLY="passthrough all" bash benches/instructions.sh # a subset of the variants
#   ONLY=traced bash benches/instructions.sh            # every layer with traces exported over
#                                                       # OTLP/HTTP (to a local sink; not in the
#                                                       # default set: the export's encoding, on
#                                                       # its own thread, is most of it)
#   TOP=25 bash benches/instructions.sh                 # also the top inclusive functions
#   KEEP=DIR bash benches/instructions.sh               # keep the callgrind files in DIR
#   BIN=/other/target/profiling bash benches/instructions.sh   # binaries built elsewhere
#                                                       # (another profile or commit; no build)
#   STREAM=true bash benches/instructions.sh            # streamed chat requests instead
#   H2=true bash benches/instructions.sh                # HTTP/2 (h2c) from the client instead
#   BODY=file.json bash benches/instructions.sh         # this request body instead (an agent's
#                                                       # long conversation, say)
#   CACHE=true bash benches/instructions.sh             # also the L1 cache misses callgrind's
#                                                       # cache model counts (instruction fetch,
#                                                       # data read, data write) per request
#   HOT=true bash benches/instructions.sh               # also the hot code: KiB of 64-byte lines
#                                                       # of machine code holding an instruction
#                                                       # run at least once per request on average
#                                                       # (more than the L1 instruction cache, 32
#                                                       # KiB, holds is fetched again every request)
#   HOT=true HOTTOP=30 bash benches/instructions.sh     # ... and the functions with the most of it
#                                                       # HOT=true also counts the atomic
#                                                       # read-modify-writes run per request (the
#                                                       # binary's `lock`-prefixed instructions and
#                                                       # `xchg` with memory, found by objdump):
#                                                       # one instruction each to callgrind, ~20
#                                                       # cycles each to the CPU
#
# Each variant runs under callgrind (the mock upstream and the client, h2load --h1, run
# natively): warmed up with 200 requests, counters zeroed, REQUESTS (default 2000) JSON chat
# requests sent one at a time, counters dumped. User-space instructions only: the kernel's
# share (sockets, about a third of the time under load) is not counted, so these ratios are
# the part the code controls. Builds the `profiling` profile (release with line tables).
#
# Needs valgrind and h2load (apt-get install -y valgrind nghttp2-client).
set -euo pipefail
cd "$(dirname "$0")/.."
N="${1:-2000}"
command -v valgrind >/dev/null || { echo "valgrind is not installed" >&2; exit 1; }
command -v h2load >/dev/null || { echo "h2load is not installed: apt-get install -y nghttp2-client" >&2; exit 1; }
# The gateway in its own invocation, as in benches/load.sh (no dev-dependency features).
if [ -z "${NO_BUILD:-}${BIN:-}" ]; then
  cargo build --profile profiling --quiet --example mock_upstream --example passthrough_proxy
  cargo build --profile profiling --quiet --bin portcullis
fi
BIN="${BIN:-target/profiling}"
MOCK=127.0.0.1:19501 TARGET=127.0.0.1:19502
tmp=$(mktemp -d)
pids=()
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; rm -rf "$tmp"; }
trap cleanup EXIT
$BIN/examples/mock_upstream --listen $MOCK >"$tmp/mock.log" 2>&1 & pids+=($!)
printf '{"model":"gpt-4o-mini","stream":%s,"messages":[{"role":"user","content":"hello instructions"}]}' \
  "${STREAM:-false}" >"$tmp/body.json"
[ -z "${BODY:-}" ] || cp "$BODY" "$tmp/body.json"

# A config: benches/load.toml (every layer on) with one section turned off.
without() { # section -> config file
  sed -e "s#@MOCK@#http://$MOCK#" -e "s#@AUDIT@#$tmp/audit.jsonl#" benches/load.toml |
    awk -v s="[$1]" '
      /^\[/ { in_s = ($0 == s) }
      in_s && /^enabled = true$/ { $0 = "enabled = false" }
      in_s && s == "[validation]" && /^level = / { $0 = "level = \"lenient\"" }
      in_s && s == "[audit]" && /^path = / { next }
      s == "[upstreams]" && /^cookies = true$/ { $0 = "cookies = false" }
      { print }' >"$tmp/$1.toml"
  echo "$tmp/$1.toml"
}

# HOT=true: each instruction's count is summed by address (absolute `0x...`, or relative
# `+n`/`-n` to the line before); a call's line (after `calls=`) is the callee's cost, not an
# instruction of this one. Prints the KiB of 64-byte lines holding an instruction run at least
# `n` times, then (`locks`: a file of addresses) how often those addresses ran per request; with
# HOTTOP=K, also (to stderr) the K functions owning the most of those lines.
cat >"$tmp/hot.awk" <<'AWK'
function hex(s,   i, v) {
  v = 0; s = tolower(substr(s, 3))
  for (i = 1; i <= length(s); i++) v = v * 16 + index("0123456789abcdef", substr(s, i, 1)) - 1
  return v
}
BEGIN { if (locks != "") while ((getline l < locks) > 0) lock[sprintf("%.0f", hex(l))] = 1 }
# `fn=(id) name` or `cfn=(id) name` (a callee) names a function once; later `(id)` alone
# refers to it.
/^c?fn=/ {
  id = $0; sub(/^c?fn=/, "", id); nm = id; sub(/\).*/, ")", id); sub(/^\([0-9]+\) ?/, "", nm)
  if (nm != "") fname[id] = nm
  if ($0 ~ /^fn=/) fn = fname[id]
  next
}
/^calls=/ { skip = 1; next }
/^(0x|[0-9]|\+|-|\*)/ {
  a = $1
  if (a ~ /^0x/) addr = hex(a); else if (a ~ /^\+/) addr += substr(a, 2)
  else if (a ~ /^-/) addr -= substr(a, 2); else if (a != "*") addr = a + 0
  if (skip) { skip = 0; next }
  k = sprintf("%.0f", addr); ir[k] += $3; owner[k] = fn
  if (k in lock) atomic += $3
}
END {
  for (x in ir) if (ir[x] >= n) {
    l = sprintf("%.0f", int(x / 64))
    if (!(l in line)) { line[l] = 1; lines++; by[owner[x]]++ }
  }
  printf "%.0f | %.0f", lines * 64 / 1024, atomic / n
  if (top > 0) {
    printf "== %s: hot code by function (64-byte lines)\n", name > "/dev/stderr"
    for (shown = 0; shown < top; shown++) {
      best = ""; max = 0
      for (f in by) if (by[f] > max) { max = by[f]; best = f }
      if (max == 0) break
      printf "%6d  %s\n", max, substr(best, 1, 150) > "/dev/stderr"
      delete by[best]
    }
  }
}
AWK

# HOT=true: the binary's atomic read-modify-writes, for hot.awk to count: its `lock`-prefixed
# instructions and its `xchg`s with a memory operand (locked without the prefix), at the
# addresses objdump prints (the dump's addresses are the binary's own).
lock_addresses() { # binary -> file
  objdump -d --no-show-raw-insn "$1" |
    awk '/^ *[0-9a-f]+:\t(lock |xchg[^(]*\()/ { a = $1; sub(":", "", a); print "0x" a }' >"$tmp/locks"
  echo "$tmp/locks"
}

load() { # addr requests
  # shellcheck disable=SC2046
  h2load $([ "${H2:-false}" = true ] || echo --h1) -n "$2" -c 1 -d "$tmp/body.json" -H 'content-type: application/json' \
    -H 'authorization: Bearer sk-bench' "http://$1/v1/chat/completions" >"$tmp/h2load.log" 2>&1
  grep -q "succeeded, 0 errored" "$tmp/h2load.log" || grep -q "$2 succeeded" "$tmp/h2load.log" ||
    { echo "requests failed:" >&2; cat "$tmp/h2load.log" >&2; exit 1; }
}

measure() { # name command...
  local name=$1; shift
  # shellcheck disable=SC2046
  valgrind --tool=callgrind $([ "${CACHE:-false}" = true ] && echo --cache-sim=yes) \
    $([ "${HOT:-false}" = true ] && echo --dump-instr=yes) \
    --callgrind-out-file="$tmp/cg.$name" "$@" >"$tmp/$name.log" 2>&1 &
  local pid=$!
  for _ in $(seq 600); do curl -sf -o /dev/null "http://$TARGET/health" 2>/dev/null && break
    curl -s -o /dev/null "http://$TARGET/" 2>/dev/null && break; sleep 0.2; done
  load $TARGET 200
  callgrind_control -z "$pid" >/dev/null 2>&1
  load $TARGET "$N"
  callgrind_control -d "$pid" >/dev/null 2>&1
  kill "$pid"; wait "$pid" 2>/dev/null || true
  local dump
  dump=$(ls "$tmp/cg.$name".* | head -1)
  # The summary line's counts, in the order of its `events:` line (Ir, then with the cache
  # model Dr Dw I1mr D1mr D1mw ILmr DLmr DLmw), each per request.
  local row
  row=$(awk -v n="$N" -v cache="${CACHE:-false}" '
    /^events:/ { for (i = 2; i <= NF; i++) col[$i] = i }
    /^summary:|^totals:/ {
      split($0, v, " ")
      printf "%.0f", v[col["Ir"]] / n
      if (cache == "true") printf " | %.0f | %.0f | %.0f", v[col["I1mr"]] / n, v[col["D1mr"]] / n, v[col["D1mw"]] / n
      exit
    }' "$dump")
  [ "${HOT:-false}" != true ] || row="$row | $(awk -v n="$N" -v top="${HOTTOP:-0}" -v name="$name" \
    -v locks="$(lock_addresses "$1")" -f "$tmp/hot.awk" "$dump")"
  printf '| %s | %s |\n' "$name" "$row"
  # KEEP=DIR keeps each variant's callgrind file (callgrind_annotate DIR/cg.VARIANT).
  [ -z "${KEEP:-}" ] || cp "$dump" "$KEEP/cg.$name"
  if [ -n "${TOP:-}" ]; then
    callgrind_annotate --inclusive=yes "$dump" >"$tmp/top.$name" 2>/dev/null || true
    echo "== $name" >&2
    sed -n "20,$((TOP + 25))p" "$tmp/top.$name" >&2
  fi
}

LAYERS="memory_routing retry circuit_breaker dedup rate_limit validation loop_detection tool_call_loop commands audit upstreams"
VARIANTS="${ONLY:-passthrough bare defaults all $(for l in $LAYERS; do printf 'no-%s ' "$l"; done)}"
echo "instructions per request (callgrind, user space), $N sequential $([ "${STREAM:-false}" = true ] && echo streamed || echo JSON) chat requests"
echo
head="| variant | instructions/request" rule="| --- | ---:"
if [ "${CACHE:-false}" = true ]; then
  head="$head | L1 instruction misses | L1 data read misses | L1 data write misses"
  rule="$rule | ---: | ---: | ---:"
fi
[ "${HOT:-false}" != true ] || { head="$head | hot code (KiB) | atomic operations/request"; rule="$rule | ---: | ---:"; }
echo "$head |"
echo "$rule |"
for v in $VARIANTS; do
  case $v in
    passthrough) measure passthrough $BIN/examples/passthrough_proxy $TARGET "http://$MOCK" ;;
    bare)
      sed -e "s#@MOCK@#http://$MOCK#" benches/load-bare.toml >"$tmp/bare.toml"
      measure bare $BIN/portcullis serve --config "$tmp/bare.toml" --listen $TARGET ;;
    defaults)
      sed -e "s#@MOCK@#http://$MOCK#" benches/load-defaults.toml >"$tmp/defaults.toml"
      measure defaults $BIN/portcullis serve --config "$tmp/defaults.toml" --listen $TARGET ;;
    all) measure all $BIN/portcullis serve --config "$(without none)" --listen $TARGET ;;
    traced) # every layer, spans exported over OTLP/HTTP to a sink that answers 200 to anything
      python3 -c 'import http.server as h
class S(h.BaseHTTPRequestHandler):
    def do_POST(self):
        self.rfile.read(int(self.headers.get("content-length", 0))); self.send_response(200)
        self.send_header("content-length", "0"); self.end_headers()
    def log_message(self, *a): pass
h.HTTPServer(("127.0.0.1", 19503), S).serve_forever()' & pids+=($!)
      cfg=$(without none); echo 'otlp_endpoint = "http://127.0.0.1:19503"' >>"$cfg"
      measure traced $BIN/portcullis serve --config "$cfg" --listen $TARGET ;;
    no-*) measure "$v" $BIN/portcullis serve --config "$(without "${v#no-}")" --listen $TARGET ;;
  esac
done
