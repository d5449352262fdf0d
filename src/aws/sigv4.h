/*
 * AWS Signature Version 4 (header variant): canonical request, string to sign, Authorization.
 * Pure functions, no I/O; OpenSSL's libcrypto stays inside this module.
 *
 * Used to sign every call to AWS JSON-protocol APIs (End User Messaging SMS/Voice, ...). It is
 * proven byte for byte against the classic AWS test suite and project-specific vectors generated
 * with botocore (tests/vectors/sigv4*, reference §2). Canonicalisation is the non-S3 one: dot
 * segments removed and empty path segments collapsed, the path encoded a second time.
 *
 * The signing key depends only on (secret, date, region, service): derive it once per day and
 * reuse it. th_sigv4_sign() allocates nothing itself (fixed arrays on the stack) apart from
 * growing the optional creq/sts th_buf outputs; libcrypto may allocate its own contexts.
 */
#ifndef TH_AWS_SIGV4_H
#define TH_AWS_SIGV4_H

#include <stddef.h>

#include "common/buf.h"
#include "common/err.h"

#define TH_SIGV4_KEY_LEN 32
/* Caps of the fixed stack arrays: more headers or query pairs is TH_E_INVAL, more path
   segments (after dot-segment removal) TH_E_TOOBIG. */
#define TH_SIGV4_MAX_HEADERS  32
#define TH_SIGV4_MAX_QUERY    64
#define TH_SIGV4_MAX_SEGMENTS 128
/* Longest region or service name accepted (real ones are under 30 characters). */
#define TH_SIGV4_MAX_SCOPE_PART 63

struct th_sigv4_header {
    const char *name;
    const char *value;
};

struct th_sigv4_input {
    const char *method; /* "POST" */
    /* The request-target path as it appears on the request line, e.g. "/" or "/example/..";
       "" means "/". It is treated as already encoded: '%' is encoded again (AWS SDK behaviour
       for every service but S3). */
    const char *path;
    /* Raw query string without '?', "" when none. Each name and value is percent-decoded and
       re-encoded, so "%E1%88%B4" and raw UTF-8 give the same result; '+' is a literal plus. */
    const char *query;
    /* Every header to sign, any case, repeats allowed, values untrimmed (CR/LF of obsolete line
       folding allowed). Must include Host and X-Amz-Date (equal to amz_date), and
       X-Amz-Security-Token when temporary credentials are used. */
    const struct th_sigv4_header *headers;
    size_t nheaders;
    const void *body; /* may be NULL when body_len == 0 */
    size_t body_len;
    const char *payload_hash; /* optional lowercase hex SHA-256 of body (NULL: computed) */
    const char *amz_date;     /* "20150830T123600Z" */
    const char *region;       /* "us-east-1" */
    const char *service;      /* "sms-voice" */
    const char *access_key_id;
    const unsigned char *signing_key; /* TH_SIGV4_KEY_LEN bytes from th_sigv4_derive_key */
};

/*
 * kSigning = HMAC chain over ("AWS4"+secret, date8, region, service, "aws4_request").
 * date8 is "YYYYMMDD" (the first 8 characters of X-Amz-Date). If libcrypto fails (out of memory)
 * out is all zeros, which AWS rejects.
 */
void th_sigv4_derive_key(const char *secret, const char *date8, const char *region,
                         const char *service, unsigned char out[TH_SIGV4_KEY_LEN]);

/*
 * Builds the canonical request and string to sign (written to creq/sts when non-NULL, for tests
 * and debugging; the buffers are reset first) and writes the Authorization header VALUE
 * ("AWS4-HMAC-SHA256 Credential=..., SignedHeaders=..., Signature=...") into authz.
 * TH_E_INVAL on bad input (NULL fields, header without a name, too many headers or query pairs,
 * malformed amz_date or payload_hash, missing Host or X-Amz-Date), TH_E_TOOBIG if authz is too
 * small or a buffer cap is hit, TH_E_NOMEM if libcrypto or a th_buf fails. On error authz is ""
 * (when authz_len > 0) and creq/sts may hold a partial result.
 * No heap allocation besides the th_buf outputs.
 */
th_err th_sigv4_sign(const struct th_sigv4_input *in, struct th_buf *creq, struct th_buf *sts,
                     char *authz, size_t authz_len);

/* Formats unix seconds as X-Amz-Date "YYYYMMDDTHHMMSSZ" (out: 17 bytes). Clamped to years
   1970..9999. */
void th_sigv4_amz_date(long long unix_seconds, char out[17]);

#endif
