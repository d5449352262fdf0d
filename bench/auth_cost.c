/*
 * bench/auth_cost: what a bearer token costs telehook's authentication, in one thread, against
 * one RSA-2048 verification measured in the same process (scenario f of bench/run).
 *
 * The end-to-end runs of scenario f compare CPU per request between runs, and on a shared 2-core
 * machine that difference moves by tens of microseconds from one pair of runs to the next. Here
 * the three costs are timed in turns, many times, in one thread with nothing else running:
 *
 *   cached  th_auth_check with the token of the previous call (Okta's case: one token an hour);
 *   new     th_auth_check with a token never seen before (valid, signed by the configured key);
 *   rsa     one RSA-2048 PKCS#1 v1.5 verification of a SHA-256 digest (EVP, prepared context):
 *           the floor for checking any new RS256 token.
 *
 * The kinds take turns in chunks of 50 checks; the figures are medians over the chunks. Prints
 * a summary and a line "AUTH_COST {json}".
 *
 *   build-bench/auth_cost [ROUNDS [TOKENS_PER_ROUND]]     (defaults 5 and 1500: 7,500 new tokens)
 */
#include <openssl/evp.h>
#include <openssl/rsa.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>
#include <unistd.h>

#include "auth/auth.h"
#include "auth/jwt.h"

#define ISS "https://bench.example.com/oauth2/default"
#define AUD "api://telehook-bench"

static double now_us(void)
{
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (double)t.tv_sec * 1e6 + (double)t.tv_nsec / 1e3;
}

static const char *lookup(void *ud, const char *name, size_t *len)
{
    *len = ud ? strlen(ud) : 0;
    return strcasecmp(name, "Authorization") == 0 ? ud : NULL;
}

static int cmp_double(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

static double median(double *v, int n)
{
    qsort(v, (size_t)n, sizeof *v, cmp_double);
    return n % 2 ? v[n / 2] : (v[n / 2 - 1] + v[n / 2]) / 2;
}

static void die(const char *what)
{
    fprintf(stderr, "auth_cost: %s\n", what);
    exit(1);
}

/* "Bearer <token>" for a fresh token (jti n). */
static char *mint(const char *priv, long n)
{
    char claims[512], err[256], *tok = NULL;
    long now = (long)time(NULL);
    snprintf(claims, sizeof claims,
             "{\"ver\":1,\"jti\":\"AT.bench-%ld\",\"iss\":\"" ISS "\",\"aud\":\"" AUD "\","
             "\"iat\":%ld,\"exp\":%ld,\"cid\":\"0oabench\",\"scp\":[\"okta.telephony\"],"
             "\"sub\":\"0oabench\"}",
             n, now, now + 3600);
    if (th_jwt_mint(priv, claims, &tok, err, sizeof err) != TH_E_OK)
        die(err);
    size_t len = strlen(tok) + 8;
    char *h = malloc(len);
    if (!h)
        die("out of memory");
    snprintf(h, len, "Bearer %s", tok);
    free(tok);
    return h;
}

int main(int argc, char **argv)
{
    int rounds = argc > 1 ? atoi(argv[1]) : 5;
    int per = argc > 2 ? atoi(argv[2]) : 1500;
    if (rounds < 1 || rounds > 100 || per < 50 || per > 100000 || per % 50)
        die("usage: auth_cost [ROUNDS 1-100 [TOKENS_PER_ROUND 50-100000, a multiple of 50]]");

    char *priv = NULL, *jwks = NULL, dir[] = "/tmp/auth-cost-XXXXXX", path[64], err[256];
    if (th_jwt_keygen("RS256", "bench", &priv, &jwks) != TH_E_OK || !mkdtemp(dir))
        die("cannot make a key");
    snprintf(path, sizeof path, "%s/jwks.json", dir);
    FILE *f = fopen(path, "w");
    if (!f || fputs(jwks, f) < 0 || fclose(f) != 0)
        die("cannot write the key set");
    struct th_config cfg = {0};
    cfg.auth_mode = TH_AUTH_OAUTH2;
    cfg.auth_issuer = (char *)ISS;
    cfg.auth_audience = (char *)AUD;
    cfg.auth_scopes = (char *)"okta.telephony";
    cfg.auth_client_ids = (char *)"0oabench";
    cfg.auth_jwks_url = (char *)"";
    cfg.auth_jwks_file = path;
    cfg.auth_algorithms = (char *)"RS256";
    cfg.auth_clock_skew = 60;
    struct th_auth *auth = NULL;
    if (th_auth_new(&cfg, &auth, err, sizeof err) != TH_E_OK)
        die(err);
    unlink(path);
    rmdir(dir);

    /* The RSA reference: an RSA-2048 key and signature of its own, verified on a prepared context
     * (what OpenSSL's own `speed rsa2048` verify measures). */
    EVP_PKEY *pk = EVP_RSA_gen(2048);
    EVP_MD *md = EVP_MD_fetch(NULL, "SHA256", NULL);
    EVP_PKEY_CTX *sctx = pk ? EVP_PKEY_CTX_new(pk, NULL) : NULL;
    EVP_PKEY_CTX *vctx = pk ? EVP_PKEY_CTX_new(pk, NULL) : NULL;
    unsigned char digest[32] = {1, 2, 3}, sig[512];
    size_t siglen = sizeof sig;
    if (!md || !sctx || !vctx || EVP_PKEY_sign_init(sctx) != 1 ||
        EVP_PKEY_CTX_set_rsa_padding(sctx, RSA_PKCS1_PADDING) != 1 ||
        EVP_PKEY_CTX_set_signature_md(sctx, md) != 1 ||
        EVP_PKEY_sign(sctx, sig, &siglen, digest, sizeof digest) != 1 ||
        EVP_PKEY_verify_init(vctx) != 1 ||
        EVP_PKEY_CTX_set_rsa_padding(vctx, RSA_PKCS1_PADDING) != 1 ||
        EVP_PKEY_CTX_set_signature_md(vctx, md) != 1)
        die("cannot set up the RSA reference");

    fprintf(stderr, "auth_cost: minting %d tokens\n", rounds * per + 1);
    char *hot = mint(priv, 0);
    char **fresh = malloc((size_t)rounds * (size_t)per * sizeof *fresh);
    if (!fresh)
        die("out of memory");
    for (long i = 0; i < (long)rounds * per; i++)
        fresh[i] = mint(priv, i + 1);

    const char *why = NULL;
    if (th_auth_check(auth, lookup, hot, &why) != TH_E_OK) /* verified once, then cached */
        die(why);
    /* In chunks of CHUNK checks of each kind, in turns: a neighbour's burst on a shared machine
     * then falls on one chunk of each kind alike, and the medians of the per-chunk figures drop
     * it. */
    enum { CHUNK = 50 };
    int chunks = rounds * per / CHUNK;
    double *cached = calloc((size_t)chunks, sizeof(double));
    double *fresh_us = calloc((size_t)chunks, sizeof(double));
    double *rsa = calloc((size_t)chunks, sizeof(double));
    double *extra = calloc((size_t)chunks, sizeof(double));
    double *ratio = calloc((size_t)chunks, sizeof(double));
    if (!cached || !fresh_us || !rsa || !extra || !ratio)
        die("out of memory");
    for (int c = 0; c < chunks; c++) {
        double t0 = now_us();
        for (int i = 0; i < CHUNK; i++)
            if (th_auth_check(auth, lookup, hot, &why) != TH_E_OK)
                die(why);
        double t1 = now_us();
        for (int i = 0; i < CHUNK; i++)
            if (th_auth_check(auth, lookup, fresh[(long)c * CHUNK + i], &why) != TH_E_OK)
                die(why);
        double t2 = now_us();
        for (int i = 0; i < CHUNK; i++)
            if (EVP_PKEY_verify(vctx, sig, siglen, digest, sizeof digest) != 1)
                die("the RSA reference does not verify");
        double t3 = now_us();
        cached[c] = (t1 - t0) / CHUNK;
        fresh_us[c] = (t2 - t1) / CHUNK;
        rsa[c] = (t3 - t2) / CHUNK;
        extra[c] = fresh_us[c] - cached[c];
        ratio[c] = extra[c] / rsa[c];
    }
    struct th_auth_stats st;
    th_auth_stats(auth, &st);
    double mc = median(cached, chunks), mf = median(fresh_us, chunks), mr = median(rsa, chunks),
           me = median(extra, chunks), mx = median(ratio, chunks);
    printf("auth_cost: %d chunks of %d checks of each kind; medians: cached %.2f us, new %.2f us, "
           "rsa-2048 verify %.2f us; a new token costs %.2f us more (%.2f x rsa)\n",
           chunks, CHUNK, mc, mf, mr, me, mx);
    printf("AUTH_COST {\"chunks\":%d,\"per_chunk\":%d,\"cached_us\":%.2f,\"new_us\":%.2f,"
           "\"rsa_us\":%.2f,\"extra_us\":%.2f,\"extra_per_rsa\":%.3f,\"verified\":%llu,"
           "\"cache_hits\":%llu}\n",
           chunks, CHUNK, mc, mf, mr, me, mx, (unsigned long long)st.verified,
           (unsigned long long)st.cache_hits);
    /* every check accounted for: each new token verified once; the hot one verified once, then
     * a cache hit (again verified only when a new token evicted it from its slot) */
    uint64_t n = (uint64_t)rounds * (uint64_t)per;
    int ok =
        st.verified + st.cache_hits == 2 * n + 1 && st.verified > n && st.cache_hits >= n - n / 100;
    for (long i = 0; i < (long)rounds * per; i++)
        free(fresh[i]);
    free(fresh);
    free(hot);
    free(cached);
    free(fresh_us);
    free(rsa);
    free(extra);
    free(ratio);
    EVP_PKEY_CTX_free(sctx);
    EVP_PKEY_CTX_free(vctx);
    EVP_MD_free(md);
    EVP_PKEY_free(pk);
    th_auth_free(auth);
    free(priv);
    free(jwks);
    if (!ok)
        die("unexpected verification count");
    return 0;
}
