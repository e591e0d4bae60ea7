/*
 * svc_flight: the loop thread's side of batches in flight.
 *
 * It accepts a parsed batch (queue it, arm its deadline, watch the client's socket), and ends it
 * exactly once, whichever comes first:
 *   - its last job finishes: reply with every result;
 *   - the deadline passes: abandon what has not finished, cancel it on the server, reply at once
 *     with "timeout" in its place (a worker stuck on a frozen server delays nothing);
 *   - the client closes its connection: the same, with "canceled", and nobody to read the reply
 *     (the request must still be completed: libevent frees a detached request only then);
 *   - shutdown runs out of time: the same, with "shutdown".
 * A batch ended early stays allocated until its workers let go of it (see batch.h).
 *
 * Threads: loop thread only, except svc_flight_done, which the pool calls on the loop thread too.
 */
#ifndef FANOUT_SVC_FLIGHT_H
#define FANOUT_SVC_FLIGHT_H

#include "http/request.h"
#include "service/batch.h"
#include "service/metrics.h"
#include "service/pool.h"

struct event_base;
struct evhttp_request;
typedef struct svc_flight svc_flight;

/* changed(arg) runs whenever a batch is accepted or replied to or a reply finishes writing
 * (shutdown watches the counts). */
svc_flight *svc_flight_new(struct event_base *base, svc_metrics *metrics,
                           void (*changed)(void *arg), void *arg);
/* Take over desc and req: queue the batch on pool, or refuse it at once with 503 (overloaded or
 * db_unavailable, with Retry-After). pool NULL: none could be started for the caller (the
 * reason was logged): db_unavailable. Cancels go to the pool the batch was queued on. */
void svc_flight_submit(svc_flight *f, struct evhttp_request *req, http_batch_req *desc,
                       svc_pool *pool);

/* Every pool's done callback (arg: the flight): a batch's jobs have all let go of it. */
void svc_flight_done(svc_batch *b, void *arg);

/* End every batch still running, as for a deadline, with the given per-query error code, and
 * refuse every later one (503 overloaded): shutdown has run out of time. */
void svc_flight_expire_all(svc_flight *f, const char *code, const char *message);

int svc_flight_running(const svc_flight *f); /* batches not yet replied to */
int svc_flight_unsent(const svc_flight *f);  /* replies queued, not yet written nor lost */

/* After svc_pool_stop: free what is left. */
void svc_flight_free(svc_flight *f);

#endif
