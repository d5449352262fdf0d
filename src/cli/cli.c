/* Command dispatch and the admin commands (config, templates, outbox, deliveries). */
#include "cli/cli.h"

#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "cli/internal.h"
#include "common/util.h"
#include "obs/log.h"
#include "phone/phone.h"

#define DEFAULT_CONFIG "/etc/telehook/telehook.conf"

static void usage(FILE *out)
{
    fputs(
        "usage: telehook [-c CONFIG] COMMAND [ARGS]\n"
        "\n"
        "commands:\n"
        "  serve                          run the Okta telephony hook server\n"
        "  config check                   validate the configuration as serve would, print\n"
        "                                 effective values (-t is short for it)\n"
        "  config show                    print effective values without the server's checks\n"
        "  templates list                 list message templates\n"
        "  templates set LANG CHANNEL BODY [VOICE_ID]\n"
        "                                 add or replace a template (CHANNEL: sms | voice)\n"
        "  templates delete LANG CHANNEL  delete a template\n"
        "  routes list                    list delivery routes\n"
        "  routes set CHANNEL COUNTRY ATTEMPTS\n"
        "                                 add or replace a route, e.g. routes set sms US\n"
        "                                 \"aws:+12065550100, twilio\" (CHANNEL: sms | voice | *,\n"
        "                                 COUNTRY: ISO code or *)\n"
        "  routes delete CHANNEL COUNTRY  delete a route\n"
        "  routes import-aws FILE [PROVIDER]\n"
        "                                 import AWS's originationIdentities.json as routes\n"
        "  outbox list [-n N]             latest messages recorded by the outbox provider\n"
        "  deliveries list [-n N] [--since 24h|ISO] [--until ...] [--outcome O]\n"
        "                 [--provider P] [--country CC] [--channel sms|voice]\n"
        "                                 delivery records, newest first\n"
        "  deliveries show REQUEST_ID     one delivery record\n"
        "  version                        print the version\n"
        "\n"
        "CONFIG defaults to $TELEHOOK_CONFIG, else " DEFAULT_CONFIG " if it exists, else\n"
        "built-in defaults; every key can be overridden by TELEHOOK_<SECTION>_<KEY>.\n"
        "Placeholders in BODY: {{otp}} {{otp_spaced}} {{first_name}} {{last_name}} {{login}}\n"
        "{{expires_minutes}} (and @otp, @otp2 from AWS's Okta guidance).\n",
        out);
}

static const char *config_path(const char *opt)
{
    if (opt)
        return opt;
    const char *env = getenv("TELEHOOK_CONFIG");
    if (env && *env)
        return env;
    if (access(DEFAULT_CONFIG, F_OK) == 0)
        return DEFAULT_CONFIG;
    return NULL;
}

struct tpl_rows {
    struct th_template_spec *specs;
    char **strings; /* everything the specs point to */
    size_t n, cap;
    th_err err;
};

static int collect_template(void *ud, const struct th_template_row *row)
{
    struct tpl_rows *t = ud;
    th_channel ch;
    if (th_channel_parse(row->channel, &ch) != TH_E_OK)
        return 0;
    if (t->n == t->cap) {
        size_t ncap = t->cap ? t->cap * 2 : 16;
        struct th_template_spec *s = realloc(t->specs, ncap * sizeof *s);
        if (s)
            t->specs = s;
        char **str = realloc(t->strings, ncap * 3 * sizeof *str);
        if (str)
            t->strings = str;
        if (!s || !str) {
            t->err = TH_E_NOMEM;
            return 1;
        }
        t->cap = ncap;
    }
    char **str = &t->strings[t->n * 3];
    str[0] = strdup(row->language);
    str[1] = strdup(row->body);
    str[2] = strdup(row->voice_id ? row->voice_id : "");
    if (!str[0] || !str[1] || !str[2]) {
        free(str[0]);
        free(str[1]);
        free(str[2]);
        t->err = TH_E_NOMEM;
        return 1;
    }
    /* Validate this template alone, so one bad row is skipped rather than fatal. */
    struct th_template_spec spec = {str[0], ch, str[1], str[2]};
    struct th_templates *one = NULL;
    char why[256];
    if (th_templates_build(&spec, 1, &one, why, sizeof why) != TH_E_OK) {
        th_log_msg(TH_LOG_ERROR, "template_skipped", "template %s/%s: %s", row->language,
                   row->channel, why);
        free(str[0]);
        free(str[1]);
        free(str[2]);
        return 0;
    }
    th_templates_free(one);
    t->specs[t->n++] = spec;
    return 0;
}

th_err th_cli_load_templates(struct th_store *st, struct th_templates **out, char *err,
                             size_t errlen)
{
    struct tpl_rows t = {0};
    th_err e = th_store_templates_each(st, collect_template, &t);
    if (e == TH_E_OK)
        e = t.err;
    if (e == TH_E_OK)
        e = th_templates_build(t.specs, t.n, out, err, errlen);
    else
        snprintf(err, errlen, "cannot read templates: %s", th_strerror(e));
    for (size_t i = 0; i < t.n * 3; i++)
        free(t.strings[i]);
    free(t.strings);
    free(t.specs);
    return e;
}

/* ---- admin commands ---- */

static int open_store(struct th_cli *cli, struct th_store **st)
{
    char err[512];
    if (th_store_open(cli->cfg.store_url, st, err, sizeof err) != TH_E_OK) {
        fprintf(stderr, "telehook: %s\n", err);
        return 1;
    }
    return 0;
}

static int parse_limit(struct th_cli *cli, int *limit)
{
    *limit = 20;
    for (int i = 0; i < cli->argc; i++) {
        if ((strcmp(cli->argv[i], "-n") == 0 || strcmp(cli->argv[i], "--limit") == 0) &&
            i + 1 < cli->argc) {
            char *end;
            long v = strtol(cli->argv[++i], &end, 10);
            if (*end || v < 1 || v > 100000) {
                fprintf(stderr, "telehook: -n: expected a number from 1 to 100000\n");
                return 1;
            }
            *limit = (int)v;
        } else {
            fprintf(stderr, "telehook: unexpected argument '%s'\n", cli->argv[i]);
            return 1;
        }
    }
    return 0;
}

static void print_time(int64_t ms)
{
    char ts[25];
    th_format_iso8601(ms, ts);
    fputs(ts, stdout);
}

static int print_outbox(void *ud, const struct th_outbox_row *row)
{
    (void)ud;
    print_time(row->created_ms);
    printf("  %s  %s  %s  %s  req=%s%s%s\n    %s\n", row->id, row->to, row->channel,
           row->language[0] ? row->language : "-", row->request_id,
           row->voice_id[0] ? "  voice=" : "", row->voice_id, row->body);
    return 0;
}

static int print_delivery(void *ud, const struct th_delivery_row *row)
{
    (void)ud;
    print_time(row->created_ms);
    printf("  %s  %-10s  %-14s  %-2s  %-5s  %-5s  %-8s  %-7s  %lldms  event=%s  tx=%s%s%s\n",
           row->request_id, row->outcome, row->phone_masked[0] ? row->phone_masked : "-",
           row->country[0] ? row->country : "-", row->channel[0] ? row->channel : "-",
           row->language[0] ? row->language : "-", row->source[0] ? row->source : "-",
           row->provider[0] ? row->provider : "-", (long long)(row->latency_us / 1000),
           row->event_id[0] ? row->event_id : "-",
           row->transaction_id[0] ? row->transaction_id : "-", row->error[0] ? "  error=" : "",
           row->error);
    return 0;
}

static int print_template(void *ud, const struct th_template_row *row)
{
    (void)ud;
    printf("%-8s %-5s %s%s\n    %s\n", row->language, row->channel,
           row->voice_id[0] ? "voice=" : "", row->voice_id, row->body);
    return 0;
}

static th_err list_outbox(struct th_store *st, int limit)
{
    return th_store_outbox_each(st, limit, print_outbox, NULL);
}

static int count_delivery(void *ud, const struct th_delivery_row *row)
{
    ++*(int *)ud;
    return print_delivery(NULL, row);
}

/* "2026-11-30T10:00:00Z" or a duration back from now: "90m", "24h", "7d". */
static bool parse_since(const char *v, int64_t *ms)
{
    char *end;
    long n = strtol(v, &end, 10);
    long mult = *end == 'm' ? 60 : *end == 'h' ? 3600 : *end == 'd' ? 86400 : 0;
    if (n > 0 && mult && !end[1]) {
        *ms = th_wall_ms() - (int64_t)n * mult * 1000;
        return true;
    }
    return th_parse_iso8601(v, ms) == TH_E_OK;
}

/*
 * `deliveries list [-n N] [--since T] [--until T] [--outcome O] [--provider P] [--country CC]
 * [--channel sms|voice]` and `deliveries show REQUEST_ID`.
 */
static int cmd_deliveries(struct th_cli *cli, const char *sub)
{
    struct th_delivery_filter f = {.limit = 20};
    bool show = strcmp(sub, "show") == 0;
    if (!show && strcmp(sub, "list") != 0) {
        usage(stderr);
        return 2;
    }
    if (show) {
        if (cli->argc != 1) {
            fprintf(stderr, "usage: telehook deliveries show REQUEST_ID\n");
            return 2;
        }
        f.request_id = cli->argv[0];
        f.limit = 1;
    }
    for (int i = 0; !show && i < cli->argc; i += 2) {
        const char *o = cli->argv[i], *v = i + 1 < cli->argc ? cli->argv[i + 1] : NULL;
        bool ok = v != NULL;
        if (ok && (strcmp(o, "-n") == 0 || strcmp(o, "--limit") == 0))
            ok = (f.limit = atoi(v)) > 0 && f.limit <= 100000;
        else if (ok && strcmp(o, "--since") == 0)
            ok = parse_since(v, &f.since_ms);
        else if (ok && strcmp(o, "--until") == 0)
            ok = parse_since(v, &f.until_ms);
        else if (ok && strcmp(o, "--outcome") == 0)
            f.outcome = v;
        else if (ok && strcmp(o, "--provider") == 0)
            f.provider = v;
        else if (ok && strcmp(o, "--country") == 0)
            f.country = v;
        else if (ok && strcmp(o, "--channel") == 0)
            f.channel = v;
        else
            ok = false;
        if (!ok) {
            fprintf(stderr, "telehook: deliveries list: bad option '%s'\n", o);
            return 2;
        }
    }
    struct th_store *st;
    if (open_store(cli, &st))
        return 1;
    int n = 0;
    th_err e = th_store_deliveries_query(st, &f, count_delivery, &n);
    th_store_close(st);
    if (e == TH_E_OK && show && n == 0) {
        fprintf(stderr, "telehook: no delivery record %s\n", f.request_id);
        return 1;
    }
    return e == TH_E_OK ? 0 : 1;
}

/* `outbox list` and `deliveries list`: the same options over a different table. */
static int cmd_list(struct th_cli *cli, const char *sub, th_err (*list)(struct th_store *, int))
{
    int limit;
    struct th_store *st;
    if (strcmp(sub, "list") != 0) {
        usage(stderr);
        return 2;
    }
    if (parse_limit(cli, &limit) || open_store(cli, &st))
        return 1;
    th_err e = list(st, limit);
    th_store_close(st);
    return e == TH_E_OK ? 0 : 1;
}

static int cmd_templates(struct th_cli *cli, const char *sub)
{
    struct th_store *st;
    if (strcmp(sub, "list") == 0) {
        if (cli->argc || open_store(cli, &st))
            return cli->argc ? 2 : 1;
        th_err e = th_store_templates_each(st, print_template, NULL);
        th_store_close(st);
        return e == TH_E_OK ? 0 : 1;
    }
    bool set = strcmp(sub, "set") == 0;
    if (!set && strcmp(sub, "delete") != 0) {
        usage(stderr);
        return 2;
    }
    if ((set && (cli->argc < 3 || cli->argc > 4)) || (!set && cli->argc != 2)) {
        usage(stderr);
        return 2;
    }
    char lang[TH_LOCALE_MAX];
    th_channel ch;
    if (th_locale_normalize(cli->argv[0], lang) != TH_E_OK) {
        fprintf(stderr, "telehook: '%s' is not a language tag (like en, es, es-MX, pt_BR)\n",
                cli->argv[0]);
        return 2;
    }
    if (th_channel_parse(cli->argv[1], &ch) != TH_E_OK) {
        fprintf(stderr, "telehook: channel must be sms or voice\n");
        return 2;
    }
    if (set) {
        /* Compile it first: a template that cannot render is refused here, not at send time. */
        struct th_template_spec spec = {lang, ch, cli->argv[2], cli->argc == 4 ? cli->argv[3] : ""};
        struct th_templates *one;
        char why[256];
        if (th_templates_build(&spec, 1, &one, why, sizeof why) != TH_E_OK) {
            fprintf(stderr, "telehook: invalid template: %s\n", why);
            return 2;
        }
        th_templates_free(one);
    }
    if (open_store(cli, &st))
        return 1;
    th_err e;
    if (set) {
        struct th_template_row row = {.language = lang,
                                      .channel = th_channel_name(ch),
                                      .body = cli->argv[2],
                                      .voice_id = cli->argc == 4 ? cli->argv[3] : "",
                                      .updated_ms = th_wall_ms()};
        e = th_store_template_put(st, &row);
    } else {
        e = th_store_template_delete(st, lang, th_channel_name(ch));
    }
    th_store_close(st);
    if (e != TH_E_OK) {
        fprintf(stderr, "telehook: %s\n", e == TH_E_NOTFOUND ? "no such template" : th_strerror(e));
        return 1;
    }
    fprintf(stderr, "template %s/%s %s (a running server picks it up on SIGHUP or restart)\n", lang,
            th_channel_name(ch), set ? "saved" : "deleted");
    return 0;
}

int th_cli_main(int argc, char **argv)
{
    const char *cfgopt = NULL;
    bool test_config = false;
    int i = 1;
    while (i < argc && argv[i][0] == '-') {
        if ((strcmp(argv[i], "-c") == 0 || strcmp(argv[i], "--config") == 0) && i + 1 < argc) {
            cfgopt = argv[i + 1];
            i += 2;
        } else if (strcmp(argv[i], "-t") == 0) { /* as nginx -t: check the configuration */
            test_config = true;
            i++;
        } else if (strcmp(argv[i], "-h") == 0 || strcmp(argv[i], "--help") == 0) {
            usage(stdout);
            return 0;
        } else {
            fprintf(stderr, "telehook: unknown option '%s'\n", argv[i]);
            usage(stderr);
            return 2;
        }
    }
    if (i >= argc && !test_config) {
        usage(stderr);
        return 2;
    }
    const char *cmd = test_config ? "config" : argv[i++];
    /* "serve -c FILE" is accepted too: options may follow the command. */
    if (i + 1 < argc && (strcmp(argv[i], "-c") == 0 || strcmp(argv[i], "--config") == 0)) {
        cfgopt = argv[i + 1];
        i += 2;
    }
    if (strcmp(cmd, "help") == 0) {
        usage(stdout);
        return 0;
    }
    if (strcmp(cmd, "version") == 0) {
        printf("telehook %s\n", TH_VERSION);
        return 0;
    }
    bool serve = strcmp(cmd, "serve") == 0;
    const char *sub = NULL;
    if (test_config) {
        sub = "check";
    } else if (!serve) {
        if (i >= argc) {
            usage(stderr);
            return 2;
        }
        sub = argv[i++];
        if (i + 1 < argc && (strcmp(argv[i], "-c") == 0 || strcmp(argv[i], "--config") == 0)) {
            cfgopt = argv[i + 1];
            i += 2;
        }
    }
    struct th_cli cli = {.config_path = config_path(cfgopt), .argc = argc - i, .argv = argv + i};
    char err[1024];
    /* Only the server needs credentials (checked below); admin commands need the store. */
    th_err e = th_config_load(&cli.cfg, cli.config_path, NULL, err, sizeof err);
    if (e != TH_E_OK) {
        fprintf(stderr, "telehook: %s\n", err);
        return 2;
    }
    th_log_init(cli.cfg.log_level, 2);
    /* What loading found worth a warning (a secret file its group can read): logged at start,
     * printed by `config check`. */
    for (const char *w = cli.cfg.warnings; w && *w && (serve || strcmp(cmd, "config") == 0);) {
        int n = (int)strcspn(w, "\n");
        if (serve)
            th_log_msg(TH_LOG_WARN, "config_warning", "%.*s", n, w);
        else
            fprintf(stderr, "telehook: warning: %.*s\n", n, w);
        w += n + (w[n] == '\n');
    }
    bool config_check = strcmp(cmd, "config") == 0 && strcmp(sub, "check") == 0;
    if ((serve || config_check) && th_config_check_serve(&cli.cfg, err, sizeof err) != TH_E_OK) {
        fprintf(stderr, "telehook: %s\n", err);
        th_config_release(&cli.cfg);
        return 2;
    }
    int rc;
    if (serve) {
        rc = cli.argc ? (usage(stderr), 2) : th_cmd_serve(&cli);
    } else if (config_check) {
        cli.check_only = true;
        rc = cli.argc ? (usage(stderr), 2) : (th_cmd_serve(&cli) == 0 ? 0 : 2);
    } else if (strcmp(cmd, "config") == 0 && strcmp(sub, "show") == 0) {
        /* The values as loaded (secrets masked), without the server's checks: for a file that
         * is only part of a configuration, or one for the admin commands. */
        th_config_print(&cli.cfg, stdout);
        rc = 0;
    } else if (strcmp(cmd, "templates") == 0) {
        rc = cmd_templates(&cli, sub);
    } else if (strcmp(cmd, "dlq") == 0) {
        rc = th_cmd_dlq(&cli, sub);
    } else if (strcmp(cmd, "token") == 0) {
        rc = th_cmd_token(&cli, sub);
    } else if (strcmp(cmd, "routes") == 0) {
        rc = th_cmd_routes(&cli, sub);
    } else if (strcmp(cmd, "outbox") == 0) {
        rc = cmd_list(&cli, sub, list_outbox);
    } else if (strcmp(cmd, "deliveries") == 0) {
        rc = cmd_deliveries(&cli, sub);
    } else {
        fprintf(stderr, "telehook: unknown command '%s %s'\n", cmd, sub);
        usage(stderr);
        rc = 2;
    }
    th_config_release(&cli.cfg);
    return rc;
}
