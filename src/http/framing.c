/* Request framing checks (RFC 9112 §2.2, §5, §6): see internal.h. */
#include "http/internal.h"

#include <stdint.h>
#include <string.h>
#include <strings.h>

#define LAYOUT_WHY "header section not strictly CRLF-delimited (bare LF, NUL or line folding)"

/* RFC 9110 §5.6.2 tchar */
static bool is_tchar(unsigned char c)
{
    if ((c >= '0' && c <= '9') || (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z'))
        return true;
    return c != '\0' && strchr("!#$%&'*+-.^_`|~", c) != NULL;
}

static bool is_token(const char *s, size_t len)
{
    if (len == 0)
        return false;
    for (size_t i = 0; i < len; i++)
        if (!is_tchar((unsigned char)s[i]))
            return false;
    return true;
}

static bool name_is(const char *name, size_t len, const char *want)
{
    return len == strlen(want) && strncasecmp(name, want, len) == 0;
}

/* Pointers compared as integers: a moved field points into another block of the pool. */
static bool at(const struct th_framing *f, const char *p)
{
    return (uintptr_t)p == (uintptr_t)f->pos;
}

static size_t left(const struct th_framing *f)
{
    return (size_t)((uintptr_t)f->end - (uintptr_t)f->pos);
}

/* The end of a line: CRLF, which libmicrohttpd turned into two NULs (a bare LF leaves one). */
static bool eol(struct th_framing *f)
{
    if (left(f) < 2 || f->pos[0] != '\0' || f->pos[1] != '\0') {
        f->why = LAYOUT_WHY;
        return false;
    }
    f->pos += 2;
    return true;
}

void th_framing_begin(struct th_framing *f, const char *line_end, const char *end)
{
    memset(f, 0, sizeof *f);
    f->check_layout = line_end && end && (uintptr_t)line_end < (uintptr_t)end;
    f->pos = line_end;
    f->end = end;
}

/* Walks one field over the section: line end, name, the colon's NUL, whitespace, value. */
static void walk(struct th_framing *f, const char *name, size_t name_len, const char *value,
                 size_t value_len)
{
    if (!eol(f))
        return;
    if (!at(f, name) || name_len >= left(f) || name[name_len] != '\0') {
        f->why = LAYOUT_WHY;
        return;
    }
    f->pos = name + name_len + 1;
    while (left(f) > 0 && !at(f, value) && (f->pos[0] == ' ' || f->pos[0] == '\t'))
        f->pos++;
    if (!at(f, value) || value_len > left(f)) {
        f->why = LAYOUT_WHY;
        return;
    }
    f->pos = value + value_len;
}

void th_framing_field(struct th_framing *f, const char *name, size_t name_len, const char *value,
                      size_t value_len)
{
    if (f->why)
        return;
    if (f->check_layout) { /* first: past it, name and value are known to lie in the section */
        walk(f, name, name_len, value, value_len);
        if (f->why)
            return;
    }
    /* RFC 9112 §5.1: whitespace between name and colon MUST be refused (it is not a tchar) */
    if (!is_token(name, name_len)) {
        f->why = "a field name that is not a token";
        return;
    }
    /* RFC 9110 §5.5: CR, LF and NUL MUST be refused (or replaced); no other control belongs */
    for (size_t i = 0; i < value_len; i++) {
        unsigned char c = (unsigned char)value[i];
        if ((c < 0x20 && c != '\t') || c == 0x7f) {
            f->why = "a control character in a field value";
            return;
        }
    }
    if (name_is(name, name_len, "content-length")) {
        if (f->n_length++ == 0) {
            f->length = value;
            f->length_len = value_len;
        }
    } else if (name_is(name, name_len, "transfer-encoding")) {
        if (f->n_coding++ == 0) {
            f->coding = value;
            f->coding_len = value_len;
        }
    } else if (name_is(name, name_len, "host")) {
        f->n_host++;
    }
}

static void trim(const char **s, size_t *len)
{
    while (*len && (**s == ' ' || **s == '\t')) {
        (*s)++;
        (*len)--;
    }
    while (*len && ((*s)[*len - 1] == ' ' || (*s)[*len - 1] == '\t'))
        (*len)--;
}

/*
 * A Transfer-Encoding other than exactly "chunked" (libmicrohttpd reads a body chunked only
 * then, and otherwise until the connection closes). RFC 9112 §6.1: a list whose last coding is
 * chunked, after codings we do not implement, SHOULD get 501; anything else (chunked not last,
 * chunked twice, not a list of tokens) MUST get 400.
 */
static int coding_status(const char *v, size_t len)
{
    size_t elements = 0, chunked = 0;
    bool last_chunked = false;
    for (;;) {
        const char *comma = memchr(v, ',', len);
        size_t n = comma ? (size_t)(comma - v) : len;
        const char *e = v;
        size_t elen = n;
        trim(&e, &elen);
        if (!is_token(e, elen))
            return 400;
        elements++;
        last_chunked = name_is(e, elen, "chunked");
        chunked += last_chunked;
        if (!comma)
            break;
        v = comma + 1;
        len -= n + 1;
    }
    return elements >= 2 && chunked == 1 && last_chunked ? 501 : 400;
}

const char *th_framing_end(struct th_framing *f, bool http10, int *status)
{
    *status = 400;
    /* the last field's line end, then the empty line's, then nothing */
    if (!f->why && f->check_layout && eol(f) && eol(f) && left(f) != 0)
        f->why = LAYOUT_WHY;
    if (f->why)
        return f->why;
    /* RFC 9112 §6.3: both, a sign of smuggling, and a server MUST NOT trust such a length */
    if (f->n_coding && f->n_length)
        return "both Transfer-Encoding and Content-Length";
    if (f->n_coding && http10) /* §6.1: MUST treat the framing as faulty */
        return "Transfer-Encoding in an HTTP/1.0 request";
    if (f->n_coding > 1)
        return "more than one Transfer-Encoding field";
    if (f->n_coding && !(f->coding_len == 7 && strncasecmp(f->coding, "chunked", 7) == 0)) {
        *status = coding_status(f->coding, f->coding_len);
        return *status == 501 ? "a transfer coding other than chunked"
                              : "a Transfer-Encoding whose last coding is not chunked";
    }
    /* §6.3: an invalid Content-Length (two of them, even equal, or not digits) MUST get 400 */
    if (f->n_length > 1)
        return "more than one Content-Length field";
    if (f->n_length) {
        bool digits = f->length_len > 0;
        for (size_t i = 0; i < f->length_len; i++)
            digits = digits && f->length[i] >= '0' && f->length[i] <= '9';
        if (!digits)
            return "an invalid Content-Length";
    }
    /* §3.2: MUST refuse an HTTP/1.1 request without Host, and any with more than one */
    if (f->n_host > 1)
        return "more than one Host field";
    if (f->n_host == 0 && !http10)
        return "no Host field";
    return NULL;
}
