#include "auth/jwt.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cjose/cjose.h>
#include <jansson.h>
#include <openssl/rand.h>

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

struct key {
    char *kid; /* NULL when the JWK has none */
    enum kalg alg;
    cjose_jwk_t *jwk;
};

struct th_jwks {
    struct key *k;
    size_t n;
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
        cjose_jwk_release(k->k[i].jwk);
    }
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

/* Strict base64url (RFC 4648 §5, no padding) into out; false on any other character. */
static bool b64url_decode(const char *in, size_t len, unsigned char *out, size_t cap,
                          size_t *outlen)
{
    static signed char map[256];
    static bool init;
    if (!init) { /* idempotent: racing threads write the same values */
        memset(map, -1, sizeof map);
        const char *a = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
        for (int i = 0; i < 64; i++)
            map[(unsigned char)a[i]] = (signed char)i;
        init = true;
    }
    if (len % 4 == 1)
        return false;
    size_t o = 0;
    unsigned acc = 0;
    int bits = 0;
    for (size_t i = 0; i < len; i++) {
        int v = map[(unsigned char)in[i]];
        if (v < 0)
            return false;
        acc = (acc << 6) | (unsigned)v;
        bits += 6;
        if (bits >= 8) {
            bits -= 8;
            if (o == cap)
                return false;
            out[o++] = (unsigned char)(acc >> bits);
            acc &= (1u << bits) - 1;
        }
    }
    if (acc != 0) /* non-canonical trailing bits */
        return false;
    *outlen = o;
    return true;
}

/* Significant bits of a big-endian unsigned integer in base64url (the RSA modulus). */
static size_t b64url_bits(const char *s)
{
    unsigned char raw[1024];
    size_t n;
    if (!b64url_decode(s, strlen(s), raw, sizeof raw, &n))
        return 0;
    size_t i = 0;
    while (i < n && raw[i] == 0) /* leading zero bytes do not make a key longer */
        i++;
    if (i == n)
        return 0;
    size_t bits = (n - i) * 8;
    for (unsigned char top = raw[i]; !(top & 0x80); top <<= 1)
        bits--;
    return bits;
}

/* Strict base64url check of len characters; *decoded receives the byte length. */
static bool b64url_valid(const char *in, size_t len, size_t *decoded)
{
    unsigned char scratch[TH_JWT_MAX_LEN];
    return b64url_decode(in, len, scratch, sizeof scratch, decoded);
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
    if (!k || (cap && !(k->k = calloc(cap, sizeof *k->k)))) {
        free(k);
        json_decref(doc);
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
        enum kalg a;
        if (strcmp(kty, "RSA") == 0 && allowed("RS256", algs, nalgs) &&
            (!kalg || strcmp(kalg, "RS256") == 0)) {
            const char *n = json_string_value(json_object_get(jk, "n"));
            if (!n || b64url_bits(n) < 2048) /* under 2048 bits: refused */
                continue;
            a = K_RS256;
        } else if (strcmp(kty, "EC") == 0 && allowed("ES256", algs, nalgs) &&
                   (!kalg || strcmp(kalg, "ES256") == 0)) {
            const char *crv = json_string_value(json_object_get(jk, "crv"));
            if (!crv || strcmp(crv, "P-256") != 0)
                continue;
            a = K_ES256;
        } else {
            continue;
        }
        /* Only the public members reach cjose: a JWKS that leaks "d" is not our business. */
        json_t *pub = json_object();
        const char *members[] = {"kty", "kid", "n", "e", "crv", "x", "y"};
        bool sane = true;
        for (size_t m = 0; pub && m < TH_ARRAY_LEN(members); m++) {
            json_t *v = json_object_get(jk, members[m]);
            if (!json_is_string(v))
                continue;
            /* cjose asserts (aborts) on some malformed base64: only strict base64url gets in */
            size_t dl;
            if (m >= 2 && m != 4 && !b64url_valid(json_string_value(v), json_string_length(v), &dl))
                sane = false;
            json_object_set(pub, members[m], v);
        }
        if (!sane) {
            json_decref(pub);
            continue;
        }
        char *text = pub ? json_dumps(pub, JSON_COMPACT) : NULL;
        json_decref(pub);
        cjose_err cerr = {0};
        cjose_jwk_t *jwk = text ? cjose_jwk_import(text, strlen(text), &cerr) : NULL;
        free(text);
        if (!jwk)
            continue;
        struct key *dst = &k->k[k->n];
        dst->alg = a;
        dst->jwk = jwk;
        dst->kid = kid ? strdup(kid) : NULL;
        if (kid && !dst->kid) {
            cjose_jwk_release(jwk);
            continue;
        }
        k->n++;
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

static th_jwt_status check_shape(const char *t, size_t len, const char **dot1, const char **dot2,
                                 size_t *siglen, char *why, size_t whylen)
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
    size_t plen;
    if (!b64url_valid(d1 + 1, (size_t)(d2 - d1 - 1), &plen) ||
        !b64url_valid(d2 + 1, (size_t)(t + len - d2 - 1), siglen))
        return fail(TH_JWT_MALFORMED, why, whylen, "payload or signature is not base64url", NULL);
    *dot1 = d1;
    *dot2 = d2;
    return TH_JWT_OK;
}

static th_jwt_status check_header(const char *t, const char *d1, size_t siglen,
                                  const struct th_jwks *keys, const struct th_jwt_policy *pol,
                                  const struct key **key, char *kid_out, size_t kidlen, char *why,
                                  size_t whylen)
{
    unsigned char raw[TH_JWT_MAX_LEN];
    size_t rawlen;
    if (!b64url_decode(t, (size_t)(d1 - t), raw, sizeof raw, &rawlen))
        return fail(TH_JWT_MALFORMED, why, whylen, "header is not base64url", NULL);
    json_t *h = json_loadb((const char *)raw, rawlen, JSON_REJECT_DUPLICATES, NULL);
    if (!json_is_object(h)) {
        json_decref(h);
        return fail(TH_JWT_MALFORMED, why, whylen, "header is not a JSON object", NULL);
    }
    th_jwt_status st = TH_JWT_OK;
    const char *alg = json_string_value(json_object_get(h, "alg"));
    json_t *jkid = json_object_get(h, "kid");
    const char *kid = json_string_value(jkid);
    char algcopy[16] = "";
    if (alg)
        th_strlcpy(algcopy, alg, sizeof algcopy);
    if (!alg || !allowed(alg, pol->algorithms, pol->nalgorithms))
        st = fail(TH_JWT_ALG, why, whylen, "algorithm not allowed:", alg ? algcopy : "(none)");
    else if (json_object_get(h, "crit"))
        st = fail(TH_JWT_ALG, why, whylen, "critical header extensions are not supported", NULL);
    else if (jkid && !kid)
        st = fail(TH_JWT_MALFORMED, why, whylen, "kid is not a string", NULL);
    /* RFC 7518 §3.4: an ES256 signature is R || S, exactly 64 bytes; an RS256 one is as long
     * as the modulus (2048 bits at least). */
    if (st == TH_JWT_OK && strcmp(alg, "ES256") == 0 && siglen != 64)
        st = fail(TH_JWT_SIGNATURE, why, whylen, "ES256 signature is not 64 bytes", NULL);
    else if (st == TH_JWT_OK && strcmp(alg, "RS256") == 0 && siglen < 256)
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
    json_decref(h);
    return st;
}

static th_jwt_status check_signature(const char *t, size_t len, const struct key *key,
                                     json_t **claims, char *why, size_t whylen)
{
    cjose_err cerr = {0};
    cjose_jws_t *jws = cjose_jws_import(t, len, &cerr);
    if (!jws)
        return fail(TH_JWT_MALFORMED, why, whylen, "not a JWS:", cerr.message);
    th_jwt_status st = TH_JWT_OK;
    uint8_t *plain = NULL;
    size_t plen = 0;
    if (!cjose_jws_verify(jws, key->jwk, &cerr))
        st = fail(TH_JWT_SIGNATURE, why, whylen, "signature does not verify", NULL);
    else if (!cjose_jws_get_plaintext(jws, &plain, &plen, &cerr))
        st = fail(TH_JWT_MALFORMED, why, whylen, "no payload", NULL);
    else if (!(*claims = json_loadb((const char *)plain, plen, JSON_REJECT_DUPLICATES, NULL)) ||
             !json_is_object(*claims))
        st = fail(TH_JWT_CLAIMS, why, whylen, "payload is not a JSON object", NULL);
    cjose_jws_release(jws);
    return st;
}

static th_jwt_status check_issuer(json_t *c, const struct th_jwt_policy *pol, char *why,
                                  size_t whylen)
{
    const char *iss = json_string_value(json_object_get(c, "iss"));
    if (!iss || strcmp(iss, pol->issuer) != 0)
        return fail(TH_JWT_ISSUER, why, whylen, "iss is not the configured issuer", NULL);
    return TH_JWT_OK;
}

static th_jwt_status check_audience(json_t *c, const struct th_jwt_policy *pol, char *why,
                                    size_t whylen)
{
    json_t *aud = json_object_get(c, "aud");
    if (json_is_string(aud) && strcmp(json_string_value(aud), pol->audience) == 0)
        return TH_JWT_OK;
    size_t i;
    json_t *v;
    json_array_foreach(json_is_array(aud) ? aud : NULL, i, v)
    {
        if (json_is_string(v) && strcmp(json_string_value(v), pol->audience) == 0)
            return TH_JWT_OK;
    }
    return fail(TH_JWT_AUDIENCE, why, whylen, "aud does not hold the configured audience", NULL);
}

/*
 * A NumericDate claim: false when present but not a number of seconds between 1970 and 9999
 * (out-of-range reals are undefined behaviour to convert, and huge values would overflow the
 * skew arithmetic: either could turn "far future" into "long past").
 */
static bool numeric(json_t *c, const char *name, bool *present, int64_t *v)
{
    static const double max_date = 253402300799.0; /* 9999-12-31T23:59:59Z */
    json_t *j = json_object_get(c, name);
    *present = j != NULL;
    if (!j)
        return true;
    double d;
    if (json_is_integer(j))
        d = (double)json_integer_value(j);
    else if (json_is_real(j))
        d = json_real_value(j);
    else
        return false;
    if (!(d >= 0 && d <= max_date)) /* also refuses NaN */
        return false;
    *v = json_is_integer(j) ? (int64_t)json_integer_value(j) : (int64_t)d;
    return true;
}

static th_jwt_status check_times(json_t *c, const struct th_jwt_policy *pol, int64_t now,
                                 int64_t *exp_out, char *why, size_t whylen)
{
    bool has_exp, has_nbf, has_iat;
    int64_t exp = 0, nbf = 0, iat = 0;
    if (!numeric(c, "exp", &has_exp, &exp) || !numeric(c, "nbf", &has_nbf, &nbf) ||
        !numeric(c, "iat", &has_iat, &iat))
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

static th_jwt_status check_client(json_t *c, const struct th_jwt_policy *pol, char *why,
                                  size_t whylen)
{
    if (pol->nclient_ids == 0)
        return TH_JWT_OK;
    const char *cid = json_string_value(json_object_get(c, "cid"));
    if (cid && allowed(cid, pol->client_ids, pol->nclient_ids))
        return TH_JWT_OK;
    return fail(TH_JWT_CLIENT, why, whylen, "cid is not an allowed client", NULL);
}

static bool has_scope(json_t *scp, const char *want)
{
    if (json_is_string(scp)) { /* "scope"-style: space-separated */
        const char *s = json_string_value(scp);
        size_t n = strlen(want);
        for (const char *p = s; (p = strstr(p, want)); p += n)
            if ((p == s || p[-1] == ' ') && (p[n] == '\0' || p[n] == ' '))
                return true;
        return false;
    }
    size_t i;
    json_t *v;
    json_array_foreach(scp, i, v)
    {
        if (json_is_string(v) && strcmp(json_string_value(v), want) == 0)
            return true;
    }
    return false;
}

static th_jwt_status check_scopes(json_t *c, const struct th_jwt_policy *pol, char *why,
                                  size_t whylen)
{
    json_t *scp = json_object_get(c, "scp"); /* Okta: an array */
    if (!scp)
        scp = json_object_get(c, "scope"); /* RFC 9068: a string */
    for (size_t i = 0; i < pol->nscopes; i++)
        if (!scp || !has_scope(scp, pol->scopes[i]))
            return fail(TH_JWT_SCOPE, why, whylen, "missing scope", pol->scopes[i]);
    return TH_JWT_OK;
}

th_jwt_status th_jwt_verify(const char *token, size_t len, const struct th_jwks *keys,
                            const struct th_jwt_policy *pol, int64_t now,
                            struct th_jwt_claims *claims, char *why, size_t whylen)
{
    const char *d1, *d2;
    const struct key *key = NULL;
    json_t *c = NULL;
    struct th_jwt_claims tmp;
    struct th_jwt_claims *out = claims ? claims : &tmp;
    memset(out, 0, sizeof *out);
    why[0] = '\0';
    size_t siglen = 0;
    th_jwt_status st = check_shape(token, len, &d1, &d2, &siglen, why, whylen);
    if (st == TH_JWT_OK)
        st = check_header(token, d1, siglen, keys, pol, &key, out->kid, sizeof out->kid, why,
                          whylen);
    if (st == TH_JWT_OK)
        st = check_signature(token, len, key, &c, why, whylen);
    if (st == TH_JWT_OK)
        st = check_issuer(c, pol, why, whylen);
    if (st == TH_JWT_OK)
        st = check_audience(c, pol, why, whylen);
    if (st == TH_JWT_OK)
        st = check_times(c, pol, now, &out->exp, why, whylen);
    if (st == TH_JWT_OK)
        st = check_client(c, pol, why, whylen);
    if (st == TH_JWT_OK)
        st = check_scopes(c, pol, why, whylen);
    if (st == TH_JWT_OK) {
        const char *cid = json_string_value(json_object_get(c, "cid"));
        const char *sub = json_string_value(json_object_get(c, "sub"));
        th_strlcpy(out->cid, cid ? cid : "", sizeof out->cid);
        th_strlcpy(out->sub, sub ? sub : "", sizeof out->sub);
    }
    json_decref(c);
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
