/*
 * The hook pipeline: drives one authenticated Okta request through decode → phone → compose →
 * send → answer, under the request's deadline, and records what happened. It knows nothing of
 * libmicrohttpd: the transport hands it a body and gets the answer through a callback.
 */
#ifndef TH_HOOK_HOOK_H
#define TH_HOOK_HOOK_H

#include <stddef.h>
#include <stdint.h>

#include "common/err.h"
#include "config/config.h"
#include "loop/loop.h"
#include "message/message.h"
#include "route/router.h"
#include "dlq/dlq.h"
#include "guard/guard.h"
#include "store/writer.h"

struct th_hook;

/* Everything is borrowed and must outlive the hook. */
struct th_hook_deps {
    const struct th_config *cfg;
    const struct th_templates *templates;
    const struct th_prefs *prefs; /* users' language preferences; NULL: none */
    struct th_router *router;
    struct th_writer *writer;
    struct th_guard *guard; /* abuse controls; NULL: none */
    struct th_dlq *dlq;     /* dead-letter sealing; NULL: no dead-letter queue */
};

th_err th_hook_new(const struct th_hook_deps *deps, struct th_hook **out);
void th_hook_free(struct th_hook *hook); /* NULL is a no-op; no request may be in flight */

/*
 * The answer for the transport: an HTTP status and a JSON body (owned by the callee: free()).
 * Called exactly once per th_hook_handle, on the same loop, possibly before th_hook_handle
 * returns (errors found while decoding) or later (after the provider answered or the deadline).
 */
typedef void (*th_hook_answer_fn)(void *ud, int http_status, char *body, size_t len);

struct th_hook_call {
    const char *request_id; /* telehook's id for this request (copied) */
    int64_t arrived_us;     /* monotonic arrival time: the deadline counts from here */
    const char *body;       /* borrowed for the call only */
    size_t len;
};

void th_hook_handle(struct th_hook *hook, struct th_loop *loop, const struct th_hook_call *call,
                    th_hook_answer_fn answer, void *ud);

/*
 * Replaces the template set (thread-safe; requests already running keep the set they started
 * with). Returns the previous set: the caller must keep it alive until no request can still use
 * it — serve keeps every replaced set until shutdown (a few KiB per reload).
 */
const struct th_templates *th_hook_swap_templates(struct th_hook *hook,
                                                  const struct th_templates *set);

/* The same for the users' preferences (serve keeps every replaced map until shutdown). */
const struct th_prefs *th_hook_swap_prefs(struct th_hook *hook, const struct th_prefs *prefs);

/*
 * Registers the hook's metrics (requests by outcome, answer time, in flight, ambiguous numbers,
 * the hook's refusals by reason, dead-letter entries stored) in m, bound to the hook's counters:
 * the hook must outlive every render of m. Once, at start.
 */
struct th_metrics;
th_err th_hook_metrics(struct th_hook *hook, struct th_metrics *m);

/* The same counters as numbers (for CloudWatch EMF lines): totals since start. */
#define TH_HOOK_OUTCOMES 8
struct th_hook_counts {
    uint64_t by_outcome[TH_HOOK_OUTCOMES]; /* in th_hook_outcome_name order */
    uint64_t answered;                     /* requests with a latency recorded */
    uint64_t latency_sum_us;
};
void th_hook_counts(struct th_hook *hook, struct th_hook_counts *out);
const char *th_hook_outcome_name(size_t i); /* "SUCCESSFUL", ...; NULL past the last */

/* Requests between th_hook_handle and their answer, across all loops (for shutdown). */
long th_hook_in_flight(const struct th_hook *hook);

#endif
