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

struct svc_metrics {
    uint64_t http[NROUTES][NCODES + 1]; /* requests by route and code; [NCODES]: other codes */
    uint64_t batches[2][SVC_B_OUTCOMES]; /* by mode (0 parallel, 1 transaction) and outcome */
    uint64_t queries[SVC_Q_OUTCOMES];   /* queries the loop thread gave up on, by outcome */
    svc_hist batch_duration;            /* request accepted to reply assembled */
    int nworkers;                       /* entries in workers */
    svc_worker_stats *workers;          /* one per worker, 64-byte aligned */
    char *version;                      /* for fanout_build_info */
};

svc_metrics *svc_metrics_new(int nworkers, const char *version)
{
    svc_metrics *m = calloc(1, sizeof(*m));
    if (!m)
        return NULL;
    m->nworkers = nworkers;
    m->workers = aligned_alloc(64, sizeof(svc_worker_stats) * (size_t)nworkers);
    m->version = strdup(version);
    if (!m->workers || !m->version) {
        svc_metrics_free(m);
        return NULL;
    }
    memset(m->workers, 0, sizeof(svc_worker_stats) * (size_t)nworkers);
    return m;
}

void svc_metrics_free(svc_metrics *m)
{
    if (!m)
        return;
    free(m->workers);
    free(m->version);
    free(m);
}

svc_worker_stats *svc_metrics_worker(svc_metrics *m, int i)
{
    return &m->workers[i];
}

void svc_stat_inc(_Atomic uint64_t *counter)
{
    /* One writer: a relaxed load and store is enough, and cheaper than a locked add. */
    atomic_store_explicit(counter, atomic_load_explicit(counter, memory_order_relaxed) + 1,
                          memory_order_relaxed);
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

/* Render a histogram from the sum of several (one per worker, or just one). */
static void render_hist(db_buf *out, const char *name, const char *help, const svc_hist *h,
                        size_t n, size_t stride)
{
    uint64_t buckets[SVC_HIST_BUCKETS + 1] = {0}, sum_ns = 0, cum = 0;
    for (size_t w = 0; w < n; w++) {
        const svc_hist *one = (const svc_hist *)((const char *)h + w * stride);
        for (int i = 0; i <= SVC_HIST_BUCKETS; i++)
            buckets[i] += load(&one->bucket[i]);
        sum_ns += load(&one->sum_ns);
    }
    header(out, name, "histogram", help);
    for (int i = 0; i < SVC_HIST_BUCKETS; i++) {
        cum += buckets[i];
        db_buf_printf(out, "%s_bucket{le=\"%g\"} %llu\n", name, bucket_le[i],
                      (unsigned long long)cum);
    }
    cum += buckets[SVC_HIST_BUCKETS];
    db_buf_printf(out, "%s_bucket{le=\"+Inf\"} %llu\n%s_sum %.9f\n%s_count %llu\n", name,
                  (unsigned long long)cum, name, (double)sum_ns / 1e9, name,
                  (unsigned long long)cum);
}

void svc_metrics_render(svc_metrics *m, db_buf *out, uint64_t queue_depth)
{
    static const char *const modes[2] = {"parallel", "transaction"};
    uint64_t queries[SVC_Q_OUTCOMES] = {0}, reconnects = 0;
    for (int i = 0; i < SVC_Q_OUTCOMES; i++)
        queries[i] = m->queries[i];
    int busy = 0, connected = 0;

    for (int w = 0; w < m->nworkers; w++) {
        svc_worker_stats *s = &m->workers[w];
        for (int i = 0; i < SVC_Q_OUTCOMES; i++)
            queries[i] += load(&s->queries[i]);
        reconnects += load(&s->reconnects);
        busy += atomic_load_explicit(&s->busy, memory_order_relaxed);
        connected += atomic_load_explicit(&s->connected, memory_order_relaxed);
    }

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
                      (unsigned long long)queries[o]);
    render_hist(out, "fanout_batch_duration_seconds",
                "Time from accepting a batch to assembling its reply.", &m->batch_duration, 1, 0);
    render_hist(out, "fanout_query_duration_seconds",
                "Time a worker spent running one query, encoding included.",
                &m->workers[0].query_duration, (size_t)m->nworkers, sizeof(svc_worker_stats));
    render_hist(out, "fanout_queue_wait_seconds",
                "Time a job waited in the queue for a worker.", &m->workers[0].queue_wait,
                (size_t)m->nworkers, sizeof(svc_worker_stats));
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
    db_buf_printf(out, "fanout_db_reconnects_total %llu\n", (unsigned long long)reconnects);
    header(out, "fanout_build_info", "gauge", "Build information; always 1.");
    db_buf_printf(out, "fanout_build_info{version=\"%s\"} 1\n", m->version);
}
