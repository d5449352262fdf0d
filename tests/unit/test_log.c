/* Unit tests: obs/log (JSON lines, escaping, levels, bounded lines). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <sys/ioctl.h>

#include "obs/log.h"

static int pipefd[2];

static int setup(void **state)
{
    (void)state;
    if (pipe(pipefd) != 0)
        return -1;
    th_log_init(TH_LOG_INFO, pipefd[1]);
    return 0;
}

static int teardown(void **state)
{
    (void)state;
    close(pipefd[0]);
    close(pipefd[1]);
    th_log_init(TH_LOG_INFO, 2);
    return 0;
}

/* Reads one line the logger wrote and parses it. */
static json_t *read_line(char *raw, size_t rawlen)
{
    ssize_t n = read(pipefd[0], raw, rawlen - 1);
    assert_true(n > 0);
    raw[n] = '\0';
    assert_int_equal(raw[n - 1], '\n');
    assert_ptr_equal(strchr(raw, '\n'), raw + n - 1); /* exactly one line */
    json_error_t e;
    json_t *j = json_loads(raw, 0, &e);
    assert_non_null(j);
    return j;
}

static void test_fields(void **state)
{
    (void)state;
    struct th_logline l;
    assert_true(th_log_begin(&l, TH_LOG_INFO, "request"));
    th_log_str(&l, "req", "r-1");
    th_log_str(&l, "quote", "a\"b\n\x01");
    th_log_str(&l, "skipped", NULL);
    th_log_int(&l, "status", 200);
    th_log_ms(&l, "ms", 1234567);
    th_log_ms(&l, "ms0", 5);
    th_log_ms(&l, "ms_neg", -1500);
    th_log_ms(&l, "ms_neg0", -500);
    th_log_int(&l, "neg", -42);
    th_log_bool(&l, "ok", true);
    th_log_end(&l);
    char raw[8192];
    json_t *j = read_line(raw, sizeof raw);
    /* the exact text of the numbers */
    assert_non_null(strstr(raw, "\"status\":200,"));
    assert_non_null(strstr(raw, "\"ms\":1234.567,"));
    assert_non_null(strstr(raw, "\"ms0\":0.005,"));
    assert_non_null(strstr(raw, "\"ms_neg\":-1.500,"));
    assert_non_null(strstr(raw, "\"ms_neg0\":-0.500,"));
    assert_non_null(strstr(raw, "\"neg\":-42,"));
    assert_string_equal(json_string_value(json_object_get(j, "level")), "info");
    assert_string_equal(json_string_value(json_object_get(j, "event")), "request");
    assert_string_equal(json_string_value(json_object_get(j, "req")), "r-1");
    assert_string_equal(json_string_value(json_object_get(j, "quote")), "a\"b\n\x01");
    assert_null(json_object_get(j, "skipped"));
    assert_int_equal(json_integer_value(json_object_get(j, "status")), 200);
    assert_true(json_real_value(json_object_get(j, "ms")) > 1234.5 &&
                json_real_value(json_object_get(j, "ms")) < 1234.6);
    assert_true(json_is_true(json_object_get(j, "ok")));
    assert_non_null(json_object_get(j, "ts"));
    json_decref(j);
}

static void test_levels(void **state)
{
    (void)state;
    struct th_logline l;
    assert_false(th_log_begin(&l, TH_LOG_DEBUG, "hidden"));
    assert_false(th_log_enabled(TH_LOG_DEBUG));
    assert_true(th_log_enabled(TH_LOG_ERROR));
    th_log_msg(TH_LOG_WARN, "note", "value %d", 42);
    char raw[8192];
    json_t *j = read_line(raw, sizeof raw);
    assert_string_equal(json_string_value(json_object_get(j, "level")), "warn");
    assert_string_equal(json_string_value(json_object_get(j, "msg")), "value 42");
    json_decref(j);
}

static void test_long_values_bounded(void **state)
{
    (void)state;
    char big[3000];
    memset(big, 'x', sizeof big - 1);
    big[sizeof big - 1] = '\0';
    struct th_logline l;
    assert_true(th_log_begin(&l, TH_LOG_INFO, "big"));
    for (int i = 0; i < 20; i++) /* far more than one line holds */
        th_log_str(&l, "k", big);
    th_log_end(&l);
    char raw[TH_LOG_LINE_MAX + 16];
    json_t *j = read_line(raw, sizeof raw);
    assert_true(strlen(raw) <= TH_LOG_LINE_MAX);
    assert_true(json_is_true(json_object_get(j, "truncated")));
    /* each value cut to TH_LOG_VALUE_MAX */
    assert_int_equal(strlen(json_string_value(json_object_get(j, "k"))), TH_LOG_VALUE_MAX);
    json_decref(j);
}

/* Bytes waiting in the pipe, without blocking. */
static size_t pending(void)
{
    int n = 0;
    assert_int_equal(ioctl(pipefd[0], FIONREAD, &n), 0);
    return (size_t)n;
}

static void info_line(const char *req)
{
    struct th_logline l;
    assert_true(th_log_begin(&l, TH_LOG_INFO, "request"));
    th_log_str(&l, "req", req);
    th_log_end(&l);
}

static void test_batch_holds_info_until_flush(void **state)
{
    (void)state;
    assert_true(th_log_batch_begin());
    info_line("r-1");
    info_line("r-2");
    assert_int_equal(pending(), 0); /* held */
    th_log_flush();
    char raw[8192];
    ssize_t n = read(pipefd[0], raw, sizeof raw - 1);
    assert_true(n > 0);
    raw[n] = '\0';
    char *nl = strchr(raw, '\n');
    assert_non_null(nl);
    assert_non_null(strstr(raw, "\"r-1\""));
    assert_non_null(strstr(nl + 1, "\"r-2\"")); /* in order, whole lines */
    assert_int_equal(raw[n - 1], '\n');
    th_log_batch_end();
    info_line("r-3"); /* not batching any more: written at once */
    assert_true(pending() > 0);
    json_decref(read_line(raw, sizeof raw));
}

static void test_batch_warn_written_through(void **state)
{
    (void)state;
    assert_true(th_log_batch_begin());
    info_line("r-1");
    th_log_msg(TH_LOG_WARN, "slow", "x");
    char raw[8192];
    ssize_t n = read(pipefd[0], raw, sizeof raw - 1); /* both, without a flush */
    assert_true(n > 0);
    raw[n] = '\0';
    assert_non_null(strstr(raw, "\"r-1\""));
    assert_non_null(strstr(raw, "\"slow\""));
    assert_true(strstr(raw, "\"r-1\"") < strstr(raw, "\"slow\""));
    th_log_batch_end();
}

static void test_batch_full_flushes_whole_lines(void **state)
{
    (void)state;
    assert_true(th_log_batch_begin());
    size_t written = 0;
    int lines = 0;
    while (pending() == 0) { /* until the buffer had to make room */
        info_line("r");
        lines++;
        assert_true(lines < TH_LOG_BATCH); /* bounded */
    }
    written = pending();
    assert_true(written <= TH_LOG_BATCH);
    char *raw = malloc(written + 1);
    assert_non_null(raw);
    assert_int_equal(read(pipefd[0], raw, written), (ssize_t)written);
    assert_int_equal(raw[written - 1], '\n'); /* never half a line */
    free(raw);
    th_log_batch_end(); /* flushes the rest */
    assert_true(pending() > 0);
    char buf[TH_LOG_BATCH];
    ssize_t n = read(pipefd[0], buf, sizeof buf);
    assert_true(n > 0 && buf[n - 1] == '\n');
}

/* A field that does not fit is dropped whole; the fields before it and a later small one stay. */
static void test_dropped_field_keeps_line(void **state)
{
    (void)state;
    char v[501];
    memset(v, 'x', sizeof v - 1);
    v[sizeof v - 1] = '\0';
    struct th_logline l;
    assert_true(th_log_begin(&l, TH_LOG_INFO, "fill"));
    char k[4] = "k0";
    for (int i = 0; i < 8; i++) { /* ~508 bytes each: the eighth does not fit */
        k[1] = (char)('0' + i);
        th_log_str(&l, k, v);
    }
    th_log_int(&l, "n", 7);
    th_log_end(&l);
    char raw[TH_LOG_LINE_MAX + 16];
    json_t *j = read_line(raw, sizeof raw);
    assert_string_equal(json_string_value(json_object_get(j, "event")), "fill");
    for (int i = 0; i < 7; i++) {
        k[1] = (char)('0' + i);
        assert_string_equal(json_string_value(json_object_get(j, k)), v);
    }
    assert_null(json_object_get(j, "k7"));
    assert_int_equal(json_integer_value(json_object_get(j, "n")), 7);
    assert_true(json_is_true(json_object_get(j, "truncated")));
    json_decref(j);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_fields),
        cmocka_unit_test(test_levels),
        cmocka_unit_test(test_long_values_bounded),
        cmocka_unit_test(test_dropped_field_keeps_line),
        cmocka_unit_test(test_batch_holds_info_until_flush),
        cmocka_unit_test(test_batch_warn_written_through),
        cmocka_unit_test(test_batch_full_flushes_whole_lines),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
