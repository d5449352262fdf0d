/* Unit tests: common/hmac (RFC 4231 test vectors, parts, long keys, agreement with OpenSSL). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <stdio.h>
#include <string.h>

#include <openssl/evp.h>
#include <openssl/hmac.h>

#include "common/hmac.h"

static void hex(const unsigned char *p, size_t n, char *out)
{
    for (size_t i = 0; i < n; i++)
        sprintf(out + 2 * i, "%02x", p[i]);
}

static void check(const void *key, size_t klen, const char *msg, const char *want)
{
    struct th_hmac_key *k;
    assert_int_equal(th_hmac_key_new(key, klen, &k), TH_E_OK);
    unsigned char mac[32];
    const void *parts[] = {msg};
    size_t lens[] = {strlen(msg)};
    th_hmac_sha256(k, parts, lens, 1, mac);
    char got[65];
    hex(mac, 32, got);
    assert_string_equal(got, want);
    /* the same message in three parts gives the same MAC */
    size_t n = strlen(msg), a = n / 3, b = n / 3;
    const void *p3[] = {msg, msg + a, msg + a + b};
    size_t l3[] = {a, b, n - a - b};
    unsigned char mac3[32];
    th_hmac_sha256(k, p3, l3, 3, mac3);
    assert_memory_equal(mac, mac3, 32);
    th_hmac_key_free(k);
    /* the one-shot form agrees */
    unsigned char once[32];
    th_hmac_sha256_once(key, klen, msg, strlen(msg), once);
    assert_memory_equal(mac, once, 32);
}

static void test_rfc4231(void **state)
{
    (void)state;
    unsigned char k1[20];
    memset(k1, 0x0b, sizeof k1);
    check(k1, sizeof k1, "Hi There",
          "b0344c61d8db38535ca8afceaf0bf12b881dc200c9833da726e9376c2e32cff7");
    check("Jefe", 4, "what do ya want for nothing?",
          "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843");
    unsigned char k6[131]; /* longer than a block: hashed first */
    memset(k6, 0xaa, sizeof k6);
    check(k6, sizeof k6, "Test Using Larger Than Block-Size Key - Hash Key First",
          "60e431591ee0b67f0d8a26aacbf5b77f8e0bc6213728c5140546040f0ee37f54");
}

static void test_agrees_with_openssl(void **state)
{
    (void)state;
    const char *key = "a server secret of some length";
    struct th_hmac_key *k;
    assert_int_equal(th_hmac_key_new(key, strlen(key), &k), TH_E_OK);
    char msg[300];
    for (int len = 0; len < 300; len += 7) {
        memset(msg, 'a' + len % 26, (size_t)len);
        unsigned char a[32], b[32];
        unsigned int bl = 32;
        const void *parts[] = {msg};
        size_t lens[] = {(size_t)len};
        th_hmac_sha256(k, parts, lens, 1, a);
        HMAC(EVP_sha256(), key, (int)strlen(key), (const unsigned char *)msg, (size_t)len, b, &bl);
        assert_memory_equal(a, b, 32);
    }
    th_hmac_key_free(k);
    th_hmac_key_free(NULL);
}

static void test_sha256(void **state)
{
    (void)state;
    unsigned char d[32];
    char got[65];
    th_sha256("abc", 3, d); /* FIPS 180-2 */
    hex(d, 32, got);
    assert_string_equal(got, "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");
    th_sha256("", 0, d);
    hex(d, 32, got);
    assert_string_equal(got, "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855");
    /* streaming, in uneven pieces, over a block boundary */
    const char *m = "abcdbcdecdefdefgefghfghighijhijkijkljklmklmnlmnomnopnopq";
    struct th_sha256 s;
    th_sha256_init(&s);
    th_sha256_update(&s, m, 5);
    th_sha256_update(&s, m + 5, 0);
    th_sha256_update(&s, m + 5, strlen(m) - 5);
    th_sha256_final(&s, d);
    hex(d, 32, got);
    assert_string_equal(got, "248d6a61d20638b8e5c026930c3e6039a33ce45964ff2167f6ecedd419db06c1");
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_rfc4231),
        cmocka_unit_test(test_agrees_with_openssl),
        cmocka_unit_test(test_sha256),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
