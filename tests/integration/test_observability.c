/*
 * What operators see: /metrics after known traffic (exact counter values, then promtool's own
 * check of the exposition), the access log line of a request, and X-Request-Id handling.
 */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "tests/integration/groups.h"
#include "tests/integration/harness.h"

static fx_server srv = {.pid = -1};

static int group_setup(void **state)
{
    static const char *const args[] = {"--workers", "3", "--log-format", "json", NULL};
    const fx_opts opts = {.args = args};
    (void)state;
    return fx_start(&srv, &opts) ? 0 : -1;
}

static int group_teardown(void **state)
{
    (void)state;
    fx_kill(&srv);
    return 0;
}

/* The value of one sample line ("name{labels} value") in an exposition, or -1 when absent.
 * (Counters by route and code appear once they are non-zero, besides code 200.) */
static double sample(const char *text, const char *series)
{
    size_t n = strlen(series);
    for (const char *p = text; p && *p; p = strchr(p, '\n') ? strchr(p, '\n') + 1 : NULL)
        if (strncmp(p, series, n) == 0 && p[n] == ' ')
            return strtod(p + n + 1, NULL);
    return -1;
}

static char *scrape(void)
{
    fx_response r;
    assert_true(fx_http(srv.port, "GET", "/metrics", NULL, NULL, 0, &r));
    assert_int_equal(r.status, 200);
    const char *ct = fx_header(&r, "Content-Type");
    FX_CHECK(ct && strncmp(ct, "text/plain; version=0.0.4", 25) == 0, "content type %s", ct ? ct : "(none)");
    char *text = strdup(r.body);
    fx_response_free(&r);
    return text;
}

/* Known traffic, then exact counts: the counters come from worker threads and the loop. */
static void test_metrics_count_traffic(void **state)
{
    (void)state;
    /* /readyz needs one connection; wait for all three before counting. */
    char *before = scrape();
    for (double until = fx_now() + 5 * fx_scale();
         sample(before, "fanout_db_connections{state=\"connected\"}") != 3 && fx_now() < until;) {
        free(before);
        fx_sleep_ms(50);
        before = scrape();
    }
    double ok0 = sample(before, "fanout_queries_total{outcome=\"ok\"}");
    double err0 = sample(before, "fanout_queries_total{outcome=\"sql_error\"}");
    double notrun0 = sample(before, "fanout_queries_total{outcome=\"not_run\"}");
    double batch_ok0 = sample(before, "fanout_batches_total{mode=\"parallel\",outcome=\"ok\"}");
    double batch_err0 = sample(before, "fanout_batches_total{mode=\"transaction\",outcome=\"error\"}");
    double hist0 = sample(before, "fanout_query_duration_seconds_count");
    double http0 = sample(before, "fanout_http_requests_total{route=\"/v1/batch\",code=\"200\"}");
    double nf0 = sample(before, "fanout_http_requests_total{route=\"other\",code=\"404\"}");
    nf0 = nf0 < 0 ? 0 : nf0;
    free(before);
    FX_CHECK(ok0 >= 0 && err0 >= 0 && hist0 >= 0 && http0 >= 0, "series missing before traffic");

    json_t *doc = FX_BATCH(srv.port, "{\"queries\":[{\"sql\":\"SELECT 1\"},{\"sql\":\"SELECT 2\"},{\"sql\":\"SELECT 3\"}]}");
    json_decref(doc);
    doc = FX_BATCH(srv.port, "{\"mode\":\"transaction\",\"queries\":[{\"sql\":\"SELECT 1\"},"
                             "{\"sql\":\"SELECT * FROM no_such_table\"},{\"sql\":\"SELECT 3\"}]}");
    json_decref(doc);
    fx_response r;
    assert_true(fx_http(srv.port, "GET", "/no/such/route", NULL, NULL, 0, &r));
    fx_response_free(&r);

    char *after = scrape();
    FX_CHECK(sample(after, "fanout_queries_total{outcome=\"ok\"}") == ok0 + 4, "ok queries:\n%s", after);
    FX_CHECK(sample(after, "fanout_queries_total{outcome=\"sql_error\"}") == err0 + 1, "sql errors");
    FX_CHECK(sample(after, "fanout_queries_total{outcome=\"not_run\"}") == notrun0 + 1, "not_run");
    FX_CHECK(sample(after, "fanout_batches_total{mode=\"parallel\",outcome=\"ok\"}") == batch_ok0 + 1, "ok batches");
    FX_CHECK(sample(after, "fanout_batches_total{mode=\"transaction\",outcome=\"error\"}") == batch_err0 + 1,
             "failed transactions");
    FX_CHECK(sample(after, "fanout_query_duration_seconds_count") == hist0 + 5, "query histogram count");
    FX_CHECK(sample(after, "fanout_http_requests_total{route=\"/v1/batch\",code=\"200\"}") == http0 + 2, "http 200");
    FX_CHECK(sample(after, "fanout_http_requests_total{route=\"other\",code=\"404\"}") == nf0 + 1, "http 404");
    FX_CHECK(sample(after, "fanout_workers") == 3, "workers gauge");
    FX_CHECK(sample(after, "fanout_db_connections{state=\"connected\"}") == 3, "connected gauge");
    FX_CHECK(sample(after, "fanout_queue_depth") == 0, "queue depth");
    FX_CHECK(strstr(after, "fanout_build_info{version=\"") != NULL, "build info");
    free(after);
}

/* Prometheus's own linter finds nothing wrong with a live scrape. */
static void test_promtool_accepts_exposition(void **state)
{
    (void)state;
    char *text = scrape(), cmd[512], out[4096] = "";
    FILE *tool = popen("scripts/promtool.sh", "r");
    char path[256] = "";
    assert_non_null(tool);
    FX_CHECK(fgets(path, sizeof(path), tool) != NULL, "scripts/promtool.sh printed no path");
    FX_CHECK(pclose(tool) == 0, "scripts/promtool.sh failed");
    path[strcspn(path, "\n")] = '\0';

    char file[] = "/tmp/fanout-metrics.XXXXXX";
    int fd = mkstemp(file);
    assert_true(fd >= 0);
    FILE *f = fdopen(fd, "w");
    fputs(text, f);
    fclose(f);
    snprintf(cmd, sizeof(cmd), "%s check metrics < %s 2>&1", path, file);
    FILE *p = popen(cmd, "r");
    size_t n = fread(out, 1, sizeof(out) - 1, p);
    out[n] = '\0';
    int rc = pclose(p);
    unlink(file);
    free(text);
    FX_CHECK(rc == 0 && n == 0, "promtool check metrics (exit %d):\n%s", rc, out);
}

/* A client's X-Request-Id is echoed; without one a fresh id is made per request. */
static void test_request_ids(void **state)
{
    (void)state;
    fx_response a, b, c;
    assert_true(fx_http(srv.port, "GET", "/healthz", "X-Request-Id: trace-42\r\n", NULL, 0, &a));
    assert_true(fx_http(srv.port, "GET", "/healthz", NULL, NULL, 0, &b));
    assert_true(fx_http(srv.port, "GET", "/healthz", "X-Request-Id: bad id with spaces\r\n", NULL, 0, &c));
    const char *ia = fx_header(&a, "X-Request-Id"), *ib = fx_header(&b, "X-Request-Id"),
               *ic = fx_header(&c, "X-Request-Id");
    FX_CHECK(ia && strcmp(ia, "trace-42") == 0, "echoed id %s", ia ? ia : "(none)");
    FX_CHECK(ib && strlen(ib) >= 8, "generated id %s", ib ? ib : "(none)");
    FX_CHECK(ic && strcmp(ic, ib) != 0 && !strchr(ic, ' '), "unusable id replaced: %s", ic ? ic : "(none)");
    fx_response_free(&a);
    fx_response_free(&b);
    fx_response_free(&c);
}

/* Each request leaves one JSON line on stderr with the fields operators filter on. */
static void test_access_log_line(void **state)
{
    (void)state;
    static const char body[] = "{\"queries\":[{\"sql\":\"SELECT 1\"},{\"sql\":\"SELECT 2\"}]}";
    fx_response r;
    assert_true(fx_http(srv.port, "POST", "/v1/batch", "Content-Type: application/json\r\nX-Request-Id: log-probe-7\r\n",
                        body, sizeof(body) - 1, &r));
    assert_int_equal(r.status, 200);
    fx_response_free(&r);

    char buf[2048];
    json_error_t e;
    FX_CHECK(fx_log_line(&srv, "log-probe-7", buf, sizeof(buf)),
             "no access log line with the request id in %s", srv.log);
    json_t *line = json_loads(buf, 0, &e);
    FX_CHECK(line != NULL, "log line is not JSON: %s (%s)", buf, e.text);
    FX_EXPECT_STR(line, "level", "info");
    FX_EXPECT_STR(line, "method", "POST");
    FX_EXPECT_STR(line, "path", "/v1/batch");
    FX_EXPECT_INT(line, "status", 200);
    FX_EXPECT_INT(line, "queries", 2);
    FX_EXPECT_STR(line, "mode", "parallel");
    FX_EXPECT_KIND(line, "elapsed_ms", "number");
    FX_EXPECT_KIND(line, "time", "string");
    FX_CHECK(strncmp(json_string_value(fx_at(line, "peer")), "127.0.0.1:", 10) == 0, "peer");
    json_decref(line);
}

/* In the text log format, request data cannot forge a field or a line, nor send the terminal an
 * escape: control bytes of the path go as \xHH. */
static void test_text_log_escapes_request_data(void **state)
{
    (void)state;
    static const char *const args[] = {"--workers", "1", "--log-format", "text", NULL};
    const fx_opts opts = {.args = args};
    fx_server text = {.pid = -1};
    fx_response r;
    assert_true(fx_start(&text, &opts));
    assert_true(fx_http(text.port, "GET", "/esc\x1b[31m\tfake=1", "", NULL, 0, &r));
    assert_int_equal(r.status, 404);
    fx_response_free(&r);

    char buf[2048];
    FX_CHECK(fx_log_line(&text, "fake=1", buf, sizeof(buf)), "no access log line for the request in %s",
             text.log);
    FX_CHECK(strstr(buf, "GET /esc\\x1b[31m\\x09fake=1 404 ") != NULL, "log line: %s", buf);
    FX_CHECK(strchr(buf, '\x1b') == NULL && strchr(buf, '\t') == NULL, "raw control bytes: %s", buf);
    assert_true(fx_stop(&text));
}

/* A server NOTICE must not reach stderr raw: every line of the log stays one JSON object. */
static void test_log_lines_are_json(void **state)
{
    (void)state;
    json_t *doc = FX_BATCH(srv.port, "{\"queries\":[{\"sql\":\"DO $$ BEGIN RAISE NOTICE 'notice-probe'; END $$\"}]}");
    FX_EXPECT_STR(doc, "results.0.command", "DO");
    json_decref(doc);
    FILE *f = fopen(srv.log, "r");
    char buf[4096];
    int lines = 0;
    assert_non_null(f);
    while (fgets(buf, sizeof(buf), f)) {
        json_error_t e;
        json_t *line = json_loads(buf, 0, &e);
        FX_CHECK(line && json_is_object(line), "log line is not a JSON object: %s", buf);
        json_decref(line);
        lines++;
    }
    fclose(f);
    FX_CHECK(lines > 3, "only %d log lines", lines);
}

/* fanout warns once when its database role is a superuser (the suite's own role is not). */
static void test_superuser_warning(void **state)
{
    (void)state;
    char db[512];
    snprintf(db, sizeof(db), "%s", getenv("FANOUT_TEST_ADMIN")); /* the superuser postgres */
    static const char *const args[] = {"--workers", "2", NULL};
    const fx_opts opts = {.args = args, .database = db};
    fx_server su = {.pid = -1};
    assert_true(fx_start(&su, &opts));
    fx_sleep_ms(200);
    FILE *f = fopen(su.log, "r");
    char line[2048];
    int warnings = 0;
    assert_non_null(f);
    while (fgets(line, sizeof(line), f))
        warnings += strstr(line, "is a superuser") != NULL;
    fclose(f);
    FX_CHECK(warnings == 1, "%d superuser warnings in %s, want 1", warnings, su.log);
    assert_true(fx_stop(&su));
    /* And none for the suite's ordinary role. */
    f = fopen(srv.log, "r");
    assert_non_null(f);
    warnings = 0;
    while (fgets(line, sizeof(line), f))
        warnings += strstr(line, "is a superuser") != NULL;
    fclose(f);
    FX_CHECK(warnings == 0, "a superuser warning for the ordinary role");
}

static void test_clean_exit(void **state)
{
    (void)state;
    assert_true(fx_stop(&srv));
}

int it_observability(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_metrics_count_traffic),
        cmocka_unit_test(test_promtool_accepts_exposition),
        cmocka_unit_test(test_request_ids),
        cmocka_unit_test(test_access_log_line),
        cmocka_unit_test(test_log_lines_are_json),
        cmocka_unit_test(test_text_log_escapes_request_data),
        cmocka_unit_test(test_superuser_warning),
        cmocka_unit_test(test_clean_exit),
    };
    return cmocka_run_group_tests_name("observability", tests, group_setup, group_teardown);
}
