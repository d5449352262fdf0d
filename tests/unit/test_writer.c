/* Unit tests: the store writer thread (batching, completions, bounded queue, drain on stop). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <pthread.h>
#include <sqlite3.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "common/util.h"
#include "loop/loop.h"
#include "store/writer.h"

#include "tmpdir.h"

#define dir tmpdir
static char path[600];

static struct th_store *open_db(const char *name)
{
    snprintf(path, sizeof path, "%s/%s", dir, name);
    struct th_store *st = NULL;
    char err[256];
    assert_int_equal(th_store_open(path, &st, err, sizeof err), TH_E_OK);
    return st;
}

static int count_rows(const char *table)
{
    sqlite3 *db;
    assert_int_equal(sqlite3_open(path, &db), SQLITE_OK);
    char q[128];
    snprintf(q, sizeof q, "SELECT count(*) FROM %s", table);
    sqlite3_stmt *s;
    assert_int_equal(sqlite3_prepare_v2(db, q, -1, &s, NULL), SQLITE_OK);
    assert_int_equal(sqlite3_step(s), SQLITE_ROW);
    int n = sqlite3_column_int(s, 0);
    sqlite3_finalize(s);
    sqlite3_close(db);
    return n;
}

struct counts {
    atomic_int ok, failed;
};

static void on_done(void *ud, th_err result)
{
    struct counts *c = ud;
    atomic_fetch_add(result == TH_E_OK ? &c->ok : &c->failed, 1);
}

struct producer {
    struct th_writer *w;
    struct counts *c;
    int base;
};

static void *produce(void *arg)
{
    struct producer *p = arg;
    for (int i = 0; i < 500; i++) {
        char id[32], req[32];
        snprintf(id, sizeof id, "ob-%d", p->base + i);
        snprintf(req, sizeof req, "r-%d", p->base + i);
        struct th_outbox_row o = {id, 1, req, "+12015550123", "sms", "en", "text", ""};
        struct th_delivery_row d = {req,          "ev",  1,    "",         "+1201*****23",
                                    "US",         "sms", "en", "template", "outbox",
                                    "SUCCESSFUL", id,    "",   5,          1,
                                    "00u1",       "",    "",   "en-us",    ""};
        /* strings live on this stack only for the call: the writer must copy them */
        if (th_writer_outbox(p->w, &o, on_done, p->c) != TH_E_OK ||
            th_writer_delivery(p->w, &d) != TH_E_OK)
            return (void *)1;
    }
    return NULL;
}

static void test_many_from_two_threads(void **state)
{
    (void)state;
    struct th_writer *w;
    assert_int_equal(th_writer_start(open_db("many.db"), 100000, &w), TH_E_OK);
    struct counts c;
    atomic_init(&c.ok, 0);
    atomic_init(&c.failed, 0);
    struct producer p[2] = {{w, &c, 0}, {w, &c, 10000}};
    pthread_t t[2];
    for (int i = 0; i < 2; i++)
        pthread_create(&t[i], NULL, produce, &p[i]);
    for (int i = 0; i < 2; i++) {
        void *r;
        pthread_join(t[i], &r);
        assert_null(r);
    }
    th_writer_stop(w); /* drains everything accepted */
    assert_int_equal(atomic_load(&c.ok), 1000);
    assert_int_equal(atomic_load(&c.failed), 0);
    assert_int_equal(count_rows("outbox"), 1000);
    assert_int_equal(count_rows("deliveries"), 1000);
}

static void test_duplicate_fails_alone(void **state)
{
    (void)state;
    struct th_writer *w;
    assert_int_equal(th_writer_start(open_db("dup.db"), 100, &w), TH_E_OK);
    struct counts c;
    atomic_init(&c.ok, 0);
    atomic_init(&c.failed, 0);
    struct th_outbox_row o = {"same", 1, "r", "+1", "sms", "en", "x", ""};
    struct th_outbox_row o2 = {"other", 1, "r", "+1", "sms", "en", "x", ""};
    assert_int_equal(th_writer_outbox(w, &o, on_done, &c), TH_E_OK);
    assert_int_equal(th_writer_outbox(w, &o, on_done, &c), TH_E_OK);
    assert_int_equal(th_writer_outbox(w, &o2, on_done, &c), TH_E_OK);
    th_writer_stop(w);
    assert_int_equal(atomic_load(&c.ok), 2);
    assert_int_equal(atomic_load(&c.failed), 1);
    assert_int_equal(count_rows("outbox"), 2);
}

/* Holds the writer thread inside a completion until released: makes "queue full" deterministic. */
struct gate {
    pthread_mutex_t mu;
    pthread_cond_t cv;
    bool entered, open;
};

static void gate_done(void *ud, th_err result)
{
    struct gate *g = ud;
    (void)result;
    pthread_mutex_lock(&g->mu);
    g->entered = true;
    pthread_cond_broadcast(&g->cv);
    while (!g->open)
        pthread_cond_wait(&g->cv, &g->mu);
    pthread_mutex_unlock(&g->mu);
}

static void test_queue_full_and_stats(void **state)
{
    (void)state;
    struct th_writer *w;
    assert_int_equal(th_writer_start(open_db("full.db"), 2, &w), TH_E_OK);
    struct gate g = {PTHREAD_MUTEX_INITIALIZER, PTHREAD_COND_INITIALIZER, false, false};
    struct th_outbox_row o = {"g", 1, "r", "+1", "sms", "en", "x", ""};
    assert_int_equal(th_writer_outbox(w, &o, gate_done, &g), TH_E_OK);
    pthread_mutex_lock(&g.mu);
    while (!g.entered)
        pthread_cond_wait(&g.cv, &g.mu);
    pthread_mutex_unlock(&g.mu);
    /* the writer is held: two items fill the queue, the third is refused */
    struct th_delivery_row d = {"r-a",   "", 1,  "", "", "", "", "", "", "",
                                "ERROR", "", "", 1,  0,  "", "", "", "", ""};
    assert_int_equal(th_writer_delivery(w, &d), TH_E_OK);
    d.request_id = "r-b";
    assert_int_equal(th_writer_delivery(w, &d), TH_E_OK);
    d.request_id = "r-c";
    assert_int_equal(th_writer_delivery(w, &d), TH_E_OVERLOAD);
    struct th_writer_stats s;
    th_writer_stats(w, &s);
    assert_int_equal(s.queued, 2);
    assert_int_equal(s.rejected_full, 1);
    pthread_mutex_lock(&g.mu);
    g.open = true;
    pthread_cond_broadcast(&g.cv);
    pthread_mutex_unlock(&g.mu);
    th_writer_stop(w);
    assert_int_equal(count_rows("deliveries"), 2);
    assert_int_equal(count_rows("outbox"), 1);
}

/* ---- completing on a loop (th_writer_*_on) ---- */

struct on_loop {
    struct th_loop *loop;
    pthread_t loop_thread;
    atomic_int ok, failed, lost, wrong_thread;
    int expect;
};

static void on_loop_done(void *ud, th_err result)
{
    struct on_loop *c = ud;
    if (!pthread_equal(pthread_self(), c->loop_thread))
        atomic_fetch_add(&c->wrong_thread, 1);
    atomic_fetch_add(result == TH_E_OK ? &c->ok : &c->failed, 1);
    if (atomic_load(&c->ok) + atomic_load(&c->failed) == c->expect)
        th_loop_stop(c->loop);
}

static void on_loop_lost(void *ud)
{
    struct on_loop *c = ud;
    if (pthread_equal(pthread_self(), c->loop_thread)) /* the writer's thread, not the loop's */
        atomic_fetch_add(&c->wrong_thread, 1);
    atomic_fetch_add(&c->lost, 1);
}

static void stop_loop(void *ud)
{
    th_loop_stop(ud);
}

static struct th_dlq_row dlq_row(const char *id)
{
    return (struct th_dlq_row){.id = id,
                               .created_ms = 1,
                               .request_id = "r",
                               .event_id = "ev",
                               .phone_masked = "+1201*****23",
                               .country = "US",
                               .channel = "sms",
                               .language = "en",
                               .outcome = "FAILED",
                               .errors = "x",
                               .attempts = 1,
                               .key_id = ""};
}

static void on_loop_init(struct on_loop *c, int expect)
{
    *c = (struct on_loop){.expect = expect, .loop_thread = pthread_self()};
    atomic_init(&c->ok, 0);
    atomic_init(&c->failed, 0);
    atomic_init(&c->lost, 0);
    atomic_init(&c->wrong_thread, 0);
    assert_int_equal(th_loop_new(&c->loop), TH_E_OK);
}

/* Each item's result arrives once, on the caller's loop, with its result; nothing is lost. */
static void test_reply_on_loop(void **state)
{
    (void)state;
    struct on_loop c;
    on_loop_init(&c, 3);
    struct th_writer *w;
    assert_int_equal(th_writer_start(open_db("onloop.db"), 100, &w), TH_E_OK);
    struct th_loop_reply reply = {c.loop, on_loop_done, on_loop_lost, &c};
    struct th_dlq_row d = dlq_row("dlq-1");
    struct th_outbox_row o = {"ob-1", 1, "r", "+1", "sms", "en", "x", ""};
    assert_int_equal(th_writer_dlq_on(w, &d, &reply), TH_E_OK);
    assert_int_equal(th_writer_dlq_on(w, &d, &reply), TH_E_OK); /* the same id: fails */
    assert_int_equal(th_writer_outbox_on(w, &o, &reply), TH_E_OK);
    struct th_timer bound = {0};
    th_loop_timer_set(c.loop, &bound, th_mono_us() + 5 * 1000000, stop_loop, c.loop);
    th_loop_run(c.loop);
    th_writer_stop(w);
    assert_int_equal(atomic_load(&c.ok), 2);
    assert_int_equal(atomic_load(&c.failed), 1);
    assert_int_equal(atomic_load(&c.lost), 0);
    assert_int_equal(atomic_load(&c.wrong_thread), 0);
    assert_int_equal(count_rows("dlq"), 1);
    th_loop_free(c.loop);
}

/* The caller's loop has finished (shutdown): lost runs once, on the writer thread; done never,
 * so the caller frees its object instead of leaking it. */
static void test_reply_lost_when_loop_finished(void **state)
{
    (void)state;
    struct on_loop c;
    on_loop_init(&c, 2);
    th_loop_stop(c.loop);
    th_loop_run(c.loop); /* finished */
    struct th_writer *w;
    assert_int_equal(th_writer_start(open_db("lost.db"), 100, &w), TH_E_OK);
    struct th_loop_reply reply = {c.loop, on_loop_done, on_loop_lost, &c};
    struct th_dlq_row d = dlq_row("dlq-2");
    struct th_outbox_row o = {"ob-2", 1, "r", "+1", "sms", "en", "x", ""};
    assert_int_equal(th_writer_dlq_on(w, &d, &reply), TH_E_OK);
    assert_int_equal(th_writer_outbox_on(w, &o, &reply), TH_E_OK);
    th_writer_stop(w); /* drains: both written, both completions lost */
    assert_int_equal(atomic_load(&c.lost), 2);
    assert_int_equal(atomic_load(&c.ok) + atomic_load(&c.failed), 0);
    assert_int_equal(atomic_load(&c.wrong_thread), 0);
    assert_int_equal(count_rows("dlq"), 1);
    th_loop_free(c.loop);
    assert_int_equal(atomic_load(&c.ok) + atomic_load(&c.failed), 0);
}

/* Stats until dlq_depth == want, for at most bound_ms; the depth last seen. */
static long long depth_within(struct th_writer *w, long long want, int bound_ms)
{
    struct th_writer_stats s = {0};
    for (int i = 0; i <= bound_ms / 5; i++) {
        th_writer_stats(w, &s);
        if (s.dlq_depth == want)
            break;
        nanosleep(&(struct timespec){.tv_nsec = 5000000L}, NULL);
    }
    return s.dlq_depth;
}

/* The DLQ depth: counted at start, our own entries added at once, another connection's deletes
 * seen only after the refresh (never a count per stats call). */
static void test_dlq_depth(void **state)
{
    (void)state;
    struct th_store *other = open_db("depth.db");
    struct th_dlq_row a = dlq_row("dlq-a"), b = dlq_row("dlq-b");
    assert_int_equal(th_store_dlq_insert(other, &a), TH_E_OK);
    assert_int_equal(th_store_dlq_insert(other, &b), TH_E_OK);
    struct th_writer *w;
    assert_int_equal(th_writer_start(open_db("depth.db"), 16, &w), TH_E_OK);
    assert_int_equal(depth_within(w, 2, 2000), 2);
    struct counts c = {0};
    struct th_dlq_row mine = dlq_row("dlq-c");
    assert_int_equal(th_writer_dlq(w, &mine, on_done, &c), TH_E_OK);
    for (int i = 0; i < 400 && atomic_load(&c.ok) == 0; i++)
        nanosleep(&(struct timespec){.tv_nsec = 5000000L}, NULL);
    assert_int_equal(atomic_load(&c.ok), 1);
    struct th_writer_stats s;
    th_writer_stats(w, &s);
    assert_int_equal(s.dlq_depth, 3); /* at once, not at the next refresh */
    assert_int_equal(th_store_dlq_delete(other, "dlq-a"), TH_E_OK);
    assert_int_equal(depth_within(w, 2, 200), 3); /* the default refresh (30 s) is not due */
    th_writer_set_dlq_refresh(w, 50);
    assert_int_equal(depth_within(w, 2, 2000), 2);
    th_store_close(other);
    th_writer_stop(w);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_many_from_two_threads),
        cmocka_unit_test(test_duplicate_fails_alone),
        cmocka_unit_test(test_queue_full_and_stats),
        cmocka_unit_test(test_reply_on_loop),
        cmocka_unit_test(test_reply_lost_when_loop_finished),
        cmocka_unit_test(test_dlq_depth),
    };
    return cmocka_run_group_tests(tests, tmpdir_setup, tmpdir_teardown);
}
