/* Private to src/guard: what admin.c reads of a guard built by guard.c. */
#ifndef TH_GUARD_INTERNAL_H
#define TH_GUARD_INTERNAL_H

#include "common/rate.h"
#include "guard/guard.h"

#define TH_GUARD_KEY_HEX 33 /* a state key (16 bytes of HMAC) in hex, with its NUL */

/* The shared state's conninfo (NULL: in memory). */
const char *th_guard_url_(const struct th_guard *g);
/* Wall time in µs as guard_decide() is given it (th_guard_set_clock's in tests). */
int64_t th_guard_wall_us_(const struct th_guard *g);
/* The key under which the shared state keeps (label, a): exactly guard_decide()'s. */
void th_guard_key_hex_(const struct th_guard *g, const char *label, const char *a,
                       char out[TH_GUARD_KEY_HEX]);
/* The rate of a limit (PHONE_SHORT, PHONE_LONG, USER, COUNTRY_RATE, GLOBAL), else NULL. */
const struct th_rate *th_guard_rate_(const struct th_guard *g, th_block b);
/* A calling code's daily budget; -1: none. */
long th_guard_budget_(const struct th_guard *g, int code);

#endif
