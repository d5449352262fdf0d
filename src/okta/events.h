/*
 * Okta Event Hook deliveries (docs/conversion.md): the POST body Okta sends, {"data":
 * {"events": [System Log event, ...]}}, parsed strictly and bounded into the few fields
 * conversion tracking needs. Pure: no I/O, no allocation kept after the call.
 *
 * Events of interest: user.authentication.auth_via_mfa (a sign-in passed a factor) and
 * user.mfa.factor.activate (a factor enrolled), with outcome.result SUCCESS and a phone factor:
 * debugContext.debugData.factor (or factorType) "sms"/"SMS_FACTOR" or "call"/"CALL_FACTOR"
 * (Okta's System Log names both ways), else a target's detailEntry.methodTypeUsed ("SMS",
 * "Voice Call"). Anything else is kept as TH_OKTA_EV_IGNORED so the caller counts it.
 */
#ifndef TH_OKTA_EVENTS_H
#define TH_OKTA_EVENTS_H

#include <stddef.h>
#include <stdint.h>

#include "common/err.h"

/* At most this many events in one delivery: more is refused whole (a body Okta never sends). */
#define TH_OKTA_EVENTS_MAX 256
#define TH_OKTA_ID_MAX     64 /* uuid and user id, NUL included */

enum th_okta_event_type {
    TH_OKTA_EV_MFA,    /* user.authentication.auth_via_mfa */
    TH_OKTA_EV_ENROLL, /* user.mfa.factor.activate */
    TH_OKTA_EV_OTHER,  /* any other event type (counted, ignored) */
};

enum th_okta_event_use {
    TH_OKTA_EV_USE,     /* a successful phone factor event: to match */
    TH_OKTA_EV_IGNORED, /* well formed, but not a phone factor's success */
    TH_OKTA_EV_INVALID, /* a field missing or of the wrong shape */
};

struct th_okta_event {
    enum th_okta_event_type type;
    enum th_okta_event_use use;
    char uuid[TH_OKTA_ID_MAX];
    char user_id[TH_OKTA_ID_MAX];
    const char *channel; /* "sms" | "voice" (static) when use is TH_OKTA_EV_USE */
    int64_t published_ms;
};

/*
 * Parses body (len bytes, need not be NUL-terminated). TH_E_OK with *n events in out (at most
 * max, itself at most TH_OKTA_EVENTS_MAX); TH_E_INVAL when the body is not such a delivery (not
 * JSON, no data.events array) or holds more than max events, with why (a static string).
 */
th_err th_okta_events_parse(const char *body, size_t len, struct th_okta_event *out, size_t max,
                            size_t *n, const char **why);

/* "2024-05-02T18:33:10.123Z" (RFC 3339, UTC or an offset): unix ms; -1 when malformed. */
int64_t th_okta_time_ms(const char *s);

#endif
