/*
 * Unit tests for db/buf.c: growth, ownership, number formatting, and the JSON string writer,
 * whose output must be valid JSON for any input bytes (checked against jansson).
 */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <jansson.h>
#include <limits.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "db/buf.h"

#define FFFD "\xEF\xBF\xBD"

/* Write in[0..n) as a JSON string and compare the whole output with expected. */
static void check_json(const char *in, size_t n, const char *expected)
{
    db_buf b = DB_BUF_INIT;

    db_buf_json_string(&b, in, n);
    assert_false(b.oom);
    assert_string_equal(b.data, expected);
    assert_int_equal(b.len, strlen(expected));
    db_buf_free(&b);
}

#define CHECK_JSON(lit, expected) check_json(lit, sizeof(lit) - 1, expected)

static void test_empty(void **state)
{
    db_buf b = DB_BUF_INIT;
    size_t len = 99;
    char *s;

    (void)state;
    assert_null(b.data);
    s = db_buf_steal(&b, &len);
    assert_non_null(s);
    assert_string_equal(s, "");
    assert_int_equal(len, 0);
    free(s);
    db_buf_free(&b); /* freeing an empty buffer is fine */
    db_buf_init(&b);
    assert_null(b.data);
    assert_int_equal(b.len, 0);
    assert_int_equal(b.cap, 0);
    assert_false(b.oom);
}

static void test_growth(void **state)
{
    db_buf b = DB_BUF_INIT;
    char chunk[97];
    size_t total = 0, prev_cap = 0;

    (void)state;
    for (size_t i = 0; i < sizeof chunk; i++)
        chunk[i] = (char)('a' + i % 26);
    /* Chunks of varying size up to 1 MB; every intermediate state is checked. */
    while (total < (1u << 20)) {
        size_t n = total % sizeof chunk + 1;

        db_buf_append(&b, chunk, n);
        total += n;
        assert_int_equal(b.len, total);
        assert_true(b.cap > b.len);
        assert_int_equal(b.data[b.len], '\0');
        if (b.cap != prev_cap) {
            /* Geometric from 256: every capacity is 256 times a power of two. */
            assert_int_equal(b.cap % 256, 0);
            assert_int_equal((b.cap / 256) & (b.cap / 256 - 1), 0);
            assert_true(prev_cap == 0 || b.cap == 2 * prev_cap);
            prev_cap = b.cap;
        }
    }
    assert_int_equal(strlen(b.data), total);
    for (size_t pos = 0; pos < total;) {
        size_t n = pos % sizeof chunk + 1;

        assert_memory_equal(b.data + pos, chunk, n);
        pos += n;
    }
    assert_false(b.oom);
    db_buf_free(&b);
}

static void test_first_alloc_is_256(void **state)
{
    db_buf b = DB_BUF_INIT;

    (void)state;
    db_buf_putc(&b, 'x');
    assert_int_equal(b.cap, 256);
    assert_string_equal(b.data, "x");
    db_buf_free(&b);
}

static void test_puts_putc_printf(void **state)
{
    db_buf b = DB_BUF_INIT;
    char big[1000];

    (void)state;
    db_buf_puts(&b, "ab");
    db_buf_putc(&b, 'c');
    db_buf_puts(&b, "");
    db_buf_append(&b, "zz", 0);
    db_buf_printf(&b, "[%d:%s]", 42, "x");
    assert_string_equal(b.data, "abc[42:x]");
    assert_int_equal(b.len, 9);

    /* A printf longer than the spare capacity takes the second pass. */
    memset(big, 'q', sizeof big - 1);
    big[sizeof big - 1] = '\0';
    db_buf_printf(&b, "<%s>", big);
    assert_int_equal(b.len, 9 + 2 + 999);
    assert_int_equal(strlen(b.data), b.len);
    assert_int_equal(b.data[9], '<');
    assert_int_equal(b.data[b.len - 1], '>');
    db_buf_printf(&b, "%s", "");
    assert_int_equal(b.len, 9 + 2 + 999);
    db_buf_free(&b);
}

static void test_reset(void **state)
{
    db_buf b = DB_BUF_INIT;
    char *data;
    size_t cap;

    (void)state;
    db_buf_reset(&b); /* on a never-used buffer */
    assert_null(b.data);
    db_buf_puts(&b, "hello world");
    data = b.data;
    cap = b.cap;
    db_buf_reset(&b);
    assert_int_equal(b.len, 0);
    assert_string_equal(b.data, "");
    assert_ptr_equal(b.data, data);
    assert_int_equal(b.cap, cap);
    db_buf_puts(&b, "again");
    assert_string_equal(b.data, "again");
    db_buf_free(&b);
}

static void test_steal(void **state)
{
    db_buf b = DB_BUF_INIT;
    size_t len = 0;
    char *s;

    (void)state;
    db_buf_puts(&b, "{\"a\":1}");
    s = db_buf_steal(&b, &len);
    assert_string_equal(s, "{\"a\":1}");
    assert_int_equal(len, 7);
    assert_null(b.data);
    assert_int_equal(b.len, 0);
    assert_int_equal(b.cap, 0);
    free(s);

    db_buf_puts(&b, "reused");
    s = db_buf_steal(&b, NULL);
    assert_string_equal(s, "reused");
    free(s);
}

/* An impossible size sets the sticky flag instead of crashing; later appends do nothing. */
static void test_oom_sticky(void **state)
{
    db_buf b = DB_BUF_INIT;
    size_t len = 5;

    (void)state;
    db_buf_puts(&b, "abc");
    db_buf_append(&b, "x", SIZE_MAX);
    assert_true(b.oom);
    assert_string_equal(b.data, "abc");
    db_buf_puts(&b, "def");
    db_buf_putc(&b, 'g');
    db_buf_printf(&b, "%d", 1);
    db_buf_long(&b, 12);
    db_buf_json_string(&b, "h", 1);
    assert_string_equal(b.data, "abc");
    assert_int_equal(b.len, 3);
    assert_null(db_buf_steal(&b, &len)); /* incomplete contents are not handed over */
    assert_int_equal(len, 0);
    assert_true(b.oom);
    db_buf_reset(&b);
    assert_false(b.oom);
    db_buf_puts(&b, "ok");
    assert_string_equal(b.data, "ok");
    db_buf_free(&b);
}

static void check_long(long long v, const char *expected)
{
    db_buf b = DB_BUF_INIT;

    db_buf_long(&b, v);
    assert_string_equal(b.data, expected);
    db_buf_free(&b);
}

static void test_long(void **state)
{
    char want[32];

    (void)state;
    check_long(0, "0");
    check_long(7, "7");
    check_long(-7, "-7");
    check_long(10, "10");
    check_long(99, "99");
    check_long(100, "100");
    check_long(-100, "-100");
    check_long(1000000, "1000000");
    check_long(LLONG_MAX, "9223372036854775807");
    check_long(LLONG_MIN, "-9223372036854775808");
    check_long(LLONG_MIN + 1, "-9223372036854775807");
    /* Every length and sign, against printf. */
    for (long long v = 1; v > 0 && v < LLONG_MAX / 3; v = v * 3 + 1) {
        snprintf(want, sizeof want, "%lld", v);
        check_long(v, want);
        snprintf(want, sizeof want, "%lld", -v);
        check_long(-v, want);
    }
}

static void test_double(void **state)
{
    db_buf b = DB_BUF_INIT;

    (void)state;
    db_buf_double(&b, 1.5, 3);
    db_buf_putc(&b, ',');
    db_buf_double(&b, 0.0, 3);
    db_buf_putc(&b, ',');
    db_buf_double(&b, 12.3456, 2);
    db_buf_putc(&b, ',');
    db_buf_double(&b, 2.6, 0);
    db_buf_putc(&b, ',');
    db_buf_double(&b, -0.25, 1);
    db_buf_putc(&b, ',');
    db_buf_double(&b, NAN, 3);
    db_buf_putc(&b, ',');
    db_buf_double(&b, INFINITY, 3);
    assert_string_equal(b.data, "1.500,0.000,12.35,3,-0.2,null,null");
    db_buf_free(&b);
}

static void test_json_plain(void **state)
{
    (void)state;
    CHECK_JSON("", "\"\"");
    CHECK_JSON("hello, world", "\"hello, world\"");
    CHECK_JSON("/ ~ \x7f", "\"/ ~ \x7f\""); /* '/' and DEL need no escape in JSON */
    CHECK_JSON("say \"hi\"", "\"say \\\"hi\\\"\"");
    CHECK_JSON("C:\\dir\\", "\"C:\\\\dir\\\\\"");
    CHECK_JSON("\"", "\"\\\"\"");
    CHECK_JSON("a\0b", "\"a\\u0000b\"");
}

static void test_json_control_chars(void **state)
{
    static const char *const named[32] = {
        ['\b'] = "\\b", ['\t'] = "\\t", ['\n'] = "\\n", ['\f'] = "\\f", ['\r'] = "\\r",
    };
    char in[3], want[16];

    (void)state;
    for (int c = 0; c < 0x20; c++) {
        in[0] = 'x';
        in[1] = (char)c;
        in[2] = 'y';
        if (named[c])
            snprintf(want, sizeof want, "\"x%sy\"", named[c]);
        else
            snprintf(want, sizeof want, "\"x\\u%04xy\"", c);
        check_json(in, 3, want);
    }
    CHECK_JSON("\x1f\x01", "\"\\u001f\\u0001\"");
    CHECK_JSON("line1\r\nline2\ttab", "\"line1\\r\\nline2\\ttab\"");
}

static void test_json_utf8_valid(void **state)
{
    (void)state;
    CHECK_JSON("caf\xC3\xA9", "\"caf\xC3\xA9\"");                    /* 2 bytes */
    CHECK_JSON("\xE2\x82\xAC 5", "\"\xE2\x82\xAC 5\"");              /* 3 bytes, euro */
    CHECK_JSON("\xF0\x9F\x98\x80!", "\"\xF0\x9F\x98\x80!\"");        /* 4 bytes, emoji */
    CHECK_JSON("\xC2\x80\xDF\xBF", "\"\xC2\x80\xDF\xBF\"");          /* U+0080, U+07FF */
    CHECK_JSON("\xE0\xA0\x80\xEF\xBF\xBF", "\"\xE0\xA0\x80\xEF\xBF\xBF\""); /* U+0800, U+FFFF */
    CHECK_JSON("\xED\x9F\xBF\xEE\x80\x80", "\"\xED\x9F\xBF\xEE\x80\x80\""); /* around surrogates */
    CHECK_JSON("\xF0\x90\x80\x80\xF4\x8F\xBF\xBF",
               "\"\xF0\x90\x80\x80\xF4\x8F\xBF\xBF\""); /* U+10000, U+10FFFF */
    CHECK_JSON("\xE2\x80\xA8", "\"\xE2\x80\xA8\""); /* U+2028 is valid JSON as is */
    CHECK_JSON("\"\xC3\xA9\"\n", "\"\\\"\xC3\xA9\\\"\\n\"");
}

/* Each maximal ill-formed subpart becomes one U+FFFD (Unicode 3.9, "U+FFFD substitution"). */
static void test_json_utf8_invalid(void **state)
{
    (void)state;
    CHECK_JSON("\x80", "\"" FFFD "\"");                          /* lone continuation byte */
    CHECK_JSON("a\xBF" "b", "\"a" FFFD "b\"");
    CHECK_JSON("\x80\x80", "\"" FFFD FFFD "\"");
    CHECK_JSON("\xC3", "\"" FFFD "\"");                          /* truncated at end */
    CHECK_JSON("a\xE2\x82", "\"a" FFFD "\"");
    CHECK_JSON("\xF0\x9F\x98", "\"" FFFD "\"");
    CHECK_JSON("\xE2\x82" "A", "\"" FFFD "A\"");                 /* truncated before ASCII */
    CHECK_JSON("\xC3\"", "\"" FFFD "\\\"\"");                    /* ... before an escape */
    CHECK_JSON("\xC0\x80", "\"" FFFD FFFD "\"");                 /* overlong NUL */
    CHECK_JSON("\xC1\xBF", "\"" FFFD FFFD "\"");
    CHECK_JSON("\xE0\x80\x80", "\"" FFFD FFFD FFFD "\"");        /* overlong 3-byte */
    CHECK_JSON("\xF0\x8F\xBF\xBF", "\"" FFFD FFFD FFFD FFFD "\""); /* overlong 4-byte */
    CHECK_JSON("\xED\xA0\x80", "\"" FFFD FFFD FFFD "\"");        /* surrogate U+D800 */
    CHECK_JSON("\xED\xBF\xBF", "\"" FFFD FFFD FFFD "\"");        /* surrogate U+DFFF */
    CHECK_JSON("\xF4\x90\x80\x80", "\"" FFFD FFFD FFFD FFFD "\""); /* U+110000 */
    CHECK_JSON("\xF5\xF6\xF7\xF8\xF9\xFA\xFB\xFC\xFD\xFE\xFF",
               "\"" FFFD FFFD FFFD FFFD FFFD FFFD FFFD FFFD FFFD FFFD FFFD "\"");
    CHECK_JSON("\xF5\x80\x80\x80", "\"" FFFD FFFD FFFD FFFD "\"");
    CHECK_JSON("x\xE2\x82\xACy\xFFz\xC3\xA9", "\"x\xE2\x82\xACy" FFFD "z\xC3\xA9\"");
}

static void test_json_string_or_null(void **state)
{
    db_buf b = DB_BUF_INIT;

    (void)state;
    db_buf_json_string_or_null(&b, NULL);
    db_buf_putc(&b, ',');
    db_buf_json_string_or_null(&b, "a\"b");
    assert_string_equal(b.data, "null,\"a\\\"b\"");
    db_buf_free(&b);
}

static void test_utf8_valid(void **state)
{
    static const struct {
        const char *s;
        bool ok;
    } cases[] = {
        {"", true},
        {"plain ascii \x01\x7f", true},
        {"\xC3\xA9\xE2\x82\xAC\xF0\x9F\x98\x80", true},
        {"\xF4\x8F\xBF\xBF", true},
        {"\xED\x9F\xBF", true},
        {"\x80", false},
        {"\xC3", false},
        {"\xE2\x82", false},
        {"\xC0\x80", false},
        {"\xE0\x80\x80", false},
        {"\xED\xA0\x80", false},
        {"\xF4\x90\x80\x80", false},
        {"\xF5\x80\x80\x80", false},
        {"\xFF", false},
        {"ok\xC3\xA9 then \xBF", false},
    };

    (void)state;
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++)
        assert_int_equal(db_utf8_valid(cases[i].s, strlen(cases[i].s)), cases[i].ok);
    assert_true(db_utf8_valid("a\0b", 3));
}

/*
 * Independent reference: decode by bit pattern, then reject overlong forms, surrogates and code
 * points past U+10FFFF by value (db/buf.c works from byte ranges instead).
 */
static bool ref_utf8_valid(const unsigned char *s, size_t n)
{
    static const unsigned long min_cp[5] = {0, 0, 0x80, 0x800, 0x10000};

    for (size_t i = 0; i < n;) {
        unsigned char c = s[i];
        size_t len = c < 0x80 ? 1 : (c & 0xE0) == 0xC0 ? 2 : (c & 0xF0) == 0xE0 ? 3
                   : (c & 0xF8) == 0xF0 ? 4 : 0;
        unsigned long cp;

        if (len == 0 || i + len > n)
            return false;
        cp = len == 1 ? c : (unsigned long)(c & (0x7F >> len));
        for (size_t k = 1; k < len; k++) {
            if ((s[i + k] & 0xC0) != 0x80)
                return false;
            cp = cp << 6 | (s[i + k] & 0x3F);
        }
        if (cp < min_cp[len] || (cp >= 0xD800 && cp <= 0xDFFF) || cp > 0x10FFFF)
            return false;
        i += len;
    }
    return true;
}

/* Random bytes biased towards the interesting ones: controls, quotes, leads and continuations. */
static size_t random_bytes(unsigned char *s, size_t max)
{
    static const unsigned char pool[] = {0x00, 0x08, 0x0A, 0x1F, '"', '\\', 'a', 0x7F,
                                         0x80, 0xBF, 0xC0, 0xC2, 0xDF, 0xE0, 0xED, 0xEF,
                                         0xF0, 0xF4, 0xF5, 0xFF, 0x9F, 0xA0, 0x8F, 0x90};
    size_t n = (size_t)rand() % (max + 1);

    for (size_t i = 0; i < n; i++)
        s[i] = rand() % 3 ? pool[(size_t)rand() % sizeof pool] : (unsigned char)rand();
    return n;
}

static void test_json_random_property(void **state)
{
    unsigned char in[64];
    size_t valid = 0;

    (void)state;
    srand(12345);
    for (int iter = 0; iter < 5000; iter++) {
        size_t n = random_bytes(in, sizeof in);
        db_buf b = DB_BUF_INIT;
        json_error_t err;
        json_t *j;
        bool ok = ref_utf8_valid(in, n);

        assert_int_equal(db_utf8_valid((const char *)in, n), ok);
        db_buf_json_string(&b, (const char *)in, n);
        assert_false(b.oom);
        assert_true(db_utf8_valid(b.data, b.len));
        j = json_loadb(b.data, b.len, JSON_DECODE_ANY | JSON_ALLOW_NUL, &err);
        if (!j)
            fail_msg("jansson rejected output of iteration %d: %s", iter, err.text);
        assert_true(json_is_string(j));
        if (ok) { /* valid input must come back byte for byte */
            assert_int_equal(json_string_length(j), n);
            assert_memory_equal(json_string_value(j), in, n);
            valid++;
        }
        json_decref(j);
        db_buf_free(&b);
    }
    assert_true(valid > 100); /* the generator does exercise both branches */
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_empty),
        cmocka_unit_test(test_growth),
        cmocka_unit_test(test_first_alloc_is_256),
        cmocka_unit_test(test_puts_putc_printf),
        cmocka_unit_test(test_reset),
        cmocka_unit_test(test_steal),
        cmocka_unit_test(test_oom_sticky),
        cmocka_unit_test(test_long),
        cmocka_unit_test(test_double),
        cmocka_unit_test(test_json_plain),
        cmocka_unit_test(test_json_control_chars),
        cmocka_unit_test(test_json_utf8_valid),
        cmocka_unit_test(test_json_utf8_invalid),
        cmocka_unit_test(test_json_string_or_null),
        cmocka_unit_test(test_utf8_valid),
        cmocka_unit_test(test_json_random_property),
    };

    return cmocka_run_group_tests(tests, NULL, NULL);
}
