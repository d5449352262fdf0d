// The reference the phone tests judge th_phone_parse by: libphonenumber's own calls, as telehook
// made them before any fast path (Parse, IsValidNumber, Format E164, GetRegionCodeForNumber,
// GetNumberType). Shared by tests/unit/test_phone_e164.cc and tests/fuzz/fuzz_phone_e164.cc;
// include it before cmocka (whose fail() macro would rename std::basic_ios::fail).
#ifndef TH_TESTS_PHONE_REFERENCE_H
#define TH_TESTS_PHONE_REFERENCE_H

#include <cstddef>
#include <string>

#include <phonenumbers/phonenumber.pb.h>
#include <phonenumbers/phonenumberutil.h>

namespace
{

using i18n::phonenumbers::PhoneNumber;
using i18n::phonenumbers::PhoneNumberUtil;

struct ref {
    bool ok = false;
    std::string e164, region, intl;
    int cc = 0;
    PhoneNumberUtil::PhoneNumberType type = PhoneNumberUtil::UNKNOWN;
};

size_t digits_of(const std::string &s)
{
    size_t digits = 0;
    for (char c : s)
        digits += c >= '0' && c <= '9';
    return digits;
}

// A number libphonenumber's Parse accepted and IsValidNumber found valid, as struct th_phone
// describes it: Format(E164), GetRegionCodeForNumber (empty for "001"), calling code, type.
ref described(const PhoneNumber &pn)
{
    PhoneNumberUtil *u = PhoneNumberUtil::GetInstance();
    ref r;
    r.ok = true;
    u->Format(pn, PhoneNumberUtil::E164, &r.e164);
    u->GetRegionCodeForNumber(pn, &r.region);
    if (r.region.size() != 2 || r.region == "ZZ")
        r.region.clear();
    r.cc = pn.country_code();
    r.type = u->GetNumberType(pn);
    return r;
}

// What telehook did before any fast path: Parse as international, validate, classify, region.
// Like telehook (and E.164), it refuses fewer than 3 or more than 15 digits.
ref reference(const std::string &s)
{
    PhoneNumberUtil *u = PhoneNumberUtil::GetInstance();
    size_t digits = digits_of(s);
    if (digits < 3 || digits > 15)
        return ref();
    PhoneNumber pn;
    if (u->Parse(s, "ZZ", &pn) != PhoneNumberUtil::NO_PARSING_ERROR || !u->IsValidNumber(pn))
        return ref();
    return described(pn);
}

// Digits without '+' and a default region, as phone.h promises: the national reading when
// libphonenumber finds it valid there, with the international reading in intl when that is
// valid too and another number; else the international reading.
ref reference_national(const std::string &digits, const std::string &region)
{
    PhoneNumberUtil *u = PhoneNumberUtil::GetInstance();
    size_t n = digits_of(digits);
    if (n < 3 || n > 15)
        return ref();
    PhoneNumber pn;
    if (u->Parse(digits, region, &pn) != PhoneNumberUtil::NO_PARSING_ERROR || !u->IsValidNumber(pn))
        return reference("+" + digits);
    ref r = described(pn);
    if (r.e164.size() > 16) // struct th_phone holds E.164's 15 digits at most: refused
        return ref();
    ref alt = reference("+" + digits);
    if (alt.ok && alt.e164 != r.e164)
        r.intl = alt.e164;
    return r;
}

} // namespace

#endif
