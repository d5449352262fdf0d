/*
 * HMAC-SHA256 with a prepared key: the inner and outer SHA-256 states for the key are computed
 * once, so each MAC costs two compressions of the message and no allocation (OpenSSL 3's
 * one-shot HMAC() fetches the digest and MAC implementations and allocates on every call — a
 * measurable share of a request, bench/README.md).
 */
#ifndef TH_COMMON_HMAC_H
#define TH_COMMON_HMAC_H

#include <stddef.h>

#include "common/err.h"

struct th_hmac_key;

th_err th_hmac_key_new(const void *key, size_t len, struct th_hmac_key **out);
void th_hmac_key_free(struct th_hmac_key *k); /* wipes it; NULL is a no-op */

/* out = HMAC-SHA256(key, the concatenation of the n parts). Thread-safe (k is read-only). */
void th_hmac_sha256(const struct th_hmac_key *k, const void *const *parts, const size_t *lens,
                    size_t n, unsigned char out[32]);

#endif
