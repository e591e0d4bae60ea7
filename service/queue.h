/*
 * svc_queue: the bounded job queue between the loop thread (producer) and the workers
 * (consumers). A ring of opaque pointers behind one mutex, a semaphore per blocked consumer;
 * the lock is held only to move pointers, never across I/O. It can hold limited items (quick
 * jobs) to a few consumers at once (svc_queue_limit).
 *
 * Ownership: the queue never owns what it carries; a pointer popped belongs to the popper.
 */
#ifndef FANOUT_SVC_QUEUE_H
#define FANOUT_SVC_QUEUE_H

#include <stdbool.h>
#include <stddef.h>

typedef struct svc_queue svc_queue;

/*
 * A consumer's hold on one of the queue's limited slots (svc_queue_limit). Owned by the consumer
 * (a worker keeps one for its life and gives it back with svc_queue_leave when it stops); every
 * field belongs to the queue's lock.
 */
typedef struct svc_queue_slot {
    bool held;                   /* counted against the limit */
    long long since_ns;          /* when it was taken, CLOCK_MONOTONIC */
    bool ticked;                 /* its consumer's last wait timed out (an idle tick) */
    struct svc_queue_slot *next; /* in the queue's list of held slots */
} svc_queue_slot;

svc_queue *svc_queue_new(size_t capacity);

/* A consumer that stops for good gives its slot back: the limit no longer counts it, and the
 * queue no longer points at it (before the memory holding the slot goes). */
void svc_queue_leave(svc_queue *q, svc_queue_slot *slot);

/*
 * Before the first push: at most `limit` consumers at once run items that `limited` says are
 * limited. A push of limited items wakes idle consumers only while fewer hold a slot; the items
 * wait for a holder to come back for more instead. A slot held longer than stale_ms no longer
 * counts (its item turned out slow: a lock wait, say), so waiting items are not stuck behind it;
 * svc_queue_kick applies that when no push comes. limit 0: no limit (the default).
 */
void svc_queue_limit(svc_queue *q, size_t limit, int stale_ms, bool (*limited)(const void *item));

/* Wake idle consumers for waiting limited items that the holders' slots, some of them stale
 * now, leave room for. Returns whether limited items still wait (call again in stale_ms). */
bool svc_queue_kick(svc_queue *q);
void svc_queue_free(svc_queue *q); /* after every consumer has returned from svc_queue_pop */

/*
 * Push pointers to n consecutive elements of `size` bytes starting at first (a batch's jobs
 * array), all or none: a batch is queued whole or refused whole (overload), never half. Wakes
 * at most `wake` idle consumers (the ones the items need: fewer when consumers take runs).
 * Returns false when they do not fit or the queue is closed. Never blocks on a full queue.
 */
bool svc_queue_push_all(svc_queue *q, void *first, size_t size, size_t n, size_t wake)
    __attribute__((warn_unused_result));

/* Whether limited items wait with no consumer woken for them: then call svc_queue_kick in
 * stale_ms, or they may wait for a stale slot. Any thread. */
bool svc_queue_waiting_limited(svc_queue *q);

/* How the item at the front may join the run a consumer is taking (see svc_queue_pop_run). */
typedef enum svc_queue_join {
    SVC_JOIN_NO = 0,   /* not at all: the run ends before it */
    SVC_JOIN_IF_SPARE, /* only when no idle or already woken consumer would take it: the
                          consumer takes at most its even share of the waiting items */
    SVC_JOIN_ALWAYS    /* yes: it is cheaper in this run than on another consumer */
} svc_queue_join;

/* Block until an item is available and return it; NULL once the queue is closed and empty. */
void *svc_queue_pop(svc_queue *q);

/* Like svc_queue_pop, but give up after timeout_ms: NULL with *closed false then (workers wake
 * at least once a second to check their idle connection). */
void *svc_queue_pop_timed(svc_queue *q, int timeout_ms, bool *closed);

/*
 * Like svc_queue_pop_timed (timeout_ms 0: do not wait), but take a run: the oldest item, then up
 * to max - 1 more from the front as joins(first, next) allows. Returns how many went to items.
 * The consumer's slot (may be NULL) is given back first, and held again for a run of limited
 * items: hold it for as long as they run.
 */
size_t svc_queue_pop_run(svc_queue *q, int timeout_ms, bool *closed, void **items, size_t max,
                         svc_queue_join (*joins)(const void *first, const void *next),
                         svc_queue_slot *slot);

/* Wake every waiting consumer; later pushes fail, pops drain what is left then return NULL. */
void svc_queue_close(svc_queue *q);

size_t svc_queue_depth(svc_queue *q);

#endif
