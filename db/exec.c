/*
 * db_exec: one statement on the calling worker's connection -> one JSON result object.
 * See exec.h. Runs on the worker that owns the db_conn.
 */
#include "db/exec.h"

#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "db/encode.h"

static double now_ms(void)
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
static void put_conn_lost(db_buf *out, const char *id, PGconn *pg)
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

/* The result set's columns and rows, with column names escaped once, not once per row. */
static void put_rows(db_conn *c, db_buf *out, const PGresult *res, int nrows,
                     const db_exec_opts *opts)
{
    int ncols = PQnfields(res);
    db_buf keys = DB_BUF_INIT; /* "name": for each column, back to back (object rows only) */
    size_t *key_end = NULL;

    db_buf_puts(out, "\"columns\":[");
    for (int j = 0; j < ncols; j++) {
        const char *name = PQfname(res, j);
        Oid type = PQftype(res, j);
        if (j)
            db_buf_putc(out, ',');
        db_buf_puts(out, "{\"name\":");
        db_buf_json_string(out, name, strlen(name));
        db_buf_puts(out, ",\"type\":");
        const char *tname = db_conn_type_name(c, type);
        db_buf_json_string(out, tname, strlen(tname));
        db_buf_puts(out, ",\"type_oid\":");
        db_buf_long(out, type);
        db_buf_putc(out, '}');
    }
    db_buf_puts(out, "],\"rows\":[");

    if (opts->rows_as_objects && ncols > 0) {
        key_end = malloc((size_t)ncols * sizeof(*key_end));
        if (!key_end) {
            out->oom = true;
            goto out;
        }
        for (int j = 0; j < ncols; j++) {
            const char *name = PQfname(res, j);
            db_buf_json_string(&keys, name, strlen(name));
            db_buf_putc(&keys, ':');
            key_end[j] = keys.len;
        }
        if (keys.oom) {
            out->oom = true;
            goto out;
        }
    }
    for (int i = 0; i < nrows && !out->oom; i++) {
        if (i)
            db_buf_putc(out, ',');
        db_buf_putc(out, key_end ? '{' : '[');
        for (int j = 0; j < ncols; j++) {
            if (j)
                db_buf_putc(out, ',');
            if (key_end) {
                size_t start = j ? key_end[j - 1] : 0;
                db_buf_append(out, keys.data + start, key_end[j] - start);
            }
            db_encode_value(out, PQftype(res, j), PQgetvalue(res, i, j),
                            (size_t)PQgetlength(res, i, j), PQgetisnull(res, i, j),
                            opts->int8_as_number);
        }
        db_buf_putc(out, key_end ? '}' : ']');
    }
    db_buf_putc(out, ']');
out:
    free(key_end);
    db_buf_free(&keys);
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

db_status db_exec_query(db_conn *c, const char *id, const char *sql, int nparams,
                        const char *const *params, const db_exec_opts *opts, db_buf *out)
{
    PGconn *pg = db_conn_pg(c);
    double started = now_ms();
    PGresult *res = PQexecParams(pg, sql, nparams, NULL, params, NULL, NULL, 0);
    ExecStatusType st = PQresultStatus(res);
    db_status status = DB_OK;

    switch (st) {
    case PGRES_TUPLES_OK:
    case PGRES_COMMAND_OK: {
        const char *word = NULL;
        size_t wlen = db_command_word(PQcmdStatus(res), &word);
        bool rowset = st == PGRES_TUPLES_OK;
        int ntuples = PQntuples(res);
        int nrows = rowset && ntuples > opts->max_rows ? (int)opts->max_rows : ntuples;
        const char *affected = PQcmdTuples(res);

        db_buf_putc(out, '{');
        put_id(out, id);
        db_buf_puts(out, "\"command\":");
        db_buf_json_string(out, word ? word : "", wlen);
        db_buf_puts(out, ",\"row_count\":");
        if (rowset)
            db_buf_long(out, nrows);
        else
            db_buf_puts(out, *affected ? affected : "0");
        if (rowset) {
            db_buf_puts(out, nrows < ntuples ? ",\"truncated\":true," : ",\"truncated\":false,");
            put_rows(c, out, res, nrows, opts);
        }
        db_buf_puts(out, ",\"elapsed_ms\":");
        db_buf_double(out, now_ms() - started, 3);
        db_buf_putc(out, '}');
        break;
    }
    case PGRES_EMPTY_QUERY:
        db_result_error(out, id, "empty_query", "the query is empty");
        status = DB_SQL_ERROR;
        break;
    case PGRES_COPY_IN:
    case PGRES_COPY_OUT:
    case PGRES_COPY_BOTH:
        PQclear(res);
        res = NULL;
        if (!finish_copy(pg, st)) {
            put_conn_lost(out, id, pg);
            status = DB_CONN_LOST;
            break;
        }
        db_result_error(out, id, "unsupported",
                        "COPY FROM STDIN and COPY TO STDOUT are not supported by fanout");
        status = DB_SQL_ERROR;
        break;
    default:
        if (PQstatus(pg) != CONNECTION_OK) {
            put_conn_lost(out, id, pg);
            status = DB_CONN_LOST;
            break;
        }
        db_buf_putc(out, '{');
        put_id(out, id);
        db_buf_puts(out, "\"error\":");
        put_sql_error(out, res);
        db_buf_putc(out, '}');
        status = DB_SQL_ERROR;
        break;
    }
    PQclear(res);
    return status;
}

db_status db_exec_command(db_conn *c, const char *sql, db_buf *err)
{
    PGconn *pg = db_conn_pg(c);
    PGresult *res = PQexec(pg, sql);
    db_status status = DB_OK;

    if (PQresultStatus(res) != PGRES_COMMAND_OK) {
        status = PQstatus(pg) == CONNECTION_OK ? DB_SQL_ERROR : DB_CONN_LOST;
        if (err && status == DB_SQL_ERROR)
            put_sql_error(err, res);
        else if (err)
            db_encode_error(err, "db_unavailable", "the database connection was lost");
    }
    PQclear(res);
    return status;
}
