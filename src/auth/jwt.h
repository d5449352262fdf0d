/*
 * JWT access tokens (RFC 7519) signed as compact JWS (RFC 7515), verified the way the strictest
 * OIDC validators do (mod_auth_openidc is the model): size first, then the header, with the
 * algorithm pinned to an allow-list before any key is touched ("none" and every HS* are refused
 * whatever the key: a public RSA key must never become an HMAC secret), the key chosen by kid,
 * the signature (OpenSSL's EVP API, with each key and its verification context prepared once when
 * the key set is parsed), then each claim by a small named check that says why it failed. Each
 * part of the token is decoded and parsed once. Claims: iss (exact), aud (string or array), exp,
 * nbf, iat (not in the future beyond the skew), cid (when client ids are configured), scp (every
 * required scope).
 *
 * Also the developer tooling (cjose): key generation and token minting, so the whole OAuth path
 * can run locally without Okta.
 */
#ifndef TH_AUTH_JWT_H
#define TH_AUTH_JWT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "common/err.h"

#define TH_JWT_MAX_LEN 8192 /* longer tokens are refused unread */

typedef enum {
    TH_JWT_OK,
    TH_JWT_TOO_LARGE,     /* over TH_JWT_MAX_LEN */
    TH_JWT_MALFORMED,     /* not three base64url parts, bad base64url, header not a JSON object */
    TH_JWT_ALG,           /* alg missing, not allowed ("none", HS*...), or crit present */
    TH_JWT_UNKNOWN_KID,   /* no key with this kid (or no kid and not exactly one usable key) */
    TH_JWT_SIGNATURE,     /* the signature does not verify */
    TH_JWT_CLAIMS,        /* payload not a JSON object, or a claim of the wrong type */
    TH_JWT_ISSUER,        /* iss missing or not the configured issuer */
    TH_JWT_AUDIENCE,      /* aud missing or without the configured audience */
    TH_JWT_EXPIRED,       /* exp missing or past (beyond the skew) */
    TH_JWT_NOT_YET_VALID, /* nbf in the future (beyond the skew) */
    TH_JWT_IAT_FUTURE,    /* iat in the future (beyond the skew) */
    TH_JWT_CLIENT,        /* cid not among the allowed client ids */
    TH_JWT_SCOPE,         /* a required scope is missing from scp */
} th_jwt_status;

/* A short name for logs: "expired", "unknown_kid", ... */
const char *th_jwt_status_name(th_jwt_status s);

/* A parsed JSON Web Key Set: the keys usable for signature verification. Immutable. */
struct th_jwks;

/*
 * Parses a JWKS document. Keeps RSA keys (at least 2048 bits, odd e of at least 3) for RS256 and
 * EC P-256 keys (a point on the curve) for ES256, when that algorithm is in algs ("RS256",
 * "ES256"); skips keys with use != "sig", other types and curves, and keys whose "alg" is not
 * allowed. TH_E_JSON (reason in err) when the document is not a JWKS; a set with no usable key is
 * valid but verifies nothing. The set may be shared by threads verifying tokens.
 */
th_err th_jwks_parse(const char *json, size_t len, const char *const *algs, size_t nalgs,
                     struct th_jwks **out, char *err, size_t errlen);
void th_jwks_free(struct th_jwks *k);
size_t th_jwks_count(const struct th_jwks *k);
bool th_jwks_has_kid(const struct th_jwks *k, const char *kid);
/*
 * True when newer holds every key of older: same kid (or both none), same algorithm, same public
 * key. false means a key was withdrawn or replaced (tokens it verified must not count any more).
 */
bool th_jwks_covers(const struct th_jwks *newer, const struct th_jwks *older);

struct th_jwt_policy {
    const char *issuer;
    const char *audience;
    const char *const *scopes; /* every one must be in scp */
    size_t nscopes;
    const char *const *client_ids; /* cid must be one of them; none = any */
    size_t nclient_ids;
    const char *const *algorithms; /* allowed: "RS256", "ES256" */
    size_t nalgorithms;
    int clock_skew_s;
};

struct th_jwt_claims {
    int64_t exp;   /* unix seconds */
    char cid[128]; /* "" when absent */
    char sub[128];
    char kid[128];
};

/*
 * Verifies token (len bytes, no "Bearer " prefix) at time now (unix seconds). why receives a
 * short reason for the log (never the token). claims may be NULL.
 */
th_jwt_status th_jwt_verify(const char *token, size_t len, const struct th_jwks *keys,
                            const struct th_jwt_policy *pol, int64_t now,
                            struct th_jwt_claims *claims, char *why, size_t whylen);

/*
 * The token's identity for a cache of verified tokens (32 bytes): the SHA-256 of its text, the
 * same for both spellings of an ES256 signature, (r, s) and (r, n - s), which both verify.
 * Needs no key and verifies nothing; costs a hash and, for ES256, a 64-byte decode.
 */
void th_jwt_cache_key(const char *token, size_t len, unsigned char out[32]);

/*
 * Developer tooling. Generates a key pair ("RS256": RSA 2048, "ES256": P-256) with the given
 * kid (NULL: random). *priv_jwk: the private key as a JWK (keep it secret); *jwks: a JWKS
 * document holding the public key. Both malloc'ed.
 */
th_err th_jwt_keygen(const char *alg, const char *kid, char **priv_jwk, char **jwks);

/* Signs claims_json (a JSON object) with the private JWK; *token is malloc'ed. */
th_err th_jwt_mint(const char *priv_jwk, const char *claims_json, char **token, char *err,
                   size_t errlen);

#endif
