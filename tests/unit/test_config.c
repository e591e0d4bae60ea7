/*
 * Unit tests for config/: defaults, each source alone, precedence, every error path, the file
 * format, --help/--version, the README table, and that config/fanout.conf names every setting
 * with its default. Run from the repository root (the sync test opens config/fanout.conf).
 */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <ctype.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "config/config.h"

#ifndef FANOUT_VERSION
#define FANOUT_VERSION "dev"
#endif

#define ARGS(...) ((char *[]){"fanout", __VA_ARGS__, NULL})
#define NOARGS ((char *[]){"fanout", NULL})
#define ENV(...) ((char *[]){__VA_ARGS__, NULL})
#define NOENV ((char *[]){NULL})
#define MAX_TMP 4

static char err[512];             /* the last cfg_load's error line */
static FILE *sink;                /* /dev/null, for output a test does not look at */
static char tmp_paths[MAX_TMP][32]; /* temp config files, unlinked after each test */
static int ntmp;                  /* entries of tmp_paths in use */

static int count(char **v)
{
    int n = 0;

    while (v[n])
        n++;
    return n;
}

static cfg_status load(cfg_settings *s, char **argv, char **envp)
{
    return cfg_load(s, count(argv), argv, envp, sink, err, sizeof err);
}

/* Run cfg_load with output captured; returns the malloc'd output. */
static char *capture(char **argv, char **envp, cfg_status *st)
{
    char *buf = NULL;
    size_t len = 0;
    FILE *f = open_memstream(&buf, &len);
    cfg_settings s;

    assert_non_null(f);
    *st = cfg_load(&s, count(argv), argv, envp, f, err, sizeof err);
    fclose(f);
    if (*st == CFG_OK)
        cfg_free(&s);
    return buf;
}

/* Write n bytes of text to a new temp file and return its path (unlinked by the teardown). */
static char *write_conf_n(const char *text, size_t n)
{
    char *path;
    int fd;

    assert_true(ntmp < MAX_TMP);
    path = tmp_paths[ntmp];
    strcpy(path, "/tmp/fanout_test_XXXXXX");
    fd = mkstemp(path);
    assert_true(fd >= 0);
    ntmp++;
    assert_int_equal(write(fd, text, n), n);
    close(fd);
    return path;
}

static char *write_conf(const char *text)
{
    return write_conf_n(text, strlen(text));
}

static int unlink_tmp(void **state)
{
    (void)state;
    while (ntmp > 0)
        unlink(tmp_paths[--ntmp]);
    return 0;
}

static void assert_contains(const char *hay, const char *needle)
{
    if (!hay || !strstr(hay, needle))
        fail_msg("\"%s\" does not contain \"%s\"", hay ? hay : "(null)", needle);
}

static void assert_zeroed(const cfg_settings *s)
{
    static const cfg_settings zero;

    assert_memory_equal(s, &zero, sizeof zero);
}

static void assert_defaults(const cfg_settings *s)
{
    assert_string_equal(s->listen, "127.0.0.1:8080");
    assert_string_equal(s->listen_host, "127.0.0.1");
    assert_int_equal(s->listen_port, 8080);
    assert_null(s->database);
    assert_int_equal(s->workers, 8);
    assert_int_equal(s->queue_size, 1024);
    assert_int_equal(s->max_body_bytes, 1048576);
    assert_int_equal(s->max_queries, 1000);
    assert_int_equal(s->max_params, 1000);
    assert_int_equal(s->max_rows, 100000);
    assert_int_equal(s->statement_timeout_ms, 30000);
    assert_int_equal(s->log_level, CFG_LOG_INFO);
    assert_string_equal(s->timezone, "UTC");
}

/* The non-default values every "alone" test sets, one source at a time. */
static void assert_custom(const cfg_settings *s)
{
    assert_string_equal(s->listen, "[::1]:9000");
    assert_string_equal(s->listen_host, "::1");
    assert_int_equal(s->listen_port, 9000);
    assert_string_equal(s->database, "postgresql://u@h/db");
    assert_int_equal(s->workers, 3);
    assert_int_equal(s->queue_size, 10);
    assert_int_equal(s->max_body_bytes, 2048);
    assert_int_equal(s->max_queries, 5);
    assert_int_equal(s->max_params, 0);
    assert_int_equal(s->max_rows, 7);
    assert_int_equal(s->statement_timeout_ms, 0);
    assert_int_equal(s->log_level, CFG_LOG_DEBUG);
    assert_string_equal(s->timezone, "Europe/Paris");
}

static void test_defaults(void **state)
{
    cfg_settings s;

    (void)state;
    strcpy(err, "stale");
    assert_int_equal(load(&s, NOARGS, NOENV), CFG_OK);
    assert_string_equal(err, "");
    assert_defaults(&s);
    cfg_free(&s);

    /* No argv at all and no environment array. */
    assert_int_equal(cfg_load(&s, 0, NULL, NULL, sink, err, sizeof err), CFG_OK);
    assert_defaults(&s);
    cfg_free(&s);
}

static void test_file_alone(void **state)
{
    cfg_settings s;
    char *path = write_conf("listen = [::1]:9000\n"
                            "database = postgresql://u@h/db\n"
                            "workers = 3\n"
                            "queue_size = 10\n"
                            "max_body_bytes = 2048\n"
                            "max_queries = 5\n"
                            "max_params = 0\n"
                            "max_rows = 7\n"
                            "statement_timeout_ms = 0\n"
                            "log_level = debug\n"
                            "timezone = Europe/Paris\n");

    (void)state;
    assert_int_equal(load(&s, ARGS("--config", path), NOENV), CFG_OK);
    assert_custom(&s);
    cfg_free(&s);
}

static void test_env_alone(void **state)
{
    cfg_settings s;

    (void)state;
    assert_int_equal(load(&s, NOARGS,
                          ENV("PATH=/bin", "NOEQUALS", "FANOUT_LISTEN=[::1]:9000",
                              "FANOUT_DATABASE=postgresql://u@h/db", "FANOUT_WORKERS=3",
                              "FANOUT_QUEUE_SIZE=10", "FANOUT_MAX_BODY_BYTES=2048",
                              "FANOUT_MAX_QUERIES=5", "FANOUT_MAX_PARAMS=0", "FANOUT_MAX_ROWS=7",
                              "FANOUT_STATEMENT_TIMEOUT_MS=0", "FANOUT_LOG_LEVEL=debug",
                              "FANOUT_TIMEZONE=Europe/Paris", "FANOUT_NO_SUCH_SETTING=x",
                              "fanout_workers=99", "FANOUT_WORKERSX=99")),
                     CFG_OK);
    assert_custom(&s);
    cfg_free(&s);
}

static void test_env_empty_is_unset(void **state)
{
    cfg_settings s;

    (void)state;
    assert_int_equal(load(&s, NOARGS,
                          ENV("FANOUT_WORKERS=", "FANOUT_CONFIG=", "FANOUT_TIMEZONE=",
                              "FANOUT_DATABASE=")),
                     CFG_OK);
    assert_defaults(&s);
    cfg_free(&s);
}

static void test_flags_alone(void **state)
{
    cfg_settings s;

    (void)state;
    assert_int_equal(load(&s,
                          ARGS("--listen", "[::1]:9000", "--database=postgresql://u@h/db",
                               "--workers", "3", "--queue-size=10", "--max-body-bytes", "2048",
                               "--max-queries", "5", "--max-params=0", "--max-rows", "7",
                               "--statement-timeout-ms", "0", "--log-level=debug", "--timezone",
                               "Europe/Paris"),
                          NOENV),
                     CFG_OK);
    assert_custom(&s);
    cfg_free(&s);

    /* A repeated flag: the last one wins; a unique prefix names the flag (getopt_long). */
    assert_int_equal(load(&s, ARGS("--workers", "2", "--workers=6", "--queue", "1077"), NOENV),
                     CFG_OK);
    assert_int_equal(s.workers, 6);
    assert_int_equal(s.queue_size, 1077);
    cfg_free(&s);
}

/* A batch is queued whole, so the queue must hold the largest batch allowed. */
static void test_queue_holds_largest_batch(void **state)
{
    cfg_settings s;

    (void)state;
    assert_int_equal(load(&s, ARGS("--queue-size", "10"), NOENV), CFG_ERROR);
    assert_non_null(strstr(err, "queue_size (10) must be at least max_queries (1000)"));
    assert_int_equal(load(&s, ARGS("--queue-size", "10", "--max-queries", "10"), NOENV), CFG_OK);
    assert_int_equal(s.queue_size, 10);
    cfg_free(&s);
}

static void test_precedence(void **state)
{
    cfg_settings s;
    char *path = write_conf("workers = 2\nqueue_size = 1011\nmax_rows = 13\n");

    (void)state;
    /* The same setting from all three sources: the flag wins, then env, then file. */
    assert_int_equal(load(&s, ARGS("--config", path, "--workers", "4"),
                          ENV("FANOUT_WORKERS=3", "FANOUT_QUEUE_SIZE=1012")),
                     CFG_OK);
    assert_int_equal(s.workers, 4);
    assert_int_equal(s.queue_size, 1012); /* env beats file */
    assert_int_equal(s.max_rows, 13);   /* file beats default */
    assert_int_equal(s.max_queries, 1000);
    cfg_free(&s);

    assert_int_equal(load(&s, ARGS("--config", path), ENV("FANOUT_WORKERS=3")), CFG_OK);
    assert_int_equal(s.workers, 3);
    cfg_free(&s);

    assert_int_equal(load(&s, ARGS("--config", path), NOENV), CFG_OK);
    assert_int_equal(s.workers, 2);
    cfg_free(&s);

    /* Flag order does not matter: --config after the setting flag still loses to it. */
    assert_int_equal(load(&s, ARGS("--workers", "5", "--config", path), NOENV), CFG_OK);
    assert_int_equal(s.workers, 5);
    cfg_free(&s);

    /* The listen split follows the winning value. */
    assert_int_equal(load(&s, ARGS("--listen", "[::]:0"), ENV("FANOUT_LISTEN=10.0.0.1:1")),
                     CFG_OK);
    assert_string_equal(s.listen_host, "::");
    assert_int_equal(s.listen_port, 0);
    cfg_free(&s);
}

static void test_config_flag_vs_env(void **state)
{
    cfg_settings s;
    char *a = write_conf("workers = 2\n");
    char *b = write_conf("workers = 5\n");
    char enva[64];

    (void)state;
    snprintf(enva, sizeof enva, "FANOUT_CONFIG=%s", a);
    assert_int_equal(load(&s, NOARGS, ENV(enva)), CFG_OK);
    assert_int_equal(s.workers, 2);
    cfg_free(&s);

    assert_int_equal(load(&s, ARGS("--config", b), ENV(enva)), CFG_OK);
    assert_int_equal(s.workers, 5);
    cfg_free(&s);

    /* The flag wins so completely that the env's file is not even opened. */
    assert_int_equal(load(&s, ARGS("--config=/nonexistent/fanout.conf", "--config", b),
                          ENV("FANOUT_CONFIG=/nonexistent/env.conf")),
                     CFG_OK);
    assert_int_equal(s.workers, 5);
    cfg_free(&s);

    assert_int_equal(load(&s, NOARGS, ENV("FANOUT_CONFIG=/nonexistent/env.conf")), CFG_ERROR);
    assert_string_equal(err, "/nonexistent/env.conf: cannot open: No such file or directory");
    assert_zeroed(&s);
}

static void test_database_alias(void **state)
{
    cfg_settings s;

    (void)state;
    assert_int_equal(load(&s, NOARGS, ENV("DATABASE_URL=postgres://alias")), CFG_OK);
    assert_string_equal(s.database, "postgres://alias");
    cfg_free(&s);

    /* FANOUT_DATABASE wins whichever comes first in the environment. */
    assert_int_equal(load(&s, NOARGS,
                          ENV("DATABASE_URL=postgres://alias", "FANOUT_DATABASE=dbname=own")),
                     CFG_OK);
    assert_string_equal(s.database, "dbname=own");
    cfg_free(&s);
    assert_int_equal(load(&s, NOARGS,
                          ENV("FANOUT_DATABASE=dbname=own", "DATABASE_URL=postgres://alias")),
                     CFG_OK);
    assert_string_equal(s.database, "dbname=own");
    cfg_free(&s);

    /* An empty FANOUT_DATABASE is unset, so the alias shows through. */
    assert_int_equal(load(&s, NOARGS,
                          ENV("FANOUT_DATABASE=", "DATABASE_URL=postgres://alias")),
                     CFG_OK);
    assert_string_equal(s.database, "postgres://alias");
    cfg_free(&s);

    assert_int_equal(load(&s, ARGS("--database", "dbname=flag"),
                          ENV("FANOUT_DATABASE=dbname=own", "DATABASE_URL=postgres://alias")),
                     CFG_OK);
    assert_string_equal(s.database, "dbname=flag");
    cfg_free(&s);
}

static void test_file_errors(void **state)
{
    static const struct {
        const char *text; /* file contents */
        int line;         /* line the error names */
        const char *msg;  /* what follows "PATH:LINE: " */
    } cases[] = {
        {"workers = 2\nworkers = abc\n", 2, "workers: \"abc\" is not an integer"},
        {"\n# c\nworkers = 0\n", 3, "workers: \"0\" is out of range: must be 1..1024"},
        {"workers = 1025\n", 1, "workers: \"1025\" is out of range: must be 1..1024"},
        {"workers = 8k\n", 1, "workers: \"8k\" is not an integer"},
        {"workers = 0x10\n", 1, "workers: \"0x10\" is not an integer"},
        {"workers =\n", 1, "workers: \"\" is not an integer"},
        {"max_body_bytes = 1023\n", 1,
         "max_body_bytes: \"1023\" is out of range: must be 1024..1073741824"},
        {"max_rows = 99999999999999999999999\n", 1,
         "max_rows: \"99999999999999999999999\" is out of range: must be 1..100000000"},
        {"statement_timeout_ms = -1\n", 1,
         "statement_timeout_ms: \"-1\" is out of range: must be 0..86400000"},
        {"[fanout]\nbogus = 1\n", 2, "unknown setting \"bogus\""},
        {"Workers = 1\n", 1, "unknown setting \"Workers\""},
        {"workers 8\n", 1, "expected \"key = value\""},
        {"workers\n", 1, "expected \"key = value\""},
        {"= 8\n", 1, "expected \"key = value\""},
        {"[pgbouncer]\n", 1, "unknown section [pgbouncer]: only [fanout] is allowed"},
        {"[fanout\n", 1, "malformed section header"},
        {"[fanout] x\n", 1, "malformed section header"},
        {"timezone = \"UTC\n", 1, "timezone: unterminated quote or text after it"},
        {"timezone = 'UTC' junk\n", 1, "timezone: unterminated quote or text after it"},
        {"timezone = \"\"\n", 1, "timezone: must not be empty"},
        {"database = ''\n", 1, "database: must not be empty"},
        {"listen = nohost\n", 1, "listen: \"nohost\" is not a listen address: expected HOST:PORT"},
        {"log_level = loud\n", 1,
         "log_level: \"loud\" is not one of: error, warn, info, debug"},
    };
    char want[512];
    cfg_settings s;
    size_t i;

    (void)state;
    for (i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        char *path = write_conf(cases[i].text);

        assert_int_equal(load(&s, ARGS("--config", path), NOENV), CFG_ERROR);
        snprintf(want, sizeof want, "%s:%d: %s", path, cases[i].line, cases[i].msg);
        assert_string_equal(err, want);
        assert_zeroed(&s);
        unlink_tmp(NULL);
    }
}

/* A NUL ends the line for the parser: refused, or what follows it would be dropped unseen. */
static void test_file_nul_byte(void **state)
{
    static const struct {
        const char *text; /* file contents, with a NUL */
        size_t len;       /* their length */
        int line;         /* line the error names */
    } cases[] = {
#define NUL_CASE(text, line) {text, sizeof text - 1, line}
        NUL_CASE("workers = 8\0junk\n", 1),
        NUL_CASE("workers = 2\n\0\nworkers = 3\n", 2),
        NUL_CASE("# a comment\0workers = 3\n", 1),
        NUL_CASE("workers = 2\nmax_rows = 7\0", 2),
#undef NUL_CASE
    };
    char want[512];
    cfg_settings s;
    size_t i;

    (void)state;
    for (i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        char *path = write_conf_n(cases[i].text, cases[i].len);

        assert_int_equal(load(&s, ARGS("--config", path), NOENV), CFG_ERROR);
        snprintf(want, sizeof want, "%s:%d: the line holds a NUL byte", path, cases[i].line);
        assert_string_equal(err, want);
        assert_zeroed(&s);
        unlink_tmp(NULL);
    }
}

static void test_unreadable_file(void **state)
{
    cfg_settings s;

    (void)state;
    assert_int_equal(load(&s, ARGS("--config", "/nonexistent/fanout.conf"), NOENV), CFG_ERROR);
    assert_string_equal(err, "/nonexistent/fanout.conf: cannot open: No such file or directory");
    assert_zeroed(&s);

    assert_int_equal(load(&s, ARGS("--config", "/tmp"), NOENV), CFG_ERROR);
    assert_string_equal(err, "/tmp: cannot read: Is a directory");
    assert_zeroed(&s);
}

static void test_env_errors(void **state)
{
    static const struct {
        const char *var; /* the environment entry */
        const char *msg; /* the whole error line */
    } cases[] = {
        {"FANOUT_WORKERS=abc", "environment FANOUT_WORKERS: \"abc\" is not an integer"},
        {"FANOUT_MAX_ROWS=0",
         "environment FANOUT_MAX_ROWS: \"0\" is out of range: must be 1..100000000"},
        {"FANOUT_MAX_PARAMS=65536",
         "environment FANOUT_MAX_PARAMS: \"65536\" is out of range: must be 0..65535"},
        {"FANOUT_LISTEN=[::1",
         "environment FANOUT_LISTEN: \"[::1\" is not a listen address: "
         "missing ] after the IPv6 address"},
        {"FANOUT_LOG_LEVEL=verbose",
         "environment FANOUT_LOG_LEVEL: \"verbose\" is not one of: error, warn, info, debug"},
    };
    cfg_settings s;
    size_t i;

    (void)state;
    for (i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        assert_int_equal(load(&s, NOARGS, ENV((char *)cases[i].var)), CFG_ERROR);
        assert_string_equal(err, cases[i].msg);
        assert_zeroed(&s);
    }
}

static void test_flag_errors(void **state)
{
    static const struct {
        char *args[4];   /* after argv[0], NULL-terminated */
        const char *msg; /* the whole error line */
    } cases[] = {
        {{"--workers", "abc"}, "--workers: \"abc\" is not an integer"},
        {{"--work", "abc"}, "--workers: \"abc\" is not an integer"},
        {{"--queue-size=0"}, "--queue-size: \"0\" is out of range: must be 1..1000000"},
        {{"--queue-size", "1000001"},
         "--queue-size: \"1000001\" is out of range: must be 1..1000000"},
        {{"--max-params", "-1"}, "--max-params: \"-1\" is out of range: must be 0..65535"},
        {{"--max-queries", " 5"}, "--max-queries: \" 5\" is not an integer"},
        {{"--listen", "1.2.3.4:99999"},
         "--listen: \"1.2.3.4:99999\" is not a listen address: "
         "the port must be an integer 0..65535"},
        {{"--log-level", "loud"},
         "--log-level: \"loud\" is not one of: error, warn, info, debug"},
        {{"--timezone", ""}, "--timezone: must not be empty"},
        {{"--bogus"}, "unknown or ambiguous option \"--bogus\" (see --help)"},
        {{"--max", "3"}, "unknown or ambiguous option \"--max\" (see --help)"},
        {{"--max=3"}, "unknown or ambiguous option \"--max\" (see --help)"},
        {{"--databse=postgresql://app:hunter2@db/app"},
         "unknown or ambiguous option \"--databse\" (see --help)"},
        {{"-x"}, "unknown option -x (see --help)"},
        {{"--workers"}, "--workers: missing value"},
        {{"--config"}, "--config: missing value"},
        {{"--help=yes"}, "--help=yes: takes no value"},
        {{"--version=1"}, "--version=1: takes no value"},
        {{"--check-config=1"}, "--check-config=1: takes no value"},
        {{"--healthcheck=yes"}, "--healthcheck=yes: takes no value"},
        {{"--check=1"}, "--check=1: takes no value"},
        {{"extra"}, "unexpected argument \"extra\" (settings are --name VALUE)"},
        {{"--workers", "2", "extra"},
         "unexpected argument \"extra\" (settings are --name VALUE)"},
        {{"--", "extra"}, "unexpected argument \"extra\" (settings are --name VALUE)"},
        {{"postgresql://app:hunter2@db/app"},
         "unexpected argument (not shown: it may hold a password; settings are --name VALUE, a "
         "connection string --database URL)"},
        {{"password=hunter2"},
         "unexpected argument (not shown: it may hold a password; settings are --name VALUE, a "
         "connection string --database URL)"},
    };
    char *argv[6];
    cfg_settings s;
    size_t i, j;

    (void)state;
    for (i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        argv[0] = "fanout";
        for (j = 0; cases[i].args[j]; j++)
            argv[j + 1] = cases[i].args[j];
        argv[j + 1] = NULL;
        assert_int_equal(load(&s, argv, NOENV), CFG_ERROR);
        assert_string_equal(err, cases[i].msg);
        assert_zeroed(&s);
    }
}

static void test_listen_forms(void **state)
{
    static const struct {
        const char *listen; /* the value given */
        const char *host;   /* expected host, or NULL when refused */
        int port;           /* expected port */
        const char *why;    /* expected reason when refused */
    } cases[] = {
        {"[::1]:8080", "::1", 8080, NULL},
        {"[::]:0", "::", 0, NULL},
        {"[fe80::1%eth0]:80", "fe80::1%eth0", 80, NULL},
        {"localhost:65535", "localhost", 65535, NULL},
        {"0.0.0.0:0", "0.0.0.0", 0, NULL},
        {"nohost", NULL, 0, "expected HOST:PORT"},
        {"1.2.3.4:99999", NULL, 0, "the port must be an integer 0..65535"},
        {"host:-1", NULL, 0, "the port must be an integer 0..65535"},
        {"host:", NULL, 0, "the port must be an integer 0..65535"},
        {"host:80x", NULL, 0, "the port must be an integer 0..65535"},
        {"[::1", NULL, 0, "missing ] after the IPv6 address"},
        {"[::1]", NULL, 0, "expected [IPV6]:PORT"},
        {"[::1]8080", NULL, 0, "expected [IPV6]:PORT"},
        {"::1:8080", NULL, 0, "an IPv6 address needs brackets, as in [::1]:8080"},
        {":8080", NULL, 0, "the host is empty"},
        {"[]:8080", NULL, 0, "the host is empty"},
    };
    char want[256];
    cfg_settings s;
    size_t i;

    (void)state;
    for (i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        cfg_status st = load(&s, ARGS("--listen", (char *)cases[i].listen), NOENV);

        if (cases[i].host) {
            assert_int_equal(st, CFG_OK);
            assert_string_equal(s.listen, cases[i].listen);
            assert_string_equal(s.listen_host, cases[i].host);
            assert_int_equal(s.listen_port, cases[i].port);
            cfg_free(&s);
        } else {
            assert_int_equal(st, CFG_ERROR);
            snprintf(want, sizeof want, "--listen: \"%s\" is not a listen address: %s",
                     cases[i].listen, cases[i].why);
            assert_string_equal(err, want);
            assert_zeroed(&s);
        }
    }
}

static void test_quotes_and_comments(void **state)
{
    cfg_settings s;
    char *path = write_conf("[ fanout ]   # the PgBouncer-style header\n"
                            "# a whole-line comment\n"
                            "   # an indented comment\n"
                            "\n"
                            "   \n"
                            "workers = 5 # five\n"
                            "max_rows=9\n"
                            "\tqueue_size\t=\t1012\t\r\n"
                            "timezone = \"Europe/Paris # not a comment\"  # a comment\n"
                            "database = '  host=/tmp dbname=\"a\"  '\n"
                            "log_level = 'WARN'# right after the quote\n"
                            "listen = 127.0.0.1:7000   \n"
                            "[fanout]\n"
                            "max_params = 1 # later wins\n"
                            "max_params = 2");
    char *path2 = write_conf("database = host=x#y  # unquoted: a#b is kept\n"
                             "timezone = \"it's\"\n");
    char *path3 = write_conf("workers = 2\nmax_queries = 6#\n");
    char *path4 = write_conf("max_params = # only a comment\n");

    (void)state;
    assert_int_equal(load(&s, ARGS("--config", path), NOENV), CFG_OK);
    assert_int_equal(s.workers, 5);
    assert_int_equal(s.max_rows, 9);
    assert_int_equal(s.queue_size, 1012);
    assert_string_equal(s.timezone, "Europe/Paris # not a comment");
    assert_string_equal(s.database, "  host=/tmp dbname=\"a\"  ");
    assert_int_equal(s.log_level, CFG_LOG_WARN);
    assert_string_equal(s.listen_host, "127.0.0.1");
    assert_int_equal(s.listen_port, 7000);
    assert_int_equal(s.max_params, 2); /* last line has no newline, and later wins */
    cfg_free(&s);

    assert_int_equal(load(&s, ARGS("--config", path2), NOENV), CFG_OK);
    assert_string_equal(s.database, "host=x#y");
    assert_string_equal(s.timezone, "it's");
    cfg_free(&s);

    /* A # with no whitespace before it is part of the value... */
    assert_int_equal(load(&s, ARGS("--config", path3), NOENV), CFG_ERROR);
    assert_contains(err, ":2: max_queries: \"6#\" is not an integer");
    /* ...and a value that is only a comment is empty. */
    assert_int_equal(load(&s, ARGS("--config", path4), NOENV), CFG_ERROR);
    assert_contains(err, ":1: max_params: \"\" is not an integer");
}

static void test_help(void **state)
{
    cfg_status st;
    char *out, want[128], up[64];
    const char *name, *def;
    size_t i, j;

    (void)state;
    /* Settings given before --help are not echoed, the secret least of all. */
    out = capture(ARGS("--database", "hunter2", "--help", "--bogus"),
                  ENV("FANOUT_DATABASE=supersecret"), &st);
    assert_int_equal(st, CFG_EXIT);
    assert_contains(out, "Usage: fanout");
    assert_contains(out, "--config FILE");
    assert_contains(out, "--version");
    assert_contains(out, "FANOUT_CONFIG");
    assert_contains(out, "DATABASE_URL");
    assert_contains(out, "(1..1024)");
    assert_null(strstr(out, "hunter2"));
    assert_null(strstr(out, "supersecret"));
    for (i = 0; cfg_setting_info(i, &name, &def); i++) {
        snprintf(want, sizeof want, "--%s ", name);
        for (j = 0; want[j]; j++)
            if (want[j] == '_')
                want[j] = '-';
        assert_contains(out, want);
        for (j = 0; name[j]; j++)
            up[j] = (char)toupper((unsigned char)name[j]);
        up[j] = '\0';
        snprintf(want, sizeof want, "env FANOUT_%s", up);
        assert_contains(out, want);
        if (def) {
            snprintf(want, sizeof want, "default %s;", def);
            assert_contains(out, want);
        }
    }
    assert_true(i >= 12); /* every row was checked; the table only grows */
    free(out);

    out = capture(ARGS("-h"), NOENV, &st);
    assert_int_equal(st, CFG_EXIT);
    assert_contains(out, "--statement-timeout-ms N");
    free(out);
}

static void test_version(void **state)
{
    cfg_status st;
    char *out;

    (void)state;
    out = capture(ARGS("--version"), NOENV, &st);
    assert_int_equal(st, CFG_EXIT);
    assert_string_equal(out, "fanout " FANOUT_VERSION "\n");
    free(out);
    out = capture(ARGS("--workers", "2", "-V"), NOENV, &st);
    assert_int_equal(st, CFG_EXIT);
    assert_string_equal(out, "fanout " FANOUT_VERSION "\n");
    free(out);
}

static void test_repeated_loads(void **state)
{
    cfg_settings s;
    int round;

    (void)state;
    for (round = 0; round < 3; round++) {
        assert_int_equal(load(&s, ARGS("--workers", "3"), NOENV), CFG_OK);
        assert_int_equal(s.workers, 3);
        cfg_free(&s);
        /* An error in the middle of a group of short options leaves getopt mid-word. */
        assert_int_equal(load(&s, ARGS("-xh"), NOENV), CFG_ERROR);
        assert_string_equal(err, "unknown option -x (see --help)");
        assert_int_equal(load(&s, ARGS("--listen", "[::1]:1"), NOENV), CFG_OK);
        assert_int_equal(s.workers, 8);
        assert_string_equal(s.listen_host, "::1");
        cfg_free(&s);
        assert_int_equal(load(&s, NOARGS, NOENV), CFG_OK);
        assert_defaults(&s);
        cfg_free(&s);
    }
    cfg_free(&s); /* twice in a row is harmless */
    assert_zeroed(&s);
}

static void test_free_zeroed(void **state)
{
    cfg_settings s = {0};

    (void)state;
    cfg_free(&s);
    cfg_free(&s);
    assert_zeroed(&s);
}

static void test_log_level_name(void **state)
{
    (void)state;
    assert_string_equal(cfg_log_level_name(CFG_LOG_ERROR), "error");
    assert_string_equal(cfg_log_level_name(CFG_LOG_WARN), "warn");
    assert_string_equal(cfg_log_level_name(CFG_LOG_INFO), "info");
    assert_string_equal(cfg_log_level_name(CFG_LOG_DEBUG), "debug");
    assert_string_equal(cfg_log_level_name((cfg_log_level)42), "unknown");
}

static void test_settings_table(void **state)
{
    char *buf = NULL, *line, *save = NULL, want[64];
    size_t len = 0, rows = 0, i;
    FILE *f = open_memstream(&buf, &len);
    const char *name, *def;

    (void)state;
    assert_non_null(f);
    cfg_print_settings_table(f);
    fclose(f);
    assert_true(strncmp(buf, "| setting | environment | flag | default | description |\n"
                             "|---|---|---|---|---|\n", 78) == 0);
    assert_contains(buf, "| `database` | `FANOUT_DATABASE`, `DATABASE_URL` | `--database TEXT` | "
                         "(none: local PostgreSQL under ./var with make run) |");
    assert_contains(buf, "| `queue_size` | `FANOUT_QUEUE_SIZE` | `--queue-size N` | `1024` |");
    for (i = 0; cfg_setting_info(i, &name, &def); i++) {
        snprintf(want, sizeof want, "\n| `%s` |", name);
        assert_contains(buf, want);
    }
    for (line = strtok_r(buf, "\n", &save); line; line = strtok_r(NULL, "\n", &save)) {
        size_t pipes = 0;
        char *p;

        for (p = line; *p; p++)
            pipes += *p == '|';
        assert_int_equal(pipes, 6); /* a '|' in a help text would break the table */
        rows++;
    }
    assert_int_equal(rows, i + 2);
    free(buf);
}

/*
 * config/fanout.conf must list every setting as "# key = default" (the database line shows an
 * example instead). Uncomment those lines, load the result, and compare with the table.
 */
static void test_fanout_conf_sync(void **state)
{
    FILE *in = fopen("config/fanout.conf", "r");
    char *line = NULL, *text = NULL, *path;
    size_t cap = 0, tlen = 0, i, seen[128] = {0}, keylen;
    FILE *out = open_memstream(&text, &tlen);
    const char *name, *def;
    cfg_settings s;
    int nlines = 0;

    (void)state;
    assert_non_null(in);
    assert_non_null(out);
    while (getline(&line, &cap, in) != -1) {
        keylen = strspn(line + 2, "abcdefghijklmnopqrstuvwxyz_");
        if (strncmp(line, "# ", 2) == 0 && keylen > 0 &&
            strncmp(line + 2 + keylen, " = ", 3) == 0) {
            char *val = line + 2 + keylen + 3;

            val[strcspn(val, "\n")] = '\0';
            nlines++;
            for (i = 0; cfg_setting_info(i, &name, &def); i++)
                if (i < 32 && strlen(name) == keylen && strncmp(name, line + 2, keylen) == 0) {
                    seen[i]++;
                    if (def && strcmp(val, def) != 0)
                        fail_msg("fanout.conf: %s = %s, but the default is %s", name, val, def);
                }
            fprintf(out, "%s\n", line + 2);
        } else {
            fputs(line, out);
        }
    }
    free(line);
    fclose(in);
    fclose(out);
    for (i = 0; cfg_setting_info(i, &name, &def); i++)
        if (seen[i] != 1)
            fail_msg("fanout.conf names %s %zu times, want once", name, seen[i]);
    assert_int_equal(nlines, i);

    path = write_conf(text);
    free(text);
    assert_int_equal(load(&s, ARGS("--config", path), NOENV), CFG_OK);
    assert_non_null(s.database);
    free(s.database);
    s.database = NULL;
    assert_defaults(&s); /* every other line shows its default */
    cfg_free(&s);
}

/* The README's settings table is generated (make readme): it must match the table here. */
static void test_readme_table_in_sync(void **state)
{
    char *want = NULL, *readme = NULL, line[1024];
    size_t wantlen = 0, readmelen = 0;
    FILE *w = open_memstream(&want, &wantlen), *r = open_memstream(&readme, &readmelen);
    FILE *f = fopen("README.md", "r");
    bool inside = false;

    (void)state;
    assert_non_null(f);
    cfg_print_settings_table(w);
    fclose(w);
    while (fgets(line, sizeof line, f)) {
        if (strstr(line, "<!-- settings:end -->"))
            inside = false;
        if (inside)
            fputs(line, r);
        if (strstr(line, "<!-- settings:begin -->"))
            inside = true;
    }
    fclose(f);
    fclose(r);
    assert_true(wantlen > 100);
    if (strcmp(want, readme) != 0)
        fail_msg("README.md's settings table is stale: run `make readme`");
    free(want);
    free(readme);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_teardown(test_defaults, unlink_tmp),
        cmocka_unit_test_teardown(test_queue_holds_largest_batch, unlink_tmp),
        cmocka_unit_test(test_readme_table_in_sync),
        cmocka_unit_test_teardown(test_file_alone, unlink_tmp),
        cmocka_unit_test_teardown(test_env_alone, unlink_tmp),
        cmocka_unit_test_teardown(test_env_empty_is_unset, unlink_tmp),
        cmocka_unit_test_teardown(test_flags_alone, unlink_tmp),
        cmocka_unit_test_teardown(test_precedence, unlink_tmp),
        cmocka_unit_test_teardown(test_config_flag_vs_env, unlink_tmp),
        cmocka_unit_test_teardown(test_database_alias, unlink_tmp),
        cmocka_unit_test_teardown(test_file_errors, unlink_tmp),
        cmocka_unit_test_teardown(test_file_nul_byte, unlink_tmp),
        cmocka_unit_test_teardown(test_unreadable_file, unlink_tmp),
        cmocka_unit_test_teardown(test_env_errors, unlink_tmp),
        cmocka_unit_test_teardown(test_flag_errors, unlink_tmp),
        cmocka_unit_test_teardown(test_listen_forms, unlink_tmp),
        cmocka_unit_test_teardown(test_quotes_and_comments, unlink_tmp),
        cmocka_unit_test_teardown(test_help, unlink_tmp),
        cmocka_unit_test_teardown(test_version, unlink_tmp),
        cmocka_unit_test_teardown(test_repeated_loads, unlink_tmp),
        cmocka_unit_test_teardown(test_free_zeroed, unlink_tmp),
        cmocka_unit_test_teardown(test_log_level_name, unlink_tmp),
        cmocka_unit_test_teardown(test_settings_table, unlink_tmp),
        cmocka_unit_test_teardown(test_fanout_conf_sync, unlink_tmp),
    };
    int rc;

    sink = fopen("/dev/null", "w");
    if (!sink)
        return 1;
    rc = cmocka_run_group_tests(tests, NULL, NULL);
    fclose(sink);
    return rc;
}
