#include "common/trust_check.h"

#include <errno.h>
#include <limits.h>
#include <stdbool.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <openssl/err.h>
#include <openssl/pem.h>
#include <openssl/x509.h>

#include "common/util.h"

/* Far above any real bundle (Debian's holds 140 roots in about 220 KiB). */
#define CA_FILE_MAX (16L * 1024 * 1024)

/* An encrypted key in a CA file must not make OpenSSL prompt on the terminal. */
static int no_password(char *buf, int size, int rwflag, void *u)
{
    (void)buf;
    (void)size;
    (void)rwflag;
    (void)u;
    return -1;
}

th_err th_trust_check_file(const char *path, char *err, size_t errlen)
{
    struct stat st;
    if (stat(path, &st) != 0) {
        snprintf(err, errlen, "'%.300s': %s", path, strerror(errno));
        return TH_E_CONFIG;
    }
    if (!S_ISREG(st.st_mode)) {
        snprintf(err, errlen, "'%.300s' is not a regular file", path);
        return TH_E_CONFIG;
    }
    if (st.st_size > CA_FILE_MAX) {
        snprintf(err, errlen, "'%.300s' is larger than 16 MiB: not a CA bundle", path);
        return TH_E_CONFIG;
    }
    BIO *b = BIO_new_file(path, "r");
    if (!b) {
        snprintf(err, errlen, "'%.300s': %s", path, strerror(errno));
        ERR_clear_error();
        return TH_E_CONFIG;
    }
    /* what OpenSSL (and so curl) reads from a CA file: certificates and CRLs in PEM */
    STACK_OF(X509_INFO) *infos = PEM_X509_INFO_read_bio(b, NULL, no_password, NULL);
    BIO_free(b);
    int certs = 0;
    for (int i = 0; infos && i < sk_X509_INFO_num(infos); i++)
        if (sk_X509_INFO_value(infos, i)->x509)
            certs++;
    sk_X509_INFO_pop_free(infos, X509_INFO_free);
    ERR_clear_error();
    if (!infos) {
        snprintf(err, errlen, "'%.300s' is not a valid PEM file (a damaged certificate block)",
                 path);
        return TH_E_CONFIG;
    }
    if (certs == 0) {
        snprintf(err, errlen,
                 "'%.300s' holds no PEM certificate (-----BEGIN CERTIFICATE-----; DER: convert "
                 "it with openssl x509 -inform der)",
                 path);
        return TH_E_CONFIG;
    }
    return TH_E_OK;
}

th_err th_trust_check_dir(const char *path, char *err, size_t errlen)
{
    struct stat st;
    if (stat(path, &st) != 0) {
        snprintf(err, errlen, "'%.300s': %s", path, strerror(errno));
        return TH_E_CONFIG;
    }
    if (!S_ISDIR(st.st_mode)) {
        snprintf(err, errlen, "'%.300s' is not a directory", path);
        return TH_E_CONFIG;
    }
    if (access(path, R_OK | X_OK) != 0) {
        snprintf(err, errlen, "'%.300s': %s", path, strerror(errno));
        return TH_E_CONFIG;
    }
    return TH_E_OK;
}

th_err th_trust_check_url(const char *url, char *err, size_t errlen)
{
    char host[256];
    switch (th_url_classify(url, host, sizeof host)) {
    case TH_URL_HTTPS:
    case TH_URL_HTTP_LOOPBACK:
        return TH_E_OK;
    case TH_URL_HTTP_REMOTE:
        snprintf(err, errlen,
                 "plain http:// is allowed only to a loopback host (127.0.0.0/8, ::1, "
                 "localhost), not to %.100s: each request holds a one-time code; use https://",
                 host);
        return TH_E_CONFIG;
    case TH_URL_BAD:
    default:
        snprintf(err, errlen, "not an http(s) URL");
        return TH_E_CONFIG;
    }
}
