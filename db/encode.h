/*
 * db_encode: turning PostgreSQL's text output into fanout's JSON.
 *
 * Values are written as PostgreSQL printed them, never parsed and re-printed (which would alter
 * digits). Pure functions of their arguments: no libpq connection, no threads, no allocation
 * other than the db_buf's. The worker thread that ran a query calls them.
 */
#ifndef FANOUT_DB_ENCODE_H
#define FANOUT_DB_ENCODE_H

#include <stdbool.h>
#include <stddef.h>
#include <postgres_ext.h> /* Oid */

#include "db/buf.h"

/* Built-in type OIDs fanout treats specially (from pg_type.dat, stable across versions). */
enum {
    DB_OID_BOOL = 16,
    DB_OID_BYTEA = 17,
    DB_OID_INT8 = 20,
    DB_OID_INT2 = 21,
    DB_OID_INT4 = 23,
    DB_OID_TEXT = 25,
    DB_OID_OID = 26,
    DB_OID_JSON = 114,
    DB_OID_FLOAT4 = 700,
    DB_OID_FLOAT8 = 701,
    DB_OID_NUMERIC = 1700,
    DB_OID_JSONB = 3802
};

/*
 * Append one value as JSON:
 *   NULL (isnull)                         -> null
 *   int2, int4, oid                       -> number, digits as printed
 *   float4, float8                        -> number when finite; "NaN", "Infinity", "-Infinity"
 *                                            as strings
 *   int8                                  -> string; a number when int8_as_number
 *   numeric                               -> string (exact, also NaN/Infinity)
 *   bool                                  -> true / false
 *   json, jsonb                           -> the JSON text embedded as it is (a string when it
 *                                            is not valid UTF-8, so the reply stays JSON)
 *   everything else (bytea "\x..", arrays, dates, uuid, ...) -> PostgreSQL's text as a string
 */
void db_encode_value(db_buf *b, Oid type, const char *text, size_t len, bool isnull,
                     bool int8_as_number);

/*
 * Append an error object: {"code":..,"message":..,"detail":..,"hint":..,"position":..,
 * "constraint":..}. NULL fields become null; position is a number when it is a valid positive
 * integer in text form, else null. A NULL code becomes "XX000" (internal_error) and a NULL
 * message "unknown error", so a server reply lacking them still yields a usable object. A
 * message, detail or hint longer than DB_ERROR_TEXT_MAX bytes is cut there (at a character
 * boundary) and ends in "...": the server quotes input in them (a 5 MB value that fails to
 * parse), and the reply must stay near max_response_bytes.
 */
#define DB_ERROR_TEXT_MAX 4096
void db_encode_sql_error(db_buf *b, const char *code, const char *message, const char *detail,
                         const char *hint, const char *position, const char *constraint);

/* Append {"code":code,"message":message} for errors fanout raises itself (not_run, ...). */
void db_encode_error(db_buf *b, const char *code, const char *message);

/*
 * The first word of a command tag ("INSERT 0 3" -> "INSERT", "CREATE TABLE" -> "CREATE"):
 * returns its length and sets *word to its start. 0 for an empty tag.
 */
size_t db_command_word(const char *tag, const char **word);

#endif
