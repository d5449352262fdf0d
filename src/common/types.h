/* Vocabulary every layer speaks: the channel a code goes by, log levels. */
#ifndef TH_COMMON_TYPES_H
#define TH_COMMON_TYPES_H

#include <stdint.h>

#include "common/err.h"

typedef enum { TH_CHANNEL_SMS = 0, TH_CHANNEL_VOICE = 1 } th_channel;

/* "sms" / "voice" */
const char *th_channel_name(th_channel ch);
/* Parses "sms"/"voice" (case-insensitive); TH_E_INVAL otherwise. */
th_err th_channel_parse(const char *s, th_channel *out);

/*
 * One message to a handset, as the hook sends it, the router and providers carry it, and the
 * dead-letter queue keeps it for a replay (dlq/dlq.h): built once by whoever has the request.
 * Pointers are borrowed (the owner says for how long).
 */
struct th_send {
    const char *request_id;
    const char *to;     /* E.164 */
    const char *region; /* "US", "" when non-geographic */
    th_channel channel;
    const char *language;   /* "" when none */
    const char *body;       /* SMS text, or SSML for voice: holds the OTP */
    const char *voice_id;   /* "" when none */
    int64_t otp_expires_ms; /* unix ms, 0 when unknown */
    int64_t deadline_us;    /* monotonic: answer by then (not kept by the dead-letter queue) */
};

/* Log levels (config's log.level; obs/log.h writes them). */
typedef enum { TH_LOG_DEBUG, TH_LOG_INFO, TH_LOG_WARN, TH_LOG_ERROR } th_log_level;

#endif
