#include "net/trust.h"

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
