#include "route/feedback.h"

#include <pthread.h>
#include <stdalign.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>

#include "common/arena.h"
#include "common/util.h"
#include "net/http.h"
#include "obs/log.h"
#include "obs/metrics.h"
#include "provider/provider.h"

#define TRIES      3     /* the first call and two more */
#define BACKOFF_MS 500   /* before the second try; four times that before the third */
#define TIMEOUT_MS 10000 /* a call's own time: no request waits on it */
#define CALL_ARENA 4096  /* an attempt's memory: URL, signed headers, a small body */

enum { P_AWS, P_TWILIO, P_OTHER, P__COUNT };
static const char *const pnames[P__COUNT] = {"aws", "twilio", "other"};
enum { R_SENT, R_FAILED, R_DROPPED, R_SKIPPED, R_RETRIED, R__COUNT };
static const char *const rnames[R__COUNT] = {"sent", "failed", "dropped", "skipped", "retried"};

struct item {
    char provider[16];
    char id[96];
};

/* One feedback call in flight, or waiting for its next try. */
struct call {
    struct th_feedback *fb;
    bool busy;
    struct item it;
    int tries;
    struct th_timer retry;
    struct th_arena arena; /* the attempt's; released before the next try (it must outlive the
                              provider's done, which runs inside the transfer's completion) */
    alignas(max_align_t) unsigned char chunk[CALL_ARENA];
};

struct th_feedback {
    const struct th_config *cfg;
    struct th_router *router;
    struct th_loop *loop;
    struct th_http *http;
    bool stopping;
    pthread_mutex_t mu; /* the queue and wake_queued: a few instructions, never I/O */
    struct item *ring;
    size_t cap, head, n;
    bool wake_queued;
    struct th_loop_call wake;
    struct call calls[TH_FEEDBACK_IN_FLIGHT];
    struct th_counter counts[P__COUNT][R__COUNT];
};

static int pindex(const char *provider)
{
    for (int i = 0; i < P_OTHER; i++)
        if (strcmp(provider, pnames[i]) == 0)
            return i;
    return P_OTHER;
}

static void count(struct th_feedback *fb, const char *provider, int result)
{
    th_counter_inc(&fb->counts[pindex(provider)][result]);
}

th_err th_feedback_new(const struct th_config *cfg, struct th_router *router,
                       struct th_feedback **out)
{
    *out = NULL;
    if (!cfg->feedback_enabled)
        return TH_E_OK;
    struct th_feedback *fb = calloc(1, sizeof *fb);
    if (!fb)
        return TH_E_NOMEM;
    fb->cap = cfg->feedback_max_queue > 0 ? (size_t)cfg->feedback_max_queue : 1;
    fb->ring = calloc(fb->cap, sizeof *fb->ring);
    if (!fb->ring) {
        free(fb);
        return TH_E_NOMEM;
    }
    fb->cfg = cfg;
    fb->router = router;
    pthread_mutex_init(&fb->mu, NULL);
    for (int i = 0; i < TH_FEEDBACK_IN_FLIGHT; i++) {
        fb->calls[i].fb = fb;
        th_arena_init(&fb->calls[i].arena, fb->calls[i].chunk, CALL_ARENA, 4 * CALL_ARENA);
    }
    *out = fb;
    return TH_E_OK;
}

/* Whether the configuration asks for feedback from this provider. */
static bool wanted(const struct th_feedback *fb, const char *provider)
{
    if (strcmp(provider, "aws") == 0)
        return fb->cfg->feedback_aws;
    if (strcmp(provider, "twilio") == 0)
        return fb->cfg->feedback_twilio;
    return false; /* outbox, webhook: nobody to tell */
}

void th_feedback_verified(struct th_feedback *fb, const char *provider, const char *transaction_id)
{
    if (!fb)
        return;
    if (!provider || !transaction_id || !transaction_id[0] ||
        strlen(transaction_id) >= sizeof fb->ring[0].id ||
        strlen(provider) >= sizeof fb->ring[0].provider || !wanted(fb, provider)) {
        count(fb, provider ? provider : "", R_SKIPPED);
        return;
    }
    bool dropped = false;
    pthread_mutex_lock(&fb->mu);
    if (fb->n == fb->cap) {
        dropped = true;
    } else {
        struct item *it = &fb->ring[(fb->head + fb->n) % fb->cap];
        th_strlcpy(it->provider, provider, sizeof it->provider);
        th_strlcpy(it->id, transaction_id, sizeof it->id);
        fb->n++;
        /* Posted under the lock (loop.h: a waker that posts under its own lock); once at a time. */
        if (fb->loop && !fb->wake_queued)
            fb->wake_queued = th_loop_call_post(&fb->wake);
    }
    pthread_mutex_unlock(&fb->mu);
    if (dropped)
        count(fb, provider, R_DROPPED);
}

static void start_call(struct call *c);

static void drain(void *ud)
{
    struct th_feedback *fb = ud;
    struct call *ready[TH_FEEDBACK_IN_FLIGHT];
    int nready = 0;
    pthread_mutex_lock(&fb->mu);
    fb->wake_queued = false;
    for (int i = 0; i < TH_FEEDBACK_IN_FLIGHT && fb->n > 0 && !fb->stopping; i++) {
        struct call *c = &fb->calls[i];
        if (c->busy)
            continue;
        c->it = fb->ring[fb->head];
        fb->head = (fb->head + 1) % fb->cap;
        fb->n--;
        c->busy = true;
        c->tries = 0;
        ready[nready++] = c;
    }
    pthread_mutex_unlock(&fb->mu);
    for (int i = 0; i < nready; i++)
        start_call(ready[i]);
}

/* The slot is free: the next queued one starts on the next turn, not here — this may run inside
 * the provider's done, and the slot's arena must outlive its return. */
static void call_end(struct call *c)
{
    struct th_feedback *fb = c->fb;
    c->busy = false;
    pthread_mutex_lock(&fb->mu);
    if (!fb->stopping && fb->n > 0 && !fb->wake_queued)
        fb->wake_queued = th_loop_call_post(&fb->wake);
    pthread_mutex_unlock(&fb->mu);
}

static void retry_fired(void *ud)
{
    start_call(ud);
}

/* A failure: tried again later while tries remain and it may pass, else counted and logged. */
static void failed(struct call *c, bool retryable, const char *why)
{
    struct th_feedback *fb = c->fb;
    if (fb->stopping) {
        c->busy = false;
        return;
    }
    if (retryable && c->tries < TRIES) {
        count(fb, c->it.provider, R_RETRIED);
        int64_t wait_us = (int64_t)BACKOFF_MS * 1000 << (2 * (c->tries - 1));
        th_loop_timer_set(fb->loop, &c->retry, th_mono_us() + wait_us, retry_fired, c);
        return;
    }
    count(fb, c->it.provider, R_FAILED);
    /* why is the provider's error type or status: never the message id, number or code */
    th_log_msg(TH_LOG_WARN, "feedback_failed", "provider %s: feedback not taken after %d tries: %s",
               c->it.provider, c->tries, why);
    call_end(c);
}

static void on_answer(void *ud, const struct th_send_result *res)
{
    struct call *c = ud;
    if (res->err == TH_E_OK) {
        count(c->fb, c->it.provider, R_SENT);
        call_end(c);
        return;
    }
    failed(c, res->retryable, res->error[0] ? res->error : th_strerror(res->err));
}

static void start_call(struct call *c)
{
    struct th_feedback *fb = c->fb;
    th_arena_cleanse_release(&c->arena); /* the previous try's */
    th_arena_init(&c->arena, c->chunk, CALL_ARENA, 4 * CALL_ARENA);
    c->tries++;
    struct th_provider *p = th_router_provider(fb->router, c->it.provider);
    if (!p) {
        count(fb, c->it.provider, R_SKIPPED);
        call_end(c);
        return;
    }
    struct th_attempt at = {
        .loop = fb->loop,
        .http = fb->http,
        .sender = "",
        .timeout_ms = TIMEOUT_MS,
        .arena = &c->arena,
    };
    th_err e = th_provider_feedback(p, &at, c->it.id, on_answer, c);
    if (e == TH_E_OK)
        return;
    if (e == TH_E_INVAL || e == TH_E_NOTFOUND) { /* a call, or no feedback: nothing to tell */
        count(fb, c->it.provider, R_SKIPPED);
        call_end(c);
        return;
    }
    /* no credentials yet, the client's transfers all busy: may pass */
    failed(c, e == TH_E_AUTH || e == TH_E_OVERLOAD, th_strerror(e));
}

static void free_http(void *ud)
{
    th_http_free(ud);
}

/* Runs before the client is freed (at-exit handlers run last in, first out): the transfers it
 * aborts then find the queue stopping and are not tried again. */
static void stop(void *ud)
{
    struct th_feedback *fb = ud;
    pthread_mutex_lock(&fb->mu);
    fb->stopping = true;
    size_t left = fb->n;
    pthread_mutex_unlock(&fb->mu);
    th_loop_call_withdraw(&fb->wake);
    for (int i = 0; i < TH_FEEDBACK_IN_FLIGHT; i++)
        if (th_timer_armed(&fb->calls[i].retry)) {
            th_loop_timer_cancel(fb->loop, &fb->calls[i].retry);
            fb->calls[i].busy = false;
        }
    if (left)
        th_log_msg(TH_LOG_INFO, "feedback_stopped", "%zu verified messages not reported", left);
}

th_err th_feedback_start(struct th_feedback *fb, struct th_loop *loop)
{
    if (!fb)
        return TH_E_OK;
    th_err e = th_http_new(loop, TH_FEEDBACK_IN_FLIGHT, &fb->http);
    if (e != TH_E_OK)
        return e;
    if ((e = th_loop_at_exit(loop, free_http, fb->http)) != TH_E_OK) {
        th_http_free(fb->http);
        fb->http = NULL;
        return e;
    }
    if ((e = th_loop_at_exit(loop, stop, fb)) != TH_E_OK)
        return e;
    pthread_mutex_lock(&fb->mu);
    th_loop_call_init(&fb->wake, loop, drain, NULL, fb);
    fb->loop = loop;
    if (fb->n > 0)
        fb->wake_queued = th_loop_call_post(&fb->wake);
    pthread_mutex_unlock(&fb->mu);
    return TH_E_OK;
}

void th_feedback_counts(struct th_feedback *fb, const char *provider,
                        struct th_feedback_counts *out)
{
    int p = pindex(provider);
    *out = (struct th_feedback_counts){
        .sent = th_counter_get(&fb->counts[p][R_SENT]),
        .failed = th_counter_get(&fb->counts[p][R_FAILED]),
        .dropped = th_counter_get(&fb->counts[p][R_DROPPED]),
        .skipped = th_counter_get(&fb->counts[p][R_SKIPPED]),
        .retried = th_counter_get(&fb->counts[p][R_RETRIED]),
    };
}

th_err th_feedback_metrics(struct th_feedback *fb, struct th_metrics *m)
{
    if (!fb)
        return TH_E_OK;
    static const char *const labels[] = {"provider", "result", NULL};
    struct th_metric_family *f;
    th_err e = th_metrics_family(m, "telehook_feedback_total",
                                 "Verified messages reported to their provider, by result: sent "
                                 "(taken), failed (after the retries), dropped (queue full), "
                                 "skipped (nothing to tell: a call, a provider turned off), "
                                 "retried (tries after a failure that may pass).",
                                 TH_METRIC_COUNTER, labels, P__COUNT * R__COUNT, &f);
    for (int p = 0; e == TH_E_OK && p < P__COUNT; p++)
        for (int r = 0; e == TH_E_OK && r < R__COUNT; r++)
            e = th_metrics_counter(f, (const char *const[]){pnames[p], rnames[r], NULL},
                                   &fb->counts[p][r]);
    return e;
}

void th_feedback_free(struct th_feedback *fb)
{
    if (!fb)
        return;
    for (int i = 0; i < TH_FEEDBACK_IN_FLIGHT; i++)
        th_arena_cleanse_release(&fb->calls[i].arena);
    free(fb->ring);
    pthread_mutex_destroy(&fb->mu);
    free(fb);
}
