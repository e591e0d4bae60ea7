/* Unit tests for db_conninfo_build: what fanout connects with, no server involved; and
 * db_conninfo_local, which decides quick_workers' default. */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <stdlib.h>
#include <string.h>

#include "db/conn.h"
#include "http/auth.h"

typedef struct built {
    char **kw, **val;
    char err[256];
} built;

static bool build(built *b, const char *conninfo, const char *tz, int timeout_ms)
{
    db_conn_params p = {.conninfo = conninfo, .timezone = tz, .statement_timeout_ms = timeout_ms};
    memset(b, 0, sizeof(*b));
    return db_conninfo_build(&p, &b->kw, &b->val, b->err, sizeof(b->err));
}

/* The value of a keyword, asserting it appears exactly once. */
static const char *get(const built *b, const char *key)
{
    const char *found = NULL;
    int n = 0;
    for (int i = 0; b->kw[i]; i++)
        if (strcmp(b->kw[i], key) == 0) {
            found = b->val[i];
            n++;
        }
    assert_true(n <= 1);
    return found;
}

static void test_defaults_applied(void **state)
{
    (void)state;
    built b;
    assert_true(build(&b, "host=/tmp/x dbname=app", "UTC", 30000));
    assert_string_equal(get(&b, "host"), "/tmp/x");
    assert_string_equal(get(&b, "dbname"), "app");
    assert_string_equal(get(&b, "connect_timeout"), "5");
    assert_string_equal(get(&b, "keepalives"), "1");
    assert_string_equal(get(&b, "tcp_user_timeout"), "30000");
    assert_string_equal(get(&b, "application_name"), "fanout");
    assert_string_equal(get(&b, "client_encoding"), "UTF8");
    assert_string_equal(get(&b, "options"),
                        "-c DateStyle=ISO -c IntervalStyle=postgres -c bytea_output=hex "
                        "-c extra_float_digits=1 -c TimeZone=UTC -c statement_timeout=30000 "
                        "-c lock_timeout=0 -c idle_in_transaction_session_timeout=0");
    db_conninfo_free(b.kw, b.val);
}

static void test_user_values_win_except_pinned(void **state)
{
    (void)state;
    built b;
    assert_true(build(&b,
                      "dbname=app connect_timeout=2 application_name=mine client_encoding=LATIN1 "
                      "options='-c search_path=s1'",
                      "Europe/Paris", 0));
    assert_string_equal(get(&b, "connect_timeout"), "2");
    assert_string_equal(get(&b, "application_name"), "mine");
    /* Encoding is pinned: fanout's JSON must be UTF-8. */
    assert_string_equal(get(&b, "client_encoding"), "UTF8");
    const char *o = get(&b, "options");
    /* The user's options come first, fanout's after them, so fanout's win. */
    assert_ptr_equal(strstr(o, "-c search_path=s1"), o);
    assert_non_null(strstr(o, "-c TimeZone=Europe/Paris"));
    assert_non_null(strstr(o, "-c statement_timeout=0"));
    db_conninfo_free(b.kw, b.val);
}

/* A long options of the user's own is kept whole, and fanout's settings after it too: at 1900
 * characters a cut once turned statement_timeout=30000 into 3 (ms); at 3000, the user's own. */
static void test_long_user_options_kept_whole(void **state)
{
    (void)state;
    static const size_t lengths[] = {1900, 3000};
    char conninfo[4096], mine[4000];
    for (size_t i = 0; i < sizeof(lengths) / sizeof(lengths[0]); i++) {
        built b;
        size_t n = (size_t)snprintf(mine, sizeof(mine), "-c application_name=");
        memset(mine + n, 'x', lengths[i]);
        mine[n + lengths[i]] = '\0';
        snprintf(conninfo, sizeof(conninfo), "dbname=app options='%s'", mine);
        assert_true(build(&b, conninfo, "UTC", 30000));
        const char *o = get(&b, "options");
        assert_int_equal(strncmp(o, mine, strlen(mine)), 0);
        assert_string_equal(o + strlen(mine),
                            " -c DateStyle=ISO -c IntervalStyle=postgres -c bytea_output=hex "
                            "-c extra_float_digits=1 -c TimeZone=UTC -c statement_timeout=30000 "
                            "-c lock_timeout=0 -c idle_in_transaction_session_timeout=0");
        db_conninfo_free(b.kw, b.val);
    }
}

static void test_uri_form(void **state)
{
    (void)state;
    built b;
    assert_true(build(&b, "postgresql://alice@db.example:5433/shop?sslmode=require", "UTC", 1));
    assert_string_equal(get(&b, "user"), "alice");
    assert_string_equal(get(&b, "host"), "db.example");
    assert_string_equal(get(&b, "port"), "5433");
    assert_string_equal(get(&b, "dbname"), "shop");
    assert_string_equal(get(&b, "sslmode"), "require");
    db_conninfo_free(b.kw, b.val);
}

static void test_option_values_escaped(void **state)
{
    (void)state;
    built b;
    /* The server splits options on spaces; a space inside a value must be escaped. */
    assert_true(build(&b, "", "Odd Zone\\x", 5));
    assert_non_null(strstr(get(&b, "options"), "-c TimeZone=Odd\\ Zone\\\\x "));
    db_conninfo_free(b.kw, b.val);
}

/* A role pool logs in as its role: the conninfo's user is replaced and its password, which is
 * fanout's own, is left out; the passfile and everything else stay. */
static void test_user_override(void **state)
{
    (void)state;
    static const char *const conninfos[] = {
        "host=/tmp/x dbname=app user=fanout password=s3cret passfile=/etc/fanout/pgpass",
        "postgresql://fanout:s3cret@db.example/app?passfile=/etc/fanout/pgpass",
        "dbname=app passfile=/etc/fanout/pgpass",
    };
    for (size_t i = 0; i < sizeof(conninfos) / sizeof(conninfos[0]); i++) {
        built b;
        db_conn_params p = {.conninfo = conninfos[i], .user = "report_ro", .timezone = "UTC"};
        memset(&b, 0, sizeof(b));
        assert_true(db_conninfo_build(&p, &b.kw, &b.val, b.err, sizeof(b.err)));
        assert_string_equal(get(&b, "user"), "report_ro");
        assert_null(get(&b, "password"));
        assert_string_equal(get(&b, "passfile"), "/etc/fanout/pgpass");
        assert_string_equal(get(&b, "dbname"), "app");
        assert_string_equal(get(&b, "client_encoding"), "UTF8");
        for (int k = 0; b.val[k]; k++)
            assert_null(strstr(b.val[k], "s3cret"));
        db_conninfo_free(b.kw, b.val);
    }
    /* Without a user of its own, the conninfo's login is kept as it is. */
    built b;
    assert_true(build(&b, conninfos[0], "UTC", 0));
    assert_string_equal(get(&b, "user"), "fanout");
    assert_string_equal(get(&b, "password"), "s3cret");
    db_conninfo_free(b.kw, b.val);
}

static void test_bad_conninfo(void **state)
{
    (void)state;
    built b;
    assert_false(build(&b, "nonsense", "UTC", 0));
    assert_null(b.kw);
    assert_null(b.val);
    assert_non_null(strstr(b.err, "database:"));
    assert_false(build(&b, "hostx=y", "UTC", 0));
    assert_non_null(strstr(b.err, "hostx"));
    assert_false(build(&b, "postgresql://[::1", "UTC", 0));
}

static bool local(const char *conninfo)
{
    return db_conninfo_local(conninfo, http_auth_host_is_loopback);
}

static void test_local_database(void **state)
{
    (void)state;
    unsetenv("PGHOST");
    assert_true(local("dbname=x"));            /* libpq's default socket */
    assert_true(local("host=/var/run/postgresql dbname=x"));
    assert_true(local("host=localhost"));
    assert_true(local("host=127.0.0.1,127.0.0.2 port=5432,5433"));
    assert_true(local("postgresql://[::1]:5432/x"));
    assert_true(local("host=db.example.com hostaddr=127.0.0.1"));
    assert_false(local("host=db.example.com"));
    assert_false(local("host=localhost,10.0.0.5"));
    assert_false(local("postgresql://10.1.2.3/x"));
    assert_false(local("host=localhost hostaddr=192.168.1.4"));
    assert_false(local("host=128.0.0.1"));
    assert_false(local("not a conninfo = '"));
    setenv("PGHOST", "db.example.com", 1);
    assert_false(local("dbname=x"));
    assert_true(local("host=/tmp dbname=x"));
    unsetenv("PGHOST");
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_defaults_applied),
        cmocka_unit_test(test_user_values_win_except_pinned),
        cmocka_unit_test(test_long_user_options_kept_whole),
        cmocka_unit_test(test_uri_form),
        cmocka_unit_test(test_option_values_escaped),
        cmocka_unit_test(test_user_override),
        cmocka_unit_test(test_bad_conninfo),
        cmocka_unit_test(test_local_database),
    };
    return cmocka_run_group_tests_name("conninfo", tests, NULL, NULL);
}
