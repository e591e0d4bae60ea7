/*
 * db_exec_pipeline: a batch's queries in one round trip (libpq pipeline mode), as named
 * prepared statements from the connection's cache, with the session reset behind them. See
 * exec.h. Runs on the worker that owns the db_conn. Rows are read and encoded exactly as for a
 * single statement (db/reader.h); only the sending and the order of reading differ.
 */
#include "db/exec.h"

#include <stdio.h>
#include <string.h>

#include "db/reader.h"

bool db_read_sync(PGconn *pg)
{
    PGresult *res = PQgetResult(pg);
    bool ok = res && PQresultStatus(res) == PGRES_PIPELINE_SYNC;
    PQclear(res);
    return ok;
}

PGresult *db_read_command(PGconn *pg)
{
    PGresult *res, *last = NULL;
    while ((res = PQgetResult(pg)) != NULL) {
        PQclear(last);
        last = res;
    }
    return last;
}

/* How one query of a pipeline went out. */
typedef struct sent {
    char name[DB_STMT_NAME_MAX]; /* the named statement it executed; "" for unnamed */
    bool dealloc;                /* a DEALLOCATE of an evicted statement went first (own sync) */
    bool parse;                  /* its statement's Parse went with it */
    bool parse_failed;           /* ... and failed */
    int parsed_by;               /* the query whose Parse made its statement in this pipeline
                                    (itself when parse); -1: prepared before */
} sent;

/* Send query i: through the connection's statement cache when it has one. */
static bool send_query(PGconn *pg, db_stmts *stmts, const db_pipe_query *q, sent *sq, int i,
                       sent *all)
{
    const char *name = db_stmts_find(stmts, q->sql, q->sql_hash);

    *sq = (sent){.parsed_by = -1};
    if (name) {
        for (int j = i - 1; j >= 0 && sq->parsed_by < 0; j--)
            if (all[j].parse && strcmp(all[j].name, name) == 0)
                sq->parsed_by = j;
    } else if (stmts) {
        char evicted[DB_STMT_NAME_MAX], cmd[DB_STMT_NAME_MAX + 16];
        name = db_stmts_add(stmts, q->sql, q->sql_hash, evicted);
        if (evicted[0]) { /* fanout's own name, never request data */
            snprintf(cmd, sizeof(cmd), "DEALLOCATE %s", evicted);
            sq->dealloc = true;
            if (!PQsendQueryParams(pg, cmd, 0, NULL, NULL, NULL, NULL, 0) || !PQpipelineSync(pg))
                return false;
        }
        if (name) {
            sq->parse = true;
            sq->parsed_by = i;
            if (!PQsendPrepare(pg, name, q->sql, q->nparams, NULL))
                return false;
        }
    }
    if (name) {
        snprintf(sq->name, sizeof(sq->name), "%s", name);
        if (!PQsendQueryPrepared(pg, sq->name, q->nparams, q->params, NULL, NULL, 0))
            return false;
    } else if (!PQsendQueryParams(pg, q->sql, q->nparams, NULL, q->params, NULL, NULL, 0)) {
        return false;
    }
    return PQpipelineSync(pg);
}

/* Read query i's results (after what went ahead of it). */
static bool read_query(PGconn *pg, db_stmts *stmts, db_reader *rds, sent *sq, int i)
{
    db_reader *rd = &rds[i];
    PGresult *parse_error = NULL;

    if (sq[i].dealloc) { /* its failure matters to nobody */
        PQclear(db_read_command(pg));
        if (!db_read_sync(pg))
            return false;
    }
    if (sq[i].parse) {
        PGresult *res = db_read_command(pg);
        if (PQresultStatus(res) == PGRES_COMMAND_OK)
            PQclear(res);
        else
            parse_error = res; /* the query's own error: a syntax error, say */
    }
    (void)PQsetSingleRowMode(pg); /* for the query at the head of the pipeline */
    db_reader_read(rd, pg);
    if (parse_error) {
        PQclear(rd->last); /* PGRES_PIPELINE_ABORTED: the Parse's error says why */
        rd->last = parse_error;
        sq[i].parse_failed = true;
        db_stmts_forget(stmts, sq[i].name);
    } else if (sq[i].parsed_by >= 0 && sq[sq[i].parsed_by].parse_failed) {
        rd->error_from = rds[sq[i].parsed_by].last; /* the same text, the same Parse error */
    } else if (sq[i].name[0] && PQresultStatus(rd->last) == PGRES_FATAL_ERROR) {
        const char *code = PQresultErrorField(rd->last, PG_DIAG_SQLSTATE);
        if (code && strcmp(code, "26000") == 0)
            db_stmts_clear(stmts); /* someone deallocated fanout's statements: start over */
    }
    return PQstatus(pg) == CONNECTION_OK && db_read_sync(pg);
}

db_status db_exec_pipeline(db_conn *c, db_pipe_query *qs, int n, bool reset,
                           const db_exec_opts *opts)
{
    PGconn *pg = db_conn_pg(c);
    db_stmts *stmts = db_conn_stmts(c);
    db_reader rds[DB_PIPELINE_MAX];
    sent sq[DB_PIPELINE_MAX];
    PGresult *check = NULL;
    double t0 = db_now_ms();
    bool reset_ok = true, broken = false;
    int sent_n = 0;

    if (n > DB_PIPELINE_MAX)
        n = DB_PIPELINE_MAX; /* the caller's contract; never more readers than the array */
    if (!PQenterPipelineMode(pg)) {
        broken = true;
        goto conclude;
    }
    /* A sync after each query: each runs in its own implicit transaction, so one failure
     * aborts only itself. PQpipelineSync flushes: the server starts on the first at once. */
    for (; !broken && sent_n < n; sent_n++) {
        rds[sent_n] = (db_reader){.c = c, .opts = opts, .out = qs[sent_n].out,
                               .start = qs[sent_n].out->len, .keys = DB_BUF_INIT,
                               .no_cancel = true};
        if (!send_query(pg, stmts, &qs[sent_n], &sq[sent_n], sent_n, sq)) {
            broken = true;
            sent_n++; /* part of it may have gone out: read it like the others */
            break;
        }
    }
    if (!broken && reset && !db_reset_send(c))
        broken = true;
    for (int i = 0; i < sent_n; i++) {
        /* A query's own time starts when the one before it ended (the first: at the send). */
        rds[i].started = i ? rds[i - 1].ended : t0;
        if (!broken && !read_query(pg, stmts, rds, sq, i))
            broken = true;
        if (broken) /* whatever is left was lost with the connection */
            rds[i].ended = db_now_ms();
        qs[i].elapsed_ms = rds[i].ended - rds[i].started;
    }
    if (!broken && reset)
        reset_ok = db_reset_read(c, &check);
    if (!broken && !PQexitPipelineMode(pg))
        broken = true;
    if (!broken && reset && reset_ok)
        reset_ok = db_reset_finish(c, check);
conclude:
    /* Out of pipeline mode now (unless broken): a result may look up a type name. */
    for (int i = 0; i < n; i++) {
        if (i < sent_n) {
            qs[i].status = db_reader_conclude(&rds[i], qs[i].id);
        } else {
            db_put_conn_lost(qs[i].out, qs[i].id, pg);
            qs[i].status = DB_CONN_LOST;
        }
    }
    for (int i = 0; i < sent_n; i++)
        PQclear(rds[i].last);
    PQclear(check);
    db_conn_drop_notifies(c);
    if (broken || PQstatus(pg) != CONNECTION_OK)
        return DB_CONN_LOST;
    return reset_ok ? DB_OK : DB_SQL_ERROR;
}
