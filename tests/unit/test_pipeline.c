/* Unit tests for what pipelining decides and keeps: which statements may share a pipeline
 * (db_sql_pipelinable), which are known to be quick (svc_speed), and the per-connection
 * prepared-statement cache (db_stmts). */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <string.h>

#include "db/exec.h"
#include "db/stmt.h"
#include "service/speed.h"

static void test_pipelinable_first_keyword(void **state)
{
    (void)state;
    static const char *const yes[] = {
        "SELECT 1", "select 1", "  \n\tSeLeCt 1", "WITH x AS (SELECT 1) SELECT * FROM x",
        "VALUES (1)", "TABLE t", "INSERT INTO t VALUES (1)", "UPDATE t SET a = 1",
        "DELETE FROM t", "-- a comment\nSELECT 1", "/* c */ SELECT 1",
        "/* nested /* comment */ still */ SELECT 1", "SELECT(1)",
    };
    static const char *const no[] = {
        "BEGIN", "START TRANSACTION", "COMMIT", "END", "ROLLBACK", "ABORT", "SAVEPOINT s",
        "COPY t FROM STDIN", "PREPARE p AS SELECT 1", "SET x = 1", "CALL p()", "DO $$ $$",
        "LISTEN c", "EXPLAIN SELECT 1", "(SELECT 1)", "", "   ", "-- only a comment",
        "/* unterminated SELECT 1", "SELECTX 1", "select_1", "SELECT1", "selected",
    };
    for (size_t i = 0; i < sizeof(yes) / sizeof(yes[0]); i++)
        if (!db_sql_pipelinable(yes[i]))
            fail_msg("want pipelinable: %s", yes[i]);
    for (size_t i = 0; i < sizeof(no) / sizeof(no[0]); i++)
        if (db_sql_pipelinable(no[i]))
            fail_msg("want not pipelinable: %s", no[i]);
}

/* Reads (which may share a read-only transaction) are the pipelinable ones minus the writes. */
static void test_reads_first_keyword(void **state)
{
    (void)state;
    static const char *const yes[] = {
        "SELECT 1", " select 1", "WITH x AS (SELECT 1) SELECT * FROM x", "VALUES (1)",
        "TABLE t", "/* c */ SELECT 1", "-- c\nwith x as (delete from t returning *) table x",
    };
    static const char *const no[] = {
        "INSERT INTO t VALUES (1)", "UPDATE t SET a = 1", "DELETE FROM t", "BEGIN", "SET x = 1",
        "COPY t TO STDOUT", "SELECTX 1", "selected", "", "(SELECT 1)",
    };
    for (size_t i = 0; i < sizeof(yes) / sizeof(yes[0]); i++)
        if (!db_sql_reads(yes[i]))
            fail_msg("want a read: %s", yes[i]);
    for (size_t i = 0; i < sizeof(no) / sizeof(no[0]); i++)
        if (db_sql_reads(no[i]))
            fail_msg("want not a read: %s", no[i]);
}

/* Statements that end a transaction block, chained or not; ROLLBACK TO SAVEPOINT does not. */
static void test_ends_transaction(void **state)
{
    (void)state;
    static const char *const yes[] = {
        "COMMIT", "commit and chain", "END", "end work", "ROLLBACK", "ROLLBACK AND CHAIN",
        "abort", "/* c */ ROLLBACK WORK AND CHAIN", "-- c\nrollback transaction", "COMMIT;",
    };
    static const char *const no[] = {
        "ROLLBACK TO s", "rollback to savepoint s", "ROLLBACK WORK TO s", "ROLLBACK TRANSACTION TO s",
        "SELECT 1", "COMMITTED", "commit_x", "BEGIN", "SAVEPOINT s", "RELEASE s", "", "endless",
    };
    for (size_t i = 0; i < sizeof(yes) / sizeof(yes[0]); i++)
        if (!db_sql_ends_transaction(yes[i]))
            fail_msg("want it to end the transaction: %s", yes[i]);
    for (size_t i = 0; i < sizeof(no) / sizeof(no[0]); i++)
        if (db_sql_ends_transaction(no[i]))
            fail_msg("want it not to end the transaction: %s", no[i]);
}

static void test_speed_learns_and_forgets(void **state)
{
    (void)state;
    svc_speed *t = svc_speed_new();
    assert_non_null(t);
    uint64_t quick = db_sql_hash("SELECT 1"), slow = db_sql_hash("SELECT pg_sleep(1)");
    assert_true(quick != slow);
    assert_int_equal(db_sql_hash("SELECT 1"), quick); /* a function of the text */
    assert_false(svc_speed_quick(t, quick));             /* never seen: unknown, not quick */
    svc_speed_observe(t, quick, 100000);                 /* 0.1 ms */
    svc_speed_observe(t, slow, 1000000000);              /* 1 s */
    assert_true(svc_speed_quick(t, quick));
    assert_false(svc_speed_quick(t, slow));
    /* One stall does not flip a quick statement; a lasting change does. */
    svc_speed_observe(t, quick, 10000000); /* 10 ms, counted as 1.4: mean 0.26 ms */
    assert_true(svc_speed_quick(t, quick));
    for (int i = 0; i < 30; i++)
        svc_speed_observe(t, quick, 10000000);
    assert_false(svc_speed_quick(t, quick));
    /* A stall of 100 ms counts as at most 4 x the mean + 1 ms: still quick after it, and
     * after a second one (uncapped, one alone made the mean 12.6 ms). */
    uint64_t lookup = db_sql_hash("SELECT 2");
    svc_speed_observe(t, lookup, 300000); /* 0.3 ms */
    svc_speed_observe(t, lookup, 100000000);
    assert_true(svc_speed_quick(t, lookup));
    svc_speed_observe(t, lookup, 100000000);
    assert_true(svc_speed_quick(t, lookup));
    for (int i = 0; i < 8; i++) /* slowed down for good: slow within a handful of runs */
        svc_speed_observe(t, lookup, 100000000);
    assert_false(svc_speed_quick(t, lookup));
    /* Longer than the mean can hold saturates rather than wraps round to quick. */
    uint64_t huge = db_sql_hash("SELECT pg_sleep(100)");
    svc_speed_observe(t, huge, 100ULL * 1000000000ULL);
    assert_false(svc_speed_quick(t, huge));
    svc_speed_free(t);
}

static void test_speed_slot_collision_reads_unknown(void **state)
{
    (void)state;
    svc_speed *t = svc_speed_new();
    assert_non_null(t);
    /* Two keys with the same slot (low bits) and different tags (high bits). */
    uint64_t a = 0x1234000000000007ULL, b = 0x9876000000000007ULL;
    svc_speed_observe(t, a, 1000);
    assert_true(svc_speed_quick(t, a));
    svc_speed_observe(t, b, 1000);
    assert_true(svc_speed_quick(t, b));
    assert_false(svc_speed_quick(t, a)); /* b took the slot: a is unknown again */
    svc_speed_free(t);
}

static void test_stmts_lru_and_names(void **state)
{
    (void)state;
    char evicted[DB_STMT_NAME_MAX], first[DB_STMT_NAME_MAX], second[DB_STMT_NAME_MAX];
    assert_null(db_stmts_new(0)); /* size 0: no cache */
    assert_null(db_stmts_find(NULL, "SELECT 1", db_sql_hash("SELECT 1"), NULL));
    db_stmts *s = db_stmts_new(2);
    assert_non_null(s);
    assert_null(db_stmts_find(s, "SELECT 1", db_sql_hash("SELECT 1"), NULL));
    strcpy(first, db_stmts_add(s, "SELECT 1", db_sql_hash("SELECT 1"), evicted));
    assert_string_equal(evicted, "");
    strcpy(second, db_stmts_add(s, "SELECT 2", db_sql_hash("SELECT 2"), evicted));
    assert_string_equal(evicted, "");
    assert_string_not_equal(first, second);
    assert_string_equal(db_stmts_find(s, "SELECT 1", db_sql_hash("SELECT 1"), NULL), first); /* now SELECT 2 is the oldest */
    assert_int_equal(db_stmts_count(s), 2);
    const char *third = db_stmts_add(s, "SELECT 3", db_sql_hash("SELECT 3"), evicted);
    assert_string_equal(evicted, second); /* the least recently used went */
    assert_null(db_stmts_find(s, "SELECT 2", db_sql_hash("SELECT 2"), NULL));
    assert_string_not_equal(third, first);
    assert_string_not_equal(third, second); /* names are never reused */
    assert_string_equal(db_stmts_find(s, "SELECT 1", db_sql_hash("SELECT 1"), NULL), first);
    bool writes = true;
    assert_non_null(db_stmts_find(s, "SELECT 1", db_sql_hash("SELECT 1"), &writes));
    assert_false(writes); /* not until marked */
    db_stmts_mark_writes(s, first);
    assert_non_null(db_stmts_find(s, "SELECT 1", db_sql_hash("SELECT 1"), &writes));
    assert_true(writes);
    assert_non_null(db_stmts_find(s, "SELECT 3", db_sql_hash("SELECT 3"), &writes));
    assert_false(writes); /* only that one */
    db_stmts_forget(s, first);
    assert_null(db_stmts_find(s, "SELECT 1", db_sql_hash("SELECT 1"), NULL));
    assert_int_equal(db_stmts_count(s), 1);
    db_stmts_clear(s);
    assert_int_equal(db_stmts_count(s), 0);
    assert_null(db_stmts_find(s, "SELECT 3", db_sql_hash("SELECT 3"), NULL));
    db_stmts_free(s);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_pipelinable_first_keyword),
        cmocka_unit_test(test_reads_first_keyword),
        cmocka_unit_test(test_ends_transaction),
        cmocka_unit_test(test_speed_learns_and_forgets),
        cmocka_unit_test(test_speed_slot_collision_reads_unknown),
        cmocka_unit_test(test_stmts_lru_and_names),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
