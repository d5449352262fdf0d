/* Vocabulary every layer speaks: the channel a code goes by, log levels. */
#ifndef TH_COMMON_TYPES_H
#define TH_COMMON_TYPES_H

#include "common/err.h"

typedef enum { TH_CHANNEL_SMS = 0, TH_CHANNEL_VOICE = 1 } th_channel;

/* "sms" / "voice" */
const char *th_channel_name(th_channel ch);
/* Parses "sms"/"voice" (case-insensitive); TH_E_INVAL otherwise. */
th_err th_channel_parse(const char *s, th_channel *out);

/* Log levels (config's log.level; obs/log.h writes them). */
typedef enum { TH_LOG_DEBUG, TH_LOG_INFO, TH_LOG_WARN, TH_LOG_ERROR } th_log_level;

#endif
