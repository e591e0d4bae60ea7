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
 *   - prepared statements made with PREPARE: DEALLOCATE ALL.
 * An open transaction was already rolled back by the job. Not DISCARD ALL: it would also drop
 * cached plans fanout may keep, and it cannot run in a pipeline ahead of a batch's queries.
 * The statements go out together in one pipeline segment: one round trip, or none of its own
 * when a worker sends them right after a batch's queries (db_exec_pipeline's `after`).
 */
#include "db/conn.h"
#include "db/exec.h"

const char *const db_reset_sql[] = {
    "SET SESSION AUTHORIZATION DEFAULT", "RESET ALL", "CLOSE ALL", "UNLISTEN *",
    "SELECT pg_advisory_unlock_all()", "DISCARD TEMP", "DISCARD SEQUENCES", "DEALLOCATE ALL"};
const int db_reset_nsql = sizeof(db_reset_sql) / sizeof(db_reset_sql[0]);

bool db_conn_reset(db_conn *c)
{
    return db_exec_pipeline(c, NULL, 0, db_reset_sql, db_reset_nsql, NULL) == DB_OK;
}
