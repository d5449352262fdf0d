#include "dispatch/trust.h"

#include <errno.h>
#include <limits.h>
#include <pthread.h>
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

/* The process default; "" = none. Written before any transfer, read-only afterwards. */
static char def_file[PATH_MAX], def_dir[PATH_MAX];
static char builtin_file[PATH_MAX], builtin_dir[PATH_MAX];
static pthread_once_t builtin_once = PTHREAD_ONCE_INIT;

/* curl's compiled-in store, kept so a recycled handle can be set back to it. */
static void read_builtin(void)
{
    CURL *e = curl_easy_init();
    char *f = NULL, *d = NULL;
    if (e && curl_easy_getinfo(e, CURLINFO_CAINFO, &f) == CURLE_OK && f)
        th_strlcpy(builtin_file, f, sizeof builtin_file);
    if (e && curl_easy_getinfo(e, CURLINFO_CAPATH, &d) == CURLE_OK && d)
        th_strlcpy(builtin_dir, d, sizeof builtin_dir);
    curl_easy_cleanup(e);
    th_strlcpy(def_file, builtin_file, sizeof def_file);
    th_strlcpy(def_dir, builtin_dir, sizeof def_dir);
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

th_err th_trust_set_default(const char *ca_file, const char *ca_path, char *err, size_t errlen)
{
    pthread_once(&builtin_once, read_builtin);
    bool has_file = ca_file && *ca_file, has_dir = ca_path && *ca_path;
    char why[512];
    if (has_file && th_trust_check_file(ca_file, why, sizeof why) != TH_E_OK) {
        snprintf(err, errlen, "[tls] ca_file: %s", why);
        return TH_E_CONFIG;
    }
    if (has_dir && th_trust_check_dir(ca_path, why, sizeof why) != TH_E_OK) {
        snprintf(err, errlen, "[tls] ca_path: %s", why);
        return TH_E_CONFIG;
    }
    if ((has_file && strlen(ca_file) >= sizeof def_file) ||
        (has_dir && strlen(ca_path) >= sizeof def_dir)) {
        snprintf(err, errlen, "[tls] ca_file or ca_path: path too long");
        return TH_E_CONFIG;
    }
    if (has_file || has_dir) { /* either one replaces the whole built-in store */
        th_strlcpy(def_file, has_file ? ca_file : "", sizeof def_file);
        th_strlcpy(def_dir, has_dir ? ca_path : "", sizeof def_dir);
    } else {
        th_strlcpy(def_file, builtin_file, sizeof def_file);
        th_strlcpy(def_dir, builtin_dir, sizeof def_dir);
    }
    return TH_E_OK;
}

static const char *or_null(const char *s)
{
    return s[0] ? s : NULL;
}

void th_trust_apply(CURL *e, const char *ca_file)
{
    pthread_once(&builtin_once, read_builtin);
    bool own = ca_file && *ca_file;
    curl_easy_setopt(e, CURLOPT_CAINFO, own ? ca_file : or_null(def_file));
    curl_easy_setopt(e, CURLOPT_CAPATH, own ? NULL : or_null(def_dir));
    curl_easy_setopt(e, CURLOPT_PROXY_CAINFO, or_null(def_file));
    curl_easy_setopt(e, CURLOPT_PROXY_CAPATH, or_null(def_dir));
    /* curl's defaults, stated: nothing in telehook turns verification off */
    curl_easy_setopt(e, CURLOPT_SSL_VERIFYPEER, 1L);
    curl_easy_setopt(e, CURLOPT_SSL_VERIFYHOST, 2L);
    curl_easy_setopt(e, CURLOPT_PROXY_SSL_VERIFYPEER, 1L);
    curl_easy_setopt(e, CURLOPT_PROXY_SSL_VERIFYHOST, 2L);
}
