-- Cycles POST /mutate over the AdmissionReview bodies named after `--`.
local bodies = {}
local i = 0

function init(args)
  for _, path in ipairs(args) do
    local f = assert(io.open(path, "rb"))
    bodies[#bodies + 1] = f:read("*a")
    f:close()
  end
end

function request()
  i = i % #bodies + 1
  return wrk.format("POST", "/mutate?timeout=10s", { ["Content-Type"] = "application/json" }, bodies[i])
end

function done(summary, latency, requests)
  io.write(string.format("requests=%d errors=%d non2xx=%d rps=%.0f p50_ms=%.3f p90_ms=%.3f p99_ms=%.3f max_ms=%.3f\n",
    summary.requests, summary.errors.connect + summary.errors.read + summary.errors.write + summary.errors.timeout,
    summary.errors.status, summary.requests / (summary.duration / 1e6),
    latency:percentile(50) / 1000, latency:percentile(90) / 1000, latency:percentile(99) / 1000, latency.max / 1000))
end
