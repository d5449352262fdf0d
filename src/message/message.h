/*
 * Messages: the template set, the built-in language pack, the locale chain, rendering, SMS
 * encodings (GSM-7 / UCS-2 segments) and user language preferences. Pure: no I/O, no global
 * state but the immutable built-in pack (built once, on first use).
 *
 * A template body is text with placeholders:
 *   {{otp}}             the code as sent by Okta
 *   {{otp_spaced}}      the code's characters separated by ", " (so a voice reads them one by one)
 *   {{first_name}} {{last_name}} {{login}}
 *   {{expires_minutes}} whole minutes until the code expires (rounded up, at least 1): a number
 *   {{expires}}         the same with its unit, in the template's language and grammatical number:
 *                       "1 minute", "5 minutes", "5 Minuten", "5 minut", "5分钟" ("5 min" for a
 *                       language the pack has no unit for)
 *   {{expires_minutes:minute|minutes}}
 *                       the number, a space, then the first word when it is 1 and the second
 *                       otherwise ("1 minuto", "5 minutos"): an admin's own two forms, for a
 *                       language whose plural takes no more than two
 * and, for templates imported from AWS's Okta guidance, "@otp" and "@otp2", which render as that
 * design's Lambda renders them: the code as is in SMS, digit by digit (as {{otp_spaced}}) in
 * voice. Whitespace inside braces is allowed ("{{ otp }}"). An unknown {{name}} is an error when
 * the template is built, never at send time.
 * Voice templates are SSML: substituted values are XML-escaped there (a first name of "<b>" must
 * not break the document); SMS values are inserted as they are.
 */
#ifndef TH_MESSAGE_MESSAGE_H
#define TH_MESSAGE_MESSAGE_H

#include <stdbool.h>
#include <stddef.h>

#include "common/buf.h"
#include "common/err.h"
#include "common/types.h"

/* Longest normalised locale tag we keep ("zh-hant-tw" fits). */
#define TH_LOCALE_MAX 16

/*
 * Normalises a locale as Okta sends it: "EN-US" → "en-us", "pt_BR" → "pt-br", "es" → "es",
 * "zh-Hant-TW" → "zh-hant-tw". Accepts a 2–3 letter language then up to 2 subtags of 2–8
 * alphanumerics separated by '-' or '_'. Anything else (empty, too long, other characters)
 * → TH_E_LOCALE. out must hold TH_LOCALE_MAX bytes.
 */
th_err th_locale_normalize(const char *in, char out[TH_LOCALE_MAX]);

/*
 * The tags the chain tries for one locale, most specific first: the tag, the tag less its last
 * subtag ("zh-hant-tw" → "zh-hant"), for Chinese the script the pack writes ("zh-tw" for
 * Traditional: zh-hant, zh-tw, zh-hk, zh-mo; "zh-cn" for everything else), the language, then
 * the language a reader of it reads best when it has no text of its own: pt → pt-br,
 * no / nn → nb, nb → no, in → id (Java's old code for Indonesian), iw → he. At most max tags of
 * TH_LOCALE_MAX; returns how many (0 when locale does not normalise).
 */
size_t th_locale_candidates(const char *locale, char (*out)[TH_LOCALE_MAX], size_t max);
#define TH_LOCALE_CANDIDATES_MAX 6

/* ---- SMS encodings: GSM 03.38 (3GPP TS 23.038) and UCS-2 ---- */

/* message.sms_encoding: what telehook does to a text before it leaves (config order). */
typedef enum {
    TH_SMS_AUTO = 0, /* as written, but typographic punctuation (’ “ – … no-break spaces)
                        becomes its GSM-7 equivalent when that alone makes the text GSM-7 */
    TH_SMS_GSM7 = 1, /* the same, plus Latin letters without a GSM-7 form lose their
                        diacritics (ą → a, ł → l, ș → s, ı → i, ơ → o) when that makes the
                        whole text GSM-7; other scripts (Greek, Cyrillic, CJK, Thai) stay */
    TH_SMS_UCS2 = 2  /* exactly as written */
} th_sms_encoding;
const char *th_sms_encoding_name(th_sms_encoding e); /* "auto" / "gsm7" / "ucs2" */

/* What the handset receives: carriers pick GSM-7 when every character is in its tables. */
typedef enum { TH_CHARSET_GSM7 = 0, TH_CHARSET_UCS2 = 1 } th_sms_charset;
const char *th_sms_charset_name(th_sms_charset cs); /* "GSM-7" / "UCS-2" */

#define TH_SMS_GSM7_SINGLE 160 /* septets in a lone segment */
#define TH_SMS_GSM7_PART   153 /* per part of a concatenated message (the rest is its header) */
#define TH_SMS_UCS2_SINGLE 70  /* UTF-16 code units */
#define TH_SMS_UCS2_PART   67

struct th_sms_info {
    th_sms_charset charset;
    size_t chars; /* Unicode characters */
    size_t units; /* GSM-7 septets (^ { } \ [ ~ ] | € and form feed take two: escape + code)
                     or UTF-16 code units (a character outside the BMP, an emoji, takes two) */
    int segments; /* parts the message is sent in; an escape pair or a surrogate pair is never
                     split between two parts, so a part may carry one unit less */
};

/* Measures UTF-8 text (len bytes; bytes that are not UTF-8 count as U+FFFD). Never fails. */
void th_sms_measure(const char *text, size_t len, struct th_sms_info *out);

/*
 * Appends text to out as policy enc sends it (see th_sms_encoding); *rewritten says whether
 * characters were replaced. A text that would still need UCS-2 after replacing is appended as
 * written: a script is never half transliterated. TH_E_TOOBIG when out's cap is reached (out is
 * then failed and empty: see common/buf.h).
 */
th_err th_sms_prepare(th_sms_encoding enc, const char *text, size_t len, struct th_buf *out,
                      bool *rewritten);

/* ---- templates ---- */

/* One template as stored (input to th_templates_build). Strings are borrowed. */
struct th_template_spec {
    const char *language; /* normalised tag: "en", "es-mx" */
    th_channel channel;
    const char *body;
    const char *voice_id; /* voice only; may be NULL */
};

struct th_template;  /* compiled, immutable */
struct th_templates; /* an immutable set, safe to share between threads */

/*
 * Compiles every spec into a new set (strings are copied). A spec with an invalid language or a
 * body with an unknown placeholder fails the whole build: TH_E_TEMPLATE with the reason in err.
 * Later specs with the same (language, channel) replace earlier ones. Each SMS template is
 * measured (th_template_sms_info) as it is built.
 */
th_err th_templates_build(const struct th_template_spec *specs, size_t n, struct th_templates **out,
                          char *err, size_t errlen);
void th_templates_free(struct th_templates *set); /* NULL is a no-op */

size_t th_templates_count(const struct th_templates *set);
/* The i-th template in (language, channel) order; NULL past the end. */
const struct th_template *th_templates_at(const struct th_templates *set, size_t i);

/* Exact lookup; NULL when absent. lang must be normalised. */
const struct th_template *th_templates_find(const struct th_templates *set, const char *lang,
                                            th_channel ch);

/* The built-in English templates (always available, used at the end of the chain). */
const struct th_template *th_template_builtin(th_channel ch);

/*
 * The built-in language pack as a template set (every language's SMS and, where Amazon Polly
 * has a voice for it, voice template). Stored templates of the same (language, channel) win
 * over these; `templates list` shows each built-in that no stored template overrides.
 */
const struct th_templates *th_templates_builtin(void);

const char *th_template_language(const struct th_template *t);
th_channel th_template_channel(const struct th_template *t);
const char *th_template_body(const struct th_template *t);
const char *th_template_voice_id(const struct th_template *t); /* "" when none */
/* Whether the body names the user ({{first_name}}, {{last_name}}, {{login}}). */
bool th_template_uses_names(const struct th_template *t);

/*
 * Values an SMS template is measured with: the longest code Okta sends (8 digits), a two-digit
 * validity (10 minutes) and names of typical length (11, 12 and 36 ASCII characters). A real
 * name with a letter outside GSM-7 can still turn a message into UCS-2 at send time.
 */
#define TH_SAMPLE_OTP        "12345678"
#define TH_SAMPLE_MINUTES    10
#define TH_SAMPLE_FIRST_NAME "Alexandrina"
#define TH_SAMPLE_LAST_NAME  "Papadopoulou"
#define TH_SAMPLE_LOGIN      "alexandrina.papadopoulou@example.com"

/* An SMS template's text at the sample values, as enc sends it; NULL for voice. */
const struct th_sms_info *th_template_sms_info(const struct th_template *t, th_sms_encoding enc);

/* Where the chosen text comes from. */
typedef enum {
    TH_SOURCE_TEMPLATE, /* a stored template */
    TH_SOURCE_OKTA,     /* Okta's msgTemplate, already rendered with the code (SMS only) */
    TH_SOURCE_BUILTIN   /* the built-in language pack (English at the end of the chain) */
} th_source;

const char *th_source_name(th_source s); /* "template" / "okta" / "builtin" */

struct th_choice {
    const struct th_template *tpl; /* NULL when source is TH_SOURCE_OKTA */
    th_source source;
    const char *language; /* language of the text ("en", "es-mx"); for OKTA the requested
                             locale or "" — borrowed from the set or the input */
    bool last_resort;     /* the built-in English text that ends the chain */
};

/* What the locale chain looks at. */
struct th_chain {
    const struct th_templates *set; /* stored templates; may be NULL */
    const char *preferred;          /* the user's preferred language; NULL/"" when none */
    const char *locale;             /* the request's locale (raw or normalised); may be NULL */
    const char *default_language;   /* message.default_language */
    bool pack;                      /* consult the built-in language pack (message.builtin_pack) */
    bool has_okta_template;         /* the request carries Okta's rendered msgTemplate */
};

/*
 * The locale chain: for the preferred language, then the request's locale, then the default
 * language, each of their th_locale_candidates in turn — a stored template of that tag, else the
 * pack's — then Okta's msgTemplate (SMS only, when the request has one), then the built-in
 * English text (last_resort). Never fails.
 */
void th_message_choose(const struct th_chain *chain, th_channel ch, struct th_choice *out);

struct th_render_vars {
    const char *otp;                            /* required */
    const char *first_name, *last_name, *login; /* NULL renders as "" */
    int expires_minutes;          /* < 0: unknown, renders as 5 (Okta's usual lifetime) */
    th_sms_encoding sms_encoding; /* SMS: what is done to the text (th_sms_prepare) */
};

/* Renders t into out (appended). TH_E_TOOBIG when out's cap is reached (out failed, empty). */
th_err th_message_render(const struct th_template *t, const struct th_render_vars *vars,
                         struct th_buf *out);

/* "{{expires}}": minutes with their unit in lang (normalised tag), e.g. "1 minute". */
void th_message_expires(const char *lang, int minutes, char *out, size_t outlen);

/* ---- checks (templates check, templates set, loading) ---- */

struct th_template_report {
    struct th_sms_info sms; /* SMS: at the sample values, under the policy */
    bool rewritten;         /* SMS: the policy replaces characters to reach GSM-7 */
    int errors, warnings;
};

/*
 * Checks one compiled template, for `templates set`, `templates check`, `templates import-aws`
 * and the server's loader (which skips only a template over max_segments: a running service
 * keeps what it has). Errors: the text never gives the code ({{otp}}, {{otp_spaced}}, @otp,
 * @otp2); SMS over max_segments (> 0) or over AWS's 1600 characters, or with a voice id; voice
 * not well-formed SSML in one <speak> with Amazon Polly's elements only (th_ssml_check on the
 * body, so offsets are the admin's), over AWS's 6000 characters rendered, or naming a Polly
 * voice of another language. Warnings: SMS over one segment; voice naming no voice, or one AWS
 * End User Messaging does not take (th_voice_find). Notes: names measured at sample lengths,
 * text that stays UCS-2 under gsm7. msg gets every finding, "; "-separated; rep the counts and
 * the SMS measure. TH_E_TEMPLATE when there are errors.
 */
th_err th_template_check(const struct th_template *t, th_sms_encoding enc, int max_segments,
                         struct th_template_report *rep, char *msg, size_t msglen);

/*
 * SSML as Amazon Polly takes it: well-formed XML, one <speak> root, only the elements Polly
 * supports (speak break emphasis lang mark p phoneme prosody s say-as sub w amazon:auto-breaths
 * amazon:breath amazon:domain amazon:effect), the five XML entities and character references.
 */
th_err th_ssml_check(const char *ssml, size_t len, char *why, size_t whylen);

/*
 * The body in the syntax of AWS's guidance (its DynamoDB "message" attribute): the code as
 * "@otp", a second mention as "@otp2" (its Lambda replaces each once), {{expires}} and
 * {{expires_minutes}} as Okta's five minutes. TH_E_TEMPLATE with why when the body cannot be
 * said there: names, or the code more than twice.
 */
th_err th_template_aws_body(const struct th_template *t, struct th_buf *out, char *why,
                            size_t whylen);

/* ---- AWS's guidance format: DynamoDB items (`aws dynamodb scan` output) ---- */

struct th_aws_item {
    char language[TH_LOCALE_MAX]; /* normalised */
    th_channel channel;           /* messagetype "sms" / "voice call" */
    char *body;                   /* "message", verbatim (@otp placeholders kept) */
    char voice_id[32]; /* voice: Polly's spelling of "voiceid" ("MATTHEW" → "Matthew") */
};
struct th_aws_items {
    struct th_aws_item *items;
    size_t n;
};

/*
 * Reads the items (scan output, an array of items, one item, or a batch-write-item request).
 * TH_E_JSON / TH_E_INVAL / TH_E_TOOBIG (over 1000 items) with the item and reason in err; the
 * bodies are not compiled here (th_templates_build does). Release with th_aws_items_release.
 */
th_err th_aws_items_parse(const char *json, size_t len, struct th_aws_items *out, char *err,
                          size_t errlen);
void th_aws_items_release(struct th_aws_items *items);

/* Called for each template th_aws_items_format leaves out, with the reason. */
typedef void (*th_aws_skip_fn)(void *ud, const struct th_template *t, const char *why);
/*
 * The templates as scan output (*out: malloc'd JSON text, free() it), in the given order, ids
 * from 1; a template th_template_aws_body cannot write is left out (skip says why).
 */
th_err th_aws_items_format(const struct th_template *const *tpls, size_t n, th_aws_skip_fn skip,
                           void *ud, char **out);

/* ---- the built-in language pack ---- */

struct th_pack_lang {
    const char *tag;          /* normalised: "de", "pt-br", "zh-tw" */
    const char *name;         /* "German" */
    const char *sms;          /* the SMS template */
    const char *voice;        /* the SSML template; NULL: no voice for this language */
    const char *voice_id;     /* Amazon Polly voice (AWS VoiceId, Twilio Polly.<Name>) or NULL */
    const char *voice_locale; /* the voice's language: "de-DE", "cmn-CN" */
    const char *engine;       /* "standard" (End User Messaging takes no engine) */
    const char *note;         /* a documented choice (why no voice, an accent), or NULL */
};
size_t th_pack_count(void);
const struct th_pack_lang *th_pack_at(size_t i);          /* NULL past the end */
const struct th_pack_lang *th_pack_find(const char *tag); /* normalised tag; NULL */

/*
 * The Amazon Polly voices telehook knows (one list, in pack.c): each with the language it speaks
 * and whether AWS End User Messaging's SendVoiceMessage takes it as VoiceId; Twilio takes each as
 * "Polly.<Name>".
 */
struct th_voice {
    const char *name;   /* as Polly writes it: "Joanna" */
    const char *locale; /* the language it speaks: "en-US", "cmn-CN", "arb" */
    bool aws;           /* in AWS End User Messaging's VoiceId list */
};
/* The voice called voice_id (case-insensitive: "JOANNA" is Joanna); NULL for another name. */
const struct th_voice *th_voice_find(const char *voice_id);
size_t th_voice_count(void);

/* ---- user preferences: a language (and channel hint) per Okta user ---- */

struct th_pref_spec {
    const char *user;     /* Okta userId or login */
    const char *language; /* a locale tag (normalised on build) */
    const char *channel;  /* "", "sms" or "voice": a hint, recorded, never acted on */
};

struct th_pref {
    const char *user;
    char language[TH_LOCALE_MAX];
    char channel[8]; /* "", "sms", "voice" */
};

struct th_prefs; /* immutable, safe to share between threads */

/* A user key: 1–256 bytes, no control characters, no leading or trailing space. */
bool th_pref_user_valid(const char *user);

/*
 * Builds the map (strings are copied). TH_E_INVAL with the reason in err for an invalid user,
 * language or channel. Users compare case-insensitively (ASCII): Okta logins do, and userIds are
 * unique without case. A later spec for the same user replaces an earlier one.
 */
th_err th_prefs_build(const struct th_pref_spec *specs, size_t n, struct th_prefs **out, char *err,
                      size_t errlen);
void th_prefs_free(struct th_prefs *p); /* NULL is a no-op */
size_t th_prefs_count(const struct th_prefs *p);
/* The preference of user_id, else of login (either may be NULL); NULL when none. */
const struct th_pref *th_prefs_find(const struct th_prefs *p, const char *user_id,
                                    const char *login);

#endif
