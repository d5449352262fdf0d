/*
 * bench/route_health_cost: what route health (route/router.h) costs, in one thread.
 *
 *   - ns per th_router_health_receipt (a final receipt: the lock, the bucket, the judgement),
 *     over 50 countries;
 *   - ns per th_router_send on a two-provider route whose providers refuse at once (so the
 *     send path is all there is: route lookup, attempts, the deferred answer), with no provider
 *     demoted (the one-branch case) and with the first provider demoted for the message's
 *     country (the lookup under the lock, the attempts run in another order).
 *
 * Medians over chunks. Prints a summary and a line "ROUTE_HEALTH_COST {json}". Timings on a
 * shared machine are noisy: compare the two send figures of one run, never a fixed figure.
 *
 *   build/route_health_cost [SENDS]
 */
#include <stdalign.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "common/arena.h"
#include "common/util.h"
#include "config/config.h"
#include "loop/loop.h"
#include "net/http.h"
#include "route/route.h"
#include "route/router.h"

#define CHUNK  2000
#define CHUNKS 25

extern char **environ;

static double now_ns(void)
{
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (double)t.tv_sec * 1e9 + (double)t.tv_nsec;
}

static th_err refuse(struct th_provider *p, const struct th_attempt *at, const struct th_send *m,
                     th_send_done_fn done, void *ud)
{
    (void)p, (void)at, (void)m, (void)done, (void)ud;
    return TH_E_AUTH;
}

static void no_free(struct th_provider *p)
{
    (void)p;
}

static const struct th_provider_ops ops = {.send = refuse, .free = no_free};
static struct th_provider p1 = {.ops = &ops, .name = "aws", .timeout_ms = 1000};
static struct th_provider p2 = {.ops = &ops, .name = "twilio", .timeout_ms = 1000};

static int answered;

static void on_done(void *ud, const struct th_route_result *res)
{
    (void)ud, (void)res;
    answered++;
}

static void stop(void *ud)
{
    th_loop_stop(ud);
}

static int cmp(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

/* ns per send, median over CHUNKS chunks of CHUNK sends (each chunk answered on a fresh loop). */
static double send_cost(struct th_router *r, struct th_arena *arena)
{
    double per[CHUNKS];
    struct th_send m = {.request_id = "r",
                        .to = "+12065550100",
                        .region = "US",
                        .channel = TH_CHANNEL_SMS,
                        .language = "en",
                        .body = "code 123456"};
    for (int c = 0; c < CHUNKS; c++) {
        struct th_loop *loop;
        if (th_loop_new(&loop) != TH_E_OK)
            exit(1);
        m.deadline_us = th_mono_us() + 10 * 1000000LL;
        double t0 = now_ns();
        for (int i = 0; i < CHUNK; i++)
            th_router_send(r, loop, arena, &m, on_done, NULL);
        per[c] = (now_ns() - t0) / CHUNK;
        struct th_timer t = {0};
        th_loop_timer_set(loop, &t, th_mono_us(), stop, loop);
        th_loop_run(loop);
        th_loop_free(loop);
        th_arena_cleanse_release(arena);
    }
    qsort(per, CHUNKS, sizeof per[0], cmp);
    return per[CHUNKS / 2];
}

int main(int argc, char **argv)
{
    (void)argc, (void)argv;
    static struct th_config cfg;
    char err[256];
    if (th_config_load(&cfg, NULL, environ, err, sizeof err) != TH_E_OK ||
        th_http_global_init() != TH_E_OK)
        return 1;
    cfg.threads = 1;
    struct th_routes *rs;
    struct th_route rt = {.channel = "*", .country = "*"};
    if (th_routes_new(&rs) != TH_E_OK ||
        th_route_parse("aws, twilio", NULL, NULL, &rt, err, sizeof err) != TH_E_OK ||
        th_routes_add(rs, &rt) != TH_E_OK)
        return 1;
    struct th_provider *ps[] = {&p1, &p2};
    struct th_router *r;
    if (th_router_new_with(&cfg, ps, 2, rs, &r, err, sizeof err) != TH_E_OK)
        return 1;
    static alignas(max_align_t) unsigned char chunk[1 << 16];
    struct th_arena arena;
    th_arena_init(&arena, chunk, sizeof chunk, 64u << 20);

    /* receipts: 50 countries, all delivered (nothing demoted yet) */
    static const char *const cc[] = {"AR", "AT", "AU", "BE", "BR", "CA", "CH", "CL", "CN", "CO",
                                     "CZ", "DE", "DK", "EG", "ES", "FI", "FR", "GB", "GR", "HK",
                                     "HU", "ID", "IE", "IL", "IN", "IT", "JP", "KE", "KR", "MX",
                                     "MY", "NG", "NL", "NO", "NZ", "PE", "PH", "PK", "PL", "PT",
                                     "RO", "SA", "SE", "SG", "TH", "TR", "UA", "VN", "ZA", "DE"};
    int n = 1000000;
    double t0 = now_ns();
    for (int i = 0; i < n; i++)
        th_router_health_receipt(r, "aws", cc[i % 50], true);
    double receipt_ns = (now_ns() - t0) / n;

    double healthy = send_cost(r, &arena);
    for (int i = 0; i < 40; i++)
        th_router_health_receipt(r, "aws", "US", false);
    if (th_router_health_demoted(r, "aws") != 1)
        return 1;
    double demoted = send_cost(r, &arena);
    printf("receipt: %.0f ns; send, nothing demoted: %.0f ns; send, first provider demoted for "
           "the country: %.0f ns (answered %d)\n",
           receipt_ns, healthy, demoted, answered);
    printf("ROUTE_HEALTH_COST {\"receipt_ns\": %.1f, \"send_healthy_ns\": %.1f, "
           "\"send_demoted_ns\": %.1f}\n",
           receipt_ns, healthy, demoted);
    th_router_free(r);
    th_config_release(&cfg);
    th_http_global_cleanup();
    return 0;
}
