-- wrk's request script for benches/load.sh and benches/pgo.sh: JSON chat completions
-- (STREAM=true|false).
-- Every request has its own prompt (thread id + counter), so dedup never coalesces them;
-- with KEYS=distinct every request also has its own Authorization (its own rate-limit key).
local n = 0
function setup(thread) n = n + 1; thread:set("tid", n) end
local counter = 0
local distinct = os.getenv("KEYS") == "distinct"
function request()
  counter = counter + 1
  local body = '{"model":"gpt-4o-mini","stream":' .. os.getenv("STREAM") ..
    ',"messages":[{"role":"user","content":"hello ' .. tostring(tid) .. '-' .. counter .. '"}]}'
  local auth = "Bearer sk-bench"
  if distinct then auth = auth .. "-" .. tostring(tid) .. "-" .. counter end
  return wrk.format("POST", "/v1/chat/completions",
    {["Content-Type"] = "application/json", ["Authorization"] = auth}, body)
end
function done(summary, latency, requests)
  local errs = summary.errors.connect + summary.errors.read + summary.errors.write +
    summary.errors.timeout + summary.errors.status
  io.write(string.format("RESULT %.1f %.3f %.3f %d %d\n", summary.requests / (summary.duration / 1e6),
    latency:percentile(50) / 1000, latency:percentile(99) / 1000, errs, summary.requests))
end
