/*
 * The command line's options, shared by every command: one table, one parser. Options may come
 * anywhere (before the command, between its words, after its arguments); "--" ends them;
 * "--name=value", "--name value", "-n value" and "-nvalue" are the same. Which command accepts
 * which option is the command table's business (cli.c): the parser only knows each option's
 * spelling and whether it takes a value, which is the same for every command.
 */
#include <stdio.h>
#include <string.h>

#include "cli/internal.h"

const struct th_opt_spec th_cli_opt_specs[TH_OPT__COUNT] = {
#define TH_OPT_SPEC(id, lname, sname, metavar, help) [TH_OPT_##id] = {lname, sname, metavar, help},
    TH_CLI_OPTS(TH_OPT_SPEC)
#undef TH_OPT_SPEC
};

/* "--config" and the like, built once from the table (the table holds names without dashes). */
const char *const th_cli_opt_long[TH_OPT__COUNT] = {
#define TH_OPT_LONG(id, lname, sname, metavar, help) [TH_OPT_##id] = "--" lname,
    TH_CLI_OPTS(TH_OPT_LONG)
#undef TH_OPT_LONG
};

static th_err record(struct th_cli_opts *out, int id, const char *spelled, const char *val,
                     char *err, size_t errlen)
{
    if (out->ngiven == TH_CLI_MAX_GIVEN) {
        snprintf(err, errlen, "too many options (at most %d)", TH_CLI_MAX_GIVEN);
        return TH_E_INVAL;
    }
    out->given[out->ngiven].opt = id;
    out->given[out->ngiven].val = val;
    out->ngiven++;
    out->val[id] = val;
    out->spelled[id] = spelled;
    return TH_E_OK;
}

static th_err positional(struct th_cli_opts *out, char *arg, char *err, size_t errlen)
{
    if (out->npos == TH_CLI_MAX_POS) {
        snprintf(err, errlen, "too many arguments (at most %d)", TH_CLI_MAX_POS);
        return TH_E_INVAL;
    }
    out->pos[out->npos++] = arg;
    return TH_E_OK;
}

th_err th_cli_parse(int argc, char **argv, struct th_cli_opts *out, char *err, size_t errlen)
{
    memset(out, 0, sizeof *out);
    bool options = true;
    for (int i = 0; i < argc; i++) {
        char *a = argv[i];
        if (!options || a[0] != '-' || a[1] == '\0') { /* "-" alone is an argument (stdin) */
            if (positional(out, a, err, errlen) != TH_E_OK)
                return TH_E_INVAL;
            continue;
        }
        if (strcmp(a, "--") == 0) {
            options = false;
            continue;
        }
        bool is_long = a[1] == '-';
        const char *name = a + (is_long ? 2 : 1);
        size_t nlen = is_long ? strcspn(name, "=") : 1;
        int id = -1;
        for (int k = 0; k < TH_OPT__COUNT && id < 0; k++) {
            const struct th_opt_spec *s = &th_cli_opt_specs[k];
            if (is_long ? strlen(s->lname) == nlen && strncmp(s->lname, name, nlen) == 0
                        : s->sname && s->sname[1] == name[0])
                id = k;
        }
        if (id < 0) {
            snprintf(err, errlen,
                     "unknown option '%.*s' (an argument that starts with '-' goes after --)",
                     (int)(is_long ? nlen + 2 : 2), a);
            return TH_E_INVAL;
        }
        const struct th_opt_spec *s = &th_cli_opt_specs[id];
        const char *spelled = is_long ? th_cli_opt_long[id] : s->sname; /* for messages */
        const char *inline_val =
            is_long ? (name[nlen] == '=' ? name + nlen + 1 : NULL) : (name[1] ? name + 1 : NULL);
        if (!s->metavar) {
            if (inline_val) {
                snprintf(err, errlen, "%s takes no value (got '%.40s')", spelled, inline_val);
                return TH_E_INVAL;
            }
            if (record(out, id, spelled, "", err, errlen) != TH_E_OK)
                return TH_E_INVAL;
            continue;
        }
        const char *val = inline_val;
        if (!val) {
            if (i + 1 >= argc) {
                snprintf(err, errlen, "%s needs a value: %s %s", spelled, spelled, s->metavar);
                return TH_E_INVAL;
            }
            val = argv[++i];
        }
        if (record(out, id, spelled, val, err, errlen) != TH_E_OK)
            return TH_E_INVAL;
    }
    return TH_E_OK;
}
