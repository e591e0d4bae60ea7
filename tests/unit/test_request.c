/*
 * Unit tests for http/request: the case files under tests/unit/cases/request (see its README),
 * then the parsed structure field by field, parameter texts, http_format_double and the
 * depth scan. Run from the repository root.
 */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <dirent.h>
#include <float.h>
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "http/request.h"

#define CASES "tests/unit/cases/request"
/* Fewer files than this means a wrong path or lost files, not a pass. */
#define MIN_VALID_CASES 23
#define MIN_INVALID_CASES 68

/* The limits the case files are written against. */
static const http_req_limits lim = {
    .max_queries = 4, .max_params = 4, .max_rows = 1000, .max_depth = 8};
/* Room for the long parameter lists of the explicit tests. */
static const http_req_limits wide = {
    .max_queries = 32, .max_params = 32, .max_rows = 500, .max_depth = HTTP_DEFAULT_MAX_DEPTH};

static char *read_file(const char *path, size_t *len)
{
    FILE *f = fopen(path, "rb");
    char *buf = NULL;
    long n;

    if (!f)
        fail_msg("cannot open %s", path);
    assert_int_equal(fseek(f, 0, SEEK_END), 0);
    n = ftell(f);
    assert_true(n >= 0);
    rewind(f);
    buf = malloc((size_t)n + 1);
    assert_non_null(buf);
    assert_int_equal(fread(buf, 1, (size_t)n, f), (size_t)n);
    buf[n] = '\0';
    fclose(f);
    *len = (size_t)n;
    return buf;
}

/* The reason must be fit for a JSON reply and a log line. */
static void assert_one_line(const char *name, const char *err)
{
    const char *p;

    if (err[0] == '\0')
        fail_msg("%s: empty reason", name);
    for (p = err; *p; p++)
        if ((unsigned char)*p < 0x20 || (unsigned char)*p > 0x7e)
            fail_msg("%s: reason has byte 0x%02x: %s", name, (unsigned char)*p, err);
}

static void check_case(const char *dir, const char *name, bool valid)
{
    char path[512], err[256] = "", *body, *want = NULL;
    static http_batch_req stale;
    http_batch_req *req = &stale; /* the parser must reset it to NULL on failure */
    size_t len, wlen;
    bool ok;

    snprintf(path, sizeof path, "%s/%s", dir, name);
    body = read_file(path, &len);
    ok = http_request_parse(body, len, &lim, &req, err, sizeof err);
    if (valid) {
        if (!ok || !req || req->nqueries < 1)
            fail_msg("%s: refused: %s", name, err);
    } else {
        if (ok || req)
            fail_msg("%s: accepted", name);
        assert_one_line(name, err);
        snprintf(path + strlen(path) - strlen(".json"), sizeof path - strlen(path) + 5, ".error");
        want = read_file(path, &wlen);
        want[strcspn(want, "\r\n")] = '\0';
        if (!strstr(err, want))
            fail_msg("%s: reason \"%s\" lacks \"%s\"", name, err, want);
    }
    http_batch_req_free(req);
    free(want);
    free(body);
}

static int run_dir(const char *dir, bool valid)
{
    DIR *d = opendir(dir);
    struct dirent *e;
    int n = 0;

    if (!d)
        fail_msg("cannot open %s (run from the repository root)", dir);
    while ((e = readdir(d))) {
        size_t l = strlen(e->d_name);

        if (l > 5 && strcmp(e->d_name + l - 5, ".json") == 0) {
            check_case(dir, e->d_name, valid);
            n++;
        }
    }
    closedir(d);
    return n;
}

static void test_valid_cases(void **state)
{
    (void)state;
    assert_true(run_dir(CASES "/valid", true) >= MIN_VALID_CASES);
}

static void test_invalid_cases(void **state)
{
    (void)state;
    assert_true(run_dir(CASES "/invalid", false) >= MIN_INVALID_CASES);
}

static http_batch_req *parse_ok(const char *body, const http_req_limits *l)
{
    http_batch_req *req = NULL;
    char err[256] = "";

    if (!http_request_parse(body, strlen(body), l, &req, err, sizeof err))
        fail_msg("refused: %s\n  body: %s", err, body);
    assert_non_null(req);
    return req;
}

/* Refused with a reason containing want; returns nothing to free. */
static void parse_bad(const char *body, size_t len, const http_req_limits *l, const char *want)
{
    http_batch_req *req = NULL;
    char err[256] = "";

    assert_false(http_request_parse(body, len, l, &req, err, sizeof err));
    assert_null(req);
    assert_one_line("body", err);
    if (!strstr(err, want))
        fail_msg("reason \"%s\" lacks \"%s\"", err, want);
}

static void test_defaults(void **state)
{
    http_batch_req *req = parse_ok("{\"queries\": [{\"sql\": \"select 1\"}]}", &lim);

    (void)state;
    assert_int_equal(req->mode, HTTP_MODE_PARALLEL);
    assert_int_equal(req->isolation, HTTP_ISO_READ_COMMITTED);
    assert_false(req->read_only);
    assert_false(req->rows_as_objects);
    assert_false(req->int8_as_number);
    assert_int_equal(req->max_rows, 1000);
    assert_int_equal(req->nqueries, 1);
    assert_null(req->queries[0].id);
    assert_string_equal(req->queries[0].sql, "select 1");
    assert_int_equal(req->queries[0].nparams, 0);
    assert_null(req->queries[0].params);
    http_batch_req_free(req);
}

static void test_all_fields(void **state)
{
    http_batch_req *req = parse_ok(
        "{\"mode\": \"transaction\", \"isolation\": \"serializable\", \"read_only\": true,"
        " \"row_format\": \"object\", \"int8_as_number\": true, \"max_rows\": 10,"
        " \"queries\": [{\"id\": \"q1\", \"sql\": \"select $1\", \"params\": [1]},"
        " {\"sql\": \"\"}]}",
        &lim);

    (void)state;
    assert_int_equal(req->mode, HTTP_MODE_TRANSACTION);
    assert_int_equal(req->isolation, HTTP_ISO_SERIALIZABLE);
    assert_true(req->read_only);
    assert_true(req->rows_as_objects);
    assert_true(req->int8_as_number);
    assert_int_equal(req->max_rows, 10);
    assert_int_equal(req->nqueries, 2);
    assert_string_equal(req->queries[0].id, "q1");
    assert_string_equal(req->queries[0].sql, "select $1");
    assert_int_equal(req->queries[0].nparams, 1);
    assert_string_equal(req->queries[0].params[0], "1");
    assert_string_equal(req->queries[1].sql, "");
    http_batch_req_free(req);

    req = parse_ok("{\"isolation\": \"repeatable_read\", \"row_format\": \"array\","
                   " \"read_only\": false, \"mode\": \"parallel\","
                   " \"queries\": [{\"sql\": \"select 1\"}]}",
                   &lim);
    assert_int_equal(req->mode, HTTP_MODE_PARALLEL);
    assert_int_equal(req->isolation, HTTP_ISO_REPEATABLE_READ);
    assert_false(req->read_only);
    assert_false(req->rows_as_objects);
    http_batch_req_free(req);
}

static void test_max_rows(void **state)
{
    static const struct {
        const char *field; /* "max_rows" member, or "" for none */
        long want;
    } cases[] = {
        {"", 1000},
        {"\"max_rows\": 1,", 1},
        {"\"max_rows\": 999,", 999},
        {"\"max_rows\": 1000,", 1000},
        {"\"max_rows\": 1001,", 1000},
        {"\"max_rows\": 9223372036854775807,", 1000},
    };
    char body[256];
    size_t i;

    (void)state;
    for (i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        http_batch_req *req;

        snprintf(body, sizeof body, "{%s \"queries\": [{\"sql\": \"select 1\"}]}",
                 cases[i].field);
        req = parse_ok(body, &lim);
        assert_int_equal(req->max_rows, cases[i].want);
        http_batch_req_free(req);
    }
}

/* timeout_ms: the default when absent, lowered to the ceiling when above it. */
static void test_timeout_ms(void **state)
{
    static const http_req_limits t = {.max_queries = 4, .max_params = 4, .max_rows = 10,
                                      .max_depth = 8, .default_timeout_ms = 2000,
                                      .max_timeout_ms = 5000};
    static const struct {
        const char *field;
        int want;
    } cases[] = {
        {"", 2000},
        {"\"timeout_ms\": 1,", 1},
        {"\"timeout_ms\": 4999,", 4999},
        {"\"timeout_ms\": 5001,", 5000},
        {"\"timeout_ms\": 9223372036854775807,", 5000},
    };
    char body[256];

    (void)state;
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        snprintf(body, sizeof body, "{%s \"queries\": [{\"sql\": \"select 1\"}]}",
                 cases[i].field);
        http_batch_req *req = parse_ok(body, &t);
        assert_int_equal(req->timeout_ms, cases[i].want);
        http_batch_req_free(req);
    }
}

static void test_param_texts(void **state)
{
    static const char *const want[] = {
        "'; DROP TABLE users; --",
        "say \"hi\"; \\ back",
        "42",
        "-7",
        "0",
        "9223372036854775807",
        "-9223372036854775808",
        "0.1",
        "1e+300",
        "1.5",
        "100",
        "-0",
        "true",
        "false",
        NULL,
        "{\"b\":[1,2.5,\"x\"],\"a\":null,\"c\":{}}",
        "[1,\"two\",[],0.1,true]",
    };
    http_batch_req *req = parse_ok(
        "{\"queries\": [{\"sql\": \"select\", \"params\": ["
        "\"'; DROP TABLE users; --\", \"say \\\"hi\\\"; \\\\ back\", 42, -7, -0,"
        " 9223372036854775807, -9223372036854775808, 0.1, 1e300, 1.5, 100.0, -0.0,"
        " true, false, null, {\"b\": [1, 2.5, \"x\"], \"a\": null, \"c\": {}},"
        " [1, \"two\", [], 1e-1, true]]}]}",
        &wide);
    http_query *q = &req->queries[0];
    size_t i, n = sizeof want / sizeof want[0];

    (void)state;
    assert_int_equal(q->nparams, n);
    for (i = 0; i < n; i++) {
        if (!want[i])
            assert_null(q->params[i]);
        else if (!q->params[i] || strcmp(q->params[i], want[i]) != 0)
            fail_msg("params[%zu] = %s, want %s", i, q->params[i] ? q->params[i] : "NULL", want[i]);
    }
    http_batch_req_free(req);
}

/* Object/array parameters: compact, key order kept, strings escaped so PostgreSQL reads back
 * exactly what the client sent. */
static void test_nested_param_json(void **state)
{
    static const char *const src[] = {
        "{\"z\": 1, \"a\": 2, \"m\": [3, {\"y\": null, \"b\": false}]}",
        "[\"q\\\"uote\", \"back\\\\slash\", \"nl\\n tab\\t cr\\r \\u0001 \\u001f\", \"/\"]",
        "{\"caf\\u00e9 \\ud83d\\ude00\": \"\\u2028 \\u65e5\"}",
        "[0.1, 0.3, 1e300, -2.5e-7, 5e-324, 1.7976931348623157e308, 1e22, 123456789012345678]",
        "{\"\": [], \"k\\\"\\\\\": {}}",
    };
    size_t i;

    (void)state;
    for (i = 0; i < sizeof src / sizeof src[0]; i++) {
        char body[512];
        json_t *orig, *back;
        http_batch_req *req;

        snprintf(body, sizeof body, "{\"queries\": [{\"sql\": \"\", \"params\": [%s]}]}", src[i]);
        req = parse_ok(body, &wide);
        orig = json_loads(src[i], JSON_DECODE_ANY, NULL);
        back = json_loads(req->queries[0].params[0], JSON_DECODE_ANY | JSON_REJECT_DUPLICATES, NULL);
        assert_non_null(orig);
        if (!back || !json_equal(orig, back))
            fail_msg("%s became %s", src[i], req->queries[0].params[0]);
        json_decref(orig);
        json_decref(back);
        http_batch_req_free(req);
    }
    /* Exact text: no %.17g noise, no spaces, request order. */
    {
        http_batch_req *req = parse_ok(
            "{\"queries\": [{\"sql\": \"\", \"params\": [{\"price\": 0.1, \"a\": [1.0, \"\\n\"]}]}]}",
            &wide);

        assert_string_equal(req->queries[0].params[0], "{\"price\":0.1,\"a\":[1,\"\\u000a\"]}");
        http_batch_req_free(req);
    }
}

static void test_ids_and_params_absent(void **state)
{
    http_batch_req *req = parse_ok(
        "{\"queries\": [{\"id\": \"first\", \"sql\": \"select 1\"}, {\"sql\": \"select 2\","
        " \"params\": []}, {\"id\": \"\", \"sql\": \"select $1\", \"params\": [null]}]}",
        &lim);

    (void)state;
    assert_int_equal(req->nqueries, 3);
    assert_string_equal(req->queries[0].id, "first");
    assert_int_equal(req->queries[0].nparams, 0);
    assert_null(req->queries[0].params);
    assert_null(req->queries[1].id);
    assert_string_equal(req->queries[1].sql, "select 2");
    assert_int_equal(req->queries[1].nparams, 0);
    assert_null(req->queries[1].params);
    assert_string_equal(req->queries[2].id, "");
    assert_int_equal(req->queries[2].nparams, 1);
    assert_non_null(req->queries[2].params);
    assert_null(req->queries[2].params[0]);
    http_batch_req_free(req);
}

static void test_format_double(void **state)
{
    static const struct {
        double v;
        const char *want;
    } cases[] = {
        {0.1, "0.1"},
        {1.0 / 3.0, "0.3333333333333333"},
        {2.0 / 3.0, "0.6666666666666666"},
        {5e-324, "5e-324"},
        {2.2250738585072014e-308, "2.2250738585072014e-308"}, /* DBL_MIN */
        {1.7976931348623157e308, "1.7976931348623157e+308"},
        {-0.0, "-0"},
        {0.0, "0"},
        {100.0, "100"},
        {1.0, "1"},
        {1.5, "1.5"},
        {-2.5e-7, "-2.5e-07"},
        {1e300, "1e+300"},
        {1e22, "1e+22"},
        {1e23, "1e+23"},
        {0.30000000000000004, "0.30000000000000004"},
        {123456789012345678.0, "1.2345678901234568e+17"},
        {9007199254740993.0, "9007199254740992"},
        {1e15, "1000000000000000"}, /* whole numbers up to 2^53: digits, for integer parameters */
        {-1e15, "-1000000000000000"},
        {1700000000000000.0, "1700000000000000"},
        {999999999999999.0, "999999999999999"},
        {9007199254740992.0, "9007199254740992"},
        {1e16, "1e+16"}, /* beyond 2^53: a double may hold a rounded neighbour */
        {1e15 + 0.5, "1000000000000000.5"},
    };
    char buf[32], small[4];
    size_t i;

    (void)state;
    for (i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        assert_true(http_format_double(cases[i].v, buf, sizeof buf));
        if (strcmp(buf, cases[i].want) != 0)
            fail_msg("%.17g -> %s, want %s", cases[i].v, buf, cases[i].want);
        assert_true(strtod(buf, NULL) == cases[i].v);
    }
    assert_false(http_format_double(1.0 / 0.0, buf, sizeof buf));
    assert_false(http_format_double(0.0 / 0.0, buf, sizeof buf));
    assert_false(http_format_double(0.25, small, sizeof small)); /* needs 5 bytes */
    assert_true(http_format_double(1.5, small, sizeof small));
    assert_string_equal(small, "1.5");
}

/* Depth is refused by the byte scan, before jansson would recurse. */
static void test_depth(void **state)
{
    const size_t deep = 100000;
    http_req_limits def = lim;
    char *body = malloc(deep + 1);
    size_t i, n;

    (void)state;
    assert_non_null(body);
    memset(body, '[', deep);
    body[deep] = '\0';
    def.max_depth = HTTP_DEFAULT_MAX_DEPTH;
    parse_bad(body, deep, &def, "JSON nested deeper than 64 levels (at byte 64)");
    memset(body, '{', deep);
    parse_bad(body, deep, &def, "JSON nested deeper than 64 levels");
    def.max_depth = 0; /* unset: the default */
    parse_bad(body, deep, &def, "JSON nested deeper than 64 levels");

    /* The default limit exactly, then one over: {"queries": [{"sql": "", "params": [[..]]}]}
     * has 4 levels before the parameter's own. */
    for (n = HTTP_DEFAULT_MAX_DEPTH - 4; n <= HTTP_DEFAULT_MAX_DEPTH - 3; n++) {
        size_t len = (size_t)sprintf(body, "{\"queries\": [{\"sql\": \"\", \"params\": [");
        http_batch_req *req = NULL;
        char err[256];
        bool ok;

        for (i = 0; i < n; i++)
            body[len++] = '[';
        for (i = 0; i < n; i++)
            body[len++] = ']';
        len += (size_t)sprintf(body + len, "]}]}");
        def.max_depth = HTTP_DEFAULT_MAX_DEPTH;
        ok = http_request_parse(body, len, &def, &req, err, sizeof err);
        assert_int_equal(ok, n == HTTP_DEFAULT_MAX_DEPTH - 4);
        if (ok)
            assert_int_equal(strlen(req->queries[0].params[0]), 2 * n);
        http_batch_req_free(req);
    }
    free(body);
}

static void test_err_buffer(void **state)
{
    static const char body[] = "{\"queries\": []}";
    http_batch_req *req = NULL;
    char err[8];

    (void)state;
    memset(err, 'x', sizeof err);
    assert_false(http_request_parse(body, strlen(body), &lim, &req, err, sizeof err));
    assert_string_equal(err, "queries");
    assert_false(http_request_parse(body, strlen(body), &lim, &req, NULL, 0));
    assert_false(http_request_parse(NULL, 0, &lim, &req, err, sizeof err));
    assert_null(req);
    http_batch_req_free(NULL);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_valid_cases),
        cmocka_unit_test(test_invalid_cases),
        cmocka_unit_test(test_defaults),
        cmocka_unit_test(test_all_fields),
        cmocka_unit_test(test_max_rows),
        cmocka_unit_test(test_param_texts),
        cmocka_unit_test(test_timeout_ms),
        cmocka_unit_test(test_nested_param_json),
        cmocka_unit_test(test_ids_and_params_absent),
        cmocka_unit_test(test_format_double),
        cmocka_unit_test(test_depth),
        cmocka_unit_test(test_err_buffer),
    };

    return cmocka_run_group_tests(tests, NULL, NULL);
}
