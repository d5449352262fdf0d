/*
 * Unit tests: hook (the async contracts of one Okta request), on a real th_loop with a scripted
 * sender and recorder in place of the router and the store writer. libuv style: every callback
 * is counted and the totals asserted exactly: Okta gets one answer, the request object is freed
 * once and only after the last callback owed to it (a provider answering after the deadline, a
 * dead-letter commit after the hold), the in-flight count returns to zero.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <stdalign.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/util.h"
#include "config/config.h"
#include "dlq/dlq.h"
#include "guard/guard.h"
#include "hook/hook.h"
#include "loop/loop.h"
#include "okta/okta.h"

#define MAXREQ  8
#define MAXSEND 8

/* ---- the scripted sender: each send answered after a delay, or when the test says ---- */

struct send {
    struct th_loop *loop;
    th_route_done_fn done;
    void *done_ud;
    struct th_timer t;
    th_err err;
    bool answered;
};

/* ---- the scripted recorder: delivery rows counted; dead-letter commits delayed or withheld ----
 */

struct dlq_entry {
    struct th_loop_reply reply;
    struct th_timer t;
    bool committed;
    int64_t queued_us;
};

/* ---- one request as the transport holds it ---- */

struct treq {
    struct th_hook_req ctx;
    struct fx *fx;
    int i; /* its index in fx: what it saw is kept there, readable after it is freed */
    alignas(max_align_t) unsigned char chunk[8192];
};

/* An action the test schedules on the loop (the loop runs once per test). */
struct action {
    struct fx *f;
    void (*fn)(struct fx *f);
    struct th_timer t;
};

struct fx {
    struct th_config cfg;
    struct th_guard *guard;
    struct th_dlq *dlq;
    struct th_hook *hook;
    struct th_loop *loop;
    /* script */
    int send_after_ms; /* < 0: only when the test calls answer_send */
    th_err send_err;
    int commit_after_ms; /* < 0: never by itself */
    /* counts */
    struct send sends[MAXSEND];
    int nsends;
    size_t sent_len[MAXSEND];
    bool sent_otp[MAXSEND];       /* the body sent holds the code */
    char sent_desc[MAXSEND][512]; /* every field of the message sent (describe) */
    char sealed_desc[512];        /* the same of the first dead letter's payload, opened */
    int nsealed;
    struct dlq_entry dlqs[MAXREQ];
    int ndlq;
    int deliveries;
    char outcomes[MAXREQ][16];
    struct treq *reqs[MAXREQ];
    int nreqs;
    int answers[MAXREQ];
    int status[MAXREQ];
    char body[MAXREQ][512];
    int64_t answered_us[MAXREQ];
    int64_t arrived_us[MAXREQ];
    bool freed[MAXREQ];
    int frees;
    int freed_at_send_answer; /* frees seen when the last provider answer came */
    /* what an action saw */
    int seen_frees, seen_answers;
    long seen_in_flight;
    enum th_req_state seen_state;
    bool seen_committed;
    struct action actions[4];
    int nactions;
    struct th_timer watch;
    int64_t stop_at_us;
    bool (*until)(struct fx *);
};

static struct fx *g_fx;
static const struct th_templates *g_templates; /* NULL: the built-in pack */
static const char *g_dlq_key;                  /* NULL: dead letters kept without a payload */
static struct th_conv *g_conv;                 /* NULL: no conversion blocks */

/* Every field of a message but its deadline (the dead-letter queue does not keep it), one line. */
static void describe(const struct th_send *m, char *out, size_t n)
{
#define S(x) ((x) ? (x) : "(null)")
    snprintf(out, n, "%s|%s|%s|%d|%s|%s|%s|%lld", S(m->request_id), S(m->to), S(m->region),
             (int)m->channel, S(m->language), S(m->body), S(m->voice_id),
             (long long)m->otp_expires_ms);
#undef S
}

static void send_fire_err(struct send *s, th_err err)
{
    s->err = err;
    struct th_route_result res = {.err = s->err, .provider = "scripted", .attempts = 1};
    th_strlcpy(res.errors, "scripted: aborted", sizeof res.errors);
    s->answered = true;
    s->done(s->done_ud, &res);
}

static void send_fire(void *ud)
{
    struct send *s = ud;
    struct th_route_result res = {.err = s->err, .provider = "scripted", .attempts = 1};
    if (s->err == TH_E_OK)
        th_strlcpy(res.transaction_id, "tx-1", sizeof res.transaction_id);
    else
        th_strlcpy(res.errors, "scripted: failed", sizeof res.errors);
    g_fx->freed_at_send_answer = g_fx->frees;
    s->answered = true;
    s->done(s->done_ud, &res);
}

static void scripted_send(void *ud, struct th_loop *loop, struct th_arena *arena,
                          const struct th_send *msg, th_route_done_fn done, void *done_ud)
{
    struct fx *f = ud;
    assert_non_null(arena);
    assert_non_null(msg->body);
    assert_true(msg->deadline_us > 0);
    assert_true(f->nsends < MAXSEND);
    f->sent_len[f->nsends] = strlen(msg->body);
    f->sent_otp[f->nsends] = strstr(msg->body, "135791") != NULL;
    describe(msg, f->sent_desc[f->nsends], sizeof f->sent_desc[0]);
    struct send *s = &f->sends[f->nsends++];
    *s = (struct send){.loop = loop, .done = done, .done_ud = done_ud, .err = f->send_err};
    if (f->send_after_ms >= 0)
        th_loop_timer_set(loop, &s->t, th_mono_us() + f->send_after_ms * 1000, send_fire, s);
}

static void answer_send(struct fx *f, int i, th_err err)
{
    f->sends[i].err = err;
    th_loop_timer_set(f->loop, &f->sends[i].t, th_mono_us(), send_fire, &f->sends[i]);
}

static th_err scripted_delivery(void *ud, const struct th_delivery_row *row)
{
    struct fx *f = ud;
    assert_true(f->deliveries < MAXREQ);
    th_strlcpy(f->outcomes[f->deliveries++], row->outcome, sizeof f->outcomes[0]);
    return TH_E_OK;
}

static void commit_fire(void *ud)
{
    struct dlq_entry *d = ud;
    d->committed = true;
    d->reply.done(d->reply.ud, TH_E_OK); /* on the request's loop, as th_writer_dlq_on does */
}

static th_err scripted_dlq(void *ud, const struct th_dlq_row *row,
                           const struct th_loop_reply *reply)
{
    struct fx *f = ud;
    assert_non_null(row->id);
    assert_true(f->ndlq < MAXREQ);
    struct dlq_entry *d = &f->dlqs[f->ndlq++];
    assert_ptr_equal(reply->loop, f->loop);
    *d = (struct dlq_entry){.reply = *reply, .queued_us = th_mono_us()};
    if (row->payload_len) { /* opened as `dlq replay` opens it */
        struct th_dlq_payload p = {0};
        assert_int_equal(
            th_dlq_payload_decode(f->dlq, row->id, row->key_id, row->payload, row->payload_len, &p),
            TH_E_OK);
        if (f->nsealed++ == 0)
            describe(&p.msg, f->sealed_desc, sizeof f->sealed_desc);
        th_dlq_payload_release(&p);
    }
    if (f->commit_after_ms >= 0)
        th_loop_timer_set(f->loop, &d->t, th_mono_us() + f->commit_after_ms * 1000, commit_fire, d);
    return TH_E_OK;
}

static void commit(struct fx *f, int i)
{
    th_loop_timer_set(f->loop, &f->dlqs[i].t, th_mono_us(), commit_fire, &f->dlqs[i]);
}

/* ---- fixture ---- */

static struct fx *fx_new(int deadline_ms, bool dedupe)
{
    struct fx *f = calloc(1, sizeof *f);
    assert_non_null(f);
    g_fx = f;
    char dl[64];
    snprintf(dl, sizeof dl, "TELEHOOK_SERVER_DEADLINE_MS=%d", deadline_ms);
    const char *env[] = {dl,
                         dedupe ? "TELEHOOK_GUARD_DEDUPE=true" : "TELEHOOK_GUARD_DEDUPE=false",
                         g_conv ? "TELEHOOK_GUARD_SECRET=hook unit test"
                                : "TELEHOOK_LOG_LEVEL=info",
                         "TELEHOOK_GUARD_LIMIT_PHONE=0",
                         "TELEHOOK_GUARD_LIMIT_PHONE_DAILY=0",
                         "TELEHOOK_GUARD_LIMIT_USER=0",
                         "TELEHOOK_GUARD_LIMIT_COUNTRY=0",
                         "TELEHOOK_GUARD_BUDGET_CALLING_CODE=0",
                         "TELEHOOK_GUARD_LIMIT_GLOBAL=0",
                         g_dlq_key,
                         NULL};
    char err[256];
    assert_int_equal(th_config_load(&f->cfg, NULL, (char *const *)env, err, sizeof err), TH_E_OK);
    assert_int_equal(th_guard_new(&f->cfg, &f->guard, err, sizeof err), TH_E_OK);
    assert_int_equal(th_dlq_new(&f->cfg, &f->dlq, err, sizeof err), TH_E_OK);
    assert_true(th_dlq_enabled(f->dlq));
    assert_int_equal(th_loop_new(&f->loop), TH_E_OK);
    struct th_hook_deps deps = {
        .cfg = &f->cfg,
        .templates = g_templates ? g_templates : th_templates_builtin(),
        .sender = {.send = scripted_send, .ud = f},
        .recorder = {.delivery = scripted_delivery, .dlq = scripted_dlq, .ud = f},
        .guard = f->guard,
        .dlq = f->dlq,
        .conv = g_conv,
    };
    assert_int_equal(th_hook_new(&deps, &f->hook), TH_E_OK);
    f->send_after_ms = 10;
    f->commit_after_ms = 10;
    return f;
}

static void fx_free(struct fx *f)
{
    assert_int_equal(th_hook_in_flight(f->hook), 0);
    th_hook_free(f->hook);
    th_loop_free(f->loop);
    th_dlq_free(f->dlq);
    th_guard_free(f->guard);
    th_config_release(&f->cfg);
    free(f);
    g_fx = NULL;
}

static void treq_free(struct th_hook_req *ctx)
{
    struct treq *t = (struct treq *)ctx;
    assert_false(t->fx->freed[t->i]);
    t->fx->freed[t->i] = true;
    t->fx->frees++;
    free(t);
}

static void on_answer(void *ud, int status, const char *body, size_t len)
{
    struct treq *t = ud;
    struct fx *f = t->fx;
    f->answers[t->i]++;
    f->status[t->i] = status;
    f->answered_us[t->i] = th_mono_us();
    snprintf(f->body[t->i], sizeof f->body[0], "%.*s", (int)len, body ? body : "");
}

/* An Okta request as the transport hands it over: the body in the arena, padded. */
static struct treq *submit(struct fx *f, const char *event_id, const char *otp)
{
    char json[1024];
    snprintf(json, sizeof json,
             "{\"eventId\":\"%s\",\"eventType\":\"com.okta.telephony.provider\","
             "\"requestType\":\"com.okta.user.telephony.mfa-verification\","
             "\"data\":{\"userProfile\":{\"login\":\"a@example.com\",\"userId\":\"00u1\"},"
             "\"messageProfile\":{\"msgTemplate\":\"Your code is %s\",\"phoneNumber\":"
             "\"+12015550123\",\"otpCode\":\"%s\",\"deliveryChannel\":\"SMS\","
             "\"locale\":\"EN-US\"}}}",
             event_id, otp, otp);
    struct treq *t = calloc(1, sizeof *t);
    assert_non_null(t);
    t->fx = f;
    th_hook_req_init(&t->ctx, t->chunk, sizeof t->chunk, 64 * 1024, th_mono_us(),
                     f->cfg.deadline_ms, treq_free);
    f->arrived_us[f->nreqs] = t->ctx.arrived_us;
    size_t len = strlen(json);
    char *body = th_arena_alloc(&t->ctx.arena, len + TH_OKTA_PADDING);
    assert_non_null(body);
    memcpy(body, json, len);
    struct th_hook_call call = {.body = body, .len = len, .cap = len + TH_OKTA_PADDING};
    assert_true(f->nreqs < MAXREQ);
    t->i = f->nreqs;
    f->reqs[f->nreqs++] = t;
    th_hook_handle(f->hook, f->loop, &t->ctx, &call, on_answer, t);
    return t;
}

/* The transport lets go (its connection is done); the request may live on in the hook. */
static void transport_done(struct treq *t)
{
    th_hook_req_drop(&t->ctx);
}

static void on_watch(void *ud)
{
    struct fx *f = ud;
    if ((f->until && f->until(f)) || th_mono_us() >= f->stop_at_us) {
        th_loop_stop(f->loop);
        return;
    }
    th_loop_timer_set(f->loop, &f->watch, th_mono_us() + 2000, on_watch, f);
}

/*
 * Runs the loop (once: a th_loop does not run again after it stopped) until until(f) holds
 * (checked every 2 ms) or max_ms pass; the test's actions run on it at their times.
 */
static void run(struct fx *f, bool (*until)(struct fx *), int max_ms)
{
    f->until = until;
    f->stop_at_us = th_mono_us() + (int64_t)max_ms * 1000;
    th_loop_timer_set(f->loop, &f->watch, th_mono_us(), on_watch, f);
    th_loop_run(f->loop);
    th_loop_timer_cancel(f->loop, &f->watch);
    for (int i = 0; i < f->nactions; i++)
        th_loop_timer_cancel(f->loop, &f->actions[i].t);
}

static void action_fire(void *ud)
{
    struct action *a = ud;
    a->fn(a->f);
}

/* fn(f) on the loop, ms after now. */
static void at(struct fx *f, int ms, void (*fn)(struct fx *))
{
    assert_true(f->nactions < 4);
    struct action *a = &f->actions[f->nactions++];
    *a = (struct action){.f = f, .fn = fn};
    th_loop_timer_set(f->loop, &a->t, th_mono_us() + ms * 1000, action_fire, a);
}

static bool all_freed(struct fx *f)
{
    return f->frees == f->nreqs;
}

/* The transport has gone for every request: only the hook holds them. */
static void drop_all(struct fx *f)
{
    for (int i = 0; i < f->nreqs; i++)
        transport_done(f->reqs[i]);
}

static void see(struct fx *f)
{
    f->seen_frees = f->frees;
    f->seen_answers = f->answers[0];
    f->seen_in_flight = th_hook_in_flight(f->hook);
    f->seen_state = f->frees ? TH_REQ_DONE : f->reqs[0]->ctx.state;
    f->seen_committed = f->ndlq && f->dlqs[0].committed;
}

/* ---- tests ---- */

/* The provider accepts in time: one SUCCESSFUL answer, one record, one free. */
static void test_success_one_answer(void **state)
{
    (void)state;
    struct fx *f = fx_new(1000, false); /* far above the provider's 10 ms, even under valgrind */
    struct treq *t = submit(f, "ev-ok", "135791");
    assert_int_equal(f->answers[0], 0);
    assert_int_equal(th_hook_in_flight(f->hook), 1);
    assert_int_equal(t->ctx.state, TH_REQ_SENDING);
    run(f, NULL, 1300); /* past the deadline: it must not answer again */
    assert_int_equal(f->answers[0], 1);
    assert_int_equal(f->status[0], 200);
    assert_non_null(strstr(f->body[0], "SUCCESSFUL"));
    assert_int_equal(th_hook_in_flight(f->hook), 0);
    assert_int_equal(f->nsends, 1);
    assert_int_equal(f->deliveries, 1);
    assert_string_equal(f->outcomes[0], "SUCCESSFUL");
    assert_int_equal(f->ndlq, 0);
    assert_int_equal(t->ctx.state, TH_REQ_DONE);
    assert_int_equal(f->frees, 0); /* the transport still holds it */
    transport_done(t);
    assert_int_equal(f->frees, 1);
    fx_free(f);
}

/* A body that is not JSON: answered 400 before th_hook_handle returns; nothing sent. */
static void test_malformed_answered_inline(void **state)
{
    (void)state;
    struct fx *f = fx_new(500, false);
    struct treq *t = calloc(1, sizeof *t);
    assert_non_null(t);
    t->fx = f;
    th_hook_req_init(&t->ctx, t->chunk, sizeof t->chunk, 64 * 1024, th_mono_us(),
                     f->cfg.deadline_ms, treq_free);
    f->reqs[f->nreqs++] = t;
    struct th_hook_call call = {.body = "{not json", .len = 9, .cap = 9};
    th_hook_handle(f->hook, f->loop, &t->ctx, &call, on_answer, t);
    assert_int_equal(f->answers[0], 1);
    assert_int_equal(f->status[0], 400);
    transport_done(t);
    assert_int_equal(f->frees, 0); /* the hook lets go on the next loop turn */
    run(f, all_freed, 1000);
    assert_int_equal(f->answers[0], 1);
    assert_int_equal(f->frees, 1);
    assert_int_equal(f->nsends, 0);
    assert_int_equal(f->deliveries, 1);
    assert_string_equal(f->outcomes[0], "REJECTED");
    fx_free(f);
}

static void late_success(struct fx *f)
{
    see(f);
    answer_send(f, 0, TH_E_OK);
}

/*
 * The deadline first, the provider after it: Okta gets the TIMEOUT error once (after the
 * dead-letter commit); the late success is not a second answer, and the request lives until it.
 */
static void test_deadline_then_late_provider(void **state)
{
    (void)state;
    struct fx *f = fx_new(150, false);
    f->send_after_ms = -1; /* the test answers */
    struct treq *t = submit(f, "ev-late", "246802");
    transport_done(t); /* the transport has gone: only the hook holds the request */
    at(f, 400, late_success);
    run(f, all_freed, 2000);
    assert_int_equal(f->seen_answers, 1); /* answered before the provider */
    assert_int_equal(f->seen_in_flight, 0);
    assert_true(f->seen_committed);
    assert_int_equal(f->seen_frees, 0); /* the provider's answer was still owed */
    assert_int_equal(f->freed_at_send_answer, 0);
    assert_int_equal(f->answers[0], 1);
    assert_int_equal(f->status[0], 200);
    assert_non_null(strstr(f->body[0], "delivery timed out"));
    assert_true(f->answered_us[0] - f->arrived_us[0] >= 150 * 1000);
    assert_int_equal(f->ndlq, 1);
    assert_int_equal(f->frees, 1);
    assert_int_equal(f->deliveries, 1);
    assert_string_equal(f->outcomes[0], "TIMEOUT");
    fx_free(f);
}

/* The provider just before the deadline: SUCCESSFUL, and the deadline never answers again. */
static void test_provider_then_deadline(void **state)
{
    (void)state;
    struct fx *f = fx_new(150, false);
    f->send_after_ms = 100;
    struct treq *t = submit(f, "ev-race", "112233");
    run(f, NULL, 400); /* well past the deadline */
    assert_int_equal(f->answers[0], 1);
    assert_non_null(strstr(f->body[0], "SUCCESSFUL"));
    assert_int_equal(f->ndlq, 0);
    assert_int_equal(f->deliveries, 1);
    transport_done(t);
    assert_int_equal(f->frees, 1);
    fx_free(f);
}

static void see_then_commit(struct fx *f)
{
    see(f);
    commit(f, 0);
}

/* The provider fails: a dead-letter entry, and the answer held until its commit. */
static void test_failure_held_until_commit(void **state)
{
    (void)state;
    struct fx *f = fx_new(1000, false);
    f->send_err = TH_E_PROVIDER;
    f->commit_after_ms = -1; /* the test commits */
    struct treq *t = submit(f, "ev-fail", "998877");
    transport_done(t);
    at(f, 100, see_then_commit);
    run(f, all_freed, 2000);
    assert_int_equal(f->seen_state, TH_REQ_DLQ_HOLD);
    assert_int_equal(f->seen_answers, 0); /* held */
    assert_int_equal(f->ndlq, 1);
    assert_int_equal(f->answers[0], 1);
    assert_true(f->answered_us[0] - f->arrived_us[0] >= 100 * 1000);
    assert_non_null(strstr(f->body[0], "every delivery attempt failed"));
    assert_int_equal(f->deliveries, 1);
    assert_string_equal(f->outcomes[0], "FAILED");
    assert_int_equal(f->frees, 1);
    fx_free(f);
}

/*
 * The commit never comes in time: the hold ends (300 ms at most), Okta is answered anyway; the
 * request lives until the commit finally comes.
 */
static void test_dlq_hold_times_out(void **state)
{
    (void)state;
    struct fx *f = fx_new(1000, false);
    f->send_err = TH_E_PROVIDER;
    f->commit_after_ms = -1;
    struct treq *t = submit(f, "ev-hold", "445566");
    transport_done(t);
    at(f, 600, see_then_commit);
    run(f, all_freed, 2000);
    assert_int_equal(f->seen_answers, 1);
    assert_false(f->seen_committed);
    assert_int_equal(f->seen_frees, 0); /* the commit was owed */
    int64_t held_ms = (f->answered_us[0] - f->dlqs[0].queued_us) / 1000;
    assert_true(held_ms >= 290 && held_ms < 600);
    assert_int_equal(f->answers[0], 1);
    assert_int_equal(f->frees, 1);
    assert_int_equal(f->ndlq, 1);
    assert_int_equal(f->deliveries, 1);
    fx_free(f);
}

static void third_duplicate(struct fx *f)
{
    struct treq *c = submit(f, "ev-dup", "777111");
    f->seen_answers = f->answers[c->i]; /* replayed at once */
    transport_done(c);
}

static bool three_freed(struct fx *f)
{
    return f->nreqs == 3 && f->frees == 3;
}

/* A duplicate arriving while the first is in flight gets the first's answer; one send only. */
static void test_dedupe_replay(void **state)
{
    (void)state;
    struct fx *f = fx_new(1000, true);
    f->send_after_ms = 40;
    struct treq *a = submit(f, "ev-dup", "777111");
    struct treq *b = submit(f, "ev-dup", "777111");
    assert_int_equal(a->ctx.state, TH_REQ_SENDING);
    assert_int_equal(b->ctx.state, TH_REQ_DEDUPE_WAIT);
    drop_all(f);
    at(f, 150, third_duplicate);
    run(f, three_freed, 2000);
    assert_int_equal(f->nsends, 1);
    assert_int_equal(f->seen_answers, 1);
    for (int i = 0; i < 3; i++) {
        assert_int_equal(f->answers[i], 1);
        assert_int_equal(f->status[i], 200);
        assert_string_equal(f->body[i], f->body[0]);
    }
    assert_non_null(strstr(f->body[0], "SUCCESSFUL"));
    assert_true(f->answered_us[1] >= f->answered_us[0]);
    assert_int_equal(f->deliveries, 3);
    assert_string_equal(f->outcomes[0], "SUCCESSFUL");
    assert_string_equal(f->outcomes[1], "DUPLICATE");
    assert_string_equal(f->outcomes[2], "DUPLICATE");
    assert_int_equal(f->frees, 3);
    fx_free(f);
}

static void providers_answer_late(struct fx *f)
{
    see(f);
    for (int i = 0; i < f->nsends; i++)
        answer_send(f, i, i % 2 ? TH_E_OK : TH_E_PROVIDER);
}

/*
 * Shutdown with requests in flight: serve waits for th_hook_in_flight to reach zero. Every
 * request is answered by its deadline even though no provider answers; the providers' late
 * answers (while the loops drain) free every request once.
 */
static void test_in_flight_drain(void **state)
{
    (void)state;
    struct fx *f = fx_new(150, false);
    f->send_after_ms = -1;
    f->commit_after_ms = 5;
    char ev[16], otp[8];
    for (int i = 0; i < 4; i++) {
        snprintf(ev, sizeof ev, "ev-sd-%d", i);
        snprintf(otp, sizeof otp, "60000%d", i);
        submit(f, ev, otp);
    }
    assert_int_equal(th_hook_in_flight(f->hook), 4);
    drop_all(f); /* the transport stops: its connections close */
    at(f, 400, providers_answer_late);
    run(f, all_freed, 2000);
    assert_int_equal(f->seen_in_flight, 0);
    assert_int_equal(f->seen_frees, 0);
    assert_int_equal(f->nsends, 4);
    for (int i = 0; i < 4; i++) {
        assert_int_equal(f->answers[i], 1);
        assert_non_null(strstr(f->body[i], "delivery timed out"));
    }
    assert_int_equal(f->frees, 4);
    assert_int_equal(f->deliveries, 4);
    assert_int_equal(f->ndlq, 4);
    fx_free(f);
}

/* A text longer than the first try (1 KiB) is rendered again in a buffer of the full size. */
static void test_long_text(void **state)
{
    (void)state;
    static char long_body[3100];
    memset(long_body, 'a', 3000);
    strcpy(long_body + 3000, " {{otp}}");
    struct th_template_spec spec = {.language = "en", .channel = TH_CHANNEL_SMS, .body = long_body};
    struct th_templates *set = NULL;
    char err[256];
    assert_int_equal(th_templates_build(&spec, 1, &set, err, sizeof err), TH_E_OK);
    g_templates = set;
    struct fx *f = fx_new(1000, false);
    g_templates = NULL; /* the next tests: the built-in pack */
    struct treq *t = submit(f, "ev-long", "135791");
    transport_done(t);
    run(f, all_freed, 2000);
    assert_int_equal(f->nsends, 1);
    assert_int_equal(f->sent_len[0], 3007);
    assert_true(f->sent_otp[0]);
    assert_non_null(strstr(f->body[0], "SUCCESSFUL"));
    assert_int_equal(f->frees, 1);
    fx_free(f);

    th_templates_free(set);
}

/* The loop's exit handler (as the HTTP client's): every transfer still running is aborted. */
static void abort_sends(void *ud)
{
    struct fx *f = ud;
    for (int i = 0; i < f->nsends; i++)
        if (!f->sends[i].answered)
            send_fire_err(&f->sends[i], TH_E_PROVIDER);
}

/*
 * Shutdown while a provider still has the message: the loop stops, its exit handler aborts the
 * transfer (a failure: a dead-letter entry), the store writer finds the loop gone (lost). No
 * answer can leave any more; the in-flight count returns to zero and the request is freed once.
 */
static void test_loop_finishes_in_flight(void **state)
{
    (void)state;
    struct fx *f = fx_new(1000, false);
    f->send_after_ms = -1;
    f->commit_after_ms = -1;
    struct treq *t = submit(f, "ev-stop", "121212");
    transport_done(t);
    assert_int_equal(th_loop_at_exit(f->loop, abort_sends, f), TH_E_OK);
    run(f, NULL, 50);
    assert_int_equal(f->nsends, 1);
    assert_int_equal(f->ndlq, 1);
    assert_int_equal(f->answers[0], 0);
    assert_int_equal(f->frees, 0);
    assert_int_equal(th_hook_in_flight(f->hook), 1);
    f->dlqs[0].reply.lost(f->dlqs[0].reply.ud); /* the writer, on its thread in serve */
    assert_int_equal(f->answers[0], 0);
    assert_int_equal(f->frees, 1);
    assert_int_equal(th_hook_in_flight(f->hook), 0);
    fx_free(f);
}

/*
 * The same after the answer (the deadline answered, the entry committed): the aborted transfer is
 * the last thing owed, and the request is freed before the loop returns.
 */
static void test_loop_finishes_after_answer(void **state)
{
    (void)state;
    struct fx *f = fx_new(150, false);
    f->send_after_ms = -1;
    f->commit_after_ms = 5;
    struct treq *t = submit(f, "ev-stop2", "343434");
    transport_done(t);
    assert_int_equal(th_loop_at_exit(f->loop, abort_sends, f), TH_E_OK);
    run(f, NULL, 400);
    assert_int_equal(f->answers[0], 1);
    assert_int_equal(f->ndlq, 1);
    assert_int_equal(f->frees, 1);
    assert_int_equal(th_hook_in_flight(f->hook), 0);
    fx_free(f);
}

/*
 * A dead letter seals the very message the router was given (one th_send per request): opened,
 * the payload has every field the send had, so a replay sends the same message again.
 */
static void test_dead_letter_seals_the_message_sent(void **state)
{
    (void)state;
    g_dlq_key = "TELEHOOK_DLQ_KEY=AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8=";
    struct fx *f = fx_new(1000, false);
    g_dlq_key = NULL;
    assert_true(th_dlq_can_seal(f->dlq));
    f->send_err = TH_E_PROVIDER;
    struct treq *t = submit(f, "ev-seal", "135791");
    transport_done(t);
    run(f, all_freed, 2000);
    assert_int_equal(f->nsends, 1);
    assert_int_equal(f->ndlq, 1);
    assert_int_equal(f->nsealed, 1);
    assert_true(f->sent_otp[0]);
    assert_non_null(strstr(f->sealed_desc, "135791"));
    assert_string_equal(f->sealed_desc, f->sent_desc[0]);
    assert_int_equal(f->answers[0], 1);
    assert_int_equal(f->frees, 1);
    fx_free(f);
}

/* ---- conversion blocks (guard/conv.h) ---- */

static void submit_one(struct fx *f)
{
    char ev[32], otp[16];
    snprintf(ev, sizeof ev, "ev-conv-%d", f->nreqs);
    snprintf(otp, sizeof otp, "%06d", 100000 + f->nreqs);
    transport_done(submit(f, ev, otp));
}

static bool three_done(struct fx *f)
{
    return f->nreqs == 3 && f->frees == 3;
}

static struct th_conv *conv_new(void)
{
    struct th_conv_settings cs = {.mode = TH_CONV_ENFORCE,
                                  .window_ms = 3600000,
                                  .prefix_min_sends = 2,
                                  .prefix_min_rate = 10,
                                  .block_minutes = 60,
                                  .max_prefixes = 64,
                                  .max_verified = 64};
    struct th_conv *c;
    assert_int_equal(th_conv_new(&cs, &c), TH_E_OK);
    return c;
}

/*
 * Sends are counted when the provider accepts them, so the third request to a prefix whose two
 * sends never converted is refused (answered as a guard block, counted as one); failed sends
 * count nothing.
 */
static void test_conversion_block(void **state)
{
    (void)state;
    g_conv = conv_new();
    struct fx *f = fx_new(1000, false);
    at(f, 0, submit_one);
    at(f, 100, submit_one);
    at(f, 200, submit_one);
    run(f, three_done, 3000);
    assert_int_equal(f->nsends, 2);
    assert_string_equal(f->outcomes[0], "SUCCESSFUL");
    assert_string_equal(f->outcomes[1], "SUCCESSFUL");
    assert_string_equal(f->outcomes[2], "BLOCKED");
    assert_non_null(strstr(f->body[2], "conversion_prefix"));
    uint64_t b[TH_BLOCK__COUNT];
    th_guard_counts(f->guard, b);
    assert_int_equal(b[TH_BLOCK_CONV_PREFIX], 1);
    struct th_conv_stats cs;
    th_conv_stats(g_conv, &cs);
    assert_int_equal(cs.refused[TH_CONV_PREFIX], 1);
    assert_int_equal(cs.prefixes, 1);
    fx_free(f);
    th_conv_free(g_conv);

    g_conv = conv_new();
    f = fx_new(1000, false);
    f->send_err = TH_E_PROVIDER;
    at(f, 0, submit_one);
    at(f, 100, submit_one);
    at(f, 200, submit_one);
    run(f, three_done, 3000);
    assert_int_equal(f->nsends, 3); /* all tried: failures are not sends */
    th_conv_stats(g_conv, &cs);
    assert_int_equal(cs.prefixes, 0);
    assert_int_equal(cs.refused[TH_CONV_PREFIX], 0);
    fx_free(f);
    th_conv_free(g_conv);
    g_conv = NULL;
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_success_one_answer),
        cmocka_unit_test(test_malformed_answered_inline),
        cmocka_unit_test(test_deadline_then_late_provider),
        cmocka_unit_test(test_provider_then_deadline),
        cmocka_unit_test(test_failure_held_until_commit),
        cmocka_unit_test(test_dlq_hold_times_out),
        cmocka_unit_test(test_dedupe_replay),
        cmocka_unit_test(test_in_flight_drain),
        cmocka_unit_test(test_long_text),
        cmocka_unit_test(test_loop_finishes_in_flight),
        cmocka_unit_test(test_loop_finishes_after_answer),
        cmocka_unit_test(test_dead_letter_seals_the_message_sent),
        cmocka_unit_test(test_conversion_block),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
