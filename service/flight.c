/*
 * svc_flight: deadlines, client-gone watches and replies for batches in flight. Loop thread
 * only; see flight.h.
 */
#include "service/flight.h"

#include <poll.h>
#include <stdlib.h>

#include <event2/bufferevent.h>
#include <event2/event.h>
#include <event2/http.h>

#include "http/server.h"
#include "service/log.h"

struct svc_flight {
    struct event_base *base;   /* the loop */
    svc_metrics *metrics;      /* not owned */
    svc_batch *live;           /* batches not yet replied to (doubly linked) */
    int running;               /* entries in live */
    int unsent;                /* replies queued, not yet written nor lost with their connection */
    bool closed;               /* shutdown ran out of time: refuse new batches */
    void (*changed)(void *arg);
    void *changed_arg;
};

svc_flight *svc_flight_new(struct event_base *base, svc_metrics *metrics,
                           void (*changed)(void *arg), void *arg)
{
    svc_flight *f = calloc(1, sizeof(*f));
    if (!f)
        return NULL;
    f->base = base;
    f->metrics = metrics;
    f->changed = changed;
    f->changed_arg = arg;
    return f;
}

static void unlink_live(svc_flight *f, svc_batch *b)
{
    if (b->prev_live)
        b->prev_live->next_live = b->next_live;
    else
        f->live = b->next_live;
    if (b->next_live)
        b->next_live->prev_live = b->prev_live;
    b->prev_live = b->next_live = NULL;
    f->running--;
}

/* http_server: a reply has been written to its client, or its connection went first. */
static void on_written(void *arg, bool written)
{
    svc_flight *f = arg;
    if (!written)
        svc_log_debug("reply not written: the client's connection closed or failed first");
    f->unsent--;
    f->changed(f->changed_arg);
}

/* Reply (once) and stop watching the batch's timer and socket. */
static void finish(svc_flight *f, svc_batch *b, const char *code, const char *message,
                   svc_batch_outcome outcome, bool client_gone)
{
    bool transaction = b->desc->mode == HTTP_MODE_TRANSACTION;
    if (b->deadline)
        event_del(b->deadline);
    if (b->watch)
        event_del(b->watch);
    /* Nobody will read a reply to a client that left, so do not wait for its write. */
    if (!client_gone && http_server_watch_reply(b->req, on_written, f))
        f->unsent++;
    uint64_t ns = svc_batch_reply(b, code, message);
    svc_metrics_batch(f->metrics, transaction, outcome, ns);
    unlink_live(f, b);
    f->changed(f->changed_arg);
}

static void cancel_on_server(svc_job *job, void *arg)
{
    (void)arg;
    svc_pool_cancel(job->batch->pool, job);
}

/* End a batch before its jobs are done: abandon them, cancel the running ones, reply. */
static void expire(svc_flight *f, svc_batch *b, svc_query_outcome why, const char *code,
                   const char *message)
{
    if (b->phase != SVC_BATCH_RUNNING)
        return;
    int lost = svc_batch_abandon(b, cancel_on_server, NULL);
    svc_metrics_queries(f->metrics, why, (uint64_t)lost);
    svc_batch_outcome outcome = why == SVC_Q_CANCELED ? SVC_B_CANCELED : SVC_B_TIMEOUT;
    /* Every job may have finished just now: then the results stand. */
    if (lost == 0)
        outcome = atomic_load(&b->failures) ? SVC_B_ERROR : SVC_B_OK;
    finish(f, b, code, message, outcome, why == SVC_Q_CANCELED);
}

static void on_deadline(evutil_socket_t fd, short what, void *arg)
{
    svc_batch *b = arg;
    (void)fd;
    (void)what;
    expire(b->flight, b, SVC_Q_TIMEOUT, "timeout",
           "the batch's deadline (timeout_ms) passed before this query finished");
}

/* How often the socket of a client that sent a FIN is checked for the reset that says it left. */
#define CLIENT_CHECK_MS 50

/* Whether the client's connection is over in both directions: a reset, or an error (POLLHUP
 * needs both sides shut; a half-close sets only POLLRDHUP). */
static bool client_left(evutil_socket_t fd)
{
    struct pollfd p = {.fd = fd, .events = POLLIN};
    return poll(&p, 1, 0) == 1 && (p.revents & (POLLHUP | POLLERR | POLLNVAL));
}

static void cancel_gone(svc_batch *b)
{
    svc_log_debug("client closed its connection mid-batch: cancelling the batch");
    expire(b->flight, b, SVC_Q_CANCELED, "canceled",
           "the client closed the connection before this query finished");
}

/* The timer watch that follows a FIN: the reset may come later (a probe sent over a network). */
static void on_client_check(evutil_socket_t fd, short what, void *arg)
{
    (void)what;
    if (client_left(fd))
        cancel_gone(arg);
}

/*
 * EV_CLOSED: the client sent a FIN. A client that half-closed after its request still waits for
 * the answer, and a FIN from a close() looks the same until something is written: so probe with a
 * 100 Continue, to which a closed socket answers with a reset (at once on loopback). Then check
 * on a timer: EV_CLOSED stays ready once the FIN came (it would fire on every loop turn), and
 * libevent reports the reset as EV_READ|EV_WRITE, never as EV_CLOSED. HTTP/1.0: no probe (no 1xx
 * allowed), a FIN cancels. TLS: no probe (the bytes would have to go through the session), only a
 * reset ends the batch early; otherwise the reply's write fails.
 */
static void on_client_closed(evutil_socket_t fd, short what, void *arg)
{
    svc_batch *b = arg;
    svc_flight *f = b->flight;
    struct timeval tv = {0, CLIENT_CHECK_MS * 1000};

    (void)what;
    /* HTTP/1.0 allows no 1xx to probe with, and its clients hardly ever half-close: a FIN
     * there is a client that left (as before the probe). */
    if (client_left(fd) || http_server_is_http10(b->req) ||
        (http_server_send_continue(b->req) && client_left(fd))) {
        cancel_gone(b);
        return;
    }
    /* Not persistent: this event is no longer pending, so it may be freed in its callback. */
    event_free(b->watch);
    b->watch = event_new(f->base, fd, EV_PERSIST, on_client_check, b);
    if (b->watch && event_add(b->watch, &tv) != 0) {
        event_free(b->watch);
        b->watch = NULL;
    }
    if (!b->watch)
        svc_log_error("cannot watch a half-closed client; its batch runs to its end");
}

/* evhttp stops reading once a request is complete, so it would not notice a client hanging up
 * until it writes: watch the socket for the peer's FIN ourselves (EV_CLOSED, epoll RDHUP). */
static void watch_client(svc_flight *f, svc_batch *b)
{
    struct evhttp_connection *evcon = evhttp_request_get_connection(b->req);
    struct bufferevent *bev = evcon ? evhttp_connection_get_bufferevent(evcon) : NULL;
    evutil_socket_t fd = bev ? bufferevent_getfd(bev) : -1;

    if (fd < 0 || !(event_base_get_features(f->base) & EV_FEATURE_EARLY_CLOSE))
        return;
    b->watch = event_new(f->base, fd, EV_CLOSED, on_client_closed, b);
    if (b->watch && event_add(b->watch, NULL) != 0) {
        event_free(b->watch);
        b->watch = NULL;
    }
}

static void reply_unavailable(struct evhttp_request *req, const char *code, const char *message)
{
    evhttp_add_header(evhttp_request_get_output_headers(req), "Retry-After", "1");
    http_reply_error(req, 503, code, message);
}

void svc_flight_submit(svc_flight *f, struct evhttp_request *req, http_batch_req *desc,
                       svc_pool *pool)
{
    bool transaction = desc->mode == HTTP_MODE_TRANSACTION;
    int timeout_ms = desc->timeout_ms;
    svc_batch *b = svc_batch_new(req, desc);
    char why[512] = "no database connection could be started for this token's role";

    if (!b) {
        http_reply_error(req, 500, "internal_error", "out of memory");
        return;
    }
    b->flight = f;
    if (f->closed) {
        svc_metrics_batch(f->metrics, transaction, SVC_B_OVERLOADED, 0);
        reply_unavailable(req, "overloaded", "fanout is shutting down; retry elsewhere");
        svc_batch_free(b);
        return;
    }
    switch (pool ? svc_pool_submit(pool, b) : SVC_DB_UNAVAILABLE) {
    case SVC_SUBMITTED:
        break;
    case SVC_OVERLOADED:
        svc_metrics_batch(f->metrics, transaction, SVC_B_OVERLOADED, 0);
        reply_unavailable(req, "overloaded", "the job queue is full; retry later");
        svc_batch_free(b);
        return;
    case SVC_DB_UNAVAILABLE:
        svc_metrics_batch(f->metrics, transaction, SVC_B_DB_UNAVAILABLE, 0);
        if (pool)
            svc_pool_unavailable(pool, why, sizeof(why));
        reply_unavailable(req, "db_unavailable", why);
        svc_batch_free(b);
        return;
    }
    /* Jobs may already be running; their hand-back reaches us only on a later loop turn. */
    struct timeval tv = {timeout_ms / 1000, (timeout_ms % 1000) * 1000};
    b->deadline = evtimer_new(f->base, on_deadline, b);
    if (!b->deadline || evtimer_add(b->deadline, &tv) != 0)
        svc_log_error("cannot arm a batch deadline; the batch ends when its queries do");
    watch_client(f, b);
    b->next_live = f->live;
    if (f->live)
        f->live->prev_live = b;
    f->live = b;
    f->running++;
    f->changed(f->changed_arg);
}

void svc_flight_done(svc_batch *b, void *arg)
{
    svc_flight *f = arg;
    if (b->phase == SVC_BATCH_RUNNING)
        finish(f, b, "internal_error", "no result", atomic_load(&b->failures) ? SVC_B_ERROR : SVC_B_OK,
               false);
    svc_batch_free(b);
}

void svc_flight_expire_all(svc_flight *f, const char *code, const char *message)
{
    f->closed = true;
    while (f->live)
        expire(f, f->live, SVC_Q_TIMEOUT, code, message);
}

int svc_flight_running(const svc_flight *f)
{
    return f->running;
}

int svc_flight_unsent(const svc_flight *f)
{
    return f->unsent;
}

void svc_flight_free(svc_flight *f)
{
    free(f);
}
