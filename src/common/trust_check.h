/*
 * Checks of what outbound TLS is told to trust and where a code may be sent, for the config's
 * validation as well as for net/trust.h (which applies them to transfers).
 */
#ifndef TH_COMMON_TRUST_CHECK_H
#define TH_COMMON_TRUST_CHECK_H

#include <stddef.h>

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

#endif
