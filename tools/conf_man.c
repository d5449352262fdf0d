/*
 * Writes telehook.conf(5) in roff to stdout, from the configuration table itself (the keys, their
 * defaults and help), so the manual page can never drift from what the parser accepts. Built and
 * run by meson (man/meson.build); its output is installed, not committed.
 */
#include <stdbool.h>
#include <stdio.h>
#include <string.h>

#include "config/config.h"

/* roff-escapes text: backslashes, and a leading '.' or '\'' that would start a request */
static void roff(const char *s, bool line_start)
{
    for (; *s; s++) {
        if (line_start && (*s == '.' || *s == '\''))
            fputs("\\&", stdout);
        line_start = false;
        if (*s == '\\')
            fputs("\\e", stdout);
        else if (*s == '-')
            fputs("\\-", stdout);
        else
            putchar(*s);
    }
}

static const char *last_section;

static void key(void *ud, const char *section, const char *name, const char *def, bool secret,
                const char *help)
{
    (void)ud;
    if (!last_section || strcmp(last_section, section) != 0) {
        printf(".SS [%s]\n", section);
        last_section = section;
    }
    printf(".TP\n.B %s\n", name);
    roff(help, true);
    putchar('\n');
    printf(".br\nDefault: ");
    if (def && *def) {
        fputs("\\fB", stdout);
        roff(def, false);
        fputs("\\fR", stdout);
    } else {
        fputs("(empty)", stdout);
    }
    printf(".  Environment: \\fBTELEHOOK_");
    for (const char *p = section; *p; p++)
        putchar(*p >= 'a' && *p <= 'z' ? *p - 32 : *p);
    putchar('_');
    for (const char *p = name; *p; p++)
        putchar(*p >= 'a' && *p <= 'z' ? *p - 32 : *p);
    printf("\\fR");
    if (secret)
        printf(" (a secret: also \\fB%s_file\\fR = PATH, or the variable with \\fB_FILE\\fR)",
               name);
    printf(".\n");
}

int main(void)
{
    printf(
        ".\\\" Generated from telehook's configuration table by tools/conf_man.c: do not edit.\n"
        ".TH TELEHOOK.CONF 5 \"\" \"telehook " TH_VERSION "\" \"File Formats\"\n"
        ".SH NAME\n"
        "telehook.conf \\- configuration of the telehook Okta telephony hook\n"
        ".SH SYNOPSIS\n"
        ".B /etc/telehook/telehook.conf\n"
        ".SH DESCRIPTION\n"
        "An INI file read by\n.BR telehook (8):\n"
        "\\fB[section]\\fR headers and \\fBkey = value\\fR lines. A line starting with\n"
        ".B #\nor\n.B ;\nis a comment, and so is the rest of a value's line from a\n"
        ".B #\nor\n.B ;\nthat follows a space or tab. A value in double quotes is taken verbatim.\n"
        "An unknown section or key is an error.\n"
        ".PP\n"
        "Every key can be overridden by the environment variable\n"
        ".BI TELEHOOK_ SECTION _ KEY\n"
        "in upper case; precedence is default < file < environment. A secret may be read from a\n"
        "file instead (\\fIkey\\fB_file = \\fIPATH\\fR), which holds the secret alone; one\n"
        "trailing newline is ignored.\n"
        ".PP\n"
        "\\fBtelehook \\-t\\fR (or \\fBconfig check\\fR) runs the server's start-up without "
        "listening and fails exactly when \\fBtelehook serve\\fR would.\n"
        ".SH KEYS\n");
    th_config_each_key(key, NULL);
    printf(".SH FILES\n"
           ".TP\n.I /etc/telehook/telehook.conf\nthe configuration (without \\fB\\-c\\fR, "
           "unless \\fBTELEHOOK_CONFIG\\fR names another)\n"
           ".SH SEE ALSO\n"
           ".BR telehook (8)\n");
    return 0;
}
