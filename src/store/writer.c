#include "store/writer.h"

#include <pthread.h>
#include <stdatomic.h>
#include <stddef.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "common/util.h"
#include "obs/log.h"

#define BATCH_MAX 512
#define LINGER_MS 4 /* group commit: how long a lone delivery record waits for company */

enum kind { ITEM_OUTBOX, ITEM_DELIVERY, ITEM_DLQ };

/* One queued write: the row and copies of all its strings, in one allocation. */
struct item {
    struct item *next;
    enum kind kind;
    union {
        struct th_outbox_row outbox;
        struct th_delivery_row delivery;
        struct th_dlq_row dlq;
    } row;
    th_writer_done_fn done;
    void *ud;
    bool on_loop;               /* completes through reply (th_writer_*_on) */
    struct th_loop_reply reply; /* ...with its result, carried by call */
    struct th_loop_call call;
    th_err result;
    char strings[];
};

struct th_writer {
    struct th_store *st;
    pthread_t thread;
    pthread_mutex_t mu;
    pthread_cond_t cv;
    struct item *head, *tail;
    size_t queued, max_queue;
    bool stopping;
    bool lingering; /* waiting out LINGER_MS for more delivery rows: do not wake it for one */
    unsigned long long written, failed, rejected_full;
    int retention_days[3]; /* dlq, deliveries, outbox; 0 = keep */
    int64_t next_purge_ms;
    /*
     * The DLQ depth: counted by this thread (it owns the connection) at start, after a purge,
     * and when th_writer_stats asks and the last count is older than dlq_refresh_ms, since
     * `telehook dlq replay/purge` delete rows from another process. Our own committed entries
     * are added at once. Read without the lock.
     */
    atomic_llong dlq_depth;
    bool dlq_count_wanted;
    int64_t dlq_counted_ms, dlq_refresh_ms;
};

/* Copies s into the item's string area at *pos; returns the copy. */
static const char *put(char *area, size_t *pos, const char *s)
{
    s = s ? s : "";
    size_t n = strlen(s) + 1;
    memcpy(area + *pos, s, n);
    *pos += n;
    return area + *pos - n;
}

static size_t len0(const char *s)
{
    return (s ? strlen(s) : 0) + 1;
}

static th_err enqueue(struct th_writer *w, struct item *it)
{
    pthread_mutex_lock(&w->mu);
    th_err e = TH_E_OK;
    if (w->stopping) {
        e = TH_E_BUSY;
    } else if (w->queued >= w->max_queue) {
        w->rejected_full++;
        e = TH_E_OVERLOAD;
    } else {
        it->next = NULL;
        if (w->tail)
            w->tail->next = it;
        else
            w->head = it;
        w->tail = it;
        w->queued++;
        /* A lingering writer wakes at its deadline anyway: a delivery row need not wake it
         * early (one futex call less per request under load), a full batch or a row somebody
         * waits for does. */
        if (!w->lingering || it->kind != ITEM_DELIVERY || w->queued >= BATCH_MAX)
            pthread_cond_signal(&w->cv);
    }
    pthread_mutex_unlock(&w->mu);
    if (e != TH_E_OK)
        free(it);
    return e;
}

/*
 * The string fields of each row, by offset: one list per row serves both the sizing and the copy
 * (a field added to a row is added here once).
 */
#define F(row, f) offsetof(struct row, f)
static const size_t outbox_strings[] = {
    F(th_outbox_row, id),       F(th_outbox_row, request_id), F(th_outbox_row, to),
    F(th_outbox_row, channel),  F(th_outbox_row, language),   F(th_outbox_row, body),
    F(th_outbox_row, voice_id),
};
static const size_t delivery_strings[] = {
    F(th_delivery_row, request_id),     F(th_delivery_row, event_id),
    F(th_delivery_row, request_type),   F(th_delivery_row, phone_masked),
    F(th_delivery_row, country),        F(th_delivery_row, channel),
    F(th_delivery_row, language),       F(th_delivery_row, source),
    F(th_delivery_row, provider),       F(th_delivery_row, outcome),
    F(th_delivery_row, transaction_id), F(th_delivery_row, error),
    F(th_delivery_row, user_id),        F(th_delivery_row, login_hash),
    F(th_delivery_row, phone_hash),     F(th_delivery_row, locale),
    F(th_delivery_row, preference),
};
static const size_t dlq_strings[] = {
    F(th_dlq_row, id),           F(th_dlq_row, request_id), F(th_dlq_row, event_id),
    F(th_dlq_row, phone_masked), F(th_dlq_row, country),    F(th_dlq_row, channel),
    F(th_dlq_row, language),     F(th_dlq_row, outcome),    F(th_dlq_row, errors),
    F(th_dlq_row, key_id),
};
#undef F

static const char *field(const void *row, size_t off)
{
    const char *s;
    memcpy(&s, (const char *)row + off, sizeof s);
    return s;
}

/*
 * One item holding a copy of row (size bytes) and of its string fields (NULL becomes ""), with
 * extra bytes after them at it->strings + *used. NULL: out of memory.
 */
static struct item *item_new(enum kind kind, const void *row, size_t size, const size_t *strings,
                             size_t nstrings, size_t extra, size_t *used)
{
    size_t n = extra;
    for (size_t i = 0; i < nstrings; i++)
        n += len0(field(row, strings[i]));
    struct item *it = malloc(sizeof *it + n);
    if (!it)
        return NULL;
    it->kind = kind;
    it->done = NULL;
    it->ud = NULL;
    it->on_loop = false;
    memcpy(&it->row, row, size); /* the numbers; every string pointer is replaced below */
    size_t pos = 0;
    for (size_t i = 0; i < nstrings; i++) {
        const char *copy = put(it->strings, &pos, field(row, strings[i]));
        memcpy((char *)&it->row + strings[i], &copy, sizeof copy);
    }
    *used = pos;
    return it;
}

static struct item *outbox_item(const struct th_outbox_row *row)
{
    size_t pos;
    return item_new(ITEM_OUTBOX, row, sizeof *row, outbox_strings, TH_ARRAY_LEN(outbox_strings), 0,
                    &pos);
}

th_err th_writer_outbox(struct th_writer *w, const struct th_outbox_row *row,
                        th_writer_done_fn done, void *ud)
{
    struct item *it = outbox_item(row);
    if (!it)
        return TH_E_NOMEM;
    it->done = done;
    it->ud = ud;
    return enqueue(w, it);
}

th_err th_writer_outbox_on(struct th_writer *w, const struct th_outbox_row *row,
                           const struct th_loop_reply *reply)
{
    struct item *it = outbox_item(row);
    if (!it)
        return TH_E_NOMEM;
    it->on_loop = true;
    it->reply = *reply;
    return enqueue(w, it);
}

th_err th_writer_delivery(struct th_writer *w, const struct th_delivery_row *row)
{
    size_t pos;
    struct item *it = item_new(ITEM_DELIVERY, row, sizeof *row, delivery_strings,
                               TH_ARRAY_LEN(delivery_strings), 0, &pos);
    return it ? enqueue(w, it) : TH_E_NOMEM;
}

static struct item *dlq_item(const struct th_dlq_row *row)
{
    size_t pos;
    struct item *it = item_new(ITEM_DLQ, row, sizeof *row, dlq_strings, TH_ARRAY_LEN(dlq_strings),
                               row->payload_len, &pos);
    if (!it)
        return NULL;
    it->row.dlq.payload = NULL;
    if (row->payload_len) {
        memcpy(it->strings + pos, row->payload, row->payload_len);
        it->row.dlq.payload = it->strings + pos;
    }
    return it;
}

th_err th_writer_dlq(struct th_writer *w, const struct th_dlq_row *row, th_writer_done_fn done,
                     void *ud)
{
    struct item *it = dlq_item(row);
    if (!it)
        return TH_E_NOMEM;
    it->done = done;
    it->ud = ud;
    return enqueue(w, it);
}

th_err th_writer_dlq_on(struct th_writer *w, const struct th_dlq_row *row,
                        const struct th_loop_reply *reply)
{
    struct item *it = dlq_item(row);
    if (!it)
        return TH_E_NOMEM;
    it->on_loop = true;
    it->reply = *reply;
    return enqueue(w, it);
}

void th_writer_set_retention(struct th_writer *w, int dlq_days, int deliveries_days,
                             int outbox_days)
{
    pthread_mutex_lock(&w->mu);
    w->retention_days[0] = dlq_days;
    w->retention_days[1] = deliveries_days;
    w->retention_days[2] = outbox_days;
    w->next_purge_ms = 0; /* purge soon */
    pthread_cond_signal(&w->cv);
    pthread_mutex_unlock(&w->mu);
}

/* Deletes what is past its retention; on the writer thread, between batches. */
static void purge(struct th_writer *w, const int days[3])
{
    int64_t now = th_wall_ms();
    struct th_purge p = {
        .dlq_before_ms = days[0] > 0 ? now - (int64_t)days[0] * 86400000 : 0,
        .deliveries_before_ms = days[1] > 0 ? now - (int64_t)days[1] * 86400000 : 0,
        .outbox_before_ms = days[2] > 0 ? now - (int64_t)days[2] * 86400000 : 0,
    };
    long removed = 0;
    if (th_store_purge(w->st, &p, &removed) != TH_E_OK)
        th_log_msg(TH_LOG_WARN, "retention", "purge failed; retried in an hour");
    else if (removed)
        th_log_msg(TH_LOG_INFO, "retention", "%ld rows past their retention deleted", removed);
}

/* Counts the DLQ's rows; on the writer thread, without the lock. A failure keeps the last. */
static void count_dlq(struct th_writer *w)
{
    long n = 0;
    if (th_store_dlq_count(w->st, &n) == TH_E_OK)
        atomic_store(&w->dlq_depth, n);
}

/* On the item's loop: its result, then the item goes. */
static void item_complete(void *arg)
{
    struct item *it = arg;
    it->reply.done(it->reply.ud, it->result);
    free(it);
}

/* On the writer thread: the item's loop has finished; its owner frees what waited. */
static void item_lost(void *arg)
{
    struct item *it = arg;
    if (it->reply.lost)
        it->reply.lost(it->reply.ud);
    free(it);
}

/* Writes one batch in one transaction, then reports each item's result (after commit). */
static void write_batch(struct th_writer *w, struct item *batch)
{
    th_err results[BATCH_MAX];
    size_t n = 0, ok = 0, dlq_ok = 0;
    bool in_tx = th_store_begin(w->st) == TH_E_OK;
    for (struct item *it = batch; it; it = it->next, n++) {
        th_err e = TH_E_STORE;
        if (in_tx)
            e = it->kind == ITEM_OUTBOX     ? th_store_outbox_insert(w->st, &it->row.outbox)
                : it->kind == ITEM_DELIVERY ? th_store_delivery_insert(w->st, &it->row.delivery)
                                            : th_store_dlq_insert(w->st, &it->row.dlq);
        /* a failed insert (a duplicate key) does not abort SQLite's transaction: go on */
        results[n] = e;
    }
    if (in_tx && th_store_commit(w->st) != TH_E_OK) {
        th_store_rollback(w->st);
        for (size_t i = 0; i < n; i++)
            results[i] = TH_E_STORE;
    }
    n = 0;
    for (struct item *it = batch, *next; it; it = next, n++) {
        next = it->next;
        ok += results[n] == TH_E_OK;
        dlq_ok += results[n] == TH_E_OK && it->kind == ITEM_DLQ;
        if (it->on_loop) { /* the loop frees it (or item_lost, here) */
            it->result = results[n];
            th_loop_call_init(&it->call, it->reply.loop, item_complete, item_lost, it);
            th_loop_call_post(&it->call);
            continue;
        }
        if (it->done)
            it->done(it->ud, results[n]);
        free(it);
    }
    if (dlq_ok)
        atomic_fetch_add(&w->dlq_depth, (long long)dlq_ok);
    pthread_mutex_lock(&w->mu);
    w->written += ok;
    w->failed += n - ok;
    pthread_mutex_unlock(&w->mu);
}

static void *writer_main(void *arg)
{
    struct th_writer *w = arg;
    count_dlq(w);
    pthread_mutex_lock(&w->mu);
    w->dlq_counted_ms = th_wall_ms();
    for (;;) {
        if (w->dlq_count_wanted && !w->stopping) { /* between batches: the queue waits a count */
            w->dlq_count_wanted = false;
            pthread_mutex_unlock(&w->mu);
            count_dlq(w);
            pthread_mutex_lock(&w->mu);
            w->dlq_counted_ms = th_wall_ms();
            continue;
        }
        while (!w->head && !w->stopping && !w->dlq_count_wanted) {
            bool keep = w->retention_days[0] || w->retention_days[1] || w->retention_days[2];
            if (keep && th_wall_ms() >= w->next_purge_ms) {
                int days[3] = {w->retention_days[0], w->retention_days[1], w->retention_days[2]};
                w->next_purge_ms = th_wall_ms() + 3600 * 1000; /* hourly */
                pthread_mutex_unlock(&w->mu);
                purge(w, days);
                count_dlq(w);
                pthread_mutex_lock(&w->mu);
                w->dlq_counted_ms = th_wall_ms();
                continue;
            }
            if (!keep) {
                pthread_cond_wait(&w->cv, &w->mu);
            } else {
                struct timespec ts = {.tv_sec = (time_t)(w->next_purge_ms / 1000),
                                      .tv_nsec = (long)(w->next_purge_ms % 1000) * 1000000L};
                pthread_cond_timedwait(&w->cv, &w->mu, &ts);
            }
        }
        if (w->dlq_count_wanted && !w->stopping)
            continue;
        if (!w->head)
            break; /* stopping and drained */
        /*
         * Group commit: under load, wait a moment for more rows so one transaction carries
         * many (a commit costs several page writes whatever it holds). An idle server's lone
         * row waits at most LINGER_MS; nothing on the request path waits for deliveries.
         */
        if (w->queued < BATCH_MAX && !w->stopping && w->head->kind == ITEM_DELIVERY) {
            struct timespec until;
            clock_gettime(CLOCK_REALTIME, &until);
            until.tv_nsec += LINGER_MS * 1000000L;
            if (until.tv_nsec >= 1000000000L) {
                until.tv_sec++;
                until.tv_nsec -= 1000000000L;
            }
            /* ...until full, stopping, or a row somebody waits for (outbox, DLQ) arrives */
            w->lingering = true;
            while (w->queued < BATCH_MAX && !w->stopping && w->tail->kind == ITEM_DELIVERY &&
                   pthread_cond_timedwait(&w->cv, &w->mu, &until) == 0) {
            }
            w->lingering = false;
        }
        struct item *batch = w->head, *last = batch;
        size_t n = 1;
        while (last->next && n < BATCH_MAX) {
            last = last->next;
            n++;
        }
        w->head = last->next;
        if (!w->head)
            w->tail = NULL;
        last->next = NULL;
        w->queued -= n;
        pthread_mutex_unlock(&w->mu);
        write_batch(w, batch);
        pthread_mutex_lock(&w->mu);
    }
    pthread_mutex_unlock(&w->mu);
    return NULL;
}

th_err th_writer_start(struct th_store *st, size_t max_queue, struct th_writer **out)
{
    struct th_writer *w = calloc(1, sizeof *w);
    if (!w)
        return TH_E_NOMEM;
    w->st = st;
    w->max_queue = max_queue ? max_queue : 1;
    w->dlq_refresh_ms = TH_WRITER_DLQ_REFRESH_MS;
    pthread_mutex_init(&w->mu, NULL);
    pthread_cond_init(&w->cv, NULL);
    if (pthread_create(&w->thread, NULL, writer_main, w) != 0) {
        pthread_mutex_destroy(&w->mu);
        pthread_cond_destroy(&w->cv);
        free(w);
        return TH_E_NOMEM;
    }
    *out = w;
    return TH_E_OK;
}

void th_writer_stop(struct th_writer *w)
{
    if (!w)
        return;
    pthread_mutex_lock(&w->mu);
    w->stopping = true;
    pthread_cond_signal(&w->cv);
    pthread_mutex_unlock(&w->mu);
    pthread_join(w->thread, NULL);
    th_store_close(w->st);
    pthread_mutex_destroy(&w->mu);
    pthread_cond_destroy(&w->cv);
    free(w);
}

void th_writer_set_dlq_refresh(struct th_writer *w, int64_t ms)
{
    pthread_mutex_lock(&w->mu);
    w->dlq_refresh_ms = ms > 0 ? ms : TH_WRITER_DLQ_REFRESH_MS;
    pthread_mutex_unlock(&w->mu);
}

void th_writer_stats(struct th_writer *w, struct th_writer_stats *out)
{
    pthread_mutex_lock(&w->mu);
    /* a stale depth asks the writer for a count (done between batches); this read never waits */
    if (!w->dlq_count_wanted && th_wall_ms() - w->dlq_counted_ms >= w->dlq_refresh_ms) {
        w->dlq_count_wanted = true;
        pthread_cond_signal(&w->cv);
    }
    out->dlq_depth = atomic_load(&w->dlq_depth);
    out->written = w->written;
    out->failed = w->failed;
    out->rejected_full = w->rejected_full;
    out->queued = w->queued;
    pthread_mutex_unlock(&w->mu);
}
