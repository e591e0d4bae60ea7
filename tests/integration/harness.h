/*
 * harness: what every integration test needs to drive the real fanout binary from the outside.
 *
 * Black-box only: nothing here links or includes fanout's own code. The suite talks to the binary
 * the way a client does (HTTP over loopback) and looks at the database the way an operator does
 * (libpq, as the `fanout` role or as the superuser).
 *
 * - Processes: fx_start forks [FANOUT_WRAPPER...] FANOUT_BIN on a free loopback port and waits until
 *   it answers; fx_stop sends SIGTERM and insists on exit status 0 (under valgrind, its
 *   --error-exitcode turns a definite leak into a failing stop). Each server's output goes to a log
 *   file under /tmp whose tail is printed whenever something about that server fails.
 * - HTTP: a small blocking HTTP/1.1 client over plain sockets, enough for fanout's replies
 *   (Content-Length, chunked, or up to EOF), with keep-alive connections for pipelining tests.
 * - JSON: paths into jansson documents ("results.0.error.code") and expectations that print the
 *   whole reply when they fail.
 * - SQL: short-lived libpq connections with the session settings fanout pins, for set-up and for
 *   comparing fanout's answers with what libpq itself returns.
 *
 * Single-threaded: everything runs on the test thread. Every wait is bounded; all limits grow
 * tenfold when FANOUT_WRAPPER is set (valgrind is slow). Functions returning bool print their
 * reason (and the server log tail where useful) before returning false; FX_* macros fail the
 * current cmocka test.
 */
#ifndef FANOUT_TESTS_HARNESS_H
#define FANOUT_TESTS_HARNESS_H

#include <stdbool.h>
#include <stddef.h>
#include <sys/types.h>

#include <jansson.h>
#include <libpq-fe.h>

#define FX_MUSTCHECK __attribute__((warn_unused_result))

/* ---- time ---- */

/* 1 normally, 10 when FANOUT_WRAPPER is set: every timeout is multiplied by it. */
int fx_scale(void);
/* True when the binary runs under a wrapper (valgrind): timing assertions are widened. */
bool fx_wrapped(void);
/* Seconds on the monotonic clock. */
double fx_now(void);
void fx_sleep_ms(int ms);

/* ---- the fanout process ---- */

typedef struct fx_opts {
    const char *const *args; /* extra arguments, NULL-terminated (e.g. "--workers", "16"); may be NULL */
    const char *database;    /* --database value; NULL: $FANOUT_TEST_DATABASE */
    bool not_ready;          /* wait for /healthz 200 instead of /readyz 200 (database unreachable) */
} fx_opts;

typedef struct fx_server {
    pid_t pid;     /* the child (the wrapper when there is one); -1 when not running */
    int port;      /* its loopback port */
    char log[64];  /* file holding its stdout and stderr; removed after a clean stop */
} fx_server;

/* Start fanout with --listen 127.0.0.1:PORT --database DB plus opts->args and wait until it is
 * ready. On failure prints why with the log tail, leaves no process behind and returns false. */
bool fx_start(fx_server *s, const fx_opts *opts) FX_MUSTCHECK;
/* SIGTERM, wait; true only when it exited with status 0 in time (else SIGKILL, log tail). */
bool fx_stop(fx_server *s) FX_MUSTCHECK;
/* For teardown after a failure: SIGKILL if still running, keep the log. */
void fx_kill(fx_server *s);
/* True while the process has not exited (reaps it when it has, printing how it ended). */
bool fx_alive(fx_server *s);
/* Lines of the server's log holding needle; -1 when the log cannot be read. */
int fx_log_count(const fx_server *s, const char *needle);
/* Wait up to 1 s for a line of the server's log holding needle (the log is written after the
 * reply); copies the last such line into line. False when none came. */
bool fx_log_line(const fx_server *s, const char *needle, char *line, size_t len);

/* Open file descriptors of pid (from /proc); -1 when it cannot be read. */
int fx_fd_count(pid_t pid);

/* Run [wrapper...] FANOUT_BIN args... to completion (bounded) with a scrubbed environment.
 * *out and *err receive its stdout and stderr (caller frees). False on timeout or spawn failure. */
bool fx_run_binary(const char *const *args, int *exit_code, char **out, char **err) FX_MUSTCHECK;

/* ---- HTTP ---- */

typedef struct fx_response {
    int status;      /* status code, e.g. 200 */
    char *head;      /* header lines, each NUL-terminated in place (see fx_header) */
    size_t head_len; /* bytes in head */
    char *body;      /* the body, NUL-terminated (chunked already decoded) */
    size_t body_len; /* bytes in body, without the NUL */
} fx_response;

/* One request on a fresh connection with Connection: close; reads the reply to EOF.
 * headers: extra header lines, each ending in "\r\n", or NULL. body NULL: no body and no
 * Content-Length. Fills *r (free with fx_response_free) and returns true on a parsed reply. */
bool fx_http(int port, const char *method, const char *path, const char *headers, const char *body,
             size_t body_len, fx_response *r) FX_MUSTCHECK;
/* The value of header `name` (case-insensitive) in a raw head block [head, head+len), lines
 * separated by CRLF, surrounding blanks trimmed; at most cap-1 bytes into buf. False when absent. */
bool fx_raw_header(const char *head, size_t len, const char *name, char *buf, size_t cap);
/* The value of a response header (case-insensitive name), or NULL. Points into r. */
const char *fx_header(const fx_response *r, const char *name);
void fx_response_free(fx_response *r);

/* A client connection kept open across requests (keep-alive, pipelining, raw bytes). */
typedef struct fx_conn {
    int fd;     /* the socket; -1 when closed */
    char *buf;  /* bytes received and not yet consumed by fx_conn_read */
    size_t len; /* bytes in buf */
    size_t cap; /* allocated size of buf */
} fx_conn;

bool fx_conn_open(fx_conn *c, int port) FX_MUSTCHECK;
/* Send bytes as they are (a peer that closed early is not an error: read its reply next). */
bool fx_conn_send(fx_conn *c, const char *data, size_t len) FX_MUSTCHECK;
/* Open a connection and send POST /v1/batch with body (keep-alive), without waiting for the reply:
 * for tests that act while the batch runs (hang up, signal, stop the database). */
bool fx_conn_post_batch(fx_conn *c, int port, const char *body) FX_MUSTCHECK;
/* Read exactly one response (head: the request was HEAD, so no body follows). */
bool fx_conn_read(fx_conn *c, bool head, fx_response *r) FX_MUSTCHECK;
void fx_conn_close(fx_conn *c);

/* POST /v1/batch with Content-Type application/json. Returns the parsed reply (caller
 * json_decref) or NULL when it is not JSON (the raw reply is printed); *status gets the code
 * (0 when no reply came). */
json_t *fx_post_json(int port, const char *body, int *status);

/* The value of one sample line of the server's /metrics (series with its labels), or -1. */
double fx_metric(int port, const char *series);

/* POST /v1/batch and fail the test unless the reply is 200 with a JSON object; the reply is
 * returned (caller json_decref). The J form takes over req and sends its compact text. */
#define FX_BATCH(port, body) fx_batch_((port), (body), __FILE__, __LINE__)
#define FX_BATCHJ(port, req) fx_batchj_((port), (req), __FILE__, __LINE__)
json_t *fx_batch_(int port, const char *body, const char *file, int line);
json_t *fx_batchj_(int port, json_t *req, const char *file, int line);

/* ---- JSON ---- */

/* The node at a dotted path ("results.0.rows.1.2"; numbers index arrays), or NULL. */
json_t *fx_at(json_t *doc, const char *path);
/* Print a document compactly (cut at a few KiB) to help a failure report. */
void fx_print_json(const char *label, json_t *doc);

/* Expectations on doc at path: print what was wanted, what was there and the document, then fail
 * the current test. */
#define FX_EXPECT_STR(doc, path, want) fx_expect_str_((doc), (path), (want), __FILE__, __LINE__)
#define FX_EXPECT_INT(doc, path, want) fx_expect_int_((doc), (path), (want), __FILE__, __LINE__)
#define FX_EXPECT_BOOL(doc, path, want) fx_expect_bool_((doc), (path), (want), __FILE__, __LINE__)
#define FX_EXPECT_NULL(doc, path) fx_expect_kind_((doc), (path), "null", __FILE__, __LINE__)
#define FX_EXPECT_ABSENT(doc, path) fx_expect_kind_((doc), (path), "absent", __FILE__, __LINE__)
#define FX_EXPECT_KIND(doc, path, kind) fx_expect_kind_((doc), (path), (kind), __FILE__, __LINE__)
#define FX_EXPECT_LEN(doc, path, n) fx_expect_len_((doc), (path), (n), __FILE__, __LINE__)
#define FX_EXPECT_JSON(doc, path, want) fx_expect_json_((doc), (path), (want), __FILE__, __LINE__)
void fx_expect_str_(json_t *doc, const char *path, const char *want, const char *file, int line);
void fx_expect_int_(json_t *doc, const char *path, long long want, const char *file, int line);
void fx_expect_bool_(json_t *doc, const char *path, bool want, const char *file, int line);
/* kind: "absent", "null", "string", "number", "integer", "object", "array", "boolean", "present" */
void fx_expect_kind_(json_t *doc, const char *path, const char *kind, const char *file, int line);
void fx_expect_len_(json_t *doc, const char *path, size_t n, const char *file, int line);
/* json_equal, except that an integer and a real of the same value are equal. */
void fx_expect_json_(json_t *doc, const char *path, json_t *want, const char *file, int line);

/* Fail the current test unless cond holds, printing the condition and a printf-style reason.
 * (Needs cmocka.h included first, as every test file does.) */
#define FX_CHECK(cond, ...)                                                                        \
    do {                                                                                           \
        if (!(cond)) {                                                                             \
            print_error("%s:%d: check failed: %s\n  ", __FILE__, __LINE__, #cond);                 \
            print_error(__VA_ARGS__);                                                              \
            print_error("\n");                                                                     \
            _fail(__FILE__, __LINE__);                                                             \
        }                                                                                          \
    } while (0)

/* ---- SQL (libpq, pinned like fanout: UTC, ISO dates, postgres intervals, hex bytea) ---- */

/* Run sql as the superuser (admin) or as the fanout role, with text parameters. Returns the
 * result whatever its status (caller PQclear), or NULL when the connection failed (printed). */
PGresult *fx_sql(bool admin, const char *sql, int nparams, const char *const *params);
/* Run sql; true when it succeeded (the error is printed otherwise). */
bool fx_sql_ok(bool admin, const char *sql) FX_MUSTCHECK;
/* The first value of the first row as a new string (caller frees), or NULL (no row, NULL, error). */
char *fx_sql_value(bool admin, const char *sql, int nparams, const char *const *params);

#endif
