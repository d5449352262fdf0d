/* Private to src/store: the backend ops table. A PostgreSQL backend adds one more table. */
#ifndef TH_STORE_INTERNAL_H
#define TH_STORE_INTERNAL_H

#include "store/store.h"

struct th_store_ops {
    const char *scheme;
    th_err (*open)(const char *location, struct th_store **out, char *err, size_t errlen);
    void (*close)(struct th_store *st);
    th_err (*templates_each)(struct th_store *st, th_template_row_fn fn, void *ud);
    th_err (*template_put)(struct th_store *st, const struct th_template_row *row);
    th_err (*template_delete)(struct th_store *st, const char *language, const char *channel);
    th_err (*outbox_insert)(struct th_store *st, const struct th_outbox_row *row);
    th_err (*outbox_each)(struct th_store *st, int limit, th_outbox_row_fn fn, void *ud);
    th_err (*delivery_insert)(struct th_store *st, const struct th_delivery_row *row);
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
    th_err (*prefs_each)(struct th_store *st, th_pref_row_fn fn, void *ud);
    th_err (*pref_put)(struct th_store *st, const struct th_pref_row *row);
    th_err (*pref_delete)(struct th_store *st, const char *user);
    th_err (*begin)(struct th_store *st);
    th_err (*commit)(struct th_store *st);
    th_err (*rollback)(struct th_store *st);
};

/* Every backend's handle starts with this. */
struct th_store {
    const struct th_store_ops *ops;
    char describe[512];
};

extern const struct th_store_ops th_store_sqlite_ops;

#endif
