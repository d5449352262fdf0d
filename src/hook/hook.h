/*
 * The hook pipeline: drives one authenticated Okta request through decode → phone → compose →
 * send → answer, under the request's deadline, and records what happened. It knows nothing of
 * libmicrohttpd: the transport hands it a body and gets the answer through a callback.
 */
#ifndef TH_HOOK_HOOK_H
#define TH_HOOK_HOOK_H

#include <stddef.h>
#include <stdint.h>

#include "common/arena.h"
#include "common/err.h"
#include "config/config.h"
#include "loop/loop.h"
#include "message/message.h"
#include "route/router.h"
#include "dlq/dlq.h"
#include "guard/conv.h"
#include "guard/guard.h"
#include "store/writer.h"

struct th_hook;

/*
 * Where the hook sends a message (serve: the router) and records what happened (serve: the store
 * writer): small ops tables, so a test drives the hook with scripted ones.
 *
 * send: as th_router_send. done is called exactly once, later, on loop, with done_ud; the caller's
 * strings in msg stay valid until then. The sender may allocate what it keeps for the message
 * from arena (the request's: it lives until done has been called, and a little longer).
 */
struct th_hook_sender {
    void (*send)(void *ud, struct th_loop *loop, struct th_arena *arena, const struct th_send *msg,
                 th_route_done_fn done, void *done_ud);
    void *ud;
};

/*
 * delivery: as th_writer_delivery (copies the row; an error means it was dropped).
 * dlq: as th_writer_dlq_on: exactly one of reply->done (on reply->loop, once the entry is
 * committed or failed) and reply->lost (the loop has finished) runs; neither when dlq returns an
 * error.
 */
struct th_hook_recorder {
    th_err (*delivery)(void *ud, const struct th_delivery_row *row);
    th_err (*dlq)(void *ud, const struct th_dlq_row *row, const struct th_loop_reply *reply);
    void *ud;
};

/* Everything is borrowed and must outlive the hook. */
struct th_hook_deps {
    const struct th_config *cfg;
    const struct th_templates *templates;
    const struct th_prefs *prefs; /* users' language preferences; NULL: none */
    struct th_hook_sender sender;
    struct th_hook_recorder recorder;
    struct th_guard *guard; /* abuse controls; NULL: none */
    struct th_dlq *dlq;     /* dead-letter sealing; NULL: no dead-letter queue */
    /* conversion blocks, asked after the guard lets a request through and told of every
     * message a provider accepted; NULL (or no guard.secret: no prefix keys): none */
    struct th_conv *conv;
};

th_err th_hook_new(const struct th_hook_deps *deps, struct th_hook **out);
void th_hook_free(struct th_hook *hook); /* NULL is a no-op; no request may be in flight */

/*
 * Where one Okta request is. The transport moves it through the first states, the hook through
 * the rest; only ANSWERED and DONE mean Okta has its answer.
 */
enum th_req_state {
    TH_REQ_RECEIVING,   /* transport: headers accepted, the body being read */
    TH_REQ_AUTH_WAIT,   /* transport: suspended until the issuer's keys are refreshed (unknown
                           kid); authenticated again on the call that resumes it */
    TH_REQ_REFUSED,     /* transport: a refusal is queued; what the client still sends is dropped */
    TH_REQ_TOO_BIG,     /* transport: past server.max_body; drained, then answered 413 */
    TH_REQ_DECODED,     /* hook: decoded; guard and compose run */
    TH_REQ_GUARD_WAIT,  /* hook: the shared guard state (PostgreSQL) is deciding */
    TH_REQ_DEDUPE_WAIT, /* hook: waiting for an in-flight duplicate's first outcome */
    TH_REQ_SENDING,     /* hook: a provider has the message; its answer is owed to us */
    TH_REQ_DLQ_HOLD,    /* hook: no delivery; the answer is held until the dead-letter commit */
    TH_REQ_ANSWERED,    /* Okta has its answer; a late provider answer or commit may still come */
    TH_REQ_DONE,        /* nothing more will come to the hook */
};

/*
 * One Okta request: one object, one lifetime, from its first byte to the last callback owed to
 * it. The transport allocates it (with the arena's first chunk inside its own allocation: no
 * malloc for a normal request) and passes it by pointer down the path: the body is read into the
 * arena, the decoded fields, the rendered text, the answer, the router's job and the provider's
 * attempt are allocated from it. It is counted: the transport holds it until its connection is
 * done, the hook until no callback is owed to it (a provider may answer after the deadline), the
 * transport's answer while libmicrohttpd sends it. The last drop wipes the arena (the OTP, the
 * text and the body: the one place they are cleansed) and calls free_fn. One loop only.
 */
struct th_hook_req {
    struct th_arena arena;
    enum th_req_state state;
    int refs;
    int64_t arrived_us; /* monotonic */
    int64_t
        deadline_us; /* arrived_us + server.deadline_ms: the one deadline (dedupe wait, router) */
    char id[24];     /* telehook's id for the request: "r-..." */
    void (*free_fn)(struct th_hook_req *req); /* the owner's: frees the memory */
    struct hreq *hook_;                       /* private: the hook's part, in the arena */
};

/* refs = 1 (the caller's); first/first_size/cap as th_arena_init; the id is made here. */
void th_hook_req_init(struct th_hook_req *req, void *first, size_t first_size, size_t cap,
                      int64_t arrived_us, int deadline_ms, void (*free_fn)(struct th_hook_req *));
void th_hook_req_hold(struct th_hook_req *req);
/* The last drop cleanses and releases the arena, then calls free_fn. */
void th_hook_req_drop(struct th_hook_req *req);

/*
 * The answer for the transport: an HTTP status and a JSON body in the request's arena (valid
 * while the transport holds the request; NULL: out of memory, answer 500). Called exactly once
 * per th_hook_handle, on the same loop, possibly before th_hook_handle returns (errors found
 * while decoding) or later (after the provider answered, the deadline, or the DLQ hold).
 */
typedef void (*th_hook_answer_fn)(void *ud, int http_status, const char *body, size_t len);

struct th_hook_call {
    const char *body; /* in the request's arena (or any memory that outlives the call) */
    size_t len;
    size_t
        cap; /* bytes readable at body: len + TH_OKTA_PADDING or more, and it is parsed in place */
};

/* The hook holds req until nothing more is owed to it (see struct th_hook_req). */
void th_hook_handle(struct th_hook *hook, struct th_loop *loop, struct th_hook_req *req,
                    const struct th_hook_call *call, th_hook_answer_fn answer, void *ud);

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
