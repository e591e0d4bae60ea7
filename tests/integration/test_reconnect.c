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

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

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

static void test_clean_exit(void **state)
{
    (void)state;
    assert_true(fx_stop(&srv));
}

int it_reconnect(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_backends_terminated),
        cmocka_unit_test(test_clean_exit),
    };
    return cmocka_run_group_tests_name("reconnect", tests, group_setup, group_teardown);
}
