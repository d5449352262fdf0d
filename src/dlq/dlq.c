#include "dlq/dlq.h"

#include <ctype.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/rand.h>

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

th_err th_dlq_new(const struct th_config *cfg, struct th_dlq **out, char *err, size_t errlen)
{
    struct th_dlq *d = calloc(1, sizeof *d);
    if (!d)
        return TH_E_NOMEM;
    d->enabled = cfg->dlq_enabled;
    th_err e = load(&d->cur, cfg->dlq_key, cfg->dlq_key_id, "key", err, errlen);
    if (e == TH_E_OK)
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

th_err th_dlq_keygen(char out[45])
{
    unsigned char k[32];
    if (RAND_bytes(k, sizeof k) != 1)
        return TH_E_NOMEM;
    EVP_EncodeBlock((unsigned char *)out, k, sizeof k);
    OPENSSL_cleanse(k, sizeof k);
    return TH_E_OK;
}
