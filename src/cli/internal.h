#ifndef TH_CLI_INTERNAL_H
#define TH_CLI_INTERNAL_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "common/err.h"
#include "catalog/catalog.h"
#include "config/config.h"
#include "route/route.h"
#include "message/message.h"
#include "provider/provider.h"
#include "store/store.h"
#include "store/writer.h"

/*
 * Every option of every command, once: id, long name (without "--"), short name or NULL,
 * METAVAR of its value (NULL: a flag), help. Which command takes which is in cli.c's table.
 */
#define TH_CLI_OPTS(X)                                                                             \
    X(CONFIG, "config", "-c", "FILE",                                                              \
      "the configuration file (default: $TELEHOOK_CONFIG, else /etc/telehook/telehook.conf if "    \
      "it exists, else built-in defaults)")                                                        \
    X(HELP, "help", "-h", NULL, "what the command does and its options")                           \
    X(VERSION, "version", NULL, NULL, "print the version")                                         \
    X(CHECK_CONFIG, "check-config", "-t", NULL, "the same as `config check`")                      \
    X(LIMIT, "limit", "-n", "N", "at most N rows, newest first (1 to 100000; default 20)")         \
    X(SINCE, "since", NULL, "TIME",                                                                \
      "records from TIME on: ISO 8601 (2026-11-30T10:00:00Z) or a duration back from now "         \
      "(90m, 24h, 7d)")                                                                            \
    X(UNTIL, "until", NULL, "TIME", "records before TIME (as --since)")                            \
    X(OUTCOME, "outcome", NULL, "OUTCOME",                                                         \
      "SUCCESSFUL, FAILED, TIMEOUT, REJECTED, BLOCKED, DUPLICATE, OVERLOAD or ERROR (any case)")   \
    X(PROVIDER, "provider", NULL, "NAME", "outbox, aws, twilio or webhook")                        \
    X(COUNTRY, "country", NULL, "CC", "the destination's country, ISO 3166 alpha-2 (us, GB, ...)") \
    X(CHANNEL, "channel", NULL, "CHANNEL", "sms or voice")                                         \
    X(EVENT_ID, "event-id", NULL, "ID", "Okta's eventId (from Okta's System Log)")                 \
    X(USER, "user", NULL, "USER",                                                                  \
      "Okta's user id (00u...) or login; a login is matched through its HMAC (needs [guard] "      \
      "secret)")                                                                                   \
    X(PHONE, "phone", NULL, "NUMBER",                                                              \
      "the phone number in any format (+1 201-555-0123), matched through its HMAC (needs "         \
      "[guard] secret)")                                                                           \
    X(JSON, "json", NULL, NULL,                                                                    \
      "print one JSON document (an array for a list, an object otherwise) instead of a table")     \
    X(FORCE, "force", NULL, NULL, "store it anyway (see above)")                                   \
    X(OLDER_THAN, "older-than", NULL, "DAYS", "entries older than DAYS days (0 to 36500)")         \
    X(ALG, "alg", NULL, "ALG", "RS256 (default) or ES256")                                         \
    X(KID, "kid", NULL, "KID", "the key id (default: random)")                                     \
    X(DIR, "dir", NULL, "DIR", "where the files go (default: the current directory)")              \
    X(KEY, "key", NULL, "FILE", "the private JWK from `token keygen`")                             \
    X(TTL, "ttl", NULL, "SECONDS",                                                                 \
      "lifetime (default 3600; negative: already expired, for tests)")                             \
    X(CID, "cid", NULL, "ID", "client id, the cid and sub claims (default 0oa-telehook-dev)")      \
    X(SCOPE, "scope", NULL, "SCOPES", "the scp claim, space-separated (default: [auth] scopes)")   \
    X(ISS, "iss", NULL, "URL", "the issuer (default: [auth] issuer)")                              \
    X(AUD, "aud", NULL, "AUD", "the audience (default: [auth] audience)")                          \
    X(CLAIM, "claim", NULL, "NAME=VALUE",                                                          \
      "one more claim; VALUE as JSON when it parses, else a string (repeatable)")                  \
    X(OTP, "otp", NULL, "CODE", "the sample code: 1 to 16 letters or digits (default 12345678)")   \
    X(FIRST_NAME, "first-name", NULL, "NAME", "the sample {{first_name}} (default Alexandrina)")   \
    X(LAST_NAME, "last-name", NULL, "NAME", "the sample {{last_name}} (default Papadopoulou)")     \
    X(LOGIN, "login", NULL, "LOGIN",                                                               \
      "the sample {{login}} (default alexandrina.papadopoulou@example.com)")                       \
    X(EXPIRES, "expires", NULL, "MINUTES", "the sample validity, 1 to 1440 minutes (default 10)")  \
    X(DRY_RUN, "dry-run", NULL, NULL, "check only: store nothing")                                 \
    X(CALLING_CODE, "calling-code", NULL, "CODE", "a calling code: 44 or +44")                     \
    X(APPEND, "append", NULL, NULL, "copy into a target that already holds rows (see above)")      \
    X(AWS, "aws", NULL, NULL, "in the format of AWS's Okta guidance (DynamoDB scan output)")       \
    X(BUILTIN, "builtin", NULL, NULL,                                                              \
      "also each built-in template that no stored template overrides")                             \
    X(TIMEOUT, "timeout", NULL, "SECONDS", "give up after SECONDS (1 to 60; default 2)")           \
    X(KMS, "kms", NULL, NULL,                                                                      \
      "a data key from AWS KMS ([dlq] kms_key_id), sealed, into [dlq] kms_data_key_file")          \
    X(BY, "by", NULL, "GROUP", "group by country, prefix, provider, route or channel")             \
    X(ALL, "all", NULL, NULL, "every one (see above)")                                             \
    X(PREFIX, "prefix", NULL, "HASH", "a prefix's key, as `guard blocks list` shows it")

enum th_opt {
#define TH_OPT_ENUM(id, lname, sname, metavar, help) TH_OPT_##id,
    TH_CLI_OPTS(TH_OPT_ENUM)
#undef TH_OPT_ENUM
        TH_OPT__COUNT
};

struct th_opt_spec {
    const char *lname;   /* "config" */
    const char *sname;   /* "-c" or NULL */
    const char *metavar; /* NULL: a flag */
    const char *help;
};
extern const struct th_opt_spec th_cli_opt_specs[TH_OPT__COUNT];
extern const char *const th_cli_opt_long[TH_OPT__COUNT]; /* "--config" */

#define TH_CLI_MAX_POS   16
#define TH_CLI_MAX_GIVEN 64

/* A parsed command line. Every pointer points into argv or the option table. */
struct th_cli_opts {
    const char *val[TH_OPT__COUNT];     /* the last value given; "" for a flag; NULL: absent */
    const char *spelled[TH_OPT__COUNT]; /* as written ("-n" or "--limit"), for messages */
    struct {
        int opt;
        const char *val;
    } given[TH_CLI_MAX_GIVEN]; /* every option in order (--claim repeats) */
    int ngiven;
    char *pos[TH_CLI_MAX_POS]; /* the other words: command, subcommand, arguments */
    int npos;
};

/*
 * Parses argv (without the program name): options anywhere, "--" ends them, "--opt=value",
 * "--opt value", "-o value", "-ovalue". TH_E_INVAL with the reason in err (an unknown option, a
 * missing value, a value given to a flag, more than TH_CLI_MAX_POS words or TH_CLI_MAX_GIVEN
 * options). Pure: no output.
 */
th_err th_cli_parse(int argc, char **argv, struct th_cli_opts *out, char *err, size_t errlen);

struct th_cli {
    struct th_config cfg;
    const char *config_path; /* NULL: defaults and environment only */
    int argc;                /* the arguments after the command words (options taken out) */
    char **argv;
    const struct th_cli_opts *opts;
    const char *cmd, *sub; /* "routes", "set"; sub NULL for a command without subcommands */
    bool json;             /* --json */
    bool check_only;       /* `config check` / -t: serve's start-up up to listening, then exit */
};

/* An option's value (NULL when not given) and whether a flag was given. */
const char *th_cli_opt(const struct th_cli *cli, enum th_opt o);
bool th_cli_flag(const struct th_cli *cli, enum th_opt o);

/*
 * Reads a whole number option in [lo, hi] into *out (def when absent). On a bad value prints
 * "telehook: -n: 'abc' is not a number from 1 to 100000" and returns 2; else 0.
 */
int th_cli_number(const struct th_cli *cli, enum th_opt o, long lo, long hi, long def, long *out);

/*
 * Matches an option's value case-insensitively against choices (NULL-terminated) and gives the
 * choice as the table spells it (NULL when the option is absent). On no match prints
 * "telehook: --outcome: 'sent' is not one of SUCCESSFUL, FAILED, ..." and returns 2; else 0.
 */
int th_cli_choice(const struct th_cli *cli, enum th_opt o, const char *const *choices,
                  const char **out);

/*
 * Reads a country option (ISO 3166 alpha-2, any case) into cc, upper case; "" when absent. On a
 * code libphonenumber does not know prints "telehook: --country: 'xx' is not ..." and returns 2.
 */
int th_cli_country(const struct th_cli *cli, enum th_opt o, char cc[3]);

/* Opens the configured store; prints why not and returns 1 on failure. */
int th_cli_open_store(struct th_cli *cli, struct th_store **st);

/* A list command's output: its rows into a JSON array (--json) or table lines, counted. */
struct th_listing {
    struct json_t *arr; /* --json: the rows; NULL: a table */
    int n;
};
struct th_listing th_listing_new(const struct th_cli *cli);
/*
 * Ends a listing, e being how reading the store went: the JSON array, or "(none)" for an empty
 * table; the exit status (1 and the reason on stderr when the store could not be read).
 */
int th_listing_end(struct th_listing *l, th_err e);

/* Writes doc (consumed) to stdout as one JSON document; 0, or 1 when it cannot be written. */
struct json_t;
int th_cli_print_json(struct json_t *doc);

/*
 * A JSON string of text from the store (NULL: ""). jansson takes UTF-8 only; text that is not (a
 * template stored in another encoding) is shown with its bytes above 0x7f as '?' rather than lost.
 */
struct json_t *th_cli_json_text(const char *s);

/* "2026-11-24T20:36:01.123Z" */
void th_cli_time(int64_t unix_ms, char out[25]);

/* The providers a route may name, NULL-terminated. */
extern const char *const th_cli_providers[];

int th_cmd_serve(struct th_cli *cli);
/* The outbox provider's sink: the store's outbox table, written by the writer thread. */
struct th_outbox_sink th_cli_outbox_sink(struct th_writer *writer);
int th_cmd_probe(struct th_cli *cli); /* src/cli/probe.c */
/* The effective configuration on stdout (secrets masked; JSON with --json). */
int th_cli_print_config(struct th_cli *cli);

/* Reads the routes from the store (a bad row is logged and skipped). */

int th_cmd_routes_list(struct th_cli *cli);
int th_cmd_routes_set(struct th_cli *cli);
int th_cmd_routes_delete(struct th_cli *cli);
int th_cmd_routes_import(struct th_cli *cli);
int th_cmd_token_keygen(struct th_cli *cli);
int th_cmd_token_mint(struct th_cli *cli);
int th_cmd_dlq_list(struct th_cli *cli);
int th_cmd_dlq_show(struct th_cli *cli);
int th_cmd_dlq_replay(struct th_cli *cli);
int th_cmd_dlq_purge(struct th_cli *cli);
int th_cmd_dlq_keygen(struct th_cli *cli);
int th_cmd_store_migrate(struct th_cli *cli); /* src/cli/store.c */
int th_cmd_store_status(struct th_cli *cli);
int th_cmd_store_copy(struct th_cli *cli);
int th_cmd_guard_show(struct th_cli *cli); /* src/cli/guard.c */
int th_cmd_guard_reset(struct th_cli *cli);
int th_cmd_guard_blocks(struct th_cli *cli);

/* The commands of src/cli/lang.c (the command table in cli.c describes them). */
int th_cmd_templates_preview(struct th_cli *cli);
int th_cmd_templates_check(struct th_cli *cli);
int th_cmd_templates_import_aws(struct th_cli *cli);
int th_cmd_templates_export(struct th_cli *cli);
int th_cmd_prefs_set(struct th_cli *cli);
int th_cmd_prefs_list(struct th_cli *cli);
int th_cmd_prefs_delete(struct th_cli *cli);

#endif
