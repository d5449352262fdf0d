/*
 * libFuzzer: provider answers, through the parse of every registered provider (AWS End User
 * Messaging, Twilio, webhook, and any added since). The first byte picks the provider (bits 4-6,
 * modulo their number) and the status, the next line is the X-Amzn-Errortype header, the rest the
 * body — whatever a provider, a proxy in between, or an impostor may send.
 */
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "provider/provider.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static const long statuses[] = {200, 201, 202, 400, 401, 403, 404, 409, 429, 500, 502, 503};

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 1)
        return 0;
    uint8_t sel = data[0];
    const char *rest = (const char *)data + 1;
    size_t n = size - 1;
    char errtype[96] = "";
    const char *nl = memchr(rest, '\n', n);
    if (nl) {
        size_t hl =
            (size_t)(nl - rest) < sizeof errtype - 1 ? (size_t)(nl - rest) : sizeof errtype - 1;
        memcpy(errtype, rest, hl);
        errtype[hl] = '\0';
        errtype[strcspn(errtype, "\0")] = '\0';
        n -= (size_t)(nl - rest) + 1;
        rest = nl + 1;
    }
    /* the HTTP client hands providers a NUL-terminated copy */
    char *body = malloc(n + 1);
    if (!body)
        return 0;
    memcpy(body, rest, n);
    body[n] = '\0';
    const struct th_http_header headers[] = {{"X-Amzn-Errortype", errtype}};
    struct th_http_response res = {
        .outcome = (sel & 0x80) ? TH_HTTP_TIMEOUT : TH_HTTP_DONE,
        .status = statuses[(sel & 0x0f) % (sizeof statuses / sizeof statuses[0])],
        .body = body,
        .len = n,
        .headers = headers,
        .nheaders = 1,
        .error = "",
    };
    struct th_send_result out;
    /* every registered provider that reads HTTP answers, a new one included */
    th_provider_parse_fn parse[8];
    size_t np = 0;
    const struct th_provider_kind *k;
    for (size_t i = 0; np < 8 && (k = th_provider_kind_at(i)); i++)
        if (k->parse)
            parse[np++] = k->parse;
    parse[((sel >> 4) & 7) % np](&res, &out);
    /* what the router and the records then read must be terminated strings */
    if (strnlen(out.error, sizeof out.error) == sizeof out.error ||
        strnlen(out.transaction_id, sizeof out.transaction_id) == sizeof out.transaction_id)
        __builtin_trap();
    if (out.err == TH_E_OK && !out.transaction_id[0])
        __builtin_trap(); /* success always carries an id */
    free(body);
    return 0;
}
