/*
 * Parameters: strings that would break SQL if they were ever spliced into the statement text are
 * stored and returned verbatim, and the table survives; JSON values become the parameter texts
 * the issue promises (digits, shortest doubles, true/false, NULL, JSON text).
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

static const char *const hostile[] = {
    "it's",
    "''",
    "say \"hi\"",
    "a;b;c",
    "$1",
    "$1::text $2 $$ $tag$",
    "back\\slash \\x00 \\n \\\\",
    "\xc3\xa9",                                    /* é */
    "\xe6\x97\xa5\xe6\x9c\xac",                    /* 日本 */
    "\xf0\x9f\x98\x80 emoji \xf0\x9f\x91\x8d\xf0\x9f\x8f\xbd", /* 😀 emoji 👍🏽 */
    "'; DROP TABLE fx_params; --",
    "\"; DROP TABLE fx_params; --",
    "'); DELETE FROM fx_params; --",
    "tab\there\nnewline\r\ncrlf",
    "",
    "  padded  ",
    "%s %n %% %d",
    "NULL",
    "E'\\047'",
    "\x01\x1f\x7f",
};
#define NHOSTILE (sizeof(hostile) / sizeof(hostile[0]))

static int group_setup(void **state)
{
    const fx_opts opts = {0};
    (void)state;
    if (!fx_sql_ok(false, "DROP TABLE IF EXISTS fx_params; CREATE TABLE fx_params (id int PRIMARY KEY, v text NOT NULL)"))
        return -1;
    return fx_start(&srv, &opts) ? 0 : -1;
}

static int group_teardown(void **state)
{
    (void)state;
    fx_kill(&srv);
    return fx_sql_ok(false, "DROP TABLE IF EXISTS fx_params") ? 0 : -1;
}

static void test_hostile_strings_round_trip(void **state)
{
    json_t *inserts = json_array(), *selects = json_array(), *counts = json_array();
    json_t *doc;
    char path[96];
    (void)state;

    for (size_t i = 0; i < NHOSTILE; i++) {
        json_array_append_new(inserts, json_pack("{s:s,s:[i,s]}", "sql", "INSERT INTO fx_params (id, v) VALUES ($1, $2)",
                                                 "params", (int)i, hostile[i]));
        json_array_append_new(selects, json_pack("{s:s,s:[i]}", "sql", "SELECT v FROM fx_params WHERE id = $1",
                                                 "params", (int)i));
        json_array_append_new(counts, json_pack("{s:s,s:[s]}", "sql", "SELECT count(*) AS n FROM fx_params WHERE v = $1",
                                                "params", hostile[i]));
    }

    doc = FX_BATCHJ(srv.port, json_pack("{s:o}", "queries", inserts));
    for (size_t i = 0; i < NHOSTILE; i++) {
        snprintf(path, sizeof(path), "results.%zu.error", i);
        FX_EXPECT_ABSENT(doc, path);
        snprintf(path, sizeof(path), "results.%zu.command", i);
        FX_EXPECT_STR(doc, path, "INSERT");
        snprintf(path, sizeof(path), "results.%zu.row_count", i);
        FX_EXPECT_INT(doc, path, 1);
    }
    json_decref(doc);

    /* Back through fanout, verbatim. */
    doc = FX_BATCHJ(srv.port, json_pack("{s:o}", "queries", selects));
    for (size_t i = 0; i < NHOSTILE; i++) {
        snprintf(path, sizeof(path), "results.%zu.rows.0.0", i);
        FX_EXPECT_STR(doc, path, hostile[i]);
    }
    json_decref(doc);

    /* As a parameter in a WHERE clause: each matches exactly its own row. */
    doc = FX_BATCHJ(srv.port, json_pack("{s:o}", "queries", counts));
    for (size_t i = 0; i < NHOSTILE; i++) {
        snprintf(path, sizeof(path), "results.%zu.rows.0.0", i);
        FX_EXPECT_STR(doc, path, "1");
    }
    json_decref(doc);

    /* What is stored, seen by libpq: exactly the bytes sent; the table is still there. */
    char *exists = fx_sql_value(true, "SELECT to_regclass('public.fx_params') IS NOT NULL", 0, NULL);
    assert_non_null(exists);
    assert_string_equal(exists, "t");
    free(exists);
    PGresult *res = fx_sql(false, "SELECT id, v FROM fx_params ORDER BY id", 0, NULL);
    assert_non_null(res);
    FX_CHECK(PQresultStatus(res) == PGRES_TUPLES_OK && PQntuples(res) == (int)NHOSTILE, "fx_params: %d rows (%s)",
             PQntuples(res), PQresultErrorMessage(res));
    for (int i = 0; i < PQntuples(res); i++)
        FX_CHECK(strcmp(PQgetvalue(res, i, 1), hostile[i]) == 0, "row %d stored as \"%s\", sent \"%s\"", i,
                 PQgetvalue(res, i, 1), hostile[i]);
    PQclear(res);
}

/* A "$1" inside a string literal of the statement is text, not a parameter. */
static void test_dollar_in_literal_is_not_a_parameter(void **state)
{
    json_t *doc = FX_BATCH(srv.port, "{\"queries\":[{\"sql\":\"SELECT '$1' AS lit, $1::text AS p, '''$1''' AS q\","
                                     "\"params\":[\"x'y\"]}]}");
    (void)state;
    FX_EXPECT_STR(doc, "results.0.rows.0.0", "$1");
    FX_EXPECT_STR(doc, "results.0.rows.0.1", "x'y");
    FX_EXPECT_STR(doc, "results.0.rows.0.2", "'$1'");
    json_decref(doc);
}

/* JSON parameter values become the texts the issue specifies. */
static void test_parameter_conversion(void **state)
{
    static const struct {
        const char *sql;    /* one query */
        const char *params; /* its params array, as JSON */
        const char *want;   /* the JSON the first value must be */
    } cases[] = {
        {"SELECT $1::text", "[42]", "\"42\""},
        {"SELECT $1::text", "[-7]", "\"-7\""},
        {"SELECT $1::text", "[9007199254740993]", "\"9007199254740993\""},
        {"SELECT $1::text", "[-9223372036854775808]", "\"-9223372036854775808\""},
        {"SELECT $1::text", "[0.1]", "\"0.1\""},
        {"SELECT $1::text", "[-2.5]", "\"-2.5\""},
        {"SELECT $1::float8 = 1.5e300::float8", "[1.5e300]", "true"},
        {"SELECT $1::float8 = 0.30000000000000004::float8", "[0.30000000000000004]", "true"},
        {"SELECT $1::float8 = -1e-6::float8", "[-0.000001]", "true"},
        {"SELECT $1::numeric = 1", "[1.0]", "true"},
        {"SELECT $1::bigint", "[1e15]", "\"1000000000000000\""}, /* a whole real: digits */
        {"SELECT $1::bigint = 1700000000000000", "[1700000000000000.0]", "true"},
        {"SELECT $1::text", "[true]", "\"true\""},
        {"SELECT $1::text", "[false]", "\"false\""},
        {"SELECT $1::bool", "[true]", "true"},
        {"SELECT $1::text IS NULL", "[null]", "true"},
        {"SELECT $1::int4", "[null]", "null"},
        {"SELECT $1::text", "[\"0.1\"]", "\"0.1\""},
        {"SELECT $1::jsonb = '{\"a\": [1, \"x\"], \"b\": null}'::jsonb", "[{\"a\":[1,\"x\"],\"b\":null}]", "true"},
        {"SELECT $1::jsonb -> 'a' ->> 1", "[{\"a\":[1,\"x\"]}]", "\"x\""},
        {"SELECT jsonb_array_length($1::jsonb)", "[[1,2,3]]", "3"},
        {"SELECT $1::json", "[{\"k\":\"v\"}]", "{\"k\":\"v\"}"},
        {"SELECT $1::int + $2::int", "[2, 3]", "5"},
        {"SELECT $2::text || $1::text", "[\"a\", \"b\"]", "\"ba\""},
    };
    json_t *queries = json_array();
    char path[64];
    (void)state;

    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        json_t *params = json_loads(cases[i].params, 0, NULL);
        assert_non_null(params);
        json_array_append_new(queries, json_pack("{s:s,s:o}", "sql", cases[i].sql, "params", params));
    }
    json_t *doc = FX_BATCHJ(srv.port, json_pack("{s:o}", "queries", queries));
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        json_t *want = json_loads(cases[i].want, JSON_DECODE_ANY, NULL);
        snprintf(path, sizeof(path), "results.%zu.rows.0.0", i);
        if (fx_at(doc, path) == NULL)
            print_error("case %zu: %s with params %s\n", i, cases[i].sql, cases[i].params);
        FX_EXPECT_JSON(doc, path, want);
        json_decref(want);
    }
    json_decref(doc);
}

static void test_clean_exit(void **state)
{
    (void)state;
    assert_true(fx_stop(&srv));
}

int it_params(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_hostile_strings_round_trip),
        cmocka_unit_test(test_dollar_in_literal_is_not_a_parameter),
        cmocka_unit_test(test_parameter_conversion),
        cmocka_unit_test(test_clean_exit),
    };
    return cmocka_run_group_tests_name("params", tests, group_setup, group_teardown);
}
