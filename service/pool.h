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
 *     only when the list was empty, writes the pool's eventfd; the loop thread watches it with
 *     a libevent event, so no worker touches a libevent object. The loop thread reads the
 *     eventfd, then takes the whole list under the lock and runs the done callback for each
 *     batch with the lock released. No wake-up is lost: a push after the take finds the list
 *     empty and writes again.
 *   - svc_pool_stop (loop thread, after the loop has stopped) closes the queue, joins the
 *     workers and frees everything.
 *
 * A pool logs in as the conninfo (setting database) says, or as a token's role (svc_pools starts
 * one per role on demand). A pool started on demand takes batches before its first connections
 * are made: they wait in the queue (within their deadline) instead of being refused, and fail
 * with db_unavailable naming the reason if the login fails.
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

typedef struct svc_pool_opts {
    int workers;             /* worker threads, each with one connection, >= 1 */
    svc_worker_stats *stats; /* `workers` entries, one per worker; must outlive the pool */
    const char *role;        /* log in as this role (db_conn_params.user), or NULL; copied */
    bool on_demand;          /* started for a waiting batch: queue batches until a first
                                connect attempt has failed, rather than refuse them */
    int quick_workers;       /* most workers on quick statements at once; 0: no limit */
} svc_pool_opts;

/* Start the workers; they connect in the background. The settings must outlive the pool. NULL +
 * err on failure. */
svc_pool *svc_pool_start(struct event_base *base, const cfg_settings *settings,
                         const svc_pool_opts *opts, svc_done_fn done, void *arg, char *err,
                         size_t errlen);

typedef enum svc_submit_status {
    SVC_SUBMITTED = 0,      /* the batch's jobs are queued; done will be called exactly once */
    SVC_OVERLOADED,         /* the queue cannot take all its jobs: nothing was queued */
    SVC_DB_UNAVAILABLE      /* no worker has a live connection: nothing was queued */
} svc_submit_status;

/* Loop thread: queue every job of b, or none, and note the pool in b->pool. On refusal the caller
 * still owns b. */
svc_submit_status svc_pool_submit(svc_pool *p, svc_batch *b) __attribute__((warn_unused_result));

/* Why the pool has no connection, for a db_unavailable reply: the main pool's fixed text, or for
 * a role's pool the role and the server's reason for the last failed login (no secret: libpq's
 * messages never hold a password). Any thread. */
void svc_pool_unavailable(svc_pool *p, char *buf, size_t len);

/* Workers whose connection is live right now (any thread). */
int svc_pool_connected(svc_pool *p);

/* Jobs waiting for a worker (any thread). */
size_t svc_pool_queue_depth(svc_pool *p);

/* Any thread: ask a canceller to cancel, on the server, the job's query if the worker that
 * claimed it is still running it (job is RUNNING or was abandoned while RUNNING). */
void svc_pool_cancel(svc_pool *p, const svc_job *job);

/* Loop thread, after the loop stopped: tell the workers to stop and wake them, without waiting.
 * Calling it on every pool before svc_pool_stop lets all their workers wind down at once. */
void svc_pool_stop_begin(svc_pool *p);

/*
 * Loop thread, after the loop stopped: stop and join the workers (closing their connections),
 * fail the jobs nobody took, run the done callback for every batch still handed back, free all.
 * Returns false when a worker or canceller stayed stuck on a frozen server for seconds: the
 * pool is then left allocated for the process exit to reclaim.
 */
bool svc_pool_stop(svc_pool *p);

#endif
