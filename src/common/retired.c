#include "common/retired.h"

#include <stdlib.h>

void th_retired_init(struct th_retired *r, void (*free_fn)(void *item))
{
    *r = (struct th_retired){.free_fn = free_fn};
}

th_err th_retired_reserve(struct th_retired *r)
{
    if (r->n < r->cap)
        return TH_E_OK;
    size_t ncap = r->cap ? r->cap * 2 : 8;
    const void **p = realloc(r->items, ncap * sizeof *p);
    if (!p)
        return TH_E_NOMEM;
    r->items = p;
    r->cap = ncap;
    return TH_E_OK;
}

void th_retired_add(struct th_retired *r, const void *item)
{
    if (item && r->n < r->cap)
        r->items[r->n++] = item;
}

void th_retired_release(struct th_retired *r, const void *keep)
{
    for (size_t i = 0; i < r->n; i++)
        if (r->items[i] != keep && r->free_fn)
            r->free_fn((void *)r->items[i]);
    free(r->items);
    r->items = NULL;
    r->n = r->cap = 0;
}
