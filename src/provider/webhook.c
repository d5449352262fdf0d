/*
 * Webhook: for customers with their own SMS/voice gateway. Each message is POSTed as JSON to
 * [webhook] url, signed so the gateway can tell it came from telehook and was not replayed:
 *
 *   X-Telehook-Signature: t=<unix seconds>,v1=<hex HMAC-SHA256(secret, "<t>." + body)>
 *
 * (the scheme Stripe and others use: verify the HMAC in constant time, refuse old timestamps).
 * The body: {"request_id", "to", "country", "channel", "language", "body", "voice_id", "sender",
 * "expires_at"}. A 2xx answer is success; its JSON "id" (if any) becomes the transaction id.
 * 429 and 5xx are retryable, other statuses permanent. The body holds the code: the URL must be
 * https, or plain http to a loopback relay; [webhook] ca_file may name the gateway's private CA.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <jansson.h>
#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>

#include "common/buf.h"
#include "common/util.h"
#include "net/trust.h"
#include "provider/http_common.h"
#include "provider/provider.h"

#define BODY_MAX (16 * 1024)
/* The body's size besides the message: the JSON names, the ids, the number, the expiry. */
#define BODY_BASE 384

struct webhook {
    struct th_provider base;
    const struct th_config *cfg;
};

struct attempt {
    struct th_http_attempt base; /* first: owned by the helper (http_common.h) */
    char sig[160];
    char reqid[96];
};

static void parse_webhook(const struct th_http_response *res, struct th_send_result *out_)
{
    struct th_send_result out = {.err = TH_E_OK};
    if (res->outcome != TH_HTTP_DONE) {
        th_provider_transport_error(res, &out);
    } else if (res->status >= 200 && res->status < 300) {
        json_t *doc = json_loadb(res->body, res->len, 0, NULL);
        const char *id = json_string_value(json_object_get(doc, "id"));
        if (id && *id && strlen(id) < sizeof out.transaction_id)
            th_strlcpy(out.transaction_id, id, sizeof out.transaction_id);
        else
            th_random_id("wh-", out.transaction_id, sizeof out.transaction_id);
        json_decref(doc);
    } else {
        out.err = TH_E_PROVIDER;
        out.retryable = res->status == 429 || res->status >= 500;
        snprintf(out.error, sizeof out.error, "HTTP %ld", res->status);
    }
    *out_ = out;
}

static th_err sign(const struct th_attempt *at, const char *secret, long long t,
                   const struct th_buf *body, char *out, size_t outlen)
{
    char ts[24];
    int tl = snprintf(ts, sizeof ts, "%lld.", t);
    unsigned char mac[EVP_MAX_MD_SIZE];
    unsigned int maclen = 0;
    struct th_buf msg; /* "<t>." + body: HMAC() is one-shot */
    size_t len = (size_t)tl + body->len;
    th_provider_buf(at, &msg, len, len + 1); /* a failure is kept in msg, read below */
    th_buf_append(&msg, ts, (size_t)tl);
    th_buf_append(&msg, body->data, body->len);
    bool ok =
        th_buf_err(&msg) == TH_E_OK && HMAC(EVP_sha256(), secret, (int)strlen(secret),
                                            (const unsigned char *)msg.data, msg.len, mac, &maclen);
    th_buf_release(&msg);
    if (!ok)
        return TH_E_NOMEM;
    int n = snprintf(out, outlen, "X-Telehook-Signature: t=%lld,v1=", t);
    for (unsigned int i = 0; i < maclen && (size_t)n + 2 < outlen; i++)
        n += snprintf(out + n, outlen - (size_t)n, "%02x", mac[i]);
    OPENSSL_cleanse(mac, sizeof mac);
    return TH_E_OK;
}

static th_err webhook_send(struct th_provider *p, const struct th_attempt *at,
                           const struct th_send *m, th_send_done_fn done, void *ud)
{
    struct webhook *wh = (struct webhook *)p;
    size_t hint = BODY_BASE + 2 * strlen(m->body); /* JSON escaping, as in aws.c */
    struct attempt *a = th_provider_attempt_new(at, sizeof *a, hint, BODY_MAX, done, ud);
    if (!a)
        return TH_E_NOMEM;
    struct th_buf *b = &a->base.body;
    char expires[25] = "";
    if (m->otp_expires_ms > 0)
        th_format_iso8601(m->otp_expires_ms, expires);
    th_buf_appends(b, "{\"request_id\":");
    th_buf_append_json(b, m->request_id, (size_t)-1);
    th_buf_appends(b, ",\"to\":");
    th_buf_append_json(b, m->to, (size_t)-1);
    th_buf_appends(b, ",\"country\":");
    th_buf_append_json(b, m->region, (size_t)-1);
    th_buf_appends(b, ",\"channel\":");
    th_buf_append_json(b, th_channel_name(m->channel), (size_t)-1);
    th_buf_appends(b, ",\"language\":");
    th_buf_append_json(b, m->language ? m->language : "", (size_t)-1);
    th_buf_appends(b, ",\"body\":");
    th_buf_append_json(b, m->body, (size_t)-1);
    th_buf_appends(b, ",\"voice_id\":");
    th_buf_append_json(b, m->voice_id ? m->voice_id : "", (size_t)-1);
    th_buf_appends(b, ",\"sender\":");
    th_buf_append_json(b, at->sender ? at->sender : "", (size_t)-1);
    th_buf_appends(b, ",\"expires_at\":");
    if (expires[0])
        th_buf_append_json(b, expires, (size_t)-1);
    else
        th_buf_appends(b, "null");
    th_buf_appendc(b, '}');
    th_err e = th_buf_err(b);
    if (e == TH_E_OK)
        e = sign(at, wh->cfg->webhook_secret, (long long)time(NULL), b, a->sig, sizeof a->sig);
    if (e != TH_E_OK) {
        th_provider_attempt_free(&a->base);
        return e;
    }
    snprintf(a->reqid, sizeof a->reqid, "X-Telehook-Request-Id: %s", m->request_id);
    const char *hdrs[] = {"Content-Type: application/json", a->sig, a->reqid};
    struct th_http_request req = {
        .method = "POST",
        .url = wh->cfg->webhook_url,
        .headers = hdrs,
        .nheaders = 3,
        .body = b->data,
        .body_len = b->len,
        .ca_file = wh->cfg->webhook_ca_file[0] ? wh->cfg->webhook_ca_file : NULL,
    };
    return th_provider_http_send(&a->base, at, &req, parse_webhook);
}

static void webhook_free(struct th_provider *p)
{
    free(p);
}

static const struct th_provider_ops webhook_ops = {
    .send = webhook_send,
    .free = webhook_free,
};

static th_err webhook_new(const struct th_config *cfg, const struct th_outbox_sink *sink,
                          struct th_provider **out, char *err, size_t errlen)
{
    (void)sink;
    /* Also checked by th_config_check_serve; here for the paths that skip it (dlq replay). */
    char why[256];
    if (th_trust_check_url(cfg->webhook_url, why, sizeof why) != TH_E_OK) {
        snprintf(err, errlen, "[webhook] url: %s", why);
        return TH_E_CONFIG;
    }
    if (strlen(cfg->webhook_secret) < 16) {
        snprintf(err, errlen, "[webhook] secret must be set, at least 16 characters");
        return TH_E_CONFIG;
    }
    struct webhook *wh = calloc(1, sizeof *wh);
    if (!wh)
        return TH_E_NOMEM;
    wh->base.ops = &webhook_ops;
    wh->base.name = "webhook";
    wh->base.timeout_ms = cfg->webhook_timeout_ms;
    wh->cfg = cfg;
    *out = &wh->base;
    return TH_E_OK;
}

static bool webhook_configured(const struct th_config *cfg)
{
    return cfg->webhook_url[0] != '\0';
}

const struct th_provider_kind th_provider_webhook = {
    .name = "webhook",
    .create = webhook_new,
    .configured = webhook_configured,
    .required = "url",
    .how_to_configure = "set [webhook] url and secret",
    .parse = parse_webhook,
};
