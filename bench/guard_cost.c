/*
 * bench/guard_cost: what the in-memory guard costs, in memory and in time, in one thread.
 *
 * Fills a guard at guard.max_entries (default 100,000) the way production traffic does: every
 * request a new number, user, eventId and code, dedupe on and every limit and budget on (set high
 * enough not to block), and each first request's answer recorded as Okta got it (a SUCCESSFUL
 * answer of the usual shape, a fresh transactionId each). It runs REQUESTS requests (default
 * 400,000: enough to fill every table past its capacity, so eviction runs too) and prints:
 *
 *   - the process's RSS before the guard exists, after th_guard_new, and after the fill (the
 *     guard's share of a server's peak RSS: its tables touched, its records allocated);
 *   - the guard's own account of its bytes by table (th_guard_memory) and per remembered key;
 *   - ns per decision (th_guard_decide + th_guard_dedupe_finish), in chunks, median and best;
 *   - then, full, the dedupe index's rebase (every ~24.8 days in a server: guard.c dd_rebase),
 *     timed through th_guard_set_clock, which rebases to the clock it is given: once to now
 *     (every live slot kept, shifted), once to 2^31 ms later (every slot expired, its record
 *     freed).
 *
 * Prints a summary and a line "GUARD_COST {json}". Timings on a shared machine are noisy:
 * compare two builds in the same run, never against a fixed figure.
 *
 *   build/guard_cost [REQUESTS [MAX_ENTRIES [ID]]]
 *
 * ID is the transactionId's form: sid (Twilio's "SM" and 32 hex digits, the default), hex (32
 * digits: nginx's $request_id, bench/run's fake provider), uuid (an AWS MessageId), or mix (the
 * three in turn).
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "config/config.h"
#include "guard/guard.h"
#include "okta/okta.h"
#include "common/buf.h"
#include "phone/phone.h"

#define CHUNK 10000

static double now_ns(void)
{
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (double)t.tv_sec * 1e9 + (double)t.tv_nsec;
}

/* VmRSS of this process, in KiB. */
static long rss_kib(void)
{
    FILE *f = fopen("/proc/self/status", "r");
    char line[256];
    long kib = -1;
    while (f && fgets(line, sizeof line, f))
        if (strncmp(line, "VmRSS:", 6) == 0)
            kib = strtol(line + 6, NULL, 10);
    if (f)
        fclose(f);
    return kib;
}

static int64_t clock_of(void *ud)
{
    return *(const int64_t *)ud;
}

static int cmp_double(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

/* Countries of the international mix: (region, calling code, national digits). */
static const struct {
    const char *region;
    int code;
    int digits;
} mix[] = {{"US", 1, 10},  {"US", 1, 10},  {"GB", 44, 10}, {"DE", 49, 11}, {"FR", 33, 9},
           {"IN", 91, 10}, {"BR", 55, 11}, {"JP", 81, 10}, {"AU", 61, 9},  {"MX", 52, 10},
           {"ES", 34, 9},  {"IT", 39, 10}, {"NL", 31, 9},  {"SE", 46, 9},  {"PL", 48, 9},
           {"ZA", 27, 9},  {"SG", 65, 8},  {"CA", 1, 10}};

int main(int argc, char **argv)
{
    long requests = argc > 1 ? atol(argv[1]) : 400000;
    const char *form = argc > 3 ? argv[3] : "sid";
    char max_entries[64];
    snprintf(max_entries, sizeof max_entries, "TELEHOOK_GUARD_MAX_ENTRIES=%s",
             argc > 2 ? argv[2] : "100000");
    char *env[] = {(char *)"TELEHOOK_GUARD_SECRET=guard-cost-bench",
                   max_entries,
                   (char *)"TELEHOOK_GUARD_DEDUPE=true",
                   (char *)"TELEHOOK_GUARD_LIMIT_PHONE=5/15m",
                   (char *)"TELEHOOK_GUARD_LIMIT_PHONE_DAILY=20/1d",
                   (char *)"TELEHOOK_GUARD_LIMIT_USER=20/1h",
                   (char *)"TELEHOOK_GUARD_LIMIT_COUNTRY=100000000/1h",
                   (char *)"TELEHOOK_GUARD_BUDGET_CALLING_CODE=100000000/1d",
                   (char *)"TELEHOOK_GUARD_LIMIT_GLOBAL=100000000/1m",
                   NULL};
    struct th_config cfg;
    char err[512];
    if (th_config_load(&cfg, NULL, env, err, sizeof err) != TH_E_OK) {
        fprintf(stderr, "config: %s\n", err);
        return 1;
    }
    th_phone_init(); /* libphonenumber's metadata: the server's, not the guard's */
    long rss0 = rss_kib();
    struct th_guard *g = NULL;
    if (th_guard_new(&cfg, &g, err, sizeof err) != TH_E_OK) {
        fprintf(stderr, "guard: %s\n", err);
        return 1;
    }
    long rss1 = rss_kib();

    size_t nchunks = (size_t)(requests + CHUNK - 1) / CHUNK;
    double *ns = calloc(nchunks, sizeof *ns);
    long blocked = 0, firsts = 0;
    struct th_buf body;
    th_buf_init(&body, 4096);
    for (long i = 0; i < requests; i += CHUNK) {
        double t0 = now_ns();
        for (long j = i; j < i + CHUNK && j < requests; j++) {
            struct th_phone ph = {0};
            size_t m = (size_t)j % (sizeof mix / sizeof mix[0]);
            snprintf(ph.e164, sizeof ph.e164, "+%d%0*ld", mix[m].code, mix[m].digits, 7000000L + j);
            memcpy(ph.region, mix[m].region, 3);
            ph.country_code = mix[m].code;
            ph.type = TH_PHONE_MOBILE;
            char event[40], otp[16], user[32], tx[40], meta[40];
            snprintf(event, sizeof event, "aB3dE5gH7jK9mN1pQ3sT%08lx", j);
            snprintf(otp, sizeof otp, "%06ld", (j * 7919) % 1000000);
            snprintf(user, sizeof user, "00u%015lx", j);
            struct th_guard_ask ask = {.event_id = event,
                                       .otp = otp,
                                       .ph = &ph,
                                       .ch = j % 7 == 0 ? TH_CHANNEL_VOICE : TH_CHANNEL_SMS,
                                       .user_id = user};
            struct th_guard_verdict v;
            th_guard_decide(g, NULL, &ask, &v, NULL, NULL);
            if (v.dedupe == TH_DEDUPE_FIRST) {
                firsts++;
                th_buf_reset(&body);
                unsigned long x = (unsigned long)j * 2654435761UL, y = x * 40503UL;
                int f = strcmp(form, "mix") == 0    ? (int)(j % 3)
                        : strcmp(form, "hex") == 0  ? 1
                        : strcmp(form, "uuid") == 0 ? 2
                                                    : 0;
                if (f == 0)
                    snprintf(tx, sizeof tx, "SM%032lx", x);
                else if (f == 1)
                    snprintf(tx, sizeof tx, "%016lx%016lx", y, x);
                else
                    snprintf(tx, sizeof tx, "%08lx-%04lx-%04lx-%04lx-%012lx", x & 0xffffffff,
                             y & 0xffff, (x >> 16) & 0xffff, (y >> 20) & 0xffff,
                             (x ^ y) & 0xffffffffffff);
                snprintf(meta, sizeof meta, "attempts=1;ms=%ld", 80 + j % 400);
                th_okta_encode_result(&body, "SUCCESSFUL", "twilio", tx, meta);
                th_guard_dedupe_finish(g, v.ticket, 200, body.data, body.len);
            } else if (v.ticket) {
                th_guard_dedupe_release(g, v.ticket);
            }
            free(v.answer.body);
            blocked += v.block != TH_BLOCK_NONE;
        }
        ns[i / CHUNK] = (now_ns() - t0) / (double)(requests - i < CHUNK ? requests - i : CHUNK);
    }
    long rss2 = rss_kib();
    double best = ns[0];
    for (size_t i = 0; i < nchunks; i++)
        best = ns[i] < best ? ns[i] : best;
    qsort(ns, nchunks, sizeof *ns, cmp_double);
    double median = ns[nchunks / 2];
    size_t recs, waits;
    th_guard_dedupe_sizes(g, &recs, &waits);
    size_t people = th_guard_entries(g);

    printf("guard_cost: %ld requests (%ld first, %ld blocked), max_entries %d, ids %s\n", requests,
           firsts, blocked, cfg.guard_max_entries, form);
    printf("  RSS: %ld KiB before, +%ld KiB after th_guard_new, +%ld KiB full (guard: %.1f MiB)\n",
           rss0, rss1 - rss0, rss2 - rss1, (double)(rss2 - rss0) / 1024);
    printf("  live: %zu per-person entries, %zu dedupe records\n", people, recs);
    struct th_guard_memory gm;
    th_guard_memory(g, &gm);
    size_t total = gm.people_bytes + gm.dedupe_bytes + gm.record_bytes;
    printf("  th_guard_memory: people %zu slots %zu B (%.1f B per max_entries key), dedupe %zu "
           "slots %zu B (%.1f B per key), %zu records %zu B (%.1f B each); total %.1f MiB\n",
           gm.people_slots, gm.people_bytes, (double)gm.people_bytes / (double)gm.max_entries,
           gm.dedupe_slots, gm.dedupe_bytes, (double)gm.dedupe_bytes / (double)gm.max_entries,
           gm.records, gm.record_bytes,
           gm.records ? (double)gm.record_bytes / (double)gm.records : 0.0,
           (double)total / 1048576);
    printf("  ns per decision: median %.0f, best chunk %.0f\n", median, best);
    struct timespec wall;
    clock_gettime(CLOCK_REALTIME, &wall);
    int64_t clock_us = (int64_t)wall.tv_sec * 1000000 + wall.tv_nsec / 1000;
    double r0 = now_ns();
    th_guard_set_clock(g, clock_of, &clock_us); /* a rebase to now: every slot kept */
    double rebase_keep = now_ns() - r0;
    clock_us += ((INT64_C(1) << 31) + 60000) * 1000;
    r0 = now_ns();
    th_guard_set_clock(g, clock_of, &clock_us); /* every window over: every record freed */
    double rebase_free = now_ns() - r0;
    size_t recs_after;
    th_guard_dedupe_sizes(g, &recs_after, &waits);
    printf("  rebase of %zu dedupe slots: %.2f ms keeping %zu records, %.2f ms freeing them (%zu "
           "left)\n",
           gm.dedupe_slots, rebase_keep / 1e6, recs, rebase_free / 1e6, recs_after);
    printf("GUARD_COST {\"requests\":%ld,\"max_entries\":%d,\"rss_guard_kib\":%ld,"
           "\"people\":%zu,\"records\":%zu,\"guard_bytes\":%zu,\"ns_median\":%.0f,\"ns_best\":%.0f,"
           "\"rebase_keep_ms\":%.2f,\"rebase_free_ms\":%.2f}\n",
           requests, cfg.guard_max_entries, rss2 - rss0, people, recs, total, median, best,
           rebase_keep / 1e6, rebase_free / 1e6);
    th_guard_free(g);
    th_config_release(&cfg);
    th_buf_release(&body);
    free(ns);
    return blocked ? 2 : 0;
}
