/*
 * svc_queue: bounded ring of pointers. Locking: `lock` guards every field below it.
 *
 * Wake-ups are handed to one consumer each: a consumer about to block puts a waiter (its own
 * semaphore) on the idle stack; a push takes one waiter off the stack per item, at most, and
 * posts its semaphore. So `idle` counts exactly the consumers blocked and not yet woken, and
 * `woken` those woken and on their way, which svc_queue_pop_run needs to decide how much work
 * one consumer may take; and no more wake-ups are sent than there is work for. (A condition
 * variable signalled once per item lost wake-ups here: glibc 2.36's pthread_cond_signal can fail
 * to wake a waiter, glibc bug 25847, which showed as 0.5 s stalls until the idle timeout.) Most
 * recently idle first: its cache is warm (a consumer back from an idle tick waits at the bottom).
 *
 * The limit (svc_queue_limit): consumers running limited items hold a slot (svc_queue_slot, on
 * the `held` list). A push of limited items wakes consumers only while fewer than `limit` slots
 * are held and fresh; the woken hold theirs from the wake-up. A consumer that finds a limited
 * item at the front and no room leaves it for the holders, who take it when they come back.
 */
#include "service/queue.h"

#include "service/clock.h"

#include <errno.h>
#include <pthread.h>
#include <semaphore.h>
#include <stdlib.h>
#include <time.h>

/* A consumer blocked in a pop; lives on that consumer's stack for the wait. */
typedef struct waiter {
    sem_t wake;            /* posted once when it is taken off the idle stack */
    bool woken;            /* taken off the stack (under the queue's lock) */
    svc_queue_slot *slot;  /* the consumer's, or NULL: held for it when woken for limited items */
    struct waiter *next;   /* next on the idle stack */
} waiter;

struct svc_queue {
    pthread_mutex_t lock;
    void **ring;             /* capacity slots */
    size_t capacity;         /* slots in ring */
    size_t head;             /* index of the oldest item */
    size_t len;              /* items queued */
    waiter *idle_top;        /* consumers blocked and not yet woken, most recent first */
    size_t idle;             /* how many */
    size_t woken;            /* consumers woken by a push that have not taken the lock since */
    bool closed;             /* no more pushes; consumers drain and leave */
    size_t limit;            /* most fresh slots held at once; 0: no limit (svc_queue_limit) */
    long long stale_ns;      /* a slot held longer no longer counts */
    bool (*limited)(const void *item);
    svc_queue_slot *held;    /* slots held, any order */
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
    return q;
}

void svc_queue_free(svc_queue *q)
{
    if (!q)
        return;
    pthread_mutex_destroy(&q->lock);
    free(q->ring);
    free(q);
}

void svc_queue_limit(svc_queue *q, size_t limit, int stale_ms, bool (*limited)(const void *item))
{
    pthread_mutex_lock(&q->lock);
    q->limit = limited ? limit : 0;
    q->stale_ns = (long long)stale_ms * 1000000LL;
    q->limited = limited;
    pthread_mutex_unlock(&q->lock);
}

static void hold(svc_queue *q, svc_queue_slot *s, long long now)
{
    s->since_ns = now;
    if (s->held)
        return;
    s->held = true;
    s->next = q->held;
    q->held = s;
}

static void unhold(svc_queue *q, svc_queue_slot *s)
{
    if (!s || !s->held)
        return;
    svc_queue_slot **p = &q->held;
    while (*p != s)
        p = &(*p)->next;
    *p = s->next;
    s->held = false;
}

void svc_queue_leave(svc_queue *q, svc_queue_slot *slot)
{
    pthread_mutex_lock(&q->lock);
    unhold(q, slot);
    pthread_mutex_unlock(&q->lock);
}

/* How many more consumers may take limited items now (lock held): the limit less the slots
 * held and not yet stale. */
static size_t room(const svc_queue *q, long long now)
{
    size_t fresh = 0;
    for (const svc_queue_slot *s = q->held; s; s = s->next)
        fresh += now - s->since_ns < q->stale_ns;
    return fresh < q->limit ? q->limit - fresh : 0;
}

/* Must this consumer leave the limited item at the front to the slots' holders (lock held)?
 * When the limit has no room, unless it was woken for it (its slot is held). Once the queue
 * is closed everyone drains it: a consumer that finds nothing for it leaves. */
static bool held_back(svc_queue *q, const svc_queue_slot *slot)
{
    return slot && !slot->held && q->limit > 0 && !q->closed && q->len > 0 &&
           q->limited(q->ring[q->head]) && room(q, svc_clock_now_ns()) == 0;
}

/* Take the oldest item; lock held, len > 0. */
static void *take(svc_queue *q)
{
    void *item = q->ring[q->head];
    q->head = (q->head + 1) % q->capacity;
    q->len--;
    return item;
}

/* Wake up to n idle consumers (lock held); the posts happen after the unlock, so the stack
 * is cut here and returned. Woken for limited items, each holds a slot from now. */
static waiter *pick_idle(svc_queue *q, size_t n, bool limited, long long now)
{
    waiter *first = q->idle_top, *last = NULL;
    for (size_t i = 0; i < n && q->idle_top; i++) {
        last = q->idle_top;
        last->woken = true;
        if (limited && last->slot)
            hold(q, last->slot, now);
        q->idle_top = last->next;
        q->idle--;
        q->woken++;
    }
    if (!last)
        return NULL;
    last->next = NULL;
    return first;
}

static void post_all(waiter *w)
{
    while (w) {
        waiter *next = w->next; /* read first: once posted, w may leave the waiter's stack */
        sem_post(&w->wake);
        w = next;
    }
}

bool svc_queue_push_all(svc_queue *q, void *first, size_t size, size_t n, size_t wake_max)
{
    bool ok = false;
    waiter *wake = NULL;
    pthread_mutex_lock(&q->lock);
    if (!q->closed && q->capacity - q->len >= n) {
        for (size_t i = 0; i < n; i++)
            q->ring[(q->head + q->len + i) % q->capacity] = (char *)first + i * size;
        q->len += n;
        ok = true;
        /* a busy consumer looks at the queue before it blocks */
        size_t want = wake_max < n ? wake_max : n;
        bool limited = q->limit > 0;
        for (size_t i = 0; limited && i < n; i++)
            limited = q->limited((char *)first + i * size);
        long long now = limited ? svc_clock_now_ns() : 0;
        size_t r = limited ? room(q, now) : want;
        if (want > r)
            want = r; /* the holders come back for the rest */
        wake = pick_idle(q, want, limited, now);
    }
    pthread_mutex_unlock(&q->lock);
    post_all(wake);
    return ok;
}

/* Limited items at the front with no consumer woken for them (lock held). */
static bool limited_waiting(const svc_queue *q)
{
    return q->limit > 0 && q->len > q->woken && q->limited(q->ring[q->head]);
}

bool svc_queue_waiting_limited(svc_queue *q)
{
    pthread_mutex_lock(&q->lock);
    bool waiting = limited_waiting(q);
    pthread_mutex_unlock(&q->lock);
    return waiting;
}

bool svc_queue_kick(svc_queue *q)
{
    waiter *wake = NULL;
    bool waiting = false;
    pthread_mutex_lock(&q->lock);
    if (limited_waiting(q)) {
        long long now = svc_clock_now_ns();
        size_t want = q->len - q->woken, r = room(q, now);
        wake = pick_idle(q, want < r ? want : r, true, now);
        waiting = true;
    }
    pthread_mutex_unlock(&q->lock);
    post_all(wake);
    return waiting;
}

/*
 * Block (lock held, released while asleep) until woken or until `until` passes. A consumer
 * that times out just as a push picked it still owes that post a wait, or its semaphore
 * would be destroyed with a post in flight.
 */
static void wait_idle(svc_queue *q, const struct timespec *until, svc_queue_slot *slot)
{
    waiter w = {.woken = false, .slot = slot};
    sem_init(&w.wake, 0, 0);
    /* After an idle tick, back at the bottom: the stack stays most recently busy first, so the
     * next wake-up goes to a worker whose thread and backend are still warm. */
    waiter **at = &q->idle_top;
    while (slot && slot->ticked && *at)
        at = &(*at)->next;
    w.next = *at;
    *at = &w;
    q->idle++;
    pthread_mutex_unlock(&q->lock);
    int rc;
    do
        rc = until ? sem_timedwait(&w.wake, until) : sem_wait(&w.wake);
    while (rc != 0 && errno == EINTR);
    pthread_mutex_lock(&q->lock);
    if (w.woken)
        q->woken--;
    if (slot)
        slot->ticked = !w.woken;
    if (!w.woken) { /* timed out: still on the stack */
        waiter **p = &q->idle_top;
        while (*p != &w)
            p = &(*p)->next;
        *p = w.next;
        q->idle--;
    } else if (rc != 0) { /* picked while timing out: take the post it was sent */
        pthread_mutex_unlock(&q->lock);
        while (sem_wait(&w.wake) != 0)
            ;
        pthread_mutex_lock(&q->lock);
    }
    sem_destroy(&w.wake);
}

size_t svc_queue_pop_run(svc_queue *q, int timeout_ms, bool *closed, void **items, size_t max,
                         svc_queue_join (*joins)(const void *first, const void *next),
                         svc_queue_slot *slot)
{
    struct timespec until = svc_clock_deadline(timeout_ms);
    size_t n = 0;

    pthread_mutex_lock(&q->lock);
    unhold(q, slot); /* its last run is over; a push may hold it again while it waits */
    if ((q->len == 0 || held_back(q, slot)) && !q->closed && timeout_ms > 0)
        wait_idle(q, &until, slot); /* once: a wake-up with nothing left is an idle tick too */
    if (q->len > 0 && !held_back(q, slot)) {
        items[n++] = take(q);
        /* Consumers that would take what is left: idle or woken, and for limited items no
         * more than the limit leaves room for. */
        size_t spare = q->idle + q->woken;
        if (q->limit > 0 && q->limited(items[0])) {
            size_t r = room(q, svc_clock_now_ns());
            spare = r < spare ? r : spare;
        }
        /* IF_SPARE items are shared out: this consumer takes no more than its even part of
         * what waits, the spare ones the rest (a pipeline runs its statements in a row). */
        size_t fair = (q->len + 1 + spare) / (spare + 1);
        while (n < max && q->len > 0 && joins) {
            svc_queue_join j = joins(items[0], q->ring[q->head]);
            if (j == SVC_JOIN_NO || (j == SVC_JOIN_IF_SPARE && (q->len <= spare || n >= fair)))
                break;
            items[n++] = take(q);
        }
    }
    if (slot && n > 0 && q->limit > 0 && q->limited(items[0]))
        hold(q, slot, svc_clock_now_ns()); /* (again, or still: woken for it) */
    else
        unhold(q, slot);
    *closed = n == 0 && q->closed;
    pthread_mutex_unlock(&q->lock);
    return n;
}

void *svc_queue_pop_timed(svc_queue *q, int timeout_ms, bool *closed)
{
    void *item = NULL;
    return svc_queue_pop_run(q, timeout_ms, closed, &item, 1, NULL, NULL) ? item : NULL;
}

void *svc_queue_pop(svc_queue *q)
{
    void *item = NULL;
    pthread_mutex_lock(&q->lock);
    while (q->len == 0 && !q->closed)
        wait_idle(q, NULL, NULL);
    if (q->len > 0)
        item = take(q);
    pthread_mutex_unlock(&q->lock);
    return item;
}

void svc_queue_close(svc_queue *q)
{
    pthread_mutex_lock(&q->lock);
    q->closed = true;
    waiter *wake = pick_idle(q, q->idle, false, 0);
    pthread_mutex_unlock(&q->lock);
    post_all(wake);
}

size_t svc_queue_depth(svc_queue *q)
{
    pthread_mutex_lock(&q->lock);
    size_t n = q->len;
    pthread_mutex_unlock(&q->lock);
    return n;
}
