/*
 * `telehook store ...`: the store itself, whichever backend store.url names.
 *
 *   store migrate          apply pending schema migrations, print the schema version
 *   store status [--json]  backend, where (never a password), schema version, pending
 *                          migrations, rows per table; applies nothing
 *
 * The server and every command migrate on open already; `store migrate` lets a deployment do it
 * once, before the nodes start (PostgreSQL serialises concurrent migrations all the same).
 */
#include <stdio.h>
#include <string.h>

#include <jansson.h>

#include "cli/internal.h"

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
