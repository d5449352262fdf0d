/*
 * What outbound TLS trusts, for both HTTP clients (dispatch/http.h for the providers,
 * dispatch/fetch.h for the issuer's keys and the AWS credential endpoints).
 *
 * The peer is always verified (certificate chain and host name): there is no switch to turn that
 * off. The certificates it is verified against:
 *
 *   - by default, curl's system store (Debian: /etc/ssl/certs/ca-certificates.crt and
 *     /etc/ssl/certs);
 *   - [tls] ca_file and/or ca_path: they REPLACE the system store for every outbound connection
 *     (and for an https:// proxy), as CURLOPT_CAINFO, AWS_CA_BUNDLE or REQUESTS_CA_BUNDLE do —
 *     an egress proxy that inspects TLS re-signs everything with its own CA;
 *   - a provider's own ca_file (aws, twilio, webhook) replaces them for that provider's requests
 *     only (a gateway behind a private CA while the rest stays on the public one).
 *
 * To trust a private CA in addition to the public ones, give a bundle holding both.
 *
 * Proxies are libcurl's environment variables (https_proxy / HTTPS_PROXY, http_proxy,
 * ALL_PROXY, NO_PROXY): they apply to every request except one started "direct" (the AWS
 * metadata and container-agent endpoints, which live on the host's own link).
 */
#ifndef TH_DISPATCH_TRUST_H
#define TH_DISPATCH_TRUST_H

#include <stddef.h>

#include <curl/curl.h>

#include "common/err.h"

/*
 * A CA bundle: a readable regular file holding at least one PEM certificate, every PEM block of
 * it well-formed. TH_E_CONFIG with the reason in err ("'PATH': ...").
 */
th_err th_trust_check_file(const char *path, char *err, size_t errlen);

/* A CA directory (OpenSSL hashed names): a directory that can be listed. */
th_err th_trust_check_dir(const char *path, char *err, size_t errlen);

/*
 * A URL a one-time code may be sent to: https, or plain http to a loopback host (127.0.0.0/8,
 * ::1, localhost: a relay on the same machine). The host is read by curl's own parser, so
 * "http://127.0.0.1@example.com/" is example.com. TH_E_CONFIG with the reason in err.
 */
th_err th_trust_check_url(const char *url, char *err, size_t errlen);

/*
 * The process default: curl's built-in store, replaced by ca_file and/or ca_path when either is
 * non-empty (each checked as above). Once per process, after th_http_global_init and before any
 * transfer or thread starts; the strings are copied.
 */
th_err th_trust_set_default(const char *ca_file, const char *ca_path, char *err, size_t errlen);

/*
 * Sets a handle's trust: ca_file (non-empty) alone, else the process default. Also sets the
 * proxy's trust (the process default) and turns verification on explicitly.
 */
void th_trust_apply(CURL *easy, const char *ca_file);

#endif
