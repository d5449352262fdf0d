#ifndef TH_CLI_INTERNAL_H
#define TH_CLI_INTERNAL_H

#include <stdbool.h>
#include <stddef.h>

#include "common/err.h"
#include "config/config.h"
#include "dispatch/route.h"
#include "message/message.h"
#include "store/store.h"

struct th_cli {
    struct th_config cfg;
    const char *config_path; /* NULL: defaults and environment only */
    int argc;                /* what follows the command words */
    char **argv;
    bool check_only; /* `config check` / -t: serve's start-up up to listening, then exit */
};

int th_cmd_serve(struct th_cli *cli);

/*
 * Reads every template from the store and compiles the set. A template that does not compile is
 * logged and skipped (one bad row must not stop the service); err says why when nothing works.
 */
th_err th_cli_load_templates(struct th_store *st, struct th_templates **out, char *err,
                             size_t errlen);

/* Reads the routes from the store (a bad row is logged and skipped). */
th_err th_cli_load_routes(struct th_store *st, struct th_routes **out, char *err, size_t errlen);

/*
 * src/cli/lang.c. The server's loaders: every stored template that compiles and is within
 * message.max_sms_segments (others are logged and skipped; check findings are logged), and every
 * valid preference row (a bad one is logged and skipped).
 */
th_err th_lang_load_templates(struct th_store *st, const struct th_config *cfg,
                              struct th_templates **out, char *err, size_t errlen);
th_err th_lang_load_prefs(struct th_store *st, struct th_prefs **out, char *err, size_t errlen);
/* One "languages" log line at start: stored templates, preferences, the pack, the encoding. */
void th_lang_log_startup(const struct th_config *cfg, const struct th_templates *stored,
                         const struct th_prefs *prefs);
/*
 * `templates preview|check|import-aws|export` and `prefs set|list|delete` (usage at the top of
 * lang.c). Return the exit status; 2 for a usage error.
 */
int th_cmd_templates_extra(struct th_cli *cli, const char *sub);
int th_cmd_prefs(struct th_cli *cli, const char *sub);

int th_cmd_routes(struct th_cli *cli, const char *sub);
int th_cmd_token(struct th_cli *cli, const char *sub);
int th_cmd_dlq(struct th_cli *cli, const char *sub);

#endif
