/*
 * Twilio (REST API 2010-04-01): the Messages API for SMS (From, or a Messaging Service), the
 * Calls API with inline TwiML for voice. Basic auth with an API key (recommended) or the account
 * SID and auth token.
 *
 * Voice: the template's SSML is spoken by <Say> with the Amazon Polly voice the template names
 * (Twilio's <Say> accepts SSML elements with Polly voices, so only the <speak> wrapper goes).
 *
 * Errors: 429 / 20429 (too many requests) and 5xx are retryable; everything else — 21211
 * invalid number, 21408 region not enabled, 21610 unsubscribed, 21614 not SMS-capable, 20003
 * authentication, ... — is permanent. Only Twilio's numeric code is kept: its message quotes the
 * phone number.
 */
#include <ctype.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include <jansson.h>
#include <openssl/crypto.h>

#include "common/buf.h"
#include "common/util.h"
#include "obs/log.h"
#include "provider/http_common.h"
#include "provider/provider.h"

#define FORM_MAX  (16 * 1024)
#define TWIML_MAX 4000 /* Twilio's limit for the Twiml parameter */
/* The form's size besides the message: the names, the numbers or the service SID, the period. */
#define FORM_BASE 256

struct twilio {
    struct th_provider base;
    const struct th_config *cfg;
    char messages_url[512];
    char calls_url[512];
    char feedback_url[512]; /* ".../Messages/" the message SID and "/Feedback.json" follow */
    char *userpwd;          /* "user:password" */
};

/* ---- TwiML ---- */

/* The SSML inside <speak>...</speak> (the whole text when there is no wrapper). */
static void ssml_inner(const char *ssml, const char **start, size_t *len)
{
    const char *s = ssml;
    while (isspace((unsigned char)*s))
        s++;
    const char *end = s + strlen(s);
    if (strncmp(s, "<speak", 6) == 0 && (s[6] == '>' || isspace((unsigned char)s[6]))) {
        const char *gt = strchr(s, '>');
        const char *close = NULL;
        for (const char *p = end; p - s >= 8; p--) {
            if (strncmp(p - 8, "</speak>", 8) == 0) {
                close = p - 8;
                break;
            }
        }
        if (gt && close && close > gt) {
            s = gt + 1;
            end = close;
        }
    }
    *start = s;
    *len = (size_t)(end - s);
}

static th_err build_twiml(struct th_buf *t, const struct th_send *m)
{
    /* Twilio offers the Polly voices as "Polly.<Name>" */
    const struct th_voice *v = th_voice_find(m->voice_id);
    const char *voice = v ? v->name : NULL, *lang = v ? v->locale : NULL;
    char langbuf[16];
    if (!lang) { /* no known voice: Twilio's default voice, in the message's language */
        const char *l = m->language && m->language[0] ? m->language : "en";
        if (strcmp(l, "en") == 0)
            l = "en-US";
        else if (strcmp(l, "es") == 0)
            l = "es-US";
        th_strlcpy(langbuf, l, sizeof langbuf);
        /* "es-mx" → "es-MX" */
        for (char *c = strchr(langbuf, '-'); c && *c; c++)
            *c = (char)toupper((unsigned char)*c);
        lang = langbuf;
    }
    const char *inner;
    size_t len;
    ssml_inner(m->body, &inner, &len);
    th_buf_appends(t, "<Response><Say");
    if (voice)
        th_buf_printf(t, " voice=\"Polly.%s\"", voice);
    th_buf_printf(t, " language=\"%s\">", lang);
    th_buf_append(t, inner, len);
    return th_buf_appends(t, "</Say></Response>");
}

/* ---- transfer ---- */

static void parse_twilio(const struct th_http_response *res, struct th_send_result *out_)
{
    struct th_send_result out = {.err = TH_E_OK};
    if (res->outcome != TH_HTTP_DONE) {
        th_provider_transport_error(res, &out);
    } else {
        json_t *doc = json_loadb(res->body, res->len, 0, NULL);
        const char *sid = json_string_value(json_object_get(doc, "sid"));
        if (res->status >= 200 && res->status < 300) {
            if (sid && *sid && strlen(sid) < sizeof out.transaction_id) {
                th_strlcpy(out.transaction_id, sid, sizeof out.transaction_id);
            } else { /* accepted or not? unknown: failing over could deliver twice */
                out.err = TH_E_PROVIDER;
                snprintf(out.error, sizeof out.error, "HTTP %ld without a sid", res->status);
            }
        } else {
            json_int_t code = json_integer_value(json_object_get(doc, "code"));
            out.err = TH_E_PROVIDER;
            out.retryable = res->status == 429 || res->status >= 500 || code == 20429;
            if (code)
                snprintf(out.error, sizeof out.error, "error %lld (HTTP %ld)", (long long)code,
                         res->status);
            else
                snprintf(out.error, sizeof out.error, "HTTP %ld", res->status);
        }
        json_decref(doc);
    }
    *out_ = out;
}

static th_err twilio_send(struct th_provider *p, const struct th_attempt *at,
                          const struct th_send *msg, th_send_done_fn done, void *ud)
{
    struct twilio *tw = (struct twilio *)p;
    const struct th_config *cfg = tw->cfg;
    bool voice = msg->channel == TH_CHANNEL_VOICE;
    const char *sender = at->sender && at->sender[0] ? at->sender : NULL;
    /* urlencoding triples what it escapes; TwiML wraps the SSML in a few tags */
    size_t hint =
        FORM_BASE + 3 * strlen(msg->body) + (voice ? 128 : 0) +
        (cfg->receipts_twilio_status_url ? 3 * strlen(cfg->receipts_twilio_status_url) : 0);
    struct th_http_attempt *a = th_provider_attempt_new(at, sizeof *a, hint, FORM_MAX, done, ud);
    if (!a)
        return TH_E_NOMEM;
    struct th_buf *f = &a->body;
    th_err e = TH_E_OK; /* the other failures; the form's are kept in f and read once below */
    th_form_append(f, "To", msg->to);
    if (voice) {
        const char *from = sender ? sender : cfg->twilio_from;
        if (!from[0]) {
            e = TH_E_CONFIG; /* a call needs a caller id */
            goto fail;
        }
        struct th_buf twiml;
        e = th_provider_buf(at, &twiml, strlen(msg->body) + 128, TWIML_MAX);
        if (e == TH_E_OK)
            e = build_twiml(&twiml, msg);
        th_form_append(f, "From", from);
        th_form_append(f, "Twiml", th_buf_str(&twiml));
        th_buf_release(&twiml);
    } else {
        /* A sender that is a Messaging Service SID selects the service's pool. */
        if (sender && strncmp(sender, "MG", 2) == 0)
            th_form_append(f, "MessagingServiceSid", sender);
        else if (sender)
            th_form_append(f, "From", sender);
        else if (cfg->twilio_messaging_service_sid[0])
            th_form_append(f, "MessagingServiceSid", cfg->twilio_messaging_service_sid);
        else if (cfg->twilio_from[0])
            th_form_append(f, "From", cfg->twilio_from);
        else
            e = TH_E_CONFIG;
        th_form_append(f, "Body", msg->body);
        if (cfg->feedback_enabled && cfg->feedback_twilio) /* else Feedback.json is refused */
            th_form_append(f, "ProvideFeedback", "true");
        if (msg->otp_expires_ms > 0) { /* Twilio drops it rather than deliver an expired code */
            long long left = (long long)((msg->otp_expires_ms - th_wall_ms()) / 1000);
            char vp[24];
            snprintf(vp, sizeof vp, "%lld", left < 1 ? 1 : left > 36000 ? 36000 : left);
            th_form_append(f, "ValidityPeriod", vp);
        }
    }
    /* Delivery receipts ([receipts] twilio_status_url): Twilio posts each status change there,
     * signed; a call reports only its end (completed, busy, no-answer, failed), which is all a
     * receipt needs. */
    const char *status_url = cfg->receipts_twilio_status_url;
    if (status_url && status_url[0]) {
        th_form_append(f, "StatusCallback", status_url);
        if (voice)
            th_form_append(f, "StatusCallbackEvent", "completed");
    }
    if (e == TH_E_OK)
        e = th_buf_err(f);
    if (e != TH_E_OK)
        goto fail;
    const char *hdrs[] = {"Content-Type: application/x-www-form-urlencoded",
                          "Accept: application/json"};
    struct th_http_request req = {
        .method = "POST",
        .url = voice ? tw->calls_url : tw->messages_url,
        .headers = hdrs,
        .nheaders = 2,
        .body = f->data,
        .body_len = f->len,
        .userpwd = tw->userpwd,
        .ca_file = tw->cfg->twilio_ca_file[0] ? tw->cfg->twilio_ca_file : NULL,
    };
    return th_provider_http_send(a, at, &req, parse_twilio);
fail:
    th_provider_attempt_free(a);
    return e;
}

/* Feedback.json answers 201 (200 on an update); errors as a send's. */
static void parse_feedback(const struct th_http_response *res, struct th_send_result *out_)
{
    if (res->outcome == TH_HTTP_DONE && (res->status == 200 || res->status == 201)) {
        *out_ = (struct th_send_result){.err = TH_E_OK};
        return;
    }
    parse_twilio(res, out_);
    out_->transaction_id[0] = '\0';
    if (out_->err == TH_E_OK) { /* a 2xx parse_twilio takes for a send's answer */
        out_->err = TH_E_PROVIDER;
        snprintf(out_->error, sizeof out_->error, "HTTP %ld", res->status);
    }
}

/* The message was verified: Outcome=confirmed on its Feedback resource. Messages only (SM/MM
 * SIDs, sent with ProvideFeedback): calls have no feedback. The SID goes into the URL, so it is
 * checked to be two letters and 32 hexadecimal digits first. */
static th_err twilio_feedback(struct th_provider *p, const struct th_attempt *at, const char *sid,
                              th_send_done_fn done, void *ud)
{
    struct twilio *tw = (struct twilio *)p;
    bool ok = strlen(sid) == 34 && (strncmp(sid, "SM", 2) == 0 || strncmp(sid, "MM", 2) == 0);
    for (int i = 2; ok && i < 34; i++)
        ok = isxdigit((unsigned char)sid[i]) != 0;
    if (!ok)
        return TH_E_INVAL;
    struct feedback_attempt {
        struct th_http_attempt base; /* first: the helper's */
        char url[sizeof tw->feedback_url + 64];
    } *a = th_provider_attempt_new(at, sizeof *a, 32, 256, done, ud);
    if (!a)
        return TH_E_NOMEM;
    snprintf(a->url, sizeof a->url, "%s%s/Feedback.json", tw->feedback_url, sid);
    th_err e = th_form_append(&a->base.body, "Outcome", "confirmed");
    if (e != TH_E_OK) {
        th_provider_attempt_free(&a->base);
        return e;
    }
    const char *hdrs[] = {"Content-Type: application/x-www-form-urlencoded",
                          "Accept: application/json"};
    struct th_http_request req = {
        .method = "POST",
        .url = a->url,
        .headers = hdrs,
        .nheaders = 2,
        .body = a->base.body.data,
        .body_len = a->base.body.len,
        .userpwd = tw->userpwd,
        .ca_file = tw->cfg->twilio_ca_file[0] ? tw->cfg->twilio_ca_file : NULL,
    };
    return th_provider_http_send(&a->base, at, &req, parse_feedback);
}

static void twilio_free(struct th_provider *p)
{
    struct twilio *tw = (struct twilio *)p;
    if (tw->userpwd) {
        OPENSSL_cleanse(tw->userpwd, strlen(tw->userpwd));
        free(tw->userpwd);
    }
    free(tw);
}

static const struct th_provider_ops twilio_ops = {
    .send = twilio_send,
    .feedback = twilio_feedback,
    .free = twilio_free,
};

static th_err twilio_new(const struct th_config *cfg, const struct th_outbox_sink *sink,
                         struct th_provider **out, char *err, size_t errlen)
{
    (void)sink;
    const char *sid = cfg->twilio_account_sid;
    if (strlen(sid) != 34 || strncmp(sid, "AC", 2) != 0) {
        snprintf(err, errlen, "[twilio] account_sid must be AC followed by 32 characters");
        return TH_E_CONFIG;
    }
    const char *user, *pass;
    if (cfg->twilio_api_key_sid[0]) {
        user = cfg->twilio_api_key_sid;
        pass = cfg->twilio_api_key_secret;
        if (!pass[0]) {
            snprintf(err, errlen, "[twilio] api_key_sid is set but api_key_secret is not");
            return TH_E_CONFIG;
        }
    } else {
        user = sid;
        pass = cfg->twilio_auth_token;
        if (!pass[0]) {
            snprintf(err, errlen, "[twilio] needs api_key_sid + api_key_secret, or auth_token");
            return TH_E_CONFIG;
        }
    }
    if (!cfg->twilio_from[0] && !cfg->twilio_messaging_service_sid[0])
        th_log_msg(TH_LOG_WARN, "twilio",
                   "neither [twilio] from nor messaging_service_sid is set: every route to "
                   "twilio must name a sender");
    const char *base = cfg->twilio_base_url;
    size_t bl = strlen(base);
    if (bl && base[bl - 1] == '/')
        bl--;
    if (strncmp(base, "https://", 8) != 0 && strncmp(base, "http://", 7) != 0) {
        snprintf(err, errlen, "[twilio] base_url must be an http(s) URL");
        return TH_E_CONFIG;
    }
    struct twilio *tw = calloc(1, sizeof *tw);
    if (!tw)
        return TH_E_NOMEM;
    tw->base.ops = &twilio_ops;
    tw->base.name = "twilio";
    tw->base.timeout_ms = cfg->twilio_timeout_ms;
    tw->cfg = cfg;
    snprintf(tw->messages_url, sizeof tw->messages_url, "%.*s/2010-04-01/Accounts/%s/Messages.json",
             (int)bl, base, sid);
    snprintf(tw->feedback_url, sizeof tw->feedback_url, "%.*s/2010-04-01/Accounts/%s/Messages/",
             (int)bl, base, sid);
    snprintf(tw->calls_url, sizeof tw->calls_url, "%.*s/2010-04-01/Accounts/%s/Calls.json", (int)bl,
             base, sid);
    size_t n = strlen(user) + strlen(pass) + 2;
    tw->userpwd = malloc(n);
    if (!tw->userpwd) {
        free(tw);
        return TH_E_NOMEM;
    }
    snprintf(tw->userpwd, n, "%s:%s", user, pass);
    *out = &tw->base;
    return TH_E_OK;
}

static bool twilio_configured(const struct th_config *cfg)
{
    return cfg->twilio_account_sid[0] != '\0';
}

const struct th_provider_kind th_provider_twilio = {
    .name = "twilio",
    .create = twilio_new,
    .configured = twilio_configured,
    .required = "account_sid",
    .how_to_configure = "set [twilio] account_sid and auth_token (or api_key_sid and "
                        "api_key_secret), and from or messaging_service_sid",
    .parse = parse_twilio,
};
