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
        {"es", TH_CHANNEL_SMS, "Codigo @otp, otra vez @otp2, no @otpx, fin@otp", NULL},
        {"es", TH_CHANNEL_VOICE, "<speak>Codigo @otp, otra vez @otp2</speak>", "Lupe"},
    };
    struct th_templates *set = build(specs, 3);
    struct th_render_vars v = {"123456", "Ana", "Lopez", "ana@example.com", 4, TH_SMS_AUTO};
    assert_string_equal(render(th_templates_find(set, "en", TH_CHANNEL_SMS), &v),
                        "Hi Ana Lopez (ana@example.com): 123456 / 1, 2, 3, 4, 5, 6, 4 min");
    /* AWS's guidance: @otp and @otp2 are the code as is in SMS, digit by digit in voice */
    assert_string_equal(render(th_templates_find(set, "es", TH_CHANNEL_SMS), &v),
                        "Codigo 123456, otra vez 123456, no @otpx, fin123456");
    assert_string_equal(render(th_templates_find(set, "es", TH_CHANNEL_VOICE), &v),
                        "<speak>Codigo 1, 2, 3, 4, 5, 6, otra vez 1, 2, 3, 4, 5, 6</speak>");
    /* missing names render empty; unknown expiry renders Okta's usual 5 */
    struct th_render_vars bare = {"9", NULL, NULL, NULL, -1, TH_SMS_AUTO};
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
    struct th_render_vars v = {"1<2", "<b>&'\"", NULL, NULL, 5, TH_SMS_AUTO};
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
    struct th_render_vars v = {"1", NULL, NULL, NULL, 5, TH_SMS_AUTO};
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
    struct th_render_vars v = {"123456", NULL, NULL, NULL, 5, TH_SMS_AUTO};
    assert_int_equal(th_message_render(th_templates_find(set, "en", TH_CHANNEL_SMS), &v, &b),
                     TH_E_TOOBIG);
    assert_int_equal(b.len, 0); /* nothing half-rendered */
    th_buf_release(&b);
    th_templates_free(set);
}

static void choose(const struct th_templates *set, const char *pref, const char *locale,
                   th_channel ch, const char *def, bool pack, bool okta, struct th_choice *c)
{
    struct th_chain chain = {set, pref, locale, def, pack, okta};
    th_message_choose(&chain, ch, c);
}

/* The stored-template chain, the pack off: what it was before the pack. */
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
    choose(set, NULL, "es-mx", TH_CHANNEL_SMS, "en", false, true, &c);
    assert_int_equal(c.source, TH_SOURCE_TEMPLATE);
    assert_string_equal(c.language, "es-mx");
    /* raw locales are normalised too */
    choose(set, NULL, "ES_MX", TH_CHANNEL_SMS, "en", false, true, &c);
    assert_string_equal(c.language, "es-mx");
    /* language */
    choose(set, NULL, "es-ar", TH_CHANNEL_SMS, "en", false, true, &c);
    assert_string_equal(c.language, "es");
    choose(set, NULL, "es-mx", TH_CHANNEL_VOICE, "en", false, false, &c);
    assert_string_equal(c.language, "es");
    assert_int_equal(th_template_channel(c.tpl), TH_CHANNEL_VOICE);
    /* preferred before the request locale */
    choose(set, "fr-CA", "es-mx", TH_CHANNEL_SMS, "en", false, true, &c);
    assert_string_equal(c.language, "fr");
    /* default language */
    choose(set, NULL, "de-de", TH_CHANNEL_SMS, "en", false, true, &c);
    assert_string_equal(c.language, "en");
    assert_false(c.last_resort);
    choose(set, NULL, "not a locale", TH_CHANNEL_SMS, "en", false, true, &c);
    assert_string_equal(c.language, "en");
    /* no default match: Okta's text for SMS */
    choose(set, NULL, "de", TH_CHANNEL_SMS, "it", false, true, &c);
    assert_int_equal(c.source, TH_SOURCE_OKTA);
    assert_null(c.tpl);
    /* ... but never for voice: the built-in voice text */
    choose(set, NULL, "de", TH_CHANNEL_VOICE, "it", false, true, &c);
    assert_int_equal(c.source, TH_SOURCE_BUILTIN);
    assert_int_equal(th_template_channel(c.tpl), TH_CHANNEL_VOICE);
    assert_true(c.last_resort);
    /* no Okta text: built-in */
    choose(set, NULL, "de", TH_CHANNEL_SMS, "it", false, false, &c);
    assert_int_equal(c.source, TH_SOURCE_BUILTIN);
    assert_string_equal(c.language, "en");
    assert_true(c.last_resort);
    /* an empty set still ends in the built-in */
    choose(NULL, NULL, NULL, TH_CHANNEL_SMS, NULL, false, false, &c);
    assert_int_equal(c.source, TH_SOURCE_BUILTIN);
    th_templates_free(set);
}

/* The chain with the pack: stored templates win per tag, the pack fills every other language. */
static void test_chain_pack(void **state)
{
    (void)state;
    struct th_template_spec specs[] = {
        {"fr", TH_CHANNEL_SMS, "stored fr {{otp}}", NULL},
        {"de-at", TH_CHANNEL_SMS, "stored de-at {{otp}}", NULL},
        {"zh", TH_CHANNEL_SMS, "stored zh {{otp}}", NULL},
    };
    struct th_templates *set = build(specs, 3);
    struct th_choice c;
    /* a stored template overrides the built-in of its language */
    choose(set, NULL, "fr-FR", TH_CHANNEL_SMS, "en", true, true, &c);
    assert_int_equal(c.source, TH_SOURCE_TEMPLATE);
    assert_string_equal(c.language, "fr");
    /* a stored regional template wins for its region; the built-in language for others */
    choose(set, NULL, "de-AT", TH_CHANNEL_SMS, "en", true, true, &c);
    assert_string_equal(c.language, "de-at");
    choose(set, NULL, "de-DE", TH_CHANNEL_SMS, "en", true, true, &c);
    assert_int_equal(c.source, TH_SOURCE_BUILTIN);
    assert_string_equal(c.language, "de");
    assert_false(c.last_resort);
    /* the built-in French voice: no stored fr voice */
    choose(set, NULL, "fr", TH_CHANNEL_VOICE, "en", true, true, &c);
    assert_int_equal(c.source, TH_SOURCE_BUILTIN);
    assert_string_equal(c.language, "fr");
    assert_string_equal(th_template_voice_id(c.tpl), "Lea");
    /* Traditional Chinese readers get the zh-tw text before a stored "zh" (script unknown) */
    choose(set, NULL, "zh-Hant-TW", TH_CHANNEL_SMS, "en", true, true, &c);
    assert_string_equal(c.language, "zh-tw");
    choose(set, NULL, "zh-HK", TH_CHANNEL_SMS, "en", true, true, &c);
    assert_string_equal(c.language, "zh-tw");
    choose(set, NULL, "zh-Hans", TH_CHANNEL_SMS, "en", true, true, &c);
    assert_string_equal(c.language, "zh-cn");
    choose(set, NULL, "zh-CN", TH_CHANNEL_SMS, "en", true, true, &c);
    assert_string_equal(c.language, "zh-cn");
    /* ... but a request for exactly "zh" gets the admin's "zh" */
    choose(set, NULL, "zh", TH_CHANNEL_SMS, "en", true, true, &c);
    assert_string_equal(c.language, "zh");
    assert_int_equal(c.source, TH_SOURCE_TEMPLATE);
    choose(NULL, NULL, "zh", TH_CHANNEL_SMS, "en", true, true, &c);
    assert_string_equal(c.language, "zh-cn");
    /* Portuguese: pt-PT → pt → pt-br; Norwegian; Indonesian's old code; underscores; case */
    choose(set, NULL, "pt-PT", TH_CHANNEL_SMS, "en", true, true, &c);
    assert_string_equal(c.language, "pt-br");
    choose(set, NULL, "pt_BR", TH_CHANNEL_SMS, "en", true, true, &c);
    assert_string_equal(c.language, "pt-br");
    choose(set, NULL, "no", TH_CHANNEL_SMS, "en", true, true, &c);
    assert_string_equal(c.language, "nb");
    choose(set, NULL, "nn-NO", TH_CHANNEL_SMS, "en", true, true, &c);
    assert_string_equal(c.language, "nb");
    choose(set, NULL, "in", TH_CHANNEL_SMS, "en", true, true, &c);
    assert_string_equal(c.language, "id");
    choose(set, NULL, "EN-US", TH_CHANNEL_SMS, "en", true, true, &c);
    assert_string_equal(c.language, "en");
    choose(set, NULL, "nl-NL", TH_CHANNEL_SMS, "en", true, true, &c);
    assert_string_equal(c.language, "nl");
    /* unknown and invalid locales: the default language (built-in), before Okta's text */
    choose(set, NULL, "sw-KE", TH_CHANNEL_SMS, "en", true, true, &c);
    assert_int_equal(c.source, TH_SOURCE_BUILTIN);
    assert_string_equal(c.language, "en");
    choose(set, NULL, "x!", TH_CHANNEL_SMS, "de", true, true, &c);
    assert_string_equal(c.language, "de");
    /* a default language outside the pack: Okta's text, then the last resort */
    choose(set, NULL, "sw", TH_CHANNEL_SMS, "sw", true, true, &c);
    assert_int_equal(c.source, TH_SOURCE_OKTA);
    choose(set, NULL, "sw", TH_CHANNEL_SMS, "sw", true, false, &c);
    assert_true(c.last_resort);
    /* no Polly voice for Greek: the voice goes on along the chain, never a wrong-language voice
       reading Greek; the SMS is Greek */
    choose(set, NULL, "el-GR", TH_CHANNEL_VOICE, "en", true, false, &c);
    assert_string_equal(c.language, "en");
    assert_string_equal(th_template_voice_id(c.tpl), "Joanna");
    choose(set, NULL, "el-GR", TH_CHANNEL_SMS, "en", true, false, &c);
    assert_string_equal(c.language, "el");
    th_templates_free(set);
}

/* A user's preference comes before the request's locale. */
static void test_chain_preference(void **state)
{
    (void)state;
    struct th_pref_spec ps[] = {{"00uABCdef123", "pt-BR", "voice"},
                                {"Ana.Lopez@Example.com", "de", ""}};
    struct th_prefs *prefs = NULL;
    char err[256];
    assert_int_equal(th_prefs_build(ps, 2, &prefs, err, sizeof err), TH_E_OK);
    assert_int_equal(th_prefs_count(prefs), 2);
    /* by userId, and by login without case */
    const struct th_pref *p = th_prefs_find(prefs, "00uabcDEF123", "nobody@example.com");
    assert_non_null(p);
    assert_string_equal(p->language, "pt-br");
    assert_string_equal(p->channel, "voice");
    /* the Okta locale is English, the user reads Portuguese */
    struct th_choice c;
    choose(NULL, p->language, "EN-US", TH_CHANNEL_SMS, "en", true, true, &c);
    assert_string_equal(c.language, "pt-br");
    p = th_prefs_find(prefs, "00uOther", "ana.lopez@example.com");
    assert_non_null(p);
    assert_string_equal(p->language, "de");
    assert_null(th_prefs_find(prefs, "00uOther", "someone@example.com"));
    assert_null(th_prefs_find(prefs, NULL, NULL));
    /* a preferred language with no text for the channel goes on to the locale */
    choose(NULL, "el", "fr", TH_CHANNEL_VOICE, "en", true, false, &c);
    assert_string_equal(c.language, "fr");
    th_prefs_free(prefs);
    /* a later row for the same user (any case) wins; bad rows are refused */
    struct th_pref_spec dup[] = {{"u@x.com", "fr", ""}, {"U@X.COM", "it", "sms"}};
    assert_int_equal(th_prefs_build(dup, 2, &prefs, err, sizeof err), TH_E_OK);
    assert_int_equal(th_prefs_count(prefs), 1);
    assert_string_equal(th_prefs_find(prefs, "u@x.com", NULL)->language, "it");
    th_prefs_free(prefs);
    struct th_pref_spec bad[][1] = {{{"u", "english", ""}},
                                    {{"", "en", ""}},
                                    {{" u", "en", ""}},
                                    {{"u\n", "en", ""}},
                                    {{"u", "en", "fax"}}};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        prefs = NULL;
        assert_int_equal(th_prefs_build(bad[i], 1, &prefs, err, sizeof err), TH_E_INVAL);
        assert_null(prefs);
    }
    th_prefs_free(NULL);
}

static void cands(const char *locale, const char *want)
{
    char out[TH_LOCALE_CANDIDATES_MAX][TH_LOCALE_MAX], got[128] = "";
    size_t n = th_locale_candidates(locale, out, TH_LOCALE_CANDIDATES_MAX);
    for (size_t i = 0; i < n; i++) {
        strcat(got, i ? " " : "");
        strcat(got, out[i]);
    }
    assert_string_equal(got, want);
}

static void test_locale_candidates(void **state)
{
    (void)state;
    cands("EN-US", "en-us en");
    cands("pt_PT", "pt-pt pt pt-br");
    cands("pt", "pt pt-br");
    cands("zh-Hant-TW", "zh-hant-tw zh-hant zh-tw zh");
    cands("zh-TW", "zh-tw zh");
    cands("zh-HK", "zh-hk zh-tw zh");
    cands("zh-Hans-CN", "zh-hans-cn zh-hans zh-cn zh");
    cands("zh-Hans-TW", "zh-hans-tw zh-hans zh-cn zh");
    cands("zh", "zh zh-cn");
    cands("nb-NO", "nb-no nb no");
    cands("no", "no nb");
    cands("nn", "nn nb");
    cands("in-ID", "in-id in id");
    cands("sr-Latn-RS", "sr-latn-rs sr-latn sr");
    cands("", "");
    cands("english", "");
}

static void test_builtins(void **state)
{
    (void)state;
    struct th_render_vars v = {"4821", NULL, NULL, NULL, 5, TH_SMS_AUTO};
    assert_string_equal(render(th_template_builtin(TH_CHANNEL_SMS), &v),
                        "4821 is your verification code. It expires in 5 minutes.");
    v.expires_minutes = 1; /* "1 minute", not "1 minutes" */
    assert_string_equal(render(th_template_builtin(TH_CHANNEL_SMS), &v),
                        "4821 is your verification code. It expires in 1 minute.");
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
    struct th_render_vars v = {"42", NULL, NULL, NULL, 1, TH_SMS_AUTO};
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

    /* one renderer for both: {{expires}} is the pack's unit in the template's language, the
     * plural form the admin's own two words; AWS's guidance gets Okta's five minutes */
    struct th_template_spec both[] = {
        {"de", TH_CHANNEL_SMS, "{{otp}}: {{expires}} ({{expires_minutes:Minute|Minuten}})", NULL},
        {"pl", TH_CHANNEL_SMS, "{{otp}}: {{expires}} / {{expires_minutes:minuta|minut}}", NULL},
    };
    set = build(both, 2);
    const struct th_template *de = th_templates_find(set, "de", TH_CHANNEL_SMS);
    const struct th_template *pl = th_templates_find(set, "pl", TH_CHANNEL_SMS);
    v.expires_minutes = 1;
    assert_string_equal(render(de, &v), "42: 1 Minute (1 Minute)");
    v.expires_minutes = 3; /* Polish has three forms, the plural form two */
    assert_string_equal(render(pl, &v), "42: 3 minuty / 3 minut");
    struct th_buf aws;
    th_buf_init(&aws, 1024);
    char why[128];
    assert_int_equal(th_template_aws_body(de, &aws, why, sizeof why), TH_E_OK);
    assert_string_equal(th_buf_str(&aws), "@otp: 5 Minuten (5 Minuten)");
    th_buf_release(&aws);
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

/* What `templates set` does: build (placeholders), then th_template_check. */
static th_err check(th_channel ch, const char *body, const char *voice, char *err, size_t errlen)
{
    struct th_template_spec spec = {"en", ch, body, voice};
    struct th_templates *one = NULL;
    th_err e = th_templates_build(&spec, 1, &one, err, errlen);
    if (e != TH_E_OK)
        return e;
    struct th_template_report rep;
    e = th_template_check(th_templates_at(one, 0), TH_SMS_AUTO, 0, &rep, err, errlen);
    th_templates_free(one);
    return e;
}

static void check_ok(th_channel ch, const char *body, const char *voice)
{
    char err[512] = "";
    if (check(ch, body, voice, err, sizeof err) != TH_E_OK)
        fail_msg("refused '%s': %s", body, err);
}

static void check_bad(th_channel ch, const char *body, const char *voice, const char *why)
{
    char err[512] = "";
    assert_int_equal(check(ch, body, voice, err, sizeof err), TH_E_TEMPLATE);
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
             " <!-- c --><speak xml:lang='en-US'>Code <break time=\"300ms\"/><say-as "
             "interpret-as=\"digits\">@otp</say-as>. &amp; &#233; &#xE9;</speak>\n",
             NULL);
    /* Twilio puts the document's inside in its own <Say>: no declaration, no CDATA */
    check_bad(TH_CHANNEL_VOICE, "<?xml version=\"1.0\"?><speak>{{otp}}</speak>", NULL,
              "not allowed");
    check_bad(TH_CHANNEL_VOICE, "<speak>{{otp}}<![CDATA[ <raw> ]]></speak>", NULL, "not allowed");
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
    check_bad(TH_CHANNEL_VOICE, "<speak>{{otp}}<audio src='x'/></speak>", NULL, "Amazon Polly");
    /* every finding, not only the first */
    check_bad(TH_CHANNEL_SMS, "No code", "Joanna", "@otp2) in it; a voice id is for voice");
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
    const struct th_voice *v = th_voice_find("JOANNA");
    assert_non_null(v);
    assert_string_equal(v->name, "Joanna");
    assert_string_equal(v->locale, "en-US");
    assert_true(v->aws);
    assert_non_null(th_voice_find("lupe"));
    assert_null(th_voice_find("Jonna"));
    assert_null(th_voice_find(""));
    assert_null(th_voice_find(NULL));
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
        if (th_templates_build(&spec, 1, &set, err, sizeof err) == TH_E_OK) {
            struct th_template_report rep; /* the SSML reader on anything */
            th_template_check(th_templates_at(set, 0), TH_SMS_AUTO, 1, &rep, err, sizeof err);
            struct th_buf b;
            th_buf_init(&b, 4096);
            struct th_render_vars v = {"12", "a", "b", "c", 1, TH_SMS_AUTO};
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
        cmocka_unit_test(test_chain_pack),
        cmocka_unit_test(test_chain_preference),
        cmocka_unit_test(test_locale_candidates),
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
