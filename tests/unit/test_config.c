/* Unit tests: config (defaults, file, environment, secrets, validation, the example file). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "common/util.h"
#include "config/config.h"

#include "tmpdir.h"

#define dir tmpdir

static const char *write_file(const char *name, const char *content)
{
    static char path[256];
    snprintf(path, sizeof path, "%s/%s", dir, name);
    FILE *f = fopen(path, "w");
    assert_non_null(f);
    fputs(content, f);
    fclose(f);
    return path;
}

/* A secret file: content written, then mode set (the umask does not decide it). */
static const char *write_secret(const char *name, const char *content, size_t len, mode_t mode)
{
    static char path[256];
    snprintf(path, sizeof path, "%s/%s", dir, name);
    unlink(path);
    FILE *f = fopen(path, "w");
    assert_non_null(f);
    assert_int_equal(fwrite(content, 1, len, f), len);
    fclose(f);
    assert_int_equal(chmod(path, mode), 0);
    return path;
}

/* An environment block from string literals (main's envp is not const). */
#define ENV(...) ((char *const *)(const char *[]){__VA_ARGS__, NULL})

static char *const *const no_env = ENV(NULL);

static void test_defaults(void **state)
{
    (void)state;
    struct th_config c;
    char err[512];
    assert_int_equal(th_config_load(&c, NULL, no_env, err, sizeof err), TH_E_OK);
    assert_string_equal(c.listen, "127.0.0.1:8080");
    assert_int_equal(c.threads, 0);
    assert_int_equal(c.deadline_ms, 2500);
    assert_int_equal(c.max_body, 65536);
    assert_int_equal(c.auth_mode, TH_AUTH_HEADER);
    assert_string_equal(c.auth_header_name, "Authorization");
    assert_string_equal(c.auth_header_secret, "");
    assert_string_equal(c.phone_default_region, "US");
    assert_string_equal(c.message_default_language, "en");
    assert_true(c.message_builtin_fallback);
    assert_string_equal(c.store_url, "sqlite:var/telehook.db");
    assert_string_equal(c.provider_name, "outbox");
    assert_int_equal(c.log_level, TH_LOG_INFO);
    /* the server needs a secret in header mode; admin commands do not */
    assert_int_equal(th_config_check_serve(&c, err, sizeof err), TH_E_CONFIG);
    assert_non_null(strstr(err, "header_secret"));
    th_config_release(&c);
}

/* Comments after values, as the docs write them: '#' or ';' after a space ends the value. */
static void test_inline_comments(void **state)
{
    (void)state;
    const char *path =
        write_file("comments.conf", "[auth]\n"
                                    "audience = api://default   # the default audience\n"
                                    "issuer = https://example.okta.com/oauth2/default\t; tab\n"
                                    "scopes = \"okta.telephony.hook # not a comment\"  # comment\n"
                                    "client_ids = 0oa#1\n"
                                    "jwks_url = https://keys.example/k#frag # comment\n"
                                    "[server]\n"
                                    "threads = 3 # three\n"
                                    "listen = \"127.0.0.1:9000\"\n");
    struct th_config c;
    char err[512];
    assert_int_equal(th_config_load(&c, path, no_env, err, sizeof err), TH_E_OK);
    assert_string_equal(c.auth_audience, "api://default");
    assert_string_equal(c.auth_issuer, "https://example.okta.com/oauth2/default");
    assert_string_equal(c.auth_scopes, "okta.telephony.hook # not a comment");
    assert_string_equal(c.auth_client_ids, "0oa#1");
    assert_string_equal(c.auth_jwks_url, "https://keys.example/k#frag");
    assert_int_equal(c.threads, 3);
    assert_string_equal(c.listen, "127.0.0.1:9000");
    th_config_release(&c);
}

static void test_file_and_env(void **state)
{
    (void)state;
    const char *secret = write_secret("secret", "s3cr3t-from-file\n", 17, 0600);
    char conf[1024];
    snprintf(conf, sizeof conf,
             "# comment\n[server]\nlisten = \"[::1]:9000\"\nthreads = 2\ndeadline_ms=1500\n"
             "[auth]\nheader_name = x-telephony-key\nheader_secret_file = %s\n"
             "[message]\ndefault_language = es-mx\nbuiltin_fallback = no\n[log]\nlevel = debug\n",
             secret);
    const char *path = write_file("a.conf", conf);
    char *const *env = ENV("TELEHOOK_SERVER_THREADS=4", "PATH=/usr/bin", "TELEHOOK_CONFIG=ignored",
                           "TELEHOOK_BIN=/x");
    struct th_config c;
    char err[512];
    assert_int_equal(th_config_load(&c, path, env, err, sizeof err), TH_E_OK);
    assert_string_equal(c.listen, "[::1]:9000");
    assert_int_equal(c.threads, 4); /* environment beats the file */
    assert_int_equal(c.deadline_ms, 1500);
    assert_string_equal(c.auth_header_name, "x-telephony-key");
    assert_string_equal(c.auth_header_secret, "s3cr3t-from-file"); /* newline stripped */
    assert_string_equal(c.message_default_language, "es-mx");
    assert_false(c.message_builtin_fallback);
    assert_int_equal(c.log_level, TH_LOG_DEBUG);
    assert_int_equal(th_config_check_serve(&c, err, sizeof err), TH_E_OK);
    th_config_release(&c);
}

static void test_env_secret_file(void **state)
{
    (void)state;
    const char *secret = write_secret("secret2", "Basic dXNlcjpwYXNz\r\n", 20, 0400);
    char var[300];
    snprintf(var, sizeof var, "TELEHOOK_AUTH_HEADER_SECRET_FILE=%s", secret);
    char *const *env = ENV(var);
    struct th_config c;
    char err[512];
    assert_int_equal(th_config_load(&c, NULL, env, err, sizeof err), TH_E_OK);
    assert_string_equal(c.auth_header_secret, "Basic dXNlcjpwYXNz");
    th_config_release(&c);
    /* both the value and the file at one level: refused */
    char *const *both = ENV(var, "TELEHOOK_AUTH_HEADER_SECRET=x");
    assert_int_equal(th_config_load(&c, NULL, both, err, sizeof err), TH_E_CONFIG);
    assert_non_null(strstr(err, "both set"));
}

static void load_fails(const char *conf, char *const *env, const char *want1, const char *want2)
{
    const char *path = conf ? write_file("bad.conf", conf) : NULL;
    struct th_config c;
    char err[512];
    assert_int_equal(th_config_load(&c, path, env, err, sizeof err), TH_E_CONFIG);
    if (!strstr(err, want1) || (want2 && !strstr(err, want2)))
        fail_msg("error '%s' lacks '%s' / '%s'", err, want1, want2 ? want2 : "");
}

static void test_errors_name_the_key(void **state)
{
    (void)state;
    load_fails("[server]\nthreads = 1\ndeadline_ms = 5000\n", no_env, "bad.conf:3",
               "[server] deadline_ms: must be between 100 and 2900 (got 5000)");
    load_fails("[server]\nthreads = many\n", no_env, "bad.conf:2", "not an integer");
    load_fails("[server]\nlisten = 8080\n", no_env, "[server] listen", "HOST:PORT");
    load_fails("[server]\nlisten = 1.2.3.4:99999\n", no_env, "[server] listen", NULL);
    load_fails("[auth]\nmode = open\n", no_env, "[auth] mode", "header none");
    load_fails("[auth]\nheader_name = bad header\n", no_env, "[auth] header_name", NULL);
    load_fails("[phone]\ndefault_region = usa\n", no_env, "[phone] default_region", NULL);
    load_fails("[message]\ndefault_language = English\n", no_env, "[message] default_language",
               NULL);
    load_fails("[message]\nbuiltin_fallback = maybe\n", no_env, "builtin_fallback", NULL);
    load_fails("[provider]\nname = carrier-pigeon\n", no_env, "[provider] name", "outbox");
    load_fails("[server]\nlisn = 1\n", no_env, "bad.conf:2", "[server] lisn: unknown key");
    load_fails("[nope]\nx = 1\n", no_env, "bad.conf:2", "unknown section [nope]");
    load_fails("[server\n", no_env, "bad.conf:1", "syntax error");
    load_fails("[auth]\nheader_secret_file = /nonexistent/secret\n", no_env, "header_secret_file",
               "cannot read");
    char *const *env = ENV("TELEHOOK_SERVER_DEADLINE_MS=abc");
    load_fails(NULL, env, "TELEHOOK_SERVER_DEADLINE_MS", "not an integer");
    char *const *typo = ENV("TELEHOOK_SERVER_LISTN=1");
    load_fails(NULL, typo, "TELEHOOK_SERVER_LISTN", "unknown configuration variable");
    char *const *section_typo = ENV("TELEHOOK_SERVR_LISTEN=127.0.0.1:1");
    load_fails(NULL, section_typo, "TELEHOOK_SERVR_LISTEN", "no such section");
    struct th_config c;
    char err[512];
    assert_int_equal(th_config_load(&c, "/nonexistent.conf", no_env, err, sizeof err), TH_E_CONFIG);
    assert_non_null(strstr(err, "/nonexistent.conf"));
}

/* Loads with TELEHOOK_<var>=path; returns the result, the message in err. */
static th_err load_secret_env(const char *var, const char *path, struct th_config *c, char *err,
                              size_t errlen)
{
    char env[400];
    snprintf(env, sizeof env, "%s=%s", var, path);
    char *const *e = ENV(env);
    return th_config_load(c, NULL, e, err, errlen);
}

/* Every *_file key: a file other users can read or write is refused, naming the file and the
 * fix; one its group can read is taken with a warning; 0600 and 0400 are taken silently. */
static void test_secret_file_modes(void **state)
{
    (void)state;
    static const char *const vars[] = {
        "TELEHOOK_AUTH_HEADER_SECRET_FILE",    "TELEHOOK_TWILIO_AUTH_TOKEN_FILE",
        "TELEHOOK_TWILIO_API_KEY_SECRET_FILE", "TELEHOOK_WEBHOOK_SECRET_FILE",
        "TELEHOOK_GUARD_SECRET_FILE",          "TELEHOOK_DLQ_KEY_FILE",
        "TELEHOOK_DLQ_PREVIOUS_KEY_FILE"};
    static const char value[] = "c2VjcmV0LXZhbHVlLTAxMjM0NTY3ODlhYmNkZWY=\n";
    struct th_config c;
    char err[512];
    for (size_t i = 0; i < sizeof vars / sizeof *vars; i++) {
        static const mode_t open_to_others[] = {0644, 0604, 0602, 0601, 0666};
        for (size_t m = 0; m < sizeof open_to_others / sizeof *open_to_others; m++) {
            const char *path = write_secret("s-others", value, sizeof value - 1, open_to_others[m]);
            assert_int_equal(load_secret_env(vars[i], path, &c, err, sizeof err), TH_E_CONFIG);
            if (!strstr(err, vars[i]) || !strstr(err, path) || !strstr(err, "chmod 600") ||
                !strstr(err, "other users") || strstr(err, "c2VjcmV0"))
                fail_msg("%s mode %o: '%s'", vars[i], (unsigned)open_to_others[m], err);
        }
        const char *path = write_secret("s-group", value, sizeof value - 1, 0640);
        assert_int_equal(load_secret_env(vars[i], path, &c, err, sizeof err), TH_E_OK);
        if (!c.warnings || !strstr(c.warnings, vars[i]) || !strstr(c.warnings, path) ||
            !strstr(c.warnings, "0640") || !strstr(c.warnings, "group") ||
            strstr(c.warnings, "c2VjcmV0"))
            fail_msg("%s mode 0640: warnings '%s'", vars[i], c.warnings ? c.warnings : "(none)");
        th_config_release(&c);
        assert_null(c.warnings);
        for (mode_t mode = 0400; mode <= 0600; mode += 0200) {
            path = write_secret("s-owner", value, sizeof value - 1, mode);
            assert_int_equal(load_secret_env(vars[i], path, &c, err, sizeof err), TH_E_OK);
            assert_true(!c.warnings || !c.warnings[0]);
            th_config_release(&c);
        }
    }
    /* the same from the config file, and two warnings are two lines */
    const char *p1 = write_secret("g1", value, sizeof value - 1, 0640);
    char conf[600];
    snprintf(conf, sizeof conf, "[auth]\nheader_secret_file = %s\n", p1);
    const char *g2 = write_secret("g2", value, sizeof value - 1, 0660);
    char env[300];
    snprintf(env, sizeof env, "TELEHOOK_WEBHOOK_SECRET_FILE=%s", g2);
    char *const *e = ENV(env);
    assert_int_equal(th_config_load(&c, write_file("g.conf", conf), e, err, sizeof err), TH_E_OK);
    assert_non_null(c.warnings);
    assert_non_null(strstr(c.warnings, "g.conf:2: [auth] header_secret_file:"));
    assert_non_null(strstr(c.warnings, "\nTELEHOOK_WEBHOOK_SECRET_FILE: [webhook] secret_file:"));
    assert_non_null(strstr(c.warnings, "0660"));
    th_config_release(&c);
    write_secret("w.secret", value, sizeof value - 1, 0644);
    snprintf(conf, sizeof conf, "[auth]\nheader_secret_file = %s/w.secret\n", dir);
    load_fails(conf, no_env, "bad.conf:2: [auth] header_secret_file:", "(mode 0644)");
}

/* A secret file must be a regular file, or a symlink to one (Kubernetes mounts secrets so): the
 * mode checked is the target's. A FIFO is refused at once, not waited on. */
static void test_secret_file_kinds(void **state)
{
    (void)state;
    static const char value[] = "0123456789abcdef-secret\n";
    struct th_config c;
    char err[512], link[300], target[300];
    const char *var = "TELEHOOK_AUTH_HEADER_SECRET_FILE";
    /* a directory */
    assert_int_equal(load_secret_env(var, dir, &c, err, sizeof err), TH_E_CONFIG);
    assert_non_null(strstr(err, "not a regular file"));
    /* a FIFO (nobody writes it: the old fopen waited forever) */
    snprintf(link, sizeof link, "%s/fifo", dir);
    assert_int_equal(mkfifo(link, 0600), 0);
    assert_int_equal(load_secret_env(var, link, &c, err, sizeof err), TH_E_CONFIG);
    assert_non_null(strstr(err, "not a regular file"));
    /* a symlink to a 0600 file: taken */
    snprintf(target, sizeof target, "%s", write_secret("target", value, sizeof value - 1, 0600));
    snprintf(link, sizeof link, "%s/link", dir);
    assert_int_equal(symlink(target, link), 0);
    assert_int_equal(load_secret_env(var, link, &c, err, sizeof err), TH_E_OK);
    assert_string_equal(c.auth_header_secret, "0123456789abcdef-secret");
    assert_true(!c.warnings || !c.warnings[0]);
    th_config_release(&c);
    /* the same link to a 0644 file: refused (the link's own mode, 0777, is not what counts) */
    assert_int_equal(chmod(target, 0644), 0);
    assert_int_equal(load_secret_env(var, link, &c, err, sizeof err), TH_E_CONFIG);
    assert_non_null(strstr(err, "(mode 0644)"));
}

/* Exactly one trailing newline (LF or CRLF) is removed; what is left must be one line of text
 * without a NUL, a control character or a space at either end; an empty file is refused. */
static void test_secret_file_content(void **state)
{
    (void)state;
    struct {
        const char *content;
        size_t len;
        const char *want; /* NULL: taken as "0123456789abcdef" */
    } cases[] = {
        {"0123456789abcdef", 16, NULL},
        {"0123456789abcdef\n", 17, NULL},
        {"0123456789abcdef\r\n", 18, NULL},
        {"0123456789abcdef\n\n", 18, "ends in a newline"},
        {"0123456789abcdef\r\n\r\n", 20, "ends in a newline"},
        {"0123456789abcdef\n\r\n", 19, "ends in a newline"},
        {"0123456789abcdef\r", 17, "ends in a newline"},
        {"0123456789\nabcdef\n", 18, "control character"},
        {"0123456789\tabcdef", 17, "control character"},
        {"0123456789\x1b[0mabcdef", 20, "control character"},
        {"0123456789abcdef\x7f", 17, "control character"},
        {"0123456789\0abcdef", 17, "NUL"},
        {"0123456789abcdef\0\n", 18, "NUL"},
        {" 0123456789abcdef", 17, "space"},
        {"0123456789abcdef \n", 18, "space"},
        {"", 0, "is empty"},
        {"\n", 1, "is empty"},
        {"\r\n", 2, "is empty"},
    };
    struct th_config c;
    char err[512];
    for (size_t i = 0; i < sizeof cases / sizeof *cases; i++) {
        const char *path = write_secret("content", cases[i].content, cases[i].len, 0600);
        th_err r = load_secret_env("TELEHOOK_AUTH_HEADER_SECRET_FILE", path, &c, err, sizeof err);
        if (!cases[i].want) {
            if (r != TH_E_OK)
                fail_msg("case %zu refused: %s", i, err);
            assert_string_equal(c.auth_header_secret, "0123456789abcdef");
            th_config_release(&c);
        } else if (r != TH_E_CONFIG || !strstr(err, cases[i].want) || !strstr(err, path) ||
                   strstr(err, "0123456789")) {
            fail_msg("case %zu: want '%s', got %d '%s'", i, cases[i].want, (int)r, err);
        }
    }
    /* the largest file taken: 4096 bytes and a CRLF; one byte more is refused */
    static char big[4100];
    memset(big, 'k', sizeof big);
    memcpy(big + 4096, "\r\n", 2);
    const char *path = write_secret("big", big, 4098, 0600);
    assert_int_equal(load_secret_env("TELEHOOK_DLQ_KEY_FILE", path, &c, err, sizeof err), TH_E_OK);
    assert_int_equal(strlen(c.dlq_key), 4096);
    th_config_release(&c);
    big[4096] = 'k';
    memcpy(big + 4097, "\r\n", 2);
    path = write_secret("big", big, 4099, 0600);
    assert_int_equal(load_secret_env("TELEHOOK_DLQ_KEY_FILE", path, &c, err, sizeof err),
                     TH_E_CONFIG);
    assert_non_null(strstr(err, "longer than 4096"));
    /* 4096 bytes, a CRLF, then more: not cut to the first 4098 bytes and taken */
    memcpy(big + 4096, "\r\nk", 3);
    path = write_secret("big", big, 4099, 0600);
    assert_int_equal(load_secret_env("TELEHOOK_DLQ_KEY_FILE", path, &c, err, sizeof err),
                     TH_E_CONFIG);
}

/* The same rules for a secret given directly (environment or file), "" meaning "not set". */
static void test_secret_value_content(void **state)
{
    (void)state;
    char *const *nl = ENV("TELEHOOK_AUTH_HEADER_SECRET=0123456789abcdef\n");
    load_fails(NULL, nl, "TELEHOOK_AUTH_HEADER_SECRET: [auth] header_secret:", "ends in a newline");
    char *const *ctl = ENV("TELEHOOK_TWILIO_AUTH_TOKEN=abc\x01"
                           "def");
    load_fails(NULL, ctl, "[twilio] auth_token", "control character");
    char *const *sp = ENV("TELEHOOK_WEBHOOK_SECRET=0123456789abcdef ");
    load_fails(NULL, sp, "[webhook] secret", "space");
    char *const *empty = ENV("TELEHOOK_AUTH_HEADER_SECRET=");
    struct th_config c;
    char err[512];
    assert_int_equal(th_config_load(&c, NULL, empty, err, sizeof err), TH_E_OK);
    th_config_release(&c);
}

/* The header secret is at least 16 bytes (the whole value, "Basic " included). */
static void test_header_secret_min_length(void **state)
{
    (void)state;
    struct {
        const char *env;
        th_err want;
    } cases[] = {
        {"TELEHOOK_AUTH_HEADER_SECRET=x", TH_E_CONFIG},
        {"TELEHOOK_AUTH_HEADER_SECRET=0123456789abcde", TH_E_CONFIG},
        {"TELEHOOK_AUTH_HEADER_SECRET=Basic YTpi", TH_E_CONFIG},
        {"TELEHOOK_AUTH_HEADER_SECRET=0123456789abcdef", TH_E_OK},
        {"TELEHOOK_AUTH_HEADER_SECRET=Basic YWRtaW46c2VjcmV0", TH_E_OK},
    };
    for (size_t i = 0; i < sizeof cases / sizeof *cases; i++) {
        for (int mode = 0; mode < 2; mode++) {
            char *const *env = ENV(cases[i].env, mode ? "TELEHOOK_AUTH_MODE=either" : "X=1",
                                   "TELEHOOK_AUTH_ISSUER=https://example.okta.com/oauth2/default");
            struct th_config c;
            char err[512];
            assert_int_equal(th_config_load(&c, NULL, env, err, sizeof err), TH_E_OK);
            th_err r = th_config_check_serve(&c, err, sizeof err);
            if (r != cases[i].want ||
                (r != TH_E_OK && (!strstr(err, "[auth] header_secret: shorter than 16 bytes") ||
                                  strstr(err, strchr(cases[i].env, '=') + 1))))
                fail_msg("%s (mode %s): %d '%s'", cases[i].env, mode ? "either" : "header", (int)r,
                         err);
            th_config_release(&c);
        }
    }
    /* mode = oauth2 and none need no header secret */
    char *const *oauth = ENV("TELEHOOK_AUTH_MODE=oauth2", "TELEHOOK_AUTH_HEADER_SECRET=x",
                             "TELEHOOK_AUTH_ISSUER=https://example.okta.com/oauth2/default");
    struct th_config c;
    char err[512];
    assert_int_equal(th_config_load(&c, NULL, oauth, err, sizeof err), TH_E_OK);
    assert_int_equal(th_config_check_serve(&c, err, sizeof err), TH_E_OK);
    th_config_release(&c);
}

static void test_long_line_refused(void **state)
{
    (void)state;
    char conf[600] = "[auth]\nheader_secret = ";
    size_t n = strlen(conf);
    memset(conf + n, 'x', 300);
    strcpy(conf + n + 300, "\n");
    load_fails(conf, no_env, "bad.conf:2", "line longer than");
}

static void test_none_mode_loopback_only(void **state)
{
    (void)state;
    struct th_config c;
    char err[512];
    const char *path =
        write_file("none.conf", "[server]\nlisten = 0.0.0.0:8080\n[auth]\nmode = none\n");
    assert_int_equal(th_config_load(&c, path, no_env, err, sizeof err), TH_E_OK);
    assert_int_equal(th_config_check_serve(&c, err, sizeof err), TH_E_CONFIG);
    assert_non_null(strstr(err, "loopback"));
    th_config_release(&c);
    path = write_file("none2.conf", "[server]\nlisten = [::1]:0\n[auth]\nmode = none\n");
    assert_int_equal(th_config_load(&c, path, no_env, err, sizeof err), TH_E_OK);
    assert_int_equal(th_config_check_serve(&c, err, sizeof err), TH_E_OK);
    th_config_release(&c);
}

/* server.tls_cert and tls_key: both or neither (the files themselves: tests/unit/test_tls.c). */
static void test_tls_pair_together(void **state)
{
    (void)state;
    struct th_config c;
    char err[512];
    const char *path = write_file("tls1.conf", "[server]\ntls_cert = /x/fullchain.pem\n"
                                               "[auth]\nmode = none\n");
    assert_int_equal(th_config_load(&c, path, no_env, err, sizeof err), TH_E_OK);
    assert_int_equal(th_config_check_serve(&c, err, sizeof err), TH_E_CONFIG);
    assert_non_null(strstr(err, "tls_cert and tls_key go together"));
    th_config_release(&c);
    path = write_file("tls2.conf", "[server]\ntls_key = /x/privkey.pem\n[auth]\nmode = none\n");
    assert_int_equal(th_config_load(&c, path, no_env, err, sizeof err), TH_E_OK);
    assert_int_equal(th_config_check_serve(&c, err, sizeof err), TH_E_CONFIG);
    th_config_release(&c);
    path = write_file("tls3.conf", "[server]\ntls_cert = /x/fullchain.pem\ntls_key = "
                                   "/x/privkey.pem\n[auth]\nmode = none\n");
    assert_int_equal(th_config_load(&c, path, no_env, err, sizeof err), TH_E_OK);
    assert_string_equal(c.tls_cert, "/x/fullchain.pem");
    assert_string_equal(c.tls_key, "/x/privkey.pem");
    assert_int_equal(th_config_check_serve(&c, err, sizeof err), TH_E_OK);
    th_config_release(&c);
}

static void test_url_https_or_loopback(void **state)
{
    (void)state;
    static const struct {
        const char *url;
        bool ok;
    } cases[] = {
        {"https://example.okta.com/oauth2/default", true},
        {"HTTPS://example.okta.com/oauth2/default", true}, /* schemes are case-insensitive */
        {"https://127.0.0.1.evil.com/keys", true},         /* https: any host */
        {"http://example.okta.com/oauth2/default", false},
        {"HTTP://example.okta.com/keys", false},
        {"Http://example.okta.com/keys", false},
        {"http://127.0.0.1:8080/oauth2/default", true},
        {"HTTP://127.0.0.1/keys", true},
        {"http://127.9.8.7/keys", true},
        {"http://localhost:9000/keys", true},
        {"http://LOCALHOST/keys", true},
        {"http://[::1]:8443/keys", true},
        {"http://[::1]/keys", true},
        {"http://127.0.0.1.evil.com/keys", false}, /* look-alikes */
        {"http://localhost.evil.com/keys", false},
        {"http://localhost.evil.com:80/keys", false},
        {"http://evil.com/127.0.0.1/keys", false},
        {"http://evil.com?127.0.0.1", false},
        {"http://evil.com#@127.0.0.1", false},
        {"http://127.0.0.1@evil.com/keys", false}, /* userinfo: the host is evil.com */
        {"http://localhost:80@evil.com/keys", false},
        {"http://[::1]@evil.com/keys", false},
        {"http://128.0.0.1/keys", false},
        {"http://[::2]/keys", false},
        {"http://[::ffff:10.0.0.1]/keys", false},
        {"http://0.0.0.0/keys", false},
        {"ftp://127.0.0.1/keys", false}, /* other schemes */
        {"file:///etc/keys.json", false},
        {"gopher://localhost/", false},
        {"//example.okta.com/keys", false},
        {"example.okta.com/keys", false}, /* no scheme */
        {"https://", false},
        {"http://", false},
        {"", false},
        {"https//example.okta.com", false},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++)
        if (th_url_https_or_loopback(cases[i].url) != cases[i].ok)
            fail_msg("%s: want %s", cases[i].url, cases[i].ok ? "accepted" : "refused");
}

/* Where the issuer's keys come from must be https (loopback excepted), for serve and check. */
static void test_key_urls_https(void **state)
{
    (void)state;
    static const struct {
        const char *conf, *want; /* want: NULL = valid, else a part of the error */
    } cases[] = {
        {"issuer = https://example.okta.com/oauth2/default\n", NULL},
        {"issuer = http://example.okta.com/oauth2/default\n", "[auth] issuer"},
        {"issuer = HTTP://example.okta.com/oauth2/default\n", "[auth] issuer"},
        {"issuer = http://127.0.0.1@example.okta.com/oauth2/default\n", "[auth] issuer"},
        {"issuer = http://127.0.0.1:9000/oauth2/default\n", NULL},
        {"issuer = http://[::1]:9000/oauth2/default\n", NULL},
        {"issuer = http://localhost/oauth2/default\n", NULL},
        {"issuer = example.okta.com\n", "[auth] issuer"},
        {"issuer = https://example.okta.com/oauth2/default\n"
         "jwks_url = http://example.okta.com/oauth2/default/v1/keys\n",
         "[auth] jwks_url"},
        {"issuer = https://example.okta.com/oauth2/default\n"
         "jwks_url = http://localhost.evil.com/keys\n",
         "[auth] jwks_url"},
        {"issuer = https://example.okta.com/oauth2/default\n"
         "jwks_url = https://keys.example.com/keys\n",
         NULL},
        {"issuer = https://example.okta.com/oauth2/default\n"
         "jwks_url = http://127.0.0.1:9000/keys\n",
         NULL},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++)
        for (int mode = 0; mode < 2; mode++) {
            char conf[512];
            snprintf(conf, sizeof conf,
                     "[auth]\nmode = %s\nheader_secret = x-long-enough-secret\n%s",
                     mode ? "either" : "oauth2", cases[i].conf);
            struct th_config c;
            char err[512];
            assert_int_equal(
                th_config_load(&c, write_file("keys.conf", conf), no_env, err, sizeof err),
                TH_E_OK);
            th_err e = th_config_check_serve(&c, err, sizeof err);
            if (!cases[i].want && e != TH_E_OK)
                fail_msg("%s: refused: %s", cases[i].conf, err);
            if (cases[i].want && (e != TH_E_CONFIG || !strstr(err, cases[i].want)))
                fail_msg("%s: want an error about %s, got: %s", cases[i].conf, cases[i].want,
                         e == TH_E_OK ? "accepted" : err);
            th_config_release(&c);
        }
    /* in header mode the oauth2 keys are not used: not checked */
    struct th_config c;
    char err[512];
    const char *path = write_file(
        "hdr.conf",
        "[auth]\nmode = header\nheader_secret = x-long-enough-secret\nissuer = http://evil.com/\n");
    assert_int_equal(th_config_load(&c, path, no_env, err, sizeof err), TH_E_OK);
    assert_int_equal(th_config_check_serve(&c, err, sizeof err), TH_E_OK);
    th_config_release(&c);
}

/* Outbound trust is checked with the server's needs: CA files and directory, the webhook URL. */
static void test_outbound_checks(void **state)
{
    (void)state;
    struct th_config c;
    char err[512];
    static const struct {
        const char *conf, *want;
    } cases[] = {
        {"[tls]\nca_file = /nonexistent/ca.pem\n", "[tls] ca_file: '/nonexistent/ca.pem': No such"},
        {"[tls]\nca_path = /nonexistent\n", "[tls] ca_path: '/nonexistent': No such"},
        {"[aws]\nca_file = /\n", "[aws] ca_file: '/' is not a regular file"},
        {"[twilio]\nca_file = /dev/null\n", "[twilio] ca_file: '/dev/null' is not a regular"},
        {"[webhook]\nca_file = /nonexistent\n", "[webhook] ca_file: '/nonexistent': No such"},
        {"[webhook]\nurl = http://example.com/hook\n",
         "[webhook] url: plain http:// is allowed only to a loopback host"},
        {"[webhook]\nurl = http://127.0.0.1@example.com/\n", "not to example.com"},
        {"[webhook]\nurl = gateway.example.com\n", "[webhook] url: not an http(s) URL"},
        {"[twilio]\nbase_url = http://api.twilio.com\n",
         "[twilio] base_url: plain http:// is allowed only to a loopback host"},
        {"[aws]\nendpoint = http://sms-voice.us-east-1.amazonaws.com\n",
         "[aws] endpoint: plain http:// is allowed only to a loopback host"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof *cases; i++) {
        char conf[256];
        snprintf(conf, sizeof conf, "[auth]\nheader_secret = x-long-enough-secret\n%s",
                 cases[i].conf);
        assert_int_equal(th_config_load(&c, write_file("out.conf", conf), no_env, err, sizeof err),
                         TH_E_OK);
        assert_int_equal(th_config_check_serve(&c, err, sizeof err), TH_E_CONFIG);
        if (!strstr(err, cases[i].want))
            fail_msg("%s: got '%s'", cases[i].conf, err);
        th_config_release(&c);
    }
    const char *ca = write_file("ca.pem", "not a certificate\n");
    char conf[512];
    snprintf(conf, sizeof conf,
             "[auth]\nheader_secret = x-long-enough-secret\n[tls]\nca_file = %s\n", ca);
    assert_int_equal(th_config_load(&c, write_file("out.conf", conf), no_env, err, sizeof err),
                     TH_E_OK);
    assert_int_equal(th_config_check_serve(&c, err, sizeof err), TH_E_CONFIG);
    assert_non_null(strstr(err, "holds no PEM certificate"));
    th_config_release(&c);
    /* accepted: https anywhere, http to loopback, a readable directory */
    snprintf(conf, sizeof conf,
             "[auth]\nheader_secret = x-long-enough-secret\n[tls]\nca_path = %s\n"
             "[webhook]\nurl = https://gateway.example.com/send\n",
             dir);
    assert_int_equal(th_config_load(&c, write_file("out.conf", conf), no_env, err, sizeof err),
                     TH_E_OK);
    assert_int_equal(th_config_check_serve(&c, err, sizeof err), TH_E_OK);
    th_config_release(&c);
    char *const *env = ENV("TELEHOOK_AUTH_HEADER_SECRET=x-long-enough-secret",
                           "TELEHOOK_WEBHOOK_URL=http://[::1]:9000/hook");
    assert_int_equal(th_config_load(&c, NULL, env, err, sizeof err), TH_E_OK);
    assert_int_equal(th_config_check_serve(&c, err, sizeof err), TH_E_OK);
    th_config_release(&c);
}

static void test_print_masks_secret(void **state)
{
    (void)state;
    char *const *env = ENV("TELEHOOK_AUTH_HEADER_SECRET=very-secret-value");
    struct th_config c;
    char err[512];
    assert_int_equal(th_config_load(&c, NULL, env, err, sizeof err), TH_E_OK);
    char *out = NULL;
    size_t len = 0;
    FILE *f = open_memstream(&out, &len);
    th_config_print(&c, f);
    fclose(f);
    assert_null(strstr(out, "very-secret-value"));
    assert_non_null(strstr(out, "header_secret = ********"));
    assert_non_null(strstr(out, "[server]\nlisten = 127.0.0.1:8080\n"));
    assert_non_null(strstr(out, "mode = header"));
    free(out);
    th_config_release(&c);
}

/* A password in either PostgreSQL URL (the store's, the guard's) is never printed. */
static void test_print_masks_url_passwords(void **state)
{
    (void)state;
    char *const *env = ENV("TELEHOOK_STORE_URL=postgresql://th:store-pw-1@db1/th",
                           "TELEHOOK_GUARD_URL=postgresql://th:guard-pw-2@db2/th");
    struct th_config c;
    char err[512];
    assert_int_equal(th_config_load(&c, NULL, env, err, sizeof err), TH_E_OK);
    char *out = NULL;
    size_t len = 0;
    FILE *f = open_memstream(&out, &len);
    th_config_print(&c, f);
    fclose(f);
    assert_null(strstr(out, "store-pw-1"));
    assert_null(strstr(out, "guard-pw-2"));
    assert_non_null(strstr(out, "postgresql://th:********@db2/th"));
    free(out);
    th_config_release(&c);
}

/* th_config_each_value: what th_config_print prints, line for line, with each value's kind. */
struct printed {
    FILE *f;
    const char *section;
    int kinds[128];
    int calls;
};

static void print_value(void *ud, const char *section, const char *key, char kind,
                        const char *value)
{
    struct printed *p = ud;
    if (!p->section || strcmp(p->section, section) != 0) {
        fprintf(p->f, "%s[%s]\n", p->section ? "\n" : "", section);
        p->section = section;
    }
    fprintf(p->f, "%s = %s\n", key, value);
    p->kinds[(unsigned char)kind & 127]++;
    p->calls++;
}

static void test_each_value_as_printed(void **state)
{
    (void)state;
    char *const *env = ENV("TELEHOOK_AUTH_HEADER_SECRET=very-secret-value");
    struct th_config c;
    char err[512];
    assert_int_equal(th_config_load(&c, NULL, env, err, sizeof err), TH_E_OK);
    char *a = NULL, *b = NULL;
    size_t alen = 0, blen = 0;
    FILE *f = open_memstream(&a, &alen);
    th_config_print(&c, f);
    fclose(f);
    struct printed p = {.f = open_memstream(&b, &blen)};
    th_config_each_value(&c, print_value, &p);
    fclose(p.f);
    assert_string_equal(a, b);
    assert_null(strstr(b, "very-secret-value"));
    assert_true(p.kinds['i'] > 0 && p.kinds['b'] > 0 && p.kinds['s'] > 0);
    assert_int_equal(p.kinds['i'] + p.kinds['b'] + p.kinds['s'], p.calls); /* no other kind */
    free(a);
    free(b);
    th_config_release(&c);
}

/* The example config and the docs list exactly the keys of the table. */
struct seen {
    const char *text;
    const char *what;
    int count;
};

static void check_key(void *ud, const char *section, const char *key, const char *def, bool secret,
                      const char *help)
{
    struct seen *s = ud;
    (void)def;
    (void)secret;
    (void)help;
    char sect[64], line1[96], line2[96];
    snprintf(sect, sizeof sect, "[%s]", section);
    snprintf(line1, sizeof line1, "\n%s =", key);
    snprintf(line2, sizeof line2, "\n# %s", key);
    const char *at = strstr(s->text, sect);
    if (!at || (!strstr(at, line1) && !strstr(at, line2)))
        fail_msg("%s lacks %s %s", s->what, sect, key);
    s->count++;
}

static char *slurp(const char *rel)
{
    const char *root = getenv("TH_TEST_SRCDIR");
    char path[512];
    snprintf(path, sizeof path, "%s/%s", root ? root : ".", rel);
    FILE *f = fopen(path, "r");
    if (!f)
        fail_msg("cannot open %s", path);
    static char buf[1 << 16];
    size_t n = fread(buf, 1, sizeof buf - 1, f);
    buf[n] = '\0';
    fclose(f);
    return buf;
}

static void test_example_matches_table(void **state)
{
    (void)state;
    struct seen s = {slurp("etc/telehook.conf"), "etc/telehook.conf", 0};
    th_config_each_key(check_key, &s);
    assert_true(s.count >= 17);
    /* and the example loads cleanly and passes the server's checks from a directory where
     * `make run` has made var/dev-secret, which it names */
    const char *root = getenv("TH_TEST_SRCDIR");
    char path[600], cwd[512], var[300];
    assert_non_null(getcwd(cwd, sizeof cwd));
    /* meson gives the source root as an absolute path; run by hand, from the source root */
    snprintf(path, sizeof path, "%s/etc/telehook.conf", root ? root : cwd);
    snprintf(var, sizeof var, "%s/var", dir);
    mkdir(var, 0700);
    assert_int_equal(
        chmod(write_file("var/dev-secret", "0123456789abcdefghijklmnopqrstuv\n"), 0600), 0);
    assert_int_equal(chdir(dir), 0);
    struct th_config c;
    char err[512];
    th_err e = th_config_load(&c, path, no_env, err, sizeof err);
    assert_int_equal(chdir(cwd), 0);
    assert_int_equal(e, TH_E_OK);
    assert_int_equal(th_config_check_serve(&c, err, sizeof err), TH_E_OK);
    th_config_release(&c);
}

static void doc_key(void *ud, const char *section, const char *key, const char *def, bool secret,
                    const char *help)
{
    struct seen *s = ud;
    (void)def;
    (void)secret;
    (void)help;
    char want[128];
    snprintf(want, sizeof want, "`%s.%s`", section, key);
    if (!strstr(s->text, want))
        fail_msg("docs/configuration.md lacks %s", want);
}

static void test_docs_list_every_key(void **state)
{
    (void)state;
    struct seen s = {slurp("docs/configuration.md"), "docs", 0};
    th_config_each_key(doc_key, &s);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_defaults),
        cmocka_unit_test(test_file_and_env),
        cmocka_unit_test(test_env_secret_file),
        cmocka_unit_test(test_errors_name_the_key),
        cmocka_unit_test(test_secret_file_modes),
        cmocka_unit_test(test_secret_file_kinds),
        cmocka_unit_test(test_secret_file_content),
        cmocka_unit_test(test_secret_value_content),
        cmocka_unit_test(test_header_secret_min_length),
        cmocka_unit_test(test_long_line_refused),
        cmocka_unit_test(test_inline_comments),
        cmocka_unit_test(test_none_mode_loopback_only),
        cmocka_unit_test(test_tls_pair_together),
        cmocka_unit_test(test_outbound_checks),
        cmocka_unit_test(test_print_masks_secret),
        cmocka_unit_test(test_print_masks_url_passwords),
        cmocka_unit_test(test_each_value_as_printed),
        cmocka_unit_test(test_example_matches_table),
        cmocka_unit_test(test_docs_list_every_key),
        cmocka_unit_test(test_url_https_or_loopback),
        cmocka_unit_test(test_key_urls_https),
    };
    return cmocka_run_group_tests(tests, tmpdir_setup, tmpdir_teardown);
}
