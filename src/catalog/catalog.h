/*
 * The catalog: what the store holds, made ready for the request path — the template set, the
 * users' preference map and the route table. A bad row never stops the service: it is logged
 * and skipped.
 */
#ifndef TH_CATALOG_CATALOG_H
#define TH_CATALOG_CATALOG_H

#include <stdbool.h>
#include <stddef.h>

#include "common/err.h"
#include "config/config.h"
#include "message/message.h"
#include "route/route.h"
#include "store/store.h"

/*
 * Every stored template that compiles and is within message.max_sms_segments (others are logged
 * and skipped; th_template_check's other findings are logged), quiet: no log lines (admin
 * commands).
 */
th_err th_catalog_templates_load(struct th_store *st, const struct th_config *cfg, bool quiet,
                                 struct th_templates **out, char *err, size_t errlen);
/* Every valid preference row (a bad one is logged and skipped). */
th_err th_catalog_prefs_load(struct th_store *st, struct th_prefs **out, char *err, size_t errlen);
/* Every valid route row (a bad one is logged and skipped). */
th_err th_catalog_routes_load(struct th_store *st, struct th_routes **out, char *err,
                              size_t errlen);

/* One "languages" log line at start: stored templates, preferences, the pack, the encoding. */
void th_catalog_log_startup(const struct th_config *cfg, const struct th_templates *stored,
                            const struct th_prefs *prefs);
/*
 * One line of what th_template_check found, for `templates set` and `templates check`:
 * "GSM-7, 61 units, 1 segment" (SMS) then the findings. Prints nothing of its own.
 */
void th_catalog_check_summary(const struct th_template *t, const struct th_template_report *rep,
                              const char *findings, char *out, size_t outlen);

#endif
