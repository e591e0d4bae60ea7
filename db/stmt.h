/*
 * db_stmts: the named prepared statements fanout keeps on one connection, by SQL text, so a
 * statement it runs again is only bound and executed, not parsed and planned each time.
 *
 * Bounded: at most `capacity` statements; the least recently used one goes when a new one needs
 * room (the caller deallocates it on the server). Names are "fanout_<n>" from a per-connection
 * counter that never repeats, so a name is never reused for other SQL text. A user's own PREPARE
 * shares the server's namespace: the session reset finds those and clears both (db/session.c).
 *
 * Belongs to its db_conn and so to one thread; nothing here locks or talks to the server.
 */
#ifndef FANOUT_DB_STMT_H
#define FANOUT_DB_STMT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define DB_STMT_NAME_MAX 32 /* room for a name, NUL included */

typedef struct db_stmts db_stmts;

/* A cache of up to capacity statements; NULL when capacity is 0 (no cache) or out of memory. */
db_stmts *db_stmts_new(int capacity);
void db_stmts_free(db_stmts *s);

/* The name sql (whose db_sql_hash is hash) is prepared under, marked most recently used; NULL
 * when it is not. When found and writes is not NULL, *writes says whether it was marked. */
const char *db_stmts_find(db_stmts *s, const char *sql, uint64_t hash, bool *writes);

/*
 * Name a new statement for sql and remember it. When the cache is full, the least recently used
 * statement is dropped and its name written to evicted (else evicted is ""): deallocate it on
 * the server. Returns the new name (it lives until the entry is dropped), or NULL when out of
 * memory (run the statement unnamed).
 */
const char *db_stmts_add(db_stmts *s, const char *sql, uint64_t hash,
                         char evicted[DB_STMT_NAME_MAX]);

/* Drop the entry of name (its Parse failed, so the server does not have it). */
void db_stmts_forget(db_stmts *s, const char *name);

/* Remember that name's statement writes (it failed in a read-only transaction): it never
 * again shares a pipeline's read-only transaction with others (db_exec_pipeline). */
void db_stmts_mark_writes(db_stmts *s, const char *name);

/* Drop every entry: the server no longer has them (DEALLOCATE ALL). */
void db_stmts_clear(db_stmts *s);

/* A 64-bit hash of an SQL text (FNV-1a), never 0: the cache's key, and svc_speed's. Computed
 * once per query (svc_batch_new) and handed down. */
uint64_t db_sql_hash(const char *sql);

/* Statements held. */
size_t db_stmts_count(const db_stmts *s);

#endif
