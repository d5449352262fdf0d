/*
 * Test-only (built with -Dtests=enabled, never installed): drives route/feedback against the
 * e2e fakes until part A's verifications are wired to it in serve. Sets up the providers from a
 * telehook config as serve does, reports each PROVIDER:ID argument as verified, drains the queue
 * on a loop until every one has ended (sent, failed or skipped) or 20 s pass, and prints the
 * counts as JSON: {"aws": {"sent": 1, ...}, "twilio": {...}}. Exit 0 when every one ended.
 *
 *   feedback_driver CONFIG PROVIDER:ID...
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "common/util.h"
#include "config/config.h"
#include "loop/loop.h"
#include "net/http.h"
#include "route/feedback.h"
#include "route/router.h"

extern char **environ;

struct run {
    struct th_loop *loop;
    struct th_feedback *fb;
    struct th_timer tick;
    int64_t until_us;
    uint64_t expected;
};

static uint64_t ended(struct th_feedback *fb)
{
    uint64_t n = 0;
    const char *const names[] = {"aws", "twilio", "other"};
    for (int i = 0; i < 3; i++) {
        struct th_feedback_counts c;
        th_feedback_counts(fb, names[i], &c);
        n += c.sent + c.failed + c.skipped + c.dropped;
    }
    return n;
}

static void tick(void *ud)
{
    struct run *r = ud;
    if (ended(r->fb) >= r->expected || th_mono_us() > r->until_us) {
        th_loop_stop(r->loop);
        return;
    }
    th_loop_timer_set(r->loop, &r->tick, th_mono_us() + 20 * 1000, tick, r);
}

int main(int argc, char **argv)
{
    if (argc < 3) {
        fprintf(stderr, "usage: feedback_driver CONFIG PROVIDER:ID...\n");
        return 2;
    }
    static struct th_config cfg;
    char err[512];
    if (th_config_load(&cfg, argv[1], environ, err, sizeof err) != TH_E_OK) {
        fprintf(stderr, "config: %s\n", err);
        return 2;
    }
    if (th_http_global_init() != TH_E_OK)
        return 2;
    struct th_router *router;
    if (th_router_new(&cfg, NULL, NULL, &router, err, sizeof err) != TH_E_OK) {
        fprintf(stderr, "router: %s\n", err);
        return 2;
    }
    for (int i = 0; i < 500 && !th_router_ready(router); i++) /* AWS credentials: a thread */
        usleep(10 * 1000);
    struct th_feedback *fb;
    if (th_feedback_new(&cfg, router, &fb) != TH_E_OK || !fb) {
        fprintf(stderr, "feedback: not enabled in the config\n");
        return 2;
    }
    struct run r = {.fb = fb, .expected = (uint64_t)(argc - 2)};
    for (int i = 2; i < argc; i++) {
        char prov[32];
        const char *colon = strchr(argv[i], ':');
        size_t pl = colon ? (size_t)(colon - argv[i]) : 0;
        if (!colon || pl >= sizeof prov)
            return 2;
        memcpy(prov, argv[i], pl);
        prov[pl] = '\0';
        th_feedback_verified(fb, prov, colon + 1);
    }
    if (th_loop_new(&r.loop) != TH_E_OK || th_feedback_start(fb, r.loop) != TH_E_OK)
        return 2;
    r.until_us = th_mono_us() + 20 * 1000000LL;
    th_loop_timer_set(r.loop, &r.tick, th_mono_us(), tick, &r);
    th_loop_run(r.loop);
    th_loop_free(r.loop);
    bool all = ended(fb) >= r.expected;
    printf("{");
    const char *const names[] = {"aws", "twilio", "other"};
    for (int i = 0; i < 3; i++) {
        struct th_feedback_counts c;
        th_feedback_counts(fb, names[i], &c);
        printf("%s\"%s\": {\"sent\": %llu, \"failed\": %llu, \"dropped\": %llu, \"skipped\": "
               "%llu, \"retried\": %llu}",
               i ? ", " : "", names[i], (unsigned long long)c.sent, (unsigned long long)c.failed,
               (unsigned long long)c.dropped, (unsigned long long)c.skipped,
               (unsigned long long)c.retried);
    }
    printf("}\n");
    th_feedback_free(fb);
    th_router_free(router);
    th_config_release(&cfg);
    th_http_global_cleanup();
    return all ? 0 : 1;
}
