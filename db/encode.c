/*
 * db_encode: PostgreSQL text output to JSON, per the table in encode.h.
 *
 * Number-typed values are copied digit for digit, but only after checking them against the
 * JSON number grammar: whatever the server sends, the reply stays valid JSON (a value that is
 * not a JSON number, such as float8 "NaN", becomes a string instead).
 */
#include "db/encode.h"

#include <stdlib.h>
#include <string.h>

/* Advance *i over decimal digits of s[0..n); returns how many there were. */
static size_t skip_digits(const char *s, size_t n, size_t *i)
{
    size_t start = *i;

    while (*i < n && s[*i] >= '0' && s[*i] <= '9')
        (*i)++;
    return *i - start;
}

/* True when s[0..n) is a number by RFC 8259: -?(0|[1-9][0-9]*)(\.[0-9]+)?([eE][+-]?[0-9]+)? */
static bool json_number(const char *s, size_t n)
{
    size_t i = 0;

    if (i < n && s[i] == '-')
        i++;
    if (i < n && s[i] == '0')
        i++;
    else if (skip_digits(s, n, &i) == 0)
        return false;
    if (i < n && s[i] == '.') {
        i++;
        if (skip_digits(s, n, &i) == 0)
            return false;
    }
    if (i < n && (s[i] == 'e' || s[i] == 'E')) {
        i++;
        if (i < n && (s[i] == '+' || s[i] == '-'))
            i++;
        if (skip_digits(s, n, &i) == 0)
            return false;
    }
    return i == n;
}

static void number_or_string(db_buf *b, const char *text, size_t len)
{
    if (json_number(text, len))
        db_buf_append(b, text, len);
    else
        db_buf_json_string(b, text, len);
}

void db_encode_value(db_buf *b, Oid type, const char *text, size_t len, bool isnull,
                     bool int8_as_number)
{
    if (isnull) {
        db_buf_append(b, "null", 4);
        return;
    }
    switch (type) {
    case DB_OID_INT2:
    case DB_OID_INT4:
    case DB_OID_OID:
    case DB_OID_FLOAT4:
    case DB_OID_FLOAT8:
        number_or_string(b, text, len);
        break;
    case DB_OID_INT8:
        /* Past 2^53 a double (JavaScript's only number) loses digits, hence a string by default. */
        if (int8_as_number)
            number_or_string(b, text, len);
        else
            db_buf_json_string(b, text, len);
        break;
    case DB_OID_BOOL:
        if (len == 1 && text[0] == 't')
            db_buf_append(b, "true", 4);
        else if (len == 1 && text[0] == 'f')
            db_buf_append(b, "false", 5);
        else
            db_buf_json_string(b, text, len);
        break;
    case DB_OID_JSON:
    case DB_OID_JSONB:
        /* The server has parsed it already; only its encoding can still be wrong (SQL_ASCII). */
        if (len > 0 && db_utf8_valid(text, len))
            db_buf_append(b, text, len);
        else
            db_buf_json_string(b, text, len);
        break;
    case DB_OID_NUMERIC: /* exact digits that a double would round; also NaN, Infinity */
    default:
        db_buf_json_string(b, text, len);
        break;
    }
}

/* Positions are 1-based character offsets; at most 15 digits keeps them exact in a double. */
static bool positive_integer(const char *s)
{
    size_t i = 0, n;

    if (!s || s[0] < '1' || s[0] > '9')
        return false;
    n = strlen(s);
    return n <= 15 && skip_digits(s, n, &i) == n;
}

/* A JSON string of text, or null; cut to DB_ERROR_TEXT_MAX bytes with "..." (see encode.h). */
static void put_error_text(db_buf *b, const char *text)
{
    size_t len = text ? strlen(text) : 0, cut = DB_ERROR_TEXT_MAX - 3;
    char *copy;

    if (len <= DB_ERROR_TEXT_MAX) {
        db_buf_json_string_or_null(b, text);
        return;
    }
    while (cut > 0 && ((unsigned char)text[cut] & 0xC0) == 0x80)
        cut--; /* not inside a UTF-8 sequence */
    copy = malloc(cut + 4);
    if (!copy) {
        b->oom = true;
        return;
    }
    memcpy(copy, text, cut);
    memcpy(copy + cut, "...", 4);
    db_buf_json_string(b, copy, cut + 3);
    free(copy);
}

void db_encode_sql_error(db_buf *b, const char *code, const char *message, const char *detail,
                         const char *hint, const char *position, const char *constraint)
{
    db_buf_puts(b, "{\"code\":");
    db_buf_json_string_or_null(b, code ? code : "XX000");
    db_buf_puts(b, ",\"message\":");
    put_error_text(b, message ? message : "unknown error");
    db_buf_puts(b, ",\"detail\":");
    put_error_text(b, detail);
    db_buf_puts(b, ",\"hint\":");
    put_error_text(b, hint);
    db_buf_puts(b, ",\"position\":");
    db_buf_puts(b, positive_integer(position) ? position : "null");
    db_buf_puts(b, ",\"constraint\":");
    db_buf_json_string_or_null(b, constraint);
    db_buf_putc(b, '}');
}

void db_encode_error(db_buf *b, const char *code, const char *message)
{
    db_buf_puts(b, "{\"code\":");
    db_buf_json_string_or_null(b, code);
    db_buf_puts(b, ",\"message\":");
    db_buf_json_string_or_null(b, message);
    db_buf_putc(b, '}');
}

size_t db_command_word(const char *tag, const char **word)
{
    size_t n = 0;

    if (!tag)
        tag = "";
    while (tag[n] != '\0' && tag[n] != ' ')
        n++;
    *word = tag;
    return n;
}
