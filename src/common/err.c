#include "common/err.h"

static const char *const messages[] = {
#define TH_ERR_MSG(name, text) text,
    TH_ERRORS(TH_ERR_MSG)
#undef TH_ERR_MSG
};

static const char *const names[] = {
#define TH_ERR_NAME(name, text) #name,
    TH_ERRORS(TH_ERR_NAME)
#undef TH_ERR_NAME
};

const char *th_strerror(th_err e)
{
    if ((unsigned)e >= TH_E__COUNT)
        return "unknown error";
    return messages[e];
}

const char *th_errname(th_err e)
{
    if ((unsigned)e >= TH_E__COUNT)
        return "UNKNOWN";
    return names[e];
}
