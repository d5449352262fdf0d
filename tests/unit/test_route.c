/* Unit tests: route/route (attempt lists, keys, most-specific lookup). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <stdlib.h>
#include <string.h>

#include "common/buf.h"
#include "config/config.h"
#include "obs/metrics.h"
#include "route/route.h"
#include "route/router.h"

static void test_parse_attempts(void **state)
{
    (void)state;
    struct th_route r;
    char err[256];
    assert_int_equal(th_route_parse(" aws:+12065550100 ,Twilio:MG0123, outbox,"
                                    "aws:arn:aws:sms-voice:us-east-1:111:pool/pool-1",
                                    NULL, NULL, &r, err, sizeof err),
                     TH_E_OK);
    assert_int_equal(r.n, 4);
    assert_string_equal(r.at[0].provider, "aws");
    assert_string_equal(r.at[0].sender, "+12065550100");
    assert_string_equal(r.at[1].provider, "twilio"); /* names are case-insensitive */
    assert_string_equal(r.at[1].sender, "MG0123");
    assert_string_equal(r.at[2].provider, "outbox");
    assert_string_equal(r.at[2].sender, "");
    assert_string_equal(r.at[3].sender, "arn:aws:sms-voice:us-east-1:111:pool/pool-1");
    char text[512];
    th_route_format(&r, text, sizeof text);
    assert_string_equal(text, "aws:+12065550100, twilio:MG0123, outbox, "
                              "aws:arn:aws:sms-voice:us-east-1:111:pool/pool-1");
}

static void test_parse_errors(void **state)
{
    (void)state;
    struct th_route r;
    char err[256];
    const char *bad[] = {"",      "aws,,twilio",    "carrierpigeon",
                         "aws:",  "aws:+1<script>", "aws,aws,aws,aws,aws,aws,aws,aws,aws",
                         ":+1206"};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        err[0] = '\0';
        assert_int_equal(th_route_parse(bad[i], NULL, NULL, &r, err, sizeof err), TH_E_INVAL);
        assert_true(err[0] != '\0');
    }
}

static bool only_aws(void *ud, const char *name)
{
    (void)ud;
    return strcmp(name, "aws") == 0;
}

static void test_parse_known(void **state)
{
    (void)state;
    struct th_route r;
    char err[256];
    assert_int_equal(th_route_parse("aws, twilio", only_aws, NULL, &r, err, sizeof err),
                     TH_E_INVAL);
    assert_non_null(strstr(err, "twilio"));
}

static void test_keys(void **state)
{
    (void)state;
    char ch[8], cc[4], err[128];
    assert_int_equal(th_route_key("SMS", "us", ch, cc, err, sizeof err), TH_E_OK);
    assert_string_equal(ch, "sms");
    assert_string_equal(cc, "US");
    assert_int_equal(th_route_key("*", "*", ch, cc, err, sizeof err), TH_E_OK);
    assert_int_equal(th_route_key("fax", "US", ch, cc, err, sizeof err), TH_E_INVAL);
    assert_int_equal(th_route_key("sms", "USA", ch, cc, err, sizeof err), TH_E_INVAL);
    assert_int_equal(th_route_key("sms", "1A", ch, cc, err, sizeof err), TH_E_INVAL);
}

static void add(struct th_routes *rs, const char *ch, const char *cc, const char *attempts)
{
    struct th_route r = {0};
    char err[128];
    assert_int_equal(th_route_key(ch, cc, r.channel, r.country, err, sizeof err), TH_E_OK);
    assert_int_equal(th_route_parse(attempts, NULL, NULL, &r, err, sizeof err), TH_E_OK);
    assert_int_equal(th_routes_add(rs, &r), TH_E_OK);
}

static void test_most_specific_first(void **state)
{
    (void)state;
    struct th_routes *rs;
    assert_int_equal(th_routes_new(&rs), TH_E_OK);
    assert_null(th_routes_find(rs, TH_CHANNEL_SMS, "US"));
    add(rs, "*", "*", "outbox");
    add(rs, "*", "DE", "aws:sender-de");
    add(rs, "sms", "*", "twilio");
    add(rs, "sms", "US", "aws:+12065550100");
    assert_string_equal(th_routes_find(rs, TH_CHANNEL_SMS, "US")->at[0].sender, "+12065550100");
    assert_string_equal(th_routes_find(rs, TH_CHANNEL_SMS, "DE")->at[0].provider, "twilio");
    assert_string_equal(th_routes_find(rs, TH_CHANNEL_VOICE, "DE")->at[0].sender, "sender-de");
    assert_string_equal(th_routes_find(rs, TH_CHANNEL_VOICE, "US")->at[0].provider, "outbox");
    assert_string_equal(th_routes_find(rs, TH_CHANNEL_VOICE, "")->at[0].provider, "outbox");
    /* re-adding a key replaces it */
    add(rs, "sms", "US", "webhook");
    assert_int_equal(th_routes_count(rs), 4);
    assert_string_equal(th_routes_find(rs, TH_CHANNEL_SMS, "US")->at[0].provider, "webhook");
    th_routes_free(rs);
}

static long skipped_gauge(struct th_router *r)
{
    struct th_buf b;
    th_buf_init(&b, 1 << 16);
    struct th_metrics *m;
    assert_int_equal(th_metrics_new(&m), TH_E_OK);
    assert_int_equal(th_router_metrics(r, m), TH_E_OK);
    th_metrics_render(m, &b);
    th_metrics_free(m);
    const char *g = strstr(th_buf_str(&b), "\ntelehook_routes_skipped ");
    long v = g ? strtol(g + strlen("\ntelehook_routes_skipped "), NULL, 10) : -1;
    th_buf_release(&b);
    return v;
}

/* A stored route naming a provider that is not configured never stops the start or a reload. */
static void test_router_skips_unconfigured(void **state)
{
    (void)state;
    struct th_config cfg;
    char err[512];
    char *env[] = {NULL};
    assert_int_equal(th_config_load(&cfg, NULL, env, err, sizeof err), TH_E_OK); /* outbox */
    struct th_routes *rs;
    assert_int_equal(th_routes_new(&rs), TH_E_OK);
    add(rs, "sms", "*", "twilio, outbox"); /* cut to outbox */
    add(rs, "voice", "GB", "twilio");      /* left out: the default carries it */
    add(rs, "*", "*", "outbox");           /* untouched */
    struct th_router *r = NULL;
    assert_int_equal(th_router_new(&cfg, NULL, rs, &r, err, sizeof err), TH_E_OK);
    assert_string_equal(th_router_describe(r), "outbox");
    assert_int_equal(skipped_gauge(r), 2);
    /* a reload is cut the same way instead of being refused */
    assert_int_equal(th_routes_new(&rs), TH_E_OK);
    add(rs, "sms", "US", "webhook, outbox");
    assert_int_equal(th_router_swap_routes(r, rs, err, sizeof err), TH_E_OK);
    assert_int_equal(skipped_gauge(r), 1);
    assert_int_equal(th_routes_new(&rs), TH_E_OK);
    add(rs, "sms", "US", "outbox");
    assert_int_equal(th_router_swap_routes(r, rs, err, sizeof err), TH_E_OK);
    assert_int_equal(skipped_gauge(r), 0);
    th_router_free(r);
    /* the default provider itself still has to work */
    free(cfg.provider_name);
    cfg.provider_name = strdup("twilio");
    assert_int_equal(th_router_new(&cfg, NULL, NULL, &r, err, sizeof err), TH_E_CONFIG);
    assert_non_null(strstr(err, "account_sid"));
    th_config_release(&cfg);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_parse_attempts),
        cmocka_unit_test(test_parse_errors),
        cmocka_unit_test(test_parse_known),
        cmocka_unit_test(test_keys),
        cmocka_unit_test(test_most_specific_first),
        cmocka_unit_test(test_router_skips_unconfigured),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
