#include "common/types.h"

#include <strings.h>

const char *th_channel_name(th_channel ch)
{
    return ch == TH_CHANNEL_VOICE ? "voice" : "sms";
}

th_err th_channel_parse(const char *s, th_channel *out)
{
    if (strcasecmp(s, "sms") == 0)
        *out = TH_CHANNEL_SMS;
    else if (strcasecmp(s, "voice") == 0)
        *out = TH_CHANNEL_VOICE;
    else
        return TH_E_INVAL;
    return TH_E_OK;
}
