/*
 * The catalog: what the store holds, made ready for the request path — the template set, the
 * users' preference map and the route table — for serve's start and SIGHUP reloads and for the
 * admin commands that show what the server would load.
 */
#include "catalog/catalog.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/util.h"
#include "obs/log.h"

/*
 * The loaders below keep their rows in two parallel arrays: the specs, and three strings per row
 * that the specs point into. Room for row n (cap grows from first, doubling); false when out of
 * memory (the arrays are unchanged then, or grown: both stay valid).
 */
static bool grow_rows(void **specs, size_t spec_size, char ***strings, size_t *cap, size_t n,
                      size_t first)
{
    if (n < *cap)
        return true;
    size_t ncap = *cap ? *cap * 2 : first;
    void *sp = realloc(*specs, ncap * spec_size);
    if (sp)
        *specs = sp;
    char **str = realloc(*strings, ncap * 3 * sizeof *str);
    if (str)
        *strings = str;
    if (!sp || !str)
        return false;
    *cap = ncap;
    return true;
}

/* Copies a, b, c into dst[0..2]; dst, or NULL (nothing kept) when out of memory. */
static char **dup3(char **dst, const char *a, const char *b, const char *c)
{
    dst[0] = strdup(a);
    dst[1] = strdup(b);
    dst[2] = strdup(c);
    if (dst[0] && dst[1] && dst[2])
        return dst;
    free(dst[0]);
    free(dst[1]);
    free(dst[2]);
    return NULL;
}

struct tpl_load {
    struct th_template_spec *specs;
    char **strings; /* 3 per spec: what the specs point to */
    size_t n, cap;
    const struct th_config *cfg;
    bool quiet; /* no log lines (admin commands) */
    th_err err;
};

static void tpl_load_release(struct tpl_load *t)
{
    for (size_t i = 0; i < t->n * 3; i++)
        free(t->strings[i]);
    free(t->strings);
    free(t->specs);
}

/* Whether one stored template may serve: it compiles and is within max_sms_segments. */
static bool vet_template(struct tpl_load *t, const struct th_template_spec *spec)
{
    struct th_templates *one = NULL;
    char why[512];
    if (th_templates_build(spec, 1, &one, why, sizeof why) != TH_E_OK) {
        if (!t->quiet)
            th_log_msg(TH_LOG_ERROR, "template_skipped", "%s", why);
        return false;
    }
    struct th_template_report rep;
    const struct th_template *tpl = th_templates_at(one, 0);
    th_template_check(tpl, (th_sms_encoding)t->cfg->message_sms_encoding,
                      t->cfg->message_max_sms_segments, &rep, why, sizeof why);
    bool over = spec->channel == TH_CHANNEL_SMS && t->cfg->message_max_sms_segments > 0 &&
                rep.sms.segments > t->cfg->message_max_sms_segments;
    char summary[600];
    th_catalog_check_summary(tpl, &rep, why, summary, sizeof summary);
    if (!t->quiet && (rep.errors || rep.warnings))
        th_log_msg(over ? TH_LOG_ERROR : TH_LOG_WARN, over ? "template_skipped" : "template_check",
                   "template %s/%s: %s", th_template_language(tpl),
                   th_channel_name(th_template_channel(tpl)), summary);
    th_templates_free(one);
    return !over;
}

static int collect_template(void *ud, const struct th_template_row *row)
{
    struct tpl_load *t = ud;
    th_channel ch;
    if (th_channel_parse(row->channel, &ch) != TH_E_OK)
        return 0;
    char **str;
    if (!grow_rows((void **)&t->specs, sizeof *t->specs, &t->strings, &t->cap, t->n, 16) ||
        !(str = dup3(&t->strings[t->n * 3], row->language, row->body,
                     row->voice_id ? row->voice_id : ""))) {
        t->err = TH_E_NOMEM;
        return 1;
    }
    struct th_template_spec spec = {str[0], ch, str[1], str[2]};
    if (!vet_template(t, &spec)) {
        free(str[0]);
        free(str[1]);
        free(str[2]);
        return 0;
    }
    t->specs[t->n++] = spec;
    return 0;
}

th_err th_catalog_templates_load(struct th_store *st, const struct th_config *cfg, bool quiet,
                                 struct th_templates **out, char *err, size_t errlen)
{
    struct tpl_load t = {.cfg = cfg, .quiet = quiet};
    th_err e = th_store_templates_each(st, collect_template, &t);
    if (e == TH_E_OK)
        e = t.err;
    if (e == TH_E_OK)
        e = th_templates_build(t.specs, t.n, out, err, errlen);
    else
        snprintf(err, errlen, "cannot read templates: %s", th_strerror(e));
    tpl_load_release(&t);
    return e;
}

struct pref_load {
    struct th_pref_spec *specs;
    char **strings; /* 3 per spec */
    size_t n, cap;
    th_err err;
};

static int collect_pref(void *ud, const struct th_pref_row *row)
{
    struct pref_load *p = ud;
    char lang[TH_LOCALE_MAX];
    th_channel ch;
    if (!th_pref_user_valid(row->user) || th_locale_normalize(row->language, lang) != TH_E_OK ||
        (row->channel[0] && th_channel_parse(row->channel, &ch) != TH_E_OK)) {
        /* One bad row must not stop the service: it is skipped, loudly. */
        th_log_msg(TH_LOG_ERROR, "pref_skipped", "preference for %.64s skipped: language '%.20s'",
                   row->user, row->language);
        return 0;
    }
    char **str;
    if (!grow_rows((void **)&p->specs, sizeof *p->specs, &p->strings, &p->cap, p->n, 64) ||
        !(str = dup3(&p->strings[p->n * 3], row->user, lang, row->channel))) {
        p->err = TH_E_NOMEM;
        return 1;
    }
    p->specs[p->n++] = (struct th_pref_spec){str[0], str[1], str[2]};
    return 0;
}

th_err th_catalog_prefs_load(struct th_store *st, struct th_prefs **out, char *err, size_t errlen)
{
    struct pref_load p = {0};
    th_err e = th_store_prefs_each(st, collect_pref, &p);
    if (e == TH_E_OK)
        e = p.err;
    if (e == TH_E_OK)
        e = th_prefs_build(p.specs, p.n, out, err, errlen);
    else
        snprintf(err, errlen, "cannot read preferences: %s", th_strerror(e));
    for (size_t i = 0; i < p.n * 3; i++)
        free(p.strings[i]);
    free(p.strings);
    free(p.specs);
    return e;
}

/* Appends " tag" to list for each pack language whose SMS stays UCS-2 under gsm7. */
static void pack_lists(char *novoice, size_t nvlen, char *ucs2, size_t ulen)
{
    const struct th_templates *b = th_templates_builtin();
    size_t nv = 0, nu = 0;
    novoice[0] = ucs2[0] = '\0';
    for (size_t i = 0; i < th_pack_count(); i++) {
        const struct th_pack_lang *p = th_pack_at(i);
        if (!p->voice && nv < nvlen)
            nv += (size_t)snprintf(novoice + nv, nvlen - nv, "%s%s", nv ? " " : "", p->tag);
        const struct th_sms_info *s =
            th_template_sms_info(th_templates_find(b, p->tag, TH_CHANNEL_SMS), TH_SMS_GSM7);
        if (s && s->charset == TH_CHARSET_UCS2 && nu < ulen)
            nu += (size_t)snprintf(ucs2 + nu, ulen - nu, "%s%s", nu ? " " : "", p->tag);
    }
}

void th_catalog_log_startup(const struct th_config *cfg, const struct th_templates *stored,
                            const struct th_prefs *prefs)
{
    char novoice[256], ucs2[256];
    pack_lists(novoice, sizeof novoice, ucs2, sizeof ucs2);
    struct th_logline l;
    if (!th_log_begin(&l, TH_LOG_INFO, "languages"))
        return;
    th_log_int(&l, "stored_templates", (long long)th_templates_count(stored));
    th_log_int(&l, "preferences", (long long)th_prefs_count(prefs));
    th_log_str(&l, "sms_encoding",
               th_sms_encoding_name((th_sms_encoding)cfg->message_sms_encoding));
    if (cfg->message_builtin_pack) {
        th_log_int(&l, "pack_languages", (long long)th_pack_count());
        /* voice calls in these go on along the chain: no Polly voice speaks them */
        th_log_str(&l, "pack_no_voice", novoice);
        if (cfg->message_sms_encoding == TH_SMS_GSM7) /* never transliterated: other scripts */
            th_log_str(&l, "gsm7_stays_ucs2", ucs2);
    } else {
        th_log_str(&l, "pack", "off");
    }
    th_log_end(&l);
}

void th_catalog_check_summary(const struct th_template *t, const struct th_template_report *rep,
                              const char *findings, char *out, size_t outlen)
{
    size_t n = 0;
    out[0] = '\0';
    if (th_template_channel(t) == TH_CHANNEL_SMS)
        n = (size_t)snprintf(out, outlen, "%s, %zu units, %d segment%s",
                             th_sms_charset_name(rep->sms.charset), rep->sms.units,
                             rep->sms.segments, rep->sms.segments == 1 ? "" : "s");
    if (findings[0] && n < outlen)
        snprintf(out + n, outlen - n, "%s%s", n ? ": " : "", findings);
}

/* ---- routes ---- */

struct load {
    struct th_routes *rs;
    th_err err;
};

static int collect_route(void *ud, const struct th_route_row *row)
{
    struct load *l = ud;
    struct th_route r = {0};
    char why[256];
    if (th_route_key(row->channel, row->country, r.channel, r.country, why, sizeof why) !=
            TH_E_OK ||
        th_route_parse(row->attempts, NULL, NULL, &r, why, sizeof why) != TH_E_OK) {
        /* One bad row must not stop the service: it is skipped, loudly. */
        th_log_msg(TH_LOG_ERROR, "route_skipped", "route %s %s skipped: %s", row->channel,
                   row->country, why);
        return 0;
    }
    l->err = th_routes_add(l->rs, &r);
    return l->err != TH_E_OK;
}

th_err th_catalog_routes_load(struct th_store *st, struct th_routes **out, char *err, size_t errlen)
{
    struct load l = {0};
    if (th_routes_new(&l.rs) != TH_E_OK)
        return TH_E_NOMEM;
    th_err e = th_store_routes_each(st, collect_route, &l);
    if (e == TH_E_OK)
        e = l.err;
    if (e != TH_E_OK) {
        snprintf(err, errlen, "cannot read routes: %s", th_strerror(e));
        th_routes_free(l.rs);
        return e;
    }
    *out = l.rs;
    return TH_E_OK;
}
