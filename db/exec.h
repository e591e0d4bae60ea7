/*
 * db_exec: running one statement on a db_conn and writing its result object as JSON text.
 *
 * Called on the worker thread that owns the connection. Every PGresult is cleared before these
 * functions return: nothing from libpq outlives the call, only the bytes written to the db_buf.
 * Parameters always travel separately from the SQL text (PQexecParams), never spliced into it.
 */
#ifndef FANOUT_DB_EXEC_H
#define FANOUT_DB_EXEC_H

#include <stdbool.h>

#include "db/buf.h"
#include "db/conn.h"

typedef enum db_status {
    DB_OK = 0,       /* the statement succeeded; out holds its result object */
    DB_SQL_ERROR,    /* the server (or fanout, for COPY/empty statements) refused it; the
                        connection is still usable; out holds {"error":{...}} */
    DB_CONN_LOST     /* the connection broke; out holds a db_unavailable error */
} db_status;

typedef struct db_exec_opts {
    bool rows_as_objects; /* rows as {"col": value} instead of [value, ...] */
    bool int8_as_number;  /* int8 as a JSON number instead of a string */
    long max_rows;        /* rows beyond this are cut and the result marked truncated */
} db_exec_opts;

/*
 * Run sql with text parameters (an entry NULL for SQL NULL) and append one result object to out:
 *   {"id":..,"command":..,"row_count":..,"truncated":..,"columns":[..],"rows":[..],"elapsed_ms":..}
 * (id only when id != NULL; truncated, columns and rows only for statements returning rows), or
 *   {"id":..,"error":{"code":..,"message":..,...}}
 */
db_status db_exec_query(db_conn *c, const char *id, const char *sql, int nparams,
                        const char *const *params, const db_exec_opts *opts, db_buf *out);

/*
 * Run a parameterless control statement (BEGIN ..., COMMIT, ROLLBACK). On failure, when err is
 * not NULL, append the error object ({"code":..,"message":..,...}, no wrapper) to it.
 */
db_status db_exec_command(db_conn *c, const char *sql, db_buf *err);

/* Append {"id":..,"error":{"code":code,"message":message}} (id only when not NULL). */
void db_result_error(db_buf *out, const char *id, const char *code, const char *message);

#endif
