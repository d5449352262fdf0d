/* Delivery receipts: parsing, authentication and status mapping (receipt/receipt.h). */
#include "receipt/receipt.h"

#include <ctype.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include <jansson.h>
#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>
#include <openssl/pem.h>
#include <openssl/x509.h>

#include "common/hmac.h"
#include "common/util.h"

static const struct {
    const char *name;
    bool final, delivered;
} statuses[] = {
#define TH_RS_ROW(e, n, f, d) {n, f, d},
    TH_RECEIPT_STATUSES(TH_RS_ROW)
#undef TH_RS_ROW
};

const char *th_receipt_status_name(th_receipt_status s)
{
    return (unsigned)s < TH_RS__COUNT ? statuses[s].name : "unknown";
}

bool th_receipt_status_final(th_receipt_status s)
{
    return (unsigned)s < TH_RS__COUNT ? statuses[s].final : true;
}

void th_receipt_set_status(struct th_receipt *r, th_receipt_status s)
{
    if ((unsigned)s >= TH_RS__COUNT)
        s = TH_RS_UNKNOWN;
    th_strlcpy(r->status, statuses[s].name, sizeof r->status);
    r->final = statuses[s].final;
    r->delivered = statuses[s].delivered;
}

/* ---- forms ---- */

static int hexval(int c)
{
    if (c >= '0' && c <= '9')
        return c - '0';
    c = tolower(c);
    return c >= 'a' && c <= 'f' ? c - 'a' + 10 : -1;
}

/* Decodes [p, p+n) into out (room for n + 1); TH_E_REQUEST on a bad escape or a NUL. */
static th_err form_decode(const char *p, size_t n, char *out)
{
    size_t o = 0;
    for (size_t i = 0; i < n; i++) {
        int c = (unsigned char)p[i];
        if (c == '+') {
            c = ' ';
        } else if (c == '%') {
            if (i + 2 >= n)
                return TH_E_REQUEST;
            int hi = hexval((unsigned char)p[i + 1]);
            int lo = hexval((unsigned char)p[i + 2]);
            if (hi < 0 || lo < 0)
                return TH_E_REQUEST;
            c = hi * 16 + lo;
            i += 2;
        }
        if (c == 0)
            return TH_E_REQUEST;
        out[o++] = (char)c;
    }
    out[o] = '\0';
    return TH_E_OK;
}

th_err th_form_parse(const char *body, size_t len, struct th_form *out)
{
    memset(out, 0, sizeof *out);
    if (len > TH_RECEIPT_FORM_MAX_BODY)
        return TH_E_TOOBIG;
    /* each decoded string is no longer than its encoding, plus its NUL: 2 * len + 2 covers a
     * body of one pair with both halves at full length */
    out->storage = malloc(2 * len + 2);
    if (!out->storage)
        return TH_E_NOMEM;
    char *w = out->storage;
    size_t i = 0;
    while (i < len) {
        size_t end = i;
        while (end < len && body[end] != '&')
            end++;
        if (end > i) {
            if (out->n == TH_RECEIPT_FORM_MAX_PARAMS) {
                th_form_release(out);
                return TH_E_TOOBIG;
            }
            size_t eq = i;
            while (eq < end && body[eq] != '=')
                eq++;
            struct th_form_param *fp = &out->params[out->n];
            fp->name = w;
            if (form_decode(body + i, eq - i, w) != TH_E_OK)
                goto bad;
            w += strlen(w) + 1;
            fp->value = w;
            size_t vstart = eq < end ? eq + 1 : end;
            if (form_decode(body + vstart, end - vstart, w) != TH_E_OK)
                goto bad;
            w += strlen(w) + 1;
            out->n++;
        }
        i = end + 1;
    }
    return TH_E_OK;
bad:
    th_form_release(out);
    return TH_E_REQUEST;
}

void th_form_release(struct th_form *f)
{
    free(f->storage);
    f->storage = NULL;
    f->n = 0;
}

const char *th_form_get(const struct th_form *f, const char *name)
{
    for (size_t i = 0; i < f->n; i++)
        if (strcmp(f->params[i].name, name) == 0)
            return f->params[i].value;
    return NULL;
}

/* ---- Twilio ---- */

static int param_cmp(const void *a, const void *b)
{
    const struct th_form_param *x = *(const struct th_form_param *const *)a;
    const struct th_form_param *y = *(const struct th_form_param *const *)b;
    int c = strcmp(x->name, y->name);
    return c ? c : strcmp(x->value, y->value);
}

/* base64(HMAC-SHA1(token, url + sorted params)) into out (29 bytes: 28 + NUL). */
static th_err twilio_mac(const char *token, const char *url, size_t url_len,
                         const struct th_form *f, char out[29])
{
    const struct th_form_param *sorted[TH_RECEIPT_FORM_MAX_PARAMS];
    for (size_t i = 0; i < f->n; i++)
        sorted[i] = &f->params[i];
    qsort(sorted, f->n, sizeof sorted[0], param_cmp);
    th_err e = TH_E_NOMEM;
    EVP_MAC *mac = EVP_MAC_fetch(NULL, "HMAC", NULL);
    EVP_MAC_CTX *ctx = mac ? EVP_MAC_CTX_new(mac) : NULL;
    OSSL_PARAM params[] = {OSSL_PARAM_construct_utf8_string("digest", (char *)"SHA1", 0),
                           OSSL_PARAM_construct_end()};
    unsigned char md[20];
    size_t mdlen = 0;
    if (!ctx || !EVP_MAC_init(ctx, (const unsigned char *)token, strlen(token), params))
        goto out;
    EVP_MAC_update(ctx, (const unsigned char *)url, url_len);
    for (size_t i = 0; i < f->n; i++) {
        EVP_MAC_update(ctx, (const unsigned char *)sorted[i]->name, strlen(sorted[i]->name));
        EVP_MAC_update(ctx, (const unsigned char *)sorted[i]->value, strlen(sorted[i]->value));
    }
    if (!EVP_MAC_final(ctx, md, &mdlen, sizeof md) || mdlen != sizeof md)
        goto out;
    EVP_EncodeBlock((unsigned char *)out, md, sizeof md);
    e = TH_E_OK;
out:
    EVP_MAC_CTX_free(ctx);
    EVP_MAC_free(mac);
    return e;
}

th_err th_receipt_twilio_sign(const char *auth_token, const char *url, const struct th_form *f,
                              char *out, size_t outlen)
{
    char sig[29];
    if (!auth_token || !*auth_token || outlen < sizeof sig)
        return TH_E_INVAL;
    th_err e = twilio_mac(auth_token, url, strlen(url), f, sig);
    if (e == TH_E_OK)
        memcpy(out, sig, sizeof sig);
    return e;
}

/*
 * The URL with its default port toggled: "https://h/p" <-> "https://h:443/p" (http: 80).
 * Returns false when there is nothing to toggle (another port, no scheme).
 */
static bool toggle_default_port(const char *url, char *out, size_t outlen)
{
    const char *port;
    size_t skip;
    if (strncasecmp(url, "https://", 8) == 0) {
        port = ":443";
        skip = 8;
    } else if (strncasecmp(url, "http://", 7) == 0) {
        port = ":80";
        skip = 7;
    } else {
        return false;
    }
    const char *host = url + skip;
    size_t hlen = strcspn(host, "/?#");
    const char *after = host;
    if (host[0] == '[') { /* an IPv6 literal: the port follows the bracket */
        after = memchr(host, ']', hlen);
        if (!after)
            return false;
    }
    const char *colon = memchr(after, ':', hlen - (size_t)(after - host));
    int n;
    if (colon) {
        if ((size_t)(host + hlen - colon) != strlen(port) ||
            strncmp(colon, port, strlen(port)) != 0)
            return false;
        n = snprintf(out, outlen, "%.*s%s", (int)(colon - url), url, host + hlen);
    } else {
        n = snprintf(out, outlen, "%.*s%s%s", (int)(host + hlen - url), url, port, host + hlen);
    }
    return n > 0 && (size_t)n < outlen;
}

bool th_receipt_twilio_verify(const char *auth_token, const char *url, const struct th_form *f,
                              const char *signature)
{
    if (!auth_token || !*auth_token || !url || !*url || !signature || !*signature)
        return false;
    char sig[29];
    /* A signature is 28 characters: compare that much at constant time, the length openly (it
     * says nothing about the token). */
    size_t slen = strlen(signature);
    bool ok = false;
    if (twilio_mac(auth_token, url, strlen(url), f, sig) == TH_E_OK && slen == 28)
        ok = CRYPTO_memcmp(sig, signature, 28) == 0;
    char alt[2048];
    if (!ok && slen == 28 && toggle_default_port(url, alt, sizeof alt) &&
        twilio_mac(auth_token, alt, strlen(alt), f, sig) == TH_E_OK)
        ok = CRYPTO_memcmp(sig, signature, 28) == 0;
    OPENSSL_cleanse(sig, sizeof sig);
    return ok;
}

/* Twilio's error codes that say more than "undelivered". */
static th_receipt_status twilio_error_status(const char *code)
{
    static const struct {
        const char *code;
        th_receipt_status s;
    } codes[] = {
        {"30003", TH_RS_UNREACHABLE}, /* handset off or out of coverage */
        {"30004", TH_RS_BLOCKED},     /* message blocked (by the recipient or the carrier) */
        {"30005", TH_RS_INVALID},     /* unknown destination handset */
        {"30006", TH_RS_INVALID},     /* landline or unreachable carrier */
        {"30007", TH_RS_SPAM},        /* carrier filtering: flagged as spam */
        {"30008", TH_RS_UNKNOWN},     /* unknown error */
        {"30032", TH_RS_BLOCKED},     /* toll-free number not verified */
        {"30034", TH_RS_BLOCKED},     /* unregistered 10DLC sender */
        {"30036", TH_RS_EXPIRED},     /* validity period expired */
    };
    for (size_t i = 0; code && i < sizeof codes / sizeof codes[0]; i++)
        if (strcmp(code, codes[i].code) == 0)
            return codes[i].s;
    return TH_RS__COUNT;
}

th_receipt_status th_receipt_twilio_map(const char *status, bool call, const char *error_code)
{
    if (!status)
        return TH_RS_UNKNOWN;
    static const struct {
        const char *name;
        th_receipt_status s;
    } msg[] = {{"accepted", TH_RS_QUEUED}, {"scheduled", TH_RS_QUEUED},
               {"queued", TH_RS_QUEUED},   {"sending", TH_RS_SENT},
               {"sent", TH_RS_SENT},       {"delivered", TH_RS_DELIVERED},
               {"read", TH_RS_DELIVERED},  {"undelivered", TH_RS_UNDELIVERED},
               {"failed", TH_RS_FAILED},   {"canceled", TH_RS_FAILED}},
      calls[] = {{"queued", TH_RS_QUEUED},       {"initiated", TH_RS_SENT},
                 {"ringing", TH_RS_SENT},        {"in-progress", TH_RS_SENT},
                 {"completed", TH_RS_DELIVERED}, {"busy", TH_RS_BUSY},
                 {"no-answer", TH_RS_NO_ANSWER}, {"failed", TH_RS_FAILED},
                 {"canceled", TH_RS_FAILED}};
    const size_t n = call ? sizeof calls / sizeof calls[0] : sizeof msg / sizeof msg[0];
    for (size_t i = 0; i < n; i++) {
        const char *name = call ? calls[i].name : msg[i].name;
        if (strcmp(status, name) == 0) {
            th_receipt_status s = call ? calls[i].s : msg[i].s;
            if (!call && (s == TH_RS_UNDELIVERED || s == TH_RS_FAILED)) {
                th_receipt_status by_code = twilio_error_status(error_code);
                if (by_code != TH_RS__COUNT)
                    s = by_code;
            }
            return s;
        }
    }
    return TH_RS_UNKNOWN;
}

/* A provider id is a plain token: letters, digits, '-', '_' (never anything a log could
 * misread), at most its room. */
static bool plain_token(const char *s, size_t room)
{
    size_t n = s ? strlen(s) : 0;
    if (n == 0 || n >= room)
        return false;
    for (size_t i = 0; i < n; i++)
        if (!isalnum((unsigned char)s[i]) && s[i] != '-' && s[i] != '_')
            return false;
    return true;
}

/* Copies a short code (digits, letters, '_') or leaves "" when it is anything else. */
static void copy_code(char *out, size_t room, const char *code)
{
    out[0] = '\0';
    if (plain_token(code, room))
        th_strlcpy(out, code, room);
}

th_err th_receipt_twilio_parse(const struct th_form *f, struct th_receipt *r)
{
    memset(r, 0, sizeof *r);
    const char *sid = th_form_get(f, "MessageSid");
    const char *status = th_form_get(f, "MessageStatus");
    bool call = false;
    if (!sid || !status) {
        sid = th_form_get(f, "CallSid");
        status = th_form_get(f, "CallStatus");
        call = true;
    }
    if (!sid || !status || !plain_token(sid, sizeof r->transaction_id))
        return TH_E_REQUEST;
    th_strlcpy(r->provider, "twilio", sizeof r->provider);
    th_strlcpy(r->transaction_id, sid, sizeof r->transaction_id);
    th_strlcpy(r->channel, call ? "voice" : "sms", sizeof r->channel);
    const char *code = th_form_get(f, "ErrorCode");
    th_receipt_set_status(r, th_receipt_twilio_map(status, call, code));
    copy_code(r->error, sizeof r->error, code);
    return TH_E_OK;
}

/* ---- JSON ---- */

/* Refuses nesting deeper than TH_RECEIPT_JSON_MAX_DEPTH before jansson recurses into it. */
static bool json_depth_ok(const char *p, size_t n)
{
    int depth = 0;
    bool in_str = false;
    for (size_t i = 0; i < n; i++) {
        char c = p[i];
        if (in_str) {
            if (c == '\\')
                i++;
            else if (c == '"')
                in_str = false;
        } else if (c == '"') {
            in_str = true;
        } else if (c == '{' || c == '[') {
            if (++depth > TH_RECEIPT_JSON_MAX_DEPTH)
                return false;
        } else if (c == '}' || c == ']') {
            depth--;
        }
    }
    return true;
}

static th_err json_load(const char *json, size_t len, json_t **out)
{
    if (len > TH_RECEIPT_JSON_MAX_BODY)
        return TH_E_TOOBIG;
    if (!json_depth_ok(json, len))
        return TH_E_JSON;
    *out = json_loadb(json, len, JSON_REJECT_DUPLICATES, NULL);
    return *out && json_is_object(*out) ? TH_E_OK : (json_decref(*out), TH_E_JSON);
}

static const char *jstr(json_t *o, const char *key)
{
    return json_string_value(json_object_get(o, key));
}

/* ---- AWS ---- */

th_receipt_status th_receipt_aws_map(const char *event_type)
{
    static const struct {
        const char *name;
        th_receipt_status s;
    } types[] = {
        {"TEXT_PENDING", TH_RS_QUEUED},
        {"TEXT_QUEUED", TH_RS_QUEUED},
        {"TEXT_SUCCESSFUL", TH_RS_SENT}, /* the carrier took it; a delivery report may follow */
        {"TEXT_DELIVERED", TH_RS_DELIVERED},
        {"TEXT_INVALID", TH_RS_INVALID},
        {"TEXT_INVALID_MESSAGE", TH_RS_INVALID},
        {"TEXT_UNREACHABLE", TH_RS_UNREACHABLE},
        {"TEXT_CARRIER_UNREACHABLE", TH_RS_UNREACHABLE},
        {"TEXT_BLOCKED", TH_RS_BLOCKED},
        {"TEXT_CARRIER_BLOCKED", TH_RS_BLOCKED},
        {"TEXT_PROTECT_BLOCKED", TH_RS_BLOCKED},
        {"TEXT_SPAM", TH_RS_SPAM},
        {"TEXT_TTL_EXPIRED", TH_RS_EXPIRED},
        {"TEXT_UNKNOWN", TH_RS_UNKNOWN},
        {"VOICE_INITIATED", TH_RS_SENT},
        {"VOICE_RINGING", TH_RS_SENT},
        {"VOICE_ANSWERED", TH_RS_SENT}, /* VOICE_COMPLETED follows once the message was played */
        {"VOICE_COMPLETED", TH_RS_DELIVERED},
        {"VOICE_BUSY", TH_RS_BUSY},
        {"VOICE_NO_ANSWER", TH_RS_NO_ANSWER},
        {"VOICE_FAILED", TH_RS_FAILED},
        {"VOICE_TTL_EXPIRED", TH_RS_EXPIRED},
    };
    for (size_t i = 0; event_type && i < sizeof types / sizeof types[0]; i++)
        if (strcmp(event_type, types[i].name) == 0)
            return types[i].s;
    return TH_RS_UNKNOWN;
}

static th_err aws_record(json_t *o, struct th_receipt *r)
{
    memset(r, 0, sizeof *r);
    if (!json_is_object(o))
        return TH_E_REQUEST;
    const char *type = jstr(o, "eventType"), *id = jstr(o, "messageId");
    if (!type || !plain_token(id, sizeof r->transaction_id))
        return TH_E_REQUEST;
    th_strlcpy(r->provider, "aws", sizeof r->provider);
    th_strlcpy(r->transaction_id, id, sizeof r->transaction_id);
    th_strlcpy(r->channel, strncmp(type, "VOICE_", 6) == 0 ? "voice" : "sms", sizeof r->channel);
    th_receipt_set_status(r, th_receipt_aws_map(type));
    /* AWS says itself whether more will come (TEXT_SUCCESSFUL is final where carriers send no
     * delivery report): its word wins over the table's. */
    json_t *fin = json_object_get(o, "isFinal");
    if (json_is_boolean(fin))
        r->final = json_is_true(fin);
    copy_code(r->error, sizeof r->error, jstr(o, "messageStatus"));
    const char *cc = jstr(o, "isoCountryCode");
    if (cc && strlen(cc) == 2 && isalpha((unsigned char)cc[0]) && isalpha((unsigned char)cc[1])) {
        r->country[0] = (char)toupper((unsigned char)cc[0]);
        r->country[1] = (char)toupper((unsigned char)cc[1]);
    }
    json_t *ts = json_object_get(o, "eventTimestamp");
    if (json_is_integer(ts) && json_integer_value(ts) > 0)
        r->event_ms = json_integer_value(ts);
    return TH_E_OK;
}

th_err th_receipt_aws_record_parse(const char *json, size_t len, struct th_receipt *r)
{
    json_t *o;
    memset(r, 0, sizeof *r);
    th_err e = json_load(json, len, &o);
    if (e != TH_E_OK)
        return e;
    e = aws_record(o, r);
    json_decref(o);
    return e;
}

th_err th_receipt_eventbridge_parse(const char *json, size_t len, struct th_receipt *r)
{
    json_t *o;
    memset(r, 0, sizeof *r);
    th_err e = json_load(json, len, &o);
    if (e != TH_E_OK)
        return e;
    const char *src = jstr(o, "source");
    e = src && strcmp(src, "aws.sms-voice") == 0 ? aws_record(json_object_get(o, "detail"), r)
                                                 : TH_E_REQUEST;
    json_decref(o);
    return e;
}

bool th_receipt_secret_equal(const char *got, const char *want)
{
    if (!got || !want || !*got || !*want)
        return false;
    /* Compare digests: CRYPTO_memcmp is constant-time only for equal lengths, and the length of
     * the secret is not to be learnt from the time either. */
    unsigned char a[32], b[32];
    th_sha256(got, strlen(got), a);
    th_sha256(want, strlen(want), b);
    return CRYPTO_memcmp(a, b, sizeof a) == 0;
}

/* ---- SNS ---- */

void th_sns_release(struct th_sns_message *m)
{
    char **fields[] = {&m->type_name, &m->message_id,       &m->topic_arn,    &m->subject,
                       &m->message,   &m->timestamp,        &m->token,        &m->signature_version,
                       &m->signature, &m->signing_cert_url, &m->subscribe_url};
    for (size_t i = 0; i < sizeof fields / sizeof fields[0]; i++) {
        free(*fields[i]);
        *fields[i] = NULL;
    }
}

static char *dup_or_null(json_t *o, const char *key)
{
    const char *s = jstr(o, key);
    return s ? strdup(s) : NULL;
}

th_err th_sns_parse(const char *json, size_t len, struct th_sns_message *out)
{
    memset(out, 0, sizeof *out);
    json_t *o;
    th_err e = json_load(json, len, &o);
    if (e != TH_E_OK)
        return e;
    e = TH_E_REQUEST;
    const char *type = jstr(o, "Type");
    if (!type)
        goto out;
    if (strcmp(type, "Notification") == 0)
        out->type = TH_SNS_NOTIFICATION;
    else if (strcmp(type, "SubscriptionConfirmation") == 0)
        out->type = TH_SNS_SUBSCRIPTION_CONFIRMATION;
    else if (strcmp(type, "UnsubscribeConfirmation") == 0)
        out->type = TH_SNS_UNSUBSCRIBE_CONFIRMATION;
    else
        goto out;
    out->type_name = dup_or_null(o, "Type");
    out->message_id = dup_or_null(o, "MessageId");
    out->topic_arn = dup_or_null(o, "TopicArn");
    out->subject = dup_or_null(o, "Subject");
    out->message = dup_or_null(o, "Message");
    out->timestamp = dup_or_null(o, "Timestamp");
    out->token = dup_or_null(o, "Token");
    out->signature_version = dup_or_null(o, "SignatureVersion");
    out->signature = dup_or_null(o, "Signature");
    out->signing_cert_url = dup_or_null(o, "SigningCertURL");
    out->subscribe_url = dup_or_null(o, "SubscribeURL");
    if (!out->type_name || !out->message_id || !out->topic_arn || !out->message ||
        !out->timestamp || !out->signature_version || !out->signature || !out->signing_cert_url)
        goto out;
    if (out->type != TH_SNS_NOTIFICATION && (!out->token || !out->subscribe_url))
        goto out;
    e = TH_E_OK;
out:
    json_decref(o);
    if (e != TH_E_OK)
        th_sns_release(out);
    return e;
}

th_err th_sns_canonical(const struct th_sns_message *m, char **out, size_t *outlen)
{
    const char *names[7], *values[7];
    size_t n = 0;
#define ADD(nm, v)                                                                                 \
    do {                                                                                           \
        names[n] = (nm);                                                                           \
        values[n++] = (v);                                                                         \
    } while (0)
    ADD("Message", m->message);
    ADD("MessageId", m->message_id);
    if (m->type == TH_SNS_NOTIFICATION) {
        if (m->subject)
            ADD("Subject", m->subject);
    } else {
        ADD("SubscribeURL", m->subscribe_url);
    }
    ADD("Timestamp", m->timestamp);
    if (m->type != TH_SNS_NOTIFICATION)
        ADD("Token", m->token);
    ADD("TopicArn", m->topic_arn);
    ADD("Type", m->type_name);
#undef ADD
    size_t total = 1;
    for (size_t i = 0; i < n; i++) {
        if (!values[i])
            return TH_E_INVAL;
        total += strlen(names[i]) + strlen(values[i]) + 2;
    }
    char *s = malloc(total), *w = s;
    if (!s)
        return TH_E_NOMEM;
    for (size_t i = 0; i < n; i++)
        w += sprintf(w, "%s\n%s\n", names[i], values[i]);
    *out = s;
    *outlen = (size_t)(w - s);
    return TH_E_OK;
}

th_err th_sns_verify(const struct th_sns_message *m, const char *cert_pem, size_t cert_len)
{
    const EVP_MD *md;
    if (strcmp(m->signature_version, "1") == 0)
        md = EVP_sha1();
    else if (strcmp(m->signature_version, "2") == 0)
        md = EVP_sha256();
    else
        return TH_E_AUTH;
    th_err e = TH_E_INVAL;
    char *canon = NULL;
    size_t canon_len = 0;
    unsigned char *sig = NULL;
    EVP_MD_CTX *ctx = NULL;
    EVP_PKEY *key = NULL;
    BIO *bio = BIO_new_mem_buf(cert_pem, (int)cert_len);
    X509 *cert = bio ? PEM_read_bio_X509(bio, NULL, NULL, NULL) : NULL;
    if (!cert || !(key = X509_get_pubkey(cert)) || EVP_PKEY_get_base_id(key) != EVP_PKEY_RSA)
        goto out;
    e = TH_E_AUTH;
    size_t b64 = strlen(m->signature);
    if (b64 == 0 || b64 % 4 != 0 || b64 > 4096)
        goto out;
    sig = malloc(b64 / 4 * 3);
    if (!sig) {
        e = TH_E_NOMEM;
        goto out;
    }
    int siglen = EVP_DecodeBlock(sig, (const unsigned char *)m->signature, (int)b64);
    if (siglen < 0)
        goto out;
    /* EVP_DecodeBlock counts the padding's zero bytes: take them off */
    for (size_t i = b64; i > 0 && m->signature[i - 1] == '='; i--)
        siglen--;
    if (th_sns_canonical(m, &canon, &canon_len) != TH_E_OK)
        goto out;
    ctx = EVP_MD_CTX_new();
    if (ctx && EVP_DigestVerifyInit(ctx, NULL, md, NULL, key) == 1 &&
        EVP_DigestVerify(ctx, sig, (size_t)siglen, (const unsigned char *)canon, canon_len) == 1)
        e = TH_E_OK;
out:
    EVP_MD_CTX_free(ctx);
    free(canon);
    free(sig);
    EVP_PKEY_free(key);
    X509_free(cert);
    BIO_free(bio);
    return e;
}

bool th_sns_fresh(const struct th_sns_message *m, int64_t now_ms)
{
    int64_t ts;
    if (!m->timestamp || th_parse_iso8601(m->timestamp, &ts) != TH_E_OK)
        return false;
    return ts >= now_ms - TH_SNS_MAX_AGE_MS && ts <= now_ms + TH_SNS_MAX_AHEAD_MS;
}

bool th_sns_topic_allowed(const char *topic_arn, const char *allowed)
{
    if (!topic_arn || !*topic_arn || !allowed)
        return false;
    size_t n = strlen(topic_arn);
    for (const char *p = allowed; *p;) {
        while (*p == ',' || *p == ' ')
            p++;
        size_t len = strcspn(p, ", ");
        if (len == n && len > 0 && memcmp(p, topic_arn, n) == 0)
            return true;
        p += len;
    }
    return false;
}

/*
 * Whether label (n bytes) has the shape of an AWS region name: two letters, then one or more
 * "-word", then "-digits" (us-east-1, us-gov-west-1, ap-southeast-2). Any DNS label would let
 * an S3 bucket named "sns" in: https://sns.s3.amazonaws.com/, sns.s3-accelerate.amazonaws.com,
 * sns.s3-us-west-2.amazonaws.com are its virtual hosts, served under Amazon's own certificate,
 * and whoever owns that bucket could then sign any message (AWS's validators learnt the same).
 */
static bool region_label(const char *label, size_t n)
{
    size_t i = 0, words = 0;
    if (n < 2 || !isalpha((unsigned char)label[0]) || !isalpha((unsigned char)label[1]))
        return false;
    i = 2;
    while (i < n) {
        if (label[i] != '-' || i + 1 >= n)
            return false;
        size_t start = ++i;
        bool digits = isdigit((unsigned char)label[i]) != 0;
        while (i < n &&
               (digits ? isdigit((unsigned char)label[i]) : isalpha((unsigned char)label[i])))
            i++;
        if (i == start)
            return false;
        if (digits)
            return i == n && words > 0;
        words++;
    }
    return false;
}

/* host (hlen bytes) against one pattern (plen bytes), label by label. */
static bool host_match(const char *host, size_t hlen, const char *pat, size_t plen)
{
    while (hlen > 0 && plen > 0) {
        const char *hd = memchr(host, '.', hlen), *pd = memchr(pat, '.', plen);
        size_t hl = hd ? (size_t)(hd - host) : hlen, pl = pd ? (size_t)(pd - pat) : plen;
        if (hl == 0 || (hd == NULL) != (pd == NULL))
            return false;
        if (pl == 1 && pat[0] == '*') {
            if (!region_label(host, hl))
                return false;
        } else if (hl != pl || strncasecmp(host, pat, hl) != 0) {
            return false;
        }
        if (!hd)
            return true;
        host += hl + 1;
        hlen -= hl + 1;
        pat += pl + 1;
        plen -= pl + 1;
    }
    return false;
}

bool th_sns_url_allowed(const char *url, const char *patterns)
{
    if (!url || !patterns || strncasecmp(url, "https://", 8) != 0)
        return false;
    const char *auth = url + 8;
    size_t alen = strcspn(auth, "/?#");
    if (alen == 0 || memchr(auth, '@', alen) || memchr(auth, '\\', alen) || auth[0] == '[')
        return false;
    const char *colon = memchr(auth, ':', alen);
    size_t hlen = colon ? (size_t)(colon - auth) : alen;
    const char *port = colon ? colon + 1 : NULL;
    size_t portlen = colon ? alen - hlen - 1 : 0;
    for (const char *p = patterns; *p;) {
        while (*p == ',' || *p == ' ')
            p++;
        size_t len = strcspn(p, ", ");
        const char *pc = memchr(p, ':', len);
        size_t plen = pc ? (size_t)(pc - p) : len;
        bool port_ok = port == NULL ? pc == NULL
                                    : pc != NULL && len - plen - 1 == portlen && portlen > 0 &&
                                          memcmp(pc + 1, port, portlen) == 0;
        if (len > 0 && port_ok && host_match(auth, hlen, p, plen))
            return true;
        p += len;
    }
    return false;
}
