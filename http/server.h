/*
 * http_server: fanout's HTTP front end on the loop thread (libevent evhttp).
 *
 * Routes:  POST /v1/batch   parse + validate, then hand the batch to the service
 *          GET|HEAD /healthz  200 while the process runs
 *          GET|HEAD /readyz   200 when the service says it can run queries, else 503
 *          GET|HEAD /metrics  Prometheus text from the service
 * Every request gets an X-Request-Id reply header: the client's own (when it is 1..128 visible
 * ASCII characters) or a generated one.
 * With auth_file set, every request but /healthz, /readyz (and /metrics unless metrics_auth) must
 * carry "Authorization: Bearer <secret>" matching a token of the table in force (http/auth.h);
 * otherwise it is answered 401 unauthorized with WWW-Authenticate: Bearer, before its body is
 * parsed and before anything reaches the service.
 * Anything else gets a JSON error: 404 not_found, 405 method_not_allowed (with Allow),
 * 415 unsupported_media_type, 400 bad_request, 413 too_large. A body over max_body_bytes is
 * refused by libevent itself (its own 413 page) before fanout sees it. A connection holding more
 * than max_body_bytes + 128 KiB of unparsed input (a chunk-size line that never ends) is closed.
 *
 * Threads: every function here runs on the loop thread, and so must every use of the
 * evhttp_request a handler is given. Knows HTTP and JSON; knows nothing of libpq or workers.
 */
#ifndef FANOUT_HTTP_SERVER_H
#define FANOUT_HTTP_SERVER_H

#include <stdbool.h>
#include <stddef.h>

#include "config/config.h"
#include "http/auth.h"
#include "http/request.h"

struct event_base;
struct evbuffer;
struct evhttp_request;
typedef struct http_server http_server;

/* What the service hears about every reply (for the access log and metrics). */
typedef struct http_reply_info {
    const char *method;     /* "GET", "POST", ... */
    const char *path;       /* the request path, without the query string */
    int status;             /* HTTP status sent */
    double elapsed_ms;      /* from routing the request to sending the reply */
    int queries;            /* queries in the batch (batch replies), else 0 */
    const char *mode;       /* "parallel" / "transaction" (batch replies), else NULL */
    const char *peer;       /* "host:port" of the client, "-" when it is gone */
    const char *request_id; /* X-Request-Id as received, or the one fanout generated */
    const char *token;      /* NAME of the token that authenticated it, NULL when none did */
} http_reply_info;

typedef struct http_handlers {
    /* A valid batch request: takes over desc and must complete req exactly once (now or later,
     * on the loop thread) with http_reply_json / http_reply_error. caller is the token that
     * authenticated the request, NULL when auth_file is not set; it is valid only during this
     * call (a reload may free it after), so copy what the batch needs. */
    void (*batch)(struct evhttp_request *req, http_batch_req *desc, const http_caller *caller,
                  void *arg);
    /* Whether queries can run now; when not, a one-line reason for /readyz. */
    bool (*ready)(void *arg, char *reason, size_t reasonlen);
    /* GET /metrics: append the Prometheus text exposition to out. */
    void (*metrics)(void *arg, struct evbuffer *out);
    /* Called once per reply sent, after it is queued for sending. */
    void (*replied)(void *arg, const http_reply_info *info);
    void *arg; /* passed to all of them */
} http_handlers;

/* Bind and start serving on base. The settings and handlers must outlive the server. One
 * server per process (replies find it through a module-level pointer). */
http_server *http_server_start(struct event_base *base, const cfg_settings *settings,
                               const http_handlers *handlers, char *err, size_t errlen);

/* Put table (may be NULL: every token refused) in force for the requests routed from now on,
 * freeing the one before. Takes over table. Loop thread only, so it falls between requests;
 * batches already handed to the service are unaffected. */
void http_server_set_auth_new(http_server *s, http_auth_table *table);

/* The address actually bound ("127.0.0.1:8080"; the real port when listen asked for 0). */
const char *http_server_address(const http_server *s);

/* Shutting down: every reply from now on closes its connection, so keep-alive clients move on. */
void http_server_set_draining(http_server *s);

/* Stop accepting new connections; requests on open connections are still served. */
void http_server_stop_accepting(http_server *s);

/*
 * Before replying to req (a request routed to a handler): call written(arg, true) once its reply
 * has been written to the client, or written(arg, false) when the connection fails or closes
 * first (libevent 2.1 then frees req without its on_complete callback, which this takes over).
 * Exactly one call, on the loop thread; none once http_server_free has begun. False, and no
 * call: req's connection is gone (its client left; the reply will be dropped unwritten) or is
 * not counted (a probe's).
 */
bool http_server_watch_reply(struct evhttp_request *req, void (*written)(void *arg, bool ok),
                             void *arg) __attribute__((warn_unused_result));

/*
 * Send req's client an interim "HTTP/1.1 100 Continue" straight to its socket, before the reply.
 * For a client whose read side may be gone (it sent a FIN): a socket that was closed answers the
 * bytes with a reset, one that was only half-closed takes them (an HTTP/1.1 client must accept a
 * 1xx it did not ask for). True when sent. False, and nothing sent: an HTTP/1.0 request (no 1xx
 * allowed), a TLS listener (the bytes would have to go through the session), no connection, bytes
 * already waiting to be written, or the write failed. Loop thread; at most once per request.
 */
bool http_server_send_continue(struct evhttp_request *req);

/* Whether req came as HTTP/1.0 (or older). */
bool http_server_is_http10(const struct evhttp_request *req);

/* Close every connection and free the server (pending requests must be completed first); calls
 * no reply watch. */
void http_server_free(http_server *s);

/* Complete req with status and a JSON body (moved out of body). */
void http_reply_json(struct evhttp_request *req, int status, struct evbuffer *body);

/* Complete a batch request with its 200 reply; the numbers and the name of the token that sent
 * it (desc->token) go to the access log. */
void http_reply_batch(struct evhttp_request *req, struct evbuffer *body,
                      const http_batch_req *desc, double elapsed_ms);

/* Complete req with {"error":{"code":code,"message":message}}. */
void http_reply_error(struct evhttp_request *req, int status, const char *code,
                      const char *message);

#endif
