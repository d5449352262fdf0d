/*
 * AWS credentials and region, found the way the AWS SDKs find them (reference §3; docs/providers.md
 * "AWS credentials" gives the same list for operators):
 *
 *   1. AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY (+ AWS_SESSION_TOKEN);
 *   2. web identity from the environment: AWS_WEB_IDENTITY_TOKEN_FILE + AWS_ROLE_ARN
 *      (+ AWS_ROLE_SESSION_NAME), as EKS IRSA sets them → STS AssumeRoleWithWebIdentity;
 *   3. the profile (aws.profile, else AWS_PROFILE, else default) of the shared config file
 *      (AWS_CONFIG_FILE, ~/.aws/config) and credentials file (AWS_SHARED_CREDENTIALS_FILE,
 *      ~/.aws/credentials): role_arn with source_profile (a chain, loops refused) or
 *      credential_source → STS AssumeRole; role_arn + web_identity_token_file; static keys;
 *      credential_process;
 *   4. the container endpoint (AWS_CONTAINER_CREDENTIALS_RELATIVE_URI or _FULL_URI, with
 *      AWS_CONTAINER_AUTHORIZATION_TOKEN(_FILE)): ECS task roles, EKS Pod Identity;
 *   5. EC2 instance metadata, IMDSv2 (unless AWS_EC2_METADATA_DISABLED=true).
 * A profile named in telehook's config (aws.profile) skips 1 and 2, as a profile given in code
 * does in the SDKs; a named profile (aws.profile or AWS_PROFILE) that is in neither file is an
 * error, not a silent fall-through.
 *
 * Static credentials (environment, keys in the files) are read once at start. All others — STS
 * roles, web identity, credential_process, container, IMDS — are obtained by a thread of their
 * own, never by a request loop, at start and again well before they expire (half their
 * remaining life, at most 15 minutes ahead); a failed refresh keeps the current credentials and
 * retries with back-off. A role chain is redone from its source at each refresh. Loops read a
 * snapshot: an atomic generation number says when their copy is stale, so a request costs no
 * lock. No secret, session token or web identity token is ever logged.
 *
 * The metadata service and the container agents (link-local, loopback) are always reached
 * directly, never through a proxy named in the environment.
 */
#ifndef TH_AWS_CREDS_H
#define TH_AWS_CREDS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "common/buf.h"
#include "common/err.h"

struct th_aws_credentials {
    char access_key_id[128];
    char secret_access_key[128];
    char session_token[4096]; /* "" when none */
    int64_t expires_ms;       /* unix ms; 0 = does not expire */
    uint64_t generation;      /* changes whenever the credentials do; 0 = none yet */
};

struct th_aws_creds;

/*
 * profile: "" = AWS_PROFILE, else "default". region: the region STS is called in (regional
 * endpoint, or AWS_ENDPOINT_URL_STS / AWS_ENDPOINT_URL); needed only by roles and web identity.
 * ca_file: the CA bundle STS is reached with, as every AWS API (th_aws_resolve_ca_bundle); NULL
 * or "": the [tls] default. TH_E_CONFIG with the reason in err for a configuration that cannot work
 * (a named profile that does not exist, a role without a source, a source_profile loop, ...). No
 * source configured at all is NOT an error: the last source (IMDS) is always tried unless disabled.
 */
th_err th_aws_creds_new(const char *profile, const char *region, const char *ca_file,
                        struct th_aws_creds **out, char *err, size_t errlen);
void th_aws_creds_free(struct th_aws_creds *c); /* stops the refresher; NULL is a no-op */

/*
 * Where the credentials come from, for the logs: "environment", "shared-files (profile 'x')",
 * "web-identity ARN (...)", "credential-process (profile 'x')", "container", "imds", each
 * possibly under "assume-role ARN from ..." for every role of a chain. Never a secret.
 */
const char *th_aws_creds_source(const struct th_aws_creds *c);

/* The current generation (0 until credentials are known). Lock-free. */
uint64_t th_aws_creds_generation(const struct th_aws_creds *c);

/* Copies the current credentials into out; false when none are known yet. */
bool th_aws_creds_get(struct th_aws_creds *c, struct th_aws_credentials *out);

/*
 * TH_E_CONFIG ("AWS profile 'x' not found in <config file> or <credentials file>") when a profile
 * is named — profile, else AWS_PROFILE — and neither file has it. The implicit default may be
 * missing.
 */
th_err th_aws_profile_check(const char *profile, char *err, size_t errlen);

/*
 * The region: cfg_region if set, else AWS_REGION, AWS_DEFAULT_REGION, then the profile's
 * `region` in the config file. false when none is found.
 */
bool th_aws_resolve_region(const char *cfg_region, const char *profile, char *out, size_t outlen);

/*
 * The CA bundle for AWS requests, as the SDKs find it: AWS_CA_BUNDLE, else the profile's
 * `ca_bundle` in the config file; "" in out when neither is set. from names the source (for
 * messages). false when the value does not fit in out.
 */
bool th_aws_resolve_ca_bundle(const char *profile, char *out, size_t outlen, const char **from);

/* A SigV4-signed POST to an AWS API (STS's Query protocol, KMS's JSON 1.1). Fields borrowed. */
struct th_aws_post {
    const char *url;          /* the endpoint */
    const char *host;         /* host[:port] as signed (th_aws_split_url) */
    const char *path;         /* the request path as signed */
    const char *region;       /* the signing scope */
    const char *service;      /* "sts", "kms" */
    const char *content_type; /* "application/x-amz-json-1.1" */
    const char *target;       /* X-Amz-Target (signed), or NULL */
    const char *body;
    size_t body_len;
    const char *ca_file; /* NULL or "": the [tls] default */
    long timeout_ms;
};

/*
 * Blocking: for start-up and background threads only, never a request loop. signer NULL sends
 * it unsigned. The answer goes to answer (reset first, capped by its maximum). Returns the HTTP
 * status, or -1 with the reason in why. The session token does not linger on the stack.
 */
long th_aws_post(const struct th_aws_post *r, const struct th_aws_credentials *signer,
                 struct th_buf *answer, char *why, size_t whylen);

/* url → host[:port] as signed (lower case, the port only when not the scheme's default) and
   path; false unless an http(s) URL that fits. */
bool th_aws_split_url(const char *url, char *host, size_t hostlen, char *path, size_t pathlen);

#endif
