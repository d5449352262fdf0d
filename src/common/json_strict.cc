#include "common/json_strict.hh"

#include <algorithm>
#include <cstring>

namespace th
{

namespace
{

bool has_nul(std::string_view s)
{
    return std::memchr(s.data(), '\0', s.size()) != nullptr;
}

} // namespace

const char *json_check_tree(simdjson::dom::element e, std::vector<std::string_view> &scratch)
{
    static const char *const dup = "invalid JSON (an object has a key twice)";
    static const char *const nul = "invalid JSON (a string holds \\u0000)";
    std::string_view str;
    if (!e.get_string().get(str))
        return has_nul(str) ? nul : nullptr;
    simdjson::dom::array a;
    if (!e.get_array().get(a)) {
        for (simdjson::dom::element v : a)
            if (const char *why = json_check_tree(v, scratch))
                return why;
        return nullptr;
    }
    simdjson::dom::object o;
    if (e.get_object().get(o))
        return nullptr; /* a number, true, false or null */
    size_t n = o.size();
    if (n <= 16) { // the usual case: pairwise, no allocation
        std::string_view keys[16];
        size_t i = 0;
        for (auto kv : o) {
            for (size_t j = 0; j < i; j++)
                if (keys[j] == kv.key)
                    return dup;
            keys[i++] = kv.key;
        }
    } else {
        scratch.clear();
        for (auto kv : o)
            scratch.push_back(kv.key);
        std::sort(scratch.begin(), scratch.end());
        if (std::adjacent_find(scratch.begin(), scratch.end()) != scratch.end())
            return dup;
    }
    for (auto kv : o) {
        if (has_nul(kv.key))
            return nul;
        if (const char *why = json_check_tree(kv.value, scratch))
            return why;
    }
    return nullptr;
}

} // namespace th
