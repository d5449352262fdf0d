#include "aws/creds.h"

#include <ctype.h>
#include <errno.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>

#include <curl/curl.h>
#include <jansson.h>
#include <openssl/crypto.h>

#include "aws/process.h"
#include "aws/sigv4.h"
#include "aws/sts.h"
#include "common/buf.h"
#include "common/util.h"
#include "loop/refresher.h"
#include "net/fetch.h"
#include "obs/log.h"

/* Where the credentials themselves come from; an assume-role chain may sit on top (roles[]). */
enum source { SRC_ENV, SRC_FILES, SRC_CONTAINER, SRC_IMDS, SRC_WEB_IDENTITY, SRC_PROCESS };
static const char *const source_names[] = {"environment", "shared-files", "container",
                                           "imds",        "web-identity", "credential-process"};

#define REFRESH_AHEAD_MS (15 * 60 * 1000) /* botocore's advisory refresh window */
#define MIN_REFRESH_MS   1000
#define MAX_BACKOFF_MS   (30 * 1000)
#define STS_TIMEOUT_MS   5000
#define MAX_ROLES        8         /* assume-role chain length (source_profile hops) */
#define MAX_FILE         (1 << 20) /* a shared config or credentials file */
#define MAX_WEB_TOKEN    20000     /* STS's limit on WebIdentityToken */

/* One AssumeRole of the chain, applied in order on top of the source credentials. */
struct role {
    char arn[2049];
    char session_name[65]; /* "" = telehook-<unix time>, made at each call */
    char external_id[1225];
    int duration_seconds; /* 0 = STS's default (one hour) */
};

struct th_aws_creds {
    enum source src;
    char profile[128];
    char desc[1024]; /* th_aws_creds_source() */
    char via[200];   /* what gave the source: "profile 'x'", "AWS_WEB_IDENTITY_TOKEN_FILE" */
    /* container / IMDS settings, read once at start */
    char url[1024];
    char token_env[2048];
    char token_file[1024];
    char imds_endpoint[256];
    bool direct;        /* the container endpoint is on this host's link: never through a proxy */
    char ca_file[1024]; /* for STS: the AWS CA bundle (provider/aws.c), "" = the [tls] default */
    /* STS (roles and web identity) */
    char sts_url[1024];
    char sts_host[300];
    char sts_path[512];
    char sts_region[64];
    char wi_token_file[1024]; /* web identity */
    char wi_role_arn[2049];
    char wi_session_name[65];
    char process[4096];             /* credential_process */
    struct th_aws_credentials base; /* SRC_ENV / SRC_FILES under a role chain */
    struct role roles[MAX_ROLES];
    size_t nroles;

    pthread_mutex_t mu;
    struct th_refresher *refresher; /* NULL: static credentials, read once */
    int64_t backoff_ms;             /* the refresher's thread only */
    struct th_aws_credentials cur;  /* guarded by mu */
    atomic_uint_fast64_t generation;
};

static const char *env(const char *name)
{
    const char *v = getenv(name);
    return v && *v ? v : NULL;
}

const char *th_aws_creds_source(const struct th_aws_creds *c)
{
    return c->desc;
}

uint64_t th_aws_creds_generation(const struct th_aws_creds *c)
{
    return atomic_load(&c->generation);
}

bool th_aws_creds_get(struct th_aws_creds *c, struct th_aws_credentials *out)
{
    pthread_mutex_lock(&c->mu);
    bool ok = c->cur.generation != 0;
    if (ok)
        *out = c->cur;
    pthread_mutex_unlock(&c->mu);
    return ok;
}

static void publish(struct th_aws_creds *c, const struct th_aws_credentials *v)
{
    pthread_mutex_lock(&c->mu);
    uint64_t gen = c->cur.generation + 1;
    c->cur = *v;
    c->cur.generation = gen;
    atomic_store(&c->generation, gen);
    pthread_mutex_unlock(&c->mu);
}

static bool set_field(char *dst, size_t cap, const char *v)
{
    return v && *v && th_strlcpy(dst, v, cap) < cap;
}

static bool stopping(void *ud)
{
    struct th_aws_creds *c = ud;
    return c->refresher && th_refresher_stopping(c->refresher);
}

/* ---- shared credentials and config files ---- */

static void home_path(const char *envname, const char *rel, char *out, size_t outlen)
{
    const char *p = env(envname);
    if (p) {
        th_strlcpy(out, p, outlen);
        return;
    }
    const char *home = env("HOME");
    snprintf(out, outlen, "%s/%s", home ? home : "", rel);
}

/* A profile as the two files give it (the credentials file wins over the config file, as in
   botocore). A value too long for its field is not cut: `overlong` names the key. */
struct profile {
    bool found;
    bool mfa;
    bool sso;
    char name[128];
    char akid[128];
    char secret[128];
    char token[4096];
    char role_arn[2049];
    char source_profile[128];
    char credential_source[32];
    char external_id[1225];
    char session_name[65];
    char duration[16];
    char web_token_file[1024];
    char process[4096];
    char region[64];
    char sts_regional[16];
    char ca_bundle[1024];
    char overlong[48];
};

#define PF(f) offsetof(struct profile, f), sizeof(((struct profile *)0)->f)
static const struct {
    const char *key;
    size_t off, size;
} profile_keys[] = {
    {"aws_access_key_id", PF(akid)},
    {"aws_secret_access_key", PF(secret)},
    {"aws_session_token", PF(token)},
    {"aws_security_token", PF(token)},
    {"role_arn", PF(role_arn)},
    {"source_profile", PF(source_profile)},
    {"credential_source", PF(credential_source)},
    {"external_id", PF(external_id)},
    {"role_session_name", PF(session_name)},
    {"duration_seconds", PF(duration)},
    {"web_identity_token_file", PF(web_token_file)},
    {"credential_process", PF(process)},
    {"region", PF(region)},
    {"sts_regional_endpoints", PF(sts_regional)},
    {"ca_bundle", PF(ca_bundle)},
};
#undef PF

static char *trim(char *s)
{
    while (*s == ' ' || *s == '\t')
        s++;
    size_t n = strlen(s);
    while (n && (s[n - 1] == ' ' || s[n - 1] == '\t' || s[n - 1] == '\r'))
        s[--n] = '\0';
    return s;
}

/*
 * The AWS shared-file dialect of INI (as botocore reads it): `[section]`, `key = value`, lines
 * starting with # or ; are comments, an indented line continues the previous key (nested
 * settings such as `s3 =`) and is skipped here. Values are taken whole — no inline comments,
 * so a credential_process command may hold `;` or `#` — and may be of any length (inih, used for
 * telehook's own file, cuts lines at 200 bytes: a session token is longer).
 */
static void ini_each(char *text, void (*fn)(void *, const char *, const char *, const char *),
                     void *ud)
{
    const char *section = NULL;
    for (char *line = text; line && *line;) {
        char *nl = strchr(line, '\n');
        if (nl)
            *nl = '\0';
        bool indented = *line == ' ' || *line == '\t';
        char *l = trim(line);
        line = nl ? nl + 1 : NULL;
        if (!*l || *l == '#' || *l == ';' || (indented && section))
            continue;
        if (*l == '[') {
            char *rb = strchr(l, ']');
            section = NULL;
            if (rb) {
                *rb = '\0';
                section = trim(l + 1);
            }
            continue;
        }
        char *eq = strchr(l, '=');
        if (!eq || !section)
            continue;
        *eq = '\0';
        fn(ud, section, trim(l), trim(eq + 1));
    }
}

struct pick {
    struct profile *p;
    bool config; /* the config file: sections are "profile NAME" (and "default") */
};

static bool section_is(const char *section, const char *name, bool config)
{
    if (!config || strcmp(name, "default") == 0) {
        if (strcmp(section, name) == 0)
            return true;
        if (!config)
            return false;
    }
    if (strncmp(section, "profile", 7) != 0 || (section[7] != ' ' && section[7] != '\t'))
        return false;
    const char *n = section + 7;
    while (*n == ' ' || *n == '\t')
        n++;
    return strcmp(n, name) == 0;
}

static void on_profile_key(void *ud, const char *section, const char *key, const char *value)
{
    struct pick *pk = ud;
    struct profile *p = pk->p;
    if (!section_is(section, p->name, pk->config))
        return;
    p->found = true;
    if (strcmp(key, "mfa_serial") == 0)
        p->mfa = true;
    if (strncmp(key, "sso_", 4) == 0)
        p->sso = true;
    for (size_t i = 0; i < sizeof profile_keys / sizeof *profile_keys; i++) {
        if (strcmp(key, profile_keys[i].key) != 0)
            continue;
        char *dst = (char *)p + profile_keys[i].off;
        if (th_strlcpy(dst, value, profile_keys[i].size) >= profile_keys[i].size) {
            dst[0] = '\0';
            if (!p->overlong[0])
                th_strlcpy(p->overlong, key, sizeof p->overlong);
        }
    }
}

/* Feeds the file at path (if any) through ini_each; the copy in memory is wiped after. */
static void parse_file(const char *path, struct pick *pk)
{
    FILE *f = fopen(path, "r");
    if (!f)
        return; /* a missing file holds no profile */
    char *text = malloc(MAX_FILE + 1);
    if (text) {
        size_t n = fread(text, 1, MAX_FILE, f);
        text[n] = '\0';
        ini_each(text, on_profile_key, pk);
        OPENSSL_cleanse(text, n);
        free(text);
    }
    fclose(f);
}

static void config_paths(char *cfg, size_t cfglen, char *cred, size_t credlen)
{
    home_path("AWS_CONFIG_FILE", ".aws/config", cfg, cfglen);
    home_path("AWS_SHARED_CREDENTIALS_FILE", ".aws/credentials", cred, credlen);
}

/* Profile name from the config file, then the credentials file over it. */
static void load_profile(const char *name, struct profile *p)
{
    char cfg[1024], cred[1024];
    memset(p, 0, sizeof *p);
    th_strlcpy(p->name, name, sizeof p->name);
    config_paths(cfg, sizeof cfg, cred, sizeof cred);
    struct pick pk = {.p = p, .config = true};
    parse_file(cfg, &pk);
    pk.config = false;
    parse_file(cred, &pk);
}

static void profile_free(struct profile *p)
{
    if (p) {
        OPENSSL_cleanse(p, sizeof *p);
        free(p);
    }
}

/* "<what> not found in <config file> or <credentials file>" */
static th_err not_found(const char *what, char *err, size_t errlen)
{
    char cfg[1024], cred[1024];
    config_paths(cfg, sizeof cfg, cred, sizeof cred);
    snprintf(err, errlen, "%s not found in %s or %s", what, cfg, cred);
    return TH_E_CONFIG;
}

static th_err profile_not_found(const char *name, char *err, size_t errlen)
{
    char what[200];
    snprintf(what, sizeof what, "AWS profile '%.128s'", name);
    return not_found(what, err, errlen);
}

th_err th_aws_profile_check(const char *profile, char *err, size_t errlen)
{
    const char *name = profile && *profile ? profile : env("AWS_PROFILE");
    if (!name)
        return TH_E_OK; /* the implicit default profile may well not exist */
    struct profile *p = calloc(1, sizeof *p);
    if (!p)
        return TH_E_NOMEM;
    load_profile(name, p);
    th_err e = p->found ? TH_E_OK : profile_not_found(name, err, errlen);
    profile_free(p);
    return e;
}

bool th_aws_resolve_region(const char *cfg_region, const char *profile, char *out, size_t outlen)
{
    const char *v = cfg_region && *cfg_region ? cfg_region : env("AWS_REGION");
    if (!v)
        v = env("AWS_DEFAULT_REGION");
    if (v)
        return th_strlcpy(out, v, outlen) < outlen;
    const char *prof = profile && *profile ? profile : env("AWS_PROFILE");
    struct profile *p = calloc(1, sizeof *p);
    if (!p)
        return false;
    load_profile(prof ? prof : "default", p);
    bool ok = p->region[0] && th_strlcpy(out, p->region, outlen) < outlen;
    profile_free(p);
    return ok;
}

bool th_aws_resolve_ca_bundle(const char *profile, char *out, size_t outlen, const char **from)
{
    const char *v = env("AWS_CA_BUNDLE");
    if (v) {
        *from = "AWS_CA_BUNDLE";
        return th_strlcpy(out, v, outlen) < outlen;
    }
    out[0] = '\0';
    *from = "ca_bundle of the AWS config file";
    const char *prof = profile && *profile ? profile : env("AWS_PROFILE");
    struct profile *p = calloc(1, sizeof *p);
    if (!p)
        return false;
    load_profile(prof ? prof : "default", p);
    bool ok = th_strlcpy(out, p->ca_bundle, outlen) < outlen;
    profile_free(p);
    return ok;
}

/* ---- temporary credentials over HTTP (the refresher thread only) ---- */

/* A blocking request: this runs on the refresher thread, never on a request loop. */
static long fetch(const char *method, const char *url, const char *const *headers, size_t nheaders,
                  long timeout_ms, bool direct, struct th_buf *body, char *why, size_t whylen)
{
    struct th_fetch req = {.method = method,
                           .url = url,
                           .headers = headers,
                           .nheaders = nheaders,
                           .timeout_ms = timeout_ms,
                           .direct = direct};
    return th_fetch(&req, body, why, whylen);
}

/* {"AccessKeyId", "SecretAccessKey", "Token", "Expiration"} → out. */
static bool parse_creds(const struct th_buf *body, struct th_aws_credentials *out, char *why,
                        size_t whylen)
{
    json_error_t jerr;
    json_t *doc = json_loadb(body->data ? body->data : "", body->len, 0, &jerr);
    if (!json_is_object(doc)) {
        snprintf(why, whylen, "answer is not a JSON object");
        json_decref(doc);
        return false;
    }
    struct th_aws_credentials v = {0};
    const char *exp = json_string_value(json_object_get(doc, "Expiration"));
    bool ok = set_field(v.access_key_id, sizeof v.access_key_id,
                        json_string_value(json_object_get(doc, "AccessKeyId"))) &&
              set_field(v.secret_access_key, sizeof v.secret_access_key,
                        json_string_value(json_object_get(doc, "SecretAccessKey")));
    const char *tok = json_string_value(json_object_get(doc, "Token"));
    if (ok && tok && !set_field(v.session_token, sizeof v.session_token, tok))
        ok = false;
    if (ok && exp && th_parse_iso8601(exp, &v.expires_ms) != TH_E_OK)
        ok = false;
    json_decref(doc);
    if (!ok) {
        snprintf(why, whylen, "answer lacks AccessKeyId/SecretAccessKey or has a bad Expiration");
        return false;
    }
    *out = v;
    return true;
}

static bool fetch_container(struct th_aws_creds *c, struct th_aws_credentials *out, char *why,
                            size_t whylen)
{
    char auth[2200] = "";
    char tokbuf[2048] = "";
    const char *tok = NULL;
    if (c->token_file[0]) { /* re-read each time: the agent rotates it */
        FILE *f = fopen(c->token_file, "r");
        if (!f) {
            snprintf(why, whylen, "cannot read AWS_CONTAINER_AUTHORIZATION_TOKEN_FILE: %s",
                     strerror(errno));
            return false;
        }
        size_t n = fread(tokbuf, 1, sizeof tokbuf - 1, f);
        fclose(f);
        tokbuf[n] = '\0';
        while (n && (tokbuf[n - 1] == '\n' || tokbuf[n - 1] == '\r'))
            tokbuf[--n] = '\0';
        tok = tokbuf;
    } else if (c->token_env[0]) {
        tok = c->token_env;
    }
    if (tok && strpbrk(tok, "\r\n")) {
        snprintf(why, whylen, "the container authorization token holds a line break: refused");
        return false;
    }
    const char *hdrs[2] = {"Accept: application/json", auth};
    if (tok)
        snprintf(auth, sizeof auth, "Authorization: %s", tok);
    struct th_buf body;
    th_buf_init(&body, 64 * 1024);
    bool ok = false;
    long status = fetch("GET", c->url, hdrs, tok ? 2 : 1, 2000, c->direct, &body, why, whylen);
    if (status == 200)
        ok = parse_creds(&body, out, why, whylen);
    else if (status > 0)
        snprintf(why, whylen, "container endpoint answered HTTP %ld", status);
    OPENSSL_cleanse(auth, sizeof auth);
    th_buf_release(&body);
    return ok;
}

/*
 * Always direct (no proxy, whatever the environment says): the metadata service answers on this
 * host's own link, and through a proxy the request would reach the proxy host's metadata — its
 * credentials, not ours — or nothing.
 */
static bool fetch_imds(struct th_aws_creds *c, struct th_aws_credentials *out, char *why,
                       size_t whylen)
{
    char url[512], hdr[1200];
    struct th_buf body;
    th_buf_init(&body, 64 * 1024);
    bool ok = false;
    snprintf(url, sizeof url, "%s/latest/api/token", c->imds_endpoint);
    static const char *const ttl[] = {"X-aws-ec2-metadata-token-ttl-seconds: 21600"};
    long status = fetch("PUT", url, ttl, 1, 1000, true, &body, why, whylen);
    if (status != 200 || body.len == 0 || body.len > 1000 || strpbrk(th_buf_str(&body), "\r\n")) {
        if (status > 0)
            snprintf(why, whylen, "IMDS token request answered HTTP %ld", status);
        goto out;
    }
    snprintf(hdr, sizeof hdr, "X-aws-ec2-metadata-token: %s", th_buf_str(&body));
    const char *h2[] = {hdr};
    snprintf(url, sizeof url, "%s/latest/meta-data/iam/security-credentials/", c->imds_endpoint);
    status = fetch("GET", url, h2, 1, 1000, true, &body, why, whylen);
    if (status == 200 && body.len > 0 && body.len < 200) {
        char role[200];
        th_strlcpy(role, th_buf_str(&body), sizeof role);
        role[strcspn(role, "\r\n")] = '\0';
        snprintf(url, sizeof url, "%s/latest/meta-data/iam/security-credentials/%s",
                 c->imds_endpoint, role);
        status = fetch("GET", url, h2, 1, 1000, true, &body, why, whylen);
        if (status == 200)
            ok = parse_creds(&body, out, why, whylen);
    }
    if (!ok && status > 0 && status != 200)
        snprintf(why, whylen, "IMDS answered HTTP %ld", status);
    OPENSSL_cleanse(hdr, sizeof hdr);
out:
    th_buf_release(&body);
    return ok;
}

/* ---- STS: AssumeRole (signed with the previous credentials) and AssumeRoleWithWebIdentity ---- */

#define FORM_TYPE "application/x-www-form-urlencoded; charset=utf-8"

long th_aws_post(const struct th_aws_post *r, const struct th_aws_credentials *signer,
                 struct th_buf *answer, char *why, size_t whylen)
{
    char date[17], date8[9], h_host[320], h_date[40], h_auth[600] = "", authz[512];
    char h_type[160], h_target[160];
    char h_tok[sizeof signer->session_token + 32];
    const char *hdrs[8];
    size_t n = 0;
    th_sigv4_amz_date((long long)time(NULL), date);
    memcpy(date8, date, 8);
    date8[8] = '\0';
    snprintf(h_host, sizeof h_host, "Host: %s", r->host);
    snprintf(h_date, sizeof h_date, "X-Amz-Date: %s", date);
    snprintf(h_type, sizeof h_type, "Content-Type: %s", r->content_type);
    hdrs[n++] = h_type;
    hdrs[n++] = h_host;
    hdrs[n++] = "Expect:"; /* no 100-continue round trip for a body over 1 KiB */
    if (r->target) {
        snprintf(h_target, sizeof h_target, "X-Amz-Target: %s", r->target);
        hdrs[n++] = h_target;
    }
    if (signer) {
        hdrs[n++] = h_date;
        struct th_sigv4_header sh[5] = {
            {"Content-Type", r->content_type}, {"Host", r->host}, {"X-Amz-Date", date}};
        size_t nsh = 3;
        if (r->target)
            sh[nsh++] = (struct th_sigv4_header){"X-Amz-Target", r->target};
        if (signer->session_token[0])
            sh[nsh++] = (struct th_sigv4_header){"X-Amz-Security-Token", signer->session_token};
        unsigned char key[TH_SIGV4_KEY_LEN];
        th_sigv4_derive_key(signer->secret_access_key, date8, r->region, r->service, key);
        struct th_sigv4_input in = {.method = "POST",
                                    .path = r->path,
                                    .query = "",
                                    .headers = sh,
                                    .nheaders = nsh,
                                    .body = r->body,
                                    .body_len = r->body_len,
                                    .amz_date = date,
                                    .region = r->region,
                                    .service = r->service,
                                    .access_key_id = signer->access_key_id,
                                    .signing_key = key};
        th_err e = th_sigv4_sign(&in, NULL, NULL, authz, sizeof authz);
        OPENSSL_cleanse(key, sizeof key);
        if (e != TH_E_OK) {
            snprintf(why, whylen, "cannot sign the request (%s)", th_strerror(e));
            return -1;
        }
        snprintf(h_auth, sizeof h_auth, "Authorization: %s", authz);
        hdrs[n++] = h_auth;
        if (signer->session_token[0]) {
            snprintf(h_tok, sizeof h_tok, "X-Amz-Security-Token: %s", signer->session_token);
            hdrs[n++] = h_tok;
        }
    }
    struct th_fetch req = {.method = "POST",
                           .body = r->body,
                           .body_len = r->body_len,
                           .url = r->url,
                           .headers = hdrs,
                           .nheaders = n,
                           .timeout_ms = r->timeout_ms,
                           .ca_file = r->ca_file && r->ca_file[0] ? r->ca_file : NULL};
    long status = th_fetch(&req, answer, why, whylen);
    if (signer && signer->session_token[0])
        OPENSSL_cleanse(h_tok, sizeof h_tok);
    return status;
}

/*
 * POSTs form to STS; signer NULL sends it unsigned (AssumeRoleWithWebIdentity: the token is the
 * proof). what names the call in the reason ("AssumeRole arn:…"). Runs on the refresher thread.
 */
static bool sts_call(struct th_aws_creds *c, const char *what, const struct th_buf *form,
                     const struct th_aws_credentials *signer, struct th_aws_credentials *out,
                     char *why, size_t whylen)
{
    struct th_aws_post r = {.url = c->sts_url,
                            .host = c->sts_host,
                            .path = c->sts_path,
                            .region = c->sts_region,
                            .service = "sts",
                            .content_type = FORM_TYPE,
                            .body = form->data,
                            .body_len = form->len,
                            .ca_file = c->ca_file,
                            .timeout_ms = STS_TIMEOUT_MS};
    struct th_buf body;
    th_buf_init(&body, TH_STS_MAX_ANSWER);
    char fwhy[256] = "";
    long status = th_aws_post(&r, signer, &body, fwhy, sizeof fwhy);
    bool ok = false;
    if (status == 200) {
        char pwhy[160] = "";
        ok = th_sts_parse_credentials(body.data, body.len, out, pwhy, sizeof pwhy) == TH_E_OK;
        if (!ok)
            snprintf(why, whylen, "%s: %s", what, pwhy);
    } else if (status > 0) {
        char code[64], msg[256];
        if (th_sts_parse_error(body.data, body.len, code, sizeof code, msg, sizeof msg))
            snprintf(why, whylen, "%s: HTTP %ld %s: %s", what, status, code, msg);
        else
            snprintf(why, whylen, "%s: HTTP %ld (not an STS error answer)", what, status);
    } else {
        snprintf(why, whylen, "%s: %s", what, fwhy);
    }
    if (body.data)
        OPENSSL_cleanse(body.data, body.len);
    th_buf_release(&body);
    return ok;
}

static void session_name(const char *configured, char *out, size_t outlen)
{
    if (configured[0])
        th_strlcpy(out, configured, outlen);
    else
        snprintf(out, outlen, "telehook-%lld", (long long)time(NULL));
}

static bool assume_role(struct th_aws_creds *c, const struct role *r,
                        const struct th_aws_credentials *src, struct th_aws_credentials *out,
                        char *why, size_t whylen)
{
    char name[65], what[340];
    session_name(r->session_name, name, sizeof name);
    snprintf(what, sizeof what, "AssumeRole %.300s", r->arn);
    struct th_sts_role req = {.role_arn = r->arn,
                              .session_name = name,
                              .external_id = r->external_id,
                              .duration_seconds = r->duration_seconds};
    struct th_buf form;
    th_buf_init(&form, 8192);
    bool ok = th_sts_assume_role_body(&form, &req) == TH_E_OK;
    if (!ok)
        snprintf(why, whylen, "%s: cannot build the request", what);
    else
        ok = sts_call(c, what, &form, src, out, why, whylen);
    th_buf_release(&form);
    return ok;
}

/* Reads the token file at each call: the issuer (EKS, a CI system) rotates it. */
static bool web_identity(struct th_aws_creds *c, struct th_aws_credentials *out, char *why,
                         size_t whylen)
{
    char what[340];
    snprintf(what, sizeof what, "AssumeRoleWithWebIdentity %.300s", c->wi_role_arn);
    FILE *f = fopen(c->wi_token_file, "r");
    if (!f) {
        snprintf(why, whylen, "cannot read the web identity token file %.300s: %s",
                 c->wi_token_file, strerror(errno));
        return false;
    }
    char *tok = malloc(MAX_WEB_TOKEN + 2);
    size_t n = tok ? fread(tok, 1, MAX_WEB_TOKEN + 1, f) : 0;
    fclose(f);
    if (!tok) {
        snprintf(why, whylen, "out of memory");
        return false;
    }
    tok[n] = '\0';
    while (n && isspace((unsigned char)tok[n - 1]))
        tok[--n] = '\0';
    bool ok = false;
    char name[65];
    session_name(c->wi_session_name, name, sizeof name);
    struct th_buf form;
    th_buf_init(&form, 3 * MAX_WEB_TOKEN + 8192);
    if (n == 0 || n > MAX_WEB_TOKEN || strlen(tok) != n)
        snprintf(why, whylen, "the web identity token file %.300s is empty, too long or binary",
                 c->wi_token_file);
    else if (th_sts_web_identity_body(&form, c->wi_role_arn, name, tok) != TH_E_OK)
        snprintf(why, whylen, "%s: cannot build the request", what);
    else
        ok = sts_call(c, what, &form, NULL, out, why, whylen);
    OPENSSL_cleanse(tok, MAX_WEB_TOKEN + 2);
    free(tok);
    if (form.data)
        OPENSSL_cleanse(form.data, form.len);
    th_buf_release(&form);
    return ok;
}

static bool run_process(struct th_aws_creds *c, struct th_aws_credentials *out, char *why,
                        size_t whylen)
{
    struct th_buf o;
    th_buf_init(&o, TH_AWS_PROCESS_MAX_OUTPUT);
    bool ok = th_aws_process_run(c->process, TH_AWS_PROCESS_TIMEOUT_MS, stopping, c, &o, why,
                                 whylen) == TH_E_OK &&
              th_aws_process_parse(o.data, o.len, out, why, whylen) == TH_E_OK;
    if (o.data)
        OPENSSL_cleanse(o.data, o.len);
    th_buf_release(&o);
    return ok;
}

/* The source credentials, then each role of the chain in turn. */
static bool obtain(struct th_aws_creds *c, struct th_aws_credentials *out, char *why, size_t whylen)
{
    struct th_aws_credentials v = {0}, next = {0};
    bool ok;
    switch (c->src) {
    case SRC_CONTAINER:
        ok = fetch_container(c, &v, why, whylen);
        break;
    case SRC_IMDS:
        ok = fetch_imds(c, &v, why, whylen);
        break;
    case SRC_WEB_IDENTITY:
        ok = web_identity(c, &v, why, whylen);
        break;
    case SRC_PROCESS:
        ok = run_process(c, &v, why, whylen);
        break;
    default:
        v = c->base;
        ok = true;
        break;
    }
    for (size_t i = 0; ok && i < c->nroles; i++) {
        if (stopping(c)) {
            snprintf(why, whylen, "stopped");
            ok = false;
            break;
        }
        ok = assume_role(c, &c->roles[i], &v, &next, why, whylen);
        v = next;
        OPENSSL_cleanse(&next, sizeof next);
    }
    if (ok)
        *out = v;
    OPENSSL_cleanse(&v, sizeof v);
    return ok;
}

/* When to refresh credentials that expire at expires_ms. */
static int64_t refresh_at(int64_t now, int64_t expires_ms)
{
    if (expires_ms <= 0)
        return now + 3600 * 1000; /* no expiry given: re-read hourly anyway */
    int64_t left = expires_ms - now;
    int64_t ahead = left / 2 < REFRESH_AHEAD_MS ? left / 2 : REFRESH_AHEAD_MS;
    int64_t at = expires_ms - ahead;
    return at < now + MIN_REFRESH_MS ? now + MIN_REFRESH_MS : at;
}

/* One round of the refresher (loop/refresher.h): fetch, publish, and how long to wait (< 0:
 * until stopped). */
static int64_t refresh_round(void *ud)
{
    struct th_aws_creds *c = ud;
    struct th_aws_credentials v = {0};
    char why[1024] = "";
    bool ok = obtain(c, &v, why, sizeof why);
    int64_t now = th_wall_ms();
    int64_t next;
    if (ok) {
        publish(c, &v);
        c->backoff_ms = 1000;
        next = refresh_at(now, v.expires_ms);
        /* credential_process without Expiration: static credentials, as in the SDKs */
        if (!v.expires_ms && c->src == SRC_PROCESS && c->nroles == 0)
            next = -1;
        char exp[25] = "never";
        if (v.expires_ms)
            th_format_iso8601(v.expires_ms, exp);
        OPENSSL_cleanse(&v, sizeof v);
        th_log_msg(TH_LOG_INFO, "aws_credentials", "credentials from %s, valid until %s", c->desc,
                   exp);
    } else {
        if (stopping(c))
            return -1; /* the refresher ends without waiting */
        th_log_msg(TH_LOG_WARN, "aws_credentials",
                   "cannot get credentials from %s (retry in %lld ms): %s", c->desc,
                   (long long)c->backoff_ms, why);
        next = now + c->backoff_ms;
        c->backoff_ms = c->backoff_ms * 2 > MAX_BACKOFF_MS ? MAX_BACKOFF_MS : c->backoff_ms * 2;
    }
    return next < 0 ? -1 : next > now ? next - now : 0;
}

/* The container endpoint URL, or "" when not configured. false: configured but refused. */
static bool container_url(struct th_aws_creds *c, char *err, size_t errlen)
{
    const char *rel = env("AWS_CONTAINER_CREDENTIALS_RELATIVE_URI");
    const char *full = env("AWS_CONTAINER_CREDENTIALS_FULL_URI");
    if (rel) {
        snprintf(c->url, sizeof c->url, "http://169.254.170.2%s", rel);
        c->direct = true; /* the ECS agent, on this host's link */
        return true;
    }
    if (!full)
        return true;
    /* Plain HTTP only to link-local agents and loopback (as the SDKs allow). */
    char host[256] = "";
    CURLU *u = curl_url();
    char *h = NULL, *scheme = NULL;
    bool ok = u && curl_url_set(u, CURLUPART_URL, full, 0) == CURLUE_OK &&
              curl_url_get(u, CURLUPART_HOST, &h, 0) == CURLUE_OK &&
              curl_url_get(u, CURLUPART_SCHEME, &scheme, 0) == CURLUE_OK;
    if (ok) {
        th_strlcpy(host, h[0] == '[' ? h + 1 : h, sizeof host);
        host[strcspn(host, "]")] = '\0';
        /* the agents and loopback are reached directly; an https endpoint elsewhere may need
         * the proxy */
        c->direct = th_host_is_loopback(host) || strcmp(host, "169.254.170.2") == 0 ||
                    strcmp(host, "169.254.170.23") == 0 || strcmp(host, "fd00:ec2::23") == 0;
        ok = strcmp(scheme, "https") == 0 || c->direct;
    }
    curl_free(h);
    curl_free(scheme);
    curl_url_cleanup(u);
    if (!ok) {
        snprintf(err, errlen,
                 "AWS_CONTAINER_CREDENTIALS_FULL_URI must be https, loopback or the ECS/EKS "
                 "agent address");
        return false;
    }
    th_strlcpy(c->url, full, sizeof c->url);
    return true;
}

/* ---- start-up: which source, read once ---- */

/* AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY (+ token, expiration) into v. */
static th_err env_keys(struct th_aws_credentials *v, char *err, size_t errlen)
{
    const char *tok = env("AWS_SESSION_TOKEN");
    if (!tok)
        tok = env("AWS_SECURITY_TOKEN");
    if (!set_field(v->access_key_id, sizeof v->access_key_id, env("AWS_ACCESS_KEY_ID")) ||
        !set_field(v->secret_access_key, sizeof v->secret_access_key,
                   env("AWS_SECRET_ACCESS_KEY")) ||
        (tok && !set_field(v->session_token, sizeof v->session_token, tok))) {
        snprintf(err, errlen, "AWS credentials in the environment are too long");
        return TH_E_CONFIG;
    }
    const char *exp = env("AWS_CREDENTIAL_EXPIRATION");
    if (exp)
        th_parse_iso8601(exp, &v->expires_ms);
    return TH_E_OK;
}

static void container_tokens(struct th_aws_creds *c)
{
    const char *tf = env("AWS_CONTAINER_AUTHORIZATION_TOKEN_FILE");
    const char *te = env("AWS_CONTAINER_AUTHORIZATION_TOKEN");
    if (tf)
        th_strlcpy(c->token_file, tf, sizeof c->token_file);
    else if (te)
        th_strlcpy(c->token_env, te, sizeof c->token_env);
}

static bool imds_disabled(void)
{
    const char *dis = env("AWS_EC2_METADATA_DISABLED");
    return dis && strcasecmp(dis, "true") == 0;
}

static void imds_setup(struct th_aws_creds *c)
{
    const char *ep = env("AWS_EC2_METADATA_SERVICE_ENDPOINT");
    th_strlcpy(c->imds_endpoint, ep ? ep : "http://169.254.169.254", sizeof c->imds_endpoint);
    size_t n = strlen(c->imds_endpoint);
    if (n && c->imds_endpoint[n - 1] == '/')
        c->imds_endpoint[n - 1] = '\0';
}

/* Characters STS accepts in RoleSessionName ([\w+=,.@-]) and ExternalId (also : and /). */
static bool sts_chars(const char *s, size_t lo, size_t hi, const char *extra)
{
    size_t n = strlen(s);
    if (n < lo || n > hi)
        return false;
    for (; *s; s++)
        if (!isalnum((unsigned char)*s) && *s != '_' && !strchr(extra, *s))
            return false;
    return true;
}

/* The role step of profile p, checked as STS would check it (a typo fails at start). */
static th_err add_role(struct th_aws_creds *c, const struct profile *p, char *err, size_t errlen)
{
    if (c->nroles >= MAX_ROLES) {
        snprintf(err, errlen, "AWS profile '%s': role chain longer than %d roles", p->name,
                 MAX_ROLES);
        return TH_E_CONFIG;
    }
    struct role *r = &c->roles[c->nroles];
    memset(r, 0, sizeof *r);
    size_t an = strlen(p->role_arn);
    bool arn_ok = an >= 20 && strncmp(p->role_arn, "arn:", 4) == 0;
    for (const char *s = p->role_arn; arn_ok && *s; s++)
        arn_ok = (unsigned char)*s > 0x20 && (unsigned char)*s < 0x7f;
    if (!arn_ok) {
        snprintf(err, errlen, "AWS profile '%s': role_arn is not a role ARN", p->name);
        return TH_E_CONFIG;
    }
    if (p->session_name[0] && !sts_chars(p->session_name, 2, 64, "+=,.@-")) {
        snprintf(err, errlen,
                 "AWS profile '%s': role_session_name must be 2-64 characters of "
                 "[A-Za-z0-9_+=,.@-]",
                 p->name);
        return TH_E_CONFIG;
    }
    if (p->external_id[0] && !sts_chars(p->external_id, 2, 1224, "+=,.@:/-")) {
        snprintf(err, errlen,
                 "AWS profile '%s': external_id must be 2-1224 characters of "
                 "[A-Za-z0-9_+=,.@:/-]",
                 p->name);
        return TH_E_CONFIG;
    }
    if (p->duration[0]) {
        char *end;
        errno = 0;
        long d = strtol(p->duration, &end, 10);
        if (errno || *end || end == p->duration || d < 900 || d > 43200) {
            snprintf(err, errlen, "AWS profile '%s': duration_seconds must be 900 to 43200",
                     p->name);
            return TH_E_CONFIG;
        }
        r->duration_seconds = (int)d;
    }
    th_strlcpy(r->arn, p->role_arn, sizeof r->arn);
    th_strlcpy(r->session_name, p->session_name, sizeof r->session_name);
    th_strlcpy(r->external_id, p->external_id, sizeof r->external_id);
    c->nroles++;
    return TH_E_OK;
}

/* credential_source = Environment | Ec2InstanceMetadata | EcsContainer: the role's source. */
static th_err from_credential_source(struct th_aws_creds *c, const struct profile *p, char *err,
                                     size_t errlen)
{
    const char *cs = p->credential_source;
    if (strcmp(cs, "Environment") == 0) {
        if (!env("AWS_ACCESS_KEY_ID") || !env("AWS_SECRET_ACCESS_KEY")) {
            snprintf(err, errlen,
                     "AWS profile '%s': credential_source Environment, but AWS_ACCESS_KEY_ID / "
                     "AWS_SECRET_ACCESS_KEY are not set",
                     p->name);
            return TH_E_CONFIG;
        }
        c->src = SRC_ENV;
        return env_keys(&c->base, err, errlen);
    }
    if (strcmp(cs, "Ec2InstanceMetadata") == 0) {
        if (imds_disabled()) {
            snprintf(err, errlen,
                     "AWS profile '%s': credential_source Ec2InstanceMetadata, but "
                     "AWS_EC2_METADATA_DISABLED is true",
                     p->name);
            return TH_E_CONFIG;
        }
        c->src = SRC_IMDS;
        imds_setup(c);
        return TH_E_OK;
    }
    if (strcmp(cs, "EcsContainer") == 0) {
        if (!container_url(c, err, errlen))
            return TH_E_CONFIG;
        if (!c->url[0]) {
            snprintf(err, errlen,
                     "AWS profile '%s': credential_source EcsContainer, but neither "
                     "AWS_CONTAINER_CREDENTIALS_RELATIVE_URI nor _FULL_URI is set",
                     p->name);
            return TH_E_CONFIG;
        }
        c->src = SRC_CONTAINER;
        container_tokens(c);
        return TH_E_OK;
    }
    snprintf(err, errlen,
             "AWS profile '%s': credential_source must be Environment, Ec2InstanceMetadata or "
             "EcsContainer",
             p->name);
    return TH_E_CONFIG;
}

static th_err web_identity_setup(struct th_aws_creds *c, const char *file, const char *arn,
                                 const char *session, const char *where, char *err, size_t errlen)
{
    if (!arn || !*arn) {
        snprintf(err, errlen, "%s: a web identity token file but no role ARN (AWS_ROLE_ARN)",
                 where);
        return TH_E_CONFIG;
    }
    if (session && *session && !sts_chars(session, 2, 64, "+=,.@-")) {
        snprintf(err, errlen,
                 "%s: the role session name must be 2-64 characters of [A-Za-z0-9_+=,.@-]", where);
        return TH_E_CONFIG;
    }
    if (th_strlcpy(c->wi_token_file, file, sizeof c->wi_token_file) >= sizeof c->wi_token_file ||
        th_strlcpy(c->wi_role_arn, arn, sizeof c->wi_role_arn) >= sizeof c->wi_role_arn) {
        snprintf(err, errlen, "%s: web identity token file name or role ARN too long", where);
        return TH_E_CONFIG;
    }
    th_strlcpy(c->wi_session_name, session ? session : "", sizeof c->wi_session_name);
    c->src = SRC_WEB_IDENTITY;
    return TH_E_OK;
}

/*
 * The source and role chain of profile p, as the SDKs resolve it: a profile with role_arn (and no
 * web_identity_token_file) assumes that role from its source_profile or credential_source —
 * except that a profile reached as someone's source_profile uses its own static keys when it has
 * them (which lets a profile name itself as source). Otherwise: web identity (role_arn +
 * web_identity_token_file), static keys, credential_process. *found false: p has no
 * credentials at all (the chain goes on to the container endpoint and IMDS).
 * visited: the profiles on the way here (a source_profile loop is an error).
 */
static th_err from_profile(struct th_aws_creds *c, const struct profile *p, bool top,
                           const char **visited, size_t nvisited, bool *found, char *err,
                           size_t errlen)
{
    *found = true;
    if (p->overlong[0]) {
        snprintf(err, errlen, "AWS profile '%s': the value of %s is too long", p->name,
                 p->overlong);
        return TH_E_CONFIG;
    }
    bool keys = p->akid[0] && p->secret[0];
    bool web = p->role_arn[0] && p->web_token_file[0];
    if ((p->akid[0] || p->secret[0]) && !keys) {
        snprintf(err, errlen,
                 "AWS profile '%s': aws_access_key_id and aws_secret_access_key go together",
                 p->name);
        return TH_E_CONFIG;
    }
    if (p->role_arn[0] && !web && (top || !keys)) {
        th_err e = TH_E_OK;
        if (p->mfa) {
            snprintf(err, errlen,
                     "AWS profile '%s': mfa_serial needs a code typed by a person; a server "
                     "cannot assume this role",
                     p->name);
            return TH_E_CONFIG;
        }
        if (p->source_profile[0] && p->credential_source[0]) {
            snprintf(err, errlen,
                     "AWS profile '%s': source_profile and credential_source are exclusive",
                     p->name);
            return TH_E_CONFIG;
        }
        if (p->credential_source[0]) {
            e = from_credential_source(c, p, err, errlen);
        } else if (!p->source_profile[0]) {
            snprintf(err, errlen,
                     "AWS profile '%s': role_arn needs source_profile or credential_source",
                     p->name);
            return TH_E_CONFIG;
        } else if (strcmp(p->source_profile, p->name) == 0) {
            if (!keys) {
                snprintf(err, errlen,
                         "AWS profile '%s' is its own source_profile but has no static keys",
                         p->name);
                return TH_E_CONFIG;
            }
            c->src = SRC_FILES;
            snprintf(c->via, sizeof c->via, "profile '%.128s'", p->name);
            set_field(c->base.access_key_id, sizeof c->base.access_key_id, p->akid);
            set_field(c->base.secret_access_key, sizeof c->base.secret_access_key, p->secret);
            set_field(c->base.session_token, sizeof c->base.session_token, p->token);
        } else {
            for (size_t i = 0; i < nvisited; i++) {
                if (strcmp(visited[i], p->source_profile) == 0) {
                    snprintf(err, errlen, "AWS profile '%s': source_profile loop through '%s'",
                             p->name, p->source_profile);
                    return TH_E_CONFIG;
                }
            }
            if (nvisited >= MAX_ROLES) {
                snprintf(err, errlen, "AWS profile '%s': role chain longer than %d roles", p->name,
                         MAX_ROLES);
                return TH_E_CONFIG;
            }
            struct profile *sp = calloc(1, sizeof *sp);
            if (!sp)
                return TH_E_NOMEM;
            load_profile(p->source_profile, sp);
            bool sfound = false;
            if (!sp->found) {
                char what[300];
                snprintf(what, sizeof what, "source_profile '%.128s' of AWS profile '%.128s'",
                         p->source_profile, p->name);
                e = not_found(what, err, errlen);
            } else {
                visited[nvisited] = p->name;
                e = from_profile(c, sp, false, visited, nvisited + 1, &sfound, err, errlen);
                if (e == TH_E_OK && !sfound) {
                    snprintf(err, errlen,
                             "AWS profile '%s' (source_profile of '%s') has no "
                             "credentials",
                             sp->name, p->name);
                    e = TH_E_CONFIG;
                }
            }
            profile_free(sp);
        }
        return e == TH_E_OK ? add_role(c, p, err, errlen) : e;
    }
    char where[160];
    snprintf(where, sizeof where, "AWS profile '%.128s'", p->name);
    snprintf(c->via, sizeof c->via, "profile '%.128s'", p->name);
    if (web)
        return web_identity_setup(c, p->web_token_file, p->role_arn, p->session_name, where, err,
                                  errlen);
    if (keys) {
        c->src = SRC_FILES;
        set_field(c->base.access_key_id, sizeof c->base.access_key_id, p->akid);
        set_field(c->base.secret_access_key, sizeof c->base.secret_access_key, p->secret);
        set_field(c->base.session_token, sizeof c->base.session_token, p->token);
        return TH_E_OK;
    }
    if (p->process[0]) {
        c->src = SRC_PROCESS;
        th_strlcpy(c->process, p->process, sizeof c->process);
        return TH_E_OK;
    }
    if (p->sso) {
        snprintf(err, errlen,
                 "AWS profile '%s': IAM Identity Center (sso_*) sign-in needs a person; use a "
                 "role, web identity or credential_process",
                 p->name);
        return TH_E_CONFIG;
    }
    *found = false;
    return TH_E_OK;
}

bool th_aws_split_url(const char *url, char *host, size_t hostlen, char *path, size_t pathlen)
{
    CURLU *u = curl_url();
    char *h = NULL, *port = NULL, *scheme = NULL, *pa = NULL;
    bool ok = u && curl_url_set(u, CURLUPART_URL, url, 0) == CURLUE_OK &&
              curl_url_get(u, CURLUPART_HOST, &h, 0) == CURLUE_OK &&
              curl_url_get(u, CURLUPART_SCHEME, &scheme, 0) == CURLUE_OK &&
              curl_url_get(u, CURLUPART_PATH, &pa, 0) == CURLUE_OK &&
              (strcmp(scheme, "https") == 0 || strcmp(scheme, "http") == 0);
    if (ok) {
        curl_url_get(u, CURLUPART_PORT, &port, 0); /* absent: the default port */
        bool dflt = !port || (strcmp(scheme, "https") == 0 && strcmp(port, "443") == 0) ||
                    (strcmp(scheme, "http") == 0 && strcmp(port, "80") == 0);
        int n = snprintf(host, hostlen, "%s%s%s", h, dflt ? "" : ":", dflt ? "" : port);
        ok = n > 0 && (size_t)n < hostlen && th_strlcpy(path, pa, pathlen) < pathlen;
        for (char *ch = host; ok && *ch; ch++)
            *ch = (char)tolower((unsigned char)*ch);
    }
    curl_free(h);
    curl_free(port);
    curl_free(scheme);
    curl_free(pa);
    curl_url_cleanup(u);
    return ok;
}

/* The STS endpoint: AWS_ENDPOINT_URL_STS, AWS_ENDPOINT_URL, else the region's (see sts.h). */
static th_err sts_setup(struct th_aws_creds *c, const char *region, const struct profile *top,
                        char *err, size_t errlen)
{
    const char *mode = env("AWS_STS_REGIONAL_ENDPOINTS");
    if (!mode && top && top->sts_regional[0])
        mode = top->sts_regional;
    if (mode && strcmp(mode, "legacy") != 0 && strcmp(mode, "regional") != 0) {
        snprintf(err, errlen, "sts_regional_endpoints must be regional or legacy");
        return TH_E_CONFIG;
    }
    if (!region || !*region ||
        th_sts_endpoint(region, mode && strcmp(mode, "legacy") == 0, c->sts_url, sizeof c->sts_url,
                        c->sts_region, sizeof c->sts_region) != TH_E_OK) {
        snprintf(err, errlen, "AWS STS needs a valid region: set [aws] region or AWS_REGION");
        return TH_E_CONFIG;
    }
    const char *ep = env("AWS_ENDPOINT_URL_STS");
    if (!ep)
        ep = env("AWS_ENDPOINT_URL");
    if (ep && th_strlcpy(c->sts_url, ep, sizeof c->sts_url) >= sizeof c->sts_url) {
        snprintf(err, errlen, "the STS endpoint URL is too long");
        return TH_E_CONFIG;
    }
    if (!th_aws_split_url(c->sts_url, c->sts_host, sizeof c->sts_host, c->sts_path,
                          sizeof c->sts_path)) {
        snprintf(err, errlen, "the STS endpoint is not an http(s) URL: %.200s", c->sts_url);
        return TH_E_CONFIG;
    }
    return TH_E_OK;
}

/* What th_aws_creds_source() says: the source, then each role on top of it. */
static void describe(struct th_aws_creds *c)
{
    const char *via = c->via;
    char d[sizeof c->desc];
    if (c->src == SRC_WEB_IDENTITY)
        snprintf(d, sizeof d, "web-identity %.300s (%s)", c->wi_role_arn, via);
    else if (c->src == SRC_FILES || c->src == SRC_PROCESS)
        snprintf(d, sizeof d, "%s (%s)", source_names[c->src], via);
    else
        snprintf(d, sizeof d, "%s", source_names[c->src]);
    for (size_t i = 0; i < c->nroles; i++) {
        char prev[sizeof d];
        th_strlcpy(prev, d, sizeof prev);
        snprintf(d, sizeof d, "assume-role %.300s from %.600s", c->roles[i].arn, prev);
    }
    th_strlcpy(c->desc, d, sizeof c->desc);
}

th_err th_aws_creds_new(const char *profile, const char *region, const char *ca_file,
                        struct th_aws_creds **out, char *err, size_t errlen)
{
    struct th_aws_creds *c = calloc(1, sizeof *c);
    struct profile *top = calloc(1, sizeof *top);
    if (!c || !top) {
        free(c);
        free(top);
        return TH_E_NOMEM;
    }
    if (ca_file)
        th_strlcpy(c->ca_file, ca_file, sizeof c->ca_file);
    pthread_mutex_init(&c->mu, NULL);
    c->backoff_ms = 1000;
    atomic_init(&c->generation, 0);
    /* An explicit profile in the config skips the environment keys and the web identity
       variables, as the SDKs do for a profile given in code. */
    bool explicit_profile = profile && *profile;
    const char *prof = explicit_profile ? profile : env("AWS_PROFILE");
    th_strlcpy(c->profile, prof ? prof : "default", sizeof c->profile);
    load_profile(c->profile, top);

    th_err e = TH_E_OK;
    bool found = false;
    if (prof && !top->found) {
        e = profile_not_found(c->profile, err, errlen);
    } else if (!explicit_profile && env("AWS_ACCESS_KEY_ID") && env("AWS_SECRET_ACCESS_KEY")) {
        c->src = SRC_ENV;
        found = true;
        e = env_keys(&c->base, err, errlen);
    } else if (!explicit_profile && env("AWS_WEB_IDENTITY_TOKEN_FILE")) {
        found = true;
        th_strlcpy(c->via, "AWS_WEB_IDENTITY_TOKEN_FILE", sizeof c->via);
        e = web_identity_setup(c, env("AWS_WEB_IDENTITY_TOKEN_FILE"), env("AWS_ROLE_ARN"),
                               env("AWS_ROLE_SESSION_NAME"), "AWS_WEB_IDENTITY_TOKEN_FILE", err,
                               errlen);
    } else if (top->found) {
        const char *visited[MAX_ROLES];
        e = from_profile(c, top, true, visited, 0, &found, err, errlen);
    }
    if (e == TH_E_OK && !found) {
        if (!container_url(c, err, errlen)) {
            e = TH_E_CONFIG;
        } else if (c->url[0]) {
            c->src = SRC_CONTAINER;
            container_tokens(c);
        } else if (imds_disabled()) {
            snprintf(err, errlen,
                     "no AWS credentials: none in the environment, none for profile '%s' "
                     "in the shared files, no container endpoint, and IMDS is disabled",
                     c->profile);
            e = TH_E_CONFIG;
        } else {
            c->src = SRC_IMDS;
            imds_setup(c);
        }
    }
    if (e == TH_E_OK && (c->nroles || c->src == SRC_WEB_IDENTITY))
        e = sts_setup(c, region, top, err, errlen);
    profile_free(top);
    if (e != TH_E_OK) {
        th_aws_creds_free(c);
        return e;
    }
    describe(c);
    if ((c->src == SRC_ENV || c->src == SRC_FILES) && c->nroles == 0) {
        publish(c, &c->base); /* static: read once, no thread */
    } else {
        if (th_refresher_start(refresh_round, c, 0, &c->refresher) != TH_E_OK) {
            snprintf(err, errlen, "cannot start the AWS credentials thread");
            th_aws_creds_free(c);
            return TH_E_NOMEM;
        }
    }
    *out = c;
    return TH_E_OK;
}

void th_aws_creds_free(struct th_aws_creds *c)
{
    if (!c)
        return;
    th_refresher_stop(c->refresher); /* a fetch in progress ends within its timeout (2 s) */
    pthread_mutex_destroy(&c->mu);
    OPENSSL_cleanse(&c->cur, sizeof c->cur); /* secrets do not linger in freed memory */
    OPENSSL_cleanse(&c->base, sizeof c->base);
    free(c);
}
