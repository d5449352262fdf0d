#include "provider/provider.h"
#include "provider/http_common.h"

#include <ctype.h>
#include <stdio.h>
#include <string.h>

th_err th_provider_new(const char *name, const struct th_config *cfg,
                       const struct th_outbox_sink *sink, struct th_provider **out, char *err,
                       size_t errlen)
{
    if (strcmp(name, "outbox") == 0)
        return th_provider_outbox_new(sink, out);
    if (strcmp(name, "aws") == 0)
        return th_provider_aws_new(cfg, out, err, errlen);
    if (strcmp(name, "twilio") == 0)
        return th_provider_twilio_new(cfg, out, err, errlen);
    if (strcmp(name, "webhook") == 0)
        return th_provider_webhook_new(cfg, out, err, errlen);
    snprintf(err, errlen, "unknown provider '%s' (outbox, aws, twilio, webhook)", name);
    return TH_E_CONFIG;
}

void th_provider_free(struct th_provider *p)
{
    if (p)
        p->ops->free(p);
}

bool th_provider_ready(struct th_provider *p)
{
    return !p->ops->ready || p->ops->ready(p);
}

void th_provider_transport_error(const struct th_http_response *res, struct th_send_result *out)
{
    out->err = res->outcome == TH_HTTP_TIMEOUT ? TH_E_TIMEOUT : TH_E_PROVIDER;
    out->retryable = true;
    switch (res->outcome) {
    case TH_HTTP_TIMEOUT:
        snprintf(out->error, sizeof out->error, "timeout after %lld ms",
                 (long long)(res->elapsed_us / 1000));
        break;
    case TH_HTTP_CONNECT:
        snprintf(out->error, sizeof out->error, "cannot connect: %.100s", res->error);
        break;
    case TH_HTTP_TOOBIG:
        snprintf(out->error, sizeof out->error, "response too large");
        break;
    case TH_HTTP_ABORTED:
        snprintf(out->error, sizeof out->error, "aborted (shutting down)");
        out->retryable = false;
        break;
    default:
        snprintf(out->error, sizeof out->error, "connection broken or bad response: %.80s",
                 res->error);
        break;
    }
}

static th_err form_escape(struct th_buf *b, const char *s)
{
    static const char hex[] = "0123456789ABCDEF";
    for (const unsigned char *p = (const unsigned char *)s; *p && !th_buf_err(b); p++) {
        if (isalnum(*p) || *p == '-' || *p == '.' || *p == '_' || *p == '~') {
            th_buf_appendc(b, (char)*p);
        } else if (*p == ' ') {
            th_buf_appendc(b, '+');
        } else {
            char enc[3] = {'%', hex[*p >> 4], hex[*p & 15]};
            th_buf_append(b, enc, 3);
        }
    }
    return th_buf_err(b);
}

th_err th_form_append(struct th_buf *b, const char *name, const char *value)
{
    if (b->len)
        th_buf_appendc(b, '&');
    form_escape(b, name);
    th_buf_appendc(b, '=');
    return form_escape(b, value);
}
