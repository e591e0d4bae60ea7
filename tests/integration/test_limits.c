/*
 * Result limits and what must not pile up: max_rows cuts a result (cancelling it on the server
 * when that loses nothing, reading and dropping the rest otherwise) and leaves the connection
 * clean for the next query; max_response_bytes turns the result that would push a reply past it
 * into result_too_large while the others keep their rows; memory follows the limits, not the
 * result size; LISTEN notifications do not accumulate.
 *
 * Two servers: `cut` (--workers 1 --max-rows 100, so every batch runs on one connection, where a
 * stray cancel or piled-up notifications would show) and `small` (--max-response-bytes 1 MiB).
 * Memory is read from /proc/PID/status. A sanitizer's quarantine keeps freed memory resident,
 * which would hide exactly what these checks look for, so the group starts its servers with a
 * small ASan quarantine (ASAN_OPTIONS is otherwise passed on as it is).
 */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <errno.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <unistd.h>

#include "tests/integration/groups.h"
#include "tests/integration/harness.h"

#define MIB (1024L * 1024L)
#define SMALL_LIMIT "1048576"

static fx_server cut = {.pid = -1};
static fx_server small = {.pid = -1};
static fx_server own = {.pid = -1}; /* a server one test starts with settings of its own */
static char *saved_asan; /* ASAN_OPTIONS before the group, restored after (NULL: unset) */

static int group_setup(void **state)
{
    static const char *const cut_args[] = {"--workers", "1", "--max-rows", "100", NULL};
    static const char *const small_args[] = {"--workers", "2", "--max-response-bytes", SMALL_LIMIT,
                                             "--max-rows", "1000000", NULL};
    const fx_opts cut_opts = {.args = cut_args}, small_opts = {.args = small_args};
    const char *asan = getenv("ASAN_OPTIONS");
    char opts[1024];
    (void)state;

    saved_asan = asan ? strdup(asan) : NULL;
    snprintf(opts, sizeof(opts), "%s%squarantine_size_mb=4", asan ? asan : "", asan && *asan ? ":" : "");
    setenv("ASAN_OPTIONS", opts, 1);
    if (!fx_sql_ok(false, "DROP TABLE IF EXISTS fx_limits; CREATE TABLE fx_limits (id int)"))
        return -1;
    return fx_start(&cut, &cut_opts) && fx_start(&small, &small_opts) ? 0 : -1;
}

static int group_teardown(void **state)
{
    (void)state;
    fx_kill(&cut);
    fx_kill(&small);
    fx_kill(&own);
    if (saved_asan)
        setenv("ASAN_OPTIONS", saved_asan, 1);
    else
        unsetenv("ASAN_OPTIONS");
    free(saved_asan);
    return fx_sql_ok(false, "DROP TABLE IF EXISTS fx_limits") ? 0 : -1;
}

/* A line "Name:   N kB" of /proc/PID/status, in bytes; -1 when it cannot be read. */
static long proc_kb(const fx_server *s, const char *name)
{
    char path[64], line[256];
    long kb = -1;
    size_t n = strlen(name);
    snprintf(path, sizeof(path), "/proc/%d/status", (int)s->pid);
    FILE *f = fopen(path, "r");
    while (f && fgets(line, sizeof(line), f))
        if (strncmp(line, name, n) == 0 && line[n] == ':')
            kb = strtol(line + n + 1, NULL, 10);
    if (f)
        fclose(f);
    return kb < 0 ? -1 : kb * 1024;
}

/* A one-query batch, which must get a 200 reply; returns the reply. */
static json_t *one(int port, const char *sql, bool read_only)
{
    return FX_BATCHJ(port, json_pack("{s:[{s:s}],s:b}", "queries", "sql", sql, "read_only", read_only));
}

/* Quick queries right after a cut: each must come back whole, with its own value. */
static void expect_quick_queries(int port, int n, const char *after)
{
    for (int i = 0; i < n; i++) {
        char want[16];
        snprintf(want, sizeof(want), "%d", i);
        json_t *req = json_pack("{s:[{s:s,s:[s]}]}", "queries", "sql",
                                "SELECT $1::int + count(*)::int - 20000 AS n FROM generate_series(1, 20000)",
                                "params", want);
        json_t *doc = FX_BATCHJ(port, req);
        if (fx_at(doc, "results.0.error"))
            fx_print_json(after, doc);
        FX_EXPECT_INT(doc, "results.0.rows.0.0", i);
        json_decref(doc);
    }
}

/* The result at path `result` ("results.0"): command, cut after `rows` rows numbered from 1. */
static void expect_cut(json_t *doc, const char *result, const char *command, int rows)
{
    char path[64];
    snprintf(path, sizeof(path), "%s.command", result);
    FX_EXPECT_STR(doc, path, command);
    snprintf(path, sizeof(path), "%s.row_count", result);
    FX_EXPECT_INT(doc, path, rows);
    snprintf(path, sizeof(path), "%s.truncated", result);
    FX_EXPECT_BOOL(doc, path, true);
    snprintf(path, sizeof(path), "%s.rows", result);
    FX_EXPECT_LEN(doc, path, (size_t)rows);
    snprintf(path, sizeof(path), "%s.rows.0.0", result);
    FX_EXPECT_INT(doc, path, 1);
    snprintf(path, sizeof(path), "%s.rows.%d.0", result, rows - 1);
    FX_EXPECT_INT(doc, path, rows);
}

/*
 * Read-only batches are cut by a cancel on the server. Results of several sizes (the cancel
 * arrives mid-result or after the backend is done), each followed by quick queries on the same,
 * only connection: a cancel that landed late would fail one of them.
 */
static void test_max_rows_cancel_then_next(void **state)
{
    static const int sizes[] = {10000, 101, 150, 1000, 10000};
    (void)state;

    for (size_t k = 0; k < sizeof(sizes) / sizeof(sizes[0]); k++) {
        char sql[128], label[64];
        snprintf(sql, sizeof(sql), "SELECT g, md5(g::text) AS h FROM generate_series(1, %d) AS g", sizes[k]);
        json_t *doc = one(cut.port, sql, true);
        expect_cut(doc, "results.0", "SELECT", 100);
        FX_EXPECT_STR(doc, "results.0.columns.1.type", "text");
        FX_EXPECT_STR(doc, "results.0.rows.99.1", "f899139df5e1059396431415e770c6dd"); /* md5('100') */
        json_decref(doc);
        snprintf(label, sizeof(label), "quick query after a cut of %d rows", sizes[k]);
        expect_quick_queries(cut.port, 10, label);
    }
}

/*
 * The cancel really stops the statement: past row 150 every row sleeps 50 ms, so reading the
 * 10,000 rows to the end would take over 8 minutes. The reply comes at once and the backend is
 * done with it by then.
 */
static void test_max_rows_cancel_is_quick(void **state)
{
    const char *sql = "SELECT g, repeat('x', 1000) AS pad, CASE WHEN g > 150 THEN pg_sleep(0.05) END AS nap "
                      "FROM generate_series(1, 10000) AS g";
    (void)state;

    double t0 = fx_now();
    json_t *doc = one(cut.port, sql, true);
    double took = fx_now() - t0;
    expect_cut(doc, "results.0", "SELECT", 100);
    FX_EXPECT_STR(doc, "results.0.columns.2.type", "void");
    json_decref(doc);
    FX_CHECK(took < 10.0 * fx_scale(), "the cut result took %.1f s: was it read to the end?", took);
    char *active = fx_sql_value(true, "SELECT count(*) FROM pg_stat_activity WHERE application_name = 'fanout' "
                                      "AND state = 'active' AND query LIKE '%pg_sleep(0.05)%'", 0, NULL);
    FX_CHECK(active && strcmp(active, "0") == 0, "%s backend(s) still run the statement after the reply", active);
    free(active);
    expect_quick_queries(cut.port, 5, "quick query after a cancelled slow result");
}

/*
 * Where a cancel would lose something, the rest is read and dropped instead: an INSERT ..
 * RETURNING keeps all its rows, and a cut query inside a transaction keeps the transaction.
 */
static void test_max_rows_without_cancel(void **state)
{
    (void)state;

    json_t *doc = one(cut.port, "INSERT INTO fx_limits SELECT g FROM generate_series(1, 10000) AS g RETURNING id",
                      false);
    expect_cut(doc, "results.0", "INSERT", 100);
    json_decref(doc);
    char *count = fx_sql_value(false, "SELECT count(*) FROM fx_limits", 0, NULL);
    FX_CHECK(count && strcmp(count, "10000") == 0, "fx_limits holds %s rows, want 10000", count);
    free(count);

    doc = FX_BATCH(cut.port, "{\"mode\":\"transaction\",\"read_only\":true,\"queries\":["
                             "{\"sql\":\"SELECT g FROM generate_series(1, 10000) AS g\"},"
                             "{\"sql\":\"SELECT 'still here' AS s\"}]}");
    expect_cut(doc, "results.0", "SELECT", 100);
    FX_EXPECT_STR(doc, "results.1.rows.0.0", "still here");
    FX_EXPECT_BOOL(doc, "committed", true);
    json_decref(doc);
    expect_quick_queries(cut.port, 5, "quick query after a cut without cancel");
}

#define TOO_LARGE_METRIC "fanout_queries_total{outcome=\"result_too_large\"}"
/* About 5 MB of rows: more than the 1 MiB limit on its own. */
#define BIG_SQL "SELECT g, repeat('x', 1000) AS pad FROM generate_series(1, 5000) AS g"

static void test_too_large_alone(void **state)
{
    (void)state;
    double before = fx_metric(small.port, TOO_LARGE_METRIC);

    json_t *doc = FX_BATCH(small.port, "{\"queries\":[{\"id\":\"a\",\"sql\":\"SELECT 1 AS one\"},"
                                       "{\"id\":\"big\",\"sql\":\"" BIG_SQL "\"},"
                                       "{\"id\":\"c\",\"sql\":\"SELECT g FROM generate_series(1, 3) AS g\"}]}");
    FX_EXPECT_INT(doc, "results.0.rows.0.0", 1);
    FX_EXPECT_STR(doc, "results.1.id", "big");
    FX_EXPECT_STR(doc, "results.1.error.code", "result_too_large");
    FX_EXPECT_KIND(doc, "results.1.error.message", "string");
    FX_EXPECT_ABSENT(doc, "results.1.rows");
    FX_EXPECT_LEN(doc, "results.2.rows", 3);
    json_decref(doc);

    /* In a transaction it fails the transaction like any error. */
    doc = FX_BATCH(small.port, "{\"mode\":\"transaction\",\"queries\":[{\"sql\":\"SELECT 1 AS one\"},"
                               "{\"sql\":\"" BIG_SQL "\"},{\"sql\":\"SELECT 3 AS three\"}]}");
    FX_EXPECT_INT(doc, "results.0.rows.0.0", 1);
    FX_EXPECT_STR(doc, "results.1.error.code", "result_too_large");
    FX_EXPECT_STR(doc, "results.2.error.code", "not_run");
    FX_EXPECT_BOOL(doc, "committed", false);
    json_decref(doc);

    double after = fx_metric(small.port, TOO_LARGE_METRIC);
    FX_CHECK(before >= 0 && after == before + 2, "result_too_large counted %.0f -> %.0f, want +2", before, after);
}

/* A failing query whose error quotes a huge input (a 500 KB string that is no integer) stays
 * small in the reply: its texts are cut (DB_ERROR_TEXT_MAX), so an error cannot take the reply
 * past max_response_bytes as rows cannot. */
static void test_error_texts_are_bounded(void **state)
{
    (void)state;
    size_t n = 500 * 1000; /* under max_body_bytes (1 MiB) */
    char *body = malloc(n + 256);
    assert_non_null(body);
    int at = snprintf(body, 256, "{\"queries\":[{\"sql\":\"SELECT $1::int\",\"params\":[\"");
    memset(body + at, 'a', n);
    memcpy(body + at + n, "x\"]}]}", 7);
    fx_response r;
    assert_true(fx_http(small.port, "POST", "/v1/batch", "Content-Type: application/json\r\n", body, strlen(body), &r));
    free(body);
    json_t *doc = json_loadb(r.body, r.body_len, 0, NULL);
    FX_CHECK(r.status == 200 && doc, "status %d", r.status);
    FX_EXPECT_STR(doc, "results.0.error.code", "22P02");
    const char *m = json_string_value(fx_at(doc, "results.0.error.message"));
    FX_CHECK(m && strlen(m) > 3 && strcmp(m + strlen(m) - 3, "...") == 0, "message not cut: %.80s", m ? m : "(none)");
    print_message("a 500 KB input's 22P02 error: a reply of %zu bytes\n", r.body_len);
    FX_CHECK(r.body_len < 32 * 1024, "the reply is %zu bytes", r.body_len);
    json_decref(doc);
    fx_response_free(&r);
}

/* Two results of about 600 KB: each fits the 1 MiB limit, both do not. Exactly one loses, also
 * when they run at once on the two workers. */
static void test_two_that_fit_only_alone(void **state)
{
    const char *q = "{\"sql\":\"SELECT g, repeat('y', 600) AS pad FROM generate_series(1, 1000) AS g\"}";
    char body[512];
    (void)state;

    snprintf(body, sizeof(body), "{\"queries\":[%s,%s]}", q, q);
    for (int round = 0; round < 10; round++) {
        json_t *doc = FX_BATCH(small.port, body);
        int failed = 0;
        for (int i = 0; i < 2; i++) {
            char path[64];
            snprintf(path, sizeof(path), "results.%d.error.code", i);
            json_t *code = fx_at(doc, path);
            if (code) {
                FX_EXPECT_STR(doc, path, "result_too_large");
                failed++;
            } else {
                snprintf(path, sizeof(path), "results.%d.row_count", i);
                FX_EXPECT_INT(doc, path, 1000);
            }
        }
        if (failed != 1)
            fx_print_json("reply", doc);
        FX_CHECK(failed == 1, "round %d: %d results too large, want exactly 1", round, failed);
        json_decref(doc);
    }
}

/* Under a sanitizer, memory fanout touches costs shadow memory on top (TSan: about twice more). */
#if defined(__has_feature)
#if __has_feature(thread_sanitizer) || __has_feature(address_sanitizer)
#define SHADOW_FACTOR 4
#endif
#endif
#ifndef SHADOW_FACTOR
#define SHADOW_FACTOR 1
#endif

/* One value far past the limit is refused before it is encoded: a text of control characters
 * takes six bytes of JSON a byte, and encoding 16 MB of them before the limit was checked took
 * some 100 MB more. libpq still holds the row it read (about twice its size). */
static void test_huge_value_not_encoded(void **state)
{
    (void)state;
    long peak0 = proc_kb(&small, "VmHWM");
    FX_CHECK(peak0 > 0, "cannot read VmHWM of pid %d", (int)small.pid);

    json_t *doc = FX_BATCH(small.port, "{\"queries\":[{\"sql\":\"SELECT repeat(chr(1), 16000000) AS v\"},"
                                       "{\"sql\":\"SELECT 2 AS two\"}]}");
    FX_EXPECT_STR(doc, "results.0.error.code", "result_too_large");
    FX_EXPECT_INT(doc, "results.1.rows.0.0", 2);
    json_decref(doc);

    long peak = proc_kb(&small, "VmHWM");
    print_message("limits: peak RSS %ld KiB before, %ld KiB after a 16 MB value\n", peak0 / 1024, peak / 1024);
    FX_CHECK(peak < peak0 + 64 * MIB * SHADOW_FACTOR, "peak RSS grew from %ld to %ld KiB", peak0 / 1024,
             peak / 1024);
}

/* About 500 MB of rows cut at 1 MiB: fanout's peak memory hardly moves, and the query stops. */
static void test_memory_bounded_by_limit(void **state)
{
    (void)state;
    long peak0 = proc_kb(&small, "VmHWM");
    FX_CHECK(peak0 > 0, "cannot read VmHWM of pid %d", (int)small.pid);

    double t0 = fx_now();
    json_t *doc = FX_BATCH(small.port, "{\"queries\":[{\"sql\":\"SELECT g, repeat('x', 1000) AS pad "
                                       "FROM generate_series(1, 500000) AS g\"},{\"sql\":\"SELECT 2 AS two\"}]}");
    double took = fx_now() - t0;
    FX_EXPECT_STR(doc, "results.0.error.code", "result_too_large");
    FX_EXPECT_INT(doc, "results.1.rows.0.0", 2);
    json_decref(doc);

    long peak = proc_kb(&small, "VmHWM");
    print_message("limits: peak RSS %ld KiB before, %ld KiB after a 500 MB result (%.2f s)\n", peak0 / 1024,
                  peak / 1024, took);
    FX_CHECK(peak < peak0 + 64 * MIB, "peak RSS grew from %ld to %ld KiB", peak0 / 1024, peak / 1024);
    FX_CHECK(took < 30.0 * fx_scale(), "the cut result took %.1f s", took);
}

/*
 * Notifications that arrive while fanout runs a statement are freed after it. A transaction-mode
 * batch LISTENs and sends its own channel 2,000 notifications of 7 KB (14 MB): PostgreSQL
 * delivers them right after the COMMIT, before its ReadyForQuery, so libpq collects them there.
 * Round after round, memory stays at about one round; kept, eight rounds would add some 100 MB.
 * (Notifications from another session behave the same, but arrive only while fanout's
 * connection listens, which a session reset between batches may end.)
 */
static void test_notifications_do_not_pile_up(void **state)
{
    const int rounds = 8;
    long rss1 = -1, rss = -1;
    (void)state;

    for (int round = 1; round <= rounds; round++) {
        json_t *doc = FX_BATCH(cut.port, "{\"mode\":\"transaction\",\"queries\":[{\"sql\":\"LISTEN fx_limits_channel\"},"
                                         "{\"sql\":\"SELECT count(pg_notify('fx_limits_channel', g || repeat('n', 7000))) "
                                         "AS sent FROM generate_series(1, 2000) AS g\"}]}");
        FX_EXPECT_STR(doc, "results.1.rows.0.0", "2000");
        FX_EXPECT_BOOL(doc, "committed", true);
        json_decref(doc);
        rss = proc_kb(&cut, "VmRSS");
        if (round == 1)
            rss1 = rss;
    }
    json_decref(one(cut.port, "UNLISTEN *", false));
    print_message("limits: RSS %ld KiB after the first round of notifications, %ld KiB after %d\n", rss1 / 1024,
                  rss / 1024, rounds);
    FX_CHECK(rss1 > 0 && rss < rss1 + 40 * MIB, "RSS grew from %ld to %ld KiB", rss1 / 1024, rss / 1024);
}

/* True when the server has closed c: EOF or a reset, seen within secs (times fx_scale()). */
static bool closed_by_server(fx_conn *c, double secs)
{
    double deadline = fx_now() + secs * fx_scale();
    char buf[4096];
    for (;;) {
        double left = deadline - fx_now();
        struct pollfd pfd = {.fd = c->fd, .events = POLLIN};
        if (left <= 0)
            return false;
        if (poll(&pfd, 1, (int)(left * 1000) + 1) <= 0)
            continue;
        ssize_t n = recv(c->fd, buf, sizeof(buf), MSG_DONTWAIT);
        if (n == 0 || (n < 0 && errno != EAGAIN && errno != EINTR))
            return true;
    }
}

/* Requests pipelined behind one whose reply is still being written wait unparsed: that is no
 * endless line, and must not cut the connection (past ~1.1 MB it did, and the reply broke off);
 * fanout stops reading them until evhttp reads the next request. */
static void test_pipelined_behind_a_long_reply(void **state)
{
    static const char first[] = "{\"queries\":[{\"sql\":\"SELECT repeat('x', 200000) FROM generate_series(1, 100)\"}]}";
    enum { PAD = 600000 };
    (void)state;
    size_t cap = 3 * (PAD + 512), len = 0;
    char *raw = malloc(cap), *body = malloc(PAD + 128);
    assert_non_null(raw);
    assert_non_null(body);
    int blen = snprintf(body, PAD + 128, "{\"queries\":[{\"sql\":\"SELECT length($1)\",\"params\":[\"");
    memset(body + blen, 'x', PAD);
    blen += PAD;
    blen += snprintf(body + blen, 64, "\"]}]}");
    len += (size_t)snprintf(raw + len, cap - len, "POST /v1/batch HTTP/1.1\r\nHost: t\r\nContent-Type: application/json\r\n"
                            "Content-Length: %zu\r\n\r\n%s", sizeof(first) - 1, first);
    for (int i = 0; i < 2; i++) {
        len += (size_t)snprintf(raw + len, cap - len, "POST /v1/batch HTTP/1.1\r\nHost: t\r\n"
                                "Content-Type: application/json\r\nContent-Length: %d\r\n\r\n", blen);
        memcpy(raw + len, body, (size_t)blen);
        len += (size_t)blen;
    }
    fx_conn c;
    assert_true(fx_conn_open(&c, cut.port));
    assert_true(fx_conn_send(&c, raw, len));
    for (int i = 0; i < 3; i++) {
        fx_response r;
        FX_CHECK(fx_conn_read(&c, false, &r), "reply %d of 3 did not come", i + 1);
        json_t *doc = json_loads(r.body, 0, NULL);
        FX_CHECK(r.status == 200 && doc, "reply %d: status %d", i + 1, r.status);
        if (i > 0)
            FX_EXPECT_INT(doc, "results.0.rows.0.0", PAD);
        json_decref(doc);
        fx_response_free(&r);
    }
    fx_conn_close(&c);
    free(raw);
    free(body);
    FX_CHECK(fx_log_count(&cut, "unparsed") == 0, "the connection was closed as an endless line");
}

/*
 * A chunk-size line that never ends. libevent reads it with evbuffer_readln and no limit (a
 * header line or a body has one), so before the fix every byte stayed buffered, unanswered. fanout
 * closes the connection once its unparsed input passes max_body_bytes + the header limit + slack,
 * before any of it is authenticated: RSS barely moves and the service goes on serving.
 */
static void test_endless_chunk_size_line(void **state)
{
    static const char *const args[] = {"--workers", "1", "--max-body-bytes", "1024", "--max-clients", "4",
                                       NULL};
    static const char head[] = "POST /v1/batch HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                               "Transfer-Encoding: chunked\r\n\r\n";
    const fx_opts opts = {.args = args};
    const size_t total = 32 * MIB;
    size_t sent = 0;
    bool closed = false;
    fx_conn c;
    (void)state;
    fx_kill(&own); /* left running by a failed test before */

    assert_true(fx_start(&own, &opts));
    long rss0 = proc_kb(&own, "VmRSS");
    char *zeros = malloc(MIB);
    assert_non_null(zeros);
    memset(zeros, '0', MIB);
    assert_true(fx_conn_open(&c, own.port));
    assert_true(fx_conn_send(&c, head, sizeof(head) - 1));
    double deadline = fx_now() + 30.0 * fx_scale();
    while (sent < total && !closed && fx_now() < deadline) {
        struct pollfd pfd = {.fd = c.fd, .events = POLLOUT};
        if (poll(&pfd, 1, 100) <= 0)
            continue;
        ssize_t n = send(c.fd, zeros, MIB, MSG_DONTWAIT | MSG_NOSIGNAL);
        if (n > 0)
            sent += (size_t)n;
        else if (n < 0 && errno != EAGAIN && errno != EINTR)
            closed = true; /* EPIPE or ECONNRESET: the server closed */
    }
    if (!closed)
        closed = closed_by_server(&c, 5.0);
    long rss = proc_kb(&own, "VmRSS");
    fx_conn_close(&c);
    free(zeros);
    print_message("limits: endless chunk-size line: %zu KiB sent, %s; RSS %ld -> %ld KiB\n", sent / 1024,
                  closed ? "closed by fanout" : "still open", rss0 / 1024, rss / 1024);
    FX_CHECK(closed, "%zu KiB of one chunk-size line (max_body_bytes 1024) and the connection is still open",
             sent / 1024);
    FX_CHECK(rss < rss0 + 8 * MIB, "RSS grew from %ld to %ld KiB", rss0 / 1024, rss / 1024);
    FX_CHECK(fx_log_count(&own, "unparsed") == 1, "want one log line about the closed connection");
    json_decref(one(own.port, "SELECT 1", false));
    assert_true(fx_stop(&own));
}

/* CPU seconds (user + system, all threads) pid has used; -1 when /proc cannot be read. */
static double cpu_seconds(pid_t pid)
{
    char path[64], buf[1024];
    unsigned long utime = 0, stime = 0;
    snprintf(path, sizeof(path), "/proc/%d/stat", (int)pid);
    FILE *f = fopen(path, "r");
    size_t n = f ? fread(buf, 1, sizeof(buf) - 1, f) : 0;
    if (f)
        fclose(f);
    buf[n] = '\0';
    const char *p = strrchr(buf, ')'); /* the command name may hold spaces */
    if (!p || sscanf(p + 2, "%*c %*d %*d %*d %*d %*d %*u %*u %*u %*u %*u %lu %lu", &utime, &stime) != 2)
        return -1;
    return (double)(utime + stime) / (double)sysconf(_SC_CLK_TCK);
}

/*
 * Out of file descriptors. A fanout started from a shell with a low soft limit raises it to the
 * hard one, and warns when max_clients does not fit. Then its limit is lowered under it (prlimit)
 * and 40 idle clients connect: accept() fails with EMFILE. Before the fix libevent's listener
 * retried at once, forever: a core at 100 % and a "[warn] Error from accept() call" line each
 * time. Now the listener pauses 100 ms at a time, fanout logs one warning for the episode and one
 * line when it accepts again, and /healthz answers once the clients go.
 */
static void test_out_of_file_descriptors(void **state)
{
    struct rlimit mine, theirs;
    char max_clients[24];
    const char *args[] = {"--workers", "2", "--max-clients", max_clients, NULL};
    const fx_opts opts = {.args = args};
    enum { IDLE = 40 };
    fx_conn idle[IDLE];
    (void)state;
    fx_kill(&own); /* left running by a failed test before */

    if (fx_wrapped())
        skip(); /* own.pid would be valgrind's process, which keeps descriptors of its own */
    assert_int_equal(getrlimit(RLIMIT_NOFILE, &mine), 0);
    /* max_clients as large as the hard limit: it cannot fit beside the workers. */
    bool too_many = mine.rlim_max != RLIM_INFINITY && mine.rlim_max <= 1000000;
    snprintf(max_clients, sizeof(max_clients), "%llu", too_many ? (unsigned long long)mine.rlim_max : 1024ULL);
    struct rlimit low = {.rlim_cur = mine.rlim_max < 256 ? mine.rlim_max : 256, .rlim_max = mine.rlim_max};
    assert_int_equal(setrlimit(RLIMIT_NOFILE, &low), 0);
    bool started = fx_start(&own, &opts);
    assert_int_equal(setrlimit(RLIMIT_NOFILE, &mine), 0);
    assert_true(started);
    assert_int_equal(prlimit(own.pid, RLIMIT_NOFILE, NULL, &theirs), 0);
    FX_CHECK(theirs.rlim_cur == mine.rlim_max, "fanout's soft limit is %llu, want the hard limit %llu",
             (unsigned long long)theirs.rlim_cur, (unsigned long long)mine.rlim_max);
    if (too_many)
        FX_CHECK(fx_log_count(&own, "file descriptor limit") == 1,
                 "no warning that max_clients %s does not fit in the descriptor limit", max_clients);

    fx_sleep_ms(300); /* both workers connected */
    int fds = fx_fd_count(own.pid);
    FX_CHECK(fds > 0, "cannot read /proc/%d/fd", (int)own.pid);
    struct rlimit tight = {.rlim_cur = (rlim_t)fds + 6, .rlim_max = theirs.rlim_max};
    assert_int_equal(prlimit(own.pid, RLIMIT_NOFILE, &tight, NULL), 0);

    int opened = 0;
    for (; opened < IDLE; opened++)
        if (!fx_conn_open(&idle[opened], own.port))
            break;
    double cpu0 = cpu_seconds(own.pid), t0 = fx_now();
    fx_sleep_ms(2000);
    double cpu = cpu_seconds(own.pid) - cpu0, secs = fx_now() - t0;
    int libevent_lines = fx_log_count(&own, "Error from accept() call");
    int ours = fx_log_count(&own, "cannot accept connections");
    bool alive = fx_alive(&own);
    for (int i = 0; i < opened; i++)
        fx_conn_close(&idle[i]);
    print_message("limits: out of descriptors (limit %d): %.2f s of CPU in %.2f s, %d libevent lines, %d of "
                  "fanout's\n", fds + 6, cpu, secs, libevent_lines, ours);
    FX_CHECK(alive, "fanout ended while out of descriptors");
    FX_CHECK(opened == IDLE, "only %d of %d clients could connect", opened, IDLE);
    FX_CHECK(cpu >= 0 && cpu < 0.5 * secs, "fanout used %.2f s of CPU in %.2f s out of descriptors", cpu, secs);
    FX_CHECK(libevent_lines == 0, "libevent logged %d accept errors itself", libevent_lines);
    FX_CHECK(ours == 1, "want one warning for the episode, got %d", ours);

    /* The clients are gone: the descriptors come back, and so does the listener. */
    fx_response r;
    int status = 0;
    double until = fx_now() + 5.0 * fx_scale();
    while (status != 200 && fx_now() < until) {
        if (fx_http(own.port, "GET", "/healthz", NULL, NULL, 0, &r)) {
            status = r.status;
            fx_response_free(&r);
        }
    }
    FX_CHECK(status == 200, "GET /healthz after the clients left: %d", status);
    while (fx_log_count(&own, "accepting connections again") < 1 && fx_now() < until + 2.0 * fx_scale())
        fx_sleep_ms(100); /* the episode ends after a second without a failure */
    FX_CHECK(fx_log_count(&own, "accepting connections again") == 1, "want one line when accepting again");
    FX_CHECK(fx_log_count(&own, "cannot accept connections") == 1, "want one warning for the episode");
    assert_int_equal(prlimit(own.pid, RLIMIT_NOFILE, &theirs, NULL), 0);
    assert_true(fx_stop(&own));
}

/*
 * client_timeout_ms bounds the whole request, not just the silence between its bytes. Two
 * clients take both max_clients slots and send their request line one byte every 300 ms, which
 * libevent's idle timeout (reset by every byte) never ends: before the fix a third client got
 * 503 overloaded for as long as they went on. Now each is closed client_timeout_ms after its
 * first byte. A keep-alive connection is not held to it between requests, and a batch that runs
 * longer than client_timeout_ms is not cut off, not even when the next request starts meanwhile.
 */
static void test_trickled_requests_time_out(void **state)
{
    static const char *const args[] = {"--workers", "2", "--max-clients", "2", "--client-timeout-ms", "1000",
                                       NULL};
    static const char line[] = "POST /v1/batch HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n";
    const fx_opts opts = {.args = args};
    fx_conn drip[2];
    double closed_at[2] = {0, 0};
    int status = 0;
    (void)state;
    fx_kill(&own); /* left running by a failed test before */

    assert_true(fx_start(&own, &opts));
    assert_true(fx_conn_open(&drip[0], own.port));
    assert_true(fx_conn_open(&drip[1], own.port));
    double t0 = fx_now();
    for (size_t i = 0; fx_now() - t0 < 3.0 * fx_scale(); i++) {
        for (int k = 0; k < 2; k++) {
            char b;
            if (closed_at[k] > 0)
                continue;
            ssize_t n = recv(drip[k].fd, &b, 1, MSG_DONTWAIT);
            if (n == 0 || (n < 0 && errno != EAGAIN && errno != EINTR) ||
                send(drip[k].fd, &line[i % (sizeof(line) - 1)], 1, MSG_NOSIGNAL) != 1)
                closed_at[k] = fx_now() - t0;
        }
        fx_sleep_ms(300);
    }
    /* While they drip (before the fix), or after fanout closed them. */
    json_t *doc = fx_post_json(own.port, "{\"queries\":[{\"sql\":\"SELECT 1 AS one\"}]}", &status);
    json_decref(doc);
    fx_conn_close(&drip[0]);
    fx_conn_close(&drip[1]);
    print_message("limits: trickling clients closed after %.2f s and %.2f s (0: not closed); a third got %d\n",
                  closed_at[0], closed_at[1], status);
    FX_CHECK(status == 200, "a batch while two clients trickled got %d, want 200", status);
    for (int k = 0; k < 2; k++)
        FX_CHECK(closed_at[k] > 0 && closed_at[k] < 1.0 + 1.5 * fx_scale(),
                 "trickling client %d: closed after %.2f s (0: still open), client_timeout_ms 1000", k,
                 closed_at[k]);

    /* Keep-alive: a batch longer than client_timeout_ms, a pause, then another request. */
    fx_conn c;
    fx_response r;
    assert_true(fx_conn_post_batch(&c, own.port, "{\"queries\":[{\"sql\":\"SELECT pg_sleep(1.5) IS NULL AS slept\"}]}"));
    bool got = fx_conn_read(&c, false, &r);
    FX_CHECK(got && r.status == 200, "a 1.5 s batch (client_timeout_ms 1000): %d", got ? r.status : 0);
    if (got)
        fx_response_free(&r);
    fx_sleep_ms(600);
    static const char again[] = "GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n";
    assert_true(fx_conn_send(&c, again, sizeof(again) - 1));
    got = fx_conn_read(&c, false, &r);
    FX_CHECK(got && r.status == 200, "the next request on the keep-alive connection: %d", got ? r.status : 0);
    if (got)
        fx_response_free(&r);
    /* The next request's first bytes come while a 1.5 s batch runs; the rest after its reply. */
    static const char slow[] = "POST /v1/batch HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                               "Content-Length: 52\r\n\r\n{\"queries\":[{\"sql\":\"SELECT pg_sleep(1.5) IS NULL\"}]}";
    assert_true(fx_conn_send(&c, slow, sizeof(slow) - 1));
    fx_sleep_ms(200);
    assert_true(fx_conn_send(&c, "GET /hea", 8));
    got = fx_conn_read(&c, false, &r);
    FX_CHECK(got && r.status == 200, "a 1.5 s batch with the next request begun: %d", got ? r.status : 0);
    if (got)
        fx_response_free(&r);
    assert_true(fx_conn_send(&c, again + 8, sizeof(again) - 9));
    got = fx_conn_read(&c, false, &r);
    FX_CHECK(got && r.status == 200, "the request begun during the batch: %d", got ? r.status : 0);
    if (got)
        fx_response_free(&r);
    fx_conn_close(&c);
    FX_CHECK(fx_log_count(&own, "no whole request within client_timeout_ms") == 2,
             "want a log line for each trickling client closed");
    assert_true(fx_stop(&own));
}

static void test_clean_exit(void **state)
{
    (void)state;
    assert_true(fx_stop(&cut));
    assert_true(fx_stop(&small));
}

int it_limits(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_max_rows_cancel_then_next),
        cmocka_unit_test(test_max_rows_cancel_is_quick),
        cmocka_unit_test(test_max_rows_without_cancel),
        cmocka_unit_test(test_too_large_alone),
        cmocka_unit_test(test_error_texts_are_bounded),
        cmocka_unit_test(test_two_that_fit_only_alone),
        cmocka_unit_test(test_huge_value_not_encoded),
        cmocka_unit_test(test_memory_bounded_by_limit),
        cmocka_unit_test(test_notifications_do_not_pile_up),
        cmocka_unit_test(test_endless_chunk_size_line),
        cmocka_unit_test(test_pipelined_behind_a_long_reply),
        cmocka_unit_test(test_out_of_file_descriptors),
        cmocka_unit_test(test_trickled_requests_time_out),
        cmocka_unit_test(test_clean_exit),
    };
    return cmocka_run_group_tests_name("limits", tests, group_setup, group_teardown);
}
