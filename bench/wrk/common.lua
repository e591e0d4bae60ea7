-- Shared code of the fanout wrk scripts (wrk 4.1, LuaJIT): request bodies, a seeded per-thread
-- PRNG, reply accounting, and the report printed by done().
--
-- A script loads this file from its own directory, whatever the caller's cwd (wrk loads a script
-- by the path given to -s, so debug.getinfo's source is "@" .. that path):
--   local here = debug.getinfo(1, "S").source:match("^@(.*[/\\])") or ""
--   local loaded, common = pcall(dofile, here .. "common.lua")
-- and hands common.run() a spec (see the bottom of this file).
--
-- wrk runs one Lua state per thread plus a main one. The main state runs setup(thread) for each
-- thread and, at the end, done(). Each thread state runs init(), request() and response(); its
-- counters are globals (bench_*) that done() reads back with thread:get().
--
-- Settings come from the environment, so the main state (done) and the threads agree:
--   BENCH_SEED      base seed of the per-thread PRNGs (default 1); thread i (1-based) starts from
--                   seed*65536+i, so threads differ and a run with the same seed and thread count
--                   draws the same keys
--   BENCH_KEYS      point-select keys are drawn from 1..BENCH_KEYS (default 1000, the demo users)
--   BENCH_SQL       the point select, one $1 parameter
--                   (default "SELECT id, name, email FROM users WHERE id = $1")
-- and the script-specific ones described in each script.

local M = {}

-- Settings ---------------------------------------------------------------------------------------

-- Stop wrk with a message. A Lua error would not: wrk prints it and goes on without the
-- script, load-testing GET / instead. The main state loads the script before any thread runs.
function M.fail(msg)
  io.stderr:write("bench: ", msg, "\n")
  os.exit(2)
end

function M.env(name, default)
  local v = os.getenv(name)
  if v == nil or v == "" then return default end
  return v
end

function M.env_int(name, default, min, max)
  local raw = M.env(name, nil)
  if raw == nil then return default end
  local v = tonumber(raw)
  if v == nil or v ~= math.floor(v) or v < min or v > max then
    M.fail(string.format("%s=%s: want an integer in %d..%d", name, raw, min, max))
  end
  return v
end

function M.env_num(name, default, min, max)
  local raw = M.env(name, nil)
  if raw == nil then return default end
  local v = tonumber(raw)
  if v == nil or v < min or v > max then
    M.fail(string.format("%s=%s: want a number in %g..%g", name, raw, min, max))
  end
  return v
end

M.seed = M.env_int("BENCH_SEED", 1, 0, 2147483646)
M.keys = M.env_int("BENCH_KEYS", 1000, 1, 2147483646)
M.point_sql = M.env("BENCH_SQL", "SELECT id, name, email FROM users WHERE id = $1")

-- JSON -------------------------------------------------------------------------------------------

local escapes = { ['"'] = '\\"', ['\\'] = '\\\\', ['\b'] = '\\b', ['\f'] = '\\f',
                  ['\n'] = '\\n', ['\r'] = '\\r', ['\t'] = '\\t' }

-- A Lua string as a JSON string literal (the input is taken to be UTF-8).
function M.json_string(s)
  return '"' .. s:gsub('[%c"\\]', function(c)
    return escapes[c] or string.format("\\u%04x", c:byte())
  end) .. '"'
end

-- A flat table as a JSON object; values are numbers, strings or booleans. Keys are sorted so
-- the output is stable.
function M.json_object(t, order)
  local keys = order
  if not keys then
    keys = {}
    for k in pairs(t) do keys[#keys + 1] = k end
    table.sort(keys, function(a, b) return tostring(a) < tostring(b) end)
  end
  local out = {}
  for _, k in ipairs(keys) do
    local v = t[k]
    local js
    if type(v) == "table" then js = M.json_object(v)
    elseif type(v) == "string" then js = M.json_string(v)
    elseif type(v) == "boolean" then js = tostring(v)
    elseif type(v) == "number" then
      if v ~= v or v == math.huge or v == -math.huge then js = "null"
      elseif v == math.floor(v) and math.abs(v) < 2^53 then js = string.format("%d", v)
      else js = string.format("%.3f", v) end
    else js = "null" end
    out[#out + 1] = M.json_string(tostring(k)) .. ":" .. js
  end
  return "{" .. table.concat(out, ",") .. "}"
end

-- Request bodies ---------------------------------------------------------------------------------

-- A query builder for one SQL text: q(params_json) returns the query object, where params_json
-- is the already-encoded text inside the params array (e.g. "42" or '17,"abc"').
function M.query(sql)
  local head = '{"sql":' .. M.json_string(sql) .. ',"params":['
  return function(params_json) return head .. params_json .. "]}" end
end

-- The whole body for a list of query objects. extra: more top-level fields, already encoded,
-- e.g. '"mode":"transaction"'.
function M.batch(queries, extra)
  local tail = "]}"
  if extra then tail = "]," .. extra .. "}" end
  return '{"queries":[' .. table.concat(queries, ",") .. tail
end

-- The body of a batch of n point selects (M.point_sql) with random keys in 1..M.keys.
function M.point_batch(n)
  local q = M.query(M.point_sql)
  local keys, parts = M.keys, {}
  return function(rand)
    for i = 1, n do parts[i] = q(rand(keys)) end
    return M.batch(parts)
  end
end

-- PRNG -------------------------------------------------------------------------------------------
-- Park-Miller "minimal standard" (multiplier 48271, modulus 2^31-1): exact in doubles, the same
-- sequence in LuaJIT and PUC Lua, and private to the thread's Lua state (math.random in PUC Lua
-- is the C library's rand(), shared by every thread of the process).

local MOD = 2147483647

function M.prng(seed)
  local s = seed % (MOD - 1) + 1            -- 1 .. MOD-1; 0 would be a fixed point
  local function step() s = (s * 48271) % MOD; return s end
  for _ = 1, 8 do step() end                -- spread nearby seeds apart
  -- rand(n): an integer in 1..n (n < 2^31; the modulo bias is below n/2^31).
  return function(n) return step() % n + 1 end
end

-- Thread plumbing --------------------------------------------------------------------------------

-- Main state: every thread, in order, for done().
local threads = {}

-- Thread state: the counters done() collects (globals, so thread:get sees them).
bench_non200 = 0                -- replies whose status is not 200
-- wrk 4.1's thread:get() of a table corrupts the thread's Lua stack (it pops one slot too many),
-- so the tables stay in the thread and done() reads them as "key=count ..." strings.
bench_status = {}               -- status -> count, for the non-200 ones
bench_status_text = ""          -- bench_status as "key=count ...", what done() reads
bench_query_errors = 0          -- failed queries inside 200 replies
bench_error_codes = {}          -- error code (SQLSTATE or fanout's) -> count
bench_error_codes_text = ""     -- the same as "key=count ..."
bench_setup_replies = 0         -- replies to a spec.setup_body (not counted as benchmark requests)

-- A count table as "key=count ..." and back (only numbers and strings cross threads safely).
local function to_text(t)
  local parts = {}
  for k, v in pairs(t) do parts[#parts + 1] = tostring(k) .. "=" .. tostring(v) end
  return table.concat(parts, " ")
end

local function from_text(text)
  local t = {}
  for k, v in string.gmatch(text or "", "(%S+)=(%d+)") do t[k] = tonumber(v) end
  return t
end

-- Count the per-query errors of a 200 reply: each failed query's result holds
-- "error":{"code":"...". A text value cannot fake it (fanout escapes the quotes in strings); a
-- json/jsonb value holding that object could, and none of these scripts selects one.
local ERR = '"error":{"code":"'
local function count_query_errors(body)
  if not body or not body:find(ERR, 1, true) then return end
  for code in body:gmatch('"error":{"code":"([^"]*)"') do
    bench_query_errors = bench_query_errors + 1
    bench_error_codes[code] = (bench_error_codes[code] or 0) + 1
  end
  bench_error_codes_text = to_text(bench_error_codes)
end

-- Merge thread tables: a[k] += b[k].
local function merge(a, b)
  for k, v in pairs(b or {}) do a[tostring(k)] = (a[tostring(k)] or 0) + v end
  return a
end


local function describe(t)
  local keys = {}
  for k in pairs(t) do keys[#keys + 1] = k end
  table.sort(keys)
  local out = {}
  for _, k in ipairs(keys) do out[#out + 1] = string.format("%s x%d", k, t[k]) end
  return table.concat(out, ", ")
end

-- The benchmark ----------------------------------------------------------------------------------
-- spec = {
--   name       = "batch10",        -- the script's name in the report
--   queries    = 10,               -- queries per request (for queries/s)
--   body       = function(rand) ... end,   -- the JSON body of the next request; rand(n) in 1..n
--   setup_body = "...",            -- optional: a transaction-mode batch each thread sends (in place
--                                  -- of its requests) until one reply says "committed":true;
--                                  -- these replies are left out of requests/s and queries/s
-- }
-- Defines wrk's setup, init, request, response and done as globals.
function M.run(spec)
  wrk.method = "POST"
  wrk.path = "/v1/batch"
  wrk.headers["Content-Type"] = "application/json"

  setup = function(thread)
    threads[#threads + 1] = thread
    thread:set("bench_thread_index", #threads)
  end

  local rand
  local ready = spec.setup_body == nil

  init = function(args)
    rand = M.prng(M.seed * 65536 + (bench_thread_index or 1))
  end

  request = function()
    if not ready then
      return wrk.format(nil, nil, nil, spec.setup_body)
    end
    return wrk.format(nil, nil, nil, spec.body(rand))
  end

  response = function(status, headers, body)
    if status ~= 200 then
      bench_non200 = bench_non200 + 1
      bench_status[status] = (bench_status[status] or 0) + 1
      bench_status_text = to_text(bench_status)
      return
    end
    if spec.setup_body and body:find('"committed":', 1, true) then
      bench_setup_replies = bench_setup_replies + 1
      if body:find('"committed":true', 1, true) then ready = true end
    end
    count_query_errors(body)
  end

  done = function(summary, latency, requests)
    local non200, query_errors, setup_replies = 0, 0, 0
    local statuses, codes = {}, {}
    for _, t in ipairs(threads) do
      non200 = non200 + (t:get("bench_non200") or 0)
      query_errors = query_errors + (t:get("bench_query_errors") or 0)
      setup_replies = setup_replies + (t:get("bench_setup_replies") or 0)
      merge(statuses, from_text(t:get("bench_status_text")))
      merge(codes, from_text(t:get("bench_error_codes_text")))
    end
    local e = summary.errors
    local socket_errors = e.connect + e.read + e.write + e.timeout
    local secs = summary.duration / 1e6
    -- requests/s and queries/s count the 200 replies only (wrk's own Requests/sec line counts
    -- every reply, so a run that gets quick 503s would look faster than it is).
    local reqs = summary.requests - setup_replies
    local ok = reqs - non200
    local rps = secs > 0 and ok / secs or 0
    local ms = function(p) return latency:percentile(p) / 1000 end
    local r = {
      script = spec.name,
      threads = #threads,
      duration_s = secs,
      requests = reqs,
      ok_requests = ok,
      queries_per_request = spec.queries,
      rps = rps,
      qps = rps * spec.queries,
      p50_ms = ms(50), p90_ms = ms(90), p99_ms = ms(99),
      mean_ms = latency.mean / 1000, max_ms = latency.max / 1000,
      non200 = non200,
      non200_by_status = statuses,
      query_errors = query_errors,
      query_errors_by_code = codes,
      socket_errors = socket_errors,
      seed = M.seed,
    }
    io.write(string.format(
      "%s: %.1f requests/s, %.1f queries/s (%d per request); latency p50 %.2f ms, p90 %.2f ms, p99 %.2f ms\n",
      r.script, r.rps, r.qps, r.queries_per_request, r.p50_ms, r.p90_ms, r.p99_ms))
    io.write(string.format("%s: %d replies in %.2f s, %d of them 200; non-200 replies %d%s; failed queries %d%s; socket errors %d%s\n",
      r.script, reqs, secs, ok,
      non200, non200 > 0 and " (" .. describe(statuses) .. ")" or "",
      query_errors, query_errors > 0 and " (" .. describe(codes) .. ")" or "",
      socket_errors, socket_errors > 0 and string.format(" (connect %d, read %d, write %d, timeout %d)",
        e.connect, e.read, e.write, e.timeout) or ""))
    if setup_replies > 0 then
      io.write(string.format("%s: %d setup batches left out of the counts\n", r.script, setup_replies))
    end
    io.write("RESULT " .. M.json_object(r, {
      "script", "rps", "qps", "p50_ms", "p90_ms", "p99_ms", "non200", "query_errors", "socket_errors",
      "requests", "ok_requests", "queries_per_request", "duration_s", "threads", "mean_ms", "max_ms", "seed",
      "non200_by_status", "query_errors_by_code" }) .. "\n")
  end
end

return M
