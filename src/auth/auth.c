#include "auth/auth.h"

#include <stdlib.h>
#include <string.h>

#include <openssl/crypto.h>
#include <openssl/evp.h>

#include "common/util.h"

/* Presented values longer than this are refused before hashing (libmicrohttpd caps headers too). */
#define MAX_PRESENTED 8192

struct th_auth {
    th_auth_mode mode;
    char header_name[65];
    unsigned char secret_digest[32];
};

static th_err sha256(const void *p, size_t n, unsigned char out[32])
{
    unsigned int len = 32;
    return EVP_Digest(p, n, out, &len, EVP_sha256(), NULL) == 1 ? TH_E_OK : TH_E_NOMEM;
}

th_err th_auth_new(const struct th_config *cfg, struct th_auth **out)
{
    struct th_auth *a = calloc(1, sizeof *a);
    if (!a)
        return TH_E_NOMEM;
    a->mode = cfg->auth_mode;
    th_strlcpy(a->header_name, cfg->auth_header_name ? cfg->auth_header_name : "Authorization",
               sizeof a->header_name);
    if (a->mode == TH_AUTH_HEADER) {
        const char *s = cfg->auth_header_secret;
        if (!s || !*s || sha256(s, strlen(s), a->secret_digest) != TH_E_OK) {
            free(a);
            return TH_E_CONFIG;
        }
    }
    *out = a;
    return TH_E_OK;
}

void th_auth_free(struct th_auth *auth)
{
    if (auth)
        OPENSSL_cleanse(auth, sizeof *auth);
    free(auth);
}

const char *th_auth_header_name(const struct th_auth *auth)
{
    return auth->header_name;
}

th_err th_auth_check(const struct th_auth *auth, th_header_lookup_fn lookup, void *ud,
                     const char **why)
{
    if (auth->mode == TH_AUTH_NONE)
        return TH_E_OK;
    const char *v = lookup(ud, auth->header_name);
    if (!v || !*v) {
        *why = "missing credentials";
        return TH_E_AUTH;
    }
    size_t n = strnlen(v, MAX_PRESENTED + 1);
    unsigned char digest[32];
    /*
     * Compare digests, not the strings: CRYPTO_memcmp is constant-time only for equal lengths,
     * and comparing fixed-size digests also hides the secret's length from a timing attacker.
     */
    if (n > MAX_PRESENTED || sha256(v, n, digest) != TH_E_OK ||
        CRYPTO_memcmp(digest, auth->secret_digest, sizeof digest) != 0) {
        *why = "wrong credentials";
        return TH_E_AUTH;
    }
    return TH_E_OK;
}
