#include "pg/pg.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>

#include <libpq-fe.h>

#include "common/util.h"
#include "obs/log.h"

#define MAX_CONNS       16
#define BACKOFF_MIN_MS  50
#define BACKOFF_MAX_MS  2000
#define CONNECT_WAIT_MS 2000 /* a connection attempt that has not finished by then is dropped */

enum cstate { C_DOWN, C_CONNECTING, C_SETUP, C_PREPARING, C_READY, C_BUSY };
enum { Q_IDLE, Q_QUEUED, Q_SENT, Q_FAILING };

struct conn {
    struct th_pg *pg;
    PGconn *pc;
    int fd; /* registered on the loop; -1: none */
    uint32_t events;
    enum cstate state;
    int step;             /* C_PREPARING: the statement being prepared */
    struct th_timer wait; /* C_DOWN: the retry; C_CONNECTING..C_PREPARING: the give-up */
    int backoff_ms;
    PGresult *res;         /* the first result of the command in progress */
    bool listener;         /* LISTENs (th_pg_options.listen); never carries a query */
    struct th_pg_query *q; /* C_BUSY */
};

struct th_pg {
    struct th_loop *loop;
    char *conninfo;
    char *setup; /* the session's SETs, then th_pg_options.setup */
    const struct th_pg_stmt *stmts;
    int nstmts, nconns, queue_max, queued;
    struct conn conns[MAX_CONNS];
    struct th_pg_query *head, *tail; /* waiting for a connection, and failing ones */
    atomic_int *up, *failed;
    int nup;
    bool was_up, freeing;
    uint64_t statements;
    char listen_sql[96];
    void (*notify)(void *ud, const char *payload);
    void *notify_ud;
};

int th_pg_nrows(const struct th_pg_rows *rows)
{
    return PQntuples((const PGresult *)rows);
}

const char *th_pg_value(const struct th_pg_rows *rows, int row, int col)
{
    const PGresult *r = (const PGresult *)rows;
    if (row < 0 || col < 0 || row >= PQntuples(r) || col >= PQnfields(r) ||
        PQgetisnull(r, row, col))
        return NULL;
    return PQgetvalue(r, row, col);
}

int th_pg_connected(const struct th_pg *pg)
{
    return pg->nup;
}

bool th_pg_listening(const struct th_pg *pg)
{
    for (int i = 0; i < pg->nconns; i++)
        if (pg->conns[i].listener && pg->conns[i].state == C_READY)
            return true;
    return false;
}

uint64_t th_pg_statements(const struct th_pg *pg)
{
    return pg->statements;
}

/* ---- the queue ---- */

static void unlink_q(struct th_pg *pg, struct th_pg_query *q)
{
    struct th_pg_query **p = &pg->head, *prev = NULL;
    while (*p && *p != q) {
        prev = *p;
        p = &(*p)->next_;
    }
    if (!*p)
        return;
    *p = q->next_;
    if (pg->tail == q)
        pg->tail = prev;
    q->next_ = NULL;
    if (q->where_ == Q_QUEUED)
        pg->queued--;
}

static void append_q(struct th_pg *pg, struct th_pg_query *q)
{
    q->next_ = NULL;
    if (pg->tail)
        pg->tail->next_ = q;
    else
        pg->head = q;
    pg->tail = q;
}

/* Ends q with err now (on the loop, never inside th_pg_exec). */
static void deliver(struct th_pg_query *q, th_err err, const PGresult *res, const char *detail)
{
    th_loop_timer_cancel(q->pg_->loop, &q->timer_);
    q->where_ = Q_IDLE;
    q->conn_ = NULL;
    struct th_pg_result r = {.err = err, .rows = (const struct th_pg_rows *)res, .detail = detail};
    q->done(q->ud, &r);
}

static void on_fail_timer(void *ud)
{
    struct th_pg_query *q = ud;
    unlink_q(q->pg_, q);
    deliver(q, q->fail_, NULL, NULL);
}

/* Fails q through the loop (th_pg_exec must not call back). */
static void fail_later(struct th_pg *pg, struct th_pg_query *q, th_err err)
{
    q->fail_ = err;
    q->where_ = Q_FAILING;
    append_q(pg, q);
    th_loop_timer_set(pg->loop, &q->timer_, 0, on_fail_timer, q);
}

/* ---- connections ---- */

static void conn_start(void *ud);
static void pump(struct th_pg *pg);
static void on_io(void *ud, uint32_t events);

static bool any_alive(const struct th_pg *pg)
{
    for (int i = 0; i < pg->nconns; i++)
        if (pg->conns[i].state != C_DOWN && !pg->conns[i].listener)
            return true;
    return false;
}

static void set_up(struct th_pg *pg, int delta)
{
    pg->nup += delta;
    if (pg->up)
        atomic_fetch_add(pg->up, delta);
    bool now_up = pg->nup > 0;
    if (now_up != pg->was_up && !pg->freeing) { /* logged once per transition, not per connection */
        pg->was_up = now_up;
        th_log_msg(now_up ? TH_LOG_INFO : TH_LOG_WARN, now_up ? "db_up" : "db_down",
                   now_up ? "PostgreSQL connected" : "PostgreSQL connections lost");
    }
}

static void watch(struct conn *c, uint32_t events)
{
    int fd = PQsocket(c->pc);
    if (fd != c->fd) {
        if (c->fd >= 0)
            th_loop_del_fd(c->pg->loop, c->fd);
        c->fd = -1;
        if (fd >= 0 && th_loop_add_fd(c->pg->loop, fd, events, on_io, c) == TH_E_OK)
            c->fd = fd;
        c->events = events;
    } else if (events != c->events && fd >= 0) {
        th_loop_mod_fd(c->pg->loop, fd, events, on_io, c);
        c->events = events;
    }
}

/* Closes c; the query it carried (if any) ends with err; it is retried after its backoff. */
static void conn_drop(struct conn *c, th_err err, const char *why, bool quick)
{
    struct th_pg *pg = c->pg;
    /* why is often PQerrorMessage(c->pc): copied before PQfinish frees it */
    char reason[160];
    th_strlcpy(reason, why ? why : "", sizeof reason);
    why = reason;
    if (c->state >= C_READY && !c->listener)
        set_up(pg, -1);
    else if (!c->listener && !pg->freeing && pg->failed)
        atomic_fetch_add(pg->failed, 1);
    if (c->fd >= 0)
        th_loop_del_fd(pg->loop, c->fd);
    c->fd = -1;
    if (c->res)
        PQclear(c->res);
    c->res = NULL;
    if (c->pc)
        PQfinish(c->pc);
    c->pc = NULL;
    c->state = C_DOWN;
    struct th_pg_query *q = c->q;
    c->q = NULL;
    if (pg->freeing) {
    } else if (quick) { /* the server is there (only slow): reconnect now, so the queue waits */
        conn_start(c);
    } else {
        th_loop_timer_set(pg->loop, &c->wait, th_mono_us() + (int64_t)c->backoff_ms * 1000,
                          conn_start, c);
        c->backoff_ms = c->backoff_ms * 2 > BACKOFF_MAX_MS ? BACKOFF_MAX_MS : c->backoff_ms * 2;
    }
    if (q)
        deliver(q, err, NULL, why);
    /* Nothing can carry the queue now: fail it rather than let it wait for its deadlines. */
    if (!pg->freeing && !any_alive(pg)) {
        while (pg->head && pg->head->where_ == Q_QUEUED) {
            struct th_pg_query *w = pg->head;
            unlink_q(pg, w);
            deliver(w, TH_E_IO, NULL, "no connection");
        }
    }
}

static void on_connect_wait(void *ud)
{
    struct conn *c = ud;
    conn_drop(c, TH_E_IO, "connect timed out", false);
}

/* After PQsend*: flush what fits, and wait for readability (and writability if some is left). */
static bool sent(struct conn *c)
{
    int f = PQflush(c->pc);
    if (f < 0)
        return false;
    watch(c, EPOLLIN | (f ? EPOLLOUT : 0));
    return true;
}

static void next_step(struct conn *c)
{
    struct th_pg *pg = c->pg;
    if (c->state == C_SETUP)
        c->step = 0;
    else
        c->step++;
    if (c->listener && c->step == 0) { /* the listener: LISTEN, no statements */
        c->state = C_PREPARING;
        if (!PQsendQuery(c->pc, pg->listen_sql) || !sent(c))
            conn_drop(c, TH_E_IO, PQerrorMessage(c->pc), false);
        return;
    }
    if (!c->listener && c->step < pg->nstmts) {
        c->state = C_PREPARING;
        const struct th_pg_stmt *s = &pg->stmts[c->step];
        if (!PQsendPrepare(c->pc, s->name, s->sql, s->nparams, NULL) || !sent(c))
            conn_drop(c, TH_E_IO, PQerrorMessage(c->pc), false);
        return;
    }
    th_loop_timer_cancel(pg->loop, &c->wait);
    c->state = C_READY;
    c->backoff_ms = BACKOFF_MIN_MS;
    if (c->listener)
        return;
    set_up(pg, 1);
    pump(pg);
}

static void connected(struct conn *c)
{
    if (PQsetnonblocking(c->pc, 1) != 0) {
        conn_drop(c, TH_E_IO, "nonblocking", false);
        return;
    }
    c->state = C_SETUP;
    if (!PQsendQuery(c->pc, c->pg->setup) || !sent(c))
        conn_drop(c, TH_E_IO, PQerrorMessage(c->pc), false);
}

static void conn_start(void *ud)
{
    struct conn *c = ud;
    struct th_pg *pg = c->pg;
    const char *keys[] = {"dbname", "application_name", NULL};
    const char *vals[] = {pg->conninfo, "telehook", NULL};
    c->pc = PQconnectStartParams(keys, vals, 1);
    if (!c->pc || PQstatus(c->pc) == CONNECTION_BAD) {
        conn_drop(c, TH_E_IO, "connect", false);
        return;
    }
    c->state = C_CONNECTING;
    th_loop_timer_set(pg->loop, &c->wait, th_mono_us() + CONNECT_WAIT_MS * 1000, on_connect_wait,
                      c);
    watch(c, EPOLLOUT); /* libpq: after PQconnectStart, wait for writability first */
}

/* The command in progress on c has all its results. */
static void command_done(struct conn *c)
{
    PGresult *res = c->res;
    c->res = NULL;
    ExecStatusType st = res ? PQresultStatus(res) : PGRES_FATAL_ERROR;
    bool ok = st == PGRES_COMMAND_OK || st == PGRES_TUPLES_OK;
    if (c->state == C_BUSY) {
        struct th_pg_query *q = c->q;
        c->q = NULL;
        c->state = C_READY;
        if (ok)
            deliver(q, TH_E_OK, res, NULL);
        else
            deliver(q, TH_E_STORE, NULL,
                    res ? PQresultErrorField(res, PG_DIAG_MESSAGE_PRIMARY) : "no result");
        if (res)
            PQclear(res);
        pump(c->pg);
        return;
    }
    if (!ok) { /* the setup or a prepare failed: the schema is not what we need */
        th_log_msg(TH_LOG_ERROR, "db_setup", "PostgreSQL setup failed: %s",
                   res ? PQresultErrorField(res, PG_DIAG_MESSAGE_PRIMARY) : "no result");
        if (res)
            PQclear(res);
        conn_drop(c, TH_E_IO, "setup", false);
        return;
    }
    if (res)
        PQclear(res);
    next_step(c);
}

static void on_io(void *ud, uint32_t events)
{
    struct conn *c = ud;
    if (c->state == C_CONNECTING) {
        switch (PQconnectPoll(c->pc)) {
        case PGRES_POLLING_READING:
            watch(c, EPOLLIN);
            return;
        case PGRES_POLLING_WRITING:
            watch(c, EPOLLOUT);
            return;
        case PGRES_POLLING_OK:
            connected(c);
            return;
        default:
            conn_drop(c, TH_E_IO, PQerrorMessage(c->pc), false);
            return;
        }
    }
    if (events & EPOLLOUT) {
        int f = PQflush(c->pc);
        if (f < 0) {
            conn_drop(c, TH_E_IO, PQerrorMessage(c->pc), false);
            return;
        }
        if (f == 0)
            watch(c, EPOLLIN);
    }
    if (!(events & (EPOLLIN | EPOLLERR | EPOLLHUP)))
        return;
    if (!PQconsumeInput(c->pc)) {
        conn_drop(c, TH_E_IO, PQerrorMessage(c->pc), false);
        return;
    }
    for (PGnotify *n; (n = PQnotifies(c->pc)) != NULL; PQfreemem(n))
        if (c->pg->notify)
            c->pg->notify(c->pg->notify_ud, n->extra);
    while (c->pc && !PQisBusy(c->pc)) {
        PGresult *r = PQgetResult(c->pc);
        if (!r) {
            if (c->state == C_READY) /* nothing was in progress (a notice, say) */
                return;
            command_done(c); /* may drop c, or start the next command */
            if (c->state == C_READY || c->state == C_DOWN)
                return;
            continue;
        }
        /* A command's first result counts, unless a later one is an error (the setup's SETs
         * come before its migration: the migration's failure must not be missed). */
        ExecStatusType st = PQresultStatus(r);
        bool failed = st != PGRES_COMMAND_OK && st != PGRES_TUPLES_OK;
        if (c->res && !failed) {
            PQclear(r);
        } else {
            if (c->res)
                PQclear(c->res);
            c->res = r;
        }
    }
    if (c->pc && PQstatus(c->pc) == CONNECTION_BAD)
        conn_drop(c, TH_E_IO, "connection lost", false);
}

static void on_query_deadline(void *ud)
{
    struct th_pg_query *q = ud;
    if (q->where_ == Q_QUEUED) {
        unlink_q(q->pg_, q);
        deliver(q, TH_E_TIMEOUT, NULL, NULL);
    } else if (q->where_ == Q_SENT) {
        /* No non-blocking cancel in libpq 15: the connection goes (the server's
         * statement_timeout ends the statement) and another one is started at once. */
        conn_drop(q->conn_, TH_E_TIMEOUT, NULL, true);
    }
}

static void send_on(struct conn *c, struct th_pg_query *q)
{
    c->q = q;
    c->state = C_BUSY;
    q->conn_ = c;
    q->where_ = Q_SENT;
    c->pg->statements++;
    if (!PQsendQueryPrepared(c->pc, q->stmt, q->nparams, q->params, NULL, NULL, 0) || !sent(c))
        conn_drop(c, TH_E_IO, "send failed", false);
}

/* Hands waiting queries to ready connections. */
static void pump(struct th_pg *pg)
{
    for (int i = 0; i < pg->nconns; i++) {
        struct conn *c = &pg->conns[i];
        if (c->state != C_READY || c->listener)
            continue;
        struct th_pg_query *q = pg->head;
        while (q && q->where_ != Q_QUEUED)
            q = q->next_;
        if (!q)
            return;
        unlink_q(pg, q);
        send_on(c, q);
    }
}

void th_pg_exec(struct th_pg *pg, struct th_pg_query *q)
{
    q->pg_ = pg;
    q->conn_ = NULL;
    q->next_ = NULL;
    memset(&q->timer_, 0, sizeof q->timer_);
    if (pg->freeing) {
        fail_later(pg, q, TH_E_BUSY);
        return;
    }
    if (!any_alive(pg)) { /* every connection is backing off: say so now, not at the deadline */
        fail_later(pg, q, TH_E_IO);
        return;
    }
    if (pg->queued >= pg->queue_max) {
        fail_later(pg, q, TH_E_OVERLOAD);
        return;
    }
    q->where_ = Q_QUEUED;
    pg->queued++;
    append_q(pg, q);
    th_loop_timer_set(pg->loop, &q->timer_, q->deadline_us, on_query_deadline, q);
    pump(pg);
}

th_err th_pg_new(struct th_loop *loop, const struct th_pg_options *opt, struct th_pg **out)
{
    if (opt->connections < 1 || opt->connections > MAX_CONNS || opt->nstmts > TH_PG_MAX_STMTS)
        return TH_E_INVAL;
    struct th_pg *pg = calloc(1, sizeof *pg);
    if (!pg || !(pg->conninfo = strdup(opt->conninfo))) {
        free(pg);
        return TH_E_NOMEM;
    }
    pg->loop = loop;
    pg->stmts = opt->stmts;
    pg->nstmts = opt->nstmts;
    pg->nconns = opt->connections;
    pg->queue_max = opt->queue_max > 0 ? opt->queue_max : 1024;
    pg->up = opt->up;
    pg->failed = opt->failed;
    /* The session's settings are SET by the first command rather than given as libpq's
     * "options": a URL's own options (a search_path, say) stay as they are. */
    char sets[160];
    int n = snprintf(sets, sizeof sets, "SET client_min_messages = warning; %s",
                     opt->async_commit ? "SET synchronous_commit = off; " : "");
    if (opt->statement_timeout_ms > 0)
        snprintf(sets + n, sizeof sets - (size_t)n, "SET statement_timeout = %d; ",
                 opt->statement_timeout_ms);
    const char *setup = opt->setup ? opt->setup : "";
    if (!(pg->setup = malloc(strlen(sets) + strlen(setup) + 1))) {
        free(pg->conninfo);
        free(pg);
        return TH_E_NOMEM;
    }
    strcpy(stpcpy(pg->setup, sets), setup);
    if (opt->listen) { /* one more connection, the last, for LISTEN */
        if (pg->nconns == MAX_CONNS) {
            free(pg->setup);
            free(pg->conninfo);
            free(pg);
            return TH_E_INVAL;
        }
        snprintf(pg->listen_sql, sizeof pg->listen_sql, "LISTEN \"%s\"", opt->listen);
        pg->notify = opt->notify;
        pg->notify_ud = opt->notify_ud;
        pg->conns[pg->nconns++].listener = true;
    }
    for (int i = 0; i < pg->nconns; i++) {
        struct conn *c = &pg->conns[i];
        c->pg = pg;
        c->fd = -1;
        c->backoff_ms = BACKOFF_MIN_MS;
        conn_start(c);
    }
    *out = pg;
    return TH_E_OK;
}

void th_pg_free(struct th_pg *pg)
{
    if (!pg)
        return;
    pg->freeing = true;
    for (int i = 0; i < pg->nconns; i++) {
        struct conn *c = &pg->conns[i];
        th_loop_timer_cancel(pg->loop, &c->wait);
        if (c->state != C_DOWN)
            conn_drop(c, TH_E_BUSY, "closing", false);
    }
    while (pg->head) {
        struct th_pg_query *q = pg->head;
        unlink_q(pg, q);
        deliver(q, TH_E_BUSY, NULL, "closing");
    }
    free(pg->setup);
    free(pg->conninfo);
    free(pg);
}

bool th_pg_is_uri(const char *url)
{
    return strncmp(url, "postgresql://", 13) == 0 || strncmp(url, "postgres://", 11) == 0;
}

const char *th_pg_conninfo(const char *url)
{
    if (th_pg_is_uri(url))
        return url;
    if (strncmp(url, "postgresql:", 11) == 0)
        return url + 11;
    if (strncmp(url, "postgres:", 9) == 0)
        return url + 9;
    return url;
}
