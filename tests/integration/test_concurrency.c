/*
 * Concurrency is real: with 16 workers, 16 queries that each sleep 0.3 s run on 16 different
 * backends at once, so the batch takes far less than the 4.8 s they would take one after another;
 * and the next batch uses the same 16 backends (connections are pooled, not opened per query).
 * Quick statements are held to quick_workers workers at once, and never stuck behind one of
 * them that turned out slow.
 */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "tests/integration/groups.h"
#include "tests/integration/harness.h"

#define WORKERS 16
#define SLEEP_S 0.3
#define SERIAL_S (WORKERS * SLEEP_S)

static fx_server srv = {.pid = -1};

static int group_setup(void **state)
{
    static const char *const args[] = {"--workers", "16", NULL};
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

static int compare_ints(const void *a, const void *b)
{
    int x = *(const int *)a, y = *(const int *)b;
    return (x > y) - (x < y);
}

/* Run the 16-sleep batch; fills pids (sorted) and returns the client-side wall time in seconds. */
static double sleep_batch(int pids[WORKERS])
{
    char body[2048];
    size_t len = (size_t)snprintf(body, sizeof(body), "{\"queries\":[");
    for (int i = 0; i < WORKERS; i++)
        len += (size_t)snprintf(body + len, sizeof(body) - len,
                                "%s{\"id\":\"s%d\",\"sql\":\"SELECT pg_backend_pid() AS pid, pg_sleep(%.1f)\"}",
                                i ? "," : "", i, SLEEP_S);
    snprintf(body + len, sizeof(body) - len, "]}");

    double start = fx_now();
    json_t *doc = FX_BATCH(srv.port, body);
    double elapsed = fx_now() - start;

    FX_EXPECT_LEN(doc, "results", WORKERS);
    for (int i = 0; i < WORKERS; i++) {
        char path[64];
        snprintf(path, sizeof(path), "results.%d.rows.0.0", i);
        FX_EXPECT_KIND(doc, path, "integer");
        pids[i] = (int)json_integer_value(fx_at(doc, path));
    }
    json_decref(doc);
    qsort(pids, WORKERS, sizeof(pids[0]), compare_ints);
    return elapsed;
}

/* Wait until all 16 workers have their backend and are done connecting (which includes
 * preparing fanout's own statements), so the first batch is not racing connects: a worker still
 * connecting is not idle, and the batch's sleeps would queue behind each other. */
static void wait_for_backends(int want)
{
    double deadline = fx_now() + 10 * fx_scale();
    char *n = NULL;
    double up = 0;
    for (;;) {
        n = fx_sql_value(true, "SELECT count(*) FROM pg_stat_activity WHERE application_name = 'fanout'", 0, NULL);
        up = fx_metric(srv.port, "fanout_db_connections{state=\"connected\"}");
        if ((n != NULL && atoi(n) == want && up == want) || fx_now() >= deadline)
            break;
        free(n);
        fx_sleep_ms(50);
    }
    FX_CHECK(n != NULL && atoi(n) == want, "want %d fanout backends in pg_stat_activity, have %s", want, n ? n : "?");
    FX_CHECK(up == want, "want %d connected workers, /metrics says %.0f", want, up);
    free(n);
}

static void test_sixteen_sleeps_run_at_once(void **state)
{
    int first[WORKERS], second[WORKERS];
    double limit = fx_wrapped() ? SERIAL_S : SERIAL_S / 2; /* valgrind: only "faster than serial" */
    (void)state;

    wait_for_backends(WORKERS);
    double t1 = sleep_batch(first);
    double t2 = sleep_batch(second);
    print_message("concurrency: 16 x pg_sleep(0.3) on 16 workers took %.3f s, then %.3f s "
                  "(serial %.1f s, limit %.1f s%s)\n",
                  t1, t2, SERIAL_S, limit, fx_wrapped() ? ", widened under a wrapper" : "");

    for (int i = 1; i < WORKERS; i++)
        FX_CHECK(first[i] != first[i - 1], "backend pid %d served two queries of one batch: not 16 in parallel",
                 first[i]);
    FX_CHECK(t1 < limit, "the batch took %.3f s, want < %.1f s", t1, limit);
    FX_CHECK(t2 < limit, "the second batch took %.3f s, want < %.1f s", t2, limit);
    FX_CHECK(t1 >= SLEEP_S, "the batch took %.3f s, less than one pg_sleep(%.1f): did it sleep?", t1, SLEEP_S);
    for (int i = 0; i < WORKERS; i++)
        FX_CHECK(first[i] == second[i], "the second batch ran on other backends (pid %d vs %d): connections not pooled",
                 first[i], second[i]);

    /* The same pids are fanout's live connections. */
    PGresult *res = fx_sql(true, "SELECT pid FROM pg_stat_activity WHERE application_name = 'fanout' ORDER BY pid", 0, NULL);
    assert_non_null(res);
    FX_CHECK(PQntuples(res) == WORKERS, "%d fanout backends, want %d", PQntuples(res), WORKERS);
    int live[WORKERS];
    for (int i = 0; i < WORKERS; i++)
        live[i] = atoi(PQgetvalue(res, i, 0));
    PQclear(res);
    qsort(live, WORKERS, sizeof(live[0]), compare_ints);
    for (int i = 0; i < WORKERS; i++)
        FX_CHECK(first[i] == live[i], "pid %d of the batch is not one of fanout's backends", first[i]);
}

/* SIGTERM while a batch runs: the batch still gets its full reply, then fanout exits with 0. */
static void test_sigterm_lets_running_batch_finish(void **state)
{
    const char *body = "{\"queries\":[{\"sql\":\"SELECT pg_sleep(0.5), 1 AS one\"},{\"sql\":\"SELECT pg_sleep(0.5), 2 AS two\"}]}";
    char req[512];
    int n = snprintf(req, sizeof(req),
                     "POST /v1/batch HTTP/1.1\r\nHost: t\r\nContent-Type: application/json\r\n"
                     "Connection: close\r\nContent-Length: %zu\r\n\r\n%s",
                     strlen(body), body);
    fx_conn c;
    fx_response r;
    (void)state;

    assert_true(fx_conn_open(&c, srv.port));
    assert_true(fx_conn_send(&c, req, (size_t)n));
    fx_sleep_ms(150 * fx_scale()); /* the queries are running */
    bool stopped = fx_stop(&srv);  /* the reply waits in our socket meanwhile */
    bool replied = fx_conn_read(&c, false, &r);
    fx_conn_close(&c);
    FX_CHECK(stopped, "fanout did not exit cleanly on SIGTERM with a batch in flight");
    FX_CHECK(replied, "the batch in flight at SIGTERM got no reply: the connection closed empty");
    json_t *doc = json_loadb(r.body, r.body_len, 0, NULL);
    FX_CHECK(r.status == 200, "in-flight batch at SIGTERM: status %d %s", r.status, r.body);
    FX_EXPECT_INT(doc, "results.0.rows.0.1", 1);
    FX_EXPECT_INT(doc, "results.1.rows.0.1", 2);
    json_decref(doc);
    fx_response_free(&r);
}

#define PID_SQL "SELECT pg_backend_pid()"
#define CLIENTS 8
#define PER_CLIENT 15

/* A client thread: PER_CLIENT single-query batches, each reply's backend pid into pids. */
typedef struct pid_client {
    int port;
    int pids[PER_CLIENT];
    int failed; /* replies that were not 200 with a pid */
} pid_client;

static void *pid_client_main(void *arg)
{
    pid_client *c = arg;
    static const char body[] = "{\"queries\":[{\"sql\":\"" PID_SQL "\"}]}";
    static const char hdr[] = "Content-Type: application/json\r\n";
    for (int i = 0; i < PER_CLIENT; i++) {
        fx_response r;
        c->pids[i] = 0;
        if (!fx_http(c->port, "POST", "/v1/batch", hdr, body, sizeof(body) - 1, &r)) {
            c->failed++;
            continue;
        }
        json_t *doc = r.status == 200 ? json_loadb(r.body, r.body_len, 0, NULL) : NULL;
        json_t *pid = doc ? fx_at(doc, "results.0.rows.0.0") : NULL;
        if (json_is_integer(pid))
            c->pids[i] = (int)json_integer_value(pid);
        else
            c->failed++;
        json_decref(doc);
        fx_response_free(&r);
    }
    return NULL;
}

/* Start fanout with 8 workers and --quick-workers n, learn that PID_SQL is quick, then have 8
 * clients send 15 batches each at once: how many backends served them, and how many batches
 * the busiest one (*top)? */
static int backends_serving_quick(const char *n, int *top)
{
    const char *const args[] = {"--workers", "8", "--quick-workers", n, NULL};
    const fx_opts opts = {.args = args};
    fx_server s = {.pid = -1};
    pid_client c[CLIENTS];
    pthread_t t[CLIENTS];
    int seen[CLIENTS * PER_CLIENT], count[CLIENTS * PER_CLIENT], nseen = 0, failed = 0;

    assert_true(fx_start(&s, &opts));
    /* Every worker connected: one that finishes connecting lands on top of the idle stack and
     * would take over from the warm one (harmless, but not what this measures). */
    double deadline = fx_now() + 10 * fx_scale();
    while (fx_metric(s.port, "fanout_db_connections{state=\"connected\"}") < 8 &&
           fx_now() < deadline)
        fx_sleep_ms(20);
    for (int i = 0; i < 5; i++) /* measured: quick from now on */
        json_decref(FX_BATCH(s.port, "{\"queries\":[{\"sql\":\"" PID_SQL "\"}]}"));
    for (int i = 0; i < CLIENTS; i++) {
        c[i] = (pid_client){.port = s.port};
        assert_int_equal(pthread_create(&t[i], NULL, pid_client_main, &c[i]), 0);
    }
    for (int i = 0; i < CLIENTS; i++) {
        pthread_join(t[i], NULL);
        failed += c[i].failed;
        for (int j = 0; j < PER_CLIENT && c[i].pids[j]; j++) {
            int k = 0;
            while (k < nseen && seen[k] != c[i].pids[j])
                k++;
            if (k == nseen) {
                seen[nseen++] = c[i].pids[j];
                count[k] = 0;
            }
            count[k]++;
        }
    }
    *top = 0;
    for (int k = 0; k < nseen; k++)
        *top = count[k] > *top ? count[k] : *top;
    FX_CHECK(fx_stop(&s), "fanout did not stop cleanly");
    FX_CHECK(failed == 0, "%d of %d batches failed", failed, CLIENTS * PER_CLIENT);
    return nseen;
}

static void test_quick_statements_keep_to_quick_workers(void **state)
{
    (void)state;
    int top_limited, top_free;
    int limited = backends_serving_quick("1", &top_limited);
    int free_run = backends_serving_quick("8", &top_free); /* as many as workers: no limit */
    print_message("concurrency: %d clients x %d quick batches ran on %d backends (the busiest "
                  "ran %d) with --quick-workers 1, on %d (the busiest %d) without a limit\n",
                  CLIENTS, PER_CLIENT, limited, top_limited, free_run, top_free);
    FX_CHECK(free_run >= 3, "without a limit only %d backends served 8 clients at once: the "
             "clients did not overlap, so the check below shows nothing", free_run);
    /* One worker runs them; another only now and then, when a scheduling stall of the host
     * made the first look stale (25 ms). */
    if (!fx_wrapped())
        FX_CHECK(top_limited >= CLIENTS * PER_CLIENT * 6 / 10,
                 "--quick-workers 1: the busiest of %d backends ran only %d of %d batches",
                 limited, top_limited, CLIENTS * PER_CLIENT);
}

/* A client thread posting one batch and keeping its reply. */
typedef struct one_post {
    int port;
    const char *body;
    int status;
    atomic_bool done;
} one_post;

static void *one_post_main(void *arg)
{
    one_post *p = arg;
    json_decref(fx_post_json(p->port, p->body, &p->status));
    atomic_store(&p->done, true);
    return NULL;
}

/* --quick-workers 1: a quick statement that blocks on a lock does not hold up the next one. */
static void test_quick_job_not_stuck_behind_a_blocked_one(void **state)
{
    static const char *const args[] = {"--workers", "4", "--quick-workers", "1", NULL};
    const fx_opts opts = {.args = args};
    fx_server s = {.pid = -1};
    char body[256];
    (void)state;

    assert_true(fx_start(&s, &opts));
    for (int i = 1; i <= 5; i++) { /* measured: quick */
        snprintf(body, sizeof(body),
                 "{\"queries\":[{\"sql\":\"SELECT pg_advisory_xact_lock($1)\",\"params\":[%d]}]}",
                 i);
        json_decref(FX_BATCH(s.port, body));
    }
    PGconn *admin = PQconnectdb(getenv("FANOUT_TEST_ADMIN"));
    assert_int_equal(PQstatus(admin), CONNECTION_OK);
    PGresult *res = PQexec(admin, "SELECT pg_advisory_lock(4242)");
    assert_int_equal(PQresultStatus(res), PGRES_TUPLES_OK);
    PQclear(res);

    one_post blocked = {.port = s.port,
                        .body = "{\"timeout_ms\":60000,\"queries\":[{\"sql\":"
                                "\"SELECT pg_advisory_xact_lock($1)\",\"params\":[4242]}]}"};
    atomic_init(&blocked.done, false);
    pthread_t t;
    assert_int_equal(pthread_create(&t, NULL, one_post_main, &blocked), 0);
    fx_sleep_ms(300 * fx_scale()); /* it runs, and waits for the lock */
    double start = fx_now();
    json_t *doc = FX_BATCH(s.port, "{\"queries\":[{\"sql\":\"SELECT pg_advisory_xact_lock($1)\","
                                   "\"params\":[7]}]}");
    double took = fx_now() - start;
    bool still_blocked = !atomic_load(&blocked.done);
    json_decref(doc);
    fx_sleep_ms(100);
    res = PQexec(admin, "SELECT pg_advisory_unlock(4242)");
    PQclear(res);
    PQfinish(admin);
    pthread_join(t, NULL);
    print_message("concurrency: a quick batch behind a blocked one took %.3f s\n", took);
    FX_CHECK(still_blocked, "the blocked batch ended before the lock was released (status %d)",
             blocked.status);
    FX_CHECK(took < 3.0 * fx_scale(), "the quick batch took %.3f s: it waited for the blocked one",
             took);
    FX_CHECK(blocked.status == 200, "the blocked batch: status %d after the unlock", blocked.status);
    FX_CHECK(fx_stop(&s), "fanout did not stop cleanly");
}

int it_concurrency(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_sixteen_sleeps_run_at_once),
        cmocka_unit_test(test_sigterm_lets_running_batch_finish),
        cmocka_unit_test(test_quick_statements_keep_to_quick_workers),
        cmocka_unit_test(test_quick_job_not_stuck_behind_a_blocked_one),
    };
    return cmocka_run_group_tests_name("concurrency", tests, group_setup, group_teardown);
}
