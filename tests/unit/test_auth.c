/* Unit tests: auth (header secret, constant-time comparison, development mode, the cache of
 * verified bearer tokens: expiry, threads, key withdrawal, ES256 twins). Key refreshes are
 * fetched from a tiny JWKS server on a loopback port, in a thread of the test. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <arpa/inet.h>
#include <curl/curl.h>
#include <netinet/in.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include "auth/auth.h"
#include "auth/jwt.h"
#include "common/hmac.h"
#include "common/util.h"
#include "loop/loop.h"
#include "tmpdir.h"

struct headers {
    const char *name, *value;
};

/* Case-insensitive lookup, as libmicrohttpd does. */
static const char *lookup(void *ud, const char *name, size_t *len)
{
    const struct headers *h = ud;
    for (; h->name; h++)
        if (strcasecmp(h->name, name) == 0) {
            *len = strlen(h->value);
            return h->value;
        }
    return NULL;
}

/* One header with its length as the HTTP layer gives it: the value may hold a NUL byte. */
struct header_n {
    const char *name, *value;
    size_t len;
};

static const char *lookup_n(void *ud, const char *name, size_t *len)
{
    const struct header_n *h = ud;
    if (strcasecmp(h->name, name) != 0)
        return NULL;
    *len = h->len;
    return h->value;
}

static char err[256];

static struct th_auth *make(th_auth_mode mode, const char *name, const char *secret)
{
    struct th_config cfg = {0};
    cfg.auth_mode = mode;
    cfg.auth_header_name = (char *)name;
    cfg.auth_header_secret = (char *)secret;
    struct th_auth *a = NULL;
    assert_int_equal(th_auth_new(&cfg, &a, err, sizeof err), TH_E_OK);
    return a;
}

static void test_header_secret(void **state)
{
    (void)state;
    struct th_auth *a = make(TH_AUTH_HEADER, "x-telephony-key", "s3cret-value-0123");
    const char *why = NULL;
    struct headers ok[] = {{"X-Telephony-Key", "s3cret-value-0123"}, {NULL, NULL}};
    assert_int_equal(th_auth_check(a, lookup, ok, &why), TH_E_OK);

    struct headers wrong[] = {{"x-telephony-key", "s3cret-value-012E"}, {NULL, NULL}};
    assert_int_equal(th_auth_check(a, lookup, wrong, &why), TH_E_AUTH);
    assert_string_equal(why, "wrong credentials");

    struct headers prefix[] = {{"x-telephony-key", "s3cret"}, {NULL, NULL}};
    assert_int_equal(th_auth_check(a, lookup, prefix, &why), TH_E_AUTH);

    struct headers longer[] = {{"x-telephony-key", "s3cret-value-0123 "}, {NULL, NULL}};
    assert_int_equal(th_auth_check(a, lookup, longer, &why), TH_E_AUTH);

    struct headers other[] = {{"Authorization", "s3cret-value-0123"}, {NULL, NULL}};
    assert_int_equal(th_auth_check(a, lookup, other, &why), TH_E_AUTH);
    assert_string_equal(why, "missing credentials");

    struct headers empty[] = {{"x-telephony-key", ""}, {NULL, NULL}};
    assert_int_equal(th_auth_check(a, lookup, empty, &why), TH_E_AUTH);
    assert_string_equal(th_auth_header_name(a), "x-telephony-key");
    th_auth_free(a);
}

static void test_basic_is_verbatim(void **state)
{
    (void)state;
    /* Okta sends the configured value verbatim, "Basic " included: no decoding, no trimming. */
    struct th_auth *a = make(TH_AUTH_HEADER, "Authorization", "Basic YWRtaW46c3VwZXJzZWNyZXQ=");
    const char *why = NULL;
    struct headers ok[] = {{"authorization", "Basic YWRtaW46c3VwZXJzZWNyZXQ="}, {NULL, NULL}};
    assert_int_equal(th_auth_check(a, lookup, ok, &why), TH_E_OK);
    struct headers lower[] = {{"authorization", "basic YWRtaW46c3VwZXJzZWNyZXQ="}, {NULL, NULL}};
    assert_int_equal(th_auth_check(a, lookup, lower, &why), TH_E_AUTH);
    struct headers bare[] = {{"authorization", "YWRtaW46c3VwZXJzZWNyZXQ="}, {NULL, NULL}};
    assert_int_equal(th_auth_check(a, lookup, bare, &why), TH_E_AUTH);
    th_auth_free(a);
}

static void test_oversize_refused(void **state)
{
    (void)state;
    static char big[10000];
    memset(big, 'a', sizeof big - 1);
    struct th_auth *a = make(TH_AUTH_HEADER, "x-key", "aaaaaaaaaaaaaaaa");
    const char *why = NULL;
    struct headers h[] = {{"x-key", big}, {NULL, NULL}};
    assert_int_equal(th_auth_check(a, lookup, h, &why), TH_E_AUTH);
    th_auth_free(a);
}

static void test_none_mode(void **state)
{
    (void)state;
    struct th_auth *a = make(TH_AUTH_NONE, "x-key", NULL);
    const char *why = NULL;
    struct headers none[] = {{NULL, NULL}};
    assert_int_equal(th_auth_check(a, lookup, none, &why), TH_E_OK);
    th_auth_free(a);
}

static void test_header_mode_needs_secret(void **state)
{
    (void)state;
    struct th_config cfg = {0};
    cfg.auth_mode = TH_AUTH_HEADER;
    cfg.auth_header_name = (char *)"x-key";
    struct th_auth *a = NULL;
    assert_int_equal(th_auth_new(&cfg, &a, err, sizeof err), TH_E_CONFIG);
    cfg.auth_header_secret = (char *)"";
    assert_int_equal(th_auth_new(&cfg, &a, err, sizeof err), TH_E_CONFIG);
    th_auth_free(NULL);
}

/* A secret a guesser can exhaust is refused: 16 bytes at least, the whole value counted. */
static void test_header_secret_min_length(void **state)
{
    (void)state;
    struct th_config cfg = {0};
    cfg.auth_mode = TH_AUTH_HEADER;
    cfg.auth_header_name = (char *)"x-key";
    struct th_auth *a = NULL;
    const char *short_ones[] = {"Z", "0123456789abcde", "Basic YTpi"};
    for (size_t i = 0; i < sizeof short_ones / sizeof *short_ones; i++) {
        cfg.auth_header_secret = (char *)short_ones[i];
        err[0] = '\0';
        assert_int_equal(th_auth_new(&cfg, &a, err, sizeof err), TH_E_CONFIG);
        assert_non_null(strstr(err, "at least 16 bytes"));
        assert_null(strstr(err, short_ones[i])); /* the secret is not in the message */
    }
    cfg.auth_mode = TH_AUTH_EITHER; /* either mode takes the header secret too */
    cfg.auth_header_secret = (char *)"0123456789abcde";
    assert_int_equal(th_auth_new(&cfg, &a, err, sizeof err), TH_E_CONFIG);
    cfg.auth_mode = TH_AUTH_HEADER;
    cfg.auth_header_secret = (char *)"0123456789abcdef";
    assert_int_equal(th_auth_new(&cfg, &a, err, sizeof err), TH_E_OK);
    th_auth_free(a);
}

/*
 * The whole presented value is compared, with the length the HTTP layer gives: a value that is
 * the secret, then a NUL, then anything, is not the secret (a strlen would stop at the NUL).
 */
static void test_header_secret_whole_value(void **state)
{
    (void)state;
    static const char secret[] = "0123456789abcdef-secret";
    struct th_auth *a = make(TH_AUTH_HEADER, "x-key", secret);
    const char *why = NULL;
    static const char nul_junk[] = "0123456789abcdef-secret\0junk";
    struct header_n h1 = {"x-key", nul_junk, sizeof nul_junk - 1};
    assert_int_equal(th_auth_check(a, lookup_n, &h1, &why), TH_E_AUTH);
    assert_string_equal(why, "wrong credentials");
    struct header_n h2 = {"x-key", nul_junk, sizeof secret}; /* the secret and a NUL */
    assert_int_equal(th_auth_check(a, lookup_n, &h2, &why), TH_E_AUTH);
    static const char nul_first[] = "\0"
                                    "0123456789abcdef-secret";
    struct header_n h3 = {"x-key", nul_first, sizeof nul_first - 1};
    assert_int_equal(th_auth_check(a, lookup_n, &h3, &why), TH_E_AUTH);
    struct header_n h4 = {"x-key", nul_junk, sizeof secret - 1}; /* exactly the secret */
    assert_int_equal(th_auth_check(a, lookup_n, &h4, &why), TH_E_OK);
    th_auth_free(a);
}

/* A deterministic generator, so a failure names a reproducible candidate. */
static uint64_t rng_state = 0x9e3779b97f4a7c15u;
static uint64_t rng(void)
{
    rng_state ^= rng_state << 13;
    rng_state ^= rng_state >> 7;
    rng_state ^= rng_state << 17;
    return rng_state;
}

/* A random printable value of 16 to 48 bytes in out (NUL-terminated). */
static void random_value(char *out)
{
    static const char alphabet[] =
        "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_+/= ";
    size_t n = 16 + rng() % 33;
    for (size_t i = 0; i < n; i++)
        out[i] = alphabet[rng() % (sizeof alphabet - 1)];
    out[0] = out[0] == ' ' ? 'x' : out[0];
    out[n] = '\0';
}

static void assert_refused(struct th_auth *a, const char *v, size_t n)
{
    struct header_n h = {"x-key", v, n};
    const char *why = NULL;
    if (th_auth_check(a, lookup_n, &h, &why) != TH_E_AUTH)
        fail_msg("a wrong secret was accepted: '%.*s' (%zu bytes)", (int)n, v, n);
}

/*
 * Thousands of wrong secrets, all refused: random ones, near misses of the right one (one byte
 * changed, cut, extended), and random ones whose SHA-256 shares its first byte, or its first
 * two, with the right one's: a comparison of a digest prefix instead of all 32 bytes lets those
 * through (about one guess in 256 for one byte).
 */
static void test_header_secret_many_wrong(void **state)
{
    (void)state;
    static const char secret[] = "Basic c2VjcmV0LXZhbHVlLWZvci10ZXN0cw==";
    struct th_auth *a = make(TH_AUTH_HEADER, "x-key", secret);
    unsigned char want[32], got[32];
    th_sha256(secret, sizeof secret - 1, want);
    char v[64];
    int checked = 0;
    for (int i = 0; i < 5000; i++, checked++) { /* random */
        random_value(v);
        assert_refused(a, v, strlen(v));
    }
    for (size_t i = 0; i < sizeof secret - 1; i++) { /* one byte changed, at every position */
        memcpy(v, secret, sizeof secret);
        v[i] = (char)(v[i] ^ 0x01);
        assert_refused(a, v, sizeof secret - 1);
        assert_refused(a, secret, i); /* every proper prefix */
        checked += 2;
    }
    memcpy(v, secret, sizeof secret - 1);
    memcpy(v + sizeof secret - 1, "x", 2);
    assert_refused(a, v, sizeof secret); /* extended by one byte */
    int first1 = 0, first2 = 0;
    for (long tries = 0; (first1 < 300 || first2 < 3) && tries < 4000000; tries++) {
        random_value(v);
        size_t n = strlen(v);
        th_sha256(v, n, got);
        if (got[0] != want[0] || (n == sizeof secret - 1 && memcmp(v, secret, n) == 0))
            continue;
        bool two = got[1] == want[1];
        if (first1 < 300 || (two && first2 < 3)) {
            assert_refused(a, v, n);
            first1++;
            first2 += two;
            checked++;
        }
    }
    assert_true(first1 >= 300 && first2 >= 3); /* the search found what it looked for */
    assert_true(checked >= 5300);
    /* and the right one still passes */
    struct header_n ok = {"x-key", secret, sizeof secret - 1};
    const char *why = NULL;
    assert_int_equal(th_auth_check(a, lookup_n, &ok, &why), TH_E_OK);
    th_auth_free(a);
}

/* ---- bearer tokens: the cache of verified tokens ---- */

#define ISS "https://example.okta.com/oauth2/default"
#define AUD "api://telehook"

static char *priv_jwk;

/* An oauth2 auth on a fresh RS256 key set written to the scratch directory. */
static struct th_auth *make_oauth(void)
{
    char *jwks = NULL;
    free(priv_jwk);
    assert_int_equal(th_jwt_keygen("RS256", "k1", &priv_jwk, &jwks), TH_E_OK);
    char path[128];
    snprintf(path, sizeof path, "%s/jwks.json", tmpdir);
    FILE *f = fopen(path, "w");
    assert_non_null(f);
    fputs(jwks, f);
    fclose(f);
    free(jwks);
    struct th_config cfg = {0};
    cfg.auth_mode = TH_AUTH_OAUTH2;
    cfg.auth_issuer = (char *)ISS;
    cfg.auth_audience = (char *)AUD;
    cfg.auth_scopes = (char *)"okta.telephony";
    cfg.auth_client_ids = (char *)"";
    cfg.auth_jwks_url = (char *)"";
    cfg.auth_jwks_file = path;
    cfg.auth_algorithms = (char *)"RS256";
    cfg.auth_clock_skew = 0;
    struct th_auth *a = NULL;
    assert_int_equal(th_auth_new(&cfg, &a, err, sizeof err), TH_E_OK);
    return a;
}

/* "Bearer <token>" signed with priv, with jti n, expiring exp_in seconds from now. */
static char *bearer_with(const char *priv, int n, long exp_in)
{
    char claims[512], *tok = NULL;
    long now = (long)time(NULL);
    snprintf(claims, sizeof claims,
             "{\"iss\":\"" ISS "\",\"aud\":\"" AUD "\",\"iat\":%ld,\"exp\":%ld,"
             "\"scp\":[\"okta.telephony\"],\"jti\":\"AT.%d\"}",
             now - 10, now + exp_in, n);
    assert_int_equal(th_jwt_mint(priv, claims, &tok, err, sizeof err), TH_E_OK);
    size_t len = strlen(tok) + 8;
    char *h = malloc(len);
    assert_non_null(h);
    snprintf(h, len, "Bearer %s", tok);
    free(tok);
    return h;
}

static char *bearer(int n, long exp_in)
{
    return bearer_with(priv_jwk, n, exp_in);
}

static th_err check(struct th_auth *a, const char *authorization)
{
    struct headers h[] = {{"Authorization", authorization}, {NULL, NULL}};
    const char *why = NULL;
    return th_auth_check(a, lookup, h, &why);
}

static void test_bearer_cache(void **state)
{
    (void)state;
    struct th_auth *a = make_oauth();
    char *t1 = bearer(1, 600), *t2 = bearer(2, 600);
    struct th_auth_stats st;
    for (int i = 0; i < 1000; i++)
        assert_int_equal(check(a, t1), TH_E_OK);
    th_auth_stats(a, &st);
    assert_int_equal(st.verified, 1); /* 1,000 requests with one token: one verification */
    assert_int_equal(st.cache_hits, 999);
    assert_int_equal(check(a, t2), TH_E_OK); /* another token is verified on its own */
    assert_int_equal(check(a, t1), TH_E_OK);
    th_auth_stats(a, &st);
    assert_int_equal(st.verified, 2);
    /* a token differing from a cached one in its last character is not a hit: it is refused */
    size_t n = strlen(t1);
    t1[n - 1] = t1[n - 1] == 'A' ? 'B' : 'A';
    assert_int_equal(check(a, t1), TH_E_AUTH);
    th_auth_stats(a, &st);
    assert_int_equal(st.refused, 1);
    /* a cached token stops being accepted when it expires (exp is kept with it); 5 s of
     * validity leave room for a slow first check (valgrind), then we wait until it is past (the
     * token's exp is at most a second later than this one: minting takes less) */
    time_t exp = time(NULL) + 5 + 1;
    char *t3 = bearer(3, 5);
    assert_int_equal(check(a, t3), TH_E_OK);
    assert_int_equal(check(a, t3), TH_E_OK); /* from the cache */
    while (time(NULL) <= exp) {
        struct timespec tenth = {.tv_nsec = 100 * 1000 * 1000};
        nanosleep(&tenth, NULL);
    }
    assert_int_equal(check(a, t3), TH_E_AUTH);
    free(t1);
    free(t2);
    free(t3);
    th_auth_free(a);
}

/* Two threads (the loops) share the cache: both read one hot token while also filling slots
 * with their own new tokens. Every check passes, each token is verified at most once per
 * thread that met it before it was cached, and TSan (make tsan) sees no race. */
struct worker {
    struct th_auth *a;
    char **own;
    const char *hot;
    int failures;
};

#define OWN 40

static void *worker_main(void *arg)
{
    struct worker *w = arg;
    for (int round = 0; round < 3; round++)
        for (int i = 0; i < OWN; i++)
            for (int k = 0; k < 20; k++)
                w->failures += check(w->a, k ? w->hot : w->own[i]) != TH_E_OK;
    return NULL;
}

static void test_bearer_cache_threads(void **state)
{
    (void)state;
    struct th_auth *a = make_oauth();
    char *hot = bearer(0, 600);
    struct worker w[2];
    for (int t = 0; t < 2; t++) {
        w[t] = (struct worker){.a = a, .hot = hot, .own = calloc(OWN, sizeof(char *))};
        assert_non_null(w[t].own);
        for (int i = 0; i < OWN; i++)
            w[t].own[i] = bearer(1000 * (t + 1) + i, 600);
    }
    pthread_t th[2];
    for (int t = 0; t < 2; t++)
        assert_int_equal(pthread_create(&th[t], NULL, worker_main, &w[t]), 0);
    for (int t = 0; t < 2; t++)
        assert_int_equal(pthread_join(th[t], NULL), 0);
    struct th_auth_stats st;
    th_auth_stats(a, &st);
    assert_int_equal(w[0].failures + w[1].failures, 0);
    assert_int_equal(st.verified + st.cache_hits, 2 * 3 * OWN * 20);
    /* 81 distinct tokens; a few more verifications when two of them share a slot */
    assert_true(st.verified >= 2 * OWN + 1);
    assert_true(st.verified < 2 * 3 * OWN);
    for (int t = 0; t < 2; t++) {
        for (int i = 0; i < OWN; i++)
            free(w[t].own[i]);
        free(w[t].own);
    }
    free(hot);
    th_auth_free(a);
}

/* ---- key refreshes: a JWKS server on loopback ---- */

static int jwks_fd = -1, jwks_port;
static pthread_t jwks_thread;
static pthread_mutex_t jwks_mu = PTHREAD_MUTEX_INITIALIZER;
static char jwks_doc[16384]; /* served as it is now, guarded by jwks_mu */
static atomic_int jwks_fetches;
/* How long the server holds each answer: a test that must register a waiter between a check
 * asking for a refresh and that refresh's end (th_auth_wait returns false once it has ended)
 * would otherwise race the fetch, which a loaded machine or a sanitizer can let win. */
static atomic_int jwks_delay_ms;

/* Answers every request with jwks_doc, one connection at a time (curl closes after each). */
static void *jwks_serve(void *arg)
{
    (void)arg;
    for (;;) {
        int c = accept(jwks_fd, NULL, NULL);
        if (c < 0)
            return NULL;
        char req[4096];
        size_t have = 0;
        ssize_t r;
        while (have < sizeof req - 1 && (r = read(c, req + have, sizeof req - 1 - have)) > 0) {
            have += (size_t)r;
            req[have] = '\0';
            if (strstr(req, "\r\n\r\n"))
                break;
        }
        int delay = atomic_load(&jwks_delay_ms);
        if (delay > 0) {
            struct timespec d = {.tv_sec = delay / 1000, .tv_nsec = (delay % 1000) * 1000000L};
            nanosleep(&d, NULL);
        }
        pthread_mutex_lock(&jwks_mu);
        char head[256];
        size_t n = strlen(jwks_doc);
        int hl = snprintf(head, sizeof head,
                          "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n"
                          "Cache-Control: max-age=3600\r\nContent-Length: %zu\r\n"
                          "Connection: close\r\n\r\n",
                          n);
        (void)!write(c, head, (size_t)hl);
        (void)!write(c, jwks_doc, n);
        pthread_mutex_unlock(&jwks_mu);
        atomic_fetch_add(&jwks_fetches, 1);
        close(c);
    }
}

static int group_setup(void **state)
{
    if (tmpdir_setup(state) != 0 || curl_global_init(CURL_GLOBAL_DEFAULT) != CURLE_OK)
        return -1;
    jwks_fd = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    if (jwks_fd < 0 || bind(jwks_fd, (struct sockaddr *)&a, sizeof a) || listen(jwks_fd, 16))
        return -1;
    socklen_t len = sizeof a;
    getsockname(jwks_fd, (struct sockaddr *)&a, &len);
    jwks_port = ntohs(a.sin_port);
    return pthread_create(&jwks_thread, NULL, jwks_serve, NULL);
}

static int group_teardown(void **state)
{
    shutdown(jwks_fd, SHUT_RDWR);
    close(jwks_fd);
    pthread_join(jwks_thread, NULL);
    curl_global_cleanup();
    return tmpdir_teardown(state);
}

/* Serves the public keys of the given JWKS documents (each th_jwt_keygen's), merged. */
static void serve_keys(const char *const *docs, size_t n)
{
    char buf[sizeof jwks_doc] = "{\"keys\":[";
    for (size_t i = 0; i < n; i++) {
        const char *open = strchr(docs[i], '['), *close = strrchr(docs[i], ']');
        assert_true(open && close);
        size_t have = strlen(buf);
        assert_true(have + (size_t)(close - open) + 4 < sizeof buf);
        snprintf(buf + have, sizeof buf - have, "%s%.*s", i ? "," : "", (int)(close - open - 1),
                 open + 1);
    }
    strcat(buf, "]}");
    pthread_mutex_lock(&jwks_mu);
    memcpy(jwks_doc, buf, sizeof buf);
    pthread_mutex_unlock(&jwks_mu);
}

/* An oauth2 auth fetching its keys from the loopback JWKS server; returns once it has keys. */
static struct th_auth *make_fetching(void)
{
    char url[64];
    snprintf(url, sizeof url, "http://127.0.0.1:%d/keys", jwks_port);
    struct th_config cfg = {0};
    cfg.auth_mode = TH_AUTH_OAUTH2;
    cfg.auth_issuer = (char *)ISS;
    cfg.auth_audience = (char *)AUD;
    cfg.auth_scopes = (char *)"okta.telephony";
    cfg.auth_client_ids = (char *)"";
    cfg.auth_jwks_url = url;
    cfg.auth_jwks_file = (char *)"";
    cfg.auth_algorithms = (char *)"ES256";
    struct th_auth *a = NULL;
    assert_int_equal(th_auth_new(&cfg, &a, err, sizeof err), TH_E_OK);
    /* ready once the keys are published; the fetch's epoch moves just after (wait for it too,
     * or a later check_after_refresh could take that move for its own refresh) */
    for (int i = 0; i < 1000 && (!th_auth_ready(a) || th_auth_epoch(a) == 0); i++) {
        struct timespec ms10 = {.tv_nsec = 10 * 1000 * 1000};
        nanosleep(&ms10, NULL);
    }
    assert_true(th_auth_ready(a));
    return a;
}

/* Checks a token whose kid the server does not hold yet: TH_E_BUSY, a refresh, then the
 * answer against the refreshed keys (as the server's request loop does). */
static th_err check_after_refresh(struct th_auth *a, const char *authorization)
{
    uint64_t epoch = th_auth_epoch(a);
    th_err e = check(a, authorization);
    if (e != TH_E_BUSY)
        return e;
    for (int i = 0; i < 1000 && th_auth_epoch(a) == epoch; i++) {
        struct timespec ms10 = {.tv_nsec = 10 * 1000 * 1000};
        nanosleep(&ms10, NULL);
    }
    assert_int_not_equal(th_auth_epoch(a), epoch);
    return check(a, authorization);
}

static void test_withdrawn_key_ends_cached_tokens(void **state)
{
    (void)state;
    /*
     * An emergency rotation: the issuer withdraws kid A and publishes only B. Once the keys are
     * refreshed (here: a token naming B asks for it), a token verified earlier with A and still
     * in the cache is refused, not waved through until its slot is reused or it expires.
     */
    char *privA, *jwksA, *privB, *jwksB;
    assert_int_equal(th_jwt_keygen("ES256", "kA", &privA, &jwksA), TH_E_OK);
    assert_int_equal(th_jwt_keygen("ES256", "kB", &privB, &jwksB), TH_E_OK);
    serve_keys((const char *[]){jwksA}, 1);
    struct th_auth *a = make_fetching();
    char *tA = bearer_with(privA, 1, 600), *tB = bearer_with(privB, 2, 600);
    assert_int_equal(check(a, tA), TH_E_OK);
    assert_int_equal(check(a, tA), TH_E_OK); /* from the cache */
    serve_keys((const char *[]){jwksB}, 1);
    assert_int_equal(check_after_refresh(a, tB), TH_E_OK);
    assert_int_equal(check(a, tA), TH_E_AUTH);
    assert_int_equal(check(a, tA), TH_E_AUTH);
    struct th_auth_stats st;
    th_auth_stats(a, &st);
    assert_int_equal(st.verified, 2);
    assert_int_equal(st.cache_hits, 1);
    assert_int_equal(st.refused, 2);
    assert_int_equal(st.key_fetches, 2);
    th_auth_free(a);
    free(tA);
    free(tB);
    free(privA);
    free(jwksA);
    free(privB);
    free(jwksB);
}

static void test_added_key_keeps_cached_tokens(void **state)
{
    (void)state;
    /* a refresh that only adds a key (the issuer publishing its next one) leaves the tokens
     * verified so far in the cache: no verification again */
    char *privA, *jwksA, *privB, *jwksB;
    assert_int_equal(th_jwt_keygen("ES256", "kA", &privA, &jwksA), TH_E_OK);
    assert_int_equal(th_jwt_keygen("ES256", "kB", &privB, &jwksB), TH_E_OK);
    serve_keys((const char *[]){jwksA}, 1);
    struct th_auth *a = make_fetching();
    char *tA = bearer_with(privA, 1, 600), *tB = bearer_with(privB, 2, 600);
    assert_int_equal(check(a, tA), TH_E_OK);
    serve_keys((const char *[]){jwksA, jwksB}, 2);
    assert_int_equal(check_after_refresh(a, tB), TH_E_OK);
    assert_int_equal(check(a, tA), TH_E_OK);
    assert_int_equal(check(a, tB), TH_E_OK);
    struct th_auth_stats st;
    th_auth_stats(a, &st);
    assert_int_equal(st.verified, 2);
    assert_int_equal(st.cache_hits, 2);
    assert_int_equal(st.refused, 0);
    assert_int_equal(st.key_fetches, 2);
    th_auth_free(a);
    free(tA);
    free(tB);
    free(privA);
    free(jwksA);
    free(privB);
    free(jwksB);
}

static const char b64url_alphabet[] =
    "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";

/* The base64url of 64 bytes, into out (86 characters and a NUL). */
static void b64url64(const unsigned char in[64], char out[87])
{
    size_t o = 0;
    for (size_t i = 0; i < 64; i += 3) {
        unsigned v = (unsigned)in[i] << 16 | (i + 1 < 64 ? (unsigned)in[i + 1] << 8 : 0) |
                     (i + 2 < 64 ? in[i + 2] : 0);
        out[o++] = b64url_alphabet[v >> 18];
        out[o++] = b64url_alphabet[(v >> 12) & 63];
        if (i + 1 < 64)
            out[o++] = b64url_alphabet[(v >> 6) & 63];
        if (i + 2 < 64)
            out[o++] = b64url_alphabet[v & 63];
    }
    out[o] = '\0';
}

/* "Bearer <token>" -> "Bearer <token with S replaced by n - S>": the other ES256 spelling. */
static char *es256_twin(const char *authorization)
{
    static const unsigned char n[32] = {0xff, 0xff, 0xff, 0xff, 0x00, 0x00, 0x00, 0x00,
                                        0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff,
                                        0xbc, 0xe6, 0xfa, 0xad, 0xa7, 0x17, 0x9e, 0x84,
                                        0xf3, 0xb9, 0xca, 0xc2, 0xfc, 0x63, 0x25, 0x51};
    const char *sig = strrchr(authorization, '.') + 1;
    assert_int_equal(strlen(sig), 86);
    unsigned char rs[64];
    for (size_t i = 0, bits = 0, acc = 0, o = 0; i < 86; i++) {
        const char *p = strchr(b64url_alphabet, sig[i]);
        assert_true(p && *p);
        acc = acc << 6 | (size_t)(p - b64url_alphabet);
        bits += 6;
        if (bits >= 8 && o < 64) {
            bits -= 8;
            rs[o++] = (unsigned char)(acc >> bits);
            acc &= (1u << bits) - 1;
        }
    }
    int borrow = 0;
    for (int i = 31; i >= 0; i--) {
        int d = n[i] - rs[32 + i] - borrow;
        borrow = d < 0;
        rs[32 + i] = (unsigned char)(d + (borrow ? 256 : 0));
    }
    assert_int_equal(borrow, 0);
    size_t head = (size_t)(sig - authorization);
    char *twin = malloc(head + 87);
    assert_non_null(twin);
    memcpy(twin, authorization, head);
    b64url64(rs, twin + head);
    return twin;
}

static void test_es256_twin_is_one_token(void **state)
{
    (void)state;
    /* (r, s) and (r, n - s) both verify: the second spelling of a cached token is a cache hit,
     * not a second token (whichever of the two the issuer's signer produced) */
    char *priv, *jwks;
    assert_int_equal(th_jwt_keygen("ES256", "kA", &priv, &jwks), TH_E_OK);
    serve_keys((const char *[]){jwks}, 1);
    struct th_auth *a = make_fetching();
    for (int i = 0; i < 8; i++) {
        char *t = bearer_with(priv, 100 + i, 600), *u = es256_twin(t);
        assert_int_equal(check(a, i % 2 ? u : t), TH_E_OK);
        assert_int_equal(check(a, i % 2 ? t : u), TH_E_OK);
        free(t);
        free(u);
    }
    struct th_auth_stats st;
    th_auth_stats(a, &st);
    assert_int_equal(st.verified, 8);
    assert_int_equal(st.cache_hits, 8);
    th_auth_free(a);
    free(priv);
    free(jwks);
}

/* ---- key-set waiters: woken through their loop by the refresh, not by polling ---- */

struct kwait {
    struct th_loop *loop;
    struct th_keys_waiter w;
    int calls;
    int timeouts;
    struct th_timer timer;
};

static void on_keys_woken(void *ud)
{
    struct kwait *k = ud;
    k->calls++;
    th_loop_stop(k->loop);
}

static void on_keys_bound(void *ud)
{
    th_loop_stop(((struct kwait *)ud)->loop);
}

/* Runs loop until stopped (a wake), or for at most ms. A loop once stopped stays stopped:
 * called again, it only runs what is queued on it — where a second wake would be. */
static void run_for(struct th_loop *loop, struct kwait *bound_owner, int ms)
{
    struct th_timer t = {0};
    th_loop_timer_set(loop, &t, th_mono_us() + ms * 1000, on_keys_bound, bound_owner);
    th_loop_run(loop);
    th_loop_timer_cancel(loop, &t);
}

static void test_key_wait_woken_by_refresh(void **state)
{
    (void)state;
    char *privA, *jwksA, *privB, *jwksB;
    assert_int_equal(th_jwt_keygen("ES256", "kA", &privA, &jwksA), TH_E_OK);
    assert_int_equal(th_jwt_keygen("ES256", "kB", &privB, &jwksB), TH_E_OK);
    serve_keys((const char *[]){jwksA}, 1);
    struct th_auth *a = make_fetching();
    struct th_loop *loop;
    assert_int_equal(th_loop_new(&loop), TH_E_OK);
    struct kwait k = {.loop = loop}, gone = {.loop = loop};
    char *tB = bearer_with(privB, 2, 600);
    serve_keys((const char *[]){jwksA, jwksB}, 2);
    uint64_t seen = th_auth_epoch(a);
    atomic_store(&jwks_delay_ms, 200); /* the waiters are registered before the refresh ends */
    assert_int_equal(check(a, tB), TH_E_BUSY); /* asks for the refresh */
    assert_true(th_auth_wait(a, &k.w, seen, loop, on_keys_woken, &k));
    assert_true(th_auth_wait(a, &gone.w, seen, loop, on_keys_woken, &gone));
    atomic_store(&jwks_delay_ms, 0);
    th_auth_wait_cancel(a, &gone.w); /* its connection closed */
    run_for(loop, &k, 5000);
    assert_int_equal(k.calls, 1);
    assert_int_not_equal(th_auth_epoch(a), seen);
    assert_int_equal(check(a, tB), TH_E_OK); /* the new key is there when the waiter wakes */
    run_for(loop, &k, 50);                   /* nothing more is queued */
    assert_int_equal(k.calls, 1);
    assert_int_equal(gone.calls, 0);
    th_auth_wait_cancel(a, &k.w); /* after the wake: a no-op */
    /* the epoch has moved past what a late waiter saw: not registered, it checks again now */
    assert_false(th_auth_wait(a, &gone.w, seen, loop, on_keys_woken, &gone));
    th_loop_free(loop);
    th_auth_free(a);
    free(tB);
    free(privA);
    free(jwksA);
    free(privB);
    free(jwksB);
}

/* The refresh completes on the fetcher's thread while the waiter's loop is busy: the wake is
 * queued on the loop; the waiter cancels (its second is up) before the loop runs it. */
static void test_key_wait_cancelled_never_called(void **state)
{
    (void)state;
    char *privA, *jwksA, *privB, *jwksB;
    assert_int_equal(th_jwt_keygen("ES256", "kA", &privA, &jwksA), TH_E_OK);
    assert_int_equal(th_jwt_keygen("ES256", "kB", &privB, &jwksB), TH_E_OK);
    serve_keys((const char *[]){jwksA}, 1);
    struct th_auth *a = make_fetching();
    struct th_loop *loop;
    assert_int_equal(th_loop_new(&loop), TH_E_OK);
    struct kwait k = {.loop = loop};
    char *tB = bearer_with(privB, 2, 600);
    serve_keys((const char *[]){jwksA, jwksB}, 2);
    uint64_t seen = th_auth_epoch(a);
    atomic_store(&jwks_delay_ms, 200); /* the waiter is registered before the refresh ends */
    assert_int_equal(check(a, tB), TH_E_BUSY);
    assert_true(th_auth_wait(a, &k.w, seen, loop, on_keys_woken, &k));
    atomic_store(&jwks_delay_ms, 0);
    for (int i = 0; i < 500 && th_auth_epoch(a) == seen; i++) {
        struct timespec ms10 = {.tv_nsec = 10 * 1000 * 1000};
        nanosleep(&ms10, NULL);
    }
    assert_int_not_equal(th_auth_epoch(a), seen);
    struct timespec ms20 = {.tv_nsec = 20 * 1000 * 1000}; /* the wake is posted just after */
    nanosleep(&ms20, NULL);
    th_auth_wait_cancel(a, &k.w);
    run_for(loop, &k, 50);
    assert_int_equal(k.calls, 0);
    th_loop_free(loop);
    th_auth_free(a);
    free(tB);
    free(privA);
    free(jwksA);
    free(privB);
    free(jwksB);
}

/* No refresh comes: the waiter's own timer ends the wait, cancels, and no wake follows. */
static void on_key_timeout(void *ud)
{
    struct kwait *k = ud;
    k->timeouts++;
    th_loop_stop(k->loop);
}

static void test_key_wait_timeout(void **state)
{
    (void)state;
    char *privA, *jwksA;
    assert_int_equal(th_jwt_keygen("ES256", "kA", &privA, &jwksA), TH_E_OK);
    serve_keys((const char *[]){jwksA}, 1);
    struct th_auth *a = make_fetching();
    struct th_loop *loop;
    assert_int_equal(th_loop_new(&loop), TH_E_OK);
    struct kwait k = {.loop = loop};
    uint64_t seen = th_auth_epoch(a);
    assert_true(th_auth_wait(a, &k.w, seen, loop, on_keys_woken, &k));
    th_loop_timer_set(loop, &k.timer, th_mono_us() + 100 * 1000, on_key_timeout, &k);
    th_loop_run(loop);
    th_auth_wait_cancel(a, &k.w);
    run_for(loop, &k, 50);
    assert_int_equal(k.timeouts, 1);
    assert_int_equal(k.calls, 0);
    assert_int_equal(th_auth_epoch(a), seen);
    th_loop_free(loop);
    th_auth_free(a);
    free(privA);
    free(jwksA);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_header_secret),
        cmocka_unit_test(test_basic_is_verbatim),
        cmocka_unit_test(test_oversize_refused),
        cmocka_unit_test(test_none_mode),
        cmocka_unit_test(test_header_mode_needs_secret),
        cmocka_unit_test(test_header_secret_min_length),
        cmocka_unit_test(test_header_secret_whole_value),
        cmocka_unit_test(test_header_secret_many_wrong),
        cmocka_unit_test(test_bearer_cache),
        cmocka_unit_test(test_bearer_cache_threads),
        cmocka_unit_test(test_withdrawn_key_ends_cached_tokens),
        cmocka_unit_test(test_added_key_keeps_cached_tokens),
        cmocka_unit_test(test_es256_twin_is_one_token),
        cmocka_unit_test(test_key_wait_woken_by_refresh),
        cmocka_unit_test(test_key_wait_cancelled_never_called),
        cmocka_unit_test(test_key_wait_timeout),
    };
    int rc = cmocka_run_group_tests(tests, group_setup, group_teardown);
    free(priv_jwk);
    return rc;
}
