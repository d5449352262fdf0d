/*
 * Providers: one ops table per way of delivering a message — the outbox (development), AWS End
 * User Messaging SMS and Voice v2, Twilio, and a customer's webhook. A provider makes ONE
 * attempt; choosing providers, failing over and circuit breaking are the router's
 * (route/router.h). A provider knows nothing of Okta or of the HTTP server.
 *
 * A send is asynchronous: send() returns TH_E_OK and later calls done exactly once, on the loop
 * in the context; or it returns an error and never calls done. done is never called from
 * inside send(), so callers need not guard against re-entrance.
 *
 * Everything particular to a provider lives in its own file: its config section ("is it
 * configured?", its timeout), its request, and the reading of its answers (parse). The router
 * above names no provider: it walks the registration table (th_provider_kind_at). Adding a
 * provider is its file plus one line in provider.c's TH_PROVIDERS list (docs/providers.md).
 */
#ifndef TH_PROVIDER_PROVIDER_H
#define TH_PROVIDER_PROVIDER_H

#include <stdbool.h>
#include <stdint.h>

#include "common/arena.h"
#include "common/err.h"
#include "config/config.h"
#include "net/http.h"
#include "loop/loop.h"
#include "message/message.h"

/* What to send: struct th_send (common/types.h). Every pointer is borrowed until done is called. */

/* Where and how one attempt runs. */
struct th_attempt {
    struct th_loop *loop;
    struct th_http *http; /* the loop's outbound client */
    const char *sender;   /* origination identity / From; "" = the provider's configured default */
    int64_t timeout_ms;   /* for this attempt: already capped by the request's deadline */
    struct th_arena *arena; /* the request's (never NULL): the attempt's memory; it outlives the
                               return of the provider's done */
};

struct th_send_result {
    th_err err;              /* TH_E_OK when the provider accepted the message */
    bool retryable;          /* worth trying another route (timeout, 5xx, throttling, ...) */
    char transaction_id[96]; /* the provider's message/call id */
    char error[160];         /* short reason for logs and records; never message content */
};

typedef void (*th_send_done_fn)(void *ud, const struct th_send_result *res);

/*
 * A provider's reading of an HTTP answer (status, captured headers, body) into a result: success
 * with its id, or a failure classified retryable or permanent. Pure (no I/O), so the fuzzer
 * (tests/fuzz/fuzz_provider.c) feeds every registered one anything a provider — or something
 * pretending to be one — sends.
 */
typedef void (*th_provider_parse_fn)(const struct th_http_response *res,
                                     struct th_send_result *out);

struct th_provider;

struct th_provider_ops {
    th_err (*send)(struct th_provider *p, const struct th_attempt *at, const struct th_send *msg,
                   th_send_done_fn done, void *ud);
    /*
     * Optional (NULL: the provider takes no feedback): tells the provider the message it accepted
     * as transaction_id was verified by its recipient (AWS PutMessageFeedback RECEIVED, Twilio
     * Message Feedback confirmed), as send does: TH_E_OK and done later exactly once on
     * at->loop (its result: the provider's answer; transaction_id unused), or an error and done
     * never. TH_E_INVAL: an id this provider has no feedback for (a Twilio call). at->sender is
     * unused. The id is borrowed until send returns (copied into the attempt).
     */
    th_err (*feedback)(struct th_provider *p, const struct th_attempt *at,
                       const char *transaction_id, th_send_done_fn done, void *ud);
    /* false while the provider cannot send yet (e.g. AWS credentials not fetched). Optional. */
    bool (*ready)(struct th_provider *p);
    void (*free)(struct th_provider *p);
};

struct th_provider {
    const struct th_provider_ops *ops;
    const char *name; /* "aws", "twilio", ...: in routes, records and Okta's answer */
    int timeout_ms;   /* one attempt's time from its config section; the router caps it by the
                         request's deadline */
};

struct th_outbox_sink;

/*
 * One way of delivering, as registered in provider.c. create builds it from its config section
 * (TH_E_CONFIG with the reason in err when the section lacks what it needs); sink is for the
 * outbox only. configured: whether the section is filled in, so the provider is set up at start
 * even when no route names it yet (a reloaded route may); NULL = only when named.
 */
struct th_provider_kind {
    const char *name;
    th_err (*create)(const struct th_config *cfg, const struct th_outbox_sink *sink,
                     struct th_provider **out, char *err, size_t errlen);
    bool (*configured)(const struct th_config *cfg);
    const char *required; /* the key configured() looks at ("account_sid"), for messages */
    /* Whether create would succeed here, without its side effects (AWS: a credentials thread;
     * the host's credentials are seen only by the server). NULL: th_provider_can_set_up builds
     * the provider and frees it. */
    bool (*check)(const struct th_config *cfg, char *why, size_t whylen);
    const char *how_to_configure; /* one line for an operator (`routes set`'s refusal) */
    th_provider_parse_fn parse;   /* NULL for a provider that speaks no HTTP (the outbox) */
};

/* The registered kinds, in registration order; NULL past the last. */
const struct th_provider_kind *th_provider_kind_at(size_t i);
const struct th_provider_kind *th_provider_kind_find(const char *name);

/*
 * Where the outbox provider puts what it "delivers" (serve: the store's outbox table, through the
 * writer thread). put() copies what it keeps and the reply; once the item is kept (or could not
 * be) the reply runs as loop/loop.h says: done(ud, result) on reply->loop's thread, or lost(ud)
 * when that loop has finished. It returns an error, and runs neither, when it cannot take the
 * item.
 */
struct th_outbox_item {
    const char *id; /* the transaction id Okta is given */
    int64_t created_ms;
    const char *request_id, *to, *channel, *language;
    const char *body; /* rendered text or SSML: the OTP (the outbox plays the handset) */
    const char *voice_id;
};
struct th_outbox_sink {
    th_err (*put)(void *ud, const struct th_outbox_item *item, const struct th_loop_reply *reply);
    void *ud;
};

/*
 * Builds the provider called name (a registered kind: "outbox", "aws", "twilio", "webhook") from
 * its config section. TH_E_CONFIG with the reason in err when the section lacks what it needs.
 * sink: where the outbox keeps its messages (NULL: an outbox that is only checked, never sends).
 */
th_err th_provider_new(const char *name, const struct th_config *cfg,
                       const struct th_outbox_sink *sink, struct th_provider **out, char *err,
                       size_t errlen);
void th_provider_free(struct th_provider *p); /* NULL is a no-op */

/*
 * Whether a server with cfg sets up the provider called name (router.c skips the attempts of one
 * it cannot); false with the reason in why. For the CLI's checks: no thread, no network.
 */
bool th_provider_can_set_up(const char *name, const struct th_config *cfg, char *why,
                            size_t whylen);
bool th_provider_ready(struct th_provider *p);

static inline th_err th_provider_send(struct th_provider *p, const struct th_attempt *at,
                                      const struct th_send *msg, th_send_done_fn done, void *ud)
{
    return p->ops->send(p, at, msg, done, ud);
}

/* TH_E_NOTFOUND when p takes no feedback; else its feedback op's contract. */
static inline th_err th_provider_feedback(struct th_provider *p, const struct th_attempt *at,
                                          const char *transaction_id, th_send_done_fn done,
                                          void *ud)
{
    return p->ops->feedback ? p->ops->feedback(p, at, transaction_id, done, ud) : TH_E_NOTFOUND;
}

#endif
