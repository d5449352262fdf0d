#include "okta/events.h"

#include <ctype.h>
#include <stdbool.h>
#include <stdio.h>
#include <string.h>
#include <strings.h>
#include <time.h>

#include <jansson.h>

static const char *str_at(json_t *o, const char *key)
{
    json_t *v = json_is_object(o) ? json_object_get(o, key) : NULL;
    return json_is_string(v) ? json_string_value(v) : NULL;
}

/* Copies an id made of [A-Za-z0-9._-] only (Okta's uuids and "00u..." ids); false otherwise. */
static bool copy_id(char out[TH_OKTA_ID_MAX], const char *s)
{
    size_t n = s ? strlen(s) : 0;
    if (n == 0 || n >= TH_OKTA_ID_MAX)
        return false;
    for (size_t i = 0; i < n; i++)
        if (!isalnum((unsigned char)s[i]) && s[i] != '-' && s[i] != '_' && s[i] != '.')
            return false;
    memcpy(out, s, n + 1);
    return true;
}

static int digits(const char *s, int n)
{
    int v = 0;
    for (int i = 0; i < n; i++) {
        if (!isdigit((unsigned char)s[i]))
            return -1;
        v = v * 10 + (s[i] - '0');
    }
    return v;
}

int64_t th_okta_time_ms(const char *s)
{
    if (!s || strlen(s) < 20 || s[4] != '-' || s[7] != '-' || (s[10] != 'T' && s[10] != 't') ||
        s[13] != ':' || s[16] != ':')
        return -1;
    int y = digits(s, 4), mo = digits(s + 5, 2), d = digits(s + 8, 2), h = digits(s + 11, 2),
        mi = digits(s + 14, 2), se = digits(s + 17, 2);
    if (y < 1970 || mo < 1 || mo > 12 || d < 1 || d > 31 || h < 0 || h > 23 || mi < 0 || mi > 59 ||
        se < 0 || se > 60)
        return -1;
    const char *p = s + 19;
    int ms = 0;
    if (*p == '.') {
        int k = 0;
        for (p++; isdigit((unsigned char)*p); p++, k++)
            if (k < 3)
                ms = ms * 10 + (*p - '0');
        if (k == 0 || k > 9)
            return -1;
        for (; k < 3; k++)
            ms *= 10;
    }
    int off = 0;
    if (*p == 'Z' || *p == 'z') {
        p++;
    } else if ((*p == '+' || *p == '-') && strlen(p) == 6 && p[3] == ':') {
        int oh = digits(p + 1, 2), om = digits(p + 4, 2);
        if (oh < 0 || oh > 23 || om < 0 || om > 59)
            return -1;
        off = (*p == '+' ? 1 : -1) * (oh * 60 + om);
        p += 6;
    } else {
        return -1;
    }
    if (*p)
        return -1;
    struct tm tm = {.tm_year = y - 1900,
                    .tm_mon = mo - 1,
                    .tm_mday = d,
                    .tm_hour = h,
                    .tm_min = mi,
                    .tm_sec = se};
    time_t t = timegm(&tm);
    if (t == (time_t)-1)
        return -1;
    return ((int64_t)t - (int64_t)off * 60) * 1000 + ms;
}

/* The channel a factor name means: "sms" | "voice", NULL for any other factor. */
static const char *factor_channel(const char *f)
{
    if (!f)
        return NULL;
    if (strcasecmp(f, "sms") == 0 || strcasecmp(f, "sms_factor") == 0 ||
        strcasecmp(f, "SMS Authentication") == 0)
        return "sms";
    if (strcasecmp(f, "call") == 0 || strcasecmp(f, "call_factor") == 0 ||
        strcasecmp(f, "voice") == 0 || strcasecmp(f, "voice call") == 0 ||
        strcasecmp(f, "Voice Call Authentication") == 0)
        return "voice";
    return NULL;
}

/* The phone factor an event names; *named: whether it names a factor at all. */
static const char *event_channel(json_t *ev, bool *named)
{
    json_t *dd = json_object_get(json_object_get(ev, "debugContext"), "debugData");
    const char *f = str_at(dd, "factor");
    if (!f)
        f = str_at(dd, "factorType");
    json_t *targets = json_object_get(ev, "target");
    for (size_t i = 0; !f && json_is_array(targets) && i < json_array_size(targets) && i < 16; i++)
        f = str_at(json_object_get(json_array_get(targets, i), "detailEntry"), "methodTypeUsed");
    *named = f != NULL;
    return factor_channel(f);
}

static void parse_one(json_t *ev, struct th_okta_event *out)
{
    memset(out, 0, sizeof *out);
    out->type = TH_OKTA_EV_OTHER;
    out->use = TH_OKTA_EV_INVALID;
    const char *type = str_at(ev, "eventType");
    if (!type || !copy_id(out->uuid, str_at(ev, "uuid")))
        return;
    if (strcmp(type, "user.authentication.auth_via_mfa") == 0)
        out->type = TH_OKTA_EV_MFA;
    else if (strcmp(type, "user.mfa.factor.activate") == 0)
        out->type = TH_OKTA_EV_ENROLL;
    if (out->type == TH_OKTA_EV_OTHER) {
        out->use = TH_OKTA_EV_IGNORED;
        return;
    }
    out->published_ms = th_okta_time_ms(str_at(ev, "published"));
    if (out->published_ms < 0 || !copy_id(out->user_id, str_at(json_object_get(ev, "actor"), "id")))
        return;
    const char *result = str_at(json_object_get(ev, "outcome"), "result");
    if (!result)
        return;
    bool named = false;
    out->channel = event_channel(ev, &named);
    out->use = strcmp(result, "SUCCESS") == 0 && out->channel ? TH_OKTA_EV_USE : TH_OKTA_EV_IGNORED;
}

th_err th_okta_events_parse(const char *body, size_t len, struct th_okta_event *out, size_t max,
                            size_t *n, const char **why)
{
    *n = 0;
    *why = NULL;
    if (max > TH_OKTA_EVENTS_MAX)
        max = TH_OKTA_EVENTS_MAX;
    json_error_t jerr;
    /* jansson bounds the nesting itself (JSON_PARSER_MAX_DEPTH); the body is bounded by the
     * route's max_body */
    json_t *root = json_loadb(body, len, JSON_REJECT_DUPLICATES, &jerr);
    if (!root) {
        *why = "body is not JSON";
        return TH_E_INVAL;
    }
    json_t *events = json_object_get(json_object_get(root, "data"), "events");
    th_err e = TH_E_OK;
    if (!json_is_array(events)) {
        *why = "no data.events array";
        e = TH_E_INVAL;
    } else if (json_array_size(events) > max) {
        *why = "too many events in one delivery";
        e = TH_E_INVAL;
    } else {
        for (size_t i = 0; i < json_array_size(events); i++)
            parse_one(json_array_get(events, i), &out[(*n)++]);
    }
    json_decref(root);
    return e;
}
