/*
 * A refresher: one background thread that runs fn on a schedule fn itself chooses, can be asked
 * to run it now, and stops promptly. The AWS credentials and the issuer's signing keys each keep
 * one; the thread, its flag and its condition variable are written once, here.
 *
 * fn runs on the refresher's thread only, one round at a time, and returns how long to wait
 * before the next round: a delay in ms (>= 0), or < 0 to wait until kicked or stopped. A kick
 * during a round makes the next round start as soon as this one ends. The caller keeps its own
 * locking of what fn updates: the refresher locks only its own flags, never around fn.
 *
 * th_refresher_stop() wakes the thread, waits for a round in progress to end (fn may look at
 * th_refresher_stopping() to cut a long one short) and joins it: once it returns, fn never runs
 * again. Waits use the monotonic clock: a step of the wall clock neither stretches nor cuts one.
 */
#ifndef TH_LOOP_REFRESHER_H
#define TH_LOOP_REFRESHER_H

#include <stdbool.h>
#include <stdint.h>

#include "common/err.h"

struct th_refresher;

typedef int64_t (*th_refresher_fn)(void *ud);

/*
 * Starts the thread; the first round runs after first_delay_ms (0: at once). *out is set before
 * the thread starts, so fn may reach the refresher through ud (for th_refresher_stopping). On
 * failure *out is NULL and fn never runs.
 */
th_err th_refresher_start(th_refresher_fn fn, void *ud, int64_t first_delay_ms,
                          struct th_refresher **out);
/* Run a round now (or right after the current one). Any thread. */
void th_refresher_kick(struct th_refresher *r);
/* True once th_refresher_stop() has begun. Any thread. */
bool th_refresher_stopping(struct th_refresher *r);
/* Wakes, joins, frees. NULL is a no-op. Not from fn (its own thread). */
void th_refresher_stop(struct th_refresher *r);

#endif
