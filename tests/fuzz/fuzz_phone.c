/* libFuzzer: phone number normalisation and masking (raw Okta input). */
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include "phone/phone.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    struct th_phone p;
    if (th_phone_parse((const char *)data, size, "US", &p) == TH_E_OK) {
        if (p.e164[0] != '+' || strlen(p.e164) > 16)
            __builtin_trap();
        char m[24];
        th_phone_mask(p.e164, m, sizeof m);
        if (strstr(m, p.e164 + 1) && strlen(p.e164) > 6) /* a mask never shows the number */
            __builtin_trap();
        /* the reading not taken: only without '+', another valid E.164 number */
        if (p.intl_e164[0] && (data[0] == '+' || p.intl_e164[0] != '+' ||
                               strlen(p.intl_e164) > 16 || strcmp(p.intl_e164, p.e164) == 0))
            __builtin_trap();
    }
    return 0;
}
