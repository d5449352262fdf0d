/*
 * The HTTP front: one event loop per worker thread, each owning a libmicrohttpd daemon in
 * external-epoll mode on its own SO_REUSEPORT listening socket (the kernel spreads connections
 * across them). A request to the hook is authenticated from its headers before its body is read,
 * then handed to the hook pipeline; while the pipeline waits on a provider the connection is
 * suspended, and the same loop resumes it. No request ever crosses threads.
 *
 * Routes: POST /v1/okta/telephony, GET /healthz, GET /readyz (JSON), GET /metrics (Prometheus),
 * and the side routes the caller registers (struct th_side_route: Okta's event hook, delivery
 * receipts), which go through the same hygiene, refusal counters and arena as the hook's.
 */
#ifndef TH_HTTP_SERVER_H
#define TH_HTTP_SERVER_H

#include <stdbool.h>
#include <stddef.h>

#include "auth/auth.h"
#include "common/buf.h"
#include "common/err.h"
#include "config/config.h"
#include "hook/hook.h"
#include "http/tls.h"

struct th_server;
struct th_loop;

#define TH_READY_MAX 8

/*
 * Side routes: endpoints other than the telephony hook, each a row of a table the caller owns.
 * The front checks framing, header limits, the method, Content-Length against max_body, the
 * media type and (per auth) the credentials before a byte of the body is read, counting each
 * refusal in telehook_refusals_total like the hook's; then reads the body into the request's
 * arena and calls handle on the request's loop. The handler answers through th_side_answer,
 * exactly once, at once or later (the connection stays suspended meanwhile, as the hook's does).
 * Side routes are not subject to server.source_rate: their callers (Okta's event hooks, SNS)
 * retry what is refused, and would share the telephony hook's budget from the same addresses.
 */
enum th_side_method {
    TH_SIDE_GET = 1, /* HEAD too (libmicrohttpd sends no body) */
    TH_SIDE_POST = 2,
};

enum th_side_auth {
    TH_SIDE_AUTH_HOOK,  /* the telephony hook's th_auth_check (header secret, JWT) */
    TH_SIDE_AUTH_CHECK, /* the route's own check on the headers (struct th_side_route.check) */
    TH_SIDE_AUTH_NONE,  /* the handler authenticates the body itself (a signed SNS message) */
};

struct th_side_req; /* a side request awaiting its answer (the front's; opaque) */

/* One side request, as its handler sees it: everything borrowed until th_side_answer. */
struct th_side_call {
    const char *method;     /* "GET", "HEAD" or "POST" */
    const char *path_query; /* the path, then '?' and the query arguments when there are any,
                               re-encoded canonically (unreserved bytes as they are, every other
                               byte %XX, upper case): libmicrohttpd hands them out decoded */
    const char *body;       /* NUL-terminated, TH_OKTA_PADDING readable bytes after it; "" */
    size_t len;
    th_header_lookup_fn header; /* a request header's value (NULL: absent) */
    void *header_ud;
    const char *id; /* the request id (X-Request-Id of the answer), for log lines */
    struct th_loop *loop;
    struct th_side_req *req; /* for th_side_answer */
};

struct th_side_route {
    const char *path;         /* exact match, without the query */
    unsigned methods;         /* TH_SIDE_GET | TH_SIDE_POST */
    size_t max_body;          /* 0: server.max_body */
    const char *const *media; /* POST: accepted Content-Types, NULL-ended (parameters such as
                                 "; charset=utf-8" allowed); NULL: application/json only */
    enum th_side_auth auth;
    /* TH_SIDE_AUTH_CHECK: TH_E_OK, or an error with *why ("missing credentials" when there were
       none: counted as auth_missing, else auth_invalid) */
    th_err (*check)(void *ud, th_header_lookup_fn header, void *header_ud, const char **why);
    /* on the request's loop, once the whole body is read */
    void (*handle)(void *ud, const struct th_side_call *call);
    void *ud;
};

/*
 * The answer to a side request: status, a static content type string, body copied (len bytes;
 * NULL with len 0: empty). Exactly once per handle call, on the request's loop, before the loop
 * stops; after it req is gone. A client that hung up meanwhile costs nothing (the answer is
 * dropped).
 */
void th_side_answer(struct th_side_req *req, int status, const char *content_type, const char *body,
                    size_t len);

struct th_server_deps {
    const struct th_config *cfg;
    struct th_auth *auth;
    struct th_hook *hook;
    /*
     * /readyz: false while a dependency is not ready, naming each one missing in missing[]
     * (static strings, at most TH_READY_MAX; *n of them) for the answer's body. NULL: always.
     */
    bool (*ready)(void *ud, const char *missing[], size_t *n);
    void *ready_ud;
    /*
     * Called once for each event loop, on the starting thread before the loops run (no request
     * has reached any): state kept per loop is opened here, not on the loop's first request
     * (the shared guard's connections). NULL: none.
     */
    void (*loop_start)(void *ud, struct th_loop *loop);
    void *loop_start_ud;
    /* GET /metrics: appends Prometheus text (NULL: 404) */
    void (*metrics)(void *ud, struct th_buf *out);
    void *metrics_ud;
    /* HTTPS (th_tls_creds_load): owned by the server from th_server_start on, even when it fails;
     * NULL: plain HTTP. One HTTPS server per process (the credentials are process-wide). */
    struct th_tls_creds *tls;
    /* Side routes (see struct th_side_route): borrowed, outlive the server; NULL/0: none */
    const struct th_side_route *side;
    size_t nside;
};

/* Binds, starts the worker threads. Everything in deps must outlive the server. */
th_err th_server_start(const struct th_server_deps *deps, struct th_server **out, char *err,
                       size_t errlen);
/* The bound TCP port (useful with port 0). */
int th_server_port(const struct th_server *srv);
/*
 * The watchdog's probe (one thread): returns -1 when every event loop has run what the previous
 * call posted to it, else the index of the first loop that has not (stuck in a callback or
 * deadlocked); then posts a new probe to each loop that has answered.
 */
int th_server_ping(struct th_server *srv);
/* The number of event loops (worker threads). */
int th_server_threads(const struct th_server *srv);
/*
 * SIGHUP (one thread): reads server.tls_cert and tls_key again and, when they load and pass the
 * checks, serves them to every new handshake; open connections keep theirs. On any error the
 * running certificate stays. Logs what it did. TH_E_OK (doing nothing) for plain HTTP.
 */
th_err th_server_reload_tls(struct th_server *srv);
/*
 * Registers the front's metrics in m: refusals by reason (framing, source_rate, headers, method,
 * too_large, media_type, auth_missing, auth_invalid) and, over HTTPS, the certificate's expiry.
 * The server must outlive every render of m (deps->metrics is what renders it).
 */
struct th_metrics;
th_err th_server_metrics(struct th_server *srv, struct th_metrics *m);
/* Stops accepting new connections; in-flight requests go on. Thread-safe, idempotent. */
void th_server_quiesce(struct th_server *srv);
/* Stops the loops, joins the threads and frees. Call when nothing is in flight. */
void th_server_stop(struct th_server *srv);

#endif
