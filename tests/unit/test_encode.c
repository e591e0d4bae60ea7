/*
 * Unit tests for db/encode.c: one case per row of the type table in encode.h, error objects
 * and command words. Outputs are compared whole, and some are also parsed with jansson.
 */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "db/encode.h"

#define FFFD "\xEF\xBF\xBD"

/* Encode one value and compare the whole output; text may be NULL for a NULL value. */
static void check_value_ex(Oid type, const char *text, bool int8_as_number, const char *expected)
{
    db_buf b = DB_BUF_INIT;

    db_encode_value(&b, type, text, text ? strlen(text) : 0, text == NULL, int8_as_number);
    assert_false(b.oom);
    assert_non_null(b.data);
    assert_string_equal(b.data, expected);
    db_buf_free(&b);
}

static void check_value(Oid type, const char *text, const char *expected)
{
    check_value_ex(type, text, false, expected);
}

/* The text must parse as one JSON value (any type); returns it for further checks. */
static json_t *parse(const char *text, size_t len)
{
    json_error_t err;
    json_t *j = json_loadb(text, len, JSON_DECODE_ANY, &err);

    if (!j)
        fail_msg("invalid JSON %s: %s", text, err.text);
    return j;
}

static void test_null(void **state)
{
    static const Oid types[] = {DB_OID_BOOL,   DB_OID_BYTEA,   DB_OID_INT8,   DB_OID_INT2,
                                DB_OID_INT4,   DB_OID_TEXT,    DB_OID_OID,    DB_OID_JSON,
                                DB_OID_FLOAT4, DB_OID_FLOAT8,  DB_OID_NUMERIC, DB_OID_JSONB,
                                1184 /* timestamptz */, 2950 /* uuid */};

    (void)state;
    for (size_t i = 0; i < sizeof types / sizeof types[0]; i++) {
        check_value(types[i], NULL, "null");
        check_value_ex(types[i], NULL, true, "null");
    }
    /* isnull wins over whatever text comes with it (libpq gives "" for NULL). */
    {
        db_buf b = DB_BUF_INIT;

        db_encode_value(&b, DB_OID_TEXT, "", 0, true, false);
        assert_string_equal(b.data, "null");
        db_buf_free(&b);
    }
}

static void test_integers(void **state)
{
    (void)state;
    check_value(DB_OID_INT2, "0", "0");
    check_value(DB_OID_INT2, "-32768", "-32768");
    check_value(DB_OID_INT4, "2147483647", "2147483647");
    check_value(DB_OID_INT4, "-42", "-42");
    check_value(DB_OID_OID, "4294967295", "4294967295");
    check_value(DB_OID_INT4, "", "\"\""); /* defensive: not a JSON number */
}

static void test_int8(void **state)
{
    (void)state;
    check_value(DB_OID_INT8, "9223372036854775807", "\"9223372036854775807\"");
    check_value(DB_OID_INT8, "-5", "\"-5\"");
    check_value_ex(DB_OID_INT8, "9223372036854775807", true, "9223372036854775807");
    check_value_ex(DB_OID_INT8, "-9223372036854775808", true, "-9223372036854775808");
    check_value_ex(DB_OID_INT8, "0", true, "0");
    /* int8_as_number applies to int8 only. */
    check_value_ex(DB_OID_NUMERIC, "12", true, "\"12\"");
    check_value_ex(DB_OID_INT4, "12", true, "12");
}

static void test_floats(void **state)
{
    static const Oid types[] = {DB_OID_FLOAT4, DB_OID_FLOAT8};

    (void)state;
    for (size_t i = 0; i < 2; i++) {
        Oid t = types[i];

        check_value(t, "1.5", "1.5");
        check_value(t, "-0", "-0");
        check_value(t, "0", "0");
        check_value(t, "1.5e+100", "1.5e+100");
        check_value(t, "1e-07", "1e-07");
        check_value(t, "-1.2345678901234567e-300", "-1.2345678901234567e-300");
        check_value(t, "3.4028235e+38", "3.4028235e+38");
        check_value(t, "NaN", "\"NaN\"");
        check_value(t, "Infinity", "\"Infinity\"");
        check_value(t, "-Infinity", "\"-Infinity\"");
    }
}

/* Text that PostgreSQL would not print, but that must not leak into the reply as bad JSON. */
static void test_floats_not_json_numbers(void **state)
{
    static const char *const bad[] = {"", "-", "+1", "01", "-01", ".5", "5.", "1e", "1e+",
                                      "1.e5", "0x10", " 1", "1 ", "inf", "1,5", "--1", "1e5.0"};
    char want[32];

    (void)state;
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        snprintf(want, sizeof want, "\"%s\"", bad[i]);
        check_value(DB_OID_FLOAT8, bad[i], want);
    }
    check_value(DB_OID_FLOAT8, "0.0", "0.0");
    check_value(DB_OID_FLOAT8, "10E5", "10E5");
    check_value(DB_OID_FLOAT8, "1E-5", "1E-5");
}

static void test_numeric(void **state)
{
    (void)state;
    check_value(DB_OID_NUMERIC, "3.14159265358979323846264338327950288",
                "\"3.14159265358979323846264338327950288\"");
    check_value(DB_OID_NUMERIC, "-0.00", "\"-0.00\"");
    check_value(DB_OID_NUMERIC, "NaN", "\"NaN\"");
    check_value(DB_OID_NUMERIC, "Infinity", "\"Infinity\"");
}

static void test_bool(void **state)
{
    (void)state;
    check_value(DB_OID_BOOL, "t", "true");
    check_value(DB_OID_BOOL, "f", "false");
    check_value(DB_OID_BOOL, "true", "\"true\"");
    check_value(DB_OID_BOOL, "", "\"\"");
}

static void test_json(void **state)
{
    static const char nested[] = "{\"a\": [1, 2.5, {\"b\": null}], \"c\": \"d\\\"e\"}";
    json_t *j;

    (void)state;
    check_value(DB_OID_JSON, nested, nested);
    check_value(DB_OID_JSONB, "{\"a\": [1, 2.5, {\"b\": null}], \"c\": \"d\\\"e\"}",
                "{\"a\": [1, 2.5, {\"b\": null}], \"c\": \"d\\\"e\"}");
    check_value(DB_OID_JSONB, "42", "42");
    check_value(DB_OID_JSON, "\"caf\xC3\xA9\"", "\"caf\xC3\xA9\"");
    j = parse(nested, strlen(nested));
    assert_true(json_is_object(j));
    json_decref(j);

    /* Not UTF-8 (a SQL_ASCII database): sent as a string so the reply stays JSON. */
    check_value(DB_OID_JSON, "{\"a\": \"\xFF\"}", "\"{\\\"a\\\": \\\"" FFFD "\\\"}\"");
    check_value(DB_OID_JSONB, "\"\xC0\x80\"", "\"\\\"" FFFD FFFD "\\\"\"");
    check_value(DB_OID_JSON, "", "\"\"");
}

static void test_other_types(void **state)
{
    (void)state;
    check_value(DB_OID_TEXT, "it's \"quoted\"\n", "\"it's \\\"quoted\\\"\\n\"");
    check_value(DB_OID_BYTEA, "\\x00ff", "\"\\\\x00ff\"");
    check_value(1007 /* int4[] */, "{1,2}", "\"{1,2}\"");
    check_value(1009 /* text[] */, "{\"a b\",NULL}", "\"{\\\"a b\\\",NULL}\"");
    check_value(1184 /* timestamptz */, "2024-05-01 12:34:56.789+00",
                "\"2024-05-01 12:34:56.789+00\"");
    check_value(1082 /* date */, "infinity", "\"infinity\"");
    check_value(2950 /* uuid */, "a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11",
                "\"a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11\"");
    check_value(DB_OID_TEXT, "bad \xE0\x80\x80 utf8", "\"bad " FFFD FFFD FFFD " utf8\"");
}

/* Values are copied by length: the text need not be NUL-terminated where it ends. */
static void test_value_length(void **state)
{
    db_buf b = DB_BUF_INIT;

    (void)state;
    db_encode_value(&b, DB_OID_INT4, "123456", 3, false, false);
    db_buf_putc(&b, ',');
    db_encode_value(&b, DB_OID_BOOL, "tf", 1, false, false);
    db_buf_putc(&b, ',');
    db_encode_value(&b, DB_OID_JSON, "[1]]", 3, false, false);
    db_buf_putc(&b, ',');
    db_encode_value(&b, DB_OID_TEXT, "abcdef", 2, false, false);
    assert_string_equal(b.data, "123,true,[1],\"ab\"");
    db_buf_free(&b);
}

/* A row as the worker writes it: every piece together is one valid JSON array. */
static void test_row_parses(void **state)
{
    db_buf b = DB_BUF_INIT;
    json_t *j;

    (void)state;
    db_buf_putc(&b, '[');
    db_encode_value(&b, DB_OID_INT4, "1", 1, false, false);
    db_buf_putc(&b, ',');
    db_encode_value(&b, DB_OID_FLOAT8, "-Infinity", 9, false, false);
    db_buf_putc(&b, ',');
    db_encode_value(&b, DB_OID_FLOAT8, "-1.5e-10", 8, false, false);
    db_buf_putc(&b, ',');
    db_encode_value(&b, DB_OID_JSONB, "{\"k\": [true]}", 13, false, false);
    db_buf_putc(&b, ',');
    db_encode_value(&b, DB_OID_BYTEA, "\\x00ff", 6, false, false);
    db_buf_putc(&b, ',');
    db_encode_value(&b, DB_OID_TEXT, NULL, 0, true, false);
    db_buf_putc(&b, ']');
    j = parse(b.data, b.len);
    assert_int_equal(json_array_size(j), 6);
    assert_string_equal(json_string_value(json_array_get(j, 1)), "-Infinity");
    assert_true(json_is_real(json_array_get(j, 2)));
    assert_true(json_is_true(json_array_get(json_object_get(json_array_get(j, 3), "k"), 0)));
    assert_string_equal(json_string_value(json_array_get(j, 4)), "\\x00ff");
    assert_true(json_is_null(json_array_get(j, 5)));
    json_decref(j);
    db_buf_free(&b);
}

static void check_sql_error(const char *code, const char *message, const char *detail,
                            const char *hint, const char *position, const char *constraint,
                            const char *expected)
{
    db_buf b = DB_BUF_INIT;
    json_t *j;

    db_encode_sql_error(&b, code, message, detail, hint, position, constraint);
    assert_string_equal(b.data, expected);
    j = parse(b.data, b.len);
    assert_int_equal(json_object_size(j), 6);
    json_decref(j);
    db_buf_free(&b);
}

static void test_sql_error(void **state)
{
    (void)state;
    check_sql_error("23505", "duplicate key value violates unique constraint \"t_pkey\"",
                    "Key (id)=(1) already exists.", "Try another id.", "17", "t_pkey",
                    "{\"code\":\"23505\",\"message\":\"duplicate key value violates unique "
                    "constraint \\\"t_pkey\\\"\",\"detail\":\"Key (id)=(1) already exists.\","
                    "\"hint\":\"Try another id.\",\"position\":17,\"constraint\":\"t_pkey\"}");
    check_sql_error("42P01", "relation \"nope\" does not exist", NULL, NULL, "15", NULL,
                    "{\"code\":\"42P01\",\"message\":\"relation \\\"nope\\\" does not exist\","
                    "\"detail\":null,\"hint\":null,\"position\":15,\"constraint\":null}");
    check_sql_error(NULL, NULL, NULL, NULL, NULL, NULL,
                    "{\"code\":\"XX000\",\"message\":\"unknown error\",\"detail\":null,"
                    "\"hint\":null,\"position\":null,\"constraint\":null}");
}

/* Error texts that quote a huge input are cut at DB_ERROR_TEXT_MAX bytes, on a character
 * boundary, ending in "..."; short ones and NULL are untouched. */
static void test_sql_error_long_texts(void **state)
{
    (void)state;
    size_t n = 3 * DB_ERROR_TEXT_MAX;
    char *message = malloc(n + 1), *detail = malloc(n + 1);
    assert_non_null(message);
    assert_non_null(detail);
    message[0] = 'x'; /* then é: a cut in the middle of one would be invalid UTF-8 */
    for (size_t i = 1; i + 2 <= n; i += 2)
        memcpy(message + i, "\xc3\xa9", 2);
    message[n - 1] = '\0';
    memset(detail, 'd', n);
    detail[n] = '\0';
    db_buf b = DB_BUF_INIT;
    db_encode_sql_error(&b, "22P02", message, detail, "short hint", NULL, NULL);
    json_t *doc = parse(b.data, b.len); /* jansson refuses invalid UTF-8 */
    assert_non_null(doc);
    const char *m = json_string_value(json_object_get(doc, "message"));
    const char *d = json_string_value(json_object_get(doc, "detail"));
    assert_non_null(m);
    assert_non_null(d);
    assert_true(strlen(m) <= DB_ERROR_TEXT_MAX && strlen(m) >= DB_ERROR_TEXT_MAX - 4);
    assert_string_equal(m + strlen(m) - 3, "...");
    assert_int_equal(strlen(d), DB_ERROR_TEXT_MAX);
    assert_string_equal(d + strlen(d) - 3, "...");
    assert_string_equal(json_string_value(json_object_get(doc, "hint")), "short hint");
    assert_true(b.len < 3 * DB_ERROR_TEXT_MAX);
    json_decref(doc);
    db_buf_free(&b);
    /* exactly the limit: whole */
    detail[DB_ERROR_TEXT_MAX] = '\0';
    db_encode_sql_error(&b, "22P02", "m", detail, NULL, NULL, NULL);
    doc = parse(b.data, b.len);
    assert_non_null(doc);
    assert_int_equal(strlen(json_string_value(json_object_get(doc, "detail"))), DB_ERROR_TEXT_MAX);
    assert_int_not_equal(json_string_value(json_object_get(doc, "detail"))[DB_ERROR_TEXT_MAX - 1], '.');
    json_decref(doc);
    db_buf_free(&b);
    free(message);
    free(detail);
}

static void test_sql_error_position(void **state)
{
    static const char *const bad[] = {"", "0", "-3", "12a", "abc", " 1", "+1", "01",
                                      "1234567890123456"};
    static const char want[] = "{\"code\":\"22012\",\"message\":\"division by zero\","
                               "\"detail\":null,\"hint\":null,\"position\":null,"
                               "\"constraint\":null}";

    (void)state;
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++)
        check_sql_error("22012", "division by zero", NULL, NULL, bad[i], NULL, want);
    check_sql_error("22012", "division by zero", NULL, NULL, "123456789012345", NULL,
                    "{\"code\":\"22012\",\"message\":\"division by zero\",\"detail\":null,"
                    "\"hint\":null,\"position\":123456789012345,\"constraint\":null}");
}

static void test_error(void **state)
{
    db_buf b = DB_BUF_INIT;
    json_t *j;

    (void)state;
    db_encode_error(&b, "not_run", "an earlier query failed");
    assert_string_equal(b.data, "{\"code\":\"not_run\",\"message\":\"an earlier query failed\"}");
    j = parse(b.data, b.len);
    assert_string_equal(json_string_value(json_object_get(j, "code")), "not_run");
    json_decref(j);
    db_buf_reset(&b);
    db_encode_error(&b, "bad\"code", "line\nbreak");
    assert_string_equal(b.data, "{\"code\":\"bad\\\"code\",\"message\":\"line\\nbreak\"}");
    db_buf_free(&b);
}

static void check_word(const char *tag, const char *expected)
{
    const char *word = NULL;
    size_t n = db_command_word(tag, &word);

    assert_int_equal(n, strlen(expected));
    assert_non_null(word);
    assert_memory_equal(word, expected, n);
}

static void test_command_word(void **state)
{
    (void)state;
    check_word("SELECT 1", "SELECT");
    check_word("INSERT 0 3", "INSERT");
    check_word("CREATE TABLE", "CREATE");
    check_word("BEGIN", "BEGIN");
    check_word("", "");
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_null),
        cmocka_unit_test(test_integers),
        cmocka_unit_test(test_int8),
        cmocka_unit_test(test_floats),
        cmocka_unit_test(test_floats_not_json_numbers),
        cmocka_unit_test(test_numeric),
        cmocka_unit_test(test_bool),
        cmocka_unit_test(test_json),
        cmocka_unit_test(test_other_types),
        cmocka_unit_test(test_value_length),
        cmocka_unit_test(test_row_parses),
        cmocka_unit_test(test_sql_error),
        cmocka_unit_test(test_sql_error_long_texts),
        cmocka_unit_test(test_sql_error_position),
        cmocka_unit_test(test_error),
        cmocka_unit_test(test_command_word),
    };

    return cmocka_run_group_tests(tests, NULL, NULL);
}
