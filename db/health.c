/*
 * db_conn_alive: is an idle connection still there? A poll of its socket, no round trip: a
 * server that went away has closed it (or sent its last FATAL), which shows as readable.
 * Called by the worker that owns the connection.
 */
#include <poll.h>

#include "db/conn.h"

bool db_conn_alive(db_conn *c)
{
    PGconn *pg = db_conn_pg(c);
    struct pollfd p = {.fd = PQsocket(pg), .events = POLLIN};

    if (PQstatus(pg) != CONNECTION_OK || p.fd < 0)
        return false;
    /* Readable while idle: a notification, or the end. Read it and see which. A terminated
     * backend sends a FATAL, then closes: one read may take in the FATAL and not yet the close
     * (test_backend_terminated_while_idle), so that FATAL counts, and reading goes on while
     * there is more (a bound: notifications could keep coming). */
    for (int i = 0; i < 8 && poll(&p, 1, 0) > 0; i++) {
        if (!PQconsumeInput(pg))
            return false;
        db_conn_drop_notifies(c);
        if (PQstatus(pg) != CONNECTION_OK || db_conn_fatal_seen(c))
            return false;
    }
    return PQstatus(pg) == CONNECTION_OK && !db_conn_fatal_seen(c);
}
