/* Small helpers shared by every module: clocks, ids, bounded string copies. */
#ifndef TH_COMMON_UTIL_H
#define TH_COMMON_UTIL_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "common/err.h"

#define TH_ARRAY_LEN(a) (sizeof(a) / sizeof((a)[0]))

/* Monotonic clock in microseconds (for deadlines and latencies). */
int64_t th_mono_us(void);
/* Wall clock in milliseconds since the Unix epoch (for records). */
int64_t th_wall_ms(void);

/*
 * Writes a new random identifier: prefix then 20 characters of Crockford base32 (100 bits from
 * OpenSSL's CSPRNG), NUL-terminated. out must hold strlen(prefix) + 21 bytes. TH_E_NOMEM if the
 * CSPRNG fails (it does not in practice).
 */
th_err th_random_id(const char *prefix, char *out, size_t outlen);

/*
 * The same shape, but time-ordered (like a ULID): 9 characters of the wall clock in milliseconds
 * (good until the year 3084), then 11 random ones (55 bits). Ids made later sort later, so the
 * indexes of records keyed by them grow at one end instead of on a random page per insert, and
 * `ORDER BY id` is creation order.
 */
th_err th_time_id(const char *prefix, char *out, size_t outlen);

/*
 * This process's node id: 64 random bits as 16 hex characters, drawn once at the first call
 * (thread-safe). Delivery records carry it, so a verification matched on one node of a shared
 * store is credited to the node that sent the message (docs/conversion.md).
 */
const char *th_node_id(void);

/* strlcpy: copies at most outlen-1 bytes, always terminates (outlen > 0); returns strlen(src). */
size_t th_strlcpy(char *out, const char *src, size_t outlen);

/*
 * Makes the array *arr of *n elements of elem bytes (indexed by a file descriptor, say) hold
 * index: grows it by doubling (from 64), zeroing the new elements. TH_E_NOMEM leaves it as it was.
 */
th_err th_grow_to_index(void **arr, size_t *n, size_t elem, size_t index);

/*
 * UTC calendar fields from Unix seconds and back, by arithmetic (H. Hinnant's days_from_civil):
 * gmtime_r and timegm take glibc's time-zone lock, shared by every thread, on each call.
 * th_unix_from_utc normalises out-of-range fields linearly, as timegm does (Feb 30 = Mar 2).
 */
struct th_utc {
    int year, month, day, hour, min, sec; /* month 1..12, day 1..31 */
};
void th_utc_from_unix(int64_t unix_s, struct th_utc *out);
int64_t th_unix_from_utc(int year, int month, int day, int hour, int min, int sec);

/* Formats unix milliseconds as "2026-11-24T20:36:01.123Z". out must hold 25 bytes. */
void th_format_iso8601(int64_t unix_ms, char out[25]);
/* Parses "2022-01-28T21:48:34.321Z" (fraction optional, 'Z' or ±hh:mm offset). */
th_err th_parse_iso8601(const char *s, int64_t *unix_ms);

/*
 * Splits "HOST:PORT" or "[IPV6]:PORT" (server.listen's form) into host, brackets removed, and
 * port (0-65535, 1 to 5 digits). host may be "" (":8080": every address); a bare IPv6 address
 * ("::1:80"), empty brackets, a missing or non-numeric port, or a host that does not fit hostlen
 * are TH_E_INVAL. port may be NULL. The one parser of HOST:PORT: config, the server, serve, probe.
 */
th_err th_hostport_parse(const char *s, char *host, size_t hostlen, int *port);

/* True for 127.0.0.0/8, ::1, "localhost". host without brackets. */
bool th_host_is_loopback(const char *host);

/*
 * True when url is fit to fetch key material from: https, or plain http to a loopback host (for
 * tests and local issuers). Judged on the parts libcurl's URL parser finds, the parser that will
 * fetch it: the scheme in any case ("HTTP://"), userinfo ("http://127.0.0.1@evil.com" is
 * evil.com), look-alike hosts ("127.0.0.1.evil.com", "localhost.evil.com"), brackets ("[::1]").
 * Anything that does not parse, or another scheme, is false.
 */
bool th_url_https_or_loopback(const char *url);

/*
 * Reads a whole file that may hold a secret, under the rules every secret file follows
 * (docs/configuration.md#secret-files): a regular file (a symlink to one is fine; a FIFO or a
 * device is refused without blocking on it); when private, the opened file's mode must give
 * other users no access (refused, naming the fix), and group access is taken with a warning in
 * warn ("" when none; what names the contents: "secret", "key"). Reads at most cap bytes into
 * *buf (malloc, cap + 1 bytes, NUL-terminated: the caller wipes and frees it) and their count
 * into *len: a count of cap means the file may be longer. TH_E_CONFIG with the reason in err.
 */
th_err th_read_private_file(const char *path, bool private_, const char *what, size_t cap,
                            char **buf, size_t *len, char *warn, size_t warnlen, char *err,
                            size_t errlen);

/* What th_url_https_or_loopback judges, with the host (brackets removed) for messages. */
typedef enum { TH_URL_BAD, TH_URL_HTTPS, TH_URL_HTTP_LOOPBACK, TH_URL_HTTP_REMOTE } th_url_kind;
th_url_kind th_url_classify(const char *url, char *host, size_t hostlen);

#endif
