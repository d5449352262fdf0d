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
    const char *secret = write_file("secret", "s3cr3t-from-file\n");
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
    const char *secret = write_file("secret2", "Basic dXNlcjpwYXNz\r\n");
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
    write_file("var/dev-secret", "0123456789abcdefghijklmnopqrstuv\n");
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
        cmocka_unit_test(test_long_line_refused),
        cmocka_unit_test(test_inline_comments),
        cmocka_unit_test(test_none_mode_loopback_only),
        cmocka_unit_test(test_print_masks_secret),
        cmocka_unit_test(test_each_value_as_printed),
        cmocka_unit_test(test_example_matches_table),
        cmocka_unit_test(test_docs_list_every_key),
    };
    return cmocka_run_group_tests(tests, tmpdir_setup, tmpdir_teardown);
}
