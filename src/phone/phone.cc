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
#include <unordered_map>
#include <vector>

#include <phonenumbers/logger.h>
#include <phonenumbers/phonemetadata.pb.h>
#include <phonenumbers/phonenumber.pb.h>
#include <phonenumbers/phonenumberutil.h>

namespace i18n
{
namespace phonenumbers
{
// libphonenumber keeps its per-region metadata behind private members; its own unit test class is
// a friend. The shipped library defines no class of that name, so telehook defines it to read the
// metadata once at start (nothing is changed, nothing is called per number).
class PhoneNumberUtilTest
{
  public:
    static const PhoneMetadata *region(const PhoneNumberUtil &u, const std::string &r)
    {
        return u.GetMetadataForRegion(r);
    }
    static const PhoneMetadata *non_geo(const PhoneNumberUtil &u, int cc)
    {
        return u.GetMetadataForNonGeographicalRegion(cc);
    }
};
} // namespace phonenumbers
} // namespace i18n

using i18n::phonenumbers::PhoneMetadata;
using i18n::phonenumbers::PhoneNumber;
using i18n::phonenumbers::PhoneNumberDesc;
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

// The fast path for numbers in E.164 form ('+' and digits, what Okta sends), for every calling
// code: libphonenumber's Parse + GetNumberType redone over its own metadata, with its patterns
// run by the small matcher below instead of ICU's regex engine. Each ICU match costs a mutex, a
// hash of the pattern's text (hundreds of bytes) in libphonenumber's RegExpCache, a UnicodeString
// and a RegexMatcher allocated and freed: Parse runs a dozen such matches, GetNumberType up to
// eleven per region tried. Here a pattern is parsed once at start, and matching a national
// number (at most 17 digits) is a few bit operations per node.
//
// The matcher takes only the subset of regex syntax libphonenumber's patterns use for national
// numbers: digits, \d, [..] classes of digits and ranges, groups ((..), (?:..)), '|', and the
// greedy quantifiers ?, *, +, {n}, {n,}, {n,m}, and '$' (the end of the input). These describe
// regular languages, so "does this pattern match" has one answer however an engine searches: the
// matcher computes the set of positions each node can end at (a bit per position, from the set it
// can start at), exactly the answer ICU's matches() (whole input) or lookingAt() (a prefix) gives
// as a boolean. A calling code with any pattern outside the subset keeps libphonenumber's own path
// (none today: the unit test counts them).
//
// What Parse does to "+<digits>" and this path redoes: strip the '+'; refuse a leading 0; the
// calling code is the first 1-3 digits that are a known code; fewer than 2 digits left refuses.
// Then Parse may strip a national prefix (national_prefix_for_parsing, with transform rules and
// carrier codes: Mexico's mobile "1", Argentina's "15"). That step is not redone: when the
// pattern can match a non-empty prefix of the national number, the number goes to Parse. When
// it can match only the empty string (or nothing), Parse leaves the number as it is (an empty
// match captures nothing and strips nothing). Then GetRegionCodeForNumber and
// GetNumberTypeHelper as in phonenumberutil.cc, step by step. tests/unit/test_phone_e164.cc and
// tests/fuzz/fuzz_phone_e164.cc hold this path equal to Parse on every region.

// A pattern as parsed: a tree of nodes over digit sets. It lives only while its pattern is
// compiled (rx_compile below flattens it into the plans' node array, then frees it).
struct rx {
    enum kind { SET, SEQ, ALT, REP, END } k = SEQ;
    uint16_t set = 0;      // SET: the digits it takes (bit d)
    int min = 0, max = -1; // REP: bounds, max -1 = unbounded
    std::vector<rx> kids;
};

// Longest input matched: a bit per position 0..len in a uint32_t.
constexpr size_t RX_MAX_INPUT = 30;

struct rx_parser {
    const char *p, *end;
    bool ok = true;

    bool at(char c) const
    {
        return p < end && *p == c;
    }
    rx alt()
    {
        rx first = seq();
        if (!at('|'))
            return first;
        rx n;
        n.k = rx::ALT;
        n.kids.push_back(std::move(first));
        while (ok && at('|')) {
            p++;
            n.kids.push_back(seq());
        }
        return n;
    }
    rx seq()
    {
        rx n;
        n.k = rx::SEQ;
        while (ok && p < end && *p != '|' && *p != ')') {
            rx a = atom();
            if (ok)
                n.kids.push_back(quantified(std::move(a)));
        }
        return n;
    }
    int number()
    {
        int v = 0, digits = 0;
        while (p < end && *p >= '0' && *p <= '9' && digits < 4) {
            v = v * 10 + (*p++ - '0');
            digits++;
        }
        if (digits == 0)
            ok = false;
        return v;
    }
    rx quantified(rx a)
    {
        if (!ok || p == end || (*p != '?' && *p != '*' && *p != '+' && *p != '{'))
            return a;
        rx n;
        n.k = rx::REP;
        char q = *p++;
        if (q == '?') {
            n.min = 0, n.max = 1;
        } else if (q == '*') {
            n.min = 0, n.max = -1;
        } else if (q == '+') {
            n.min = 1, n.max = -1;
        } else {
            n.min = number();
            n.max = n.min;
            if (at(',')) {
                p++;
                n.max = at('}') ? -1 : number();
            }
            if (!at('}') || (n.max >= 0 && n.max < n.min))
                ok = false;
            p++;
        }
        // A lazy or possessive quantifier, or a second one: outside the subset.
        if (p < end && (*p == '?' || *p == '+' || *p == '*' || *p == '{'))
            ok = false;
        n.kids.push_back(std::move(a));
        return n;
    }
    rx atom()
    {
        rx n;
        n.k = rx::SET;
        if (at('(')) {
            p++;
            if (p + 1 < end && p[0] == '?' && p[1] == ':')
                p += 2;
            else if (at('?'))
                ok = false; // lookaround, named or atomic group
            n = alt();
            if (!at(')'))
                ok = false;
            p++;
        } else if (at('\\')) {
            if (p + 1 < end && p[1] == 'd')
                n.set = 0x3ff;
            else
                ok = false;
            p += 2;
        } else if (at('[')) {
            p++;
            if (at('^'))
                ok = false;
            while (ok && p < end && *p != ']') {
                if (*p == '\\' && p + 1 < end && p[1] == 'd') {
                    n.set |= 0x3ff;
                    p += 2;
                } else if (*p >= '0' && *p <= '9') {
                    int lo = *p++ - '0', hi = lo;
                    if (p + 1 < end && *p == '-' && p[1] >= '0' && p[1] <= '9') {
                        hi = p[1] - '0';
                        p += 2;
                    }
                    if (hi < lo)
                        ok = false;
                    for (int d = lo; d <= hi; d++)
                        n.set |= static_cast<uint16_t>(1u << d);
                } else {
                    ok = false;
                }
            }
            if (!at(']'))
                ok = false;
            p++;
        } else if (p < end && *p >= '0' && *p <= '9') {
            n.set = static_cast<uint16_t>(1u << (*p++ - '0'));
        } else if (at('$')) { // the end of the input (some national prefixes for parsing)
            n.k = rx::END;
            p++;
        } else {
            ok = false; // '.', anchors, letters, escapes other than \d
        }
        return n;
    }
};

// The compiled patterns of every plan, flat: one array of 8-byte nodes, each node's kids in a
// contiguous run of it (the first kid's index and their count), no allocation per node. As a tree
// of nodes with a std::vector of kids each (40 bytes a node), the plans held 1.9 MB in 34,500
// allocations from start on (heaptrack, issue 24); flat, with each distinct pattern text compiled
// once (regions share many: 38,351 nodes become 33,066), the nodes take 265 KB in one
// allocation, and the matcher walks memory that sits together.
//
// Fields are small integers: a REP's bounds and a node's kid count fit a byte each (in today's
// metadata the largest bound is 14 and the most kids of one node 10). A pattern that does not fit
// is refused like syntax outside the subset: its calling code keeps libphonenumber's path, so the
// answers stay the same either way.
struct node {
    uint8_t k;    // rx::kind
    uint8_t min;  // REP: at least min times
    uint8_t max;  // REP: at most max times, REP_UNBOUNDED for no limit
    uint8_t n;    // SEQ, ALT: the number of kids; REP: 1
    uint32_t arg; // SET: the digits it takes (bit d); SEQ, ALT, REP: the first kid's index
};
static_assert(sizeof(node) == 8, "a node is 8 bytes");
constexpr unsigned REP_UNBOUNDED = 255; // so a bound is at most 254
constexpr unsigned MAX_KIDS = 255;
constexpr uint32_t NO_PATTERN = UINT32_MAX;

// Filled by th_phone_init's build_plans(), read-only after: the nodes of every compiled pattern.
std::vector<node> *nodes;

// Writes the tree t into arena[at], its kids into a run appended to arena (each kid's own kids
// after that run). A SEQ of one kid is that kid: every node maps an empty set of start positions
// to an empty set of end positions, so the SEQ's early stop changes nothing, and a step of the
// walk is saved (each alternative of "1|2" parses as a SEQ of one digit). false: a bound or a kid
// count does not fit a byte.
bool rx_place(std::vector<node> &arena, const rx &t, size_t at)
{
    const rx *s = &t;
    while (s->k == rx::SEQ && s->kids.size() == 1)
        s = &s->kids[0];
    node nd = {static_cast<uint8_t>(s->k), 0, 0, 0, 0};
    if (s->k == rx::SET) {
        nd.arg = s->set;
    } else if (s->k != rx::END) {
        if (s->kids.size() > MAX_KIDS || arena.size() > UINT32_MAX - s->kids.size())
            return false;
        if (s->k == rx::REP) {
            if (s->min < 0 || s->min >= static_cast<int>(REP_UNBOUNDED) ||
                s->max >= static_cast<int>(REP_UNBOUNDED))
                return false;
            nd.min = static_cast<uint8_t>(s->min);
            nd.max = static_cast<uint8_t>(s->max < 0 ? REP_UNBOUNDED : s->max);
        }
        nd.n = static_cast<uint8_t>(s->kids.size());
        nd.arg = static_cast<uint32_t>(arena.size());
        arena.resize(arena.size() + s->kids.size()); // the kids' run; may move the array
        for (size_t i = 0; i < s->kids.size(); i++)
            if (!rx_place(arena, s->kids[i], nd.arg + i))
                return false;
    }
    arena[at] = nd;
    return true;
}

// Pattern texts already compiled, and their roots: only while build_plans() runs.
std::unordered_map<std::string, uint32_t> *compiled;
size_t compiled_shared; // how many times a root was shared (for the unit test)

// Compiles pattern into arena; out: its root. false: the pattern is outside the subset or does
// not fit (the calling code keeps libphonenumber's path); arena is left as it was.
bool rx_compile(std::vector<node> &arena, const std::string &pattern, uint32_t &out)
{
    if (compiled && &arena == nodes) {
        auto it = compiled->find(pattern);
        if (it != compiled->end()) {
            compiled_shared++;
            out = it->second;
            return true;
        }
    }
    rx tree;
    rx_parser ps{pattern.data(), pattern.data() + pattern.size()};
    tree = ps.alt();
    if (!ps.ok || ps.p != ps.end)
        return false;
    size_t root = arena.size();
    if (root >= UINT32_MAX)
        return false;
    arena.emplace_back();
    if (!rx_place(arena, tree, root)) {
        arena.resize(root);
        return false;
    }
    out = static_cast<uint32_t>(root);
    if (compiled && &arena == nodes)
        compiled->emplace(pattern, out);
    return true;
}

// A national number ready for matching: its digits' positions.
struct rx_input {
    uint32_t at[10] = {}; // at[d]: bit i when digit i is d
    uint32_t all = 0;     // every digit's position: what \d takes
    size_t len = 0;
    explicit rx_input(const char *digits, size_t n) : len(n)
    {
        for (size_t i = 0; i < n; i++)
            at[digits[i] - '0'] |= 1u << i;
        all = n ? (1u << n) - 1 : 0;
    }
};

// The positions pattern node i can end at, starting from any position in from (a bit per
// position 0..len).
uint32_t rx_run(const node *nd, uint32_t i, uint32_t from, const rx_input &in)
{
    const node &n = nd[i];
    switch (n.k) {
    case rx::SET: {
        uint32_t m = 0;
        if (n.arg == 0x3ff) {
            m = in.all;
        } else {
            for (uint32_t s = n.arg; s; s &= s - 1)
                m |= in.at[__builtin_ctz(s)];
        }
        return (from & m) << 1;
    }
    case rx::END:
        return from & (1u << in.len);
    case rx::SEQ:
        for (uint32_t k = n.arg, e = n.arg + n.n; k < e; k++) {
            if (!from)
                return 0;
            from = rx_run(nd, k, from, in);
        }
        return from;
    case rx::ALT: {
        uint32_t to = 0;
        for (uint32_t k = n.arg, e = n.arg + n.n; k < e; k++)
            to |= rx_run(nd, k, from, in);
        return to;
    }
    case rx::REP: {
        uint32_t cur = from;
        for (unsigned r = 0; r < n.min && cur; r++)
            cur = rx_run(nd, n.arg, cur, in);
        uint32_t all = cur;
        for (unsigned r = n.min; (n.max == REP_UNBOUNDED || r < n.max) && cur; r++) {
            cur = rx_run(nd, n.arg, cur, in) & ~all; // only new positions can lead further
            all |= cur;
        }
        return all;
    }
    }
    return 0;
}

// ICU's lookingAt(): the pattern matches a prefix (possibly empty) of the input.
bool rx_prefix(uint32_t root, const rx_input &in)
{
    return rx_run(nodes->data(), root, 1, in) != 0;
}

// ICU's matches(): the pattern matches the whole input.
bool rx_full(uint32_t root, const rx_input &in)
{
    return (rx_run(nodes->data(), root, 1, in) >> in.len) & 1;
}

// A PhoneNumberDesc: IsNumberMatchingDesc is "the length is one of possible_length (when any is
// listed), and the pattern (when not empty) matches the whole number". 8 bytes.
struct desc_plan {
    // Bit l: l is a possible length. Bit 31: the desc lists lengths (a national number here is
    // at most 14 digits, so lengths from 31 up could never match and are not recorded).
    uint32_t lengths = 0;
    uint32_t pattern = NO_PATTERN;
    static constexpr uint32_t HAS_LENGTHS = 1u << 31;

    bool compile(const PhoneNumberDesc &d)
    {
        if (d.possible_length_size() > 0)
            lengths |= HAS_LENGTHS;
        for (int l : d.possible_length())
            if (l >= 0 && l < 31)
                lengths |= 1u << l;
        return d.national_number_pattern().empty() ||
               rx_compile(*nodes, d.national_number_pattern(), pattern);
    }
    bool matches(const rx_input &in) const
    {
        if ((lengths & HAS_LENGTHS) && !((lengths >> in.len) & 1))
            return false;
        return pattern != NO_PATTERN && rx_full(pattern, in);
    }
};

// One region's types, leading digits and code: 100 bytes (a std::string and twelve trees were 600).
struct region_plan {
    char code[4]; // "US", or "001" for a non-geographic entity
    bool same_mobile_and_fixed = false;
    uint32_t leading = NO_PATTERN; // the leading digits' pattern, if any
    desc_plan general, premium, toll_free, shared_cost, voip, personal, pager, uan, voicemail,
        fixed, mobile;

    bool compile(const PhoneMetadata &m)
    {
        same_mobile_and_fixed = m.same_mobile_and_fixed_line_pattern();
        return general.compile(m.general_desc()) && premium.compile(m.premium_rate()) &&
               toll_free.compile(m.toll_free()) && shared_cost.compile(m.shared_cost()) &&
               voip.compile(m.voip()) && personal.compile(m.personal_number()) &&
               pager.compile(m.pager()) && uan.compile(m.uan()) &&
               voicemail.compile(m.voicemail()) && fixed.compile(m.fixed_line()) &&
               mobile.compile(m.mobile()) &&
               (!m.has_leading_digits() || rx_compile(*nodes, m.leading_digits(), leading));
    }

    // phonenumberutil.cc's GetNumberTypeHelper, in its order.
    PhoneNumberUtil::PhoneNumberType type(const rx_input &in) const
    {
        if (!general.matches(in))
            return PhoneNumberUtil::UNKNOWN;
        if (premium.matches(in))
            return PhoneNumberUtil::PREMIUM_RATE;
        if (toll_free.matches(in))
            return PhoneNumberUtil::TOLL_FREE;
        if (shared_cost.matches(in))
            return PhoneNumberUtil::SHARED_COST;
        if (voip.matches(in))
            return PhoneNumberUtil::VOIP;
        if (personal.matches(in))
            return PhoneNumberUtil::PERSONAL_NUMBER;
        if (pager.matches(in))
            return PhoneNumberUtil::PAGER;
        if (uan.matches(in))
            return PhoneNumberUtil::UAN;
        if (voicemail.matches(in))
            return PhoneNumberUtil::VOICEMAIL;
        if (fixed.matches(in)) {
            if (same_mobile_and_fixed || mobile.matches(in))
                return PhoneNumberUtil::FIXED_LINE_OR_MOBILE;
            return PhoneNumberUtil::FIXED_LINE;
        }
        if (!same_mobile_and_fixed && mobile.matches(in))
            return PhoneNumberUtil::MOBILE;
        return PhoneNumberUtil::UNKNOWN;
    }
};

// One calling code: its regions in libphonenumber's order (the main one first, a run of
// region_plans), and the national prefix pattern of the metadata Parse uses for it (the main
// region's, or the non-geographic entity's). 8 bytes (80 with a vector of regions and a tree):
// 1000 of them, one per possible code.
struct code_plan {
    uint32_t npp = NO_PATTERN;
    uint16_t first = 0; // the first region's index in region_plans
    uint8_t count = 0;  // its regions (+1 has the most: 25)
    bool fast = false;
};
code_plan *plans;                       // [1000], filled once by build_plans(); read-only after
std::vector<region_plan> *region_plans; // every code's regions, in runs; read-only after

// Builds the plan of calling code cc; false leaves it to libphonenumber (what it appended to
// nodes and region_plans stays, unused: no code has fallen back so far).
bool build_plan(PhoneNumberUtil *u, int cc, code_plan &plan)
{
    using i18n::phonenumbers::PhoneNumberUtilTest;
    std::list<std::string> list;
    u->GetRegionCodesForCountryCallingCode(cc, &list);
    if (list.empty() || list.size() > UINT8_MAX || region_plans->size() + list.size() > UINT16_MAX)
        return false;
    plan.first = static_cast<uint16_t>(region_plans->size());
    for (const std::string &r : list) {
        const PhoneMetadata *m =
            r == "001" ? PhoneNumberUtilTest::non_geo(*u, cc) : PhoneNumberUtilTest::region(*u, r);
        region_plan rp;
        if (!m || r.size() >= sizeof rp.code || !rp.compile(*m))
            return false;
        std::memcpy(rp.code, r.c_str(), r.size() + 1);
        if (r == list.front() && !m->national_prefix_for_parsing().empty() &&
            !rx_compile(*nodes, m->national_prefix_for_parsing(), plan.npp))
            return false;
        region_plans->push_back(rp);
    }
    plan.count = static_cast<uint8_t>(list.size());
    return true;
}

void build_plans(PhoneNumberUtil *u)
{
    plans = new code_plan[1000];
    nodes = new std::vector<node>();
    region_plans = new std::vector<region_plan>();
    compiled = new std::unordered_map<std::string, uint32_t>();
    for (int cc = 1; cc < 1000; cc++)
        if (known_code[cc] && !(plans[cc].fast = build_plan(u, cc, plans[cc])))
            plans[cc] = code_plan();
    // The texts were needed only to share compiled patterns; the arrays keep their size.
    delete compiled;
    compiled = nullptr;
    nodes->shrink_to_fit();
    region_plans->shrink_to_fit();
}

enum class fast { VALID, INVALID, SLOW };

// "+<digits>" as Parse(s, "ZZ") + GetNumberType + GetRegionCodeForNumber would answer it, or
// SLOW where this path does not decide (see above). region: the plan's region code.
fast parse_fast(const std::string &s, PhoneNumber &pn, PhoneNumberUtil::PhoneNumberType &type,
                const char *&region)
{
    th_phone_init(); // the tables below (callers such as the CLI parse without calling it)
    if (s.empty() || s[0] != '+' || s.size() > 16)
        return fast::SLOW;
    const char *d = s.data() + 1;
    size_t n = s.size() - 1;
    if (n <= 2)
        return fast::INVALID; // Parse: TOO_SHORT_AFTER_IDD
    for (size_t i = 0; i < n; i++)
        if (d[i] < '0' || d[i] > '9')
            return fast::SLOW;
    if (d[0] == '0')
        return fast::INVALID; // calling codes do not start with 0
    int cc = 0;
    size_t cl = 0;
    for (size_t i = 1, v = 0; i <= 3 && !cl; i++) {
        v = v * 10 + static_cast<size_t>(d[i - 1] - '0');
        if (known_code[v])
            cc = static_cast<int>(v), cl = i;
    }
    if (!cl)
        return fast::INVALID; // INVALID_COUNTRY_CODE
    const code_plan &plan = plans[cc];
    if (!plan.fast)
        return fast::SLOW;
    const char *nsn = d + cl;
    size_t len = n - cl;
    if (len < 2)
        return fast::INVALID; // TOO_SHORT_NSN
    rx_input in(nsn, len);
    if (plan.npp != NO_PATTERN && (rx_run(nodes->data(), plan.npp, 1, in) & ~1u))
        return fast::SLOW; // a national prefix Parse may strip
    // SetItalianLeadingZerosForPhoneNumber: the last digit is never a leading zero.
    pn.set_country_code(cc);
    if (len > 1 && nsn[0] == '0') {
        pn.set_italian_leading_zero(true);
        int zeros = 1;
        while (static_cast<size_t>(zeros) < len - 1 && nsn[zeros] == '0')
            zeros++;
        if (zeros != 1)
            pn.set_number_of_leading_zeros(zeros);
    }
    uint64_t national = 0;
    for (size_t i = 0; i < len; i++)
        national = national * 10 + static_cast<uint64_t>(nsn[i] - '0');
    pn.set_national_number(national);
    // GetRegionCodeForNumber: the only region, else the first whose leading digits match the
    // start of the number or, without leading digits, whose types take it. The national
    // significant number libphonenumber matches is nsn itself (its leading zeros, then the rest).
    const region_plan *rp = nullptr;
    const region_plan *first = region_plans->data() + plan.first;
    if (plan.count == 1) {
        rp = first;
    } else {
        for (const region_plan *r = first; r < first + plan.count; r++) {
            if (r->leading != NO_PATTERN ? rx_prefix(r->leading, in)
                                         : r->type(in) != PhoneNumberUtil::UNKNOWN) {
                rp = r;
                break;
            }
        }
    }
    if (!rp)
        return fast::INVALID; // region "ZZ": no metadata, type UNKNOWN
    type = rp->type(in);
    region = rp->code;
    return type == PhoneNumberUtil::UNKNOWN ? fast::INVALID : fast::VALID;
}

// '+' and digits: the fast path, else Parse as international. region: set when the fast path
// decided (the caller looks it up otherwise).
bool parse_international(const std::string &plus, PhoneNumber &pn,
                         PhoneNumberUtil::PhoneNumberType &type, const char *&region)
{
    region = nullptr;
    fast f = parse_fast(plus, pn, type, region);
    if (f != fast::SLOW)
        return f == fast::VALID;
    region = nullptr;
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
        build_plans(u);
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
        const char *fast_region = nullptr; // the fast path's region, when it decided
        if (s[0] == '+') {
            ok = parse_international(s, pn, type, fast_region);
        } else {
            // Without '+': the configured region's national reading first. Okta's numbers are
            // E.164 more often than not, but a national number of the admin's region that also
            // reads as an international one (2015550123: +1 201 555 0123, or +20 1555 0123 in
            // Egypt) is far more likely theirs; a wrong guess calls abroad, or an SMS is refused
            // as a landline. Numbers not valid there are read as international.
            std::string plus = "+" + s;
            PhoneNumber alt;
            PhoneNumberUtil::PhoneNumberType alt_type = PhoneNumberUtil::UNKNOWN;
            const char *alt_region = nullptr;
            ok = default_region && *default_region && parse_valid(s, default_region, pn, type);
            if (!ok) {
                pn.Clear();
                ok = parse_international(plus, pn, type, fast_region);
            } else if (parse_international(plus, alt, alt_type, alt_region)) {
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
        if (fast_region) {
            region = fast_region;
        } else if (main[0] && single_region[cc]) {
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

// For tests/unit/test_phone_e164.cc: how many known calling codes keep libphonenumber's path
// (a pattern outside the matcher's subset). Not in phone.h: no caller needs it.
int th_phone_testing_slow_codes();
int th_phone_testing_slow_codes()
{
    th_phone_init();
    int n = 0;
    for (int cc = 1; cc < 1000; cc++)
        n += known_code[cc] && !plans[cc].fast;
    return n;
}

// For tests/unit/test_phone_e164.cc: the plans' size. node_count: the compiled patterns' nodes;
// bytes: the heap the plans hold (the node array, the regions, the per-code table); shared: the
// patterns that reused the nodes of the same text compiled before.
void th_phone_testing_plan_size(size_t *node_count, size_t *bytes, size_t *shared);
void th_phone_testing_plan_size(size_t *node_count, size_t *bytes, size_t *shared)
{
    th_phone_init();
    *node_count = nodes->size();
    *shared = compiled_shared;
    *bytes = nodes->capacity() * sizeof(node) + region_plans->capacity() * sizeof(region_plan) +
             1000 * sizeof(code_plan);
}

// For tests/unit/test_phone_e164.cc: pattern compiled on its own (the plans are not touched) and
// run on digits as ICU's matches() (whole) or lookingAt(). -1: refused (outside the subset or a
// bound or kid count that does not fit), else 1 or 0; *node_count: the nodes it compiled to.
int th_phone_testing_match(const char *pattern, const char *digits, int whole, size_t *node_count);
int th_phone_testing_match(const char *pattern, const char *digits, int whole, size_t *node_count)
{
    try {
        std::vector<node> arena;
        uint32_t root;
        *node_count = 0;
        if (!rx_compile(arena, pattern, root))
            return -1;
        *node_count = arena.size();
        size_t len = std::strlen(digits);
        if (len >= 31 || std::strspn(digits, "0123456789") != len)
            return -1;
        rx_input in(digits, len);
        uint32_t to = rx_run(arena.data(), root, 1, in);
        return whole ? static_cast<int>((to >> len) & 1) : to != 0;
    } catch (...) {
        return -1;
    }
}
