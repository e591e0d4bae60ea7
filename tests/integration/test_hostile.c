/*
 * Hostile HTTP: malformed, oversized, truncated, smuggled and slow requests over raw sockets.
 *
 * Every case must end in a 4xx or a closed connection: never a 5xx, a crash or a hang. Who answers
 * matters for the body:
 * - fanout routed the request (every reply it sends carries X-Request-Id): the reply is JSON,
 *   {"error":{"code":...,"message":...}}. Bad JSON (invalid UTF-8, \u0000, deep nesting) is
 *   fanout's to refuse, so those cases insist on fanout's 400 bad_request.
 * - libevent refused the request before fanout saw it (no X-Request-Id): request line or header
 *   syntax, header size, Content-Length or chunk framing, a body over max_body_bytes. libevent
 *   sends its own text/html 400 or 413 page and closes; those pages are accepted as they are.
 * After each case the service must keep serving: GET /healthz and a small batch that needs both
 * workers succeed on new connections. At the end fanout holds no more file descriptors than
 * before the hostile traffic, and SIGTERM still ends it with exit status 0.
 *
 * HOSTILE_DEBUG=1 in the environment prints one line per case: what came back, from whom
 * (fanout or libevent), and whether the server closed.
 *
 * One fanout serves the group: 2 workers, --max-body-bytes 262144. The body limit is above the
 * 100,000-deep JSON documents (100 to 200 KB, so they reach fanout's depth check instead of
 * libevent's 413) and well below the 1 MiB bodies that must be refused with 413.
 */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <ctype.h>
#include <errno.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <unistd.h>

#include "tests/integration/groups.h"
#include "tests/integration/harness.h"

#define BODY_LIMIT 262144    /* --max-body-bytes of this group's server */
#define HANG_S 10            /* a reply or a close must come within this (times fx_scale()) */
#define QUIET_MS 300         /* after the wanted replies, wait this long for a close or more bytes */
#define FAST_S 2             /* "quickly": a deep-nesting refusal (times fx_scale()) */
#define FD_MARGIN 2          /* fds fanout may hold above its count before the hostile traffic */
#define MAX_REPLIES 8
#define JSON_CT "Content-Type: application/json\r\n"
#define SELECT_1 "{\"queries\":[{\"sql\":\"SELECT 1 AS one\"}]}"

static fx_server srv = {.pid = -1};
static int fd_baseline = -1; /* fanout's open fds before the hostile tests; -1 when not counted */

static int group_setup(void **state)
{
    static const char *const args[] = {"--workers", "2", "--max-body-bytes", "262144", NULL};
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

/* ---- growing byte strings ---- */

typedef struct bytes {
    char *p;
    size_t len, cap;
} bytes;

static void b_add(bytes *b, const void *data, size_t len)
{
    if (b->cap - b->len < len + 1) {
        size_t cap = (b->cap + len + 1) * 2;
        char *grown = realloc(b->p, cap);
        assert_non_null(grown);
        b->p = grown;
        b->cap = cap;
    }
    memcpy(b->p + b->len, data, len);
    b->len += len;
    b->p[b->len] = '\0';
}

static void b_str(bytes *b, const char *s)
{
    b_add(b, s, strlen(s));
}

static void b_fmt(bytes *b, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void b_fmt(bytes *b, const char *fmt, ...)
{
    char *s = NULL;
    va_list ap;
    va_start(ap, fmt);
    int n = vasprintf(&s, fmt, ap);
    va_end(ap);
    assert_true(n >= 0);
    b_add(b, s, (size_t)n);
    free(s);
}

static void b_repeat(bytes *b, const char *s, size_t times)
{
    for (size_t i = 0; i < times; i++)
        b_str(b, s);
}

static void b_free(bytes *b)
{
    free(b->p);
    memset(b, 0, sizeof(*b));
}

/* POST /v1/batch as JSON with this Content-Length value and these body bytes (which may differ). */
static void b_post(bytes *b, const char *content_length, const char *body, size_t body_len)
{
    b_fmt(b, "POST /v1/batch HTTP/1.1\r\nHost: t\r\n" JSON_CT "Content-Length: %s\r\n\r\n", content_length);
    b_add(b, body, body_len);
}

/* A well-formed POST /v1/batch of body (Connection: close when close). */
static void b_batch(bytes *b, const char *body, bool close)
{
    b_fmt(b, "POST /v1/batch HTTP/1.1\r\nHost: t\r\n" JSON_CT "%sContent-Length: %zu\r\n\r\n%s",
          close ? "Connection: close\r\n" : "", strlen(body), body);
}

/* Print bytes C-escaped: the first 400 and the last 100 when longer, and the total. */
static void print_bytes(const char *label, const char *p, size_t n)
{
    bytes out = {0};
    for (size_t i = 0; i < n; i++) {
        if (n > 520 && i == 400) {
            b_fmt(&out, "\" ... (%zu bytes) ... \"", n - 500);
            i = n - 100;
        }
        unsigned char c = (unsigned char)p[i];
        if (c == '\r')
            b_str(&out, "\\r");
        else if (c == '\n')
            b_str(&out, "\\n");
        else if (c == '"' || c == '\\')
            b_fmt(&out, "\\%c", c);
        else if (c < 0x20 || c >= 0x7f)
            b_fmt(&out, "\\x%02x", c);
        else
            b_add(&out, &p[i], 1);
    }
    print_error("  %s (%zu bytes): \"%s\"\n", label, n, out.p != NULL ? out.p : "");
    b_free(&out);
}

/* ---- one exchange over a raw socket ---- */

/* What one case expects of the reply at one position on the connection. */
typedef struct want {
    int status;       /* 200: fanout's 200 with a JSON object; 0: any 4xx; -1: either; else exactly this 4xx */
    const char *code; /* non-NULL: fanout's JSON error with this code (libevent's page will not do) */
    bool or_close;    /* the server may close the connection instead of sending this reply */
} want;

#define W_200 {200, NULL, false}                  /* fanout answers 200 */
#define W_FANOUT(st, c) {(st), (c), false}       /* fanout answers this JSON error */
#define W_4XX_OR_CLOSE {0, NULL, true}           /* any 4xx (libevent's page is fine) or a close */
#define W_STATUS_OR_CLOSE(st) {(st), NULL, true} /* this 4xx (from either) or a close */
#define W_NOT_5XX {-1, NULL, true}               /* served (200) or refused (4xx), or a close */

typedef struct reply {
    int status;
    bool from_fanout; /* carries X-Request-Id: fanout routed the request */
    char ctype[96];   /* Content-Type, "" when absent */
    size_t body_at, body_len;
} reply;

typedef struct outcome {
    bytes raw;       /* everything the server sent */
    bool closed;     /* EOF or reset seen */
    bool hung;       /* neither the wanted replies nor a close within HANG_S */
    bool malformed;  /* bytes that do not parse as HTTP/1.x replies */
    bool head;       /* the replies answer HEAD requests: no body, whatever Content-Length says */
    reply r[MAX_REPLIES];
    size_t n;        /* complete replies */
    double secs;     /* from the last byte sent to the end of reading */
} outcome;

/* Parse the complete replies in o->raw (from the start, each time). */
static void parse_replies(outcome *o)
{
    size_t pos = 0;
    o->n = 0;
    o->malformed = false;
    while (pos < o->raw.len && o->n < MAX_REPLIES) {
        const char *start = o->raw.p + pos;
        size_t avail = o->raw.len - pos;
        if (avail >= 7 && strncmp(start, "HTTP/1.", 7) != 0) {
            o->malformed = true;
            return;
        }
        const char *end = memmem(start, avail, "\r\n\r\n", 4);
        if (end == NULL) {
            o->malformed = o->closed; /* a head cut short by the close */
            return;
        }
        size_t hlen = (size_t)(end - start) + 4;
        reply *r = &o->r[o->n];
        char value[64];
        memset(r, 0, sizeof(*r));
        if (hlen < 14 || start[8] != ' ' || !isdigit((unsigned char)start[9])) {
            o->malformed = true;
            return;
        }
        r->status = atoi(start + 9);
        if (r->status >= 100 && r->status < 200 && r->status != 101) {
            pos += hlen; /* an interim reply (fanout's probe of a half-closed client): no body */
            continue;
        }
        r->from_fanout = fx_raw_header(start, hlen, "X-Request-Id", value, sizeof(value));
        fx_raw_header(start, hlen, "Content-Type", r->ctype, sizeof(r->ctype));
        if (o->head) {
            r->body_len = 0;
        } else if (fx_raw_header(start, hlen, "Content-Length", value, sizeof(value))) {
            r->body_len = strtoul(value, NULL, 10);
            if (avail - hlen < r->body_len) {
                o->malformed = o->closed; /* a body cut short by the close */
                return;
            }
        } else if (r->status < 200 || r->status == 204 || r->status == 304) {
            r->body_len = 0;
        } else if (o->closed) {
            r->body_len = avail - hlen; /* the body runs to the close */
        } else {
            return;
        }
        r->body_at = pos + hlen;
        pos += hlen + r->body_len;
        o->n++;
    }
}

/* Read until the server closes, or until nwant replies came and the line went quiet for QUIET_MS,
 * or HANG_S passed without either (hung). */
static void read_replies(fx_conn *c, size_t nwant, outcome *o)
{
    double start = fx_now(), deadline = start + HANG_S * fx_scale(), quiet_until = 0;
    char chunk[65536];

    for (;;) {
        parse_replies(o);
        if (o->closed || o->malformed)
            break;
        double now = fx_now(), until;
        if (o->n >= nwant) {
            if (quiet_until == 0)
                quiet_until = now + QUIET_MS * fx_scale() / 1000.0;
            if (now >= quiet_until)
                break;
            until = quiet_until;
        } else {
            if (now >= deadline) {
                o->hung = true;
                break;
            }
            until = deadline;
        }
        struct pollfd pfd = {.fd = c->fd, .events = POLLIN};
        int rc = poll(&pfd, 1, (int)((until - now) * 1000) + 1);
        if (rc < 0 && errno == EINTR)
            continue;
        if (rc <= 0)
            continue;
        ssize_t got = recv(c->fd, chunk, sizeof(chunk), 0);
        if (got < 0 && errno == EINTR)
            continue;
        if (got <= 0) {
            o->closed = true; /* EOF, or a reset after a refusal */
            continue;
        }
        b_add(&o->raw, chunk, (size_t)got);
        quiet_until = 0;
    }
    o->secs = fx_now() - start;
}

/* Is r (a 4xx) a JSON error body {"error":{"code":"...","message":"..."}}? Its code into code. */
static bool json_error_body(const outcome *o, const reply *r, char *code, size_t cap)
{
    json_t *doc = json_loadb(o->raw.p + r->body_at, r->body_len, 0, NULL);
    json_t *err = json_object_get(doc, "error");
    const char *c = json_string_value(json_object_get(err, "code"));
    const char *m = json_string_value(json_object_get(err, "message"));
    bool ok = c != NULL && c[0] != '\0' && m != NULL && m[0] != '\0' &&
              strncasecmp(r->ctype, "application/json", 16) == 0;
    snprintf(code, cap, "%s", c != NULL ? c : "");
    json_decref(doc);
    return ok;
}

/* Format a reason into why and return it. */
static const char *because(char *why, size_t cap, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
static const char *because(char *why, size_t cap, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(why, cap, fmt, ap);
    va_end(ap);
    return why;
}

/* Why reply r does not meet w, or NULL when it does. */
static const char *misfit(const outcome *o, const reply *r, const want *w, char *why, size_t cap)
{
    char code[64];
    if (r->status >= 500)
        return because(why, cap, "a %d (5xx) reply", r->status);
    if (w->status == 200 || (w->status == -1 && r->status == 200)) {
        json_t *doc = json_loadb(o->raw.p + r->body_at, r->body_len, 0, NULL);
        bool ok = r->status == 200 && r->from_fanout && json_is_object(doc) &&
                  strncasecmp(r->ctype, "application/json", 16) == 0;
        json_decref(doc);
        return ok ? NULL : because(why, cap, "want fanout's 200 with a JSON object, got %d", r->status);
    }
    if (r->status < 400 || r->status > 499)
        return because(why, cap, "want a 4xx, got %d", r->status);
    if (w->status > 0 && r->status != w->status)
        return because(why, cap, "want %d, got %d", w->status, r->status);
    /* fanout's replies (and any that claim JSON) must be its JSON error shape. */
    if (r->from_fanout || strncasecmp(r->ctype, "application/json", 16) == 0 || w->code != NULL) {
        if (!r->from_fanout && w->code != NULL)
            return because(why, cap, "want fanout's JSON %s, got libevent's own %d page (no X-Request-Id)", w->code,
                           r->status);
        if (!json_error_body(o, r, code, sizeof(code)))
            return because(why, cap, "fanout's %d is not application/json {\"error\":{\"code\",\"message\"}}",
                           r->status);
        if (w->code != NULL && strcmp(code, w->code) != 0)
            return because(why, cap, "want error code %s, got %s", w->code, code);
    }
    return NULL;
}

/* True when the service still answers GET /healthz and a batch that uses both workers, on new
 * connections; prints why not (after: the case just run). */
static bool still_serving(const char *after)
{
    fx_response r;
    int status = 0;
    bool ok = true;

    if (!fx_alive(&srv)) {
        print_error("after %s: fanout is no longer running\n", after);
        return false;
    }
    if (!fx_http(srv.port, "GET", "/healthz", NULL, NULL, 0, &r)) {
        print_error("after %s: GET /healthz got no reply\n", after);
        return false;
    }
    if (r.status != 200 || strstr(r.body, "\"ok\"") == NULL) {
        print_error("after %s: GET /healthz: %d %s\n", after, r.status, r.body);
        ok = false;
    }
    fx_response_free(&r);
    json_t *doc = fx_post_json(srv.port,
                               "{\"queries\":[{\"sql\":\"SELECT 42 AS n\"},{\"sql\":\"SELECT 43 AS n\"}]}",
                               &status);
    json_t *a = fx_at(doc, "results.0.rows.0.0"), *b = fx_at(doc, "results.1.rows.0.0");
    if (status != 200 || json_integer_value(a) != 42 || json_integer_value(b) != 43) {
        print_error("after %s: a two-query batch got %d\n", after, status);
        fx_print_json("reply", doc);
        ok = false;
    }
    json_decref(doc);
    return ok;
}

typedef struct exchange_opts {
    int drip_ms;       /* > 0: send one byte at a time with this pause */
    bool half_close;   /* shutdown(SHUT_WR) after sending */
    double max_secs;   /* > 0: the replies must be complete within this (times fx_scale()) */
} exchange_opts;

/* Send data on a new connection, read, judge the replies against wants[0..nwant) (replies beyond
 * those: any 4xx), then check the service still serves. True when all is well; otherwise prints
 * the case, the bytes sent and what came back. */
static bool exchange(const char *what, const char *data, size_t len, const want *wants, size_t nwant,
                     const exchange_opts *xo)
{
    static const exchange_opts none = {0};
    outcome o = {0};
    fx_conn c;
    char why[256] = "";
    bool ok = true;

    if (xo == NULL)
        xo = &none;
    if (!fx_conn_open(&c, srv.port)) {
        print_error("%s: cannot connect\n", what);
        return false;
    }
    if (xo->drip_ms > 0) {
        for (size_t i = 0; i < len && ok; i++) {
            ok = fx_conn_send(&c, data + i, 1);
            fx_sleep_ms(xo->drip_ms);
        }
    } else {
        ok = fx_conn_send(&c, data, len);
    }
    if (!ok)
        snprintf(why, sizeof(why), "sending failed");
    if (ok && xo->half_close)
        shutdown(c.fd, SHUT_WR);
    if (ok)
        read_replies(&c, nwant, &o);
    fx_conn_close(&c);

    if (ok && o.hung) {
        snprintf(why, sizeof(why), "no reply and no close within %d s (hang); %zu of %zu replies", HANG_S * fx_scale(),
                 o.n, nwant);
        ok = false;
    }
    if (ok && o.malformed) {
        snprintf(why, sizeof(why), "the server's bytes are not a well-formed HTTP/1.x reply");
        ok = false;
    }
    for (size_t i = 0; ok && i < o.n; i++) {
        const want any = W_4XX_OR_CLOSE;
        const char *m = misfit(&o, &o.r[i], i < nwant ? &wants[i] : &any, why, sizeof(why));
        if (m != NULL) {
            char tmp[256];
            snprintf(tmp, sizeof(tmp), "reply %zu: %s", i + 1, m);
            snprintf(why, sizeof(why), "%s", tmp);
            ok = false;
        }
    }
    for (size_t i = o.n; ok && i < nwant; i++) {
        if (!(wants[i].or_close && o.closed)) {
            snprintf(why, sizeof(why), "reply %zu missing: the connection %s", i + 1,
                     o.closed ? "closed without it" : "stayed open without it");
            ok = false;
        }
    }
    if (ok && xo->max_secs > 0 && o.secs > xo->max_secs * fx_scale()) {
        snprintf(why, sizeof(why), "the reply took %.2f s (want under %.1f s)", o.secs, xo->max_secs * fx_scale());
        ok = false;
    }
    if (getenv("HOSTILE_DEBUG")) {
        fprintf(stderr, "DEBUG %-55.55s %6.3fs %s replies:", what, o.secs, o.closed ? "closed" : "open  ");
        for (size_t i = 0; i < o.n; i++)
            fprintf(stderr, " %d%s", o.r[i].status, o.r[i].from_fanout ? "(fanout)" : "(libevent)");
        fprintf(stderr, "\n");
    }
    if (!ok) {
        print_error("hostile case \"%s\": %s\n", what, why);
        print_bytes("sent", data, len);
        print_bytes(o.closed ? "received, then the server closed" : "received, connection still open",
                    o.raw.p != NULL ? o.raw.p : "", o.raw.len);
    }
    b_free(&o.raw);
    if (!still_serving(what))
        ok = false;
    return ok;
}

/* ---- the cases ---- */

/* Before any hostile byte: the service serves, and fanout's fd count is the baseline. */
static void test_baseline(void **state)
{
    (void)state;
    assert_true(still_serving("start-up"));
    if (fx_wrapped())
        return; /* srv.pid is valgrind's process; its own fds would be counted */
    fx_sleep_ms(200); /* let fanout finish closing the probes' connections */
    fd_baseline = fx_fd_count(srv.pid);
    FX_CHECK(fd_baseline > 0, "cannot read /proc/%d/fd", (int)srv.pid);
}

/* Content-Length promises more than is sent. Closing (FIN or RST) while libevent waits for the
 * rest: no reply is possible, the connection must just go away. Staying open: the server keeps
 * waiting for that client only, everyone else is served meanwhile. Half-closing: a close or a 4xx. */
static void test_truncated_bodies(void **state)
{
    const char *chunked_head = "POST /v1/batch HTTP/1.1\r\nHost: t\r\n" JSON_CT "Transfer-Encoding: chunked\r\n\r\n"
                               "64\r\n{\"queries\":";
    bytes req = {0};
    int failures = 0;
    (void)state;

    b_post(&req, "100", "{\"queries\":[{\"sq", 16);

    /* Close right after the partial body, 40 times, half of them with a reset. */
    for (int i = 0; i < 40; i++) {
        fx_conn c;
        assert_true(fx_conn_open(&c, srv.port));
        assert_true(fx_conn_send(&c, i % 4 < 2 ? req.p : chunked_head, i % 4 < 2 ? req.len : strlen(chunked_head)));
        if (i % 2 == 1) {
            struct linger lg = {.l_onoff = 1, .l_linger = 0};
            setsockopt(c.fd, SOL_SOCKET, SO_LINGER, &lg, sizeof(lg));
        }
        fx_conn_close(&c);
    }
    fx_sleep_ms(100);
    if (!still_serving("40 truncated bodies closed by the client"))
        failures++;

    /* Partial bodies left hanging on 16 connections while others are served. */
    fx_conn stalled[16];
    for (int i = 0; i < 16; i++) {
        assert_true(fx_conn_open(&stalled[i], srv.port));
        assert_true(fx_conn_send(&stalled[i], i % 2 ? req.p : chunked_head, i % 2 ? req.len : strlen(chunked_head)));
    }
    fx_sleep_ms(100);
    if (!still_serving("16 truncated bodies still waiting for the rest"))
        failures++;
    for (int i = 0; i < 16; i++) {
        /* Nothing is owed to them yet; anything sent must not be a 5xx. */
        char got[512];
        ssize_t n = recv(stalled[i].fd, got, sizeof(got) - 1, MSG_DONTWAIT);
        if (n > 0) {
            got[n] = '\0';
            if (strncmp(got, "HTTP/1.1 4", 10) != 0 && strncmp(got, "HTTP/1.0 4", 10) != 0) {
                print_error("a stalled truncated request got an unexpected reply\n");
                print_bytes("received", got, (size_t)n);
                failures++;
            }
        }
        fx_conn_close(&stalled[i]);
    }

    /* Half-close after the partial body, then wait for what the server does. */
    const want close_or_4xx[] = {W_4XX_OR_CLOSE};
    const exchange_opts half = {.half_close = true};
    if (!exchange("truncated body, then half-close", req.p, req.len, close_or_4xx, 1, &half))
        failures++;
    if (!exchange("truncated chunked body, then half-close", chunked_head, strlen(chunked_head), close_or_4xx, 1,
                  &half))
        failures++;

    /* A complete request and a half-close is a client waiting for its answer: 200. */
    bytes full = {0};
    b_batch(&full, SELECT_1, false);
    const want ok[] = {W_200};
    if (!exchange("complete batch, then half-close", full.p, full.len, ok, 1, &half))
        failures++;
    b_free(&full);
    b_free(&req);
    FX_CHECK(failures == 0, "%d truncated-body case(s) failed (see above)", failures);
}

/* fanout's CPU time so far (user + system), in seconds; -1 when /proc cannot tell. */
static double fanout_cpu_secs(void)
{
    char path[64], line[1024];
    unsigned long long utime = 0, stime = 0;
    snprintf(path, sizeof(path), "/proc/%d/stat", (int)srv.pid);
    FILE *f = fopen(path, "r");
    if (f == NULL)
        return -1;
    bool got = fgets(line, sizeof(line), f) != NULL;
    fclose(f);
    const char *p = got ? strrchr(line, ')') : NULL; /* the command may hold spaces */
    if (p == NULL || sscanf(p + 2, "%*c %*d %*d %*d %*d %*d %*u %*u %*u %*u %*u %llu %llu", &utime, &stime) != 2)
        return -1;
    return (double)(utime + stime) / (double)sysconf(_SC_CLK_TCK);
}

/* A client that sends a complete batch and half-closes (shutdown(SHUT_WR)) is still reading: it
 * gets its rows, not "canceled" (fanout sees the FIN and must not take it for a hang-up), also
 * for a batch that is still running when the FIN comes. Meanwhile fanout does not spin on the
 * half-closed socket (its EOF stays readable). */
static void test_half_close_gets_rows(void **state)
{
    static const struct {
        const char *body;
        long long n; /* results.0.rows.0.0 */
    } cases[] = {
        {SELECT_1, 1},
        {"{\"queries\":[{\"sql\":\"SELECT 7 AS n FROM pg_sleep(0.5)\"}]}", 7},
        {"{\"queries\":[{\"sql\":\"SELECT 8 AS n FROM pg_sleep(0.5)\"},{\"sql\":\"SELECT 9 AS n\"}]}", 8},
    };
    int failures = 0;
    (void)state;

    for (int round = 0; round < 4; round++) {
        for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
            bytes req = {0};
            outcome o = {0};
            fx_conn c;
            b_batch(&req, cases[i].body, false);
            assert_true(fx_conn_open(&c, srv.port));
            double cpu0 = fanout_cpu_secs();
            assert_true(fx_conn_send(&c, req.p, req.len));
            shutdown(c.fd, SHUT_WR);
            read_replies(&c, 1, &o);
            double cpu = fanout_cpu_secs() - cpu0;
            fx_conn_close(&c);
            json_t *doc = o.n >= 1 ? json_loadb(o.raw.p + o.r[0].body_at, o.r[0].body_len, 0, NULL) : NULL;
            json_t *n = fx_at(doc, "results.0.rows.0.0");
            bool ok = o.n == 1 && o.r[0].status == 200 && json_integer_value(n) == cases[i].n &&
                      fx_at(doc, "results.0.error") == NULL;
            if (!ok) {
                print_error("half-closed batch %s: want 200 with rows[0][0] = %lld\n", cases[i].body, cases[i].n);
                print_bytes("received", o.raw.p != NULL ? o.raw.p : "", o.raw.len);
                failures++;
            }
            /* A 0.5 s batch: a loop spinning on the socket would burn about as much CPU. */
            if (!fx_wrapped() && cpu0 >= 0 && cpu > 0.25) {
                print_error("half-closed batch %s: fanout used %.2f s of CPU in %.2f s\n", cases[i].body, cpu, o.secs);
                failures++;
            }
            json_decref(doc);
            b_free(&o.raw);
            b_free(&req);
        }
    }
    assert_true(still_serving("half-closed batches"));
    FX_CHECK(failures == 0, "%d half-closed batch(es) went wrong (see above)", failures);
}

/* Content-Length smaller than the body: the extra bytes are the next request on the connection. */
static void test_wrong_content_length(void **state)
{
    const size_t n = strlen(SELECT_1);
    int failures = 0;
    char cl[32];
    (void)state;

    /* The cut body is fanout's invalid JSON (400); the rest waits for its end of line, open. */
    {
        bytes b = {0};
        snprintf(cl, sizeof(cl), "%zu", n - 10);
        b_post(&b, cl, SELECT_1, n);
        const want w[] = {W_FANOUT(400, "bad_request")};
        failures += !exchange("Content-Length 10 short, the rest unterminated", b.p, b.len, w, 1, NULL);
        b_free(&b);
    }
    /* The rest ends in CRLF CRLF: a garbage request line, libevent's 400 (or a close). */
    {
        bytes b = {0};
        b_post(&b, "10", SELECT_1, n);
        b_str(&b, "\r\n\r\n");
        const want w[] = {W_FANOUT(400, "bad_request"), W_4XX_OR_CLOSE};
        failures += !exchange("Content-Length 10, the rest a garbage request", b.p, b.len, w, 2, NULL);
        b_free(&b);
    }
    /* Content-Length 0 with a body: fanout's "empty body" 400, then the body as a request. */
    {
        bytes b = {0};
        b_post(&b, "0", SELECT_1, n);
        b_str(&b, "\r\n\r\n");
        const want w[] = {W_FANOUT(400, "bad_request"), W_4XX_OR_CLOSE};
        failures += !exchange("Content-Length 0 with a body", b.p, b.len, w, 2, NULL);
        b_free(&b);
    }
    /* The right length, then garbage bytes as a next request. */
    {
        bytes b = {0};
        b_batch(&b, SELECT_1, false);
        b_str(&b, "GARBAGE\x01\x02\xff\r\n\r\n");
        const want w[] = {W_200, W_4XX_OR_CLOSE};
        failures += !exchange("a batch, then garbage bytes as the next request", b.p, b.len, w, 2, NULL);
        b_free(&b);
    }
    /* Content-Length values that are not lengths; two conflicting ones; one with chunked. */
    static const char *const bad_lengths[] = {"-5", "abc", "99999999999999999999999", "1e3", "0x20", " "};
    for (size_t i = 0; i < sizeof(bad_lengths) / sizeof(bad_lengths[0]); i++) {
        bytes b = {0};
        char what[96];
        b_post(&b, bad_lengths[i], SELECT_1, n);
        b_str(&b, "\r\n\r\n");
        snprintf(what, sizeof(what), "Content-Length: %s", bad_lengths[i]);
        const want w[] = {W_4XX_OR_CLOSE};
        failures += !exchange(what, b.p, b.len, w, 1, NULL);
        b_free(&b);
    }
    {
        bytes b = {0};
        b_fmt(&b, "POST /v1/batch HTTP/1.1\r\nHost: t\r\n" JSON_CT "Content-Length: 5\r\nContent-Length: %zu\r\n\r\n%s\r\n\r\n",
              n, SELECT_1);
        const want w[] = {W_4XX_OR_CLOSE};
        failures += !exchange("two different Content-Length headers", b.p, b.len, w, 1, NULL);
        b_free(&b);
    }
    {
        bytes b = {0};
        b_fmt(&b, "POST /v1/batch HTTP/1.1\r\nHost: t\r\n" JSON_CT "Content-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n"
                  "%zx\r\n%s\r\n0\r\n\r\n",
              n, SELECT_1);
        const want w[] = {W_4XX_OR_CLOSE};
        failures += !exchange("Content-Length and Transfer-Encoding: chunked", b.p, b.len, w, 1, NULL);
        b_free(&b);
    }
    FX_CHECK(failures == 0, "%d wrong-Content-Length case(s) failed (see above)", failures);
}

#define CHUNKED_HEAD "POST /v1/batch HTTP/1.1\r\nHost: t\r\n" JSON_CT "Transfer-Encoding: chunked\r\nConnection: close\r\n\r\n"

/* Chunked bodies: valid JSON in chunks is fanout's batch (200); over max_body_bytes or badly framed
 * is refused by libevent (its 400/413 page, or a close; libevent 2.1 answers a malformed chunk size
 * with 413 too). A Transfer-Encoding libevent does not know leaves a body-less request: fanout's 400. */
static void test_chunked(void **state)
{
    const char *body = SELECT_1;
    const size_t n = strlen(body);
    int failures = 0;
    (void)state;

    /* Valid: the batch in three chunks (one size in upper-case hex), then the last chunk. */
    {
        bytes b = {0};
        b_str(&b, CHUNKED_HEAD);
        b_fmt(&b, "5\r\n%.5s\r\n", body);
        b_fmt(&b, "1A\r\n%.26s\r\n", body + 5);
        b_fmt(&b, "%zx\r\n%s\r\n0\r\n\r\n", n - 31, body + 31);
        const want w[] = {W_200};
        failures += !exchange("valid chunked batch", b.p, b.len, w, 1, NULL);
        b_free(&b);
    }
    /* Valid framing, padded to exactly the limit with JSON whitespace: still accepted. */
    {
        bytes b = {0};
        b_str(&b, CHUNKED_HEAD);
        b_fmt(&b, "%zx\r\n%s\r\n", n, body);
        size_t left = BODY_LIMIT - n;
        char *pad = malloc(4096);
        assert_non_null(pad);
        memset(pad, ' ', 4096);
        while (left > 0) {
            size_t k = left < 4096 ? left : 4096;
            b_fmt(&b, "%zx\r\n", k);
            b_add(&b, pad, k);
            b_str(&b, "\r\n");
            left -= k;
        }
        b_str(&b, "0\r\n\r\n");
        const want w[] = {W_200};
        failures += !exchange("chunked batch of exactly max_body_bytes", b.p, b.len, w, 1, NULL);
        /* One byte more: refused. */
        b_free(&b);
        b_str(&b, CHUNKED_HEAD);
        b_fmt(&b, "%zx\r\n%s\r\n", n, body);
        left = BODY_LIMIT - n + 1;
        while (left > 0) {
            size_t k = left < 4096 ? left : 4096;
            b_fmt(&b, "%zx\r\n", k);
            b_add(&b, pad, k);
            b_str(&b, "\r\n");
            left -= k;
        }
        b_str(&b, "0\r\n\r\n");
        const want w413[] = {W_STATUS_OR_CLOSE(413)};
        failures += !exchange("chunked body one byte over max_body_bytes", b.p, b.len, w413, 1, NULL);
        b_free(&b);
        /* 1 MiB of chunks. */
        b_str(&b, CHUNKED_HEAD);
        for (int i = 0; i < 256; i++) {
            b_str(&b, "1000\r\n");
            b_add(&b, pad, 4096);
            b_str(&b, "\r\n");
        }
        b_str(&b, "0\r\n\r\n");
        failures += !exchange("chunked body of 1 MiB", b.p, b.len, w413, 1, NULL);
        b_free(&b);
        free(pad);
    }
    /* One chunk that claims to be over the limit. */
    {
        bytes b = {0};
        b_str(&b, CHUNKED_HEAD);
        b_fmt(&b, "%x\r\n%s", BODY_LIMIT + 1, body);
        const want w[] = {W_STATUS_OR_CLOSE(413)};
        failures += !exchange("one chunk size over max_body_bytes", b.p, b.len, w, 1, NULL);
        b_free(&b);
    }
    /* Malformed chunk sizes. */
    static const char *const sizes[] = {"zz", "-5", "ffffffffffffffffffff", "7fffffffffffffff", "0x10", "",
                                        "1 0", "+10", "\x01", "10;"};
    for (size_t i = 0; i < sizeof(sizes) / sizeof(sizes[0]); i++) {
        bytes b = {0};
        char what[96];
        b_str(&b, CHUNKED_HEAD);
        b_fmt(&b, "%s\r\n%s\r\n0\r\n\r\n", sizes[i], body);
        snprintf(what, sizeof(what), "chunk size line \"%s\"", sizes[i]);
        const want w[] = {W_4XX_OR_CLOSE};
        failures += !exchange(what, b.p, b.len, w, 1, NULL);
        b_free(&b);
    }
    /* A chunk with more data than its size says, and one whose data lacks its CRLF. */
    {
        bytes b = {0};
        b_str(&b, CHUNKED_HEAD);
        b_fmt(&b, "5\r\n%s\r\n0\r\n\r\n", body);
        const want w[] = {W_4XX_OR_CLOSE};
        failures += !exchange("chunk data longer than its size", b.p, b.len, w, 1, NULL);
        b_free(&b);
        b_str(&b, CHUNKED_HEAD);
        b_fmt(&b, "%zx\r\n%sXY0\r\n\r\n", n, body);
        failures += !exchange("chunk data without its CRLF", b.p, b.len, w, 1, NULL);
        b_free(&b);
    }
    /* Transfer-Encoding other than chunked. */
    {
        bytes b = {0};
        b_fmt(&b, "POST /v1/batch HTTP/1.1\r\nHost: t\r\n" JSON_CT "Transfer-Encoding: gzip\r\nConnection: close\r\n\r\n%s",
              body);
        const want w[] = {W_4XX_OR_CLOSE};
        failures += !exchange("Transfer-Encoding: gzip", b.p, b.len, w, 1, NULL);
        b_free(&b);
    }
    FX_CHECK(failures == 0, "%d chunked case(s) failed (see above)", failures);
}

/* 10,000 headers: well over the 64 KiB header cap (fanout's MAX_HEADERS_BYTES), refused by
 * libevent; 10,000 tiny ones under the cap are a legitimate request and are served. */
static void test_many_headers(void **state)
{
    bytes b = {0};
    int failures = 0;
    (void)state;

    b_str(&b, "GET /healthz HTTP/1.1\r\nHost: t\r\n");
    for (int i = 0; i < 10000; i++)
        b_fmt(&b, "X-Hostile-%05d: value-%05d\r\n", i, i);
    b_str(&b, "Connection: close\r\n\r\n");
    const want refused[] = {W_4XX_OR_CLOSE};
    failures += !exchange("10,000 headers (about 290 KB)", b.p, b.len, refused, 1, NULL);
    b_free(&b);

    b_str(&b, "GET /healthz HTTP/1.1\r\nHost: t\r\n");
    b_repeat(&b, "a: b\r\n", 10000);
    b_str(&b, "Connection: close\r\n\r\n");
    const want served[] = {W_200};
    const exchange_opts fast = {.max_secs = FAST_S};
    failures += !exchange("10,000 headers of 6 bytes (under the cap)", b.p, b.len, served, 1, &fast);
    b_free(&b);

    /* The same on a batch, and 10,000 copies of Content-Type. */
    b_fmt(&b, "POST /v1/batch HTTP/1.1\r\nHost: t\r\nConnection: close\r\nContent-Length: %zu\r\n", strlen(SELECT_1));
    b_repeat(&b, JSON_CT, 10000);
    b_fmt(&b, "\r\n%s", SELECT_1);
    failures += !exchange("10,000 Content-Type headers (about 320 KB)", b.p, b.len, refused, 1, NULL);
    b_free(&b);
    FX_CHECK(failures == 0, "%d many-header case(s) failed (see above)", failures);
}

/* One header line of 1 MiB (value, name, or fanout's own X-Request-Id): over the 64 KiB header
 * cap, so libevent answers its 400 page (or closes) before fanout sees the request. */
static void test_huge_header(void **state)
{
    bytes b = {0};
    int failures = 0;
    char *big = malloc(1 << 20);
    (void)state;

    assert_non_null(big);
    memset(big, 'a', 1 << 20);
    b_str(&b, "GET /healthz HTTP/1.1\r\nHost: t\r\nX-Big: ");
    b_add(&b, big, 1 << 20);
    b_str(&b, "\r\nConnection: close\r\n\r\n");
    const want w[] = {W_4XX_OR_CLOSE};
    failures += !exchange("one 1 MiB header", b.p, b.len, w, 1, NULL);
    b_free(&b);

    /* The same size as a header name, and as a 1 MiB X-Request-Id on a batch. */
    b_str(&b, "GET /healthz HTTP/1.1\r\nHost: t\r\n");
    b_add(&b, big, 1 << 20);
    b_str(&b, ": v\r\nConnection: close\r\n\r\n");
    failures += !exchange("a 1 MiB header name", b.p, b.len, w, 1, NULL);
    b_free(&b);
    b_fmt(&b, "POST /v1/batch HTTP/1.1\r\nHost: t\r\n" JSON_CT "Content-Length: %zu\r\nX-Request-Id: ", strlen(SELECT_1));
    b_add(&b, big, 1 << 20);
    b_fmt(&b, "\r\nConnection: close\r\n\r\n%s", SELECT_1);
    failures += !exchange("a 1 MiB X-Request-Id", b.p, b.len, w, 1, NULL);
    b_free(&b);
    free(big);
    FX_CHECK(failures == 0, "%d huge-header case(s) failed (see above)", failures);
}

static void test_header_without_colon(void **state)
{
    static const char *const reqs[] = {
        "GET /healthz HTTP/1.1\r\nHost: t\r\nNoColonHere\r\nConnection: close\r\n\r\n",
        ("POST /v1/batch HTTP/1.1\r\nHost: t\r\nContent-Type application/json\r\nContent-Length: 2\r\n"
         "Connection: close\r\n\r\n{}"),
        "GET /healthz HTTP/1.1\r\n\x01\x02\x03\xff\xfe\r\nConnection: close\r\n\r\n",
    };
    int failures = 0;
    (void)state;

    for (size_t i = 0; i < sizeof(reqs) / sizeof(reqs[0]); i++) {
        char what[64];
        snprintf(what, sizeof(what), "malformed header line %zu", i + 1);
        /* A header libevent cannot split is its 400; fanout answering is fine too, as a 4xx. */
        const want w[] = {W_4XX_OR_CLOSE};
        failures += !exchange(what, reqs[i], strlen(reqs[i]), w, 1, NULL);
    }
    /* An empty field name is not a valid header either, but libevent 2.1 keeps it and fanout
     * ignores it: served or refused are both fine, a 5xx or a hang is not. */
    static const char empty_name[] = "GET /healthz HTTP/1.1\r\nHost: t\r\n: no name\r\nConnection: close\r\n\r\n";
    const want either[] = {W_NOT_5XX};
    failures += !exchange("header line with an empty name", empty_name, sizeof(empty_name) - 1, either, 1, NULL);
    FX_CHECK(failures == 0, "%d header-line case(s) failed (see above)", failures);
}

/* A request line with a 100 KiB URI (beyond the 64 KiB header cap): libevent's 400/413 or a close. */
static void test_long_uri(void **state)
{
    bytes b = {0};
    int failures = 0;
    (void)state;

    b_str(&b, "GET /");
    b_repeat(&b, "a", 100 * 1024);
    b_str(&b, " HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n");
    const want w[] = {W_4XX_OR_CLOSE};
    failures += !exchange("request line with a 100 KiB URI", b.p, b.len, w, 1, NULL);
    b_free(&b);
    b_str(&b, "POST /v1/batch?");
    b_repeat(&b, "x=%ff&", 100 * 1024 / 6);
    b_fmt(&b, " HTTP/1.1\r\nHost: t\r\n" JSON_CT "Content-Length: %zu\r\nConnection: close\r\n\r\n%s", strlen(SELECT_1),
          SELECT_1);
    failures += !exchange("batch with a 100 KiB query string", b.p, b.len, w, 1, NULL);
    b_free(&b);
    FX_CHECK(failures == 0, "%d long-URI case(s) failed (see above)", failures);
}

/* One POST /v1/batch of body (with Connection: close) that fanout must refuse as bad_request. */
static int bad_json(const char *what, const char *body, size_t len, const exchange_opts *xo)
{
    bytes b = {0};
    char cl[32];
    snprintf(cl, sizeof(cl), "%zu", len);
    b_fmt(&b, "POST /v1/batch HTTP/1.1\r\nHost: t\r\n" JSON_CT "Connection: close\r\nContent-Length: %s\r\n\r\n", cl);
    b_add(&b, body, len);
    const want w[] = {W_FANOUT(400, "bad_request")};
    bool ok = exchange(what, b.p, b.len, w, 1, xo);
    b_free(&b);
    return ok ? 0 : 1;
}

/* Bytes that are not UTF-8 in JSON strings: jansson refuses them, fanout answers 400 bad_request
 * (PostgreSQL would refuse them too, but no query may run). */
static void test_invalid_utf8(void **state)
{
    static const struct {
        const char *what, *body;
    } cases[] = {
        {"0xff in sql", "{\"queries\":[{\"sql\":\"SELECT '\xff'\"}]}"},
        {"lone continuation byte in sql", "{\"queries\":[{\"sql\":\"SELECT '\x80'\"}]}"},
        {"truncated 2-byte sequence in sql", "{\"queries\":[{\"sql\":\"SELECT '\xc3('\"}]}"},
        {"truncated sequence at the end of sql", "{\"queries\":[{\"sql\":\"SELECT 1 \xe2\x82\"}]}"},
        {"overlong '/' in sql", "{\"queries\":[{\"sql\":\"SELECT '\xc0\xaf'\"}]}"},
        {"UTF-16 surrogate encoded in sql", "{\"queries\":[{\"sql\":\"SELECT '\xed\xa0\x80'\"}]}"},
        {"code point above U+10FFFF in sql", "{\"queries\":[{\"sql\":\"SELECT '\xf4\x90\x80\x80'\"}]}"},
        {"0xfe in a string parameter", "{\"queries\":[{\"sql\":\"SELECT $1::text\",\"params\":[\"a\xfe\"]}]}"},
        {"invalid UTF-8 in a nested parameter", "{\"queries\":[{\"sql\":\"SELECT $1::jsonb\",\"params\":[{\"k\":\"\xc3\"}]}]}"},
        {"invalid UTF-8 in id", "{\"queries\":[{\"id\":\"\xff\xfe\",\"sql\":\"SELECT 1\"}]}"},
        {"invalid UTF-8 in a key", "{\"queries\":[{\"sql\":\"SELECT 1\",\"\xff\":1}]}"},
        {"lone surrogate escape in sql", "{\"queries\":[{\"sql\":\"SELECT '\\ud800'\"}]}"},
        {"Latin-1 body", "{\"queries\":[{\"sql\":\"SELECT 'caf\xe9'\"}]}"},
    };
    int failures = 0;
    (void)state;

    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++)
        failures += bad_json(cases[i].what, cases[i].body, strlen(cases[i].body), NULL);
    FX_CHECK(failures == 0, "%d invalid-UTF-8 case(s) failed (see above)", failures);
}

/* \u0000 in a JSON string: libpq cannot carry NUL, so 400 bad_request whose message says so. */
static void test_nul_in_strings(void **state)
{
    static const struct {
        const char *what, *body;
    } cases[] = {
        {"\\u0000 in sql", "{\"queries\":[{\"sql\":\"SELECT 1\\u0000; DROP TABLE x\"}]}"},
        {"\\u0000 in a parameter", "{\"queries\":[{\"sql\":\"SELECT $1::text\",\"params\":[\"a\\u0000b\"]}]}"},
        {"\\u0000 in a nested parameter", "{\"queries\":[{\"sql\":\"SELECT $1::jsonb\",\"params\":[[\"\\u0000\"]]}]}"},
        {"\\u0000 in id", "{\"queries\":[{\"id\":\"\\u0000\",\"sql\":\"SELECT 1\"}]}"},
        {"\\u0000 in a key", "{\"queries\":[{\"sql\":\"SELECT 1\"}],\"\\u0000\":1}"},
    };
    int failures = 0;
    (void)state;

    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        const char *body = cases[i].body;
        json_t *doc;
        int status = 0;

        failures += bad_json(cases[i].what, body, strlen(body), NULL);
        /* A clear message: it names the NUL. */
        doc = fx_post_json(srv.port, body, &status);
        const char *msg = json_string_value(fx_at(doc, "error.message"));
        if (status != 400 || msg == NULL || (strstr(msg, "\\u0000") == NULL && strcasestr(msg, "NUL") == NULL)) {
            print_error("%s: want 400 with a message naming \\u0000 or NUL, got %d\n", cases[i].what, status);
            fx_print_json("reply", doc);
            failures++;
        }
        json_decref(doc);
    }
    /* A raw NUL byte inside a string is not JSON at all: 400 bad_request. */
    static const char raw[] = "{\"queries\":[{\"sql\":\"SELECT 1\0\"}]}";
    failures += bad_json("raw NUL byte in sql", raw, sizeof(raw) - 1, NULL);
    FX_CHECK(failures == 0, "%d NUL case(s) failed (see above)", failures);
}

/* JSON nested 100,000 deep: fanout's depth cap refuses it with 400 before jansson recurses, fast. */
static void test_deep_nesting(void **state)
{
    const exchange_opts fast = {.max_secs = FAST_S};
    bytes b = {0};
    int failures = 0;
    (void)state;

    b_str(&b, "{\"queries\":");
    b_repeat(&b, "[", 100000);
    b_repeat(&b, "]", 100000);
    b_str(&b, "}");
    failures += bad_json("queries nested 100,000 deep (balanced)", b.p, b.len, &fast);
    b_free(&b);

    b_repeat(&b, "[", 100000);
    failures += bad_json("100,000 '[' alone", b.p, b.len, &fast);
    b_free(&b);

    b_str(&b, "{\"queries\":[{\"sql\":\"SELECT $1::jsonb\",\"params\":[");
    b_repeat(&b, "[", 100000);
    b_repeat(&b, "]", 100000);
    b_str(&b, "]}]}");
    failures += bad_json("a parameter nested 100,000 deep", b.p, b.len, &fast);
    b_free(&b);

    b_str(&b, "{\"queries\":[{\"sql\":\"SELECT 1\"}],\"x\":");
    b_repeat(&b, "{\"a\":", 40000);
    b_str(&b, "1");
    b_repeat(&b, "}", 40000);
    b_str(&b, "}");
    failures += bad_json("objects nested 40,000 deep", b.p, b.len, &fast);
    b_free(&b);

    /* Brackets inside strings are not nesting: this batch is valid. */
    b_str(&b, "{\"queries\":[{\"sql\":\"SELECT length($1::text) AS n\",\"params\":[\"");
    b_repeat(&b, "[{", 5000);
    b_str(&b, "\\\"");
    b_repeat(&b, "[", 1000);
    b_str(&b, "\"]}]}");
    bytes req = {0};
    b_batch(&req, b.p, true);
    const want ok[] = {W_200};
    failures += !exchange("10,000 brackets inside a string (not nesting)", req.p, req.len, ok, 1, &fast);
    b_free(&req);
    b_free(&b);
    FX_CHECK(failures == 0, "%d deep-nesting case(s) failed (see above)", failures);
}

/* 1 MiB of spaces as the body: over max_body_bytes; libevent answers 413 from the Content-Length
 * alone (its HTML page), before fanout sees the request. */
static void test_body_of_spaces(void **state)
{
    bytes b = {0};
    int failures = 0;
    char *spaces = malloc(1 << 20);
    (void)state;

    assert_non_null(spaces);
    memset(spaces, ' ', 1 << 20);
    b_fmt(&b, "POST /v1/batch HTTP/1.1\r\nHost: t\r\n" JSON_CT "Connection: close\r\nContent-Length: %d\r\n\r\n", 1 << 20);
    b_add(&b, spaces, 1 << 20);
    const want w[] = {W_STATUS_OR_CLOSE(413)};
    const want w_strict[] = {{413, NULL, false}};
    failures += !exchange("a body of 1 MiB of spaces", b.p, b.len, w_strict, 1, NULL);
    b_free(&b);
    /* Under the limit, spaces only: fanout's 400 (empty document). */
    failures += bad_json("a body of 200 KB of spaces", spaces, 200 * 1000, NULL);
    /* Without Connection: close, and with Expect: 100-continue. */
    b_fmt(&b, "POST /v1/batch HTTP/1.1\r\nHost: t\r\n" JSON_CT "Expect: 100-continue\r\nContent-Length: %d\r\n\r\n", 1 << 20);
    b_add(&b, spaces, 1 << 20);
    failures += !exchange("a 1 MiB body with Expect: 100-continue", b.p, b.len, w, 1, NULL);
    b_free(&b);
    free(spaces);
    FX_CHECK(failures == 0, "%d body-size case(s) failed (see above)", failures);
}

/* Garbage after a valid request on the same connection: the request is answered, the garbage gets
 * libevent's 400 or a close, also while the first request is still running on a worker. */
static void test_pipelined_garbage(void **state)
{
#define TAIL(what, lit) {what, lit, sizeof(lit) - 1}
    static const struct {
        const char *what, *garbage;
        size_t len;
    } tails[] = {
        TAIL("binary garbage", "\x00\x01\x02garbage \xff\xfe\r\n\r\n"),
        TAIL("a response line", "HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n"),
        TAIL("half a request line", "GET /healthz HT\r\n\r\n"),
        TAIL("a CRLF storm", "\r\n\r\n\r\n\r\n\r\n\r\n\r\n\r\nxx\r\n\r\n"),
    };
#undef TAIL
    int failures = 0;
    (void)state;

    for (size_t slow = 0; slow < 2; slow++) {
        for (size_t i = 0; i < sizeof(tails) / sizeof(tails[0]); i++) {
            bytes b = {0};
            char what[128];
            b_batch(&b, slow ? "{\"queries\":[{\"sql\":\"SELECT pg_sleep(0.2)\"}]}" : SELECT_1, false);
            b_add(&b, tails[i].garbage, tails[i].len);
            snprintf(what, sizeof(what), "%s batch, then %s", slow ? "a slow" : "a", tails[i].what);
            const want w[] = {W_200, W_4XX_OR_CLOSE};
            failures += !exchange(what, b.p, b.len, w, 2, NULL);
            b_free(&b);
        }
    }
    /* A valid batch followed by 1 MiB of garbage without a line end. */
    {
        bytes b = {0};
        b_batch(&b, SELECT_1, false);
        b_repeat(&b, "AAAAAAAAAAAAAAAA", 65536);
        const want w[] = {W_200, W_4XX_OR_CLOSE};
        failures += !exchange("a batch, then 1 MiB of garbage", b.p, b.len, w, 2, NULL);
        b_free(&b);
    }
    FX_CHECK(failures == 0, "%d pipelined-garbage case(s) failed (see above)", failures);
}

/* HTTP/0.9 has no version and no headers: libevent's 400 or a close. */
static void test_http09(void **state)
{
    static const struct {
        const char *what, *req;
    } cases[] = {
        {"HTTP/0.9 GET / (one line)", "GET /\r\n"},
        {"HTTP/0.9 GET /healthz, blank line", "GET /healthz\r\n\r\n"},
        {"a bare method", "GET\r\n\r\n"},
        {"only blank lines", "\r\n\r\n"},
        {"version HTTP/2.0", "GET /healthz HTTP/2.0\r\n\r\n"},
        {"version HTTP/1.1x", "GET /healthz HTTP/1.1x\r\n\r\n"},
    };
    int failures = 0;
    (void)state;

    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        const want w[] = {W_4XX_OR_CLOSE};
        failures += !exchange(cases[i].what, cases[i].req, strlen(cases[i].req), w, 1, NULL);
    }
    FX_CHECK(failures == 0, "%d HTTP/0.9-style case(s) failed (see above)", failures);
}

/* A method libevent 2.1 does not know. fanout lets every known method through to answer 405
 * itself; an unknown one must still be a 4xx (or a close), not libevent's 501. One with a body
 * (which libevent does not read) gets fanout's 405 and a close, nothing after it. */
static void test_unknown_method(void **state)
{
    static const char *const reqs[] = {
        "FOO / HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n",
        "FOO /healthz HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n",
        "get /healthz HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n",
    };
    static const char propfind[] = "PROPFIND /v1/batch HTTP/1.1\r\nHost: t\r\n" JSON_CT "Content-Length: 2\r\n\r\n{}";
    int failures = 0;
    (void)state;

    for (size_t i = 0; i < sizeof(reqs) / sizeof(reqs[0]); i++) {
        char what[64];
        snprintf(what, sizeof(what), "%.*s", (int)strcspn(reqs[i], "\r"), reqs[i]);
        const want w[] = {W_4XX_OR_CLOSE};
        failures += !exchange(what, reqs[i], strlen(reqs[i]), w, 1, NULL);
    }
    /* Keep-alive: the close must be fanout's own, and "{}" must never be read as a request. */
    outcome o = {0};
    fx_conn c;
    assert_true(fx_conn_open(&c, srv.port));
    assert_true(fx_conn_send(&c, propfind, sizeof(propfind) - 1));
    read_replies(&c, 1, &o);
    fx_conn_close(&c);
    char why[256] = "";
    const want w405 = W_FANOUT(405, "method_not_allowed");
    const char *m = o.n >= 1 ? misfit(&o, &o.r[0], &w405, why, sizeof(why)) : "no reply";
    if (m != NULL || o.n != 1 || !o.closed) {
        print_error("PROPFIND with a body: %s; %zu replies, connection %s (want fanout's 405, then a close)\n",
                    m != NULL ? m : "ok", o.n, o.closed ? "closed" : "still open");
        print_bytes("received", o.raw.p != NULL ? o.raw.p : "", o.raw.len);
        failures++;
    }
    b_free(&o.raw);
    FX_CHECK(failures == 0, "%d unknown-method case(s) failed (see above)", failures);
}

/* libevent 2.1 reads no body for HEAD, TRACE and the methods it does not know, so a body would be
 * parsed as the next request on the connection: a request smuggled past whatever vetted the
 * outer one. fanout answers the outer request and closes; the inner one is never answered. */
static void test_unread_body_not_a_request(void **state)
{
    static const char inner[] = "GET /healthz HTTP/1.1\r\nHost: t\r\nX-Request-Id: SMUGGLED\r\n\r\n";
    static const char *const methods[] = {"PURGE", "FOO", "PROPFIND", "TRACE", "HEAD"};
    static const char *const framings[] = {"Content-Length: %zu\r\n", "Transfer-Encoding: chunked\r\n",
                                           "Content-Length: 0%zu\r\n"};
    int failures = 0;
    (void)state;

    for (size_t i = 0; i < sizeof(methods) / sizeof(methods[0]); i++) {
        for (size_t j = 0; j < sizeof(framings) / sizeof(framings[0]); j++) {
            bytes req = {0};
            outcome o = {0};
            fx_conn c;
            b_fmt(&req, "%s /v1/batch HTTP/1.1\r\nHost: t\r\n", methods[i]);
            b_fmt(&req, framings[j], sizeof(inner) - 1);
            b_fmt(&req, "\r\n%s", inner);
            o.head = strcmp(methods[i], "HEAD") == 0;
            assert_true(fx_conn_open(&c, srv.port));
            assert_true(fx_conn_send(&c, req.p, req.len));
            read_replies(&c, 1, &o);
            fx_conn_close(&c);
            bool smuggled = o.raw.p != NULL && memmem(o.raw.p, o.raw.len, "SMUGGLED", 8) != NULL;
            if (smuggled || o.hung || !o.closed || o.n != 1 || !o.r[0].from_fanout || o.r[0].status != 405) {
                print_error("%s with a body (%.*s): want fanout's 405 and a close, nothing more; got %zu replies%s%s\n",
                            methods[i], (int)strcspn(framings[j], "\r"), framings[j], o.n, smuggled ? ", the smuggled request answered" : "",
                            o.closed ? "" : ", connection still open");
                print_bytes("sent", req.p, req.len);
                print_bytes("received", o.raw.p != NULL ? o.raw.p : "", o.raw.len);
                failures++;
            }
            b_free(&o.raw);
            b_free(&req);
        }
    }
    /* A body libevent reads (GET) and a HEAD announcing none keep the connection: not every
     * request is closed. */
    static const char kept[] = "HEAD /healthz HTTP/1.1\r\nHost: t\r\nContent-Length: 0\r\n\r\n"
                               "GET /healthz HTTP/1.1\r\nHost: t\r\nContent-Length: 2\r\n\r\n{}"
                               "GET /healthz HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n";
    fx_conn c;
    fx_response r;
    assert_true(fx_conn_open(&c, srv.port));
    assert_true(fx_conn_send(&c, kept, sizeof(kept) - 1));
    for (int k = 0; k < 3; k++) {
        FX_CHECK(fx_conn_read(&c, k == 0, &r), "keep-alive request %d got no reply", k + 1);
        FX_CHECK(r.status == 200, "keep-alive request %d: status %d", k + 1, r.status);
        fx_response_free(&r);
    }
    fx_conn_close(&c);
    assert_true(still_serving("bodies libevent does not read"));
    FX_CHECK(failures == 0, "%d unread-body case(s) failed (see above)", failures);
}

/* libevent 2.1 gives a reply to CONNECT no Content-Length and keeps its connection open (a
 * tunnel). fanout opens no tunnel: its refusal has a Content-Length, and the connection closes
 * at once, not at client_timeout_ms. */
static void test_connect_reply_closes(void **state)
{
    static const char *const reqs[] = {
        "CONNECT /v1/batch HTTP/1.1\r\nHost: t\r\n\r\n",
        "CONNECT 127.0.0.1:5432 HTTP/1.1\r\nHost: 127.0.0.1:5432\r\n\r\n",
        "CONNECT /healthz HTTP/1.1\r\nHost: t\r\nContent-Length: 2\r\n\r\n{}",
    };
    int failures = 0;
    (void)state;

    for (size_t i = 0; i < sizeof(reqs) / sizeof(reqs[0]); i++) {
        outcome o = {0};
        fx_conn c;
        char len[32] = "";
        assert_true(fx_conn_open(&c, srv.port));
        assert_true(fx_conn_send(&c, reqs[i], strlen(reqs[i])));
        read_replies(&c, 1, &o);
        fx_conn_close(&c);
        bool framed = o.n >= 1 && fx_raw_header(o.raw.p, o.r[0].body_at, "Content-Length", len, sizeof(len)) &&
                      strtoul(len, NULL, 10) == o.r[0].body_len && o.r[0].body_len > 0;
        if (o.hung || !o.closed || o.n != 1 || !o.r[0].from_fanout || o.r[0].status < 400 || o.r[0].status > 499 ||
            !framed || o.secs > FAST_S * fx_scale()) {
            print_error("%.*s: want fanout's 4xx with a Content-Length, then a close within %d s; got %zu replies, "
                        "Content-Length \"%s\", connection %s after %.2f s\n",
                        (int)strcspn(reqs[i], "\r"), reqs[i], FAST_S * fx_scale(), o.n, len,
                        o.closed ? "closed" : "open", o.secs);
            print_bytes("received", o.raw.p != NULL ? o.raw.p : "", o.raw.len);
            failures++;
        }
        b_free(&o.raw);
    }
    assert_true(still_serving("CONNECT"));
    FX_CHECK(failures == 0, "%d CONNECT case(s) failed (see above)", failures);
}

/* A valid batch sent one byte every 10 ms is still answered. */
static void test_slow_drip(void **state)
{
    bytes b = {0};
    (void)state;

    b_batch(&b, SELECT_1, true);
    const want w[] = {W_200};
    const exchange_opts drip = {.drip_ms = 10};
    bool ok = exchange("a batch dripped one byte every 10 ms", b.p, b.len, w, 1, &drip);
    b_free(&b);
    assert_true(ok);
}

/* After the hostile traffic fanout holds no more descriptors than before it (give it a moment). */
static void test_no_fd_leak(void **state)
{
    (void)state;
    if (fx_wrapped() || fd_baseline < 0)
        skip(); /* under valgrind srv.pid is the wrapper's process */
    assert_true(still_serving("all hostile cases"));
    double deadline = fx_now() + 2.0 * fx_scale();
    int now = fx_fd_count(srv.pid);
    while (now > fd_baseline + FD_MARGIN && fx_now() < deadline) {
        fx_sleep_ms(100);
        now = fx_fd_count(srv.pid);
    }
    if (getenv("HOSTILE_DEBUG"))
        fprintf(stderr, "DEBUG fds before %d, after %d\n", fd_baseline, now);
    FX_CHECK(now >= 0 && now <= fd_baseline + FD_MARGIN,
             "fanout (pid %d) has %d open fds after the hostile cases, %d before (margin %d)", (int)srv.pid, now,
             fd_baseline, FD_MARGIN);
}

/* SIGTERM: exit status 0 (under valgrind: no definite leaks). */
static void test_clean_exit(void **state)
{
    (void)state;
    assert_true(fx_stop(&srv));
}

int it_hostile(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_baseline),
        cmocka_unit_test(test_truncated_bodies),
        cmocka_unit_test(test_half_close_gets_rows),
        cmocka_unit_test(test_wrong_content_length),
        cmocka_unit_test(test_chunked),
        cmocka_unit_test(test_many_headers),
        cmocka_unit_test(test_huge_header),
        cmocka_unit_test(test_header_without_colon),
        cmocka_unit_test(test_long_uri),
        cmocka_unit_test(test_invalid_utf8),
        cmocka_unit_test(test_nul_in_strings),
        cmocka_unit_test(test_deep_nesting),
        cmocka_unit_test(test_body_of_spaces),
        cmocka_unit_test(test_pipelined_garbage),
        cmocka_unit_test(test_http09),
        cmocka_unit_test(test_unknown_method),
        cmocka_unit_test(test_unread_body_not_a_request),
        cmocka_unit_test(test_connect_reply_closes),
        cmocka_unit_test(test_slow_drip),
        cmocka_unit_test(test_no_fd_leak),
        cmocka_unit_test(test_clean_exit),
    };
    return cmocka_run_group_tests_name("hostile", tests, group_setup, group_teardown);
}
