#include "net/fetch.h"

#include <stdio.h>
#include <string.h>

#include <curl/curl.h>

#include "common/util.h"
#include "net/internal.h"
#include "net/trust.h"

#define MAX_HEADERS 8

static size_t on_body(char *p, size_t size, size_t n, void *ud)
{
    return th_buf_append(ud, p, size * n) == TH_E_OK ? size * n : 0;
}

static size_t on_header(char *p, size_t size, size_t n, void *ud)
{
    struct th_fetch *f = ud;
    th_http_header_capture(p, size * n, f->capture, f->captured, sizeof f->captured);
    return size * n;
}

long th_fetch(struct th_fetch *f, struct th_buf *body, char *why, size_t whylen)
{
    th_buf_reset(body);
    f->captured[0] = '\0';
    if (f->nheaders > MAX_HEADERS) {
        snprintf(why, whylen, "too many headers");
        return -1;
    }
    CURL *e = curl_easy_init();
    if (!e) {
        snprintf(why, whylen, "out of memory");
        return -1;
    }
    struct curl_slist hdr[MAX_HEADERS]; /* built in place, as in net/http.c */
    for (size_t i = 0; i < f->nheaders; i++) {
        hdr[i].data = (char *)f->headers[i];
        hdr[i].next = i + 1 < f->nheaders ? &hdr[i + 1] : NULL;
    }
    curl_easy_setopt(e, CURLOPT_URL, f->url);
    curl_easy_setopt(e, CURLOPT_NOSIGNAL, 1L);
    curl_easy_setopt(e, CURLOPT_TIMEOUT_MS, f->timeout_ms);
    curl_easy_setopt(e, CURLOPT_PROTOCOLS_STR, "http,https");
    curl_easy_setopt(e, CURLOPT_FOLLOWLOCATION, 0L);
    th_trust_apply(e, f->ca_file);
    if (f->direct) /* "" disables the proxy even when the environment names one */
        curl_easy_setopt(e, CURLOPT_PROXY, "");
    curl_easy_setopt(e, CURLOPT_USERAGENT, "telehook/" TH_VERSION);
    curl_easy_setopt(e, CURLOPT_HTTPHEADER, f->nheaders ? hdr : NULL);
    curl_easy_setopt(e, CURLOPT_WRITEFUNCTION, on_body);
    curl_easy_setopt(e, CURLOPT_WRITEDATA, body);
    if (f->capture) {
        curl_easy_setopt(e, CURLOPT_HEADERFUNCTION, on_header);
        curl_easy_setopt(e, CURLOPT_HEADERDATA, f);
    }
    if (strcmp(f->method, "PUT") == 0) {
        curl_easy_setopt(e, CURLOPT_CUSTOMREQUEST, "PUT");
        curl_easy_setopt(e, CURLOPT_POSTFIELDS, "");
        curl_easy_setopt(e, CURLOPT_POSTFIELDSIZE, 0L);
    } else if (strcmp(f->method, "POST") == 0) {
        curl_easy_setopt(e, CURLOPT_POSTFIELDSIZE, (long)f->body_len);
        curl_easy_setopt(e, CURLOPT_POSTFIELDS, f->body ? f->body : ""); /* not copied */
    }
    CURLcode rc = curl_easy_perform(e);
    long status = -1;
    if (rc == CURLE_OK)
        curl_easy_getinfo(e, CURLINFO_RESPONSE_CODE, &status);
    else
        snprintf(why, whylen, "%s", curl_easy_strerror(rc));
    if (rc == CURLE_OK && status != 200)
        snprintf(why, whylen, "HTTP %ld", status);
    curl_easy_cleanup(e);
    return status;
}
