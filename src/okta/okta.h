/*
 * Okta Telephony Inline Hook: request decoding (decode.cc, simdjson) and response encoding
 * (okta.c). Pure functions, no I/O; the JSON library stays inside this module.
 *
 * Decoding is lenient where Okta is inconsistent (see docs/okta-setup.md and the reference):
 * deliveryChannel compared case-insensitively ("sms" is SMS, any other string voice),
 * otpCode and phoneNumber accepted as JSON strings or non-negative integers, absent optional
 * fields given their defaults. It is strict where safety needs it: a field telehook reads that is
 * present with another type (null included) or over its length cap makes the request malformed
 * (deliveryChannel ["voice"] must not become an SMS); bounded lengths, a printable OTP.
 */
#ifndef TH_OKTA_OKTA_H
#define TH_OKTA_OKTA_H

#include <stddef.h>
#include <stdint.h>

#include "common/buf.h"
#include "common/err.h"
#include "common/types.h"

#define TH_OKTA_EVENT_TYPE "com.okta.telephony.provider"
#define TH_OKTA_ACTION     "com.okta.telephony.action"

/* Okta waits this long for the hook's answer, then gives up (its limit: server.deadline_ms is
 * ours, and shorter). */
#define TH_OKTA_TIMEOUT_MS 3000

/* Longest OTP accepted; Okta does not document the length (6 digits in practice). */
#define TH_OKTA_OTP_MAX 32

/*
 * A decoded request. Every string is either NULL (absent) or NUL-terminated and owned by the
 * request (one allocation): valid until th_okta_request_release().
 */
struct th_okta_request {
    const char *event_id;
    const char *event_time;
    const char *request_type;     /* "com.okta.user.telephony.mfa-verification", ... */
    const char *phone;            /* raw, as sent (required) */
    const char *delivery_channel; /* raw, as sent; NULL means SMS */
    th_channel channel;
    const char *otp;          /* required, 1..TH_OKTA_OTP_MAX printable ASCII, no spaces */
    const char *otp_expires;  /* raw */
    int64_t otp_expires_ms;   /* unix ms; 0 when absent or unparsable */
    const char *locale;       /* raw, e.g. "EN-US" */
    const char *msg_template; /* Okta's own SMS text, already rendered with the code */
    const char *first_name, *last_name, *login, *user_id;
    const char *okta_request_id; /* data.context.request.id */
    const char *source_ip;       /* data.context.request.ipAddress */

    /* private */
    char *store_;        /* the strings above, in one allocation */
    char phone_num_[24]; /* phoneNumber sent as a JSON integer */
    char otp_num_[24];   /* otpCode sent as a JSON integer */
};

/*
 * Decodes a request body (len bytes, need not be NUL-terminated).
 *  TH_E_OK       out filled; release it.
 *  TH_E_JSON     malformed (HTTP 400): not JSON (invalid syntax or UTF-8, a key twice in one
 *                object), not a JSON object, or a field of the wrong type or too long. why says
 *                what and names the field (never its value).
 *  TH_E_REQUEST  JSON, but not a telephony request we can serve (answer Okta's error object);
 *                why is a short reason for the log, naming fields, never their values.
 * On failure out needs no release. why may be NULL.
 */
th_err th_okta_decode(const char *body, size_t len, struct th_okta_request *out, char *why,
                      size_t whylen);

/*
 * Bytes that, readable past a body, let the parser read it in place (simdjson reads in 64-byte
 * blocks); a body without them is copied first.
 */
#define TH_OKTA_PADDING 64

/*
 * The same, the strings copied into arena (the request's): out needs no release, its strings
 * live as long as the arena and are wiped with it. body_cap: the bytes readable at body; at
 * least len + TH_OKTA_PADDING and the body is parsed where it lies, without a copy.
 */
struct th_arena;
th_err th_okta_decode_in(struct th_arena *arena, const char *body, size_t len, size_t body_cap,
                         struct th_okta_request *out, char *why, size_t whylen);
void th_okta_request_release(struct th_okta_request *req);

/*
 * {"commands":[{"type":"com.okta.telephony.action","value":[{"status":…,"provider":…,
 *  "transactionId":…,"transactionMetadata":…}]}]} — NULL optional fields are left out. Both
 * encoders fail out (th_buf's sticky error) when it does not fit, so half an answer is never sent.
 */
th_err th_okta_encode_result(struct th_buf *out, const char *status, const char *provider,
                             const char *transaction_id, const char *metadata);
/*
 * {"error":{"errorSummary":…,"errorCauses":[{"errorSummary":…,"reason":…}]}} — summary is shown
 * to end users: it must be safe and generic; cause_reason (NULL to omit the causes) is for admins.
 */
th_err th_okta_encode_error(struct th_buf *out, const char *summary, const char *cause_reason);

#endif
