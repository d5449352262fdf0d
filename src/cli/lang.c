/*
 * Languages: the commands that work on templates and users' language preferences: templates
 * preview, check, import-aws and export, prefs set, list and delete. What each command takes and
 * does is in cli.c's command table (its --help); the options come through the shared parser
 * (opts.c).
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

#include "catalog/catalog.h"
#include "cli/internal.h"
#include "common/util.h"
#include "obs/log.h"

#define IMPORT_MAX (4 << 20) /* bytes of an import file */

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
    th_err e = th_catalog_templates_load(st, &cli->cfg, true, set, err, sizeof err);
    th_store_close(st);
    if (e != TH_E_OK) {
        fprintf(stderr, "telehook: %s\n", err);
        return 1;
    }
    return 0;
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
    th_catalog_check_summary(t, &rep, why, summary, sizeof summary);
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
        th_catalog_check_summary(th_templates_at(one, 0), &rep, err, summary, sizeof summary);
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
