/* The low-level SHA-256 interface is deprecated in OpenSSL 3 but kept, and is the only one that
 * lets a hash state be copied without allocation: used here, and only here. */
#define OPENSSL_SUPPRESS_DEPRECATED
#include "common/hmac.h"

#include <stdlib.h>
#include <string.h>

#include <openssl/crypto.h>
#include <openssl/sha.h>

struct th_hmac_key {
    SHA256_CTX inner, outer; /* after absorbing key ^ ipad, key ^ opad */
};

/* the inner and outer states of HMAC-SHA256 for a key */
static void prepare(struct th_hmac_key *k, const void *key, size_t len)
{
    unsigned char block[SHA256_CBLOCK] = {0}, pad[SHA256_CBLOCK];
    if (len > sizeof block)
        th_sha256(key, len, block); /* a long key is first hashed (RFC 2104) */
    else
        memcpy(block, key, len);
    for (size_t i = 0; i < sizeof block; i++)
        pad[i] = block[i] ^ 0x36;
    SHA256_Init(&k->inner);
    SHA256_Update(&k->inner, pad, sizeof pad);
    for (size_t i = 0; i < sizeof block; i++)
        pad[i] = block[i] ^ 0x5c;
    SHA256_Init(&k->outer);
    SHA256_Update(&k->outer, pad, sizeof pad);
    OPENSSL_cleanse(block, sizeof block);
    OPENSSL_cleanse(pad, sizeof pad);
}

th_err th_hmac_key_new(const void *key, size_t len, struct th_hmac_key **out)
{
    struct th_hmac_key *k = calloc(1, sizeof *k);
    if (!k)
        return TH_E_NOMEM;
    prepare(k, key, len);
    *out = k;
    return TH_E_OK;
}

void th_hmac_key_free(struct th_hmac_key *k)
{
    if (!k)
        return;
    OPENSSL_cleanse(k, sizeof *k);
    free(k);
}

void th_hmac_sha256(const struct th_hmac_key *k, const void *const *parts, const size_t *lens,
                    size_t n, unsigned char out[32])
{
    SHA256_CTX c = k->inner;
    for (size_t i = 0; i < n; i++)
        SHA256_Update(&c, parts[i], lens[i]);
    unsigned char ih[SHA256_DIGEST_LENGTH];
    SHA256_Final(ih, &c);
    c = k->outer;
    SHA256_Update(&c, ih, sizeof ih);
    SHA256_Final(out, &c);
    OPENSSL_cleanse(&c, sizeof c);
}

void th_hmac_sha256_once(const void *key, size_t len, const void *msg, size_t n,
                         unsigned char out[32])
{
    struct th_hmac_key k;
    prepare(&k, key, len);
    th_hmac_sha256(&k, &msg, &n, 1, out);
    OPENSSL_cleanse(&k, sizeof k);
}

void th_sha256_init(struct th_sha256 *s)
{
    SHA256_Init(&s->c);
}

void th_sha256_update(struct th_sha256 *s, const void *p, size_t n)
{
    SHA256_Update(&s->c, p, n);
}

void th_sha256_final(struct th_sha256 *s, unsigned char out[32])
{
    SHA256_Final(out, &s->c);
    OPENSSL_cleanse(&s->c, sizeof s->c);
}

void th_sha256(const void *p, size_t n, unsigned char out[32])
{
    /* Not OpenSSL 3's SHA256(): that is EVP_Q_digest, which fetches the algorithm by name and
     * allocates a context on every call (three mallocs and a property lookup). */
    struct th_sha256 s;
    th_sha256_init(&s);
    th_sha256_update(&s, p, n);
    th_sha256_final(&s, out);
}
