/*
 * svc_cancel: a small, bounded set of threads that run cancel requests.
 *
 * libpq 15's PQcancel opens a new connection to the server and can block with no time limit
 * (a frozen server never answers). The loop thread must never block and a worker is busy waiting
 * on the very query to cancel, so cancels run here. A stuck cancel holds one of these threads,
 * never a batch's reply: replies come from the loop thread's timers regardless.
 *
 * Threads: svc_cancel_post may be called from any thread; tasks run on the canceller threads.
 * Ownership: a posted task's arg belongs to the task function (it frees it if it must).
 */
#ifndef FANOUT_SVC_CANCEL_H
#define FANOUT_SVC_CANCEL_H

#include <stdbool.h>

typedef struct svc_cancel svc_cancel;
typedef void (*svc_cancel_fn)(void *arg);

svc_cancel *svc_cancel_start(int threads, int capacity);

/* Queue fn(arg); false when the queue is full or stopping (fn is then not called, and the
 * caller still owns arg). Never blocks on a cancel in progress. */
bool svc_cancel_post(svc_cancel *c, svc_cancel_fn fn, void *arg)
    __attribute__((warn_unused_result));

/*
 * Stop: tasks not yet started are dropped, their args passed to drop_fn (when not NULL). Waits
 * up to wait_ms for cancels in progress; returns false (leaving the runner allocated) when one
 * is stuck, so the caller can exit anyway.
 */
bool svc_cancel_stop(svc_cancel *c, void (*drop_fn)(void *arg), int wait_ms);

#endif
