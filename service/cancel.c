/*
 * svc_cancel: a ring of (fn, arg) tasks behind one mutex, drained by a few threads. The lock is
 * never held while a task runs. See cancel.h.
 */
#include "service/cancel.h"

#include "service/clock.h"

#include <errno.h>
#include <pthread.h>
#include <stdlib.h>
#include <time.h>

typedef struct task {
    svc_cancel_fn fn; /* what to run */
    void *arg;        /* its argument, owned by fn */
} task;

struct svc_cancel {
    pthread_mutex_t lock;   /* guards everything below */
    pthread_cond_t wake;    /* a task was posted, or stopping */
    pthread_cond_t exited;  /* a thread left */
    task *ring;             /* capacity slots */
    int capacity, head, len;
    bool stopping;
    int nthreads, alive;    /* threads started, and still running */
    pthread_t *threads;
};

static void *runner(void *arg)
{
    svc_cancel *c = arg;
    pthread_mutex_lock(&c->lock);
    for (;;) {
        while (c->len == 0 && !c->stopping)
            pthread_cond_wait(&c->wake, &c->lock);
        if (c->stopping)
            break;
        task t = c->ring[c->head];
        c->head = (c->head + 1) % c->capacity;
        c->len--;
        pthread_mutex_unlock(&c->lock);
        t.fn(t.arg); /* may block for as long as the server takes */
        pthread_mutex_lock(&c->lock);
    }
    c->alive--;
    pthread_cond_broadcast(&c->exited);
    pthread_mutex_unlock(&c->lock);
    return NULL;
}

svc_cancel *svc_cancel_start(int threads, int capacity)
{
    svc_cancel *c = calloc(1, sizeof(*c));
    if (!c)
        return NULL;
    c->ring = calloc((size_t)capacity, sizeof(*c->ring));
    c->threads = calloc((size_t)threads, sizeof(*c->threads));
    if (!c->ring || !c->threads) {
        free(c->ring);
        free(c->threads);
        free(c);
        return NULL;
    }
    c->capacity = capacity;
    pthread_mutex_init(&c->lock, NULL);
    pthread_cond_init(&c->wake, NULL);
    pthread_cond_init(&c->exited, NULL);
    for (int i = 0; i < threads; i++) {
        if (pthread_create(&c->threads[i], NULL, runner, c) != 0)
            break;
        pthread_mutex_lock(&c->lock);
        c->nthreads++;
        c->alive++;
        pthread_mutex_unlock(&c->lock);
    }
    if (c->nthreads == 0) {
        svc_cancel_stop(c, NULL, 0);
        return NULL;
    }
    return c;
}

bool svc_cancel_post(svc_cancel *c, svc_cancel_fn fn, void *arg)
{
    bool ok = false;
    pthread_mutex_lock(&c->lock);
    if (!c->stopping && c->len < c->capacity) {
        c->ring[(c->head + c->len) % c->capacity] = (task){fn, arg};
        c->len++;
        ok = true;
    }
    pthread_mutex_unlock(&c->lock);
    if (ok)
        pthread_cond_signal(&c->wake);
    return ok;
}

bool svc_cancel_stop(svc_cancel *c, void (*drop_fn)(void *arg), int wait_ms)
{
    struct timespec until;
    bool all_exited;

    if (!c)
        return true;
    until = svc_clock_deadline(wait_ms);
    pthread_mutex_lock(&c->lock);
    c->stopping = true;
    pthread_cond_broadcast(&c->wake);
    for (; c->len > 0; c->len--, c->head = (c->head + 1) % c->capacity)
        if (drop_fn)
            drop_fn(c->ring[c->head].arg);
    while (c->alive > 0)
        if (pthread_cond_timedwait(&c->exited, &c->lock, &until) == ETIMEDOUT)
            break;
    all_exited = c->alive == 0;
    pthread_mutex_unlock(&c->lock);
    if (!all_exited)
        return false; /* a cancel is stuck on the server: leave the runner to the exit */
    for (int i = 0; i < c->nthreads; i++)
        pthread_join(c->threads[i], NULL);
    pthread_mutex_destroy(&c->lock);
    pthread_cond_destroy(&c->wake);
    pthread_cond_destroy(&c->exited);
    free(c->ring);
    free(c->threads);
    free(c);
    return true;
}
