/*
 * svc_pool: worker threads, each owning one PostgreSQL connection; see pool.h for the thread
 * rules.
 *
 * Locking (no lock is ever held across a database call, except cancel_lock by a canceller):
 *   - done_lock guards done_head (the completion list).
 *   - stop_lock + stop_cond let a worker sleep through a reconnect backoff yet wake at once for
 *     shutdown.
 *   - error_lock guards last_error (written by workers whose connect failed, read by anyone
 *     building a db_unavailable message).
 *   - each worker's cancel_lock guards its `cancel` handle and `running_seq`. A canceller holds
 *     it while PQcancel runs, so the worker cannot move on to its next job (or swap connections)
 *     mid-cancel: a late cancel can never hit the wrong query. The worker takes it only between
 *     jobs, briefly.
 */
#include "service/pool.h"

#include <errno.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <unistd.h>

#include <event2/event.h>

#include "db/conn.h"
#include "db/exec.h"
#include "service/cancel.h"
#include "service/clock.h"
#include "service/log.h"
#include "service/queue.h"
#include "service/speed.h"

/* An idle worker checks its connection at least this often, so /readyz follows the database. */
#define IDLE_CHECK_MS 500
/* Canceller threads and their queue: few, bounded. */
#define CANCEL_THREADS 4
#define CANCEL_QUEUE 1024
/* A worker on quick statements for longer than this no longer counts against quick_workers:
 * what it runs turned out slow (a lock wait, say), and queued quick jobs must not wait for it.
 * Not less: on a busy 2-core host a 10-query pipeline now and then takes over 10 ms. */
#define QUICK_STALE_MS 25
/* At shutdown, how long to wait for workers stuck on a frozen server before giving up. */
#define JOIN_WAIT_MS 3000

typedef struct worker {
    svc_pool *pool;          /* the pool it belongs to */
    svc_worker_stats *stats; /* its own numbers (only it writes them) */
    pthread_t thread;        /* its thread */
    int id;                  /* 0-based, for log lines */
    bool started;            /* thread was created (so stop joins it) */
    pthread_mutex_t cancel_lock; /* guards cancel and running_seq (see the top) */
    PGcancel *cancel;        /* the current connection's (owned by it); NULL while disconnected */
    uint64_t running_seq;    /* run number of the job it is running; 0 between jobs */
    atomic_uint cancels;     /* cancels sent to the current run (set to 0 with running_seq,
                                under cancel_lock; read by the worker, db_exec_pipeline) */
    uint64_t next_seq;       /* run numbers handed out (worker thread only) */
    atomic_bool exited;      /* its thread has returned */
    svc_queue_slot slot;     /* its hold on the queue's limit while it runs quick jobs (the
                                queue's lock); in here, not on its stack, since the queue
                                lists it: given back (svc_queue_leave) when the thread ends */
} worker;

struct svc_pool {
    const cfg_settings *settings; /* not owned; outlives the pool */
    svc_worker_stats *stats;      /* nworkers entries, one per worker; not owned */
    char *role;                   /* the role its connections log in as, owned; NULL: conninfo's */
    char label[80];               /* "role NAME " for log lines; "" for the main pool */
    bool on_demand;               /* queue batches until a connect attempt has failed */
    svc_queue *queue;             /* jobs waiting for a worker */
    svc_speed *speed;             /* how long pipelinable statements take, by SQL text */
    svc_cancel *cancels;          /* canceller threads */
    int nworkers;                 /* entries in workers */
    worker *workers;              /* its workers */
    atomic_int connected;         /* workers with a live connection */
    atomic_bool connect_failed;   /* some connect attempt has failed (on_demand: stop queueing) */
    pthread_mutex_t error_lock;   /* guards last_error */
    char last_error[256];         /* the server's reason for the last failed connect; "" after
                                     a success */
    atomic_bool stopping;         /* set once by svc_pool_stop */
    atomic_bool warned_superuser; /* the superuser warning was logged */
    pthread_mutex_t stop_lock;    /* with stop_cond: interruptible backoff sleeps */
    pthread_cond_t stop_cond;
    pthread_mutex_t done_lock;    /* guards done_head */
    svc_batch *done_head;         /* finished batches waiting for the loop thread */
    int done_fd;                  /* eventfd: a worker writes it when done_head was empty */
    struct event *done_ev;        /* loop thread: done_fd is readable */
    struct event *kick_ev;        /* loop thread: quick jobs wait for busy workers, look again */
    svc_done_fn done;             /* called for each finished batch, loop thread */
    void *done_arg;
};

/* A batch's job is released: the last one hands the batch to the loop thread. */
static void release(svc_pool *p, svc_batch *b)
{
    if (atomic_fetch_sub_explicit(&b->remaining, 1, memory_order_acq_rel) != 1)
        return;
    pthread_mutex_lock(&p->done_lock);
    bool was_empty = p->done_head == NULL;
    b->next = p->done_head;
    p->done_head = b;
    pthread_mutex_unlock(&p->done_lock);
    /* Not event_active: it takes the event base's lock, which the loop thread holds while it
     * works, so worker and loop took turns sleeping on it (two futex calls a hand-back). */
    uint64_t one = 1;
    if (was_empty && write(p->done_fd, &one, sizeof(one)) < 0) {
        /* EAGAIN: the counter is full, so the loop is woken anyway */
    }
}

/* Loop thread: drain the whole completion list, running callbacks without the lock. */
static void on_done_event(evutil_socket_t fd, short what, void *arg)
{
    svc_pool *p = arg;
    uint64_t n;
    (void)fd;
    (void)what;
    /* Before the take: a batch pushed after it writes the eventfd again. */
    if (read(p->done_fd, &n, sizeof(n)) < 0) {
        /* EAGAIN: nothing written since the last read */
    }
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

/* The queue's limit (svc_queue_limit) holds quick jobs back: on 2 cores shared with the
 * database, 16 workers on point selects at once ran a third slower than 2, with p99 four times
 * the median; a few busy workers taking the next job without sleeping waste no wake-ups. */
static bool job_is_quick(const void *item)
{
    return ((const svc_job *)item)->quick;
}

static void arm_kick(svc_pool *p)
{
    struct timeval tv = {0, QUICK_STALE_MS * 1000};
    evtimer_add(p->kick_ev, &tv);
}

/* Loop thread: quick jobs still wait; wake workers for them if the busy ones went stale. */
static void on_kick(evutil_socket_t fd, short what, void *arg)
{
    svc_pool *p = arg;
    (void)fd;
    (void)what;
    if (svc_queue_kick(p->queue))
        arm_kick(p); /* not pending: it just fired */
}

/* Sleep ms unless the pool is stopping; returns false when it is. */
static bool sleep_unless_stopping(svc_pool *p, int ms)
{
    struct timespec until = svc_clock_deadline(ms);
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

/* A refused login will not fix itself by retrying fast: say so loudly, retry at the cap. */
static bool is_login_refused(const char *err)
{
    return strstr(err, "authentication failed") || strstr(err, "no pg_hba.conf entry") ||
           strstr(err, "no password supplied") || strstr(err, "is not permitted to log in") ||
           strstr(err, "permission denied for database") ||
           (strstr(err, "role \"") && strstr(err, "does not exist")) ||
           (strstr(err, "database \"") && strstr(err, "does not exist"));
}

static db_conn *connect_once(worker *w, char *err, size_t errlen)
{
    const cfg_settings *s = w->pool->settings;
    db_conn_params params = {.conninfo = s->database ? s->database : "",
                             .user = w->pool->role,
                             .timezone = s->timezone,
                             .statement_timeout_ms = s->statement_timeout_ms,
                             .lock_timeout_ms = s->lock_timeout_ms,
                             .idle_in_transaction_timeout_ms = s->idle_in_transaction_timeout_ms,
                             .statement_cache = s->statement_cache_size,
                             .notice = log_notice};
    return db_conn_open(&params, err, errlen);
}

/*
 * While no worker has a connection, nothing would take queued jobs until the database returns:
 * fail them now with db_unavailable instead (never retried: nothing of theirs was sent).
 */
static void fail_queued_while_down(worker *w)
{
    svc_pool *p = w->pool;
    bool closed = false;
    char why[512];
    svc_pool_unavailable(p, why, sizeof(why));
    for (svc_job *job; atomic_load(&p->connected) == 0 &&
                       (job = svc_queue_pop_timed(p->queue, 0, &closed)) != NULL;) {
        if (svc_job_claim(job, w->id, 0))
            svc_job_fail(job, why, w->stats);
        release(p, job->batch);
    }
}

/* Keep the server's reason for a failed connect (what follows libpq's "connection to server
 * ... failed: ", which names hosts and sockets), or clear it after a success (err NULL). */
static void note_connect(svc_pool *p, const char *err)
{
    const char *reason = err, *at;
    while (reason && (at = strstr(reason, "failed: ")) != NULL)
        reason = at + strlen("failed: ");
    pthread_mutex_lock(&p->error_lock);
    snprintf(p->last_error, sizeof(p->last_error), "%s", reason ? reason : "");
    pthread_mutex_unlock(&p->error_lock);
    if (err)
        atomic_store(&p->connect_failed, true);
}

/* A superuser can escape read-only transactions (COPY ... TO PROGRAM) and any token's limits:
 * say so once. The server reports is_superuser at login, so this costs no round trip. */
static void warn_if_superuser(svc_pool *p, db_conn *c)
{
    const char *super = PQparameterStatus(db_conn_pg(c), "is_superuser");
    if (super && strcmp(super, "on") == 0 && !atomic_exchange(&p->warned_superuser, true))
        svc_log_warn("the database role %s is a superuser: read-only batches and token limits "
                     "cannot hold against it; give fanout a role that is not",
                     PQuser(db_conn_pg(c)));
}

/* Connect, retrying with capped exponential backoff until it works or the pool stops. */
static db_conn *connect_with_backoff(worker *w)
{
    svc_pool *p = w->pool;
    int backoff = p->settings->reconnect_backoff_ms, failures = 0;
    int cap = p->settings->reconnect_backoff_max_ms;
    char err[512];

    while (!atomic_load(&p->stopping)) {
        db_conn *c = connect_once(w, err, sizeof(err));
        if (c) {
            note_connect(p, NULL);
            if (failures)
                svc_log_info("%sworker %d: connected after %d failed attempts", p->label, w->id,
                             failures);
            else
                svc_log_debug("%sworker %d: connected", p->label, w->id);
            warn_if_superuser(p, c);
            return c;
        }
        note_connect(p, err);
        bool refused = is_login_refused(err);
        /* The first failure is news; the repeats of a long outage are noise. */
        svc_log(failures ? CFG_LOG_DEBUG : refused ? CFG_LOG_ERROR : CFG_LOG_WARN,
                "%sworker %d: cannot connect to the database: %s (%s)", p->label, w->id, err,
                !refused   ? "retrying"
                : p->role ? "the server refused the login: check the role, that it may log in, "
                            "and its password in the passfile"
                          : "the server refused the login: check the database setting");
        failures++;
        fail_queued_while_down(w);
        if (refused)
            backoff = cap;
        if (!sleep_unless_stopping(p, backoff < cap ? backoff : cap))
            break;
        backoff = backoff > cap / 2 ? cap : backoff * 2;
    }
    return NULL;
}

/* Install or drop the connection the cancellers may cancel on (under cancel_lock; the handle
 * belongs to the db_conn, which outlives it here: the worker clears it before closing). */
static void set_connection(worker *w, db_conn *conn)
{
    pthread_mutex_lock(&w->cancel_lock);
    w->cancel = conn ? db_conn_cancel_handle(conn) : NULL;
    pthread_mutex_unlock(&w->cancel_lock);
    atomic_store_explicit(&w->stats->connected, conn != NULL, memory_order_relaxed);
}

static void drop_connection(worker *w, db_conn **conn)
{
    set_connection(w, NULL);
    atomic_fetch_sub(&w->pool->connected, 1);
    db_conn_close(*conn);
    *conn = NULL;
}

static void set_running(worker *w, uint64_t seq)
{
    pthread_mutex_lock(&w->cancel_lock);
    w->running_seq = seq;
    atomic_store_explicit(&w->cancels, 0, memory_order_relaxed);
    pthread_mutex_unlock(&w->cancel_lock);
}

/* Before a job runs: a connection found dead (the database restarted while it sat idle) is
 * replaced once, since nothing was sent on it yet. False when there is none to run on. */
static bool usable_connection(worker *w, db_conn **conn)
{
    char err[512];

    if (db_conn_alive(*conn))
        return true;
    svc_log_warn("worker %d: database connection found dead before use; reconnecting", w->id);
    drop_connection(w, conn);
    *conn = connect_once(w, err, sizeof(err));
    if (!*conn) {
        svc_log_warn("worker %d: cannot reconnect: %s", w->id, err);
        return false;
    }
    svc_stat_inc(&w->stats->reconnects);
    atomic_fetch_add(&w->pool->connected, 1);
    set_connection(w, *conn);
    return true;
}

static void connection_lost(worker *w, db_conn **conn)
{
    const char *m = PQerrorMessage(db_conn_pg(*conn));
    svc_log_warn("worker %d: database connection lost: %.*s", w->id, (int)strcspn(m, "\n"), m);
    drop_connection(w, conn);
}

/*
 * Run claimed jobs: one job alone, or several pipelinable jobs in one pipeline (one batch's, or
 * several quick-read batches') with the session reset behind each batch's. Once sent, a query is never retried (it may have
 * written). Returns whether the connection still needs its session reset.
 */
static bool run_claimed(worker *w, svc_job **jobs, int n, db_conn **conn)
{
    bool reset = w->pool->settings->reset_sessions, reset_ok = true;

    if (!usable_connection(w, conn)) {
        for (int i = 0; i < n; i++)
            svc_job_fail(jobs[i], "the database connection was lost and could not be "
                                  "re-established", w->stats);
        return false;
    }
    if (!jobs[0]->pipelinable) {
        if (!svc_job_run(jobs[0], *conn, w->stats)) {
            connection_lost(w, conn);
            return false;
        }
        return reset; /* reset after the hand-back, so the reply does not wait for it */
    }
    /* The reset rides behind, even of a lone slow statement: reset after the hand-back, the
     * worker would still be busy when the client's next batch comes, which then queues its
     * slow statements behind each other (64 x pg_sleep(0.01): p90 116 ms instead of 17). */
    if (!svc_job_run_pipeline(jobs, n, *conn, w->stats, reset, &reset_ok, w->pool->speed,
                              &w->cancels)) {
        connection_lost(w, conn);
        return false;
    }
    return !reset_ok; /* a cancel meant for the batch may have landed in the reset: redo it */
}

/*
 * May next join the pipeline that first starts? Statements known to be quick always do: one
 * round trip for all beats a wake-up and a round trip each. Others only when no idle worker
 * would take them: a pipeline runs its statements one after another. Another batch's jobs join
 * only when both batches are quick reads through and through (svc_batch.quick_reads): the
 * session reset goes behind each batch's part, so the batches still see fresh sessions, and
 * share the worker's wake-up and round trip (on 2 cores those cost more than the statements).
 */
static svc_queue_join joins_pipeline(const void *first, const void *next)
{
    const svc_job *a = first, *b = next;
    if (!a->pipelinable || !b->pipelinable)
        return SVC_JOIN_NO;
    if (a->batch != b->batch)
        return a->batch->quick_reads && b->batch->quick_reads ? SVC_JOIN_ALWAYS : SVC_JOIN_NO;
    return a->quick && b->quick ? SVC_JOIN_ALWAYS : SVC_JOIN_IF_SPARE;
}

static void *worker_main(void *arg)
{
    worker *w = arg;
    svc_pool *p = w->pool;
    db_conn *conn = NULL;
    bool lost_before = false; /* the next connect is a reconnect */
    size_t depth = (size_t)p->settings->pipeline_depth;
    svc_job *jobs[DB_PIPELINE_MAX], *claimed[DB_PIPELINE_MAX];

    if (depth > DB_PIPELINE_MAX)
        depth = DB_PIPELINE_MAX;
    for (;;) {
        if (!conn) {
            conn = connect_with_backoff(w);
            if (!conn)
                break; /* stopping */
            if (lost_before)
                svc_stat_inc(&w->stats->reconnects);
            lost_before = true;
            atomic_fetch_add(&p->connected, 1);
            set_connection(w, conn);
        }
        bool closed = false;
        size_t n = svc_queue_pop_run(p->queue, IDLE_CHECK_MS, &closed, (void **)jobs, depth,
                                     joins_pipeline, &w->slot);
        if (n == 0) {
            if (closed)
                break;
            if (!db_conn_alive(conn)) {
                svc_log_warn("worker %d: idle database connection lost", w->id);
                drop_connection(w, &conn);
            }
            continue;
        }
        uint64_t seq = ++w->next_seq;
        int nclaimed = 0;
        set_running(w, seq);
        for (size_t i = 0; i < n; i++) {
            svc_hist_observe(&w->stats->queue_wait, svc_clock_ns_since(&jobs[i]->queued));
            if (svc_job_claim(jobs[i], w->id, seq))
                claimed[nclaimed++] = jobs[i];
        }
        bool needs_reset = false;
        if (nclaimed) {
            atomic_store_explicit(&w->stats->busy, true, memory_order_relaxed);
            /* publishes each job, unless it was abandoned meanwhile */
            needs_reset = run_claimed(w, claimed, nclaimed, &conn);
            atomic_store_explicit(&w->stats->busy, false, memory_order_relaxed);
        }
        set_running(w, 0);
        for (size_t i = 0; i < n; i++)
            release(p, jobs[i]->batch);
        /* After the hand-back, so the reply does not wait for it. */
        if (conn && needs_reset && !db_conn_reset(conn)) {
            svc_log_warn("worker %d: session reset failed; reconnecting", w->id);
            drop_connection(w, &conn);
        }
    }
    if (conn)
        drop_connection(w, &conn);
    /* It may leave holding its slot (its connection was lost after a run of quick jobs, and
     * it stopped while reconnecting): the others may still drain the queue. */
    svc_queue_leave(p->queue, &w->slot);
    atomic_store(&w->exited, true);
    return NULL;
}

svc_pool *svc_pool_start(struct event_base *base, const cfg_settings *settings,
                         const svc_pool_opts *opts, svc_done_fn done, void *arg, char *err,
                         size_t errlen)
{
    svc_pool *p = calloc(1, sizeof(*p));
    if (!p)
        goto oom;
    p->done_fd = -1;
    p->settings = settings;
    p->stats = opts->stats;
    p->on_demand = opts->on_demand;
    p->nworkers = opts->workers;
    p->done = done;
    p->done_arg = arg;
    atomic_init(&p->connected, 0);
    atomic_init(&p->connect_failed, false);
    atomic_init(&p->stopping, false);
    atomic_init(&p->warned_superuser, false);
    pthread_mutex_init(&p->stop_lock, NULL);
    pthread_cond_init(&p->stop_cond, NULL);
    pthread_mutex_init(&p->done_lock, NULL);
    pthread_mutex_init(&p->error_lock, NULL);
    if (opts->role)
        snprintf(p->label, sizeof(p->label), "role %s ", opts->role);
    p->role = opts->role ? strdup(opts->role) : NULL;
    p->queue = svc_queue_new((size_t)settings->queue_size);
    p->speed = svc_speed_new();
    p->workers = calloc((size_t)p->nworkers, sizeof(*p->workers));
    p->done_fd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
    if (p->done_fd < 0) {
        snprintf(err, errlen, "cannot create the worker pool's eventfd: %s", strerror(errno));
        goto fail;
    }
    p->done_ev = event_new(base, p->done_fd, EV_READ | EV_PERSIST, on_done_event, p);
    p->kick_ev = opts->quick_workers > 0 ? evtimer_new(base, on_kick, p) : NULL;
    p->cancels = svc_cancel_start(CANCEL_THREADS, CANCEL_QUEUE);
    if ((opts->role && !p->role) || !p->queue || !p->workers || !p->done_ev || !p->cancels ||
        (opts->quick_workers > 0 && !p->kick_ev))
        goto oom;
    if (event_add(p->done_ev, NULL) != 0) {
        snprintf(err, errlen, "cannot watch the worker pool's completions");
        goto fail;
    }
    svc_queue_limit(p->queue, (size_t)opts->quick_workers, QUICK_STALE_MS, job_is_quick);
    for (int i = 0; i < p->nworkers; i++) {
        worker *w = &p->workers[i];
        w->pool = p;
        w->id = i;
        w->stats = &opts->stats[i];
        pthread_mutex_init(&w->cancel_lock, NULL);
        atomic_init(&w->exited, false);
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
    /* A pool started for this very batch is still logging in: let the batch wait for it. */
    bool starting = p->on_demand && !atomic_load(&p->connect_failed);
    if (atomic_load(&p->connected) == 0 && !starting)
        return SVC_DB_UNAVAILABLE;
    b->pool = p;
    b->max_reply_bytes = (size_t)p->settings->max_response_bytes;
    /* Workers to wake: one for each job, but one for each pipeline_depth quick ones in a row
     * (a worker takes those together). */
    size_t wake = 0, run = 0, depth = (size_t)p->settings->pipeline_depth;
    bool quick_reads = true;
    for (int i = 0; i < b->njobs; i++) {
        svc_job *job = &b->jobs[i];
        clock_gettime(CLOCK_MONOTONIC, &job->queued);
        job->quick = job->pipelinable && p->speed && svc_speed_quick(p->speed, job->sql_hash);
        run = job->quick && run && run < depth ? run + 1 : job->quick;
        wake += run <= 1;
        quick_reads = quick_reads && job->quick && job->reads;
    }
    b->quick_reads = quick_reads;
    if (!svc_queue_push_all(p->queue, b->jobs, sizeof(*b->jobs), (size_t)b->njobs, wake))
        return SVC_OVERLOADED;
    /* They wait for busy workers: should those go stale, wake others. A timer already set
     * looks then anyway, so the queue's lock is taken only when none is. */
    if (p->kick_ev && !evtimer_pending(p->kick_ev, NULL) && svc_queue_waiting_limited(p->queue))
        arm_kick(p);
    return SVC_SUBMITTED;
}

/* A cancel request in flight to a canceller thread. */
typedef struct cancel_req {
    worker *w;    /* the worker that was running the job */
    uint64_t seq; /* the run number of that job on it */
} cancel_req;

static void run_cancel(void *arg)
{
    cancel_req *r = arg;
    char errbuf[256];
    pthread_mutex_lock(&r->w->cancel_lock);
    /* Only if the worker is still on that very job: never cancel its next one. (In a run of
     * several batches it may land on another batch's statement: db_exec_pipeline sends that
     * again.) Run number 0 is a job failed without the database (fail_queued_while_down): it
     * has no statement, and 0 is also what running_seq says between runs, when a session
     * reset may be on the wire. */
    if (r->seq != 0 && r->w->running_seq == r->seq && r->w->cancel) {
        /* Counted before it can land: each may stop up to two statements (the server signals
         * the backend twice), 57014s that it, and not statement_timeout, caused:
         * db_exec_pipeline resends up to twice this many. */
        atomic_fetch_add_explicit(&r->w->cancels, 1, memory_order_release);
        if (!PQcancel(r->w->cancel, errbuf, sizeof(errbuf))) {
            atomic_fetch_sub_explicit(&r->w->cancels, 1, memory_order_release);
            svc_log_warn("%sworker %d: cancel request failed: %s", r->w->pool->label, r->w->id,
                         errbuf);
        }
    }
    pthread_mutex_unlock(&r->w->cancel_lock);
    free(r);
}

void svc_pool_cancel(svc_pool *p, const svc_job *job)
{
    cancel_req *r = malloc(sizeof(*r));
    if (!r)
        return;
    *r = (cancel_req){.w = &p->workers[job->worker], .seq = job->run_seq};
    if (!svc_cancel_post(p->cancels, run_cancel, r)) {
        svc_log_warn("cancel queue full: a query runs on until statement_timeout");
        free(r);
    }
}

void svc_pool_unavailable(svc_pool *p, char *buf, size_t len)
{
    if (!p->role) {
        snprintf(buf, len, "no database connection is available");
        return;
    }
    pthread_mutex_lock(&p->error_lock);
    snprintf(buf, len, "no database connection as role %s is available%s%s", p->role,
             p->last_error[0] ? ": " : "", p->last_error);
    pthread_mutex_unlock(&p->error_lock);
}

int svc_pool_connected(svc_pool *p)
{
    return atomic_load(&p->connected);
}

size_t svc_pool_queue_depth(svc_pool *p)
{
    return svc_queue_depth(p->queue);
}

/* Join a worker, but not forever: one stuck on a frozen server is left to the process exit. */
static bool join_bounded(worker *w, struct timespec *until)
{
    while (!atomic_load(&w->exited)) {
        struct timespec now;
        clock_gettime(CLOCK_REALTIME, &now);
        if (now.tv_sec > until->tv_sec ||
            (now.tv_sec == until->tv_sec && now.tv_nsec >= until->tv_nsec))
            return false;
        struct timespec tick = {0, 10 * 1000000L};
        nanosleep(&tick, NULL);
    }
    pthread_join(w->thread, NULL);
    return true;
}

void svc_pool_stop_begin(svc_pool *p)
{
    if (!p)
        return;
    pthread_mutex_lock(&p->stop_lock);
    atomic_store(&p->stopping, true);
    pthread_mutex_unlock(&p->stop_lock);
    pthread_cond_broadcast(&p->stop_cond);
    if (p->queue)
        svc_queue_close(p->queue);
}

bool svc_pool_stop(svc_pool *p)
{
    bool clean = true;
    if (!p)
        return true;
    svc_pool_stop_begin(p);
    if (p->kick_ev) { /* the loop has stopped: no callback runs now */
        event_free(p->kick_ev);
        p->kick_ev = NULL;
    }
    struct timespec until = svc_clock_deadline(JOIN_WAIT_MS);
    for (int i = 0; p->workers && i < p->nworkers; i++)
        if (p->workers[i].started && !join_bounded(&p->workers[i], &until)) {
            svc_log_error("%sworker %d is stuck on the database; exiting without it", p->label,
                          i);
            clean = false;
        }
    if (!svc_cancel_stop(p->cancels, free, clean ? JOIN_WAIT_MS : 0))
        clean = false;
    if (!clean)
        return false; /* threads still use the pool: leave it to the process exit */
    /* Jobs no worker took (every connection was down): fail them so their batches complete. */
    for (svc_job *job; p->queue && (job = svc_queue_pop(p->queue)) != NULL;) {
        if (svc_job_claim(job, 0, 0))
            svc_job_fail(job, "fanout is shutting down", &p->stats[0]);
        release(p, job->batch);
    }
    /* Batches finished after the loop stopped: run their callbacks so each request completes. */
    if (p->done_ev) {
        on_done_event(-1, 0, p);
        event_free(p->done_ev);
    }
    if (p->done_fd >= 0)
        close(p->done_fd);
    svc_queue_free(p->queue);
    svc_speed_free(p->speed);
    for (int i = 0; p->workers && i < p->nworkers; i++)
        if (p->workers[i].started)
            pthread_mutex_destroy(&p->workers[i].cancel_lock);
    free(p->workers);
    free(p->role);
    pthread_mutex_destroy(&p->stop_lock);
    pthread_cond_destroy(&p->stop_cond);
    pthread_mutex_destroy(&p->done_lock);
    pthread_mutex_destroy(&p->error_lock);
    free(p);
    return true;
}
