/*
 * Unit tests: aws/kms (KMS JSON 1.1): the request bodies, the strict base64, the
 * GenerateDataKey / Decrypt answers (the AWS API reference's shapes) and every refusal, the
 * error answers.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <jansson.h>
#include <stdio.h>
#include <string.h>

#include "aws/kms.h"
#include "common/buf.h"

/* 32 bytes 0..31 */
#define KEY_B64 "AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8="
#define BLOB                                                                                       \
    "AQIDAHhBUiZ4tBCV0NrIBqOQ8zj6kPwFQ8SAHpNQ2hSsFIFzBwFoVQlALNqJQ5G+l2kOwD0PAAAAfjB8BgkqhkiG"

static void test_bodies(void **state)
{
    (void)state;
    struct th_buf b;
    th_buf_init(&b, 8192);
    assert_int_equal(th_kms_generate_body(&b, "alias/telehook-dlq"), TH_E_OK);
    assert_string_equal(b.data, "{\"KeyId\":\"alias/telehook-dlq\",\"KeySpec\":\"AES_256\"}");
    assert_int_equal(th_kms_decrypt_body(&b, BLOB, "arn:aws:kms:us-east-1:1:key/k"), TH_E_OK);
    assert_string_equal(b.data, "{\"CiphertextBlob\":\"" BLOB
                                "\",\"KeyId\":\"arn:aws:kms:us-east-1:1:key/k\"}");
    assert_int_equal(th_kms_decrypt_body(&b, BLOB, ""), TH_E_OK); /* KMS finds the key */
    assert_string_equal(b.data, "{\"CiphertextBlob\":\"" BLOB "\"}");
    /* refused: a key id with a quote, space or control character, empty, a bad blob */
    assert_int_equal(th_kms_generate_body(&b, ""), TH_E_INVAL);
    assert_int_equal(th_kms_generate_body(&b, "alias/a\"b"), TH_E_OK); /* escaped by jansson */
    assert_non_null(strstr(b.data, "alias/a\\\"b"));
    assert_int_equal(th_kms_generate_body(&b, "alias/a b"), TH_E_INVAL);
    assert_int_equal(th_kms_generate_body(&b, "alias/a\nb"), TH_E_INVAL);
    assert_int_equal(th_kms_decrypt_body(&b, "not base64!", "k"), TH_E_INVAL);
    assert_int_equal(th_kms_decrypt_body(&b, "", "k"), TH_E_INVAL);
    th_buf_release(&b);
}

static void test_base64_strict(void **state)
{
    (void)state;
    unsigned char out[64];
    assert_int_equal(th_kms_b64_decode(KEY_B64, strlen(KEY_B64), out, sizeof out), 32);
    for (int i = 0; i < 32; i++)
        assert_int_equal(out[i], i);
    assert_int_equal(th_kms_b64_decode("TWFu", 4, out, sizeof out), 3);
    assert_memory_equal(out, "Man", 3);
    assert_int_equal(th_kms_b64_decode("TWE=", 4, out, sizeof out), 2);
    assert_int_equal(th_kms_b64_decode("TQ==", 4, out, sizeof out), 1);
    assert_int_equal(out[0], 'M');
    const char *bad[] = {"",     "TWF",  "TWFuT", "TW=u", "T===", "TWF\n", "TWE-",
                         "TWF_", "TR==", "TWF=",  "=TWF", " TWF", "TWFu=", "TWE==="};
    /* "TR==" and "TWF=" have non-zero unused bits: not canonical */
    for (size_t i = 0; i < sizeof bad / sizeof *bad; i++)
        assert_int_equal(th_kms_b64_decode(bad[i], strlen(bad[i]), out, sizeof out), -1);
    assert_int_equal(th_kms_b64_decode(KEY_B64, strlen(KEY_B64), out, 31), -1); /* cap */
    assert_int_equal(th_kms_b64_decode(KEY_B64, strlen(KEY_B64), NULL, 0), 32); /* count */
}

static void test_answers(void **state)
{
    (void)state;
    unsigned char key[TH_KMS_KEY_LEN];
    char blob[TH_KMS_MAX_BLOB + 1], why[160];
    const char gen[] =
        "{\"CiphertextBlob\":\"" BLOB "\",\"KeyId\":\"arn:aws:kms:us-east-1:1:key/k\","
        "\"KeyMaterialId\":\"x\",\"Plaintext\":\"" KEY_B64 "\"}";
    assert_int_equal(th_kms_parse_answer(gen, strlen(gen), key, blob, sizeof blob, why, sizeof why),
                     TH_E_OK);
    assert_string_equal(blob, BLOB);
    for (int i = 0; i < 32; i++)
        assert_int_equal(key[i], i);
    const char dec[] = "{\"EncryptionAlgorithm\":\"SYMMETRIC_DEFAULT\",\"KeyId\":\"k\","
                       "\"Plaintext\":\"" KEY_B64 "\"}";
    memset(key, 0, sizeof key);
    assert_int_equal(th_kms_parse_answer(dec, strlen(dec), key, NULL, 0, why, sizeof why), TH_E_OK);
    assert_int_equal(key[31], 31);

    const char *bad[] = {
        "",
        "[]",
        "{}",
        "{\"Plaintext\":1}",
        "{\"Plaintext\":\"AAECAw==\"}",                                         /* 4 bytes */
        "{\"Plaintext\":\"" KEY_B64 "\",\"Plaintext\":\"" KEY_B64 "\"}",        /* duplicate */
        "{\"Plaintext\":\"" KEY_B64 "\"",                                       /* truncated */
        "{\"Plaintext\":\"AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8\"}",      /* unpadded */
        "{\"Plaintext\":\"AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8AAAA=\"}", /* 35 bytes */
    };
    for (size_t i = 0; i < sizeof bad / sizeof *bad; i++) {
        memset(key, 0x5a, sizeof key);
        why[0] = '\0';
        assert_int_equal(th_kms_parse_answer(bad[i], strlen(bad[i]), key, NULL, 0, why, sizeof why),
                         TH_E_INVAL);
        assert_true(why[0] != '\0');
        assert_int_equal(key[0], 0x5a); /* written only on success */
    }
    /* GenerateDataKey needs the blob too, as base64 that fits */
    const char noblob[] = "{\"Plaintext\":\"" KEY_B64 "\"}";
    assert_int_equal(
        th_kms_parse_answer(noblob, strlen(noblob), key, blob, sizeof blob, why, sizeof why),
        TH_E_INVAL);
    assert_int_equal(th_kms_parse_answer(gen, strlen(gen), key, blob, 8, why, sizeof why),
                     TH_E_INVAL);
    const char badblob[] = "{\"CiphertextBlob\":\"a b\",\"Plaintext\":\"" KEY_B64 "\"}";
    assert_int_equal(
        th_kms_parse_answer(badblob, strlen(badblob), key, blob, sizeof blob, why, sizeof why),
        TH_E_INVAL);
    /* the reason never quotes the key */
    assert_null(strstr(why, KEY_B64));
    /* bounded: an answer over the cap is refused without being parsed */
    static char big[TH_KMS_MAX_ANSWER + 2];
    memset(big, ' ', sizeof big - 1);
    memcpy(big, noblob, strlen(noblob));
    assert_int_equal(th_kms_parse_answer(big, sizeof big - 1, key, NULL, 0, why, sizeof why),
                     TH_E_INVAL);
}

static void test_errors(void **state)
{
    (void)state;
    char type[64], msg[128];
    const char a[] = "{\"__type\":\"AccessDeniedException\",\"message\":\"User: arn:aws:iam::1:"
                     "user/x is not authorized to perform: kms:Decrypt\"}";
    assert_true(th_kms_parse_error(a, strlen(a), type, sizeof type, msg, sizeof msg));
    assert_string_equal(type, "AccessDeniedException");
    assert_non_null(strstr(msg, "kms:Decrypt"));
    const char b[] = "{\"__type\":\"com.amazonaws.kms#InvalidCiphertextException\","
                     "\"Message\":\"bad\\u0001\"}";
    assert_true(th_kms_parse_error(b, strlen(b), type, sizeof type, msg, sizeof msg));
    assert_string_equal(type, "InvalidCiphertextException");
    assert_string_equal(msg, "bad?"); /* control characters do not reach a log line */
    const char c[] = "{\"__type\":\"NotFoundException\"}";
    assert_true(th_kms_parse_error(c, strlen(c), type, sizeof type, msg, sizeof msg));
    assert_string_equal(msg, "");
    assert_false(th_kms_parse_error("{}", 2, type, sizeof type, msg, sizeof msg));
    assert_false(th_kms_parse_error("<html>", 6, type, sizeof type, msg, sizeof msg));
    assert_false(th_kms_parse_error("{\"__type\":3}", 12, type, sizeof type, msg, sizeof msg));
    /* cut to fit */
    assert_true(th_kms_parse_error(a, strlen(a), type, 7, msg, 5));
    assert_string_equal(type, "Access");
    assert_string_equal(msg, "User");
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_bodies),
        cmocka_unit_test(test_base64_strict),
        cmocka_unit_test(test_answers),
        cmocka_unit_test(test_errors),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
