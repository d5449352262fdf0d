/*
 * Unit tests: route/router's async contracts, with scripted providers on a real th_loop (no
 * network, except the overload test's loopback listener that never answers). libuv style: every
 * callback is counted and the totals asserted exactly.
 *
 * Contracts: done is called exactly once per send, never inside th_router_send; a retryable
 * failure fails over to the next attempt, a permanent one does not; an attempt's timeout is the
 * provider's, capped by what is left of the deadline; an answer arriving after the deadline is
 * not followed by another attempt; the circuit breaker opens after N failures in a row and lets a
 * probe through after the period; dispatch.max_in_flight bounds the loop's transfers (overload).
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <arpa/inet.h>
#include <stdalign.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include "common/arena.h"
#include "common/util.h"
#include "config/config.h"
#include "loop/loop.h"
#include "net/http.h"
#include "route/route.h"
#include "route/router.h"

/* ---- a scripted provider ---- */

enum script {
    ACCEPT,    /* accepted, on the next loop turn */
    RETRY,     /* retryable failure (a 503, a timeout) */
    PERMANENT, /* permanent failure (validation, opt-out) */
    NEVER,     /* holds the answer until fake_abort() */
    REFUSE,    /* send() itself fails (no credentials yet): done never called by the provider */
    HTTP,      /* a real transfer on the router's loop client, to a listener that never answers */
};

#define MAX_PENDING 8

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
    int64_t delay_us; /* before answering */
    int sends;        /* send() calls that returned TH_E_OK */
    int refused;      /* send() calls that returned an error */
    int answers;      /* done calls made by this provider */
    int freed;
    int64_t last_timeout_ms;
    struct th_loop *loop;
    struct pending pending[MAX_PENDING];
    const char *url; /* HTTP: where to */
};

static int fakes_freed;

static void answer(struct pending *p, enum script how)
{
    struct th_send_result res = {.err = TH_E_OK};
    switch (how) {
    case ACCEPT:
        snprintf(res.transaction_id, sizeof res.transaction_id, "%s-%d", p->f->base.name,
                 p->f->answers + 1);
        break;
    case RETRY:
        res.err = TH_E_PROVIDER;
        res.retryable = true;
        snprintf(res.error, sizeof res.error, "scripted retryable");
        break;
    default:
        res.err = TH_E_PROVIDER;
        snprintf(res.error, sizeof res.error, "scripted permanent");
        break;
    }
    p->busy = false;
    p->f->answers++;
    p->done(p->ud, &res);
}

static void on_timer(void *ud)
{
    struct pending *p = ud;
    answer(p, p->f->script);
}

static void on_http(void *ud, const struct th_http_response *res)
{
    struct pending *p = ud;
    struct th_send_result out = {
        .err = res->outcome == TH_HTTP_TIMEOUT ? TH_E_TIMEOUT : TH_E_PROVIDER, .retryable = true};
    snprintf(out.error, sizeof out.error, "%s", th_http_outcome_name(res->outcome));
    p->busy = false;
    p->f->answers++;
    p->done(p->ud, &out);
}

static th_err fake_send(struct th_provider *prov, const struct th_attempt *at,
                        const struct th_send *msg, th_send_done_fn done, void *ud)
{
    (void)msg;
    struct fake *f = (struct fake *)prov;
    f->last_timeout_ms = at->timeout_ms;
    if (f->script == REFUSE) {
        f->refused++;
        return TH_E_AUTH;
    }
    struct pending *p = NULL;
    for (int i = 0; i < MAX_PENDING && !p; i++)
        if (!f->pending[i].busy)
            p = &f->pending[i];
    assert_non_null(p);
    *p = (struct pending){.f = f, .done = done, .ud = ud, .busy = true};
    f->loop = at->loop;
    if (f->script == HTTP) {
        struct th_http_request req = {.method = "GET", .url = f->url, .timeout_ms = at->timeout_ms};
        th_err e = th_http_start(at->http, &req, on_http, p);
        if (e != TH_E_OK) {
            p->busy = false;
            f->refused++;
            return e;
        }
    } else if (f->script != NEVER) {
        th_loop_timer_set(at->loop, &p->timer, th_mono_us() + f->delay_us, on_timer, p);
    }
    f->sends++;
    return TH_E_OK;
}

/* The provider gives up what it holds (a shutdown): a permanent failure for each. */
static void fake_abort(struct fake *f)
{
    for (int i = 0; i < MAX_PENDING; i++)
        if (f->pending[i].busy)
            answer(&f->pending[i], PERMANENT);
}

static void fake_free(struct th_provider *p)
{
    ((struct fake *)p)->freed++;
    fakes_freed++;
}

static const struct th_provider_ops fake_ops = {.send = fake_send, .free = fake_free};

/* Statically allocated: the router frees (counts) them, the test reads them afterwards. */
static struct fake fake_aws, fake_twilio;

static void fake_init(struct fake *f, const char *name, enum script script)
{
    memset(f, 0, sizeof *f);
    f->base.ops = &fake_ops;
    f->base.name = name;
    f->base.timeout_ms = 5000;
    f->script = script;
}

/* ---- the test's side ---- */

struct ctx {
    struct th_loop *loop;
    struct th_arena arena; /* the requests': every send is given one */
    alignas(max_align_t) unsigned char chunk[4096];
    int done_calls;
    struct th_route_result res[8];
    char provider[8][16];
};

static void on_done(void *ud, const struct th_route_result *res)
{
    struct ctx *c = ud;
    assert_true(c->done_calls < 8);
    c->res[c->done_calls] = *res;
    snprintf(c->provider[c->done_calls], sizeof c->provider[0], "%s", res->provider);
    c->done_calls++;
}

static void stop_loop(void *ud)
{
    th_loop_stop(ud);
}

/* Runs the loop for ms milliseconds: long enough for every scripted answer, and for a second
 * (wrong) done call to show. */
static void run_for(struct ctx *c, int ms)
{
    struct th_timer t = {0}; /* an unarmed timer is a zeroed one */
    th_loop_timer_set(c->loop, &t, th_mono_us() + (int64_t)ms * 1000, stop_loop, c->loop);
    th_loop_run(c->loop);
}

static struct th_config cfg;

static struct th_router *router(const char *route_text)
{
    struct th_routes *rs = NULL;
    if (route_text) {
        assert_int_equal(th_routes_new(&rs), TH_E_OK);
        struct th_route rt = {.channel = "*", .country = "*"};
        char err[256];
        assert_int_equal(th_route_parse(route_text, NULL, NULL, &rt, err, sizeof err), TH_E_OK);
        assert_int_equal(th_routes_add(rs, &rt), TH_E_OK);
    }
    struct th_provider *ps[] = {&fake_aws.base, &fake_twilio.base};
    struct th_router *r = NULL;
    char err[256];
    assert_int_equal(th_router_new_with(&cfg, ps, 2, rs, &r, err, sizeof err), TH_E_OK);
    return r;
}

static struct th_send msg(int64_t deadline_in_ms)
{
    return (struct th_send){
        .request_id = "req-1",
        .to = "+12065550100",
        .region = "US",
        .channel = TH_CHANNEL_SMS,
        .language = "en",
        .body = "Your code is 123456",
        .deadline_us = th_mono_us() + deadline_in_ms * 1000,
    };
}

static int setup(void **state)
{
    (void)state;
    char err[512];
    char *env[] = {NULL};
    assert_int_equal(th_config_load(&cfg, NULL, env, err, sizeof err), TH_E_OK);
    cfg.threads = 1;
    cfg.dispatch_max_in_flight = 64;
    cfg.dispatch_breaker_failures = 0;
    fakes_freed = 0;
    fake_init(&fake_aws, "aws", ACCEPT);
    fake_init(&fake_twilio, "twilio", ACCEPT);
    return 0;
}

static int teardown(void **state)
{
    (void)state;
    th_config_release(&cfg);
    return 0;
}

/*
 * Runs one send on a fresh loop for run_ms, then frees the loop. A loop runs once, as in serve:
 * the router's per-loop HTTP client is torn down when th_loop_run returns.
 */
static void send_one(struct th_router *r, struct ctx *c, int64_t deadline_in_ms, int run_ms)
{
    assert_int_equal(th_loop_new(&c->loop), TH_E_OK);
    struct th_send m = msg(deadline_in_ms);
    int before = c->done_calls;
    th_router_send(r, c->loop, &c->arena, &m, on_done, c);
    assert_int_equal(c->done_calls, before); /* never inside th_router_send */
    run_for(c, run_ms);
    th_loop_free(c->loop);
    c->loop = NULL;
}

static void with_loop(struct ctx *c)
{
    memset(c, 0, sizeof *c);
    th_arena_init(&c->arena, c->chunk, sizeof c->chunk, 1 << 20);
}

static void end(struct ctx *c, struct th_router *r)
{
    if (c->loop)
        th_loop_free(c->loop);
    th_arena_cleanse_release(&c->arena);
    th_router_free(r);
    assert_int_equal(fakes_freed, 2); /* the router owns its providers */
}

/* ---- tests ---- */

static void test_accept_done_once(void **state)
{
    (void)state;
    struct th_router *r = router(NULL); /* the default route: aws */
    struct ctx c;
    with_loop(&c);
    send_one(r, &c, 2000, 50);
    assert_int_equal(c.done_calls, 1);
    assert_int_equal(c.res[0].err, TH_E_OK);
    assert_string_equal(c.provider[0], "aws");
    assert_string_equal(c.res[0].transaction_id, "aws-1");
    assert_int_equal(c.res[0].attempts, 1);
    assert_int_equal(fake_aws.sends, 1);
    assert_int_equal(fake_twilio.sends, 0);
    end(&c, r);
}

/* One way to call the router: with the request's arena. Without one nothing is sent, and done is
 * called once, at once (the documented exception), with TH_E_INVAL. */
static void test_no_arena_refused(void **state)
{
    (void)state;
    struct th_router *r = router(NULL);
    struct ctx c;
    with_loop(&c);
    assert_int_equal(th_loop_new(&c.loop), TH_E_OK);
    struct th_send m = msg(2000);
    th_router_send(r, c.loop, NULL, &m, on_done, &c);
    assert_int_equal(c.done_calls, 1);
    assert_int_equal(c.res[0].err, TH_E_INVAL);
    run_for(&c, 20);
    assert_int_equal(c.done_calls, 1);
    assert_int_equal(fake_aws.sends, 0);
    assert_int_equal(fake_twilio.sends, 0);
    end(&c, r);
}

static void test_failover_on_retryable(void **state)
{
    (void)state;
    fake_aws.script = RETRY;
    struct th_router *r = router("aws, twilio");
    struct ctx c;
    with_loop(&c);
    send_one(r, &c, 2000, 50);
    assert_int_equal(c.done_calls, 1);
    assert_int_equal(c.res[0].err, TH_E_OK);
    assert_string_equal(c.provider[0], "twilio");
    assert_string_equal(c.res[0].transaction_id, "twilio-1");
    assert_int_equal(c.res[0].attempts, 2);
    assert_string_equal(c.res[0].errors, "aws: scripted retryable");
    assert_int_equal(fake_aws.sends + fake_twilio.sends, 2);
    assert_int_equal(fake_aws.answers + fake_twilio.answers, 2);
    end(&c, r);
}

static void test_no_failover_on_permanent(void **state)
{
    (void)state;
    fake_aws.script = PERMANENT;
    struct th_router *r = router("aws, twilio");
    struct ctx c;
    with_loop(&c);
    send_one(r, &c, 2000, 50);
    assert_int_equal(c.done_calls, 1);
    assert_int_equal(c.res[0].err, TH_E_PROVIDER);
    assert_string_equal(c.provider[0], "aws");
    assert_int_equal(c.res[0].attempts, 1);
    assert_int_equal(fake_aws.sends, 1);
    assert_int_equal(fake_twilio.sends, 0);
    end(&c, r);
}

/* A provider that cannot even start (send returns an error) is passed over, and done still comes
 * later, once. */
static void test_refused_send_fails_over(void **state)
{
    (void)state;
    fake_aws.script = REFUSE;
    struct th_router *r = router("aws, twilio");
    struct ctx c;
    with_loop(&c);
    send_one(r, &c, 2000, 50);
    assert_int_equal(c.done_calls, 1);
    assert_int_equal(c.res[0].err, TH_E_OK);
    assert_string_equal(c.provider[0], "twilio");
    assert_int_equal(fake_aws.refused, 1);
    assert_int_equal(fake_twilio.sends, 1);
    /* and with nothing after it: a failure, still once and still later */
    fake_twilio.script = REFUSE;
    send_one(r, &c, 2000, 50);
    assert_int_equal(c.done_calls, 2);
    assert_int_equal(c.res[1].err, TH_E_PROVIDER);
    assert_int_equal(c.res[1].attempts, 0);
    end(&c, r);
}

static void test_timeout_capped_by_deadline(void **state)
{
    (void)state;
    struct th_router *r = router(NULL);
    struct ctx c;
    with_loop(&c);
    send_one(r, &c, 10000, 20); /* far deadline: the provider's own 5000 ms */
    assert_int_equal(fake_aws.last_timeout_ms, 5000);
    send_one(r, &c, 400, 20); /* 400 ms left, minus the margin for the answer */
    assert_true(fake_aws.last_timeout_ms <= 370);
    assert_true(fake_aws.last_timeout_ms >= 300);
    assert_int_equal(c.done_calls, 2);
    end(&c, r);
}

/* A retryable answer that arrives when the deadline is (nearly) spent: no further attempt, the
 * outcome is a timeout, and done is called once. */
static void test_late_answer_no_failover(void **state)
{
    (void)state;
    fake_aws.script = RETRY;
    fake_aws.delay_us = 150 * 1000;
    struct th_router *r = router("aws, twilio");
    struct ctx c;
    with_loop(&c);
    send_one(r, &c, 160, 250);
    assert_int_equal(c.done_calls, 1);
    assert_int_equal(c.res[0].err, TH_E_TIMEOUT);
    assert_int_equal(fake_aws.sends, 1);
    assert_int_equal(fake_twilio.sends, 0);
    assert_non_null(strstr(c.res[0].errors, "twilio: no time left"));
    end(&c, r);
}

/* A provider that holds its answer: the router never answers in its place, and calls done once
 * when the provider finally lets go (a shutdown aborting the transfer). */
static void test_never_answer(void **state)
{
    (void)state;
    fake_aws.script = NEVER;
    struct th_router *r = router("aws, twilio");
    struct ctx c;
    with_loop(&c);
    send_one(r, &c, 100, 200); /* well past the deadline */
    assert_int_equal(c.done_calls, 0);
    fake_abort(&fake_aws);
    assert_int_equal(c.done_calls, 1);
    assert_int_equal(c.res[0].err, TH_E_PROVIDER);
    fake_abort(&fake_aws); /* nothing left to answer */
    assert_int_equal(c.done_calls, 1);
    assert_int_equal(fake_twilio.sends, 0);
    end(&c, r);
}

static void test_breaker_opens_and_closes(void **state)
{
    (void)state;
    cfg.dispatch_breaker_failures = 2;
    cfg.dispatch_breaker_seconds = 1;
    fake_aws.script = RETRY;
    struct th_router *r = router("aws, twilio");
    struct ctx c;
    with_loop(&c);
    send_one(r, &c, 2000, 20);
    assert_int_equal(th_router_circuits_open(r), 0);
    send_one(r, &c, 2000, 20); /* the second failure in a row opens it */
    assert_int_equal(th_router_circuits_open(r), 1);
    int64_t opened = th_mono_us();
    assert_int_equal(fake_aws.sends, 2);
    send_one(r, &c, 2000, 20); /* skipped while open */
    assert_int_equal(fake_aws.sends, 2);
    assert_int_equal(fake_twilio.sends, 3);
    assert_int_equal(c.res[2].attempts, 1);
    assert_non_null(strstr(c.res[2].errors, "aws: skipped (circuit open)"));
    /* after the period a probe goes through; its success closes the circuit */
    while (th_mono_us() < opened + 1050 * 1000)
        usleep(10 * 1000);
    assert_int_equal(th_router_circuits_open(r), 0);
    fake_aws.script = ACCEPT;
    send_one(r, &c, 2000, 20);
    assert_int_equal(fake_aws.sends, 3);
    assert_string_equal(c.provider[3], "aws");
    fake_aws.script = RETRY; /* one failure after a success does not re-open it */
    send_one(r, &c, 2000, 20);
    assert_int_equal(th_router_circuits_open(r), 0);
    assert_int_equal(fake_aws.sends, 4);
    assert_int_equal(c.done_calls, 5);
    end(&c, r);
}

/* dispatch.max_in_flight bounds the loop's transfers: the send past it is refused as overload
 * (nothing tried), and still answered once, later. */
static void test_overload(void **state)
{
    (void)state;
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    assert_true(fd >= 0);
    struct sockaddr_in sa = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    socklen_t sl = sizeof sa;
    assert_int_equal(bind(fd, (struct sockaddr *)&sa, sizeof sa), 0);
    assert_int_equal(listen(fd, 16), 0); /* never accepted: the transfers wait */
    assert_int_equal(getsockname(fd, (struct sockaddr *)&sa, &sl), 0);
    char url[64];
    snprintf(url, sizeof url, "http://127.0.0.1:%d/", ntohs(sa.sin_port));
    cfg.dispatch_max_in_flight = 2;
    fake_aws.script = HTTP;
    fake_aws.url = url;
    struct th_router *r = router(NULL);
    struct ctx c;
    with_loop(&c);
    assert_int_equal(th_loop_new(&c.loop), TH_E_OK);
    struct th_send m = msg(250);
    for (int i = 0; i < 3; i++)
        th_router_send(r, c.loop, &c.arena, &m, on_done, &c);
    assert_int_equal(c.done_calls, 0);
    run_for(&c, 400);
    assert_int_equal(c.done_calls, 3);
    assert_int_equal(fake_aws.sends, 2);
    assert_int_equal(fake_aws.refused, 1);
    int overloads = 0, timeouts = 0;
    for (int i = 0; i < 3; i++) {
        overloads += c.res[i].overload ? 1 : 0;
        timeouts += c.res[i].err == TH_E_TIMEOUT ? 1 : 0;
    }
    assert_int_equal(overloads, 1);
    assert_int_equal(timeouts, 2);
    assert_true(c.res[0].overload); /* the refused one is answered first, on the next turn */
    assert_int_equal(c.res[0].attempts, 0);
    end(&c, r);
    close(fd);
}

/* ---- route health ---- */

/* One send to region on a fresh loop; the ctx's answers are counted from 0 again when full. */
static void send_to(struct th_router *r, struct ctx *c, const char *region)
{
    if (c->done_calls == 8)
        c->done_calls = 0;
    assert_int_equal(th_loop_new(&c->loop), TH_E_OK);
    struct th_send m = msg(2000);
    m.region = region;
    int before = c->done_calls;
    th_router_send(r, c->loop, &c->arena, &m, on_done, c);
    run_for(c, 20);
    th_loop_free(c->loop);
    c->loop = NULL;
    assert_int_equal(c->done_calls, before + 1);
}

static void receipts(struct th_router *r, const char *provider, const char *country, int delivered,
                     int failed)
{
    for (int i = 0; i < delivered; i++)
        th_router_health_receipt(r, provider, country, true);
    for (int i = 0; i < failed; i++)
        th_router_health_receipt(r, provider, country, false);
}

/* Under the threshold with enough receipts: the route runs the next provider first, for that
 * country only; the demoted one stays behind as a fallback. */
static void test_health_demotes_for_country(void **state)
{
    (void)state;
    struct th_router *r = router("aws, twilio");
    struct ctx c;
    with_loop(&c);
    receipts(r, "aws", "US", 5, 15); /* 25 % of 20 */
    assert_int_equal(th_router_health_demoted(r, "aws"), 1);
    assert_int_equal(th_router_health_demoted(r, "twilio"), 0);
    send_to(r, &c, "US");
    assert_string_equal(c.provider[0], "twilio");
    assert_int_equal(fake_twilio.sends, 1);
    assert_int_equal(fake_aws.sends, 0);
    send_to(r, &c, "DE"); /* another country keeps its order */
    assert_string_equal(c.provider[1], "aws");
    assert_int_equal(fake_aws.sends, 1);
    fake_twilio.script = RETRY; /* the demoted provider is still the fallback */
    send_to(r, &c, "US");
    assert_string_equal(c.provider[2], "aws");
    assert_int_equal(c.res[2].err, TH_E_OK);
    assert_int_equal(c.res[2].attempts, 2);
    assert_int_equal(fake_twilio.sends, 2);
    assert_int_equal(fake_aws.sends, 2);
    end(&c, r);
}

/* Fewer receipts than health_min_receipts judge nothing, however bad. */
static void test_health_min_receipts(void **state)
{
    (void)state;
    struct th_router *r = router("aws, twilio");
    struct ctx c;
    with_loop(&c);
    receipts(r, "aws", "US", 0, 19);
    assert_int_equal(th_router_health_demoted(r, "aws"), 0);
    send_to(r, &c, "US");
    assert_string_equal(c.provider[0], "aws");
    receipts(r, "aws", "US", 0, 1);
    assert_int_equal(th_router_health_demoted(r, "aws"), 1);
    send_to(r, &c, "US");
    assert_string_equal(c.provider[1], "twilio");
    assert_int_equal(fake_aws.sends, 1);
    assert_int_equal(fake_twilio.sends, 1);
    end(&c, r);
}

/* Back only above threshold + 10 points: at the threshold itself it stays demoted. */
static void test_health_recovers_with_hysteresis(void **state)
{
    (void)state;
    struct th_router *r = router("aws, twilio");
    struct ctx c;
    with_loop(&c);
    receipts(r, "aws", "US", 5, 15);
    assert_int_equal(th_router_health_demoted(r, "aws"), 1);
    receipts(r, "aws", "US", 10, 0); /* 15 of 30: 50 %, not yet 60 % */
    assert_int_equal(th_router_health_demoted(r, "aws"), 1);
    send_to(r, &c, "US");
    assert_string_equal(c.provider[0], "twilio");
    receipts(r, "aws", "US", 9, 0); /* 24 of 39: 61.5 % */
    assert_int_equal(th_router_health_demoted(r, "aws"), 0);
    send_to(r, &c, "US");
    assert_string_equal(c.provider[1], "aws");
    assert_int_equal(fake_aws.sends, 1);
    assert_int_equal(fake_twilio.sends, 1);
    end(&c, r);
}

/* While demoted, one request in 10 keeps the order (a probe), so receipts keep coming. */
static void test_health_probes(void **state)
{
    (void)state;
    struct th_router *r = router("aws, twilio");
    struct ctx c;
    with_loop(&c);
    receipts(r, "aws", "US", 0, 20);
    for (int i = 0; i < 20; i++)
        send_to(r, &c, "US");
    assert_int_equal(fake_aws.sends, 2);
    assert_int_equal(fake_twilio.sends, 18);
    end(&c, r);
}

/* Never reordered onto an open circuit: the demoted provider then keeps its place. Both demoted:
 * no reorder either. */
static void test_health_breaker_interplay(void **state)
{
    (void)state;
    cfg.dispatch_breaker_failures = 1;
    cfg.dispatch_breaker_seconds = 60;
    struct th_router *r = router("aws, twilio");
    struct ctx c;
    with_loop(&c);
    receipts(r, "aws", "US", 0, 20);
    fake_twilio.script = RETRY; /* moved first, fails: its circuit opens, aws carries it */
    send_to(r, &c, "US");
    assert_string_equal(c.provider[0], "aws");
    assert_int_equal(th_router_circuits_open(r), 1);
    send_to(r, &c, "US"); /* twilio's circuit is open: aws stays first, twilio not tried */
    assert_string_equal(c.provider[1], "aws");
    assert_int_equal(c.res[1].attempts, 1);
    assert_string_equal(c.res[1].errors, ""); /* not moved first and then skipped */
    assert_int_equal(fake_twilio.sends, 1);
    assert_int_equal(fake_aws.sends, 2);
    end(&c, r);
    teardown(NULL);
    setup(NULL);
    r = router("aws, twilio");
    with_loop(&c);
    receipts(r, "aws", "US", 0, 20);
    receipts(r, "twilio", "US", 0, 20);
    send_to(r, &c, "US");
    assert_string_equal(c.provider[0], "aws");
    assert_int_equal(fake_twilio.sends, 0);
    end(&c, r);
}

/* routing.health_threshold = 0: receipts are ignored. */
static void test_health_off(void **state)
{
    (void)state;
    cfg.routing_health_threshold = 0;
    struct th_router *r = router("aws, twilio");
    struct ctx c;
    with_loop(&c);
    receipts(r, "aws", "US", 0, 50);
    assert_int_equal(th_router_health_demoted(r, "aws"), 0);
    send_to(r, &c, "US");
    assert_string_equal(c.provider[0], "aws");
    end(&c, r);
}

int main(void)
{
    assert_int_equal(th_http_global_init(), TH_E_OK);
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_accept_done_once, setup, teardown),
        cmocka_unit_test_setup_teardown(test_no_arena_refused, setup, teardown),
        cmocka_unit_test_setup_teardown(test_failover_on_retryable, setup, teardown),
        cmocka_unit_test_setup_teardown(test_no_failover_on_permanent, setup, teardown),
        cmocka_unit_test_setup_teardown(test_refused_send_fails_over, setup, teardown),
        cmocka_unit_test_setup_teardown(test_timeout_capped_by_deadline, setup, teardown),
        cmocka_unit_test_setup_teardown(test_late_answer_no_failover, setup, teardown),
        cmocka_unit_test_setup_teardown(test_never_answer, setup, teardown),
        cmocka_unit_test_setup_teardown(test_breaker_opens_and_closes, setup, teardown),
        cmocka_unit_test_setup_teardown(test_overload, setup, teardown),
        cmocka_unit_test_setup_teardown(test_health_demotes_for_country, setup, teardown),
        cmocka_unit_test_setup_teardown(test_health_min_receipts, setup, teardown),
        cmocka_unit_test_setup_teardown(test_health_recovers_with_hysteresis, setup, teardown),
        cmocka_unit_test_setup_teardown(test_health_probes, setup, teardown),
        cmocka_unit_test_setup_teardown(test_health_breaker_interplay, setup, teardown),
        cmocka_unit_test_setup_teardown(test_health_off, setup, teardown),
    };
    int rc = cmocka_run_group_tests(tests, NULL, NULL);
    th_http_global_cleanup();
    return rc;
}
