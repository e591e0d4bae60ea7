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
 * when a worker sends them right behind a batch's queries (db_exec_pipeline's `reset`), where
 * they may end the queries' shared read-only transaction (every one of them works read-only).
 * They are prepared once per connection, in one round trip and with db/pipeline.c's read-only
 * opener (fanout_reset_N, fanout_read_only; about 15 % more 10-query batches a second than
 * parsing them each time); should a client drop them (DEALLOCATE ALL), the reset runs once
 * unnamed and prepares them again.
 */
#include <stdlib.h>
#include <string.h>

#include "db/conn.h"
#include "db/exec.h"
#include "db/reader.h"

/* The statements, prepared once per connection under these names (parsing them for every
 * batch cost a fifth of the reset). The last one also reads the prepared statements. */
static const char *const reset_sql[] = {
    "SET SESSION AUTHORIZATION DEFAULT", "RESET ALL", "CLOSE ALL", "UNLISTEN *", "DISCARD TEMP",
    "DISCARD SEQUENCES",
    ("SELECT pg_advisory_unlock_all(), count(*) FILTER (WHERE from_sql), "
     "count(*) FILTER (WHERE NOT from_sql) FROM pg_catalog.pg_prepared_statements")};
#define NRESET ((int)(sizeof(reset_sql) / sizeof(reset_sql[0])))
static const char *const reset_names[NRESET] = {
    "fanout_reset_1", "fanout_reset_2", "fanout_reset_3", "fanout_reset_4",
    "fanout_reset_5", "fanout_reset_6", "fanout_reset_7"};

/* Prepared with them: the read-only transaction's opener (db/pipeline.c). */
#define NOWN (NRESET + 1)

bool db_reset_prepare(db_conn *c)
{
    PGconn *pg = db_conn_pg(c);
    bool ok = PQenterPipelineMode(pg); /* all in one round trip: a connect waits for them */
    int sent = 0;

    for (; ok && sent < NOWN; sent++)
        ok = sent < NRESET ? PQsendPrepare(pg, reset_names[sent], reset_sql[sent], 0, NULL)
                           : PQsendPrepare(pg, DB_READ_ONLY_STMT, DB_READ_ONLY_SQL, 0, NULL);
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

bool db_reset_send(db_conn *c)
{
    PGconn *pg = db_conn_pg(c);
    bool named = db_conn_reset_prepared(c);

    for (int i = 0; i < NRESET; i++) {
        int sent = named ? PQsendQueryPrepared(pg, reset_names[i], 0, NULL, NULL, NULL, 0)
                         : PQsendQueryParams(pg, reset_sql[i], 0, NULL, NULL, NULL, NULL, 0);
        if (!sent)
            return false;
    }
    return PQpipelineSync(pg);
}

bool db_reset_read(db_conn *c, PGresult **check)
{
    PGconn *pg = db_conn_pg(c);
    bool ok = true;

    for (int i = 0; i < NRESET; i++) {
        PGresult *last = db_read_command(pg);
        ExecStatusType st = PQresultStatus(last);
        ok = ok && (st == PGRES_COMMAND_OK || st == PGRES_TUPLES_OK);
        if (i == NRESET - 1)
            *check = last;
        else
            PQclear(last);
    }
    return db_read_sync(pg) && ok;
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
    size_t own = db_stmts_count(db_conn_stmts(c)) + (db_conn_reset_prepared(c) ? NOWN : 0);

    if (PQresultStatus(check) == PGRES_TUPLES_OK && PQntuples(check) == 1 &&
        strcmp(PQgetvalue(check, 0, 1), "0") == 0 &&
        strtoull(PQgetvalue(check, 0, 2), NULL, 10) == own)
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
