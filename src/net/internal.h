/* Private to src/net: what the event-loop client (http.c) and the blocking fetch share. */
#ifndef TH_NET_INTERNAL_H
#define TH_NET_INTERNAL_H

#include <stdbool.h>
#include <stddef.h>

/*
 * When the raw header line (len bytes, "Name: value\r\n") is the header name (case-insensitive),
 * copies its value, trimmed, into out (cut to outlen - 1) and returns true.
 */
bool th_http_header_capture(const char *line, size_t len, const char *name, char *out,
                            size_t outlen);

#endif
