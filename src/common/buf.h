/*
 * th_buf: a growable byte buffer with a hard maximum size (after curl's dynbuf).
 * Every buffer that can hold network-controlled data is created with a cap, so no input
 * can make it grow without bound. The content is always NUL-terminated (not counted in len).
 *
 * Lifecycle: th_buf_init() (no allocation) → appends → th_buf_release() (frees, may re-use).
 * A zero-initialised struct with max == 0 refuses every append: always call th_buf_init.
 */
#ifndef TH_COMMON_BUF_H
#define TH_COMMON_BUF_H

#include <stdarg.h>
#include <stddef.h>

#include "common/err.h"

struct th_buf {
    char *data; /* owned; NULL until the first append */
    size_t len;
    size_t cap;
    size_t max; /* len may never exceed this */
};

void th_buf_init(struct th_buf *b, size_t max);
/* Frees the storage and resets to empty (the cap is kept). Safe on an initialised empty buffer. */
void th_buf_release(struct th_buf *b);
/* Empties without freeing the storage. */
void th_buf_reset(struct th_buf *b);
/* TH_E_TOOBIG when the result would exceed max (the buffer is left unchanged), TH_E_NOMEM. */
th_err th_buf_append(struct th_buf *b, const void *p, size_t n);
th_err th_buf_appends(struct th_buf *b, const char *s);
th_err th_buf_appendc(struct th_buf *b, char c);
/* v in decimal, as "%lld" writes it (without printf's format parsing: log fields, per request). */
th_err th_buf_append_int(struct th_buf *b, long long v);
th_err th_buf_printf(struct th_buf *b, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
th_err th_buf_vprintf(struct th_buf *b, const char *fmt, va_list ap);
/*
 * Appends s (n bytes, or up to NUL when n == (size_t)-1) as a JSON string literal, quotes
 * included. Control characters are escaped; bytes that are not valid UTF-8 become U+FFFD, so the
 * output is always valid JSON whatever the input.
 */
th_err th_buf_append_json(struct th_buf *b, const char *s, size_t n);
/* Always a valid C string ("" when empty). */
const char *th_buf_str(const struct th_buf *b);
/* Hands the storage to the caller (free() it) and resets the buffer; never NULL unless NOMEM. */
char *th_buf_steal(struct th_buf *b);

#endif
