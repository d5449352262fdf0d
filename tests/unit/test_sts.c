/*
 * Unit tests: aws/sts (STS Query protocol): the credentials and error answers (the AWS API
 * reference's own examples, entities, every refusal of the strict reader), the endpoint choice
 * and the form bodies.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <stdio.h>
#include <string.h>

#include "aws/sts.h"
#include "common/buf.h"

/* The AssumeRoleWithWebIdentity example of the STS API reference, byte for byte. */
static const char web_identity_doc[] =
    "<AssumeRoleWithWebIdentityResponse xmlns=\"https://sts.amazonaws.com/doc/2011-06-15/\">\n"
    "  <AssumeRoleWithWebIdentityResult>\n"
    "    <SubjectFromWebIdentityToken>amzn1.account.AF6RHO7KZU5XRVQJGXK6HB56KR2A"
    "</SubjectFromWebIdentityToken>\n"
    "    <Audience>client.5498841531868486423.1548@apps.example.com</Audience>\n"
    "    <AssumedRoleUser>\n"
    "      <Arn>arn:aws:sts::123456789012:assumed-role/FederatedWebIdentityRole/app1</Arn>\n"
    "      <AssumedRoleId>AROACLKWSDQRAOEXAMPLE:app1</AssumedRoleId>\n"
    "    </AssumedRoleUser>\n"
    "    <Credentials>\n"
    "      <SessionToken>AQoDYXdzEE0a8ANXXXXXXXXNO1ewxE5TijQyp+IEXAMPLE</SessionToken>\n"
    "      <SecretAccessKey>wJalrXUtnFEMI/K7MDENG/bPxRfiCYzEXAMPLEKEY</SecretAccessKey>\n"
    "      <Expiration>2014-10-24T23:00:23Z</Expiration>\n"
    "      <AccessKeyId>ASgeIAIOSFODNN7EXAMPLE</AccessKeyId>\n"
    "    </Credentials>\n"
    "    <SourceIdentity>SourceIdentityValue</SourceIdentity>\n"
    "    <Provider>www.amazon.com</Provider>\n"
    "  </AssumeRoleWithWebIdentityResult>\n"
    "  <ResponseMetadata>\n"
    "    <RequestId>ad4156e9-bce1-11e2-82e6-6b6efEXAMPLE</RequestId>\n"
    "  </ResponseMetadata>\n"
    "</AssumeRoleWithWebIdentityResponse>\n";

/* The AssumeRole example of the STS API reference (its session token, printed over several
   lines there, on one line as the service sends it), with an XML declaration. */
#define ASSUME_ROLE_DOC(token)                                                                     \
    "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n"                                                 \
    "<AssumeRoleResponse xmlns=\"https://sts.amazonaws.com/doc/2011-06-15/\">\n"                   \
    "  <AssumeRoleResult>\n"                                                                       \
    "  <SourceIdentity>Alice</SourceIdentity>\n"                                                   \
    "    <AssumedRoleUser>\n"                                                                      \
    "      <Arn>arn:aws:sts::123456789012:assumed-role/demo/TestAR</Arn>\n"                        \
    "      <AssumedRoleId>ARO123EXAMPLE123:TestAR</AssumedRoleId>\n"                               \
    "    </AssumedRoleUser>\n"                                                                     \
    "    <Credentials>\n"                                                                          \
    "      <AccessKeyId>ASIAIOSFODNN7EXAMPLE</AccessKeyId>\n"                                      \
    "      <SecretAccessKey>wJalrXUtnFEMI/K7MDENG/bPxRfiCYzEXAMPLEKEY</SecretAccessKey>\n"         \
    "      <SessionToken>\n       " token "\n      </SessionToken>\n"                              \
    "      <Expiration>2019-11-09T13:34:41Z</Expiration>\n"                                        \
    "    </Credentials>\n"                                                                         \
    "    <PackedPolicySize>6</PackedPolicySize>\n"                                                 \
    "  </AssumeRoleResult>\n"                                                                      \
    "  <ResponseMetadata>\n"                                                                       \
    "    <RequestId>c6104cbe-af31-11e0-8154-cbc7ccf896c7</RequestId>\n"                            \
    "  </ResponseMetadata>\n"                                                                      \
    "</AssumeRoleResponse>\n"

#define DOC_TOKEN                                                                                  \
    "AQoDYXdzEPT//////////wEXAMPLEtc764bNrC9SAPBSM22wDOk4x4HIZ8j4FZTwdQWLWsKWHGBuFqwAeMicRXmxfpSP" \
    "fIeoIYRqTflfKD8YUuwthAx7mSEI/qkPpKPi/kMcGdQrmGdeehM4IC1NtBmUpp2wUE8phUZampKsburEDy0KPkyQDYwT" \
    "7WZ0wq5VSXDvp75YU9HFvlRd8Tx6q6fE8YQcHNVXAkiY9q6d+xo0rKwT38xVqr7ZD0u0iPPkUL64lIZbqBAz+scqKmlz" \
    "m8FDrypNC9Yjc8fPOLn9FX9KSYvKTr4rvx3iSIlTJabIQwj2ICCR/oLxBA=="

static th_err parse(const char *xml, struct th_aws_credentials *out)
{
    char why[160] = "";
    th_err e = th_sts_parse_credentials(xml, strlen(xml), out, why, sizeof why);
    if (e != TH_E_OK)
        assert_true(why[0] != '\0'); /* a refusal always says why */
    return e;
}

/* A minimal answer around the Credentials content given. */
static th_err parse_creds(const char *inner, struct th_aws_credentials *out)
{
    static char doc[16384];
    int n = snprintf(doc, sizeof doc,
                     "<AssumeRoleResponse><AssumeRoleResult><Credentials>%s</Credentials>"
                     "</AssumeRoleResult></AssumeRoleResponse>",
                     inner);
    assert_true(n > 0 && (size_t)n < sizeof doc);
    return parse(doc, out);
}

#define AK  "<AccessKeyId>ASIAEXAMPLE</AccessKeyId>"
#define SK  "<SecretAccessKey>secret/KEY+1</SecretAccessKey>"
#define EXP "<Expiration>2030-01-01T00:00:00Z</Expiration>"

static void test_documented_web_identity_answer(void **state)
{
    (void)state;
    struct th_aws_credentials c;
    assert_int_equal(parse(web_identity_doc, &c), TH_E_OK);
    assert_string_equal(c.access_key_id, "ASgeIAIOSFODNN7EXAMPLE");
    assert_string_equal(c.secret_access_key, "wJalrXUtnFEMI/K7MDENG/bPxRfiCYzEXAMPLEKEY");
    assert_string_equal(c.session_token, "AQoDYXdzEE0a8ANXXXXXXXXNO1ewxE5TijQyp+IEXAMPLE");
    assert_int_equal(c.expires_ms, 1414191623000LL);
}

static void test_documented_assume_role_answer(void **state)
{
    (void)state;
    struct th_aws_credentials c;
    assert_int_equal(parse(ASSUME_ROLE_DOC(DOC_TOKEN), &c), TH_E_OK);
    assert_string_equal(c.access_key_id, "ASIAIOSFODNN7EXAMPLE");
    assert_string_equal(c.session_token, DOC_TOKEN); /* surrounding whitespace trimmed */
    assert_int_equal(c.expires_ms, 1573306481000LL);
    /* as the reference prints it, over several lines: not a token a header can carry */
    assert_int_equal(
        parse(ASSUME_ROLE_DOC("AQoDYXdzEPT//////////wEXAMPLE\n       LWsKWHGBuFq"), &c),
        TH_E_INVAL);
}

static void test_entities_decoded(void **state)
{
    (void)state;
    struct th_aws_credentials c;
    assert_int_equal(parse_creds(AK SK EXP "<SessionToken>a&amp;b&lt;c&gt;d&quot;e&apos;f&#43;g"
                                           "&#x2F;h&#X2f;</SessionToken>",
                                 &c),
                     TH_E_INVAL); /* &#X is not XML: only &#x */
    assert_int_equal(parse_creds(AK SK EXP "<SessionToken>a&amp;b&lt;c&gt;d&quot;e&apos;f&#43;g"
                                           "&#x2F;h&#x2f;</SessionToken>",
                                 &c),
                     TH_E_OK);
    assert_string_equal(c.session_token, "a&b<c>d\"e'f+g/h/");
    assert_int_equal(parse_creds(AK SK EXP "<SessionToken>&amp;amp;</SessionToken>", &c), TH_E_OK);
    assert_string_equal(c.session_token, "&amp;"); /* decoded once, not twice */
    /* attributes on the root and on containers are fine, whitespace around values too */
    assert_int_equal(parse("<R a=\"1\">\n<Credentials xmlns=\"x\">\n  <AccessKeyId> ASIA1 "
                           "</AccessKeyId>" SK EXP "<SessionToken>t</SessionToken></Credentials>"
                           "</R >",
                           &c),
                     TH_E_OK);
    assert_string_equal(c.access_key_id, "ASIA1");
}

static void test_refusals(void **state)
{
    (void)state;
    static const char *const bad[] = {
        /* missing or repeated members */
        AK SK EXP,
        AK SK "<SessionToken>t</SessionToken>",
        AK AK SK EXP "<SessionToken>t</SessionToken>",
        AK SK EXP "<SessionToken>t</SessionToken><SessionToken>u</SessionToken>",
        AK SK EXP "<SessionToken/>",
        AK SK EXP "<SessionToken></SessionToken>",
        AK SK EXP "<SessionToken>t",
        AK SK EXP "<SessionToken>t</SessionToken></SessionToken>",
        /* markup where text belongs */
        AK SK EXP "<SessionToken><b>t</b></SessionToken>",
        AK SK EXP "<SessionToken><![CDATA[t]]></SessionToken>",
        AK SK EXP "<SessionToken>t<!-- c --></SessionToken>",
        /* entities XML does not define without a DTD, and malformed references */
        AK SK EXP "<SessionToken>&foo;</SessionToken>",
        AK SK EXP "<SessionToken>&amp</SessionToken>",
        AK SK EXP "<SessionToken>a & b</SessionToken>",
        AK SK EXP "<SessionToken>&#0;</SessionToken>",
        AK SK EXP "<SessionToken>&#xD800;</SessionToken>",
        AK SK EXP "<SessionToken>&#x110000;</SessionToken>",
        AK SK EXP "<SessionToken>&#000000065;</SessionToken>",
        AK SK EXP "<SessionToken>&#;</SessionToken>",
        AK SK EXP "<SessionToken>&#x;</SessionToken>",
        /* not header-safe: spaces, control characters, non-ASCII */
        AK SK EXP "<SessionToken>a b</SessionToken>",
        AK SK EXP "<SessionToken>a&#10;b</SessionToken>",
        AK SK EXP "<SessionToken>a\r\nX-Injected: 1</SessionToken>",
        AK SK EXP "<SessionToken>caf&#xE9;</SessionToken>",
        AK SK EXP "<SessionToken>caf\xc3\xa9</SessionToken>",
        /* expiration */
        AK SK "<Expiration>tomorrow</Expiration><SessionToken>t</SessionToken>",
        AK SK "<Expiration></Expiration><SessionToken>t</SessionToken>",
    };
    struct th_aws_credentials c;
    memset(&c, 0x5a, sizeof c);
    for (size_t i = 0; i < sizeof bad / sizeof *bad; i++) {
        if (parse_creds(bad[i], &c) != TH_E_INVAL)
            fail_msg("accepted case %zu: %s", i, bad[i]);
        assert_int_equal((unsigned char)c.access_key_id[0], 0x5a); /* out untouched */
    }
    assert_int_equal(parse("", &c), TH_E_INVAL);
    assert_int_equal(parse("<R></R>", &c), TH_E_INVAL);
    assert_int_equal(parse("<!DOCTYPE r [<!ENTITY x \"y\">]><R><Credentials>" AK SK EXP
                           "<SessionToken>&x;</SessionToken></Credentials></R>",
                           &c),
                     TH_E_INVAL);
    assert_int_equal(parse("<R><Credentials>" AK SK EXP "<SessionToken>t</SessionToken>"
                           "</Credentials><Credentials></Credentials></R>",
                           &c),
                     TH_E_INVAL);
    assert_int_equal(th_sts_parse_credentials(NULL, 0, &c, (char[64]){0}, 64), TH_E_INVAL);
}

static void test_lengths(void **state)
{
    (void)state;
    static char doc[8192], tok[sizeof((struct th_aws_credentials *)0)->session_token + 1];
    struct th_aws_credentials c;
    memset(tok, 'T', sizeof tok - 1);
    tok[sizeof tok - 1] = '\0'; /* one byte too many */
    snprintf(doc, sizeof doc, AK SK EXP "<SessionToken>%s</SessionToken>", tok);
    assert_int_equal(parse_creds(doc, &c), TH_E_INVAL);
    tok[sizeof tok - 2] = '\0'; /* fits exactly */
    snprintf(doc, sizeof doc, AK SK EXP "<SessionToken>%s</SessionToken>", tok);
    assert_int_equal(parse_creds(doc, &c), TH_E_OK);
    assert_int_equal(strlen(c.session_token), sizeof c.session_token - 1);

    char out[4];
    const char *x = "<a> abc </a>";
    assert_int_equal(th_sts_xml_text(x, strlen(x), "a", out, sizeof out), TH_E_OK);
    assert_string_equal(out, "abc");
    assert_int_equal(th_sts_xml_text(x, strlen(x), "a", out, 3), TH_E_TOOBIG);
    assert_int_equal(th_sts_xml_text(x, strlen(x), "b", out, sizeof out), TH_E_NOTFOUND);
    /* a prefix of another tag's name is not that tag */
    const char *y = "<ab>x</ab>";
    assert_int_equal(th_sts_xml_text(y, strlen(y), "a", out, sizeof out), TH_E_NOTFOUND);
    /* the range given is all that is read: a tag cut by it is not found */
    assert_int_equal(th_sts_xml_text(x, 3, "a", out, sizeof out), TH_E_INVAL);
    assert_int_equal(th_sts_xml_text(x, 2, "a", out, sizeof out), TH_E_NOTFOUND);
}

static void test_error_answer(void **state)
{
    (void)state;
    static const char doc[] =
        "<ErrorResponse xmlns=\"https://sts.amazonaws.com/doc/2011-06-15/\">\n"
        "  <Error>\n    <Type>Sender</Type>\n    <Code>AccessDenied</Code>\n"
        "    <Message>User: arn:aws:iam::123456789012:user/x is not authorized to perform: "
        "sts:AssumeRole on resource: arn:aws:iam::123456789012:role/y &amp; more</Message>\n"
        "  </Error>\n  <RequestId>4e0e5ab7-0d6e-4b32-8a3b-1b0f0f0f0f0f</RequestId>\n"
        "</ErrorResponse>\n";
    char code[32], msg[256];
    assert_true(th_sts_parse_error(doc, strlen(doc), code, sizeof code, msg, sizeof msg));
    assert_string_equal(code, "AccessDenied");
    assert_string_equal(msg, "User: arn:aws:iam::123456789012:user/x is not authorized to "
                             "perform: sts:AssumeRole on resource: "
                             "arn:aws:iam::123456789012:role/y & more");
    /* control characters never reach a log line; a message is cut to fit */
    static const char ctl[] = "<ErrorResponse><Error><Code>Throttling</Code><Message>a&#10;b\tc"
                              "</Message></Error></ErrorResponse>";
    assert_true(th_sts_parse_error(ctl, strlen(ctl), code, sizeof code, msg, 4));
    assert_string_equal(code, "Throttling");
    assert_string_equal(msg, "a?b");
    /* not an error answer */
    assert_false(th_sts_parse_error(web_identity_doc, strlen(web_identity_doc), code, sizeof code,
                                    msg, sizeof msg));
    assert_string_equal(code, "");
    assert_false(th_sts_parse_error("<html>502</html>", 16, code, sizeof code, msg, sizeof msg));
    assert_false(th_sts_parse_error(NULL, 0, code, sizeof code, msg, sizeof msg));
}

static void test_endpoint(void **state)
{
    (void)state;
    char url[128], region[32];
    assert_int_equal(th_sts_endpoint("eu-west-1", false, url, sizeof url, region, sizeof region),
                     TH_E_OK);
    assert_string_equal(url, "https://sts.eu-west-1.amazonaws.com/");
    assert_string_equal(region, "eu-west-1");
    assert_int_equal(th_sts_endpoint("eu-west-1", true, url, sizeof url, region, sizeof region),
                     TH_E_OK);
    assert_string_equal(url, "https://sts.amazonaws.com/");
    assert_string_equal(region, "us-east-1");
    /* an opt-in region never had the global default */
    assert_int_equal(th_sts_endpoint("ap-east-1", true, url, sizeof url, region, sizeof region),
                     TH_E_OK);
    assert_string_equal(url, "https://sts.ap-east-1.amazonaws.com/");
    assert_int_equal(th_sts_endpoint("cn-north-1", false, url, sizeof url, region, sizeof region),
                     TH_E_OK);
    assert_string_equal(url, "https://sts.cn-north-1.amazonaws.com.cn/");
    assert_int_equal(th_sts_endpoint("aws-global", false, url, sizeof url, region, sizeof region),
                     TH_E_OK);
    assert_string_equal(url, "https://sts.amazonaws.com/");
    assert_int_equal(th_sts_endpoint("", false, url, sizeof url, region, sizeof region),
                     TH_E_INVAL);
    assert_int_equal(
        th_sts_endpoint("us-east-1/../x", false, url, sizeof url, region, sizeof region),
        TH_E_INVAL);
    assert_int_equal(th_sts_endpoint("US-EAST-1", false, url, sizeof url, region, sizeof region),
                     TH_E_INVAL);
    assert_int_equal(th_sts_endpoint("eu-west-1", false, url, 20, region, sizeof region),
                     TH_E_TOOBIG);
}

static void test_bodies(void **state)
{
    (void)state;
    struct th_buf b;
    th_buf_init(&b, 4096);
    struct th_sts_role r = {.role_arn = "arn:aws:iam::123456789012:role/a b",
                            .session_name = "telehook-1"};
    assert_int_equal(th_sts_assume_role_body(&b, &r), TH_E_OK);
    assert_string_equal(th_buf_str(&b), "Action=AssumeRole&Version=2011-06-15&RoleArn=arn%3Aaws%3A"
                                        "iam%3A%3A123456789012%3Arole%2Fa%20b&RoleSessionName="
                                        "telehook-1");
    th_buf_reset(&b);
    r.duration_seconds = 900;
    r.external_id = "ext+1=2,3.4@5:6/7-8_9";
    assert_int_equal(th_sts_assume_role_body(&b, &r), TH_E_OK);
    assert_non_null(strstr(th_buf_str(&b), "&DurationSeconds=900&ExternalId=ext%2B1%3D2%2C3.4%40"
                                           "5%3A6%2F7-8_9"));
    th_buf_reset(&b);
    assert_int_equal(th_sts_web_identity_body(&b, "arn:aws:iam::1:role/r", "s", "eyJ.a+b/c="),
                     TH_E_OK);
    assert_string_equal(
        th_buf_str(&b),
        "Action=AssumeRoleWithWebIdentity&Version=2011-06-15&RoleArn=arn%3Aaws%3A"
        "iam%3A%3A1%3Arole%2Fr&RoleSessionName=s&WebIdentityToken=eyJ.a%2Bb%2Fc%3D");
    r.session_name = "";
    assert_int_equal(th_sts_assume_role_body(&b, &r), TH_E_INVAL);
    assert_int_equal(th_sts_web_identity_body(&b, "arn", "s", ""), TH_E_INVAL);
    th_buf_release(&b);
    th_buf_init(&b, 16); /* the buffer's cap holds */
    r.session_name = "s";
    assert_int_equal(th_sts_assume_role_body(&b, &r), TH_E_TOOBIG);
    th_buf_release(&b);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_documented_web_identity_answer),
        cmocka_unit_test(test_documented_assume_role_answer),
        cmocka_unit_test(test_entities_decoded),
        cmocka_unit_test(test_refusals),
        cmocka_unit_test(test_lengths),
        cmocka_unit_test(test_error_answer),
        cmocka_unit_test(test_endpoint),
        cmocka_unit_test(test_bodies),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
