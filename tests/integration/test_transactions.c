/*
 * Transaction mode and connection hygiene. One fanout with a single worker serves the group, so
 * every batch runs on the same connection: whatever a batch leaves behind (an open or aborted
 * transaction, read-only mode, a half-done COPY) would show in the next one. libpq checks what
 * was really committed.
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

#define SCHEMA                                                                                     \
    "DROP TABLE IF EXISTS fx_tx, fx_child, fx_parent;"                                             \
    "CREATE TABLE fx_tx (id int PRIMARY KEY);"                                                     \
    "CREATE TABLE fx_parent (id int PRIMARY KEY);"                                                 \
    "CREATE TABLE fx_child (id int PRIMARY KEY, parent int CONSTRAINT fx_child_parent_fkey "       \
    "  REFERENCES fx_parent (id) DEFERRABLE INITIALLY DEFERRED)"

static int group_setup(void **state)
{
    static const char *const args[] = {"--workers", "1", NULL};
    const fx_opts opts = {.args = args};
    (void)state;
    if (!fx_sql_ok(false, SCHEMA))
        return -1;
    return fx_start(&srv, &opts) ? 0 : -1;
}

static int group_teardown(void **state)
{
    (void)state;
    fx_kill(&srv);
    return fx_sql_ok(false, "DROP TABLE IF EXISTS fx_tx, fx_child, fx_parent") ? 0 : -1;
}

/* count(*) of rows matching where (a fixed SQL condition) in table, seen by libpq. */
static long count_rows(const char *table, const char *where)
{
    char sql[256];
    snprintf(sql, sizeof(sql), "SELECT count(*) FROM %s WHERE %s", table, where);
    char *v = fx_sql_value(false, sql, 0, NULL);
    assert_non_null(v);
    long n = strtol(v, NULL, 10);
    free(v);
    return n;
}

/* fanout's single connection is idle: not inside a transaction, aborted or not. */
static void expect_connection_idle(void)
{
    char *state = NULL;
    double deadline = fx_now() + 5 * fx_scale();
    /* The backend reports idle before it sends ReadyForQuery, so this holds at once; the loop
     * only covers a slow statistics update. */
    for (;;) {
        state = fx_sql_value(true, "SELECT string_agg(state, ',') FROM pg_stat_activity WHERE application_name = 'fanout'",
                             0, NULL);
        if ((state != NULL && strcmp(state, "idle") == 0) || fx_now() >= deadline)
            break;
        free(state);
        fx_sleep_ms(50);
    }
    FX_CHECK(state != NULL && strcmp(state, "idle") == 0,
             "want fanout's one backend (application_name 'fanout') idle, pg_stat_activity says: %s",
             state ? state : "no such backend");
    free(state);
}

/* A follow-up plain batch on the same connection: it works, outside any transaction, and what it
 * writes is committed at once. SHOW runs alone, never in a pipeline's shared read-only transaction
 * (where a quick SELECT would see transaction_read_only on): it sees the session's own state. */
static void expect_connection_clean(int id)
{
    char body[256], where[64];
    snprintf(body, sizeof(body),
             "{\"queries\":[{\"sql\":\"INSERT INTO fx_tx (id) VALUES (%d)\"},"
             "{\"sql\":\"SHOW transaction_read_only\"},{\"sql\":\"SHOW transaction_isolation\"}]}",
             id);
    json_t *doc = FX_BATCH(srv.port, body);
    FX_EXPECT_STR(doc, "results.0.command", "INSERT");
    FX_EXPECT_STR(doc, "results.1.rows.0.0", "off");
    FX_EXPECT_STR(doc, "results.2.rows.0.0", "read committed");
    json_decref(doc);
    snprintf(where, sizeof(where), "id = %d", id);
    FX_CHECK(count_rows("fx_tx", where) == 1, "row %d written by a plain batch is not visible to libpq", id);
    expect_connection_idle();
}

static void test_commit(void **state)
{
    json_t *doc = FX_BATCH(srv.port, "{\"mode\":\"transaction\",\"queries\":["
                                     "{\"id\":\"a\",\"sql\":\"INSERT INTO fx_tx (id) VALUES (1)\"},"
                                     "{\"id\":\"b\",\"sql\":\"INSERT INTO fx_tx (id) VALUES ($1) RETURNING id\",\"params\":[2]},"
                                     "{\"id\":\"c\",\"sql\":\"SELECT count(*) FROM fx_tx WHERE id IN (1, 2)\"}]}");
    (void)state;

    FX_EXPECT_BOOL(doc, "committed", true);
    FX_EXPECT_ABSENT(doc, "commit_error");
    FX_EXPECT_LEN(doc, "results", 3);
    FX_EXPECT_STR(doc, "results.0.id", "a");
    FX_EXPECT_STR(doc, "results.0.command", "INSERT");
    FX_EXPECT_INT(doc, "results.0.row_count", 1);
    FX_EXPECT_INT(doc, "results.1.rows.0.0", 2);
    FX_EXPECT_STR(doc, "results.2.id", "c");
    FX_EXPECT_STR(doc, "results.2.rows.0.0", "2"); /* the transaction sees its own rows */
    FX_EXPECT_KIND(doc, "elapsed_ms", "number");
    json_decref(doc);

    FX_CHECK(count_rows("fx_tx", "id IN (1, 2)") == 2, "committed rows are not in the table");
    expect_connection_idle();
}

static void test_rollback_at_first_error(void **state)
{
    json_t *doc = FX_BATCH(srv.port, "{\"mode\":\"transaction\",\"queries\":["
                                     "{\"id\":\"first\",\"sql\":\"INSERT INTO fx_tx (id) VALUES (10)\"},"
                                     "{\"id\":\"second\",\"sql\":\"INSERT INTO fx_tx (id) VALUES (11)\"},"
                                     "{\"id\":\"boom\",\"sql\":\"SELECT 1 / 0\"},"
                                     "{\"id\":\"after\",\"sql\":\"INSERT INTO fx_tx (id) VALUES (12)\"},"
                                     "{\"sql\":\"SELECT 1\"}]}");
    (void)state;

    FX_EXPECT_BOOL(doc, "committed", false);
    FX_EXPECT_ABSENT(doc, "commit_error");
    FX_EXPECT_LEN(doc, "results", 5);
    FX_EXPECT_STR(doc, "results.0.id", "first");
    FX_EXPECT_STR(doc, "results.0.command", "INSERT");
    FX_EXPECT_STR(doc, "results.2.id", "boom");
    FX_EXPECT_STR(doc, "results.2.error.code", "22012");
    FX_EXPECT_KIND(doc, "results.2.error.message", "string");
    FX_EXPECT_STR(doc, "results.3.id", "after");
    FX_EXPECT_STR(doc, "results.3.error.code", "not_run");
    FX_EXPECT_KIND(doc, "results.3.error.message", "string");
    FX_EXPECT_ABSENT(doc, "results.3.rows");
    FX_EXPECT_ABSENT(doc, "results.4.id");
    FX_EXPECT_STR(doc, "results.4.error.code", "not_run");
    json_decref(doc);

    FX_CHECK(count_rows("fx_tx", "id IN (10, 11, 12)") == 0, "rows of a rolled-back transaction are in the table");
    expect_connection_clean(13);
}

/* A failing unique constraint in the middle carries its SQLSTATE and constraint name. */
static void test_rollback_on_constraint(void **state)
{
    json_t *doc = FX_BATCH(srv.port, "{\"mode\":\"transaction\",\"queries\":["
                                     "{\"sql\":\"INSERT INTO fx_tx (id) VALUES (20)\"},"
                                     "{\"sql\":\"INSERT INTO fx_tx (id) VALUES (20)\"},"
                                     "{\"sql\":\"INSERT INTO fx_tx (id) VALUES (21)\"}]}");
    (void)state;

    FX_EXPECT_BOOL(doc, "committed", false);
    FX_EXPECT_STR(doc, "results.1.error.code", "23505");
    FX_EXPECT_STR(doc, "results.1.error.constraint", "fx_tx_pkey");
    FX_EXPECT_STR(doc, "results.2.error.code", "not_run");
    json_decref(doc);
    FX_CHECK(count_rows("fx_tx", "id IN (20, 21)") == 0, "rows of a rolled-back transaction are in the table");
    expect_connection_clean(22);
}

/* A deferred foreign key fails at COMMIT: the statements succeeded, the transaction did not. */
static void test_commit_error(void **state)
{
    json_t *doc = FX_BATCH(srv.port, "{\"mode\":\"transaction\",\"queries\":["
                                     "{\"id\":\"orphan\",\"sql\":\"INSERT INTO fx_child (id, parent) VALUES (1, 999)\"},"
                                     "{\"sql\":\"SELECT count(*) FROM fx_child\"}]}");
    (void)state;

    FX_EXPECT_BOOL(doc, "committed", false);
    FX_EXPECT_STR(doc, "commit_error.code", "23503");
    FX_EXPECT_STR(doc, "commit_error.constraint", "fx_child_parent_fkey");
    FX_EXPECT_KIND(doc, "commit_error.message", "string");
    FX_EXPECT_KIND(doc, "commit_error.detail", "string");
    FX_EXPECT_STR(doc, "results.0.id", "orphan");
    FX_EXPECT_STR(doc, "results.0.command", "INSERT");
    FX_EXPECT_ABSENT(doc, "results.0.error");
    FX_EXPECT_STR(doc, "results.1.rows.0.0", "1");
    json_decref(doc);

    FX_CHECK(count_rows("fx_child", "true") == 0, "a transaction whose COMMIT failed left rows behind");
    expect_connection_clean(30);
}

/* A query that ends the transaction and chains a new one (AND CHAIN) ends the batch like a plain
 * COMMIT or ROLLBACK would: transaction_ended, the rest not run, fanout's own COMMIT never
 * commits the chained transaction as if it were the batch. ROLLBACK TO SAVEPOINT keeps it. */
static void test_chained_end_stops_the_batch(void **state)
{
    (void)state;
    json_t *doc = FX_BATCH(srv.port, "{\"mode\":\"transaction\",\"queries\":["
                                     "{\"sql\":\"INSERT INTO fx_tx (id) VALUES (140)\"},"
                                     "{\"sql\":\"ROLLBACK AND CHAIN\"},"
                                     "{\"sql\":\"INSERT INTO fx_tx (id) VALUES (141)\"}]}");
    FX_EXPECT_BOOL(doc, "committed", false);
    FX_EXPECT_STR(doc, "results.0.command", "INSERT");
    FX_EXPECT_STR(doc, "results.1.error.code", "transaction_ended");
    FX_EXPECT_STR(doc, "results.2.error.code", "not_run");
    json_decref(doc);
    FX_CHECK(count_rows("fx_tx", "id IN (140, 141)") == 0, "rows of a rolled-back batch are in the table");

    doc = FX_BATCH(srv.port, "{\"mode\":\"transaction\",\"queries\":["
                             "{\"sql\":\"INSERT INTO fx_tx (id) VALUES (142)\"},"
                             "{\"sql\":\"/* c */ commit and chain\"},"
                             "{\"sql\":\"INSERT INTO fx_tx (id) VALUES (143)\"}]}");
    FX_EXPECT_BOOL(doc, "committed", false);
    FX_EXPECT_STR(doc, "results.1.error.code", "transaction_ended");
    FX_EXPECT_STR(doc, "results.2.error.code", "not_run");
    json_decref(doc);
    /* the client's own COMMIT committed what came before it, as the error says it may have */
    FX_CHECK(count_rows("fx_tx", "id = 142") == 1, "the row before COMMIT AND CHAIN is not committed");
    FX_CHECK(count_rows("fx_tx", "id = 143") == 0, "a query after COMMIT AND CHAIN ran");

    doc = FX_BATCH(srv.port, "{\"mode\":\"transaction\",\"queries\":["
                             "{\"sql\":\"SAVEPOINT s\"},"
                             "{\"sql\":\"INSERT INTO fx_tx (id) VALUES (144)\"},"
                             "{\"sql\":\"ROLLBACK TO SAVEPOINT s\"},"
                             "{\"sql\":\"INSERT INTO fx_tx (id) VALUES (145)\"}]}");
    FX_EXPECT_BOOL(doc, "committed", true);
    FX_EXPECT_ABSENT(doc, "results.2.error");
    json_decref(doc);
    FX_CHECK(count_rows("fx_tx", "id IN (144, 145)") == 1 && count_rows("fx_tx", "id = 145") == 1,
             "ROLLBACK TO SAVEPOINT did not keep the transaction");
    expect_connection_clean(146);
}

/* fanout names a column's type with a query of its own, inside the client's transaction. A
 * search_path that puts a client's operator ahead of pg_catalog's must not reach that query:
 * its failure used to abort the transaction unseen (type "unknown", and COMMIT, answered with a
 * ROLLBACK, read as committed). */
static void test_type_lookup_in_a_clients_transaction(void **state)
{
    (void)state;
    assert_true(fx_sql_ok(true, "DROP OPERATOR IF EXISTS public.= (oid, oid);"
                                "DROP FUNCTION IF EXISTS public.fx_oideq(oid, oid);"
                                "DROP TYPE IF EXISTS fx_mood;"
                                "CREATE TYPE fx_mood AS ENUM ('calm');"
                                "CREATE FUNCTION public.fx_oideq(oid, oid) RETURNS bool LANGUAGE plpgsql "
                                "  AS $$BEGIN RAISE EXCEPTION 'not this operator'; END$$;"
                                "CREATE OPERATOR public.= (LEFTARG = oid, RIGHTARG = oid, "
                                "  FUNCTION = public.fx_oideq)"));
    json_t *doc = FX_BATCH(srv.port, "{\"mode\":\"transaction\",\"queries\":["
                                     "{\"sql\":\"SET LOCAL search_path = public, pg_catalog\"},"
                                     "{\"sql\":\"INSERT INTO fx_tx (id) VALUES (170)\"},"
                                     "{\"sql\":\"SELECT 'calm'::fx_mood AS m\"}]}");
    assert_true(fx_sql_ok(true, "DROP OPERATOR public.= (oid, oid); DROP FUNCTION public.fx_oideq(oid, oid)"));
    FX_EXPECT_STR(doc, "results.2.columns.0.type", "fx_mood");
    FX_EXPECT_STR(doc, "results.2.rows.0.0", "calm");
    FX_EXPECT_BOOL(doc, "committed", true);
    FX_EXPECT_ABSENT(doc, "commit_error");
    json_decref(doc);
    FX_CHECK(count_rows("fx_tx", "id = 170") == 1, "the batch's row is not committed");
    expect_connection_clean(171);
}

static void test_isolation_levels(void **state)
{
    static const struct {
        const char *isolation; /* NULL: not sent */
        const char *shown;
    } cases[] = {{"serializable", "serializable"},
                 {"repeatable_read", "repeatable read"},
                 {"read_committed", "read committed"},
                 {NULL, "read committed"}};
    (void)state;

    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        json_t *req = json_pack("{s:s,s:[{s:s}]}", "mode", "transaction", "queries", "sql", "SHOW transaction_isolation");
        if (cases[i].isolation != NULL)
            json_object_set_new(req, "isolation", json_string(cases[i].isolation));
        json_t *doc = FX_BATCHJ(srv.port, req);
        FX_EXPECT_BOOL(doc, "committed", true);
        FX_EXPECT_STR(doc, "results.0.rows.0.0", cases[i].shown);
        json_decref(doc);
    }
    /* Not sticky: the next plain batch on the same connection is read committed again. */
    expect_connection_clean(40);
}

static void test_read_only_transaction(void **state)
{
    json_t *doc = FX_BATCH(srv.port, "{\"mode\":\"transaction\",\"read_only\":true,\"queries\":["
                                     "{\"sql\":\"SHOW transaction_read_only\"},"
                                     "{\"sql\":\"INSERT INTO fx_tx (id) VALUES (50)\"}]}");
    (void)state;

    FX_EXPECT_STR(doc, "results.0.rows.0.0", "on");
    FX_EXPECT_STR(doc, "results.1.error.code", "25006");
    FX_EXPECT_BOOL(doc, "committed", false);
    json_decref(doc);

    doc = FX_BATCH(srv.port, "{\"mode\":\"transaction\",\"read_only\":true,\"queries\":["
                             "{\"sql\":\"SELECT count(*) FROM fx_tx\"}]}");
    FX_EXPECT_BOOL(doc, "committed", true);
    FX_EXPECT_ABSENT(doc, "results.0.error");
    json_decref(doc);

    FX_CHECK(count_rows("fx_tx", "id = 50") == 0, "a read-only transaction wrote a row");
    expect_connection_clean(51);
}

static void test_read_only_parallel(void **state)
{
    json_t *doc = FX_BATCH(srv.port, "{\"read_only\":true,\"queries\":["
                                     "{\"sql\":\"INSERT INTO fx_tx (id) VALUES (60)\"},"
                                     "{\"sql\":\"SHOW transaction_read_only\"},"
                                     "{\"sql\":\"SELECT 1 AS one\"}]}");
    (void)state;

    FX_EXPECT_STR(doc, "results.0.error.code", "25006");
    FX_EXPECT_STR(doc, "results.1.rows.0.0", "on");
    FX_EXPECT_INT(doc, "results.2.rows.0.0", 1);
    FX_EXPECT_ABSENT(doc, "committed");
    json_decref(doc);
    FX_CHECK(count_rows("fx_tx", "id = 60") == 0, "a read-only batch wrote a row");
    /* Not sticky: the same connection writes again in the next batch. */
    expect_connection_clean(60);
}

/* COPY cannot be served over this API: a per-query "unsupported" error, and the connection is
 * still usable (not stuck in COPY state). */
static void test_copy_is_refused(void **state)
{
    const char *sqls[] = {"COPY fx_tx TO STDOUT", "COPY fx_tx FROM STDIN", "COPY (SELECT 1) TO STDOUT"};
    (void)state;

    for (int i = 0; i < 3; i++) {
        json_t *req = json_pack("{s:[{s:s,s:s}]}", "queries", "id", "copy", "sql", sqls[i]);
        json_t *doc = FX_BATCHJ(srv.port, req);
        FX_EXPECT_STR(doc, "results.0.id", "copy");
        FX_EXPECT_STR(doc, "results.0.error.code", "unsupported");
        FX_EXPECT_KIND(doc, "results.0.error.message", "string");
        json_decref(doc);
        expect_connection_clean(70 + i);
    }
}

/* Errors in plain batches leave the connection usable, too. */
static void test_errors_leave_connection_clean(void **state)
{
    json_t *doc = FX_BATCH(srv.port, "{\"queries\":[{\"sql\":\"SELECT 1 / 0\"},{\"sql\":\"SELECT * FROM fx_nowhere\"},"
                                     "{\"sql\":\"SELECT 1; SELECT 2\"},{\"sql\":\"\"}]}");
    (void)state;

    FX_EXPECT_STR(doc, "results.0.error.code", "22012");
    FX_EXPECT_STR(doc, "results.1.error.code", "42P01");
    FX_EXPECT_STR(doc, "results.2.error.code", "42601");
    FX_EXPECT_STR(doc, "results.3.error.code", "empty_query");
    json_decref(doc);
    expect_connection_clean(80);
}

/* A plain batch that opens a transaction block (BEGIN) must not leave the pooled connection
 * inside it: the next client's queries would run in a transaction nobody commits. Whatever
 * fanout answers for BEGIN itself, the connection must be idle afterwards. */
static void test_bare_begin_does_not_leak(void **state)
{
    json_t *doc = FX_BATCH(srv.port, "{\"queries\":[{\"sql\":\"BEGIN\"}]}");
    (void)state;
    json_decref(doc);
    expect_connection_clean(90);
}

static void test_clean_exit(void **state)
{
    (void)state;
    assert_true(fx_stop(&srv));
}

int it_transactions(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_commit),
        cmocka_unit_test(test_rollback_at_first_error),
        cmocka_unit_test(test_rollback_on_constraint),
        cmocka_unit_test(test_commit_error),
        cmocka_unit_test(test_chained_end_stops_the_batch),
        cmocka_unit_test(test_type_lookup_in_a_clients_transaction),
        cmocka_unit_test(test_isolation_levels),
        cmocka_unit_test(test_read_only_transaction),
        cmocka_unit_test(test_read_only_parallel),
        cmocka_unit_test(test_copy_is_refused),
        cmocka_unit_test(test_errors_leave_connection_clean),
        cmocka_unit_test(test_bare_begin_does_not_leak),
        cmocka_unit_test(test_clean_exit),
    };
    return cmocka_run_group_tests_name("transactions", tests, group_setup, group_teardown);
}
