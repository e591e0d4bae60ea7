/*
 * svc_log: fanout's log lines on stderr, one line per call, any thread.
 *
 * The level is set once at start-up (before threads start) and only read afterwards. Each line
 * is written with a single stdio call, which locks the stream, so lines never interleave.
 */
#ifndef FANOUT_SVC_LOG_H
#define FANOUT_SVC_LOG_H

#include <stdbool.h>

#include "config/config.h"

void svc_log_set_level(cfg_log_level level);
bool svc_log_enabled(cfg_log_level level);
void svc_log(cfg_log_level level, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

#define svc_log_error(...) svc_log(CFG_LOG_ERROR, __VA_ARGS__)
#define svc_log_warn(...) svc_log(CFG_LOG_WARN, __VA_ARGS__)
#define svc_log_info(...) svc_log(CFG_LOG_INFO, __VA_ARGS__)
#define svc_log_debug(...) svc_log(CFG_LOG_DEBUG, __VA_ARGS__)

#endif
