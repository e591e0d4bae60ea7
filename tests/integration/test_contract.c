/*
 * Contract: docs/openapi.yaml lints clean, and the real binary's replies match it.
 *
 * Three servers: one with the test database, one with no reachable database (the 503 replies of
 * /readyz and /v1/batch), and one with a single worker and a two-job queue (503 overloaded).
 * tests/contract/check.mjs sends its fixed set of requests to them and validates every reply
 * against the spec with ajv; `redocly lint` (Redocly's recommended-strict rules, see
 * tests/contract/redocly.yaml) checks the spec itself. Both run under node from tests/tools,
 * whose node_modules this group installs with `npm ci` when they are missing or stale; a machine
 * without node or npm fails here, loudly. Paths are relative to the repository root, where
 * scripts/test.sh runs the suite.
 */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include "tests/integration/groups.h"
#include "tests/integration/harness.h"

#define TOOLS "tests/tools"
#define CHECK_SCRIPT "tests/contract/check.mjs"
#define SPEC "docs/openapi.yaml"

static fx_server srv = {.pid = -1};  /* with the test database */
static fx_server down = {.pid = -1}; /* no database: not ready; one client connection at most */
static fx_server busy = {.pid = -1}; /* one worker, a queue of two jobs */

static int group_setup(void **state)
{
    static const char *const busy_args[] = {"--workers", "1", "--queue-size", "2", "--max-queries", "2",
                                            "--pipeline-depth", "1", NULL};
    const fx_opts main_opts = {0};
    static const char *const down_args[] = {"--max-clients", "1", NULL};
    const fx_opts down_opts = {.database = "host=/nonexistent dbname=x", .not_ready = true,
                               .args = down_args};
    const fx_opts busy_opts = {.args = busy_args};
    (void)state;
    if (fx_start(&srv, &main_opts) && fx_start(&down, &down_opts) && fx_start(&busy, &busy_opts))
        return 0;
    fx_kill(&srv);
    fx_kill(&down);
    fx_kill(&busy);
    return -1;
}

static int group_teardown(void **state)
{
    (void)state;
    fx_kill(&srv);
    fx_kill(&down);
    fx_kill(&busy);
    return 0;
}

/* Run cmd with sh, stdout and stderr together into *out (caller frees). Returns the exit status,
 * or -1 when it could not run or did not exit normally. */
static int shell(const char *cmd, char **out)
{
    FILE *p = popen(cmd, "r");
    size_t len = 0, cap = 4096;
    char *buf = malloc(cap);

    *out = NULL;
    if (!p || !buf) {
        if (p)
            pclose(p);
        free(buf);
        return -1;
    }
    for (size_t n; (n = fread(buf + len, 1, cap - len - 1, p)) > 0;) {
        len += n;
        if (cap - len < 1024) {
            char *bigger = realloc(buf, cap * 2);
            if (!bigger)
                break;
            buf = bigger;
            cap *= 2;
        }
    }
    buf[len] = '\0';
    *out = buf;
    int status = pclose(p);
    return status != -1 && WIFEXITED(status) ? WEXITSTATUS(status) : -1;
}

/* Print a command's whole output (cmocka's print_error cuts a message at 1 KiB). */
static void show(const char *cmd, int rc, const char *out)
{
    fprintf(stderr, "$ %s\n(exit %d)\n", cmd, rc);
    if (out)
        fwrite(out, 1, strlen(out), stderr);
    fflush(stderr);
}

/* True when every devDependency of tests/tools/package.json is installed at its pinned version. */
static bool tools_installed(void)
{
    json_t *pkg = json_load_file(TOOLS "/package.json", 0, NULL);
    json_t *deps = json_object_get(pkg, "devDependencies");
    const char *name;
    json_t *want;
    bool ok = json_is_object(deps);

    json_object_foreach(deps, name, want)
    {
        char path[512];
        snprintf(path, sizeof(path), TOOLS "/node_modules/%s/package.json", name);
        json_t *got = json_load_file(path, 0, NULL);
        const char *version = json_string_value(json_object_get(got, "version"));
        if (version == NULL || !json_is_string(want) || strcmp(version, json_string_value(want)) != 0) {
            print_message("contract: %s is %s%s in " TOOLS "/node_modules (package.json pins %s)\n", name,
                          version ? "at " : "missing", version ? version : "",
                          json_is_string(want) ? json_string_value(want) : "?");
            ok = false;
        }
        json_decref(got);
    }
    json_decref(pkg);
    return ok;
}

/* node and tests/tools/node_modules; runs `npm ci` in tests/tools when either is missing. */
static void test_tools(void **state)
{
    char *out = NULL;
    (void)state;

    FX_CHECK(access(CHECK_SCRIPT, R_OK) == 0 && access(SPEC, R_OK) == 0,
             "%s or %s not found: run the suite from the repository root (scripts/test.sh does)", CHECK_SCRIPT,
             SPEC);
    int node = shell("node --version 2>&1", &out);
    free(out);
    if (node == 0 && tools_installed())
        return;
    print_message("contract: %s; running npm ci in " TOOLS "\n", node == 0 ? "node modules missing or stale"
                                                                          : "node not found");
    const char *npm = "cd " TOOLS " && npm ci --no-audit --no-fund 2>&1";
    int rc = shell(npm, &out);
    if (rc != 0)
        show(npm, rc, out);
    free(out);
    FX_CHECK(rc == 0, "`npm ci --no-audit --no-fund` in " TOOLS " failed (exit %d); node and npm are needed "
                      "(Debian: apt-get install nodejs npm)",
             rc);
    node = shell("node --version 2>&1", &out);
    if (node != 0)
        show("node --version", node, out);
    free(out);
    FX_CHECK(node == 0, "node still does not run after npm ci");
    FX_CHECK(tools_installed(), "npm ci ran but " TOOLS "/node_modules still lacks a pinned devDependency");
}

/* The spec passes Redocly's recommended-strict rules: no errors, no warnings. */
static void test_lint(void **state)
{
    char cmd[512], *out = NULL;
    (void)state;

    snprintf(cmd, sizeof(cmd),
             "cd " TOOLS " && timeout %d npx --no-install redocly lint ../../" SPEC
             " --config ../contract/redocly.yaml 2>&1",
             120 * fx_scale());
    int rc = shell(cmd, &out);
    if (rc != 0)
        show(cmd, rc, out);
    free(out);
    FX_CHECK(rc == 0, "redocly lint found problems in " SPEC " (exit %d, output above)", rc);
}

/* Every reply check.mjs provokes matches the spec, and every operation and response was seen. */
static void test_replies_match(void **state)
{
    char cmd[512], *out = NULL;
    (void)state;

    snprintf(cmd, sizeof(cmd),
             "timeout %d node " CHECK_SCRIPT " http://127.0.0.1:%d " SPEC
             " --unavailable http://127.0.0.1:%d --busy http://127.0.0.1:%d 2>&1",
             300 * fx_scale(), srv.port, down.port, busy.port);
    int rc = shell(cmd, &out);
    if (rc != 0) {
        show(cmd, rc, out);
    } else {
        /* Its last line says how many replies matched. */
        const char *last = out ? strstr(out, "\ncontract: ") : NULL;
        if (last)
            print_message("%s", last + 1);
    }
    free(out);
    FX_CHECK(rc == 0, "replies do not match " SPEC " (exit %d, output above)", rc);
}

/* SIGTERM: exit status 0 (under valgrind: no definite leaks). */
static void test_clean_exit(void **state)
{
    (void)state;
    bool a = fx_stop(&srv), b = fx_stop(&down), c = fx_stop(&busy);
    assert_true(a && b && c);
}

int it_contract(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_tools),
        cmocka_unit_test(test_lint),
        cmocka_unit_test(test_replies_match),
        cmocka_unit_test(test_clean_exit),
    };
    return cmocka_run_group_tests_name("contract", tests, group_setup, group_teardown);
}
