/*
 * libFuzzer harness for the value encoder (db/encode.c, db/buf.c) and http_format_double.
 *
 * Input: one selector byte, then the value's bytes (what PostgreSQL would have printed; the
 * fuzzer may send anything, including bytes the server never would). The selector picks the
 * column type (bool, int2/4/8, oid, float4/8, numeric, json, jsonb, text, bytea, an OID fanout
 * does not know, SQL NULL), a bare db_buf_json_string, http_format_double over 8 bytes, the
 * error objects (db_encode_sql_error, db_encode_error: fields the server sent, any of them
 * missing) with db_command_word, or the buffer's own writers (db_buf_long, db_buf_double,
 * db_buf_printf, db_buf_steal, db_buf_reset) against snprintf.
 *
 * Checks, each a call to abort() when it fails:
 *   - the value, written after "[" into a buffer that already holds text, followed by "]", is
 *     JSON that jansson accepts (JSON_DECODE_ANY | JSON_ALLOW_NUL: "\u0000" is valid JSON, and
 *     the raw bytes of a PostgreSQL value never hold NUL anyway);
 *   - it is the JSON the table in encode.h promises: numbers copied byte for byte and only when
 *     they are JSON numbers, strings that decode to the input with every ill-formed sequence
 *     replaced by U+FFFD (Unicode's maximal-subpart practice, computed here by the WHATWG
 *     decoder), json/jsonb embedded as is when it is UTF-8;
 *   - db_utf8_valid agrees with a decoder written independently below.
 * Precondition kept from the contract: json/jsonb values are JSON the server has parsed, so a
 * json/jsonb input that jansson refuses and that is valid UTF-8 is not checked for validity
 * (the encoder embeds it as it is, by design). Numbers that jansson cannot hold (1e400, 20
 * digit integers) are valid JSON by RFC 8259; they are checked with the grammar instead.
 */
#include <jansson.h>
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "db/buf.h"
#include "db/encode.h"
#include "http/request.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

#define CHECK(cond)                                                                      \
    do {                                                                                 \
        if (!(cond)) {                                                                   \
            fprintf(stderr, "fuzz_encode: check failed at %s:%d: %s\n", __FILE__, __LINE__, \
                    #cond);                                                              \
            abort();                                                                     \
        }                                                                                \
    } while (0)

/* What the selector byte (modulo the count) picks. */
enum sel {
    SEL_BOOL, SEL_INT2, SEL_INT4, SEL_INT8, SEL_INT8_NUMBER, SEL_OID, SEL_FLOAT4, SEL_FLOAT8,
    SEL_NUMERIC, SEL_JSON, SEL_JSONB, SEL_TEXT, SEL_BYTEA, SEL_OTHER, SEL_NULL,
    SEL_JSON_STRING, SEL_FORMAT_DOUBLE, SEL_SQL_ERROR, SEL_BUF, SEL_COUNT
};

static const Oid sel_oid[] = {
    [SEL_BOOL] = DB_OID_BOOL,       [SEL_INT2] = DB_OID_INT2,     [SEL_INT4] = DB_OID_INT4,
    [SEL_INT8] = DB_OID_INT8,       [SEL_INT8_NUMBER] = DB_OID_INT8, [SEL_OID] = DB_OID_OID,
    [SEL_FLOAT4] = DB_OID_FLOAT4,   [SEL_FLOAT8] = DB_OID_FLOAT8, [SEL_NUMERIC] = DB_OID_NUMERIC,
    [SEL_JSON] = DB_OID_JSON,       [SEL_JSONB] = DB_OID_JSONB,   [SEL_TEXT] = DB_OID_TEXT,
    [SEL_BYTEA] = DB_OID_BYTEA,     [SEL_OTHER] = 2950 /* uuid */, [SEL_NULL] = DB_OID_INT4,
};

/*
 * Independent UTF-8 check: decode each sequence by its lead byte's length, then refuse what the
 * decoded code point rules out (overlong for its length, surrogate, beyond U+10FFFF).
 */
static bool ref_utf8_valid(const unsigned char *s, size_t n)
{
    static const uint32_t min_for_len[5] = {0, 0, 0x80, 0x800, 0x10000};
    size_t i = 0;

    while (i < n) {
        unsigned c = s[i];
        size_t len, k;
        uint32_t cp;

        if (c < 0x80) {
            i++;
            continue;
        }
        if ((c & 0xE0) == 0xC0) {
            len = 2;
            cp = c & 0x1F;
        } else if ((c & 0xF0) == 0xE0) {
            len = 3;
            cp = c & 0x0F;
        } else if ((c & 0xF8) == 0xF0) {
            len = 4;
            cp = c & 0x07;
        } else {
            return false;
        }
        if (n - i < len)
            return false;
        for (k = 1; k < len; k++) {
            if ((s[i + k] & 0xC0) != 0x80)
                return false;
            cp = (cp << 6) | (s[i + k] & 0x3F);
        }
        if (cp < min_for_len[len] || (cp >= 0xD800 && cp <= 0xDFFF) || cp > 0x10FFFF)
            return false;
        i += len;
    }
    return true;
}

static void put_utf8(unsigned char *out, size_t *o, uint32_t cp)
{
    if (cp < 0x80) {
        out[(*o)++] = (unsigned char)cp;
    } else if (cp < 0x800) {
        out[(*o)++] = (unsigned char)(0xC0 | (cp >> 6));
        out[(*o)++] = (unsigned char)(0x80 | (cp & 0x3F));
    } else if (cp < 0x10000) {
        out[(*o)++] = (unsigned char)(0xE0 | (cp >> 12));
        out[(*o)++] = (unsigned char)(0x80 | ((cp >> 6) & 0x3F));
        out[(*o)++] = (unsigned char)(0x80 | (cp & 0x3F));
    } else {
        out[(*o)++] = (unsigned char)(0xF0 | (cp >> 18));
        out[(*o)++] = (unsigned char)(0x80 | ((cp >> 12) & 0x3F));
        out[(*o)++] = (unsigned char)(0x80 | ((cp >> 6) & 0x3F));
        out[(*o)++] = (unsigned char)(0x80 | (cp & 0x3F));
    }
}

/*
 * s[0..n) decoded by the WHATWG Encoding Standard's UTF-8 decoder (replacement mode), which
 * implements Unicode's "maximal subpart" substitution, re-encoded as UTF-8. Returns a malloc'd
 * buffer (at most 3n bytes: each input byte yields at most one U+FFFD) and its length.
 */
static unsigned char *ref_replace(const unsigned char *s, size_t n, size_t *outlen)
{
    unsigned char *out = malloc(3 * n + 1);
    unsigned lower = 0x80, upper = 0xBF, needed = 0, seen = 0;
    uint32_t cp = 0;
    size_t i, o = 0;

    CHECK(out != NULL);
    for (i = 0; i < n; i++) {
        unsigned b = s[i];

        if (needed == 0) {
            if (b <= 0x7F) {
                out[o++] = (unsigned char)b;
            } else if (b >= 0xC2 && b <= 0xDF) {
                needed = 1;
                cp = b & 0x1F;
            } else if (b >= 0xE0 && b <= 0xEF) {
                if (b == 0xE0)
                    lower = 0xA0;
                if (b == 0xED)
                    upper = 0x9F;
                needed = 2;
                cp = b & 0xF;
            } else if (b >= 0xF0 && b <= 0xF4) {
                if (b == 0xF0)
                    lower = 0x90;
                if (b == 0xF4)
                    upper = 0x8F;
                needed = 3;
                cp = b & 0x7;
            } else {
                put_utf8(out, &o, 0xFFFD);
            }
            continue;
        }
        if (b < lower || b > upper) {
            cp = needed = seen = 0;
            lower = 0x80;
            upper = 0xBF;
            put_utf8(out, &o, 0xFFFD);
            i--; /* the byte starts afresh */
            continue;
        }
        lower = 0x80;
        upper = 0xBF;
        cp = (cp << 6) | (b & 0x3F);
        if (++seen == needed) {
            put_utf8(out, &o, cp);
            cp = needed = seen = 0;
        }
    }
    if (needed)
        put_utf8(out, &o, 0xFFFD);
    *outlen = o;
    return out;
}

/* RFC 8259 number, as a state machine (encode.c uses a scanner; this is a second opinion). */
static bool ref_json_number(const char *s, size_t n)
{
    enum { START, MINUS, ZERO, INT, DOT, FRAC, EXP_MARK, EXP_SIGN, EXP } st = START;
    size_t i;

    for (i = 0; i < n; i++) {
        char c = s[i];
        bool digit = c >= '0' && c <= '9';

        switch (st) {
        case START:
            if (c == '-')
                st = MINUS;
            else if (c == '0')
                st = ZERO;
            else if (digit)
                st = INT;
            else
                return false;
            break;
        case MINUS:
            if (!digit)
                return false;
            st = c == '0' ? ZERO : INT;
            break;
        case ZERO:
        case INT:
            if (digit && st == INT)
                break;
            if (c == '.')
                st = DOT;
            else if (c == 'e' || c == 'E')
                st = EXP_MARK;
            else
                return false;
            break;
        case DOT:
        case FRAC:
            if (digit)
                st = FRAC;
            else if (st == FRAC && (c == 'e' || c == 'E'))
                st = EXP_MARK;
            else
                return false;
            break;
        case EXP_MARK:
            if (c == '+' || c == '-')
                st = EXP_SIGN;
            else if (digit)
                st = EXP;
            else
                return false;
            break;
        case EXP_SIGN:
        case EXP:
            if (!digit)
                return false;
            st = EXP;
            break;
        }
    }
    return st == ZERO || st == INT || st == FRAC || st == EXP;
}

/*
 * The one element of "[...]" as jansson reads it. NULL when jansson refuses the text (jerr says
 * why) or when it is JSON of another shape (*shape_bad: an embedded json value that was not
 * JSON, such as "1,2" or whitespace alone).
 */
static json_t *parse_element(const db_buf *b, size_t start, json_error_t *jerr, bool *shape_bad)
{
    json_t *arr = json_loadb(b->data + start, b->len - start, JSON_DECODE_ANY | JSON_ALLOW_NUL,
                             jerr);
    json_t *v = NULL;

    *shape_bad = arr && !(json_is_array(arr) && json_array_size(arr) == 1);
    if (arr && !*shape_bad)
        v = json_incref(json_array_get(arr, 0));
    json_decref(arr);
    return v;
}

/* v is a JSON string holding exactly text with ill-formed UTF-8 replaced. */
static void check_string(json_t *v, const unsigned char *text, size_t len)
{
    size_t rlen;
    unsigned char *want = ref_replace(text, len, &rlen);

    CHECK(json_is_string(v));
    CHECK(json_string_length(v) == rlen && memcmp(json_string_value(v), want, rlen) == 0);
    free(want);
}

static void check_json_string(const unsigned char *text, size_t len)
{
    db_buf b = DB_BUF_INIT;
    json_t *v;
    bool valid = ref_utf8_valid(text, len);

    CHECK(db_utf8_valid((const char *)text, len) == valid);
    db_buf_json_string(&b, (const char *)text, len);
    CHECK(!b.oom && b.data && strlen(b.data) == b.len); /* NUL bytes are escaped, never raw */
    v = json_loadb(b.data, b.len, JSON_DECODE_ANY | JSON_ALLOW_NUL, NULL);
    CHECK(v != NULL);
    check_string(v, text, len);
    if (valid) /* nothing to replace: the string is the input itself */
        CHECK(json_string_length(v) == len && memcmp(json_string_value(v), text, len) == 0);
    json_decref(v);
    db_buf_free(&b);
}

static void check_format_double(const uint8_t *p, size_t n)
{
    char buf[40], *end = NULL;
    double v = 0;
    size_t room;

    if (n < 8)
        return;
    memcpy(&v, p, sizeof v);
    room = n > 8 ? p[8] % sizeof buf : 32; /* 32 always suffices, say the docs */
    memset(buf, 'x', sizeof buf);
    if (!isfinite(v)) {
        CHECK(!http_format_double(v, buf, room));
        return;
    }
    if (!http_format_double(v, buf, room)) {
        CHECK(room < 32);
        return;
    }
    CHECK(strlen(buf) < room);
    CHECK(strtod(buf, &end) == v && *end == '\0');
    /* The text also goes inside JSON parameters (put_json), so it must be a JSON number. */
    CHECK(ref_json_number(buf, strlen(buf)));
}

/* Member `key` of obj is null when want is NULL, else a string holding want (replaced). */
static void check_member(json_t *obj, const char *key, const char *want)
{
    json_t *v = json_object_get(obj, key);

    CHECK(v != NULL);
    if (!want)
        CHECK(json_is_null(v));
    else
        check_string(v, (const unsigned char *)want, strlen(want));
}

/* A server position: digits 1-9 then up to 14 more (encode.h: a number when valid, else null). */
static bool ref_position(const char *s)
{
    size_t n = s ? strlen(s) : 0;

    if (n == 0 || n > 15 || s[0] == '0')
        return false;
    return strspn(s, "0123456789") == n;
}

/*
 * text = one mask byte (bit i: field i is present, else NULL), then the fields code, message,
 * detail, hint, position, constraint separated by NUL bytes (missing ones are "").
 */
static void check_errors(const unsigned char *text, size_t len)
{
    static const char *const keys[] = {"code", "message", "detail", "hint", "position",
                                       "constraint"};
    char *copy, *field[6] = {NULL}, *p;
    const char *word = NULL;
    db_buf b = DB_BUF_INIT;
    unsigned mask;
    size_t i, n;
    json_t *v, *arr;
    void *it;

    if (len == 0)
        return;
    mask = text[0];
    copy = malloc(len); /* the fields, each NUL-terminated as libpq hands them over */
    CHECK(copy != NULL);
    memcpy(copy, text + 1, len - 1);
    copy[len - 1] = '\0';
    for (i = 0, p = copy; i < 6; i++) {
        field[i] = (mask >> i) & 1 ? p : NULL;
        p += strlen(p) + 1;
        if (p > copy + len - 1)
            p = copy + len - 1; /* the final NUL: "" from here on */
    }

    db_buf_puts(&b, "[");
    db_encode_sql_error(&b, field[0], field[1], field[2], field[3], field[4], field[5]);
    db_buf_putc(&b, ',');
    db_encode_error(&b, field[0], field[1]);
    db_buf_putc(&b, ']');
    CHECK(!b.oom);
    arr = json_loadb(b.data, b.len, 0, NULL);
    CHECK(arr && json_is_array(arr) && json_array_size(arr) == 2);

    v = json_array_get(arr, 0); /* the SQL error: six keys in order */
    CHECK(json_is_object(v) && json_object_size(v) == 6);
    for (i = 0, it = json_object_iter(v); i < 6; i++, it = json_object_iter_next(v, it))
        CHECK(it && strcmp(json_object_iter_key(it), keys[i]) == 0);
    check_member(v, "code", field[0] ? field[0] : "XX000");
    check_member(v, "message", field[1] ? field[1] : "unknown error");
    check_member(v, "detail", field[2]);
    check_member(v, "hint", field[3]);
    check_member(v, "constraint", field[5]);
    if (ref_position(field[4]))
        CHECK(json_is_integer(json_object_get(v, "position")) &&
              json_integer_value(json_object_get(v, "position")) == strtoll(field[4], NULL, 10));
    else
        CHECK(json_is_null(json_object_get(v, "position")));

    v = json_array_get(arr, 1); /* fanout's own error: two keys, NULL stays null */
    CHECK(json_is_object(v) && json_object_size(v) == 2);
    check_member(v, "code", field[0]);
    check_member(v, "message", field[1]);
    json_decref(arr);
    db_buf_free(&b);

    n = db_command_word(field[0], &word);
    CHECK(field[0] ? word == field[0] : word && word[0] == '\0');
    CHECK(n == (field[0] ? strcspn(field[0], " ") : 0));
    free(copy);
}

/*
 * text = 8 bytes of a long long, 8 of a double, one signed byte of decimals, then bytes for
 * db_buf_printf; each writer's output is compared with snprintf's, in one growing buffer.
 */
static void check_buf(const unsigned char *text, size_t len)
{
    char want[512], *big = NULL, *stolen;
    db_buf b = DB_BUF_INIT;
    size_t at, blen, slen = 1;
    long long ll = 0;
    double d = 0;
    int dec = 0, wlen;

    if (len < 17)
        return;
    memcpy(&ll, text, 8);
    memcpy(&d, text + 8, 8);
    dec = (signed char)text[16];
    text += 17;
    len -= 17;

    db_buf_long(&b, ll);
    snprintf(want, sizeof want, "%lld", ll);
    CHECK(!b.oom && strcmp(b.data, want) == 0);

    at = b.len;
    db_buf_double(&b, d, dec);
    if (!isfinite(d))
        snprintf(want, sizeof want, "null");
    else
        snprintf(want, sizeof want, "%.*f", dec < 0 ? 0 : dec > 17 ? 17 : dec, d);
    CHECK(!b.oom && strcmp(b.data + at, want) == 0);
    CHECK(strcmp(want, "null") == 0 || ref_json_number(want, strlen(want)));

    /* Long enough, sometimes, to take db_buf_printf's second pass. */
    at = b.len;
    wlen = snprintf(NULL, 0, "%.*s|%d|%.*s", (int)len, (const char *)text, dec, (int)len,
                    (const char *)text);
    CHECK(wlen >= 0 && (big = malloc((size_t)wlen + 1)) != NULL);
    snprintf(big, (size_t)wlen + 1, "%.*s|%d|%.*s", (int)len, (const char *)text, dec, (int)len,
             (const char *)text);
    db_buf_printf(&b, "%.*s|%d|%.*s", (int)len, (const char *)text, dec, (int)len,
                  (const char *)text);
    CHECK(!b.oom && b.len == at + (size_t)wlen && memcmp(b.data + at, big, (size_t)wlen) == 0);
    CHECK(b.data[b.len] == '\0');

    blen = b.len;
    stolen = db_buf_steal(&b, &slen);
    CHECK(stolen && slen == blen && stolen[slen] == '\0' && memcmp(stolen + at, big, slen - at) == 0);
    CHECK(b.data == NULL && b.len == 0 && !b.oom);
    free(stolen);
    stolen = db_buf_steal(&b, &slen); /* an empty buffer hands over "" */
    CHECK(stolen && slen == 0 && stolen[0] == '\0');
    free(stolen);

    db_buf_append(&b, text, len);
    db_buf_reset(&b);
    CHECK(b.len == 0 && !b.oom && (b.data == NULL || b.data[0] == '\0'));
    db_buf_json_string_or_null(&b, NULL);
    CHECK(strcmp(b.data, "null") == 0);
    db_buf_free(&b);
    free(big);
}

static void check_value(enum sel sel, const unsigned char *text, size_t len)
{
    static const char prefix[] = "{\"some\":\"earlier output\"}"; /* append, not only start */
    Oid oid = sel_oid[sel];
    bool isnull = sel == SEL_NULL, as_number = sel == SEL_INT8_NUMBER;
    bool numeric_type = sel == SEL_INT2 || sel == SEL_INT4 || sel == SEL_OID ||
                        sel == SEL_FLOAT4 || sel == SEL_FLOAT8 || sel == SEL_INT8_NUMBER;
    bool is_json = sel == SEL_JSON || sel == SEL_JSONB;
    db_buf b = DB_BUF_INIT;
    size_t start, vstart, vlen;
    json_error_t jerr;
    bool shape_bad;
    json_t *v;

    db_buf_puts(&b, prefix);
    start = b.len;
    db_buf_putc(&b, '[');
    vstart = b.len;
    db_encode_value(&b, oid, (const char *)text, len, isnull, as_number);
    vlen = b.len - vstart;
    db_buf_putc(&b, ']');
    CHECK(!b.oom && memcmp(b.data, prefix, start) == 0);

    v = parse_element(&b, start, &jerr, &shape_bad);
    if (isnull) {
        CHECK(v && json_is_null(v));
    } else if (numeric_type) {
        bool number = ref_json_number((const char *)text, len);

        if (number) { /* copied digit for digit */
            CHECK(vlen == len && memcmp(b.data + vstart, text, len) == 0);
            /* jansson refuses numbers it cannot hold; RFC 8259 still calls them JSON */
            CHECK(v ? json_is_number(v)
                    : !shape_bad && json_error_code(&jerr) == json_error_numeric_overflow);
        } else {
            CHECK(v != NULL);
            check_string(v, text, len);
        }
    } else if (sel == SEL_BOOL && len == 1 && (text[0] == 't' || text[0] == 'f')) {
        CHECK(v && json_is_boolean(v) && json_is_true(v) == (text[0] == 't'));
    } else if (is_json && len > 0 && ref_utf8_valid(text, len)) {
        json_t *in = json_loadb((const char *)text, len, JSON_DECODE_ANY | JSON_ALLOW_NUL, NULL);

        CHECK(vlen == len && memcmp(b.data + vstart, text, len) == 0); /* embedded as is */
        if (in) /* the server's JSON (precondition): the reply must be JSON too */
            CHECK(v && json_equal(v, in));
        json_decref(in);
    } else {
        CHECK(v != NULL);
        check_string(v, text, len);
    }
    json_decref(v);
    db_buf_free(&b);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    unsigned char *text;
    size_t len;
    enum sel sel;

    if (size == 0)
        return 0;
    sel = (enum sel)(data[0] % SEL_COUNT);
    len = size - 1;
    /* An exact-size copy, so ASan sees any read past len (PostgreSQL's text ends in NUL; the
     * encoder must not rely on that). */
    text = malloc(len ? len : 1);
    CHECK(text != NULL);
    memcpy(text, data + 1, len);
    if (sel == SEL_FORMAT_DOUBLE)
        check_format_double(text, len);
    else if (sel == SEL_SQL_ERROR)
        check_errors(text, len);
    else if (sel == SEL_BUF)
        check_buf(text, len);
    else if (sel == SEL_JSON_STRING)
        check_json_string(text, len);
    else
        check_value(sel, text, len);
    free(text);
    return 0;
}
