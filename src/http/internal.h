/*
 * src/http internals shared with the unit tests: the request framing checks.
 */
#ifndef TH_HTTP_INTERNAL_H
#define TH_HTTP_INTERNAL_H

#include <stdbool.h>
#include <stddef.h>

/*
 * Request framing (RFC 9112), checked on the header fields libmicrohttpd parsed, before a byte of
 * the body is read. A request whose length a proxy in front of us could read differently from
 * libmicrohttpd (both Content-Length and Transfer-Encoding, two Content-Lengths, a coding other
 * than chunked, ...) or whose header section libmicrohttpd did not parse as a strict parser would
 * (whitespace before a colon, a control character in a value, line folding, bare LF, a NUL) is
 * refused and its connection closed: what follows it on the connection is never served.
 *
 * Use: th_framing_begin, th_framing_field for each header field in the order received,
 * th_framing_end. Borrowed pointers only; nothing is allocated.
 */
struct th_framing {
    /*
     * libmicrohttpd 0.9 parses the header section in place: the CR and LF ending each line and
     * the colon after each name become NULs, the whitespace after the colon is skipped. So the
     * names and values it hands out, with those NULs and that whitespace, must tile the section
     * exactly; bytes left over are bytes it did not expose (after a NUL in a value: it measures
     * values with strlen), and a field out of place was moved by line folding. pos is where the
     * next expected byte is, end the end of the section; check_layout is false when the layout is
     * not that one (then only the field checks run).
     */
    const char *pos, *end;
    bool check_layout;
    unsigned n_length, n_coding, n_host;
    const char *length, *coding; /* the first Content-Length and Transfer-Encoding values */
    size_t length_len, coding_len;
    const char *why; /* the first problem found (a static string), NULL while none */
};

/*
 * line_end: the NUL that ended the request line (after the HTTP version); end: one past the
 * header section (the request line, the fields and the empty line, as
 * MHD_CONNECTION_INFO_REQUEST_HEADER_SIZE counts it from the method). NULL for both: no layout
 * check.
 */
void th_framing_begin(struct th_framing *f, const char *line_end, const char *end);
void th_framing_field(struct th_framing *f, const char *name, size_t name_len, const char *value,
                      size_t value_len);
/*
 * NULL when the request may be served; else why (a static string for the log) and *status: 501
 * for a transfer coding we do not implement before chunked, 400 for everything else.
 */
const char *th_framing_end(struct th_framing *f, bool http10, int *status);

#endif
