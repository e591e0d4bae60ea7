/*
 * Values: every type fanout encodes specially, and the common ones it passes through as text,
 * come back with the right JSON kind, type name and OID, in both row formats; int8_as_number;
 * the shape of results (command, row_count, columns/rows only for row sets); max_rows.
 *
 * The group first sets hostile per-database defaults (Tokyo time, SQL/DMY dates, ISO 8601
 * intervals, extra_float_digits 0, escape bytea, LATIN1 client encoding): fanout must pin its own
 * session settings, so its answers must still be UTC, ISO, postgres-style, shortest-exact floats,
 * hex bytea and UTF-8. Expected texts are compared both with fixed strings (what the pinned
 * settings print) and with what libpq returns for the same query under the same settings.
 */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "tests/integration/groups.h"
#include "tests/integration/harness.h"

static fx_server srv = {.pid = -1};

#define HOSTILE_DEFAULTS                                                                           \
    "DO $$ DECLARE db text := current_database(); BEGIN "                                         \
    "EXECUTE format('ALTER DATABASE %I SET TimeZone = ''Asia/Tokyo''', db); "                      \
    "EXECUTE format('ALTER DATABASE %I SET DateStyle = ''SQL, DMY''', db); "                       \
    "EXECUTE format('ALTER DATABASE %I SET IntervalStyle = ''iso_8601''', db); "                   \
    "EXECUTE format('ALTER DATABASE %I SET extra_float_digits = 0', db); "                         \
    "EXECUTE format('ALTER DATABASE %I SET bytea_output = ''escape''', db); "                      \
    "EXECUTE format('ALTER DATABASE %I SET client_encoding = ''LATIN1''', db); END $$"
#define RESET_DEFAULTS                                                                             \
    "DO $$ BEGIN EXECUTE format('ALTER DATABASE %I RESET ALL', current_database()); END $$"

static int group_setup(void **state)
{
    const fx_opts opts = {0};
    (void)state;
    if (!fx_sql_ok(true, HOSTILE_DEFAULTS) ||
        !fx_sql_ok(false, "DROP TABLE IF EXISTS fx_shapes; CREATE TABLE fx_shapes (id int)"))
        return -1;
    if (!fx_start(&srv, &opts)) {
        if (!fx_sql_ok(true, RESET_DEFAULTS))
            print_error("values: could not reset the database defaults\n");
        return -1;
    }
    return 0;
}

static int group_teardown(void **state)
{
    (void)state;
    fx_kill(&srv);
    return fx_sql_ok(true, RESET_DEFAULTS) && fx_sql_ok(false, "DROP TABLE IF EXISTS fx_shapes") ? 0 : -1;
}

typedef enum vkind {
    V_NUMBER, /* a JSON number; text: its digits exactly as the reply must carry them */
    V_STRING, /* a JSON string; text: its exact value */
    V_TRUE,   /* true */
    V_FALSE,  /* false */
    V_JSON,   /* embedded JSON; text: PostgreSQL's JSON text (the reply must carry it verbatim) */
    V_NULL    /* null */
} vkind;

static const struct col {
    const char *expr; /* SQL expression */
    const char *name; /* its alias, the column name */
    const char *type; /* pg_type.typname fanout must report */
    vkind kind;       /* JSON kind of the value */
    const char *text; /* see vkind; NULL for V_TRUE, V_FALSE, V_NULL */
} cols[] = {
    {"(-32768)::int2", "i2", "int2", V_NUMBER, "-32768"},
    {"2147483647::int4", "i4", "int4", V_NUMBER, "2147483647"},
    {"4294967295::oid", "o", "oid", V_NUMBER, "4294967295"},
    {"9223372036854775807::int8", "i8", "int8", V_STRING, "9223372036854775807"},
    {"(-9223372036854775808)::int8", "i8min", "int8", V_STRING, "-9223372036854775808"},
    {"1.5::float4", "f4", "float4", V_NUMBER, "1.5"},
    {"3.4028235e38::float4", "f4max", "float4", V_NUMBER, "3.4028235e+38"},
    {"0.1::float8", "f8", "float8", V_NUMBER, "0.1"},
    {"0.1::float8 + 0.2::float8", "f8sum", "float8", V_NUMBER, "0.30000000000000004"},
    {"1e300::float8", "f8big", "float8", V_NUMBER, "1e+300"},
    {"(-2.5e-10)::float8", "f8small", "float8", V_NUMBER, "-2.5e-10"},
    {"'NaN'::float8", "f8nan", "float8", V_STRING, "NaN"},
    {"'Infinity'::float8", "f8inf", "float8", V_STRING, "Infinity"},
    {"'-Infinity'::float4", "f4ninf", "float4", V_STRING, "-Infinity"},
    {"123456789012345678901234567890.123456789::numeric", "num", "numeric", V_STRING,
     "123456789012345678901234567890.123456789"},
    {"0.10::numeric", "num0", "numeric", V_STRING, "0.10"},
    {"'NaN'::numeric", "numnan", "numeric", V_STRING, "NaN"},
    {"true", "bt", "bool", V_TRUE, NULL},
    {"false", "bf", "bool", V_FALSE, NULL},
    {"'{\"a\": [1, 2.50, {\"b\": null}], \"n\": 1.00000000000000000001}'::json", "js", "json", V_JSON,
     "{\"a\": [1, 2.50, {\"b\": null}], \"n\": 1.00000000000000000001}"},
    {"'{\"b\": 2, \"a\": [true, \"x\"]}'::jsonb", "jb", "jsonb", V_JSON, "{\"a\": [true, \"x\"], \"b\": 2}"},
    {"'\"hi\"'::jsonb", "jbstr", "jsonb", V_JSON, "\"hi\""},
    {"'null'::jsonb", "jbnull", "jsonb", V_JSON, "null"},
    {"NULL::text", "nt", "text", V_NULL, NULL},
    {"NULL::int4", "ni4", "int4", V_NULL, NULL},
    {"NULL::int8", "ni8", "int8", V_NULL, NULL},
    {"NULL::float8", "nf8", "float8", V_NULL, NULL},
    {"NULL::jsonb", "njb", "jsonb", V_NULL, NULL},
    {"NULL::bool", "nbool", "bool", V_NULL, NULL},
    {"'\\xdeadbeef00'::bytea", "by", "bytea", V_STRING, "\\xdeadbeef00"},
    {"''::bytea", "byempty", "bytea", V_STRING, "\\x"},
    {"ARRAY[1, 2, 3]::int4[]", "ai4", "_int4", V_STRING, "{1,2,3}"},
    {"ARRAY['a b', 'c\"d', NULL]::text[]", "atext", "_text", V_STRING, "{\"a b\",\"c\\\"d\",NULL}"},
    {"'2024-02-29'::date", "d", "date", V_STRING, "2024-02-29"},
    {"'2024-02-29 12:34:56.789'::timestamp", "ts", "timestamp", V_STRING, "2024-02-29 12:34:56.789"},
    {"'2024-02-29 12:34:56.789+02'::timestamptz", "tstz", "timestamptz", V_STRING, "2024-02-29 10:34:56.789+00"},
    {"'23:59:59.5'::time", "tm", "time", V_STRING, "23:59:59.5"},
    {"'a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11'::uuid", "u", "uuid", V_STRING,
     "a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11"},
    {"'1 year 2 months 3 days 04:05:06.5'::interval", "iv", "interval", V_STRING,
     "1 year 2 mons 3 days 04:05:06.5"},
    {"'h\xc3\xa9llo \xe6\x97\xa5\xe6\x9c\xac \xf0\x9f\x98\x80'::text", "t", "text", V_STRING,
     "h\xc3\xa9llo \xe6\x97\xa5\xe6\x9c\xac \xf0\x9f\x98\x80"},
    {"'tab\there \"quoted\" back\\slash'::text", "tesc", "text", V_STRING, "tab\there \"quoted\" back\\slash"},
    {"'abc'::varchar(5)", "vc", "varchar", V_STRING, "abc"},
    {"'a'::char(3)", "ch", "bpchar", V_STRING, "a  "},
    {"'192.168.0.1/24'::inet", "ip", "inet", V_STRING, "192.168.0.1/24"},
};
#define NCOLS (sizeof(cols) / sizeof(cols[0]))

/* SELECT expr AS name, ... over every column (caller frees). */
static char *values_sql(void)
{
    size_t cap = 64;
    for (size_t i = 0; i < NCOLS; i++)
        cap += strlen(cols[i].expr) + strlen(cols[i].name) + 8;
    char *sql = malloc(cap);
    assert_non_null(sql);
    strcpy(sql, "SELECT ");
    for (size_t i = 0; i < NCOLS; i++) {
        strcat(sql, i > 0 ? ", " : "");
        strcat(sql, cols[i].expr);
        strcat(sql, " AS ");
        strcat(sql, cols[i].name);
    }
    return sql;
}

/* Ask fanout for the values row in this row format; *body_out gets the raw reply body. */
static json_t *fetch_values(const char *row_format, char **body_out)
{
    char *sql = values_sql();
    json_t *req = json_pack("{s:[{s:s}],s:s}", "queries", "sql", sql, "row_format", row_format);
    char *body = json_dumps(req, JSON_COMPACT);
    fx_response r;
    bool sent = fx_http(srv.port, "POST", "/v1/batch", "Content-Type: application/json\r\n", body, strlen(body), &r);

    free(sql);
    free(body);
    json_decref(req);
    assert_true(sent);
    json_t *doc = json_loadb(r.body, r.body_len, 0, NULL);
    FX_CHECK(r.status == 200 && doc != NULL, "values batch: got %d %.*s", r.status,
             (int)(r.body_len > 3000 ? 3000 : r.body_len), r.body);
    *body_out = r.body;
    r.body = NULL;
    fx_response_free(&r);
    return doc;
}

/* The same query through libpq, with fanout's pinned settings. */
static PGresult *reference_values(void)
{
    char *sql = values_sql();
    PGresult *res = fx_sql(false, sql, 0, NULL);
    free(sql);
    FX_CHECK(res != NULL && PQresultStatus(res) == PGRES_TUPLES_OK && PQnfields(res) == (int)NCOLS,
             "libpq reference query failed: %s", res ? PQresultErrorMessage(res) : "no connection");
    return res;
}

/* Check one value (at path in doc) against column i's expectation and libpq's answer. */
static void check_value(json_t *doc, const char *path, size_t i, PGresult *ref)
{
    const struct col *c = &cols[i];
    const char *libpq_text = PQgetvalue(ref, 0, (int)i);
    json_t *v = fx_at(doc, path);

    FX_CHECK(PQgetisnull(ref, 0, (int)i) == (c->kind == V_NULL), "column %s: libpq NULL-ness disagrees with the test",
             c->name);
    switch (c->kind) {
    case V_NUMBER:
        FX_EXPECT_KIND(doc, path, "number");
        FX_CHECK(json_number_value(v) == strtod(c->text, NULL) && json_number_value(v) == strtod(libpq_text, NULL),
                 "column %s: got %.17g, want %s (libpq says %s)", c->name, json_number_value(v), c->text, libpq_text);
        if (strpbrk(c->text, ".e") == NULL)
            FX_EXPECT_KIND(doc, path, "integer");
        break;
    case V_STRING:
        FX_EXPECT_STR(doc, path, c->text);
        FX_EXPECT_STR(doc, path, libpq_text);
        break;
    case V_TRUE:
    case V_FALSE:
        FX_EXPECT_BOOL(doc, path, c->kind == V_TRUE);
        FX_CHECK(strcmp(libpq_text, c->kind == V_TRUE ? "t" : "f") == 0, "column %s: libpq says %s", c->name,
                 libpq_text);
        break;
    case V_JSON: {
        json_t *want = json_loads(c->text, JSON_DECODE_ANY, NULL);
        json_t *libpq_json = json_loads(libpq_text, JSON_DECODE_ANY, NULL);
        FX_CHECK(strcmp(libpq_text, c->text) == 0, "column %s: libpq prints %s, the test expects %s", c->name,
                 libpq_text, c->text);
        FX_EXPECT_KIND(doc, path, "present");
        FX_EXPECT_JSON(doc, path, want);
        FX_EXPECT_JSON(doc, path, libpq_json);
        json_decref(want);
        json_decref(libpq_json);
        break;
    }
    case V_NULL:
        FX_EXPECT_NULL(doc, path);
        break;
    }
}

/* columns: [{name, type, type_oid}] in order, type_oid as libpq reports it. */
static void check_columns(json_t *doc, PGresult *ref)
{
    char path[96];
    FX_EXPECT_LEN(doc, "results.0.columns", NCOLS);
    for (size_t i = 0; i < NCOLS; i++) {
        snprintf(path, sizeof(path), "results.0.columns.%zu.name", i);
        FX_EXPECT_STR(doc, path, cols[i].name);
        snprintf(path, sizeof(path), "results.0.columns.%zu.type", i);
        FX_EXPECT_STR(doc, path, cols[i].type);
        snprintf(path, sizeof(path), "results.0.columns.%zu.type_oid", i);
        FX_EXPECT_INT(doc, path, (long long)PQftype(ref, (int)i));
    }
}

static void test_every_type_array_rows(void **state)
{
    char *body = NULL, path[96];
    PGresult *ref = reference_values();
    json_t *doc = fetch_values("array", &body);
    (void)state;

    FX_EXPECT_LEN(doc, "results", 1);
    FX_EXPECT_STR(doc, "results.0.command", "SELECT");
    FX_EXPECT_INT(doc, "results.0.row_count", 1);
    FX_EXPECT_BOOL(doc, "results.0.truncated", false);
    FX_EXPECT_ABSENT(doc, "results.0.id");
    FX_EXPECT_ABSENT(doc, "results.0.error");
    FX_EXPECT_KIND(doc, "results.0.elapsed_ms", "number");
    FX_EXPECT_KIND(doc, "elapsed_ms", "number");
    FX_CHECK(json_number_value(fx_at(doc, "elapsed_ms")) >= 0, "negative elapsed_ms");
    check_columns(doc, ref);
    FX_EXPECT_LEN(doc, "results.0.rows", 1);
    FX_EXPECT_LEN(doc, "results.0.rows.0", NCOLS);
    for (size_t i = 0; i < NCOLS; i++) {
        snprintf(path, sizeof(path), "results.0.rows.0.%zu", i);
        check_value(doc, path, i, ref);
    }
    json_decref(doc);
    free(body);
    PQclear(ref);
}

/* Where "key": occurs in body, the value's raw text must be exactly want (then a delimiter). */
static bool raw_value_is(const char *body, const char *key, const char *want)
{
    char pattern[80];
    snprintf(pattern, sizeof(pattern), "\"%s\":", key);
    const char *p = strstr(body, pattern);
    if (p == NULL)
        return false;
    p += strlen(pattern);
    p += strspn(p, " \t\r\n");
    return strncmp(p, want, strlen(want)) == 0 && strchr(",}] \t\r\n", p[strlen(want)]) != NULL;
}

/* Rows as objects keyed by column name; the same values as the array format. Numbers and JSON
 * appear in the reply with PostgreSQL's exact text (never parsed and re-printed). */
static void test_every_type_object_rows(void **state)
{
    char *body = NULL, *array_body = NULL, path[96];
    PGresult *ref = reference_values();
    json_t *doc = fetch_values("object", &body);
    json_t *arr = fetch_values("array", &array_body);
    (void)state;

    check_columns(doc, ref);
    FX_EXPECT_LEN(doc, "results.0.rows", 1);
    FX_EXPECT_KIND(doc, "results.0.rows.0", "object");
    FX_CHECK(json_object_size(fx_at(doc, "results.0.rows.0")) == NCOLS, "row object has %zu keys, want %zu",
             json_object_size(fx_at(doc, "results.0.rows.0")), NCOLS);
    for (size_t i = 0; i < NCOLS; i++) {
        snprintf(path, sizeof(path), "results.0.rows.0.%s", cols[i].name);
        check_value(doc, path, i, ref);
        snprintf(path, sizeof(path), "results.0.rows.0.%zu", i);
        json_t *same = fx_at(arr, path);
        snprintf(path, sizeof(path), "results.0.rows.0.%s", cols[i].name);
        FX_EXPECT_JSON(doc, path, same);
        if (cols[i].kind == V_NUMBER || cols[i].kind == V_JSON)
            FX_CHECK(raw_value_is(body, cols[i].name, PQgetvalue(ref, 0, (int)i)),
                     "column %s: the reply does not carry PostgreSQL's text %s verbatim; reply: %.3000s",
                     cols[i].name, PQgetvalue(ref, 0, (int)i), body);
    }
    json_decref(doc);
    json_decref(arr);
    free(body);
    free(array_body);
    PQclear(ref);
}

/* int8_as_number turns int8 (only) into numbers; numeric stays a string. */
static void test_int8_as_number(void **state)
{
    const char *sql = "SELECT 9223372036854775807::int8 AS big, (-42)::int8 AS neg, NULL::int8 AS n, "
                      "12.50::numeric AS num, 7::int4 AS i4, ARRAY[1]::int8[] AS arr";
    json_t *doc;
    (void)state;

    doc = FX_BATCHJ(srv.port, json_pack("{s:[{s:s}],s:b}", "queries", "sql", sql, "int8_as_number", 1));
    FX_EXPECT_INT(doc, "results.0.rows.0.0", LLONG_MAX);
    FX_EXPECT_INT(doc, "results.0.rows.0.1", -42);
    FX_EXPECT_NULL(doc, "results.0.rows.0.2");
    FX_EXPECT_STR(doc, "results.0.rows.0.3", "12.50");
    FX_EXPECT_INT(doc, "results.0.rows.0.4", 7);
    FX_EXPECT_STR(doc, "results.0.rows.0.5", "{1}");
    FX_EXPECT_STR(doc, "results.0.columns.0.type", "int8");
    FX_EXPECT_INT(doc, "results.0.columns.0.type_oid", 20);
    json_decref(doc);

    doc = FX_BATCHJ(srv.port, json_pack("{s:[{s:s}],s:b}", "queries", "sql", sql, "int8_as_number", 0));
    FX_EXPECT_STR(doc, "results.0.rows.0.0", "9223372036854775807");
    FX_EXPECT_STR(doc, "results.0.rows.0.1", "-42");
    FX_EXPECT_NULL(doc, "results.0.rows.0.2");
    json_decref(doc);
}

/* command, row_count, and columns/rows only where there is a row set (also an empty one). */
static void test_result_shapes(void **state)
{
    json_t *doc;
    (void)state;

    doc = FX_BATCH(srv.port,
                   "{\"queries\":["
                   "{\"sql\":\"INSERT INTO fx_shapes (id) SELECT g FROM generate_series(1, 3) AS g\"},"
                   "{\"sql\":\"INSERT INTO fx_shapes (id) VALUES (100) RETURNING id, 'x' AS tag\"},"
                   "{\"sql\":\"SELECT 1 AS a WHERE false\"},"
                   "{\"sql\":\"UPDATE fx_shapes SET id = id WHERE id < 0\"},"
                   "{\"sql\":\"DELETE FROM fx_shapes WHERE id = -5\"},"
                   "{\"sql\":\"DO $$BEGIN END$$\"},"
                   "{\"sql\":\"VALUES (1, 'a'), (2, 'b')\"},"
                   "{\"sql\":\"SHOW TimeZone\"}]}");
    FX_EXPECT_LEN(doc, "results", 8);

    FX_EXPECT_STR(doc, "results.0.command", "INSERT");
    FX_EXPECT_INT(doc, "results.0.row_count", 3);
    FX_EXPECT_ABSENT(doc, "results.0.columns");
    FX_EXPECT_ABSENT(doc, "results.0.rows");

    FX_EXPECT_STR(doc, "results.1.command", "INSERT");
    FX_EXPECT_INT(doc, "results.1.row_count", 1);
    FX_EXPECT_LEN(doc, "results.1.columns", 2);
    FX_EXPECT_STR(doc, "results.1.columns.1.name", "tag");
    FX_EXPECT_INT(doc, "results.1.rows.0.0", 100);
    FX_EXPECT_STR(doc, "results.1.rows.0.1", "x");

    FX_EXPECT_STR(doc, "results.2.command", "SELECT");
    FX_EXPECT_INT(doc, "results.2.row_count", 0);
    FX_EXPECT_BOOL(doc, "results.2.truncated", false);
    FX_EXPECT_LEN(doc, "results.2.columns", 1);
    FX_EXPECT_STR(doc, "results.2.columns.0.type", "int4");
    FX_EXPECT_LEN(doc, "results.2.rows", 0);

    FX_EXPECT_STR(doc, "results.3.command", "UPDATE");
    FX_EXPECT_INT(doc, "results.3.row_count", 0);
    FX_EXPECT_ABSENT(doc, "results.3.rows");
    FX_EXPECT_STR(doc, "results.4.command", "DELETE");
    FX_EXPECT_INT(doc, "results.4.row_count", 0);
    FX_EXPECT_ABSENT(doc, "results.4.columns");
    FX_EXPECT_STR(doc, "results.5.command", "DO");
    FX_EXPECT_ABSENT(doc, "results.5.rows");

    FX_EXPECT_STR(doc, "results.6.command", "SELECT");
    FX_EXPECT_INT(doc, "results.6.row_count", 2);
    FX_EXPECT_STR(doc, "results.6.rows.1.1", "b");

    /* The pinned time zone, although the database default is Asia/Tokyo. */
    FX_EXPECT_STR(doc, "results.7.command", "SHOW");
    FX_EXPECT_STR(doc, "results.7.rows.0.0", "UTC");
    for (int i = 0; i < 8; i++) {
        char path[64];
        snprintf(path, sizeof(path), "results.%d.elapsed_ms", i);
        FX_EXPECT_KIND(doc, path, "number");
    }
    json_decref(doc);

    char *count = fx_sql_value(false, "SELECT count(*) FROM fx_shapes", 0, NULL);
    assert_non_null(count);
    assert_string_equal(count, "4");
    free(count);
}

/* Rows of SELECT g FROM generate_series(1, 10) with this max_rows (<= 0: not sent). */
static json_t *series(int port, int max_rows)
{
    const char *sql = "SELECT g FROM generate_series(1, 10) AS g";
    json_t *req = max_rows > 0 ? json_pack("{s:[{s:s}],s:i}", "queries", "sql", sql, "max_rows", max_rows)
                               : json_pack("{s:[{s:s}]}", "queries", "sql", sql);
    return FX_BATCHJ(port, req);
}

static void expect_series(json_t *doc, int rows, bool truncated)
{
    char path[64];
    FX_EXPECT_INT(doc, "results.0.row_count", rows);
    FX_EXPECT_BOOL(doc, "results.0.truncated", truncated);
    FX_EXPECT_LEN(doc, "results.0.rows", (size_t)rows);
    for (int i = 0; i < rows; i++) {
        snprintf(path, sizeof(path), "results.0.rows.%d.0", i);
        FX_EXPECT_INT(doc, path, i + 1);
    }
}

/* Object rows of a result without columns are empty objects, not arrays. */
static void test_object_rows_without_columns(void **state)
{
    (void)state;
    json_t *doc = FX_BATCH(srv.port, "{\"row_format\":\"object\",\"queries\":[{\"sql\":\"SELECT\"},"
                                     "{\"sql\":\"SELECT FROM generate_series(1, 2)\"}]}");
    FX_EXPECT_LEN(doc, "results.0.rows", 1);
    FX_EXPECT_KIND(doc, "results.0.rows.0", "object");
    FX_EXPECT_LEN(doc, "results.1.rows", 2);
    FX_EXPECT_KIND(doc, "results.1.rows.1", "object");
    FX_EXPECT_LEN(doc, "results.1.columns", 0);
    json_decref(doc);
}

static void test_max_rows(void **state)
{
    static const struct {
        int max_rows, rows;
        bool truncated;
    } cases[] = {{3, 3, true}, {1, 1, true}, {9, 9, true}, {10, 10, false}, {11, 10, false}, {0, 10, false}};
    (void)state;

    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        json_t *doc = series(srv.port, cases[i].max_rows);
        expect_series(doc, cases[i].rows, cases[i].truncated);
        json_decref(doc);
    }
}

/* --max-rows 5: the setting applies without max_rows, and a larger max_rows is lowered to it. */
static void test_max_rows_setting_caps_request(void **state)
{
    static const char *const args[] = {"--max-rows", "5", NULL};
    const fx_opts opts = {.args = args};
    fx_server capped = {.pid = -1};
    static const struct {
        int max_rows, rows;
        bool truncated;
    } cases[] = {{100, 5, true}, {0, 5, true}, {5, 5, true}, {2, 2, true}};
    (void)state;

    assert_true(fx_start(&capped, &opts));
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        json_t *doc = series(capped.port, cases[i].max_rows);
        expect_series(doc, cases[i].rows, cases[i].truncated);
        json_decref(doc);
    }
    assert_true(fx_stop(&capped));
}

/* --timezone: the zone pinned on every connection (the default, UTC, is checked above). */
static void test_timezone_setting(void **state)
{
    static const char *const args[] = {"--timezone", "America/New_York", NULL};
    const fx_opts opts = {.args = args};
    fx_server ny = {.pid = -1};
    (void)state;

    assert_true(fx_start(&ny, &opts));
    json_t *doc = FX_BATCH(ny.port, "{\"queries\":[{\"sql\":\"SHOW TimeZone\"},"
                                    "{\"sql\":\"SELECT '2024-07-01 12:00:00+00'::timestamptz AS t\"}]}");
    FX_EXPECT_STR(doc, "results.0.rows.0.0", "America/New_York");
    FX_EXPECT_STR(doc, "results.1.rows.0.0", "2024-07-01 08:00:00-04");
    json_decref(doc);
    assert_true(fx_stop(&ny));
}

static void test_clean_exit(void **state)
{
    (void)state;
    assert_true(fx_stop(&srv));
}

int it_values(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_every_type_array_rows),
        cmocka_unit_test(test_every_type_object_rows),
        cmocka_unit_test(test_int8_as_number),
        cmocka_unit_test(test_result_shapes),
        cmocka_unit_test(test_object_rows_without_columns),
        cmocka_unit_test(test_max_rows),
        cmocka_unit_test(test_max_rows_setting_caps_request),
        cmocka_unit_test(test_timezone_setting),
        cmocka_unit_test(test_clean_exit),
    };
    return cmocka_run_group_tests_name("values", tests, group_setup, group_teardown);
}
