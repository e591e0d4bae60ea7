/* Unit tests for svc_queue: all-or-nothing pushes, FIFO order, close, and real threads. */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <pthread.h>
#include <sched.h>
#include <stdatomic.h>

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

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_fifo_and_all_or_nothing),
        cmocka_unit_test(test_close_drains_then_stops),
        cmocka_unit_test(test_threads_lose_nothing),
    };
    return cmocka_run_group_tests_name("queue", tests, NULL, NULL);
}
