/* Unit tests: obs/emf (the CloudWatch Embedded Metric Format line builder). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "obs/emf.h"

static char *build(const char *ns, int64_t ts, const struct th_emf_value *v, size_t n)
{
    struct th_buf b;
    th_buf_init(&b, 1 << 20);
    assert_int_equal(th_emf_build(&b, ns, ts, v, n), TH_E_OK);
    return th_buf_steal(&b);
}

static void exact_line(void **state)
{
    (void)state;
    struct th_emf_value v[] = {
        {.name = "Requests.SUCCESSFUL", .kind = TH_EMF_COUNT, .before = 10, .after = 13},
        {.name = "Blocked.phone_rate", .kind = TH_EMF_COUNT, .before = 2, .after = 2},
        {.name = "ProvidersCircuitOpen", .kind = TH_EMF_GAUGE, .before = 1, .after = 0},
        {.name = "AnswerTime",
         .kind = TH_EMF_MEAN_MS,
         .before = 1000,
         .after = 1000 + 12345 + 2000,
         .n_before = 1,
         .n_after = 3},
    };
    char *s = build("Telehook", 1574109732004LL, v, 4);
    assert_string_equal(
        s, "{\"_aws\":{\"Timestamp\":1574109732004,\"CloudWatchMetrics\":[{\"Namespace\":"
           "\"Telehook\",\"Dimensions\":[[\"Service\"]],\"Metrics\":["
           "{\"Name\":\"Requests.SUCCESSFUL\",\"Unit\":\"Count\"},"
           "{\"Name\":\"Blocked.phone_rate\",\"Unit\":\"Count\"},"
           "{\"Name\":\"ProvidersCircuitOpen\",\"Unit\":\"Count\"},"
           "{\"Name\":\"AnswerTime\",\"Unit\":\"Milliseconds\"}]}]},"
           "\"ts\":\"2019-11-18T20:42:12.004Z\",\"level\":\"info\",\"event\":\"metrics\","
           "\"Service\":\"telehook\",\"Requests.SUCCESSFUL\":3,\"Blocked.phone_rate\":0,"
           "\"ProvidersCircuitOpen\":0,\"AnswerTime\":7.173}\n");
    free(s);
}

/* A counter that went back (a restart) counts from zero: never a negative or huge delta. */
static void reset_is_not_negative(void **state)
{
    (void)state;
    struct th_emf_value v[] = {
        {.name = "Requests.FAILED", .kind = TH_EMF_COUNT, .before = 50, .after = 4},
        {.name = "AnswerTime",
         .kind = TH_EMF_MEAN_MS,
         .before = 900000,
         .after = 6000,
         .n_before = 90,
         .n_after = 2},
    };
    char *s = build("Telehook", 1000, v, 2);
    json_error_t err;
    json_t *j = json_loads(s, 0, &err);
    assert_non_null(j);
    assert_int_equal(json_integer_value(json_object_get(j, "Requests.FAILED")), 4);
    assert_true(json_is_real(json_object_get(j, "AnswerTime")));
    assert_true(json_real_value(json_object_get(j, "AnswerTime")) == 3.0);
    json_decref(j);
    free(s);
}

/* A mean over no request is no data point: neither declared nor valued. */
static void mean_without_samples_is_left_out(void **state)
{
    (void)state;
    struct th_emf_value v[] = {
        {.name = "AnswerTime",
         .kind = TH_EMF_MEAN_MS,
         .before = 5,
         .after = 5,
         .n_before = 1,
         .n_after = 1},
        {.name = "Requests.SUCCESSFUL", .kind = TH_EMF_COUNT, .before = 1, .after = 1},
    };
    char *s = build("Telehook", 1000, v, 2);
    assert_null(strstr(s, "AnswerTime"));
    assert_non_null(strstr(s, "\"Requests.SUCCESSFUL\":0"));
    free(s);
}

/* More than 100 metrics: several directives of at most 100, every one valued on the root. */
static void at_most_100_per_directive(void **state)
{
    (void)state;
    enum { N = 230 };
    static char names[N][16];
    struct th_emf_value v[N];
    for (int i = 0; i < N; i++) {
        snprintf(names[i], sizeof names[i], "M%d", i);
        v[i] = (struct th_emf_value){
            .name = names[i], .kind = TH_EMF_COUNT, .before = 1, .after = 1 + (uint64_t)i};
    }
    char *s = build("Telehook", 1000, v, N);
    json_error_t err;
    json_t *j = json_loads(s, 0, &err);
    assert_non_null(j);
    json_t *dirs = json_object_get(json_object_get(j, "_aws"), "CloudWatchMetrics");
    assert_int_equal(json_array_size(dirs), 3);
    size_t total = 0, k;
    json_t *d;
    json_array_foreach(dirs, k, d)
    {
        json_t *m = json_object_get(d, "Metrics");
        assert_true(json_array_size(m) <= 100);
        assert_string_equal(json_string_value(json_object_get(d, "Namespace")), "Telehook");
        size_t x;
        json_t *def;
        json_array_foreach(m, x, def)
        {
            const char *name = json_string_value(json_object_get(def, "Name"));
            json_t *val = json_object_get(j, name);
            assert_true(json_is_integer(val));
            assert_int_equal(json_integer_value(val), atoi(name + 1));
            total++;
        }
    }
    assert_int_equal(total, N);
    json_decref(j);
    free(s);
}

static void bad_namespace(void **state)
{
    (void)state;
    struct th_buf b;
    th_buf_init(&b, 4096);
    char longns[TH_EMF_NAMESPACE_MAX + 2];
    memset(longns, 'a', sizeof longns - 1);
    longns[sizeof longns - 1] = '\0';
    assert_int_equal(th_emf_build(&b, "", 1, NULL, 0), TH_E_INVAL);
    assert_int_equal(th_emf_build(&b, longns, 1, NULL, 0), TH_E_INVAL);
    longns[TH_EMF_NAMESPACE_MAX] = '\0';
    assert_int_equal(th_emf_build(&b, longns, 1, NULL, 0), TH_E_OK);
    th_buf_release(&b);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(exact_line),
        cmocka_unit_test(reset_is_not_negative),
        cmocka_unit_test(mean_without_samples_is_left_out),
        cmocka_unit_test(at_most_100_per_directive),
        cmocka_unit_test(bad_namespace),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
