/* Unit tests: auth (header secret, constant-time comparison, development mode, the cache of
 * verified bearer tokens). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>

#include "auth/auth.h"
#include "auth/jwt.h"
#include "tmpdir.h"

struct headers {
    const char *name, *value;
};

/* Case-insensitive lookup, as libmicrohttpd does. */
static const char *lookup(void *ud, const char *name)
{
    const struct headers *h = ud;
    for (; h->name; h++)
        if (strcasecmp(h->name, name) == 0)
            return h->value;
    return NULL;
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
    struct th_auth *a = make(TH_AUTH_HEADER, "x-telephony-key", "s3cret-value");
    const char *why = NULL;
    struct headers ok[] = {{"X-Telephony-Key", "s3cret-value"}, {NULL, NULL}};
    assert_int_equal(th_auth_check(a, lookup, ok, &why), TH_E_OK);

    struct headers wrong[] = {{"x-telephony-key", "s3cret-valuE"}, {NULL, NULL}};
    assert_int_equal(th_auth_check(a, lookup, wrong, &why), TH_E_AUTH);
    assert_string_equal(why, "wrong credentials");

    struct headers prefix[] = {{"x-telephony-key", "s3cret"}, {NULL, NULL}};
    assert_int_equal(th_auth_check(a, lookup, prefix, &why), TH_E_AUTH);

    struct headers longer[] = {{"x-telephony-key", "s3cret-value "}, {NULL, NULL}};
    assert_int_equal(th_auth_check(a, lookup, longer, &why), TH_E_AUTH);

    struct headers other[] = {{"Authorization", "s3cret-value"}, {NULL, NULL}};
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
    struct th_auth *a = make(TH_AUTH_HEADER, "x-key", "a");
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

/* "Bearer <token>" for a token with jti n, expiring exp_in seconds from now. */
static char *bearer(int n, long exp_in)
{
    char claims[512], *tok = NULL;
    long now = (long)time(NULL);
    snprintf(claims, sizeof claims,
             "{\"iss\":\"" ISS "\",\"aud\":\"" AUD "\",\"iat\":%ld,\"exp\":%ld,"
             "\"scp\":[\"okta.telephony\"],\"jti\":\"AT.%d\"}",
             now - 10, now + exp_in, n);
    assert_int_equal(th_jwt_mint(priv_jwk, claims, &tok, err, sizeof err), TH_E_OK);
    size_t len = strlen(tok) + 8;
    char *h = malloc(len);
    assert_non_null(h);
    snprintf(h, len, "Bearer %s", tok);
    free(tok);
    return h;
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

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_header_secret),
        cmocka_unit_test(test_basic_is_verbatim),
        cmocka_unit_test(test_oversize_refused),
        cmocka_unit_test(test_none_mode),
        cmocka_unit_test(test_header_mode_needs_secret),
        cmocka_unit_test(test_bearer_cache),
        cmocka_unit_test(test_bearer_cache_threads),
    };
    int rc = cmocka_run_group_tests(tests, tmpdir_setup, tmpdir_teardown);
    free(priv_jwk);
    return rc;
}
