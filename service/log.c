/* svc_log: timestamped lines on stderr, text or JSON; see log.h. */
#include "service/log.h"

#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "db/buf.h"

/* Written before threads start, then only read. */
static cfg_log_level log_level = CFG_LOG_INFO;
static cfg_log_format log_format = CFG_LOG_TEXT;

void svc_log_setup(cfg_log_level level, cfg_log_format format)
{
    log_level = level;
    log_format = format;
}

bool svc_log_enabled(cfg_log_level level)
{
    return level <= log_level;
}

static void put_time(db_buf *b)
{
    char stamp[32];
    struct timespec ts;
    struct tm tm;
    clock_gettime(CLOCK_REALTIME, &ts);
    gmtime_r(&ts.tv_sec, &tm);
    strftime(stamp, sizeof(stamp), "%Y-%m-%dT%H:%M:%S", &tm);
    db_buf_printf(b, "%s.%03ldZ", stamp, ts.tv_nsec / 1000000);
}

/* The start of a line: {"time":..,"level":.. or "TIME fanout LEVEL:". */
static void put_head(db_buf *b, cfg_log_level level)
{
    if (log_format == CFG_LOG_JSON) {
        db_buf_puts(b, "{\"time\":\"");
        put_time(b);
        db_buf_printf(b, "\",\"level\":\"%s\"", cfg_log_level_name(level));
    } else {
        put_time(b);
        db_buf_printf(b, " fanout %s:", cfg_log_level_name(level));
    }
}

static void emit(db_buf *b)
{
    if (log_format == CFG_LOG_JSON)
        db_buf_putc(b, '}');
    db_buf_putc(b, '\n');
    if (!b->oom && write(STDERR_FILENO, b->data, b->len) < 0) {
        /* Nowhere left to report a failing stderr. */
    }
}

void svc_log(cfg_log_level level, const char *fmt, ...)
{
    char msg[1024];
    db_buf b = DB_BUF_INIT;
    va_list ap;

    if (!svc_log_enabled(level))
        return;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof(msg), fmt, ap);
    va_end(ap);
    put_head(&b, level);
    if (log_format == CFG_LOG_JSON) {
        db_buf_puts(&b, ",\"msg\":");
        db_buf_json_string(&b, msg, strlen(msg));
    } else {
        db_buf_printf(&b, " %s", msg);
    }
    emit(&b);
    db_buf_free(&b);
}

static void put_field(db_buf *b, const char *name, const char *value)
{
    db_buf_printf(b, ",\"%s\":", name);
    if (value)
        db_buf_json_string(b, value, strlen(value));
    else
        db_buf_puts(b, "null");
}

/* A field of a text line: request data (the path, the request id) must not bring a newline, a
 * terminal escape or a tab that fakes another field, so control bytes and the backslash go as
 * \xHH. A NULL prints as "-". */
static void put_text(db_buf *b, const char *value)
{
    if (!value) {
        db_buf_putc(b, '-');
        return;
    }
    for (const unsigned char *p = (const unsigned char *)value; *p; p++)
        if (*p < 0x20 || *p == 0x7f || *p == '\\')
            db_buf_printf(b, "\\x%02x", *p);
        else
            db_buf_putc(b, (char)*p);
}

void svc_log_access(const svc_access *a)
{
    db_buf b = DB_BUF_INIT;

    if (!svc_log_enabled(CFG_LOG_INFO))
        return;
    put_head(&b, CFG_LOG_INFO);
    if (log_format == CFG_LOG_JSON) {
        put_field(&b, "msg", "request");
        put_field(&b, "method", a->method);
        put_field(&b, "path", a->path);
        db_buf_printf(&b, ",\"status\":%d,\"queries\":%d", a->status, a->queries);
        put_field(&b, "mode", a->mode);
        db_buf_printf(&b, ",\"elapsed_ms\":%.3f", a->elapsed_ms);
        put_field(&b, "peer", a->peer);
        put_field(&b, "request_id", a->request_id);
        if (a->token)
            put_field(&b, "token", a->token);
    } else {
        db_buf_putc(&b, ' ');
        put_text(&b, a->method);
        db_buf_putc(&b, ' ');
        put_text(&b, a->path);
        db_buf_printf(&b, " %d queries=%d mode=%s %.3fms peer=%s id=", a->status, a->queries,
                      a->mode ? a->mode : "-", a->elapsed_ms, a->peer);
        put_text(&b, a->request_id);
        if (a->token) {
            db_buf_puts(&b, " token=");
            put_text(&b, a->token);
        }
    }
    emit(&b);
    db_buf_free(&b);
}
