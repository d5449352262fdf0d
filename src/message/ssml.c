/*
 * SSML as Amazon Polly takes it (AWS End User Messaging sends the body to Polly; Twilio's <Say>
 * with a Polly voice takes the same elements). A small well-formedness check, not an XML parser:
 * elements, attributes, entities and nesting, with the element names Polly documents. It runs on
 * admin text (templates set / check / import, the server's template loader), never on a request.
 * No XML declaration, DTD, processing instruction or CDATA: Twilio gets the document's inside
 * within its own <Say> element, where a declaration is an error, and Polly needs none of them.
 */
#include <ctype.h>
#include <stdio.h>
#include <string.h>

#include "common/util.h"
#include "message/message.h"

#define SSML_DEPTH 32
#define ATTRS_MAX  16 /* attributes of one element (Polly's take at most 3) */

static const char *const polly_tags[] = {
    "speak",
    "break",
    "emphasis",
    "lang",
    "mark",
    "p",
    "phoneme",
    "prosody",
    "s",
    "say-as",
    "sub",
    "w",
    "amazon:auto-breaths",
    "amazon:breath",
    "amazon:domain",
    "amazon:effect",
};

static bool name_start(char c)
{
    return isalpha((unsigned char)c) || c == '_' || c == ':';
}

static bool name_char(char c)
{
    return isalnum((unsigned char)c) || c == '_' || c == ':' || c == '-' || c == '.';
}

static bool is_polly_tag(const char *name, size_t n)
{
    for (size_t i = 0; i < TH_ARRAY_LEN(polly_tags); i++)
        if (strlen(polly_tags[i]) == n && memcmp(polly_tags[i], name, n) == 0)
            return true;
    return false;
}

/* An entity reference at s[0] == '&': its length, or 0 when it is not one XML allows. */
static size_t entity(const char *s, const char *end)
{
    static const char *const named[] = {"&amp;", "&lt;", "&gt;", "&quot;", "&apos;"};
    for (size_t i = 0; i < TH_ARRAY_LEN(named); i++) {
        size_t n = strlen(named[i]);
        if ((size_t)(end - s) >= n && memcmp(s, named[i], n) == 0)
            return n;
    }
    const char *p = s + 1;
    if (p >= end || *p != '#')
        return 0;
    p++;
    bool hex = p < end && *p == 'x';
    if (hex)
        p++;
    const char *digits = p;
    while (p < end && (hex ? isxdigit((unsigned char)*p) : isdigit((unsigned char)*p)) &&
           p - digits < 8)
        p++;
    if (p == digits || p >= end || *p != ';')
        return 0;
    return (size_t)(p + 1 - s);
}

th_err th_ssml_check(const char *ssml, size_t len, char *why, size_t whylen)
{
    const char *s = ssml, *end = ssml + len, *p = s;
    struct {
        const char *name;
        size_t n;
    } stack[SSML_DEPTH];
    int depth = 0;
    bool root_done = false;
#define FAIL(...)                                                                                  \
    do {                                                                                           \
        snprintf(why, whylen, __VA_ARGS__);                                                        \
        return TH_E_TEMPLATE;                                                                      \
    } while (0)
    while (p < end) {
        if (*p == '<') {
            size_t at = (size_t)(p - s);
            if ((size_t)(end - p) >= 4 && memcmp(p, "<!--", 4) == 0) {
                const char *close = NULL;
                for (const char *q = p + 4; q + 3 <= end; q++)
                    if (memcmp(q, "-->", 3) == 0) {
                        close = q;
                        break;
                    }
                if (!close)
                    FAIL("SSML: comment at offset %zu is not closed", at);
                p = close + 3;
                continue;
            }
            if (p + 1 < end && (p[1] == '!' || p[1] == '?'))
                FAIL("SSML: declarations, processing instructions and CDATA are not allowed "
                     "(offset %zu)",
                     at);
            bool closing = p + 1 < end && p[1] == '/';
            const char *name = p + (closing ? 2 : 1), *q = name;
            if (q >= end || !name_start(*q))
                FAIL("SSML: '<' that starts no element at offset %zu (write &lt;)", at);
            while (q < end && name_char(*q))
                q++;
            size_t n = (size_t)(q - name);
            if (closing) {
                while (q < end && isspace((unsigned char)*q))
                    q++;
                if (q >= end || *q != '>')
                    FAIL("SSML: malformed end tag at offset %zu", at);
                if (depth == 0)
                    FAIL("SSML: </%.*s> at offset %zu closes nothing", (int)(n > 32 ? 32 : n), name,
                         at);
                if (stack[depth - 1].n != n || memcmp(stack[depth - 1].name, name, n) != 0)
                    FAIL("SSML: </%.*s> at offset %zu does not close <%.*s>",
                         (int)(n > 32 ? 32 : n), name, at,
                         (int)(stack[depth - 1].n > 32 ? 32 : stack[depth - 1].n),
                         stack[depth - 1].name);
                depth--;
                if (depth == 0)
                    root_done = true;
                p = q + 1;
                continue;
            }
            if (depth == 0 && (root_done || n != 5 || memcmp(name, "speak", 5) != 0))
                FAIL("SSML: the document must be one <speak> element (found <%.*s> at offset %zu)",
                     (int)(n > 32 ? 32 : n), name, at);
            if (!is_polly_tag(name, n))
                FAIL("SSML: <%.*s> at offset %zu is not an element Amazon Polly supports",
                     (int)(n > 32 ? 32 : n), name, at);
            /* attributes: name = "value" | 'value', each once */
            bool self_closing = false;
            const char *attrs[ATTRS_MAX];
            size_t alen[ATTRS_MAX], nattr = 0;
            for (;;) {
                const char *before = q;
                while (q < end && isspace((unsigned char)*q))
                    q++;
                if (q >= end)
                    FAIL("SSML: unterminated <%.*s> at offset %zu", (int)(n > 32 ? 32 : n), name,
                         at);
                if (*q == '>') {
                    q++;
                    break;
                }
                if (*q == '/' && q + 1 < end && q[1] == '>') {
                    self_closing = true;
                    q += 2;
                    break;
                }
                if (q == before || !name_start(*q))
                    FAIL("SSML: malformed attribute in <%.*s> at offset %zu",
                         (int)(n > 32 ? 32 : n), name, at);
                const char *attr = q;
                while (q < end && name_char(*q))
                    q++;
                size_t an = (size_t)(q - attr);
                for (size_t a = 0; a < nattr; a++)
                    if (alen[a] == an && memcmp(attrs[a], attr, an) == 0)
                        FAIL("SSML: <%.*s> at offset %zu has attribute %.*s twice",
                             (int)(n > 32 ? 32 : n), name, at, (int)(an > 32 ? 32 : an), attr);
                if (nattr == ATTRS_MAX)
                    FAIL("SSML: <%.*s> at offset %zu has over %d attributes",
                         (int)(n > 32 ? 32 : n), name, at, ATTRS_MAX);
                attrs[nattr] = attr;
                alen[nattr++] = an;
                while (q < end && isspace((unsigned char)*q))
                    q++;
                if (q >= end || *q != '=')
                    FAIL("SSML: attribute without a value in <%.*s> at offset %zu",
                         (int)(n > 32 ? 32 : n), name, at);
                q++;
                while (q < end && isspace((unsigned char)*q))
                    q++;
                if (q >= end || (*q != '"' && *q != '\''))
                    FAIL("SSML: unquoted attribute value in <%.*s> at offset %zu",
                         (int)(n > 32 ? 32 : n), name, at);
                char quote = *q++;
                while (q < end && *q != quote) {
                    if (*q == '<')
                        FAIL("SSML: '<' in an attribute value at offset %zu", (size_t)(q - s));
                    if (*q == '&') {
                        size_t e = entity(q, end);
                        if (!e)
                            FAIL("SSML: '&' that starts no entity at offset %zu (write &amp;)",
                                 (size_t)(q - s));
                        q += e;
                        continue;
                    }
                    q++;
                }
                if (q >= end)
                    FAIL("SSML: unterminated attribute value in <%.*s> at offset %zu",
                         (int)(n > 32 ? 32 : n), name, at);
                q++;
            }
            if (!self_closing) {
                if (depth == SSML_DEPTH)
                    FAIL("SSML: <%.*s> at offset %zu: elements nested too deep (over %d)",
                         (int)(n > 32 ? 32 : n), name, at, SSML_DEPTH);
                stack[depth].name = name;
                stack[depth].n = n;
                depth++;
            } else if (depth == 0) {
                root_done = true;
            }
            p = q;
            continue;
        }
        if (depth == 0) {
            if (!isspace((unsigned char)*p))
                FAIL("SSML: text outside <speak> at offset %zu", (size_t)(p - s));
            p++;
            continue;
        }
        if (*p == '&') {
            size_t e = entity(p, end);
            if (!e)
                FAIL("SSML: '&' that starts no entity at offset %zu (write &amp;)",
                     (size_t)(p - s));
            p += e;
            continue;
        }
        p++;
    }
    if (depth)
        FAIL("SSML: <%.*s> is not closed", (int)(stack[depth - 1].n > 32 ? 32 : stack[depth - 1].n),
             stack[depth - 1].name);
    if (!root_done)
        FAIL("SSML: no <speak> element");
#undef FAIL
    return TH_E_OK;
}
