/*
 * db_exec: one statement on the calling worker's connection -> one JSON result object.
 * See exec.h. Runs on the worker that owns the db_conn; touches no other thread's data except
 * the batch's reply_bytes counter (atomic).
 *
 * Row by row: PQsendQueryParams + PQsetSingleRowMode; each row is encoded into `out` as it
 * arrives and its PGresult cleared at once, so a statement holds one row of libpq memory plus
 * its own JSON, which max_rows and max_reply_bytes bound. The object's head (command, row_count,
 * truncated, columns) is known only at the end: it is written then and moved in front of the
 * rows (one memmove of this statement's bytes), so the JSON is the same as from a whole result.
 *
 * Stopping early. Past max_rows, or where the reply would pass max_reply_bytes, the rest of the
 * result is unwanted. A cancel (PQcancel on the connection's handle) spares the server the work
 * but aborts the statement and its transaction, so:
 *   - too large: always cancelled, the query fails anyway;
 *   - max_rows: cancelled only when the caller says aborting loses nothing (cancel_at_max_rows)
 *     and every column's type name is cached (the aborted transaction could not look one up).
 *     Otherwise the remaining rows are read and dropped: a truncated query inside a transaction
 *     keeps the transaction, and an INSERT .. RETURNING keeps its rows.
 * Either way PQgetResult is drained to NULL before returning, and the 57014 our cancel causes is
 * ignored. A statement cancelled before its command tag is reported as a "SELECT".
 *
 * No stray cancel: PQcancel returns only after the server has signalled the backend, and the
 * drain reads on to the backend's ReadyForQuery. A signal the backend takes after the statement
 * ended finds it waiting for a command, where PostgreSQL drops a cancel: no later statement on
 * this connection can be hit.
 */
#include "db/exec.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "db/encode.h"
#include "db/reader.h"

double db_now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec * 1e3 + (double)ts.tv_nsec / 1e6;
}

static void put_id(db_buf *out, const char *id)
{
    if (id) {
        db_buf_puts(out, "\"id\":");
        db_buf_json_string(out, id, strlen(id));
        db_buf_putc(out, ',');
    }
}

void db_result_error(db_buf *out, const char *id, const char *code, const char *message)
{
    db_buf_putc(out, '{');
    put_id(out, id);
    db_buf_puts(out, "\"error\":");
    db_encode_error(out, code, message);
    db_buf_putc(out, '}');
}

/* The first line of libpq's connection error text, for a db_unavailable message. */
void db_put_conn_lost(db_buf *out, const char *id, PGconn *pg)
{
    const char *m = PQerrorMessage(pg);
    char line[256];
    size_t len = strcspn(m, "\n");
    if (len == 0) {
        m = "the database connection was lost";
        len = strlen(m);
    }
    snprintf(line, sizeof(line), "%.*s", (int)len, m);
    db_result_error(out, id, "db_unavailable", line);
}

static void put_sql_error(db_buf *out, const PGresult *res)
{
    db_encode_sql_error(out, PQresultErrorField(res, PG_DIAG_SQLSTATE),
                        PQresultErrorField(res, PG_DIAG_MESSAGE_PRIMARY),
                        PQresultErrorField(res, PG_DIAG_MESSAGE_DETAIL),
                        PQresultErrorField(res, PG_DIAG_MESSAGE_HINT),
                        PQresultErrorField(res, PG_DIAG_STATEMENT_POSITION),
                        PQresultErrorField(res, PG_DIAG_CONSTRAINT_NAME));
}


/* First sight of the row set: keep its columns, and escape the names once for object rows. */
static bool start_rows(db_reader *rd, const PGresult *res)
{
    int ncols = PQnfields(res);

    rd->meta = PQcopyResult(res, PG_COPYRES_ATTRS);
    if (!rd->meta)
        return false;
    if (!rd->opts->rows_as_objects)
        return true;
    /* (at least one entry: key_end set is what makes rows objects, {} for zero columns too) */
    rd->key_end = malloc((size_t)(ncols > 0 ? ncols : 1) * sizeof(*rd->key_end));
    if (!rd->key_end)
        return false;
    for (int j = 0; j < ncols; j++) {
        const char *name = PQfname(res, j);
        db_buf_json_string(&rd->keys, name, strlen(name));
        db_buf_putc(&rd->keys, ':');
        rd->key_end[j] = rd->keys.len;
    }
    return !rd->keys.oom;
}

/* The reply would pass its limit with len more bytes than the batch has accepted so far. */
static bool over_limit(const db_exec_opts *o, size_t len)
{
    if (!o->reply_bytes)
        return false;
    size_t accepted = atomic_load_explicit(o->reply_bytes, memory_order_relaxed);
    return accepted > o->max_reply_bytes || len > o->max_reply_bytes - accepted;
}

/*
 * Count a finished result's len bytes into the batch's reply unless that passes the limit.
 * Compare-and-swap, so two workers cannot both take the last room. Relaxed: the counter
 * publishes no other data.
 */
static bool accept_bytes(const db_exec_opts *o, size_t len)
{
    if (!o->reply_bytes)
        return true;
    size_t accepted = atomic_load_explicit(o->reply_bytes, memory_order_relaxed);
    do {
        if (accepted > o->max_reply_bytes || len > o->max_reply_bytes - accepted)
            return false;
    } while (!atomic_compare_exchange_weak_explicit(o->reply_bytes, &accepted, accepted + len,
                                                    memory_order_relaxed, memory_order_relaxed));
    return true;
}

/* Write row i of res to out, or say why not. */
static db_stop_reason put_row(db_reader *rd, const PGresult *res, int i)
{
    db_buf *out = rd->out;
    int ncols = PQnfields(res);

    if (!rd->meta && !start_rows(rd, res)) {
        out->oom = true;
        return STOP_OOM;
    }
    if (rd->nrows >= rd->opts->max_rows)
        return STOP_MAX_ROWS;
    if (rd->nrows++)
        db_buf_putc(out, ',');
    db_buf_putc(out, rd->key_end ? '{' : '[');
    for (int j = 0; j < ncols; j++) {
        if (j)
            db_buf_putc(out, ',');
        if (rd->key_end) {
            size_t from = j ? rd->key_end[j - 1] : 0;
            db_buf_append(out, rd->keys.data + from, rd->key_end[j] - from);
        }
        size_t len = (size_t)PQgetlength(res, i, j);
        /* A value's JSON is never shorter than its text: one past the limit is not encoded
         * (a 200 MB text of control characters took 1.6 GB to find out). */
        if (over_limit(rd->opts, out->len - rd->start + len))
            return STOP_TOO_LARGE;
        db_encode_value(out, PQftype(res, j), PQgetvalue(res, i, j), len,
                        PQgetisnull(res, i, j), rd->opts->int8_as_number);
    }
    db_buf_putc(out, rd->key_end ? '}' : ']');
    if (out->oom)
        return STOP_OOM;
    return over_limit(rd->opts, out->len - rd->start) ? STOP_TOO_LARGE : STOP_NONE;
}

/* May this stop become a cancel on the server? (See the top of the file.) */
static bool may_cancel(const db_reader *rd)
{
    if (rd->no_cancel)
        return false;
    if (rd->stop != STOP_MAX_ROWS)
        return true;
    if (!rd->opts->cancel_at_max_rows)
        return false;
    for (int j = 0; j < PQnfields(rd->meta); j++)
        if (!db_conn_type_cached(rd->c, PQftype(rd->meta, j)))
            return false;
    return true;
}

/* Ask the server to stop the statement. PQcancel returns once the server has signalled the
 * backend; when it fails, the drain reads the remaining rows instead. */
static void cancel(db_reader *rd)
{
    PGcancel *handle = db_conn_cancel_handle(rd->c);
    char err[256];

    rd->cancelled = handle && PQcancel(handle, err, sizeof(err));
}

/* The statement ended with the error our own cancel caused (57014 query_canceled). */
static bool ended_by_cancel(const db_reader *rd, const PGresult *res)
{
    const char *code = PQresultErrorField(res, PG_DIAG_SQLSTATE);
    return rd->cancelled && PQresultStatus(res) == PGRES_FATAL_ERROR && code &&
           strcmp(code, "57014") == 0;
}

/* Forget what the statement wrote to out; a buffer that held only it gives its memory back. */
static void drop_written(db_reader *rd)
{
    db_buf *out = rd->out;

    if (rd->start == 0) {
        db_buf_free(out);
    } else if (!out->oom) {
        out->len = rd->start;
        out->data[out->len] = '\0';
    }
}

/* Free the row set's columns and keys the reader holds (not rd->last). */
static void free_columns(db_reader *rd)
{
    PQclear(rd->meta);
    rd->meta = NULL;
    free(rd->key_end);
    rd->key_end = NULL;
    db_buf_free(&rd->keys);
}

void db_reader_discard(db_reader *rd)
{
    drop_written(rd);
    free_columns(rd);
    PQclear(rd->last);
    rd->last = NULL;
}

/* Insert p[0..n) into b at offset at, moving the bytes after it. */
static void buf_insert(db_buf *b, size_t at, const char *p, size_t n)
{
    size_t tail = b->len - at;

    db_buf_append(b, p, n); /* makes the room; the bytes are put in place below */
    if (b->oom)
        return;
    memmove(b->data + at + n, b->data + at, tail);
    memcpy(b->data + at, p, n);
}

/*
 * Complete the row set's object around the rows already in out: its head (known only now, and
 * moved in front of the rows) and its tail. Type names may cost a round trip: the connection is
 * idle by now.
 */
static void finish_rows(db_reader *rd, const char *id, const char *word, size_t wlen)
{
    db_buf head = DB_BUF_INIT;
    const PGresult *m = rd->meta;

    db_buf_putc(&head, '{');
    put_id(&head, id);
    db_buf_puts(&head, "\"command\":");
    db_buf_json_string(&head, word, wlen);
    db_buf_puts(&head, ",\"row_count\":");
    db_buf_long(&head, rd->nrows);
    db_buf_puts(&head, rd->stop == STOP_MAX_ROWS ? ",\"truncated\":true,"
                                                 : ",\"truncated\":false,");
    db_buf_puts(&head, "\"columns\":[");
    for (int j = 0; j < PQnfields(m); j++) {
        const char *name = PQfname(m, j);
        const char *tname = db_conn_type_name(rd->c, PQftype(m, j));
        if (j)
            db_buf_putc(&head, ',');
        db_buf_puts(&head, "{\"name\":");
        db_buf_json_string(&head, name, strlen(name));
        db_buf_puts(&head, ",\"type\":");
        db_buf_json_string(&head, tname, strlen(tname));
        db_buf_puts(&head, ",\"type_oid\":");
        db_buf_long(&head, PQftype(m, j));
        db_buf_putc(&head, '}');
    }
    db_buf_puts(&head, "],\"rows\":[");
    if (head.oom)
        rd->out->oom = true;
    else
        buf_insert(rd->out, rd->start, head.data, head.len);
    db_buf_puts(rd->out, "],\"elapsed_ms\":");
    db_buf_double(rd->out, rd->ended - rd->started, 3);
    db_buf_putc(rd->out, '}');
    db_buf_free(&head);
}

static void put_too_large(db_buf *out, const char *id, size_t max)
{
    char message[128];
    snprintf(message, sizeof(message),
             "the result would make the reply larger than max_response_bytes (%zu bytes)", max);
    db_result_error(out, id, "result_too_large", message);
}

/*
 * The statement returned rows (or our cancel ended it): complete its object, or put
 * result_too_large in its place when it does not fit the reply.
 */
static db_status finish_row_set(db_reader *rd, const char *id, PGresult *last, bool by_cancel)
{
    const char *word = "SELECT"; /* cancelled before its command tag: nearly always a SELECT
                                    (a read-only transaction allows little else) */
    size_t wlen = strlen(word);

    if (rd->stop == STOP_OOM || (!rd->meta && !start_rows(rd, last))) {
        rd->out->oom = true; /* the batch's reply reports it */
        return DB_SQL_ERROR;
    }
    if (!by_cancel)
        wlen = db_command_word(PQcmdStatus(last), &word);
    if (rd->stop != STOP_TOO_LARGE) {
        finish_rows(rd, id, word, wlen);
        if (accept_bytes(rd->opts, rd->out->len - rd->start))
            return DB_OK;
    }
    drop_written(rd);
    put_too_large(rd->out, id, rd->opts->max_reply_bytes);
    return DB_RESULT_TOO_LARGE;
}

/* A statement without rows (INSERT, CREATE, SET, ...). */
static void put_command(db_reader *rd, const char *id, PGresult *res)
{
    db_buf *out = rd->out;
    const char *word, *affected = PQcmdTuples(res);
    size_t wlen = db_command_word(PQcmdStatus(res), &word);

    db_buf_putc(out, '{');
    put_id(out, id);
    db_buf_puts(out, "\"command\":");
    db_buf_json_string(out, word, wlen);
    db_buf_puts(out, ",\"row_count\":");
    db_buf_puts(out, *affected ? affected : "0");
    db_buf_puts(out, ",\"elapsed_ms\":");
    db_buf_double(out, rd->ended - rd->started, 3);
    db_buf_putc(out, '}');
    if (rd->opts->reply_bytes) /* tiny and already done on the server: counted, never refused */
        atomic_fetch_add_explicit(rd->opts->reply_bytes, out->len - rd->start,
                                  memory_order_relaxed);
}

/* The statement failed: drop its rows and say why. */
static db_status put_failure(db_reader *rd, const char *id, PGconn *pg, const PGresult *last)
{
    db_buf *out = rd->out;

    drop_written(rd);
    if (PQstatus(pg) != CONNECTION_OK) {
        db_put_conn_lost(out, id, pg);
        return DB_CONN_LOST;
    }
    if (rd->stop == STOP_TOO_LARGE) { /* failing after we gave up on it changes nothing */
        put_too_large(out, id, rd->opts->max_reply_bytes);
        return DB_RESULT_TOO_LARGE;
    }
    db_buf_putc(out, '{');
    put_id(out, id);
    db_buf_puts(out, "\"error\":");
    put_sql_error(out, last);
    db_buf_putc(out, '}');
    if (rd->opts->reply_bytes) /* bounded (DB_ERROR_TEXT_MAX): counted, never refused */
        atomic_fetch_add_explicit(rd->opts->reply_bytes, out->len - rd->start,
                                  memory_order_relaxed);
    return DB_SQL_ERROR;
}

/*
 * COPY FROM STDIN / TO STDOUT would leave the connection in copy state: end the copy and read
 * until the server is ready again, so the connection stays usable for the next job.
 */
static bool finish_copy(PGconn *pg, ExecStatusType st)
{
    PGresult *res;
    if (st == PGRES_COPY_IN) {
        PQputCopyEnd(pg, "COPY FROM STDIN is not supported by fanout");
    } else if (st == PGRES_COPY_OUT) {
        char *row;
        while (PQgetCopyData(pg, &row, 0) > 0)
            PQfreemem(row);
    }
    while ((res = PQgetResult(pg)) != NULL)
        PQclear(res);
    return PQstatus(pg) == CONNECTION_OK;
}

/* Read the statement's results to the end (NULL) whatever happens: then it is over on the
 * server. Rows go to out as they come; the final non-row result is kept in rd->last. */
void db_reader_read(db_reader *rd, PGconn *pg)
{
    PGresult *res;

    while ((res = PQgetResult(pg)) != NULL) {
        ExecStatusType st = PQresultStatus(res);
        if (st == PGRES_SINGLE_TUPLE) {
            if (rd->stop == STOP_NONE && (rd->stop = put_row(rd, res, 0)) != STOP_NONE &&
                may_cancel(rd))
                cancel(rd);
            PQclear(res);
            continue;
        }
        PQclear(rd->last);
        rd->last = res;
        if (st == PGRES_COPY_IN || st == PGRES_COPY_OUT || st == PGRES_COPY_BOTH)
            break; /* PQgetResult would return it again and again: finish_copy ends it */
    }
    rd->ended = db_now_ms();
}

static bool types_cached(const db_conn *c, const PGresult *res)
{
    for (int j = 0; j < PQnfields(res); j++)
        if (!db_conn_type_cached(c, PQftype(res, j)))
            return false;
    return true;
}

bool db_reader_concludes_offline(const db_reader *rd)
{
    ExecStatusType st = PQresultStatus(rd->last);
    if (st == PGRES_COPY_IN || st == PGRES_COPY_OUT || st == PGRES_COPY_BOTH)
        return false; /* ending the copy reads from the server */
    return (!rd->meta || types_cached(rd->c, rd->meta)) && types_cached(rd->c, rd->last);
}

/* Turn what db_reader_read saw into the statement's result object, and free the db_reader except
 * rd->last (the caller clears it: another db_reader may point at it). The connection must be
 * idle (out of pipeline mode): a type name may cost a round trip. */
db_status db_reader_conclude(db_reader *rd, const char *id)
{
    PGconn *pg = db_conn_pg(rd->c);
    PGresult *last = rd->error_from ? (PGresult *)rd->error_from : rd->last;
    ExecStatusType st = PQresultStatus(last);
    bool by_cancel = ended_by_cancel(rd, last);
    db_status status = DB_SQL_ERROR;

    switch (by_cancel ? PGRES_TUPLES_OK : st) {
    case PGRES_TUPLES_OK:
        status = finish_row_set(rd, id, last, by_cancel);
        break;
    case PGRES_COMMAND_OK:
        put_command(rd, id, last);
        status = DB_OK;
        break;
    case PGRES_EMPTY_QUERY:
        db_result_error(rd->out, id, "empty_query", "the query is empty");
        break;
    case PGRES_PIPELINE_ABORTED: /* db_exec_pipeline sends these again; should one stay */
        db_result_error(rd->out, id, "not_run",
                        "not run: a statement before it in its pipeline transaction failed");
        break;
    case PGRES_COPY_IN:
    case PGRES_COPY_OUT:
    case PGRES_COPY_BOTH:
        if (!finish_copy(pg, st)) {
            db_put_conn_lost(rd->out, id, pg);
            status = DB_CONN_LOST;
            break;
        }
        db_result_error(rd->out, id, "unsupported",
                        "COPY FROM STDIN and COPY TO STDOUT are not supported by fanout");
        break;
    default:
        status = put_failure(rd, id, pg, last);
        break;
    }
    free_columns(rd);
    return status;
}

db_status db_exec_query(db_conn *c, const char *id, const char *sql, int nparams,
                        const char *const *params, const db_exec_opts *opts, db_buf *out)
{
    PGconn *pg = db_conn_pg(c);
    db_reader rd = {.c = c, .opts = opts, .out = out, .start = out->len, .keys = DB_BUF_INIT,
                 .started = db_now_ms()};

    if (PQsendQueryParams(pg, sql, nparams, NULL, params, NULL, NULL, 0))
        (void)PQsetSingleRowMode(pg); /* cannot fail right after a send */
    db_reader_read(&rd, pg);
    db_status status = db_reader_conclude(&rd, id);
    PQclear(rd.last);
    db_conn_drop_notifies(c);
    return status;
}

db_status db_exec_command(db_conn *c, const char *sql, db_buf *err)
{
    PGconn *pg = db_conn_pg(c);
    PGresult *res = PQexec(pg, sql);
    db_status status = DB_OK;

    ExecStatusType st = PQresultStatus(res);
    if (st != PGRES_COMMAND_OK && st != PGRES_TUPLES_OK) {
        status = PQstatus(pg) == CONNECTION_OK ? DB_SQL_ERROR : DB_CONN_LOST;
        if (err && status == DB_SQL_ERROR)
            put_sql_error(err, res);
        else if (err)
            db_encode_error(err, "db_unavailable", "the database connection was lost");
    }
    PQclear(res);
    db_conn_drop_notifies(c);
    return status;
}
