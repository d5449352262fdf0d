/*
 * HMAC-SHA256 and SHA-256 without allocation. With a prepared key: the inner and outer SHA-256
 * states for the key are computed once, so each MAC costs two compressions of the message and no
 * allocation (OpenSSL 3's one-shot HMAC() fetches the digest and MAC implementations and allocates
 * on every call — a measurable share of a request, bench/README.md).
 */
#ifndef TH_COMMON_HMAC_H
#define TH_COMMON_HMAC_H

#include <stddef.h>

#include <openssl/sha.h>

#include "common/err.h"

struct th_hmac_key;

th_err th_hmac_key_new(const void *key, size_t len, struct th_hmac_key **out);
void th_hmac_key_free(struct th_hmac_key *k); /* wipes it; NULL is a no-op */

/* out = HMAC-SHA256(key, the concatenation of the n parts). Thread-safe (k is read-only). */
void th_hmac_sha256(const struct th_hmac_key *k, const void *const *parts, const size_t *lens,
                    size_t n, unsigned char out[32]);

/* HMAC-SHA256 of one message with a key used once (SigV4's last step): no allocation. */
void th_hmac_sha256_once(const void *key, size_t len, const void *msg, size_t n,
                         unsigned char out[32]);

/* SHA-256, streaming or one-shot, on the stack: no allocation, no algorithm fetch. */
struct th_sha256 {
    SHA256_CTX c;
};
void th_sha256_init(struct th_sha256 *s);
void th_sha256_update(struct th_sha256 *s, const void *p, size_t n);
void th_sha256_final(struct th_sha256 *s, unsigned char out[32]); /* wipes the state */
void th_sha256(const void *p, size_t n, unsigned char out[32]);

#endif
