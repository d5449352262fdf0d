/*
 * Routes: which providers, with which sender identities and in which order, carry a message for
 * a channel and a destination country. A route's attempts are written as text, e.g.
 *
 *     aws:+12065550100, twilio:MG0123456789abcdef0123456789abcdef, outbox
 *
 * one "provider[:sender]" per attempt, tried in order (the sender may itself hold colons, as
 * ARNs do; without one the provider's configured default is used). A table is immutable once
 * built and is looked up most specific first: (channel, country), (channel, *), (*, country),
 * (*, *).
 */
#ifndef TH_DISPATCH_ROUTE_H
#define TH_DISPATCH_ROUTE_H

#include <stdbool.h>
#include <stddef.h>

#include "common/err.h"
#include "message/message.h"

#define TH_ROUTE_MAX_ATTEMPTS 8
#define TH_ROUTE_SENDER_MAX   257

struct th_route_attempt {
    char provider[16];
    char sender[TH_ROUTE_SENDER_MAX]; /* "" = the provider's default */
};

struct th_route {
    char channel[8]; /* "sms", "voice" or "*" */
    char country[4]; /* "US" or "*" */
    int n;
    struct th_route_attempt at[TH_ROUTE_MAX_ATTEMPTS];
};

/*
 * Parses an attempt list. known(name) says whether a provider name is acceptable (NULL: any of
 * outbox, aws, twilio, webhook). TH_E_INVAL with the reason in err.
 */
th_err th_route_parse(const char *text, bool (*known)(void *ud, const char *name), void *ud,
                      struct th_route *out, char *err, size_t errlen);
/* Writes the attempt list back as text ("aws:+1206..., twilio"). */
void th_route_format(const struct th_route *r, char *out, size_t outlen);

/* Validates and normalises a channel ("sms", "voice", "*") and country ("us" → "US", "*"). */
th_err th_route_key(const char *channel, const char *country, char ch_out[8], char cc_out[4],
                    char *err, size_t errlen);

struct th_routes;
th_err th_routes_new(struct th_routes **out);
void th_routes_free(struct th_routes *rs);
/* Adds a route (its channel and country must already be normalised). */
th_err th_routes_add(struct th_routes *rs, const struct th_route *r);
size_t th_routes_count(const struct th_routes *rs);
/* The i-th route (i < count), in insertion order. */
const struct th_route *th_routes_find_index(const struct th_routes *rs, size_t i);
/* The most specific route, or NULL. */
const struct th_route *th_routes_find(const struct th_routes *rs, th_channel ch,
                                      const char *country);

#endif
