/*
 * The built-in language pack: an SMS and (where Amazon Polly has a voice) a voice template for
 * every language of Okta's end-user interface, the unit {{expires}} renders in each, and the
 * Polly voices AWS End User Messaging accepts.
 *
 * The languages: Okta's "Supported display languages" (help.okta.com, End user languages: the
 * Dashboard, the Sign-In Widget and Okta Verify) and the Sign-In Widget's supportedLanguages
 * (config.json, 7.x), plus Basque, which the widget ships. None is written right to left.
 *
 * Every SMS text puts the code first, then its validity, and fits ONE segment with an 8-digit
 * code and any validity up to 99 minutes (tests/unit/test_message.c checks each). Texts in
 * Latin-script languages whose letters GSM-7 lacks are UCS-2 and were written to fit 70
 * characters; message.sms_encoding = gsm7 makes them GSM-7.
 *
 * Voices: the voice must be one that AWS End User Messaging's SendVoiceMessage takes (its VoiceId
 * list) and that Twilio offers as Polly.<Name>, speaking the text's language. Where there is
 * none, the pack has no voice template for that language, and a voice call goes on along the
 * locale chain (to message.default_language's voice) — never a voice of another language reading
 * this one's text. docs/languages.md lists the choices.
 */
#include <stdio.h>
#include <string.h>
#include <strings.h>

#include "common/util.h"
#include "message/internal.h"

#define BR_SHORT "<break time=\"300ms\"/>"
#define BR_LONG  "<break time=\"1s\"/>"
#define NO_POLLY                                                                                   \
    "no Amazon Polly voice for this language in AWS End User Messaging's VoiceId list: voice "     \
    "calls use message.default_language's voice template"

static const struct th_pack_lang pack[] = {
    {"cs", "Czech", "{{otp}} je váš ověřovací kód. Platí {{expires}}.", NULL, NULL, NULL, NULL,
     NO_POLLY},
    {"da", "Danish", "{{otp}} er din bekræftelseskode. Den udløber om {{expires}}.",
     "<speak>Din bekræftelseskode er " BR_SHORT "{{otp_spaced}}. " BR_LONG
     "Jeg gentager: {{otp_spaced}}.</speak>",
     "Naja", "da-DK", "standard", NULL},
    {"de", "German", "{{otp}} ist Ihr Bestätigungscode. Er ist {{expires}} gültig.",
     "<speak>Ihr Bestätigungscode lautet " BR_SHORT "{{otp_spaced}}. " BR_LONG
     "Ich wiederhole: {{otp_spaced}}.</speak>",
     "Vicki", "de-DE", "standard", NULL},
    {"el", "Greek", "{{otp}} είναι ο κωδικός επαλήθευσής σας. Ισχύει για {{expires}}.", NULL, NULL,
     NULL, NULL, NO_POLLY},
    {"en", "English", "{{otp}} is your verification code. It expires in {{expires}}.",
     "<speak>Your verification code is " BR_SHORT "{{otp_spaced}}. " BR_LONG
     "Again, your code is {{otp_spaced}}.</speak>",
     "Joanna", "en-US", "standard", NULL},
    {"es", "Spanish", "{{otp}} es su código de verificación. Caduca en {{expires}}.",
     "<speak>Su código de verificación es " BR_SHORT "{{otp_spaced}}. " BR_LONG
     "Repito, su código es {{otp_spaced}}.</speak>",
     "Lupe", "es-US", "standard",
     "Lupe speaks US (Latin American) Spanish; a stored es-es template can name Lucia or "
     "Conchita (Castilian)"},
    {"eu", "Basque", "{{otp}} da zure egiaztapen-kodea, eta {{expires}} barru iraungiko da.", NULL,
     NULL, NULL, NULL, NO_POLLY},
    {"fi", "Finnish", "{{otp}} on vahvistuskoodisi. Se vanhenee {{expires}} kuluttua.", NULL, NULL,
     NULL, NULL,
     "Polly's Finnish voice (Suvi) is neural-only and not in AWS End User Messaging's VoiceId "
     "list: voice calls use message.default_language's voice template"},
    {"fr", "French", "{{otp}} est votre code de vérification. Il expire dans {{expires}}.",
     "<speak>Votre code de vérification est " BR_SHORT "{{otp_spaced}}. " BR_LONG
     "Je répète : {{otp_spaced}}.</speak>",
     "Lea", "fr-FR", "standard", NULL},
    {"hu", "Hungarian", "{{otp}} az Ön ellenőrző kódja. {{expires}} érvényes.", NULL, NULL, NULL,
     NULL, NO_POLLY},
    {"id", "Indonesian", "{{otp}} adalah kode verifikasi Anda. Berlaku selama {{expires}}.", NULL,
     NULL, NULL, NULL, NO_POLLY},
    {"it", "Italian", "{{otp}} è il tuo codice di verifica. Scade tra {{expires}}.",
     "<speak>Il tuo codice di verifica è " BR_SHORT "{{otp_spaced}}. " BR_LONG
     "Ripeto: {{otp_spaced}}.</speak>",
     "Bianca", "it-IT", "standard", NULL},
    {"ja", "Japanese", "{{otp}}は認証コードです。{{expires}}間有効です。",
     "<speak>認証コードは " BR_SHORT "{{otp_spaced}} です。" BR_LONG
     "もう一度言います。{{otp_spaced}} です。</speak>",
     "Mizuki", "ja-JP", "standard", NULL},
    {"ko", "Korean", "인증 코드 {{otp}}. {{expires}} 동안 유효합니다.",
     "<speak>인증 코드는 " BR_SHORT "{{otp_spaced}} 입니다. " BR_LONG
     "다시 한 번 말씀드립니다. {{otp_spaced}} 입니다.</speak>",
     "Seoyeon", "ko-KR", "standard", NULL},
    {"ms", "Malay", "{{otp}} ialah kod pengesahan anda. Sah selama {{expires}}.", NULL, NULL, NULL,
     NULL, NO_POLLY},
    {"nb", "Norwegian Bokmål", "{{otp}} er bekreftelseskoden din. Den utløper om {{expires}}.",
     "<speak>Bekreftelseskoden din er " BR_SHORT "{{otp_spaced}}. " BR_LONG
     "Jeg gjentar: {{otp_spaced}}.</speak>",
     "Liv", "nb-NO", "standard", NULL},
    {"nl", "Dutch", "{{otp}} is uw verificatiecode. Deze verloopt over {{expires}}.",
     "<speak>Uw verificatiecode is " BR_SHORT "{{otp_spaced}}. " BR_LONG
     "Ik herhaal: {{otp_spaced}}.</speak>",
     "Lotte", "nl-NL", "standard", NULL},
    {"pl", "Polish", "{{otp}} to Twój kod weryfikacyjny. Ważny przez {{expires}}.",
     "<speak>Twój kod weryfikacyjny to " BR_SHORT "{{otp_spaced}}. " BR_LONG
     "Powtarzam: {{otp_spaced}}.</speak>",
     "Ewa", "pl-PL", "standard", NULL},
    {"pt-br", "Portuguese (Brazil)",
     "{{otp}} é o seu código de verificação. Expira em {{expires}}.",
     "<speak>O seu código de verificação é " BR_SHORT "{{otp_spaced}}. " BR_LONG
     "Repetindo: {{otp_spaced}}.</speak>",
     "Camila", "pt-BR", "standard",
     "also used for pt and pt-PT requests when no pt template is stored"},
    {"ro", "Romanian", "{{otp}} este codul dvs. de verificare. Expiră în {{expires}}.",
     "<speak>Codul dumneavoastră de verificare este " BR_SHORT "{{otp_spaced}}. " BR_LONG
     "Repet: {{otp_spaced}}.</speak>",
     "Carmen", "ro-RO", "standard", NULL},
    {"ru", "Russian", "{{otp}} — ваш код подтверждения. Действует {{expires}}.",
     "<speak>Ваш код подтверждения: " BR_SHORT "{{otp_spaced}}. " BR_LONG
     "Повторяю: {{otp_spaced}}.</speak>",
     "Tatyana", "ru-RU", "standard", NULL},
    {"sv", "Swedish", "{{otp}} är din verifieringskod. Den gäller i {{expires}}.",
     "<speak>Din verifieringskod är " BR_SHORT "{{otp_spaced}}. " BR_LONG
     "Jag upprepar: {{otp_spaced}}.</speak>",
     "Astrid", "sv-SE", "standard", NULL},
    {"th", "Thai", "{{otp}} คือรหัสยืนยันของคุณ ใช้ได้ภายใน {{expires}}", NULL, NULL, NULL, NULL,
     NO_POLLY},
    {"tr", "Turkish", "{{otp}} doğrulama kodunuzdur. {{expires}} geçerlidir.",
     "<speak>Doğrulama kodunuz: " BR_SHORT "{{otp_spaced}}. " BR_LONG
     "Tekrar ediyorum: {{otp_spaced}}.</speak>",
     "Filiz", "tr-TR", "standard", NULL},
    {"uk", "Ukrainian", "{{otp}} — ваш код підтвердження. Дійсний {{expires}}.", NULL, NULL, NULL,
     NULL, NO_POLLY},
    {"vi", "Vietnamese", "{{otp}} là mã xác minh của bạn. Mã có hiệu lực trong {{expires}}.", NULL,
     NULL, NULL, NULL, NO_POLLY},
    {"zh-cn", "Chinese (Simplified)", "{{otp}}是您的验证码，{{expires}}内有效。",
     "<speak>您的验证码是 " BR_SHORT "{{otp_spaced}}。" BR_LONG
     "再说一遍，您的验证码是 {{otp_spaced}}。</speak>",
     "Zhiyu", "cmn-CN", "standard", NULL},
    {"zh-tw", "Chinese (Traditional)", "{{otp}}是您的驗證碼，{{expires}}內有效。",
     "<speak>您的验证码是 " BR_SHORT "{{otp_spaced}}。" BR_LONG
     "再说一遍，您的验证码是 {{otp_spaced}}。</speak>",
     "Zhiyu", "cmn-CN", "standard",
     "Polly has no Taiwanese Mandarin voice: Zhiyu speaks Mandarin (mainland accent), reading "
     "the Simplified text she is made for; the words heard are the same"},
};

size_t th_pack_count(void)
{
    return TH_ARRAY_LEN(pack);
}

const struct th_pack_lang *th_pack_at(size_t i)
{
    return i < TH_ARRAY_LEN(pack) ? &pack[i] : NULL;
}

const struct th_pack_lang *th_pack_find(const char *tag)
{
    for (size_t i = 0; tag && i < TH_ARRAY_LEN(pack); i++)
        if (strcmp(pack[i].tag, tag) == 0)
            return &pack[i];
    return NULL;
}

size_t th_msg_pack_specs(struct th_template_spec *out, size_t max)
{
    size_t n = 0;
    for (size_t i = 0; i < TH_ARRAY_LEN(pack); i++) {
        if (n < max)
            out[n] = (struct th_template_spec){pack[i].tag, TH_CHANNEL_SMS, pack[i].sms, NULL};
        n++;
        if (!pack[i].voice)
            continue;
        if (n < max)
            out[n] = (struct th_template_spec){pack[i].tag, TH_CHANNEL_VOICE, pack[i].voice,
                                               pack[i].voice_id};
        n++;
    }
    return n;
}

/* ---- {{expires}}: the unit in each language, with its plural rule (Unicode CLDR) ---- */

enum plural {
    PL_OTHER,    /* one form whatever the number: ja ko zh th vi id ms tr hu fi */
    PL_ONE,      /* 1 → one, else other: en de nl sv da nb it es el eu */
    PL_ZERO_ONE, /* 0 and 1 → one: fr, pt */
    PL_CS,       /* 1 one, 2–4 few, else other: cs */
    PL_EAST,     /* n%10 = 1 (not 11) one, n%10 = 2–4 (not 12–14) few, else many: ru uk */
    PL_PL,       /* 1 one, n%10 = 2–4 (not 12–14) few, else many: pl */
    PL_RO        /* 1 one, 0 or n%100 = 1–19 few, else other ("20 de minute"): ro */
};

/*
 * The forms as they read in the pack's sentence, case included ("Platí 5 minut", accusative;
 * "5 minuutin kuluttua", genitive). '#' is where the number goes.
 */
struct th_msg_units {
    const char *lang;
    enum plural rule;
    const char *one, *few, *many, *other;
};

static const struct th_msg_units units[] = {
    {"cs", PL_CS, "# minutu", "# minuty", NULL, "# minut"},
    {"da", PL_ONE, "# minut", NULL, NULL, "# minutter"},
    {"de", PL_ONE, "# Minute", NULL, NULL, "# Minuten"},
    {"el", PL_ONE, "# λεπτό", NULL, NULL, "# λεπτά"},
    {"en", PL_ONE, "# minute", NULL, NULL, "# minutes"},
    {"es", PL_ONE, "# minuto", NULL, NULL, "# minutos"},
    {"eu", PL_ONE, "minutu #", NULL, NULL, "# minutu"}, /* "minutu 1", "10 minutu" */
    {"fi", PL_OTHER, NULL, NULL, NULL, "# minuutin"},
    {"fr", PL_ZERO_ONE, "# minute", NULL, NULL, "# minutes"},
    {"hu", PL_OTHER, NULL, NULL, NULL, "# percig"},
    {"id", PL_OTHER, NULL, NULL, NULL, "# menit"},
    {"it", PL_ONE, "# minuto", NULL, NULL, "# minuti"},
    {"ja", PL_OTHER, NULL, NULL, NULL, "#分"},
    {"ko", PL_OTHER, NULL, NULL, NULL, "#분"},
    {"ms", PL_OTHER, NULL, NULL, NULL, "# minit"},
    {"nb", PL_ONE, "# minutt", NULL, NULL, "# minutter"},
    {"nl", PL_ONE, "# minuut", NULL, NULL, "# minuten"},
    {"pl", PL_PL, "# minutę", "# minuty", "# minut", NULL},
    {"pt", PL_ZERO_ONE, "# minuto", NULL, NULL, "# minutos"},
    {"ro", PL_RO, "# minut", "# minute", NULL, "# de minute"},
    {"ru", PL_EAST, "# минуту", "# минуты", "# минут", NULL},
    {"sv", PL_ONE, "# minut", NULL, NULL, "# minuter"},
    {"th", PL_OTHER, NULL, NULL, NULL, "# นาที"},
    {"tr", PL_OTHER, NULL, NULL, NULL, "# dakika"},
    {"uk", PL_EAST, "# хвилину", "# хвилини", "# хвилин", NULL},
    {"vi", PL_OTHER, NULL, NULL, NULL, "# phút"},
    {"zh-cn", PL_OTHER, NULL, NULL, NULL, "#分钟"},
    {"zh-tw", PL_OTHER, NULL, NULL, NULL, "#分鐘"},
};

const struct th_msg_units *th_msg_units_find(const char *tag)
{
    char cands[TH_LOCALE_CANDIDATES_MAX][TH_LOCALE_MAX];
    size_t n = th_locale_candidates(tag, cands, TH_LOCALE_CANDIDATES_MAX);
    for (size_t c = 0; c < n; c++)
        for (size_t i = 0; i < TH_ARRAY_LEN(units); i++)
            if (strcmp(units[i].lang, cands[c]) == 0)
                return &units[i];
    return NULL;
}

static const char *pick(const struct th_msg_units *u, int n)
{
    int m10 = n % 10, m100 = n % 100;
    switch (u->rule) {
    case PL_OTHER:
        return u->other;
    case PL_ONE:
        return n == 1 ? u->one : u->other;
    case PL_ZERO_ONE:
        return n == 0 || n == 1 ? u->one : u->other;
    case PL_CS:
        return n == 1 ? u->one : n >= 2 && n <= 4 ? u->few : u->other;
    case PL_EAST:
        if (m10 == 1 && m100 != 11)
            return u->one;
        return m10 >= 2 && m10 <= 4 && (m100 < 12 || m100 > 14) ? u->few : u->many;
    case PL_PL:
        if (n == 1)
            return u->one;
        return m10 >= 2 && m10 <= 4 && (m100 < 12 || m100 > 14) ? u->few : u->many;
    case PL_RO:
        if (n == 1)
            return u->one;
        return n == 0 || (m100 >= 1 && m100 <= 19) ? u->few : u->other;
    }
    return u->other;
}

void th_msg_units_format(const struct th_msg_units *u, int n, char *out, size_t outlen)
{
    if (!u) {
        snprintf(out, outlen, "%d min", n);
        return;
    }
    const char *form = pick(u, n);
    const char *hash = strchr(form, '#');
    snprintf(out, outlen, "%.*s%d%s", (int)(hash - form), form, n, hash + 1);
}

/*
 * ---- Amazon Polly voices: the one list (templates set and check, the pack's test, Twilio) ----
 *
 * Each voice with the language it speaks and whether AWS End User Messaging's SendVoiceMessage
 * takes it as VoiceId (its enum); Twilio offers each as Polly.<Name>. Today every voice here is
 * in both; a voice only Twilio offers would be added with aws = false (templates check then
 * warns that AWS would refuse it).
 */
static const struct th_voice voices[] = {
    {"Amy", "en-GB", true},      {"Astrid", "sv-SE", true},      {"Bianca", "it-IT", true},
    {"Brian", "en-GB", true},    {"Camila", "pt-BR", true},      {"Carla", "it-IT", true},
    {"Carmen", "ro-RO", true},   {"Celine", "fr-FR", true},      {"Chantal", "fr-CA", true},
    {"Conchita", "es-ES", true}, {"Cristiano", "pt-PT", true},   {"Dora", "is-IS", true},
    {"Emma", "en-GB", true},     {"Enrique", "es-ES", true},     {"Ewa", "pl-PL", true},
    {"Filiz", "tr-TR", true},    {"Geraint", "en-GB-WLS", true}, {"Giorgio", "it-IT", true},
    {"Gwyneth", "cy-GB", true},  {"Hans", "de-DE", true},        {"Ines", "pt-PT", true},
    {"Ivy", "en-US", true},      {"Jacek", "pl-PL", true},       {"Jan", "pl-PL", true},
    {"Joanna", "en-US", true},   {"Joey", "en-US", true},        {"Justin", "en-US", true},
    {"Karl", "is-IS", true},     {"Kendra", "en-US", true},      {"Kimberly", "en-US", true},
    {"Lea", "fr-FR", true},      {"Liv", "nb-NO", true},         {"Lotte", "nl-NL", true},
    {"Lucia", "es-ES", true},    {"Lupe", "es-US", true},        {"Mads", "da-DK", true},
    {"Maja", "pl-PL", true},     {"Marlene", "de-DE", true},     {"Mathieu", "fr-FR", true},
    {"Matthew", "en-US", true},  {"Maxim", "ru-RU", true},       {"Mia", "es-MX", true},
    {"Miguel", "es-US", true},   {"Mizuki", "ja-JP", true},      {"Naja", "da-DK", true},
    {"Nicole", "en-AU", true},   {"Penelope", "es-US", true},    {"Raveena", "en-IN", true},
    {"Ricardo", "pt-BR", true},  {"Ruben", "nl-NL", true},       {"Russell", "en-AU", true},
    {"Salli", "en-US", true},    {"Seoyeon", "ko-KR", true},     {"Takumi", "ja-JP", true},
    {"Tatyana", "ru-RU", true},  {"Vicki", "de-DE", true},       {"Vitoria", "pt-BR", true},
    {"Zeina", "arb", true},      {"Zhiyu", "cmn-CN", true},
};

const struct th_voice *th_voice_find(const char *voice_id)
{
    for (size_t i = 0; voice_id && i < TH_ARRAY_LEN(voices); i++)
        if (strcasecmp(voices[i].name, voice_id) == 0)
            return &voices[i];
    return NULL;
}

size_t th_voice_count(void)
{
    return TH_ARRAY_LEN(voices);
}
