/*
 * The router: carries one message to a handset through an ordered list of attempts (a route),
 * under the request's deadline, on the loop that owns the request.
 *
 * - Each attempt gets the smaller of its provider's timeout and what is left of the deadline.
 * - It fails over to the next attempt on timeouts, connection errors, 5xx and throttling; never
 *   on permanent errors (validation, opt-out, bad sender), which another route would repeat.
 * - Circuit breaker: a provider that failed dispatch.breaker_failures times in a row is skipped
 *   for dispatch.breaker_seconds, then tried again (the counts are shared by every loop).
 * - Transfers run on the loop's own libcurl multi (created on the loop by its first send and
 *   torn down by the loop when it stops), bounded by dispatch.max_in_flight.
 */
#ifndef TH_ROUTE_ROUTER_H
#define TH_ROUTE_ROUTER_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "common/err.h"
#include "config/config.h"
#include "route/route.h"
#include "loop/loop.h"
#include "provider/provider.h"

struct th_router;

struct th_route_result {
    th_err err;              /* TH_E_OK: a provider accepted the message */
    const char *provider;    /* the provider that accepted it, or the last one tried ("") */
    char transaction_id[96]; /* the accepting provider's message/call id */
    char errors[384];        /* every failed attempt, "aws: ThrottlingException; twilio: ..." */
    int attempts;            /* attempts made (skipped ones not counted) */
    bool overload;           /* nothing was tried: too many transfers in flight */
};

typedef void (*th_route_done_fn)(void *ud, const struct th_route_result *res);

/*
 * Builds the providers the default route (provider.name) and routes name; takes ownership of
 * routes (NULL: none). TH_E_CONFIG with the reason in err when the default provider, or one
 * whose config section is filled in, cannot be set up. A provider only a route names that cannot
 * be set up does not fail the start: its attempts are left out of the routes (a route left with
 * none is left out whole, so the default provider carries its messages), each route so cut is
 * logged (error "route_skipped") and counted in the gauge telehook_routes_skipped.
 */
th_err th_router_new(const struct th_config *cfg, const struct th_outbox_sink *outbox,
                     struct th_routes *routes, struct th_router **out, char *err, size_t errlen);
/*
 * A router over providers built by the caller (tests: scripted providers; an embedder: its own),
 * instead of the registry: providers[0] carries the default route. Takes ownership of the n
 * providers (freed by th_router_free, or here on failure) and of routes (NULL: none); attempts
 * naming none of them are left out, as th_router_new does.
 */
th_err th_router_new_with(const struct th_config *cfg, struct th_provider *const *providers, int n,
                          struct th_routes *routes, struct th_router **out, char *err,
                          size_t errlen);
/* After every loop has stopped. NULL is a no-op. */
void th_router_free(struct th_router *r);

/*
 * Sends msg; done is called exactly once, later, on loop (never inside this call). arena (the
 * request's: every caller has one — serve's request object, the CLI's replay its own) gives the
 * memory of the job and of the providers' attempts: it must outlive the return of done. Without
 * an arena, or when it is full, done is called at once with TH_E_INVAL or TH_E_NOMEM: the one
 * exception to "later".
 */
void th_router_send(struct th_router *r, struct th_loop *loop, struct th_arena *arena,
                    const struct th_send *msg, th_route_done_fn done, void *ud);

/* Every provider able to send (AWS credentials fetched, ...). */
bool th_router_ready(const struct th_router *r);

/* Names of the providers in use, comma-separated, for the start-up log line. */
const char *th_router_describe(const struct th_router *r);

/*
 * Registers the router's metrics in m: per provider its circuit, its failures in a row, its
 * attempts by result and their latency; the routes skipped. Bound to the router's state: the
 * router must outlive every render of m. Once, at start.
 */
struct th_metrics;
th_err th_router_metrics(struct th_router *r, struct th_metrics *m);
/* Providers whose circuit is open now (skipped until dispatch.breaker_seconds pass). */
int th_router_circuits_open(struct th_router *r);

/*
 * Route health. One final delivery receipt of a message provider sent to country (ISO alpha-2,
 * as the message's region): delivered or not. Thread-safe (the store writer calls it), O(1): a
 * lock held for a few instructions, no I/O under it. Per (provider, country), the receipts of
 * the last routing.health_window seconds; with at least routing.health_min_receipts of them and
 * a delivered share under routing.health_threshold percent, the provider is demoted there: a
 * route starting with it runs the next attempt whose provider is not demoted there and whose
 * circuit is closed first, the demoted one behind it (never onto an open circuit; a route with
 * no such attempt keeps its order). One request in 10 keeps the order, a probe, so receipts keep
 * coming. It comes back when the share reaches the threshold plus 10 points, or after a whole
 * window without enough receipts to judge. Logged at each change (route_health_demoted,
 * route_health_restored). Unknown providers and threshold 0 are ignored.
 */
void th_router_health_receipt(struct th_router *r, const char *provider, const char *country,
                              bool delivered);
/* Countries for which provider is demoted now (telehook_route_health_demoted). */
int th_router_health_demoted(struct th_router *r, const char *provider);

/* The router's provider called name (borrowed: it lives as long as the router), or NULL. For the
 * feedback queue (route/feedback.h), which reports through the provider that sent. */
struct th_provider *th_router_provider(struct th_router *r, const char *name);

/*
 * Replaces the route table (SIGHUP). Attempts naming a provider that was not set up at start are
 * left out as th_router_new does (logged, counted): a reload never fails for a route. The old
 * table is kept until shutdown. TH_E_NOMEM only.
 */
th_err th_router_swap_routes(struct th_router *r, struct th_routes *routes, char *err,
                             size_t errlen);

#endif
