/*
 * Rates: "N/PERIOD" as the config writes them, and the GCRA (generic cell rate algorithm) that
 * enforces them with one timestamp of state per key — the guard's limits and the HTTP front's
 * per-source rate share it.
 */
#ifndef TH_COMMON_RATE_H
#define TH_COMMON_RATE_H

#include <stdbool.h>
#include <stdint.h>

/* Parses "N/PERIOD" (PERIOD: 30s, 15m, 1h, 1d), "0", "off" or "" (off: count 0). false: bad. */
bool th_rate_parse(const char *spec, long *count, long *period_s);

/* A rate ready for the GCRA; on == false lets everything pass. */
struct th_rate {
    bool on;
    int64_t period_us, interval_us; /* interval: period / count (the emission interval) */
};

/* From a spec (th_rate_parse; a bad or "off" spec gives an off rate), or from count per period. */
struct th_rate th_rate_from_spec(const char *spec);
struct th_rate th_rate_make(long count, int64_t period_us);

/*
 * GCRA: may one more pass at now, given the key's theoretical arrival time tat (0 or anything
 * <= now: nothing seen)? true and *next set to the tat to store when it may.
 */
static inline bool th_rate_allow(const struct th_rate *r, int64_t tat, int64_t now, int64_t *next)
{
    if (tat < now)
        tat = now;
    if (tat - now > r->period_us - r->interval_us)
        return false;
    *next = tat + r->interval_us;
    return true;
}

#endif
