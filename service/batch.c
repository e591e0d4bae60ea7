/*
 * svc_batch: creating a batch, assembling its reply on the loop thread, freeing it.
 * The thread rules are in batch.h.
 */
#include "service/batch.h"

#include <stdlib.h>
#include <string.h>

#include <event2/buffer.h>
#include <event2/http.h>

#include "http/server.h"

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
    for (int i = 0; i < b->njobs; i++) {
        b->jobs[i].batch = b;
        b->jobs[i].index = i;
    }
    atomic_init(&b->remaining, b->njobs);
    atomic_init(&b->failures, 0);
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
    for (int i = 0; b->slots && i < b->desc->nqueries; i++)
        db_buf_free(&b->slots[i]);
    free(b->slots);
    free(b->jobs);
    db_buf_free(&b->commit_error);
    http_batch_req_free(b->desc);
    free(b);
}

static void free_slot_bytes(const void *data, size_t len, void *arg)
{
    (void)len;
    (void)arg;
    free((void *)data);
}

static double ms_since(const struct timespec *t0)
{
    struct timespec now;
    clock_gettime(CLOCK_MONOTONIC, &now);
    return (double)(now.tv_sec - t0->tv_sec) * 1e3 + (double)(now.tv_nsec - t0->tv_nsec) / 1e6;
}

uint64_t svc_batch_reply(svc_batch *b)
{
    double elapsed;
    struct evbuffer *body = evbuffer_new();
    bool ok = body != NULL;

    ok = ok && evbuffer_add(body, "{\"results\":[", 12) == 0;
    for (int i = 0; ok && i < b->desc->nqueries; i++) {
        size_t len = 0;
        if (b->slots[i].oom) {
            ok = false;
            break;
        }
        /* Hand the worker's bytes to the evbuffer instead of copying them. */
        char *bytes = db_buf_steal(&b->slots[i], &len);
        ok = bytes && (i == 0 || evbuffer_add(body, ",", 1) == 0) &&
             evbuffer_add_reference(body, bytes, len, free_slot_bytes, NULL) == 0;
        if (!ok)
            free(bytes);
    }
    ok = ok && evbuffer_add(body, "]", 1) == 0;
    if (ok && b->desc->mode == HTTP_MODE_TRANSACTION) {
        ok = evbuffer_add_printf(body, ",\"committed\":%s", b->committed ? "true" : "false") > 0;
        if (ok && b->commit_error.len)
            ok = evbuffer_add_printf(body, ",\"commit_error\":%s", b->commit_error.data) > 0;
    }
    elapsed = ms_since(&b->started);
    ok = ok && evbuffer_add_printf(body, ",\"elapsed_ms\":%.3f}", elapsed) > 0;

    if (ok)
        http_reply_batch(b->req, body, b->desc->nqueries, b->desc->mode == HTTP_MODE_TRANSACTION,
                         elapsed);
    else
        http_reply_error(b->req, 500, "internal_error", "out of memory assembling the reply");
    b->req = NULL;
    if (body)
        evbuffer_free(body);
    return (uint64_t)(elapsed * 1e6);
}
