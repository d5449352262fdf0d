#include "common/arena.h"

#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <openssl/crypto.h>

#include "common/buf.h"

/* Extra chunks: at least this big, so a request that outgrows its first chunk mallocs once. */
#define CHUNK_MIN 4096

struct th_arena_chunk {
    struct th_arena_chunk *next;
    size_t size; /* of data */
    alignas(max_align_t) unsigned char data[];
};

static size_t align_up(size_t n)
{
    return (n + TH_ARENA_ALIGN - 1) & ~(size_t)(TH_ARENA_ALIGN - 1);
}

void th_arena_init(struct th_arena *a, void *first, size_t first_size, size_t cap)
{
    /* the embedded chunk is used from an aligned start only */
    uintptr_t p = (uintptr_t)first, q = align_up(p);
    if (!first || first_size < q - p) {
        first = NULL;
        first_size = 0;
    } else {
        first_size -= q - p;
        first = (void *)q;
    }
    a->first = first;
    a->first_size = first_size;
    a->used = 0;
    a->head = NULL;
    a->total = first_size;
    a->cap = cap;
}

void *th_arena_alloc(struct th_arena *a, size_t n)
{
    size_t need = align_up(n ? n : 1);
    if (need < n) /* overflow */
        return NULL;
    unsigned char *base = a->head ? a->head->data : a->first;
    size_t size = a->head ? a->head->size : a->first_size;
    if (base && size - a->used >= need) {
        void *p = base + a->used;
        a->used += need;
        return p;
    }
    size_t room = a->cap > a->total ? a->cap - a->total : 0;
    if (need > room)
        return NULL;
    size_t csize = need > CHUNK_MIN ? need : CHUNK_MIN;
    if (csize > room) /* the rest of the cap, at least what is asked */
        csize = room;
    /* the unused tail of the current chunk is given up (a request allocates few large things) */
    struct th_arena_chunk *c = malloc(sizeof *c + csize);
    if (!c)
        return NULL;
    c->size = csize;
    c->next = a->head;
    a->head = c;
    a->total += csize;
    a->used = need;
    return c->data;
}

void *th_arena_calloc(struct th_arena *a, size_t n)
{
    void *p = th_arena_alloc(a, n);
    if (p)
        memset(p, 0, n);
    return p;
}

char *th_arena_strndup(struct th_arena *a, const char *s, size_t n)
{
    if (n == SIZE_MAX)
        return NULL;
    char *p = th_arena_alloc(a, n + 1);
    if (!p)
        return NULL;
    memcpy(p, s, n);
    p[n] = '\0';
    return p;
}

char *th_arena_strdup(struct th_arena *a, const char *s)
{
    return th_arena_strndup(a, s, strlen(s));
}

void *th_arena_grow(struct th_arena *a, void *p, size_t old, size_t n)
{
    if (!p)
        return th_arena_alloc(a, n);
    unsigned char *base = a->head ? a->head->data : a->first;
    size_t size = a->head ? a->head->size : a->first_size;
    size_t need = align_up(n);
    unsigned char *q = p;
    /* the newest allocation of the current chunk: it can simply take more of the chunk */
    uintptr_t at = (uintptr_t)q, lo = (uintptr_t)base;
    if (need >= n && base && at >= lo && at + align_up(old) == lo + a->used &&
        need <= size - (at - lo)) {
        a->used = (at - lo) + need;
        return p;
    }
    void *np = th_arena_alloc(a, n);
    if (np)
        memcpy(np, p, old);
    return np;
}

th_err th_arena_buf_reserve(struct th_arena *a, struct th_buf *b, size_t reserve, size_t max)
{
    th_buf_init(b, max);
    b->arena = a;
    if (reserve > max)
        reserve = max;
    char *p = reserve < SIZE_MAX ? th_arena_alloc(a, reserve + 1) : NULL;
    if (!p)
        return TH_E_NOMEM;
    /* a capacity of max + 1 is all a th_buf of max bytes ever asks for: then it never grows */
    p[0] = '\0';
    b->data = p;
    b->cap = reserve + 1;
    return TH_E_OK;
}

th_err th_arena_buf(struct th_arena *a, struct th_buf *b, size_t max)
{
    return th_arena_buf_reserve(a, b, max, max);
}

void th_arena_buf_fit(struct th_buf *b)
{
    struct th_arena *a = b->arena;
    if (!a || !b->data)
        return;
    unsigned char *base = a->head ? a->head->data : a->first;
    uintptr_t at = (uintptr_t)b->data, lo = (uintptr_t)base;
    size_t keep = align_up(b->len + 1), had = align_up(b->cap);
    if (!base || at < lo || at + had != lo + a->used || keep >= had)
        return;
    OPENSSL_cleanse(b->data + keep, had - keep);
    a->used = (at - lo) + keep;
    b->cap = b->len + 1;
}

size_t th_arena_used(const struct th_arena *a)
{
    if (!a->head)
        return a->used;
    /* the older chunks count whole: what they gave up at their tail was never handed out, but
     * is not tracked either (an upper bound, for tests and metrics) */
    size_t n = a->used;
    for (const struct th_arena_chunk *c = a->head->next; c; c = c->next)
        n += c->size;
    return n + (a->first ? a->first_size : 0);
}

void th_arena_cleanse_release(struct th_arena *a)
{
    if (!a)
        return;
    struct th_arena_chunk *c = a->head;
    if (c) {
        OPENSSL_cleanse(c->data, a->used);
        struct th_arena_chunk *older = c->next;
        free(c);
        for (c = older; c; c = older) { /* full up to a tail never handed out: wipe it all */
            older = c->next;
            OPENSSL_cleanse(c->data, c->size);
            free(c);
        }
        if (a->first)
            OPENSSL_cleanse(a->first, a->first_size);
    } else if (a->first) {
        OPENSSL_cleanse(a->first, a->used);
    }
    a->head = NULL;
    a->used = 0;
    a->total = a->first_size;
}
