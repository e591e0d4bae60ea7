/*
 * Pipelining: a batch's quick statements go to one connection in one round trip (libpq pipeline
 * mode), slow ones are spread over idle workers, one statement's failure stays its own, quick
 * reads share one read-only transaction (what a failure there leaves unrun, and a write it
 * refuses, go out again on their own), read-only batches pipeline too, the session reset behind a pipeline keeps batches apart,
 * a deadline inside a pipeline leaves the connection clean, and the prepared-statement cache is
 * reused, bounded and survives a client's DEALLOCATE ALL.
 */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <libpq-fe.h>

#include "tests/integration/groups.h"
#include "tests/integration/harness.h"

/* Runs that teach fanout a statement is quick: svc_speed keeps a running mean (an eighth a run),
 * and a slow first run (the Parse, a busy host) takes a dozen quick ones to fall under 2 ms; with
 * 2 or 3, the batches of a test sometimes did not share a pipeline. */
#define WARM_RUNS 20
#define PIPELINED "fanout_pipelined_queries_total"
#define RESENT "fanout_pipeline_resent_total"

static fx_server one = {.pid = -1};  /* 1 worker: every run of a batch shares its connection */
static fx_server four = {.pid = -1}; /* 4 workers: room to spread */
static fx_server small = {.pid = -1}; /* 1 worker keeping at most 3 prepared statements */

static int group_setup(void **state)
{
    static const char *const one_args[] = {"--workers", "1", "--pipeline-depth", "16", NULL};
    static const char *const four_args[] = {"--workers", "4", "--pipeline-depth", "16", NULL};
    static const char *const small_args[] = {"--workers", "1", "--statement-cache-size", "3", NULL};
    const fx_opts one_opts = {.args = one_args}, four_opts = {.args = four_args},
                  small_opts = {.args = small_args};
    (void)state;
    return fx_start(&one, &one_opts) && fx_start(&four, &four_opts) && fx_start(&small, &small_opts)
               ? 0
               : -1;
}

static int group_teardown(void **state)
{
    (void)state;
    fx_kill(&one);
    fx_kill(&four);
    fx_kill(&small);
    return 0;
}

/* A batch of n copies of sql, query i with the one parameter "i". */
static char *repeat_batch(const char *sql, int n)
{
    size_t cap = (size_t)n * (strlen(sql) + 64) + 64, len = 0;
    char *body = malloc(cap);
    assert_non_null(body);
    len += (size_t)snprintf(body + len, cap - len, "{\"queries\":[");
    for (int i = 0; i < n; i++)
        len += (size_t)snprintf(body + len, cap - len, "%s{\"sql\":\"%s\",\"params\":[\"%d\"]}",
                                i ? "," : "", sql, i);
    snprintf(body + len, cap - len, "]}");
    return body;
}

/* Row i's column col of result i, as an integer. */
static long long cell(json_t *doc, int i, int col)
{
    char path[64];
    snprintf(path, sizeof(path), "results.%d.rows.0.%d", i, col);
    FX_EXPECT_KIND(doc, path, "integer");
    return json_integer_value(fx_at(doc, path));
}

/* Once fanout has seen them be quick, 12 lookups of one batch share one backend and one round
 * trip, even with 3 workers idle, and come back in order. */
static void test_quick_statements_share_a_round_trip(void **state)
{
    enum { N = 12 };
    char *body = repeat_batch("SELECT pg_backend_pid() AS pid, $1::int AS n", N);
    (void)state;

    for (int warm = 0; warm < WARM_RUNS; warm++) /* fanout learns the statement is quick */
        json_decref(FX_BATCH(four.port, body));
    double before = fx_metric(four.port, PIPELINED);
    json_t *doc = FX_BATCH(four.port, body);
    double after = fx_metric(four.port, PIPELINED);
    FX_EXPECT_LEN(doc, "results", N);
    long long pid = cell(doc, 0, 0);
    for (int i = 0; i < N; i++) {
        FX_CHECK(cell(doc, i, 1) == i, "result %d holds n = %lld: out of order", i, cell(doc, i, 1));
        FX_CHECK(cell(doc, i, 0) == pid, "query %d ran on backend %lld, query 0 on %lld: not one pipeline",
                 i, cell(doc, i, 0), pid);
    }
    FX_CHECK(after - before == N, "%s grew by %.0f, want %d", PIPELINED, after - before, N);
    json_decref(doc);
    free(body);
}

/* Statements seen to be slow are not queued behind each other on one connection: four
 * pg_sleep(0.25) run on four backends at once. */
static void test_slow_statements_spread(void **state)
{
    enum { N = 4 };
    char *body = repeat_batch("SELECT pg_backend_pid() AS pid, $1::int AS n, pg_sleep(0.25)", N);
    double limit = fx_wrapped() ? N * 0.25 : 0.6 * fx_scale(); /* serial: 1.0 s */
    (void)state;

    json_decref(FX_BATCH(four.port, body)); /* fanout learns the statement is slow */
    double t0 = fx_now();
    json_t *doc = FX_BATCH(four.port, body);
    double took = fx_now() - t0;
    long long pids[N];
    for (int i = 0; i < N; i++) {
        pids[i] = cell(doc, i, 0);
        for (int j = 0; j < i; j++)
            FX_CHECK(pids[i] != pids[j], "queries %d and %d shared backend %lld: not spread", j, i, pids[i]);
    }
    FX_CHECK(took < limit, "4 x pg_sleep(0.25) on 4 workers took %.3f s, want < %.2f s", took, limit);
    json_decref(doc);
    free(body);
}

/* In one pipeline, each query runs in its own implicit transaction: the failures get their own
 * errors and the others their rows, and a write next to a failure stays written. */
static void test_failure_stays_in_its_query(void **state)
{
    (void)state;
    assert_true(fx_sql_ok(true, "DROP TABLE IF EXISTS it_pipe; CREATE TABLE it_pipe (v int); "
                                "GRANT ALL ON it_pipe TO PUBLIC"));
    const char *body = "{\"queries\":["
                       "{\"sql\":\"SELECT 10 AS v\"},"
                       "{\"sql\":\"SELECT 1/0\"},"
                       "{\"sql\":\"INSERT INTO it_pipe VALUES (1)\"},"
                       "{\"sql\":\"SELECT * FROM it_no_such_table\"},"
                       "{\"sql\":\"SELECT 30 AS v\"}]}";
    double before = fx_metric(one.port, PIPELINED);
    json_t *doc = FX_BATCH(one.port, body);
    FX_CHECK(fx_metric(one.port, PIPELINED) - before == 5, "the five queries did not share a pipeline");
    FX_EXPECT_INT(doc, "results.0.rows.0.0", 10);
    FX_EXPECT_STR(doc, "results.1.error.code", "22012");
    FX_EXPECT_STR(doc, "results.2.command", "INSERT");
    FX_EXPECT_INT(doc, "results.2.row_count", 1);
    FX_EXPECT_STR(doc, "results.3.error.code", "42P01");
    FX_EXPECT_INT(doc, "results.4.rows.0.0", 30);
    json_decref(doc);
    char *n = fx_sql_value(true, "SELECT count(*) FROM it_pipe", 0, NULL);
    FX_CHECK(n && strcmp(n, "1") == 0, "it_pipe holds %s rows after the batch, want 1", n ? n : "?");
    free(n);
}

/* What a pipelined batch sets in its session (set_config, an advisory lock) does not reach the
 * next batch on the same connection. */
static void test_session_reset_behind_the_pipeline(void **state)
{
    (void)state;
    json_t *doc = FX_BATCH(one.port, "{\"queries\":["
                                     "{\"sql\":\"SELECT set_config('search_path', 'pg_catalog', false)\"},"
                                     "{\"sql\":\"SELECT pg_advisory_lock(4242)\"},"
                                     "{\"sql\":\"SELECT pg_backend_pid()\"}]}");
    long long pid = cell(doc, 2, 0);
    json_decref(doc);
    doc = FX_BATCH(one.port, "{\"queries\":["
                             "{\"sql\":\"SELECT current_setting('search_path')\"},"
                             "{\"sql\":\"SELECT count(*)::int FROM pg_locks WHERE locktype = 'advisory' "
                             "AND pid = pg_backend_pid()\"},"
                             "{\"sql\":\"SELECT pg_backend_pid()\"}]}");
    FX_CHECK(cell(doc, 2, 0) == pid, "the second batch ran on another backend: the test proves nothing");
    FX_EXPECT_STR(doc, "results.0.rows.0.0", "\"$user\", public");
    FX_EXPECT_INT(doc, "results.1.rows.0.0", 0);
    json_decref(doc);
}

/* Keep the one worker busy for seconds (scaled) with a sleep on c, so the batches posted next
 * queue up behind it and go out together; then wait 100 ms for the worker to take it. */
static void occupy_the_worker(fx_conn *c, double seconds)
{
    char body[128];
    snprintf(body, sizeof(body), "{\"queries\":[{\"sql\":\"SELECT pg_sleep(%.2f)\"}]}",
             seconds * fx_scale());
    assert_true(fx_conn_post_batch(c, one.port, body));
    fx_sleep_ms(100);
}

/* Its reply, once the batches behind it are read. */
static void free_the_worker(fx_conn *c)
{
    fx_response r;
    assert_true(fx_conn_read(c, false, &r));
    fx_response_free(&r);
    fx_conn_close(c);
}

/* Run a and b WARM_RUNS times each on port: then fanout knows their statements are quick, and
 * they may share a pipeline. */
static void warm_both(int port, const char *a, const char *b)
{
    for (int i = 0; i < WARM_RUNS; i++) {
        json_decref(FX_BATCH(port, a));
        json_decref(FX_BATCH(port, b));
    }
}

/* Keep one's worker busy for `seconds` (busy), then post a and, 5 ms later, b: queued behind the
 * busy worker, they go out in one pipeline. */
static void post_two_behind_busy(fx_conn *busy, double seconds, fx_conn *first, const char *a,
                                 fx_conn *second, const char *b)
{
    occupy_the_worker(busy, seconds);
    assert_true(fx_conn_post_batch(first, one.port, a));
    fx_sleep_ms(5);
    assert_true(fx_conn_post_batch(second, one.port, b));
}

#define BATCHED "fanout_pipelined_batches_total"

/* Several batches' quick reads queued behind the busy worker go out in one pipeline, each batch
 * behind its own session reset: what one sets in its session reaches none of the others, also
 * when its shared transaction fails (the reset in it fails too, and the batches behind it in
 * the pipeline run again after a fresh one). Fails if the parts share one reset, or if a failed
 * reset lets the batches behind it stand. */
static void test_batches_share_a_pipeline_apart(void **state)
{
    enum { K = 12 };
    static const char *const bodies[4] = {
        "{\"queries\":[{\"sql\":\"SELECT set_config('search_path', 'pg_catalog', false)\"},"
        "{\"sql\":\"SELECT pg_advisory_lock(4250)\"}]}",
        "{\"queries\":[{\"sql\":\"SELECT current_setting('search_path')\"},"
        "{\"sql\":\"SELECT count(*)::int FROM pg_locks WHERE locktype = 'advisory' AND "
        "pid = pg_backend_pid()\"}]}",
        "{\"queries\":[{\"sql\":\"SELECT pg_advisory_lock(4251), 1 / (pg_backend_pid() - pg_backend_pid())\"}]}",
        /* the clean reader again, with options of its own: they hold for its part only */
        "{\"row_format\":\"object\",\"read_only\":true,\"queries\":["
        "{\"sql\":\"SELECT current_setting('search_path')\"},"
        "{\"sql\":\"SELECT count(*)::int FROM pg_locks WHERE locktype = 'advisory' AND "
        "pid = pg_backend_pid()\"}]}"};
    fx_conn busy, c[K];
    (void)state;

    for (int round = 0; round < WARM_RUNS; round++) /* now they are known to be quick */
        for (int i = 0; i < 4; i++) {
            int status = 0;
            json_t *doc = fx_post_json(one.port, bodies[i], &status);
            FX_CHECK(status == 200, "warm-up batch %d: status %d", i, status);
            json_decref(doc);
        }
    double batched = fx_metric(one.port, BATCHED), resent = fx_metric(one.port, RESENT);
    occupy_the_worker(&busy, 0.5);
    for (int i = 0; i < K; i++) { /* in this order: a gap keeps it */
        assert_true(fx_conn_post_batch(&c[i], one.port, bodies[i % 4]));
        fx_sleep_ms(5);
    }
    for (int i = 0; i < K; i++) {
        fx_response r;
        assert_true(fx_conn_read(&c[i], false, &r));
        json_t *doc = json_loads(r.body, 0, NULL);
        FX_CHECK(r.status == 200 && doc, "batch %d: status %d: %s", i, r.status, r.body);
        if (i % 4 == 1) { /* a clean session: no search_path, no lock from the others */
            FX_EXPECT_STR(doc, "results.0.rows.0.0", "\"$user\", public");
            FX_EXPECT_INT(doc, "results.1.rows.0.0", 0);
        } else if (i % 4 == 3) { /* the same, in rows of its own format */
            FX_EXPECT_STR(doc, "results.0.rows.0.current_setting", "\"$user\", public");
            FX_EXPECT_INT(doc, "results.1.rows.0.count", 0);
        } else if (i % 4 == 2) {
            FX_EXPECT_STR(doc, "results.0.error.code", "22012");
        } else {
            FX_EXPECT_STR(doc, "results.0.rows.0.0", "pg_catalog");
        }
        json_decref(doc);
        fx_response_free(&r);
        fx_conn_close(&c[i]);
    }
    free_the_worker(&busy);
    batched = fx_metric(one.port, BATCHED) - batched;
    resent = fx_metric(one.port, RESENT) - resent;
    print_message("%.0f batches shared a pipeline, %.0f queries sent again\n", batched, resent);
    FX_CHECK(batched >= 4, "the queued batches did not share a pipeline: the test proves nothing");
    FX_CHECK(resent >= 2, "the batch behind a failed reset was not run again");
}

/* A deadline inside a pipeline of several batches: the blocked batch's cancel frees the worker,
 * and the batches behind it in that pipeline, which the cancel may have hit (their reset did not
 * run: the cancelled transaction took it along), run again and answer. Fails if a run of several
 * batches is never cancelled: then they wait for the lock. */
static void test_deadline_in_a_pipeline_of_batches(void **state)
{
    static const char *const free_body =
        "{\"queries\":[{\"sql\":\"SELECT pg_advisory_xact_lock($1)\",\"params\":[\"4261\"]},"
        "{\"sql\":\"SELECT pg_backend_pid()\"}]}";
    char lock_body[160];
    fx_conn busy, blocked, c[3];
    (void)state;

    /* its deadline passes 0.5 s after it starts: in the pipeline, after the sleep */
    snprintf(lock_body, sizeof(lock_body),
             "{\"timeout_ms\":%d,\"queries\":[{\"sql\":\"SELECT pg_advisory_xact_lock($1)\","
             "\"params\":[\"4260\"]}]}",
             (int)(300 * fx_scale()) + 400);

    for (int i = 0; i < WARM_RUNS; i++) { /* now they are known to be quick */
        json_decref(FX_BATCH(one.port, free_body));
        json_decref(FX_BATCH(one.port, "{\"queries\":[{\"sql\":\"SELECT pg_advisory_xact_lock($1)\","
                                       "\"params\":[\"4262\"]}]}"));
    }
    PGconn *admin = PQconnectdb(getenv("FANOUT_TEST_ADMIN"));
    assert_int_equal(PQstatus(admin), CONNECTION_OK);
    PQclear(PQexec(admin, "SELECT pg_advisory_lock(4260)"));
    double batched = fx_metric(one.port, BATCHED), resent = fx_metric(one.port, RESENT);
    occupy_the_worker(&busy, 0.3);
    assert_true(fx_conn_post_batch(&blocked, one.port, lock_body));
    fx_sleep_ms(5);
    for (int i = 0; i < 3; i++) {
        assert_true(fx_conn_post_batch(&c[i], one.port, free_body));
        fx_sleep_ms(5);
    }
    double t0 = fx_now();
    fx_response r;
    assert_true(fx_conn_read(&blocked, false, &r));
    FX_CHECK(strstr(r.body, "\"timeout\"") != NULL, "the blocked batch: %s", r.body);
    fx_response_free(&r);
    for (int i = 0; i < 3; i++) {
        assert_true(fx_conn_read(&c[i], false, &r));
        json_t *doc = json_loads(r.body, 0, NULL);
        FX_CHECK(r.status == 200 && doc, "batch %d: status %d: %s", i, r.status, r.body);
        FX_EXPECT_KIND(doc, "results.1.rows.0.0", "integer");
        json_decref(doc);
        fx_response_free(&r);
        fx_conn_close(&c[i]);
    }
    double took = fx_now() - t0;
    bool shared = fx_metric(one.port, BATCHED) - batched >= 2;
    resent = fx_metric(one.port, RESENT) - resent;
    PQclear(PQexec(admin, "SELECT pg_advisory_unlock(4260)"));
    PQfinish(admin);
    free_the_worker(&busy);
    fx_conn_close(&blocked);
    print_message("the batches behind the blocked one answered %.3f s after the sleep's\n", took);
    FX_CHECK(shared, "the batches did not share a pipeline: the test proves nothing");
    /* the cancelled transaction took the blocked batch's reset along: the rest ran again */
    FX_CHECK(resent >= 2, "nothing was sent again (%.0f): the blocked batch was not in the pipeline "
             "when its deadline passed, so the test proves nothing", resent);
    FX_CHECK(took < 3.0 * fx_scale(), "the batches behind the blocked one waited %.3f s", took);
}

/* A batch with a deadline (timed) shares a pipeline behind the busy worker with one that set
 * none (other) and waits for a lock the admin holds (lock, unlock: SQL): timed answers timeout,
 * and once its cancels have landed (wait_ms) and the lock went, other answers its row, never
 * 57014 (canceling statement due to user request). timed_first: the order they are posted in. */
static void other_survives_the_deadline(const char *timed_body, const char *other_body, bool timed_first,
                                        const char *lock, const char *unlock, int wait_ms)
{
    fx_conn busy, timed, other;
    PGconn *admin = PQconnectdb(getenv("FANOUT_TEST_ADMIN"));
    assert_int_equal(PQstatus(admin), CONNECTION_OK);
    PQclear(PQexec(admin, lock));
    double batched = fx_metric(one.port, BATCHED);
    if (timed_first)
        post_two_behind_busy(&busy, 0.3, &timed, timed_body, &other, other_body);
    else
        post_two_behind_busy(&busy, 0.3, &other, other_body, &timed, timed_body);
    fx_response r;
    assert_true(fx_conn_read(&timed, false, &r));
    FX_CHECK(strstr(r.body, "\"timeout\"") != NULL, "the batch with the deadline: %s", r.body);
    fx_response_free(&r);
    fx_sleep_ms(wait_ms); /* the cancels go out from another thread: let them land */
    PQclear(PQexec(admin, unlock));
    PQfinish(admin);
    assert_true(fx_conn_read(&other, false, &r));
    json_t *doc = json_loads(r.body, 0, NULL);
    FX_CHECK(r.status == 200 && doc, "the batch without a deadline: status %d: %s", r.status, r.body);
    if (fx_at(doc, "results.0.error") != NULL)
        fx_print_json("the batch without a deadline", doc);
    FX_CHECK(fx_at(doc, "results.0.error") == NULL, "the batch without a deadline got an error");
    FX_EXPECT_LEN(doc, "results.0.rows", 1);
    json_decref(doc);
    fx_response_free(&r);
    fx_conn_close(&timed);
    fx_conn_close(&other);
    free_the_worker(&busy);
    FX_CHECK(fx_metric(one.port, BATCHED) - batched >= 2,
             "the batches did not share a pipeline: the test proves nothing");
}

/* Another batch's deadline lands on this batch's statement in a shared pipeline, one that had
 * a sync of its own (its statement was prepared in that pipeline, after a client's DEALLOCATE
 * ALL): it changed nothing, so it goes out again; its client, which set no deadline, must not
 * get 57014 (canceling statement due to user request). */
static void test_cancel_meant_for_another_batch(void **state)
{
    static const char *const blocked_body =
        "{\"queries\":[{\"sql\":\"SELECT pg_advisory_xact_lock($1) AS waited\",\"params\":[\"4263\"]}]}";
    char timed_body[160];
    (void)state;

    /* its deadline passes while the other waits for the lock */
    snprintf(timed_body, sizeof(timed_body),
             "{\"timeout_ms\":%d,\"queries\":[{\"sql\":\"SELECT pg_backend_pid() AS timed\"}]}",
             (int)(300 * fx_scale()) + 400);
    warm_both(one.port, blocked_body, timed_body);
    /* and no longer prepared on the connection: the blocked one goes with its Parse */
    json_decref(FX_BATCH(one.port, "{\"queries\":[{\"sql\":\"DEALLOCATE ALL\"}]}"));
    other_survives_the_deadline(timed_body, blocked_body, false, "SELECT pg_advisory_lock(4263)",
                                "SELECT pg_advisory_unlock(4263)", (int)(300 * fx_scale()));
}

/* A batch whose function PREPAREs a statement shares a pipeline with the batch behind it: the
 * reset between them (its ROLLBACK) does not undo a PREPARE, so the check behind every part
 * sees it, and the batch behind goes out again after a DEALLOCATE ALL: it never sees the
 * statement (its text could hold another client's secret, or take the name of fanout's own). */
static void test_prepare_does_not_reach_the_next_batch(void **state)
{
    static const char *const prepare_body =
        "{\"queries\":[{\"sql\":\"SELECT it_pipe_prepare($1) AS a\",\"params\":[\"1\"]}]}";
    static const char *const quiet_body =
        "{\"queries\":[{\"sql\":\"SELECT it_pipe_prepare($1) AS a\",\"params\":[\"0\"]}]}";
    static const char *const look_body =
        "{\"queries\":[{\"sql\":\"SELECT count(*)::int FROM pg_prepared_statements WHERE from_sql\"}]}";
    fx_conn busy, prepare, look;
    (void)state;

    assert_true(fx_sql_ok(true, "CREATE OR REPLACE FUNCTION it_pipe_prepare(int) RETURNS int "
                                "LANGUAGE plpgsql AS $$ BEGIN IF $1 = 1 THEN "
                                "EXECUTE 'PREPARE it_pipe_secret AS SELECT ''hunter2'''; END IF; "
                                "RETURN $1; END $$"));
    warm_both(one.port, quiet_body, look_body);
    double batched = fx_metric(one.port, BATCHED), resent = fx_metric(one.port, RESENT);
    post_two_behind_busy(&busy, 0.3, &prepare, prepare_body, &look, look_body);
    fx_response r;
    assert_true(fx_conn_read(&prepare, false, &r));
    json_t *doc = json_loads(r.body, 0, NULL);
    FX_CHECK(r.status == 200 && doc, "the batch that prepares: status %d: %s", r.status, r.body);
    FX_EXPECT_INT(doc, "results.0.rows.0.0", 1);
    json_decref(doc);
    fx_response_free(&r);
    assert_true(fx_conn_read(&look, false, &r));
    doc = json_loads(r.body, 0, NULL);
    FX_CHECK(r.status == 200 && doc, "the batch behind: status %d: %s", r.status, r.body);
    FX_EXPECT_INT(doc, "results.0.rows.0.0", 0);
    json_decref(doc);
    fx_response_free(&r);
    fx_conn_close(&prepare);
    fx_conn_close(&look);
    free_the_worker(&busy);
    FX_CHECK(fx_metric(one.port, BATCHED) - batched >= 2,
             "the batches did not share a pipeline: the test proves nothing");
    FX_CHECK(fx_metric(one.port, RESENT) - resent >= 1, "the batch behind was not sent again");
    /* and the connection goes on clean, with its statements prepared again */
    for (int i = 0; i < 3; i++) {
        doc = FX_BATCH(one.port, look_body);
        FX_EXPECT_INT(doc, "results.0.rows.0.0", 0);
        json_decref(doc);
    }
}

/* A table gains a column after fanout prepared a statement that reads it: the server refuses the
 * cached statement ("cached plan must not change result type", 0A000) before it runs, so it goes
 * out again, parsed afresh, and answers with the new column; the stale one is deallocated. It
 * used to answer 0A000 on every run until fanout restarted. */
static void test_statement_after_alter_table(void **state)
{
    static const char *const body = "{\"queries\":[{\"sql\":\"SELECT * FROM it_pipe_altered\"}]}";
    (void)state;

    assert_true(fx_sql_ok(true, "DROP TABLE IF EXISTS it_pipe_altered; "
                                "CREATE TABLE it_pipe_altered (a int); INSERT INTO it_pipe_altered VALUES (1); "
                                "GRANT ALL ON it_pipe_altered TO PUBLIC"));
    for (int i = 0; i < 3; i++) { /* prepared on the one worker's connection */
        json_t *doc = FX_BATCH(one.port, body);
        FX_EXPECT_INT(doc, "results.0.rows.0.0", 1);
        json_decref(doc);
    }
    assert_true(fx_sql_ok(true, "ALTER TABLE it_pipe_altered ADD COLUMN b int DEFAULT 7"));
    for (int i = 0; i < 3; i++) {
        json_t *doc = FX_BATCH(one.port, body);
        if (fx_at(doc, "results.0.error") != NULL)
            fx_print_json("after ALTER TABLE", doc);
        FX_EXPECT_STR(doc, "results.0.columns.1.name", "b");
        FX_EXPECT_INT(doc, "results.0.rows.0.1", 7);
        json_decref(doc);
    }
    /* and the stale statement is gone from the server: only fanout's own are left */
    json_t *doc = FX_BATCH(one.port, "{\"queries\":[{\"sql\":\"SELECT count(*)::int FROM pg_prepared_statements "
                                     "WHERE statement = 'SELECT * FROM it_pipe_altered'\"}]}");
    FX_EXPECT_INT(doc, "results.0.rows.0.0", 1);
    json_decref(doc);
    assert_true(fx_sql_ok(true, "DROP TABLE it_pipe_altered"));
}

/* A column changes type after fanout prepared a statement comparing it with a parameter: the
 * kept statement still expects the old type and refuses the value at Bind, before it runs, so it
 * goes out again parsed afresh and answers. A value that is just wrong still gets its error. */
static void test_statement_after_column_type_change(void **state)
{
    static const char *const count_body =
        "{\"queries\":[{\"sql\":\"SELECT count(*)::int FROM it_pipe_retyped WHERE a = $1\",\"params\":[\"%s\"]}]}";
    char body[256];
    (void)state;

    assert_true(fx_sql_ok(true, "DROP TABLE IF EXISTS it_pipe_retyped; "
                                "CREATE TABLE it_pipe_retyped (a int); INSERT INTO it_pipe_retyped VALUES (1); "
                                "GRANT ALL ON it_pipe_retyped TO PUBLIC"));
    snprintf(body, sizeof(body), count_body, "1");
    for (int i = 0; i < 3; i++) { /* prepared on the one worker's connection, $1 an integer */
        json_t *doc = FX_BATCH(one.port, body);
        FX_EXPECT_INT(doc, "results.0.rows.0.0", 1);
        json_decref(doc);
    }
    snprintf(body, sizeof(body), count_body, "xyz"); /* just wrong: its error stands */
    json_t *doc = FX_BATCH(one.port, body);
    FX_EXPECT_STR(doc, "results.0.error.code", "22P02");
    json_decref(doc);
    for (int i = 0; i < 3; i++) { /* and the statement is kept again */
        snprintf(body, sizeof(body), count_body, "1");
        json_decref(FX_BATCH(one.port, body));
    }
    assert_true(fx_sql_ok(true, "ALTER TABLE it_pipe_retyped ALTER a TYPE text; "
                                "INSERT INTO it_pipe_retyped VALUES ('abc')"));
    snprintf(body, sizeof(body), count_body, "abc");
    doc = FX_BATCH(one.port, body);
    if (fx_at(doc, "results.0.error") != NULL)
        fx_print_json("after ALTER COLUMN TYPE", doc);
    FX_EXPECT_INT(doc, "results.0.rows.0.0", 1);
    json_decref(doc);
    assert_true(fx_sql_ok(true, "DROP TABLE it_pipe_retyped"));
}

/* The stale statement was evicted from the cache (and deallocated) in the same pipeline that
 * found it stale: the DEALLOCATE ahead of round 2 fails, and must not take the query that goes
 * again along with it (it came back not_run). */
static void test_stale_statement_evicted_meanwhile(void **state)
{
    static const char *const body = "{\"queries\":[{\"sql\":\"SELECT * FROM it_pipe_evicted\"},"
                                    "{\"sql\":\"SELECT 1 +\"},{\"sql\":\"SELECT 103\"}]}";
    static const char *const args[] = {"--workers", "1", "--statement-cache-size", "2", NULL};
    const fx_opts opts = {.args = args};
    fx_server two = {.pid = -1};
    (void)state;
    assert_true(fx_start(&two, &opts));

    assert_true(fx_sql_ok(true, "DROP TABLE IF EXISTS it_pipe_evicted; "
                                "CREATE TABLE it_pipe_evicted (a int); INSERT INTO it_pipe_evicted VALUES (1); "
                                "GRANT ALL ON it_pipe_evicted TO PUBLIC"));
    for (int i = 0; i < 3; i++)
        json_decref(FX_BATCH(two.port, "{\"queries\":[{\"sql\":\"SELECT * FROM it_pipe_evicted\"}]}"));
    assert_true(fx_sql_ok(true, "ALTER TABLE it_pipe_evicted ADD COLUMN b int DEFAULT 7"));
    json_t *doc = FX_BATCH(two.port, body);
    if (fx_at(doc, "results.0.error") != NULL)
        fx_print_json("after ALTER TABLE", doc);
    FX_EXPECT_INT(doc, "results.0.rows.0.1", 7);
    FX_EXPECT_INT(doc, "results.2.rows.0.0", 103);
    json_decref(doc);
    assert_true(fx_sql_ok(true, "DROP TABLE it_pipe_evicted"));
    assert_true(fx_stop(&two));
}

/* A 0A000 (feature_not_supported) that is the query's own answer, from a statement prepared
 * before: it ran, so it is not sent again (its function advanced a sequence once). Only the
 * server's check of a cached plan says a statement went stale. */
static void test_feature_not_supported_is_an_answer(void **state)
{
    (void)state;
    assert_true(fx_sql_ok(true, "DROP SEQUENCE IF EXISTS it_pipe_calls; CREATE SEQUENCE it_pipe_calls; "
                                "GRANT ALL ON it_pipe_calls TO PUBLIC; "
                                "CREATE OR REPLACE FUNCTION it_pipe_refuse(int) RETURNS int LANGUAGE plpgsql AS $$ "
                                "BEGIN PERFORM nextval('it_pipe_calls'); IF $1 = 1 THEN "
                                "RAISE EXCEPTION 'not here' USING ERRCODE = 'feature_not_supported'; END IF; "
                                "RETURN $1; END $$"));
    for (int i = 0; i < 3; i++) /* prepared on the one worker's connection */
        json_decref(FX_BATCH(one.port, "{\"queries\":[{\"sql\":\"SELECT it_pipe_refuse($1)\",\"params\":[\"0\"]}]}"));
    char *before = fx_sql_value(true, "SELECT last_value FROM it_pipe_calls", 0, NULL);
    json_t *doc = FX_BATCH(one.port, "{\"queries\":[{\"sql\":\"SELECT it_pipe_refuse($1)\",\"params\":[\"1\"]}]}");
    FX_EXPECT_STR(doc, "results.0.error.code", "0A000");
    json_decref(doc);
    char *after = fx_sql_value(true, "SELECT last_value FROM it_pipe_calls", 0, NULL);
    FX_CHECK(before && after && atol(after) == atol(before) + 1, "the function ran %ld times, want 1",
             before && after ? atol(after) - atol(before) : -1L);
    free(before);
    free(after);
}

/* statement_timeout stops a query of a batch that shares a run with a batch whose deadline
 * passed: the one cancel that deadline sent is spent on its own statement, so this 57014 is
 * the timeout's, the query's answer. It used to go out again, round after round, until the
 * lock it waited for went. */
static void test_statement_timeout_after_another_deadline(void **state)
{
    static const char *const args[] = {"--workers", "1", "--pipeline-depth", "16", "--statement-timeout-ms",
                                       "1000", NULL};
    const fx_opts opts = {.args = args};
    fx_server st = {.pid = -1};
    char timed_body[192];
    static const char *const other_body =
        "{\"queries\":[{\"sql\":\"SELECT pg_advisory_xact_lock($1) AS b\",\"params\":[\"4269\"]}]}";
    fx_conn busy, timed, other;
    (void)state;

    assert_true(fx_start(&st, &opts));
    snprintf(timed_body, sizeof(timed_body),
             "{\"timeout_ms\":%d,\"queries\":[{\"sql\":\"SELECT pg_advisory_xact_lock($1) AS a\","
             "\"params\":[\"4268\"]}]}", (int)(300 * fx_scale()));
    warm_both(st.port, timed_body, other_body);
    PGconn *admin = PQconnectdb(getenv("FANOUT_TEST_ADMIN"));
    assert_int_equal(PQstatus(admin), CONNECTION_OK);
    PQclear(PQexec(admin, "SELECT pg_advisory_lock(4268), pg_advisory_lock(4269)"));
    double batched = fx_metric(st.port, BATCHED);
    char sleep_body[96];
    snprintf(sleep_body, sizeof(sleep_body), "{\"queries\":[{\"sql\":\"SELECT pg_sleep(%.2f)\"}]}", 0.3 * fx_scale());
    assert_true(fx_conn_post_batch(&busy, st.port, sleep_body));
    fx_sleep_ms(100);
    assert_true(fx_conn_post_batch(&timed, st.port, timed_body));
    fx_sleep_ms(5);
    assert_true(fx_conn_post_batch(&other, st.port, other_body));
    fx_response r;
    assert_true(fx_conn_read(&timed, false, &r));
    FX_CHECK(strstr(r.body, "\"timeout\"") != NULL, "the batch with the deadline: %s", r.body);
    fx_response_free(&r);
    fx_sleep_ms((int)(3000 * fx_scale())); /* the other's statement_timeout (1 s) passes */
    PQclear(PQexec(admin, "SELECT pg_advisory_unlock(4268), pg_advisory_unlock(4269)"));
    PQfinish(admin);
    assert_true(fx_conn_read(&other, false, &r));
    json_t *doc = json_loads(r.body, 0, NULL);
    FX_CHECK(r.status == 200 && doc, "the other batch: status %d: %s", r.status, r.body);
    if (fx_at(doc, "results.0.error") == NULL)
        fx_print_json("the other batch", doc);
    FX_EXPECT_STR(doc, "results.0.error.code", "57014");
    json_decref(doc);
    fx_response_free(&r);
    fx_conn_close(&timed);
    fx_conn_close(&other);
    assert_true(fx_conn_read(&busy, false, &r));
    fx_response_free(&r);
    fx_conn_close(&busy);
    FX_CHECK(fx_metric(st.port, BATCHED) - batched >= 2, "the batches did not share a pipeline: the test proves nothing");
    assert_true(fx_stop(&st));
}

/* A batch with two jobs in a shared pipeline passes its deadline: two cancels go out for the
 * run. The first stops its query and sends the batch behind it to round 2; the second may land
 * there, on a statement of a batch that set no deadline, which must go out again, not answer
 * 57014 (canceling statement due to user request). */
static void test_two_cancels_of_one_deadline(void **state)
{
    static const char *const other_body =
        "{\"queries\":[{\"sql\":\"SELECT pg_advisory_xact_lock($1) AS b1\",\"params\":[\"4267\"]}]}";
    char timed_body[256];
    (void)state;

    snprintf(timed_body, sizeof(timed_body),
             "{\"timeout_ms\":%d,\"queries\":[{\"sql\":\"SELECT pg_advisory_xact_lock($1) AS a1\","
             "\"params\":[\"4265\"]},{\"sql\":\"SELECT pg_advisory_xact_lock($1) AS a2\",\"params\":[\"4266\"]}]}",
             (int)(300 * fx_scale()) + 400);
    warm_both(one.port, timed_body, other_body);
    other_survives_the_deadline(timed_body, other_body, true,
                                "SELECT pg_advisory_lock(4265), pg_advisory_lock(4267)",
                                "SELECT pg_advisory_unlock(4265), pg_advisory_unlock(4267)",
                                (int)(500 * fx_scale()));
}

/* A statement_timeout inside a pipeline of several batches: its 57014 is the query's answer,
 * not a cancel meant for another batch, so it does not go out again (where, its transaction
 * rolled back, the timeout it set would be gone, and it would wait for the lock instead). */
static void test_statement_timeout_in_a_pipeline_of_batches(void **state)
{
    static const char *const timed_body =
        "{\"queries\":[{\"sql\":\"SELECT set_config('statement_timeout', $1, true)\","
        "\"params\":[\"300\"]},"
        "{\"sql\":\"SELECT pg_advisory_xact_lock($1) AS waited\",\"params\":[\"4264\"]}]}";
    static const char *const other_body = "{\"queries\":[{\"sql\":\"SELECT pg_backend_pid()\"}]}";
    fx_conn busy, timed, other;
    (void)state;

    warm_both(one.port, timed_body, other_body);
    PGconn *admin = PQconnectdb(getenv("FANOUT_TEST_ADMIN"));
    assert_int_equal(PQstatus(admin), CONNECTION_OK);
    PQclear(PQexec(admin, "SELECT pg_advisory_lock(4264)"));
    double batched = fx_metric(one.port, BATCHED);
    post_two_behind_busy(&busy, 0.3, &timed, timed_body, &other, other_body);
    /* Gone again, the lock query would wait for the lock, which goes in 3 s: then it would
     * answer with a row. */
    fx_sleep_ms((int)(3000 * fx_scale()));
    PQclear(PQexec(admin, "SELECT pg_advisory_unlock(4264)"));
    PQfinish(admin);
    fx_response r;
    assert_true(fx_conn_read(&timed, false, &r));
    json_t *doc = json_loads(r.body, 0, NULL);
    FX_CHECK(r.status == 200 && doc, "the batch with the timeout: status %d: %s", r.status, r.body);
    FX_EXPECT_STR(doc, "results.0.rows.0.0", "300ms");
    if (fx_at(doc, "results.1.error.code") == NULL)
        fx_print_json("the batch with the timeout", doc);
    FX_EXPECT_STR(doc, "results.1.error.code", "57014");
    json_decref(doc);
    fx_response_free(&r);
    assert_true(fx_conn_read(&other, false, &r));
    doc = json_loads(r.body, 0, NULL);
    FX_CHECK(r.status == 200 && doc, "the other batch: status %d: %s", r.status, r.body);
    FX_EXPECT_KIND(doc, "results.0.rows.0.0", "integer");
    json_decref(doc);
    fx_response_free(&r);
    fx_conn_close(&timed);
    fx_conn_close(&other);
    free_the_worker(&busy);
    FX_CHECK(fx_metric(one.port, BATCHED) - batched >= 2,
             "the batches did not share a pipeline: the test proves nothing");
}

/* A deadline that lands inside a pipeline: the statement that finished keeps its result, the
 * reply says timeout for the others at the deadline, the server stops them, and the connection
 * serves the next batch clean. */
static void test_deadline_inside_a_pipeline(void **state)
{
    (void)state;
    const char *body = "{\"timeout_ms\":300,\"queries\":["
                       "{\"sql\":\"SELECT set_config('search_path', 'pg_catalog', false)\"},"
                       "{\"sql\":\"SELECT pg_sleep(5)\"},{\"sql\":\"SELECT pg_sleep(5)\"}]}";
    double pipelined = fx_metric(one.port, PIPELINED);
    double t0 = fx_now();
    json_t *doc = FX_BATCH(one.port, body);
    double took = fx_now() - t0;
    FX_EXPECT_STR(doc, "results.0.rows.0.0", "pg_catalog");
    FX_EXPECT_STR(doc, "results.1.error.code", "timeout");
    FX_EXPECT_STR(doc, "results.2.error.code", "timeout");
    FX_CHECK(took < 2.0 * fx_scale(), "the timed-out batch took %.3f s", took);
    json_decref(doc);
    /* The next batch waits for the worker to finish the pipeline; it must not take 10 s. */
    t0 = fx_now();
    doc = FX_BATCH(one.port, "{\"queries\":[{\"sql\":\"SELECT current_setting('search_path')\"},"
                             "{\"sql\":\"SELECT 7\"}]}");
    took = fx_now() - t0;
    FX_EXPECT_STR(doc, "results.0.rows.0.0", "\"$user\", public");
    FX_EXPECT_INT(doc, "results.1.rows.0.0", 7);
    FX_CHECK(took < 3.0 * fx_scale(), "the next batch took %.3f s: the sleeps were not cancelled", took);
    json_decref(doc);
    /* One worker: the three went out together (and the next two). */
    FX_CHECK(fx_metric(one.port, PIPELINED) - pipelined >= 3, "the timed-out batch was not one pipeline");
}

/* A column type new to the connection needs a lookup, which cannot go out in pipeline mode: that
 * result is written after the pipeline; once known, at once. Both ways name the type. */
static void test_new_column_type_in_a_pipeline(void **state)
{
    (void)state;
    assert_true(fx_sql_ok(true, "DROP TYPE IF EXISTS it_pipe_mood; "
                                "CREATE TYPE it_pipe_mood AS ENUM ('calm', 'busy')"));
    const char *body = "{\"queries\":[{\"sql\":\"SELECT 'busy'::it_pipe_mood AS m\"},"
                       "{\"sql\":\"SELECT 'calm'::it_pipe_mood AS m, 2 AS n\"}]}";
    for (int run = 0; run < 2; run++) {
        double pipelined = fx_metric(one.port, PIPELINED);
        json_t *doc = FX_BATCH(one.port, body);
        FX_EXPECT_STR(doc, "results.0.rows.0.0", "busy");
        FX_EXPECT_STR(doc, "results.0.columns.0.type", "it_pipe_mood");
        FX_EXPECT_STR(doc, "results.1.rows.0.0", "calm");
        FX_EXPECT_STR(doc, "results.1.columns.0.type", "it_pipe_mood");
        FX_EXPECT_INT(doc, "results.1.rows.0.1", 2);
        json_decref(doc);
        FX_CHECK(fx_metric(one.port, PIPELINED) - pipelined == 2, "run %d was not one pipeline", run);
    }
}


/* Run body `warm` times so fanout learns its statements are quick and caches them. */
static void warm_up(int port, const char *body, int warm)
{
    for (int i = 0; i < warm; i++)
        json_decref(FX_BATCH(port, body));
}

/* Query i returns i, when its transaction began, and whether it is read-only. */
#define RO_PROBE                                                                                   \
    "SELECT $1::int AS n, transaction_timestamp()::text AS t, "                                    \
    "current_setting('transaction_read_only') AS ro"

/* Results 0..n-1 of RO_PROBE came back in order, from one read-only transaction. */
static void expect_one_read_only_transaction(json_t *doc, int n)
{
    const char *t0 = json_string_value(fx_at(doc, "results.0.rows.0.1"));
    FX_CHECK(t0 != NULL, "no transaction_timestamp in result 0");
    for (int i = 0; t0 && i < n; i++) {
        char path[64];
        snprintf(path, sizeof(path), "results.%d.rows.0.1", i);
        const char *t = json_string_value(fx_at(doc, path));
        FX_CHECK(cell(doc, i, 0) == i, "result %d holds n = %lld: out of order", i, cell(doc, i, 0));
        FX_CHECK(t && strcmp(t, t0) == 0, "query %d's transaction began at %s, query 0's at %s: not one "
                 "transaction", i, t ? t : "?", t0);
        snprintf(path, sizeof(path), "results.%d.rows.0.2", i);
        FX_EXPECT_STR(doc, path, "on");
    }
}

/* Quick reads of one pipeline share one transaction, read-only, and one sync; the next batch on
 * the connection is back to read-write. */
static void test_quick_reads_share_a_read_only_transaction(void **state)
{
    enum { N = 8 };
    char *body = repeat_batch(RO_PROBE, N);
    (void)state;

    warm_up(one.port, body, WARM_RUNS);
    json_t *doc = FX_BATCH(one.port, body);
    FX_EXPECT_LEN(doc, "results", N);
    expect_one_read_only_transaction(doc, N);
    json_decref(doc);
    free(body);
    doc = FX_BATCH(one.port, "{\"queries\":[{\"sql\":\"SELECT current_setting('transaction_read_only')\"},"
                             "{\"sql\":\"SELECT current_setting('default_transaction_read_only')\"}]}");
    FX_EXPECT_STR(doc, "results.0.rows.0.0", "off");
    FX_EXPECT_STR(doc, "results.1.rows.0.0", "off");
    json_decref(doc);
}

/* A failure inside a shared transaction aborts the queries behind it unrun: they go out again on
 * their own and come back with their own rows; only the failing one reports an error. */
static void test_failure_in_a_shared_transaction_stays_its_own(void **state)
{
    enum { N = 8, ZERO = 2 };
    char body[2048];
    size_t len = 0;
    (void)state;

    len += (size_t)snprintf(body + len, sizeof(body) - len, "{\"queries\":[");
    for (int i = 0; i < N; i++)
        len += (size_t)snprintf(body + len, sizeof(body) - len,
                                "%s{\"sql\":\"SELECT 840 / $1::int AS v\",\"params\":[\"%d\"]}",
                                i ? "," : "", i + 1);
    snprintf(body + len, sizeof(body) - len, "]}");
    warm_up(one.port, body, WARM_RUNS);
    char *zero = strstr(body, "\"3\""); /* query ZERO's parameter */
    assert_non_null(zero);
    zero[1] = '0';
    double before = fx_metric(one.port, RESENT);
    json_t *doc = FX_BATCH(one.port, body);
    double resent = fx_metric(one.port, RESENT) - before;
    for (int i = 0; i < N; i++) {
        char path[64];
        if (i == ZERO) {
            FX_EXPECT_STR(doc, "results.2.error.code", "22012");
            continue;
        }
        snprintf(path, sizeof(path), "results.%d.rows.0.0", i);
        FX_EXPECT_INT(doc, path, 840 / (i + 1));
    }
    FX_CHECK(resent == N - ZERO - 1, "%s grew by %.0f, want %d (the queries behind the failure)",
             RESENT, resent, N - ZERO - 1);
    json_decref(doc);
}

/* The WARNING lines in the suite's PostgreSQL log so far (-1: no log to read). */
static long server_warnings(void)
{
    const char *dir = getenv("FANOUT_TEST_PGDIR");
    char path[512], line[4096];
    long n = 0;

    if (!dir)
        return -1;
    snprintf(path, sizeof(path), "%s/postgresql.log", dir);
    FILE *f = fopen(path, "r");
    if (!f)
        return -1;
    while (fgets(line, sizeof(line), f))
        n += strstr(line, "WARNING:") != NULL;
    fclose(f);
    return n;
}

/* A shared transaction is a read-only block that its reset ends with ROLLBACK. When it fails,
 * the ROLLBACK goes unrun and the block stays open, failing (25P02) what went out behind its
 * sync: a statement new to the connection (its own Parse and sync), the next block. Those go out
 * again once the block is rolled back and come back with their rows; the connection stays. And
 * the resets leave nothing in the server's log (a ROLLBACK outside a block would warn). */
static void test_failed_block_ahead_of_a_new_statement(void **state)
{
    static const char *const fmt =
        "{\"queries\":["
        "{\"sql\":\"SELECT 840 / $1::int AS v\",\"params\":[\"1\"]},"
        "{\"sql\":\"SELECT 840 / $1::int AS v\",\"params\":[\"%d\"]},"
        "{\"sql\":\"SELECT $1::int AS fresh /* %d */\",\"params\":[\"5\"]},"
        "{\"sql\":\"SELECT 840 / $1::int AS v\",\"params\":[\"4\"]}]}";
    char body[1024];
    (void)state;

    long warnings = server_warnings();
    snprintf(body, sizeof(body), fmt, 2, 0);
    warm_up(one.port, body, WARM_RUNS);
    double reconnects = fx_metric(one.port, "fanout_db_reconnects_total");
    for (int run = 1; run <= 3; run++) {
        snprintf(body, sizeof(body), fmt, 0, run); /* a text the connection has not prepared */
        double before = fx_metric(one.port, RESENT);
        json_t *doc = FX_BATCH(one.port, body);
        double resent = fx_metric(one.port, RESENT) - before;
        FX_EXPECT_INT(doc, "results.0.rows.0.0", 840);
        FX_EXPECT_STR(doc, "results.1.error.code", "22012");
        FX_EXPECT_INT(doc, "results.2.rows.0.0", 5);
        FX_EXPECT_INT(doc, "results.3.rows.0.0", 210);
        json_decref(doc);
        FX_CHECK(resent == 2, "run %d: %s grew by %.0f, want 2 (the two behind the failed block)",
                 run, RESENT, resent);
    }
    json_t *doc = FX_BATCH(one.port, "{\"queries\":[{\"sql\":\"SELECT 7 AS after\"}]}");
    FX_EXPECT_INT(doc, "results.0.rows.0.0", 7);
    json_decref(doc);
    FX_CHECK(fx_metric(one.port, "fanout_db_reconnects_total") == reconnects,
             "the connection was dropped after a failed block");
    if (warnings >= 0)
        FX_CHECK(server_warnings() == warnings, "the server logged %ld WARNING lines",
                 server_warnings() - warnings);
}

/* The session reset rides in the shared transaction; when that transaction fails, the worker
 * resets the connection again: a session advisory lock (which no rollback releases) taken by a
 * query of the failed transaction does not reach the next batch. */
static void test_reset_after_a_failed_shared_transaction(void **state)
{
    static const char *const fmt = "{\"queries\":["
                                   "{\"sql\":\"SELECT pg_advisory_lock($1::bigint)::text AS l\",\"params\":[\"4343\"]},"
                                   "{\"sql\":\"SELECT 10 / $1::int AS v\",\"params\":[\"%d\"]},"
                                   "{\"sql\":\"SELECT 3 AS three\"}]}";
    char body[512];
    (void)state;

    snprintf(body, sizeof(body), fmt, 1);
    warm_up(one.port, body, WARM_RUNS);
    snprintf(body, sizeof(body), fmt, 0);
    double before = fx_metric(one.port, RESENT);
    json_t *doc = FX_BATCH(one.port, body);
    FX_EXPECT_STR(doc, "results.1.error.code", "22012");
    FX_EXPECT_INT(doc, "results.2.rows.0.0", 3);
    json_decref(doc);
    FX_CHECK(fx_metric(one.port, RESENT) - before == 1, "the query behind the failure was not sent again: "
             "the three did not share a transaction, and the test proves nothing");
    doc = FX_BATCH(one.port, "{\"queries\":[{\"sql\":\"SELECT count(*)::int FROM pg_locks "
                             "WHERE locktype = 'advisory' AND pid = pg_backend_pid()\"}]}");
    FX_EXPECT_INT(doc, "results.0.rows.0.0", 0);
    json_decref(doc);
}

/* A fresh table that anyone may write, and a function writing to it (fixed test SQL). */
static void table_and_writer(const char *table, const char *function)
{
    char sql[1024];
    snprintf(sql, sizeof(sql), "DROP TABLE IF EXISTS %s; CREATE TABLE %s (v int); "
             "GRANT ALL ON %s TO PUBLIC; %s", table, table, table, function);
    assert_true(fx_sql_ok(true, sql));
}

/* The table holds n rows, all different: every write landed exactly once. */
static void expect_written_once(const char *table, int n)
{
    char sql[256], want[32];
    snprintf(sql, sizeof(sql), "SELECT count(*)::text || ' ' || count(DISTINCT v)::text FROM %s", table);
    snprintf(want, sizeof(want), "%d %d", n, n);
    char *got = fx_sql_value(true, sql, 0, NULL);
    FX_CHECK(got && strcmp(got, want) == 0, "%s holds %s (rows, distinct), want %s", table,
             got ? got : "?", want);
    free(got);
}

/* A SELECT that writes (through a function) is refused in the shared read-only transaction,
 * then runs on its own: every write lands exactly once, and the connection remembers not to
 * share it again. */
static void test_a_select_that_writes_runs_alone(void **state)
{
    enum { N = 6, RUNS = 6 };
    (void)state;
    table_and_writer("it_pipe_w", "CREATE OR REPLACE FUNCTION it_pipe_add(int) RETURNS int "
                                  "LANGUAGE sql VOLATILE AS 'INSERT INTO it_pipe_w VALUES ($1); SELECT $1'");
    double before = fx_metric(one.port, RESENT);
    for (int run = 0; run < RUNS; run++) {
        char body[2048];
        size_t len = 0;
        len += (size_t)snprintf(body + len, sizeof(body) - len, "{\"queries\":[");
        for (int i = 0; i < N; i++)
            len += (size_t)snprintf(body + len, sizeof(body) - len,
                                    "%s{\"sql\":\"SELECT it_pipe_add($1::int) AS v\",\"params\":[\"%d\"]}",
                                    i ? "," : "", run * N + i);
        snprintf(body + len, sizeof(body) - len, "]}");
        json_t *doc = FX_BATCH(one.port, body);
        for (int i = 0; i < N; i++) {
            char path[64];
            snprintf(path, sizeof(path), "results.%d.rows.0.0", i);
            FX_EXPECT_INT(doc, path, run * N + i);
        }
        json_decref(doc);
    }
    double resent = fx_metric(one.port, RESENT) - before;
    expect_written_once("it_pipe_w", N * RUNS);
    /* One shared attempt: the first query refused, the rest aborted behind it; never again. */
    FX_CHECK(resent == N, "%s grew by %.0f over %d runs, want %d", RESENT, resent, RUNS, N);
}

/* A read alone in its pipeline part runs in a read-only block too, slow or not (the short reset
 * follows it): one that writes after all is refused there once, runs again on its own, and is
 * not tried in a block again; every write lands exactly once. */
static void test_a_lone_slow_select_that_writes(void **state)
{
    enum { RUNS = 5 };
    (void)state;
    table_and_writer("it_pipe_sw", "CREATE OR REPLACE FUNCTION it_pipe_slow_add(int) RETURNS int "
                                   "LANGUAGE plpgsql VOLATILE AS $$ BEGIN PERFORM pg_sleep(0.005); "
                                   "INSERT INTO it_pipe_sw VALUES ($1); RETURN $1; END $$");
    double before = fx_metric(one.port, RESENT);
    for (int run = 0; run < RUNS; run++) {
        char body[256];
        snprintf(body, sizeof(body),
                 "{\"queries\":[{\"sql\":\"SELECT it_pipe_slow_add($1::int) AS v\",\"params\":[\"%d\"]}]}",
                 run);
        json_t *doc = FX_BATCH(one.port, body);
        FX_EXPECT_INT(doc, "results.0.rows.0.0", run);
        json_decref(doc);
    }
    double resent = fx_metric(one.port, RESENT) - before;
    expect_written_once("it_pipe_sw", RUNS);
    /* The first run parses it (no block); the second tries the block and is refused; then never. */
    FX_CHECK(resent == 1, "%s grew by %.0f over %d runs, want 1", RESENT, resent, RUNS);
}

/* it_pipe_drop_opener(1) drops fanout's openers, as a client's function may; (0) does not. */
#define DROP_OPENER                                                                                \
    "CREATE OR REPLACE FUNCTION it_pipe_drop_opener(int) RETURNS int "                             \
    "LANGUAGE plpgsql AS $$ BEGIN IF $1 = 1 THEN "                                                 \
    "EXECUTE 'DEALLOCATE fanout_read_only'; "                                                      \
    "EXECUTE 'DEALLOCATE fanout_begin'; END IF; RETURN $1; END $$"

/* A query that drops fanout's openers (a function's DEALLOCATE) makes the pipeline's next
 * read-only transaction fail at its opener: the queries in it go out again, their rows come
 * back, and the next batch finds fanout's statements prepared again. Read-write (the queries
 * behind an INSERT share a new transaction) and read-only (a statement new to the connection
 * gets a transaction of its own, also opened by fanout). */
static void test_dropped_opener(void **state)
{
    static const char rw[] =
        "{\"queries\":["
        "{\"sql\":\"SELECT it_pipe_drop_opener($1::int) AS d\",\"params\":[\"%d\"]},"
        "{\"sql\":\"SELECT $1::int AS a\",\"params\":[\"1\"]},"
        "{\"sql\":\"INSERT INTO it_pipe_o VALUES (1)\"},"
        "{\"sql\":\"SELECT $1::int AS b\",\"params\":[\"2\"]},"
        "{\"sql\":\"SELECT $1::int AS c\",\"params\":[\"3\"]}]}";
    static const char ro[] =
        "{\"read_only\":true,\"queries\":["
        "{\"sql\":\"SELECT it_pipe_drop_opener($1::int) AS d\",\"params\":[\"%d\"]},"
        "{\"sql\":\"SELECT $1::int AS fresh /* %d */\",\"params\":[\"2\"]},"
        "{\"sql\":\"SELECT $1::int AS a\",\"params\":[\"3\"]}]}";
    char req[1024];
    (void)state;

    assert_true(fx_sql_ok(true, "DROP TABLE IF EXISTS it_pipe_o; CREATE TABLE it_pipe_o (v int); "
                                "GRANT ALL ON it_pipe_o TO PUBLIC; " DROP_OPENER));
    for (int read_only = 0; read_only < 2; read_only++) {
        const char *name = read_only ? "read-only" : "read-write";
        int want_resent = 2; /* rw: b and c behind the INSERT; ro: fresh and a */
        for (int warm = 0; warm < (read_only ? 3 : WARM_RUNS); warm++) { /* ro: fresh texts */
            if (read_only)
                snprintf(req, sizeof(req), ro, 0, 100 + warm);
            else
                snprintf(req, sizeof(req), rw, 0);
            json_decref(FX_BATCH(one.port, req));
        }
        for (int round = 0; round < 2; round++) {
            int drop = round == 0; /* drop it, then see it back */
            if (read_only)
                snprintf(req, sizeof(req), ro, drop, 200 + round);
            else
                snprintf(req, sizeof(req), rw, drop);
            double before = fx_metric(one.port, RESENT);
            json_t *doc = FX_BATCH(one.port, req);
            double resent = fx_metric(one.port, RESENT) - before;
            FX_EXPECT_INT(doc, "results.0.rows.0.0", drop);
            if (read_only) {
                FX_EXPECT_INT(doc, "results.1.rows.0.0", 2);
                FX_EXPECT_INT(doc, "results.2.rows.0.0", 3);
            } else {
                FX_EXPECT_INT(doc, "results.1.rows.0.0", 1);
                FX_EXPECT_STR(doc, "results.2.command", "INSERT");
                FX_EXPECT_INT(doc, "results.3.rows.0.0", 2);
                FX_EXPECT_INT(doc, "results.4.rows.0.0", 3);
            }
            json_decref(doc);
            FX_CHECK(resent == (drop ? want_resent : 0), "%s batch %d: %s grew by %.0f, want %d",
                     name, round, RESENT, resent, drop ? want_resent : 0);
        }
    }
}

/* Two batches in one pipeline use a statement new to the connection: the read-only one's query
 * makes it (its Parse), the other's reuses it (a bare Bind and Execute, its own sync). A dropped
 * opener fails the first's transaction before its Parse: that query goes out again, and so must
 * the other, whose statement never existed; both come back with their rows. Fails if the second
 * reports 26000 (prepared statement does not exist) for a query that never ran. */
static void test_statement_made_by_a_query_that_goes_again(void **state)
{
    static const char maker[] =
        "{\"read_only\":true,\"queries\":["
        "{\"sql\":\"SELECT it_pipe_drop_opener($1::int) AS d\",\"params\":[\"%d\"]},"
        "{\"sql\":\"SELECT $1::int AS made\",\"params\":[\"2\"]}]}";
    static const char user[] = "{\"queries\":[{\"sql\":\"SELECT $1::int AS made\",\"params\":[\"3\"]}]}";
    char req[512];
    fx_conn busy, x, y;
    fx_response rx, ry;
    (void)state;

    assert_true(fx_sql_ok(true, DROP_OPENER));
    snprintf(req, sizeof(req), maker, 0);
    warm_up(one.port, req, WARM_RUNS); /* known quick: the two batches may share a pipeline */
    warm_up(one.port, user, WARM_RUNS);
    /* and new to the connection again (the reset notices and the cache starts over) */
    json_t *doc = FX_BATCH(one.port, "{\"queries\":[{\"sql\":\"DEALLOCATE ALL\"}]}");
    FX_EXPECT_STR(doc, "results.0.command", "DEALLOCATE");
    json_decref(doc);
    double batched = fx_metric(one.port, BATCHED), resent = fx_metric(one.port, RESENT);
    occupy_the_worker(&busy, 0.5);
    snprintf(req, sizeof(req), maker, 1);
    assert_true(fx_conn_post_batch(&x, one.port, req));
    fx_sleep_ms(5);
    assert_true(fx_conn_post_batch(&y, one.port, user));
    assert_true(fx_conn_read(&x, false, &rx));
    assert_true(fx_conn_read(&y, false, &ry));
    free_the_worker(&busy);
    json_t *dx = json_loads(rx.body, 0, NULL), *dy = json_loads(ry.body, 0, NULL);
    FX_CHECK(rx.status == 200 && dx, "the maker: status %d: %s", rx.status, rx.body);
    FX_CHECK(ry.status == 200 && dy, "the user: status %d: %s", ry.status, ry.body);
    FX_EXPECT_INT(dx, "results.0.rows.0.0", 1);
    FX_EXPECT_INT(dx, "results.1.rows.0.0", 2);
    FX_EXPECT_INT(dy, "results.0.rows.0.0", 3);
    json_decref(dx);
    json_decref(dy);
    fx_response_free(&rx);
    fx_response_free(&ry);
    fx_conn_close(&x);
    fx_conn_close(&y);
    batched = fx_metric(one.port, BATCHED) - batched;
    resent = fx_metric(one.port, RESENT) - resent;
    FX_CHECK(batched >= 2, "the two batches did not share a pipeline: the test proves nothing");
    FX_CHECK(resent == 2, "%s grew by %.0f, want 2 (the maker and the user)", RESENT, resent);
}

/* A read-only batch is pipelined too: its queries share one read-only transaction, and a
 * statement that writes gets 25006 as its answer (not sent again, nothing written). */
static void test_read_only_batch_pipelines(void **state)
{
    enum { N = 6 };
    char body[2048];
    size_t len = 0;
    (void)state;

    assert_true(fx_sql_ok(true, "DROP TABLE IF EXISTS it_pipe_ro; CREATE TABLE it_pipe_ro (v int); "
                                "GRANT ALL ON it_pipe_ro TO PUBLIC; "
                                "CREATE OR REPLACE FUNCTION it_pipe_ro_add(int) RETURNS int "
                                "LANGUAGE sql VOLATILE AS 'INSERT INTO it_pipe_ro VALUES ($1); SELECT $1'"));
    len += (size_t)snprintf(body + len, sizeof(body) - len, "{\"read_only\":true,\"queries\":[");
    for (int i = 0; i < N; i++)
        len += (size_t)snprintf(body + len, sizeof(body) - len,
                                "{\"sql\":\"" RO_PROBE "\",\"params\":[\"%d\"]},", i);
    snprintf(body + len, sizeof(body) - len,
             "{\"sql\":\"SELECT it_pipe_ro_add($1::int) AS v\",\"params\":[\"7\"]}]}");
    warm_up(one.port, body, WARM_RUNS);
    double pipelined = fx_metric(one.port, PIPELINED), resent = fx_metric(one.port, RESENT);
    json_t *doc = FX_BATCH(one.port, body);
    FX_CHECK(fx_metric(one.port, PIPELINED) - pipelined == N + 1, "the read-only batch was not pipelined");
    FX_CHECK(fx_metric(one.port, RESENT) - resent == 0, "a read-only batch's refused write was sent again");
    expect_one_read_only_transaction(doc, N);
    FX_EXPECT_STR(doc, "results.6.error.code", "25006");
    json_decref(doc);
    char *n = fx_sql_value(true, "SELECT count(*) FROM it_pipe_ro", 0, NULL);
    FX_CHECK(n && strcmp(n, "0") == 0, "a read-only batch wrote %s rows", n ? n : "?");
    free(n);
}

/* One of fanout's prepared statements on the (only) connection, by text: how many. */
static long long statements_for(int port, const char *text)
{
    char body[512];
    snprintf(body, sizeof(body),
             "{\"queries\":[{\"sql\":\"SELECT count(*)::int FROM pg_prepared_statements "
             "WHERE NOT from_sql AND statement = $1\",\"params\":[\"%s\"]}]}", text);
    json_t *doc = FX_BATCH(port, body);
    long long n = cell(doc, 0, 0);
    json_decref(doc);
    return n;
}

/* A statement run again reuses its prepared statement; the cache keeps statement_cache_size of
 * them at most, least recently used out; the texts come back right after an eviction. */
static void test_statement_cache_reuses_and_is_bounded(void **state)
{
    (void)state;
    for (int round = 0; round < 3; round++) {
        json_t *doc = FX_BATCH(small.port, "{\"queries\":[{\"sql\":\"SELECT 41 AS reuse\"}]}");
        FX_EXPECT_INT(doc, "results.0.rows.0.0", 41);
        json_decref(doc);
    }
    FX_CHECK(statements_for(small.port, "SELECT 41 AS reuse") == 1, "SELECT 41 was prepared more than once");
    for (int i = 0; i < 6; i++) { /* six other texts push it out of a cache of 3 */
        char body[128];
        snprintf(body, sizeof(body), "{\"queries\":[{\"sql\":\"SELECT %d AS other\"}]}", 100 + i);
        json_t *doc = FX_BATCH(small.port, body);
        FX_EXPECT_INT(doc, "results.0.rows.0.0", 100 + i);
        json_decref(doc);
    }
    /* the cache's are fanout_<n>; fanout's own statements (the reset's...) are not the cache's */
    json_t *doc = FX_BATCH(small.port, "{\"queries\":[{\"sql\":\"SELECT count(*)::int FROM "
                                       "pg_prepared_statements WHERE NOT from_sql "
                                       "AND name ~ '^fanout_[0-9]+$'\"}]}");
    FX_CHECK(cell(doc, 0, 0) == 3, "the connection holds %lld of the cache's statements, want 3", cell(doc, 0, 0));
    json_decref(doc);
    FX_CHECK(statements_for(small.port, "SELECT 41 AS reuse") == 0, "SELECT 41 was not evicted");
    doc = FX_BATCH(small.port, "{\"queries\":[{\"sql\":\"SELECT 41 AS reuse\"}]}");
    FX_EXPECT_INT(doc, "results.0.rows.0.0", 41);
    json_decref(doc);
}

/* A client's DEALLOCATE ALL drops fanout's statements too: the reset notices, and the next batch
 * prepares again instead of failing with 26000 (prepared statement does not exist). */
static void test_client_deallocate_all(void **state)
{
    (void)state;
    json_t *doc = FX_BATCH(small.port, "{\"queries\":[{\"sql\":\"SELECT 42 AS again, pg_backend_pid()\"}]}");
    long long pid = cell(doc, 0, 1);
    json_decref(doc);
    doc = FX_BATCH(small.port, "{\"queries\":[{\"sql\":\"DEALLOCATE ALL\"}]}");
    FX_EXPECT_STR(doc, "results.0.command", "DEALLOCATE");
    json_decref(doc);
    doc = FX_BATCH(small.port, "{\"queries\":[{\"sql\":\"SELECT 42 AS again, pg_backend_pid()\"}]}");
    FX_EXPECT_INT(doc, "results.0.rows.0.0", 42);
    /* the reset's own statements went too: it ran without them, and kept the connection */
    FX_CHECK(cell(doc, 0, 1) == pid, "the connection was replaced after DEALLOCATE ALL");
    json_decref(doc);
}

static void test_clean_exit(void **state)
{
    (void)state;
    assert_true(fx_stop(&one));
    assert_true(fx_stop(&four));
    assert_true(fx_stop(&small));
}

int it_pipeline(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_quick_statements_share_a_round_trip),
        cmocka_unit_test(test_slow_statements_spread),
        cmocka_unit_test(test_failure_stays_in_its_query),
        cmocka_unit_test(test_quick_reads_share_a_read_only_transaction),
        cmocka_unit_test(test_failure_in_a_shared_transaction_stays_its_own),
        cmocka_unit_test(test_reset_after_a_failed_shared_transaction),
        cmocka_unit_test(test_failed_block_ahead_of_a_new_statement),
        cmocka_unit_test(test_a_select_that_writes_runs_alone),
        cmocka_unit_test(test_a_lone_slow_select_that_writes),
        cmocka_unit_test(test_read_only_batch_pipelines),
        cmocka_unit_test(test_dropped_opener),
        cmocka_unit_test(test_statement_made_by_a_query_that_goes_again),
        cmocka_unit_test(test_session_reset_behind_the_pipeline),
        cmocka_unit_test(test_batches_share_a_pipeline_apart),
        cmocka_unit_test(test_deadline_in_a_pipeline_of_batches),
        cmocka_unit_test(test_cancel_meant_for_another_batch),
        cmocka_unit_test(test_statement_timeout_in_a_pipeline_of_batches),
        cmocka_unit_test(test_two_cancels_of_one_deadline),
        cmocka_unit_test(test_statement_timeout_after_another_deadline),
        cmocka_unit_test(test_prepare_does_not_reach_the_next_batch),
        cmocka_unit_test(test_statement_after_alter_table),
        cmocka_unit_test(test_statement_after_column_type_change),
        cmocka_unit_test(test_stale_statement_evicted_meanwhile),
        cmocka_unit_test(test_feature_not_supported_is_an_answer),
        cmocka_unit_test(test_deadline_inside_a_pipeline),
        cmocka_unit_test(test_new_column_type_in_a_pipeline),
        cmocka_unit_test(test_statement_cache_reuses_and_is_bounded),
        cmocka_unit_test(test_client_deallocate_all),
        cmocka_unit_test(test_clean_exit),
    };
    return cmocka_run_group_tests_name("pipeline", tests, group_setup, group_teardown);
}
