#include "http/events.h"

#include <pthread.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>

#include <openssl/crypto.h>

#include "common/buf.h"
#include "common/hmac.h"
#include "common/util.h"
#include "obs/log.h"
#include "obs/metrics.h"
#include "okta/events.h"

/* Okta's challenge is a short random token; anything longer is not Okta's. */
#define CHALLENGE_MAX 256

enum { TYPE_MFA, TYPE_ENROLL, TYPE_OTHER, NTYPES };
enum { R_QUEUED, R_IGNORED, R_INVALID, R_DROPPED, NLOCAL };

struct th_events;

/* A metrics child reading one of the writer's counts. */
struct cell {
    struct th_events *ev;
    unsigned type, result; /* result: 0 matched, 1 unmatched, 2 duplicate, 3 failed */
};

struct th_events {
    const struct th_config *cfg;
    struct cell cells[TH_WRITER_VERIFY_TAGS][4];
    pthread_mutex_t mu; /* guards writer against th_events_detach */
    struct th_writer *writer;
    struct th_side_route route;
    struct th_counter local[NTYPES][NLOCAL];
    /* the writer's results as last read, kept once it is detached */
    struct th_writer_verify_stats last;
};

static const char *const type_names[NTYPES] = {"auth_via_mfa", "factor_activate", "other"};

static unsigned type_of(enum th_okta_event_type t)
{
    return t == TH_OKTA_EV_MFA ? TYPE_MFA : t == TH_OKTA_EV_ENROLL ? TYPE_ENROLL : TYPE_OTHER;
}

/* [events] header_secret: the configured header must carry exactly the secret. */
static th_err check_secret(void *ud, th_header_lookup_fn header, void *hud, const char **why)
{
    struct th_events *ev = ud;
    size_t len = 0;
    const char *v = header(hud, ev->cfg->events_header_name, &len);
    const char *want = ev->cfg->events_header_secret;
    size_t wlen = strlen(want);
    if (!v) {
        *why = "missing credentials";
        return TH_E_AUTH;
    }
    /* digests compared: CRYPTO_memcmp is constant-time for equal lengths only, and a length
     * check first would answer a wrong length sooner, telling the secret's length */
    unsigned char a[32], b[32];
    th_sha256(v, len, a);
    th_sha256(want, wlen, b);
    bool ok = wlen > 0 && CRYPTO_memcmp(a, b, sizeof a) == 0;
    if (!ok) {
        *why = "event hook secret does not match";
        return TH_E_AUTH;
    }
    return TH_E_OK;
}

static void answer_json(const struct th_side_call *c, int status, struct th_buf *b)
{
    if (th_buf_err(b) != TH_E_OK) {
        static const char oops[] = "{\"error\":\"internal error\"}";
        th_side_answer(c->req, 500, "application/json", oops, sizeof oops - 1);
        return;
    }
    th_side_answer(c->req, status, "application/json", th_buf_str(b), b->len);
}

static void answer_error(const struct th_side_call *c, int status, const char *msg)
{
    struct th_buf b;
    th_buf_init(&b, 512);
    th_buf_appends(&b, "{\"error\":");
    th_buf_append_json(&b, msg, (size_t)-1);
    th_buf_appends(&b, "}");
    answer_json(c, status, &b);
    th_buf_release(&b);
}

/* Okta's one-time verification: the challenge header's value, echoed in JSON. */
static void verify_challenge(const struct th_side_call *c)
{
    size_t len = 0;
    const char *v = c->header(c->header_ud, "X-Okta-Verification-Challenge", &len);
    if (!v || len == 0 || len > CHALLENGE_MAX) {
        answer_error(c, 400, "X-Okta-Verification-Challenge missing or too long");
        return;
    }
    struct th_buf b;
    th_buf_init(&b, 2 * CHALLENGE_MAX * 6);
    th_buf_appends(&b, "{\"verification\":");
    th_buf_append_json(&b, v, len);
    th_buf_appends(&b, "}");
    answer_json(c, 200, &b);
    th_buf_release(&b);
    th_log_msg(TH_LOG_INFO, "events", "Okta event hook verification answered (%s)", c->id);
}

static void handle(void *ud, const struct th_side_call *c)
{
    struct th_events *ev = ud;
    if (strcmp(c->method, "POST") != 0) {
        verify_challenge(c);
        return;
    }
    struct th_okta_event *evs = malloc(TH_OKTA_EVENTS_MAX * sizeof *evs);
    size_t n = 0;
    const char *why = NULL;
    if (!evs) {
        answer_error(c, 503, "out of memory");
        return;
    }
    if (th_okta_events_parse(c->body, c->len, evs, TH_OKTA_EVENTS_MAX, &n, &why) != TH_E_OK) {
        free(evs);
        th_counter_inc(&ev->local[TYPE_OTHER][R_INVALID]);
        th_log_msg(TH_LOG_WARN, "events", "event hook delivery refused (%s): %s", c->id, why);
        answer_error(c, 400, why);
        return;
    }
    int64_t window = (int64_t)ev->cfg->events_window * 1000;
    int64_t skew = (int64_t)ev->cfg->events_skew * 1000;
    bool full = false;
    pthread_mutex_lock(&ev->mu);
    for (size_t i = 0; i < n; i++) {
        const struct th_okta_event *e = &evs[i];
        unsigned t = type_of(e->type);
        if (e->use == TH_OKTA_EV_INVALID) {
            th_counter_inc(&ev->local[t][R_INVALID]);
            continue;
        }
        if (e->use == TH_OKTA_EV_IGNORED) {
            th_counter_inc(&ev->local[t][R_IGNORED]);
            continue;
        }
        struct th_verify_event v = {
            .event_id = e->uuid,
            .user_id = e->user_id,
            .channel = e->channel,
            .from_ms = e->published_ms - window,
            .to_ms = e->published_ms + skew,
            .verified_ms = e->published_ms,
        };
        th_err qe = ev->writer ? th_writer_verify(ev->writer, &v, t) : TH_E_BUSY;
        if (qe == TH_E_OK) {
            th_counter_inc(&ev->local[t][R_QUEUED]);
        } else {
            th_counter_inc(&ev->local[t][R_DROPPED]);
            full = true; /* the rest of the batch too: Okta sends it all again */
        }
    }
    pthread_mutex_unlock(&ev->mu);
    free(evs);
    if (full) {
        answer_error(c, 503, "busy, retry");
        return;
    }
    static const char ok[] = "{\"status\":\"accepted\"}";
    th_side_answer(c->req, 200, "application/json", ok, sizeof ok - 1);
}

th_err th_events_new(const struct th_config *cfg, struct th_writer *writer, struct th_events **out)
{
    struct th_events *ev = calloc(1, sizeof *ev);
    if (!ev)
        return TH_E_NOMEM;
    ev->cfg = cfg;
    ev->writer = writer;
    pthread_mutex_init(&ev->mu, NULL);
    bool own = cfg->events_header_secret && cfg->events_header_secret[0];
    ev->route = (struct th_side_route){
        .path = TH_EVENTS_PATH,
        .methods = TH_SIDE_GET | TH_SIDE_POST,
        .max_body = (size_t)cfg->events_max_body,
        .media = NULL, /* application/json */
        .auth = own ? TH_SIDE_AUTH_CHECK : TH_SIDE_AUTH_HOOK,
        .check = own ? check_secret : NULL,
        .handle = handle,
        .ud = ev,
    };
    *out = ev;
    return TH_E_OK;
}

const struct th_side_route *th_events_route(struct th_events *ev)
{
    return &ev->route;
}

/* The writer's results: read live while attached, the last reading after. */
static void writer_stats(struct th_events *ev, struct th_writer_verify_stats *out)
{
    pthread_mutex_lock(&ev->mu);
    if (ev->writer)
        th_writer_verify_stats(ev->writer, &ev->last);
    *out = ev->last;
    pthread_mutex_unlock(&ev->mu);
}

static double writer_cell(void *ud)
{
    const struct cell *c = ud;
    struct th_writer_verify_stats s;
    writer_stats(c->ev, &s);
    if (c->type >= TH_WRITER_VERIFY_TAGS)
        return 0;
    const unsigned long long *col[] = {s.matched, s.unmatched, s.duplicate, s.failed};
    return (double)col[c->result][c->type];
}

th_err th_events_metrics(struct th_events *ev, struct th_metrics *m)
{
    static const char *const labels[] = {"type", "result", NULL};
    static const char *const local_names[NLOCAL] = {"queued", "ignored", "invalid", "dropped"};
    static const char *const writer_names[] = {"matched", "unmatched", "duplicate", "failed"};
    struct th_metric_family *f;
    th_err e = th_metrics_family(m, "telehook_okta_events_total",
                                 "Okta event hook events, by type and what became of them.",
                                 TH_METRIC_COUNTER, labels, NTYPES * (NLOCAL + 4), &f);
    for (unsigned t = 0; e == TH_E_OK && t < NTYPES; t++)
        for (unsigned r = 0; e == TH_E_OK && r < NLOCAL; r++)
            e = th_metrics_counter(f, (const char *const[]){type_names[t], local_names[r], NULL},
                                   &ev->local[t][r]);
    for (unsigned t = 0; e == TH_E_OK && t < TH_WRITER_VERIFY_TAGS; t++)
        for (unsigned r = 0; e == TH_E_OK && r < 4; r++) {
            ev->cells[t][r] = (struct cell){ev, t, r};
            e = th_metrics_fn(f, (const char *const[]){type_names[t], writer_names[r], NULL},
                              writer_cell, &ev->cells[t][r]);
        }
    return e;
}

void th_events_detach(struct th_events *ev)
{
    if (!ev)
        return;
    pthread_mutex_lock(&ev->mu);
    if (ev->writer)
        th_writer_verify_stats(ev->writer, &ev->last);
    ev->writer = NULL;
    pthread_mutex_unlock(&ev->mu);
}

void th_events_free(struct th_events *ev)
{
    if (!ev)
        return;
    pthread_mutex_destroy(&ev->mu);
    free(ev);
}
