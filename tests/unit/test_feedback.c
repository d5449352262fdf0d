/*
 * Unit tests: route/feedback's queue, with scripted providers on a real th_loop (no network).
 * libuv style: every feedback call and answer is counted and the totals asserted exactly.
 *
 * Contracts: th_feedback_verified never blocks and holds at most [feedback] max_queue (the rest
 * dropped, counted); the loop drains what was queued before it started; at most
 * TH_FEEDBACK_IN_FLIGHT calls run at once; a failure that may pass is tried three times in all,
 * a permanent one once; a message the provider has no feedback for, or a provider turned off,
 * is skipped (counted); off unless [feedback] enabled; any thread may report.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <pthread.h>
#include <stdio.h>
#include <string.h>

#include "common/util.h"
#include "config/config.h"
#include "loop/loop.h"
#include "net/http.h"
#include "route/feedback.h"
#include "route/router.h"

enum script { ACCEPT, RETRY, PERMANENT, NEVER, INVAL };

#define MAX_PENDING 64

struct fake;
struct pending {
    struct fake *f;
    th_send_done_fn done;
    void *ud;
    struct th_timer timer;
    bool busy;
};

struct fake {
    struct th_provider base;
    enum script script;
    int calls;   /* feedback() calls, whatever they returned */
    int answers; /* done calls made */
    int in_flight, max_in_flight;
    char last_id[96];
    struct th_loop *loop;
    struct pending pending[MAX_PENDING];
};

static void on_timer(void *ud)
{
    struct pending *p = ud;
    struct th_send_result res = {.err = TH_E_OK};
    if (p->f->script == RETRY) {
        res.err = TH_E_PROVIDER;
        res.retryable = true;
        snprintf(res.error, sizeof res.error, "ThrottlingException (HTTP 400)");
    } else if (p->f->script == PERMANENT) {
        res.err = TH_E_PROVIDER;
        snprintf(res.error, sizeof res.error, "ValidationException (HTTP 400)");
    }
    p->busy = false;
    p->f->answers++;
    p->f->in_flight--;
    p->done(p->ud, &res);
}

static th_err fake_feedback(struct th_provider *prov, const struct th_attempt *at, const char *id,
                            th_send_done_fn done, void *ud)
{
    struct fake *f = (struct fake *)prov;
    f->calls++;
    snprintf(f->last_id, sizeof f->last_id, "%s", id);
    if (f->script == INVAL)
        return TH_E_INVAL;
    struct pending *p = NULL;
    for (int i = 0; i < MAX_PENDING && !p; i++)
        if (!f->pending[i].busy)
            p = &f->pending[i];
    assert_non_null(p);
    *p = (struct pending){.f = f, .done = done, .ud = ud, .busy = true};
    f->loop = at->loop;
    if (++f->in_flight > f->max_in_flight)
        f->max_in_flight = f->in_flight;
    if (f->script != NEVER)
        th_loop_timer_set(at->loop, &p->timer, th_mono_us() + 1000, on_timer, p);
    return TH_E_OK;
}

static th_err fake_send(struct th_provider *prov, const struct th_attempt *at,
                        const struct th_send *msg, th_send_done_fn done, void *ud)
{
    (void)prov, (void)at, (void)msg, (void)done, (void)ud;
    return TH_E_PROVIDER;
}

static void fake_free(struct th_provider *p)
{
    (void)p;
}

static const struct th_provider_ops fake_ops = {
    .send = fake_send, .feedback = fake_feedback, .free = fake_free};
static const struct th_provider_ops no_feedback_ops = {.send = fake_send, .free = fake_free};

static struct fake fake_aws, fake_twilio, fake_webhook;
static struct th_config cfg;

static void fake_init(struct fake *f, const char *name, enum script s)
{
    memset(f, 0, sizeof *f);
    f->base.ops = &fake_ops;
    f->base.name = name;
    f->base.timeout_ms = 1000;
    f->script = s;
}

static int setup(void **state)
{
    (void)state;
    char err[512];
    char *env[] = {NULL};
    assert_int_equal(th_config_load(&cfg, NULL, env, err, sizeof err), TH_E_OK);
    cfg.feedback_enabled = true;
    cfg.feedback_max_queue = 100;
    fake_init(&fake_aws, "aws", ACCEPT);
    fake_init(&fake_twilio, "twilio", ACCEPT);
    fake_init(&fake_webhook, "webhook", ACCEPT);
    fake_webhook.base.ops = &no_feedback_ops;
    return 0;
}

static int teardown(void **state)
{
    (void)state;
    th_config_release(&cfg);
    return 0;
}

static struct th_router *router(void)
{
    struct th_provider *ps[] = {&fake_aws.base, &fake_twilio.base, &fake_webhook.base};
    struct th_router *r = NULL;
    char err[256];
    assert_int_equal(th_router_new_with(&cfg, ps, 3, NULL, &r, err, sizeof err), TH_E_OK);
    return r;
}

static void stop_loop(void *ud)
{
    th_loop_stop(ud);
}

/* Starts the queue on a fresh loop, runs it for ms, stops it (the loop runs once, as in serve). */
static void run(struct th_feedback *fb, int ms)
{
    struct th_loop *loop;
    assert_int_equal(th_loop_new(&loop), TH_E_OK);
    assert_int_equal(th_feedback_start(fb, loop), TH_E_OK);
    struct th_timer t = {0};
    th_loop_timer_set(loop, &t, th_mono_us() + (int64_t)ms * 1000, stop_loop, loop);
    th_loop_run(loop);
    th_loop_free(loop);
}

static struct th_feedback_counts counts(struct th_feedback *fb, const char *provider)
{
    struct th_feedback_counts c;
    th_feedback_counts(fb, provider, &c);
    return c;
}

/* ---- tests ---- */

static void test_off_by_default(void **state)
{
    (void)state;
    cfg.feedback_enabled = false;
    struct th_router *r = router();
    struct th_feedback *fb = (struct th_feedback *)1;
    assert_int_equal(th_feedback_new(&cfg, r, &fb), TH_E_OK);
    assert_null(fb);
    th_feedback_verified(fb, "aws", "m-1"); /* a no-op */
    assert_int_equal(th_feedback_start(fb, NULL), TH_E_OK);
    th_feedback_free(fb);
    assert_int_equal(fake_aws.calls, 0);
    th_router_free(r);
}

/* Queued before the loop runs, sent once it does: one call per message, each id as given. */
static void test_sends_each_once(void **state)
{
    (void)state;
    struct th_router *r = router();
    struct th_feedback *fb;
    assert_int_equal(th_feedback_new(&cfg, r, &fb), TH_E_OK);
    th_feedback_verified(fb, "aws", "aws-id-1");
    th_feedback_verified(fb, "aws", "aws-id-2");
    th_feedback_verified(fb, "twilio", "SMaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa");
    assert_int_equal(fake_aws.calls, 0); /* never on the caller's thread */
    run(fb, 100);
    assert_int_equal(fake_aws.calls, 2);
    assert_int_equal(fake_aws.answers, 2);
    assert_string_equal(fake_aws.last_id, "aws-id-2");
    assert_int_equal(fake_twilio.calls, 1);
    assert_int_equal(counts(fb, "aws").sent, 2);
    assert_int_equal(counts(fb, "twilio").sent, 1);
    assert_int_equal(counts(fb, "aws").failed + counts(fb, "aws").dropped, 0);
    th_feedback_free(fb);
    th_router_free(r);
}

/* max_queue bounds what waits: the rest is dropped and counted, never blocks. */
static void test_queue_bound_drops(void **state)
{
    (void)state;
    cfg.feedback_max_queue = 4;
    struct th_router *r = router();
    struct th_feedback *fb;
    assert_int_equal(th_feedback_new(&cfg, r, &fb), TH_E_OK);
    for (int i = 0; i < 7; i++)
        th_feedback_verified(fb, "aws", "id");
    assert_int_equal(counts(fb, "aws").dropped, 3);
    run(fb, 100);
    assert_int_equal(fake_aws.calls, 4);
    assert_int_equal(counts(fb, "aws").sent, 4);
    assert_int_equal(counts(fb, "aws").dropped, 3);
    th_feedback_free(fb);
    th_router_free(r);
}

/* At most TH_FEEDBACK_IN_FLIGHT calls at once; the rest wait their turn in the queue. */
static void test_bounded_concurrency(void **state)
{
    (void)state;
    fake_aws.script = NEVER;
    struct th_router *r = router();
    struct th_feedback *fb;
    assert_int_equal(th_feedback_new(&cfg, r, &fb), TH_E_OK);
    for (int i = 0; i < 20; i++)
        th_feedback_verified(fb, "aws", "id");
    run(fb, 100);
    assert_int_equal(fake_aws.calls, TH_FEEDBACK_IN_FLIGHT);
    assert_int_equal(fake_aws.max_in_flight, TH_FEEDBACK_IN_FLIGHT);
    assert_int_equal(counts(fb, "aws").sent, 0);
    th_feedback_free(fb);
    th_router_free(r);
    /* and with answers, all 20 go through that many slots */
    teardown(NULL);
    setup(NULL);
    r = router();
    assert_int_equal(th_feedback_new(&cfg, r, &fb), TH_E_OK);
    for (int i = 0; i < 20; i++)
        th_feedback_verified(fb, "aws", "id");
    run(fb, 200);
    assert_int_equal(fake_aws.calls, 20);
    assert_int_equal(counts(fb, "aws").sent, 20);
    assert_true(fake_aws.max_in_flight <= TH_FEEDBACK_IN_FLIGHT);
    th_feedback_free(fb);
    th_router_free(r);
}

/* A failure that may pass: three tries in all (after 0.5 s, then 2 s), then failed. */
static void test_retry_then_fail(void **state)
{
    (void)state;
    fake_aws.script = RETRY;
    struct th_router *r = router();
    struct th_feedback *fb;
    assert_int_equal(th_feedback_new(&cfg, r, &fb), TH_E_OK);
    th_feedback_verified(fb, "aws", "id");
    run(fb, 2900); /* 0.5 s + 2 s of backoff */
    assert_int_equal(fake_aws.calls, 3);
    assert_int_equal(counts(fb, "aws").retried, 2);
    assert_int_equal(counts(fb, "aws").failed, 1);
    assert_int_equal(counts(fb, "aws").sent, 0);
    th_feedback_free(fb);
    th_router_free(r);
}

/* A permanent failure: one try. */
static void test_permanent_once(void **state)
{
    (void)state;
    fake_aws.script = PERMANENT;
    struct th_router *r = router();
    struct th_feedback *fb;
    assert_int_equal(th_feedback_new(&cfg, r, &fb), TH_E_OK);
    th_feedback_verified(fb, "aws", "id");
    run(fb, 700);
    assert_int_equal(fake_aws.calls, 1);
    assert_int_equal(counts(fb, "aws").failed, 1);
    assert_int_equal(counts(fb, "aws").retried, 0);
    th_feedback_free(fb);
    th_router_free(r);
}

/* Nothing to tell: a provider's refusal of the id (a Twilio call), a provider without feedback,
 * one turned off in [feedback], one the router does not have. */
static void test_skipped(void **state)
{
    (void)state;
    fake_twilio.script = INVAL;
    cfg.feedback_aws = false;
    struct th_router *r = router();
    struct th_feedback *fb;
    assert_int_equal(th_feedback_new(&cfg, r, &fb), TH_E_OK);
    th_feedback_verified(fb, "twilio", "CAaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa");
    th_feedback_verified(fb, "aws", "id");
    th_feedback_verified(fb, "webhook", "id");
    th_feedback_verified(fb, "outbox", "id");
    run(fb, 100);
    assert_int_equal(fake_twilio.calls, 1);
    assert_int_equal(fake_aws.calls, 0);
    assert_int_equal(counts(fb, "twilio").skipped, 1);
    assert_int_equal(counts(fb, "aws").skipped, 1);
    assert_int_equal(counts(fb, "other").skipped, 2);
    assert_int_equal(counts(fb, "twilio").sent + counts(fb, "twilio").failed, 0);
    th_feedback_free(fb);
    th_router_free(r);
}

/* Reported from another thread while the loop drains: every one arrives, none twice. */
struct reporter {
    struct th_feedback *fb;
    int n;
};

static void *report(void *ud)
{
    struct reporter *rp = ud;
    for (int i = 0; i < rp->n; i++) {
        char id[32];
        snprintf(id, sizeof id, "id-%d", i);
        th_feedback_verified(rp->fb, "aws", id);
    }
    return NULL;
}

static void test_other_thread(void **state)
{
    (void)state;
    cfg.feedback_max_queue = 1000;
    struct th_router *r = router();
    struct th_feedback *fb;
    assert_int_equal(th_feedback_new(&cfg, r, &fb), TH_E_OK);
    struct th_loop *loop;
    assert_int_equal(th_loop_new(&loop), TH_E_OK);
    assert_int_equal(th_feedback_start(fb, loop), TH_E_OK);
    struct reporter rp = {fb, 500};
    pthread_t t;
    assert_int_equal(pthread_create(&t, NULL, report, &rp), 0);
    struct th_timer stop = {0};
    th_loop_timer_set(loop, &stop, th_mono_us() + 1500 * 1000, stop_loop, loop);
    th_loop_run(loop);
    pthread_join(t, NULL);
    th_loop_free(loop);
    assert_int_equal(fake_aws.calls, 500);
    assert_int_equal(counts(fb, "aws").sent, 500);
    assert_int_equal(counts(fb, "aws").dropped, 0);
    th_feedback_free(fb);
    th_router_free(r);
}

int main(void)
{
    assert_int_equal(th_http_global_init(), TH_E_OK);
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_off_by_default, setup, teardown),
        cmocka_unit_test_setup_teardown(test_sends_each_once, setup, teardown),
        cmocka_unit_test_setup_teardown(test_queue_bound_drops, setup, teardown),
        cmocka_unit_test_setup_teardown(test_bounded_concurrency, setup, teardown),
        cmocka_unit_test_setup_teardown(test_retry_then_fail, setup, teardown),
        cmocka_unit_test_setup_teardown(test_permanent_once, setup, teardown),
        cmocka_unit_test_setup_teardown(test_skipped, setup, teardown),
        cmocka_unit_test_setup_teardown(test_other_thread, setup, teardown),
    };
    int rc = cmocka_run_group_tests(tests, NULL, NULL);
    th_http_global_cleanup();
    return rc;
}
