#include "provider/provider.h"
#include "provider/http_common.h"

#include <ctype.h>
#include <stdio.h>
#include <string.h>

#include "common/util.h"

/*
 * The registration table: every provider, in the order an error message lists them. Adding one
 * is its own file (defining `const struct th_provider_kind th_provider_NAME`) and one X here.
 */
#define TH_PROVIDERS(X) X(outbox) X(aws) X(twilio) X(webhook)

#define DECLARE(n) extern const struct th_provider_kind th_provider_##n;
TH_PROVIDERS(DECLARE)
#define ENTRY(n) &th_provider_##n,
static const struct th_provider_kind *const kinds[] = {TH_PROVIDERS(ENTRY)};

const struct th_provider_kind *th_provider_kind_at(size_t i)
{
    return i < TH_ARRAY_LEN(kinds) ? kinds[i] : NULL;
}

const struct th_provider_kind *th_provider_kind_find(const char *name)
{
    for (size_t i = 0; i < TH_ARRAY_LEN(kinds); i++)
        if (strcmp(kinds[i]->name, name) == 0)
            return kinds[i];
    return NULL;
}

th_err th_provider_new(const char *name, const struct th_config *cfg,
                       const struct th_outbox_sink *sink, struct th_provider **out, char *err,
                       size_t errlen)
{
    const struct th_provider_kind *k = th_provider_kind_find(name);
    if (k)
        return k->create(cfg, sink, out, err, errlen);
    int n = snprintf(err, errlen, "unknown provider '%s' (", name);
    for (size_t i = 0; i < TH_ARRAY_LEN(kinds) && n > 0 && (size_t)n < errlen; i++)
        n += snprintf(err + n, errlen - (size_t)n, "%s%s", i ? ", " : "", kinds[i]->name);
    if (n > 0 && (size_t)n < errlen)
        snprintf(err + n, errlen - (size_t)n, ")");
    return TH_E_CONFIG;
}

bool th_provider_can_set_up(const char *name, const struct th_config *cfg, char *why, size_t whylen)
{
    const struct th_provider_kind *k = th_provider_kind_find(name);
    if (!k) {
        snprintf(why, whylen, "unknown provider");
        return false;
    }
    if (k->check)
        return k->check(cfg, why, whylen);
    if (k->configured && !k->configured(cfg)) {
        snprintf(why, whylen, "[%s] %s is not set", k->name, k->required ? k->required : "");
        return false;
    }
    struct th_provider *p = NULL;
    th_err e = k->create(cfg, NULL, &p, why, whylen);
    th_provider_free(p);
    return e == TH_E_OK;
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
