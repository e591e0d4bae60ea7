/*
 * svc_batch: creating a batch, the claim protocol on its jobs, assembling its reply on the loop
 * thread, freeing it. The thread rules are in batch.h.
 */
#include "service/batch.h"

#include <stdlib.h>
#include <string.h>

#include <event2/buffer.h>
#include <event2/event.h>
#include <event2/http.h>

#include "db/exec.h"
#include "db/stmt.h"
#include "http/server.h"
#include "service/clock.h"

svc_batch *svc_batch_new(struct evhttp_request *req, http_batch_req *desc)
{
    svc_batch *b = calloc(1, sizeof(*b));
    if (!b)
        goto fail;
    b->req = req;
    b->desc = desc;
    desc = NULL;
    clock_gettime(CLOCK_MONOTONIC, &b->started);
    b->njobs = b->desc->mode == HTTP_MODE_TRANSACTION ? 1 : b->desc->nqueries;
    b->slots = calloc((size_t)b->desc->nqueries, sizeof(*b->slots));
    b->jobs = calloc((size_t)b->njobs, sizeof(*b->jobs));
    if (!b->slots || !b->jobs)
        goto fail;
    bool parallel = b->desc->mode == HTTP_MODE_PARALLEL;
    for (int i = 0; i < b->njobs; i++) {
        b->jobs[i].batch = b;
        b->jobs[i].index = i;
        db_sql_kind kind = parallel ? db_sql_classify(b->desc->queries[i].sql) : DB_SQL_OTHER;
        b->jobs[i].pipelinable = kind != DB_SQL_OTHER;
        b->jobs[i].reads = kind == DB_SQL_READ;
        if (b->jobs[i].pipelinable)
            b->jobs[i].sql_hash = db_sql_hash(b->desc->queries[i].sql);
        atomic_init(&b->jobs[i].state, SVC_JOB_QUEUED);
    }
    atomic_init(&b->remaining, b->njobs);
    atomic_init(&b->failures, 0);
    atomic_init(&b->reply_bytes, 0);
    return b;
fail:
    http_batch_req_free(desc);
    svc_batch_free(b);
    return NULL;
}

void svc_batch_free(svc_batch *b)
{
    if (!b)
        return;
    if (b->deadline)
        event_free(b->deadline);
    if (b->watch)
        event_free(b->watch);
    for (int i = 0; b->slots && i < b->desc->nqueries; i++)
        db_buf_free(&b->slots[i]);
    free(b->slots);
    free(b->jobs);
    db_buf_free(&b->commit_error);
    http_batch_req_free(b->desc);
    free(b);
}

bool svc_job_claim(svc_job *job, int worker, uint64_t run_seq)
{
    int expected = SVC_JOB_QUEUED;
    job->worker = worker;
    job->run_seq = run_seq;
    /* release: the loop thread that later abandons the job reads worker and run_seq */
    return atomic_compare_exchange_strong_explicit(&job->state, &expected, SVC_JOB_RUNNING,
                                                   memory_order_acq_rel, memory_order_acquire);
}

bool svc_job_committing(svc_job *job)
{
    int expected = SVC_JOB_RUNNING;
    return atomic_compare_exchange_strong_explicit(&job->state, &expected, SVC_JOB_COMMITTING,
                                                   memory_order_acq_rel, memory_order_acquire);
}

bool svc_job_finish(svc_job *job)
{
    int expected = SVC_JOB_RUNNING;
    /* release: the slot writes happen before the loop thread sees DONE */
    if (atomic_compare_exchange_strong_explicit(&job->state, &expected, SVC_JOB_DONE,
                                                memory_order_acq_rel, memory_order_acquire))
        return true;
    return expected == SVC_JOB_COMMITTING &&
           atomic_compare_exchange_strong_explicit(&job->state, &expected, SVC_JOB_DONE,
                                                   memory_order_acq_rel, memory_order_acquire);
}

/* The queries a job owns: one, or all of them in transaction mode. */
static int job_queries(const svc_batch *b)
{
    return b->desc->mode == HTTP_MODE_TRANSACTION ? b->desc->nqueries : 1;
}

int svc_batch_abandon(svc_batch *b, void (*on_running)(svc_job *job, void *arg), void *arg)
{
    int lost = 0;
    for (int i = 0; i < b->njobs; i++) {
        svc_job *job = &b->jobs[i];
        int st = SVC_JOB_QUEUED;
        if (atomic_compare_exchange_strong_explicit(&job->state, &st, SVC_JOB_ABANDONED,
                                                    memory_order_acq_rel, memory_order_acquire)) {
            lost += job_queries(b);
            continue;
        }
        /* Running (the worker may move it on to COMMITTING meanwhile: then again). */
        bool taken = false;
        while (!taken && (st == SVC_JOB_RUNNING || st == SVC_JOB_COMMITTING))
            taken = atomic_compare_exchange_strong_explicit(&job->state, &st, SVC_JOB_ABANDONED,
                                                            memory_order_acq_rel,
                                                            memory_order_acquire);
        if (taken) {
            lost += job_queries(b);
            if (on_running)
                on_running(job, arg);
        }
        /* Otherwise DONE (its result stands) or already ABANDONED. */
    }
    return lost;
}

static void free_slot_bytes(const void *data, size_t len, void *arg)
{
    (void)len;
    (void)arg;
    free((void *)data);
}

/* Append query i's result: the worker's bytes when its job is DONE, else the given error. */
static bool add_result(struct evbuffer *body, svc_batch *b, int i, const char *code,
                       const char *message)
{
    svc_job *job = &b->jobs[b->desc->mode == HTTP_MODE_TRANSACTION ? 0 : i];
    size_t len = 0;

    if (atomic_load_explicit(&job->state, memory_order_acquire) == SVC_JOB_DONE) {
        if (b->slots[i].oom)
            return false;
        /* Hand the worker's bytes to the evbuffer instead of copying them. */
        char *bytes = db_buf_steal(&b->slots[i], &len);
        if (bytes && evbuffer_add_reference(body, bytes, len, free_slot_bytes, NULL) == 0)
            return true;
        free(bytes);
        return false;
    }
    db_buf err = DB_BUF_INIT;
    db_result_error(&err, b->desc->queries[i].id, code, message);
    bool ok = !err.oom && evbuffer_add(body, err.data, err.len) == 0;
    db_buf_free(&err);
    return ok;
}

uint64_t svc_batch_reply(svc_batch *b, const char *code, const char *message)
{
    struct evbuffer *body = evbuffer_new();
    bool ok = body != NULL, transaction = b->desc->mode == HTTP_MODE_TRANSACTION;
    double elapsed;

    ok = ok && evbuffer_add(body, "{\"results\":[", 12) == 0;
    for (int i = 0; ok && i < b->desc->nqueries; i++)
        ok = (i == 0 || evbuffer_add(body, ",", 1) == 0) && add_result(body, b, i, code, message);
    ok = ok && evbuffer_add(body, "]", 1) == 0;
    if (ok && transaction) {
        bool done = atomic_load_explicit(&b->jobs[0].state, memory_order_acquire) == SVC_JOB_DONE;
        bool committed = done && b->committed;
        ok = evbuffer_add_printf(body, ",\"committed\":%s", committed ? "true" : "false") > 0;
        if (ok && done && b->commit_error.len)
            ok = evbuffer_add_printf(body, ",\"commit_error\":%s", b->commit_error.data) > 0;
    }
    elapsed = svc_clock_ms_since(&b->started);
    ok = ok && evbuffer_add_printf(body, ",\"elapsed_ms\":%.3f}", elapsed) > 0;

    if (ok)
        http_reply_batch(b->req, body, b->desc, elapsed);
    else
        http_reply_error(b->req, 500, "internal_error", "out of memory assembling the reply");
    b->req = NULL;
    b->phase = SVC_BATCH_REPLIED;
    if (body)
        evbuffer_free(body);
    return (uint64_t)(elapsed * 1e6);
}
