/*
 * A model of how libmicrohttpd 0.9 (0.9.75, Debian bookworm) parses a request's header section
 * in place, for the framing tests and the fuzz target: each line ends at CRLF or a bare LF, both
 * turned into NULs; the request line's method and version are NUL-terminated where they lie;
 * each field's colon becomes a NUL and the whitespace after it is skipped; names and values are
 * measured with strlen, so a NUL cuts them short; a folded line (starting with SP or HTAB) is
 * appended, in a copy elsewhere, to the field's name (0.9.75 does that; 0.9.77 appends it to the
 * value). tests/e2e/test_framing.py checks the real thing.
 */
#ifndef TH_TEST_MHD_SPLIT_H
#define TH_TEST_MHD_SPLIT_H

#include <stdbool.h>
#include <stddef.h>
#include <string.h>

#include "http/internal.h"

#define MHD_SPLIT_MAX 64

struct mhd_split {
    const char *method, *version;
    size_t header_size; /* from the method to the end of the empty line */
    size_t n;
    struct {
        const char *name, *value;
        size_t name_len, value_len;
    } f[MHD_SPLIT_MAX];
    char moved[MHD_SPLIT_MAX][256]; /* folded fields, copied as libmicrohttpd copies them */
};

/* The next line of buf[*pos, len), NUL-terminated in place; NULL when no line end is left. */
static char *mhd_split_line(char *buf, size_t len, size_t *pos)
{
    for (size_t i = *pos; i < len; i++) {
        if (buf[i] == '\r' && i + 1 < len && buf[i + 1] == '\n') {
            char *line = buf + *pos;
            buf[i] = buf[i + 1] = '\0';
            *pos = i + 2;
            return line;
        }
        if (buf[i] == '\n') {
            char *line = buf + *pos;
            buf[i] = '\0';
            *pos = i + 1;
            return line;
        }
    }
    return NULL;
}

/* false where libmicrohttpd itself refuses the request (or the model gives up). */
static bool mhd_split(char *buf, size_t len, struct mhd_split *s)
{
    size_t pos = 0;
    memset(s, 0, sizeof *s);
    char *line = mhd_split_line(buf, len, &pos);
    if (!line)
        return false;
    char *sp = strchr(line, ' '), *last = strrchr(line, ' ');
    if (!sp || sp == last)
        return false;
    *sp = *last = '\0';
    s->method = line;
    s->version = last + 1;
    while ((line = mhd_split_line(buf, len, &pos)) && line[0] != '\0') {
        if ((line[0] == ' ' || line[0] == '\t') && s->n > 0) { /* folded onto the field before */
            size_t i = s->n - 1;
            const char *more = line;
            while (*more == ' ' || *more == '\t')
                more++;
            if (s->f[i].name_len + strlen(more) >= sizeof s->moved[i])
                return false;
            memmove(s->moved[i], s->f[i].name, s->f[i].name_len);
            strcpy(s->moved[i] + s->f[i].name_len, more);
            s->f[i].name = s->moved[i];
            s->f[i].name_len = strlen(s->moved[i]);
            continue;
        }
        char *colon = strchr(line, ':');
        if (!colon || s->n == MHD_SPLIT_MAX)
            return false;
        *colon++ = '\0';
        while (*colon == ' ' || *colon == '\t')
            colon++;
        s->f[s->n].name = line;
        s->f[s->n].name_len = strlen(line);
        s->f[s->n].value = colon;
        s->f[s->n].value_len = strlen(colon);
        s->n++;
    }
    if (!line)
        return false;
    s->header_size = pos;
    return true;
}

/* The framing verdict on a split request, as src/http/server.c asks for it. */
static const char *mhd_split_check(const struct mhd_split *s, int *status)
{
    struct th_framing f;
    th_framing_begin(&f, s->version + strlen(s->version), s->method + s->header_size);
    for (size_t i = 0; i < s->n; i++)
        th_framing_field(&f, s->f[i].name, s->f[i].name_len, s->f[i].value, s->f[i].value_len);
    return th_framing_end(&f, strcmp(s->version, "HTTP/1.0") == 0, status);
}

#endif
