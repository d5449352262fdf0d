/*
 * What outbound TLS trusts, for both HTTP clients (net/http.h for the providers,
 * net/fetch.h for the issuer's keys and the AWS credential endpoints).
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
#ifndef TH_NET_TRUST_H
#define TH_NET_TRUST_H

#include <stddef.h>

#include <curl/curl.h>

#include "common/err.h"
#include "common/trust_check.h"

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
