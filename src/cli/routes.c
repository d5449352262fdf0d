/*
 * `telehook routes ...`: the delivery routes in the store, and loading them for the server.
 *
 *   routes list [--json]
 *   routes set CHANNEL COUNTRY ATTEMPTS [--force]   e.g. routes set sms US "aws:+1206..., twilio"
 *   routes delete CHANNEL COUNTRY
 *   routes import-aws FILE [PROVIDER] [--force]     the AWS guidance's originationIdentities.json
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <jansson.h>

#include "catalog/catalog.h"
#include "cli/internal.h"
#include "common/util.h"
#include "route/route.h"
#include "obs/log.h"
#include "provider/provider.h"

static int print_route(void *ud, const struct th_route_row *row)
{
    struct th_listing *l = ud;
    if (l->arr) {
        char t[25] = "";
        if (row->updated_ms > 0)
            th_cli_time(row->updated_ms, t);
        json_array_append_new(l->arr, json_pack("{s:s, s:s, s:s, s:s?}", "channel", row->channel,
                                                "country", row->country, "attempts", row->attempts,
                                                "updated", t[0] ? t : NULL));
    } else {
        if (l->n == 0)
            printf("%-7s %-7s %s\n", "CHANNEL", "COUNTRY", "ATTEMPTS");
        printf("%-7s %-7s %s\n", row->channel, row->country, row->attempts);
    }
    l->n++;
    return 0;
}

int th_cmd_routes_list(struct th_cli *cli)
{
    struct th_store *st;
    if (th_cli_open_store(cli, &st))
        return 1;
    struct th_listing l = th_listing_new(cli);
    th_err e = th_store_routes_each(st, print_route, &l);
    th_store_close(st);
    return th_listing_end(&l, e);
}

/*
 * Refuses (2) a route through a provider this configuration does not set up, unless --force.
 * what names the route in messages ("route sms GB").
 */
static int check_providers(struct th_cli *cli, const struct th_route *r, const char *what)
{
    int rc = 0;
    for (int k = 0; k < r->n; k++) {
        const char *name = r->at[k].provider;
        bool seen = false;
        for (int j = 0; j < k; j++)
            seen = seen || strcmp(r->at[j].provider, name) == 0;
        char why[256] = "";
        if (seen || th_provider_can_set_up(name, &cli->cfg, why, sizeof why))
            continue;
        const char *conf = cli->config_path ? cli->config_path : "the built-in defaults";
        const struct th_provider_kind *kind = th_provider_kind_find(name);
        if (!th_cli_flag(cli, TH_OPT_FORCE)) {
            fprintf(stderr,
                    "telehook: %s: provider %s is not configured in %s (%s).\n"
                    "To use it, %s (docs/providers.md), then restart the server; or store the "
                    "route anyway with --force (the server skips that attempt until %s is set "
                    "up).\n",
                    what, name, conf, why,
                    kind && kind->how_to_configure ? kind->how_to_configure
                                                   : "see docs/providers.md",
                    name);
            rc = 2; /* every such provider is named before giving up */
            continue;
        }
        fprintf(stderr,
                "telehook: warning: %s: provider %s is not configured in %s (%s): a server "
                "with this configuration skips that attempt (log route_skipped, metric "
                "telehook_routes_skipped)\n",
                what, name, conf, why);
    }
    return rc;
}

/* Validates and stores one route; check: refuse an unconfigured provider (check_providers). */
static int put_route(struct th_cli *cli, struct th_store *st, const char *channel,
                     const char *country, const char *attempts, bool check)
{
    struct th_route r = {0};
    char why[256];
    if (th_route_key(channel, country, r.channel, r.country, why, sizeof why) != TH_E_OK ||
        th_route_parse(attempts, NULL, NULL, &r, why, sizeof why) != TH_E_OK) {
        fprintf(stderr, "telehook: invalid route: %s\n", why);
        return 2;
    }
    char what[64];
    snprintf(what, sizeof what, "route %s %s", r.channel, r.country);
    int rc = check ? check_providers(cli, &r, what) : 0;
    if (rc)
        return rc;
    char text[TH_ROUTE_MAX_ATTEMPTS * (TH_ROUTE_SENDER_MAX + 24)];
    th_route_format(&r, text, sizeof text);
    struct th_route_row row = {r.channel, r.country, text, th_wall_ms()};
    th_err e = th_store_route_put(st, &row);
    if (e != TH_E_OK) {
        fprintf(stderr, "telehook: %s\n", th_strerror(e));
        return 1;
    }
    printf("%-7s %-7s %s\n", r.channel, r.country, text);
    return 0;
}

static void saved(void)
{
    fprintf(stderr, "routes saved (a running server picks them up on SIGHUP or restart)\n");
}

int th_cmd_routes_set(struct th_cli *cli)
{
    struct th_store *st;
    if (th_cli_open_store(cli, &st))
        return 1;
    int rc = put_route(cli, st, cli->argv[0], cli->argv[1], cli->argv[2], true);
    th_store_close(st);
    if (rc == 0)
        saved();
    return rc;
}

int th_cmd_routes_delete(struct th_cli *cli)
{
    char ch[8], cc[4], err[256];
    if (th_route_key(cli->argv[0], cli->argv[1], ch, cc, err, sizeof err) != TH_E_OK) {
        fprintf(stderr, "telehook: %s\n", err);
        return 2;
    }
    struct th_store *st;
    if (th_cli_open_store(cli, &st))
        return 1;
    th_err e = th_store_route_delete(st, ch, cc);
    th_store_close(st);
    if (e != TH_E_OK) {
        fprintf(stderr, "telehook: %s\n", e == TH_E_NOTFOUND ? "no such route" : th_strerror(e));
        return 1;
    }
    saved();
    return 0;
}

/* {"US": "+1866...", "DE": "arn:aws:sms-voice:...:sender-id/X/DE", ...} → sms and voice routes. */
int th_cmd_routes_import(struct th_cli *cli)
{
    const char *path = cli->argv[0], *provider = cli->argc == 2 ? cli->argv[1] : "aws";
    json_error_t jerr;
    json_t *doc = json_load_file(path, JSON_REJECT_DUPLICATES, &jerr);
    if (!doc) {
        fprintf(stderr, "telehook: %s:%d: %s\n", path, jerr.line, jerr.text);
        return 2;
    }
    if (!json_is_object(doc)) {
        fprintf(stderr, "telehook: %s: expected an object of country code to identity\n", path);
        json_decref(doc);
        return 2;
    }
    /* the provider is checked once, not for every country */
    struct th_route r = {0};
    char why[256];
    int rc = 0;
    if (th_route_parse(provider, NULL, NULL, &r, why, sizeof why) != TH_E_OK) {
        fprintf(stderr, "telehook: PROVIDER: %s\n", why);
        rc = 2;
    }
    struct th_store *st = NULL;
    if (rc || (rc = check_providers(cli, &r, "routes import-aws")) ||
        (rc = th_cli_open_store(cli, &st))) {
        json_decref(doc);
        return rc;
    }
    int n = 0;
    rc = th_store_begin(st) == TH_E_OK ? 0 : 1;
    const char *country;
    json_t *v;
    json_object_foreach(rc == 0 ? doc : NULL, country, v)
    {
        if (!json_is_string(v)) {
            fprintf(stderr, "telehook: %s: %s: the identity must be a string\n", path, country);
            rc = 2;
            break;
        }
        char attempts[TH_ROUTE_SENDER_MAX + 24];
        snprintf(attempts, sizeof attempts, "%s:%s", provider, json_string_value(v));
        if ((rc = put_route(cli, st, "sms", country, attempts, false)) != 0 ||
            (rc = put_route(cli, st, "voice", country, attempts, false)) != 0)
            break;
        n++;
    }
    if (rc == 0) {
        rc = th_store_commit(st) == TH_E_OK ? 0 : 1;
        fprintf(stderr, "imported %d countries (sms and voice) from %s\n", n, path);
        saved();
    } else {
        th_store_rollback(st);
        fprintf(stderr, "telehook: nothing imported\n");
    }
    th_store_close(st);
    json_decref(doc);
    return rc;
}
