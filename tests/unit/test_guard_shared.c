/*
 * Unit tests: the guard's shared state on a real PostgreSQL (TH_TEST_PG_URL; skipped without
 * it). Two guards with the same secret stand for two nodes; their requests are all in flight
 * at once, so the database's unique keys and row locks are what keeps the counts exact. Every
 * verdict callback is counted and the totals asserted. A fresh secret and a clock some random
 * number of days ahead keep each run's rows apart from earlier runs'.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>
#include <libpq-fe.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <pthread.h>
#include <unistd.h>

#include "common/util.h"
#include "config/config.h"
#include "guard/guard.h"
#include "guard/internal.h"
#include "loop/loop.h"
#include "pg/pg.h"
#include "phone/phone.h"

static char err[512];
static char secret_env[96];
static char url_env[512];
static int64_t now_us; /* the guards' clock: real time, some days ahead */

static int64_t clock_of(void *ud)
{
    return *(const int64_t *)ud;
}

static const char *url(void)
{
    return getenv("TH_TEST_PG_URL");
}

/* A node: every limit off unless extra turns it on; the shared state at conninfo. */
static struct th_guard *node(const char *conninfo, const char *const *extra)
{
    const char *env[32] = {
        "TELEHOOK_GUARD_LIMIT_PHONE=0",
        "TELEHOOK_GUARD_LIMIT_PHONE_DAILY=0",
        "TELEHOOK_GUARD_LIMIT_USER=0",
        "TELEHOOK_GUARD_LIMIT_COUNTRY=0",
        "TELEHOOK_GUARD_BUDGET_CALLING_CODE=0",
        "TELEHOOK_GUARD_LIMIT_GLOBAL=0",
        "TELEHOOK_GUARD_SMS_REFUSE=",
        secret_env,
        url_env,
    };
    snprintf(url_env, sizeof url_env, "TELEHOOK_GUARD_URL=%s", conninfo);
    size_t n = 9;
    for (size_t i = 0; extra && extra[i]; i++)
        env[n++] = extra[i];
    env[n] = NULL;
    struct th_config cfg;
    assert_int_equal(th_config_load(&cfg, NULL, (char **)env, err, sizeof err), TH_E_OK);
    struct th_guard *g = NULL;
    th_err e = th_guard_new(&cfg, &g, err, sizeof err);
    th_config_release(&cfg);
    if (e != TH_E_OK)
        fail_msg("guard: %s", err);
    assert_true(th_guard_shared(g));
    th_guard_set_clock(g, clock_of, &now_us);
    return g;
}

struct ask {
    struct th_guard *g;
    struct th_phone ph;
    char event[32], otp[16];
    struct th_guard_ask a;
    int n; /* verdicts: must end at exactly 1 */
    struct th_guard_verdict v;
    int woken;
};

static void on_verdict(void *ud, struct th_guard_verdict *v)
{
    struct ask *k = ud;
    k->n++;
    k->v = *v;
}

static void on_woken(void *ud)
{
    struct ask *k = ud;
    k->woken++;
}

static void ask(struct th_loop *loop, struct ask *k, struct th_guard *g, const char *e164,
                const char *event, const char *otp, const char *user)
{
    memset(k, 0, sizeof *k);
    k->g = g;
    assert_int_equal(th_phone_parse(e164, strlen(e164), NULL, &k->ph), TH_E_OK);
    snprintf(k->event, sizeof k->event, "%s", event ? event : "");
    snprintf(k->otp, sizeof k->otp, "%s", otp);
    k->a = (struct th_guard_ask){.event_id = k->event,
                                 .otp = k->otp,
                                 .ph = &k->ph,
                                 .ch = TH_CHANNEL_SMS,
                                 .user_id = user,
                                 .deadline_us = th_mono_us() + 3000000};
    if (th_guard_decide(g, loop, &k->a, &k->v, on_verdict, k))
        k->n = 100; /* decided at once: no shared state asked (asserted against) */
}

struct run {
    struct th_loop *loop;
    struct th_timer tick;
    int64_t give_up_us;
    bool (*step)(struct run *r);
    struct ask *asks;
    int nasks, phase;
    int64_t t0;
};

static bool all_back(const struct ask *k, int n)
{
    for (int i = 0; i < n; i++)
        if (!k[i].n)
            return false;
    return true;
}

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

static bool step_all_back(struct run *r)
{
    return all_back(r->asks, r->nasks);
}

/* Every test, with or without a database: the nodes' shared secret and their clock. */
static int setup(void **state)
{
    unsigned seed = (unsigned)time(NULL) ^ (unsigned)th_mono_us();
    srand(seed);
    snprintf(secret_env, sizeof secret_env, "TELEHOOK_GUARD_SECRET=test-%u-%d", seed, rand());
    /* 1000 to 30000 days ahead: the budgets' (code, day) rows are this run's own */
    now_us = th_wall_ms() * 1000 + (int64_t)(1000 + rand() % 29000) * 86400 * INT64_C(1000000);
    return 0;
}

enum { DUP_N = 10, DUP_ROUNDS = 8 };

/* The race itself, once both nodes' pools are connected (a warm-up ask each opens them: on a
 * slow machine — valgrind — the first asks would otherwise fall back to the nodes' memory). */
struct dup_run {
    struct run r;
    struct th_guard *a, *b;
    struct ask warm[2];
    struct ask *k;
    bool started;
    uint64_t decisions0, statements0, fallbacks0;
};

static bool step_dup(struct run *r)
{
    struct dup_run *d = (struct dup_run *)r;
    if (d->started)
        return all_back(r->asks, r->nasks);
    struct th_guard_db_stats sa, sb;
    th_guard_db_stats(d->a, &sa);
    th_guard_db_stats(d->b, &sb);
    if (!d->warm[0].n || !d->warm[1].n || sa.connections < 1 || sb.connections < 1)
        return false;
    for (int w = 0; w < 2; w++)
        th_guard_dedupe_release(d->warm[w].g, d->warm[w].v.ticket);
    d->decisions0 = sa.decisions + sb.decisions;
    d->statements0 = sa.statements + sb.statements;
    d->fallbacks0 = sa.fallbacks + sb.fallbacks;
    for (int i = 0; i < DUP_N * DUP_ROUNDS; i++) {
        char evt[24], otp[16];
        snprintf(evt, sizeof evt, "evt-dup-%d", i / DUP_N);
        snprintf(otp, sizeof otp, "%06d", 123400 + i / DUP_N);
        ask(r->loop, &d->k[i], i % 2 ? d->b : d->a, "+12065550100", evt, otp, NULL);
    }
    d->started = true;
    return false;
}

/* The same eventId at two nodes at once: exactly one FIRST, the others PENDING. The race is
 * narrow (between a node's look and its insert), so it is run several rounds. */
static void test_duplicate_decided_once(void **state)
{
    if (!url())
        skip();
    setup(state);
    struct th_loop *loop;
    assert_int_equal(th_loop_new(&loop), TH_E_OK);
    struct th_guard *a = node(url(), NULL), *b = node(url(), NULL);
    enum { N = DUP_N, ROUNDS = DUP_ROUNDS };
    struct ask k[N * ROUNDS];
    struct dup_run d = {.r = {.loop = loop, .step = step_dup, .asks = k, .nasks = N * ROUNDS},
                        .a = a,
                        .b = b,
                        .k = k};
    ask(loop, &d.warm[0], a, "+12065550199", "evt-warm-a", "999001", NULL);
    ask(loop, &d.warm[1], b, "+12065550198", "evt-warm-b", "999002", NULL);
    run(&d.r, 15000);
    assert_true(d.started);
    for (int round = 0; round < ROUNDS; round++) {
        int first = 0, pending = 0;
        for (int i = round * N; i < (round + 1) * N; i++) {
            assert_int_equal(k[i].n, 1);
            first += k[i].v.dedupe == TH_DEDUPE_FIRST;
            pending += k[i].v.dedupe == TH_DEDUPE_PENDING;
            th_guard_dedupe_release(k[i].g, k[i].v.ticket);
        }
        assert_int_equal(first, 1);
        assert_int_equal(pending, N - 1);
    }
    struct th_guard_db_stats sa, sb;
    th_guard_db_stats(a, &sa);
    th_guard_db_stats(b, &sb);
    /* one round trip per request (the releases above are not sent: the loop has stopped); the
     * warm-ups' answers may be stored meanwhile: counted before, and only decisions after */
    assert_int_equal(sa.decisions + sb.decisions - d.decisions0, N * ROUNDS);
    assert_true(sa.statements + sb.statements - d.statements0 >= N * ROUNDS);
    assert_int_equal(sa.fallbacks + sb.fallbacks - d.fallbacks0, 0);
    th_loop_free(loop);
    th_guard_free(a);
    th_guard_free(b);
}

/* A duplicate waits for the first's answer, stored by the first's node after it answered. */
static bool step_wait(struct run *r)
{
    struct ask *k = r->asks;
    switch (r->phase) {
    case 0: /* the first decided: the duplicate asks the other node */
        if (!k[0].n)
            return false;
        ask(r->loop, &k[1], k[1].g, "+12065550101", "evt-wait", "654321", NULL);
        r->phase = 1;
        return false;
    case 1: /* the duplicate pends: it waits; the first answers */
        if (!k[1].n)
            return false;
        assert_int_equal(k[1].v.dedupe, TH_DEDUPE_PENDING);
        assert_int_equal(th_guard_dedupe_wait(k[1].g, k[1].v.ticket, r->loop, on_woken, &k[1]),
                         TH_E_OK);
        r->t0 = th_mono_us();
        r->phase = 5;
        return false;
    case 5: /* the waiter's listener is up by then (it connected with the decision's) */
        if (th_mono_us() - r->t0 < 1000000)
            return false;
        assert_int_equal(k[1].woken, 0);
        th_guard_dedupe_finish(k[0].g, k[0].v.ticket, 200, "{\"answer\":1}", 12);
        r->phase = 2;
        return false;
    case 2:
        if (!k[1].woken)
            return false;
        r->phase = 3;
        /* and a third request, later, under the same code: DONE at once from the database */
        ask(r->loop, &k[2], k[1].g, "+12065550101", "evt-other", "654321", NULL);
        return false;
    default:
        return k[2].n > 0;
    }
}

static void test_duplicate_gets_first_answer(void **state)
{
    if (!url())
        skip();
    setup(state);
    struct th_loop *loop;
    assert_int_equal(th_loop_new(&loop), TH_E_OK);
    struct th_guard *a = node(url(), NULL), *b = node(url(), NULL);
    th_guard_set_poll(b, 10000, 10000); /* within the test, only the notification can wake */
    struct ask k[3];
    ask(loop, &k[0], a, "+12065550101", "evt-wait", "654321", NULL);
    k[1].g = b;
    struct run r = {.loop = loop, .step = step_wait, .asks = k};
    run(&r, 5000);
    assert_int_equal(r.phase, 3);
    assert_int_equal(k[0].n, 1);
    assert_int_equal(k[0].v.dedupe, TH_DEDUPE_FIRST);
    assert_int_equal(k[1].woken, 1);
    struct th_dedupe_answer ans = {0};
    assert_int_equal(th_guard_dedupe_poll(b, k[1].v.ticket, &ans), TH_DEDUPE_DONE);
    assert_int_equal(ans.status, 200);
    assert_string_equal(ans.body, "{\"answer\":1}");
    free(ans.body);
    th_guard_dedupe_release(b, k[1].v.ticket);
    struct th_guard_db_stats sb;
    th_guard_db_stats(b, &sb);
    assert_int_equal(sb.notified, 1); /* woken by the first's notification */
    assert_int_equal(k[2].n, 1);
    assert_int_equal(k[2].v.dedupe, TH_DEDUPE_DONE);
    assert_string_equal(k[2].v.answer.body, "{\"answer\":1}");
    free(k[2].v.answer.body);
    th_loop_free(loop);
    th_guard_free(a);
    th_guard_free(b);
}

/* The first gives up without an answer: the waiter is woken once with nothing to replay (its
 * deadline answers), and a retry of the same event is a first again, not a duplicate. */
static bool step_abandon(struct run *r)
{
    struct ask *k = r->asks;
    switch (r->phase) {
    case 0:
        if (!k[0].n)
            return false;
        ask(r->loop, &k[1], k[1].g, "+12065550105", "evt-gone", "717171", NULL);
        r->phase = 1;
        return false;
    case 1:
        if (!k[1].n)
            return false;
        assert_int_equal(k[1].v.dedupe, TH_DEDUPE_PENDING);
        assert_int_equal(th_guard_dedupe_wait(k[1].g, k[1].v.ticket, r->loop, on_woken, &k[1]),
                         TH_E_OK);
        r->t0 = th_mono_us();
        r->phase = 5;
        return false;
    case 5:
        if (th_mono_us() - r->t0 < 1000000)
            return false;
        th_guard_dedupe_release(k[0].g, k[0].v.ticket); /* the first gives up */
        r->phase = 2;
        return false;
    case 2:
        if (!k[1].woken)
            return false;
        ask(r->loop, &k[2], k[0].g, "+12065550105", "evt-gone", "717171", NULL);
        r->phase = 3;
        return false;
    default:
        return k[2].n > 0;
    }
}

static void test_first_gives_up(void **state)
{
    if (!url())
        skip();
    setup(state);
    struct th_loop *loop;
    assert_int_equal(th_loop_new(&loop), TH_E_OK);
    struct th_guard *a = node(url(), NULL), *b = node(url(), NULL);
    th_guard_set_poll(b, 10000, 10000);
    struct ask k[3];
    ask(loop, &k[0], a, "+12065550105", "evt-gone", "717171", NULL);
    k[1].g = b;
    struct run r = {.loop = loop, .step = step_abandon, .asks = k};
    run(&r, 5000);
    assert_int_equal(r.phase, 3);
    assert_int_equal(k[0].v.dedupe, TH_DEDUPE_FIRST);
    assert_int_equal(k[1].woken, 1);
    struct th_dedupe_answer ans = {0};
    assert_int_equal(th_guard_dedupe_poll(b, k[1].v.ticket, &ans), TH_DEDUPE_PENDING);
    assert_null(ans.body);
    th_guard_dedupe_release(b, k[1].v.ticket);
    struct th_guard_db_stats sb;
    th_guard_db_stats(b, &sb);
    assert_int_equal(sb.notified, 1);
    assert_int_equal(k[2].n, 1);
    assert_int_equal(k[2].v.dedupe, TH_DEDUPE_FIRST);
    th_guard_dedupe_release(a, k[2].v.ticket);
    th_loop_free(loop);
    th_guard_free(a);
    th_guard_free(b);
}

/* A blocking connection of the test's own, beside the nodes'. */
static PGconn *raw_conn(void)
{
    PGconn *c = PQconnectdb(url());
    assert_int_equal(PQstatus(c), CONNECTION_OK);
    return c;
}

static void raw_ok(PGconn *c, const char *sql)
{
    PGresult *res = PQexec(c, sql);
    ExecStatusType st = PQresultStatus(res);
    if (st != PGRES_COMMAND_OK && st != PGRES_TUPLES_OK)
        fail_msg("%s: %s", sql, PQerrorMessage(c));
    PQclear(res);
}

/* 1 when the rows of eventId (and of its code) are in state 1, from the test's connection. */
static bool raw_done(PGconn *c, const struct th_guard *g, const char *event)
{
    char hex[TH_GUARD_KEY_HEX], sql[256];
    th_guard_key_hex_(g, "event", event, hex);
    snprintf(sql, sizeof sql, "SELECT state FROM guard_dedupe WHERE key = decode('%s', 'hex')",
             hex);
    PGresult *res = PQexec(c, sql);
    bool done = PQresultStatus(res) == PGRES_TUPLES_OK && PQntuples(res) == 1 &&
                strcmp(PQgetvalue(res, 0, 0), "1") == 0;
    PQclear(res);
    return done;
}

struct notify_run {
    struct run r;
    PGconn *c;
    struct th_guard *a, *b;
};

/* Two firsts on node a (and a warm-up on b, so b's pool is connected); then a duplicate of the
 * second at b (PENDING: it marks the row); then both firsts answer; done when both are stored. */
static bool step_notify(struct run *r)
{
    struct notify_run *n = (struct notify_run *)r;
    struct ask *k = r->asks;
    struct th_guard_db_stats sb;
    switch (r->phase) {
    case 0:
        th_guard_db_stats(n->b, &sb);
        if (!k[0].n || !k[1].n || !k[3].n || sb.connections < 1)
            return false;
        ask(r->loop, &k[2], n->b, "+12065550112", "evt-waited", "222222", NULL);
        r->phase = 1;
        return false;
    case 1:
        if (!k[2].n)
            return false;
        assert_int_equal(k[0].v.dedupe, TH_DEDUPE_FIRST);
        assert_int_equal(k[1].v.dedupe, TH_DEDUPE_FIRST);
        assert_int_equal(k[2].v.dedupe, TH_DEDUPE_PENDING);
        th_guard_dedupe_finish(n->a, k[0].v.ticket, 200, "{\"answer\":1}", 12);
        th_guard_dedupe_finish(n->a, k[1].v.ticket, 200, "{\"answer\":2}", 12);
        r->phase = 2;
        return false;
    default:
        return raw_done(n->c, n->a, "evt-quiet") && raw_done(n->c, n->a, "evt-waited");
    }
}

/* A finish notifies only when a duplicate waits (marked its row): two firsts answered, one of
 * them with a duplicate pending on the other node. The test's own LISTEN counts what came. */
static void test_finish_notifies_only_waited(void **state)
{
    if (!url())
        skip();
    setup(state);
    struct th_loop *loop;
    assert_int_equal(th_loop_new(&loop), TH_E_OK);
    struct th_guard *a = node(url(), NULL), *b = node(url(), NULL);
    PGconn *c = raw_conn();
    raw_ok(c, "LISTEN guard_done");
    struct ask k[4];
    ask(loop, &k[0], a, "+12065550111", "evt-quiet", "111111", NULL);
    ask(loop, &k[1], a, "+12065550112", "evt-waited", "222222", NULL);
    ask(loop, &k[3], b, "+12065550114", "evt-warm", "444444", NULL);
    struct notify_run nr = {
        .r = {.loop = loop, .step = step_notify, .asks = k}, .c = c, .a = a, .b = b};
    run(&nr.r, 8000);
    assert_int_equal(nr.r.phase, 2);
    assert_true(step_notify(&nr.r));
    char quiet[TH_GUARD_KEY_HEX], waited[TH_GUARD_KEY_HEX];
    th_guard_key_hex_(a, "event", "evt-quiet", quiet);
    th_guard_key_hex_(a, "event", "evt-waited", waited);
    assert_int_equal(PQconsumeInput(c), 1);
    int nquiet = 0, nwaited = 0, total = 0;
    for (PGnotify *m; (m = PQnotifies(c)) != NULL; PQfreemem(m)) {
        total++;
        nquiet += strcmp(m->extra, quiet) == 0;
        nwaited += strcmp(m->extra, waited) == 0;
    }
    assert_int_equal(nquiet, 0);
    assert_int_equal(nwaited, 1);
    assert_int_equal(total, 2); /* the waited request's two rows: eventId, and number + code */
    th_guard_dedupe_release(b, k[2].v.ticket);
    th_guard_dedupe_release(b, k[3].v.ticket);
    PQfinish(c);
    th_loop_free(loop);
    th_guard_free(a);
    th_guard_free(b);
}

enum { BATCH_N = 20 };

/* BATCH_N firsts on one node, then all answered in one tick: stored in two statements (the
 * first answer at once, the other BATCH_N - 1 in one batch while it is out), each row with its
 * own answer (quotes and backslashes included). */
static bool step_batch(struct run *r)
{
    struct notify_run *n = (struct notify_run *)r;
    struct ask *k = r->asks;
    if (r->phase == 0) {
        if (!all_back(k, BATCH_N))
            return false;
        struct th_guard_db_stats sa;
        th_guard_db_stats(n->a, &sa);
        r->t0 = (int64_t)sa.statements;
        for (int i = 0; i < BATCH_N; i++) {
            assert_int_equal(k[i].v.dedupe, TH_DEDUPE_FIRST);
            char body[64];
            int len = snprintf(body, sizeof body, "{\"a\":\"q\\\"%d\\\\\"}", i);
            th_guard_dedupe_finish(n->a, k[i].v.ticket, 200 + i, body, (size_t)len);
        }
        r->phase = 1;
        return false;
    }
    for (int i = 0; i < BATCH_N; i++) {
        char evt[24];
        snprintf(evt, sizeof evt, "evt-batch-%d", i);
        if (!raw_done(n->c, n->a, evt))
            return false;
    }
    return true;
}

static void test_finishes_batched(void **state)
{
    if (!url())
        skip();
    setup(state);
    struct th_loop *loop;
    assert_int_equal(th_loop_new(&loop), TH_E_OK);
    struct th_guard *a = node(url(), NULL);
    PGconn *c = raw_conn();
    struct ask k[BATCH_N];
    for (int i = 0; i < BATCH_N; i++) {
        char evt[24], phone[24], otp[16];
        snprintf(evt, sizeof evt, "evt-batch-%d", i);
        snprintf(phone, sizeof phone, "+120655502%02d", i);
        snprintf(otp, sizeof otp, "5%05d", i);
        ask(loop, &k[i], a, phone, evt, otp, NULL);
    }
    struct notify_run nr = {.r = {.loop = loop, .step = step_batch, .asks = k}, .c = c, .a = a};
    run(&nr.r, 8000);
    assert_int_equal(nr.r.phase, 1);
    assert_true(step_batch(&nr.r));
    struct th_guard_db_stats sa;
    th_guard_db_stats(a, &sa);
    assert_int_equal((int64_t)sa.statements - nr.r.t0, 2);
    for (int i = 0; i < BATCH_N; i++) {
        char hex[TH_GUARD_KEY_HEX], evt[24], sql[256], want[64];
        snprintf(evt, sizeof evt, "evt-batch-%d", i);
        th_guard_key_hex_(a, "event", evt, hex);
        snprintf(sql, sizeof sql,
                 "SELECT status, answer FROM guard_dedupe WHERE key = decode('%s', 'hex')", hex);
        PGresult *res = PQexec(c, sql);
        assert_int_equal(PQntuples(res), 1);
        assert_int_equal(atoi(PQgetvalue(res, 0, 0)), 200 + i);
        snprintf(want, sizeof want, "{\"a\":\"q\\\"%d\\\\\"}", i);
        assert_string_equal(PQgetvalue(res, 0, 1), want);
        PQclear(res);
    }
    PQfinish(c);
    th_loop_free(loop);
    th_guard_free(a);
}

/* A duplicate that looks while the first's finish holds the row (not yet committed) must not
 * mark a row already answered and pend for a notification that never comes: its mark waits for
 * the row, finds it answered, and reads the answer (DONE). The finish is the test's own
 * transaction, held open while the duplicate asks. */
static bool step_mark_after(struct run *r)
{
    struct notify_run *n = (struct notify_run *)r;
    struct ask *k = r->asks;
    switch (r->phase) {
    case 0:
        if (!k[0].n)
            return false;
        assert_int_equal(k[0].v.dedupe, TH_DEDUPE_FIRST);
        char hex[TH_GUARD_KEY_HEX], sql[512];
        th_guard_key_hex_(n->a, "event", "evt-late", hex);
        raw_ok(n->c, "BEGIN");
        snprintf(sql, sizeof sql,
                 "UPDATE guard_dedupe SET state = 1, status = 200, answer = '{\"answer\":7}' "
                 "WHERE expires_ms = (SELECT expires_ms FROM guard_dedupe WHERE key = "
                 "decode('%s', 'hex')) AND state = 0",
                 hex);
        raw_ok(n->c, sql);
        ask(r->loop, &k[1], k[1].g, "+12065550113", "evt-late", "333333", NULL);
        r->t0 = th_mono_us();
        r->phase = 1;
        return false;
    case 1:
        if (th_mono_us() - r->t0 < 300000)
            return false;
        assert_int_equal(k[1].n, 0); /* waiting for the row the finish holds */
        raw_ok(n->c, "COMMIT");
        r->phase = 2;
        return false;
    default:
        return k[1].n > 0;
    }
}

static void test_waiter_after_finish_gets_answer(void **state)
{
    if (!url())
        skip();
    setup(state);
    struct th_loop *loop;
    assert_int_equal(th_loop_new(&loop), TH_E_OK);
    struct th_guard *a = node(url(), NULL), *b = node(url(), NULL);
    PGconn *c = raw_conn();
    struct ask k[2];
    ask(loop, &k[0], a, "+12065550113", "evt-late", "333333", NULL);
    k[1].g = b;
    struct notify_run nr = {
        .r = {.loop = loop, .step = step_mark_after, .asks = k}, .c = c, .a = a};
    run(&nr.r, 5000);
    assert_int_equal(nr.r.phase, 2);
    assert_int_equal(k[1].n, 1);
    assert_int_equal(k[1].v.dedupe, TH_DEDUPE_DONE);
    assert_int_equal(k[1].v.answer.status, 200);
    assert_string_equal(k[1].v.answer.body, "{\"answer\":7}");
    free(k[1].v.answer.body);
    th_guard_dedupe_release(a, k[0].v.ticket);
    PQfinish(c);
    th_loop_free(loop);
    th_guard_free(a);
    th_guard_free(b);
}

/* N + 5 different codes to one number, alternating nodes, all at once: exactly N pass. */
static void test_phone_limit_exact_across_nodes(void **state)
{
    if (!url())
        skip();
    setup(state);
    struct th_loop *loop;
    assert_int_equal(th_loop_new(&loop), TH_E_OK);
    static const char *const lim[] = {"TELEHOOK_GUARD_LIMIT_PHONE=3/1h", NULL};
    struct th_guard *a = node(url(), lim), *b = node(url(), lim);
    enum { N = 3, M = N + 5, ROUNDS = 6 };
    struct ask k[M * ROUNDS];
    for (int i = 0; i < M * ROUNDS; i++) {
        char otp[16], evt[16], num[24];
        snprintf(otp, sizeof otp, "%06d", 100000 + i);
        snprintf(evt, sizeof evt, "evt-lim-%d", i);
        snprintf(num, sizeof num, "+120655501%02d", 10 + i / M); /* one number per round */
        ask(loop, &k[i], i % 2 ? b : a, num, evt, otp, NULL);
    }
    struct run r = {.loop = loop, .step = step_all_back, .asks = k, .nasks = M * ROUNDS};
    run(&r, 8000);
    for (int round = 0; round < ROUNDS; round++) {
        int passed = 0, blocked = 0;
        for (int i = round * M; i < (round + 1) * M; i++) {
            assert_int_equal(k[i].n, 1);
            assert_int_equal(k[i].v.dedupe, TH_DEDUPE_FIRST);
            passed += k[i].v.block == TH_BLOCK_NONE;
            blocked += k[i].v.block == TH_BLOCK_PHONE_SHORT;
            th_guard_dedupe_release(k[i].g, k[i].v.ticket);
        }
        assert_int_equal(passed, N);
        assert_int_equal(blocked, M - N);
    }
    th_loop_free(loop);
    th_guard_free(a);
    th_guard_free(b);
}

/* A daily budget of N for +44, many numbers, two nodes, all at once: exactly N pass. */
static void test_budget_exact_across_nodes(void **state)
{
    if (!url())
        skip();
    setup(state);
    struct th_loop *loop;
    assert_int_equal(th_loop_new(&loop), TH_E_OK);
    static const char *const lim[] = {"TELEHOOK_GUARD_BUDGETS=44:5", NULL};
    struct th_guard *a = node(url(), lim), *b = node(url(), lim);
    enum { N = 5, M = 40 };
    struct ask k[M];
    for (int i = 0; i < M; i++) {
        char num[24], evt[16];
        snprintf(num, sizeof num, "+447400123%03d", i);
        snprintf(evt, sizeof evt, "evt-b-%d", i);
        ask(loop, &k[i], i % 2 ? b : a, num, evt, "111111", NULL);
    }
    struct run r = {.loop = loop, .step = step_all_back, .asks = k, .nasks = M};
    run(&r, 5000);
    int passed = 0, blocked = 0;
    for (int i = 0; i < M; i++) {
        assert_int_equal(k[i].n, 1);
        passed += k[i].v.block == TH_BLOCK_NONE;
        blocked += k[i].v.block == TH_BLOCK_CODE_BUDGET;
        th_guard_dedupe_release(k[i].g, k[i].v.ticket);
    }
    assert_int_equal(passed, N);
    assert_int_equal(blocked, M - N);
    th_loop_free(loop);
    th_guard_free(a);
    th_guard_free(b);
}

/* No database: open decides in memory, closed refuses; either way at once, never a hang. */
static void test_unavailable_open_and_closed(void **state)
{
    setup(state);
    struct th_loop *loop;
    assert_int_equal(th_loop_new(&loop), TH_E_OK);
    static const char *const closed[] = {"TELEHOOK_STORE_UNAVAILABLE=closed", NULL};
    const char *none = "postgresql://postgres@127.0.0.1:1/postgres";
    struct th_guard *open = node(none, NULL), *shut = node(none, closed);
    struct ask k[2];
    int64_t t0 = th_mono_us();
    ask(loop, &k[0], open, "+12065550103", "evt-u1", "222222", NULL);
    ask(loop, &k[1], shut, "+12065550103", "evt-u2", "333333", NULL);
    assert_int_equal(k[0].n + k[1].n, 0); /* asked the database: not decided at once */
    struct run r = {.loop = loop, .step = step_all_back, .asks = k, .nasks = 2};
    run(&r, 5000);
    assert_true(th_mono_us() - t0 < 2500000);
    assert_int_equal(k[0].n, 1);
    assert_false(k[0].v.unavailable);
    assert_int_equal(k[0].v.dedupe, TH_DEDUPE_FIRST); /* the in-memory dedupe */
    assert_int_equal(k[0].v.block, TH_BLOCK_NONE);
    th_guard_dedupe_release(open, k[0].v.ticket);
    assert_int_equal(k[1].n, 1);
    assert_true(k[1].v.unavailable);
    assert_null(k[1].v.ticket);
    struct th_guard_db_stats so, sc;
    th_guard_db_stats(open, &so);
    th_guard_db_stats(shut, &sc);
    assert_int_equal(so.fallbacks, 1);
    assert_int_equal(so.refused, 0);
    assert_int_equal(sc.fallbacks, 0);
    assert_int_equal(sc.refused, 1);
    th_loop_free(loop);
    th_guard_free(open);
    th_guard_free(shut);
}

/* Runs a loop until its guard's connections reach n (or ready, when n < 0). */
struct conn_run {
    struct run r;
    struct th_guard *g;
    int n;
};

static bool step_conns(struct run *r)
{
    struct conn_run *c = (struct conn_run *)r;
    struct th_guard_db_stats s;
    th_guard_db_stats(c->g, &s);
    return c->n < 0 ? th_guard_ready(c->g) : s.connections >= c->n;
}

static void run_until(struct th_loop *loop, struct th_guard *g, int n, int ms)
{
    struct conn_run c = {.r = {.loop = loop, .step = step_conns}, .g = g, .n = n};
    run(&c.r, ms);
}

static void *loop_thread(void *arg)
{
    th_loop_run(arg);
    return NULL;
}

/* Polls the guard from this thread while its loops run on theirs (bounded: 5 s). */
static bool wait_guard(struct th_guard *g, int connections, bool ready)
{
    for (int i = 0; i < 500; i++) {
        struct th_guard_db_stats s;
        th_guard_db_stats(g, &s);
        if ((connections < 0 || s.connections == connections) && (!ready || th_guard_ready(g)))
            return true;
        usleep(10000);
    }
    return false;
}

struct eager_ask {
    struct run r;
    struct ask k;
    struct th_guard *g;
};

static void eager_ask(void *ud)
{
    struct eager_ask *e = ud;
    ask(e->r.loop, &e->k, e->g, "+12065550104", "evt-eager", "444444", NULL);
    e->r.give_up_us = th_mono_us() + 5000000;
    th_loop_timer_set(e->r.loop, &e->r.tick, th_mono_us() + 1000, on_tick, &e->r);
}

/*
 * Eager pools: th_guard_attach opens a loop's connections before its first request (each loop
 * runs on its thread, as the server's), and th_guard_ready waits for every attached loop's
 * pool, not the sum over loops. The first ask after ready is decided by the database, not by
 * the node's memory.
 */
static void test_attach_then_ready(void **state)
{
    setup(state);
    if (!url())
        skip();
    struct th_loop *l1, *l2;
    assert_int_equal(th_loop_new(&l1), TH_E_OK);
    assert_int_equal(th_loop_new(&l2), TH_E_OK);
    struct th_guard *g = node(url(), NULL); /* store.unavailable = open */
    assert_true(th_guard_ready(g));         /* no pool yet */
    assert_int_equal(th_guard_attach(g, l1), TH_E_OK);
    assert_int_equal(th_guard_attach(g, l2), TH_E_OK);
    assert_false(th_guard_ready(g)); /* connecting: its requests would fall back */
    pthread_t t1, t2;
    assert_int_equal(pthread_create(&t1, NULL, loop_thread, l1), 0);
    assert_true(wait_guard(g, 2, false)); /* l1's two connections up; l2 not running */
    usleep(50000);
    assert_false(th_guard_ready(g)); /* every loop's pool, not the sum */
    assert_int_equal(pthread_create(&t2, NULL, loop_thread, l2), 0);
    assert_true(wait_guard(g, 4, true));
    struct eager_ask e = {.r = {.loop = l1, .step = step_all_back, .nasks = 1}, .g = g};
    e.r.asks = &e.k;
    assert_int_equal(th_loop_post(l1, eager_ask, &e), TH_E_OK);
    assert_int_equal(pthread_join(t1, NULL), 0); /* the ask's run stops l1 once answered */
    assert_int_equal(e.k.n, 1);
    struct th_guard_db_stats s;
    th_guard_db_stats(g, &s);
    assert_int_equal(s.decisions, 1);
    assert_int_equal(s.fallbacks, 0);
    assert_int_equal(e.k.v.dedupe, TH_DEDUPE_FIRST);
    th_guard_dedupe_release(g, e.k.v.ticket);
    th_loop_stop(l2);
    assert_int_equal(pthread_join(t2, NULL), 0);
    th_loop_free(l1);
    th_loop_free(l2);
    th_guard_free(g);
}

/* A database away at start: open is ready once the attempts failed (serving from memory is
 * then its rule); closed is not ready while no connection is up. */
static void test_attach_database_away(void **state)
{
    setup(state);
    struct th_loop *loop;
    assert_int_equal(th_loop_new(&loop), TH_E_OK);
    static const char *const closed[] = {"TELEHOOK_STORE_UNAVAILABLE=closed", NULL};
    const char *none = "postgresql://postgres@127.0.0.1:1/postgres";
    struct th_guard *open = node(none, NULL), *shut = node(none, closed);
    assert_int_equal(th_guard_attach(open, loop), TH_E_OK);
    assert_int_equal(th_guard_attach(shut, loop), TH_E_OK);
    assert_false(th_guard_ready(open));
    run_until(loop, open, -1, 5000);
    assert_true(th_guard_ready(open));
    assert_false(th_guard_ready(shut));
    th_loop_free(loop);
    th_guard_free(open);
    th_guard_free(shut);
}

/* The purge runs on one node at a time: while another holds its lock it does nothing (-1);
 * then it deletes the expired rows (this test's: decided at now, purged a day later). */
static const struct th_pg_stmt admin_stmts[] = {
    {"hold", "SELECT pg_advisory_lock(7246175002)::text", 0},
    {"unhold", "SELECT pg_advisory_unlock(7246175002)::text", 0},
    {"purge", "SELECT guard_purge($1::bigint)", 1},
};

struct sql {
    int n;
    th_err err;
    char value[32];
    struct th_pg_query q;
    const char *params[1];
    char p[24];
};

static void on_sql(void *ud, const struct th_pg_result *res)
{
    struct sql *q = ud;
    q->n++;
    q->err = res->err;
    const char *v = res->err == TH_E_OK ? th_pg_value(res->rows, 0, 0) : NULL;
    snprintf(q->value, sizeof q->value, "%s", v ? v : "");
}

static void sql(struct th_pg *pg, struct sql *q, const char *stmt, const char *param)
{
    memset(q, 0, sizeof *q);
    snprintf(q->p, sizeof q->p, "%s", param ? param : "");
    q->params[0] = q->p;
    q->q = (struct th_pg_query){.stmt = stmt,
                                .nparams = param ? 1 : 0,
                                .params = q->params,
                                .deadline_us = th_mono_us() + 3000000,
                                .done = on_sql,
                                .ud = q};
    th_pg_exec(pg, &q->q);
}

struct purge_run {
    struct run r;
    struct th_pg *holder, *purger;
    struct sql s[4];
    char later[24];
};

static bool step_purge(struct run *r)
{
    struct purge_run *p = (struct purge_run *)r;
    switch (r->phase) {
    case 0: /* the decisions are in; another "node" holds the purge lock */
        if (!all_back(r->asks, r->nasks))
            return false;
        sql(p->holder, &p->s[0], "hold", NULL);
        r->phase = 1;
        return false;
    case 1:
        if (!p->s[0].n)
            return false;
        sql(p->purger, &p->s[1], "purge", p->later);
        r->phase = 2;
        return false;
    case 2: /* let go, then purge again */
        if (!p->s[1].n)
            return false;
        sql(p->holder, &p->s[2], "unhold", NULL);
        r->phase = 3;
        return false;
    case 3:
        if (!p->s[2].n)
            return false;
        sql(p->purger, &p->s[3], "purge", p->later);
        r->phase = 4;
        return false;
    default:
        return p->s[3].n > 0;
    }
}

static void test_purge_one_node_at_a_time(void **state)
{
    if (!url())
        skip();
    setup(state);
    struct th_loop *loop;
    assert_int_equal(th_loop_new(&loop), TH_E_OK);
    static const char *const lim[] = {"TELEHOOK_GUARD_LIMIT_PHONE=3/1h", NULL};
    struct th_guard *a = node(url(), lim);
    struct th_pg_options o = {
        .conninfo = url(), .connections = 1, .stmts = admin_stmts, .nstmts = 3};
    struct purge_run p = {.r = {.loop = loop, .step = step_purge}};
    assert_int_equal(th_pg_new(loop, &o, &p.holder), TH_E_OK);
    assert_int_equal(th_pg_new(loop, &o, &p.purger), TH_E_OK);
    struct ask k[2];
    ask(loop, &k[0], a, "+12065550104", "evt-p1", "424242", NULL);
    ask(loop, &k[1], a, "+12065550104", "evt-p2", "434343", NULL);
    p.r.asks = k;
    p.r.nasks = 2;
    /* a day on: the dedupe rows and the rate rows of these decisions have expired */
    snprintf(p.later, sizeof p.later, "%lld", (long long)(now_us + 86400 * INT64_C(1000000)));
    run(&p.r, 8000);
    assert_int_equal(p.r.phase, 4);
    for (int i = 0; i < 4; i++) {
        assert_int_equal(p.s[i].n, 1);
        assert_int_equal(p.s[i].err, TH_E_OK);
    }
    assert_string_equal(p.s[1].value, "-1"); /* held elsewhere: nothing done */
    assert_true(atoi(p.s[3].value) >= 5);    /* 2 x 2 dedupe rows and the number's rate row */
    th_pg_free(p.holder);
    th_pg_free(p.purger);
    th_guard_dedupe_release(a, k[0].v.ticket);
    th_guard_dedupe_release(a, k[1].v.ticket);
    th_loop_free(loop);
    th_guard_free(a);
}

/* The purge never waits for a row a decision holds (it would hold the rows it deleted until
 * then: a deadlock with that decision, broken only after deadlock_timeout), and leaves a rate
 * row touched in the last minute (the global and country rows, whose tat trails the clock, are
 * never deleted under a decision's feet). The rows are the test's own, under keys of this run. */
static void test_purge_skips_locked_and_recent(void **state)
{
    if (!url())
        skip();
    setup(state);
    struct th_loop *loop;
    assert_int_equal(th_loop_new(&loop), TH_E_OK);
    struct th_guard *a = node(url(), NULL);
    struct ask k[1];
    ask(loop, &k[0], a, "+12065550115", "evt-schema", "555555", NULL); /* the schema is in */
    struct run r = {.loop = loop, .step = step_all_back, .asks = k, .nasks = 1};
    run(&r, 5000);
    assert_int_equal(k[0].n, 1);
    char held[TH_GUARD_KEY_HEX], idle[TH_GUARD_KEY_HEX], recent[TH_GUARD_KEY_HEX], sql[512];
    th_guard_key_hex_(a, "purge-test", "held", held);
    th_guard_key_hex_(a, "purge-test", "idle", idle);
    th_guard_key_hex_(a, "purge-test", "recent", recent);
    long long later = (long long)(now_us + 86400 * INT64_C(1000000));
    PGconn *h = raw_conn(), *p = raw_conn();
    snprintf(sql, sizeof sql,
             "INSERT INTO guard_rate VALUES (decode('%s', 'hex'), 0), (decode('%s', 'hex'), 0), "
             "(decode('%s', 'hex'), %lld)",
             held, idle, recent, later - 1000000);
    raw_ok(h, sql);
    raw_ok(h, "BEGIN");
    snprintf(sql, sizeof sql, "SELECT 1 FROM guard_rate WHERE key = decode('%s', 'hex') FOR UPDATE",
             held);
    raw_ok(h, sql);
    raw_ok(p, "SET statement_timeout = 3000");
    snprintf(sql, sizeof sql, "SELECT guard_purge(%lld)", later);
    raw_ok(p, sql); /* at once: not waiting for h */
    snprintf(sql, sizeof sql,
             "SELECT (SELECT count(*) FROM guard_rate WHERE key = decode('%s', 'hex')) || ',' || "
             "(SELECT count(*) FROM guard_rate WHERE key = decode('%s', 'hex')) || ',' || "
             "(SELECT count(*) FROM guard_rate WHERE key = decode('%s', 'hex'))",
             held, idle, recent);
    PGresult *res = PQexec(p, sql);
    assert_int_equal(PQresultStatus(res), PGRES_TUPLES_OK);
    assert_string_equal(PQgetvalue(res, 0, 0), "1,0,1"); /* held kept, idle gone, recent kept */
    PQclear(res);
    raw_ok(h, "COMMIT");
    PQfinish(h);
    PQfinish(p);
    th_guard_dedupe_release(a, k[0].v.ticket);
    th_loop_free(loop);
    th_guard_free(a);
}

/* The operator's view (`guard show|reset`, guard/admin.c) of what two requests' decisions left. */
static struct th_guard_admin *admin(const char *const *extra)
{
    const char *env[16] = {
        "TELEHOOK_GUARD_LIMIT_PHONE=0",
        "TELEHOOK_GUARD_LIMIT_PHONE_DAILY=0",
        "TELEHOOK_GUARD_LIMIT_USER=0",
        "TELEHOOK_GUARD_LIMIT_COUNTRY=0",
        "TELEHOOK_GUARD_LIMIT_GLOBAL=0",
        "TELEHOOK_GUARD_BUDGET_CALLING_CODE=0",
        secret_env,
        url_env,
    };
    size_t n = 8;
    for (size_t i = 0; extra && extra[i]; i++)
        env[n++] = extra[i];
    env[n] = NULL;
    struct th_config cfg;
    assert_int_equal(th_config_load(&cfg, NULL, (char **)env, err, sizeof err), TH_E_OK);
    struct th_guard_admin *a = NULL;
    th_err e = th_guard_admin_open(&cfg, &a, err, sizeof err);
    th_config_release(&cfg);
    if (e != TH_E_OK)
        fail_msg("admin: %s", err);
    th_guard_admin_set_clock(a, clock_of, &now_us);
    return a;
}

static int collect_budget(void *ud, const struct th_guard_budget_state *b)
{
    struct th_guard_budget_state *out = ud;
    out[out[0].budget == -2 ? 0 : 1] = *b; /* the first row into [0], any other into [1] */
    return 0;
}

/* One request decided by a node of its own (a loop's pool lives for one run of its loop). */
static th_block decide_once(const char *const *lim, const char *e164, const char *evt,
                            const char *otp)
{
    struct th_loop *loop;
    assert_int_equal(th_loop_new(&loop), TH_E_OK);
    struct th_guard *g = node(url(), lim);
    struct ask k;
    ask(loop, &k, g, e164, evt, otp, NULL);
    struct run r = {.loop = loop, .step = step_all_back, .asks = &k, .nasks = 1};
    run(&r, 3000);
    assert_int_equal(k.n, 1);
    th_guard_dedupe_release(g, k.v.ticket);
    th_loop_free(loop);
    th_guard_free(g);
    return k.v.block;
}

static void test_admin_show_and_reset(void **state)
{
    if (!url())
        skip();
    setup(state);
    struct th_loop *loop;
    assert_int_equal(th_loop_new(&loop), TH_E_OK);
    static const char *const lim[] = {"TELEHOOK_GUARD_LIMIT_PHONE=2/1h",
                                      "TELEHOOK_GUARD_BUDGETS=44:3", NULL};
    struct th_guard *g = node(url(), lim);
    struct ask k[3];
    for (int i = 0; i < 3; i++) { /* two pass, one is refused by phone_rate */
        char evt[16], otp[16];
        snprintf(evt, sizeof evt, "evt-adm-%d", i);
        snprintf(otp, sizeof otp, "%06d", 200000 + i);
        ask(loop, &k[i], g, "+447400123001", evt, otp, NULL);
    }
    struct run r = {.loop = loop, .step = step_all_back, .asks = k, .nasks = 3};
    run(&r, 5000);
    int passed = 0;
    for (int i = 0; i < 3; i++) {
        assert_int_equal(k[i].n, 1);
        passed += k[i].v.block == TH_BLOCK_NONE;
        th_guard_dedupe_release(g, k[i].v.ticket);
    }
    assert_int_equal(passed, 2);
    th_loop_free(loop);
    th_guard_free(g);

    struct th_guard_admin *adm = admin(lim);
    struct th_guard_limit_state l[2];
    int n = -1;
    assert_int_equal(
        th_guard_admin_limits(adm, TH_GUARD_PHONE, "+447400123001", l, &n, err, sizeof err),
        TH_E_OK);
    assert_int_equal(n, 1); /* phone_daily is off */
    assert_int_equal(l[0].limit, TH_BLOCK_PHONE_SHORT);
    assert_true(l[0].held);
    assert_int_equal(l[0].used, 2);
    assert_int_equal(l[0].count, 2);
    /* GCRA 2/1h: a third fits 30 minutes after the second (the clock stands still) */
    assert_int_equal(l[0].wait_us, INT64_C(1800000000));
    assert_int_equal(
        th_guard_admin_limits(adm, TH_GUARD_PHONE, "+447400123002", l, &n, err, sizeof err),
        TH_E_OK);
    assert_false(l[0].held);
    assert_int_equal(l[0].wait_us, 0);

    struct th_guard_budget_state b[2] = {{.budget = -2}, {.budget = -2}};
    assert_int_equal(th_guard_admin_budgets(adm, collect_budget, b, err, sizeof err), TH_E_OK);
    assert_int_equal(b[0].code, 44);
    assert_int_equal(b[0].used, 2);
    assert_int_equal(b[0].budget, 3);
    assert_int_equal(b[1].budget, -2); /* one row today: this run's */

    long removed = -1;
    assert_int_equal(th_guard_admin_reset_limits(adm, TH_GUARD_PHONE, "+447400123001", &removed,
                                                 err, sizeof err),
                     TH_E_OK);
    assert_int_equal(removed, 1);
    assert_int_equal(decide_once(lim, "+447400123001", "evt-adm-3", "200003"), TH_BLOCK_NONE);

    /* the budget is spent (3 of 3): refused, then reset, then the next +44 request passes */
    assert_int_equal(decide_once(lim, "+447400123009", "evt-adm-4", "200004"),
                     TH_BLOCK_CODE_BUDGET);
    assert_int_equal(th_guard_admin_reset_budget(adm, 44, &removed, err, sizeof err), TH_E_OK);
    assert_int_equal(removed, 1);
    b[0].budget = -2;
    assert_int_equal(th_guard_admin_budgets(adm, collect_budget, b, err, sizeof err), TH_E_OK);
    assert_int_equal(b[0].budget, -2); /* no row today */
    assert_int_equal(decide_once(lim, "+447400123009", "evt-adm-5", "200005"), TH_BLOCK_NONE);
    struct th_guard_sizes z;
    assert_int_equal(th_guard_admin_sizes(adm, &z, err, sizeof err), TH_E_OK);
    assert_true(z.rate >= 1 && z.budget >= 1 && z.dedupe >= 1);
    th_guard_admin_close(adm);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_duplicate_decided_once),
        cmocka_unit_test(test_duplicate_gets_first_answer),
        cmocka_unit_test(test_first_gives_up),
        cmocka_unit_test(test_finish_notifies_only_waited),
        cmocka_unit_test(test_waiter_after_finish_gets_answer),
        cmocka_unit_test(test_finishes_batched),
        cmocka_unit_test(test_phone_limit_exact_across_nodes),
        cmocka_unit_test(test_budget_exact_across_nodes),
        cmocka_unit_test(test_unavailable_open_and_closed),
        cmocka_unit_test(test_attach_then_ready),
        cmocka_unit_test(test_attach_database_away),
        cmocka_unit_test(test_purge_one_node_at_a_time),
        cmocka_unit_test(test_purge_skips_locked_and_recent),
        cmocka_unit_test(test_admin_show_and_reset),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
