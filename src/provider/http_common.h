/*
 * Private to src/provider: what the HTTP providers (aws, twilio, webhook) share.
 *
 * One attempt's memory and lifetime belong to the helper here, not to each provider: a provider's
 * attempt struct starts with struct th_http_attempt; th_provider_attempt_new allocates the whole
 * block from the request's arena (the ONE place an attempt is allocated), the provider writes its
 * body and headers into it, and th_provider_http_send starts the transfer and owns the block from
 * then on. When the transfer ends, the helper reads the answer with the provider's parse, calls
 * done exactly once, then wipes the body; the block goes with the arena. A provider keeps only
 * what differs: URL, body, signing, parse.
 */
#ifndef TH_PROVIDER_HTTP_COMMON_H
#define TH_PROVIDER_HTTP_COMMON_H

#include "common/buf.h"
#include "net/http.h"
#include "provider/provider.h"

struct th_http_attempt {
    th_send_done_fn done;
    void *ud;
    th_provider_parse_fn parse;
    struct th_buf body; /* the request body, built by the provider (it holds the OTP) */
};

/*
 * A buffer for what an attempt writes (its body, a signed message) in the request's arena, hint
 * bytes reserved up front (the provider's estimate: past it the buffer grows within the arena).
 * th_buf_release() only forgets it. TH_E_NOMEM when the arena cannot give the reserve.
 */
th_err th_provider_buf(const struct th_attempt *at, struct th_buf *b, size_t hint, size_t max);

/*
 * A zeroed attempt block of size bytes (the provider's struct, whose first member is a struct
 * th_http_attempt, plus any tail it asks for) from the request's arena (it outlives the return of
 * done), and its body there too, body_hint bytes reserved (the provider's estimate of what it is
 * about to write), capped at body_max. NULL: the arena is full.
 */
void *th_provider_attempt_new(const struct th_attempt *at, size_t size, size_t body_hint,
                              size_t body_max, th_send_done_fn done, void *ud);

/* Wipes the body of an attempt never handed to th_provider_http_send. NULL is a no-op. */
void th_provider_attempt_free(struct th_http_attempt *a);

/*
 * Starts req on the attempt's loop client with the attempt's timeout (at->timeout_ms; req's own
 * is ignored). Consumes a: TH_E_OK and done is called exactly once, later, with parse's reading
 * of the answer; any error and a is freed already, done is never called.
 */
th_err th_provider_http_send(struct th_http_attempt *a, const struct th_attempt *at,
                             const struct th_http_request *req, th_provider_parse_fn parse);

/* A transfer that did not produce a response: a retryable failure described in out. */
void th_provider_transport_error(const struct th_http_response *res, struct th_send_result *out);

/* Appends s form-urlencoded (application/x-www-form-urlencoded: space as '+'). */
th_err th_form_append(struct th_buf *b, const char *name, const char *value);

#endif
