// Unit test (C++): th_phone_parse (its fast path for North American E.164 numbers, its region
// shortcut for shared calling codes, its cache) against libphonenumber's own Parse, on every
// example number libphonenumber has (each region and type, each non-geographic entity) and on
// thousands of variants of them: other last digits, a national prefix written after the calling
// code, a digit more or less, no '+'. Both must agree on validity and, when valid, on the E.164
// form, region, calling code and line type.
#include <cstdio>
#include <cstring>
#include <random>
#include <set>
#include <string>

#include <phonenumbers/phonenumber.pb.h>
#include <phonenumbers/phonenumberutil.h>

// cmocka last: its fail() macro would rename std::basic_ios::fail
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

extern "C" {
#include <cmocka.h>
}

extern "C" {
#include "phone/phone.h"
}

using i18n::phonenumbers::PhoneNumber;
using i18n::phonenumbers::PhoneNumberUtil;

namespace
{

struct ref {
    bool ok = false;
    std::string e164, region;
    int cc = 0;
    PhoneNumberUtil::PhoneNumberType type = PhoneNumberUtil::UNKNOWN;
};

// What telehook did before the fast path: Parse as international, validate, classify, region.
// Like telehook (and E.164), it refuses more than 15 digits, which Parse would take.
ref reference(const std::string &s)
{
    PhoneNumberUtil *u = PhoneNumberUtil::GetInstance();
    ref r;
    size_t digits = 0;
    for (char c : s)
        digits += c >= '0' && c <= '9';
    if (digits > 15)
        return r;
    PhoneNumber pn;
    if (u->Parse(s, "ZZ", &pn) != PhoneNumberUtil::NO_PARSING_ERROR || !u->IsValidNumber(pn))
        return r;
    r.ok = true;
    u->Format(pn, PhoneNumberUtil::E164, &r.e164);
    u->GetRegionCodeForNumber(pn, &r.region);
    if (r.region.size() != 2 || r.region == "ZZ")
        r.region.clear();
    r.cc = pn.country_code();
    r.type = u->GetNumberType(pn);
    return r;
}

const char *const type_names[] = {"FIXED_LINE", "MOBILE",          "FIXED_LINE_OR_MOBILE",
                                  "TOLL_FREE",  "PREMIUM_RATE",    "SHARED_COST",
                                  "VOIP",       "PERSONAL_NUMBER", "PAGER",
                                  "UAN",        "VOICEMAIL"};

size_t checked, valid;

// input as telehook receives it; intl: the same number with '+' for the reference.
void agree(const std::string &input, const std::string &intl)
{
    ref r = reference(intl);
    struct th_phone p;
    th_err e = th_phone_parse(input.c_str(), input.size(), nullptr, &p);
    checked++;
    if ((e == TH_E_OK) != r.ok) {
        std::fprintf(stderr, "%s: telehook %s, libphonenumber %s\n", input.c_str(),
                     e == TH_E_OK ? "valid" : "invalid", r.ok ? "valid" : "invalid");
        fail();
    }
    if (!r.ok)
        return;
    valid++;
    if (r.e164 != p.e164 || r.region != p.region || r.cc != p.country_code ||
        std::strcmp(type_names[r.type], th_phone_type_name(p.type)) != 0) {
        std::fprintf(stderr, "%s: telehook %s %s +%d %s, libphonenumber %s %s +%d %s\n",
                     input.c_str(), p.e164, p.region, p.country_code, th_phone_type_name(p.type),
                     r.e164.c_str(), r.region.c_str(), r.cc, type_names[r.type]);
        fail();
    }
}

void variants(const PhoneNumber &ex, const std::string &region, std::mt19937 &rng)
{
    PhoneNumberUtil *u = PhoneNumberUtil::GetInstance();
    std::string e164;
    u->Format(ex, PhoneNumberUtil::E164, &e164);
    std::string cc = "+" + std::to_string(ex.country_code());
    std::string nsn = e164.substr(cc.size());
    agree(e164, e164);
    agree(e164.substr(1), e164); // without '+'
    for (char d = '0'; d <= '9'; d++) {
        std::string v = e164;
        v.back() = d;
        agree(v, v);
    }
    std::uniform_int_distribution<int> digit(0, 9);
    for (int k = 0; k < 4; k++) {
        std::string v = e164;
        for (size_t j = v.size() - 3; j < v.size(); j++)
            v[j] = static_cast<char>('0' + digit(rng));
        agree(v, v);
    }
    std::string longer = e164 + std::to_string(digit(rng)); // one digit more
    agree(longer, longer);
    agree(e164.substr(0, e164.size() - 1), e164.substr(0, e164.size() - 1));
    std::string ndd;
    if (!region.empty())
        u->GetNddPrefixForRegion(region, true, &ndd);
    if (!ndd.empty()) { // "+44 0 7400 123456": Parse strips the national prefix
        agree(cc + ndd + nsn, cc + ndd + nsn);
        agree(cc.substr(1) + ndd + nsn, cc + ndd + nsn);
    }
}

void test_examples_agree(void **state)
{
    (void)state;
    th_phone_init();
    PhoneNumberUtil *u = PhoneNumberUtil::GetInstance();
    std::mt19937 rng(20261201);
    std::set<std::string> regions;
    u->GetSupportedRegions(&regions);
    size_t examples = 0;
    for (const std::string &r : regions) {
        for (int t = PhoneNumberUtil::FIXED_LINE; t <= PhoneNumberUtil::VOICEMAIL; t++) {
            PhoneNumber ex;
            if (!u->GetExampleNumberForType(r, static_cast<PhoneNumberUtil::PhoneNumberType>(t),
                                            &ex))
                continue;
            examples++;
            variants(ex, r, rng);
        }
    }
    std::set<int> codes;
    u->GetSupportedGlobalNetworkCallingCodes(&codes);
    for (int c : codes) {
        PhoneNumber ex;
        if (u->GetExampleNumberForNonGeoEntity(c, &ex)) {
            examples++;
            variants(ex, "", rng);
        }
    }
    std::fprintf(stderr, "%zu example numbers, %zu inputs checked, %zu of them valid\n", examples,
                 checked, valid);
    assert_true(examples > 1000);
    assert_true(valid > checked / 3);
}

// Numbers a fast path must leave to Parse: an unknown calling code, an Italian leading zero,
// punctuation, too few or too many digits. They keep their old answers.
void test_edges(void **state)
{
    (void)state;
    const char *inputs[] = {"+390212345678", "+39 02 1234 5678", "+3903123456", "+999123456789",
                            "+0123456789", "+1", "+12", "+1415", "+14155550123", "+1 415 555 0123",
                            "+441234", "+8001234567", "+80012345678", "+882345678901",
                            "+12345678901234567",
                            /* Mexico's mobile "1" after +52: Parse drops it (so must we) */
                            "+5216415550123", "+52 1 641 555 0123",
                            /* NANP: an area code starting 0 or 1, Caribbean and Canadian codes */
                            "+11415555012", "+10415555012", "+12425550123", "+18765550123",
                            "+16135550123", "+14165550123",
                            /* zeros before the calling code: Parse refuses them */
                            "+0077770000231", "+0012015550123", "+07770000231", "0012015550123"};
    for (const char *in : inputs)
        agree(in, in);
}

} // namespace

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_examples_agree),
        cmocka_unit_test(test_edges),
    };
    return cmocka_run_group_tests(tests, nullptr, nullptr);
}
