/*
 * db_buf: a growable byte buffer that JSON text is written into.
 *
 * Workers encode results into a db_buf (plain memory, never a libevent evbuffer), and the loop
 * thread later copies or references the bytes into the reply. A db_buf belongs to one thread at
 * a time; it has no locking. Allocation failure is sticky: the buffer records it in `oom`, later
 * appends do nothing, and the owner checks `oom` once at the end instead of after every append.
 */
#ifndef FANOUT_DB_BUF_H
#define FANOUT_DB_BUF_H

#include <stdbool.h>
#include <stddef.h>

typedef struct db_buf {
    char *data; /* bytes written so far; NUL-terminated when data != NULL */
    size_t len; /* bytes in data, excluding the terminating NUL */
    size_t cap; /* bytes allocated for data */
    bool oom;   /* an allocation failed; the contents are incomplete */
} db_buf;

#define DB_BUF_INIT {NULL, 0, 0, false}

void db_buf_init(db_buf *b);
void db_buf_free(db_buf *b);           /* releases data; the buffer may be reused after init */
void db_buf_reset(db_buf *b);          /* empties the buffer and clears oom, keeps its memory */
void db_buf_append(db_buf *b, const void *p, size_t n);
void db_buf_puts(db_buf *b, const char *s);
void db_buf_putc(db_buf *b, char c);
void db_buf_printf(db_buf *b, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
void db_buf_long(db_buf *b, long long v);   /* decimal digits */
void db_buf_double(db_buf *b, double v, int decimals); /* fixed-point, e.g. elapsed times */

/*
 * Append s[0..n) as a quoted JSON string. Escapes '"', '\\' and control characters; replaces
 * every byte sequence that is not valid UTF-8 (including overlongs and surrogates) with U+FFFD,
 * so the output is always valid JSON whatever the server sent.
 */
void db_buf_json_string(db_buf *b, const char *s, size_t n);

/* Append a JSON string, or null when s is NULL. */
void db_buf_json_string_or_null(db_buf *b, const char *s);

/* True when s[0..n) is valid UTF-8 (no overlongs, no surrogates, nothing above U+10FFFF). */
bool db_utf8_valid(const char *s, size_t n);

/*
 * Hand the bytes over to the caller, who frees them with free(); the buffer is left empty (an
 * empty buffer yields ""). Returns NULL, with *len 0, when the buffer is oom: its incomplete
 * contents are freed and oom stays set. len may be NULL.
 */
char *db_buf_steal(db_buf *b, size_t *len);

#endif
