/*
 * svc_pools: which pool runs a caller's batches. The main pool logs in as the `database`
 * setting says and serves tokens without a ROLE (and every request when there is no auth_file).
 * A token with a ROLE gets the pool of that role: role_pool_size workers whose connections log
 * in as the role itself (db_conn_params.user), so PostgreSQL's grants and row-level security
 * apply and no SQL can return to fanout's own identity (RESET ROLE only goes back to the role).
 *
 * A role's pool is started by its first batch, on the loop thread, without waiting: the workers
 * connect in the background while that batch waits in the pool's queue (svc_pool_opts.on_demand).
 * There is at most one pool per role, so the roles named in auth_file bound their number. A
 * pool stays until svc_pools_stop, also after a reload has dropped every token naming its role:
 * stopping it while the loop runs would mean joining threads on the loop thread.
 *
 * Threads: loop thread only. Ownership: svc_pools owns every pool; the pools returned live until
 * svc_pools_stop.
 */
#ifndef FANOUT_SVC_POOLS_H
#define FANOUT_SVC_POOLS_H

#include <stdbool.h>
#include <stddef.h>

#include "config/config.h"
#include "service/metrics.h"
#include "service/pool.h"

struct event_base;
typedef struct svc_pools svc_pools;

/* Start the main pool (settings->workers workers). Role pools report finished batches to the
 * same done callback. The settings and metrics must outlive the pools. NULL + err on failure. */
svc_pools *svc_pools_start(struct event_base *base, const cfg_settings *settings,
                           svc_metrics *metrics, svc_done_fn done, void *arg, char *err,
                           size_t errlen);

/* The main pool: readiness and the queue-depth gauge follow it. */
svc_pool *svc_pools_main(svc_pools *ps);

/* The pool for a caller's batches: the main pool for role NULL, else the role's own pool, started
 * by this call if it is the role's first. NULL when that pool cannot be started (no threads or
 * memory; logged): the batch must then be refused, never run on another pool. */
svc_pool *svc_pools_for(svc_pools *ps, const char *role);

/* After the loop stopped: stop every pool (see svc_pool_stop), their workers all winding down at
 * once, and free them. False when a worker stayed stuck on a frozen server: the process should
 * then exit without freeing more. */
bool svc_pools_stop(svc_pools *ps);

#endif
