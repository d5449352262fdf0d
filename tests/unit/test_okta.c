/* Unit tests: okta (request decoding, response encoding). */
#include <setjmp.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/arena.h"
#include "okta/okta.h"

/* Okta's documented sample (reference §1.6). */
static const char SAMPLE[] =
    "{\"eventId\":\"uS5871kJThSsU8qlA1LTcg\",\"eventTime\":\"2022-01-28T21:43:40.000Z\","
    "\"eventType\":\"com.okta.telephony.provider\",\"eventTypeVersion\":\"1.0\","
    "\"contentType\":\"application/json\",\"cloudEventVersion\":\"0.1\","
    "\"source\":\"https://x.okta.com/api/v1/inlineHooks/calz6lVQA77AwFeEe0g3\","
    "\"requestType\":\"com.okta.user.telephony.pre-enrollment\",\"data\":{\"context\":{"
    "\"request\":{\"id\":\"reqRgSk8IBBRhuo0YdlEDTmUw\",\"method\":\"POST\",\"url\":{\"value\":"
    "\"/api/internal/v1/inlineHooks/com.okta.telephony.provider/generatePreview\"},"
    "\"ipAddress\":\"127.0.0.1\"}},\"userProfile\":{\"firstName\":\"test\",\"lastName\":\"user\","
    "\"login\":\"test.user@okta.com\",\"userId\":\"00uyxxSknGtK8022w0g3\"},\"messageProfile\":{"
    "\"msgTemplate\":\"(HOOK)Your code is 11111\",\"phoneNumber\":\"9876543210\","
    "\"otpExpires\":\"2022-01-28T21:48:34.321Z\",\"deliveryChannel\":\"SMS\",\"otpCode\":\"11111\","
    "\"locale\":\"EN-US\"}}}";

static th_err decode(const char *body, struct th_okta_request *r, char *why)
{
    return th_okta_decode(body, strlen(body), r, why, 128);
}

/* A minimal request with messageProfile fields spliced in. */
static th_err decode_mp(const char *mp, struct th_okta_request *r, char *why)
{
    char body[2048];
    snprintf(body, sizeof body, "{\"data\":{\"messageProfile\":{%s}}}", mp);
    return decode(body, r, why);
}

static void test_sample(void **state)
{
    (void)state;
    struct th_okta_request r;
    char why[128];
    assert_int_equal(decode(SAMPLE, &r, why), TH_E_OK);
    assert_string_equal(r.event_id, "uS5871kJThSsU8qlA1LTcg");
    assert_string_equal(r.request_type, "com.okta.user.telephony.pre-enrollment");
    assert_string_equal(r.phone, "9876543210");
    assert_int_equal(r.channel, TH_CHANNEL_SMS);
    assert_string_equal(r.otp, "11111");
    assert_int_equal(r.otp_expires_ms, 1643406514321LL);
    assert_string_equal(r.locale, "EN-US");
    assert_string_equal(r.msg_template, "(HOOK)Your code is 11111");
    assert_string_equal(r.first_name, "test");
    assert_string_equal(r.last_name, "user");
    assert_string_equal(r.login, "test.user@okta.com");
    assert_string_equal(r.user_id, "00uyxxSknGtK8022w0g3");
    assert_string_equal(r.okta_request_id, "reqRgSk8IBBRhuo0YdlEDTmUw");
    assert_string_equal(r.source_ip, "127.0.0.1");
    th_okta_request_release(&r);
}

static void test_channels(void **state)
{
    (void)state;
    static const struct {
        const char *value;
        th_channel want;
    } cases[] = {{"SMS", TH_CHANNEL_SMS},          {"sms", TH_CHANNEL_SMS},
                 {"Sms", TH_CHANNEL_SMS},          {"Voice", TH_CHANNEL_VOICE},
                 {"voice call", TH_CHANNEL_VOICE}, {"CALL", TH_CHANNEL_VOICE},
                 {"anything", TH_CHANNEL_VOICE}};
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        char mp[256];
        snprintf(mp, sizeof mp,
                 "\"phoneNumber\":\"+12015550123\",\"otpCode\":\"1\",\"deliveryChannel\":\"%s\"",
                 cases[i].value);
        struct th_okta_request r;
        char why[128];
        assert_int_equal(decode_mp(mp, &r, why), TH_E_OK);
        assert_int_equal(r.channel, cases[i].want);
        th_okta_request_release(&r);
    }
    /* absent → SMS */
    struct th_okta_request r;
    char why[128];
    assert_int_equal(decode_mp("\"phoneNumber\":\"+12015550123\",\"otpCode\":\"1\"", &r, why),
                     TH_E_OK);
    assert_int_equal(r.channel, TH_CHANNEL_SMS);
    assert_null(r.delivery_channel);
    th_okta_request_release(&r);
}

static void test_numbers_as_json_numbers(void **state)
{
    (void)state;
    struct th_okta_request r;
    char why[128];
    assert_int_equal(decode_mp("\"phoneNumber\":12015550123,\"otpCode\":123456", &r, why), TH_E_OK);
    assert_string_equal(r.phone, "12015550123");
    assert_string_equal(r.otp, "123456");
    th_okta_request_release(&r);
    /* a float or a negative number is no phone number: a malformed request */
    assert_int_equal(decode_mp("\"phoneNumber\":1.5,\"otpCode\":\"1\"", &r, why), TH_E_JSON);
    assert_int_equal(decode_mp("\"phoneNumber\":-1,\"otpCode\":\"1\"", &r, why), TH_E_JSON);
    /* beyond 64 bits signed */
    assert_int_equal(decode_mp("\"phoneNumber\":12345678901234567890,\"otpCode\":\"1\"", &r, why),
                     TH_E_JSON);
    assert_string_equal(why, "data.messageProfile.phoneNumber has the wrong type or is too long");
}

static void test_malformed(void **state)
{
    (void)state;
    struct th_okta_request r;
    char why[128];
    assert_int_equal(decode("", &r, why), TH_E_JSON);
    assert_int_equal(decode("{", &r, why), TH_E_JSON);
    assert_non_null(strstr(why, "invalid JSON"));
    assert_int_equal(decode("[1,2]", &r, why), TH_E_JSON);
    assert_int_equal(decode("\"str\"", &r, why), TH_E_JSON);
    assert_int_equal(decode("{\"a\":1,\"a\":2}", &r, why), TH_E_JSON); /* duplicate keys */
    /* NUL inside the body */
    assert_int_equal(th_okta_decode("{\"a\":\0}", 7, &r, why, sizeof why), TH_E_JSON);
    /* a key twice anywhere, also when spelled with an escape, also among many keys */
    assert_int_equal(decode_mp("\"phoneNumber\":\"+12015550123\",\"otpCode\":\"1\","
                               "\"otp\\u0043ode\":\"2\"",
                               &r, why),
                     TH_E_JSON);
    assert_non_null(strstr(why, "twice"));
    assert_int_equal(decode("{\"x\":[{\"b\":1,\"b\":2}]}", &r, why), TH_E_JSON);
    char many[1024] = "{";
    for (int i = 0; i < 40; i++)
        snprintf(many + strlen(many), sizeof many - strlen(many), "\"k%d\":%d,", i, i);
    strcat(many, "\"k7\":0}");
    assert_int_equal(decode(many, &r, why), TH_E_JSON);
    many[strlen(many) - 8] = '}'; /* without the repeated key: no complaint about keys */
    many[strlen(many) - 7] = '\0';
    assert_int_equal(decode(many, &r, why), TH_E_REQUEST);
    /* "\u0000" in a key, anything after the value, invalid UTF-8 */
    assert_int_equal(decode("{\"a\\u0000\":1}", &r, why), TH_E_JSON);
    assert_int_equal(decode("{} {}", &r, why), TH_E_JSON);
    assert_int_equal(decode("{\"a\":\"\xff\xfe\"}", &r, why), TH_E_JSON);
    /* deep nesting is refused, not recursed into without bound */
    char deep[5001];
    memset(deep, '[', 2500);
    memset(deep + 2500, ']', 2500);
    deep[5000] = '\0';
    assert_int_equal(decode(deep, &r, why), TH_E_JSON);
    assert_non_null(strstr(why, "invalid JSON"));
}

static void test_unservable(void **state)
{
    (void)state;
    struct th_okta_request r;
    char why[128];
    assert_int_equal(decode("{}", &r, why), TH_E_REQUEST);
    assert_string_equal(why, "data.messageProfile missing");
    assert_int_equal(decode_mp("\"otpCode\":\"1\"", &r, why), TH_E_REQUEST);
    assert_non_null(strstr(why, "phoneNumber"));
    assert_int_equal(decode_mp("\"phoneNumber\":\"+12015550123\"", &r, why), TH_E_REQUEST);
    assert_non_null(strstr(why, "otpCode"));
    assert_int_equal(decode_mp("\"phoneNumber\":\"+12015550123\",\"otpCode\":\"\"", &r, why),
                     TH_E_REQUEST);
    assert_int_equal(decode_mp("\"phoneNumber\":\"+12015550123\",\"otpCode\":\"12 34\"", &r, why),
                     TH_E_REQUEST);
    assert_int_equal(
        decode_mp(
            "\"phoneNumber\":\"+12015550123\",\"otpCode\":\"123456789012345678901234567890123\"",
            &r, why),
        TH_E_REQUEST);
    /* "\u0000" inside a string: no C string can hold it: malformed */
    assert_int_equal(
        decode_mp("\"phoneNumber\":\"+12015550123\",\"otpCode\":\"1\\u00002\"", &r, why),
        TH_E_JSON);
    assert_int_equal(decode("{\"eventType\":\"com.okta.other\",\"data\":{\"messageProfile\":{"
                            "\"phoneNumber\":\"+12015550123\",\"otpCode\":\"1\"}}}",
                            &r, why),
                     TH_E_REQUEST);
    assert_non_null(strstr(why, "eventType"));
    /* the reason never carries the values */
    assert_null(strstr(why, "12015550123"));
}

/* Absent optional fields take their defaults; present ones of the right type that say nothing
 * usable (an unparsable otpExpires, an empty msgTemplate) are kept as nothing. */
static void test_absent_optional_fields(void **state)
{
    (void)state;
    struct th_okta_request r;
    char why[128];
    assert_int_equal(decode("{\"data\":{\"messageProfile\":{\"phoneNumber\":\"+12015550123\","
                            "\"otpCode\":\"9\",\"msgTemplate\":\"\",\"otpExpires\":\"soon\"}}}",
                            &r, why),
                     TH_E_OK);
    assert_null(r.event_id);
    assert_null(r.event_time);
    assert_null(r.request_type);
    assert_null(r.delivery_channel);
    assert_int_equal(r.channel, TH_CHANNEL_SMS);
    assert_null(r.locale);
    assert_null(r.msg_template);
    assert_string_equal(r.otp_expires, "soon");
    assert_int_equal(r.otp_expires_ms, 0);
    assert_null(r.first_name);
    assert_null(r.last_name);
    assert_null(r.login);
    assert_null(r.user_id);
    assert_null(r.okta_request_id);
    assert_null(r.source_ip);
    th_okta_request_release(&r);
    /* fields telehook does not read are not checked (Okta's OpenAPI sample has a bare 1) */
    assert_int_equal(decode("{\"eventTypeVersion\":1,\"source\":null,\"data\":{\"context\":{"
                            "\"request\":{\"url\":5}},\"messageProfile\":{"
                            "\"phoneNumber\":\"+12015550123\",\"otpCode\":\"9\"}}}",
                            &r, why),
                     TH_E_OK);
    th_okta_request_release(&r);
}

/* The sample with the member at a dotted path replaced by raw JSON text (malloc'ed). */
static char *sample_with(const char *path, const char *raw)
{
    json_error_t e;
    json_t *root = json_loads(SAMPLE, 0, &e);
    assert_non_null(root);
    char buf[128];
    snprintf(buf, sizeof buf, "%s", path);
    json_t *obj = root;
    char *name = buf;
    for (char *dot = strchr(name, '.'); dot; dot = strchr(name, '.')) {
        *dot = '\0';
        obj = json_object_get(obj, name);
        assert_non_null(obj);
        name = dot + 1;
    }
    assert_non_null(json_object_get(obj, name)); /* every path names a field of the sample */
    json_object_set_new(obj, name, json_string("@@V@@"));
    char *dumped = json_dumps(root, JSON_COMPACT);
    json_decref(root);
    char *at = strstr(dumped, "\"@@V@@\"");
    assert_non_null(at);
    size_t len = strlen(dumped) - 7 + strlen(raw) + 1;
    char *body = malloc(len);
    assert_non_null(body);
    snprintf(body, len, "%.*s%s%s", (int)(at - dumped), dumped, raw, at + 7);
    free(dumped);
    return body;
}

/*
 * A field telehook reads, present with the wrong type or over its cap: a malformed request
 * (TH_E_JSON, answered 400: nothing is sent), the field named in why, never its value. Each
 * field of the sample is replaced in turn by each value its type does not allow.
 */
static void test_wrong_types_are_malformed(void **state)
{
    (void)state;
    enum kind { STR, STR_OR_INT, OBJ };
    static const struct {
        const char *path;
        enum kind kind;
    } fields[] = {
        {"eventId", STR},
        {"eventTime", STR},
        {"eventType", STR},
        {"requestType", STR},
        {"data", OBJ},
        {"data.messageProfile", OBJ},
        {"data.messageProfile.phoneNumber", STR_OR_INT},
        {"data.messageProfile.otpCode", STR_OR_INT},
        {"data.messageProfile.deliveryChannel", STR},
        {"data.messageProfile.otpExpires", STR},
        {"data.messageProfile.locale", STR},
        {"data.messageProfile.msgTemplate", STR},
        {"data.userProfile", OBJ},
        {"data.userProfile.firstName", STR},
        {"data.userProfile.lastName", STR},
        {"data.userProfile.login", STR},
        {"data.userProfile.userId", STR},
        {"data.context", OBJ},
        {"data.context.request", OBJ},
        {"data.context.request.id", STR},
        {"data.context.request.ipAddress", STR},
    };
    static char overlong[4099];
    memset(overlong, '7', sizeof overlong - 1); /* digits: over every cap */
    overlong[0] = overlong[sizeof overlong - 2] = '"';
    static const char *const values[] = {"5",
                                         "-1",
                                         "1.5",
                                         "1e3",
                                         "true",
                                         "false",
                                         "null",
                                         "[\"voice\"]",
                                         "[]",
                                         "{\"a\":\"sms\"}",
                                         "\"SMS\"",
                                         "overlong",
                                         "18446744073709551615"};
    size_t checked = 0;
    for (size_t i = 0; i < sizeof fields / sizeof fields[0]; i++) {
        for (size_t j = 0; j < sizeof values / sizeof values[0]; j++) {
            const char *v = strcmp(values[j], "overlong") == 0 ? overlong : values[j];
            bool allowed = (fields[i].kind != OBJ && v != overlong && v[0] == '"') ||
                           (fields[i].kind == OBJ && v[0] == '{') ||
                           (fields[i].kind == STR_OR_INT && strcmp(v, "5") == 0);
            if (allowed)
                continue;
            char *body = sample_with(fields[i].path, v);
            struct th_okta_request r;
            char why[128];
            th_err e = decode(body, &r, why);
            if (e != TH_E_JSON)
                fail_msg("%s = %.20s: %s, not malformed", fields[i].path, v, th_strerror(e));
            char want[128];
            snprintf(want, sizeof want, "%s has the wrong type or is too long", fields[i].path);
            assert_string_equal(why, want);
            assert_null(r.phone); /* nothing decoded */
            assert_null(r.otp);
            free(body);
            checked++;
        }
    }
    assert_true(checked > 200);
    /* deliveryChannel: a string past its cap is no channel either (not a voice call) */
    struct th_okta_request r;
    char why[128];
    assert_int_equal(decode_mp("\"phoneNumber\":\"+12015550123\",\"otpCode\":\"1\","
                               "\"deliveryChannel\":\"voice call voice call voice call voice\"",
                               &r, why),
                     TH_E_JSON);
    /* the first wrong field is the one named */
    assert_int_equal(decode("{\"eventId\":1,\"data\":{\"messageProfile\":{\"phoneNumber\":[],"
                            "\"otpCode\":\"1\"}}}",
                            &r, why),
                     TH_E_JSON);
    assert_string_equal(why, "eventId has the wrong type or is too long");
    /* malformed beats unservable: a wrong type with the OTP missing is still malformed */
    assert_int_equal(decode_mp("\"phoneNumber\":\"+12015550123\",\"locale\":7", &r, why),
                     TH_E_JSON);
}

static void test_encode_result(void **state)
{
    (void)state;
    struct th_buf b;
    th_buf_init(&b, 4096);
    assert_int_equal(
        th_okta_encode_result(&b, "SUCCESSFUL", "outbox", "ob-1\"x", "attempts=1;ms=3"), TH_E_OK);
    json_error_t e;
    json_t *j = json_loads(th_buf_str(&b), 0, &e);
    assert_non_null(j);
    json_t *v = json_array_get(
        json_object_get(json_array_get(json_object_get(j, "commands"), 0), "value"), 0);
    assert_string_equal(json_string_value(json_object_get(
                            json_array_get(json_object_get(j, "commands"), 0), "type")),
                        "com.okta.telephony.action");
    assert_string_equal(json_string_value(json_object_get(v, "status")), "SUCCESSFUL");
    assert_string_equal(json_string_value(json_object_get(v, "provider")), "outbox");
    assert_string_equal(json_string_value(json_object_get(v, "transactionId")), "ob-1\"x");
    assert_string_equal(json_string_value(json_object_get(v, "transactionMetadata")),
                        "attempts=1;ms=3");
    json_decref(j);
    /* optional fields left out */
    th_buf_reset(&b);
    assert_int_equal(th_okta_encode_result(&b, "FAILED", NULL, NULL, NULL), TH_E_OK);
    assert_string_equal(th_buf_str(&b), "{\"commands\":[{\"type\":\"com.okta.telephony.action\","
                                        "\"value\":[{\"status\":\"FAILED\"}]}]}");
    th_buf_release(&b);
}

static void test_encode_error(void **state)
{
    (void)state;
    struct th_buf b;
    th_buf_init(&b, 4096);
    assert_int_equal(th_okta_encode_error(&b, "Could not send.", NULL), TH_E_OK);
    assert_string_equal(th_buf_str(&b), "{\"error\":{\"errorSummary\":\"Could not send.\"}}");
    th_buf_reset(&b);
    assert_int_equal(th_okta_encode_error(&b, "Could not send.", "invalid phone number"), TH_E_OK);
    json_error_t e;
    json_t *j = json_loads(th_buf_str(&b), 0, &e);
    assert_non_null(j);
    /* Okta's shape, whole: {"error":{"errorSummary":S,"errorCauses":[{"errorSummary":S,
     * "reason":R}]}}; a cause may also hold locationType, location and domain (we send none) */
    assert_int_equal(json_object_size(j), 1);
    json_t *error = json_object_get(j, "error");
    assert_true(json_is_object(error));
    assert_int_equal(json_object_size(error), 2);
    assert_string_equal(json_string_value(json_object_get(error, "errorSummary")),
                        "Could not send.");
    json_t *causes = json_object_get(error, "errorCauses");
    assert_true(json_is_array(causes));
    assert_int_equal(json_array_size(causes), 1);
    json_t *cause = json_array_get(causes, 0);
    assert_true(json_is_object(cause));
    assert_int_equal(json_object_size(cause), 2);
    assert_string_equal(json_string_value(json_object_get(cause, "errorSummary")),
                        "Could not send.");
    assert_string_equal(json_string_value(json_object_get(cause, "reason")),
                        "invalid phone number");
    json_decref(j);
    /* a tiny cap fails cleanly */
    struct th_buf small;
    th_buf_init(&small, 8);
    assert_int_equal(th_okta_encode_error(&small, "x", NULL), TH_E_TOOBIG);
    th_buf_release(&small);
    th_buf_release(&b);
}

/* Decoded into the request's arena: the strings lie there (nothing to release), whether the
 * body is padded (parsed in place) or not (copied by the parser first); errors are the same. */
static void test_decode_in_arena(void **state)
{
    (void)state;
    _Alignas(max_align_t) unsigned char mem[4096];
    struct th_arena a;
    th_arena_init(&a, mem, sizeof mem, 1 << 20);
    size_t len = strlen(SAMPLE);
    for (int padded = 0; padded < 2; padded++) {
        char *body = th_arena_alloc(&a, len + TH_OKTA_PADDING);
        assert_non_null(body);
        memcpy(body, SAMPLE, len);
        struct th_okta_request r;
        char why[128];
        assert_int_equal(th_okta_decode_in(&a, body, len, padded ? len + TH_OKTA_PADDING : len, &r,
                                           why, sizeof why),
                         TH_E_OK);
        assert_null(r.store_);
        assert_string_equal(r.otp, "11111");
        assert_string_equal(r.phone, "9876543210");
        assert_string_equal(r.login, "test.user@okta.com");
        assert_true((const unsigned char *)r.otp >= mem &&
                    (const unsigned char *)r.otp < mem + sizeof mem);
        assert_int_equal(r.otp_expires_ms, 1643406514321LL);
        char *bad = th_arena_alloc(&a, 5 + TH_OKTA_PADDING);
        assert_non_null(bad);
        memcpy(bad, "{\"a\":", 5);
        assert_int_equal(
            th_okta_decode_in(&a, bad, 5, padded ? 5 + TH_OKTA_PADDING : 5, &r, why, sizeof why),
            TH_E_JSON);
    }
    th_arena_cleanse_release(&a);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_sample),
        cmocka_unit_test(test_channels),
        cmocka_unit_test(test_numbers_as_json_numbers),
        cmocka_unit_test(test_malformed),
        cmocka_unit_test(test_unservable),
        cmocka_unit_test(test_absent_optional_fields),
        cmocka_unit_test(test_wrong_types_are_malformed),
        cmocka_unit_test(test_encode_result),
        cmocka_unit_test(test_encode_error),
        cmocka_unit_test(test_decode_in_arena),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
