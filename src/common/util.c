#include "common/util.h"

#include <ctype.h>
#include <pthread.h>
#include <stdint.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>
#include <unistd.h>

#include <sys/stat.h>

#include <arpa/inet.h>
#include <curl/curl.h>
#include <openssl/rand.h>

int64_t th_mono_us(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000000 + ts.tv_nsec / 1000;
}

int64_t th_wall_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/*
 * Random bytes from a small per-thread pool refilled by OpenSSL's CSPRNG: one RAND_bytes call
 * (and its fork-detecting getpid) per ~40 ids instead of per id. telehook never forks after
 * threads start, so a pool cannot be shared by two processes.
 */
static th_err pooled_random(unsigned char *out, size_t n)
{
    static _Thread_local unsigned char pool[512];
    static _Thread_local size_t left;
    if (n > sizeof pool)
        return RAND_bytes(out, (int)n) == 1 ? TH_E_OK : TH_E_NOMEM;
    if (left < n) {
        if (RAND_bytes(pool, sizeof pool) != 1)
            return TH_E_NOMEM;
        left = sizeof pool;
    }
    unsigned char *p = pool + sizeof pool - left;
    memcpy(out, p, n);
    memset(p, 0, n); /* used bytes do not linger */
    left -= n;
    return TH_E_OK;
}

static const char crockford[] = "0123456789abcdefghjkmnpqrstvwxyz"; /* lower case */

/* n characters of base32 from the bits of rnd, most significant first */
static void base32(const unsigned char *rnd, char *out, size_t n)
{
    unsigned bits = 0, acc = 0;
    size_t r = 0;
    for (size_t i = 0; i < n; i++) {
        if (bits < 5) {
            acc = (acc << 8) | rnd[r++];
            bits += 8;
        }
        out[i] = crockford[(acc >> (bits - 5)) & 31];
        bits -= 5;
    }
}

/* prefix, then (timed) 9 characters of the wall clock in ms, then random ones, to 20 in all */
static th_err make_id(const char *prefix, char *out, size_t outlen, bool timed)
{
    size_t plen = strlen(prefix);
    if (outlen < plen + 21)
        return TH_E_INVAL;
    unsigned char rnd[13]; /* 104 bits, 100 used at most */
    if (pooled_random(rnd, sizeof rnd) != TH_E_OK)
        return TH_E_NOMEM;
    memcpy(out, prefix, plen);
    size_t at = plen;
    if (timed) {
        uint64_t ms = (uint64_t)th_wall_ms();
        for (int i = 8; i >= 0; i--, ms >>= 5) /* 45 bits of milliseconds */
            out[plen + (size_t)i] = crockford[ms & 31];
        at += 9;
    }
    base32(rnd, out + at, plen + 20 - at);
    out[plen + 20] = '\0';
    return TH_E_OK;
}

th_err th_random_id(const char *prefix, char *out, size_t outlen)
{
    return make_id(prefix, out, outlen, false);
}

th_err th_time_id(const char *prefix, char *out, size_t outlen)
{
    return make_id(prefix, out, outlen, true);
}

size_t th_strlcpy(char *out, const char *src, size_t outlen)
{
    size_t n = strlen(src);
    if (outlen) {
        size_t c = n < outlen - 1 ? n : outlen - 1;
        memcpy(out, src, c);
        out[c] = '\0';
    }
    return n;
}

th_err th_grow_to_index(void **arr, size_t *n, size_t elem, size_t index)
{
    if (index < *n)
        return TH_E_OK;
    size_t m = *n ? *n : 64;
    while (m <= index)
        m *= 2;
    unsigned char *a = realloc(*arr, m * elem);
    if (!a)
        return TH_E_NOMEM;
    memset(a + *n * elem, 0, (m - *n) * elem);
    *arr = a;
    *n = m;
    return TH_E_OK;
}

/* days since 1970-01-01 of a proleptic Gregorian date, and back (eras of 400 years) */
static int64_t days_from_civil(int64_t y, int64_t m, int64_t d)
{
    y -= m <= 2;
    int64_t era = (y >= 0 ? y : y - 399) / 400;
    int64_t yoe = y - era * 400;
    int64_t doy = (153 * (m > 2 ? m - 3 : m + 9) + 2) / 5 + d - 1;
    int64_t doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    return era * 146097 + doe - 719468;
}

void th_utc_from_unix(int64_t unix_s, struct th_utc *out)
{
    int64_t days = unix_s >= 0 ? unix_s / 86400 : -((-unix_s + 86399) / 86400);
    int64_t rem = unix_s - days * 86400;
    out->hour = (int)(rem / 3600);
    out->min = (int)(rem % 3600 / 60);
    out->sec = (int)(rem % 60);
    int64_t z = days + 719468;
    int64_t era = (z >= 0 ? z : z - 146096) / 146097;
    int64_t doe = z - era * 146097;
    int64_t yoe = (doe - doe / 1460 + doe / 36524 - doe / 146096) / 365;
    int64_t doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    int64_t mp = (5 * doy + 2) / 153;
    out->day = (int)(doy - (153 * mp + 2) / 5 + 1);
    out->month = (int)(mp < 10 ? mp + 3 : mp - 9);
    out->year = (int)(yoe + era * 400 + (out->month <= 2));
}

int64_t th_unix_from_utc(int year, int month, int day, int hour, int min, int sec)
{
    /* months outside 1..12 carry into the year first, as timegm does */
    int64_t y = year + (month - 1 >= 0 ? (month - 1) / 12 : -((12 - month) / 12));
    int64_t m = ((month - 1) % 12 + 12) % 12 + 1;
    return (days_from_civil(y, m, 1) + day - 1) * 86400 + (int64_t)hour * 3600 + min * 60 + sec;
}

void th_format_iso8601(int64_t unix_ms, char out[25])
{
    int64_t secs = unix_ms / 1000;
    int ms = (int)(unix_ms % 1000);
    if (ms < 0) {
        ms += 1000;
        secs -= 1;
    }
    struct th_utc t;
    th_utc_from_unix(secs, &t);
    /* Years outside 0..9999 cannot be written in 24 bytes: clamp (records never get there). */
    int year = t.year < 0 ? 0 : t.year > 9999 ? 9999 : t.year;
    char tmp[64];
    snprintf(tmp, sizeof tmp, "%04d-%02d-%02dT%02d:%02d:%02d.%03dZ", year, t.month, t.day, t.hour,
             t.min, t.sec, ms);
    th_strlcpy(out, tmp, 25);
}

static bool digits(const char *s, int n, int *val)
{
    int v = 0;
    for (int i = 0; i < n; i++) {
        if (!isdigit((unsigned char)s[i]))
            return false;
        v = v * 10 + (s[i] - '0');
    }
    *val = v;
    return true;
}

th_err th_parse_iso8601(const char *s, int64_t *unix_ms)
{
    int Y, M, D, h, m, sec;
    if (strlen(s) < 19 || !digits(s, 4, &Y) || s[4] != '-' || !digits(s + 5, 2, &M) ||
        s[7] != '-' || !digits(s + 8, 2, &D) || (s[10] != 'T' && s[10] != 't' && s[10] != ' ') ||
        !digits(s + 11, 2, &h) || s[13] != ':' || !digits(s + 14, 2, &m) || s[16] != ':' ||
        !digits(s + 17, 2, &sec))
        return TH_E_INVAL;
    if (M < 1 || M > 12 || D < 1 || D > 31 || h > 23 || m > 59 || sec > 60)
        return TH_E_INVAL;
    const char *p = s + 19;
    int frac_ms = 0;
    if (*p == '.') {
        p++;
        int nd = 0;
        while (isdigit((unsigned char)*p)) {
            if (nd < 3)
                frac_ms = frac_ms * 10 + (*p - '0');
            nd++;
            p++;
        }
        if (nd == 0 || nd > 9)
            return TH_E_INVAL;
        for (int i = nd; i < 3; i++)
            frac_ms *= 10;
    }
    int offset_min = 0;
    if (*p == 'Z' || *p == 'z') {
        p++;
    } else if (*p == '+' || *p == '-') {
        int oh, om;
        if (!digits(p + 1, 2, &oh) || p[3] != ':' || !digits(p + 4, 2, &om) || oh > 23 || om > 59)
            return TH_E_INVAL;
        offset_min = (oh * 60 + om) * (*p == '-' ? -1 : 1);
        p += 6;
    } else {
        return TH_E_INVAL;
    }
    if (*p)
        return TH_E_INVAL;
    int64_t t = th_unix_from_utc(Y, M, D, h, m, sec);
    *unix_ms = (t - (int64_t)offset_min * 60) * 1000 + frac_ms;
    return TH_E_OK;
}

th_err th_hostport_parse(const char *s, char *host, size_t hostlen, int *port)
{
    const char *h = s, *colon;
    size_t hl;
    if (s[0] == '[') {
        const char *close = strchr(s, ']');
        if (!close || close == s + 1 || close[1] != ':')
            return TH_E_INVAL;
        h = s + 1;
        hl = (size_t)(close - h);
        colon = close + 1;
    } else {
        colon = strrchr(s, ':');
        if (!colon || memchr(s, ':', (size_t)(colon - s))) /* IPv6 needs its brackets */
            return TH_E_INVAL;
        hl = (size_t)(colon - s);
    }
    const char *p = colon + 1;
    size_t pl = strlen(p);
    if (pl == 0 || pl > 5 || strspn(p, "0123456789") != pl || hl >= hostlen)
        return TH_E_INVAL;
    int v = atoi(p);
    if (v > 65535)
        return TH_E_INVAL;
    memcpy(host, h, hl);
    host[hl] = '\0';
    if (port)
        *port = v;
    return TH_E_OK;
}

bool th_host_is_loopback(const char *host)
{
    if (strcasecmp(host, "localhost") == 0)
        return true;
    struct in_addr a4;
    if (inet_pton(AF_INET, host, &a4) == 1)
        return (ntohl(a4.s_addr) >> 24) == 127;
    struct in6_addr a6;
    if (inet_pton(AF_INET6, host, &a6) == 1)
        return memcmp(&a6, &in6addr_loopback, sizeof a6) == 0;
    return false;
}

th_url_kind th_url_classify(const char *url, char *host_out, size_t hostlen)
{
    CURLU *u = curl_url();
    char *scheme = NULL, *host = NULL;
    th_url_kind kind = TH_URL_BAD;
    if (hostlen)
        host_out[0] = '\0';
    if (u && curl_url_set(u, CURLUPART_URL, url, 0) == CURLUE_OK &&
        curl_url_get(u, CURLUPART_SCHEME, &scheme, 0) == CURLUE_OK &&
        curl_url_get(u, CURLUPART_HOST, &host, 0) == CURLUE_OK && host[0]) {
        char h[256];
        size_t n = strlen(host);
        if (host[0] == '[' && n > 2 && host[n - 1] == ']') /* an IPv6 literal */
            snprintf(h, sizeof h, "%.*s", (int)(n - 2), host + 1);
        else
            snprintf(h, sizeof h, "%s", host);
        if (hostlen)
            snprintf(host_out, hostlen, "%s", h);
        if (strcasecmp(scheme, "https") == 0)
            kind = TH_URL_HTTPS;
        else if (strcasecmp(scheme, "http") == 0)
            kind =
                n < sizeof h && th_host_is_loopback(h) ? TH_URL_HTTP_LOOPBACK : TH_URL_HTTP_REMOTE;
    }
    curl_free(host);
    curl_free(scheme);
    curl_url_cleanup(u);
    return kind;
}

bool th_url_https_or_loopback(const char *url)
{
    th_url_kind k = th_url_classify(url, NULL, 0);
    return k == TH_URL_HTTPS || k == TH_URL_HTTP_LOOPBACK;
}

th_err th_read_private_file(const char *path, bool private_, const char *what, size_t cap,
                            char **buf, size_t *len, char *warn, size_t warnlen, char *err,
                            size_t errlen)
{
    *buf = NULL;
    *len = 0;
    if (warnlen)
        warn[0] = '\0';
    /* O_NONBLOCK: opening a FIFO (or /dev/stdin) must not hang the start; it is refused below */
    int fd = open(path, O_RDONLY | O_CLOEXEC | O_NOCTTY | O_NONBLOCK);
    if (fd < 0) {
        snprintf(err, errlen, "cannot read '%s': %s", path, strerror(errno));
        return TH_E_CONFIG;
    }
    struct stat st;
    if (fstat(fd, &st) != 0 || !S_ISREG(st.st_mode)) {
        close(fd);
        snprintf(err, errlen, "'%s' is not a regular file", path);
        return TH_E_CONFIG;
    }
    unsigned mode = (unsigned)st.st_mode & 07777;
    if (private_ && (mode & S_IRWXO)) {
        close(fd);
        snprintf(err, errlen,
                 "'%s' is open to other users (mode %04o): refused, as ssh refuses such a key; "
                 "run chmod 600 '%s' (or chmod 640 with a group only the service is in)",
                 path, mode, path);
        return TH_E_CONFIG;
    }
    if (private_ && (mode & S_IRWXG) && warnlen)
        snprintf(warn, warnlen,
                 "'%s' is open to its group (mode %04o): every member can read the %s; "
                 "chmod 600 '%s' unless only the service is in the group",
                 path, mode, what, path);
    char *b = malloc(cap + 1);
    size_t n = 0;
    bool bad = !b;
    while (!bad && n < cap) {
        ssize_t r = read(fd, b + n, cap - n);
        if (r < 0 && errno == EINTR)
            continue;
        if (r <= 0) {
            bad = r < 0;
            break;
        }
        n += (size_t)r;
    }
    close(fd);
    if (bad) {
        if (b)
            explicit_bzero(b, cap + 1);
        free(b);
        snprintf(err, errlen, "cannot read '%s'", path);
        return TH_E_CONFIG;
    }
    b[n] = '\0';
    *buf = b;
    *len = n;
    return TH_E_OK;
}

static char node_id[17];
static pthread_once_t node_once = PTHREAD_ONCE_INIT;

static void node_init(void)
{
    static const char hex[] = "0123456789abcdef";
    unsigned char b[8] = {0};
    if (RAND_bytes(b, sizeof b) != 1) { /* no CSPRNG: still unique enough per process */
        uint64_t v = (uint64_t)getpid() << 32 ^ (uint64_t)th_wall_ms();
        memcpy(b, &v, sizeof b);
    }
    for (int i = 0; i < 8; i++) {
        node_id[2 * i] = hex[b[i] >> 4];
        node_id[2 * i + 1] = hex[b[i] & 15];
    }
    node_id[16] = '\0';
}

const char *th_node_id(void)
{
    pthread_once(&node_once, node_init);
    return node_id;
}
