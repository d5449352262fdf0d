/*
 * Unit tests: net/http (the per-loop libcurl multi). A tiny blocking HTTP server on a
 * loopback port, in a thread of the test, answers according to the request path:
 *   /ok        200 with a JSON body          /big     200 with a 100 KiB body
 *   /slow      200 after 500 ms              /garbage a line that is not HTTP, then close
 *   /close     close without answering       /err     400 with X-Amzn-Errortype
 *   /long      200, headers and body each several times the receive buffer (TH_HTTP_RECV_BUFFER)
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <arpa/inet.h>
#include <netinet/in.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "common/util.h"
#include "net/http.h"
#include "loop/loop.h"

static int listen_fd = -1;
static int port;
static pthread_t server_thread;
static atomic_int requests_seen;

static void answer(int c, const char *path)
{
    char out[512];
    if (strcmp(path, "/ok") == 0 || strcmp(path, "/ok-then-close") == 0) {
        const char *b = "{\"MessageId\":\"m-1\"}";
        int n = snprintf(out, sizeof out,
                         "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n"
                         "Content-Length: %zu\r\n\r\n%s",
                         strlen(b), b);
        (void)!write(c, out, (size_t)n);
    } else if (strcmp(path, "/err") == 0) {
        const char *b = "{\"Message\":\"no\"}";
        int n = snprintf(out, sizeof out,
                         "HTTP/1.1 400 Bad Request\r\nX-Amzn-Errortype: "
                         "ThrottlingException:http://internal.amazon.com/\r\n"
                         "Content-Length: %zu\r\n\r\n%s",
                         strlen(b), b);
        (void)!write(c, out, (size_t)n);
    } else if (strcmp(path, "/big") == 0) {
        size_t len = 100 * 1024;
        int n = snprintf(out, sizeof out, "HTTP/1.1 200 OK\r\nContent-Length: %zu\r\n\r\n", len);
        (void)!write(c, out, (size_t)n);
        char *b = malloc(len);
        memset(b, 'x', len);
        (void)!write(c, b, len);
        free(b);
    } else if (strcmp(path, "/long") == 0) {
        /* a long header before the captured one, and a body of numbered lines: whole only if
         * every read of the buffer was appended in order */
        size_t hl = 3 * TH_HTTP_RECV_BUFFER, bl = 5 * TH_HTTP_RECV_BUFFER + 7;
        char *b = malloc(hl + bl + 256);
        int n = snprintf(b, 256, "HTTP/1.1 200 OK\r\nContent-Length: %zu\r\nX-Pad: ", bl);
        memset(b + n, 'p', hl);
        n += (int)hl;
        n += snprintf(b + n, 256, "\r\nX-Amzn-Errortype: after-the-pad\r\n\r\n");
        for (size_t i = 0; i < bl; i++)
            b[n + i] = (char)('a' + (i / 10) % 26);
        (void)!write(c, b, (size_t)n + bl);
        free(b);
    } else if (strcmp(path, "/slow") == 0) {
        usleep(500 * 1000);
        (void)!write(c, "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\n{}", 40);
    } else if (strcmp(path, "/garbage") == 0) {
        (void)!write(c, "NOT HTTP AT ALL\r\n\r\n", 19);
    }
}

/* One connection: requests until the client closes (keep-alive is exercised). */
static void *serve_conn(void *arg)
{
    int c = (int)(intptr_t)arg;
    char buf[8192];
    size_t have = 0;
    for (;;) {
        ssize_t r = read(c, buf + have, sizeof buf - 1 - have);
        if (r <= 0)
            break;
        have += (size_t)r;
        buf[have] = '\0';
        char *end = strstr(buf, "\r\n\r\n");
        if (!end)
            continue;
        size_t clen = 0;
        char *cl = strcasestr(buf, "content-length:");
        if (cl && cl < end)
            clen = (size_t)strtoul(cl + 15, NULL, 10);
        size_t need = (size_t)(end + 4 - buf) + clen;
        if (have < need)
            continue;
        char path[64] = "";
        sscanf(buf, "%*s %63s", path);
        atomic_fetch_add(&requests_seen, 1);
        answer(c, path);
        if (strcmp(path, "/close") == 0 || strcmp(path, "/garbage") == 0)
            break;
        if (strcmp(path, "/ok-then-close") == 0) { /* keep-alive answer, then hang up */
            usleep(50 * 1000);
            break;
        }
        memmove(buf, buf + need, have - need);
        have -= need;
    }
    close(c);
    return NULL;
}

static void *serve(void *arg)
{
    (void)arg;
    for (;;) {
        int c = accept(listen_fd, NULL, NULL);
        if (c < 0)
            return NULL;
        pthread_t t;
        pthread_create(&t, NULL, serve_conn, (void *)(intptr_t)c);
        pthread_detach(t);
    }
}

static int setup(void **state)
{
    (void)state;
    th_http_global_init();
    listen_fd = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    if (bind(listen_fd, (struct sockaddr *)&a, sizeof a) || listen(listen_fd, 64))
        return -1;
    socklen_t len = sizeof a;
    getsockname(listen_fd, (struct sockaddr *)&a, &len);
    port = ntohs(a.sin_port);
    return pthread_create(&server_thread, NULL, serve, NULL);
}

static int teardown(void **state)
{
    (void)state;
    shutdown(listen_fd, SHUT_RDWR);
    close(listen_fd);
    pthread_join(server_thread, NULL);
    th_http_global_cleanup();
    return 0;
}

struct result {
    struct th_loop *loop;
    int pending;
    th_http_outcome outcome[8];
    long status[8];
    char body[8][64];
    size_t len[8];
    bool body_ok[8]; /* every byte as /long sends it */
    char error_type[8][96];
    char absent[8][96]; /* a header asked for that the response lacks, and one not asked for */
    int64_t elapsed_us[8];
    int n;
};

static void on_done(void *ud, const struct th_http_response *res)
{
    struct result *r = ud;
    int i = r->n++;
    r->outcome[i] = res->outcome;
    r->status[i] = res->status;
    snprintf(r->body[i], sizeof r->body[i], "%.*s", (int)(res->len < 63 ? res->len : 63),
             res->body);
    snprintf(r->error_type[i], sizeof r->error_type[i], "%s",
             th_http_response_header(res, "X-Amzn-Errortype"));
    snprintf(r->absent[i], sizeof r->absent[i], "%s%s", th_http_response_header(res, "X-Absent"),
             th_http_response_header(res, "Content-Type"));
    r->elapsed_us[i] = res->elapsed_us;
    r->len[i] = res->len;
    r->body_ok[i] = true;
    for (size_t k = 0; k < res->len; k++)
        if (res->body[k] != (char)('a' + (k / 10) % 26))
            r->body_ok[i] = false;
    if (--r->pending == 0)
        th_loop_stop(r->loop);
}

static void run_one(const char *path, int64_t timeout_ms, struct result *r)
{
    struct th_loop *loop;
    struct th_http *h;
    assert_int_equal(th_loop_new(&loop), TH_E_OK);
    assert_int_equal(th_http_new(loop, 4, &h), TH_E_OK);
    char url[128];
    snprintf(url, sizeof url, "http://127.0.0.1:%d%s", port, path);
    const char *hdrs[] = {"Content-Type: application/json", "X-Test: 1"};
    static const char *const capture[] = {"X-Amzn-Errortype", "X-Absent"};
    struct th_http_request req = {.method = "POST",
                                  .url = url,
                                  .headers = hdrs,
                                  .nheaders = 2,
                                  .body = "{}",
                                  .body_len = 2,
                                  .timeout_ms = timeout_ms,
                                  .capture = capture,
                                  .ncapture = 2};
    memset(r, 0, sizeof *r);
    r->loop = loop;
    r->pending = 1;
    assert_int_equal(th_http_start(h, &req, on_done, r), TH_E_OK);
    assert_int_equal(r->n, 0); /* never completes inside start */
    th_loop_run(loop);
    th_http_free(h);
    th_loop_free(loop);
    assert_int_equal(r->n, 1);
}

static void test_ok(void **state)
{
    (void)state;
    struct result r;
    run_one("/ok", 2000, &r);
    assert_int_equal(r.outcome[0], TH_HTTP_DONE);
    assert_int_equal(r.status[0], 200);
    assert_string_equal(r.body[0], "{\"MessageId\":\"m-1\"}");
    assert_string_equal(r.error_type[0], "");
}

static void test_error_type_header(void **state)
{
    (void)state;
    struct result r;
    run_one("/err", 2000, &r);
    assert_int_equal(r.outcome[0], TH_HTTP_DONE);
    assert_int_equal(r.status[0], 400);
    assert_string_equal(r.error_type[0], "ThrottlingException:http://internal.amazon.com/");
    assert_string_equal(r.absent[0], "");
}

static void test_timeout(void **state)
{
    (void)state;
    struct result r;
    run_one("/slow", 100, &r);
    assert_int_equal(r.outcome[0], TH_HTTP_TIMEOUT);
    assert_true(r.elapsed_us[0] < 450 * 1000); /* the transfer did not wait for the answer */
}

static void test_too_big(void **state)
{
    (void)state;
    struct result r;
    run_one("/big", 2000, &r);
    assert_int_equal(r.outcome[0], TH_HTTP_TOOBIG);
}

/* The receive buffer is curl's least (memory per transfer in flight): an answer several times
 * longer, headers and body, still arrives whole and in order. */
static void test_answer_longer_than_buffer(void **state)
{
    (void)state;
    struct result r;
    run_one("/long", 2000, &r);
    assert_int_equal(r.outcome[0], TH_HTTP_DONE);
    assert_int_equal(r.status[0], 200);
    assert_int_equal(r.len[0], 5 * TH_HTTP_RECV_BUFFER + 7);
    assert_true(r.body_ok[0]);
    assert_string_equal(r.error_type[0], "after-the-pad");
}

static void test_garbage_and_close(void **state)
{
    (void)state;
    struct result r;
    run_one("/garbage", 2000, &r);
    assert_int_equal(r.outcome[0], TH_HTTP_IO);
    run_one("/close", 2000, &r);
    assert_int_equal(r.outcome[0], TH_HTTP_IO);
}

static void test_refused(void **state)
{
    (void)state;
    /* a port nobody listens on: bind one, note it, close it */
    int s = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    bind(s, (struct sockaddr *)&a, sizeof a);
    socklen_t len = sizeof a;
    getsockname(s, (struct sockaddr *)&a, &len);
    int dead = ntohs(a.sin_port);
    close(s);

    struct th_loop *loop;
    struct th_http *h;
    assert_int_equal(th_loop_new(&loop), TH_E_OK);
    assert_int_equal(th_http_new(loop, 4, &h), TH_E_OK);
    char url[64];
    snprintf(url, sizeof url, "http://127.0.0.1:%d/ok", dead);
    struct th_http_request req = {.method = "GET", .url = url, .timeout_ms = 1000};
    struct result r = {.loop = loop, .pending = 1};
    assert_int_equal(th_http_start(h, &req, on_done, &r), TH_E_OK);
    th_loop_run(loop);
    th_http_free(h);
    th_loop_free(loop);
    assert_int_equal(r.outcome[0], TH_HTTP_CONNECT);
}

/* Several transfers on one loop; a bound on in-flight transfers; keep-alive reuse. */
static void test_concurrent_bound_and_reuse(void **state)
{
    (void)state;
    struct th_loop *loop;
    struct th_http *h;
    assert_int_equal(th_loop_new(&loop), TH_E_OK);
    assert_int_equal(th_http_new(loop, 3, &h), TH_E_OK);
    char url[64];
    snprintf(url, sizeof url, "http://127.0.0.1:%d/ok", port);
    struct th_http_request req = {.method = "GET", .url = url, .timeout_ms = 2000};
    struct result r = {.loop = loop, .pending = 3};
    for (int i = 0; i < 3; i++)
        assert_int_equal(th_http_start(h, &req, on_done, &r), TH_E_OK);
    assert_int_equal(th_http_in_flight(h), 3);
    assert_int_equal(th_http_start(h, &req, on_done, &r), TH_E_OVERLOAD);
    th_loop_run(loop);
    assert_int_equal(r.n, 3);
    for (int i = 0; i < 3; i++)
        assert_int_equal(r.status[i], 200);
    assert_int_equal(th_http_in_flight(h), 0);
    th_http_free(h);
    th_loop_free(loop);
}

/*
 * Between transfers a connection stays registered for reading (parked). When the server hangs up
 * on it, the loop must not spin on the readable EOF, and the next transfer must still work.
 */
struct park {
    struct th_loop *loop;
    struct th_http *h;
    struct th_timer t;
    struct result r;
    struct th_http_request req;
    long idles, idles_at_wait;
    char url[64];
};

static void count_idle(void *ud)
{
    ((struct park *)ud)->idles++;
}

static void park_second(void *ud)
{
    struct park *p = ud;
    p->idles_at_wait = p->idles;
    snprintf(p->url, sizeof p->url, "http://127.0.0.1:%d/ok", port);
    p->r.pending = 1;
    assert_int_equal(th_http_start(p->h, &p->req, on_done, &p->r), TH_E_OK);
}

static void park_first_done(void *ud, const struct th_http_response *res)
{
    struct park *p = ud;
    assert_int_equal(res->status, 200);
    p->idles = 0;
    /* the server hangs up 50 ms after answering; look again 300 ms later */
    th_loop_timer_set(p->loop, &p->t, th_mono_us() + 300 * 1000, park_second, p);
}

static void test_parked_connection_hung_up(void **state)
{
    (void)state;
    struct park p = {0};
    assert_int_equal(th_loop_new(&p.loop), TH_E_OK);
    assert_int_equal(th_http_new(p.loop, 4, &p.h), TH_E_OK);
    th_loop_set_idle(p.loop, count_idle, &p);
    snprintf(p.url, sizeof p.url, "http://127.0.0.1:%d/ok-then-close", port);
    p.req = (struct th_http_request){.method = "GET", .url = p.url, .timeout_ms = 2000};
    p.r.loop = p.loop;
    int before = atomic_load(&requests_seen);
    assert_int_equal(th_http_start(p.h, &p.req, park_first_done, &p), TH_E_OK);
    th_loop_run(p.loop);
    assert_int_equal(p.r.n, 1); /* the second transfer, on a new connection */
    assert_int_equal(p.r.outcome[0], TH_HTTP_DONE);
    assert_int_equal(p.r.status[0], 200);
    assert_int_equal(atomic_load(&requests_seen) - before, 2);
    /* waiting 300 ms took a handful of loop passes, not a spin on the closed socket */
    assert_true(p.idles_at_wait < 20);
    th_http_free(p.h);
    th_loop_free(p.loop);
}

/* A cold burst opens connections in parallel: two 500 ms answers take ~500 ms, not 1 s. */
static void test_cold_burst_is_parallel(void **state)
{
    (void)state;
    struct th_loop *loop;
    struct th_http *h;
    assert_int_equal(th_loop_new(&loop), TH_E_OK);
    assert_int_equal(th_http_new(loop, 4, &h), TH_E_OK);
    char url[64];
    snprintf(url, sizeof url, "http://127.0.0.1:%d/slow", port);
    struct th_http_request req = {.method = "GET", .url = url, .timeout_ms = 2000};
    struct result r = {.loop = loop, .pending = 2};
    int64_t t0 = th_mono_us();
    assert_int_equal(th_http_start(h, &req, on_done, &r), TH_E_OK);
    assert_int_equal(th_http_start(h, &req, on_done, &r), TH_E_OK);
    th_loop_run(loop);
    int64_t took = th_mono_us() - t0;
    assert_int_equal(r.status[0], 200);
    assert_int_equal(r.status[1], 200);
    assert_true(took < 900 * 1000); /* serialised would be >= 1000 ms */
    th_http_free(h);
    th_loop_free(loop);
}

/* Freeing the client with a transfer running completes it as aborted. */
static void test_abort_on_free(void **state)
{
    (void)state;
    struct th_loop *loop;
    struct th_http *h;
    assert_int_equal(th_loop_new(&loop), TH_E_OK);
    assert_int_equal(th_http_new(loop, 3, &h), TH_E_OK);
    char url[64];
    snprintf(url, sizeof url, "http://127.0.0.1:%d/slow", port);
    struct th_http_request req = {.method = "GET", .url = url, .timeout_ms = 2000};
    struct result r = {.loop = loop, .pending = 1};
    assert_int_equal(th_http_start(h, &req, on_done, &r), TH_E_OK);
    th_http_free(h);
    assert_int_equal(r.n, 1);
    assert_int_equal(r.outcome[0], TH_HTTP_ABORTED);
    th_loop_free(loop);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_ok),
        cmocka_unit_test(test_error_type_header),
        cmocka_unit_test(test_timeout),
        cmocka_unit_test(test_too_big),
        cmocka_unit_test(test_answer_longer_than_buffer),
        cmocka_unit_test(test_garbage_and_close),
        cmocka_unit_test(test_refused),
        cmocka_unit_test(test_concurrent_bound_and_reuse),
        cmocka_unit_test(test_cold_burst_is_parallel),
        cmocka_unit_test(test_parked_connection_hung_up),
        cmocka_unit_test(test_abort_on_free),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
