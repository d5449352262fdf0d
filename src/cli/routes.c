/*
 * `telehook routes ...`: the delivery routes in the store, and loading them for the server.
 *
 *   routes list
 *   routes set CHANNEL COUNTRY ATTEMPTS      e.g. routes set sms US "aws:+12065550100, twilio"
 *   routes delete CHANNEL COUNTRY
 *   routes import-aws FILE [PROVIDER]        the AWS guidance's originationIdentities.json
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <jansson.h>

#include "cli/internal.h"
#include "common/util.h"
#include "dispatch/route.h"
#include "obs/log.h"

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

th_err th_cli_load_routes(struct th_store *st, struct th_routes **out, char *err, size_t errlen)
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

static int print_route(void *ud, const struct th_route_row *row)
{
    (void)ud;
    printf("%-5s %-3s %s\n", row->channel, row->country, row->attempts);
    return 0;
}

static int put_route(struct th_store *st, const char *channel, const char *country,
                     const char *attempts)
{
    struct th_route r = {0};
    char why[256];
    if (th_route_key(channel, country, r.channel, r.country, why, sizeof why) != TH_E_OK ||
        th_route_parse(attempts, NULL, NULL, &r, why, sizeof why) != TH_E_OK) {
        fprintf(stderr, "telehook: invalid route: %s\n", why);
        return 2;
    }
    char text[TH_ROUTE_MAX_ATTEMPTS * (TH_ROUTE_SENDER_MAX + 24)];
    th_route_format(&r, text, sizeof text);
    struct th_route_row row = {r.channel, r.country, text, th_wall_ms()};
    th_err e = th_store_route_put(st, &row);
    if (e != TH_E_OK) {
        fprintf(stderr, "telehook: %s\n", th_strerror(e));
        return 1;
    }
    printf("%-5s %-3s %s\n", r.channel, r.country, text);
    return 0;
}

/* {"US": "+1866...", "DE": "arn:aws:sms-voice:...:sender-id/X/DE", ...} → sms and voice routes. */
static int import_aws(struct th_store *st, const char *path, const char *provider)
{
    json_error_t jerr;
    json_t *doc = json_load_file(path, JSON_REJECT_DUPLICATES, &jerr);
    if (!doc) {
        fprintf(stderr, "telehook: %s:%d: %s\n", path, jerr.line, jerr.text);
        return 2;
    }
    int rc = 0, n = 0;
    if (!json_is_object(doc)) {
        fprintf(stderr, "telehook: %s: expected an object of country code to identity\n", path);
        rc = 2;
    }
    const char *country;
    json_t *v;
    if (rc == 0 && th_store_begin(st) != TH_E_OK)
        rc = 1;
    json_object_foreach(rc == 0 ? doc : NULL, country, v)
    {
        if (!json_is_string(v)) {
            fprintf(stderr, "telehook: %s: %s: the identity must be a string\n", path, country);
            rc = 2;
            break;
        }
        char attempts[TH_ROUTE_SENDER_MAX + 24];
        snprintf(attempts, sizeof attempts, "%s:%s", provider, json_string_value(v));
        if ((rc = put_route(st, "sms", country, attempts)) != 0 ||
            (rc = put_route(st, "voice", country, attempts)) != 0)
            break;
        n++;
    }
    if (rc == 0) {
        rc = th_store_commit(st) == TH_E_OK ? 0 : 1;
        fprintf(stderr, "imported %d countries (sms and voice) from %s\n", n, path);
    } else {
        th_store_rollback(st);
        fprintf(stderr, "telehook: nothing imported\n");
    }
    json_decref(doc);
    return rc;
}

int th_cmd_routes(struct th_cli *cli, const char *sub)
{
    struct th_store *st;
    int rc;
    char err[512];
    bool list = strcmp(sub, "list") == 0, set = strcmp(sub, "set") == 0,
         del = strcmp(sub, "delete") == 0, imp = strcmp(sub, "import-aws") == 0;
    if ((list && cli->argc != 0) || (set && cli->argc != 3) || (del && cli->argc != 2) ||
        (imp && (cli->argc < 1 || cli->argc > 2)) || !(list || set || del || imp)) {
        fprintf(stderr, "usage: telehook routes list | set CHANNEL COUNTRY ATTEMPTS | delete "
                        "CHANNEL COUNTRY | import-aws FILE [PROVIDER]\n");
        return 2;
    }
    if (th_store_open(cli->cfg.store_url, &st, err, sizeof err) != TH_E_OK) {
        fprintf(stderr, "telehook: %s\n", err);
        return 1;
    }
    if (list) {
        rc = th_store_routes_each(st, print_route, NULL) == TH_E_OK ? 0 : 1;
    } else if (set) {
        rc = put_route(st, cli->argv[0], cli->argv[1], cli->argv[2]);
    } else if (del) {
        char ch[8], cc[4];
        if (th_route_key(cli->argv[0], cli->argv[1], ch, cc, err, sizeof err) != TH_E_OK) {
            fprintf(stderr, "telehook: %s\n", err);
            rc = 2;
        } else {
            th_err e = th_store_route_delete(st, ch, cc);
            rc = e == TH_E_OK ? 0 : 1;
            if (e != TH_E_OK)
                fprintf(stderr, "telehook: %s\n",
                        e == TH_E_NOTFOUND ? "no such route" : th_strerror(e));
        }
    } else {
        rc = import_aws(st, cli->argv[0], cli->argc == 2 ? cli->argv[1] : "aws");
    }
    if (rc == 0 && !list)
        fprintf(stderr, "routes saved (a running server picks them up on SIGHUP or restart)\n");
    th_store_close(st);
    return rc;
}
