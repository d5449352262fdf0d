/* Private to src/message: what message.c, sms.c, pack.c and ssml.c share. */
#ifndef TH_MESSAGE_INTERNAL_H
#define TH_MESSAGE_INTERNAL_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "message/message.h"

/*
 * Decodes one UTF-8 character at *p (before end) and advances past it. A byte that does not
 * start a valid, shortest-form sequence of a scalar value is U+FFFD and advances by one.
 */
uint32_t th_msg_utf8_next(const unsigned char **p, const unsigned char *end);

/* Septets a character takes in GSM-7: 1 (basic table), 2 (extension table), 0 (not GSM-7). */
int th_msg_gsm_septets(uint32_t cp);

/*
 * Whether th_sms_prepare would rewrite text under enc (every character outside GSM-7 has a
 * replacement): lets the renderer skip the copy for texts that stay UCS-2.
 */
bool th_msg_sms_rewritable(th_sms_encoding enc, const char *text, size_t len);

/* A language's unit for {{expires}}: its plural rule and forms ("#" is where the number goes). */
struct th_msg_units;
/* The units of tag (exact, then its language, then its candidates); NULL when none. */
const struct th_msg_units *th_msg_units_find(const char *tag);
/* "# minutes" with n; units NULL: "n min". */
void th_msg_units_format(const struct th_msg_units *u, int n, char *out, size_t outlen);

/* The pack as specs (language, channel, body, voice), for message.c to build its set. */
size_t th_msg_pack_specs(struct th_template_spec *out, size_t max);

#endif
