#include "okta/okta.h"

#include <ctype.h>
#include <inttypes.h>
#include <stdio.h>
#include <string.h>
#include <strings.h>

#include <jansson.h>

#include "common/util.h"

/* Field length caps: far above anything Okta sends, far below anything that costs us. */
enum {
    MAX_ID = 256,
    MAX_NAME = 1024,
    MAX_PHONE = 64,
    MAX_CHANNEL = 32,
    MAX_LOCALE = 64,
    MAX_TEMPLATE = 2048,
    MAX_TIME = 64,
};

static void set_why(char *why, size_t whylen, const char *msg)
{
    if (why && whylen)
        th_strlcpy(why, msg, whylen);
}

/* An optional string field: NULL when absent, null, of another type, or over its cap. */
static const char *opt_str(json_t *obj, const char *name, size_t max)
{
    json_t *v = json_object_get(obj, name);
    if (!json_is_string(v) || json_string_length(v) > max)
        return NULL;
    const char *s = json_string_value(v);
    if (strlen(s) != json_string_length(v)) /* an embedded NUL: "\u0000" */
        return NULL;
    return s;
}

/* A field Okta documents as a string that may arrive as a JSON integer (Preview edits). */
static const char *str_or_int(json_t *obj, const char *name, size_t max, char *numbuf,
                              size_t numlen)
{
    json_t *v = json_object_get(obj, name);
    if (json_is_integer(v)) {
        json_int_t i = json_integer_value(v);
        if (i < 0)
            return NULL;
        snprintf(numbuf, numlen, "%" JSON_INTEGER_FORMAT, i);
        return numbuf;
    }
    return opt_str(obj, name, max);
}

static bool otp_ok(const char *otp)
{
    size_t n = strlen(otp);
    if (n == 0 || n > TH_OKTA_OTP_MAX)
        return false;
    for (size_t i = 0; i < n; i++)
        if (!isgraph((unsigned char)otp[i])) /* printable ASCII, no spaces */
            return false;
    return true;
}

th_err th_okta_decode(const char *body, size_t len, struct th_okta_request *out, char *why,
                      size_t whylen)
{
    memset(out, 0, sizeof *out);
    json_error_t jerr;
    /* REJECT_DUPLICATES: two "otpCode" keys would let a proxy and us see different codes. */
    json_t *root = json_loadb(body, len, JSON_REJECT_DUPLICATES, &jerr);
    if (!root) {
        char msg[96];
        snprintf(msg, sizeof msg, "invalid JSON at line %d column %d", jerr.line, jerr.column);
        set_why(why, whylen, msg);
        return TH_E_JSON;
    }
    if (!json_is_object(root)) {
        json_decref(root);
        set_why(why, whylen, "request body is not a JSON object");
        return TH_E_JSON;
    }
    out->root_ = root;
    const char *reason = NULL;

    const char *event_type = opt_str(root, "eventType", MAX_ID);
    if (json_object_get(root, "eventType") &&
        (!event_type || strcmp(event_type, TH_OKTA_EVENT_TYPE))) {
        reason = "eventType is not com.okta.telephony.provider";
        goto refuse;
    }
    out->event_id = opt_str(root, "eventId", MAX_ID);
    out->event_time = opt_str(root, "eventTime", MAX_TIME);
    out->request_type = opt_str(root, "requestType", MAX_ID);

    json_t *data = json_object_get(root, "data");
    json_t *mp = json_object_get(data, "messageProfile");
    if (!json_is_object(mp)) {
        reason = "data.messageProfile missing";
        goto refuse;
    }
    out->phone = str_or_int(mp, "phoneNumber", MAX_PHONE, out->phone_num_, sizeof out->phone_num_);
    if (!out->phone || !*out->phone) {
        reason = "messageProfile.phoneNumber missing or invalid";
        goto refuse;
    }
    out->otp = str_or_int(mp, "otpCode", TH_OKTA_OTP_MAX, out->otp_num_, sizeof out->otp_num_);
    if (!out->otp || !otp_ok(out->otp)) {
        reason = "messageProfile.otpCode missing or invalid";
        goto refuse;
    }
    /* Okta has said "SMS or CALL", "SMS or voice call" and "SMS or voice": SMS is the only
     * value we can be sure of, so anything else means a call. Absent means SMS. */
    out->delivery_channel = opt_str(mp, "deliveryChannel", MAX_CHANNEL);
    out->channel = TH_CHANNEL_SMS;
    if (out->delivery_channel && strcasecmp(out->delivery_channel, "sms") != 0)
        out->channel = TH_CHANNEL_VOICE;
    out->otp_expires = opt_str(mp, "otpExpires", MAX_TIME);
    if (!out->otp_expires || th_parse_iso8601(out->otp_expires, &out->otp_expires_ms) != TH_E_OK)
        out->otp_expires_ms = 0;
    out->locale = opt_str(mp, "locale", MAX_LOCALE);
    out->msg_template = opt_str(mp, "msgTemplate", MAX_TEMPLATE);
    if (out->msg_template && !*out->msg_template)
        out->msg_template = NULL;

    json_t *up = json_object_get(data, "userProfile");
    out->first_name = opt_str(up, "firstName", MAX_NAME);
    out->last_name = opt_str(up, "lastName", MAX_NAME);
    out->login = opt_str(up, "login", MAX_NAME);
    out->user_id = opt_str(up, "userId", MAX_ID);

    json_t *ctx = json_object_get(json_object_get(data, "context"), "request");
    out->okta_request_id = opt_str(ctx, "id", MAX_ID);
    out->source_ip = opt_str(ctx, "ipAddress", MAX_ID);
    return TH_E_OK;

refuse:
    set_why(why, whylen, reason);
    th_okta_request_release(out);
    return TH_E_REQUEST;
}

void th_okta_request_release(struct th_okta_request *req)
{
    if (req->root_)
        json_decref(req->root_);
    memset(req, 0, sizeof *req);
}

static th_err field(struct th_buf *out, const char *name, const char *value, bool *first)
{
    if (!value)
        return TH_E_OK;
    th_err e = th_buf_appends(out, *first ? "\"" : ",\"");
    *first = false;
    if (!e)
        e = th_buf_appends(out, name);
    if (!e)
        e = th_buf_appends(out, "\":");
    if (!e)
        e = th_buf_append_json(out, value, (size_t)-1);
    return e;
}

th_err th_okta_encode_result(struct th_buf *out, const char *status, const char *provider,
                             const char *transaction_id, const char *metadata)
{
    bool first = true;
    th_err e = th_buf_appends(out, "{\"commands\":[{\"type\":\"" TH_OKTA_ACTION "\",\"value\":[{");
    if (!e)
        e = field(out, "status", status, &first);
    if (!e)
        e = field(out, "provider", provider, &first);
    if (!e)
        e = field(out, "transactionId", transaction_id, &first);
    if (!e)
        e = field(out, "transactionMetadata", metadata, &first);
    if (!e)
        e = th_buf_appends(out, "}]}]}");
    return e;
}

th_err th_okta_encode_error(struct th_buf *out, const char *summary, const char *cause_reason)
{
    bool first = true;
    th_err e = th_buf_appends(out, "{\"error\":{");
    if (!e)
        e = field(out, "errorSummary", summary, &first);
    if (!e && cause_reason) {
        e = th_buf_appends(out, ",\"errorCauses\":[{");
        bool cfirst = true;
        if (!e)
            e = field(out, "errorSummary", summary, &cfirst);
        if (!e)
            e = field(out, "reason", cause_reason, &cfirst);
        if (!e)
            e = th_buf_appends(out, "}]");
    }
    if (!e)
        e = th_buf_appends(out, "}}");
    return e;
}
