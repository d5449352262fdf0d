/* Unit tests: auth (header secret, constant-time comparison, development mode). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <string.h>
#include <strings.h>

#include "auth/auth.h"

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

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_header_secret),
        cmocka_unit_test(test_basic_is_verbatim),
        cmocka_unit_test(test_oversize_refused),
        cmocka_unit_test(test_none_mode),
        cmocka_unit_test(test_header_mode_needs_secret),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
