#include "http/tls.h"

#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <arpa/inet.h>
#include <sys/stat.h>

#include <gnutls/x509.h>

#include "common/util.h"

#define PEM_MAX   (1024 * 1024) /* a chain of a few certificates is a few KiB */
#define MAX_CHAIN 16
#define NAMES_MAX 512

struct th_tls_creds {
    gnutls_pcert_st pcerts[MAX_CHAIN];
    unsigned n;
    gnutls_privkey_t key;
    int64_t not_after;
    char names[NAMES_MAX];
};

/* The process's current credentials: handshakes on every loop read them, a reload swaps them. */
static _Atomic(struct th_tls_creds *) current;

void th_tls_creds_free(struct th_tls_creds *c)
{
    if (!c)
        return;
    for (unsigned i = 0; i < c->n; i++)
        gnutls_pcert_deinit(&c->pcerts[i]);
    if (c->key)
        gnutls_privkey_deinit(c->key);
    free(c);
}

int64_t th_tls_creds_not_after(const struct th_tls_creds *c)
{
    return c->not_after;
}

const char *th_tls_creds_names(const struct th_tls_creds *c)
{
    return c->names;
}

static void add_name(char *names, const char *name)
{
    size_t n = strlen(names);
    snprintf(names + n, NAMES_MAX - n, "%s%s", n ? ", " : "", name);
}

/* The DNS and IP subjectAltNames, else the subject's CN. */
static void collect_names(gnutls_x509_crt_t crt, char *names)
{
    names[0] = '\0';
    for (unsigned seq = 0;; seq++) {
        unsigned char buf[256];
        size_t size = sizeof buf - 1;
        unsigned critical = 0;
        int type = gnutls_x509_crt_get_subject_alt_name(crt, seq, buf, &size, &critical);
        if (type == GNUTLS_E_REQUESTED_DATA_NOT_AVAILABLE)
            break;
        if (type == GNUTLS_SAN_DNSNAME) {
            buf[size] = '\0';
            add_name(names, (const char *)buf);
        } else if (type == GNUTLS_SAN_IPADDRESS && (size == 4 || size == 16)) {
            char ip[INET6_ADDRSTRLEN];
            if (inet_ntop(size == 4 ? AF_INET : AF_INET6, buf, ip, sizeof ip))
                add_name(names, ip);
        }
        /* anything else (too long, another type): skipped */
    }
    if (names[0])
        return;
    char cn[256];
    size_t size = sizeof cn;
    if (gnutls_x509_crt_get_dn_by_oid(crt, GNUTLS_OID_X520_COMMON_NAME, 0, 0, cn, &size) == 0)
        add_name(names, cn);
    else
        add_name(names, "(no name)");
}

/* The key matches the certificate: both give the same public key identifier. */
static bool key_matches(gnutls_privkey_t key, gnutls_pcert_st *leaf)
{
    gnutls_pubkey_t pub = NULL;
    unsigned char a[64], b[64];
    size_t alen = sizeof a, blen = sizeof b;
    bool ok = gnutls_pubkey_init(&pub) == 0 && gnutls_pubkey_import_privkey(pub, key, 0, 0) == 0 &&
              gnutls_pubkey_get_key_id(pub, GNUTLS_KEYID_USE_SHA256, a, &alen) == 0 &&
              gnutls_pubkey_get_key_id(leaf->pubkey, GNUTLS_KEYID_USE_SHA256, b, &blen) == 0 &&
              alen == blen && memcmp(a, b, alen) == 0;
    if (pub)
        gnutls_pubkey_deinit(pub);
    return ok;
}

th_err th_tls_creds_parse(const char *cert_pem, size_t cert_len, const char *key_pem,
                          size_t key_len, int64_t now, struct th_tls_creds **out, char *warn,
                          size_t warnlen, char *err, size_t errlen)
{
    warn[0] = '\0';
    *out = NULL;
    struct th_tls_creds *c = calloc(1, sizeof *c);
    if (!c) {
        snprintf(err, errlen, "out of memory");
        return TH_E_NOMEM;
    }
    gnutls_x509_crt_t crt = NULL;
    gnutls_datum_t cd = {(unsigned char *)(uintptr_t)cert_pem, (unsigned)cert_len};
    gnutls_datum_t kd = {(unsigned char *)(uintptr_t)key_pem, (unsigned)key_len};
    unsigned n = MAX_CHAIN;
    int rc = gnutls_pcert_list_import_x509_raw(c->pcerts, &n, &cd, GNUTLS_X509_FMT_PEM, 0);
    if (rc < 0 || n == 0) {
        snprintf(err, errlen, "no PEM certificate could be read: %s",
                 rc < 0 ? gnutls_strerror(rc) : "none found");
        goto fail;
    }
    c->n = n;
    if ((rc = gnutls_privkey_init(&c->key)) < 0 ||
        (rc = gnutls_privkey_import_x509_raw(c->key, &kd, GNUTLS_X509_FMT_PEM, NULL,
                                             GNUTLS_PKCS_PLAIN)) < 0) {
        /* GnuTLS's message names the format problem, never the key's bytes */
        snprintf(err, errlen, "the private key could not be read (an unencrypted PEM key): %s",
                 gnutls_strerror(rc));
        goto fail;
    }
    if (!key_matches(c->key, &c->pcerts[0])) {
        snprintf(err, errlen,
                 "the private key does not match the certificate (the first one in the file)");
        goto fail;
    }
    /* export allocates the crt itself (an init before it would leak one) */
    if (gnutls_pcert_export_x509(&c->pcerts[0], &crt) < 0) {
        snprintf(err, errlen, "cannot read the certificate");
        goto fail;
    }
    c->not_after = (int64_t)gnutls_x509_crt_get_expiration_time(crt);
    collect_names(crt, c->names);
    if (c->not_after <= now) {
        snprintf(err, errlen, "the certificate (%s) expired %lld seconds ago", c->names,
                 (long long)(now - c->not_after));
        goto fail;
    }
    if (c->not_after - now < TH_TLS_EXPIRY_WARN_S)
        snprintf(warn, warnlen, "the certificate (%s) expires in %lld hours: renew it", c->names,
                 (long long)((c->not_after - now) / 3600));
    gnutls_x509_crt_deinit(crt);
    *out = c;
    return TH_E_OK;
fail:
    if (crt)
        gnutls_x509_crt_deinit(crt);
    th_tls_creds_free(c);
    return TH_E_CONFIG;
}

/*
 * Reads a PEM file of at most PEM_MAX bytes into *buf (malloc, NUL-terminated). secret: the
 * secret-file rules (docs/configuration.md#secret-files) on the opened file's mode.
 */
static th_err read_pem(const char *path, bool secret, char **buf, size_t *len, char *warn,
                       size_t warnlen, char *err, size_t errlen)
{
    th_err e = th_read_private_file(path, secret, "key", PEM_MAX + 1, buf, len, warn, warnlen, err,
                                    errlen);
    if (e == TH_E_OK && *len > PEM_MAX) {
        explicit_bzero(*buf, PEM_MAX + 2);
        free(*buf);
        *buf = NULL;
        snprintf(err, errlen, "'%s' is larger than 1 MiB", path);
        return TH_E_CONFIG;
    }
    return e;
}

th_err th_tls_creds_load(const char *cert_path, const char *key_path, int64_t now,
                         struct th_tls_creds **out, char *warn, size_t warnlen, char *err,
                         size_t errlen)
{
    char *cert = NULL, *key = NULL;
    size_t cert_len = 0, key_len = 0;
    char kwarn[512] = "", cwarn[512] = "", why[512];
    th_err e = read_pem(cert_path, false, &cert, &cert_len, cwarn, sizeof cwarn, why, sizeof why);
    if (e != TH_E_OK) {
        snprintf(err, errlen, "server.tls_cert: %s", why);
        return e;
    }
    e = read_pem(key_path, true, &key, &key_len, kwarn, sizeof kwarn, why, sizeof why);
    if (e != TH_E_OK) {
        free(cert);
        snprintf(err, errlen, "server.tls_key: %s", why);
        return e;
    }
    e = th_tls_creds_parse(cert, cert_len, key, key_len, now, out, cwarn, sizeof cwarn, why,
                           sizeof why);
    explicit_bzero(key, key_len);
    free(key);
    free(cert);
    if (e != TH_E_OK) {
        snprintf(err, errlen, "server.tls_cert/tls_key: %s", why);
        return e;
    }
    snprintf(warn, warnlen, "%s%s%s", kwarn, kwarn[0] && cwarn[0] ? "; " : "", cwarn);
    return TH_E_OK;
}

struct th_tls_creds *th_tls_install(struct th_tls_creds *c)
{
    return atomic_exchange(&current, c);
}

const struct th_tls_creds *th_tls_current(void)
{
    return atomic_load(&current);
}

/*
 * Session resumption: libmicrohttpd keeps no session cache and turns no tickets on, so a client's
 * every new connection would pay a full handshake. Tickets (RFC 5077, and TLS 1.3's) need no
 * server-side state: one random master key per process, from which GnuTLS derives the keys it
 * rotates. A restart makes a new one (old tickets then fall back to a full handshake).
 */
static pthread_once_t ticket_once = PTHREAD_ONCE_INIT;
static gnutls_datum_t ticket_key;
static bool ticket_ok;

static void ticket_init(void)
{
    ticket_ok = gnutls_session_ticket_key_generate(&ticket_key) == 0;
}

void th_tls_session_init(gnutls_session_t session)
{
    pthread_once(&ticket_once, ticket_init);
    if (ticket_ok)
        gnutls_session_ticket_enable_server(session, &ticket_key);
}

int th_tls_retrieve(gnutls_session_t session, const gnutls_datum_t *req_ca_dn, int nreqs,
                    const gnutls_pk_algorithm_t *pk_algos, int pk_algos_length,
                    gnutls_pcert_st **pcert, unsigned int *pcert_length, gnutls_privkey_t *privkey)
{
    (void)session;
    (void)req_ca_dn;
    (void)nreqs;
    (void)pk_algos;
    (void)pk_algos_length;
    struct th_tls_creds *c = atomic_load(&current);
    if (!c) {
        *pcert_length = 0;
        return -1;
    }
    *pcert = c->pcerts;
    *pcert_length = c->n;
    *privkey = c->key;
    return 0;
}
