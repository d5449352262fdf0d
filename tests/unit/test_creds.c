/*
 * Unit tests: aws/creds (the credentials chain: shared files, profiles, role chains, the choice of
 * source) and aws/process (credential_process: the runner and its JSON). The STS calls
 * themselves are covered end to end (tests/e2e/test_aws_creds.py); here a chain that needs STS
 * points at a closed port and only its plan (th_aws_creds_source) is checked.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <fcntl.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "aws/creds.h"
#include "aws/process.h"
#include "common/buf.h"
#include "obs/log.h"
#include "tmpdir.h"

static const char *const aws_vars[] = {
    "AWS_ACCESS_KEY_ID",
    "AWS_SECRET_ACCESS_KEY",
    "AWS_SESSION_TOKEN",
    "AWS_SECURITY_TOKEN",
    "AWS_PROFILE",
    "AWS_REGION",
    "AWS_DEFAULT_REGION",
    "AWS_WEB_IDENTITY_TOKEN_FILE",
    "AWS_ROLE_ARN",
    "AWS_ROLE_SESSION_NAME",
    "AWS_CONTAINER_CREDENTIALS_RELATIVE_URI",
    "AWS_CONTAINER_CREDENTIALS_FULL_URI",
    "AWS_STS_REGIONAL_ENDPOINTS",
    "AWS_ENDPOINT_URL",
};

static char cfg_path[256], cred_path[256];

static void write_file(const char *path, const char *text)
{
    FILE *f = fopen(path, "w");
    assert_non_null(f);
    fputs(text, f);
    fclose(f);
}

/* A clean AWS environment around the two files (written fresh by each test). */
static int setup(void **state)
{
    (void)state;
    for (size_t i = 0; i < sizeof aws_vars / sizeof *aws_vars; i++)
        unsetenv(aws_vars[i]);
    snprintf(cfg_path, sizeof cfg_path, "%s/config", tmpdir);
    snprintf(cred_path, sizeof cred_path, "%s/credentials", tmpdir);
    write_file(cfg_path, "");
    write_file(cred_path, "");
    setenv("AWS_CONFIG_FILE", cfg_path, 1);
    setenv("AWS_SHARED_CREDENTIALS_FILE", cred_path, 1);
    setenv("HOME", tmpdir, 1);
    setenv("AWS_EC2_METADATA_DISABLED", "true", 1);
    setenv("AWS_ENDPOINT_URL_STS", "http://127.0.0.1:1", 1); /* refused at once */
    return 0;
}

/* th_aws_creds_new; on success the source description into desc and the object freed. */
static th_err plan(const char *profile, char *desc, size_t desclen, char *err, size_t errlen)
{
    struct th_aws_creds *c = NULL;
    err[0] = '\0';
    th_err e = th_aws_creds_new(profile, "eu-west-1", NULL, &c, err, errlen);
    if (e == TH_E_OK) {
        snprintf(desc, desclen, "%s", th_aws_creds_source(c));
        th_aws_creds_free(c);
    }
    return e;
}

static void assert_plan(const char *profile, const char *want)
{
    char desc[1024], err[512];
    th_err e = plan(profile, desc, sizeof desc, err, sizeof err);
    if (e != TH_E_OK)
        fail_msg("profile '%s': %s", profile, err);
    assert_string_equal(desc, want);
}

static void assert_refused(const char *profile, const char *want)
{
    char desc[1024], err[512];
    th_err e = plan(profile, desc, sizeof desc, err, sizeof err);
    if (e != TH_E_CONFIG)
        fail_msg("profile '%s' accepted: %s", profile, desc);
    if (!strstr(err, want))
        fail_msg("'%s' does not say '%s'", err, want);
}

/* ---- shared files ---- */

static void test_long_values_and_file_dialect(void **state)
{
    (void)state;
    char token[2001];
    memset(token, 'T', sizeof token - 1);
    token[sizeof token - 1] = '\0';
    char text[4096];
    snprintf(text, sizeof text,
             "# comment\n; comment\n[ops]\naws_access_key_id = AKIAOPS\n"
             "aws_secret_access_key = sec ; not a comment\n"
             "aws_session_token = %s\r\n"
             "[other]\naws_access_key_id = AKIAOTHER\naws_secret_access_key = x\n",
             token);
    write_file(cred_path, text);
    write_file(cfg_path, "[profile   ops]\nregion = eu-central-1\ns3 =\n"
                         "  aws_access_key_id = NESTED-NOT-A-KEY\n"
                         "[ops]\nregion = not-this-one\n");
    setenv("AWS_PROFILE", "ops", 1);
    struct th_aws_creds *c = NULL;
    char err[256];
    assert_int_equal(th_aws_creds_new("", "", NULL, &c, err, sizeof err), TH_E_OK);
    struct th_aws_credentials v;
    assert_true(th_aws_creds_get(c, &v));
    assert_string_equal(v.access_key_id, "AKIAOPS");
    assert_string_equal(v.secret_access_key, "sec ; not a comment"); /* values taken whole */
    assert_string_equal(v.session_token, token); /* longer than inih's 200-byte line */
    assert_string_equal(th_aws_creds_source(c), "shared-files (profile 'ops')");
    th_aws_creds_free(c);
    char region[32];
    assert_true(th_aws_resolve_region("", "", region, sizeof region));
    assert_string_equal(region, "eu-central-1"); /* "[profile   ops]" of the config file */
}

static void test_config_file_keys_and_default(void **state)
{
    (void)state;
    write_file(cfg_path, "[profile default]\nregion = ap-south-1\n"
                         "[profile cfg]\naws_access_key_id = AKIACFG\naws_secret_access_key = s\n"
                         "[cfg]\naws_access_key_id = AKIAWRONG\naws_secret_access_key = s\n");
    write_file(cred_path, "[cfg]\naws_secret_access_key = from-credentials-file\n");
    struct th_aws_creds *c = NULL;
    char err[256];
    assert_int_equal(th_aws_creds_new("cfg", "", NULL, &c, err, sizeof err), TH_E_OK);
    struct th_aws_credentials v;
    assert_true(th_aws_creds_get(c, &v));
    assert_string_equal(v.access_key_id, "AKIACFG"); /* [cfg] of the config file is not it */
    assert_string_equal(v.secret_access_key, "from-credentials-file"); /* credentials file wins */
    th_aws_creds_free(c);
    char region[32];
    assert_true(th_aws_resolve_region(NULL, NULL, region, sizeof region));
    assert_string_equal(region, "ap-south-1");
}

static void test_missing_profile(void **state)
{
    (void)state;
    char err[512], want[600];
    write_file(cfg_path, "[profile real]\nregion = eu-west-1\n");
    snprintf(want, sizeof want, "AWS profile 'nope' not found in %s or %s", cfg_path, cred_path);
    assert_int_equal(th_aws_profile_check("nope", err, sizeof err), TH_E_CONFIG);
    assert_string_equal(err, want);
    setenv("AWS_PROFILE", "nope", 1);
    assert_int_equal(th_aws_profile_check("", err, sizeof err), TH_E_CONFIG);
    assert_refused("", want);
    /* ... even when the environment has keys: a named profile must exist (as the CLI says) */
    setenv("AWS_ACCESS_KEY_ID", "AKIAENV", 1);
    setenv("AWS_SECRET_ACCESS_KEY", "envsecret", 1);
    assert_refused("", want);
    assert_int_equal(th_aws_profile_check("real", err, sizeof err), TH_E_OK);
    unsetenv("AWS_PROFILE");
    assert_int_equal(th_aws_profile_check("", err, sizeof err), TH_E_OK); /* implicit default */
    assert_plan("", "environment");
}

/* ---- the order of sources ---- */

static void test_order(void **state)
{
    (void)state;
    write_file(cfg_path, "[profile app]\nrole_arn = arn:aws:iam::123456789012:role/app\n"
                         "credential_source = Environment\n");
    write_file(cred_path, "[default]\naws_access_key_id = AKIADEF\naws_secret_access_key = d\n");
    setenv("AWS_ACCESS_KEY_ID", "AKIAENV", 1);
    setenv("AWS_SECRET_ACCESS_KEY", "envsecret", 1);
    setenv("AWS_WEB_IDENTITY_TOKEN_FILE", "/var/run/secrets/eks/token", 1);
    setenv("AWS_ROLE_ARN", "arn:aws:iam::123456789012:role/irsa", 1);
    setenv("AWS_PROFILE", "app", 1);
    assert_plan("", "environment"); /* 1. environment keys, even with AWS_PROFILE */
    unsetenv("AWS_ACCESS_KEY_ID");
    assert_plan("", "web-identity arn:aws:iam::123456789012:role/irsa "
                    "(AWS_WEB_IDENTITY_TOKEN_FILE)"); /* 2. web identity variables */
    unsetenv("AWS_WEB_IDENTITY_TOKEN_FILE");
    unsetenv("AWS_PROFILE");
    assert_plan("", "shared-files (profile 'default')"); /* 3. the profile */
    write_file(cred_path, "");
    setenv("AWS_CONTAINER_CREDENTIALS_RELATIVE_URI", "/v2/credentials/x", 1);
    assert_plan("", "container"); /* 4. container */
    unsetenv("AWS_CONTAINER_CREDENTIALS_RELATIVE_URI");
    setenv("AWS_EC2_METADATA_DISABLED", "false", 1);
    setenv("AWS_EC2_METADATA_SERVICE_ENDPOINT", "http://127.0.0.1:1", 1);
    assert_plan("", "imds"); /* 5. instance metadata */
    setenv("AWS_EC2_METADATA_DISABLED", "true", 1);
    assert_refused("", "no AWS credentials");
    /* a profile named in telehook's config skips the environment keys and web identity */
    setenv("AWS_ACCESS_KEY_ID", "AKIAENV", 1);
    setenv("AWS_WEB_IDENTITY_TOKEN_FILE", "/var/run/secrets/eks/token", 1);
    assert_plan("app", "assume-role arn:aws:iam::123456789012:role/app from environment");
    unsetenv("AWS_ROLE_ARN");
    unsetenv("AWS_ACCESS_KEY_ID");
    assert_refused("", "AWS_WEB_IDENTITY_TOKEN_FILE: a web identity token file but no role ARN");
}

/* ---- profiles with roles ---- */

static void test_role_chains(void **state)
{
    (void)state;
    write_file(cfg_path,
               "[profile app]\nrole_arn = arn:aws:iam::1:role/app\nsource_profile = hop\n"
               "[profile hop]\nrole_arn = arn:aws:iam::1:role/hop\nsource_profile = base\n"
               "[profile self]\nrole_arn = arn:aws:iam::1:role/self\nsource_profile = self\n"
               "aws_access_key_id = AKIASELF\naws_secret_access_key = s\n"
               /* a source profile's static keys win over its own role */
               "[profile keyed]\nrole_arn = arn:aws:iam::1:role/keyed\nsource_profile = base\n"
               "aws_access_key_id = AKIAKEYED\naws_secret_access_key = s\n"
               "[profile viakeyed]\nrole_arn = arn:aws:iam::1:role/top\nsource_profile = keyed\n"
               "[profile wi]\nrole_arn = arn:aws:iam::1:role/wi\n"
               "web_identity_token_file = /t\nrole_session_name = pod\n"
               "[profile overwi]\nrole_arn = arn:aws:iam::1:role/over\nsource_profile = wi\n"
               "[profile proc]\ncredential_process = /bin/helper --json; echo\n"
               "[profile overproc]\nrole_arn = arn:aws:iam::1:role/p\nsource_profile = proc\n"
               "external_id = ext-1\nduration_seconds = 3600\n"
               "[profile ecs]\nrole_arn = arn:aws:iam::1:role/ecs\n"
               "credential_source = EcsContainer\n");
    write_file(cred_path, "[base]\naws_access_key_id = AKIABASE\naws_secret_access_key = b\n");
    assert_plan("app", "assume-role arn:aws:iam::1:role/app from assume-role "
                       "arn:aws:iam::1:role/hop from shared-files (profile 'base')");
    assert_plan("self", "assume-role arn:aws:iam::1:role/self from shared-files (profile 'self')");
    assert_plan("viakeyed",
                "assume-role arn:aws:iam::1:role/top from shared-files (profile 'keyed')");
    assert_plan("keyed", "assume-role arn:aws:iam::1:role/keyed from shared-files "
                         "(profile 'base')"); /* the top profile assumes its role */
    assert_plan("wi", "web-identity arn:aws:iam::1:role/wi (profile 'wi')");
    assert_plan("overwi",
                "assume-role arn:aws:iam::1:role/over from web-identity arn:aws:iam::1:role/wi "
                "(profile 'wi')");
    assert_plan("proc", "credential-process (profile 'proc')");
    assert_plan("overproc",
                "assume-role arn:aws:iam::1:role/p from credential-process (profile 'proc')");
    assert_refused("ecs", "credential_source EcsContainer, but neither");
    setenv("AWS_CONTAINER_CREDENTIALS_RELATIVE_URI", "/v2/x", 1);
    assert_plan("ecs", "assume-role arn:aws:iam::1:role/ecs from container");
}

static void test_role_mistakes(void **state)
{
    (void)state;
    char text[8192] = "";
    /* a chain of 9 roles: one too many */
    for (int i = 0; i < 9; i++) {
        char p[200];
        snprintf(p, sizeof p,
                 "[profile r%d]\nrole_arn = arn:aws:iam::1:role/r%d\n"
                 "source_profile = r%d\n",
                 i, i, i + 1);
        strcat(text, p);
    }
    strcat(text, "[profile r9]\naws_access_key_id = A\naws_secret_access_key = B\n"
                 "[profile a]\nrole_arn = arn:aws:iam::1:role/a\nsource_profile = b\n"
                 "[profile b]\nrole_arn = arn:aws:iam::1:role/b\nsource_profile = c\n"
                 "[profile c]\nrole_arn = arn:aws:iam::1:role/c\nsource_profile = a\n"
                 "[profile both]\nrole_arn = arn:aws:iam::1:role/x\nsource_profile = r9\n"
                 "credential_source = Environment\n"
                 "[profile notarn]\nrole_arn = role/x\nsource_profile = r9\n"
                 "[profile ext]\nrole_arn = arn:aws:iam::1:role/x\nsource_profile = r9\n"
                 "external_id = x\n"
                 "[profile dur]\nrole_arn = arn:aws:iam::1:role/x\nsource_profile = r9\n"
                 "duration_seconds = 3600s\n"
                 "[profile loopself]\nrole_arn = arn:aws:iam::1:role/x\nsource_profile = "
                 "loopself\n"
                 "[profile sts]\nrole_arn = arn:aws:iam::1:role/x\nsource_profile = r9\n"
                 "sts_regional_endpoints = global\n");
    write_file(cfg_path, text);
    assert_plan("r1", "assume-role arn:aws:iam::1:role/r1 from assume-role arn:aws:iam::1:role/r2"
                      " from assume-role arn:aws:iam::1:role/r3 from assume-role "
                      "arn:aws:iam::1:role/r4 from assume-role arn:aws:iam::1:role/r5 from "
                      "assume-role arn:aws:iam::1:role/r6 from assume-role arn:aws:iam::1:role/r7"
                      " from assume-role arn:aws:iam::1:role/r8 from shared-files (profile 'r9')");
    assert_refused("r0", "role chain longer than 8 roles");
    assert_refused("a", "AWS profile 'c': source_profile loop through 'a'");
    assert_refused("both", "source_profile and credential_source are exclusive");
    assert_refused("notarn", "role_arn is not a role ARN");
    assert_refused("ext", "external_id must be 2-1224 characters");
    assert_refused("dur", "duration_seconds must be 900 to 43200");
    assert_refused("loopself", "is its own source_profile but has no static keys");
    assert_refused("sts", "sts_regional_endpoints must be regional or legacy");
    /* a value longer than its field is refused, not cut */
    char huge[3000] = "[profile long]\nrole_arn = arn:aws:iam::1:role/";
    memset(huge + strlen(huge), 'x', 2100);
    strcat(huge, "\nsource_profile = r9\n");
    write_file(cfg_path, huge);
    assert_refused("long", "AWS profile 'long': the value of role_arn is too long");
    /* STS needs a region */
    write_file(cfg_path, "[profile s]\nrole_arn = arn:aws:iam::1:role/x\nsource_profile = s\n"
                         "aws_access_key_id = A\naws_secret_access_key = B\n");
    struct th_aws_creds *c = NULL;
    char err[256];
    assert_int_equal(th_aws_creds_new("s", "", NULL, &c, err, sizeof err), TH_E_CONFIG);
    assert_non_null(strstr(err, "AWS STS needs a valid region"));
    setenv("AWS_ENDPOINT_URL_STS", "ftp://127.0.0.1/", 1);
    assert_refused("s", "the STS endpoint is not an http(s) URL");
}

/* ---- credential_process ---- */

static bool stop_now(void *ud)
{
    return *(bool *)ud;
}

static int64_t now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static void test_process_run(void **state)
{
    (void)state;
    struct th_buf out;
    char why[256];
    th_buf_init(&out, 1024);
    assert_int_equal(th_aws_process_run("printf '%s' \"a b\"; echo ' c' >&2", 5000, NULL, NULL,
                                        &out, why, sizeof why),
                     TH_E_OK);
    assert_string_equal(th_buf_str(&out), "a b");

    assert_int_equal(th_aws_process_run("echo SECRET-OUT; printf 'first\\nlast line\\t!\\n' >&2; "
                                        "exit 3",
                                        5000, NULL, NULL, &out, why, sizeof why),
                     TH_E_IO);
    assert_string_equal(why, "credential_process exited with status 3: last line?!");
    assert_int_equal(out.len, 0); /* the output of a failed run is dropped */
    assert_int_equal(th_aws_process_run("kill -9 $$", 5000, NULL, NULL, &out, why, sizeof why),
                     TH_E_IO);
    assert_string_equal(why, "credential_process was killed by signal 9");

    /* the timeout ends the whole process group, the shell's children too */
    char marker[300], cmd[600];
    snprintf(marker, sizeof marker, "%s/late", tmpdir);
    snprintf(cmd, sizeof cmd, "(sleep 1; touch '%s') & sleep 10", marker);
    int64_t t0 = now_ms();
    assert_int_equal(th_aws_process_run(cmd, 200, NULL, NULL, &out, why, sizeof why), TH_E_TIMEOUT);
    assert_true(now_ms() - t0 < 1000);
    assert_string_equal(why, "credential_process did not finish within 200 ms");
    usleep(1300 * 1000);
    assert_int_equal(access(marker, F_OK), -1);

    /* output beyond the buffer's cap */
    assert_int_equal(
        th_aws_process_run("head -c 5000 /dev/zero", 5000, NULL, NULL, &out, why, sizeof why),
        TH_E_TOOBIG);
    /* stopped (the server shuts down) */
    bool stop = true;
    assert_int_equal(th_aws_process_run("sleep 10", 5000, stop_now, &stop, &out, why, sizeof why),
                     TH_E_BUSY);
    /* no descriptor of the server reaches the process */
    snprintf(marker, sizeof marker, "%s/server-fd-marker", tmpdir);
    int fd = open(marker, O_CREAT | O_WRONLY, 0600); /* no O_CLOEXEC, on purpose */
    assert_true(fd >= 0);
    th_buf_release(&out);
    th_buf_init(&out, 16384);
    assert_int_equal(
        th_aws_process_run("ls -l /proc/$$/fd", 5000, NULL, NULL, &out, why, sizeof why), TH_E_OK);
    assert_null(strstr(th_buf_str(&out), "server-fd-marker"));
    close(fd);
    assert_int_equal(th_aws_process_run("", 5000, NULL, NULL, &out, why, sizeof why), TH_E_INVAL);
    th_buf_release(&out);
}

static th_err pparse(const char *json, struct th_aws_credentials *v)
{
    char why[256] = "";
    th_err e = th_aws_process_parse(json, strlen(json), v, why, sizeof why);
    if (e != TH_E_OK) {
        assert_true(why[0] != '\0');
        assert_null(strstr(why, "SECRETVALUE")); /* a reason never quotes a value */
    }
    return e;
}

static void test_process_json(void **state)
{
    (void)state;
    struct th_aws_credentials v;
    assert_int_equal(pparse("{\"Version\": 1, \"AccessKeyId\": \"ASIAPROC\", \"SecretAccessKey\":"
                            " \"s/+=\", \"SessionToken\": \"tok\", \"Expiration\": "
                            "\"2030-01-01T00:00:00Z\", \"AccountId\": \"123456789012\"}",
                            &v),
                     TH_E_OK);
    assert_string_equal(v.access_key_id, "ASIAPROC");
    assert_string_equal(v.secret_access_key, "s/+=");
    assert_string_equal(v.session_token, "tok");
    assert_int_equal(v.expires_ms, 1893456000000LL);
    assert_int_equal(pparse("{\"Version\":1,\"AccessKeyId\":\"A\",\"SecretAccessKey\":\"S\","
                            "\"SessionToken\":null}",
                            &v),
                     TH_E_OK);
    assert_int_equal(v.expires_ms, 0); /* no Expiration: does not expire */
    assert_string_equal(v.session_token, "");

    static const char *const bad[] = {
        "",
        "[1]",
        "not json SECRETVALUE",
        "{\"Version\": 2, \"AccessKeyId\": \"A\", \"SecretAccessKey\": \"SECRETVALUE\"}",
        "{\"Version\": \"1\", \"AccessKeyId\": \"A\", \"SecretAccessKey\": \"SECRETVALUE\"}",
        "{\"AccessKeyId\": \"A\", \"SecretAccessKey\": \"SECRETVALUE\"}",
        "{\"Version\": 1, \"AccessKeyId\": \"A\"}",
        "{\"Version\": 1, \"AccessKeyId\": \"\", \"SecretAccessKey\": \"SECRETVALUE\"}",
        "{\"Version\": 1, \"AccessKeyId\": \"A B\", \"SecretAccessKey\": \"SECRETVALUE\"}",
        "{\"Version\": 1, \"AccessKeyId\": \"A\", \"SecretAccessKey\": \"SECRETVALUE\\n\"}",
        "{\"Version\": 1, \"AccessKeyId\": \"A\", \"SecretAccessKey\": \"SECRETVALUE\", "
        "\"SessionToken\": 5}",
        "{\"Version\": 1, \"AccessKeyId\": \"A\", \"SecretAccessKey\": \"SECRETVALUE\", "
        "\"SessionToken\": \"caf\\u00e9\"}",
        "{\"Version\": 1, \"AccessKeyId\": \"A\", \"SecretAccessKey\": \"SECRETVALUE\", "
        "\"Expiration\": \"soon\"}",
        "{\"Version\": 1, \"AccessKeyId\": \"A\", \"SecretAccessKey\": \"SECRETVALUE\", "
        "\"Expiration\": 1893456000}",
        "{\"Version\": 1, \"AccessKeyId\": \"A\", \"AccessKeyId\": \"B\", "
        "\"SecretAccessKey\": \"SECRETVALUE\"}",
    };
    for (size_t i = 0; i < sizeof bad / sizeof *bad; i++)
        if (pparse(bad[i], &v) != TH_E_INVAL)
            fail_msg("accepted case %zu: %s", i, bad[i]);
    char longid[300];
    snprintf(longid, sizeof longid,
             "{\"Version\": 1, \"AccessKeyId\": \"%0200d\", \"SecretAccessKey\": \"S\"}", 7);
    assert_int_equal(pparse(longid, &v), TH_E_INVAL);
}

int main(void)
{
    th_log_init(TH_LOG_ERROR, 2); /* the refresher's warnings (STS refused) stay quiet */
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup(test_long_values_and_file_dialect, setup),
        cmocka_unit_test_setup(test_config_file_keys_and_default, setup),
        cmocka_unit_test_setup(test_missing_profile, setup),
        cmocka_unit_test_setup(test_order, setup),
        cmocka_unit_test_setup(test_role_chains, setup),
        cmocka_unit_test_setup(test_role_mistakes, setup),
        cmocka_unit_test(test_process_run),
        cmocka_unit_test(test_process_json),
    };
    return cmocka_run_group_tests(tests, tmpdir_setup, tmpdir_teardown);
}
