-- One query that returns a range of rows: by default the 10,000 pgbench_accounts rows from a
-- random aid on (issue 5, workload "a result of 10,000 rows").
--   wrk -t2 -c16 -d10s -s bench/wrk/range.lua http://127.0.0.1:8080
-- Settings (environment): BENCH_SEED (see common.lua), and
--   BENCH_RANGE_ROWS  rows per result (default 10000)
--   BENCH_RANGE_KEYS  the table's keys are 1..BENCH_RANGE_KEYS (default 1000000, pgbench scale 10);
--                     the first key is drawn from 1..BENCH_RANGE_KEYS-BENCH_RANGE_ROWS+1
--   BENCH_RANGE_SQL   the query; $1 is the first key and $2 the last
--                     (default SELECT aid, bid, abalance, filler FROM pgbench_accounts
--                      WHERE aid BETWEEN $1 AND $2)
-- rows/s is requests/s times BENCH_RANGE_ROWS (bench/run.sh computes it).
-- common.lua sits beside this file; find it from this file's path, not from the cwd.
local here = debug.getinfo(1, "S").source:match("^@(.*[/\\])") or ""
local loaded, common = pcall(dofile, here .. "common.lua")
if not loaded then io.stderr:write("bench: ", tostring(common), "\n"); os.exit(2) end

local rows = common.env_int("BENCH_RANGE_ROWS", 10000, 1, 100000000)
local keys = common.env_int("BENCH_RANGE_KEYS", 1000000, rows, 2147483646)
local q = common.query(common.env("BENCH_RANGE_SQL",
  "SELECT aid, bid, abalance, filler FROM pgbench_accounts WHERE aid BETWEEN $1 AND $2"))
local span = keys - rows + 1
local parts = {}

common.run { name = "range", queries = 1, body = function(rand)
  local first = rand(span)
  parts[1] = q(first .. "," .. (first + rows - 1))
  return common.batch(parts)
end }
