#include "route/route.h"

#include <ctype.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "common/util.h"
#include "provider/provider.h"

static bool any_provider(void *ud, const char *name)
{
    (void)ud;
    return th_provider_kind_find(name) != NULL; /* the registered ones (provider/provider.c) */
}

/* Sender identities: E.164 numbers, ids, ARNs, alphanumeric sender ids, Twilio SIDs. */
static bool sender_char(char c)
{
    return isalnum((unsigned char)c) || strchr("_:/+-.@ ", c);
}

th_err th_route_parse(const char *text, bool (*known)(void *ud, const char *name), void *ud,
                      struct th_route *out, char *err, size_t errlen)
{
    if (!known)
        known = any_provider;
    out->n = 0;
    const char *p = text;
    for (;;) {
        while (*p == ' ' || *p == '\t')
            p++;
        const char *end = strchr(p, ',');
        if (!end)
            end = p + strlen(p);
        const char *e = end;
        while (e > p && (e[-1] == ' ' || e[-1] == '\t'))
            e--;
        if (e == p) {
            snprintf(err, errlen, "empty attempt in '%s'", text);
            return TH_E_INVAL;
        }
        if (out->n == TH_ROUTE_MAX_ATTEMPTS) {
            snprintf(err, errlen, "more than %d attempts", TH_ROUTE_MAX_ATTEMPTS);
            return TH_E_INVAL;
        }
        struct th_route_attempt *a = &out->at[out->n];
        const char *colon = memchr(p, ':', (size_t)(e - p));
        size_t nlen = (size_t)((colon ? colon : e) - p);
        if (nlen == 0 || nlen >= sizeof a->provider) {
            snprintf(err, errlen, "bad provider name in '%.*s'", (int)(e - p), p);
            return TH_E_INVAL;
        }
        memcpy(a->provider, p, nlen);
        a->provider[nlen] = '\0';
        for (char *c = a->provider; *c; c++)
            *c = (char)tolower((unsigned char)*c);
        if (!known(ud, a->provider)) {
            snprintf(err, errlen, "unknown or unconfigured provider '%s'", a->provider);
            return TH_E_INVAL;
        }
        a->sender[0] = '\0';
        if (colon) {
            const char *s = colon + 1;
            size_t slen = (size_t)(e - s);
            if (slen == 0 || slen >= sizeof a->sender) {
                snprintf(err, errlen, "sender after '%s:' must be 1 to %d characters", a->provider,
                         TH_ROUTE_SENDER_MAX - 1);
                return TH_E_INVAL;
            }
            for (size_t i = 0; i < slen; i++) {
                if (!sender_char(s[i])) {
                    snprintf(err, errlen, "sender for '%s' has a character not allowed: '%c'",
                             a->provider, s[i]);
                    return TH_E_INVAL;
                }
            }
            memcpy(a->sender, s, slen);
            a->sender[slen] = '\0';
        }
        out->n++;
        if (!*end)
            break;
        p = end + 1;
    }
    return TH_E_OK;
}

void th_route_format(const struct th_route *r, char *out, size_t outlen)
{
    size_t pos = 0;
    out[0] = '\0';
    for (int i = 0; i < r->n && pos < outlen; i++) {
        int w = snprintf(out + pos, outlen - pos, "%s%s%s%s", i ? ", " : "", r->at[i].provider,
                         r->at[i].sender[0] ? ":" : "", r->at[i].sender);
        if (w < 0)
            break;
        pos += (size_t)w;
    }
}

th_err th_route_key(const char *channel, const char *country, char ch_out[8], char cc_out[4],
                    char *err, size_t errlen)
{
    if (strcasecmp(channel, "sms") == 0)
        strcpy(ch_out, "sms");
    else if (strcasecmp(channel, "voice") == 0)
        strcpy(ch_out, "voice");
    else if (strcmp(channel, "*") == 0)
        strcpy(ch_out, "*");
    else {
        snprintf(err, errlen, "channel must be sms, voice or * (got '%.20s')", channel);
        return TH_E_INVAL;
    }
    if (strcmp(country, "*") == 0) {
        strcpy(cc_out, "*");
    } else if (strlen(country) == 2 && isalpha((unsigned char)country[0]) &&
               isalpha((unsigned char)country[1])) {
        cc_out[0] = (char)toupper((unsigned char)country[0]);
        cc_out[1] = (char)toupper((unsigned char)country[1]);
        cc_out[2] = '\0';
    } else {
        snprintf(err, errlen, "country must be an ISO 3166 alpha-2 code or * (got '%.20s')",
                 country);
        return TH_E_INVAL;
    }
    return TH_E_OK;
}

struct th_routes {
    struct th_route *r;
    size_t n, cap;
};

th_err th_routes_new(struct th_routes **out)
{
    *out = calloc(1, sizeof **out);
    return *out ? TH_E_OK : TH_E_NOMEM;
}

void th_routes_free(struct th_routes *rs)
{
    if (!rs)
        return;
    free(rs->r);
    free(rs);
}

th_err th_routes_add(struct th_routes *rs, const struct th_route *r)
{
    for (size_t i = 0; i < rs->n; i++) {
        if (strcmp(rs->r[i].channel, r->channel) == 0 &&
            strcmp(rs->r[i].country, r->country) == 0) {
            rs->r[i] = *r;
            return TH_E_OK;
        }
    }
    if (rs->n == rs->cap) {
        size_t ncap = rs->cap ? rs->cap * 2 : 16;
        struct th_route *p = realloc(rs->r, ncap * sizeof *p);
        if (!p)
            return TH_E_NOMEM;
        rs->r = p;
        rs->cap = ncap;
    }
    rs->r[rs->n++] = *r;
    return TH_E_OK;
}

size_t th_routes_count(const struct th_routes *rs)
{
    return rs->n;
}

const struct th_route *th_routes_find_index(const struct th_routes *rs, size_t i)
{
    return i < rs->n ? &rs->r[i] : NULL;
}

static const struct th_route *lookup(const struct th_routes *rs, const char *ch, const char *cc)
{
    /* A handful to a few hundred routes: a scan beats a hash table's set-up. */
    for (size_t i = 0; i < rs->n; i++)
        if (strcmp(rs->r[i].channel, ch) == 0 && strcmp(rs->r[i].country, cc) == 0)
            return &rs->r[i];
    return NULL;
}

const struct th_route *th_routes_find(const struct th_routes *rs, th_channel ch,
                                      const char *country)
{
    const char *c = th_channel_name(ch);
    const char *cc = country && country[0] ? country : "*";
    const struct th_route *r;
    if ((r = lookup(rs, c, cc)) || (r = lookup(rs, c, "*")) || (r = lookup(rs, "*", cc)) ||
        (r = lookup(rs, "*", "*")))
        return r;
    return NULL;
}
