#include "aws/kms.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <jansson.h>
#include <openssl/crypto.h>

#include "aws/creds.h"
#include "common/util.h"
#include "net/trust.h"

#define KMS_TYPE       "application/x-amz-json-1.1"
#define KMS_TIMEOUT_MS 5000
#define CREDS_WAIT_MS  10000 /* a refreshed source (IMDS, container, STS) answers in time */

/* A key id, ARN or alias: printable ASCII, 1 to 2048 characters (KMS's own bounds). */
static bool key_id_ok(const char *k)
{
    size_t n = k ? strlen(k) : 0;
    if (n < 1 || n > 2048)
        return false;
    for (size_t i = 0; i < n; i++)
        if (k[i] <= ' ' || k[i] > '~')
            return false;
    return true;
}

static th_err dump(struct th_buf *b, json_t *o)
{
    th_buf_reset(b);
    char *s = o ? json_dumps(o, JSON_COMPACT) : NULL;
    json_decref(o);
    if (!s)
        return TH_E_NOMEM;
    th_err e = th_buf_appends(b, s);
    OPENSSL_cleanse(s, strlen(s));
    free(s);
    return e;
}

th_err th_kms_generate_body(struct th_buf *b, const char *key_id)
{
    if (!key_id_ok(key_id))
        return TH_E_INVAL;
    return dump(b, json_pack("{s:s, s:s}", "KeyId", key_id, "KeySpec", "AES_256"));
}

th_err th_kms_decrypt_body(struct th_buf *b, const char *blob_b64, const char *key_id)
{
    if (!blob_b64 || !*blob_b64 || strlen(blob_b64) > TH_KMS_MAX_BLOB ||
        th_kms_b64_decode(blob_b64, strlen(blob_b64), NULL, 0) < 0)
        return TH_E_INVAL;
    if (key_id && *key_id && !key_id_ok(key_id))
        return TH_E_INVAL;
    json_t *o = json_pack("{s:s}", "CiphertextBlob", blob_b64);
    if (o && key_id && *key_id && json_object_set_new(o, "KeyId", json_string(key_id)) != 0) {
        json_decref(o);
        o = NULL;
    }
    return dump(b, o);
}

static int b64_value(char c)
{
    if (c >= 'A' && c <= 'Z')
        return c - 'A';
    if (c >= 'a' && c <= 'z')
        return c - 'a' + 26;
    if (c >= '0' && c <= '9')
        return c - '0' + 52;
    if (c == '+')
        return 62;
    if (c == '/')
        return 63;
    return -1;
}

long th_kms_b64_decode(const char *text, size_t len, unsigned char *out, size_t cap)
{
    if (len == 0 || len % 4 != 0)
        return -1;
    size_t pad = text[len - 1] == '=' ? (text[len - 2] == '=' ? 2 : 1) : 0;
    size_t n = len / 4 * 3 - pad;
    if (out && n > cap)
        return -1;
    unsigned long acc = 0;
    size_t o = 0;
    for (size_t i = 0; i < len - pad; i++) {
        int v = b64_value(text[i]);
        if (v < 0)
            return -1;
        acc = (acc << 6) | (unsigned long)v;
        if (i % 4 == 3) {
            if (out) {
                out[o] = (unsigned char)(acc >> 16);
                out[o + 1] = (unsigned char)(acc >> 8);
                out[o + 2] = (unsigned char)acc;
            }
            o += 3;
            acc = 0;
        }
    }
    /* the last group: its unused bits must be zero (canonical) */
    if (pad == 1) {
        if (acc & 0x3)
            return -1;
        if (out) {
            out[o] = (unsigned char)(acc >> 10);
            out[o + 1] = (unsigned char)(acc >> 2);
        }
    } else if (pad == 2) {
        if (acc & 0xf)
            return -1;
        if (out)
            out[o] = (unsigned char)(acc >> 4);
    }
    return (long)n;
}

static json_t *load(const char *json, size_t len)
{
    if (!json || len == 0 || len > TH_KMS_MAX_ANSWER)
        return NULL;
    json_error_t jerr;
    json_t *o = json_loadb(json, len, JSON_REJECT_DUPLICATES, &jerr);
    if (o && !json_is_object(o)) {
        json_decref(o);
        return NULL;
    }
    return o;
}

th_err th_kms_parse_answer(const char *json, size_t len, unsigned char key[TH_KMS_KEY_LEN],
                           char *blob, size_t bloblen, char *why, size_t whylen)
{
    json_t *o = load(json, len);
    th_err e = TH_E_INVAL;
    unsigned char k[TH_KMS_KEY_LEN + 3];
    if (!o) {
        snprintf(why, whylen, "the KMS answer is not a JSON object (of at most %d bytes)",
                 TH_KMS_MAX_ANSWER);
        return TH_E_INVAL;
    }
    json_t *pt = json_object_get(o, "Plaintext");
    json_t *cb = json_object_get(o, "CiphertextBlob");
    if (!json_is_string(pt)) {
        snprintf(why, whylen, "the KMS answer has no Plaintext string");
    } else if (th_kms_b64_decode(json_string_value(pt), json_string_length(pt), k, sizeof k) !=
               TH_KMS_KEY_LEN) {
        snprintf(why, whylen, "the KMS answer's Plaintext is not 32 bytes in base64");
    } else if (blob &&
               (!json_is_string(cb) || json_string_length(cb) > TH_KMS_MAX_BLOB ||
                json_string_length(cb) >= bloblen ||
                th_kms_b64_decode(json_string_value(cb), json_string_length(cb), NULL, 0) < 0)) {
        snprintf(why, whylen,
                 "the KMS answer's CiphertextBlob is not base64 (of at most %d "
                 "characters)",
                 TH_KMS_MAX_BLOB);
    } else {
        memcpy(key, k, TH_KMS_KEY_LEN);
        if (blob)
            memcpy(blob, json_string_value(cb), json_string_length(cb) + 1);
        e = TH_E_OK;
    }
    OPENSSL_cleanse(k, sizeof k);
    if (json_is_string(pt)) /* the data key does not linger in freed memory */
        OPENSSL_cleanse((void *)json_string_value(pt), json_string_length(pt));
    json_decref(o);
    return e;
}

static void printable(char *out, size_t outlen, const char *s)
{
    size_t n = 0;
    for (; s && *s && n + 1 < outlen; s++)
        out[n++] = *s >= ' ' && *s <= '~' ? *s : '?';
    if (outlen)
        out[n] = '\0';
}

bool th_kms_parse_error(const char *json, size_t len, char *type, size_t typelen, char *msg,
                        size_t msglen)
{
    json_t *o = load(json, len);
    json_t *t = o ? json_object_get(o, "__type") : NULL;
    if (!json_is_string(t)) {
        json_decref(o);
        return false;
    }
    const char *tv = json_string_value(t);
    const char *hash = strrchr(tv, '#');
    printable(type, typelen, hash ? hash + 1 : tv);
    json_t *m = json_object_get(o, "message");
    if (!json_is_string(m))
        m = json_object_get(o, "Message");
    printable(msg, msglen, json_is_string(m) ? json_string_value(m) : "");
    json_decref(o);
    return true;
}

/* ---- the calls ---- */

struct endpoint {
    char url[1024], host[300], path[512], region[64], ca[1024];
};

static th_err setup(const struct th_config *cfg, struct endpoint *ep, char *err, size_t errlen)
{
    if (th_aws_profile_check(cfg->aws_profile, err, errlen) != TH_E_OK)
        return TH_E_CONFIG;
    if (!th_aws_resolve_region(cfg->aws_region, cfg->aws_profile, ep->region, sizeof ep->region)) {
        snprintf(err, errlen, "KMS: no region: set [aws] region, AWS_REGION or AWS_DEFAULT_REGION");
        return TH_E_CONFIG;
    }
    const char *u = getenv("AWS_ENDPOINT_URL_KMS");
    if (!u || !*u)
        u = getenv("AWS_ENDPOINT_URL");
    if (u && *u) {
        size_t n = strlen(u);
        snprintf(ep->url, sizeof ep->url, "%s%s", u, n && u[n - 1] == '/' ? "" : "/");
    } else {
        snprintf(ep->url, sizeof ep->url, "https://kms.%s.amazonaws.com%s/", ep->region,
                 strncmp(ep->region, "cn-", 3) == 0 ? ".cn" : "");
    }
    if (!th_aws_split_url(ep->url, ep->host, sizeof ep->host, ep->path, sizeof ep->path)) {
        snprintf(err, errlen, "KMS: the endpoint is not an http(s) URL: %.200s", ep->url);
        return TH_E_CONFIG;
    }
    const char *from = "[aws] ca_file";
    bool fits = cfg->aws_ca_file[0]
                    ? th_strlcpy(ep->ca, cfg->aws_ca_file, sizeof ep->ca) < sizeof ep->ca
                    : th_aws_resolve_ca_bundle(cfg->aws_profile, ep->ca, sizeof ep->ca, &from);
    char why[512];
    if (!fits) {
        snprintf(err, errlen, "KMS: %s: path too long", from);
        return TH_E_CONFIG;
    }
    if (ep->ca[0] && th_trust_check_file(ep->ca, why, sizeof why) != TH_E_OK) {
        snprintf(err, errlen, "KMS: %s: %s", from, why);
        return TH_E_CONFIG;
    }
    return TH_E_OK;
}

/* Signs and sends body as target; the 200 answer in answer. */
static th_err call(const struct th_config *cfg, const char *target, const struct th_buf *body,
                   struct th_buf *answer, char *err, size_t errlen)
{
    struct endpoint ep;
    th_err e = setup(cfg, &ep, err, errlen);
    if (e != TH_E_OK)
        return e;
    struct th_aws_creds *creds = NULL;
    e = th_aws_creds_new(cfg->aws_profile, ep.region, ep.ca, &creds, err, errlen);
    if (e != TH_E_OK)
        return e;
    struct th_aws_credentials cur;
    bool have = false;
    for (int waited = 0; !(have = th_aws_creds_get(creds, &cur)) && waited < CREDS_WAIT_MS;
         waited += 20)
        nanosleep(&(struct timespec){0, 20 * 1000000L}, NULL);
    if (!have) {
        snprintf(err, errlen, "KMS: no AWS credentials from %.200s within %d s",
                 th_aws_creds_source(creds), CREDS_WAIT_MS / 1000);
        th_aws_creds_free(creds);
        return TH_E_CONFIG;
    }
    th_aws_creds_free(creds);
    struct th_aws_post r = {.url = ep.url,
                            .host = ep.host,
                            .path = ep.path,
                            .region = ep.region,
                            .service = "kms",
                            .content_type = KMS_TYPE,
                            .target = target,
                            .body = body->data,
                            .body_len = body->len,
                            .ca_file = ep.ca,
                            .timeout_ms = KMS_TIMEOUT_MS};
    char why[256] = "";
    long status = th_aws_post(&r, &cur, answer, why, sizeof why);
    OPENSSL_cleanse(&cur, sizeof cur);
    const char *op = strchr(target, '.') + 1;
    if (status == 200)
        return TH_E_OK;
    char type[96], msg[256];
    if (status > 0 &&
        th_kms_parse_error(answer->data, answer->len, type, sizeof type, msg, sizeof msg)) {
        snprintf(err, errlen, "KMS %s at %s: HTTP %ld %s%s%s", op, ep.url, status, type,
                 msg[0] ? ": " : "", msg);
        return TH_E_AUTH;
    }
    if (status > 0)
        snprintf(err, errlen, "KMS %s at %s: HTTP %ld (not a KMS answer)", op, ep.url, status);
    else
        snprintf(err, errlen, "KMS %s at %s: %s", op, ep.url, why);
    return TH_E_IO;
}

static th_err answered(th_err e, struct th_buf *ans, unsigned char *key, char *blob, size_t bloblen,
                       char *err, size_t errlen)
{
    if (e == TH_E_OK) {
        char why[160];
        e = th_kms_parse_answer(ans->data, ans->len, key, blob, bloblen, why, sizeof why);
        if (e != TH_E_OK)
            snprintf(err, errlen, "KMS: %s", why);
    }
    if (ans->data)
        OPENSSL_cleanse(ans->data, ans->len);
    th_buf_release(ans);
    return e;
}

th_err th_kms_generate_data_key(const struct th_config *cfg, const char *key_id,
                                unsigned char key[TH_KMS_KEY_LEN], char *blob, size_t bloblen,
                                char *err, size_t errlen)
{
    struct th_buf body, ans;
    th_buf_init(&body, 4096);
    th_buf_init(&ans, TH_KMS_MAX_ANSWER);
    th_err e = th_kms_generate_body(&body, key_id);
    if (e == TH_E_INVAL)
        snprintf(err, errlen, "[dlq] kms_key_id: 1 to 2048 printable characters");
    else if (e == TH_E_OK)
        e = call(cfg, "TrentService.GenerateDataKey", &body, &ans, err, errlen);
    th_buf_release(&body);
    return answered(e, &ans, key, blob, bloblen, err, errlen);
}

th_err th_kms_decrypt(const struct th_config *cfg, const char *key_id, const char *blob_b64,
                      unsigned char key[TH_KMS_KEY_LEN], char *err, size_t errlen)
{
    struct th_buf body, ans;
    th_buf_init(&body, TH_KMS_MAX_BLOB + 4096);
    th_buf_init(&ans, TH_KMS_MAX_ANSWER);
    th_err e = th_kms_decrypt_body(&body, blob_b64, key_id);
    if (e == TH_E_INVAL)
        snprintf(err, errlen,
                 "the encrypted data key is not base64 of at most %d characters, "
                 "or [dlq] kms_key_id is malformed",
                 TH_KMS_MAX_BLOB);
    else if (e == TH_E_OK)
        e = call(cfg, "TrentService.Decrypt", &body, &ans, err, errlen);
    th_buf_release(&body);
    return answered(e, &ans, key, NULL, 0, err, errlen);
}
