/* Private to src/provider: what the HTTP providers share. */
#ifndef TH_PROVIDER_HTTP_COMMON_H
#define TH_PROVIDER_HTTP_COMMON_H

#include "common/buf.h"
#include "net/http.h"
#include "provider/provider.h"

/* A transfer that did not produce a response: a retryable failure described in out. */
void th_provider_transport_error(const struct th_http_response *res, struct th_send_result *out);

/* Appends s form-urlencoded (application/x-www-form-urlencoded: space as '+'). */
th_err th_form_append(struct th_buf *b, const char *name, const char *value);

#endif
