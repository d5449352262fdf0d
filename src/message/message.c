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
};

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
    size_t off, len; /* literal slice of body */
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
    t->segs[t->nsegs++] = (struct seg){var, off, len};
    return TH_E_OK;
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

/* ---- built-in English (the end of the chain) ---- */

static const struct th_template_spec builtin_specs[] = {
    {"en", TH_CHANNEL_SMS,
     "Your verification code is {{otp}}. It expires in {{expires_minutes}} minutes.", NULL},
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
        }
    }
    if (e != TH_E_OK) { /* never leave half a message behind */
        out->len = start;
        if (out->data)
            out->data[start] = '\0';
    }
    return e;
}
