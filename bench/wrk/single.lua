-- One point select per request: a batch of one primary-key lookup with a random key.
--   wrk -t2 -c16 -d10s -s bench/wrk/single.lua http://127.0.0.1:8080
-- Settings (environment): BENCH_SEED, BENCH_KEYS, BENCH_SQL (see common.lua).
-- common.lua sits beside this file; find it from this file's path, not from the cwd.
local here = debug.getinfo(1, "S").source:match("^@(.*[/\\])") or ""
local loaded, common = pcall(dofile, here .. "common.lua")
if not loaded then io.stderr:write("bench: ", tostring(common), "\n"); os.exit(2) end

common.run { name = "single", queries = 1, body = common.point_batch(1) }
