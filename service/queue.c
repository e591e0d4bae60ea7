/*
 * svc_queue: bounded ring of pointers. Locking: `lock` guards every field below it; consumers
 * wait on `nonempty`. One signal per pushed item (broadcast for a whole batch would wake every
 * worker for a one-job batch).
 */
#include "service/queue.h"

#include "service/clock.h"

#include <errno.h>
#include <pthread.h>
#include <stdlib.h>
#include <time.h>

struct svc_queue {
    pthread_mutex_t lock;
    pthread_cond_t nonempty; /* signalled when an item is pushed or the queue closes */
    void **ring;             /* capacity slots */
    size_t capacity;         /* slots in ring */
    size_t head;             /* index of the oldest item */
    size_t len;              /* items queued */
    bool closed;             /* no more pushes; consumers drain and leave */
};

svc_queue *svc_queue_new(size_t capacity)
{
    svc_queue *q = calloc(1, sizeof(*q));
    if (!q)
        return NULL;
    q->ring = calloc(capacity, sizeof(*q->ring));
    if (!q->ring) {
        free(q);
        return NULL;
    }
    q->capacity = capacity;
    pthread_mutex_init(&q->lock, NULL);
    pthread_cond_init(&q->nonempty, NULL);
    return q;
}

void svc_queue_free(svc_queue *q)
{
    if (!q)
        return;
    pthread_mutex_destroy(&q->lock);
    pthread_cond_destroy(&q->nonempty);
    free(q->ring);
    free(q);
}

bool svc_queue_push_all(svc_queue *q, void *first, size_t size, size_t n)
{
    bool ok = false;
    pthread_mutex_lock(&q->lock);
    if (!q->closed && q->capacity - q->len >= n) {
        for (size_t i = 0; i < n; i++)
            q->ring[(q->head + q->len + i) % q->capacity] = (char *)first + i * size;
        q->len += n;
        ok = true;
    }
    pthread_mutex_unlock(&q->lock);
    /* Wake at most one worker per job, and no more than there are jobs. */
    for (size_t i = 0; ok && i < n; i++)
        pthread_cond_signal(&q->nonempty);
    return ok;
}

void *svc_queue_pop(svc_queue *q)
{
    void *item = NULL;
    pthread_mutex_lock(&q->lock);
    while (q->len == 0 && !q->closed)
        pthread_cond_wait(&q->nonempty, &q->lock);
    if (q->len > 0) {
        item = q->ring[q->head];
        q->head = (q->head + 1) % q->capacity;
        q->len--;
    }
    pthread_mutex_unlock(&q->lock);
    return item;
}

void *svc_queue_pop_timed(svc_queue *q, int timeout_ms, bool *closed)
{
    struct timespec until = svc_clock_deadline(timeout_ms);
    void *item = NULL;

    pthread_mutex_lock(&q->lock);
    while (q->len == 0 && !q->closed)
        if (pthread_cond_timedwait(&q->nonempty, &q->lock, &until) == ETIMEDOUT)
            break;
    if (q->len > 0) {
        item = q->ring[q->head];
        q->head = (q->head + 1) % q->capacity;
        q->len--;
    }
    *closed = item == NULL && q->closed;
    pthread_mutex_unlock(&q->lock);
    return item;
}

void svc_queue_close(svc_queue *q)
{
    pthread_mutex_lock(&q->lock);
    q->closed = true;
    pthread_mutex_unlock(&q->lock);
    pthread_cond_broadcast(&q->nonempty);
}

size_t svc_queue_depth(svc_queue *q)
{
    pthread_mutex_lock(&q->lock);
    size_t n = q->len;
    pthread_mutex_unlock(&q->lock);
    return n;
}
