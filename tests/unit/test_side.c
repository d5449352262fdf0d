/*
 * Unit tests: http side routes (th_server_deps.side) on a real server on a loopback port: the
 * checks before the body (method, media type, length, the hook's authentication) counted as the
 * hook's, the handler called once with the path and query and the body, and an answer given
 * later (the connection suspended meanwhile), also to a client that has hung up.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <arpa/inet.h>
#include <netinet/in.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <unistd.h>

#include "auth/auth.h"
#include "common/util.h"
#include "config/config.h"
#include "http/server.h"
#include "loop/loop.h"

#define SECRET "side-route-secret-0123456789"

static atomic_int handled, answered;
static char seen_pq[256], seen_body[64], seen_method[8];

struct later {
    struct th_side_req *req;
    struct th_timer timer;
};
static struct later pending[4];
static atomic_int npending;

static void answer_later(void *ud)
{
    struct later *l = ud;
    th_side_answer(l->req, 202, "text/plain", "later", 5);
    atomic_fetch_add(&answered, 1);
}

/* On the loop: notes the call, answers 50 ms later from a timer. */
static void handle(void *ud, const struct th_side_call *c)
{
    (void)ud;
    atomic_fetch_add(&handled, 1);
    snprintf(seen_pq, sizeof seen_pq, "%s", c->path_query);
    snprintf(seen_body, sizeof seen_body, "%.*s", (int)c->len, c->body);
    snprintf(seen_method, sizeof seen_method, "%s", c->method);
    struct later *l = &pending[atomic_fetch_add(&npending, 1) % 4];
    l->req = c->req;
    th_loop_timer_set(c->loop, &l->timer, th_loop_now_us(c->loop) + 50000, answer_later, l);
}

static const char *const text_only[] = {"text/plain", NULL};
static const struct th_side_route route = {
    .path = "/later",
    .methods = TH_SIDE_POST,
    .max_body = 64,
    .media = text_only,
    .auth = TH_SIDE_AUTH_HOOK,
    .handle = handle,
};

static int port;

/* Sends req, reads the whole answer (the server closes: Connection: close) into out. */
static void exchange(const char *req, char *out, size_t cap, bool hang_up)
{
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons((uint16_t)port)};
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    struct timeval tv = {5, 0};
    setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
    assert_int_equal(connect(fd, (struct sockaddr *)&a, sizeof a), 0);
    assert_int_equal(send(fd, req, strlen(req), 0), (ssize_t)strlen(req));
    size_t n = 0;
    if (!hang_up) {
        ssize_t r;
        while (n + 1 < cap && (r = recv(fd, out + n, cap - 1 - n, 0)) > 0)
            n += (size_t)r;
    }
    out[n] = '\0';
    close(fd);
}

static void test_side_route(void **state)
{
    (void)state;
    char *const *env = (char *const *)(const char *[]){
        "TELEHOOK_SERVER_LISTEN=127.0.0.1:0",  "TELEHOOK_SERVER_THREADS=1",
        "TELEHOOK_AUTH_MODE=header",           "TELEHOOK_AUTH_HEADER_NAME=x-key",
        "TELEHOOK_AUTH_HEADER_SECRET=" SECRET, NULL};
    struct th_config cfg;
    char err[512];
    assert_int_equal(th_config_load(&cfg, NULL, env, err, sizeof err), TH_E_OK);
    struct th_auth *auth = NULL;
    assert_int_equal(th_auth_new(&cfg, &auth, err, sizeof err), TH_E_OK);
    struct th_server_deps d = {.cfg = &cfg, .auth = auth, .side = &route, .nside = 1};
    struct th_server *srv = NULL;
    assert_int_equal(th_server_start(&d, &srv, err, sizeof err), TH_E_OK);
    port = th_server_port(srv);
    char out[2048];

    /* refused before the handler: method, media type, length, credentials */
    exchange("GET /later HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n", out, sizeof out, false);
    assert_non_null(strstr(out, "HTTP/1.1 405"));
    assert_non_null(strstr(out, "Allow: POST"));
    exchange("POST /later HTTP/1.1\r\nHost: x\r\nConnection: close\r\nx-key: " SECRET
             "\r\nContent-Type: application/json\r\nContent-Length: 2\r\n\r\n{}",
             out, sizeof out, false);
    assert_non_null(strstr(out, "HTTP/1.1 415"));
    exchange("POST /later HTTP/1.1\r\nHost: x\r\nConnection: close\r\nx-key: " SECRET
             "\r\nContent-Type: text/plain\r\nContent-Length: 65\r\n\r\n",
             out, sizeof out, false);
    assert_non_null(strstr(out, "HTTP/1.1 413"));
    exchange("POST /later HTTP/1.1\r\nHost: x\r\nConnection: close\r\nx-key: nope\r\n"
             "Content-Type: text/plain\r\nContent-Length: 5\r\n\r\nhello",
             out, sizeof out, false);
    assert_non_null(strstr(out, "HTTP/1.1 401"));
    assert_int_equal(atomic_load(&handled), 0);

    /* served: the handler once, the answer 50 ms later through the suspended connection */
    int64_t t0 = th_mono_us();
    exchange("POST /later?b=2&a=x%20y HTTP/1.1\r\nHost: x\r\nConnection: close\r\nx-key: " SECRET
             "\r\nContent-Type: text/plain; charset=utf-8\r\nContent-Length: 5\r\n\r\nhello",
             out, sizeof out, false);
    assert_true(th_mono_us() - t0 >= 45000);
    assert_non_null(strstr(out, "HTTP/1.1 202"));
    assert_non_null(strstr(out, "Content-Type: text/plain"));
    assert_non_null(strstr(out, "\r\n\r\nlater"));
    assert_int_equal(atomic_load(&handled), 1);
    assert_int_equal(atomic_load(&answered), 1);
    assert_string_equal(seen_method, "POST");
    assert_string_equal(seen_pq, "/later?b=2&a=x%20y");
    assert_string_equal(seen_body, "hello");

    /* a client that hangs up before the answer: answered into the void, nothing leaks */
    exchange("POST /later HTTP/1.1\r\nHost: x\r\nx-key: " SECRET
             "\r\nContent-Type: text/plain\r\nContent-Length: 2\r\n\r\nhi",
             out, sizeof out, true);
    for (int i = 0; i < 300 && atomic_load(&answered) < 2; i++)
        usleep(10000);
    assert_int_equal(atomic_load(&handled), 2);
    assert_int_equal(atomic_load(&answered), 2);
    usleep(50000);
    th_server_stop(srv);
    th_auth_free(auth);
    th_config_release(&cfg);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_side_route),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
