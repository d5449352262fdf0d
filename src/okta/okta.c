#include "okta/okta.h"

#include <stdbool.h>

static th_err field(struct th_buf *out, const char *name, const char *value, bool *first)
{
    if (!value)
        return TH_E_OK;
    th_err e = th_buf_appends(out, *first ? "\"" : ",\"");
    *first = false;
    if (!e)
        e = th_buf_appends(out, name);
    if (!e)
        e = th_buf_appends(out, "\":");
    if (!e)
        e = th_buf_append_json(out, value, (size_t)-1);
    return e;
}

th_err th_okta_encode_result(struct th_buf *out, const char *status, const char *provider,
                             const char *transaction_id, const char *metadata)
{
    bool first = true;
    th_err e = th_buf_appends(out, "{\"commands\":[{\"type\":\"" TH_OKTA_ACTION "\",\"value\":[{");
    if (!e)
        e = field(out, "status", status, &first);
    if (!e)
        e = field(out, "provider", provider, &first);
    if (!e)
        e = field(out, "transactionId", transaction_id, &first);
    if (!e)
        e = field(out, "transactionMetadata", metadata, &first);
    if (!e)
        e = th_buf_appends(out, "}]}]}");
    return e;
}

th_err th_okta_encode_error(struct th_buf *out, const char *summary, const char *cause_reason)
{
    bool first = true;
    th_err e = th_buf_appends(out, "{\"error\":{");
    if (!e)
        e = field(out, "errorSummary", summary, &first);
    if (!e && cause_reason) {
        e = th_buf_appends(out, ",\"errorCauses\":[{");
        bool cfirst = true;
        if (!e)
            e = field(out, "errorSummary", summary, &cfirst);
        if (!e)
            e = field(out, "reason", cause_reason, &cfirst);
        if (!e)
            e = th_buf_appends(out, "}]");
    }
    if (!e)
        e = th_buf_appends(out, "}}");
    return e;
}
