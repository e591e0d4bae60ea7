/*
 * http_auth: API tokens. The token file, the Authorization header, and the constant-time match.
 *
 * The file (setting auth_file) has one token a line, fields separated by spaces or tabs:
 *     NAME SHA256HEX ACCESS [ROLE]
 * NAME names the token in logs (1..64 of A-Z a-z 0-9 _ - . @ :); SHA256HEX is the SHA-256 of the
 * secret as 64 lowercase hex digits; ACCESS is read_only or read_write; ROLE, optional, is a
 * PostgreSQL role name (a plain identifier: a letter or _, then letters, digits, _ or $; at most
 * 63 bytes). A field starting with # begins a comment; blank lines are skipped. A malformed
 * line, a repeated NAME or a repeated hash refuses the whole file with "FILE:LINE: reason".
 *
 * Only digests are kept: a presented secret is hashed and its digest compared with every
 * token's digest by CRYPTO_memcmp, the whole table each time, so the time taken does not depend
 * on which token matches, whether one does, or how many leading bytes agree.
 *
 * Ownership and threads: a table is immutable once loaded, so any thread may read it; whoever
 * loaded it frees it (the HTTP server takes it over, see http_server_set_auth_new). A caller
 * returned by a lookup points into its table and lives exactly as long as the table.
 */
#ifndef FANOUT_HTTP_AUTH_H
#define FANOUT_HTTP_AUTH_H

#include <stdbool.h>
#include <stddef.h>
#include <stdio.h>

#define HTTP_AUTH_DIGEST_LEN 32   /* bytes of a SHA-256 digest */
#define HTTP_AUTH_NAME_MAX 64     /* longest token NAME, bytes */
#define HTTP_AUTH_ROLE_MAX 63     /* longest ROLE (PostgreSQL's NAMEDATALEN - 1), bytes */
#define HTTP_AUTH_SECRET_MAX 4096 /* longest secret accepted in a header, bytes */

typedef struct http_auth_table http_auth_table;

/* Who is calling: the token that matched. Points into its table; copy what must outlive it. */
typedef struct http_caller {
    const char *name; /* the token's NAME, for logs */
    bool read_only;   /* ACCESS is read_only: every query must run in a read-only transaction */
    const char *role; /* the PostgreSQL role to run as, or NULL when the token names none */
} http_caller;

/* How a request's Authorization header fared. */
typedef enum http_auth_result {
    HTTP_AUTH_OK = 0,      /* a token matched; *caller is set */
    HTTP_AUTH_MISSING,     /* no Authorization header */
    HTTP_AUTH_MALFORMED,   /* not "Bearer " + 1..HTTP_AUTH_SECRET_MAX visible ASCII characters */
    HTTP_AUTH_WRONG,       /* well formed, but no token has that secret */
    HTTP_AUTH_ERROR        /* the secret could not be hashed (libcrypto failed) */
} http_auth_result;

/*
 * Read a token file. Returns a new table (free with http_auth_free) or NULL with one line in err:
 * "PATH:LINE: reason", or "PATH: cannot open: ..." when it cannot be read. An empty file is a
 * valid table of no tokens (every request is refused).
 */
http_auth_table *http_auth_load(const char *path, char *err, size_t errlen)
    __attribute__((warn_unused_result));

/* The same from an open stream; name stands for the file in error lines. Does not close f. */
http_auth_table *http_auth_read(FILE *f, const char *name, char *err, size_t errlen)
    __attribute__((warn_unused_result));

/* Free a table (NULL is fine); every caller pointer into it dies with it. */
void http_auth_free(http_auth_table *t);

/* Tokens in the table. */
size_t http_auth_count(const http_auth_table *t);

/* SHA-256 of len bytes at data into out. False only when libcrypto fails. */
bool http_auth_sha256(const void *data, size_t len, unsigned char out[HTTP_AUTH_DIGEST_LEN])
    __attribute__((warn_unused_result));

/*
 * The token whose digest equals digest, or NULL. Compares with every token of the table, each by
 * CRYPTO_memcmp, and picks the match without a branch: constant time in the table's size.
 */
const http_caller *http_auth_match(const http_auth_table *t,
                                   const unsigned char digest[HTTP_AUTH_DIGEST_LEN]);

/*
 * Check an Authorization header value (NULL: there was none) against the table. On HTTP_AUTH_OK
 * *caller points at the matching token, else it is NULL. The secret is never copied or logged.
 */
http_auth_result http_auth_check(const http_auth_table *t, const char *authorization,
                                 const http_caller **caller) __attribute__((warn_unused_result));

/* Whether a listen host is a loopback address: 127.0.0.0/8, ::1 (also as ::ffff:127.x.y.z) or
 * the name "localhost". Anything else, the empty host and 0.0.0.0 included, is not. */
bool http_auth_host_is_loopback(const char *host);

#endif
