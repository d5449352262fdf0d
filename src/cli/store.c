/*
 * `telehook store ...`: the store itself, whichever backend store.url names.
 *
 *   store migrate          apply pending schema migrations, print the schema version
 *   store status [--json]  backend, where (never a password), schema version, pending
 *                          migrations, rows per table; applies nothing
 *   store copy FROM TO     every table of one store into another, in one transaction on TO
 *                          (store/store.h th_store_copy); FROM and TO are store URLs as
 *                          store.url takes them, or config:FILE for the store.url that
 *                          `telehook -c FILE` uses (so a password stays out of argv and ps)
 *
 * The server and every command migrate on open already; `store migrate` lets a deployment do it
 * once, before the nodes start (PostgreSQL serialises concurrent migrations all the same).
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <jansson.h>

#include "cli/internal.h"
#include "common/util.h"

/* "postgresql" or "sqlite", from the description (which starts with the scheme). */
static const char *backend_of(const char *describe)
{
    return strncmp(describe, "postgres", 8) == 0 ? "postgresql" : "sqlite";
}

int th_cmd_store_migrate(struct th_cli *cli)
{
    struct th_store *st;
    char err[1024];
    struct th_store_status s0 = {0};
    /* the version before, to say what was applied */
    if (th_store_open_unmigrated(cli->cfg.store_url, &st, err, sizeof err) == TH_E_OK) {
        th_store_status(st, &s0);
        th_store_close(st);
    }
    if (th_cli_open_store(cli, &st))
        return 1;
    struct th_store_status s;
    th_err e = th_store_status(st, &s);
    if (e != TH_E_OK) {
        fprintf(stderr, "telehook: %s: cannot read the schema version\n", th_store_describe(st));
        th_store_close(st);
        return 1;
    }
    printf("%s: schema version %d (%d migration%s applied)\n", th_store_describe(st), s.version,
           s.version - s0.version, s.version - s0.version == 1 ? "" : "s");
    th_store_close(st);
    return 0;
}

int th_cmd_store_status(struct th_cli *cli)
{
    struct th_store *st;
    char err[1024];
    if (th_store_open_unmigrated(cli->cfg.store_url, &st, err, sizeof err) != TH_E_OK) {
        fprintf(stderr, "telehook: %s\n", err);
        return 1;
    }
    struct th_store_status s;
    th_err e = th_store_status(st, &s);
    const char *where = th_store_describe(st);
    if (e != TH_E_OK) {
        fprintf(stderr, "telehook: %s: cannot read the store's status\n", where);
        th_store_close(st);
        return 1;
    }
    int pending = s.latest > s.version ? s.latest - s.version : 0;
    int rc = 0;
    if (cli->json) {
        json_t *rows = json_object();
        for (int i = 0; i < TH_STORE_TABLES; i++)
            json_object_set_new(rows, th_store_tables[i],
                                s.rows[i] < 0 ? json_null() : json_integer(s.rows[i]));
        rc = th_cli_print_json(json_pack("{s:s, s:s, s:i, s:i, s:i, s:o}", "backend",
                                         backend_of(where), "url", where, "schema_version",
                                         s.version, "latest_version", s.latest, "pending", pending,
                                         "rows", rows));
    } else {
        printf("backend         %s\n", backend_of(where));
        printf("url             %s\n", where);
        printf("schema version  %d (this telehook: %d)\n", s.version, s.latest);
        printf("pending         %d%s\n", pending,
               pending ? " (telehook store migrate, or any command, applies them)" : "");
        if (s.version > s.latest)
            printf("warning         the database is newer than this telehook: upgrade it\n");
        for (int i = 0; i < TH_STORE_TABLES; i++) {
            if (s.rows[i] < 0)
                printf("%-15s -\n", th_store_tables[i]);
            else
                printf("%-15s %ld\n", th_store_tables[i], s.rows[i]);
        }
    }
    th_store_close(st);
    return rc;
}

/*
 * The URL of one side of a copy: as given, or config:FILE's store.url (a malloc'ed copy into
 * *owned). 0, or 2 with the reason printed.
 */
static int copy_side(const char *arg, const char *which, const char **url, char **owned)
{
    *owned = NULL;
    *url = arg;
    if (strncmp(arg, "config:", 7) != 0)
        return 0;
    struct th_config cfg;
    char err[1024];
    if (th_config_load(&cfg, arg + 7, NULL, err, sizeof err) != TH_E_OK) {
        fprintf(stderr, "telehook: store copy: %s: %s\n", which, err);
        return 2;
    }
    *owned = strdup(cfg.store_url ? cfg.store_url : "");
    th_config_release(&cfg);
    if (!*owned) {
        fprintf(stderr, "telehook: out of memory\n");
        return 1;
    }
    *url = *owned;
    return 0;
}

int th_cmd_store_copy(struct th_cli *cli)
{
    const char *from_url, *to_url;
    char *from_owned = NULL, *to_owned = NULL;
    struct th_store *from = NULL, *to = NULL;
    char err[1024];
    int rc = copy_side(cli->argv[0], "FROM", &from_url, &from_owned);
    if (rc == 0)
        rc = copy_side(cli->argv[1], "TO", &to_url, &to_owned);
    if (rc)
        goto out;
    rc = 1;
    /* Both open migrated: the copy writes this telehook's schema, and a source of an older
     * version is brought to it first (as any command does on open). */
    if (th_store_open(from_url, &from, err, sizeof err) != TH_E_OK) {
        fprintf(stderr, "telehook: store copy: FROM: %s\n", err);
        goto out;
    }
    if (th_store_open(to_url, &to, err, sizeof err) != TH_E_OK) {
        fprintf(stderr, "telehook: store copy: TO: %s\n", err);
        goto out;
    }
    struct th_store_copy o = {.append = th_cli_flag(cli, TH_OPT_APPEND),
                              .dry_run = th_cli_flag(cli, TH_OPT_DRY_RUN)};
    int64_t t0 = th_mono_us();
    th_err e = th_store_copy(from, to, &o, err, sizeof err);
    double secs = (double)(th_mono_us() - t0) / 1e6;
    if (e != TH_E_OK) {
        fprintf(stderr, "telehook: store copy: %s\n", err);
        goto out;
    }
    long total = 0;
    for (int i = 0; i < TH_STORE_TABLES; i++)
        total += o.rows[i];
    if (cli->json) {
        json_t *rows = json_object();
        for (int i = 0; i < TH_STORE_TABLES; i++)
            json_object_set_new(rows, th_store_tables[i], json_integer(o.rows[i]));
        rc = th_cli_print_json(json_pack("{s:s, s:s, s:b, s:b, s:o, s:I}", "from",
                                         th_store_describe(from), "to", th_store_describe(to),
                                         "dry_run", o.dry_run, "append", o.append, "rows", rows,
                                         "total", (json_int_t)total));
        goto out;
    }
    printf("from            %s\n", th_store_describe(from));
    printf("to              %s%s\n", th_store_describe(to), o.append ? " (appending)" : "");
    for (int i = 0; i < TH_STORE_TABLES; i++)
        printf("%-15s %ld\n", th_store_tables[i], o.rows[i]);
    if (o.dry_run)
        printf("dry run: %ld row%s to copy, nothing written (the target is migrated)\n", total,
               total == 1 ? "" : "s");
    else
        printf("copied %ld row%s in one transaction (%.1f s)\n", total, total == 1 ? "" : "s",
               secs);
    rc = 0;
out:
    th_store_close(from);
    th_store_close(to);
    free(from_owned);
    free(to_owned);
    return rc;
}
