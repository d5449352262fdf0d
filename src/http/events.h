/*
 * Okta's Event Hook endpoint (docs/conversion.md): GET /v1/okta/events answers Okta's one-time
 * verification; POST takes a delivery of System Log events, queues each successful SMS or voice
 * factor event to the store writer (th_writer_verify: matched there to the delivery it
 * verifies, never on the loop) and answers 200 at once. A full writer queue answers 503, so
 * Okta retries the delivery (matching is idempotent on each event's uuid).
 *
 * Authentication: [events] header_name + header_secret when a secret is set (checked before
 * the body is read), else the telephony hook's (th_auth_check).
 *
 * Lifecycle: th_events_new → th_events_route (registered in th_server_deps.side) → requests →
 * th_events_detach (before the writer stops: later requests answer 503) → th_events_free
 * (after the server stopped).
 */
#ifndef TH_HTTP_EVENTS_H
#define TH_HTTP_EVENTS_H

#include "common/err.h"
#include "config/config.h"
#include "http/server.h"
#include "store/writer.h"

#define TH_EVENTS_PATH "/v1/okta/events"

struct th_events;
struct th_metrics;

/* cfg and writer are borrowed; cfg outlives ev, writer until th_events_detach. */
th_err th_events_new(const struct th_config *cfg, struct th_writer *writer, struct th_events **out);
/* The side route to register (valid while ev lives). */
const struct th_side_route *th_events_route(struct th_events *ev);
/*
 * telehook_okta_events_total{type, result}: type auth_via_mfa, factor_activate, other; result
 * queued, matched, unmatched, duplicate, failed (the writer's), ignored (another factor or a
 * failed outcome), invalid (a malformed event), dropped (the writer's queue was full).
 */
th_err th_events_metrics(struct th_events *ev, struct th_metrics *m);
/* Thread-safe, idempotent: the writer is not used after it returns. */
void th_events_detach(struct th_events *ev);
void th_events_free(struct th_events *ev); /* NULL is a no-op */

#endif
