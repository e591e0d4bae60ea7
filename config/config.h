/*
 * config: fanout's settings, from one declarative table.
 *
 * Sources, lowest precedence first: built-in defaults, a config file (only when --config or
 * FANOUT_CONFIG names one), the environment (FANOUT_<SETTING>; DATABASE_URL is an alias of
 * FANOUT_DATABASE, which wins when both are set), then command-line flags. The result is one
 * immutable cfg_settings; nothing else in fanout reads the environment or argv for settings.
 *
 * Ownership: cfg_load fills a caller-provided struct whose strings it allocates; cfg_free
 * releases them. Called from the main thread at start-up only; not thread-safe (getopt).
 */
#ifndef FANOUT_CONFIG_H
#define FANOUT_CONFIG_H

#include <stdbool.h>
#include <stddef.h>
#include <stdio.h>

/* Exit code for a bad command line, setting or config file (the service does not start). */
#define CFG_EXIT_CONFIG 2

typedef enum cfg_log_level {
    CFG_LOG_ERROR = 0, /* only failures */
    CFG_LOG_WARN,      /* plus recoverable trouble (reconnects) */
    CFG_LOG_INFO,      /* plus start-up and shutdown events (default) */
    CFG_LOG_DEBUG      /* plus per-request detail */
} cfg_log_level;

typedef enum cfg_log_format {
    CFG_LOG_TEXT = 0, /* "2026-01-01T00:00:00.000Z fanout info: message" */
    CFG_LOG_JSON      /* one JSON object a line (default) */
} cfg_log_format;

/* What the process was asked to do (flags that are not settings). */
typedef enum cfg_action {
    CFG_RUN = 0,          /* serve (default) */
    CFG_CHECK_CONFIG,     /* --check-config: print the effective settings and exit */
    CFG_HEALTHCHECK       /* --healthcheck: probe a running instance's /readyz, exit 0 or 1 */
} cfg_action;

typedef struct cfg_settings {
    cfg_action action;        /* from --check-config / --healthcheck; CFG_RUN otherwise */
    char *listen;             /* "HOST:PORT" as configured, e.g. "127.0.0.1:8080", "[::1]:0" */
    char *listen_host;        /* host part of listen, brackets stripped */
    int listen_port;          /* port part of listen, 0..65535 (0: any free port) */
    char *database;           /* libpq conninfo string or URI; NULL when none is configured */
    int workers;              /* worker threads, each owning one PostgreSQL connection */
    int role_pool_size;       /* workers (and connections) of each per-role pool */
    int queue_size;           /* capacity of the job queue, in jobs */
    int pipeline_depth;       /* most queries of one batch a worker pipelines at once */
    int quick_workers;        /* most workers on quick statements at once; 0: auto (pools.c) */
    int statement_cache_size; /* named prepared statements kept per connection (0: none) */
    long max_body_bytes;      /* largest request body accepted, bytes */
    int max_queries;          /* most queries in one batch */
    int max_params;           /* most parameters in one query */
    long max_rows;            /* most rows returned per query (a request may ask for fewer) */
    long max_response_bytes;  /* largest batch reply, bytes: results past it fail (too large) */
    int statement_timeout_ms; /* server-side statement_timeout on every connection, ms (0: none) */
    int batch_timeout_ms;     /* a batch's deadline when the request names none, ms */
    int max_batch_timeout_ms; /* ceiling of a request's timeout_ms, ms */
    int lock_timeout_ms;      /* lock_timeout on every connection, ms (0: none) */
    int idle_in_transaction_timeout_ms; /* idle_in_transaction_session_timeout, ms (0: none) */
    bool reset_sessions;      /* reset session state after every job (SET, temp tables, ...) */
    int shutdown_timeout_ms;  /* SIGTERM: how long in-flight batches may finish, ms */
    int reconnect_backoff_ms; /* first reconnect delay, ms; doubles per failure */
    int reconnect_backoff_max_ms; /* reconnect delay cap, ms */
    int max_clients;          /* client connections served at once */
    int client_timeout_ms;    /* idle/stalled client connection limit, ms */
    cfg_log_level log_level;  /* least severe log line written */
    cfg_log_format log_format; /* text or json lines */
    char *timezone;           /* TimeZone pinned on every connection */
    char *auth_file;          /* API token file (http/auth.h format); NULL: no authentication */
    bool metrics_auth;        /* GET /metrics needs a token too (when auth_file is set) */
    bool allow_unauthenticated; /* serve a non-loopback address without auth_file (warned) */
    char *tls_cert_file;      /* PEM certificate chain; NULL: plain HTTP. Set with tls_key_file */
    char *tls_key_file;       /* PEM private key of tls_cert_file; NULL exactly when it is NULL */
} cfg_settings;

typedef enum cfg_status {
    CFG_OK = 0,   /* settings loaded: start the service */
    CFG_EXIT = 1, /* --help or --version was printed: exit 0 */
    CFG_ERROR = 2 /* err holds one line naming the source (file:line, flag or variable) */
} cfg_status;

/*
 * Load settings from argv, envp (a NULL-terminated "NAME=value" array, like environ) and the
 * config file they name. Writes --help/--version text to out. On CFG_ERROR, *s holds nothing
 * to free. Resets getopt's state, so it may be called more than once (tests do).
 * *s is overwritten without freeing: cfg_free a previously loaded struct first. On CFG_EXIT and
 * CFG_ERROR *s is all zero. Empty environment variables count as unset.
 */
cfg_status cfg_load(cfg_settings *s, int argc, char **argv, char *const *envp, FILE *out,
                    char *err, size_t errlen) __attribute__((warn_unused_result));

/* Free the strings cfg_load allocated and zero *s: safe on a zeroed struct and twice. */
void cfg_free(cfg_settings *s);

/*
 * Print the effective settings as config-file lines ("name = value"), for --check-config. The
 * database setting is a secret: database_shown is printed in its place (the caller masks it).
 */
void cfg_print_effective(FILE *out, const cfg_settings *s, const char *database_shown);

/*
 * Print a Markdown table "| setting | environment | flag | default | description |" of every
 * setting, generated from the settings table, for the README.
 */
void cfg_print_settings_table(FILE *out);

/*
 * The i-th entry of the settings table: its name ("queue_size") and its default as text (NULL:
 * none). Returns false when i is past the end. For tests and tools that must cover every setting.
 */
bool cfg_setting_info(size_t i, const char **name, const char **default_text);

/* The name of a log level as written in settings ("error", "warn", "info", "debug"). */
const char *cfg_log_level_name(cfg_log_level level);

#endif
