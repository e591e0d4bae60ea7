/*
 * db_conn: opening a connection with fanout's pinned settings, and its type-name cache.
 * Owned by one thread at a time; see conn.h.
 */
#include "db/conn.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* Type-name cache: open addressing on the OID, linear probing, grown at 1/2 load. */
typedef struct type_slot {
    Oid oid;    /* 0: empty slot (InvalidOid is never a real type) */
    char *name; /* pg_type.typname, owned */
} type_slot;

struct db_conn {
    PGconn *pg;         /* the libpq connection, owned */
    PGcancel *cancel;   /* its cancel handle, owned; NULL if libpq could not make one */
    type_slot *types;   /* the cache's slots, owned */
    size_t types_cap;   /* slots allocated, a power of two */
    size_t types_len;   /* slots in use */
    db_stmts *stmts;    /* its named prepared statements, owned; NULL: none are kept */
    bool reset_prepared; /* the session reset's statements are prepared on it */
    bool fatal_seen;     /* the server sent a FATAL while no query ran: it is closing */
    void (*notice)(const char *message); /* where the server's notices go; may be NULL */
};

/* Defaults fanout applies when the conninfo leaves them unset: never hang on a dead network. */
static const char *const resilience_defaults[][2] = {
    {"connect_timeout", "5"},        /* seconds */
    {"keepalives", "1"},
    {"keepalives_idle", "30"},       /* seconds */
    {"keepalives_interval", "10"},   /* seconds */
    {"keepalives_count", "3"},
    {"tcp_user_timeout", "30000"},   /* ms: unacknowledged data for this long drops the link */
    {"application_name", "fanout"},
};

/* Append "-c name=value" to *opts (malloc'd, grown to fit: the user's own options have no
 * length limit, and cutting fanout's would change what they set), backslash-escaping spaces and
 * backslashes as the server's option parser expects. False when out of memory. */
static bool options_add(char **opts, const char *name, const char *value)
{
    size_t n = strlen(*opts);
    char *o = realloc(*opts, n + strlen(" -c =") + strlen(name) + 2 * strlen(value) + 1);

    if (!o)
        return false;
    *opts = o;
    n += (size_t)sprintf(o + n, "%s-c %s=", n ? " " : "", name);
    for (const char *v = value; *v; v++) {
        if (*v == ' ' || *v == '\\')
            o[n++] = '\\';
        o[n++] = *v;
    }
    o[n] = '\0';
    return true;
}

bool db_conninfo_build(const db_conn_params *p, char ***keywords, char ***values, char *err,
                       size_t errlen)
{
    PQconninfoOption *opts = NULL;
    char *perr = NULL;
    char **kw = NULL, **val = NULL;
    char *options = NULL;
    char timeout[32], lock[32], idle[32];
    size_t n = 0, cap;
    bool ok = false;

    *keywords = *values = NULL;
    opts = PQconninfoParse(p->conninfo ? p->conninfo : "", &perr);
    if (!opts) {
        snprintf(err, errlen, "database: %s", perr ? strtok(perr, "\n") : "out of memory");
        goto out;
    }
    cap = sizeof(resilience_defaults) / sizeof(resilience_defaults[0]) + 3;
    for (PQconninfoOption *o = opts; o->keyword; o++)
        cap++;
    kw = calloc(cap, sizeof(*kw));
    val = calloc(cap, sizeof(*val));
    if (!kw || !val)
        goto oom;

    for (PQconninfoOption *o = opts; o->keyword; o++) {
        if (!o->val)
            continue;
        if (strcmp(o->keyword, "options") == 0) {
            free(options);
            if (!(options = strdup(o->val)))
                goto oom;
            continue;
        }
        if (strcmp(o->keyword, "client_encoding") == 0)
            continue; /* pinned below */
        if (p->user && (strcmp(o->keyword, "user") == 0 || strcmp(o->keyword, "password") == 0))
            continue; /* replaced by p->user; fanout's own password is never offered for it */
        if (!(kw[n] = strdup(o->keyword)) || !(val[n++] = strdup(o->val)))
            goto oom;
    }
    if (p->user && (!(kw[n] = strdup("user")) || !(val[n++] = strdup(p->user))))
        goto oom;
    for (size_t i = 0; i < sizeof(resilience_defaults) / sizeof(resilience_defaults[0]); i++) {
        bool set = false;
        for (size_t j = 0; j < n; j++)
            set |= strcmp(kw[j], resilience_defaults[i][0]) == 0;
        if (set)
            continue;
        if (!(kw[n] = strdup(resilience_defaults[i][0])) ||
            !(val[n++] = strdup(resilience_defaults[i][1])))
            goto oom;
    }
    /* Appended after the user's own options, so fanout's values win where both set one. */
    snprintf(timeout, sizeof(timeout), "%d", p->statement_timeout_ms);
    snprintf(lock, sizeof(lock), "%d", p->lock_timeout_ms);
    snprintf(idle, sizeof(idle), "%d", p->idle_in_transaction_timeout_ms);
    if ((!options && !(options = strdup(""))) || !options_add(&options, "DateStyle", "ISO") ||
        !options_add(&options, "IntervalStyle", "postgres") ||
        !options_add(&options, "bytea_output", "hex") ||
        !options_add(&options, "extra_float_digits", "1") ||
        !options_add(&options, "TimeZone", p->timezone ? p->timezone : "UTC") ||
        !options_add(&options, "statement_timeout", timeout) ||
        !options_add(&options, "lock_timeout", lock) ||
        !options_add(&options, "idle_in_transaction_session_timeout", idle))
        goto oom;
    if (!(kw[n] = strdup("options")))
        goto oom;
    val[n++] = options;
    options = NULL;
    if (!(kw[n] = strdup("client_encoding")) || !(val[n++] = strdup("UTF8")))
        goto oom;
    *keywords = kw;
    *values = val;
    kw = val = NULL;
    ok = true;
    goto out;
oom:
    snprintf(err, errlen, "database: out of memory");
out:
    free(options);
    db_conninfo_free(kw, val);
    PQconninfoFree(opts);
    PQfreemem(perr);
    return ok;
}

void db_conninfo_free(char **keywords, char **values)
{
    for (size_t i = 0; keywords && keywords[i]; i++)
        free(keywords[i]);
    for (size_t i = 0; values && values[i]; i++)
        free(values[i]);
    free(keywords);
    free(values);
}

void db_conninfo_masked(const char *conninfo, char *out, size_t outlen)
{
    PQconninfoOption *opts = PQconninfoParse(conninfo ? conninfo : "", NULL);
    size_t n = 0;

    if (outlen)
        out[0] = '\0';
    if (!opts) {
        snprintf(out, outlen, "(unparsable)");
        return;
    }
    for (PQconninfoOption *o = opts; o->keyword && n < outlen; o++) {
        if (!o->val)
            continue;
        bool secret = strcmp(o->keyword, "password") == 0 || strcmp(o->keyword, "sslpassword") == 0;
        n += (size_t)snprintf(out + n, outlen - n, "%s%s='%s'", n ? " " : "", o->keyword,
                              secret ? "*****" : o->val);
    }
    PQconninfoFree(opts);
}

/* One comma-separated list of hosts (host or hostaddr): all on this host? */
static bool hosts_local(const char *list, bool (*is_loopback)(const char *host))
{
    char one[256];
    while (*list) {
        size_t n = strcspn(list, ",");
        snprintf(one, sizeof(one), "%.*s", (int)n, list);
        if (one[0] != '\0' && one[0] != '/' && one[0] != '@' && !is_loopback(one))
            return false; /* not a socket directory (or an abstract one) nor loopback */
        list += n + (list[n] == ',');
    }
    return true;
}

bool db_conninfo_local(const char *conninfo, bool (*is_loopback)(const char *host))
{
    PQconninfoOption *opts = PQconninfoParse(conninfo ? conninfo : "", NULL);
    const char *host = NULL, *hostaddr = NULL;

    if (!opts)
        return false;
    for (PQconninfoOption *o = opts; o->keyword; o++) {
        if (strcmp(o->keyword, "host") == 0 && o->val && *o->val)
            host = o->val;
        if (strcmp(o->keyword, "hostaddr") == 0 && o->val && *o->val)
            hostaddr = o->val;
    }
    if (!host && !hostaddr)
        host = getenv("PGHOST");
    bool local = hosts_local(hostaddr ? hostaddr : host ? host : "", is_loopback);
    PQconninfoFree(opts);
    return local;
}

static size_t type_hash(Oid oid, size_t cap)
{
    return (size_t)(oid * 2654435761u) & (cap - 1);
}

static bool type_put(db_conn *c, Oid oid, const char *name)
{
    if ((c->types_len + 1) * 2 > c->types_cap) {
        size_t ncap = c->types_cap ? c->types_cap * 2 : 1024;
        type_slot *nt = calloc(ncap, sizeof(*nt));
        if (!nt)
            return false;
        for (size_t i = 0; i < c->types_cap; i++) {
            if (!c->types[i].oid)
                continue;
            size_t h = type_hash(c->types[i].oid, ncap);
            while (nt[h].oid)
                h = (h + 1) & (ncap - 1);
            nt[h] = c->types[i];
        }
        free(c->types);
        c->types = nt;
        c->types_cap = ncap;
    }
    size_t h = type_hash(oid, c->types_cap);
    while (c->types[h].oid && c->types[h].oid != oid)
        h = (h + 1) & (c->types_cap - 1);
    if (c->types[h].oid == oid)
        return true;
    char *copy = strdup(name);
    if (!copy)
        return false;
    c->types[h].oid = oid;
    c->types[h].name = copy;
    c->types_len++;
    return true;
}

static const char *type_get(const db_conn *c, Oid oid)
{
    if (!c->types_cap)
        return NULL;
    for (size_t h = type_hash(oid, c->types_cap); c->types[h].oid; h = (h + 1) & (c->types_cap - 1))
        if (c->types[h].oid == oid)
            return c->types[h].name;
    return NULL;
}

/* Load names from a result of (oid, typname) rows. */
static void types_load(db_conn *c, PGresult *res)
{
    for (int i = 0; i < PQntuples(res); i++)
        if (!type_put(c, (Oid)strtoul(PQgetvalue(res, i, 0), NULL, 10), PQgetvalue(res, i, 1)))
            break;
}

/* libpq prints notices on stderr by default, which would break one-JSON-object-per-line logs. */
/* libpq hands an error that comes while no query runs to the notice receiver. A FATAL then
 * (pg_terminate_backend, a shutdown) means the server is closing the connection, though its
 * close may not have arrived yet: db_conn_alive must not send a job onto it. */
static void on_notice(void *arg, const PGresult *res)
{
    db_conn *c = arg;
    const char *severity = PQresultErrorField(res, PG_DIAG_SEVERITY_NONLOCALIZED);

    if (severity && (strcmp(severity, "FATAL") == 0 || strcmp(severity, "PANIC") == 0))
        c->fatal_seen = true;
    if (c->notice)
        c->notice(PQresultErrorMessage(res));
}

db_conn *db_conn_open(const db_conn_params *p, char *err, size_t errlen)
{
    char **kw = NULL, **val = NULL;
    db_conn *c = NULL;
    PGresult *res = NULL;

    if (!db_conninfo_build(p, &kw, &val, err, errlen))
        goto fail;
    c = calloc(1, sizeof(*c));
    if (!c) {
        snprintf(err, errlen, "out of memory");
        goto fail;
    }
    c->notice = p->notice;
    c->pg = PQconnectdbParams((const char *const *)kw, (const char *const *)val, 0);
    if (c->pg)
        PQsetNoticeReceiver(c->pg, on_notice, c);
    if (!c->pg || PQstatus(c->pg) != CONNECTION_OK) {
        const char *m = c->pg ? PQerrorMessage(c->pg) : "out of memory";
        size_t len = strcspn(m, "\n");
        snprintf(err, errlen, "%.*s", (int)len, m);
        goto fail;
    }
    /* Built-in types (OIDs below FirstNormalObjectId) cover nearly every column: one round trip. */
    res = PQexec(c->pg, "SELECT oid, typname FROM pg_catalog.pg_type WHERE oid OPERATOR(pg_catalog.<) 16384");
    if (PQresultStatus(res) != PGRES_TUPLES_OK) {
        snprintf(err, errlen, "loading type names: %s", PQresultErrorMessage(res));
        goto fail;
    }
    types_load(c, res);
    PQclear(res);
    res = NULL; /* the fail path clears res too */
    c->cancel = PQgetCancel(c->pg);
    c->stmts = db_stmts_new(p->statement_cache); /* NULL (unnamed statements) if it fails */
    if (!db_reset_prepare(c) &&
        (PQstatus(c->pg) != CONNECTION_OK || PQpipelineStatus(c->pg) != PQ_PIPELINE_OFF)) {
        snprintf(err, errlen, "preparing the session reset: %s", PQerrorMessage(c->pg));
        goto fail;
    } /* a refusal only costs speed: the reset then goes unnamed */
    db_conninfo_free(kw, val);
    return c;
fail:
    PQclear(res);
    db_conn_close(c);
    db_conninfo_free(kw, val);
    return NULL;
}

void db_conn_close(db_conn *c)
{
    if (!c)
        return;
    PQfreeCancel(c->cancel);
    PQfinish(c->pg);
    db_stmts_free(c->stmts);
    for (size_t i = 0; i < c->types_cap; i++)
        free(c->types[i].name);
    free(c->types);
    free(c);
}

bool db_conn_reset_prepared(const db_conn *c)
{
    return c->reset_prepared;
}

bool db_conn_fatal_seen(const db_conn *c)
{
    return c->fatal_seen;
}

void db_conn_set_reset_prepared(db_conn *c, bool prepared)
{
    c->reset_prepared = prepared;
}

db_stmts *db_conn_stmts(db_conn *c)
{
    return c->stmts;
}

PGconn *db_conn_pg(db_conn *c)
{
    return c->pg;
}

bool db_conn_ok(const db_conn *c)
{
    return c && PQstatus(c->pg) == CONNECTION_OK;
}

PGcancel *db_conn_cancel_handle(db_conn *c)
{
    return c->cancel;
}

void db_conn_drop_notifies(db_conn *c)
{
    PGnotify *n;
    while ((n = PQnotifies(c->pg)) != NULL)
        PQfreemem(n);
}

bool db_conn_in_transaction(const db_conn *c)
{
    PGTransactionStatusType t = PQtransactionStatus(c->pg);
    return t == PQTRANS_INTRANS || t == PQTRANS_INERROR || t == PQTRANS_ACTIVE;
}

bool db_conn_in_failed_transaction(const db_conn *c)
{
    return PQtransactionStatus(c->pg) == PQTRANS_INERROR;
}

const char *db_conn_type_cached(const db_conn *c, Oid type)
{
    return type_get(c, type);
}

const char *db_conn_type_name(db_conn *c, Oid type)
{
    const char *name = type_get(c, type);
    if (name)
        return name;
    char oid[16];
    const char *params[1] = {oid};
    snprintf(oid, sizeof(oid), "%u", type);
    /* Qualified operator: it may run inside a client's transaction, whose search_path can put
     * an operator of its own ahead of pg_catalog's (a failure here would abort that
     * transaction behind the client's back). */
    PGresult *res = PQexecParams(c->pg,
                                 "SELECT oid, typname FROM pg_catalog.pg_type "
                                 "WHERE oid OPERATOR(pg_catalog.=) $1",
                                 1, NULL, params, NULL, NULL, 0);
    if (PQresultStatus(res) == PGRES_TUPLES_OK)
        types_load(c, res);
    PQclear(res);
    name = type_get(c, type);
    return name ? name : "unknown";
}
