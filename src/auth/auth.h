/*
 * Authentication of Okta's calls, before a byte of the body is read.
 *
 *   header  Okta's "HTTP header" option: a configured header whose value is a configured secret,
 *           verbatim (it may start with "Basic "), compared in constant time.
 *   oauth2  Okta's OAuth 2.0 option: "Authorization: Bearer <JWT>" from Okta's authorization
 *           server, verified against the issuer's keys (auth/jwt.h, auth/keys.h). A verified
 *           token is remembered (by its SHA-256) until it expires: Okta reuses one token for up
 *           to an hour, so it costs one signature check, not one per request. A remembered
 *           token stops counting as soon as a key refresh withdraws or replaces a key of the set
 *           it was verified against (it is verified again, once); both spellings of an ES256
 *           signature, (r, s) and (r, n - s), are one token (auth/jwt.h th_jwt_cache_key).
 *   either  both accepted: a bearer token is checked as in oauth2, anything else as in header.
 *   none    development only (config refuses it unless the server listens on loopback).
 */
#ifndef TH_AUTH_AUTH_H
#define TH_AUTH_AUTH_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "auth/keys.h"
#include "common/err.h"
#include "config/config.h"
#include "loop/loop.h"

struct th_auth;

/*
 * Returns the value of a request header (case-insensitive name), or NULL; *len is set to the
 * value's length as the HTTP layer received it (which may hold a NUL byte: the whole value is
 * compared, never only what precedes a NUL).
 */
typedef const char *(*th_header_lookup_fn)(void *ud, const char *name, size_t *len);

/*
 * Copies what it needs from cfg (the header secret, at least TH_AUTH_HEADER_SECRET_MIN bytes, is
 * kept only as its SHA-256); in oauth2 and either modes starts fetching the issuer's keys.
 * TH_E_CONFIG with the reason in err.
 */
th_err th_auth_new(const struct th_config *cfg, struct th_auth **out, char *err, size_t errlen);
void th_auth_free(struct th_auth *auth); /* NULL is a no-op */

/*
 * TH_E_OK when the request is authenticated; TH_E_AUTH with *why set to a static reason for the
 * log ("missing credentials", "wrong credentials", "bearer: expired", ...), never the presented
 * value; TH_E_BUSY when the token names a key the server does not hold and a key refresh has
 * been asked for: check again once th_auth_epoch() has changed — th_auth_wait() says when — or
 * give up after a second. Safe to call from several threads at once.
 */
th_err th_auth_check(struct th_auth *auth, th_header_lookup_fn lookup, void *ud, const char **why);

/* Changes whenever a key fetch completes (successfully or not). */
uint64_t th_auth_epoch(const struct th_auth *auth);

/*
 * After TH_E_BUSY, on loop's thread: fn(ud) runs once on loop when the next key fetch completes
 * (the epoch moves past seen, read before or right after th_auth_check). false: it has already
 * moved (or there is no fetcher): nothing registered, check again now. The waiter is embedded in
 * the request, zero-initialised (auth/keys.h); th_auth_wait_cancel() before freeing it, on the
 * same loop: after it returns fn is not called (timeout, connection closed).
 */
bool th_auth_wait(struct th_auth *auth, struct th_keys_waiter *w, uint64_t seen,
                  struct th_loop *loop, th_loop_fn fn, void *ud);
void th_auth_wait_cancel(struct th_auth *auth, struct th_keys_waiter *w);

/* false while oauth2 keys have not been fetched yet (the server is not ready). */
bool th_auth_ready(const struct th_auth *auth);

/* Whether a 401 must carry WWW-Authenticate: Bearer (oauth2 and either modes). */
bool th_auth_bearer(const struct th_auth *auth);

/* The header the client must send, for error hints and docs ("x-telephony-key"). */
const char *th_auth_header_name(const struct th_auth *auth);

struct th_auth_stats {
    uint64_t verified;   /* tokens whose signature was checked and accepted */
    uint64_t cache_hits; /* requests accepted from the verified-token cache */
    uint64_t refused;    /* bearer tokens refused */
    uint64_t key_fetches;
};
void th_auth_stats(const struct th_auth *auth, struct th_auth_stats *out);

#endif
