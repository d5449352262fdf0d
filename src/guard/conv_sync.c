/* The conversion blocks' trip to and from the store (guard/conv.h: th_conv_sync_start). */
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "common/util.h"
#include "guard/conv.h"
#include "obs/log.h"
#include "store/store.h"

#define READ_MAX    1000 /* rows a read takes at most */
#define CLEAR_SLACK 5000 /* ms of clears read again: a clear committed during the last read */

struct th_conv_sync {
    struct th_conv *conv;
    char *url;
    int interval_ms;
    pthread_t thread;
    pthread_mutex_t mu;
    pthread_cond_t cv;
    bool stop;
    struct th_store *st;
    bool down; /* the last round failed (logged once per transition) */
};

static th_conv_kind kind_of(const char *k)
{
    return strcmp(k, "prefix") == 0    ? TH_CONV_PREFIX
           : strcmp(k, "country") == 0 ? TH_CONV_COUNTRY
                                       : TH_CONV_PASS;
}

static int on_row(void *ud, const struct th_conv_block_row *row)
{
    struct th_conv_sync *s = ud;
    th_conv_kind k = kind_of(row->kind);
    if (k == TH_CONV_PASS)
        return 0;
    if (row->cleared_ms) {
        if (th_conv_clear(s->conv, k, row->key, row->cleared_ms))
            th_log_msg(TH_LOG_INFO, "conversion_block_cleared",
                       "block %s (%s %s) cleared by an admin: sends to it resume", row->id,
                       row->kind, k == TH_CONV_PREFIX ? row->masked : row->key);
        return 0;
    }
    struct th_conv_block b = {.kind = k,
                              .since_ms = row->since_ms,
                              .until_ms = row->until_ms,
                              .sends = row->sends,
                              .verified = row->verified};
    th_strlcpy(b.id, row->id, sizeof b.id);
    th_strlcpy(b.key, row->key, sizeof b.key);
    th_strlcpy(b.country, row->country, sizeof b.country);
    th_strlcpy(b.masked, row->masked, sizeof b.masked);
    th_conv_adopt(s->conv, &b);
    return 0;
}

static const char *kind_name(th_conv_kind k)
{
    return k == TH_CONV_PREFIX ? "prefix" : "country";
}

/* One round: the blocks made here go out, the store's come in. */
static th_err round_trip(struct th_conv_sync *s, int64_t *last_read_ms)
{
    char err[512];
    if (!s->st && th_store_open(s->url, &s->st, err, sizeof err) != TH_E_OK) {
        if (!s->down)
            th_log_msg(TH_LOG_WARN, "conversion_sync", "%s: blocks stay local until it is back",
                       err);
        return TH_E_STORE;
    }
    struct th_conv_block out[32];
    size_t n;
    th_err e = TH_E_OK;
    while (e == TH_E_OK && (n = th_conv_take_blocks(s->conv, out, TH_ARRAY_LEN(out))) > 0) {
        for (size_t i = 0; i < n && e == TH_E_OK; i++) {
            struct th_conv_block_row row = {.id = out[i].id,
                                            .kind = kind_name(out[i].kind),
                                            .key = out[i].key,
                                            .country = out[i].country,
                                            .masked = out[i].masked,
                                            .since_ms = out[i].since_ms,
                                            .until_ms = out[i].until_ms,
                                            .sends = out[i].sends,
                                            .verified = out[i].verified,
                                            .mode = out[i].mode};
            e = th_store_conv_block_put(s->st, &row);
        }
    }
    int64_t now = th_wall_ms();
    if (e == TH_E_OK) {
        struct th_conv_block_filter f = {
            .now_ms = now, .cleared_after_ms = *last_read_ms - CLEAR_SLACK, .limit = READ_MAX};
        e = th_store_conv_blocks_each(s->st, &f, on_row, s);
    }
    if (e == TH_E_OK) {
        *last_read_ms = now;
        return TH_E_OK;
    }
    /* a block lost here is made again by the counts of its node; its peers learn it later */
    if (!s->down)
        th_log_msg(TH_LOG_WARN, "conversion_sync",
                   "conversion blocks could not be exchanged with %s: retrying",
                   th_store_describe(s->st));
    th_store_close(s->st);
    s->st = NULL;
    return e;
}

static void *run(void *arg)
{
    struct th_conv_sync *s = arg;
    int64_t last_read_ms = th_wall_ms(); /* blocks cleared before the start are not ours */
    pthread_mutex_lock(&s->mu);
    while (!s->stop) {
        pthread_mutex_unlock(&s->mu);
        bool ok = round_trip(s, &last_read_ms) == TH_E_OK;
        if (ok && s->down)
            th_log_msg(TH_LOG_INFO, "conversion_sync", "conversion blocks exchanged again");
        s->down = !ok;
        pthread_mutex_lock(&s->mu);
        struct timespec until;
        clock_gettime(CLOCK_REALTIME, &until);
        until.tv_sec += s->interval_ms / 1000;
        until.tv_nsec += (long)(s->interval_ms % 1000) * 1000000;
        if (until.tv_nsec >= 1000000000) {
            until.tv_sec++;
            until.tv_nsec -= 1000000000;
        }
        while (!s->stop && pthread_cond_timedwait(&s->cv, &s->mu, &until) == 0) {
        }
    }
    pthread_mutex_unlock(&s->mu);
    if (s->st) /* the last blocks made go out before the process does */
        round_trip(s, &last_read_ms);
    th_store_close(s->st);
    return NULL;
}

th_err th_conv_sync_start(struct th_conv *c, const char *url, int interval_ms,
                          struct th_conv_sync **out)
{
    *out = NULL;
    struct th_conv_sync *s = calloc(1, sizeof *s);
    if (!s)
        return TH_E_NOMEM;
    s->conv = c;
    s->interval_ms = interval_ms > 0 ? interval_ms : 2000;
    s->url = strdup(url);
    pthread_mutex_init(&s->mu, NULL);
    pthread_cond_init(&s->cv, NULL);
    if (!s->url || pthread_create(&s->thread, NULL, run, s) != 0) {
        pthread_mutex_destroy(&s->mu);
        pthread_cond_destroy(&s->cv);
        free(s->url);
        free(s);
        return TH_E_NOMEM;
    }
    *out = s;
    return TH_E_OK;
}

void th_conv_sync_stop(struct th_conv_sync *s)
{
    if (!s)
        return;
    pthread_mutex_lock(&s->mu);
    s->stop = true;
    pthread_cond_signal(&s->cv);
    pthread_mutex_unlock(&s->mu);
    pthread_join(s->thread, NULL);
    pthread_mutex_destroy(&s->mu);
    pthread_cond_destroy(&s->cv);
    free(s->url);
    free(s);
}
