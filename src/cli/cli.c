/*
 * The command line: one table of commands from which the usage, each command's help and the
 * dispatch all come, one option parser for all (opts.c), and the admin commands on config,
 * templates, the outbox and delivery records (routes.c, dlq.c and token.c hold the others).
 *
 * Exit status: 0 done; 1 the command ran and failed (the store cannot be opened, no such record,
 * a send failed); 2 the command line or the configuration is wrong (unknown command or option, a
 * bad value, an invalid template or route): nothing was changed.
 */
#include "cli/cli.h"

#include <ctype.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <unistd.h>

#include <jansson.h>

#include "cli/internal.h"
#include "common/hmac.h"
#include "common/util.h"
#include "guard/guard.h"
#include "obs/log.h"
#include "phone/phone.h"

#define DEFAULT_CONFIG "/etc/telehook/telehook.conf"

#define OPT(id) (UINT64_C(1) << TH_OPT_##id)
/* every command takes these */
#define OPTS_ALWAYS (OPT(CONFIG) | OPT(HELP))

enum {
    CMD_GROUP = 1,       /* a command with subcommands: this entry describes the group */
    CMD_NO_CONFIG = 2,   /* runs without loading the configuration */
    CMD_SERVE_CHECK = 4, /* the configuration must be good enough to serve */
};

struct cmd {
    const char *name, *sub; /* sub NULL: a command without subcommands, or a group's entry */
    const char *args;       /* its arguments, as the synopsis shows them */
    int min_args, max_args;
    uint64_t opts; /* options it takes besides -c and -h */
    unsigned flags;
    const char *summary; /* one line, for the command listing */
    const char *help;    /* the rest, for --help */
    int (*run)(struct th_cli *cli);
};

static int cmd_config_check(struct th_cli *cli);
static int cmd_config_show(struct th_cli *cli);
static int cmd_version(struct th_cli *cli);
static int cmd_templates_list(struct th_cli *cli);
static int cmd_templates_set(struct th_cli *cli);
static int cmd_templates_delete(struct th_cli *cli);
static int cmd_outbox_list(struct th_cli *cli);
static int cmd_deliveries_list(struct th_cli *cli);
static int cmd_deliveries_show(struct th_cli *cli);
static int cmd_deliveries_stats(struct th_cli *cli);

#define DELIVERY_FILTERS                                                                           \
    (OPT(LIMIT) | OPT(SINCE) | OPT(UNTIL) | OPT(OUTCOME) | OPT(PROVIDER) | OPT(COUNTRY) |          \
     OPT(CHANNEL) | OPT(EVENT_ID) | OPT(USER) | OPT(PHONE) | OPT(JSON))

static const struct cmd cmds[] = {
    {"serve", NULL, "", 0, 0, 0, CMD_SERVE_CHECK, "run the Okta telephony hook server",
     "Runs until SIGTERM or SIGINT (requests in flight are answered, queued records written, "
     "exit 0). SIGHUP reloads templates, preferences and routes from the store. Logs are JSON "
     "lines on "
     "stderr. Exits 2 when the configuration is not good enough to serve, 1 when the start "
     "fails (the store, a provider, the listening address).",
     th_cmd_serve},

    {"config", NULL, NULL, 0, 0, 0, CMD_GROUP, "the configuration as telehook reads it",
     "Every key can be set in the file or overridden by TELEHOOK_<SECTION>_<KEY>; secrets are "
     "shown as ******** when set.",
     NULL},
    {"config", "check", "", 0, 0, OPT(JSON), CMD_SERVE_CHECK,
     "validate the configuration as serve would, print it (-t is short for it)",
     "Runs serve's own start-up up to the point where it would listen: opens the store "
     "(creating and migrating it if needed), loads the templates and routes, sets up every "
     "provider, the authentication keys, the guard and the DLQ key. Prints the effective values "
     "and \"configuration OK\" on stderr; exit 0 when serve would start, 2 with serve's reason "
     "otherwise. It does not bind the port.",
     cmd_config_check},
    {"config", "show", "", 0, 0, OPT(JSON), 0,
     "print the effective values without the server's checks",
     "For a file that is only part of a configuration, or one written for the admin commands.",
     cmd_config_show},

    {"templates", NULL, NULL, 0, 0, 0, CMD_GROUP, "message templates: language + channel -> text",
     "A stored template overrides the built-in language pack's for its language and channel "
     "(docs/languages.md). Placeholders in BODY: {{otp}} {{otp_spaced}} (digits separated, for "
     "voices) {{first_name}} {{last_name}} {{login}} {{expires_minutes}} (a number), {{expires}} "
     "(the number with its unit in the template's language: \"1 minute\", \"5 Minuten\", \"5 "
     "minut\") and {{expires_minutes:minute|minutes}} (the number and the one of the two words "
     "that agrees with it), and @otp, @otp2 from AWS's Okta guidance. A running server picks "
     "changes up on SIGHUP.",
     NULL},
    {"templates", "list", "", 0, 0, OPT(JSON), 0, "list the stored and the built-in templates",
     "Language, channel, source, voice and text of every stored template, then of every "
     "built-in one that no stored template overrides (source builtin: the language pack, or "
     "with message.builtin_pack = false the English that ends the locale chain).",
     cmd_templates_list},
    {"templates", "set", "LANG CHANNEL BODY [VOICE_ID]", 3, 4, OPT(FORCE), 0,
     "add or replace a template (CHANNEL: sms or voice)",
     "LANG is a language tag (en, es, es-MX, pt_BR). The template is checked as templates check "
     "checks it and refused (exit 2, with the reason) when it would not render or is of no use: "
     "an unknown placeholder, no code in the text ({{otp}}, {{otp_spaced}}, @otp or @otp2), an "
     "SMS over message.max_sms_segments (with an 8-digit code) or with a voice id, a voice text "
     "that is not a well-formed SSML document with one <speak> root and Amazon Polly's elements "
     "only, a voice that speaks another language. It prints an SMS's encoding (GSM-7 or UCS-2 "
     "under message.sms_encoding), units and segments, and any warning (over one segment, no "
     "voice). VOICE_ID (voice only) must be an Amazon Polly voice AWS End User Messaging and "
     "Twilio know (Joanna, Matthew, Lupe, Lea, ...); --force stores another one (a webhook "
     "gateway with voices of its own). A BODY that starts with '-' goes after --.",
     cmd_templates_set},
    {"templates", "delete", "LANG CHANNEL", 2, 2, 0, 0, "delete a template",
     "Requests in that language then get the built-in language pack's text, or fall back along "
     "the locale chain (the language without its region, message.default_language, Okta's "
     "text, the built-in English).",
     cmd_templates_delete},
    {"templates", "preview", "LANG CHANNEL", 2, 2,
     OPT(OTP) | OPT(FIRST_NAME) | OPT(LAST_NAME) | OPT(LOGIN) | OPT(EXPIRES) | OPT(COUNTRY) |
         OPT(JSON),
     0, "render what the locale chain picks for LANG, with its cost",
     "The template the server would pick for a request in LANG (stored, else built-in; it says "
     "when the chain chose another language), rendered with sample values, and for SMS its "
     "encoding under message.sms_encoding, characters, units, segments and an indicative cost: "
     "segments x the price per segment for --country (default phone.default_region) from "
     "message.sms_prices, else a built-in table of AWS list prices. For voice: the SSML, the "
     "voice, its language and how AWS (VoiceId) and Twilio (<Say voice=...>) are told.",
     th_cmd_templates_preview},
    {"templates", "check", "", 0, 0, OPT(JSON), 0, "check every stored template",
     "Placeholders, the code in the text, SSML (well-formed, one <speak>, Amazon Polly's "
     "elements), AWS's length limits, the voice (one AWS End User Messaging accepts, speaking "
     "the template's language), segments (over one: a warning; over message.max_sms_segments: "
     "an error). One line per template: OK, WARN or ERROR. Exit 1 when any has an error.",
     th_cmd_templates_check},
    {"templates", "import-aws", "FILE", 1, 1, OPT(DRY_RUN), 0,
     "import templates from AWS's Okta guidance (DynamoDB items)",
     "FILE as `aws dynamodb scan --table-name TABLE --output json` prints it (also an array of "
     "items, one item, or a batch-write-item request file). @otp and @otp2 are kept: they render "
     "as the guidance's Lambda renders them. Every item is checked as templates set checks it; "
     "nothing is stored unless all pass (exit 2). --dry-run checks only.",
     th_cmd_templates_import_aws},
    {"templates", "export", "[FILE]", 0, 1, OPT(AWS) | OPT(BUILTIN), 0,
     "write the templates as AWS's Okta guidance keeps them",
     "--aws (required: the only format) writes DynamoDB scan output to FILE or stdout, which "
     "import-aws reads back; {{otp}} and {{otp_spaced}} become @otp and @otp2, {{expires}}, "
     "{{expires_minutes}} and its plural form Okta's five minutes. Templates the guidance's "
     "Lambda cannot fill (names, the code more than twice) are left out, with a note on stderr.",
     th_cmd_templates_export},

    {"prefs", NULL, NULL, 0, 0, 0, CMD_GROUP, "users' language preferences",
     "A preference gives an Okta user a language that comes first in the locale chain, before "
     "the request's locale; where that language has no text for the channel the chain goes on. "
     "USER is the Okta userId or login (each request carries both; the userId is tried first), "
     "matched without case. A running server picks changes up on SIGHUP.",
     NULL},
    {"prefs", "set", "USER LANG [CHANNEL]", 2, 3, 0, 0, "give a user a language",
     "LANG is a language tag (en, pt-BR, zh_TW). CHANNEL (sms or voice) is a hint: it is "
     "recorded with each delivery, never acted on (Okta chose the channel).",
     th_cmd_prefs_set},
    {"prefs", "list", "", 0, 0, OPT(JSON), 0, "list the preferences",
     "User, language, channel hint and when it was set.", th_cmd_prefs_list},
    {"prefs", "delete", "USER", 1, 1, 0, 0, "delete a user's preference",
     "Exit 1 when the user has none.", th_cmd_prefs_delete},

    {"routes", NULL, NULL, 0, 0, 0, CMD_GROUP, "delivery routes: channel + country -> attempts",
     "A route is tried attempt by attempt, failing over on timeouts, 5xx and throttling. The "
     "most specific route wins: (channel, country), (channel, *), (*, country), (*, *); without "
     "one, provider.name carries the message. A running server picks changes up on SIGHUP; a "
     "route naming a provider the server has not set up is skipped (log route_skipped, metric "
     "telehook_routes_skipped), never fatal.",
     NULL},
    {"routes", "list", "", 0, 0, OPT(JSON), 0, "list the delivery routes",
     "Channel, country and attempts of every stored route.", th_cmd_routes_list},
    {"routes", "set", "CHANNEL COUNTRY ATTEMPTS", 3, 3, OPT(FORCE), 0, "add or replace a route",
     "CHANNEL: sms, voice or *. COUNTRY: ISO 3166 alpha-2 or *. ATTEMPTS: providers in order, "
     "each with an optional sender, e.g. \"aws:+12065550100, twilio\". A provider this "
     "configuration does not set up is refused (exit 2) with what to configure; --force stores "
     "the route anyway (the server skips that attempt until the provider is set up).",
     th_cmd_routes_set},
    {"routes", "delete", "CHANNEL COUNTRY", 2, 2, 0, 0, "delete a route",
     "Messages for that channel and country then take the next most specific route.",
     th_cmd_routes_delete},
    {"routes", "import-aws", "FILE [PROVIDER]", 1, 2, OPT(FORCE), 0,
     "import AWS's originationIdentities.json as routes",
     "FILE maps country codes to origination identities ({\"US\": \"+1866...\", ...}), as AWS's "
     "Okta guidance keeps them; each becomes an sms and a voice route through PROVIDER (aws by "
     "default). All or nothing. --force as for routes set.",
     th_cmd_routes_import},

    {"outbox", NULL, NULL, 0, 0, 0, CMD_GROUP,
     "messages recorded by the outbox provider (development)",
     "The outbox provider records each message instead of sending it: it plays the handset. "
     "Its rows hold the text, code included.",
     NULL},
    {"outbox", "list", "", 0, 0, OPT(LIMIT) | OPT(JSON), 0, "the latest messages, newest first",
     "Time, id (Okta's transactionId), number, channel, language, request id and text.",
     cmd_outbox_list},

    {"deliveries", NULL, NULL, 0, 0, 0, CMD_GROUP,
     "delivery records: one per answered request, never the code",
     "A record holds the request and event ids, the masked number, country, channel, language, "
     "where the text came from, provider, outcome, attempts, errors and latency, and Okta's user "
     "id; the number and the login only as HMACs under [guard] secret, to be found again.",
     NULL},
    {"deliveries", "list", "", 0, 0, DELIVERY_FILTERS, 0, "delivery records, newest first",
     "Filters combine (all must hold). A helpdesk finds a user's requests with --user (Okta's "
     "user id, or the login), --phone (any format: it is normalised to E.164 with "
     "phone.default_region, then matched through its HMAC; the number is never stored) or "
     "--event-id (from Okta's System Log). --user with a login and --phone need the server's "
     "[guard] secret in this configuration, and find records written since it was set. Only "
     "--since and --until use an index: narrow a search of a large store with them.",
     cmd_deliveries_list},
    {"deliveries", "show", "REQUEST_ID", 1, 1, OPT(JSON), 0, "one delivery record",
     "REQUEST_ID is telehook's id (the X-Request-Id header, \"req\" in the log). Exit 1 when "
     "there is no such record.",
     cmd_deliveries_show},
    {"deliveries", "stats", "", 0, 0, OPT(BY) | OPT(SINCE) | OPT(UNTIL) | OPT(JSON), 0,
     "conversion: sends, verified sign-ins and their rate, per group",
     "Delivery records since --since (default 24h) grouped --by country (default), prefix (the "
     "number less its last 4 digits, as an HMAC under [guard] secret, with its country), "
     "provider, route (the provider that delivered and the attempt of the route it was: "
     "twilio#2 is the second) or channel. SENDS: successful deliveries; VERIFIED: of those, "
     "the ones an Okta event credited (docs/conversion.md); CONV: VERIFIED/SENDS; REFUSED: "
     "requests refused before sending; FAILED: no attempt delivered (failed, timed out, "
     "error). Sorted by sends.",
     cmd_deliveries_stats},

    {"dlq", NULL, NULL, 0, 0, 0, CMD_GROUP, "dead-letter queue: what no attempt delivered",
     "Each entry keeps the outcome, masked number, errors and the code's expiry in clear, and "
     "the message sealed with [dlq] key (AES-256-GCM).",
     NULL},
    {"dlq", "list", "", 0, 0, OPT(LIMIT) | OPT(JSON), 0, "the entries, newest first",
     "Id, time, outcome, masked number, country, channel, attempts, the code's expiry and every "
     "attempt's error.",
     th_cmd_dlq_list},
    {"dlq", "show", "ID", 1, 1, OPT(JSON), 0, "an entry and its message, decrypted",
     "The message holds the code: handle with care. Needs [dlq] key (or previous_key).",
     th_cmd_dlq_show},
    {"dlq", "replay", "ID", 1, 1, 0, 0, "send an entry's message again through the routes",
     "Only while the code is still valid; a delivered entry leaves the queue. Exit 1 when it "
     "cannot be sent.",
     th_cmd_dlq_replay},
    {"dlq", "purge", "[ID]", 0, 1, OPT(OLDER_THAN), 0, "delete an entry, or every older one",
     "Either ID or --older-than DAYS.", th_cmd_dlq_purge},
    {"dlq", "keygen", "", 0, 0, OPT(KMS), 0, "print a new key for [dlq] key",
     "32 random bytes, base64: store it as [dlq] key_file (mode 0600) or TELEHOOK_DLQ_KEY, and "
     "keep a copy: entries sealed with it cannot be opened without it. With --kms: KMS "
     "GenerateDataKey under [dlq] kms_key_id; the data key sealed by KMS is written to [dlq] "
     "kms_data_key_file (mode 0600, never over an existing file) and nothing is printed.",
     th_cmd_dlq_keygen},

    {"store", NULL, NULL, 0, 0, 0, CMD_GROUP, "the store: schema migrations, status, copy",
     "store.url names it: SQLite (the default) or PostgreSQL, shared by several nodes "
     "(docs/multi-node.md).",
     NULL},
    {"store", "migrate", "", 0, 0, 0, 0, "apply pending schema migrations, print the version",
     "Every command and the server migrate on open too; run it once before starting the nodes "
     "of a new version. On PostgreSQL concurrent migrations wait for each other (an advisory "
     "lock): each runs once.",
     th_cmd_store_migrate},
    {"store", "status", "", 0, 0, OPT(JSON), 0, "backend, schema version, rows per table",
     "The backend, the store URL without its password, the schema version and the migrations "
     "pending, and the rows of each table ('-': not created yet). Applies nothing.",
     th_cmd_store_status},
    {"store", "copy", "FROM TO", 2, 2, OPT(DRY_RUN) | OPT(APPEND) | OPT(JSON), 0,
     "copy every table of one store into another (SQLite <-> PostgreSQL)",
     "FROM and TO are store URLs as store.url takes them (a SQLite path, postgresql://... or "
     "postgresql:host=... dbname=...), or config:FILE for the store.url of that configuration "
     "(keeps a password out of the command line; PGPASSWORD and ~/.pgpass work too). Both are "
     "migrated first. Templates, preferences, routes, the outbox, delivery records and the DLQ "
     "go into TO in one transaction (a failure leaves it unchanged), with their ids and times; "
     "DLQ entries stay sealed (no key needed). Stop the node or freeze changes first: rows "
     "written to FROM after the copy starts are not copied. A TO that holds any row is "
     "refused; --append copies into it anyway (catalog rows replace those of the same key, "
     "history rows are added; an id already there fails the copy). --dry-run counts the rows "
     "only. Prints the rows copied per table.",
     th_cmd_store_copy},

    {"guard", NULL, NULL, 0, 0, 0, CMD_GROUP,
     "the abuse controls' shared state: limits and budgets (PostgreSQL)",
     "With several nodes on PostgreSQL the guard's limits and budgets live in the database "
     "(docs/abuse.md#several-nodes); these commands read and clear them. The number or user "
     "typed is turned into the guard's HMAC key under [guard] secret (this configuration's must "
     "be the nodes'): nothing personal is sent to the database. With the guard in memory "
     "(SQLite, one node) the state is each serve process's own: they say so and exit 1; a "
     "restart of the node clears it.",
     NULL},
    {"guard", "show", "", 0, 0,
     OPT(PHONE) | OPT(USER) | OPT(COUNTRY) | OPT(CALLING_CODE) | OPT(JSON), 0,
     "the shared limits and today's budgets, or one subject's",
     "Without an option: where the state is (never a password), its rows per table, the "
     "global rate and today's count per calling code (UTC day) against its budget. With "
     "--phone (phone_rate, phone_daily), --user (Okta's user id, 00u...: user_rate), "
     "--country (country_rate) or --calling-code (its budget today): the requests counted in "
     "the window now, the limit, and whether the next request passes or for how long it is "
     "refused. A number is printed back masked.",
     th_cmd_guard_show},
    {"guard", "reset", "", 0, 0, OPT(PHONE) | OPT(USER) | OPT(COUNTRY) | OPT(CALLING_CODE), 0,
     "clear a number's, user's or country's limits, or a calling code's budget today",
     "Exactly one of: --phone deletes the number's phone_rate and phone_daily rows, --user "
     "(Okta's user id) its user_rate row, --country its country_rate row — the next request "
     "gets the full allowance again; --calling-code sets its count for today (UTC) back to 0. "
     "Dedupe records (keyed by the code sent, which the CLI does not know) and every other "
     "limit are unchanged. Takes effect on every node at once (the nodes keep no copy).",
     th_cmd_guard_reset},
    {"guard", "blocks", "list|clear [ID]", 1, 2, OPT(JSON) | OPT(ALL) | OPT(PREFIX) | OPT(COUNTRY),
     0, "the conversion blocks: prefixes and countries whose sends stopped converting",
     "list: the blocks active now (--all: every one kept, ended and cleared too), newest "
     "first: id, kind, country, the prefix masked (+44770090****: the number less its last 4 "
     "digits) and its key, since, until, the sends and verifications it was made on, and the "
     "mode it was made in (monitor: it refused nothing). clear ID | --prefix HASH | --country "
     "CC | --all: lifts them in the store (every block of that prefix or country, made on any "
     "node); each node drops it within a few seconds and judges the prefix again only after "
     "[conversion] prefix_min_sends new sends. Exit 1 when nothing was active to clear.",
     th_cmd_guard_blocks},

    {"token", NULL, NULL, 0, 0, 0, CMD_GROUP, "local OAuth keys and tokens (no Okta needed)",
     "Developer tooling for [auth] mode = oauth2: a key pair, and access tokens with Okta's "
     "claims signed by it.",
     NULL},
    {"token", "keygen", "", 0, 0, OPT(ALG) | OPT(KID) | OPT(DIR), 0, "write a signing key pair",
     "Writes DIR/jwt-private.jwk (the signing key, mode 0600) and DIR/jwks.json (the public "
     "key set: point [auth] jwks_file at it).",
     th_cmd_token_keygen},
    {"token", "mint", "", 0, 0,
     OPT(KEY) | OPT(TTL) | OPT(CID) | OPT(SCOPE) | OPT(ISS) | OPT(AUD) | OPT(CLAIM), 0,
     "print an access token signed with a key from token keygen",
     "With Okta's access-token claims; iss, aud and scp default to [auth] issuer, audience and "
     "scopes. --key is required.",
     th_cmd_token_mint},

    {"probe", NULL, "[URL]", 0, 1, OPT(TIMEOUT), 0,
     "exit 0 when the server answers ready (a health check without curl)",
     "GETs URL, by default this configuration's own /readyz on loopback (server.listen; "
     "0.0.0.0 and [::] become 127.0.0.1 and [::1]), and exits 0 on HTTP 200, 1 otherwise with "
     "the reason on stderr. Over HTTPS the default URL is checked against server.tls_cert's own "
     "public key (whatever name the certificate carries); a URL given is verified against the "
     "system's CAs or [tls] ca_file. For a load balancer, Docker's HEALTHCHECK or a Kubernetes "
     "exec probe.",
     th_cmd_probe},

    {"version", NULL, "", 0, 0, OPT(JSON), CMD_NO_CONFIG, "print the version (also --version)", "",
     cmd_version},
};

static const char *const exit_text =
    "exit status: 0 done; 1 the command failed (store unavailable, no such record, a send\n"
    "failed); 2 usage or configuration error (unknown command or option, bad value, invalid\n"
    "template or route): nothing was changed.\n";

/* ---- help ---- */

/* Prints text wrapped at width; the cursor is at column col, continuation lines start at indent. */
static void wrap(FILE *out, const char *text, int indent, int col, int width)
{
    bool first = true;
    for (const char *p = text; *p;) {
        while (*p == ' ')
            p++;
        if (!*p)
            break;
        int w = (int)strcspn(p, " ");
        if (!first && col + 1 + w > width) {
            fprintf(out, "\n%*s", indent, "");
            col = indent;
        } else if (!first) {
            fputc(' ', out);
            col++;
        }
        fwrite(p, 1, (size_t)w, out);
        col += w;
        p += w;
        first = false;
    }
    fputc('\n', out);
}

/* "routes set CHANNEL COUNTRY ATTEMPTS [--force]" */
static void synopsis(const struct cmd *c, char *out, size_t outlen)
{
    size_t n = (size_t)snprintf(out, outlen, "%s%s%s%s%s", c->name, c->sub ? " " : "",
                                c->sub ? c->sub : "", c->args && c->args[0] ? " " : "",
                                c->args ? c->args : "");
    int nopts = 0;
    for (int k = 0; k < TH_OPT__COUNT; k++)
        nopts += (c->opts >> k) & 1;
    for (int k = 0; k < TH_OPT__COUNT && n < outlen; k++) {
        if (!((c->opts >> k) & 1))
            continue;
        const struct th_opt_spec *s = &th_cli_opt_specs[k];
        if (nopts > 3) { /* the help lists them */
            n += (size_t)snprintf(out + n, outlen - n, " [OPTIONS]");
            break;
        }
        n += (size_t)snprintf(out + n, outlen - n, " [%s%s%s]",
                              s->sname ? s->sname : th_cli_opt_long[k], s->metavar ? " " : "",
                              s->metavar ? s->metavar : "");
    }
}

static void list_line(FILE *out, const struct cmd *c)
{
    char syn[160];
    synopsis(c, syn, sizeof syn);
    int n = fprintf(out, "  %s", syn);
    if (n > 40) {
        fprintf(out, "\n%*s", 42, "");
        n = 42;
    } else {
        fprintf(out, "%*s", 42 - n, "");
        n = 42;
    }
    wrap(out, c->summary, 42, n, 96);
}

static void usage(FILE *out)
{
    fputs("usage: telehook [-c CONFIG] COMMAND [SUBCOMMAND] [ARGS] [OPTIONS]\n"
          "       telehook -t | --version | --help\n\ncommands:\n",
          out);
    for (size_t i = 0; i < TH_ARRAY_LEN(cmds); i++)
        if (!(cmds[i].flags & CMD_GROUP))
            list_line(out, &cmds[i]);
    fputs("  help [COMMAND [SUBCOMMAND]]             what a command does, and its options\n"
          "\n"
          "Options go anywhere (-n 5, --limit 5, --limit=5); -- ends them. Every command takes\n"
          "-c FILE (the configuration: default $TELEHOOK_CONFIG, else " DEFAULT_CONFIG "\n"
          "if it exists, else built-in defaults; any key can be overridden by\n"
          "TELEHOOK_<SECTION>_<KEY>) and -h / --help. list, show, check, preview, version and\n"
          "config take --json.\n"
          "\n",
          out);
    fputs(exit_text, out);
}

static void option_lines(FILE *out, uint64_t mask)
{
    for (int k = 0; k < TH_OPT__COUNT; k++) {
        if (!((mask >> k) & 1))
            continue;
        const struct th_opt_spec *s = &th_cli_opt_specs[k];
        char left[64];
        snprintf(left, sizeof left, "%s%s%s%s%s", s->sname ? s->sname : "", s->sname ? ", " : "",
                 th_cli_opt_long[k], s->metavar ? " " : "", s->metavar ? s->metavar : "");
        int n = fprintf(out, "  %s", left);
        if (n > 26) {
            fprintf(out, "\n%*s", 28, "");
        } else {
            fprintf(out, "%*s", 28 - n, "");
        }
        wrap(out, s->help, 28, 28, 96);
    }
}

static void command_help(FILE *out, const struct cmd *c)
{
    char syn[160];
    synopsis(c, syn, sizeof syn);
    fprintf(out, "usage: telehook %s\n\n", syn);
    char first[2048];
    snprintf(first, sizeof first, "%c%s.%s%s", toupper((unsigned char)c->summary[0]),
             c->summary + 1, c->help[0] ? " " : "", c->help);
    wrap(out, first, 0, 0, 96);
    fputs("\noptions:\n", out);
    option_lines(out, c->opts | OPTS_ALWAYS);
    fputc('\n', out);
    fputs(exit_text, out);
}

static void group_help(FILE *out, const struct cmd *g)
{
    fprintf(out, "usage: telehook %s SUBCOMMAND [ARGS] [OPTIONS]\n\n", g->name);
    char first[2048];
    snprintf(first, sizeof first, "%c%s. %s", toupper((unsigned char)g->summary[0]), g->summary + 1,
             g->help);
    wrap(out, first, 0, 0, 96);
    fputs("\nsubcommands:\n", out);
    for (size_t i = 0; i < TH_ARRAY_LEN(cmds); i++)
        if (cmds[i].sub && strcmp(cmds[i].name, g->name) == 0)
            list_line(out, &cmds[i]);
    fprintf(out, "\n`telehook %s SUBCOMMAND --help` describes one and its options.\n", g->name);
}

/* The group or command entry called name; NULL when none. */
static const struct cmd *find_cmd(const char *name)
{
    for (size_t i = 0; i < TH_ARRAY_LEN(cmds); i++)
        if (!cmds[i].sub && strcmp(cmds[i].name, name) == 0)
            return &cmds[i];
    return NULL;
}

static const struct cmd *find_sub(const struct cmd *g, const char *sub)
{
    for (size_t i = 0; i < TH_ARRAY_LEN(cmds); i++)
        if (cmds[i].sub && strcmp(cmds[i].name, g->name) == 0 && strcmp(cmds[i].sub, sub) == 0)
            return &cmds[i];
    return NULL;
}

/* "list, set, delete, import-aws" */
static void sub_names(const struct cmd *g, char *out, size_t outlen)
{
    size_t n = 0;
    out[0] = '\0';
    for (size_t i = 0; i < TH_ARRAY_LEN(cmds) && n < outlen; i++)
        if (cmds[i].sub && strcmp(cmds[i].name, g->name) == 0)
            n += (size_t)snprintf(out + n, outlen - n, "%s%s", n ? ", " : "", cmds[i].sub);
}

/* ---- helpers shared by the commands ---- */

const char *const th_cli_providers[] = {"outbox", "aws", "twilio", "webhook", NULL};

const char *th_cli_opt(const struct th_cli *cli, enum th_opt o)
{
    return cli->opts->val[o];
}

bool th_cli_flag(const struct th_cli *cli, enum th_opt o)
{
    return cli->opts->val[o] != NULL;
}

int th_cli_number(const struct th_cli *cli, enum th_opt o, long lo, long hi, long def, long *out)
{
    const char *v = cli->opts->val[o];
    *out = def;
    if (!v)
        return 0;
    char *end;
    long n = strtol(v, &end, 10);
    if (!*v || *end || n < lo || n > hi || !isdigit((unsigned char)v[v[0] == '-' || v[0] == '+'])) {
        fprintf(stderr, "telehook: %s: '%s' is not a number from %ld to %ld\n",
                cli->opts->spelled[o], v, lo, hi);
        return 2;
    }
    *out = n;
    return 0;
}

int th_cli_choice(const struct th_cli *cli, enum th_opt o, const char *const *choices,
                  const char **out)
{
    const char *v = cli->opts->val[o];
    *out = NULL;
    if (!v)
        return 0;
    for (const char *const *c = choices; *c; c++) {
        if (strcasecmp(*c, v) == 0) {
            *out = *c;
            return 0;
        }
    }
    char list[256] = "";
    size_t n = 0;
    for (const char *const *c = choices; *c && n < sizeof list; c++)
        n += (size_t)snprintf(list + n, sizeof list - n, "%s%s", n ? ", " : "", *c);
    fprintf(stderr, "telehook: %s: '%s' is not one of %s\n", cli->opts->spelled[o], v, list);
    return 2;
}

int th_cli_country(const struct th_cli *cli, enum th_opt o, char cc[3])
{
    const char *v = cli->opts->val[o];
    cc[0] = '\0';
    if (!v)
        return 0;
    bool ok = strlen(v) == 2;
    for (int i = 0; ok && i < 2; i++)
        cc[i] = (char)toupper((unsigned char)v[i]);
    cc[2] = '\0';
    if (!ok || !th_phone_region_known(cc)) {
        fprintf(stderr,
                "telehook: %s: '%s' is not an ISO 3166 alpha-2 country code (like US, GB, DE)\n",
                cli->opts->spelled[o], v);
        cc[0] = '\0';
        return 2;
    }
    return 0;
}

int th_cli_open_store(struct th_cli *cli, struct th_store **st)
{
    char err[512];
    if (th_store_open(cli->cfg.store_url, st, err, sizeof err) != TH_E_OK) {
        fprintf(stderr, "telehook: %s\n", err);
        return 1;
    }
    return 0;
}

int th_cli_print_json(json_t *doc)
{
    if (!doc) {
        fprintf(stderr, "telehook: out of memory\n");
        return 1;
    }
    /* 10 significant digits: a price of 0.0088 prints as such, not as 0.0088000000000000005 */
    int r = json_dumpf(doc, stdout, JSON_INDENT(2) | JSON_ENSURE_ASCII | JSON_REAL_PRECISION(10));
    json_decref(doc);
    fputc('\n', stdout);
    return r == 0 && fflush(stdout) == 0 ? 0 : 1;
}

void th_cli_time(int64_t unix_ms, char out[25])
{
    th_format_iso8601(unix_ms, out);
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

json_t *th_cli_json_text(const char *s)
{
    json_t *v = json_string(s ? s : "");
    if (v)
        return v;
    char *copy = strdup(s);
    for (char *p = copy; p && *p; p++)
        if ((unsigned char)*p >= 0x80)
            *p = '?';
    v = copy ? json_string(copy) : NULL;
    free(copy);
    return v;
}

/* Sets the members of obj from NULL-terminated key, value pairs of text. */
static json_t *with_texts(json_t *obj, const char *const *kv)
{
    for (; obj && kv[0]; kv += 2)
        json_object_set_new(obj, kv[0], th_cli_json_text(kv[1]));
    return obj;
}

/* ---- templates ---- */

/* One template of the listing: stored, or built-in (updated "": never). */
static void template_line(struct th_listing *l, const char *lang, const char *channel,
                          const char *source, const char *voice, const char *body,
                          const char *updated)
{
    if (l->arr) {
        json_t *o = with_texts(
            json_object(), (const char *const[]){"language", lang, "channel", channel, "source",
                                                 source, "voice_id", voice, "body", body, NULL});
        json_object_set_new(o, "updated", updated[0] ? json_string(updated) : json_null());
        json_array_append_new(l->arr, o);
    } else {
        if (l->n == 0)
            printf("%-10s %-7s %-7s %-10s TEXT\n", "LANGUAGE", "CHANNEL", "SOURCE", "VOICE");
        printf("%-10s %-7s %-7s %-10s %s\n", lang, channel, source, voice[0] ? voice : "-", body);
    }
    l->n++;
}

struct tpl_listing {
    struct th_listing l;
    char (*stored)[TH_LOCALE_MAX + 8]; /* "lang/channel" of each stored row */
    size_t n, cap;
    bool nomem;
};

static int print_template(void *ud, const struct th_template_row *row)
{
    struct tpl_listing *t = ud;
    char when[25] = "";
    if (row->updated_ms > 0)
        th_cli_time(row->updated_ms, when);
    template_line(&t->l, row->language, row->channel, "stored", row->voice_id, row->body, when);
    if (t->n == t->cap) {
        size_t ncap = t->cap ? t->cap * 2 : 16;
        void *p = realloc(t->stored, ncap * sizeof *t->stored);
        if (!p) {
            t->nomem = true;
            return 1;
        }
        t->stored = p;
        t->cap = ncap;
    }
    snprintf(t->stored[t->n++], sizeof t->stored[0], "%s/%s", row->language, row->channel);
    return 0;
}

/* Whether the built-in t is in the chain under this configuration and no stored row hides it. */
static bool builtin_listed(const struct th_cli *cli, const struct tpl_listing *tl,
                           const struct th_template *t)
{
    bool english = strcmp(th_template_language(t), "en") == 0;
    if (!cli->cfg.message_builtin_pack && !(english && cli->cfg.message_builtin_fallback))
        return false;
    char key[TH_LOCALE_MAX + 8];
    snprintf(key, sizeof key, "%s/%s", th_template_language(t),
             th_channel_name(th_template_channel(t)));
    for (size_t i = 0; i < tl->n; i++)
        if (strcmp(tl->stored[i], key) == 0)
            return false;
    return true;
}

int th_listing_end(struct th_listing *l, th_err e)
{
    if (e != TH_E_OK) {
        json_decref(l->arr);
        fprintf(stderr, "telehook: cannot read the store: %s\n", th_strerror(e));
        return 1;
    }
    if (l->arr)
        return th_cli_print_json(l->arr);
    if (l->n == 0)
        printf("(none)\n");
    return 0;
}

struct th_listing th_listing_new(const struct th_cli *cli)
{
    return (struct th_listing){cli->json ? json_array() : NULL, 0};
}

/*
 * The stored templates, then each built-in one the chain can reach that no stored template
 * overrides (the whole pack, or with message.builtin_pack = false the English that ends the
 * chain), marked "builtin".
 */
static int cmd_templates_list(struct th_cli *cli)
{
    struct th_store *st;
    if (th_cli_open_store(cli, &st))
        return 1;
    struct tpl_listing tl = {.l = th_listing_new(cli)};
    th_err e = th_store_templates_each(st, print_template, &tl);
    th_store_close(st);
    if (e == TH_E_OK && tl.nomem)
        e = TH_E_NOMEM;
    const struct th_templates *b = th_templates_builtin();
    for (size_t i = 0; e == TH_E_OK && i < th_templates_count(b); i++) {
        const struct th_template *t = th_templates_at(b, i);
        if (builtin_listed(cli, &tl, t))
            template_line(&tl.l, th_template_language(t), th_channel_name(th_template_channel(t)),
                          "builtin", th_template_voice_id(t), th_template_body(t), "");
    }
    free(tl.stored);
    return th_listing_end(&tl.l, e);
}

/* LANG and CHANNEL of templates set / delete; prints why not. */
static int template_key(struct th_cli *cli, char lang[TH_LOCALE_MAX], th_channel *ch)
{
    if (th_locale_normalize(cli->argv[0], lang) != TH_E_OK) {
        fprintf(stderr, "telehook: LANG: '%s' is not a language tag (like en, es, es-MX, pt_BR)\n",
                cli->argv[0]);
        return 2;
    }
    if (th_channel_parse(cli->argv[1], ch) != TH_E_OK) {
        fprintf(stderr, "telehook: CHANNEL: '%s' is not one of sms, voice\n", cli->argv[1]);
        return 2;
    }
    return 0;
}

static int cmd_templates_set(struct th_cli *cli)
{
    char lang[TH_LOCALE_MAX];
    th_channel ch;
    if (template_key(cli, lang, &ch))
        return 2;
    const char *body = cli->argv[2];
    const char *voice = cli->argc == 4 ? cli->argv[3] : "";
    const struct th_voice *known = th_voice_find(voice);
    if (voice[0] && !known && !th_cli_flag(cli, TH_OPT_FORCE)) {
        fprintf(stderr,
                "telehook: VOICE_ID: '%s' is not an Amazon Polly voice that AWS End User "
                "Messaging and Twilio know (Joanna, Matthew, Amy, Lupe, Conchita, Lea, Hans, "
                "... docs/languages.md); --force stores it anyway (for a webhook gateway "
                "with voices of its own)\n",
                voice);
        return 2;
    }
    /* Refused here, with the reason, rather than stored and failing (or costing) at send time:
     * the check `templates check` and the server's loader make. */
    struct th_template_spec spec = {lang, ch, body, known ? known->name : voice};
    struct th_templates *one = NULL;
    char why[1024], summary[1200];
    if (th_templates_build(&spec, 1, &one, why, sizeof why) != TH_E_OK) {
        fprintf(stderr, "telehook: invalid template: %s\n", why);
        return 2;
    }
    const struct th_template *t = th_templates_at(one, 0);
    struct th_template_report rep;
    th_err ce = th_template_check(t, (th_sms_encoding)cli->cfg.message_sms_encoding,
                                  cli->cfg.message_max_sms_segments, &rep, why, sizeof why);
    th_catalog_check_summary(t, &rep, why, summary, sizeof summary);
    th_templates_free(one);
    if (ce != TH_E_OK) {
        fprintf(stderr, "telehook: invalid template: template %s/%s: %s\n", lang,
                th_channel_name(ch), summary);
        return 2;
    }
    if (voice[0] && !known)
        fprintf(stderr,
                "telehook: warning: voice '%s' stored as given: AWS refuses an unknown "
                "VoiceId, Twilio falls back to its default voice\n",
                voice);
    if (summary[0])
        fprintf(stderr, "%stemplate %s/%s: %s\n", rep.warnings ? "telehook: warning: " : "", lang,
                th_channel_name(ch), summary);
    struct th_store *st;
    if (th_cli_open_store(cli, &st))
        return 1;
    struct th_template_row row = {.language = lang,
                                  .channel = th_channel_name(ch),
                                  .body = body,
                                  .voice_id = spec.voice_id,
                                  .updated_ms = th_wall_ms()};
    th_err e = th_store_template_put(st, &row);
    th_store_close(st);
    if (e != TH_E_OK) {
        fprintf(stderr, "telehook: %s\n", th_strerror(e));
        return 1;
    }
    fprintf(stderr, "template %s/%s saved (a running server picks it up on SIGHUP or restart)\n",
            lang, th_channel_name(ch));
    return 0;
}

static int cmd_templates_delete(struct th_cli *cli)
{
    char lang[TH_LOCALE_MAX];
    th_channel ch;
    if (template_key(cli, lang, &ch))
        return 2;
    struct th_store *st;
    if (th_cli_open_store(cli, &st))
        return 1;
    th_err e = th_store_template_delete(st, lang, th_channel_name(ch));
    th_store_close(st);
    if (e != TH_E_OK) {
        fprintf(stderr, "telehook: %s\n", e == TH_E_NOTFOUND ? "no such template" : th_strerror(e));
        return 1;
    }
    fprintf(stderr, "template %s/%s deleted (a running server picks it up on SIGHUP or restart)\n",
            lang, th_channel_name(ch));
    return 0;
}

/* ---- outbox ---- */

static int print_outbox(void *ud, const struct th_outbox_row *row)
{
    struct th_listing *l = ud;
    char t[25];
    th_cli_time(row->created_ms, t);
    if (l->arr) {
        json_array_append_new(
            l->arr, with_texts(json_object(),
                               (const char *const[]){
                                   "id", row->id, "time", t, "request_id", row->request_id, "to",
                                   row->to, "channel", row->channel, "language", row->language,
                                   "voice_id", row->voice_id, "body", row->body, NULL}));
    } else {
        if (l->n == 0)
            printf("%-24s  %-24s  %-16s  %-7s  %-5s  %s\n", "TIME", "ID", "TO", "CHANNEL", "LANG",
                   "REQUEST");
        printf("%-24s  %-24s  %-16s  %-7s  %-5s  %s%s%s\n    %s\n", t, row->id, row->to,
               row->channel, row->language[0] ? row->language : "-", row->request_id,
               row->voice_id[0] ? "  voice=" : "", row->voice_id, row->body);
    }
    l->n++;
    return 0;
}

static int cmd_outbox_list(struct th_cli *cli)
{
    long limit;
    struct th_store *st;
    if (th_cli_number(cli, TH_OPT_LIMIT, 1, 100000, 20, &limit))
        return 2;
    if (th_cli_open_store(cli, &st))
        return 1;
    struct th_listing l = th_listing_new(cli);
    th_err e = th_store_outbox_each(st, (int)limit, print_outbox, &l);
    th_store_close(st);
    return th_listing_end(&l, e);
}

/* ---- deliveries ---- */

static json_t *delivery_json(const struct th_delivery_row *row)
{
    char t[25];
    th_cli_time(row->created_ms, t);
    json_t *o = with_texts(json_object(), (const char *const[]){"request_id",
                                                                row->request_id,
                                                                "time",
                                                                t,
                                                                "event_id",
                                                                row->event_id,
                                                                "request_type",
                                                                row->request_type,
                                                                "user_id",
                                                                row->user_id,
                                                                "phone",
                                                                row->phone_masked,
                                                                "country",
                                                                row->country,
                                                                "channel",
                                                                row->channel,
                                                                "language",
                                                                row->language,
                                                                "locale",
                                                                row->locale,
                                                                "preference",
                                                                row->preference,
                                                                "source",
                                                                row->source,
                                                                "provider",
                                                                row->provider,
                                                                "outcome",
                                                                row->outcome,
                                                                "transaction_id",
                                                                row->transaction_id,
                                                                "error",
                                                                row->error,
                                                                NULL});
    json_object_set_new(o, "attempts", json_integer(row->attempts));
    json_object_set_new(o, "latency_us", json_integer((json_int_t)row->latency_us));
    /* null until an Okta event verified it (docs/conversion.md) */
    json_object_set_new(o, "verified_ms",
                        row->verified_ms ? json_integer((json_int_t)row->verified_ms)
                                         : json_null());
    json_object_set_new(o, "verified_event", json_string(row->verified_event));
    /* the provider's delivery receipt, once one came (null before) */
    if (row->receipt_status && row->receipt_status[0]) {
        char rt[25];
        th_cli_time(row->receipt_ms, rt);
        json_object_set_new(o, "receipt",
                            json_pack("{s:s, s:s, s:s}", "status", row->receipt_status, "code",
                                      row->receipt_error ? row->receipt_error : "", "time", rt));
    } else {
        json_object_set_new(o, "receipt", json_null());
    }
    return o;
}

static const char *dash(const char *s)
{
    return s && s[0] ? s : "-";
}

static int print_delivery(void *ud, const struct th_delivery_row *row)
{
    struct th_listing *l = ud;
    if (l->arr) {
        json_array_append_new(l->arr, delivery_json(row));
        l->n++;
        return 0;
    }
    char t[25];
    th_cli_time(row->created_ms, t);
    if (l->n == 0)
        printf("%-24s  %-22s  %-10s  %-14s  %-2s  %-5s  %-5s  %-8s  %-8s  %8s  %s\n", "TIME",
               "REQUEST_ID", "OUTCOME", "PHONE", "CC", "CHAN", "LANG", "SOURCE", "PROVIDER",
               "LATENCY", "DETAILS");
    printf("%-24s  %-22s  %-10s  %-14s  %-2s  %-5s  %-5s  %-8s  %-8s  %6lldms  event=%s", t,
           row->request_id, row->outcome, dash(row->phone_masked), dash(row->country),
           dash(row->channel), dash(row->language), dash(row->source), dash(row->provider),
           (long long)(row->latency_us / 1000), dash(row->event_id));
    if (row->user_id[0])
        printf("  user=%s", row->user_id);
    if (row->transaction_id[0])
        printf("  tx=%s", row->transaction_id);
    if (row->attempts > 1)
        printf("  attempts=%d", row->attempts);
    if (row->error[0])
        printf("  error=%s", row->error);
    printf("\n");
    l->n++;
    return 0;
}

/* "2026-11-30T10:00:00Z" or a duration back from now: "90m", "24h", "7d". */
static bool parse_since(const char *v, int64_t *ms)
{
    char *end;
    long n = strtol(v, &end, 10);
    long mult = *end == 'm' ? 60 : *end == 'h' ? 3600 : *end == 'd' ? 86400 : 0;
    if (isdigit((unsigned char)v[0]) && n > 0 && n <= 100000 && mult && !end[1]) {
        *ms = th_wall_ms() - (int64_t)n * mult * 1000;
        return true;
    }
    return th_parse_iso8601(v, ms) == TH_E_OK;
}

static int time_option(const struct th_cli *cli, enum th_opt o, int64_t *ms)
{
    const char *v = th_cli_opt(cli, o);
    if (v && !parse_since(v, ms)) {
        fprintf(stderr,
                "telehook: %s: '%s' is not a time (2026-11-30T10:00:00Z) or a duration back "
                "from now (90m, 24h, 7d)\n",
                cli->opts->spelled[o], v);
        return 2;
    }
    return 0;
}

/* A free-text filter: not empty, not absurdly long. */
static int text_option(const struct th_cli *cli, enum th_opt o, const char **out)
{
    const char *v = th_cli_opt(cli, o);
    *out = v;
    if (v && (!v[0] || strlen(v) > 256)) {
        fprintf(stderr, "telehook: %s: '%.40s%s' is not a value to look for (1 to 256 bytes)\n",
                cli->opts->spelled[o], v, strlen(v) > 40 ? "..." : "");
        return 2;
    }
    return 0;
}

static const char *const outcome_names[] = {"SUCCESSFUL", "FAILED",  "TIMEOUT",
                                            "REJECTED",   "BLOCKED", "DUPLICATE",
                                            "OVERLOAD",   "ERROR",   NULL};
static const char *const channel_names[] = {"sms", "voice", NULL};

/* Builds the filter of deliveries list from its options; hashes hold the search keys. */
static int delivery_filter(struct th_cli *cli, struct th_delivery_filter *f, char cc[3],
                           char phone_hash[TH_RECORD_HASH_HEX], char login_hash[TH_RECORD_HASH_HEX])
{
    long limit;
    const char *user, *phone;
    if (th_cli_number(cli, TH_OPT_LIMIT, 1, 100000, 20, &limit) ||
        time_option(cli, TH_OPT_SINCE, &f->since_ms) ||
        time_option(cli, TH_OPT_UNTIL, &f->until_ms) ||
        th_cli_choice(cli, TH_OPT_OUTCOME, outcome_names, &f->outcome) ||
        th_cli_choice(cli, TH_OPT_PROVIDER, th_cli_providers, &f->provider) ||
        th_cli_choice(cli, TH_OPT_CHANNEL, channel_names, &f->channel) ||
        text_option(cli, TH_OPT_EVENT_ID, &f->event_id) || text_option(cli, TH_OPT_USER, &user) ||
        text_option(cli, TH_OPT_PHONE, &phone) || th_cli_country(cli, TH_OPT_COUNTRY, cc))
        return 2;
    f->limit = (int)limit;
    if (cc[0])
        f->country = cc;
    if (!user && !phone)
        return 0;
    /* The number and the login are stored only as HMACs under guard.secret's record key. */
    struct th_hmac_key *k = NULL;
    if (th_guard_record_key_new(cli->cfg.guard_secret, &k) != TH_E_OK)
        return 1;
    int rc = 0;
    if (phone) {
        struct th_phone ph;
        if (!k) {
            fprintf(stderr,
                    "telehook: %s: numbers are recorded in a searchable form only when "
                    "[guard] secret is set (the server's, in this configuration too)\n",
                    cli->opts->spelled[TH_OPT_PHONE]);
            rc = 2;
        } else if (th_phone_parse(phone, strlen(phone), cli->cfg.phone_default_region, &ph) !=
                   TH_E_OK) {
            fprintf(stderr, "telehook: %s: '%s' is not a valid phone number%s\n",
                    cli->opts->spelled[TH_OPT_PHONE], phone,
                    cli->cfg.phone_default_region[0] ? ""
                                                     : " (without a leading + it needs "
                                                       "phone.default_region)");
            rc = 2;
        } else {
            th_guard_record_phone(k, ph.e164, phone_hash);
            f->phone_hash = phone_hash;
        }
    }
    if (rc == 0 && user) {
        f->user_id = user;
        if (k) {
            th_guard_record_login(k, user, login_hash);
            f->login_hash = login_hash;
        } else {
            fprintf(stderr,
                    "telehook: note: without [guard] secret logins are not recorded in a "
                    "searchable form: %s matches Okta user ids only\n",
                    cli->opts->spelled[TH_OPT_USER]);
        }
    }
    th_hmac_key_free(k);
    return rc;
}

static int cmd_deliveries_list(struct th_cli *cli)
{
    struct th_delivery_filter f = {0};
    char cc[3], phone_hash[TH_RECORD_HASH_HEX], login_hash[TH_RECORD_HASH_HEX];
    int rc = delivery_filter(cli, &f, cc, phone_hash, login_hash);
    struct th_store *st;
    if (rc || (rc = th_cli_open_store(cli, &st)))
        return rc;
    struct th_listing l = th_listing_new(cli);
    th_err e = th_store_deliveries_query(st, &f, print_delivery, &l);
    th_store_close(st);
    return th_listing_end(&l, e);
}

struct shown {
    struct th_cli *cli;
    int n, rc;
};

static int show_delivery(void *ud, const struct th_delivery_row *row)
{
    struct shown *sh = ud;
    sh->n++;
    if (sh->cli->json) {
        sh->rc = th_cli_print_json(delivery_json(row));
        return 1;
    }
    char t[25];
    th_cli_time(row->created_ms, t);
    const char *rows[][2] = {
        {"request_id", row->request_id},
        {"time", t},
        {"event_id", row->event_id},
        {"request_type", row->request_type},
        {"user_id", row->user_id},
        {"phone", row->phone_masked},
        {"country", row->country},
        {"channel", row->channel},
        {"language", row->language},
        {"locale", row->locale},
        {"preference", row->preference},
        {"source", row->source},
        {"provider", row->provider},
        {"outcome", row->outcome},
        {"transaction_id", row->transaction_id},
        {"error", row->error},
    };
    for (size_t i = 0; i < TH_ARRAY_LEN(rows); i++)
        printf("%-15s %s\n", rows[i][0], dash(rows[i][1]));
    printf("%-15s %d\n%-15s %lld ms\n", "attempts", row->attempts, "latency",
           (long long)(row->latency_us / 1000));
    if (row->verified_ms) {
        char v[25];
        th_cli_time(row->verified_ms, v);
        printf("%-15s %s (%+lld s, event %s)\n", "verified", v,
               (long long)((row->verified_ms - row->created_ms) / 1000), row->verified_event);
    } else {
        printf("%-15s -\n", "verified");
    }
    if (row->receipt_status && row->receipt_status[0]) {
        char rt[25];
        th_cli_time(row->receipt_ms, rt);
        printf("%-15s %s%s%s%s at %s\n", "receipt", row->receipt_status,
               row->receipt_error[0] ? " (" : "", row->receipt_error,
               row->receipt_error[0] ? ")" : "", rt);
    } else {
        printf("%-15s -\n", "receipt");
    }
    return 1;
}

static int cmd_deliveries_show(struct th_cli *cli)
{
    struct th_delivery_filter f = {.request_id = cli->argv[0], .limit = 1};
    struct th_store *st;
    if (th_cli_open_store(cli, &st))
        return 1;
    struct shown sh = {cli, 0, 0};
    th_err e = th_store_deliveries_query(st, &f, show_delivery, &sh);
    th_store_close(st);
    if (e != TH_E_OK) {
        fprintf(stderr, "telehook: cannot read the store: %s\n", th_strerror(e));
        return 1;
    }
    if (sh.n == 0) {
        fprintf(stderr, "telehook: no delivery record %s\n", cli->argv[0]);
        return 1;
    }
    return sh.rc;
}

/* ---- deliveries stats ---- */

static const char *const stats_by_names[] = {"country", "prefix",  "provider",
                                             "route",   "channel", NULL};

struct stats_out {
    struct th_listing l;
    enum th_stats_by by;
};

static int print_stats(void *ud, const struct th_stats_row *row)
{
    struct stats_out *o = ud;
    double rate = row->sends ? 100.0 * (double)row->verified / (double)row->sends : 0;
    if (o->l.arr) {
        json_t *j = json_object();
        json_object_set_new(j, stats_by_names[o->by], json_string(row->group));
        if (o->by == TH_STATS_PREFIX)
            json_object_set_new(j, "country", json_string(row->country));
        json_object_set_new(j, "sends", json_integer(row->sends));
        json_object_set_new(j, "verified", json_integer(row->verified));
        json_object_set_new(j, "conversion_pct",
                            row->sends ? json_real((double)(long long)(rate * 10 + 0.5) / 10)
                                       : json_null());
        json_object_set_new(j, "refused", json_integer(row->refused));
        json_object_set_new(j, "failed", json_integer(row->failed));
        json_array_append_new(o->l.arr, j);
        o->l.n++;
        return 0;
    }
    int w = o->by == TH_STATS_PREFIX ? 32 : 16;
    if (o->l.n == 0) {
        char head[16];
        size_t i = 0;
        for (; stats_by_names[o->by][i] && i < sizeof head - 1; i++)
            head[i] = (char)toupper((unsigned char)stats_by_names[o->by][i]);
        head[i] = '\0';
        printf("%-*s  ", w, head);
        if (o->by == TH_STATS_PREFIX)
            printf("%-2s  ", "CC");
        printf("%8s  %8s  %6s  %8s  %8s\n", "SENDS", "VERIFIED", "CONV", "REFUSED", "FAILED");
    }
    printf("%-*s  ", w, dash(row->group));
    if (o->by == TH_STATS_PREFIX)
        printf("%-2s  ", dash(row->country));
    if (row->sends)
        printf("%8lld  %8lld  %5.1f%%  %8lld  %8lld\n", row->sends, row->verified, rate,
               row->refused, row->failed);
    else
        printf("%8lld  %8lld  %6s  %8lld  %8lld\n", row->sends, row->verified, "-", row->refused,
               row->failed);
    o->l.n++;
    return 0;
}

static int cmd_deliveries_stats(struct th_cli *cli)
{
    const char *by = NULL;
    int64_t since = th_wall_ms() - 86400000LL, until = 0;
    if (th_cli_choice(cli, TH_OPT_BY, stats_by_names, &by) ||
        time_option(cli, TH_OPT_SINCE, &since) || time_option(cli, TH_OPT_UNTIL, &until))
        return 2;
    struct stats_out o = {.by = TH_STATS_COUNTRY};
    for (int i = 0; by && stats_by_names[i]; i++)
        if (strcmp(by, stats_by_names[i]) == 0)
            o.by = (enum th_stats_by)i;
    if (!until)
        until = th_wall_ms() + 1;
    struct th_store *st;
    if (th_cli_open_store(cli, &st))
        return 1;
    o.l = th_listing_new(cli);
    th_err e = th_store_delivery_stats(st, o.by, since, until, print_stats, &o);
    th_store_close(st);
    return th_listing_end(&o.l, e);
}

/* ---- config, version ---- */

struct cfg_json {
    json_t *doc, *section;
    const char *name;
};

static void config_value(void *ud, const char *section, const char *key, char kind,
                         const char *value)
{
    struct cfg_json *c = ud;
    if (!c->name || strcmp(c->name, section) != 0) {
        c->section = json_object();
        json_object_set_new(c->doc, section, c->section);
        c->name = section;
    }
    json_t *v = kind == 'i'   ? json_integer(strtoll(value, NULL, 10))
                : kind == 'b' ? json_boolean(strcmp(value, "true") == 0)
                              : json_string(value);
    json_object_set_new(c->section, key, v);
}

static int print_config(const struct th_cli *cli)
{
    if (!cli->json) {
        th_config_print(&cli->cfg, stdout);
        return 0;
    }
    struct cfg_json c = {json_object(), NULL, NULL};
    th_config_each_value(&cli->cfg, config_value, &c);
    return th_cli_print_json(c.doc);
}

/* serve's own start-up up to listening (serve.c), so the two can never disagree */
static int cmd_config_check(struct th_cli *cli)
{
    cli->check_only = true;
    return th_cmd_serve(cli) == 0 ? 0 : 2;
}

int th_cli_print_config(struct th_cli *cli)
{
    return print_config(cli);
}

static int cmd_config_show(struct th_cli *cli)
{
    return print_config(cli);
}

static int cmd_version(struct th_cli *cli)
{
    if (cli->json)
        return th_cli_print_json(
            json_pack("{s:s, s:s}", "name", "telehook", "version", TH_VERSION));
    printf("telehook %s\n", TH_VERSION);
    return 0;
}

/* ---- dispatch ---- */

int th_cli_main(int argc, char **argv)
{
    struct th_cli_opts o;
    char err[1024];
    if (th_cli_parse(argc - 1, argv + 1, &o, err, sizeof err) != TH_E_OK) {
        fprintf(stderr, "telehook: %s (`telehook --help` lists the commands)\n", err);
        return 2;
    }
    const struct cmd *c = NULL;
    int words = 0; /* command words taken from o.pos */
    if (o.val[TH_OPT_CHECK_CONFIG]) {
        if (o.npos) {
            fprintf(stderr,
                    "telehook: -t is short for `config check`: it takes no command "
                    "(got '%s')\n",
                    o.pos[0]);
            return 2;
        }
        c = find_sub(find_cmd("config"), "check");
    } else if (o.npos == 0) {
        if (o.val[TH_OPT_VERSION]) {
            c = find_cmd("version");
        } else {
            usage(o.val[TH_OPT_HELP] ? stdout : stderr);
            return o.val[TH_OPT_HELP] ? 0 : 2;
        }
    } else if (strcmp(o.pos[0], "help") == 0) {
        const struct cmd *g = o.npos > 1 ? find_cmd(o.pos[1]) : NULL;
        const struct cmd *s =
            g && (g->flags & CMD_GROUP) && o.npos > 2 ? find_sub(g, o.pos[2]) : NULL;
        if (o.npos == 1)
            usage(stdout);
        else if (!g || (o.npos > 2 && !s) || o.npos > 3) {
            fprintf(stderr, "telehook help: no command '%s%s%s' (`telehook --help` lists them)\n",
                    o.pos[1], o.npos > 2 ? " " : "", o.npos > 2 ? o.pos[2] : "");
            return 2;
        } else if (s)
            command_help(stdout, s);
        else if (g->flags & CMD_GROUP)
            group_help(stdout, g);
        else
            command_help(stdout, g);
        return 0;
    } else {
        c = find_cmd(o.pos[0]);
        words = 1;
        if (!c) {
            fprintf(stderr,
                    "telehook: unknown command '%s' (`telehook --help` lists the "
                    "commands)\n",
                    o.pos[0]);
            return 2;
        }
        if (c->flags & CMD_GROUP) {
            const struct cmd *g = c;
            char subs[128];
            sub_names(g, subs, sizeof subs);
            if (o.npos < 2) {
                if (o.val[TH_OPT_HELP]) {
                    group_help(stdout, g);
                    return 0;
                }
                fprintf(stderr, "telehook %s: which one? %s (`telehook %s --help`)\n", g->name,
                        subs, g->name);
                return 2;
            }
            if (!(c = find_sub(g, o.pos[1]))) {
                fprintf(stderr, "telehook %s: unknown subcommand '%s' (%s)\n", g->name, o.pos[1],
                        subs);
                return 2;
            }
            words = 2;
        }
    }
    char name[64];
    snprintf(name, sizeof name, "%s%s%s", c->name, c->sub ? " " : "", c->sub ? c->sub : "");
    if (o.val[TH_OPT_HELP]) {
        command_help(stdout, c);
        return 0;
    }
    uint64_t allowed = c->opts | OPTS_ALWAYS | (c == find_cmd("version") ? OPT(VERSION) : 0) |
                       (c->run == cmd_config_check ? OPT(CHECK_CONFIG) : 0);
    for (int i = 0; i < o.ngiven; i++) {
        int k = o.given[i].opt;
        if (!((allowed >> k) & 1)) {
            fprintf(stderr,
                    "telehook %s: %s is not an option of this command (`telehook %s "
                    "--help` lists them)\n",
                    name, o.spelled[k], name);
            return 2;
        }
    }
    int nargs = o.npos - words;
    if (nargs < c->min_args || nargs > c->max_args) {
        if (nargs > c->max_args)
            fprintf(stderr, "telehook %s: unexpected argument '%s'", name,
                    o.pos[words + c->max_args]);
        else
            fprintf(stderr, "telehook %s: needs %s (got %d argument%s)", name, c->args, nargs,
                    nargs == 1 ? "" : "s");
        fprintf(stderr, " (`telehook %s --help`)\n", name);
        return 2;
    }
    struct th_cli cli = {.config_path = config_path(o.val[TH_OPT_CONFIG]),
                         .argc = nargs,
                         .argv = o.pos + words,
                         .opts = &o,
                         .cmd = c->name,
                         .sub = c->sub,
                         .json = o.val[TH_OPT_JSON] != NULL};
    if (c->flags & CMD_NO_CONFIG)
        return c->run(&cli);
    /* Only the server needs credentials (checked below); admin commands need the store. */
    if (th_config_load(&cli.cfg, cli.config_path, NULL, err, sizeof err) != TH_E_OK) {
        fprintf(stderr, "telehook: %s\n", err);
        return 2;
    }
    th_log_init(cli.cfg.log_level, 2);
    /* What loading found worth a warning (a secret file its group can read): logged at start,
     * printed by the config commands. */
    bool serve = c->run == th_cmd_serve;
    for (const char *w = cli.cfg.warnings; w && *w && (serve || strcmp(c->name, "config") == 0);) {
        int n = (int)strcspn(w, "\n");
        if (serve)
            th_log_msg(TH_LOG_WARN, "config_warning", "%.*s", n, w);
        else
            fprintf(stderr, "telehook: warning: %.*s\n", n, w);
        w += n + (w[n] == '\n');
    }
    int rc;
    if ((c->flags & CMD_SERVE_CHECK) &&
        th_config_check_serve(&cli.cfg, err, sizeof err) != TH_E_OK) {
        fprintf(stderr, "telehook: %s\n", err);
        rc = 2;
    } else {
        rc = c->run(&cli);
    }
    th_config_release(&cli.cfg);
    return rc;
}
