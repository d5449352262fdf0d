/*
 * Unit tests: http/framing (RFC 9112 request framing), on header sections split the way
 * libmicrohttpd 0.9 splits them (mhd_split.h).
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "http/internal.h"
#include "mhd_split.h"

#define GET "GET /healthz HTTP/1.1\r\nHost: x\r\n"

/* The status for a raw header section (len bytes, NULs allowed): 0 when it may be served. */
static int verdict_n(const char *raw, size_t len)
{
    static struct mhd_split s;
    char *buf = malloc(len);
    assert_non_null(buf);
    memcpy(buf, raw, len);
    if (!mhd_split(buf, len, &s))
        fail_msg("libmicrohttpd would refuse this itself: %.*s", (int)len, raw);
    int status = 0;
    const char *why = mhd_split_check(&s, &status);
    assert_true(why == NULL || status == 400 || status == 501);
    free(buf);
    return why ? status : 0;
}

static int verdict(const char *raw)
{
    return verdict_n(raw, strlen(raw));
}

/* sizeof on a literal counts its NUL: the literal's bytes, NULs inside included */
#define VERDICT_BIN(lit) verdict_n(lit, sizeof lit - 1)

static void test_plain_requests_pass(void **state)
{
    (void)state;
    assert_int_equal(verdict(GET "\r\n"), 0);
    assert_int_equal(verdict("GET /healthz HTTP/1.0\r\n\r\n"), 0); /* HTTP/1.0: Host optional */
    assert_int_equal(verdict("POST /v1/okta/telephony HTTP/1.1\r\nHost: a.example:8443\r\n"
                             "Content-Type: application/json\r\nContent-Length: 2\r\n"
                             "Authorization: Bearer x.y.z\r\nX-Empty:\r\nX-Tab:\tv\r\n"
                             "X-Many:    v\r\nX-Trailing: v  \r\nX-Obs-Text: caf\xc3\xa9\r\n"
                             "Accept: */*\r\n\r\n"),
                     0);
    assert_int_equal(verdict("POST /x HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n"),
                     0);
    assert_int_equal(verdict("POST /x HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: CHUNKED\r\n\r\n"),
                     0);
    /* a field name may be any token */
    assert_int_equal(verdict(GET "X-a.b_c!#$%&'*+^`|~9: v\r\n\r\n"), 0);
}

static void test_length_and_coding(void **state)
{
    (void)state;
    /* both: a proxy framing by one and us by the other disagree on where the request ends */
    assert_int_equal(verdict(GET "Content-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n"), 400);
    assert_int_equal(verdict(GET "Transfer-Encoding: chunked\r\nContent-Length: 5\r\n\r\n"), 400);
    assert_int_equal(verdict(GET "Content-Length: 2\r\nContent-Length: 40\r\n\r\n"), 400);
    assert_int_equal(verdict(GET "Content-Length: 2\r\nContent-Length: 2\r\n\r\n"), 400);
    assert_int_equal(verdict(GET "Content-Length: 2\r\ncontent-length: 2\r\n\r\n"), 400);
    assert_int_equal(verdict(GET "Content-Length: 0\r\n\r\n"), 0);
    /* (libmicrohttpd refuses these itself when they come alone; behind a valid first one it
     * does not look at them) */
    assert_int_equal(verdict(GET "Content-Length: +2\r\n\r\n"), 400);
    assert_int_equal(verdict(GET "Content-Length: -1\r\n\r\n"), 400);
    assert_int_equal(verdict(GET "Content-Length: 2 \r\n\r\n"), 400);
    assert_int_equal(verdict(GET "Content-Length:\r\n\r\n"), 400);
    /* only exactly chunked: libmicrohttpd reads anything else until the connection closes */
    assert_int_equal(verdict(GET "Transfer-Encoding: gzip, chunked\r\n\r\n"), 501);
    assert_int_equal(verdict(GET "Transfer-Encoding: gzip,chunked\r\n\r\n"), 501);
    assert_int_equal(verdict(GET "Transfer-Encoding: chunked, chunked\r\n\r\n"), 400);
    assert_int_equal(verdict(GET "Transfer-Encoding: chunked, gzip\r\n\r\n"), 400);
    assert_int_equal(verdict(GET "Transfer-Encoding: xchunked\r\n\r\n"), 400);
    assert_int_equal(verdict(GET "Transfer-Encoding: gzip\r\n\r\n"), 400);
    assert_int_equal(verdict(GET "Transfer-Encoding: chunked \r\n\r\n"), 400);
    assert_int_equal(verdict(GET "Transfer-Encoding:\r\n\r\n"), 400);
    assert_int_equal(verdict(GET "Transfer-Encoding: gzip;q=1, chunked\r\n\r\n"), 400);
    assert_int_equal(verdict(GET "Transfer-Encoding: gzip, , chunked\r\n\r\n"), 400);
    assert_int_equal(
        verdict(GET "Transfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n\r\n"), 400);
    assert_int_equal(verdict("POST /x HTTP/1.0\r\nTransfer-Encoding: chunked\r\n\r\n"), 400);
}

static void test_host(void **state)
{
    (void)state;
    assert_int_equal(verdict("GET /healthz HTTP/1.1\r\n\r\n"), 400);
    assert_int_equal(verdict("GET /healthz HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n"), 400);
    assert_int_equal(verdict("GET /healthz HTTP/1.0\r\nHost: a\r\nHOST: a\r\n\r\n"), 400);
}

static void test_field_syntax(void **state)
{
    (void)state;
    assert_int_equal(verdict(GET "X-A : v\r\n\r\n"), 400); /* whitespace before the colon */
    assert_int_equal(verdict(GET "X-A\t: v\r\n\r\n"), 400);
    assert_int_equal(verdict(GET "Content-Length : 2\r\n\r\n"), 400);
    /* whitespace before the first field */
    assert_int_equal(verdict("GET /healthz HTTP/1.1\r\n X-A: v\r\nHost: x\r\n\r\n"), 400);
    assert_int_equal(verdict(GET ": v\r\n\r\n"), 400);
    assert_int_equal(verdict(GET "X(A): v\r\n\r\n"), 400);
    assert_int_equal(verdict(GET "X-A: a\rb\r\n\r\n"), 400); /* bare CR */
    assert_int_equal(verdict(GET "X-A: a\r\r\n\r\n"), 400);
    assert_int_equal(verdict(GET "X-A: a\x01\r\n\r\n"), 400);
    assert_int_equal(verdict(GET "X-A: a\x7f\r\n\r\n"), 400);
}

static void test_hidden_bytes(void **state)
{
    (void)state;
    /* a NUL: libmicrohttpd's value stops there, the rest of the line is invisible */
    assert_int_equal(VERDICT_BIN(GET "X-A: a\0b\r\n\r\n"), 400);
    assert_int_equal(VERDICT_BIN(GET "X-A: a\0\r\n\r\n"), 400);
    assert_int_equal(VERDICT_BIN(GET "X-A: a\0\r\nX-B: b\r\n\r\n"), 400);
    assert_int_equal(VERDICT_BIN(GET "Content-Length: 0\0 5\r\n\r\n"), 400);
    assert_int_equal(VERDICT_BIN(GET "X-A: \0Transfer-Encoding: chunked\r\n\r\n"), 400);
    assert_int_equal(VERDICT_BIN("GET /healthz HTTP/1.1\r\nHost: x\0y\r\n\r\n"), 400);
    /* line folding (obs-fold) */
    assert_int_equal(verdict(GET "X-A: a\r\n b\r\n\r\n"), 400);
    assert_int_equal(verdict(GET "X-A: a\r\n\tb\r\nX-B: c\r\n\r\n"), 400);
    /* bare LF, anywhere */
    assert_int_equal(verdict("GET /healthz HTTP/1.1\nHost: x\r\n\r\n"), 400);
    assert_int_equal(verdict(GET "X-A: a\nX-B: b\r\n\r\n"), 400);
    assert_int_equal(verdict(GET "X-A: a\r\n\n"), 400);
    assert_int_equal(verdict("GET /healthz HTTP/1.0\n\n"), 400);
    /* the one NUL the layout cannot show: right before a bare LF it looks like CR */
    assert_int_equal(VERDICT_BIN(GET "X-A: a\0\nX-B: b\r\n\r\n"), 0);
}

/* The layout walk never reads outside the section, whatever the pointers say. */
static void test_layout_bounds(void **state)
{
    (void)state;
    char sect[] = "GET / HTTP/1.1\0\0Host\0x\0\0\0\0";
    const char *end = sect + sizeof sect - 1;
    const char *line_end = sect + 14;
    struct th_framing f;
    int status;
    /* the real thing passes */
    th_framing_begin(&f, line_end, end);
    th_framing_field(&f, sect + 16, 4, sect + 21, 1);
    assert_null(th_framing_end(&f, false, &status));
    /* a value longer than what is left: refused before a byte of it is read */
    th_framing_begin(&f, line_end, end);
    th_framing_field(&f, sect + 16, 4, sect + 21, 4096);
    assert_non_null(th_framing_end(&f, false, &status));
    /* a name outside the section (moved) */
    th_framing_begin(&f, line_end, end);
    th_framing_field(&f, "Host", 4, sect + 21, 1);
    assert_non_null(th_framing_end(&f, false, &status));
    /* a section cut short: the empty line is missing */
    th_framing_begin(&f, line_end, end - 2);
    th_framing_field(&f, sect + 16, 4, sect + 21, 1);
    assert_non_null(th_framing_end(&f, false, &status));
    /* the problem found first is the one reported; later fields change nothing */
    th_framing_begin(&f, NULL, NULL);
    th_framing_field(&f, "X A", 3, "v", 1);
    th_framing_field(&f, "Host", 4, "x", 1);
    assert_string_equal(th_framing_end(&f, false, &status), "a field name that is not a token");
    assert_int_equal(status, 400);
    /* no layout (another libmicrohttpd): only the field checks */
    th_framing_begin(&f, NULL, NULL);
    th_framing_field(&f, "Host", 4, "x", 1);
    assert_null(th_framing_end(&f, false, &status));
    th_framing_begin(&f, NULL, NULL);
    th_framing_field(&f, "Host", 4, "x", 1);
    th_framing_field(&f, "Transfer-Encoding", 17, "gzip, chunked", 13);
    assert_non_null(th_framing_end(&f, false, &status));
    assert_int_equal(status, 501);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_plain_requests_pass),
        cmocka_unit_test(test_length_and_coding),
        cmocka_unit_test(test_host),
        cmocka_unit_test(test_field_syntax),
        cmocka_unit_test(test_hidden_bytes),
        cmocka_unit_test(test_layout_bounds),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
