-- A fan-out of slow queries: one batch of BENCH_SLOW_N (default 16) x SELECT pg_sleep($1) with
-- $1 = BENCH_SLOW_SECONDS (default 0.01). With enough free workers the batch takes about one
-- sleep, not N of them; with w workers, about ceil(N/w) sleeps.
--   wrk -t2 -c16 -d10s -s bench/wrk/slow.lua http://127.0.0.1:8080
--   BENCH_SLOW_N=64 wrk -t1 -c1 -d10s -s bench/wrk/slow.lua http://127.0.0.1:8080   (one client)
-- common.lua sits beside this file; find it from this file's path, not from the cwd.
local here = debug.getinfo(1, "S").source:match("^@(.*[/\\])") or ""
local loaded, common = pcall(dofile, here .. "common.lua")
if not loaded then io.stderr:write("bench: ", tostring(common), "\n"); os.exit(2) end

local n = common.env_int("BENCH_SLOW_N", 16, 1, 100000)
local seconds = common.env_num("BENCH_SLOW_SECONDS", 0.01, 0, 60)

local q = common.query("SELECT pg_sleep($1)")
local parts = {}
for i = 1, n do parts[i] = q(string.format("%.6g", seconds)) end
local body = common.batch(parts)          -- the same body every time: nothing random in it

common.run { name = "slow", queries = n, body = function() return body end }
