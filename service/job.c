/*
 * svc_job: what a worker does with one job on its own connection. Worker threads only: touches
 * the job's result slots and the worker's db_conn, never a libevent object.
 */
#include "service/batch.h"

#include <stdio.h>
#include <string.h>

#include "db/exec.h"

static const char *const isolation_sql[] = {
    [HTTP_ISO_READ_COMMITTED] = "READ COMMITTED",
    [HTTP_ISO_REPEATABLE_READ] = "REPEATABLE READ",
    [HTTP_ISO_SERIALIZABLE] = "SERIALIZABLE",
};

static db_exec_opts exec_opts(const http_batch_req *d)
{
    return (db_exec_opts){.rows_as_objects = d->rows_as_objects,
                          .int8_as_number = d->int8_as_number,
                          .max_rows = d->max_rows};
}

static db_status run_query(db_conn *conn, const http_batch_req *d, int i, db_buf *out)
{
    const http_query *q = &d->queries[i];
    db_exec_opts opts = exec_opts(d);
    return db_exec_query(conn, q->id, q->sql, q->nparams, (const char *const *)q->params, &opts,
                         out);
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
 * ONLY .. COMMIT, so PostgreSQL itself refuses writes.
 */
static db_status run_parallel(svc_job *job, db_conn *conn)
{
    svc_batch *b = job->batch;
    const http_batch_req *d = b->desc;
    db_buf *out = &b->slots[job->index];
    db_buf err = DB_BUF_INIT;
    db_status st;

    if (!d->read_only) {
        st = run_query(conn, d, job->index, out);
        /* A query like BEGIN must not leave a transaction open for the next batch. */
        if (st != DB_CONN_LOST && db_conn_in_transaction(conn) &&
            db_exec_command(conn, "ROLLBACK", NULL) == DB_CONN_LOST)
            st = DB_CONN_LOST;
        return st;
    }
    st = db_exec_command(conn, "BEGIN READ ONLY", &err);
    if (st != DB_OK) {
        put_command_error(out, d->queries[job->index].id, st, &err);
        goto out;
    }
    st = run_query(conn, d, job->index, out);
    if (st != DB_CONN_LOST) {
        /* A failed statement leaves the transaction aborted; either way end it. */
        db_status end = db_exec_command(conn, st == DB_OK ? "COMMIT" : "ROLLBACK", NULL);
        if (end == DB_CONN_LOST)
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
static db_status run_transaction(svc_job *job, db_conn *conn)
{
    svc_batch *b = job->batch;
    const http_batch_req *d = b->desc;
    db_buf err = DB_BUF_INIT;
    char begin[64];
    int i = 0;
    db_status st;

    snprintf(begin, sizeof(begin), "BEGIN ISOLATION LEVEL %s%s", isolation_sql[d->isolation],
             d->read_only ? " READ ONLY" : "");
    st = db_exec_command(conn, begin, &err);
    if (st != DB_OK) {
        put_command_error(&b->slots[0], d->queries[0].id, st, &err);
        i = 1;
        goto not_run;
    }
    for (; i < d->nqueries; i++) {
        st = run_query(conn, d, i, &b->slots[i]);
        if (st == DB_OK && !db_conn_in_transaction(conn)) {
            /* COMMIT/ROLLBACK as a query ended fanout's transaction: what follows would run
             * outside it, so stop here and say so. */
            db_buf_reset(&b->slots[i]);
            db_result_error(&b->slots[i], d->queries[i].id, "transaction_ended",
                            "this query ended the batch's transaction; queries before it may "
                            "have been committed");
            st = DB_SQL_ERROR;
        }
        if (st != DB_OK) {
            i++;
            goto not_run;
        }
    }
    st = db_exec_command(conn, "COMMIT", &b->commit_error);
    b->committed = st == DB_OK;
    goto out;

not_run:
    for (; i < d->nqueries; i++)
        db_result_error(&b->slots[i], d->queries[i].id, "not_run",
                        "not run: an earlier query in the transaction failed");
    if (st != DB_CONN_LOST && db_exec_command(conn, "ROLLBACK", NULL) == DB_CONN_LOST)
        st = DB_CONN_LOST;
    b->committed = false;
out:
    db_buf_free(&err);
    return st;
}

bool svc_job_run(svc_job *job, db_conn *conn)
{
    db_status st = job->batch->desc->mode == HTTP_MODE_TRANSACTION ? run_transaction(job, conn)
                                                                   : run_parallel(job, conn);
    return st != DB_CONN_LOST && db_conn_ok(conn);
}

void svc_job_fail(svc_job *job, const char *message)
{
    svc_batch *b = job->batch;
    const http_batch_req *d = b->desc;
    int first = job->index, last = job->index + 1;

    if (d->mode == HTTP_MODE_TRANSACTION) {
        first = 0;
        last = d->nqueries;
        b->committed = false;
    }
    for (int i = first; i < last; i++)
        db_result_error(&b->slots[i], d->queries[i].id, "db_unavailable", message);
}
