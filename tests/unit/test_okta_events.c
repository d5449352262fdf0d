/* Unit tests: okta/events (Okta Event Hook deliveries: parsing, bounds, malformed input). */
#include <setjmp.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "okta/events.h"

/* A delivery as Okta sends it: System Log events under data.events (shapes as in the
 * System Log API; values made up). */
#define EVENT(uuid, type, result, factor)                                                          \
    "{\"uuid\":\"" uuid "\",\"published\":\"2026-12-05T03:00:00.250Z\",\"eventType\":\"" type      \
    "\",\"version\":\"0\",\"severity\":\"INFO\",\"displayMessage\":\"Authentication of user via "  \
    "MFA\",\"actor\":{\"id\":\"00u1abcdEFGH2345\",\"type\":\"User\",\"alternateId\":"              \
    "\"pat@example.com\",\"displayName\":\"Pat\"},\"client\":{\"ipAddress\":\"192.0.2.1\"},"       \
    "\"outcome\":{\"result\":\"" result "\",\"reason\":null},\"authenticationContext\":{"          \
    "\"authenticationStep\":0,\"externalSessionId\":\"102abc\"},\"debugContext\":{\"debugData\":{" \
    "\"factor\":\"" factor "\",\"requestId\":\"Yx1\"}},\"target\":[{\"id\":\"mbl1\",\"type\":"     \
    "\"AuthenticatorEnrollment\",\"displayName\":\"Phone\"}]}"

static const char BATCH[] =
    "{\"eventType\":\"com.okta.event_hook\",\"eventTypeVersion\":\"1.0\",\"cloudEventsVersion\":"
    "\"0.1\",\"source\":\"https://x.okta.com/api/v1/eventHooks/who8\",\"eventId\":\"b1\","
    "\"data\":{\"events\":[" EVENT("e-1", "user.authentication.auth_via_mfa", "SUCCESS", "SMS_FACTOR") "," EVENT(
        "e-2", "user.authentication.auth_via_mfa", "SUCCESS",
        "call") "," EVENT("e-3", "user.authentication.auth_via_mfa", "FAILURE",
                          "sms") "," EVENT("e-4", "user.authentication.auth_via_mfa", "SUCCESS",
                                           "push") "," EVENT("e-5", "user.mfa.factor.activate",
                                                             "SUCCESS",
                                                             "sms") "," EVENT("e-6",
                                                                              "user.session.start",
                                                                              "SUCCESS",
                                                                              "sms") "]},"
                                                                                     "\"eventTime\""
                                                                                     ":\"2026-12-"
                                                                                     "05T03:00:01."
                                                                                     "000Z\","
                                                                                     "\"contentType"
                                                                                     "\":"
                                                                                     "\"application"
                                                                                     "/json\"}";

static void test_batch(void **state)
{
    (void)state;
    struct th_okta_event ev[TH_OKTA_EVENTS_MAX];
    size_t n = 0;
    const char *why = NULL;
    assert_int_equal(th_okta_events_parse(BATCH, strlen(BATCH), ev, TH_OKTA_EVENTS_MAX, &n, &why),
                     TH_E_OK);
    assert_int_equal(n, 6);
    assert_int_equal(ev[0].type, TH_OKTA_EV_MFA);
    assert_int_equal(ev[0].use, TH_OKTA_EV_USE);
    assert_string_equal(ev[0].channel, "sms");
    assert_string_equal(ev[0].uuid, "e-1");
    assert_string_equal(ev[0].user_id, "00u1abcdEFGH2345");
    assert_int_equal(ev[0].published_ms, 1796439600250LL);
    assert_int_equal(ev[1].use, TH_OKTA_EV_USE);
    assert_string_equal(ev[1].channel, "voice");
    assert_int_equal(ev[2].use, TH_OKTA_EV_IGNORED); /* FAILURE */
    assert_int_equal(ev[3].use, TH_OKTA_EV_IGNORED); /* push: not a phone factor */
    assert_int_equal(ev[4].type, TH_OKTA_EV_ENROLL);
    assert_int_equal(ev[4].use, TH_OKTA_EV_USE);
    assert_int_equal(ev[5].type, TH_OKTA_EV_OTHER);
    assert_int_equal(ev[5].use, TH_OKTA_EV_IGNORED);
}

static void expect_invalid_body(const char *body)
{
    struct th_okta_event ev[4];
    size_t n = 99;
    const char *why = NULL;
    assert_int_equal(th_okta_events_parse(body, strlen(body), ev, 4, &n, &why), TH_E_INVAL);
    assert_non_null(why);
    assert_int_equal(n, 0);
}

static void test_malformed_bodies(void **state)
{
    (void)state;
    expect_invalid_body("");
    expect_invalid_body("{");
    expect_invalid_body("[]");
    expect_invalid_body("{\"data\":{}}");
    expect_invalid_body("{\"data\":{\"events\":{}}}");
    expect_invalid_body("{\"data\":{\"events\":[]},\"data\":1}"); /* a duplicate key */
    /* more events than the bound: refused whole */
    expect_invalid_body("{\"data\":{\"events\":[{},{},{},{},{}]}}");
    /* deep nesting: bounded by the parser, refused */
    char deep[20000];
    size_t k = 0;
    k += (size_t)snprintf(deep, sizeof deep, "{\"data\":{\"events\":[");
    for (int i = 0; i < 5000; i++)
        deep[k++] = '[';
    for (int i = 0; i < 5000; i++)
        deep[k++] = ']';
    k += (size_t)snprintf(deep + k, sizeof deep - k, "]}}");
    expect_invalid_body(deep);
}

static void test_wrong_types_are_invalid_events(void **state)
{
    (void)state;
    static const char *const bodies[] = {
        "{\"data\":{\"events\":[1]}}",
        "{\"data\":{\"events\":[{\"uuid\":5,\"eventType\":\"user.mfa.factor.activate\"}]}}",
        "{\"data\":{\"events\":[{\"uuid\":\"u1\",\"eventType\":\"user.mfa.factor.activate\","
        "\"published\":\"yesterday\",\"actor\":{\"id\":\"00u1\"},\"outcome\":{\"result\":"
        "\"SUCCESS\"},\"debugContext\":{\"debugData\":{\"factor\":\"sms\"}}}]}}",
        "{\"data\":{\"events\":[{\"uuid\":\"u1\",\"eventType\":\"user.mfa.factor.activate\","
        "\"published\":\"2026-12-05T03:00:00Z\",\"actor\":{\"id\":[\"00u1\"]},\"outcome\":{"
        "\"result\":\"SUCCESS\"}}]}}",
        /* an id with characters no Okta id has */
        "{\"data\":{\"events\":[{\"uuid\":\"u "
        "1\\n\",\"eventType\":\"user.mfa.factor.activate\"}]}}",
    };
    for (size_t i = 0; i < sizeof bodies / sizeof bodies[0]; i++) {
        struct th_okta_event ev[4];
        size_t n = 0;
        const char *why = NULL;
        assert_int_equal(th_okta_events_parse(bodies[i], strlen(bodies[i]), ev, 4, &n, &why),
                         TH_E_OK);
        assert_int_equal(n, 1);
        assert_int_equal(ev[0].use, TH_OKTA_EV_INVALID);
    }
}

static void test_huge_ids_refused(void **state)
{
    (void)state;
    char body[1024], id[200];
    memset(id, 'a', sizeof id - 1);
    id[sizeof id - 1] = '\0';
    snprintf(body, sizeof body,
             "{\"data\":{\"events\":[{\"uuid\":\"%s\",\"eventType\":"
             "\"user.mfa.factor.activate\"}]}}",
             id);
    struct th_okta_event ev[1];
    size_t n = 0;
    const char *why = NULL;
    assert_int_equal(th_okta_events_parse(body, strlen(body), ev, 1, &n, &why), TH_E_OK);
    assert_int_equal(ev[0].use, TH_OKTA_EV_INVALID);
}

static void test_times(void **state)
{
    (void)state;
    assert_int_equal(th_okta_time_ms("1970-01-01T00:00:00Z"), 0);
    assert_int_equal(th_okta_time_ms("1970-01-01T00:00:01.5Z"), 1500);
    assert_int_equal(th_okta_time_ms("1970-01-01T01:00:00+01:00"), 0);
    assert_int_equal(th_okta_time_ms("2026-12-05T03:00:00.250Z"), 1796439600250LL);
    assert_int_equal(th_okta_time_ms("2026-12-05 03:00:00Z"), -1);
    assert_int_equal(th_okta_time_ms("2026-13-05T03:00:00Z"), -1);
    assert_int_equal(th_okta_time_ms("2026-12-05T03:00:00"), -1);
    assert_int_equal(th_okta_time_ms("2026-12-05T03:00:00.Z"), -1);
    assert_int_equal(th_okta_time_ms(NULL), -1);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_batch),
        cmocka_unit_test(test_malformed_bodies),
        cmocka_unit_test(test_wrong_types_are_invalid_events),
        cmocka_unit_test(test_huge_ids_refused),
        cmocka_unit_test(test_times),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
