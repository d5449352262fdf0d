/*
 * AWS STS over its Query protocol (API version 2011-06-15): the form bodies of AssumeRole and
 * AssumeRoleWithWebIdentity, the endpoint, and the XML answers. Pure functions, no I/O: the
 * credentials module (aws/creds.c) does the requests on its refresher thread.
 *
 * An STS answer is trust-boundary input (the network, or whatever answers at the endpoint), and
 * small and regular. It is read without an XML library: a strict, bounded extraction of a few
 * elements by exact tag name — each must occur exactly once, hold text only, and the five
 * predefined entities plus numeric character references are decoded; anything else (another
 * entity, CDATA, a comment or DOCTYPE) is refused. Values that go into HTTP headers may hold no
 * control character or space.
 */
#ifndef TH_AWS_STS_H
#define TH_AWS_STS_H

#include <stdbool.h>
#include <stddef.h>

#include "aws/creds.h"
#include "common/buf.h"
#include "common/err.h"

#define TH_STS_VERSION    "2011-06-15"
#define TH_STS_MAX_ANSWER (64 * 1024) /* a real answer is about 2 KiB */

/* An AssumeRole call: role_arn required, the rest optional ("" / 0: not sent). */
struct th_sts_role {
    const char *role_arn;
    const char *session_name; /* RoleSessionName (required by STS: the caller generates one) */
    const char *external_id;
    int duration_seconds;
};

/*
 * The regional endpoint of region, "https://sts.REGION.amazonaws.com/" (".amazonaws.com.cn" in
 * China), and the region to sign for. legacy (sts_regional_endpoints = legacy) picks the global
 * endpoint https://sts.amazonaws.com/, signed for us-east-1, for the regions that used it by
 * default before the SDKs moved to regional endpoints. TH_E_INVAL for an empty or malformed
 * region, TH_E_TOOBIG when a buffer is too small.
 */
th_err th_sts_endpoint(const char *region, bool legacy, char *url, size_t urllen, char *sign_region,
                       size_t sign_region_len);

/* Form bodies (application/x-www-form-urlencoded), appended to b. */
th_err th_sts_assume_role_body(struct th_buf *b, const struct th_sts_role *r);
th_err th_sts_web_identity_body(struct th_buf *b, const char *role_arn, const char *session_name,
                                const char *token);

/*
 * The Credentials of an AssumeRole(WithWebIdentity)Response: AccessKeyId, SecretAccessKey,
 * SessionToken and Expiration, all required. TH_E_INVAL with a reason in why (which never quotes
 * a value) when the answer is anything else. out is written only on success.
 */
th_err th_sts_parse_credentials(const char *xml, size_t len, struct th_aws_credentials *out,
                                char *why, size_t whylen);

/*
 * An ErrorResponse: <Error><Code> into code and <Message> into msg (printable ASCII, cut to
 * fit; "" when absent or malformed). false when the answer is not an ErrorResponse.
 */
bool th_sts_parse_error(const char *xml, size_t len, char *code, size_t codelen, char *msg,
                        size_t msglen);

/*
 * The text of the single <tag>…</tag> in [xml, xml+len), entities decoded, surrounding
 * whitespace trimmed, into out (NUL-terminated). TH_E_NOTFOUND when absent, TH_E_INVAL when
 * repeated, holding markup or a bad entity, TH_E_TOOBIG when it does not fit. Exposed for tests.
 */
th_err th_sts_xml_text(const char *xml, size_t len, const char *tag, char *out, size_t outlen);

#endif
