/*
 * Unit tests: pg, the asynchronous PostgreSQL client, against a real server (TH_TEST_PG_URL;
 * skipped without it). Every callback is counted and the totals asserted exactly.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/util.h"
#include "loop/loop.h"
#include "pg/pg.h"

static const struct th_pg_stmt stmts[] = {
    {"plus1", "SELECT $1::int + 1", 1},
    {"sleep", "SELECT pg_sleep($1::float8), 7", 1},
    {"doomed", "SELECT pg_sleep($1::float8), 8 /* doomed */", 1},
    {"tell", "SELECT pg_notify('th_test', $1), 5", 1},
    {"kill",
     "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity WHERE "
     "application_name = 'telehook' AND pid <> pg_backend_pid() AND query LIKE "
     "'%doomed */'",
     0},
};

struct call {
    int n; /* callbacks: must end at exactly 1 */
    th_err err;
    int value;
    char param[16];
    const char *params[1];
    struct th_pg_query q;
};

static void on_done(void *ud, const struct th_pg_result *res)
{
    struct call *c = ud;
    c->n++;
    c->err = res->err;
    if (res->err == TH_E_OK && th_pg_nrows(res->rows) == 1) {
        const char *v = th_pg_value(res->rows, 0, th_pg_value(res->rows, 0, 1) ? 1 : 0);
        c->value = v ? atoi(v) : -1;
    }
}

/*
 * A loop runs once per test (stopping it disarms its timers): the test's phases are steps taken
 * from a timer tick, each when the previous one's callbacks have all come.
 */
struct run {
    struct th_loop *loop;
    struct th_timer tick;
    struct th_pg *pg, *admin;
    struct call *calls;
    int phase;
    int64_t give_up_us, t0;
    bool (*step)(struct run *r); /* true: the test is over */
};

static void on_tick(void *ud)
{
    struct run *r = ud;
    if (r->step(r) || th_mono_us() > r->give_up_us) {
        th_loop_stop(r->loop);
        return;
    }
    th_loop_timer_set(r->loop, &r->tick, th_mono_us() + 2000, on_tick, r);
}

static void run(struct run *r, int ms)
{
    r->give_up_us = th_mono_us() + (int64_t)ms * 1000;
    th_loop_timer_set(r->loop, &r->tick, th_mono_us() + 1000, on_tick, r);
    th_loop_run(r->loop);
}

static bool all_back(const struct call *c, int n)
{
    for (int i = 0; i < n; i++)
        if (c[i].n == 0)
            return false;
    return true;
}

static void exec_call(struct th_pg *pg, struct call *c, const char *stmt, const char *param,
                      int deadline_ms)
{
    memset(c, 0, sizeof *c);
    c->value = -1;
    snprintf(c->param, sizeof c->param, "%s", param ? param : "");
    c->params[0] = c->param;
    c->q.stmt = stmt;
    c->q.nparams = param ? 1 : 0;
    c->q.params = c->params;
    c->q.deadline_us = th_mono_us() + (int64_t)deadline_ms * 1000;
    c->q.done = on_done;
    c->q.ud = c;
    th_pg_exec(pg, &c->q);
}

static const char *url(void)
{
    return getenv("TH_TEST_PG_URL");
}

static struct th_pg *pool(struct th_loop *loop, const char *conninfo, int n)
{
    struct th_pg_options o = {.conninfo = conninfo,
                              .connections = n,
                              .stmts = stmts,
                              .nstmts = 5,
                              .statement_timeout_ms = 5000};
    struct th_pg *pg = NULL;
    assert_int_equal(th_pg_new(loop, &o, &pg), TH_E_OK);
    return pg;
}

static bool step_one(struct run *r)
{
    return all_back(r->calls, 1);
}

static void test_round_trip(void **state)
{
    if (!url())
        skip();
    struct th_loop *loop;
    assert_int_equal(th_loop_new(&loop), TH_E_OK);
    struct th_pg *pg = pool(loop, url(), 2);
    struct call c;
    exec_call(pg, &c, "plus1", "41", 2000);
    assert_int_equal(c.n, 0); /* never called back from inside th_pg_exec */
    struct run r = {.loop = loop, .calls = &c, .step = step_one};
    run(&r, 3000);
    assert_int_equal(c.n, 1);
    assert_int_equal(c.err, TH_E_OK);
    assert_int_equal(c.value, 42);
    assert_int_equal(th_pg_statements(pg), 1);
    th_pg_free(pg);
    th_loop_free(loop);
}

enum { MANY = 200 };

static bool step_many(struct run *r)
{
    return all_back(r->calls, MANY);
}

static void test_many_in_flight(void **state)
{
    if (!url())
        skip();
    struct th_loop *loop;
    assert_int_equal(th_loop_new(&loop), TH_E_OK);
    struct th_pg *pg = pool(loop, url(), 4);
    struct call *c = calloc(MANY, sizeof *c);
    for (int i = 0; i < MANY; i++) {
        char p[16];
        snprintf(p, sizeof p, "%d", i);
        exec_call(pg, &c[i], "plus1", p, 5000);
    }
    struct run r = {.loop = loop, .calls = c, .step = step_many};
    run(&r, 6000);
    for (int i = 0; i < MANY; i++) {
        assert_int_equal(c[i].n, 1);
        assert_int_equal(c[i].err, TH_E_OK);
        assert_int_equal(c[i].value, i + 1);
    }
    assert_int_equal(th_pg_statements(pg), MANY);
    th_pg_free(pg);
    for (int i = 0; i < MANY; i++)
        assert_int_equal(c[i].n, 1); /* freeing calls nothing back twice */
    free(c);
    th_loop_free(loop);
}

static bool step_deadline(struct run *r)
{
    struct call *c = r->calls;
    if (r->phase == 0 && all_back(c, 2)) {
        r->phase = 1;
        r->t0 = th_mono_us() - r->t0;                /* how long the two took */
        exec_call(r->pg, &c[2], "plus1", "2", 3000); /* the dropped connection comes back */
    }
    return r->phase == 1 && c[2].n > 0;
}

static void test_deadline_calls_back_once(void **state)
{
    if (!url())
        skip();
    struct th_loop *loop;
    assert_int_equal(th_loop_new(&loop), TH_E_OK);
    struct th_pg *pg = pool(loop, url(), 1);
    struct call c[3];
    struct run r = {.loop = loop, .pg = pg, .calls = c, .step = step_deadline};
    r.t0 = th_mono_us();
    exec_call(pg, &c[0], "sleep", "2", 150); /* sent, then its deadline passes */
    exec_call(pg, &c[1], "plus1", "1", 100); /* queued behind it: its deadline passes too */
    run(&r, 5000);
    assert_int_equal(c[0].n, 1);
    assert_int_equal(c[0].err, TH_E_TIMEOUT);
    assert_int_equal(c[1].n, 1);
    assert_int_equal(c[1].err, TH_E_TIMEOUT);
    assert_true(r.t0 < 1000000); /* the 2 s sleep was not waited for */
    assert_int_equal(c[2].n, 1);
    assert_int_equal(c[2].err, TH_E_OK);
    assert_int_equal(c[2].value, 3);
    assert_int_equal(c[0].n, 1);
    th_pg_free(pg);
    th_loop_free(loop);
}

static bool step_refused(struct run *r)
{
    struct call *c = r->calls;
    if (r->phase == 0 && c[0].n) {
        r->phase = 1;
        r->t0 = th_mono_us();
        /* every connection backing off: the next one fails at once, still through the loop */
        exec_call(r->pg, &c[1], "plus1", "1", 2000);
        c[2].n = c[1].n; /* what th_pg_exec itself called back: must stay 0 */
        c[2].err = TH_E_OK;
        return false;
    }
    if (r->phase == 1 && c[1].n) {
        r->t0 = th_mono_us() - r->t0;
        return true;
    }
    return false;
}

static void test_refused_is_an_error(void **state)
{
    struct th_loop *loop;
    assert_int_equal(th_loop_new(&loop), TH_E_OK);
    /* port 1 on loopback: nothing listens, the connection is refused */
    struct th_pg *pg = pool(loop, "postgresql://postgres@127.0.0.1:1/postgres", 2);
    struct call c[3];
    memset(c, 0, sizeof c);
    exec_call(pg, &c[0], "plus1", "1", 2000);
    struct run r = {.loop = loop, .pg = pg, .calls = c, .step = step_refused};
    run(&r, 4000);
    assert_int_equal(c[0].n, 1);
    assert_int_equal(c[0].err, TH_E_IO);
    assert_int_equal(c[2].n, 0);
    assert_int_equal(c[1].n, 1);
    assert_int_equal(c[1].err, TH_E_IO);
    assert_true(r.t0 < 500000);
    assert_int_equal(th_pg_connected(pg), 0);
    th_pg_free(pg);
    th_loop_free(loop);
}

/* The server ends our connection under a query (as when it is restarted): the query gets an
 * error, once, and the pool reconnects by itself. */
static bool step_lost(struct run *r)
{
    struct call *c = r->calls;
    switch (r->phase) {
    case 0: /* both pools up: a long query, then the admin ends its backend */
        if (th_pg_connected(r->pg) < 1 || th_pg_connected(r->admin) < 1)
            return false;
        exec_call(r->pg, &c[0], "doomed", "3", 4000);
        r->phase = 1;
        r->t0 = th_mono_us();
        return false;
    case 1:
        if (th_mono_us() - r->t0 < 100000) /* let the sleep reach the server */
            return false;
        exec_call(r->admin, &c[1], "kill", NULL, 3000);
        r->phase = 2;
        return false;
    case 2:
        if (!all_back(c, 2))
            return false;
        r->phase = 3;
        return false;
    case 3:
        if (th_pg_connected(r->pg) < 1)
            return false;
        exec_call(r->pg, &c[2], "plus1", "9", 2000);
        r->phase = 4;
        return false;
    default:
        return c[2].n > 0;
    }
}

static void test_connection_lost_then_back(void **state)
{
    if (!url())
        skip();
    struct th_loop *loop;
    assert_int_equal(th_loop_new(&loop), TH_E_OK);
    struct th_pg *pg = pool(loop, url(), 1);
    struct th_pg *admin = pool(loop, url(), 1);
    struct call c[3];
    memset(c, 0, sizeof c);
    struct run r = {.loop = loop, .pg = pg, .admin = admin, .calls = c, .step = step_lost};
    run(&r, 8000);
    assert_int_equal(r.phase, 4);
    assert_int_equal(c[1].n, 1);
    assert_int_equal(c[1].err, TH_E_OK);
    assert_int_equal(c[1].value, 1); /* one backend terminated: ours */
    assert_int_equal(c[0].n, 1);
    assert_int_equal(c[0].err, TH_E_IO);
    assert_int_equal(c[2].n, 1);
    assert_int_equal(c[2].err, TH_E_OK);
    assert_int_equal(c[2].value, 10);
    th_pg_free(pg);
    th_pg_free(admin);
    assert_int_equal(c[0].n, 1);
    th_loop_free(loop);
}

/* LISTEN: a notification sent on one connection reaches the pool's listener, once. */
struct heard {
    int n;
    char payload[32];
};

static void on_heard(void *ud, const char *payload)
{
    struct heard *h = ud;
    h->n++;
    snprintf(h->payload, sizeof h->payload, "%s", payload);
}

struct listen_run {
    struct run r;
    struct heard heard;
    struct th_pg *talker;
    struct call c;
};

static bool step_listen(struct run *r)
{
    struct listen_run *l = (struct listen_run *)r;
    if (r->phase == 0) { /* tell once the talker is up and the listener's LISTEN is in */
        if (th_pg_connected(l->talker) < 1 || !th_pg_listening(l->talker))
            return false;
        exec_call(l->talker, &l->c, "tell", "hello", 2000);
        r->phase = 1;
        return false;
    }
    return l->c.n > 0 && l->heard.n > 0;
}

static void test_listen_notify(void **state)
{
    if (!url())
        skip();
    struct th_loop *loop;
    assert_int_equal(th_loop_new(&loop), TH_E_OK);
    struct listen_run l = {.r = {.loop = loop, .step = step_listen}};
    struct th_pg_options o = {.conninfo = url(),
                              .connections = 1,
                              .stmts = stmts,
                              .nstmts = 5,
                              .listen = "th_test",
                              .notify = on_heard,
                              .notify_ud = &l.heard};
    struct th_pg *pg = NULL;
    assert_int_equal(th_pg_new(loop, &o, &pg), TH_E_OK);
    l.talker = pg; /* the pool's own query connection tells its own listener */
    l.r.t0 = th_mono_us();
    run(&l.r, 4000);
    assert_int_equal(l.c.n, 1);
    assert_int_equal(l.c.err, TH_E_OK);
    assert_int_equal(l.heard.n, 1);
    assert_string_equal(l.heard.payload, "hello");
    assert_int_equal(th_pg_connected(pg), 1); /* the listener is not counted: it takes no query */
    th_pg_free(pg);
    th_loop_free(loop);
}

/* Freeing the pool calls every query still owed back, once, with TH_E_BUSY. */
static void test_free_calls_back_owed(void **state)
{
    if (!url())
        skip();
    struct th_loop *loop;
    assert_int_equal(th_loop_new(&loop), TH_E_OK);
    struct th_pg *pg = pool(loop, url(), 1);
    struct call c[2];
    exec_call(pg, &c[0], "plus1", "1", 2000);
    exec_call(pg, &c[1], "plus1", "2", 2000);
    th_pg_free(pg);
    assert_int_equal(c[0].n, 1);
    assert_int_equal(c[0].err, TH_E_BUSY);
    assert_int_equal(c[1].n, 1);
    assert_int_equal(c[1].err, TH_E_BUSY);
    th_loop_free(loop);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_round_trip),
        cmocka_unit_test(test_many_in_flight),
        cmocka_unit_test(test_deadline_calls_back_once),
        cmocka_unit_test(test_refused_is_an_error),
        cmocka_unit_test(test_connection_lost_then_back),
        cmocka_unit_test(test_free_calls_back_owed),
        cmocka_unit_test(test_listen_notify),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
