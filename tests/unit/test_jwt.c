/*
 * Unit tests: JWT verification (auth/jwt.c). Keys are generated once per run (two RS256 keys
 * with different kids, one ES256 key); every case mints or hand-crafts one token and asserts the
 * exact status, so each check in jwt.c has a case that fails without it. Hand-crafted tokens
 * (crafted headers, non-JSON payloads, other base64 alphabets) are signed with OpenSSL directly
 * from the private JWK, so the property under test is the only thing wrong with them.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cjose/cjose.h>
#include <jansson.h>
#include <pthread.h>

#include <openssl/bio.h>
#include <openssl/bn.h>
#include <openssl/core_names.h>
#include <openssl/ec.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>
#include <openssl/param_build.h>
#include <openssl/pem.h>

#include "auth/jwt.h"
#include "common/util.h"

#define NOW  INT64_C(1767225600) /* 2026-01-01T00:00:00Z */
#define SKEW 30
#define ISS  "https://example.okta.com/oauth2/default"
#define AUD  "api://default"
#define CID  "0oa-hook"

static const char *const scopes[] = {"okta.telephony.hook"};
static const char *const clients[] = {CID};
static const char *const algs[] = {"RS256", "ES256"};
static const char *const es_only[] = {"ES256"};

static const struct th_jwt_policy POLICY = {
    .issuer = ISS,
    .audience = AUD,
    .scopes = scopes,
    .nscopes = 1,
    .client_ids = clients,
    .nclient_ids = 1,
    .algorithms = algs,
    .nalgorithms = 2,
    .clock_skew_s = SKEW,
};

/* ---- fixture: generated once for the whole group ---- */

static struct {
    char *rsa1_priv, *rsa1_jwks; /* kid "rsa-1" */
    char *rsa2_priv, *rsa2_jwks; /* kid "rsa-2" */
    char *ec_priv, *ec_jwks;     /* kid "ec-1" */
    char *rsa1_priv_nokid;       /* rsa-1's private JWK without "kid" (mints kid-less tokens) */
    char *ec_priv_nokid;
    struct th_jwks *all;       /* rsa-1, rsa-2, ec-1 */
    struct th_jwks *one;       /* rsa-1 only */
    struct th_jwks *one_nokid; /* rsa-1's public key without a kid */
    EVP_PKEY *rsa1_pkey;       /* rsa-1 for hand-signed tokens */
} F;

/* ---- base64 ---- */

static const char B64URL[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
static const char B64STD[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

/* Encodes with the given alphabet, '=' padded when pad; malloc'ed. */
static char *b64enc_with(const void *data, size_t len, const char *alpha, bool pad)
{
    const unsigned char *in = data;
    char *out = malloc(len / 3 * 4 + 5);
    assert_non_null(out);
    size_t o = 0, i = 0;
    for (; i + 2 < len; i += 3) {
        unsigned v = (unsigned)in[i] << 16 | (unsigned)in[i + 1] << 8 | in[i + 2];
        out[o++] = alpha[v >> 18 & 63];
        out[o++] = alpha[v >> 12 & 63];
        out[o++] = alpha[v >> 6 & 63];
        out[o++] = alpha[v & 63];
    }
    if (len - i == 1) {
        unsigned v = (unsigned)in[i] << 16;
        out[o++] = alpha[v >> 18 & 63];
        out[o++] = alpha[v >> 12 & 63];
        if (pad) {
            out[o++] = '=';
            out[o++] = '=';
        }
    } else if (len - i == 2) {
        unsigned v = (unsigned)in[i] << 16 | (unsigned)in[i + 1] << 8;
        out[o++] = alpha[v >> 18 & 63];
        out[o++] = alpha[v >> 12 & 63];
        out[o++] = alpha[v >> 6 & 63];
        if (pad)
            out[o++] = '=';
    }
    out[o] = '\0';
    return out;
}

static char *b64url(const void *data, size_t len)
{
    return b64enc_with(data, len, B64URL, false);
}

static char *b64url_str(const char *s)
{
    return b64url(s, strlen(s));
}

/* Decodes canonical unpadded base64url (what th_jwt_mint writes); malloc'ed, NUL-terminated. */
static unsigned char *b64url_dec(const char *s, size_t len, size_t *outlen)
{
    unsigned char *out = malloc(len * 3 / 4 + 2);
    assert_non_null(out);
    unsigned acc = 0;
    int bits = 0;
    size_t o = 0;
    for (size_t i = 0; i < len; i++) {
        const char *p = strchr(B64URL, s[i]);
        assert_true(p && s[i]);
        acc = acc << 6 | (unsigned)(p - B64URL);
        bits += 6;
        if (bits >= 8) {
            bits -= 8;
            out[o++] = (unsigned char)(acc >> bits);
            acc &= (1u << bits) - 1;
        }
    }
    out[o] = '\0';
    *outlen = o;
    return out;
}

/* ---- token pieces ---- */

static char *join3(const char *a, const char *b, const char *c)
{
    size_t n = strlen(a) + strlen(b) + strlen(c) + 3;
    char *t = malloc(n);
    assert_non_null(t);
    snprintf(t, n, "%s.%s.%s", a, b, c);
    return t;
}

/* The three parts of a compact token, each malloc'ed (p[i] NULL when missing). */
static void split3(const char *t, char *p[3])
{
    const char *d1 = strchr(t, '.');
    const char *d2 = d1 ? strchr(d1 + 1, '.') : NULL;
    assert_non_null(d2);
    p[0] = strndup(t, (size_t)(d1 - t));
    p[1] = strndup(d1 + 1, (size_t)(d2 - d1 - 1));
    p[2] = strdup(d2 + 1);
    assert_true(p[0] && p[1] && p[2]);
}

/* Splits t into p and returns its decoded signature (*n bytes); want: its expected length, or 0. */
static unsigned char *split_sig(const char *t, char *p[3], size_t *n, size_t want)
{
    split3(t, p);
    unsigned char *sig = b64url_dec(p[2], strlen(p[2]), n);
    assert_non_null(sig);
    if (want)
        assert_int_equal(*n, want);
    return sig;
}

static void free3(char *p[3])
{
    for (int i = 0; i < 3; i++)
        free(p[i]);
}

/* ---- OpenSSL keys from JWKs (for hand-signed tokens and the HS256 confusion case) ---- */

static BIGNUM *jwk_bn(json_t *jwk, const char *name)
{
    const char *s = json_string_value(json_object_get(jwk, name));
    if (!s)
        return NULL;
    size_t n;
    unsigned char *raw = b64url_dec(s, strlen(s), &n);
    BIGNUM *bn = BN_bin2bn(raw, (int)n, NULL);
    free(raw);
    assert_non_null(bn);
    return bn;
}

static EVP_PKEY *rsa_pkey(const char *jwk_text, bool priv)
{
    static const char *const names[] = {"n", "e", "d", "p", "q", "dp", "dq", "qi"};
    static const char *const params[] = {
        OSSL_PKEY_PARAM_RSA_N,         OSSL_PKEY_PARAM_RSA_E,
        OSSL_PKEY_PARAM_RSA_D,         OSSL_PKEY_PARAM_RSA_FACTOR1,
        OSSL_PKEY_PARAM_RSA_FACTOR2,   OSSL_PKEY_PARAM_RSA_EXPONENT1,
        OSSL_PKEY_PARAM_RSA_EXPONENT2, OSSL_PKEY_PARAM_RSA_COEFFICIENT1};
    json_t *j = json_loads(jwk_text, 0, NULL);
    assert_non_null(j);
    OSSL_PARAM_BLD *bld = OSSL_PARAM_BLD_new();
    assert_non_null(bld);
    BIGNUM *bn[8] = {0};
    size_t count = priv ? 8 : 2;
    for (size_t i = 0; i < count; i++) {
        bn[i] = jwk_bn(j, names[i]);
        assert_true(bn[i] || i > 2); /* n, e, d are required; the CRT values are optional */
        if (bn[i])
            assert_int_equal(OSSL_PARAM_BLD_push_BN(bld, params[i], bn[i]), 1);
    }
    OSSL_PARAM *p = OSSL_PARAM_BLD_to_param(bld);
    EVP_PKEY_CTX *ctx = EVP_PKEY_CTX_new_from_name(NULL, "RSA", NULL);
    EVP_PKEY *pk = NULL;
    assert_true(p && ctx);
    assert_int_equal(EVP_PKEY_fromdata_init(ctx), 1);
    assert_int_equal(EVP_PKEY_fromdata(ctx, &pk, priv ? EVP_PKEY_KEYPAIR : EVP_PKEY_PUBLIC_KEY, p),
                     1);
    EVP_PKEY_CTX_free(ctx);
    OSSL_PARAM_free(p);
    OSSL_PARAM_BLD_free(bld);
    for (size_t i = 0; i < 8; i++)
        BN_free(bn[i]);
    json_decref(j);
    return pk;
}

/* header_b64 "." payload_b64 "." base64url(RS256 signature with rsa-1 over the first two). */
static char *sign_parts(const char *header_b64, const char *payload_b64)
{
    size_t n = strlen(header_b64) + strlen(payload_b64) + 2;
    char *input = malloc(n);
    assert_non_null(input);
    snprintf(input, n, "%s.%s", header_b64, payload_b64);
    EVP_MD_CTX *md = EVP_MD_CTX_new();
    assert_non_null(md);
    assert_int_equal(EVP_DigestSignInit(md, NULL, EVP_sha256(), NULL, F.rsa1_pkey), 1);
    size_t slen = 0;
    assert_int_equal(EVP_DigestSign(md, NULL, &slen, (unsigned char *)input, n - 1), 1);
    unsigned char *sig = malloc(slen);
    assert_non_null(sig);
    assert_int_equal(EVP_DigestSign(md, sig, &slen, (unsigned char *)input, n - 1), 1);
    EVP_MD_CTX_free(md);
    char *s64 = b64url(sig, slen);
    char *t = join3(header_b64, payload_b64, s64);
    free(s64);
    free(sig);
    free(input);
    return t;
}

/* A token with this exact header and payload text, validly signed with rsa-1. */
static char *craft(const char *header, const void *payload, size_t plen)
{
    char *h = b64url_str(header);
    char *p = b64url(payload, plen);
    char *t = sign_parts(h, p);
    free(h);
    free(p);
    return t;
}

/* ---- claims and minting ---- */

/* Okta's access-token claims, all valid at NOW under POLICY. */
static json_t *base(void)
{
    json_t *c = json_pack("{s:i, s:s, s:s, s:s, s:I, s:I, s:s, s:s, s:[s]}", "ver", 1, "jti",
                          "AT.test", "iss", ISS, "aud", AUD, "iat", (json_int_t)(NOW - 60), "exp",
                          (json_int_t)(NOW + 3600), "cid", CID, "sub", "alice@example.com", "scp",
                          "okta.telephony.hook");
    assert_non_null(c);
    return c;
}

static json_t *with(json_t *c, const char *name, json_t *v)
{
    assert_int_equal(json_object_set_new(c, name, v), 0);
    return c;
}

static json_t *without(json_t *c, const char *name)
{
    assert_int_equal(json_object_del(c, name), 0);
    return c;
}

/* Mints claims (consumed) with the private JWK. */
static char *mint(const char *priv, json_t *claims)
{
    char *text = json_dumps(claims, JSON_COMPACT);
    json_decref(claims);
    assert_non_null(text);
    char *tok = NULL, err[256] = "";
    th_err e = th_jwt_mint(priv, text, &tok, err, sizeof err);
    if (e != TH_E_OK)
        fail_msg("th_jwt_mint: %s", err);
    free(text);
    return tok;
}

/* A copy of a JWK (JSON text) with member name set to value (NULL: removed); malloc'ed. */
static char *jwk_edit(const char *jwk, const char *name, const char *value)
{
    json_t *j = json_loads(jwk, 0, NULL);
    assert_non_null(j);
    if (value)
        json_object_set_new(j, name, json_string(value));
    else
        json_object_del(j, name);
    char *s = json_dumps(j, JSON_COMPACT);
    json_decref(j);
    assert_non_null(s);
    return s;
}

static char last_why[256];

/*
 * Verifies tok (len bytes) against keys/pol at NOW. On a failure, why must say something and must
 * not quote the token or any of its parts.
 */
static th_jwt_status verify_full(const char *tok, size_t len, const struct th_jwks *keys,
                                 const struct th_jwt_policy *pol, struct th_jwt_claims *claims)
{
    memset(last_why, 'x', sizeof last_why);
    th_jwt_status s = th_jwt_verify(tok, len, keys, pol, NOW, claims, last_why, sizeof last_why);
    assert_non_null(memchr(last_why, '\0', sizeof last_why));
    if (s == TH_JWT_OK) {
        assert_string_equal(last_why, "");
    } else {
        assert_true(last_why[0] != '\0');
        /* no run of 12 token bytes may appear in why */
        for (size_t i = 0; i + 12 <= len; i += 6) {
            char frag[13];
            memcpy(frag, tok + i, 12);
            frag[12] = '\0';
            if (strlen(frag) == 12 && strstr(last_why, frag))
                fail_msg("why \"%s\" quotes the token", last_why);
        }
    }
    return s;
}

static th_jwt_status verify_with(const char *tok, const struct th_jwks *keys,
                                 const struct th_jwt_policy *pol)
{
    return verify_full(tok, strlen(tok), keys, pol, NULL);
}

static th_jwt_status verify(const char *tok)
{
    return verify_with(tok, F.all, &POLICY);
}

/* Mints claims (consumed) with priv, verifies against the full set, frees the token. */
static th_jwt_status vk(const char *priv, json_t *claims)
{
    char *t = mint(priv, claims);
    th_jwt_status s = verify(t);
    free(t);
    return s;
}

static th_jwt_status vc(json_t *claims)
{
    return vk(F.rsa1_priv, claims);
}

/* Verifies a token (consumed). */
static th_jwt_status vt(char *tok)
{
    th_jwt_status s = verify(tok);
    free(tok);
    return s;
}

#define assert_status(expr, want)                                                                  \
    do {                                                                                           \
        th_jwt_status got_ = (expr), want_ = (want);                                               \
        if (got_ != want_)                                                                         \
            fail_msg("got %s (%s), want %s", th_jwt_status_name(got_), last_why,                   \
                     th_jwt_status_name(want_));                                                   \
    } while (0)

/* ---- JWKS helpers ---- */

/* The first key of a JWKS document, as a new reference. */
static json_t *first_key(const char *jwks)
{
    json_t *d = json_loads(jwks, 0, NULL);
    json_t *k = json_array_get(json_object_get(d, "keys"), 0);
    assert_non_null(k);
    json_incref(k);
    json_decref(d);
    return k;
}

/* Parses {"keys": keys} (keys consumed) with the given algorithms; asserts TH_E_OK. */
static struct th_jwks *parse_keys(json_t *keys, const char *const *a, size_t na)
{
    json_t *doc = json_pack("{s:o}", "keys", keys);
    char *text = json_dumps(doc, JSON_COMPACT);
    json_decref(doc);
    assert_non_null(text);
    struct th_jwks *k = NULL;
    char err[256] = "";
    th_err e = th_jwks_parse(text, strlen(text), a, na, &k, err, sizeof err);
    free(text);
    if (e != TH_E_OK)
        fail_msg("th_jwks_parse: %s", err);
    assert_non_null(k);
    return k;
}

/* How many usable keys {"keys":[key]} (key consumed) yields under the given algorithms. */
static size_t count_one(json_t *key, const char *const *a, size_t na)
{
    struct th_jwks *k = parse_keys(json_pack("[o]", key), a, na);
    size_t n = th_jwks_count(k);
    th_jwks_free(k);
    return n;
}

static int setup(void **state)
{
    (void)state;
    if (th_jwt_keygen("RS256", "rsa-1", &F.rsa1_priv, &F.rsa1_jwks) != TH_E_OK ||
        th_jwt_keygen("RS256", "rsa-2", &F.rsa2_priv, &F.rsa2_jwks) != TH_E_OK ||
        th_jwt_keygen("ES256", "ec-1", &F.ec_priv, &F.ec_jwks) != TH_E_OK)
        return -1;
    F.rsa1_priv_nokid = jwk_edit(F.rsa1_priv, "kid", NULL);
    F.ec_priv_nokid = jwk_edit(F.ec_priv, "kid", NULL);
    /* merge the three one-key documents */
    F.all = parse_keys(
        json_pack("[o,o,o]", first_key(F.rsa1_jwks), first_key(F.rsa2_jwks), first_key(F.ec_jwks)),
        algs, 2);
    F.one = parse_keys(json_pack("[o]", first_key(F.rsa1_jwks)), algs, 2);
    json_t *nokid = first_key(F.rsa1_jwks);
    json_object_del(nokid, "kid");
    F.one_nokid = parse_keys(json_pack("[o]", nokid), algs, 2);
    F.rsa1_pkey = rsa_pkey(F.rsa1_priv, true);
    return th_jwks_count(F.all) == 3 && th_jwks_count(F.one) == 1 ? 0 : -1;
}

static int teardown(void **state)
{
    (void)state;
    th_jwks_free(F.all);
    th_jwks_free(F.one);
    th_jwks_free(F.one_nokid);
    EVP_PKEY_free(F.rsa1_pkey);
    free(F.rsa1_priv);
    free(F.rsa1_jwks);
    free(F.rsa2_priv);
    free(F.rsa2_jwks);
    free(F.ec_priv);
    free(F.ec_jwks);
    free(F.rsa1_priv_nokid);
    free(F.ec_priv_nokid);
    return 0;
}

/* ---- accepted ---- */

static void test_valid_rs256(void **state)
{
    (void)state;
    char *t = mint(F.rsa1_priv, base());
    struct th_jwt_claims c;
    memset(&c, 'x', sizeof c);
    assert_status(verify_full(t, strlen(t), F.all, &POLICY, &c), TH_JWT_OK);
    assert_int_equal(c.exp, NOW + 3600);
    assert_string_equal(c.cid, CID);
    assert_string_equal(c.sub, "alice@example.com");
    assert_string_equal(c.kid, "rsa-1");
    /* claims may be NULL */
    char why[64];
    assert_status(th_jwt_verify(t, strlen(t), F.all, &POLICY, NOW, NULL, why, sizeof why),
                  TH_JWT_OK);
    free(t);

    /* absent cid and sub come out empty (no client ids configured) */
    struct th_jwt_policy any = POLICY;
    any.nclient_ids = 0;
    t = mint(F.rsa1_priv, without(without(base(), "cid"), "sub"));
    assert_status(verify_full(t, strlen(t), F.all, &any, &c), TH_JWT_OK);
    assert_string_equal(c.cid, "");
    assert_string_equal(c.sub, "");
    free(t);

    /* exp as a JSON real */
    assert_status(vc(with(base(), "exp", json_real((double)NOW + 100.5))), TH_JWT_OK);
}

static void test_valid_es256(void **state)
{
    (void)state;
    char *t = mint(F.ec_priv, base());
    struct th_jwt_claims c;
    assert_status(verify_full(t, strlen(t), F.all, &POLICY, &c), TH_JWT_OK);
    assert_string_equal(c.kid, "ec-1");
    assert_int_equal(c.exp, NOW + 3600);
    free(t);
}

static void test_kid_selects_the_key(void **state)
{
    (void)state;
    /* the second RSA key, by its kid */
    char *t = mint(F.rsa2_priv, base());
    struct th_jwt_claims c;
    assert_status(verify_full(t, strlen(t), F.all, &POLICY, &c), TH_JWT_OK);
    assert_string_equal(c.kid, "rsa-2");
    free(t);
    /* signed by rsa-2 but naming rsa-1: checked against rsa-1's key */
    char *liar = jwk_edit(F.rsa2_priv, "kid", "rsa-1");
    assert_status(vk(liar, base()), TH_JWT_SIGNATURE);
    free(liar);
    /* rsa-2's token against a set that only has rsa-1 */
    t = mint(F.rsa2_priv, base());
    assert_status(verify_with(t, F.one, &POLICY), TH_JWT_UNKNOWN_KID);
    free(t);
}

static void test_audience_array(void **state)
{
    (void)state;
    assert_status(vc(with(base(), "aud", json_pack("[s,s]", "api://other", AUD))), TH_JWT_OK);
    assert_status(vc(with(base(), "aud", json_pack("[s]", AUD))), TH_JWT_OK);
    assert_status(vc(with(base(), "aud", json_pack("[i,n,s]", 1, AUD))), TH_JWT_OK);
}

static void test_extra_scopes(void **state)
{
    (void)state;
    assert_status(
        vc(with(base(), "scp", json_pack("[s,s,s]", "openid", "okta.telephony.hook", "profile"))),
        TH_JWT_OK);
    /* RFC 9068 "scope" string when there is no scp */
    assert_status(
        vc(with(without(base(), "scp"), "scope", json_string("openid okta.telephony.hook x"))),
        TH_JWT_OK);
    assert_status(vc(with(without(base(), "scp"), "scope", json_string("okta.telephony.hook"))),
                  TH_JWT_OK);
}

static void test_no_kid(void **state)
{
    (void)state;
    char *t = mint(F.rsa1_priv_nokid, base());
    /* exactly one usable key: accepted, kid reported empty */
    struct th_jwt_claims c;
    assert_status(verify_full(t, strlen(t), F.one, &POLICY, &c), TH_JWT_OK);
    assert_string_equal(c.kid, "");
    assert_status(verify_with(t, F.one_nokid, &POLICY), TH_JWT_OK);
    /* two RS256 keys: which one? refused */
    assert_status(verify_with(t, F.all, &POLICY), TH_JWT_UNKNOWN_KID);
    free(t);
    /* the full set has exactly one ES256 key: a kid-less ES256 token is accepted */
    t = mint(F.ec_priv_nokid, base());
    assert_status(verify_with(t, F.all, &POLICY), TH_JWT_OK);
    /* and none in the RSA-only set */
    assert_status(verify_with(t, F.one, &POLICY), TH_JWT_UNKNOWN_KID);
    free(t);
    /* a kid that the kid-less key cannot match */
    t = mint(F.rsa1_priv, base());
    assert_status(verify_with(t, F.one_nokid, &POLICY), TH_JWT_UNKNOWN_KID);
    free(t);
}

/* ---- times ---- */

static void test_expiry(void **state)
{
    (void)state;
    assert_status(vc(with(base(), "exp", json_integer(NOW - 3600))), TH_JWT_EXPIRED);
    assert_status(vc(with(base(), "exp", json_integer(NOW - SKEW - 1))), TH_JWT_EXPIRED);
    assert_status(vc(with(base(), "exp", json_integer(NOW - SKEW))), TH_JWT_EXPIRED);
    assert_status(vc(with(base(), "exp", json_integer(NOW - SKEW + 1))), TH_JWT_OK);
    assert_status(vc(with(base(), "exp", json_integer(NOW))), TH_JWT_OK);
    assert_status(vc(without(base(), "exp")), TH_JWT_EXPIRED);
    assert_status(vc(with(base(), "exp", json_string("2099-01-01"))), TH_JWT_CLAIMS);
    assert_status(vc(with(base(), "exp", json_null())), TH_JWT_CLAIMS);
    assert_status(vc(with(base(), "exp", json_real((double)(NOW - SKEW) - 0.5))), TH_JWT_EXPIRED);
}

static void test_not_before(void **state)
{
    (void)state;
    assert_status(vc(with(base(), "nbf", json_integer(NOW + 3600))), TH_JWT_NOT_YET_VALID);
    assert_status(vc(with(base(), "nbf", json_integer(NOW + SKEW + 1))), TH_JWT_NOT_YET_VALID);
    assert_status(vc(with(base(), "nbf", json_integer(NOW + SKEW))), TH_JWT_OK);
    assert_status(vc(with(base(), "nbf", json_integer(NOW + 5))), TH_JWT_OK);
    assert_status(vc(with(base(), "nbf", json_integer(NOW - 60))), TH_JWT_OK);
    assert_status(vc(with(base(), "nbf", json_string("now"))), TH_JWT_CLAIMS);
}

static void test_issued_in_future(void **state)
{
    (void)state;
    assert_status(vc(with(base(), "iat", json_integer(NOW + 3600))), TH_JWT_IAT_FUTURE);
    assert_status(vc(with(base(), "iat", json_integer(NOW + SKEW + 1))), TH_JWT_IAT_FUTURE);
    assert_status(vc(with(base(), "iat", json_integer(NOW + SKEW))), TH_JWT_OK);
    assert_status(vc(with(base(), "iat", json_integer(NOW + 10))), TH_JWT_OK);
    assert_status(vc(without(base(), "iat")), TH_JWT_OK);
    assert_status(vc(with(base(), "iat", json_pack("[I]", (json_int_t)NOW))), TH_JWT_CLAIMS);
}

/* ---- issuer, audience, client, scope ---- */

static void test_issuer(void **state)
{
    (void)state;
    assert_status(vc(with(base(), "iss", json_string("https://evil.example.com/oauth2/default"))),
                  TH_JWT_ISSUER);
    assert_status(vc(with(base(), "iss", json_string(ISS "/"))), TH_JWT_ISSUER);
    assert_status(vc(with(base(), "iss", json_string("https://example.okta.com/oauth2/defaul"))),
                  TH_JWT_ISSUER);
    assert_status(vc(with(base(), "iss", json_string("HTTPS://EXAMPLE.OKTA.COM/oauth2/default"))),
                  TH_JWT_ISSUER);
    assert_status(vc(with(base(), "iss", json_pack("[s]", ISS))), TH_JWT_ISSUER);
    assert_status(vc(without(base(), "iss")), TH_JWT_ISSUER);
    /* the trailing-slash difference the other way round */
    struct th_jwt_policy slash = POLICY;
    slash.issuer = ISS "/";
    char *t = mint(F.rsa1_priv, base());
    assert_status(verify_with(t, F.all, &slash), TH_JWT_ISSUER);
    free(t);
}

static void test_audience(void **state)
{
    (void)state;
    assert_status(vc(with(base(), "aud", json_string("api://other"))), TH_JWT_AUDIENCE);
    assert_status(vc(with(base(), "aud", json_string("api://default/"))), TH_JWT_AUDIENCE);
    assert_status(vc(with(base(), "aud", json_pack("[s,s]", "api://other", "api://x"))),
                  TH_JWT_AUDIENCE);
    assert_status(vc(with(base(), "aud", json_array())), TH_JWT_AUDIENCE);
    assert_status(vc(with(base(), "aud", json_pack("[[s]]", AUD))), TH_JWT_AUDIENCE);
    assert_status(vc(with(base(), "aud", json_integer(1))), TH_JWT_AUDIENCE);
    assert_status(vc(without(base(), "aud")), TH_JWT_AUDIENCE);
}

static void test_client(void **state)
{
    (void)state;
    assert_status(vc(with(base(), "cid", json_string("0oa-other"))), TH_JWT_CLIENT);
    assert_status(vc(with(base(), "cid", json_string("0oa-hook "))), TH_JWT_CLIENT);
    assert_status(vc(with(base(), "cid", json_integer(0))), TH_JWT_CLIENT);
    assert_status(vc(without(base(), "cid")), TH_JWT_CLIENT);
    /* no client ids configured: any cid, or none */
    struct th_jwt_policy any = POLICY;
    any.nclient_ids = 0;
    char *t = mint(F.rsa1_priv, without(base(), "cid"));
    assert_status(verify_with(t, F.all, &any), TH_JWT_OK);
    free(t);
    t = mint(F.rsa1_priv, with(base(), "cid", json_string("0oa-other")));
    assert_status(verify_with(t, F.all, &any), TH_JWT_OK);
    free(t);
}

static void test_scope(void **state)
{
    (void)state;
    assert_status(vc(without(base(), "scp")), TH_JWT_SCOPE);
    assert_status(vc(with(base(), "scp", json_pack("[s,s]", "openid", "profile"))), TH_JWT_SCOPE);
    assert_status(vc(with(base(), "scp", json_array())), TH_JWT_SCOPE);
    assert_status(vc(with(base(), "scp", json_pack("[s]", "okta.telephony.hook.read"))),
                  TH_JWT_SCOPE);
    assert_status(vc(with(base(), "scp", json_pack("[s]", "okta.telephony"))), TH_JWT_SCOPE);
    assert_status(vc(with(base(), "scp", json_integer(1))), TH_JWT_SCOPE);
    /* space-separated strings match whole words only */
    assert_status(vc(with(without(base(), "scp"), "scope", json_string("xokta.telephony.hook"))),
                  TH_JWT_SCOPE);
    assert_status(vc(with(without(base(), "scp"), "scope", json_string("okta.telephony.hookx y"))),
                  TH_JWT_SCOPE);
    assert_status(vc(with(without(base(), "scp"), "scope", json_string("openid"))), TH_JWT_SCOPE);
    /* every configured scope is required */
    static const char *const two[] = {"okta.telephony.hook", "okta.telephony.admin"};
    struct th_jwt_policy both = POLICY;
    both.scopes = two;
    both.nscopes = 2;
    char *t = mint(F.rsa1_priv, base());
    assert_status(verify_with(t, F.all, &both), TH_JWT_SCOPE);
    free(t);
    t = mint(F.rsa1_priv, with(base(), "scp", json_pack("[s,s]", two[1], two[0])));
    assert_status(verify_with(t, F.all, &both), TH_JWT_OK);
    free(t);
}

/* ---- keys and signatures ---- */

static void test_unknown_kid(void **state)
{
    (void)state;
    char *k = jwk_edit(F.rsa1_priv, "kid", "rsa-9");
    assert_status(vk(k, base()), TH_JWT_UNKNOWN_KID);
    free(k);
    /* a kid of the other key type: keys are chosen by kid and algorithm */
    k = jwk_edit(F.ec_priv, "kid", "rsa-1");
    assert_status(vk(k, base()), TH_JWT_UNKNOWN_KID);
    free(k);
    k = jwk_edit(F.rsa1_priv, "kid", "ec-1");
    assert_status(vk(k, base()), TH_JWT_UNKNOWN_KID);
    free(k);
    k = jwk_edit(F.rsa1_priv, "kid", "");
    assert_status(vk(k, base()), TH_JWT_UNKNOWN_KID);
    free(k);
    /* an empty key set (or none) verifies nothing */
    struct th_jwks *empty = parse_keys(json_array(), algs, 2);
    char *t = mint(F.rsa1_priv, base());
    assert_status(verify_with(t, empty, &POLICY), TH_JWT_UNKNOWN_KID);
    assert_status(verify_with(t, NULL, &POLICY), TH_JWT_UNKNOWN_KID);
    free(t);
    t = mint(F.rsa1_priv_nokid, base());
    assert_status(verify_with(t, empty, &POLICY), TH_JWT_UNKNOWN_KID);
    free(t);
    th_jwks_free(empty);
}

static void test_tampered_payload(void **state)
{
    (void)state;
    const char *privs[] = {F.rsa1_priv, F.ec_priv};
    for (size_t i = 0; i < 2; i++) {
        char *t = mint(privs[i], with(base(), "cid", json_string("0oa-other")));
        assert_status(verify(t), TH_JWT_CLIENT);
        char *p[3];
        split3(t, p);
        size_t n;
        unsigned char *raw = b64url_dec(p[1], strlen(p[1]), &n);
        json_t *c = json_loadb((char *)raw, n, 0, NULL);
        free(raw);
        assert_non_null(c);
        char *text = json_dumps(with(c, "cid", json_string(CID)), JSON_COMPACT);
        json_decref(c);
        char *p1 = b64url_str(text);
        assert_status(vt(join3(p[0], p1, p[2])), TH_JWT_SIGNATURE);
        free(p1);
        free(text);
        /* the header too: typ changed */
        char *h1 = b64url_str(i == 0 ? "{\"alg\":\"RS256\",\"kid\":\"rsa-1\",\"typ\":\"at+jwt\"}"
                                     : "{\"alg\":\"ES256\",\"kid\":\"ec-1\",\"typ\":\"at+jwt\"}");
        assert_status(vt(join3(h1, p[1], p[2])), TH_JWT_SIGNATURE);
        free(h1);
        free3(p);
        free(t);
    }
}

static void test_tampered_signature(void **state)
{
    (void)state;
    const char *privs[] = {F.rsa1_priv, F.ec_priv};
    for (size_t i = 0; i < 2; i++) {
        char *t = mint(privs[i], base());
        assert_status(verify(t), TH_JWT_OK);
        char *p[3];
        size_t n;
        unsigned char *sig = split_sig(t, p, &n, 0);
        size_t positions[] = {0, n / 2, n - 1};
        for (size_t j = 0; j < 3; j++) {
            sig[positions[j]] ^= 0x01;
            char *s64 = b64url(sig, n);
            assert_status(vt(join3(p[0], p[1], s64)), TH_JWT_SIGNATURE);
            free(s64);
            sig[positions[j]] ^= 0x01;
        }
        /* a signature one byte short, and one byte long */
        char *s64 = b64url(sig, n - 1);
        assert_status(vt(join3(p[0], p[1], s64)), TH_JWT_SIGNATURE);
        free(s64);
        if (i == 0) { /* RS256: a signature one byte long (ES256: test_es256_sig_length) */
            unsigned char *longer = calloc(1, n + 1);
            assert_non_null(longer);
            memcpy(longer, sig, n);
            s64 = b64url(longer, n + 1);
            assert_status(vt(join3(p[0], p[1], s64)), TH_JWT_SIGNATURE);
            free(s64);
            free(longer);
        }
        free(sig);
        free3(p);
        free(t);
    }
}

static void test_alg_none(void **state)
{
    (void)state;
    char *t = mint(F.rsa1_priv, base());
    char *p[3];
    split3(t, p);
    const char *headers[] = {"{\"alg\":\"none\",\"typ\":\"JWT\"}",
                             "{\"alg\":\"none\",\"kid\":\"rsa-1\",\"typ\":\"JWT\"}",
                             "{\"alg\":\"None\",\"kid\":\"rsa-1\"}", "{\"alg\":\"NONE\"}"};
    for (size_t i = 0; i < TH_ARRAY_LEN(headers); i++) {
        char *h = b64url_str(headers[i]);
        /* the unsecured form, with its empty signature, is not even a compact JWS */
        char *u = malloc(strlen(h) + strlen(p[1]) + 3);
        assert_non_null(u);
        sprintf(u, "%s.%s.", h, p[1]);
        assert_status(vt(u), TH_JWT_MALFORMED);
        /* with any signature: refused for the algorithm */
        assert_status(vt(join3(h, p[1], "AAAA")), TH_JWT_ALG);
        assert_status(vt(join3(h, p[1], p[2])), TH_JWT_ALG);
        free(h);
    }
    /* no alg at all, or not a string */
    char *h = b64url_str("{\"kid\":\"rsa-1\",\"typ\":\"JWT\"}");
    assert_status(vt(join3(h, p[1], p[2])), TH_JWT_ALG);
    free(h);
    assert_status(vt(craft("{\"alg\":[\"RS256\"],\"kid\":\"rsa-1\"}", "{}", 2)), TH_JWT_ALG);
    free3(p);
    free(t);
}

/* HMAC-SHA256 token over the rsa-1 payload with secret as the key. */
static char *hs256(const char *header, const char *payload_b64, const void *secret, size_t slen)
{
    char *h = b64url_str(header);
    size_t n = strlen(h) + strlen(payload_b64) + 2;
    char *input = malloc(n);
    assert_non_null(input);
    snprintf(input, n, "%s.%s", h, payload_b64);
    unsigned char mac[EVP_MAX_MD_SIZE];
    unsigned maclen = 0;
    assert_non_null(
        HMAC(EVP_sha256(), secret, (int)slen, (unsigned char *)input, n - 1, mac, &maclen));
    char *m64 = b64url(mac, maclen);
    char *t = join3(h, payload_b64, m64);
    free(m64);
    free(input);
    free(h);
    return t;
}

static void test_hs256_key_confusion(void **state)
{
    (void)state;
    /* the RSA public key, as PEM and as its JWK, used as an HMAC secret */
    json_t *k = first_key(F.rsa1_jwks);
    char *jwk = json_dumps(k, JSON_COMPACT);
    json_decref(k);
    assert_non_null(jwk);
    EVP_PKEY *pub = rsa_pkey(jwk, false);
    BIO *bio = BIO_new(BIO_s_mem());
    assert_true(pub && jwk && bio);
    assert_int_equal(PEM_write_bio_PUBKEY(bio, pub), 1);
    char *pem = NULL;
    long pemlen = BIO_get_mem_data(bio, &pem);
    assert_true(pemlen > 100);
    /* the public key in the fixture is rsa-1's own: an RS256 token verifies with it */
    char *t = mint(F.rsa1_priv, base());
    char *p[3];
    split3(t, p);
    const char *headers[] = {"{\"alg\":\"HS256\",\"kid\":\"rsa-1\",\"typ\":\"JWT\"}",
                             "{\"alg\":\"HS256\",\"typ\":\"JWT\"}",
                             "{\"alg\":\"HS384\",\"kid\":\"rsa-1\"}",
                             "{\"alg\":\"HS512\",\"kid\":\"rsa-1\"}"};
    for (size_t i = 0; i < TH_ARRAY_LEN(headers); i++) {
        assert_status(vt(hs256(headers[i], p[1], pem, (size_t)pemlen)), TH_JWT_ALG);
        assert_status(vt(hs256(headers[i], p[1], jwk, strlen(jwk))), TH_JWT_ALG);
        assert_true(strstr(last_why, "HS") != NULL); /* refused for the algorithm, named */
    }
    /* even in a key set holding only that RSA key */
    char *h = hs256(headers[0], p[1], pem, (size_t)pemlen);
    assert_status(verify_with(h, F.one, &POLICY), TH_JWT_ALG);
    free(h);
    free3(p);
    free(t);
    BIO_free(bio);
    free(jwk);
    EVP_PKEY_free(pub);
}

static void test_alg_not_allowed(void **state)
{
    (void)state;
    const char *others[] = {"RS384", "RS512", "PS256", "PS512"};
    for (size_t i = 0; i < TH_ARRAY_LEN(others); i++) {
        char *k = jwk_edit(F.rsa1_priv, "alg", others[i]);
        assert_status(vk(k, base()), TH_JWT_ALG);
        free(k);
    }
    /* a correct RS256 token where only ES256 is allowed */
    struct th_jwt_policy es = POLICY;
    es.algorithms = es_only;
    es.nalgorithms = 1;
    char *t = mint(F.rsa1_priv, base());
    assert_status(verify_with(t, F.all, &es), TH_JWT_ALG);
    free(t);
    t = mint(F.ec_priv, base());
    assert_status(verify_with(t, F.all, &es), TH_JWT_OK);
    free(t);
    /* a long alg is cut in why */
    assert_status(
        vt(craft("{\"alg\":\"RS256RS256RS256RS256RS256RS256\",\"kid\":\"rsa-1\"}", "{}", 2)),
        TH_JWT_ALG);
    assert_null(strstr(last_why, "RS256RS256RS256RS256"));
    /* alg is case-sensitive */
    assert_status(vt(craft("{\"alg\":\"rs256\",\"kid\":\"rsa-1\"}", "{}", 2)), TH_JWT_ALG);
}

static void test_crafted_header(void **state)
{
    (void)state;
    json_t *c = base();
    char *payload = json_dumps(c, JSON_COMPACT);
    json_decref(c);
    size_t plen = strlen(payload);
    /* the crafting itself is sound: this one verifies */
    assert_status(vt(craft("{\"alg\":\"RS256\",\"kid\":\"rsa-1\"}", payload, plen)), TH_JWT_OK);
    /* crit present (whatever it lists) */
    assert_status(vt(craft("{\"alg\":\"RS256\",\"kid\":\"rsa-1\",\"crit\":[\"exp\"],\"exp\":1}",
                           payload, plen)),
                  TH_JWT_ALG);
    assert_status(vt(craft("{\"alg\":\"RS256\",\"kid\":\"rsa-1\",\"crit\":[]}", payload, plen)),
                  TH_JWT_ALG);
    /* kid not a string */
    assert_status(vt(craft("{\"alg\":\"RS256\",\"kid\":1}", payload, plen)), TH_JWT_MALFORMED);
    assert_status(vt(craft("{\"alg\":\"RS256\",\"kid\":null}", payload, plen)), TH_JWT_MALFORMED);
    assert_status(vt(craft("{\"alg\":\"RS256\",\"kid\":[\"rsa-1\"]}", payload, plen)),
                  TH_JWT_MALFORMED);
    /* duplicate members: whichever one a parser keeps, the header is refused */
    assert_status(
        vt(craft("{\"alg\":\"RS256\",\"kid\":\"rsa-2\",\"kid\":\"rsa-1\"}", payload, plen)),
        TH_JWT_MALFORMED);
    assert_status(
        vt(craft("{\"alg\":\"RS256\",\"kid\":\"rsa-1\",\"kid\":\"rsa-2\"}", payload, plen)),
        TH_JWT_MALFORMED);
    assert_status(
        vt(craft("{\"alg\":\"HS256\",\"alg\":\"RS256\",\"kid\":\"rsa-1\"}", payload, plen)),
        TH_JWT_MALFORMED);
    /* not a JSON object */
    assert_status(vt(craft("not json", payload, plen)), TH_JWT_MALFORMED);
    assert_status(vt(craft("{\"alg\":\"RS256\",\"kid\":\"rsa-1\"", payload, plen)),
                  TH_JWT_MALFORMED);
    assert_status(vt(craft("[{\"alg\":\"RS256\",\"kid\":\"rsa-1\"}]", payload, plen)),
                  TH_JWT_MALFORMED);
    assert_status(vt(craft("\"RS256\"", payload, plen)), TH_JWT_MALFORMED);
    assert_status(vt(craft("null", payload, plen)), TH_JWT_MALFORMED);
    assert_status(vt(craft("{\"alg\":\"RS256\",\"kid\":\"rsa-1\"} x", payload, plen)),
                  TH_JWT_MALFORMED);
    /* a NUL inside the header JSON */
    assert_status(vt(craft("{\"alg\":\"RS256\",\"kid\":\"rsa-1\\u0000x\"}", payload, plen)),
                  TH_JWT_MALFORMED);
    free(payload);
}

static void test_payload_not_json(void **state)
{
    (void)state;
    const char *h = "{\"alg\":\"RS256\",\"kid\":\"rsa-1\"}";
    const char *bad[] = {"not json", "[1,2,3]", "\"a string\"", "42", "null", "{\"iss\":", "{} {}"};
    for (size_t i = 0; i < TH_ARRAY_LEN(bad); i++)
        assert_status(vt(craft(h, bad[i], strlen(bad[i]))), TH_JWT_CLAIMS);
    /* binary */
    static const unsigned char bin[] = {0x00, 0xff, 0x7b, 0x7d};
    assert_status(vt(craft(h, bin, sizeof bin)), TH_JWT_CLAIMS);
    /* a claim given twice (the second one the right one) */
    json_t *c = without(base(), "iss");
    char *text = json_dumps(c, JSON_COMPACT);
    json_decref(c);
    size_t n = strlen(text) + 128;
    char *dup = malloc(n);
    assert_non_null(dup);
    snprintf(dup, n, "{\"iss\":\"https://evil.example.com\",\"iss\":\"%s\",%s", ISS, text + 1);
    assert_status(vt(craft(h, dup, strlen(dup))), TH_JWT_CLAIMS);
    snprintf(dup, n, "{\"iss\":\"%s\",%s", ISS, text + 1);
    assert_status(vt(craft(h, dup, strlen(dup))), TH_JWT_OK);
    free(dup);
    free(text);
}

/* base()'s claims without claim drop and with members (JSON text) first: the verification status.
 */
static th_jwt_status verify_members(const char *drop, const char *members)
{
    json_t *c = without(base(), drop);
    char *text = json_dumps(c, JSON_COMPACT); /* "{...}" */
    json_decref(c);
    size_t n = strlen(text) + strlen(members) + 4;
    char *doc = malloc(n);
    assert_non_null(doc);
    snprintf(doc, n, "{%s,%s", members, text + 1);
    th_jwt_status st = vt(craft("{\"alg\":\"RS256\",\"kid\":\"rsa-1\"}", doc, strlen(doc)));
    free(doc);
    free(text);
    return st;
}

/*
 * The payload as the JSON reader sees it: keys compared after unescaping, strictness anywhere in
 * the document (not only in the claims we read), numbers of every JSON shape.
 */
static void test_claims_json(void **state)
{
    (void)state;
    static const struct {
        const char *drop, *members;
        th_jwt_status want;
    } cases[] = {
        /* the reference: iss spelled with an escape is the same key, and verifies */
        {"iss", "\"\\u0069ss\":\"" ISS "\"", TH_JWT_OK},
        /* a duplicate that only unescaping reveals */
        {"iss", "\"iss\":\"https://evil.example.com\",\"\\u0069ss\":\"" ISS "\"", TH_JWT_CLAIMS},
        /* a duplicate deep in a claim nobody reads */
        {"iss", "\"iss\":\"" ISS "\",\"x\":[{\"a\":{\"b\":1,\"b\":2}}]", TH_JWT_CLAIMS},
        /* \u0000 in a claim nobody reads, and in a key */
        {"iss", "\"iss\":\"" ISS "\",\"x\":\"a\\u0000b\"", TH_JWT_CLAIMS},
        {"iss", "\"iss\":\"" ISS "\",\"x\\u0000\":1", TH_JWT_CLAIMS},
        /* \u0000 in the issuer would otherwise compare equal to its prefix */
        {"iss", "\"iss\":\"" ISS "\\u0000evil\"", TH_JWT_CLAIMS},
        /* invalid UTF-8 in a string */
        {"iss", "\"iss\":\"" ISS "\",\"x\":\"\xc3\x28\"", TH_JWT_CLAIMS},
        /* an integer beyond 64 bits anywhere is not JSON we read */
        {"iss", "\"iss\":\"" ISS "\",\"x\":123456789012345678901234567890", TH_JWT_CLAIMS},
        /* beyond int64: a number, but no date */
        {"exp", "\"exp\":18446744073709551615", TH_JWT_CLAIMS},
        /* a string is no NumericDate */
        {"exp", "\"exp\":\"4102444800\"", TH_JWT_CLAIMS},
        /* 2100, as a real with an exponent */
        {"exp", "\"exp\":4.1024448e9", TH_JWT_OK},
        {"exp", "\"exp\":-0.0", TH_JWT_EXPIRED},
    };
    for (size_t i = 0; i < TH_ARRAY_LEN(cases); i++)
        assert_status(verify_members(cases[i].drop, cases[i].members), cases[i].want);
}

/* ---- shape and encoding ---- */

static void test_truncated(void **state)
{
    (void)state;
    char *t = mint(F.rsa1_priv, base());
    size_t len = strlen(t);
    char *p[3];
    split3(t, p);
    /* two parts */
    char *two = malloc(len);
    assert_non_null(two);
    sprintf(two, "%s.%s", p[0], p[1]);
    assert_status(vt(two), TH_JWT_MALFORMED);
    /* cut in the middle of the signature (a multiple of 4 characters: still valid base64url) */
    size_t cut = len - (strlen(p[2]) - 200);
    assert_status(verify_full(t, cut, F.all, &POLICY, NULL), TH_JWT_SIGNATURE);
    /* ... leaving a length that is no base64url (4k+1 characters) */
    assert_status(verify_full(t, len - strlen(p[2]) + 201, F.all, &POLICY, NULL), TH_JWT_MALFORMED);
    /* one character short (4k+1 again), two characters short */
    assert_status(verify_full(t, len - 1, F.all, &POLICY, NULL), TH_JWT_MALFORMED);
    assert_status(verify_full(t, len - 2, F.all, &POLICY, NULL), TH_JWT_SIGNATURE);
    /* in the payload, in the header */
    assert_status(verify_full(t, strlen(p[0]) + 10, F.all, &POLICY, NULL), TH_JWT_MALFORMED);
    assert_status(verify_full(t, 10, F.all, &POLICY, NULL), TH_JWT_MALFORMED);
    assert_status(verify_full(t, 0, F.all, &POLICY, NULL), TH_JWT_MALFORMED);
    /* empty parts, extra parts */
    assert_status(vt(join3("", p[1], p[2])), TH_JWT_MALFORMED);
    assert_status(vt(join3(p[0], "", p[2])), TH_JWT_MALFORMED);
    assert_status(vt(join3(p[0], p[1], "")), TH_JWT_MALFORMED);
    char *four = malloc(len + 8);
    assert_non_null(four);
    sprintf(four, "%s.AAAA", t);
    assert_status(vt(four), TH_JWT_MALFORMED);
    assert_status(vt(strdup("..")), TH_JWT_MALFORMED);
    assert_status(vt(strdup("abc")), TH_JWT_MALFORMED);
    /* "Bearer " is the caller's to strip */
    char *bearer = malloc(len + 8);
    assert_non_null(bearer);
    sprintf(bearer, "Bearer %s", t);
    assert_status(vt(bearer), TH_JWT_MALFORMED);
    /* a NUL inside the token: only len counts */
    char *nul = strdup(t);
    assert_non_null(nul);
    nul[len / 2] = '\0';
    assert_true(verify_full(nul, len, F.all, &POLICY, NULL) != TH_JWT_OK);
    free(nul);
    free3(p);
    free(t);
}

static void test_oversize(void **state)
{
    (void)state;
    char *big = malloc(TH_JWT_MAX_LEN + 2);
    assert_non_null(big);
    memset(big, 'A', TH_JWT_MAX_LEN + 1);
    big[TH_JWT_MAX_LEN + 1] = '\0';
    assert_status(verify_full(big, TH_JWT_MAX_LEN + 1, F.all, &POLICY, NULL), TH_JWT_TOO_LARGE);
    assert_status(verify_full(big, TH_JWT_MAX_LEN, F.all, &POLICY, NULL), TH_JWT_MALFORMED);
    free(big);
    /* validly signed tokens around the limit: padded with a claim */
    char *t0 = mint(F.rsa1_priv, with(base(), "pad", json_string("")));
    size_t start = (TH_JWT_MAX_LEN - strlen(t0)) * 3 / 4 - 6;
    free(t0);
    size_t below = 0, above = SIZE_MAX;
    for (size_t pad = start; pad < start + 24 && (below < TH_JWT_MAX_LEN - 2 || above == SIZE_MAX);
         pad++) {
        char *s = malloc(pad + 1);
        assert_non_null(s);
        memset(s, 'p', pad);
        s[pad] = '\0';
        char *t = mint(F.rsa1_priv, with(base(), "pad", json_string(s)));
        free(s);
        size_t len = strlen(t);
        if (len <= TH_JWT_MAX_LEN) {
            assert_status(verify(t), TH_JWT_OK);
            below = len;
        } else if (above == SIZE_MAX) {
            assert_status(verify(t), TH_JWT_TOO_LARGE);
            above = len;
        }
        free(t);
    }
    assert_true(below >= TH_JWT_MAX_LEN - 2);
    assert_true(above <= TH_JWT_MAX_LEN + 3);
}

/* {"alg":"RS256","kid":"rsa-1","x":"<filler>"} whose standard base64 contains c; malloc'ed. */
static char *header_with_b64_char(char c)
{
    static const char *const fillers[] = {"?", ">", "~", "??", ">>", "~~", "???", ">>>", "~~~"};
    for (size_t i = 0; i < TH_ARRAY_LEN(fillers); i++) {
        char h[128];
        snprintf(h, sizeof h, "{\"alg\":\"RS256\",\"kid\":\"rsa-1\",\"x\":\"%s\"}", fillers[i]);
        char *s = b64enc_with(h, strlen(h), B64STD, false);
        bool hit = strchr(s, c) != NULL;
        free(s);
        if (hit)
            return strdup(h);
    }
    fail_msg("no header encodes to a '%c'", c);
    return NULL;
}

static void test_bad_base64url(void **state)
{
    (void)state;
    json_t *c = base();
    char *payload = json_dumps(c, JSON_COMPACT);
    json_decref(c);
    char *p64 = b64url_str(payload);
    /* '+' and '/': the standard alphabet for the same header, validly signed */
    const char std[] = {'+', '/'};
    for (size_t i = 0; i < 2; i++) {
        char *h = header_with_b64_char(std[i]);
        char *url = b64enc_with(h, strlen(h), B64URL, false);
        char *bad = b64enc_with(h, strlen(h), B64STD, false);
        assert_status(vt(sign_parts(url, p64)), TH_JWT_OK);
        assert_status(vt(sign_parts(bad, p64)), TH_JWT_MALFORMED);
        free(bad);
        free(url);
        free(h);
    }
    /* '=' padding (the header length is not a multiple of 3) */
    const char *h = "{\"alg\":\"RS256\",\"kid\":\"rsa-1\"}"; /* 29 bytes */
    assert_true(strlen(h) % 3 != 0);
    char *padded = b64enc_with(h, strlen(h), B64URL, true);
    assert_non_null(strchr(padded, '='));
    assert_status(vt(sign_parts(padded, p64)), TH_JWT_MALFORMED);
    /* non-canonical trailing bits: the last character carries bits that decode to nothing */
    char *canon = b64url_str(h);
    size_t cl = strlen(canon);
    char *noncanon = strdup(canon);
    assert_non_null(noncanon);
    noncanon[cl - 1] = B64URL[strchr(B64URL, canon[cl - 1]) - B64URL + 1];
    assert_status(vt(sign_parts(canon, p64)), TH_JWT_OK);
    assert_status(vt(sign_parts(noncanon, p64)), TH_JWT_MALFORMED);
    /* 4k+1 characters: a header of 3k bytes and one more 'A' (6 zero bits, no byte) */
    const char *h3 = "{\"alg\":\"RS256\", \"kid\":\"rsa-1\"}"; /* 30 bytes */
    assert_int_equal(strlen(h3) % 3, 0);
    char *c3 = b64url_str(h3);
    char *extra = malloc(strlen(c3) + 2);
    assert_non_null(extra);
    sprintf(extra, "%sA", c3);
    assert_int_equal(strlen(extra) % 4, 1);
    assert_status(vt(sign_parts(c3, p64)), TH_JWT_OK);
    assert_status(vt(sign_parts(extra, p64)), TH_JWT_MALFORMED);
    free(c3);
    /* a space, a newline, a non-ASCII byte */
    const char *junk[] = {" ", "\n", "\xc3\xa9"};
    for (size_t i = 0; i < TH_ARRAY_LEN(junk); i++) {
        char *j = malloc(cl + 4);
        assert_non_null(j);
        snprintf(j, cl + 4, "%.4s%s%s", canon, junk[i], canon + 4);
        assert_status(vt(sign_parts(j, p64)), TH_JWT_MALFORMED);
        free(j);
    }
    free(extra);
    free(noncanon);
    free(canon);
    free(padded);
    free(p64);
    free(payload);
}

/* ---- the why text ---- */

static void test_why_never_quotes_the_token(void **state)
{
    (void)state;
    /* verify_full checks every failure in this file; here, explicitly, on a few of them */
    char *k = jwk_edit(F.rsa1_priv, "kid", "kid-AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA");
    char *t = mint(k, base());
    free(k);
    char why[512];
    assert_status(th_jwt_verify(t, strlen(t), F.all, &POLICY, NOW, NULL, why, sizeof why),
                  TH_JWT_UNKNOWN_KID);
    assert_null(strstr(why, t));
    assert_null(strstr(why, "kid-AAAA"));
    free(t);

    t = mint(F.rsa1_priv, with(base(), "exp", json_integer(NOW - 3600)));
    char *p[3];
    split3(t, p);
    assert_status(th_jwt_verify(t, strlen(t), F.all, &POLICY, NOW, NULL, why, sizeof why),
                  TH_JWT_EXPIRED);
    for (int i = 0; i < 3; i++)
        assert_null(strstr(why, p[i]));
    p[2][5] = p[2][5] == 'A' ? 'B' : 'A';
    char *bad = join3(p[0], p[1], p[2]);
    assert_status(th_jwt_verify(bad, strlen(bad), F.all, &POLICY, NOW, NULL, why, sizeof why),
                  TH_JWT_SIGNATURE);
    assert_null(strstr(why, bad));
    for (int i = 0; i < 3; i++)
        assert_null(strstr(why, p[i]));
    free(bad);
    free3(p);
    free(t);

    /* a small why buffer is cut, not overrun */
    char tiny[8];
    assert_status(th_jwt_verify("a.b", 3, F.all, &POLICY, NOW, NULL, tiny, sizeof tiny),
                  TH_JWT_MALFORMED);
    assert_int_equal(strlen(tiny), sizeof tiny - 1);
}

/* ---- th_jwks_parse ---- */

static void test_jwks_use_and_alg(void **state)
{
    (void)state;
    json_t *k = first_key(F.rsa1_jwks);
    assert_int_equal(count_one(json_deep_copy(k), algs, 2), 1);
    assert_int_equal(count_one(with(json_deep_copy(k), "use", json_string("enc")), algs, 2), 0);
    assert_int_equal(count_one(with(json_deep_copy(k), "use", json_string("SIG")), algs, 2), 0);
    assert_int_equal(count_one(without(json_deep_copy(k), "use"), algs, 2), 1);
    assert_int_equal(count_one(without(json_deep_copy(k), "alg"), algs, 2), 1);
    assert_int_equal(count_one(with(json_deep_copy(k), "alg", json_string("RS512")), algs, 2), 0);
    assert_int_equal(count_one(with(json_deep_copy(k), "alg", json_string("ES256")), algs, 2), 0);
    assert_int_equal(count_one(with(json_deep_copy(k), "kty", json_string("oct")), algs, 2), 0);
    assert_int_equal(count_one(without(json_deep_copy(k), "kty"), algs, 2), 0);
    assert_int_equal(count_one(without(json_deep_copy(k), "n"), algs, 2), 0);
    /* an RS256 key when only ES256 is allowed, with or without its alg */
    assert_int_equal(count_one(json_deep_copy(k), es_only, 1), 0);
    assert_int_equal(count_one(without(json_deep_copy(k), "alg"), es_only, 1), 0);
    json_decref(k);

    k = first_key(F.ec_jwks);
    assert_int_equal(count_one(json_deep_copy(k), es_only, 1), 1);
    assert_int_equal(count_one(with(json_deep_copy(k), "use", json_string("enc")), algs, 2), 0);
    assert_int_equal(count_one(with(json_deep_copy(k), "alg", json_string("RS256")), algs, 2), 0);
    assert_int_equal(count_one(with(json_deep_copy(k), "crv", json_string("P-384")), algs, 2), 0);
    static const char *const rs_only[] = {"RS256"};
    assert_int_equal(count_one(json_deep_copy(k), rs_only, 1), 0);
    json_decref(k);
}

/* A JWK (public, or private with priv) for a fresh cjose key; the caller releases. */
static json_t *cjose_key_json(cjose_jwk_t *jwk, bool priv)
{
    assert_non_null(jwk);
    cjose_err cerr = {0};
    char *s = cjose_jwk_to_json(jwk, priv, &cerr);
    assert_non_null(s);
    json_t *j = json_loads(s, 0, NULL);
    cjose_get_dealloc()(s);
    assert_non_null(j);
    return j;
}

static void test_jwks_weak_keys(void **state)
{
    (void)state;
    cjose_err cerr = {0};
    static const uint8_t e65537[] = {0x01, 0x00, 0x01};
    /* RSA 1024 and 2040 bits: refused */
    size_t sizes[] = {1024, 2040};
    for (size_t i = 0; i < 2; i++) {
        cjose_jwk_t *jwk = cjose_jwk_create_RSA_random(sizes[i], e65537, sizeof e65537, &cerr);
        json_t *j = cjose_key_json(jwk, false);
        cjose_jwk_release(jwk);
        json_object_set_new(j, "use", json_string("sig"));
        json_object_set_new(j, "kid", json_string("weak"));
        assert_int_equal(count_one(j, algs, 2), 0);
    }
    /* a crafted short modulus */
    json_t *k = first_key(F.rsa1_jwks);
    const char *n = json_string_value(json_object_get(k, "n"));
    assert_int_equal(strlen(n), 342); /* 2048 bits */
    char *short_n = strndup(n, 340);  /* 255 bytes */
    assert_int_equal(count_one(with(json_deep_copy(k), "n", json_string(short_n)), algs, 2), 0);
    free(short_n);
    json_decref(k);
    /* EC on P-384 and P-521 */
    cjose_jwk_ec_curve curves[] = {CJOSE_JWK_EC_P_384, CJOSE_JWK_EC_P_521};
    for (size_t i = 0; i < 2; i++) {
        cjose_jwk_t *jwk = cjose_jwk_create_EC_random(curves[i], &cerr);
        json_t *j = cjose_key_json(jwk, false);
        cjose_jwk_release(jwk);
        json_object_set_new(j, "kid", json_string("p384"));
        assert_int_equal(count_one(json_deep_copy(j), algs, 2), 0);
        /* relabelled P-256: cjose refuses the coordinates */
        assert_int_equal(count_one(with(j, "crv", json_string("P-256")), algs, 2), 0);
    }
}

static void test_jwks_documents(void **state)
{
    (void)state;
    const char *bad[] = {"",
                         "not json",
                         "[]",
                         "{}",
                         "{\"keys\":{}}",
                         "{\"keys\":\"x\"}",
                         "{\"keys\":null}",
                         "{\"Keys\":[]}",
                         "{\"keys\":[],\"keys\":[]}",
                         "{\"keys\":[]",
                         "\"keys\""};
    for (size_t i = 0; i < TH_ARRAY_LEN(bad); i++) {
        static char sentinel;
        struct th_jwks *k = (struct th_jwks *)&sentinel; /* must stay untouched */
        char err[256] = "";
        assert_int_equal(th_jwks_parse(bad[i], strlen(bad[i]), algs, 2, &k, err, sizeof err),
                         TH_E_JSON);
        assert_true(err[0] != '\0');
        assert_ptr_equal(k, (struct th_jwks *)&sentinel);
    }
    /* only len counts */
    struct th_jwks *k = NULL;
    char err[256];
    assert_int_equal(th_jwks_parse("{\"keys\":[]}xyz", 11, algs, 2, &k, err, sizeof err), TH_E_OK);
    th_jwks_free(k);
    /* a JWKS with no usable key: valid, empty */
    const char *empty[] = {"{\"keys\":[]}", "{\"keys\":[1,\"x\",null,[],{}]}",
                           "{\"keys\":[{\"kty\":\"oct\",\"k\":\"AAAA\"}]}",
                           "{\"keys\":[{\"kty\":\"RSA\",\"n\":\"AAAA\",\"e\":\"AQAB\"}]}",
                           "{\"keys\":[{\"kty\":1,\"use\":2}]}"};
    for (size_t i = 0; i < TH_ARRAY_LEN(empty); i++) {
        k = NULL;
        assert_int_equal(th_jwks_parse(empty[i], strlen(empty[i]), algs, 2, &k, err, sizeof err),
                         TH_E_OK);
        assert_non_null(k);
        assert_int_equal(th_jwks_count(k), 0);
        assert_false(th_jwks_has_kid(k, "rsa-1"));
        th_jwks_free(k);
    }
    /* no allowed algorithm: nothing usable */
    k = NULL;
    assert_int_equal(th_jwks_parse(F.rsa1_jwks, strlen(F.rsa1_jwks), NULL, 0, &k, err, sizeof err),
                     TH_E_OK);
    assert_int_equal(th_jwks_count(k), 0);
    th_jwks_free(k);
    /* a private JWK in a key set: only its public members are used, and it verifies */
    json_t *priv = json_loads(F.rsa1_priv, 0, NULL);
    struct th_jwks *pk = parse_keys(json_pack("[o]", priv), algs, 2);
    assert_int_equal(th_jwks_count(pk), 1);
    char *t = mint(F.rsa1_priv, base());
    assert_status(verify_with(t, pk, &POLICY), TH_JWT_OK);
    free(t);
    th_jwks_free(pk);
    assert_int_equal(th_jwks_count(NULL), 0);
    th_jwks_free(NULL);
}

static void test_jwks_has_kid(void **state)
{
    (void)state;
    assert_true(th_jwks_has_kid(F.all, "rsa-1"));
    assert_true(th_jwks_has_kid(F.all, "rsa-2"));
    assert_true(th_jwks_has_kid(F.all, "ec-1"));
    assert_false(th_jwks_has_kid(F.all, "rsa-3"));
    assert_false(th_jwks_has_kid(F.all, "rsa-"));
    assert_false(th_jwks_has_kid(F.all, "rsa-11"));
    assert_false(th_jwks_has_kid(F.all, ""));
    assert_true(th_jwks_has_kid(F.one, "rsa-1"));
    assert_false(th_jwks_has_kid(F.one, "rsa-2"));
    assert_false(th_jwks_has_kid(F.one_nokid, "rsa-1"));
    assert_false(th_jwks_has_kid(F.one_nokid, ""));
    assert_false(th_jwks_has_kid(NULL, "rsa-1"));
    assert_int_equal(th_jwks_count(F.all), 3);
    assert_int_equal(th_jwks_count(F.one_nokid), 1);
}

static void test_status_names(void **state)
{
    (void)state;
    for (int i = TH_JWT_OK; i <= TH_JWT_SCOPE; i++) {
        const char *a = th_jwt_status_name((th_jwt_status)i);
        assert_non_null(a);
        assert_true(a[0] != '\0');
        assert_string_not_equal(a, "?");
        for (int j = TH_JWT_OK; j < i; j++)
            assert_string_not_equal(a, th_jwt_status_name((th_jwt_status)j));
    }
    assert_string_equal(th_jwt_status_name(TH_JWT_EXPIRED), "expired");
    assert_string_equal(th_jwt_status_name(TH_JWT_UNKNOWN_KID), "unknown_kid");
    assert_string_equal(th_jwt_status_name((th_jwt_status)(TH_JWT_SCOPE + 1)), "?");
    assert_string_equal(th_jwt_status_name((th_jwt_status)-1), "?");
}

static void test_keygen_and_mint_errors(void **state)
{
    (void)state;
    char *priv = NULL, *jwks = NULL, err[128] = "", *tok = NULL;
    assert_int_equal(th_jwt_keygen("HS256", NULL, &priv, &jwks), TH_E_INVAL);
    assert_int_equal(th_jwt_keygen("none", NULL, &priv, &jwks), TH_E_INVAL);
    assert_null(priv);
    /* a random kid */
    assert_int_equal(th_jwt_keygen("ES256", NULL, &priv, &jwks), TH_E_OK);
    json_t *k = json_loads(priv, 0, NULL);
    const char *kid = json_string_value(json_object_get(k, "kid"));
    assert_non_null(kid);
    assert_true(strlen(kid) > 10);
    assert_non_null(json_object_get(k, "d"));
    json_decref(k);
    assert_null(strstr(jwks, "\"d\"")); /* the public set holds no private member */
    assert_int_equal(th_jwt_mint(priv, "[1]", &tok, err, sizeof err), TH_E_INVAL);
    assert_int_equal(th_jwt_mint(priv, "not json", &tok, err, sizeof err), TH_E_INVAL);
    assert_int_equal(th_jwt_mint("{}", "{}", &tok, err, sizeof err), TH_E_INVAL);
    assert_null(tok);
    free(priv);
    free(jwks);
}

/*
 * ---- input cjose must never see ----
 * cjose 0.6.2's base64url decoder assert()s (aborts the process) on a '=' after the first
 * character of a 4-character group ("A=", "AAAAA=AA"). Every part of a token and every key
 * member must be checked before cjose decodes it. These run in a child process so that an abort
 * fails one test instead of the whole suite.
 */

#define CHILD_OK 64 /* fn's result is sent as 64 + r: a sanitizer's exit code 1 is not a result */

/* Runs fn(arg) (0 <= result < 128) in a child; its result, or -1 when the child died. */
static int in_child(int (*fn)(const void *), const void *arg)
{
    fflush(NULL);
    pid_t pid = fork();
    assert_true(pid >= 0);
    if (pid == 0)
        _exit(CHILD_OK + fn(arg));
    int st = 0;
    assert_int_equal(waitpid(pid, &st, 0), pid);
    if (WIFEXITED(st) && WEXITSTATUS(st) >= CHILD_OK)
        return WEXITSTATUS(st) - CHILD_OK;
    print_message("child %s %d\n", WIFEXITED(st) ? "exited with" : "killed by signal",
                  WIFEXITED(st) ? WEXITSTATUS(st) : WTERMSIG(st));
    return -1;
}

struct child_token {
    const char *tok;
    const struct th_jwks *keys;
};

static int child_verify(const void *arg)
{
    const struct child_token *c = arg;
    char why[128];
    return (int)th_jwt_verify(c->tok, strlen(c->tok), c->keys, &POLICY, NOW, NULL, why, sizeof why);
}

/* 0: parsed, no usable key; 1+: that many keys; 40+err: refused. */
static int child_parse(const void *arg)
{
    const char *doc = arg;
    struct th_jwks *k = NULL;
    char err[256];
    th_err e = th_jwks_parse(doc, strlen(doc), algs, 2, &k, err, sizeof err);
    int r = e == TH_E_OK ? (int)th_jwks_count(k) : 40 + (int)e;
    th_jwks_free(k);
    return r;
}

/* s with c inserted at position at; malloc'ed. */
static char *insert_at(const char *s, size_t at, char c)
{
    size_t n = strlen(s);
    char *o = malloc(n + 2);
    assert_non_null(o);
    memcpy(o, s, at);
    o[at] = c;
    memcpy(o + at + 1, s + at, n - at + 1);
    return o;
}

static void test_cjose_abort_tokens(void **state)
{
    (void)state;
    char *t = mint(F.rsa1_priv, base());
    char *p[3];
    split3(t, p);
    char *sig_eq = insert_at(p[2], 5, '='); /* 4k+1 characters, then '=' */
    char *pay_eq = insert_at(p[1], 9, '=');
    char *toks[] = {join3(p[0], "A=", p[2]), join3(p[0], p[1], "A="), join3(p[0], p[1], sig_eq),
                    join3(p[0], pay_eq, p[2]), join3(p[0], "e30", "AAAAA=AA")};
    for (size_t i = 0; i < TH_ARRAY_LEN(toks); i++) {
        struct child_token c = {toks[i], F.all};
        int r = in_child(child_verify, &c);
        if (r < 0)
            fail_msg("token %zu: the verifier died", i);
        assert_status((th_jwt_status)r, TH_JWT_MALFORMED);
        free(toks[i]);
    }
    /* no kid, one key: the same */
    char *t1 = mint(F.rsa1_priv_nokid, base());
    char *q[3];
    split3(t1, q);
    char *tok = join3(q[0], "A=", q[2]);
    struct child_token c = {tok, F.one};
    int r = in_child(child_verify, &c);
    if (r < 0)
        fail_msg("kid-less token: the verifier died");
    assert_status((th_jwt_status)r, TH_JWT_MALFORMED);
    free(tok);
    free3(q);
    free(t1);
    free(pay_eq);
    free(sig_eq);
    free3(p);
    free(t);
}

static void test_cjose_abort_keys(void **state)
{
    (void)state;
    json_t *rsa = first_key(F.rsa1_jwks), *ec = first_key(F.ec_jwks);
    const char *n = json_string_value(json_object_get(rsa, "n"));
    const char *y = json_string_value(json_object_get(ec, "y"));
    char *n_eq = insert_at(n, 341, '='); /* 2048 bits still, with a '=' in the last group */
    char *y_eq = insert_at(y, 9, '=');
    char *x_eq = insert_at(json_string_value(json_object_get(ec, "x")), 1, '=');
    json_t *keys[] = {
        with(json_deep_copy(rsa), "e", json_string("A=")),
        with(json_deep_copy(rsa), "e", json_string("AQAB=A")),
        with(json_deep_copy(rsa), "n", json_string(n_eq)),
        with(json_deep_copy(ec), "y", json_string(y_eq)),
        with(json_deep_copy(ec), "x", json_string(x_eq)),
    };
    for (size_t i = 0; i < TH_ARRAY_LEN(keys); i++) {
        json_t *doc = json_pack("{s:[o]}", "keys", keys[i]);
        char *text = json_dumps(doc, JSON_COMPACT);
        json_decref(doc);
        int r = in_child(child_parse, text);
        free(text);
        if (r < 0)
            fail_msg("key %zu: th_jwks_parse died", i);
        assert_int_equal(r, 0); /* parsed; the key is skipped */
    }
    free(x_eq);
    free(y_eq);
    free(n_eq);
    json_decref(ec);
    json_decref(rsa);
}

/* status is one of the two; otherwise fails naming all three */
#define assert_status_in(got, a, b)                                                                \
    do {                                                                                           \
        th_jwt_status g_ = (got);                                                                  \
        if (g_ != (a) && g_ != (b))                                                                \
            fail_msg("got %s, want %s or %s", th_jwt_status_name(g_), th_jwt_status_name(a),       \
                     th_jwt_status_name(b));                                                       \
    } while (0)

/* Mints claims (consumed) with rsa-1 and verifies them in a child; dies -> test failure. */
static th_jwt_status vc_child(json_t *claims, const char *what)
{
    char *t = mint(F.rsa1_priv, claims);
    struct child_token c = {t, F.all};
    int r = in_child(child_verify, &c);
    free(t);
    if (r < 0)
        fail_msg("%s: the verifier died", what);
    return (th_jwt_status)r;
}

static void test_extreme_times(void **state)
{
    (void)state;
    /*
     * NumericDates at the ends of the range: no overflow in exp + skew (UBSan), no out-of-range
     * double-to-integer conversion (a far-future nbf or iat must not come out as INT64_MIN).
     * Either refused as a bad claim or judged by its real value.
     */
    assert_status_in(vc_child(with(base(), "exp", json_integer(INT64_MAX)), "exp INT64_MAX"),
                     TH_JWT_OK, TH_JWT_CLAIMS);
    assert_status_in(vc_child(with(base(), "exp", json_integer(INT64_MAX - 10)), "exp near max"),
                     TH_JWT_OK, TH_JWT_CLAIMS);
    assert_status_in(vc_child(with(base(), "exp", json_integer(INT64_MIN)), "exp INT64_MIN"),
                     TH_JWT_EXPIRED, TH_JWT_CLAIMS);
    assert_status_in(vc_child(with(base(), "exp", json_real(1e300)), "exp 1e300"), TH_JWT_OK,
                     TH_JWT_CLAIMS);
    assert_status_in(vc_child(with(base(), "exp", json_real(-1e300)), "exp -1e300"), TH_JWT_EXPIRED,
                     TH_JWT_CLAIMS);
    assert_status_in(vc_child(with(base(), "nbf", json_real(1e300)), "nbf 1e300"),
                     TH_JWT_NOT_YET_VALID, TH_JWT_CLAIMS);
    assert_status_in(vc_child(with(base(), "nbf", json_integer(INT64_MAX)), "nbf INT64_MAX"),
                     TH_JWT_NOT_YET_VALID, TH_JWT_CLAIMS);
    assert_status_in(vc_child(with(base(), "iat", json_real(1e300)), "iat 1e300"),
                     TH_JWT_IAT_FUTURE, TH_JWT_CLAIMS);
    assert_status_in(vc_child(with(base(), "iat", json_real(9.3e18)), "iat 9.3e18"),
                     TH_JWT_IAT_FUTURE, TH_JWT_CLAIMS);
}

/* ---- one token, one spelling; key and signature sizes ---- */

static void test_padded_rsa_modulus(void **state)
{
    (void)state;
    /* a 1024-bit modulus written as 256 bytes (zero bytes in front) is still 1024 bits */
    cjose_err cerr = {0};
    static const uint8_t e65537[] = {0x01, 0x00, 0x01};
    cjose_jwk_t *weak = cjose_jwk_create_RSA_random(1024, e65537, sizeof e65537, &cerr);
    json_t *wpub = cjose_key_json(weak, false);
    const char *wn = json_string_value(json_object_get(wpub, "n"));
    size_t wlen;
    unsigned char *raw = b64url_dec(wn, strlen(wn), &wlen);
    assert_int_equal(wlen, 128);
    unsigned char padded[256] = {0};
    memcpy(padded + 128, raw, 128);
    free(raw);
    char *pn = b64url(padded, sizeof padded);
    json_object_set_new(wpub, "n", json_string(pn));
    json_object_set_new(wpub, "kid", json_string("padded"));
    json_object_set_new(wpub, "use", json_string("sig"));
    free(pn);
    struct th_jwks *wk = parse_keys(json_pack("[o]", wpub), algs, 2);
    /* and a token signed with the 1024-bit key */
    json_t *wpriv = cjose_key_json(weak, true);
    json_object_set_new(wpriv, "kid", json_string("padded"));
    json_object_set_new(wpriv, "alg", json_string("RS256"));
    char *wp = json_dumps(wpriv, JSON_COMPACT);
    json_decref(wpriv);
    char *t = mint(wp, base());
    th_jwt_status st = verify_with(t, wk, &POLICY);
    size_t count = th_jwks_count(wk);
    free(t);
    free(wp);
    th_jwks_free(wk);
    cjose_jwk_release(weak);
    assert_int_equal(count, 0);
    /* refused: no such key, or (checked first) a 1024-bit signature is too short for RS256 */
    if (st != TH_JWT_SIGNATURE)
        assert_status(st, TH_JWT_UNKNOWN_KID);
}

static void test_es256_sig_length(void **state)
{
    (void)state;
    /* RFC 7518 3.4: an ES256 signature is R || S, exactly 64 bytes */
    char *t = mint(F.ec_priv, base());
    char *p[3];
    size_t n;
    unsigned char *sig = split_sig(t, p, &n, 64);
    unsigned char longer[65];
    memcpy(longer, sig, 64);
    longer[64] = 0xa5;
    char *s64 = b64url(longer, sizeof longer);
    th_jwt_status st = vt(join3(p[0], p[1], s64));
    free(s64);
    /* R and S each with a zero byte in front (66 bytes) */
    unsigned char wide[66] = {0};
    memcpy(wide + 1, sig, 32);
    memcpy(wide + 34, sig + 32, 32);
    s64 = b64url(wide, sizeof wide);
    th_jwt_status st2 = vt(join3(p[0], p[1], s64));
    free(s64);
    free(sig);
    free3(p);
    free(t);
    assert_status(st, TH_JWT_SIGNATURE);
    assert_status(st2, TH_JWT_SIGNATURE);
}

static void test_signature_encoding(void **state)
{
    (void)state;
    /* the signature part is base64url too: no '=' padding, no non-canonical trailing bits */
    char *t = mint(F.rsa1_priv, base());
    char *p[3];
    split3(t, p);
    size_t sl = strlen(p[2]);
    assert_int_equal(sl % 4, 2); /* 256 bytes: the last character carries 4 unused bits */
    char *padded = malloc(sl + 3);
    assert_non_null(padded);
    sprintf(padded, "%s==", p[2]);
    th_jwt_status st1 = vt(join3(p[0], p[1], padded));
    char *noncanon = strdup(p[2]);
    assert_non_null(noncanon);
    noncanon[sl - 1] = B64URL[strchr(B64URL, p[2][sl - 1]) - B64URL + 1];
    th_jwt_status st2 = vt(join3(p[0], p[1], noncanon));
    free(noncanon);
    free(padded);
    free3(p);
    free(t);
    assert_status(st1, TH_JWT_MALFORMED);
    assert_status(st2, TH_JWT_MALFORMED);
}

static void test_payload_encoding(void **state)
{
    (void)state;
    /* the payload part is held to the header's strict base64url */
    json_t *c = base();
    char *payload = json_dumps(c, JSON_COMPACT);
    json_decref(c);
    size_t plen = strlen(payload);
    if (plen % 3 == 0) { /* make the encoding end in a partial group */
        payload = realloc(payload, plen + 2);
        assert_non_null(payload);
        memmove(payload + 1, payload, plen + 1);
        payload[0] = ' ';
        plen++;
    }
    char *h64 = b64url_str("{\"alg\":\"RS256\",\"kid\":\"rsa-1\"}");
    char *canon = b64url(payload, plen);
    char *padded = b64enc_with(payload, plen, B64URL, true);
    assert_status(vt(sign_parts(h64, canon)), TH_JWT_OK);
    th_jwt_status st1 = vt(sign_parts(h64, padded));
    size_t cl = strlen(canon);
    canon[cl - 1] = B64URL[strchr(B64URL, canon[cl - 1]) - B64URL + 1];
    th_jwt_status st2 = vt(sign_parts(h64, canon));
    free(padded);
    free(canon);
    free(h64);
    free(payload);
    assert_status(st1, TH_JWT_MALFORMED);
    assert_status(st2, TH_JWT_MALFORMED);
}

/* ---- the signature path: OpenSSL provider keys built once, R || S as DER ---- */

/* An EC P-256 private key from a private JWK (d, x, y). */
static EVP_PKEY *ec_pkey(const char *jwk_text)
{
    json_t *j = json_loads(jwk_text, 0, NULL);
    assert_non_null(j);
    unsigned char pub[65] = {0x04};
    const char *xy[] = {"x", "y"};
    for (int i = 0; i < 2; i++) {
        const char *s = json_string_value(json_object_get(j, xy[i]));
        assert_non_null(s);
        size_t n;
        unsigned char *raw = b64url_dec(s, strlen(s), &n);
        assert_true(n <= 32);
        memcpy(pub + 1 + 32 * (size_t)i + 32 - n, raw, n);
        free(raw);
    }
    BIGNUM *d = jwk_bn(j, "d");
    OSSL_PARAM_BLD *bld = OSSL_PARAM_BLD_new();
    assert_true(d && bld);
    assert_int_equal(
        OSSL_PARAM_BLD_push_utf8_string(bld, OSSL_PKEY_PARAM_GROUP_NAME, "prime256v1", 0), 1);
    assert_int_equal(OSSL_PARAM_BLD_push_octet_string(bld, OSSL_PKEY_PARAM_PUB_KEY, pub, 65), 1);
    assert_int_equal(OSSL_PARAM_BLD_push_BN(bld, OSSL_PKEY_PARAM_PRIV_KEY, d), 1);
    OSSL_PARAM *p = OSSL_PARAM_BLD_to_param(bld);
    EVP_PKEY_CTX *ctx = EVP_PKEY_CTX_new_from_name(NULL, "EC", NULL);
    EVP_PKEY *pk = NULL;
    assert_true(p && ctx);
    assert_int_equal(EVP_PKEY_fromdata_init(ctx), 1);
    assert_int_equal(EVP_PKEY_fromdata(ctx, &pk, EVP_PKEY_KEYPAIR, p), 1);
    EVP_PKEY_CTX_free(ctx);
    OSSL_PARAM_free(p);
    OSSL_PARAM_BLD_free(bld);
    BN_free(d);
    json_decref(j);
    return pk;
}

/* Signs input with the EC key; the JOSE form (R || S, 32 bytes each) into rs. */
static void es256_sign(EVP_PKEY *pk, const char *input, unsigned char rs[64])
{
    EVP_MD_CTX *md = EVP_MD_CTX_new();
    assert_non_null(md);
    unsigned char der[80];
    size_t dl = sizeof der;
    assert_int_equal(EVP_DigestSignInit(md, NULL, EVP_sha256(), NULL, pk), 1);
    assert_int_equal(EVP_DigestSign(md, der, &dl, (const unsigned char *)input, strlen(input)), 1);
    EVP_MD_CTX_free(md);
    const unsigned char *q = der;
    ECDSA_SIG *sig = d2i_ECDSA_SIG(NULL, &q, (long)dl);
    assert_non_null(sig);
    assert_int_equal(BN_bn2binpad(ECDSA_SIG_get0_r(sig), rs, 32), 32);
    assert_int_equal(BN_bn2binpad(ECDSA_SIG_get0_s(sig), rs + 32, 32), 32);
    ECDSA_SIG_free(sig);
}

/* h "." p "." base64url(rs) */
static char *es256_token(const char *h, const char *p, const unsigned char rs[64])
{
    char *s64 = b64url(rs, 64);
    char *t = join3(h, p, s64);
    free(s64);
    return t;
}

/* The order n of P-256, big-endian. */
static const unsigned char P256_N[32] = {
    0xff, 0xff, 0xff, 0xff, 0x00, 0x00, 0x00, 0x00, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff,
    0xbc, 0xe6, 0xfa, 0xad, 0xa7, 0x17, 0x9e, 0x84, 0xf3, 0xb9, 0xca, 0xc2, 0xfc, 0x63, 0x25, 0x51};

/* out = n - v (v < n), 32 bytes big-endian */
static void p256_negate(const unsigned char v[32], unsigned char out[32])
{
    int borrow = 0;
    for (int i = 31; i >= 0; i--) {
        int d = P256_N[i] - v[i] - borrow;
        borrow = d < 0;
        out[i] = (unsigned char)(d + (borrow ? 256 : 0));
    }
    assert_int_equal(borrow, 0);
}

static void test_es256_der_encoding(void **state)
{
    (void)state;
    /*
     * R and S go to OpenSSL as a DER ECDSA-Sig-Value, which it accepts only in its one minimal
     * spelling: each INTEGER with a zero byte in front when its top bit is set, leading zero
     * bytes dropped. Signatures are drawn until every shape of R and of S has verified: top bit
     * set; top bit clear; a zero byte, then a byte with the top bit set (the zero stays); a zero
     * byte, then one without (the zero goes).
     */
    EVP_PKEY *pk = ec_pkey(F.ec_priv);
    json_t *c = base();
    char *payload = json_dumps(c, JSON_COMPACT);
    json_decref(c);
    char *h = b64url_str("{\"alg\":\"ES256\",\"kid\":\"ec-1\"}");
    char *p = b64url_str(payload);
    size_t n = strlen(h) + strlen(p) + 2;
    char *input = malloc(n);
    assert_non_null(input);
    snprintf(input, n, "%s.%s", h, p);
    bool seen[8] = {false}; /* the four shapes of R, then of S */
    int tries = 0, left = 8;
    for (; tries < 40000 && left > 0; tries++) {
        unsigned char rs[64];
        es256_sign(pk, input, rs);
        bool fresh = false;
        for (int i = 0; i < 2; i++) {
            const unsigned char *v = rs + 32 * i;
            int shape = v[0] & 0x80 ? 0 : v[0] ? 1 : v[1] & 0x80 ? 2 : 3;
            if (!seen[4 * i + shape]) {
                fresh = seen[4 * i + shape] = true;
                left--;
            }
        }
        if (!fresh && tries > 16)
            continue;
        char *t = es256_token(h, p, rs);
        th_jwt_status st = vt(t);
        if (st != TH_JWT_OK)
            fail_msg("R %02x%02x.., S %02x%02x..: %s (%s)", rs[0], rs[1], rs[32], rs[33],
                     th_jwt_status_name(st), last_why);
    }
    for (int i = 0; i < 8; i++)
        if (!seen[i])
            fail_msg("shape %d of %s never drawn in %d signatures", i % 4, i < 4 ? "R" : "S",
                     tries);
    EVP_PKEY_free(pk);
    free(input);
    free(p);
    free(h);
    free(payload);
}

static void test_es256_bad_values(void **state)
{
    (void)state;
    char *t = mint(F.ec_priv, base());
    char *p[3];
    size_t n;
    unsigned char *sig = split_sig(t, p, &n, 64);
    unsigned char rs[64];
    /* S replaced by n - S (the "high-S" twin): a valid ECDSA signature too. RFC 7518 does not ask
     * for low S and issuers do not normalise, so it is accepted, as it always was. */
    memcpy(rs, sig, 32);
    p256_negate(sig + 32, rs + 32);
    assert_status(vt(es256_token(p[0], p[1], rs)), TH_JWT_OK);
    /* R or S zero, equal to the group order, all ones: out of range, refused */
    const unsigned char *bad[] = {NULL, P256_N, NULL};
    unsigned char zero[32] = {0}, ones[32];
    memset(ones, 0xff, sizeof ones);
    bad[0] = zero;
    bad[2] = ones;
    for (int half = 0; half < 2; half++)
        for (size_t i = 0; i < TH_ARRAY_LEN(bad); i++) {
            memcpy(rs, sig, 64);
            memcpy(rs + 32 * half, bad[i], 32);
            assert_status(vt(es256_token(p[0], p[1], rs)), TH_JWT_SIGNATURE);
        }
    memset(rs, 0, sizeof rs);
    assert_status(vt(es256_token(p[0], p[1], rs)), TH_JWT_SIGNATURE);
    /* R and S swapped */
    memcpy(rs, sig + 32, 32);
    memcpy(rs + 32, sig, 32);
    assert_status(vt(es256_token(p[0], p[1], rs)), TH_JWT_SIGNATURE);
    /* the signature of another token, and a DER signature where R || S belongs (70-72 bytes:
     * refused for its length before it reaches OpenSSL) */
    char *other = mint(F.ec_priv, with(base(), "jti", json_string("AT.other")));
    char *q[3];
    split3(other, q);
    assert_status(vt(join3(p[0], p[1], q[2])), TH_JWT_SIGNATURE);
    EVP_PKEY *pk = ec_pkey(F.ec_priv);
    EVP_MD_CTX *md = EVP_MD_CTX_new();
    assert_non_null(md);
    size_t in_len = strlen(p[0]) + strlen(p[1]) + 2;
    char *input = malloc(in_len);
    assert_non_null(input);
    snprintf(input, in_len, "%s.%s", p[0], p[1]);
    unsigned char der[80];
    size_t dl = sizeof der;
    assert_int_equal(EVP_DigestSignInit(md, NULL, EVP_sha256(), NULL, pk), 1);
    assert_int_equal(EVP_DigestSign(md, der, &dl, (unsigned char *)input, in_len - 1), 1);
    EVP_MD_CTX_free(md);
    char *d64 = b64url(der, dl);
    assert_status(vt(join3(p[0], p[1], d64)), TH_JWT_SIGNATURE);
    free(d64);
    free(input);
    EVP_PKEY_free(pk);
    free3(q);
    free(other);
    free(sig);
    free3(p);
    free(t);
}

/* th_jwt_cache_key of a NUL-terminated token, and whether two tokens have the same key. */
static void cache_key(const char *t, unsigned char out[32])
{
    th_jwt_cache_key(t, strlen(t), out);
}

static bool same_key(const char *a, const char *b)
{
    unsigned char ka[32], kb[32];
    cache_key(a, ka);
    cache_key(b, kb);
    return memcmp(ka, kb, 32) == 0;
}

/* The SHA-256 of the token's text, with OpenSSL's own one-shot digest. */
static bool key_is_text_hash(const char *t)
{
    unsigned char k[32], d[32];
    unsigned int dl = 0;
    cache_key(t, k);
    assert_int_equal(EVP_Digest(t, strlen(t), d, &dl, EVP_sha256(), NULL), 1);
    return dl == 32 && memcmp(k, d, 32) == 0;
}

static void test_cache_key_es256_twins(void **state)
{
    (void)state;
    /*
     * Both spellings of an ES256 signature, (r, s) and (r, n - s), verify (test_es256_bad_values),
     * so they must be one token for the verified-token cache: one cache key. The key of the
     * low-S spelling is the hash of its text, as for any other token. Signatures are drawn until
     * both a low-S and a high-S one from the signer have been seen (about half are high-S).
     */
    EVP_PKEY *pk = ec_pkey(F.ec_priv);
    json_t *c = base();
    char *payload = json_dumps(c, JSON_COMPACT);
    json_decref(c);
    char *h = b64url_str("{\"alg\":\"ES256\",\"kid\":\"ec-1\"}");
    char *p = b64url_str(payload);
    size_t n = strlen(h) + strlen(p) + 2;
    char *input = malloc(n);
    assert_non_null(input);
    snprintf(input, n, "%s.%s", h, p);
    bool seen[2] = {false, false}; /* signed low-S, signed high-S */
    unsigned char key0[32];
    for (int tries = 0; tries < 200 && !(seen[0] && seen[1]); tries++) {
        unsigned char rs[64], twin[64];
        es256_sign(pk, input, rs);
        memcpy(twin, rs, 32);
        p256_negate(rs + 32, twin + 32);
        bool high = memcmp(rs + 32, twin + 32, 32) > 0;
        seen[high] = true;
        char *t = es256_token(h, p, rs), *u = es256_token(h, p, twin);
        assert_status(vt(strdup(t)), TH_JWT_OK);
        assert_status(vt(strdup(u)), TH_JWT_OK);
        if (!same_key(t, u))
            fail_msg("the %s-S signature and its twin have different cache keys",
                     high ? "high" : "low");
        assert_true(key_is_text_hash(high ? u : t));
        assert_false(key_is_text_hash(high ? t : u));
        /* every signature of the same content is a new token (ECDSA is randomised): its own key */
        unsigned char k[32];
        cache_key(t, k);
        if (tries == 0)
            memcpy(key0, k, 32);
        else
            assert_memory_not_equal(k, key0, 32);
        /* the twin under another header or payload is not the same token */
        char *h2 = b64url_str("{\"alg\":\"ES256\",\"kid\":\"ec-2\"}");
        char *o = es256_token(h2, p, twin);
        assert_false(same_key(t, o));
        free(o);
        free(h2);
        free(t);
        free(u);
    }
    assert_true(seen[0] && seen[1]);
    EVP_PKEY_free(pk);
    free(input);
    free(p);
    free(h);
    free(payload);
}

static void test_cache_key_other_spellings(void **state)
{
    (void)state;
    /* RS256 (Okta's): the hash of the text, and a changed character is another key */
    char *t = mint(F.rsa1_priv, base());
    assert_true(key_is_text_hash(t));
    char *u = strdup(t);
    assert_non_null(u);
    u[strlen(u) - 1] = u[strlen(u) - 1] == 'A' ? 'B' : 'A';
    assert_false(same_key(t, u));
    free(u);
    free(t);
    /* ES256 R || S whose S is not below n (no signature at all: OpenSSL refuses it), with and
     * without a high-S twin's help: left as they are */
    t = mint(F.ec_priv, base());
    char *p[3];
    size_t n;
    unsigned char *sig = split_sig(t, p, &n, 64);
    unsigned char rs[64], ones[32];
    memset(ones, 0xff, sizeof ones);
    memcpy(rs, sig, 32);
    const unsigned char *odd[] = {P256_N, ones};
    for (size_t i = 0; i < TH_ARRAY_LEN(odd); i++) {
        memcpy(rs + 32, odd[i], 32);
        char *o = es256_token(p[0], p[1], rs);
        assert_true(key_is_text_hash(o));
        assert_status(vt(strdup(o)), TH_JWT_SIGNATURE);
        free(o);
    }
    memset(rs + 32, 0, 32); /* s = 0 */
    char *z = es256_token(p[0], p[1], rs);
    assert_true(key_is_text_hash(z));
    free(z);
    /* 86 characters that are not canonical base64url (trailing bits set): not decoded, the text
     * is the key */
    char *s64 = b64url(sig, 64);
    assert_int_equal(strlen(s64), 86);
    s64[85] = s64[85] == 'B' ? 'C' : 'B'; /* 64 bytes leave 4 unused bits in the last char */
    char *bad = join3(p[0], p[1], s64);
    assert_true(key_is_text_hash(bad));
    free(bad);
    free(s64);
    /* no dot at all, a short or empty last part; 85 or 87 characters of a high-S signature's
     * spelling (the twin's base64url with one character dropped or added) */
    const char *shapes[] = {"", "abc", "a.b.", "a.b.c"};
    for (size_t i = 0; i < TH_ARRAY_LEN(shapes); i++)
        assert_true(key_is_text_hash(shapes[i]));
    memcpy(rs, sig, 32);
    p256_negate(sig + 32, rs + 32);
    char *twin = b64url(rs, 64);
    char longer[88], shorter[86];
    snprintf(longer, sizeof longer, "%sA", twin);
    snprintf(shorter, sizeof shorter, "%.85s", twin);
    char *l = join3(p[0], p[1], longer), *sh = join3(p[0], p[1], shorter);
    assert_true(key_is_text_hash(l));
    assert_true(key_is_text_hash(sh));
    free(sh);
    free(l);
    free(twin);
    free(sig);
    free3(p);
    free(t);
}

static void test_jwks_covers(void **state)
{
    (void)state;
    /* a refresh that keeps every key (or adds some) covers the old set; one that drops or
     * replaces a key does not */
    assert_true(th_jwks_covers(F.all, F.all));
    assert_true(th_jwks_covers(F.all, F.one));
    assert_false(th_jwks_covers(F.one, F.all));
    assert_true(th_jwks_covers(F.one, NULL));
    assert_false(th_jwks_covers(NULL, F.one));
    /* the same keys parsed again, in another order: still covered */
    struct th_jwks *again = parse_keys(
        json_pack("[o,o,o]", first_key(F.ec_jwks), first_key(F.rsa2_jwks), first_key(F.rsa1_jwks)),
        algs, 2);
    assert_true(th_jwks_covers(again, F.all));
    assert_true(th_jwks_covers(F.all, again));
    th_jwks_free(again);
    /* rsa-1's kid on rsa-2's key: the key was replaced */
    json_t *k2 = first_key(F.rsa2_jwks);
    json_object_set_new(k2, "kid", json_string("rsa-1"));
    struct th_jwks *swapped = parse_keys(json_pack("[o]", k2), algs, 2);
    assert_false(th_jwks_covers(swapped, F.one));
    th_jwks_free(swapped);
    /* the same key without its kid, and a kid-less key with one */
    assert_false(th_jwks_covers(F.one_nokid, F.one));
    assert_false(th_jwks_covers(F.one, F.one_nokid));
    assert_true(th_jwks_covers(F.one_nokid, F.one_nokid));
}

static void test_same_kid_other_key(void **state)
{
    (void)state;
    /* a fresh EC key pair under the set's EC kid: the set's key decides (RS256: rsa-2's key
     * under rsa-1's kid, test_kid_selects_the_key) */
    char *priv = NULL, *jwks = NULL;
    assert_int_equal(th_jwt_keygen("ES256", "ec-1", &priv, &jwks), TH_E_OK);
    char *t = mint(priv, base());
    assert_status(verify(t), TH_JWT_SIGNATURE);
    /* and against its own key set, accepted */
    struct th_jwks *own = parse_keys(json_pack("[o]", first_key(jwks)), algs, 2);
    assert_status(verify_with(t, own, &POLICY), TH_JWT_OK);
    th_jwks_free(own);
    free(t);
    free(priv);
    free(jwks);
}

static void test_rs256_signature_values(void **state)
{
    (void)state;
    char *t = mint(F.rsa1_priv, base());
    char *p[3];
    size_t n;
    unsigned char *sig = split_sig(t, p, &n, 256);
    /* the same integer with a zero byte in front: one signature, one spelling */
    unsigned char *wide = calloc(1, n + 1);
    assert_non_null(wide);
    memcpy(wide + 1, sig, n);
    char *s64 = b64url(wide, n + 1);
    assert_status(vt(join3(p[0], p[1], s64)), TH_JWT_SIGNATURE);
    free(s64);
    /* a value at or above the modulus, and zero */
    memset(wide, 0xff, n);
    s64 = b64url(wide, n);
    assert_status(vt(join3(p[0], p[1], s64)), TH_JWT_SIGNATURE);
    free(s64);
    memset(wide, 0, n);
    s64 = b64url(wide, n);
    assert_status(vt(join3(p[0], p[1], s64)), TH_JWT_SIGNATURE);
    free(s64);
    /* every bit of the last byte, one at a time */
    for (int b = 0; b < 8; b++) {
        sig[n - 1] ^= (unsigned char)(1u << b);
        s64 = b64url(sig, n);
        assert_status(vt(join3(p[0], p[1], s64)), TH_JWT_SIGNATURE);
        free(s64);
        sig[n - 1] ^= (unsigned char)(1u << b);
    }
    /* the signature of rsa-2 under rsa-1's kid, and rsa-1's signature of another token */
    char *t2 = mint(F.rsa2_priv, base());
    char *q[3];
    split3(t2, q);
    assert_status(vt(join3(p[0], p[1], q[2])), TH_JWT_SIGNATURE);
    char *t3 = mint(F.rsa1_priv, with(base(), "jti", json_string("AT.other")));
    char *r[3];
    split3(t3, r);
    assert_status(vt(join3(p[0], p[1], r[2])), TH_JWT_SIGNATURE);
    free3(r);
    free(t3);
    free3(q);
    free(t2);
    free(wide);
    free(sig);
    free3(p);
    free(t);
}

/*
 * The public half of a 3072-bit RSA key (kid "rsa-3072") and a token it signed, base() claims
 * valid at NOW, both made once with cjose and th_jwt_mint (private half not kept: generating a
 * 3072-bit key here would take most of a minute under valgrind).
 */
static const char RSA3072_N[] =
    "saMiMNHNGYkJRIPKV5BRa2oManxdfblJXp367lS5NDUlh4HlkDO1-XsD7GzpFZH5vUYDe7x1niGvTppxVsTzKyOwh6"
    "acCzxAD5loTaKzGErFmQ8JaRc-3sZ9fmPHNMtQtm3MRThm07zxN8y5UxEykzkPUxBuc3mDseUl9UZFyxUXJF25vImy"
    "PqAt9CBX1r9kNFkCimgYDVs7LgTC54B5JgXgsPDiGUZMgWWlezZuBnI7tKrBdG1IfFf6g9ep3jKvA6RpCMWpWJUeDJ"
    "7MiAUXgxNdmZXSDfW1HQdBsR2bYPDQaocY12V6fqfb0zmJVZUrhdaOOmQCJpefZ8UIxjwRIiBvNiBP4wpdprI8ioFh"
    "R-hbYSjTO_vsg3dioqcnXqYCez68HD6XnDS9Wisay6_zGYok-O-BlwDxHnE2hviW5tJ8lCGR8JIvgZTMHIAP5uRJTJ"
    "3EU0XQwhg6n3gb2WkdtgyRH-soYWGdBzg01amYmA-PII1BvlF44F_jujNHDVG1";
static const char RSA3072_TOKEN[] =
    "eyJhbGciOiJSUzI1NiIsImtpZCI6InJzYS0zMDcyIiwidHlwIjoiSldUIn0.eyJ2ZXIiOjEsImp0aSI6IkFULnRlc3"
    "QiLCJpc3MiOiJodHRwczovL2V4YW1wbGUub2t0YS5jb20vb2F1dGgyL2RlZmF1bHQiLCJhdWQiOiJhcGk6Ly9kZWZh"
    "dWx0IiwiaWF0IjoxNzY3MjI1NTQwLCJleHAiOjE3NjcyMjkyMDAsImNpZCI6IjBvYS1ob29rIiwic3ViIjoiYWxpY2"
    "VAZXhhbXBsZS5jb20iLCJzY3AiOlsib2t0YS50ZWxlcGhvbnkuaG9vayJdfQ.axDbjWtx7prcGOfOpaOxJshZxHVtQ"
    "bYY-bDBocnFeADXpKnaWR-bMwzTIPZiKL-dsD1K3yErSCZr3LeJBmXwh_MvixTDwrTkjXNZa56_Rzur3iDizSftSFc"
    "5yLUCmNauG4fZ_3Pd3hR5tl14HJvrkC7HxDRqDAESEhM6z9Ous-rSRwMYgcACbWB-Xuv2tUA6Lu-vtbmqMjaChhDJW"
    "a9-IvWAJkSnjzvh45UYwM3aROGCUb3_-HSBPzwdu3ezDi5Qr8sHvtGWa8S5kyNXnx6OJmjh0duaLE_bI5F10SdoPaC"
    "Wv9Gn5dqtE4VZtzRa9qwD9lzSojTJVkaQbppTCht-Ek9bxneSuQxUWQ91h-Q0OPSx5x0MGDh5b9a6RJaRhYHO-SNBa"
    "QUK-Elpo9oyrWt_MOJHMAMTeYtgETSuERFPQAY6c00vOE9IL95M54X5q92cOK40s5MRctwxmtdCYQfuIWocAkQ2OZ-"
    "IFK6t6Xx-CXWDTFhbfrIE9c6wFHHUN6uX";

static void test_rsa_3072(void **state)
{
    (void)state;
    /* a longer modulus: its signatures are 384 bytes, and only those verify */
    struct th_jwks *k = parse_keys(json_pack("[{s:s, s:s, s:s, s:s, s:s}]", "kty", "RSA", "kid",
                                             "rsa-3072", "use", "sig", "e", "AQAB", "n", RSA3072_N),
                                   algs, 2);
    assert_int_equal(th_jwks_count(k), 1);
    assert_status(verify_with(RSA3072_TOKEN, k, &POLICY), TH_JWT_OK);
    char *p[3];
    size_t n;
    unsigned char *sig = split_sig(RSA3072_TOKEN, p, &n, 384);
    /* its last 256 bytes (the lower end of RS256), and a 2048-bit key's valid signature */
    char *s64 = b64url(sig + 128, 256);
    char *cut = join3(p[0], p[1], s64);
    assert_status(verify_with(cut, k, &POLICY), TH_JWT_SIGNATURE);
    char *t2 = mint(F.rsa1_priv, base());
    char *q[3];
    split3(t2, q);
    char *mixed = join3(p[0], p[1], q[2]);
    assert_status(verify_with(mixed, k, &POLICY), TH_JWT_SIGNATURE);
    /* one bit flipped in the middle */
    sig[200] ^= 0x10;
    char *f64 = b64url(sig, n);
    char *flipped = join3(p[0], p[1], f64);
    assert_status(verify_with(flipped, k, &POLICY), TH_JWT_SIGNATURE);
    free(flipped);
    free(f64);
    free(mixed);
    free3(q);
    free(t2);
    free(cut);
    free(s64);
    free(sig);
    free3(p);
    th_jwks_free(k);
}

static void test_jwks_key_values(void **state)
{
    (void)state;
    /* RSA: e must be odd and at least 3 (e = 1 would make any value its own signature) */
    json_t *k = first_key(F.rsa1_jwks);
    const char *es[] = {"AQ", "Ag", "AAE", "AA", "Aw", "AQAB", "AQAA"};
    const size_t want[] = {0, 0, 0, 0, 1, 1, 0};
    for (size_t i = 0; i < TH_ARRAY_LEN(es); i++)
        if (count_one(with(json_deep_copy(k), "e", json_string(es[i])), algs, 2) != want[i])
            fail_msg("e = %s: want %zu keys", es[i], want[i]);
    assert_int_equal(count_one(without(json_deep_copy(k), "e"), algs, 2), 0);
    assert_int_equal(count_one(with(json_deep_copy(k), "n", json_integer(1)), algs, 2), 0);
    json_decref(k);

    /* EC: the point must be on P-256; coordinates are 32 bytes, or fewer (zero-extended) */
    k = first_key(F.ec_jwks);
    char *y = strdup(json_string_value(json_object_get(k, "y")));
    assert_non_null(y);
    y[10] = y[10] == 'A' ? 'B' : 'A';
    assert_int_equal(count_one(with(json_deep_copy(k), "y", json_string(y)), algs, 2), 0);
    free(y);
    size_t xl;
    const char *x = json_string_value(json_object_get(k, "x"));
    unsigned char *raw = b64url_dec(x, strlen(x), &xl);
    assert_int_equal(xl, 32);
    unsigned char wide[33] = {0};
    memcpy(wide + 1, raw, 32);
    free(raw);
    char *x33 = b64url(wide, 33); /* the same value in 33 bytes: not a P-256 coordinate */
    assert_int_equal(count_one(with(json_deep_copy(k), "x", json_string(x33)), algs, 2), 0);
    free(x33);
    assert_int_equal(count_one(without(json_deep_copy(k), "y"), algs, 2), 0);
    assert_int_equal(count_one(with(json_deep_copy(k), "x", json_string("")), algs, 2), 0);
    json_decref(k);

    /* a key whose x starts with a zero byte, published without it: accepted, and it verifies */
    for (int tries = 0; tries < 4000; tries++) {
        char *priv = NULL, *jwks = NULL;
        assert_int_equal(th_jwt_keygen("ES256", "ec-short", &priv, &jwks), TH_E_OK);
        json_t *pub = first_key(jwks);
        x = json_string_value(json_object_get(pub, "x"));
        raw = b64url_dec(x, strlen(x), &xl);
        bool lead = raw[0] == 0;
        if (lead) {
            char *x31 = b64url(raw + 1, 31);
            json_object_set_new(pub, "x", json_string(x31));
            free(x31);
            struct th_jwks *set = parse_keys(json_pack("[O]", pub), algs, 2);
            assert_int_equal(th_jwks_count(set), 1);
            char *t = mint(priv, base());
            assert_status(verify_with(t, set, &POLICY), TH_JWT_OK);
            free(t);
            th_jwks_free(set);
        }
        free(raw);
        json_decref(pub);
        free(priv);
        free(jwks);
        if (lead)
            return;
    }
    fail_msg("no key with a leading zero byte in x");
}

/* ---- one key set, several threads ---- */

struct worker {
    char *tokens[4];
    th_jwt_status want[4];
    int bad;
};

static void *verify_worker(void *arg)
{
    struct worker *w = arg;
    for (int round = 0; round < 25; round++)
        for (int i = 0; i < 4; i++) {
            char why[128];
            th_jwt_status s = th_jwt_verify(w->tokens[i], strlen(w->tokens[i]), F.all, &POLICY, NOW,
                                            NULL, why, sizeof why);
            if (s != w->want[i])
                w->bad++;
        }
    return NULL;
}

static void test_concurrent_verify(void **state)
{
    (void)state;
    /* the set and its prepared contexts are shared: four threads, good and bad signatures */
    char *good_rs = mint(F.rsa1_priv, base()), *good_es = mint(F.ec_priv, base());
    char *p[3];
    split3(good_rs, p);
    p[2][7] = p[2][7] == 'A' ? 'B' : 'A';
    char *bad_rs = join3(p[0], p[1], p[2]);
    free3(p);
    split3(good_es, p);
    p[2][7] = p[2][7] == 'A' ? 'B' : 'A';
    char *bad_es = join3(p[0], p[1], p[2]);
    free3(p);
    struct worker w[4];
    pthread_t th[4];
    for (int i = 0; i < 4; i++) {
        w[i] = (struct worker){{good_rs, bad_rs, good_es, bad_es},
                               {TH_JWT_OK, TH_JWT_SIGNATURE, TH_JWT_OK, TH_JWT_SIGNATURE},
                               0};
        assert_int_equal(pthread_create(&th[i], NULL, verify_worker, &w[i]), 0);
    }
    for (int i = 0; i < 4; i++) {
        assert_int_equal(pthread_join(th[i], NULL), 0);
        assert_int_equal(w[i].bad, 0);
    }
    free(bad_es);
    free(bad_rs);
    free(good_es);
    free(good_rs);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_valid_rs256),
        cmocka_unit_test(test_valid_es256),
        cmocka_unit_test(test_kid_selects_the_key),
        cmocka_unit_test(test_audience_array),
        cmocka_unit_test(test_extra_scopes),
        cmocka_unit_test(test_no_kid),
        cmocka_unit_test(test_expiry),
        cmocka_unit_test(test_not_before),
        cmocka_unit_test(test_issued_in_future),
        cmocka_unit_test(test_issuer),
        cmocka_unit_test(test_audience),
        cmocka_unit_test(test_client),
        cmocka_unit_test(test_scope),
        cmocka_unit_test(test_unknown_kid),
        cmocka_unit_test(test_tampered_payload),
        cmocka_unit_test(test_tampered_signature),
        cmocka_unit_test(test_alg_none),
        cmocka_unit_test(test_hs256_key_confusion),
        cmocka_unit_test(test_alg_not_allowed),
        cmocka_unit_test(test_crafted_header),
        cmocka_unit_test(test_payload_not_json),
        cmocka_unit_test(test_claims_json),
        cmocka_unit_test(test_truncated),
        cmocka_unit_test(test_oversize),
        cmocka_unit_test(test_bad_base64url),
        cmocka_unit_test(test_why_never_quotes_the_token),
        cmocka_unit_test(test_jwks_use_and_alg),
        cmocka_unit_test(test_jwks_weak_keys),
        cmocka_unit_test(test_jwks_documents),
        cmocka_unit_test(test_jwks_has_kid),
        cmocka_unit_test(test_status_names),
        cmocka_unit_test(test_keygen_and_mint_errors),
        cmocka_unit_test(test_padded_rsa_modulus),
        cmocka_unit_test(test_es256_sig_length),
        cmocka_unit_test(test_signature_encoding),
        cmocka_unit_test(test_payload_encoding),
        cmocka_unit_test(test_cjose_abort_tokens),
        cmocka_unit_test(test_cjose_abort_keys),
        cmocka_unit_test(test_extreme_times),
        cmocka_unit_test(test_es256_der_encoding),
        cmocka_unit_test(test_es256_bad_values),
        cmocka_unit_test(test_cache_key_es256_twins),
        cmocka_unit_test(test_cache_key_other_spellings),
        cmocka_unit_test(test_jwks_covers),
        cmocka_unit_test(test_same_kid_other_key),
        cmocka_unit_test(test_rs256_signature_values),
        cmocka_unit_test(test_rsa_3072),
        cmocka_unit_test(test_jwks_key_values),
        cmocka_unit_test(test_concurrent_verify),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
