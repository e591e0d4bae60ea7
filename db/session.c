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
 * when a worker sends them right behind a batch's queries (db_exec_pipeline's `reset`).
 *
 * Behind a part of a pipeline whose queries all ran in one read-only transaction block (BEGIN
 * READ ONLY, db/pipeline.c), the reset is shorter (DB_RESET_CHECK): that block's ROLLBACK
 * undoes every setting, role, cursor, LISTEN and temporary object made in it (a read-only
 * transaction cannot advance a sequence), which leaves what a rollback does not undo: session
 * advisory locks (pg_advisory_unlock_all) and prepared statements (the check, behind every
 * part: a client's PREPARE must not reach the parts behind it, db/pipeline.c). Two statements
 * instead of seven and no sync, so parts follow each other in one segment; the server's cost
 * of a single point select and its reset fell by a third (about 43 to 27 us). A ROLLBACK
 * outside a block would also work, but it costs a WARNING in the server's log each time.
 *
 * All of them are prepared once per connection, in one round trip, with db/pipeline.c's
 * openers (about 15 % more 10-query batches a second than parsing them each time); should a
 * client drop them (DEALLOCATE ALL), the reset runs once unnamed and prepares them again.
 */
#include <stdlib.h>
#include <string.h>

#include "db/conn.h"
#include "db/exec.h"
#include "db/reader.h"

/* fanout's own statements, prepared once per connection under these names (parsing them for
 * every batch cost a fifth of the reset): the full reset (DB_OWN_RESET_1 .. DB_OWN_CHECK, in that
 * order; the check also reads the prepared statements) and db/pipeline.c's others. */
static const struct {
    const char *name, *sql;
} own[DB_OWN_N] = {
    [DB_OWN_READ_ONLY] = {"fanout_read_only",
                          "SELECT pg_catalog.set_config('transaction_read_only', 'on', true)"},
    [DB_OWN_BEGIN] = {"fanout_begin", "BEGIN READ ONLY"},
    [DB_OWN_ROLLBACK] = {"fanout_rollback", "ROLLBACK"},
    [DB_OWN_RESET_1] = {"fanout_reset_1", "SET SESSION AUTHORIZATION DEFAULT"},
    {"fanout_reset_2", "RESET ALL"},
    {"fanout_reset_3", "CLOSE ALL"},
    {"fanout_reset_4", "UNLISTEN *"},
    {"fanout_reset_5", "DISCARD TEMP"},
    {"fanout_reset_6", "DISCARD SEQUENCES"},
    [DB_OWN_CHECK] = {"fanout_reset_check",
                      "SELECT pg_catalog.pg_advisory_unlock_all(), count(*) FILTER (WHERE from_sql), "
                      "count(*) FILTER (WHERE NOT from_sql) FROM pg_catalog.pg_prepared_statements"},
};

bool db_reset_prepare(db_conn *c)
{
    PGconn *pg = db_conn_pg(c);
    bool ok = PQenterPipelineMode(pg); /* all in one round trip: a connect waits for them */
    int sent = 0;

    for (; ok && sent < DB_OWN_N; sent++)
        ok = PQsendPrepare(pg, own[sent].name, own[sent].sql, 0, NULL);
    if (ok && PQpipelineSync(pg)) {
        for (int i = 0; i < sent; i++) { /* after a failure the rest come back aborted */
            PGresult *res = db_read_command(pg);
            ok = ok && PQresultStatus(res) == PGRES_COMMAND_OK;
            PQclear(res);
        }
        ok = db_read_sync(pg) && ok;
    } else {
        ok = false;
    }
    ok = PQexitPipelineMode(pg) && ok; /* fails only with results unread: the caller drops it */
    db_conn_set_reset_prepared(c, ok);
    return ok;
}

bool db_own_send(db_conn *c, db_own_stmt s, bool named)
{
    PGconn *pg = db_conn_pg(c);
    return named ? PQsendQueryPrepared(pg, own[s].name, 0, NULL, NULL, NULL, 0)
                 : PQsendQueryParams(pg, own[s].sql, 0, NULL, NULL, NULL, NULL, 0);
}

bool db_reset_send(db_conn *c, db_reset_kind kind)
{
    bool named = db_conn_reset_prepared(c);

    if (kind != DB_RESET_FULL) /* the block's ROLLBACK ends its transaction: no sync needed */
        return db_own_send(c, DB_OWN_CHECK, named) &&
               db_own_send(c, DB_OWN_ROLLBACK, named);
    for (int i = DB_OWN_RESET_1; i <= DB_OWN_CHECK; i++)
        if (!db_own_send(c, i, named))
            return false;
    return PQpipelineSync(db_conn_pg(c));
}

/* Read one of the reset's statements: did it succeed? Its result goes to *keep when not NULL. */
static bool read_one(PGconn *pg, PGresult **keep)
{
    PGresult *res = db_read_command(pg);
    ExecStatusType st = PQresultStatus(res);
    bool ok = st == PGRES_COMMAND_OK || st == PGRES_TUPLES_OK;

    if (keep)
        *keep = res;
    else
        PQclear(res);
    return ok;
}

bool db_reset_read(db_conn *c, db_reset_kind kind, PGresult **check)
{
    PGconn *pg = db_conn_pg(c);
    bool ok = true;

    *check = NULL;
    if (kind != DB_RESET_FULL) {
        ok = read_one(pg, check);
        return read_one(pg, NULL) && ok;
    }
    for (int i = DB_OWN_RESET_1; i <= DB_OWN_CHECK; i++)
        ok = read_one(pg, i == DB_OWN_CHECK ? check : NULL) && ok;
    return db_read_sync(pg) && ok;
}

bool db_reset_foreign(const PGresult *check)
{
    return PQresultStatus(check) != PGRES_TUPLES_OK || PQntuples(check) != 1 ||
           strcmp(PQgetvalue(check, 0, 1), "0") != 0;
}

/* Start the connection's prepared statements over: a client's own go, and so do fanout's. */
static bool deallocate_all(db_conn *c)
{
    db_stmts_clear(db_conn_stmts(c));
    db_conn_set_reset_prepared(c, false);
    return db_exec_command(c, "DEALLOCATE ALL", NULL) == DB_OK && db_reset_prepare(c);
}

bool db_reset_finish(db_conn *c, const PGresult *check)
{
    size_t mine = db_stmts_count(db_conn_stmts(c)) + (db_conn_reset_prepared(c) ? DB_OWN_N : 0);

    if (!db_reset_foreign(check) && strtoull(PQgetvalue(check, 0, 2), NULL, 10) == mine)
        return true; /* no PREPARE of a client's, and fanout's own statements all there */
    return deallocate_all(c);
}

bool db_conn_reset(db_conn *c)
{
    if (db_exec_pipeline(c, NULL, NULL, 0, true, NULL) == DB_OK)
        return true;
    /* The reset's own statements may be what is missing: once more without them. */
    if (!db_conn_ok(c) || db_conn_in_transaction(c))
        return false;
    db_stmts_clear(db_conn_stmts(c));
    db_conn_set_reset_prepared(c, false);
    return db_exec_pipeline(c, NULL, NULL, 0, true, NULL) == DB_OK &&
           (db_conn_reset_prepared(c) || deallocate_all(c));
}
