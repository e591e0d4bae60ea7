/*
 * No state leaks between clients, and read-only means read-only.
 *
 * One worker, so batch 2 runs on the very connection batch 1 changed. For each kind of session
 * state, batch 1 sets it and batch 2 must see a fresh session. Then read-only batches try every
 * trick to write, in both modes and across batches, and the table must stay empty.
 */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "tests/integration/groups.h"
#include "tests/integration/harness.h"

static fx_server srv = {.pid = -1};

static int group_setup(void **state)
{
    static const char *const args[] = {"--workers", "1", NULL};
    const fx_opts opts = {.args = args};
    (void)state;
    PGresult *res = fx_sql(true, "DROP ROLE IF EXISTS fanout_iso_low", 0, NULL);
    PQclear(res);
    if (!fx_sql_ok(true, "CREATE ROLE fanout_iso_low NOLOGIN; GRANT fanout_iso_low TO fanout") ||
        !fx_sql_ok(false, "DROP TABLE IF EXISTS iso_t; CREATE TABLE iso_t (a int)"))
        return -1;
    return fx_start(&srv, &opts) ? 0 : -1;
}

static int group_teardown(void **state)
{
    (void)state;
    fx_kill(&srv);
    PGresult *res = fx_sql(true, "DROP TABLE IF EXISTS iso_t; DROP OWNED BY fanout_iso_low; DROP ROLE IF EXISTS fanout_iso_low", 0, NULL);
    PQclear(res);
    return 0;
}

/* Batch 1 runs dirty (which must succeed), then batch 2's probe must return want. */
static void leak_case(const char *what, const char *dirty, const char *probe, const char *want)
{
    char body[1024];
    snprintf(body, sizeof(body), "{\"queries\": [{\"sql\": \"%s\"}]}", dirty);
    json_t *doc = FX_BATCH(srv.port, body);
    FX_CHECK(fx_at(doc, "results.0.error") == NULL, "%s: batch 1 failed", what);
    json_decref(doc);
    snprintf(body, sizeof(body), "{\"queries\": [{\"sql\": \"%s\"}]}", probe);
    doc = FX_BATCH(srv.port, body);
    json_t *v = fx_at(doc, "results.0.rows.0.0");
    char got[256] = "(none)";
    if (json_is_string(v))
        snprintf(got, sizeof(got), "%s", json_string_value(v));
    else if (json_is_integer(v))
        snprintf(got, sizeof(got), "%lld", (long long)json_integer_value(v));
    else if (json_is_boolean(v))
        snprintf(got, sizeof(got), "%s", json_is_true(v) ? "true" : "false");
    else if (json_is_null(v))
        snprintf(got, sizeof(got), "null");
    print_message("session state %-28s next batch sees %s\n", what, got);
    FX_CHECK(strcmp(got, want) == 0, "%s leaked into the next batch: got %s, want %s", what, got, want);
    json_decref(doc);
}

static void test_no_session_state_leaks(void **state)
{
    (void)state;
    leak_case("SET", "SET work_mem = '77MB'", "SHOW work_mem", "4MB");
    leak_case("set_config() in a SELECT", "SELECT set_config('search_path', 'nowhere', false)",
              "SHOW search_path", "\"$user\", public");
    leak_case("a function's SET", "SELECT set_config('statement_timeout', '1', false)",
              "SHOW statement_timeout", "30s");
    leak_case("SET ROLE", "SET ROLE fanout_iso_low", "SELECT current_user::text", "fanout");
    leak_case("temp table", "CREATE TEMP TABLE leak_tmp (a int)", "SELECT to_regclass('pg_temp.leak_tmp')::text",
              "null");
    /* A client's prepared statements (from_sql); fanout's own cache stays, by design. */
    leak_case("PREPARE", "PREPARE leak_p AS SELECT 1",
              "SELECT count(*)::int FROM pg_prepared_statements WHERE from_sql", "0");
    leak_case("PREPARE by a function", "DO $$ BEGIN EXECUTE 'PREPARE leak_q AS SELECT 1'; END $$",
              "SELECT count(*)::int FROM pg_prepared_statements WHERE from_sql", "0");
    leak_case("advisory lock", "SELECT pg_advisory_lock(4242)",
              "SELECT count(*)::int FROM pg_locks WHERE locktype = 'advisory' AND pid = pg_backend_pid()", "0");
    leak_case("LISTEN", "LISTEN leak_channel", "SELECT count(*)::int FROM pg_listening_channels()", "0");
    /* A leaked BEGIN would let a SAVEPOINT succeed; outside a block it is refused (25P01). */
    json_t *doc = FX_BATCH(srv.port, "{\"queries\": [{\"sql\": \"BEGIN\"}]}");
    json_decref(doc);
    doc = FX_BATCH(srv.port, "{\"queries\": [{\"sql\": \"SAVEPOINT leak_sp\"}]}");
    FX_EXPECT_STR(doc, "results.0.error.code", "25P01");
    json_decref(doc);
    leak_case("cursor WITH HOLD", "DECLARE leak_c CURSOR WITH HOLD FOR SELECT 1",
              "SELECT count(*)::int FROM pg_cursors WHERE name = 'leak_c'", "0");
    leak_case("pinned TimeZone", "SET TimeZone = 'Asia/Tokyo'", "SHOW TimeZone", "UTC");
}

static int rows_in_table(void)
{
    char *n = fx_sql_value(false, "SELECT count(*) FROM iso_t", 0, NULL);
    int count = n ? atoi(n) : -1;
    free(n);
    return count;
}

#define RO_SWITCH                                                                                   \
    "{\"read_only\": true, \"queries\": ["                                                           \
    "{\"sql\": \"SELECT set_config('transaction_read_only', 'off', true)\"},"                        \
    "{\"sql\": \"INSERT INTO iso_t VALUES (10)\"},"                                                 \
    "{\"sql\": \"SELECT set_config('default_transaction_read_only', 'off', false)\"},"              \
    "{\"sql\": \"INSERT INTO iso_t VALUES (11)\"}]}"

/* Every trick to write from a read-only batch, in both modes and across batches. */
static void test_read_only_cannot_write(void **state)
{
    (void)state;
    static const char *const batches[] = {
        "{\"read_only\": true, \"queries\": [{\"sql\": \"INSERT INTO iso_t VALUES (1)\"}]}",
        "{\"read_only\": true, \"queries\": [{\"sql\": \"SET transaction_read_only = off\"}]}",
        "{\"read_only\": true, \"mode\": \"transaction\", \"queries\": [{\"sql\": \"SET transaction_read_only = off\"}, {\"sql\": \"INSERT INTO iso_t VALUES (2)\"}]}",
        "{\"read_only\": true, \"mode\": \"transaction\", \"queries\": [{\"sql\": \"RESET ALL\"}, {\"sql\": \"INSERT INTO iso_t VALUES (3)\"}]}",
        "{\"read_only\": true, \"mode\": \"transaction\", \"queries\": [{\"sql\": \"COMMIT\"}, {\"sql\": \"INSERT INTO iso_t VALUES (4)\"}]}",
        "{\"read_only\": true, \"mode\": \"transaction\", \"queries\": [{\"sql\": \"END\"}, {\"sql\": \"INSERT INTO iso_t VALUES (5)\"}]}",
        "{\"read_only\": true, \"queries\": [{\"sql\": \"COMMIT\"}]}",
        "{\"read_only\": true, \"queries\": [{\"sql\": \"SET SESSION CHARACTERISTICS AS TRANSACTION READ WRITE\"}]}",
        "{\"read_only\": true, \"queries\": [{\"sql\": \"INSERT INTO iso_t VALUES (6)\"}]}",
        "{\"read_only\": true, \"queries\": [{\"sql\": \"SET default_transaction_read_only = off\"}]}",
        "{\"read_only\": true, \"mode\": \"transaction\", \"queries\": [{\"sql\": \"INSERT INTO iso_t VALUES (7)\"}]}",
        "{\"read_only\": true, \"queries\": [{\"sql\": \"CREATE TABLE iso_ddl (a int)\"}]}",
        "{\"read_only\": true, \"queries\": [{\"sql\": \"SELECT set_config('transaction_read_only', 'off', false)\"}]}",
        "{\"read_only\": true, \"queries\": [{\"sql\": \"WITH w AS (INSERT INTO iso_t VALUES (8) RETURNING a) SELECT * FROM w\"}]}",
        /* Pipelined, once cached in one shared read-only transaction: switching it (or the next
         * one's default) off between fanout's opener and a write. Four times, so it is cached. */
        RO_SWITCH, RO_SWITCH, RO_SWITCH, RO_SWITCH,
    };
    for (size_t i = 0; i < sizeof(batches) / sizeof(batches[0]); i++) {
        json_t *doc = FX_BATCH(srv.port, batches[i]);
        json_decref(doc);
    }
    /* The transaction_ended signal for a COMMIT in a read-only transaction. */
    json_t *doc = FX_BATCH(srv.port, "{\"read_only\": true, \"mode\": \"transaction\", \"queries\": "
                                     "[{\"sql\": \"COMMIT\"}, {\"sql\": \"INSERT INTO iso_t VALUES (9)\"}]}");
    FX_EXPECT_STR(doc, "results.0.error.code", "transaction_ended");
    FX_EXPECT_STR(doc, "results.1.error.code", "not_run");
    json_decref(doc);
    doc = FX_BATCH(srv.port, "{\"read_only\": true, \"mode\": \"transaction\", \"queries\": "
                             "[{\"sql\": \"SET transaction_read_only = off\"}]}");
    FX_EXPECT_STR(doc, "results.0.error.code", "25001");
    json_decref(doc);
    FX_CHECK(rows_in_table() == 0, "a read-only batch wrote %d rows", rows_in_table());
    char *t = fx_sql_value(false, "SELECT to_regclass('iso_ddl')::text", 0, NULL);
    FX_CHECK(t == NULL, "a read-only batch created a table");
    free(t);
    /* And a normal batch still writes. */
    doc = FX_BATCH(srv.port, "{\"queries\": [{\"sql\": \"INSERT INTO iso_t VALUES (100)\"}]}");
    json_decref(doc);
    FX_CHECK(rows_in_table() == 1, "a read-write batch could not write");
}

static void test_clean_exit(void **state)
{
    (void)state;
    assert_true(fx_stop(&srv));
}

int it_isolation(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_no_session_state_leaks),
        cmocka_unit_test(test_read_only_cannot_write),
        cmocka_unit_test(test_clean_exit),
    };
    return cmocka_run_group_tests_name("isolation", tests, group_setup, group_teardown);
}
