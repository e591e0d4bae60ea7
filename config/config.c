/*
 * config: every setting is one row of cfg_defs below. The config file, the environment, the
 * command line, --help and the README table are all driven from that table, so a new setting is
 * one row, one cfg_settings field and one line in config/fanout.conf (a unit test checks that
 * file names every row).
 *
 * cfg_load fills a private cfg_settings, layering the sources lowest first: defaults, file,
 * environment, flags. Each layer overwrites (and frees) what the one before stored. argv is
 * scanned first only to collect flag values and --config; the values are applied last. Only a
 * fully loaded struct is handed to the caller: on any failure the private copy is freed.
 *
 * Threads: the main thread at start-up only; getopt's globals make cfg_load non-reentrant.
 */
#include "config/config.h"

#include <ctype.h>
#include <errno.h>
#include <getopt.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#ifndef FANOUT_VERSION
#define FANOUT_VERSION "dev"
#endif

#define WHY_LEN 256  /* room for why a value was refused, before the source is prefixed */
#define NAME_LEN 64  /* room for a flag or environment name made from a setting name */
#define NONE_SHOWN "(none: local PostgreSQL under ./var with make run)"
#define NONE_SHOWN_OTHER "(none)" /* a setting other than database with no default */

typedef enum cfg_type {
    CFG_T_INT,      /* int, strict decimal, bounded by min..max */
    CFG_T_LONG,     /* long, strict decimal, bounded by min..max */
    CFG_T_STRING,   /* char *, malloc'd; min 1 means it must not be empty */
    CFG_T_LISTEN,   /* char *, malloc'd, "HOST:PORT" or "[IPV6]:PORT", checked when set */
    CFG_T_ENUM,     /* an int-sized enum, by name: index into cfg_def.names */
    CFG_T_BOOL      /* bool: true/false, yes/no, on/off or 1/0, any case */
} cfg_type;

typedef struct cfg_def {
    const char *name;      /* file key; FANOUT_<NAME> in the environment; --name-with-dashes */
    cfg_type type;         /* how text is parsed and what the field at offset is */
    size_t offset;         /* offsetof the field in cfg_settings */
    long long min;         /* least value (numbers); 1 for strings that must not be empty */
    long long max;         /* greatest value (numbers only) */
    const char *def;       /* default as text, parsed like any source; NULL: none configured */
    const char *env_alias; /* variable read when FANOUT_<NAME> is unset, or NULL */
    const char *help;      /* one line for --help, the README and fanout.conf; no '|' */
    const char *const *names; /* CFG_T_ENUM: accepted names, NULL-terminated, in enum order */
} cfg_def;

static const char *const level_names[] = {"error", "warn", "info", "debug", NULL};
static const char *const format_names[] = {"text", "json", NULL};

#define F(field) offsetof(cfg_settings, field)
static const cfg_def cfg_defs[] = {
    {"listen", CFG_T_LISTEN, F(listen), 0, 0, "127.0.0.1:8080", NULL,
     "address to serve HTTP on, HOST:PORT or [IPV6]:PORT; port 0 picks a free port", NULL},
    {"database", CFG_T_STRING, F(database), 1, 0, NULL, "DATABASE_URL",
     "PostgreSQL conninfo string or URI (a secret: never printed)", NULL},
    {"workers", CFG_T_INT, F(workers), 1, 1024, "8", NULL,
     "worker threads, each owning one PostgreSQL connection", NULL},
    {"role_pool_size", CFG_T_INT, F(role_pool_size), 1, 1024, "4", NULL,
     "worker threads (one PostgreSQL connection each) of the pool of each ROLE named in "
     "auth_file, started on that role's first batch", NULL},
    {"queue_size", CFG_T_INT, F(queue_size), 1, 1000000, "1024", NULL,
     "capacity of the job queue, in jobs", NULL},
    {"statement_cache_size", CFG_T_INT, F(statement_cache_size), 0, 10000, "256", NULL,
     "named prepared statements each connection keeps for pipelined queries, least recently "
     "used out; 0 keeps none", NULL},
    {"pipeline_depth", CFG_T_INT, F(pipeline_depth), 1, 64, "64", NULL,
     "most queries a worker sends in one pipeline: one batch's (statements seen to take under "
     "2 ms always, others only when no other worker is idle), or several batches' quick reads; "
     "1 sends each query alone", NULL},
    {"quick_workers", CFG_T_INT, F(quick_workers), 0, 1024, "0", NULL,
     "most workers of a pool running statements seen to take under 2 ms at once, the rest "
     "queued for them (one busy 10 ms no longer counts); 0: half as many as this host has CPUs "
     "(at least 1) when the database is on it (a unix socket or loopback address), else no "
     "limit", NULL},
    {"max_body_bytes", CFG_T_LONG, F(max_body_bytes), 1024, 1073741824, "1048576", NULL,
     "largest request body accepted, in bytes", NULL},
    {"max_queries", CFG_T_INT, F(max_queries), 1, 100000, "1000", NULL,
     "most queries in one batch", NULL},
    {"max_params", CFG_T_INT, F(max_params), 0, 65535, "1000", NULL,
     "most parameters in one query", NULL},
    {"max_rows", CFG_T_LONG, F(max_rows), 1, 100000000, "100000", NULL,
     "most rows returned per query; a request may ask for fewer", NULL},
    {"max_response_bytes", CFG_T_LONG, F(max_response_bytes), 1024, 4294967296LL, "67108864", NULL,
     "largest batch reply, in bytes; a query whose rows would pass it gets result_too_large", NULL},
    {"statement_timeout_ms", CFG_T_INT, F(statement_timeout_ms), 0, 86400000, "30000", NULL,
     "statement_timeout on every connection, in ms; 0 means none", NULL},
    {"batch_timeout_ms", CFG_T_INT, F(batch_timeout_ms), 1, 86400000, "30000", NULL,
     "a batch's deadline when the request sets no timeout_ms, in ms", NULL},
    {"max_batch_timeout_ms", CFG_T_INT, F(max_batch_timeout_ms), 1, 86400000, "300000", NULL,
     "the longest timeout_ms a request may ask for, in ms (longer ones are lowered)", NULL},
    {"lock_timeout_ms", CFG_T_INT, F(lock_timeout_ms), 0, 86400000, "0", NULL,
     "lock_timeout on every connection, in ms; 0 means none", NULL},
    {"idle_in_transaction_timeout_ms", CFG_T_INT, F(idle_in_transaction_timeout_ms), 0,
     86400000, "60000", NULL,
     "idle_in_transaction_session_timeout on every connection, in ms; 0 means none", NULL},
    {"reset_sessions", CFG_T_BOOL, F(reset_sessions), 0, 0, "true", NULL,
     "after each job, reset the connection's session state so no batch sees another's", NULL},
    {"shutdown_timeout_ms", CFG_T_INT, F(shutdown_timeout_ms), 0, 3600000, "10000", NULL,
     "on SIGTERM, how long in-flight batches may still run before they are cancelled, in ms",
     NULL},
    {"reconnect_backoff_ms", CFG_T_INT, F(reconnect_backoff_ms), 1, 600000, "50", NULL,
     "first wait before reconnecting to the database, in ms; doubles after each failure",
     NULL},
    {"reconnect_backoff_max_ms", CFG_T_INT, F(reconnect_backoff_max_ms), 1, 600000, "1000", NULL,
     "longest wait between reconnect attempts, in ms (also the pace for a refused login)",
     NULL},
    {"max_clients", CFG_T_INT, F(max_clients), 1, 1000000, "1024", NULL,
     "most client connections served at once; more are answered 503 and closed", NULL},
    {"client_timeout_ms", CFG_T_INT, F(client_timeout_ms), 1000, 3600000, "60000", NULL,
     "a client connection idle this long, or this long sending one request, is closed, in ms", NULL},
    {"log_level", CFG_T_ENUM, F(log_level), 0, 0, "info", NULL,
     "least severe log line written: error, warn, info or debug", level_names},
    {"log_format", CFG_T_ENUM, F(log_format), 0, 0, "json", NULL,
     "log lines as json (one object a line) or text", format_names},
    {"timezone", CFG_T_STRING, F(timezone), 1, 0, "UTC", NULL,
     "TimeZone set on every connection, so timestamps render the same", NULL},
    {"auth_file", CFG_T_STRING, F(auth_file), 1, 0, NULL, NULL,
     "API token file, lines NAME SHA256HEX ACCESS [ROLE], re-read on SIGHUP; "
     "unset: no token needed", NULL},
    {"metrics_auth", CFG_T_BOOL, F(metrics_auth), 0, 0, "false", NULL,
     "whether GET /metrics needs a token like /v1/batch (only with auth_file)", NULL},
    {"allow_unauthenticated", CFG_T_BOOL, F(allow_unauthenticated), 0, 0, "false", NULL,
     "serve a non-loopback listen address without auth_file (logs a warning)", NULL},
    {"tls_cert_file", CFG_T_STRING, F(tls_cert_file), 1, 0, NULL, NULL,
     "PEM certificate chain for HTTPS; with tls_key_file the listener serves HTTPS only", NULL},
    {"tls_key_file", CFG_T_STRING, F(tls_key_file), 1, 0, NULL, NULL,
     "PEM private key of tls_cert_file, unencrypted; set both or neither", NULL},
};
#undef F
#define NDEFS (sizeof cfg_defs / sizeof cfg_defs[0])

/* getopt_long vals above every short option: --config, then one per setting. */
enum { OPT_CONFIG = 0x100, OPT_CHECK_CONFIG, OPT_HEALTHCHECK, OPT_SETTING = 0x200 };

const char *cfg_log_level_name(cfg_log_level level)
{
    if ((unsigned)level >= sizeof level_names / sizeof level_names[0] - 1)
        return "unknown";
    return level_names[level];
}

bool cfg_setting_info(size_t i, const char **name, const char **default_text)
{
    if (i >= NDEFS)
        return false;
    *name = cfg_defs[i].name;
    *default_text = cfg_defs[i].def;
    return true;
}

/* Write one error line to err; returns false so callers can `return fail(...)`. */
__attribute__((format(printf, 3, 4))) static bool fail(char *err, size_t errlen,
                                                       const char *fmt, ...)
{
    va_list ap;

    if (err && errlen) {
        va_start(ap, fmt);
        vsnprintf(err, errlen, fmt, ap);
        va_end(ap);
    }
    return false;
}

/* "max_rows" -> "max-rows", the long flag without its dashes. */
static const char *flag_name(const cfg_def *d, char *buf)
{
    size_t i;

    for (i = 0; d->name[i] && i < NAME_LEN - 1; i++)
        buf[i] = d->name[i] == '_' ? '-' : d->name[i];
    buf[i] = '\0';
    return buf;
}

/* "max_rows" -> "FANOUT_MAX_ROWS". */
static const char *env_name(const cfg_def *d, char *buf)
{
    size_t i, n = strlen("FANOUT_");

    memcpy(buf, "FANOUT_", n);
    for (i = 0; d->name[i] && n + i < NAME_LEN - 1; i++)
        buf[n + i] = (char)toupper((unsigned char)d->name[i]);
    buf[n + i] = '\0';
    return buf;
}

static const char *metavar(const cfg_def *d)
{
    switch (d->type) {
    case CFG_T_INT:
    case CFG_T_LONG: return "N";
    case CFG_T_LISTEN: return "HOST:PORT";
    case CFG_T_ENUM: return d->names == level_names ? "LEVEL" : "NAME";
    case CFG_T_BOOL: return "BOOL";
    case CFG_T_STRING: break;
    }
    return "TEXT";
}

/* What --help and the README show for a setting with no default. */
static const char *none_shown(const cfg_def *d)
{
    return d->offset == offsetof(cfg_settings, database) ? NONE_SHOWN : NONE_SHOWN_OTHER;
}

static const cfg_def *find_def(const char *name)
{
    size_t i;

    for (i = 0; i < NDEFS; i++)
        if (strcmp(cfg_defs[i].name, name) == 0)
            return &cfg_defs[i];
    return NULL;
}

/*
 * Strict decimal: an optional sign, digits, nothing else (strtoll alone would skip leading
 * spaces and stop at junk). Overflow saturates, so the caller's range check refuses it.
 */
static bool parse_int(const char *t, long long *v)
{
    char *end = NULL;
    const char *digits = (*t == '-' || *t == '+') ? t + 1 : t;

    if (!isdigit((unsigned char)*digits))
        return false;
    errno = 0;
    *v = strtoll(t, &end, 10);
    return *end == '\0';
}

/*
 * Check "HOST:PORT" or "[IPV6]:PORT". When host is not NULL, store a malloc'd copy of the host
 * (brackets stripped) there and the port in *port. Returns NULL, or why text is no address.
 */
static const char *split_listen(const char *text, char **host, int *port)
{
    const char *h = text, *colon;
    size_t hlen;
    long long p;

    if (text[0] == '[') {
        colon = strchr(text, ']');
        if (!colon)
            return "missing ] after the IPv6 address";
        h = text + 1;
        hlen = (size_t)(colon - h);
        if (*++colon != ':')
            return "expected [IPV6]:PORT";
    } else {
        colon = strrchr(text, ':');
        if (!colon)
            return "expected HOST:PORT";
        hlen = (size_t)(colon - text);
        if (memchr(text, ':', hlen))
            return "an IPv6 address needs brackets, as in [::1]:8080";
    }
    if (hlen == 0)
        return "the host is empty";
    if (!parse_int(colon + 1, &p) || p < 0 || p > 65535)
        return "the port must be an integer 0..65535";
    if (host) {
        *host = strndup(h, hlen);
        if (!*host)
            return "out of memory";
        *port = (int)p;
    }
    return NULL;
}

/*
 * Parse text as d's type and store it in s; a string replaces (and frees) the old one. On
 * failure write why, without the source, and leave s unchanged. Never echoes a secret: the only
 * string check is emptiness.
 */
static bool set_value(cfg_settings *s, const cfg_def *d, const char *text, char *why,
                      size_t whylen)
{
    char *field = (char *)s + d->offset;
    const char *reason;
    char *copy = NULL;
    long long v;
    size_t i;

    switch (d->type) {
    case CFG_T_INT:
    case CFG_T_LONG:
        if (!parse_int(text, &v))
            return fail(why, whylen, "\"%s\" is not an integer", text);
        if (v < d->min || v > d->max)
            return fail(why, whylen, "\"%s\" is out of range: must be %lld..%lld", text, d->min,
                        d->max);
        if (d->type == CFG_T_INT)
            *(int *)field = (int)v;
        else
            *(long *)field = (long)v;
        return true;
    case CFG_T_ENUM: {
        char accepted[WHY_LEN / 2] = "";
        for (i = 0; d->names[i]; i++) {
            if (strcasecmp(text, d->names[i]) == 0) {
                *(int *)field = (int)i;
                return true;
            }
            snprintf(accepted + strlen(accepted), sizeof accepted - strlen(accepted), "%s%s",
                     i ? ", " : "", d->names[i]);
        }
        return fail(why, whylen, "\"%s\" is not one of: %s", text, accepted);
    }
    case CFG_T_BOOL: {
        static const char *const yes[] = {"true", "yes", "on", "1"};
        static const char *const no[] = {"false", "no", "off", "0"};
        for (i = 0; i < sizeof yes / sizeof yes[0]; i++)
            if (strcasecmp(text, yes[i]) == 0 || strcasecmp(text, no[i]) == 0) {
                *(bool *)field = strcasecmp(text, yes[i]) == 0;
                return true;
            }
        return fail(why, whylen, "\"%s\" is not a boolean: true or false", text);
    }
    case CFG_T_LISTEN:
        if ((reason = split_listen(text, NULL, NULL)))
            return fail(why, whylen, "\"%s\" is not a listen address: %s", text, reason);
        break;
    case CFG_T_STRING:
        if (d->min > 0 && text[0] == '\0')
            return fail(why, whylen, "must not be empty");
        break;
    }
    copy = strdup(text);
    if (!copy)
        return fail(why, whylen, "out of memory");
    free(*(char **)field);
    *(char **)field = copy;
    return true;
}

static char *trim(char *p)
{
    char *end;

    while (isspace((unsigned char)*p))
        p++;
    end = p + strlen(p);
    while (end > p && isspace((unsigned char)end[-1]))
        end--;
    *end = '\0';
    return p;
}

/* True when p is only whitespace, perhaps then a # comment: what may follow ] or a quote. */
static bool rest_is_blank(const char *p)
{
    while (isspace((unsigned char)*p))
        p++;
    return *p == '\0' || *p == '#';
}

/* Apply one config file line to s (line is modified); on failure "path:lineno: ..." to err. */
static bool parse_line(cfg_settings *s, const char *path, unsigned lineno, char *line, char *err,
                       size_t errlen)
{
    char why[WHY_LEN];
    char *p = trim(line), *key, *val, *end;
    const cfg_def *d;

    if (*p == '\0' || *p == '#')
        return true;
    if (*p == '[') {
        /* PgBouncer habit: settings under a section header; ours is [fanout]. */
        end = strchr(p, ']');
        if (!end || !rest_is_blank(end + 1))
            return fail(err, errlen, "%s:%u: malformed section header", path, lineno);
        *end = '\0';
        if (strcmp(trim(p + 1), "fanout") != 0)
            return fail(err, errlen, "%s:%u: unknown section [%s]: only [fanout] is allowed",
                        path, lineno, trim(p + 1));
        return true;
    }
    for (key = p; *p && *p != '=' && !isspace((unsigned char)*p); p++)
        ;
    end = p;
    while (isspace((unsigned char)*p))
        p++;
    if (end == key || *p != '=')
        return fail(err, errlen, "%s:%u: expected \"key = value\"", path, lineno);
    *end = '\0';
    val = trim(p + 1);
    if (*val == '"' || *val == '\'') {
        /* Quotes keep a # or surrounding spaces; there are no escapes inside. */
        end = strchr(val + 1, *val);
        if (!end || !rest_is_blank(end + 1))
            return fail(err, errlen, "%s:%u: %s: unterminated quote or text after it", path,
                        lineno, key);
        *end = '\0';
        val++;
    } else {
        /* A # that opens the value or follows whitespace starts a comment; "a#b" is kept. */
        for (end = val; *end; end++)
            if (*end == '#' && (end == val || isspace((unsigned char)end[-1]))) {
                *end = '\0';
                break;
            }
        val = trim(val);
    }
    d = find_def(key);
    if (!d)
        return fail(err, errlen, "%s:%u: unknown setting \"%s\"", path, lineno, key);
    if (!set_value(s, d, val, why, sizeof why))
        return fail(err, errlen, "%s:%u: %s: %s", path, lineno, key, why);
    return true;
}

static bool load_file(cfg_settings *s, const char *path, char *err, size_t errlen)
{
    FILE *f = NULL;
    char *line = NULL;
    size_t cap = 0;
    ssize_t got;
    unsigned lineno = 0;
    bool ok = false;

    f = fopen(path, "r");
    if (!f) {
        fail(err, errlen, "%s: cannot open: %s", path, strerror(errno));
        goto out;
    }
    while ((got = getline(&line, &cap, f)) != -1) {
        lineno++;
        /* The parser stops at a NUL: what follows it would be dropped unseen, as in auth.c. */
        if (strlen(line) != (size_t)got) {
            fail(err, errlen, "%s:%u: the line holds a NUL byte", path, lineno);
            goto out;
        }
        if (!parse_line(s, path, lineno, line, err, errlen))
            goto out;
    }
    if (ferror(f)) { /* e.g. a directory: fopen succeeds, reading fails with EISDIR */
        fail(err, errlen, "%s: cannot read: %s", path, strerror(errno));
        goto out;
    }
    ok = true;
out:
    free(line);
    if (f)
        fclose(f);
    return ok;
}

/* The value of entry "name=value", or NULL when it names something else or is empty. */
static const char *env_value(const char *entry, const char *name)
{
    size_t n = strlen(name);

    if (strncmp(entry, name, n) != 0 || entry[n] != '=' || entry[n + 1] == '\0')
        return NULL;
    return entry + n + 1;
}

/*
 * Find each setting's value in envp: FANOUT_<NAME>, else its alias. vals[i] points at the value,
 * srcs[i] at the whole entry (to name the variable in errors). Empty values count as unset.
 */
static void scan_env(char *const *envp, const char **vals, const char **srcs,
                     const char **config)
{
    const char *alias[NDEFS] = {NULL}, *alias_src[NDEFS] = {NULL}, *v;
    char name[NAME_LEN];
    size_t i;

    for (; envp && *envp; envp++) {
        if ((v = env_value(*envp, "FANOUT_CONFIG")))
            *config = v;
        for (i = 0; i < NDEFS; i++) {
            if ((v = env_value(*envp, env_name(&cfg_defs[i], name)))) {
                vals[i] = v;
                srcs[i] = *envp;
            } else if (cfg_defs[i].env_alias && (v = env_value(*envp, cfg_defs[i].env_alias))) {
                alias[i] = v;
                alias_src[i] = *envp;
            }
        }
    }
    for (i = 0; i < NDEFS; i++)
        if (!vals[i] && alias[i]) {
            vals[i] = alias[i];
            srcs[i] = alias_src[i];
        }
}

static void print_help(FILE *out)
{
    char flag[NAME_LEN], env[NAME_LEN], opt[2 * NAME_LEN];
    const cfg_def *d;

    fprintf(out,
            "Usage: fanout [OPTION]...\n"
            "Run batches of SQL queries, sent over HTTP, on a pool of PostgreSQL connections.\n\n"
            "  --config FILE              read settings from FILE (or env FANOUT_CONFIG)\n"
            "  -h, --help                 print this help and exit\n"
            "  -V, --version              print the version and exit\n"
            "  --check-config             check the settings, print them (secrets masked), exit\n"
            "  --healthcheck              probe a running fanout's /readyz on the listen address;\n"
            "                             exit 0 when ready, 1 when not (for container health)\n\n"
            "Settings. Each is also a FILE line \"name = value\" and an environment variable;\n"
            "a flag beats the environment, which beats the file, which beats the default.\n\n");
    for (d = cfg_defs; d < cfg_defs + NDEFS; d++) {
        snprintf(opt, sizeof opt, "--%s %s", flag_name(d, flag), metavar(d));
        fprintf(out, "  %-26s %s", opt, d->help);
        if (d->type == CFG_T_INT || d->type == CFG_T_LONG)
            fprintf(out, " (%lld..%lld)", d->min, d->max);
        fprintf(out, "\n  %-26s default %s; env %s", "", d->def ? d->def : none_shown(d),
                env_name(d, env));
        fprintf(out, "%s%s\n", d->env_alias ? " or " : "", d->env_alias ? d->env_alias : "");
    }
    fprintf(out, "\nExit status:\n"
                 "  0  clean shutdown (SIGTERM/SIGINT), --help, --version, --check-config, or\n"
                 "     --healthcheck of a ready instance\n"
                 "  1  start-up failure (cannot listen, unusable TLS certificate or key, out of\n"
                 "     memory), or --healthcheck of an instance that is not ready or not there\n"
                 "  2  bad command line, setting or config file\n");
}

void cfg_print_effective(FILE *out, const cfg_settings *s, const char *database_shown)
{
    for (const cfg_def *d = cfg_defs; d < cfg_defs + NDEFS; d++) {
        const char *field = (const char *)s + d->offset;
        bool text = d->type == CFG_T_STRING || d->type == CFG_T_LISTEN;
        const char *v = !text                                 ? NULL
                        : field == (const char *)&s->database ? database_shown
                                                              : *(char *const *)field;
        if (text && !v) {
            fprintf(out, "# %s = (not set)\n", d->name); /* a comment: the output loads back */
            continue;
        }
        fprintf(out, "%s = ", d->name);
        switch (d->type) {
        case CFG_T_INT: fprintf(out, "%d\n", *(const int *)field); break;
        case CFG_T_LONG: fprintf(out, "%ld\n", *(const long *)field); break;
        case CFG_T_ENUM: fprintf(out, "%s\n", d->names[*(const int *)field]); break;
        case CFG_T_BOOL: fprintf(out, "%s\n", *(const bool *)field ? "true" : "false"); break;
        case CFG_T_STRING:
        case CFG_T_LISTEN: {
            char q = strchr(v, '"') ? '\'' : '"'; /* no escapes inside quotes (cfg_load_file) */
            fprintf(out, "%c%s%c\n", q, v, q);
            break;
        }
        }
    }
}

void cfg_print_settings_table(FILE *out)
{
    char flag[NAME_LEN], env[NAME_LEN];
    const cfg_def *d;

    fprintf(out, "| setting | environment | flag | default | description |\n"
                 "|---|---|---|---|---|\n");
    for (d = cfg_defs; d < cfg_defs + NDEFS; d++) {
        fprintf(out, "| `%s` | `%s`", d->name, env_name(d, env));
        if (d->env_alias)
            fprintf(out, ", `%s`", d->env_alias);
        fprintf(out, " | `--%s %s` | ", flag_name(d, flag), metavar(d));
        fprintf(out, d->def ? "`%s`" : "%s", d->def ? d->def : none_shown(d));
        fprintf(out, " | %s", d->help);
        if (d->type == CFG_T_INT || d->type == CFG_T_LONG)
            fprintf(out, " (%lld..%lld)", d->min, d->max);
        fprintf(out, " |\n");
    }
}

cfg_status cfg_load(cfg_settings *s, int argc, char **argv, char *const *envp, FILE *out,
                    char *err, size_t errlen)
{
    cfg_settings t = {0};
    struct option opts[NDEFS + 6];
    char flags[NDEFS][NAME_LEN], why[WHY_LEN];
    const char *flagv[NDEFS] = {NULL}, *envv[NDEFS] = {NULL}, *envsrc[NDEFS] = {NULL};
    const char *config_flag = NULL, *config_env = NULL, *bad;
    cfg_status st = CFG_ERROR;
    cfg_action action = CFG_RUN;
    size_t i;
    int c;

    memset(s, 0, sizeof *s);
    if (err && errlen)
        err[0] = '\0';

    for (i = 0; i < NDEFS; i++)
        opts[i] = (struct option){flag_name(&cfg_defs[i], flags[i]), required_argument, NULL,
                                  OPT_SETTING + (int)i};
    opts[NDEFS] = (struct option){"config", required_argument, NULL, OPT_CONFIG};
    opts[NDEFS + 1] = (struct option){"help", no_argument, NULL, 'h'};
    opts[NDEFS + 2] = (struct option){"version", no_argument, NULL, 'V'};
    opts[NDEFS + 3] = (struct option){"check-config", no_argument, NULL, OPT_CHECK_CONFIG};
    opts[NDEFS + 4] = (struct option){"healthcheck", no_argument, NULL, OPT_HEALTHCHECK};
    opts[NDEFS + 5] = (struct option){NULL, 0, NULL, 0};

    /* optind = 0 makes glibc start afresh; "+" stops at the first non-option, unpermuted. */
    optind = 0;
    opterr = 0;
    while (argc > 0 && (c = getopt_long(argc, argv, "+:hV", opts, NULL)) != -1) {
        if (c >= OPT_SETTING) {
            flagv[c - OPT_SETTING] = optarg;
        } else if (c == OPT_CONFIG) {
            config_flag = optarg;
        } else if (c == OPT_CHECK_CONFIG) {
            action = CFG_CHECK_CONFIG;
        } else if (c == OPT_HEALTHCHECK) {
            action = CFG_HEALTHCHECK;
        } else if (c == 'h') {
            print_help(out);
            st = CFG_EXIT;
            goto out;
        } else if (c == 'V') {
            fprintf(out, "fanout %s\n", FANOUT_VERSION);
            st = CFG_EXIT;
            goto out;
        } else if (c == ':') { /* only long options take values, so optopt is one of ours */
            fail(err, errlen, "--%s: missing value",
                 optopt == OPT_CONFIG ? "config" : flags[optopt - OPT_SETTING]);
            goto out;
        } else if (optopt == 'h' || optopt == 'V' || optopt == OPT_CHECK_CONFIG ||
                   optopt == OPT_HEALTHCHECK) {
            /* glibc sets optopt to a flag's val when "--flag=x" gives a flag a value it does
             * not take: ours past 0xff are no characters to print. */
            fail(err, errlen, "%s: takes no value", argv[optind - 1]);
            goto out;
        } else if (optopt) {
            fail(err, errlen, "unknown option -%c (see --help)", optopt);
            goto out;
        } else { /* only the name: a mistyped --database=URL carries a password */
            fail(err, errlen, "unknown or ambiguous option \"%.*s\" (see --help)",
                 (int)strcspn(argv[optind - 1], "="), argv[optind - 1]);
            goto out;
        }
    }
    if (argc > 0 && optind < argc) {
        /* A connection string given without --database may hold a password: not echoed. */
        if (strpbrk(argv[optind], "@=:"))
            fail(err, errlen, "unexpected argument (not shown: it may hold a password; settings "
                              "are --name VALUE, a connection string --database URL)");
        else
            fail(err, errlen, "unexpected argument \"%s\" (settings are --name VALUE)",
                 argv[optind]);
        goto out;
    }

    for (i = 0; i < NDEFS; i++)
        if (cfg_defs[i].def && !set_value(&t, &cfg_defs[i], cfg_defs[i].def, why, sizeof why)) {
            fail(err, errlen, "default %s: %s", cfg_defs[i].name, why); /* a table bug */
            goto out;
        }
    scan_env(envp, envv, envsrc, &config_env);
    if ((config_flag || config_env) && !load_file(&t, config_flag ? config_flag : config_env,
                                                  err, errlen))
        goto out;
    for (i = 0; i < NDEFS; i++)
        if (envv[i] && !set_value(&t, &cfg_defs[i], envv[i], why, sizeof why)) {
            fail(err, errlen, "environment %.*s: %s", (int)(strchr(envsrc[i], '=') - envsrc[i]),
                 envsrc[i], why);
            goto out;
        }
    for (i = 0; i < NDEFS; i++)
        if (flagv[i] && !set_value(&t, &cfg_defs[i], flagv[i], why, sizeof why)) {
            fail(err, errlen, "--%s: %s", flags[i], why);
            goto out;
        }

    bad = split_listen(t.listen, &t.listen_host, &t.listen_port);
    if (bad) {
        fail(err, errlen, "listen: %s", bad);
        goto out;
    }
    if (t.max_batch_timeout_ms < t.batch_timeout_ms) {
        fail(err, errlen, "batch_timeout_ms (%d) must not exceed max_batch_timeout_ms (%d)",
             t.batch_timeout_ms, t.max_batch_timeout_ms);
        goto out;
    }
    if (!t.tls_cert_file != !t.tls_key_file) {
        fail(err, errlen, "%s is set but %s is not: HTTPS needs both (or neither, for plain HTTP)",
             t.tls_cert_file ? "tls_cert_file" : "tls_key_file",
             t.tls_cert_file ? "tls_key_file" : "tls_cert_file");
        goto out;
    }
    /* A batch is queued whole or refused: the largest one allowed must fit in an empty queue. */
    if (t.queue_size < t.max_queries) {
        fail(err, errlen, "queue_size (%d) must be at least max_queries (%d), or the largest "
             "batches could never run", t.queue_size, t.max_queries);
        goto out;
    }
    t.action = action;
    *s = t;
    memset(&t, 0, sizeof t);
    st = CFG_OK;
out:
    cfg_free(&t);
    return st;
}

void cfg_free(cfg_settings *s)
{
    const cfg_def *d;

    for (d = cfg_defs; d < cfg_defs + NDEFS; d++)
        if (d->type == CFG_T_STRING || d->type == CFG_T_LISTEN)
            free(*(char **)((char *)s + d->offset));
    free(s->listen_host);
    memset(s, 0, sizeof *s); /* a freed struct is a zeroed one: freeing again is harmless */
}
