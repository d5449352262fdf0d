/*
 * Messages: the template set, the locale chain and rendering. Pure: no I/O, no global state.
 *
 * A template body is text with placeholders:
 *   {{otp}}             the code as sent by Okta
 *   {{otp_spaced}}      the code's characters separated by ", " (so a voice reads them one by one)
 *   {{first_name}} {{last_name}} {{login}}
 *   {{expires_minutes}} whole minutes until the code expires (rounded up, at least 1)
 *   {{expires_minutes:minute|minutes}}
 *                       the same number, a space, then the first word when it is 1 and the
 *                       second otherwise ("1 minute", "5 minutes"; "1 minuto", "5 minutos")
 * and, for templates imported from AWS's Okta guidance, "@otp2" (= {{otp_spaced}}) and
 * "@otp" (= {{otp}}). Whitespace inside braces is allowed ("{{ otp }}"). An unknown {{name}}
 * is an error when the template is built, never at send time.
 * Voice templates are SSML: substituted values are XML-escaped there (a first name of
 * "<b>" must not break the document); SMS values are inserted as they are.
 */
#ifndef TH_MESSAGE_MESSAGE_H
#define TH_MESSAGE_MESSAGE_H

#include <stdbool.h>
#include <stddef.h>

#include "common/buf.h"
#include "common/err.h"

typedef enum { TH_CHANNEL_SMS = 0, TH_CHANNEL_VOICE = 1 } th_channel;

/* "sms" / "voice" */
const char *th_channel_name(th_channel ch);
/* Parses "sms"/"voice" (case-insensitive); TH_E_INVAL otherwise. */
th_err th_channel_parse(const char *s, th_channel *out);

/* Longest normalised locale tag we keep ("zh-hant-tw" fits). */
#define TH_LOCALE_MAX 16

/*
 * Normalises a locale as Okta sends it: "EN-US" → "en-us", "pt_BR" → "pt-br", "es" → "es",
 * "zh-Hant-TW" → "zh-hant-tw". Accepts a 2–3 letter language then up to 2 subtags of 2–8
 * alphanumerics separated by '-' or '_'. Anything else (empty, too long, other characters)
 * → TH_E_LOCALE. out must hold TH_LOCALE_MAX bytes.
 */
th_err th_locale_normalize(const char *in, char out[TH_LOCALE_MAX]);

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
 * Later specs with the same (language, channel) replace earlier ones.
 */
th_err th_templates_build(const struct th_template_spec *specs, size_t n, struct th_templates **out,
                          char *err, size_t errlen);
void th_templates_free(struct th_templates *set); /* NULL is a no-op */

/*
 * What `templates set` requires beyond what th_templates_build refuses (a template that cannot
 * render): the text gives the code ({{otp}}, {{otp_spaced}}, @otp or @otp2); a voice body is a
 * well-formed SSML document with a <speak> root; an SMS template has no voice id. TH_E_TEMPLATE
 * with the reason in err. Stored templates are not held to it at load: a running service keeps
 * what it has.
 */
th_err th_template_check(const struct th_template_spec *spec, char *err, size_t errlen);

/*
 * The Amazon Polly voices both AWS End User Messaging (VoiceId) and Twilio ("Polly.<Name>")
 * accept: true when voice_id (case-insensitive) is one, with its canonical name ("Joanna") and
 * language ("en-US"); name and lang may be NULL.
 */
bool th_voice_lookup(const char *voice_id, const char **name, const char **lang);
size_t th_templates_count(const struct th_templates *set);

/* Exact lookup; NULL when absent. lang must be normalised. */
const struct th_template *th_templates_find(const struct th_templates *set, const char *lang,
                                            th_channel ch);

/* The built-in English templates (always available, used at the end of the chain). */
const struct th_template *th_template_builtin(th_channel ch);

const char *th_template_language(const struct th_template *t);
th_channel th_template_channel(const struct th_template *t);
const char *th_template_voice_id(const struct th_template *t); /* "" when none */

/* Where the chosen text comes from. */
typedef enum {
    TH_SOURCE_TEMPLATE, /* a stored template (exact locale, language, or default language) */
    TH_SOURCE_OKTA,     /* Okta's msgTemplate, already rendered with the code (SMS only) */
    TH_SOURCE_BUILTIN   /* the built-in English template */
} th_source;

const char *th_source_name(th_source s); /* "template" / "okta" / "builtin" */

struct th_choice {
    const struct th_template *tpl; /* NULL when source is TH_SOURCE_OKTA */
    th_source source;
    const char *language; /* language of the text ("en", "es-mx"); for OKTA the requested
                             locale or "" — borrowed from the set or the input */
};

/*
 * The locale chain: preferred (a user's preference, may be NULL/"") exact → its language →
 * locale (normalised, may be NULL/"") exact ("es-mx") → its language ("es") → default_language
 * → Okta's msgTemplate (only when channel is SMS and has_okta_template) → built-in English.
 * Never fails: the built-in template ends the chain.
 */
void th_message_choose(const struct th_templates *set, const char *preferred, const char *locale,
                       th_channel ch, const char *default_language, bool has_okta_template,
                       struct th_choice *out);

struct th_render_vars {
    const char *otp;                            /* required */
    const char *first_name, *last_name, *login; /* NULL renders as "" */
    int expires_minutes; /* < 0: unknown, renders as "5" (Okta's usual lifetime) */
};

/* Renders t into out (appended). TH_E_TOOBIG when out's cap is reached. */
th_err th_message_render(const struct th_template *t, const struct th_render_vars *vars,
                         struct th_buf *out);

#endif
