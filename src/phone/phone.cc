// Thin C wrapper over libphonenumber. Nothing C++ escapes: every entry point that can throw
// catches everything, since an exception unwinding into C is undefined behaviour.
#include "phone/phone.h"

#include <cinttypes>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <list>
#include <memory>
#include <mutex>
#include <new>
#include <set>
#include <string>

#include <phonenumbers/logger.h>
#include <phonenumbers/phonenumber.pb.h>
#include <phonenumbers/phonenumberutil.h>

using i18n::phonenumbers::PhoneNumber;
using i18n::phonenumbers::PhoneNumberUtil;

namespace
{

std::once_flag init_once;
std::set<std::string> *regions; // supported region codes, filled once

PhoneNumberUtil *util()
{
    th_phone_init();
    return PhoneNumberUtil::GetInstance();
}

th_phone_type map_type(PhoneNumberUtil::PhoneNumberType t)
{
    switch (t) {
    case PhoneNumberUtil::FIXED_LINE:
        return TH_PHONE_FIXED_LINE;
    case PhoneNumberUtil::MOBILE:
        return TH_PHONE_MOBILE;
    case PhoneNumberUtil::FIXED_LINE_OR_MOBILE:
        return TH_PHONE_FIXED_LINE_OR_MOBILE;
    case PhoneNumberUtil::TOLL_FREE:
        return TH_PHONE_TOLL_FREE;
    case PhoneNumberUtil::PREMIUM_RATE:
        return TH_PHONE_PREMIUM_RATE;
    case PhoneNumberUtil::SHARED_COST:
        return TH_PHONE_SHARED_COST;
    case PhoneNumberUtil::VOIP:
        return TH_PHONE_VOIP;
    case PhoneNumberUtil::PERSONAL_NUMBER:
        return TH_PHONE_PERSONAL_NUMBER;
    case PhoneNumberUtil::PAGER:
        return TH_PHONE_PAGER;
    case PhoneNumberUtil::UAN:
        return TH_PHONE_UAN;
    case PhoneNumberUtil::VOICEMAIL:
        return TH_PHONE_VOICEMAIL;
    default:
        return TH_PHONE_UNKNOWN;
    }
}

// Keeps digits and a leading '+'; drops the formatting characters people and Okta's Preview
// use. Anything else (letters, "ext", '#', a second '+') makes the input invalid: we would
// rather refuse than guess which number was meant.
bool clean(const char *raw, size_t len, std::string &out)
{
    if (len == 0 || len > TH_PHONE_MAX_INPUT)
        return false;
    size_t digits = 0;
    for (size_t i = 0; i < len; i++) {
        char c = raw[i];
        if (c >= '0' && c <= '9') {
            out.push_back(c);
            digits++;
        } else if (c == '+' && out.empty() && digits == 0) {
            out.push_back(c);
        } else if (c != ' ' && c != '-' && c != '.' && c != '(' && c != ')') {
            return false;
        }
    }
    return digits >= 3 && digits <= 15;
}

// Calling codes libphonenumber knows, and the non-geographic ones among them (region "001"),
// filled once.
bool known_code[1000];
bool non_geographic[1000];
// Calling codes that belong to exactly one region (most of them: +1, +7, +44, +61, ... are
// shared), filled once: for those the region needs no per-number lookup.
bool single_region[1000];
// The main region of each calling code (the first GetRegionCodesForCountryCallingCode lists, as
// GetRegionCodeForCountryCode answers): looked up once here, since each lookup builds that list.
char main_region[1000][4];

// libphonenumber's IsValidNumber(n) is "the type of n in the region GetRegionCodeForNumber(n)
// finds is not UNKNOWN", and GetNumberType(n) computes exactly that type: so one GetNumberType
// call both validates and classifies. Calling IsValidNumber as well would look the region up and
// match the type patterns a second time (each is a series of ICU regex matches).
bool parse_valid(const std::string &s, const std::string &default_region, PhoneNumber &pn,
                 PhoneNumberUtil::PhoneNumberType &type)
{
    PhoneNumberUtil *u = util();
    if (u->Parse(s, default_region, &pn) != PhoneNumberUtil::NO_PARSING_ERROR)
        return false;
    type = u->GetNumberType(pn);
    return type != PhoneNumberUtil::UNKNOWN;
}

// The fast path for North American numbers already in E.164 form: "+1" and ten digits, the first
// 2-9 (what Okta sends for the US and Canada). Parse's lenient steps, a third of a parse (a dozen
// ICU regex matches), cannot change such input: it holds no punctuation or extension, and every
// NANP region's national prefix for parsing is "1" (some Caribbean ones also rewrite 7-digit
// local numbers), which cannot match a national number starting with 2-9: NANP area codes do
// not start with 0 or 1. So the number is built from its digits, and GetNumberType validates and
// classifies it exactly as after Parse; anything it does not find valid goes through Parse.
//
// Not elsewhere: other plans' national prefixes can be stripped from a number that is also valid
// unstripped (Mexico's mobile "1": Parse reads +52 1 641 555 0123 as +52 641 555 0123), and
// libphonenumber does not expose the pattern that decides. tests/unit/test_phone_e164.cc and
// tests/fuzz/fuzz_phone_e164.cc check this function against Parse (the fuzzer found Mexico).
bool parse_nanp(const std::string &s, PhoneNumber &pn, PhoneNumberUtil::PhoneNumberType &type)
{
    if (s.size() != 12 || s[0] != '+' || s[1] != '1' || s[2] < '2' || s[2] > '9')
        return false;
    uint64_t national = 0;
    for (size_t k = 2; k < s.size(); k++) {
        if (s[k] < '0' || s[k] > '9')
            return false;
        national = national * 10 + static_cast<uint64_t>(s[k] - '0');
    }
    pn.set_country_code(1);
    pn.set_national_number(national);
    type = util()->GetNumberType(pn);
    return type != PhoneNumberUtil::UNKNOWN;
}

// '+' and digits: the fast path for North American numbers, else Parse as international.
bool parse_international(const std::string &plus, PhoneNumber &pn,
                         PhoneNumberUtil::PhoneNumberType &type)
{
    if (parse_nanp(plus, pn, type))
        return true;
    pn.Clear();
    return parse_valid(plus, "ZZ", pn, type);
}

// E.164 is what Format(E164) writes: '+', the calling code, the Italian leading zeros, the
// national number; written here without Format's string building. false: it does not fit.
bool write_e164(const PhoneNumber &pn, char *out, size_t outlen)
{
    int zeros = pn.italian_leading_zero() ? pn.number_of_leading_zeros() : 0;
    if (zeros < 0 || zeros > 15)
        return false;
    int n = std::snprintf(out, outlen, "+%d%.*s%" PRIu64, pn.country_code(), zeros,
                          "000000000000000", static_cast<uint64_t>(pn.national_number()));
    if (n < 0 || static_cast<size_t>(n) >= outlen) {
        out[0] = '\0';
        return false;
    }
    return true;
}

} // namespace

extern "C" void th_phone_init(void)
{
    std::call_once(init_once, [] {
        PhoneNumberUtil *u = PhoneNumberUtil::GetInstance();
        // libphonenumber logs to stdout by default: mute it, so no number can reach a log that way.
        u->SetLogger(new i18n::phonenumbers::NullLogger());
        regions = new std::set<std::string>();
        u->GetSupportedRegions(regions);
        std::set<int> codes;
        u->GetSupportedGlobalNetworkCallingCodes(&codes);
        for (int cc : codes)
            if (cc > 0 && cc < 1000)
                non_geographic[cc] = true;
        for (const std::string &r : *regions)
            codes.insert(u->GetCountryCodeForRegion(r));
        for (int cc : codes) {
            if (cc > 0 && cc < 1000)
                known_code[cc] = true;
            std::list<std::string> list;
            u->GetRegionCodesForCountryCallingCode(cc, &list);
            if (cc > 0 && cc < 1000) {
                single_region[cc] = list.size() == 1;
                if (!list.empty() && list.front().size() < sizeof main_region[cc])
                    std::strcpy(main_region[cc], list.front().c_str());
            }
        }
    });
}

namespace
{
// A small per-thread cache of recent answers: the same users get codes again (resends, daily
// sign-ins), and libphonenumber's parse + validation + type lookups are the largest single cost
// of a request (bench/README.md). Bounded, lock-free (one per event loop), exact-match keys.
constexpr size_t CACHE_SLOTS = 2048;
struct cache_entry {
    char raw[TH_PHONE_MAX_INPUT + 1]; // "" = empty slot
    char region[4];
    bool ok;
    struct th_phone result;
};
thread_local std::unique_ptr<cache_entry[]> cache; // freed when its thread ends

size_t cache_slot(const char *raw, size_t len, const char *region)
{
    uint64_t h = 1469598103934665603ull; // FNV-1a
    for (size_t i = 0; i < len; i++)
        h = (h ^ (unsigned char)raw[i]) * 1099511628211ull;
    for (const char *r = region ? region : ""; *r; r++)
        h = (h ^ (unsigned char)*r) * 1099511628211ull;
    return (size_t)(h % CACHE_SLOTS);
}

th_err parse_uncached(const char *raw, size_t len, const char *default_region,
                      struct th_phone *out);
} // namespace

extern "C" th_err th_phone_parse(const char *raw, size_t len, const char *default_region,
                                 struct th_phone *out)
{
    std::memset(out, 0, sizeof *out);
    if (!raw || len == 0 || len > TH_PHONE_MAX_INPUT)
        return parse_uncached(raw, len, default_region, out);
    const char *region = default_region ? default_region : "";
    if (!cache) {
        cache.reset(new (std::nothrow) cache_entry[CACHE_SLOTS]());
        if (!cache)
            return parse_uncached(raw, len, default_region, out);
    }
    cache_entry &e = cache[cache_slot(raw, len, region)];
    if (e.raw[0] && std::strlen(e.raw) == len && std::memcmp(e.raw, raw, len) == 0 &&
        std::strcmp(e.region, region) == 0) {
        *out = e.result;
        return e.ok ? TH_E_OK : TH_E_PHONE;
    }
    th_err r = parse_uncached(raw, len, default_region, out);
    if (std::strlen(region) < sizeof e.region && !std::memchr(raw, '\0', len)) {
        std::memcpy(e.raw, raw, len);
        e.raw[len] = '\0';
        std::strcpy(e.region, region);
        e.ok = r == TH_E_OK;
        e.result = *out;
    }
    return r;
}

namespace
{
th_err parse_uncached(const char *raw, size_t len, const char *default_region, struct th_phone *out)
{
    std::memset(out, 0, sizeof *out);
    try {
        std::string s;
        if (!raw || !clean(raw, len, s))
            return TH_E_PHONE;
        PhoneNumber pn;
        PhoneNumberUtil::PhoneNumberType type = PhoneNumberUtil::UNKNOWN;
        bool ok;
        if (s[0] == '+') {
            ok = parse_international(s, pn, type);
        } else {
            // Without '+': the configured region's national reading first. Okta's numbers are
            // E.164 more often than not, but a national number of the admin's region that also
            // reads as an international one (2015550123: +1 201 555 0123, or +20 1555 0123 in
            // Egypt) is far more likely theirs; a wrong guess calls abroad, or an SMS is refused
            // as a landline. Numbers not valid there are read as international.
            std::string plus = "+" + s;
            PhoneNumber alt;
            PhoneNumberUtil::PhoneNumberType alt_type = PhoneNumberUtil::UNKNOWN;
            ok = default_region && *default_region && parse_valid(s, default_region, pn, type);
            if (!ok) {
                pn.Clear();
                ok = parse_international(plus, pn, type);
            } else if (parse_international(plus, alt, alt_type)) {
                char mine[sizeof out->e164];
                if (write_e164(pn, mine, sizeof mine) &&
                    write_e164(alt, out->intl_e164, sizeof out->intl_e164) &&
                    std::strcmp(mine, out->intl_e164) == 0)
                    out->intl_e164[0] = '\0'; // the same number either way
            }
        }
        if (!ok)
            return TH_E_PHONE;
        PhoneNumberUtil *u = util();
        std::string region;
        int cc = pn.country_code();
        const char *main = cc > 0 && cc < 1000 ? main_region[cc] : "";
        if (main[0] && single_region[cc]) {
            region = main;
        } else if (main[0]) {
            // A shared calling code (+1: 25 regions). GetRegionCodeForNumber tries the regions in
            // order, the main one first (no leading-digit pattern: it takes every number valid
            // there), and builds the list of them on each call (a malloc per region). The main
            // region is checked alone first; test_phone_e164.cc holds the two ways equal.
            region = main;
            if (!u->IsValidNumberForRegion(pn, region))
                u->GetRegionCodeForNumber(pn, &region);
        } else {
            u->GetRegionCodeForNumber(pn, &region);
        }
        if (!write_e164(pn, out->e164, sizeof out->e164))
            return TH_E_PHONE;
        if (region.size() == 2) // "001" (non-geographic) and "ZZ" leave it empty
            std::memcpy(out->region, region.c_str(), 3);
        if (region == "ZZ")
            out->region[0] = '\0';
        out->country_code = pn.country_code();
        out->type = map_type(type);
        return TH_E_OK;
    } catch (...) {
        std::memset(out, 0, sizeof *out);
        return TH_E_PHONE;
    }
}
} // namespace

extern "C" const char *th_phone_type_name(th_phone_type t)
{
    static const char *const names[] = {"FIXED_LINE", "MOBILE",          "FIXED_LINE_OR_MOBILE",
                                        "TOLL_FREE",  "PREMIUM_RATE",    "SHARED_COST",
                                        "VOIP",       "PERSONAL_NUMBER", "PAGER",
                                        "UAN",        "VOICEMAIL",       "UNKNOWN"};
    unsigned i = static_cast<unsigned>(t);
    return i < sizeof names / sizeof names[0] ? names[i] : "UNKNOWN";
}

extern "C" int th_phone_region_known(const char *region)
{
    try {
        th_phone_init();
        return region && regions->count(region) ? 1 : 0;
    } catch (...) {
        return 0;
    }
}

extern "C" int th_phone_code_known(int cc)
{
    th_phone_init();
    return cc > 0 && cc < 1000 && known_code[cc];
}

extern "C" int th_phone_code_non_geographic(int cc)
{
    th_phone_init();
    return cc > 0 && cc < 1000 && non_geographic[cc];
}

extern "C" void th_phone_mask(const char *e164, char *out, size_t outlen)
{
    if (!out || outlen == 0)
        return;
    char digits[32];
    size_t n = 0;
    for (const char *p = e164 ? e164 : ""; *p && n < sizeof digits - 1; p++)
        if (*p >= '0' && *p <= '9')
            digits[n++] = *p;
    // Keep the country code and area (4 digits) and the last 2; short numbers keep less, so
    // at least half of the digits are always hidden.
    size_t head = n > 8 ? 4 : 2, tail = 2;
    if (n < head + tail + 2) {
        head = n / 4;
        tail = n / 4;
    }
    std::string m = "+";
    for (size_t i = 0; i < n; i++)
        m.push_back(i < head || i >= n - tail ? digits[i] : '*');
    size_t c = m.size() < outlen - 1 ? m.size() : outlen - 1;
    std::memcpy(out, m.data(), c);
    out[c] = '\0';
}
