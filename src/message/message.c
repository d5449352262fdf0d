#include "message/message.h"

#include <ctype.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "common/util.h"

#define BODY_MAX 4096

enum var {
    VAR_LITERAL,
    VAR_OTP,
    VAR_OTP_SPACED,
    VAR_FIRST_NAME,
    VAR_LAST_NAME,
    VAR_LOGIN,
    VAR_EXPIRES_MINUTES,
    VAR_EXPIRES_PLURAL, /* {{expires_minutes:minute|minutes}} */
};

/* Longest word of a plural form: a word, not a sentence. */
#define PLURAL_WORD_MAX 32

static const struct {
    const char *name;
    enum var var;
} placeholders[] = {
    {"otp", VAR_OTP},
    {"otp_spaced", VAR_OTP_SPACED},
    {"first_name", VAR_FIRST_NAME},
    {"last_name", VAR_LAST_NAME},
    {"login", VAR_LOGIN},
    {"expires_minutes", VAR_EXPIRES_MINUTES},
};

/* A compiled template is a list of segments: literal text (a slice of body) or a variable. */
struct seg {
    enum var var;
    size_t off, len;   /* literal slice of body; a plural form's singular */
    size_t off2, len2; /* a plural form's plural */
};

struct th_template {
    char *language;
    th_channel channel;
    char *body;
    char *voice_id;
    struct seg *segs;
    size_t nsegs;
};

struct th_templates {
    struct th_template *items; /* sorted by (language, channel) */
    size_t n;
};

const char *th_channel_name(th_channel ch)
{
    return ch == TH_CHANNEL_VOICE ? "voice" : "sms";
}

th_err th_channel_parse(const char *s, th_channel *out)
{
    if (strcasecmp(s, "sms") == 0)
        *out = TH_CHANNEL_SMS;
    else if (strcasecmp(s, "voice") == 0)
        *out = TH_CHANNEL_VOICE;
    else
        return TH_E_INVAL;
    return TH_E_OK;
}

const char *th_source_name(th_source s)
{
    switch (s) {
    case TH_SOURCE_TEMPLATE:
        return "template";
    case TH_SOURCE_OKTA:
        return "okta";
    case TH_SOURCE_BUILTIN:
        return "builtin";
    }
    return "template";
}

/* ---- locales ---- */

th_err th_locale_normalize(const char *in, char out[TH_LOCALE_MAX])
{
    size_t n = strlen(in);
    if (n == 0 || n >= TH_LOCALE_MAX)
        return TH_E_LOCALE;
    size_t part = 0, partlen = 0;
    for (size_t i = 0; i <= n; i++) {
        char c = in[i];
        if (c == '\0' || c == '-' || c == '_') {
            /* language: 2-3 letters; subtags: 2-8 alphanumerics; at most 2 subtags */
            if (part == 0 ? (partlen < 2 || partlen > 3) : (partlen < 2 || partlen > 8))
                return TH_E_LOCALE;
            if (c == '\0')
                break;
            if (++part > 2)
                return TH_E_LOCALE;
            out[i] = '-';
            partlen = 0;
            continue;
        }
        if (part == 0 ? !isalpha((unsigned char)c) : !isalnum((unsigned char)c))
            return TH_E_LOCALE;
        out[i] = (char)tolower((unsigned char)c);
        partlen++;
    }
    out[n] = '\0';
    return TH_E_OK;
}

/* ---- compiling ---- */

static bool is_word_char(char c)
{
    return isalnum((unsigned char)c) || c == '_';
}

static th_err add_seg(struct th_template *t, size_t *cap, enum var var, size_t off, size_t len)
{
    if (var == VAR_LITERAL && len == 0)
        return TH_E_OK;
    if (t->nsegs == *cap) {
        size_t ncap = *cap ? *cap * 2 : 8;
        struct seg *s = realloc(t->segs, ncap * sizeof *s);
        if (!s)
            return TH_E_NOMEM;
        t->segs = s;
        *cap = ncap;
    }
    t->segs[t->nsegs++] = (struct seg){var, off, len, 0, 0};
    return TH_E_OK;
}

/*
 * "expires_minutes:minute|minutes" (p..q, trimmed): the number then the word that agrees with
 * it. Adds the segment, or says why not in err.
 */
static th_err add_plural(struct th_template *t, size_t *cap, const char *p, const char *q,
                         char *err, size_t errlen)
{
    static const char name[] = "expires_minutes";
    const char *colon = memchr(p, ':', (size_t)(q - p));
    const char *n_end = colon;
    while (n_end > p && isspace((unsigned char)n_end[-1]))
        n_end--;
    if ((size_t)(n_end - p) != strlen(name) || memcmp(p, name, strlen(name)) != 0) {
        snprintf(err, errlen, "'{{%.*s}}': only {{expires_minutes:ONE|OTHER}} has a plural form",
                 (int)(q - p > 40 ? 40 : q - p), p);
        return TH_E_TEMPLATE;
    }
    /* the words, each trimmed: "{{ expires_minutes : minute | minutes }}" reads the same */
    const char *w1 = colon + 1, *bar = memchr(w1, '|', (size_t)(q - w1));
    const char *w2 = bar ? bar + 1 : q, *e1 = bar ? bar : q;
    while (w1 < e1 && isspace((unsigned char)*w1))
        w1++;
    while (e1 > w1 && isspace((unsigned char)e1[-1]))
        e1--;
    while (w2 < q && isspace((unsigned char)*w2))
        w2++;
    bool ok = bar && e1 > w1 && q > w2 && !memchr(w2, '|', (size_t)(q - w2)) &&
              (size_t)(e1 - w1) <= PLURAL_WORD_MAX && (size_t)(q - w2) <= PLURAL_WORD_MAX;
    for (const char *c = w1; ok && c < q; c++)
        ok = *c != '{' && *c != '}' && *c != '<' && *c != '&';
    if (!ok) {
        snprintf(err, errlen,
                 "'{{%.*s}}': write the plural form as {{expires_minutes:minute|minutes}} (two "
                 "words of at most %d bytes, no braces, '<' or '&')",
                 (int)(q - p > 60 ? 60 : q - p), p, PLURAL_WORD_MAX);
        return TH_E_TEMPLATE;
    }
    th_err e = add_seg(t, cap, VAR_EXPIRES_PLURAL, (size_t)(w1 - t->body), (size_t)(e1 - w1));
    if (e == TH_E_OK) {
        t->segs[t->nsegs - 1].off2 = (size_t)(w2 - t->body);
        t->segs[t->nsegs - 1].len2 = (size_t)(q - w2);
    }
    return e;
}

/* Splits body into segments; on error err names the problem. */
static th_err compile(struct th_template *t, char *err, size_t errlen)
{
    const char *b = t->body;
    size_t n = strlen(b), cap = 0, lit = 0, i = 0;
    th_err e = TH_E_OK;
    while (i < n && e == TH_E_OK) {
        if (b[i] == '{' && b[i + 1] == '{') {
            const char *close = strstr(b + i + 2, "}}");
            if (!close) {
                snprintf(err, errlen, "unterminated '{{' at offset %zu", i);
                return TH_E_TEMPLATE;
            }
            const char *p = b + i + 2, *q = close;
            while (p < q && isspace((unsigned char)*p))
                p++;
            while (q > p && isspace((unsigned char)q[-1]))
                q--;
            if (memchr(p, ':', (size_t)(q - p))) {
                e = add_seg(t, &cap, VAR_LITERAL, lit, i - lit);
                if (e == TH_E_OK && (e = add_plural(t, &cap, p, q, err, errlen)) == TH_E_TEMPLATE)
                    return e;
                i = (size_t)(close - b) + 2;
                lit = i;
                continue;
            }
            enum var var = VAR_LITERAL;
            for (size_t k = 0; k < TH_ARRAY_LEN(placeholders); k++)
                if ((size_t)(q - p) == strlen(placeholders[k].name) &&
                    memcmp(p, placeholders[k].name, (size_t)(q - p)) == 0)
                    var = placeholders[k].var;
            if (var == VAR_LITERAL) {
                snprintf(err, errlen, "unknown placeholder '{{%.*s}}'",
                         (int)(q - p > 40 ? 40 : q - p), p);
                return TH_E_TEMPLATE;
            }
            e = add_seg(t, &cap, VAR_LITERAL, lit, i - lit);
            if (!e)
                e = add_seg(t, &cap, var, 0, 0);
            i = (size_t)(close - b) + 2;
            lit = i;
        } else if (b[i] == '@' && strncmp(b + i, "@otp", 4) == 0) {
            /* AWS guidance syntax: "@otp2" is the spaced code, "@otp" the code; "@otpx" is text */
            enum var var = VAR_LITERAL;
            size_t len = 0;
            if (b[i + 4] == '2' && !is_word_char(b[i + 5])) {
                var = VAR_OTP_SPACED;
                len = 5;
            } else if (!is_word_char(b[i + 4])) {
                var = VAR_OTP;
                len = 4;
            }
            if (var == VAR_LITERAL) {
                i++;
                continue;
            }
            e = add_seg(t, &cap, VAR_LITERAL, lit, i - lit);
            if (!e)
                e = add_seg(t, &cap, var, 0, 0);
            i += len;
            lit = i;
        } else {
            i++;
        }
    }
    if (!e)
        e = add_seg(t, &cap, VAR_LITERAL, lit, n - lit);
    if (e)
        snprintf(err, errlen, "%s", th_strerror(e));
    return e;
}

static void template_release(struct th_template *t)
{
    free(t->language);
    free(t->body);
    free(t->voice_id);
    free(t->segs);
}

static th_err template_init(struct th_template *t, const struct th_template_spec *spec, char *err,
                            size_t errlen)
{
    memset(t, 0, sizeof *t);
    char lang[TH_LOCALE_MAX];
    if (!spec->language || th_locale_normalize(spec->language, lang) != TH_E_OK) {
        snprintf(err, errlen, "invalid language '%.20s'", spec->language ? spec->language : "");
        return TH_E_TEMPLATE;
    }
    if (!spec->body || strlen(spec->body) > BODY_MAX) {
        snprintf(err, errlen, "template %s/%s: body missing or over %d bytes", lang,
                 th_channel_name(spec->channel), BODY_MAX);
        return TH_E_TEMPLATE;
    }
    t->channel = spec->channel;
    t->language = strdup(lang);
    t->body = strdup(spec->body);
    t->voice_id = strdup(spec->voice_id ? spec->voice_id : "");
    if (!t->language || !t->body || !t->voice_id) {
        template_release(t);
        snprintf(err, errlen, "out of memory");
        return TH_E_NOMEM;
    }
    char why[160];
    th_err e = compile(t, why, sizeof why);
    if (e != TH_E_OK) {
        snprintf(err, errlen, "template %s/%s: %s", lang, th_channel_name(spec->channel), why);
        template_release(t);
        return e == TH_E_NOMEM ? e : TH_E_TEMPLATE;
    }
    return TH_E_OK;
}

static int cmp_key(const char *lang, th_channel ch, const struct th_template *t)
{
    int c = strcmp(lang, t->language);
    if (c)
        return c;
    return (int)ch - (int)t->channel;
}

static int cmp_templates(const void *a, const void *b)
{
    const struct th_template *x = a, *y = b;
    return cmp_key(x->language, x->channel, y);
}

th_err th_templates_build(const struct th_template_spec *specs, size_t n, struct th_templates **out,
                          char *err, size_t errlen)
{
    struct th_templates *set = calloc(1, sizeof *set);
    if (!set || (n && !(set->items = calloc(n, sizeof *set->items)))) {
        free(set);
        snprintf(err, errlen, "out of memory");
        return TH_E_NOMEM;
    }
    for (size_t i = 0; i < n; i++) {
        struct th_template t;
        th_err e = template_init(&t, &specs[i], err, errlen);
        if (e != TH_E_OK) {
            th_templates_free(set);
            return e;
        }
        /* a later spec with the same key replaces the earlier one */
        size_t j = 0;
        while (j < set->n && cmp_templates(&t, &set->items[j]) != 0)
            j++;
        if (j < set->n)
            template_release(&set->items[j]);
        else
            set->n++;
        set->items[j] = t;
    }
    qsort(set->items, set->n, sizeof *set->items, cmp_templates);
    *out = set;
    return TH_E_OK;
}

void th_templates_free(struct th_templates *set)
{
    if (!set)
        return;
    for (size_t i = 0; i < set->n; i++)
        template_release(&set->items[i]);
    free(set->items);
    free(set);
}

size_t th_templates_count(const struct th_templates *set)
{
    return set ? set->n : 0;
}

const struct th_template *th_templates_find(const struct th_templates *set, const char *lang,
                                            th_channel ch)
{
    if (!set || !lang)
        return NULL;
    size_t lo = 0, hi = set->n;
    while (lo < hi) {
        size_t mid = lo + (hi - lo) / 2;
        int c = cmp_key(lang, ch, &set->items[mid]);
        if (c == 0)
            return &set->items[mid];
        if (c < 0)
            hi = mid;
        else
            lo = mid + 1;
    }
    return NULL;
}

const char *th_template_language(const struct th_template *t)
{
    return t->language;
}

th_channel th_template_channel(const struct th_template *t)
{
    return t->channel;
}

const char *th_template_voice_id(const struct th_template *t)
{
    return t->voice_id ? t->voice_id : "";
}

/* ---- checks for `templates set` ---- */

/* Amazon Polly voices: AWS End User Messaging's VoiceId enum and Twilio's "Polly.<Name>". */
static const struct {
    const char *name, *lang;
} voices[] = {
    {"Joanna", "en-US"},    {"Matthew", "en-US"}, {"Salli", "en-US"},       {"Kimberly", "en-US"},
    {"Kendra", "en-US"},    {"Ivy", "en-US"},     {"Justin", "en-US"},      {"Joey", "en-US"},
    {"Amy", "en-GB"},       {"Brian", "en-GB"},   {"Emma", "en-GB"},        {"Nicole", "en-AU"},
    {"Russell", "en-AU"},   {"Raveena", "en-IN"}, {"Geraint", "en-GB-WLS"}, {"Lupe", "es-US"},
    {"Penelope", "es-US"},  {"Miguel", "es-US"},  {"Conchita", "es-ES"},    {"Lucia", "es-ES"},
    {"Enrique", "es-ES"},   {"Mia", "es-MX"},     {"Celine", "fr-FR"},      {"Lea", "fr-FR"},
    {"Mathieu", "fr-FR"},   {"Chantal", "fr-CA"}, {"Hans", "de-DE"},        {"Marlene", "de-DE"},
    {"Vicki", "de-DE"},     {"Giorgio", "it-IT"}, {"Carla", "it-IT"},       {"Bianca", "it-IT"},
    {"Camila", "pt-BR"},    {"Vitoria", "pt-BR"}, {"Ricardo", "pt-BR"},     {"Ines", "pt-PT"},
    {"Cristiano", "pt-PT"}, {"Mizuki", "ja-JP"},  {"Takumi", "ja-JP"},      {"Seoyeon", "ko-KR"},
    {"Zhiyu", "cmn-CN"},    {"Tatyana", "ru-RU"}, {"Maxim", "ru-RU"},       {"Lotte", "nl-NL"},
    {"Ruben", "nl-NL"},     {"Ewa", "pl-PL"},     {"Jacek", "pl-PL"},       {"Jan", "pl-PL"},
    {"Maja", "pl-PL"},      {"Astrid", "sv-SE"},  {"Liv", "nb-NO"},         {"Mads", "da-DK"},
    {"Naja", "da-DK"},      {"Filiz", "tr-TR"},   {"Carmen", "ro-RO"},      {"Dora", "is-IS"},
    {"Karl", "is-IS"},      {"Gwyneth", "cy-GB"}, {"Zeina", "arb"},
};

bool th_voice_lookup(const char *voice_id, const char **name, const char **lang)
{
    for (size_t i = 0; voice_id && i < TH_ARRAY_LEN(voices); i++) {
        if (strcasecmp(voices[i].name, voice_id) == 0) {
            if (name)
                *name = voices[i].name;
            if (lang)
                *lang = voices[i].lang;
            return true;
        }
    }
    return false;
}

#define SSML_DEPTH 32
#define SSML_NAME  32

/* An XML name at s (ASCII: SSML's elements and attributes are): its length, 0 when none. */
static size_t xml_name(const char *s)
{
    if (!isalpha((unsigned char)*s) && *s != '_' && *s != ':')
        return 0;
    size_t n = 1;
    while (isalnum((unsigned char)s[n]) || s[n] == '-' || s[n] == '_' || s[n] == '.' || s[n] == ':')
        n++;
    return n;
}

/* An entity or character reference at s ('&'): its length, 0 when it is not one. */
static size_t xml_ref(const char *s)
{
    static const char *const named[] = {"&amp;", "&lt;", "&gt;", "&quot;", "&apos;"};
    for (size_t i = 0; i < TH_ARRAY_LEN(named); i++)
        if (strncmp(s, named[i], strlen(named[i])) == 0)
            return strlen(named[i]);
    if (s[1] != '#')
        return 0;
    bool hex = s[2] == 'x';
    size_t n = hex ? 3 : 2, start = n;
    while (hex ? isxdigit((unsigned char)s[n]) : isdigit((unsigned char)s[n]))
        n++;
    return n > start && n - start <= 8 && s[n] == ';' ? n + 1 : 0;
}

/*
 * Whether b is a well-formed XML document with a <speak> root (comments, CDATA and an XML
 * declaration allowed; no DTD). Placeholders are plain text here: their values are escaped when
 * rendered. err names the first problem and its byte offset.
 */
static bool ssml_check(const char *b, char *err, size_t errlen)
{
    char stack[SSML_DEPTH][SSML_NAME + 1];
    int depth = 0;
    bool root_seen = false;
    size_t i = 0;
    while (isspace((unsigned char)b[i]))
        i++;
    if (strncmp(b + i, "<?xml", 5) == 0) {
        const char *end = strstr(b + i, "?>");
        if (!end) {
            snprintf(err, errlen, "SSML: the XML declaration is not closed");
            return false;
        }
        i = (size_t)(end - b) + 2;
    }
    while (b[i]) {
        size_t at = i;
        if (b[i] == '&') {
            size_t n = xml_ref(b + i);
            if (!n) {
                snprintf(err, errlen, "SSML: '&' at offset %zu: write it as &amp;", at);
                return false;
            }
            i += n;
        } else if (b[i] != '<') {
            if (depth == 0 && !isspace((unsigned char)b[i])) {
                snprintf(err, errlen, "SSML: text at offset %zu is outside <speak>...</speak>", at);
                return false;
            }
            i++;
        } else if (strncmp(b + i, "<!--", 4) == 0 || strncmp(b + i, "<![CDATA[", 9) == 0) {
            bool comment = b[i + 2] == '-';
            const char *end = strstr(b + i + 4, comment ? "-->" : "]]>");
            if (!end || (!comment && depth == 0)) {
                snprintf(err, errlen, "SSML: %s at offset %zu %s", comment ? "comment" : "CDATA",
                         at, end ? "is outside <speak>" : "is not closed");
                return false;
            }
            i = (size_t)(end - b) + 3;
        } else if (b[i + 1] == '/') {
            size_t n = xml_name(b + i + 2);
            size_t j = i + 2 + n;
            while (isspace((unsigned char)b[j]))
                j++;
            if (!n || b[j] != '>') {
                snprintf(err, errlen, "SSML: malformed end tag at offset %zu", at);
                return false;
            }
            if (depth == 0 || n != strlen(stack[depth - 1]) ||
                strncmp(b + i + 2, stack[depth - 1], n) != 0) {
                snprintf(err, errlen, "SSML: </%.*s> at offset %zu %s%s%s", (int)(n > 32 ? 32 : n),
                         b + i + 2, at, depth ? "does not close <" : "closes nothing",
                         depth ? stack[depth - 1] : "", depth ? ">" : "");
                return false;
            }
            depth--;
            i = j + 1;
        } else {
            size_t n = xml_name(b + i + 1);
            if (!n) {
                snprintf(err, errlen, "SSML: '<' at offset %zu starts no tag: write it as &lt;",
                         at);
                return false;
            }
            if (depth == 0 && (root_seen || n != 5 || strncmp(b + i + 1, "speak", 5) != 0)) {
                snprintf(err, errlen,
                         "SSML: the document must be one <speak> element (<%.*s> at "
                         "offset %zu)",
                         (int)(n > 32 ? 32 : n), b + i + 1, at);
                return false;
            }
            if (depth == SSML_DEPTH || n > SSML_NAME) {
                snprintf(err, errlen,
                         "SSML: <%.*s> at offset %zu: nested too deep or name too "
                         "long",
                         (int)(n > 32 ? 32 : n), b + i + 1, at);
                return false;
            }
            memcpy(stack[depth], b + i + 1, n);
            stack[depth][n] = '\0';
            size_t j = i + 1 + n;
            const char *attrs[16];
            size_t alen[16], nattr = 0;
            for (;;) { /* attributes: name="value" or name='value' */
                size_t ws = 0;
                while (isspace((unsigned char)b[j + ws]))
                    ws++;
                j += ws;
                if (b[j] == '>' || (b[j] == '/' && b[j + 1] == '>'))
                    break;
                size_t an = ws ? xml_name(b + j) : 0;
                size_t k = j + an;
                while (an && isspace((unsigned char)b[k]))
                    k++;
                if (!an || b[k] != '=') {
                    snprintf(err, errlen,
                             "SSML: <%s> at offset %zu: malformed attribute at "
                             "offset %zu",
                             stack[depth], at, j);
                    return false;
                }
                for (size_t a = 0; a < nattr; a++) {
                    if (alen[a] == an && strncmp(attrs[a], b + j, an) == 0) {
                        snprintf(err, errlen, "SSML: <%s> at offset %zu: attribute %.*s twice",
                                 stack[depth], at, (int)(an > 32 ? 32 : an), b + j);
                        return false;
                    }
                }
                if (nattr == TH_ARRAY_LEN(attrs)) {
                    snprintf(err, errlen, "SSML: <%s> at offset %zu: too many attributes",
                             stack[depth], at);
                    return false;
                }
                attrs[nattr] = b + j;
                alen[nattr++] = an;
                k++;
                while (isspace((unsigned char)b[k]))
                    k++;
                char quote = b[k];
                if (quote != '"' && quote != '\'') {
                    snprintf(err, errlen, "SSML: <%s> at offset %zu: attribute values are quoted",
                             stack[depth], at);
                    return false;
                }
                for (k++; b[k] && b[k] != quote; k++) {
                    size_t r = b[k] == '&' ? xml_ref(b + k) : 1;
                    if (b[k] == '<' || !r) {
                        snprintf(err, errlen,
                                 "SSML: <%s> at offset %zu: '%c' in an attribute "
                                 "value at offset %zu",
                                 stack[depth], at, b[k], k);
                        return false;
                    }
                    k += r - 1;
                }
                if (!b[k]) {
                    snprintf(err, errlen, "SSML: <%s> at offset %zu is not closed", stack[depth],
                             at);
                    return false;
                }
                j = k + 1;
            }
            root_seen = true;
            if (b[j] == '/') {
                j++;
            } else {
                depth++;
            }
            i = j + 1;
        }
    }
    if (depth > 0) {
        snprintf(err, errlen, "SSML: <%s> is not closed", stack[depth - 1]);
        return false;
    }
    if (!root_seen) {
        snprintf(err, errlen, "SSML: a voice template is an SSML document: <speak>...</speak>");
        return false;
    }
    return true;
}

th_err th_template_check(const struct th_template_spec *spec, char *err, size_t errlen)
{
    struct th_template t;
    th_err e = template_init(&t, spec, err, errlen);
    if (e != TH_E_OK)
        return e;
    bool code = false;
    for (size_t i = 0; i < t.nsegs; i++)
        code = code || t.segs[i].var == VAR_OTP || t.segs[i].var == VAR_OTP_SPACED;
    char why[192] = "";
    if (!code)
        snprintf(why, sizeof why,
                 "the text never gives the code: put {{otp}} or {{otp_spaced}} "
                 "(or @otp, @otp2) in it");
    else if (t.channel == TH_CHANNEL_VOICE)
        ssml_check(t.body, why, sizeof why);
    else if (t.voice_id[0])
        snprintf(why, sizeof why, "a voice id is for voice templates; an SMS template has none");
    if (why[0])
        snprintf(err, errlen, "template %s/%s: %s", t.language, th_channel_name(t.channel), why);
    template_release(&t);
    return why[0] ? TH_E_TEMPLATE : TH_E_OK;
}

/* ---- built-in English (the end of the chain) ---- */

static const struct th_template_spec builtin_specs[] = {
    {"en", TH_CHANNEL_SMS,
     "Your verification code is {{otp}}. It expires in {{expires_minutes:minute|minutes}}.", NULL},
    {"en", TH_CHANNEL_VOICE,
     "<speak>Your verification code is <break time=\"300ms\"/>{{otp_spaced}}. <break "
     "time=\"1s\"/>Again, your code is {{otp_spaced}}.</speak>",
     "Joanna"},
};

static struct th_templates *builtin_set;
static pthread_once_t builtin_once = PTHREAD_ONCE_INIT;

static void builtin_free(void)
{
    th_templates_free(builtin_set);
    builtin_set = NULL;
}

static void builtin_init(void)
{
    char err[128];
    if (th_templates_build(builtin_specs, TH_ARRAY_LEN(builtin_specs), &builtin_set, err,
                           sizeof err) != TH_E_OK)
        abort();          /* static text that does not compile is a programming error */
    atexit(builtin_free); /* keeps leak checkers quiet */
}

const struct th_template *th_template_builtin(th_channel ch)
{
    pthread_once(&builtin_once, builtin_init);
    return th_templates_find(builtin_set, "en", ch);
}

/* ---- the locale chain ---- */

/* Tries tag exactly, then its language (the part before the first '-'). */
static const struct th_template *find_with_language(const struct th_templates *set, const char *tag,
                                                    th_channel ch)
{
    char norm[TH_LOCALE_MAX];
    if (!tag || !*tag || th_locale_normalize(tag, norm) != TH_E_OK)
        return NULL;
    const struct th_template *t = th_templates_find(set, norm, ch);
    char *dash = strchr(norm, '-');
    if (!t && dash) {
        *dash = '\0';
        t = th_templates_find(set, norm, ch);
    }
    return t;
}

void th_message_choose(const struct th_templates *set, const char *preferred, const char *locale,
                       th_channel ch, const char *default_language, bool has_okta_template,
                       struct th_choice *out)
{
    const struct th_template *t = find_with_language(set, preferred, ch);
    if (!t)
        t = find_with_language(set, locale, ch);
    if (!t)
        t = find_with_language(set, default_language, ch);
    if (t) {
        *out = (struct th_choice){t, TH_SOURCE_TEMPLATE, t->language};
        return;
    }
    /* Okta's msgTemplate is SMS text already holding the code; it is no use for a voice call. */
    if (ch == TH_CHANNEL_SMS && has_okta_template) {
        *out = (struct th_choice){NULL, TH_SOURCE_OKTA, locale ? locale : ""};
        return;
    }
    t = th_template_builtin(ch);
    *out = (struct th_choice){t, TH_SOURCE_BUILTIN, t->language};
}

/* ---- rendering ---- */

static th_err append_value(struct th_buf *out, const char *v, bool xml)
{
    if (!xml)
        return th_buf_appends(out, v);
    th_err e = TH_E_OK;
    for (const char *p = v; *p && e == TH_E_OK; p++) {
        switch (*p) {
        case '&':
            e = th_buf_appends(out, "&amp;");
            break;
        case '<':
            e = th_buf_appends(out, "&lt;");
            break;
        case '>':
            e = th_buf_appends(out, "&gt;");
            break;
        case '"':
            e = th_buf_appends(out, "&quot;");
            break;
        case '\'':
            e = th_buf_appends(out, "&apos;");
            break;
        default:
            e = th_buf_appendc(out, *p);
        }
    }
    return e;
}

static th_err append_spaced(struct th_buf *out, const char *otp, bool xml)
{
    th_err e = TH_E_OK;
    for (const char *p = otp; *p && e == TH_E_OK; p++) {
        if (p != otp)
            e = th_buf_appends(out, ", ");
        char c[2] = {*p, '\0'};
        if (e == TH_E_OK)
            e = append_value(out, c, xml);
    }
    return e;
}

th_err th_message_render(const struct th_template *t, const struct th_render_vars *vars,
                         struct th_buf *out)
{
    bool xml = t->channel == TH_CHANNEL_VOICE;
    size_t start = out->len;
    th_err e = TH_E_OK;
    for (size_t i = 0; i < t->nsegs && e == TH_E_OK; i++) {
        const struct seg *s = &t->segs[i];
        switch (s->var) {
        case VAR_LITERAL:
            e = th_buf_append(out, t->body + s->off, s->len);
            break;
        case VAR_OTP:
            e = append_value(out, vars->otp ? vars->otp : "", xml);
            break;
        case VAR_OTP_SPACED:
            e = append_spaced(out, vars->otp ? vars->otp : "", xml);
            break;
        case VAR_FIRST_NAME:
            e = append_value(out, vars->first_name ? vars->first_name : "", xml);
            break;
        case VAR_LAST_NAME:
            e = append_value(out, vars->last_name ? vars->last_name : "", xml);
            break;
        case VAR_LOGIN:
            e = append_value(out, vars->login ? vars->login : "", xml);
            break;
        case VAR_EXPIRES_MINUTES:
            e = th_buf_printf(out, "%d", vars->expires_minutes < 0 ? 5 : vars->expires_minutes);
            break;
        case VAR_EXPIRES_PLURAL: {
            int n = vars->expires_minutes < 0 ? 5 : vars->expires_minutes;
            e = th_buf_printf(out, "%d ", n);
            if (e == TH_E_OK)
                e = n == 1 ? th_buf_append(out, t->body + s->off, s->len)
                           : th_buf_append(out, t->body + s->off2, s->len2);
            break;
        }
        }
    }
    if (e != TH_E_OK) { /* never leave half a message behind */
        out->len = start;
        if (out->data)
            out->data[start] = '\0';
    }
    return e;
}
