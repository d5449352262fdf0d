/*
 * A retired set: what a reload replaced (templates, preferences, routes, TLS credentials), kept
 * until shutdown because a request in flight may still point into it. Reserve room first, then
 * swap: th_retired_add after a successful th_retired_reserve cannot fail, so a reload never
 * loses the old value it has just swapped out.
 *
 * Not thread-safe: the owner serialises (reloads run on one thread, or under its own lock).
 */
#ifndef TH_COMMON_RETIRED_H
#define TH_COMMON_RETIRED_H

#include <stddef.h>

#include "common/err.h"

struct th_retired {
    const void **items; /* const as handed back by a swap; owned all the same */
    size_t n, cap;
    void (*free_fn)(void *item); /* how release frees an item */
};

/* A zeroed struct with free_fn set is an empty set too. */
void th_retired_init(struct th_retired *r, void (*free_fn)(void *item));
/* Room for one more item; TH_E_NOMEM. */
th_err th_retired_reserve(struct th_retired *r);
/* After th_retired_reserve: keeps item (NULL is not kept). */
void th_retired_add(struct th_retired *r, const void *item);
/* Frees every item but keep (still owned elsewhere; NULL: none), then the list. */
void th_retired_release(struct th_retired *r, const void *keep);

#endif
