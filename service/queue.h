/*
 * svc_queue: the bounded job queue between the loop thread (producer) and the workers
 * (consumers). A ring of opaque pointers behind one mutex and one condition variable; the lock
 * is held only to move pointers, never across I/O.
 *
 * Ownership: the queue never owns what it carries; a pointer popped belongs to the popper.
 */
#ifndef FANOUT_SVC_QUEUE_H
#define FANOUT_SVC_QUEUE_H

#include <stdbool.h>
#include <stddef.h>

typedef struct svc_queue svc_queue;

svc_queue *svc_queue_new(size_t capacity);
void svc_queue_free(svc_queue *q); /* after every consumer has returned from svc_queue_pop */

/*
 * Push pointers to n consecutive elements of `size` bytes starting at first (a batch's jobs
 * array), all or none: a batch is queued whole or refused whole (overload), never half. Wakes
 * at most `wake` idle consumers (the ones the items need: fewer when consumers take runs).
 * Returns false when they do not fit or the queue is closed. Never blocks on a full queue.
 */
bool svc_queue_push_all(svc_queue *q, void *first, size_t size, size_t n, size_t wake)
    __attribute__((warn_unused_result));

/* How the item at the front may join the run a consumer is taking (see svc_queue_pop_run). */
typedef enum svc_queue_join {
    SVC_JOIN_NO = 0,   /* not at all: the run ends before it */
    SVC_JOIN_IF_SPARE, /* only when no idle or already woken consumer would take it */
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
 */
size_t svc_queue_pop_run(svc_queue *q, int timeout_ms, bool *closed, void **items, size_t max,
                         svc_queue_join (*joins)(const void *first, const void *next));

/* Wake every waiting consumer; later pushes fail, pops drain what is left then return NULL. */
void svc_queue_close(svc_queue *q);

size_t svc_queue_depth(svc_queue *q);

#endif
