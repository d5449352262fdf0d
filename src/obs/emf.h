/*
 * CloudWatch Embedded Metric Format (EMF): one JSON log line that CloudWatch Logs turns into
 * metrics with no agent. The builder is pure: counter values before and after an interval in,
 * one line out; serve snapshots the modules' counters and writes the line (th_log_raw).
 *
 *   {"_aws":{"Timestamp":<ms>,"CloudWatchMetrics":[{"Namespace":"Telehook",
 *     "Dimensions":[["Service"]],"Metrics":[{"Name":"Requests.SUCCESSFUL","Unit":"Count"},...]}]},
 *    "ts":"…","level":"info","event":"metrics","Service":"telehook","Requests.SUCCESSFUL":3,...}
 *
 * Names are fixed by the caller (an outcome, a block reason): never a number, a code or an id, so
 * the metric set stays bounded. Counters are reported as deltas over the interval.
 */
#ifndef TH_OBS_EMF_H
#define TH_OBS_EMF_H

#include <stddef.h>
#include <stdint.h>

#include "common/buf.h"
#include "common/err.h"

/* EMF's limit per directive: more metrics are split over several directives of one line. */
#define TH_EMF_MAX_PER_DIRECTIVE 100
#define TH_EMF_NAMESPACE_MAX     255

typedef enum {
    TH_EMF_COUNT,   /* counter: after - before (after alone if the counter went back: a reset) */
    TH_EMF_GAUGE,   /* level now: after */
    TH_EMF_MEAN_MS, /* sum of microseconds over n: the interval's mean in ms; left out if n = 0 */
} th_emf_kind;

struct th_emf_value {
    const char *name; /* borrowed; a bounded name, JSON-escaped on output */
    th_emf_kind kind;
    uint64_t before, after;     /* COUNT, MEAN_MS (the sum); GAUGE uses after */
    uint64_t n_before, n_after; /* MEAN_MS: how many made the sum */
};

/*
 * Appends one EMF line (ending in '\n') for v[0..n) at ts_ms (Unix ms) in namespace ns (1 to
 * TH_EMF_NAMESPACE_MAX bytes) with the dimension Service = "telehook". TH_E_INVAL for a bad
 * namespace; TH_E_TOOBIG when out's max is reached (out is then failed and empty: reset it).
 */
th_err th_emf_build(struct th_buf *out, const char *ns, int64_t ts_ms, const struct th_emf_value *v,
                    size_t n);

#endif
