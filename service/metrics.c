/*
 * svc_metrics: counters kept where they are written (per worker, or the loop thread), summed
 * only when /metrics is scraped. See metrics.h for the thread rules.
 */
#include "service/metrics.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static const double bucket_le[SVC_HIST_BUCKETS] = {0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025,
                                                   0.05,   0.1,   0.25,   0.5,   1,    2.5,
                                                   5,      10};
static const char *const query_outcome_names[SVC_Q_OUTCOMES] = {
    "ok", "sql_error", "timeout", "canceled", "db_unavailable", "result_too_large", "not_run"};
static const char *const batch_outcome_names[SVC_B_OUTCOMES] = {
    "ok", "error", "overloaded", "db_unavailable", "timeout", "canceled"};

/* Routes and codes counted by fanout_http_requests_total; anything else is "other". */
static const char *const routes[] = {"/v1/batch", "/healthz", "/readyz", "/metrics", "other"};
#define NROUTES (sizeof(routes) / sizeof(routes[0]))
static const int codes[] = {200, 400, 401, 404, 405, 413, 415, 500, 503};
#define NCODES (sizeof(codes) / sizeof(codes[0]))

/* The workers' stats of one role's pool. */
typedef struct role_stats {
    char *role;                /* the PostgreSQL role, owned */
    int nworkers;              /* entries in workers */
    svc_worker_stats *workers; /* one per worker of the role's pool, 64-byte aligned */
    struct role_stats *next;   /* the next role's (loop thread: added, read at scrape time) */
} role_stats;

struct svc_metrics {
    uint64_t http[NROUTES][NCODES + 1]; /* requests by route and code; [NCODES]: other codes */
    uint64_t batches[2][SVC_B_OUTCOMES]; /* by mode (0 parallel, 1 transaction) and outcome */
    uint64_t queries[SVC_Q_OUTCOMES];   /* queries the loop thread gave up on, by outcome */
    svc_hist batch_duration;            /* request accepted to reply assembled */
    int nworkers;                       /* entries in workers */
    svc_worker_stats *workers;          /* one per worker of the main pool, 64-byte aligned */
    role_stats *roles;                  /* the role pools' workers, newest first */
    char *version;                      /* for fanout_build_info */
};

/* nworkers zeroed stats, 64-byte aligned so workers never share a cache line; NULL: no memory. */
static svc_worker_stats *stats_new(int nworkers)
{
    svc_worker_stats *w = aligned_alloc(64, sizeof(svc_worker_stats) * (size_t)nworkers);
    if (w)
        memset(w, 0, sizeof(svc_worker_stats) * (size_t)nworkers);
    return w;
}

svc_metrics *svc_metrics_new(int nworkers, const char *version)
{
    svc_metrics *m = calloc(1, sizeof(*m));
    if (!m)
        return NULL;
    m->nworkers = nworkers;
    m->workers = stats_new(nworkers);
    m->version = strdup(version);
    if (!m->workers || !m->version) {
        svc_metrics_free(m);
        return NULL;
    }
    return m;
}

void svc_metrics_free(svc_metrics *m)
{
    if (!m)
        return;
    for (role_stats *r = m->roles, *next; r; r = next) {
        next = r->next;
        free(r->role);
        free(r->workers);
        free(r);
    }
    free(m->workers);
    free(m->version);
    free(m);
}

svc_worker_stats *svc_metrics_worker(svc_metrics *m, int i)
{
    return &m->workers[i];
}

svc_worker_stats *svc_metrics_role(svc_metrics *m, const char *role, int nworkers)
{
    role_stats *r = NULL;
    for (r = m->roles; r; r = r->next)
        if (strcmp(r->role, role) == 0)
            return r->workers;
    r = calloc(1, sizeof(*r));
    if (!r)
        return NULL;
    r->role = strdup(role);
    r->nworkers = nworkers;
    r->workers = stats_new(nworkers);
    if (!r->role || !r->workers) {
        free(r->role);
        free(r->workers);
        free(r);
        return NULL;
    }
    r->next = m->roles;
    m->roles = r;
    return r->workers;
}

void svc_stat_add(_Atomic uint64_t *counter, uint64_t n)
{
    /* One writer: a relaxed load and store is enough, and cheaper than a locked add. */
    atomic_store_explicit(counter, atomic_load_explicit(counter, memory_order_relaxed) + n,
                          memory_order_relaxed);
}

void svc_stat_inc(_Atomic uint64_t *counter)
{
    svc_stat_add(counter, 1);
}

void svc_hist_observe(svc_hist *h, uint64_t ns)
{
    int i = 0;
    while (i < SVC_HIST_BUCKETS && (double)ns > bucket_le[i] * 1e9)
        i++;
    svc_stat_inc(&h->bucket[i]);
    atomic_store_explicit(&h->sum_ns, atomic_load_explicit(&h->sum_ns, memory_order_relaxed) + ns,
                          memory_order_relaxed);
}

void svc_metrics_http(svc_metrics *m, const char *path, int status)
{
    size_t r = NROUTES - 1, c = NCODES;
    for (size_t i = 0; path && i < NROUTES - 1; i++)
        if (strcmp(path, routes[i]) == 0)
            r = i;
    for (size_t i = 0; i < NCODES; i++)
        if (codes[i] == status)
            c = i;
    m->http[r][c]++;
}

void svc_metrics_batch(svc_metrics *m, bool transaction, svc_batch_outcome outcome, uint64_t ns)
{
    m->batches[transaction][outcome]++;
    if (outcome != SVC_B_OVERLOADED && outcome != SVC_B_DB_UNAVAILABLE)
        svc_hist_observe(&m->batch_duration, ns);
}

void svc_metrics_queries(svc_metrics *m, svc_query_outcome outcome, uint64_t n)
{
    m->queries[outcome] += n;
}

static uint64_t load(const _Atomic uint64_t *v)
{
    return atomic_load_explicit(v, memory_order_relaxed);
}

static void header(db_buf *out, const char *name, const char *type, const char *help)
{
    db_buf_printf(out, "# HELP %s %s\n# TYPE %s %s\n", name, help, name, type);
}

/* A histogram summed over workers. */
typedef struct hist_sum {
    uint64_t bucket[SVC_HIST_BUCKETS + 1]; /* observations per bucket (not cumulative) */
    uint64_t sum_ns;                       /* sum of observations, nanoseconds */
} hist_sum;

static void hist_add(hist_sum *sum, const svc_hist *h)
{
    for (int i = 0; i <= SVC_HIST_BUCKETS; i++)
        sum->bucket[i] += load(&h->bucket[i]);
    sum->sum_ns += load(&h->sum_ns);
}

static void render_hist(db_buf *out, const char *name, const char *help, const hist_sum *h)
{
    uint64_t cum = 0;
    header(out, name, "histogram", help);
    for (int i = 0; i < SVC_HIST_BUCKETS; i++) {
        cum += h->bucket[i];
        db_buf_printf(out, "%s_bucket{le=\"%g\"} %llu\n", name, bucket_le[i],
                      (unsigned long long)cum);
    }
    cum += h->bucket[SVC_HIST_BUCKETS];
    db_buf_printf(out, "%s_bucket{le=\"+Inf\"} %llu\n%s_sum %.9f\n%s_count %llu\n", name,
                  (unsigned long long)cum, name, (double)h->sum_ns / 1e9, name,
                  (unsigned long long)cum);
}

/* What the counters and histograms add up over every pool's workers. */
typedef struct worker_sums {
    uint64_t queries[SVC_Q_OUTCOMES]; /* queries finished, by outcome */
    uint64_t reconnects;              /* connections re-established */
    uint64_t pipelines, pipelined;    /* multi-query round trips, and their queries */
    uint64_t resent;                  /* pipelined queries sent a second time */
    uint64_t batched;                 /* batches that shared a round trip with others */
    hist_sum query_duration;          /* one query's execution */
    hist_sum queue_wait;              /* a job's wait for a worker */
} worker_sums;

static void add_workers(worker_sums *sum, const svc_worker_stats *w, int n)
{
    for (int i = 0; i < n; i++) {
        for (int o = 0; o < SVC_Q_OUTCOMES; o++)
            sum->queries[o] += load(&w[i].queries[o]);
        sum->reconnects += load(&w[i].reconnects);
        sum->pipelines += load(&w[i].pipelines);
        sum->pipelined += load(&w[i].pipelined);
        sum->resent += load(&w[i].resent);
        sum->batched += load(&w[i].batched);
        hist_add(&sum->query_duration, &w[i].query_duration);
        hist_add(&sum->queue_wait, &w[i].queue_wait);
    }
}

static int connected_workers(const svc_worker_stats *w, int n)
{
    int connected = 0;
    for (int i = 0; i < n; i++)
        connected += atomic_load_explicit(&w[i].connected, memory_order_relaxed);
    return connected;
}

void svc_metrics_render(svc_metrics *m, db_buf *out, uint64_t queue_depth)
{
    static const char *const modes[2] = {"parallel", "transaction"};
    worker_sums sum = {0};
    int busy = 0, connected = connected_workers(m->workers, m->nworkers);

    for (int i = 0; i < SVC_Q_OUTCOMES; i++)
        sum.queries[i] = m->queries[i];
    add_workers(&sum, m->workers, m->nworkers);
    for (const role_stats *r = m->roles; r; r = r->next)
        add_workers(&sum, r->workers, r->nworkers);
    for (int w = 0; w < m->nworkers; w++)
        busy += atomic_load_explicit(&m->workers[w].busy, memory_order_relaxed);

    header(out, "fanout_http_requests_total", "counter", "HTTP requests answered, by route and status code.");
    for (size_t r = 0; r < NROUTES; r++)
        for (size_t c = 0; c <= NCODES; c++)
            if (m->http[r][c] || c == 0) {
                char code[8] = "other";
                if (c < NCODES)
                    snprintf(code, sizeof(code), "%d", codes[c]);
                db_buf_printf(out, "fanout_http_requests_total{route=\"%s\",code=\"%s\"} %llu\n",
                              routes[r], code, (unsigned long long)m->http[r][c]);
            }
    header(out, "fanout_batches_total", "counter", "Batches finished, by mode and outcome.");
    for (int mo = 0; mo < 2; mo++)
        for (int o = 0; o < SVC_B_OUTCOMES; o++)
            db_buf_printf(out, "fanout_batches_total{mode=\"%s\",outcome=\"%s\"} %llu\n",
                          modes[mo], batch_outcome_names[o],
                          (unsigned long long)m->batches[mo][o]);
    header(out, "fanout_queries_total", "counter", "Queries finished, by outcome.");
    for (int o = 0; o < SVC_Q_OUTCOMES; o++)
        db_buf_printf(out, "fanout_queries_total{outcome=\"%s\"} %llu\n", query_outcome_names[o],
                      (unsigned long long)sum.queries[o]);
    hist_sum batches = {0};
    hist_add(&batches, &m->batch_duration);
    render_hist(out, "fanout_batch_duration_seconds",
                "Time from accepting a batch to assembling its reply.", &batches);
    render_hist(out, "fanout_query_duration_seconds",
                "Time a worker spent running one query, encoding included.", &sum.query_duration);
    render_hist(out, "fanout_queue_wait_seconds", "Time a job waited in the queue for a worker.",
                &sum.queue_wait);
    header(out, "fanout_queue_depth", "gauge", "Jobs waiting in the queue.");
    db_buf_printf(out, "fanout_queue_depth %llu\n", (unsigned long long)queue_depth);
    header(out, "fanout_workers_busy", "gauge", "Workers running a job.");
    db_buf_printf(out, "fanout_workers_busy %d\n", busy);
    header(out, "fanout_workers", "gauge", "Worker threads.");
    db_buf_printf(out, "fanout_workers %d\n", m->nworkers);
    header(out, "fanout_db_connections", "gauge", "Workers' database connections, by state.");
    db_buf_printf(out, "fanout_db_connections{state=\"connected\"} %d\n", connected);
    db_buf_printf(out, "fanout_db_connections{state=\"disconnected\"} %d\n",
                  m->nworkers - connected);
    header(out, "fanout_db_reconnects_total", "counter",
           "Connections re-established after one was lost.");
    db_buf_printf(out, "fanout_db_reconnects_total %llu\n", (unsigned long long)sum.reconnects);
    header(out, "fanout_pipelines_total", "counter",
           "Round trips that carried several queries (libpq pipeline mode).");
    db_buf_printf(out, "fanout_pipelines_total %llu\n", (unsigned long long)sum.pipelines);
    header(out, "fanout_pipelined_queries_total", "counter", "Queries sent in those round trips.");
    db_buf_printf(out, "fanout_pipelined_queries_total %llu\n",
                  (unsigned long long)sum.pipelined);
    header(out, "fanout_pipelined_batches_total", "counter",
           "Batches in those round trips that shared them with other batches' quick reads, "
           "each behind its own session reset.");
    db_buf_printf(out, "fanout_pipelined_batches_total %llu\n",
                  (unsigned long long)sum.batched);
    header(out, "fanout_pipeline_resent_total", "counter",
           "Pipelined queries sent again on their own: the read-only transaction they shared "
           "with others failed before they ran, or refused them as writes.");
    db_buf_printf(out, "fanout_pipeline_resent_total %llu\n", (unsigned long long)sum.resent);
    header(out, "fanout_role_db_connections", "gauge",
           "Database connections of the pools of token roles, by role and state.");
    for (const role_stats *r = m->roles; r; r = r->next) {
        int up = connected_workers(r->workers, r->nworkers);
        db_buf_printf(out, "fanout_role_db_connections{role=\"%s\",state=\"connected\"} %d\n"
                      "fanout_role_db_connections{role=\"%s\",state=\"disconnected\"} %d\n",
                      r->role, up, r->role, r->nworkers - up);
    }
    header(out, "fanout_build_info", "gauge", "Build information; always 1.");
    db_buf_printf(out, "fanout_build_info{version=\"%s\"} 1\n", m->version);
}
