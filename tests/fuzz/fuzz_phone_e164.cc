// libFuzzer, differential: th_phone_parse (its fast path over libphonenumber's metadata with its
// own pattern matcher, its main-region shortcut and cache) against libphonenumber's own Parse,
// IsValidNumber, Format(E164), GetRegionCodeForNumber and GetNumberType, on every region. The
// fuzzer's first byte picks the input's shape:
//   0  '+' and any digits;
//   1  '+', a calling code the library knows (the second byte picks it), then digits;
//   2  '+1' and digits (North America);
//   3  an example number of any region and type, or of a non-geographic entity (the second byte
//      and the third pick it), with digits changed, inserted or removed as the rest says;
//   4  the same without '+', read first as a national number of a region the third byte picks
//      (phone.h: the national reading if valid there, the international one in intl_e164).
// Any disagreement on validity or on a field of struct th_phone traps.
#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <set>
#include <string>
#include <vector>

#include <phonenumbers/phonenumber.pb.h>
#include <phonenumbers/phonenumberutil.h>

#include "../phone_reference.h"

extern "C" {
#include "phone/phone.h"
}

using i18n::phonenumbers::PhoneNumber;
using i18n::phonenumbers::PhoneNumberUtil;

namespace
{

struct tables {
    std::vector<int> codes;
    std::vector<std::string> regions;
    std::vector<std::pair<std::string, std::string>> examples; // E.164, region ("" non-geo)
};

const tables &known()
{
    static const tables t = [] {
        th_phone_init();
        PhoneNumberUtil *u = PhoneNumberUtil::GetInstance();
        tables k;
        std::set<std::string> regions;
        u->GetSupportedRegions(&regions);
        std::set<int> c;
        u->GetSupportedGlobalNetworkCallingCodes(&c);
        for (int cc : c) {
            PhoneNumber ex;
            std::string s;
            if (u->GetExampleNumberForNonGeoEntity(cc, &ex)) {
                u->Format(ex, PhoneNumberUtil::E164, &s);
                k.examples.emplace_back(s, "");
            }
        }
        for (const std::string &r : regions) {
            c.insert(u->GetCountryCodeForRegion(r));
            k.regions.push_back(r);
            for (int ty = PhoneNumberUtil::FIXED_LINE; ty <= PhoneNumberUtil::VOICEMAIL; ty++) {
                PhoneNumber ex;
                std::string s;
                if (u->GetExampleNumberForType(r, static_cast<PhoneNumberUtil::PhoneNumberType>(ty),
                                               &ex)) {
                    u->Format(ex, PhoneNumberUtil::E164, &s);
                    k.examples.emplace_back(s, r);
                }
            }
        }
        k.codes.assign(c.begin(), c.end());
        return k;
    }();
    return t;
}

const char *const type_names[] = {"FIXED_LINE", "MOBILE",          "FIXED_LINE_OR_MOBILE",
                                  "TOLL_FREE",  "PREMIUM_RATE",    "SHARED_COST",
                                  "VOIP",       "PERSONAL_NUMBER", "PAGER",
                                  "UAN",        "VOICEMAIL"};

} // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 3)
        return 0;
    const tables &k = known(); // also loads the metadata: every run alike
    std::string s = "+";
    std::string region; // mode 4: the default region
    unsigned mode = data[0] % 5;
    if (mode <= 2) {
        if (mode == 1)
            s += std::to_string(k.codes[data[1] % k.codes.size()]);
        else if (mode == 2)
            s += "1";
        for (size_t i = 2; i < size && s.size() < 17; i++)
            s += static_cast<char>('0' + data[i] % 10);
    } else {
        s = k.examples[(data[1] | data[2] << 8) % k.examples.size()].first;
        // Edits after the calling code's first digit: (position, what) byte pairs.
        for (size_t i = 3; i + 1 < size && s.size() < 19; i += 2) {
            size_t at = 2 + data[i] % (s.size() - 1);
            char d = static_cast<char>('0' + data[i + 1] / 3 % 10);
            if (data[i + 1] % 3 == 0 && at < s.size())
                s[at] = d;
            else if (data[i + 1] % 3 == 1)
                s.insert(at, 1, d);
            else if (at < s.size() && s.size() > 3)
                s.erase(at, 1);
        }
        if (mode == 4) {
            s.erase(0, 1);
            region = k.regions[data[2] % k.regions.size()];
        }
    }

    ref r = region.empty() ? reference(s) : reference_national(s, region);
    struct th_phone p;
    bool got = th_phone_parse(s.data(), s.size(), region.empty() ? nullptr : region.c_str(), &p) ==
               TH_E_OK;
    if (r.ok != got ||
        (r.ok && (r.e164 != p.e164 || r.region != p.region || r.cc != p.country_code ||
                  r.intl != p.intl_e164 || r.type > PhoneNumberUtil::VOICEMAIL ||
                  std::strcmp(type_names[r.type], th_phone_type_name(p.type))))) {
        std::fprintf(
            stderr, "%s (%s): telehook %s %s %s +%d %s [%s], libphonenumber %s %s %s +%d %s [%s]\n",
            s.c_str(), region.c_str(), got ? "valid" : "invalid", p.e164, p.region, p.country_code,
            th_phone_type_name(p.type), p.intl_e164, r.ok ? "valid" : "invalid", r.e164.c_str(),
            r.region.c_str(), r.cc,
            r.type <= PhoneNumberUtil::VOICEMAIL ? type_names[r.type] : "UNKNOWN", r.intl.c_str());
        __builtin_trap();
    }
    return 0;
}
