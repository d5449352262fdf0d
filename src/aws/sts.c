#include "aws/sts.h"

#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include <openssl/crypto.h>

#include "common/util.h"

/* ---- endpoint ---- */

/* The regions whose default was the global endpoint until the SDKs moved to regional ones
   (botocore's list; `sts_regional_endpoints = legacy` keeps the old behaviour there). */
static const char *const legacy_global[] = {
    "ap-northeast-1", "ap-south-1",   "ap-southeast-1", "ap-southeast-2",
    "aws-global",     "ca-central-1", "eu-central-1",   "eu-north-1",
    "eu-west-1",      "eu-west-2",    "eu-west-3",      "sa-east-1",
    "us-east-1",      "us-east-2",    "us-west-1",      "us-west-2",
};

th_err th_sts_endpoint(const char *region, bool legacy, char *url, size_t urllen, char *sign_region,
                       size_t sign_region_len)
{
    size_t n = region ? strlen(region) : 0;
    if (n == 0 || n > 63)
        return TH_E_INVAL;
    for (size_t i = 0; i < n; i++) {
        char ch = region[i];
        if (!((ch >= 'a' && ch <= 'z') || (ch >= '0' && ch <= '9') || ch == '-'))
            return TH_E_INVAL;
    }
    bool global = strcmp(region, "aws-global") == 0;
    for (size_t i = 0; legacy && !global && i < sizeof legacy_global / sizeof *legacy_global; i++)
        global = strcmp(region, legacy_global[i]) == 0;
    int w;
    if (global) {
        w = snprintf(url, urllen, "https://sts.amazonaws.com/");
        region = "us-east-1";
    } else {
        bool china = strncmp(region, "cn-", 3) == 0;
        w = snprintf(url, urllen, "https://sts.%s.amazonaws.com%s/", region, china ? ".cn" : "");
    }
    if (w < 0 || (size_t)w >= urllen ||
        th_strlcpy(sign_region, region, sign_region_len) >= sign_region_len)
        return TH_E_TOOBIG;
    return TH_E_OK;
}

/* ---- request bodies ---- */

/* application/x-www-form-urlencoded: everything but the unreserved set is %XX. */
static th_err append_encoded(struct th_buf *b, const char *name, const char *value)
{
    static const char hex[] = "0123456789ABCDEF";
    th_buf_appendc(b, '&');
    th_buf_appends(b, name);
    th_buf_appendc(b, '=');
    for (const unsigned char *p = (const unsigned char *)value; !th_buf_err(b) && *p; p++) {
        if ((*p >= 'A' && *p <= 'Z') || (*p >= 'a' && *p <= 'z') || (*p >= '0' && *p <= '9') ||
            *p == '-' || *p == '_' || *p == '.' || *p == '~') {
            th_buf_appendc(b, (char)*p);
        } else {
            char pct[3] = {'%', hex[*p >> 4], hex[*p & 15]};
            th_buf_append(b, pct, 3);
        }
    }
    return th_buf_err(b);
}

th_err th_sts_assume_role_body(struct th_buf *b, const struct th_sts_role *r)
{
    if (!r->role_arn || !*r->role_arn || !r->session_name || !*r->session_name)
        return TH_E_INVAL;
    th_buf_appends(b, "Action=AssumeRole&Version=" TH_STS_VERSION);
    append_encoded(b, "RoleArn", r->role_arn);
    append_encoded(b, "RoleSessionName", r->session_name);
    if (r->duration_seconds > 0)
        th_buf_printf(b, "&DurationSeconds=%d", r->duration_seconds);
    if (r->external_id && *r->external_id)
        append_encoded(b, "ExternalId", r->external_id);
    return th_buf_err(b);
}

th_err th_sts_web_identity_body(struct th_buf *b, const char *role_arn, const char *session_name,
                                const char *token)
{
    if (!role_arn || !*role_arn || !session_name || !*session_name || !token || !*token)
        return TH_E_INVAL;
    th_buf_appends(b, "Action=AssumeRoleWithWebIdentity&Version=" TH_STS_VERSION);
    append_encoded(b, "RoleArn", role_arn);
    append_encoded(b, "RoleSessionName", session_name);
    append_encoded(b, "WebIdentityToken", token);
    return th_buf_err(b);
}

/* ---- XML extraction ---- */

static bool xml_space(char c)
{
    return c == ' ' || c == '\t' || c == '\r' || c == '\n';
}

/*
 * The next "<tag>" or "<tag attr…>" at or after p (exact name, no prefix), or NULL; *content is
 * where its content starts (after the '>'). For a closing tag pass "/tag".
 */
static const char *find_tag(const char *p, const char *end, const char *name, size_t nlen,
                            const char **content)
{
    while (p < end) {
        const char *lt = memchr(p, '<', (size_t)(end - p));
        if (!lt || (size_t)(end - lt) < nlen + 2)
            return NULL;
        const char *after = lt + 1 + nlen;
        if (memcmp(lt + 1, name, nlen) == 0 && (*after == '>' || xml_space(*after))) {
            const char *gt = memchr(after, '>', (size_t)(end - after));
            if (!gt || gt[-1] == '/')
                return NULL; /* unterminated, or an empty element <tag/>: not what we look for */
            *content = gt + 1;
            return lt;
        }
        p = lt + 1;
    }
    return NULL;
}

/*
 * The content of the single <tag>…</tag> in [xml, xml+len): TH_E_NOTFOUND when absent,
 * TH_E_INVAL when the open tag occurs more than once or is not closed exactly once.
 */
static th_err element(const char *xml, size_t len, const char *tag, const char **body, size_t *blen)
{
    char close[72];
    size_t tn = strlen(tag);
    int cn = snprintf(close, sizeof close, "/%s", tag);
    if (tn == 0 || cn < 0 || (size_t)cn >= sizeof close)
        return TH_E_INVAL;
    const char *end = xml + len, *start, *ignored;
    const char *o = find_tag(xml, end, tag, tn, &start);
    if (!o)
        return TH_E_NOTFOUND;
    if (find_tag(start, end, tag, tn, &ignored))
        return TH_E_INVAL;
    const char *after_close;
    const char *c = find_tag(start, end, close, (size_t)cn, &after_close);
    if (!c || find_tag(after_close, end, close, (size_t)cn, &ignored))
        return TH_E_INVAL;
    *body = start;
    *blen = (size_t)(c - start);
    return TH_E_OK;
}

static size_t utf8_put(uint32_t cp, char *out)
{
    if (cp < 0x80) {
        out[0] = (char)cp;
        return 1;
    }
    if (cp < 0x800) {
        out[0] = (char)(0xC0 | (cp >> 6));
        out[1] = (char)(0x80 | (cp & 0x3F));
        return 2;
    }
    if (cp < 0x10000) {
        out[0] = (char)(0xE0 | (cp >> 12));
        out[1] = (char)(0x80 | ((cp >> 6) & 0x3F));
        out[2] = (char)(0x80 | (cp & 0x3F));
        return 3;
    }
    out[0] = (char)(0xF0 | (cp >> 18));
    out[1] = (char)(0x80 | ((cp >> 12) & 0x3F));
    out[2] = (char)(0x80 | ((cp >> 6) & 0x3F));
    out[3] = (char)(0x80 | (cp & 0x3F));
    return 4;
}

/* "&…;" at p (n bytes available): the decoded bytes into out (up to 4), their count in *olen;
   the entity's length, or 0 when it is not one XML defines without a DTD. */
static size_t entity(const char *p, size_t n, char *out, size_t *olen)
{
    static const struct {
        const char *name;
        char c;
    } named[] = {{"&amp;", '&'}, {"&lt;", '<'}, {"&gt;", '>'}, {"&quot;", '"'}, {"&apos;", '\''}};
    for (size_t i = 0; i < sizeof named / sizeof *named; i++) {
        size_t l = strlen(named[i].name);
        if (n >= l && memcmp(p, named[i].name, l) == 0) {
            out[0] = named[i].c;
            *olen = 1;
            return l;
        }
    }
    if (n < 4 || p[1] != '#')
        return 0;
    bool hexa = p[2] == 'x';
    size_t i = hexa ? 3 : 2, digits = 0;
    uint32_t cp = 0;
    for (; i < n && p[i] != ';'; i++, digits++) {
        char ch = p[i];
        int d = ch >= '0' && ch <= '9'           ? ch - '0'
                : hexa && ch >= 'a' && ch <= 'f' ? ch - 'a' + 10
                : hexa && ch >= 'A' && ch <= 'F' ? ch - 'A' + 10
                                                 : -1;
        if (d < 0 || digits >= 8)
            return 0;
        cp = cp * (hexa ? 16u : 10u) + (uint32_t)d;
    }
    if (i >= n || digits == 0 || cp == 0 || cp > 0x10FFFF || (cp >= 0xD800 && cp <= 0xDFFF))
        return 0;
    *olen = utf8_put(cp, out);
    return i + 1;
}

th_err th_sts_xml_text(const char *xml, size_t len, const char *tag, char *out, size_t outlen)
{
    const char *p;
    size_t n;
    th_err e = element(xml, len, tag, &p, &n);
    if (e != TH_E_OK)
        return e;
    while (n && xml_space(*p)) {
        p++;
        n--;
    }
    while (n && xml_space(p[n - 1]))
        n--;
    if (memchr(p, '<', n))
        return TH_E_INVAL; /* markup, CDATA or a child element: not a text-only element */
    size_t o = 0;
    for (size_t i = 0; i < n;) {
        char dec[4];
        size_t dl = 1, used = 1;
        if (p[i] == '&') {
            used = entity(p + i, n - i, dec, &dl);
            if (used == 0)
                return TH_E_INVAL;
        } else {
            dec[0] = p[i];
        }
        if (o + dl >= outlen)
            return TH_E_TOOBIG;
        memcpy(out + o, dec, dl);
        o += dl;
        i += used;
    }
    if (outlen == 0)
        return TH_E_TOOBIG;
    out[o] = '\0';
    if (strlen(out) != o)
        return TH_E_INVAL; /* a NUL inside */
    return TH_E_OK;
}

/* DOCTYPE (entity definitions), comments and CDATA: never in an STS answer, refused outright. */
static bool plain_document(const char *xml, size_t len)
{
    return len > 0 && !memmem(xml, len, "<!", 2);
}

/* A credential value travels in an HTTP header or feeds the signer: visible ASCII only. */
static bool header_safe(const char *s)
{
    for (; *s; s++)
        if ((unsigned char)*s <= 0x20 || (unsigned char)*s >= 0x7f)
            return false;
    return true;
}

th_err th_sts_parse_credentials(const char *xml, size_t len, struct th_aws_credentials *out,
                                char *why, size_t whylen)
{
    static const char *const names[] = {"AccessKeyId", "SecretAccessKey", "SessionToken"};
    if (!xml || !plain_document(xml, len) || len > TH_STS_MAX_ANSWER) {
        snprintf(why, whylen, "the answer is empty, too large, or holds a DOCTYPE/comment/CDATA");
        return TH_E_INVAL;
    }
    const char *cred;
    size_t clen;
    th_err e = element(xml, len, "Credentials", &cred, &clen);
    if (e != TH_E_OK) {
        snprintf(why, whylen, "the answer has %s <Credentials> element",
                 e == TH_E_NOTFOUND ? "no" : "a repeated or unclosed");
        return TH_E_INVAL;
    }
    struct th_aws_credentials v = {0};
    char *const dst[] = {v.access_key_id, v.secret_access_key, v.session_token};
    const size_t cap[] = {sizeof v.access_key_id, sizeof v.secret_access_key,
                          sizeof v.session_token};
    char exp[64];
    for (size_t i = 0; i < 3; i++) {
        e = th_sts_xml_text(cred, clen, names[i], dst[i], cap[i]);
        if (e == TH_E_OK && (!dst[i][0] || !header_safe(dst[i])))
            e = TH_E_INVAL;
        if (e != TH_E_OK) {
            snprintf(why, whylen, "<Credentials><%s> is %s", names[i],
                     e == TH_E_NOTFOUND ? "missing"
                     : e == TH_E_TOOBIG ? "too long"
                                        : "malformed");
            OPENSSL_cleanse(&v, sizeof v);
            return TH_E_INVAL;
        }
    }
    e = th_sts_xml_text(cred, clen, "Expiration", exp, sizeof exp);
    if (e != TH_E_OK || th_parse_iso8601(exp, &v.expires_ms) != TH_E_OK || v.expires_ms <= 0) {
        snprintf(why, whylen, "<Credentials><Expiration> is %s",
                 e == TH_E_NOTFOUND ? "missing" : "not an ISO 8601 time");
        OPENSSL_cleanse(&v, sizeof v);
        return TH_E_INVAL;
    }
    *out = v;
    OPENSSL_cleanse(&v, sizeof v);
    return TH_E_OK;
}

/* Printable ASCII only (anything else becomes '?'), so a message is safe in a log line. */
static void printable(char *s)
{
    for (; *s; s++)
        if ((unsigned char)*s < 0x20 || (unsigned char)*s >= 0x7f)
            *s = '?';
}

bool th_sts_parse_error(const char *xml, size_t len, char *code, size_t codelen, char *msg,
                        size_t msglen)
{
    const char *err, *doc;
    size_t elen, dlen;
    if (codelen)
        code[0] = '\0';
    if (msglen)
        msg[0] = '\0';
    if (!xml || !plain_document(xml, len) || len > TH_STS_MAX_ANSWER ||
        element(xml, len, "ErrorResponse", &doc, &dlen) != TH_E_OK ||
        element(doc, dlen, "Error", &err, &elen) != TH_E_OK)
        return false;
    if (codelen && th_sts_xml_text(err, elen, "Code", code, codelen) != TH_E_OK)
        code[0] = '\0';
    if (msglen) {
        char full[1024];
        if (th_sts_xml_text(err, elen, "Message", full, sizeof full) == TH_E_OK) {
            printable(full);
            th_strlcpy(msg, full, msglen);
        }
    }
    if (codelen)
        printable(code);
    return true;
}
