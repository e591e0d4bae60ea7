/*
 * Endpoints and status codes: routing, 404/405/413/415/400/503 with their JSON error bodies,
 * health and readiness, keep-alive. One fanout serves the group, with small limits so the limit
 * errors are cheap to provoke; the db_unavailable test starts its own against no database.
 */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <ctype.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>

#include "tests/integration/groups.h"
#include "tests/integration/harness.h"

#define JSON_CT "Content-Type: application/json\r\n"
#define SELECT_1 "{\"queries\":[{\"sql\":\"SELECT 1 AS one\"}]}"
#define BODY_LIMIT 4096 /* --max-body-bytes of this group's server */

static fx_server srv = {.pid = -1};

static int group_setup(void **state)
{
    static const char *const args[] = {"--max-body-bytes", "4096", "--max-queries", "3",
                                       "--max-params", "2", NULL};
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

static bool is_json_type(const fx_response *r)
{
    const char *ct = fx_header(r, "Content-Type");
    return ct != NULL && strncasecmp(ct, "application/json", 16) == 0;
}

/* True when r is an error reply with this status and a JSON body {"error":{"code":code,
 * "message":"..."}}; otherwise prints what differs (what: the request, for the report). */
static bool is_error_reply(const fx_response *r, int status, const char *code, const char *what)
{
    json_t *doc = json_loadb(r->body, r->body_len, 0, NULL);
    json_t *err = json_object_get(doc, "error");
    const char *got_code = json_string_value(json_object_get(err, "code"));
    const char *message = json_string_value(json_object_get(err, "message"));
    bool ok = r->status == status && is_json_type(r) && got_code != NULL && strcmp(got_code, code) == 0 &&
              message != NULL && message[0] != '\0';

    if (!ok)
        print_error("%s: want %d {\"error\":{\"code\":\"%s\",\"message\":...}} as application/json,\n"
                    "  got %d (Content-Type %s): %.*s\n",
                    what, status, code, r->status, fx_header(r, "Content-Type") ? fx_header(r, "Content-Type") : "none",
                    (int)(r->body_len > 1000 ? 1000 : r->body_len), r->body);
    json_decref(doc);
    return ok;
}

static void test_healthz(void **state)
{
    fx_response r;
    (void)state;

    assert_true(fx_http(srv.port, "GET", "/healthz", NULL, NULL, 0, &r));
    assert_int_equal(r.status, 200);
    assert_true(is_json_type(&r));
    json_t *doc = json_loadb(r.body, r.body_len, 0, NULL);
    json_t *want = json_pack("{s:s}", "status", "ok");
    FX_EXPECT_JSON(doc, "", want);
    json_decref(want);
    json_decref(doc);
    fx_response_free(&r);
}

static void test_readyz(void **state)
{
    fx_response r;
    (void)state;

    assert_true(fx_http(srv.port, "GET", "/readyz", NULL, NULL, 0, &r));
    assert_int_equal(r.status, 200);
    assert_true(is_json_type(&r));
    json_t *doc = json_loadb(r.body, r.body_len, 0, NULL);
    FX_EXPECT_KIND(doc, "", "object");
    json_decref(doc);
    fx_response_free(&r);
}

/* HEAD is allowed on the probes (their Allow says so): 200 with the GET reply's Content-Length,
 * and no body may follow the head, or a keep-alive client would read those bytes as the start
 * of the next response. */
static void test_head_probes(void **state)
{
    const char *paths[] = {"/healthz", "/readyz"};
    (void)state;

    for (size_t i = 0; i < 2; i++) {
        fx_conn c;
        fx_response r;
        char req[128], extra[256];
        int n = snprintf(req, sizeof(req), "HEAD %s HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n", paths[i]);
        assert_true(fx_conn_open(&c, srv.port));
        assert_true(fx_conn_send(&c, req, (size_t)n));
        assert_true(fx_conn_read(&c, true, &r));
        assert_int_equal(r.status, 200);
        /* the GET reply's headers, its Content-Length too */
        fx_response get;
        assert_true(fx_http(srv.port, "GET", paths[i], NULL, NULL, 0, &get));
        const char *len = fx_header(&r, "Content-Length");
        FX_CHECK(len && (size_t)atol(len) == strlen(get.body), "HEAD %s: Content-Length %s, GET body %zu bytes",
                 paths[i], len ? len : "(none)", strlen(get.body));
        fx_response_free(&get);
        fx_response_free(&r);
        /* Whatever arrives before EOF (Connection: close) is a stray body. */
        char chunk[512];
        size_t stray = c.len, shown = c.len < sizeof(extra) ? c.len : sizeof(extra);
        ssize_t got;
        if (shown > 0)
            memcpy(extra, c.buf, shown);
        while ((got = recv(c.fd, chunk, sizeof(chunk), 0)) > 0) {
            size_t take = (size_t)got < sizeof(extra) - shown ? (size_t)got : sizeof(extra) - shown;
            memcpy(extra + shown, chunk, take);
            shown += take;
            stray += (size_t)got;
        }
        fx_conn_close(&c);
        FX_CHECK(stray == 0, "HEAD %s: %zu body bytes follow the head: %.*s", paths[i], stray, (int)shown, extra);
    }
}

static void test_not_found(void **state)
{
    const char *paths[] = {"/", "/nope", "/v1", "/v1/", "/v1/batchx", "/v2/batch", "/v1/batch/x",
                           "/healthzz", "/readyz/now"};
    (void)state;

    for (size_t i = 0; i < sizeof(paths) / sizeof(paths[0]); i++) {
        const char *methods[] = {"GET", "POST"};
        for (size_t m = 0; m < 2; m++) {
            fx_response r;
            char what[128];
            bool post = m == 1;
            snprintf(what, sizeof(what), "%s %s", methods[m], paths[i]);
            assert_true(fx_http(srv.port, methods[m], paths[i], post ? JSON_CT : NULL, post ? SELECT_1 : NULL,
                                post ? strlen(SELECT_1) : 0, &r));
            assert_true(is_error_reply(&r, 404, "not_found", what));
            fx_response_free(&r);
        }
    }
}

static void test_method_not_allowed(void **state)
{
    static const struct {
        const char *method, *path, *allow;
    } cases[] = {
        {"GET", "/v1/batch", "POST"},      {"PUT", "/v1/batch", "POST"},
        {"DELETE", "/v1/batch", "POST"},   {"PATCH", "/v1/batch", "POST"},
        {"POST", "/healthz", "GET, HEAD"}, {"PUT", "/healthz", "GET, HEAD"},
        {"DELETE", "/healthz", "GET, HEAD"}, {"POST", "/readyz", "GET, HEAD"},
    };
    (void)state;

    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        fx_response r;
        char what[128];
        bool body = strcmp(cases[i].method, "GET") != 0 && strcmp(cases[i].method, "DELETE") != 0;
        snprintf(what, sizeof(what), "%s %s", cases[i].method, cases[i].path);
        assert_true(fx_http(srv.port, cases[i].method, cases[i].path, body ? JSON_CT : NULL,
                            body ? SELECT_1 : NULL, body ? strlen(SELECT_1) : 0, &r));
        assert_true(is_error_reply(&r, 405, "method_not_allowed", what));
        const char *allow = fx_header(&r, "Allow");
        if (allow == NULL || strcmp(allow, cases[i].allow) != 0)
            print_error("%s: want Allow: %s, got %s\n", what, cases[i].allow, allow ? allow : "no Allow header");
        assert_non_null(allow);
        assert_string_equal(allow, cases[i].allow);
        fx_response_free(&r);
    }
}

static void test_unsupported_media_type(void **state)
{
    const char *types[] = {NULL, "text/plain", "application/x-www-form-urlencoded", "application/jsonx",
                           "application/json-seq", "text/json", "multipart/form-data; boundary=x"};
    (void)state;

    for (size_t i = 0; i < sizeof(types) / sizeof(types[0]); i++) {
        fx_response r;
        char header[128] = "", what[160];
        if (types[i] != NULL)
            snprintf(header, sizeof(header), "Content-Type: %s\r\n", types[i]);
        snprintf(what, sizeof(what), "POST /v1/batch with Content-Type %s", types[i] ? types[i] : "(none)");
        assert_true(fx_http(srv.port, "POST", "/v1/batch", header, SELECT_1, strlen(SELECT_1), &r));
        assert_true(is_error_reply(&r, 415, "unsupported_media_type", what));
        fx_response_free(&r);
    }
}

/* Media type names and parameters are case-insensitive; parameters such as charset are fine. */
static void test_json_media_type_variants(void **state)
{
    const char *types[] = {"application/json; charset=utf-8", "application/json;charset=UTF-8", "APPLICATION/JSON",
                           "Application/Json; Charset=utf-8"};
    (void)state;

    for (size_t i = 0; i < sizeof(types) / sizeof(types[0]); i++) {
        fx_response r;
        char header[128];
        snprintf(header, sizeof(header), "Content-Type: %s\r\n", types[i]);
        assert_true(fx_http(srv.port, "POST", "/v1/batch", header, SELECT_1, strlen(SELECT_1), &r));
        if (r.status != 200)
            print_error("Content-Type %s: got %d %s\n", types[i], r.status, r.body);
        assert_int_equal(r.status, 200);
        assert_true(is_json_type(&r));
        json_t *doc = json_loadb(r.body, r.body_len, 0, NULL);
        FX_EXPECT_INT(doc, "results.0.rows.0.0", 1);
        json_decref(doc);
        fx_response_free(&r);
    }
}

static void test_bad_requests(void **state)
{
    static const struct {
        const char *what, *body;
    } cases[] = {
        {"invalid JSON", "{\"queries\": ["},
        {"empty body", ""},
        {"trailing garbage", "{\"queries\":[{\"sql\":\"SELECT 1\"}]} x"},
        {"top-level array", "[{\"sql\":\"SELECT 1\"}]"},
        {"missing queries", "{}"},
        {"empty queries", "{\"queries\":[]}"},
        {"queries not an array", "{\"queries\":\"SELECT 1\"}"},
        {"query not an object", "{\"queries\":[\"SELECT 1\"]}"},
        {"sql missing", "{\"queries\":[{\"id\":\"a\"}]}"},
        {"sql a number", "{\"queries\":[{\"sql\":1}]}"},
        {"sql null", "{\"queries\":[{\"sql\":null}]}"},
        {"unknown top-level field", "{\"queries\":[{\"sql\":\"SELECT 1\"}],\"bogus\":1}"},
        {"unknown query field", "{\"queries\":[{\"sql\":\"SELECT 1\",\"bogus\":1}]}"},
        {"unknown mode", "{\"queries\":[{\"sql\":\"SELECT 1\"}],\"mode\":\"serial\"}"},
        {"mode not a string", "{\"queries\":[{\"sql\":\"SELECT 1\"}],\"mode\":1}"},
        {"unknown row_format", "{\"queries\":[{\"sql\":\"SELECT 1\"}],\"row_format\":\"csv\"}"},
        {"unknown isolation",
         "{\"queries\":[{\"sql\":\"SELECT 1\"}],\"mode\":\"transaction\",\"isolation\":\"snapshot\"}"},
        {"NUL in sql", "{\"queries\":[{\"sql\":\"SELECT 1\\u0000\"}]}"},
        {"number beyond a double", "{\"queries\":[{\"sql\":\"SELECT $1::text\",\"params\":[1e400]}]}"},
    };
    (void)state;

    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        fx_response r;
        char what[160];
        snprintf(what, sizeof(what), "bad request (%s) %s", cases[i].what, cases[i].body);
        assert_true(fx_http(srv.port, "POST", "/v1/batch", JSON_CT, cases[i].body, strlen(cases[i].body), &r));
        assert_true(is_error_reply(&r, 400, "bad_request", what));
        fx_response_free(&r);
    }
}

/* --max-queries 3 and --max-params 2: at the limit is fine, one more is a 400. */
static void test_query_and_param_limits(void **state)
{
    static const struct {
        const char *body;
        int status;
    } cases[] = {
        {"{\"queries\":[{\"sql\":\"SELECT 1\"},{\"sql\":\"SELECT 2\"},{\"sql\":\"SELECT 3\"}]}", 200},
        {"{\"queries\":[{\"sql\":\"SELECT 1\"},{\"sql\":\"SELECT 2\"},{\"sql\":\"SELECT 3\"},{\"sql\":\"SELECT 4\"}]}",
         400},
        {"{\"queries\":[{\"sql\":\"SELECT $1::int + $2::int\",\"params\":[1,2]}]}", 200},
        {"{\"queries\":[{\"sql\":\"SELECT $1::int + $2::int + $3::int\",\"params\":[1,2,3]}]}", 400},
    };
    (void)state;

    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        fx_response r;
        assert_true(fx_http(srv.port, "POST", "/v1/batch", JSON_CT, cases[i].body, strlen(cases[i].body), &r));
        if (cases[i].status == 400) {
            assert_true(is_error_reply(&r, 400, "bad_request", cases[i].body));
        } else {
            if (r.status != 200)
                print_error("%s: got %d %s\n", cases[i].body, r.status, r.body);
            assert_int_equal(r.status, 200);
        }
        fx_response_free(&r);
    }
}

/* A valid batch padded with JSON whitespace to exactly len bytes (caller frees). */
static char *padded_batch(size_t len)
{
    char *body = malloc(len + 1);
    assert_non_null(body);
    memset(body, ' ', len);
    memcpy(body, SELECT_1, strlen(SELECT_1));
    body[len] = '\0';
    return body;
}

/* --max-body-bytes 4096: a body of exactly 4096 bytes is served, one byte more is refused 413. */
static void test_body_too_large(void **state)
{
    const size_t sizes[] = {BODY_LIMIT, BODY_LIMIT + 1, 10 * BODY_LIMIT};
    (void)state;

    for (size_t i = 0; i < 3; i++) {
        fx_response r;
        char *body = padded_batch(sizes[i]);
        bool sent = fx_http(srv.port, "POST", "/v1/batch", JSON_CT, body, sizes[i], &r);
        free(body);
        assert_true(sent);
        int want = sizes[i] > BODY_LIMIT ? 413 : 200;
        if (r.status != want)
            print_error("body of %zu bytes (limit %d): want %d, got %d %.*s\n", sizes[i], BODY_LIMIT, want, r.status,
                        (int)(r.body_len > 500 ? 500 : r.body_len), r.body);
        assert_int_equal(r.status, want);
        fx_response_free(&r);
    }
    /* The server still serves after refusing. */
    json_t *doc = FX_BATCH(srv.port, SELECT_1);
    FX_EXPECT_INT(doc, "results.0.rows.0.0", 1);
    json_decref(doc);
}

/* With no database reachable: alive (healthz), not ready (readyz 503), batches refused with 503
 * db_unavailable and a Retry-After. */
static void test_db_unavailable(void **state)
{
    const fx_opts opts = {.database = "host=/nonexistent dbname=x", .not_ready = true};
    fx_server down = {.pid = -1};
    fx_response r;
    json_t *doc;
    (void)state;

    assert_true(fx_start(&down, &opts));

    assert_true(fx_http(down.port, "GET", "/healthz", NULL, NULL, 0, &r));
    assert_int_equal(r.status, 200);
    doc = json_loadb(r.body, r.body_len, 0, NULL);
    FX_EXPECT_STR(doc, "status", "ok");
    json_decref(doc);
    fx_response_free(&r);

    assert_true(fx_http(down.port, "GET", "/readyz", NULL, NULL, 0, &r));
    if (r.status != 503)
        print_error("GET /readyz with no database: got %d %s\n", r.status, r.body);
    assert_int_equal(r.status, 503);
    assert_true(is_json_type(&r));
    doc = json_loadb(r.body, r.body_len, 0, NULL);
    FX_EXPECT_KIND(doc, "", "object");
    json_decref(doc);
    fx_response_free(&r);

    assert_true(fx_http(down.port, "POST", "/v1/batch", JSON_CT, SELECT_1, strlen(SELECT_1), &r));
    assert_true(is_error_reply(&r, 503, "db_unavailable", "POST /v1/batch with no database"));
    const char *retry = fx_header(&r, "Retry-After");
    if (retry == NULL || retry[0] == '\0' || strspn(retry, "0123456789") != strlen(retry))
        print_error("want a Retry-After header in seconds, got %s\n", retry ? retry : "none");
    assert_non_null(retry);
    assert_true(retry[0] != '\0' && strspn(retry, "0123456789") == strlen(retry));
    fx_response_free(&r);

    assert_true(fx_stop(&down));
}

/* Two pipelined requests on one connection, then a third that closes it. */
static void test_keepalive_pipelined(void **state)
{
    fx_conn c;
    fx_response r;
    char req[1024];
    const char *batch = "{\"queries\":[{\"sql\":\"SELECT 2 AS two\"}]}";
    int n = snprintf(req, sizeof(req),
                     "GET /healthz HTTP/1.1\r\nHost: t\r\n\r\n"
                     "POST /v1/batch HTTP/1.1\r\nHost: t\r\nContent-Type: application/json\r\n"
                     "Content-Length: %zu\r\n\r\n%s",
                     strlen(batch), batch);
    (void)state;

    assert_true(fx_conn_open(&c, srv.port));
    assert_true(fx_conn_send(&c, req, (size_t)n));

    assert_true(fx_conn_read(&c, false, &r));
    assert_int_equal(r.status, 200);
    json_t *doc = json_loadb(r.body, r.body_len, 0, NULL);
    FX_EXPECT_STR(doc, "status", "ok");
    json_decref(doc);
    fx_response_free(&r);

    assert_true(fx_conn_read(&c, false, &r));
    assert_int_equal(r.status, 200);
    doc = json_loadb(r.body, r.body_len, 0, NULL);
    FX_EXPECT_INT(doc, "results.0.rows.0.0", 2);
    json_decref(doc);
    fx_response_free(&r);

    const char *last = "GET /readyz HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n";
    assert_true(fx_conn_send(&c, last, strlen(last)));
    assert_true(fx_conn_read(&c, false, &r));
    assert_int_equal(r.status, 200);
    fx_response_free(&r);
    fx_conn_close(&c);
}

/* Request, reply, request, reply on one socket. */
static void test_keepalive_sequential(void **state)
{
    fx_conn c;
    (void)state;

    assert_true(fx_conn_open(&c, srv.port));
    for (int i = 1; i <= 3; i++) {
        fx_response r;
        char body[128], req[512];
        snprintf(body, sizeof(body), "{\"queries\":[{\"sql\":\"SELECT %d AS n\"}]}", i * 10);
        int n = snprintf(req, sizeof(req),
                         "POST /v1/batch HTTP/1.1\r\nHost: t\r\nContent-Type: application/json\r\n"
                         "Content-Length: %zu\r\n\r\n%s",
                         strlen(body), body);
        assert_true(fx_conn_send(&c, req, (size_t)n));
        assert_true(fx_conn_read(&c, false, &r));
        assert_int_equal(r.status, 200);
        json_t *doc = json_loadb(r.body, r.body_len, 0, NULL);
        FX_EXPECT_INT(doc, "results.0.rows.0.0", i * 10);
        json_decref(doc);
        fx_response_free(&r);
    }
    fx_conn_close(&c);
}

/* SIGTERM: exit status 0 (under valgrind: no definite leaks). */
static void test_clean_exit(void **state)
{
    (void)state;
    assert_true(fx_stop(&srv));
}

int it_endpoints(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_healthz),
        cmocka_unit_test(test_readyz),
        cmocka_unit_test(test_head_probes),
        cmocka_unit_test(test_not_found),
        cmocka_unit_test(test_method_not_allowed),
        cmocka_unit_test(test_unsupported_media_type),
        cmocka_unit_test(test_json_media_type_variants),
        cmocka_unit_test(test_bad_requests),
        cmocka_unit_test(test_query_and_param_limits),
        cmocka_unit_test(test_body_too_large),
        cmocka_unit_test(test_keepalive_pipelined),
        cmocka_unit_test(test_keepalive_sequential),
        cmocka_unit_test(test_db_unavailable),
        cmocka_unit_test(test_clean_exit),
    };
    return cmocka_run_group_tests_name("endpoints", tests, group_setup, group_teardown);
}
