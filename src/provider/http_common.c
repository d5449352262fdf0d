#include "provider/http_common.h"

#include <openssl/crypto.h>

th_err th_provider_buf(const struct th_attempt *at, struct th_buf *b, size_t hint, size_t max)
{
    /* written straight into arena memory sized for it: no heap, no regrowth */
    return th_arena_buf_reserve(at->arena, b, hint, max);
}

void *th_provider_attempt_new(const struct th_attempt *at, size_t size, size_t body_hint,
                              size_t body_max, th_send_done_fn done, void *ud)
{
    struct th_http_attempt *a = th_arena_calloc(at->arena, size);
    if (!a || th_provider_buf(at, &a->body, body_hint, body_max) != TH_E_OK)
        return NULL; /* what was taken is the arena's: wiped with it */
    a->done = done;
    a->ud = ud;
    return a;
}

void th_provider_attempt_free(struct th_http_attempt *a)
{
    /* the block is the arena's, wiped with the request; the body (the code) is wiped now */
    if (a && a->body.data)
        OPENSSL_cleanse(a->body.data, a->body.len);
}

static void on_response(void *ud, const struct th_http_response *res)
{
    struct th_http_attempt *a = ud;
    struct th_send_result out;
    a->parse(res, &out);
    a->done(a->ud, &out);
    th_provider_attempt_free(a);
}

th_err th_provider_http_send(struct th_http_attempt *a, const struct th_attempt *at,
                             const struct th_http_request *req, th_provider_parse_fn parse)
{
    struct th_http_request r = *req;
    r.timeout_ms = at->timeout_ms;
    a->parse = parse;
    th_err e = th_http_start(at->http, &r, on_response, a);
    if (e != TH_E_OK)
        th_provider_attempt_free(a);
    return e;
}
