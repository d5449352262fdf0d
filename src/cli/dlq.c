/*
 * `telehook dlq ...`: the dead-letter queue.
 *
 *   dlq list [-n N] [--json] newest first: id, time, masked number, outcome, attempts, errors
 *   dlq show ID [--json]     the entry, and its message (decrypted with [dlq] key)
 *   dlq replay ID            sends the message again through the configured routes, only while
 *                            the code is still valid; the entry is deleted once delivered
 *   dlq purge ID | --older-than DAYS
 *   dlq keygen               prints a new key for [dlq] key / TELEHOOK_DLQ_KEY
 *   dlq keygen --kms         writes a KMS-sealed data key to [dlq] kms_data_key_file
 */
#include <stdalign.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <jansson.h>
#include <openssl/crypto.h>

#include "cli/internal.h"
#include "common/arena.h"
#include "common/util.h"
#include "net/http.h"
#include "route/router.h"
#include "net/trust.h"
#include "dlq/dlq.h"
#include "loop/loop.h"
#include "phone/phone.h"
#include "store/writer.h"

static void when(int64_t ms, char out[25])
{
    th_format_iso8601(ms, out);
}

static json_t *entry_json(const struct th_dlq_row *row)
{
    char t[25], exp[25] = "";
    when(row->created_ms, t);
    if (row->otp_expires_ms > 0)
        when(row->otp_expires_ms, exp);
    return json_pack("{s:s, s:s, s:s, s:s, s:s, s:s, s:s, s:s, s:s, s:i, s:s, s:s?, s:b, s:b}",
                     "id", row->id, "time", t, "request_id", row->request_id, "event_id",
                     row->event_id, "outcome", row->outcome, "phone", row->phone_masked, "country",
                     row->country, "channel", row->channel, "language", row->language, "attempts",
                     row->attempts, "errors", row->errors, "code_expires", exp[0] ? exp : NULL,
                     "expired", row->otp_expires_ms > 0 && row->otp_expires_ms <= th_wall_ms(),
                     "has_message", row->payload_len > 0);
}

static int print_entry(void *ud, const struct th_dlq_row *row)
{
    struct th_listing *l = ud;
    if (l && l->arr) {
        json_array_append_new(l->arr, entry_json(row));
        l->n++;
        return 0;
    }
    char t[25], exp[25] = "-";
    when(row->created_ms, t);
    if (row->otp_expires_ms > 0)
        when(row->otp_expires_ms, exp);
    bool expired = row->otp_expires_ms > 0 && row->otp_expires_ms <= th_wall_ms();
    if (l && l->n == 0)
        printf("%-24s  %-24s  %-8s  %-14s  %-2s  %-5s  %-8s  %s\n", "TIME", "ID", "OUTCOME",
               "PHONE", "CC", "CHAN", "ATTEMPTS", "CODE EXPIRES");
    printf("%-24s  %-24s  %-8s  %-14s  %-2s  %-5s  %-8d  %s%s%s\n    %s\n", t, row->id,
           row->outcome, row->phone_masked, row->country[0] ? row->country : "-", row->channel,
           row->attempts, exp, expired ? " (expired)" : "",
           row->payload_len ? "" : "  (no message kept)", row->errors);
    if (l)
        l->n++;
    return 0;
}

/* One entry, copied out of the store's row. */
struct entry {
    bool found;
    bool json;   /* --json: the entry goes into doc instead of stdout */
    json_t *doc; /* the entry as JSON (owned) */
    char id[64], key_id[32], outcome[16], masked[32], errors[512];
    int64_t otp_expires_ms;
    unsigned char *payload;
    size_t payload_len;
};

static int copy_entry(void *ud, const struct th_dlq_row *row)
{
    struct entry *e = ud;
    e->found = true;
    th_strlcpy(e->id, row->id, sizeof e->id);
    th_strlcpy(e->key_id, row->key_id, sizeof e->key_id);
    th_strlcpy(e->outcome, row->outcome, sizeof e->outcome);
    th_strlcpy(e->masked, row->phone_masked, sizeof e->masked);
    th_strlcpy(e->errors, row->errors, sizeof e->errors);
    e->otp_expires_ms = row->otp_expires_ms;
    if (row->payload_len && (e->payload = malloc(row->payload_len))) {
        memcpy(e->payload, row->payload, row->payload_len);
        e->payload_len = row->payload_len;
    }
    if (e->json)
        e->doc = entry_json(row);
    else
        print_entry(NULL, row);
    return 0;
}

/* Opens the entry's payload; prints why not. */
static int open_payload(struct th_cli *cli, const struct entry *e, struct th_dlq_payload *pl)
{
    if (!e->payload_len) {
        fprintf(stderr,
                "telehook: %s has no payload (no [dlq] key was set when it was "
                "stored): it cannot be shown or replayed\n",
                e->id);
        return 1;
    }
    char err[512];
    struct th_dlq *d = NULL;
    if (th_dlq_new(&cli->cfg, &d, err, sizeof err) != TH_E_OK) {
        fprintf(stderr, "telehook: %s\n", err);
        return 2;
    }
    th_err r = th_dlq_payload_decode(d, e->id, e->key_id, e->payload, e->payload_len, pl);
    th_dlq_free(d);
    if (r == TH_E_NOTFOUND) {
        fprintf(stderr,
                "telehook: %s was sealed with key '%s', which is neither [dlq] key_id "
                "nor previous_key_id\n",
                e->id, e->key_id);
        return 1;
    }
    if (r == TH_E_INVAL) /* opened, but not a payload */
        return 1;
    if (r != TH_E_OK) {
        fprintf(stderr, "telehook: %s does not open with key '%s' (wrong key, or altered)\n", e->id,
                e->key_id);
        return 1;
    }
    return 0;
}

/* A replay's arena: one message's job and attempt (a provider's body is 16 KiB at most). */
#define REPLAY_ARENA_MAX (64 * 1024)

struct replay {
    struct th_loop *loop;
    struct th_route_result res;
    bool done;
};

static void on_replayed(void *ud, const struct th_route_result *res)
{
    struct replay *rp = ud;
    rp->res = *res;
    rp->done = true;
    th_loop_stop(rp->loop);
}

static int replay(struct th_cli *cli, struct th_store *st, struct entry *e)
{
    if (e->otp_expires_ms > 0 && e->otp_expires_ms <= th_wall_ms()) {
        char exp[25];
        when(e->otp_expires_ms, exp);
        fprintf(stderr,
                "telehook: not replayed: the code expired at %s; the user must ask "
                "Okta for a new one\n",
                exp);
        return 1;
    }
    struct th_dlq_payload pl = {0};
    int rc = open_payload(cli, e, &pl);
    if (rc)
        return rc;
    char err[512];
    struct th_writer *writer = NULL;
    struct th_store *wst = NULL;
    struct th_routes *routes = NULL;
    struct th_router *router = NULL;
    struct th_loop *loop = NULL;
    struct replay rp = {0};
    /* the replayed request's memory, as serve's request object gives the router: the job, the
     * attempt and its body (the code) come from here and are wiped with it */
    alignas(max_align_t) unsigned char chunk[4096];
    struct th_arena arena;
    th_arena_init(&arena, chunk, sizeof chunk, REPLAY_ARENA_MAX);
    rc = 1;
    th_phone_init();
    th_http_global_init();
    if (th_trust_set_default(cli->cfg.tls_ca_file, cli->cfg.tls_ca_path, err, sizeof err) !=
        TH_E_OK) {
        fprintf(stderr, "telehook: %s\n", err);
        goto out;
    }
    if (th_store_open(cli->cfg.store_url, &wst, err, sizeof err) != TH_E_OK ||
        th_writer_start(wst, 1024, &writer) != TH_E_OK) {
        fprintf(stderr, "telehook: %s\n", err);
        th_store_close(wst);
        goto out;
    }
    struct th_outbox_sink outbox = th_cli_outbox_sink(writer);
    if (th_catalog_routes_load(st, &routes, err, sizeof err) != TH_E_OK ||
        th_router_new(&cli->cfg, &outbox, routes, &router, err, sizeof err) != TH_E_OK) {
        routes = NULL;
        fprintf(stderr, "telehook: %s\n", err);
        goto out;
    }
    routes = NULL;
    if (th_loop_new(&loop) != TH_E_OK)
        goto out;
    /* Temporary credentials (AWS containers) arrive on their own thread: give them a moment. */
    for (int i = 0; i < 50 && !th_router_ready(router); i++) {
        struct timespec ts = {0, 100 * 1000000L};
        nanosleep(&ts, NULL);
    }
    struct th_send msg = pl.msg; /* the message as it was sent, under the entry's id */
    msg.request_id = e->id;
    msg.otp_expires_ms = e->otp_expires_ms;
    msg.deadline_us = th_mono_us() + 10 * 1000000;
    if (!msg.to || !msg.body) {
        fprintf(stderr, "telehook: %s: the payload lacks a number or a message\n", e->id);
        goto out;
    }
    rp.loop = loop;
    th_router_send(router, loop, &arena, &msg, on_replayed, &rp);
    if (!rp.done)
        th_loop_run(loop);
    if (rp.res.err == TH_E_OK) {
        printf("delivered by %s: %s (attempts %d)\n", rp.res.provider, rp.res.transaction_id,
               rp.res.attempts);
        th_store_dlq_delete(st, e->id);
        rc = 0;
    } else {
        fprintf(stderr, "telehook: replay failed: %s\n", rp.res.errors);
    }
out:
    if (loop) {
        th_loop_stop(loop);
        th_loop_run(loop); /* runs the at-exit hooks: the loop's HTTP client goes */
    }
    th_router_free(router);
    th_loop_free(loop);
    th_writer_stop(writer);
    th_http_global_cleanup();
    th_arena_cleanse_release(&arena); /* after the loop: nothing of the send is left running */
    th_dlq_payload_release(&pl);      /* wipes the code */
    return rc;
}

int th_cmd_dlq_keygen(struct th_cli *cli)
{
    if (th_cli_flag(cli, TH_OPT_KMS)) {
        char err[1024];
        if (th_dlq_keygen_kms(&cli->cfg, cli->cfg.dlq_kms_data_key_file, err, sizeof err) !=
            TH_E_OK) {
            fprintf(stderr, "telehook: %s\n", err);
            return 1;
        }
        fprintf(stderr,
                "wrote the data key sealed by KMS key %s to %s (mode 0600); keep a copy: "
                "entries sealed with it cannot be opened without it (and the KMS key)\n",
                cli->cfg.dlq_kms_key_id, cli->cfg.dlq_kms_data_key_file);
        return 0;
    }
    char k[45];
    if (th_dlq_keygen(k) != TH_E_OK)
        return 1;
    printf("%s\n", k);
    fprintf(stderr, "store it as [dlq] key_file (mode 0600) or TELEHOOK_DLQ_KEY; keep a "
                    "copy: entries sealed with it cannot be opened without it\n");
    return 0;
}

int th_cmd_dlq_list(struct th_cli *cli)
{
    long limit;
    struct th_store *st;
    if (th_cli_number(cli, TH_OPT_LIMIT, 1, 100000, 20, &limit))
        return 2;
    if (th_cli_open_store(cli, &st))
        return 1;
    struct th_listing l = th_listing_new(cli);
    th_err e = th_store_dlq_each(st, (int)limit, print_entry, &l);
    th_store_close(st);
    return th_listing_end(&l, e);
}

int th_cmd_dlq_purge(struct th_cli *cli)
{
    long days;
    bool older = th_cli_flag(cli, TH_OPT_OLDER_THAN);
    if (th_cli_number(cli, TH_OPT_OLDER_THAN, 0, 36500, 0, &days))
        return 2;
    if (older == (cli->argc == 1)) {
        fprintf(stderr, "telehook dlq purge: give either an ID or --older-than DAYS\n");
        return 2;
    }
    struct th_store *st;
    if (th_cli_open_store(cli, &st))
        return 1;
    int rc;
    if (older) {
        struct th_purge p = {.dlq_before_ms = th_wall_ms() - (int64_t)days * 86400000};
        long n = 0;
        rc = th_store_purge(st, &p, &n) == TH_E_OK ? 0 : 1;
        fprintf(stderr, "%ld entries deleted\n", n);
    } else {
        th_err e = th_store_dlq_delete(st, cli->argv[0]);
        rc = e == TH_E_OK ? 0 : 1;
        fprintf(stderr, "%s\n", e == TH_E_OK ? "deleted" : "no such entry");
    }
    th_store_close(st);
    return rc;
}

/* dlq show and replay: the entry by id. */
static int with_entry(struct th_cli *cli, bool show)
{
    struct th_store *st;
    if (th_cli_open_store(cli, &st))
        return 1;
    int rc;
    struct entry e = {.json = show && cli->json};
    th_err r = th_store_dlq_get(st, cli->argv[0], copy_entry, &e);
    if (r != TH_E_OK) {
        fprintf(stderr, "telehook: %s\n", r == TH_E_NOTFOUND ? "no such entry" : th_strerror(r));
        rc = 1;
    } else if (show) {
        struct th_dlq_payload pl = {0};
        rc = open_payload(cli, &e, &pl);
        json_t *doc = pl.doc;
        if (rc == 0 && e.doc) { /* one document: the entry, its message inside */
            json_object_set(e.doc, "message", doc);
            char *text = json_dumps(e.doc, JSON_INDENT(2));
            printf("%s\n", text ? text : "");
            if (text)
                OPENSSL_cleanse(text, strlen(text));
            free(text);
        } else if (rc == 0) {
            char *text = json_dumps(doc, JSON_INDENT(2));
            printf("%s\n", text ? text : "");
            if (text)
                OPENSSL_cleanse(text, strlen(text));
            free(text);
        }
        th_dlq_payload_release(&pl);
    } else {
        rc = replay(cli, st, &e);
    }
    json_decref(e.doc);
    free(e.payload);
    th_store_close(st);
    return rc;
}

int th_cmd_dlq_show(struct th_cli *cli)
{
    return with_entry(cli, true);
}

int th_cmd_dlq_replay(struct th_cli *cli)
{
    return with_entry(cli, false);
}
