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
    if (poll(&p, 1, 0) > 0) {
        /* Readable while idle: a notification, or the end. Read it and see which. */
        if (!PQconsumeInput(pg))
            return false;
        db_conn_drop_notifies(c);
    }
    return PQstatus(pg) == CONNECTION_OK;
}
