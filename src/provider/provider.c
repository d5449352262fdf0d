#include "provider/provider.h"

#include <string.h>

th_err th_provider_new(const struct th_config *cfg, struct th_writer *writer,
                       struct th_provider **out)
{
    if (strcmp(cfg->provider_name, "outbox") == 0)
        return th_provider_outbox_new(writer, out);
    return TH_E_CONFIG; /* config validation names the accepted values */
}

void th_provider_free(struct th_provider *p)
{
    if (p)
        p->ops->free(p);
}
