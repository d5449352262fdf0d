/*
 * libFuzzer: answers from STS (trust-boundary XML: the network, or whatever answers at the
 * endpoint) and credential_process output (JSON). The first byte picks the reader; whatever it
 * accepts must hold header-safe, NUL-terminated values within their fields.
 */
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include "aws/process.h"
#include "aws/sts.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static void check_header_safe(const char *s, size_t cap)
{
    size_t n = strnlen(s, cap);
    if (n == cap)
        __builtin_trap(); /* not terminated within its field */
    for (size_t i = 0; i < n; i++)
        if ((unsigned char)s[i] <= 0x20 || (unsigned char)s[i] >= 0x7f)
            __builtin_trap();
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 1)
        return 0;
    const char *in = (const char *)data + 1;
    size_t n = size - 1;
    char why[256], code[64], msg[128], text[64];
    struct th_aws_credentials c;
    switch (data[0] % 4) {
    case 0:
        if (th_sts_parse_credentials(in, n, &c, why, sizeof why) == TH_E_OK) {
            check_header_safe(c.access_key_id, sizeof c.access_key_id);
            check_header_safe(c.secret_access_key, sizeof c.secret_access_key);
            check_header_safe(c.session_token, sizeof c.session_token);
            if (!c.access_key_id[0] || !c.session_token[0] || c.expires_ms <= 0)
                __builtin_trap();
        }
        break;
    case 1:
        if (th_sts_parse_error(in, n, code, sizeof code, msg, sizeof msg) &&
            (strnlen(code, sizeof code) == sizeof code || strnlen(msg, sizeof msg) == sizeof msg))
            __builtin_trap();
        break;
    case 2:
        if (th_sts_xml_text(in, n, data[0] & 4 ? "SessionToken" : "Code", text, sizeof text) ==
                TH_E_OK &&
            strnlen(text, sizeof text) == sizeof text)
            __builtin_trap();
        break;
    default:
        if (th_aws_process_parse(in, n, &c, why, sizeof why) == TH_E_OK) {
            check_header_safe(c.access_key_id, sizeof c.access_key_id);
            check_header_safe(c.secret_access_key, sizeof c.secret_access_key);
            check_header_safe(c.session_token, sizeof c.session_token);
        }
        break;
    }
    return 0;
}
