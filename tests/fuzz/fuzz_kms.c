/*
 * libFuzzer: answers from KMS (trust-boundary JSON: the network, or whatever answers at the
 * endpoint). The first byte picks the reader: GenerateDataKey / Decrypt answers, error answers,
 * or the strict base64 decoder alone. Whatever is accepted must be exactly what the contract
 * says: a 32-byte key, a blob of canonical base64 within its cap, printable error fields.
 */
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include "aws/kms.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static void check_printable(const char *s, size_t cap)
{
    size_t n = strnlen(s, cap);
    if (n == cap)
        __builtin_trap();
    for (size_t i = 0; i < n; i++)
        if ((unsigned char)s[i] < 0x20 || (unsigned char)s[i] >= 0x7f)
            __builtin_trap();
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 1)
        return 0;
    const char *in = (const char *)data + 1;
    size_t n = size - 1;
    unsigned char key[TH_KMS_KEY_LEN], out[64];
    char blob[TH_KMS_MAX_BLOB + 1], why[160], type[64], msg[128];
    switch (data[0] % 3) {
    case 0:
        if (th_kms_parse_answer(in, n, key, blob, sizeof blob, why, sizeof why) == TH_E_OK) {
            size_t bl = strnlen(blob, sizeof blob);
            if (bl == sizeof blob || bl > TH_KMS_MAX_BLOB ||
                th_kms_b64_decode(blob, bl, NULL, 0) < 0)
                __builtin_trap();
        } else {
            check_printable(why, sizeof why);
        }
        break;
    case 1:
        if (th_kms_parse_error(in, n, type, sizeof type, msg, sizeof msg)) {
            check_printable(type, sizeof type);
            check_printable(msg, sizeof msg);
        }
        break;
    default: {
        long got = th_kms_b64_decode(in, n, out, sizeof out);
        if (got > (long)sizeof out ||
            (got >= 0 &&
             (size_t)got != n / 4 * 3 - (n && in[n - 1] == '=') - (n > 1 && in[n - 2] == '=')))
            __builtin_trap();
        break;
    }
    }
    return 0;
}
