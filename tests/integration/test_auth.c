/*
 * API tokens, from the outside: fanout started with an auth file (a read_only and a read_write
 * token) answers missing, malformed and wrong tokens with 401 + WWW-Authenticate + a JSON error
 * and the right ones with 200; the probes stay open, /metrics follows --metrics-auth; a
 * read_only token cannot write (SQLSTATE 25006); SIGHUP swaps the token file in while requests
 * keep flowing, and a broken file leaves the old tokens in force; without an auth file a
 * non-loopback listen address is refused (exit 2) unless --allow-unauthenticated true.
 *
 * The secrets live here and their SHA-256 (computed once with sha256sum) in the files written.
 */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include "tests/integration/groups.h"
#include "tests/integration/harness.h"

#define READER "it-reader-7f3a9c"
#define READER_HASH "4825d8402fcd5a4c22f6605d82ed99a64ee263dda1d6b23be68b407a5b04996d"
#define WRITER "it-writer-c41d02"
#define WRITER_HASH "06c3fe2f315db36d0ade79947fd96d81a418c613c3695f06bcd05bab178e943c"
#define NEWBIE "it-newbie-98be11"
#define NEWBIE_HASH "2d87001359266036671ccc2e6773a23c6bc96eb48b69f5bd62dd612334916598"

/* The two token files the reload test swaps between; both keep the writer. */
#define TOKENS_A "# integration tokens\nreader " READER_HASH " read_only\n" \
                 "writer\t" WRITER_HASH "\tread_write   # the app\n"
#define TOKENS_B "writer " WRITER_HASH " read_write\nnewbie " NEWBIE_HASH " read_only\n"

#define JSON_CT "Content-Type: application/json\r\n"
#define SELECT_1 "{\"queries\": [{\"sql\": \"SELECT 1 AS one\"}]}"

static fx_server srv = {.pid = -1};
static char tokens_path[] = "/tmp/fanout-it-tokens-XXXXXX";

/* Replace the token file's content at once (write a new file, rename it over the old). */
static bool write_tokens(const char *text)
{
    char tmp[sizeof(tokens_path) + 8];
    snprintf(tmp, sizeof(tmp), "%s.new", tokens_path);
    FILE *f = fopen(tmp, "w");
    if (!f)
        return false;
    bool ok = fputs(text, f) >= 0;
    ok = fclose(f) == 0 && ok;
    return ok && rename(tmp, tokens_path) == 0;
}

static int group_setup(void **state)
{
    static const char *const args[] = {"--workers", "4", "--auth-file", tokens_path, NULL};
    const fx_opts opts = {.args = args};
    int fd = mkstemp(tokens_path);
    (void)state;
    if (fd < 0)
        return -1;
    close(fd);
    if (!write_tokens(TOKENS_A))
        return -1;
    return fx_start(&srv, &opts) ? 0 : -1;
}

static int group_teardown(void **state)
{
    (void)state;
    fx_kill(&srv);
    unlink(tokens_path);
    return 0;
}

/* One request with "Authorization: auth" (NULL: no such header) and, for POST, a JSON body. */
static bool send_auth(int port, const char *method, const char *path, const char *auth,
                      const char *body, fx_response *r)
{
    char headers[512];
    snprintf(headers, sizeof(headers), "%s%s%s%s", body ? JSON_CT : "", auth ? "Authorization: " : "",
             auth ? auth : "", auth ? "\r\n" : "");
    return fx_http(port, method, path, headers, body, body ? strlen(body) : 0, r);
}

/* The status of a batch sent with the given Authorization value. */
static int batch_status(int port, const char *auth)
{
    fx_response r;
    if (!send_auth(port, "POST", "/v1/batch", auth, SELECT_1, &r))
        return 0;
    int status = r.status;
    fx_response_free(&r);
    return status;
}

/* A 401 as promised: WWW-Authenticate: Bearer..., a JSON body with code unauthorized and a
 * message, and nothing of the presented secret (when there was one). */
static void expect_401(const fx_response *r, const char *secret, const char *what)
{
    const char *challenge = fx_header(r, "WWW-Authenticate");
    const char *ct = fx_header(r, "Content-Type");
    json_error_t jerr;
    json_t *doc = json_loadb(r->body, r->body_len, 0, &jerr);

    FX_CHECK(r->status == 401, "%s: status %d, body %s", what, r->status, r->body);
    FX_CHECK(challenge && strncmp(challenge, "Bearer", 6) == 0, "%s: WWW-Authenticate %s", what,
             challenge ? challenge : "(none)");
    FX_CHECK(ct && strncmp(ct, "application/json", 16) == 0, "%s: Content-Type %s", what,
             ct ? ct : "(none)");
    FX_CHECK(doc != NULL, "%s: body is not JSON: %s", what, r->body);
    FX_EXPECT_STR(doc, "error.code", "unauthorized");
    FX_EXPECT_KIND(doc, "error.message", "string");
    FX_CHECK(secret == NULL || strstr(r->body, secret) == NULL, "%s: the reply echoes the secret",
             what);
    json_decref(doc);
}

static void test_missing_token(void **state)
{
    fx_response r;
    (void)state;
    assert_true(send_auth(srv.port, "POST", "/v1/batch", NULL, SELECT_1, &r));
    expect_401(&r, NULL, "no Authorization");
    FX_CHECK(strcmp(fx_header(&r, "WWW-Authenticate"), "Bearer realm=\"fanout\"") == 0,
             "challenge %s", fx_header(&r, "WWW-Authenticate"));
    fx_response_free(&r);
    /* Refused before the body is looked at: no 400 for bad JSON, no 415, no 405, no 404. */
    assert_true(send_auth(srv.port, "POST", "/v1/batch", NULL, "{not json", &r));
    expect_401(&r, NULL, "bad JSON, no token");
    fx_response_free(&r);
    assert_true(fx_http(srv.port, "POST", "/v1/batch", "Content-Type: text/plain\r\n", "x", 1, &r));
    expect_401(&r, NULL, "text/plain, no token");
    fx_response_free(&r);
    assert_true(send_auth(srv.port, "GET", "/v1/batch", NULL, NULL, &r));
    expect_401(&r, NULL, "GET /v1/batch, no token");
    fx_response_free(&r);
    assert_true(send_auth(srv.port, "GET", "/no/such/route", NULL, NULL, &r));
    expect_401(&r, NULL, "unknown route, no token");
    fx_response_free(&r);
}

static void test_malformed_token(void **state)
{
    static const char *const bad[] = {
        "Basic aXQ6aXQ=", "Bearer", "Bearer ", "Bearer" WRITER, "Bearer\t" WRITER,
        "Bearer " WRITER " extra", "Token " WRITER, "Bearer \x01" WRITER,
    };
    fx_response r;
    (void)state;
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        char what[96];
        snprintf(what, sizeof(what), "Authorization case %zu", i);
        assert_true(send_auth(srv.port, "POST", "/v1/batch", bad[i], SELECT_1, &r));
        expect_401(&r, WRITER, what);
        FX_CHECK(strstr(fx_header(&r, "WWW-Authenticate"), "invalid_token") != NULL,
                 "%s: challenge %s", what, fx_header(&r, "WWW-Authenticate"));
        fx_response_free(&r);
    }
    /* Two Authorization headers, even both right, are ambiguous. */
    assert_true(fx_http(srv.port, "POST", "/v1/batch",
                        JSON_CT "Authorization: Bearer " WRITER "\r\nAuthorization: Bearer " WRITER "\r\n",
                        SELECT_1, strlen(SELECT_1), &r));
    expect_401(&r, WRITER, "two Authorization headers");
    fx_response_free(&r);
}

static void test_wrong_token(void **state)
{
    static const char *const wrong[] = {"nope", WRITER "x", "it-writer-c41d0", "IT-WRITER-C41D02",
                                        WRITER_HASH};
    fx_response r;
    (void)state;
    for (size_t i = 0; i < sizeof(wrong) / sizeof(wrong[0]); i++) {
        char auth[128], what[96];
        snprintf(auth, sizeof(auth), "Bearer %s", wrong[i]);
        snprintf(what, sizeof(what), "wrong token %zu", i);
        assert_true(send_auth(srv.port, "POST", "/v1/batch", auth, SELECT_1, &r));
        expect_401(&r, wrong[i], what);
        fx_response_free(&r);
    }
}

static void test_right_token(void **state)
{
    fx_response r;
    (void)state;
    assert_true(send_auth(srv.port, "POST", "/v1/batch", "Bearer " WRITER, SELECT_1, &r));
    FX_CHECK(r.status == 200, "writer: %d %s", r.status, r.body);
    FX_CHECK(strstr(r.body, "\"rows\":[[1]]") != NULL, "writer: %s", r.body);
    FX_CHECK(fx_header(&r, "WWW-Authenticate") == NULL, "a 200 with a challenge");
    fx_response_free(&r);
    FX_CHECK(batch_status(srv.port, "Bearer " READER) == 200, "reader refused");
    FX_CHECK(batch_status(srv.port, "bearer " READER) == 200, "the scheme is case-insensitive");
    FX_CHECK(batch_status(srv.port, "Bearer   " WRITER) == 200, "several spaces are allowed");
    /* With a token, the usual answers come back (here 404 for an unknown route). */
    assert_true(send_auth(srv.port, "GET", "/no/such/route", "Bearer " READER, NULL, &r));
    FX_CHECK(r.status == 404, "unknown route with a token: %d", r.status);
    fx_response_free(&r);
}

static void test_probes_and_metrics_open(void **state)
{
    static const char *const open_paths[] = {"/healthz", "/readyz", "/metrics"};
    fx_response r;
    (void)state;
    for (size_t i = 0; i < sizeof(open_paths) / sizeof(open_paths[0]); i++) {
        assert_true(send_auth(srv.port, "GET", open_paths[i], NULL, NULL, &r));
        FX_CHECK(r.status == 200, "GET %s without a token: %d", open_paths[i], r.status);
        fx_response_free(&r);
        /* A wrong token on an open route is ignored, not refused. */
        assert_true(send_auth(srv.port, "GET", open_paths[i], "Bearer nope", NULL, &r));
        FX_CHECK(r.status == 200, "GET %s with a wrong token: %d", open_paths[i], r.status);
        fx_response_free(&r);
    }
}

/* Only GET (and HEAD, which works wherever GET does) of the open routes goes without a token:
 * another method is 401 before it would be 405, as for any route. */
static void test_open_routes_only_for_get(void **state)
{
    static const char *const open_paths[] = {"/healthz", "/readyz", "/metrics"};
    static const char *const methods[] = {"POST", "PUT", "DELETE", "OPTIONS", "PURGE"};
    fx_response r;
    (void)state;
    for (size_t i = 0; i < sizeof(open_paths) / sizeof(open_paths[0]); i++) {
        assert_true(send_auth(srv.port, "HEAD", open_paths[i], NULL, NULL, &r));
        FX_CHECK(r.status == 200, "HEAD %s without a token: %d", open_paths[i], r.status);
        fx_response_free(&r);
        for (size_t j = 0; j < sizeof(methods) / sizeof(methods[0]); j++) {
            char what[96];
            snprintf(what, sizeof(what), "%s %s without a token", methods[j], open_paths[i]);
            assert_true(send_auth(srv.port, methods[j], open_paths[i], NULL, NULL, &r));
            expect_401(&r, NULL, what);
            fx_response_free(&r);
        }
        /* With a token, the usual answer. */
        assert_true(send_auth(srv.port, "POST", open_paths[i], "Bearer " READER, NULL, &r));
        FX_CHECK(r.status == 405, "POST %s with a token: %d", open_paths[i], r.status);
        fx_response_free(&r);
    }
}

static void test_metrics_auth(void **state)
{
    static const char *const args[] = {"--workers", "1", "--auth-file", tokens_path,
                                       "--metrics-auth", "true", NULL};
    const fx_opts opts = {.args = args};
    fx_server m = {.pid = -1};
    fx_response r;
    (void)state;
    assert_true(fx_start(&m, &opts)); /* readiness: /readyz stays open */
    assert_true(send_auth(m.port, "GET", "/metrics", NULL, NULL, &r));
    expect_401(&r, NULL, "/metrics with metrics_auth, no token");
    fx_response_free(&r);
    assert_true(send_auth(m.port, "GET", "/metrics", "Bearer nope", NULL, &r));
    expect_401(&r, "nope", "/metrics with metrics_auth, wrong token");
    fx_response_free(&r);
    assert_true(send_auth(m.port, "GET", "/metrics", "Bearer " READER, NULL, &r));
    FX_CHECK(r.status == 200 && strstr(r.body, "fanout_") != NULL, "/metrics with a token: %d",
             r.status);
    fx_response_free(&r);
    assert_true(send_auth(m.port, "GET", "/healthz", NULL, NULL, &r));
    FX_CHECK(r.status == 200, "/healthz with metrics_auth: %d", r.status);
    fx_response_free(&r);
    assert_true(fx_stop(&m));
}

/* A read_only token's writes fail in PostgreSQL (25006), whatever the request asks for. */
static void test_read_only_token(void **state)
{
    static const char insert[] = "{\"queries\": [{\"sql\": \"INSERT INTO auth_ro VALUES (1)\"}]}";
    static const char insert_tx[] = "{\"mode\": \"transaction\", \"read_only\": false, \"queries\": "
                                    "[{\"sql\": \"INSERT INTO auth_ro VALUES (2)\"}]}";
    fx_response r;
    json_error_t jerr;
    (void)state;
    assert_true(fx_sql_ok(false, "DROP TABLE IF EXISTS auth_ro; CREATE TABLE auth_ro (a int)"));
    const char *bodies[] = {insert, insert_tx};
    for (size_t i = 0; i < 2; i++) {
        assert_true(send_auth(srv.port, "POST", "/v1/batch", "Bearer " READER, bodies[i], &r));
        FX_CHECK(r.status == 200, "reader insert %zu: %d %s", i, r.status, r.body);
        json_t *doc = json_loadb(r.body, r.body_len, 0, &jerr);
        FX_EXPECT_STR(doc, "results.0.error.code", "25006");
        json_decref(doc);
        fx_response_free(&r);
    }
    char *n = fx_sql_value(false, "SELECT count(*) FROM auth_ro", 0, NULL);
    FX_CHECK(n && strcmp(n, "0") == 0, "rows after read_only inserts: %s", n ? n : "?");
    free(n);
    /* The read_write token writes. */
    assert_true(send_auth(srv.port, "POST", "/v1/batch", "Bearer " WRITER, insert, &r));
    json_t *doc = json_loadb(r.body, r.body_len, 0, &jerr);
    FX_EXPECT_STR(doc, "results.0.command", "INSERT");
    json_decref(doc);
    fx_response_free(&r);
    n = fx_sql_value(false, "SELECT count(*) FROM auth_ro", 0, NULL);
    FX_CHECK(n && strcmp(n, "1") == 0, "rows after the writer's insert: %s", n ? n : "?");
    free(n);
    assert_true(fx_sql_ok(false, "DROP TABLE auth_ro"));
}

/* A child that sends writer batches back to back until stop_fd reaches EOF, then writes
 * "requests failures" to result_fd. */
static pid_t start_stream(int port, int *stop_w, int *result_r)
{
    int stop[2], result[2];
    if (pipe(stop) != 0 || pipe(result) != 0)
        return -1;
    pid_t pid = fork();
    if (pid != 0) {
        close(stop[0]);
        close(result[1]);
        *stop_w = stop[1];
        *result_r = result[0];
        return pid;
    }
    prctl(PR_SET_PDEATHSIG, SIGKILL);
    close(stop[1]);
    close(result[0]);
    long sent = 0, failed = 0;
    struct pollfd p = {.fd = stop[0], .events = POLLIN};
    while (poll(&p, 1, 0) == 0) {
        int status = batch_status(port, "Bearer " WRITER);
        sent++;
        if (status != 200) {
            failed++;
            fprintf(stderr, "stream: request %ld got %d\n", sent, status);
        }
    }
    dprintf(result[1], "%ld %ld\n", sent, failed);
    _exit(0);
}

/* SIGHUP, repeated while requests stream in and slow batches are in flight: the last file wins
 * (newbie in, reader out), the writer's requests never fail, the in-flight batches finish. */
static void test_sighup_reload(void **state)
{
    static const char slow[] = "{\"queries\": [{\"sql\": \"SELECT pg_sleep(0.5) AS slept\"}]}";
    enum { INFLIGHT = 3, RELOADS = 12 };
    fx_conn busy[INFLIGHT];
    int stop_w = -1, result_r = -1, wstatus = 0;
    long sent = 0, failed = -1;
    char req[512];
    (void)state;

    FX_CHECK(batch_status(srv.port, "Bearer " NEWBIE) == 401, "newbie accepted before the reload");
    int reloads_before = fx_log_count(&srv, "SIGHUP: 2 tokens from");
    pid_t child = start_stream(srv.port, &stop_w, &result_r);
    assert_true(child > 0);
    int n = snprintf(req, sizeof(req),
                     "POST /v1/batch HTTP/1.1\r\nHost: t\r\n" JSON_CT "Authorization: Bearer " READER
                     "\r\nContent-Length: %zu\r\n\r\n%s", sizeof(slow) - 1, slow);
    for (int i = 0; i < INFLIGHT; i++) {
        assert_true(fx_conn_open(&busy[i], srv.port));
        assert_true(fx_conn_send(&busy[i], req, (size_t)n));
    }
    fx_sleep_ms(100);
    for (int i = 0; i < RELOADS; i++) {
        assert_true(write_tokens(i % 2 ? TOKENS_B : TOKENS_A));
        assert_int_equal(kill(srv.pid, SIGHUP), 0);
        fx_sleep_ms(25);
    }
    double t0 = fx_now();
    bool switched = false;
    while (!switched && fx_now() - t0 < 5.0 * fx_scale()) {
        switched = batch_status(srv.port, "Bearer " NEWBIE) == 200 &&
                   batch_status(srv.port, "Bearer " READER) == 401;
        if (!switched)
            fx_sleep_ms(20);
    }
    print_message("reload: new tokens in force %.3f s after the last SIGHUP\n", fx_now() - t0);
    FX_CHECK(switched, "after SIGHUP: newbie %d, reader %d (want 200, 401)",
             batch_status(srv.port, "Bearer " NEWBIE), batch_status(srv.port, "Bearer " READER));
    /* The reader's batches were authenticated before the reader was revoked: they complete. */
    for (int i = 0; i < INFLIGHT; i++) {
        fx_response r;
        assert_true(fx_conn_read(&busy[i], false, &r));
        FX_CHECK(r.status == 200 && strstr(r.body, "\"slept\"") != NULL, "in-flight %d: %d %s", i,
                 r.status, r.body);
        fx_response_free(&r);
        fx_conn_close(&busy[i]);
    }
    fx_sleep_ms(200);
    close(stop_w);
    FILE *res = fdopen(result_r, "r");
    assert_non_null(res);
    FX_CHECK(fscanf(res, "%ld %ld", &sent, &failed) == 2, "no result from the request stream");
    fclose(res);
    waitpid(child, &wstatus, 0);
    print_message("reload: %d SIGHUPs during a stream of %ld requests, %ld failed\n", RELOADS,
                  sent, failed);
    FX_CHECK(failed == 0, "%ld of %ld requests failed during the reloads", failed, sent);
    FX_CHECK(sent >= 10, "only %ld requests in the stream", sent);
    FX_CHECK(fx_log_count(&srv, "SIGHUP: 2 tokens from") > reloads_before, "no reload in the log");
}

/* A broken file on SIGHUP: logged with file:line, and the tokens in force stay. */
static void test_bad_reload_keeps_tokens(void **state)
{
    char want[128];
    (void)state;
    FX_CHECK(batch_status(srv.port, "Bearer " NEWBIE) == 200, "newbie not in force");
    snprintf(want, sizeof(want), "SIGHUP: %s:2: duplicate token name", tokens_path);
    int before = fx_log_count(&srv, want);
    assert_true(write_tokens("writer " WRITER_HASH " read_write\nwriter " READER_HASH " read_only\n"));
    assert_int_equal(kill(srv.pid, SIGHUP), 0);
    double t0 = fx_now();
    while (fx_log_count(&srv, want) <= before && fx_now() - t0 < 5.0 * fx_scale())
        fx_sleep_ms(20);
    FX_CHECK(fx_log_count(&srv, want) > before, "no log line \"%s\"", want);
    FX_CHECK(batch_status(srv.port, "Bearer " NEWBIE) == 200, "newbie lost after a bad reload");
    FX_CHECK(batch_status(srv.port, "Bearer " WRITER) == 200, "writer lost after a bad reload");
    FX_CHECK(batch_status(srv.port, "Bearer " READER) == 401, "reader back after a bad reload");
    /* A file that cannot be read at all is no different. */
    assert_int_equal(unlink(tokens_path), 0);
    assert_int_equal(kill(srv.pid, SIGHUP), 0);
    snprintf(want, sizeof(want), "SIGHUP: %s: cannot open", tokens_path);
    t0 = fx_now();
    while (fx_log_count(&srv, want) < 1 && fx_now() - t0 < 5.0 * fx_scale())
        fx_sleep_ms(20);
    FX_CHECK(fx_log_count(&srv, want) == 1, "no log line \"%s\"", want);
    FX_CHECK(batch_status(srv.port, "Bearer " WRITER) == 200, "writer lost after a missing file");
    assert_true(write_tokens(TOKENS_A));
}

/* No secret presented in this group reached the server's log. */
/* Batch 1, from the writer token, dirties the session of every one of the 4 workers (4 queries
 * that each hold their worker 0.3 s, so each lands on its own); batch 2, from the reader token,
 * probes every worker again and must find fresh sessions everywhere. */
static json_t *every_worker(const char *auth, const char *sql, long long pids[4])
{
    char body[2048], header[128];
    size_t len = (size_t)snprintf(body, sizeof(body), "{\"queries\":[");
    for (int i = 0; i < 4; i++)
        len += (size_t)snprintf(body + len, sizeof(body) - len, "%s{\"sql\":\"%s\"}", i ? "," : "", sql);
    snprintf(body + len, sizeof(body) - len, "]}");
    snprintf(header, sizeof(header), "Bearer %s", auth);
    fx_response r;
    if (!send_auth(srv.port, "POST", "/v1/batch", header, body, &r))
        return NULL;
    FX_CHECK(r.status == 200, "status %d: %s", r.status, r.body);
    json_t *doc = json_loads(r.body, 0, NULL);
    fx_response_free(&r);
    for (int i = 0; i < 4; i++) {
        char path[32];
        snprintf(path, sizeof(path), "results.%d.rows.0.0", i);
        FX_EXPECT_KIND(doc, path, "integer");
        pids[i] = json_integer_value(fx_at(doc, path));
        for (int j = 0; j < i; j++)
            FX_CHECK(pids[i] != pids[j], "queries %d and %d ran on one worker: not every worker", j, i);
    }
    return doc;
}

static void test_no_state_between_tokens_on_any_worker(void **state)
{
    long long dirty[4], clean[4];
    (void)state;
    json_t *doc = every_worker(WRITER, "SELECT pg_backend_pid(), set_config('search_path', 'nowhere', false), "
                                       "set_config('work_mem', '77MB', false), pg_advisory_lock(77), pg_sleep(0.3)",
                               dirty);
    json_decref(doc);
    doc = every_worker(READER, "SELECT pg_backend_pid(), current_setting('search_path'), current_setting('work_mem'), "
                               "(SELECT count(*)::int FROM pg_locks WHERE locktype = 'advisory' "
                               "AND pid = pg_backend_pid()), pg_sleep(0.3)",
                       clean);
    for (int i = 0; i < 4; i++) {
        bool seen = false;
        for (int j = 0; j < 4; j++)
            seen = seen || clean[i] == dirty[j];
        FX_CHECK(seen, "backend %lld of batch 2 did not serve batch 1: a worker was not probed", clean[i]);
        char path[48];
        snprintf(path, sizeof(path), "results.%d.rows.0.1", i);
        FX_EXPECT_STR(doc, path, "\"$user\", public");
        snprintf(path, sizeof(path), "results.%d.rows.0.2", i);
        FX_EXPECT_STR(doc, path, "4MB");
        snprintf(path, sizeof(path), "results.%d.rows.0.3", i);
        FX_EXPECT_INT(doc, path, 0);
    }
    json_decref(doc);
}

static void test_log_has_no_secrets(void **state)
{
    static const char *const secrets[] = {READER, WRITER, NEWBIE, "nope"};
    (void)state;
    for (size_t i = 0; i < sizeof(secrets) / sizeof(secrets[0]); i++)
        FX_CHECK(fx_log_count(&srv, secrets[i]) == 0, "the log holds the secret %s", secrets[i]);
}

static void test_clean_exit(void **state)
{
    (void)state;
    assert_true(fx_stop(&srv));
}

/* ---- exposure: no auth file on a non-loopback address ---- */

static void test_non_loopback_refused(void **state)
{
    static const char *const hosts[] = {"0.0.0.0:0", "[::]:0"};
    const char *db = getenv("FANOUT_TEST_DATABASE");
    char *out = NULL, *err = NULL;
    int code = -1;
    (void)state;
    for (size_t i = 0; i < sizeof(hosts) / sizeof(hosts[0]); i++) {
        const char *const args[] = {"--listen", hosts[i], "--database", db, NULL};
        assert_true(fx_run_binary(args, &code, &out, &err));
        FX_CHECK(code == 2, "--listen %s without auth_file: exit %d, stderr %s", hosts[i], code,
                 err ? err : "");
        FX_CHECK(err && strstr(err, "loopback") && strstr(err, "auth_file") &&
                     strstr(err, "allow_unauthenticated") && strchr(err, '\n') == err + strlen(err) - 1,
                 "stderr: %s", err ? err : "");
        free(out);
        free(err);
    }
    /* --check-config applies the same rule, and accepts the address once there is a token file. */
    const char *const check[] = {"--listen", "0.0.0.0:0", "--check-config", NULL};
    assert_true(fx_run_binary(check, &code, &out, &err));
    FX_CHECK(code == 2, "--check-config on 0.0.0.0 without auth_file: exit %d", code);
    free(out);
    free(err);
    assert_true(write_tokens(TOKENS_A));
    const char *const ok[] = {"--listen", "0.0.0.0:0", "--auth-file", tokens_path, "--check-config",
                              NULL};
    assert_true(fx_run_binary(ok, &code, &out, &err));
    FX_CHECK(code == 0, "--check-config with auth_file: exit %d, stderr %s", code, err ? err : "");
    FX_CHECK(out && strstr(out, "auth_file = \"") && strstr(out, "allow_unauthenticated = false"),
             "stdout: %s", out ? out : "");
    free(out);
    free(err);
    /* A token file with a bad line is a configuration error naming the file and the line. */
    assert_true(write_tokens("# ok\nreader " READER_HASH " read_only\nwriter " WRITER_HASH " admin\n"));
    const char *const bad[] = {"--auth-file", tokens_path, "--database", db, NULL};
    assert_true(fx_run_binary(bad, &code, &out, &err));
    char want[128];
    snprintf(want, sizeof(want), "%s:3: token \"writer\": ACCESS must be", tokens_path);
    FX_CHECK(code == 2 && err && strstr(err, want), "bad auth file: exit %d, stderr %s", code,
             err ? err : "");
    free(out);
    free(err);
    const char *const missing[] = {"--auth-file", "/nonexistent/tokens", "--database", db, NULL};
    assert_true(fx_run_binary(missing, &code, &out, &err));
    FX_CHECK(code == 2 && err && strstr(err, "/nonexistent/tokens: cannot open"),
             "missing auth file: exit %d, stderr %s", code, err ? err : "");
    free(out);
    free(err);
    assert_true(write_tokens(TOKENS_A));
}

/* A free TCP port (bound to the wildcard address and released). */
static int free_port(void)
{
    struct sockaddr_in addr = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_ANY)};
    socklen_t alen = sizeof(addr);
    int fd = socket(AF_INET, SOCK_STREAM, 0), port = -1;
    if (fd >= 0 && bind(fd, (struct sockaddr *)&addr, sizeof(addr)) == 0 &&
        getsockname(fd, (struct sockaddr *)&addr, &alen) == 0)
        port = ntohs(addr.sin_port);
    if (fd >= 0)
        close(fd);
    return port;
}

/* With allow_unauthenticated, 0.0.0.0 is served (here reached over loopback) without tokens, and
 * the start-up log warns about it. fx_start always listens on 127.0.0.1, so this one forks the
 * binary itself ([FANOUT_WRAPPER...] FANOUT_BIN ...), output to a log file. */
static void test_allow_unauthenticated_starts(void **state)
{
    char listen[32], logpath[] = "/tmp/fanout-it-exposed-XXXXXX";
    char *words = strdup(getenv("FANOUT_WRAPPER") ? getenv("FANOUT_WRAPPER") : "");
    char *argv[32], *save = NULL;
    int port = free_port(), argc = 0, wstatus = 0, fd = mkstemp(logpath);
    (void)state;
    assert_true(port > 0 && fd >= 0 && words != NULL);
    snprintf(listen, sizeof(listen), "0.0.0.0:%d", port);
    for (char *w = strtok_r(words, " \t", &save); w && argc < 20; w = strtok_r(NULL, " \t", &save))
        argv[argc++] = w;
    argv[argc++] = getenv("FANOUT_BIN");
    const char *rest[] = {"--listen", listen, "--database", getenv("FANOUT_TEST_DATABASE"),
                          "--workers", "1", "--allow-unauthenticated", "true", NULL};
    for (size_t i = 0; rest[i]; i++)
        argv[argc++] = (char *)rest[i];
    argv[argc] = NULL;

    pid_t pid = fork();
    if (pid == 0) {
        prctl(PR_SET_PDEATHSIG, SIGKILL);
        dup2(fd, STDOUT_FILENO);
        dup2(fd, STDERR_FILENO);
        unsetenv("DATABASE_URL");
        execvp(argv[0], argv);
        _exit(127);
    }
    close(fd);
    assert_true(pid > 0);
    int status = 0;
    double t0 = fx_now();
    while (fx_now() - t0 < 15.0 * fx_scale() && waitpid(pid, &wstatus, WNOHANG) == 0) {
        status = batch_status(port, NULL);
        if (status == 200)
            break;
        fx_sleep_ms(50);
    }
    FX_CHECK(status == 200, "0.0.0.0 with allow_unauthenticated: batch without a token got %d",
             status);
    kill(pid, SIGTERM);
    waitpid(pid, &wstatus, 0);
    FX_CHECK(WIFEXITED(wstatus) && WEXITSTATUS(wstatus) == 0, "exit status %#x", wstatus);
    FILE *f = fopen(logpath, "r");
    char line[4096];
    bool warned = false;
    assert_non_null(f);
    while (fgets(line, sizeof(line), f))
        warned |= strstr(line, "warn") && strstr(line, "allow_unauthenticated") &&
                  strstr(line, "without tokens");
    fclose(f);
    FX_CHECK(warned, "no start-up warning in %s", logpath);
    unlink(logpath);
    free(words);
}

int it_auth(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_missing_token),
        cmocka_unit_test(test_malformed_token),
        cmocka_unit_test(test_wrong_token),
        cmocka_unit_test(test_right_token),
        cmocka_unit_test(test_probes_and_metrics_open),
        cmocka_unit_test(test_open_routes_only_for_get),
        cmocka_unit_test(test_metrics_auth),
        cmocka_unit_test(test_read_only_token),
        cmocka_unit_test(test_no_state_between_tokens_on_any_worker),
        cmocka_unit_test(test_sighup_reload),
        cmocka_unit_test(test_bad_reload_keeps_tokens),
        cmocka_unit_test(test_log_has_no_secrets),
        cmocka_unit_test(test_clean_exit),
        cmocka_unit_test(test_non_loopback_refused),
        cmocka_unit_test(test_allow_unauthenticated_starts),
    };
    return cmocka_run_group_tests_name("auth", tests, group_setup, group_teardown);
}
