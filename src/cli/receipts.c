/* The receipt routes of serve (cli/receipts.h). */
#include "cli/receipts.h"

#include <ctype.h>
#include <pthread.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/util.h"
#include "loop/loop.h"
#include "net/http.h"
#include "obs/log.h"
#include "receipt/receipt.h"

#define CERTS_MAX       16
#define CERT_MAX_BYTES  (16 * 1024)
#define CERT_RETRY_MS   5000 /* a failed fetch of a certificate URL waits this long */
#define FETCH_MS        5000
#define LOOPS_MAX       256
#define SUBSCRIBE_MAX   8   /* SubscribeURL GETs in flight at once */
#define COUNTRIES_MAX   256 /* (provider, country, status) cells of the final statuses */
#define TWILIO_MAX_BODY (8 * 1024)
#define SNS_MAX_BODY    (300 * 1024) /* 256 KiB of message, escaped, and its envelope */

/* The results of a receipt at the front, the label of telehook_receipts_total. */
#define RESULTS(X)                                                                                 \
    X(QUEUED, "queued")                                                                            \
    X(BAD_SIGNATURE, "bad_signature")                                                              \
    X(MALFORMED, "malformed")                                                                      \
    X(TOPIC_REFUSED, "topic_refused")                                                              \
    X(CERT_HOST_REFUSED, "cert_host_refused")                                                      \
    X(CERT_PENDING, "cert_pending")                                                                \
    X(TIMESTAMP, "timestamp_refused")                                                              \
    X(QUEUE_FULL, "queue_full")                                                                    \
    X(SUBSCRIBED, "subscription_confirmation")                                                     \
    X(UNSUBSCRIBED, "unsubscribe_confirmation")

enum result {
#define R_ENUM(e, s) R_##e,
    RESULTS(R_ENUM)
#undef R_ENUM
        R__COUNT
};
static const char *const result_names[] = {
#define R_NAME(e, s) s,
    RESULTS(R_NAME)
#undef R_NAME
};

enum provider { P_TWILIO, P_AWS, P__COUNT };
static const char *const provider_names[] = {"twilio", "aws"};

struct cert {
    char url[512];
    char *pem; /* NULL: not fetched (yet) */
    size_t len;
    bool fetching;
    int64_t failed_ms; /* the last failed fetch (0: none) */
    int64_t used_ms;   /* for the eviction of the least recently used */
};

struct loop_http {
    struct th_loop *loop;
    struct th_http *http;
};

struct final_cell {
    int provider;
    char country[4];
    th_receipt_status status;
    struct th_counter c;
};

struct th_receipts {
    const struct th_config *cfg;
    pthread_mutex_t wmu; /* writer: NULL once detached (the writer is stopping) */
    struct th_writer *writer;
    th_writer_receipt_fn next;
    void *next_ud;
    const char *twilio_media[2], *sns_media[3], *eb_media[2];
    pthread_mutex_t mu; /* certs, loops */
    struct cert certs[CERTS_MAX];
    struct loop_http loops[LOOPS_MAX];
    size_t nloops;
    int subscribing;
    /* metrics */
    struct th_counter results[P__COUNT][R__COUNT];
    struct th_counter statuses[P__COUNT][TH_RS__COUNT]; /* applied, by status */
    struct th_metric_family *final_family;
    struct final_cell finals[COUNTRIES_MAX];
    size_t nfinals; /* writer thread only */
    struct th_counter finals_other[P__COUNT][TH_RS__COUNT];
    struct store_count *store_counts; /* 5, for the sampled family */
};

/* ---- the loop's client (one per loop, made on first need, freed when the loop ends) ---- */

struct loop_exit {
    struct th_receipts *r;
    size_t slot;
};

static void loop_http_free(void *ud)
{
    struct loop_exit *x = ud;
    pthread_mutex_lock(&x->r->mu);
    struct th_http *h = x->r->loops[x->slot].http;
    x->r->loops[x->slot].http = NULL;
    x->r->loops[x->slot].loop = NULL;
    pthread_mutex_unlock(&x->r->mu);
    th_http_free(h);
    free(x);
}

static struct th_http *loop_http(struct th_receipts *r, struct th_loop *loop)
{
    pthread_mutex_lock(&r->mu);
    size_t free_slot = LOOPS_MAX;
    for (size_t i = 0; i < LOOPS_MAX; i++) {
        if (r->loops[i].loop == loop) {
            struct th_http *h = r->loops[i].http;
            pthread_mutex_unlock(&r->mu);
            return h;
        }
        if (!r->loops[i].loop && free_slot == LOOPS_MAX)
            free_slot = i;
    }
    pthread_mutex_unlock(&r->mu);
    if (free_slot == LOOPS_MAX)
        return NULL;
    struct th_http *h = NULL;
    struct loop_exit *x = malloc(sizeof *x);
    if (!x || th_http_new(loop, SUBSCRIBE_MAX + CERTS_MAX, &h) != TH_E_OK) {
        free(x);
        return NULL;
    }
    *x = (struct loop_exit){r, free_slot};
    if (th_loop_at_exit(loop, loop_http_free, x) != TH_E_OK) {
        th_http_free(h);
        free(x);
        return NULL;
    }
    pthread_mutex_lock(&r->mu);
    r->loops[free_slot] = (struct loop_http){loop, h};
    pthread_mutex_unlock(&r->mu);
    return h;
}

/* ---- answers and counting ---- */

static void count(struct th_receipts *r, enum provider p, enum result res)
{
    th_counter_inc(&r->results[p][res]);
}

static void answer(const struct th_side_call *call, int status, const char *text)
{
    th_side_answer(call->req, status, "text/plain; charset=utf-8", text, text ? strlen(text) : 0);
}

/* One line per receipt queued or refused: provider, message id, status; never a number. */
static void log_receipt(const struct th_side_call *call, const char *provider,
                        const struct th_receipt *rc, const char *result)
{
    struct th_logline l;
    if (!th_log_begin(&l, TH_LOG_INFO, "receipt"))
        return;
    th_log_str(&l, "id", call->id);
    th_log_str(&l, "provider", provider);
    if (rc) {
        th_log_str(&l, "transaction_id", rc->transaction_id);
        th_log_str(&l, "status", rc->status);
        if (rc->error[0])
            th_log_str(&l, "code", rc->error);
    }
    th_log_str(&l, "result", result);
    th_log_end(&l);
}

/* Queues rc on the writer: 200 (or 204), or 503 when its queue is full. */
static void enqueue(struct th_receipts *r, const struct th_side_call *call, enum provider p,
                    const struct th_receipt *rc, int ok_status)
{
    struct th_receipt_row row = {.provider = rc->provider,
                                 .transaction_id = rc->transaction_id,
                                 .status = rc->status,
                                 .error = rc->error,
                                 .final = rc->final,
                                 .delivered = rc->delivered,
                                 .event_ms = rc->event_ms ? rc->event_ms : th_wall_ms()};
    pthread_mutex_lock(&r->wmu);
    th_err e = r->writer ? th_writer_receipt(r->writer, &row) : TH_E_OVERLOAD;
    pthread_mutex_unlock(&r->wmu);
    if (e != TH_E_OK) {
        count(r, p, R_QUEUE_FULL);
        log_receipt(call, provider_names[p], rc, "queue_full");
        answer(call, 503, "busy: retry later\n");
        return;
    }
    count(r, p, R_QUEUED);
    log_receipt(call, provider_names[p], rc, "queued");
    answer(call, ok_status, ok_status == 204 ? NULL : "OK\n");
}

/* ---- Twilio ---- */

static void twilio_handle(void *ud, const struct th_side_call *call)
{
    struct th_receipts *r = ud;
    struct th_form f;
    struct th_receipt rc;
    if (th_form_parse(call->body, call->len, &f) != TH_E_OK) {
        count(r, P_TWILIO, R_MALFORMED);
        answer(call, 400, "malformed form body\n");
        return;
    }
    size_t sig_len = 0;
    const char *sig = call->header(call->header_ud, "X-Twilio-Signature", &sig_len);
    if (sig && strlen(sig) != sig_len) /* a NUL inside: not a signature */
        sig = NULL;
    if (!th_receipt_twilio_verify(r->cfg->twilio_auth_token, r->cfg->receipts_twilio_status_url, &f,
                                  sig)) {
        th_form_release(&f);
        count(r, P_TWILIO, R_BAD_SIGNATURE);
        log_receipt(call, "twilio", NULL, "bad_signature");
        answer(call, 403, "bad signature\n");
        return;
    }
    th_err e = th_receipt_twilio_parse(&f, &rc);
    th_form_release(&f);
    if (e != TH_E_OK) {
        count(r, P_TWILIO, R_MALFORMED);
        answer(call, 400, "not a status callback\n");
        return;
    }
    enqueue(r, call, P_TWILIO, &rc, 204);
}

/* ---- SNS ---- */

struct fetch {
    struct th_receipts *r;
    char url[512];
    char topic[256];
    bool subscribe; /* a SubscribeURL GET, else a certificate */
};

static struct cert *cert_find(struct th_receipts *r, const char *url)
{
    for (size_t i = 0; i < CERTS_MAX; i++)
        if (r->certs[i].url[0] && strcmp(r->certs[i].url, url) == 0)
            return &r->certs[i];
    return NULL;
}

/*
 * A slot for url: a free one, else the least recently used that is not being fetched, one that
 * holds no certificate (a failed fetch) before one that does. Anyone can post messages naming
 * certificate URLs on an allowed host that answer 404: without that preference each one evicted
 * a certificate in use, and every real message after it waited for a fetch again (503).
 */
static struct cert *cert_slot(struct th_receipts *r, const char *url)
{
    struct cert *pick = NULL;
    for (size_t i = 0; i < CERTS_MAX; i++) {
        struct cert *c = &r->certs[i];
        if (!c->url[0]) {
            pick = c;
            break;
        }
        if (c->fetching)
            continue;
        if (!pick || (!c->pem && pick->pem) ||
            (!c->pem == !pick->pem && c->used_ms < pick->used_ms))
            pick = c;
    }
    if (!pick)
        return NULL;
    free(pick->pem);
    *pick = (struct cert){0};
    th_strlcpy(pick->url, url, sizeof pick->url);
    return pick;
}

static void fetched(void *ud, const struct th_http_response *res)
{
    struct fetch *fx = ud;
    struct th_receipts *r = fx->r;
    bool ok = res->outcome == TH_HTTP_DONE && res->status == 200;
    if (fx->subscribe) {
        pthread_mutex_lock(&r->mu);
        r->subscribing--;
        pthread_mutex_unlock(&r->mu);
        if (ok)
            th_log_msg(TH_LOG_INFO, "sns_subscribed",
                       "SNS subscription to %s confirmed (its SubscribeURL answered 200)",
                       fx->topic);
        else
            th_log_msg(TH_LOG_WARN, "sns_subscribe_failed",
                       "SNS subscription to %s not confirmed: SubscribeURL answered %s %ld",
                       fx->topic, th_http_outcome_name(res->outcome), res->status);
        free(fx);
        return;
    }
    char *pem = NULL;
    if (ok && res->len > 0 && res->len <= CERT_MAX_BYTES && strstr(res->body, "BEGIN CERTIFICATE"))
        pem = strndup(res->body, res->len);
    pthread_mutex_lock(&r->mu);
    struct cert *c = cert_find(r, fx->url);
    if (c) {
        c->fetching = false;
        if (pem) {
            c->pem = pem;
            c->len = res->len;
            pem = NULL;
        } else {
            c->failed_ms = th_wall_ms();
        }
    }
    pthread_mutex_unlock(&r->mu);
    if (!ok || !c)
        th_log_msg(TH_LOG_WARN, "sns_cert_fetch",
                   "the SNS signing certificate %s could not be fetched: %s %ld", fx->url,
                   th_http_outcome_name(res->outcome), res->status);
    free(pem);
    free(fx);
}

static bool start_get(struct th_receipts *r, struct th_loop *loop, struct fetch *fx)
{
    struct th_http *h = loop_http(r, loop);
    struct th_http_request req = {.method = "GET",
                                  .url = fx->url,
                                  .timeout_ms = FETCH_MS,
                                  .max_response = CERT_MAX_BYTES + 1};
    return h && th_http_start(h, &req, fetched, fx) == TH_E_OK;
}

/*
 * The certificate of url into *pem (malloc'd copy), TH_E_OK; TH_E_BUSY when it is not here:
 * a fetch is started (unless one runs, or one failed within CERT_RETRY_MS).
 */
static th_err cert_get(struct th_receipts *r, struct th_loop *loop, const char *url, char **pem,
                       size_t *len)
{
    pthread_mutex_lock(&r->mu);
    struct cert *c = cert_find(r, url);
    if (c && c->pem) {
        c->used_ms = th_wall_ms();
        *pem = malloc(c->len + 1);
        if (*pem) {
            memcpy(*pem, c->pem, c->len);
            (*pem)[c->len] = '\0';
            *len = c->len;
        }
        pthread_mutex_unlock(&r->mu);
        return *pem ? TH_E_OK : TH_E_NOMEM;
    }
    bool start = false;
    if (!c || (!c->fetching && th_wall_ms() - c->failed_ms >= CERT_RETRY_MS)) {
        if (!c)
            c = cert_slot(r, url);
        if (c) {
            c->fetching = true;
            c->used_ms = th_wall_ms();
            start = true;
        }
    }
    pthread_mutex_unlock(&r->mu);
    if (start) {
        struct fetch *fx = calloc(1, sizeof *fx);
        if (fx) {
            fx->r = r;
            th_strlcpy(fx->url, url, sizeof fx->url);
        }
        if (!fx || !start_get(r, loop, fx)) {
            free(fx);
            pthread_mutex_lock(&r->mu);
            if ((c = cert_find(r, url))) {
                c->fetching = false;
                c->failed_ms = th_wall_ms();
            }
            pthread_mutex_unlock(&r->mu);
        }
    }
    return TH_E_BUSY;
}

static void subscribe(struct th_receipts *r, const struct th_side_call *call,
                      const struct th_sns_message *m)
{
    pthread_mutex_lock(&r->mu);
    bool room = r->subscribing < SUBSCRIBE_MAX;
    r->subscribing += room;
    pthread_mutex_unlock(&r->mu);
    struct fetch *fx = room ? calloc(1, sizeof *fx) : NULL;
    if (fx) {
        fx->r = r;
        fx->subscribe = true;
        th_strlcpy(fx->url, m->subscribe_url, sizeof fx->url);
        th_strlcpy(fx->topic, m->topic_arn, sizeof fx->topic);
    }
    if (!fx || strlen(m->subscribe_url) >= sizeof fx->url || !start_get(r, call->loop, fx)) {
        if (room) {
            pthread_mutex_lock(&r->mu);
            r->subscribing--;
            pthread_mutex_unlock(&r->mu);
        }
        free(fx);
        answer(call, 503, "cannot confirm now: retry later\n");
        return;
    }
    th_log_msg(TH_LOG_INFO, "sns_subscription",
               "SNS subscription confirmation for %s: confirming through its SubscribeURL",
               m->topic_arn);
    count(r, P_AWS, R_SUBSCRIBED);
    answer(call, 200, "OK\n");
}

static void sns_handle(void *ud, const struct th_side_call *call)
{
    struct th_receipts *r = ud;
    const char *hosts = r->cfg->receipts_sns_cert_hosts;
    struct th_sns_message m;
    th_err e = th_sns_parse(call->body, call->len, &m);
    if (e != TH_E_OK) {
        count(r, P_AWS, R_MALFORMED);
        answer(call, 400, "not an SNS message\n");
        return;
    }
    char *pem = NULL;
    size_t pem_len = 0;
    if (!th_sns_topic_allowed(m.topic_arn, r->cfg->receipts_sns_topic_arns)) {
        count(r, P_AWS, R_TOPIC_REFUSED);
        th_log_msg(TH_LOG_WARN, "sns_topic_refused",
                   "an SNS message from topic %s, not one of [receipts] sns_topic_arns: refused",
                   m.topic_arn);
        answer(call, 403, "topic not accepted\n");
        goto out;
    }
    if (!th_sns_url_allowed(m.signing_cert_url, hosts) ||
        strlen(m.signing_cert_url) >= sizeof r->certs[0].url) {
        count(r, P_AWS, R_CERT_HOST_REFUSED);
        th_log_msg(TH_LOG_WARN, "sns_cert_refused",
                   "an SNS message whose SigningCertURL is not on a host of [receipts] "
                   "sns_cert_hosts: refused");
        answer(call, 403, "certificate host not allowed\n");
        goto out;
    }
    e = cert_get(r, call->loop, m.signing_cert_url, &pem, &pem_len);
    if (e != TH_E_OK) {
        count(r, P_AWS, R_CERT_PENDING);
        answer(call, 503, "fetching the signing certificate: retry\n");
        goto out;
    }
    if (th_sns_verify(&m, pem, pem_len) != TH_E_OK) {
        count(r, P_AWS, R_BAD_SIGNATURE);
        log_receipt(call, "aws", NULL, "bad_signature");
        answer(call, 403, "bad signature\n");
        goto out;
    }
    /* after the signature: only a signed Timestamp says anything */
    if (!th_sns_fresh(&m, th_wall_ms())) {
        count(r, P_AWS, R_TIMESTAMP);
        log_receipt(call, "aws", NULL, "timestamp_refused");
        answer(call, 403, "message too old (or too far ahead): refused as a replay\n");
        goto out;
    }
    if (m.type == TH_SNS_SUBSCRIPTION_CONFIRMATION) {
        if (!th_sns_url_allowed(m.subscribe_url, hosts)) {
            count(r, P_AWS, R_CERT_HOST_REFUSED);
            answer(call, 403, "SubscribeURL host not allowed\n");
            goto out;
        }
        subscribe(r, call, &m);
        goto out;
    }
    if (m.type == TH_SNS_UNSUBSCRIBE_CONFIRMATION) {
        count(r, P_AWS, R_UNSUBSCRIBED);
        th_log_msg(TH_LOG_WARN, "sns_unsubscribed",
                   "SNS says this endpoint was unsubscribed from %s: no more delivery events "
                   "from it until it is subscribed again",
                   m.topic_arn);
        answer(call, 200, "OK\n");
        goto out;
    }
    struct th_receipt rc;
    if (th_receipt_aws_record_parse(m.message, strlen(m.message), &rc) != TH_E_OK) {
        count(r, P_AWS, R_MALFORMED);
        answer(call, 400, "not an End User Messaging event\n");
        goto out;
    }
    enqueue(r, call, P_AWS, &rc, 200);
out:
    free(pem);
    th_sns_release(&m);
}

/* ---- EventBridge ---- */

static th_err eb_check(void *ud, th_header_lookup_fn header, void *header_ud, const char **why)
{
    struct th_receipts *r = ud;
    size_t len = 0;
    const char *got = header(header_ud, r->cfg->receipts_eventbridge_header, &len);
    if (!got || strlen(got) != len) {
        *why = "missing credentials";
        return TH_E_AUTH;
    }
    if (!th_receipt_secret_equal(got, r->cfg->receipts_eventbridge_secret)) {
        *why = "bad EventBridge secret";
        return TH_E_AUTH;
    }
    return TH_E_OK;
}

static void eb_handle(void *ud, const struct th_side_call *call)
{
    struct th_receipts *r = ud;
    struct th_receipt rc;
    if (th_receipt_eventbridge_parse(call->body, call->len, &rc) != TH_E_OK) {
        count(r, P_AWS, R_MALFORMED);
        answer(call, 400, "not an aws.sms-voice event\n");
        return;
    }
    enqueue(r, call, P_AWS, &rc, 200);
}

/* ---- applied receipts (writer thread) ---- */

static struct th_counter *final_cell(struct th_receipts *r, int p, const char *country,
                                     th_receipt_status s)
{
    char cc[4] = "";
    if (strlen(country) == 2 && isupper((unsigned char)country[0]) &&
        isupper((unsigned char)country[1]))
        th_strlcpy(cc, country, sizeof cc);
    else
        th_strlcpy(cc, "ZZ", sizeof cc); /* unknown (ISO's user-assigned code) */
    for (size_t i = 0; i < r->nfinals; i++)
        if (r->finals[i].provider == p && r->finals[i].status == s &&
            strcmp(r->finals[i].country, cc) == 0)
            return &r->finals[i].c;
    if (r->final_family && r->nfinals < COUNTRIES_MAX) {
        struct final_cell *f = &r->finals[r->nfinals];
        *f = (struct final_cell){.provider = p, .status = s};
        th_strlcpy(f->country, cc, sizeof f->country);
        const char *v[] = {provider_names[p], cc, th_receipt_status_name(s), NULL};
        if (th_metrics_counter(r->final_family, v, &f->c) == TH_E_OK) {
            r->nfinals++;
            return &f->c;
        }
    }
    return &r->finals_other[p][s];
}

static th_receipt_status status_of(const char *name)
{
    for (int s = 0; s < TH_RS__COUNT; s++)
        if (strcmp(th_receipt_status_name((th_receipt_status)s), name) == 0)
            return (th_receipt_status)s;
    return TH_RS_UNKNOWN;
}

static void on_applied(void *ud, const struct th_receipt_applied *a)
{
    struct th_receipts *r = ud;
    int p = strcmp(a->provider, "twilio") == 0 ? P_TWILIO : P_AWS;
    th_receipt_status s = status_of(a->status);
    th_counter_inc(&r->statuses[p][s]);
    if (a->final)
        th_counter_inc(final_cell(r, p, a->country, s));
    if (r->next)
        r->next(r->next_ud, a);
}

/* ---- set-up ---- */

/* The writer's receipt counts, sampled at render time (0 once the writer is detached). */
struct store_count {
    struct th_receipts *r;
    int which;
};

static double store_count(void *ud)
{
    struct store_count *c = ud;
    struct th_writer_stats st = {0};
    pthread_mutex_lock(&c->r->wmu);
    if (c->r->writer)
        th_writer_stats(c->r->writer, &st);
    pthread_mutex_unlock(&c->r->wmu);
    const unsigned long long v[] = {st.receipts_applied, st.receipts_stale, st.receipts_unmatched,
                                    st.receipts_failed, st.receipts_rejected_full};
    return (double)v[c->which];
}

static const char *const store_results[] = {"applied", "stale", "unmatched", "failed",
                                            "queue_full"};

static th_err register_metrics(struct th_receipts *r, struct th_metrics *m)
{
    struct th_metric_family *fr, *fs;
    const char *l1[] = {"provider", "result", NULL}, *l2[] = {"provider", "status", NULL},
               *l3[] = {"provider", "country", "status", NULL};
    th_err e = th_metrics_family(m, "telehook_receipts_total",
                                 "Delivery receipts received, by provider and what became of them "
                                 "at the front (queued for the store, or why refused)",
                                 TH_METRIC_COUNTER, l1, P__COUNT * R__COUNT, &fr);
    if (e == TH_E_OK)
        e = th_metrics_family(m, "telehook_receipts_applied_total",
                              "Delivery receipts applied to their delivery record, by provider "
                              "and normalised status",
                              TH_METRIC_COUNTER, l2, P__COUNT * TH_RS__COUNT, &fs);
    if (e == TH_E_OK)
        e = th_metrics_family(m, "telehook_receipts_final_total",
                              "Final delivery statuses applied, by provider, destination country "
                              "(ZZ: unknown; other: past the label cap) and status",
                              TH_METRIC_COUNTER, l3, COUNTRIES_MAX + P__COUNT * TH_RS__COUNT,
                              &r->final_family);
    struct th_metric_family *fw = NULL;
    const char *l4[] = {"result", NULL};
    if (e == TH_E_OK)
        e = th_metrics_family(m, "telehook_receipts_store_total",
                              "Delivery receipts at the store: applied to their record, stale (it "
                              "held a newer or more final one), unmatched (no record after every "
                              "try), failed, refused for a full queue",
                              TH_METRIC_COUNTER, l4, 5, &fw);
    for (int k = 0; e == TH_E_OK && k < 5; k++) {
        r->store_counts[k] = (struct store_count){r, k};
        const char *v[] = {store_results[k], NULL};
        e = th_metrics_fn(fw, v, store_count, &r->store_counts[k]);
    }
    for (int p = 0; e == TH_E_OK && p < P__COUNT; p++) {
        for (int k = 0; e == TH_E_OK && k < R__COUNT; k++) {
            const char *v[] = {provider_names[p], result_names[k], NULL};
            e = th_metrics_counter(fr, v, &r->results[p][k]);
        }
        for (int s = 0; e == TH_E_OK && s < TH_RS__COUNT; s++) {
            const char *v[] = {provider_names[p], th_receipt_status_name((th_receipt_status)s),
                               NULL};
            e = th_metrics_counter(fs, v, &r->statuses[p][s]);
            const char *vo[] = {provider_names[p], "other",
                                th_receipt_status_name((th_receipt_status)s), NULL};
            if (e == TH_E_OK && th_receipt_status_final((th_receipt_status)s))
                e = th_metrics_counter(r->final_family, vo, &r->finals_other[p][s]);
        }
    }
    return e;
}

th_err th_receipts_new(const struct th_config *cfg, struct th_writer *w, struct th_metrics *m,
                       th_writer_receipt_fn next, void *next_ud, struct th_receipts **out)
{
    struct th_receipts *r = calloc(1, sizeof *r);
    if (!r)
        return TH_E_NOMEM;
    r->cfg = cfg;
    r->writer = w;
    r->next = next;
    r->next_ud = next_ud;
    pthread_mutex_init(&r->mu, NULL);
    pthread_mutex_init(&r->wmu, NULL);
    r->store_counts = calloc(5, sizeof *r->store_counts);
    if (!r->store_counts || (m && register_metrics(r, m) != TH_E_OK)) {
        th_receipts_free(r);
        return TH_E_INVAL;
    }
    th_writer_on_receipt(w, on_applied, r, (size_t)cfg->receipts_max_queue, 0, 0);
    *out = r;
    return TH_E_OK;
}

size_t th_receipts_routes(struct th_receipts *r, struct th_side_route *out, size_t max)
{
    const struct th_config *cfg = r->cfg;
    size_t n = 0;
    r->twilio_media[0] = "application/x-www-form-urlencoded";
    /* SNS posts text/plain; a proxy or a test may say JSON */
    r->sns_media[0] = "text/plain";
    r->sns_media[1] = "application/json";
    r->eb_media[0] = "application/json";
    if (cfg->receipts_twilio_status_url[0] && n < max)
        out[n++] = (struct th_side_route){.path = "/v1/twilio/status",
                                          .methods = TH_SIDE_POST,
                                          .max_body = TWILIO_MAX_BODY,
                                          .media = r->twilio_media,
                                          .auth = TH_SIDE_AUTH_NONE,
                                          .handle = twilio_handle,
                                          .ud = r};
    if (cfg->receipts_sns_topic_arns[0] && n < max)
        out[n++] = (struct th_side_route){.path = "/v1/aws/sns",
                                          .methods = TH_SIDE_POST,
                                          .max_body = SNS_MAX_BODY,
                                          .media = r->sns_media,
                                          .auth = TH_SIDE_AUTH_NONE,
                                          .handle = sns_handle,
                                          .ud = r};
    if (cfg->receipts_eventbridge_secret[0] && n < max)
        out[n++] = (struct th_side_route){.path = "/v1/aws/events",
                                          .methods = TH_SIDE_POST,
                                          .max_body = SNS_MAX_BODY,
                                          .media = r->eb_media,
                                          .auth = TH_SIDE_AUTH_CHECK,
                                          .check = eb_check,
                                          .handle = eb_handle,
                                          .ud = r};
    return n;
}

void th_receipts_detach(struct th_receipts *r)
{
    if (!r)
        return;
    pthread_mutex_lock(&r->wmu);
    r->writer = NULL;
    pthread_mutex_unlock(&r->wmu);
}

void th_receipts_free(struct th_receipts *r)
{
    if (!r)
        return;
    for (size_t i = 0; i < CERTS_MAX; i++)
        free(r->certs[i].pem);
    free(r->store_counts);
    pthread_mutex_destroy(&r->mu);
    pthread_mutex_destroy(&r->wmu);
    free(r);
}
