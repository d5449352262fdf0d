/*
 * Languages: loading templates and users' language preferences for the server, and the commands
 * that work on them: templates preview, check, import-aws and export, prefs set, list and delete.
 * What each command takes and does is in cli.c's command table (its --help); the options come
 * through the shared parser (opts.c).
 *
 * A running server picks up template and preference changes on SIGHUP or restart.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>

#include <jansson.h>

#include "cli/internal.h"
#include "common/util.h"
#include "obs/log.h"

#define IMPORT_MAX (4 << 20) /* bytes of an import file */

/* ---- loading for the server ---- */

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
    th_lang_check_summary(tpl, &rep, why, summary, sizeof summary);
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

static th_err load_templates(struct th_store *st, const struct th_config *cfg, bool quiet,
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

th_err th_lang_load_templates(struct th_store *st, const struct th_config *cfg,
                              struct th_templates **out, char *err, size_t errlen)
{
    return load_templates(st, cfg, false, out, err, errlen);
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

th_err th_lang_load_prefs(struct th_store *st, struct th_prefs **out, char *err, size_t errlen)
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

void th_lang_log_startup(const struct th_config *cfg, const struct th_templates *stored,
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

/* ---- shared by the commands ---- */

/*
 * The stored templates as the server would load them, without its log lines (the store opened
 * and closed here); prints why not.
 */
static int load_stored(struct th_cli *cli, struct th_templates **set)
{
    struct th_store *st;
    if (th_cli_open_store(cli, &st))
        return 1;
    char err[512];
    th_err e = load_templates(st, &cli->cfg, true, set, err, sizeof err);
    th_store_close(st);
    if (e != TH_E_OK) {
        fprintf(stderr, "telehook: %s\n", err);
        return 1;
    }
    return 0;
}

void th_lang_check_summary(const struct th_template *t, const struct th_template_report *rep,
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

/* ---- templates preview ---- */

/*
 * Indicative USD per SMS segment: AWS End User Messaging's public list prices for transactional
 * SMS, early 2025, rounded, carrier fees included where AWS adds them (US). An order of magnitude
 * for comparing texts, not a quote: prices change and differ by provider, sender type and
 * volume. message.sms_prices ("CC:USD, ...") overrides or adds countries.
 */
static const struct {
    const char cc[3];
    double usd;
} prices[] = {
    {"US", 0.0088}, {"CA", 0.0075}, {"GB", 0.035},  {"DE", 0.080}, {"FR", 0.070},
    {"ES", 0.070},  {"BR", 0.030},  {"IN", 0.0035}, {"JP", 0.075},
};
#define PRICES_DATE "2025-01"

/* The price for cc from message.sms_prices, else the table; -1 when unknown or invalid. */
static double price_for(const char *conf, const char *cc, bool *from_conf, char *err, size_t errlen)
{
    *from_conf = false;
    const char *p = conf ? conf : "";
    while (*p) {
        while (*p == ' ' || *p == ',' || *p == '\t')
            p++;
        if (!*p)
            break;
        char code[3] = {0};
        if (!((p[0] >= 'A' && p[0] <= 'Z') || (p[0] >= 'a' && p[0] <= 'z')) ||
            !((p[1] >= 'A' && p[1] <= 'Z') || (p[1] >= 'a' && p[1] <= 'z')) || p[2] != ':') {
            snprintf(err, errlen, "message.sms_prices: expected CC:USD, got '%.20s'", p);
            return -2;
        }
        code[0] = (char)(p[0] & ~0x20);
        code[1] = (char)(p[1] & ~0x20);
        char *end;
        errno = 0;
        double v = strtod(p + 3, &end);
        if (end == p + 3 || errno || v < 0 || v > 10 || (*end && *end != ',' && *end != ' ')) {
            snprintf(err, errlen, "message.sms_prices: bad price for %s", code);
            return -2;
        }
        if (strcmp(code, cc) == 0) {
            *from_conf = true;
            return v;
        }
        p = end;
    }
    for (size_t i = 0; i < TH_ARRAY_LEN(prices); i++)
        if (strcmp(prices[i].cc, cc) == 0)
            return prices[i].usd;
    return -1;
}

int th_cmd_templates_preview(struct th_cli *cli)
{
    char lang[TH_LOCALE_MAX];
    th_channel ch;
    if (th_locale_normalize(cli->argv[0], lang) != TH_E_OK) {
        fprintf(stderr, "telehook: LANG: '%s' is not a language tag (like en, es, es-MX, pt_BR)\n",
                cli->argv[0]);
        return 2;
    }
    if (th_channel_parse(cli->argv[1], &ch) != TH_E_OK) {
        fprintf(stderr, "telehook: CHANNEL: '%s' is not one of sms, voice\n", cli->argv[1]);
        return 2;
    }
    struct th_render_vars v = {TH_SAMPLE_OTP,       TH_SAMPLE_FIRST_NAME,
                               TH_SAMPLE_LAST_NAME, TH_SAMPLE_LOGIN,
                               TH_SAMPLE_MINUTES,   (th_sms_encoding)cli->cfg.message_sms_encoding};
    const char *otp = th_cli_opt(cli, TH_OPT_OTP);
    if (otp) {
        bool ok = *otp && strlen(otp) <= 16;
        for (const char *c = otp; *c; c++)
            ok = ok &&
                 ((*c >= '0' && *c <= '9') || (*c >= 'A' && *c <= 'Z') || (*c >= 'a' && *c <= 'z'));
        if (!ok) {
            fprintf(stderr, "telehook: %s: '%.40s' is not 1 to 16 letters or digits\n",
                    cli->opts->spelled[TH_OPT_OTP], otp);
            return 2;
        }
        v.otp = otp;
    }
    if (th_cli_opt(cli, TH_OPT_FIRST_NAME))
        v.first_name = th_cli_opt(cli, TH_OPT_FIRST_NAME);
    if (th_cli_opt(cli, TH_OPT_LAST_NAME))
        v.last_name = th_cli_opt(cli, TH_OPT_LAST_NAME);
    if (th_cli_opt(cli, TH_OPT_LOGIN))
        v.login = th_cli_opt(cli, TH_OPT_LOGIN);
    long minutes;
    char country[3];
    if (th_cli_number(cli, TH_OPT_EXPIRES, 1, 1440, TH_SAMPLE_MINUTES, &minutes) ||
        th_cli_country(cli, TH_OPT_COUNTRY, country))
        return 2;
    v.expires_minutes = (int)minutes;
    if (!country[0])
        th_strlcpy(country, cli->cfg.phone_default_region[0] ? cli->cfg.phone_default_region : "US",
                   sizeof country);
    char perr[128];
    bool conf_price = false;
    double price = -1;
    if (ch == TH_CHANNEL_SMS && (price = price_for(cli->cfg.message_sms_prices, country,
                                                   &conf_price, perr, sizeof perr)) == -2) {
        fprintf(stderr, "telehook: %s\n", perr);
        return 2;
    }
    struct th_templates *set = NULL;
    int rc = load_stored(cli, &set);
    if (rc)
        return rc;
    struct th_chain chain = {.set = set,
                             .locale = lang,
                             .default_language = cli->cfg.message_default_language,
                             .pack = cli->cfg.message_builtin_pack};
    struct th_choice c;
    th_message_choose(&chain, ch, &c);
    struct th_buf out;
    th_buf_init(&out, 1 << 16);
    if (th_message_render(c.tpl, &v, &out) != TH_E_OK) {
        fprintf(stderr, "telehook: the template does not render\n");
        th_buf_release(&out);
        th_templates_free(set);
        return 1;
    }
    struct th_sms_info info;
    th_sms_measure(out.data ? out.data : "", out.len, &info);
    const struct th_voice *voice =
        ch == TH_CHANNEL_VOICE ? th_voice_find(th_template_voice_id(c.tpl)) : NULL;
    char upper[32] = "";
    for (size_t k = 0; voice && voice->name[k] && k < sizeof upper - 1; k++) {
        upper[k] = (char)(voice->name[k] >= 'a' && voice->name[k] <= 'z' ? voice->name[k] - 32
                                                                         : voice->name[k]);
        upper[k + 1] = '\0';
    }
    const struct th_pack_lang *pl = th_pack_find(lang);
    const char *note = ch == TH_CHANNEL_VOICE && pl ? pl->note : NULL;
    const char *source = c.source == TH_SOURCE_TEMPLATE ? "stored" : "builtin";
    if (cli->json) {
        json_t *o = json_pack(
            "{s:s, s:s, s:s, s:s, s:b, s:o, s:I}", "requested", lang, "language", c.language,
            "channel", th_channel_name(ch), "source", source, "last_resort", c.last_resort, "text",
            th_cli_json_text(th_buf_str(&out)), "characters", (json_int_t)info.chars);
        if (o && ch == TH_CHANNEL_SMS) {
            json_object_set_new(o, "charset", json_string(th_sms_charset_name(info.charset)));
            json_object_set_new(
                o, "sms_encoding",
                json_string(th_sms_encoding_name((th_sms_encoding)cli->cfg.message_sms_encoding)));
            json_object_set_new(o, "units", json_integer((json_int_t)info.units));
            json_object_set_new(o, "segments", json_integer(info.segments));
            json_object_set_new(
                o, "cost",
                price < 0
                    ? json_null()
                    : json_pack("{s:s, s:f, s:f, s:s}", "country", country, "usd_per_segment",
                                price, "usd", price * info.segments, "price_from",
                                conf_price ? "message.sms_prices" : "indicative, " PRICES_DATE));
        } else if (o) {
            json_object_set_new(o, "voice_id", th_cli_json_text(th_template_voice_id(c.tpl)));
            json_object_set_new(o, "voice_locale",
                                voice ? json_string(voice->locale) : json_null());
            json_object_set_new(o, "note", note ? json_string(note) : json_null());
        }
        rc = th_cli_print_json(o);
    } else {
        printf("template: %s/%s (%s%s)\n", c.language, th_channel_name(ch),
               c.source == TH_SOURCE_TEMPLATE ? "stored" : "built-in",
               c.last_resort ? ", the end of the locale chain" : "");
        if (strcmp(c.language, lang) != 0)
            printf("note: no %s template; the locale chain chose %s\n", lang, c.language);
        printf("%s\n", th_buf_str(&out));
    }
    if (!cli->json && ch == TH_CHANNEL_SMS) {
        printf("encoding: %s (message.sms_encoding = %s), %zu characters, %zu %s, %d segment%s\n",
               th_sms_charset_name(info.charset),
               th_sms_encoding_name((th_sms_encoding)cli->cfg.message_sms_encoding), info.chars,
               info.units, info.charset == TH_CHARSET_GSM7 ? "septets" : "UTF-16 units",
               info.segments, info.segments == 1 ? "" : "s");
        if (price < 0)
            printf("cost: no price for %s (set message.sms_prices = %s:USD)\n", country, country);
        else
            printf("cost: %d × %.4f USD (%s, %s) = %.4f USD per message\n", info.segments, price,
                   country, conf_price ? "message.sms_prices" : "indicative, " PRICES_DATE,
                   price * info.segments);
        if (info.segments > 1)
            printf("warning: over one segment: each segment is billed\n");
    } else if (!cli->json) {
        const char *vid = th_template_voice_id(c.tpl);
        printf("SSML: %zu characters\n", info.chars);
        if (voice)
            printf("voice: %s (%s, standard); AWS VoiceId %s%s; Twilio <Say voice=\"Polly.%s\" "
                   "language=\"%s\">\n",
                   voice->name, voice->locale, upper, voice->aws ? "" : " (not accepted by AWS)",
                   voice->name, voice->locale);
        else
            printf("voice: %s\n", vid[0] ? vid : "none (AWS: Matthew; Twilio: its default)");
        if (note)
            printf("note: %s\n", note);
    }
    th_buf_release(&out);
    th_templates_free(set);
    return rc;
}

/* ---- templates check ---- */

struct check_rows {
    struct th_cli *cli;
    json_t *arr; /* --json */
    int ok, warn, bad;
};

static void check_result(struct check_rows *c, const char *lang, const char *channel,
                         const char *result, const char *summary)
{
    if (c->arr) {
        json_array_append_new(c->arr,
                              json_pack("{s:o, s:o, s:s, s:o}", "language", th_cli_json_text(lang),
                                        "channel", th_cli_json_text(channel), "result", result,
                                        "findings", th_cli_json_text(summary)));
        return;
    }
    printf("%-5s %s/%s%s%s\n",
           strcmp(result, "ok") == 0        ? "OK"
           : strcmp(result, "warning") == 0 ? "WARN"
                                            : "ERROR",
           lang, channel, summary[0] ? ": " : "", summary);
}

static int check_row(void *ud, const struct th_template_row *row)
{
    struct check_rows *c = ud;
    th_channel ch;
    struct th_templates *one = NULL;
    char why[1024], summary[1200];
    if (th_channel_parse(row->channel, &ch) != TH_E_OK) {
        check_result(c, row->language, row->channel, "error", "unknown channel");
        c->bad++;
        return 0;
    }
    struct th_template_spec spec = {row->language, ch, row->body, row->voice_id};
    if (th_templates_build(&spec, 1, &one, why, sizeof why) != TH_E_OK) {
        check_result(c, row->language, row->channel, "error", why);
        c->bad++;
        return 0;
    }
    struct th_template_report rep;
    const struct th_template *t = th_templates_at(one, 0);
    th_err e = th_template_check(t, (th_sms_encoding)c->cli->cfg.message_sms_encoding,
                                 c->cli->cfg.message_max_sms_segments, &rep, why, sizeof why);
    th_lang_check_summary(t, &rep, why, summary, sizeof summary);
    const char *result = e != TH_E_OK ? "error" : rep.warnings ? "warning" : "ok";
    check_result(c, row->language, row->channel, result, summary);
    if (e != TH_E_OK)
        c->bad++;
    else if (rep.warnings)
        c->warn++;
    else
        c->ok++;
    th_templates_free(one);
    return 0;
}

int th_cmd_templates_check(struct th_cli *cli)
{
    struct th_store *st;
    if (th_cli_open_store(cli, &st))
        return 1;
    struct check_rows c = {.cli = cli, .arr = cli->json ? json_array() : NULL};
    th_err e = th_store_templates_each(st, check_row, &c);
    th_store_close(st);
    if (e != TH_E_OK) {
        json_decref(c.arr);
        fprintf(stderr, "telehook: cannot read the store: %s\n", th_strerror(e));
        return 1;
    }
    int total = c.ok + c.warn + c.bad;
    if (c.arr && th_cli_print_json(c.arr) != 0)
        return 1;
    fprintf(c.arr ? stderr : stdout,
            "%d stored template%s: %d ok, %d with warnings, %d with errors (the %zu built-in "
            "languages are checked by the test suite)\n",
            total, total == 1 ? "" : "s", c.ok, c.warn, c.bad, th_pack_count());
    return c.bad ? 1 : 0;
}

/* ---- templates import-aws ---- */

static char *slurp(const char *path, size_t *len)
{
    FILE *f = fopen(path, "rb");
    struct stat sb;
    if (!f)
        return NULL;
    if (fstat(fileno(f), &sb) != 0 || sb.st_size > IMPORT_MAX) {
        fclose(f);
        errno = EFBIG;
        return NULL;
    }
    char *buf = malloc((size_t)sb.st_size + 1);
    size_t n = buf ? fread(buf, 1, (size_t)sb.st_size, f) : 0;
    fclose(f);
    if (!buf)
        return NULL;
    buf[n] = '\0';
    *len = n;
    return buf;
}

int th_cmd_templates_import_aws(struct th_cli *cli)
{
    bool dry = th_cli_flag(cli, TH_OPT_DRY_RUN);
    const char *path = cli->argv[0];
    size_t len = 0;
    char *text = slurp(path, &len);
    if (!text) {
        fprintf(stderr, "telehook: %s: %s\n", path,
                errno == EFBIG ? "over 4 MiB" : strerror(errno));
        return 2;
    }
    struct th_aws_items items;
    char err[512];
    th_err e = th_aws_items_parse(text, len, &items, err, sizeof err);
    free(text);
    if (e != TH_E_OK) {
        fprintf(stderr, "telehook: %s: %s\n", path, err);
        return 2;
    }
    int bad = 0;
    for (size_t i = 0; i < items.n; i++) {
        const struct th_aws_item *it = &items.items[i];
        struct th_template_spec spec = {it->language, it->channel, it->body, it->voice_id};
        struct th_templates *one = NULL;
        if (th_templates_build(&spec, 1, &one, err, sizeof err) != TH_E_OK) {
            fprintf(stderr, "item %zu: %s\n", i + 1, err);
            bad++;
            continue;
        }
        struct th_template_report rep;
        th_err ce = th_template_check(th_templates_at(one, 0),
                                      (th_sms_encoding)cli->cfg.message_sms_encoding,
                                      cli->cfg.message_max_sms_segments, &rep, err, sizeof err);
        char summary[700];
        th_lang_check_summary(th_templates_at(one, 0), &rep, err, summary, sizeof summary);
        if (ce != TH_E_OK || rep.warnings)
            fprintf(stderr, "item %zu (%s/%s): %s%s\n", i + 1, it->language,
                    th_channel_name(it->channel), ce != TH_E_OK ? "error: " : "", summary);
        bad += ce != TH_E_OK;
        th_templates_free(one);
    }
    int rc = 0;
    if (bad) {
        fprintf(stderr, "telehook: %d of %zu items refused: nothing imported\n", bad, items.n);
        rc = 2;
    } else if (dry) {
        fprintf(stderr, "%zu templates would be imported from %s (dry run)\n", items.n, path);
    } else {
        struct th_store *st;
        if (th_cli_open_store(cli, &st)) {
            th_aws_items_release(&items);
            return 1;
        }
        e = th_store_begin(st);
        for (size_t i = 0; i < items.n && e == TH_E_OK; i++) {
            const struct th_aws_item *it = &items.items[i];
            struct th_template_row row = {it->language, th_channel_name(it->channel), it->body,
                                          it->voice_id, th_wall_ms()};
            e = th_store_template_put(st, &row);
        }
        if (e == TH_E_OK)
            e = th_store_commit(st);
        else
            th_store_rollback(st);
        th_store_close(st);
        if (e != TH_E_OK) {
            fprintf(stderr, "telehook: %s: nothing imported\n", th_strerror(e));
            rc = 1;
        } else {
            for (size_t i = 0; i < items.n; i++)
                printf("%-8s %-5s %s\n", items.items[i].language,
                       th_channel_name(items.items[i].channel), items.items[i].voice_id);
            fprintf(stderr,
                    "imported %zu templates from %s (a running server picks them up on "
                    "SIGHUP or restart)\n",
                    items.n, path);
        }
    }
    th_aws_items_release(&items);
    return rc;
}

/* ---- templates export --aws ---- */

static void export_skipped(void *ud, const struct th_template *t, const char *why)
{
    (void)ud;
    fprintf(stderr, "left out %s/%s: %s\n", th_template_language(t),
            th_channel_name(th_template_channel(t)), why);
}

int th_cmd_templates_export(struct th_cli *cli)
{
    bool builtin = th_cli_flag(cli, TH_OPT_BUILTIN);
    const char *path = cli->argc ? cli->argv[0] : NULL;
    if (!th_cli_flag(cli, TH_OPT_AWS)) {
        fprintf(stderr, "telehook templates export: which format? --aws (the only one: AWS's "
                        "Okta guidance's DynamoDB items)\n");
        return 2;
    }
    struct th_templates *set = NULL;
    int rc = load_stored(cli, &set);
    if (rc)
        return rc;
    const struct th_templates *b = builtin ? th_templates_builtin() : NULL;
    size_t n = th_templates_count(set) + th_templates_count(b), k = 0;
    const struct th_template **all = calloc(n ? n : 1, sizeof *all);
    if (!all) {
        th_templates_free(set);
        return 1;
    }
    for (size_t i = 0; i < th_templates_count(set); i++)
        all[k++] = th_templates_at(set, i);
    for (size_t i = 0; i < th_templates_count(b); i++) {
        const struct th_template *t = th_templates_at(b, i);
        if (!th_templates_find(set, th_template_language(t), th_template_channel(t)))
            all[k++] = t;
    }
    char *json = NULL;
    th_err e = th_aws_items_format(all, k, export_skipped, NULL, &json);
    free(all);
    if (e == TH_E_OK) {
        FILE *f = path ? fopen(path, "w") : stdout;
        if (!f) {
            fprintf(stderr, "telehook: %s: %s\n", path, strerror(errno));
            rc = 1;
        } else {
            fprintf(f, "%s\n", json);
            if ((path && fclose(f) != 0) || (!path && fflush(f) != 0)) {
                fprintf(stderr, "telehook: %s: write failed\n", path ? path : "stdout");
                rc = 1;
            }
        }
    } else {
        fprintf(stderr, "telehook: %s\n", th_strerror(e));
        rc = 1;
    }
    free(json);
    th_templates_free(set);
    return rc;
}

/* ---- prefs ---- */

static int print_pref(void *ud, const struct th_pref_row *row)
{
    struct th_listing *l = ud;
    char ts[25];
    th_format_iso8601(row->updated_ms, ts);
    if (l->arr) {
        json_array_append_new(l->arr,
                              json_pack("{s:o, s:o, s:o, s:s}", "user", th_cli_json_text(row->user),
                                        "language", th_cli_json_text(row->language), "channel",
                                        th_cli_json_text(row->channel), "updated", ts));
    } else {
        if (l->n == 0)
            printf("%-40s %-8s %-7s %s\n", "USER", "LANGUAGE", "CHANNEL", "UPDATED");
        printf("%-40s %-8s %-7s %s\n", row->user, row->language,
               row->channel[0] ? row->channel : "-", ts);
    }
    l->n++;
    return 0;
}

int th_cmd_prefs_list(struct th_cli *cli)
{
    struct th_store *st;
    if (th_cli_open_store(cli, &st))
        return 1;
    struct th_listing l = th_listing_new(cli);
    th_err e = th_store_prefs_each(st, print_pref, &l);
    th_store_close(st);
    return th_listing_end(&l, e);
}

/* USER of prefs set / delete; prints why not. */
static int pref_user(const char *user)
{
    if (th_pref_user_valid(user))
        return 0;
    fprintf(stderr,
            "telehook: USER: '%.40s' is not an Okta userId or login (1 to 256 bytes, no "
            "control characters, no leading or trailing space)\n",
            user);
    return 2;
}

int th_cmd_prefs_set(struct th_cli *cli)
{
    const char *user = cli->argv[0];
    char lang[TH_LOCALE_MAX];
    th_channel ch = TH_CHANNEL_SMS;
    if (pref_user(user))
        return 2;
    if (th_locale_normalize(cli->argv[1], lang) != TH_E_OK) {
        fprintf(stderr, "telehook: LANG: '%s' is not a language tag (like en, es, es-MX, pt_BR)\n",
                cli->argv[1]);
        return 2;
    }
    if (cli->argc == 3 && th_channel_parse(cli->argv[2], &ch) != TH_E_OK) {
        fprintf(stderr, "telehook: CHANNEL: '%s' is not one of sms, voice\n", cli->argv[2]);
        return 2;
    }
    struct th_store *st;
    if (th_cli_open_store(cli, &st))
        return 1;
    struct th_pref_row row = {user, lang, cli->argc == 3 ? th_channel_name(ch) : "", th_wall_ms()};
    th_err e = th_store_pref_put(st, &row);
    th_store_close(st);
    if (e != TH_E_OK) {
        fprintf(stderr, "telehook: %s\n", th_strerror(e));
        return 1;
    }
    char cands[TH_LOCALE_CANDIDATES_MAX][TH_LOCALE_MAX];
    size_t nc = th_locale_candidates(lang, cands, TH_LOCALE_CANDIDATES_MAX);
    bool covered = false;
    for (size_t i = 0; i < nc; i++)
        covered = covered || th_pack_find(cands[i]);
    if (!covered)
        fprintf(stderr,
                "note: no built-in %s text: store one (templates set), or the chain goes on to "
                "the request's locale\n",
                lang);
    fprintf(stderr, "preference saved (a running server picks it up on SIGHUP or restart)\n");
    return 0;
}

int th_cmd_prefs_delete(struct th_cli *cli)
{
    if (pref_user(cli->argv[0]))
        return 2;
    struct th_store *st;
    if (th_cli_open_store(cli, &st))
        return 1;
    th_err e = th_store_pref_delete(st, cli->argv[0]);
    th_store_close(st);
    if (e != TH_E_OK) {
        fprintf(stderr, "telehook: %s\n",
                e == TH_E_NOTFOUND ? "no preference for this user" : th_strerror(e));
        return 1;
    }
    fprintf(stderr, "preference deleted (a running server picks it up on SIGHUP or restart)\n");
    return 0;
}
