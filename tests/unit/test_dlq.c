/* Unit tests: dlq (AES-256-GCM sealing of dead-letter payloads, keys, rotation). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <stdlib.h>
#include <string.h>

#include "config/config.h"
#include "dlq/dlq.h"

static char err[512];

static struct th_dlq *make(char **env)
{
    struct th_config cfg;
    assert_int_equal(th_config_load(&cfg, NULL, env, err, sizeof err), TH_E_OK);
    struct th_dlq *d = NULL;
    th_err e = th_dlq_new(&cfg, &d, err, sizeof err);
    th_config_release(&cfg);
    return e == TH_E_OK ? d : NULL;
}

#define K1 "TELEHOOK_DLQ_KEY=AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8="
#define K2 "TELEHOOK_DLQ_KEY=000102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f"
#define K3 "TELEHOOK_DLQ_KEY=ff0102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f"

static void test_seal_open_roundtrip(void **state)
{
    (void)state;
    char *env[] = {(char *)K1, NULL};
    struct th_dlq *d = make(env);
    assert_non_null(d);
    assert_true(th_dlq_can_seal(d));
    assert_string_equal(th_dlq_key_id(d), "k1");
    const char *msg = "{\"to\":\"+12015550123\",\"body\":\"Your code is 482913\"}";
    unsigned char *blob;
    size_t len;
    assert_int_equal(th_dlq_seal(d, "dlq-1", msg, strlen(msg), &blob, &len), TH_E_OK);
    assert_int_equal(len, 12 + strlen(msg) + 16);
    assert_null(memmem(blob, len, "482913", 6)); /* the code is not readable */
    char *plain;
    size_t plen;
    assert_int_equal(th_dlq_open(d, "dlq-1", "k1", blob, len, &plain, &plen), TH_E_OK);
    assert_string_equal(plain, msg);
    free(plain);
    /* bound to its entry: another id does not open it */
    assert_int_equal(th_dlq_open(d, "dlq-2", "k1", blob, len, &plain, &plen), TH_E_AUTH);
    /* tampering is detected */
    blob[20] ^= 1;
    assert_int_equal(th_dlq_open(d, "dlq-1", "k1", blob, len, &plain, &plen), TH_E_AUTH);
    blob[20] ^= 1;
    assert_int_equal(th_dlq_open(d, "dlq-1", "k1", blob, 20, &plain, &plen), TH_E_AUTH);
    /* an unknown key id */
    assert_int_equal(th_dlq_open(d, "dlq-1", "k9", blob, len, &plain, &plen), TH_E_NOTFOUND);
    /* two seals of the same text differ (a fresh nonce each time) */
    unsigned char *blob2;
    size_t len2;
    assert_int_equal(th_dlq_seal(d, "dlq-1", msg, strlen(msg), &blob2, &len2), TH_E_OK);
    assert_int_not_equal(memcmp(blob, blob2, len), 0);
    free(blob2);
    th_dlq_free(d);

    /* the same key in hex opens it */
    char *hex[] = {(char *)K2, NULL};
    d = make(hex);
    assert_non_null(d);
    assert_int_equal(th_dlq_open(d, "dlq-1", "k1", blob, len, &plain, &plen), TH_E_OK);
    free(plain);
    th_dlq_free(d);

    /* a different key with the same id does not */
    char *other[] = {(char *)K3, NULL};
    d = make(other);
    assert_int_equal(th_dlq_open(d, "dlq-1", "k1", blob, len, &plain, &plen), TH_E_AUTH);
    th_dlq_free(d);
    free(blob);
}

static void test_rotation(void **state)
{
    (void)state;
    char *old[] = {(char *)K1, NULL};
    struct th_dlq *d = make(old);
    unsigned char *blob;
    size_t len;
    assert_int_equal(th_dlq_seal(d, "e", "x", 1, &blob, &len), TH_E_OK);
    th_dlq_free(d);
    char *rotated[] = {
        (char *)K3, (char *)"TELEHOOK_DLQ_KEY_ID=k2",
        (char *)"TELEHOOK_DLQ_PREVIOUS_KEY=AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8=",
        (char *)"TELEHOOK_DLQ_PREVIOUS_KEY_ID=k1", NULL};
    d = make(rotated);
    assert_non_null(d);
    assert_string_equal(th_dlq_key_id(d), "k2");
    char *plain;
    size_t plen;
    assert_int_equal(th_dlq_open(d, "e", "k1", blob, len, &plain, &plen), TH_E_OK);
    assert_string_equal(plain, "x");
    free(plain);
    free(blob);
    th_dlq_free(d);
}

static void test_bad_keys(void **state)
{
    (void)state;
    const char *bad[] = {
        "TELEHOOK_DLQ_KEY=short", "TELEHOOK_DLQ_KEY=AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHg==",
        "TELEHOOK_DLQ_KEY=zz0102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f"};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        char *env[] = {(char *)bad[i], NULL};
        assert_null(make(env));
        assert_non_null(strstr(err, "[dlq] key"));
    }
    /* no key: enabled, but nothing can be sealed */
    char *none[] = {NULL};
    struct th_dlq *d = make(none);
    assert_true(th_dlq_enabled(d));
    assert_false(th_dlq_can_seal(d));
    assert_string_equal(th_dlq_key_id(d), "");
    unsigned char *blob;
    size_t len;
    assert_int_equal(th_dlq_seal(d, "e", "x", 1, &blob, &len), TH_E_INVAL);
    th_dlq_free(d);
}

static void test_keygen(void **state)
{
    (void)state;
    char k[45], k2[45];
    assert_int_equal(th_dlq_keygen(k), TH_E_OK);
    assert_int_equal(th_dlq_keygen(k2), TH_E_OK);
    assert_int_equal(strlen(k), 44);
    assert_string_not_equal(k, k2);
    char var[80];
    snprintf(var, sizeof var, "TELEHOOK_DLQ_KEY=%s", k);
    char *env[] = {var, NULL};
    struct th_dlq *d = make(env);
    assert_non_null(d);
    th_dlq_free(d);
}

/* The KMS settings' rules, all checked before any call to KMS (no network here). */
static void test_kms_settings(void **state)
{
    (void)state;
    struct {
        const char *env[4];
        const char *why;
    } cases[] = {
        {{K1, "TELEHOOK_DLQ_KMS_KEY_ID=alias/x", "TELEHOOK_DLQ_KMS_DATA_KEY_FILE=/nonexistent"},
         "exclude each other"},
        {{"TELEHOOK_DLQ_KMS_KEY_ID=alias/x"}, "needs kms_data_key_file"},
        {{"TELEHOOK_DLQ_KMS_DATA_KEY_FILE=/x"}, "need kms_key_id"},
        {{"TELEHOOK_DLQ_PREVIOUS_KMS_DATA_KEY_FILE=/x"}, "need kms_key_id"},
        {{"TELEHOOK_DLQ_KMS_KEY_ID=alias/x", "TELEHOOK_DLQ_KMS_DATA_KEY_FILE=/nonexistent/k"},
         "keygen --kms"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        char *env[5] = {0};
        for (size_t j = 0; j < 4 && cases[i].env[j]; j++)
            env[j] = (char *)cases[i].env[j];
        err[0] = '\0';
        assert_null(make(env));
        if (!strstr(err, cases[i].why))
            fail_msg("case %zu: %s", i, err);
    }
}

/* The payload round trip: what the hook seals is what a replay sends, field for field. */
static void test_payload_roundtrip(void **state)
{
    (void)state;
    char *env[] = {(char *)K1, NULL};
    struct th_dlq *d = make(env);
    assert_non_null(d);
    const char text[] = "<speak>Your code is <say-as>482913</say-as> \"quoted\" \xc3\xa9</speak>";
    const struct th_send m = {
        .request_id = "req-7",
        .to = "+12015550123",
        .region = "US",
        .channel = TH_CHANNEL_VOICE,
        .language = "fr",
        .voice_id = "Lea",
        .body = text,
        .otp_expires_ms = 1700000000123LL,
    };
    unsigned char *blob;
    size_t len;
    assert_int_equal(th_dlq_payload_encode(d, "dlq-9", &m, &blob, &len), TH_E_OK);
    assert_null(memmem(blob, len, "482913", 6)); /* sealed */
    struct th_dlq_payload pl;
    assert_int_equal(th_dlq_payload_decode(d, "dlq-9", "k1", blob, len, &pl), TH_E_OK);
    assert_string_equal(pl.msg.request_id, "req-7");
    assert_string_equal(pl.msg.to, "+12015550123");
    assert_string_equal(pl.msg.region, "US");
    assert_int_equal(pl.msg.channel, TH_CHANNEL_VOICE);
    assert_string_equal(pl.msg.language, "fr");
    assert_string_equal(pl.msg.voice_id, "Lea");
    assert_string_equal(pl.msg.body, text);
    assert_int_equal(pl.msg.deadline_us, 0); /* not kept: a replay sets its own */
    assert_int_equal(pl.msg.otp_expires_ms, 1700000000123LL);
    assert_non_null(pl.doc);
    th_dlq_payload_release(&pl);
    assert_null(pl.doc);
    th_dlq_payload_release(&pl); /* twice: a no-op */
    /* an SMS without language or voice: defaults, not NULL */
    const struct th_send sms = {.request_id = "r",
                                .to = "+33612345678",
                                .region = "FR",
                                .body = "code 1",
                                .deadline_us = 123};
    free(blob);
    assert_int_equal(th_dlq_payload_encode(d, "dlq-10", &sms, &blob, &len), TH_E_OK);
    assert_int_equal(th_dlq_payload_decode(d, "dlq-10", "k1", blob, len, &pl), TH_E_OK);
    assert_int_equal(pl.msg.channel, TH_CHANNEL_SMS);
    assert_string_equal(pl.msg.language, "");
    assert_string_equal(pl.msg.voice_id, "");
    assert_string_equal(pl.msg.body, "code 1");
    assert_int_equal(pl.msg.otp_expires_ms, 0);
    th_dlq_payload_release(&pl);
    /* bound to its entry, and the open's errors come through */
    assert_int_equal(th_dlq_payload_decode(d, "dlq-9", "k1", blob, len, &pl), TH_E_AUTH);
    assert_null(pl.doc);
    assert_int_equal(th_dlq_payload_decode(d, "dlq-10", "k9", blob, len, &pl), TH_E_NOTFOUND);
    free(blob);
    /* sealed but not a payload */
    assert_int_equal(th_dlq_seal(d, "dlq-11", "[1]", 3, &blob, &len), TH_E_OK);
    assert_int_equal(th_dlq_payload_decode(d, "dlq-11", "k1", blob, len, &pl), TH_E_INVAL);
    assert_null(pl.doc);
    free(blob);
    th_dlq_free(d);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_seal_open_roundtrip),
        cmocka_unit_test(test_payload_roundtrip),
        cmocka_unit_test(test_rotation),
        cmocka_unit_test(test_bad_keys),
        cmocka_unit_test(test_keygen),
        cmocka_unit_test(test_kms_settings),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
