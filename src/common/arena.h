/*
 * th_arena: one memory pool per request (after h2o's h2o_mem_pool_t), freed in one step.
 *
 * Every stage of a request allocates from its arena instead of the heap: the body as read, the
 * decoded Okta fields, the rendered text, the answer, the router's job, a provider's attempt.
 * The first chunk lives inside the object that owns the arena (no malloc for a normal request);
 * further chunks are malloc'd when it is full, up to a cap on the total, past which an allocation
 * fails cleanly (NULL) — an arena can hold network data, so it is bounded like a th_buf.
 *
 * Nothing is freed piecemeal: th_arena_cleanse_release() wipes every byte handed out (the OTP,
 * the rendered text and the raw body live there: this is the one place they are cleansed) and
 * frees the extra chunks. Not thread-safe: an arena belongs to the loop of its request.
 */
#ifndef TH_COMMON_ARENA_H
#define TH_COMMON_ARENA_H

#include <stdalign.h>
#include <stddef.h>

#include "common/err.h"

struct th_arena_chunk; /* a malloc'd extra chunk (private) */

struct th_arena {
    unsigned char *first; /* the embedded first chunk (borrowed: the owner's memory) */
    size_t first_size;
    size_t used;                 /* bytes handed out of the current chunk (first or head) */
    struct th_arena_chunk *head; /* the extra chunks, newest first; NULL: still in the first */
    size_t total;                /* bytes reserved: the first chunk plus the extra ones */
    size_t cap;                  /* total never exceeds this */
};

/* Allocations are aligned to this (enough for any scalar type). */
#define TH_ARENA_ALIGN alignof(max_align_t)

/*
 * first/first_size: the embedded chunk (may be NULL/0: every allocation then mallocs a chunk);
 * cap: the most the arena may reserve in all, the first chunk included. No allocation.
 */
void th_arena_init(struct th_arena *a, void *first, size_t first_size, size_t cap);

/* n bytes aligned to TH_ARENA_ALIGN, valid until release; NULL past the cap or out of memory. */
void *th_arena_alloc(struct th_arena *a, size_t n);
/* The same, zeroed. */
void *th_arena_calloc(struct th_arena *a, size_t n);
/* A copy of n bytes of s, NUL-terminated; NULL as th_arena_alloc. */
char *th_arena_strndup(struct th_arena *a, const char *s, size_t n);
char *th_arena_strdup(struct th_arena *a, const char *s);

/*
 * p, a block of old bytes from this arena, made n bytes (n >= old) keeping its content: extended
 * in place when it is the arena's newest allocation and its chunk has room, else moved to a new
 * block (the old one stays in the arena, wiped with it). p NULL: th_arena_alloc. NULL as
 * th_arena_alloc (p is then unchanged).
 */
void *th_arena_grow(struct th_arena *a, void *p, size_t old, size_t n);

/*
 * A th_buf whose storage is the arena's (a provider's request body): reserve + 1 bytes up front,
 * sized by the caller from what it is about to write so that appends normally never allocate;
 * past the reserve it grows within the arena (th_arena_grow) up to max, and an append past max
 * is TH_E_TOOBIG as with any th_buf. Its bytes are wiped with the arena; th_buf_release() only
 * forgets them. TH_E_NOMEM when the arena cannot give the reserve (b is then an empty buffer of
 * the arena that allocates on its first append).
 */
struct th_buf;
th_err th_arena_buf_reserve(struct th_arena *a, struct th_buf *b, size_t reserve, size_t max);
/* The same with all of max reserved (the text, an answer): it never grows. */
th_err th_arena_buf(struct th_arena *a, struct th_buf *b, size_t max);

/*
 * Gives the unused tail of b's reserve back to its arena when b is the arena's newest allocation
 * (a text rendered into a reserve sized for the longest): the arena's next allocation starts
 * right after b's bytes, so a request in flight holds what its text takes, not its reserve. The
 * tail is wiped first (it may hold bytes written and then cut). b keeps its bytes and may still
 * grow (in place while it is the newest, else by a copy). Anything else: nothing happens.
 */
void th_arena_buf_fit(struct th_buf *b);

/* Bytes handed out so far, over all chunks (for tests and metrics). */
size_t th_arena_used(const struct th_arena *a);

/*
 * Wipes every byte handed out (OPENSSL_cleanse: the compiler may not elide it), frees the extra
 * chunks and leaves the arena empty and usable again over its first chunk. NULL is a no-op.
 */
void th_arena_cleanse_release(struct th_arena *a);

#endif
