/*
 * AWS End User Messaging SMS and Voice v2 (PinpointSMSVoiceV2): SendTextMessage for SMS,
 * SendVoiceMessage (SSML) for voice, over the AWS JSON 1.0 protocol, signed with SigV4.
 *
 * Hot path: the body is written straight into a buffer (no JSON tree); the SigV4 signing key is
 * derived once per day per thread (thread-local: each event loop has its own, no lock), and the
 * credentials are copied into that cache only when their generation changes.
 *
 * Errors are classified from the service model (reference §0.1, §1.5): throttling and server
 * faults are retryable (the router fails over); validation, access, quota, not-found and
 * conflict (opt-out) are permanent. Only the error's type and Reason enum are kept: AWS's
 * free-text Message may quote the phone number.
 */
#include <ctype.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <curl/curl.h>
#include <jansson.h>
#include <openssl/crypto.h>

#include "aws/creds.h"
#include "aws/sigv4.h"
#include "common/buf.h"
#include "common/util.h"
#include "net/trust.h"
#include "obs/log.h"
#include "provider/http_common.h"
#include "provider/provider.h"

#define SERVICE  "sms-voice"
#define BODY_MAX (16 * 1024)
/* The body's size before the message: the JSON names, the numbers, the sender, the ids. */
#define BODY_BASE 384
/* AWS JSON 1.0 names the error's type in a header (the body's __type is the fallback). */
#define ERROR_TYPE_HEADER "X-Amzn-Errortype"

struct aws {
    struct th_provider base;
    const struct th_config *cfg;
    struct th_aws_creds *creds;
    char region[64];
    char url[512];  /* endpoint, ending in "/" */
    char host[300]; /* the Host header value signed and sent */
    /* [aws] ca_file, AWS_CA_BUNDLE or the profile's ca_bundle; "" = the [tls] default */
    char ca_file[1024];
    atomic_bool warned_no_creds;
};

/* Per event-loop thread: the signing key for (day, credentials generation). */
struct sign_cache {
    uint64_t generation;
    char date8[9];
    unsigned char key[TH_SIGV4_KEY_LEN];
    struct th_aws_credentials creds;
};
/*
 * One cache per loop thread, found through a thread-specific key whose destructor wipes and frees
 * it when the thread ends (a _Thread_local pointer alone would leak it, and leave a copy of the
 * secret key in freed memory).
 */
static pthread_key_t cache_key;
static pthread_once_t cache_once = PTHREAD_ONCE_INIT;
static bool cache_key_ok;

static void cache_free(void *p)
{
    OPENSSL_cleanse(p, sizeof(struct sign_cache));
    free(p);
}

static void cache_key_init(void)
{
    cache_key_ok = pthread_key_create(&cache_key, cache_free) == 0;
}

struct attempt {
    struct th_http_attempt base; /* first: owned by the helper (http_common.h), wiped when freed */
    char authz[512];
    char h_date[40], h_auth[560], h_host[320], h_target[80];
    char h_token[]; /* "X-Amz-Security-Token: ..." when temporary credentials are used */
};

/* ---- errors ---- */

static const char *const retryable_types[] = {
    "ThrottlingException",
    "InternalServerException",
    "ServiceUnavailableException",
    "Throttling",
    "ThrottledException",
    "RequestThrottledException",
    "TooManyRequestsException",
    "RequestLimitExceeded",
    "RequestTimeout",
    "RequestTimeoutException",
    "PriorRequestNotComplete",
    "LimitExceededException",
    "SlowDown",
    "InternalFailure",
    "ServiceUnavailable",
};

/* "ns#Type:http://..." → "Type" (Smithy's sanitising rule). */
static void sanitize_type(const char *in, char *out, size_t outlen)
{
    const char *p = strchr(in, '#');
    p = p ? p + 1 : in;
    size_t n = strcspn(p, ":");
    if (n >= outlen)
        n = outlen - 1;
    memcpy(out, p, n);
    out[n] = '\0';
    for (char *c = out; *c; c++) /* only identifier characters reach logs and records */
        if (!isalnum((unsigned char)*c) && *c != '_' && *c != '.')
            *c = '_';
}

static void classify_error(const struct th_http_response *res, struct th_send_result *out)
{
    char type[96] = "";
    char reason[64] = "";
    json_t *doc = json_loadb(res->body, res->len, 0, NULL);
    const char *error_type = th_http_response_header(res, ERROR_TYPE_HEADER);
    if (error_type[0]) {
        sanitize_type(error_type, type, sizeof type);
    } else if (json_is_object(doc)) {
        const char *t = json_string_value(json_object_get(doc, "__type"));
        if (!t)
            t = json_string_value(json_object_get(doc, "code"));
        if (t)
            sanitize_type(t, type, sizeof type);
    }
    if (json_is_object(doc)) {
        const char *r = json_string_value(json_object_get(doc, "Reason"));
        if (r)
            sanitize_type(r, reason, sizeof reason);
    }
    json_decref(doc);
    bool retry = res->status >= 500 || res->status == 429;
    for (size_t i = 0; !retry && i < TH_ARRAY_LEN(retryable_types); i++)
        if (strcmp(type, retryable_types[i]) == 0)
            retry = true;
    out->err = TH_E_PROVIDER;
    out->retryable = retry;
    if (!type[0])
        th_strlcpy(type, "HTTP error", sizeof type);
    snprintf(out->error, sizeof out->error, "%.80s%s%.60s (HTTP %ld)", type, reason[0] ? " " : "",
             reason, res->status);
}

static void parse_aws(const struct th_http_response *res, struct th_send_result *out_)
{
    struct th_send_result out = {.err = TH_E_OK};
    if (res->outcome != TH_HTTP_DONE) {
        th_provider_transport_error(res, &out);
    } else if (res->status == 200) {
        json_t *doc = json_loadb(res->body, res->len, 0, NULL);
        const char *id = json_string_value(json_object_get(doc, "MessageId"));
        if (id && *id && strlen(id) < sizeof out.transaction_id) {
            th_strlcpy(out.transaction_id, id, sizeof out.transaction_id);
        } else {
            /* Accepted or not? Unknown: failing over could deliver twice, so do not. */
            out.err = TH_E_PROVIDER;
            out.retryable = false;
            snprintf(out.error, sizeof out.error, "HTTP 200 without a MessageId");
        }
        json_decref(doc);
    } else {
        classify_error(res, &out);
    }
    *out_ = out;
}

/* ---- the request ---- */

static th_err body_text(struct th_buf *b, const struct aws *aws, const struct th_attempt *at,
                        const struct th_send *m, bool voice)
{
    const struct th_config *cfg = aws->cfg;
    const char *sender = at->sender && at->sender[0] ? at->sender : cfg->aws_origination_identity;
    th_buf_appends(b, "{\"DestinationPhoneNumber\":");
    th_buf_append_json(b, m->to, (size_t)-1);
    if (sender && sender[0]) {
        th_buf_appends(b, ",\"OriginationIdentity\":");
        th_buf_append_json(b, sender, (size_t)-1);
    }
    th_buf_appends(b, ",\"MessageBody\":");
    th_buf_append_json(b, m->body, (size_t)-1);
    if (voice) {
        th_buf_appends(b, ",\"MessageBodyTextType\":\"SSML\"");
        if (m->voice_id && m->voice_id[0]) {
            char vid[32];
            size_t i = 0;
            for (; m->voice_id[i] && i < sizeof vid - 1; i++)
                vid[i] = (char)toupper((unsigned char)m->voice_id[i]);
            vid[i] = '\0';
            th_buf_appends(b, ",\"VoiceId\":");
            th_buf_append_json(b, vid, (size_t)-1);
        }
        if (cfg->aws_max_price_per_minute[0]) {
            th_buf_appends(b, ",\"MaxPricePerMinute\":");
            th_buf_append_json(b, cfg->aws_max_price_per_minute, (size_t)-1);
        }
    } else {
        th_buf_appends(b, ",\"MessageType\":\"TRANSACTIONAL\"");
        if (cfg->aws_max_price[0]) {
            th_buf_appends(b, ",\"MaxPrice\":");
            th_buf_append_json(b, cfg->aws_max_price, (size_t)-1);
        }
    }
    if (cfg->aws_configuration_set[0]) {
        th_buf_appends(b, ",\"ConfigurationSetName\":");
        th_buf_append_json(b, cfg->aws_configuration_set, (size_t)-1);
    }
    if (m->otp_expires_ms > 0) {
        /* A code that has expired is worth nothing: let AWS drop it rather than deliver it late. */
        int64_t ttl = (m->otp_expires_ms - th_wall_ms()) / 1000;
        if (ttl < 5)
            ttl = 5;
        if (ttl > 259200)
            ttl = 259200;
        th_buf_printf(b, ",\"TimeToLive\":%lld", (long long)ttl);
    }
    if (cfg->feedback_enabled && cfg->feedback_aws) /* else AWS refuses PutMessageFeedback */
        th_buf_appends(b, ",\"MessageFeedbackEnabled\":true");
    th_buf_appends(b, ",\"Context\":{\"telehook_request_id\":");
    th_buf_append_json(b, m->request_id, (size_t)-1);
    return th_buf_appends(b, "}}");
}

static struct sign_cache *cache_for(struct aws *aws, const char *date8)
{
    pthread_once(&cache_once, cache_key_init);
    if (!cache_key_ok)
        return NULL;
    struct sign_cache *c = pthread_getspecific(cache_key);
    if (!c) {
        c = calloc(1, sizeof *c);
        if (!c)
            return NULL;
        if (pthread_setspecific(cache_key, c) != 0) {
            free(c);
            return NULL;
        }
    }
    uint64_t gen = th_aws_creds_generation(aws->creds);
    if (gen == 0)
        return NULL;
    if (c->generation != gen) {
        if (!th_aws_creds_get(aws->creds, &c->creds))
            return NULL;
        c->generation = c->creds.generation;
        c->date8[0] = '\0';
    }
    if (strcmp(c->date8, date8) != 0) {
        th_sigv4_derive_key(c->creds.secret_access_key, date8, aws->region, SERVICE, c->key);
        th_strlcpy(c->date8, date8, sizeof c->date8);
    }
    return c;
}

static th_err aws_post(struct aws *aws, const struct th_attempt *at, struct attempt *a,
                       struct sign_cache *sc, const char *date, const char *target,
                       th_provider_parse_fn parse);

static th_err aws_send(struct th_provider *p, const struct th_attempt *at,
                       const struct th_send *msg, th_send_done_fn done, void *ud)
{
    struct aws *aws = (struct aws *)p;
    bool voice = msg->channel == TH_CHANNEL_VOICE;
    char date[17];
    th_sigv4_amz_date((long long)time(NULL), date);
    char date8[9];
    memcpy(date8, date, 8);
    date8[8] = '\0';
    struct sign_cache *sc = cache_for(aws, date8);
    if (!sc) {
        if (!atomic_exchange(&aws->warned_no_creds, true)) {
            th_log_msg(TH_LOG_WARN, "aws_credentials", "no AWS credentials yet: sends fail over");
        }
        return TH_E_AUTH;
    }
    const char *token = sc->creds.session_token;
    size_t token_len = token[0] ? strlen(token) + 32 : 0;
    /* the message as a JSON string: escaping at most doubles what the text usually holds */
    size_t hint = BODY_BASE + 2 * strlen(msg->body);
    struct attempt *a =
        th_provider_attempt_new(at, sizeof *a + token_len, hint, BODY_MAX, done, ud);
    if (!a)
        return TH_E_NOMEM;
    th_err e = body_text(&a->base.body, aws, at, msg, voice);
    if (e != TH_E_OK) {
        th_provider_attempt_free(&a->base);
        return e;
    }
    return aws_post(aws, at, a, sc, date,
                    voice ? "PinpointSMSVoiceV2.SendVoiceMessage"
                          : "PinpointSMSVoiceV2.SendTextMessage",
                    parse_aws);
}

/* Signs the body the attempt holds for target and starts it; consumes a (the helper's contract:
 * TH_E_OK and done later, or an error with a freed). */
static th_err aws_post(struct aws *aws, const struct th_attempt *at, struct attempt *a,
                       struct sign_cache *sc, const char *date, const char *target,
                       th_provider_parse_fn parse)
{
    struct th_buf *body = &a->base.body;
    const char *token = sc->creds.session_token;
    size_t token_len = token[0] ? strlen(token) + 32 : 0;
    th_err e;
    struct th_sigv4_header sh[5] = {
        {"Content-Type", "application/x-amz-json-1.0"},
        {"Host", aws->host},
        {"X-Amz-Date", date},
        {"X-Amz-Target", target},
        {"X-Amz-Security-Token", token},
    };
    struct th_sigv4_input in = {
        .method = "POST",
        .path = "/",
        .query = "",
        .headers = sh,
        .nheaders = token[0] ? 5 : 4,
        .body = body->data,
        .body_len = body->len,
        .amz_date = date,
        .region = aws->region,
        .service = SERVICE,
        .access_key_id = sc->creds.access_key_id,
        .signing_key = sc->key,
    };
    e = th_sigv4_sign(&in, NULL, NULL, a->authz, sizeof a->authz);
    if (e != TH_E_OK)
        goto fail;
    snprintf(a->h_date, sizeof a->h_date, "X-Amz-Date: %s", date);
    snprintf(a->h_auth, sizeof a->h_auth, "Authorization: %s", a->authz);
    snprintf(a->h_host, sizeof a->h_host, "Host: %s", aws->host);
    snprintf(a->h_target, sizeof a->h_target, "X-Amz-Target: %s", target);
    const char *hdrs[6] = {"Content-Type: application/x-amz-json-1.0",
                           a->h_host,
                           a->h_date,
                           a->h_target,
                           a->h_auth,
                           NULL};
    size_t nh = 5;
    if (token[0]) {
        snprintf(a->h_token, token_len, "X-Amz-Security-Token: %s", token);
        hdrs[nh++] = a->h_token;
    }
    static const char *const capture[] = {ERROR_TYPE_HEADER};
    struct th_http_request req = {
        .method = "POST",
        .url = aws->url,
        .headers = hdrs,
        .nheaders = nh,
        .body = body->data,
        .body_len = body->len,
        .ca_file = aws->ca_file[0] ? aws->ca_file : NULL,
        .capture = capture,
        .ncapture = 1,
    };
    return th_provider_http_send(&a->base, at, &req, parse);
fail:
    th_provider_attempt_free(&a->base);
    return e;
}

/* PutMessageFeedback answers 200 with the id and status; anything else as a send's error. */
static void parse_feedback(const struct th_http_response *res, struct th_send_result *out_)
{
    struct th_send_result out = {.err = TH_E_OK};
    if (res->outcome != TH_HTTP_DONE)
        th_provider_transport_error(res, &out);
    else if (res->status != 200)
        classify_error(res, &out);
    *out_ = out;
}

/* The message was verified: PutMessageFeedback RECEIVED. AWS takes it only for messages sent
 * with MessageFeedbackEnabled (body_text adds it while [feedback] aws is on). */
static th_err aws_feedback(struct th_provider *p, const struct th_attempt *at,
                           const char *transaction_id, th_send_done_fn done, void *ud)
{
    struct aws *aws = (struct aws *)p;
    if (!transaction_id[0] || strlen(transaction_id) > 64) /* the model's MessageId */
        return TH_E_INVAL;
    char date[17];
    th_sigv4_amz_date((long long)time(NULL), date);
    char date8[9];
    memcpy(date8, date, 8);
    date8[8] = '\0';
    struct sign_cache *sc = cache_for(aws, date8);
    if (!sc)
        return TH_E_AUTH;
    const char *token = sc->creds.session_token;
    size_t token_len = token[0] ? strlen(token) + 32 : 0;
    struct attempt *a = th_provider_attempt_new(at, sizeof *a + token_len, 256, 1024, done, ud);
    if (!a)
        return TH_E_NOMEM;
    struct th_buf *b = &a->base.body;
    th_buf_appends(b, "{\"MessageId\":");
    th_buf_append_json(b, transaction_id, (size_t)-1);
    th_err e = th_buf_appends(b, ",\"MessageFeedbackStatus\":\"RECEIVED\"}");
    if (e != TH_E_OK) {
        th_provider_attempt_free(&a->base);
        return e;
    }
    return aws_post(aws, at, a, sc, date, "PinpointSMSVoiceV2.PutMessageFeedback", parse_feedback);
}

static bool aws_ready(struct th_provider *p)
{
    return th_aws_creds_generation(((struct aws *)p)->creds) != 0;
}

static void aws_free(struct th_provider *p)
{
    struct aws *aws = (struct aws *)p;
    th_aws_creds_free(aws->creds);
    free(aws);
}

static const struct th_provider_ops aws_ops = {
    .send = aws_send,
    .feedback = aws_feedback,
    .ready = aws_ready,
    .free = aws_free,
};

static const char *env_nonempty(const char *name)
{
    const char *v = getenv(name);
    return v && *v ? v : NULL;
}

/* host[:port] as signed: lower case, the port only when not the scheme's default. */
static bool endpoint_host(const char *url, char *out, size_t outlen)
{
    CURLU *u = curl_url();
    char *host = NULL, *port = NULL, *scheme = NULL;
    bool ok = u && curl_url_set(u, CURLUPART_URL, url, 0) == CURLUE_OK &&
              curl_url_get(u, CURLUPART_HOST, &host, 0) == CURLUE_OK &&
              curl_url_get(u, CURLUPART_SCHEME, &scheme, 0) == CURLUE_OK &&
              (strcmp(scheme, "https") == 0 || strcmp(scheme, "http") == 0);
    if (ok) {
        curl_url_get(u, CURLUPART_PORT, &port, 0); /* absent: default port */
        bool dflt = !port || (strcmp(scheme, "https") == 0 && strcmp(port, "443") == 0) ||
                    (strcmp(scheme, "http") == 0 && strcmp(port, "80") == 0);
        int n = snprintf(out, outlen, "%s%s%s", host, dflt ? "" : ":", dflt ? "" : port);
        ok = n > 0 && (size_t)n < outlen;
        for (char *c = out; ok && *c; c++)
            *c = (char)tolower((unsigned char)*c);
    }
    curl_free(host);
    curl_free(port);
    curl_free(scheme);
    curl_url_cleanup(u);
    return ok;
}

/* [aws] ca_file, else AWS_CA_BUNDLE, else the profile's ca_bundle (as the SDKs): checked here,
 * where the environment and the AWS config file are read. "" in out: the [tls] default. */
static bool ca_bundle(const struct th_config *cfg, char *out, size_t outlen, char *err,
                      size_t errlen)
{
    const char *from = "[aws] ca_file";
    bool fits = cfg->aws_ca_file[0]
                    ? th_strlcpy(out, cfg->aws_ca_file, outlen) < outlen
                    : th_aws_resolve_ca_bundle(cfg->aws_profile, out, outlen, &from);
    if (!fits) {
        snprintf(err, errlen, "%s: path too long", from);
        return false;
    }
    char why[512];
    if (out[0] && th_trust_check_file(out, why, sizeof why) != TH_E_OK) {
        snprintf(err, errlen, "%s: %s", from, why);
        return false;
    }
    return true;
}

static th_err aws_new(const struct th_config *cfg, const struct th_outbox_sink *sink,
                      struct th_provider **out, char *err, size_t errlen)
{
    (void)sink;
    struct aws *aws = calloc(1, sizeof *aws);
    if (!aws)
        return TH_E_NOMEM;
    aws->base.ops = &aws_ops;
    aws->base.name = "aws";
    aws->base.timeout_ms = cfg->aws_timeout_ms;
    aws->cfg = cfg;
    if (th_aws_profile_check(cfg->aws_profile, err, errlen) != TH_E_OK) {
        free(aws); /* before the region: a missing profile is why there is none */
        return TH_E_CONFIG;
    }
    if (!th_aws_resolve_region(cfg->aws_region, cfg->aws_profile, aws->region,
                               sizeof aws->region)) {
        snprintf(err, errlen, "no region: set [aws] region, AWS_REGION or AWS_DEFAULT_REGION");
        free(aws);
        return TH_E_CONFIG;
    }
    const char *ep = cfg->aws_endpoint[0] ? cfg->aws_endpoint : NULL;
    if (!ep)
        ep = env_nonempty("AWS_ENDPOINT_URL_PINPOINT_SMS_VOICE_V2");
    if (!ep)
        ep = env_nonempty("AWS_ENDPOINT_URL");
    if (ep) {
        size_t n = strlen(ep);
        snprintf(aws->url, sizeof aws->url, "%s%s", ep, n && ep[n - 1] == '/' ? "" : "/");
    } else {
        bool china = strncmp(aws->region, "cn-", 3) == 0;
        snprintf(aws->url, sizeof aws->url, "https://sms-voice.%s.amazonaws.com%s/", aws->region,
                 china ? ".cn" : "");
    }
    if (!endpoint_host(aws->url, aws->host, sizeof aws->host)) {
        snprintf(err, errlen, "endpoint is not an http(s) URL: %.200s", aws->url);
        free(aws);
        return TH_E_CONFIG;
    }
    if (!ca_bundle(cfg, aws->ca_file, sizeof aws->ca_file, err, errlen)) {
        free(aws);
        return TH_E_CONFIG;
    }
    th_err e =
        th_aws_creds_new(cfg->aws_profile, aws->region, aws->ca_file, &aws->creds, err, errlen);
    if (e != TH_E_OK) {
        free(aws);
        return e;
    }
    th_log_msg(TH_LOG_INFO, "aws", "End User Messaging at %s (region %s), credentials: %s%s%s",
               aws->url, aws->region, th_aws_creds_source(aws->creds),
               aws->ca_file[0] ? ", CA bundle: " : "", aws->ca_file);
    *out = &aws->base;
    return TH_E_OK;
}

static bool aws_configured(const struct th_config *cfg)
{
    return cfg->aws_origination_identity[0] || cfg->aws_endpoint[0];
}

/* A region is what a set-up needs here; credentials may come from the host, seen only by the
 * server (and fetching them starts a thread). */
static bool aws_check(const struct th_config *cfg, char *why, size_t whylen)
{
    char region[64];
    if (th_aws_resolve_region(cfg->aws_region, cfg->aws_profile, region, sizeof region))
        return true;
    snprintf(why, whylen, "no AWS region");
    return false;
}

const struct th_provider_kind th_provider_aws = {
    .name = "aws",
    .create = aws_new,
    .configured = aws_configured,
    .check = aws_check,
    .how_to_configure = "set [aws] region (or AWS_REGION); credentials come from the usual AWS "
                        "chain",
    .parse = parse_aws,
};
