/*
 * Delivery receipts: what a provider says became of a message after it accepted it (Twilio
 * status callbacks; AWS End User Messaging delivery events, through an SNS HTTPS subscription
 * or an EventBridge API destination). Pure functions: parsing the bodies (bounded), checking
 * their authentication (X-Twilio-Signature, the SNS message signature, the EventBridge header
 * secret; every comparison constant-time) and mapping each provider's status onto one
 * normalised vocabulary that the store, the metrics and the route health share.
 *
 * Nothing here does I/O, holds a lock or keeps state: the HTTP side (the routes, the SNS
 * certificate cache fetched through net/) calls these on its loop. No function logs: a
 * receipt carries phone numbers (From, To, destinationPhoneNumber), and none of them is ever
 * copied into struct th_receipt.
 */
#ifndef TH_RECEIPT_RECEIPT_H
#define TH_RECEIPT_RECEIPT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "common/err.h"

/* Bounds on what a sender may make us parse: Twilio's callbacks are a few hundred bytes, an SNS
 * envelope carries at most a 256 KiB message (escaped in JSON, so allow for growth). */
#define TH_RECEIPT_FORM_MAX_BODY   (16 * 1024)
#define TH_RECEIPT_FORM_MAX_PARAMS 64
#define TH_RECEIPT_JSON_MAX_BODY   (512 * 1024)
#define TH_RECEIPT_JSON_MAX_DEPTH  16

/* One receipt, normalised. Strings are copied in (cut at their room), never a number. */
struct th_receipt {
    char provider[16];       /* "twilio" | "aws" */
    char transaction_id[96]; /* the provider's message id (Twilio SID, AWS messageId) */
    char status[16];         /* th_receipt_status_name: "delivered", "failed", ... */
    char error[48];          /* the provider's code: Twilio "30007", AWS messageStatus; "" */
    char country[4];         /* ISO alpha-2 from the provider when it says (AWS), else "" */
    char channel[8];         /* "sms" | "voice" | "" */
    bool final;              /* no later status is expected for the message */
    bool delivered;          /* it reached the handset (or the call was answered) */
    int64_t event_ms;        /* the provider's time of the event (unix ms), 0 when unknown */
};

/*
 * The normalised statuses (the common plan's list). "sent" and "queued" are not final: a
 * later receipt follows. The names are metric labels, so the set is closed.
 */
#define TH_RECEIPT_STATUSES(X)                                                                     \
    X(QUEUED, "queued", false, false)                                                              \
    X(SENT, "sent", false, false)                                                                  \
    X(DELIVERED, "delivered", true, true)                                                          \
    X(FAILED, "failed", true, false)                                                               \
    X(UNDELIVERED, "undelivered", true, false)                                                     \
    X(BLOCKED, "blocked", true, false)                                                             \
    X(SPAM, "spam", true, false)                                                                   \
    X(UNREACHABLE, "unreachable", true, false)                                                     \
    X(EXPIRED, "expired", true, false)                                                             \
    X(INVALID, "invalid", true, false)                                                             \
    X(NO_ANSWER, "no_answer", true, false)                                                         \
    X(BUSY, "busy", true, false)                                                                   \
    X(UNKNOWN, "unknown", true, false)

typedef enum {
#define TH_RS_ENUM(e, name, final, delivered) TH_RS_##e,
    TH_RECEIPT_STATUSES(TH_RS_ENUM)
#undef TH_RS_ENUM
        TH_RS__COUNT
} th_receipt_status;

const char *th_receipt_status_name(th_receipt_status s);
bool th_receipt_status_final(th_receipt_status s);
/* Fills status, final and delivered of r from s. */
void th_receipt_set_status(struct th_receipt *r, th_receipt_status s);

/* ---- x-www-form-urlencoded bodies (Twilio) ---- */
struct th_form_param {
    char *name, *value; /* decoded, NUL-terminated, owned by the form */
};
struct th_form {
    struct th_form_param params[TH_RECEIPT_FORM_MAX_PARAMS];
    size_t n;
    char *storage; /* one allocation holding every string */
};
/*
 * Decodes body (len bytes, '+' is a space, %XX an octet; not NUL-terminated). TH_E_TOOBIG
 * past TH_RECEIPT_FORM_MAX_BODY or TH_RECEIPT_FORM_MAX_PARAMS; TH_E_REQUEST on a malformed
 * escape or an embedded NUL. On success release the form with th_form_release.
 */
th_err th_form_parse(const char *body, size_t len, struct th_form *out);
void th_form_release(struct th_form *f); /* zeroed form: a no-op */
/* The first value of name, or NULL. */
const char *th_form_get(const struct th_form *f, const char *name);

/*
 * X-Twilio-Signature: base64(HMAC-SHA1(auth_token, url + each param's name + value sorted by
 * name, then value)). url is the public URL Twilio requested ([receipts] twilio_status_url:
 * behind a proxy the Host header is not it); as Twilio's own validators do, the URL is also
 * tried with its scheme's default port added when it has none, and removed when it has it.
 * Constant-time; false on any mismatch or an empty token or signature.
 */
bool th_receipt_twilio_verify(const char *auth_token, const char *url, const struct th_form *f,
                              const char *signature);
/* The signature of url + params (base64, NUL-terminated in out): for the tests and the fake. */
th_err th_receipt_twilio_sign(const char *auth_token, const char *url, const struct th_form *f,
                              char *out, size_t outlen);
/*
 * A message (MessageSid + MessageStatus) or a call (CallSid + CallStatus) status callback:
 * fills r (provider "twilio"). TH_E_REQUEST when neither pair is there or the SID is not a
 * plain token. An unknown status maps to "unknown" (final).
 */
th_err th_receipt_twilio_parse(const struct th_form *f, struct th_receipt *r);
/* The mapping alone: MessageStatus or CallStatus value → normalised status. */
th_receipt_status th_receipt_twilio_map(const char *status, bool call, const char *error_code);

/* ---- AWS End User Messaging events ---- */
/*
 * The event record (SNS Message or EventBridge detail): eventType, messageId, isoCountryCode,
 * isFinal, eventTimestamp, messageStatus. TH_E_JSON when malformed, TH_E_REQUEST when the
 * fields are missing.
 */
th_err th_receipt_aws_record_parse(const char *json, size_t len, struct th_receipt *r);
/* eventType ("TEXT_DELIVERED", "VOICE_BUSY", ...) → normalised status. */
th_receipt_status th_receipt_aws_map(const char *event_type);
/*
 * An EventBridge event: source must be "aws.sms-voice", detail the record. TH_E_REQUEST for
 * another source.
 */
th_err th_receipt_eventbridge_parse(const char *json, size_t len, struct th_receipt *r);
/* Constant-time comparison of a header value against the configured secret (both non-empty). */
bool th_receipt_secret_equal(const char *got, const char *want);

/* ---- SNS envelopes ---- */
typedef enum {
    TH_SNS_NOTIFICATION,
    TH_SNS_SUBSCRIPTION_CONFIRMATION,
    TH_SNS_UNSUBSCRIBE_CONFIRMATION
} th_sns_type;

/* Every string owned by the message (th_sns_release); absent optional fields are NULL. */
struct th_sns_message {
    th_sns_type type;
    char *type_name; /* "Notification", ... as sent (it is signed) */
    char *message_id, *topic_arn, *subject, *message, *timestamp, *token;
    char *signature_version, *signature, *signing_cert_url, *subscribe_url;
};
/* TH_E_JSON when malformed or too deep, TH_E_TOOBIG past TH_RECEIPT_JSON_MAX_BODY, TH_E_REQUEST
 * when a required field of its type is missing or the type is unknown. */
th_err th_sns_parse(const char *json, size_t len, struct th_sns_message *out);
void th_sns_release(struct th_sns_message *m); /* zeroed message: a no-op */
/*
 * The string SNS signs: "Name\nvalue\n" for each field of the type, in SNS's order (Message,
 * MessageId, Subject (if any), Timestamp, TopicArn, Type for a notification; Message,
 * MessageId, SubscribeURL, Timestamp, Token, TopicArn, Type for the confirmations). Returned
 * malloc'd in *out (caller frees), its length in *outlen.
 */
th_err th_sns_canonical(const struct th_sns_message *m, char **out, size_t *outlen);
/*
 * Verifies m's Signature (base64) over its canonical string with the public key of cert_pem
 * (the certificate from SigningCertURL): SignatureVersion "1" = SHA1withRSA, "2" =
 * SHA256withRSA. TH_E_AUTH on a bad signature or another version, TH_E_INVAL when the
 * certificate does not parse.
 */
th_err th_sns_verify(const struct th_sns_message *m, const char *cert_pem, size_t cert_len);
/*
 * Whether m's Timestamp (signed, ISO 8601) is recent: at most TH_SNS_MAX_AGE_MS old and at most
 * TH_SNS_MAX_AHEAD_MS ahead of now_ms. A signature never expires (the certificate is valid for
 * years), so without this anyone who once saw a signed message could replay it at will: an old
 * "delivered" after a new "failed", or a SubscriptionConfirmation re-subscribing a topic the
 * operator removed. SNS retries an HTTP delivery for an hour at most (the delivery policy's
 * ceiling), so an older message is never a legitimate one. False when it does not parse.
 */
#define TH_SNS_MAX_AGE_MS   (65LL * 60 * 1000)
#define TH_SNS_MAX_AHEAD_MS (5LL * 60 * 1000)
bool th_sns_fresh(const struct th_sns_message *m, int64_t now_ms);
/* Whether topic_arn is one of the comma-separated ARNs of allowed (exact match). */
bool th_sns_topic_allowed(const char *topic_arn, const char *allowed);
/*
 * Whether url may be fetched for SNS (SigningCertURL, SubscribeURL): https, no user info, and
 * its host matches one of the comma-separated patterns (default "sns.*.amazonaws.com"). A
 * pattern is a host name compared without case, where a "*" label matches exactly one label
 * shaped as an AWS region name (us-east-1, us-gov-west-1: never "s3" or "s3-accelerate", whose
 * hosts name S3 buckets, "sns" among them); nothing else is a wildcard. An explicit port is allowed
 * only when the pattern carries the same ":port" (the tests' loopback server).
 */
bool th_sns_url_allowed(const char *url, const char *patterns);

#endif
