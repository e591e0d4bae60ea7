-- The fault run's wrk script: bench/wrk/mixed.lua's batch, and a check of every reply.
--   wrk -t2 -c64 -d60s --timeout 60s -s tests/fault/fault.lua http://127.0.0.1:PORT
-- With FAULT_PROBE=1 it is the probe instead: on each connection a one-query batch
-- (SELECT count(*) FROM users) about once a second (run it with -t1 -c10: about 10 a second),
-- with the same checks and report.
--
-- Every reply (mixed.lua's setup batches included) is counted by status, and checked against what
-- fanout promises under database loss:
--   200  a JSON body (a syntax check of the whole body) that is an object with a "results" array;
--        the per-query errors inside are counted by code (they are allowed)
--   503  Content-Type application/json and a JSON body {"error":{"code":C,...}} with C one of
--        db_unavailable, overloaded (the only two reasons fanout may answer 503)
--   anything else is a violation.
-- done() prints lines for tests/fault/run.sh to read:
--   FAULT replies=N status_200=N status_503=N status_other=N 503_db_unavailable=N
--         503_overloaded=N violations=N failed_queries=N replies_with_failed_queries=N
--         max_ms=X p50_ms=X p99_ms=X socket_errors=N connect=N read=N write=N timeout=N
--   FAULT_CODES <code>=<count> ...            the failed queries inside 200s, by code
--   FAULT_VIOLATIONS <kind>=<count> ...       the violations by kind
--   FAULT_SAMPLE <status> <kind> <first 200 bytes>   the first few violating replies (per thread)
--   FAULT_SECOND <epoch s> <clean 200> <200 with failed queries> <503 db_unavailable> <503 overloaded> <violations>
-- (the last one a timeline: the replies that arrived in each wall-clock second).
--
-- Only numbers and strings cross from the threads to done(): wrk 4.1's thread:get() of a table
-- pops one slot too many off the thread's Lua stack (script_copy_value pops the table it copied,
-- then script_thread_get pops again), and the stack underflow corrupts memory: in trials a key
-- came back garbled and wrk died with a general protection fault inside LuaJIT. For the same
-- reason this script does not call mixed.lua's done() (common.lua gets two tables that way).

local here = debug.getinfo(1, "S").source:match("^@(.*[/\\])") or "./"
local ok, err = pcall(dofile, here .. "../../bench/wrk/mixed.lua")
if not ok then io.stderr:write("fault: ", tostring(err), "\n"); os.exit(2) end

-- mixed.lua has defined wrk's setup, init, request, response and done globals: keep its setup,
-- init and request (its batch, after the setup batch that creates its table, for which its
-- response() must see the reply); replace the rest.
local mixed_setup, mixed_response = setup, response

local probe = os.getenv("FAULT_PROBE") == "1"
if probe then
  local body = '{"queries":[{"sql":"SELECT count(*) AS n FROM users"}]}'
  request = function() return wrk.format(nil, nil, nil, body) end
  -- 0.5 to 1.5 s, so the connections do not all send in the same instant.
  delay = function() return math.random(500, 1500) end
end

-- JSON syntax check -------------------------------------------------------------------------------
-- decode(s) returns the value, or nil and a reason. Strings are checked for escapes and raw control
-- characters (not for UTF-8 validity); \u escapes decode to "?" (only the error code is read back).

local function decode(s)
  local pos, depth = 1, 0
  local value

  local function ws() pos = s:find("[^ \t\r\n]", pos) or #s + 1 end

  local function str()
    local parts, i = {}, pos + 1
    while true do
      local j = s:find('["\\%z\1-\31]', i)
      if not j then error("unterminated string", 0) end
      local c = s:byte(j)
      parts[#parts + 1] = s:sub(i, j - 1)
      if c == 34 then pos = j + 1; return table.concat(parts) end
      if c ~= 92 then error("raw control character in a string", 0) end
      local e = s:sub(j + 1, j + 1)
      if e == "u" then
        if not s:sub(j + 2, j + 5):match("^%x%x%x%x$") then error("bad \\u escape", 0) end
        parts[#parts + 1] = "?"; i = j + 6
      elseif e ~= "" and ('"\\/bfnrt'):find(e, 1, true) then
        parts[#parts + 1] = e; i = j + 2
      else
        error("bad escape", 0)
      end
    end
  end

  local function num()
    local a, b = s:find("^-?%d+", pos)
    if not a or (s:sub(pos, pos) == "0" and b > pos) or s:sub(pos, pos + 1) == "-0" and b > pos + 1 then
      error("bad number", 0)
    end
    pos = b + 1
    local _, f = s:find("^%.%d+", pos); if f then pos = f + 1 end
    local _, x = s:find("^[eE][-+]?%d+", pos); if x then pos = x + 1 end
    return 0
  end

  local function container(close, item)
    depth = depth + 1
    if depth > 64 then error("nested too deep", 0) end
    pos = pos + 1
    ws()
    if s:sub(pos, pos) == close then pos = pos + 1; depth = depth - 1; return end
    while true do
      item()
      ws()
      local c = s:sub(pos, pos)
      pos = pos + 1
      if c == close then depth = depth - 1; return end
      if c ~= "," then error("expected , or " .. close, 0) end
      ws()
    end
  end

  value = function()
    ws()
    local c = s:sub(pos, pos)
    if c == "{" then
      local t = {}
      container("}", function()
        if s:sub(pos, pos) ~= '"' then error("expected a key", 0) end
        local k = str()
        ws()
        if s:sub(pos, pos) ~= ":" then error("expected :", 0) end
        pos = pos + 1
        t[k] = value()
      end)
      return t
    elseif c == "[" then
      local t = {}
      container("]", function() t[#t + 1] = value() end)
      return t
    elseif c == '"' then return str()
    elseif c == "-" or c:match("%d") then return num()
    elseif s:sub(pos, pos + 3) == "true" then pos = pos + 4; return true
    elseif s:sub(pos, pos + 4) == "false" then pos = pos + 5; return false
    elseif s:sub(pos, pos + 3) == "null" then pos = pos + 4; return false
    end
    error("unexpected " .. (c == "" and "end of body" or "'" .. c .. "'"), 0)
  end

  local okv, v = pcall(function()
    local r = value()
    ws()
    if pos <= #s then error("trailing text", 0) end
    return r
  end)
  if not okv then return nil, v end
  return v
end

-- Thread state: scalar globals only (see the top) ------------------------------------------------

fault_replies, fault_200, fault_503_dbu, fault_503_ovl, fault_other_status = 0, 0, 0, 0, 0
fault_violations, fault_qerr, fault_qerr_replies = 0, 0, 0
fault_codes = ""          -- "code=count ..." of the failed queries, rebuilt when one is counted
fault_kinds = ""          -- "kind=count ..." of the violations, rebuilt on each
fault_samples = ""        -- the first few violating replies, one per line
-- and fault_<kind>_<epoch second> counters for the timeline, kind one of ok qerr dbu ovl bad

local codes, kinds, nsamples = {}, {}, 0

local function describe(t)
  local keys, out = {}, {}
  for k in pairs(t) do keys[#keys + 1] = k end
  table.sort(keys)
  for _, k in ipairs(keys) do out[#out + 1] = k .. "=" .. t[k] end
  return table.concat(out, " ")
end

local cur_sec, sec_key = nil, {}
local function tick(kind)
  local now = os.time()
  if now ~= cur_sec then
    cur_sec = now
    for _, k in ipairs({ "ok", "qerr", "dbu", "ovl", "bad" }) do sec_key[k] = "fault_" .. k .. "_" .. now end
  end
  local g = sec_key[kind]
  _G[g] = (_G[g] or 0) + 1
end

local function violation(kind, status, body)
  kind = kind:gsub("%s", "_")
  fault_violations = fault_violations + 1
  kinds[kind] = (kinds[kind] or 0) + 1
  fault_kinds = describe(kinds)
  if nsamples < 5 then
    nsamples = nsamples + 1
    fault_samples = fault_samples .. status .. " " .. kind .. " " ..
      (body or ""):sub(1, 200):gsub("%c", " ") .. "\n"
  end
  tick("bad")
end

local function header(headers, name)
  for k, v in pairs(headers or {}) do
    if k:lower() == name then return v end
  end
  return nil
end

local ERR = '"error":{"code":"'

response = function(status, headers, body)
  fault_replies = fault_replies + 1
  body = body or ""
  if status == 200 then
    fault_200 = fault_200 + 1
    local doc, why = decode(body)
    if doc == nil then
      violation("200_not_json(" .. why .. ")", status, body)
    elseif type(doc) ~= "table" or type(doc.results) ~= "table" then
      violation("200_without_results", status, body)
    elseif body:find(ERR, 1, true) then
      -- A text value cannot fake this (fanout escapes quotes in strings); none is selected here.
      for code in body:gmatch('"error":{"code":"([^"]*)"') do
        fault_qerr = fault_qerr + 1
        codes[code] = (codes[code] or 0) + 1
      end
      fault_codes = describe(codes)
      fault_qerr_replies = fault_qerr_replies + 1
      tick("qerr")
    else
      tick("ok")
    end
    -- mixed.lua's setup batch: once it has committed, mixed.lua's request() sends its batch.
    if not probe and body:find('"committed":', 1, true) then mixed_response(status, headers, body) end
  elseif status == 503 then
    local ct = header(headers, "content-type") or ""
    local doc, why = decode(body)
    local code = type(doc) == "table" and type(doc.error) == "table" and doc.error.code
    if not ct:lower():find("^application/json") then
      violation("503_content_type(" .. ct .. ")", status, body)
    elseif doc == nil then
      violation("503_not_json(" .. why .. ")", status, body)
    elseif code == "db_unavailable" then
      fault_503_dbu = fault_503_dbu + 1; tick("dbu")
    elseif code == "overloaded" then
      fault_503_ovl = fault_503_ovl + 1; tick("ovl")
    else
      violation("503_code(" .. tostring(code) .. ")", status, body)
    end
  else
    fault_other_status = fault_other_status + 1
    violation("status_" .. status, status, body)
  end
end

-- Main state --------------------------------------------------------------------------------------

local threads = {}
local started = os.time()

setup = function(thread)
  threads[#threads + 1] = thread
  return mixed_setup(thread)
end

done = function(summary, latency, requests)
  local n = { replies = 0, s200 = 0, dbu = 0, ovl = 0, other = 0, viol = 0, qerr = 0, qrep = 0 }
  local codes_all, kinds_all, samples = {}, {}, {}
  local function add_counts(into, text)
    for k, v in (text or ""):gmatch("(%S+)=(%d+)") do into[k] = (into[k] or 0) + tonumber(v) end
  end
  for _, t in ipairs(threads) do
    n.replies = n.replies + (t:get("fault_replies") or 0)
    n.s200 = n.s200 + (t:get("fault_200") or 0)
    n.dbu = n.dbu + (t:get("fault_503_dbu") or 0)
    n.ovl = n.ovl + (t:get("fault_503_ovl") or 0)
    n.other = n.other + (t:get("fault_other_status") or 0)
    n.viol = n.viol + (t:get("fault_violations") or 0)
    n.qerr = n.qerr + (t:get("fault_qerr") or 0)
    n.qrep = n.qrep + (t:get("fault_qerr_replies") or 0)
    add_counts(codes_all, t:get("fault_codes"))
    add_counts(kinds_all, t:get("fault_kinds"))
    samples[#samples + 1] = t:get("fault_samples") or ""
  end
  local n503 = n.replies - n.s200 - n.other
  local e = summary.errors
  local ms = function(p) return latency:percentile(p) / 1000 end
  io.write(string.format(
    "FAULT replies=%d status_200=%d status_503=%d status_other=%d 503_db_unavailable=%d " ..
    "503_overloaded=%d violations=%d failed_queries=%d replies_with_failed_queries=%d " ..
    "max_ms=%.3f p50_ms=%.3f p99_ms=%.3f socket_errors=%d connect=%d read=%d write=%d timeout=%d\n",
    n.replies, n.s200, n503, n.other, n.dbu, n.ovl, n.viol, n.qerr, n.qrep,
    latency.max / 1000, ms(50), ms(99), e.connect + e.read + e.write + e.timeout,
    e.connect, e.read, e.write, e.timeout))
  io.write("FAULT_CODES ", describe(codes_all), "\n")
  io.write("FAULT_VIOLATIONS ", describe(kinds_all), "\n")
  for _, s in ipairs(samples) do
    for line in s:gmatch("[^\n]+") do io.write("FAULT_SAMPLE ", line, "\n") end
  end
  for sec = started - 1, os.time() + 1 do
    local row, any = {}, false
    for i, k in ipairs({ "ok", "qerr", "dbu", "ovl", "bad" }) do
      local v = 0
      for _, t in ipairs(threads) do v = v + (t:get("fault_" .. k .. "_" .. sec) or 0) end
      row[i] = v
      any = any or v > 0
    end
    if any then
      io.write(string.format("FAULT_SECOND %d %d %d %d %d %d\n", sec, row[1], row[2], row[3], row[4], row[5]))
    end
  end
end
