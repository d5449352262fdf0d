#include <stdio.h>
#include <string.h>

#include "common/util.h"
#include "store/internal.h"

static const struct {
    const char *scheme;
    const struct th_store_ops *ops;
} backends[] = {
    {"sqlite", &th_store_sqlite_ops},
    {"postgresql", &th_store_pg_ops},
    {"postgres", &th_store_pg_ops}, /* libpq's other URI scheme */
};

const char *const th_store_tables[TH_STORE_TABLES] = {"templates", "prefs",      "routes",
                                                      "outbox",    "deliveries", "dlq"};

/* The backend of url and what its open takes (the location); TH_E_STORE with err if none. */
static th_err resolve(const char *url, const struct th_store_ops **out_ops, const char **out_loc,
                      char *err, size_t errlen)
{
    const char *location = url;
    const struct th_store_ops *ops = &th_store_sqlite_ops; /* a bare path is SQLite */
    const char *colon = strchr(url, ':');
    /* "sqlite:PATH" / "sqlite://PATH"; a colon after a '/' belongs to a path */
    if (colon && colon > url && !memchr(url, '/', (size_t)(colon - url)) &&
        strcmp(url, ":memory:") != 0) {
        size_t n = (size_t)(colon - url);
        ops = NULL;
        for (size_t i = 0; i < sizeof backends / sizeof backends[0]; i++)
            if (strlen(backends[i].scheme) == n && strncmp(url, backends[i].scheme, n) == 0)
                ops = backends[i].ops;
        if (!ops) {
            /* the scheme only: the rest of a URL may hold a password */
            snprintf(err, errlen,
                     "unsupported store URL scheme '%.*s' (supported: sqlite, postgresql)",
                     (int)(n > 32 ? 32 : n), url);
            return TH_E_STORE;
        }
        location = colon + 1;
        if (strncmp(location, "//", 2) == 0)
            location += 2;
    }
    if (!*location) {
        snprintf(err, errlen, "store URL has no location");
        return TH_E_STORE;
    }
    if (ops->full_url)
        location = url;
    *out_ops = ops;
    *out_loc = location;
    return TH_E_OK;
}

static th_err open_url(const char *url, bool migrate, struct th_store **out, char *err,
                       size_t errlen)
{
    const struct th_store_ops *ops;
    const char *location;
    th_err e = resolve(url, &ops, &location, err, errlen);
    if (e != TH_E_OK)
        return e;
    return migrate ? ops->open(location, out, err, errlen)
                   : ops->open_unmigrated(location, out, err, errlen);
}

th_err th_store_listen(const char *url, struct th_store_listener **out, char *err, size_t errlen)
{
    const struct th_store_ops *ops;
    const char *location;
    th_err e = resolve(url, &ops, &location, err, errlen);
    if (e != TH_E_OK)
        return e;
    if (!ops->listen) {
        snprintf(err, errlen, "the %s store has no change notifications", ops->scheme);
        return TH_E_INVAL;
    }
    return ops->listen(location, out, err, errlen);
}

/* The store ready for an operation: a dropped connection made again first (a backend's). */
static struct th_store *live(struct th_store *st)
{
    if (st->ops->revive)
        st->ops->revive(st);
    return st;
}

th_err th_store_open(const char *url, struct th_store **out, char *err, size_t errlen)
{
    return open_url(url, true, out, err, errlen);
}

th_err th_store_open_unmigrated(const char *url, struct th_store **out, char *err, size_t errlen)
{
    return open_url(url, false, out, err, errlen);
}

th_err th_store_status(struct th_store *st, struct th_store_status *out)
{
    return live(st)->ops->status(st, out);
}

void th_store_close(struct th_store *st)
{
    if (st)
        st->ops->close(st);
}

const char *th_store_describe(const struct th_store *st)
{
    return st->describe;
}

th_err th_store_templates_each(struct th_store *st, th_template_row_fn fn, void *ud)
{
    return live(st)->ops->templates_each(st, fn, ud);
}

th_err th_store_template_put(struct th_store *st, const struct th_template_row *row)
{
    return live(st)->ops->template_put(st, row);
}

th_err th_store_template_delete(struct th_store *st, const char *language, const char *channel)
{
    return live(st)->ops->template_delete(st, language, channel);
}

th_err th_store_prefs_each(struct th_store *st, th_pref_row_fn fn, void *ud)
{
    return live(st)->ops->prefs_each(st, fn, ud);
}

th_err th_store_pref_put(struct th_store *st, const struct th_pref_row *row)
{
    return live(st)->ops->pref_put(st, row);
}

th_err th_store_pref_delete(struct th_store *st, const char *user)
{
    return live(st)->ops->pref_delete(st, user);
}

th_err th_store_deliveries_query(struct th_store *st, const struct th_delivery_filter *f,
                                 th_delivery_row_fn fn, void *ud)
{
    return live(st)->ops->deliveries_query(st, f, fn, ud);
}

th_err th_store_verify(struct th_store *st, const struct th_verify_event *ev,
                       enum th_verify_result *res, th_verified_fn fn, void *ud)
{
    return live(st)->ops->verify(st, ev, res, fn, ud);
}

th_err th_store_ensure_indexes(struct th_store *st, unsigned which, char *err, size_t errlen)
{
    static const struct {
        unsigned bit;
        const char *name, *columns;
    } idx[] = {{TH_STORE_INDEX_VERIFY, "deliveries_user", "user_id, created_ms"},
               {TH_STORE_INDEX_RECEIPTS, "deliveries_transaction", "provider, transaction_id"}};
    for (size_t i = 0; i < sizeof idx / sizeof idx[0]; i++) {
        if (!(which & idx[i].bit))
            continue;
        th_err e = live(st)->ops->ensure_index(st, idx[i].name, idx[i].columns, err, errlen);
        if (e != TH_E_OK)
            return e;
    }
    return TH_E_OK;
}

th_err th_store_verifications_since(struct th_store *st, const char *node, int64_t *after_seq,
                                    int limit, th_verified_fn fn, void *ud)
{
    return live(st)->ops->verifications_since(st, node, after_seq, limit, fn, ud);
}

th_err th_store_delivery_stats(struct th_store *st, enum th_stats_by by, int64_t since_ms,
                               int64_t until_ms, th_stats_row_fn fn, void *ud)
{
    return live(st)->ops->stats(st, by, since_ms, until_ms, fn, ud);
}

th_err th_store_dlq_insert(struct th_store *st, const struct th_dlq_row *row)
{
    return live(st)->ops->dlq_insert(st, row);
}

th_err th_store_dlq_each(struct th_store *st, int limit, th_dlq_row_fn fn, void *ud)
{
    return live(st)->ops->dlq_each(st, limit > 0 ? limit : 20, fn, ud);
}

th_err th_store_dlq_get(struct th_store *st, const char *id, th_dlq_row_fn fn, void *ud)
{
    return live(st)->ops->dlq_get(st, id, fn, ud);
}

th_err th_store_dlq_delete(struct th_store *st, const char *id)
{
    return live(st)->ops->dlq_delete(st, id);
}

th_err th_store_dlq_count(struct th_store *st, long *n)
{
    return st->ops->dlq_count(st, n);
}

th_err th_store_purge(struct th_store *st, const struct th_purge *p, long *removed)
{
    return live(st)->ops->purge(st, p, removed);
}

th_err th_store_routes_each(struct th_store *st, th_route_row_fn fn, void *ud)
{
    return live(st)->ops->routes_each(st, fn, ud);
}

th_err th_store_route_put(struct th_store *st, const struct th_route_row *row)
{
    return live(st)->ops->route_put(st, row);
}

th_err th_store_route_delete(struct th_store *st, const char *channel, const char *country)
{
    return live(st)->ops->route_delete(st, channel, country);
}

th_err th_store_conv_block_put(struct th_store *st, const struct th_conv_block_row *row)
{
    return live(st)->ops->conv_block_put(st, row);
}

th_err th_store_conv_blocks_each(struct th_store *st, const struct th_conv_block_filter *f,
                                 th_conv_block_fn fn, void *ud)
{
    return live(st)->ops->conv_blocks_each(st, f, fn, ud);
}

th_err th_store_conv_blocks_clear(struct th_store *st, const struct th_conv_block_clear *c,
                                  long *cleared)
{
    *cleared = 0;
    return live(st)->ops->conv_blocks_clear(st, c, cleared);
}

th_err th_store_outbox_insert(struct th_store *st, const struct th_outbox_row *row)
{
    return live(st)->ops->outbox_insert(st, row);
}

th_err th_store_outbox_each(struct th_store *st, int limit, th_outbox_row_fn fn, void *ud)
{
    return live(st)->ops->outbox_each(st, limit <= 0 ? 20 : limit, fn, ud);
}

th_err th_store_delivery_insert(struct th_store *st, const struct th_delivery_row *row)
{
    return live(st)->ops->delivery_insert(st, row);
}

/* Whether a receipt (final, at event_ms) is news for a record holding cur (the rule of
 * store.h: more final wins, then not older; the same final status twice is not). */
static bool receipt_is_news(const char *cur, bool cur_final, int64_t cur_ms, const char *status,
                            bool final, int64_t event_ms)
{
    if (!*cur || final != cur_final)
        return !*cur || final;
    /* The final status the record holds, again: a sender's retry (SNS delivers at least once,
     * Twilio repeats a callback it got no answer to) or a replay (a Twilio signature carries no
     * time). Not news: each application is one more final count for route health and the
     * metrics, so one captured "undelivered" sent over and over would demote a provider. */
    if (final && strcmp(cur, status) == 0)
        return false;
    return event_ms >= cur_ms;
}

th_err th_store_receipt_apply(struct th_store *st, const struct th_receipt_row *r,
                              struct th_receipt_applied *out, bool *changed)
{
    *changed = false;
    memset(out, 0, sizeof *out);
    int64_t row = 0, cur_ms = 0;
    char cur[32] = "";
    bool cur_final = false;
    th_err e = live(st)->ops->receipt_find(st, r->provider, r->transaction_id, &row, out, cur,
                                           sizeof cur, &cur_final, &cur_ms);
    if (e != TH_E_OK)
        return e;
    th_strlcpy(out->provider, r->provider, sizeof out->provider);
    th_strlcpy(out->transaction_id, r->transaction_id, sizeof out->transaction_id);
    th_strlcpy(out->status, r->status, sizeof out->status);
    th_strlcpy(out->error, r->error ? r->error : "", sizeof out->error);
    out->final = r->final;
    out->delivered = r->delivered;
    out->event_ms = r->event_ms;
    if (!receipt_is_news(cur, cur_final, cur_ms, r->status, r->final, r->event_ms))
        return TH_E_OK;
    e = st->ops->receipt_set(st, row, r);
    *changed = e == TH_E_OK;
    return e;
}

th_err th_store_insert_many(struct th_store *st, const struct th_store_rows *rows)
{
    if (!st->ops->insert_many)
        return TH_E_INVAL;
    return live(st)->ops->insert_many(st, rows);
}

th_err th_store_deliveries_each(struct th_store *st, int limit, th_delivery_row_fn fn, void *ud)
{
    struct th_delivery_filter f = {.limit = limit};
    return live(st)->ops->deliveries_query(st, &f, fn, ud);
}

th_err th_store_begin(struct th_store *st)
{
    return live(st)->ops->begin(st);
}

th_err th_store_commit(struct th_store *st)
{
    return live(st)->ops->commit(st);
}

th_err th_store_rollback(struct th_store *st)
{
    return live(st)->ops->rollback(st);
}

bool th_store_shared(const struct th_store *st)
{
    return st->ops->lost != NULL;
}

bool th_store_lost(const struct th_store *st)
{
    return st->ops->lost && st->ops->lost(st);
}

th_err th_store_ping(struct th_store *st)
{
    return st->ops->ping ? st->ops->ping(st) : TH_E_OK;
}

th_err th_store_reconnect(struct th_store *st)
{
    return st->ops->reconnect ? st->ops->reconnect(st) : TH_E_OK;
}
