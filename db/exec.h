/*
 * db_exec: running one statement on a db_conn and writing its result object as JSON text.
 *
 * Called on the worker thread that owns the connection. Every PGresult is cleared before these
 * functions return: nothing from libpq outlives the call, only the bytes written to the db_buf.
 * Parameters always travel separately from the SQL text (PQsendQueryParams), never spliced into
 * it. Rows are read and encoded one at a time, so memory follows the limits (max_rows,
 * max_reply_bytes), not the size of the result; LISTEN notifications are dropped after each
 * statement.
 */
#ifndef FANOUT_DB_EXEC_H
#define FANOUT_DB_EXEC_H

#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "db/buf.h"
#include "db/conn.h"

typedef enum db_status {
    DB_OK = 0,       /* the statement succeeded; out holds its result object */
    DB_SQL_ERROR,    /* the server (or fanout, for COPY/empty statements) refused it; the
                        connection is still usable; out holds {"error":{...}} */
    DB_CONN_LOST,    /* the connection broke; out holds a db_unavailable error */
    DB_RESULT_TOO_LARGE /* the result would push the reply past max_reply_bytes: its rows are
                           dropped (a cancel is sent where allowed, but a statement that
                           writes has often finished by then, and its write stays unless
                           its transaction is rolled back); out holds a result_too_large
                           error; the connection is still usable */
} db_status;

typedef struct db_exec_opts {
    bool rows_as_objects; /* rows as {"col": value} instead of [value, ...] */
    bool int8_as_number;  /* int8 as a JSON number instead of a string */
    long max_rows;        /* rows beyond this are cut and the result marked truncated */
    bool cancel_at_max_rows; /* aborting the statement loses nothing (it runs alone in a
                                read-only transaction): at max_rows cancel it on the server
                                instead of reading and dropping the rest */
    _Atomic size_t *reply_bytes; /* result bytes already accepted into the reply, shared by
                                    every worker of the batch (and grown here); NULL: no limit */
    size_t max_reply_bytes;      /* the most *reply_bytes may reach, bytes */
    bool read_only;              /* db_exec_pipeline only: every query in a read-only
                                    transaction (a read-only batch) */
} db_exec_opts;

/*
 * Run sql with text parameters (an entry NULL for SQL NULL) and append one result object to out:
 *   {"id":..,"command":..,"row_count":..,"truncated":..,"columns":[..],"rows":[..],"elapsed_ms":..}
 * (id only when id != NULL; truncated, columns and rows only for statements returning rows), or
 *   {"id":..,"error":{"code":..,"message":..,...}}
 * A successful result's length is added to *opts->reply_bytes. The statement has ended on the
 * server when this returns, even when it was cancelled.
 */
db_status db_exec_query(db_conn *c, const char *id, const char *sql, int nparams,
                        const char *const *params, const db_exec_opts *opts, db_buf *out);

/*
 * Run parameterless control statements (BEGIN ..., COMMIT, ROLLBACK; several separated by ';'
 * run in one round trip, and the last one's result decides). On failure, when err is not NULL,
 * append the error object ({"code":..,"message":..,...}, no wrapper) to it.
 */
db_status db_exec_command(db_conn *c, const char *sql, db_buf *err);

/* The most queries one db_exec_pipeline call runs. */
#define DB_PIPELINE_MAX 64

/* One query of a pipeline: what to run, where its result goes, how it went. */
typedef struct db_pipe_query {
    const char *id;            /* echoed in the result object; NULL for none */
    const char *sql;           /* one statement (db_sql_pipelinable) */
    uint64_t sql_hash;         /* its db_sql_hash: the statement cache's key */
    int nparams;
    const char *const *params; /* text parameters, NULL entries for SQL NULL */
    db_buf *out;               /* its result object is appended here */
    bool share;                /* it only reads (db_sql_reads) and is quick (the caller's
                                  measure) or alone in its part: it may share (or have) a
                                  read-only transaction */
    db_status status;          /* set by db_exec_pipeline */
    bool resent;               /* set by db_exec_pipeline: it went out a second time, the
                                  read-only transaction it was in having failed before it ran
                                  (or refused it as a write) */
    double elapsed_ms;         /* its own time: from the previous query's last result (the
                                  first: from the send) to its own last result */
} db_pipe_query;

/* The queries of one batch in a pipeline: the next n of its queries, run with opts. */
typedef struct db_pipe_part {
    int n;
    const db_exec_opts *opts;
} db_pipe_part;

/* What db_exec_pipeline tells its caller, and asks it, as it goes; either may be NULL. */
typedef struct db_pipe_hooks {
    void (*query_done)(void *arg, int i);   /* query i is final: qs[i] and its result object
                                               are the caller's from now on */
    bool (*query_wanted)(void *arg, int i); /* is query i's result still wanted (a cancel
                                               that hit it was meant for it, if not) */
    int (*cancels_sent)(void *arg);         /* deadline cancels sent to this run so far (counted
                                               before PQcancel): each may stop two statements,
                                               the 57014s beyond twice that many are
                                               statement_timeout's */
    void *arg;
} db_pipe_hooks;

/*
 * Send the queries, each part (one batch's queries, with its batch's opts) followed by the session
 * reset (db/session.c) when reset, and only then read the results (libpq pipeline mode): the
 * server sees them back to back, the worker waits once instead of once a statement, and several
 * batches share a round trip and a wake-up while the reset still separates their sessions. A query runs as a named prepared statement from the connection's
 * cache (db_stmts: parsed and planned once per connection), unnamed when there is none.
 *
 * One failure leaves the others alone. Most queries get a sync of their own, so each runs in its
 * own implicit transaction. Neighbours marked `share` whose statements are cached share one
 * transaction made read-only by its first statement, and one sync: a sync costs the server a
 * commit and a flush, and libpq 15 a write. A failure there aborts the rest of that transaction
 * unrun; they go out again, each with its own sync, and so does a statement refused as a write
 * (SQLSTATE 25006: the cache remembers it and it never shares again). Read-only, the
 * transaction's rollback undoes nothing the others did. With `reset`, a shared transaction is a
 * block (BEGIN READ ONLY): when it holds all of its part's queries, the reset behind the part is
 * its ROLLBACK and an unlock (db/session.c), and the next part follows without a sync; a failure
 * then leaves everything behind it up to the next sync unrun (a block left open fails what comes
 * after that sync: 25P02), and it all goes out again in round 2 behind a ROLLBACK and a reset. With
 * opts->read_only every query runs in a read-only transaction (shared whenever its statement is
 * prepared, else its own, opened the same way; either kind failing sends its queries again), and
 * a 25006 is the query's answer.
 *
 * At most DB_PIPELINE_MAX queries; parts NULL and nparts 0: the reset alone. No cancel is sent (in
 * a pipeline it could hit the next statement): rows past max_rows or the reply limit are read and
 * dropped; except for a read-only pipeline of one query, where only the reset can follow it (its failure is DB_SQL_ERROR). Only for
 * statements that cannot change the transaction state or start a COPY (db_sql_pipelinable).
 * Each query's status and result object are set even on failure, and hooks->query_done(arg, i)
 * is called once for each query as soon as they are final: right after its results are read when
 * it will not go out again and its column types are known to the connection, else at the end. A
 * deadline that passes later then keeps the results that came back (SELECT 1 next to a
 * pg_sleep). A deadline's cancel (the worker's, from another thread) may land on any statement:
 * in a pipeline of several parts, a read-only query it cancelled that hooks->query_wanted still
 * wants goes out again (as long as there were no more 57014s in the run than twice the cancels
 * hooks->cancels_sent says went out: the server signals the backend twice for each; the others
 * are statement_timeout's, the query's answer), and a reset it failed sends the parts behind it
 * again. Returns
 * DB_CONN_LOST when the connection broke or the pipeline lost its way (drop the connection),
 * DB_SQL_ERROR when the reset failed (the queries' results stand; reset again or drop it), else
 * DB_OK.
 */
db_status db_exec_pipeline(db_conn *c, db_pipe_query *qs, const db_pipe_part *parts, int nparts,
                           bool reset, const db_pipe_hooks *hooks);

/*
 * What a statement's first keyword (after blanks and comments) says, one lexical pass:
 *   DB_SQL_READ   SELECT, WITH, VALUES, TABLE: it only reads, as far as the keyword says (a
 *                 function or a data-modifying WITH may still write; a read-only transaction
 *                 catches those);
 *   DB_SQL_WRITE  INSERT, UPDATE, DELETE;
 *   DB_SQL_OTHER  anything else.
 * READ and WRITE statements may run in a pipeline (db_sql_pipelinable): none of them can open or
 * end a transaction block or start a COPY. Conservative: OTHER runs alone.
 */
typedef enum db_sql_kind { DB_SQL_OTHER, DB_SQL_READ, DB_SQL_WRITE } db_sql_kind;
db_sql_kind db_sql_classify(const char *sql);
bool db_sql_pipelinable(const char *sql); /* classify != DB_SQL_OTHER */
bool db_sql_reads(const char *sql);       /* classify == DB_SQL_READ */

/* Does the statement end a transaction block, also when it chains a new one (COMMIT, END,
 * ROLLBACK, ABORT, with or without AND CHAIN; not ROLLBACK TO SAVEPOINT)? Lexical, like
 * db_sql_classify. */
bool db_sql_ends_transaction(const char *sql);

/* Append {"id":..,"error":{"code":code,"message":message}} (id only when not NULL). */
void db_result_error(db_buf *out, const char *id, const char *code, const char *message);

#endif
