/* Unit tests: loop (timers in order, cancel/re-arm, fds, cross-thread posts, stop). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdlib.h>
#include <unistd.h>

#include <sys/epoll.h>

#include "common/util.h"
#include "loop/loop.h"

struct fired {
    struct th_loop *loop;
    int order[64];
    int n;
    int stop_after;
};

struct tctx {
    struct fired *f;
    int id;
};

static void on_timer(void *ud)
{
    struct tctx *t = ud;
    t->f->order[t->f->n++] = t->id;
    if (t->f->n == t->f->stop_after)
        th_loop_stop(t->f->loop);
}

static void test_timers_fire_in_order(void **state)
{
    (void)state;
    struct th_loop *loop;
    assert_int_equal(th_loop_new(&loop), TH_E_OK);
    struct fired f = {.loop = loop, .stop_after = 20};
    struct th_timer timers[21] = {{0}};
    struct tctx ctx[21];
    int64_t now = th_mono_us();
    /* 21 timers in scrambled order; the one at index 20 is cancelled */
    for (int i = 0; i < 21; i++) {
        ctx[i] = (struct tctx){&f, i};
        int64_t when = now + 1000 + ((i * 7) % 21) * 500;
        th_loop_timer_set(loop, &timers[i], when, on_timer, &ctx[i]);
    }
    th_loop_timer_cancel(loop, &timers[20]);
    assert_false(th_timer_armed(&timers[20]));
    /* re-arming moves a timer: timer 0 now fires last */
    th_loop_timer_set(loop, &timers[0], now + 30000, on_timer, &ctx[0]);
    th_loop_run(loop);
    assert_int_equal(f.n, 20);
    for (int i = 1; i < 20; i++) {
        int a = f.order[i - 1], b = f.order[i];
        int64_t wa = a == 0 ? 30000 : ((a * 7) % 21) * 500;
        int64_t wb = b == 0 ? 30000 : ((b * 7) % 21) * 500;
        assert_true(wa <= wb);
    }
    assert_int_equal(f.order[19], 0);
    for (int i = 0; i < 20; i++)
        assert_int_not_equal(f.order[i], 20);
    th_loop_free(loop);
}

struct poster {
    struct th_loop *loop;
    atomic_int count;
    int per_thread;
};

static void on_post(void *ud)
{
    struct poster *p = ud;
    if (atomic_fetch_add(&p->count, 1) + 1 == 4 * p->per_thread)
        th_loop_stop(p->loop);
}

static void *post_many(void *arg)
{
    struct poster *p = arg;
    for (int i = 0; i < p->per_thread; i++)
        assert_int_equal(th_loop_post(p->loop, on_post, p), TH_E_OK);
    return NULL;
}

static void test_posts_from_threads(void **state)
{
    (void)state;
    struct poster p = {.per_thread = 5000};
    atomic_init(&p.count, 0);
    assert_int_equal(th_loop_new(&p.loop), TH_E_OK);
    pthread_t t[4];
    for (int i = 0; i < 4; i++)
        pthread_create(&t[i], NULL, post_many, &p);
    th_loop_run(p.loop);
    for (int i = 0; i < 4; i++)
        pthread_join(t[i], NULL);
    /* every post ran exactly once (the last ones when the loop finished) */
    assert_int_equal(atomic_load(&p.count), 4 * p.per_thread);
    th_loop_free(p.loop);
}

/* A callback that holds its loop until released: a stuck loop, for the watchdog's probe. */
struct gate {
    pthread_mutex_t mu;
    pthread_cond_t cv;
    bool entered, open;
};

static void hold(void *ud)
{
    struct gate *g = ud;
    pthread_mutex_lock(&g->mu);
    g->entered = true;
    pthread_cond_broadcast(&g->cv);
    while (!g->open)
        pthread_cond_wait(&g->cv, &g->mu);
    pthread_mutex_unlock(&g->mu);
}

static void *run_loop(void *arg)
{
    th_loop_run(arg);
    return NULL;
}

static void wait_answered(struct th_loop *loop)
{
    for (int i = 0; i < 2000 && !th_loop_answered(loop); i++)
        usleep(1000);
    assert_true(th_loop_answered(loop));
}

/* th_loop_ping / th_loop_answered: a running loop answers; a loop stuck in a callback does not,
 * until it is free again. */
static void test_ping_answered_only_by_a_running_loop(void **state)
{
    (void)state;
    struct th_loop *loop;
    assert_int_equal(th_loop_new(&loop), TH_E_OK);
    assert_true(th_loop_answered(loop)); /* nothing owed yet */
    pthread_t t;
    assert_int_equal(pthread_create(&t, NULL, run_loop, loop), 0);
    assert_int_equal(th_loop_ping(loop), TH_E_OK);
    wait_answered(loop);

    struct gate g = {.mu = PTHREAD_MUTEX_INITIALIZER, .cv = PTHREAD_COND_INITIALIZER};
    assert_int_equal(th_loop_post(loop, hold, &g), TH_E_OK);
    pthread_mutex_lock(&g.mu);
    while (!g.entered)
        pthread_cond_wait(&g.cv, &g.mu);
    pthread_mutex_unlock(&g.mu);
    assert_int_equal(th_loop_ping(loop), TH_E_OK);
    usleep(50000);
    assert_false(th_loop_answered(loop)); /* stuck: the probe waits behind the callback */

    pthread_mutex_lock(&g.mu);
    g.open = true;
    pthread_cond_broadcast(&g.cv);
    pthread_mutex_unlock(&g.mu);
    wait_answered(loop);

    th_loop_stop(loop);
    pthread_join(t, NULL);
    th_loop_free(loop);
}

static void test_post_after_free_refused(void **state)
{
    (void)state;
    struct th_loop *loop;
    assert_int_equal(th_loop_new(&loop), TH_E_OK);
    struct poster p = {.loop = loop, .per_thread = 1000};
    atomic_init(&p.count, 0);
    assert_int_equal(th_loop_post(loop, on_post, &p), TH_E_OK);
    th_loop_free(loop); /* runs what was posted */
    assert_int_equal(atomic_load(&p.count), 1);
}

struct io {
    struct th_loop *loop;
    int fds[2];
    int reads;
};

static void on_readable(void *ud, uint32_t events)
{
    struct io *io = ud;
    assert_true(events & EPOLLIN);
    char c;
    assert_int_equal(read(io->fds[0], &c, 1), 1);
    assert_int_equal(c, 'x');
    if (++io->reads == 3) {
        th_loop_del_fd(io->loop, io->fds[0]);
        th_loop_stop(io->loop);
    }
}

static void write_one(void *ud)
{
    struct io *io = ud;
    assert_int_equal(write(io->fds[1], "x", 1), 1);
}

static void test_fd_events(void **state)
{
    (void)state;
    struct io io = {0};
    assert_int_equal(th_loop_new(&io.loop), TH_E_OK);
    assert_int_equal(pipe(io.fds), 0);
    assert_int_equal(th_loop_add_fd(io.loop, io.fds[0], EPOLLIN, on_readable, &io), TH_E_OK);
    struct th_timer t[3] = {{0}};
    for (int i = 0; i < 3; i++)
        th_loop_timer_set(io.loop, &t[i], th_mono_us() + 1000 * (i + 1), write_one, &io);
    th_loop_run(io.loop);
    assert_int_equal(io.reads, 3);
    close(io.fds[0]);
    close(io.fds[1]);
    th_loop_free(io.loop);
}

/* The idle function runs before every wait: after each timer's iteration, and once at the end. */
struct idle_ctx {
    struct th_loop *loop;
    int idles, fired, idles_at_fire[3];
    struct th_timer t;
};

static void idle_fn(void *ud)
{
    ((struct idle_ctx *)ud)->idles++;
}

static void idle_timer(void *ud)
{
    struct idle_ctx *c = ud;
    c->idles_at_fire[c->fired++] = c->idles;
    if (c->fired == 3)
        th_loop_stop(c->loop);
    else
        th_loop_timer_set(c->loop, &c->t, th_mono_us() + 1000, idle_timer, c);
}

static void test_idle_before_each_wait(void **state)
{
    (void)state;
    struct idle_ctx c = {0};
    assert_int_equal(th_loop_new(&c.loop), TH_E_OK);
    th_loop_set_idle(c.loop, idle_fn, &c);
    th_loop_timer_set(c.loop, &c.t, th_mono_us() + 1000, idle_timer, &c);
    th_loop_run(c.loop);
    assert_int_equal(c.fired, 3);
    assert_true(c.idles_at_fire[0] >= 1); /* before the first wait */
    assert_true(c.idles_at_fire[1] > c.idles_at_fire[0]);
    assert_true(c.idles_at_fire[2] > c.idles_at_fire[1]);
    assert_true(c.idles > c.idles_at_fire[2]); /* and once more when the loop ends */
    th_loop_free(c.loop);
}

/* ---- th_loop_call: complete on loop L ---- */

struct callc {
    struct th_loop *loop;
    pthread_t loop_thread;
    atomic_int ran, cancelled, wrong_thread;
    int stop_at; /* stop the loop when this many have run (0: never) */
};

static void call_ran(void *ud)
{
    struct callc *c = ud;
    if (!pthread_equal(pthread_self(), c->loop_thread))
        atomic_fetch_add(&c->wrong_thread, 1);
    if (atomic_fetch_add(&c->ran, 1) + 1 == c->stop_at)
        th_loop_stop(c->loop);
}

static void call_cancelled(void *ud)
{
    atomic_fetch_add(&((struct callc *)ud)->cancelled, 1);
}

struct call_poster {
    struct callc *c;
    struct th_loop_call *calls;
    int n;
};

static void *post_calls(void *arg)
{
    struct call_poster *p = arg;
    for (int i = 0; i < p->n; i++)
        th_loop_call_post(&p->calls[i]);
    return NULL;
}

static void *run_loop_as(void *arg)
{
    struct callc *c = arg;
    c->loop_thread = pthread_self();
    th_loop_run(c->loop);
    return NULL;
}

/* Posted from other threads: each call's fn runs once, on the loop's thread; cancel never. */
static void test_call_runs_on_its_loop(void **state)
{
    (void)state;
    enum { THREADS = 3, PER = 2000 };
    struct callc c = {.stop_at = THREADS * PER};
    atomic_init(&c.ran, 0);
    atomic_init(&c.cancelled, 0);
    atomic_init(&c.wrong_thread, 0);
    assert_int_equal(th_loop_new(&c.loop), TH_E_OK);
    static struct th_loop_call calls[THREADS * PER];
    for (int i = 0; i < THREADS * PER; i++)
        th_loop_call_init(&calls[i], c.loop, call_ran, call_cancelled, &c);
    pthread_t lt, t[THREADS];
    struct call_poster p[THREADS];
    assert_int_equal(pthread_create(&lt, NULL, run_loop_as, &c), 0);
    for (int i = 0; i < THREADS; i++) {
        p[i] = (struct call_poster){&c, &calls[i * PER], PER};
        pthread_create(&t[i], NULL, post_calls, &p[i]);
    }
    for (int i = 0; i < THREADS; i++)
        pthread_join(t[i], NULL);
    pthread_join(lt, NULL);
    assert_int_equal(atomic_load(&c.ran), THREADS * PER);
    assert_int_equal(atomic_load(&c.cancelled), 0);
    assert_int_equal(atomic_load(&c.wrong_thread), 0);
    th_loop_free(c.loop);
}

/* Once the loop has finished, a post runs cancel at once on the posting thread, never fn. */
static void test_call_cancelled_once_the_loop_finished(void **state)
{
    (void)state;
    struct callc c = {0};
    atomic_init(&c.ran, 0);
    atomic_init(&c.cancelled, 0);
    atomic_init(&c.wrong_thread, 0);
    assert_int_equal(th_loop_new(&c.loop), TH_E_OK);
    c.loop_thread = pthread_self();
    struct th_loop_call before, after, quiet;
    th_loop_call_init(&before, c.loop, call_ran, call_cancelled, &c);
    th_loop_call_init(&after, c.loop, call_ran, call_cancelled, &c);
    th_loop_call_init(&quiet, c.loop, call_ran, NULL, &c);
    assert_true(th_loop_call_post(&before)); /* accepted before the end: runs as the loop ends */
    th_loop_stop(c.loop);
    th_loop_run(c.loop);
    assert_int_equal(atomic_load(&c.ran), 1);
    assert_false(th_loop_call_post(&after));
    assert_int_equal(atomic_load(&c.cancelled), 1);
    assert_false(th_loop_call_post(&quiet)); /* no cancel: nothing runs */
    assert_int_equal(th_loop_post(c.loop, call_ran, &c), TH_E_BUSY);
    th_loop_free(c.loop);
    assert_int_equal(atomic_load(&c.ran), 1);
    assert_int_equal(atomic_load(&c.cancelled), 1);
}

/* Withdrawn calls never run: whether still in the mailbox, or in the batch being run. */
struct withdraw_ctx {
    struct callc c;
    struct th_loop_call first, victim, queued_victim, last;
};

static void withdraw_victim(void *ud)
{
    struct withdraw_ctx *w = ud;
    call_ran(&w->c);
    th_loop_call_withdraw(&w->victim); /* taken in the same batch as this call */
}

static void post_then_withdraw(void *ud)
{
    struct withdraw_ctx *w = ud;
    call_ran(&w->c);
    assert_true(th_loop_call_post(&w->queued_victim));
    th_loop_call_withdraw(&w->queued_victim); /* still in the mailbox */
    th_loop_call_withdraw(&w->queued_victim); /* twice: a no-op */
    th_loop_stop(w->c.loop);
}

static void test_call_withdraw(void **state)
{
    (void)state;
    struct withdraw_ctx w = {0};
    atomic_init(&w.c.ran, 0);
    atomic_init(&w.c.cancelled, 0);
    atomic_init(&w.c.wrong_thread, 0);
    assert_int_equal(th_loop_new(&w.c.loop), TH_E_OK);
    w.c.loop_thread = pthread_self();
    struct th_loop_call never = {0};
    th_loop_call_withdraw(&never); /* zero-initialised: a no-op */
    th_loop_call_init(&w.first, w.c.loop, withdraw_victim, call_cancelled, &w);
    th_loop_call_init(&w.victim, w.c.loop, call_ran, call_cancelled, &w.c);
    th_loop_call_init(&w.queued_victim, w.c.loop, call_ran, call_cancelled, &w.c);
    th_loop_call_init(&w.last, w.c.loop, post_then_withdraw, call_cancelled, &w);
    assert_true(th_loop_call_post(&w.first));
    assert_true(th_loop_call_post(&w.victim));
    assert_true(th_loop_call_post(&w.last));
    th_loop_run(w.c.loop);
    assert_int_equal(atomic_load(&w.c.ran), 2); /* first and last; neither victim */
    assert_int_equal(atomic_load(&w.c.cancelled), 0);
    th_loop_call_withdraw(&w.victim); /* after the loop: still a no-op */
    th_loop_free(w.c.loop);
    assert_int_equal(atomic_load(&w.c.ran), 2);
}

/* Posts racing the loop's end: every call gets exactly one of fn and cancel. */
static void test_call_exactly_once_across_shutdown(void **state)
{
    (void)state;
    enum { THREADS = 2, PER = 3000 };
    struct callc c = {0};
    atomic_init(&c.ran, 0);
    atomic_init(&c.cancelled, 0);
    atomic_init(&c.wrong_thread, 0);
    c.stop_at = PER / 2; /* stops while the posters are still posting */
    assert_int_equal(th_loop_new(&c.loop), TH_E_OK);
    static struct th_loop_call calls[THREADS * PER];
    for (int i = 0; i < THREADS * PER; i++)
        th_loop_call_init(&calls[i], c.loop, call_ran, call_cancelled, &c);
    pthread_t lt, t[THREADS];
    struct call_poster p[THREADS];
    assert_int_equal(pthread_create(&lt, NULL, run_loop_as, &c), 0);
    for (int i = 0; i < THREADS; i++) {
        p[i] = (struct call_poster){&c, &calls[i * PER], PER};
        pthread_create(&t[i], NULL, post_calls, &p[i]);
    }
    for (int i = 0; i < THREADS; i++)
        pthread_join(t[i], NULL);
    pthread_join(lt, NULL);
    th_loop_free(c.loop);
    assert_int_equal(atomic_load(&c.ran) + atomic_load(&c.cancelled), THREADS * PER);
    assert_int_equal(atomic_load(&c.wrong_thread), 0);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_timers_fire_in_order),
        cmocka_unit_test(test_posts_from_threads),
        cmocka_unit_test(test_post_after_free_refused),
        cmocka_unit_test(test_fd_events),
        cmocka_unit_test(test_idle_before_each_wait),
        cmocka_unit_test(test_ping_answered_only_by_a_running_loop),
        cmocka_unit_test(test_call_runs_on_its_loop),
        cmocka_unit_test(test_call_cancelled_once_the_loop_finished),
        cmocka_unit_test(test_call_withdraw),
        cmocka_unit_test(test_call_exactly_once_across_shutdown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
