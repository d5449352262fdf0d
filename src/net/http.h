/*
 * The outbound HTTP client: one libcurl multi handle per event loop, driven by curl's socket API
 * inside that loop (curl's sockets are watched by the loop's epoll set, curl's timeout is one of
 * the loop's timers). A transfer started on a loop completes on the same loop, so a provider
 * attempt and the Okta request waiting on it never cross threads.
 *
 * Connections to providers are kept alive and reused by the multi handle (HTTP/2 is negotiated
 * over TLS where the provider offers it). Easy handles are recycled, so a transfer costs no
 * handle set-up. The number of transfers in flight per loop is bounded. TLS is always verified,
 * against the trust of net/trust.h; the proxy environment variables apply.
 *
 * Not thread-safe: every call happens on the owning loop's thread.
 */
#ifndef TH_NET_HTTP_H
#define TH_NET_HTTP_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "common/err.h"
#include "loop/loop.h"

struct th_http;

/* How a transfer ended. */
typedef enum {
    TH_HTTP_DONE,    /* a complete response arrived (any status) */
    TH_HTTP_TIMEOUT, /* the transfer's time ran out */
    TH_HTTP_CONNECT, /* no connection: DNS, refused, TLS handshake */
    TH_HTTP_IO,      /* the connection broke mid-way, or the response was malformed */
    TH_HTTP_TOOBIG,  /* the response body exceeded the cap */
    TH_HTTP_ABORTED  /* the loop is shutting down */
} th_http_outcome;

const char *th_http_outcome_name(th_http_outcome o);

#define TH_HTTP_MAX_HEADERS 15
#define TH_HTTP_MAX_CAPTURE 2  /* response headers a request may ask to keep */
#define TH_HTTP_CAPTURE_LEN 96 /* a kept value's room, NUL included: longer ones are cut */
/* Each transfer's receive buffer (curl's least; its default is 16 KiB): it is held by every handle,
 * so it is paid per request in flight; an answer longer than it arrives in more reads, whole. */
#define TH_HTTP_RECV_BUFFER 1024

/* A response header the request asked for (struct th_http_request capture). */
struct th_http_header {
    const char *name;  /* the request's capture name */
    const char *value; /* "" when the response did not carry it */
};

struct th_http_request {
    const char *method;         /* "POST", "GET", "PUT" */
    const char *url;            /* borrowed until done, like every pointer here */
    const char *const *headers; /* "Name: value" lines, at most TH_HTTP_MAX_HEADERS; the
                                   strings (not the array) must live until done */
    size_t nheaders;
    const char *body; /* borrowed: must stay valid until done is called; NULL with len 0 */
    size_t body_len;
    const char *userpwd; /* "user:password" for Basic auth, or NULL */
    int64_t timeout_ms;  /* whole transfer, connection included */
    size_t max_response; /* response body cap; 0 = 64 KiB */
    const char *ca_file; /* CA bundle replacing the process default for this transfer
                            (net/trust.h), or NULL; must live as long as the client */
    /* Response headers to keep (names, case-insensitive, at most TH_HTTP_MAX_CAPTURE; the names
     * borrowed until done), handed back in the response's headers in the same order, values cut
     * to TH_HTTP_CAPTURE_LEN - 1: a provider's error type may travel in a header (AWS:
     * X-Amzn-Errortype). The transport knows no provider's header names. */
    const char *const *capture;
    size_t ncapture;
};

struct th_http_response {
    th_http_outcome outcome;
    long status;      /* HTTP status when outcome is TH_HTTP_DONE */
    const char *body; /* NUL-terminated, valid during the callback only */
    size_t len;
    const struct th_http_header *headers; /* the request's capture list, values filled in */
    size_t nheaders;
    const char *error; /* curl's description for a failed transfer, "" otherwise */
    int64_t elapsed_us;
};

/* The value of the captured header name in res ("" when absent or not asked for). */
const char *th_http_response_header(const struct th_http_response *res, const char *name);

typedef void (*th_http_done_fn)(void *ud, const struct th_http_response *res);

/* max_in_flight: transfers allowed at once on this loop. */
th_err th_http_new(struct th_loop *loop, int max_in_flight, struct th_http **out);
/* Ends every transfer still running (their callbacks get TH_HTTP_ABORTED), then frees. */
void th_http_free(struct th_http *h);

/*
 * Starts a transfer; done is called exactly once, later, on this loop (never from inside
 * th_http_start). TH_E_OVERLOAD when max_in_flight transfers are running; TH_E_NOMEM, TH_E_INVAL.
 */
th_err th_http_start(struct th_http *h, const struct th_http_request *req, th_http_done_fn done,
                     void *ud);

int th_http_in_flight(const struct th_http *h);

/* Once per process, before any thread starts (curl_global_init). */
th_err th_http_global_init(void);
void th_http_global_cleanup(void);

#endif
