/*
 * The HTTP front: one event loop per worker thread, each owning a libmicrohttpd daemon in
 * external-epoll mode on its own SO_REUSEPORT listening socket (the kernel spreads connections
 * across them). A request to the hook is authenticated from its headers before its body is read,
 * then handed to the hook pipeline; while the pipeline waits on a provider the connection is
 * suspended, and the same loop resumes it. No request ever crosses threads.
 *
 * Routes: POST /v1/okta/telephony, GET /healthz, GET /readyz (JSON), GET /metrics (Prometheus).
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
