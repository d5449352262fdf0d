/* Unit tests: message (locale normalisation, template compiling, locale chain, rendering). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "message/message.h"

static void norm_ok(const char *in, const char *want)
{
    char out[TH_LOCALE_MAX];
    assert_int_equal(th_locale_normalize(in, out), TH_E_OK);
    assert_string_equal(out, want);
}

static void norm_bad(const char *in)
{
    char out[TH_LOCALE_MAX];
    assert_int_equal(th_locale_normalize(in, out), TH_E_LOCALE);
}

static void test_locale_normalize(void **state)
{
    (void)state;
    norm_ok("EN-US", "en-us");
    norm_ok("en", "en");
    norm_ok("es-MX", "es-mx");
    norm_ok("pt_BR", "pt-br");
    norm_ok("es-419", "es-419");
    norm_ok("zh-Hant-TW", "zh-hant-tw");
    norm_ok("fil", "fil");
    norm_bad("");
    norm_bad("e");
    norm_bad("english");
    norm_bad("en--us");
    norm_bad("en-");
    norm_bad("-en");
    norm_bad("en-u");
    norm_bad("zh-hant-tw-x"); /* 3 subtags */
    norm_bad("en-abcdefghi"); /* subtag over 8 */
    norm_bad("abcdefghijklmnopqrstuvwxyz");
    norm_bad("e1-us");
    norm_bad("en us");
    norm_bad("en-\xc3\xa9");
}

static struct th_templates *build(const struct th_template_spec *specs, size_t n)
{
    struct th_templates *set = NULL;
    char err[256];
    assert_int_equal(th_templates_build(specs, n, &set, err, sizeof err), TH_E_OK);
    return set;
}

static const char *render(const struct th_template *t, const struct th_render_vars *v)
{
    static char out[8192];
    struct th_buf b;
    th_buf_init(&b, sizeof out - 1);
    assert_int_equal(th_message_render(t, v, &b), TH_E_OK);
    snprintf(out, sizeof out, "%s", th_buf_str(&b));
    th_buf_release(&b);
    return out;
}

static void test_render_placeholders(void **state)
{
    (void)state;
    struct th_template_spec specs[] = {
        {"en", TH_CHANNEL_SMS,
         "Hi {{first_name}} {{ last_name }} ({{login}}): {{otp}} / {{otp_spaced}}, "
         "{{expires_minutes}} min",
         NULL},
        {"es", TH_CHANNEL_SMS, "Codigo @otp, digitos @otp2, no @otpx, fin@otp", NULL},
    };
    struct th_templates *set = build(specs, 2);
    struct th_render_vars v = {"123456", "Ana", "Lopez", "ana@example.com", 4};
    assert_string_equal(render(th_templates_find(set, "en", TH_CHANNEL_SMS), &v),
                        "Hi Ana Lopez (ana@example.com): 123456 / 1, 2, 3, 4, 5, 6, 4 min");
    assert_string_equal(render(th_templates_find(set, "es", TH_CHANNEL_SMS), &v),
                        "Codigo 123456, digitos 1, 2, 3, 4, 5, 6, no @otpx, fin123456");
    /* missing names render empty; unknown expiry renders Okta's usual 5 */
    struct th_render_vars bare = {"9", NULL, NULL, NULL, -1};
    assert_string_equal(render(th_templates_find(set, "en", TH_CHANNEL_SMS), &bare),
                        "Hi   (): 9 / 9, 5 min");
    th_templates_free(set);
}

static void test_voice_escapes_sms_does_not(void **state)
{
    (void)state;
    struct th_template_spec specs[] = {
        {"en", TH_CHANNEL_VOICE, "<speak>Hello {{first_name}}, {{otp_spaced}}</speak>", "Joanna"},
        {"en", TH_CHANNEL_SMS, "Hello {{first_name}}", NULL},
    };
    struct th_templates *set = build(specs, 2);
    struct th_render_vars v = {"1<2", "<b>&'\"", NULL, NULL, 5};
    assert_string_equal(render(th_templates_find(set, "en", TH_CHANNEL_VOICE), &v),
                        "<speak>Hello &lt;b&gt;&amp;&apos;&quot;, 1, &lt;, 2</speak>");
    assert_string_equal(render(th_templates_find(set, "en", TH_CHANNEL_SMS), &v), "Hello <b>&'\"");
    assert_string_equal(th_template_voice_id(th_templates_find(set, "en", TH_CHANNEL_VOICE)),
                        "Joanna");
    assert_string_equal(th_template_voice_id(th_templates_find(set, "en", TH_CHANNEL_SMS)), "");
    th_templates_free(set);
}

static void test_build_errors(void **state)
{
    (void)state;
    struct th_templates *set = NULL;
    char err[256];
    struct th_template_spec unknown = {"en", TH_CHANNEL_SMS, "Code {{code}}", NULL};
    assert_int_equal(th_templates_build(&unknown, 1, &set, err, sizeof err), TH_E_TEMPLATE);
    assert_non_null(strstr(err, "{{code}}"));
    assert_non_null(strstr(err, "en/sms"));
    struct th_template_spec open = {"en", TH_CHANNEL_SMS, "Code {{otp", NULL};
    assert_int_equal(th_templates_build(&open, 1, &set, err, sizeof err), TH_E_TEMPLATE);
    assert_non_null(strstr(err, "unterminated"));
    struct th_template_spec lang = {"english", TH_CHANNEL_SMS, "x", NULL};
    assert_int_equal(th_templates_build(&lang, 1, &set, err, sizeof err), TH_E_TEMPLATE);
    char big[5000];
    memset(big, 'a', sizeof big - 1);
    big[sizeof big - 1] = '\0';
    struct th_template_spec huge = {"en", TH_CHANNEL_SMS, big, NULL};
    assert_int_equal(th_templates_build(&huge, 1, &set, err, sizeof err), TH_E_TEMPLATE);
    /* one bad spec fails the whole build, without leaking the good ones */
    struct th_template_spec mixed[] = {{"en", TH_CHANNEL_SMS, "ok {{otp}}", NULL},
                                       {"es", TH_CHANNEL_SMS, "{{nope}}", NULL}};
    assert_int_equal(th_templates_build(mixed, 2, &set, err, sizeof err), TH_E_TEMPLATE);
    th_templates_free(NULL);
}

static void test_duplicates_later_wins(void **state)
{
    (void)state;
    struct th_template_spec specs[] = {{"EN", TH_CHANNEL_SMS, "first {{otp}}", NULL},
                                       {"en", TH_CHANNEL_SMS, "second {{otp}}", NULL}};
    struct th_templates *set = build(specs, 2);
    assert_int_equal(th_templates_count(set), 1);
    struct th_render_vars v = {"1", NULL, NULL, NULL, 5};
    assert_string_equal(render(th_templates_find(set, "en", TH_CHANNEL_SMS), &v), "second 1");
    th_templates_free(set);
}

static void test_render_cap(void **state)
{
    (void)state;
    struct th_template_spec spec = {"en", TH_CHANNEL_SMS, "Your code is {{otp}}", NULL};
    struct th_templates *set = build(&spec, 1);
    struct th_buf b;
    th_buf_init(&b, 10);
    struct th_render_vars v = {"123456", NULL, NULL, NULL, 5};
    assert_int_equal(th_message_render(th_templates_find(set, "en", TH_CHANNEL_SMS), &v, &b),
                     TH_E_TOOBIG);
    assert_int_equal(b.len, 0); /* nothing half-rendered */
    th_buf_release(&b);
    th_templates_free(set);
}

static void test_chain(void **state)
{
    (void)state;
    struct th_template_spec specs[] = {
        {"en", TH_CHANNEL_SMS, "en sms", NULL},       {"es", TH_CHANNEL_SMS, "es sms", NULL},
        {"es-mx", TH_CHANNEL_SMS, "es-mx sms", NULL}, {"es", TH_CHANNEL_VOICE, "es voice", "Lupe"},
        {"fr", TH_CHANNEL_SMS, "fr sms", NULL},
    };
    struct th_templates *set = build(specs, 5);
    struct th_choice c;
    /* exact */
    th_message_choose(set, NULL, "es-mx", TH_CHANNEL_SMS, "en", true, &c);
    assert_int_equal(c.source, TH_SOURCE_TEMPLATE);
    assert_string_equal(c.language, "es-mx");
    /* raw locales are normalised too */
    th_message_choose(set, NULL, "ES_MX", TH_CHANNEL_SMS, "en", true, &c);
    assert_string_equal(c.language, "es-mx");
    /* language */
    th_message_choose(set, NULL, "es-ar", TH_CHANNEL_SMS, "en", true, &c);
    assert_string_equal(c.language, "es");
    th_message_choose(set, NULL, "es-mx", TH_CHANNEL_VOICE, "en", false, &c);
    assert_string_equal(c.language, "es");
    assert_int_equal(th_template_channel(c.tpl), TH_CHANNEL_VOICE);
    /* preferred before the request locale */
    th_message_choose(set, "fr-CA", "es-mx", TH_CHANNEL_SMS, "en", true, &c);
    assert_string_equal(c.language, "fr");
    /* default language */
    th_message_choose(set, NULL, "de-de", TH_CHANNEL_SMS, "en", true, &c);
    assert_string_equal(c.language, "en");
    th_message_choose(set, NULL, "not a locale", TH_CHANNEL_SMS, "en", true, &c);
    assert_string_equal(c.language, "en");
    /* no default match: Okta's text for SMS */
    th_message_choose(set, NULL, "de", TH_CHANNEL_SMS, "it", true, &c);
    assert_int_equal(c.source, TH_SOURCE_OKTA);
    assert_null(c.tpl);
    /* ... but never for voice: the built-in voice text */
    th_message_choose(set, NULL, "de", TH_CHANNEL_VOICE, "it", true, &c);
    assert_int_equal(c.source, TH_SOURCE_BUILTIN);
    assert_int_equal(th_template_channel(c.tpl), TH_CHANNEL_VOICE);
    /* no Okta text: built-in */
    th_message_choose(set, NULL, "de", TH_CHANNEL_SMS, "it", false, &c);
    assert_int_equal(c.source, TH_SOURCE_BUILTIN);
    assert_string_equal(c.language, "en");
    /* an empty set still ends in the built-in */
    th_message_choose(NULL, NULL, NULL, TH_CHANNEL_SMS, NULL, false, &c);
    assert_int_equal(c.source, TH_SOURCE_BUILTIN);
    th_templates_free(set);
}

static void test_builtins(void **state)
{
    (void)state;
    struct th_render_vars v = {"4821", NULL, NULL, NULL, 5};
    assert_string_equal(render(th_template_builtin(TH_CHANNEL_SMS), &v),
                        "Your verification code is 4821. It expires in 5 minutes.");
    v.expires_minutes = 1; /* "1 minute", not "1 minutes" */
    assert_string_equal(render(th_template_builtin(TH_CHANNEL_SMS), &v),
                        "Your verification code is 4821. It expires in 1 minute.");
    v.expires_minutes = 5;
    const char *voice = render(th_template_builtin(TH_CHANNEL_VOICE), &v);
    assert_non_null(strstr(voice, "<speak>"));
    /* the spaced code is spoken twice */
    const char *first = strstr(voice, "4, 8, 2, 1");
    assert_non_null(first);
    assert_non_null(strstr(first + 1, "4, 8, 2, 1"));
}

static void test_plural_forms(void **state)
{
    (void)state;
    struct th_template_spec specs[] = {
        {"en", TH_CHANNEL_SMS, "{{otp}} expires in {{expires_minutes:minute|minutes}}.", NULL},
        {"es", TH_CHANNEL_SMS, "{{otp}} caduca en {{ expires_minutes : minuto | minutos }}.", NULL},
        {"en", TH_CHANNEL_VOICE,
         "<speak>{{otp_spaced}}, {{expires_minutes:minute|minutes}}</speak>", NULL},
    };
    struct th_templates *set = build(specs, 3);
    const struct th_template *en = th_templates_find(set, "en", TH_CHANNEL_SMS);
    const struct th_template *es = th_templates_find(set, "es", TH_CHANNEL_SMS);
    struct th_render_vars v = {"42", NULL, NULL, NULL, 1};
    assert_string_equal(render(en, &v), "42 expires in 1 minute.");
    assert_string_equal(render(es, &v), "42 caduca en 1 minuto.");
    assert_string_equal(render(th_templates_find(set, "en", TH_CHANNEL_VOICE), &v),
                        "<speak>4, 2, 1 minute</speak>");
    v.expires_minutes = 2;
    assert_string_equal(render(en, &v), "42 expires in 2 minutes.");
    assert_string_equal(render(es, &v), "42 caduca en 2 minutos.");
    v.expires_minutes = -1; /* unknown: Okta's usual 5 */
    assert_string_equal(render(en, &v), "42 expires in 5 minutes.");
    th_templates_free(set);

    const char *bad[] = {
        "{{otp:a|b}}",                  /* only expires_minutes has a plural form */
        "{{expires_minutes:minute}}",   /* one word */
        "{{expires_minutes:|minutes}}", /* an empty word */
        "{{expires_minutes:minute|}}",  /* an empty word */
        "{{expires_minutes:a|b|c}}",    /* three */
        "{{expires_minutes:a|<b>}}",    /* markup */
        "{{expires_minutes:minute|minutesminutesminutesminutesminutes}}", /* over 32 bytes */
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        struct th_template_spec spec = {"en", TH_CHANNEL_SMS, bad[i], NULL};
        struct th_templates *none = NULL;
        char err[256] = "";
        assert_int_equal(th_templates_build(&spec, 1, &none, err, sizeof err), TH_E_TEMPLATE);
        assert_non_null(strstr(err, "en/sms"));
        assert_null(none);
    }
}

static void check_ok(th_channel ch, const char *body, const char *voice)
{
    struct th_template_spec spec = {"en", ch, body, voice};
    char err[256] = "";
    if (th_template_check(&spec, err, sizeof err) != TH_E_OK)
        fail_msg("refused '%s': %s", body, err);
}

static void check_bad(th_channel ch, const char *body, const char *voice, const char *why)
{
    struct th_template_spec spec = {"en", ch, body, voice};
    char err[256] = "";
    assert_int_equal(th_template_check(&spec, err, sizeof err), TH_E_TEMPLATE);
    if (!strstr(err, why))
        fail_msg("'%s': expected '%s' in '%s'", body, why, err);
}

static void test_template_check(void **state)
{
    (void)state;
    check_ok(TH_CHANNEL_SMS, "Code {{otp}}", NULL);
    check_ok(TH_CHANNEL_SMS, "Code @otp2 <b> & such", "");
    check_ok(TH_CHANNEL_VOICE, "<speak>Code {{otp_spaced}}</speak>", "Joanna");
    check_ok(TH_CHANNEL_VOICE,
             " <?xml version=\"1.0\"?>\n<!-- c --><speak xml:lang='en-US'>Code <break "
             "time=\"300ms\"/><say-as interpret-as=\"digits\">@otp</say-as>. &amp; &#233; "
             "&#xE9;<![CDATA[ <raw> ]]></speak>\n",
             NULL);
    check_bad(TH_CHANNEL_SMS, "Your code is ready", NULL, "{{otp}}");
    check_bad(TH_CHANNEL_SMS, "{{first_name}} {{expires_minutes}}", NULL, "never gives the code");
    check_bad(TH_CHANNEL_SMS, "Code {{code}}", NULL, "{{code}}"); /* as the build says */
    check_bad(TH_CHANNEL_SMS, "Code {{otp}}", "Joanna", "voice id");
    check_bad(TH_CHANNEL_VOICE, "Code {{otp}}", NULL, "outside <speak>");
    check_bad(TH_CHANNEL_VOICE, "<speak>Code {{otp}}", NULL, "<speak> is not closed");
    check_bad(TH_CHANNEL_VOICE, "<speak>{{otp}}<break></speak>", NULL, "does not close <break>");
    check_bad(TH_CHANNEL_VOICE, "<speak>{{otp}}</speak></speak>", NULL, "closes nothing");
    check_bad(TH_CHANNEL_VOICE, "<speak>{{otp}}</speak> again", NULL, "outside");
    check_bad(TH_CHANNEL_VOICE, "<say>{{otp}}</say>", NULL, "one <speak> element");
    check_bad(TH_CHANNEL_VOICE, "<speak>{{otp}}</speak><speak/>", NULL, "one <speak> element");
    check_bad(TH_CHANNEL_VOICE, "<speak>{{otp}} & more</speak>", NULL, "&amp;");
    check_bad(TH_CHANNEL_VOICE, "<speak>{{otp}} &nbsp;</speak>", NULL, "&amp;");
    check_bad(TH_CHANNEL_VOICE, "<speak>{{otp}} 1 < 2</speak>", NULL, "&lt;");
    check_bad(TH_CHANNEL_VOICE, "<speak>{{otp}}<break time=300ms/></speak>", NULL, "quoted");
    check_bad(TH_CHANNEL_VOICE, "<speak>{{otp}}<break time=\"3<\"/></speak>", NULL,
              "attribute value");
    check_bad(TH_CHANNEL_VOICE, "<speak a='1' a='2'>{{otp}}</speak>", NULL, "twice");
    check_bad(TH_CHANNEL_VOICE, "<speak>{{otp}}<break time=\"1s\"</speak>", NULL, "attribute");
    check_bad(TH_CHANNEL_VOICE, "<speak>{{otp}}<!-- open</speak>", NULL, "not closed");
    check_bad(TH_CHANNEL_VOICE, "", NULL, "never gives the code");
    check_bad(TH_CHANNEL_VOICE, "{{otp}}", NULL, "outside");
    /* nested too deep is refused, not overflowed */
    char deep[512] = "<speak>{{otp}}";
    for (int i = 0; i < 40; i++)
        strcat(deep, "<p>");
    check_bad(TH_CHANNEL_VOICE, deep, NULL, "too deep");
}

static void test_voice_lookup(void **state)
{
    (void)state;
    const char *name = NULL, *lang = NULL;
    assert_true(th_voice_lookup("JOANNA", &name, &lang));
    assert_string_equal(name, "Joanna");
    assert_string_equal(lang, "en-US");
    assert_true(th_voice_lookup("lupe", NULL, NULL));
    assert_false(th_voice_lookup("Jonna", &name, &lang));
    assert_false(th_voice_lookup("", NULL, NULL));
    assert_false(th_voice_lookup(NULL, NULL, NULL));
}

static void test_many_lookup(void **state)
{
    (void)state;
    enum { N = 300 };
    struct th_template_spec specs[N];
    static char langs[N][8], bodies[N][32];
    for (int i = 0; i < N; i++) {
        snprintf(langs[i], sizeof langs[i], "l%c%c", 'a' + i % 26, 'a' + (i / 26) % 26);
        snprintf(bodies[i], sizeof bodies[i], "body %d {{otp}}", i);
        specs[i] = (struct th_template_spec){langs[i], i % 2 ? TH_CHANNEL_VOICE : TH_CHANNEL_SMS,
                                             bodies[i], NULL};
    }
    struct th_templates *set = build(specs, N);
    assert_int_equal(th_templates_count(set), N);
    for (int i = 0; i < N; i++) {
        const struct th_template *t =
            th_templates_find(set, langs[i], i % 2 ? TH_CHANNEL_VOICE : TH_CHANNEL_SMS);
        assert_non_null(t);
        assert_string_equal(th_template_language(t), langs[i]);
        assert_null(th_templates_find(set, langs[i], i % 2 ? TH_CHANNEL_SMS : TH_CHANNEL_VOICE));
    }
    th_templates_free(set);
}

/* Garbage bodies must compile or be refused, never crash (run under valgrind/ASan). */
static void test_garbage_bodies(void **state)
{
    (void)state;
    srand(12345);
    static const char alphabet[] = "{}@otp2_ <>&x\xc3\xa9/=\"':|!-";
    for (int round = 0; round < 2000; round++) {
        char body[64];
        size_t n = (size_t)(rand() % 63);
        for (size_t i = 0; i < n; i++)
            body[i] = alphabet[rand() % (int)(sizeof alphabet - 1)];
        body[n] = '\0';
        struct th_template_spec spec = {"en", (th_channel)(round % 2), body, NULL};
        struct th_templates *set = NULL;
        char err[256];
        th_template_check(&spec, err, sizeof err); /* the SSML reader on anything */
        if (th_templates_build(&spec, 1, &set, err, sizeof err) == TH_E_OK) {
            struct th_buf b;
            th_buf_init(&b, 4096);
            struct th_render_vars v = {"12", "a", "b", "c", 1};
            assert_int_equal(
                th_message_render(th_templates_find(set, "en", (th_channel)(round % 2)), &v, &b),
                TH_E_OK);
            th_buf_release(&b);
            th_templates_free(set);
        }
    }
}

static void test_names(void **state)
{
    (void)state;
    th_channel ch;
    assert_int_equal(th_channel_parse("SMS", &ch), TH_E_OK);
    assert_int_equal(ch, TH_CHANNEL_SMS);
    assert_int_equal(th_channel_parse("voice", &ch), TH_E_OK);
    assert_int_equal(ch, TH_CHANNEL_VOICE);
    assert_int_equal(th_channel_parse("fax", &ch), TH_E_INVAL);
    assert_string_equal(th_channel_name(TH_CHANNEL_VOICE), "voice");
    assert_string_equal(th_source_name(TH_SOURCE_OKTA), "okta");
    assert_string_equal(th_source_name(TH_SOURCE_BUILTIN), "builtin");
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_locale_normalize),
        cmocka_unit_test(test_render_placeholders),
        cmocka_unit_test(test_voice_escapes_sms_does_not),
        cmocka_unit_test(test_build_errors),
        cmocka_unit_test(test_duplicates_later_wins),
        cmocka_unit_test(test_render_cap),
        cmocka_unit_test(test_chain),
        cmocka_unit_test(test_builtins),
        cmocka_unit_test(test_plural_forms),
        cmocka_unit_test(test_template_check),
        cmocka_unit_test(test_voice_lookup),
        cmocka_unit_test(test_many_lookup),
        cmocka_unit_test(test_garbage_bodies),
        cmocka_unit_test(test_names),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
