/*
 * The binary's command line: --help and --version exit 0; a bad flag, a bad value or a config
 * file with an unknown key exit 2 with one line on stderr naming the problem (file:line for a
 * file), before anything starts.
 */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "tests/integration/groups.h"
#include "tests/integration/harness.h"

/* Run the binary; fail unless it finishes. Caller frees *out and *err. */
static int run(const char *const *args, char **out, char **err)
{
    int code = -1;
    bool finished = fx_run_binary(args, &code, out, err);
    FX_CHECK(finished, "%s %s did not finish", getenv("FANOUT_BIN"), args[0]);
    return code;
}

/* Exit status 2, nothing on stdout, and exactly one non-empty line on stderr containing each of
 * the given words. */
static void expect_config_error(const char *const *args, const char *word1, const char *word2)
{
    char *out = NULL, *err = NULL;
    int code = run(args, &out, &err);
    size_t len = err != NULL ? strlen(err) : 0;

    FX_CHECK(code == 2, "exit status %d, want 2; stderr: %s", code, err ? err : "");
    FX_CHECK(len > 1 && err[len - 1] == '\n' && strchr(err, '\n') == err + len - 1,
             "want exactly one line on stderr, got: \"%s\"", err ? err : "");
    FX_CHECK(strstr(err, word1) != NULL, "stderr does not name \"%s\": %s", word1, err);
    FX_CHECK(word2 == NULL || strstr(err, word2) != NULL, "stderr does not name \"%s\": %s", word2, err);
    FX_CHECK(out == NULL || out[0] == '\0', "unexpected stdout: %s", out);
    free(out);
    free(err);
}

static void test_help(void **state)
{
    const char *const args[] = {"--help", NULL};
    /* Every setting the issue requires, as a key or as a flag. */
    static const char *const settings[] = {"listen", "database", "workers", "queue_size", "max_body_bytes",
                                           "max_queries", "max_params", "max_rows", "statement_timeout_ms",
                                           "log_level", "config"};
    char *out = NULL, *err = NULL;
    (void)state;

    int code = run(args, &out, &err);
    FX_CHECK(code == 0, "--help: exit status %d, stderr %s", code, err ? err : "");
    FX_CHECK(out != NULL && strlen(out) > 100, "--help printed almost nothing: %s", out ? out : "");
    for (size_t i = 0; i < sizeof(settings) / sizeof(settings[0]); i++) {
        char dashed[64];
        snprintf(dashed, sizeof(dashed), "%s", settings[i]);
        for (char *p = dashed; *p; p++)
            *p = *p == '_' ? '-' : *p;
        FX_CHECK(strstr(out, settings[i]) != NULL || strstr(out, dashed) != NULL,
                 "--help does not mention %s (or --%s):\n%s", settings[i], dashed, out);
    }
    free(out);
    free(err);
}

static void test_version(void **state)
{
    const char *const args[] = {"--version", NULL};
    char *out = NULL, *err = NULL, version[32] = "";
    (void)state;

    int code = run(args, &out, &err);
    FX_CHECK(code == 0, "--version: exit status %d, stderr %s", code, err ? err : "");
    FX_CHECK(out != NULL && out[0] != '\0', "--version printed nothing");
    /* The repository's VERSION file, when the suite runs from the checkout (scripts/test.sh). */
    FILE *f = fopen("VERSION", "r");
    if (f != NULL) {
        if (fgets(version, sizeof(version), f) != NULL)
            version[strcspn(version, "\r\n")] = '\0';
        fclose(f);
        FX_CHECK(strstr(out, version) != NULL, "--version says \"%s\", VERSION says %s", out, version);
    }
    free(out);
    free(err);
}

static void test_unknown_flag(void **state)
{
    const char *const args[] = {"--no-such-flag", "--database", "host=/nonexistent dbname=x", NULL};
    (void)state;
    expect_config_error(args, "no-such-flag", NULL);
}

static void test_zero_workers(void **state)
{
    const char *const args[] = {"--workers", "0", "--listen", "127.0.0.1:0", "--database", "host=/nonexistent dbname=x",
                                NULL};
    (void)state;
    expect_config_error(args, "workers", NULL);
}

/* A mistyped flag is named without its value: the database URL's password must not reach the
 * log. */
static void test_unknown_flag_value_not_shown(void **state)
{
    const char *const args[] = {"--databse=postgresql://app:hunter2@db/app", NULL};
    char *out = NULL, *err = NULL;
    (void)state;

    expect_config_error(args, "unknown or ambiguous option \"--databse\"", NULL);
    run(args, &out, &err);
    FX_CHECK(err != NULL && strstr(err, "hunter2") == NULL, "stderr shows the password: %s", err);
    free(out);
    free(err);
}

/* glibc reports a value given to a flag that takes none with the flag's val, past 0xff for
 * ours: the line must name the flag, not print that val as a character. */
static void test_flag_takes_no_value(void **state)
{
    const char *const check[] = {"--check-config=1", NULL}, *const health[] = {"--healthcheck=yes", NULL};
    (void)state;
    expect_config_error(check, "--check-config=1: takes no value", NULL);
    expect_config_error(health, "--healthcheck=yes: takes no value", NULL);
}

/* Write text to a new temporary config file; its path goes to path (caller unlinks). */
static void write_config(char *path, const char *text)
{
    int fd = mkstemps(path, 5);
    assert_true(fd >= 0);
    assert_true(write(fd, text, strlen(text)) == (ssize_t)strlen(text));
    close(fd);
}

static void test_config_unknown_key(void **state)
{
    char path[] = "/tmp/fanout-it-XXXXXX.conf", where[64];
    (void)state;

    write_config(path, "# a config with a typo\nworkers = 4\n\nno_such_setting = 1\nlisten = 127.0.0.1:0\n");
    snprintf(where, sizeof(where), "%s:4", path);
    const char *const args[] = {"--config", path, "--database", "host=/nonexistent dbname=x", NULL};
    expect_config_error(args, where, "no_such_setting");
    unlink(path);
}

static void test_config_bad_value(void **state)
{
    char path[] = "/tmp/fanout-it-XXXXXX.conf", where[64];
    (void)state;

    write_config(path, "workers = lots\n");
    snprintf(where, sizeof(where), "%s:1", path);
    const char *const args[] = {"--config", path, "--database", "host=/nonexistent dbname=x", NULL};
    expect_config_error(args, where, "workers");
    unlink(path);
}

static void test_config_unreadable(void **state)
{
    const char *const args[] = {"--config", "/nonexistent/fanout.conf", "--database", "host=/nonexistent dbname=x",
                                NULL};
    (void)state;
    expect_config_error(args, "/nonexistent/fanout.conf", NULL);
}

/* --check-config prints config-file lines: fed back with --config, they give the same settings
 * (an unset one is a comment, a value with a double quote goes in single quotes). */
static void test_check_config_loads_back(void **state)
{
    char path[] = "/tmp/fanout-it-XXXXXX.conf";
    char *out = NULL, *err = NULL, *again = NULL;
    const char *const first[] = {"--workers", "7", "--timezone", "Etc/\"it\"",
                                 "--check-config", NULL};
    (void)state;

    FX_CHECK(run(first, &out, &err) == 0, "--check-config: %s", err ? err : "");
    FX_CHECK(out && strstr(out, "\nworkers = 7\n") && strstr(out, "# auth_file = (not set)\n") &&
                 strstr(out, "timezone = 'Etc/\"it\"'\n"),
             "--check-config printed: %s", out ? out : "");
    free(err);
    err = NULL;
    write_config(path, out);
    const char *const second[] = {"--config", path, "--check-config", NULL};
    FX_CHECK(run(second, &again, &err) == 0, "its output does not load back: %s", err ? err : "");
    FX_CHECK(again && strcmp(again, out) == 0, "loaded back, it printed:\n%s\nfirst:\n%s", again, out);
    unlink(path);
    free(out);
    free(again);
    free(err);
}

int it_cli(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_help),
        cmocka_unit_test(test_version),
        cmocka_unit_test(test_unknown_flag),
        cmocka_unit_test(test_unknown_flag_value_not_shown),
        cmocka_unit_test(test_zero_workers),
        cmocka_unit_test(test_flag_takes_no_value),
        cmocka_unit_test(test_config_unknown_key),
        cmocka_unit_test(test_config_bad_value),
        cmocka_unit_test(test_config_unreadable),
        cmocka_unit_test(test_check_config_loads_back),
    };
    return cmocka_run_group_tests_name("cli", tests, NULL, NULL);
}
