#include "common/buf.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

void th_buf_init(struct th_buf *b, size_t max)
{
    b->data = NULL;
    b->len = 0;
    b->cap = 0;
    b->max = max;
}

void th_buf_release(struct th_buf *b)
{
    free(b->data);
    b->data = NULL;
    b->len = 0;
    b->cap = 0;
}

void th_buf_reset(struct th_buf *b)
{
    b->len = 0;
    if (b->data)
        b->data[0] = '\0';
}

static th_err grow(struct th_buf *b, size_t extra)
{
    if (extra > b->max || b->len > b->max - extra)
        return TH_E_TOOBIG;
    size_t need = b->len + extra + 1;
    if (need <= b->cap)
        return TH_E_OK;
    size_t ncap = b->cap ? b->cap : 64;
    while (ncap < need)
        ncap *= 2;
    if (ncap > b->max + 1)
        ncap = b->max + 1;
    char *p = realloc(b->data, ncap);
    if (!p)
        return TH_E_NOMEM;
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

th_err th_buf_vprintf(struct th_buf *b, const char *fmt, va_list ap)
{
    va_list ap2;
    va_copy(ap2, ap);
    int n = vsnprintf(NULL, 0, fmt, ap2);
    va_end(ap2);
    if (n < 0)
        return TH_E_INVAL;
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
    return b->data ? b->data : "";
}

char *th_buf_steal(struct th_buf *b)
{
    char *p = b->data;
    if (!p)
        p = calloc(1, 1);
    b->data = NULL;
    b->len = 0;
    b->cap = 0;
    return p;
}
