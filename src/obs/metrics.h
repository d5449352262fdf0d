/*
 * The metrics registry: what /metrics shows, in Prometheus text format 0.0.4, written by one
 * function instead of by hand in every module.
 *
 * Two halves with different costs:
 * - cells (th_counter, th_gauge, th_histogram) are plain structs a module embeds where it keeps
 *   its state and updates on the hot path with relaxed atomic adds: no lock, no allocation, no
 *   formatting. A module works the same with or without a registry (unit tests need none), and
 *   other readers (the EMF lines) read the very same cells: there is one set of counters.
 * - the registry knows families (name, HELP, TYPE, fixed label names) and their children (one
 *   label value set each, bound to a cell or to a function sampled at render time). Families and
 *   children are registered at start; a family takes a cap on its children and refuses more, so
 *   a label value can only come from a fixed, bounded set (a provider name, a reason from a
 *   list) — never a number, an id or request text. Rendering holds the registry's lock only to
 *   walk it; updates never take it.
 *
 * Lifetimes: a cell or function's ud bound to a child must outlive every render (the registry
 * is freed, or no longer rendered, before the modules whose cells it points at). Strings given
 * at registration are copied.
 */
#ifndef TH_OBS_METRICS_H
#define TH_OBS_METRICS_H

#include <stdatomic.h>
#include <stddef.h>
#include <stdint.h>

#include "common/buf.h"
#include "common/err.h"

/* ---- cells: updated lock-free by their owner ---- */

struct th_counter {
    atomic_uint_least64_t v;
};

static inline void th_counter_add(struct th_counter *c, uint64_t n)
{
    atomic_fetch_add_explicit(&c->v, n, memory_order_relaxed);
}

static inline void th_counter_inc(struct th_counter *c)
{
    th_counter_add(c, 1);
}

static inline uint64_t th_counter_get(const struct th_counter *c)
{
    return atomic_load_explicit(&c->v, memory_order_relaxed);
}

struct th_gauge {
    atomic_int_least64_t v;
};

static inline void th_gauge_add(struct th_gauge *g, int64_t n)
{
    atomic_fetch_add_explicit(&g->v, n, memory_order_relaxed);
}

static inline void th_gauge_set(struct th_gauge *g, int64_t v)
{
    atomic_store_explicit(&g->v, v, memory_order_relaxed);
}

static inline int64_t th_gauge_get(const struct th_gauge *g)
{
    return atomic_load_explicit(&g->v, memory_order_relaxed);
}

/*
 * A histogram of integer observations (microseconds, bytes): bucket bounds are integers in the
 * observation's unit, so choosing a bucket is integer compares, and `scale` converts to the unit
 * shown (1e6: microseconds observed, seconds shown). Counts are kept per bucket (one add per
 * observation) and cumulated when rendered; the count is the sum of the buckets.
 */
#define TH_HISTOGRAM_MAX_BUCKETS 15

struct th_histogram {
    const int64_t *le; /* borrowed, ascending, n of them; +Inf is implied */
    size_t n;
    double scale;
    atomic_uint_least64_t bucket[TH_HISTOGRAM_MAX_BUCKETS + 1]; /* the last: above le[n-1] */
    atomic_uint_least64_t sum;                                  /* negative observations: 0 */
};

/* le: borrowed until the histogram is no longer used. n is capped at TH_HISTOGRAM_MAX_BUCKETS. */
void th_histogram_init(struct th_histogram *h, const int64_t *le, size_t n, double scale);

static inline void th_histogram_observe(struct th_histogram *h, int64_t v)
{
    size_t b = 0;
    while (b < h->n && v > h->le[b])
        b++;
    atomic_fetch_add_explicit(&h->bucket[b], 1, memory_order_relaxed);
    atomic_fetch_add_explicit(&h->sum, (uint64_t)(v > 0 ? v : 0), memory_order_relaxed);
}

/* Observations so far and their sum (in the observation's unit). */
void th_histogram_read(const struct th_histogram *h, uint64_t *count, uint64_t *sum);

/* ---- the registry ---- */

typedef enum { TH_METRIC_COUNTER, TH_METRIC_GAUGE, TH_METRIC_HISTOGRAM } th_metric_type;

#define TH_METRIC_MAX_LABELS 4
#define TH_METRIC_NAME_MAX   96 /* family and label names, with the terminating NUL */
#define TH_METRIC_VALUE_MAX  64 /* a label value, with the terminating NUL */

struct th_metrics;
struct th_metric_family;

/* A value sampled at render time (a queue's length, a table's size, a circuit's state). */
typedef double (*th_metric_fn)(void *ud);

th_err th_metrics_new(struct th_metrics **out);
void th_metrics_free(struct th_metrics *m); /* NULL is a no-op */

/*
 * Registers a family, or finds it when the same name was registered with the same type and
 * label names (two modules may add children to one family: refusals at the front and in the
 * hook). labels: NULL-terminated, NULL for none; at most TH_METRIC_MAX_LABELS, no "le" (the
 * histogram's). max_children: how many label value sets it will ever hold (1 without labels).
 * TH_E_INVAL: a bad name, HELP missing, or a clash with the family already registered.
 */
th_err th_metrics_family(struct th_metrics *m, const char *name, const char *help,
                         th_metric_type type, const char *const *labels, size_t max_children,
                         struct th_metric_family **out);

/*
 * Children: one label value set (values in the order of the family's labels; NULL for a
 * family without labels) bound to a cell of the family's type, or to a function (counter and
 * gauge families). TH_E_OVERLOAD past the family's cap; TH_E_INVAL for a label set already
 * there, a value too long, or a cell of another type.
 */
th_err th_metrics_counter(struct th_metric_family *f, const char *const *values,
                          struct th_counter *c);
th_err th_metrics_gauge(struct th_metric_family *f, const char *const *values, struct th_gauge *g);
th_err th_metrics_histogram(struct th_metric_family *f, const char *const *values,
                            struct th_histogram *h);
th_err th_metrics_fn(struct th_metric_family *f, const char *const *values, th_metric_fn fn,
                     void *ud);

/*
 * Appends every family in registration order: HELP, TYPE, then its samples (a histogram's
 * cumulative _bucket{le} ending at +Inf, _sum, _count). Safe from any thread; takes the lock to
 * walk, and calls the functions bound to children while holding it (they must not register).
 */
void th_metrics_render(struct th_metrics *m, struct th_buf *out);

/*
 * The standard process metrics as the Prometheus client libraries define them, read from
 * /proc/self at render time: process_cpu_seconds_total, process_resident_memory_bytes,
 * process_virtual_memory_bytes, process_open_fds, process_max_fds, process_start_time_seconds.
 */
th_err th_metrics_add_process(struct th_metrics *m);

/*
 * telehook_refusals_total{reason}: requests refused before any message was sent, one family
 * shared by the modules that refuse (the HTTP front's hygiene and authentication, the hook's
 * decoding); each adds its children from its own fixed list of reasons. Blocks by the abuse
 * controls have their own family (telehook_blocked_total). Found or registered.
 */
#define TH_METRICS_REFUSAL_REASONS 24
th_err th_metrics_refusals(struct th_metrics *m, struct th_metric_family **out);

/* telehook_build_info{version="…"} 1. */
th_err th_metrics_add_build_info(struct th_metrics *m, const char *version);

#endif
