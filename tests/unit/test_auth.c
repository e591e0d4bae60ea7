/*
 * Unit tests for http/auth: SHA-256 known answers, the token file (every malformed case with its
 * file:line), the Authorization header, the lookup accepting exactly the right secret, loopback
 * detection, and a timing check that the comparison never exits early.
 *
 * The timing check runs the real http_auth_match on tables built so that an early exit would
 * show: the match first vs last vs absent in a 64-token table, and a digest sharing 0 vs 31
 * leading bytes with every token. It compares medians of many timed runs, interleaved so that
 * drift hits every case alike, and keeps each case's best median over a few trials.
 */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "http/auth.h"

#define ABC_HEX "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
#define HUNTER2_HEX "f52fbd32b2b3b86ff88ef6c490628285f482af15ddcb29541f94bcf526a3f6c7"
#define RW_HEX "7cccaaf5240c442b59a267293ee668d4b368d84bb97c589912d24c777e536285" /* s3cr3t-rw */

static char err[512];

/* Parse text as a token file called "tokens"; NULL on error (err holds why). */
static http_auth_table *parse(const char *text)
{
    FILE *f = fmemopen((void *)text, strlen(text), "r");
    http_auth_table *t;

    assert_non_null(f);
    err[0] = '\0';
    t = http_auth_read(f, "tokens", err, sizeof err);
    fclose(f);
    return t;
}

static void hex(const unsigned char *d, char out[2 * HTTP_AUTH_DIGEST_LEN + 1])
{
    for (int i = 0; i < HTTP_AUTH_DIGEST_LEN; i++)
        sprintf(out + 2 * i, "%02x", d[i]);
}

static void test_sha256_vectors(void **state)
{
    static const struct {
        const char *in;
        const char *want;
    } v[] = {
        {"", "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"},
        {"abc", ABC_HEX},
        {"abcdbcdecdefdefgefghfghighijhijkijkljklmklmnlmnomnopnopq",
         "248d6a61d20638b8e5c026930c3e6039a33ce45964ff2167f6ecedd419db06c1"},
        {"hunter2", HUNTER2_HEX},
    };
    unsigned char d[HTTP_AUTH_DIGEST_LEN];
    char h[2 * HTTP_AUTH_DIGEST_LEN + 1];
    char *million = malloc(1000000);

    (void)state;
    for (size_t i = 0; i < sizeof v / sizeof v[0]; i++) {
        assert_true(http_auth_sha256(v[i].in, strlen(v[i].in), d));
        hex(d, h);
        assert_string_equal(h, v[i].want);
    }
    assert_non_null(million);
    memset(million, 'a', 1000000);
    assert_true(http_auth_sha256(million, 1000000, d));
    hex(d, h);
    assert_string_equal(h, "cdc76e5c9914fb9281a1c7e284d73e67f1809a48a497200e046d39ccc7112cd0");
    free(million);
}

static void test_parse_valid(void **state)
{
    const http_caller *c = NULL;
    http_auth_table *t = parse("# fanout tokens\n"
                               "\n"
                               "   \t  \n"
                               "reader " ABC_HEX " read_only\n"
                               "\twriter\t\t" RW_HEX "  read_write   app_rw   # the app\r\n"
                               "  # indented comment\n"
                               "ops@host:1 " HUNTER2_HEX " read_only"); /* no final newline */
    (void)state;
    assert_non_null(t);
    assert_int_equal(http_auth_count(t), 3);

    assert_int_equal(http_auth_check(t, "Bearer abc", &c), HTTP_AUTH_OK);
    assert_string_equal(c->name, "reader");
    assert_true(c->read_only);
    assert_null(c->role);

    assert_int_equal(http_auth_check(t, "Bearer s3cr3t-rw", &c), HTTP_AUTH_OK);
    assert_string_equal(c->name, "writer");
    assert_false(c->read_only);
    assert_string_equal(c->role, "app_rw");

    assert_int_equal(http_auth_check(t, "Bearer hunter2", &c), HTTP_AUTH_OK);
    assert_string_equal(c->name, "ops@host:1");
    assert_null(c->role);

    /* A # inside a field is part of it: this ROLE is not an identifier... */
    http_auth_free(t);
    t = parse("ops " HUNTER2_HEX " read_only report_ro#x\n");
    assert_null(t);
    assert_string_equal(err, "tokens:1: token \"ops\": ROLE must be a plain PostgreSQL "
                             "identifier ([A-Za-z_][A-Za-z0-9_$]*, at most 63 bytes)");
    /* ...while one after whitespace starts a comment. */
    t = parse("ops@host:1 " HUNTER2_HEX " read_only report_ro #x\n");
    assert_non_null(t);
    assert_int_equal(http_auth_check(t, "Bearer hunter2", &c), HTTP_AUTH_OK);
    assert_string_equal(c->name, "ops@host:1");
    assert_string_equal(c->role, "report_ro");
    http_auth_free(t);

    /* No tokens at all is a valid table that accepts nothing. */
    t = parse("# nobody yet\n\n");
    assert_non_null(t);
    assert_int_equal(http_auth_count(t), 0);
    assert_int_equal(http_auth_check(t, "Bearer abc", &c), HTTP_AUTH_WRONG);
    assert_null(c);
    http_auth_free(t);
    t = parse("");
    assert_non_null(t);
    assert_int_equal(http_auth_count(t), 0);
    http_auth_free(t);
    http_auth_free(NULL);
}

/* Every malformed line: the table is refused and the error names the file and the line. */
static void test_parse_invalid(void **state)
{
    static const struct {
        const char *text;
        const char *want;
    } cases[] = {
        {"alice " ABC_HEX "\n", "tokens:1: expected NAME SHA256HEX ACCESS [ROLE], found 2 fields"},
        {"alice\n", "tokens:1: expected NAME SHA256HEX ACCESS [ROLE], found 1 fields"},
        {"# c\n\nalice " ABC_HEX " read_only role extra\n",
         "tokens:3: expected NAME SHA256HEX ACCESS [ROLE], found 5 fields"},
        {"alice " ABC_HEX " read_only role extra more # c\n",
         "tokens:1: expected NAME SHA256HEX ACCESS [ROLE], found 6 fields"},
        {"alice ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015a read_only\n",
         "tokens:1: token \"alice\": SHA256HEX must be 64 lowercase hex digits (the SHA-256 of "
         "the secret)"},
        {"alice " ABC_HEX "0 read_only\n",
         "tokens:1: token \"alice\": SHA256HEX must be 64 lowercase hex digits (the SHA-256 of "
         "the secret)"},
        {"alice BA7816BF8F01CFEA414140DE5DAE2223B00361A396177A9CB410FF61F20015AD read_only\n",
         "tokens:1: token \"alice\": SHA256HEX must be 64 lowercase hex digits (the SHA-256 of "
         "the secret)"},
        {"alice ga7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad read_only\n",
         "tokens:1: token \"alice\": SHA256HEX must be 64 lowercase hex digits (the SHA-256 of "
         "the secret)"},
        {"alice " ABC_HEX " readonly\n",
         "tokens:1: token \"alice\": ACCESS must be read_only or read_write"},
        {"alice " ABC_HEX " READ_ONLY\n",
         "tokens:1: token \"alice\": ACCESS must be read_only or read_write"},
        {"alice " ABC_HEX " read_only 1role\n",
         "tokens:1: token \"alice\": ROLE must be a plain PostgreSQL identifier "
         "([A-Za-z_][A-Za-z0-9_$]*, at most 63 bytes)"},
        {"alice " ABC_HEX " read_only bad-role\n",
         "tokens:1: token \"alice\": ROLE must be a plain PostgreSQL identifier "
         "([A-Za-z_][A-Za-z0-9_$]*, at most 63 bytes)"},
        {"alice " ABC_HEX " read_only "
         "r234567890123456789012345678901234567890123456789012345678901234\n",
         "tokens:1: token \"alice\": ROLE must be a plain PostgreSQL identifier "
         "([A-Za-z_][A-Za-z0-9_$]*, at most 63 bytes)"},
        {"al!ce " ABC_HEX " read_only\n",
         "tokens:1: NAME must be 1..64 characters of A-Z a-z 0-9 _ - . @ :"},
        {"n2345678901234567890123456789012345678901234567890123456789012345 " ABC_HEX
         " read_only\n",
         "tokens:1: NAME must be 1..64 characters of A-Z a-z 0-9 _ - . @ :"},
        {"alice " ABC_HEX " read_only\n# c\nbob " RW_HEX " read_write\nalice " HUNTER2_HEX
         " read_only\n",
         "tokens:4: duplicate token name \"alice\" (first on line 1)"},
        {"alice " ABC_HEX " read_only\nbob " RW_HEX " read_write\n\ncarol " ABC_HEX
         " read_write role\n",
         "tokens:4: token \"carol\" has the same hash as token \"alice\" (line 1)"},
        {"alice " ABC_HEX " read_only\nbob " RW_HEX " read_write\r\nbad\n",
         "tokens:3: expected NAME SHA256HEX ACCESS [ROLE], found 1 fields"},
    };
    (void)state;
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        http_auth_table *t = parse(cases[i].text);
        if (t || strcmp(err, cases[i].want) != 0)
            fail_msg("case %zu: %s\n  got:  %s\n  want: %s", i, t ? "accepted" : "refused",
                     err, cases[i].want);
    }
}

/* A secret pasted into the hash column by mistake never reaches the error line. */
static void test_error_does_not_echo_secret(void **state)
{
    (void)state;
    assert_null(parse("alice my-very-secret-value read_only\n"));
    assert_null(strstr(err, "my-very-secret-value"));
    assert_string_equal(err, "tokens:1: token \"alice\": SHA256HEX must be 64 lowercase hex "
                             "digits (the SHA-256 of the secret)");
}

/* A NUL byte cannot hide the rest of a line. */
static void test_nul_byte(void **state)
{
    static const char text[] = "alice " ABC_HEX " read_only\0 junk\n";
    FILE *f = fmemopen((void *)text, sizeof text - 1, "r");
    (void)state;
    assert_non_null(f);
    assert_null(http_auth_read(f, "tokens", err, sizeof err));
    assert_string_equal(err, "tokens:1: the line holds a NUL byte");
    fclose(f);
}

/* From a real file: the path names it; a missing file and a directory are errors too. */
static void test_load_file(void **state)
{
    char path[] = "/tmp/fanout_auth_XXXXXX", want[128];
    const char text[] = "alice " ABC_HEX " read_only\nbob\n";
    const http_caller *c;
    int fd = mkstemp(path);
    http_auth_table *t;

    (void)state;
    assert_true(fd >= 0);
    assert_int_equal(write(fd, text, sizeof text - 1), sizeof text - 1);
    close(fd);
    assert_null(http_auth_load(path, err, sizeof err));
    snprintf(want, sizeof want, "%s:2: expected NAME SHA256HEX ACCESS [ROLE], found 1 fields",
             path);
    assert_string_equal(err, want);

    assert_int_equal(truncate(path, (off_t)strlen("alice " ABC_HEX " read_only\n")), 0);
    t = http_auth_load(path, err, sizeof err);
    assert_non_null(t);
    assert_int_equal(http_auth_check(t, "Bearer abc", &c), HTTP_AUTH_OK);
    http_auth_free(t);
    unlink(path);

    assert_null(http_auth_load("/nonexistent/tokens", err, sizeof err));
    assert_string_equal(err, "/nonexistent/tokens: cannot open: No such file or directory");
    assert_null(http_auth_load("/tmp", err, sizeof err));
    assert_string_equal(err, "/tmp: cannot read: Is a directory");
}

static void test_header_forms(void **state)
{
    static const struct {
        const char *header;
        http_auth_result want;
    } cases[] = {
        {NULL, HTTP_AUTH_MISSING},
        {"Bearer abc", HTTP_AUTH_OK},
        {"bearer abc", HTTP_AUTH_OK},
        {"BEARER abc", HTTP_AUTH_OK},
        {"Bearer   abc", HTTP_AUTH_OK},
        {"Bearer hunter2", HTTP_AUTH_OK},
        {"", HTTP_AUTH_MALFORMED},
        {"Bearer", HTTP_AUTH_MALFORMED},
        {"Bearer ", HTTP_AUTH_MALFORMED},
        {"Bearer    ", HTTP_AUTH_MALFORMED},
        {"Bearerabc", HTTP_AUTH_MALFORMED},
        {"Bearer\tabc", HTTP_AUTH_MALFORMED},
        {"Basic YWxpY2U6YWJj", HTTP_AUTH_MALFORMED},
        {"Token abc", HTTP_AUTH_MALFORMED},
        {" Bearer abc", HTTP_AUTH_MALFORMED},
        {"Bearer abc def", HTTP_AUTH_MALFORMED},
        {"Bearer abc ", HTTP_AUTH_MALFORMED},
        {"Bearer ab\x01", HTTP_AUTH_MALFORMED},
        {"Bearer ab\x7f", HTTP_AUTH_MALFORMED},
        {"Bearer \xc3\xa9t\xc3\xa9", HTTP_AUTH_MALFORMED},
        {"Bearer ab\tc", HTTP_AUTH_MALFORMED},
        {"Bearer abd", HTTP_AUTH_WRONG},
        {"Bearer abcd", HTTP_AUTH_WRONG},
        {"Bearer ab", HTTP_AUTH_WRONG},
        {"Bearer ABC", HTTP_AUTH_WRONG},
        {"Bearer " ABC_HEX, HTTP_AUTH_WRONG}, /* the hash itself is not the secret */
    };
    http_auth_table *t = parse("alice " ABC_HEX " read_only\nbob " HUNTER2_HEX " read_write\n");
    const http_caller *c = (const http_caller *)&c;
    char *longest = malloc(7 + HTTP_AUTH_SECRET_MAX + 2);

    (void)state;
    assert_non_null(t);
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        http_auth_result got = http_auth_check(t, cases[i].header, &c);
        if (got != cases[i].want || (got == HTTP_AUTH_OK) != (c != NULL))
            fail_msg("case %zu (\"%s\"): got %d, want %d", i,
                     cases[i].header ? cases[i].header : "(none)", got, cases[i].want);
    }
    /* Secrets up to HTTP_AUTH_SECRET_MAX bytes are checked; longer ones are malformed. */
    assert_non_null(longest);
    memcpy(longest, "Bearer ", 7);
    memset(longest + 7, 'x', HTTP_AUTH_SECRET_MAX);
    longest[7 + HTTP_AUTH_SECRET_MAX] = '\0';
    assert_int_equal(http_auth_check(t, longest, &c), HTTP_AUTH_WRONG);
    strcat(longest, "x");
    assert_int_equal(http_auth_check(t, longest, &c), HTTP_AUTH_MALFORMED);
    free(longest);
    /* No table (auth_file set but nothing loaded) refuses everything. */
    assert_int_equal(http_auth_check(NULL, "Bearer abc", &c), HTTP_AUTH_WRONG);
    http_auth_free(t);
}

/* The lookup accepts exactly the right secret: any one-byte change, a prefix or an extension of
 * it, or any single flipped bit of its digest, is refused. */
static void test_exact_match_only(void **state)
{
    static const char secret[] = "s3cr3t-rw";
    http_auth_table *t = parse("alice " ABC_HEX " read_only\nwriter " RW_HEX " read_write\n");
    unsigned char d[HTTP_AUTH_DIGEST_LEN];
    const http_caller *c;
    char header[64];

    (void)state;
    assert_non_null(t);
    snprintf(header, sizeof header, "Bearer %s", secret);
    assert_int_equal(http_auth_check(t, header, &c), HTTP_AUTH_OK);
    assert_string_equal(c->name, "writer");
    for (size_t i = 7; header[i]; i++) {
        char was = header[i];
        for (int ch = '!'; ch <= '~'; ch++) {
            if (ch == was)
                continue;
            header[i] = (char)ch;
            assert_int_equal(http_auth_check(t, header, &c), HTTP_AUTH_WRONG);
        }
        header[i] = was;
    }
    for (size_t n = 8; n < strlen(header); n++) {
        char cut[64];
        snprintf(cut, sizeof cut, "%.*s", (int)n, header);
        assert_int_equal(http_auth_check(t, cut, &c), HTTP_AUTH_WRONG);
    }
    strcat(header, "x");
    assert_int_equal(http_auth_check(t, header, &c), HTTP_AUTH_WRONG);

    assert_true(http_auth_sha256(secret, strlen(secret), d));
    assert_non_null(http_auth_match(t, d));
    for (int bit = 0; bit < 8 * HTTP_AUTH_DIGEST_LEN; bit++) {
        d[bit / 8] ^= (unsigned char)(1u << (bit % 8));
        assert_null(http_auth_match(t, d));
        d[bit / 8] ^= (unsigned char)(1u << (bit % 8));
    }
    c = http_auth_match(t, d);
    assert_non_null(c);
    assert_string_equal(c->name, "writer");
    http_auth_free(t);
}

static void test_loopback(void **state)
{
    static const char *const yes[] = {"127.0.0.1", "127.255.0.3", "::1", "localhost", "LocalHost",
                                      "0:0:0:0:0:0:0:1", "::ffff:127.0.0.1"};
    static const char *const no[] = {"0.0.0.0", "", "::", "10.0.0.1", "128.0.0.1", "192.168.1.2",
                                     "::2", "fe80::1", "::ffff:10.0.0.1", "example.com",
                                     "localhost.example.com", "127.0.0.1.nip.io", "1.127.0.0"};
    (void)state;
    for (size_t i = 0; i < sizeof yes / sizeof yes[0]; i++)
        if (!http_auth_host_is_loopback(yes[i]))
            fail_msg("%s should count as loopback", yes[i]);
    for (size_t i = 0; i < sizeof no / sizeof no[0]; i++)
        if (http_auth_host_is_loopback(no[i]))
            fail_msg("\"%s\" should not count as loopback", no[i]);
    assert_false(http_auth_host_is_loopback(NULL));
}

/* ---- timing ---- */

#define TIMING_TOKENS 64 /* tokens in each timing table */
#define TIMING_CALLS 200 /* lookups per timed sample */
#define TIMING_REPS 61   /* samples per case and trial (the median is taken) */
#define TIMING_TRIALS 7  /* trials at most; each case keeps its best median */
#define TIMING_RATIO 1.5 /* slowest over fastest median allowed */

enum { C_FIRST, C_LAST, C_ABSENT, C_LEAD0, C_LEAD31, NCASES };
static const char *const case_names[NCASES] = {"match first", "match last", "no match",
                                               "0 leading bytes", "31 leading bytes"};

/* A table of n tokens whose digests are digests[0..n-1] (written as a token file). */
static http_auth_table *table_of(unsigned char digests[][HTTP_AUTH_DIGEST_LEN], int n)
{
    char *text = NULL, h[2 * HTTP_AUTH_DIGEST_LEN + 1];
    size_t len = 0;
    FILE *f = open_memstream(&text, &len);
    http_auth_table *t;

    assert_non_null(f);
    for (int i = 0; i < n; i++) {
        hex(digests[i], h);
        fprintf(f, "t%d %s read_only\n", i, h);
    }
    fclose(f);
    t = parse(text);
    free(text);
    assert_non_null(t);
    return t;
}

static double now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec * 1e9 + (double)ts.tv_nsec;
}

static int cmp_double(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

static double ratio_of(const double *best, int from, int to)
{
    double lo = best[from], hi = best[from];
    for (int c = from; c < to; c++) {
        lo = best[c] < lo ? best[c] : lo;
        hi = best[c] > hi ? best[c] : hi;
    }
    return hi / lo;
}

static void test_compare_time_does_not_depend_on_match(void **state)
{
    static unsigned char spread[TIMING_TOKENS][HTTP_AUTH_DIGEST_LEN];
    static unsigned char prefixed[TIMING_TOKENS][HTTP_AUTH_DIGEST_LEN];
    static double samples[NCASES][TIMING_REPS];
    unsigned char probe[NCASES][HTTP_AUTH_DIGEST_LEN];
    const http_auth_table *table[NCASES];
    double best[NCASES], r1 = 0, r2 = 0;
    uintptr_t sink = 0;
    uint32_t x = 2463534242u; /* xorshift32: a fixed, reproducible spread of digests */

    (void)state;
    for (int i = 0; i < TIMING_TOKENS; i++)
        for (int j = 0; j < HTTP_AUTH_DIGEST_LEN; j++) {
            x ^= x << 13;
            x ^= x >> 17;
            x ^= x << 5;
            spread[i][j] = (unsigned char)x;
        }
    /* prefixed: every token shares the first 31 bytes with the others and differs in the last. */
    for (int i = 0; i < TIMING_TOKENS; i++) {
        memcpy(prefixed[i], spread[0], HTTP_AUTH_DIGEST_LEN - 1);
        prefixed[i][HTTP_AUTH_DIGEST_LEN - 1] = (unsigned char)i;
    }
    http_auth_table *ts = table_of(spread, TIMING_TOKENS);
    http_auth_table *tp = table_of(prefixed, TIMING_TOKENS);

    memcpy(probe[C_FIRST], spread[0], HTTP_AUTH_DIGEST_LEN);
    memcpy(probe[C_LAST], spread[TIMING_TOKENS - 1], HTTP_AUTH_DIGEST_LEN);
    memcpy(probe[C_ABSENT], spread[1], HTTP_AUTH_DIGEST_LEN);
    probe[C_ABSENT][HTTP_AUTH_DIGEST_LEN - 1] ^= 0x55; /* in no token */
    memcpy(probe[C_LEAD31], prefixed[0], HTTP_AUTH_DIGEST_LEN);
    probe[C_LEAD31][HTTP_AUTH_DIGEST_LEN - 1] = 0xEE; /* 31 bytes agree with every token */
    memcpy(probe[C_LEAD0], prefixed[0], HTTP_AUTH_DIGEST_LEN);
    probe[C_LEAD0][0] ^= 0xFF;                     /* the first byte differs from every token */
    table[C_FIRST] = table[C_LAST] = table[C_ABSENT] = ts;
    table[C_LEAD0] = table[C_LEAD31] = tp;

    assert_string_equal(http_auth_match(ts, probe[C_FIRST])->name, "t0");
    assert_string_equal(http_auth_match(ts, probe[C_LAST])->name, "t63");
    assert_null(http_auth_match(ts, probe[C_ABSENT]));
    assert_null(http_auth_match(tp, probe[C_LEAD0]));
    assert_null(http_auth_match(tp, probe[C_LEAD31]));

    for (int c = 0; c < NCASES; c++)
        best[c] = 1e300;
    for (int trial = 0; trial < TIMING_TRIALS; trial++) {
        for (int rep = 0; rep < TIMING_REPS; rep++)
            for (int k = 0; k < NCASES; k++) {
                int c = (k + rep) % NCASES; /* rotate the order: no case always runs first */
                double t0 = now_ns();
                for (int n = 0; n < TIMING_CALLS; n++)
                    sink += (uintptr_t)http_auth_match(table[c], probe[c]);
                samples[c][rep] = now_ns() - t0;
            }
        for (int c = 0; c < NCASES; c++) {
            qsort(samples[c], TIMING_REPS, sizeof(double), cmp_double);
            double median = samples[c][TIMING_REPS / 2] / TIMING_CALLS;
            best[c] = median < best[c] ? median : best[c];
        }
        r1 = ratio_of(best, C_FIRST, C_ABSENT + 1);
        r2 = ratio_of(best, C_LEAD0, C_LEAD31 + 1);
        if (r1 < TIMING_RATIO && r2 < TIMING_RATIO && trial >= 2)
            break;
    }
    for (int c = 0; c < NCASES; c++)
        print_message("timing: %-17s %8.1f ns per lookup of %d tokens\n", case_names[c], best[c],
                      TIMING_TOKENS);
    print_message("timing: ratio %.3f (first/last/none), %.3f (0/31 leading bytes)\n", r1, r2);
    assert_true(sink != 1); /* keep the calls */
    http_auth_free(ts);
    http_auth_free(tp);
    if (r1 >= TIMING_RATIO || r2 >= TIMING_RATIO)
        fail_msg("lookup time depends on the match: ratios %.3f and %.3f, limit %.2f", r1, r2,
                 TIMING_RATIO);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_sha256_vectors),
        cmocka_unit_test(test_parse_valid),
        cmocka_unit_test(test_parse_invalid),
        cmocka_unit_test(test_error_does_not_echo_secret),
        cmocka_unit_test(test_nul_byte),
        cmocka_unit_test(test_load_file),
        cmocka_unit_test(test_header_forms),
        cmocka_unit_test(test_exact_match_only),
        cmocka_unit_test(test_loopback),
        cmocka_unit_test(test_compare_time_does_not_depend_on_match),
    };
    return cmocka_run_group_tests_name("auth", tests, NULL, NULL);
}
