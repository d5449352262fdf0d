/*
 * The issuer's signing keys for OAuth 2.0 hook authentication: a JWKS read from a file
 * (auth.jwks_file, for local development and air-gapped set-ups) or fetched from the issuer —
 * auth.jwks_url, else the jwks_uri of the issuer's discovery document, else {issuer}/v1/keys.
 *
 * Fetches happen on a thread of their own, never on a request loop: at start (the server is not
 * ready until keys arrive), periodically (Cache-Control max-age, default one hour, between one
 * minute and one day), and early when a token names an unknown kid — at most once per 30 s, so a
 * flood of bad tokens cannot hammer the issuer. A failed fetch keeps the keys already held.
 *
 * Readers take the current set with a reference (a short lock), so a refresh never frees a set
 * a request is still using.
 *
 * Where the keys come from must be https (plain http only to loopback): config validation checks
 * auth.issuer and auth.jwks_url, and a discovery document whose jwks_uri is plain http is
 * refused at fetch time (logged; the keys held are kept, the bad URL is never fetched).
 */
#ifndef TH_AUTH_KEYS_H
#define TH_AUTH_KEYS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "auth/jwt.h"
#include "common/err.h"
#include "loop/loop.h"

struct th_keys;

struct th_keys_opts {
    const char *issuer;
    const char *jwks_url;  /* "" = discovery */
    const char *jwks_file; /* "" = fetch */
    const char *const *algorithms;
    size_t nalgorithms;
};

/* With a jwks_file the file is read now (errors are returned); else the fetcher starts. */
th_err th_keys_new(const struct th_keys_opts *o, struct th_keys **out, char *err, size_t errlen);
void th_keys_free(struct th_keys *k); /* NULL is a no-op */

/*
 * The current key set (NULL before the first successful fetch) and its generation (0 before);
 * release it with the handle.
 */
const struct th_jwks *th_keys_acquire(struct th_keys *k, void **handle, uint64_t *gen);
void th_keys_release(struct th_keys *k, void *handle);

/*
 * The key-set generation: moves on when a fetched set no longer holds a key of the previous one
 * (withdrawn, or its kid now names another key); a set that only adds keys keeps it. A token
 * verified against generation g is still good while the generation is g. One atomic load.
 */
uint64_t th_keys_generation(const struct th_keys *k);

/*
 * Asks for an early refresh (a token named an unknown kid). true when a fetch is now due or
 * under way and worth waiting for; false when one ran less than 30 s ago.
 */
bool th_keys_refresh_soon(struct th_keys *k);

/* Completed fetch attempts (successful or not): a waiter re-checks when it changes. */
uint64_t th_keys_epoch(const struct th_keys *k);

/*
 * A request waiting for the refresh an unknown kid asked for, woken by the fetcher instead of
 * polling the epoch. Embedded in its owner, zero-initialised; the fields are private.
 */
struct th_keys_waiter {
    struct th_loop_call call;
    struct th_keys_waiter *prev, *next;
    bool waiting; /* in the fetcher's list (under the keys' lock) */
};

/*
 * On loop's thread: fn(ud) runs once on loop (loop/loop.h th_loop_call) when a fetch completes
 * after the epoch `seen` (successfully or not: the caller checks its token again). false when
 * the epoch has already moved past seen: nothing is registered, check again now. One wait at a
 * time per waiter.
 */
bool th_keys_wait(struct th_keys *k, struct th_keys_waiter *w, uint64_t seen, struct th_loop *loop,
                  th_loop_fn fn, void *ud);
/*
 * On the waiter's loop (its own timeout, or its connection closed): after this returns fn is
 * not called, even when a fetch completed on the fetcher's thread at the same moment. A no-op
 * for a waiter that is not waiting (woken, cancelled, or zero-initialised).
 */
void th_keys_wait_cancel(struct th_keys *k, struct th_keys_waiter *w);

bool th_keys_ready(const struct th_keys *k);

/* Fetches made since start (for the shutdown statistics and tests). */
uint64_t th_keys_fetches(const struct th_keys *k);

#endif
