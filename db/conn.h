/*
 * db_conn: one PostgreSQL connection and what fanout keeps beside it.
 *
 * A db_conn belongs to exactly one thread at a time (a worker, for the connection's whole life);
 * nothing here locks, and only its cancel handle may be used by other threads too
 * (db_conn_cancel_handle). Besides the PGconn it holds the connection's type-name cache (type
 * OID -> pg_type.typname), filled at connect time with the built-in types and lazily for others.
 *
 * Every connection is opened with settings that shape values pinned, so replies do not depend on
 * server defaults: client_encoding=UTF8, DateStyle=ISO, IntervalStyle=postgres, bytea_output=hex,
 * extra_float_digits=1, TimeZone and statement_timeout from the settings; and with resilience
 * defaults (connect_timeout, TCP keepalives, tcp_user_timeout) unless the conninfo sets them.
 */
#ifndef FANOUT_DB_CONN_H
#define FANOUT_DB_CONN_H

#include <stdbool.h>
#include <stddef.h>
#include <libpq-fe.h>

#include "db/stmt.h"

typedef struct db_conn db_conn;

typedef struct db_conn_params {
    const char *conninfo;      /* libpq conninfo string or URI; "" for libpq's defaults */
    /* Log in as this role instead of the conninfo's user, or NULL. The conninfo's password is
     * then left out: it is another role's. libpq finds the role's own in the passfile
     * (PGPASSFILE, the conninfo's passfile, ~/.pgpass), looked up by user name. */
    const char *user;
    const char *timezone;      /* pinned TimeZone, e.g. "UTC" */
    int statement_timeout_ms;  /* pinned statement_timeout, ms; 0 for none */
    int lock_timeout_ms;       /* pinned lock_timeout, ms; 0 for none */
    int idle_in_transaction_timeout_ms; /* pinned idle_in_transaction_session_timeout, ms */
    int statement_cache;       /* most named prepared statements kept (db_stmts); 0: none */
    /* Server NOTICE/WARNING text (one message, trailing newline included) goes here instead of
     * libpq's default of stderr; NULL drops them. Called on the thread using the connection. */
    void (*notice)(const char *message);
} db_conn_params;

/*
 * The keyword/value arrays fanout connects with: the user's conninfo (with p->user in place of
 * its user and password, when set), fanout's defaults for what it leaves unset, and the pinned
 * settings appended to `options` (so they win). Both
 * arrays are NULL-terminated; free with db_conninfo_free. Returns false and writes err for a
 * conninfo libpq cannot parse. Exposed so config checks and unit tests see what is used.
 */
bool db_conninfo_build(const db_conn_params *p, char ***keywords, char ***values, char *err,
                       size_t errlen) __attribute__((warn_unused_result));
void db_conninfo_free(char **keywords, char **values);

/*
 * The conninfo as "key=value" pairs with the password replaced by "*****" (for logs and
 * --check-config). Writes "(unparsable)" for a conninfo libpq cannot parse.
 */
void db_conninfo_masked(const char *conninfo, char *out, size_t outlen);

/* Is every server conninfo names on this host: a unix socket, or a name or address is_loopback
 * accepts (http_auth_host_is_loopback)? No host at all means libpq's default socket, unless
 * PGHOST says otherwise. */
bool db_conninfo_local(const char *conninfo, bool (*is_loopback)(const char *host));

/*
 * Connect (blocking: call it on a worker thread) and load the built-in type names. Returns NULL
 * and writes a one-line reason to err on failure. The caller owns the result: db_conn_close.
 */
db_conn *db_conn_open(const db_conn_params *p, char *err, size_t errlen);
void db_conn_close(db_conn *c);

PGconn *db_conn_pg(db_conn *c);

/* The connection's prepared-statement cache; NULL when it keeps none. Owner thread only. */
db_stmts *db_conn_stmts(db_conn *c);
bool db_conn_ok(const db_conn *c); /* the connection is not known to be broken */

/* Undo every session state change a batch can make (db/session.c); false when it failed, and
 * the connection should not serve another batch. One round trip. */
bool db_conn_reset(db_conn *c);

/*
 * The reset's parts (db/session.c), for a pipeline that carries it behind its queries:
 * db_reset_prepare prepares its statements, and db/pipeline.c's openers (db_own_stmt), in one
 * round trip (false: not prepared; still usable unless out of pipeline mode failed);
 * db_reset_send sends the statements of its kind (as the connection's named statements when
 * db_reset_prepare made them, else unnamed); db_reset_read reads them (false when a statement
 * failed) and hands over the check's result; db_reset_foreign says whether it shows a
 * client's prepared statement (or is not a check at all); once out of pipeline mode,
 * db_reset_finish reads it and, when a client made prepared statements of its own or dropped
 * fanout's, runs DEALLOCATE ALL and starts fanout's statements over. False: the reset failed.
 */
typedef enum db_reset_kind {
    DB_RESET_FULL, /* every statement, then a sync */
    DB_RESET_CHECK /* closing a read-only transaction block: the check (which unlocks), ROLLBACK;
                      no sync */
} db_reset_kind;
bool db_reset_prepare(db_conn *c);
bool db_reset_send(db_conn *c, db_reset_kind kind);
bool db_reset_read(db_conn *c, db_reset_kind kind, PGresult **check);
bool db_reset_foreign(const PGresult *check);
bool db_reset_finish(db_conn *c, const PGresult *check);

/* Whether the reset's statements and the openers are prepared on the connection
 * (db/session.c keeps it). */
bool db_conn_reset_prepared(const db_conn *c);
void db_conn_set_reset_prepared(db_conn *c, bool prepared);

/* Did the server send a FATAL while no query ran (the connection is ending)? */
bool db_conn_fatal_seen(const db_conn *c);

/* The idle connection is still usable: polls its socket, no round trip (db/health.c). */
bool db_conn_alive(db_conn *c);

/* A transaction is open (or aborted) on the connection: libpq knows without a round trip. */
bool db_conn_in_transaction(const db_conn *c);
/* ... and it is aborted: a statement in it failed, so COMMIT would roll it back. */
bool db_conn_in_failed_transaction(const db_conn *c);

/*
 * The connection's cancel handle (PQgetCancel, made once at connect time; NULL when libpq could
 * not make one). Any thread may pass it to PQcancel, several at once: libpq only reads it. It
 * lives until db_conn_close, so a thread other than the owner must be done with it by then.
 */
PGcancel *db_conn_cancel_handle(db_conn *c);

/* Free every LISTEN notification libpq has collected: fanout delivers none, and they would
 * otherwise pile up in libpq's memory for the connection's life. Owner thread only. */
void db_conn_drop_notifies(db_conn *c);

/*
 * The pg_type name of a type OID, from the cache; on a miss asks the server (one round trip,
 * then cached). Returns "unknown" when the server cannot say. The string lives as long as c.
 */
const char *db_conn_type_name(db_conn *c, Oid type);

/* The type's name when the cache holds it, else NULL; never a round trip. */
const char *db_conn_type_cached(const db_conn *c, Oid type);

#endif
