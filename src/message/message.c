#include "message/message.h"

#include <ctype.h>
#include <stdarg.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "common/util.h"
#include "message/internal.h"

#define BODY_MAX 4096

enum var {
    VAR_LITERAL,
    VAR_OTP,
    VAR_OTP_SPACED,
    VAR_FIRST_NAME,
    VAR_LAST_NAME,
    VAR_LOGIN,
    VAR_EXPIRES_MINUTES,
    VAR_EXPIRES_PLURAL, /* {{expires_minutes:minute|minutes}}: the admin's own two forms */
    VAR_EXPIRES,        /* {{expires}}: the unit in the template's language (pack.c) */
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
    {"expires", VAR_EXPIRES},
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
    const struct th_msg_units *units; /* {{expires}} in this language; NULL: "N min" */
    bool uses_names;
    struct th_sms_info sms[3]; /* SMS, by th_sms_encoding: the sample text as sent */
};

struct th_templates {
    struct th_template *items; /* sorted by (language, channel) */
    size_t n;
};

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

static void add_candidate(char (*out)[TH_LOCALE_MAX], size_t max, size_t *n, const char *tag)
{
    for (size_t i = 0; i < *n; i++)
        if (strcmp(out[i], tag) == 0)
            return;
    if (*n < max)
        th_strlcpy(out[(*n)++], tag, TH_LOCALE_MAX);
}

/* Whether the normalised tag has the subtag sub ("zh-hant-tw" has "hant" and "tw"). */
static bool has_subtag(const char *tag, const char *sub)
{
    size_t n = strlen(sub);
    for (const char *p = strchr(tag, '-'); p; p = strchr(p + 1, '-'))
        if (strncmp(p + 1, sub, n) == 0 && (p[1 + n] == '-' || p[1 + n] == '\0'))
            return true;
    return false;
}

size_t th_locale_candidates(const char *locale, char (*out)[TH_LOCALE_MAX], size_t max)
{
    char tag[TH_LOCALE_MAX], lang[TH_LOCALE_MAX];
    if (!locale || !*locale || th_locale_normalize(locale, tag) != TH_E_OK)
        return 0;
    size_t n = 0;
    add_candidate(out, max, &n, tag);
    th_strlcpy(lang, tag, sizeof lang);
    char *dash = strchr(lang, '-');
    if (dash)
        *dash = '\0';
    char shorter[TH_LOCALE_MAX];
    th_strlcpy(shorter, tag, sizeof shorter);
    char *last = strrchr(shorter, '-');
    if (last && strchr(shorter, '-') != last) { /* three parts: "zh-hant-tw" → "zh-hant" */
        *last = '\0';
        add_candidate(out, max, &n, shorter);
    }
    if (strcmp(lang, "zh") == 0) { /* "zh" alone says nothing of the script the reader reads */
        bool hant = !has_subtag(tag, "hans") && (has_subtag(tag, "hant") || has_subtag(tag, "tw") ||
                                                 has_subtag(tag, "hk") || has_subtag(tag, "mo"));
        add_candidate(out, max, &n, hant ? "zh-tw" : "zh-cn");
    }
    add_candidate(out, max, &n, lang);
    static const struct {
        const char *from, *to;
    } alias[] = {{"pt", "pt-br"}, {"no", "nb"}, {"nn", "nb"},
                 {"nb", "no"},    {"in", "id"}, {"iw", "he"}};
    for (size_t i = 0; i < TH_ARRAY_LEN(alias); i++)
        if (strcmp(lang, alias[i].from) == 0)
            add_candidate(out, max, &n, alias[i].to);
    return n;
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
            /* AWS guidance syntax: "@otp" and "@otp2" are the code ("@otpx" is text), ...*/
            /* ... rendered as its Lambda renders both: as is in SMS, digit by digit in voice */
            enum var var = VAR_LITERAL;
            size_t len = 0;
            if (b[i + 4] == '2' && !is_word_char(b[i + 5]))
                len = 5;
            else if (!is_word_char(b[i + 4]))
                len = 4;
            if (len)
                var = t->channel == TH_CHANNEL_VOICE ? VAR_OTP_SPACED : VAR_OTP;
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

/* The sample text under each policy, as th_template_sms_info reports it. */
static th_err measure(struct th_template *t)
{
    for (int enc = TH_SMS_AUTO; enc <= TH_SMS_UCS2; enc++) {
        struct th_buf b;
        th_buf_init(&b, (size_t)BODY_MAX * 16);
        struct th_render_vars v = {TH_SAMPLE_OTP,   TH_SAMPLE_FIRST_NAME, TH_SAMPLE_LAST_NAME,
                                   TH_SAMPLE_LOGIN, TH_SAMPLE_MINUTES,    (th_sms_encoding)enc};
        th_err e = th_message_render(t, &v, &b);
        if (e == TH_E_OK)
            th_sms_measure(th_buf_str(&b), b.len, &t->sms[enc]);
        th_buf_release(&b);
        if (e != TH_E_OK)
            return e;
    }
    return TH_E_OK;
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
    t->units = th_msg_units_find(t->language);
    for (size_t i = 0; i < t->nsegs; i++)
        if (t->segs[i].var == VAR_FIRST_NAME || t->segs[i].var == VAR_LAST_NAME ||
            t->segs[i].var == VAR_LOGIN)
            t->uses_names = true;
    if (t->channel == TH_CHANNEL_SMS && (e = measure(t)) != TH_E_OK) {
        snprintf(err, errlen, "template %s/sms: %s", lang, th_strerror(e));
        template_release(t);
        return e;
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
    if (set->n > 1) /* an empty set has no array: qsort must not see NULL */
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

const char *th_template_body(const struct th_template *t)
{
    return t->body;
}

bool th_template_uses_names(const struct th_template *t)
{
    return t->uses_names;
}

const struct th_sms_info *th_template_sms_info(const struct th_template *t, th_sms_encoding enc)
{
    if (t->channel != TH_CHANNEL_SMS || enc < TH_SMS_AUTO || enc > TH_SMS_UCS2)
        return NULL;
    return &t->sms[enc];
}

const struct th_template *th_templates_at(const struct th_templates *set, size_t i)
{
    return set && i < set->n ? &set->items[i] : NULL;
}

/* ---- the built-in language pack (English ends the chain) ---- */

static struct th_templates *builtin_set;
static pthread_once_t builtin_once = PTHREAD_ONCE_INIT;

static void builtin_free(void)
{
    th_templates_free(builtin_set);
    builtin_set = NULL;
}

static void builtin_init(void)
{
    struct th_template_spec specs[128];
    size_t n = th_msg_pack_specs(specs, TH_ARRAY_LEN(specs));
    char err[256];
    if (n > TH_ARRAY_LEN(specs) ||
        th_templates_build(specs, n, &builtin_set, err, sizeof err) != TH_E_OK)
        abort();          /* static text that does not compile is a programming error */
    atexit(builtin_free); /* keeps leak checkers quiet */
}

const struct th_templates *th_templates_builtin(void)
{
    pthread_once(&builtin_once, builtin_init);
    return builtin_set;
}

const struct th_template *th_template_builtin(th_channel ch)
{
    return th_templates_find(th_templates_builtin(), "en", ch);
}

/* ---- the locale chain ---- */

/* For each candidate of tag: a stored template, else (if enabled) the pack's. */
static const struct th_template *lookup(const struct th_chain *c, const char *tag, th_channel ch,
                                        th_source *src)
{
    char cands[TH_LOCALE_CANDIDATES_MAX][TH_LOCALE_MAX];
    size_t n = th_locale_candidates(tag, cands, TH_LOCALE_CANDIDATES_MAX);
    for (size_t i = 0; i < n; i++) {
        const struct th_template *t = th_templates_find(c->set, cands[i], ch);
        if (t) {
            *src = TH_SOURCE_TEMPLATE;
            return t;
        }
        if (c->pack && (t = th_templates_find(th_templates_builtin(), cands[i], ch))) {
            *src = TH_SOURCE_BUILTIN;
            return t;
        }
    }
    return NULL;
}

void th_message_choose(const struct th_chain *c, th_channel ch, struct th_choice *out)
{
    const char *tags[] = {c->preferred, c->locale, c->default_language};
    th_source src = TH_SOURCE_TEMPLATE;
    for (size_t i = 0; i < TH_ARRAY_LEN(tags); i++) {
        const struct th_template *t = lookup(c, tags[i], ch, &src);
        if (t) {
            *out = (struct th_choice){t, src, t->language, false};
            return;
        }
    }
    /* Okta's msgTemplate is SMS text already holding the code; it is no use for a voice call. */
    if (ch == TH_CHANNEL_SMS && c->has_okta_template) {
        *out = (struct th_choice){NULL, TH_SOURCE_OKTA, c->locale ? c->locale : "", false};
        return;
    }
    const struct th_template *t = th_template_builtin(ch);
    *out = (struct th_choice){t, TH_SOURCE_BUILTIN, t->language, true};
}

/* ---- rendering ---- */

static th_err append_value(struct th_buf *out, const char *v, bool xml)
{
    if (!xml)
        return th_buf_appends(out, v);
    for (const char *p = v; *p && th_buf_err(out) == TH_E_OK; p++) {
        switch (*p) {
        case '&':
            th_buf_appends(out, "&amp;");
            break;
        case '<':
            th_buf_appends(out, "&lt;");
            break;
        case '>':
            th_buf_appends(out, "&gt;");
            break;
        case '"':
            th_buf_appends(out, "&quot;");
            break;
        case '\'':
            th_buf_appends(out, "&apos;");
            break;
        default:
            th_buf_appendc(out, *p);
        }
    }
    return th_buf_err(out);
}

static th_err append_spaced(struct th_buf *out, const char *otp, bool xml)
{
    for (const char *p = otp; *p && th_buf_err(out) == TH_E_OK; p++) {
        if (p != otp)
            th_buf_appends(out, ", ");
        char c[2] = {*p, '\0'};
        append_value(out, c, xml);
    }
    return th_buf_err(out);
}

/* The SMS text rendered at out[start..] as the policy sends it (rewritten in place). */
static th_err prepare_sms(struct th_buf *out, size_t start, th_sms_encoding enc)
{
    if (out->len == start)
        return TH_E_OK;
    struct th_sms_info info;
    th_sms_measure(out->data + start, out->len - start, &info);
    /* GSM-7 already, or a script that stays UCS-2 (most UCS-2 texts): nothing to copy */
    if (info.charset == TH_CHARSET_GSM7 ||
        !th_msg_sms_rewritable(enc, out->data + start, out->len - start))
        return TH_E_OK;
    struct th_buf fixed;
    th_buf_init(&fixed, out->max);
    bool rewritten = false;
    th_err e = th_sms_prepare(enc, out->data + start, out->len - start, &fixed, &rewritten);
    if (e == TH_E_OK && rewritten) {
        th_buf_truncate(out, start);
        e = th_buf_append(out, fixed.data, fixed.len);
    }
    th_buf_release(&fixed);
    return e;
}

th_err th_message_render(const struct th_template *t, const struct th_render_vars *vars,
                         struct th_buf *out)
{
    bool xml = t->channel == TH_CHANNEL_VOICE;
    size_t start = out->len;
    for (size_t i = 0; i < t->nsegs && th_buf_err(out) == TH_E_OK; i++) {
        const struct seg *s = &t->segs[i];
        switch (s->var) {
        case VAR_LITERAL:
            th_buf_append(out, t->body + s->off, s->len);
            break;
        case VAR_OTP:
            append_value(out, vars->otp ? vars->otp : "", xml);
            break;
        case VAR_OTP_SPACED:
            append_spaced(out, vars->otp ? vars->otp : "", xml);
            break;
        case VAR_FIRST_NAME:
            append_value(out, vars->first_name ? vars->first_name : "", xml);
            break;
        case VAR_LAST_NAME:
            append_value(out, vars->last_name ? vars->last_name : "", xml);
            break;
        case VAR_LOGIN:
            append_value(out, vars->login ? vars->login : "", xml);
            break;
        case VAR_EXPIRES_MINUTES:
            th_buf_printf(out, "%d", vars->expires_minutes < 0 ? 5 : vars->expires_minutes);
            break;
        case VAR_EXPIRES_PLURAL: {
            int n = vars->expires_minutes < 0 ? 5 : vars->expires_minutes;
            th_buf_printf(out, "%d ", n);
            if (n == 1)
                th_buf_append(out, t->body + s->off, s->len);
            else
                th_buf_append(out, t->body + s->off2, s->len2);
            break;
        }
        case VAR_EXPIRES: {
            char unit[64];
            th_msg_units_format(t->units, vars->expires_minutes < 0 ? 5 : vars->expires_minutes,
                                unit, sizeof unit);
            th_buf_appends(out, unit);
            break;
        }
        }
    }
    th_err e = th_buf_err(out);
    if (e == TH_E_OK && !xml && vars->sms_encoding != TH_SMS_UCS2)
        e = prepare_sms(out, start, vars->sms_encoding);
    if (e != TH_E_OK) /* never leave half a message behind (a failed out is empty already) */
        th_buf_truncate(out, start);
    return e;
}

void th_message_expires(const char *lang, int minutes, char *out, size_t outlen)
{
    th_msg_units_format(th_msg_units_find(lang), minutes, out, outlen);
}

/* ---- checks ---- */

#define AWS_SMS_MAX   1600 /* SendTextMessage MessageBody */
#define AWS_VOICE_MAX 6000 /* SendVoiceMessage SSML, tags included */

__attribute__((format(printf, 3, 4))) static void note(char *msg, size_t msglen, const char *fmt,
                                                       ...)
{
    size_t n = strlen(msg);
    if (n && n + 2 < msglen) {
        memcpy(msg + n, "; ", 3);
        n += 2;
    }
    if (n + 1 >= msglen)
        return;
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg + n, msglen - n, fmt, ap);
    va_end(ap);
}

/* The language part of a tag, with Polly's codes and Norwegian's three names made one. */
static void base_language(const char *tag, char out[TH_LOCALE_MAX])
{
    size_t n = strcspn(tag, "-_");
    if (n >= TH_LOCALE_MAX)
        n = TH_LOCALE_MAX - 1;
    for (size_t i = 0; i < n; i++)
        out[i] = (char)tolower((unsigned char)tag[i]);
    out[n] = '\0';
    if (strcmp(out, "cmn") == 0 || strcmp(out, "yue") == 0)
        strcpy(out, "zh");
    else if (strcmp(out, "arb") == 0)
        strcpy(out, "ar");
    else if (strcmp(out, "no") == 0 || strcmp(out, "nn") == 0)
        strcpy(out, "nb");
}

th_err th_template_check(const struct th_template *t, th_sms_encoding enc, int max_segments,
                         struct th_template_report *rep, char *msg, size_t msglen)
{
    memset(rep, 0, sizeof *rep);
    if (msglen)
        msg[0] = '\0';
    bool code = false;
    for (size_t i = 0; i < t->nsegs; i++)
        code = code || t->segs[i].var == VAR_OTP || t->segs[i].var == VAR_OTP_SPACED;
    if (!code) {
        rep->errors++;
        note(msg, msglen,
             "the text never gives the code: put {{otp}} or {{otp_spaced}} (or @otp, @otp2) in "
             "it");
    }
    if (t->channel == TH_CHANNEL_SMS) {
        const struct th_sms_info *i = th_template_sms_info(t, enc);
        rep->sms = *i;
        rep->rewritten = i->charset == TH_CHARSET_GSM7 && t->sms[TH_SMS_UCS2].charset != i->charset;
        if (t->voice_id[0]) {
            rep->errors++;
            note(msg, msglen, "a voice id is for voice templates; an SMS template has none");
        }
        /* the measure itself (charset, units, segments) is in rep->sms: callers print it */
        if (max_segments > 0 && i->segments > max_segments) {
            rep->errors++;
            note(msg, msglen,
                 "%d segments with an 8-digit code: over message.max_sms_segments = %d",
                 i->segments, max_segments);
        } else if (i->segments > 1) {
            rep->warnings++;
            note(msg, msglen, "over one segment with an 8-digit code: each segment is billed");
        }
        if (i->chars > AWS_SMS_MAX) {
            rep->errors++;
            note(msg, msglen, "%zu characters: over AWS's %d", i->chars, AWS_SMS_MAX);
        }
        if (enc == TH_SMS_GSM7 && i->charset == TH_CHARSET_UCS2)
            note(msg, msglen,
                 "stays UCS-2 under sms_encoding = gsm7: its script is never "
                 "transliterated");
        if (t->uses_names)
            note(msg, msglen,
                 "measured with sample names: a real name outside GSM-7 makes it "
                 "UCS-2");
        return rep->errors ? TH_E_TEMPLATE : TH_E_OK;
    }
    /* The body as written (placeholders are text there, their values escaped when rendered), so
     * an offset points into what the admin wrote; the length is the rendered one. */
    char why[192];
    if (th_ssml_check(t->body, strlen(t->body), why, sizeof why) != TH_E_OK) {
        rep->errors++;
        note(msg, msglen, "%s", why);
    } else {
        struct th_buf b;
        th_buf_init(&b, (size_t)BODY_MAX * 16);
        struct th_render_vars v = {TH_SAMPLE_OTP,   TH_SAMPLE_FIRST_NAME, TH_SAMPLE_LAST_NAME,
                                   TH_SAMPLE_LOGIN, TH_SAMPLE_MINUTES,    TH_SMS_UCS2};
        struct th_sms_info i = {0};
        th_err e = th_message_render(t, &v, &b);
        if (e == TH_E_OK)
            th_sms_measure(b.data, b.len, &i);
        th_buf_release(&b);
        if (e != TH_E_OK) {
            rep->errors++;
            note(msg, msglen, "does not render: %s", th_strerror(e));
        } else if (i.chars > AWS_VOICE_MAX) {
            rep->errors++;
            note(msg, msglen, "%zu characters of SSML: over AWS's %d", i.chars, AWS_VOICE_MAX);
        }
    }
    const struct th_voice *voice = th_voice_find(t->voice_id);
    if (!t->voice_id[0]) {
        rep->warnings++;
        note(msg, msglen,
             "no voice: AWS speaks it with Matthew (US English), Twilio with its "
             "default voice");
    } else if (!voice || !voice->aws) {
        rep->warnings++;
        note(msg, msglen, "'%.32s' is not an Amazon Polly voice AWS End User Messaging accepts",
             t->voice_id);
    }
    if (voice) {
        char want[TH_LOCALE_MAX], have[TH_LOCALE_MAX];
        base_language(t->language, want);
        base_language(voice->locale, have);
        if (strcmp(want, have) != 0) {
            rep->errors++;
            note(msg, msglen, "voice %s speaks %s, not the template's language (%s)", voice->name,
                 voice->locale, t->language);
        }
    }
    return rep->errors ? TH_E_TEMPLATE : TH_E_OK;
}

th_err th_template_aws_body(const struct th_template *t, struct th_buf *out, char *why,
                            size_t whylen)
{
    size_t start = out->len;
    int mentions = 0;
    why[0] = '\0';
    for (size_t i = 0; i < t->nsegs && th_buf_err(out) == TH_E_OK; i++) {
        const struct seg *s = &t->segs[i];
        char unit[64];
        switch (s->var) {
        case VAR_LITERAL:
            /* its Lambda replaces the first "@otp" it finds, wherever it is */
            for (size_t k = 0; k + 4 <= s->len; k++)
                if (memcmp(t->body + s->off + k, "@otp", 4) == 0)
                    snprintf(why, whylen,
                             "its text holds \"@otp\", which AWS's Lambda would "
                             "replace");
            th_buf_append(out, t->body + s->off, s->len);
            break;
        case VAR_OTP:
        case VAR_OTP_SPACED:
            if (s->var == VAR_OTP_SPACED && t->channel == TH_CHANNEL_SMS)
                snprintf(why, whylen,
                         "{{otp_spaced}} in an SMS: AWS's Lambda sends the code "
                         "as is");
            else if (++mentions > 2)
                snprintf(why, whylen,
                         "the code appears more than twice (AWS's Lambda fills "
                         "@otp and @otp2 once each)");
            th_buf_appends(out, mentions == 1 ? "@otp" : "@otp2");
            break;
        case VAR_FIRST_NAME:
        case VAR_LAST_NAME:
        case VAR_LOGIN:
            snprintf(why, whylen, "it names the user, which AWS's Lambda cannot fill");
            break;
        case VAR_EXPIRES_MINUTES:
            th_buf_appends(out, "5");
            break;
        case VAR_EXPIRES_PLURAL: /* 5 is never 1: the second form */
            th_buf_appends(out, "5 ");
            th_buf_append(out, t->body + s->off2, s->len2);
            break;
        case VAR_EXPIRES:
            th_msg_units_format(t->units, 5, unit, sizeof unit);
            th_buf_appends(out, unit);
            break;
        }
        if (why[0])
            break;
    }
    th_err e = th_buf_err(out);
    if (e == TH_E_OK && why[0])
        e = TH_E_TEMPLATE;
    if (e != TH_E_OK) {
        if (!why[0])
            snprintf(why, whylen, "%s", th_strerror(e));
        th_buf_truncate(out, start);
    }
    return e;
}
