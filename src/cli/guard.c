/*
 * `telehook guard ...`: the guard's shared state (several nodes on PostgreSQL) for an operator.
 *
 *   guard show [--phone N | --user ID | --country CC | --calling-code CODE] [--json]
 *       without a subject: where the state is, its rows per table, the global rate and
 *       today's budget per calling code; with one: that subject's limits now
 *   guard reset (--phone N | --user ID | --country CC | --calling-code CODE)
 *       deletes that subject's limit rows (a number: phone_rate and phone_daily; a user:
 *       user_rate; a country: country_rate), or sets a calling code's count for today back to 0
 *   guard blocks list [--json] [--all] | clear (ID | --prefix HASH | --country CC | --all)
 *       the conversion blocks (guard/conv.h) in the store: listed, or lifted on every node
 *
 * The number or user typed is turned into guard_decide()'s HMAC key under guard.secret here;
 * it is never sent to the database, and printed back only masked. With the guard in memory
 * (SQLite, one node) the state belongs to each serve process: both commands say so and exit 1.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <jansson.h>

#include "cli/internal.h"
#include "common/util.h"
#include "guard/guard.h"
#include "phone/phone.h"
#include "store/store.h"

/* What the command line names: one subject at most. */
struct subject {
    bool any;
    th_guard_subject kind;
    const char *what; /* "phone", "user", "country", "calling_code" */
    char value[300];
    char shown[300]; /* as printed: a number masked */
    int code;        /* --calling-code */
};

static int read_subject(struct th_cli *cli, struct subject *s)
{
    static const enum th_opt opts[] = {TH_OPT_PHONE, TH_OPT_USER, TH_OPT_COUNTRY,
                                       TH_OPT_CALLING_CODE};
    int given = 0;
    for (size_t i = 0; i < sizeof opts / sizeof opts[0]; i++)
        given += th_cli_opt(cli, opts[i]) != NULL;
    *s = (struct subject){0};
    if (given > 1) {
        fprintf(stderr,
                "telehook: guard %s: one of --phone, --user, --country, --calling-code "
                "at a time\n",
                cli->sub);
        return 2;
    }
    const char *v;
    if ((v = th_cli_opt(cli, TH_OPT_PHONE))) {
        struct th_phone ph;
        if (th_phone_parse(v, strlen(v), cli->cfg.phone_default_region, &ph) != TH_E_OK) {
            fprintf(stderr, "telehook: %s: not a valid phone number%s\n",
                    cli->opts->spelled[TH_OPT_PHONE],
                    cli->cfg.phone_default_region[0] ? ""
                                                     : " (without a leading + it needs "
                                                       "phone.default_region)");
            return 2;
        }
        *s = (struct subject){.any = true, .kind = TH_GUARD_PHONE, .what = "phone"};
        snprintf(s->value, sizeof s->value, "%s", ph.e164);
        th_phone_mask(ph.e164, s->shown, sizeof s->shown);
    } else if ((v = th_cli_opt(cli, TH_OPT_USER))) {
        if (!v[0] || strlen(v) > 256) {
            fprintf(stderr, "telehook: %s: 1 to 256 bytes (Okta's user id, 00u...)\n",
                    cli->opts->spelled[TH_OPT_USER]);
            return 2;
        }
        *s = (struct subject){.any = true, .kind = TH_GUARD_USER, .what = "user"};
        snprintf(s->value, sizeof s->value, "%s", v);
        snprintf(s->shown, sizeof s->shown, "%s", v); /* what the operator typed */
    } else if (th_cli_opt(cli, TH_OPT_COUNTRY)) {
        char cc[3];
        if (th_cli_country(cli, TH_OPT_COUNTRY, cc))
            return 2;
        *s = (struct subject){.any = true, .kind = TH_GUARD_COUNTRY, .what = "country"};
        snprintf(s->value, sizeof s->value, "%s", cc);
        snprintf(s->shown, sizeof s->shown, "%s", cc);
    } else if (th_cli_opt(cli, TH_OPT_CALLING_CODE)) {
        const char *c = th_cli_opt(cli, TH_OPT_CALLING_CODE);
        const char *d = c + (c[0] == '+');
        long code = strspn(d, "0123456789") == strlen(d) && strlen(d) <= 3 ? atol(d) : 0;
        if (code < 1 || code > 999) {
            fprintf(stderr,
                    "telehook: %s: '%.20s' is not a calling code (1 to 999, like 44 or "
                    "+44)\n",
                    cli->opts->spelled[TH_OPT_CALLING_CODE], c);
            return 2;
        }
        *s = (struct subject){.any = true, .what = "calling_code", .code = (int)code};
        snprintf(s->shown, sizeof s->shown, "+%ld", code);
    }
    return 0;
}

static int open_admin(struct th_cli *cli, struct th_guard_admin **a)
{
    char err[1024];
    th_err e = th_guard_admin_open(&cli->cfg, a, err, sizeof err);
    if (e != TH_E_OK) {
        fprintf(stderr, "telehook: guard %s: %s\n", cli->sub, err);
        return e == TH_E_CONFIG ? 2 : 1;
    }
    return 0;
}

/* "100 per 1m" */
static void period_text(int64_t us, char *out, size_t cap)
{
    long s = (long)(us / 1000000);
    if (s && s % 86400 == 0)
        snprintf(out, cap, "%ldd", s / 86400);
    else if (s && s % 3600 == 0)
        snprintf(out, cap, "%ldh", s / 3600);
    else if (s && s % 60 == 0)
        snprintf(out, cap, "%ldm", s / 60);
    else
        snprintf(out, cap, "%lds", s);
}

static json_t *limit_json(const struct th_guard_limit_state *l)
{
    return json_pack("{s:s, s:i, s:I, s:b, s:i, s:b, s:f}", "limit", th_block_name(l->limit),
                     "count", (int)l->count, "period_s", (json_int_t)(l->period_us / 1000000),
                     "held", l->held, "used", (int)l->used, "passes", l->wait_us == 0,
                     "refused_for_s", (double)l->wait_us / 1e6);
}

static void limit_line(const struct th_guard_limit_state *l)
{
    char per[16];
    period_text(l->period_us, per, sizeof per);
    printf("%-15s %ld of %ld per %s", th_block_name(l->limit), l->used, l->count, per);
    if (l->wait_us)
        printf(": the next request is refused for %.0f s\n", (double)l->wait_us / 1e6 + 0.5);
    else
        printf(": the next request passes\n");
}

struct budgets {
    json_t *arr;
    int only; /* a calling code: only its row */
    int n;
};

static int budget_row(void *ud, const struct th_guard_budget_state *b)
{
    struct budgets *l = ud;
    if (l->only && b->code != l->only)
        return 0;
    l->n++;
    if (l->arr) {
        json_array_append_new(l->arr,
                              json_pack("{s:i, s:I, s:I}", "calling_code", b->code, "used",
                                        (json_int_t)b->used, "budget", (json_int_t)b->budget));
        return 0;
    }
    char code[16];
    snprintf(code, sizeof code, b->code ? "+%d" : "(other)", b->code);
    if (b->budget < 0)
        printf("  %-13s %ld (no budget)\n", code, b->used);
    else
        printf("  %-13s %ld of %ld%s\n", code, b->used, b->budget,
               b->used >= b->budget ? " (spent: refused until 00:00 UTC)" : "");
    return 0;
}

static void utc_day(char out[11])
{
    time_t t = time(NULL);
    struct tm tm;
    gmtime_r(&t, &tm);
    strftime(out, 11, "%Y-%m-%d", &tm);
}

/* `guard show --phone/--user/--country`: the subject's limits now. */
static int show_limits(struct th_cli *cli, struct th_guard_admin *a, const struct subject *s)
{
    struct th_guard_limit_state l[2];
    int n;
    char err[1024];
    if (th_guard_admin_limits(a, s->kind, s->value, l, &n, err, sizeof err) != TH_E_OK) {
        fprintf(stderr, "telehook: guard show: %s\n", err);
        return 1;
    }
    if (cli->json) {
        json_t *arr = json_array();
        for (int i = 0; i < n; i++)
            json_array_append_new(arr, limit_json(&l[i]));
        return th_cli_print_json(json_pack("{s:s, s:s, s:o}", "state", th_guard_admin_describe(a),
                                           s->what, s->shown, "limits", arr));
    }
    printf("%-15s %s\n", s->what, s->shown);
    for (int i = 0; i < n; i++)
        limit_line(&l[i]);
    if (n == 0)
        printf("(no %s limit is configured)\n", s->what);
    return 0;
}

int th_cmd_guard_show(struct th_cli *cli)
{
    struct subject s;
    struct th_guard_admin *a = NULL;
    int rc = read_subject(cli, &s);
    if (rc || (rc = open_admin(cli, &a)))
        return rc;
    if (s.any && s.code == 0) {
        rc = show_limits(cli, a, &s);
        th_guard_admin_close(a);
        return rc;
    }
    /* the overview, or one calling code's budget */
    char err[1024], day[11];
    utc_day(day);
    struct th_guard_sizes z;
    struct th_guard_limit_state g[2];
    int ng = 0;
    struct budgets b = {cli->json ? json_array() : NULL, s.code, 0};
    rc = 1;
    if (th_guard_admin_sizes(a, &z, err, sizeof err) != TH_E_OK ||
        th_guard_admin_limits(a, TH_GUARD_GLOBAL, "", g, &ng, err, sizeof err) != TH_E_OK)
        goto fail;
    if (!cli->json) {
        printf("state           %s (shared by every node)\n", th_guard_admin_describe(a));
        printf("rows            guard_dedupe %ld, guard_rate %ld, guard_budget %ld\n", z.dedupe,
               z.rate, z.budget);
        if (ng)
            limit_line(&g[0]);
        printf("budgets today   (UTC %s, counted per calling code)\n", day);
    }
    if (th_guard_admin_budgets(a, budget_row, &b, err, sizeof err) != TH_E_OK)
        goto fail;
    if (!cli->json) {
        if (b.n == 0 && s.code)
            printf("  +%-12d 0 of %ld\n", s.code, th_guard_admin_budget(a, s.code));
        else if (b.n == 0)
            printf("  (none counted today)\n");
        th_guard_admin_close(a);
        return 0;
    }
    json_t *doc =
        json_pack("{s:s, s:{s:I, s:I, s:I}, s:o, s:s, s:o}", "state", th_guard_admin_describe(a),
                  "rows", "guard_dedupe", (json_int_t)z.dedupe, "guard_rate", (json_int_t)z.rate,
                  "guard_budget", (json_int_t)z.budget, "global",
                  ng ? limit_json(&g[0]) : json_null(), "day", day, "budgets", b.arr);
    th_guard_admin_close(a);
    return th_cli_print_json(doc);
fail:
    fprintf(stderr, "telehook: guard show: %s\n", err);
    json_decref(b.arr);
    th_guard_admin_close(a);
    return rc;
}

int th_cmd_guard_reset(struct th_cli *cli)
{
    struct subject s;
    struct th_guard_admin *a = NULL;
    int rc = read_subject(cli, &s);
    if (rc)
        return rc;
    if (!s.any) {
        fprintf(stderr, "telehook: guard reset: needs one of --phone, --user, --country, "
                        "--calling-code (`telehook guard reset --help`)\n");
        return 2;
    }
    if ((rc = open_admin(cli, &a)))
        return rc;
    char err[1024], day[11];
    long removed = 0;
    th_err e = s.code ? th_guard_admin_reset_budget(a, s.code, &removed, err, sizeof err)
                      : th_guard_admin_reset_limits(a, s.kind, s.value, &removed, err, sizeof err);
    th_guard_admin_close(a);
    if (e != TH_E_OK) {
        fprintf(stderr, "telehook: guard reset: %s\n", err);
        return 1;
    }
    utc_day(day);
    static const char *const cleared[] = {[TH_GUARD_PHONE] = "phone_rate and phone_daily",
                                          [TH_GUARD_USER] = "user_rate",
                                          [TH_GUARD_COUNTRY] = "country_rate"};
    if (s.code)
        printf("calling code %s: today's count (UTC %s) set back to 0 (%ld row%s deleted); "
               "calling_code_budget counts from 0 again until 00:00 UTC\n",
               s.shown, day, removed, removed == 1 ? "" : "s");
    else
        printf("%s %s: %s cleared (%ld row%s deleted): the next request passes %s; dedupe "
               "records and every other limit are unchanged\n",
               s.what, s.shown, cleared[s.kind], removed, removed == 1 ? "" : "s",
               s.kind == TH_GUARD_PHONE ? "them" : "it");
    return 0;
}

/*
 * ---- `guard blocks list|clear`: the conversion blocks (guard/conv.h) in the store ----
 *
 * The store is the one the nodes share (store.url): the blocks live there whether the guard's
 * limits are in memory or not, and every node reads it every 2 s, so a clear reaches them all.
 */
struct block_list {
    json_t *arr;
    int n;
};

static int block_row(void *ud, const struct th_conv_block_row *row)
{
    struct block_list *l = ud;
    char since[25], until[25], cleared[25] = "";
    th_cli_time(row->since_ms, since);
    th_cli_time(row->until_ms, until);
    if (row->cleared_ms)
        th_cli_time(row->cleared_ms, cleared);
    l->n++;
    if (l->arr) {
        json_array_append_new(
            l->arr, json_pack("{s:s, s:s, s:s, s:s, s:s, s:s, s:s, s:s?, s:I, s:I, s:s}", "id",
                              row->id, "kind", row->kind, "key", row->key, "country", row->country,
                              "prefix", row->masked, "since", since, "until", until, "cleared",
                              row->cleared_ms ? cleared : NULL, "sends", (json_int_t)row->sends,
                              "verified", (json_int_t)row->verified, "mode", row->mode));
        return 0;
    }
    if (l->n == 1)
        printf("%-28s %-7s %-7s %-16s %-24s %-24s %5s %8s %-7s %s\n", "ID", "KIND", "COUNTRY",
               "PREFIX", "SINCE", "UNTIL", "SENDS", "VERIFIED", "MODE", "KEY / CLEARED");
    printf("%-28s %-7s %-7s %-16s %-24s %-24s %5ld %8ld %-7s %s%s%s\n", row->id, row->kind,
           row->country, row->masked[0] ? row->masked : "-", since, until, row->sends,
           row->verified, row->mode, row->key, row->cleared_ms ? " cleared " : "", cleared);
    return 0;
}

static int blocks_list(struct th_cli *cli, struct th_store *st)
{
    struct block_list l = {cli->json ? json_array() : NULL, 0};
    struct th_conv_block_filter f = {.all = th_cli_flag(cli, TH_OPT_ALL),
                                     .now_ms = th_wall_ms(),
                                     .cleared_after_ms = -1,
                                     .limit = 10000};
    if (th_store_conv_blocks_each(st, &f, block_row, &l) != TH_E_OK) {
        fprintf(stderr, "telehook: guard blocks list: cannot read conversion_blocks from %s\n",
                th_store_describe(st));
        json_decref(l.arr);
        return 1;
    }
    if (l.arr)
        return th_cli_print_json(l.arr);
    if (l.n == 0)
        printf(f.all ? "(no conversion block kept)\n" : "(no conversion block active)\n");
    return 0;
}

static int blocks_clear(struct th_cli *cli, struct th_store *st)
{
    const char *prefix = th_cli_opt(cli, TH_OPT_PREFIX);
    char cc[3];
    if (th_cli_country(cli, TH_OPT_COUNTRY, cc))
        return 2;
    bool all = th_cli_flag(cli, TH_OPT_ALL);
    const char *id = cli->argc > 1 ? cli->argv[1] : NULL;
    int given = (id != NULL) + (prefix != NULL) + (cc[0] != '\0') + all;
    if (given != 1) {
        fprintf(stderr, "telehook: guard blocks clear: exactly one of ID, --prefix HASH, "
                        "--country CC, --all\n");
        return 2;
    }
    struct th_conv_block_clear c = {.all = all,
                                    .id = id,
                                    .kind = prefix ? "prefix" : "country",
                                    .key = prefix ? prefix : cc,
                                    .now_ms = th_wall_ms()};
    long n = 0;
    th_err e = th_store_conv_blocks_clear(st, &c, &n);
    if (e == TH_E_NOTFOUND) {
        fprintf(stderr, "telehook: guard blocks clear: no active block matched\n");
        return 1;
    }
    if (e != TH_E_OK) {
        fprintf(stderr, "telehook: guard blocks clear: cannot update conversion_blocks in %s\n",
                th_store_describe(st));
        return 1;
    }
    printf("%ld block%s cleared: every node lifts %s within a few seconds\n", n, n == 1 ? "" : "s",
           n == 1 ? "it" : "them");
    return 0;
}

int th_cmd_guard_blocks(struct th_cli *cli)
{
    const char *what = cli->argv[0];
    bool list = strcmp(what, "list") == 0, clear = strcmp(what, "clear") == 0;
    if (!list && !clear) {
        fprintf(stderr, "telehook: guard blocks: '%s' is not list or clear\n", what);
        return 2;
    }
    if (list && cli->argc > 1) {
        fprintf(stderr, "telehook: guard blocks list: takes no ID\n");
        return 2;
    }
    struct th_store *st;
    int rc = th_cli_open_store(cli, &st);
    if (rc)
        return rc;
    rc = list ? blocks_list(cli, st) : blocks_clear(cli, st);
    th_store_close(st);
    return rc;
}
