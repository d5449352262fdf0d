/*
 * Providers: one ops table per way of delivering a message (outbox now; AWS End User Messaging,
 * Twilio and webhook plug in the same way). A provider knows nothing of HTTP servers or Okta.
 *
 * A send is asynchronous: send() returns TH_E_OK and later calls done exactly once, on the loop
 * passed to send(); or it returns an error and never calls done. done is never called from
 * inside send(), so callers need not guard against re-entrance.
 */
#ifndef TH_PROVIDER_PROVIDER_H
#define TH_PROVIDER_PROVIDER_H

#include <stdbool.h>
#include <stdint.h>

#include "common/err.h"
#include "config/config.h"
#include "loop/loop.h"
#include "message/message.h"
#include "store/writer.h"

/* What to send. Every pointer is borrowed for the duration of send() only. */
struct th_send {
    const char *request_id;
    const char *to;     /* E.164 */
    const char *region; /* "US", "" when non-geographic */
    th_channel channel;
    const char *language;
    const char *body; /* SMS text, or SSML for voice */
    const char *voice_id;
    int64_t otp_expires_ms; /* unix ms, 0 when unknown */
    int64_t deadline_us;    /* monotonic: answer by then */
};

struct th_send_result {
    th_err err;              /* TH_E_OK when the provider accepted the message */
    char transaction_id[96]; /* the provider's message/call id */
    char error[128];         /* short reason for logs and records; never message content */
    bool retryable;          /* worth trying another route */
};

typedef void (*th_send_done_fn)(void *ud, const struct th_send_result *res);

struct th_provider;

struct th_provider_ops {
    th_err (*send)(struct th_provider *p, struct th_loop *loop, const struct th_send *msg,
                   th_send_done_fn done, void *ud);
    void (*free)(struct th_provider *p);
};

struct th_provider {
    const struct th_provider_ops *ops;
    const char *name; /* reported to Okta as "provider" */
};

/* Builds the provider named by cfg->provider_name. writer: the store writer (outbox). */
th_err th_provider_new(const struct th_config *cfg, struct th_writer *writer,
                       struct th_provider **out);
void th_provider_free(struct th_provider *p); /* NULL is a no-op */

static inline th_err th_provider_send(struct th_provider *p, struct th_loop *loop,
                                      const struct th_send *msg, th_send_done_fn done, void *ud)
{
    return p->ops->send(p, loop, msg, done, ud);
}

/* The outbox: records each message in the store (the "handset") and reports success. */
th_err th_provider_outbox_new(struct th_writer *writer, struct th_provider **out);

#endif
