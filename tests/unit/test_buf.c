/* Unit tests: common/buf (capped buffer, JSON escaping), common/util (ids, time, loopback). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <stdlib.h>
#include <limits.h>
#include <stdio.h>
#include <string.h>
#include <time.h>

#include "common/buf.h"
#include "common/util.h"

static void test_append_and_cap(void **state)
{
    (void)state;
    struct th_buf b;
    th_buf_init(&b, 10);
    assert_string_equal(th_buf_str(&b), "");
    assert_int_equal(th_buf_appends(&b, "hello"), TH_E_OK);
    assert_int_equal(th_buf_printf(&b, "%d", 1234), TH_E_OK);
    assert_string_equal(th_buf_str(&b), "hello1234");
    /* 2 more bytes would exceed max: refused, and the buffer is failed and empty (sticky) */
    assert_int_equal(th_buf_appends(&b, "ab"), TH_E_TOOBIG);
    assert_string_equal(th_buf_str(&b), "");
    th_buf_reset(&b);
    assert_int_equal(th_buf_appends(&b, "hello1234"), TH_E_OK);
    assert_int_equal(th_buf_appendc(&b, '!'), TH_E_OK);
    assert_int_equal(b.len, 10);
    assert_int_equal(th_buf_appendc(&b, '?'), TH_E_TOOBIG);
    th_buf_reset(&b);
    assert_int_equal(b.len, 0);
    assert_string_equal(th_buf_str(&b), "");
    th_buf_release(&b);
}

static void test_zero_max_refuses(void **state)
{
    (void)state;
    struct th_buf b;
    th_buf_init(&b, 0);
    assert_int_equal(th_buf_appends(&b, "x"), TH_E_TOOBIG);
    th_buf_reset(&b); /* the failure is sticky until then */
    assert_int_equal(th_buf_append(&b, "", 0), TH_E_OK);
    char *s = th_buf_steal(&b);
    assert_non_null(s);
    assert_string_equal(s, "");
    free(s);
}

static void test_growth_large(void **state)
{
    (void)state;
    struct th_buf b;
    th_buf_init(&b, 1 << 20);
    for (int i = 0; i < 10000; i++)
        assert_int_equal(th_buf_appends(&b, "0123456789"), TH_E_OK);
    assert_int_equal(b.len, 100000);
    assert_true(b.cap <= (1u << 20) + 1);
    char *s = th_buf_steal(&b);
    assert_int_equal(strlen(s), 100000);
    assert_null(b.data);
    free(s);
}

static void json(const char *in, size_t n, const char *want)
{
    struct th_buf b;
    th_buf_init(&b, 1024);
    assert_int_equal(th_buf_append_json(&b, in, n), TH_E_OK);
    assert_string_equal(th_buf_str(&b), want);
    th_buf_release(&b);
}

/* th_grow_to_index: doubling from 64, new elements zeroed, old ones kept */
static void test_grow_to_index(void **state)
{
    (void)state;
    void *p = NULL;
    size_t n = 0;
    assert_int_equal(th_grow_to_index(&p, &n, sizeof(int), 3), TH_E_OK);
    assert_int_equal(n, 64);
    int *a = p;
    for (size_t i = 0; i < n; i++)
        assert_int_equal(a[i], 0);
    a[63] = 7;
    assert_int_equal(th_grow_to_index(&p, &n, sizeof(int), 63), TH_E_OK); /* fits: unchanged */
    assert_int_equal(n, 64);
    assert_int_equal(th_grow_to_index(&p, &n, sizeof(int), 300), TH_E_OK);
    assert_int_equal(n, 512);
    a = p;
    assert_int_equal(a[63], 7);
    for (size_t i = 64; i < n; i++)
        assert_int_equal(a[i], 0);
    free(p);
}

/* th_buf_append_int writes what "%lld" writes, at the edges too */
static void test_append_int(void **state)
{
    (void)state;
    const long long v[] = {0, 7, -7, 10, 99, 100, -100, 1234567890123LL, LLONG_MAX, LLONG_MIN};
    for (size_t i = 0; i < sizeof v / sizeof v[0]; i++) {
        struct th_buf b;
        th_buf_init(&b, 64);
        char want[32];
        snprintf(want, sizeof want, "%lld", v[i]);
        assert_int_equal(th_buf_append_int(&b, v[i]), TH_E_OK);
        assert_string_equal(th_buf_str(&b), want);
        th_buf_release(&b);
    }
    struct th_buf small;
    th_buf_init(&small, 3); /* too big: refused, the buffer unchanged */
    assert_int_equal(th_buf_append_int(&small, 1234), TH_E_TOOBIG);
    assert_string_equal(th_buf_str(&small), "");
    th_buf_release(&small);
}

static void test_json_escape(void **state)
{
    (void)state;
    json("plain", (size_t)-1, "\"plain\"");
    json("q\"b\\s", (size_t)-1, "\"q\\\"b\\\\s\"");
    json("a\nb\tc\x01", (size_t)-1, "\"a\\u000ab\\u0009c\\u0001\"");
    json("caf\xc3\xa9 \xe2\x82\xac \xf0\x9f\x98\x80", (size_t)-1,
         "\"caf\xc3\xa9 \xe2\x82\xac \xf0\x9f\x98\x80\"");
    /* invalid UTF-8: lone continuation, overlong, surrogate, truncated → U+FFFD each */
    json("\x80", (size_t)-1, "\"\xef\xbf\xbd\"");
    json("\xc0\xaf", (size_t)-1, "\"\xef\xbf\xbd\xef\xbf\xbd\"");
    json("\xed\xa0\x80", (size_t)-1, "\"\xef\xbf\xbd\xef\xbf\xbd\xef\xbf\xbd\"");
    json("\xe2\x82", (size_t)-1, "\"\xef\xbf\xbd\xef\xbf\xbd\"");
    /* explicit length stops early, embedded NUL escaped */
    json("abc", 2, "\"ab\"");
    json("a\0b", 3, "\"a\\u0000b\"");
}

static void test_json_escape_cap_atomic(void **state)
{
    (void)state;
    struct th_buf b;
    th_buf_init(&b, 8);
    assert_int_equal(th_buf_appends(&b, "ab"), TH_E_OK);
    assert_int_equal(th_buf_append_json(&b, "0123456789", (size_t)-1), TH_E_TOOBIG);
    assert_string_equal(th_buf_str(&b), ""); /* never half a string: the buffer failed whole */
    assert_int_equal(b.len, 0);
    th_buf_release(&b);
}

/* After a failure every append is refused with the first error and changes nothing. */
static void test_sticky_error(void **state)
{
    (void)state;
    struct th_buf b;
    th_buf_init(&b, 16);
    assert_int_equal(th_buf_err(&b), TH_E_OK);
    assert_int_equal(th_buf_appends(&b, "secret-123"), TH_E_OK);
    char *mem = b.data;
    size_t was = b.len;
    assert_int_equal(th_buf_appends(&b, "0123456789"), TH_E_TOOBIG);
    assert_int_equal(th_buf_err(&b), TH_E_TOOBIG);
    assert_int_equal(b.len, 0);
    for (size_t i = 0; i < was; i++) /* wiped, not just hidden: it may have held a code */
        assert_int_equal(mem[i], '\0');
    /* each kind of append: the recorded error, nothing written, even what would fit */
    assert_int_equal(th_buf_append(&b, "a", 1), TH_E_TOOBIG);
    assert_int_equal(th_buf_appends(&b, "a"), TH_E_TOOBIG);
    assert_int_equal(th_buf_appendc(&b, 'a'), TH_E_TOOBIG);
    assert_int_equal(th_buf_append_int(&b, 1), TH_E_TOOBIG);
    assert_int_equal(th_buf_printf(&b, "%d", 1), TH_E_TOOBIG);
    assert_int_equal(th_buf_append_json(&b, "a", (size_t)-1), TH_E_TOOBIG);
    assert_int_equal(th_buf_append(&b, "", 0), TH_E_TOOBIG);
    th_buf_truncate(&b, 0); /* no way back but reset/release */
    assert_int_equal(th_buf_err(&b), TH_E_TOOBIG);
    assert_int_equal(b.len, 0);
    assert_string_equal(th_buf_str(&b), "");
    /* reset clears it */
    th_buf_reset(&b);
    assert_int_equal(th_buf_err(&b), TH_E_OK);
    assert_int_equal(th_buf_appends(&b, "ok"), TH_E_OK);
    assert_string_equal(th_buf_str(&b), "ok");
    /* and so does release */
    assert_int_equal(th_buf_appends(&b, "0123456789abcdef"), TH_E_TOOBIG);
    th_buf_release(&b);
    assert_int_equal(th_buf_err(&b), TH_E_OK);
    assert_int_equal(th_buf_appends(&b, "again"), TH_E_OK);
    assert_string_equal(th_buf_str(&b), "again");
    th_buf_release(&b);
}

/* A failed buffer cannot be handed on: steal gives NULL (and frees), so no half document. */
static void test_steal_failed(void **state)
{
    (void)state;
    struct th_buf b;
    th_buf_init(&b, 4);
    assert_int_equal(th_buf_appends(&b, "abcde"), TH_E_TOOBIG);
    assert_null(th_buf_steal(&b));
    assert_null(b.data);
    assert_int_equal(th_buf_err(&b), TH_E_OK); /* reset by the steal */
    assert_int_equal(th_buf_appends(&b, "abcd"), TH_E_OK);
    char *s = th_buf_steal(&b);
    assert_string_equal(s, "abcd");
    free(s);
}

/* The builder the contract is for: ten appends, no check between them, one at the end. */
static void test_builder_checks_once(void **state)
{
    (void)state;
    struct th_buf b;
    th_buf_init(&b, 24);
    th_buf_appends(&b, "{\"a\":");                        /* 5 */
    th_buf_append_json(&b, "x", (size_t)-1);              /* 8 */
    th_buf_appends(&b, ",\"long\":\"0123456789012345\""); /* 34: over the cap */
    th_buf_appendc(&b, ',');
    th_buf_append_int(&b, 7);
    th_buf_printf(&b, "%s", "\"b\"");
    th_buf_appendc(&b, ':');
    th_buf_append(&b, "1", 1);
    th_buf_append_json(&b, "y", (size_t)-1);
    th_buf_appends(&b, "}");
    assert_int_equal(th_buf_err(&b), TH_E_TOOBIG);
    assert_int_equal(b.len, 0);
    assert_string_equal(th_buf_str(&b), ""); /* not "{\"a\":\"x\"" nor ",7\"b\":1..." */
    assert_null(th_buf_steal(&b));
    /* the same ten within the cap: one check says all went in */
    th_buf_init(&b, 64);
    th_buf_appends(&b, "{\"a\":");
    th_buf_append_json(&b, "x", (size_t)-1);
    th_buf_appends(&b, ",\"n\":");
    th_buf_append_int(&b, 7);
    th_buf_printf(&b, ",%s", "\"b\"");
    th_buf_appendc(&b, ':');
    th_buf_append(&b, "1", 1);
    th_buf_appends(&b, ",\"c\":");
    th_buf_append_json(&b, "y", (size_t)-1);
    th_buf_appends(&b, "}");
    assert_int_equal(th_buf_err(&b), TH_E_OK);
    assert_string_equal(th_buf_str(&b), "{\"a\":\"x\",\"n\":7,\"b\":1,\"c\":\"y\"}");
    th_buf_release(&b);
}

/* Cutting back undoes a part on a usable buffer. */
static void test_truncate(void **state)
{
    (void)state;
    struct th_buf b;
    th_buf_init(&b, 16);
    th_buf_truncate(&b, 0); /* empty, no storage: fine */
    assert_int_equal(th_buf_appends(&b, "keep+drop"), TH_E_OK);
    th_buf_truncate(&b, 4);
    assert_string_equal(th_buf_str(&b), "keep");
    th_buf_truncate(&b, 10); /* longer than the content: nothing */
    assert_int_equal(b.len, 4);
    assert_int_equal(th_buf_appends(&b, "!"), TH_E_OK);
    assert_string_equal(th_buf_str(&b), "keep!");
    th_buf_release(&b);
}

static void test_random_id(void **state)
{
    (void)state;
    char a[32], c[32];
    assert_int_equal(th_random_id("r-", a, sizeof a), TH_E_OK);
    assert_int_equal(th_random_id("r-", c, sizeof c), TH_E_OK);
    assert_int_equal(strlen(a), 22);
    assert_memory_equal(a, "r-", 2);
    assert_string_not_equal(a, c);
    for (size_t i = 2; i < strlen(a); i++)
        assert_non_null(strchr("0123456789abcdefghjkmnpqrstvwxyz", a[i]));
    char small[10];
    assert_int_equal(th_random_id("r-", small, sizeof small), TH_E_INVAL);
}

static void test_time_id(void **state)
{
    (void)state;
    const char *alpha = "0123456789abcdefghjkmnpqrstvwxyz";
    char a[32], b[32], c[32];
    int64_t before = th_wall_ms();
    assert_int_equal(th_time_id("dlq-", a, sizeof a), TH_E_OK);
    assert_int_equal(th_time_id("dlq-", b, sizeof b), TH_E_OK);
    assert_int_equal(strlen(a), 24);
    assert_memory_equal(a, "dlq-", 4);
    assert_string_not_equal(a, b); /* the same millisecond still differs */
    /* the first 9 characters are the wall clock in ms */
    int64_t ms = 0;
    for (int i = 4; i < 13; i++)
        ms = ms * 32 + (strchr(alpha, a[i]) - alpha);
    assert_true(ms >= before && ms <= th_wall_ms());
    struct timespec two_ms = {0, 2000000};
    nanosleep(&two_ms, NULL);
    assert_int_equal(th_time_id("dlq-", c, sizeof c), TH_E_OK);
    assert_true(strcmp(a, c) < 0 && strcmp(b, c) < 0); /* later sorts later */
    for (size_t i = 4; i < strlen(c); i++)
        assert_non_null(strchr(alpha, c[i]));
    char small[24];
    assert_int_equal(th_time_id("dlq-", small, sizeof small), TH_E_INVAL);
}

/* The arithmetic calendar agrees with glibc's gmtime_r and timegm, across eras and leap days. */
static void test_utc_calendar(void **state)
{
    (void)state;
    uint64_t x = 88172645463325252ull; /* xorshift */
    for (int i = 0; i < 200000; i++) {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        /* -2^35 .. 2^38 seconds: years about 881 to 10680 */
        int64_t s = (int64_t)(x % (1ull << 38)) - (i % 2 ? (int64_t)1 << 35 : 0);
        if (i < 8) /* the edges: epoch, a second before, leap days, the last second of 9999 */
            s = (int64_t[]){0,          -1,          951782400,    951868799,
                            4107542400, -2203891200, 253402300799, 68169600}[i];
        struct th_utc u;
        th_utc_from_unix(s, &u);
        time_t t = (time_t)s;
        struct tm tm;
        assert_non_null(gmtime_r(&t, &tm));
        assert_int_equal(u.year, tm.tm_year + 1900);
        assert_int_equal(u.month, tm.tm_mon + 1);
        assert_int_equal(u.day, tm.tm_mday);
        assert_int_equal(u.hour, tm.tm_hour);
        assert_int_equal(u.min, tm.tm_min);
        assert_int_equal(u.sec, tm.tm_sec);
        assert_int_equal(th_unix_from_utc(u.year, u.month, u.day, u.hour, u.min, u.sec), s);
    }
    /* out-of-range fields normalise as timegm's do */
    int fields[][6] = {{2023, 2, 30, 0, 0, 0},
                       {2024, 2, 30, 0, 0, 60},
                       {2024, 13, 1, 0, 0, 0},
                       {2024, 0, 1, 0, 0, 0},
                       {2024, -11, 31, 23, 59, 59}};
    for (size_t i = 0; i < sizeof fields / sizeof fields[0]; i++) {
        int *f = fields[i];
        struct tm tm = {.tm_year = f[0] - 1900,
                        .tm_mon = f[1] - 1,
                        .tm_mday = f[2],
                        .tm_hour = f[3],
                        .tm_min = f[4],
                        .tm_sec = f[5]};
        assert_int_equal(th_unix_from_utc(f[0], f[1], f[2], f[3], f[4], f[5]),
                         (int64_t)timegm(&tm));
    }
}

static void test_iso8601(void **state)
{
    (void)state;
    int64_t ms;
    assert_int_equal(th_parse_iso8601("2022-01-28T21:48:34.321Z", &ms), TH_E_OK);
    assert_int_equal(ms, 1643406514321LL);
    char out[25];
    th_format_iso8601(ms, out);
    assert_string_equal(out, "2022-01-28T21:48:34.321Z");
    assert_int_equal(th_parse_iso8601("2022-01-28T21:48:34Z", &ms), TH_E_OK);
    assert_int_equal(ms, 1643406514000LL);
    assert_int_equal(th_parse_iso8601("2022-01-28T22:48:34.5+01:00", &ms), TH_E_OK);
    assert_int_equal(ms, 1643406514500LL);
    assert_int_equal(th_parse_iso8601("2022-01-28", &ms), TH_E_INVAL);
    assert_int_equal(th_parse_iso8601("2022-13-28T21:48:34Z", &ms), TH_E_INVAL);
    assert_int_equal(th_parse_iso8601("2022-01-28T21:48:34.Z", &ms), TH_E_INVAL);
    assert_int_equal(th_parse_iso8601("2022-01-28T21:48:34Zjunk", &ms), TH_E_INVAL);
    assert_int_equal(th_parse_iso8601("garbage-garbage-garbage", &ms), TH_E_INVAL);
}

static void test_loopback(void **state)
{
    (void)state;
    assert_true(th_host_is_loopback("127.0.0.1"));
    assert_true(th_host_is_loopback("127.1.2.3"));
    assert_true(th_host_is_loopback("::1"));
    assert_true(th_host_is_loopback("localhost"));
    assert_false(th_host_is_loopback("0.0.0.0"));
    assert_false(th_host_is_loopback("::"));
    assert_false(th_host_is_loopback("10.0.0.1"));
    assert_false(th_host_is_loopback("example.com"));
    assert_false(th_host_is_loopback(""));
}

static void test_strerror(void **state)
{
    (void)state;
    assert_string_equal(th_strerror(TH_E_OK), "ok");
    assert_string_equal(th_errname(TH_E_NOMEM), "NOMEM");
    assert_string_equal(th_strerror((th_err)9999), "unknown error");
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_append_and_cap),
        cmocka_unit_test(test_zero_max_refuses),
        cmocka_unit_test(test_growth_large),
        cmocka_unit_test(test_grow_to_index),
        cmocka_unit_test(test_append_int),
        cmocka_unit_test(test_json_escape),
        cmocka_unit_test(test_json_escape_cap_atomic),
        cmocka_unit_test(test_sticky_error),
        cmocka_unit_test(test_steal_failed),
        cmocka_unit_test(test_builder_checks_once),
        cmocka_unit_test(test_truncate),
        cmocka_unit_test(test_random_id),
        cmocka_unit_test(test_time_id),
        cmocka_unit_test(test_utc_calendar),
        cmocka_unit_test(test_iso8601),
        cmocka_unit_test(test_loopback),
        cmocka_unit_test(test_strerror),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
