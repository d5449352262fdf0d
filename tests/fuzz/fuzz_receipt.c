/*
 * libFuzzer: delivery receipts from the network (receipt/receipt.h). The first byte picks the
 * reader: Twilio's form body (then its callback fields and the signature check), an SNS
 * envelope (then its canonical string), an End User Messaging record, an EventBridge event.
 * Whatever is accepted must hold plain, NUL-terminated tokens within their fields.
 */
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "receipt/receipt.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static void check_field(const char *s, size_t cap)
{
    size_t n = strnlen(s, cap);
    if (n == cap)
        __builtin_trap(); /* not terminated within its field */
    for (size_t i = 0; i < n; i++)
        if ((unsigned char)s[i] <= 0x20 || (unsigned char)s[i] >= 0x7f)
            __builtin_trap(); /* a log line or a metric label could be forged with it */
}

static void check_receipt(const struct th_receipt *r)
{
    check_field(r->transaction_id, sizeof r->transaction_id);
    check_field(r->error, sizeof r->error);
    check_field(r->status, sizeof r->status);
    check_field(r->country, sizeof r->country);
    if (!r->transaction_id[0] || !r->status[0])
        __builtin_trap();
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 1)
        return 0;
    const char *in = (const char *)data + 1;
    size_t n = size - 1;
    struct th_receipt r;
    switch (data[0] % 4) {
    case 0: {
        struct th_form f;
        if (th_form_parse(in, n, &f) != TH_E_OK)
            return 0;
        if (f.n > TH_RECEIPT_FORM_MAX_PARAMS)
            __builtin_trap();
        if (th_receipt_twilio_parse(&f, &r) == TH_E_OK)
            check_receipt(&r);
        (void)th_receipt_twilio_verify("token", "https://h.example/v1/twilio/status", &f,
                                       th_form_get(&f, "sig"));
        th_form_release(&f);
        break;
    }
    case 1: {
        struct th_sns_message m;
        if (th_sns_parse(in, n, &m) != TH_E_OK)
            return 0;
        char *c;
        size_t len;
        if (th_sns_canonical(&m, &c, &len) == TH_E_OK) {
            if (strlen(c) != len) /* jansson refuses an escaped NUL: none inside */
                __builtin_trap();
            free(c);
        }
        (void)th_sns_url_allowed(m.signing_cert_url, "sns.*.amazonaws.com");
        th_sns_release(&m);
        break;
    }
    case 2:
        if (th_receipt_aws_record_parse(in, n, &r) == TH_E_OK)
            check_receipt(&r);
        break;
    default:
        if (th_receipt_eventbridge_parse(in, n, &r) == TH_E_OK)
            check_receipt(&r);
        break;
    }
    return 0;
}
