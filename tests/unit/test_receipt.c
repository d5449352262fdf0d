/* Unit tests: receipt (Twilio signature vectors, form parsing, SNS canonical strings and
 * signatures with a throw-away key, the status mapping tables, malformed and huge input). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <jansson.h>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/x509.h>

#include "receipt/receipt.h"

/* ---- forms ---- */

/* name=value pairs, percent-encoded as a sender would */
static void form_append(char *body, size_t room, const char *name, const char *value)
{
    size_t n = strlen(body);
    if (n)
        body[n++] = '&';
    for (int half = 0; half < 2; half++) {
        for (const char *p = half ? value : name; *p; p++) {
            unsigned char c = (unsigned char)*p;
            if (c == ' ')
                body[n++] = '+';
            else if ((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
                     c == '-' || c == '_' || c == '.')
                body[n++] = (char)c;
            else
                n += (size_t)snprintf(body + n, room - n, "%%%02X", c);
        }
        if (!half)
            body[n++] = '=';
    }
    body[n] = '\0';
    assert_true(n < room);
}

static void test_form_parse(void **state)
{
    (void)state;
    struct th_form f;
    const char *b = "A=1&B=x+y%2Bz&&C=&D&E=%41%42";
    assert_int_equal(th_form_parse(b, strlen(b), &f), TH_E_OK);
    assert_int_equal(f.n, 5);
    assert_string_equal(th_form_get(&f, "A"), "1");
    assert_string_equal(th_form_get(&f, "B"), "x y+z");
    assert_string_equal(th_form_get(&f, "C"), "");
    assert_string_equal(th_form_get(&f, "D"), "");
    assert_string_equal(th_form_get(&f, "E"), "AB");
    assert_null(th_form_get(&f, "F"));
    th_form_release(&f);
}

static void test_form_malformed(void **state)
{
    (void)state;
    struct th_form f;
    const char *bad[] = {"A=%4", "A=%", "A=%zz", "A=%00", "%G1=2"};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        assert_int_equal(th_form_parse(bad[i], strlen(bad[i]), &f), TH_E_REQUEST);
        assert_null(f.storage);
    }
    /* a body cut in the middle of an escape: the length rules, not the NUL */
    assert_int_equal(th_form_parse("A=%41", 4, &f), TH_E_REQUEST);
    /* too many parameters, too long a body */
    char many[TH_RECEIPT_FORM_MAX_BODY];
    many[0] = '\0';
    for (int i = 0; i <= TH_RECEIPT_FORM_MAX_PARAMS; i++)
        strcat(many, "a=b&");
    assert_int_equal(th_form_parse(many, strlen(many), &f), TH_E_TOOBIG);
    char *huge = malloc(TH_RECEIPT_FORM_MAX_BODY + 1);
    memset(huge, 'a', TH_RECEIPT_FORM_MAX_BODY + 1);
    assert_int_equal(th_form_parse(huge, TH_RECEIPT_FORM_MAX_BODY + 1, &f), TH_E_TOOBIG);
    /* the largest body allowed, one value: its decoded copy fits */
    huge[0] = 'x';
    huge[1] = '=';
    assert_int_equal(th_form_parse(huge, TH_RECEIPT_FORM_MAX_BODY, &f), TH_E_OK);
    assert_int_equal(strlen(th_form_get(&f, "x")), TH_RECEIPT_FORM_MAX_BODY - 2);
    th_form_release(&f);
    free(huge);
}

/* ---- Twilio signature: the vectors in tests/vectors/twilio ---- */

static json_t *load_vectors(void)
{
    const char *src = getenv("TH_TEST_SRCDIR");
    char path[1024];
    snprintf(path, sizeof path, "%s/tests/vectors/twilio/signature-vectors.json", src ? src : ".");
    json_t *v = json_load_file(path, 0, NULL);
    assert_non_null(v);
    return v;
}

static void form_of(json_t *params, struct th_form *f)
{
    char body[4096] = "";
    size_t i;
    json_t *pair;
    json_array_foreach(params, i, pair)
    {
        form_append(body, sizeof body, json_string_value(json_array_get(pair, 0)),
                    json_string_value(json_array_get(pair, 1)));
    }
    assert_int_equal(th_form_parse(body, strlen(body), f), TH_E_OK);
    assert_int_equal(f->n, json_array_size(params));
}

static void test_twilio_vectors(void **state)
{
    (void)state;
    json_t *v = load_vectors();
    const char *token = json_string_value(json_object_get(v, "auth_token"));
    size_t i, checked = 0;
    json_t *c;
    json_array_foreach(json_object_get(v, "cases"), i, c)
    {
        const char *url = json_string_value(json_object_get(c, "url"));
        const char *want = json_string_value(json_object_get(c, "expected"));
        struct th_form f;
        form_of(json_object_get(c, "params"), &f);
        char sig[64];
        assert_int_equal(th_receipt_twilio_sign(token, url, &f, sig, sizeof sig), TH_E_OK);
        assert_string_equal(sig, want);
        assert_true(th_receipt_twilio_verify(token, url, &f, want));
        assert_false(th_receipt_twilio_verify("12346", url, &f, want));
        /* one bit of the signature off */
        char bad[64];
        strcpy(bad, want);
        bad[3] ^= 1;
        assert_false(th_receipt_twilio_verify(token, url, &f, bad));
        /* a parameter changed: the signature no longer covers it */
        if (f.n > 0) {
            f.params[0].value[0] ^= 1;
            assert_false(th_receipt_twilio_verify(token, url, &f, want));
            f.params[0].value[0] ^= 1;
        }
        th_form_release(&f);
        checked++;
    }
    assert_int_equal(checked, 7);
    json_decref(v);
}

/* Twilio signed the URL with its default port; we know it without (and the reverse). */
static void test_twilio_default_port(void **state)
{
    (void)state;
    struct th_form f;
    const char *body = "MessageSid=SM1&MessageStatus=delivered";
    assert_int_equal(th_form_parse(body, strlen(body), &f), TH_E_OK);
    char sig[64];
    const struct {
        const char *signed_url, *configured;
        bool ok;
    } cases[] = {
        {"https://h.example:443/v1/twilio/status", "https://h.example/v1/twilio/status", true},
        {"https://h.example/v1/twilio/status", "https://h.example:443/v1/twilio/status", true},
        {"http://h.example:80/s?x=1", "http://h.example/s?x=1", true},
        {"http://h.example/s?x=1", "http://h.example:80/s?x=1", true},
        {"https://h.example:8443/s", "https://h.example/s", false},
        {"https://h.example/s", "https://h.example:8443/s", false},
        {"https://h.example:80/s", "https://h.example/s", false}, /* not https's default */
        {"https://[::1]:443/s", "https://[::1]/s", true},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        assert_int_equal(th_receipt_twilio_sign("tok", cases[i].signed_url, &f, sig, sizeof sig),
                         TH_E_OK);
        assert_int_equal(th_receipt_twilio_verify("tok", cases[i].configured, &f, sig),
                         cases[i].ok);
    }
    assert_false(th_receipt_twilio_verify("", "https://h.example/s", &f, sig));
    assert_false(th_receipt_twilio_verify("tok", "https://h.example/s", &f, ""));
    th_form_release(&f);
}

/* ---- status mapping ---- */

static void test_twilio_map(void **state)
{
    (void)state;
    const struct {
        const char *status;
        bool call;
        const char *code, *want;
        bool final, delivered;
    } rows[] = {
        {"queued", false, NULL, "queued", false, false},
        {"accepted", false, NULL, "queued", false, false},
        {"sending", false, NULL, "sent", false, false},
        {"sent", false, NULL, "sent", false, false},
        {"delivered", false, NULL, "delivered", true, true},
        {"read", false, NULL, "delivered", true, true},
        {"undelivered", false, "30007", "spam", true, false},
        {"undelivered", false, "30003", "unreachable", true, false},
        {"undelivered", false, "30005", "invalid", true, false},
        {"undelivered", false, "30004", "blocked", true, false},
        {"undelivered", false, "30036", "expired", true, false},
        {"undelivered", false, "30999", "undelivered", true, false},
        {"undelivered", false, NULL, "undelivered", true, false},
        {"failed", false, "30034", "blocked", true, false},
        {"failed", false, NULL, "failed", true, false},
        {"canceled", false, NULL, "failed", true, false},
        {"bogus", false, NULL, "unknown", true, false},
        {"ringing", true, NULL, "sent", false, false},
        {"in-progress", true, NULL, "sent", false, false},
        {"completed", true, NULL, "delivered", true, true},
        {"busy", true, NULL, "busy", true, false},
        {"no-answer", true, NULL, "no_answer", true, false},
        {"failed", true, "30007", "failed", true, false}, /* message codes are not call codes */
    };
    for (size_t i = 0; i < sizeof rows / sizeof rows[0]; i++) {
        struct th_receipt r = {0};
        th_receipt_set_status(&r,
                              th_receipt_twilio_map(rows[i].status, rows[i].call, rows[i].code));
        assert_string_equal(r.status, rows[i].want);
        assert_int_equal(r.final, rows[i].final);
        assert_int_equal(r.delivered, rows[i].delivered);
    }
}

static void test_twilio_parse(void **state)
{
    (void)state;
    struct th_form f;
    struct th_receipt r;
    const char *b = "AccountSid=AC1&MessageSid=SM0123abc&MessageStatus=undelivered&ErrorCode=30007&"
                    "To=%2B14155550100&From=%2B14155550199";
    assert_int_equal(th_form_parse(b, strlen(b), &f), TH_E_OK);
    assert_int_equal(th_receipt_twilio_parse(&f, &r), TH_E_OK);
    assert_string_equal(r.provider, "twilio");
    assert_string_equal(r.transaction_id, "SM0123abc");
    assert_string_equal(r.status, "spam");
    assert_string_equal(r.error, "30007");
    assert_string_equal(r.channel, "sms");
    /* no number is copied anywhere in the receipt */
    assert_null(memmem(&r, sizeof r, "4155550", 7));
    th_form_release(&f);

    b = "CallSid=CA9&CallStatus=no-answer&ErrorCode=%3Cscript%3E";
    assert_int_equal(th_form_parse(b, strlen(b), &f), TH_E_OK);
    assert_int_equal(th_receipt_twilio_parse(&f, &r), TH_E_OK);
    assert_string_equal(r.channel, "voice");
    assert_string_equal(r.status, "no_answer");
    assert_string_equal(r.error, ""); /* a code that is not a plain token is dropped */
    th_form_release(&f);

    const char *bad[] = {"MessageStatus=sent", "MessageSid=SM1",
                         "MessageSid=SM%0A1&MessageStatus=sent", ""};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        assert_int_equal(th_form_parse(bad[i], strlen(bad[i]), &f), TH_E_OK);
        assert_int_equal(th_receipt_twilio_parse(&f, &r), TH_E_REQUEST);
        th_form_release(&f);
    }
}

static void test_aws_map(void **state)
{
    (void)state;
    const struct {
        const char *type, *want;
        bool final;
    } rows[] = {
        {"TEXT_DELIVERED", "delivered", true},
        {"TEXT_SUCCESSFUL", "sent", false},
        {"TEXT_PENDING", "queued", false},
        {"TEXT_QUEUED", "queued", false},
        {"TEXT_BLOCKED", "blocked", true},
        {"TEXT_CARRIER_BLOCKED", "blocked", true},
        {"TEXT_PROTECT_BLOCKED", "blocked", true},
        {"TEXT_SPAM", "spam", true},
        {"TEXT_TTL_EXPIRED", "expired", true},
        {"TEXT_UNREACHABLE", "unreachable", true},
        {"TEXT_CARRIER_UNREACHABLE", "unreachable", true},
        {"TEXT_INVALID", "invalid", true},
        {"TEXT_INVALID_MESSAGE", "invalid", true},
        {"TEXT_UNKNOWN", "unknown", true},
        {"VOICE_RINGING", "sent", false},
        {"VOICE_COMPLETED", "delivered", true},
        {"VOICE_BUSY", "busy", true},
        {"VOICE_NO_ANSWER", "no_answer", true},
        {"VOICE_FAILED", "failed", true},
        {"VOICE_TTL_EXPIRED", "expired", true},
        {"MEDIA_WHATEVER", "unknown", true},
    };
    for (size_t i = 0; i < sizeof rows / sizeof rows[0]; i++) {
        struct th_receipt r = {0};
        th_receipt_set_status(&r, th_receipt_aws_map(rows[i].type));
        assert_string_equal(r.status, rows[i].want);
        assert_int_equal(r.final, rows[i].final);
    }
}

static const char *record =
    "{\"eventType\":\"TEXT_CARRIER_BLOCKED\",\"eventVersion\":\"1.0\",\"eventTimestamp\":"
    "1733371200123,\"isFinal\":true,\"originationPhoneNumber\":\"+12065550100\","
    "\"destinationPhoneNumber\":\"+4915112345678\",\"isoCountryCode\":\"de\",\"messageId\":"
    "\"a1b2c3d4-0000-1111-2222-333344445555\",\"messageStatus\":\"CARRIER_BLOCKED\"}";

static void test_aws_record(void **state)
{
    (void)state;
    struct th_receipt r;
    assert_int_equal(th_receipt_aws_record_parse(record, strlen(record), &r), TH_E_OK);
    assert_string_equal(r.provider, "aws");
    assert_string_equal(r.transaction_id, "a1b2c3d4-0000-1111-2222-333344445555");
    assert_string_equal(r.status, "blocked");
    assert_string_equal(r.error, "CARRIER_BLOCKED");
    assert_string_equal(r.country, "DE");
    assert_string_equal(r.channel, "sms");
    assert_true(r.final);
    assert_int_equal(r.event_ms, 1733371200123LL);
    assert_null(memmem(&r, sizeof r, "5551", 4));
    assert_null(memmem(&r, sizeof r, "12345678", 8));
    /* TEXT_SUCCESSFUL said final by AWS (no delivery report in that country) */
    const char *succ = "{\"eventType\":\"TEXT_SUCCESSFUL\",\"messageId\":\"m1\",\"isFinal\":true}";
    assert_int_equal(th_receipt_aws_record_parse(succ, strlen(succ), &r), TH_E_OK);
    assert_string_equal(r.status, "sent");
    assert_true(r.final);
    /* EventBridge wraps the same record */
    char eb[2048];
    snprintf(eb, sizeof eb,
             "{\"version\":\"0\",\"source\":\"aws.sms-voice\",\"detail-type\":\"Text Message "
             "Delivery Status Updated\",\"detail\":%s}",
             record);
    assert_int_equal(th_receipt_eventbridge_parse(eb, strlen(eb), &r), TH_E_OK);
    assert_string_equal(r.status, "blocked");
    snprintf(eb, sizeof eb, "{\"source\":\"aws.ec2\",\"detail\":%s}", record);
    assert_int_equal(th_receipt_eventbridge_parse(eb, strlen(eb), &r), TH_E_REQUEST);
    /* malformed, missing fields, duplicate keys, too deep, too big */
    const char *bad_json[] = {"", "{", "[]", "{\"a\":1,\"a\":2}", "\"x\""};
    for (size_t i = 0; i < sizeof bad_json / sizeof bad_json[0]; i++)
        assert_int_equal(th_receipt_aws_record_parse(bad_json[i], strlen(bad_json[i]), &r),
                         TH_E_JSON);
    const char *missing = "{\"eventType\":\"TEXT_DELIVERED\",\"messageId\":\"a b\"}";
    assert_int_equal(th_receipt_aws_record_parse(missing, strlen(missing), &r), TH_E_REQUEST);
    char deep[200] = "";
    for (int i = 0; i < 40; i++)
        strcat(deep, "[");
    assert_int_equal(th_receipt_aws_record_parse(deep, strlen(deep), &r), TH_E_JSON);
    size_t big = TH_RECEIPT_JSON_MAX_BODY + 1;
    char *huge = malloc(big);
    memset(huge, ' ', big);
    assert_int_equal(th_receipt_aws_record_parse(huge, big, &r), TH_E_TOOBIG);
    free(huge);
}

static void test_secret_equal(void **state)
{
    (void)state;
    assert_true(th_receipt_secret_equal("s3cret-value", "s3cret-value"));
    assert_false(th_receipt_secret_equal("s3cret-valuf", "s3cret-value"));
    assert_false(th_receipt_secret_equal("s3cret", "s3cret-value"));
    assert_false(th_receipt_secret_equal("", ""));
    assert_false(th_receipt_secret_equal(NULL, "x"));
}

/* ---- SNS ---- */

static char *notification_json(const char *type, const char *subject, const char *sigver,
                               const char *sig)
{
    json_t *o = json_pack("{s:s,s:s,s:s,s:s,s:s,s:s,s:s,s:s}", "Type", type, "MessageId",
                          "22b80b92-fdea-4c2c-8f9d-bdfb0c7bf324", "TopicArn",
                          "arn:aws:sns:us-west-2:123456789012:MyTopic", "Message", record,
                          "Timestamp", "2012-05-02T00:54:06.655Z", "SignatureVersion", sigver,
                          "Signature", sig, "SigningCertURL",
                          "https://sns.us-west-2.amazonaws.com/SimpleNotificationService-f3e.pem");
    if (subject)
        json_object_set_new(o, "Subject", json_string(subject));
    if (strcmp(type, "Notification") != 0) {
        json_object_set_new(o, "Token", json_string("2336412f37fb687f5d51e6e2425c464d"));
        json_object_set_new(
            o, "SubscribeURL",
            json_string("https://sns.us-west-2.amazonaws.com/?Action="
                        "ConfirmSubscription&Token=2336412f37fb687f5d51e6e2425c464d"));
    }
    char *s = json_dumps(o, 0);
    json_decref(o);
    return s;
}

static void test_sns_canonical(void **state)
{
    (void)state;
    struct th_sns_message m;
    char *j = notification_json("Notification", "Hi", "1", "AAAA");
    assert_int_equal(th_sns_parse(j, strlen(j), &m), TH_E_OK);
    char *c;
    size_t n;
    assert_int_equal(th_sns_canonical(&m, &c, &n), TH_E_OK);
    char want[2048];
    snprintf(want, sizeof want,
             "Message\n%s\nMessageId\n22b80b92-fdea-4c2c-8f9d-bdfb0c7bf324\nSubject\nHi\n"
             "Timestamp\n2012-05-02T00:54:06.655Z\nTopicArn\narn:aws:sns:us-west-2:123456789012:"
             "MyTopic\nType\nNotification\n",
             record);
    assert_string_equal(c, want);
    assert_int_equal(n, strlen(want));
    free(c);
    th_sns_release(&m);
    free(j);
    /* without a Subject, no Subject line */
    j = notification_json("Notification", NULL, "1", "AAAA");
    assert_int_equal(th_sns_parse(j, strlen(j), &m), TH_E_OK);
    assert_int_equal(th_sns_canonical(&m, &c, &n), TH_E_OK);
    assert_null(strstr(c, "Subject"));
    free(c);
    th_sns_release(&m);
    free(j);
    /* a confirmation: SubscribeURL and Token, never a Subject */
    j = notification_json("SubscriptionConfirmation", "ignored", "1", "AAAA");
    assert_int_equal(th_sns_parse(j, strlen(j), &m), TH_E_OK);
    assert_int_equal(m.type, TH_SNS_SUBSCRIPTION_CONFIRMATION);
    assert_int_equal(th_sns_canonical(&m, &c, &n), TH_E_OK);
    snprintf(want, sizeof want,
             "Message\n%s\nMessageId\n22b80b92-fdea-4c2c-8f9d-bdfb0c7bf324\nSubscribeURL\n"
             "https://sns.us-west-2.amazonaws.com/?Action=ConfirmSubscription&Token="
             "2336412f37fb687f5d51e6e2425c464d\nTimestamp\n2012-05-02T00:54:06.655Z\nToken\n"
             "2336412f37fb687f5d51e6e2425c464d\nTopicArn\narn:aws:sns:us-west-2:123456789012:"
             "MyTopic\nType\nSubscriptionConfirmation\n",
             record);
    assert_string_equal(c, want);
    free(c);
    th_sns_release(&m);
    free(j);
    /* an unknown type, a missing field */
    const char *bad = "{\"Type\":\"Other\",\"Message\":\"x\"}";
    assert_int_equal(th_sns_parse(bad, strlen(bad), &m), TH_E_REQUEST);
    bad = "{\"Type\":\"Notification\",\"Message\":\"x\"}";
    assert_int_equal(th_sns_parse(bad, strlen(bad), &m), TH_E_REQUEST);
    assert_int_equal(th_sns_parse("{", 1, &m), TH_E_JSON);
}

/* A signed message is taken only near its Timestamp: an old one is a replay. */
static void test_sns_fresh(void **state)
{
    (void)state;
    struct th_sns_message m;
    char *j = notification_json("Notification", NULL, "1", "AAAA");
    assert_int_equal(th_sns_parse(j, strlen(j), &m), TH_E_OK);
    int64_t ts = 1335920046655; /* 2012-05-02T00:54:06.655Z */
    assert_true(th_sns_fresh(&m, ts));
    assert_true(th_sns_fresh(&m, ts + TH_SNS_MAX_AGE_MS));
    assert_false(th_sns_fresh(&m, ts + TH_SNS_MAX_AGE_MS + 1));
    assert_false(th_sns_fresh(&m, ts + 86400000LL * 365)); /* a year later */
    assert_true(th_sns_fresh(&m, ts - TH_SNS_MAX_AHEAD_MS));
    assert_false(th_sns_fresh(&m, ts - TH_SNS_MAX_AHEAD_MS - 1));
    free(m.timestamp);
    m.timestamp = strdup("yesterday");
    assert_false(th_sns_fresh(&m, ts));
    th_sns_release(&m);
    free(j);
}

/* A throw-away RSA key and a self-signed certificate for it, made here. */
static EVP_PKEY *test_key;
static char *test_cert_pem;

static int make_key(void **state)
{
    (void)state;
    test_key = EVP_RSA_gen(2048);
    X509 *x = X509_new();
    X509_set_version(x, 2);
    ASN1_INTEGER_set(X509_get_serialNumber(x), 1);
    X509_gmtime_adj(X509_getm_notBefore(x), 0);
    X509_gmtime_adj(X509_getm_notAfter(x), 3600);
    X509_set_pubkey(x, test_key);
    X509_NAME_add_entry_by_txt(X509_get_subject_name(x), "CN", MBSTRING_ASC,
                               (const unsigned char *)"sns.test", -1, -1, 0);
    X509_set_issuer_name(x, X509_get_subject_name(x));
    X509_sign(x, test_key, EVP_sha256());
    BIO *b = BIO_new(BIO_s_mem());
    PEM_write_bio_X509(b, x);
    char *p;
    long n = BIO_get_mem_data(b, &p);
    test_cert_pem = strndup(p, (size_t)n);
    BIO_free(b);
    X509_free(x);
    return test_key && test_cert_pem ? 0 : -1;
}

static int free_key(void **state)
{
    (void)state;
    EVP_PKEY_free(test_key);
    free(test_cert_pem);
    return 0;
}

/* Signs m's canonical string with the test key; sets m->signature. */
static void sign_sns(struct th_sns_message *m, const EVP_MD *md)
{
    char *c;
    size_t n;
    assert_int_equal(th_sns_canonical(m, &c, &n), TH_E_OK);
    EVP_MD_CTX *ctx = EVP_MD_CTX_new();
    unsigned char sig[512];
    size_t siglen = sizeof sig;
    assert_int_equal(EVP_DigestSignInit(ctx, NULL, md, NULL, test_key), 1);
    assert_int_equal(EVP_DigestSign(ctx, sig, &siglen, (unsigned char *)c, n), 1);
    EVP_MD_CTX_free(ctx);
    free(c);
    free(m->signature);
    m->signature = malloc(4 * ((siglen + 2) / 3) + 1);
    EVP_EncodeBlock((unsigned char *)m->signature, sig, (int)siglen);
}

static void test_sns_verify(void **state)
{
    (void)state;
    const char *types[] = {"Notification", "SubscriptionConfirmation", "UnsubscribeConfirmation"};
    for (size_t t = 0; t < 3; t++) {
        for (int v = 1; v <= 2; v++) {
            struct th_sns_message m;
            char *j = notification_json(types[t], t == 0 ? "S" : NULL, v == 1 ? "1" : "2", "AA==");
            assert_int_equal(th_sns_parse(j, strlen(j), &m), TH_E_OK);
            free(j);
            size_t cl = strlen(test_cert_pem);
            assert_int_equal(th_sns_verify(&m, test_cert_pem, cl), TH_E_AUTH);
            sign_sns(&m, v == 1 ? EVP_sha1() : EVP_sha256());
            assert_int_equal(th_sns_verify(&m, test_cert_pem, cl), TH_E_OK);
            /* a signed field changed */
            m.topic_arn[strlen(m.topic_arn) - 1] ^= 1;
            assert_int_equal(th_sns_verify(&m, test_cert_pem, cl), TH_E_AUTH);
            m.topic_arn[strlen(m.topic_arn) - 1] ^= 1;
            m.message[5] ^= 1;
            assert_int_equal(th_sns_verify(&m, test_cert_pem, cl), TH_E_AUTH);
            m.message[5] ^= 1;
            /* the version says which digest: the other one fails */
            m.signature_version[0] = v == 1 ? '2' : '1';
            assert_int_equal(th_sns_verify(&m, test_cert_pem, cl), TH_E_AUTH);
            m.signature_version[0] = '3';
            assert_int_equal(th_sns_verify(&m, test_cert_pem, cl), TH_E_AUTH);
            m.signature_version[0] = v == 1 ? '1' : '2';
            assert_int_equal(th_sns_verify(&m, test_cert_pem, cl), TH_E_OK);
            assert_int_equal(th_sns_verify(&m, "garbage", 7), TH_E_INVAL);
            th_sns_release(&m);
        }
    }
}

static void test_sns_topic_and_hosts(void **state)
{
    (void)state;
    const char *arns = "arn:aws:sns:us-east-1:1:a, arn:aws:sns:eu-west-1:1:b";
    assert_true(th_sns_topic_allowed("arn:aws:sns:us-east-1:1:a", arns));
    assert_true(th_sns_topic_allowed("arn:aws:sns:eu-west-1:1:b", arns));
    assert_false(th_sns_topic_allowed("arn:aws:sns:us-east-1:1:", arns));
    assert_false(th_sns_topic_allowed("arn:aws:sns:us-east-1:1:ab", arns));
    assert_false(th_sns_topic_allowed("arn:aws:sns:us-east-1:1:a", ""));
    const char *def = "sns.*.amazonaws.com";
    const struct {
        const char *url;
        bool ok;
    } rows[] = {
        {"https://sns.us-east-1.amazonaws.com/SimpleNotificationService-x.pem", true},
        {"https://SNS.eu-west-1.AMAZONAWS.com/x.pem", true},
        {"https://sns.us-east-1.amazonaws.com", true},
        {"http://sns.us-east-1.amazonaws.com/x.pem", false},
        {"https://sns.amazonaws.com/x.pem", false},
        {"https://sns.a.b.amazonaws.com/x.pem", false},
        {"https://sns.us-east-1.amazonaws.com.evil.example/x.pem", false},
        {"https://evil.example/sns.us-east-1.amazonaws.com/x.pem", false},
        {"https://sns.us-east-1.amazonaws.com@evil.example/x.pem", false},
        {"https://sns.us_east.amazonaws.com/x.pem", false},
        {"https://sns.us-east-1.amazonaws.com:8443/x.pem", false},
        {"https://sns..amazonaws.com/x.pem", false},
        {"https:///x.pem", false},
        /* an S3 bucket named "sns": its virtual hosts, under Amazon's certificate */
        {"https://sns.s3.amazonaws.com/cert.pem", false},
        {"https://sns.s3-accelerate.amazonaws.com/cert.pem", false},
        {"https://sns.s3-us-west-2.amazonaws.com/cert.pem", false},
        {"https://sns.s3-external-1.amazonaws.com/cert.pem", false},
        {"https://sns.s3-website-us-east-1.amazonaws.com/cert.pem", false},
        {"https://sns.us-gov-west-1.amazonaws.com/x.pem", true},
        {"https://sns.ap-southeast-2.amazonaws.com/x.pem", true},
        {"https://sns.us-east.amazonaws.com/x.pem", false},
        {"https://sns.us-1.amazonaws.com/x.pem", false},
        {"https://sns.us-east-1-.amazonaws.com/x.pem", false},
        {"https://sns.us--east-1.amazonaws.com/x.pem", false},
    };
    for (size_t i = 0; i < sizeof rows / sizeof rows[0]; i++)
        assert_int_equal(th_sns_url_allowed(rows[i].url, def), rows[i].ok);
    assert_true(
        th_sns_url_allowed("https://127.0.0.1:8443/c.pem", "sns.*.amazonaws.com, 127.0.0.1:8443"));
    assert_false(th_sns_url_allowed("https://127.0.0.1:8444/c.pem", "127.0.0.1:8443"));
    assert_false(th_sns_url_allowed("https://127.0.0.1/c.pem", "127.0.0.1:8443"));
    assert_false(th_sns_url_allowed("https://127.0.0.2:8443/c.pem", "127.0.0.1:8443"));
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_form_parse),
        cmocka_unit_test(test_form_malformed),
        cmocka_unit_test(test_twilio_vectors),
        cmocka_unit_test(test_twilio_default_port),
        cmocka_unit_test(test_twilio_map),
        cmocka_unit_test(test_twilio_parse),
        cmocka_unit_test(test_aws_map),
        cmocka_unit_test(test_aws_record),
        cmocka_unit_test(test_secret_equal),
        cmocka_unit_test(test_sns_canonical),
        cmocka_unit_test(test_sns_verify),
        cmocka_unit_test(test_sns_fresh),
        cmocka_unit_test(test_sns_topic_and_hosts),
    };
    return cmocka_run_group_tests(tests, make_key, free_key);
}
