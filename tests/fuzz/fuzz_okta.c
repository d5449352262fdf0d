/* libFuzzer: Okta request decoding (the first thing an authenticated body reaches). */
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include "okta/okta.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    struct th_okta_request r;
    char why[128];
    if (th_okta_decode((const char *)data, size, &r, why, sizeof why) == TH_E_OK) {
        /* what the pipeline then touches must be valid strings */
        if (!r.phone || !r.otp || strlen(r.otp) == 0 || strlen(r.otp) > TH_OKTA_OTP_MAX)
            __builtin_trap();
        struct th_buf b;
        th_buf_init(&b, 4096);
        th_okta_encode_error(&b, "x", r.locale ? r.locale : "");
        th_buf_release(&b);
        th_okta_request_release(&r);
    }
    return 0;
}
