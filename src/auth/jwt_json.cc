// simdjson behind jwt_json.h. Nothing C++ escapes: the entry points catch everything.
#include "auth/jwt_json.h"

#include <cstring>
#include <string_view>
#include <vector>

#include <simdjson.h>

#include "common/json_strict.hh"

namespace
{

using simdjson::dom::element;
using simdjson::dom::element_type;

struct current {
    simdjson::dom::parser
        parser; // buffers grow to the largest token seen (8 KiB at most), then stay
    std::vector<std::string_view> scratch;
    simdjson::dom::object root;
    bool ok = false;
};

current &cur()
{
    thread_local current c;
    return c;
}

bool parse(const void *json, size_t len)
{
    current &c = cur();
    c.ok = false;
    element root;
    if (c.parser.parse(static_cast<const char *>(json), len, true).get(root) ||
        root.get_object().get(c.root) || th::json_check_tree(root, c.scratch))
        return false;
    c.ok = true;
    return true;
}

bool get(const char *key, element &out)
{
    current &c = cur();
    return c.ok && !c.root.at_key(key).get(out);
}

} // namespace

extern "C" bool th_jwt_json_parse(const void *json, size_t len)
{
    try {
        return parse(json, len);
    } catch (...) {
        cur().ok = false;
        return false;
    }
}

extern "C" struct th_jval th_jwt_json_get(const char *key)
{
    struct th_jval v = {};
    v.type = TH_J_ABSENT;
    element e;
    if (!get(key, e)) // at_key neither allocates nor throws
        return v;
    std::string_view s;
    uint64_t u = 0;
    if (!e.get_string().get(s)) {
        v.type = TH_J_STRING;
        v.s = s.data(); // simdjson keeps its strings NUL-terminated
        v.len = s.size();
    } else if (e.type() == element_type::INT64 && !e.get_int64().get(v.i)) {
        v.type = TH_J_INTEGER;
    } else if (e.type() == element_type::UINT64 && !e.get_uint64().get(u)) {
        v.type = TH_J_REAL; // only integers beyond int64 come as UINT64
        v.d = static_cast<double>(u);
    } else if (e.type() == element_type::DOUBLE && !e.get_double().get(v.d)) {
        v.type = TH_J_REAL;
    } else {
        v.type = e.is_array() ? TH_J_ARRAY : TH_J_OTHER;
    }
    return v;
}

extern "C" bool th_jwt_json_has_string(const char *key, const char *want)
{
    element e;
    if (!get(key, e))
        return false;
    std::string_view w(want), s;
    if (!e.get_string().get(s))
        return s == w;
    simdjson::dom::array a;
    if (e.get_array().get(a))
        return false;
    for (element x : a)
        if (!x.get_string().get(s) && s == w)
            return true;
    return false;
}
