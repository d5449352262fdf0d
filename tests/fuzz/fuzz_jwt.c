/*
 * libFuzzer: JWT verification (auth/jwt.c), the first thing an Authorization header reaches in
 * OAuth mode. The input is verified as a token against a fixed key set (one RS256 key, one ES256
 * key) with the production-like policy at a fixed time, so the seed tokens in corpus/jwt (minted
 * with those keys) get past the signature and exercise every claim check; the same bytes are then
 * parsed as a JWKS document, and a key set that parses verifies the two fixed tokens.
 */
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "auth/jwt.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

#define NOW  INT64_C(1767225600) /* the seed tokens: iat NOW-60, exp NOW+3600 */
#define SKEW 30

/* Public halves of two keys made once by `telehook token keygen` (private halves not kept). */
static const char JWKS[] =
    "{\"keys\":[{\"kty\":\"RSA\",\"kid\":\"fuzz-rs\",\"e\":\"AQAB\",\"n\":\"kLqnqeahrLCyOw0hFeCfE"
    "RhlWG0Gm8MHjEaHOHnl-AuO0M0ZK9L19ccYS2NOr6oAQ5wLdk_NIBio_ewbQ8bPhyvka3p9mb5rsz3nBXDGHBNj_bP19"
    "gsMYyVnWqCAtkAcjyl2BwjskAfjofZdvD_jnFVTIKAva6G3AJ1b1lJLzU_XqOu1uCoJIIp9tJCxVgHtXHKcBfiHGTLSg"
    "4JDFX806jyMGEUOEAipmV6vKYDRvnClcFApEJFnYhsi6eoBVJkloRUhJF6x7EwFYW_3q9wJpf5FQAs18Lyo86QZ7lJYy"
    "HzifQpNFxCVY36s8D5lsnGrMZrlaGieNwhZH1Y3SSN3vw\",\"alg\":\"RS256\",\"use\":\"sig\"},{\"kty\":"
    "\"EC\",\"kid\":\"fuzz-es\",\"crv\":\"P-256\",\"x\":\"I41-Hd7k6N3FheaywNCd3UYM1XTN1zTIwg4eldG"
    "CK6c\",\"y\":\"-qpTjiX-QGXgLeIiDMwhCWw83IFfMnOeRcpBbX4uT2I\",\"alg\":\"ES256\",\"use\":\"sig"
    "\"}]}";

/* Valid at NOW under POLICY against JWKS (also corpus/jwt/rs256-valid.jwt, es256-valid.jwt). */
static const char RS_TOKEN[] =
    "eyJhbGciOiJSUzI1NiIsImtpZCI6ImZ1enotcnMiLCJ0eXAiOiJKV1QifQ.eyJ2ZXIiOjEsImp0aSI6IkFULmZ1e"
    "noiLCJpc3MiOiJodHRwczovL2V4YW1wbGUub2t0YS5jb20vb2F1dGgyL2RlZmF1bHQiLCJhdWQiOiJhcGk6Ly9kZ"
    "WZhdWx0IiwiaWF0IjoxNzY3MjI1NTQwLCJleHAiOjE3NjcyMjkyMDAsImNpZCI6IjBvYS1ob29rIiwic3ViIjoiM"
    "G9hLWhvb2siLCJzY3AiOlsib2t0YS50ZWxlcGhvbnkuaG9vayJdfQ.G0oJlwnb0qyJMV53lZCsRCXwNw9zBYoSM-"
    "Rp3MN5zM5mhofIqF277Lg-ErgVtPc9TbKM9pXYx3hc5MqjPBfi_UbnLOg3faHD7TQC85_j5PjvIveJLHsiQ3eT9C"
    "PEysOQzkWJkj9i9eVepD-nHozlchoIMvF_qQUgIfnRHdFNkgliUJjgXFatg5t_05er10oJgDuBpdDlBWPgWl06xm"
    "AEG7iW4GFRIXY1ecjPiRMWw9ZIzW6d_kwDop-LmkAARMlGrzUKRVPYv00mtdu39v11xd228gR8TjIFRpUZj4aijX"
    "CieS95mF3FChH-oNWe74_JtciwFr29mzsLKKU-hQHWmA";
static const char ES_TOKEN[] =
    "eyJhbGciOiJFUzI1NiIsImtpZCI6ImZ1enotZXMiLCJ0eXAiOiJKV1QifQ.eyJ2ZXIiOjEsImp0aSI6IkFULmZ1e"
    "noiLCJpc3MiOiJodHRwczovL2V4YW1wbGUub2t0YS5jb20vb2F1dGgyL2RlZmF1bHQiLCJhdWQiOiJhcGk6Ly9kZ"
    "WZhdWx0IiwiaWF0IjoxNzY3MjI1NTQwLCJleHAiOjE3NjcyMjkyMDAsImNpZCI6IjBvYS1ob29rIiwic3ViIjoiM"
    "G9hLWhvb2siLCJzY3AiOlsib2t0YS50ZWxlcGhvbnkuaG9vayJdfQ.1lnQQNWtlO632_XQCpB9Bj33wzJ3dT76Jw"
    "jK_Evmn5UTDOxF4Dv3N7-_tfkgYMFedRiG9egp279hAC-D3Kmv2w";

static const char *const scopes[] = {"okta.telephony.hook"};
static const char *const clients[] = {"0oa-hook"};
static const char *const algs[] = {"RS256", "ES256"};

static const struct th_jwt_policy POLICY = {
    .issuer = "https://example.okta.com/oauth2/default",
    .audience = "api://default",
    .scopes = scopes,
    .nscopes = 1,
    .client_ids = clients,
    .nclient_ids = 1,
    .algorithms = algs,
    .nalgorithms = 2,
    .clock_skew_s = SKEW,
};

static struct th_jwks *fixed_keys(void)
{
    static struct th_jwks *keys; /* made once, kept for the process (reachable, not a leak) */
    char err[256];
    if (!keys &&
        (th_jwks_parse(JWKS, sizeof JWKS - 1, algs, 2, &keys, err, sizeof err) != TH_E_OK ||
         th_jwks_count(keys) != 2))
        __builtin_trap();
    return keys;
}

/* The verdict and why must be well formed; an accepted token must satisfy the policy. */
static void check(th_jwt_status s, const struct th_jwt_claims *c, const char *why, size_t whylen)
{
    if ((int)s < TH_JWT_OK || s > TH_JWT_SCOPE || !memchr(why, '\0', whylen))
        __builtin_trap();
    if (s == TH_JWT_OK &&
        (why[0] != '\0' || strcmp(c->cid, "0oa-hook") != 0 || c->exp <= NOW - SKEW ||
         !memchr(c->sub, '\0', sizeof c->sub) || !memchr(c->kid, '\0', sizeof c->kid)))
        __builtin_trap();
    if (s != TH_JWT_OK && why[0] == '\0')
        __builtin_trap();
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    struct th_jwks *keys = fixed_keys();
    /* the input as a token (not NUL-terminated: len is all there is) */
    char *tok = malloc(size ? size : 1);
    if (!tok)
        return 0;
    memcpy(tok, data, size);
    struct th_jwt_claims c;
    char why[128];
    th_jwt_status s = th_jwt_verify(tok, size, keys, &POLICY, NOW, &c, why, sizeof why);
    check(s, &c, why, sizeof why);
    unsigned char key[32]; /* the verified-token cache's key reads the raw text too */
    th_jwt_cache_key(tok, size, key);
    free(tok);

    /* the input as a key set */
    struct th_jwks *k = NULL;
    char err[256];
    if (th_jwks_parse((const char *)data, size, algs, 2, &k, err, sizeof err) == TH_E_OK) {
        (void)th_jwks_has_kid(k, "fuzz-rs");
        (void)th_jwks_covers(k, keys);
        (void)th_jwks_covers(keys, k);
        if (th_jwks_count(k) > 0) {
            s = th_jwt_verify(RS_TOKEN, sizeof RS_TOKEN - 1, k, &POLICY, NOW, &c, why, sizeof why);
            check(s, &c, why, sizeof why);
            s = th_jwt_verify(ES_TOKEN, sizeof ES_TOKEN - 1, k, &POLICY, NOW, &c, why, sizeof why);
            check(s, &c, why, sizeof why);
        }
        th_jwks_free(k);
    } else if (!memchr(err, '\0', sizeof err) || err[0] == '\0') {
        __builtin_trap();
    }
    return 0;
}
