/*
 * http_auth: the token table, its file parser, and the constant-time lookup (contract in auth.h).
 *
 * A table is one array of tokens, built by http_auth_read and never changed after: the loop
 * thread checks requests against it, and a reload (SIGHUP) builds a whole new table and swaps
 * the pointer (http/server.c), so no lock is needed. The callers handed out point into the array;
 * their string pointers are set once the array has stopped growing.
 *
 * Timing: http_auth_match runs CRYPTO_memcmp on every token and folds the results with masks,
 * so neither the loop nor any comparison ends early. What still varies with the input is only
 * what the client already knows: the length of its own secret (hashed once) and whether it was
 * accepted.
 */
#include "http/auth.h"

#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include <openssl/crypto.h>
#include <openssl/evp.h>

#define FIELDS_MAX 4 /* NAME SHA256HEX ACCESS ROLE */

typedef struct auth_token {
    unsigned char digest[HTTP_AUTH_DIGEST_LEN]; /* SHA-256 of the secret */
    char name[HTTP_AUTH_NAME_MAX + 1];          /* NAME, NUL-terminated */
    char role[HTTP_AUTH_ROLE_MAX + 1];          /* ROLE, "" when the line names none */
    unsigned line;                              /* line of the file, for duplicate errors */
    http_caller caller;                         /* what lookups return; points into this token */
} auth_token;

struct http_auth_table {
    auth_token *tok; /* len tokens, in file order; malloc'd */
    size_t len;      /* tokens in use */
    size_t cap;      /* tokens allocated */
};

__attribute__((format(printf, 3, 4))) static void set_err(char *err, size_t errlen,
                                                          const char *fmt, ...)
{
    va_list ap;
    if (!err || !errlen)
        return;
    va_start(ap, fmt);
    vsnprintf(err, errlen, fmt, ap);
    va_end(ap);
}

static bool valid_name(const char *s)
{
    size_t n = strlen(s);
    if (n == 0 || n > HTTP_AUTH_NAME_MAX)
        return false;
    return strspn(s, "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789_-.@:") == n;
}

/* A PostgreSQL identifier that needs no quoting, case kept: [A-Za-z_][A-Za-z0-9_$]*. */
static bool valid_role(const char *s)
{
    static const char first[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz_";
    size_t n = strlen(s);
    if (n == 0 || n > HTTP_AUTH_ROLE_MAX || !strchr(first, s[0]))
        return false;
    return strspn(s, "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789_$") == n;
}

/* 64 lowercase hex digits into 32 bytes. */
static bool parse_hex(const char *s, unsigned char out[HTTP_AUTH_DIGEST_LEN])
{
    static const char digits[] = "0123456789abcdef";
    if (strlen(s) != 2 * HTTP_AUTH_DIGEST_LEN)
        return false;
    for (size_t i = 0; i < HTTP_AUTH_DIGEST_LEN; i++) {
        const char *hi = strchr(digits, s[2 * i]), *lo = strchr(digits, s[2 * i + 1]);
        if (!s[2 * i] || !s[2 * i + 1] || !hi || !lo)
            return false;
        out[i] = (unsigned char)(((hi - digits) << 4) | (lo - digits));
    }
    return true;
}

/* Cut line into at most FIELDS_MAX fields (in place); a field starting with # ends the line.
 * Returns how many fields there were, counting those beyond FIELDS_MAX. */
static int split_fields(char *line, char *field[FIELDS_MAX])
{
    int n = 0;
    char *p = line;

    for (;;) {
        p += strspn(p, " \t");
        if (*p == '\0' || *p == '#')
            return n;
        if (n < FIELDS_MAX)
            field[n] = p;
        n++;
        p += strcspn(p, " \t");
        if (*p)
            *p++ = '\0';
    }
}

/* Parse one line into a new token at the end of t; false with "NAME:LINE: reason" in err. */
static bool parse_line(http_auth_table *t, char *line, const char *name, unsigned lineno,
                       char *err, size_t errlen)
{
    char *f[FIELDS_MAX] = {NULL};
    auth_token tok = {.line = lineno};
    int n = split_fields(line, f);

    if (n == 0)
        return true;
    if (n < 3 || n > FIELDS_MAX) {
        set_err(err, errlen, "%s:%u: expected NAME SHA256HEX ACCESS [ROLE], found %d fields",
                name, lineno, n);
        return false;
    }
    if (!valid_name(f[0])) {
        set_err(err, errlen, "%s:%u: NAME must be 1..%d characters of A-Z a-z 0-9 _ - . @ :",
                name, lineno, HTTP_AUTH_NAME_MAX);
        return false;
    }
    /* The hash field is never echoed: a secret pasted there by mistake must not reach a log. */
    if (!parse_hex(f[1], tok.digest)) {
        set_err(err, errlen, "%s:%u: token \"%s\": SHA256HEX must be 64 lowercase hex digits "
                "(the SHA-256 of the secret)", name, lineno, f[0]);
        return false;
    }
    if (strcmp(f[2], "read_only") == 0) {
        tok.caller.read_only = true;
    } else if (strcmp(f[2], "read_write") != 0) {
        set_err(err, errlen, "%s:%u: token \"%s\": ACCESS must be read_only or read_write",
                name, lineno, f[0]);
        return false;
    }
    if (n == 4 && !valid_role(f[3])) {
        set_err(err, errlen, "%s:%u: token \"%s\": ROLE must be a plain PostgreSQL identifier "
                "([A-Za-z_][A-Za-z0-9_$]*, at most %d bytes)", name, lineno, f[0],
                HTTP_AUTH_ROLE_MAX);
        return false;
    }
    for (size_t i = 0; i < t->len; i++) {
        if (strcmp(t->tok[i].name, f[0]) == 0) {
            set_err(err, errlen, "%s:%u: duplicate token name \"%s\" (first on line %u)", name,
                    lineno, f[0], t->tok[i].line);
            return false;
        }
        if (memcmp(t->tok[i].digest, tok.digest, HTTP_AUTH_DIGEST_LEN) == 0) {
            set_err(err, errlen, "%s:%u: token \"%s\" has the same hash as token \"%s\" "
                    "(line %u)", name, lineno, f[0], t->tok[i].name, t->tok[i].line);
            return false;
        }
    }
    strcpy(tok.name, f[0]); /* lengths checked above */
    if (n == 4)
        strcpy(tok.role, f[3]);
    if (t->len == t->cap) {
        size_t ncap = t->cap ? t->cap * 2 : 8;
        auth_token *grown = realloc(t->tok, ncap * sizeof(*grown));
        if (!grown) {
            set_err(err, errlen, "%s:%u: out of memory", name, lineno);
            return false;
        }
        t->tok = grown;
        t->cap = ncap;
    }
    t->tok[t->len++] = tok;
    return true;
}

http_auth_table *http_auth_read(FILE *f, const char *name, char *err, size_t errlen)
{
    http_auth_table *t = calloc(1, sizeof(*t));
    char *line = NULL;
    size_t cap = 0;
    ssize_t got;
    unsigned lineno = 0;
    bool ok = false;

    if (!t) {
        set_err(err, errlen, "%s: out of memory", name);
        goto out;
    }
    errno = 0;
    while ((got = getline(&line, &cap, f)) != -1) {
        lineno++;
        if (strlen(line) != (size_t)got) {
            set_err(err, errlen, "%s:%u: the line holds a NUL byte", name, lineno);
            goto out;
        }
        line[strcspn(line, "\r\n")] = '\0';
        if (!parse_line(t, line, name, lineno, err, errlen))
            goto out;
    }
    if (ferror(f)) { /* e.g. a directory: it opens, reading fails with EISDIR */
        set_err(err, errlen, "%s: cannot read: %s", name, strerror(errno));
        goto out;
    }
    /* The array no longer moves: point the callers at their strings. */
    for (size_t i = 0; i < t->len; i++) {
        t->tok[i].caller.name = t->tok[i].name;
        t->tok[i].caller.role = t->tok[i].role[0] ? t->tok[i].role : NULL;
    }
    ok = true;
out:
    free(line);
    if (!ok) {
        http_auth_free(t);
        t = NULL;
    }
    return t;
}

http_auth_table *http_auth_load(const char *path, char *err, size_t errlen)
{
    http_auth_table *t = NULL;
    FILE *f = fopen(path, "r");

    if (!f) {
        set_err(err, errlen, "%s: cannot open: %s", path, strerror(errno));
        return NULL;
    }
    t = http_auth_read(f, path, err, errlen);
    fclose(f);
    return t;
}

void http_auth_free(http_auth_table *t)
{
    if (!t)
        return;
    /* Digests are not secrets, but there is no reason to leave them in freed memory either. */
    if (t->tok)
        OPENSSL_cleanse(t->tok, t->cap * sizeof(*t->tok));
    free(t->tok);
    free(t);
}

size_t http_auth_count(const http_auth_table *t)
{
    return t ? t->len : 0;
}

bool http_auth_sha256(const void *data, size_t len, unsigned char out[HTTP_AUTH_DIGEST_LEN])
{
    unsigned int n = 0;
    return EVP_Digest(data, len, out, &n, EVP_sha256(), NULL) == 1 && n == HTTP_AUTH_DIGEST_LEN;
}

const http_caller *http_auth_match(const http_auth_table *t,
                                   const unsigned char digest[HTTP_AUTH_DIGEST_LEN])
{
    size_t found = 0; /* 1 + the index of the matching token; 0: none (hashes are unique) */

    for (size_t i = 0; t && i < t->len; i++) {
        /* CRYPTO_memcmp gives 0 when equal, else a small positive number: turn that into a
         * mask of all ones for a match, all zeros otherwise, with no branch. */
        unsigned diff = (unsigned)CRYPTO_memcmp(digest, t->tok[i].digest, HTTP_AUTH_DIGEST_LEN);
        size_t differs = (size_t)((diff | (0u - diff)) >> (sizeof(unsigned) * 8 - 1));
        size_t mask = differs - 1;
        found |= mask & (i + 1);
    }
    return found ? &t->tok[found - 1].caller : NULL;
}

http_auth_result http_auth_check(const http_auth_table *t, const char *authorization,
                                 const http_caller **caller)
{
    static const char scheme[] = "Bearer";
    unsigned char digest[HTTP_AUTH_DIGEST_LEN];
    const char *secret;
    size_t len = 0;
    http_auth_result res = HTTP_AUTH_MALFORMED;

    *caller = NULL;
    if (!authorization)
        return HTTP_AUTH_MISSING;
    /* The scheme is case-insensitive (RFC 9110 11.1); then one or more spaces, then the token. */
    if (strncasecmp(authorization, scheme, sizeof(scheme) - 1) != 0 ||
        authorization[sizeof(scheme) - 1] != ' ')
        return HTTP_AUTH_MALFORMED;
    secret = authorization + sizeof(scheme) - 1;
    secret += strspn(secret, " ");
    for (; secret[len]; len++)
        if ((unsigned char)secret[len] <= ' ' || (unsigned char)secret[len] > '~' ||
            len >= HTTP_AUTH_SECRET_MAX)
            return HTTP_AUTH_MALFORMED;
    if (len == 0)
        return HTTP_AUTH_MALFORMED;
    if (!http_auth_sha256(secret, len, digest)) {
        res = HTTP_AUTH_ERROR;
        goto out;
    }
    *caller = http_auth_match(t, digest);
    res = *caller ? HTTP_AUTH_OK : HTTP_AUTH_WRONG;
out:
    OPENSSL_cleanse(digest, sizeof(digest));
    return res;
}

bool http_auth_host_is_loopback(const char *host)
{
    struct in_addr a4;
    struct in6_addr a6;

    if (!host)
        return false;
    if (strcasecmp(host, "localhost") == 0)
        return true;
    if (inet_pton(AF_INET, host, &a4) == 1)
        return (ntohl(a4.s_addr) >> 24) == 127;
    if (inet_pton(AF_INET6, host, &a6) == 1)
        return IN6_IS_ADDR_LOOPBACK(&a6) || (IN6_IS_ADDR_V4MAPPED(&a6) && a6.s6_addr[12] == 127);
    return false;
}
