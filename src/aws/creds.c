#include "aws/creds.h"

#include <errno.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>

#include <curl/curl.h>
#include <ini.h>
#include <jansson.h>
#include <openssl/crypto.h>

#include "common/buf.h"
#include "common/util.h"
#include "dispatch/fetch.h"
#include "obs/log.h"

enum source { SRC_ENV, SRC_FILES, SRC_CONTAINER, SRC_IMDS };
static const char *const source_names[] = {"environment", "shared-files", "container", "imds"};

#define REFRESH_AHEAD_MS (15 * 60 * 1000) /* botocore's advisory refresh window */
#define MIN_REFRESH_MS   1000
#define MAX_BACKOFF_MS   (30 * 1000)

struct th_aws_creds {
    enum source src;
    char profile[128];
    /* container / IMDS settings, read once at start */
    char url[1024];
    char token_env[2048];
    char token_file[1024];
    char imds_endpoint[256];
    bool direct; /* the container endpoint is on this host's link: never through a proxy */

    pthread_mutex_t mu;
    pthread_cond_t cv;
    bool stop;
    bool have_thread;
    pthread_t thread;
    struct th_aws_credentials cur; /* guarded by mu */
    atomic_uint_fast64_t generation;
};

static const char *env(const char *name)
{
    const char *v = getenv(name);
    return v && *v ? v : NULL;
}

const char *th_aws_creds_source(const struct th_aws_creds *c)
{
    return source_names[c->src];
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

struct ini_pick {
    const char *section; /* the section to read */
    struct th_aws_credentials *creds;
    char *region;
    size_t region_len;
    char *ca_bundle;
    size_t ca_bundle_len;
    bool found;
};

static int on_ini(void *ud, const char *section, const char *name, const char *value)
{
    struct ini_pick *p = ud;
    if (strcmp(section, p->section) != 0)
        return 1;
    p->found = true;
    if (p->creds) {
        if (strcmp(name, "aws_access_key_id") == 0)
            th_strlcpy(p->creds->access_key_id, value, sizeof p->creds->access_key_id);
        else if (strcmp(name, "aws_secret_access_key") == 0)
            th_strlcpy(p->creds->secret_access_key, value, sizeof p->creds->secret_access_key);
        else if (strcmp(name, "aws_session_token") == 0 || strcmp(name, "aws_security_token") == 0)
            th_strlcpy(p->creds->session_token, value, sizeof p->creds->session_token);
    }
    if (p->region && strcmp(name, "region") == 0)
        th_strlcpy(p->region, value, p->region_len);
    if (p->ca_bundle && strcmp(name, "ca_bundle") == 0)
        th_strlcpy(p->ca_bundle, value, p->ca_bundle_len);
    return 1;
}

/* Credentials of profile from the credentials file, then the config file. */
static bool from_files(const char *profile, struct th_aws_credentials *out)
{
    char path[1024];
    struct th_aws_credentials v = {0};
    struct ini_pick pick = {.section = profile, .creds = &v};
    home_path("AWS_SHARED_CREDENTIALS_FILE", ".aws/credentials", path, sizeof path);
    ini_parse(path, on_ini, &pick);
    if (!v.access_key_id[0] || !v.secret_access_key[0]) {
        char section[160];
        if (strcmp(profile, "default") == 0)
            th_strlcpy(section, "default", sizeof section);
        else
            snprintf(section, sizeof section, "profile %s", profile);
        memset(&v, 0, sizeof v);
        pick = (struct ini_pick){.section = section, .creds = &v};
        home_path("AWS_CONFIG_FILE", ".aws/config", path, sizeof path);
        ini_parse(path, on_ini, &pick);
    }
    if (!v.access_key_id[0] || !v.secret_access_key[0])
        return false;
    *out = v;
    return true;
}

/* Reads the profile's section of the config file (profile "" = AWS_PROFILE, else default). */
static void pick_from_config_file(const char *profile, struct ini_pick *pick)
{
    const char *prof = profile && *profile ? profile : env("AWS_PROFILE");
    if (!prof)
        prof = "default";
    char section[160], path[1024];
    if (strcmp(prof, "default") == 0)
        th_strlcpy(section, "default", sizeof section);
    else
        snprintf(section, sizeof section, "profile %s", prof);
    pick->section = section;
    home_path("AWS_CONFIG_FILE", ".aws/config", path, sizeof path);
    ini_parse(path, on_ini, pick);
    pick->section = NULL;
}

bool th_aws_resolve_region(const char *cfg_region, const char *profile, char *out, size_t outlen)
{
    const char *v = cfg_region && *cfg_region ? cfg_region : env("AWS_REGION");
    if (!v)
        v = env("AWS_DEFAULT_REGION");
    if (v)
        return th_strlcpy(out, v, outlen) < outlen;
    out[0] = '\0';
    struct ini_pick pick = {.region = out, .region_len = outlen};
    pick_from_config_file(profile, &pick);
    return out[0] != '\0';
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
    struct ini_pick pick = {.ca_bundle = out, .ca_bundle_len = outlen};
    pick_from_config_file(profile, &pick);
    return true;
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

/* Sleeps until when (unix ms) or stop; true when asked to stop. */
static bool wait_until(struct th_aws_creds *c, int64_t when_ms)
{
    struct timespec ts = {.tv_sec = when_ms / 1000, .tv_nsec = (long)(when_ms % 1000) * 1000000L};
    pthread_mutex_lock(&c->mu);
    while (!c->stop) {
        if (pthread_cond_timedwait(&c->cv, &c->mu, &ts) == ETIMEDOUT)
            break;
    }
    bool stop = c->stop;
    pthread_mutex_unlock(&c->mu);
    return stop;
}

static void *refresher(void *arg)
{
    struct th_aws_creds *c = arg;
    int64_t backoff = 1000;
    for (;;) {
        struct th_aws_credentials v;
        char why[256] = "";
        bool ok = c->src == SRC_CONTAINER ? fetch_container(c, &v, why, sizeof why)
                                          : fetch_imds(c, &v, why, sizeof why);
        int64_t now = th_wall_ms();
        int64_t next;
        if (ok) {
            publish(c, &v);
            backoff = 1000;
            next = refresh_at(now, v.expires_ms);
            char exp[25] = "never";
            if (v.expires_ms)
                th_format_iso8601(v.expires_ms, exp);
            th_log_msg(TH_LOG_INFO, "aws_credentials",
                       "credentials from the %s endpoint, valid until %s", source_names[c->src],
                       exp);
        } else {
            th_log_msg(TH_LOG_WARN, "aws_credentials",
                       "cannot fetch credentials from the %s endpoint (retry in %lld ms): %s",
                       source_names[c->src], (long long)backoff, why);
            next = now + backoff;
            backoff = backoff * 2 > MAX_BACKOFF_MS ? MAX_BACKOFF_MS : backoff * 2;
        }
        if (wait_until(c, next))
            return NULL;
    }
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

th_err th_aws_creds_new(const char *profile, struct th_aws_creds **out, char *err, size_t errlen)
{
    struct th_aws_creds *c = calloc(1, sizeof *c);
    if (!c)
        return TH_E_NOMEM;
    pthread_mutex_init(&c->mu, NULL);
    pthread_cond_init(&c->cv, NULL);
    atomic_init(&c->generation, 0);
    const char *prof = profile && *profile ? profile : env("AWS_PROFILE");
    th_strlcpy(c->profile, prof ? prof : "default", sizeof c->profile);

    struct th_aws_credentials v = {0};
    /* An explicit profile in the config skips the environment keys, as the SDKs do. */
    bool explicit_profile = profile && *profile;
    if (!explicit_profile && env("AWS_ACCESS_KEY_ID") && env("AWS_SECRET_ACCESS_KEY")) {
        c->src = SRC_ENV;
        const char *tok = env("AWS_SESSION_TOKEN");
        if (!tok)
            tok = env("AWS_SECURITY_TOKEN");
        if (!set_field(v.access_key_id, sizeof v.access_key_id, env("AWS_ACCESS_KEY_ID")) ||
            !set_field(v.secret_access_key, sizeof v.secret_access_key,
                       env("AWS_SECRET_ACCESS_KEY")) ||
            (tok && !set_field(v.session_token, sizeof v.session_token, tok))) {
            snprintf(err, errlen, "AWS credentials in the environment are too long");
            th_aws_creds_free(c);
            return TH_E_CONFIG;
        }
        const char *exp = env("AWS_CREDENTIAL_EXPIRATION");
        if (exp)
            th_parse_iso8601(exp, &v.expires_ms);
        publish(c, &v);
    } else if (from_files(c->profile, &v)) {
        c->src = SRC_FILES;
        publish(c, &v);
    } else {
        if (!container_url(c, err, errlen)) {
            th_aws_creds_free(c);
            return TH_E_CONFIG;
        }
        if (c->url[0]) {
            c->src = SRC_CONTAINER;
            const char *tf = env("AWS_CONTAINER_AUTHORIZATION_TOKEN_FILE");
            const char *te = env("AWS_CONTAINER_AUTHORIZATION_TOKEN");
            if (tf)
                th_strlcpy(c->token_file, tf, sizeof c->token_file);
            else if (te)
                th_strlcpy(c->token_env, te, sizeof c->token_env);
        } else {
            const char *dis = env("AWS_EC2_METADATA_DISABLED");
            if (dis && strcasecmp(dis, "true") == 0) {
                snprintf(err, errlen,
                         "no AWS credentials: none in the environment, none for profile '%s' "
                         "in the shared files, no container endpoint, and IMDS is disabled",
                         c->profile);
                th_aws_creds_free(c);
                return TH_E_CONFIG;
            }
            c->src = SRC_IMDS;
            const char *ep = env("AWS_EC2_METADATA_SERVICE_ENDPOINT");
            th_strlcpy(c->imds_endpoint, ep ? ep : "http://169.254.169.254",
                       sizeof c->imds_endpoint);
            size_t n = strlen(c->imds_endpoint);
            if (n && c->imds_endpoint[n - 1] == '/')
                c->imds_endpoint[n - 1] = '\0';
        }
        if (pthread_create(&c->thread, NULL, refresher, c) != 0) {
            snprintf(err, errlen, "cannot start the AWS credentials thread");
            th_aws_creds_free(c);
            return TH_E_NOMEM;
        }
        c->have_thread = true;
    }
    *out = c;
    return TH_E_OK;
}

void th_aws_creds_free(struct th_aws_creds *c)
{
    if (!c)
        return;
    if (c->have_thread) {
        pthread_mutex_lock(&c->mu);
        c->stop = true;
        pthread_cond_signal(&c->cv);
        pthread_mutex_unlock(&c->mu);
        pthread_join(c->thread, NULL); /* a fetch in progress ends within its timeout (2 s) */
    }
    pthread_cond_destroy(&c->cv);
    pthread_mutex_destroy(&c->mu);
    OPENSSL_cleanse(&c->cur, sizeof c->cur); /* secrets do not linger in freed memory */
    free(c);
}
