/*
 * svc_batch: one POST /v1/batch from its parsed request to its reply.
 *
 * Life of a batch (see docs/DESIGN.md):
 *   loop thread: svc_flight_submit makes it, queues its jobs, arms its deadline and the watch on
 *                the client's socket
 *   workers:     each job claims itself (QUEUED -> RUNNING), fills its result slot(s), marks
 *                itself DONE, then decrements `remaining`
 *   the worker that brings `remaining` to 0 hands the batch back to the loop thread
 *   loop thread: replies (if nobody has yet) and frees it
 * When the deadline passes, the client leaves or shutdown runs out of time, the loop thread
 * abandons every job not yet DONE (QUEUED/RUNNING -> ABANDONED, one compare-and-swap each, so a
 * job's slot is claimed exactly once), asks the cancellers to stop the RUNNING ones on the
 * server, and replies at once with an error in their place. The batch itself lives on until
 * `remaining` reaches 0: a worker never touches freed memory.
 *
 * Ownership and threads:
 *   - `req`, the events and the flight links are touched only by the loop thread.
 *   - `desc` is written by nobody after svc_batch_new; workers only read it.
 *   - slots[i] is written only by the worker running the job that owns query i (in transaction
 *     mode one job owns every slot); the loop thread reads it only when that job is DONE (the
 *     state's release/acquire orders the writes before the read).
 *   - The loop thread frees the batch, only after `remaining` hit 0.
 */
#ifndef FANOUT_SVC_BATCH_H
#define FANOUT_SVC_BATCH_H

#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>
#include <time.h>

#include "db/buf.h"
#include "db/conn.h"
#include "http/request.h"
#include "service/metrics.h"

struct evhttp_request;
struct svc_speed;
struct event;
typedef struct svc_batch svc_batch;

typedef enum svc_job_state {
    SVC_JOB_QUEUED = 0, /* waiting in the queue */
    SVC_JOB_RUNNING,    /* a worker claimed it and is running it */
    SVC_JOB_COMMITTING, /* running, and its transaction's COMMIT has gone out: abandoned now,
                           it may still commit */
    SVC_JOB_DONE,       /* its slots are final */
    SVC_JOB_ABANDONED   /* the loop thread gave up on it: a worker skips or discards it */
} svc_job_state;

/* One unit of work for a worker: one query (parallel mode) or the whole batch (transaction). */
typedef struct svc_job {
    svc_batch *batch;       /* the batch this job belongs to (not owned) */
    int index;              /* the query's index; in transaction mode 0, and the job runs them all */
    bool pipelinable;       /* may share a pipeline with the batch's other such jobs (parallel,
                               db_sql_pipelinable) */
    bool reads;             /* pipelinable and only reads (db_sql_reads) */
    bool quick;             /* pipelinable and known to be quick (svc_speed), set at submit */
    uint64_t sql_hash;      /* db_sql_hash of its statement, when pipelinable: the key of
                               svc_speed and of the connection's statement cache */
    _Atomic int state;      /* svc_job_state; the one claim point between a worker and the loop */
    int worker;             /* the worker running it (written before the claim to RUNNING) */
    uint64_t run_seq;       /* that worker's run number for it, so a late cancel cannot hit the
                               worker's next job (written before the claim to RUNNING) */
    struct timespec queued; /* when it entered the queue (CLOCK_MONOTONIC) */
} svc_job;

typedef enum svc_batch_phase {
    SVC_BATCH_RUNNING = 0, /* no reply sent yet */
    SVC_BATCH_REPLIED      /* replied (or completed for a client that left); jobs may still run */
} svc_batch_phase;

struct svc_batch {
    struct evhttp_request *req; /* the client's request until replied; loop thread only */
    http_batch_req *desc;       /* the parsed request, owned; read-only once queued */
    struct timespec started;    /* when the request was accepted (CLOCK_MONOTONIC) */
    db_buf *slots;              /* desc->nqueries result objects as JSON text, owned */
    svc_job *jobs;              /* njobs jobs, owned */
    int njobs;                  /* desc->nqueries in parallel mode, 1 in transaction mode */
    bool quick_reads;           /* every job quick and only reading, set at submit (before the
                                   push): a worker may run it in one pipeline with other such
                                   batches, each followed by the session reset */
    atomic_int remaining;       /* jobs not yet released by a worker; 0 hands the batch back */
    atomic_int failures;        /* queries that did not succeed (for the batch outcome metric) */
    _Atomic size_t reply_bytes; /* result bytes accepted into the reply (max_response_bytes) */
    size_t max_reply_bytes;     /* setting max_response_bytes; read-only once queued */
    bool committed;             /* transaction mode: COMMIT succeeded (written by its worker) */
    db_buf commit_error;        /* transaction mode: COMMIT's error object, empty if none */
    struct svc_pool *pool;      /* the pool its jobs were queued on (svc_pool_submit); not owned */
    svc_batch *next;            /* link in the pool's completion list (guarded by its lock) */
    /* Loop thread only: */
    svc_batch_phase phase;      /* replied yet? */
    struct event *deadline;     /* fires at started + timeout_ms */
    struct event *watch;        /* fires when the client's socket closes */
    svc_batch *prev_live, *next_live; /* the flight's list of batches not yet replied */
    void *flight;               /* the svc_flight that owns it */
};

/* Make a batch for req; takes over desc even on failure. NULL when out of memory. */
svc_batch *svc_batch_new(struct evhttp_request *req, http_batch_req *desc);
void svc_batch_free(svc_batch *b);

/* Worker side: claim a popped job (QUEUED -> RUNNING); false when it was abandoned. */
bool svc_job_claim(svc_job *job, int worker, uint64_t run_seq);
/* Worker side: about to send a transaction's COMMIT (RUNNING -> COMMITTING); false when the job
 * was abandoned (roll back instead). */
bool svc_job_committing(svc_job *job);
/* Worker side: publish a finished job (RUNNING or COMMITTING -> DONE); false when it was
 * abandoned meanwhile (its slots are then ignored). */
bool svc_job_finish(svc_job *job);

/* Worker side: run one claimed job on the worker's connection, filling the job's slot(s), then
 * publish it (svc_job_finish) and its query counts. Returns false when the connection was
 * found broken (the slots say db_unavailable). */
bool svc_job_run(svc_job *job, db_conn *conn, svc_worker_stats *stats);

/*
 * Worker side: run n claimed pipelinable jobs in one pipeline on the worker's connection
 * (db_exec_pipeline): one batch's, or several quick_reads batches' (each batch's jobs in a
 * row), the session reset behind each batch's when reset, and publish each
 * as soon as its result is final (a deadline then keeps it), and each statement's duration to
 * `speed`. *reset_ok says whether the reset succeeded. *cancels counts the cancels sent to this
 * run so far (by the deadline of a batch in it; from a canceller thread).
 * Returns false when the connection was found broken.
 */
bool svc_job_run_pipeline(svc_job *const *jobs, int n, db_conn *conn, svc_worker_stats *stats,
                          bool reset, bool *reset_ok, struct svc_speed *speed,
                          const atomic_uint *cancels);

/* Fill a claimed job's slots with a db_unavailable error without touching the database, and
 * publish it. */
void svc_job_fail(svc_job *job, const char *message, svc_worker_stats *stats);

/*
 * Loop thread: abandon every job not yet DONE. Returns how many queries lost their result; jobs
 * that were RUNNING are reported through on_running (to cancel them on the server).
 */
int svc_batch_abandon(svc_batch *b, void (*on_running)(svc_job *job, void *arg), void *arg);

/*
 * Loop thread: send the 200 reply: each DONE job's slots in order, and for the others
 * {"error":{"code":code,"message":message}}. Completes b->req. Returns the batch's age in
 * nanoseconds when the reply was assembled.
 */
uint64_t svc_batch_reply(svc_batch *b, const char *code, const char *message);

#endif
