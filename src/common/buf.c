#include "common/buf.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/arena.h"

void th_buf_init(struct th_buf *b, size_t max)
{
    b->data = NULL;
    b->len = 0;
    b->cap = 0;
    b->max = max;
    b->err = TH_E_OK;
    b->arena = NULL;
}

void th_buf_release(struct th_buf *b)
{
    if (!b->arena)
        free(b->data);
    b->data = NULL;
    b->len = 0;
    b->cap = 0;
    b->err = TH_E_OK;
}

void th_buf_reset(struct th_buf *b)
{
    b->len = 0;
    b->err = TH_E_OK;
    if (b->data)
        b->data[0] = '\0';
}

th_err th_buf_err(const struct th_buf *b)
{
    return b->err;
}

void th_buf_truncate(struct th_buf *b, size_t len)
{
    if (b->err != TH_E_OK || len >= b->len)
        return;
    b->len = len;
    b->data[len] = '\0';
}

/*
 * Records the first error and empties the buffer. The bytes are wiped rather than freed: they may
 * have held a secret (a code, credentials), and the storage may not be ours to free (obs/log
 * lends a stack array); release frees it as usual.
 */
static th_err fail(struct th_buf *b, th_err e)
{
    if (b->data) {
        volatile char *p = b->data; /* a plain memset before free may be optimised away */
        for (size_t i = 0; i < b->len; i++)
            p[i] = '\0';
    }
    b->len = 0;
    b->err = e;
    return e;
}

static th_err grow(struct th_buf *b, size_t extra)
{
    if (b->err != TH_E_OK)
        return b->err;
    if (extra > b->max || b->len > b->max - extra)
        return fail(b, TH_E_TOOBIG);
    size_t need = b->len + extra + 1;
    if (need <= b->cap)
        return TH_E_OK;
    size_t ncap = b->cap ? b->cap : 64;
    while (ncap < need)
        ncap *= 2;
    if (ncap > b->max + 1)
        ncap = b->max + 1;
    char *p = b->arena ? th_arena_grow(b->arena, b->data, b->cap, ncap) : realloc(b->data, ncap);
    if (!p)
        return fail(b, TH_E_NOMEM);
    b->data = p;
    b->cap = ncap;
    return TH_E_OK;
}

th_err th_buf_append(struct th_buf *b, const void *p, size_t n)
{
    th_err e = grow(b, n);
    if (e != TH_E_OK)
        return e;
    if (n)
        memcpy(b->data + b->len, p, n);
    b->len += n;
    b->data[b->len] = '\0';
    return TH_E_OK;
}

th_err th_buf_appends(struct th_buf *b, const char *s)
{
    return th_buf_append(b, s, strlen(s));
}

th_err th_buf_appendc(struct th_buf *b, char c)
{
    return th_buf_append(b, &c, 1);
}

th_err th_buf_append_int(struct th_buf *b, long long v)
{
    char d[24];
    size_t i = sizeof d;
    /* through unsigned: -LLONG_MIN does not fit a long long */
    unsigned long long u = v < 0 ? 0ull - (unsigned long long)v : (unsigned long long)v;
    do {
        d[--i] = (char)('0' + u % 10);
        u /= 10;
    } while (u);
    if (v < 0)
        d[--i] = '-';
    return th_buf_append(b, d + i, sizeof d - i);
}

th_err th_buf_vprintf(struct th_buf *b, const char *fmt, va_list ap)
{
    if (b->err != TH_E_OK)
        return b->err;
    va_list ap2;
    va_copy(ap2, ap);
    int n = vsnprintf(NULL, 0, fmt, ap2);
    va_end(ap2);
    if (n < 0)
        return fail(b, TH_E_INVAL);
    th_err e = grow(b, (size_t)n);
    if (e != TH_E_OK)
        return e;
    vsnprintf(b->data + b->len, (size_t)n + 1, fmt, ap);
    b->len += (size_t)n;
    return TH_E_OK;
}

th_err th_buf_printf(struct th_buf *b, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    th_err e = th_buf_vprintf(b, fmt, ap);
    va_end(ap);
    return e;
}

const char *th_buf_str(const struct th_buf *b)
{
    return b->data && b->err == TH_E_OK ? b->data : "";
}

char *th_buf_steal(struct th_buf *b)
{
    char *p = b->data;
    if (b->arena) /* the storage is the arena's: the caller gets its own copy */
        p = b->err == TH_E_OK ? strndup(p ? p : "", b->len) : NULL;
    else if (b->err != TH_E_OK) {
        free(p);
        p = NULL;
    } else if (!p) {
        p = calloc(1, 1);
    }
    b->data = NULL;
    b->len = 0;
    b->cap = 0;
    b->err = TH_E_OK;
    return p;
}

/* Length of the valid UTF-8 sequence at p (1..4), or 0 when invalid. */
static size_t utf8_len(const unsigned char *p, size_t avail)
{
    unsigned c = p[0];
    size_t n;
    unsigned min;
    if (c < 0x80)
        return 1;
    if (c >= 0xc2 && c <= 0xdf) {
        n = 2;
        min = 0x80;
    } else if (c >= 0xe0 && c <= 0xef) {
        n = 3;
        min = 0x800;
    } else if (c >= 0xf0 && c <= 0xf4) {
        n = 4;
        min = 0x10000;
    } else {
        return 0;
    }
    if (avail < n)
        return 0;
    unsigned cp = c & (0x7f >> n);
    for (size_t i = 1; i < n; i++) {
        if ((p[i] & 0xc0) != 0x80)
            return 0;
        cp = (cp << 6) | (p[i] & 0x3f);
    }
    if (cp < min || cp > 0x10ffff || (cp >= 0xd800 && cp <= 0xdfff))
        return 0;
    return n;
}

th_err th_buf_append_json(struct th_buf *b, const char *s, size_t n)
{
    if (n == (size_t)-1)
        n = strlen(s);
    th_err e = th_buf_appendc(b, '"');
    const unsigned char *p = (const unsigned char *)s;
    size_t i = 0;
    while (e == TH_E_OK && i < n) {
        size_t run = i; /* copy runs of plain bytes in one append */
        while (run < n && p[run] >= 0x20 && p[run] < 0x80 && p[run] != '"' && p[run] != '\\')
            run++;
        if (run > i) {
            e = th_buf_append(b, p + i, run - i);
            i = run;
            continue;
        }
        unsigned char c = p[i];
        if (c == '"' || c == '\\') {
            char esc[2] = {'\\', (char)c};
            e = th_buf_append(b, esc, 2);
            i++;
        } else if (c < 0x20) {
            e = th_buf_printf(b, "\\u%04x", c);
            i++;
        } else {
            size_t l = utf8_len(p + i, n - i);
            if (l) {
                e = th_buf_append(b, p + i, l);
                i += l;
            } else {
                e = th_buf_appends(b, "\xef\xbf\xbd");
                i++;
            }
        }
    }
    /* a failure empties the whole buffer (sticky): never half a string */
    return e == TH_E_OK ? th_buf_appendc(b, '"') : e;
}
