/*
 * http_request: parsing and validating a POST /v1/batch body into a plain batch description.
 *
 * Knows JSON (jansson) and fanout's request schema; knows nothing of libpq, libevent or threads.
 * The loop thread calls it. The description it returns is plain C data that workers may read
 * (never write) while the batch runs.
 *
 * Parameters become text the way PostgreSQL would read them: strings as they are; integers as
 * their digits; other numbers as the shortest text that reads back as the same double; booleans
 * as "true"/"false"; null as SQL NULL (a NULL pointer); objects and arrays as their compact JSON
 * text (for json/jsonb; keys in request order, numbers written as above, so {"x":0.1} stays
 * 0.1). They are never spliced into SQL text.
 */
#ifndef FANOUT_HTTP_REQUEST_H
#define FANOUT_HTTP_REQUEST_H

#include <stdbool.h>
#include <stddef.h>

typedef enum http_mode {
    HTTP_MODE_PARALLEL = 0, /* each query its own job, run concurrently, own implicit transaction */
    HTTP_MODE_TRANSACTION   /* the whole batch in order on one connection, BEGIN .. COMMIT */
} http_mode;

typedef enum http_isolation {
    HTTP_ISO_READ_COMMITTED = 0, /* default */
    HTTP_ISO_REPEATABLE_READ,
    HTTP_ISO_SERIALIZABLE
} http_isolation;

typedef struct http_query {
    char *id;      /* the request's "id", echoed in the result; NULL when absent */
    char *sql;     /* the statement text, NUL-free (jansson refuses \u0000) */
    int nparams;   /* entries in params */
    char **params; /* parameter texts; an entry is NULL for SQL NULL; NULL when nparams == 0 */
} http_query;

typedef struct http_batch_req {
    http_mode mode;           /* "mode": parallel (default) or transaction */
    http_isolation isolation; /* "isolation"; only meaningful in transaction mode */
    bool read_only;           /* "read_only": run every query in a read-only transaction */
    bool rows_as_objects;     /* "row_format": "object" (true) or "array" (false, default) */
    bool int8_as_number;      /* "int8_as_number": int8 values as JSON numbers */
    long max_rows;            /* "max_rows", already lowered to the setting; the setting if absent */
    int timeout_ms;           /* "timeout_ms", lowered to max_timeout_ms; the default if absent */
    int nqueries;             /* entries in queries, >= 1 */
    http_query *queries;      /* in request order */
    char *token;              /* NAME of the token that sent it, owned, for the access log; NULL
                                 without one. Set by the HTTP server, not by the parser */
} http_batch_req;

typedef struct http_req_limits {
    int max_queries; /* setting max_queries */
    int max_params;  /* setting max_params */
    long max_rows;   /* setting max_rows: the default and the ceiling of "max_rows" */
    int default_timeout_ms; /* setting batch_timeout_ms: a batch's deadline when none is asked */
    int max_timeout_ms;     /* setting max_batch_timeout_ms: the ceiling of "timeout_ms" */
    int max_depth;   /* deepest [ / { nesting accepted, the body object being level 1
                        (checked before jansson parses); <= 0: HTTP_DEFAULT_MAX_DEPTH */
} http_req_limits;

/* Nesting deeper than this is refused before parsing; fanout's schema needs depth 4 plus params. */
#define HTTP_DEFAULT_MAX_DEPTH 64

/*
 * Parse body[0..len). On success returns true and sets *out (free with http_batch_req_free).
 * On failure returns false, leaves *out NULL and writes a one-line, client-facing reason to err
 * (the caller answers 400 "bad_request" with it). The reason is printable ASCII: client bytes
 * it quotes (field names, jansson's "near" token) have anything else replaced by '?'. err may
 * be NULL when errlen is 0.
 */
bool http_request_parse(const char *body, size_t len, const http_req_limits *limits,
                        http_batch_req **out, char *err, size_t errlen)
    __attribute__((warn_unused_result));

/* Frees req and everything it holds; NULL is a no-op. */
void http_batch_req_free(http_batch_req *req);

/*
 * The text a JSON real parameter becomes (exposed for unit tests and the fuzzer): the first of
 * %.15g, %.16g, %.17g that strtod reads back as v (subnormals start lower), so 0.1 -> "0.1",
 * 1e300 -> "1e+300", 100.0 -> "100". Writes into buf (32 bytes always suffice); returns false
 * for a non-finite v or a buffer too small.
 */
bool http_format_double(double v, char *buf, size_t buflen);

#endif
