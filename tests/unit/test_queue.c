/* Unit tests for svc_queue: all-or-nothing pushes, FIFO order, close, real threads, and the
 * limit on consumers running limited items at once (quick_workers). */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <pthread.h>
#include <sched.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <time.h>

#include "service/queue.h"

static void test_fifo_and_all_or_nothing(void **state)
{
    (void)state;
    int items[8];
    svc_queue *q = svc_queue_new(5);
    assert_non_null(q);
    assert_true(svc_queue_push_all(q, items, sizeof(int), 3, SIZE_MAX));
    /* 3 more do not fit in the 2 free slots: none may be queued. */
    assert_false(svc_queue_push_all(q, items + 3, sizeof(int), 3, SIZE_MAX));
    assert_int_equal(svc_queue_depth(q), 3);
    assert_true(svc_queue_push_all(q, items + 3, sizeof(int), 2, SIZE_MAX));
    for (int i = 0; i < 5; i++)
        assert_ptr_equal(svc_queue_pop(q), &items[i]);
    /* The ring wraps around. */
    assert_true(svc_queue_push_all(q, items, sizeof(int), 4, SIZE_MAX));
    for (int i = 0; i < 4; i++)
        assert_ptr_equal(svc_queue_pop(q), &items[i]);
    assert_int_equal(svc_queue_depth(q), 0);
    svc_queue_free(q);
}

static void test_close_drains_then_stops(void **state)
{
    (void)state;
    int items[2];
    svc_queue *q = svc_queue_new(4);
    assert_true(svc_queue_push_all(q, items, sizeof(int), 2, SIZE_MAX));
    svc_queue_close(q);
    assert_false(svc_queue_push_all(q, items, sizeof(int), 1, SIZE_MAX));
    assert_ptr_equal(svc_queue_pop(q), &items[0]);
    assert_ptr_equal(svc_queue_pop(q), &items[1]);
    assert_null(svc_queue_pop(q));
    svc_queue_free(q);
}

#define PER_PRODUCER 20000
static atomic_long popped_sum;
static atomic_int popped_count;

static void *consumer(void *arg)
{
    svc_queue *q = arg;
    for (long *item; (item = svc_queue_pop(q)) != NULL;) {
        atomic_fetch_add(&popped_sum, *item);
        atomic_fetch_add(&popped_count, 1);
    }
    return NULL;
}

/* Four consumers and one producer: every item is popped exactly once, none lost at close. */
static void test_threads_lose_nothing(void **state)
{
    (void)state;
    static long values[PER_PRODUCER];
    pthread_t t[4];
    svc_queue *q = svc_queue_new(64);
    long want = 0;
    atomic_store(&popped_sum, 0);
    atomic_store(&popped_count, 0);
    for (int i = 0; i < 4; i++)
        assert_int_equal(pthread_create(&t[i], NULL, consumer, q), 0);
    for (long i = 0; i < PER_PRODUCER; i++) {
        values[i] = i + 1;
        want += i + 1;
        while (!svc_queue_push_all(q, &values[i], sizeof(long), 1, SIZE_MAX))
            sched_yield();
    }
    svc_queue_close(q);
    for (int i = 0; i < 4; i++)
        pthread_join(t[i], NULL);
    assert_int_equal(atomic_load(&popped_count), PER_PRODUCER);
    assert_int_equal(atomic_load(&popped_sum), want);
    svc_queue_free(q);
}

/* Odd values are limited items. */
static bool odd_is_limited(const void *item)
{
    return *(const long *)item % 2 != 0;
}

static void sleep_ms(int ms)
{
    struct timespec t = {ms / 1000, (long)(ms % 1000) * 1000000L};
    nanosleep(&t, NULL);
}

/* Limit 1: a second consumer leaves limited items to the one holding the slot, takes others,
 * and takes limited ones too once that slot is given back or has gone stale. */
static void test_limit_holds_back_a_second_consumer(void **state)
{
    (void)state;
    static long items[] = {1, 3, 5, 7, 2, 9};
    svc_queue *q = svc_queue_new(16);
    svc_queue_slot a = {.held = false}, b = {.held = false};
    void *got[4];
    bool closed;

    svc_queue_limit(q, 1, 200, odd_is_limited);
    assert_true(svc_queue_push_all(q, items, sizeof(long), 4, SIZE_MAX)); /* 1 3 5 7 */
    assert_true(svc_queue_waiting_limited(q));
    assert_int_equal(svc_queue_pop_run(q, 0, &closed, got, 1, NULL, &a), 1);
    assert_ptr_equal(got[0], &items[0]);
    assert_true(a.held);
    /* b may not: a holds the only slot */
    assert_int_equal(svc_queue_pop_run(q, 0, &closed, got, 1, NULL, &b), 0);
    assert_false(b.held);
    /* a comes back for more: it gives its slot back and takes it again */
    assert_int_equal(svc_queue_pop_run(q, 0, &closed, got, 1, NULL, &a), 1);
    assert_ptr_equal(got[0], &items[1]);
    /* a consumer without a slot (svc_queue_pop) is never held back */
    assert_ptr_equal(svc_queue_pop(q), &items[2]);
    /* once a's slot is stale, b may */
    sleep_ms(300);
    assert_int_equal(svc_queue_pop_run(q, 0, &closed, got, 1, NULL, &b), 1);
    assert_ptr_equal(got[0], &items[3]);
    assert_true(b.held);
    assert_false(svc_queue_waiting_limited(q));
    /* an item that is not limited goes to anyone; a limited one behind it waits for b */
    assert_true(svc_queue_push_all(q, &items[4], sizeof(long), 2, SIZE_MAX)); /* 2 9 */
    assert_int_equal(svc_queue_pop_run(q, 0, &closed, got, 1, NULL, &a), 1);
    assert_ptr_equal(got[0], &items[4]);
    assert_false(a.held);
    assert_int_equal(svc_queue_pop_run(q, 0, &closed, got, 1, NULL, &a), 0);
    assert_true(svc_queue_waiting_limited(q));
    assert_int_equal(svc_queue_pop_run(q, 0, &closed, got, 1, NULL, &b), 1);
    assert_ptr_equal(got[0], &items[5]);
    /* b finds nothing: its slot is free, and a push would wake a consumer again */
    assert_int_equal(svc_queue_pop_run(q, 0, &closed, got, 1, NULL, &b), 0);
    assert_false(b.held);
    /* closed: everyone drains what is left, limit or not */
    assert_true(svc_queue_push_all(q, items, sizeof(long), 2, SIZE_MAX)); /* 1 3 */
    assert_int_equal(svc_queue_pop_run(q, 0, &closed, got, 1, NULL, &a), 1);
    svc_queue_close(q);
    assert_int_equal(svc_queue_pop_run(q, 0, &closed, got, 1, NULL, &b), 1);
    assert_ptr_equal(got[0], &items[1]);
    assert_false(closed);
    assert_int_equal(svc_queue_pop_run(q, 0, &closed, got, 1, NULL, &b), 0);
    assert_true(closed);
    svc_queue_free(q);
}

/* A consumer that stops while it holds the only slot (a worker whose connection was lost after
 * a run of quick jobs, stopping while it reconnects) gives it back: the next takes limited items
 * at once, and the queue's list of held slots no longer reaches the one that left (build/asan
 * would see a read of freed memory when the next pop counts the slots). */
static void test_leaving_gives_the_slot_back(void **state)
{
    (void)state;
    static long items[] = {1, 3};
    svc_queue *q = svc_queue_new(16);
    svc_queue_slot *a = calloc(1, sizeof(*a)), b = {.held = false};
    void *got[2];
    bool closed;

    assert_non_null(a);
    svc_queue_limit(q, 1, 60000, odd_is_limited); /* never stale within the test */
    assert_true(svc_queue_push_all(q, items, sizeof(long), 2, SIZE_MAX));
    assert_int_equal(svc_queue_pop_run(q, 0, &closed, got, 1, NULL, a), 1);
    assert_true(a->held);
    assert_int_equal(svc_queue_pop_run(q, 0, &closed, got, 1, NULL, &b), 0); /* held back */
    svc_queue_leave(q, a);
    assert_false(a->held);
    free(a);
    assert_int_equal(svc_queue_pop_run(q, 0, &closed, got, 1, NULL, &b), 1);
    assert_ptr_equal(got[0], &items[1]);
    assert_true(b.held);
    svc_queue_leave(q, &b);
    svc_queue_leave(q, &b); /* twice, or never held: nothing to give back */
    assert_false(b.held);
    svc_queue_free(q);
}

/* A consumer blocked in a pop is woken for limited items only while the limit has room, and
 * holds the slot from then on; svc_queue_kick wakes one once the holder's slot is stale. */
typedef struct blocked {
    svc_queue *q;
    svc_queue_slot slot;
    atomic_int got; /* items taken */
} blocked;

static void *blocked_consumer(void *arg)
{
    blocked *c = arg;
    void *item;
    bool closed = false;
    while (!closed)
        if (svc_queue_pop_run(c->q, 5000, &closed, &item, 1, NULL, &c->slot))
            atomic_fetch_add(&c->got, 1);
    return NULL;
}

static void test_limit_wakes_only_with_room(void **state)
{
    (void)state;
    static long items[] = {1, 3};
    svc_queue *q = svc_queue_new(16);
    svc_queue_slot mine = {.held = false};
    blocked c = {.q = q};
    pthread_t t;
    void *got;
    bool closed;

    svc_queue_limit(q, 1, 200, odd_is_limited);
    atomic_init(&c.got, 0);
    assert_true(svc_queue_push_all(q, &items[0], sizeof(long), 1, SIZE_MAX));
    assert_int_equal(svc_queue_pop_run(q, 0, &closed, &got, 1, NULL, &mine), 1); /* the slot */
    assert_int_equal(pthread_create(&t, NULL, blocked_consumer, &c), 0);
    sleep_ms(50); /* it blocks */
    assert_true(svc_queue_push_all(q, &items[1], sizeof(long), 1, SIZE_MAX));
    sleep_ms(100);
    assert_int_equal(atomic_load(&c.got), 0); /* not woken: no room */
    assert_true(svc_queue_kick(q));           /* mine is fresh: still none */
    sleep_ms(50);
    assert_int_equal(atomic_load(&c.got), 0);
    sleep_ms(200); /* mine is stale now */
    svc_queue_kick(q);
    for (int i = 0; i < 200 && atomic_load(&c.got) == 0; i++)
        sleep_ms(10);
    assert_int_equal(atomic_load(&c.got), 1);
    assert_false(svc_queue_kick(q)); /* nothing waits */
    svc_queue_close(q);
    pthread_join(t, NULL);
    svc_queue_free(q);
}

static svc_queue_join always_if_spare(const void *first, const void *next)
{
    (void)first;
    (void)next;
    return SVC_JOIN_IF_SPARE;
}

/* Items that join only when spare: with 3 consumers idle, a run takes its even share of 13
 * (4), not all that leaves one for each of the others (10: 100 ms of 10 ms sleeps in a row
 * while three workers run 10 ms each). */
static void test_spare_items_are_shared_out(void **state)
{
    (void)state;
    static long items[13];
    svc_queue *q = svc_queue_new(16);
    blocked c[3];
    pthread_t t[3];
    void *got[16];
    bool closed;
    int taken = 0;

    for (int i = 0; i < 3; i++) {
        c[i] = (blocked){.q = q};
        atomic_init(&c[i].got, 0);
        assert_int_equal(pthread_create(&t[i], NULL, blocked_consumer, &c[i]), 0);
    }
    sleep_ms(100); /* all three block */
    assert_true(svc_queue_push_all(q, items, sizeof(long), 13, 0)); /* wakes none */
    assert_int_equal(svc_queue_pop_run(q, 0, &closed, got, 16, always_if_spare, NULL), 4);
    svc_queue_close(q);
    for (int i = 0; i < 3; i++) {
        pthread_join(t[i], NULL);
        taken += atomic_load(&c[i].got);
    }
    assert_int_equal(taken, 9);
    svc_queue_free(q);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_fifo_and_all_or_nothing),
        cmocka_unit_test(test_close_drains_then_stops),
        cmocka_unit_test(test_threads_lose_nothing),
        cmocka_unit_test(test_limit_holds_back_a_second_consumer),
        cmocka_unit_test(test_leaving_gives_the_slot_back),
        cmocka_unit_test(test_limit_wakes_only_with_room),
        cmocka_unit_test(test_spare_items_are_shared_out),
    };
    return cmocka_run_group_tests_name("queue", tests, NULL, NULL);
}
