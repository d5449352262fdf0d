/*
 * Provider feedback: the messages their recipient verified (the code was used at Okta), reported
 * to the provider that sent them — AWS End User Messaging PutMessageFeedback (RECEIVED), Twilio
 * Message Feedback (Outcome=confirmed). The providers use it for their own delivery and
 * conversion statistics; it is off unless [feedback] enabled (docs/conversion-feedback.md).
 *
 * - th_feedback_verified() is called from any thread (the store writer, on a verification): it
 *   copies the two strings into a bounded queue ([feedback] max_queue) under a lock held for a
 *   few instructions and wakes the draining loop. O(1), never I/O; a full queue drops, counted.
 * - The loop given to th_feedback_start drains it, never a hook's request: at most
 *   TH_FEEDBACK_IN_FLIGHT calls at once, on its own HTTP client, each through the router's
 *   provider of that name (its credentials, its signing: provider.h's feedback op).
 * - A failure that may pass (timeout, connection, 5xx, throttling, credentials not there yet) is
 *   tried again twice, after 0.5 s then 2 s. A failure is logged with the provider and the reason
 *   (never the number, the code or the message id) and counted; a message the provider has no
 *   feedback for (a Twilio call, a provider without feedback, a provider turned off in
 *   [feedback]) is counted as skipped.
 * - Metrics: telehook_feedback_total{provider,result} — sent, failed, dropped, skipped.
 */
#ifndef TH_ROUTE_FEEDBACK_H
#define TH_ROUTE_FEEDBACK_H

#include <stdint.h>

#include "common/err.h"
#include "config/config.h"
#include "loop/loop.h"
#include "route/router.h"

#define TH_FEEDBACK_IN_FLIGHT 8

struct th_feedback;

/* router: borrowed, outlives the queue. *out is NULL (and every call a no-op) when [feedback] is
 * not enabled. TH_E_NOMEM only. */
th_err th_feedback_new(const struct th_config *cfg, struct th_router *router,
                       struct th_feedback **out);

/* Drains on loop from now on: call it before the loop runs, or on its thread. Once. What was
 * queued before is sent then. The queue's calls end with the loop (those in flight are aborted,
 * what is still queued is logged and forgotten). */
th_err th_feedback_start(struct th_feedback *fb, struct th_loop *loop);

/* The message provider accepted as transaction_id was verified. Any thread; NULL fb is a no-op. */
void th_feedback_verified(struct th_feedback *fb, const char *provider, const char *transaction_id);

/* Counts so far for one provider ("aws", "twilio"; any other name: "other"). */
struct th_feedback_counts {
    uint64_t sent, failed, dropped, skipped, retried;
};
void th_feedback_counts(struct th_feedback *fb, const char *provider,
                        struct th_feedback_counts *out);

struct th_metrics;
/* telehook_feedback_total{provider,result}; fb must outlive every render. NULL fb: nothing. */
th_err th_feedback_metrics(struct th_feedback *fb, struct th_metrics *m);

/* After the loop has stopped. NULL is a no-op. */
void th_feedback_free(struct th_feedback *fb);

#endif
