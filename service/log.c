/* svc_log: timestamped lines on stderr; see log.h. */
#include "service/log.h"

#include <stdarg.h>
#include <stdio.h>
#include <time.h>

static cfg_log_level log_level = CFG_LOG_INFO; /* written before threads start, then only read */

void svc_log_set_level(cfg_log_level level)
{
    log_level = level;
}

bool svc_log_enabled(cfg_log_level level)
{
    return level <= log_level;
}

void svc_log(cfg_log_level level, const char *fmt, ...)
{
    char msg[1024], stamp[32];
    struct timespec ts;
    struct tm tm;
    va_list ap;

    if (!svc_log_enabled(level))
        return;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof(msg), fmt, ap);
    va_end(ap);
    clock_gettime(CLOCK_REALTIME, &ts);
    gmtime_r(&ts.tv_sec, &tm);
    strftime(stamp, sizeof(stamp), "%Y-%m-%dT%H:%M:%S", &tm);
    fprintf(stderr, "%s.%03ldZ fanout %s: %s\n", stamp, ts.tv_nsec / 1000000,
            cfg_log_level_name(level), msg);
}
