/* Unit tests: loop/refresher (one background thread on a schedule: kick, stop, never after). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <stdatomic.h>
#include <time.h>

#include "common/util.h"
#include "loop/refresher.h"

struct counter {
    atomic_int rounds;
    atomic_llong at_us[4]; /* when the first rounds ran */
    int64_t next_ms;       /* what fn returns */
    struct th_refresher *self;
    atomic_int saw_self; /* fn found *out set */
    bool until_stopping; /* a long round, cut short by stop */
};

static int64_t round_fn(void *ud)
{
    struct counter *c = ud;
    int n = atomic_fetch_add(&c->rounds, 1);
    if (n < 4)
        atomic_store(&c->at_us[n], th_mono_us());
    if (c->self)
        atomic_fetch_add(&c->saw_self, 1);
    while (c->until_stopping && !th_refresher_stopping(c->self))
        nanosleep(&(struct timespec){.tv_nsec = 1000000L}, NULL);
    return c->next_ms;
}

static void sleep_ms(int ms)
{
    nanosleep(&(struct timespec){.tv_sec = ms / 1000, .tv_nsec = (ms % 1000) * 1000000L}, NULL);
}

/* Waits (bounded) until rounds >= n; the count then. */
static int rounds_within(struct counter *c, int n, int bound_ms)
{
    for (int i = 0; i < bound_ms && atomic_load(&c->rounds) < n; i++)
        sleep_ms(1);
    return atomic_load(&c->rounds);
}

/* Waiting "until kicked": a kick runs a round at once, each kick one round. */
static void test_kick_runs_at_once(void **state)
{
    (void)state;
    struct counter c = {.next_ms = -1};
    struct th_refresher *r;
    assert_int_equal(th_refresher_start(round_fn, &c, -1, &r), TH_E_OK);
    sleep_ms(50);
    assert_int_equal(atomic_load(&c.rounds), 0); /* nothing scheduled */
    int64_t t0 = th_mono_us();
    th_refresher_kick(r);
    assert_int_equal(rounds_within(&c, 1, 2000), 1);
    assert_true(th_mono_us() - t0 < 1000000);
    sleep_ms(50);
    assert_int_equal(atomic_load(&c.rounds), 1); /* a kick is consumed by its round */
    th_refresher_kick(r);
    assert_int_equal(rounds_within(&c, 2, 2000), 2);
    th_refresher_stop(r);
    assert_int_equal(atomic_load(&c.rounds), 2);
}

/* A kick during a long scheduled wait (an hour) runs the round now. */
static void test_kick_cuts_a_long_wait(void **state)
{
    (void)state;
    struct counter c = {.next_ms = 3600 * 1000};
    struct th_refresher *r;
    assert_int_equal(th_refresher_start(round_fn, &c, 0, &r), TH_E_OK);
    assert_int_equal(rounds_within(&c, 1, 2000), 1);
    th_refresher_kick(r);
    assert_int_equal(rounds_within(&c, 2, 2000), 2);
    th_refresher_stop(r);
}

/* The delay fn returns is kept: the next round is not earlier. */
static void test_delay_is_kept(void **state)
{
    (void)state;
    struct counter c = {.next_ms = 100};
    struct th_refresher *r;
    assert_int_equal(th_refresher_start(round_fn, &c, 0, &r), TH_E_OK);
    assert_int_equal(rounds_within(&c, 2, 3000), 2);
    th_refresher_stop(r);
    int64_t gap = atomic_load(&c.at_us[1]) - atomic_load(&c.at_us[0]);
    assert_true(gap >= 100000);
    assert_true(gap < 2000000);
}

/* Stop during a long wait returns promptly, with no further round. */
static void test_stop_during_a_long_wait(void **state)
{
    (void)state;
    struct counter c = {.next_ms = 3600 * 1000};
    struct th_refresher *r;
    assert_int_equal(th_refresher_start(round_fn, &c, 0, &r), TH_E_OK);
    assert_int_equal(rounds_within(&c, 1, 2000), 1);
    int64_t t0 = th_mono_us();
    th_refresher_stop(r);
    assert_true(th_mono_us() - t0 < 500000);
    assert_int_equal(atomic_load(&c.rounds), 1);
    /* and stopped before its first round: fn never runs */
    struct counter late = {.next_ms = -1};
    assert_int_equal(th_refresher_start(round_fn, &late, 3600 * 1000, &r), TH_E_OK);
    th_refresher_stop(r);
    assert_int_equal(atomic_load(&late.rounds), 0);
}

/* fn never runs once stop returned, even when it asks for no wait at all; a long round sees
 * th_refresher_stopping() and ends (fn reached the refresher through *out, set before it ran). */
static void test_never_after_stop(void **state)
{
    (void)state;
    struct counter c = {.next_ms = 0};
    struct th_refresher *r;
    assert_int_equal(th_refresher_start(round_fn, &c, 0, &r), TH_E_OK);
    assert_true(rounds_within(&c, 50, 2000) >= 50);
    th_refresher_stop(r);
    int after = atomic_load(&c.rounds);
    sleep_ms(50);
    assert_int_equal(atomic_load(&c.rounds), after);

    struct counter slow = {.next_ms = 0, .until_stopping = true};
    assert_int_equal(th_refresher_start(round_fn, &slow, 0, &slow.self), TH_E_OK);
    assert_int_equal(rounds_within(&slow, 1, 2000), 1);
    int64_t t0 = th_mono_us();
    th_refresher_stop(slow.self);
    assert_true(th_mono_us() - t0 < 500000);
    assert_int_equal(atomic_load(&slow.rounds), 1);
    assert_int_equal(atomic_load(&slow.saw_self), 1);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_kick_runs_at_once), cmocka_unit_test(test_kick_cuts_a_long_wait),
        cmocka_unit_test(test_delay_is_kept),     cmocka_unit_test(test_stop_during_a_long_wait),
        cmocka_unit_test(test_never_after_stop),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
