/* Private to src/store: the backend ops table (sqlite.c, postgres.c). */
#ifndef TH_STORE_INTERNAL_H
#define TH_STORE_INTERNAL_H

#include "store/store.h"

/* The history tables' index in th_store_tables, for the scan op. */
enum { TH_STORE_T_OUTBOX = 3, TH_STORE_T_DELIVERIES = 4, TH_STORE_T_DLQ = 5 };

/* The callback of the scanned table (the others unused); a non-zero return stops the batch. */
struct th_store_scan_fns {
    th_outbox_row_fn outbox;
    th_delivery_row_fn delivery;
    th_dlq_row_fn dlq;
    void *ud;
};

struct th_store_ops {
    const char *scheme;
    /* open takes the whole URL (libpq reads it) rather than what follows "scheme:" / "//" */
    bool full_url;
    th_err (*open)(const char *location, struct th_store **out, char *err, size_t errlen);
    /* the same without applying migrations (`store status`): only status and close may follow
     * when the schema is not the latest */
    th_err (*open_unmigrated)(const char *location, struct th_store **out, char *err,
                              size_t errlen);
    void (*close)(struct th_store *st);
    th_err (*templates_each)(struct th_store *st, th_template_row_fn fn, void *ud);
    th_err (*template_put)(struct th_store *st, const struct th_template_row *row);
    th_err (*template_delete)(struct th_store *st, const char *language, const char *channel);
    th_err (*outbox_insert)(struct th_store *st, const struct th_outbox_row *row);
    th_err (*outbox_each)(struct th_store *st, int limit, th_outbox_row_fn fn, void *ud);
    th_err (*delivery_insert)(struct th_store *st, const struct th_delivery_row *row);
    /* NULL: th_store_insert_many answers TH_E_INVAL (the caller goes row by row) */
    th_err (*insert_many)(struct th_store *st, const struct th_store_rows *rows);
    th_err (*deliveries_query)(struct th_store *st, const struct th_delivery_filter *f,
                               th_delivery_row_fn fn, void *ud);
    th_err (*dlq_insert)(struct th_store *st, const struct th_dlq_row *row);
    th_err (*dlq_each)(struct th_store *st, int limit, th_dlq_row_fn fn, void *ud);
    th_err (*dlq_get)(struct th_store *st, const char *id, th_dlq_row_fn fn, void *ud);
    th_err (*dlq_delete)(struct th_store *st, const char *id);
    th_err (*dlq_count)(struct th_store *st, long *n);
    th_err (*purge)(struct th_store *st, const struct th_purge *p, long *removed);
    th_err (*routes_each)(struct th_store *st, th_route_row_fn fn, void *ud);
    th_err (*route_put)(struct th_store *st, const struct th_route_row *row);
    th_err (*route_delete)(struct th_store *st, const char *channel, const char *country);
    th_err (*conv_block_put)(struct th_store *st, const struct th_conv_block_row *row);
    th_err (*conv_blocks_each)(struct th_store *st, const struct th_conv_block_filter *f,
                               th_conv_block_fn fn, void *ud);
    th_err (*conv_blocks_clear)(struct th_store *st, const struct th_conv_block_clear *c,
                                long *cleared);
    th_err (*prefs_each)(struct th_store *st, th_pref_row_fn fn, void *ud);
    th_err (*pref_put)(struct th_store *st, const struct th_pref_row *row);
    th_err (*pref_delete)(struct th_store *st, const char *user);
    th_err (*begin)(struct th_store *st);
    th_err (*commit)(struct th_store *st);
    th_err (*rollback)(struct th_store *st);
    th_err (*status)(struct th_store *st, struct th_store_status *out);
    /*
     * `store copy`: at most limit rows of a history table (TH_STORE_T_*) in insertion order
     * (SQLite's rowid, PostgreSQL's seq) after the row *after (0: from the first), every column
     * (the search keys too); *after moves to the last row given, *n counts them (fewer than
     * limit: no more). Pages, so a table of any size is read in bounded memory: keyset pages on
     * SQLite, a cursor on PostgreSQL (the calls of one table follow each other inside one
     * transaction there, until a short page).
     */
    th_err (*scan)(struct th_store *st, int table, int64_t *after, int limit,
                   const struct th_store_scan_fns *f, int *n);
    /*
     * Receipts: the newest record with provider + transaction id (its row id: SQLite's rowid,
     * PostgreSQL's seq; strings into target, its receipt so far in cur_*): TH_E_NOTFOUND when
     * none. Then set writes the receipt into that row. store.c decides between them.
     */
    th_err (*receipt_find)(struct th_store *st, const char *provider, const char *transaction_id,
                           int64_t *row, struct th_receipt_applied *target, char *cur_status,
                           size_t cur_len, bool *cur_final, int64_t *cur_ms);
    th_err (*receipt_set)(struct th_store *st, int64_t row, const struct th_receipt_row *r);
    /* a server over a network (th_store_shared): NULL on SQLite, whose file is always there */
    bool (*lost)(const struct th_store *st);
    th_err (*ping)(struct th_store *st);
    th_err (*reconnect)(struct th_store *st);
    /* NULL: no change notifications (th_store_listen answers TH_E_INVAL) */
    th_err (*listen)(const char *location, struct th_store_listener **out, char *err,
                     size_t errlen);
    th_err (*verify)(struct th_store *st, const struct th_verify_event *ev,
                     enum th_verify_result *res, th_verified_fn fn, void *ud);
    th_err (*ensure_index)(struct th_store *st, const char *name, const char *columns, char *err,
                           size_t errlen);
    th_err (*verifications_since)(struct th_store *st, const char *node, int64_t *after_seq,
                                  int limit, th_verified_fn fn, void *ud);
    th_err (*stats)(struct th_store *st, enum th_stats_by by, int64_t since_ms, int64_t until_ms,
                    th_stats_row_fn fn, void *ud);
    /* NULL or: makes a dropped connection again before an operation (store.c calls it) */
    void (*revive)(struct th_store *st);
};

/*
 * `deliveries stats`, the same text on both backends: %s the group's expression and %s the
 * country's; since and until are the two placeholders. Route: what the record can say of it,
 * the provider that delivered and the attempt of the route it was ("twilio#2": the second).
 */
#define TH_STATS_SQL(p1, p2)                                                                       \
    "SELECT %s AS g, %s AS c,"                                                                     \
    " sum(CASE WHEN outcome = 'SUCCESSFUL' THEN 1 ELSE 0 END),"                                    \
    " sum(CASE WHEN outcome = 'SUCCESSFUL' AND verified_ms IS NOT NULL THEN 1 ELSE 0 END),"        \
    " sum(CASE WHEN outcome = 'REJECTED' THEN 1 ELSE 0 END),"                                      \
    " sum(CASE WHEN outcome IN ('FAILED', 'TIMEOUT', 'ERROR') THEN 1 ELSE 0 END)"                  \
    " FROM deliveries WHERE created_ms >= " p1 " AND created_ms < " p2 " GROUP BY 1"               \
    " ORDER BY 3 DESC, 1"
static inline const char *th_stats_group(enum th_stats_by by)
{
    switch (by) {
    case TH_STATS_PREFIX:
        return "prefix_hash";
    case TH_STATS_PROVIDER:
        return "provider";
    case TH_STATS_ROUTE:
        return "provider || '#' || CAST(attempts AS TEXT)";
    case TH_STATS_CHANNEL:
        return "channel";
    case TH_STATS_COUNTRY:
    default:
        return "country";
    }
}

/* Every backend's handle starts with this. */
struct th_store {
    const struct th_store_ops *ops;
    char describe[512];
};

extern const struct th_store_ops th_store_sqlite_ops;
extern const struct th_store_ops th_store_pg_ops;

/*
 * The description of a PostgreSQL store URL with any password left out: a URI without the
 * password of its user-info or a password= parameter, a conninfo rebuilt from its keywords
 * without password=. false when libpq cannot parse it.
 */
bool th_store_pg_describe(const char *url, char *out, size_t cap);

/*
 * Runs q (no values: tests and diagnostics only) on a PostgreSQL store's connection; the first
 * column of the first row into out (may be NULL). TH_E_STORE with libpq's message in err.
 */
th_err th_store_pg_query(struct th_store *st, const char *q, char *out, size_t outlen, char *err,
                         size_t errlen);

/* The same on an SQLite store's connection (its PRAGMAs are per connection). */
th_err th_store_sqlite_query(struct th_store *st, const char *q, char *out, size_t outlen,
                             char *err, size_t errlen);

/* mkdir -p of path's parent directory, 0700 (sqlite.c; the spool's file too). 0 or -1. */
int th_store_make_parent(const char *path);
/* How many times a PostgreSQL store's dropped connection was made again (tests). */
long th_store_pg_reconnects(const struct th_store *st);
/* Statements a PostgreSQL store's connection has sent so far, each a round trip (tests,
 * benches); from any thread. 0 on SQLite. */
long th_store_pg_round_trips(const struct th_store *st);

#endif
