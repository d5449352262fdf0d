/* libFuzzer: template compiling and rendering (bodies come from admins and imports). */
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "message/message.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 1 || size > 8192)
        return 0;
    char *body = malloc(size);
    memcpy(body, data + 1, size - 1);
    body[size - 1] = '\0';
    struct th_template_spec spec = {"en", (th_channel)(data[0] & 1), body, "Joanna"};
    struct th_templates *set = NULL;
    char err[256];
    if (th_templates_build(&spec, 1, &set, err, sizeof err) == TH_E_OK) {
        struct th_buf out;
        th_buf_init(&out, 1 << 16);
        struct th_render_vars v = {"123456", "<Ann>",
                                   "O'Neil", "a&b@example.com",
                                   5,        (th_sms_encoding)((data[0] >> 1) % 3)};
        if (th_message_render(th_templates_find(set, "en", spec.channel), &v, &out) != TH_E_OK)
            __builtin_trap(); /* 8 KiB of template cannot outgrow 64 KiB */
        th_buf_release(&out);
        th_templates_free(set);
    }
    free(body);
    return 0;
}
