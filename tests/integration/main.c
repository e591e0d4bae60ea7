/*
 * The integration suite: the real fanout binary against a real PostgreSQL, over HTTP.
 *
 * Environment (scripts/test.sh sets it): FANOUT_BIN, FANOUT_WRAPPER (optional command prefix such
 * as valgrind), FANOUT_TEST_DATABASE (conninfo of the role fanout), FANOUT_TEST_ADMIN (conninfo of
 * the superuser on the same database). Arguments, when given, name the groups to run
 * (e.g. `integration values cli`). Exit status 0 only when every test of every group passed.
 */
#include <signal.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "tests/integration/groups.h"

static const struct {
    const char *name;
    int (*run)(void);
} groups[] = {
    {"endpoints", it_endpoints},       {"values", it_values},
    {"params", it_params},             {"transactions", it_transactions},
    {"batches", it_batches},           {"concurrency", it_concurrency},
    {"reconnect", it_reconnect},       {"cli", it_cli},
    {"contract", it_contract},
    {"observability", it_observability},
    {"isolation", it_isolation},
    {"reliability", it_reliability},
    {"hostile", it_hostile},
    {"auth", it_auth},
    {"tls", it_tls},
    {"limits", it_limits},
    {"roles", it_roles},
    {"pipeline", it_pipeline},
};

static bool wanted(const char *name, int argc, char **argv)
{
    if (argc < 2)
        return true;
    for (int i = 1; i < argc; i++)
        if (strcmp(argv[i], name) == 0)
            return true;
    return false;
}

int main(int argc, char **argv)
{
    const char *required[] = {"FANOUT_BIN", "FANOUT_TEST_DATABASE", "FANOUT_TEST_ADMIN"};
    int failed = 0, ran = 0;

    setvbuf(stdout, NULL, _IOLBF, 0); /* keep cmocka's stdout in order with stderr */
    signal(SIGPIPE, SIG_IGN);
    for (size_t i = 0; i < sizeof(required) / sizeof(required[0]); i++) {
        if (getenv(required[i]) == NULL) {
            fprintf(stderr, "integration: %s is not set (run through scripts/test.sh)\n", required[i]);
            return 1;
        }
    }
    for (size_t i = 0; i < sizeof(groups) / sizeof(groups[0]); i++) {
        if (wanted(groups[i].name, argc, argv)) {
            printf("\n[----------] group %s\n", groups[i].name);
            failed += groups[i].run() != 0;
            ran++;
        }
    }
    if (ran == 0) {
        fprintf(stderr, "integration: no such group\n");
        return 1;
    }
    return failed != 0;
}
