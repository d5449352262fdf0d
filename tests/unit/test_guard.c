/* Unit tests: guard (limit parsing, GCRA windows, budgets, destination rules, dedupe). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "config/config.h"
#include "common/hmac.h"
#include "common/rate.h"
#include "guard/guard.h"
#include "common/util.h"
#include "loop/loop.h"
#include "phone/phone.h"

#include <pthread.h>

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

/* The guard's clock, when a test moves time itself: unix microseconds at *ud. */
static int64_t clock_of(void *ud)
{
    return *(const int64_t *)ud;
}

#define MIN_US (60 * INT64_C(1000000))
#define DAY_US (86400 * INT64_C(1000000))

static void test_parse_limit(void **state)
{
    (void)state;
    long n, p;
    assert_true(th_rate_parse("5/15m", &n, &p));
    assert_int_equal(n, 5);
    assert_int_equal(p, 900);
    assert_true(th_rate_parse("20/1d", &n, &p) && n == 20 && p == 86400);
    assert_true(th_rate_parse("100/30s", &n, &p) && p == 30);
    assert_true(th_rate_parse("0", &n, &p) && n == 0);
    assert_true(th_rate_parse("", &n, &p) && n == 0);
    const char *bad[] = {"5", "5/", "/1m", "-1/1m", "5/1w", "5/0m", "5/1m2", "x/1m", "5/1mm"};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++)
        assert_false(th_rate_parse(bad[i], &n, &p));
}

/* N per window: trips at N+1, recovers after the window. */
static void test_phone_window_trips_and_resets(void **state)
{
    (void)state;
    const char *env[] = {"TELEHOOK_GUARD_LIMIT_PHONE=3/1s", NULL};
    struct th_guard *g = make(env);
    int64_t t = 1767225600 * INT64_C(1000000);
    th_guard_set_clock(g, clock_of, &t);
    struct th_phone a = phone("+12015550123"), b = phone("+12015550124");
    for (int i = 0; i < 3; i++)
        assert_int_equal(th_guard_check(g, &a, TH_CHANNEL_SMS, NULL), TH_BLOCK_NONE);
    assert_int_equal(th_guard_check(g, &a, TH_CHANNEL_SMS, NULL), TH_BLOCK_PHONE_SHORT);
    /* another number is not affected */
    assert_int_equal(th_guard_check(g, &b, TH_CHANNEL_SMS, NULL), TH_BLOCK_NONE);
    t += 333334; /* a third of the window: one send is back (GCRA), not three */
    assert_int_equal(th_guard_check(g, &a, TH_CHANNEL_SMS, NULL), TH_BLOCK_NONE);
    assert_int_equal(th_guard_check(g, &a, TH_CHANNEL_SMS, NULL), TH_BLOCK_PHONE_SHORT);
    t += 1000000;
    for (int i = 0; i < 3; i++)
        assert_int_equal(th_guard_check(g, &a, TH_CHANNEL_SMS, NULL), TH_BLOCK_NONE);
    assert_int_equal(th_guard_check(g, &a, TH_CHANNEL_SMS, NULL), TH_BLOCK_PHONE_SHORT);
    uint64_t counts[TH_BLOCK__COUNT];
    th_guard_counts(g, counts);
    assert_int_equal(counts[TH_BLOCK_PHONE_SHORT], 3);
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

/* Non-geographic calling codes are refused by default, on both channels; codes can be denied
 * and allowed like countries. Each case: the lists set, then numbers and the expected verdict. */
static void test_calling_code_rules(void **state)
{
    (void)state;
    static const char *const iridium = "+881612345678", *const freephone = "+80012345678",
                             *const intl_net = "+8823421234", *const inmarsat = "+870301234567",
                             *const us = "+12015550123", *const gb = "+447400123456",
                             *const ru = "+79123456789";
    static const struct {
        const char *env[3];
        const char *number;
        th_channel ch;
        th_block want;
    } cases[] = {
        /* the default: every non-geographic code refused, SMS and voice */
        {{NULL}, iridium, TH_CHANNEL_SMS, TH_BLOCK_COUNTRY},
        {{NULL}, iridium, TH_CHANNEL_VOICE, TH_BLOCK_COUNTRY},
        {{NULL}, freephone, TH_CHANNEL_VOICE, TH_BLOCK_COUNTRY},
        {{NULL}, intl_net, TH_CHANNEL_SMS, TH_BLOCK_COUNTRY},
        {{NULL}, inmarsat, TH_CHANNEL_VOICE, TH_BLOCK_COUNTRY},
        {{NULL}, us, TH_CHANNEL_SMS, TH_BLOCK_NONE},
        {{NULL}, ru, TH_CHANNEL_VOICE, TH_BLOCK_NONE},
        /* turned off: what remains are the line-type rules (+800 is toll-free: no SMS) */
        {{"TELEHOOK_GUARD_CALLING_CODES_DENY="}, iridium, TH_CHANNEL_SMS, TH_BLOCK_NONE},
        {{"TELEHOOK_GUARD_CALLING_CODES_DENY="}, freephone, TH_CHANNEL_VOICE, TH_BLOCK_NONE},
        {{"TELEHOOK_GUARD_CALLING_CODES_DENY="}, freephone, TH_CHANNEL_SMS, TH_BLOCK_NUMBER_TYPE},
        /* geographic codes denied by code; the list replaces the default */
        {{"TELEHOOK_GUARD_CALLING_CODES_DENY=+7, 44"}, ru, TH_CHANNEL_SMS, TH_BLOCK_COUNTRY},
        {{"TELEHOOK_GUARD_CALLING_CODES_DENY=+7, 44"}, gb, TH_CHANNEL_VOICE, TH_BLOCK_COUNTRY},
        {{"TELEHOOK_GUARD_CALLING_CODES_DENY=+7, 44"}, iridium, TH_CHANNEL_SMS, TH_BLOCK_NONE},
        {{"TELEHOOK_GUARD_CALLING_CODES_DENY=Non-Geographic +7"},
         ru,
         TH_CHANNEL_SMS,
         TH_BLOCK_COUNTRY},
        {{"TELEHOOK_GUARD_CALLING_CODES_DENY=Non-Geographic +7"},
         intl_net,
         TH_CHANNEL_SMS,
         TH_BLOCK_COUNTRY},
        /* an allow-list by code: only those (a named code overrides the default's word) */
        {{"TELEHOOK_GUARD_CALLING_CODES_ALLOW=+881"}, iridium, TH_CHANNEL_SMS, TH_BLOCK_NONE},
        {{"TELEHOOK_GUARD_CALLING_CODES_ALLOW=+881"}, intl_net, TH_CHANNEL_SMS, TH_BLOCK_COUNTRY},
        {{"TELEHOOK_GUARD_CALLING_CODES_ALLOW=+881"}, us, TH_CHANNEL_SMS, TH_BLOCK_COUNTRY},
        {{"TELEHOOK_GUARD_CALLING_CODES_ALLOW=1"}, us, TH_CHANNEL_SMS, TH_BLOCK_NONE},
        {{"TELEHOOK_GUARD_CALLING_CODES_ALLOW=1"}, gb, TH_CHANNEL_SMS, TH_BLOCK_COUNTRY},
        /* both kinds of allow-list: a destination in either passes */
        {{"TELEHOOK_GUARD_COUNTRIES_ALLOW=US", "TELEHOOK_GUARD_CALLING_CODES_ALLOW=+881"},
         iridium,
         TH_CHANNEL_VOICE,
         TH_BLOCK_NONE},
        {{"TELEHOOK_GUARD_COUNTRIES_ALLOW=US", "TELEHOOK_GUARD_CALLING_CODES_ALLOW=+881"},
         us,
         TH_CHANNEL_SMS,
         TH_BLOCK_NONE},
        {{"TELEHOOK_GUARD_COUNTRIES_ALLOW=US", "TELEHOOK_GUARD_CALLING_CODES_ALLOW=+881"},
         gb,
         TH_CHANNEL_SMS,
         TH_BLOCK_COUNTRY},
        {{"TELEHOOK_GUARD_COUNTRIES_ALLOW=US", "TELEHOOK_GUARD_CALLING_CODES_ALLOW=+881"},
         intl_net,
         TH_CHANNEL_SMS,
         TH_BLOCK_COUNTRY},
        /* a country allow-list alone never lets a number of no country through */
        {{"TELEHOOK_GUARD_COUNTRIES_ALLOW=US", "TELEHOOK_GUARD_CALLING_CODES_DENY="},
         iridium,
         TH_CHANNEL_SMS,
         TH_BLOCK_COUNTRY},
        /* deny wins over allow across the kinds */
        {{"TELEHOOK_GUARD_COUNTRIES_DENY=GB", "TELEHOOK_GUARD_CALLING_CODES_ALLOW=+44"},
         gb,
         TH_CHANNEL_SMS,
         TH_BLOCK_COUNTRY},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        struct th_guard *g = make(cases[i].env);
        struct th_phone p = phone(cases[i].number);
        if (th_guard_check(g, &p, cases[i].ch, NULL) != cases[i].want)
            fail_msg("case %zu (%s, %s): got %s", i, cases[i].number,
                     cases[i].env[0] ? cases[i].env[0] : "defaults",
                     th_block_name(th_guard_check(g, &p, cases[i].ch, NULL)));
        uint64_t counts[TH_BLOCK__COUNT];
        th_guard_counts(g, counts); /* counted as the country refusals are */
        assert_int_equal(counts[TH_BLOCK_COUNTRY], cases[i].want == TH_BLOCK_COUNTRY);
        th_guard_free(g);
    }
}

static void test_bad_calling_code_rules_refused(void **state)
{
    (void)state;
    static const struct {
        const char *env[3];
        const char *says;
    } cases[] = {
        {{"TELEHOOK_GUARD_CALLING_CODES_DENY=999"}, "'999'"},
        {{"TELEHOOK_GUARD_CALLING_CODES_DENY=+0"}, "'+0'"},
        {{"TELEHOOK_GUARD_CALLING_CODES_DENY=1000"}, "'1000'"},
        {{"TELEHOOK_GUARD_CALLING_CODES_DENY=+44x"}, "'+44x'"},
        {{"TELEHOOK_GUARD_CALLING_CODES_ALLOW=++1"}, "'++1'"},
        {{"TELEHOOK_GUARD_CALLING_CODES_ALLOW=non-geo"}, "'non-geo'"},
        {{"TELEHOOK_GUARD_CALLING_CODES_ALLOW=44", "TELEHOOK_GUARD_CALLING_CODES_DENY=+44"},
         "+44 is in both"},
        {{"TELEHOOK_GUARD_CALLING_CODES_ALLOW=non-geographic"}, "non-geographic is in both"},
        {{"TELEHOOK_GUARD_COUNTRIES_DENY=+881"}, "calling_codes_deny"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        struct th_config cfg;
        char *env[4] = {NULL};
        for (size_t j = 0; j < 3 && cases[i].env[j]; j++)
            env[j] = (char *)cases[i].env[j];
        assert_int_equal(th_config_load(&cfg, NULL, env, err, sizeof err), TH_E_OK);
        struct th_guard *g = NULL;
        assert_int_equal(th_guard_new(&cfg, &g, err, sizeof err), TH_E_CONFIG);
        assert_null(g);
        if (!strstr(err, cases[i].says))
            fail_msg("case %zu: '%s' lacks '%s'", i, err, cases[i].says);
        th_config_release(&cfg);
    }
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

/* A per-code ban (CODE:0) holds with no default budget; other codes stay unlimited. */
static void test_code_ban_without_default_budget(void **state)
{
    (void)state;
    const char *env[] = {"TELEHOOK_GUARD_BUDGETS=34:0, 44:2", NULL}; /* default budget off */
    struct th_guard *g = make(env);
    struct th_phone es = phone("+34612345678"), gb = phone("+447400123456"),
                    us = phone("+12015550123");
    for (int i = 0; i < 3; i++)
        assert_int_equal(th_guard_check(g, &es, TH_CHANNEL_SMS, NULL), TH_BLOCK_CODE_BUDGET);
    assert_int_equal(th_guard_check(g, &es, TH_CHANNEL_VOICE, NULL), TH_BLOCK_CODE_BUDGET);
    assert_int_equal(th_guard_check(g, &gb, TH_CHANNEL_SMS, NULL), TH_BLOCK_NONE);
    assert_int_equal(th_guard_check(g, &gb, TH_CHANNEL_SMS, NULL), TH_BLOCK_NONE);
    assert_int_equal(th_guard_check(g, &gb, TH_CHANNEL_SMS, NULL), TH_BLOCK_CODE_BUDGET);
    for (int i = 0; i < 50; i++) /* no budget for +1 */
        assert_int_equal(th_guard_check(g, &us, TH_CHANNEL_SMS, NULL), TH_BLOCK_NONE);
    uint64_t counts[TH_BLOCK__COUNT];
    th_guard_counts(g, counts);
    assert_int_equal(counts[TH_BLOCK_CODE_BUDGET], 5);
    th_guard_free(g);
}

/* The budgets count per UTC day: spent at 23:59:59.999, whole again at midnight. */
static void test_budget_resets_at_utc_midnight(void **state)
{
    (void)state;
    const char *env[] = {"TELEHOOK_GUARD_BUDGET_CALLING_CODE=2/1d", "TELEHOOK_GUARD_BUDGETS=34:1",
                         NULL};
    struct th_guard *g = make(env);
    const int64_t midnight = 20000 * DAY_US; /* 2024-10-04T00:00:00Z */
    int64_t t = midnight - 10 * MIN_US;
    th_guard_set_clock(g, clock_of, &t);
    struct th_phone gb = phone("+447400123456"), es = phone("+34612345678");
    for (int day = 0; day < 3; day++) { /* day 0 begins 10 minutes before the first midnight */
        if (day > 0)
            t = midnight + (day - 1) * DAY_US;
        assert_int_equal(th_guard_check(g, &gb, TH_CHANNEL_SMS, NULL), TH_BLOCK_NONE);
        assert_int_equal(th_guard_check(g, &es, TH_CHANNEL_SMS, NULL), TH_BLOCK_NONE);
        t += 5 * MIN_US;
        assert_int_equal(th_guard_check(g, &gb, TH_CHANNEL_SMS, NULL), TH_BLOCK_NONE);
        assert_int_equal(th_guard_check(g, &gb, TH_CHANNEL_SMS, NULL), TH_BLOCK_CODE_BUDGET);
        assert_int_equal(th_guard_check(g, &es, TH_CHANNEL_SMS, NULL), TH_BLOCK_CODE_BUDGET);
        t = midnight + day * DAY_US - 1; /* 23:59:59.999999 of the same day */
        assert_int_equal(th_guard_check(g, &gb, TH_CHANNEL_SMS, NULL), TH_BLOCK_CODE_BUDGET);
        assert_int_equal(th_guard_check(g, &es, TH_CHANNEL_SMS, NULL), TH_BLOCK_CODE_BUDGET);
    }
    uint64_t counts[TH_BLOCK__COUNT];
    th_guard_counts(g, counts);
    assert_int_equal(counts[TH_BLOCK_CODE_BUDGET], 3 * 4);
    th_guard_free(g);
}

static th_dedupe_state begin_at(struct th_guard *g, const char *event, int64_t expires_ms)
{
    struct th_dedupe *t = NULL;
    struct th_dedupe_answer a = {0};
    th_dedupe_state st = th_guard_dedupe_begin(g, event, "+12015550123", "424242", TH_CHANNEL_SMS,
                                               expires_ms, &t, &a);
    if (st == TH_DEDUPE_FIRST)
        th_guard_dedupe_finish(g, t, 200, "{}", 2);
    else if (st == TH_DEDUPE_PENDING)
        th_guard_dedupe_release(g, t);
    free(a.body);
    return st;
}

/*
 * The dedupe window: the code's validity (Okta's otpExpires), 10 minutes when unknown or past,
 * never more than 30. Each case: otpExpires relative to the first request (ms; 0 = absent), and
 * the window that follows.
 */
static void test_dedupe_window_expiry_and_cap(void **state)
{
    (void)state;
    static const struct {
        int64_t expires_in_ms; /* 0: no otpExpires; <0: already past */
        int64_t window_ms;
    } cases[] = {
        {0, 10 * 60000},                      /* absent: the default window */
        {-1, 10 * 60000},                     /* past: the default window */
        {5 * 60000 - 5000, 5 * 60000 - 5000}, /* Okta's 5 minutes */
        {25 * 60000, 25 * 60000},             /* under the cap */
        {2 * 3600000, 30 * 60000},            /* capped */
        {400LL * 86400000, 30 * 60000},       /* capped */
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        struct th_guard *g = make(NULL);
        int64_t t = 1767225600 * INT64_C(1000000); /* 2026-01-01T00:00:00Z */
        th_guard_set_clock(g, clock_of, &t);
        int64_t now_ms = t / 1000;
        int64_t expires = cases[i].expires_in_ms == 0  ? 0
                          : cases[i].expires_in_ms < 0 ? now_ms - 1
                                                       : now_ms + cases[i].expires_in_ms;
        assert_int_equal(begin_at(g, "ev-a", expires), TH_DEDUPE_FIRST);
        t += (cases[i].window_ms - 1) * 1000; /* the last millisecond of the window */
        assert_int_equal(begin_at(g, "ev-a", expires), TH_DEDUPE_DONE);
        assert_int_equal(begin_at(g, "ev-b", expires), TH_DEDUPE_DONE); /* same number + code */
        t += 1000; /* the window is over: both keys forgotten */
        assert_int_equal(begin_at(g, "ev-a", expires), TH_DEDUPE_FIRST);
        th_guard_free(g);
    }
}

/*
 * A full dedupe table (every code valid as long: Okta's otpExpires is the same for requests of
 * one second) evicts the oldest record, never the one being inserted: its eventId slot, filled
 * first, can lie where its number + code slot would evict. Before this held, the record lost
 * its last reference there and was freed while its other slot and its ticket still pointed to
 * it (the heap corruption bench/run scenario p hit after ~100,000 requests). Each request, just
 * answered, must be found again by its eventId alone, and the table must count one record per
 * request it still holds.
 */
static void test_dedupe_full_table_keeps_the_newest(void **state)
{
    (void)state;
    const char *env[] = {"TELEHOOK_GUARD_MAX_ENTRIES=1000", NULL}; /* 1,024 slots */
    struct th_guard *g = make(env);
    int64_t t = 1767225600 * INT64_C(1000000);
    th_guard_set_clock(g, clock_of, &t);
    int64_t expires = t / 1000 + 5 * 60000;
    int first = 0;
    for (int i = 0; i < 20000; i++) {
        char ev[32], code[16], num[16];
        snprintf(ev, sizeof ev, "ev%d", i);
        snprintf(code, sizeof code, "%06d", 100000 + i);
        snprintf(num, sizeof num, "+1201555%04d", i % 4000);
        struct th_dedupe *tk = NULL;
        struct th_dedupe_answer a = {0};
        th_dedupe_state st =
            th_guard_dedupe_begin(g, ev, num, code, TH_CHANNEL_SMS, expires, &tk, &a);
        assert_int_equal(st, TH_DEDUPE_FIRST);
        first++;
        th_guard_dedupe_finish(g, tk, 200, "{\"n\":1}", 7);
        /* the same eventId with another code: found by the eventId's slot alone */
        st = th_guard_dedupe_begin(g, ev, num, "999999", TH_CHANNEL_SMS, expires, &tk, &a);
        if (st != TH_DEDUPE_DONE)
            fail_msg("request %d: its eventId was forgotten as it was inserted (%d)", i, (int)st);
        assert_int_equal(a.status, 200);
        assert_string_equal(a.body, "{\"n\":1}");
        free(a.body);
    }
    size_t recs, waits;
    th_guard_dedupe_sizes(g, &recs, &waits);
    assert_true(recs > 0 && recs <= 1024);
    assert_int_equal(waits, 0);
    assert_int_equal(first, 20000);
    th_guard_free(g);
}

/*
 * The per-number limits as shipped in etc/telehook.conf (5/15m and 20/1d), both on at once:
 * two counters. The short limit's burst passes, then trips at its count; sends at its pace pass
 * until the daily count, which trips next; the next day both allow again.
 */
static void test_shipped_phone_limits_together(void **state)
{
    (void)state;
    const char *root = getenv("TH_TEST_SRCDIR");
    char path[600], cwd[512];
    assert_non_null(getcwd(cwd, sizeof cwd));
    snprintf(path, sizeof path, "%s/etc/telehook.conf", root ? root : cwd);
    /* the example names var/dev-secret (made by `make run`), relative to the working directory */
    char dir[] = "/tmp/test_guard.XXXXXX";
    assert_non_null(mkdtemp(dir));
    assert_int_equal(chdir(dir), 0);
    assert_int_equal(mkdir("var", 0700), 0);
    FILE *f = fopen("var/dev-secret", "w");
    assert_non_null(f);
    fputs("0123456789abcdefghijklmnopqrstuv\n", f);
    fclose(f);
    assert_int_equal(chmod("var/dev-secret", 0600), 0);
    char *no_env[] = {NULL};
    struct th_config cfg;
    th_err loaded = th_config_load(&cfg, path, no_env, err, sizeof err);
    unlink("var/dev-secret");
    rmdir("var");
    assert_int_equal(chdir(cwd), 0);
    rmdir(dir);
    assert_int_equal(loaded, TH_E_OK);
    long n_short, p_short, n_day, p_day;
    assert_true(th_rate_parse(cfg.guard_limit_phone, &n_short, &p_short));
    assert_true(th_rate_parse(cfg.guard_limit_phone_daily, &n_day, &p_day));
    assert_true(n_short > 1 && n_day > n_short && p_day > p_short); /* both on, as shipped */
    struct th_guard *g = NULL;
    assert_int_equal(th_guard_new(&cfg, &g, err, sizeof err), TH_E_OK);
    th_config_release(&cfg);
    int64_t t = 1767225600 * INT64_C(1000000);
    th_guard_set_clock(g, clock_of, &t);
    struct th_phone a = phone("+12015550123"), b = phone("+12015550124");
    for (long i = 0; i < n_short; i++)
        assert_int_equal(th_guard_check(g, &a, TH_CHANNEL_SMS, NULL), TH_BLOCK_NONE);
    assert_int_equal(th_guard_check(g, &a, TH_CHANNEL_SMS, NULL), TH_BLOCK_PHONE_SHORT);
    assert_int_equal(th_guard_check(g, &b, TH_CHANNEL_SMS, NULL), TH_BLOCK_NONE);
    int64_t pace = (int64_t)p_short * 1000000 / n_short; /* one more send per pace */
    for (long sent = n_short; sent < n_day; sent++) {
        t += pace;
        assert_int_equal(th_guard_check(g, &a, TH_CHANNEL_SMS, NULL), TH_BLOCK_NONE);
    }
    t += pace;
    assert_int_equal(th_guard_check(g, &a, TH_CHANNEL_SMS, NULL), TH_BLOCK_PHONE_LONG);
    t += (int64_t)p_day * 1000000;
    assert_int_equal(th_guard_check(g, &a, TH_CHANNEL_SMS, NULL), TH_BLOCK_NONE);
    uint64_t counts[TH_BLOCK__COUNT];
    th_guard_counts(g, counts);
    assert_int_equal(counts[TH_BLOCK_PHONE_SHORT], 1);
    assert_int_equal(counts[TH_BLOCK_PHONE_LONG], 1);
    th_guard_free(g);
}

/*
 * Each per-person limit keeps its own slot. The short-window, daily and user keys of one request
 * are three entries in one table; a key whose probe window holds a slot claimed by another key
 * of the same check must not take that slot over (the limits would then share a counter). With
 * this secret and 1024 slots, several of these numbers have such keys.
 */
static void test_limits_never_share_a_slot(void **state)
{
    (void)state;
    char *env[] = {(char *)"TELEHOOK_GUARD_SECRET=slot-sharing-test",
                   (char *)"TELEHOOK_GUARD_MAX_ENTRIES=1000",
                   (char *)"TELEHOOK_GUARD_LIMIT_PHONE=5/15m",
                   (char *)"TELEHOOK_GUARD_LIMIT_PHONE_DAILY=20/1d",
                   (char *)"TELEHOOK_GUARD_LIMIT_USER=20/1h",
                   (char *)"TELEHOOK_GUARD_LIMIT_COUNTRY=0",
                   (char *)"TELEHOOK_GUARD_BUDGET_CALLING_CODE=0",
                   (char *)"TELEHOOK_GUARD_LIMIT_GLOBAL=0",
                   NULL};
    struct th_config cfg;
    assert_int_equal(th_config_load(&cfg, NULL, env, err, sizeof err), TH_E_OK);
    int64_t t = 1767225600 * INT64_C(1000000);
    size_t numbers = 0, shared = 0;
    for (int i = 0; i < 4000; i++) {
        char num[32], user[32];
        snprintf(num, sizeof num, "+1201555%04d", i);
        snprintf(user, sizeof user, "00u%d", i);
        struct th_phone p;
        if (th_phone_parse(num, strlen(num), NULL, &p) != TH_E_OK)
            continue;
        struct th_guard *g = NULL;
        assert_int_equal(th_guard_new(&cfg, &g, err, sizeof err), TH_E_OK);
        th_guard_set_clock(g, clock_of, &t);
        assert_int_equal(th_guard_check(g, &p, TH_CHANNEL_SMS, user), TH_BLOCK_NONE);
        numbers++;
        if (th_guard_entries(g) != 3) {
            fprintf(stderr, "%s: %zu entries\n", num, th_guard_entries(g));
            shared++;
        }
        for (int k = 1; k < 5; k++)
            assert_int_equal(th_guard_check(g, &p, TH_CHANNEL_SMS, user), TH_BLOCK_NONE);
        if (th_guard_check(g, &p, TH_CHANNEL_SMS, user) != TH_BLOCK_PHONE_SHORT) {
            fprintf(stderr, "%s: a 6th send in 15 minutes passed\n", num);
            shared++;
        }
        th_guard_free(g);
    }
    th_config_release(&cfg);
    assert_true(numbers > 3000);
    assert_int_equal(shared, 0);
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

/* ---- memory: bytes per remembered key, eviction when full ---- */

/* A number built without libphonenumber (the floods below make tens of thousands). */
static struct th_phone raw_phone(long i)
{
    struct th_phone p = {.country_code = 1, .type = TH_PHONE_FIXED_LINE_OR_MOBILE};
    snprintf(p.e164, sizeof p.e164, "+1%010ld", 2010000000L + i % 1000000000L);
    memcpy(p.region, "US", 3);
    return p;
}

/* An answer of the usual shape (Okta's SUCCESSFUL result), its transactionId made of i. */
static size_t okta_answer(char *out, size_t cap, long i)
{
    return (size_t)snprintf(out, cap,
                            "{\"commands\":[{\"type\":\"com.okta.telephony.action\",\"value\":[{"
                            "\"status\":\"SUCCESSFUL\",\"provider\":\"twilio\",\"transactionId\":"
                            "\"SM%032lx\",\"transactionMetadata\":\"attempts=1;ms=120\"}]}]}",
                            (unsigned long)i * 2654435761UL);
}

/*
 * The bound: per-number and per-user state at most 64 bytes per remembered key, all-in —
 * the slot, the table's room beyond guard.max_entries (a power of two: up to twice), and any
 * allocation per key. At the default size and at the worst size (just past a power of two), and
 * then full: the bytes th_guard_memory reports against the keys held.
 */
static void test_memory_per_key(void **state)
{
    (void)state;
    static const char *const sizes[] = {"TELEHOOK_GUARD_MAX_ENTRIES=100000",
                                        "TELEHOOK_GUARD_MAX_ENTRIES=1025"};
    for (size_t i = 0; i < 2; i++) {
        const char *env[] = {sizes[i], NULL};
        struct th_guard *g = make(env);
        struct th_guard_memory m;
        th_guard_memory(g, &m);
        assert_int_equal(m.max_entries, i == 0 ? 100000 : 1025);
        assert_true(m.people_slots >= m.max_entries && m.people_slots < 2 * m.max_entries);
        assert_int_equal(m.people_bytes, m.people_slots * 16); /* 16 bytes a slot */
        assert_int_equal(m.dedupe_bytes, m.dedupe_slots * 16); /* 16 bytes a slot */
        assert_true(m.people_bytes <= 64 * m.max_entries);
        assert_true(m.dedupe_bytes <= 64 * m.max_entries);
        assert_int_equal(m.records, 0);
        assert_int_equal(m.record_bytes, 0);
        th_guard_free(g);
    }

    /* Full: three keys a request (number, number-day, user), twice the slots' worth of requests. */
    const char *env[] = {"TELEHOOK_GUARD_MAX_ENTRIES=1000", "TELEHOOK_GUARD_LIMIT_PHONE=5/15m",
                         "TELEHOOK_GUARD_LIMIT_PHONE_DAILY=20/1d",
                         "TELEHOOK_GUARD_LIMIT_USER=20/1h", NULL};
    struct th_guard *g = make(env);
    struct th_guard_memory m;
    th_guard_memory(g, &m);
    char user[32], ev[32], otp[16], body[512];
    for (long i = 0; i < (long)m.people_slots; i++) {
        struct th_phone p = raw_phone(i);
        snprintf(user, sizeof user, "00u%ld", i);
        assert_int_equal(th_guard_check(g, &p, TH_CHANNEL_SMS, user), TH_BLOCK_NONE);
    }
    size_t keys = th_guard_entries(g);
    assert_true(keys > m.people_slots * 9 / 10); /* full, or nearly: 3 keys a request */
    assert_true(m.people_bytes <= 64 * keys);
    /* dedupe, every request new: each record holds one answer, shared by its two keys */
    size_t answer_len = 0;
    for (long i = 0; i < 4 * (long)m.dedupe_slots; i++) {
        struct th_phone p = raw_phone(i);
        snprintf(ev, sizeof ev, "ev%ld", i);
        snprintf(otp, sizeof otp, "%06ld", i % 1000000);
        struct th_dedupe *t = NULL;
        struct th_dedupe_answer a = {0};
        assert_int_equal(th_guard_dedupe_begin(g, ev, p.e164, otp, TH_CHANNEL_SMS, 0, &t, &a),
                         TH_DEDUPE_FIRST);
        answer_len = okta_answer(body, sizeof body, i);
        th_guard_dedupe_finish(g, t, 200, body, answer_len);
    }
    th_guard_memory(g, &m);
    assert_true(m.records > m.dedupe_slots / 3 && m.records <= m.dedupe_slots); /* bounded */
    /* A record: 32 bytes of heap, and its answer's bytes that differ from the reference (the
     * transactionId: 34 bytes, 48 on the heap) — not the whole ~190 (208 on the heap). One
     * reference answer (the first) is kept besides. */
    size_t ref_cost = (answer_len + 8 + 15) & ~(size_t)15;
    assert_true(answer_len > 180);
    assert_true(m.record_bytes <= m.records * (32 + 48) + ref_cost);
    assert_true(m.record_bytes >= m.records * 32 + ref_cost); /* counted, not guessed */
    fprintf(stderr,
            "# full at %zu slots: people %.1f B a key (%zu keys), dedupe slots %.1f B a slot, "
            "records %.1f B each (answers of %zu B)\n",
            m.people_slots, (double)m.people_bytes / (double)keys, keys,
            (double)m.dedupe_bytes / (double)m.dedupe_slots,
            (double)(m.record_bytes - ref_cost) / (double)m.records, answer_len);
    th_guard_free(g);
}

/* A replayed answer is byte for byte the first one's, whatever it shares with the references. */
static void test_dedupe_answers_replayed_exactly(void **state)
{
    (void)state;
    struct th_guard *g = make(NULL);
    char ref[512];
    size_t ref_len = okta_answer(ref, sizeof ref, 1);
    char longer[600];
    snprintf(longer, sizeof longer, "%s and more", ref);
    char suffix_only[600];
    snprintf(suffix_only, sizeof suffix_only, "X%s", ref + 10);
    char other[512];
    size_t other_len = okta_answer(other, sizeof other, 99);
    /* differing values with shared bytes between them: a run of the reference's middle, found
     * aligned from the start (a transactionId of the same length, another latency) or from the
     * end (a transactionId of another length) */
    char run_start[512], run_end[512], run_both[512];
    snprintf(run_start, sizeof run_start, "%.*s7\"}]}]}", (int)(ref_len - 9), other);
    snprintf(run_end, sizeof run_end, "%.*sABCDEFGHIJ%.35sZ%s", (int)(ref_len - 60), ref,
             ref + ref_len - 55, ref + ref_len - 19);
    snprintf(run_both, sizeof run_both, "%.*sQ%s", (int)(ref_len - 60), other, ref + ref_len - 40);
    const struct {
        const char *body;
        size_t len;
    } cases[] = {
        {ref, ref_len},                     /* becomes the first reference */
        {ref, ref_len},                     /* equal to it */
        {NULL, 0},                          /* another transactionId (filled below) */
        {ref, 40},                          /* a prefix of it */
        {longer, strlen(longer)},           /* it, and more */
        {suffix_only, strlen(suffix_only)}, /* its end only */
        {"", 0},                            /* empty */
        {"aXa", SIZE_MAX},                  /* short, nothing shared */
        {"{\"error\":{\"errorSummary\":\"abuse controls unavailable\"}}",
         SIZE_MAX},                                             /* another shape */
        {"{\"error\":{\"errorSummary\":\"other\"}}", SIZE_MAX}, /* shares start and end with it */
        {"aa", SIZE_MAX},                                       /* SIZE_MAX: strlen */
        {run_start, SIZE_MAX},
        {run_end, SIZE_MAX},
        {run_both, SIZE_MAX},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        const char *body = cases[i].body ? cases[i].body : other;
        size_t len = !cases[i].body             ? other_len
                     : cases[i].len == SIZE_MAX ? strlen(body)
                                                : cases[i].len;
        char ev[16], otp[16];
        snprintf(ev, sizeof ev, "ev%zu", i);
        snprintf(otp, sizeof otp, "%06zu", i);
        struct th_dedupe *t = NULL;
        struct th_dedupe_answer a = {0};
        assert_int_equal(
            th_guard_dedupe_begin(g, ev, "+12015550123", otp, TH_CHANNEL_SMS, 0, &t, &a),
            TH_DEDUPE_FIRST);
        th_guard_dedupe_finish(g, t, 200 + (int)i, body, len);
        for (int by_event = 0; by_event < 2; by_event++) { /* found by either key */
            assert_int_equal(th_guard_dedupe_begin(g, by_event ? ev : "another",
                                                   by_event ? "+19999999999" : "+12015550123", otp,
                                                   TH_CHANNEL_SMS, 0, &t, &a),
                             TH_DEDUPE_DONE);
            assert_int_equal(a.status, 200 + (int)i);
            assert_int_equal(a.len, len);
            assert_memory_equal(a.body, body, len);
            assert_int_equal(a.body[len], '\0');
            free(a.body);
        }
    }
    th_guard_free(g);
}

/* Okta's SUCCESSFUL answer with this transactionId and transactionMetadata. */
static size_t answer_with(char *out, size_t cap, const char *tx, const char *meta)
{
    return (size_t)snprintf(out, cap,
                            "{\"commands\":[{\"type\":\"com.okta.telephony.action\",\"value\":[{"
                            "\"status\":\"SUCCESSFUL\",\"provider\":\"aws\",\"transactionId\":"
                            "\"%s\",\"transactionMetadata\":\"%s\"}]}]}",
                            tx, meta);
}

/* Records a first request's answer (number + code key i, no eventId); returns the bytes the
 * records' figure grew by. */
static size_t record_answer(struct th_guard *g, long i, const char *body, size_t len)
{
    struct th_guard_memory m0, m1;
    th_guard_memory(g, &m0);
    struct th_phone p = raw_phone(i);
    struct th_dedupe *t = NULL;
    struct th_dedupe_answer a = {0};
    assert_int_equal(th_guard_dedupe_begin(g, NULL, p.e164, "123456", TH_CHANNEL_SMS, 0, &t, &a),
                     TH_DEDUPE_FIRST);
    th_guard_dedupe_finish(g, t, 200, body, len);
    th_guard_memory(g, &m1);
    return m1.record_bytes - m0.record_bytes;
}

/* The answer replayed to request i's duplicate is byte for byte (body, len). */
static void assert_replayed(struct th_guard *g, long i, const char *body, size_t len)
{
    struct th_phone p = raw_phone(i);
    struct th_dedupe *t = NULL;
    struct th_dedupe_answer a = {0};
    assert_int_equal(th_guard_dedupe_begin(g, NULL, p.e164, "123456", TH_CHANNEL_SMS, 0, &t, &a),
                     TH_DEDUPE_DONE);
    assert_int_equal(a.status, 200);
    assert_int_equal(a.len, len);
    assert_memory_equal(a.body, body, len);
    assert_int_equal(a.body[len], '\0');
    free(a.body);
}

/*
 * Answers whose transactionIds are hex ids of every form a provider gives, and the awkward
 * others, replayed byte for byte. A record is one 48-byte pool slot; the production forms keep
 * their middle inside it (the records' figure grows by the slot only), which takes packing their
 * hex digits two to a byte: plain, a 32-digit id leaves no room. Others may need the heap.
 */
static void test_dedupe_hex_answers_packed_and_replayed(void **state)
{
    (void)state;
    struct th_guard *g = make(NULL);
    char body[1024], tx[512];
    /* the reference: the first answer (its middle is not stored) */
    size_t len =
        answer_with(body, sizeof body, "0123456789abcdef0123456789abcdef", "attempts=1;ms=91");
    record_answer(g, 0, body, len);
    assert_replayed(g, 0, body, len);
    char big[400];
    memset(big, 'z', 140); /* plain parts of 128 and 12; the answer shares half with the first */
    snprintf(big + 140, sizeof big - 140, "%s", "f00dfeed9a8b7c6d");
    const struct {
        const char *tx, *meta;
        bool fits; /* the production forms: the middle in the record */
    } cases[] = {
        {"4b1e0c9d8a7f6e5d4c3b2a1908f7e6d5", "attempts=1;ms=187", true}, /* nginx $request_id */
        {"4B1E0C9D8A7F6E5D4C3B2A1908F7E6D5", "attempts=1;ms=23", true},  /* upper-case */
        {"9e3f1a2b-7c4d-5e6f-8a9b-0c1d2e3f4a5b", "attempts=2;ms=1203", true}, /* AWS MessageId */
        {"9E3F1A2B-7C4D-5E6F-8A9B-0C1D2E3F4A5B", "attempts=1;ms=88", true},   /* upper-case */
        {"SMa1b2c3d4e5f60718293a4b5c6d7e8f90", "attempts=1;ms=240", true},    /* Twilio SID */
        {"SMA1B2C3D4E5F60718293A4B5C6D7E8F90", "attempts=1;ms=7", true},
        /* a UUID whose first digit is the reference's: kept whole, not cut at the shared start */
        {"0e3f1a2b-7c4d-5e6f-8a9b-0c1d2e3f4a5b", "attempts=1;ms=187", true},
        {"0123456789abcdef0123456789abcde0", "attempts=1;ms=91", true}, /* the last digit only */
        {"1123456789abcdef0123456789abcdef", "attempts=1;ms=91", true}, /* the first only */
        {"fedcba9876543210fedcba9876543210", "attempts=1;ms=91", true}, /* hex only, no run */
        {"a1b2c3d4e5f60718293a4b5c6d7e8f9", "attempts=1;ms=5", false},  /* 31 digits: odd */
        {"abcde", "attempts=1;ms=abc", false},                          /* odd runs, short */
        {"deadbeef0123456789abcdef01234567", "ms=beef;cafe", false},    /* hex on both sides */
        {"aBcDeF0123456789aBcDeF0123456789", "attempts=1;ms=5", false}, /* mixed case */
        {"9e3f1a2b-7c4d-5e6f-8A9b-0c1d2e3f4a5b", "attempts=1;ms=5", false}, /* mixed UUID */
        {"9e3f1a2b7-c4d-5e6f-8a9b-0c1d2e3f4a5b", "attempts=1;ms=5", false}, /* dash misplaced */
        {"ghijklmnopqrstuvwxyzghijklmnopqr", "attempts=1;ms=5", false},     /* no hex at all */
        {"0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcd",
         "attempts=1;ms=91", false},      /* longer than one part holds */
        {big, "attempts=1;ms=91", false}, /* past REC_INLINE: the heap */
    };
    size_t ncases = sizeof cases / sizeof cases[0];
    for (size_t i = 0; i < ncases; i++) {
        snprintf(tx, sizeof tx, "%s", cases[i].tx);
        len = answer_with(body, sizeof body, tx, cases[i].meta);
        size_t grew = record_answer(g, (long)i + 1, body, len);
        if (cases[i].fits)
            assert_int_equal(grew, 48);
        if (cases[i].tx == big) /* the overflow is counted (a reference would count ~300) */
            assert_true(grew > 48 + 140 && grew < 48 + 200);
        assert_replayed(g, (long)i + 1, body, len);
    }
    /* bodies sharing nothing with the reference (under 32 bytes: never references themselves):
     * hex at the very start and end, odd runs, runs of both cases side by side */
    static const char *const bare[] = {
        "deadBEEF0123456789abcdef",
        "abc-12345-x",
        "0",
        "fffff",
        "x1234567",
        "ABCDEF",
        "-0123456789abcdef-",
        "12345678-1234-1234-1234-123456789ab",
    };
    for (size_t i = 0; i < sizeof bare / sizeof bare[0]; i++) {
        record_answer(g, (long)(ncases + i + 1), bare[i], strlen(bare[i]));
        assert_replayed(g, (long)(ncases + i + 1), bare[i], strlen(bare[i]));
    }
    /* every earlier answer still replayed exactly once the others came */
    for (size_t i = 0; i < ncases; i++) {
        len = answer_with(body, sizeof body, cases[i].tx, cases[i].meta);
        assert_replayed(g, (long)i + 1, body, len);
    }
    th_guard_free(g);
}

/*
 * The records' pool: fill it, let every record expire, fill it again — the records' count
 * returns to the same figure and the bytes do not grow (freed slots are reused, and a slot is
 * never taken twice: each answer still replays exactly). Requests without an eventId take one
 * dedupe slot each, so the table holds as many records as the pool has slots.
 */
static void test_dedupe_pool_reused(void **state)
{
    (void)state;
    const char *env[] = {"TELEHOOK_GUARD_MAX_ENTRIES=1024", NULL};
    struct th_guard *g = make(env);
    int64_t t = 1767225600 * INT64_C(1000000);
    th_guard_set_clock(g, clock_of, &t);
    struct th_guard_memory m0, m1, m2;
    th_guard_memory(g, &m0);
    char body[512];
    size_t ref_len = okta_answer(body, sizeof body, 0);
    size_t ref_cost = (ref_len + 8 + 15) & ~(size_t)15;
    for (int round = 0; round < 2; round++) {
        long base = round * 100000L;
        for (long i = 0; i < 4 * (long)m0.dedupe_slots; i++) {
            size_t len = okta_answer(body, sizeof body, base + i);
            record_answer(g, base + i, body, len);
            struct th_guard_memory m;
            th_guard_memory(g, &m);
            /* never beyond the pool, nothing on the heap but the reference answer */
            assert_true(m.record_bytes <= m.dedupe_slots * 48 + ref_cost);
        }
        th_guard_memory(g, round ? &m2 : &m1);
        /* the last quarter's answers, replayed from their slots */
        for (long i = 3 * (long)m0.dedupe_slots; i < 4 * (long)m0.dedupe_slots; i += 97) {
            size_t len = okta_answer(body, sizeof body, base + i);
            struct th_phone p = raw_phone(base + i);
            struct th_dedupe *tk = NULL;
            struct th_dedupe_answer a = {0};
            if (th_guard_dedupe_begin(g, NULL, p.e164, "123456", TH_CHANNEL_SMS, 0, &tk, &a) ==
                TH_DEDUPE_DONE) {
                assert_int_equal(a.len, len);
                assert_memory_equal(a.body, body, len);
                free(a.body);
            } else { /* evicted by a later one: a new record, given back */
                th_guard_dedupe_release(g, tk);
            }
        }
        t += 31 * MIN_US; /* every window is over */
    }
    assert_int_equal(m1.records, m1.dedupe_slots); /* full: one record a slot */
    assert_int_equal(m2.records, m1.records);      /* the count returns */
    assert_int_equal(m2.record_bytes, m1.record_bytes);
    assert_int_equal(m1.record_bytes, m1.dedupe_slots * 48 + ref_cost);
    th_guard_free(g);
}

/*
 * Records beyond the dedupe slots: a record whose slots newer ones took lives on while its ticket
 * holds it — those come from the pool's room beyond one record a slot (server.max_connections
 * more), are counted, and go back to it; the pool's high-water mark stays.
 */
static void test_dedupe_records_beyond_the_pool(void **state)
{
    (void)state;
    const char *env[] = {"TELEHOOK_GUARD_MAX_ENTRIES=1024", NULL};
    struct th_guard *g = make(env);
    int64_t t = 1767225600 * INT64_C(1000000);
    th_guard_set_clock(g, clock_of, &t);
    struct th_guard_memory m;
    th_guard_memory(g, &m);
    size_t n = m.dedupe_slots + 100;
    struct th_dedupe **held = calloc(n, sizeof *held);
    assert_non_null(held);
    for (size_t i = 0; i < n; i++) {
        struct th_phone p = raw_phone((long)i);
        struct th_dedupe_answer a = {0};
        assert_int_equal(
            th_guard_dedupe_begin(g, NULL, p.e164, "123456", TH_CHANNEL_SMS, 0, &held[i], &a),
            TH_DEDUPE_FIRST);
    }
    th_guard_memory(g, &m);
    assert_int_equal(m.records, n); /* every one held by its ticket */
    assert_true(m.record_bytes >= m.dedupe_slots * 48 + 100 * 48);
    for (size_t i = 0; i < n; i++)
        th_guard_dedupe_release(g, held[i]);
    th_guard_memory(g, &m);
    assert_true(m.records <= m.dedupe_slots); /* the slots' own */
    assert_int_equal(m.record_bytes, n * 48); /* the pool's high-water mark, nothing on the heap */
    /* their windows over, new requests: the old records go back to the pool as they are swept */
    t += 31 * MIN_US;
    for (long i = 0; i < 2 * (long)m.dedupe_slots; i++) {
        struct th_phone p = raw_phone(100000 + i);
        struct th_dedupe *tk = NULL;
        struct th_dedupe_answer a = {0};
        assert_int_equal(
            th_guard_dedupe_begin(g, NULL, p.e164, "123456", TH_CHANNEL_SMS, 0, &tk, &a),
            TH_DEDUPE_FIRST);
        th_guard_dedupe_release(g, tk);
    }
    th_guard_memory(g, &m);
    assert_true(m.records <= m.dedupe_slots && m.records > m.dedupe_slots / 2);
    assert_int_equal(m.record_bytes, n * 48); /* the pool alone, reused: no more slots touched */
    free(held);
    th_guard_free(g);
}

/*
 * The pool is one record a dedupe slot and one a connection (server.max_connections: the requests
 * that can hold a ticket at once), never the heap: that many held tickets all get a record, one
 * more is sent without the dedupe (TH_DEDUPE_OFF, no ticket) — and once they are given back and
 * their windows are over, the pool serves new requests again.
 */
static void test_dedupe_pool_exhausted(void **state)
{
    (void)state;
    const char *env[] = {"TELEHOOK_GUARD_MAX_ENTRIES=1000", "TELEHOOK_SERVER_MAX_CONNECTIONS=8",
                         NULL};
    struct th_guard *g = make(env);
    int64_t t = 1767225600 * INT64_C(1000000);
    th_guard_set_clock(g, clock_of, &t);
    struct th_guard_memory m;
    th_guard_memory(g, &m);
    size_t n = m.dedupe_slots + 8;
    struct th_dedupe **held = calloc(n, sizeof *held);
    assert_non_null(held);
    for (size_t i = 0; i < n; i++) {
        struct th_phone p = raw_phone((long)i);
        struct th_dedupe_answer a = {0};
        assert_int_equal(
            th_guard_dedupe_begin(g, NULL, p.e164, "123456", TH_CHANNEL_SMS, 0, &held[i], &a),
            TH_DEDUPE_FIRST);
    }
    th_guard_memory(g, &m);
    assert_int_equal(m.records, n);
    assert_int_equal(m.record_bytes, n * 48); /* the pool, full; nothing on the heap */
    /* the last one's duplicate still finds it */
    struct th_phone last = raw_phone((long)n - 1);
    struct th_dedupe *tk = NULL;
    struct th_dedupe_answer a = {0};
    assert_int_equal(
        th_guard_dedupe_begin(g, NULL, last.e164, "123456", TH_CHANNEL_SMS, 0, &tk, &a),
        TH_DEDUPE_PENDING);
    th_guard_dedupe_release(g, tk);
    /* a new one: no record left for it */
    for (long i = 0; i < 3; i++) {
        struct th_phone p = raw_phone((long)n + i);
        tk = (struct th_dedupe *)&tk; /* must be cleared */
        assert_int_equal(
            th_guard_dedupe_begin(g, NULL, p.e164, "123456", TH_CHANNEL_SMS, 0, &tk, &a),
            TH_DEDUPE_OFF);
        assert_null(tk);
    }
    th_guard_memory(g, &m);
    assert_int_equal(m.records, n);
    assert_int_equal(m.record_bytes, n * 48);
    for (size_t i = 0; i < n; i++)
        th_guard_dedupe_release(g, held[i]);
    t += 31 * MIN_US;
    for (long i = 0; i < 2 * (long)m.dedupe_slots; i++) {
        struct th_phone p = raw_phone(100000 + i);
        tk = NULL;
        assert_int_equal(
            th_guard_dedupe_begin(g, NULL, p.e164, "123456", TH_CHANNEL_SMS, 0, &tk, &a),
            TH_DEDUPE_FIRST);
        th_guard_dedupe_finish(g, tk, 200, "{}", 2);
    }
    th_guard_memory(g, &m);
    assert_true(m.records <= m.dedupe_slots);
    assert_int_equal(m.record_bytes, n * 48); /* the same slots, reused */
    free(held);
    th_guard_free(g);
}

/* Request i's number (no eventId) with otpExpires expires_ms: a first's ticket is finished with
 * (body, len); a duplicate's answer must be that, byte for byte. */
static th_dedupe_state dedupe_number(struct th_guard *g, long i, int64_t expires_ms,
                                     const char *body, size_t len)
{
    struct th_phone p = raw_phone(i);
    struct th_dedupe *t = NULL;
    struct th_dedupe_answer a = {0};
    th_dedupe_state st =
        th_guard_dedupe_begin(g, NULL, p.e164, "123456", TH_CHANNEL_SMS, expires_ms, &t, &a);
    if (st == TH_DEDUPE_FIRST) {
        th_guard_dedupe_finish(g, t, 200, body, len);
    } else if (st == TH_DEDUPE_PENDING) {
        th_guard_dedupe_release(g, t);
    } else if (st == TH_DEDUPE_DONE) {
        assert_int_equal(a.status, 200);
        assert_int_equal(a.len, len);
        assert_memory_equal(a.body, body, len);
    }
    free(a.body);
    return st;
}

/*
 * The slots keep their windows' ends in 32 bits of ms after a base, moved when the clock is 2^31
 * ms past it (~24.8 days): twice here, the clock jumping to minutes before each rebase and
 * stepping across it. A record made before the rebase is still replayed, byte for byte, to its
 * window's last millisecond and forgotten at its end; the records whose windows ended before are
 * freed by the rebase itself (the incremental sweep has not reached them).
 */
static void test_dedupe_window_across_rebase(void **state)
{
    (void)state;
    const char *env[] = {"TELEHOOK_GUARD_MAX_ENTRIES=4096", NULL};
    struct th_guard *g = make(env);
    int64_t t = 1767225600 * INT64_C(1000000);
    th_guard_set_clock(g, clock_of, &t); /* the base: now */
    int64_t base = t / 1000;
    char body[512], other[512];
    for (int round = 0; round < 2; round++) {
        size_t olen = okta_answer(other, sizeof other, 77);
        for (long i = 0; i < 200; i++) /* 10-minute windows, over long before the rebase */
            assert_int_equal(dedupe_number(g, round * 1000 + i, 0, other, olen), TH_DEDUPE_FIRST);
        struct th_guard_memory m;
        th_guard_memory(g, &m);
        assert_true(m.records >= 200);
        int64_t start = base + (INT64_C(1) << 31) - 4 * 60000, expires = start + 7 * 60000;
        long b = 5000 + round;
        size_t len = okta_answer(body, sizeof body, b);
        t = start * 1000;
        assert_int_equal(dedupe_number(g, b, expires, body, len), TH_DEDUPE_FIRST);
        for (int k = 1; k <= 6; k++) { /* the 4th step is 4 ms past the rebase point */
            t = (start + k * INT64_C(60001)) * 1000;
            assert_int_equal(dedupe_number(g, b, expires, body, len), TH_DEDUPE_DONE);
            th_guard_memory(g, &m);
            if (k < 4)
                assert_true(m.records > 150); /* not yet: the old ones wait for the sweep */
            else
                assert_int_equal(m.records, 1); /* rebased: only b's is left */
        }
        base = start + 4 * INT64_C(60001);
        t = (expires - 1) * 1000; /* the window's last millisecond */
        assert_int_equal(dedupe_number(g, b, expires, body, len), TH_DEDUPE_DONE);
        t = expires * 1000; /* over */
        assert_int_equal(dedupe_number(g, b, expires, body, len), TH_DEDUPE_FIRST);
        th_guard_memory(g, &m);
        assert_int_equal(m.records, 1);
    }
    th_guard_free(g);
}

/*
 * The bytes a record costs, full, with the answers production sends (the three transactionId
 * forms in turn): under 56 bytes each — the 48-byte slot and the pool's slack. The heap layout
 * before took 80 (a 32-byte record and a 48-byte middle), and 48-byte slots with the middle
 * unpacked would take 96.
 */
static void test_dedupe_bytes_per_record(void **state)
{
    (void)state;
    const char *env[] = {"TELEHOOK_GUARD_MAX_ENTRIES=4096", NULL};
    struct th_guard *g = make(env);
    struct th_guard_memory m;
    th_guard_memory(g, &m);
    char body[512], tx[64], meta[40];
    size_t ref_cost = 0;
    for (long i = 0; i < 3 * (long)m.dedupe_slots; i++) {
        unsigned long x = (unsigned long)i * 2654435761UL, y = x * 40503UL;
        if (i % 3 == 0)
            snprintf(tx, sizeof tx, "%016lx%016lx", x, y);
        else if (i % 3 == 1)
            snprintf(tx, sizeof tx, "%08lx-%04lx-%04lx-%04lx-%012lx", x & 0xffffffff, y & 0xffff,
                     (x >> 16) & 0xffff, (y >> 20) & 0xffff, (x ^ y) & 0xffffffffffff);
        else
            snprintf(tx, sizeof tx, "SM%016lx%016lx", y, x);
        snprintf(meta, sizeof meta, "attempts=1;ms=%ld", 80 + i % 900);
        size_t len = answer_with(body, sizeof body, tx, meta);
        if (i == 0)
            ref_cost = (len + 8 + 15) & ~(size_t)15;
        record_answer(g, i, body, len);
    }
    th_guard_memory(g, &m);
    assert_true(m.records > m.dedupe_slots / 2);
    double per = (double)(m.record_bytes - ref_cost) / (double)m.records;
    fprintf(stderr, "# %zu records, %.1f B each\n", m.records, per);
    assert_true(per < 56);
    th_guard_free(g);
}

/*
 * Full tables and a flood of new numbers (each its own user). When every candidate slot of a new
 * key is held, the entry whose loss gives back the fewest sends goes: a number at its limit is
 * kept while its state is worth more than one send, so a flood gives it nothing before that and
 * at most one send after. Two guards side by side, the same sends to one number in both; only
 * one is flooded (twenty times its slots). The shipped per-person limits are on together: a
 * flood's daily-limit entries (72 minutes of state each) must not push out the number's
 * 15-minute state either.
 */
static void test_flood_cannot_escape_limits(void **state)
{
    (void)state;
    const char *env[] = {"TELEHOOK_GUARD_MAX_ENTRIES=1000", "TELEHOOK_GUARD_LIMIT_PHONE=5/15m",
                         "TELEHOOK_GUARD_LIMIT_PHONE_DAILY=20/1d",
                         "TELEHOOK_GUARD_LIMIT_USER=20/1h", NULL};
    const int64_t interval = 3 * MIN_US, period = 15 * MIN_US;
    /* when the flood ends, after the number was stopped at t0; and the sends allowed then may
     * exceed the unflooded guard's by this much */
    static const struct {
        int64_t at;
        int slack;
    } cases[] = {{0, 0},
                 {1, 0},
                 {period / 2, 0},
                 {period - interval - 1000000, 0},
                 {period - interval / 2, 1}};
    struct th_phone target = phone("+12015550123");
    for (size_t c = 0; c < sizeof cases / sizeof cases[0]; c++) {
        int64_t t0 = 1767225600 * INT64_C(1000000), t = t0;
        struct th_guard *g[2] = {make(env), make(env)}; /* g[1] is flooded */
        int sent[2] = {0, 0};
        for (int k = 0; k < 2; k++) {
            th_guard_set_clock(g[k], clock_of, &t);
            while (th_guard_check(g[k], &target, TH_CHANNEL_SMS, "00u-target") == TH_BLOCK_NONE)
                sent[k]++;
        }
        assert_int_equal(sent[0], 5);
        assert_int_equal(sent[1], 5);
        struct th_guard_memory m;
        th_guard_memory(g[1], &m);
        long flood = 20 * (long)m.people_slots;
        char user[32];
        for (long i = 0; i < flood; i++) {
            t = t0 + cases[c].at * i / flood; /* spread up to the moment */
            struct th_phone p = raw_phone(i);
            snprintf(user, sizeof user, "00u%ld", i);
            assert_int_equal(th_guard_check(g[1], &p, TH_CHANNEL_SMS, user), TH_BLOCK_NONE);
        }
        assert_int_equal(th_guard_entries(g[1]), m.people_slots); /* full */
        t = t0 + cases[c].at;
        int after[2] = {0, 0};
        for (int k = 0; k < 2; k++)
            while (after[k] < 10 &&
                   th_guard_check(g[k], &target, TH_CHANNEL_SMS, "00u-target") == TH_BLOCK_NONE)
                after[k]++;
        if (after[1] < after[0] || after[1] > after[0] + cases[c].slack)
            fail_msg("flood until t0+%llds: %d sends after it, %d without it",
                     (long long)(cases[c].at / 1000000), after[1], after[0]);
        th_guard_free(g[0]);
        th_guard_free(g[1]);
    }
}

/* ---- dedupe waiters: woken through their loop, exactly once ---- */

struct waiter {
    struct wctx *ctx;
    struct th_dedupe *t;
    int calls;
    th_dedupe_state seen; /* what th_guard_dedupe_poll said when woken */
    char body[32];
};

struct wctx {
    struct th_guard *g;
    struct th_loop *loop;
    struct th_timer bound;
    int woken, expect; /* stop the loop once expect waiters were woken */
};

static void on_woken(void *ud)
{
    struct waiter *w = ud;
    struct th_dedupe_answer a = {0};
    w->calls++;
    w->seen = th_guard_dedupe_poll(w->ctx->g, w->t, &a);
    if (a.body)
        snprintf(w->body, sizeof w->body, "%s", a.body);
    free(a.body);
    if (++w->ctx->woken == w->ctx->expect)
        th_loop_stop(w->ctx->loop);
}

static void on_bound(void *ud)
{
    th_loop_stop(((struct wctx *)ud)->loop);
}

/* Runs the loop until expect waiters were woken, or bound_ms (then: what came, came). A loop
 * once stopped stays stopped: called again, it only runs what is queued on it — where a late or
 * second wake would be. */
static void run_until(struct wctx *c, int expect, int bound_ms)
{
    c->expect = expect;
    th_loop_timer_set(c->loop, &c->bound, th_mono_us() + bound_ms * 1000, on_bound, c);
    th_loop_run(c->loop);
    th_loop_timer_cancel(c->loop, &c->bound);
}

static struct th_dedupe *first(struct th_guard *g, const char *ev)
{
    struct th_dedupe *t = NULL;
    struct th_dedupe_answer a = {0};
    assert_int_equal(
        th_guard_dedupe_begin(g, ev, "+12015550123", "123456", TH_CHANNEL_SMS, 0, &t, &a),
        TH_DEDUPE_FIRST);
    return t;
}

static void duplicate(struct wctx *c, const char *ev, struct waiter *w)
{
    struct th_dedupe_answer a = {0};
    *w = (struct waiter){.ctx = c};
    assert_int_equal(
        th_guard_dedupe_begin(c->g, ev, "+12015550123", "123456", TH_CHANNEL_SMS, 0, &w->t, &a),
        TH_DEDUPE_PENDING);
}

struct finisher {
    struct th_guard *g;
    struct th_dedupe *t;
    const char *body; /* NULL: release without an answer */
};

static void *finish_elsewhere(void *arg)
{
    struct finisher *f = arg;
    if (f->body)
        th_guard_dedupe_finish(f->g, f->t, 200, f->body, strlen(f->body));
    else
        th_guard_dedupe_release(f->g, f->t);
    return NULL;
}

static void wctx_init(struct wctx *c)
{
    *c = (struct wctx){.g = make(NULL)};
    assert_int_equal(th_loop_new(&c->loop), TH_E_OK);
}

static void wctx_free(struct wctx *c)
{
    th_loop_free(c->loop);
    th_guard_free(c->g);
}

/* The first finishes on another thread: each waiter is woken once, on its loop, with the answer. */
static void test_dedupe_waiters_woken_once_on_finish(void **state)
{
    (void)state;
    struct wctx c;
    wctx_init(&c);
    struct th_dedupe *t1 = first(c.g, "ev-w1");
    struct waiter w[3];
    for (int i = 0; i < 3; i++) {
        duplicate(&c, "ev-w1", &w[i]);
        assert_int_equal(th_guard_dedupe_wait(c.g, w[i].t, c.loop, on_woken, &w[i]), TH_E_OK);
    }
    assert_int_equal(th_guard_dedupe_wait(c.g, w[0].t, c.loop, on_woken, &w[0]), TH_E_INVAL);
    assert_int_equal(th_guard_dedupe_wait(c.g, t1, c.loop, on_woken, &w[0]), TH_E_INVAL);
    struct finisher f = {c.g, t1, "{\"tx\":\"w1\"}"};
    pthread_t th;
    assert_int_equal(pthread_create(&th, NULL, finish_elsewhere, &f), 0);
    pthread_join(th, NULL);
    run_until(&c, 3, 2000);
    /* a late duplicate waits after the first finished: woken at once, through the loop */
    struct waiter late;
    struct th_dedupe_answer a = {0};
    late = (struct waiter){.ctx = &c};
    assert_int_equal(th_guard_dedupe_begin(c.g, "ev-w1", "+12015550123", "123456", TH_CHANNEL_SMS,
                                           0, &late.t, &a),
                     TH_DEDUPE_DONE); /* done: replayed directly, no ticket */
    free(a.body);
    for (int i = 0; i < 3; i++) {
        assert_int_equal(w[i].calls, 1);
        assert_int_equal(w[i].seen, TH_DEDUPE_DONE);
        assert_string_equal(w[i].body, "{\"tx\":\"w1\"}");
        th_guard_dedupe_release(c.g, w[i].t);
    }
    assert_int_equal(c.woken, 3);
    wctx_free(&c);
}

/* The first gives up without an answer: each waiter is woken once and polls PENDING. A waiter
 * that registers after that is woken at once. */
static void test_dedupe_waiters_woken_once_on_release(void **state)
{
    (void)state;
    struct wctx c;
    wctx_init(&c);
    struct th_dedupe *t1 = first(c.g, "ev-w2");
    struct waiter w[2], late;
    for (int i = 0; i < 2; i++) {
        duplicate(&c, "ev-w2", &w[i]);
        assert_int_equal(th_guard_dedupe_wait(c.g, w[i].t, c.loop, on_woken, &w[i]), TH_E_OK);
    }
    struct finisher f = {c.g, t1, NULL};
    pthread_t th;
    assert_int_equal(pthread_create(&th, NULL, finish_elsewhere, &f), 0);
    pthread_join(th, NULL);
    duplicate(&c, "ev-w2", &late);
    assert_int_equal(th_guard_dedupe_wait(c.g, late.t, c.loop, on_woken, &late), TH_E_OK);
    run_until(&c, 3, 2000);
    run_until(&c, 4, 50); /* nothing more is queued */
    for (int i = 0; i < 2; i++) {
        assert_int_equal(w[i].calls, 1);
        assert_int_equal(w[i].seen, TH_DEDUPE_PENDING);
        th_guard_dedupe_release(c.g, w[i].t);
    }
    assert_int_equal(late.calls, 1);
    assert_int_equal(late.seen, TH_DEDUPE_PENDING);
    th_guard_dedupe_release(c.g, late.t);
    assert_int_equal(c.woken, 3);
    wctx_free(&c);
}

/* A waiter that gives its ticket back is never called: before the first finishes, and after the
 * first finished but before its loop ran the wake (the race with the finishing thread). */
static void test_dedupe_waiter_cancel(void **state)
{
    (void)state;
    struct wctx c;
    wctx_init(&c);
    struct th_dedupe *t1 = first(c.g, "ev-w3");
    struct waiter early, queued, kept;
    duplicate(&c, "ev-w3", &early);
    duplicate(&c, "ev-w3", &queued);
    duplicate(&c, "ev-w3", &kept);
    assert_int_equal(th_guard_dedupe_wait(c.g, early.t, c.loop, on_woken, &early), TH_E_OK);
    assert_int_equal(th_guard_dedupe_wait(c.g, queued.t, c.loop, on_woken, &queued), TH_E_OK);
    assert_int_equal(th_guard_dedupe_wait(c.g, kept.t, c.loop, on_woken, &kept), TH_E_OK);
    th_guard_dedupe_release(c.g, early.t); /* registered, not woken */
    struct finisher f = {c.g, t1, "{}"};
    pthread_t th;
    assert_int_equal(pthread_create(&th, NULL, finish_elsewhere, &f), 0);
    pthread_join(th, NULL);
    th_guard_dedupe_release(c.g, queued.t); /* its wake is in the loop's mailbox now */
    run_until(&c, 1, 2000);
    run_until(&c, 2, 50);
    assert_int_equal(early.calls, 0);
    assert_int_equal(queued.calls, 0);
    assert_int_equal(kept.calls, 1);
    assert_int_equal(c.woken, 1);
    th_guard_dedupe_release(c.g, kept.t);
    wctx_free(&c);
}

/* At most 64 waiters per record; the next is told so and never called. */
static void test_dedupe_waiter_cap(void **state)
{
    (void)state;
    enum { CAP = 64 };
    struct wctx c;
    wctx_init(&c);
    struct th_dedupe *t1 = first(c.g, "ev-w4");
    static struct waiter w[CAP + 1];
    for (int i = 0; i < CAP; i++) {
        duplicate(&c, "ev-w4", &w[i]);
        assert_int_equal(th_guard_dedupe_wait(c.g, w[i].t, c.loop, on_woken, &w[i]), TH_E_OK);
    }
    duplicate(&c, "ev-w4", &w[CAP]);
    assert_int_equal(th_guard_dedupe_wait(c.g, w[CAP].t, c.loop, on_woken, &w[CAP]), TH_E_OVERLOAD);
    th_guard_dedupe_finish(c.g, t1, 200, "{}", 2);
    run_until(&c, CAP, 2000);
    run_until(&c, CAP + 1, 50);
    assert_int_equal(c.woken, CAP);
    for (int i = 0; i < CAP; i++)
        assert_int_equal(w[i].calls, 1);
    assert_int_equal(w[CAP].calls, 0);
    /* over the cap it can still poll, as the request's deadline does */
    struct th_dedupe_answer a = {0};
    assert_int_equal(th_guard_dedupe_poll(c.g, w[CAP].t, &a), TH_DEDUPE_DONE);
    free(a.body);
    for (int i = 0; i <= CAP; i++)
        th_guard_dedupe_release(c.g, w[i].t);
    wctx_free(&c);
}

/* The sizes /metrics shows: records and waiters go up and down with the tickets, and a record
 * forgotten at the end of its window is counted out (a new one for the same keys is one). */
static void test_dedupe_sizes(void **state)
{
    (void)state;
    struct wctx c;
    wctx_init(&c);
    int64_t t = 1767225600 * INT64_C(1000000);
    th_guard_set_clock(c.g, clock_of, &t);
    size_t recs = 9, waits = 9;
    th_guard_dedupe_sizes(c.g, &recs, &waits);
    assert_int_equal(recs, 0);
    assert_int_equal(waits, 0);
    struct th_dedupe *t1 = first(c.g, "ev-s1");
    struct waiter w[2];
    for (int i = 0; i < 2; i++) {
        duplicate(&c, "ev-s1", &w[i]);
        assert_int_equal(th_guard_dedupe_wait(c.g, w[i].t, c.loop, on_woken, &w[i]), TH_E_OK);
    }
    th_guard_dedupe_sizes(c.g, &recs, &waits);
    assert_int_equal(recs, 1); /* one record, whatever the number of its slots and tickets */
    assert_int_equal(waits, 2);
    th_guard_dedupe_release(c.g, w[1].t); /* unregistered before any wake */
    th_guard_dedupe_sizes(c.g, &recs, &waits);
    assert_int_equal(waits, 1);
    th_guard_dedupe_finish(c.g, t1, 200, "{}", 2);
    th_guard_dedupe_sizes(c.g, &recs, &waits);
    assert_int_equal(recs, 1); /* remembered for its window */
    assert_int_equal(waits, 0);
    run_until(&c, 1, 2000);
    th_guard_dedupe_release(c.g, w[0].t);
    t += 11 * MIN_US; /* past the default window: the next begin frees the old slots */
    struct th_dedupe *t2 = first(c.g, "ev-s1"); /* the same event and code: both slots */
    th_guard_dedupe_finish(c.g, t2, 200, "{}", 2);
    th_guard_dedupe_sizes(c.g, &recs, &waits);
    assert_int_equal(recs, 1);
    assert_int_equal(waits, 0);
    wctx_free(&c);
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
        cmocka_unit_test(test_calling_code_rules),
        cmocka_unit_test(test_bad_calling_code_rules_refused),
        cmocka_unit_test(test_bounded_under_flood),
        cmocka_unit_test(test_dedupe),
        cmocka_unit_test(test_dedupe_waiters_woken_once_on_finish),
        cmocka_unit_test(test_dedupe_waiters_woken_once_on_release),
        cmocka_unit_test(test_dedupe_waiter_cancel),
        cmocka_unit_test(test_dedupe_waiter_cap),
        cmocka_unit_test(test_dedupe_sizes),
        cmocka_unit_test(test_code_ban_without_default_budget),
        cmocka_unit_test(test_budget_resets_at_utc_midnight),
        cmocka_unit_test(test_dedupe_window_expiry_and_cap),
        cmocka_unit_test(test_dedupe_full_table_keeps_the_newest),
        cmocka_unit_test(test_shipped_phone_limits_together),
        cmocka_unit_test(test_limits_never_share_a_slot),
        cmocka_unit_test(test_memory_per_key),
        cmocka_unit_test(test_dedupe_answers_replayed_exactly),
        cmocka_unit_test(test_dedupe_hex_answers_packed_and_replayed),
        cmocka_unit_test(test_dedupe_pool_reused),
        cmocka_unit_test(test_dedupe_records_beyond_the_pool),
        cmocka_unit_test(test_dedupe_pool_exhausted),
        cmocka_unit_test(test_dedupe_window_across_rebase),
        cmocka_unit_test(test_dedupe_bytes_per_record),
        cmocka_unit_test(test_flood_cannot_escape_limits),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
