/*
 * User preferences: the language (and a channel hint) an admin recorded for an Okta user, looked
 * up by userId or login on every request. An immutable sorted array, built at start and on each
 * SIGHUP: the hot path never asks the store.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "message/message.h"

#define USER_MAX 256

struct th_prefs {
    struct th_pref *items; /* sorted by user, case-insensitively */
    size_t n;
};

bool th_pref_user_valid(const char *user)
{
    size_t n = user ? strlen(user) : 0;
    if (n == 0 || n > USER_MAX || user[0] == ' ' || user[n - 1] == ' ')
        return false;
    for (size_t i = 0; i < n; i++)
        if ((unsigned char)user[i] < 0x20 || user[i] == 0x7F)
            return false;
    return true;
}

struct indexed {
    struct th_pref pref;
    size_t index; /* in the specs: a later spec for a user wins */
};

static int cmp_indexed(const void *a, const void *b)
{
    const struct indexed *x = a, *y = b;
    int c = strcasecmp(x->pref.user, y->pref.user);
    if (c)
        return c;
    return x->index < y->index ? -1 : x->index > y->index;
}

void th_prefs_free(struct th_prefs *p)
{
    if (!p)
        return;
    for (size_t i = 0; i < p->n; i++)
        free((char *)p->items[i].user);
    free(p->items);
    free(p);
}

static th_err spec_to_pref(const struct th_pref_spec *s, size_t i, struct th_pref *pr, char *err,
                           size_t errlen)
{
    const char *ch = s->channel ? s->channel : "";
    memset(pr, 0, sizeof *pr);
    if (!th_pref_user_valid(s->user)) {
        snprintf(err, errlen,
                 "preference %zu: invalid user (1-%d characters, no control characters)", i + 1,
                 USER_MAX);
        return TH_E_INVAL;
    }
    if (!s->language || th_locale_normalize(s->language, pr->language) != TH_E_OK) {
        snprintf(err, errlen, "preference for %.64s: invalid language '%.20s'", s->user,
                 s->language ? s->language : "");
        return TH_E_INVAL;
    }
    th_channel c = TH_CHANNEL_SMS;
    if (*ch && th_channel_parse(ch, &c) != TH_E_OK) {
        snprintf(err, errlen, "preference for %.64s: channel must be sms, voice or empty", s->user);
        return TH_E_INVAL;
    }
    snprintf(pr->channel, sizeof pr->channel, "%s", *ch ? th_channel_name(c) : "");
    if (!(pr->user = strdup(s->user))) {
        snprintf(err, errlen, "out of memory");
        return TH_E_NOMEM;
    }
    return TH_E_OK;
}

th_err th_prefs_build(const struct th_pref_spec *specs, size_t n, struct th_prefs **out, char *err,
                      size_t errlen)
{
    struct th_prefs *p = calloc(1, sizeof *p);
    struct indexed *all = n ? calloc(n, sizeof *all) : NULL;
    if (!p || (n && (!all || !(p->items = calloc(n, sizeof *p->items))))) {
        free(all);
        free(p);
        snprintf(err, errlen, "out of memory");
        return TH_E_NOMEM;
    }
    th_err e = TH_E_OK;
    size_t made = 0;
    for (; made < n && e == TH_E_OK; made++) {
        e = spec_to_pref(&specs[made], made, &all[made].pref, err, errlen);
        all[made].index = made;
    }
    if (e != TH_E_OK) {
        for (size_t i = 0; i + 1 < made; i++)
            free((char *)all[i].pref.user);
        free(all);
        th_prefs_free(p);
        return e;
    }
    /* sorted by user then position: of each run of one user, the last is kept */
    if (n > 1) /* no preferences: no array, and qsort must not see NULL */
        qsort(all, n, sizeof *all, cmp_indexed);
    for (size_t i = 0; i < n; i++) {
        if (i + 1 < n && strcasecmp(all[i].pref.user, all[i + 1].pref.user) == 0) {
            free((char *)all[i].pref.user);
            continue;
        }
        p->items[p->n++] = all[i].pref;
    }
    free(all);
    *out = p;
    return TH_E_OK;
}

size_t th_prefs_count(const struct th_prefs *p)
{
    return p ? p->n : 0;
}

static const struct th_pref *find(const struct th_prefs *p, const char *user)
{
    if (!p || !user || !*user)
        return NULL;
    size_t lo = 0, hi = p->n;
    while (lo < hi) {
        size_t mid = lo + (hi - lo) / 2;
        int c = strcasecmp(user, p->items[mid].user);
        if (c == 0)
            return &p->items[mid];
        if (c < 0)
            hi = mid;
        else
            lo = mid + 1;
    }
    return NULL;
}

const struct th_pref *th_prefs_find(const struct th_prefs *p, const char *user_id,
                                    const char *login)
{
    const struct th_pref *r = find(p, user_id);
    return r ? r : find(p, login);
}
