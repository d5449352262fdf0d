// Okta request decoding with simdjson's DOM parser (the whole document is validated: UTF-8,
// syntax, nothing after the value), about twenty times faster than building jansson's DOM of the
// same body. Nothing C++ escapes: every entry point catches everything.
extern "C" {
#include "common/arena.h"
#include "common/util.h"
#include "okta/okta.h"
}

#include <cctype>
#include <cinttypes>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string_view>
#include <strings.h>
#include <vector>

#include <simdjson.h>

#include "common/json_strict.hh"

namespace
{

using simdjson::dom::element;
using simdjson::dom::object;

// Field length caps: far above anything Okta sends, far below anything that costs us.
constexpr size_t MAX_ID = 256, MAX_NAME = 1024, MAX_PHONE = 64, MAX_CHANNEL = 32, MAX_LOCALE = 64,
                 MAX_TEMPLATE = 2048, MAX_TIME = 64;

void set_why(char *why, size_t whylen, const char *msg)
{
    if (why && whylen)
        th_strlcpy(why, msg, whylen);
}

// One parser per thread, reused: its buffers grow to the largest body seen (the server bounds
// bodies), then stay. Documents nest at most simdjson's default 1024 levels.
simdjson::dom::parser &parser()
{
    thread_local simdjson::dom::parser p;
    return p;
}

// The member name of obj when obj is an object holding it; else a null result.
bool member(element obj, const char *name, element &out)
{
    object o;
    return !obj.get_object().get(o) && !o.at_key(name).get(out);
}

// The strings kept from the document, copied into one allocation at the end.
struct kept {
    const char **dst;
    std::string_view v;
};

struct fields {
    kept k[24];
    size_t n = 0;
    void keep(const char **dst, std::string_view v)
    {
        k[n++] = {dst, v};
    }
};

// Reads the fields telehook uses. A field that is present must have its documented type and fit
// its cap: a field of the wrong type (null included) or over its cap makes the request malformed
// (the first such field is named in bad), never "absent" — ["voice"] must not become an SMS.
// Absent fields are absent: the caller applies defaults or refuses a missing required one.
// Fields telehook does not read (eventTypeVersion, source, ...) are not checked.
struct reader {
    fields f;
    const char *bad = nullptr;

    void wrong(const char *path)
    {
        if (!bad)
            bad = path;
    }

    // An object member that must be an object. false when absent or wrong.
    bool obj(element parent, const char *name, const char *path, element &out)
    {
        element v;
        if (!member(parent, name, v))
            return false;
        if (!v.is_object()) {
            wrong(path);
            return false;
        }
        out = v;
        return true;
    }

    // A string member of at most max bytes. false when absent or wrong.
    bool str(element parent, const char *name, const char *path, size_t max, std::string_view &out)
    {
        element v;
        if (!member(parent, name, v))
            return false;
        std::string_view s;
        if (v.get_string().get(s) || s.size() > max) {
            wrong(path);
            return false;
        }
        out = s;
        return true;
    }

    // A field Okta documents as a string that may arrive as a JSON integer (Preview edits,
    // Okta's OpenAPI sample): a string of at most max bytes, or an integer 0..INT64_MAX written
    // into numbuf. Floats, negative numbers and anything else are wrong.
    bool str_or_int(element parent, const char *name, const char *path, size_t max, char *numbuf,
                    size_t numlen, std::string_view &out)
    {
        element v;
        if (!member(parent, name, v))
            return false;
        if (v.type() == simdjson::dom::element_type::INT64 ||
            v.type() == simdjson::dom::element_type::UINT64) {
            int64_t i;
            if (v.get_int64().get(i) || i < 0) { // negative, or beyond int64
                wrong(path);
                return false;
            }
            int n = std::snprintf(numbuf, numlen, "%" PRId64, i);
            out = std::string_view(numbuf, (size_t)n);
            return true;
        }
        return str(parent, name, path, max, out);
    }

    void keep(const char **dst, element parent, const char *name, const char *path, size_t max)
    {
        std::string_view s;
        if (str(parent, name, path, max, s))
            f.keep(dst, s);
    }
};

bool otp_ok(std::string_view otp)
{
    if (otp.empty() || otp.size() > TH_OKTA_OTP_MAX)
        return false;
    for (char c : otp)
        if (!std::isgraph((unsigned char)c)) // printable ASCII, no spaces
            return false;
    return true;
}

// Copies the kept strings into one allocation: the arena's when there is one, else owned by req.
bool commit(fields &f, struct th_okta_request *req, struct th_arena *arena)
{
    size_t total = 0;
    for (size_t i = 0; i < f.n; i++)
        total += f.k[i].v.size() + 1;
    char *p = arena ? static_cast<char *>(th_arena_alloc(arena, total ? total : 1))
                    : static_cast<char *>(std::malloc(total ? total : 1));
    if (!p)
        return false;
    if (!arena)
        req->store_ = p;
    for (size_t i = 0; i < f.n; i++) {
        std::memcpy(p, f.k[i].v.data(), f.k[i].v.size());
        p[f.k[i].v.size()] = '\0';
        *f.k[i].dst = p;
        p += f.k[i].v.size() + 1;
    }
    return true;
}

th_err decode(const char *body, size_t len, bool padded, struct th_arena *arena,
              struct th_okta_request *out, char *why, size_t whylen)
{
    element root;
    // padded: SIMDJSON_PADDING bytes readable past the body, so simdjson need not copy it
    auto err = parser().parse(body, len, !padded).get(root);
    if (err) {
        char msg[96];
        std::snprintf(msg, sizeof msg, "invalid JSON (%s)", simdjson::error_message(err));
        set_why(why, whylen, msg);
        return TH_E_JSON;
    }
    if (!root.is_object()) {
        set_why(why, whylen, "request body is not a JSON object");
        return TH_E_JSON;
    }
    thread_local std::vector<std::string_view> scratch;
    if (const char *bad = th::json_check_tree(root, scratch)) {
        set_why(why, whylen, bad);
        return TH_E_JSON;
    }

    reader r;
    const char *reason = nullptr;
    std::string_view event_type, phone, otp, channel, tpl;
    bool has_event_type, has_phone, has_otp, has_channel;
    element data, mp, up, ctx, req;

    has_event_type = r.str(root, "eventType", "eventType", MAX_ID, event_type);
    r.keep(&out->event_id, root, "eventId", "eventId", MAX_ID);
    r.keep(&out->event_time, root, "eventTime", "eventTime", MAX_TIME);
    r.keep(&out->request_type, root, "requestType", "requestType", MAX_ID);
    bool has_data = r.obj(root, "data", "data", data);
    bool has_mp = has_data && r.obj(data, "messageProfile", "data.messageProfile", mp);
    if (has_mp) {
        has_phone = r.str_or_int(mp, "phoneNumber", "data.messageProfile.phoneNumber", MAX_PHONE,
                                 out->phone_num_, sizeof out->phone_num_, phone);
        has_otp = r.str_or_int(mp, "otpCode", "data.messageProfile.otpCode", MAX_ID, out->otp_num_,
                               sizeof out->otp_num_, otp);
        has_channel = r.str(mp, "deliveryChannel", "data.messageProfile.deliveryChannel",
                            MAX_CHANNEL, channel);
        r.keep(&out->otp_expires, mp, "otpExpires", "data.messageProfile.otpExpires", MAX_TIME);
        r.keep(&out->locale, mp, "locale", "data.messageProfile.locale", MAX_LOCALE);
        if (r.str(mp, "msgTemplate", "data.messageProfile.msgTemplate", MAX_TEMPLATE, tpl) &&
            !tpl.empty()) // empty: no text of Okta's to fall back on
            r.f.keep(&out->msg_template, tpl);
    } else {
        has_phone = has_otp = has_channel = false;
    }
    if (has_data && r.obj(data, "userProfile", "data.userProfile", up)) {
        r.keep(&out->first_name, up, "firstName", "data.userProfile.firstName", MAX_NAME);
        r.keep(&out->last_name, up, "lastName", "data.userProfile.lastName", MAX_NAME);
        r.keep(&out->login, up, "login", "data.userProfile.login", MAX_NAME);
        r.keep(&out->user_id, up, "userId", "data.userProfile.userId", MAX_ID);
    }
    if (has_data && r.obj(data, "context", "data.context", ctx) &&
        r.obj(ctx, "request", "data.context.request", req)) {
        r.keep(&out->okta_request_id, req, "id", "data.context.request.id", MAX_ID);
        r.keep(&out->source_ip, req, "ipAddress", "data.context.request.ipAddress", MAX_ID);
    }
    if (r.bad) {
        char msg[128];
        std::snprintf(msg, sizeof msg, "%s has the wrong type or is too long", r.bad);
        set_why(why, whylen, msg);
        return TH_E_JSON;
    }

    if (has_event_type && event_type != TH_OKTA_EVENT_TYPE)
        reason = "eventType is not com.okta.telephony.provider";
    else if (!has_mp)
        reason = "data.messageProfile missing";
    else if (!has_phone || phone.empty())
        reason = "messageProfile.phoneNumber missing or invalid";
    else if (!has_otp || !otp_ok(otp))
        reason = "messageProfile.otpCode missing or invalid";
    if (reason) {
        set_why(why, whylen, reason);
        return TH_E_REQUEST;
    }
    r.f.keep(&out->phone, phone);
    r.f.keep(&out->otp, otp);
    /* Okta has said "SMS or CALL", "SMS or voice call" and "SMS or voice": SMS is the only
     * value we can be sure of, so any other string means a call. Absent means SMS. */
    out->channel = TH_CHANNEL_SMS;
    if (has_channel) {
        r.f.keep(&out->delivery_channel, channel);
        if (channel.size() != 3 || strncasecmp(channel.data(), "sms", 3) != 0)
            out->channel = TH_CHANNEL_VOICE;
    }
    if (!commit(r.f, out, arena))
        return TH_E_NOMEM;
    if (!out->otp_expires || th_parse_iso8601(out->otp_expires, &out->otp_expires_ms) != TH_E_OK)
        out->otp_expires_ms = 0;
    return TH_E_OK;
}

static_assert(TH_OKTA_PADDING >= simdjson::SIMDJSON_PADDING, "okta.h promises simdjson's padding");

th_err decode_any(const char *body, size_t len, bool padded, struct th_arena *arena,
                  struct th_okta_request *out, char *why, size_t whylen)
{
    std::memset(out, 0, sizeof *out);
    th_err e;
    try {
        e = body ? decode(body, len, padded, arena, out, why, whylen)
                 : decode("", 0, false, arena, out, why, whylen);
    } catch (...) {
        set_why(why, whylen, "out of memory");
        e = TH_E_NOMEM;
    }
    if (e != TH_E_OK)
        th_okta_request_release(out);
    return e;
}

} // namespace

extern "C" th_err th_okta_decode(const char *body, size_t len, struct th_okta_request *out,
                                 char *why, size_t whylen)
{
    return decode_any(body, len, false, nullptr, out, why, whylen);
}

extern "C" th_err th_okta_decode_in(struct th_arena *arena, const char *body, size_t len,
                                    size_t body_cap, struct th_okta_request *out, char *why,
                                    size_t whylen)
{
    return decode_any(body, len, body_cap >= len + TH_OKTA_PADDING, arena, out, why, whylen);
}

extern "C" void th_okta_request_release(struct th_okta_request *req)
{
    std::free(req->store_);
    std::memset(req, 0, sizeof *req);
}
