/*
 * `telehook store copy`: every table of one store into another, whichever the backends
 * (SQLite → PostgreSQL to move to several nodes, PostgreSQL → SQLite for the way back).
 *
 * The target takes everything in one transaction, so a failure anywhere (a row the target
 * refuses, the connection lost, the process killed) leaves it as it was. The source is read in
 * one read transaction (one snapshot: a consistent copy even if a node writes meanwhile — what
 * it writes after the snapshot is not copied) and the history tables a page at a time in
 * insertion order (keyset pages: bounded memory for any size), inserted in that order so the
 * target's own order of rows of the same millisecond is the source's. Ids and times are the
 * source's; DLQ payloads travel as their sealed bytes, never opened (no dlq.key needed here).
 */
#include <stdio.h>
#include <string.h>

#include "store/internal.h"

#define COPY_BATCH 500

struct copy_ctx {
    struct th_store *to;
    long n;
    th_err e;
};

static int put_template(void *ud, const struct th_template_row *row)
{
    struct copy_ctx *c = ud;
    c->e = th_store_template_put(c->to, row);
    c->n += c->e == TH_E_OK;
    return c->e != TH_E_OK;
}

static int put_pref(void *ud, const struct th_pref_row *row)
{
    struct copy_ctx *c = ud;
    c->e = th_store_pref_put(c->to, row);
    c->n += c->e == TH_E_OK;
    return c->e != TH_E_OK;
}

static int put_route(void *ud, const struct th_route_row *row)
{
    struct copy_ctx *c = ud;
    c->e = th_store_route_put(c->to, row);
    c->n += c->e == TH_E_OK;
    return c->e != TH_E_OK;
}

static int put_outbox(void *ud, const struct th_outbox_row *row)
{
    struct copy_ctx *c = ud;
    c->e = th_store_outbox_insert(c->to, row);
    c->n += c->e == TH_E_OK;
    return c->e != TH_E_OK;
}

static int put_delivery(void *ud, const struct th_delivery_row *row)
{
    struct copy_ctx *c = ud;
    c->e = th_store_delivery_insert(c->to, row);
    /* its receipt, as it is (the record just inserted has none: it takes it) */
    if (c->e == TH_E_OK && row->receipt_status && row->receipt_status[0]) {
        struct th_receipt_row r = {.provider = row->provider,
                                   .transaction_id = row->transaction_id,
                                   .status = row->receipt_status,
                                   .error = row->receipt_error,
                                   .final = row->receipt_final,
                                   .event_ms = row->receipt_ms};
        struct th_receipt_applied a;
        bool changed;
        c->e = th_store_receipt_apply(c->to, &r, &a, &changed);
    }
    c->n += c->e == TH_E_OK;
    return c->e != TH_E_OK;
}

static int put_dlq(void *ud, const struct th_dlq_row *row)
{
    struct copy_ctx *c = ud;
    c->e = th_store_dlq_insert(c->to, row);
    c->n += c->e == TH_E_OK;
    return c->e != TH_E_OK;
}

/* The source's read snapshot: one transaction over every read. */
static th_err snapshot_begin(struct th_store *from)
{
    if (from->ops == &th_store_pg_ops) {
        char err[256];
        return th_store_pg_query(from, "BEGIN ISOLATION LEVEL REPEATABLE READ, READ ONLY", NULL, 0,
                                 err, sizeof err);
    }
    return th_store_begin(from);
}

static void snapshot_end(struct th_store *from)
{
    if (from->ops == &th_store_pg_ops) {
        char err[256];
        th_store_pg_query(from, "ROLLBACK", NULL, 0, err, sizeof err);
    } else {
        th_store_rollback(from);
    }
}

/* Copies table i (an index in th_store_tables) inside the open transactions. */
static th_err copy_table(struct th_store *from, int i, struct copy_ctx *c, int batch)
{
    th_err e = TH_E_OK;
    switch (i) {
    case 0:
        e = th_store_templates_each(from, put_template, c);
        break;
    case 1:
        e = th_store_prefs_each(from, put_pref, c);
        break;
    case 2:
        e = th_store_routes_each(from, put_route, c);
        break;
    default: {
        const struct th_store_scan_fns f = {put_outbox, put_delivery, put_dlq, c};
        int64_t after = 0;
        for (int n = batch; e == TH_E_OK && c->e == TH_E_OK && n == batch;)
            e = from->ops->scan(from, i, &after, batch, &f, &n);
        break;
    }
    }
    return e != TH_E_OK ? e : c->e;
}

th_err th_store_copy(struct th_store *from, struct th_store *to, struct th_store_copy *o, char *err,
                     size_t errlen)
{
    memset(o->rows, 0, sizeof o->rows);
    if (strcmp(th_store_describe(from), th_store_describe(to)) == 0) {
        snprintf(err, errlen, "the source and the target are the same store (%s)",
                 th_store_describe(to));
        return TH_E_INVAL;
    }
    struct th_store_status sf, st;
    if (th_store_status(from, &sf) != TH_E_OK || th_store_status(to, &st) != TH_E_OK) {
        snprintf(err, errlen, "cannot count the rows of the source or the target");
        return TH_E_STORE;
    }
    long held = 0;
    for (int i = 0; i < TH_STORE_TABLES; i++) {
        o->target_rows[i] = st.rows[i] > 0 ? st.rows[i] : 0;
        held += o->target_rows[i];
    }
    if (held > 0 && !o->append) {
        char what[256] = "";
        size_t n = 0;
        for (int i = 0; i < TH_STORE_TABLES && n < sizeof what; i++)
            if (o->target_rows[i] > 0)
                n += (size_t)snprintf(what + n, sizeof what - n, "%s%s %ld", n ? ", " : "",
                                      th_store_tables[i], o->target_rows[i]);
        snprintf(err, errlen,
                 "the target %s is not empty (%s): nothing copied; copy into an empty store, or "
                 "add --append to add these rows to it",
                 th_store_describe(to), what);
        return TH_E_BUSY;
    }
    if (o->dry_run) {
        for (int i = 0; i < TH_STORE_TABLES; i++)
            o->rows[i] = sf.rows[i] > 0 ? sf.rows[i] : 0;
        return TH_E_OK;
    }
    int batch = o->batch > 0 ? o->batch : COPY_BATCH;
    if (snapshot_begin(from) != TH_E_OK) {
        snprintf(err, errlen, "cannot start a read transaction on the source");
        return TH_E_STORE;
    }
    if (th_store_begin(to) != TH_E_OK) {
        snapshot_end(from);
        snprintf(err, errlen, "cannot start a transaction on the target");
        return TH_E_STORE;
    }
    th_err e = TH_E_OK;
    for (int i = 0; e == TH_E_OK && i < TH_STORE_TABLES; i++) {
        struct copy_ctx c = {.to = to};
        e = copy_table(from, i, &c, batch);
        o->rows[i] = c.n;
        if (e != TH_E_OK)
            snprintf(err, errlen, "%s: row %ld could not be %s (%s): the target is left unchanged",
                     th_store_tables[i], c.n + 1, c.e != TH_E_OK ? "written" : "read",
                     th_strerror(e));
    }
    snapshot_end(from);
    if (e == TH_E_OK && (e = th_store_commit(to)) != TH_E_OK)
        snprintf(err, errlen, "the target's commit failed: the target is left unchanged");
    if (e != TH_E_OK)
        th_store_rollback(to);
    return e;
}
