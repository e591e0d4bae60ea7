/*
 * Parallel batches mixing good and failing queries: results in request order with their ids,
 * good queries unaffected by bad ones, and every SQL error carrying the fields libpq itself
 * reports for the same statement (SQLSTATE, message, detail, hint, position, constraint).
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
    const fx_opts opts = {0};
    (void)state;
    if (!fx_sql_ok(false, "DROP TABLE IF EXISTS fx_mixed;"
                          "CREATE TABLE fx_mixed (id int PRIMARY KEY, name text NOT NULL);"
                          "INSERT INTO fx_mixed VALUES (1, 'one'), (2, 'two')"))
        return -1;
    return fx_start(&srv, &opts) ? 0 : -1;
}

static int group_teardown(void **state)
{
    (void)state;
    fx_kill(&srv);
    return fx_sql_ok(false, "DROP TABLE IF EXISTS fx_mixed") ? 0 : -1;
}

/* The error object at path must match what libpq reports for sql (no parameters). */
static void expect_error_like_libpq(json_t *doc, const char *path, const char *sql)
{
    static const struct {
        const char *key;
        int field;
    } fields[] = {{"code", PG_DIAG_SQLSTATE},     {"message", PG_DIAG_MESSAGE_PRIMARY},
                  {"detail", PG_DIAG_MESSAGE_DETAIL}, {"hint", PG_DIAG_MESSAGE_HINT},
                  {"constraint", PG_DIAG_CONSTRAINT_NAME}};
    PGresult *res = fx_sql(false, sql, 0, NULL);
    char p[128];

    assert_non_null(res);
    FX_CHECK(PQresultStatus(res) == PGRES_FATAL_ERROR, "libpq: %s did not fail", sql);
    for (size_t i = 0; i < sizeof(fields) / sizeof(fields[0]); i++) {
        const char *want = PQresultErrorField(res, fields[i].field);
        snprintf(p, sizeof(p), "%s.%s", path, fields[i].key);
        if (want != NULL)
            FX_EXPECT_STR(doc, p, want);
        else
            FX_EXPECT_NULL(doc, p);
    }
    const char *position = PQresultErrorField(res, PG_DIAG_STATEMENT_POSITION);
    snprintf(p, sizeof(p), "%s.position", path);
    if (position != NULL)
        FX_EXPECT_INT(doc, p, strtol(position, NULL, 10));
    else
        FX_EXPECT_NULL(doc, p);
    PQclear(res);
}

static void test_mixed_batch(void **state)
{
    static const struct {
        const char *id;   /* NULL: no id sent */
        const char *sql;
        const char *code; /* NULL: succeeds */
    } q[] = {
        {"good1", "SELECT id, name FROM fx_mixed WHERE id = 1", NULL},
        {"missing", "SELECT * FROM fx_no_such_table", "42P01"},
        {"dup", "INSERT INTO fx_mixed (id, name) VALUES (1, 'again')", "23505"},
        {"badinput", "SELECT 'abc'::int", "22P02"},
        {"good2", "SELECT g FROM generate_series(1, 3) AS g", NULL},
        {NULL, "SELECT 'no id' AS x", NULL},
        {"hint", "SELECT nme FROM fx_mixed", "42703"},
        {"notnull", "INSERT INTO fx_mixed (id, name) VALUES (3, NULL)", "23502"},
        {"multi", "SELECT 1; SELECT 2", "42601"},
        {"divzero", "SELECT 1 / 0", "22012"},
        {"", "SELECT 'empty id' AS x", NULL},
        {"good3", "SELECT count(*) FROM fx_mixed", NULL},
    };
    const size_t n = sizeof(q) / sizeof(q[0]);
    json_t *queries = json_array();
    char path[96];
    (void)state;

    for (size_t i = 0; i < n; i++) {
        json_t *one = json_pack("{s:s}", "sql", q[i].sql);
        if (q[i].id != NULL)
            json_object_set_new(one, "id", json_string(q[i].id));
        json_array_append_new(queries, one);
    }
    json_t *doc = FX_BATCHJ(srv.port, json_pack("{s:s,s:o}", "mode", "parallel", "queries", queries));

    FX_EXPECT_LEN(doc, "results", n);
    for (size_t i = 0; i < n; i++) {
        snprintf(path, sizeof(path), "results.%zu.id", i);
        if (q[i].id != NULL)
            FX_EXPECT_STR(doc, path, q[i].id);
        else
            FX_EXPECT_ABSENT(doc, path);
        snprintf(path, sizeof(path), "results.%zu.error", i);
        if (q[i].code == NULL) {
            FX_EXPECT_ABSENT(doc, path);
        } else {
            char code_path[128];
            snprintf(code_path, sizeof(code_path), "%s.code", path);
            FX_EXPECT_STR(doc, code_path, q[i].code);
            expect_error_like_libpq(doc, path, q[i].sql);
            snprintf(path, sizeof(path), "results.%zu.rows", i);
            FX_EXPECT_ABSENT(doc, path);
        }
    }
    FX_EXPECT_INT(doc, "results.0.rows.0.0", 1);
    FX_EXPECT_STR(doc, "results.0.rows.0.1", "one");
    FX_EXPECT_KIND(doc, "results.1.error.position", "integer");      /* where the missing table is */
    FX_EXPECT_STR(doc, "results.2.error.constraint", "fx_mixed_pkey"); /* which constraint failed */
    FX_EXPECT_KIND(doc, "results.2.error.detail", "string");
    FX_EXPECT_KIND(doc, "results.6.error.hint", "string");
    FX_EXPECT_LEN(doc, "results.4.rows", 3);
    FX_EXPECT_INT(doc, "results.4.rows.2.0", 3);
    FX_EXPECT_STR(doc, "results.5.rows.0.0", "no id");
    FX_EXPECT_STR(doc, "results.10.rows.0.0", "empty id");
    FX_EXPECT_STR(doc, "results.11.rows.0.0", "2"); /* the failed INSERTs changed nothing */
    json_decref(doc);
}

/* Errors fanout raises itself rather than PostgreSQL. */
static void test_fanout_errors(void **state)
{
    json_t *doc = FX_BATCH(srv.port, "{\"queries\":[{\"id\":\"e\",\"sql\":\"\"},{\"id\":\"ws\",\"sql\":\"  \"},"
                                     "{\"id\":\"copy\",\"sql\":\"COPY fx_mixed TO STDOUT\"},{\"sql\":\"SELECT 1 AS ok\"}]}");
    (void)state;
    FX_EXPECT_STR(doc, "results.0.id", "e");
    FX_EXPECT_STR(doc, "results.0.error.code", "empty_query");
    FX_EXPECT_KIND(doc, "results.0.error.message", "string");
    FX_EXPECT_STR(doc, "results.1.error.code", "empty_query");
    FX_EXPECT_STR(doc, "results.2.error.code", "unsupported");
    FX_EXPECT_INT(doc, "results.3.rows.0.0", 1);
    json_decref(doc);
}

/* Many queries finishing in random order still come back in request order. */
static void test_order_preserved(void **state)
{
    enum { N = 60 };
    json_t *queries = json_array();
    char id[16], path[64];
    (void)state;

    for (int i = 0; i < N; i++) {
        snprintf(id, sizeof(id), "q%d", i);
        json_array_append_new(queries, json_pack("{s:s,s:s,s:[i]}", "id", id, "sql",
                                                 "SELECT $1::int AS n, pg_sleep(random() * 0.02)::text AS s", "params", i));
    }
    json_t *doc = FX_BATCHJ(srv.port, json_pack("{s:o}", "queries", queries));
    FX_EXPECT_LEN(doc, "results", N);
    for (int i = 0; i < N; i++) {
        snprintf(id, sizeof(id), "q%d", i);
        snprintf(path, sizeof(path), "results.%d.id", i);
        FX_EXPECT_STR(doc, path, id);
        snprintf(path, sizeof(path), "results.%d.rows.0.0", i);
        FX_EXPECT_INT(doc, path, i);
    }
    json_decref(doc);
}

/* After rounds of failing queries on every connection, a batch of good ones all succeed. */
static void test_errors_do_not_poison_pool(void **state)
{
    char body[4096];
    (void)state;

    for (int round = 0; round < 3; round++) {
        size_t len = (size_t)snprintf(body, sizeof(body), "{\"queries\":[");
        for (int i = 0; i < 16; i++)
            len += (size_t)snprintf(body + len, sizeof(body) - len, "%s{\"sql\":\"%s\"}", i ? "," : "",
                                    i % 3 == 0 ? "SELECT 1 / 0" : i % 3 == 1 ? "SELECT * FROM fx_nowhere" : "SELECT 1; SELECT 2");
        snprintf(body + len, sizeof(body) - len, "]}");
        json_t *doc = FX_BATCH(srv.port, body);
        for (int i = 0; i < 16; i++) {
            char path[64];
            snprintf(path, sizeof(path), "results.%d.error.code", i);
            FX_EXPECT_KIND(doc, path, "string");
        }
        json_decref(doc);
    }
    size_t len = (size_t)snprintf(body, sizeof(body), "{\"queries\":[");
    for (int i = 0; i < 16; i++)
        len += (size_t)snprintf(body + len, sizeof(body) - len, "%s{\"sql\":\"SELECT %d AS n\"}", i ? "," : "", i);
    snprintf(body + len, sizeof(body) - len, "]}");
    json_t *doc = FX_BATCH(srv.port, body);
    for (int i = 0; i < 16; i++) {
        char path[64];
        snprintf(path, sizeof(path), "results.%d.rows.0.0", i);
        FX_EXPECT_INT(doc, path, i);
    }
    json_decref(doc);
}

/* A client that hangs up while its batch runs: fanout drops the reply, keeps serving, and (under
 * valgrind, at the clean exit) frees the abandoned batch. */
static void test_client_gone_mid_batch(void **state)
{
    const char *body = "{\"queries\":[{\"sql\":\"SELECT pg_sleep(1)\"},{\"sql\":\"SELECT pg_sleep(1)\"},"
                       "{\"sql\":\"SELECT pg_sleep(1)\"},{\"sql\":\"SELECT pg_sleep(1)\"}]}";
    char req[512];
    int n = snprintf(req, sizeof(req),
                     "POST /v1/batch HTTP/1.1\r\nHost: t\r\nContent-Type: application/json\r\n"
                     "Content-Length: %zu\r\n\r\n%s",
                     strlen(body), body);
    fx_conn c;
    (void)state;

    assert_true(fx_conn_open(&c, srv.port));
    assert_true(fx_conn_send(&c, req, (size_t)n));
    fx_sleep_ms(100);
    fx_conn_close(&c);

    /* Served meanwhile by the free workers, and after the abandoned queries are over. */
    json_t *doc = FX_BATCH(srv.port, "{\"queries\":[{\"sql\":\"SELECT 1 AS one\"}]}");
    FX_EXPECT_INT(doc, "results.0.rows.0.0", 1);
    json_decref(doc);
    fx_sleep_ms(1200);
    assert_true(fx_alive(&srv));
    doc = FX_BATCH(srv.port, "{\"queries\":[{\"sql\":\"SELECT 1\"},{\"sql\":\"SELECT 2\"},{\"sql\":\"SELECT 3\"},"
                             "{\"sql\":\"SELECT 4\"},{\"sql\":\"SELECT 5\"},{\"sql\":\"SELECT 6\"},"
                             "{\"sql\":\"SELECT 7\"},{\"sql\":\"SELECT 8\"}]}");
    for (int i = 0; i < 8; i++) {
        char path[64];
        snprintf(path, sizeof(path), "results.%d.rows.0.0", i);
        FX_EXPECT_INT(doc, path, i + 1);
    }
    json_decref(doc);
}

/* --statement-timeout-ms: a query running longer is cancelled by PostgreSQL (57014), and the
 * connection serves the next query. */
static void test_statement_timeout(void **state)
{
    static const char *const args[] = {"--statement-timeout-ms", "200", "--workers", "1", NULL};
    const fx_opts opts = {.args = args};
    fx_server short_fuse = {.pid = -1};
    (void)state;

    assert_true(fx_start(&short_fuse, &opts));
    double start = fx_now();
    json_t *doc = FX_BATCH(short_fuse.port, "{\"queries\":[{\"sql\":\"SELECT pg_sleep(5)\"},{\"sql\":\"SELECT 1 AS one\"}]}");
    double took = fx_now() - start;
    FX_EXPECT_STR(doc, "results.0.error.code", "57014");
    FX_EXPECT_INT(doc, "results.1.rows.0.0", 1);
    json_decref(doc);
    FX_CHECK(took < 4.0 * fx_scale(), "the batch took %.2f s: the statement timeout did not cut pg_sleep(5)", took);
    assert_true(fx_stop(&short_fuse));
}

static void test_clean_exit(void **state)
{
    (void)state;
    assert_true(fx_stop(&srv));
}

int it_batches(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_mixed_batch),
        cmocka_unit_test(test_fanout_errors),
        cmocka_unit_test(test_order_preserved),
        cmocka_unit_test(test_errors_do_not_poison_pool),
        cmocka_unit_test(test_client_gone_mid_batch),
        cmocka_unit_test(test_statement_timeout),
        cmocka_unit_test(test_clean_exit),
    };
    return cmocka_run_group_tests_name("batches", tests, group_setup, group_teardown);
}
