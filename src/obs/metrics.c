#include "obs/metrics.h"

#include <ctype.h>
#include <dirent.h>
#include <math.h>
#include <pthread.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <unistd.h>

#include "common/util.h"

#define MAX_FAMILIES 128 /* a fixed program registers a fixed number: a cap, not a tuning knob */

/* ---- cells ---- */

void th_histogram_init(struct th_histogram *h, const int64_t *le, size_t n, double scale)
{
    h->le = le;
    h->n = n < TH_HISTOGRAM_MAX_BUCKETS ? n : TH_HISTOGRAM_MAX_BUCKETS;
    h->scale = scale > 0 ? scale : 1;
    for (size_t b = 0; b <= TH_HISTOGRAM_MAX_BUCKETS; b++)
        atomic_init(&h->bucket[b], 0);
    atomic_init(&h->sum, 0);
}

void th_histogram_read(const struct th_histogram *h, uint64_t *count, uint64_t *sum)
{
    uint64_t c = 0;
    for (size_t b = 0; b <= h->n; b++)
        c += atomic_load_explicit(&h->bucket[b], memory_order_relaxed);
    *count = c;
    *sum = atomic_load_explicit(&h->sum, memory_order_relaxed);
}

/* ---- the registry ---- */

typedef enum { BIND_COUNTER, BIND_GAUGE, BIND_HISTOGRAM, BIND_FN } bind_kind;

struct child {
    char values[TH_METRIC_MAX_LABELS][TH_METRIC_VALUE_MAX];
    bind_kind kind;
    union {
        struct th_counter *counter;
        struct th_gauge *gauge;
        struct th_histogram *histogram;
        struct {
            th_metric_fn fn;
            void *ud;
        } fn;
    } u;
};

struct th_metric_family {
    struct th_metrics *m;
    char name[TH_METRIC_NAME_MAX];
    char *help;
    th_metric_type type;
    char labels[TH_METRIC_MAX_LABELS][TH_METRIC_NAME_MAX];
    size_t nlabels;
    struct child *children; /* max_children of them, allocated at registration */
    size_t nchildren, max_children;
};

struct th_metrics {
    pthread_mutex_t mu;
    struct th_metric_family *families[MAX_FAMILIES];
    size_t nfamilies;
};

th_err th_metrics_new(struct th_metrics **out)
{
    struct th_metrics *m = calloc(1, sizeof *m);
    if (!m)
        return TH_E_NOMEM;
    pthread_mutex_init(&m->mu, NULL);
    *out = m;
    return TH_E_OK;
}

void th_metrics_free(struct th_metrics *m)
{
    if (!m)
        return;
    for (size_t i = 0; i < m->nfamilies; i++) {
        free(m->families[i]->children);
        free(m->families[i]->help);
        free(m->families[i]);
    }
    pthread_mutex_destroy(&m->mu);
    free(m);
}

/* [a-zA-Z_:][a-zA-Z0-9_:]* for metric names; labels the same without ':'. */
static bool valid_name(const char *s, bool colon)
{
    size_t n = strlen(s);
    if (n == 0 || n >= TH_METRIC_NAME_MAX)
        return false;
    for (size_t i = 0; i < n; i++) {
        unsigned char c = (unsigned char)s[i];
        bool ok = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || c == '_' ||
                  (colon && c == ':') || (i > 0 && c >= '0' && c <= '9');
        if (!ok)
            return false;
    }
    return true;
}

static size_t count_labels(const char *const *labels)
{
    size_t n = 0;
    while (labels && labels[n])
        n++;
    return n;
}

static bool same_shape(const struct th_metric_family *f, th_metric_type type,
                       const char *const *labels, size_t nlabels)
{
    if (f->type != type || f->nlabels != nlabels)
        return false;
    for (size_t i = 0; i < nlabels; i++)
        if (strcmp(f->labels[i], labels[i]) != 0)
            return false;
    return true;
}

th_err th_metrics_family(struct th_metrics *m, const char *name, const char *help,
                         th_metric_type type, const char *const *labels, size_t max_children,
                         struct th_metric_family **out)
{
    size_t nlabels = count_labels(labels);
    if (!valid_name(name, true) || !help || !help[0] || nlabels > TH_METRIC_MAX_LABELS ||
        max_children == 0 || (nlabels == 0 && max_children != 1))
        return TH_E_INVAL;
    for (size_t i = 0; i < nlabels; i++)
        if (!valid_name(labels[i], false) || strncmp(labels[i], "__", 2) == 0 ||
            (type == TH_METRIC_HISTOGRAM && strcmp(labels[i], "le") == 0))
            return TH_E_INVAL;
    th_err e = TH_E_OK;
    pthread_mutex_lock(&m->mu);
    for (size_t i = 0; i < m->nfamilies; i++) {
        struct th_metric_family *f = m->families[i];
        if (strcmp(f->name, name) == 0) {
            /* the same family from a second module; its cap is the first registration's */
            e = same_shape(f, type, labels, nlabels) ? TH_E_OK : TH_E_INVAL;
            *out = f;
            goto done;
        }
    }
    if (m->nfamilies == MAX_FAMILIES) {
        e = TH_E_OVERLOAD;
        goto done;
    }
    struct th_metric_family *f = calloc(1, sizeof *f);
    if (!f || !(f->help = strdup(help)) ||
        !(f->children = calloc(max_children, sizeof(struct child)))) {
        if (f)
            free(f->help);
        free(f);
        e = TH_E_NOMEM;
        goto done;
    }
    f->m = m;
    th_strlcpy(f->name, name, sizeof f->name);
    f->type = type;
    f->nlabels = nlabels;
    for (size_t i = 0; i < nlabels; i++)
        th_strlcpy(f->labels[i], labels[i], sizeof f->labels[i]);
    f->max_children = max_children;
    m->families[m->nfamilies++] = f;
    *out = f;
done:
    pthread_mutex_unlock(&m->mu);
    return e;
}

static th_err add_child(struct th_metric_family *f, const char *const *values,
                        const struct child *c)
{
    if (count_labels(values) != f->nlabels)
        return TH_E_INVAL;
    for (size_t i = 0; i < f->nlabels; i++)
        if (strlen(values[i]) >= TH_METRIC_VALUE_MAX)
            return TH_E_INVAL;
    th_err e = TH_E_OK;
    pthread_mutex_lock(&f->m->mu);
    for (size_t k = 0; k < f->nchildren; k++) {
        bool same = true;
        for (size_t i = 0; i < f->nlabels && same; i++)
            same = strcmp(f->children[k].values[i], values[i]) == 0;
        if (same) {
            e = TH_E_INVAL;
            goto done;
        }
    }
    if (f->nchildren == f->max_children) {
        e = TH_E_OVERLOAD;
        goto done;
    }
    struct child *to = &f->children[f->nchildren];
    *to = *c;
    for (size_t i = 0; i < f->nlabels; i++)
        th_strlcpy(to->values[i], values[i], sizeof to->values[i]);
    f->nchildren++; /* published under the lock: render reads it under the lock too */
done:
    pthread_mutex_unlock(&f->m->mu);
    return e;
}

th_err th_metrics_counter(struct th_metric_family *f, const char *const *values,
                          struct th_counter *c)
{
    if (f->type != TH_METRIC_COUNTER || !c)
        return TH_E_INVAL;
    return add_child(f, values, &(struct child){.kind = BIND_COUNTER, .u.counter = c});
}

th_err th_metrics_gauge(struct th_metric_family *f, const char *const *values, struct th_gauge *g)
{
    if (f->type != TH_METRIC_GAUGE || !g)
        return TH_E_INVAL;
    return add_child(f, values, &(struct child){.kind = BIND_GAUGE, .u.gauge = g});
}

th_err th_metrics_histogram(struct th_metric_family *f, const char *const *values,
                            struct th_histogram *h)
{
    if (f->type != TH_METRIC_HISTOGRAM || !h)
        return TH_E_INVAL;
    return add_child(f, values, &(struct child){.kind = BIND_HISTOGRAM, .u.histogram = h});
}

th_err th_metrics_fn(struct th_metric_family *f, const char *const *values, th_metric_fn fn,
                     void *ud)
{
    if (f->type == TH_METRIC_HISTOGRAM || !fn)
        return TH_E_INVAL;
    struct child c = {.kind = BIND_FN};
    c.u.fn.fn = fn;
    c.u.fn.ud = ud;
    return add_child(f, values, &c);
}

/* ---- rendering ---- */

/* HELP text: backslash and newline escaped (format 0.0.4). */
static void append_help(struct th_buf *out, const char *s)
{
    for (; *s; s++) {
        if (*s == '\\')
            th_buf_appends(out, "\\\\");
        else if (*s == '\n')
            th_buf_appends(out, "\\n");
        else
            th_buf_appendc(out, *s);
    }
}

/* A label value: backslash, double quote and newline escaped. */
static void append_label_value(struct th_buf *out, const char *s)
{
    for (; *s; s++) {
        if (*s == '\\')
            th_buf_appends(out, "\\\\");
        else if (*s == '"')
            th_buf_appends(out, "\\\"");
        else if (*s == '\n')
            th_buf_appends(out, "\\n");
        else
            th_buf_appendc(out, *s);
    }
}

/* name{labels[,le="…"]} — the braces left out when there is no label at all. */
static void append_series(struct th_buf *out, const struct th_metric_family *f,
                          const struct child *c, const char *suffix, const char *le)
{
    th_buf_appends(out, f->name);
    th_buf_appends(out, suffix);
    if (f->nlabels == 0 && !le)
        return;
    th_buf_appendc(out, '{');
    for (size_t i = 0; i < f->nlabels; i++) {
        th_buf_printf(out, "%s%s=\"", i ? "," : "", f->labels[i]);
        append_label_value(out, c->values[i]);
        th_buf_appendc(out, '"');
    }
    if (le)
        th_buf_printf(out, "%sle=\"%s\"", f->nlabels ? "," : "", le);
    th_buf_appendc(out, '}');
}

static void append_double(struct th_buf *out, double v)
{
    if (isnan(v))
        th_buf_appends(out, "NaN");
    else if (isinf(v))
        th_buf_appends(out, v > 0 ? "+Inf" : "-Inf");
    else {
        /* the shortest of 15 or 17 digits that reads back the same: 1796419061.81, not
         * 1796419061.8099999 */
        char s[32];
        snprintf(s, sizeof s, "%.15g", v);
        if (strtod(s, NULL) != v)
            snprintf(s, sizeof s, "%.17g", v);
        th_buf_appends(out, s);
    }
}

/* Digits after the point that show sum/scale exactly when scale is a power of ten. */
static int decimals(double scale)
{
    int d = 0;
    while (scale > 1.5 && d < 9) {
        scale /= 10;
        d++;
    }
    return d;
}

static void render_histogram(struct th_buf *out, const struct th_metric_family *f,
                             const struct child *c)
{
    const struct th_histogram *h = c->u.histogram;
    uint64_t cum = 0;
    char le[48];
    for (size_t b = 0; b <= h->n; b++) {
        cum += atomic_load_explicit(&h->bucket[b], memory_order_relaxed);
        if (b < h->n)
            snprintf(le, sizeof le, "%g", (double)h->le[b] / h->scale);
        else
            th_strlcpy(le, "+Inf", sizeof le);
        append_series(out, f, c, "_bucket", le);
        th_buf_printf(out, " %llu\n", (unsigned long long)cum);
    }
    /* the sum read after the buckets: a concurrent observation may show in one and not the
     * other, which Prometheus tolerates (client libraries have the same race) */
    uint64_t sum = atomic_load_explicit(&h->sum, memory_order_relaxed);
    append_series(out, f, c, "_sum", NULL);
    th_buf_printf(out, " %.*f\n", decimals(h->scale), (double)sum / h->scale);
    append_series(out, f, c, "_count", NULL);
    th_buf_printf(out, " %llu\n", (unsigned long long)cum);
}

static const char *type_name(th_metric_type t)
{
    return t == TH_METRIC_COUNTER ? "counter" : t == TH_METRIC_GAUGE ? "gauge" : "histogram";
}

void th_metrics_render(struct th_metrics *m, struct th_buf *out)
{
    pthread_mutex_lock(&m->mu);
    for (size_t i = 0; i < m->nfamilies; i++) {
        const struct th_metric_family *f = m->families[i];
        th_buf_printf(out, "# HELP %s ", f->name);
        append_help(out, f->help);
        th_buf_printf(out, "\n# TYPE %s %s\n", f->name, type_name(f->type));
        for (size_t k = 0; k < f->nchildren; k++) {
            const struct child *c = &f->children[k];
            if (c->kind == BIND_HISTOGRAM) {
                render_histogram(out, f, c);
                continue;
            }
            append_series(out, f, c, "", NULL);
            th_buf_appendc(out, ' ');
            if (c->kind == BIND_COUNTER)
                th_buf_printf(out, "%llu", (unsigned long long)th_counter_get(c->u.counter));
            else if (c->kind == BIND_GAUGE)
                th_buf_printf(out, "%lld", (long long)th_gauge_get(c->u.gauge));
            else
                append_double(out, c->u.fn.fn(c->u.fn.ud));
            th_buf_appendc(out, '\n');
        }
    }
    pthread_mutex_unlock(&m->mu);
}

/* ---- process metrics (Linux /proc; what the Prometheus client libraries export) ---- */

struct proc_stat {
    double utime, stime; /* clock ticks */
    double starttime;    /* clock ticks after boot */
    double vsize;        /* bytes */
    double rss;          /* pages */
};

/* /proc/self/stat: the fields after "(comm)", which may itself hold spaces and parentheses. */
static bool read_stat(struct proc_stat *st)
{
    char buf[1024];
    FILE *f = fopen("/proc/self/stat", "re");
    if (!f)
        return false;
    size_t n = fread(buf, 1, sizeof buf - 1, f);
    fclose(f);
    buf[n] = 0;
    char *p = strrchr(buf, ')');
    if (!p)
        return false;
    /* field 3 (state) is first after ") "; utime is field 14, rss field 24 */
    double field[25] = {0};
    p++;
    for (int k = 3; k <= 24; k++) {
        while (*p == ' ')
            p++;
        if (!*p)
            return false;
        char *end = p + 1; /* field 3, the state, is one letter */
        if (k > 3 && (field[k] = strtod(p, &end), end == p))
            return false;
        p = end;
    }
    st->utime = field[14];
    st->stime = field[15];
    st->starttime = field[22];
    st->vsize = field[23];
    st->rss = field[24];
    return true;
}

static double proc_cpu(void *ud)
{
    (void)ud;
    struct proc_stat st;
    return read_stat(&st) ? (st.utime + st.stime) / (double)sysconf(_SC_CLK_TCK) : NAN;
}

static double proc_rss(void *ud)
{
    (void)ud;
    struct proc_stat st;
    return read_stat(&st) ? st.rss * (double)sysconf(_SC_PAGESIZE) : NAN;
}

static double proc_vsize(void *ud)
{
    (void)ud;
    struct proc_stat st;
    return read_stat(&st) ? st.vsize : NAN;
}

static double proc_open_fds(void *ud)
{
    (void)ud;
    DIR *d = opendir("/proc/self/fd");
    if (!d)
        return NAN;
    double n = 0;
    const struct dirent *e;
    while ((e = readdir(d)))
        n += e->d_name[0] != '.';
    closedir(d);
    return n; /* counts the directory's own descriptor, as the client libraries do */
}

static double proc_max_fds(void *ud)
{
    (void)ud;
    struct rlimit rl;
    if (getrlimit(RLIMIT_NOFILE, &rl) != 0)
        return NAN;
    return rl.rlim_cur == RLIM_INFINITY ? INFINITY : (double)rl.rlim_cur;
}

/* Boot time (btime in /proc/stat) plus the start time in ticks after boot. */
static double proc_start_time(void *ud)
{
    (void)ud;
    struct proc_stat st;
    if (!read_stat(&st))
        return NAN;
    FILE *f = fopen("/proc/stat", "re");
    if (!f)
        return NAN;
    char line[256];
    double btime = NAN;
    while (fgets(line, sizeof line, f))
        if (strncmp(line, "btime ", 6) == 0) {
            btime = strtod(line + 6, NULL);
            break;
        }
    fclose(f);
    return btime + st.starttime / (double)sysconf(_SC_CLK_TCK);
}

static th_err add_fn(struct th_metrics *m, const char *name, const char *help, th_metric_type type,
                     th_metric_fn fn, void *ud, const char *const *labels,
                     const char *const *values)
{
    struct th_metric_family *f;
    th_err e = th_metrics_family(m, name, help, type, labels, 1, &f);
    return e != TH_E_OK ? e : th_metrics_fn(f, values, fn, ud);
}

th_err th_metrics_add_process(struct th_metrics *m)
{
    static const struct {
        const char *name, *help;
        th_metric_type type;
        th_metric_fn fn;
    } p[] = {
        {"process_cpu_seconds_total", "Total user and system CPU time spent in seconds.",
         TH_METRIC_COUNTER, proc_cpu},
        {"process_open_fds", "Number of open file descriptors.", TH_METRIC_GAUGE, proc_open_fds},
        {"process_max_fds", "Maximum number of open file descriptors.", TH_METRIC_GAUGE,
         proc_max_fds},
        {"process_virtual_memory_bytes", "Virtual memory size in bytes.", TH_METRIC_GAUGE,
         proc_vsize},
        {"process_resident_memory_bytes", "Resident memory size in bytes.", TH_METRIC_GAUGE,
         proc_rss},
        {"process_start_time_seconds", "Start time of the process since unix epoch in seconds.",
         TH_METRIC_GAUGE, proc_start_time},
    };
    th_err e = TH_E_OK;
    for (size_t i = 0; e == TH_E_OK && i < TH_ARRAY_LEN(p); i++)
        e = add_fn(m, p[i].name, p[i].help, p[i].type, p[i].fn, NULL, NULL, NULL);
    return e;
}

th_err th_metrics_refusals(struct th_metrics *m, struct th_metric_family **out)
{
    const char *const labels[] = {"reason", NULL};
    return th_metrics_family(m, "telehook_refusals_total",
                             "Requests refused before any message was sent, by reason (blocks "
                             "by the abuse controls: telehook_blocked_total).",
                             TH_METRIC_COUNTER, labels, TH_METRICS_REFUSAL_REASONS, out);
}

static double one(void *ud)
{
    (void)ud;
    return 1;
}

th_err th_metrics_add_build_info(struct th_metrics *m, const char *version)
{
    const char *const labels[] = {"version", NULL};
    const char *const values[] = {version, NULL};
    return add_fn(m, "telehook_build_info", "The running build: 1, its version in the label.",
                  TH_METRIC_GAUGE, one, NULL, labels, values);
}
