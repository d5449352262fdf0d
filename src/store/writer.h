/*
 * The store writer: one thread that owns a store connection and applies queued writes in
 * batches (one transaction per batch; on PostgreSQL one multi-row INSERT per table, a constant
 * number of round trips, a row refused for itself failing alone), so no event loop ever waits on
 * the disk or the network.
 *
 * Every queued item is copied (the caller's strings may be freed at once). The queue is bounded:
 * when full, enqueue returns TH_E_OVERLOAD and nothing is queued.
 * th_writer_stop() drains the queue (every accepted item is written) before it returns.
 */
#ifndef TH_STORE_WRITER_H
#define TH_STORE_WRITER_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "common/err.h"
#include "loop/loop.h"
#include "store/store.h"

struct th_writer;

/*
 * Called on the writer thread once the item's transaction has committed (result TH_E_OK) or
 * failed (TH_E_STORE). It must be quick and thread-safe: typically it posts to an event loop.
 */
typedef void (*th_writer_done_fn)(void *ud, th_err result);

/*
 * Completing on the caller's loop instead (th_writer_*_on, with a struct th_loop_reply): the
 * writer hands the result back through loop/loop.h's th_loop_call, so the caller posts nothing by
 * hand and a failed post is defined. Exactly one of these runs per accepted item: done(ud, result)
 * on loop's thread, after the commit (or the failure); lost(ud)          on the writer thread, when
 * loop has finished (shutdown): nothing waits for the result any more — the caller frees its object
 * there, without touching the loop (its thread is gone; its timers are disarmed). May be NULL. The
 * completion travels in the queued item itself: no allocation, nothing to fail.
 */

/* Takes ownership of st (closed by th_writer_stop). max_queue: items, >= 1. */
th_err th_writer_start(struct th_store *st, size_t max_queue, struct th_writer **out);

/*
 * The same with a spool. On a shared store (PostgreSQL) that goes out of reach (connection
 * lost, timeout; not a row's own failure), batches go to a local SQLite file at spool_path
 * (created on first need, 0600) instead: a DLQ entry spooled counts as committed. The writer
 * reconnects with backoff (100 ms to 5 s) and flushes the spool oldest first, each batch in one
 * transaction, before new rows reach the store; a DLQ entry already there counts as flushed, a
 * delivery record already there is skipped (never twice). Outbox rows are never spooled.
 * At most spool_max rows (0: 100000): beyond it delivery records are dropped first, a DLQ entry
 * only when nothing else is left to drop, each drop logged and counted. A spool left by an
 * earlier run is flushed at start. An idle writer pings a shared store every 2 s.
 * NULL / "" spool_path: no spool (rows the lost store could not take fail, as before).
 * On SQLite the spool is never opened: it behaves as th_writer_start.
 */
struct th_writer_opts {
    size_t max_queue;
    const char *spool_path; /* copied */
    size_t spool_max;
};
th_err th_writer_start_opts(struct th_store *st, const struct th_writer_opts *o,
                            struct th_writer **out);

/* false while the shared store is out of reach (its last round trip failed): /readyz. */
bool th_writer_store_ready(struct th_writer *w);
/* Drains, joins the thread, closes the store, frees. NULL is a no-op. */
void th_writer_stop(struct th_writer *w);

/* done may be NULL. */
th_err th_writer_outbox(struct th_writer *w, const struct th_outbox_row *row,
                        th_writer_done_fn done, void *ud);
/* The same, completing on reply->loop (copied). Not queued (an error): nothing runs. */
th_err th_writer_outbox_on(struct th_writer *w, const struct th_outbox_row *row,
                           const struct th_loop_reply *reply);
th_err th_writer_delivery(struct th_writer *w, const struct th_delivery_row *row);
/* A dead-letter entry; done (may be NULL) says when it is committed. */
th_err th_writer_dlq(struct th_writer *w, const struct th_dlq_row *row, th_writer_done_fn done,
                     void *ud);
/* The same, completing on reply->loop (copied). Not queued (an error): nothing runs. */
th_err th_writer_dlq_on(struct th_writer *w, const struct th_dlq_row *row,
                        const struct th_loop_reply *reply);

/*
 * ---- verifications (docs/conversion.md) ----
 * An Okta event to credit to a delivery (th_store_verify), matched on the writer thread, never
 * on a loop. An event that matches nothing is tried again VERIFY_TRIES times, 2 s apart (the
 * delivery record may still be in this queue, or in another node's), then counted unmatched.
 * On a match of a delivery this node sent (its node id, or a record without one) on_verified
 * runs on the writer thread, after the commit; a delivery another node sent is left to that
 * node, which polls the verifications table every second on a shared store (PostgreSQL) and
 * runs on_verified for what others matched of its own. on_verified must be quick and
 * thread-safe (it posts); the th_verified's strings are valid during the call only.
 * tag (< TH_WRITER_VERIFY_TAGS) is the caller's: results are counted per tag.
 */
#define TH_WRITER_VERIFY_TAGS 2
th_err th_writer_verify(struct th_writer *w, const struct th_verify_event *ev, unsigned tag);
/* Before the first th_writer_verify. node: this process's id (copied); fn may be NULL. */
void th_writer_on_verified(struct th_writer *w, const char *node, th_verified_fn fn, void *ud);
/* Results so far, per tag (th_writer_verify) */
struct th_writer_verify_stats {
    unsigned long long matched[TH_WRITER_VERIFY_TAGS], unmatched[TH_WRITER_VERIFY_TAGS],
        duplicate[TH_WRITER_VERIFY_TAGS], failed[TH_WRITER_VERIFY_TAGS];
    unsigned long long callbacks; /* on_verified calls: local matches and polled ones */
    unsigned long long polled;    /* of them, matches other nodes made (the poll) */
};
void th_writer_verify_stats(struct th_writer *w, struct th_writer_verify_stats *out);
/* Test hook: the retry's pause and the poll's period (defaults 2000 and 1000 ms). */
void th_writer_set_verify_timing(struct th_writer *w, int retry_ms, int poll_ms);

/*
 * ---- delivery receipts (th_store_receipt_apply) ----
 * Queued apart from the rows (their own bound, max_receipts; TH_E_OVERLOAD when full: the
 * sender is answered 503 and retries), applied between batches in one transaction a turn, while
 * the store is within reach (a lost store keeps them queued). A receipt whose record is not
 * there yet (it can beat its record: the provider answers before our batch commits) is tried
 * again every retry_ms, at most tries times, then counted unmatched and dropped.
 * on_receipt(ud, applied) runs on the writer thread after the commit, once per receipt that
 * changed its record (quick and thread-safe: it counts, or posts to a loop); not for one that
 * was stale (its record already holds a newer or more final status).
 * Set before the first receipt is queued; fn may be NULL. max_receipts 0: 4096; retry_ms 0:
 * 1000; tries 0: 10.
 */
typedef void (*th_writer_receipt_fn)(void *ud, const struct th_receipt_applied *r);
void th_writer_on_receipt(struct th_writer *w, th_writer_receipt_fn fn, void *ud,
                          size_t max_receipts, int64_t retry_ms, int tries);
/* Copies row. TH_E_OVERLOAD when the receipt queue is full (counted). */
th_err th_writer_receipt(struct th_writer *w, const struct th_receipt_row *row);

/* Rows older than these many days are deleted at start and hourly (0 = kept forever). */
void th_writer_set_retention(struct th_writer *w, int dlq_days, int deliveries_days,
                             int outbox_days);

/*
 * Items written and dropped so far (for metrics and tests), and the DLQ depth: the entries the
 * store holds, whoever wrote or deleted them. The writer counts them (a query on its own
 * connection, never on the caller's thread) at start, after each retention purge, and when
 * th_writer_stats finds the last count older than the refresh; its own committed entries are
 * added at once. So a delete by `telehook dlq` (another process) shows within one refresh plus
 * the next call.
 */
struct th_writer_stats {
    unsigned long long written, failed, rejected_full;
    size_t queued;
    long long dlq_depth;
    size_t spooled;                                  /* rows in the spool now */
    unsigned long long spool_flushed, spool_dropped; /* rows handed over / dropped at its cap */
    bool store_up;                                   /* th_writer_store_ready */
    /* receipts: changed their record, already had a newer one, found no record after every
     * try, failed in the store, refused for a full queue; waiting (queued or to retry) */
    unsigned long long receipts_applied, receipts_stale, receipts_unmatched, receipts_failed,
        receipts_rejected_full;
    size_t receipts_waiting;
};
void th_writer_stats(struct th_writer *w, struct th_writer_stats *out);

/* The refresh of the DLQ depth; ms <= 0: the default. */
#define TH_WRITER_DLQ_REFRESH_MS 30000
void th_writer_set_dlq_refresh(struct th_writer *w, int64_t ms);

#endif
