/*
 * Unit tests: the built-in language pack (src/message/pack.c), {{expires}} per language, the
 * template checks, SSML (ssml.c) and AWS's guidance format (awsitems.c).
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "message/message.h"

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

/* Okta's end-user languages (help.okta.com "Supported display languages"), and Basque. */
static const char *const okta_languages[] = {
    "cs", "da", "de", "el", "en",    "es", "eu", "fi", "fr", "hu", "id", "it", "ja",    "ko",
    "ms", "nb", "nl", "pl", "pt-br", "ro", "ru", "sv", "th", "tr", "uk", "vi", "zh-cn", "zh-tw",
};

/* Characters before the code in a rendered text (the code comes first, or nearly). */
static size_t chars_before(const char *text, const char *code)
{
    const char *at = strstr(text, code);
    assert_non_null(at);
    struct th_sms_info i;
    th_sms_measure(text, (size_t)(at - text), &i);
    return i.chars;
}

static void test_every_language_sms(void **state)
{
    (void)state;
    const struct th_templates *b = th_templates_builtin();
    assert_int_equal(th_pack_count(), sizeof okta_languages / sizeof okta_languages[0]);
    for (size_t i = 0; i < sizeof okta_languages / sizeof okta_languages[0]; i++) {
        const char *lang = okta_languages[i];
        const struct th_pack_lang *p = th_pack_find(lang);
        if (!p)
            fail_msg("no built-in %s", lang);
        const struct th_template *t = th_templates_find(b, lang, TH_CHANNEL_SMS);
        assert_non_null(t);
        assert_string_equal(th_template_body(t), p->sms);
        assert_false(th_template_uses_names(t));
        /* one segment with an 8-digit code, under every policy, for any validity to 99 */
        for (int enc = TH_SMS_AUTO; enc <= TH_SMS_UCS2; enc++) {
            const struct th_sms_info *info = th_template_sms_info(t, (th_sms_encoding)enc);
            if (info->segments != 1)
                fail_msg("%s/sms: %d segments (%s)", lang, info->segments,
                         th_sms_encoding_name((th_sms_encoding)enc));
            for (int m = 1; m <= 99; m++) {
                struct th_render_vars v = {"12345678", NULL, NULL, NULL, m, (th_sms_encoding)enc};
                const char *text = render(t, &v);
                struct th_sms_info r;
                th_sms_measure(text, strlen(text), &r);
                if (r.segments != 1)
                    fail_msg("%s/sms at %d minutes: %d segments: %s", lang, m, r.segments, text);
                char num[8];
                snprintf(num, sizeof num, "%d", m);
                assert_non_null(strstr(text, num));
                if (chars_before(text, "12345678") > 6)
                    fail_msg("%s/sms: the code is not first: %s", lang, text);
            }
        }
        /* the check passes without a warning, even at one segment at most */
        struct th_template_report rep;
        char msg[512];
        assert_int_equal(th_template_check(t, TH_SMS_AUTO, 1, &rep, msg, sizeof msg), TH_E_OK);
        if (rep.warnings)
            fail_msg("%s/sms: %s", lang, msg);
    }
}

static void test_every_language_voice(void **state)
{
    (void)state;
    const struct th_templates *b = th_templates_builtin();
    size_t voices = 0;
    for (size_t i = 0; i < th_pack_count(); i++) {
        const struct th_pack_lang *p = th_pack_at(i);
        const struct th_template *t = th_templates_find(b, p->tag, TH_CHANNEL_VOICE);
        if (!p->voice) {
            /* no voice: said so, and no template (the chain goes on, never a wrong voice) */
            assert_null(t);
            assert_null(p->voice_id);
            assert_non_null(p->note);
            continue;
        }
        voices++;
        assert_non_null(t);
        /* a voice AWS accepts, speaking the language (the check compares the two) */
        const struct th_voice *known = th_voice_find(p->voice_id);
        if (!known || !known->aws)
            fail_msg("%s: %s is not a voice AWS End User Messaging accepts", p->tag, p->voice_id);
        assert_string_equal(known->locale, p->voice_locale);
        assert_string_equal(th_template_voice_id(t), p->voice_id);
        assert_string_equal(p->engine, "standard");
        struct th_template_report rep;
        char msg[512];
        if (th_template_check(t, TH_SMS_AUTO, 1, &rep, msg, sizeof msg) != TH_E_OK || rep.warnings)
            fail_msg("%s/voice: %s", p->tag, msg);
        /* well-formed SSML, the code read digit by digit, twice */
        struct th_render_vars v = {"12345678", NULL, NULL, NULL, 10, TH_SMS_AUTO};
        const char *ssml = render(t, &v);
        char why[160];
        if (th_ssml_check(ssml, strlen(ssml), why, sizeof why) != TH_E_OK)
            fail_msg("%s/voice: %s", p->tag, why);
        const char *first = strstr(ssml, "1, 2, 3, 4, 5, 6, 7, 8");
        assert_non_null(first);
        assert_non_null(strstr(first + 1, "1, 2, 3, 4, 5, 6, 7, 8"));
        assert_null(strstr(ssml, "12345678"));
    }
    assert_int_equal(voices, 18);
    /* the ones Polly cannot speak, as documented */
    const char *none[] = {"cs", "el", "eu", "fi", "hu", "id", "ms", "th", "uk", "vi"};
    for (size_t i = 0; i < sizeof none / sizeof none[0]; i++)
        assert_null(th_pack_find(none[i])->voice);
    assert_string_equal(th_pack_find("ja")->voice_id, "Mizuki");
    assert_string_equal(th_pack_find("zh-tw")->voice_locale, "cmn-CN");
}

static void test_polly_voices(void **state)
{
    (void)state;
    assert_string_equal(th_voice_find("MIZUKI")->locale, "ja-JP");
    assert_string_equal(th_voice_find("joanna")->locale, "en-US");
    assert_string_equal(th_voice_find("MATTHEW")->name, "Matthew");
    assert_string_equal(th_voice_find("Zhiyu")->locale, "cmn-CN");
    assert_true(th_voice_find("lupe")->aws);
    assert_null(th_voice_find("Suvi")); /* neural-only: not in AWS's VoiceId list */
    assert_null(th_voice_find("Jonna"));
    assert_null(th_voice_find(""));
    assert_null(th_voice_find(NULL));
    assert_int_equal(th_voice_count(), 59); /* AWS End User Messaging's VoiceId enum */
}

struct unit_case {
    const char *lang;
    int n;
    const char *want;
};

static void test_expires_units(void **state)
{
    (void)state;
    const struct unit_case cases[] = {
        {"en", 1, "1 minute"},     {"en", 5, "5 minutes"},    {"en-gb", 10, "10 minutes"},
        {"de", 1, "1 Minute"},     {"de-at", 5, "5 Minuten"}, {"fr", 1, "1 minute"},
        {"fr", 2, "2 minutes"},    {"pt-br", 1, "1 minuto"},  {"pt-pt", 5, "5 minutos"},
        {"es", 1, "1 minuto"},     {"it", 10, "10 minuti"},   {"nl", 1, "1 minuut"},
        {"sv", 5, "5 minuter"},    {"da", 5, "5 minutter"},   {"nb", 1, "1 minutt"},
        {"no", 5, "5 minutter"},   {"el", 1, "1 λεπτό"},      {"el", 5, "5 λεπτά"},
        {"cs", 1, "1 minutu"},     {"cs", 3, "3 minuty"},     {"cs", 5, "5 minut"},
        {"cs", 22, "22 minut"},    {"pl", 1, "1 minutę"},     {"pl", 2, "2 minuty"},
        {"pl", 5, "5 minut"},      {"pl", 12, "12 minut"},    {"pl", 22, "22 minuty"},
        {"pl", 25, "25 minut"},    {"ru", 1, "1 минуту"},     {"ru", 3, "3 минуты"},
        {"ru", 5, "5 минут"},      {"ru", 11, "11 минут"},    {"ru", 21, "21 минуту"},
        {"ru", 22, "22 минуты"},   {"ru", 14, "14 минут"},    {"uk", 1, "1 хвилину"},
        {"uk", 4, "4 хвилини"},    {"uk", 10, "10 хвилин"},   {"ro", 1, "1 minut"},
        {"ro", 2, "2 minute"},     {"ro", 19, "19 minute"},   {"ro", 20, "20 de minute"},
        {"ro", 101, "101 minute"}, {"eu", 1, "minutu 1"},     {"eu", 10, "10 minutu"},
        {"fi", 1, "1 minuutin"},   {"hu", 5, "5 percig"},     {"tr", 5, "5 dakika"},
        {"ja", 10, "10分"},        {"ko", 10, "10분"},        {"zh-cn", 10, "10分钟"},
        {"zh-hans", 5, "5分钟"},   {"zh-tw", 10, "10分鐘"},   {"zh-hant-hk", 5, "5分鐘"},
        {"zh", 5, "5分钟"},        {"th", 5, "5 นาที"},        {"vi", 5, "5 phút"},
        {"id", 5, "5 menit"},      {"in", 5, "5 menit"},      {"ms", 5, "5 minit"},
        {"sw", 5, "5 min"},        {"", 5, "5 min"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        char out[64];
        th_message_expires(cases[i].lang, cases[i].n, out, sizeof out);
        if (strcmp(out, cases[i].want) != 0)
            fail_msg("%s %d: got '%s', want '%s'", cases[i].lang, cases[i].n, out, cases[i].want);
    }
    /* in a stored template: the template's language, and the bare number stays a number */
    struct th_template_spec spec = {"de", TH_CHANNEL_SMS,
                                    "{{otp}} gilt {{expires}} ({{expires_minutes}})", NULL};
    struct th_templates *set = NULL;
    char err[128];
    assert_int_equal(th_templates_build(&spec, 1, &set, err, sizeof err), TH_E_OK);
    struct th_render_vars v = {"42", NULL, NULL, NULL, 1, TH_SMS_AUTO};
    assert_string_equal(render(th_templates_at(set, 0), &v), "42 gilt 1 Minute (1)");
    th_templates_free(set);
}

struct ssml_case {
    const char *ssml;
    bool ok;
    const char *why; /* a part of the reason */
};

static void test_ssml(void **state)
{
    (void)state;
    static char deep[1024];
    strcpy(deep, "<speak>");
    for (int i = 0; i < 40; i++)
        strcat(deep, "<p>");
    strcat(deep, "x");
    for (int i = 0; i < 40; i++)
        strcat(deep, "</p>");
    strcat(deep, "</speak>");
    const struct ssml_case cases[] = {
        {"<speak>Hello</speak>", true, NULL},
        {"  <speak>Hi <break time=\"1s\"/> <say-as interpret-as='digits'>123</say-as></speak>\n",
         true, NULL},
        {"<speak><prosody rate='slow'>a <emphasis>b</emphasis> <amazon:effect "
         "phonation='soft'>c</amazon:effect></prosody> &amp; &lt; &#233; &#x41; <!-- note "
         "--></speak>",
         true, NULL},
        {"<speak><lang xml:lang=\"fr-FR\">oui</lang><s>x</s><w role=\"amazon:VB\">read</w><sub "
         "alias=\"x\">y</sub><phoneme alphabet=\"ipa\" ph=\"p\">p</phoneme><mark "
         "name=\"m\"/><amazon:domain name=\"news\">n</amazon:domain><amazon:breath/>"
         "<amazon:auto-breaths>z</amazon:auto-breaths> a > b</speak>",
         true, NULL},
        {"Hello", false, "outside"},
        {"", false, "no <speak>"},
        {"<p>Hi</p>", false, "one <speak>"},
        {"<speak>a</speak><speak>b</speak>", false, "one <speak>"},
        {"<speak><audio src=\"x\"/></speak>", false, "<audio>"},
        {"<speak><p>open</speak>", false, "does not close <p>"},
        {"<speak>open</speak></speak>", false, "closes nothing"},
        {"<speak>open", false, "<speak> is not closed"},
        {"<speak a='1' a='2'>x</speak>", false, "attribute a twice"},
        {"<speak>a & b</speak>", false, "'&'"},
        {"<speak>a < b</speak>", false, "'<'"},
        {"<speak><break time=1s/></speak>", false, "unquoted"},
        {"<speak><break time/></speak>", false, "without a value"},
        {"<speak><break time=\"1s/></speak>", false, "'<' in an attribute"},
        {"<speak><break time=\"1s/>", false, "unterminated"},
        {"<?xml version=\"1.0\"?><speak>x</speak>", false, "declarations"},
        {"<!DOCTYPE speak><speak>x</speak>", false, "declarations"},
        {"<speak><![CDATA[x]]></speak>", false, "declarations"},
        {"<speak>x <!-- open</speak>", false, "comment"},
        {"<speak>&nbsp;</speak>", false, "'&'"},
        {"<speak>x</speak> trailing", false, "outside"},
        {deep, false, "too deep"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        char why[160] = "";
        th_err e = th_ssml_check(cases[i].ssml, strlen(cases[i].ssml), why, sizeof why);
        if ((e == TH_E_OK) != cases[i].ok || (cases[i].why && !strstr(why, cases[i].why)))
            fail_msg("'%s': %s (%s)", cases[i].ssml, th_strerror(e), why);
    }
}

static const struct th_template *one(struct th_templates **set, const char *lang, th_channel ch,
                                     const char *body, const char *voice)
{
    struct th_template_spec spec = {lang, ch, body, voice};
    char err[256];
    *set = NULL;
    assert_int_equal(th_templates_build(&spec, 1, set, err, sizeof err), TH_E_OK);
    return th_templates_at(*set, 0);
}

static void test_check(void **state)
{
    (void)state;
    struct th_templates *set;
    struct th_template_report rep;
    char msg[512];
    /* AWS's guidance's own Spanish: one "ó" makes it UCS-2 and two segments */
    const struct th_template *t =
        one(&set, "es", TH_CHANNEL_SMS,
            "Su código de acceso de un solo uso del servicio AWS End User Messaging es @otp", NULL);
    assert_int_equal(th_template_check(t, TH_SMS_AUTO, 0, &rep, msg, sizeof msg), TH_E_OK);
    assert_int_equal(rep.sms.charset, TH_CHARSET_UCS2);
    assert_int_equal(rep.sms.segments, 2);
    assert_int_equal(rep.warnings, 1);
    assert_non_null(strstr(msg, "over one segment"));
    /* over message.max_sms_segments: an error */
    assert_int_equal(th_template_check(t, TH_SMS_AUTO, 1, &rep, msg, sizeof msg), TH_E_TEMPLATE);
    assert_non_null(strstr(msg, "max_sms_segments"));
    /* gsm7 makes it GSM-7 and one segment */
    assert_int_equal(th_template_check(t, TH_SMS_GSM7, 1, &rep, msg, sizeof msg), TH_E_OK);
    assert_int_equal(rep.sms.charset, TH_CHARSET_GSM7);
    assert_int_equal(rep.sms.segments, 1);
    assert_true(rep.rewritten);
    th_templates_free(set);
    /* a script gsm7 never touches: a note; names: a note */
    t = one(&set, "ru", TH_CHANNEL_SMS, "{{first_name}}, код {{otp}}", NULL);
    assert_int_equal(th_template_check(t, TH_SMS_GSM7, 1, &rep, msg, sizeof msg), TH_E_OK);
    assert_non_null(strstr(msg, "stays UCS-2"));
    assert_non_null(strstr(msg, "sample names"));
    th_templates_free(set);
    /* voice: a voice of another language is an error; an unknown or no voice a warning */
    t = one(&set, "fr", TH_CHANNEL_VOICE, "<speak>Votre code {{otp_spaced}}</speak>", "Joanna");
    assert_int_equal(th_template_check(t, TH_SMS_AUTO, 0, &rep, msg, sizeof msg), TH_E_TEMPLATE);
    assert_non_null(strstr(msg, "Joanna speaks en-US"));
    th_templates_free(set);
    t = one(&set, "fr-ca", TH_CHANNEL_VOICE, "<speak>Votre code {{otp_spaced}}</speak>", "CHANTAL");
    assert_int_equal(th_template_check(t, TH_SMS_AUTO, 0, &rep, msg, sizeof msg), TH_E_OK);
    assert_int_equal(rep.warnings, 0);
    th_templates_free(set);
    t = one(&set, "nn", TH_CHANNEL_VOICE, "<speak>{{otp_spaced}}</speak>", "Liv");
    assert_int_equal(th_template_check(t, TH_SMS_AUTO, 0, &rep, msg, sizeof msg), TH_E_OK);
    th_templates_free(set);
    t = one(&set, "fi", TH_CHANNEL_VOICE, "<speak>{{otp_spaced}}</speak>", "Suvi");
    assert_int_equal(th_template_check(t, TH_SMS_AUTO, 0, &rep, msg, sizeof msg), TH_E_OK);
    assert_int_equal(rep.warnings, 1);
    assert_non_null(strstr(msg, "not an Amazon Polly voice"));
    th_templates_free(set);
    t = one(&set, "en", TH_CHANNEL_VOICE, "<speak>{{otp_spaced}}</speak>", "");
    assert_int_equal(th_template_check(t, TH_SMS_AUTO, 0, &rep, msg, sizeof msg), TH_E_OK);
    assert_non_null(strstr(msg, "no voice"));
    th_templates_free(set);
    /* malformed SSML, checked as written (a name with '<' is escaped when rendered) */
    t = one(&set, "en", TH_CHANNEL_VOICE, "<speak>Hi {{first_name}} <b>{{otp}}</b></speak>",
            "Joanna");
    assert_int_equal(th_template_check(t, TH_SMS_AUTO, 0, &rep, msg, sizeof msg), TH_E_TEMPLATE);
    assert_non_null(strstr(msg, "<b>"));
    th_templates_free(set);
    t = one(&set, "en", TH_CHANNEL_VOICE, "Your code is {{otp_spaced}}", "Joanna");
    assert_int_equal(th_template_check(t, TH_SMS_AUTO, 0, &rep, msg, sizeof msg), TH_E_TEMPLATE);
    th_templates_free(set);
}

/* Items in the format of AWS's guidance (its sample data's shape, with our own words). */
static const char reference_items[] =
    "{\"Items\": ["
    "{\"id\": {\"S\": \"1\"}, \"messagetype\": {\"S\": \"sms\"}, \"language\": {\"S\": \"en\"},"
    " \"message\": {\"S\": \"Your sign-in code for Example Corp is @otp\"}},"
    "{\"id\": {\"S\": \"2\"}, \"messagetype\": {\"S\": \"voice call\"}, \"language\": {\"S\": "
    "\"en\"}, \"message\": {\"S\": \"<speak> <prosody rate='slow'> Your Example Corp code is "
    "<emphasis>@otp</emphasis>. <break time='0.5s'/> Once more, your code is "
    "<emphasis>@otp2</emphasis> <break time='0.5s'/><amazon:effect phonation='soft'>Goodbye."
    "</amazon:effect> </prosody> </speak>\"}, \"voiceid\": {\"S\": \"MATTHEW\"}},"
    "{\"id\": {\"S\": \"3\"}, \"messagetype\": {\"S\": \"voice call\"}, \"language\": {\"S\": "
    "\"es\"}, \"message\": {\"S\": \"<speak>Su código de Example Corp es <emphasis> @otp "
    "</emphasis> Repito, su código es <emphasis> @otp2 </emphasis></speak>\"}, \"voiceid\": "
    "{\"S\": \"MIA\"}},"
    "{\"id\": {\"S\": \"4\"}, \"messagetype\": {\"S\": \"sms\"}, \"language\": {\"S\": \"es\"},"
    " \"message\": {\"S\": \"Su código de acceso de Example Corp es @otp\"}}"
    "], \"Count\": 4, \"ScannedCount\": 4}";

static void build_items(const struct th_aws_items *it, struct th_templates **sets,
                        const struct th_template **tpls)
{
    for (size_t i = 0; i < it->n; i++)
        tpls[i] = one(&sets[i], it->items[i].language, it->items[i].channel, it->items[i].body,
                      it->items[i].voice_id);
}

static void test_aws_round_trip(void **state)
{
    (void)state;
    struct th_aws_items a, b;
    char err[256];
    assert_int_equal(
        th_aws_items_parse(reference_items, strlen(reference_items), &a, err, sizeof err), TH_E_OK);
    assert_int_equal(a.n, 4);
    assert_int_equal(a.items[1].channel, TH_CHANNEL_VOICE);
    assert_string_equal(a.items[1].voice_id, "Matthew");
    assert_string_equal(a.items[2].voice_id, "Mia");
    assert_string_equal(a.items[0].voice_id, "");
    struct th_templates *sets[4];
    const struct th_template *tpls[4];
    build_items(&a, sets, tpls);
    /* rendered as the guidance's Lambda renders them: voice digit by digit, SMS as is */
    struct th_render_vars v = {"482913", NULL, NULL, NULL, 5, TH_SMS_AUTO};
    char text[1024];
    struct th_buf buf;
    th_buf_init(&buf, sizeof text);
    assert_int_equal(th_message_render(tpls[1], &v, &buf), TH_E_OK);
    const char *first = strstr(th_buf_str(&buf), "4, 8, 2, 9, 1, 3");
    assert_non_null(first);
    assert_non_null(strstr(first + 1, "4, 8, 2, 9, 1, 3"));
    th_buf_reset(&buf);
    assert_int_equal(th_message_render(tpls[0], &v, &buf), TH_E_OK);
    assert_string_equal(th_buf_str(&buf), "Your sign-in code for Example Corp is 482913");
    th_buf_release(&buf);
    /* they pass the checks (Polly's tags, Matthew speaks English, Mia Spanish) */
    for (int i = 0; i < 4; i++) {
        struct th_template_report rep;
        if (th_template_check(tpls[i], TH_SMS_AUTO, 1, &rep, err, sizeof err) != TH_E_OK)
            fail_msg("item %d: %s", i + 1, err);
    }
    /* out and back in: the same items */
    char *json = NULL;
    assert_int_equal(th_aws_items_format(tpls, 4, NULL, NULL, &json), TH_E_OK);
    assert_non_null(strstr(json, "\"messagetype\": {\n        \"S\": \"voice call\""));
    assert_non_null(strstr(json, "\"S\": \"MATTHEW\""));
    assert_non_null(strstr(json, "\"Count\": 4"));
    assert_int_equal(th_aws_items_parse(json, strlen(json), &b, err, sizeof err), TH_E_OK);
    assert_int_equal(b.n, a.n);
    for (size_t i = 0; i < a.n; i++) {
        assert_string_equal(b.items[i].language, a.items[i].language);
        assert_int_equal(b.items[i].channel, a.items[i].channel);
        assert_string_equal(b.items[i].body, a.items[i].body);
        assert_string_equal(b.items[i].voice_id, a.items[i].voice_id);
    }
    free(json);
    th_aws_items_release(&b);
    th_aws_items_release(&a);
    for (int i = 0; i < 4; i++)
        th_templates_free(sets[i]);
}

static void test_aws_shapes_and_errors(void **state)
{
    (void)state;
    struct th_aws_items it;
    char err[256];
    const char *ok[] = {
        /* a bare array, one item, a batch-write-item file, plain strings, upper-case tags */
        "[{\"language\": {\"S\": \"de\"}, \"messagetype\": {\"S\": \"sms\"}, \"message\": {\"S\": "
        "\"Code @otp\"}}]",
        "{\"language\": {\"S\": \"DE\"}, \"messagetype\": {\"S\": \"SMS\"}, \"message\": {\"S\": "
        "\"Code @otp\"}}",
        "{\"okta-templates\": [{\"PutRequest\": {\"Item\": {\"language\": {\"S\": \"de\"}, "
        "\"messagetype\": {\"S\": \"sms\"}, \"message\": {\"S\": \"Code @otp\"}}}}]}",
        "[{\"language\": \"de\", \"messagetype\": \"sms\", \"message\": \"Code @otp\"}]",
    };
    for (size_t i = 0; i < sizeof ok / sizeof ok[0]; i++) {
        if (th_aws_items_parse(ok[i], strlen(ok[i]), &it, err, sizeof err) != TH_E_OK)
            fail_msg("%s: %s", ok[i], err);
        assert_int_equal(it.n, 1);
        assert_string_equal(it.items[0].language, "de");
        assert_string_equal(it.items[0].body, "Code @otp");
        th_aws_items_release(&it);
    }
    struct {
        const char *json, *why;
    } bad[] = {
        {"{", "line"},
        {"42", "expected"},
        {"[{\"language\": {\"S\": \"de\"}, \"message\": {\"S\": \"x\"}}]", "needs language"},
        {"[{\"language\": {\"N\": \"1\"}, \"messagetype\": {\"S\": \"sms\"}, \"message\": "
         "{\"S\": \"x\"}}]",
         "needs language"},
        {"[{\"language\": {\"S\": \"english\"}, \"messagetype\": {\"S\": \"sms\"}, "
         "\"message\": {\"S\": \"x\"}}]",
         "not a language tag"},
        {"[{\"language\": {\"S\": \"de\"}, \"messagetype\": {\"S\": \"fax\"}, \"message\": "
         "{\"S\": \"x\"}}]",
         "neither sms nor voice call"},
        {"[{\"language\": {\"S\": \"de\"}, \"messagetype\": {\"S\": \"sms\"}, \"message\": "
         "{\"S\": \"x\"}}, {\"language\": {\"S\": \"DE\"}, \"messagetype\": {\"S\": \"sms\"}, "
         "\"message\": {\"S\": \"y\"}}]",
         "both de/sms"},
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        th_err e = th_aws_items_parse(bad[i].json, strlen(bad[i].json), &it, err, sizeof err);
        if (e == TH_E_OK || !strstr(err, bad[i].why))
            fail_msg("%s: %s (%s)", bad[i].json, th_strerror(e), err);
        assert_int_equal(it.n, 0);
    }
    /* more than 1000 items */
    size_t cap = 1100 * 80;
    char *many = malloc(cap);
    strcpy(many, "[");
    for (int i = 0; i < 1001; i++)
        strcat(many, i ? ",{\"message\":\"x\"}" : "{\"message\":\"x\"}");
    strcat(many, "]");
    assert_int_equal(th_aws_items_parse(many, strlen(many), &it, err, sizeof err), TH_E_TOOBIG);
    free(many);
}

static void test_aws_body(void **state)
{
    (void)state;
    struct th_templates *set;
    struct th_buf b;
    char why[160];
    th_buf_init(&b, 4096);
    const struct th_template *t =
        one(&set, "en", TH_CHANNEL_VOICE, "<speak>{{otp_spaced}}. Again: {{otp}}.</speak>", "Ivy");
    assert_int_equal(th_template_aws_body(t, &b, why, sizeof why), TH_E_OK);
    assert_string_equal(th_buf_str(&b), "<speak>@otp. Again: @otp2.</speak>");
    th_templates_free(set);
    th_buf_reset(&b);
    t = one(&set, "de", TH_CHANNEL_SMS, "{{otp}} gilt {{expires}} ({{expires_minutes}})", NULL);
    assert_int_equal(th_template_aws_body(t, &b, why, sizeof why), TH_E_OK);
    assert_string_equal(th_buf_str(&b), "@otp gilt 5 Minuten (5)");
    th_templates_free(set);
    struct {
        th_channel ch;
        const char *body, *why;
    } bad[] = {
        {TH_CHANNEL_SMS, "Hi {{first_name}} {{otp}}", "names the user"},
        {TH_CHANNEL_SMS, "{{otp_spaced}}", "in an SMS"},
        {TH_CHANNEL_VOICE, "<speak>@otp @otp2 @otp</speak>", "more than twice"},
        {TH_CHANNEL_SMS, "mail @otpx: {{otp}}", "holds \"@otp\""},
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        th_buf_reset(&b);
        assert_int_equal(th_buf_appends(&b, "kept"), TH_E_OK);
        t = one(&set, "en", bad[i].ch, bad[i].body, NULL);
        assert_int_equal(th_template_aws_body(t, &b, why, sizeof why), TH_E_TEMPLATE);
        if (!strstr(why, bad[i].why))
            fail_msg("%s: %s", bad[i].body, why);
        assert_string_equal(th_buf_str(&b), "kept");
        th_templates_free(set);
    }
    th_buf_release(&b);
    /* the whole pack can be written in the guidance's format */
    const struct th_templates *pack = th_templates_builtin();
    size_t n = th_templates_count(pack);
    const struct th_template **all = calloc(n, sizeof *all);
    for (size_t i = 0; i < n; i++)
        all[i] = th_templates_at(pack, i);
    char *json = NULL;
    assert_int_equal(th_aws_items_format(all, n, NULL, NULL, &json), TH_E_OK);
    struct th_aws_items it;
    assert_int_equal(th_aws_items_parse(json, strlen(json), &it, why, sizeof why), TH_E_OK);
    assert_int_equal(it.n, n);
    th_aws_items_release(&it);
    free(json);
    free(all);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_every_language_sms),
        cmocka_unit_test(test_every_language_voice),
        cmocka_unit_test(test_polly_voices),
        cmocka_unit_test(test_expires_units),
        cmocka_unit_test(test_ssml),
        cmocka_unit_test(test_check),
        cmocka_unit_test(test_aws_round_trip),
        cmocka_unit_test(test_aws_shapes_and_errors),
        cmocka_unit_test(test_aws_body),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
