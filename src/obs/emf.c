#include "obs/emf.h"

#include <string.h>

#include "common/util.h"

#define DIMENSION "Service"
#define SERVICE   "telehook"

static uint64_t delta(uint64_t before, uint64_t after)
{
    /* a counter below its last value was reset (a restart): it counted from zero since */
    return after >= before ? after - before : after;
}

static bool reset(const struct th_emf_value *v)
{
    return v->after < v->before || v->n_after < v->n_before;
}

/* A mean over no sample is no data point, not a zero that would pull averages down. */
static bool present(const struct th_emf_value *v)
{
    if (v->kind != TH_EMF_MEAN_MS)
        return true;
    return (reset(v) ? v->n_after : v->n_after - v->n_before) > 0;
}

static const char *unit(th_emf_kind k)
{
    return k == TH_EMF_MEAN_MS ? "Milliseconds" : "Count";
}

/* The value as JSON: an integer, or for a mean milliseconds with three decimals. */
static th_err append_value(struct th_buf *b, const struct th_emf_value *v)
{
    if (v->kind == TH_EMF_GAUGE)
        return th_buf_printf(b, "%llu", (unsigned long long)v->after);
    if (v->kind == TH_EMF_COUNT)
        return th_buf_printf(b, "%llu", (unsigned long long)delta(v->before, v->after));
    bool r = reset(v);
    uint64_t sum = r ? v->after : v->after - v->before;
    uint64_t cnt = r ? v->n_after : v->n_after - v->n_before;
    uint64_t us = (sum + cnt / 2) / cnt; /* present() made cnt > 0 */
    return th_buf_printf(b, "%llu.%03llu", (unsigned long long)(us / 1000),
                         (unsigned long long)(us % 1000));
}

static th_err directive(struct th_buf *b, const char *ns, const struct th_emf_value *v, size_t n,
                        size_t *i)
{
    th_buf_appends(b, "{\"Namespace\":");
    th_buf_append_json(b, ns, (size_t)-1);
    th_buf_appends(b, ",\"Dimensions\":[[\"" DIMENSION "\"]],\"Metrics\":[");
    size_t in = 0;
    for (; *i < n && in < TH_EMF_MAX_PER_DIRECTIVE && !th_buf_err(b); (*i)++) {
        if (!present(&v[*i]))
            continue;
        th_buf_appends(b, in++ ? ",{\"Name\":" : "{\"Name\":");
        th_buf_append_json(b, v[*i].name, (size_t)-1);
        th_buf_appends(b, ",\"Unit\":\"");
        th_buf_appends(b, unit(v[*i].kind));
        th_buf_appends(b, "\"}");
    }
    return th_buf_appends(b, "]}");
}

th_err th_emf_build(struct th_buf *out, const char *ns, int64_t ts_ms, const struct th_emf_value *v,
                    size_t n)
{
    size_t nslen = ns ? strlen(ns) : 0;
    if (nslen == 0 || nslen > TH_EMF_NAMESPACE_MAX)
        return TH_E_INVAL;
    char ts[25];
    th_format_iso8601(ts_ms, ts);
    th_buf_printf(out, "{\"_aws\":{\"Timestamp\":%lld,\"CloudWatchMetrics\":[", (long long)ts_ms);
    size_t i = 0;
    for (bool first = true; !th_buf_err(out) && (first || i < n); first = false) {
        /* skip leading absent ones so a directive never starts past the last present value */
        while (!first && i < n && !present(&v[i]))
            i++;
        if (!first && i == n)
            break;
        if (!first)
            th_buf_appendc(out, ',');
        directive(out, ns, v, n, &i);
    }
    th_buf_appends(out, "]},\"ts\":\"");
    th_buf_appends(out, ts);
    th_buf_appends(out,
                   "\",\"level\":\"info\",\"event\":\"metrics\",\"" DIMENSION "\":\"" SERVICE "\"");
    for (size_t j = 0; j < n && !th_buf_err(out); j++) {
        if (!present(&v[j]))
            continue;
        th_buf_appendc(out, ',');
        th_buf_append_json(out, v[j].name, (size_t)-1);
        th_buf_appendc(out, ':');
        append_value(out, &v[j]);
    }
    return th_buf_appends(out, "}\n");
}
