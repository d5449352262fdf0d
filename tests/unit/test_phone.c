/* Unit tests: phone (E.164 normalisation, region, line type, masking, threads). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <pthread.h>
#include <string.h>

#include "phone/phone.h"

static th_err parse(const char *raw, const char *region, struct th_phone *p)
{
    return th_phone_parse(raw, strlen(raw), region, p);
}

static void ok(const char *raw, const char *region, const char *e164, const char *cc)
{
    struct th_phone p;
    assert_int_equal(parse(raw, region, &p), TH_E_OK);
    assert_string_equal(p.e164, e164);
    assert_string_equal(p.region, cc);
}

static void bad(const char *raw, const char *region)
{
    struct th_phone p;
    assert_int_equal(parse(raw, region, &p), TH_E_PHONE);
    assert_string_equal(p.e164, "");
}

static void test_formats(void **state)
{
    (void)state;
    ok("+12015550123", "US", "+12015550123", "US");
    ok("+1 (201) 555-0123", "US", "+12015550123", "US");
    ok("+1.201.555.0123", "", "+12015550123", "US");
    ok("+34 612 345 678", "US", "+34612345678", "ES");
    ok("+44 7400 123456", NULL, "+447400123456", "GB");
}

static void test_without_plus(void **state)
{
    (void)state;
    /* not valid nationally: international */
    ok("447400123456", "US", "+447400123456", "GB");
    ok("12015550123", "US", "+12015550123", "US");
    ok("34612345678", "", "+34612345678", "ES");
    /* national in the default region: 020 7946 0000 is not valid as +20..., valid in GB */
    ok("02079460000", "GB", "+442079460000", "GB");
    bad("02079460000", "");
    bad("02079460000", NULL);
}

/* Without '+', each case: input, default region, the number taken, its region, and the other
 * (international) reading reported when both are valid and differ. */
static void test_national_reading_preferred(void **state)
{
    (void)state;
    static const struct {
        const char *raw, *region, *e164, *cc, *intl;
    } cases[] = {
        /* valid both ways: a US national number, also +20 1555 0123 in Egypt */
        {"2015550123", "US", "+12015550123", "US", "+2015550123"},
        {"(201) 555-0123", "US", "+12015550123", "US", "+2015550123"},
        /* valid both ways elsewhere: a GB UAN, also +55 3004 9382 in Brazil; a German mobile
         * without its 0, also +1 512 345 6789 in Texas */
        {"5530049382", "GB", "+445530049382", "GB", "+5530049382"},
        {"15123456789", "DE", "+4915123456789", "DE", "+15123456789"},
        /* only valid internationally (447 700 900 123 is not valid for libphonenumber: Ofcom's
         * drama range) */
        {"447400123456", "US", "+447400123456", "GB", ""},
        /* only valid nationally: +65 0253 0000 is no Singapore number */
        {"6502530000", "US", "+16502530000", "US", ""},
        /* the same number either way: nothing to report */
        {"12015550123", "US", "+12015550123", "US", ""},
        {"15123456789", "US", "+15123456789", "US", ""},
        /* no default region: international only, as written */
        {"2015550123", NULL, "+2015550123", "EG", ""},
        {"2015550123", "", "+2015550123", "EG", ""},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        struct th_phone p;
        assert_int_equal(parse(cases[i].raw, cases[i].region, &p), TH_E_OK);
        assert_string_equal(p.e164, cases[i].e164);
        assert_string_equal(p.region, cases[i].cc);
        assert_string_equal(p.intl_e164, cases[i].intl);
    }
    /* with '+' there is one reading */
    struct th_phone p;
    assert_int_equal(parse("+2015550123", "US", &p), TH_E_OK);
    assert_string_equal(p.e164, "+2015550123");
    assert_string_equal(p.intl_e164, "");
    /* refused either way: nothing reported */
    assert_int_equal(parse("9876543210", "US", &p), TH_E_PHONE);
    assert_string_equal(p.intl_e164, "");
}

static void test_non_geographic_codes(void **state)
{
    (void)state;
    static const int non_geo[] = {800, 808, 870, 878, 881, 882, 883, 888, 979};
    for (size_t i = 0; i < sizeof non_geo / sizeof non_geo[0]; i++) {
        assert_true(th_phone_code_known(non_geo[i]));
        assert_true(th_phone_code_non_geographic(non_geo[i]));
    }
    static const int geo[] = {1, 7, 44, 20, 34, 886};
    for (size_t i = 0; i < sizeof geo / sizeof geo[0]; i++) {
        assert_true(th_phone_code_known(geo[i]));
        assert_false(th_phone_code_non_geographic(geo[i]));
    }
    static const int unknown[] = {0, -1, 999, 1000, 801, 889, 100000};
    for (size_t i = 0; i < sizeof unknown / sizeof unknown[0]; i++) {
        assert_false(th_phone_code_known(unknown[i]));
        assert_false(th_phone_code_non_geographic(unknown[i]));
    }
    /* an Iridium number: no country */
    struct th_phone p;
    assert_int_equal(parse("+881612345678", "US", &p), TH_E_OK);
    assert_int_equal(p.country_code, 881);
    assert_string_equal(p.region, "");
}

static void test_placeholder_refused(void **state)
{
    (void)state;
    /* Okta's Preview placeholder must not become anyone's phone number */
    bad("9876543210", "US");
    bad("9876543210", "");
    bad("+15555551212", "US"); /* 555 is not an assigned area code */
}

static void test_junk_refused(void **state)
{
    (void)state;
    bad("", "US");
    bad("abc", "US");
    bad("+1 201 555 0123 ext 5", "US");
    bad("+1201555012#", "US");
    bad("++12015550123", "US");
    bad("1+2015550123", "US");
    bad("1234567890123456", "US"); /* 16 digits */
    bad("12", "US");
    char longer[TH_PHONE_MAX_INPUT + 2];
    memset(longer, ' ', sizeof longer - 1);
    longer[sizeof longer - 1] = '\0';
    memcpy(longer, "+12015550123", 12);
    bad(longer, "US");
    /* len bounds the read: no NUL needed */
    struct th_phone p;
    assert_int_equal(th_phone_parse("+12015550123XYZ", 12, "US", &p), TH_E_OK);
    assert_string_equal(p.e164, "+12015550123");
}

/* E.164 keeps the leading zeros of Italian (and San Marino, Vatican) numbers; other countries'
 * national prefix 0 is dropped. Checked against libphonenumber's Format(E164) on every example
 * number of every region and type when written. */
static void test_e164_leading_zeros(void **state)
{
    (void)state;
    const char *in[][2] = {{"+39 06 6982 0000", "+390669820000"},
                           {"+39 312 345 6789", "+393123456789"},
                           {"+378 0549 886377", "+3780549886377"},
                           {"+44 (0)20 7946 0000", "+442079460000"},
                           {"+49 030 901820", "+4930901820"}};
    for (size_t i = 0; i < sizeof in / sizeof in[0]; i++) {
        struct th_phone p;
        assert_int_equal(parse(in[i][0], "US", &p), TH_E_OK);
        assert_string_equal(p.e164, in[i][1]);
    }
}

static void test_types(void **state)
{
    (void)state;
    struct th_phone p;
    assert_int_equal(parse("+449098790000", NULL, &p), TH_E_OK);
    assert_int_equal(p.type, TH_PHONE_PREMIUM_RATE);
    assert_int_equal(p.country_code, 44);
    assert_int_equal(parse("+18005551212", NULL, &p), TH_E_OK);
    assert_int_equal(p.type, TH_PHONE_TOLL_FREE);
    assert_int_equal(parse("+442079460000", NULL, &p), TH_E_OK);
    assert_int_equal(p.type, TH_PHONE_FIXED_LINE);
    assert_int_equal(parse("+34612345678", NULL, &p), TH_E_OK);
    assert_int_equal(p.type, TH_PHONE_MOBILE);
    assert_string_equal(th_phone_type_name(TH_PHONE_PREMIUM_RATE), "PREMIUM_RATE");
    assert_string_equal(th_phone_type_name((th_phone_type)99), "UNKNOWN");
}

static void test_regions(void **state)
{
    (void)state;
    assert_true(th_phone_region_known("US"));
    assert_true(th_phone_region_known("ES"));
    assert_false(th_phone_region_known("XX"));
    assert_false(th_phone_region_known("us"));
    assert_false(th_phone_region_known(NULL));
}

static void mask(const char *in, const char *want)
{
    char out[32];
    th_phone_mask(in, out, sizeof out);
    assert_string_equal(out, want);
}

static void test_mask(void **state)
{
    (void)state;
    mask("+12065550123", "+1206*****23");
    mask("+447400123456", "+4474******56");
    mask("+3225551234", "+3225****34");
    mask("+12345678", "+12****78");
    mask("+1234", "+1**4");
    mask("", "+");
    mask("garbage", "+");
    char tiny[6];
    th_phone_mask("+12065550123", tiny, sizeof tiny);
    assert_string_equal(tiny, "+1206");
    th_phone_mask("+12065550123", tiny, 0); /* no write at all */
}

static void *parse_many(void *arg)
{
    (void)arg;
    for (int i = 0; i < 300; i++) {
        struct th_phone p;
        if (parse(i % 2 ? "+34612345678" : "12015550123", "US", &p) != TH_E_OK ||
            strcmp(p.e164, i % 2 ? "+34612345678" : "+12015550123") != 0)
            return (void *)1;
    }
    return NULL;
}

static void test_threads(void **state)
{
    (void)state;
    th_phone_init();
    pthread_t t[2];
    for (int i = 0; i < 2; i++)
        pthread_create(&t[i], NULL, parse_many, NULL);
    for (int i = 0; i < 2; i++) {
        void *r;
        pthread_join(t[i], &r);
        assert_null(r);
    }
}

/* The per-thread cache answers exactly as a fresh parse would, per default region. */
static void test_cache_is_transparent(void **state)
{
    (void)state;
    struct th_phone a, b;
    for (int i = 0; i < 3; i++) {
        assert_int_equal(th_phone_parse("07400 123456", 12, "GB", &a), TH_E_OK);
        assert_string_equal(a.e164, "+447400123456");
        assert_int_equal(a.type, TH_PHONE_MOBILE);
        /* the same characters without a default region: a different question */
        assert_int_equal(th_phone_parse("07400 123456", 12, NULL, &b), TH_E_PHONE);
        assert_string_equal(b.e164, "");
        assert_int_equal(th_phone_parse("07400 123456", 12, "US", &b), TH_E_PHONE);
    }
    /* a prefix of a cached input is not the cached input */
    assert_int_equal(th_phone_parse("07400 12345", 11, "GB", &b),
                     th_phone_parse("07400 12345", 11, "GB", &a));
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_cache_is_transparent),
        cmocka_unit_test(test_formats),
        cmocka_unit_test(test_without_plus),
        cmocka_unit_test(test_national_reading_preferred),
        cmocka_unit_test(test_non_geographic_codes),
        cmocka_unit_test(test_placeholder_refused),
        cmocka_unit_test(test_junk_refused),
        cmocka_unit_test(test_e164_leading_zeros),
        cmocka_unit_test(test_types),
        cmocka_unit_test(test_regions),
        cmocka_unit_test(test_mask),
        cmocka_unit_test(test_threads),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
