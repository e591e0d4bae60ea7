/*
 * svc_pool: worker threads, each owning one PostgreSQL connection; see pool.h for the thread
 * rules. Locking: `done_lock` guards `done_head` only; `stop_lock` + `stop_cond` let a worker
 * sleep through a reconnect backoff yet wake at once for shutdown. No lock is held across a
 * database call.
 */
#include "service/pool.h"

#include <errno.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <event2/event.h>

#include "db/conn.h"
#include "service/log.h"
#include "service/queue.h"

#define BACKOFF_MIN_MS 100
#define BACKOFF_MAX_MS 5000

typedef struct worker {
    svc_pool *pool;     /* the pool it belongs to */
    svc_worker_stats *stats; /* its own numbers (only it writes them) */
    pthread_t thread;   /* its thread */
    int id;             /* 0-based, for log lines */
    bool started;       /* thread was created (so stop joins it) */
} worker;

struct svc_pool {
    const cfg_settings *settings; /* not owned; outlives the pool */
    svc_metrics *metrics;         /* not owned; outlives the pool */
    svc_queue *queue;             /* jobs waiting for a worker */
    worker *workers;              /* settings->workers entries */
    atomic_int connected;         /* workers with a live connection */
    atomic_bool stopping;         /* set once by svc_pool_stop */
    pthread_mutex_t stop_lock;    /* with stop_cond: interruptible backoff sleeps */
    pthread_cond_t stop_cond;
    pthread_mutex_t done_lock;    /* guards done_head */
    svc_batch *done_head;         /* finished batches waiting for the loop thread */
    struct event *done_ev;        /* activated by workers; its callback runs on the loop thread */
    svc_done_fn done;             /* called for each finished batch, loop thread */
    void *done_arg;
};

/* Worker: a batch's last job finished; hand the batch to the loop thread. */
static void hand_back(svc_pool *p, svc_batch *b)
{
    pthread_mutex_lock(&p->done_lock);
    bool was_empty = p->done_head == NULL;
    b->next = p->done_head;
    p->done_head = b;
    pthread_mutex_unlock(&p->done_lock);
    if (was_empty)
        event_active(p->done_ev, EV_READ, 0);
}

/* Loop thread: drain the whole completion list, running callbacks without the lock. */
static void on_done_event(evutil_socket_t fd, short what, void *arg)
{
    svc_pool *p = arg;
    (void)fd;
    (void)what;
    pthread_mutex_lock(&p->done_lock);
    svc_batch *list = p->done_head;
    p->done_head = NULL;
    pthread_mutex_unlock(&p->done_lock);
    while (list) {
        svc_batch *next = list->next;
        p->done(list, p->done_arg);
        list = next;
    }
}

/* Sleep ms unless the pool is stopping; returns false when it is. */
static bool sleep_unless_stopping(svc_pool *p, int ms)
{
    struct timespec until;
    clock_gettime(CLOCK_REALTIME, &until);
    until.tv_sec += ms / 1000;
    until.tv_nsec += (long)(ms % 1000) * 1000000L;
    if (until.tv_nsec >= 1000000000L) {
        until.tv_sec++;
        until.tv_nsec -= 1000000000L;
    }
    pthread_mutex_lock(&p->stop_lock);
    while (!atomic_load(&p->stopping))
        if (pthread_cond_timedwait(&p->stop_cond, &p->stop_lock, &until) == ETIMEDOUT)
            break;
    pthread_mutex_unlock(&p->stop_lock);
    return !atomic_load(&p->stopping);
}

/* Server notices (e.g. "relation already exists, skipping") are for debugging, not stderr. */
static void log_notice(const char *message)
{
    svc_log_debug("database notice: %.*s", (int)strcspn(message, "\n"), message);
}

/* Connect, retrying with capped exponential backoff until it works or the pool stops. */
static db_conn *connect_with_backoff(worker *w)
{
    svc_pool *p = w->pool;
    db_conn_params params = {.conninfo = p->settings->database ? p->settings->database : "",
                             .timezone = p->settings->timezone,
                             .statement_timeout_ms = p->settings->statement_timeout_ms,
                             .notice = log_notice};
    int backoff = BACKOFF_MIN_MS, failures = 0;
    char err[512];

    while (!atomic_load(&p->stopping)) {
        db_conn *c = db_conn_open(&params, err, sizeof(err));
        if (c) {
            if (failures)
                svc_log_info("worker %d: connected after %d failed attempts", w->id, failures);
            else
                svc_log_debug("worker %d: connected", w->id);
            return c;
        }
        /* The first failure is news; the repeats of a long outage are noise. */
        svc_log(failures++ ? CFG_LOG_DEBUG : CFG_LOG_WARN,
                "worker %d: cannot connect to the database: %s (retrying)", w->id, err);
        if (!sleep_unless_stopping(p, backoff))
            break;
        backoff = backoff * 2 > BACKOFF_MAX_MS ? BACKOFF_MAX_MS : backoff * 2;
    }
    return NULL;
}

static uint64_t ns_since(const struct timespec *t0)
{
    struct timespec now;
    clock_gettime(CLOCK_MONOTONIC, &now);
    int64_t ns = (int64_t)(now.tv_sec - t0->tv_sec) * 1000000000 + (now.tv_nsec - t0->tv_nsec);
    return ns > 0 ? (uint64_t)ns : 0;
}

static void *worker_main(void *arg)
{
    worker *w = arg;
    svc_pool *p = w->pool;
    db_conn *conn = NULL;

    bool lost_before = false; /* the next connect is a reconnect */

    for (;;) {
        if (!conn) {
            conn = connect_with_backoff(w);
            if (!conn)
                break; /* stopping */
            if (lost_before)
                svc_stat_inc(&w->stats->reconnects);
            atomic_fetch_add(&p->connected, 1);
            atomic_store_explicit(&w->stats->connected, true, memory_order_relaxed);
        }
        svc_job *job = svc_queue_pop(p->queue);
        if (!job)
            break; /* closed and drained */
        svc_hist_observe(&w->stats->queue_wait, ns_since(&job->queued));
        atomic_store_explicit(&w->stats->busy, true, memory_order_relaxed);
        if (!svc_job_run(job, conn, w->stats)) {
            const char *m = PQerrorMessage(db_conn_pg(conn));
            svc_log_warn("worker %d: database connection lost: %.*s", w->id,
                         (int)strcspn(m, "\n"), m);
            atomic_fetch_sub(&p->connected, 1);
            atomic_store_explicit(&w->stats->connected, false, memory_order_relaxed);
            db_conn_close(conn);
            conn = NULL;
            lost_before = true;
        }
        atomic_store_explicit(&w->stats->busy, false, memory_order_relaxed);
        svc_batch *b = job->batch;
        /* release: our slot writes happen before the loop thread reads them */
        if (atomic_fetch_sub_explicit(&b->remaining, 1, memory_order_acq_rel) == 1)
            hand_back(p, b);
    }
    if (conn) {
        atomic_fetch_sub(&p->connected, 1);
        atomic_store_explicit(&w->stats->connected, false, memory_order_relaxed);
        db_conn_close(conn);
    }
    return NULL;
}

svc_pool *svc_pool_start(struct event_base *base, const cfg_settings *settings,
                         svc_metrics *metrics, svc_done_fn done, void *arg, char *err,
                         size_t errlen)
{
    svc_pool *p = calloc(1, sizeof(*p));
    if (!p)
        goto oom;
    p->settings = settings;
    p->metrics = metrics;
    p->done = done;
    p->done_arg = arg;
    atomic_init(&p->connected, 0);
    atomic_init(&p->stopping, false);
    pthread_mutex_init(&p->stop_lock, NULL);
    pthread_cond_init(&p->stop_cond, NULL);
    pthread_mutex_init(&p->done_lock, NULL);
    p->queue = svc_queue_new((size_t)settings->queue_size);
    p->workers = calloc((size_t)settings->workers, sizeof(*p->workers));
    p->done_ev = event_new(base, -1, 0, on_done_event, p);
    if (!p->queue || !p->workers || !p->done_ev)
        goto oom;
    for (int i = 0; i < settings->workers; i++) {
        worker *w = &p->workers[i];
        w->pool = p;
        w->id = i;
        w->stats = svc_metrics_worker(metrics, i);
        int rc = pthread_create(&w->thread, NULL, worker_main, w);
        if (rc) {
            snprintf(err, errlen, "cannot start worker thread %d: %s", i, strerror(rc));
            goto fail;
        }
        w->started = true;
    }
    return p;
oom:
    snprintf(err, errlen, "out of memory starting the worker pool");
fail:
    svc_pool_stop(p);
    return NULL;
}

svc_submit_status svc_pool_submit(svc_pool *p, svc_batch *b)
{
    if (atomic_load(&p->connected) == 0)
        return SVC_DB_UNAVAILABLE;
    for (int i = 0; i < b->njobs; i++)
        clock_gettime(CLOCK_MONOTONIC, &b->jobs[i].queued);
    if (!svc_queue_push_all(p->queue, b->jobs, sizeof(*b->jobs), (size_t)b->njobs))
        return SVC_OVERLOADED;
    return SVC_SUBMITTED;
}

int svc_pool_connected(svc_pool *p)
{
    return atomic_load(&p->connected);
}

size_t svc_pool_queue_depth(svc_pool *p)
{
    return svc_queue_depth(p->queue);
}

void svc_pool_stop(svc_pool *p)
{
    if (!p)
        return;
    pthread_mutex_lock(&p->stop_lock);
    atomic_store(&p->stopping, true);
    pthread_mutex_unlock(&p->stop_lock);
    pthread_cond_broadcast(&p->stop_cond);
    if (p->queue)
        svc_queue_close(p->queue);
    for (int i = 0; p->workers && i < p->settings->workers; i++)
        if (p->workers[i].started)
            pthread_join(p->workers[i].thread, NULL);
    /* Jobs no worker took (every connection was down): fail them so their batches complete. */
    for (svc_job *job; p->queue && (job = svc_queue_pop(p->queue)) != NULL;) {
        svc_job_fail(job, "fanout is shutting down", svc_metrics_worker(p->metrics, 0));
        if (atomic_fetch_sub(&job->batch->remaining, 1) == 1)
            hand_back(p, job->batch);
    }
    /* Batches finished after the loop stopped: run their callbacks so each request completes. */
    if (p->done_ev)
        on_done_event(-1, 0, p);
    if (p->done_ev)
        event_free(p->done_ev);
    svc_queue_free(p->queue);
    free(p->workers);
    pthread_mutex_destroy(&p->stop_lock);
    pthread_cond_destroy(&p->stop_cond);
    pthread_mutex_destroy(&p->done_lock);
    free(p);
}
