#include "okta/okta.h"

#include <stdbool.h>

static void field(struct th_buf *out, const char *name, const char *value, bool *first)
{
    if (!value)
        return;
    th_buf_appends(out, *first ? "\"" : ",\"");
    *first = false;
    th_buf_appends(out, name);
    th_buf_appends(out, "\":");
    th_buf_append_json(out, value, (size_t)-1);
}

th_err th_okta_encode_result(struct th_buf *out, const char *status, const char *provider,
                             const char *transaction_id, const char *metadata)
{
    bool first = true;
    th_buf_appends(out, "{\"commands\":[{\"type\":\"" TH_OKTA_ACTION "\",\"value\":[{");
    field(out, "status", status, &first);
    field(out, "provider", provider, &first);
    field(out, "transactionId", transaction_id, &first);
    field(out, "transactionMetadata", metadata, &first);
    return th_buf_appends(out, "}]}]}");
}

th_err th_okta_encode_error(struct th_buf *out, const char *summary, const char *cause_reason)
{
    bool first = true;
    th_buf_appends(out, "{\"error\":{");
    field(out, "errorSummary", summary, &first);
    if (cause_reason) {
        th_buf_appends(out, ",\"errorCauses\":[{");
        bool cfirst = true;
        field(out, "errorSummary", summary, &cfirst);
        field(out, "reason", cause_reason, &cfirst);
        th_buf_appends(out, "}]");
    }
    return th_buf_appends(out, "}}");
}
