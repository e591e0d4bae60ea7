/*
 * libFuzzer harness for http_request_parse (http/request.c): the whole input is one request body.
 *
 * Crashes, leaks and undefined behaviour are found by the sanitizers; on top of that the harness
 * is a differential oracle. It parses the same bytes with jansson itself (same flags as the
 * module), checks the schema with its own small validator and requires:
 *   - the parser accepts exactly the bodies the validator accepts (no false refusals, no false
 *     acceptances), with the fuzz limits below;
 *   - an accepted request holds what the body says: options, every sql/id, and every parameter
 *     text reads back as the JSON value it came from (strings byte for byte, integers as their
 *     digits, reals reading back to the same double, objects/arrays as JSON text that parses to
 *     the same tree, keys in the same order);
 *   - a refusal leaves *out NULL and writes a non-empty reason of printable ASCII;
 *   - the verdict does not depend on the error buffer (NULL/0 and tiny buffers too).
 * A failed check calls abort(), which libFuzzer reports as a crash with the input.
 */
#include <jansson.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "http/request.h"

/* The limits of a production-like configuration (the settings' defaults or larger). */
#define FUZZ_MAX_QUERIES 1000
#define FUZZ_MAX_PARAMS 1000
#define FUZZ_MAX_ROWS 100000L
#define FUZZ_MAX_DEPTH 64
#define FUZZ_DEFAULT_TIMEOUT_MS 30000
#define FUZZ_MAX_TIMEOUT_MS 300000

static const http_req_limits limits = {.max_queries = FUZZ_MAX_QUERIES,
                                       .max_params = FUZZ_MAX_PARAMS,
                                       .max_rows = FUZZ_MAX_ROWS,
                                       .default_timeout_ms = FUZZ_DEFAULT_TIMEOUT_MS,
                                       .max_timeout_ms = FUZZ_MAX_TIMEOUT_MS,
                                       .max_depth = FUZZ_MAX_DEPTH};

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

#define CHECK(cond)                                                                       \
    do {                                                                                  \
        if (!(cond)) {                                                                    \
            fprintf(stderr, "fuzz_request: check failed at %s:%d: %s\n", __FILE__, __LINE__, \
                    #cond);                                                               \
            abort();                                                                      \
        }                                                                                 \
    } while (0)

/* Nesting depth of a parsed tree, counted as the module counts it: the body object is 1. */
static int tree_depth(json_t *v)
{
    const char *key;
    json_t *item;
    size_t i;
    int deepest = 0, d;

    if (json_is_object(v)) {
        json_object_foreach(v, key, item) {
            if ((d = tree_depth(item)) > deepest)
                deepest = d;
        }
        return deepest + 1;
    }
    if (json_is_array(v)) {
        json_array_foreach(v, i, item) {
            if ((d = tree_depth(item)) > deepest)
                deepest = d;
        }
        return deepest + 1;
    }
    return 0;
}

static bool in_list(const char *s, const char *const *list)
{
    for (; *list; list++)
        if (strcmp(s, *list) == 0)
            return true;
    return false;
}

/* Absent, or a string naming one of list. */
static bool opt_choice(json_t *obj, const char *name, const char *const *list)
{
    json_t *v = json_object_get(obj, name);

    return !v || (json_is_string(v) && in_list(json_string_value(v), list));
}

static bool opt_bool(json_t *obj, const char *name)
{
    json_t *v = json_object_get(obj, name);

    return !v || json_is_boolean(v);
}

/* The request schema, written out again from the README/request.h, independent of request.c. */
static bool schema_ok(json_t *root)
{
    static const char *const top[] = {"mode", "isolation", "read_only", "row_format",
                                      "int8_as_number", "max_rows", "timeout_ms", "queries",
                                      NULL};
    static const char *const qkeys[] = {"id", "sql", "params", NULL};
    static const char *const modes[] = {"parallel", "transaction", NULL};
    static const char *const isos[] = {"read_committed", "repeatable_read", "serializable",
                                       NULL};
    static const char *const rows[] = {"array", "object", NULL};
    const char *key;
    json_t *v, *queries, *q, *max_rows, *timeout;
    size_t i;

    if (!json_is_object(root))
        return false;
    json_object_foreach(root, key, v) {
        if (!in_list(key, top))
            return false;
    }
    if (!opt_choice(root, "mode", modes) || !opt_choice(root, "isolation", isos) ||
        !opt_choice(root, "row_format", rows) || !opt_bool(root, "read_only") ||
        !opt_bool(root, "int8_as_number"))
        return false;
    max_rows = json_object_get(root, "max_rows");
    if (max_rows && (!json_is_integer(max_rows) || json_integer_value(max_rows) <= 0))
        return false;
    timeout = json_object_get(root, "timeout_ms");
    if (timeout && (!json_is_integer(timeout) || json_integer_value(timeout) <= 0))
        return false;
    queries = json_object_get(root, "queries");
    if (!json_is_array(queries) || json_array_size(queries) == 0 ||
        json_array_size(queries) > FUZZ_MAX_QUERIES)
        return false;
    json_array_foreach(queries, i, q) {
        json_t *params, *id;

        if (!json_is_object(q))
            return false;
        json_object_foreach(q, key, v) {
            if (!in_list(key, qkeys))
                return false;
        }
        if (!json_is_string(json_object_get(q, "sql")))
            return false;
        id = json_object_get(q, "id");
        if (id && !json_is_string(id))
            return false;
        params = json_object_get(q, "params");
        if (params && (!json_is_array(params) || json_array_size(params) > FUZZ_MAX_PARAMS))
            return false;
    }
    return true;
}

/* Same JSON value, numbers compared by value (1.0 may come back as 1), object keys in order. */
static bool same_value(json_t *a, json_t *b)
{
    size_t i;

    if (json_is_number(a) && json_is_number(b)) {
        if (json_is_integer(a) && json_is_integer(b))
            return json_integer_value(a) == json_integer_value(b);
        return json_number_value(a) == json_number_value(b);
    }
    if (json_typeof(a) != json_typeof(b))
        return false;
    switch (json_typeof(a)) {
    case JSON_STRING:
        return json_string_length(a) == json_string_length(b) &&
               memcmp(json_string_value(a), json_string_value(b), json_string_length(a)) == 0;
    case JSON_ARRAY:
        if (json_array_size(a) != json_array_size(b))
            return false;
        for (i = 0; i < json_array_size(a); i++)
            if (!same_value(json_array_get(a, i), json_array_get(b, i)))
                return false;
        return true;
    case JSON_OBJECT: {
        void *ia = json_object_iter(a), *ib = json_object_iter(b);

        if (json_object_size(a) != json_object_size(b))
            return false;
        for (; ia && ib; ia = json_object_iter_next(a, ia), ib = json_object_iter_next(b, ib))
            if (strcmp(json_object_iter_key(ia), json_object_iter_key(ib)) != 0 ||
                !same_value(json_object_iter_value(ia), json_object_iter_value(ib)))
                return false;
        return !ia && !ib;
    }
    default: /* true, false, null */
        return true;
    }
}

/* The parameter text promised by request.h for the JSON value v. */
static void check_param(json_t *v, const char *text)
{
    char digits[32], *end = NULL;
    json_t *back;
    double d;

    switch (json_typeof(v)) {
    case JSON_NULL:
        CHECK(text == NULL);
        return;
    case JSON_STRING:
        CHECK(text && strlen(text) == json_string_length(v) &&
              strcmp(text, json_string_value(v)) == 0);
        return;
    case JSON_INTEGER:
        snprintf(digits, sizeof digits, "%" JSON_INTEGER_FORMAT, json_integer_value(v));
        CHECK(text && strcmp(text, digits) == 0);
        return;
    case JSON_REAL:
        CHECK(text && text[0] != '\0' && strlen(text) < 32);
        d = strtod(text, &end);
        CHECK(*end == '\0' && d == json_real_value(v));
        return;
    case JSON_TRUE:
        CHECK(text && strcmp(text, "true") == 0);
        return;
    case JSON_FALSE:
        CHECK(text && strcmp(text, "false") == 0);
        return;
    default: /* object or array: compact JSON text of the same tree */
        CHECK(text != NULL);
        back = json_loads(text, JSON_REJECT_DUPLICATES, NULL);
        CHECK(back != NULL);
        CHECK(same_value(v, back));
        json_decref(back);
        return;
    }
}

static void check_string_field(json_t *v, const char *got)
{
    if (!v) {
        CHECK(got == NULL);
        return;
    }
    CHECK(got && strcmp(got, json_string_value(v)) == 0);
}

/* An accepted request against the tree jansson made of the same body. */
static void check_request(json_t *root, const http_batch_req *req)
{
    json_t *queries = json_object_get(root, "queries"), *v, *q, *params;
    const char *s;
    size_t i, j;

    v = json_object_get(root, "mode");
    s = v ? json_string_value(v) : "parallel";
    CHECK(req->mode == (strcmp(s, "transaction") == 0 ? HTTP_MODE_TRANSACTION : HTTP_MODE_PARALLEL));
    v = json_object_get(root, "isolation");
    s = v ? json_string_value(v) : "read_committed";
    CHECK(req->isolation == (strcmp(s, "serializable") == 0      ? HTTP_ISO_SERIALIZABLE
                             : strcmp(s, "repeatable_read") == 0 ? HTTP_ISO_REPEATABLE_READ
                                                                 : HTTP_ISO_READ_COMMITTED));
    v = json_object_get(root, "row_format");
    CHECK(req->rows_as_objects == (v && strcmp(json_string_value(v), "object") == 0));
    CHECK(req->read_only == json_is_true(json_object_get(root, "read_only")));
    CHECK(req->int8_as_number == json_is_true(json_object_get(root, "int8_as_number")));
    v = json_object_get(root, "max_rows");
    if (v && json_integer_value(v) < FUZZ_MAX_ROWS)
        CHECK(req->max_rows == (long)json_integer_value(v));
    else
        CHECK(req->max_rows == FUZZ_MAX_ROWS);
    v = json_object_get(root, "timeout_ms");
    if (!v)
        CHECK(req->timeout_ms == FUZZ_DEFAULT_TIMEOUT_MS);
    else if (json_integer_value(v) < FUZZ_MAX_TIMEOUT_MS)
        CHECK(req->timeout_ms == (int)json_integer_value(v));
    else
        CHECK(req->timeout_ms == FUZZ_MAX_TIMEOUT_MS);

    CHECK(req->nqueries >= 1 && (size_t)req->nqueries == json_array_size(queries));
    CHECK(req->queries != NULL);
    json_array_foreach(queries, i, q) {
        const http_query *hq = &req->queries[i];

        check_string_field(json_object_get(q, "sql"), hq->sql);
        check_string_field(json_object_get(q, "id"), hq->id);
        params = json_object_get(q, "params");
        CHECK(hq->nparams >= 0 && (size_t)hq->nparams == json_array_size(params));
        CHECK((hq->nparams == 0) == (hq->params == NULL));
        for (j = 0; j < (size_t)hq->nparams; j++)
            check_param(json_array_get(params, j), hq->params[j]);
    }
}

static void check_reason(const char *err)
{
    const char *p;

    CHECK(err[0] != '\0');
    for (p = err; *p; p++)
        CHECK((unsigned char)*p >= 0x20 && (unsigned char)*p <= 0x7e);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    const char *body = (const char *)data;
    http_batch_req *req = NULL, *again = NULL;
    char err[256], tiny[16];
    size_t tiny_len = size % sizeof tiny; /* 0: err NULL, errlen 0 */
    json_t *root = NULL;
    bool ok, want;

    memset(err, 0, sizeof err);
    ok = http_request_parse(body, size, &limits, &req, err, sizeof err);

    root = size ? json_loadb(body, size, JSON_REJECT_DUPLICATES | JSON_DECODE_ANY, NULL) : NULL;
    want = root && tree_depth(root) <= FUZZ_MAX_DEPTH && schema_ok(root);
    if (ok != want) {
        fprintf(stderr, "fuzz_request: parser %s, oracle %s (reason: %s)\n",
                ok ? "accepted" : "refused", want ? "accepts" : "refuses", ok ? "-" : err);
        abort();
    }
    if (ok) {
        CHECK(req != NULL);
        check_request(root, req);
    } else {
        CHECK(req == NULL);
        check_reason(err);
    }

    /* The verdict must not depend on the room given for the reason. */
    memset(tiny, 'x', sizeof tiny);
    CHECK(http_request_parse(body, size, &limits, &again, tiny_len ? tiny : NULL, tiny_len) == ok);
    CHECK((again != NULL) == ok);
    if (!ok && tiny_len)
        CHECK(memchr(tiny, '\0', tiny_len) != NULL);

    http_batch_req_free(again);
    http_batch_req_free(req);
    json_decref(root);
    return 0;
}
