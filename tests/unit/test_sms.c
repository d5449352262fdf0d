/*
 * Unit tests: SMS encodings (src/message/sms.c). Segment counts are checked against the GSM 03.38
 * tables (3GPP TS 23.038) by hand: 160 septets in one segment, 153 per part when concatenated,
 * extension characters two septets that never straddle two parts; UCS-2 70 / 67 UTF-16 units,
 * a surrogate pair never split.
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

/* head, n copies of the UTF-8 character c, then tail (NULL: none) into buf. */
static const char *rep(char *buf, const char *head, const char *c, int n, const char *tail)
{
    buf[0] = '\0';
    strcat(buf, head ? head : "");
    for (int i = 0; i < n; i++)
        strcat(buf, c);
    strcat(buf, tail ? tail : "");
    return buf;
}

struct seg_case {
    const char *what;
    const char *head, *c;
    int n;
    const char *tail;
    th_sms_charset charset;
    size_t chars, units;
    int segments;
};

static void test_segments_table(void **state)
{
    (void)state;
    static char h1[1024], h2[1024], h3[1024], h4[1024];
    rep(h1, NULL, "a", 152, "^");
    rep(h2, NULL, "a", 69, NULL);
    rep(h3, NULL, "a", 70, NULL);
    rep(h4, NULL, "ą", 66, "😀");
    const struct seg_case cases[] = {
        {"empty", "", "", 0, NULL, TH_CHARSET_GSM7, 0, 0, 1},
        {"160 basic septets: one segment", NULL, "a", 160, NULL, TH_CHARSET_GSM7, 160, 160, 1},
        {"161: two", NULL, "a", 161, NULL, TH_CHARSET_GSM7, 161, 161, 2},
        {"153 x 2 = 306: two", NULL, "a", 306, NULL, TH_CHARSET_GSM7, 306, 306, 2},
        {"307: three", NULL, "a", 307, NULL, TH_CHARSET_GSM7, 307, 307, 3},
        {"80 euro signs = 160 septets: one", NULL, "€", 80, NULL, TH_CHARSET_GSM7, 80, 160, 1},
        /* 162 septets: part one takes 76 € (152), the 77th would be 154 > 153 */
        {"81 euro signs: two", NULL, "€", 81, NULL, TH_CHARSET_GSM7, 81, 162, 2},
        /* 152 a + ^ + 152 a = 306 septets, two parts by arithmetic, but ^ (escape + code) does
           not fit part one's last septet: a + ^ starts part two, whose 154 > 153 */
        {"escape pair never split", h1, "a", 152, NULL, TH_CHARSET_GSM7, 305, 306, 3},
        {"every extension character counts two", NULL, "^{}\\[~]|€\f", 1, NULL, TH_CHARSET_GSM7, 10,
         20, 1},
        /* the whole basic table, 0x00 to 0x7F less the escape, in table order */
        {"every basic character counts one", NULL,
         "@£$¥èéùìòÇ\nØø\rÅåΔ_ΦΓΛΩΠΨΣΘΞÆæßÉ !\"#¤%&'()*+,-./0123456789:;<=>?"
         "¡ABCDEFGHIJKLMNOPQRSTUVWXYZÄÖÑÜ§¿abcdefghijklmnopqrstuvwxyzäöñüà",
         1, NULL, TH_CHARSET_GSM7, 127, 127, 1},
        {"small c cedilla is not GSM-7", "Ça ", "ç", 1, NULL, TH_CHARSET_UCS2, 4, 4, 1},
        {"small Greek letters are not", NULL, "ω", 1, NULL, TH_CHARSET_UCS2, 1, 1, 1},
        {"backtick is not", NULL, "`", 1, NULL, TH_CHARSET_UCS2, 1, 1, 1},
        {"70 UCS-2 units: one", NULL, "ą", 70, NULL, TH_CHARSET_UCS2, 70, 70, 1},
        {"71: two", NULL, "ą", 71, NULL, TH_CHARSET_UCS2, 71, 71, 2},
        {"67 x 2 = 134: two", NULL, "ą", 134, NULL, TH_CHARSET_UCS2, 134, 134, 2},
        {"135: three", NULL, "ą", 135, NULL, TH_CHARSET_UCS2, 135, 135, 3},
        {"one accent makes the whole text UCS-2", h2, "ą", 1, NULL, TH_CHARSET_UCS2, 70, 70, 1},
        {"... and 71 characters two segments", h3, "ą", 1, NULL, TH_CHARSET_UCS2, 71, 71, 2},
        {"35 emoji = 70 units: one", NULL, "😀", 35, NULL, TH_CHARSET_UCS2, 35, 70, 1},
        {"36 emoji = 72 units: two", NULL, "😀", 36, NULL, TH_CHARSET_UCS2, 36, 72, 2},
        /* 66 ą + emoji + 66 ą = 134 units, two parts by arithmetic; the pair does not fit
           part one's 67th unit, so part two has 2 + 65 and the last ą starts part three */
        {"surrogate pair never split", h4, "ą", 66, NULL, TH_CHARSET_UCS2, 133, 134, 3},
        {"bytes that are not UTF-8 count as U+FFFD", "ab", "\xff", 1, NULL, TH_CHARSET_UCS2, 3, 3,
         1},
        {"a truncated sequence too", "ab", "\xc3", 1, NULL, TH_CHARSET_UCS2, 3, 3, 1},
        {"an overlong NUL too", NULL, "\xc0\x80", 1, NULL, TH_CHARSET_UCS2, 2, 2, 1},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        const struct seg_case *k = &cases[i];
        char text[8192];
        rep(text, k->head, k->c, k->n, k->tail);
        struct th_sms_info info;
        th_sms_measure(text, strlen(text), &info);
        if (info.charset != k->charset || info.chars != k->chars || info.units != k->units ||
            info.segments != k->segments)
            fail_msg("%s: got %s %zu chars %zu units %d segments, want %s %zu %zu %d", k->what,
                     th_sms_charset_name(info.charset), info.chars, info.units, info.segments,
                     th_sms_charset_name(k->charset), k->chars, k->units, k->segments);
    }
}

static const char *prep(th_sms_encoding enc, const char *in, bool *rewritten)
{
    static char out[1024];
    struct th_buf b;
    th_buf_init(&b, sizeof out - 1);
    assert_int_equal(th_sms_prepare(enc, in, strlen(in), &b, rewritten), TH_E_OK);
    snprintf(out, sizeof out, "%s", th_buf_str(&b));
    th_buf_release(&b);
    return out;
}

struct prep_case {
    th_sms_encoding enc;
    const char *in, *out;
    bool rewritten;
};

static void test_prepare(void **state)
{
    (void)state;
    const struct prep_case cases[] = {
        /* auto: typographic punctuation only, and only when that makes the text GSM-7 */
        {TH_SMS_AUTO, "Don’t “quote” – it’s ok…", "Don't \"quote\" - it's ok...", true},
        {TH_SMS_AUTO, "code\u00a0:\u202f1234", "code : 1234", true},
        {TH_SMS_AUTO, "Zażółć – 1234", "Zażółć – 1234", false},
        {TH_SMS_AUTO, "plain GSM-7 é ß", "plain GSM-7 é ß", false},
        {TH_SMS_AUTO, "kod już", "kod już", false},
        /* gsm7: Latin letters lose what GSM-7 lacks, when the whole text then fits */
        {TH_SMS_GSM7, "Zażółć gęślą jaźń", "Zazolc gesla jazn", true},
        {TH_SMS_GSM7, "Łódź", "Lodz", true},
        {TH_SMS_GSM7, "čeština: ověřovací kód", "cestina: overovaci kod", true},
        {TH_SMS_GSM7, "Expiră în 10 minute, ș ț Ș Ț ş ţ", "Expira in 10 minute, s t S T s t", true},
        {TH_SMS_GSM7, "doğrulama kodunuz geçerlidir, İstanbul ı",
         "dogrulama kodunuz gecerlidir, "
         "Istanbul i",
         true},
        {TH_SMS_GSM7, "Mã có hiệu lực trong 10 phút, Đà Nẵng, ơ ư",
         "Ma co hieu luc trong 10 "
         "phut, Dà Nang, o u",
         true},
        {TH_SMS_GSM7, "código de verificação", "codigo de verificacao", true},
        {TH_SMS_GSM7, "Ça été très œuvre", "Ça été très oeuvre", true},
        {TH_SMS_GSM7, "ellenőrző kódja", "ellenorzo kodja", true},
        {TH_SMS_GSM7, "e\xcc\x81t\xc3\xa9", "eté", true}, /* NFD: the combining accent goes */
        {TH_SMS_GSM7, "Grüße, Åsa, Ñandú", "Grüße, Åsa, Ñandu", true},
        /* other scripts stay as written: never half transliterated */
        {TH_SMS_GSM7, "Κωδικός 1234", "Κωδικός 1234", false},
        {TH_SMS_GSM7, "ваш код — 1234", "ваш код — 1234", false},
        {TH_SMS_GSM7, "Łódź 認証", "Łódź 認証", false},
        {TH_SMS_GSM7, "คือรหัส", "คือรหัส", false},
        /* ucs2: as written */
        {TH_SMS_UCS2, "Don’t – Łódź", "Don’t – Łódź", false},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        bool rw = !cases[i].rewritten;
        const char *got = prep(cases[i].enc, cases[i].in, &rw);
        if (strcmp(got, cases[i].out) != 0 || rw != cases[i].rewritten)
            fail_msg("%s '%s': got '%s' (rewritten %d)", th_sms_encoding_name(cases[i].enc),
                     cases[i].in, got, rw);
        struct th_sms_info info;
        th_sms_measure(got, strlen(got), &info);
        if (rw)
            assert_int_equal(info.charset, TH_CHARSET_GSM7);
    }
    /* a full buffer: an error, and nothing half written */
    struct th_buf b;
    th_buf_init(&b, 8);
    bool rw;
    assert_int_equal(th_buf_appends(&b, "ab"), TH_E_OK);
    assert_int_equal(th_sms_prepare(TH_SMS_GSM7, "Łódź Łódź", strlen("Łódź Łódź"), &b, &rw),
                     TH_E_TOOBIG);
    assert_string_equal(th_buf_str(&b), ""); /* failed whole (th_buf's sticky error) */
    assert_int_equal(th_buf_err(&b), TH_E_TOOBIG);
    th_buf_release(&b);
}

/* Rendering applies the policy to the final text (names included). */
static void test_render_policy(void **state)
{
    (void)state;
    struct th_template_spec spec = {"pl", TH_CHANNEL_SMS, "Cześć {{first_name}}: {{otp}}", NULL};
    struct th_templates *set = NULL;
    char err[256];
    assert_int_equal(th_templates_build(&spec, 1, &set, err, sizeof err), TH_E_OK);
    const struct th_template *t = th_templates_find(set, "pl", TH_CHANNEL_SMS);
    struct th_render_vars v = {"123456", "Małgorzata", NULL, NULL, 5, TH_SMS_GSM7};
    struct th_buf b;
    th_buf_init(&b, 256);
    assert_int_equal(th_message_render(t, &v, &b), TH_E_OK);
    assert_string_equal(th_buf_str(&b), "Czesc Malgorzata: 123456");
    th_buf_reset(&b);
    v.sms_encoding = TH_SMS_AUTO;
    assert_int_equal(th_message_render(t, &v, &b), TH_E_OK);
    assert_string_equal(th_buf_str(&b), "Cześć Małgorzata: 123456");
    th_buf_release(&b);
    /* measured when built, per policy */
    assert_int_equal(th_template_sms_info(t, TH_SMS_AUTO)->charset, TH_CHARSET_UCS2);
    assert_int_equal(th_template_sms_info(t, TH_SMS_GSM7)->charset, TH_CHARSET_GSM7);
    assert_true(th_template_uses_names(t));
    th_templates_free(set);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_segments_table),
        cmocka_unit_test(test_prepare),
        cmocka_unit_test(test_render_policy),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
