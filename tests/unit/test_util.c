/* Unit tests: common/util (HOST:PORT, the one parser of server.listen's form). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <string.h>

#include "common/util.h"

static void test_hostport_ok(void **state)
{
    (void)state;
    const struct {
        const char *in, *host;
        int port;
    } ok[] = {
        {"127.0.0.1:8080", "127.0.0.1", 8080},
        {"[::1]:9000", "::1", 9000},
        {"[::]:443", "::", 443},
        {"localhost:0", "localhost", 0},
        {"0.0.0.0:65535", "0.0.0.0", 65535},
        {"*:80", "*", 80},
        {":8080", "", 8080}, /* every address (config refuses it, the server takes it) */
        {"example.com:00443", "example.com", 443},
    };
    for (size_t i = 0; i < TH_ARRAY_LEN(ok); i++) {
        char host[64] = "x";
        int port = -1;
        assert_int_equal(th_hostport_parse(ok[i].in, host, sizeof host, &port), TH_E_OK);
        assert_string_equal(host, ok[i].host);
        assert_int_equal(port, ok[i].port);
    }
    char host[64];
    assert_int_equal(th_hostport_parse("[fe80::1]:1", host, sizeof host, NULL), TH_E_OK);
    assert_string_equal(host, "fe80::1");
}

static void test_hostport_bad(void **state)
{
    (void)state;
    const char *bad[] = {
        "",         "127.0.0.1", "127.0.0.1:", "127.0.0.1:http", "127.0.0.1:65536", "host:123456",
        "::1:80",   "[::1]",     "[::1]80",    "[]:80",          "[::1:80",         "host:-1",
        "host:+80", "host: 80",  "host:8080x",
    };
    for (size_t i = 0; i < TH_ARRAY_LEN(bad); i++) {
        char host[64];
        int port = -1;
        assert_int_equal(th_hostport_parse(bad[i], host, sizeof host, &port), TH_E_INVAL);
        assert_int_equal(port, -1); /* untouched */
    }
    /* a host that does not fit is refused, not cut */
    char small[4];
    assert_int_equal(th_hostport_parse("abcd:80", small, sizeof small, NULL), TH_E_INVAL);
    assert_int_equal(th_hostport_parse("abc:80", small, sizeof small, NULL), TH_E_OK);
    assert_string_equal(small, "abc");
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_hostport_ok),
        cmocka_unit_test(test_hostport_bad),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
