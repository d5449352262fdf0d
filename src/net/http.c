#include "net/http.h"

#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <unistd.h>

#include <curl/curl.h>
#include <sys/epoll.h>
#include <sys/socket.h>

#include "common/buf.h"
#include "common/util.h"
#include "net/internal.h"
#include "net/trust.h"

#define DEFAULT_MAX_RESPONSE (64 * 1024)

/*
 * A socket of curl's, from the first time curl asks us to watch it until curl closes it (we learn
 * that from CURLOPT_CLOSESOCKETFUNCTION). Between transfers a keep-alive connection stays
 * registered for reading ("parked"): level-triggered and quiet while the server is, so the next
 * transfer on it needs no epoll_ctl at all (curl's own remove-then-add would cost two per
 * request). If a parked socket does wake (the server closed it), it is unregistered then; curl
 * finds the connection dead when it next looks and closes it. Only sockets curl opened through
 * on_open are parked: their close comes through on_close. Others (the threaded resolver's
 * socket pair) are closed behind our back, so they are unregistered as soon as curl lets go.
 */
struct sock {
    struct th_http *h;
    curl_socket_t fd;
    uint32_t ev;     /* the interest registered with the loop */
    bool registered; /* in the loop's epoll set */
    bool curl_wants; /* between curl's POLL_IN/OUT and its POLL_REMOVE */
    bool ours;       /* opened by on_open: on_close will tell us when it goes */
};

/* One transfer; recycled with its easy handle (and so its settings buffers) after completion. */
struct xfer {
    struct th_http *h;
    CURL *easy;
    /* the request's header list, built in place (curl_slist's layout is public): no malloc
     * per header; the strings are the caller's, borrowed until done */
    struct curl_slist hdr[TH_HTTP_MAX_HEADERS + 1];
    struct th_buf body;
    size_t max_response;
    bool toobig;
    struct th_http_header captured[TH_HTTP_MAX_CAPTURE]; /* names borrowed from the request */
    char capture_value[TH_HTTP_MAX_CAPTURE][TH_HTTP_CAPTURE_LEN];
    size_t ncapture;
    char errbuf[CURL_ERROR_SIZE];
    th_http_done_fn done;
    void *ud;
    const char *ca_file; /* the trust set on the handle (a request's ca_file, NULL = default) */
    int64_t started_us;
    struct xfer *prev, *next; /* the active list, or the free list (next only) */
};

struct th_http {
    struct th_loop *loop;
    CURLM *multi;
    struct th_timer timer;
    int max_in_flight;
    int in_flight;
    struct xfer *active;
    struct xfer *spare;
    struct sock **byfd; /* curl's sockets by descriptor */
    size_t nbyfd;
};

static const char *const outcome_names[] = {"done",     "timeout", "connect",
                                            "io_error", "too_big", "aborted"};

const char *th_http_outcome_name(th_http_outcome o)
{
    return (size_t)o < TH_ARRAY_LEN(outcome_names) ? outcome_names[o] : "?";
}

th_err th_http_global_init(void)
{
    return curl_global_init(CURL_GLOBAL_DEFAULT) == CURLE_OK ? TH_E_OK : TH_E_NOMEM;
}

void th_http_global_cleanup(void)
{
    curl_global_cleanup();
}

/* ---- completion ---- */

static th_http_outcome classify(const struct xfer *x, CURLcode rc)
{
    switch (rc) {
    case CURLE_OK:
        return TH_HTTP_DONE;
    case CURLE_OPERATION_TIMEDOUT:
        return TH_HTTP_TIMEOUT;
    case CURLE_COULDNT_RESOLVE_HOST:
    case CURLE_COULDNT_RESOLVE_PROXY:
    case CURLE_COULDNT_CONNECT:
    case CURLE_SSL_CONNECT_ERROR:
    case CURLE_PEER_FAILED_VERIFICATION:
    case CURLE_SSL_CERTPROBLEM:
    case CURLE_SSL_CACERT_BADFILE:
    case CURLE_URL_MALFORMAT:
        return TH_HTTP_CONNECT;
    case CURLE_WRITE_ERROR:
        return x->toobig ? TH_HTTP_TOOBIG : TH_HTTP_IO;
    default:
        return TH_HTTP_IO;
    }
}

static void unlink_active(struct th_http *h, struct xfer *x)
{
    if (x->prev)
        x->prev->next = x->next;
    else
        h->active = x->next;
    if (x->next)
        x->next->prev = x->prev;
    x->prev = x->next = NULL;
}

static void recycle(struct th_http *h, struct xfer *x)
{
    th_buf_reset(&x->body);
    x->done = NULL;
    x->ud = NULL;
    x->next = h->spare;
    h->spare = x;
}

static void complete(struct th_http *h, struct xfer *x, th_http_outcome outcome, const char *error)
{
    long status = 0;
    if (outcome == TH_HTTP_DONE)
        curl_easy_getinfo(x->easy, CURLINFO_RESPONSE_CODE, &status);
    struct th_http_response res = {
        .outcome = outcome,
        .status = status,
        .body = th_buf_str(&x->body),
        .len = x->body.len,
        .headers = x->captured,
        .nheaders = x->ncapture,
        .error = error,
        .elapsed_us = th_mono_us() - x->started_us,
    };
    unlink_active(h, x);
    h->in_flight--;
    th_http_done_fn done = x->done;
    void *ud = x->ud;
    done(ud, &res); /* may start new transfers: x is not on the free list yet */
    recycle(h, x);
}

static void check_done(struct th_http *h)
{
    CURLMsg *msg;
    int left;
    while ((msg = curl_multi_info_read(h->multi, &left))) {
        if (msg->msg != CURLMSG_DONE)
            continue;
        CURL *e = msg->easy_handle;
        CURLcode rc = msg->data.result;
        struct xfer *x = NULL;
        curl_easy_getinfo(e, CURLINFO_PRIVATE, (char **)&x);
        curl_multi_remove_handle(h->multi, e);
        const char *err = rc == CURLE_OK ? "" : (x->errbuf[0] ? x->errbuf : curl_easy_strerror(rc));
        complete(h, x, classify(x, rc), err);
    }
}

/* ---- curl's socket API on the loop ---- */

static void on_io(void *ud, uint32_t events)
{
    struct sock *sk = ud;
    struct th_http *h = sk->h;
    curl_socket_t fd = sk->fd; /* sk may be freed inside socket_action */
    if (!sk->curl_wants) {     /* a parked connection woke up: stop watching it */
        th_loop_del_fd(h->loop, fd);
        sk->registered = false;
        return;
    }
    int flags = 0;
    if (events & EPOLLIN)
        flags |= CURL_CSELECT_IN;
    if (events & EPOLLOUT)
        flags |= CURL_CSELECT_OUT;
    if (events & (EPOLLERR | EPOLLHUP))
        flags |= CURL_CSELECT_ERR;
    int running;
    curl_multi_socket_action(h->multi, fd, flags, &running);
    check_done(h);
}

static struct sock *sock_of(struct th_http *h, curl_socket_t fd)
{
    return fd >= 0 && (size_t)fd < h->nbyfd ? h->byfd[fd] : NULL;
}

static struct sock *sock_new(struct th_http *h, curl_socket_t fd)
{
    if (fd < 0)
        return NULL;
    void *t = h->byfd;
    th_err e = th_grow_to_index(&t, &h->nbyfd, sizeof *h->byfd, (size_t)fd);
    h->byfd = t;
    if (e != TH_E_OK)
        return NULL;
    struct sock *sk = calloc(1, sizeof *sk);
    if (!sk)
        return NULL;
    sk->h = h;
    sk->fd = fd;
    h->byfd[fd] = sk;
    return sk;
}

static void sock_free(struct th_http *h, struct sock *sk)
{
    if (sk->registered)
        th_loop_del_fd(h->loop, sk->fd);
    h->byfd[sk->fd] = NULL;
    free(sk);
}

static int on_socket(CURL *easy, curl_socket_t fd, int what, void *userp, void *socketp)
{
    (void)easy;
    (void)socketp;
    struct th_http *h = userp;
    struct sock *sk = sock_of(h, fd);
    if (what == CURL_POLL_REMOVE) {
        if (sk && !sk->ours) {
            sock_free(h, sk);
        } else if (sk) {
            sk->curl_wants = false;
            /* parked for reading only: writable interest would fire at once */
            if (sk->registered && sk->ev != EPOLLIN) {
                th_loop_del_fd(h->loop, fd);
                sk->registered = false;
            }
        }
        return 0;
    }
    uint32_t ev = 0;
    if (what & CURL_POLL_IN)
        ev |= EPOLLIN;
    if (what & CURL_POLL_OUT)
        ev |= EPOLLOUT;
    if (!sk && !(sk = sock_new(h, fd)))
        return -1; /* curl fails the transfer */
    sk->curl_wants = true;
    if (sk->registered && sk->ev == ev)
        return 0; /* the usual case: a parked connection taken again */
    th_err e = TH_E_IO;
    if (sk->registered)
        e = th_loop_mod_fd(h->loop, fd, ev, on_io, sk);
    if (e != TH_E_OK) /* not registered, or (defensively) no longer in the epoll set */
        e = th_loop_add_fd(h->loop, fd, ev, on_io, sk);
    if (e != TH_E_OK)
        return -1;
    sk->registered = true;
    sk->ev = ev;
    return 0;
}

/* curl opens a connection's socket: known from the start, so it can be parked between transfers */
static curl_socket_t on_open(void *clientp, curlsocktype purpose, struct curl_sockaddr *addr)
{
    struct th_http *h = clientp;
    if (purpose != CURLSOCKTYPE_IPCXN)
        return CURL_SOCKET_BAD;
    curl_socket_t fd = socket(addr->family, addr->socktype | SOCK_CLOEXEC, addr->protocol);
    if (fd == CURL_SOCKET_BAD)
        return fd;
    struct sock *sk = sock_of(h, fd);
    if (sk) /* a stale entry for this number: a socket closed behind our back */
        sock_free(h, sk);
    if (!(sk = sock_new(h, fd))) {
        close(fd);
        return CURL_SOCKET_BAD;
    }
    sk->ours = true;
    return fd;
}

/* curl closes a socket: forget it (and stop watching it) first. */
static int on_close(void *clientp, curl_socket_t fd)
{
    struct th_http *h = clientp;
    struct sock *sk = sock_of(h, fd);
    if (sk)
        sock_free(h, sk);
    return close(fd);
}

static void on_timer(void *ud)
{
    struct th_http *h = ud;
    int running;
    curl_multi_socket_action(h->multi, CURL_SOCKET_TIMEOUT, 0, &running);
    check_done(h);
}

static int on_curl_timer(CURLM *multi, long timeout_ms, void *userp)
{
    (void)multi;
    struct th_http *h = userp;
    if (timeout_ms < 0)
        th_loop_timer_cancel(h->loop, &h->timer);
    else
        th_loop_timer_set(h->loop, &h->timer, th_mono_us() + (int64_t)timeout_ms * 1000, on_timer,
                          h);
    return 0;
}

/* ---- the transfer's callbacks ---- */

static size_t on_body(char *p, size_t size, size_t n, void *ud)
{
    struct xfer *x = ud;
    size_t len = size * n;
    if (x->body.len + len > x->max_response) {
        x->toobig = true;
        return 0; /* CURLE_WRITE_ERROR */
    }
    return th_buf_append(&x->body, p, len) == TH_E_OK ? len : 0;
}

static size_t on_header(char *p, size_t size, size_t n, void *ud)
{
    struct xfer *x = ud;
    size_t len = size * n;
    if (len >= 5 && strncmp(p, "HTTP/", 5) == 0) { /* a new response (after a 100 Continue) */
        for (size_t i = 0; i < x->ncapture; i++)
            x->capture_value[i][0] = '\0';
        return len;
    }
    for (size_t i = 0; i < x->ncapture; i++)
        if (th_http_header_capture(p, len, x->captured[i].name, x->capture_value[i],
                                   sizeof x->capture_value[i]))
            break;
    return len;
}

bool th_http_header_capture(const char *line, size_t len, const char *name, char *out,
                            size_t outlen)
{
    size_t nl = strlen(name);
    if (len <= nl || line[nl] != ':' || strncasecmp(line, name, nl) != 0)
        return false;
    const char *v = line + nl + 1, *end = line + len;
    while (v < end && (*v == ' ' || *v == '\t'))
        v++;
    while (end > v && (end[-1] == '\r' || end[-1] == '\n' || end[-1] == ' '))
        end--;
    size_t vl = (size_t)(end - v) < outlen - 1 ? (size_t)(end - v) : outlen - 1;
    memcpy(out, v, vl);
    out[vl] = '\0';
    return true;
}

const char *th_http_response_header(const struct th_http_response *res, const char *name)
{
    for (size_t i = 0; i < res->nheaders; i++)
        if (strcasecmp(res->headers[i].name, name) == 0)
            return res->headers[i].value;
    return "";
}

/* ---- public ---- */

th_err th_http_new(struct th_loop *loop, int max_in_flight, struct th_http **out)
{
    struct th_http *h = calloc(1, sizeof *h);
    if (!h)
        return TH_E_NOMEM;
    h->loop = loop;
    h->max_in_flight = max_in_flight > 0 ? max_in_flight : 1;
    h->multi = curl_multi_init();
    if (!h->multi) {
        free(h);
        return TH_E_NOMEM;
    }
    curl_multi_setopt(h->multi, CURLMOPT_SOCKETFUNCTION, on_socket);
    curl_multi_setopt(h->multi, CURLMOPT_SOCKETDATA, h);
    curl_multi_setopt(h->multi, CURLMOPT_TIMERFUNCTION, on_curl_timer);
    curl_multi_setopt(h->multi, CURLMOPT_TIMERDATA, h);
    curl_multi_setopt(h->multi, CURLMOPT_PIPELINING, (long)CURLPIPE_MULTIPLEX);
    /* Keep as many connections as transfers may run: below that, a busy loop closes a
     * connection at each completion and opens (and, with TLS, handshakes) a new one. */
    curl_multi_setopt(h->multi, CURLMOPT_MAXCONNECTS, (long)h->max_in_flight);
    *out = h;
    return TH_E_OK;
}

void th_http_free(struct th_http *h)
{
    if (!h)
        return;
    while (h->active) {
        struct xfer *x = h->active;
        curl_multi_remove_handle(h->multi, x->easy);
        complete(h, x, TH_HTTP_ABORTED, "shutting down");
    }
    th_loop_timer_cancel(h->loop, &h->timer);
    while (h->spare) {
        struct xfer *x = h->spare;
        h->spare = x->next;
        curl_easy_cleanup(x->easy);
        th_buf_release(&x->body);
        free(x);
    }
    curl_multi_cleanup(h->multi);         /* closes the connections: on_close frees their socks */
    for (size_t i = 0; i < h->nbyfd; i++) /* none should be left */
        if (h->byfd[i])
            sock_free(h, h->byfd[i]);
    free(h->byfd);
    th_loop_timer_cancel(h->loop, &h->timer);
    free(h);
}

int th_http_in_flight(const struct th_http *h)
{
    return h->in_flight;
}

static struct xfer *take_xfer(struct th_http *h)
{
    struct xfer *x = h->spare;
    if (x) { /* options are all set again below or never change: no curl_easy_reset */
        h->spare = x->next;
        x->next = NULL;
        return x;
    }
    x = calloc(1, sizeof *x);
    if (!x)
        return NULL;
    x->h = h;
    x->easy = curl_easy_init();
    if (!x->easy) {
        free(x);
        return NULL;
    }
    th_buf_init(&x->body, DEFAULT_MAX_RESPONSE);
    /* what never changes between transfers, set once per handle */
    CURL *e = x->easy;
    curl_easy_setopt(e, CURLOPT_PRIVATE, (char *)x);
    curl_easy_setopt(e, CURLOPT_NOSIGNAL, 1L);
    curl_easy_setopt(e, CURLOPT_PROTOCOLS_STR, "http,https");
    curl_easy_setopt(e, CURLOPT_HTTP_VERSION, (long)CURL_HTTP_VERSION_2TLS);
    curl_easy_setopt(e, CURLOPT_TCP_KEEPALIVE, 1L);
    curl_easy_setopt(e, CURLOPT_USERAGENT, "telehook/" TH_VERSION);
    curl_easy_setopt(e, CURLOPT_WRITEFUNCTION, on_body);
    curl_easy_setopt(e, CURLOPT_WRITEDATA, x);
    curl_easy_setopt(e, CURLOPT_HEADERFUNCTION, on_header);
    curl_easy_setopt(e, CURLOPT_HEADERDATA, x);
    curl_easy_setopt(e, CURLOPT_ERRORBUFFER, x->errbuf);
    curl_easy_setopt(e, CURLOPT_OPENSOCKETFUNCTION, on_open);
    curl_easy_setopt(e, CURLOPT_OPENSOCKETDATA, h);
    curl_easy_setopt(e, CURLOPT_CLOSESOCKETFUNCTION, on_close);
    curl_easy_setopt(e, CURLOPT_CLOSESOCKETDATA, h);
    /* Provider answers are small (a few hundred bytes; Twilio's about 1 KiB): curl's least
     * buffer instead of its 16 KiB keeps 1,000 transfers in flight 15 MiB lighter (4 KiB → 1 KiB:
     * 2.7 MiB in bench/run's scenario c); a longer answer costs a read more per KiB. */
    curl_easy_setopt(e, CURLOPT_BUFFERSIZE, (long)TH_HTTP_RECV_BUFFER);
    /* Over TLS, curl 7.88 copies a request it sends into the handle's upload buffer (64 KiB by
     * default, allocated on the first send and kept with the handle): its least, 16 KiB, holds
     * every request we make (a few KiB) at a quarter of the memory per transfer in flight. */
    curl_easy_setopt(e, CURLOPT_UPLOAD_BUFFERSIZE, 16384L);
    th_trust_apply(e, NULL);
    return x;
}

th_err th_http_start(struct th_http *h, const struct th_http_request *req, th_http_done_fn done,
                     void *ud)
{
    if (!req->url || !req->method || !done)
        return TH_E_INVAL;
    if (h->in_flight >= h->max_in_flight)
        return TH_E_OVERLOAD;
    struct xfer *x = take_xfer(h);
    if (!x)
        return TH_E_NOMEM;
    x->done = done;
    x->ud = ud;
    x->toobig = false;
    x->errbuf[0] = '\0';
    x->max_response = req->max_response ? req->max_response : DEFAULT_MAX_RESPONSE;
    x->body.max = x->max_response;

    if (req->nheaders > TH_HTTP_MAX_HEADERS || req->ncapture > TH_HTTP_MAX_CAPTURE) {
        recycle(h, x);
        return TH_E_INVAL;
    }
    x->ncapture = req->ncapture;
    for (size_t i = 0; i < req->ncapture; i++) {
        x->capture_value[i][0] = '\0';
        x->captured[i] = (struct th_http_header){req->capture[i], x->capture_value[i]};
    }
    /* "Expect:" off: never wait a round trip for 100 Continue on the hot path. */
    x->hdr[0].data = (char *)"Expect:";
    for (size_t i = 0; i < req->nheaders; i++)
        x->hdr[i + 1].data = (char *)req->headers[i];
    for (size_t i = 0; i <= req->nheaders; i++)
        x->hdr[i].next = i < req->nheaders ? &x->hdr[i + 1] : NULL;

    CURL *e = x->easy;
    long timeout = req->timeout_ms > 0 ? (long)req->timeout_ms : 1;
    curl_easy_setopt(e, CURLOPT_URL, req->url);
    curl_easy_setopt(e, CURLOPT_TIMEOUT_MS, timeout);
    curl_easy_setopt(e, CURLOPT_CONNECTTIMEOUT_MS, timeout);
    /* Over TLS, wait for a connection being set up rather than open another: ALPN may give
     * HTTP/2, and then one connection carries every transfer. Over plain HTTP (HTTP/1.1)
     * waiting would serialise a burst behind the first answer. */
    curl_easy_setopt(e, CURLOPT_PIPEWAIT, strncasecmp(req->url, "https:", 6) == 0 ? 1L : 0L);
    if (x->ca_file != req->ca_file) { /* a pointer per provider: set again only on a change */
        th_trust_apply(e, req->ca_file);
        x->ca_file = req->ca_file;
    }
    curl_easy_setopt(e, CURLOPT_HTTPHEADER, x->hdr);
    curl_easy_setopt(e, CURLOPT_HTTPAUTH, (long)(req->userpwd ? CURLAUTH_BASIC : CURLAUTH_NONE));
    curl_easy_setopt(e, CURLOPT_USERPWD, req->userpwd);
    if (strcmp(req->method, "GET") == 0) {
        curl_easy_setopt(e, CURLOPT_HTTPGET, 1L);
        curl_easy_setopt(e, CURLOPT_CUSTOMREQUEST, NULL);
    } else {
        curl_easy_setopt(e, CURLOPT_POSTFIELDS, req->body ? req->body : "");
        curl_easy_setopt(e, CURLOPT_POSTFIELDSIZE_LARGE, (curl_off_t)req->body_len);
        curl_easy_setopt(e, CURLOPT_CUSTOMREQUEST,
                         strcmp(req->method, "POST") != 0 ? req->method : NULL);
    }
    x->started_us = th_mono_us();
    if (curl_multi_add_handle(h->multi, e) != CURLM_OK) {
        recycle(h, x);
        return TH_E_NOMEM;
    }
    x->next = h->active;
    x->prev = NULL;
    if (h->active)
        h->active->prev = x;
    h->active = x;
    h->in_flight++;
    return TH_E_OK;
}
