/*
 * svc_pools: the main pool and the role pools, a short list searched by role name (the roles
 * are the few that auth_file names). Loop thread only; see pools.h.
 */
#include "service/pools.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <unistd.h>

#include "db/conn.h"
#include "http/auth.h"
#include "service/log.h"

/* One role's pool. */
typedef struct role_pool {
    char *role;             /* the PostgreSQL role its connections log in as, owned */
    svc_pool *pool;         /* owned */
    struct role_pool *next; /* the next role's */
} role_pool;

struct svc_pools {
    struct event_base *base;      /* the loop; not owned */
    const cfg_settings *settings; /* not owned */
    svc_metrics *metrics;         /* not owned */
    svc_done_fn done;             /* every pool's done callback */
    void *done_arg;
    svc_pool *main;               /* owned */
    role_pool *roles;             /* owned, newest first */
    bool warned_pgpassword;       /* the PGPASSWORD warning was logged */
};

/* quick_workers, or when 0: half this host's CPUs (at least 1) if the database shares them,
 * else no limit. A worker on quick statements and its backend take turns, about one CPU
 * between them; the loop thread and the clients need the rest (docs/DESIGN.md). A limit of a
 * pool's size or more is none. */
static int quick_workers(const cfg_settings *s, int workers)
{
    int n = s->quick_workers;
    if (n == 0 && db_conninfo_local(s->database, http_auth_host_is_loopback)) {
        long cpus = sysconf(_SC_NPROCESSORS_ONLN);
        n = cpus > 1 ? (int)(cpus / 2) : 1;
    }
    return n < workers ? n : 0;
}

svc_pools *svc_pools_start(struct event_base *base, const cfg_settings *settings,
                           svc_metrics *metrics, svc_done_fn done, void *arg, char *err,
                           size_t errlen)
{
    svc_pools *ps = calloc(1, sizeof(*ps));
    if (!ps) {
        snprintf(err, errlen, "out of memory starting the worker pool");
        return NULL;
    }
    *ps = (svc_pools){.base = base, .settings = settings, .metrics = metrics, .done = done,
                      .done_arg = arg};
    svc_pool_opts opts = {.workers = settings->workers, .stats = svc_metrics_worker(metrics, 0),
                          .quick_workers = quick_workers(settings, settings->workers)};
    ps->main = svc_pool_start(base, settings, &opts, done, arg, err, errlen);
    if (!ps->main) {
        free(ps);
        return NULL;
    }
    if (opts.quick_workers)
        svc_log_info("quick statements run on at most %d of the %d workers at once "
                     "(quick_workers)", opts.quick_workers, opts.workers);
    return ps;
}

svc_pool *svc_pools_main(svc_pools *ps)
{
    return ps->main;
}

/* libpq offers PGPASSWORD for any user it logs in as: with role pools that would be fanout's own
 * password sent for every role. fanout cannot stop libpq from doing so, so it says it once. */
static void warn_pgpassword(svc_pools *ps)
{
    if (ps->warned_pgpassword || !getenv("PGPASSWORD"))
        return;
    ps->warned_pgpassword = true;
    svc_log_warn("PGPASSWORD is set: libpq also offers it when a role pool logs in as a token's "
                 "role; give the roles' passwords in a passfile (PGPASSFILE) and unset it");
}

/* Start role's pool; NULL (logged) when it cannot be. */
static role_pool *start_role(svc_pools *ps, const char *role)
{
    role_pool *rp = NULL;
    char err[256];
    int n = ps->settings->role_pool_size;
    svc_pool_opts opts = {.workers = n, .role = role, .on_demand = true,
                          .quick_workers = quick_workers(ps->settings, n)};

    warn_pgpassword(ps);
    opts.stats = svc_metrics_role(ps->metrics, role, n);
    rp = calloc(1, sizeof(*rp));
    if (!opts.stats || !rp || !(rp->role = strdup(role))) {
        snprintf(err, sizeof(err), "out of memory");
        goto fail;
    }
    rp->pool = svc_pool_start(ps->base, ps->settings, &opts, ps->done, ps->done_arg, err,
                              sizeof(err));
    if (!rp->pool)
        goto fail;
    svc_log_info("role %s: started a pool of %d workers logging in as that role", role, n);
    rp->next = ps->roles;
    ps->roles = rp;
    return rp;
fail:
    svc_log_error("role %s: cannot start its pool: %s", role, err);
    if (rp)
        free(rp->role);
    free(rp);
    return NULL;
}

svc_pool *svc_pools_for(svc_pools *ps, const char *role)
{
    if (!role)
        return ps->main;
    for (role_pool *rp = ps->roles; rp; rp = rp->next)
        if (strcmp(rp->role, role) == 0)
            return rp->pool;
    role_pool *rp = start_role(ps, role);
    return rp ? rp->pool : NULL;
}

bool svc_pools_stop(svc_pools *ps)
{
    if (!ps)
        return true;
    svc_pool_stop_begin(ps->main);
    for (role_pool *rp = ps->roles; rp; rp = rp->next)
        svc_pool_stop_begin(rp->pool);
    if (!svc_pool_stop(ps->main))
        return false;
    while (ps->roles) {
        role_pool *rp = ps->roles;
        if (!svc_pool_stop(rp->pool))
            return false; /* threads still use it: leave it to the process exit */
        ps->roles = rp->next;
        free(rp->role);
        free(rp);
    }
    free(ps);
    return true;
}
