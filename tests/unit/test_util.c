/* Unit tests: common/util (HOST:PORT, the one parser of server.listen's form), common/retired. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <string.h>

#include "common/retired.h"
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

static int freed[16];

static void count_free(void *p)
{
    freed[(int *)p - (int *)freed]++; /* items are addresses inside freed[] itself */
}

/* Every retired item is freed exactly once at release, except the one still owned elsewhere. */
static void test_retired(void **state)
{
    (void)state;
    memset(freed, 0, sizeof freed);
    struct th_retired r;
    th_retired_init(&r, count_free);
    for (int i = 0; i < 12; i++) { /* past the first growth */
        assert_int_equal(th_retired_reserve(&r), TH_E_OK);
        th_retired_add(&r, &freed[i]);
    }
    assert_int_equal(th_retired_reserve(&r), TH_E_OK);
    th_retired_add(&r, NULL); /* nothing was swapped out: nothing kept */
    assert_int_equal(r.n, 12);
    th_retired_release(&r, &freed[3]);
    for (int i = 0; i < 16; i++)
        assert_int_equal(freed[i], i < 12 && i != 3 ? 1 : 0);
    assert_null(r.items);
    th_retired_release(&r, NULL); /* twice: nothing more */
    assert_int_equal(freed[0], 1);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_hostport_ok),
        cmocka_unit_test(test_hostport_bad),
        cmocka_unit_test(test_retired),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
