#include "hook/hook.h"

#include <stdalign.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/buf.h"
#include "common/hmac.h"
#include "common/util.h"
#include <openssl/crypto.h>
#include "obs/log.h"
#include "obs/metrics.h"
#include "okta/okta.h"
#include "phone/phone.h"

/* Summaries Okta may show to end users: generic on purpose, never provider internals. */
#define SUMMARY_PHONE     "The phone number cannot receive a verification code."
#define SUMMARY_FAILED    "The verification code could not be sent."
#define SUMMARY_MALFORMED "Malformed request."

#define TEXT_MAX   8192 /* rendered SMS text or SSML */
#define TEXT_FIRST 1024 /* tried first: most texts fit, and the arena's first chunk keeps them */
#define ANSWER_MAX 4096
/* The shared guard state gets at most this much of the request's deadline (and at most a third
 * of it): the rest is for the provider. Past it, store.unavailable decides. */
#define GUARD_DB_MS 500
/* A held answer leaves this long before Okta's limit (TH_OKTA_TIMEOUT_MS), so it still arrives. */
#define HOLD_MARGIN_MS 50

static const char *const outcomes[] = {"SUCCESSFUL", "FAILED",    "TIMEOUT",  "REJECTED",
                                       "BLOCKED",    "DUPLICATE", "OVERLOAD", "ERROR"};
#define NOUTCOMES TH_ARRAY_LEN(outcomes)
/* answer latency buckets, microseconds (shown in seconds: Prometheus histogram "le" bounds) */
static const int64_t buckets_us[] = {5000,   10000,  25000,   50000,  100000,
                                     250000, 500000, 1000000, 2500000};
/* the hook's refusals of a request it cannot serve (telehook_refusals_total{reason}) */
enum { REFUSED_MALFORMED, REFUSED_REQUEST, REFUSED_PHONE, NREFUSALS };
static const char *const refusal_names[] = {"malformed", "request_invalid", "phone_invalid"};

struct th_hook {
    struct th_counter by_outcome[NOUTCOMES];
    struct th_histogram answer;        /* arrival to Okta's answer */
    struct th_counter phone_ambiguous; /* numbers without '+' valid nationally and abroad */
    struct th_counter refused[NREFUSALS];
    struct th_counter dlq_entries; /* dead-letter entries stored since start */
    const struct th_config *cfg;
    _Atomic(const struct th_templates *) templates;
    _Atomic(const struct th_prefs *) prefs;
    struct th_hook_sender sender;
    struct th_hook_recorder recorder;
    struct th_guard *guard;
    struct th_dlq *dlq;
    struct th_hmac_key *record_key; /* search keys of records; NULL without guard.secret */
    struct th_conv *conv;           /* NULL: no conversion blocks */
    atomic_long in_flight;
};

/*
 * The hook's part of one Okta request, in the request's arena (hook.h: struct th_hook_req). The
 * hook holds the request while anything is owed to it: the answer, a provider's answer, the
 * dead-letter commit; when the last has come it lets go (settle).
 */
struct hreq {
    struct th_hook_req *req;
    struct th_hook *hook;
    struct th_loop *loop;
    th_hook_answer_fn answer;
    void *answer_ud;
    int owed; /* callbacks still to come, the answer counted as one */
    struct th_timer deadline;
    struct th_loop_call reap; /* lets go of the request on a clean stack (settle) */
    /* the question to the shared guard state, in the arena until it answers (~1 KiB: the
     * query's parameters); the in-memory guard decides at once on a question on the stack */
    struct th_guard_ask *ask;
    struct th_dedupe *dedupe; /* our hold on the dedupe record */
    bool dedupe_first;        /* we send; the others replay our answer */
    char dlq_id[32];
    const char *held; /* the answer held until the dead-letter entry is committed (arena) */
    size_t held_len;
    const char *held_outcome;
    struct th_timer hold;
    int64_t sent_us;

    const char *request_id;      /* the request's id (req->id) */
    struct th_okta_request okta; /* its strings in the arena */
    struct th_phone phone;
    char masked[24];
    struct th_choice choice;
    char locale[TH_LOCALE_MAX];
    char preference[TH_LOCALE_MAX + 8]; /* the user's preference found: "pt", "pt/voice" */
    struct th_buf text;                 /* over arena memory (th_arena_buf) */
    /* the message, built once by send_message: the router sends it, a dead letter seals it */
    struct th_send msg;

    /* the outcome */
    const char *outcome;
    const char *provider; /* the provider that took (or last refused) the message */
    int attempts;
    const char *error; /* "" or in the arena (set_error): most requests have none */
    char transaction_id[96];

    /* the destination as the conversion tracker knows it (empty: not tracked) */
    char prefix_hash[TH_RECORD_HASH_HEX], phone_hash[TH_RECORD_HASH_HEX];
    char prefix_masked[24];
};

#define ERROR_MAX 384 /* the record's error text, truncated past this */

/* The record's error text, copied into the arena (truncated to ERROR_MAX - 1 bytes). Out of
 * memory: the record says so rather than nothing. */
static void set_error(struct hreq *r, const char *text)
{
    size_t n = strnlen(text, ERROR_MAX - 1);
    char *p = n ? th_arena_strndup(&r->req->arena, text, n) : NULL;
    r->error = p ? p : n ? "out of memory" : "";
}

th_err th_hook_new(const struct th_hook_deps *deps, struct th_hook **out)
{
    struct th_hook *h = calloc(1, sizeof *h);
    if (!h)
        return TH_E_NOMEM;
    h->cfg = deps->cfg;
    atomic_init(&h->templates, deps->templates);
    atomic_init(&h->prefs, deps->prefs);
    h->sender = deps->sender;
    h->guard = deps->guard;
    h->dlq = deps->dlq;
    h->conv = deps->conv;
    h->recorder = deps->recorder;
    atomic_init(&h->in_flight, 0);
    th_histogram_init(&h->answer, buckets_us, TH_ARRAY_LEN(buckets_us), 1e6);
    if (th_guard_record_key_new(deps->cfg->guard_secret, &h->record_key) != TH_E_OK) {
        free(h);
        return TH_E_NOMEM;
    }
    *out = h;
    return TH_E_OK;
}

void th_hook_free(struct th_hook *hook)
{
    if (hook)
        th_hmac_key_free(hook->record_key);
    free(hook);
}

const struct th_templates *th_hook_swap_templates(struct th_hook *hook,
                                                  const struct th_templates *set)
{
    return atomic_exchange(&hook->templates, set);
}

const struct th_prefs *th_hook_swap_prefs(struct th_hook *hook, const struct th_prefs *prefs)
{
    return atomic_exchange(&hook->prefs, prefs);
}

long th_hook_in_flight(const struct th_hook *hook)
{
    return atomic_load(&hook->in_flight);
}

/* ---- the request object ---- */

void th_hook_req_init(struct th_hook_req *req, void *first, size_t first_size, size_t cap,
                      int64_t arrived_us, int deadline_ms, void (*free_fn)(struct th_hook_req *))
{
    th_arena_init(&req->arena, first, first_size, cap);
    req->state = TH_REQ_RECEIVING;
    req->refs = 1;
    req->arrived_us = arrived_us;
    req->deadline_us = arrived_us + (int64_t)deadline_ms * 1000;
    th_time_id("r-", req->id, sizeof req->id);
    req->free_fn = free_fn;
    req->hook_ = NULL;
}

void th_hook_req_hold(struct th_hook_req *req)
{
    req->refs++;
}

void th_hook_req_drop(struct th_hook_req *req)
{
    if (--req->refs > 0)
        return;
    th_arena_cleanse_release(&req->arena); /* the body, the code, the text: wiped here only */
    if (req->free_fn)
        req->free_fn(req);
}

static bool answered(const struct hreq *r)
{
    return r->req->state >= TH_REQ_ANSWERED;
}

static void on_reap(void *ud)
{
    struct hreq *r = ud;
    struct th_hook_req *req = r->req;
    th_loop_timer_cancel(r->loop, &r->deadline);
    th_loop_timer_cancel(r->loop, &r->hold);
    req->hook_ = NULL;
    th_hook_req_drop(req); /* r lives in its arena: not touched after this */
}

/* The loop has finished (its timers are disarmed, its thread gone): let go at once. */
static void on_reap_lost(void *ud)
{
    struct hreq *r = ud;
    struct th_hook_req *req = r->req;
    req->hook_ = NULL;
    th_hook_req_drop(req);
}

/*
 * One thing owed to the request has come. After the last the hook lets go of it, but through the
 * loop's mailbox: the caller that has just called us back (the router, a provider) may still
 * touch its own state in the arena until its callback returns. A mailbox call rather than a
 * timer: the transfers a loop aborts as it finishes answer from its exit handlers, and what they
 * post still runs then (a timer would not: the loop disarms them).
 */
static void settle(struct hreq *r)
{
    if (--r->owed > 0)
        return;
    r->req->state = TH_REQ_DONE;
    th_loop_call_init(&r->reap, r->loop, on_reap, on_reap_lost, r);
    th_loop_call_post(&r->reap);
}

static void count(struct th_hook *h, const char *outcome, int64_t latency_us)
{
    for (size_t i = 0; i < NOUTCOMES; i++) {
        if (strcmp(outcomes[i], outcome) == 0) {
            th_counter_inc(&h->by_outcome[i]);
            break;
        }
    }
    th_histogram_observe(&h->answer, latency_us);
}

static double in_flight_now(void *ud)
{
    return (double)th_hook_in_flight(ud);
}

th_err th_hook_metrics(struct th_hook *h, struct th_metrics *m)
{
    static const char *const by_outcome[] = {"outcome", NULL};
    struct th_metric_family *f;
    th_err e =
        th_metrics_family(m, "telehook_requests_total", "Okta requests answered, by outcome.",
                          TH_METRIC_COUNTER, by_outcome, NOUTCOMES, &f);
    for (size_t i = 0; e == TH_E_OK && i < NOUTCOMES; i++)
        e = th_metrics_counter(f, (const char *const[]){outcomes[i], NULL}, &h->by_outcome[i]);
    if (e == TH_E_OK)
        e = th_metrics_family(m, "telehook_answer_seconds", "Time from arrival to Okta's answer.",
                              TH_METRIC_HISTOGRAM, NULL, 1, &f);
    if (e == TH_E_OK)
        e = th_metrics_histogram(f, NULL, &h->answer);
    if (e == TH_E_OK)
        e = th_metrics_family(m, "telehook_requests_in_flight",
                              "Okta requests received and not answered yet.", TH_METRIC_GAUGE, NULL,
                              1, &f);
    if (e == TH_E_OK)
        e = th_metrics_fn(f, NULL, in_flight_now, h);
    if (e == TH_E_OK)
        e = th_metrics_family(m, "telehook_phone_ambiguous_total",
                              "Numbers without '+' valid both as national numbers of "
                              "phone.default_region (taken) and as international ones.",
                              TH_METRIC_COUNTER, NULL, 1, &f);
    if (e == TH_E_OK)
        e = th_metrics_counter(f, NULL, &h->phone_ambiguous);
    if (e == TH_E_OK)
        e = th_metrics_refusals(m, &f);
    for (size_t i = 0; e == TH_E_OK && i < NREFUSALS; i++)
        e = th_metrics_counter(f, (const char *const[]){refusal_names[i], NULL}, &h->refused[i]);
    if (e == TH_E_OK)
        e = th_metrics_family(m, "telehook_dlq_entries_total",
                              "Dead-letter entries stored since start (entries replayed or "
                              "purged by `telehook dlq` are not subtracted).",
                              TH_METRIC_COUNTER, NULL, 1, &f);
    if (e == TH_E_OK)
        e = th_metrics_counter(f, NULL, &h->dlq_entries);
    return e;
}

_Static_assert(NOUTCOMES == TH_HOOK_OUTCOMES, "th_hook_counts holds every outcome");

void th_hook_counts(struct th_hook *h, struct th_hook_counts *out)
{
    for (size_t i = 0; i < NOUTCOMES; i++)
        out->by_outcome[i] = th_counter_get(&h->by_outcome[i]);
    th_histogram_read(&h->answer, &out->answered, &out->latency_sum_us);
}

const char *th_hook_outcome_name(size_t i)
{
    return i < NOUTCOMES ? outcomes[i] : NULL;
}

static void record(struct hreq *r, int status, int64_t latency_us)
{
    count(r->hook, r->outcome, latency_us);
    const struct th_okta_request *o = &r->okta;
    const char *provider = r->provider ? r->provider : "";
    const char *lang = r->choice.language ? r->choice.language : "";
    const char *source = r->text.len ? th_source_name(r->choice.source) : "";
    char phone_hash[TH_RECORD_HASH_HEX] = "", login_hash[TH_RECORD_HASH_HEX] = "";
    char prefix_hash[TH_RECORD_HASH_HEX] = "";
    if (r->phone_hash[0]) { /* made once already, for the conversion tracker */
        memcpy(phone_hash, r->phone_hash, sizeof phone_hash);
        memcpy(prefix_hash, r->prefix_hash, sizeof prefix_hash);
    } else if (r->hook->record_key && r->phone.e164[0]) {
        th_guard_record_phone(r->hook->record_key, r->phone.e164, phone_hash);
        th_guard_record_prefix(r->hook->record_key, r->phone.e164, prefix_hash);
    }
    if (r->hook->record_key && o->login && o->login[0])
        th_guard_record_login(r->hook->record_key, o->login, login_hash);
    struct th_delivery_row row = {
        .request_id = r->request_id,
        .event_id = o->event_id ? o->event_id : "",
        .created_ms = th_wall_ms(),
        .request_type = o->request_type ? o->request_type : "",
        .phone_masked = r->masked,
        .country = r->phone.region,
        .channel = o->phone ? th_channel_name(o->channel) : "",
        .language = lang,
        .source = source,
        .provider = provider,
        .outcome = r->outcome,
        .transaction_id = r->transaction_id,
        .error = r->error,
        .latency_us = latency_us,
        .attempts = r->attempts,
        .user_id = o->user_id ? o->user_id : "",
        .login_hash = login_hash,
        .phone_hash = phone_hash,
        .locale = r->locale,
        .preference = r->preference,
        .prefix_hash = prefix_hash,
        .node = th_node_id(),
    };
    th_err e = r->hook->recorder.delivery(r->hook->recorder.ud, &row);
    if (e != TH_E_OK)
        th_log_msg(TH_LOG_WARN, "record_dropped", "delivery record for %s not queued: %s",
                   r->request_id, th_strerror(e));

    struct th_logline l;
    if (th_log_begin(&l, TH_LOG_INFO, "request")) {
        th_log_str(&l, "req", r->request_id);
        th_log_str(&l, "event_id", o->event_id);
        th_log_str(&l, "request_type", o->request_type);
        if (r->masked[0])
            th_log_str(&l, "phone", r->masked);
        if (r->phone.region[0])
            th_log_str(&l, "country", r->phone.region);
        if (o->phone)
            th_log_str(&l, "channel", th_channel_name(o->channel));
        if (r->text.len) {
            th_log_str(&l, "lang", lang);
            th_log_str(&l, "source", source);
        }
        size_t base = strcspn(r->locale, "-");
        bool same =
            strncmp(r->locale, lang, base) == 0 && (lang[base] == '\0' || lang[base] == '-');
        if (r->locale[0] && !same) /* the text is in another language: none in this one */
            th_log_str(&l, "locale", r->locale);
        if (r->preference[0])
            th_log_str(&l, "preference", r->preference);
        if (provider[0])
            th_log_str(&l, "provider", provider);
        if (r->attempts)
            th_log_int(&l, "attempts", r->attempts);
        if (r->dlq_id[0])
            th_log_str(&l, "dlq", r->dlq_id);
        th_log_str(&l, "outcome", r->outcome);
        if (r->error[0])
            th_log_str(&l, "error", r->error);
        th_log_int(&l, "status", status);
        th_log_ms(&l, "ms", latency_us);
        th_log_end(&l);
    }
}

/*
 * Okta's answers are built on the stack (they never hold the code), then kept in the request's
 * arena at their size: answer_init gives a th_buf of ANSWER_MAX over m.
 */
struct answer_mem {
    struct th_arena arena;
    alignas(max_align_t) unsigned char mem[ANSWER_MAX + 1 + TH_ARENA_ALIGN];
};

static void answer_init(struct answer_mem *m, struct th_buf *body)
{
    th_arena_init(&m->arena, m->mem, sizeof m->mem, sizeof m->mem);
    th_arena_buf(&m->arena, body, ANSWER_MAX); /* cannot fail: the memory is there */
}

/* Hands the answer (in the arena; NULL: out of memory) to the transport once, then records it. */
static void finish_data(struct hreq *r, int status, const char *data, size_t len,
                        const char *outcome)
{
    if (answered(r))
        return;
    r->req->state = TH_REQ_ANSWERED;
    r->outcome = outcome;
    th_loop_timer_cancel(r->loop, &r->deadline);
    int64_t latency = th_mono_us() - r->req->arrived_us;
    th_loop_timer_cancel(r->loop, &r->hold);
    if (!data) { /* out of memory: the transport answers 500 on a NULL body */
        len = 0;
    }
    if (r->dedupe) { /* before the answer leaves: a duplicate must find it */
        if (r->dedupe_first && data)
            th_guard_dedupe_finish(r->hook->guard, r->dedupe, status, data, len);
        else
            th_guard_dedupe_release(r->hook->guard, r->dedupe);
        r->dedupe = NULL;
    }
    r->answer(r->answer_ud, status, data, len);
    record(r, status, latency);
    atomic_fetch_sub(&r->hook->in_flight, 1);
    settle(r); /* the answer was owed */
}

/* The same for an answer built with answer_init. */
static void finish(struct hreq *r, int status, const struct th_buf *body, const char *outcome)
{
    if (answered(r))
        return;
    /* a failed answer (sticky error) is NULL, which the transport answers 500: never half one */
    const char *data = th_buf_err(body) == TH_E_OK && body->data
                           ? th_arena_strndup(&r->req->arena, body->data, body->len)
                           : NULL;
    finish_data(r, status, data, data ? body->len : 0, outcome);
}

/* Answers Okta's error object; detail (default: reason) goes to the record and log only. */
static void fail_detail(struct hreq *r, int status, const char *summary, const char *outcome,
                        const char *reason, const char *detail)
{
    struct answer_mem m;
    struct th_buf body;
    answer_init(&m, &body);
    set_error(r, detail ? detail : reason);
    /* The cause is for admins reading Okta's System Log: a class of failure, never details. */
    th_okta_encode_error(&body, summary, reason);
    finish(r, status, &body, outcome);
}

static void fail(struct hreq *r, int status, const char *summary, const char *outcome,
                 const char *reason)
{
    fail_detail(r, status, summary, outcome, reason, NULL);
}

/* ---- the dead-letter queue ---- */

static void release_held(struct hreq *r)
{
    if (answered(r))
        return;
    th_loop_timer_cancel(r->loop, &r->hold);
    finish_data(r, 200, r->held, r->held_len, r->held_outcome);
}

static void on_hold_timeout(void *ud)
{
    struct hreq *r = ud;
    th_log_msg(TH_LOG_WARN, "dlq_slow",
               "request %s: dead-letter entry %s not committed in "
               "time; Okta answered anyway",
               r->request_id, r->dlq_id);
    release_held(r);
}

/* On the loop (th_writer_dlq_on): the entry is committed (or failed to be). */
static void dlq_written(void *ud, th_err result)
{
    struct hreq *r = ud;
    if (result == TH_E_OK)
        th_counter_inc(&r->hook->dlq_entries);
    else
        th_log_msg(TH_LOG_ERROR, "dlq_lost", "request %s: dead-letter entry %s not stored: %s",
                   r->request_id, r->dlq_id, th_strerror(result));
    release_held(r);
    settle(r); /* the commit was owed */
}

/*
 * On the writer thread: the loop has finished (shutdown), nobody waits for the answer any more.
 * The hook lets go here rather than leak the request (no reap: the loop's timers are disarmed).
 * Nothing else runs on the request now: its loop is gone, and serve stops the writer before the
 * front, so the front's own hold is not dropped at the same time.
 */
static void dlq_unanswered(void *ud)
{
    struct hreq *r = ud;
    th_guard_dedupe_release(r->hook->guard, r->dedupe);
    r->dedupe = NULL;
    if (!answered(r)) { /* no answer can leave now */
        atomic_fetch_sub(&r->hook->in_flight, 1);
        r->req->state = TH_REQ_ANSWERED;
        r->owed--;
    }
    if (--r->owed > 0) /* the commit was owed; a provider's answer may be too (never coming) */
        return;
    r->req->state = TH_REQ_DONE;
    r->req->hook_ = NULL;
    th_hook_req_drop(r->req);
}

/*
 * A message no attempt delivered: Okta's error object, held until the dead-letter entry is
 * committed (bounded: Okta's 3 s are not spent on the store), so an answered request always has
 * its entry.
 */
static void dead_letter(struct hreq *r, const char *outcome, const char *cause, const char *detail)
{
    struct th_hook *h = r->hook;
    if (!th_dlq_enabled(h->dlq) || !r->text.len || answered(r)) {
        fail_detail(r, 200, SUMMARY_FAILED, outcome, cause, detail);
        return;
    }
    th_time_id("dlq-", r->dlq_id, sizeof r->dlq_id);
    set_error(r, detail ? detail : cause);
    unsigned char *blob = NULL;
    size_t blen = 0;
    /* the sealed payload is the message the router was given: a replay sends the same again */
    if (th_dlq_can_seal(h->dlq) &&
        th_dlq_payload_encode(h->dlq, r->dlq_id, &r->msg, &blob, &blen) != TH_E_OK)
        th_log_msg(TH_LOG_ERROR, "dlq", "request %s: payload not sealed", r->request_id);
    const struct th_okta_request *o = &r->okta;
    struct th_dlq_row row = {
        .id = r->dlq_id,
        .created_ms = th_wall_ms(),
        .request_id = r->request_id,
        .event_id = o->event_id ? o->event_id : "",
        .phone_masked = r->masked,
        .country = r->phone.region,
        .channel = th_channel_name(o->channel),
        .language = r->choice.language ? r->choice.language : "",
        .outcome = outcome,
        .errors = r->error,
        .attempts = r->attempts,
        .otp_expires_ms = o->otp_expires_ms,
        .key_id = blob ? th_dlq_key_id(h->dlq) : "",
        .payload = blob,
        .payload_len = blen,
    };
    struct answer_mem m;
    struct th_buf held;
    answer_init(&m, &held);
    th_okta_encode_error(&held, SUMMARY_FAILED, cause);
    r->held = th_buf_err(&held) == TH_E_OK && held.data
                  ? th_arena_strndup(&r->req->arena, held.data, held.len)
                  : NULL;
    r->held_len = r->held ? held.len : 0;
    r->held_outcome = outcome;
    struct th_loop_reply reply = {r->loop, dlq_written, dlq_unanswered, r};
    th_err e = h->recorder.dlq(h->recorder.ud, &row, &reply);
    free(blob);
    if (e != TH_E_OK) {
        th_log_msg(TH_LOG_ERROR, "dlq_lost", "request %s: dead-letter entry not queued: %s",
                   r->request_id, th_strerror(e));
        release_held(r);
        return;
    }
    r->owed++; /* the commit */
    r->req->state = TH_REQ_DLQ_HOLD;
    th_loop_timer_cancel(r->loop, &r->deadline); /* the answer is decided: only its timing is not */
    /* Wait for the commit, but answer Okta inside its 3 s whatever the store does (Okta's limit,
     * not ours: the deadline may have passed already, that is how we got here). */
    int64_t left_ms =
        TH_OKTA_TIMEOUT_MS - HOLD_MARGIN_MS - (th_mono_us() - r->req->arrived_us) / 1000;
    int64_t wait_ms = left_ms < 300 ? left_ms : 300;
    if (wait_ms < 20)
        wait_ms = 20;
    th_loop_timer_set(r->loop, &r->hold, th_mono_us() + wait_ms * 1000, on_hold_timeout, r);
}

static void on_deadline(void *ud)
{
    struct hreq *r = ud;
    if (r->req->state == TH_REQ_SENDING) /* a provider still has it: it did not arrive in time */
        dead_letter(r, "TIMEOUT", "delivery timed out", "deadline exceeded");
    else
        fail(r, 200, SUMMARY_FAILED, "TIMEOUT", "deadline exceeded");
}

static void on_routed(void *ud, const struct th_route_result *res)
{
    struct hreq *r = ud;
    r->attempts = res->attempts;
    if (res->provider && res->provider[0])
        r->provider = res->provider;
    if (answered(r)) { /* the deadline answered first: Okta has moved on */
        bool delivered = res->err == TH_E_OK;
        th_log_msg(TH_LOG_WARN, "late_provider_answer",
                   "request %s: provider answered after the deadline (%s)%s%s", r->request_id,
                   delivered ? "accepted" : "failed",
                   delivered && r->dlq_id[0] ? ": do not replay dead-letter entry " : "",
                   delivered ? r->dlq_id : "");
        settle(r); /* the provider's answer was owed */
        return;
    }
    if (res->err != TH_E_OK) {
        const char *outcome = res->overload              ? "OVERLOAD"
                              : res->err == TH_E_TIMEOUT ? "TIMEOUT"
                                                         : "FAILED";
        const char *cause = res->overload              ? "overloaded"
                            : res->err == TH_E_TIMEOUT ? "delivery timed out"
                                                       : "every delivery attempt failed";
        dead_letter(r, outcome, cause, res->errors[0] ? res->errors : cause);
        settle(r);
        return;
    }
    th_strlcpy(r->transaction_id, res->transaction_id, sizeof r->transaction_id);
    if (r->prefix_hash[0]) {
        struct th_conv_key k = {r->prefix_hash, r->phone_hash, r->phone.region, r->prefix_masked};
        th_conv_sent(r->hook->conv, &k, r->provider, th_channel_name(r->okta.channel));
    }
    /* Earlier failed attempts stay in the record (not in Okta's answer). */
    set_error(r, res->errors);
    char meta[64];
    snprintf(meta, sizeof meta, "attempts=%d;ms=%lld", res->attempts,
             (long long)((th_mono_us() - r->sent_us) / 1000));
    struct answer_mem m;
    struct th_buf body;
    answer_init(&m, &body);
    th_okta_encode_result(&body, "SUCCESSFUL", r->provider, r->transaction_id, meta);
    finish(r, 200, &body, "SUCCESSFUL");
    settle(r);
}

static int expires_minutes(int64_t otp_expires_ms)
{
    if (otp_expires_ms <= 0)
        return -1;
    int64_t left = otp_expires_ms - th_wall_ms();
    if (left <= 60000)
        return 1;
    return (int)((left + 59999) / 60000);
}

/* Picks the text along the locale chain and renders it. false: answered with an error. */
static bool compose(struct hreq *r)
{
    const struct th_config *cfg = r->hook->cfg;
    const struct th_okta_request *o = &r->okta;
    const char *locale = NULL;
    if (o->locale && th_locale_normalize(o->locale, r->locale) == TH_E_OK)
        locale = r->locale;
    else
        r->locale[0] = '\0';
    /* A preference names a language; its channel is only recorded: Okta chose the channel. */
    const struct th_pref *pref = th_prefs_find(atomic_load(&r->hook->prefs), o->user_id, o->login);
    if (pref)
        snprintf(r->preference, sizeof r->preference, "%s%s%s", pref->language,
                 pref->channel[0] ? "/" : "", pref->channel);
    struct th_chain chain = {.set = atomic_load(&r->hook->templates),
                             .preferred = pref ? pref->language : NULL,
                             .locale = locale,
                             .default_language = cfg->message_default_language,
                             .pack = cfg->message_builtin_pack,
                             .has_okta_template = o->msg_template != NULL};
    th_message_choose(&chain, o->channel, &r->choice);
    if (r->choice.last_resort && !cfg->message_builtin_fallback) {
        fail(r, 200, SUMMARY_FAILED, "REJECTED", "no template for this language and channel");
        return false;
    }
    th_err e;
    struct th_arena *a = &r->req->arena;
    if (r->choice.source == TH_SOURCE_OKTA) {
        size_t n = strlen(o->msg_template);
        e = th_arena_buf(a, &r->text, n < TEXT_MAX ? n : TEXT_MAX);
        if (e == TH_E_OK)
            e = th_buf_append(&r->text, o->msg_template, n);
    } else {
        struct th_render_vars vars = {
            .otp = o->otp,
            .first_name = o->first_name,
            .last_name = o->last_name,
            .login = o->login,
            .expires_minutes = expires_minutes(o->otp_expires_ms),
            .sms_encoding = (th_sms_encoding)cfg->message_sms_encoding,
        };
        /* in a small buffer first, so most texts stay in the arena's first chunk */
        e = th_arena_buf(a, &r->text, TEXT_FIRST);
        if (e == TH_E_OK)
            e = th_message_render(r->choice.tpl, &vars, &r->text);
        if (e == TH_E_TOOBIG && (e = th_arena_buf(a, &r->text, TEXT_MAX)) == TH_E_OK)
            e = th_message_render(r->choice.tpl, &vars, &r->text);
    }
    if (e != TH_E_OK) {
        fail(r, 200, SUMMARY_FAILED, "ERROR", "message too long");
        return false;
    }
    /* the reserve's tail back to the arena: an SMS takes ~150 of its 1,024 bytes, and every KiB
     * a request holds is a MiB per 1,000 in flight */
    th_arena_buf_fit(&r->text);
    return true;
}

static void send_message(struct hreq *r);

/* Replays the first outcome of a duplicate request. */
static void replay(struct hreq *r, struct th_dedupe_answer *a)
{
    struct answer_mem m;
    struct th_buf body;
    answer_init(&m, &body);
    th_buf_append(&body, a->body ? a->body : "", a->body ? a->len : 0);
    free(a->body);
    set_error(r, "duplicate: the first outcome replayed");
    finish(r, a->status, &body, "DUPLICATE");
}

/* On the loop: the first finished (replay its answer) or gave up (our deadline answers). */
static void on_dedupe_woken(void *ud)
{
    struct hreq *r = ud;
    struct th_dedupe_answer a = {0};
    if (th_guard_dedupe_poll(r->hook->guard, r->dedupe, &a) == TH_DEDUPE_DONE) {
        replay(r, &a);
    }
}

/* A blocked request: Okta's FAILED status (nothing sent anywhere) or its error object. */
static void block(struct hreq *r, th_block b)
{
    char reason[64];
    snprintf(reason, sizeof reason, "blocked: %s", th_block_name(b));
    struct th_logline l;
    if (th_log_begin(&l, TH_LOG_WARN, "blocked")) {
        th_log_str(&l, "req", r->request_id);
        th_log_str(&l, "reason", th_block_name(b));
        /* a conversion block is about the prefix: the log names it, not the number */
        bool conv = b == TH_BLOCK_CONV_PREFIX || b == TH_BLOCK_CONV_COUNTRY;
        th_log_str(&l, conv ? "prefix" : "phone", conv ? r->prefix_masked : r->masked);
        th_log_str(&l, "country", r->phone.region);
        th_log_int(&l, "calling_code", r->phone.country_code);
        th_log_str(&l, "type", th_phone_type_name(r->phone.type));
        th_log_end(&l);
    }
    if (!th_guard_answer_failed(r->hook->guard)) {
        fail(r, 200, SUMMARY_FAILED, "BLOCKED", reason);
        return;
    }
    set_error(r, reason);
    char meta[64];
    snprintf(meta, sizeof meta, "blocked=%s", th_block_name(b));
    struct answer_mem m;
    struct th_buf body;
    answer_init(&m, &body);
    th_okta_encode_result(&body, "FAILED", "telehook", r->request_id, meta);
    finish(r, 200, &body, "BLOCKED");
}

/*
 * The conversion blocks (guard/conv.h), from the tracker's in-memory counts: no round trip.
 * false: refused (enforce) and answered as the guard's blocks are.
 */
static bool conversion(struct hreq *r)
{
    struct th_hook *h = r->hook;
    if (!h->conv || !h->record_key || !r->phone.e164[0])
        return true;
    th_guard_record_prefix(h->record_key, r->phone.e164, r->prefix_hash);
    th_guard_record_phone(h->record_key, r->phone.e164, r->phone_hash);
    size_t n = strlen(r->phone.e164);
    n = n > 4 ? n - 4 : 0;
    snprintf(r->prefix_masked, sizeof r->prefix_masked, "%.*s****", (int)n, r->phone.e164);
    struct th_conv_key k = {r->prefix_hash, r->phone_hash, r->phone.region, r->prefix_masked};
    struct th_conv_verdict v;
    th_conv_check(h->conv, &k, &v);
    if (v.kind == TH_CONV_PASS)
        return true;
    const char *kind = th_conv_kind_name(v.kind);
    struct th_logline l;
    if (v.new_block && th_log_begin(&l, TH_LOG_WARN, "conversion_block")) {
        th_log_str(&l, "kind", kind);
        th_log_str(&l, "country", r->phone.region);
        if (v.kind == TH_CONV_PREFIX)
            th_log_str(&l, "prefix", r->prefix_masked);
        th_log_int(&l, "sends", v.sends);
        th_log_int(&l, "verified", v.verified);
        th_log_str(&l, "mode",
                   v.enforcing ? "enforce"
                   : th_conv_get_mode(h->conv) == TH_CONV_ENFORCE
                       ? "enforce (no verification seen yet: not refusing)"
                       : "monitor");
        th_log_end(&l);
    }
    if (v.refuse) {
        th_block b = v.kind == TH_CONV_PREFIX ? TH_BLOCK_CONV_PREFIX : TH_BLOCK_CONV_COUNTRY;
        th_guard_count_block(h->guard, b);
        block(r, b);
        return false;
    }
    if (th_log_begin(&l, TH_LOG_INFO, v.exempt ? "conversion_exempt" : "conversion_would_refuse")) {
        th_log_str(&l, "req", r->request_id);
        th_log_str(&l, "kind", kind);
        th_log_str(&l, "country", r->phone.region);
        th_log_str(&l, "prefix", r->prefix_masked);
        th_log_end(&l);
    }
    return true;
}

/*
 * The guard's verdict on dedupe, destination rules and limits. false: answered (a replay, a
 * wait for the first outcome, a block, or a refusal when the shared state did not answer).
 */
static bool apply_verdict(struct hreq *r, struct th_guard_verdict *v)
{
    struct th_guard *g = r->hook->guard;
    if (v->unavailable) { /* store.unavailable = closed: Okta uses its own providers */
        fail(r, 200, SUMMARY_FAILED, "ERROR", "abuse controls unavailable");
        return false;
    }
    r->dedupe = v->ticket;
    switch (v->dedupe) {
    case TH_DEDUPE_DONE:
        replay(r, &v->answer);
        return false;
    case TH_DEDUPE_PENDING: /* the first is in flight: wait for its answer, up to our deadline */
        r->req->state = TH_REQ_DEDUPE_WAIT;
        th_loop_timer_set(r->loop, &r->deadline, r->req->deadline_us, on_deadline, r);
        /* woken when it finishes; past the guard's cap of waiters, the deadline answers */
        if (r->dedupe)
            th_guard_dedupe_wait(g, r->dedupe, r->loop, on_dedupe_woken, r);
        return false;
    case TH_DEDUPE_FIRST:
        r->dedupe_first = true;
        break;
    case TH_DEDUPE_OFF:
        break;
    }
    if (v->block != TH_BLOCK_NONE) {
        block(r, v->block);
        return false;
    }
    return conversion(r);
}

/* On the loop: the shared guard state has decided (or store.unavailable has). */
static void on_guard_verdict(void *ud, struct th_guard_verdict *v)
{
    struct hreq *r = ud;
    if (answered(r)) { /* the deadline answered first: nothing is sent, our hold goes back */
        th_guard_dedupe_release(r->hook->guard, v->ticket);
        free(v->answer.body);
    } else if (apply_verdict(r, v) && compose(r)) {
        send_message(r);
    }
    settle(r); /* the verdict was owed */
}

/* Asks the guard. false: answered, or waiting for the shared state's verdict. */
static bool guard(struct hreq *r)
{
    struct th_guard *g = r->hook->guard;
    if (!g)
        return true;
    const struct th_okta_request *o = &r->okta;
    int64_t total = r->req->deadline_us - r->req->arrived_us;
    int64_t db_deadline =
        r->req->arrived_us + (total / 3 < GUARD_DB_MS * 1000 ? total / 3 : GUARD_DB_MS * 1000);
    int64_t now = th_mono_us();
    if (db_deadline < now + 20000)
        db_deadline = now + 20000;
    if (db_deadline > r->req->deadline_us)
        db_deadline = r->req->deadline_us;
    struct th_guard_ask local, *ask = &local;
    if (th_guard_shared(g) && !(ask = r->ask = th_arena_alloc(&r->req->arena, sizeof *ask))) {
        fail(r, 200, SUMMARY_FAILED, "ERROR", "out of memory");
        return false;
    }
    *ask = (struct th_guard_ask){.event_id = o->event_id,
                                 .otp = o->otp,
                                 .ph = &r->phone,
                                 .ch = o->channel,
                                 .expires_ms = o->otp_expires_ms,
                                 .user_id = o->user_id,
                                 .deadline_us = db_deadline};
    struct th_guard_verdict v;
    if (th_guard_decide(g, r->loop, ask, &v, on_guard_verdict, r))
        return apply_verdict(r, &v);
    r->req->state = TH_REQ_GUARD_WAIT;
    r->owed++; /* the verdict */
    th_loop_timer_set(r->loop, &r->deadline, r->req->deadline_us, on_deadline, r);
    return false;
}

static void send_message(struct hreq *r)
{
    const struct th_okta_request *o = &r->okta;
    r->msg = (struct th_send){
        .request_id = r->request_id,
        .to = r->phone.e164,
        .region = r->phone.region,
        .channel = o->channel,
        .language = r->choice.language ? r->choice.language : "",
        .body = th_buf_str(&r->text),
        .voice_id = r->choice.tpl ? th_template_voice_id(r->choice.tpl) : "",
        .otp_expires_ms = o->otp_expires_ms,
        .deadline_us = r->req->deadline_us,
    };
    r->sent_us = th_mono_us();
    r->owed++; /* the provider's answer */
    r->req->state = TH_REQ_SENDING;
    th_loop_timer_set(r->loop, &r->deadline, r->msg.deadline_us, on_deadline, r);
    r->hook->sender.send(r->hook->sender.ud, r->loop, &r->req->arena, &r->msg, on_routed, r);
}

/* A number without '+' read as national though also valid as international: counted and logged
 * (masked both ways), so an admin whose users are abroad sees it and asks Okta for E.164. */
static void ambiguous(struct hreq *r)
{
    th_counter_inc(&r->hook->phone_ambiguous);
    char intl[24];
    th_phone_mask(r->phone.intl_e164, intl, sizeof intl);
    struct th_logline l;
    if (th_log_begin(&l, TH_LOG_WARN, "phone_ambiguous")) {
        th_log_str(&l, "req", r->request_id);
        th_log_str(&l, "phone", r->masked);
        th_log_str(&l, "default_region", r->hook->cfg->phone_default_region);
        th_log_str(&l, "not_taken", intl);
        th_log_end(&l);
    }
}

void th_hook_handle(struct th_hook *hook, struct th_loop *loop, struct th_hook_req *req,
                    const struct th_hook_call *call, th_hook_answer_fn answer, void *ud)
{
    struct hreq *r = th_arena_calloc(&req->arena, sizeof *r);
    if (!r) {
        answer(ud, 500, NULL, 0);
        return;
    }
    th_hook_req_hold(req); /* until settle lets go */
    req->hook_ = r;
    atomic_fetch_add(&hook->in_flight, 1);
    r->req = req;
    r->hook = hook;
    r->loop = loop;
    r->answer = answer;
    r->answer_ud = ud;
    r->error = "";
    r->owed = 1; /* the answer */
    r->request_id = req->id;
    th_buf_init(&r->text, 0); /* compose gives it arena memory */

    char why[128];
    th_err e =
        th_okta_decode_in(&req->arena, call->body, call->len, call->cap, &r->okta, why, sizeof why);
    if (e == TH_E_OK)
        req->state = TH_REQ_DECODED;
    if (e == TH_E_JSON) {
        th_counter_inc(&hook->refused[REFUSED_MALFORMED]);
        fail(r, 400, SUMMARY_MALFORMED, "REJECTED", why);
    } else if (e != TH_E_OK) {
        th_counter_inc(&hook->refused[REFUSED_REQUEST]);
        fail(r, 200, SUMMARY_FAILED, "REJECTED", why);
    } else if (th_phone_parse(r->okta.phone, strlen(r->okta.phone), hook->cfg->phone_default_region,
                              &r->phone) != TH_E_OK) {
        th_counter_inc(&hook->refused[REFUSED_PHONE]);
        fail(r, 200, SUMMARY_PHONE, "REJECTED", "invalid phone number");
    } else {
        th_phone_mask(r->phone.e164, r->masked, sizeof r->masked);
        if (r->phone.intl_e164[0])
            ambiguous(r);
        if (guard(r) && compose(r))
            send_message(r);
    }
}
