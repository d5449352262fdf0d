#include "http/server.h"

#include <errno.h>
#include <math.h>
#include <stdalign.h>
#include <stddef.h>
#include <netdb.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>
#include <unistd.h>

#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/epoll.h>
#include <sys/socket.h>

#include <microhttpd.h>

#include "common/buf.h"
#include "common/retired.h"
#include "common/util.h"
#include "common/rate.h"
#include "http/internal.h"
#include "http/tls.h"
#include "loop/loop.h"
#include "okta/okta.h"
#include "obs/log.h"
#include "obs/metrics.h"

#define HOOK_PATH   "/v1/okta/telephony"
#define MAX_WORKERS 64

/* Per-source request rate (GCRA), per worker: a source's connections spread over the workers,
 * so each enforces its share of the configured rate. Bounded: the oldest state is overwritten. */
#define SRC_SLOTS 1024
struct src_slot {
    unsigned char addr[16];
    int64_t tat_us;
};

struct worker {
    struct th_server *srv;
    struct src_slot *src; /* NULL when source_rate is off */
    int index;
    struct th_loop *loop;
    pthread_t thread;
    bool started;
    int listen_fd; /* ours until libmicrohttpd takes it (then -1) */
    struct MHD_Daemon *daemon;
    struct th_timer mhd_timer; /* when libmicrohttpd next needs to run */
    bool freed;                /* a connection was freed during this MHD_run (see mhd_run) */
};

/* Refusals at the front, by reason (telehook_refusals_total{reason}): a fixed list. */
#define REFUSALS(X)                                                                                \
    X(FRAMING, "framing")                                                                          \
    X(SOURCE_RATE, "source_rate")                                                                  \
    X(HEADERS, "headers")                                                                          \
    X(METHOD, "method")                                                                            \
    X(TOO_LARGE, "too_large")                                                                      \
    X(MEDIA_TYPE, "media_type")                                                                    \
    X(AUTH_MISSING, "auth_missing")                                                                \
    X(AUTH_INVALID, "auth_invalid")
enum refusal {
#define REFUSAL_ENUM(name, text) REFUSED_##name,
    REFUSALS(REFUSAL_ENUM)
#undef REFUSAL_ENUM
        REFUSED__COUNT
};

struct th_server {
    struct th_counter refused[REFUSED__COUNT];
    const struct th_config *cfg;
    struct th_auth *auth;
    struct th_hook *hook;
    bool (*ready)(void *ud, const char *missing[], size_t *n);
    void *ready_ud;
    void (*metrics)(void *ud, struct th_buf *out);
    void *metrics_ud;
    const struct th_side_route *side; /* the caller's table (struct th_side_route) */
    size_t nside;
    struct th_rate src_rate; /* per-worker share of server.source_rate */
    int port;
    int nworkers;
    /* libmicrohttpd 0.9 (run time): the layout of its header section is checked too (framing) */
    bool mhd_inplace;
    atomic_bool draining;
    /* HTTPS: the credentials are th_tls_install's; those a reload replaced are kept here until
     * stop, as a handshake on a loop may still hold them (a few KiB per reload) */
    bool tls;
    struct th_retired retired; /* TLS credentials replaced by reloads: a handshake may hold one */
    struct worker workers[MAX_WORKERS];
};

enum route { ROUTE_HOOK, ROUTE_HEALTH, ROUTE_READY, ROUTE_METRICS, ROUTE_SIDE, ROUTE_NOT_FOUND };

/*
 * The arena's first chunk, inside the request's one allocation: a normal Okta request (its body,
 * decoded fields, text, answer, the router's job and the provider's attempt) fits, so it costs no
 * other malloc. Past it the arena mallocs chunks, up to its cap (ARENA_CAP). Sized from what
 * requests use (bench/run's international mix, SMS and voice, AWS, 137,369 requests: 5,136,
 * 5,168, 5,408 and 5,456 bytes at the 1st, 50th, 99th percentile and the most, 2026-12-05,
 * the rendered text fitted to its bytes) with ~700 bytes to spare: every KiB here is a MiB per
 * 1,000 requests in flight.
 */
#define REQ_CHUNK           (6 * 1024)
#define ARENA_CAP(max_body) (3 * (size_t)(max_body) + 64 * 1024)

/*
 * One HTTP request (libmicrohttpd's con_cls) and, on the hook's path, the Okta request itself:
 * ctx first, so the hook's struct th_hook_req is this allocation. Counted (hook.h): the front
 * holds it until on_completed, the hook while anything is owed to it, and the hook's answer while
 * libmicrohttpd sends it (it lies in the arena); the last to let go frees it (req_free).
 */
struct req {
    struct th_hook_req ctx; /* the state (th_req_state), the arena, the one deadline, the id */
    struct worker *w;
    struct MHD_Connection *conn; /* NULL once libmicrohttpd is done with the request */
    enum route route;
    bool in_handler; /* th_hook_handle is on the stack: the answer is queued when it returns */
    bool close;      /* the answer closes the connection (refused framing) */
    struct th_keys_waiter auth_waiter; /* woken when the refresh completes */
    struct th_timer auth_timer;        /* ...or after a second */
    char *body; /* in the arena: body_len bytes read, body_cap reserved (padding included) */
    size_t body_len, body_cap;
    size_t body_max;    /* 0 until authenticated: no body byte is kept before */
    int status;         /* the hook's answer: 0 until it is given */
    const char *answer; /* in the arena; NULL: out of memory (answered 500) */
    size_t answer_len;
    const struct th_side_route *side; /* ROUTE_SIDE: its row */
    const char *answer_type;          /* a side route's Content-Type (static); NULL: JSON */
    alignas(max_align_t) unsigned char chunk[REQ_CHUNK];
};

/* ---- libmicrohttpd on the loop ---- */

static void mhd_run(void *ud);

/* Re-arms the loop timer for libmicrohttpd's next deadline (idle timeouts, resumed requests). */
static void mhd_rearm(struct worker *w)
{
    MHD_UNSIGNED_LONG_LONG ms;
    if (MHD_get_timeout(w->daemon, &ms) == MHD_YES)
        th_loop_timer_set(w->loop, &w->mhd_timer, th_loop_now_us(w->loop) + (int64_t)ms * 1000,
                          mhd_run, w);
    else
        th_loop_timer_cancel(w->loop, &w->mhd_timer);
}

/*
 * libmicrohttpd (0.9.x, epoll driven from outside) takes the listening socket out of its epoll set
 * at the start of a run that begins at MHD_OPTION_CONNECTION_LIMIT (or after accept() ran out of
 * file descriptors), and puts it back only at the start of a later run that finds room. Closing
 * connections makes that room, but in the middle of a run; when the run closed the last ones,
 * nothing is left to run libmicrohttpd again: no connection has a timeout (MHD_get_timeout says
 * so) and the listening socket, out of the set, cannot wake the loop. The loop would never accept
 * again. So a run that freed a connection is followed at once by another, which re-arms accept()
 * and takes what waits in the kernel's queue. Cheap: only runs that closed something, at most one
 * extra MHD_run (an epoll_wait that does not block) per loop pass, next to a close(); and robust:
 * it does not depend on which limit was hit (MHD_OPTION_NOTIFY_CONNECTION reports every close).
 */
static void on_connection(void *cls, struct MHD_Connection *conn, void **socket_context,
                          enum MHD_ConnectionNotificationCode toe)
{
    struct worker *w = cls;
    (void)socket_context;
    if (toe == MHD_CONNECTION_NOTIFY_CLOSED)
        w->freed = true;
    if (toe == MHD_CONNECTION_NOTIFY_STARTED && w->srv->tls) { /* before the TLS handshake */
        const union MHD_ConnectionInfo *ci =
            MHD_get_connection_info(conn, MHD_CONNECTION_INFO_GNUTLS_SESSION);
        if (ci && ci->tls_session)
            th_tls_session_init(ci->tls_session);
    }
}

static void mhd_run(void *ud)
{
    struct worker *w = ud;
    /* A request's log line leaves before its answer can (obs/log.h batches a loop's lines):
     * answers made outside libmicrohttpd go out in this MHD_run, so their lines go first. */
    th_log_flush();
    w->freed = false;
    MHD_run(w->daemon);
    if (w->freed) /* run again at once (see on_connection) */
        th_loop_timer_set(w->loop, &w->mhd_timer, th_loop_now_us(w->loop), mhd_run, w);
    else
        mhd_rearm(w);
}

static void on_mhd_io(void *ud, uint32_t events)
{
    (void)events;
    mhd_run(ud);
}

/* ---- answers ---- */

static enum MHD_Result respond_typed(struct req *r, int status, char *body, size_t len,
                                     const char *content_type);

static enum MHD_Result respond(struct req *r, int status, char *body, size_t len)
{
    return respond_typed(r, status, body, len, "application/json");
}

static enum MHD_Result queue_typed(struct req *r, int status, struct MHD_Response *resp,
                                   const char *content_type);

static struct MHD_Response *internal_error(void)
{
    return MHD_create_response_from_buffer(
        strlen("{\"error\":{\"errorSummary\":\"Internal error.\"}}"),
        (void *)"{\"error\":{\"errorSummary\":\"Internal error.\"}}", MHD_RESPMEM_PERSISTENT);
}

static enum MHD_Result respond_typed(struct req *r, int status, char *body, size_t len,
                                     const char *content_type)
{
    struct MHD_Response *resp;
    if (body)
        resp = MHD_create_response_from_buffer(len, body, MHD_RESPMEM_MUST_FREE);
    else
        resp = internal_error();
    if (!resp) {
        free(body);
        return MHD_NO;
    }
    return queue_typed(r, status, resp, content_type);
}

/* Queues resp (consumed) with the headers every answer carries. */
static enum MHD_Result queue_typed(struct req *r, int status, struct MHD_Response *resp,
                                   const char *content_type)
{
    MHD_add_response_header(resp, MHD_HTTP_HEADER_CONTENT_TYPE, content_type);
    MHD_add_response_header(resp, MHD_HTTP_HEADER_CACHE_CONTROL, "no-store");
    MHD_add_response_header(resp, "X-Request-Id", r->ctx.id);
    if (status == MHD_HTTP_TOO_MANY_REQUESTS)
        MHD_add_response_header(resp, MHD_HTTP_HEADER_RETRY_AFTER, "1");
    if (r->close) /* libmicrohttpd then closes once the answer is sent, reading nothing more */
        MHD_add_response_header(resp, MHD_HTTP_HEADER_CONNECTION, "close");
    if (status == MHD_HTTP_METHOD_NOT_ALLOWED)
        MHD_add_response_header(resp, MHD_HTTP_HEADER_ALLOW,
                                r->route == ROUTE_HOOK             ? "POST"
                                : r->route != ROUTE_SIDE           ? "GET, HEAD"
                                : r->side->methods == TH_SIDE_POST ? "POST"
                                : r->side->methods == TH_SIDE_GET  ? "GET, HEAD"
                                                                   : "GET, HEAD, POST");
    if (status == MHD_HTTP_UNAUTHORIZED && th_auth_bearer(r->w->srv->auth))
        /* RFC 6750 §3: no detail that would help an attacker */
        MHD_add_response_header(resp, MHD_HTTP_HEADER_WWW_AUTHENTICATE,
                                "Bearer error=\"invalid_token\"");
    /* an answer made inside the handler: its line (if any) leaves first (nothing is written
     * when the batch is empty, as it is for answers made outside: see mhd_run) */
    th_log_flush();
    enum MHD_Result ret = MHD_queue_response(r->conn, (unsigned)status, resp);
    MHD_destroy_response(resp);
    return ret;
}

/* A fixed JSON error answer for transport-level refusals (before the hook sees anything). */
static enum MHD_Result refuse(struct req *r, int status, const char *summary)
{
    struct th_buf b;
    th_buf_init(&b, 512);
    th_buf_appends(&b, "{\"error\":{\"errorSummary\":");
    th_buf_append_json(&b, summary, (size_t)-1);
    th_buf_appends(&b, "}}");
    size_t len = b.len;
    return respond(r, status, th_buf_steal(&b), len);
}

/*
 * GET /readyz once not draining: 200 {"status":"ready","ready":true} or 503
 * {"status":"unavailable","ready":false,"missing":["store",...]}, naming each dependency a load
 * balancer's operator must look at (a node whose database link is broken leaves rotation).
 */
static enum MHD_Result ready_answer(struct req *r, const struct th_server *srv)
{
    const char *missing[TH_READY_MAX];
    size_t n = 0;
    bool ok = srv->ready(srv->ready_ud, missing, &n);
    struct th_buf b;
    th_buf_init(&b, 512);
    if (ok) {
        th_buf_appends(&b, "{\"status\":\"ready\",\"ready\":true}");
    } else {
        th_buf_appends(&b, "{\"status\":\"unavailable\",\"ready\":false,\"missing\":[");
        for (size_t i = 0; i < n && i < TH_READY_MAX; i++) {
            th_buf_appends(&b, i ? "," : "");
            th_buf_append_json(&b, missing[i], (size_t)-1);
        }
        th_buf_appends(&b, "]}");
    }
    size_t len = b.len;
    return respond(r, ok ? MHD_HTTP_OK : MHD_HTTP_SERVICE_UNAVAILABLE, th_buf_steal(&b), len);
}

static void count_refusal(struct req *r, enum refusal why)
{
    th_counter_inc(&r->w->srv->refused[why]);
}

/* th_auth_check's reason: no credentials at all, or credentials that do not pass. */
static void count_auth_refusal(struct req *r, const char *why)
{
    count_refusal(r, why && strcmp(why, "missing credentials") == 0 ? REFUSED_AUTH_MISSING
                                                                    : REFUSED_AUTH_INVALID);
}

static void log_refusal(struct req *r, int status, const char *why)
{
    struct th_logline l;
    if (!th_log_begin(&l, TH_LOG_WARN, "refused"))
        return;
    th_log_str(&l, "req", r->ctx.id);
    th_log_int(&l, "status", status);
    th_log_str(&l, "reason", why);
    const union MHD_ConnectionInfo *ci =
        MHD_get_connection_info(r->conn, MHD_CONNECTION_INFO_CLIENT_ADDRESS);
    char ip[INET6_ADDRSTRLEN] = "";
    if (ci && ci->client_addr) {
        const struct sockaddr *sa = ci->client_addr;
        if (sa->sa_family == AF_INET)
            inet_ntop(AF_INET, &((const struct sockaddr_in *)(const void *)sa)->sin_addr, ip,
                      sizeof ip);
        else if (sa->sa_family == AF_INET6)
            inet_ntop(AF_INET6, &((const struct sockaddr_in6 *)(const void *)sa)->sin6_addr, ip,
                      sizeof ip);
        th_log_str(&l, "client", ip);
    }
    th_log_end(&l);
}

/* Called by the hook, on this worker's loop, exactly once per dispatched request. */
static void on_hook_answer(void *ud, int status, const char *body, size_t len)
{
    struct req *r = ud;
    r->status = status;
    r->answer = body;
    r->answer_len = len;
    if (r->in_handler || !r->conn)
        return; /* the access handler queues it when th_hook_handle returns */
    /* Resumed here, processed by libmicrohttpd on this loop's next timer pass. */
    MHD_resume_connection(r->conn);
    th_loop_timer_set(r->w->loop, &r->w->mhd_timer, th_loop_now_us(r->w->loop), mhd_run, r->w);
}

/* libmicrohttpd is done with an answer that lies in the request's arena. */
static void answer_sent(void *cls)
{
    th_hook_req_drop(cls);
}

static enum MHD_Result queue_answer(struct req *r)
{
    struct MHD_Response *resp = NULL;
    if (r->answer) { /* sent from the arena, which the response holds until it is done */
        th_hook_req_hold(&r->ctx);
        resp = MHD_create_response_from_buffer_with_free_callback_cls(
            r->answer_len, (void *)r->answer, answer_sent, &r->ctx);
        if (!resp)
            th_hook_req_drop(&r->ctx);
    } else {
        resp = internal_error();
    }
    if (!resp)
        return MHD_NO;
    return queue_typed(r, r->status, resp, r->answer_type ? r->answer_type : "application/json");
}

/* ---- request handling ---- */

/*
 * The value and its length as libmicrohttpd stored it, for th_auth_check. (libmicrohttpd 0.9.x
 * itself cuts a header value at a NUL byte; 1.x answers such a request 400 before we see it.)
 */
static const char *header_lookup(void *ud, const char *name, size_t *len)
{
    const char *v = NULL;
    *len = 0;
    if (MHD_lookup_connection_value_n(ud, MHD_HEADER_KIND, name, strlen(name), &v, len) != MHD_YES)
        return NULL;
    return v;
}

/* The hook's path is compared first: the side routes cost its requests nothing. */
static enum route route_of(const struct th_server *srv, const char *url,
                           const struct th_side_route **side)
{
    if (strcmp(url, HOOK_PATH) == 0)
        return ROUTE_HOOK;
    if (strcmp(url, "/healthz") == 0)
        return ROUTE_HEALTH;
    if (strcmp(url, "/readyz") == 0)
        return ROUTE_READY;
    if (strcmp(url, "/metrics") == 0)
        return ROUTE_METRICS;
    for (size_t i = 0; i < srv->nside; i++) {
        if (strcmp(url, srv->side[i].path) == 0) {
            *side = &srv->side[i];
            return ROUTE_SIDE;
        }
    }
    return ROUTE_NOT_FOUND;
}

/* want (a media type), any case, parameters allowed ("; charset=utf-8"). */
static bool media_is(const char *ct, const char *want)
{
    size_t n = strlen(want);
    if (!ct || strncasecmp(ct, want, n) != 0)
        return false;
    char c = ct[n];
    return c == '\0' || c == ';' || c == ' ' || c == '\t';
}

static bool is_json(const char *ct)
{
    return media_is(ct, "application/json");
}

static enum MHD_Result after_auth(struct req *r);

static void req_free(struct th_hook_req *ctx)
{
    free((struct req *)ctx); /* ctx is the first member */
}

/* On the loop: the key refresh an unknown kid asked for has completed, or our second is up. */
static void on_keys(void *ud)
{
    struct req *r = ud;
    struct worker *w = r->w;
    th_auth_wait_cancel(w->srv->auth, &r->auth_waiter); /* the timer fired: no wake after it */
    th_loop_timer_cancel(w->loop, &r->auth_timer);
    /* still TH_REQ_AUTH_WAIT: the call that resumes it authenticates again */
    MHD_resume_connection(r->conn);
    th_loop_timer_set(w->loop, &w->mhd_timer, th_loop_now_us(w->loop), mhd_run, w);
}

/*
 * A token signed by a key we do not hold yet (the issuer rotated its keys): the connection
 * waits, without blocking the loop, for the refresh that was just asked for (at most a second),
 * then the token is checked again. Okta does not retry the telephony hook, so a 401 here would
 * cost the user their code.
 */
static enum MHD_Result wait_for_keys(struct req *r)
{
    struct worker *w = r->w;
    r->ctx.state = TH_REQ_AUTH_WAIT;
    uint64_t seen = th_auth_epoch(w->srv->auth);
    int64_t now = th_mono_us();
    /* a refresh that completed already (or no fetcher): check again on the next pass */
    bool woken_later = th_auth_wait(w->srv->auth, &r->auth_waiter, seen, w->loop, on_keys, r);
    th_loop_timer_set(w->loop, &r->auth_timer, woken_later ? now + 1000 * 1000 : now, on_keys, r);
    MHD_suspend_connection(r->conn);
    return MHD_YES;
}

/* First call for a request: headers are known, the body is not read yet. */
struct hdr_count {
    unsigned n;
    size_t bytes;
};

static enum MHD_Result count_header(void *cls, enum MHD_ValueKind kind, const char *key,
                                    const char *value)
{
    (void)kind;
    struct hdr_count *c = cls;
    c->n++;
    c->bytes += strlen(key) + (value ? strlen(value) : 0) + 4; /* ": " and CRLF */
    return MHD_YES;
}

/* false when this client address is over its request rate. */
static bool source_allowed(struct req *r)
{
    struct worker *w = r->w;
    if (!w->src)
        return true;
    const union MHD_ConnectionInfo *ci =
        MHD_get_connection_info(r->conn, MHD_CONNECTION_INFO_CLIENT_ADDRESS);
    if (!ci || !ci->client_addr)
        return true;
    unsigned char key[16] = {0};
    const struct sockaddr *sa = ci->client_addr;
    if (sa->sa_family == AF_INET)
        memcpy(key, &((const struct sockaddr_in *)(const void *)sa)->sin_addr, 4);
    else if (sa->sa_family == AF_INET6)
        memcpy(key, &((const struct sockaddr_in6 *)(const void *)sa)->sin6_addr, 16);
    uint32_t h = 2166136261u; /* FNV-1a */
    for (int i = 0; i < 16; i++)
        h = (h ^ key[i]) * 16777619u;
    struct src_slot *s = &w->src[h % SRC_SLOTS];
    int64_t now = th_loop_now_us(w->loop);
    if (memcmp(s->addr, key, 16) != 0) { /* a newcomer takes the slot */
        memcpy(s->addr, key, 16);
        s->tat_us = 0;
    }
    return th_rate_allow(&w->srv->src_rate, s->tat_us, now, &s->tat_us);
}

static enum MHD_Result framing_field(void *cls, enum MHD_ValueKind kind, const char *key,
                                     size_t key_size, const char *value, size_t value_size)
{
    struct th_framing *f = cls;
    (void)kind;
    th_framing_field(f, key, key_size, value ? value : "", value ? value_size : 0);
    return f->why ? MHD_NO : MHD_YES;
}

/*
 * NULL when the request's framing is sound (http/internal.h), else why, with *status. The
 * method and version are libmicrohttpd's own pointers into the header section, which starts at
 * the method; with libmicrohttpd 0.9 the section's layout is checked too (th_framing): it is the
 * only way to see a NUL in a value, as the values it hands out end at the first NUL.
 */
static const char *framing_problem(struct req *r, const char *method, const char *version,
                                   int *status)
{
    struct th_framing f;
    th_framing_begin(&f, NULL, NULL);
    if (r->w->srv->mhd_inplace) {
        const union MHD_ConnectionInfo *ci =
            MHD_get_connection_info(r->conn, MHD_CONNECTION_INFO_REQUEST_HEADER_SIZE);
        const char *line_end = version + strlen(version);
        uintptr_t start = (uintptr_t)method;
        /* The section lies in the connection's memory pool, and so does the version; else a
         * buffer was moved (only a folded line makes libmicrohttpd 0.9 move one). */
        *status = MHD_HTTP_BAD_REQUEST;
        if (!ci || ci->header_size > (size_t)r->w->srv->cfg->connection_memory ||
            (uintptr_t)version < start || (uintptr_t)line_end >= start + ci->header_size)
            return "header section not where the parser keeps it";
        th_framing_begin(&f, line_end, method + ci->header_size);
    }
    MHD_get_connection_values_n(r->conn, MHD_HEADER_KIND, framing_field, &f);
    return th_framing_end(&f, strcmp(version, MHD_HTTP_VERSION_1_0) == 0, status);
}

/* The announced Content-Length is not a number or over max: true, the refusal logged and
 * counted (the caller answers 413). No Content-Length: false (the body is counted as it comes). */
static bool announced_too_large(struct req *r, unsigned long long max)
{
    const char *cl =
        MHD_lookup_connection_value(r->conn, MHD_HEADER_KIND, MHD_HTTP_HEADER_CONTENT_LENGTH);
    if (!cl)
        return false;
    char *end;
    errno = 0;
    unsigned long long n = strtoull(cl, &end, 10);
    if (!errno && !*end && n <= max)
        return false;
    log_refusal(r, MHD_HTTP_CONTENT_TOO_LARGE, "body too large");
    count_refusal(r, REFUSED_TOO_LARGE);
    return true;
}

static enum MHD_Result side_headers(struct req *r, const char *method);

static enum MHD_Result on_headers(struct req *r, const char *method, const char *version)
{
    struct th_server *srv = r->w->srv;
    bool get = strcmp(method, "GET") == 0 || strcmp(method, "HEAD") == 0;
    /* Framing first: a request whose length is in doubt is answered alone, and the connection
     * closed, so that nothing after it is taken for another request (RFC 9112 §6.3). */
    int fstatus;
    const char *fwhy = framing_problem(r, method, version, &fstatus);
    if (fwhy) {
        log_refusal(r, fstatus, fwhy);
        count_refusal(r, REFUSED_FRAMING);
        r->ctx.state = TH_REQ_REFUSED;
        r->close = true;
        return refuse(r, fstatus,
                      fstatus == MHD_HTTP_NOT_IMPLEMENTED ? "Not implemented." : "Bad request.");
    }
    /* Request hygiene next: cheap checks before authentication and before any body byte. */
    if (r->route == ROUTE_HOOK && !source_allowed(r)) { /* probes are not rate limited */
        log_refusal(r, MHD_HTTP_TOO_MANY_REQUESTS, "source over its request rate");
        count_refusal(r, REFUSED_SOURCE_RATE);
        r->ctx.state = TH_REQ_REFUSED;
        return refuse(r, MHD_HTTP_TOO_MANY_REQUESTS, "Too many requests.");
    }
    struct hdr_count hc = {0, 0};
    MHD_get_connection_values(r->conn, MHD_HEADER_KIND, count_header, &hc);
    if (hc.n > (unsigned)srv->cfg->max_headers || hc.bytes > (size_t)srv->cfg->max_header_bytes) {
        log_refusal(r, MHD_HTTP_REQUEST_HEADER_FIELDS_TOO_LARGE, "header fields too large");
        count_refusal(r, REFUSED_HEADERS);
        r->ctx.state = TH_REQ_REFUSED;
        return refuse(r, MHD_HTTP_REQUEST_HEADER_FIELDS_TOO_LARGE,
                      "Request header fields too large.");
    }
    switch (r->route) {
    case ROUTE_NOT_FOUND:
        return refuse(r, MHD_HTTP_NOT_FOUND, "Not found.");
    case ROUTE_HEALTH:
        if (!get)
            return refuse(r, MHD_HTTP_METHOD_NOT_ALLOWED, "Method not allowed.");
        return respond(r, MHD_HTTP_OK, strdup("{\"status\":\"ok\"}"),
                       strlen("{\"status\":\"ok\"}"));
    case ROUTE_READY:
        if (!get)
            return refuse(r, MHD_HTTP_METHOD_NOT_ALLOWED, "Method not allowed.");
        if (atomic_load(&srv->draining))
            return respond(r, MHD_HTTP_SERVICE_UNAVAILABLE, strdup("{\"status\":\"draining\"}"),
                           strlen("{\"status\":\"draining\"}"));
        if (srv->ready)
            return ready_answer(r, srv);
        return respond(r, MHD_HTTP_OK, strdup("{\"status\":\"ready\",\"ready\":true}"),
                       strlen("{\"status\":\"ready\",\"ready\":true}"));
    case ROUTE_METRICS: {
        if (!srv->metrics)
            return refuse(r, MHD_HTTP_NOT_FOUND, "Not found.");
        if (!get)
            return refuse(r, MHD_HTTP_METHOD_NOT_ALLOWED, "Method not allowed.");
        struct th_buf b;
        th_buf_init(&b, 256 * 1024);
        srv->metrics(srv->metrics_ud, &b);
        size_t len = b.len;
        return respond_typed(r, MHD_HTTP_OK, th_buf_steal(&b), len,
                             "text/plain; version=0.0.4; charset=utf-8");
    }
    case ROUTE_SIDE:
        return side_headers(r, method);
    case ROUTE_HOOK:
        break;
    }
    if (strcmp(method, "POST") != 0) {
        log_refusal(r, MHD_HTTP_METHOD_NOT_ALLOWED, "method not allowed");
        count_refusal(r, REFUSED_METHOD);
        return refuse(r, MHD_HTTP_METHOD_NOT_ALLOWED, "Method not allowed.");
    }
    if (announced_too_large(r, (unsigned long long)srv->cfg->max_body)) {
        r->ctx.state = TH_REQ_REFUSED;
        return refuse(r, MHD_HTTP_CONTENT_TOO_LARGE, "Request body too large.");
    }
    if (!is_json(
            MHD_lookup_connection_value(r->conn, MHD_HEADER_KIND, MHD_HTTP_HEADER_CONTENT_TYPE))) {
        log_refusal(r, MHD_HTTP_UNSUPPORTED_MEDIA_TYPE, "content type is not application/json");
        count_refusal(r, REFUSED_MEDIA_TYPE);
        r->ctx.state = TH_REQ_REFUSED;
        return refuse(r, MHD_HTTP_UNSUPPORTED_MEDIA_TYPE, "Content-Type must be application/json.");
    }
    /* Authenticate before reading a byte of the body: an unauthenticated caller costs nothing. */
    const char *why = NULL;
    th_err ae = th_auth_check(srv->auth, header_lookup, r->conn, &why);
    if (ae == TH_E_BUSY)
        return wait_for_keys(r);
    if (ae != TH_E_OK) {
        log_refusal(r, MHD_HTTP_UNAUTHORIZED, why);
        count_auth_refusal(r, why);
        return refuse(r, MHD_HTTP_UNAUTHORIZED, "Unauthorized.");
    }
    return after_auth(r);
}

/* Appends n body bytes in the arena (room for the parser's padding kept). false: over
 * server.max_body (or not authenticated yet, or out of memory). */
static bool body_append(struct req *r, const char *data, size_t n)
{
    if (n > r->body_max - r->body_len)
        return false;
    size_t need = r->body_len + n + TH_OKTA_PADDING;
    if (need > r->body_cap) { /* no Content-Length, or more than it said: move to more room */
        size_t cap = r->body_cap ? r->body_cap * 2 : 4096;
        if (cap < need)
            cap = need;
        if (cap > r->body_max + TH_OKTA_PADDING)
            cap = r->body_max + TH_OKTA_PADDING;
        char *p = th_arena_alloc(&r->ctx.arena, cap);
        if (!p)
            return false;
        if (r->body_len)
            memcpy(p, r->body, r->body_len);
        r->body = p;
        r->body_cap = cap;
    }
    memcpy(r->body + r->body_len, data, n);
    r->body_len += n;
    return true;
}

/* A side route's body cap. */
static size_t side_max(const struct req *r)
{
    return r->side->max_body ? r->side->max_body : (size_t)r->w->srv->cfg->max_body;
}

/*
 * A side route's checks, in the hook's order and with its counters: method, announced length,
 * media type, credentials; nothing of the body is kept before they pass.
 */
static enum MHD_Result side_headers(struct req *r, const char *method)
{
    struct th_server *srv = r->w->srv;
    const struct th_side_route *s = r->side;
    bool get = strcmp(method, "GET") == 0 || strcmp(method, "HEAD") == 0;
    bool post = strcmp(method, "POST") == 0;
    r->ctx.state = TH_REQ_REFUSED; /* until every check has passed */
    if (!((get && (s->methods & TH_SIDE_GET)) || (post && (s->methods & TH_SIDE_POST)))) {
        log_refusal(r, MHD_HTTP_METHOD_NOT_ALLOWED, "method not allowed");
        count_refusal(r, REFUSED_METHOD);
        return refuse(r, MHD_HTTP_METHOD_NOT_ALLOWED, "Method not allowed.");
    }
    if (announced_too_large(r, (unsigned long long)side_max(r)))
        return refuse(r, MHD_HTTP_CONTENT_TOO_LARGE, "Request body too large.");
    if (post) {
        const char *ct =
            MHD_lookup_connection_value(r->conn, MHD_HEADER_KIND, MHD_HTTP_HEADER_CONTENT_TYPE);
        bool ok = false;
        if (!s->media)
            ok = is_json(ct);
        for (size_t i = 0; s->media && s->media[i] && !ok; i++)
            ok = media_is(ct, s->media[i]);
        if (!ok) {
            log_refusal(r, MHD_HTTP_UNSUPPORTED_MEDIA_TYPE, "content type not accepted");
            count_refusal(r, REFUSED_MEDIA_TYPE);
            return refuse(r, MHD_HTTP_UNSUPPORTED_MEDIA_TYPE, "Unsupported Content-Type.");
        }
    }
    const char *why = NULL;
    th_err ae = TH_E_OK;
    if (s->auth == TH_SIDE_AUTH_HOOK)
        ae = th_auth_check(srv->auth, header_lookup, r->conn, &why);
    else if (s->auth == TH_SIDE_AUTH_CHECK)
        ae = s->check(s->ud, header_lookup, r->conn, &why);
    r->ctx.state = TH_REQ_RECEIVING;
    if (ae == TH_E_BUSY && s->auth == TH_SIDE_AUTH_HOOK)
        return wait_for_keys(r);
    if (ae != TH_E_OK) {
        r->ctx.state = TH_REQ_REFUSED;
        log_refusal(r, MHD_HTTP_UNAUTHORIZED, why ? why : "credentials refused");
        count_auth_refusal(r, why);
        return refuse(r, MHD_HTTP_UNAUTHORIZED, "Unauthorized.");
    }
    return after_auth(r);
}

/* Appends k or v percent-encoded (RFC 3986 unreserved bytes as they are). */
static void append_query_part(struct th_buf *b, const char *p, size_t n)
{
    static const char hex[] = "0123456789ABCDEF";
    for (size_t i = 0; i < n; i++) {
        unsigned char c = (unsigned char)p[i];
        if ((c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') ||
            c == '-' || c == '.' || c == '_' || c == '~') {
            th_buf_appendc(b, (char)c);
        } else {
            th_buf_appendc(b, '%');
            th_buf_appendc(b, hex[c >> 4]);
            th_buf_appendc(b, hex[c & 15]);
        }
    }
}

static enum MHD_Result query_arg(void *cls, enum MHD_ValueKind kind, const char *key,
                                 size_t key_size, const char *value, size_t value_size)
{
    (void)kind;
    struct th_buf *b = cls;
    th_buf_appendc(b, b->len ? '&' : '?');
    append_query_part(b, key, key_size);
    if (value) {
        th_buf_appendc(b, '=');
        append_query_part(b, value, value_size);
    }
    return MHD_YES;
}

/* The body is read: the side route's handler runs, holding the request until it answers. */
static enum MHD_Result side_dispatch(struct req *r, const char *url, const char *method)
{
    struct th_buf q;
    th_buf_init(&q, 3 * (size_t)r->w->srv->cfg->max_header_bytes + 64);
    MHD_get_connection_values_n(r->conn, MHD_GET_ARGUMENT_KIND, query_arg, &q);
    size_t ulen = strlen(url);
    char *pq = th_buf_err(&q) == TH_E_OK ? th_arena_alloc(&r->ctx.arena, ulen + q.len + 1) : NULL;
    if (pq) {
        memcpy(pq, url, ulen);
        if (q.len)
            memcpy(pq + ulen, th_buf_str(&q), q.len);
        pq[ulen + q.len] = '\0';
    }
    th_buf_release(&q);
    if (!r->body) { /* no body (a GET): the handler still gets a padded, NUL-ended one */
        r->body = th_arena_calloc(&r->ctx.arena, TH_OKTA_PADDING + 1);
        r->body_cap = r->body ? TH_OKTA_PADDING + 1 : 0;
    }
    if (!pq || !r->body)
        return respond(r, MHD_HTTP_INTERNAL_SERVER_ERROR, NULL, 0);
    r->body[r->body_len] = '\0'; /* body_append kept TH_OKTA_PADDING bytes after it */
    const struct th_side_call call = {
        .method = method,
        .path_query = pq,
        .body = r->body,
        .len = r->body_len,
        .header = header_lookup,
        .header_ud = r->conn,
        .id = r->ctx.id,
        .loop = r->w->loop,
        .req = (struct th_side_req *)(void *)r,
    };
    r->ctx.state = TH_REQ_DECODED;
    th_hook_req_hold(&r->ctx); /* the handler's, until th_side_answer */
    r->in_handler = true;
    r->side->handle(r->side->ud, &call);
    r->in_handler = false;
    if (r->status)
        return queue_answer(r);
    MHD_suspend_connection(r->conn);
    return MHD_YES;
}

void th_side_answer(struct th_side_req *req, int status, const char *content_type, const char *body,
                    size_t len)
{
    struct req *r = (struct req *)(void *)req;
    char *copy = th_arena_alloc(&r->ctx.arena, len ? len : 1);
    if (copy && len)
        memcpy(copy, body, len);
    r->answer = copy; /* NULL: out of memory, answered 500 */
    r->answer_len = copy ? len : 0;
    r->answer_type = content_type;
    r->status = copy ? status : MHD_HTTP_INTERNAL_SERVER_ERROR;
    r->ctx.state = TH_REQ_ANSWERED;
    if (!r->in_handler && r->conn) { /* resumed as the hook's answers are (on_hook_answer) */
        MHD_resume_connection(r->conn);
        th_loop_timer_set(r->w->loop, &r->w->mhd_timer, th_loop_now_us(r->w->loop), mhd_run, r->w);
    }
    th_hook_req_drop(&r->ctx); /* the handler's hold; the front's keeps it while it is sent */
}

/* The header checks that follow authentication. */
static enum MHD_Result after_auth(struct req *r)
{
    struct th_server *srv = r->w->srv;
    r->body_max = r->route == ROUTE_SIDE ? side_max(r) : (size_t)srv->cfg->max_body;
    /* the announced length (on_headers checked it against max_body) is read in one place */
    const char *cl =
        MHD_lookup_connection_value(r->conn, MHD_HEADER_KIND, MHD_HTTP_HEADER_CONTENT_LENGTH);
    unsigned long long n = cl ? strtoull(cl, NULL, 10) : 0;
    if (n > 0 && n <= r->body_max) {
        r->body = th_arena_alloc(&r->ctx.arena, (size_t)n + TH_OKTA_PADDING);
        r->body_cap = r->body ? (size_t)n + TH_OKTA_PADDING : 0;
    }
    return MHD_YES;
}

static enum MHD_Result on_request(void *cls, struct MHD_Connection *conn, const char *url,
                                  const char *method, const char *version, const char *upload_data,
                                  size_t *upload_data_size, void **con_cls)
{
    struct worker *w = cls;
    struct req *r = *con_cls;
    if (!r) {
        r = malloc(sizeof *r);
        if (!r)
            return MHD_NO;
        memset(r, 0, offsetof(struct req, chunk)); /* the chunk is the arena's, wiped as used */
        *con_cls = r;
        r->w = w;
        r->conn = conn;
        th_hook_req_init(&r->ctx, r->chunk, sizeof r->chunk, ARENA_CAP(w->srv->cfg->max_body),
                         th_mono_us(), w->srv->cfg->deadline_ms, req_free);
        r->route = route_of(w->srv, url, &r->side);
        return on_headers(r, method, version);
    }
    if (r->ctx.state == TH_REQ_AUTH_WAIT) { /* resumed: authenticate again before anything else */
        r->ctx.state = TH_REQ_RECEIVING;
        const char *why = NULL;
        if (th_auth_check(w->srv->auth, header_lookup, r->conn, &why) != TH_E_OK) {
            log_refusal(r, MHD_HTTP_UNAUTHORIZED, why);
            count_auth_refusal(r, why);
            r->ctx.state = TH_REQ_REFUSED;
            return refuse(r, MHD_HTTP_UNAUTHORIZED, "Unauthorized.");
        }
        if (after_auth(r) != MHD_YES || r->ctx.state == TH_REQ_REFUSED)
            return MHD_YES; /* after_auth queued its refusal */
        /* This call replays the headers call that suspended: the body comes in the next ones. */
        if (*upload_data_size == 0)
            return MHD_YES;
    }
    if (r->ctx.state == TH_REQ_REFUSED) { /* an early refusal is queued: drain and drop what the
                                             client still sends */
        *upload_data_size = 0;
        return MHD_YES;
    }
    if (*upload_data_size) {
        /* Past the cap the rest is drained and dropped; the answer is 413 at the end. */
        if (r->ctx.state != TH_REQ_TOO_BIG && !body_append(r, upload_data, *upload_data_size))
            r->ctx.state = TH_REQ_TOO_BIG;
        *upload_data_size = 0;
        return MHD_YES;
    }
    if (r->status)
        return queue_answer(r); /* resumed */
    if (r->ctx.state >= TH_REQ_DECODED)
        return MHD_YES; /* spurious call while waiting; cannot happen while suspended */
    if (r->ctx.state == TH_REQ_TOO_BIG) {
        log_refusal(r, MHD_HTTP_CONTENT_TOO_LARGE, "body too large");
        count_refusal(r, REFUSED_TOO_LARGE);
        return refuse(r, MHD_HTTP_CONTENT_TOO_LARGE, "Request body too large.");
    }
    if (r->route == ROUTE_SIDE)
        return side_dispatch(r, url, method);
    struct th_hook_call call = {
        .body = r->body ? r->body : "",
        .len = r->body_len,
        .cap = r->body ? r->body_cap : 0,
    };
    r->in_handler = true;
    th_hook_handle(w->srv->hook, w->loop, &r->ctx, &call, on_hook_answer, r);
    r->in_handler = false;
    if (r->status)
        return queue_answer(r);
    MHD_suspend_connection(conn);
    return MHD_YES;
}

static void on_completed(void *cls, struct MHD_Connection *conn, void **con_cls,
                         enum MHD_RequestTerminationCode toe)
{
    (void)cls;
    (void)conn;
    (void)toe;
    struct req *r = *con_cls;
    if (!r)
        return;
    th_loop_timer_cancel(r->w->loop, &r->auth_timer);
    if (r->ctx.state == TH_REQ_AUTH_WAIT) /* closed while waiting for keys */
        th_auth_wait_cancel(r->w->srv->auth, &r->auth_waiter);
    r->conn = NULL;
    *con_cls = NULL;
    th_hook_req_drop(&r->ctx); /* the hook may hold it still (a provider answering late) */
}

/* fmt is libmicrohttpd's own format string, passed through as its logger API requires */
__attribute__((format(printf, 2, 0))) static void mhd_logger(void *cls, const char *fmt, va_list ap)
{
    (void)cls;
    char msg[256];
    vsnprintf(msg, sizeof msg, fmt, ap);
    size_t n = strlen(msg);
    while (n && (msg[n - 1] == '\n' || msg[n - 1] == '\r'))
        msg[--n] = '\0';
    th_log_msg(TH_LOG_WARN, "http", "%s", msg);
}

/* ---- listening sockets ---- */

static th_err split_listen(const char *listen, char *host, size_t hostlen, char *port,
                           size_t portlen)
{
    int p;
    if (th_hostport_parse(listen, host, hostlen, &p) != TH_E_OK)
        return TH_E_CONFIG;
    snprintf(port, portlen, "%d", p);
    return TH_E_OK;
}

/* ai's address with port set */
static void addr_with_port(struct sockaddr_storage *ss, const struct addrinfo *ai, int port)
{
    memcpy(ss, ai->ai_addr, ai->ai_addrlen);
    if (ss->ss_family == AF_INET)
        ((struct sockaddr_in *)(void *)ss)->sin_port = htons((uint16_t)port);
    else
        ((struct sockaddr_in6 *)(void *)ss)->sin6_port = htons((uint16_t)port);
}

static int open_listener(const struct addrinfo *ai, int port, char *err, size_t errlen)
{
    struct sockaddr_storage ss;
    addr_with_port(&ss, ai, port);
    int fd = socket(ai->ai_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (fd < 0)
        goto fail;
    int one = 1;
    setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    /* One listening socket per loop on the same port: the kernel balances accepted connections. */
    if (setsockopt(fd, SOL_SOCKET, SO_REUSEPORT, &one, sizeof one) != 0)
        goto fail;
    if (ai->ai_family == AF_INET6)
        setsockopt(fd, IPPROTO_IPV6, IPV6_V6ONLY, &one, sizeof one);
    if (bind(fd, (struct sockaddr *)&ss, ai->ai_addrlen) != 0 || listen(fd, 1024) != 0)
        goto fail;
    return fd;
fail:
    snprintf(err, errlen, "cannot listen: %s", strerror(errno));
    if (fd >= 0)
        close(fd);
    return -1;
}

/*
 * Is the address already served? The loops' listeners share the port with SO_REUSEPORT, so a
 * second telehook (same user) started on the same address would bind too, and the kernel would
 * split Okta's requests between the two. A probe socket without SO_REUSEPORT cannot bind where
 * any socket listens (SO_REUSEADDR only lets it past connections in TIME_WAIT): EADDRINUSE means
 * another process holds the address. Returns 0, or -1 with the reason in err.
 */
static int check_not_served(const struct addrinfo *ai, int port, const char *listen_text, char *err,
                            size_t errlen)
{
    struct sockaddr_storage ss;
    addr_with_port(&ss, ai, port);
    int fd = socket(ai->ai_family, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0) {
        snprintf(err, errlen, "cannot listen: %s", strerror(errno));
        return -1;
    }
    int one = 1;
    setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    if (ai->ai_family == AF_INET6)
        setsockopt(fd, IPPROTO_IPV6, IPV6_V6ONLY, &one, sizeof one);
    int rc = bind(fd, (struct sockaddr *)&ss, ai->ai_addrlen);
    int saved = errno;
    close(fd);
    if (rc == 0)
        return 0;
    if (saved == EADDRINUSE)
        snprintf(err, errlen,
                 "cannot listen: %s is already served by another process (another telehook?): "
                 "two servers on one address would split Okta's requests between them",
                 listen_text);
    else
        snprintf(err, errlen, "cannot listen: %s", strerror(saved));
    return -1;
}

static int bound_port(int fd)
{
    struct sockaddr_storage ss;
    socklen_t len = sizeof ss;
    if (getsockname(fd, (struct sockaddr *)&ss, &len) != 0)
        return -1;
    if (ss.ss_family == AF_INET)
        return ntohs(((struct sockaddr_in *)(void *)&ss)->sin_port);
    return ntohs(((struct sockaddr_in6 *)(void *)&ss)->sin6_port);
}

/* ---- workers ---- */

static void flush_log(void *ud)
{
    (void)ud;
    th_log_flush();
}

static void *worker_main(void *arg)
{
    struct worker *w = arg;
    /* the lines of one loop iteration leave in one write (obs/log.h) */
    if (th_log_batch_begin())
        th_loop_set_idle(w->loop, flush_log, NULL);
    mhd_rearm(w);
    th_loop_run(w->loop);
    th_loop_set_idle(w->loop, NULL, NULL);
    th_log_batch_end();
    return NULL;
}

static th_err worker_init(struct th_server *srv, struct worker *w, char *err, size_t errlen)
{
    const struct th_config *cfg = srv->cfg;
    if (th_loop_new(&w->loop) != TH_E_OK) {
        snprintf(err, errlen, "cannot create event loop");
        return TH_E_IO;
    }
    unsigned limit = (unsigned)(cfg->max_connections / srv->nworkers);
    unsigned per_ip =
        cfg->max_connections_per_source > 0
            ? (unsigned)((cfg->max_connections_per_source + srv->nworkers - 1) / srv->nworkers)
            : 0;
    if (srv->src_rate.on) {
        w->src = calloc(SRC_SLOTS, sizeof *w->src);
        if (!w->src) {
            snprintf(err, errlen, "out of memory");
            return TH_E_NOMEM;
        }
    }
    /* HTTPS: the same daemon with TLS on; the credentials come from th_tls_retrieve at each
     * handshake, so a reload needs no restart of the daemon. The TLS options come last: without
     * TLS the list ends before them. */
    w->daemon = MHD_start_daemon(
        MHD_USE_EPOLL | MHD_ALLOW_SUSPEND_RESUME | MHD_USE_ERROR_LOG | (srv->tls ? MHD_USE_TLS : 0),
        0, NULL, NULL, on_request, w,
        /* the logger first, or libmicrohttpd prints its own messages until it is set */
        MHD_OPTION_EXTERNAL_LOGGER, mhd_logger, NULL, MHD_OPTION_LISTEN_SOCKET, w->listen_fd,
        MHD_OPTION_CONNECTION_LIMIT, limit ? limit : 1u, MHD_OPTION_CONNECTION_TIMEOUT,
        (unsigned)cfg->connection_timeout, MHD_OPTION_CONNECTION_MEMORY_LIMIT,
        (size_t)cfg->connection_memory, MHD_OPTION_PER_IP_CONNECTION_LIMIT, per_ip,
        MHD_OPTION_NOTIFY_COMPLETED, on_completed, w, MHD_OPTION_NOTIFY_CONNECTION, on_connection,
        w, srv->tls ? MHD_OPTION_HTTPS_PRIORITIES : MHD_OPTION_END, TH_TLS_PRIORITIES,
        MHD_OPTION_HTTPS_CERT_CALLBACK, th_tls_retrieve, MHD_OPTION_END);
    if (!w->daemon) {
        snprintf(err, errlen, "cannot start the HTTP daemon");
        return TH_E_IO;
    }
    w->listen_fd = -1; /* libmicrohttpd closes it on stop, or hands it back when quiesced */
    const union MHD_DaemonInfo *di = MHD_get_daemon_info(w->daemon, MHD_DAEMON_INFO_EPOLL_FD);
    if (!di || th_loop_add_fd(w->loop, di->epoll_fd, EPOLLIN, on_mhd_io, w) != TH_E_OK) {
        snprintf(err, errlen, "cannot watch the HTTP daemon");
        return TH_E_IO;
    }
    return TH_E_OK;
}

static void worker_release(struct worker *w)
{
    if (w->daemon) {
        const union MHD_DaemonInfo *di = MHD_get_daemon_info(w->daemon, MHD_DAEMON_INFO_EPOLL_FD);
        if (di)
            th_loop_del_fd(w->loop, di->epoll_fd);
        MHD_stop_daemon(w->daemon);
        w->daemon = NULL;
    }
    if (w->listen_fd >= 0)
        close(w->listen_fd);
    w->listen_fd = -1;
    if (w->loop)
        th_loop_timer_cancel(w->loop, &w->mhd_timer);
    th_loop_free(w->loop);
    free(w->src);
    w->src = NULL;
    w->loop = NULL;
}

static void free_creds(void *c)
{
    th_tls_creds_free(c);
}

th_err th_server_start(const struct th_server_deps *deps, struct th_server **out, char *err,
                       size_t errlen)
{
    const struct th_config *cfg = deps->cfg;
    struct th_server *srv = calloc(1, sizeof *srv);
    if (!srv) {
        th_tls_creds_free(deps->tls);
        return TH_E_NOMEM;
    }
    th_retired_init(&srv->retired, free_creds);
    if (deps->tls) {
        srv->tls = true;
        th_tls_creds_free(th_tls_install(deps->tls)); /* NULL unless a server ran before */
    }
    srv->cfg = cfg;
    srv->auth = deps->auth;
    srv->hook = deps->hook;
    srv->ready = deps->ready;
    srv->ready_ud = deps->ready_ud;
    srv->metrics = deps->metrics;
    srv->metrics_ud = deps->metrics_ud;
    srv->side = deps->side;
    srv->nside = deps->nside;
    atomic_init(&srv->draining, false);
    srv->mhd_inplace = strncmp(MHD_get_version(), "0.9.", 4) == 0;
    long n = cfg->threads > 0 ? cfg->threads : sysconf(_SC_NPROCESSORS_ONLN);
    srv->nworkers = n < 1 ? 1 : n > MAX_WORKERS ? MAX_WORKERS : (int)n;
    long rate_n = 0, rate_p = 0;
    th_rate_parse(cfg->source_rate, &rate_n, &rate_p);
    if (rate_n > 0) /* each worker enforces its share */
        srv->src_rate = th_rate_make(rate_n / srv->nworkers > 0 ? rate_n / srv->nworkers : 1,
                                     (int64_t)rate_p * 1000000);
    for (int i = 0; i < MAX_WORKERS; i++)
        srv->workers[i].listen_fd = -1;

    char host[256], port[16];
    struct addrinfo hints = {.ai_socktype = SOCK_STREAM, .ai_flags = AI_PASSIVE | AI_NUMERICSERV};
    struct addrinfo *ai = NULL;
    if (split_listen(cfg->listen, host, sizeof host, port, sizeof port) != TH_E_OK) {
        snprintf(err, errlen, "server.listen: expected HOST:PORT");
        goto fail;
    }
    int gai = getaddrinfo(host[0] ? host : NULL, port, &hints, &ai);
    if (gai != 0) {
        snprintf(err, errlen, "server.listen: %s", gai_strerror(gai));
        goto fail;
    }
    srv->port = atoi(port);
    if (srv->port != 0 && check_not_served(ai, srv->port, cfg->listen, err, errlen) != 0)
        goto fail;
    for (int i = 0; i < srv->nworkers; i++) {
        struct worker *w = &srv->workers[i];
        w->srv = srv;
        w->index = i;
        w->listen_fd = open_listener(ai, srv->port, err, errlen);
        if (w->listen_fd < 0)
            goto fail;
        if (srv->port == 0)
            srv->port = bound_port(w->listen_fd); /* the others join the port the kernel chose */
        if (worker_init(srv, w, err, errlen) != TH_E_OK)
            goto fail;
    }
    freeaddrinfo(ai);
    ai = NULL;
    for (int i = 0; deps->loop_start && i < srv->nworkers; i++)
        deps->loop_start(deps->loop_start_ud, srv->workers[i].loop);
    for (int i = 0; i < srv->nworkers; i++) {
        struct worker *w = &srv->workers[i];
        if (pthread_create(&w->thread, NULL, worker_main, w) != 0) {
            snprintf(err, errlen, "cannot start worker thread");
            goto fail;
        }
        w->started = true;
    }
    *out = srv;
    return TH_E_OK;
fail:
    if (ai)
        freeaddrinfo(ai);
    th_server_stop(srv);
    return TH_E_IO;
}

int th_server_ping(struct th_server *srv)
{
    int late = -1;
    for (int i = 0; i < srv->nworkers; i++) {
        struct worker *w = &srv->workers[i];
        if (!th_loop_answered(w->loop)) {
            if (late < 0)
                late = i;
            continue; /* one ping outstanding per loop is enough */
        }
        th_loop_ping(w->loop);
    }
    return late;
}

int th_server_port(const struct th_server *srv)
{
    return srv->port;
}

int th_server_threads(const struct th_server *srv)
{
    return srv->nworkers;
}

static void quiesce_worker(void *ud)
{
    struct worker *w = ud;
    int fd = MHD_quiesce_daemon(w->daemon);
    if (fd >= 0)
        close(fd); /* ours again: no new connection is accepted on this loop */
}

static double tls_expiry_now(void *ud)
{
    (void)ud;
    const struct th_tls_creds *tls = th_tls_current();
    return tls ? (double)th_tls_creds_not_after(tls) : NAN;
}

th_err th_server_metrics(struct th_server *srv, struct th_metrics *m)
{
    static const char *const names[] = {
#define REFUSAL_NAME(name, text) text,
        REFUSALS(REFUSAL_NAME)
#undef REFUSAL_NAME
    };
    struct th_metric_family *f;
    th_err e = th_metrics_refusals(m, &f);
    for (int i = 0; e == TH_E_OK && i < REFUSED__COUNT; i++)
        e = th_metrics_counter(f, (const char *const[]){names[i], NULL}, &srv->refused[i]);
    if (e == TH_E_OK && srv->tls)
        e = th_metrics_family(m, "telehook_tls_certificate_expiry_seconds",
                              "notAfter of the served certificate (unix time).", TH_METRIC_GAUGE,
                              NULL, 1, &f);
    if (e == TH_E_OK && srv->tls)
        e = th_metrics_fn(f, NULL, tls_expiry_now, srv);
    return e;
}

void th_server_quiesce(struct th_server *srv)
{
    if (atomic_exchange(&srv->draining, true))
        return;
    for (int i = 0; i < srv->nworkers; i++)
        if (srv->workers[i].started)
            th_loop_post(srv->workers[i].loop, quiesce_worker, &srv->workers[i]);
}

void th_server_stop(struct th_server *srv)
{
    if (!srv)
        return;
    for (int i = 0; i < srv->nworkers; i++)
        if (srv->workers[i].started)
            th_loop_stop(srv->workers[i].loop);
    for (int i = 0; i < srv->nworkers; i++) {
        struct worker *w = &srv->workers[i];
        if (w->started)
            pthread_join(w->thread, NULL);
        worker_release(w);
    }
    if (srv->tls) /* every loop has stopped: no handshake holds any credentials now */
        th_tls_creds_free(th_tls_install(NULL));
    th_retired_release(&srv->retired, NULL);
    free(srv);
}

/* At most this many replaced credentials are kept (reloads are rare: a renewal each month or
 * two); past it a reload is refused rather than freeing what a handshake may hold. */
#define TLS_RETIRED_MAX 4096

th_err th_server_reload_tls(struct th_server *srv)
{
    const struct th_config *cfg = srv->cfg;
    if (!srv->tls)
        return TH_E_OK;
    char warn[1024], err[1024];
    struct th_tls_creds *fresh = NULL;
    if (srv->retired.n >= TLS_RETIRED_MAX) {
        th_log_msg(TH_LOG_ERROR, "reload",
                   "TLS certificate not reloaded, the running one stays: %d reloads since the "
                   "start; restart telehook",
                   TLS_RETIRED_MAX);
        return TH_E_OVERLOAD;
    }
    if (th_retired_reserve(&srv->retired) != TH_E_OK) {
        th_log_msg(TH_LOG_ERROR, "reload", "TLS certificate not reloaded: out of memory");
        return TH_E_NOMEM;
    }
    th_err e = th_tls_creds_load(cfg->tls_cert, cfg->tls_key, (int64_t)time(NULL), &fresh, warn,
                                 sizeof warn, err, sizeof err);
    if (e != TH_E_OK) {
        th_log_msg(TH_LOG_ERROR, "reload",
                   "TLS certificate not reloaded, the running one stays: %s", err);
        return e;
    }
    th_retired_add(&srv->retired, th_tls_install(fresh));
    if (warn[0])
        th_log_msg(TH_LOG_WARN, "tls", "%s", warn);
    struct th_logline l;
    if (th_log_begin(&l, TH_LOG_INFO, "reload")) {
        th_log_str(&l, "msg", "TLS certificate reloaded");
        th_log_str(&l, "names", th_tls_creds_names(fresh));
        th_log_int(&l, "not_after", (long long)th_tls_creds_not_after(fresh));
        th_log_end(&l);
    }
    return TH_E_OK;
}
