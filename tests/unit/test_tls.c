/* Unit tests: http/tls (the HTTPS certificate and key: parsing, matching, expiry, file modes). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>

#include <gnutls/gnutls.h>
#include <gnutls/x509.h>

#include "http/tls.h"

#include "tmpdir.h"

#define NOW ((int64_t)1800000000) /* the tests' clock */

struct pem {
    gnutls_datum_t cert, key;
};

/* A self-signed P-256 certificate valid [from, until] for 127.0.0.1 and localhost. */
static struct pem make_pem(int64_t from, int64_t until)
{
    struct pem p = {{NULL, 0}, {NULL, 0}};
    gnutls_x509_privkey_t key;
    gnutls_x509_crt_t crt;
    assert_int_equal(gnutls_x509_privkey_init(&key), 0);
    assert_int_equal(gnutls_x509_privkey_generate(
                         key, GNUTLS_PK_ECDSA, GNUTLS_CURVE_TO_BITS(GNUTLS_ECC_CURVE_SECP256R1), 0),
                     0);
    assert_int_equal(gnutls_x509_crt_init(&crt), 0);
    gnutls_x509_crt_set_version(crt, 3);
    unsigned char serial[8] = {1, 2, 3, 4, 5, 6, 7, (unsigned char)rand()};
    gnutls_x509_crt_set_serial(crt, serial, sizeof serial);
    gnutls_x509_crt_set_activation_time(crt, (time_t)from);
    gnutls_x509_crt_set_expiration_time(crt, (time_t)until);
    gnutls_x509_crt_set_dn_by_oid(crt, GNUTLS_OID_X520_COMMON_NAME, 0, "telehook test", 13);
    unsigned char ip[4] = {127, 0, 0, 1};
    gnutls_x509_crt_set_subject_alt_name(crt, GNUTLS_SAN_IPADDRESS, ip, 4, GNUTLS_FSAN_APPEND);
    gnutls_x509_crt_set_subject_alt_name(crt, GNUTLS_SAN_DNSNAME, "localhost", 9,
                                         GNUTLS_FSAN_APPEND);
    assert_int_equal(gnutls_x509_crt_set_key(crt, key), 0);
    assert_int_equal(gnutls_x509_crt_sign2(crt, crt, key, GNUTLS_DIG_SHA256, 0), 0);
    assert_int_equal(gnutls_x509_crt_export2(crt, GNUTLS_X509_FMT_PEM, &p.cert), 0);
    assert_int_equal(gnutls_x509_privkey_export2(key, GNUTLS_X509_FMT_PEM, &p.key), 0);
    gnutls_x509_crt_deinit(crt);
    gnutls_x509_privkey_deinit(key);
    return p;
}

static void free_pem(struct pem *p)
{
    gnutls_free(p->cert.data);
    gnutls_free(p->key.data);
}

static th_err parse(const struct pem *cert, const struct pem *key, int64_t now,
                    struct th_tls_creds **c, char *warn, char *err)
{
    return th_tls_creds_parse((const char *)cert->cert.data, cert->cert.size,
                              (const char *)key->key.data, key->key.size, now, c, warn, 512, err,
                              512);
}

static void test_pair_ok(void **state)
{
    (void)state;
    struct pem p = make_pem(NOW - 3600, NOW + 90 * 86400);
    struct th_tls_creds *c = NULL;
    char warn[512], err[512];
    assert_int_equal(parse(&p, &p, NOW, &c, warn, err), TH_E_OK);
    assert_non_null(c);
    assert_string_equal(warn, "");
    assert_int_equal(th_tls_creds_not_after(c), NOW + 90 * 86400);
    assert_string_equal(th_tls_creds_names(c), "127.0.0.1, localhost");
    th_tls_creds_free(c);
    free_pem(&p);
}

static void test_key_mismatch_refused(void **state)
{
    (void)state;
    struct pem a = make_pem(NOW - 3600, NOW + 90 * 86400);
    struct pem b = make_pem(NOW - 3600, NOW + 90 * 86400);
    struct th_tls_creds *c = NULL;
    char warn[512], err[512];
    assert_int_equal(parse(&a, &b, NOW, &c, warn, err), TH_E_CONFIG);
    assert_null(c);
    assert_non_null(strstr(err, "does not match"));
    assert_null(strstr(err, "PRIVATE")); /* nothing of the key in the message */
    free_pem(&a);
    free_pem(&b);
}

static void test_expired_refused(void **state)
{
    (void)state;
    struct pem p = make_pem(NOW - 90 * 86400, NOW - 60);
    struct th_tls_creds *c = NULL;
    char warn[512], err[512];
    assert_int_equal(parse(&p, &p, NOW, &c, warn, err), TH_E_CONFIG);
    assert_null(c);
    assert_non_null(strstr(err, "expired"));
    /* the same pair a minute before its end: taken, with a warning */
    assert_int_equal(parse(&p, &p, NOW - 120, &c, warn, err), TH_E_OK);
    th_tls_creds_free(c);
    free_pem(&p);
}

static void test_expiring_soon_warns(void **state)
{
    (void)state;
    struct pem p = make_pem(NOW - 3600, NOW + TH_TLS_EXPIRY_WARN_S - 60);
    struct th_tls_creds *c = NULL;
    char warn[512], err[512];
    assert_int_equal(parse(&p, &p, NOW, &c, warn, err), TH_E_OK);
    assert_non_null(strstr(warn, "expires in"));
    th_tls_creds_free(c);
    /* just past the window: no warning */
    assert_int_equal(parse(&p, &p, NOW - 120, &c, warn, err), TH_E_OK);
    assert_string_equal(warn, "");
    th_tls_creds_free(c);
    free_pem(&p);
}

static void test_garbage_refused(void **state)
{
    (void)state;
    struct pem p = make_pem(NOW - 3600, NOW + 90 * 86400);
    struct th_tls_creds *c = NULL;
    char warn[512], err[512];
    const char junk[] = "-----BEGIN CERTIFICATE-----\nnot base64 !!\n-----END CERTIFICATE-----\n";
    assert_int_equal(th_tls_creds_parse(junk, sizeof junk - 1, (const char *)p.key.data, p.key.size,
                                        NOW, &c, warn, 512, err, 512),
                     TH_E_CONFIG);
    assert_null(c);
    assert_int_equal(th_tls_creds_parse((const char *)p.cert.data, p.cert.size, junk,
                                        sizeof junk - 1, NOW, &c, warn, 512, err, 512),
                     TH_E_CONFIG);
    assert_non_null(strstr(err, "private key"));
    assert_int_equal(th_tls_creds_parse("", 0, "", 0, NOW, &c, warn, 512, err, 512), TH_E_CONFIG);
    free_pem(&p);
}

static void write_file(const char *path, const gnutls_datum_t *d, mode_t mode)
{
    FILE *f = fopen(path, "wb");
    assert_non_null(f);
    assert_int_equal(fwrite(d->data, 1, d->size, f), d->size);
    fclose(f);
    assert_int_equal(chmod(path, mode), 0);
}

static void test_key_file_modes(void **state)
{
    (void)state;
    struct pem p = make_pem(time(NULL) - 3600, time(NULL) + 90 * 86400);
    char cert[300], key[300];
    snprintf(cert, sizeof cert, "%s/cert.pem", tmpdir);
    snprintf(key, sizeof key, "%s/key.pem", tmpdir);
    write_file(cert, &p.cert, 0644);
    struct th_tls_creds *c = NULL;
    char warn[1024], err[1024];

    write_file(key, &p.key, 0600);
    assert_int_equal(
        th_tls_creds_load(cert, key, time(NULL), &c, warn, sizeof warn, err, sizeof err), TH_E_OK);
    assert_string_equal(warn, "");
    th_tls_creds_free(c);

    chmod(key, 0640); /* its group can read it: taken, with a warning */
    assert_int_equal(
        th_tls_creds_load(cert, key, time(NULL), &c, warn, sizeof warn, err, sizeof err), TH_E_OK);
    assert_non_null(strstr(warn, "open to its group"));
    th_tls_creds_free(c);

    chmod(key, 0644); /* everyone can: refused */
    c = NULL;
    assert_int_equal(
        th_tls_creds_load(cert, key, time(NULL), &c, warn, sizeof warn, err, sizeof err),
        TH_E_CONFIG);
    assert_null(c);
    assert_non_null(strstr(err, "server.tls_key"));
    assert_non_null(strstr(err, "open to other users"));

    assert_int_equal(
        th_tls_creds_load(cert, tmpdir, time(NULL), &c, warn, sizeof warn, err, sizeof err),
        TH_E_CONFIG); /* a directory */
    assert_non_null(strstr(err, "not a regular file"));
    free_pem(&p);
}

static void test_install_swaps(void **state)
{
    (void)state;
    struct pem p = make_pem(NOW - 3600, NOW + 90 * 86400);
    struct th_tls_creds *a = NULL, *b = NULL;
    char warn[512], err[512];
    assert_int_equal(parse(&p, &p, NOW, &a, warn, err), TH_E_OK);
    assert_int_equal(parse(&p, &p, NOW, &b, warn, err), TH_E_OK);
    assert_null(th_tls_install(a));
    assert_ptr_equal(th_tls_current(), a);
    assert_ptr_equal(th_tls_install(b), a);
    assert_ptr_equal(th_tls_install(NULL), b);
    assert_null(th_tls_current());
    th_tls_creds_free(a);
    th_tls_creds_free(b);
    th_tls_creds_free(NULL);
    free_pem(&p);
}

/* The priority string parses, and allows TLS 1.2/1.3 AEAD suites with ephemeral keys only. */
static void test_priorities(void **state)
{
    (void)state;
    gnutls_priority_t p;
    const char *at = NULL;
    assert_int_equal(gnutls_priority_init(&p, TH_TLS_PRIORITIES, &at), 0);
    unsigned suites = 0;
    for (unsigned i = 0;; i++) {
        unsigned idx;
        int rc = gnutls_priority_get_cipher_suite_index(p, i, &idx);
        if (rc == GNUTLS_E_REQUESTED_DATA_NOT_AVAILABLE)
            break;
        if (rc < 0)
            continue;
        gnutls_kx_algorithm_t kx;
        gnutls_cipher_algorithm_t cipher;
        gnutls_protocol_t version;
        const char *name = gnutls_cipher_suite_info(idx, NULL, &kx, &cipher, NULL, &version);
        assert_non_null(name);
        assert_true(cipher == GNUTLS_CIPHER_AES_128_GCM || cipher == GNUTLS_CIPHER_AES_256_GCM ||
                    cipher == GNUTLS_CIPHER_CHACHA20_POLY1305);
        assert_true(version == GNUTLS_TLS1_2 || version == GNUTLS_TLS1_3);
        if (version == GNUTLS_TLS1_2) /* TLS 1.3 suites name no key exchange: always ephemeral */
            assert_true(kx == GNUTLS_KX_ECDHE_ECDSA || kx == GNUTLS_KX_ECDHE_RSA ||
                        kx == GNUTLS_KX_DHE_RSA);
        suites++;
    }
    assert_true(suites >= 6);
    const unsigned *list;
    int n = gnutls_priority_protocol_list(p, &list);
    assert_int_equal(n, 2);
    for (int i = 0; i < n; i++)
        assert_true(list[i] == GNUTLS_TLS1_2 || list[i] == GNUTLS_TLS1_3);
    gnutls_priority_deinit(p);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_pair_ok),         cmocka_unit_test(test_key_mismatch_refused),
        cmocka_unit_test(test_expired_refused), cmocka_unit_test(test_expiring_soon_warns),
        cmocka_unit_test(test_garbage_refused), cmocka_unit_test(test_key_file_modes),
        cmocka_unit_test(test_install_swaps),   cmocka_unit_test(test_priorities),
    };
    return cmocka_run_group_tests(tests, tmpdir_setup, tmpdir_teardown);
}
