#include "common/rate.h"

#include <stdlib.h>
#include <string.h>

bool th_rate_parse(const char *spec, long *count, long *period_s)
{
    *count = 0;
    *period_s = 0;
    if (!spec || !*spec || strcmp(spec, "0") == 0 || strcmp(spec, "off") == 0)
        return true;
    char *end;
    long n = strtol(spec, &end, 10);
    if (n <= 0 || n > 100000000 || *end != '/')
        return false;
    long p = strtol(end + 1, &end, 10);
    long mult = *end == 's' ? 1 : *end == 'm' ? 60 : *end == 'h' ? 3600 : *end == 'd' ? 86400 : 0;
    if (p <= 0 || !mult || end[1] || p > 366 * 86400 / mult)
        return false;
    *count = n;
    *period_s = p * mult;
    return true;
}

struct th_rate th_rate_make(long count, int64_t period_us)
{
    struct th_rate r = {0};
    if (count <= 0 || period_us <= 0)
        return r;
    r.on = true;
    r.period_us = period_us;
    r.interval_us = period_us / count;
    if (r.interval_us < 1)
        r.interval_us = 1;
    return r;
}

struct th_rate th_rate_from_spec(const char *spec)
{
    long n, p;
    if (!th_rate_parse(spec, &n, &p))
        return (struct th_rate){0};
    return th_rate_make(n, (int64_t)p * 1000000);
}
