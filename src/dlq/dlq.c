#include "dlq/dlq.h"

#include <ctype.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <jansson.h>
#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/rand.h>

#include "aws/kms.h"
#include "common/buf.h"
#include "common/util.h"

#define NONCE 12
#define TAG   16

struct key {
    bool set;
    char id[32];
    unsigned char k[32];
};

struct th_dlq {
    bool enabled;
    struct key cur, prev;
};

/* 32 bytes from base64 (44 characters) or hex (64). */
static bool parse_key(const char *text, unsigned char out[32])
{
    size_t n = strlen(text);
    while (n && isspace((unsigned char)text[n - 1]))
        n--;
    if (n == 64) {
        for (size_t i = 0; i < 32; i++) {
            unsigned v;
            if (!isxdigit((unsigned char)text[2 * i]) ||
                !isxdigit((unsigned char)text[2 * i + 1]) || sscanf(text + 2 * i, "%2x", &v) != 1)
                return false;
            out[i] = (unsigned char)v;
        }
        return true;
    }
    if (n != 44)
        return false;
    unsigned char buf[48];
    int got = EVP_DecodeBlock(buf, (const unsigned char *)text, 44);
    /* 44 base64 characters with one '=' decode to 33 bytes counted, 32 real */
    if (got != 33 || text[43] != '=' || text[42] == '=')
        return false;
    memcpy(out, buf, 32);
    OPENSSL_cleanse(buf, sizeof buf);
    return true;
}

static th_err load(struct key *k, const char *text, const char *id, const char *what, char *err,
                   size_t errlen)
{
    if (!text || !*text)
        return TH_E_OK;
    if (!parse_key(text, k->k)) {
        snprintf(err, errlen,
                 "[dlq] %s: expected 32 bytes as base64 (44 characters) or hex (64); "
                 "`telehook dlq keygen` makes one",
                 what);
        return TH_E_CONFIG;
    }
    if (!id || !*id || strlen(id) >= sizeof k->id) {
        snprintf(err, errlen, "[dlq] %s_id: 1 to 31 characters", what);
        return TH_E_CONFIG;
    }
    th_strlcpy(k->id, id, sizeof k->id);
    k->set = true;
    return TH_E_OK;
}

th_err th_dlq_read_kms_blob(const char *path, char *blob, size_t bloblen, char *err, size_t errlen)
{
    char *buf = NULL, warn[256], why[512];
    size_t n = 0;
    if (th_read_private_file(path, true, "key", TH_KMS_MAX_BLOB + 2, &buf, &n, warn, sizeof warn,
                             why, sizeof why) != TH_E_OK) {
        snprintf(err, errlen, "%s%s", why,
                 access(path, F_OK) != 0 ? " (`telehook dlq keygen --kms` writes it)" : "");
        return TH_E_CONFIG;
    }
    while (n && isspace((unsigned char)buf[n - 1]))
        n--;
    buf[n] = '\0';
    bool ok =
        n > 0 && n <= TH_KMS_MAX_BLOB && n < bloblen && th_kms_b64_decode(buf, n, NULL, 0) > 0;
    if (ok)
        memcpy(blob, buf, n + 1);
    else
        snprintf(err, errlen, "%s: not an encrypted data key (base64, at most %d characters)", path,
                 TH_KMS_MAX_BLOB);
    free(buf);
    return ok ? TH_E_OK : TH_E_CONFIG;
}

/* The data key in path, opened by KMS Decrypt (key_id: "" lets KMS find it in the blob). */
static th_err load_kms(const struct th_config *cfg, struct key *k, const char *path,
                       const char *key_id, const char *id, const char *what, char *err,
                       size_t errlen)
{
    char blob[TH_KMS_MAX_BLOB + 1], why[768];
    if (th_dlq_read_kms_blob(path, blob, sizeof blob, why, sizeof why) != TH_E_OK) {
        snprintf(err, errlen, "[dlq] %s: %s", what, why);
        return TH_E_CONFIG;
    }
    if (!id || !*id || strlen(id) >= sizeof k->id) {
        snprintf(err, errlen, "[dlq] key_id / previous_key_id: 1 to 31 characters");
        return TH_E_CONFIG;
    }
    if (th_kms_decrypt(cfg, key_id, blob, k->k, why, sizeof why) != TH_E_OK) {
        snprintf(err, errlen, "[dlq] %s %s cannot be opened: %s", what, path, why);
        return TH_E_CONFIG;
    }
    th_strlcpy(k->id, id, sizeof k->id);
    k->set = true;
    return TH_E_OK;
}

th_err th_dlq_new(const struct th_config *cfg, struct th_dlq **out, char *err, size_t errlen)
{
    struct th_dlq *d = calloc(1, sizeof *d);
    if (!d)
        return TH_E_NOMEM;
    d->enabled = cfg->dlq_enabled;
    bool kms = cfg->dlq_kms_key_id && cfg->dlq_kms_key_id[0];
    th_err e = TH_E_OK;
    if (kms && cfg->dlq_key && cfg->dlq_key[0]) {
        snprintf(err, errlen,
                 "[dlq] key and kms_key_id exclude each other: the data key "
                 "KMS seals replaces the key");
        e = TH_E_CONFIG;
    } else if (kms && !cfg->dlq_kms_data_key_file[0]) {
        snprintf(err, errlen,
                 "[dlq] kms_key_id needs kms_data_key_file (where `telehook dlq "
                 "keygen --kms` writes the encrypted data key)");
        e = TH_E_CONFIG;
    } else if (!kms && (cfg->dlq_kms_data_key_file[0] || cfg->dlq_previous_kms_data_key_file[0])) {
        snprintf(err, errlen,
                 "[dlq] kms_data_key_file and previous_kms_data_key_file need "
                 "kms_key_id");
        e = TH_E_CONFIG;
    } else if (kms && cfg->dlq_previous_key && cfg->dlq_previous_key[0] &&
               cfg->dlq_previous_kms_data_key_file[0]) {
        snprintf(err, errlen,
                 "[dlq] previous_key and previous_kms_data_key_file exclude each "
                 "other");
        e = TH_E_CONFIG;
    } else if (kms) {
        e = load_kms(cfg, &d->cur, cfg->dlq_kms_data_key_file, cfg->dlq_kms_key_id, cfg->dlq_key_id,
                     "kms_data_key_file", err, errlen);
        if (e == TH_E_OK && cfg->dlq_previous_kms_data_key_file[0])
            e = load_kms(cfg, &d->prev, cfg->dlq_previous_kms_data_key_file, "",
                         cfg->dlq_previous_key_id, "previous_kms_data_key_file", err, errlen);
    } else {
        e = load(&d->cur, cfg->dlq_key, cfg->dlq_key_id, "key", err, errlen);
    }
    if (e == TH_E_OK && !d->prev.set)
        e = load(&d->prev, cfg->dlq_previous_key, cfg->dlq_previous_key_id, "previous_key", err,
                 errlen);
    if (e == TH_E_OK && d->cur.set && d->prev.set && strcmp(d->cur.id, d->prev.id) == 0) {
        snprintf(err, errlen, "[dlq] key_id and previous_key_id must differ");
        e = TH_E_CONFIG;
    }
    if (e != TH_E_OK) {
        th_dlq_free(d);
        return e;
    }
    *out = d;
    return TH_E_OK;
}

void th_dlq_free(struct th_dlq *d)
{
    if (!d)
        return;
    OPENSSL_cleanse(d, sizeof *d);
    free(d);
}

bool th_dlq_enabled(const struct th_dlq *d)
{
    return d && d->enabled;
}

bool th_dlq_can_seal(const struct th_dlq *d)
{
    return d && d->cur.set;
}

const char *th_dlq_key_id(const struct th_dlq *d)
{
    return d && d->cur.set ? d->cur.id : "";
}

th_err th_dlq_seal(const struct th_dlq *d, const char *entry_id, const char *plain, size_t len,
                   unsigned char **out, size_t *outlen)
{
    if (!th_dlq_can_seal(d) || len > 1024 * 1024)
        return TH_E_INVAL;
    unsigned char *b = malloc(NONCE + len + TAG);
    EVP_CIPHER_CTX *c = EVP_CIPHER_CTX_new();
    int n = 0, fin = 0;
    bool ok = b && c && RAND_bytes(b, NONCE) == 1 &&
              EVP_EncryptInit_ex(c, EVP_aes_256_gcm(), NULL, d->cur.k, b) == 1 &&
              EVP_EncryptUpdate(c, NULL, &n, (const unsigned char *)entry_id,
                                (int)strlen(entry_id)) == 1 &&
              EVP_EncryptUpdate(c, b + NONCE, &n, (const unsigned char *)plain, (int)len) == 1 &&
              EVP_EncryptFinal_ex(c, b + NONCE + n, &fin) == 1 &&
              EVP_CIPHER_CTX_ctrl(c, EVP_CTRL_GCM_GET_TAG, TAG, b + NONCE + n + fin) == 1;
    EVP_CIPHER_CTX_free(c);
    if (!ok) {
        free(b);
        return TH_E_NOMEM;
    }
    *out = b;
    *outlen = NONCE + (size_t)n + (size_t)fin + TAG;
    return TH_E_OK;
}

th_err th_dlq_open(const struct th_dlq *d, const char *entry_id, const char *key_id,
                   const unsigned char *blob, size_t len, char **plain, size_t *plen)
{
    const struct key *k = d && d->cur.set && strcmp(d->cur.id, key_id) == 0     ? &d->cur
                          : d && d->prev.set && strcmp(d->prev.id, key_id) == 0 ? &d->prev
                                                                                : NULL;
    if (!k)
        return TH_E_NOTFOUND;
    if (len < NONCE + TAG)
        return TH_E_AUTH;
    size_t clen = len - NONCE - TAG;
    char *p = malloc(clen + 1);
    EVP_CIPHER_CTX *c = EVP_CIPHER_CTX_new();
    int n = 0, fin = 0;
    bool ok = p && c && EVP_DecryptInit_ex(c, EVP_aes_256_gcm(), NULL, k->k, blob) == 1 &&
              EVP_DecryptUpdate(c, NULL, &n, (const unsigned char *)entry_id,
                                (int)strlen(entry_id)) == 1 &&
              EVP_DecryptUpdate(c, (unsigned char *)p, &n, blob + NONCE, (int)clen) == 1 &&
              EVP_CIPHER_CTX_ctrl(c, EVP_CTRL_GCM_SET_TAG, TAG,
                                  (void *)(uintptr_t)(blob + NONCE + clen)) == 1 &&
              EVP_DecryptFinal_ex(c, (unsigned char *)p + n, &fin) == 1;
    EVP_CIPHER_CTX_free(c);
    if (!ok) {
        if (p)
            OPENSSL_cleanse(p, clen + 1);
        free(p);
        return p ? TH_E_AUTH : TH_E_NOMEM;
    }
    p[n + fin] = '\0';
    *plain = p;
    *plen = (size_t)(n + fin);
    return TH_E_OK;
}

th_err th_dlq_keygen_kms(const struct th_config *cfg, const char *path, char *err, size_t errlen)
{
    char blob[TH_KMS_MAX_BLOB + 1];
    unsigned char k[TH_KMS_KEY_LEN];
    if (!cfg->dlq_kms_key_id[0] || !path[0]) {
        snprintf(err, errlen, "--kms needs [dlq] kms_key_id and kms_data_key_file");
        return TH_E_CONFIG;
    }
    /* never over an existing data key: the entries it sealed would be lost with it */
    int fd = open(path, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC | O_NOFOLLOW, 0600);
    if (fd < 0) {
        snprintf(err, errlen, "%s: %s%s", path, strerror(errno),
                 errno == EEXIST ? " (a data key is there already: entries it sealed need it; "
                                   "move it to previous_kms_data_key_file to rotate)"
                                 : "");
        return TH_E_CONFIG;
    }
    th_err e =
        th_kms_generate_data_key(cfg, cfg->dlq_kms_key_id, k, blob, sizeof blob, err, errlen);
    OPENSSL_cleanse(k, sizeof k); /* KMS Decrypt gives it back at start */
    size_t n = e == TH_E_OK ? strlen(blob) : 0;
    if (e == TH_E_OK &&
        (write(fd, blob, n) != (ssize_t)n || write(fd, "\n", 1) != 1 || fsync(fd) != 0)) {
        snprintf(err, errlen, "%s: %s", path, strerror(errno));
        e = TH_E_IO;
    }
    close(fd);
    if (e != TH_E_OK)
        unlink(path);
    return e;
}

th_err th_dlq_keygen(char out[45])
{
    unsigned char k[32];
    if (RAND_bytes(k, sizeof k) != 1)
        return TH_E_NOMEM;
    EVP_EncodeBlock((unsigned char *)out, k, sizeof k);
    OPENSSL_cleanse(k, sizeof k);
    return TH_E_OK;
}

/* ---- the payload ---- */

#define PAYLOAD_MAX (2 * 8192 + 1024) /* the text (8 KiB at most) JSON-escaped, and the rest */

th_err th_dlq_payload_encode(const struct th_dlq *d, const char *entry_id, const struct th_send *m,
                             unsigned char **blob, size_t *len)
{
    struct th_buf p;
    th_buf_init(&p, PAYLOAD_MAX);
    th_buf_appends(&p, "{\"request_id\":");
    th_buf_append_json(&p, m->request_id, (size_t)-1);
    th_buf_appends(&p, ",\"to\":");
    th_buf_append_json(&p, m->to, (size_t)-1);
    th_buf_appends(&p, ",\"region\":");
    th_buf_append_json(&p, m->region, (size_t)-1);
    th_buf_appends(&p, ",\"channel\":");
    th_buf_append_json(&p, th_channel_name(m->channel), (size_t)-1);
    th_buf_appends(&p, ",\"language\":");
    th_buf_append_json(&p, m->language ? m->language : "", (size_t)-1);
    th_buf_appends(&p, ",\"voice_id\":");
    th_buf_append_json(&p, m->voice_id ? m->voice_id : "", (size_t)-1);
    th_buf_appends(&p, ",\"body\":");
    th_buf_append_json(&p, m->body, (size_t)-1);
    th_buf_printf(&p, ",\"otp_expires_ms\":%lld}", (long long)m->otp_expires_ms);
    th_err e = th_buf_err(&p); /* sticky: checked once */
    if (e == TH_E_OK)
        e = th_dlq_seal(d, entry_id, p.data, p.len, blob, len);
    if (p.data)
        OPENSSL_cleanse(p.data, p.len); /* it held the code */
    th_buf_release(&p);
    return e;
}

th_err th_dlq_payload_decode(const struct th_dlq *d, const char *entry_id, const char *key_id,
                             const unsigned char *blob, size_t len, struct th_dlq_payload *out)
{
    memset(out, 0, sizeof *out);
    char *plain = NULL;
    size_t plen = 0;
    th_err e = th_dlq_open(d, entry_id, key_id, blob, len, &plain, &plen);
    if (e != TH_E_OK)
        return e;
    json_t *doc = json_loadb(plain, plen, 0, NULL);
    OPENSSL_cleanse(plain, plen);
    free(plain);
    if (!json_is_object(doc)) {
        json_decref(doc);
        return TH_E_INVAL;
    }
    const char *ch = json_string_value(json_object_get(doc, "channel"));
    out->doc = doc;
    out->msg = (struct th_send){
        .request_id = json_string_value(json_object_get(doc, "request_id")),
        .to = json_string_value(json_object_get(doc, "to")),
        .region = json_string_value(json_object_get(doc, "region")),
        .channel = ch && strcmp(ch, "voice") == 0 ? TH_CHANNEL_VOICE : TH_CHANNEL_SMS,
        .language = json_string_value(json_object_get(doc, "language")),
        .voice_id = json_string_value(json_object_get(doc, "voice_id")),
        .body = json_string_value(json_object_get(doc, "body")),
        .otp_expires_ms = json_integer_value(json_object_get(doc, "otp_expires_ms")),
    };
    return TH_E_OK;
}

void th_dlq_payload_release(struct th_dlq_payload *p)
{
    if (!p->doc)
        return;
    json_t *b = json_object_get(p->doc, "body");
    if (json_is_string(b)) /* the code does not linger in freed memory */
        OPENSSL_cleanse((void *)json_string_value(b), json_string_length(b));
    json_decref(p->doc);
    memset(p, 0, sizeof *p);
}
