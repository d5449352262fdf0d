/*
 * The inbound HTTPS credentials (server.tls_cert, server.tls_key), in GnuTLS as libmicrohttpd
 * uses it. A certificate chain and its key are loaded and checked together (the key matches the
 * first certificate, that certificate has not expired), then installed as the process's current
 * credentials, which every TLS handshake takes through th_tls_retrieve. A reload installs new
 * ones; the old ones are handed back to the caller, who keeps them until no handshake can still
 * hold them (the server frees them at shutdown).
 */
#ifndef TH_HTTP_TLS_H
#define TH_HTTP_TLS_H

#include <stddef.h>
#include <stdint.h>

#include <gnutls/abstract.h>
#include <gnutls/gnutls.h>

#include "common/err.h"

/*
 * TLS 1.3 and 1.2 only, AEAD ciphers only (no CBC), ephemeral (EC)DH key exchange only (no
 * static RSA: forward secrecy), no SHA-1 signatures. A GnuTLS priority string.
 */
#define TH_TLS_PRIORITIES                                                                          \
    "SECURE256:+SECURE128:-VERS-ALL:+VERS-TLS1.3:+VERS-TLS1.2:-CIPHER-ALL:+AES-256-GCM:"           \
    "+AES-128-GCM:+CHACHA20-POLY1305:-SHA1:-RSA"

/* Warn when the certificate expires within this many seconds (14 days). */
#define TH_TLS_EXPIRY_WARN_S (14 * 24 * 3600)

struct th_tls_creds;

/*
 * Parses and checks a PEM chain (leaf first) and a PEM private key, at time now (unix seconds).
 * Refused, with the reason in err: no certificate, a key that does not parse, a key that does
 * not match the first certificate, an expired certificate. A certificate expiring within
 * TH_TLS_EXPIRY_WARN_S is taken with a warning in warn ("" when none). The buffers are borrowed.
 */
th_err th_tls_creds_parse(const char *cert_pem, size_t cert_len, const char *key_pem,
                          size_t key_len, int64_t now, struct th_tls_creds **out, char *warn,
                          size_t warnlen, char *err, size_t errlen);
/*
 * Reads both files and parses them as above. The key file follows the secret-file rules of
 * docs/configuration.md: a regular file, refused when other users can read it, a warning when
 * its group can.
 */
th_err th_tls_creds_load(const char *cert_path, const char *key_path, int64_t now,
                         struct th_tls_creds **out, char *warn, size_t warnlen, char *err,
                         size_t errlen);
/* The first certificate's notAfter, unix seconds. */
int64_t th_tls_creds_not_after(const struct th_tls_creds *c);
/* The names the first certificate serves: its DNS and IP subjectAltNames (else its CN), ", ". */
const char *th_tls_creds_names(const struct th_tls_creds *c);
/* NULL is a no-op. Only when no handshake can hold them (see th_tls_install). */
void th_tls_creds_free(struct th_tls_creds *c);

/*
 * Makes c the credentials every later handshake gets (NULL: none); returns the previous ones,
 * which the caller keeps alive until no handshake can hold them. Thread-safe (one atomic swap).
 */
struct th_tls_creds *th_tls_install(struct th_tls_creds *c);
/* The current credentials (NULL when none). */
const struct th_tls_creds *th_tls_current(void);
/* Per connection, before its handshake: turns session tickets on (resumption). */
void th_tls_session_init(gnutls_session_t session);
/*
 * A gnutls_certificate_retrieve_function2, for MHD_OPTION_HTTPS_CERT_CALLBACK: hands the current
 * credentials to a handshake (GnuTLS does not free what it gets: the credentials stay ours).
 */
int th_tls_retrieve(gnutls_session_t session, const gnutls_datum_t *req_ca_dn, int nreqs,
                    const gnutls_pk_algorithm_t *pk_algos, int pk_algos_length,
                    gnutls_pcert_st **pcert, unsigned int *pcert_length, gnutls_privkey_t *privkey);

#endif
