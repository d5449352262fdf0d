#include "provider/http_common.h"

#include <stdlib.h>

#include <openssl/crypto.h>

th_err th_provider_buf(const struct th_attempt *at, struct th_buf *b, size_t hint, size_t max)
{
    /* written straight into arena memory sized for it: no heap, no regrowth */
    if (at->arena)
        return th_arena_buf_reserve(at->arena, b, hint, max);
    th_buf_init(b, max);
    return TH_E_OK;
}

void *th_provider_attempt_new(const struct th_attempt *at, size_t size, size_t body_hint,
                              size_t body_max, th_send_done_fn done, void *ud)
{
    struct th_http_attempt *a = at->arena ? th_arena_calloc(at->arena, size) : calloc(1, size);
    if (!a)
        return NULL;
    a->pooled = at->arena != NULL;
    a->done = done;
    a->ud = ud;
    a->size = size;
    if (th_provider_buf(at, &a->body, body_hint, body_max) != TH_E_OK)
        return NULL; /* the block is the arena's (a heap block has no body yet): wiped with it */
    return a;
}

void th_provider_attempt_free(struct th_http_attempt *a)
{
    if (!a)
        return;
    if (a->body.data)
        OPENSSL_cleanse(a->body.data, a->body.len);
    th_buf_release(&a->body);
    if (a->pooled) /* the arena's release wipes the block */
        return;
    OPENSSL_cleanse(a, a->size);
    free(a);
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
