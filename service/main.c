/*
 * fanout: an HTTP service that runs batches of PostgreSQL queries concurrently.
 *
 * The split (see docs/DESIGN.md):
 *   - the main thread runs the libevent loop: HTTP in and out, batch bookkeeping, replies.
 *     It never calls libpq and never blocks.
 *   - svc_pool's worker threads each own one PostgreSQL connection and run the blocking libpq
 *     calls; finished batches come back to the loop through the pool's notification. svc_pools
 *     holds the main pool and, started on demand, one pool per token role.
 *
 * Shutdown (SIGTERM/SIGINT): stop accepting, let in-flight batches finish, stop the loop, join
 * the workers (closing their connections), free evhttp on the loop thread, exit 0. A second
 * signal exits at once.
 *
 * Exit codes: 0 clean shutdown, --help, --version, --check-config, or --healthcheck of a ready
 * instance; 1 start-up failure (cannot listen, no memory) or --healthcheck of an instance that is
 * not ready or not there; 2 bad command line, setting or config file.
 */
#include <malloc.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <unistd.h>

#include <event2/buffer.h>
#include <event2/event.h>
#include <event2/http.h>

#include "config/config.h"
#include "db/conn.h"
#include "http/auth.h"
#include "http/server.h"
#include "service/batch.h"
#include "service/flight.h"
#include "service/healthcheck.h"
#include "service/log.h"
#include "service/metrics.h"
#include "service/pool.h"
#include "service/pools.h"

extern char **environ;

/* After the last in-flight reply during shutdown, how long to wait for it to be written before
 * stopping anyway (a write to a stalled client may never complete). */
#define SHUTDOWN_FLUSH_GRACE_MS 1000

/* Descriptors beyond max_clients and the workers' connections: the listener, the event loop's,
 * the pools' eventfds, cancel connections, the log, libraries' files. */
#define SPARE_FDS 64

typedef struct app {
    cfg_settings settings;      /* immutable after start-up */
    struct event_base *base;    /* the loop; main thread */
    svc_metrics *metrics;       /* counters; see metrics.h for who writes what */
    svc_flight *flight;         /* batches in flight (loop thread) */
    svc_pools *pools;           /* workers: the main pool and the role pools */
    http_server *server;        /* HTTP front end */
    struct event *grace;        /* shutdown: stop even if a reply never finishes writing */
    struct event *shutdown;     /* shutdown: in-flight batches have run out of time */
    int signals;                /* termination signals received (loop thread) */
    http_auth_table *auth;      /* tokens read at start, until the server takes them over */
    struct event *sighup;       /* SIGHUP: re-read auth_file (loop thread) */
} app;

static void on_grace_expired(evutil_socket_t fd, short what, void *arg)
{
    app *a = arg;
    (void)fd;
    (void)what;
    svc_log_warn("shutdown: %d replies still unsent after the grace period",
                 svc_flight_unsent(a->flight));
    event_base_loopbreak(a->base);
}

static struct timeval ms_to_tv(int ms)
{
    return (struct timeval){ms / 1000, (ms % 1000) * 1000};
}

/*
 * During shutdown, stop the loop once every accepted batch has been replied to and the replies
 * written; a write to a stalled client may never complete, so after the last reply wait at most
 * the grace period for the writes. A batch accepted meanwhile (a keep-alive client's next
 * request) holds the grace period off: stopping the loop under it would leave its client with no
 * reply at all, and shutdown_timeout_ms still bounds it. Its reply starts the grace period anew.
 */
static void maybe_finish_shutdown(void *arg)
{
    app *a = arg;
    if (a->signals == 0)
        return;
    if (svc_flight_running(a->flight) > 0) {
        event_del(a->grace);
        return;
    }
    if (svc_flight_unsent(a->flight) == 0) {
        event_base_loopbreak(a->base);
    } else if (!event_pending(a->grace, EV_TIMEOUT, NULL)) {
        struct timeval tv = ms_to_tv(SHUTDOWN_FLUSH_GRACE_MS);
        evtimer_add(a->grace, &tv);
    }
}

static void on_shutdown_timeout(evutil_socket_t fd, short what, void *arg)
{
    app *a = arg;
    (void)fd;
    (void)what;
    svc_log_warn("shutdown: cancelling %d batches still running after shutdown_timeout_ms",
                 svc_flight_running(a->flight));
    svc_flight_expire_all(a->flight, "shutdown", "fanout shut down before this query finished");
}

static void on_batch(struct evhttp_request *req, http_batch_req *desc, const http_caller *caller,
                     void *arg)
{
    app *a = arg;
    if (caller && caller->read_only)
        desc->read_only = true;
    /* A token with a role never runs on another pool: NULL here is a refusal, not a fallback. */
    svc_flight_submit(a->flight, req, desc, svc_pools_for(a->pools, caller ? caller->role : NULL));
}

static bool on_ready(void *arg, char *reason, size_t reasonlen)
{
    app *a = arg;
    if (svc_pool_connected(svc_pools_main(a->pools)) > 0)
        return true;
    snprintf(reason, reasonlen, "no worker has a database connection");
    return false;
}

static void on_metrics(void *arg, struct evbuffer *out)
{
    app *a = arg;
    db_buf text = DB_BUF_INIT;
    svc_metrics_render(a->metrics, &text, svc_pool_queue_depth(svc_pools_main(a->pools)));
    if (!text.oom)
        evbuffer_add(out, text.data, text.len);
    db_buf_free(&text);
}

static void on_replied(void *arg, const http_reply_info *info)
{
    app *a = arg;
    svc_metrics_http(a->metrics, info->path, info->status);
    svc_access access = {.method = info->method,
                         .path = info->path,
                         .status = info->status,
                         .queries = info->queries,
                         .mode = info->mode,
                         .elapsed_ms = info->elapsed_ms,
                         .peer = info->peer,
                         .request_id = info->request_id,
                         .token = info->token};
    svc_log_access(&access);
}

static void on_signal(evutil_socket_t sig, short what, void *arg)
{
    app *a = arg;
    (void)what;
    if (a->signals++ > 0) {
        svc_log_warn("second signal %d: exiting at once", (int)sig);
        _exit(1);
    }
    svc_log_info("signal %d: shutting down after %d in-flight batches", (int)sig,
                 svc_flight_running(a->flight));
    http_server_stop_accepting(a->server);
    http_server_set_draining(a->server);
    struct timeval tv = ms_to_tv(a->settings.shutdown_timeout_ms);
    evtimer_add(a->shutdown, &tv);
    maybe_finish_shutdown(a);
}

/*
 * Read auth_file into a->auth; without one, refuse a listen address other than loopback unless
 * allow_unauthenticated. False with one line in err: a configuration error (exit 2).
 */
static bool load_auth(app *a, char *err, size_t errlen)
{
    const cfg_settings *s = &a->settings;
    if (s->auth_file)
        return (a->auth = http_auth_load(s->auth_file, err, errlen)) != NULL;
    if (!s->allow_unauthenticated && !http_auth_host_is_loopback(s->listen_host)) {
        snprintf(err, errlen, "listen %s is not a loopback address and no auth_file is set: "
                 "set auth_file, or allow_unauthenticated = true to serve without tokens",
                 s->listen);
        return false;
    }
    return true;
}

/* SIGHUP: read auth_file again and swap the new table in; a bad file leaves the old one. */
static void on_reload(evutil_socket_t sig, short what, void *arg)
{
    app *a = arg;
    http_auth_table *t = NULL;
    char err[512];
    (void)sig;
    (void)what;
    if (!a->settings.auth_file) {
        svc_log_info("SIGHUP: no auth_file to re-read");
        return;
    }
    if (!(t = http_auth_load(a->settings.auth_file, err, sizeof(err)))) {
        svc_log_error("SIGHUP: %s; the tokens loaded before stay in force", err);
        return;
    }
    svc_log_info("SIGHUP: %zu tokens from %s in force", http_auth_count(t), a->settings.auth_file);
    http_server_set_auth_new(a->server, t);
}

/* Raise the soft descriptor limit to the hard one (shells and init systems often leave 1024) and
 * warn when max_clients and the workers would not fit under it. Start-up, before any thread. */
static void raise_fd_limit(const cfg_settings *st)
{
    struct rlimit rl;
    if (getrlimit(RLIMIT_NOFILE, &rl) != 0)
        return;
    if (rl.rlim_cur < rl.rlim_max) {
        struct rlimit want = {.rlim_cur = rl.rlim_max, .rlim_max = rl.rlim_max};
        if (setrlimit(RLIMIT_NOFILE, &want) == 0)
            rl = want;
    }
    unsigned long long need =
        (unsigned long long)st->max_clients + (unsigned long long)st->workers + SPARE_FDS;
    if (rl.rlim_cur != RLIM_INFINITY && need > (unsigned long long)rl.rlim_cur)
        svc_log_warn("max_clients (%d) + workers (%d) + %d spare exceed the file descriptor "
                     "limit %llu: raise it (ulimit -n, LimitNOFILE=) or lower max_clients; past "
                     "it new connections wait until descriptors free up",
                     st->max_clients, st->workers, SPARE_FDS, (unsigned long long)rl.rlim_cur);
}

/* evhttp turns a connection's read and write interest off and on around every request: six
 * epoll_ctl calls per single-query batch, a tenth of fanout's CPU under load. With the
 * changelist, libevent sends each fd's net change once per loop pass. Its one caveat, fds
 * cloned with dup(), does not apply: the loop never watches a dup'd fd. A closed fd's removal
 * may reach epoll after another thread reused the number: ENOENT, ignored (tests/tsan.supp). */
static struct event_base *new_base(void)
{
    struct event_config *cfg = event_config_new();
    if (!cfg)
        return NULL;
    event_config_set_flag(cfg, EVENT_BASE_FLAG_EPOLL_USE_CHANGELIST);
    struct event_base *base = event_base_new_with_config(cfg);
    event_config_free(cfg);
    return base;
}

/* A conninfo libpq cannot parse is a configuration error, not something to retry forever. */
static bool check_database_setting(const cfg_settings *s, char *err, size_t errlen)
{
    db_conn_params p = {.conninfo = s->database ? s->database : "", .timezone = s->timezone};
    char **kw = NULL, **val = NULL;
    if (!db_conninfo_build(&p, &kw, &val, err, errlen))
        return false;
    db_conninfo_free(kw, val);
    return true;
}

int main(int argc, char **argv)
{
    app a = {0};
    struct event *sigterm = NULL, *sigint = NULL;
    char err[512];
    int rc = 1;

    switch (cfg_load(&a.settings, argc, argv, environ, stdout, err, sizeof(err))) {
    case CFG_OK:
        break;
    case CFG_EXIT:
        return 0;
    case CFG_ERROR:
        fprintf(stderr, "fanout: %s\n", err);
        /* Container runtimes reserve a health check's exit 2: any failure there is 1. */
        for (int i = 1; i < argc; i++)
            if (strcmp(argv[i], "--healthcheck") == 0)
                return 1;
        return CFG_EXIT_CONFIG;
    }
    if (!check_database_setting(&a.settings, err, sizeof(err))) {
        fprintf(stderr, "fanout: %s\n", err);
        cfg_free(&a.settings);
        return CFG_EXIT_CONFIG;
    }
    /* Not for --healthcheck: it only probes /readyz, which needs no token. */
    if (a.settings.action != CFG_HEALTHCHECK && !load_auth(&a, err, sizeof(err))) {
        fprintf(stderr, "fanout: %s\n", err);
        cfg_free(&a.settings);
        return CFG_EXIT_CONFIG;
    }
    if (a.settings.action != CFG_RUN) {
        char shown[1024];
        rc = 0;
        if (a.settings.action == CFG_HEALTHCHECK) {
            rc = svc_healthcheck(&a.settings);
        } else {
            db_conninfo_masked(a.settings.database, shown, sizeof(shown));
            cfg_print_effective(stdout, &a.settings, a.settings.database ? shown : NULL);
        }
        http_auth_free(a.auth);
        cfg_free(&a.settings);
        return rc;
    }
    svc_log_setup(a.settings.log_level, a.settings.log_format);
    /* glibc makes up to 8 malloc arenas per core as threads contend; more arenas than cores
     * buys nothing here and only lets freed memory scatter (RSS creeps after load spikes). */
    long cores = sysconf(_SC_NPROCESSORS_ONLN);
    mallopt(M_ARENA_MAX, cores > 2 ? (int)cores : 2);
    /* A reply of a few MB (10,000 rows: 1.3 MB) grows by realloc. Past glibc's mmap threshold
     * each one was fresh pages, faulted in one by one, and a freed arena top went back to the
     * kernel: a tenth of fanout's CPU on bench/wrk/range.lua was page faults. Buffers up to
     * 32 MB now come from the arenas, which keep up to 16 MB free for the next reply (rows/s
     * +5 to +17 % in 4 alternating pairs; RSS stays near its peak instead of halving). */
    mallopt(M_MMAP_THRESHOLD, 32 << 20);
    mallopt(M_TRIM_THRESHOLD, 16 << 20);
    /* A client that hangs up mid-reply must not kill the process. */
    signal(SIGPIPE, SIG_IGN);
    raise_fd_limit(&a.settings);

    /* No evthread_use_pthreads: only this thread touches libevent (workers hand batches back
     * through an eventfd, service/pool.c), so the base needs no locks; make tsan would show a
     * worker that did. */
    if (!(a.base = new_base())) {
        svc_log_error("cannot create the event loop");
        goto out;
    }
    if (!a.settings.database)
        svc_log_warn("no database configured: using libpq defaults (PGHOST, PGDATABASE, ...)");
    if (a.settings.auth_file)
        svc_log_info("auth: %zu tokens from %s", http_auth_count(a.auth), a.settings.auth_file);
    else if (!http_auth_host_is_loopback(a.settings.listen_host))
        svc_log_warn("allow_unauthenticated: serving %s without tokens: whoever reaches it can "
                     "run SQL as fanout's database role", a.settings.listen);
    a.metrics = svc_metrics_new(a.settings.workers, FANOUT_VERSION);
    a.grace = evtimer_new(a.base, on_grace_expired, &a);
    a.shutdown = evtimer_new(a.base, on_shutdown_timeout, &a);
    a.flight = svc_flight_new(a.base, a.metrics, maybe_finish_shutdown, &a);
    if (!a.metrics || !a.grace || !a.shutdown || !a.flight) {
        svc_log_error("out of memory");
        goto out;
    }
    a.pools = svc_pools_start(a.base, &a.settings, a.metrics, svc_flight_done, a.flight, err,
                              sizeof(err));
    if (!a.pools) {
        svc_log_error("%s", err);
        goto out;
    }
    http_handlers handlers = {.batch = on_batch,
                              .ready = on_ready,
                              .metrics = on_metrics,
                              .replied = on_replied,
                              .arg = &a};
    a.server = http_server_start(a.base, &a.settings, &handlers, err, sizeof(err));
    if (!a.server) {
        svc_log_error("%s", err);
        goto out;
    }
    http_server_set_auth_new(a.server, a.auth);
    a.auth = NULL;
    sigterm = evsignal_new(a.base, SIGTERM, on_signal, &a);
    sigint = evsignal_new(a.base, SIGINT, on_signal, &a);
    a.sighup = evsignal_new(a.base, SIGHUP, on_reload, &a);
    if (!sigterm || !sigint || !a.sighup || evsignal_add(sigterm, NULL) ||
        evsignal_add(sigint, NULL) || evsignal_add(a.sighup, NULL)) {
        svc_log_error("cannot install signal handlers");
        goto out;
    }
    svc_log_info("fanout %s listening on %s with %d workers", FANOUT_VERSION,
                 http_server_address(a.server), a.settings.workers);
    event_base_dispatch(a.base);
    rc = 0;
    svc_log_info("stopped");
out:
    /* Workers first (they may still hand batches back), then evhttp, then the loop. */
    if (!svc_pools_stop(a.pools)) {
        /* A worker is stuck on a frozen server; every reply has been sent: leave. */
        svc_log_warn("exiting with a worker still blocked on the database");
        _exit(rc);
    }
    svc_flight_free(a.flight);
    http_server_free(a.server);
    if (sigterm)
        event_free(sigterm);
    if (sigint)
        event_free(sigint);
    if (a.sighup)
        event_free(a.sighup);
    http_auth_free(a.auth);
    if (a.grace)
        event_free(a.grace);
    if (a.shutdown)
        event_free(a.shutdown);
    if (a.base)
        event_base_free(a.base);
    svc_metrics_free(a.metrics);
    cfg_free(&a.settings);
    libevent_global_shutdown();
    return rc;
}
