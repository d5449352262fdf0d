/*
 * Templates in the format of AWS's guidance for Okta phone MFA: one DynamoDB item per template,
 * as `aws dynamodb scan --table-name T` prints them:
 *
 *   {"Items": [{"id": {"S": "1"}, "messagetype": {"S": "sms"}, "language": {"S": "en"},
 *               "message": {"S": "... @otp"}},
 *              {"id": {"S": "2"}, "messagetype": {"S": "voice call"}, "language": {"S": "en"},
 *               "message": {"S": "<speak>... @otp ... @otp2</speak>"},
 *               "voiceid": {"S": "MATTHEW"}}],
 *    "Count": 2, "ScannedCount": 2}
 *
 * Its Lambda scans for language = the request's locale and messagetype = the lower-cased
 * deliveryChannel ("sms", "voice call"), replaces "@otp" and "@otp2" once each (digit by digit
 * for voice) and passes voiceid as SendVoiceMessage's VoiceId.
 *
 * Also read: a bare array of items, one item, and a batch-write-item request file
 * ({"Table": [{"PutRequest": {"Item": {...}}}]}); attribute values as {"S": "..."} or plain
 * strings. Written: the scan format, ids numbered from 1, voiceid in capitals as AWS spells it.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include <jansson.h>

#include "common/util.h"
#include "message/message.h"

#define ITEMS_MAX 1000

/* An attribute's string: {"S": "..."} or a plain string; NULL when absent or another type. */
static const char *attr(json_t *item, const char *name)
{
    json_t *v = json_object_get(item, name);
    if (json_is_object(v))
        v = json_object_get(v, "S");
    return json_string_value(v);
}

/* The items array of any accepted shape; a lone item is wrapped (ref held in *own). */
static json_t *items_of(json_t *doc, json_t **own)
{
    *own = NULL;
    if (json_is_array(doc))
        return doc;
    if (!json_is_object(doc))
        return NULL;
    json_t *items = json_object_get(doc, "Items");
    if (json_is_array(items))
        return items;
    if (json_object_get(doc, "language") || json_object_get(doc, "message")) {
        *own = json_array();
        json_array_append(*own, doc);
        return *own;
    }
    /* batch-write-item: {"Table": [{"PutRequest": {"Item": ...}}, ...]} with one table */
    if (json_object_size(doc) == 1) {
        json_t *reqs = json_object_iter_value(json_object_iter(doc));
        if (!json_is_array(reqs))
            return NULL;
        *own = json_array();
        size_t i;
        json_t *r;
        json_array_foreach(reqs, i, r)
        {
            json_t *it = json_object_get(json_object_get(r, "PutRequest"), "Item");
            json_array_append(*own, it ? it : json_null());
        }
        return *own;
    }
    return NULL;
}

void th_aws_items_release(struct th_aws_items *items)
{
    for (size_t i = 0; i < items->n; i++)
        free(items->items[i].body);
    free(items->items);
    items->items = NULL;
    items->n = 0;
}

th_err th_aws_items_parse(const char *json, size_t len, struct th_aws_items *out, char *err,
                          size_t errlen)
{
    memset(out, 0, sizeof *out);
    json_error_t jerr;
    json_t *doc = json_loadb(json, len, JSON_REJECT_DUPLICATES, &jerr);
    if (!doc) {
        snprintf(err, errlen, "line %d: %s", jerr.line, jerr.text);
        return TH_E_JSON;
    }
    json_t *own, *items = items_of(doc, &own);
    th_err e = TH_E_OK;
    size_t n = items ? json_array_size(items) : 0;
    if (!items) {
        snprintf(err, errlen,
                 "expected {\"Items\": [...]} as `aws dynamodb scan` prints it, an "
                 "array of items or one item");
        e = TH_E_JSON;
    } else if (n > ITEMS_MAX) {
        snprintf(err, errlen, "%zu items: at most %d", n, ITEMS_MAX);
        e = TH_E_TOOBIG;
    } else if (n && !(out->items = calloc(n, sizeof *out->items))) {
        e = TH_E_NOMEM;
    }
    for (size_t i = 0; e == TH_E_OK && i < n; i++) {
        json_t *it = json_array_get(items, i);
        struct th_aws_item *t = &out->items[i];
        const char *lang = attr(it, "language"), *type = attr(it, "messagetype"),
                   *msg = attr(it, "message"), *voice = attr(it, "voiceid");
        if (!lang || !type || !msg) {
            snprintf(err, errlen, "item %zu: needs language, messagetype and message as strings",
                     i + 1);
            e = TH_E_INVAL;
        } else if (th_locale_normalize(lang, t->language) != TH_E_OK) {
            snprintf(err, errlen, "item %zu: '%.20s' is not a language tag", i + 1, lang);
            e = TH_E_INVAL;
        } else if (strcasecmp(type, "sms") == 0) {
            t->channel = TH_CHANNEL_SMS;
        } else if (strcasecmp(type, "voice call") == 0 || strcasecmp(type, "voice") == 0 ||
                   strcasecmp(type, "call") == 0) {
            t->channel = TH_CHANNEL_VOICE;
        } else {
            snprintf(err, errlen, "item %zu: messagetype '%.20s' is neither sms nor voice call",
                     i + 1, type);
            e = TH_E_INVAL;
        }
        if (e == TH_E_OK && voice && strlen(voice) >= sizeof t->voice_id) {
            snprintf(err, errlen, "item %zu: voiceid too long", i + 1);
            e = TH_E_INVAL;
        }
        if (e != TH_E_OK)
            break;
        /* Polly's spelling ("MATTHEW" → "Matthew"), as `templates set` takes it */
        const struct th_voice *known = th_voice_find(voice);
        const char *name = known ? known->name : NULL;
        snprintf(t->voice_id, sizeof t->voice_id, "%s",
                 t->channel == TH_CHANNEL_VOICE ? (name    ? name
                                                   : voice ? voice
                                                           : "")
                                                : "");
        for (size_t j = 0; j < i; j++) {
            if (out->items[j].channel == t->channel &&
                strcmp(out->items[j].language, t->language) == 0) {
                snprintf(err, errlen,
                         "items %zu and %zu are both %s/%s (AWS's Lambda uses "
                         "whichever its scan returns first)",
                         j + 1, i + 1, t->language, th_channel_name(t->channel));
                e = TH_E_INVAL;
            }
        }
        if (e == TH_E_OK && !(t->body = strdup(msg)))
            e = TH_E_NOMEM;
        if (e == TH_E_OK)
            out->n++;
    }
    json_decref(own);
    json_decref(doc);
    if (e != TH_E_OK) {
        if (e == TH_E_NOMEM)
            snprintf(err, errlen, "out of memory");
        th_aws_items_release(out);
    }
    return e;
}

static json_t *s_attr(const char *v)
{
    return json_pack("{s:s}", "S", v);
}

th_err th_aws_items_format(const struct th_template *const *tpls, size_t n, th_aws_skip_fn skip,
                           void *ud, char **out)
{
    *out = NULL;
    json_t *items = json_array();
    th_err e = items ? TH_E_OK : TH_E_NOMEM;
    size_t id = 0;
    for (size_t i = 0; i < n && e == TH_E_OK; i++) {
        const struct th_template *t = tpls[i];
        struct th_buf body;
        th_buf_init(&body, 1 << 20);
        char why[160];
        if (th_template_aws_body(t, &body, why, sizeof why) != TH_E_OK) {
            if (skip)
                skip(ud, t, why);
            th_buf_release(&body);
            continue;
        }
        char num[24], voice[32];
        snprintf(num, sizeof num, "%zu", ++id);
        bool is_voice = th_template_channel(t) == TH_CHANNEL_VOICE;
        json_t *item = json_object();
        json_object_set_new(item, "id", s_attr(num));
        json_object_set_new(item, "messagetype", s_attr(is_voice ? "voice call" : "sms"));
        json_object_set_new(item, "language", s_attr(th_template_language(t)));
        json_object_set_new(item, "message", s_attr(th_buf_str(&body)));
        if (is_voice && th_template_voice_id(t)[0]) {
            size_t k = 0;
            for (const char *p = th_template_voice_id(t); *p && k < sizeof voice - 1; p++)
                voice[k++] = (char)(*p >= 'a' && *p <= 'z' ? *p - 'a' + 'A' : *p);
            voice[k] = '\0';
            json_object_set_new(item, "voiceid", s_attr(voice));
        }
        th_buf_release(&body);
        if (json_array_append_new(items, item) != 0)
            e = TH_E_NOMEM;
    }
    json_t *doc = e == TH_E_OK ? json_object() : NULL;
    if (!doc) {
        json_decref(items);
        return TH_E_NOMEM;
    }
    json_object_set_new(doc, "Items", items);
    json_object_set_new(doc, "Count", json_integer((json_int_t)id));
    json_object_set_new(doc, "ScannedCount", json_integer((json_int_t)id));
    *out = json_dumps(doc, JSON_INDENT(2) | JSON_PRESERVE_ORDER);
    json_decref(doc);
    return *out ? TH_E_OK : TH_E_NOMEM;
}
