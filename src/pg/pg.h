/*
 * A small asynchronous PostgreSQL client on one event loop (libpq's non-blocking API): a pool of
 * a few connections whose sockets sit on the loop's epoll, prepared statements, one query per
 * connection at a time, and a deadline per query. Nothing here ever blocks the loop: connecting
 * is PQconnectStart/PQconnectPoll driven by readiness, queries are PQsendQueryPrepared, results
 * are read with PQconsumeInput/PQisBusy/PQgetResult when the socket is readable, and output is
 * flushed with PQflush when it is writable.
 *
 * Contract of a query (libuv style): done(ud, res) is called exactly once, on the pool's loop,
 * never from inside th_pg_exec, with res->err = TH_E_OK and the rows, or an error:
 *   TH_E_TIMEOUT   the deadline passed first (queued, or sent: the connection is then dropped
 *                  — libpq 15 has no non-blocking cancel — and reconnected; the server's own
 *                  statement_timeout ends what it was doing);
 *   TH_E_IO        no connection to the server (refused, lost, every connection backing off);
 *   TH_E_OVERLOAD  the queue is full;
 *   TH_E_STORE     the server answered with an error (res->detail says which, never a value);
 *   TH_E_BUSY      the pool is being freed (th_pg_free: still on the loop).
 * The query's memory is the caller's (embedded, no allocation) and must live until done runs.
 *
 * Connections reconnect with a backoff (50 ms doubling to 2 s) after a failure; a new
 * connection first runs the pool's setup SQL (the guard's migration) and prepares every
 * statement, and only then takes queries.
 *
 * One loop only: every function on the loop's thread, except th_pg_ready() (any thread).
 */
#ifndef TH_PG_PG_H
#define TH_PG_PG_H

#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>

#include "common/err.h"
#include "loop/loop.h"

struct th_pg;

#define TH_PG_MAX_STMTS  8
#define TH_PG_MAX_PARAMS 16

/* A statement prepared on every connection of the pool; strings borrowed (static). */
struct th_pg_stmt {
    const char *name;
    const char *sql;
    int nparams;
};

struct th_pg_options {
    const char *conninfo; /* a postgresql:// URL or a conninfo string (PG* variables apply) */
    int connections;      /* per loop: 1..16 */
    const char *setup;    /* run once per new connection before it takes queries; NULL: none */
    const struct th_pg_stmt *stmts;
    int nstmts;
    int statement_timeout_ms; /* the server's bound on one statement (0: the server's default) */
    /* synchronous_commit = off: a commit does not wait for its WAL flush (a server crash may
     * lose the last few hundred ms of commits; never corrupts). For state that may lose that. */
    bool async_commit;
    int queue_max;  /* queries waiting for a connection (0: 1024) */
    atomic_int *up; /* connections ready, summed over pools (readiness); may be NULL */
    /* connection attempts that failed before the connection was ready (refused, timed out,
     * setup failed), summed over pools: readiness tells "still connecting" from "the database
     * is away"; may be NULL */
    atomic_int *failed;
    /* LISTEN: one more connection (never given queries) listens on this channel and calls
     * notify(notify_ud, payload) on the loop for each notification; NULL: none. Notifications
     * sent while it is reconnecting are lost: a listener must not rely on them alone. */
    const char *listen;
    void (*notify)(void *ud, const char *payload);
    void *notify_ud;
};

/* Opaque rows: valid during the done callback only. */
struct th_pg_rows;
int th_pg_nrows(const struct th_pg_rows *rows);
/* The text value of (row, col); NULL for SQL NULL or out of range. */
const char *th_pg_value(const struct th_pg_rows *rows, int row, int col);

struct th_pg_result {
    th_err err;
    const struct th_pg_rows *rows; /* TH_E_OK only */
    const char *detail;            /* the server's or libpq's message on TH_E_STORE / TH_E_IO */
};

struct th_pg_query;
typedef void (*th_pg_done_fn)(void *ud, const struct th_pg_result *res);

struct th_pg_query {
    const char *stmt; /* a prepared statement's name */
    int nparams;
    const char *const *params; /* text format; borrowed until done */
    int64_t deadline_us;       /* monotonic (th_mono_us) */
    th_pg_done_fn done;
    void *ud;
    /* private */
    struct th_pg *pg_;
    struct th_pg_query *next_;
    struct th_timer timer_;
    void *conn_;
    int where_; /* 0 idle, 1 queued, 2 sent, 3 failing (done posted) */
    th_err fail_;
};

th_err th_pg_new(struct th_loop *loop, const struct th_pg_options *opt, struct th_pg **out);
/* Every query still owed is called back with TH_E_BUSY, then the connections close. NULL: no-op. */
void th_pg_free(struct th_pg *pg);

/* Runs q (see the contract above). q's fields before "private" are set by the caller. */
void th_pg_exec(struct th_pg *pg, struct th_pg_query *q);

/* Connections of this pool ready for queries now. */
int th_pg_connected(const struct th_pg *pg);

/* Statements sent to the server since the pool began (the hot path's round trips are counted
 * from it in tests). */
uint64_t th_pg_statements(const struct th_pg *pg);
/* The listener connection (th_pg_options.listen) has its LISTEN in: a NOTIFY now is heard. */
bool th_pg_listening(const struct th_pg *pg);

/* A store or guard URL as libpq takes it: "postgresql://..." / "postgres://..." (a URI) as it
 * is, "postgresql:" or "postgres:" + a conninfo string without the prefix, anything else as it
 * is (a conninfo string). */
bool th_pg_is_uri(const char *url);
const char *th_pg_conninfo(const char *url);

#endif
