/*
 * Unit tests: provider/outbox against a scripted sink. Contracts: the sink is given a reply on the
 * sending loop (no post-back of the provider's own); done is called exactly once, on that loop,
 * after the sink's reply runs — never inside send; a failed write is a retryable failure; a sink
 * that refuses the item fails the send, done never called. libuv style: every callback counted,
 * exact totals asserted.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <stdalign.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>

#include "common/arena.h"
#include "common/util.h"
#include "loop/loop.h"
#include "provider/provider.h"

struct fx {
    struct th_config cfg;
    struct th_loop *loop;
    struct th_provider *p;
    struct th_arena arena;
    alignas(max_align_t) unsigned char chunk[2048];
    /* the sink */
    th_err put_err;
    int puts;
    struct th_loop_reply reply;
    char item_id[96];
    char item_body[64];
    /* the send */
    int dones;
    struct th_send_result res;
    struct th_timer t;
    th_err result; /* what the scripted writer reports */
};

static th_err scripted_put(void *ud, const struct th_outbox_item *item,
                           const struct th_loop_reply *reply)
{
    struct fx *f = ud;
    f->puts++;
    if (f->put_err != TH_E_OK)
        return f->put_err;
    th_strlcpy(f->item_id, item->id, sizeof f->item_id);
    th_strlcpy(f->item_body, item->body, sizeof f->item_body);
    f->reply = *reply; /* copied, as put() promises */
    return TH_E_OK;
}

static void on_done(void *ud, const struct th_send_result *res)
{
    struct fx *f = ud;
    f->dones++;
    f->res = *res;
}

static struct fx *fx_new(void)
{
    struct fx *f = calloc(1, sizeof *f);
    assert_non_null(f);
    char err[256];
    char *env[] = {NULL};
    assert_int_equal(th_config_load(&f->cfg, NULL, env, err, sizeof err), TH_E_OK);
    struct th_outbox_sink sink = {.put = scripted_put, .ud = f};
    assert_int_equal(th_provider_new("outbox", &f->cfg, &sink, &f->p, err, sizeof err), TH_E_OK);
    assert_int_equal(th_loop_new(&f->loop), TH_E_OK);
    th_arena_init(&f->arena, f->chunk, sizeof f->chunk, 64 * 1024);
    return f;
}

static void fx_free(struct fx *f)
{
    th_provider_free(f->p);
    th_loop_free(f->loop);
    th_arena_cleanse_release(&f->arena);
    th_config_release(&f->cfg);
    free(f);
}

static th_err send_one(struct fx *f, struct th_arena *arena)
{
    struct th_send m = {
        .request_id = "r-1",
        .to = "+12015550123",
        .region = "US",
        .channel = TH_CHANNEL_SMS,
        .language = "en",
        .body = "Your code is 135791",
        .voice_id = "",
        .deadline_us = th_mono_us() + 1000000,
    };
    struct th_attempt at = {.loop = f->loop, .sender = "", .timeout_ms = 1000, .arena = arena};
    return th_provider_send(f->p, &at, &m, on_done, f);
}

/* The scripted writer: the sink's reply, run on its loop as th_writer_*_on does. */
static void writer_fire(void *ud)
{
    struct fx *f = ud;
    f->reply.done(f->reply.ud, f->result);
    th_loop_stop(f->loop);
}

static void run_reply(struct fx *f, th_err result)
{
    f->result = result;
    th_loop_timer_set(f->loop, &f->t, th_mono_us(), writer_fire, f);
    th_loop_run(f->loop);
}

static void test_kept_then_done_on_loop(void **state)
{
    (void)state;
    struct fx *f = fx_new();
    assert_int_equal(send_one(f, &f->arena), TH_E_OK);
    assert_int_equal(f->puts, 1);
    assert_int_equal(f->dones, 0); /* never inside send, nor before the sink's reply */
    assert_ptr_equal(f->reply.loop, f->loop);
    assert_non_null(f->reply.done);
    assert_string_equal(f->item_body, "Your code is 135791");
    run_reply(f, TH_E_OK);
    assert_int_equal(f->dones, 1);
    assert_int_equal(f->res.err, TH_E_OK);
    assert_true(strncmp(f->res.transaction_id, "ob-", 3) == 0);
    assert_string_equal(f->res.transaction_id, f->item_id); /* the id Okta is given is kept */
    fx_free(f);
}

static void test_write_failed_is_retryable(void **state)
{
    (void)state;
    struct fx *f = fx_new();
    assert_int_equal(send_one(f, &f->arena), TH_E_OK);
    run_reply(f, TH_E_STORE);
    assert_int_equal(f->dones, 1);
    assert_int_equal(f->res.err, TH_E_PROVIDER);
    assert_true(f->res.retryable);
    assert_string_equal(f->res.error, "outbox: store write failed");
    fx_free(f);
}

static void test_refused_by_sink(void **state)
{
    (void)state;
    struct fx *f = fx_new();
    f->put_err = TH_E_OVERLOAD;
    assert_int_equal(send_one(f, &f->arena), TH_E_OVERLOAD);
    assert_int_equal(f->puts, 1);
    assert_int_equal(f->dones, 0);
    fx_free(f);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_kept_then_done_on_loop),
        cmocka_unit_test(test_write_failed_is_retryable),
        cmocka_unit_test(test_refused_by_sink),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
