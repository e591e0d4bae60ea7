/*
 * http_server: evhttp set-up, routing and replies. Loop thread only; see server.h.
 *
 * HTTPS: with tls_cert_file and tls_key_file set, the server owns an http_tls (http/tls.h) made
 * before the socket is bound, so the one listener speaks only TLS from its first connection.
 */
#include "http/server.h"
#include "http/tls.h"
#include "service/log.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/random.h>
#include <sys/socket.h>
#include <time.h>

#include <event2/buffer.h>
#include <event2/bufferevent.h>
#include <event2/event.h>
#include <event2/http.h>
#include <event2/http_struct.h>
#include <event2/listener.h>
#include <event2/keyvalq_struct.h>
#include <jansson.h>

/* Request headers beyond this are refused (libevent 2.1 leaves them unlimited). */
#define MAX_HEADERS_BYTES (64 * 1024)

/* Input a connection may hold unparsed beyond a body and its headers: a read's worth and more. */
#define INPUT_SLACK_BYTES (64 * 1024)

/* How long the listener rests after accept() failed (out of descriptors), in ms; and how long
 * it must then go without a failure for the episode to be over (one log line each way). */
#define ACCEPT_PAUSE_MS 100
#define ACCEPT_QUIET_MS 1000

/* Body bytes a connection beyond max_clients may still send (see on_client_bytes): enough for a
 * batch to get its 503, and no more than its headers may take. */
#define UNCOUNTED_BODY_BYTES (64 * 1024)

/*
 * The client connections counted for max_clients. libevent 2.1 has no connection cap and no hook
 * on accept, and reads a request's whole body before route() sees it, so a connection is counted
 * from its first bytes (on_client_bytes, watching the input of the bufferevent make_bev gives
 * it), before any body is read, until its close callback (a set of evcon pointers, open
 * addressing with backward-shift deletion); one that never sends a byte is closed by
 * client_timeout_ms.
 * The set also holds each connection's watched reply (http_server_watch_reply): evhttp serves
 * one request at a time per connection, so there is at most one.
 * client_timeout_ms is also a deadline for a whole request: evhttp's own timeout is reset by
 * every byte, so a client sending one byte a second would hold its slot for ever. Each counted
 * connection's `deadline` is armed by the first byte read while no request of it is being served,
 * disarmed when route() gets the request whole, and closes the connection if it fires first.
 */
typedef struct conn_entry {
    struct evhttp_connection *evcon;      /* NULL = empty slot */
    void (*written)(void *arg, bool ok);  /* the watch on the reply being written, or NULL */
    void *written_arg;                    /* its argument */
    struct event *deadline;               /* owned timer: the request being received is late */
    bool serving;                         /* a request of it was routed and not yet replied to */
} conn_entry;

typedef struct conn_set {
    conn_entry *slot; /* cap entries */
    size_t cap;       /* a power of two, at least twice len */
    size_t len;       /* connections counted */
} conn_set;

static size_t conn_hash(const struct evhttp_connection *c, size_t cap)
{
    return (size_t)(((uintptr_t)c >> 4) * 0x9E3779B97F4A7C15ull) & (cap - 1);
}

static bool conn_find(const conn_set *set, const struct evhttp_connection *c, size_t *at)
{
    *at = 0;
    if (!set->cap)
        return false;
    for (size_t h = conn_hash(c, set->cap);; h = (h + 1) & (set->cap - 1)) {
        if (set->slot[h].evcon == c) {
            *at = h;
            return true;
        }
        if (!set->slot[h].evcon) {
            *at = h;
            return false;
        }
    }
}

/* Add c (if absent); its entry, or NULL when out of memory. The entry moves when the set grows. */
static conn_entry *conn_add(conn_set *set, struct evhttp_connection *c)
{
    size_t at;
    if ((set->len + 1) * 2 > set->cap) {
        size_t ncap = set->cap ? set->cap * 2 : 64;
        conn_entry *old = set->slot;
        size_t ocap = set->cap;
        set->slot = calloc(ncap, sizeof(*set->slot));
        if (!set->slot) {
            set->slot = old;
            return NULL;
        }
        set->cap = ncap;
        for (size_t i = 0; i < ocap; i++)
            if (old[i].evcon && !conn_find(set, old[i].evcon, &at))
                set->slot[at] = old[i];
        free(old);
    }
    if (!conn_find(set, c, &at)) {
        set->slot[at] = (conn_entry){.evcon = c};
        set->len++;
    }
    return &set->slot[at];
}

static void conn_remove(conn_set *set, struct evhttp_connection *c)
{
    size_t at;
    if (!conn_find(set, c, &at))
        return;
    set->slot[at] = (conn_entry){0};
    set->len--;
    /* Backward-shift: move later entries of the probe run into the hole. */
    for (size_t j = (at + 1) & (set->cap - 1); set->slot[j].evcon; j = (j + 1) & (set->cap - 1)) {
        size_t home = conn_hash(set->slot[j].evcon, set->cap);
        if (((j - home) & (set->cap - 1)) >= ((j - at) & (set->cap - 1))) {
            set->slot[at] = set->slot[j];
            set->slot[j] = (conn_entry){0};
            at = j;
        }
    }
}

struct http_server {
    struct evhttp *http;               /* owned */
    struct evhttp_bound_socket *bound; /* the listening socket, owned by http */
    const cfg_settings *settings;      /* not owned */
    http_handlers handlers;            /* copied at start */
    http_req_limits limits;            /* request parsing limits from the settings */
    char address[96];                  /* the bound address, for logs */
    struct timespec routed;            /* when the request being routed arrived (loop thread) */
    unsigned long long next_id;        /* next generated request id */
    conn_set clients;                  /* connections counted against max_clients */
    http_auth_table *auth;             /* tokens in force, owned; used when settings->auth_file */
    http_tls *tls;                     /* owned; NULL: plain HTTP (no tls_cert_file) */
    struct evhttp_request *routing;    /* the request being routed, during route() only */
    const char *routing_token;         /* its token's NAME (points into the table), or NULL */
    bool draining;                     /* shutting down: every reply closes its connection */
    struct event *accept_retry;        /* owned; re-enables the listener after a failed accept */
    unsigned long accept_failures;     /* failed accepts this episode; 0: none */
    struct timespec accept_failing;    /* when the episode's first one failed */
    bool accept_paused;                /* the listener is disabled until accept_retry fires */
};

/* The one server; replies reach its handlers through it. Loop thread only. */
static http_server *the_server;

static const char *method_name(enum evhttp_cmd_type cmd)
{
    switch (cmd) {
    case EVHTTP_REQ_GET: return "GET";
    case EVHTTP_REQ_POST: return "POST";
    case EVHTTP_REQ_HEAD: return "HEAD";
    case EVHTTP_REQ_PUT: return "PUT";
    case EVHTTP_REQ_DELETE: return "DELETE";
    case EVHTTP_REQ_OPTIONS: return "OPTIONS";
    case EVHTTP_REQ_TRACE: return "TRACE";
    case EVHTTP_REQ_CONNECT: return "CONNECT";
    case EVHTTP_REQ_PATCH: return "PATCH";
    }
    return "OTHER";
}

static double ms_since(const struct timespec *t0)
{
    struct timespec now;
    clock_gettime(CLOCK_MONOTONIC, &now);
    return (double)(now.tv_sec - t0->tv_sec) * 1e3 + (double)(now.tv_nsec - t0->tv_nsec) / 1e6;
}

/* Tell the service about a reply about to be sent (access log, metrics). token: the NAME of the
 * token that sent a deferred request; a reply during routing finds its own. */
static void report(struct evhttp_request *req, int status, double elapsed_ms, int queries,
                   const char *mode, const char *token)
{
    http_server *s = the_server;
    struct evhttp_connection *evcon = evhttp_request_get_connection(req);
    const struct evhttp_uri *uri = evhttp_request_get_evhttp_uri(req);
    char peer[80] = "-";
    size_t at;

    if (s && evcon && conn_find(&s->clients, evcon, &at))
        s->clients.slot[at].serving = false; /* its next request's bytes arm the deadline */
    if (!s || !s->handlers.replied)
        return;
    if (evcon) {
        char *host = NULL;
        ev_uint16_t port = 0;
        evhttp_connection_get_peer(evcon, &host, &port);
        snprintf(peer, sizeof(peer), "%s:%u", host ? host : "?", (unsigned)port);
    }
    http_reply_info info = {
        .method = method_name(evhttp_request_get_command(req)),
        .path = uri && evhttp_uri_get_path(uri) ? evhttp_uri_get_path(uri) : "",
        .status = status,
        .elapsed_ms = elapsed_ms,
        .queries = queries,
        .mode = mode,
        .peer = peer,
        .request_id = evhttp_find_header(evhttp_request_get_output_headers(req), "X-Request-Id"),
        .token = token ? token : req == s->routing ? s->routing_token : NULL,
    };
    s->handlers.replied(s->handlers.arg, &info);
}

/* libevent: a CONNECT reply has been written (req is freed after this returns). evhttp keeps a
 * CONNECT's connection open whatever its Connection header says (it would be a tunnel), so end it
 * here: the FIN follows the reply, and evhttp frees the connection when the client closes, or
 * when its next request's reply cannot be written. */
static void on_connect_replied(struct evhttp_request *req, void *arg)
{
    struct evhttp_connection *evcon = evhttp_request_get_connection(req);
    struct bufferevent *bev = evcon ? evhttp_connection_get_bufferevent(evcon) : NULL;
    evutil_socket_t fd = bev ? bufferevent_getfd(bev) : -1;
    (void)arg;
    if (fd >= 0)
        shutdown(fd, SHUT_WR);
}

/* Say body's length ourselves where libevent 2.1 does not (HEAD, CONNECT). */
static void set_content_length(struct evkeyvalq *h, struct evbuffer *body)
{
    char len[24];

    snprintf(len, sizeof(len), "%zu", body ? evbuffer_get_length(body) : 0);
    evhttp_remove_header(h, "Content-Length");
    evhttp_add_header(h, "Content-Length", len);
}

/* A HEAD reply: the GET reply's headers, Content-Length included (libevent 2.1 sends none for
 * HEAD, and would send the body), and no body. */
static void send_head(struct evhttp_request *req, int status, struct evbuffer *body)
{
    set_content_length(evhttp_request_get_output_headers(req), body);
    evhttp_send_reply(req, status, NULL, NULL);
}

static void send_reply(struct evhttp_request *req, int status, struct evbuffer *body)
{
    struct evkeyvalq *h = evhttp_request_get_output_headers(req);
    enum evhttp_cmd_type cmd = evhttp_request_get_command(req);
    evhttp_add_header(h, "Content-Type", "application/json");
    if (cmd == EVHTTP_REQ_HEAD) {
        send_head(req, status, body);
        return;
    }
    /* libevent 2.1 gives a CONNECT reply no Content-Length, so its body would run to a close
     * that never came (the client hung until client_timeout_ms). fanout never opens a tunnel:
     * frame the error and end the connection (on_connect_replied). */
    if (cmd == EVHTTP_REQ_CONNECT) {
        set_content_length(h, body);
        evhttp_remove_header(h, "Connection");
        evhttp_add_header(h, "Connection", "close");
        evhttp_request_set_on_complete_cb(req, on_connect_replied, NULL);
    }
    evhttp_send_reply(req, status, NULL, body);
}

void http_reply_json(struct evhttp_request *req, int status, struct evbuffer *body)
{
    /* Synchronous replies happen while their request is being routed. */
    report(req, status, the_server ? ms_since(&the_server->routed) : 0, 0, NULL, NULL);
    send_reply(req, status, body);
}

void http_reply_batch(struct evhttp_request *req, struct evbuffer *body,
                      const http_batch_req *desc, double elapsed_ms)
{
    bool transaction = desc->mode == HTTP_MODE_TRANSACTION;
    report(req, 200, elapsed_ms, desc->nqueries, transaction ? "transaction" : "parallel",
           desc->token);
    send_reply(req, 200, body);
}

void http_reply_error(struct evhttp_request *req, int status, const char *code,
                      const char *message)
{
    struct evbuffer *body = evbuffer_new();
    json_t *doc = json_pack("{s:{s:s,s:s}}", "error", "code", code, "message", message);
    char *text = doc ? json_dumps(doc, JSON_COMPACT) : NULL;

    if (body && text)
        evbuffer_add(body, text, strlen(text));
    else if (body) /* out of memory: still a JSON reply */
        evbuffer_add_printf(body, "{\"error\":{\"code\":\"%s\",\"message\":\"\"}}", code);
    http_reply_json(req, status, body);
    free(text);
    json_decref(doc);
    if (body)
        evbuffer_free(body);
}

static void reply_status(struct evhttp_request *req, int status, const char *json)
{
    struct evbuffer *body = evbuffer_new();
    if (body)
        evbuffer_add(body, json, strlen(json));
    http_reply_json(req, status, body);
    if (body)
        evbuffer_free(body);
}

static void method_not_allowed(struct evhttp_request *req, const char *allow)
{
    evhttp_add_header(evhttp_request_get_output_headers(req), "Allow", allow);
    http_reply_error(req, 405, "method_not_allowed", "method not allowed on this path");
}

/* "application/json", optionally followed by parameters (";charset=utf-8"), any case. */
static bool is_json_media_type(const char *ct)
{
    static const char want[] = "application/json";
    if (!ct)
        return false;
    while (*ct == ' ' || *ct == '\t')
        ct++;
    if (strncasecmp(ct, want, sizeof(want) - 1) != 0)
        return false;
    ct += sizeof(want) - 1;
    while (*ct == ' ' || *ct == '\t')
        ct++;
    return *ct == '\0' || *ct == ';';
}

static void handle_batch(http_server *s, struct evhttp_request *req, const http_caller *caller)
{
    struct evbuffer *in = evhttp_request_get_input_buffer(req);
    const char *ct = evhttp_find_header(evhttp_request_get_input_headers(req), "Content-Type");
    http_batch_req *desc = NULL;
    char err[256];

    if (evhttp_request_get_command(req) != EVHTTP_REQ_POST) {
        method_not_allowed(req, "POST");
        return;
    }
    if (!is_json_media_type(ct)) {
        http_reply_error(req, 415, "unsupported_media_type",
                         "the request body must be application/json");
        return;
    }
    size_t len = evbuffer_get_length(in);
    if (len > (size_t)s->settings->max_body_bytes) { /* libevent enforces it; be sure anyway */
        http_reply_error(req, 413, "too_large", "the request body exceeds max_body_bytes");
        return;
    }
    const char *body = len ? (const char *)evbuffer_pullup(in, -1) : "";
    if (!http_request_parse(body, len, &s->limits, &desc, err, sizeof(err))) {
        http_reply_error(req, 400, "bad_request", err);
        return;
    }
    /* A copy: a reload may free the caller before the batch is answered. */
    if (caller && !(desc->token = strdup(caller->name))) {
        http_batch_req_free(desc);
        http_reply_error(req, 500, "internal_error", "out of memory");
        return;
    }
    s->handlers.batch(req, desc, caller, s->handlers.arg);
}

static void handle_probe(http_server *s, struct evhttp_request *req, bool readiness)
{
    enum evhttp_cmd_type cmd = evhttp_request_get_command(req);
    char reason[256] = "";

    if (cmd != EVHTTP_REQ_GET && cmd != EVHTTP_REQ_HEAD) {
        method_not_allowed(req, "GET, HEAD");
        return;
    }
    if (!readiness) {
        reply_status(req, 200, "{\"status\":\"ok\"}");
    } else if (s->handlers.ready(s->handlers.arg, reason, sizeof(reason))) {
        reply_status(req, 200, "{\"status\":\"ready\"}");
    } else {
        json_t *doc = json_pack("{s:s,s:s}", "status", "unavailable", "reason", reason);
        char *text = doc ? json_dumps(doc, JSON_COMPACT) : NULL;
        reply_status(req, 503, text ? text : "{\"status\":\"unavailable\"}");
        free(text);
        json_decref(doc);
    }
}

static void handle_metrics(http_server *s, struct evhttp_request *req)
{
    enum evhttp_cmd_type cmd = evhttp_request_get_command(req);
    struct evbuffer *body = NULL;

    if (cmd != EVHTTP_REQ_GET && cmd != EVHTTP_REQ_HEAD) {
        method_not_allowed(req, "GET, HEAD");
        return;
    }
    if (!(body = evbuffer_new())) {
        http_reply_error(req, 500, "internal_error", "out of memory");
        return;
    }
    s->handlers.metrics(s->handlers.arg, body);
    report(req, 200, ms_since(&s->routed), 0, NULL, NULL);
    evhttp_add_header(evhttp_request_get_output_headers(req), "Content-Type",
                      "text/plain; version=0.0.4; charset=utf-8");
    if (cmd == EVHTTP_REQ_HEAD)
        send_head(req, 200, body);
    else
        evhttp_send_reply(req, 200, NULL, body);
    evbuffer_free(body);
}

/* A client's X-Request-Id is kept when it is 1..128 visible ASCII characters. */
static bool usable_request_id(const char *id)
{
    size_t n = 0;
    for (; id && id[n]; n++)
        if (id[n] <= ' ' || id[n] > '~' || n >= 128)
            return false;
    return n > 0;
}

/* libevent: a counted connection is closing, after an error or a timeout too. A reply still
 * being written on it is freed without its on_complete callback (and libevent 2.1 runs no
 * error callback for a server's request), so tell its watch here. */
static void on_client_closed(struct evhttp_connection *evcon, void *arg)
{
    http_server *s = arg;
    conn_entry gone = {0};
    size_t at;
    if (conn_find(&s->clients, evcon, &at))
        gone = s->clients.slot[at];
    conn_remove(&s->clients, evcon);
    if (gone.deadline)
        event_free(gone.deadline); /* also when it is the one firing: it is not used after */
    if (gone.written)
        gone.written(gone.written_arg, false);
}

/* libevent: a watched reply has been written (req is freed after this returns). */
static void on_reply_written(struct evhttp_request *req, void *arg)
{
    http_server *s = arg;
    struct evhttp_connection *evcon = evhttp_request_get_connection(req);
    conn_entry done;
    size_t at;
    if (!evcon || !conn_find(&s->clients, evcon, &at) || !s->clients.slot[at].written)
        return;
    done = s->clients.slot[at];
    /* Cleared first: a reply that closes the connection runs on_client_closed next. */
    s->clients.slot[at].written = NULL;
    s->clients.slot[at].written_arg = NULL;
    done.written(done.written_arg, true);
}

bool http_server_watch_reply(struct evhttp_request *req, void (*written)(void *arg, bool ok),
                             void *arg)
{
    http_server *s = the_server;
    struct evhttp_connection *evcon = evhttp_request_get_connection(req);
    size_t at;
    /* No connection: libevent detached the request when its client went; the reply is dropped. */
    if (!s || !evcon || !conn_find(&s->clients, evcon, &at) || s->clients.slot[at].written)
        return false;
    s->clients.slot[at].written = written;
    s->clients.slot[at].written_arg = arg;
    evhttp_request_set_on_complete_cb(req, on_reply_written, s);
    return true;
}

/* Timer: a counted connection's request did not come whole within client_timeout_ms of its first
 * byte. evhttp is not running here, so the connection can be freed (its close callback frees this
 * timer). arg: the connection. */
static void on_request_deadline(evutil_socket_t fd, short what, void *arg)
{
    http_server *s = the_server;
    struct evhttp_connection *evcon = arg;
    size_t at;
    (void)fd;
    (void)what;
    if (!s || !conn_find(&s->clients, evcon, &at) || s->clients.slot[at].serving)
        return;
    svc_log_info("closing a client connection: no whole request within client_timeout_ms (%d ms)",
                 s->settings->client_timeout_ms);
    evhttp_connection_free(evcon);
}

/* Start the request deadline of counted connection e, unless it runs already or a request of it
 * is being served. */
static void arm_deadline(http_server *s, conn_entry *e)
{
    struct timeval tv = {s->settings->client_timeout_ms / 1000,
                         (s->settings->client_timeout_ms % 1000) * 1000};
    if (e->deadline && !e->serving && !evtimer_pending(e->deadline, NULL))
        evtimer_add(e->deadline, &tv);
}

/* route() has req whole: its connection's deadline stops until the reply (report) is sent. */
static void begin_serving(http_server *s, struct evhttp_request *req)
{
    struct evhttp_connection *evcon = evhttp_request_get_connection(req);
    size_t at;
    if (!evcon || !conn_find(&s->clients, evcon, &at))
        return;
    s->clients.slot[at].serving = true;
    if (s->clients.slot[at].deadline)
        evtimer_del(s->clients.slot[at].deadline);
}

bool http_server_is_http10(const struct evhttp_request *req)
{
    return req->major < 1 || (req->major == 1 && req->minor == 0);
}

bool http_server_send_continue(struct evhttp_request *req)
{
    static const char line[] = "HTTP/1.1 100 Continue\r\n\r\n";
    http_server *s = the_server;
    struct evhttp_connection *evcon = evhttp_request_get_connection(req);
    struct bufferevent *bev = evcon ? evhttp_connection_get_bufferevent(evcon) : NULL;
    evutil_socket_t fd = bev ? bufferevent_getfd(bev) : -1;

    if (!s || s->tls || fd < 0 || req->major != 1 || req->minor < 1 ||
        evbuffer_get_length(bufferevent_get_output(bev)) > 0)
        return false;
    /* evhttp writes nothing while the request is being served, so the line goes out whole (an
     * empty send buffer takes it) and ahead of the reply. */
    return send(fd, line, sizeof(line) - 1, MSG_NOSIGNAL | MSG_DONTWAIT) == sizeof(line) - 1;
}

/* Count evcon against max_clients: its entry, or NULL when they are all taken (or out of
 * memory). */
static conn_entry *count_client(http_server *s, struct evhttp_connection *evcon)
{
    struct event *deadline = NULL;
    conn_entry *e = NULL;
    if (s->clients.len >= (size_t)s->settings->max_clients)
        return NULL;
    deadline = evtimer_new(evhttp_connection_get_base(evcon), on_request_deadline, evcon);
    if (!deadline || !(e = conn_add(&s->clients, evcon))) {
        if (deadline)
            event_free(deadline);
        return NULL;
    }
    e->deadline = deadline;
    evhttp_connection_set_closecb(evcon, on_client_closed, s);
    /* It may have been held to UNCOUNTED_BODY_BYTES while beyond the cap. */
    evhttp_connection_set_max_body_size(evcon, s->settings->max_body_bytes);
    return e;
}

/*
 * evbuffer callback on a connection's input: bytes came, and evhttp has not parsed them yet.
 * Counts the connection on its first bytes. One beyond max_clients is not refused here: its path
 * is not known before libevent has read the whole request, and a probe must still be answered
 * (route). A probe has no body, so such a connection may send its headers but only
 * UNCOUNTED_BODY_BYTES of body: a small batch reaches route() and gets its 503, a larger body is
 * answered 413 by libevent, which closes the connection without reading it. It is counted on
 * later bytes once a slot is free. Any connection whose unparsed input passes max_body_bytes +
 * MAX_HEADERS_BYTES + INPUT_SLACK_BYTES is closed without a reply.
 */
static void on_client_bytes(struct evbuffer *in, const struct evbuffer_cb_info *info, void *arg)
{
    http_server *s = the_server;
    struct bufferevent *bev = arg;
    void *evcon = NULL;
    size_t at;

    if (!s || info->n_added == 0)
        return;
    /* libevent bounds the headers and the body but reads a chunk-size line with no limit, so a
     * line that never ends would be buffered whole. Past the bound: stop reading and fail the
     * connection through evhttp's own error path, deferred (libevent is still using bev here),
     * so evhttp frees it cleanly and the close callback runs as for any hang-up. */
    size_t cap = (size_t)s->settings->max_body_bytes + MAX_HEADERS_BYTES + INPUT_SLACK_BYTES;
    if (evbuffer_get_length(in) > cap) {
        bufferevent_data_cb reading = NULL;
        bufferevent_getcb(bev, &reading, NULL, NULL, NULL);
        if (!reading) {
            /* evhttp is writing a reply (it reads on only to see a close): this is what the
             * client pipelined behind it, unparsed for now, not one endless line. Stop reading
             * until evhttp reads the next request (it enables reading again then). */
            bufferevent_disable(bev, EV_READ);
            return;
        }
        if (info->orig_size <= cap)
            svc_log_info("closing a client connection: over %zu bytes of its request unparsed",
                         cap);
        bufferevent_disable(bev, EV_READ);
        bufferevent_trigger_event(bev, BEV_EVENT_READING | BEV_EVENT_ERROR,
                                  BEV_TRIG_DEFER_CALLBACKS);
        return;
    }
    /* evhttp gives every callback it sets on its bufferevent the connection as argument. */
    bufferevent_getcb(bev, NULL, NULL, NULL, &evcon);
    if (!evcon)
        return;
    conn_entry *e =
        conn_find(&s->clients, evcon, &at) ? &s->clients.slot[at] : count_client(s, evcon);
    if (e) {
        arm_deadline(s, e);
        return;
    }
    long most = s->settings->max_body_bytes;
    evhttp_connection_set_max_body_size(evcon, most < UNCOUNTED_BODY_BYTES ? most
                                                                           : UNCOUNTED_BODY_BYTES);
}

/* evhttp's bufferevent callback: a new connection's bufferevent (TLS when configured), its fd set
 * later by evhttp, its input watched by on_client_bytes. NULL (out of memory) makes evhttp use a
 * plain one of its own, which route() counts (and refuses on a TLS listener). */
static struct bufferevent *make_bev(struct event_base *base, void *arg)
{
    http_server *s = arg;
    struct bufferevent *bev = s->tls ? http_tls_new_bev(s->tls, base) : NULL;

    if (!bev) /* plain HTTP; or no SSL (out of memory): http_tls_is_secure refuses it */
        bev = bufferevent_socket_new(base, -1, 0); /* what evhttp makes itself */
    if (bev)
        evbuffer_add_cb(bufferevent_get_input(bev), on_client_bytes, bev);
    return bev;
}

/* Count the request's connection; false when it is a new one beyond max_clients. */
static bool admit_client(http_server *s, struct evhttp_request *req)
{
    struct evhttp_connection *evcon = evhttp_request_get_connection(req);
    size_t at;
    if (!evcon || conn_find(&s->clients, evcon, &at))
        return true;
    if (!count_client(s, evcon))
        return false;
    begin_serving(s, req); /* counted just now: its request is already whole */
    return true;
}

/* Whether a request needs a token (when auth_file is set): all but GET of the probes, and of
 * /metrics by metrics_auth (HEAD too: it works wherever GET does). Unknown paths and other
 * methods too, so their 404 or 405 tells an outsider nothing. */
static bool needs_token(const http_server *s, const char *path, enum evhttp_cmd_type cmd)
{
    if (cmd != EVHTTP_REQ_GET && cmd != EVHTTP_REQ_HEAD)
        return true;
    if (strcmp(path, "/healthz") == 0 || strcmp(path, "/readyz") == 0)
        return false;
    if (strcmp(path, "/metrics") == 0)
        return s->settings->metrics_auth;
    return true;
}

/*
 * Check req's Authorization header against the tokens in force. True with *caller set (NULL when
 * auth_file is not set); false after replying 401 (500 when libcrypto failed). The secret is
 * neither logged nor echoed; two Authorization headers count as malformed.
 */
static bool authenticate(http_server *s, struct evhttp_request *req, const http_caller **caller)
{
    struct evkeyvalq *in = evhttp_request_get_input_headers(req);
    struct evkeyval *kv;
    const char *value = NULL, *message;
    int seen = 0;
    http_auth_result res;

    *caller = NULL;
    if (!s->settings->auth_file)
        return true;
    for (kv = in->tqh_first; kv; kv = kv->next.tqe_next)
        if (strcasecmp(kv->key, "Authorization") == 0 && seen++ == 0)
            value = kv->value;
    res = seen > 1 ? HTTP_AUTH_MALFORMED : http_auth_check(s->auth, value, caller);
    switch (res) {
    case HTTP_AUTH_OK:
        return true;
    case HTTP_AUTH_ERROR:
        http_reply_error(req, 500, "internal_error", "cannot check the token");
        return false;
    case HTTP_AUTH_MISSING:
        message = "this request needs an Authorization: Bearer token";
        break;
    case HTTP_AUTH_MALFORMED:
        message = "the Authorization header must be one \"Bearer <token>\"";
        break;
    case HTTP_AUTH_WRONG:
    default:
        message = "the token is not valid";
        break;
    }
    /* RFC 6750 3: a bare challenge when no credentials came, invalid_token otherwise. */
    evhttp_add_header(evhttp_request_get_output_headers(req), "WWW-Authenticate",
                      res == HTTP_AUTH_MISSING
                          ? "Bearer realm=\"fanout\""
                          : "Bearer realm=\"fanout\", error=\"invalid_token\"");
    http_reply_error(req, 401, "unauthorized", message);
    return false;
}

/* Whether libevent 2.1 reads a body for this method (evhttp_method_may_have_body): it skips the
 * body of HEAD, TRACE and every method it does not know. */
static bool method_reads_body(enum evhttp_cmd_type cmd)
{
    switch (cmd) {
    case EVHTTP_REQ_GET:
    case EVHTTP_REQ_POST:
    case EVHTTP_REQ_PUT:
    case EVHTTP_REQ_DELETE:
    case EVHTTP_REQ_OPTIONS:
    case EVHTTP_REQ_CONNECT:
    case EVHTTP_REQ_PATCH:
        return true;
    default:
        return false;
    }
}

/* Whether the request announces a body: a Transfer-Encoding, or a Content-Length other than 0. */
static bool announces_body(struct evhttp_request *req)
{
    struct evkeyvalq *in = evhttp_request_get_input_headers(req);
    for (struct evkeyval *kv = in->tqh_first; kv; kv = kv->next.tqe_next) {
        if (strcasecmp(kv->key, "Transfer-Encoding") == 0)
            return true;
        if (strcasecmp(kv->key, "Content-Length") == 0) {
            const char *v = kv->value + strspn(kv->value, " \t");
            size_t zeros = strspn(v, "0");
            if (zeros == 0 || v[zeros + strspn(v + zeros, " \t")] != '\0')
                return true;
        }
    }
    return false;
}

static void route(struct evhttp_request *req, void *arg)
{
    http_server *s = arg;
    const struct evhttp_uri *uri = evhttp_request_get_evhttp_uri(req);
    const char *path = uri ? evhttp_uri_get_path(uri) : NULL;
    const char *id = evhttp_find_header(evhttp_request_get_input_headers(req), "X-Request-Id");
    const http_caller *caller = NULL;
    char made[24];

    clock_gettime(CLOCK_MONOTONIC, &s->routed);
    begin_serving(s, req);
    if (!usable_request_id(id)) {
        snprintf(made, sizeof(made), "%016llx", s->next_id++);
        id = made;
    }
    evhttp_add_header(evhttp_request_get_output_headers(req), "X-Request-Id", id);
    /* A body libevent did not read would be parsed as the next request on the connection
     * (smuggling): answer this one and close. Every such reply is sent from route() itself. */
    if (!method_reads_body(evhttp_request_get_command(req)) && announces_body(req))
        evhttp_add_header(evhttp_request_get_output_headers(req), "Connection", "close");
    /* Never serve a connection that came without TLS to a TLS listener (see http/tls.h). */
    if (s->tls && !http_tls_is_secure(evhttp_request_get_connection(req))) {
        evhttp_add_header(evhttp_request_get_output_headers(req), "Connection", "close");
        http_reply_error(req, 400, "bad_request", "this port serves HTTPS only");
        return;
    }

    if (s->draining)
        evhttp_add_header(evhttp_request_get_output_headers(req), "Connection", "close");
    /* Probes are exempt from max_clients: a liveness check must not fail under load. A
     * connection beyond the cap gets here with a small body or none (on_client_bytes). */
    bool probe = path && (strcmp(path, "/healthz") == 0 || strcmp(path, "/readyz") == 0);
    size_t at;
    if (probe && !conn_find(&s->clients, evhttp_request_get_connection(req), &at))
        /* Answered, but not kept: an uncounted connection that probes now and then would
         * otherwise stay open for ever, past the cap (its deadline is only for counted ones). */
        evhttp_add_header(evhttp_request_get_output_headers(req), "Connection", "close");
    if (!probe && !admit_client(s, req)) {
        struct evkeyvalq *h = evhttp_request_get_output_headers(req);
        evhttp_add_header(h, "Connection", "close");
        evhttp_add_header(h, "Retry-After", "1");
        http_reply_error(req, 503, "overloaded", "too many client connections; retry later");
        return;
    }
    /* Before the body is parsed and before the service hears of the request. */
    if (path && needs_token(s, path, evhttp_request_get_command(req)) &&
        !authenticate(s, req, &caller))
        return;
    s->routing = req;
    s->routing_token = caller ? caller->name : NULL;
    if (!path)
        http_reply_error(req, 400, "bad_request", "malformed request target");
    else if (strcmp(path, "/v1/batch") == 0)
        handle_batch(s, req, caller);
    else if (strcmp(path, "/healthz") == 0)
        handle_probe(s, req, false);
    else if (strcmp(path, "/readyz") == 0)
        handle_probe(s, req, true);
    else if (strcmp(path, "/metrics") == 0)
        handle_metrics(s, req);
    else
        http_reply_error(req, 404, "not_found", "no such route");
    s->routing = NULL;
    s->routing_token = NULL;
}

/*
 * libevent: accept() failed with an error it does not retry itself (EMFILE, ENFILE, ENOBUFS...).
 * The socket stays readable, so without this the listener would try again at once, forever: a
 * core at 100 % and a line on stderr each time. Pause it, try again ACCEPT_PAUSE_MS later, and log
 * once per episode: failures with no ACCEPT_QUIET_MS between them (on_accept_retry logs its end).
 * ctx is evhttp's, not ours.
 */
static void on_accept_error(struct evconnlistener *lev, void *ctx)
{
    http_server *s = the_server;
    int err = EVUTIL_SOCKET_ERROR();
    struct timeval pause = {0, ACCEPT_PAUSE_MS * 1000};

    (void)ctx;
    evconnlistener_disable(lev);
    if (!s)
        return;
    s->accept_paused = true;
    if (s->accept_failures++ == 0) {
        clock_gettime(CLOCK_MONOTONIC, &s->accept_failing);
        svc_log_warn("cannot accept connections on %s: %s; retrying every %d ms", s->address,
                     evutil_socket_error_to_string(err), ACCEPT_PAUSE_MS);
    }
    evtimer_add(s->accept_retry, &pause);
}

/* Timer: the listener rested after a failed accept: listen again, and end the episode once it
 * has gone ACCEPT_QUIET_MS without a failure (a failure re-arms this timer first). */
static void on_accept_retry(evutil_socket_t fd, short what, void *arg)
{
    http_server *s = arg;
    struct timeval quiet = {ACCEPT_QUIET_MS / 1000, (ACCEPT_QUIET_MS % 1000) * 1000};
    (void)fd;
    (void)what;
    if (!s->bound)
        return;
    if (s->accept_paused) {
        s->accept_paused = false;
        evconnlistener_enable(evhttp_bound_socket_get_listener(s->bound));
        evtimer_add(s->accept_retry, &quiet);
        return;
    }
    svc_log_info("accepting connections again after %lu failed accepts in %.0f ms",
                 s->accept_failures, ms_since(&s->accept_failing));
    s->accept_failures = 0;
}

static void format_address(http_server *s)
{
    struct sockaddr_storage ss;
    socklen_t sl = sizeof(ss);
    char host[INET6_ADDRSTRLEN] = "?";
    int port = 0;

    if (getsockname(evhttp_bound_socket_get_fd(s->bound), (struct sockaddr *)&ss, &sl) == 0) {
        if (ss.ss_family == AF_INET6) {
            struct sockaddr_in6 *a = (struct sockaddr_in6 *)&ss;
            inet_ntop(AF_INET6, &a->sin6_addr, host, sizeof(host));
            port = ntohs(a->sin6_port);
            snprintf(s->address, sizeof(s->address), "[%s]:%d", host, port);
            return;
        }
        struct sockaddr_in *a = (struct sockaddr_in *)&ss;
        inet_ntop(AF_INET, &a->sin_addr, host, sizeof(host));
        port = ntohs(a->sin_port);
    }
    snprintf(s->address, sizeof(s->address), "%s:%d", host, port);
}

http_server *http_server_start(struct event_base *base, const cfg_settings *settings,
                               const http_handlers *handlers, char *err, size_t errlen)
{
    http_server *s = calloc(1, sizeof(*s));
    if (!s || !(s->http = evhttp_new(base)) ||
        !(s->accept_retry = evtimer_new(base, on_accept_retry, s))) {
        snprintf(err, errlen, "out of memory starting the HTTP server");
        goto fail;
    }
    s->settings = settings;
    s->handlers = *handlers;
    s->limits = (http_req_limits){.max_queries = settings->max_queries,
                                  .max_params = settings->max_params,
                                  .max_rows = settings->max_rows,
                                  .default_timeout_ms = settings->batch_timeout_ms,
                                  .max_timeout_ms = settings->max_batch_timeout_ms,
                                  .max_depth = HTTP_DEFAULT_MAX_DEPTH};
    /* Let every method through, the ones libevent does not know too (its internal
     * EVHTTP_REQ_UNKNOWN_ bit), so fanout answers 404/405 itself instead of libevent's 501. */
    evhttp_set_allowed_methods(s->http, 0xffff);
    evhttp_set_max_body_size(s->http, settings->max_body_bytes);
    evhttp_set_max_headers_size(s->http, MAX_HEADERS_BYTES);
    struct timeval client_timeout = {settings->client_timeout_ms / 1000,
                                     (settings->client_timeout_ms % 1000) * 1000};
    evhttp_set_timeout_tv(s->http, &client_timeout);
    evhttp_set_gencb(s->http, route, s);
    if (settings->tls_cert_file &&
        !(s->tls = http_tls_new(settings->tls_cert_file, settings->tls_key_file, err, errlen)))
        goto fail;
    evhttp_set_bevcb(s->http, make_bev, s);
    s->bound = evhttp_bind_socket_with_handle(s->http, settings->listen_host,
                                              (ev_uint16_t)settings->listen_port);
    if (!s->bound) {
        snprintf(err, errlen, "cannot listen on %s: %s", settings->listen,
                 evutil_socket_error_to_string(EVUTIL_SOCKET_ERROR()));
        goto fail;
    }
    format_address(s);
    evconnlistener_set_error_cb(evhttp_bound_socket_get_listener(s->bound), on_accept_error);
    /* Replies go out in two writes (head, body): with Nagle the second waits for the client's
     * delayed ACK, ~40 ms. Accepted sockets inherit TCP_NODELAY from the listener on Linux. */
    int one = 1;
    setsockopt(evhttp_bound_socket_get_fd(s->bound), IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
    /* Ids differ across restarts: start the counter at a random point. */
    if (getrandom(&s->next_id, sizeof(s->next_id), GRND_NONBLOCK) != sizeof(s->next_id))
        s->next_id = (unsigned long long)time(NULL) << 20;
    the_server = s;
    return s;
fail:
    http_server_free(s);
    return NULL;
}

void http_server_set_auth_new(http_server *s, http_auth_table *table)
{
    http_auth_free(s->auth);
    s->auth = table;
}

const char *http_server_address(const http_server *s)
{
    return s->address;
}

void http_server_set_draining(http_server *s)
{
    s->draining = true;
}

void http_server_stop_accepting(http_server *s)
{
    if (s->bound) {
        evhttp_del_accept_socket(s->http, s->bound);
        s->bound = NULL;
    }
    if (s->accept_retry)
        evtimer_del(s->accept_retry);
}

void http_server_free(http_server *s)
{
    if (!s)
        return;
    if (the_server == s)
        the_server = NULL;
    /* The loop has stopped: nobody waits for the replies evhttp_free drops. */
    for (size_t i = 0; i < s->clients.cap; i++)
        s->clients.slot[i].written = NULL;
    if (s->http)
        evhttp_free(s->http); /* runs the close callbacks: the set empties */
    for (size_t i = 0; i < s->clients.cap; i++) /* in case one did not run */
        if (s->clients.slot[i].evcon && s->clients.slot[i].deadline)
            event_free(s->clients.slot[i].deadline);
    http_tls_free(s->tls); /* after the connections that used it */
    if (s->accept_retry)
        event_free(s->accept_retry);
    free(s->clients.slot);
    http_auth_free(s->auth);
    free(s);
}
