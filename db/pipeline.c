/*
 * db_exec_pipeline: a batch's queries in one round trip (libpq pipeline mode), as named
 * prepared statements from the connection's cache, with the session reset behind them. See
 * exec.h. Runs on the worker that owns the db_conn. Rows are read and encoded exactly as for a
 * single statement (db/reader.h); only the sending and the order of reading differ.
 */
#include "db/exec.h"

#include <stdio.h>
#include <string.h>

#include "db/reader.h"

bool db_read_sync(PGconn *pg)
{
    PGresult *res = PQgetResult(pg);
    bool ok = res && PQresultStatus(res) == PGRES_PIPELINE_SYNC;
    PQclear(res);
    return ok;
}

PGresult *db_read_command(PGconn *pg)
{
    PGresult *res, *last = NULL;
    while ((res = PQgetResult(pg)) != NULL) {
        PQclear(last);
        last = res;
    }
    return last;
}

/* How one query of a pipeline went out. */
typedef struct sent {
    char name[DB_STMT_NAME_MAX]; /* the named statement it executed; "" for unnamed */
    bool live;                   /* it went out and its reader holds what came back */
    bool dealloc;                /* a DEALLOCATE of an evicted statement went first (own sync) */
    bool parse;                  /* its statement's Parse went with it */
    bool unmade;                 /* ... and did not make it: it failed, or was skipped */
    int parsed_by;               /* the query whose Parse made its statement in this pipeline
                                    (itself when parse); -1: prepared before */
    bool opens;                  /* the read-only opener went first: a shared transaction starts */
    bool shared;                 /* it runs in a shared read-only transaction */
    bool syncs;                  /* a sync follows it */
    bool block_ends;             /* ... after the ROLLBACK that ends the block it was in */
    bool resend;                 /* it goes out again (must_resend) */
    db_reset_kind reset;         /* it ends its part: the reset that went behind it */
    bool reset_syncs;            /* ... and a sync went right behind that reset */
    bool concluded;              /* its result object is final and handed over (conclude) */
    int cancel_no;               /* it was stopped by a cancel (57014): the how-manieth of the
                                    run; 0: not */
} sent;

/* One db_exec_pipeline call. */
typedef struct pipe {
    db_conn *c;
    PGconn *pg;
    db_stmts *stmts;
    db_pipe_query *qs;
    const db_pipe_part *parts;
    int part_of[DB_PIPELINE_MAX]; /* query i belongs to parts[part_of[i]] */
    db_reader rds[DB_PIPELINE_MAX];
    sent sq[DB_PIPELINE_MAX];
    bool may_cancel;    /* a lone read-only query: a cancel can only hit the reset behind it */
    bool named_opener;  /* send fanout's own statements named (else unnamed) */
    bool open;          /* a shared transaction is open: its sync has not gone out */
    bool reset;         /* the session is reset behind each part (db_exec_pipeline's reset);
                           then a shared transaction is a block (BEGIN READ ONLY), which a
                           ROLLBACK ends */
    int unsynced;       /* the query whose part's rolling-back reset has no sync behind it
                           yet (the next shared transaction may follow it unsynced); -1: none */
    int last_sent;      /* the query sent last, -1 for none */
    int nparts;
    int round;          /* 1, then 2 (and rarely more) for what goes out again */
    bool deallocated;   /* a DEALLOCATE ALL went out between rounds (a client's PREPARE) */
    int cancelled;      /* statements a 57014 stopped in this run, every round */
    int nstale;         /* cached statements a schema change made stale, to deallocate */
    char stale[DB_PIPELINE_MAX][DB_STMT_NAME_MAX];
    const db_pipe_hooks *hooks; /* the caller's, or NULL */
} pipe;

static const db_exec_opts *opts_of(const pipe *p, int i)
{
    return p->parts[p->part_of[i]].opts;
}

/* Query i runs in a read-only transaction (its batch's db_exec_opts.read_only). */
static bool read_only(const pipe *p, int i)
{
    const db_exec_opts *o = opts_of(p, i);
    return o && o->read_only;
}

/* End the open shared transaction with its sync (a block with its ROLLBACK first); or put a
 * sync behind a reset that ended one. */
static bool close_shared(pipe *p)
{
    if (p->unsynced >= 0) {
        p->sq[p->unsynced].reset_syncs = true;
        p->unsynced = -1;
        return PQpipelineSync(p->pg);
    }
    if (!p->open)
        return true;
    p->open = false;
    p->sq[p->last_sent].syncs = true;
    if (p->reset) {
        p->sq[p->last_sent].block_ends = true;
        if (!db_own_send(p->c, DB_OWN_ROLLBACK, p->named_opener))
            return false;
    }
    return PQpipelineSync(p->pg);
}

/* Open a read-only transaction: the opener goes first (unnamed should it not be prepared). */
static bool send_opener(pipe *p, sent *sq, bool block)
{
    sq->opens = true;
    return db_own_send(p->c, block ? DB_OWN_BEGIN : DB_OWN_READ_ONLY, p->named_opener);
}

/*
 * Send query i: through the connection's statement cache when it has one. It shares the open
 * read-only transaction (or opens one) when `share` and its statement was prepared before this
 * pipeline and, unless the pipeline is read-only, is not known to write and has a neighbour to
 * share with; else it gets a sync of its own (and in a read-only pipeline, an opener too).
 */
static bool send_query(pipe *p, int i, bool share, bool next_may_share)
{
    PGconn *pg = p->pg;
    const db_pipe_query *q = &p->qs[i];
    sent *sq = &p->sq[i];
    bool writes = false;
    const char *name = db_stmts_find(p->stmts, q->sql, q->sql_hash, &writes);

    *sq = (sent){.live = true, .parsed_by = -1};
    p->rds[i] = (db_reader){.c = p->c, .opts = opts_of(p, i), .out = q->out, .start = q->out->len,
                            .keys = DB_BUF_INIT, .no_cancel = !p->may_cancel};
    if (name) {
        for (int j = i - 1; j >= 0 && sq->parsed_by < 0; j--)
            if (p->sq[j].parse && strcmp(p->sq[j].name, name) == 0)
                sq->parsed_by = j;
    }
    share = share && name && sq->parsed_by < 0 &&
            (read_only(p, i) || (!writes && (p->open || next_may_share)));
    if (!share && !close_shared(p))
        return false;
    p->last_sent = i;
    if (share) {
        if (!p->open) {
            p->open = true;
            p->unsynced = -1; /* that reset ended its block: no sync needed between */
            if (!send_opener(p, sq, p->reset))
                return false;
        }
        sq->shared = true;
        snprintf(sq->name, sizeof(sq->name), "%s", name);
        return PQsendQueryPrepared(pg, sq->name, q->nparams, q->params, NULL, NULL, 0);
    }
    if (!name && p->stmts) {
        char evicted[DB_STMT_NAME_MAX], cmd[DB_STMT_NAME_MAX + 16];
        name = db_stmts_add(p->stmts, q->sql, q->sql_hash, evicted);
        if (evicted[0]) { /* fanout's own name, never request data */
            snprintf(cmd, sizeof(cmd), "DEALLOCATE %s", evicted);
            sq->dealloc = true;
            if (!PQsendQueryParams(pg, cmd, 0, NULL, NULL, NULL, NULL, 0) || !PQpipelineSync(pg))
                return false;
        }
        if (name)
            sq->parse = true;
    }
    if (read_only(p, i) && !send_opener(p, sq, false))
        return false;
    if (sq->parse) {
        sq->parsed_by = i;
        if (!PQsendPrepare(pg, name, q->sql, q->nparams, NULL))
            return false;
    }
    sq->syncs = true;
    if (name) {
        snprintf(sq->name, sizeof(sq->name), "%s", name);
        if (!PQsendQueryPrepared(pg, sq->name, q->nparams, q->params, NULL, NULL, 0))
            return false;
    } else if (!PQsendQueryParams(pg, q->sql, q->nparams, NULL, q->params, NULL, NULL, 0)) {
        return false;
    }
    return PQpipelineSync(pg);
}

/* Did every query of the part that the k-th of the round (todo) ends run in the one shared
 * transaction still open? Then it was read-only throughout, and rolling it back undoes most
 * of what its queries could leave behind (db/session.c): the reset behind it can be short. */
static bool part_shared(const pipe *p, const int *todo, int k)
{
    int part = p->part_of[todo[k]];

    for (int j = k; j >= 0 && p->part_of[todo[j]] == part; j--) {
        const sent *sq = &p->sq[todo[j]];
        if (!sq->shared)
            return false;
        if (sq->opens) /* it must be the part's first */
            return j == 0 || p->part_of[todo[j - 1]] != part;
    }
    return false;
}

/* Did query i fail because its cached statement went stale, before it ran? Only for a statement
 * prepared before this pipeline: one parsed here is fresh, so its error is its answer (and a
 * statement goes out again at most once). Two ways: "cached plan must not change result type"
 * (0A000 from the server's check of a cached plan, RevalidateCachedQuery: a table it reads
 * gained or lost a column), not any 0A000 (feature_not_supported is a query's own answer too);
 * and a parameter refused at Bind (the context names the portal's parameter), which may be
 * the type of a column since changed (ALTER COLUMN ... TYPE): parsed afresh, the statement takes
 * today's. A parameter that is just wrong fails again, parsed afresh, and that is its answer.
 * The context is the server's English text; under another lc_messages the answer stands. */
static bool stale_plan(const pipe *p, int i, const char *code)
{
    const PGresult *res = p->rds[i].last;
    const char *from, *context;

    if (!code || !p->sq[i].name[0] || p->sq[i].parsed_by >= 0 || p->sq[i].parse)
        return false;
    from = PQresultErrorField(res, PG_DIAG_SOURCE_FUNCTION);
    if (strcmp(code, "0A000") == 0 && from && strcmp(from, "RevalidateCachedQuery") == 0)
        return true;
    context = PQresultErrorField(res, PG_DIAG_CONTEXT);
    return context && strncmp(context, "unnamed portal parameter $", 26) == 0;
}

/* Out of the cache at once (what goes out again is parsed afresh, under a new name); off the
 * server before the next round. */
static void forget_stale(pipe *p, const char *name)
{
    for (int j = 0; j < p->nstale; j++)
        if (strcmp(p->stale[j], name) == 0)
            return;
    db_stmts_forget(p->stmts, name);
    if (p->nstale < DB_PIPELINE_MAX)
        snprintf(p->stale[p->nstale++], DB_STMT_NAME_MAX, "%s", name);
}

/* Read query i's results (after what went ahead of it). */
static bool read_query(pipe *p, int i)
{
    PGconn *pg = p->pg;
    db_reader *rd = &p->rds[i];
    sent *sq = p->sq;
    PGresult *parse_error = NULL;

    if (sq[i].dealloc) { /* its failure matters to nobody */
        PQclear(db_read_command(pg));
        if (!db_read_sync(pg))
            return false;
    }
    if (sq[i].opens) { /* should it fail, the queries behind it come back aborted */
        PGresult *res = db_read_command(pg);
        const char *code = PQresultErrorField(res, PG_DIAG_SQLSTATE);
        if (code && strcmp(code, "26000") == 0)
            db_conn_set_reset_prepared(p->c, false); /* dropped: the reset goes unnamed, and
                                                        its check prepares them all again */
        PQclear(res);
    }
    if (sq[i].parse) {
        PGresult *res = db_read_command(pg);
        ExecStatusType st = PQresultStatus(res);
        if (st == PGRES_PIPELINE_ABORTED) { /* skipped: the query comes back aborted too */
            db_stmts_forget(p->stmts, sq[i].name);
            sq[i].unmade = true;
        }
        if (st == PGRES_COMMAND_OK || st == PGRES_PIPELINE_ABORTED)
            PQclear(res);
        else
            parse_error = res; /* the query's own error: a syntax error, say */
    }
    (void)PQsetSingleRowMode(pg); /* for the query at the head of the pipeline */
    db_reader_read(rd, pg);
    if (parse_error) {
        PQclear(rd->last); /* PGRES_PIPELINE_ABORTED: the Parse's error says why */
        rd->last = parse_error;
        sq[i].unmade = true;
        db_stmts_forget(p->stmts, sq[i].name);
    } else if (sq[i].parsed_by >= 0 && sq[i].parsed_by != i && sq[sq[i].parsed_by].unmade) {
        /* Its statement was never made, so it did not run (its 26000 says nothing of the
         * cache): that query's error is its own (the same text, the same Parse error), or it
         * goes again with that query (must_resend). */
        rd->error_from = p->rds[sq[i].parsed_by].last;
    } else if (sq[i].name[0] && PQresultStatus(rd->last) == PGRES_FATAL_ERROR) {
        const char *code = PQresultErrorField(rd->last, PG_DIAG_SQLSTATE);
        if (code && strcmp(code, "26000") == 0)
            db_stmts_clear(p->stmts); /* someone deallocated fanout's statements: start over */
        else if (stale_plan(p, i, code))
            forget_stale(p, sq[i].name);
    }
    if (!rd->error_from && PQresultStatus(rd->last) == PGRES_FATAL_ERROR) {
        const char *code = PQresultErrorField(rd->last, PG_DIAG_SQLSTATE);
        if (code && strcmp(code, "57014") == 0) /* a cancel's, or statement_timeout's */
            sq[i].cancel_no = ++p->cancelled;
    }
    if (sq[i].block_ends)
        PQclear(db_read_command(pg));
    return PQstatus(pg) == CONNECTION_OK && (!sq[i].syncs || db_read_sync(pg));
}

/* In a run of several parts, did a cancel stop query j (query i's, or the one whose Parse was to
 * make i's statement) that was not meant for i (another batch's deadline)? In any round: a
 * batch with two jobs in the run sends two cancels, and the second may land on what the first
 * sent to round 2 (test_two_cancels_of_one_deadline). And one cancel may stop two statements:
 * the server delivers each cancel request as two SIGINTs (the postmaster's signal_child signals
 * the backend's pid, then its process group), and when the backend acts on the first before the
 * second arrives, the second stops whatever runs next, which may be the query the first sent
 * again (seen: a 57014 in round 3, 0.3 ms after round 2's, two cancels, three 57014s). But no
 * more of the run's 57014s than twice the cancels that went out: the others are
 * statement_timeout's (or an administrator's), and the query's answer
 * (test_statement_timeout_in_a_pipeline_of_batches). */
static bool cancelled_for_another(pipe *p, int i, int j)
{
    return p->nparts > 1 && p->sq[j].cancel_no > 0 && p->hooks && p->hooks->query_wanted &&
           p->hooks->cancels_sent && p->hooks->query_wanted(p->hooks->arg, i) &&
           p->sq[j].cancel_no <= 2 * p->hooks->cancels_sent(p->hooks->arg);
}

/* Must query i go out again? Yes when the read-only transaction it was in (shared, or its own
 * in a read-only pipeline) failed before it ran, or when it was refused as a write in a shared
 * one (it would have run alone), unless the pipeline is read-only: then that is its answer. And
 * in a run of several parts when a cancel stopped it that was not meant for it (another
 * batch's deadline): its transaction rolled back, so it changed nothing. And when the statement
 * it executes was never made (it did not run either) and the query that was to make it goes
 * again, or a cancel stopped that one's Parse: not its own text's fault. */
static bool must_resend(pipe *p, int i)
{
    const PGresult *last = p->rds[i].last, *own = p->rds[i].error_from;
    const char *code = PQresultErrorField(own ? own : last, PG_DIAG_SQLSTATE);
    int by = p->sq[i].parsed_by;

    if (by >= 0 && by != i && p->sq[by].unmade &&
        (p->sq[by].resend || cancelled_for_another(p, i, by)))
        return true;
    if (p->round == 1 && code && strcmp(code, "25P02") == 0)
        return true; /* in_failed_sql_transaction: a failed block's sync went ahead of it */
    if (stale_plan(p, i, code))
        return true; /* it did not run: parsed again, it will (test_statement_after_alter_table) */
    code = PQresultErrorField(last, PG_DIAG_SQLSTATE);
    /* Cancelled, in a run of several batches' quick reads, by a deadline that was not its own:
     * it stopped and its transaction rolled back, shared or not (a query whose statement was
     * prepared in this pipeline has a sync of its own), so it goes out again. */
    if (cancelled_for_another(p, i, i))
        return true; /* query_canceled */
    if (!p->sq[i].shared && !p->sq[i].opens)
        return false;
    if (PQresultStatus(last) == PGRES_PIPELINE_ABORTED)
        return true;
    if (p->sq[i].shared && !read_only(p, i) && PQresultStatus(last) == PGRES_FATAL_ERROR && code &&
        strcmp(code, "25006") == 0) {
        db_stmts_mark_writes(p->stmts, p->sq[i].name); /* read_only_sql_transaction */
        return true;
    }
    return false;
}

/* Query i is over: write its result object and hand it to the caller. */
static void conclude(pipe *p, int i)
{
    db_pipe_query *q = &p->qs[i];

    if (p->sq[i].live) {
        q->status = db_reader_conclude(&p->rds[i], q->id);
    } else {
        db_put_conn_lost(q->out, q->id, p->pg);
        q->status = DB_CONN_LOST;
    }
    p->sq[i].concluded = true;
    if (p->hooks && p->hooks->query_done)
        p->hooks->query_done(p->hooks->arg, i);
}

/* Does the k-th of the round's queries (todo) end its part: the last of its batch in the round? */
static bool ends_part(const pipe *p, const int *todo, int ntodo, int k)
{
    return k + 1 == ntodo || p->part_of[todo[k + 1]] != p->part_of[todo[k]];
}

db_status db_exec_pipeline(db_conn *c, db_pipe_query *qs, const db_pipe_part *parts, int nparts,
                           bool reset, const db_pipe_hooks *hooks)
{
    pipe local, *p = &local;
    PGresult *check = NULL;
    bool reset_ok = true, broken = false;
    int todo[DB_PIPELINE_MAX], ntodo, n = 0;

    local = (pipe){.c = c, .pg = db_conn_pg(c), .stmts = db_conn_stmts(c), .qs = qs,
                   .parts = parts, .nparts = nparts, .last_sent = -1, .unsynced = -1,
                   .reset = reset, .hooks = hooks};
    for (int k = 0; k < nparts; k++) /* at most DB_PIPELINE_MAX: never more readers */
        for (int j = 0; j < parts[k].n && n < DB_PIPELINE_MAX; j++)
            local.part_of[n++] = k;
    /* A failed reset is redone by the worker (DB_SQL_ERROR), so a cancel that lands in it loses
     * nothing; in front of another query it would fail that query. */
    local.may_cancel = nparts == 1 && n == 1 && read_only(p, 0);
    for (ntodo = 0; ntodo < n; ntodo++)
        todo[ntodo] = ntodo;
    if (!PQenterPipelineMode(p->pg)) {
        broken = true;
        goto conclude;
    }
    /* Round 1 sends every query; round 2 what a failed read-only transaction left unrun, each
     * with its own sync (and an unnamed opener), so a failed transaction makes no round 3; a
     * cancel meant for another batch, or a failed reset, may (each once). The reset goes behind
     * each part (each batch's queries) of a round: the short one when the part ran in one
     * block, which its ROLLBACK ends, else the full one with a sync. When a part failed, so did
     * the resets up to the next sync: the parts behind it ran on whatever it left (a session
     * advisory lock, say) or did not run, so their queries go out again in round 2, behind a
     * ROLLBACK (a block left open) and a reset; should the last reset have failed too,
     * DB_SQL_ERROR: the worker resets the connection again. A reset alone (no parts) goes out
     * at the front of round 1. */
    bool reset_first = reset && n == 0, dealloc_first = false;
    for (int round = 1; !broken && (round == 1 || ntodo > 0); round++) {
        p->round = round;
        bool prepared = round == 1 && db_conn_reset_prepared(c);
        /* round 2 sends what a failed opener may have left: then it may be the one missing */
        p->named_opener = prepared;
        double t0 = db_now_ms(), mark;
        int nsent = 0;

        p->last_sent = -1;
        /* A block that failed before its ROLLBACK is still open (and failing whatever came
         * behind it): end it first. Only libpq out of pipeline mode can tell. */
        bool rollback_first = false;
        if (round > 1) {
            broken = !PQexitPipelineMode(p->pg);
            rollback_first = !broken && PQtransactionStatus(p->pg) == PQTRANS_INERROR;
            broken = broken || !PQenterPipelineMode(p->pg) ||
                     (rollback_first && !db_own_send(c, DB_OWN_ROLLBACK, false));
        }
        if (!broken && dealloc_first) { /* a client's PREPARE: every statement goes, fanout's too */
            db_stmts_clear(p->stmts);
            db_conn_set_reset_prepared(c, false);
            p->deallocated = true;
            p->nstale = 0;
            broken = !PQsendQueryParams(p->pg, "DEALLOCATE ALL", 0, NULL, NULL, NULL, NULL, 0);
        }
        /* fanout's own names, never request data; each with its sync: the name may be gone
         * already (evicted meanwhile), and that failure must not take what follows along. */
        int nstale = round > 1 ? p->nstale : 0;
        for (int j = 0; !broken && j < nstale; j++) {
            char cmd[DB_STMT_NAME_MAX + 16];
            snprintf(cmd, sizeof(cmd), "DEALLOCATE %s", p->stale[j]);
            broken = !PQsendQueryParams(p->pg, cmd, 0, NULL, NULL, NULL, NULL, 0) ||
                     !PQpipelineSync(p->pg);
        }
        if (!broken && reset_first && !db_reset_send(c, DB_RESET_FULL))
            broken = true;
        for (; !broken && nsent < ntodo; nsent++) {
            int i = todo[nsent];
            bool ends = ends_part(p, todo, ntodo, nsent);
            bool next = ends ? reset : qs[todo[nsent + 1]].share;
            bool share = round == 1 && (read_only(p, i) || (prepared && qs[i].share));
            if (round > 1)
                qs[i].resent = true;
            if (!send_query(p, i, share, next)) {
                broken = true; /* counted by the loop: part of it may have gone out */
            } else if (ends) {
                db_reset_kind kind = DB_RESET_FULL;
                if (reset && p->open && part_shared(p, todo, nsent)) {
                    kind = DB_RESET_CHECK; /* the reset's ROLLBACK ends the block */
                    p->open = false;
                }
                p->sq[i].reset = kind;
                if (!close_shared(p) || (reset && !db_reset_send(c, kind)))
                    broken = true;
                else if (reset && kind != DB_RESET_FULL) /* the next part may follow unsynced */
                    p->unsynced = i;
                if (!broken && nsent + 1 == ntodo && !close_shared(p))
                    broken = true;
            }
        }
        mark = t0;
        if (!broken && rollback_first)
            PQclear(db_read_command(p->pg));
        if (!broken && dealloc_first)
            PQclear(db_read_command(p->pg)); /* its failure shows in the reset's check */
        dealloc_first = false;
        for (int j = 0; !broken && j < nstale; j++) {
            PQclear(db_read_command(p->pg)); /* its failure changes nothing */
            broken = !db_read_sync(p->pg);
        }
        p->nstale -= nstale;
        if (!broken && reset_first) {
            PQclear(check); /* the last reset read is the one that counts */
            check = NULL;
            reset_ok = db_reset_read(c, DB_RESET_FULL, &check);
            reset_first = false;
            mark = db_now_ms();
        }
        bool tainted = false; /* a reset failed ahead of the part being read */
        bool foreign = false; /* a client's prepared statement was there behind a part */
        for (int k = 0; k < nsent; k++) {
            int i = todo[k];
            /* A query's own time starts when what went before it ended (the first: the send). */
            p->rds[i].started = mark;
            if (!broken && !read_query(p, i))
                broken = true;
            if (broken) /* whatever is left was lost with the connection */
                p->rds[i].ended = db_now_ms();
            mark = p->rds[i].ended;
            qs[i].elapsed_ms = p->rds[i].ended - p->rds[i].started;
            if (broken)
                continue;
            /* Final unless it goes out again: hand it over now, not after the whole pipeline
             * and the reset (a deadline passing meanwhile would lose it). */
            p->sq[i].resend = tainted || (foreign && p->sq[i].shared) || must_resend(p, i);
            if (!p->sq[i].resend && db_reader_concludes_offline(&p->rds[i]))
                conclude(p, i);
            if (reset && ends_part(p, todo, ntodo, k)) {
                PQclear(check); /* the last reset read is the one that counts */
                check = NULL;
                reset_ok = db_reset_read(c, p->sq[i].reset, &check);
                if (p->sq[i].reset_syncs && !db_read_sync(p->pg))
                    reset_ok = false;
                tainted = tainted || !reset_ok;
                /* A client's PREPARE (also from a function) outlives its part's reset: the
                 * shared reads behind it ran with it there, and go out again after a DEALLOCATE
                 * ALL; what ran outside a block stands (it may have written; its own
                 * statements were fresh). Behind the last part, db_reset_finish deals with it. */
                foreign = foreign || (reset_ok && k + 1 < nsent && db_reset_foreign(check));
                mark = db_now_ms();
            }
        }
        int again = 0;
        for (int k = 0; !broken && k < nsent; k++) {
            int i = todo[k];
            if (p->sq[i].resend) {
                db_reader_discard(&p->rds[i]);
                p->sq[i].live = false;
                todo[again++] = i;
            }
        }
        ntodo = again;
        /* What goes again after a failed last reset (a failed block fails all behind it, the
         * last reset too) may follow another batch's failed part: reset first. */
        reset_first = reset && (!reset_ok || foreign) && ntodo > 0;
        dealloc_first = foreign && ntodo > 0;
    }
    if (!broken && !PQexitPipelineMode(p->pg))
        broken = true;
    if (!broken && reset && reset_ok)
        reset_ok = db_reset_finish(c, check);
    /* After a DEALLOCATE ALL here, the reset's statements are prepared again for the next run. */
    if (!broken && reset && reset_ok && p->deallocated && !db_conn_reset_prepared(c))
        reset_ok = db_reset_prepare(c);
conclude:
    /* Out of pipeline mode now (unless broken): the rest may look up a type name. */
    for (int i = 0; i < n; i++)
        if (!p->sq[i].concluded)
            conclude(p, i);
    for (int i = 0; i < n; i++)
        if (p->sq[i].live)
            PQclear(p->rds[i].last);
    PQclear(check);
    db_conn_drop_notifies(c);
    if (broken || PQstatus(p->pg) != CONNECTION_OK)
        return DB_CONN_LOST;
    return reset_ok ? DB_OK : DB_SQL_ERROR;
}
