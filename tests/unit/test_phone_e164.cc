// Unit test (C++): th_phone_parse (its fast path that parses, validates and classifies E.164 input
// over libphonenumber's metadata with its own pattern matcher, its region shortcut for shared
// calling codes, its cache) against libphonenumber's own Parse, on every example number
// libphonenumber has (each region and type, each non-geographic entity) and on hundreds of
// thousands of variants of them: other last digits, random digits changed, inserted or removed,
// a national prefix written after the calling code, no '+' (read nationally in the example's
// region, then internationally), and random digit strings after every calling code. Both must
// agree on validity and, when valid, on everything struct th_phone carries.
#include <cstdio>
#include <cstring>
#include <random>
#include <set>
#include <string>
#include <utility>
#include <vector>

#include <phonenumbers/phonenumber.pb.h>
#include <phonenumbers/phonenumberutil.h>

#include "../phone_reference.h"

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

// src/phone/phone.cc, for tests
int th_phone_testing_slow_codes();
void th_phone_testing_plan_size(size_t *node_count, size_t *bytes, size_t *shared);
int th_phone_testing_match(const char *pattern, const char *digits, int whole, size_t *node_count);

using i18n::phonenumbers::PhoneNumber;
using i18n::phonenumbers::PhoneNumberUtil;

namespace
{

const char *const type_names[] = {"FIXED_LINE", "MOBILE",          "FIXED_LINE_OR_MOBILE",
                                  "TOLL_FREE",  "PREMIUM_RATE",    "SHARED_COST",
                                  "VOIP",       "PERSONAL_NUMBER", "PAGER",
                                  "UAN",        "VOICEMAIL"};

size_t checked, valid;

// th_phone_parse(input, region) against the reference answer r: validity and, when valid,
// every field of struct th_phone.
void agree_with(const std::string &input, const char *region, const ref &r)
{
    struct th_phone p;
    th_err e = th_phone_parse(input.c_str(), input.size(), region, &p);
    checked++;
    if ((e == TH_E_OK) != r.ok) {
        std::fprintf(stderr, "%s (%s): telehook %s, libphonenumber %s\n", input.c_str(),
                     region ? region : "-", e == TH_E_OK ? "valid" : "invalid",
                     r.ok ? "valid" : "invalid");
        fail();
    }
    if (!r.ok)
        return;
    valid++;
    if (r.e164 != p.e164 || r.region != p.region || r.cc != p.country_code ||
        r.intl != p.intl_e164 || std::strcmp(type_names[r.type], th_phone_type_name(p.type)) != 0) {
        std::fprintf(stderr,
                     "%s (%s): telehook %s %s +%d %s [%s], libphonenumber %s %s +%d %s [%s]\n",
                     input.c_str(), region ? region : "-", p.e164, p.region, p.country_code,
                     th_phone_type_name(p.type), p.intl_e164, r.e164.c_str(), r.region.c_str(),
                     r.cc, type_names[r.type], r.intl.c_str());
        fail();
    }
}

// input as telehook receives it (no default region); intl: the same number with '+' for the
// reference.
void agree(const std::string &input, const std::string &intl)
{
    agree_with(input, nullptr, reference(intl));
}

// Digits without '+', read first as a national number of region.
void agree_national(const std::string &digits, const std::string &region)
{
    agree_with(digits, region.c_str(), reference_national(digits, region));
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
    if (!region.empty()) { // national readings, and their international second reading
        agree_national(nsn, region);
        agree_national(ndd + nsn, region);
        agree_national(e164.substr(1), region);
        agree_national(nsn, "US");
    }
}

// Every example number (each region and type, each non-geographic entity), with its region
// ("" for a non-geographic one).
std::vector<std::pair<PhoneNumber, std::string>> examples()
{
    PhoneNumberUtil *u = PhoneNumberUtil::GetInstance();
    std::vector<std::pair<PhoneNumber, std::string>> v;
    std::set<std::string> regions;
    u->GetSupportedRegions(&regions);
    for (const std::string &r : regions) {
        for (int t = PhoneNumberUtil::FIXED_LINE; t <= PhoneNumberUtil::VOICEMAIL; t++) {
            PhoneNumber ex;
            if (u->GetExampleNumberForType(r, static_cast<PhoneNumberUtil::PhoneNumberType>(t),
                                           &ex))
                v.emplace_back(ex, r);
        }
    }
    std::set<int> codes;
    u->GetSupportedGlobalNetworkCallingCodes(&codes);
    for (int c : codes) {
        PhoneNumber ex;
        if (u->GetExampleNumberForNonGeoEntity(c, &ex))
            v.emplace_back(ex, "");
    }
    return v;
}

// First in main(): th_phone_parse without th_phone_init (as the CLI calls it) loads what it needs.
void test_parse_before_init(void **state)
{
    (void)state;
    struct th_phone p;
    assert_int_equal(th_phone_parse("+12015550123", 12, nullptr, &p), TH_E_OK);
    assert_string_equal(p.e164, "+12015550123");
    assert_string_equal(p.region, "US");
}

void test_examples_agree(void **state)
{
    (void)state;
    th_phone_init();
    std::mt19937 rng(20261201);
    checked = valid = 0;
    std::vector<std::pair<PhoneNumber, std::string>> ex = examples();
    for (const auto &e : ex)
        variants(e.first, e.second, rng);
    std::fprintf(stderr, "%zu example numbers, %zu inputs checked, %zu of them valid\n", ex.size(),
                 checked, valid);
    assert_true(ex.size() > 1000);
    assert_true(valid > checked / 3);
}

// Each example number mutated at random: digits changed, inserted or removed anywhere in the
// national number (where the types' patterns differ), or its tail replaced.
void test_mutations_agree(void **state)
{
    (void)state;
    th_phone_init();
    PhoneNumberUtil *u = PhoneNumberUtil::GetInstance();
    std::mt19937 rng(20261205);
    std::uniform_int_distribution<int> digit(0, 9);
    checked = valid = 0;
    for (const auto &e : examples()) {
        std::string e164;
        u->Format(e.first, PhoneNumberUtil::E164, &e164);
        size_t ccl = std::to_string(e.first.country_code()).size() + 1; // '+' and the code
        for (int k = 0; k < 120; k++) {
            std::string v = e164;
            size_t room = v.size() - ccl;
            size_t at = ccl + rng() % room;
            switch (rng() % 4) {
            case 0: // one to three digits changed
                for (unsigned j = 0, m = 1 + rng() % 3; j < m; j++)
                    v[ccl + rng() % room] = static_cast<char>('0' + digit(rng));
                break;
            case 1: // a digit inserted
                v.insert(v.begin() + static_cast<long>(at), static_cast<char>('0' + digit(rng)));
                break;
            case 2: // a digit removed
                v.erase(at, 1);
                break;
            default: // the tail after at replaced by 0-3 more or fewer random digits
                v.resize(at);
                for (unsigned j = 0, m = rng() % (room + 3); j < m; j++)
                    v.push_back(static_cast<char>('0' + digit(rng)));
            }
            agree(v, v);
        }
    }
    std::fprintf(stderr, "%zu mutated inputs checked, %zu of them valid\n", checked, valid);
    assert_true(checked > 150000);
    assert_true(valid > checked / 10);
}

// Random digits of every length after every calling code libphonenumber knows.
void test_random_every_code(void **state)
{
    (void)state;
    th_phone_init();
    PhoneNumberUtil *u = PhoneNumberUtil::GetInstance();
    std::set<std::string> regions;
    u->GetSupportedRegions(&regions);
    std::set<int> codes;
    u->GetSupportedGlobalNetworkCallingCodes(&codes);
    for (const std::string &r : regions)
        codes.insert(u->GetCountryCodeForRegion(r));
    std::mt19937 rng(20261206);
    std::uniform_int_distribution<int> digit(0, 9);
    checked = valid = 0;
    for (int c : codes) {
        std::string cc = "+" + std::to_string(c);
        for (int k = 0; k < 300; k++) {
            std::string v = cc;
            for (size_t j = 0, n = 1 + k % (16 - cc.size() + 1); j < n; j++)
                v.push_back(static_cast<char>('0' + digit(rng)));
            agree(v, v);
        }
    }
    std::fprintf(stderr, "%zu calling codes, %zu random inputs checked, %zu of them valid\n",
                 codes.size(), checked, valid);
    assert_true(codes.size() > 200);
    assert_true(valid > 0);
    // Every calling code takes the fast path: none has a pattern outside the matcher's subset.
    assert_int_equal(th_phone_testing_slow_codes(), 0);
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
    // Valid in Germany read nationally, but +49 and 14 digits is longer than E.164: refused (the
    // fuzzer's find).
    agree_national("97217001534156", "DE");
}

// The plans stay compact: 8-byte nodes in one array (no vector per node), small region plans,
// each pattern text compiled once. As a tree with a vector per node they held 1.9 MB from start
// on (issue 24); now about 300 KB.
void test_plans_compact(void **state)
{
    (void)state;
    size_t nodes = 0, bytes = 0, shared = 0;
    th_phone_testing_plan_size(&nodes, &bytes, &shared);
    std::fprintf(stderr, "plans: %zu nodes, %zu bytes, %zu patterns shared\n", nodes, bytes,
                 shared);
    assert_true(nodes > 10000); // every code's patterns are compiled in
    assert_true(bytes <= 512 * 1024);
    // The nodes' array and no more than 64 KiB besides (the regions' 254 plans, the code table).
    assert_true(bytes <= nodes * 8 + 64 * 1024);
    assert_true(shared > 100); // regions of one code share many types' patterns
}

size_t nodes_of(const char *pattern)
{
    size_t n = 0;
    th_phone_testing_match(pattern, "", 1, &n);
    return n;
}

// What the flat layout refuses (a bound or a kid count that does not fit a byte: the calling
// code would keep libphonenumber's path) and what it accepts, and the matcher's answers on it.
void test_matcher_bounds(void **state)
{
    (void)state;
    size_t n = 0;
    // Bounds: up to 254; 255 stands for "unbounded".
    assert_int_equal(th_phone_testing_match("\\d{254}", "123", 1, &n), 0);
    assert_int_equal(th_phone_testing_match("\\d{254,}", "123", 1, &n), 0);
    assert_int_equal(th_phone_testing_match("\\d{0,254}", "123", 1, &n), 1);
    assert_int_equal(th_phone_testing_match("\\d{255}", "123", 1, &n), -1);
    assert_int_equal(th_phone_testing_match("\\d{1,255}", "123", 1, &n), -1);
    assert_int_equal(th_phone_testing_match("\\d{300,}", "123", 1, &n), -1);
    assert_int_equal(th_phone_testing_match("\\d{2,1}", "123", 1, &n), -1); // max < min
    // Kids: up to 255 alternatives or items in a sequence.
    std::string alt = "0", seq = "0";
    for (int i = 1; i < 255; i++) {
        alt += "|" + std::to_string(i % 10);
        seq += std::to_string(i % 10);
    }
    assert_int_equal(th_phone_testing_match(alt.c_str(), "7", 1, &n), 1);
    assert_int_equal(n, 256u); // the ALT and its 255 digits
    assert_int_equal(th_phone_testing_match(seq.c_str(), "01", 0, &n), 0);
    assert_int_equal(th_phone_testing_match((alt + "|8").c_str(), "7", 1, &n), -1);
    assert_int_equal(th_phone_testing_match((seq + "5").c_str(), "01", 0, &n), -1);
    // A sequence of one item is that item, however deep the groups.
    assert_int_equal(nodes_of("((((?:1))))"), 1u);
    assert_int_equal(nodes_of("(?:1)(?:2)"), 3u);
    assert_int_equal(nodes_of("1|2"), 3u);
    assert_int_equal(nodes_of("(?:1|)2"), 5u); // the empty alternative stays: it matches ""
    // The matcher's answers: matches() (whole) and lookingAt() (a prefix).
    struct {
        const char *pattern, *digits;
        int whole, prefix;
    } cases[] = {
        {"(?:12|3)", "12", 1, 1},
        {"(?:12|3)", "3", 1, 1},
        {"(?:12|3)", "123", 0, 1},
        {"(?:12|3)", "4", 0, 0},
        {"(?:1|12){2,3}", "1121", 1, 1},
        {"(?:1|12){2,3}", "1", 0, 0},
        {"\\d{3}", "12", 0, 0},
        {"\\d{3}", "123", 1, 1},
        {"[2-4]\\d*", "5", 0, 0},
        {"[2-4]\\d*", "4", 1, 1},
        {"[02-4\\d]", "9", 1, 1},
        {"[0357]", "5", 1, 1},
        {"[0357]", "4", 0, 0},
        {"1$", "1", 1, 1},
        {"1$", "12", 0, 0},
        {"1*", "1111", 1, 1},
        {"(?:1*)*", "11", 1, 1},
        {"(?:1*)*", "2", 0, 1},
        {"(?:1|)2", "2", 1, 1},
        {"(?:1|)2", "12", 1, 1},
        {"9(?:[1-3]\\d|4[05])\\d{4,6}", "94512345", 1, 1},
        {"9(?:[1-3]\\d|4[05])\\d{4,6}", "94612345", 0, 0},
        {"9(?:[1-3]\\d|4[05])\\d{4,6}", "9451234567", 0, 1},
    };
    for (const auto &c : cases) {
        int w = th_phone_testing_match(c.pattern, c.digits, 1, &n);
        int p = th_phone_testing_match(c.pattern, c.digits, 0, &n);
        if (w != c.whole || p != c.prefix)
            std::fprintf(stderr, "%s on %s: whole %d prefix %d, want %d %d\n", c.pattern, c.digits,
                         w, p, c.whole, c.prefix);
        assert_int_equal(w, c.whole);
        assert_int_equal(p, c.prefix);
    }
}

} // namespace

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_parse_before_init),
        cmocka_unit_test(test_examples_agree),
        cmocka_unit_test(test_mutations_agree),
        cmocka_unit_test(test_random_every_code),
        cmocka_unit_test(test_edges),
        cmocka_unit_test(test_plans_compact),
        cmocka_unit_test(test_matcher_bounds),
    };
    return cmocka_run_group_tests(tests, nullptr, nullptr);
}
