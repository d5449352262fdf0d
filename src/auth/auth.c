#include "auth/auth.h"

#include <pthread.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>

#include <openssl/crypto.h>

#include "auth/jwt.h"
#include "auth/keys.h"
#include "common/hmac.h"
#include "common/util.h"
#include "obs/log.h"

/* Presented values longer than this are refused before hashing (libmicrohttpd caps headers too). */
#define MAX_PRESENTED 8192
#define MAX_LIST      16
#define CACHE_SLOTS   4096 /* verified tokens remembered; a new token evicts one in its slot */

/*
 * One remembered token: its SHA-256 and expiry, behind a sequence lock. Every bearer request
 * reads a slot (Okta reuses one token for an hour: both loops read the same one), so reads take
 * no lock and write nothing that other cores hold: the sequence is even and unchanged across the
 * copy, or the read counts as a miss. Writers (one per new token) serialise on fill_mu. The
 * fields are atomics read relaxed, the C11 form of a sequence lock (Boehm, "Can seqlocks get
 * along with programming language memory models?", 2012).
 */
struct cached {
    atomic_uint seq;            /* odd while being written */
    atomic_uint_least64_t h[4]; /* the token's identity (th_jwt_cache_key) */
    atomic_int_least64_t exp;   /* unix seconds; 0 = empty */
    atomic_uint_least64_t gen;  /* the key-set generation it was verified against */
};

struct th_auth {
    th_auth_mode mode;
    char header_name[65];
    unsigned char secret_digest[32];
    bool bearer;

    /* oauth2 */
    struct th_keys *keys;
    struct th_jwt_policy policy;
    char *strings; /* storage for the policy's lists */
    const char *scopes[MAX_LIST], *clients[MAX_LIST], *algs[MAX_LIST];
    pthread_mutex_t fill_mu; /* serialises cache writers */
    struct cached *cache;
    atomic_uint_fast64_t verified, hits, refused;
};

/* Splits a space/comma separated list into out (pointers into a copy kept in *store). */
static size_t split(const char *s, char **store, const char **out)
{
    size_t n = 0;
    char *copy = strdup(s ? s : "");
    if (!copy)
        return 0;
    *store = copy;
    for (char *tok = strtok(copy, " ,"); tok && n < MAX_LIST; tok = strtok(NULL, " ,"))
        out[n++] = tok;
    return n;
}

static const char *const bearer_reasons[] = {
    [TH_JWT_OK] = "bearer: ok",
    [TH_JWT_TOO_LARGE] = "bearer: token too large",
    [TH_JWT_MALFORMED] = "bearer: malformed token",
    [TH_JWT_ALG] = "bearer: algorithm not allowed",
    [TH_JWT_UNKNOWN_KID] = "bearer: unknown signing key",
    [TH_JWT_SIGNATURE] = "bearer: bad signature",
    [TH_JWT_CLAIMS] = "bearer: bad claims",
    [TH_JWT_ISSUER] = "bearer: wrong issuer",
    [TH_JWT_AUDIENCE] = "bearer: wrong audience",
    [TH_JWT_EXPIRED] = "bearer: expired",
    [TH_JWT_NOT_YET_VALID] = "bearer: not valid yet",
    [TH_JWT_IAT_FUTURE] = "bearer: issued in the future",
    [TH_JWT_CLIENT] = "bearer: client not allowed",
    [TH_JWT_SCOPE] = "bearer: missing scope",
};

th_err th_auth_new(const struct th_config *cfg, struct th_auth **out, char *err, size_t errlen)
{
    struct th_auth *a = calloc(1, sizeof *a);
    if (!a)
        return TH_E_NOMEM;
    a->mode = cfg->auth_mode;
    pthread_mutex_init(&a->fill_mu, NULL);
    th_strlcpy(a->header_name, cfg->auth_header_name ? cfg->auth_header_name : "Authorization",
               sizeof a->header_name);
    if (a->mode == TH_AUTH_HEADER || a->mode == TH_AUTH_EITHER) {
        const char *s = cfg->auth_header_secret;
        if (!s || strlen(s) < TH_AUTH_HEADER_SECRET_MIN) {
            snprintf(err, errlen, "[auth] header_secret is required, at least %d bytes",
                     TH_AUTH_HEADER_SECRET_MIN);
            th_auth_free(a);
            return TH_E_CONFIG;
        }
        th_sha256(s, strlen(s), a->secret_digest);
    }
    if (a->mode == TH_AUTH_OAUTH2 || a->mode == TH_AUTH_EITHER) {
        a->bearer = true;
        size_t total = strlen(cfg->auth_scopes) + strlen(cfg->auth_client_ids) +
                       strlen(cfg->auth_algorithms) + 3;
        a->strings = malloc(total);
        a->cache = calloc(CACHE_SLOTS, sizeof *a->cache);
        if (!a->strings || !a->cache) {
            th_auth_free(a);
            return TH_E_NOMEM;
        }
        char *st[3] = {NULL, NULL, NULL};
        a->policy.nscopes = split(cfg->auth_scopes, &st[0], a->scopes);
        a->policy.nclient_ids = split(cfg->auth_client_ids, &st[1], a->clients);
        a->policy.nalgorithms = split(cfg->auth_algorithms, &st[2], a->algs);
        /* one block for the three copies, so free() is simple */
        size_t pos = 0;
        const char **lists[3] = {a->scopes, a->clients, a->algs};
        size_t counts[3] = {a->policy.nscopes, a->policy.nclient_ids, a->policy.nalgorithms};
        for (int l = 0; l < 3; l++) {
            for (size_t i = 0; i < counts[l]; i++) {
                size_t n = strlen(lists[l][i]) + 1;
                memcpy(a->strings + pos, lists[l][i], n);
                lists[l][i] = a->strings + pos;
                pos += n;
            }
            free(st[l]);
        }
        a->policy.issuer = cfg->auth_issuer;
        a->policy.audience = cfg->auth_audience;
        a->policy.scopes = a->scopes;
        a->policy.client_ids = a->clients;
        a->policy.algorithms = a->algs;
        a->policy.clock_skew_s = cfg->auth_clock_skew;
        struct th_keys_opts ko = {
            .issuer = cfg->auth_issuer,
            .jwks_url = cfg->auth_jwks_url,
            .jwks_file = cfg->auth_jwks_file,
            .algorithms = a->algs,
            .nalgorithms = a->policy.nalgorithms,
        };
        th_err e = th_keys_new(&ko, &a->keys, err, errlen);
        if (e != TH_E_OK) {
            th_auth_free(a);
            return e;
        }
    }
    atomic_init(&a->verified, 0);
    atomic_init(&a->hits, 0);
    atomic_init(&a->refused, 0);
    *out = a;
    return TH_E_OK;
}

void th_auth_free(struct th_auth *auth)
{
    if (!auth)
        return;
    th_keys_free(auth->keys);
    free(auth->strings);
    free(auth->cache);
    pthread_mutex_destroy(&auth->fill_mu);
    OPENSSL_cleanse(auth->secret_digest, sizeof auth->secret_digest);
    free(auth);
}

const char *th_auth_header_name(const struct th_auth *auth)
{
    return auth->header_name;
}

bool th_auth_bearer(const struct th_auth *auth)
{
    return auth->bearer;
}

uint64_t th_auth_epoch(const struct th_auth *auth)
{
    return auth->keys ? th_keys_epoch(auth->keys) : 0;
}

bool th_auth_wait(struct th_auth *auth, struct th_keys_waiter *w, uint64_t seen,
                  struct th_loop *loop, th_loop_fn fn, void *ud)
{
    return auth->keys && th_keys_wait(auth->keys, w, seen, loop, fn, ud);
}

void th_auth_wait_cancel(struct th_auth *auth, struct th_keys_waiter *w)
{
    if (auth->keys)
        th_keys_wait_cancel(auth->keys, w);
}

bool th_auth_ready(const struct th_auth *auth)
{
    return !auth->keys || th_keys_ready(auth->keys);
}

void th_auth_stats(const struct th_auth *auth, struct th_auth_stats *out)
{
    out->verified = atomic_load(&auth->verified);
    out->cache_hits = atomic_load(&auth->hits);
    out->refused = atomic_load(&auth->refused);
    out->key_fetches = auth->keys ? th_keys_fetches(auth->keys) : 0;
}

/* v is the presented value, n its length as received (a NUL inside is part of it). */
static th_err check_secret(const struct th_auth *auth, const char *v, size_t n, const char **why)
{
    unsigned char digest[32];
    /*
     * Compare digests, not the strings: CRYPTO_memcmp is constant-time only for equal lengths,
     * and comparing fixed-size digests also hides the secret's length from a timing attacker.
     * All 32 bytes are compared: a prefix would let a few thousand guesses through.
     */
    if (n <= MAX_PRESENTED)
        th_sha256(v, n, digest);
    if (n > MAX_PRESENTED || CRYPTO_memcmp(digest, auth->secret_digest, sizeof digest) != 0) {
        *why = "wrong credentials";
        return TH_E_AUTH;
    }
    return TH_E_OK;
}

static struct cached *slot_for(struct th_auth *a, const uint64_t h[4])
{
    return &a->cache[h[0] % CACHE_SLOTS];
}

/*
 * True when c holds token h, unexpired at now, verified against key-set generation gen (a read
 * that meets a writer is a miss).
 *
 * Why a generation and not the kid: after an emergency rotation (a key withdrawn from the
 * issuer's set, the keys refreshed) a token signed with the withdrawn key must stop counting at
 * once, not when its slot is reused or it expires. keys.c moves the generation on only when a
 * fetched set drops or replaces a key, so the hourly refresh of an unchanged set, or one that
 * adds the next key, costs nothing; after a withdrawal every cached token is verified once more
 * (a token of a key still held passes again, the others fail). That keeps a hit at one more
 * atomic load and compare, where re-checking each entry's kid against the new set would need
 * the kid in the slot and the set's lock on the first hit after every refresh.
 */
static bool cache_hit(struct cached *c, const uint64_t h[4], int64_t now, int skew, uint64_t gen)
{
    unsigned s1 = atomic_load_explicit(&c->seq, memory_order_acquire);
    bool same = true;
    for (int i = 0; i < 4; i++)
        same &= atomic_load_explicit(&c->h[i], memory_order_relaxed) == h[i];
    int64_t exp = atomic_load_explicit(&c->exp, memory_order_relaxed);
    same &= atomic_load_explicit(&c->gen, memory_order_relaxed) == gen;
    atomic_thread_fence(memory_order_acquire);
    unsigned s2 = atomic_load_explicit(&c->seq, memory_order_relaxed);
    return s1 == s2 && !(s1 & 1) && same && exp && now < exp + skew;
}

static void cache_fill(struct th_auth *a, struct cached *c, const uint64_t h[4], int64_t exp,
                       uint64_t gen)
{
    pthread_mutex_lock(&a->fill_mu);
    unsigned s = atomic_load_explicit(&c->seq, memory_order_relaxed);
    atomic_store_explicit(&c->seq, s + 1, memory_order_relaxed);
    atomic_thread_fence(memory_order_release);
    for (int i = 0; i < 4; i++)
        atomic_store_explicit(&c->h[i], h[i], memory_order_relaxed);
    atomic_store_explicit(&c->exp, exp, memory_order_relaxed);
    atomic_store_explicit(&c->gen, gen, memory_order_relaxed);
    atomic_store_explicit(&c->seq, s + 2, memory_order_release);
    pthread_mutex_unlock(&a->fill_mu);
}

static th_err check_bearer(struct th_auth *a, const char *token, const char **why)
{
    size_t len = strnlen(token, TH_JWT_MAX_LEN + 1);
    if (len > TH_JWT_MAX_LEN) {
        atomic_fetch_add(&a->refused, 1);
        *why = bearer_reasons[TH_JWT_TOO_LARGE];
        return TH_E_AUTH;
    }
    uint64_t h[4]; /* the cache key: hashed without allocation or algorithm fetch */
    th_jwt_cache_key(token, len, (unsigned char *)h); /* one key for both ES256 spellings */
    int64_t now = (int64_t)time(NULL);
    struct cached *c = slot_for(a, h);
    if (cache_hit(c, h, now, a->policy.clock_skew_s, th_keys_generation(a->keys))) {
        atomic_fetch_add(&a->hits, 1);
        return TH_E_OK;
    }
    void *handle;
    uint64_t gen; /* the entry is stamped with the set it was verified against, not the newest */
    const struct th_jwks *keys = th_keys_acquire(a->keys, &handle, &gen);
    struct th_jwt_claims claims;
    char detail[160];
    th_jwt_status st =
        th_jwt_verify(token, len, keys, &a->policy, now, &claims, detail, sizeof detail);
    th_keys_release(a->keys, handle);
    if (st == TH_JWT_OK) {
        atomic_fetch_add(&a->verified, 1);
        cache_fill(a, c, h, claims.exp, gen);
        return TH_E_OK;
    }
    if (st == TH_JWT_UNKNOWN_KID && claims.kid[0] && th_keys_refresh_soon(a->keys)) {
        th_log_msg(TH_LOG_INFO, "jwks", "a token names an unknown key: refreshing the keys");
        *why = bearer_reasons[st];
        return TH_E_BUSY;
    }
    atomic_fetch_add(&a->refused, 1);
    *why = bearer_reasons[st];
    return TH_E_AUTH;
}

th_err th_auth_check(struct th_auth *auth, th_header_lookup_fn lookup, void *ud, const char **why)
{
    if (auth->mode == TH_AUTH_NONE)
        return TH_E_OK;
    if (auth->bearer) {
        size_t azlen = 0;
        const char *az = lookup(ud, "Authorization", &azlen);
        if (az && strncasecmp(az, "Bearer ", 7) == 0) {
            const char *t = az + 7;
            while (*t == ' ')
                t++;
            return check_bearer(auth, t, why);
        }
        if (auth->mode == TH_AUTH_OAUTH2) {
            *why = az ? "not a bearer token" : "missing credentials";
            return TH_E_AUTH;
        }
    }
    size_t n = 0;
    const char *v = lookup(ud, auth->header_name, &n);
    if (!v || n == 0) {
        *why = "missing credentials";
        return TH_E_AUTH;
    }
    return check_secret(auth, v, n, why);
}
