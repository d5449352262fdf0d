/*
 * AWS credentials and region, found the way the AWS SDKs find them (reference §3.6):
 *
 *   1. AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY (+ AWS_SESSION_TOKEN);
 *   2. the shared credentials file (AWS_SHARED_CREDENTIALS_FILE, ~/.aws/credentials) and config
 *      file (AWS_CONFIG_FILE, ~/.aws/config), profile from config or AWS_PROFILE, else default;
 *   3. the container endpoint (AWS_CONTAINER_CREDENTIALS_RELATIVE_URI or _FULL_URI, with
 *      AWS_CONTAINER_AUTHORIZATION_TOKEN(_FILE)): ECS task roles, EKS Pod Identity;
 *   4. EC2 instance metadata, IMDSv2 (unless AWS_EC2_METADATA_DISABLED=true).
 *
 * The metadata service and the container agents (link-local, loopback) are always reached
 * directly, never through a proxy named in the environment.
 *
 * Static credentials (1, 2) are read once at start. Temporary ones (3, 4) are fetched by a
 * thread of their own — never by a request loop — at start and again well before they expire
 * (half their remaining life, at most 15 minutes ahead); a failed refresh keeps the current
 * credentials and retries with back-off. Loops read a snapshot: an atomic generation number says
 * when their copy is stale, so a request costs no lock.
 */
#ifndef TH_AWS_CREDS_H
#define TH_AWS_CREDS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

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
 * profile: "" = AWS_PROFILE, else "default". envp: NULL = the process environment (tests pass
 * their own). TH_E_CONFIG with the reason in err when no source is configured at all is NOT an
 * error: the last source (IMDS) is always tried unless disabled.
 */
th_err th_aws_creds_new(const char *profile, struct th_aws_creds **out, char *err, size_t errlen);
void th_aws_creds_free(struct th_aws_creds *c); /* stops the refresher; NULL is a no-op */

/* Where the credentials come from: "environment", "shared-files", "container", "imds". */
const char *th_aws_creds_source(const struct th_aws_creds *c);

/* The current generation (0 until credentials are known). Lock-free. */
uint64_t th_aws_creds_generation(const struct th_aws_creds *c);

/* Copies the current credentials into out; false when none are known yet. */
bool th_aws_creds_get(struct th_aws_creds *c, struct th_aws_credentials *out);

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

#endif
