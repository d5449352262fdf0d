/*
 * The receipt routes of serve: POST /v1/twilio/status, POST /v1/aws/sns, POST /v1/aws/events,
 * registered as side routes of the HTTP front (http/server.h), each on only when its [receipts]
 * key is set. A handler runs on the request's loop, checks the body's authentication
 * (receipt/receipt.h), queues the receipt on the store writer (store/writer.h: applied there,
 * never on the loop) and answers at once: 200/204 queued, 400 malformed, 403 not authentic (or
 * a topic, certificate host or SubscribeURL host not allowed), 503 when the writer's receipt
 * queue is full or an SNS signing certificate is being fetched — Twilio, SNS and EventBridge
 * retry a 5xx.
 *
 * SNS signing certificates are fetched through net/http.h on the loop that first needs one
 * (never a blocking fetch), only from a host [receipts] sns_cert_hosts allows, and kept by URL
 * (at most CERTS_MAX, each at most 16 KiB; a failed fetch is not retried for 5 s). A message
 * whose certificate is not there yet is answered 503 and the fetch starts: SNS retries it (its
 * HTTPS delivery policy retries at once, then at growing intervals), and the retry finds the
 * certificate. Holding the request instead would park a connection per message for as long
 * as the fetch takes, and SNS retries anyway.
 *
 * No number reaches a log line: receipts are logged by provider, message id and status.
 */
#ifndef TH_CLI_RECEIPTS_H
#define TH_CLI_RECEIPTS_H

#include <stddef.h>

#include "common/err.h"
#include "config/config.h"
#include "http/server.h"
#include "obs/metrics.h"
#include "store/writer.h"

struct th_receipts;

/*
 * Reads cfg (borrowed, outlives it), registers the metrics in m (may be NULL) and becomes w's
 * receipt callback (th_writer_on_receipt with [receipts] max_queue): it counts each applied
 * receipt, then calls next(next_ud, r) when next is not NULL (route health, conversion).
 */
th_err th_receipts_new(const struct th_config *cfg, struct th_writer *w, struct th_metrics *m,
                       th_writer_receipt_fn next, void *next_ud, struct th_receipts **out);
/*
 * The side routes to register (those whose source is configured), at most 3, into out; their
 * count. They point at r: register them with a server stopped before th_receipts_free.
 */
size_t th_receipts_routes(struct th_receipts *r, struct th_side_route *out, size_t max);
/* Before the writer stops: receipts arriving from now on are answered 503. NULL: a no-op. */
void th_receipts_detach(struct th_receipts *r);
/* After the server and the writer are stopped. NULL is a no-op. */
void th_receipts_free(struct th_receipts *r);

#endif
