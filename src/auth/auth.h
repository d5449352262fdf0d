/*
 * Authentication of Okta's calls. Mode "header": Okta sends a configured header whose value is
 * a configured secret, verbatim (it may start with "Basic "). Mode "none": development only
 * (config refuses it unless the server listens on loopback).
 *
 * The check is a seam: OAuth 2.0 bearer tokens (JWT) plug in here as another mode, with the
 * same inputs (a header lookup) and the same outputs.
 */
#ifndef TH_AUTH_AUTH_H
#define TH_AUTH_AUTH_H

#include "common/err.h"
#include "config/config.h"

struct th_auth;

/* Returns the value of a request header (case-insensitive name), or NULL. */
typedef const char *(*th_header_lookup_fn)(void *ud, const char *name);

/* Copies what it needs from cfg (the secret is kept only as its SHA-256). */
th_err th_auth_new(const struct th_config *cfg, struct th_auth **out);
void th_auth_free(struct th_auth *auth); /* NULL is a no-op */

/*
 * TH_E_OK when the request is authenticated, else TH_E_AUTH with *why set to a static reason
 * for the log ("missing credentials", "wrong credentials"); never the presented value.
 * Safe to call from several threads at once.
 */
th_err th_auth_check(const struct th_auth *auth, th_header_lookup_fn lookup, void *ud,
                     const char **why);

/* The header the client must send, for error hints and docs ("x-telephony-key"). */
const char *th_auth_header_name(const struct th_auth *auth);

#endif
