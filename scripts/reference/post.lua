-- wrk script for scripts/bench.sh: POSTs WRK_BODY (JSON) with an optional bearer WRK_KEY, and
-- counts responses whose status is not 200 or whose body lacks WRK_EXPECT (so a reply that
-- streamed an error counts as bad, not as a fast success). done() prints one machine-readable
-- line: RESULT <req/s> <p50 µs> <p90 µs> <p99 µs> <max µs> <socket errors> <bad replies>.
wrk.method = "POST"
wrk.body = os.getenv("WRK_BODY")
wrk.headers["Content-Type"] = "application/json"
local key = os.getenv("WRK_KEY")
if key ~= nil and key ~= "" then
  wrk.headers["Authorization"] = "Bearer " .. key
end
local expect = os.getenv("WRK_EXPECT") or ""

local threads = {}
function setup(thread)
  table.insert(threads, thread)
end

bad = 0
function response(status, headers, body)
  if status ~= 200 or (expect ~= "" and not string.find(body, expect, 1, true)) then
    bad = bad + 1
  end
end

function done(summary, latency, requests)
  local total_bad = 0
  for _, t in ipairs(threads) do
    total_bad = total_bad + t:get("bad")
  end
  local e = summary.errors
  local socket_errors = e.connect + e.read + e.write + e.timeout
  io.write(string.format("RESULT %.1f %d %d %d %d %d %d\n",
    summary.requests / (summary.duration / 1e6),
    latency:percentile(50), latency:percentile(90), latency:percentile(99), latency.max,
    socket_errors, total_bad))
end
