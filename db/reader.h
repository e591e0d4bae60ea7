/*
 * db_reader: reading one statement's results into its JSON result object, shared by db/exec.c
 * (a statement alone) and db/pipeline.c (statements in a pipeline). Internal to db/.
 *
 * A reader lives on the worker's stack for one statement: db_reader_read streams the rows into
 * `out` (single-row mode, one PGresult at a time) and keeps the final result; db_reader_conclude
 * writes the object's head and tail, or the error in its place, and frees what the reader holds
 * except `last`, which the caller clears (another reader may point at it: error_from).
 */
#ifndef FANOUT_DB_READER_H
#define FANOUT_DB_READER_H

#include <stdbool.h>
#include <stddef.h>
#include <libpq-fe.h>

#include "db/buf.h"
#include "db/conn.h"
#include "db/exec.h"

/* Why rows are no longer written to out. */
typedef enum db_stop_reason {
    STOP_NONE = 0,  /* still writing every row */
    STOP_MAX_ROWS,  /* a row past max_rows arrived: the result is truncated */
    STOP_TOO_LARGE, /* the reply would pass max_reply_bytes: the query fails */
    STOP_OOM        /* out could not grow (out->oom): the reply is lost anyway */
} db_stop_reason;

/* One statement's row set while it streams in. Lives on the worker's stack for one call. */
typedef struct db_reader {
    db_conn *c;               /* the worker's connection */
    const db_exec_opts *opts; /* the caller's options */
    db_buf *out;              /* the caller's buffer */
    size_t start;             /* out->len before the statement: its bytes begin here */
    PGresult *meta;           /* the row set's columns without rows, owned; NULL until seen */
    db_buf keys;              /* "name": for each column back to back (object rows only) */
    size_t *key_end;          /* end of each column's key in keys, owned; NULL: array rows */
    long nrows;               /* rows written to out */
    db_stop_reason stop;         /* why rows are no longer written */
    bool no_cancel;           /* never cancel: in a pipeline a cancel could hit the next query */
    bool cancelled;           /* our cancel request reached the server */
    PGresult *last;           /* the statement's outcome, its final non-row result, owned */
    const PGresult *error_from; /* not owned: the error to report instead (a failed Parse of
                                   the named statement it ran, sent for an earlier query) */
    double started, ended;    /* when it was sent and when its last result arrived, ms */
} db_reader;

/* Forget what the reader read: free what it holds, rd->last included, and take its bytes back
 * out of rd->out. For a statement that will be sent again. */
void db_reader_discard(db_reader *rd);

/* fanout's own statements on each connection (db/session.c), prepared with the session reset's
 * (db_reset_prepare); db_own_send sends one (named: as prepared, else unnamed). */
typedef enum db_own_stmt {
    DB_OWN_READ_ONLY, /* makes the implicit transaction it starts read-only */
    DB_OWN_BEGIN,     /* BEGIN READ ONLY */
    DB_OWN_ROLLBACK,
    DB_OWN_RESET_1,   /* the full reset's, through DB_OWN_CHECK */
    DB_OWN_CHECK = DB_OWN_RESET_1 + 6,
    DB_OWN_N
} db_own_stmt;
bool db_own_send(db_conn *c, db_own_stmt s, bool named);

/* Milliseconds on CLOCK_MONOTONIC. */
double db_now_ms(void);

/* Append a db_unavailable result from the first line of libpq's connection error. */
void db_put_conn_lost(db_buf *out, const char *id, PGconn *pg);

/* Read the statement's results to the end (NULL): rows into rd->out, the last into rd->last. */
void db_reader_read(db_reader *rd, PGconn *pg);

/* In pipeline mode: the end of one sync segment (PGRES_PIPELINE_SYNC); and one command's
 * results read to the end (NULL), the last kept for the caller to clear. */
bool db_read_sync(PGconn *pg);
PGresult *db_read_command(PGconn *pg);

/* Whether db_reader_conclude can run with no word to the server (in pipeline mode): every column
 * type is known to the connection. */
bool db_reader_concludes_offline(const db_reader *rd);

/* The statement's result object from what db_reader_read saw. Connection idle (out of pipeline
 * mode): a type name may cost a round trip. */
db_status db_reader_conclude(db_reader *rd, const char *id);

#endif
