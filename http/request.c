/*
 * http_request: a POST /v1/batch body -> http_batch_req (contract in request.h).
 *
 * Three steps, each cheap before the next: one byte scan refuses deep nesting (jansson would
 * recurse up to 2048 levels first); jansson parses, refusing duplicate keys and \u0000; one
 * walk checks the schema and copies everything out, so the json_t tree is freed before we
 * return. The walk fills a zeroed request, setting each count as soon as its array exists, so
 * on any failure http_batch_req_free frees exactly the part built.
 *
 * Allocations per request: the request, one queries array, one params array per query, one
 * block per string. Called on the loop thread; no shared state.
 */
#include "http/request.h"

#include <float.h>
#include <jansson.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <limits.h>
#include <stdlib.h>
#include <string.h>

#define NUMBUF 32 /* fits any json_int_t and any %.17g double */

static const char *const top_fields[] = {"mode", "isolation", "read_only", "row_format",
                                         "int8_as_number", "max_rows", "timeout_ms", "queries", NULL};
static const char *const query_fields[] = {"id", "sql", "params", NULL};
/* Indexes match the enum values (and row_format's index is rows_as_objects). */
static const char *const mode_names[] = {"parallel", "transaction", NULL};
static const char *const iso_names[] = {"read_committed", "repeatable_read", "serializable", NULL};
static const char *const row_names[] = {"array", "object", NULL};

/*
 * The reason goes into a JSON reply and a log line, and may quote client bytes (a field name,
 * jansson's "near '...'" token): keep it one line of printable ASCII whatever they hold.
 */
__attribute__((format(printf, 3, 4))) static void set_err(char *err, size_t errlen,
                                                          const char *fmt, ...)
{
    va_list ap;
    char *p;

    if (!err || errlen == 0)
        return;
    va_start(ap, fmt);
    vsnprintf(err, errlen, fmt, ap);
    va_end(ap);
    for (p = err; *p; p++)
        if ((unsigned char)*p < 0x20 || (unsigned char)*p > 0x7e)
            *p = '?';
}

static int lookup(const char *const *names, const char *s)
{
    int i;

    for (i = 0; names[i]; i++)
        if (strcmp(names[i], s) == 0)
            return i;
    return -1;
}

/* `"a", "b", "c"` for messages that name the accepted values. */
static void join(const char *const *names, char *buf, size_t size)
{
    size_t used = 0;
    int i;

    buf[0] = '\0';
    for (i = 0; names[i] && used < size; i++)
        used += (size_t)snprintf(buf + used, size - used, "%s\"%s\"", i ? ", " : "", names[i]);
}

bool http_format_double(double v, char *buf, size_t buflen)
{
    int prec, n;

    if (!isfinite(v) || !buf)
        return false;
    /* A whole number a double holds exactly with every neighbour (up to 2^53) goes as digits:
     * %g writes 1e15 as 1e+15, which an integer parameter refuses (Python's json writes
     * float(10**15) as 1000000000000000.0). Beyond 2^53 the exponent stays: a double there may
     * be a rounded neighbour of what the client wrote, and a refusal beats a wrong value. */
    if (v == floor(v) && fabs(v) <= 9007199254740992.0 && fabs(v) >= 1e15) {
        n = snprintf(buf, buflen, "%.0f", v);
        return n > 0 && (size_t)n < buflen;
    }
    /* %.15g round-trips every normal double that has a <= 15-digit form (DBL_DIG), so it is
     * the shortest when it reads back; subnormals have fewer digits, so start lower there. */
    for (prec = (v != 0 && fabs(v) < DBL_MIN) ? 1 : 15; prec <= 17; prec++) {
        n = snprintf(buf, buflen, "%.*g", prec, v);
        if (n < 0 || (size_t)n >= buflen)
            return false;
        if (strtod(buf, NULL) == v)
            return true;
    }
    return false; /* not reached: %.17g always reads back */
}

/*
 * One pass over the raw bytes for the deepest [ / { nesting outside strings. Malformed input
 * is left for jansson to describe; the scan only has to be exact for well-formed JSON, and
 * never to under-count (a stray ']' does not lower the depth below zero).
 */
static bool depth_ok(const char *p, size_t len, int max, char *err, size_t errlen)
{
    bool in_str = false;
    int depth = 0;
    size_t i;

    for (i = 0; i < len; i++) {
        char c = p[i];

        if (in_str) {
            if (c == '\\')
                i++; /* the escaped byte cannot end the string */
            else if (c == '"')
                in_str = false;
        } else if (c == '"') {
            in_str = true;
        } else if (c == '[' || c == '{') {
            if (++depth > max) {
                set_err(err, errlen, "JSON nested deeper than %d levels (at byte %zu)", max, i);
                return false;
            }
        } else if ((c == ']' || c == '}') && depth > 0) {
            depth--;
        }
    }
    return true;
}

/* Growing buffer for the JSON text of object/array parameters. */
typedef struct text {
    char *p;    /* NUL-terminated text, malloc'd; NULL until the first put */
    size_t len; /* bytes before the NUL */
    size_t cap; /* bytes allocated */
} text;

static bool put(text *t, const char *s, size_t n)
{
    size_t cap = t->cap ? t->cap : 64;
    char *p = t->p;

    while (cap < t->len + n + 1)
        cap *= 2;
    if (cap != t->cap && !(p = realloc(t->p, cap)))
        return false;
    t->p = p;
    t->cap = cap;
    memcpy(t->p + t->len, s, n);
    t->len += n;
    t->p[t->len] = '\0';
    return true;
}

static bool put_string(text *t, const char *s, size_t n)
{
    static const char hex[] = "0123456789abcdef";
    size_t i, from = 0;

    if (!put(t, "\"", 1))
        return false;
    for (i = 0; i < n; i++) {
        unsigned char c = (unsigned char)s[i];
        char esc[6] = {'\\', 'u', '0', '0', hex[c >> 4], hex[c & 15]};

        if (c >= 0x20 && c != '"' && c != '\\')
            continue; /* UTF-8 passes as is: jansson has checked it */
        if (c == '"' || c == '\\')
            esc[1] = (char)c;
        if (!put(t, s + from, i - from) || !put(t, esc, esc[1] == 'u' ? 6 : 2))
            return false;
        from = i + 1;
    }
    return put(t, s + from, n - from) && put(t, "\"", 1);
}

/* The text of a scalar as PostgreSQL should read it; points into buf, v or a literal. */
static const char *scalar_text(json_t *v, char buf[NUMBUF])
{
    switch (json_typeof(v)) {
    case JSON_STRING:
        return json_string_value(v);
    case JSON_INTEGER:
        snprintf(buf, NUMBUF, "%" JSON_INTEGER_FORMAT, json_integer_value(v));
        return buf;
    case JSON_REAL:
        return http_format_double(json_real_value(v), buf, NUMBUF) ? buf : NULL;
    case JSON_TRUE:
        return "true";
    case JSON_FALSE:
        return "false";
    default:
        return "null";
    }
}

/*
 * Compact JSON text, keys in request order. Not json_dumps: it prints reals with %.17g, so
 * {"x":0.1} would reach jsonb as 0.10000000000000001 and no longer equal a stored 0.1.
 * Recursion is bounded by the depth scan.
 */
static bool put_json(text *t, json_t *v)
{
    char buf[NUMBUF];
    const char *key, *s;
    json_t *item;
    size_t i = 0;

    switch (json_typeof(v)) {
    case JSON_OBJECT:
        if (!put(t, "{", 1))
            return false;
        json_object_foreach(v, key, item) {
            if ((i++ > 0 && !put(t, ",", 1)) || !put_string(t, key, strlen(key)) ||
                !put(t, ":", 1) || !put_json(t, item))
                return false;
        }
        return put(t, "}", 1);
    case JSON_ARRAY:
        if (!put(t, "[", 1))
            return false;
        json_array_foreach(v, i, item) {
            if ((i > 0 && !put(t, ",", 1)) || !put_json(t, item))
                return false;
        }
        return put(t, "]", 1);
    case JSON_STRING:
        return put_string(t, json_string_value(v), json_string_length(v));
    default:
        s = scalar_text(v, buf);
        return s && put(t, s, strlen(s));
    }
}

/* *out becomes the malloc'd parameter text, or NULL for JSON null. False: out of memory. */
static bool param_text(json_t *v, char **out)
{
    text t = {NULL, 0, 0};
    char buf[NUMBUF];
    const char *s;

    *out = NULL;
    if (json_is_null(v))
        return true;
    if (!json_is_object(v) && !json_is_array(v)) {
        s = scalar_text(v, buf);
        *out = s ? strdup(s) : NULL;
    } else if (put_json(&t, v)) {
        *out = t.p;
    } else {
        free(t.p);
    }
    return *out != NULL;
}

/* where: "" for the top level, "queries[3]: " inside a query. */
static bool known_fields(json_t *obj, const char *const *names, const char *where, char *err,
                         size_t errlen)
{
    char list[160];
    const char *key;
    json_t *v;

    json_object_foreach(obj, key, v) {
        if (lookup(names, key) < 0) {
            join(names, list, sizeof list);
            set_err(err, errlen, "%sunknown field \"%.64s\" (accepted: %s)", where, key, list);
            return false;
        }
    }
    return true;
}

/* Optional string field `name` of obj, one of names; sets *idx when present. */
static bool choice(json_t *obj, const char *name, const char *const *names, int *idx,
                   char *err, size_t errlen)
{
    json_t *v = json_object_get(obj, name);
    char list[160];
    int i;

    if (!v)
        return true;
    i = json_is_string(v) ? lookup(names, json_string_value(v)) : -1;
    if (i >= 0) {
        *idx = i;
        return true;
    }
    join(names, list, sizeof list);
    if (json_is_string(v))
        set_err(err, errlen, "%s: unknown value \"%.64s\" (accepted: %s)", name,
                json_string_value(v), list);
    else
        set_err(err, errlen, "%s: must be a string, one of %s", name, list);
    return false;
}

/* Optional boolean field `name` of obj; sets *out when present. */
static bool flag(json_t *obj, const char *name, bool *out, char *err, size_t errlen)
{
    json_t *v = json_object_get(obj, name);

    if (v && !json_is_boolean(v))
        set_err(err, errlen, "%s: must be true or false", name);
    else if (v)
        *out = json_is_true(v);
    return !v || json_is_boolean(v);
}

static bool parse_options(json_t *root, const http_req_limits *lim, http_batch_req *req,
                          char *err, size_t errlen)
{
    json_t *max_rows = json_object_get(root, "max_rows");
    json_t *timeout = json_object_get(root, "timeout_ms");
    int mode = HTTP_MODE_PARALLEL, iso = HTTP_ISO_READ_COMMITTED, rows = 0;

    if (!known_fields(root, top_fields, "", err, errlen) ||
        !choice(root, "mode", mode_names, &mode, err, errlen) ||
        !choice(root, "isolation", iso_names, &iso, err, errlen) ||
        !choice(root, "row_format", row_names, &rows, err, errlen) ||
        !flag(root, "read_only", &req->read_only, err, errlen) ||
        !flag(root, "int8_as_number", &req->int8_as_number, err, errlen))
        return false;
    if (max_rows && (!json_is_integer(max_rows) || json_integer_value(max_rows) < 1)) {
        set_err(err, errlen, "max_rows: must be a positive integer");
        return false;
    }
    if (timeout && (!json_is_integer(timeout) || json_integer_value(timeout) < 1)) {
        set_err(err, errlen, "timeout_ms: must be a positive integer");
        return false;
    }
    /* Unset limits (0) mean no ceiling and the documented default. */
    json_int_t cap = lim->max_timeout_ms > 0 ? lim->max_timeout_ms : INT_MAX;
    req->timeout_ms = lim->default_timeout_ms > 0 ? lim->default_timeout_ms : 30000;
    if (timeout)
        req->timeout_ms = (int)(json_integer_value(timeout) < cap ? json_integer_value(timeout) : cap);
    req->mode = (http_mode)mode;
    req->isolation = (http_isolation)iso;
    req->rows_as_objects = rows == 1;
    req->max_rows = lim->max_rows;
    if (max_rows && json_integer_value(max_rows) < lim->max_rows)
        req->max_rows = (long)json_integer_value(max_rows);
    return true;
}

/* Copies a checked query into out; out's counts follow its arrays so a failure frees cleanly. */
static bool copy_query(json_t *sql, json_t *id, json_t *params, size_t qi, http_query *out,
                       char *err, size_t errlen)
{
    size_t i, np = json_array_size(params);

    if (!(out->sql = strdup(json_string_value(sql))) ||
        (id && !(out->id = strdup(json_string_value(id)))) ||
        (np && !(out->params = calloc(np, sizeof *out->params)))) {
        set_err(err, errlen, "queries[%zu]: out of memory", qi);
        return false;
    }
    out->nparams = (int)np;
    for (i = 0; i < np; i++) {
        if (!param_text(json_array_get(params, i), &out->params[i])) {
            set_err(err, errlen, "queries[%zu].params[%zu]: out of memory", qi, i);
            return false;
        }
    }
    return true;
}

static bool parse_query(json_t *q, size_t qi, const http_req_limits *lim, http_query *out,
                        char *err, size_t errlen)
{
    json_t *sql = json_object_get(q, "sql"), *id = json_object_get(q, "id");
    json_t *params = json_object_get(q, "params");
    size_t np = json_array_size(params); /* 0 when absent or not an array */
    char where[48];

    snprintf(where, sizeof where, "queries[%zu]: ", qi);
    if (!json_is_object(q))
        set_err(err, errlen, "queries[%zu]: must be an object like {\"sql\": \"...\"}", qi);
    else if (!known_fields(q, query_fields, where, err, errlen))
        ; /* known_fields wrote err */
    else if (!sql)
        set_err(err, errlen, "queries[%zu].sql: required", qi);
    else if (!json_is_string(sql))
        set_err(err, errlen, "queries[%zu].sql: must be a string", qi);
    else if (id && !json_is_string(id))
        set_err(err, errlen, "queries[%zu].id: must be a string", qi);
    else if (params && !json_is_array(params))
        set_err(err, errlen, "queries[%zu].params: must be an array", qi);
    else if (np > (size_t)lim->max_params)
        set_err(err, errlen, "queries[%zu].params: %zu parameters, at most %d allowed", qi, np,
                lim->max_params);
    else
        return copy_query(sql, id, params, qi, out, err, errlen);
    return false;
}

static bool parse_queries(json_t *arr, const http_req_limits *lim, http_batch_req *req,
                          char *err, size_t errlen)
{
    size_t i, n = json_array_size(arr); /* 0 when absent or not an array */

    if (!arr)
        set_err(err, errlen, "queries: required (an array of {\"sql\": ...} objects)");
    else if (!json_is_array(arr))
        set_err(err, errlen, "queries: must be an array");
    else if (n == 0)
        set_err(err, errlen, "queries: must not be empty");
    else if (n > (size_t)lim->max_queries)
        set_err(err, errlen, "queries: %zu queries, at most %d allowed", n, lim->max_queries);
    else if (!(req->queries = calloc(n, sizeof *req->queries)))
        set_err(err, errlen, "out of memory");
    else {
        req->nqueries = (int)n;
        for (i = 0; i < n; i++)
            if (!parse_query(json_array_get(arr, i), i, lim, &req->queries[i], err, errlen))
                return false;
        return true;
    }
    return false;
}

bool http_request_parse(const char *body, size_t len, const http_req_limits *limits,
                        http_batch_req **out, char *err, size_t errlen)
{
    int max_depth = limits->max_depth > 0 ? limits->max_depth : HTTP_DEFAULT_MAX_DEPTH;
    http_batch_req *req = NULL;
    json_t *root = NULL;
    json_error_t jerr;
    bool ok = false;

    *out = NULL;
    if (!body || len == 0) {
        set_err(err, errlen, "request body is empty (expected a JSON object)");
        goto done;
    }
    if (!depth_ok(body, len, max_depth, err, errlen))
        goto done;
    /* DECODE_ANY: a bare scalar body then gets the clearer "must be a JSON object" below. */
    root = json_loadb(body, len, JSON_REJECT_DUPLICATES | JSON_DECODE_ANY, &jerr);
    if (!root && json_error_code(&jerr) == json_error_null_character) {
        set_err(err, errlen, "strings may not contain \\u0000: PostgreSQL cannot store NUL "
                "characters in text (line %d, column %d)", jerr.line, jerr.column);
        goto done;
    }
    if (!root) {
        set_err(err, errlen, "invalid JSON: %s (line %d, column %d)", jerr.text, jerr.line,
                jerr.column);
        goto done;
    }
    if (!json_is_object(root)) {
        set_err(err, errlen, "request body must be a JSON object");
        goto done;
    }
    if (!(req = calloc(1, sizeof *req))) {
        set_err(err, errlen, "out of memory");
        goto done;
    }
    if (!parse_options(root, limits, req, err, errlen) ||
        !parse_queries(json_object_get(root, "queries"), limits, req, err, errlen))
        goto done;
    *out = req;
    req = NULL;
    ok = true;

done:
    http_batch_req_free(req);
    json_decref(root);
    return ok;
}

void http_batch_req_free(http_batch_req *req)
{
    int i, j;

    if (!req)
        return;
    for (i = 0; i < req->nqueries; i++) {
        http_query *q = &req->queries[i];

        for (j = 0; j < q->nparams; j++)
            free(q->params[j]);
        free(q->params);
        free(q->sql);
        free(q->id);
    }
    free(req->queries);
    free(req->token);
    free(req);
}
