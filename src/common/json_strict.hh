// Strict JSON with simdjson (C++ only): what jansson refused by default and telehook still
// refuses, on top of simdjson's own validation (UTF-8, syntax, nothing after the value).
#ifndef TH_COMMON_JSON_STRICT_HH
#define TH_COMMON_JSON_STRICT_HH

#include <string_view>
#include <vector>

#include <simdjson.h>

namespace th
{

// Anywhere in the document: two equal keys in one object (they would let a proxy and us read
// different values; compared after unescaping), and "\u0000" in a string or key (no C string can
// hold it). nullptr when clean, else a short reason. scratch is reused for objects of more than
// 16 keys; nesting is bounded by the parser's depth limit (1024 by default).
const char *json_check_tree(simdjson::dom::element e, std::vector<std::string_view> &scratch);

} // namespace th

#endif
