/*
 * bench/phone_cost: what th_phone_parse costs per number, in one thread, on the numbers Okta
 * sends: E.164 ("+" and digits) from 17 countries, 40 % of them +1 (US 35 %, Canada 5 %).
 *
 * The numbers are libphonenumber's own example numbers (GetExampleNumberForType, mobile and fixed
 * line) with their last 5 digits varied at random, kept only where libphonenumber finds them
 * valid: real-looking numbers, distinct, repeating only after tens of thousands (so
 * th_phone_parse's small per-thread cache of recent answers almost never answers).
 *
 * Sets timed, in turns, ROUNDS times each; the figures are medians over the rounds:
 *   us     US numbers only (the North American case);
 *   mix    the 17-country mix, shuffled;
 *   XX     each country alone;
 *   ref    the mix through libphonenumber's straight calls (Parse, IsValidNumber, GetNumberType,
 *          GetRegionCodeForNumber, Format E164): what telehook did before any fast path.
 * Prints a table and a line "PHONE_COST {json}".
 *
 * Times are the thread's CPU time (CLOCK_THREAD_CPUTIME_ID): steadier on a shared machine.
 *
 *   build-bench/phone_cost [ROUNDS [NUMBERS]]     (defaults 7 and 100000)
 */
#include <algorithm>
#include <cstdio>
#include <cstdlib>
#include <ctime>
#include <map>
#include <random>
#include <set>
#include <string>
#include <vector>

#include <phonenumbers/phonenumber.pb.h>
#include <phonenumbers/phonenumberutil.h>

extern "C" {
#include "phone/phone.h"
}

using i18n::phonenumbers::PhoneNumber;
using i18n::phonenumbers::PhoneNumberUtil;

namespace
{

struct country {
    const char *region;
    int weight; // per cent of the mix
};

// An Okta org's sign-ins: 40 % +1, the rest spread over the largest markets.
const country mix_weights[] = {{"US", 35}, {"CA", 5}, {"GB", 6}, {"IN", 6}, {"DE", 5}, {"BR", 5},
                               {"MX", 5},  {"FR", 4}, {"AU", 4}, {"JP", 4}, {"ES", 3}, {"IT", 3},
                               {"NL", 3},  {"PL", 3}, {"ZA", 3}, {"PH", 3}, {"AR", 3}};

double now_ns()
{
    struct timespec ts;
    clock_gettime(CLOCK_THREAD_CPUTIME_ID, &ts); // CPU time: the machine is shared
    return ts.tv_sec * 1e9 + ts.tv_nsec;
}

// n distinct valid E.164 numbers of region: its example mobile and fixed-line numbers, last 5
// digits at random.
std::vector<std::string> numbers_of(const std::string &region, size_t n, std::mt19937 &rng)
{
    PhoneNumberUtil *u = PhoneNumberUtil::GetInstance();
    std::vector<std::string> bases;
    for (PhoneNumberUtil::PhoneNumberType t :
         {PhoneNumberUtil::MOBILE, PhoneNumberUtil::FIXED_LINE}) {
        PhoneNumber ex;
        std::string s;
        if (u->GetExampleNumberForType(region, t, &ex)) {
            u->Format(ex, PhoneNumberUtil::E164, &s);
            bases.push_back(s);
        }
    }
    std::set<std::string> seen;
    std::vector<std::string> out;
    std::uniform_int_distribution<int> digit(0, 9);
    for (size_t tries = 0; out.size() < n && !bases.empty() && tries < n * 50; tries++) {
        std::string v = bases[tries % bases.size()];
        for (size_t j = v.size() - 5; j < v.size(); j++)
            v[j] = static_cast<char>('0' + digit(rng));
        PhoneNumber pn;
        if (seen.count(v) || u->Parse(v, "ZZ", &pn) != PhoneNumberUtil::NO_PARSING_ERROR ||
            !u->IsValidNumber(pn))
            continue;
        seen.insert(v);
        out.push_back(v);
    }
    return out;
}

volatile unsigned sink;

double time_ours(const std::vector<std::string> &v)
{
    unsigned ok = 0;
    double t0 = now_ns();
    for (const std::string &s : v) {
        struct th_phone p;
        ok += th_phone_parse(s.data(), s.size(), "US", &p) == TH_E_OK;
    }
    double t1 = now_ns();
    sink = ok;
    if (ok != v.size()) {
        std::fprintf(stderr, "phone_cost: %u of %zu valid numbers refused\n", ok, v.size());
        std::exit(1);
    }
    return (t1 - t0) / static_cast<double>(v.size());
}

double time_ref(const std::vector<std::string> &v)
{
    PhoneNumberUtil *u = PhoneNumberUtil::GetInstance();
    unsigned ok = 0;
    double t0 = now_ns();
    for (const std::string &s : v) {
        PhoneNumber pn;
        std::string e164, region;
        if (u->Parse(s, "ZZ", &pn) == PhoneNumberUtil::NO_PARSING_ERROR && u->IsValidNumber(pn)) {
            u->Format(pn, PhoneNumberUtil::E164, &e164);
            u->GetRegionCodeForNumber(pn, &region);
            ok += u->GetNumberType(pn) != PhoneNumberUtil::UNKNOWN;
        }
    }
    double t1 = now_ns();
    sink = ok;
    return (t1 - t0) / static_cast<double>(v.size());
}

double median(std::vector<double> v)
{
    std::sort(v.begin(), v.end());
    return v[v.size() / 2];
}

} // namespace

int main(int argc, char **argv)
{
    int rounds = argc > 1 ? std::atoi(argv[1]) : 7;
    size_t total = argc > 2 ? std::strtoul(argv[2], nullptr, 10) : 100000;
    if (rounds < 1 || total < 1000) {
        std::fprintf(stderr, "usage: phone_cost [ROUNDS [NUMBERS >= 1000]]\n");
        return 2;
    }
    th_phone_init();
    std::mt19937 rng(20261205);
    std::vector<std::pair<std::string, std::vector<std::string>>> sets;
    std::vector<std::string> mix;
    for (const country &c : mix_weights) {
        std::vector<std::string> v = numbers_of(c.region, total * c.weight / 100, rng);
        if (v.size() < total * c.weight / 100 / 2) {
            std::fprintf(stderr, "phone_cost: only %zu numbers for %s\n", v.size(), c.region);
            return 1;
        }
        mix.insert(mix.end(), v.begin(), v.end());
        sets.emplace_back(c.region, std::move(v));
    }
    std::shuffle(mix.begin(), mix.end(), rng);
    std::vector<std::string> us = sets.front().second;

    std::map<std::string, std::vector<double>> ns;
    for (int r = 0; r < rounds; r++) {
        ns["us"].push_back(time_ours(us));
        ns["mix"].push_back(time_ours(mix));
        ns["ref"].push_back(time_ref(mix));
        for (auto &s : sets)
            ns[s.first].push_back(time_ours(s.second));
    }
    std::printf("th_phone_parse, ns per number (median of %d rounds; %zu numbers in the mix)\n",
                rounds, mix.size());
    std::printf("  %-4s %8.0f\n  %-4s %8.0f\n  %-4s %8.0f  (libphonenumber's straight calls)\n",
                "us", median(ns["us"]), "mix", median(ns["mix"]), "ref", median(ns["ref"]));
    for (auto &s : sets)
        std::printf("  %-4s %8.0f  (%zu numbers)\n", s.first.c_str(), median(ns[s.first]),
                    s.second.size());
    std::printf("PHONE_COST {\"us\": %.0f, \"mix\": %.0f, \"ref\": %.0f", median(ns["us"]),
                median(ns["mix"]), median(ns["ref"]));
    for (auto &s : sets)
        std::printf(", \"%s\": %.0f", s.first.c_str(), median(ns[s.first]));
    std::printf("}\n");
    return 0;
}
