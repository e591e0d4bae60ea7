/*
 * svc_metrics: fanout's counters, gauges and histograms, rendered as Prometheus text (0.0.4).
 *
 * Threads: nothing on the hot path takes a lock.
 *   - Each worker owns one svc_worker_stats and is its only writer (relaxed atomic load+store,
 *     no read-modify-write needed); the loop thread sums them at scrape time.
 *   - The HTTP and batch counters and the batch histogram are written and read by the loop
 *     thread only.
 * Ownership: svc_metrics_new allocates everything, svc_metrics_free releases it; the pool gets
 * its workers' stats from svc_metrics_worker (the main pool) or svc_metrics_role (a role's pool)
 * and must stop before the metrics are freed.
 *
 * What covers which pool: the counters and histograms add up every pool's workers; the gauges
 * fanout_workers, fanout_workers_busy, fanout_db_connections and fanout_queue_depth describe the
 * main pool, as before there were role pools; fanout_role_db_connections describes each role's.
 */
#ifndef FANOUT_SVC_METRICS_H
#define FANOUT_SVC_METRICS_H

#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>

#include "db/buf.h"

/* Histogram bucket upper bounds, seconds (le="..."); +Inf is implied. */
#define SVC_HIST_BUCKETS 14

typedef struct svc_hist {
    _Atomic uint64_t bucket[SVC_HIST_BUCKETS + 1]; /* observations per bucket (not cumulative) */
    _Atomic uint64_t sum_ns;                       /* sum of observations, nanoseconds */
} svc_hist;

typedef enum svc_query_outcome {
    SVC_Q_OK = 0,          /* ran and returned its result */
    SVC_Q_SQL_ERROR,       /* the server (or fanout: COPY, empty query) refused it */
    SVC_Q_TIMEOUT,         /* the batch deadline passed first */
    SVC_Q_CANCELED,        /* the client left first */
    SVC_Q_DB_UNAVAILABLE,  /* no usable connection */
    SVC_Q_RESULT_TOO_LARGE, /* its result would push the reply past the limit */
    SVC_Q_NOT_RUN,         /* an earlier query of its transaction failed */
    SVC_Q_OUTCOMES
} svc_query_outcome;

typedef enum svc_batch_outcome {
    SVC_B_OK = 0,          /* every query succeeded (transaction: committed) */
    SVC_B_ERROR,           /* replied 200 with at least one failed query */
    SVC_B_OVERLOADED,      /* refused 503: the queue was full */
    SVC_B_DB_UNAVAILABLE,  /* refused 503: no live connection */
    SVC_B_TIMEOUT,         /* replied at its deadline (or at shutdown) with queries unfinished */
    SVC_B_CANCELED,        /* the client left before it finished */
    SVC_B_OUTCOMES
} svc_batch_outcome;

/* One worker's numbers; written only by that worker. Aligned so workers never share a line. */
typedef struct svc_worker_stats {
    _Alignas(64) _Atomic uint64_t queries[SVC_Q_OUTCOMES]; /* queries finished, by outcome */
    svc_hist query_duration;   /* one query's execution on the server, incl. encoding */
    svc_hist queue_wait;       /* from a job's queueing to a worker taking it */
    _Atomic uint64_t reconnects; /* successful connects after a lost connection */
    _Atomic uint64_t pipelines;  /* round trips that carried several queries */
    _Atomic uint64_t pipelined;  /* queries sent in those */
    _Atomic uint64_t batched;    /* batches in those that shared them with other batches */
    _Atomic uint64_t resent;     /* pipelined queries sent again after their shared read-only
                                    transaction failed (db_exec_pipeline) */
    _Atomic bool busy;         /* running a job right now */
    _Atomic bool connected;    /* holds a live connection */
} svc_worker_stats;

typedef struct svc_metrics svc_metrics;

svc_metrics *svc_metrics_new(int nworkers, const char *version);
void svc_metrics_free(svc_metrics *m);
svc_worker_stats *svc_metrics_worker(svc_metrics *m, int i);
/* Loop thread: the nworkers stats of the pool of a database role, made on the first call for
 * that role (the same ones after: a pool restarted for the role goes on counting in them).
 * NULL when out of memory. They live until svc_metrics_free. */
svc_worker_stats *svc_metrics_role(svc_metrics *m, const char *role, int nworkers);

/* Worker-side helpers (single writer). */
void svc_stat_inc(_Atomic uint64_t *counter);
void svc_stat_add(_Atomic uint64_t *counter, uint64_t n);
void svc_hist_observe(svc_hist *h, uint64_t ns);

/* Loop thread. */
void svc_metrics_http(svc_metrics *m, const char *path, int status);
void svc_metrics_batch(svc_metrics *m, bool transaction, svc_batch_outcome outcome, uint64_t ns);
/* Queries the loop thread gave up on (timeout, canceled): n more with that outcome. */
void svc_metrics_queries(svc_metrics *m, svc_query_outcome outcome, uint64_t n);

/* Loop thread: append the whole exposition; queue_depth is sampled by the caller. */
void svc_metrics_render(svc_metrics *m, db_buf *out, uint64_t queue_depth);

#endif
