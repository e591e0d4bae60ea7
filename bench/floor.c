/* bench/floor.c: the floor under workload (d) of `make bench`, with no HTTP, JSON or queue.
 *
 * A batch of N x `SELECT pg_sleep($1)` (N = --connections), one on each connection, started
 * together by a coordinator thread and finished when the last result is read; it reports each
 * batch's wall time as a median and p99 on a RESULT line in the form bench/report.py reads from
 * wrk. What is left between this and fanout's (d) is fanout's own part: HTTP, the JSON, the queue.
 *
 *   --threads N   (= --connections) a thread per connection, as fanout's workers are; or 1: one
 *                 thread drives every connection, non-blocking (an event loop's design)
 *   --reset       each statement inside what fanout sends for a lone read: BEGIN READ ONLY, the
 *                 query, the reset's check, ROLLBACK, one sync (db/session.c's statements, with
 *                 the same SQL, prepared); without it the query alone and a sync
 * Every statement is prepared once per connection and sent with libpq's pipeline mode, as fanout
 * sends them. Nothing here is shared between threads but the semaphores and one atomic counter;
 * each PGconn belongs to one thread for the whole run.
 *
 *   build/bench-floor --database DSN [--connections 64] [--threads 64] [--reset]
 *                     [--sleep 0.01] [--seconds 10] [--warmup 2]
 */
#include <getopt.h>
#include <libpq-fe.h>
#include <poll.h>
#include <pthread.h>
#include <semaphore.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#define FLOOR_MAX_CONNS 1024

static const struct {
    const char *name, *sql;
} stmts[] = {
    {"floor_begin", "BEGIN READ ONLY"},
    {"floor_query", "SELECT pg_sleep($1)"},
    {"floor_check", "SELECT pg_catalog.pg_advisory_unlock_all(), count(*) FILTER (WHERE from_sql), "
                    "count(*) FILTER (WHERE NOT from_sql) FROM pg_catalog.pg_prepared_statements"},
    {"floor_rollback", "ROLLBACK"},
};

struct driver { /* one thread and the connections it alone uses */
    pthread_t thread;
    sem_t go;
    PGconn **conns;
    int n;
};

static struct {
    int conns, threads, seconds, warmup;
    bool reset;
    const char *sleep;
    struct driver *drivers;
    sem_t done;
    atomic_int left;   /* connections of the current batch still running */
    atomic_int errors; /* statements that did not succeed */
    atomic_bool stop;
} fl = {.conns = 64, .threads = -1, .seconds = 10, .warmup = 2, .sleep = "0.01"};

static double now_ms(void)
{
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return t.tv_sec * 1e3 + t.tv_nsec / 1e6;
}

static bool send_batch(PGconn *c)
{
    const char *param[1] = {fl.sleep};
    bool ok = true;

    if (fl.reset)
        ok = PQsendQueryPrepared(c, stmts[0].name, 0, NULL, NULL, NULL, 0);
    ok = ok && PQsendQueryPrepared(c, stmts[1].name, 1, param, NULL, NULL, 0);
    if (fl.reset)
        ok = ok && PQsendQueryPrepared(c, stmts[2].name, 0, NULL, NULL, NULL, 0) &&
             PQsendQueryPrepared(c, stmts[3].name, 0, NULL, NULL, NULL, 0);
    return ok && PQpipelineSync(c) && PQflush(c) == 0;
}

/* Read what has arrived on c; true once its sync is in (the connection's part is over). */
static bool read_some(PGconn *c)
{
    if (!PQconsumeInput(c))
        return atomic_fetch_add(&fl.errors, 1), true;
    while (!PQisBusy(c)) {
        PGresult *r = PQgetResult(c);
        if (!r)
            continue; /* between two statements' results */
        ExecStatusType st = PQresultStatus(r);
        PQclear(r);
        if (st == PGRES_PIPELINE_SYNC)
            return true;
        if (st != PGRES_TUPLES_OK && st != PGRES_COMMAND_OK)
            atomic_fetch_add(&fl.errors, 1);
    }
    return false;
}

static void *drive(void *arg)
{
    struct driver *d = arg;
    struct pollfd pf[FLOOR_MAX_CONNS];

    for (;;) {
        sem_wait(&d->go);
        if (atomic_load(&fl.stop))
            return NULL;
        int pending = 0;
        for (int i = 0; i < d->n; i++) {
            pf[i].fd = PQsocket(d->conns[i]);
            pf[i].events = POLLIN;
            if (send_batch(d->conns[i])) {
                pending++;
            } else {
                atomic_fetch_add(&fl.errors, 1);
                pf[i].fd = -1;
            }
        }
        int failed = d->n - pending; /* counted as done, or the batch would never end */
        if (failed > 0 && atomic_fetch_sub(&fl.left, failed) == failed)
            sem_post(&fl.done);
        while (pending > 0) {
            if (poll(pf, d->n, -1) < 0)
                continue;
            for (int i = 0; i < d->n; i++) {
                if (pf[i].fd < 0 || !pf[i].revents || !read_some(d->conns[i]))
                    continue;
                pf[i].fd = -1;
                pending--;
                if (atomic_fetch_sub(&fl.left, 1) == 1)
                    sem_post(&fl.done);
            }
        }
    }
}

static PGconn *connect_one(const char *dsn)
{
    PGconn *c = PQconnectdb(dsn);
    bool ok = PQstatus(c) == CONNECTION_OK;

    for (size_t i = 0; ok && i < sizeof stmts / sizeof stmts[0]; i++) {
        PGresult *r = PQprepare(c, stmts[i].name, stmts[i].sql, 0, NULL);
        ok = PQresultStatus(r) == PGRES_COMMAND_OK;
        PQclear(r);
    }
    ok = ok && PQenterPipelineMode(c) && PQsetnonblocking(c, 1) == 0;
    if (!ok) {
        fprintf(stderr, "floor: %s", PQerrorMessage(c));
        PQfinish(c);
        return NULL;
    }
    return c;
}

static double run_batch(void)
{
    atomic_store(&fl.left, fl.conns);
    double t0 = now_ms();
    for (int i = 0; i < fl.threads; i++)
        sem_post(&fl.drivers[i].go);
    sem_wait(&fl.done);
    return now_ms() - t0;
}

static int cmp_double(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

static void usage(FILE *f)
{
    fprintf(f, "usage: bench-floor --database DSN [--connections 64] [--threads N] [--reset]\n"
               "                   [--sleep 0.01] [--seconds 10] [--warmup 2]\n");
}

int main(int argc, char **argv)
{
    static const struct option opts[] = {
        {"database", required_argument, NULL, 'd'}, {"connections", required_argument, NULL, 'c'},
        {"threads", required_argument, NULL, 't'},  {"reset", no_argument, NULL, 'r'},
        {"sleep", required_argument, NULL, 's'},    {"seconds", required_argument, NULL, 'T'},
        {"warmup", required_argument, NULL, 'w'},   {"help", no_argument, NULL, 'h'},
        {NULL, 0, NULL, 0}};
    const char *dsn = NULL;
    PGconn **conns = NULL;
    double *lat = NULL;
    int started = 0, opened = 0, rc = 1, o;

    while ((o = getopt_long(argc, argv, "", opts, NULL)) != -1) {
        switch (o) {
        case 'd': dsn = optarg; break;
        case 'c': fl.conns = atoi(optarg); break;
        case 't': fl.threads = atoi(optarg); break;
        case 'r': fl.reset = true; break;
        case 's': fl.sleep = optarg; break;
        case 'T': fl.seconds = atoi(optarg); break;
        case 'w': fl.warmup = atoi(optarg); break;
        case 'h': usage(stdout); return 0;
        default: usage(stderr); return 2;
        }
    }
    if (fl.threads < 0)
        fl.threads = fl.conns;
    if (!dsn || fl.conns < 1 || fl.conns > FLOOR_MAX_CONNS || fl.threads < 1 ||
        fl.threads > fl.conns || fl.conns % fl.threads != 0 || fl.seconds < 1 || fl.warmup < 0) {
        usage(stderr);
        fprintf(stderr, "floor: --threads must divide --connections (1..%d)\n", FLOOR_MAX_CONNS);
        return 2;
    }

    conns = calloc(fl.conns, sizeof *conns);
    fl.drivers = calloc(fl.threads, sizeof *fl.drivers);
    if (!conns || !fl.drivers)
        goto out;
    for (; opened < fl.conns; opened++)
        if (!(conns[opened] = connect_one(dsn)))
            goto out;
    sem_init(&fl.done, 0, 0);
    for (; started < fl.threads; started++) {
        struct driver *d = &fl.drivers[started];
        d->n = fl.conns / fl.threads;
        d->conns = conns + started * d->n;
        sem_init(&d->go, 0, 0);
        if (pthread_create(&d->thread, NULL, drive, d) != 0)
            goto out;
    }

    for (double end = now_ms() + fl.warmup * 1e3; now_ms() < end;)
        run_batch();
    size_t n = 0, cap = 1024;
    if (!(lat = malloc(cap * sizeof *lat)))
        goto out;
    double t0 = now_ms(), end = t0 + fl.seconds * 1e3;
    while (now_ms() < end) {
        if (n == cap) {
            double *grown = realloc(lat, (cap *= 2) * sizeof *lat);
            if (!grown)
                goto out;
            lat = grown;
        }
        lat[n++] = run_batch();
    }
    double elapsed = (now_ms() - t0) / 1e3;
    qsort(lat, n, sizeof *lat, cmp_double);
    double rps = n / elapsed;
    fprintf(stderr, "floor: %zu batches of %d in %.1f s, %d thread(s)%s: p50 %.2f ms, p99 %.2f ms\n",
            n, fl.conns, elapsed, fl.threads, fl.reset ? ", with the reset" : "", lat[n / 2],
            lat[(n * 99) / 100]);
    printf("RESULT {\"rps\": %.3f, \"qps\": %.3f, \"p50_ms\": %.3f, \"p99_ms\": %.3f, "
           "\"requests\": %zu, \"query_errors\": %d, \"non200\": 0, \"socket_errors\": 0}\n",
           rps, rps * fl.conns, lat[n / 2], lat[(n * 99) / 100], n, atomic_load(&fl.errors));
    rc = 0;
out:
    atomic_store(&fl.stop, true);
    for (int i = 0; i < started; i++) {
        sem_post(&fl.drivers[i].go);
        pthread_join(fl.drivers[i].thread, NULL);
    }
    for (int i = 0; i < opened; i++)
        PQfinish(conns[i]);
    free(lat);
    free(conns);
    free(fl.drivers);
    return rc;
}
