/*
 * Lost connections: the superuser terminates every fanout backend. Batches sent afterwards get
 * 200 replies whose queries either succeed or fail with a per-query db_unavailable error (never a
 * crash, a hang or a 5xx), and within a bounded time fanout serves again on fresh backends.
 */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <libpq-fe.h>
#include <poll.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <netinet/in.h>
#include <unistd.h>

#include "tests/integration/groups.h"
#include "tests/integration/harness.h"

#define WORKERS 2
#define RECOVERY_S 10 /* times fx_scale() */
#define BATCH_QUERIES 4

static fx_server srv = {.pid = -1};

static int group_setup(void **state)
{
    static const char *const args[] = {"--workers", "2", NULL};
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

/* fanout's backend pids, as pg_stat_activity lists them; returns how many (at most max). */
static int fanout_backends(int *pids, int max)
{
    PGresult *res = fx_sql(true, "SELECT pid FROM pg_stat_activity WHERE application_name = 'fanout'", 0, NULL);
    int n = 0;
    if (res != NULL && PQresultStatus(res) == PGRES_TUPLES_OK)
        for (; n < PQntuples(res) && n < max; n++)
            pids[n] = atoi(PQgetvalue(res, n, 0));
    PQclear(res);
    return n;
}

static bool contains(const int *pids, int n, int pid)
{
    for (int i = 0; i < n; i++)
        if (pids[i] == pid)
            return true;
    return false;
}

static void test_backends_terminated(void **state)
{
    int old[16], now[16], nold = 0, batches = 0, unavailable = 0;
    const char *body = "{\"queries\":[{\"sql\":\"SELECT pg_backend_pid() AS pid\"},{\"sql\":\"SELECT pg_backend_pid() AS pid\"},"
                       "{\"sql\":\"SELECT pg_backend_pid() AS pid\"},{\"sql\":\"SELECT pg_backend_pid() AS pid\"}]}";
    double deadline = fx_now() + 10 * fx_scale();
    bool recovered = false;
    (void)state;

    /* Exactly ours: backends of an earlier group's fanout may take a moment to go away. */
    while ((nold = fanout_backends(old, 16)) != WORKERS && fx_now() < deadline)
        fx_sleep_ms(50);
    FX_CHECK(nold == WORKERS, "want %d fanout backends (application_name 'fanout'), found %d", WORKERS, nold);

    char *killed = fx_sql_value(true, "SELECT count(*) FILTER (WHERE pg_terminate_backend(pid)) FROM pg_stat_activity "
                                      "WHERE application_name = 'fanout'", 0, NULL);
    FX_CHECK(killed != NULL && atoi(killed) == WORKERS, "terminated %s backends, want %d", killed ? killed : "?", WORKERS);
    free(killed);
    /* Wait until the server has really ended them. */
    deadline = fx_now() + 10 * fx_scale();
    for (;;) {
        int n = fanout_backends(now, 16), still = 0;
        for (int i = 0; i < n; i++)
            still += contains(old, nold, now[i]);
        if (still == 0)
            break;
        FX_CHECK(fx_now() < deadline, "terminated backends still listed after 10 s");
        fx_sleep_ms(20);
    }

    deadline = fx_now() + RECOVERY_S * fx_scale();
    while (!recovered) {
        int status = 0, ok = 0;
        json_t *doc = fx_post_json(srv.port, body, &status);
        batches++;
        FX_CHECK(fx_alive(&srv), "fanout died after its connections were terminated");
        if (status != 200 || !json_is_object(doc))
            fx_print_json("reply", doc);
        FX_CHECK(status == 200, "batch %d after termination: status %d, want 200", batches, status);
        FX_EXPECT_LEN(doc, "results", BATCH_QUERIES);
        for (int i = 0; i < BATCH_QUERIES; i++) {
            char path[64];
            snprintf(path, sizeof(path), "results.%d.error", i);
            if (fx_at(doc, path) != NULL) {
                snprintf(path, sizeof(path), "results.%d.error.code", i);
                FX_EXPECT_STR(doc, path, "db_unavailable");
                snprintf(path, sizeof(path), "results.%d.error.message", i);
                FX_EXPECT_KIND(doc, path, "string");
                unavailable++;
                continue;
            }
            snprintf(path, sizeof(path), "results.%d.rows.0.0", i);
            FX_EXPECT_KIND(doc, path, "integer");
            int pid = (int)json_integer_value(fx_at(doc, path));
            FX_CHECK(!contains(old, nold, pid), "a query ran on terminated backend %d", pid);
            ok++;
        }
        json_decref(doc);
        recovered = ok == BATCH_QUERIES;
        if (!recovered) {
            FX_CHECK(fx_now() < deadline, "no fully successful batch within %d s of terminating the backends "
                                          "(%d batches, %d db_unavailable results)",
                     RECOVERY_S * fx_scale(), batches, unavailable);
            fx_sleep_ms(100);
        }
    }
    print_message("reconnect: served again after %d batch(es), %d db_unavailable result(s) on the way\n", batches,
                  unavailable);

    /* Fresh backends, as many as before, and ready again. */
    deadline = fx_now() + 10 * fx_scale();
    int n;
    while ((n = fanout_backends(now, 16)) != WORKERS && fx_now() < deadline)
        fx_sleep_ms(50);
    FX_CHECK(n == WORKERS, "%d fanout backends after recovery, want %d", n, WORKERS);
    for (int i = 0; i < n; i++)
        FX_CHECK(!contains(old, nold, now[i]), "backend %d survived termination?", now[i]);
    fx_response r;
    assert_true(fx_http(srv.port, "GET", "/readyz", NULL, NULL, 0, &r));
    assert_int_equal(r.status, 200);
    fx_response_free(&r);
}

/*
 * A loopback proxy to the test database's unix socket that cuts each connection right after the
 * server's second ReadyForQuery: the login's, then the first query's (fanout's type names). So
 * fanout's connect fails at the next step, preparing the session reset, every time.
 */
typedef struct cut_proxy {
    int listen_fd;
    int port;
    char server[108];  /* the server's unix socket path */
    atomic_int cut;    /* connections cut so far */
    atomic_bool stop;
    pthread_t thread;
} cut_proxy;

/* Relay one connection until the second ReadyForQuery has gone to the client; true if it got
 * there (the cut), false if either side hung up first. */
static bool relay_until_cut(int client, int server)
{
    unsigned char buf[8192], hdr[5];
    size_t hdr_len = 0, body_left = 0;
    int ready = 0;
    struct pollfd p[2] = {{.fd = client, .events = POLLIN}, {.fd = server, .events = POLLIN}};

    while (poll(p, 2, 5000) > 0) {
        if (p[0].revents) {
            ssize_t n = read(client, buf, sizeof(buf));
            if (n <= 0 || write(server, buf, (size_t)n) != n)
                return false;
        }
        if (!p[1].revents)
            continue;
        ssize_t n = read(server, buf, sizeof(buf)), i = 0;
        if (n <= 0)
            return false;
        /* Walk the server's messages (type byte, then a length that counts itself). */
        while (i < n && ready < 2) {
            if (body_left > 0) {
                size_t take = (size_t)(n - i) < body_left ? (size_t)(n - i) : body_left;
                body_left -= take;
                i += (ssize_t)take;
            } else {
                hdr[hdr_len++] = buf[i++];
                if (hdr_len < 5)
                    continue;
                body_left = ((size_t)hdr[1] << 24 | (size_t)hdr[2] << 16 | (size_t)hdr[3] << 8 | hdr[4]) - 4;
                hdr_len = 0;
            }
            if (body_left == 0 && hdr_len == 0 && hdr[0] == 'Z')
                ready++;
        }
        if (write(client, buf, (size_t)i) != i)
            return false;
        if (ready == 2)
            return true;
    }
    return false;
}

static void *cut_proxy_main(void *arg)
{
    cut_proxy *px = arg;
    struct pollfd l = {.fd = px->listen_fd, .events = POLLIN};
    while (!atomic_load(&px->stop)) {
        if (poll(&l, 1, 50) <= 0)
            continue;
        int client = accept(px->listen_fd, NULL, NULL);
        if (client < 0)
            continue;
        struct sockaddr_un sa = {.sun_family = AF_UNIX};
        snprintf(sa.sun_path, sizeof(sa.sun_path), "%s", px->server);
        int server = socket(AF_UNIX, SOCK_STREAM, 0);
        if (server >= 0 && connect(server, (struct sockaddr *)&sa, sizeof(sa)) == 0 &&
            relay_until_cut(client, server))
            atomic_fetch_add(&px->cut, 1);
        if (server >= 0)
            close(server);
        close(client);
    }
    return NULL;
}

/* Listen on a loopback port for connections to the server whose unix socket conninfo names. */
static bool cut_proxy_start(cut_proxy *px, const char *conninfo)
{
    PQconninfoOption *opts = PQconninfoParse(conninfo, NULL);
    const char *host = NULL, *port = NULL;
    for (PQconninfoOption *o = opts; o && o->keyword; o++) {
        if (strcmp(o->keyword, "host") == 0)
            host = o->val;
        else if (strcmp(o->keyword, "port") == 0)
            port = o->val;
    }
    bool unix_socket = host && host[0] == '/';
    if (unix_socket)
        snprintf(px->server, sizeof(px->server), "%s/.s.PGSQL.%s", host, port && *port ? port : "5432");
    PQconninfoFree(opts);
    if (!unix_socket)
        return false;
    struct sockaddr_in sa = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    socklen_t len = sizeof(sa);
    px->listen_fd = socket(AF_INET, SOCK_STREAM, 0);
    if (px->listen_fd < 0 || bind(px->listen_fd, (struct sockaddr *)&sa, sizeof(sa)) != 0 ||
        listen(px->listen_fd, 8) != 0 || getsockname(px->listen_fd, (struct sockaddr *)&sa, &len) != 0)
        return false;
    px->port = ntohs(sa.sin_port);
    atomic_init(&px->cut, 0);
    atomic_init(&px->stop, false);
    return pthread_create(&px->thread, NULL, cut_proxy_main, px) == 0;
}

static void cut_proxy_stop(cut_proxy *px)
{
    atomic_store(&px->stop, true);
    pthread_join(px->thread, NULL);
    close(px->listen_fd);
}

/* The connection ends after the type names were loaded, before the session reset's statements
 * are prepared: fanout reports the failed connect and tries again, again and again, without
 * crashing (db_conn_open cleared the type query's result twice on that path) or leaking. */
static void test_connection_cut_while_connecting(void **state)
{
    (void)state;
    const char *conninfo = getenv("FANOUT_TEST_DATABASE");
    cut_proxy px = {.listen_fd = -1};
    if (!conninfo || !cut_proxy_start(&px, conninfo)) {
        if (px.listen_fd >= 0)
            close(px.listen_fd);
        skip(); /* needs the test database on a unix socket */
    }
    char database[1024];
    snprintf(database, sizeof(database), "%s host=127.0.0.1 port=%d sslmode=disable gssencmode=disable", conninfo,
             px.port);
    static const char *const args[] = {"--workers", "1", "--reconnect-backoff-ms", "5", "--reconnect-backoff-max-ms",
                                       "20", NULL};
    const fx_opts opts = {.args = args, .database = database, .not_ready = true};
    fx_server cut = {.pid = -1};
    bool started = fx_start(&cut, &opts);
    double deadline = fx_now() + 10 * fx_scale();
    while (started && atomic_load(&px.cut) < 5 && fx_alive(&cut) && fx_now() < deadline)
        fx_sleep_ms(10);
    int cuts = atomic_load(&px.cut);
    bool alive = started && fx_alive(&cut);
    cut_proxy_stop(&px);
    print_message("cut while connecting: %d connections cut after the type names\n", cuts);
    FX_CHECK(started, "fanout did not start");
    FX_CHECK(cuts >= 5, "only %d connections reached the cut in 10 s", cuts);
    FX_CHECK(alive, "fanout died after a connection was cut while it connected");
    FX_CHECK(fx_log_count(&cut, "preparing the session reset") >= 1, "the failed connect was not reported");
    fx_response r;
    assert_true(fx_http(cut.port, "GET", "/readyz", NULL, NULL, 0, &r));
    FX_CHECK(r.status == 503, "/readyz %d without a database connection, want 503", r.status);
    fx_response_free(&r);
    assert_true(fx_stop(&cut));
}

/* One batch sent to fanout on another thread (the test terminates its backend meanwhile). */
typedef struct posted {
    int port;
    char *body;
    int status;
    json_t *doc;
} posted;

static void *post_main(void *arg)
{
    posted *p = arg;
    p->doc = fx_post_json(p->port, p->body, &p->status);
    return NULL;
}

#define SEND_CUT_SMALL 62                /* then the big one: 64 queries, a full pipeline */
#define SEND_CUT_BIG (2 * 1024 * 1024)   /* more than a socket buffer holds */

/* A backend terminated while its worker is idle sends a FATAL, then closes. The check before the
 * next job must take the FATAL as the end, though the close may not have been read yet: the job
 * then runs on a new connection, never db_unavailable. It used to read the FATAL as a notice and
 * send the job onto the closing connection (about 3 times in 5). Five rounds. */
static void test_backend_terminated_while_idle(void **state)
{
    (void)state;
    static const char *const args[] = {"--workers", "1", "--reconnect-backoff-ms", "5", NULL};
    const fx_opts opts = {.args = args};
    fx_server one = {.pid = -1};
    assert_true(fx_start(&one, &opts));
    const char *body = "{\"queries\":[{\"sql\":\"SELECT pg_backend_pid()\"}]}";

    for (int round = 0; round < 5; round++) {
        int status = 0;
        json_t *doc = fx_post_json(one.port, body, &status);
        FX_CHECK(status == 200 && json_is_integer(fx_at(doc, "results.0.rows.0.0")),
                 "round %d: no pid (status %d)", round, status);
        char pid[32];
        snprintf(pid, sizeof(pid), "%lld", (long long)json_integer_value(fx_at(doc, "results.0.rows.0.0")));
        json_decref(doc);
        const char *params[] = {pid};
        char *killed = fx_sql_value(true, "SELECT pg_terminate_backend($1::int)", 1, params);
        FX_CHECK(killed && strcmp(killed, "t") == 0, "round %d: could not terminate backend %s", round, pid);
        free(killed);
        /* Until the server has ended it: its FATAL and its close are on their way. */
        double deadline = fx_now() + 10 * fx_scale();
        for (char *left = NULL;; fx_sleep_ms(5)) {
            left = fx_sql_value(true, "SELECT count(*) FROM pg_stat_activity WHERE pid = $1::int", 1, params);
            bool gone = left && strcmp(left, "0") == 0;
            free(left);
            if (gone)
                break;
            FX_CHECK(fx_now() < deadline, "round %d: backend %s still there after 10 s", round, pid);
        }
        doc = fx_post_json(one.port, body, &status);
        if (status != 200 || fx_at(doc, "results.0.error") != NULL)
            fx_print_json("the batch after the termination", doc);
        FX_CHECK(status == 200, "round %d: status %d", round, status);
        FX_EXPECT_KIND(doc, "results.0.rows.0.0", "integer");
        FX_CHECK(json_integer_value(fx_at(doc, "results.0.rows.0.0")) != atoll(pid),
                 "round %d: ran on the terminated backend", round);
        json_decref(doc);
    }
    FX_CHECK(fx_log_count(&one, "found dead before use") + fx_log_count(&one, "idle database connection lost") >= 5,
             "the dead connections were not noticed before use");
    assert_true(fx_stop(&one));
}

/* The connection dies while a pipeline is still being written: its first statement sleeps, so the
 * server stops reading, and the last one carries a parameter larger than the socket's buffer, so
 * libpq waits to send it, finds the connection closed when the backend is terminated, and the
 * last send fails. Every query is db_unavailable, and fanout serves the next batch on a new
 * connection. The pipeline used to count that last query as sent twice and read one past its
 * list (make asan: "index 64 out of bounds"). */
static void test_connection_lost_while_sending(void **state)
{
    (void)state;
    static const char *const args[] = {"--workers", "1", "--max-body-bytes", "4194304", "--reconnect-backoff-ms", "5",
                                       NULL};
    const fx_opts opts = {.args = args};
    fx_server one = {.pid = -1};
    assert_true(fx_start(&one, &opts));

    size_t cap = SEND_CUT_BIG + 8192;
    char *body = malloc(cap);
    assert_non_null(body);
    size_t len = (size_t)snprintf(body, cap, "{\"queries\":[{\"sql\":\"SELECT pg_sleep(30) AS cut_while_sending\"}");
    for (int i = 0; i < SEND_CUT_SMALL; i++)
        len += (size_t)snprintf(body + len, cap - len, ",{\"sql\":\"SELECT $1::text\",\"params\":[\"x\"]}");
    len += (size_t)snprintf(body + len, cap - len, ",{\"sql\":\"SELECT length($1::text)\",\"params\":[\"");
    memset(body + len, 'z', SEND_CUT_BIG);
    len += SEND_CUT_BIG;
    snprintf(body + len, cap - len, "\"]}]}");

    posted post = {.port = one.port, .body = body};
    pthread_t thread;
    assert_int_equal(pthread_create(&thread, NULL, post_main, &post), 0);
    /* The sleep has started: the server reads no more, and libpq is left writing. */
    char *pid = NULL;
    double deadline = fx_now() + 10 * fx_scale();
    while (!pid && fx_now() < deadline) {
        pid = fx_sql_value(true, "SELECT pid FROM pg_stat_activity WHERE state = 'active' AND "
                                 "query = 'SELECT pg_sleep(30) AS cut_while_sending'", 0, NULL);
        if (!pid)
            fx_sleep_ms(10);
    }
    if (pid) {
        fx_sleep_ms(100);
        const char *params[] = {pid};
        char *killed = fx_sql_value(true, "SELECT pg_terminate_backend($1::int)", 1, params);
        FX_CHECK(killed && strcmp(killed, "t") == 0, "could not terminate backend %s", pid);
        free(killed);
    }
    pthread_join(thread, NULL);
    free(body);
    FX_CHECK(pid != NULL, "the batch's sleep never showed in pg_stat_activity");
    free(pid);
    FX_CHECK(fx_alive(&one), "fanout died when the connection was lost while it sent a pipeline");
    if (post.status != 200)
        fx_print_json("reply", post.doc);
    FX_CHECK(post.status == 200, "status %d, want 200", post.status);
    FX_EXPECT_LEN(post.doc, "results", SEND_CUT_SMALL + 2);
    for (int i = 0; i < SEND_CUT_SMALL + 2; i++) {
        char path[64];
        snprintf(path, sizeof(path), "results.%d.error.code", i);
        FX_EXPECT_STR(post.doc, path, "db_unavailable");
    }
    json_decref(post.doc);
    FX_CHECK(fx_log_count(&one, "database connection lost") >= 1, "the lost connection was not reported");

    /* And it goes on, on a new connection. */
    bool served = false;
    deadline = fx_now() + RECOVERY_S * fx_scale();
    while (!served && fx_now() < deadline) {
        int status = 0;
        json_t *doc = fx_post_json(one.port, "{\"queries\":[{\"sql\":\"SELECT 1\"}]}", &status);
        served = status == 200 && json_is_integer(fx_at(doc, "results.0.rows.0.0"));
        json_decref(doc);
        if (!served)
            fx_sleep_ms(20);
    }
    FX_CHECK(served, "no successful batch within %d s of losing the connection", RECOVERY_S * fx_scale());
    assert_true(fx_stop(&one));
}

static void test_clean_exit(void **state)
{
    (void)state;
    assert_true(fx_stop(&srv));
}

int it_reconnect(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_backends_terminated),
        cmocka_unit_test(test_backend_terminated_while_idle),
        cmocka_unit_test(test_connection_cut_while_connecting),
        cmocka_unit_test(test_connection_lost_while_sending),
        cmocka_unit_test(test_clean_exit),
    };
    return cmocka_run_group_tests_name("reconnect", tests, group_setup, group_teardown);
}
