/* Unit tests: net/trust (CA files and directories, URLs a code may go to, handle trust). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/x509.h>

#include "net/http.h"
#include "net/trust.h"

#include "tmpdir.h"

static const char *path_of(const char *name)
{
    static char path[4][256];
    static int n;
    char *p = path[n++ % 4];
    snprintf(p, sizeof path[0], "%s/%s", tmpdir, name);
    return p;
}

static const char *write_file(const char *name, const char *content)
{
    const char *p = path_of(name);
    FILE *f = fopen(p, "w");
    assert_non_null(f);
    fputs(content, f);
    fclose(f);
    return p;
}

/* A self-signed CA certificate in PEM, made here (no fixture to go stale). */
static char *make_ca_pem(void)
{
    EVP_PKEY *key = EVP_PKEY_Q_keygen(NULL, NULL, "EC", "P-256");
    X509 *x = X509_new();
    assert_non_null(key);
    assert_non_null(x);
    X509_set_version(x, 2);
    ASN1_INTEGER_set(X509_get_serialNumber(x), 1);
    X509_gmtime_adj(X509_getm_notBefore(x), 0);
    X509_gmtime_adj(X509_getm_notAfter(x), 3600);
    X509_NAME *name = X509_get_subject_name(x);
    X509_NAME_add_entry_by_txt(name, "CN", MBSTRING_ASC, (const unsigned char *)"test CA", -1, -1,
                               0);
    X509_set_issuer_name(x, name);
    X509_set_pubkey(x, key);
    assert_true(X509_sign(x, key, EVP_sha256()) > 0);
    BIO *b = BIO_new(BIO_s_mem());
    PEM_write_bio_X509(b, x);
    char *data;
    long n = BIO_get_mem_data(b, &data);
    char *pem = strndup(data, (size_t)n);
    BIO_free(b);
    X509_free(x);
    EVP_PKEY_free(key);
    return pem;
}

static void test_ca_file(void **state)
{
    (void)state;
    char err[512];
    char *pem = make_ca_pem();
    assert_int_equal(th_trust_check_file(write_file("ca.pem", pem), err, sizeof err), TH_E_OK);

    /* text around the blocks is allowed (bundles carry comments), as OpenSSL reads them */
    char bundle[8192];
    snprintf(bundle, sizeof bundle, "# our CA\n%s\n# again\n%s", pem, pem);
    assert_int_equal(th_trust_check_file(write_file("bundle.pem", bundle), err, sizeof err),
                     TH_E_OK);

    /* missing */
    assert_int_equal(th_trust_check_file(path_of("nope.pem"), err, sizeof err), TH_E_CONFIG);
    assert_non_null(strstr(err, "nope.pem"));
    assert_non_null(strstr(err, "No such file"));
    /* a directory */
    assert_int_equal(th_trust_check_file(tmpdir, err, sizeof err), TH_E_CONFIG);
    assert_non_null(strstr(err, "not a regular file"));
    /* empty, or text without a certificate */
    assert_int_equal(th_trust_check_file(write_file("empty.pem", ""), err, sizeof err),
                     TH_E_CONFIG);
    assert_non_null(strstr(err, "no PEM certificate"));
    assert_int_equal(th_trust_check_file(write_file("text.pem", "hello\n"), err, sizeof err),
                     TH_E_CONFIG);
    assert_non_null(strstr(err, "no PEM certificate"));
    /* a damaged block: base64 cut short */
    char broken[8192];
    snprintf(broken, sizeof broken, "%s", pem);
    char *mid = strstr(broken, "-----END");
    assert_non_null(mid);
    memmove(broken + 60, mid, strlen(mid) + 1);
    assert_int_equal(th_trust_check_file(write_file("broken.pem", broken), err, sizeof err),
                     TH_E_CONFIG);
    assert_non_null(strstr(err, "broken.pem"));
    /* unreadable (root reads anything: only when not root) */
    const char *locked = write_file("locked.pem", pem);
    chmod(locked, 0);
    if (geteuid() != 0) {
        assert_int_equal(th_trust_check_file(locked, err, sizeof err), TH_E_CONFIG);
        assert_non_null(strstr(err, "Permission denied"));
    }
    free(pem);
}

static void test_ca_dir(void **state)
{
    (void)state;
    char err[512];
    assert_int_equal(th_trust_check_dir(tmpdir, err, sizeof err), TH_E_OK);
    assert_int_equal(th_trust_check_dir(path_of("absent"), err, sizeof err), TH_E_CONFIG);
    assert_non_null(strstr(err, "No such file"));
    assert_int_equal(th_trust_check_dir(write_file("f", "x"), err, sizeof err), TH_E_CONFIG);
    assert_non_null(strstr(err, "not a directory"));
}

static void test_url(void **state)
{
    (void)state;
    char err[512];
    static const char *const ok[] = {
        "https://gateway.example.com/send", "https://10.0.0.5:8443/x", "http://127.0.0.1:9000/hook",
        "http://127.8.9.10/hook",           "http://[::1]:9000/hook",  "http://localhost/hook",
        "HTTP://LOCALHOST:80/hook",
    };
    for (size_t i = 0; i < sizeof ok / sizeof *ok; i++)
        if (th_trust_check_url(ok[i], err, sizeof err) != TH_E_OK)
            fail_msg("%s refused: %s", ok[i], err);
    static const char *const plain[] = {
        "http://example.com/hook",           "http://10.0.0.5/hook", "http://[::2]/hook",
        "http://127.0.0.1@example.com/hook", /* the host is example.com */
        "http://localhost.example.com/",     "http://0.0.0.0/",
    };
    for (size_t i = 0; i < sizeof plain / sizeof *plain; i++) {
        if (th_trust_check_url(plain[i], err, sizeof err) != TH_E_CONFIG)
            fail_msg("%s accepted", plain[i]);
        assert_non_null(strstr(err, "use https://"));
    }
    static const char *const bad[] = {"", "example.com/hook", "ftp://example.com/", "https://",
                                      "file:///etc/passwd"};
    for (size_t i = 0; i < sizeof bad / sizeof *bad; i++) {
        if (th_trust_check_url(bad[i], err, sizeof err) != TH_E_CONFIG)
            fail_msg("%s accepted", bad[i]);
        assert_string_equal(err, "not an http(s) URL");
    }
}

/* The process default: both empty keep curl's store; a bad file or directory is refused. (What
 * a handle then trusts is seen end to end: tests/e2e/test_outbound_tls.py.) */
static void test_set_default(void **state)
{
    (void)state;
    char err[512];
    char *pem = make_ca_pem();
    const char *ca = write_file("default.pem", pem);
    free(pem);
    assert_int_equal(th_trust_set_default("", "", err, sizeof err), TH_E_OK);
    assert_int_equal(th_trust_set_default(NULL, NULL, err, sizeof err), TH_E_OK);
    assert_int_equal(th_trust_set_default(ca, "", err, sizeof err), TH_E_OK);
    assert_int_equal(th_trust_set_default("", tmpdir, err, sizeof err), TH_E_OK);
    assert_int_equal(th_trust_set_default(ca, tmpdir, err, sizeof err), TH_E_OK);
    assert_int_equal(th_trust_set_default(path_of("missing.pem"), "", err, sizeof err),
                     TH_E_CONFIG);
    assert_non_null(strstr(err, "[tls] ca_file: "));
    assert_non_null(strstr(err, "missing.pem"));
    assert_int_equal(th_trust_set_default("", ca, err, sizeof err), TH_E_CONFIG);
    assert_non_null(strstr(err, "[tls] ca_path: "));
    assert_non_null(strstr(err, "not a directory"));
    assert_int_equal(th_trust_set_default(NULL, NULL, err, sizeof err), TH_E_OK);
}

int main(void)
{
    th_http_global_init();
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_ca_file),
        cmocka_unit_test(test_ca_dir),
        cmocka_unit_test(test_url),
        cmocka_unit_test(test_set_default),
    };
    int rc = cmocka_run_group_tests(tests, tmpdir_setup, tmpdir_teardown);
    th_http_global_cleanup();
    return rc;
}
