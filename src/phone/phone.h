/*
 * Phone numbers: E.164 normalisation, region and line type, as a thin C wrapper over
 * libphonenumber (C++). No other module sees libphonenumber.
 *
 * Thread safety: after th_phone_init() every function may be called from any thread.
 */
#ifndef TH_PHONE_PHONE_H
#define TH_PHONE_PHONE_H

#include <stddef.h>

#include "common/err.h"

#ifdef __cplusplus
extern "C" {
#endif

/* libphonenumber's PhoneNumberType, in our own names. */
typedef enum {
    TH_PHONE_FIXED_LINE,
    TH_PHONE_MOBILE,
    TH_PHONE_FIXED_LINE_OR_MOBILE,
    TH_PHONE_TOLL_FREE,
    TH_PHONE_PREMIUM_RATE,
    TH_PHONE_SHARED_COST,
    TH_PHONE_VOIP,
    TH_PHONE_PERSONAL_NUMBER,
    TH_PHONE_PAGER,
    TH_PHONE_UAN,
    TH_PHONE_VOICEMAIL,
    TH_PHONE_UNKNOWN
} th_phone_type;

/* Longest raw input accepted (Okta stores at most 15 digits; we allow formatting characters). */
#define TH_PHONE_MAX_INPUT 64

struct th_phone {
    char e164[17];      /* "+" and up to 15 digits, NUL-terminated */
    char region[3];     /* ISO 3166-1 alpha-2 of the number ("US"), "" when not geographic */
    int country_code;   /* calling code, e.g. 1 */
    th_phone_type type; /* line type */
    /* Input without '+' valid both as a national number of the default region (taken, in e164)
     * and as a different international one: that other reading ("+2015550123"); else "". */
    char intl_e164[17];
};

/* Loads libphonenumber's metadata once (costly); call before serving. Idempotent. */
void th_phone_init(void);

/*
 * Parses a number as Okta may send it: with or without a leading '+', with spaces, dashes,
 * dots or parentheses. With '+': parsed as international. Without: a national number of
 * default_region (ISO alpha-2; NULL or "" skips that reading) when it is valid there, else
 * international (as if '+' were present). The national reading wins even when the international
 * one is valid too (2015550123 with US: +1 201 555 0123, not +20 1555 0123 in Egypt): the admin
 * configured where the users are, and a guess abroad costs a call to the wrong country; such
 * input gets the other reading in out->intl_e164 (for the caller to count and log).
 * Only numbers libphonenumber considers valid are accepted.
 *
 * raw need not be NUL-terminated; len is its length. Inputs longer than TH_PHONE_MAX_INPUT,
 * or holding anything but digits, '+', and the formatting characters above, are refused.
 * Returns TH_E_OK and fills out, or TH_E_PHONE (out is zeroed).
 */
th_err th_phone_parse(const char *raw, size_t len, const char *default_region,
                      struct th_phone *out);

/* "MOBILE", "FIXED_LINE", ... (stable names used in config and logs). */
const char *th_phone_type_name(th_phone_type t);

/* True when region is a region code libphonenumber knows ("US", "GB"); case-sensitive. */
int th_phone_region_known(const char *region);

/* True when cc is a calling code libphonenumber knows (1, 44, 881, ...). */
int th_phone_code_known(int cc);

/*
 * True when cc is non-geographic: it belongs to no country (libphonenumber's region "001"):
 * today +800 and +808 (international freephone, shared cost), +870 (Inmarsat), +878 (universal
 * personal telecommunications), +881 (satellite), +882 and +883 (international networks), +888
 * (disaster relief) and +979 (international premium rate). Toll-fraud destinations by design.
 */
int th_phone_code_non_geographic(int cc);

/*
 * Masks a number for logs and records: keeps '+' and the first 4 digits and the last 2,
 * replaces the rest with '*': "+12065550123" → "+1206*****23". Numbers of 8 digits or fewer
 * keep only the '+', the first 2 digits and the last 2. Writes at most outlen bytes (NUL included).
 */
void th_phone_mask(const char *e164, char *out, size_t outlen);

#ifdef __cplusplus
}
#endif

#endif
