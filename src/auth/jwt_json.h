/*
 * The JSON of a JWT's header and claims, read with simdjson: strictly (UTF-8 and syntax
 * validated, nothing after the value, duplicate keys and "\u0000" refused anywhere) and without
 * building a tree of allocations — jansson's tree took about 6 µs per token, a fifth of a new
 * token's cost. Internal to src/auth.
 *
 * One document per thread at a time: the strings th_jwt_json_get returns point into the
 * thread's parser and stay valid until that thread's next th_jwt_json_parse.
 */
#ifndef TH_AUTH_JWT_JSON_H
#define TH_AUTH_JWT_JSON_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

enum th_jtype {
    TH_J_ABSENT,  /* no such member */
    TH_J_STRING,  /* s, len (s is NUL-terminated and holds no NUL) */
    TH_J_INTEGER, /* i: an integer within int64 */
    TH_J_REAL,    /* d: a number with a fraction or exponent, or an integer beyond int64 */
    TH_J_ARRAY,
    TH_J_OTHER, /* object, true, false, null */
};

struct th_jval {
    enum th_jtype type;
    const char *s;
    size_t len;
    int64_t i;
    double d;
};

/* Parses json as this thread's current document: true when it is a valid, strict JSON object. */
bool th_jwt_json_parse(const void *json, size_t len);

/* The top-level member key of the current document (type TH_J_ABSENT when missing). */
struct th_jval th_jwt_json_get(const char *key);

/* True when member key is the string want, or an array holding the string want. */
bool th_jwt_json_has_string(const char *key, const char *want);

#ifdef __cplusplus
}
#endif

#endif
