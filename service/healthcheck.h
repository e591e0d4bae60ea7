/*
 * svc_healthcheck: `fanout --healthcheck`, a probe of a running instance's /readyz on the
 * configured listen address, so a container image needs no curl. Main thread, before anything
 * else starts; blocking I/O with a 3 s limit.
 */
#ifndef FANOUT_SVC_HEALTHCHECK_H
#define FANOUT_SVC_HEALTHCHECK_H

#include "config/config.h"

/* Returns the process exit code: 0 when /readyz answered 200, 1 otherwise (reason on stderr). */
int svc_healthcheck(const cfg_settings *s);

#endif
