/*
 * svc_batch: one POST /v1/batch from its parsed request to its reply.
 *
 * Life of a batch (see docs/DESIGN.md):
 *   loop thread: svc_batch_new (from the parsed request) -> svc_pool_submit queues its jobs
 *   workers:     each job fills its own result slot(s), then decrements `remaining`
 *   the worker that brings `remaining` to 0 hands the batch back to the loop thread
 *   loop thread: svc_batch_reply assembles and sends the reply, then svc_batch_free
 *
 * Ownership and threads:
 *   - `req` (the evhttp request) and the reply are touched only by the loop thread.
 *   - `desc` is written by nobody after svc_batch_new; workers only read it.
 *   - slots[i] is written only by the worker running the job that owns query i (in transaction
 *     mode one job owns every slot), and read by the loop thread only after `remaining` hit 0
 *     (the atomic decrement orders the writes before the read).
 *   - The loop thread frees the batch; by then no job refers to it (remaining == 0).
 */
#ifndef FANOUT_SVC_BATCH_H
#define FANOUT_SVC_BATCH_H

#include <stdatomic.h>
#include <stdbool.h>
#include <time.h>

#include "db/buf.h"
#include "db/conn.h"
#include "http/request.h"
#include "service/metrics.h"

struct evhttp_request;
typedef struct svc_batch svc_batch;

/* One unit of work for a worker: one query (parallel mode) or the whole batch (transaction). */
typedef struct svc_job {
    svc_batch *batch;     /* the batch this job belongs to (not owned) */
    int index;            /* the query's index; in transaction mode 0, and the job runs them all */
    struct timespec queued; /* when it entered the queue (CLOCK_MONOTONIC) */
} svc_job;

struct svc_batch {
    struct evhttp_request *req; /* the client's request; loop thread only */
    http_batch_req *desc;       /* the parsed request, owned; read-only once queued */
    struct timespec started;    /* when the request was accepted (CLOCK_MONOTONIC) */
    db_buf *slots;              /* desc->nqueries result objects as JSON text, owned */
    svc_job *jobs;              /* njobs jobs, owned */
    int njobs;                  /* desc->nqueries in parallel mode, 1 in transaction mode */
    atomic_int remaining;       /* jobs not yet finished; the worker taking it to 0 completes */
    atomic_int failures;        /* queries that did not succeed (for the batch outcome metric) */
    bool committed;             /* transaction mode: COMMIT succeeded (written by its worker) */
    db_buf commit_error;        /* transaction mode: COMMIT's error object, empty if none */
    svc_batch *next;            /* link in the pool's completion list (guarded by its lock) */
};

/* Make a batch for req; takes over desc even on failure. NULL when out of memory. */
svc_batch *svc_batch_new(struct evhttp_request *req, http_batch_req *desc);
void svc_batch_free(svc_batch *b);

/* Worker side: run one job on the worker's connection, filling the job's slot(s). Returns
 * false when the connection was found broken (the slots say db_unavailable). */
bool svc_job_run(svc_job *job, db_conn *conn, svc_worker_stats *stats);

/* Worker side: fill a job's slots with a db_unavailable error without touching the database. */
void svc_job_fail(svc_job *job, const char *message, svc_worker_stats *stats);

/* Loop thread: send the 200 reply with every slot in order. Completes b->req. Returns the
 * batch's age in nanoseconds when the reply was assembled. */
uint64_t svc_batch_reply(svc_batch *b);

#endif
