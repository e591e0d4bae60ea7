-- A batch of 10 primary-key lookups on the demo users table, with random keys.
-- wrk -t2 -c16 -d10s -s bench/wrk/batch10.lua http://127.0.0.1:8080
wrk.method = "POST"
wrk.path = "/v1/batch"
wrk.headers["Content-Type"] = "application/json"

request = function()
  local q = {}
  for i = 1, 10 do
    q[i] = string.format('{"sql":"SELECT id, name, email FROM users WHERE id = $1","params":[%d]}',
                         math.random(1, 1000))
  end
  return wrk.format(nil, nil, nil, '{"queries":[' .. table.concat(q, ",") .. ']}')
end

local non200 = 0
response = function(status, headers, body)
  if status ~= 200 then non200 = non200 + 1 end
end

done = function(summary, latency, requests)
  local s = summary.duration / 1e6
  io.write(string.format("requests/s %.0f  queries/s %.0f  p50 %.2fms p90 %.2fms p99 %.2fms  errors %d\n",
    summary.requests / s, summary.requests * 10 / s,
    latency:percentile(50) / 1e3, latency:percentile(90) / 1e3, latency:percentile(99) / 1e3,
    summary.errors.status + summary.errors.connect + summary.errors.read + summary.errors.write + summary.errors.timeout))
end
