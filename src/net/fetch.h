/*
 * A blocking HTTP request, for the background threads that may wait (the AWS credentials
 * refresher, the issuer-key fetcher) — never for an event loop, which uses net/http.h.
 * The body is capped by the buffer's maximum; no redirects; http and https only. TLS is verified
 * against the process default trust or the request's ca_file; the proxy environment variables
 * apply unless the request is direct (net/trust.h).
 */
#ifndef TH_NET_FETCH_H
#define TH_NET_FETCH_H

#include <stdbool.h>
#include <stddef.h>

#include "common/buf.h"

struct th_fetch {
    const char *method; /* "GET", "PUT" (with an empty body) or "POST" (with body) */
    const char *body;   /* POST only: the request body (body_len bytes), borrowed (not copied) */
    size_t body_len;
    const char *url;
    const char *const *headers; /* "Name: value" lines */
    size_t nheaders;
    long timeout_ms;
    const char *capture; /* a response header to keep ("cache-control"), or NULL */
    char captured[256];  /* its value, "" when absent */
    const char *ca_file; /* a CA bundle replacing the process default (net/trust.h), or NULL */
    bool direct;         /* never through a proxy (the host's own metadata endpoints) */
};

/*
 * Performs the request; the body goes to body (reset first). Returns the HTTP status, or -1
 * when no response arrived, with the reason in why. A status other than 200 is also described
 * in why.
 */
long th_fetch(struct th_fetch *f, struct th_buf *body, char *why, size_t whylen);

#endif
