/* libFuzzer: Okta Event Hook deliveries (okta/events.h), what an authenticated POST to
 * /v1/okta/events reaches. */
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "okta/events.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static struct th_okta_event ev[TH_OKTA_EVENTS_MAX];
    size_t n = 0;
    const char *why = NULL;
    th_err e = th_okta_events_parse((const char *)data, size, ev, TH_OKTA_EVENTS_MAX, &n, &why);
    if (e != TH_E_OK && (!why || n != 0))
        __builtin_trap();
    for (size_t i = 0; e == TH_E_OK && i < n; i++) {
        /* what the writer then copies must be bounded strings, a use a phone channel */
        if (strnlen(ev[i].uuid, TH_OKTA_ID_MAX) == TH_OKTA_ID_MAX ||
            strnlen(ev[i].user_id, TH_OKTA_ID_MAX) == TH_OKTA_ID_MAX)
            __builtin_trap();
        if (ev[i].use == TH_OKTA_EV_USE &&
            (!ev[i].channel || !ev[i].uuid[0] || !ev[i].user_id[0] || ev[i].published_ms < 0))
            __builtin_trap();
    }
    /* the time parser alone, on a NUL-terminated copy */
    char *s = malloc(size + 1);
    if (s) {
        memcpy(s, data, size);
        s[size] = '\0';
        (void)th_okta_time_ms(s);
        free(s);
    }
    return 0;
}
