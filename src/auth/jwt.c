#include "auth/jwt.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cjose/cjose.h> /* developer tooling only: key generation and minting */
#include <jansson.h>
#include <openssl/bn.h>
#include <openssl/core_names.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/param_build.h>
#include <openssl/rsa.h>

#include "auth/jwt_json.h"
#include "common/hmac.h"
#include "common/util.h"

static const char *const status_names[] = {
    [TH_JWT_OK] = "ok",
    [TH_JWT_TOO_LARGE] = "too_large",
    [TH_JWT_MALFORMED] = "malformed",
    [TH_JWT_ALG] = "algorithm_not_allowed",
    [TH_JWT_UNKNOWN_KID] = "unknown_kid",
    [TH_JWT_SIGNATURE] = "bad_signature",
    [TH_JWT_CLAIMS] = "bad_claims",
    [TH_JWT_ISSUER] = "wrong_issuer",
    [TH_JWT_AUDIENCE] = "wrong_audience",
    [TH_JWT_EXPIRED] = "expired",
    [TH_JWT_NOT_YET_VALID] = "not_yet_valid",
    [TH_JWT_IAT_FUTURE] = "issued_in_future",
    [TH_JWT_CLIENT] = "client_not_allowed",
    [TH_JWT_SCOPE] = "missing_scope",
};

const char *th_jwt_status_name(th_jwt_status s)
{
    return (size_t)s < TH_ARRAY_LEN(status_names) && status_names[s] ? status_names[s] : "?";
}

/* ---- keys ---- */

enum kalg { K_RS256, K_ES256 };

/*
 * One verification key, built once as an OpenSSL provider key, with a verification context set up
 * once for it (RS256: PKCS#1 v1.5 with SHA-256; ES256: ECDSA with SHA-256). The set is shared by
 * threads and never modified after th_jwks_parse: each verification works on its own copy of
 * that context (EVP_PKEY_CTX_dup takes it const and only reads it), which skips the algorithm
 * and digest fetches EVP_DigestVerifyInit would repeat on every call.
 */
struct key {
    char *kid; /* NULL when the JWK has none */
    enum kalg alg;
    EVP_PKEY *pkey;
    EVP_PKEY_CTX *verify; /* template: EVP_PKEY_verify_init done, SHA-256 set */
    size_t siglen;        /* RS256: the modulus length in bytes, the only signature length */
};

struct th_jwks {
    struct key *k;
    size_t n;
    EVP_MD *sha256; /* fetched once per set (RS256 and ES256 both hash with SHA-256) */
};

static bool allowed(const char *alg, const char *const *algs, size_t nalgs)
{
    for (size_t i = 0; i < nalgs; i++)
        if (strcmp(algs[i], alg) == 0)
            return true;
    return false;
}

void th_jwks_free(struct th_jwks *k)
{
    if (!k)
        return;
    for (size_t i = 0; i < k->n; i++) {
        free(k->k[i].kid);
        EVP_PKEY_CTX_free(k->k[i].verify);
        EVP_PKEY_free(k->k[i].pkey);
    }
    EVP_MD_free(k->sha256);
    free(k->k);
    free(k);
}

size_t th_jwks_count(const struct th_jwks *k)
{
    return k ? k->n : 0;
}

bool th_jwks_has_kid(const struct th_jwks *k, const char *kid)
{
    for (size_t i = 0; k && i < k->n; i++)
        if (k->k[i].kid && strcmp(k->k[i].kid, kid) == 0)
            return true;
    return false;
}

bool th_jwks_covers(const struct th_jwks *newer, const struct th_jwks *older)
{
    for (size_t i = 0; older && i < older->n; i++) {
        const struct key *o = &older->k[i];
        bool found = false;
        for (size_t j = 0; newer && j < newer->n && !found; j++) {
            const struct key *n = &newer->k[j];
            found = n->alg == o->alg &&
                    (n->kid ? o->kid && strcmp(n->kid, o->kid) == 0 : !o->kid) &&
                    EVP_PKEY_eq(n->pkey, o->pkey) == 1;
        }
        if (!found)
            return false;
    }
    return true;
}

/* The base64url alphabet (RFC 4648 §5): each character's value plus one; 0 for any other byte. */
static const unsigned char b64url_map[256] = {
    ['A'] = 1,  ['B'] = 2,  ['C'] = 3,  ['D'] = 4,  ['E'] = 5,  ['F'] = 6,  ['G'] = 7,  ['H'] = 8,
    ['I'] = 9,  ['J'] = 10, ['K'] = 11, ['L'] = 12, ['M'] = 13, ['N'] = 14, ['O'] = 15, ['P'] = 16,
    ['Q'] = 17, ['R'] = 18, ['S'] = 19, ['T'] = 20, ['U'] = 21, ['V'] = 22, ['W'] = 23, ['X'] = 24,
    ['Y'] = 25, ['Z'] = 26, ['a'] = 27, ['b'] = 28, ['c'] = 29, ['d'] = 30, ['e'] = 31, ['f'] = 32,
    ['g'] = 33, ['h'] = 34, ['i'] = 35, ['j'] = 36, ['k'] = 37, ['l'] = 38, ['m'] = 39, ['n'] = 40,
    ['o'] = 41, ['p'] = 42, ['q'] = 43, ['r'] = 44, ['s'] = 45, ['t'] = 46, ['u'] = 47, ['v'] = 48,
    ['w'] = 49, ['x'] = 50, ['y'] = 51, ['z'] = 52, ['0'] = 53, ['1'] = 54, ['2'] = 55, ['3'] = 56,
    ['4'] = 57, ['5'] = 58, ['6'] = 59, ['7'] = 60, ['8'] = 61, ['9'] = 62, ['-'] = 63, ['_'] = 64,
};

/*
 * Strict base64url (RFC 4648 §5, no padding, canonical trailing bits) into out, four characters
 * at a time; false on any other character, or when more than cap bytes would come out.
 */
static bool b64url_decode(const char *in, size_t len, unsigned char *out, size_t cap,
                          size_t *outlen)
{
    size_t groups = len / 4, rest = len % 4;
    if (rest == 1 || groups * 3 + (rest ? rest - 1 : 0) > cap)
        return false;
    const unsigned char *s = (const unsigned char *)in;
    unsigned bad = 0; /* a map entry of 0 (not in the alphabet) makes v - 1 wrap above 63 */
    for (size_t i = 0; i < groups; i++, s += 4, out += 3) {
        unsigned a = b64url_map[s[0]] - 1u, b = b64url_map[s[1]] - 1u, c = b64url_map[s[2]] - 1u,
                 d = b64url_map[s[3]] - 1u;
        bad |= a | b | c | d;
        unsigned v = (a << 18) | (b << 12) | (c << 6) | d;
        out[0] = (unsigned char)(v >> 16);
        out[1] = (unsigned char)(v >> 8);
        out[2] = (unsigned char)v;
    }
    if (rest) { /* 2 characters: 1 byte and 4 unused bits; 3: 2 bytes and 2 unused bits */
        unsigned a = b64url_map[s[0]] - 1u, b = b64url_map[s[1]] - 1u,
                 c = rest == 3 ? b64url_map[s[2]] - 1u : 0;
        bad |= a | b | c;
        unsigned v = (a << 18) | (b << 12) | (c << 6);
        out[0] = (unsigned char)(v >> 16);
        if (rest == 3)
            out[1] = (unsigned char)(v >> 8);
        if ((rest == 2 ? b & 0xf : c & 0x3) != 0) /* non-canonical trailing bits */
            return false;
    }
    if (bad > 63)
        return false;
    *outlen = groups * 3 + (rest ? rest - 1 : 0);
    return true;
}

/* A JWK member as strict base64url into out (at most cap bytes); false when absent or invalid. */
static bool jwk_bytes(json_t *jk, const char *name, unsigned char *out, size_t cap, size_t *n)
{
    json_t *v = json_object_get(jk, name);
    return json_is_string(v) &&
           b64url_decode(json_string_value(v), json_string_length(v), out, cap, n);
}

/* A public key from parameters: EVP_PKEY_fromdata on the default provider. */
static EVP_PKEY *pkey_from(const char *type, OSSL_PARAM_BLD *bld)
{
    OSSL_PARAM *params = OSSL_PARAM_BLD_to_param(bld);
    EVP_PKEY_CTX *ctx = params ? EVP_PKEY_CTX_new_from_name(NULL, type, NULL) : NULL;
    EVP_PKEY *pk = NULL;
    if (!ctx || EVP_PKEY_fromdata_init(ctx) != 1 ||
        EVP_PKEY_fromdata(ctx, &pk, EVP_PKEY_PUBLIC_KEY, params) != 1)
        pk = NULL;
    EVP_PKEY_CTX_free(ctx);
    OSSL_PARAM_free(params);
    return pk;
}

/* RSA from n and e; NULL (skipped) when under 2048 bits or e is not odd and at least 3. */
static EVP_PKEY *rsa_key(json_t *jk)
{
    unsigned char n[1024], e[1024]; /* moduli up to 8192 bits */
    size_t nl, el;
    if (!jwk_bytes(jk, "n", n, sizeof n, &nl) || !jwk_bytes(jk, "e", e, sizeof e, &el))
        return NULL;
    BIGNUM *bn = BN_bin2bn(n, (int)nl, NULL), *be = BN_bin2bn(e, (int)el, NULL);
    OSSL_PARAM_BLD *bld = OSSL_PARAM_BLD_new();
    EVP_PKEY *pk = NULL;
    /* leading zero bytes do not make a key longer: BN_num_bits counts significant bits */
    if (bn && be && bld && BN_num_bits(bn) >= 2048 && BN_is_odd(be) && BN_num_bits(be) >= 2 &&
        OSSL_PARAM_BLD_push_BN(bld, OSSL_PKEY_PARAM_RSA_N, bn) == 1 &&
        OSSL_PARAM_BLD_push_BN(bld, OSSL_PKEY_PARAM_RSA_E, be) == 1)
        pk = pkey_from("RSA", bld);
    OSSL_PARAM_BLD_free(bld);
    BN_free(be);
    BN_free(bn);
    return pk;
}

/*
 * EC P-256 from x and y (each at most 32 bytes, zero-extended: RFC 7518 wants exactly 32, some
 * issuers drop leading zeros). NULL (skipped) unless the point is on the curve and of its order.
 */
static EVP_PKEY *ec_key(json_t *jk)
{
    unsigned char x[32], y[32], pub[65] = {0x04}; /* uncompressed: 04 || X || Y */
    size_t xl, yl;
    if (!jwk_bytes(jk, "x", x, sizeof x, &xl) || !jwk_bytes(jk, "y", y, sizeof y, &yl))
        return NULL;
    memcpy(pub + 1 + 32 - xl, x, xl);
    memcpy(pub + 1 + 64 - yl, y, yl);
    OSSL_PARAM_BLD *bld = OSSL_PARAM_BLD_new();
    EVP_PKEY *pk = NULL;
    if (bld &&
        OSSL_PARAM_BLD_push_utf8_string(bld, OSSL_PKEY_PARAM_GROUP_NAME, "prime256v1", 0) == 1 &&
        OSSL_PARAM_BLD_push_octet_string(bld, OSSL_PKEY_PARAM_PUB_KEY, pub, sizeof pub) == 1)
        pk = pkey_from("EC", bld);
    OSSL_PARAM_BLD_free(bld);
    EVP_PKEY_CTX *chk = pk ? EVP_PKEY_CTX_new_from_pkey(NULL, pk, NULL) : NULL;
    if (pk && (!chk || EVP_PKEY_public_check(chk) != 1)) {
        EVP_PKEY_free(pk);
        pk = NULL;
    }
    EVP_PKEY_CTX_free(chk);
    return pk;
}

th_err th_jwks_parse(const char *json, size_t len, const char *const *algs, size_t nalgs,
                     struct th_jwks **out, char *err, size_t errlen)
{
    json_error_t jerr;
    json_t *doc = json_loadb(json, len, JSON_REJECT_DUPLICATES, &jerr);
    json_t *keys = json_object_get(doc, "keys");
    if (!json_is_object(doc) || !json_is_array(keys)) {
        snprintf(err, errlen, "not a JWKS (an object with a \"keys\" array)%s%s", doc ? "" : ": ",
                 doc ? "" : jerr.text);
        json_decref(doc);
        return TH_E_JSON;
    }
    struct th_jwks *k = calloc(1, sizeof *k);
    size_t cap = json_array_size(keys);
    if (!k || (cap && !(k->k = calloc(cap, sizeof *k->k))) ||
        !(k->sha256 = EVP_MD_fetch(NULL, "SHA256", NULL))) {
        th_jwks_free(k);
        json_decref(doc);
        snprintf(err, errlen, "out of memory (or no SHA-256 in OpenSSL)");
        return TH_E_NOMEM;
    }
    size_t i;
    json_t *jk;
    json_array_foreach(keys, i, jk)
    {
        const char *kty = json_string_value(json_object_get(jk, "kty"));
        const char *use = json_string_value(json_object_get(jk, "use"));
        const char *kalg = json_string_value(json_object_get(jk, "alg"));
        const char *kid = json_string_value(json_object_get(jk, "kid"));
        if (!json_is_object(jk) || !kty || (use && strcmp(use, "sig") != 0))
            continue;
        /* Only the public members are read (a JWKS that leaks "d" is not our business), and
         * every one present must be strict base64url, whichever the key type. */
        static const char *const members[] = {"n", "e", "x", "y"};
        bool sane = true;
        for (size_t m = 0; m < TH_ARRAY_LEN(members); m++) {
            json_t *v = json_object_get(jk, members[m]);
            unsigned char scratch[TH_JWT_MAX_LEN];
            size_t dl;
            if (json_is_string(v) && !b64url_decode(json_string_value(v), json_string_length(v),
                                                    scratch, sizeof scratch, &dl))
                sane = false;
        }
        if (!sane)
            continue;
        enum kalg a;
        EVP_PKEY *pk;
        if (strcmp(kty, "RSA") == 0 && allowed("RS256", algs, nalgs) &&
            (!kalg || strcmp(kalg, "RS256") == 0)) {
            a = K_RS256;
            pk = rsa_key(jk); /* under 2048 bits: refused */
        } else if (strcmp(kty, "EC") == 0 && allowed("ES256", algs, nalgs) &&
                   (!kalg || strcmp(kalg, "ES256") == 0)) {
            const char *crv = json_string_value(json_object_get(jk, "crv"));
            if (!crv || strcmp(crv, "P-256") != 0)
                continue;
            a = K_ES256;
            pk = ec_key(jk);
        } else {
            continue;
        }
        EVP_PKEY_CTX *v = pk ? EVP_PKEY_CTX_new_from_pkey(NULL, pk, NULL) : NULL;
        if (v && (EVP_PKEY_verify_init(v) != 1 ||
                  (a == K_RS256 && EVP_PKEY_CTX_set_rsa_padding(v, RSA_PKCS1_PADDING) != 1) ||
                  EVP_PKEY_CTX_set_signature_md(v, k->sha256) != 1)) {
            EVP_PKEY_CTX_free(v);
            v = NULL;
        }
        char *kidcopy = kid ? strdup(kid) : NULL;
        ERR_clear_error(); /* a refused key leaves nothing on this thread's error queue */
        if (!v || (kid && !kidcopy)) {
            free(kidcopy);
            EVP_PKEY_CTX_free(v);
            EVP_PKEY_free(pk);
            continue;
        }
        k->k[k->n++] = (struct key){
            .kid = kidcopy,
            .alg = a,
            .pkey = pk,
            .verify = v,
            .siglen = a == K_RS256 ? (size_t)EVP_PKEY_get_size(pk) : 64,
        };
    }
    json_decref(doc);
    *out = k;
    return TH_E_OK;
}

/* ---- verification: one small check per rule ---- */

/* Sets why to msg (followed by arg when given) and returns s. */
static th_jwt_status fail(th_jwt_status s, char *why, size_t whylen, const char *msg,
                          const char *arg)
{
    snprintf(why, whylen, "%s%s%.60s", msg, arg ? " " : "", arg ? arg : "");
    return s;
}

/*
 * A token's three parts, each decoded once (strict base64url) into buf, payload and signature
 * first, then the header: TH_JWT_MAX_LEN characters decode to at most 3/4 as many bytes, all
 * three parts together. On the stack: no allocation per token for the decoding.
 */
struct parts {
    const char *dot1, *dot2;
    const unsigned char *payload, *sig;
    size_t plen, siglen;
    unsigned char buf[TH_JWT_MAX_LEN / 4 * 3];
};

static th_jwt_status check_shape(const char *t, size_t len, struct parts *p, char *why,
                                 size_t whylen)
{
    if (len > TH_JWT_MAX_LEN)
        return fail(TH_JWT_TOO_LARGE, why, whylen, "token longer than 8 KiB", NULL);
    const char *d1 = memchr(t, '.', len);
    const char *d2 = d1 ? memchr(d1 + 1, '.', len - (size_t)(d1 + 1 - t)) : NULL;
    if (!d1 || !d2 || memchr(d2 + 1, '.', len - (size_t)(d2 + 1 - t)) || d1 == t || d2 == d1 + 1 ||
        d2 + 1 == t + len)
        return fail(TH_JWT_MALFORMED, why, whylen, "not a compact JWS (three non-empty parts)",
                    NULL);
    /* Every part is strict base64url (no padding, canonical trailing bits): one token, one
     * spelling — a respelled token must not slip past a cache or a deny-list. */
    p->dot1 = d1;
    p->dot2 = d2;
    p->payload = p->buf;
    if (!b64url_decode(d1 + 1, (size_t)(d2 - d1 - 1), p->buf, sizeof p->buf, &p->plen))
        return fail(TH_JWT_MALFORMED, why, whylen, "payload or signature is not base64url", NULL);
    p->sig = p->buf + p->plen;
    if (!b64url_decode(d2 + 1, (size_t)(t + len - d2 - 1), p->buf + p->plen,
                       sizeof p->buf - p->plen, &p->siglen))
        return fail(TH_JWT_MALFORMED, why, whylen, "payload or signature is not base64url", NULL);
    return TH_JWT_OK;
}

static th_jwt_status check_header(const char *t, struct parts *p, const struct th_jwks *keys,
                                  const struct th_jwt_policy *pol, const struct key **key,
                                  char *kid_out, size_t kidlen, char *why, size_t whylen)
{
    unsigned char *raw = p->buf + p->plen + p->siglen;
    size_t rawlen;
    if (!b64url_decode(t, (size_t)(p->dot1 - t), raw, sizeof p->buf - p->plen - p->siglen, &rawlen))
        return fail(TH_JWT_MALFORMED, why, whylen, "header is not base64url", NULL);
    if (!th_jwt_json_parse(raw, rawlen))
        return fail(TH_JWT_MALFORMED, why, whylen, "header is not a JSON object", NULL);
    th_jwt_status st = TH_JWT_OK;
    struct th_jval jalg = th_jwt_json_get("alg"), jkid = th_jwt_json_get("kid");
    const char *alg = jalg.type == TH_J_STRING ? jalg.s : NULL;
    const char *kid = jkid.type == TH_J_STRING ? jkid.s : NULL;
    char algcopy[16] = "";
    if (alg)
        th_strlcpy(algcopy, alg, sizeof algcopy);
    if (!alg || !allowed(alg, pol->algorithms, pol->nalgorithms))
        st = fail(TH_JWT_ALG, why, whylen, "algorithm not allowed:", alg ? algcopy : "(none)");
    else if (th_jwt_json_get("crit").type != TH_J_ABSENT)
        st = fail(TH_JWT_ALG, why, whylen, "critical header extensions are not supported", NULL);
    else if (jkid.type != TH_J_ABSENT && !kid)
        st = fail(TH_JWT_MALFORMED, why, whylen, "kid is not a string", NULL);
    /* RFC 7518 §3.4: an ES256 signature is R || S, exactly 64 bytes; an RS256 one is as long
     * as the modulus (2048 bits at least). */
    if (st == TH_JWT_OK && strcmp(alg, "ES256") == 0 && p->siglen != 64)
        st = fail(TH_JWT_SIGNATURE, why, whylen, "ES256 signature is not 64 bytes", NULL);
    else if (st == TH_JWT_OK && strcmp(alg, "RS256") == 0 && p->siglen < 256)
        st = fail(TH_JWT_SIGNATURE, why, whylen, "RS256 signature shorter than 2048 bits", NULL);
    if (st == TH_JWT_OK) {
        enum kalg want = strcmp(alg, "ES256") == 0 ? K_ES256 : K_RS256;
        const struct key *found = NULL;
        size_t usable = 0;
        for (size_t i = 0; keys && i < keys->n; i++) {
            if (keys->k[i].alg != want)
                continue;
            usable++;
            if (kid && keys->k[i].kid && strcmp(keys->k[i].kid, kid) == 0)
                found = &keys->k[i];
            else if (!kid)
                found = &keys->k[i];
        }
        if (kid) {
            th_strlcpy(kid_out, kid, kidlen);
            if (!found)
                st = fail(TH_JWT_UNKNOWN_KID, why, whylen, "no key with this kid", NULL);
        } else if (usable != 1) {
            st =
                fail(TH_JWT_UNKNOWN_KID, why, whylen,
                     "token has no kid and the key set does not have exactly one usable key", NULL);
        }
        *key = found;
    }
    return st;
}

/* One unsigned big-endian integer as a minimal DER INTEGER at out; its encoded length. */
static size_t der_uint(unsigned char *out, const unsigned char *v, size_t n)
{
    while (n > 1 && v[0] == 0) {
        v++;
        n--;
    }
    size_t pad = v[0] & 0x80 ? 1 : 0; /* a set top bit would read as negative */
    out[0] = 0x02;
    out[1] = (unsigned char)(n + pad);
    out[2] = 0;
    memcpy(out + 2 + pad, v, n);
    return 2 + pad + n;
}

/* JOSE's R || S (RFC 7518 §3.4) as the DER ECDSA-Sig-Value OpenSSL verifies (RFC 3279). */
static size_t ecdsa_der(const unsigned char rs[64], unsigned char der[72])
{
    size_t n = der_uint(der + 2, rs, 32);
    n += der_uint(der + 2 + n, rs + 32, 32);
    der[0] = 0x30; /* SEQUENCE, at most 70 content bytes: the short length form */
    der[1] = (unsigned char)n;
    return 2 + n;
}

/* The order n of P-256, big-endian. */
static const unsigned char p256_n[32] = {
    0xff, 0xff, 0xff, 0xff, 0x00, 0x00, 0x00, 0x00, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff,
    0xbc, 0xe6, 0xfa, 0xad, 0xa7, 0x17, 0x9e, 0x84, 0xf3, 0xb9, 0xca, 0xc2, 0xfc, 0x63, 0x25, 0x51};

/* n bytes as base64url without padding at out (4 * n / 3 rounded up characters, no NUL). */
static void b64url_encode(const unsigned char *in, size_t n, char *out)
{
    static const char alpha[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    for (size_t i = 0; i < n; i += 3) {
        unsigned v = (unsigned)in[i] << 16 | (i + 1 < n ? (unsigned)in[i + 1] << 8 : 0) |
                     (i + 2 < n ? in[i + 2] : 0);
        *out++ = alpha[v >> 18];
        *out++ = alpha[(v >> 12) & 63];
        if (i + 1 < n)
            *out++ = alpha[(v >> 6) & 63];
        if (i + 2 < n)
            *out++ = alpha[v & 63];
    }
}

/*
 * ECDSA is malleable: when (r, s) verifies, so does (r, n - s), a second spelling of the same
 * token that anyone holding the token can make. RFC 7518 does not ask for low S and issuers
 * signing with OpenSSL do not normalise (half their ES256 signatures are high-S), so refusing
 * high S would refuse half of the good tokens; both spellings verify, as they do elsewhere.
 * What must not depend on the spelling is the token's identity, the verified-token cache's key:
 * it is the SHA-256 of the token's text with an ES256 signature's S replaced by min(S, n - S),
 * so the twin of a cached token is the same entry (nothing else in telehook keys on a token).
 *
 * The rewrite looks at the text only (a final part of 86 characters is an ES256 R || S; RS256
 * signatures are 342 characters or more), before anything is verified. It is sound whatever the
 * header says: a cache entry is made only by a token that verified, the rewrite keeps header
 * and payload, and a signature and its twin verify or fail together under the same header. A
 * lookup of an RS256 token costs a search for its last dot and nothing more.
 */
void th_jwt_cache_key(const char *token, size_t len, unsigned char out[32])
{
    const char *dot = memrchr(token, '.', len);
    unsigned char rs[64], t[32];
    size_t rl;
    if (!dot || token + len - (dot + 1) != 86 || !b64url_decode(dot + 1, 86, rs, 64, &rl)) {
        th_sha256(token, len, out);
        return;
    }
    int borrow = 0; /* t = n - s */
    for (int i = 31; i >= 0; i--) {
        int d = p256_n[i] - rs[32 + i] - borrow;
        borrow = d < 0;
        t[i] = (unsigned char)(d + (borrow ? 256 : 0));
    }
    static const unsigned char zero[32];
    /* s >= n (borrow or t = 0) is no signature at all: left as it is. n is odd: s != n - s. */
    if (borrow || memcmp(t, zero, 32) == 0 || memcmp(rs + 32, t, 32) < 0) {
        th_sha256(token, len, out);
        return;
    }
    memcpy(rs + 32, t, 32);
    char low[86];
    b64url_encode(rs, 64, low);
    struct th_sha256 h;
    th_sha256_init(&h);
    th_sha256_update(&h, token, (size_t)(dot + 1 - token));
    th_sha256_update(&h, low, sizeof low);
    th_sha256_final(&h, out);
}

/* The signature over header_b64 "." payload_b64, on a copy of the key's prepared context. */
static th_jwt_status check_signature(const char *t, const struct parts *p, const struct key *key,
                                     char *why, size_t whylen)
{
    const unsigned char *sig = p->sig;
    size_t siglen = p->siglen;
    unsigned char der[72];
    if (key->alg == K_ES256) {
        siglen = ecdsa_der(sig, der); /* 64 bytes: checked with the header */
        sig = der;
    } else if (siglen != key->siglen) { /* RFC 8017 §8.2.2: exactly the modulus length */
        return fail(TH_JWT_SIGNATURE, why, whylen, "RS256 signature is not as long as the key",
                    NULL);
    }
    unsigned char digest[32]; /* low-level SHA-256: no context allocation or algorithm fetch */
    th_sha256(t, (size_t)(p->dot2 - t), digest);
    EVP_PKEY_CTX *v = EVP_PKEY_CTX_dup(key->verify);
    int ok = v && EVP_PKEY_verify(v, sig, siglen, digest, sizeof digest) == 1;
    EVP_PKEY_CTX_free(v);
    if (ok)
        return TH_JWT_OK;
    ERR_clear_error(); /* a bad signature leaves nothing on this thread's error queue */
    return fail(TH_JWT_SIGNATURE, why, whylen, "signature does not verify", NULL);
}

static th_jwt_status check_payload(const struct parts *p, char *why, size_t whylen)
{
    if (!th_jwt_json_parse(p->payload, p->plen))
        return fail(TH_JWT_CLAIMS, why, whylen, "payload is not a JSON object", NULL);
    return TH_JWT_OK;
}

/* The claims below are members of the payload, the thread's current th_jwt_json document. */

static th_jwt_status check_issuer(const struct th_jwt_policy *pol, char *why, size_t whylen)
{
    struct th_jval iss = th_jwt_json_get("iss");
    if (iss.type != TH_J_STRING || strcmp(iss.s, pol->issuer) != 0)
        return fail(TH_JWT_ISSUER, why, whylen, "iss is not the configured issuer", NULL);
    return TH_JWT_OK;
}

static th_jwt_status check_audience(const struct th_jwt_policy *pol, char *why, size_t whylen)
{
    if (th_jwt_json_has_string("aud", pol->audience)) /* a string, or an array holding it */
        return TH_JWT_OK;
    return fail(TH_JWT_AUDIENCE, why, whylen, "aud does not hold the configured audience", NULL);
}

/*
 * A NumericDate claim: false when present but not a number of seconds between 1970 and 9999
 * (out-of-range reals are undefined behaviour to convert, and huge values would overflow the
 * skew arithmetic: either could turn "far future" into "long past").
 */
static bool numeric(const char *name, bool *present, int64_t *v)
{
    static const double max_date = 253402300799.0; /* 9999-12-31T23:59:59Z */
    struct th_jval j = th_jwt_json_get(name);
    *present = j.type != TH_J_ABSENT;
    if (!*present)
        return true;
    double d;
    if (j.type == TH_J_INTEGER)
        d = (double)j.i;
    else if (j.type == TH_J_REAL)
        d = j.d;
    else
        return false;
    if (!(d >= 0 && d <= max_date)) /* also refuses NaN */
        return false;
    *v = j.type == TH_J_INTEGER ? j.i : (int64_t)d;
    return true;
}

static th_jwt_status check_times(const struct th_jwt_policy *pol, int64_t now, int64_t *exp_out,
                                 char *why, size_t whylen)
{
    bool has_exp, has_nbf, has_iat;
    int64_t exp = 0, nbf = 0, iat = 0;
    if (!numeric("exp", &has_exp, &exp) || !numeric("nbf", &has_nbf, &nbf) ||
        !numeric("iat", &has_iat, &iat))
        return fail(TH_JWT_CLAIMS, why, whylen, "exp, nbf or iat is not a number", NULL);
    int64_t skew = pol->clock_skew_s;
    if (!has_exp || now >= exp + skew)
        return fail(TH_JWT_EXPIRED, why, whylen, has_exp ? "expired" : "no exp", NULL);
    if (has_nbf && now + skew < nbf)
        return fail(TH_JWT_NOT_YET_VALID, why, whylen, "not valid yet (nbf)", NULL);
    if (has_iat && iat > now + skew)
        return fail(TH_JWT_IAT_FUTURE, why, whylen, "issued in the future (iat)", NULL);
    *exp_out = exp;
    return TH_JWT_OK;
}

static th_jwt_status check_client(const struct th_jwt_policy *pol, char *why, size_t whylen)
{
    if (pol->nclient_ids == 0)
        return TH_JWT_OK;
    struct th_jval cid = th_jwt_json_get("cid");
    if (cid.type == TH_J_STRING && allowed(cid.s, pol->client_ids, pol->nclient_ids))
        return TH_JWT_OK;
    return fail(TH_JWT_CLIENT, why, whylen, "cid is not an allowed client", NULL);
}

/* want in the claim name: an array of scopes (Okta's scp), or a space-separated string. */
static bool has_scope(const char *name, struct th_jval scp, const char *want)
{
    if (scp.type == TH_J_STRING) { /* "scope"-style: space-separated */
        size_t n = strlen(want);
        for (const char *p = scp.s; (p = strstr(p, want)); p += n)
            if ((p == scp.s || p[-1] == ' ') && (p[n] == '\0' || p[n] == ' '))
                return true;
        return false;
    }
    return scp.type == TH_J_ARRAY && th_jwt_json_has_string(name, want);
}

static th_jwt_status check_scopes(const struct th_jwt_policy *pol, char *why, size_t whylen)
{
    const char *name = "scp"; /* Okta: an array */
    struct th_jval scp = th_jwt_json_get(name);
    if (scp.type == TH_J_ABSENT)
        scp = th_jwt_json_get(name = "scope"); /* RFC 9068: a string */
    for (size_t i = 0; i < pol->nscopes; i++)
        if (!has_scope(name, scp, pol->scopes[i]))
            return fail(TH_JWT_SCOPE, why, whylen, "missing scope", pol->scopes[i]);
    return TH_JWT_OK;
}

/* A string claim into out ("" when absent or not a string). */
static void copy_claim(const char *name, char *out, size_t outlen)
{
    struct th_jval v = th_jwt_json_get(name);
    th_strlcpy(out, v.type == TH_J_STRING ? v.s : "", outlen);
}

th_jwt_status th_jwt_verify(const char *token, size_t len, const struct th_jwks *keys,
                            const struct th_jwt_policy *pol, int64_t now,
                            struct th_jwt_claims *claims, char *why, size_t whylen)
{
    struct parts p;
    const struct key *key = NULL;
    struct th_jwt_claims tmp;
    struct th_jwt_claims *out = claims ? claims : &tmp;
    memset(out, 0, sizeof *out);
    why[0] = '\0';
    th_jwt_status st = check_shape(token, len, &p, why, whylen);
    if (st == TH_JWT_OK)
        st = check_header(token, &p, keys, pol, &key, out->kid, sizeof out->kid, why, whylen);
    if (st == TH_JWT_OK)
        st = check_signature(token, &p, key, why, whylen);
    if (st == TH_JWT_OK)
        st = check_payload(&p, why, whylen);
    if (st == TH_JWT_OK)
        st = check_issuer(pol, why, whylen);
    if (st == TH_JWT_OK)
        st = check_audience(pol, why, whylen);
    if (st == TH_JWT_OK)
        st = check_times(pol, now, &out->exp, why, whylen);
    if (st == TH_JWT_OK)
        st = check_client(pol, why, whylen);
    if (st == TH_JWT_OK)
        st = check_scopes(pol, why, whylen);
    if (st == TH_JWT_OK) {
        copy_claim("cid", out->cid, sizeof out->cid);
        copy_claim("sub", out->sub, sizeof out->sub);
    }
    return st;
}

/* ---- developer tooling ---- */

th_err th_jwt_keygen(const char *alg, const char *kid, char **priv_jwk, char **jwks)
{
    cjose_err cerr = {0};
    cjose_jwk_t *jwk;
    static const uint8_t e65537[] = {0x01, 0x00, 0x01};
    if (strcmp(alg, "RS256") == 0)
        jwk = cjose_jwk_create_RSA_random(2048, e65537, sizeof e65537, &cerr);
    else if (strcmp(alg, "ES256") == 0)
        jwk = cjose_jwk_create_EC_random(CJOSE_JWK_EC_P_256, &cerr);
    else
        return TH_E_INVAL;
    if (!jwk)
        return TH_E_NOMEM;
    char kidbuf[40];
    if (!kid) {
        if (th_random_id("k-", kidbuf, sizeof kidbuf) != TH_E_OK) {
            cjose_jwk_release(jwk);
            return TH_E_NOMEM;
        }
        kid = kidbuf;
    }
    th_err e = TH_E_NOMEM;
    char *priv = NULL, *pub = NULL;
    json_t *jpriv = NULL, *jpub = NULL, *set = NULL;
    if (!cjose_jwk_set_kid(jwk, kid, strlen(kid), &cerr) ||
        !(priv = cjose_jwk_to_json(jwk, true, &cerr)) ||
        !(pub = cjose_jwk_to_json(jwk, false, &cerr)) || !(jpriv = json_loads(priv, 0, NULL)) ||
        !(jpub = json_loads(pub, 0, NULL)))
        goto out;
    json_object_set_new(jpriv, "alg", json_string(alg));
    json_object_set_new(jpriv, "use", json_string("sig"));
    json_object_set_new(jpub, "alg", json_string(alg));
    json_object_set_new(jpub, "use", json_string("sig"));
    set = json_pack("{s:[O]}", "keys", jpub);
    if (!set)
        goto out;
    *priv_jwk = json_dumps(jpriv, JSON_INDENT(2));
    *jwks = json_dumps(set, JSON_INDENT(2));
    if (*priv_jwk && *jwks) {
        e = TH_E_OK;
    } else {
        free(*priv_jwk);
        free(*jwks);
    }
out:
    json_decref(set);
    json_decref(jpub);
    json_decref(jpriv);
    if (priv) {
        memset(priv, 0, strlen(priv));
        cjose_get_dealloc()(priv);
    }
    if (pub)
        cjose_get_dealloc()(pub);
    cjose_jwk_release(jwk);
    return e;
}

th_err th_jwt_mint(const char *priv_jwk, const char *claims_json, char **token, char *err,
                   size_t errlen)
{
    json_t *jk = json_loads(priv_jwk, 0, NULL);
    const char *alg = json_string_value(json_object_get(jk, "alg"));
    const char *kid = json_string_value(json_object_get(jk, "kid"));
    json_t *claims = json_loads(claims_json, 0, NULL);
    if (!jk || !alg || !json_is_object(claims)) {
        snprintf(err, errlen, "%s",
                 !claims ? "claims are not a JSON object" : "the key is not a JWK with an alg");
        json_decref(jk);
        json_decref(claims);
        return TH_E_INVAL;
    }
    cjose_err cerr = {0};
    th_err e = TH_E_INVAL;
    cjose_jwk_t *jwk = cjose_jwk_import(priv_jwk, strlen(priv_jwk), &cerr);
    cjose_header_t *hdr = cjose_header_new(&cerr);
    char *payload = json_dumps(claims, JSON_COMPACT);
    cjose_jws_t *jws = NULL;
    const char *ser = NULL;
    if (jwk && hdr && payload && cjose_header_set(hdr, CJOSE_HDR_ALG, alg, &cerr) &&
        (!kid || cjose_header_set(hdr, CJOSE_HDR_KID, kid, &cerr)) &&
        cjose_header_set(hdr, "typ", "JWT", &cerr) &&
        (jws = cjose_jws_sign(jwk, hdr, (const uint8_t *)payload, strlen(payload), &cerr)) &&
        cjose_jws_export(jws, &ser, &cerr)) {
        *token = strdup(ser);
        e = *token ? TH_E_OK : TH_E_NOMEM;
    } else {
        snprintf(err, errlen, "cannot sign: %s", cerr.message ? cerr.message : "bad key");
    }
    cjose_jws_release(jws);
    free(payload);
    cjose_header_release(hdr);
    cjose_jwk_release(jwk);
    json_decref(claims);
    json_decref(jk);
    return e;
}
