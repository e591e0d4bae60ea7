/*
 * http_server: fanout's HTTP front end on the loop thread (libevent evhttp).
 *
 * Routes:  POST /v1/batch   parse + validate, then hand the batch to the service
 *          GET|HEAD /healthz  200 while the process runs
 *          GET|HEAD /readyz   200 when the service says it can run queries, else 503
 * Anything else gets a JSON error: 404 not_found, 405 method_not_allowed (with Allow),
 * 415 unsupported_media_type, 400 bad_request, 413 too_large. A body over max_body_bytes is
 * refused by libevent itself (its own 413 page) before fanout sees it.
 *
 * Threads: every function here runs on the loop thread, and so must every use of the
 * evhttp_request a handler is given. Knows HTTP and JSON; knows nothing of libpq or workers.
 */
#ifndef FANOUT_HTTP_SERVER_H
#define FANOUT_HTTP_SERVER_H

#include <stdbool.h>
#include <stddef.h>

#include "config/config.h"
#include "http/request.h"

struct event_base;
struct evbuffer;
struct evhttp_request;
typedef struct http_server http_server;

typedef struct http_handlers {
    /* A valid batch request: takes over desc and must complete req exactly once (now or later,
     * on the loop thread) with http_reply_json / http_reply_error. */
    void (*batch)(struct evhttp_request *req, http_batch_req *desc, void *arg);
    /* Whether queries can run now; when not, a one-line reason for /readyz. */
    bool (*ready)(void *arg, char *reason, size_t reasonlen);
    void *arg; /* passed to both */
} http_handlers;

/* Bind and start serving on base. The settings and handlers must outlive the server. */
http_server *http_server_start(struct event_base *base, const cfg_settings *settings,
                               const http_handlers *handlers, char *err, size_t errlen);

/* The address actually bound ("127.0.0.1:8080"; the real port when listen asked for 0). */
const char *http_server_address(const http_server *s);

/* Stop accepting new connections; requests on open connections are still served. */
void http_server_stop_accepting(http_server *s);

/* Close every connection and free the server (pending requests must be completed first). */
void http_server_free(http_server *s);

/* Complete req with status and a JSON body (moved out of body). */
void http_reply_json(struct evhttp_request *req, int status, struct evbuffer *body);

/* Complete req with {"error":{"code":code,"message":message}}. */
void http_reply_error(struct evhttp_request *req, int status, const char *code,
                      const char *message);

#endif
