/* Unit tests: guard (limit parsing, GCRA windows, budgets, destination rules, dedupe). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "config/config.h"
#include "common/hmac.h"
#include "guard/guard.h"
#include "phone/phone.h"

static char err[512];

/* A config with every limit off unless the test turns it on. */
static struct th_guard *make(const char *const *env)
{
    struct th_config cfg;
    char *base[64];
    size_t n = 0;
    static const char *const off[] = {
        "TELEHOOK_GUARD_LIMIT_PHONE=0",         "TELEHOOK_GUARD_LIMIT_PHONE_DAILY=0",
        "TELEHOOK_GUARD_LIMIT_USER=0",          "TELEHOOK_GUARD_LIMIT_COUNTRY=0",
        "TELEHOOK_GUARD_BUDGET_CALLING_CODE=0", "TELEHOOK_GUARD_LIMIT_GLOBAL=0",
    };
    for (size_t i = 0; i < sizeof off / sizeof off[0]; i++) {
        bool overridden = false;
        const char *eq = strchr(off[i], '=');
        for (size_t j = 0; env && env[j]; j++)
            if (strncmp(env[j], off[i], (size_t)(eq - off[i]) + 1) == 0)
                overridden = true;
        if (!overridden)
            base[n++] = (char *)off[i];
    }
    for (size_t j = 0; env && env[j]; j++)
        base[n++] = (char *)env[j];
    base[n] = NULL;
    assert_int_equal(th_config_load(&cfg, NULL, base, err, sizeof err), TH_E_OK);
    struct th_guard *g = NULL;
    th_err e = th_guard_new(&cfg, &g, err, sizeof err);
    th_config_release(&cfg);
    if (e != TH_E_OK)
        fail_msg("guard: %s", err);
    return g;
}

static struct th_phone phone(const char *e164)
{
    struct th_phone p;
    assert_int_equal(th_phone_parse(e164, strlen(e164), "US", &p), TH_E_OK);
    return p;
}

static void test_parse_limit(void **state)
{
    (void)state;
    long n, p;
    assert_true(th_guard_parse_limit("5/15m", &n, &p));
    assert_int_equal(n, 5);
    assert_int_equal(p, 900);
    assert_true(th_guard_parse_limit("20/1d", &n, &p) && n == 20 && p == 86400);
    assert_true(th_guard_parse_limit("100/30s", &n, &p) && p == 30);
    assert_true(th_guard_parse_limit("0", &n, &p) && n == 0);
    assert_true(th_guard_parse_limit("", &n, &p) && n == 0);
    const char *bad[] = {"5", "5/", "/1m", "-1/1m", "5/1w", "5/0m", "5/1m2", "x/1m", "5/1mm"};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++)
        assert_false(th_guard_parse_limit(bad[i], &n, &p));
}

/* N per window: trips at N+1, recovers after the window. */
static void test_phone_window_trips_and_resets(void **state)
{
    (void)state;
    const char *env[] = {"TELEHOOK_GUARD_LIMIT_PHONE=3/1s", NULL};
    struct th_guard *g = make(env);
    struct th_phone a = phone("+12015550123"), b = phone("+12015550124");
    for (int i = 0; i < 3; i++)
        assert_int_equal(th_guard_check(g, &a, TH_CHANNEL_SMS, NULL), TH_BLOCK_NONE);
    assert_int_equal(th_guard_check(g, &a, TH_CHANNEL_SMS, NULL), TH_BLOCK_PHONE_SHORT);
    /* another number is not affected */
    assert_int_equal(th_guard_check(g, &b, TH_CHANNEL_SMS, NULL), TH_BLOCK_NONE);
    usleep(1050 * 1000);
    for (int i = 0; i < 3; i++)
        assert_int_equal(th_guard_check(g, &a, TH_CHANNEL_SMS, NULL), TH_BLOCK_NONE);
    assert_int_equal(th_guard_check(g, &a, TH_CHANNEL_SMS, NULL), TH_BLOCK_PHONE_SHORT);
    uint64_t counts[TH_BLOCK__COUNT];
    th_guard_counts(g, counts);
    assert_int_equal(counts[TH_BLOCK_PHONE_SHORT], 2);
    th_guard_free(g);
}

/* A blocked request is not counted: the long window is not used up by refusals. */
static void test_refusals_do_not_consume(void **state)
{
    (void)state;
    const char *env[] = {"TELEHOOK_GUARD_LIMIT_PHONE=1/1h", "TELEHOOK_GUARD_LIMIT_USER=2/1h", NULL};
    struct th_guard *g = make(env);
    struct th_phone a = phone("+12015550123"), b = phone("+12015550124"), c = phone("+12015550125");
    assert_int_equal(th_guard_check(g, &a, TH_CHANNEL_SMS, "u1"), TH_BLOCK_NONE);
    for (int i = 0; i < 5; i++) /* refused by the phone limit: the user limit is untouched */
        assert_int_equal(th_guard_check(g, &a, TH_CHANNEL_SMS, "u1"), TH_BLOCK_PHONE_SHORT);
    assert_int_equal(th_guard_check(g, &b, TH_CHANNEL_SMS, "u1"), TH_BLOCK_NONE);
    assert_int_equal(th_guard_check(g, &c, TH_CHANNEL_SMS, "u1"), TH_BLOCK_USER);
    assert_int_equal(th_guard_check(g, &c, TH_CHANNEL_SMS, "u2"), TH_BLOCK_NONE);
    th_guard_free(g);
}

static void test_calling_code_budget_and_override(void **state)
{
    (void)state;
    const char *env[] = {"TELEHOOK_GUARD_BUDGET_CALLING_CODE=3/1d",
                         "TELEHOOK_GUARD_BUDGETS=1:5, 34:0", NULL};
    struct th_guard *g = make(env);
    char num[32];
    for (int i = 0; i < 3; i++) {
        snprintf(num, sizeof num, "+4474001234%02d", i);
        struct th_phone p = phone(num);
        assert_int_equal(th_guard_check(g, &p, TH_CHANNEL_SMS, NULL), TH_BLOCK_NONE);
    }
    struct th_phone gb = phone("+447400123499");
    assert_int_equal(th_guard_check(g, &gb, TH_CHANNEL_SMS, NULL), TH_BLOCK_CODE_BUDGET);
    for (int i = 0; i < 5; i++) { /* +1 has its own budget of 5 */
        snprintf(num, sizeof num, "+120155501%02d", i + 10);
        struct th_phone p = phone(num);
        assert_int_equal(th_guard_check(g, &p, TH_CHANNEL_SMS, NULL), TH_BLOCK_NONE);
    }
    struct th_phone us = phone("+12015550199");
    assert_int_equal(th_guard_check(g, &us, TH_CHANNEL_SMS, NULL), TH_BLOCK_CODE_BUDGET);
    struct th_phone es = phone("+34612345678"); /* budget 0: never */
    assert_int_equal(th_guard_check(g, &es, TH_CHANNEL_SMS, NULL), TH_BLOCK_CODE_BUDGET);
    th_guard_free(g);
}

static void test_country_rate_and_global(void **state)
{
    (void)state;
    const char *env[] = {"TELEHOOK_GUARD_LIMIT_COUNTRY=2/1h", "TELEHOOK_GUARD_LIMIT_GLOBAL=3/1h",
                         NULL};
    struct th_guard *g = make(env);
    struct th_phone u1 = phone("+12015550101"), u2 = phone("+12015550102"),
                    u3 = phone("+12015550103"), gb = phone("+447400123456"),
                    es = phone("+34612345678");
    assert_int_equal(th_guard_check(g, &u1, TH_CHANNEL_SMS, NULL), TH_BLOCK_NONE);
    assert_int_equal(th_guard_check(g, &u2, TH_CHANNEL_SMS, NULL), TH_BLOCK_NONE);
    assert_int_equal(th_guard_check(g, &u3, TH_CHANNEL_SMS, NULL), TH_BLOCK_COUNTRY_RATE);
    assert_int_equal(th_guard_check(g, &gb, TH_CHANNEL_SMS, NULL), TH_BLOCK_NONE);
    assert_int_equal(th_guard_check(g, &es, TH_CHANNEL_SMS, NULL), TH_BLOCK_GLOBAL);
    th_guard_free(g);
}

static void test_destination_rules(void **state)
{
    (void)state;
    const char *env[] = {"TELEHOOK_GUARD_COUNTRIES_DENY=es, cu", NULL};
    struct th_guard *g = make(env);
    struct th_phone es = phone("+34612345678"), fixed = phone("+442079460000"),
                    premium = phone("+449098790000"), tollfree = phone("+18005551212"),
                    mobile = phone("+447400123456"), us = phone("+12015550123");
    assert_int_equal(th_guard_check(g, &es, TH_CHANNEL_SMS, NULL), TH_BLOCK_COUNTRY);
    assert_int_equal(th_guard_check(g, &fixed, TH_CHANNEL_SMS, NULL), TH_BLOCK_NUMBER_TYPE);
    assert_int_equal(th_guard_check(g, &fixed, TH_CHANNEL_VOICE, NULL), TH_BLOCK_NONE);
    assert_int_equal(th_guard_check(g, &premium, TH_CHANNEL_SMS, NULL), TH_BLOCK_NUMBER_TYPE);
    assert_int_equal(th_guard_check(g, &premium, TH_CHANNEL_VOICE, NULL), TH_BLOCK_NUMBER_TYPE);
    assert_int_equal(th_guard_check(g, &tollfree, TH_CHANNEL_SMS, NULL), TH_BLOCK_NUMBER_TYPE);
    assert_int_equal(th_guard_check(g, &mobile, TH_CHANNEL_SMS, NULL), TH_BLOCK_NONE);
    assert_int_equal(th_guard_check(g, &us, TH_CHANNEL_SMS, NULL), TH_BLOCK_NONE);
    th_guard_free(g);

    const char *allow[] = {"TELEHOOK_GUARD_COUNTRIES_ALLOW=US", "TELEHOOK_GUARD_SMS_REFUSE=", NULL};
    g = make(allow);
    assert_int_equal(th_guard_check(g, &us, TH_CHANNEL_SMS, NULL), TH_BLOCK_NONE);
    assert_int_equal(th_guard_check(g, &mobile, TH_CHANNEL_SMS, NULL), TH_BLOCK_COUNTRY);
    assert_int_equal(th_guard_check(g, &tollfree, TH_CHANNEL_SMS, NULL), TH_BLOCK_NONE);
    th_guard_free(g);
}

static void test_bad_rules_refused(void **state)
{
    (void)state;
    struct th_config cfg;
    char *e1[] = {(char *)"TELEHOOK_GUARD_COUNTRIES_DENY=XX", NULL};
    assert_int_equal(th_config_load(&cfg, NULL, e1, err, sizeof err), TH_E_OK);
    struct th_guard *g = NULL;
    assert_int_equal(th_guard_new(&cfg, &g, err, sizeof err), TH_E_CONFIG);
    assert_non_null(strstr(err, "XX"));
    th_config_release(&cfg);
    char *e2[] = {(char *)"TELEHOOK_GUARD_SMS_REFUSE=PREMIUM, LANDLINE", NULL};
    assert_int_equal(th_config_load(&cfg, NULL, e2, err, sizeof err), TH_E_OK);
    assert_int_equal(th_guard_new(&cfg, &g, err, sizeof err), TH_E_CONFIG);
    th_config_release(&cfg);
    char *e3[] = {(char *)"TELEHOOK_GUARD_LIMIT_PHONE=5 per minute", NULL};
    assert_int_equal(th_config_load(&cfg, NULL, e3, err, sizeof err), TH_E_CONFIG);
    assert_non_null(strstr(err, "limit_phone"));
}

/* A flood of distinct numbers: memory stays bounded, state is evicted oldest first. */
static void test_bounded_under_flood(void **state)
{
    (void)state;
    const char *env[] = {"TELEHOOK_GUARD_LIMIT_PHONE=1/1h", "TELEHOOK_GUARD_MAX_ENTRIES=1000",
                         NULL};
    struct th_guard *g = make(env);
    char num[32];
    for (int i = 0; i < 6000; i++) { /* six times what the tables hold */
        snprintf(num, sizeof num, "+1201555%04d", i);
        struct th_phone p;
        if (th_phone_parse(num, strlen(num), NULL, &p) != TH_E_OK)
            continue;
        th_guard_check(g, &p, TH_CHANNEL_SMS, NULL);
    }
    assert_true(th_guard_entries(g) <= 1024);
    th_guard_free(g);
}

static void test_dedupe(void **state)
{
    (void)state;
    struct th_guard *g = make(NULL);
    struct th_dedupe *t1, *t2, *t3;
    struct th_dedupe_answer a = {0};
    assert_int_equal(
        th_guard_dedupe_begin(g, "ev1", "+12015550123", "123456", TH_CHANNEL_SMS, 0, &t1, &a),
        TH_DEDUPE_FIRST);
    /* same event while the first is in flight */
    assert_int_equal(
        th_guard_dedupe_begin(g, "ev1", "+12015550123", "123456", TH_CHANNEL_SMS, 0, &t2, &a),
        TH_DEDUPE_PENDING);
    assert_int_equal(th_guard_dedupe_poll(g, t2, &a), TH_DEDUPE_PENDING);
    th_guard_dedupe_finish(g, t1, 200, "{\"tx\":1}", 8);
    assert_int_equal(th_guard_dedupe_poll(g, t2, &a), TH_DEDUPE_DONE);
    assert_string_equal(a.body, "{\"tx\":1}");
    free(a.body);
    th_guard_dedupe_release(g, t2);
    /* another event id, same number, code and channel: the same outcome */
    assert_int_equal(
        th_guard_dedupe_begin(g, "ev2", "+12015550123", "123456", TH_CHANNEL_SMS, 0, &t3, &a),
        TH_DEDUPE_DONE);
    assert_int_equal(a.status, 200);
    free(a.body);
    /* a new code to the same number, or the same code by voice, is new */
    assert_int_equal(
        th_guard_dedupe_begin(g, "ev3", "+12015550123", "654321", TH_CHANNEL_SMS, 0, &t3, &a),
        TH_DEDUPE_FIRST);
    th_guard_dedupe_finish(g, t3, 200, "x", 1);
    assert_int_equal(
        th_guard_dedupe_begin(g, "ev4", "+12015550123", "123456", TH_CHANNEL_VOICE, 0, &t3, &a),
        TH_DEDUPE_FIRST);
    th_guard_dedupe_finish(g, t3, 200, "y", 1);
    /* an expired window forgets */
    int64_t past = 1; /* otpExpires long gone: the default window applies */
    assert_int_equal(
        th_guard_dedupe_begin(g, "ev5", "+12015550199", "111111", TH_CHANNEL_SMS, past, &t3, &a),
        TH_DEDUPE_FIRST);
    th_guard_dedupe_finish(g, t3, 200, "z", 1);
    th_guard_free(g);

    const char *off[] = {"TELEHOOK_GUARD_DEDUPE=false", NULL};
    g = make(off);
    assert_int_equal(
        th_guard_dedupe_begin(g, "ev1", "+12015550123", "1", TH_CHANNEL_SMS, 0, &t1, &a),
        TH_DEDUPE_OFF);
    th_guard_free(g);
}

/* The search keys of delivery records: pinned values (the CLI and every server must agree). */
static void test_record_keys(void **state)
{
    (void)state;
    struct th_hmac_key *k = NULL, *k2 = NULL, *none = (struct th_hmac_key *)1;
    assert_int_equal(th_guard_record_key_new("", &none), TH_E_OK);
    assert_null(none); /* no secret: nothing searchable is kept */
    assert_int_equal(th_guard_record_key_new("guard-secret-1", &k), TH_E_OK);
    assert_int_equal(th_guard_record_key_new("guard-secret-2", &k2), TH_E_OK);
    char a[TH_RECORD_HASH_HEX], b[TH_RECORD_HASH_HEX];
    /* hex(HMAC(HMAC(SHA256(secret), "telehook delivery record keys"), "phone" 0 e164))[:32] */
    th_guard_record_phone(k, "+12015550123", a);
    assert_string_equal(a, "64116e69c422697b6dfe13b46ec9d913");
    th_guard_record_login(k, "Test.User@EXAMPLE.com", b);
    assert_string_equal(b, "905f4b42bc635dcbd3a6db5e19ac2141"); /* of the lower-cased login */
    th_guard_record_login(k, "+12015550123", b);
    assert_string_not_equal(a, b); /* a login is never taken for a number */
    th_guard_record_phone(k2, "+12015550123", b);
    assert_string_not_equal(a, b); /* another secret, other keys */
    th_hmac_key_free(k);
    th_hmac_key_free(k2);
}

int main(void)
{
    th_phone_init();
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_parse_limit),
        cmocka_unit_test(test_record_keys),
        cmocka_unit_test(test_phone_window_trips_and_resets),
        cmocka_unit_test(test_refusals_do_not_consume),
        cmocka_unit_test(test_calling_code_budget_and_override),
        cmocka_unit_test(test_country_rate_and_global),
        cmocka_unit_test(test_destination_rules),
        cmocka_unit_test(test_bad_rules_refused),
        cmocka_unit_test(test_bounded_under_flood),
        cmocka_unit_test(test_dedupe),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
