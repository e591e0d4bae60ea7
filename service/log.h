/*
 * svc_log: fanout's log lines on stderr, one line per call, from any thread.
 *
 * Two formats (setting log_format): json, one object a line with "time", "level", "msg" and,
 * for requests, the request's fields; or text for people at a terminal. The level and format are
 * set once at start-up, before threads start, and only read afterwards. Each line is written with
 * a single write(2) of a whole line, so lines from different threads never interleave.
 */
#ifndef FANOUT_SVC_LOG_H
#define FANOUT_SVC_LOG_H

#include <stdbool.h>

#include "config/config.h"

void svc_log_setup(cfg_log_level level, cfg_log_format format);
bool svc_log_enabled(cfg_log_level level);
void svc_log(cfg_log_level level, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

#define svc_log_error(...) svc_log(CFG_LOG_ERROR, __VA_ARGS__)
#define svc_log_warn(...) svc_log(CFG_LOG_WARN, __VA_ARGS__)
#define svc_log_info(...) svc_log(CFG_LOG_INFO, __VA_ARGS__)
#define svc_log_debug(...) svc_log(CFG_LOG_DEBUG, __VA_ARGS__)

/* One answered HTTP request (the access log), at level info. */
typedef struct svc_access {
    const char *method;     /* "POST" */
    const char *path;       /* "/v1/batch" (no query string) */
    int status;             /* HTTP status sent */
    int queries;            /* queries in the batch; 0 for other routes */
    const char *mode;       /* "parallel" / "transaction"; NULL for other routes */
    double elapsed_ms;      /* request accepted to reply sent */
    const char *peer;       /* "127.0.0.1:50312", or "-" when the client is gone */
    const char *request_id; /* X-Request-Id as received or generated */
    const char *token;      /* NAME of the token that authenticated it; NULL: none (left out) */
} svc_access;

void svc_log_access(const svc_access *a);

#endif
