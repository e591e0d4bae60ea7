/*
 * db_conn_reset: give a pooled connection back its fresh-session state, whatever the last batch
 * did to it, in one round trip. Called by the worker that owns the connection between batches.
 *
 * What a query can leave behind, and what undoes it:
 *   - settings, by SET or set_config() inside any function, and SET ROLE: RESET ALL restores the
 *     values the session started with, which include fanout's pinned startup options;
 *   - SET SESSION AUTHORIZATION: ... DEFAULT (before RESET ALL, which does not cover it);
 *   - cursors WITH HOLD: CLOSE ALL; LISTEN: UNLISTEN *; session advisory locks:
 *     pg_advisory_unlock_all(); temporary tables: DISCARD TEMP; sequence state: DISCARD SEQUENCES;
 *   - prepared statements made with PREPARE (also by a function, EXECUTE 'PREPARE ...'): the
 *     last statement counts them, and fanout's own; when a client made any, or dropped one of
 *     fanout's (DEALLOCATE), DEALLOCATE ALL follows and fanout's cache starts over.
 * An open transaction was already rolled back by the job. Not DISCARD ALL, nor DEALLOCATE ALL
 * every time: they would throw away fanout's prepared statements (db_stmts) after every batch.
 * The statements go out together in one pipeline segment: one round trip, or none of its own
 * when a worker sends them right after a batch's queries (db_exec_pipeline's `after`).
 */
#include <stdlib.h>
#include <string.h>

#include "db/conn.h"
#include "db/exec.h"

const char *const db_reset_sql[] = {
    "SET SESSION AUTHORIZATION DEFAULT", "RESET ALL", "CLOSE ALL", "UNLISTEN *",
    "SELECT pg_advisory_unlock_all()", "DISCARD TEMP", "DISCARD SEQUENCES",
    /* last: the check db_reset_statements reads */
    ("SELECT count(*) FILTER (WHERE from_sql), count(*) FILTER (WHERE NOT from_sql) "
     "FROM pg_catalog.pg_prepared_statements")};
const int db_reset_nsql = sizeof(db_reset_sql) / sizeof(db_reset_sql[0]);

bool db_reset_statements(db_conn *c, const PGresult *check)
{
    db_stmts *stmts = db_conn_stmts(c);

    if (PQresultStatus(check) == PGRES_TUPLES_OK && PQntuples(check) == 1 &&
        strcmp(PQgetvalue(check, 0, 0), "0") == 0 &&
        strtoull(PQgetvalue(check, 0, 1), NULL, 10) == db_stmts_count(stmts))
        return true; /* no PREPARE of a client's, and fanout's own statements all there */
    db_stmts_clear(stmts);
    return db_exec_command(c, "DEALLOCATE ALL", NULL) == DB_OK;
}

bool db_conn_reset(db_conn *c)
{
    return db_exec_pipeline(c, NULL, 0, true, NULL) == DB_OK;
}
