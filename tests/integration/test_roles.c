/*
 * Per-token database roles, from the outside: a token with a ROLE runs its queries on
 * connections that log in as that role, so PostgreSQL's grants and row-level security decide what
 * it sees, and no SQL gets back to fanout's own identity (RESET ROLE, SET ROLE, SET SESSION
 * AUTHORIZATION). The role pools are bounded (role_pool_size connections per role), a role with a
 * password logs in through a passfile (PGPASSFILE) and never with the password of the database
 * setting, a role that cannot log in gets a quick db_unavailable naming why, and the access log
 * names the token.
 *
 * The test cluster trusts every login except members of fanout_password_login
 * (scripts/localpg.sh), so the password roles below really need their passfile line. The
 * secrets live here and their SHA-256 (computed once with sha256sum) in the token file.
 */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "tests/integration/groups.h"
#include "tests/integration/harness.h"

#define ALICE "it-alice-3b8e51"
#define BOB "it-bob-90c4d7"
#define PLAIN "it-plain-1f6a22"
#define PW "it-pw-c7d913"
#define PWBAD "it-pwbad-48e0aa"
#define GHOST "it-ghost-e25b70"
#define PASSWORD "pw-5d1e0b-roles"   /* it_role_pw's and it_role_pwbad's password */

#define TOKENS                                                                                     \
    "alice 5cde2bbb58cb43f3c892fa5f91619f58a11d9eb1312ee780716f404c6bc0a83a read_write it_role_alice\n" \
    "bob   5dbf33125cbd70158821772710304aba4939104a18e8d5d08c588944f099e5a8 read_only  it_role_bob\n"   \
    "plain bc3a08b5c80ba3c3ec8dca43ff24183866457873214a67a0e126f80f6afc28f4 read_write\n"              \
    "pw    a3eea7f5fd18823b4559609a56c63dc7ba47fe19c0e9f555fcdbd1758754de52 read_write it_role_pw\n"    \
    "pwbad 0c20bca2c23af2159c2b8a49b560516f6a8160b4d21d59c5502ffb6b0dc40ba9 read_write it_role_pwbad\n" \
    "ghost 34ad8c048040b9c1312cffbca268a4efb3043e694c301240a3ae1f44a01ca526 read_write it_role_ghost\n"

#define POOL_SIZE 2 /* --role-pool-size of the group's server */

#define DROP_ALL                                                                                   \
    "DROP TABLE IF EXISTS role_docs, role_secret; "                                                \
    "DROP ROLE IF EXISTS it_role_alice, it_role_bob, it_role_pw, it_role_pwbad, "                  \
    "fanout_password_login"

/* role_docs: one policy lets each role see its own rows, another lets fanout see them all.
 * role_secret: fanout may read it, the roles may not. Both belong to the superuser. */
static const char setup_sql[] =
    DROP_ALL "; "
    "CREATE ROLE it_role_alice LOGIN; CREATE ROLE it_role_bob LOGIN; "
    "CREATE ROLE fanout_password_login NOLOGIN; "
    "CREATE ROLE it_role_pw LOGIN PASSWORD '" PASSWORD "' IN ROLE fanout_password_login; "
    "CREATE ROLE it_role_pwbad LOGIN PASSWORD '" PASSWORD "' IN ROLE fanout_password_login; "
    "CREATE TABLE role_docs (owner name NOT NULL, body text NOT NULL); "
    "INSERT INTO role_docs VALUES ('it_role_alice', 'a1'), ('it_role_alice', 'a2'), "
    "  ('it_role_bob', 'b1'), ('it_role_pw', 'p1'), ('nobody', 'n1'); "
    "ALTER TABLE role_docs ENABLE ROW LEVEL SECURITY; ALTER TABLE role_docs FORCE ROW LEVEL SECURITY; "
    "CREATE POLICY own_rows ON role_docs USING (owner = current_user); "
    "CREATE POLICY service_rows ON role_docs TO fanout USING (true); "
    "GRANT SELECT, INSERT ON role_docs TO it_role_alice, it_role_bob, it_role_pw, fanout; "
    "CREATE TABLE role_secret (s text); INSERT INTO role_secret VALUES ('only fanout reads this'); "
    "GRANT SELECT ON role_secret TO fanout";

static fx_server srv = {.pid = -1};
static char tokens_path[] = "/tmp/fanout-it-roles-tokens-XXXXXX";
static char passfile[] = "/tmp/fanout-it-roles-pgpass-XXXXXX";

/* Write text to a mkstemp'd path (mode 0600, as libpq wants a passfile). */
static bool write_file(char *path, const char *text)
{
    int fd = mkstemp(path);
    if (fd < 0)
        return false;
    FILE *f = fdopen(fd, "w");
    bool ok = f && fputs(text, f) >= 0;
    return f && fclose(f) == 0 && ok;
}

static int group_setup(void **state)
{
    static const char *const args[] = {"--workers", "2", "--role-pool-size", "2",
                                       "--auth-file", tokens_path, "--log-format", "json",
                                       "--reconnect-backoff-max-ms", "300", NULL};
    const fx_opts opts = {.args = args};
    (void)state;
    if (!fx_sql_ok(true, setup_sql) || !write_file(tokens_path, TOKENS) ||
        !write_file(passfile, "*:*:*:it_role_pw:" PASSWORD "\n*:*:*:it_role_pwbad:not-" PASSWORD "\n"))
        return -1;
    /* fanout inherits it: the libpq way of giving roles their passwords. */
    setenv("PGPASSFILE", passfile, 1);
    return fx_start(&srv, &opts) ? 0 : -1;
}

static int group_teardown(void **state)
{
    (void)state;
    fx_kill(&srv);
    unsetenv("PGPASSFILE");
    unlink(tokens_path);
    unlink(passfile);
    PGresult *res = fx_sql(true, DROP_ALL, 0, NULL);
    PQclear(res);
    return 0;
}

/* POST body with the token's secret on port (extra: more header lines, or ""). Returns the
 * JSON reply (caller json_decref) or NULL; *status gets the HTTP status. */
static json_t *post_to(int port, const char *secret, const char *extra, const char *body,
                       int *status)
{
    char headers[512];
    fx_response r;
    json_error_t jerr;
    snprintf(headers, sizeof(headers),
             "Content-Type: application/json\r\nAuthorization: Bearer %s\r\n%s", secret, extra);
    *status = 0;
    if (!fx_http(port, "POST", "/v1/batch", headers, body, strlen(body), &r))
        return NULL;
    *status = r.status;
    json_t *doc = json_loadb(r.body, r.body_len, 0, &jerr);
    FX_CHECK(doc != NULL, "reply %d is not JSON: %s", r.status, r.body);
    FX_CHECK(strstr(r.body, PASSWORD) == NULL, "the reply holds a password: %s", r.body);
    fx_response_free(&r);
    return doc;
}

/* The same on the group's server, insisting on 200. */
static json_t *post_ok(const char *secret, const char *body)
{
    int status = 0;
    json_t *doc = post_to(srv.port, secret, "", body, &status);
    if (status != 200)
        fx_print_json("reply", doc);
    FX_CHECK(status == 200, "status %d for %s", status, body);
    return doc;
}

/* A batch of the given queries (JSON strings of SQL) in a mode. */
static json_t *run(const char *secret, const char *mode, const char *const *sql, size_t n)
{
    json_t *queries = json_array();
    for (size_t i = 0; i < n; i++)
        json_array_append_new(queries, json_pack("{s:s}", "sql", sql[i]));
    json_t *req = json_pack("{s:s,s:o}", "mode", mode, "queries", queries);
    char *body = json_dumps(req, JSON_COMPACT);
    json_t *doc = post_ok(secret, body);
    free(body);
    json_decref(req);
    return doc;
}

/* The rows of query i as compact JSON text, "(none)" when it has none (caller frees). */
static char *rows_text(json_t *doc, size_t i)
{
    char path[32];
    snprintf(path, sizeof(path), "results.%zu.rows", i);
    json_t *rows = fx_at(doc, path);
    return rows ? json_dumps(rows, JSON_COMPACT) : strdup("(none)");
}

/* Fail unless query i's rows are the rows of role_docs that the superuser finds owned by role
 * (fanout's [[body], ...] form, by body). */
static void expect_own_rows(json_t *doc, size_t i, const char *role)
{
    const char *params[] = {role};
    char path[32], *text = fx_sql_value(
        true, "SELECT coalesce(json_agg(json_build_array(body) ORDER BY body), '[]')::text "
              "FROM role_docs WHERE owner = $1", 1, params);
    json_t *want = text ? json_loads(text, 0, NULL) : NULL;
    snprintf(path, sizeof(path), "results.%zu.rows", i);
    FX_CHECK(json_array_size(want) > 0, "%s owns no rows to see: %s", role, text ? text : "?");
    FX_EXPECT_JSON(doc, path, want);
    json_decref(want);
    free(text);
}

static const char read_docs[] = "SELECT body FROM role_docs ORDER BY body";
static const char read_secret[] = "SELECT s FROM role_secret";
static const char identity[] = "SELECT current_user::text, session_user::text";

/* A one-query batch of the token, in mode, finds current_user and session_user both role. */
static void expect_identity(const char *secret, const char *mode, const char *role)
{
    const char *sql[] = {identity};
    json_t *doc = run(secret, mode, sql, 1);
    FX_EXPECT_STR(doc, "results.0.rows.0.0", role);
    FX_EXPECT_STR(doc, "results.0.rows.0.1", role);
    json_decref(doc);
}

/* Row-level security decides: each role token sees its rows only, the plain token (fanout) all. */
static void test_role_sees_only_its_rows(void **state)
{
    static const struct { const char *secret, *role; } who[] = {
        {ALICE, "it_role_alice"}, {BOB, "it_role_bob"}, {PW, "it_role_pw"}};
    (void)state;
    char *all = fx_sql_value(true, "SELECT count(*) FROM role_docs", 0, NULL);
    for (size_t i = 0; i < sizeof(who) / sizeof(who[0]); i++) {
        const char *sql[] = {read_docs};
        json_t *doc = run(who[i].secret, "parallel", sql, 1);
        char *got = rows_text(doc, 0);
        print_message("%-14s sees %s of %s rows\n", who[i].role, got, all ? all : "?");
        expect_own_rows(doc, 0, who[i].role);
        free(got);
        json_decref(doc);
    }
    const char *sql[] = {"SELECT count(*)::text FROM role_docs"};
    json_t *doc = run(PLAIN, "parallel", sql, 1);
    FX_EXPECT_STR(doc, "results.0.rows.0.0", all ? all : "?");
    json_decref(doc);
    free(all);
}

/* Both identities are the role, in both modes; a read_only role token still cannot write. */
static void test_identity_is_the_role(void **state)
{
    (void)state;
    expect_identity(ALICE, "parallel", "it_role_alice");
    expect_identity(ALICE, "transaction", "it_role_alice");
    expect_identity(BOB, "transaction", "it_role_bob");
    expect_identity(PLAIN, "parallel", "fanout");
    const char *write[] = {"INSERT INTO role_docs VALUES ('it_role_bob', 'b2')"};
    json_t *doc = run(BOB, "transaction", write, 1);
    FX_EXPECT_STR(doc, "results.0.error.code", "25006");
    json_decref(doc);
    /* A read_write role token writes, and row-level security has the row checked as the role. */
    const char *forged[] = {"INSERT INTO role_docs VALUES ('it_role_bob', 'forged by alice')"};
    doc = run(ALICE, "transaction", forged, 1);
    FX_EXPECT_STR(doc, "results.0.error.code", "42501");
    json_decref(doc);
    char *n = fx_sql_value(true, "SELECT count(*) FROM role_docs WHERE body IN ('b2', 'forged by alice')",
                           0, NULL);
    FX_CHECK(n && strcmp(n, "0") == 0, "refused writes landed: %s", n ? n : "?");
    free(n);
}

/* The SQL that would return a superuser connection to fanout's identity reaches nothing more
 * here: each is followed, in the same transaction and in the next batches, by a read of
 * role_secret (which fanout may read) that fails, and by an identity check that says the role. */
static void test_escapes_reach_no_more(void **state)
{
    static const char *const escapes[] = {
        "RESET ROLE",
        "SET ROLE postgres",
        "SET ROLE fanout",
        "SET SESSION AUTHORIZATION postgres",
        "SET SESSION AUTHORIZATION fanout",
        "SET SESSION AUTHORIZATION DEFAULT",
        "RESET SESSION AUTHORIZATION",
        "SELECT set_config('role', 'fanout', false)",
    };
    (void)state;
    /* The service's own identity does read it: the failures below are the role's. */
    const char *probe[] = {read_secret};
    json_t *doc = run(PLAIN, "parallel", probe, 1);
    FX_EXPECT_STR(doc, "results.0.rows.0.0", "only fanout reads this");
    json_decref(doc);

    for (size_t i = 0; i < sizeof(escapes) / sizeof(escapes[0]); i++) {
        const char *esc = escapes[i];
        /* Same transaction: the escape, then the read. */
        const char *tx_read[] = {esc, read_secret};
        doc = run(ALICE, "transaction", tx_read, 2);
        json_t *esc_err = fx_at(doc, "results.0.error.code");
        const char *after = json_string_value(fx_at(doc, "results.1.error.code"));
        print_message("%-42s %s; the read after it: %s\n", esc,
                      esc_err ? json_string_value(esc_err) : "accepted", after ? after : "ROWS");
        FX_CHECK(fx_at(doc, "results.1.rows") == NULL && after != NULL,
                 "%s: role_secret was read in the same transaction", esc);
        FX_CHECK(after && strcmp(after, esc_err ? "not_run" : "42501") == 0,
                 "%s: the read failed with %s", esc, after ? after : "?");
        json_decref(doc);
        /* Same transaction: the escape, then who we are. */
        const char *tx_who[] = {esc, identity};
        doc = run(ALICE, "transaction", tx_who, 2);
        if (fx_at(doc, "results.0.error") == NULL) {
            FX_EXPECT_STR(doc, "results.1.rows.0.0", "it_role_alice");
            FX_EXPECT_STR(doc, "results.1.rows.0.1", "it_role_alice");
        } else {
            FX_EXPECT_STR(doc, "results.1.error.code", "not_run");
        }
        json_decref(doc);
        /* The escape on every connection of the pool (parallel), then the next batches. */
        const char *par[POOL_SIZE * 2];
        for (size_t k = 0; k < POOL_SIZE * 2; k++)
            par[k] = esc;
        json_decref(run(ALICE, "parallel", par, POOL_SIZE * 2));
        const char *next[] = {identity, read_secret};
        doc = run(ALICE, "transaction", next, 2);
        FX_EXPECT_STR(doc, "results.0.rows.0.0", "it_role_alice");
        FX_EXPECT_STR(doc, "results.0.rows.0.1", "it_role_alice");
        FX_EXPECT_STR(doc, "results.1.error.code", "42501");
        json_decref(doc);
        const char *next_par[] = {read_secret, read_secret, identity, identity};
        doc = run(ALICE, "parallel", next_par, 4);
        for (int k = 0; k < 2; k++) {
            char path[40];
            snprintf(path, sizeof(path), "results.%d.error.code", k);
            FX_EXPECT_STR(doc, path, "42501");
            snprintf(path, sizeof(path), "results.%d.rows.0.1", k + 2);
            FX_EXPECT_STR(doc, path, "it_role_alice");
        }
        json_decref(doc);
    }
}

/* The number of backends logged in as role (the superuser looks). */
static long backends_of(const char *role)
{
    const char *params[] = {role};
    char *v = fx_sql_value(true, "SELECT count(*) FROM pg_stat_activity WHERE usename = $1", 1,
                           params);
    long n = v ? strtol(v, NULL, 10) : -1;
    free(v);
    return n;
}

/* A role's pool has role_pool_size connections, however many queries a batch brings, and
 * /metrics shows them; the main pool's own gauge is unchanged by it. */
static void test_pool_is_bounded(void **state)
{
    enum { N = 8 };
    const char *sql[N];
    (void)state;
    for (int i = 0; i < N; i++)
        sql[i] = "SELECT pg_backend_pid(), pg_sleep(0.05)";
    json_t *doc = run(ALICE, "parallel", sql, N);
    int pids[N], distinct = 0;
    for (int i = 0; i < N; i++) {
        char path[32];
        snprintf(path, sizeof(path), "results.%d.rows.0.0", i);
        pids[i] = (int)json_integer_value(fx_at(doc, path));
        FX_CHECK(pids[i] > 0, "query %d returned no pid", i);
        bool seen = false;
        for (int j = 0; j < i; j++)
            seen |= pids[j] == pids[i];
        distinct += !seen;
    }
    json_decref(doc);
    long backends = backends_of("it_role_alice");
    print_message("%d queries ran on %d connections; it_role_alice has %ld backends\n", N,
                  distinct, backends);
    FX_CHECK(distinct >= 1 && distinct <= POOL_SIZE, "%d connections ran the batch", distinct);
    FX_CHECK(backends == POOL_SIZE, "it_role_alice has %ld backends, role_pool_size is %d",
             backends, POOL_SIZE);
    FX_CHECK(fx_metric(srv.port, "fanout_role_db_connections{role=\"it_role_alice\",state=\"connected\"}") ==
                 POOL_SIZE, "the role's connected gauge");
    FX_CHECK(fx_metric(srv.port, "fanout_role_db_connections{role=\"it_role_alice\",state=\"disconnected\"}") == 0,
             "the role's disconnected gauge");
    FX_CHECK(fx_metric(srv.port, "fanout_db_connections{state=\"connected\"}") == 2, "the main pool's gauge");
    FX_CHECK(fx_metric(srv.port, "fanout_workers") == 2, "fanout_workers counts the main pool");
}

/* A batch of a role token that passes its deadline is answered "timeout" and its query is
 * cancelled on the role's connection (the cancel goes to the pool that ran it). */
static void test_deadline_cancels_on_role_pool(void **state)
{
    static const char slow[] =
        "{\"timeout_ms\": 300, \"queries\": [{\"sql\": \"SELECT pg_sleep(20)\"}]}";
    static const char running[] = "SELECT count(*) FROM pg_stat_activity WHERE "
                                  "usename = 'it_role_alice' AND query LIKE '%pg_sleep(20)%'";
    (void)state;
    double t0 = fx_now();
    json_t *doc = post_ok(ALICE, slow);
    FX_EXPECT_STR(doc, "results.0.error.code", "timeout");
    json_decref(doc);
    char *n = NULL;
    bool gone = false;
    while (!gone && fx_now() - t0 < 5.0 * fx_scale()) {
        free(n);
        n = fx_sql_value(true, running, 0, NULL);
        gone = n && strcmp(n, "0") == 0;
        if (!gone)
            fx_sleep_ms(20);
    }
    print_message("the role's query was cancelled %.3f s after the batch was sent\n",
                  fx_now() - t0);
    FX_CHECK(gone, "still running as it_role_alice: %s", n ? n : "?");
    free(n);
    /* Its connection goes on serving. */
    expect_identity(ALICE, "parallel", "it_role_alice");
}

/* The session reset after each job (SET SESSION AUTHORIZATION DEFAULT, RESET ALL, ...) works on a
 * login that is not a superuser: settings do not leak, and no connection is dropped for it. */
static void test_session_reset_as_role(void **state)
{
    (void)state;
    const char *pid_sql[] = {"SELECT string_agg(pid::text, ',' ORDER BY pid) FROM pg_stat_activity "
                             "WHERE usename = 'it_role_alice'"};
    char *before = fx_sql_value(true, pid_sql[0], 0, NULL);
    const char *dirty[POOL_SIZE * 2], *probe[POOL_SIZE * 2];
    for (int i = 0; i < POOL_SIZE * 2; i++) {
        dirty[i] = "SELECT set_config('work_mem', '77MB', false)";
        probe[i] = "SHOW work_mem";
    }
    for (int round = 0; round < 3; round++) {
        json_decref(run(ALICE, "parallel", dirty, POOL_SIZE * 2));
        json_t *doc = run(ALICE, "parallel", probe, POOL_SIZE * 2);
        for (int i = 0; i < POOL_SIZE * 2; i++) {
            char path[32];
            snprintf(path, sizeof(path), "results.%d.rows.0.0", i);
            FX_EXPECT_STR(doc, path, "4MB");
        }
        json_decref(doc);
    }
    char *after = fx_sql_value(true, pid_sql[0], 0, NULL);
    FX_CHECK(before && after && strcmp(before, after) == 0,
             "the role's connections changed from %s to %s", before ? before : "?",
             after ? after : "?");
    free(before);
    free(after);
}

/* The password of a role comes from the passfile: the right one logs in (the cluster demands
 * it), a wrong one gives db_unavailable naming the failure, quickly, without the password. */
static void test_password_from_passfile(void **state)
{
    (void)state;
    const char *sql[] = {identity, read_docs};
    json_t *doc = run(PW, "transaction", sql, 2);
    FX_EXPECT_STR(doc, "results.0.rows.0.0", "it_role_pw");
    FX_EXPECT_STR(doc, "results.0.rows.0.1", "it_role_pw");
    expect_own_rows(doc, 1, "it_role_pw");
    json_decref(doc);
}

/* A token whose role cannot log in: a JSON db_unavailable naming the reason within a few
 * seconds, for its first batch (which waited for the pool's first logins) and the ones after (503
 * at once); the other tokens are served throughout. */
static void expect_login_failure(const char *secret, const char *reason)
{
    for (int attempt = 0; attempt < 3; attempt++) {
        int status = 0;
        double t0 = fx_now();
        json_t *doc = post_to(srv.port, secret, "", "{\"queries\": [{\"sql\": \"SELECT 1\"}]}",
                              &status);
        double took = fx_now() - t0;
        const char *code = json_string_value(fx_at(doc, status == 503 ? "error.code"
                                                                      : "results.0.error.code"));
        const char *msg = json_string_value(fx_at(doc, status == 503 ? "error.message"
                                                                     : "results.0.error.message"));
        print_message("attempt %d: %d %s \"%s\" after %.3f s\n", attempt, status,
                      code ? code : "?", msg ? msg : "?", took);
        FX_CHECK(status == 503 || (attempt == 0 && status == 200), "status %d", status);
        FX_CHECK(code && strcmp(code, "db_unavailable") == 0, "code %s", code ? code : "?");
        FX_CHECK(msg && strstr(msg, reason), "the message does not say \"%s\": %s", reason,
                 msg ? msg : "?");
        FX_CHECK(took < 5.0 * fx_scale(), "the answer took %.3f s", took);
        json_decref(doc);
        expect_identity(PLAIN, "parallel", "fanout");
    }
}

static void test_wrong_password(void **state)
{
    (void)state;
    expect_login_failure(PWBAD, "password authentication failed for user \"it_role_pwbad\"");
}

static void test_unknown_role(void **state)
{
    (void)state;
    expect_login_failure(GHOST, "role \"it_role_ghost\" does not exist");
    /* The roles that can log in are not held up by the one that cannot. */
    expect_identity(ALICE, "parallel", "it_role_alice");
}

/* A password in the database setting is fanout's own: a role pool never offers it. Here it is
 * it_role_pw's real password, and without a passfile the role's login must still fail. */
static void test_conninfo_password_not_reused(void **state)
{
    static const char *const args[] = {"--workers", "1", "--auth-file", tokens_path, NULL};
    char database[512];
    fx_server other = {.pid = -1};
    (void)state;
    snprintf(database, sizeof(database), "%s password=%s", getenv("FANOUT_TEST_DATABASE"),
             PASSWORD);
    const fx_opts opts = {.args = args, .database = database};
    setenv("PGPASSFILE", "/nonexistent/pgpass", 1);
    bool started = fx_start(&other, &opts);
    setenv("PGPASSFILE", passfile, 1);
    assert_true(started);
    int status = 0;
    json_t *doc = post_to(other.port, PW, "", "{\"queries\": [{\"sql\": \"SELECT 1\"}]}", &status);
    const char *msg = json_string_value(fx_at(doc, status == 503 ? "error.message"
                                                                 : "results.0.error.message"));
    print_message("it_role_pw with the password only in the database setting: %d %s\n", status,
                  msg ? msg : "?");
    FX_CHECK(msg && strstr(msg, "no password supplied"), "the role logged in, or: %s",
             msg ? msg : "?");
    json_decref(doc);
    assert_true(fx_stop(&other));
}

/* Lines of the group server's log holding every needle (NULL-terminated). */
static int log_lines_with(const char *const *needles)
{
    FILE *f = fopen(srv.log, "r");
    char line[8192];
    int n = 0;
    if (!f)
        return -1;
    while (fgets(line, sizeof(line), f)) {
        bool all = true;
        for (size_t i = 0; needles[i]; i++)
            all &= strstr(line, needles[i]) != NULL;
        n += all;
    }
    fclose(f);
    return n;
}

/* The access log line of an authenticated request names its token (replies sent at once and
 * replies sent when the batch finished); an unauthenticated one has no token; no secret shows. */
static void test_access_log_names_token(void **state)
{
    static const char *const secrets[] = {ALICE, BOB, PLAIN, PW, PWBAD, GHOST, PASSWORD};
    int status = 0;
    (void)state;
    json_decref(post_to(srv.port, ALICE, "X-Request-Id: roles-log-batch\r\n",
                        "{\"queries\": [{\"sql\": \"SELECT pg_sleep(0.05)\"}]}", &status));
    FX_CHECK(status == 200, "batch: %d", status);
    json_decref(post_to(srv.port, BOB, "X-Request-Id: roles-log-bad\r\n", "{\"queries\": 7}",
                        &status));
    FX_CHECK(status == 400, "bad request: %d", status);
    json_decref(post_to(srv.port, "nope", "X-Request-Id: roles-log-401\r\n", "{}", &status));
    FX_CHECK(status == 401, "wrong token: %d", status);
    json_decref(post_to(srv.port, PLAIN, "X-Request-Id: roles-log-plain\r\n",
                        "{\"queries\": [{\"sql\": \"SELECT 1\"}]}", &status));

    const char *batch[] = {"\"request_id\":\"roles-log-batch\"", "\"status\":200",
                           "\"token\":\"alice\"", NULL};
    const char *bad[] = {"\"request_id\":\"roles-log-bad\"", "\"status\":400", "\"token\":\"bob\"",
                         NULL};
    const char *plain[] = {"\"request_id\":\"roles-log-plain\"", "\"token\":\"plain\"", NULL};
    const char *unauth[] = {"\"request_id\":\"roles-log-401\"", "\"status\":401", NULL};
    const char *unauth_token[] = {"\"request_id\":\"roles-log-401\"", "\"token\"", NULL};
    FX_CHECK(log_lines_with(batch) == 1, "no access line naming alice for the batch");
    FX_CHECK(log_lines_with(bad) == 1, "no access line naming bob for the 400");
    FX_CHECK(log_lines_with(plain) == 1, "no access line naming the plain token");
    FX_CHECK(log_lines_with(unauth) == 1 && log_lines_with(unauth_token) == 0,
             "the 401 line: %d lines, %d with a token", log_lines_with(unauth),
             log_lines_with(unauth_token));
    for (size_t i = 0; i < sizeof(secrets) / sizeof(secrets[0]); i++) {
        const char *needle[] = {secrets[i], NULL};
        FX_CHECK(log_lines_with(needle) == 0, "the log holds the secret %s", secrets[i]);
    }
}

/* SIGTERM stops every pool, the ones retrying a refused login included, and exits 0. */
static void test_clean_exit(void **state)
{
    (void)state;
    assert_true(fx_stop(&srv));
}

int it_roles(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_role_sees_only_its_rows),
        cmocka_unit_test(test_identity_is_the_role),
        cmocka_unit_test(test_escapes_reach_no_more),
        cmocka_unit_test(test_pool_is_bounded),
        cmocka_unit_test(test_deadline_cancels_on_role_pool),
        cmocka_unit_test(test_session_reset_as_role),
        cmocka_unit_test(test_password_from_passfile),
        cmocka_unit_test(test_wrong_password),
        cmocka_unit_test(test_unknown_role),
        cmocka_unit_test(test_conninfo_password_not_reused),
        cmocka_unit_test(test_access_log_names_token),
        cmocka_unit_test(test_clean_exit),
    };
    return cmocka_run_group_tests_name("roles", tests, group_setup, group_teardown);
}
