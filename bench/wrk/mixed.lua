-- A mixed read/write batch of 10 queries, run in parallel (the default mode):
--   6 x users primary-key lookup              (ids 1..BENCH_KEYS, default 1000)
--   1 x orders primary-key lookup             (ids 1..BENCH_ORDERS, default 5000)
--   1 x fanout_bench_kv primary-key lookup
--   1 x INSERT ... ON CONFLICT (k) DO UPDATE into fanout_bench_kv
--   1 x UPDATE fanout_bench_kv ... WHERE k = $1
-- with keys of fanout_bench_kv drawn from 1..BENCH_KV_KEYS (default 1000).
--   wrk -t2 -c16 -d10s -s bench/wrk/mixed.lua http://127.0.0.1:8080
--
-- The writes go to a scratch table of their own, never to the demo users/orders rows that
-- docs/API.md shows. It cannot grow without bound: its primary key is drawn from a fixed range, so
-- it holds at most BENCH_KV_KEYS rows however many runs write to it (the dead row versions that
-- updates leave are autovacuum's to reclaim). Each wrk thread creates it if missing before its
-- first benchmark request, with a transaction-mode batch of one DO block that takes an advisory
-- lock first, so that concurrent creations wait for each other instead of racing (and, unlike
-- CREATE TABLE IF NOT EXISTS, it sends no NOTICE to fanout's log when the table is there):
--   PERFORM pg_advisory_xact_lock(4242001);
--   IF to_regclass('fanout_bench_kv') IS NULL THEN CREATE TABLE fanout_bench_kv (...); END IF;
-- The setup replies are left out of the counts. So fanout's database role needs CREATE on the
-- schema (the `fanout` role of `make run` owns its database). To remove the table:
--   curl -s 127.0.0.1:8080/v1/batch -H 'Content-Type: application/json' \
--     -d '{"queries":[{"sql":"DROP TABLE IF EXISTS fanout_bench_kv"}]}'
-- common.lua sits beside this file; find it from this file's path, not from the cwd.
local here = debug.getinfo(1, "S").source:match("^@(.*[/\\])") or ""
local loaded, common = pcall(dofile, here .. "common.lua")
if not loaded then io.stderr:write("bench: ", tostring(common), "\n"); os.exit(2) end

local users = common.keys
local orders = common.env_int("BENCH_ORDERS", 5000, 1, 2147483646)
local kv_keys = common.env_int("BENCH_KV_KEYS", 1000, 1, 2147483646)

local setup_body = common.batch({
  common.query("DO $$ BEGIN PERFORM pg_advisory_xact_lock(4242001); " ..
               "IF to_regclass('fanout_bench_kv') IS NULL THEN " ..
               "CREATE TABLE fanout_bench_kv (k integer PRIMARY KEY, v bigint NOT NULL, " ..
               "n bigint NOT NULL DEFAULT 1, updated timestamptz NOT NULL DEFAULT now()); " ..
               "END IF; END $$")(""),
}, '"mode":"transaction"')

local user_q = common.query(common.point_sql)
local order_q = common.query("SELECT id, user_id, total, placed FROM orders WHERE id = $1")
local kv_read = common.query("SELECT k, v, n, updated FROM fanout_bench_kv WHERE k = $1")
local kv_upsert = common.query("INSERT INTO fanout_bench_kv AS t (k, v) VALUES ($1, $2) " ..
                               "ON CONFLICT (k) DO UPDATE SET v = EXCLUDED.v, n = t.n + 1, updated = now()")
local kv_update = common.query("UPDATE fanout_bench_kv SET v = v + $2, n = n + 1, updated = now() WHERE k = $1")

local parts = {}
local function body(rand)
  for i = 1, 6 do parts[i] = user_q(rand(users)) end
  parts[7] = order_q(rand(orders))
  parts[8] = kv_read(rand(kv_keys))
  parts[9] = kv_upsert(rand(kv_keys) .. "," .. rand(1000000))
  parts[10] = kv_update(rand(kv_keys) .. "," .. rand(100))
  return common.batch(parts)
end

common.run { name = "mixed", queries = 10, body = body, setup_body = setup_body }
