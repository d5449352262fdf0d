// libFuzzer, differential: th_phone_parse (with its North American fast path, main-region shortcut
// and cache) against libphonenumber's own Parse, IsValidNumber, Format(E164),
// GetRegionCodeForNumber and GetNumberType, on E.164-shaped input: the fuzzer's bytes pick +1, a
// calling code the library knows, or any digits, then the national digits. Any disagreement traps.
#include <cstddef>
#include <cstdint>
#include <cstring>
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

const std::vector<int> &codes()
{
    static const std::vector<int> v = [] {
        th_phone_init();
        PhoneNumberUtil *u = PhoneNumberUtil::GetInstance();
        std::set<std::string> regions;
        u->GetSupportedRegions(&regions);
        std::set<int> c;
        u->GetSupportedGlobalNetworkCallingCodes(&c);
        for (const std::string &r : regions)
            c.insert(u->GetCountryCodeForRegion(r));
        return std::vector<int>(c.begin(), c.end());
    }();
    return v;
}

const char *const type_names[] = {"FIXED_LINE", "MOBILE",          "FIXED_LINE_OR_MOBILE",
                                  "TOLL_FREE",  "PREMIUM_RATE",    "SHARED_COST",
                                  "VOIP",       "PERSONAL_NUMBER", "PAGER",
                                  "UAN",        "VOICEMAIL"};

} // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 2)
        return 0;
    const std::vector<int> &known = codes(); // also loads the metadata: every run alike
    std::string s = "+";
    if (data[0] % 3 == 1) // a known calling code, then the digits
        s += std::to_string(known[data[1] % known.size()]);
    else if (data[0] % 3 == 2) // North America, where the fast path is
        s += "1";
    for (size_t i = 2; i < size && s.size() < 17; i++)
        s += static_cast<char>('0' + data[i] % 10);
    size_t digits = s.size() - 1;

    PhoneNumberUtil *u = PhoneNumberUtil::GetInstance();
    PhoneNumber pn;
    bool ok = digits >= 3 && digits <= 15 &&
              u->Parse(s, "ZZ", &pn) == PhoneNumberUtil::NO_PARSING_ERROR && u->IsValidNumber(pn);
    struct th_phone p;
    bool got = th_phone_parse(s.data(), s.size(), nullptr, &p) == TH_E_OK;
    if (ok != got)
        __builtin_trap();
    if (!ok)
        return 0;
    std::string e164, region;
    u->Format(pn, PhoneNumberUtil::E164, &e164);
    u->GetRegionCodeForNumber(pn, &region);
    if (region.size() != 2 || region == "ZZ")
        region.clear();
    PhoneNumberUtil::PhoneNumberType t = u->GetNumberType(pn);
    if (e164 != p.e164 || region != p.region || pn.country_code() != p.country_code ||
        t > PhoneNumberUtil::VOICEMAIL || std::strcmp(type_names[t], th_phone_type_name(p.type)))
        __builtin_trap();
    return 0;
}
