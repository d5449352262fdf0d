/*
 * The event loop: one per worker thread (one per core). It owns an epoll set, a timer heap and a
 * cross-thread mailbox. Everything a request does on the hot path — libmicrohttpd's connections,
 * provider transfers, deadlines — is driven by the loop that accepted the request, so a request is
 * suspended and resumed by the same thread with no locks and no hand-offs.
 *
 * Only th_loop_post(), th_loop_call_post(), th_loop_stop(), th_loop_ping() and
 * th_loop_answered() may be called from other threads.
 *
 * A loop has finished once th_loop_run() has returned (or th_loop_free() has begun on a loop that
 * never ran): from then on posts are refused — until th_loop_run() is called again — so nothing
 * completes on a loop whose owner has torn down what the completion would touch. Its timers are
 * disarmed then (they could never fire): their owners may be freed without cancelling them.
 */
#ifndef TH_LOOP_LOOP_H
#define TH_LOOP_LOOP_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "common/err.h"

struct th_loop;

/* Called with the epoll events (EPOLLIN | EPOLLOUT | ...) that fired for the fd. */
typedef void (*th_loop_io_fn)(void *ud, uint32_t events);
typedef void (*th_loop_fn)(void *ud);

/*
 * A timer is embedded in its owner (no allocation per timer). Zero-initialise it, then
 * th_loop_timer_set(); it fires once. Setting an armed timer re-arms it; cancelling an unarmed one
 * is a no-op. The owner must cancel it before freeing the memory it lives in.
 */
struct th_timer {
    int64_t when_us; /* monotonic, th_mono_us() */
    th_loop_fn fn;
    void *ud;
    size_t slot; /* index in the heap + 1; 0 when not armed */
};

th_err th_loop_new(struct th_loop **out);
/* Frees the loop; every fd must have been removed. NULL is a no-op. */
void th_loop_free(struct th_loop *loop);

/* events: EPOLLIN / EPOLLOUT / EPOLLET ... The (fn, ud) pair lives until th_loop_del_fd. */
th_err th_loop_add_fd(struct th_loop *loop, int fd, uint32_t events, th_loop_io_fn fn, void *ud);
th_err th_loop_mod_fd(struct th_loop *loop, int fd, uint32_t events, th_loop_io_fn fn, void *ud);
void th_loop_del_fd(struct th_loop *loop, int fd);

void th_loop_timer_set(struct th_loop *loop, struct th_timer *t, int64_t when_us, th_loop_fn fn,
                       void *ud);
void th_loop_timer_cancel(struct th_loop *loop, struct th_timer *t);
static inline bool th_timer_armed(const struct th_timer *t)
{
    return t->slot != 0;
}

/*
 * Thread-safe: runs fn(ud) on the loop's thread, soon, in FIFO order. TH_E_NOMEM on allocation
 * failure; TH_E_BUSY once the loop has finished (fn will never run: the caller keeps ownership).
 */
th_err th_loop_post(struct th_loop *loop, th_loop_fn fn, void *ud);

/*
 * "Complete on loop L": the one way work that finishes on another thread (the store writer's
 * commits, the key fetcher, the guard's dedupe waiters) hands its result back to the loop that
 * is waiting for it. The call is embedded in its owner, so posting never allocates and cannot
 * fail for lack of memory; what happens when the loop has finished is defined:
 *
 *   th_loop_call_post(c)  exactly one of these runs, once:
 *                           c->fn(c->ud)     on c->loop's thread, in FIFO order with other posts;
 *                           c->cancel(c->ud) at once, on the posting thread, when c->loop has
 *                                            finished — the owner frees its object there (it must
 *                                            not touch the loop: its thread is gone). cancel may
 *                                            run under the poster's own locks: keep it short, and
 *                                            never call back into the poster. NULL: nothing runs.
 *                         Returns true when queued.
 *   th_loop_call_withdraw(c)  on c->loop's thread only: a call that is queued and has not begun
 *                         is taken back (fn will not run); a no-op when it is not queued (never
 *                         posted, already run, cancelled). After it returns the owner may free c.
 *                         A waker that posts under its own lock lets the waiter cancel race-free:
 *                         the waiter takes the same lock, and either finds itself still
 *                         registered, or knows the post is done and withdraws it.
 *
 * A call is posted at most once at a time (it is queued by its own link); it may be posted again
 * once fn has begun. Zero-initialised (loop NULL), withdraw is a no-op.
 */
struct th_loop_call {
    struct th_loop *loop;
    th_loop_fn fn;
    th_loop_fn cancel; /* may be NULL */
    void *ud;
    /* private: the mailbox's */
    struct th_loop_call *next;
    bool queued;
};

void th_loop_call_init(struct th_loop_call *c, struct th_loop *loop, th_loop_fn fn,
                       th_loop_fn cancel, void *ud);
bool th_loop_call_post(struct th_loop_call *c);
void th_loop_call_withdraw(struct th_loop_call *c);

/*
 * The same promise as a value a caller hands to work that completes on another thread (the store
 * writer's th_writer_*_on, the outbox provider's sink), which embeds a th_loop_call for it: once
 * the work is done, exactly one of
 *   done(ud, result)  on loop's thread;
 *   lost(ud)          on the worker's thread, when loop has finished: nothing waits any more, the
 *                     caller frees its object there without touching the loop. May be NULL.
 */
struct th_loop_reply {
    struct th_loop *loop;
    void (*done)(void *ud, th_err result);
    th_loop_fn lost;
    void *ud;
};

/* Runs until th_loop_stop(); then runs what is still posted, finishes (posts are refused from
 * then on) and returns. */
void th_loop_run(struct th_loop *loop);
/* Thread-safe. */
void th_loop_stop(struct th_loop *loop);

/*
 * One pointer of per-loop context, set and read on the loop's own thread only: the dispatch
 * engine keeps its libcurl multi there, created by the first send on that loop.
 */
void th_loop_set_user(struct th_loop *loop, void *user);
void *th_loop_user(const struct th_loop *loop);

/*
 * On the loop's thread: fn(ud) runs at the end of every iteration, before the loop waits for
 * events again (one function per loop; NULL removes it). The logger's batch is flushed there, so
 * the lines of all the requests an iteration handled leave in one write.
 */
void th_loop_set_idle(struct th_loop *loop, th_loop_fn fn, void *ud);

/*
 * On the loop's thread: fn(ud) runs once th_loop_run() stops (after the posted work, in reverse
 * order of registration), so per-loop resources are torn down by the thread that owns them,
 * while the loop can still remove its fds.
 */
th_err th_loop_at_exit(struct th_loop *loop, th_loop_fn fn, void *ud);

/*
 * Liveness, for a watchdog (systemd's WatchdogSec): th_loop_ping() posts a no-op that counts when
 * the loop runs it; th_loop_answered() is true once every ping posted so far has run. A loop stuck
 * in one callback (or a deadlock) leaves its pings unanswered. Both thread-safe; ping from one
 * thread at a time.
 */
th_err th_loop_ping(struct th_loop *loop);
bool th_loop_answered(const struct th_loop *loop);

/* The loop's cached monotonic time for this iteration (cheaper than a clock call). */
int64_t th_loop_now_us(const struct th_loop *loop);

#endif
