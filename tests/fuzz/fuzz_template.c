/*
 * libFuzzer: template compiling, rendering and checks, SMS measuring and rewriting, SSML checks and
 * AWS item files (bodies come from admins and imports).
 */
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
        const struct th_template *t = th_templates_find(set, "en", spec.channel);
        if (th_message_render(t, &v, &out) != TH_E_OK)
            __builtin_trap(); /* 8 KiB of template cannot outgrow 64 KiB */
        struct th_template_report rep;
        th_template_check(t, v.sms_encoding, 1, &rep, err, sizeof err);
        th_buf_reset(&out);
        char why[160];
        if (th_template_aws_body(t, &out, why, sizeof why) != TH_E_OK && out.len)
            __builtin_trap(); /* a refused body leaves nothing behind */
        th_buf_release(&out);
        th_templates_free(set);
    }
    /* the same bytes as SMS text, SSML, and an AWS import file */
    struct th_sms_info info;
    th_sms_measure(body, size - 1, &info);
    struct th_buf prep;
    th_buf_init(&prep, 1 << 16);
    bool rewritten;
    if (th_sms_prepare((th_sms_encoding)(data[0] % 3), body, size - 1, &prep, &rewritten) !=
        TH_E_OK)
        __builtin_trap();
    th_buf_release(&prep);
    char why[160];
    th_ssml_check(body, size - 1, why, sizeof why);
    struct th_aws_items items;
    if (th_aws_items_parse(body, size - 1, &items, why, sizeof why) == TH_E_OK)
        th_aws_items_release(&items);
    free(body);
    return 0;
}
