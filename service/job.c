/*
 * svc_job: what a worker does with one job on its own connection. Worker threads only: touches
 * the job's result slots, the worker's db_conn and the worker's own stats, never a libevent
 * object.
 */
#include <stdio.h>
#include <string.h>
#include <time.h>

#include "db/encode.h"
#include "db/exec.h"
#include "service/batch.h"
#include "service/clock.h"
#include "service/log.h"
#include "service/speed.h"

static const char *const isolation_sql[] = {
    [HTTP_ISO_READ_COMMITTED] = "READ COMMITTED",
    [HTTP_ISO_REPEATABLE_READ] = "REPEATABLE READ",
    [HTTP_ISO_SERIALIZABLE] = "SERIALIZABLE",
};

/* What a job needs while it runs, bundled so helpers take one argument. */
typedef struct run_ctx {
    svc_job *job;
    svc_batch *b;
    const http_batch_req *d;
    db_conn *conn;
    svc_worker_stats *stats;
    uint64_t counts[SVC_Q_OUTCOMES]; /* outcomes so far, published only if the job finishes */
    int failures;                    /* queries that did not succeed, likewise */
} run_ctx;

static void count(run_ctx *r, svc_query_outcome outcome)
{
    r->counts[outcome]++;
    r->failures += outcome != SVC_Q_OK;
}

/* Publish the job (RUNNING -> DONE) and its counts. An abandoned job's queries were counted by
 * the loop thread (timeout, canceled), so its own counts are dropped. */
static void finish(run_ctx *r)
{
    if (!svc_job_finish(r->job))
        return;
    for (int i = 0; i < SVC_Q_OUTCOMES; i++)
        for (uint64_t n = 0; n < r->counts[i]; n++)
            svc_stat_inc(&r->stats->queries[i]);
    if (r->failures)
        atomic_fetch_add_explicit(&r->b->failures, r->failures, memory_order_relaxed);
}

/* The loop thread gave up on this job (deadline, client gone, shutdown). */
static bool abandoned(const run_ctx *r)
{
    return atomic_load_explicit(&r->job->state, memory_order_acquire) == SVC_JOB_ABANDONED;
}

static svc_query_outcome outcome_of(db_status st)
{
    switch (st) {
    case DB_OK: return SVC_Q_OK;
    case DB_SQL_ERROR: return SVC_Q_SQL_ERROR;
    case DB_RESULT_TOO_LARGE: return SVC_Q_RESULT_TOO_LARGE;
    case DB_CONN_LOST: break;
    }
    return SVC_Q_DB_UNAVAILABLE;
}

/* Run query i into its slot, timing it; the caller counts the outcome. */
static db_status run_query(run_ctx *r, int i)
{
    const http_query *q = &r->d->queries[i];
    db_exec_opts opts = {.rows_as_objects = r->d->rows_as_objects,
                         .int8_as_number = r->d->int8_as_number,
                         .max_rows = r->d->max_rows,
                         /* alone in a read-only transaction: cancelling it loses nothing */
                         .cancel_at_max_rows = r->d->read_only && r->d->mode == HTTP_MODE_PARALLEL,
                         .reply_bytes = &r->b->reply_bytes,
                         .max_reply_bytes = r->b->max_reply_bytes};
    struct timespec t0;
    clock_gettime(CLOCK_MONOTONIC, &t0);
    db_status st = db_exec_query(r->conn, q->id, q->sql, q->nparams,
                                 (const char *const *)q->params, &opts, &r->b->slots[i]);
    svc_hist_observe(&r->stats->query_duration, svc_clock_ns_since(&t0));
    return st;
}

/* After a failed control statement: the slot says why. */
static void put_command_error(db_buf *out, const char *id, db_status st, db_buf *err)
{
    if (st == DB_CONN_LOST) {
        db_result_error(out, id, "db_unavailable", "the database connection was lost");
        return;
    }
    db_buf_putc(out, '{');
    if (id) {
        db_buf_puts(out, "\"id\":");
        db_buf_json_string(out, id, strlen(id));
        db_buf_putc(out, ',');
    }
    db_buf_puts(out, "\"error\":");
    db_buf_append(out, err->data, err->len);
    db_buf_putc(out, '}');
}

/*
 * Parallel mode: one query in its own transaction. A read-only batch wraps it in BEGIN READ
 * ONLY .. COMMIT, so PostgreSQL itself refuses writes. A transaction the query leaves open
 * (BEGIN as a query) is rolled back so it cannot reach the next batch on this connection.
 */
static db_status run_parallel(run_ctx *r, int i)
{
    db_buf err = DB_BUF_INIT;
    db_status st;

    if (r->d->read_only) {
        /* The SELECT takes the transaction's first snapshot before any client statement, so a
         * query can no longer switch it to read-write (SET transaction_read_only = off). */
        st = db_exec_command(r->conn, "BEGIN READ ONLY; SELECT 1", &err);
        if (st != DB_OK) {
            put_command_error(&r->b->slots[i], r->d->queries[i].id, st, &err);
            count(r, outcome_of(st));
            goto out;
        }
    }
    st = run_query(r, i);
    if (st == DB_OK && r->d->read_only && !db_conn_in_transaction(r->conn)) {
        /* COMMIT/ROLLBACK as the query ended the read-only transaction: say so. */
        db_buf_reset(&r->b->slots[i]);
        db_result_error(&r->b->slots[i], r->d->queries[i].id, "transaction_ended",
                        "this query ended the read-only transaction");
        st = DB_SQL_ERROR;
    }
    count(r, outcome_of(st));
    if (st != DB_CONN_LOST && db_conn_in_transaction(r->conn)) {
        const char *end = r->d->read_only && st == DB_OK ? "COMMIT" : "ROLLBACK";
        if (db_exec_command(r->conn, end, NULL) == DB_CONN_LOST)
            st = DB_CONN_LOST;
    }
out:
    db_buf_free(&err);
    return st;
}

/*
 * Transaction mode: every query in order inside BEGIN .. COMMIT on this one connection. At the
 * first failure roll back and mark the rest not_run; COMMIT's own failure is commit_error.
 */
static db_status run_transaction(run_ctx *r)
{
    svc_batch *b = r->b;
    const http_batch_req *d = r->d;
    db_buf err = DB_BUF_INIT;
    char begin[96];
    int i = 0;
    db_status st;

    /* Read-only: take the first snapshot at once (see run_parallel). */
    snprintf(begin, sizeof(begin), "BEGIN ISOLATION LEVEL %s%s", isolation_sql[d->isolation],
             d->read_only ? " READ ONLY; SELECT 1" : "");
    st = db_exec_command(r->conn, begin, &err);
    if (st != DB_OK) {
        put_command_error(&b->slots[0], d->queries[0].id, st, &err);
        count(r, outcome_of(st));
        i = 1;
        goto not_run;
    }
    for (; i < d->nqueries; i++) {
        /* A cancel stops only the statement running when it lands: check between statements
         * too, or a timed-out transaction could go on and commit. */
        if (abandoned(r)) {
            st = DB_SQL_ERROR;
            goto not_run;
        }
        st = run_query(r, i);
        if (st == DB_OK && (!db_conn_in_transaction(r->conn) ||
                            db_sql_ends_transaction(d->queries[i].sql))) {
            /* COMMIT/ROLLBACK as a query ended fanout's transaction: what follows would run
             * outside it (or, after AND CHAIN, in another one, which fanout's COMMIT would
             * then commit as if it were the batch), so stop here and say so. */
            db_buf_reset(&b->slots[i]);
            db_result_error(&b->slots[i], d->queries[i].id, "transaction_ended",
                            "this query ended the batch's transaction; queries before it may "
                            "have been committed");
            st = DB_SQL_ERROR;
        }
        count(r, outcome_of(st));
        if (st != DB_OK) {
            i++;
            goto not_run;
        }
    }
    if (!svc_job_committing(r->job)) { /* abandoned */
        st = DB_SQL_ERROR;
        goto not_run;
    }
    /* Aborted though every query said OK (fanout's own type lookup, say, failed in it): COMMIT
     * answers with a ROLLBACK, which must not read as committed. */
    bool aborted = db_conn_in_failed_transaction(r->conn);
    st = db_exec_command(r->conn, "COMMIT", &b->commit_error);
    if (st == DB_OK && aborted) {
        db_encode_sql_error(&b->commit_error, "25P02",
                            "the transaction was aborted before COMMIT, which rolled it back",
                            NULL, NULL, NULL, NULL);
        st = DB_SQL_ERROR;
    }
    b->committed = st == DB_OK;
    /* Abandoned since it went COMMITTING: the deadline (or the client leaving) came during it. */
    if (b->committed && abandoned(r))
        svc_log_warn("a transaction batch committed after its reply had said \"committed\": "
                     "false: its deadline passed or its client left during COMMIT");
    if (!b->committed)
        atomic_fetch_add_explicit(&b->failures, 1, memory_order_relaxed);
    goto out;

not_run:
    for (; i < d->nqueries; i++) {
        db_result_error(&b->slots[i], d->queries[i].id, "not_run",
                        "not run: an earlier query in the transaction failed");
        count(r, SVC_Q_NOT_RUN);
    }
    if (st != DB_CONN_LOST && db_exec_command(r->conn, "ROLLBACK", NULL) == DB_CONN_LOST)
        st = DB_CONN_LOST;
    b->committed = false;
out:
    db_buf_free(&err);
    return st;
}

bool svc_job_run(svc_job *job, db_conn *conn, svc_worker_stats *stats)
{
    run_ctx r = {.job = job, .b = job->batch, .d = job->batch->desc, .conn = conn, .stats = stats};
    db_status st = r.d->mode == HTTP_MODE_TRANSACTION ? run_transaction(&r)
                                                      : run_parallel(&r, job->index);
    finish(&r);
    return st != DB_CONN_LOST && db_conn_ok(conn);
}

/* One svc_job_run_pipeline call, for its done callback. */
typedef struct pipe_ctx {
    svc_job *const *jobs;
    db_pipe_query *qs;
    db_conn *conn;
    svc_worker_stats *stats;
    svc_speed *speed;
    const atomic_uint *cancels; /* the worker's count of cancels sent to this run */
} pipe_ctx;

/* Query i of the pipeline is final (db_exec_pipeline): publish its job at once. */
static void pipeline_done(void *arg, int i)
{
    pipe_ctx *x = arg;
    svc_job *job = x->jobs[i];
    const db_pipe_query *q = &x->qs[i];
    run_ctx r = {.job = job, .b = job->batch, .d = job->batch->desc, .conn = x->conn,
                 .stats = x->stats};
    uint64_t ns = q->elapsed_ms > 0 ? (uint64_t)(q->elapsed_ms * 1e6) : 0;

    svc_hist_observe(&x->stats->query_duration, ns);
    if (q->resent)
        svc_stat_inc(&x->stats->resent);
    if (x->speed && q->status != DB_CONN_LOST)
        svc_speed_observe(x->speed, job->sql_hash, ns);
    count(&r, outcome_of(q->status));
    finish(&r);
}

/* Is query i's job still wanted (not abandoned at a deadline)? */
static bool pipeline_wanted(void *arg, int i)
{
    const pipe_ctx *x = arg;
    return atomic_load_explicit(&x->jobs[i]->state, memory_order_acquire) != SVC_JOB_ABANDONED;
}

/* How many deadline cancels were sent to this run (svc_batch_abandon, then svc_pool_cancel)?
 * Each may stop two statements (db_pipe_hooks.cancels_sent). */
static int pipeline_cancels(void *arg)
{
    const pipe_ctx *x = arg;
    return (int)atomic_load_explicit(x->cancels, memory_order_acquire);
}

/* How a batch's queries run in a pipeline. */
static db_exec_opts pipeline_opts(svc_batch *b)
{
    const http_batch_req *d = b->desc;
    return (db_exec_opts){.rows_as_objects = d->rows_as_objects,
                          .int8_as_number = d->int8_as_number,
                          .max_rows = d->max_rows,
                          .reply_bytes = &b->reply_bytes,
                          .max_reply_bytes = b->max_reply_bytes,
                          .read_only = d->read_only,
                          .cancel_at_max_rows = d->read_only}; /* alone only (db/exec.h) */
}

bool svc_job_run_pipeline(svc_job *const *jobs, int n, db_conn *conn, svc_worker_stats *stats,
                          bool reset, bool *reset_ok, svc_speed *speed, const atomic_uint *cancels)
{
    db_exec_opts opts[DB_PIPELINE_MAX];
    db_pipe_part parts[DB_PIPELINE_MAX] = {{0}}; /* (gcc cannot tell that n > 0) */
    db_pipe_query qs[DB_PIPELINE_MAX];
    pipe_ctx x = {.jobs = jobs, .qs = qs, .conn = conn, .stats = stats, .speed = speed,
                  .cancels = cancels};
    db_pipe_hooks hooks = {.query_done = pipeline_done, .query_wanted = pipeline_wanted,
                           .cancels_sent = pipeline_cancels, .arg = &x};
    int nparts = 0;

    n = n < DB_PIPELINE_MAX ? n : DB_PIPELINE_MAX;
    for (int i = 0; i < n; i++) {
        svc_batch *b = jobs[i]->batch;
        const http_query *q = &b->desc->queries[jobs[i]->index];
        if (i == 0 || b != jobs[i - 1]->batch) { /* a batch's jobs come in a row */
            opts[nparts] = pipeline_opts(b);
            parts[nparts] = (db_pipe_part){.n = 0, .opts = &opts[nparts]};
            nparts++;
        }
        parts[nparts - 1].n++;
        qs[i] = (db_pipe_query){.id = q->id, .sql = q->sql, .sql_hash = jobs[i]->sql_hash,
                                .nparams = q->nparams,
                                .params = (const char *const *)q->params,
                                .out = &b->slots[jobs[i]->index],
                                /* measured quick: sharing a transaction holds no lock long */
                                .share = jobs[i]->quick && jobs[i]->reads};
    }
    /* A read alone in its part may take a block too, quick or not: it shares it with nobody,
     * and the reset behind it is then the short one (db/session.c). */
    for (int k = 0, first = 0; k < nparts; first += parts[k].n, k++)
        if (parts[k].n == 1 && jobs[first]->reads)
            qs[first].share = true;
    db_status st = db_exec_pipeline(conn, qs, parts, nparts, reset, &hooks);
    if (n > 1) {
        svc_stat_inc(&stats->pipelines);
        svc_stat_add(&stats->pipelined, (uint64_t)n);
    }
    if (nparts > 1)
        svc_stat_add(&stats->batched, (uint64_t)nparts);
    *reset_ok = st == DB_OK;
    /* None of these statements can open a transaction block; should one be open anyway, it
     * must not reach the next batch, and the reset that ran inside it is undone too. */
    if (st != DB_CONN_LOST && db_conn_in_transaction(conn)) {
        *reset_ok = false;
        if (db_exec_command(conn, "ROLLBACK", NULL) == DB_CONN_LOST)
            st = DB_CONN_LOST;
    }
    return st != DB_CONN_LOST && db_conn_ok(conn);
}

void svc_job_fail(svc_job *job, const char *message, svc_worker_stats *stats)
{
    run_ctx r = {.job = job, .b = job->batch, .d = job->batch->desc, .stats = stats};
    int first = job->index, last = job->index + 1;

    if (r.d->mode == HTTP_MODE_TRANSACTION) {
        first = 0;
        last = r.d->nqueries;
        r.b->committed = false;
    }
    for (int i = first; i < last; i++) {
        db_result_error(&r.b->slots[i], r.d->queries[i].id, "db_unavailable", message);
        count(&r, SVC_Q_DB_UNAVAILABLE);
    }
    finish(&r);
}
