/*
 * AWS Signature Version 4 signer (reference §2.1). The canonical request is never stored whole:
 * it is streamed through a small staging buffer into SHA-256 (and copied to the optional creq
 * buffer), so signing needs no allocation of its own whatever the request size. Sorting headers,
 * query pairs and path segments uses fixed arrays of pointers into the caller's strings.
 *
 * Canonicalisation choices, pinned by the vectors (tests/vectors/sigv4*) or, where the suites
 * leave them open, by test_canonicalisation_choices in tests/unit/test_sigv4.c:
 * - path: empty and "." segments dropped, ".." pops (never above the root); a trailing '/' is
 *   kept only when the raw path ends with '/' (botocore and aws-c-auth do this, so "/a/b/.." is
 *   "/a", not RFC 3986's "/a/"); every byte but the unreserved set encoded, '%' included: the
 *   path is taken as already encoded, as AWS SDKs do for non-S3 services (no suite case has a
 *   '%' in the path, so the suites cannot tell decoding and double-encoding apart);
 * - query: names and values percent-decoded then re-encoded (get-vanilla-query-order-encoded
 *   needs "%E1%88%B4" to stay as is, get-vanilla-utf8-query needs raw UTF-8 encoded), sorted by
 *   encoded name then encoded value; empty "&&" pieces are skipped;
 * - header values: SP, HTAB, CR and LF are whitespace: trimmed, inner runs (obsolete folding
 *   included) collapsed to one space; repeated names joined with ',' in input order.
 */
#include "aws/sigv4.h"

#include <stdbool.h>
#include <stdio.h>
#include <string.h>
#include <time.h>

#include <openssl/crypto.h>

#include "common/hmac.h"
#include "common/util.h"

#define ALGORITHM      "AWS4-HMAC-SHA256"
#define TERMINATOR     "aws4_request"
#define SHA256_LEN     32
#define SHA256_HEX_LEN 64
#define AMZ_DATE_LEN   16
/* SHA-256 block size: HMAC keys longer than this are first hashed (RFC 2104). */
#define SHA256_BLOCK 64

/* ---- small helpers ------------------------------------------------------------------------- */

struct span {
    const char *p;
    size_t n;
};

static void hex_lower(const unsigned char *p, size_t n, char *out)
{
    static const char digits[] = "0123456789abcdef";
    for (size_t i = 0; i < n; i++) {
        out[2 * i] = digits[p[i] >> 4];
        out[2 * i + 1] = digits[p[i] & 0x0f];
    }
    out[2 * n] = '\0';
}

static int hex_value(char c)
{
    if (c >= '0' && c <= '9')
        return c - '0';
    if (c >= 'a' && c <= 'f')
        return c - 'a' + 10;
    if (c >= 'A' && c <= 'F')
        return c - 'A' + 10;
    return -1;
}

static char ascii_lower(char c)
{
    return c >= 'A' && c <= 'Z' ? (char)(c - 'A' + 'a') : c;
}

static bool is_digit(char c)
{
    return c >= '0' && c <= '9';
}

/* RFC 3986 unreserved characters: never percent-encoded. */
static bool is_unreserved(unsigned char c)
{
    return (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '-' ||
           c == '.' || c == '_' || c == '~';
}

/* Header value whitespace; CR and LF come from obsolete line folding. */
static bool is_ws(char c)
{
    return c == ' ' || c == '\t' || c == '\r' || c == '\n';
}

/* ---- key derivation ------------------------------------------------------------------------ */

void th_sigv4_derive_key(const char *secret, const char *date8, const char *region,
                         const char *service, unsigned char out[TH_SIGV4_KEY_LEN])
{
    memset(out, 0, TH_SIGV4_KEY_LEN);
    if (!secret || !date8 || !region || !service)
        return;

    /* kSecret = "AWS4" + secret. A key longer than one block is replaced by its SHA-256 inside
       HMAC anyway (RFC 2104), so hashing it here gives the same MAC without a large buffer. */
    unsigned char k_secret[SHA256_BLOCK];
    size_t k_secret_len;
    size_t secret_len = strlen(secret);
    if (secret_len <= sizeof k_secret - 4) {
        memcpy(k_secret, "AWS4", 4);
        memcpy(k_secret + 4, secret, secret_len);
        k_secret_len = 4 + secret_len;
    } else {
        struct th_sha256 md;
        th_sha256_init(&md);
        th_sha256_update(&md, "AWS4", 4);
        th_sha256_update(&md, secret, secret_len);
        th_sha256_final(&md, k_secret);
        k_secret_len = SHA256_LEN;
    }

    /* Only the date part is used, so the whole X-Amz-Date value may be passed. */
    size_t date_len = strnlen(date8, 8);
    unsigned char k_date[SHA256_LEN], k_region[SHA256_LEN], k_service[SHA256_LEN];
    /* th_hmac_sha256_once: no allocation and no algorithm fetch (OpenSSL 3's HMAC() does both
     * on every call), and it cannot fail */
    th_hmac_sha256_once(k_secret, k_secret_len, date8, date_len, k_date);
    th_hmac_sha256_once(k_date, SHA256_LEN, region, strlen(region), k_region);
    th_hmac_sha256_once(k_region, SHA256_LEN, service, strlen(service), k_service);
    th_hmac_sha256_once(k_service, SHA256_LEN, TERMINATOR, strlen(TERMINATOR), out);
    OPENSSL_cleanse(k_secret, sizeof k_secret);
    OPENSSL_cleanse(k_date, sizeof k_date);
    OPENSSL_cleanse(k_region, sizeof k_region);
    OPENSSL_cleanse(k_service, sizeof k_service);
}

/* ---- the canonical-request sink: SHA-256 plus an optional copy ----------------------------- */

struct sink {
    struct th_sha256 md;
    struct th_buf *copy; /* NULL: hash only; its error is sticky, read once at the end */
    size_t n;
    char stage[256];
};

static void sink_flush(struct sink *s)
{
    if (s->n > 0) {
        th_sha256_update(&s->md, s->stage, s->n);
        if (s->copy)
            th_buf_append(s->copy, s->stage, s->n);
    }
    s->n = 0;
}

static void sink_putc(struct sink *s, char c)
{
    if (s->n == sizeof s->stage)
        sink_flush(s);
    s->stage[s->n++] = c;
}

static void sink_puts(struct sink *s, const char *str)
{
    while (*str)
        sink_putc(s, *str++);
}

/* ---- percent-encoding ---------------------------------------------------------------------- */

/*
 * Cursor over the canonical (percent-encoded, uppercase hex) form of a raw component, one byte
 * at a time: lets query pairs be compared and written without an encoded copy.
 */
struct enc {
    const char *p, *end;
    bool decode; /* decode valid %XX escapes before encoding (query) */
    char out[3];
    size_t n, i;
};

static void enc_init(struct enc *e, struct span s, bool decode)
{
    e->p = s.p;
    e->end = s.p + s.n;
    e->decode = decode;
    e->n = e->i = 0;
}

/* The next encoded byte, or -1 at the end. */
static int enc_next(struct enc *e)
{
    static const char digits[] = "0123456789ABCDEF";
    if (e->i == e->n) {
        if (e->p == e->end)
            return -1;
        unsigned char c = (unsigned char)*e->p++;
        if (e->decode && c == '%' && e->end - e->p >= 2 && hex_value(e->p[0]) >= 0 &&
            hex_value(e->p[1]) >= 0) {
            c = (unsigned char)(hex_value(e->p[0]) << 4 | hex_value(e->p[1]));
            e->p += 2;
        }
        e->i = 0;
        if (is_unreserved(c)) {
            e->out[0] = (char)c;
            e->n = 1;
        } else {
            e->out[0] = '%';
            e->out[1] = digits[c >> 4];
            e->out[2] = digits[c & 0x0f];
            e->n = 3;
        }
    }
    return (unsigned char)e->out[e->i++];
}

static void sink_encoded(struct sink *s, struct span raw, bool decode)
{
    struct enc e;
    enc_init(&e, raw, decode);
    for (int c; (c = enc_next(&e)) >= 0;)
        sink_putc(s, (char)c);
}

/* Byte order of the encoded forms of two query components (a shorter prefix sorts first). */
static int encoded_cmp(struct span a, struct span b)
{
    struct enc ea, eb;
    enc_init(&ea, a, true);
    enc_init(&eb, b, true);
    for (;;) {
        int ca = enc_next(&ea), cb = enc_next(&eb);
        if (ca != cb || ca < 0)
            return ca - cb;
    }
}

/* ---- canonical URI ------------------------------------------------------------------------- */

static th_err put_path(struct sink *s, const char *path)
{
    struct span seg[TH_SIGV4_MAX_SEGMENTS];
    size_t nseg = 0;
    for (const char *p = path; *p;) {
        const char *start = p;
        while (*p && *p != '/')
            p++;
        size_t n = (size_t)(p - start);
        if (n == 2 && start[0] == '.' && start[1] == '.') {
            if (nseg > 0)
                nseg--;
        } else if (n > 0 && !(n == 1 && start[0] == '.')) {
            if (nseg == TH_SIGV4_MAX_SEGMENTS)
                return TH_E_TOOBIG;
            seg[nseg++] = (struct span){start, n};
        }
        if (*p)
            p++;
    }
    sink_putc(s, '/');
    for (size_t i = 0; i < nseg; i++) {
        sink_encoded(s, seg[i], false);
        /* the last segment gets a '/' only when the raw path ended with one */
        if (i + 1 < nseg || path[strlen(path) - 1] == '/')
            sink_putc(s, '/');
    }
    return TH_E_OK;
}

/* ---- canonical query string ---------------------------------------------------------------- */

struct qpair {
    struct span key, value;
};

static int qpair_cmp(const struct qpair *a, const struct qpair *b)
{
    int c = encoded_cmp(a->key, b->key);
    return c != 0 ? c : encoded_cmp(a->value, b->value);
}

static th_err put_query(struct sink *s, const char *query)
{
    struct qpair pairs[TH_SIGV4_MAX_QUERY];
    size_t n = 0;
    for (const char *p = query; *p;) {
        const char *start = p;
        while (*p && *p != '&')
            p++;
        if (p > start) {
            if (n == TH_SIGV4_MAX_QUERY)
                return TH_E_INVAL;
            const char *eq = memchr(start, '=', (size_t)(p - start));
            const char *key_end = eq ? eq : p;
            pairs[n].key = (struct span){start, (size_t)(key_end - start)};
            pairs[n].value = eq ? (struct span){eq + 1, (size_t)(p - eq - 1)} : (struct span){p, 0};
            n++;
        }
        if (*p)
            p++;
    }
    /* Insertion sort: a handful of pairs at most. */
    for (size_t i = 1; i < n; i++) {
        struct qpair cur = pairs[i];
        size_t j = i;
        for (; j > 0 && qpair_cmp(&pairs[j - 1], &cur) > 0; j--)
            pairs[j] = pairs[j - 1];
        pairs[j] = cur;
    }
    for (size_t i = 0; i < n; i++) {
        if (i > 0)
            sink_putc(s, '&');
        sink_encoded(s, pairs[i].key, true);
        sink_putc(s, '=');
        sink_encoded(s, pairs[i].value, true);
    }
    return TH_E_OK;
}

/* ---- headers ------------------------------------------------------------------------------- */

/* ASCII case-insensitive order, i.e. the order of the lowercased names. */
static int name_cmp(const char *a, const char *b)
{
    for (;; a++, b++) {
        unsigned char ca = (unsigned char)ascii_lower(*a), cb = (unsigned char)ascii_lower(*b);
        if (ca != cb || ca == '\0')
            return ca - cb;
    }
}

/* A header name must be non-empty visible ASCII without ':' (it is written before one). */
static bool name_ok(const char *name)
{
    if (!*name)
        return false;
    for (; *name; name++)
        if ((unsigned char)*name <= 0x20 || (unsigned char)*name >= 0x7f || *name == ':')
            return false;
    return true;
}

/* Trimmed value, inner whitespace runs collapsed to one space. */
static void put_value(struct sink *s, const char *v)
{
    bool started = false, space = false;
    for (; *v; v++) {
        if (is_ws(*v)) {
            space = started;
            continue;
        }
        if (space)
            sink_putc(s, ' ');
        sink_putc(s, *v);
        started = true;
        space = false;
    }
}

/* True when value, trimmed, is exactly want. */
static bool trimmed_equals(const char *value, const char *want)
{
    while (is_ws(*value))
        value++;
    size_t n = strlen(value);
    while (n > 0 && is_ws(value[n - 1]))
        n--;
    return n == strlen(want) && memcmp(value, want, n) == 0;
}

/* ---- Authorization writer ------------------------------------------------------------------ */

struct out {
    char *p;
    size_t cap, len;
    bool overflow;
};

static void out_put(struct out *o, const char *s, size_t n)
{
    if (o->overflow || n >= o->cap - o->len) {
        o->overflow = true;
        return;
    }
    memcpy(o->p + o->len, s, n);
    o->len += n;
    o->p[o->len] = '\0';
}

static void out_puts(struct out *o, const char *s)
{
    out_put(o, s, strlen(s));
}

/* ---- input validation ---------------------------------------------------------------------- */

/* Non-empty visible ASCII, no '/' or ',' (separators of the Credential field), at most max. */
static bool scope_token_ok(const char *s, size_t max)
{
    size_t n = 0;
    for (; s[n]; n++) {
        unsigned char c = (unsigned char)s[n];
        if (c <= 0x20 || c >= 0x7f || c == '/' || c == ',' || n == max)
            return false;
    }
    return n > 0;
}

static bool amz_date_ok(const char *d)
{
    if (strlen(d) != AMZ_DATE_LEN || d[8] != 'T' || d[15] != 'Z')
        return false;
    for (int i = 0; i < 15; i++)
        if (i != 8 && !is_digit(d[i]))
            return false;
    return true;
}

static bool hex_hash_ok(const char *h)
{
    size_t n = 0;
    for (; h[n]; n++)
        if (!is_digit(h[n]) && !(h[n] >= 'a' && h[n] <= 'f'))
            return false;
    return n == SHA256_HEX_LEN;
}

static bool method_ok(const char *m)
{
    if (!*m)
        return false;
    for (; *m; m++)
        if ((unsigned char)*m <= 0x20 || (unsigned char)*m >= 0x7f)
            return false;
    return true;
}

static th_err validate(const struct th_sigv4_input *in)
{
    if (!in->method || !in->path || !in->query || !in->amz_date || !in->region || !in->service ||
        !in->access_key_id || !in->signing_key || !in->headers)
        return TH_E_INVAL;
    if (!in->body && in->body_len > 0)
        return TH_E_INVAL;
    if (in->nheaders == 0 || in->nheaders > TH_SIGV4_MAX_HEADERS)
        return TH_E_INVAL;
    if (!method_ok(in->method) || (in->path[0] && in->path[0] != '/') ||
        !amz_date_ok(in->amz_date) || !scope_token_ok(in->region, TH_SIGV4_MAX_SCOPE_PART) ||
        !scope_token_ok(in->service, TH_SIGV4_MAX_SCOPE_PART) ||
        !scope_token_ok(in->access_key_id, (size_t)-1))
        return TH_E_INVAL;
    if (in->payload_hash && !hex_hash_ok(in->payload_hash))
        return TH_E_INVAL;
    /* Exactly one Host and one X-Amz-Date, the latter equal to the date being signed. */
    int hosts = 0, dates = 0;
    for (size_t i = 0; i < in->nheaders; i++) {
        const struct th_sigv4_header *h = &in->headers[i];
        if (!h->name || !h->value || !name_ok(h->name))
            return TH_E_INVAL;
        if (name_cmp(h->name, "host") == 0)
            hosts++;
        if (name_cmp(h->name, "x-amz-date") == 0) {
            if (!trimmed_equals(h->value, in->amz_date))
                return TH_E_INVAL;
            dates++;
        }
    }
    return hosts == 1 && dates == 1 ? TH_E_OK : TH_E_INVAL;
}

/* ---- signing ------------------------------------------------------------------------------- */

/* Writes the canonical request (hashed into creq_hash_hex, copied to creq when non-NULL). */
static th_err canonical_request(const struct th_sigv4_input *in, const size_t *order,
                                const char *payload_hash, struct th_buf *creq,
                                char creq_hash_hex[SHA256_HEX_LEN + 1])
{
    struct sink s = {.copy = creq, .n = 0};
    th_sha256_init(&s.md);
    th_err err;

    sink_puts(&s, in->method);
    sink_putc(&s, '\n');
    if ((err = put_path(&s, in->path)) != TH_E_OK)
        goto done;
    sink_putc(&s, '\n');
    if ((err = put_query(&s, in->query)) != TH_E_OK)
        goto done;
    sink_putc(&s, '\n');

    /* One "name:value[,value...]\n" line per distinct lowercased name, in sorted order. */
    for (size_t i = 0; i < in->nheaders; i++) {
        const struct th_sigv4_header *h = &in->headers[order[i]];
        bool first = i == 0 || name_cmp(in->headers[order[i - 1]].name, h->name) != 0;
        if (first) {
            if (i > 0)
                sink_putc(&s, '\n');
            for (const char *c = h->name; *c; c++)
                sink_putc(&s, ascii_lower(*c));
            sink_putc(&s, ':');
        } else {
            sink_putc(&s, ',');
        }
        put_value(&s, h->value);
    }
    sink_puts(&s, "\n\n");

    for (size_t i = 0; i < in->nheaders; i++) {
        const struct th_sigv4_header *h = &in->headers[order[i]];
        if (i > 0 && name_cmp(in->headers[order[i - 1]].name, h->name) == 0)
            continue;
        if (i > 0)
            sink_putc(&s, ';');
        for (const char *c = h->name; *c; c++)
            sink_putc(&s, ascii_lower(*c));
    }
    sink_putc(&s, '\n');
    sink_puts(&s, payload_hash);
    sink_flush(&s);

    err = creq ? th_buf_err(creq) : TH_E_OK;
done:;
    unsigned char digest[SHA256_LEN];
    th_sha256_final(&s.md, digest);
    if (err == TH_E_OK)
        hex_lower(digest, SHA256_LEN, creq_hash_hex);
    return err;
}

th_err th_sigv4_sign(const struct th_sigv4_input *in, struct th_buf *creq, struct th_buf *sts,
                     char *authz, size_t authz_len)
{
    if (authz && authz_len > 0)
        authz[0] = '\0';
    if (creq)
        th_buf_reset(creq);
    if (sts)
        th_buf_reset(sts);
    if (!in || !authz)
        return TH_E_INVAL;
    th_err err = validate(in);
    if (err != TH_E_OK)
        return err;

    /* Header order by lowercased name; the insertion sort is stable, so repeated headers keep
       their input order when joined. */
    size_t order[TH_SIGV4_MAX_HEADERS];
    for (size_t i = 0; i < in->nheaders; i++) {
        size_t j = i;
        for (; j > 0 && name_cmp(in->headers[order[j - 1]].name, in->headers[i].name) > 0; j--)
            order[j] = order[j - 1];
        order[j] = i;
    }

    char body_hash[SHA256_HEX_LEN + 1];
    const char *payload_hash = in->payload_hash;
    if (!payload_hash) {
        unsigned char digest[SHA256_LEN];
        th_sha256(in->body_len ? in->body : "", in->body_len, digest);
        hex_lower(digest, SHA256_LEN, body_hash);
        payload_hash = body_hash;
    }

    char creq_hash[SHA256_HEX_LEN + 1];
    if ((err = canonical_request(in, order, payload_hash, creq, creq_hash)) != TH_E_OK)
        return err;

    /* String to sign; the lengths are bounded by validate(), so it always fits. */
    char scope[8 + 1 + TH_SIGV4_MAX_SCOPE_PART + 1 + TH_SIGV4_MAX_SCOPE_PART + 1 +
               sizeof TERMINATOR];
    snprintf(scope, sizeof scope, "%.8s/%s/%s/" TERMINATOR, in->amz_date, in->region, in->service);
    char to_sign[sizeof ALGORITHM + AMZ_DATE_LEN + 1 + sizeof scope + SHA256_HEX_LEN + 1];
    int to_sign_len =
        snprintf(to_sign, sizeof to_sign, ALGORITHM "\n%s\n%s\n%s", in->amz_date, scope, creq_hash);
    if (to_sign_len < 0 || (size_t)to_sign_len >= sizeof to_sign)
        return TH_E_TOOBIG; /* unreachable */
    if (sts && (err = th_buf_append(sts, to_sign, (size_t)to_sign_len)) != TH_E_OK)
        return err;

    unsigned char mac[SHA256_LEN];
    char signature[SHA256_HEX_LEN + 1];
    th_hmac_sha256_once(in->signing_key, TH_SIGV4_KEY_LEN, to_sign, (size_t)to_sign_len, mac);
    hex_lower(mac, SHA256_LEN, signature);

    struct out o = {.p = authz, .cap = authz_len, .len = 0, .overflow = authz_len == 0};
    out_puts(&o, ALGORITHM " Credential=");
    out_puts(&o, in->access_key_id);
    out_puts(&o, "/");
    out_puts(&o, scope);
    out_puts(&o, ", SignedHeaders=");
    for (size_t i = 0; i < in->nheaders; i++) {
        const char *name = in->headers[order[i]].name;
        if (i > 0 && name_cmp(in->headers[order[i - 1]].name, name) == 0)
            continue;
        if (i > 0)
            out_put(&o, ";", 1);
        for (; *name; name++) {
            char c = ascii_lower(*name);
            out_put(&o, &c, 1);
        }
    }
    out_puts(&o, ", Signature=");
    out_puts(&o, signature);
    if (o.overflow) {
        if (authz_len > 0)
            authz[0] = '\0';
        return TH_E_TOOBIG;
    }
    return TH_E_OK;
}

/* ---- X-Amz-Date ---------------------------------------------------------------------------- */

void th_sigv4_amz_date(long long unix_seconds, char out[17])
{
    /* 253402300799 is 9999-12-31T23:59:59Z: beyond it the year needs a fifth digit. */
    if (unix_seconds < 0)
        unix_seconds = 0;
    if (unix_seconds > 253402300799LL)
        unix_seconds = 253402300799LL;
    struct th_utc t; /* not gmtime_r: it takes glibc's time-zone lock */
    th_utc_from_unix(unix_seconds, &t);
    char tmp[64];
    snprintf(tmp, sizeof tmp, "%04d%02d%02dT%02d%02d%02dZ", t.year, t.month, t.day, t.hour, t.min,
             t.sec);
    memcpy(out, tmp, 17);
}
