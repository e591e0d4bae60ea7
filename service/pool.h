/*
 * svc_pool: the worker threads, the job queue between them and the loop thread, and the
 * hand-back of finished batches to the loop thread.
 *
 * Threads and ownership:
 *   - Each worker owns one db_conn for its whole life: it connects, reconnects with capped
 *     exponential backoff when the connection breaks, and closes it on exit. No other thread
 *     ever calls libpq on it.
 *   - The loop thread calls svc_pool_submit; workers pop jobs from the bounded queue.
 *   - The worker that finishes a batch's last job pushes the batch onto the completion list and,
 *     only when the list was empty, activates the pool's libevent event (event_active is
 *     thread-safe after evthread_use_pthreads). The loop thread then takes the whole list under
 *     the lock and runs the done callback for each batch with the lock released. No wake-up is
 *     lost: a push after the take finds the list empty and activates again.
 *   - svc_pool_stop (loop thread, after the loop has stopped) closes the queue, joins the
 *     workers and frees everything.
 */
#ifndef FANOUT_SVC_POOL_H
#define FANOUT_SVC_POOL_H

#include <stdbool.h>
#include <stddef.h>

#include "config/config.h"
#include "service/batch.h"
#include "service/metrics.h"

struct event_base;
typedef struct svc_pool svc_pool;

/* Called on the loop thread for each finished batch; takes over the batch. */
typedef void (*svc_done_fn)(svc_batch *b, void *arg);

/* Start settings->workers workers. The settings must outlive the pool. NULL + err on failure. */
svc_pool *svc_pool_start(struct event_base *base, const cfg_settings *settings,
                         svc_metrics *metrics, svc_done_fn done, void *arg, char *err,
                         size_t errlen);

typedef enum svc_submit_status {
    SVC_SUBMITTED = 0,      /* the batch's jobs are queued; done will be called exactly once */
    SVC_OVERLOADED,         /* the queue cannot take all its jobs: nothing was queued */
    SVC_DB_UNAVAILABLE      /* no worker has a live connection: nothing was queued */
} svc_submit_status;

/* Loop thread: queue every job of b, or none. On refusal the caller still owns b. */
svc_submit_status svc_pool_submit(svc_pool *p, svc_batch *b) __attribute__((warn_unused_result));

/* Workers whose connection is live right now (any thread). */
int svc_pool_connected(svc_pool *p);

/* Jobs waiting for a worker (any thread). */
size_t svc_pool_queue_depth(svc_pool *p);

/* Any thread: ask a canceller to cancel, on the server, the job's query if the worker that
 * claimed it is still running it (job is RUNNING or was abandoned while RUNNING). */
void svc_pool_cancel(svc_pool *p, const svc_job *job);

/*
 * Loop thread, after the loop stopped: stop and join the workers (closing their connections),
 * fail the jobs nobody took, run the done callback for every batch still handed back, free all.
 * Returns false when a worker or canceller stayed stuck on a frozen server for seconds: the
 * pool is then left allocated for the process exit to reclaim.
 */
bool svc_pool_stop(svc_pool *p);

#endif
