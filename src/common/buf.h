/*
 * th_buf: a growable byte buffer with a hard maximum size and a sticky error (after curl's
 * dynbuf, docs/internals/DYNBUF.md). Every buffer that can hold network-controlled data is
 * created with a cap, so no input can make it grow without bound. The content is always
 * NUL-terminated (not counted in len).
 *
 * Lifecycle: th_buf_init() (no allocation) → appends → th_buf_release() (frees, may re-use).
 * A zero-initialised struct with max == 0 refuses every append: always call th_buf_init.
 *
 * Errors are sticky, so a builder appends freely and checks once at the end:
 *
 *     th_buf_appends(b, "{\"to\":");
 *     th_buf_append_json(b, to, (size_t)-1);
 *     th_buf_appends(b, "}");
 *     if (th_buf_err(b) != TH_E_OK) ...
 *
 * The first append that fails (TH_E_TOOBIG over max, TH_E_NOMEM, TH_E_INVAL from a bad printf
 * format) records its error in the buffer and empties it: the bytes written so far are wiped
 * (they may have held a secret) and len becomes 0; the storage is kept until release. From then
 * on every append is a no-op that returns the recorded error, th_buf_str() gives "" and
 * th_buf_steal() gives NULL, so half a document (a truncated answer to Okta, part of a SigV4
 * canonical request) can never be used by mistake. th_buf_reset() and th_buf_release() clear
 * the error. Each append still returns its result, so a single call can be checked directly.
 */
#ifndef TH_COMMON_BUF_H
#define TH_COMMON_BUF_H

#include <stdarg.h>
#include <stddef.h>

#include "common/err.h"

struct th_arena;

struct th_buf {
    char *data; /* owned (or the arena's); NULL until the first append */
    size_t len;
    size_t cap;
    size_t max; /* len may never exceed this */
    th_err err; /* the first failure; TH_E_OK while the buffer is usable */
    /* NULL: the storage is the heap's. Else it is this arena's (th_arena_buf): grown within the
     * arena, never freed here — the arena wipes and frees it with the request */
    struct th_arena *arena;
};

void th_buf_init(struct th_buf *b, size_t max);
/*
 * Frees the storage and resets to empty (the max is kept, the error cleared). Safe on an
 * initialised empty buffer. An arena's buffer forgets its storage (the arena keeps it until it
 * is wiped) and stays in that arena.
 */
void th_buf_release(struct th_buf *b);
/* Empties without freeing the storage and clears the error. */
void th_buf_reset(struct th_buf *b);
/* The recorded error: TH_E_OK while every append so far succeeded. */
th_err th_buf_err(const struct th_buf *b);
/*
 * Cuts the content back to its first len bytes (len <= b->len), to undo a part the caller
 * decided against. A no-op on a failed buffer: it is already empty and stays failed.
 */
void th_buf_truncate(struct th_buf *b, size_t len);
/*
 * TH_E_TOOBIG when the result would exceed max, TH_E_NOMEM; either fails the buffer (see the
 * top). On a failed buffer: nothing is appended and the recorded error is returned.
 */
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
/* Always a valid C string: "" when empty or failed. */
const char *th_buf_str(const struct th_buf *b);
/*
 * Hands the storage to the caller (free() it) and resets the buffer (error cleared). NULL when
 * the buffer had failed (its storage is freed) or on NOMEM; "" (allocated) when empty. An arena's
 * buffer hands a heap copy (its storage stays the arena's).
 */
char *th_buf_steal(struct th_buf *b);

#endif
