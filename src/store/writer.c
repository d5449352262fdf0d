#include "store/writer.h"

#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "common/util.h"
#include "obs/log.h"
#include "store/spool.h"

/* RETRY_MAX_MS is the longest a node stays out of rotation (/readyz) after its database
 * returns: issue 20 wants full service back within 5 s, and at 5 s a long outage's last wait
 * alone took nearly that (measured: 4.5 s). A refused attempt every 2 s costs nothing. */
#define BATCH_MAX         512
#define LINGER_MS         4    /* group commit: how long a lone delivery record waits for company */
#define PING_MS           2000 /* an idle writer checks a shared store this often (/readyz) */
#define RETRY_MIN_MS      100  /* reconnection attempts back off from this... */
#define RETRY_MAX_MS      2000 /* ...to this */
#define SPOOL_MAX_DEFAULT 100000
#define RECEIPTS_MAX      4096 /* receipts queued at most (the sender retries a 503) */
#define RECEIPT_RETRY_MS  1000 /* a receipt that beat its record waits this long... */
#define RECEIPT_TRIES     10   /* ...this many times before it counts unmatched */
#define RECEIPTS_TURN     256  /* receipts applied in one transaction */

/* One receipt waiting: the row with copies of its strings. */
struct rcpt {
    struct rcpt *next;
    struct th_receipt_row row;
    int tries;
    int64_t due_ms;
    char provider[16], transaction_id[96], status[16], error[48];
};

#define VERIFY_TRIES     3    /* an unmatched event is looked for this many times... */
#define VERIFY_RETRY_MS  2000 /* ...this far apart */
#define VERIFY_POLL_MS   1000 /* other nodes' matches of ours, on a shared store */
#define VERIFY_POLL_ROWS 256

enum kind { ITEM_OUTBOX, ITEM_DELIVERY, ITEM_DLQ, ITEM_VERIFY };

/* One queued write: the row and copies of all its strings, in one allocation. */
struct item {
    struct item *next;
    enum kind kind;
    union {
        struct th_outbox_row outbox;
        struct th_delivery_row delivery;
        struct th_dlq_row dlq;
        struct th_verify_event verify;
    } row;
    unsigned tag, tries; /* ITEM_VERIFY: the caller's tag, the lookups made */
    int64_t due_ms;      /* ITEM_VERIFY waiting in the retry list: when it is tried again */
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
    /*
     * A shared store out of reach: batches go to the spool, and the writer reconnects with
     * backoff and flushes it, oldest first, before any new row reaches the store (order kept).
     * Only the writer thread touches these (and the spool); stats read copies under mu.
     */
    bool shared;      /* PostgreSQL: ping when idle, spool when lost */
    bool down;        /* the store is out of reach */
    int64_t retry_ms; /* the next reconnection / flush attempt (wall ms) */
    int backoff_ms;
    int64_t last_ok_ms; /* the last round trip that succeeded */
    char *spool_path;   /* NULL: no spool (a lost batch fails, as before) */
    size_t spool_max;
    struct th_spool *spool; /* opened on first need, or at start when the file exists */
    long spooled;           /* rows in the spool (copy for stats) */
    unsigned long long spool_flushed, spool_dropped;
    atomic_bool store_ok;
    /* verifications: the retry list and the poll are the writer thread's alone; the node and
     * callback are set before the first event; the counters are read under mu */
    char node[32];
    th_verified_fn on_verified;
    void *on_verified_ud;
    struct item *retry;   /* ITEM_VERIFY items waiting for their next lookup */
    int64_t poll_seq;     /* the last verifications row seen (-1: not yet asked) */
    int64_t next_poll_ms; /* 0: no poll (not shared, or no callback) */
    int vretry_ms, poll_ms;
    struct th_writer_verify_stats vstats;
    /* receipts: queued by callers (under mu), and those waiting for their record (writer
     * thread only, counted in rwaiting under mu for stats) */
    struct rcpt *rhead, *rtail, *rretry;
    size_t rqueued, rwaiting, rmax;
    int64_t rretry_ms;
    int rtries;
    th_writer_receipt_fn on_receipt;
    void *on_receipt_ud;
    unsigned long long r_applied, r_stale, r_unmatched, r_failed, r_full;
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
    F(th_delivery_row, request_id),
    F(th_delivery_row, event_id),
    F(th_delivery_row, request_type),
    F(th_delivery_row, phone_masked),
    F(th_delivery_row, country),
    F(th_delivery_row, channel),
    F(th_delivery_row, language),
    F(th_delivery_row, source),
    F(th_delivery_row, provider),
    F(th_delivery_row, outcome),
    F(th_delivery_row, transaction_id),
    F(th_delivery_row, error),
    F(th_delivery_row, user_id),
    F(th_delivery_row, login_hash),
    F(th_delivery_row, phone_hash),
    F(th_delivery_row, locale),
    F(th_delivery_row, preference),
    /* spool format 2 added these (format 1 rows stop before them) */
    F(th_delivery_row, prefix_hash),
    F(th_delivery_row, node),
    F(th_delivery_row, verified_event),
};
#define DELIVERY_STRINGS_V1 17
static const size_t verify_strings[] = {
    F(th_verify_event, event_id),
    F(th_verify_event, user_id),
    F(th_verify_event, channel),
    F(th_verify_event, matched_by),
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

th_err th_writer_verify(struct th_writer *w, const struct th_verify_event *ev, unsigned tag)
{
    size_t pos;
    struct th_verify_event copy = *ev;
    copy.matched_by = w->node;
    struct item *it = item_new(ITEM_VERIFY, &copy, sizeof copy, verify_strings,
                               TH_ARRAY_LEN(verify_strings), 0, &pos);
    if (!it)
        return TH_E_NOMEM;
    it->tag = tag < TH_WRITER_VERIFY_TAGS ? tag : 0;
    it->tries = 0;
    return enqueue(w, it);
}

void th_writer_on_verified(struct th_writer *w, const char *node, th_verified_fn fn, void *ud)
{
    pthread_mutex_lock(&w->mu);
    snprintf(w->node, sizeof w->node, "%s", node ? node : "");
    w->on_verified = fn;
    w->on_verified_ud = ud;
    w->poll_seq = -1;
    w->next_poll_ms = w->shared && fn && w->node[0] ? th_wall_ms() : 0;
    pthread_cond_signal(&w->cv);
    pthread_mutex_unlock(&w->mu);
}

void th_writer_verify_stats(struct th_writer *w, struct th_writer_verify_stats *out)
{
    pthread_mutex_lock(&w->mu);
    *out = w->vstats;
    pthread_mutex_unlock(&w->mu);
}

void th_writer_set_verify_timing(struct th_writer *w, int retry_ms, int poll_ms)
{
    pthread_mutex_lock(&w->mu);
    w->vretry_ms = retry_ms > 0 ? retry_ms : VERIFY_RETRY_MS;
    w->poll_ms = poll_ms > 0 ? poll_ms : VERIFY_POLL_MS;
    pthread_mutex_unlock(&w->mu);
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

/* ---- the spool: encoding a row for it and back ---- */

/*
 * A spooled row: a format byte, the row's integers (8 bytes each, little end first), its strings
 * in the order of its string list, each NUL-terminated, then a DLQ entry's payload (already
 * sealed). Explicit fields, not the struct's bytes: a spool left by one build is read by the
 * next.
 */
#define SPOOL_FORMAT 2 /* 2: a delivery's prefix_hash, node and verified_event (issue 23) */

static void put_i64(unsigned char *p, int64_t v)
{
    for (int i = 0; i < 8; i++)
        p[i] = (unsigned char)((uint64_t)v >> (8 * i));
}

static int64_t get_i64(const unsigned char *p)
{
    uint64_t v = 0;
    for (int i = 0; i < 8; i++)
        v |= (uint64_t)p[i] << (8 * i);
    return (int64_t)v;
}

/* The row's integers, read or written through pointers (n of them into v). */
static size_t row_ints(struct item *it, int64_t *v[4])
{
    if (it->kind == ITEM_DELIVERY) {
        v[0] = &it->row.delivery.created_ms;
        v[1] = &it->row.delivery.latency_us;
        return 2;
    }
    v[0] = &it->row.dlq.created_ms;
    v[1] = &it->row.dlq.otp_expires_ms;
    return 2;
}

static void row_strings(enum kind k, const size_t **list, size_t *n)
{
    *list = k == ITEM_DELIVERY ? delivery_strings : dlq_strings;
    *n = k == ITEM_DELIVERY ? TH_ARRAY_LEN(delivery_strings) : TH_ARRAY_LEN(dlq_strings);
}

/* A malloc'ed blob of a delivery or DLQ item; NULL when out of memory. */
static unsigned char *spool_encode(struct item *it, size_t *len)
{
    const size_t *list;
    size_t nstr;
    row_strings(it->kind, &list, &nstr);
    int64_t *ints[4];
    size_t nint = row_ints(it, ints);
    int attempts = it->kind == ITEM_DELIVERY ? it->row.delivery.attempts : it->row.dlq.attempts;
    size_t payload = it->kind == ITEM_DLQ ? it->row.dlq.payload_len : 0;
    size_t n = 1 + 8 * (nint + 1);
    for (size_t i = 0; i < nstr; i++)
        n += len0(field(&it->row, list[i]));
    n += payload;
    unsigned char *b = malloc(n), *p = b;
    if (!b)
        return NULL;
    *p++ = SPOOL_FORMAT;
    for (size_t i = 0; i < nint; i++, p += 8)
        put_i64(p, *ints[i]);
    put_i64(p, attempts);
    p += 8;
    for (size_t i = 0; i < nstr; i++) {
        const char *str = field(&it->row, list[i]);
        size_t l = len0(str);
        memcpy(p, str ? str : "", l);
        p += l;
    }
    if (payload)
        memcpy(p, it->row.dlq.payload, payload);
    *len = n;
    return b;
}

/* The item a blob holds (no completion: nothing waits for a flushed row); NULL if malformed. */
static struct item *spool_decode(int kind, const unsigned char *b, size_t len)
{
    if (kind != ITEM_DELIVERY && kind != ITEM_DLQ)
        return NULL;
    struct item tmp = {.kind = (enum kind)kind};
    const size_t *list;
    size_t nstr;
    row_strings(tmp.kind, &list, &nstr);
    int64_t *ints[4];
    size_t nint = row_ints(&tmp, ints);
    if (len < 1 + 8 * (nint + 1) || (b[0] != SPOOL_FORMAT && b[0] != 1))
        return NULL;
    if (b[0] == 1 && tmp.kind == ITEM_DELIVERY) /* left by an older build: the rest stay "" */
        nstr = DELIVERY_STRINGS_V1;
    const unsigned char *p = b + 1, *end = b + len;
    for (size_t i = 0; i < nint; i++, p += 8)
        *ints[i] = get_i64(p);
    int attempts = (int)get_i64(p);
    p += 8;
    for (size_t i = 0; i < nstr; i++) {
        const unsigned char *nul = memchr(p, 0, (size_t)(end - p));
        if (!nul)
            return NULL;
        const char *str = (const char *)p;
        memcpy((char *)&tmp.row + list[i], &str, sizeof str);
        p = nul + 1;
    }
    if (tmp.kind == ITEM_DELIVERY) {
        tmp.row.delivery.attempts = attempts;
        size_t pos;
        return item_new(ITEM_DELIVERY, &tmp.row.delivery, sizeof tmp.row.delivery, delivery_strings,
                        TH_ARRAY_LEN(delivery_strings), 0, &pos);
    }
    tmp.row.dlq.attempts = attempts;
    tmp.row.dlq.payload = p;
    tmp.row.dlq.payload_len = (size_t)(end - p);
    return dlq_item(&tmp.row.dlq);
}

/* Opens the spool when there is one to open (create: on first need). */
static bool spool_ready(struct th_writer *w, bool create)
{
    if (w->spool)
        return true;
    if (!w->spool_path)
        return false;
    char err[512];
    th_err e = th_spool_open(w->spool_path, create, &w->spool, err, sizeof err);
    if (e != TH_E_OK && e != TH_E_NOTFOUND)
        th_log_msg(TH_LOG_ERROR, "store", "%s", err);
    return e == TH_E_OK;
}

/*
 * Keeps a batch the store could not take. A DLQ entry spooled counts as committed (TH_E_OK: the
 * request waiting for it gets its answer). At the cap, delivery records go first: a new one is
 * dropped, and an older one makes room for a DLQ entry; a DLQ entry dropped is logged with its
 * id. Outbox rows are never spooled (the development provider's "handset" holds the message,
 * OTP included, in clear: it never goes to a local file): while the store is out of reach
 * they fail, as the provider's send then does; while it is in reach and the spool still
 * drains, write_batch hands them to the store at once.
 */
static void spool_batch(struct th_writer *w, struct item *batch, th_err *results)
{
    size_t n = 0;
    bool open = spool_ready(w, true), in_tx = open && th_spool_begin(w->spool) == TH_E_OK;
    unsigned long long dropped = 0;
    for (struct item *it = batch; it; it = it->next, n++) {
        results[n] = TH_E_STORE;
        if (it->kind == ITEM_OUTBOX || !open)
            continue;
        if ((size_t)th_spool_count(w->spool, -1) >= w->spool_max) {
            if (it->kind == ITEM_DELIVERY ||
                th_spool_drop_oldest(w->spool, ITEM_DELIVERY) != TH_E_OK) {
                dropped++;
                if (it->kind == ITEM_DLQ)
                    th_log_msg(TH_LOG_ERROR, "store",
                               "dead-letter entry %s lost: the store is out of reach and the "
                               "spool is full of DLQ entries (store.spool_max)",
                               it->row.dlq.id);
                continue;
            }
            dropped++; /* the oldest delivery record, for this DLQ entry */
        }
        size_t len = 0;
        unsigned char *blob = spool_encode(it, &len);
        if (blob && th_spool_put(w->spool, (int)it->kind, blob, len) == TH_E_OK)
            results[n] = TH_E_OK;
        free(blob);
    }
    if (in_tx && th_spool_commit(w->spool) != TH_E_OK)
        for (size_t i = 0; i < n; i++)
            results[i] = TH_E_STORE;
    if (!open && w->spool_path)
        th_log_msg(TH_LOG_ERROR, "store",
                   "%zu rows lost: the store is out of reach and the "
                   "spool cannot be opened",
                   n);
    pthread_mutex_lock(&w->mu);
    w->spooled = w->spool ? th_spool_count(w->spool, -1) : 0;
    w->spool_dropped += dropped;
    pthread_mutex_unlock(&w->mu);
    if (dropped)
        th_log_msg(TH_LOG_WARN, "store", "%llu spooled rows dropped (spool full)", dropped);
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
    th_err e = th_store_purge(w->st, &p, &removed);
    if (e == TH_E_BUSY)
        th_log_msg(TH_LOG_DEBUG, "retention", "another node is purging; retried in an hour");
    else if (e != TH_E_OK)
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

/* The store went out of reach: spool from now on, reconnect soon. */
static void mark_down(struct th_writer *w)
{
    if (!w->down)
        th_log_msg(TH_LOG_ERROR, "store",
                   "the store is out of reach: rows are kept in the spool until it returns");
    w->down = true;
    atomic_store(&w->store_ok, false);
    w->backoff_ms = RETRY_MIN_MS;
    w->retry_ms = th_wall_ms() + w->backoff_ms;
}

/* The items' inserts a row at a time, in one transaction: results per item. */
static void insert_rows(struct th_writer *w, struct item *const *items, size_t n, th_err *results)
{
    bool in_tx = th_store_begin(w->st) == TH_E_OK;
    for (size_t i = 0; i < n; i++) {
        struct item *it = items[i];
        th_err e = TH_E_STORE;
        if (in_tx)
            e = it->kind == ITEM_OUTBOX     ? th_store_outbox_insert(w->st, &it->row.outbox)
                : it->kind == ITEM_DELIVERY ? th_store_delivery_insert(w->st, &it->row.delivery)
                                            : th_store_dlq_insert(w->st, &it->row.dlq);
        /* a failed insert (a duplicate key) does not abort the transaction (a savepoint on
         * PostgreSQL): go on */
        results[i] = e;
    }
    if (in_tx && th_store_commit(w->st) != TH_E_OK) {
        th_store_rollback(w->st);
        for (size_t i = 0; i < n; i++)
            results[i] = TH_E_STORE;
    }
}

/*
 * The items' rows in one statement per table (th_store_insert_many), in one transaction: a
 * constant number of round trips per batch. false when it did not commit (the transaction is
 * rolled back): the store is lost, or a row failed for itself — then the caller goes row by row,
 * so that row fails alone.
 */
static bool insert_many(struct th_writer *w, struct item *const *items, size_t n)
{
    const struct th_delivery_row *d[BATCH_MAX];
    const struct th_outbox_row *o[BATCH_MAX];
    const struct th_dlq_row *q[BATCH_MAX];
    struct th_store_rows rows = {.deliveries = d, .outbox = o, .dlq = q};
    for (size_t i = 0; i < n; i++) {
        if (items[i]->kind == ITEM_DELIVERY)
            d[rows.ndeliveries++] = &items[i]->row.delivery;
        else if (items[i]->kind == ITEM_OUTBOX)
            o[rows.noutbox++] = &items[i]->row.outbox;
        else
            q[rows.ndlq++] = &items[i]->row.dlq;
    }
    if (th_store_begin(w->st) != TH_E_OK)
        return false;
    if (th_store_insert_many(w->st, &rows) == TH_E_OK && th_store_commit(w->st) == TH_E_OK)
        return true;
    th_store_rollback(w->st);
    return false;
}

/*
 * Writes the items (at most BATCH_MAX) in one transaction: results per item; false when the
 * store is lost. A row's own failure (a duplicate id) is its own: the batch goes again row by
 * row, each row under a savepoint; a lost server is everyone's.
 */
static bool insert_batch(struct th_writer *w, struct item *const *items, size_t n, th_err *results)
{
    if (n == 0)
        return true;
    bool many = w->shared && insert_many(w, items, n);
    if (many) {
        for (size_t i = 0; i < n; i++)
            results[i] = TH_E_OK;
        return true;
    }
    if (th_store_lost(w->st))
        return false;
    insert_rows(w, items, n, results);
    bool failed = false;
    for (size_t i = 0; i < n; i++)
        failed |= results[i] != TH_E_OK;
    if (failed && th_store_lost(w->st)) {
        th_store_rollback(w->st);
        return false;
    }
    return true;
}

/*
 * Writes one batch in one transaction — or into the spool while the shared store is out of
 * reach or the spool still holds older rows — then reports each item's result. Outbox rows are
 * never spooled (spool_batch): while the store is in reach and the spool drains they go to the
 * store at once (the order that matters is within a table).
 */
static void write_batch(struct th_writer *w, struct item *batch)
{
    th_err results[BATCH_MAX];
    struct item *items[BATCH_MAX], *outbox[BATCH_MAX];
    size_t n = 0, ok = 0, dlq_ok = 0, nout = 0, out_ok = 0;
    for (struct item *it = batch; it; it = it->next)
        items[n++] = it;
    bool spool = w->down || (w->spool && th_spool_count(w->spool, -1) > 0);
    if (!spool && !insert_batch(w, items, n, results)) {
        mark_down(w);
        spool = true;
    } else if (!spool) {
        w->last_ok_ms = th_wall_ms();
    }
    if (spool) {
        spool_batch(w, batch, results);
        if (!w->spool_path) /* no spool: as before, the rows fail */
            th_log_msg(TH_LOG_WARN, "store", "rows not written: the store is out of reach");
        for (size_t i = 0; !w->down && i < n; i++)
            if (items[i]->kind == ITEM_OUTBOX)
                outbox[nout++] = items[i];
        th_err out_results[BATCH_MAX];
        if (nout && !insert_batch(w, outbox, nout, out_results))
            mark_down(w);
        for (size_t i = 0, j = 0; !w->down && i < n && j < nout; i++)
            if (items[i] == outbox[j]) {
                out_ok += out_results[j] == TH_E_OK;
                results[i] = out_results[j++];
            }
    }
    n = 0;
    for (struct item *it = batch, *next; it; it = next, n++) {
        next = it->next;
        ok += results[n] == TH_E_OK;
        dlq_ok += !spool && results[n] == TH_E_OK && it->kind == ITEM_DLQ; /* in the store now */
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
    w->written += spool ? out_ok : ok; /* spooled rows count when flushed */
    w->failed += n - ok;
    pthread_mutex_unlock(&w->mu);
}

/* One item handed back by th_spool_each. */
struct flush {
    struct item *head, **tail;
    int64_t last_seq;
    size_t n;
};

static int flush_row(void *ud, int64_t seq, int kind, const void *blob, size_t len)
{
    struct flush *f = ud;
    struct item *it = spool_decode(kind, blob, len);
    f->last_seq = seq;
    if (!it) {
        th_log_msg(TH_LOG_ERROR, "store", "a malformed spooled row (#%lld) dropped",
                   (long long)seq);
        return 0;
    }
    it->next = NULL;
    *f->tail = it;
    f->tail = &it->next;
    f->n++;
    return 0;
}

static int dlq_found(void *ud, const struct th_dlq_row *row)
{
    (void)row;
    *(bool *)ud = true;
    return 1;
}

static void free_items(struct item *it)
{
    for (struct item *next; it; it = next) {
        next = it->next;
        free(it);
    }
}

enum flushed { FLUSH_LOST, FLUSH_STUCK, FLUSH_DONE };

/*
 * Hands the oldest spooled rows to the store in one transaction, then deletes them from the
 * spool. Idempotent for DLQ entries: one that reached the store before (its commit's answer
 * lost, or a crash between the commit and the spool's delete) is found by its id and counts as
 * flushed. A row the store refuses for itself is dropped (logged): it would block the rest.
 * FLUSH_LOST: the store is lost again; FLUSH_STUCK: the spool itself fails (read or trim: tried
 * again after RETRY_MAX_MS, not at once).
 */
static enum flushed flush_some(struct th_writer *w)
{
    struct flush f = {.tail = &f.head};
    if (th_spool_each(w->spool, BATCH_MAX, flush_row, &f) != TH_E_OK) {
        th_log_msg(TH_LOG_ERROR, "store", "the spool cannot be read");
        free_items(f.head);
        return FLUSH_STUCK;
    }
    th_err results[BATCH_MAX];
    struct item *items[BATCH_MAX];
    size_t n = 0, flushed = 0, refused = 0;
    for (struct item *it = f.head; it && n < BATCH_MAX; it = it->next)
        items[n++] = it;
    /* a row failing for itself (text PostgreSQL will not take: not UTF-8) fails alone there */
    bool ok = insert_batch(w, items, n, results);
    if (ok && f.head) {
        /* a refused DLQ entry already there: look in a transaction of its own */
        n = 0;
        for (struct item *it = f.head; it; it = it->next, n++) {
            bool there = false;
            if (results[n] != TH_E_OK && it->kind == ITEM_DLQ &&
                th_store_dlq_get(w->st, it->row.dlq.id, dlq_found, &there) == TH_E_OK && there)
                results[n] = TH_E_OK;
            if (results[n] == TH_E_OK) {
                flushed++;
            } else {
                refused++;
                if (it->kind == ITEM_DLQ)
                    th_log_msg(TH_LOG_ERROR, "store",
                               "spooled dead-letter entry %s refused by the store: dropped",
                               it->row.dlq.id);
            }
        }
        ok = !th_store_lost(w->st);
    }
    free_items(f.head);
    if (!ok)
        return FLUSH_LOST;
    if (f.last_seq && th_spool_remove_upto(w->spool, f.last_seq) != TH_E_OK) {
        th_log_msg(TH_LOG_ERROR, "store", "the spool cannot be trimmed (rows flushed again)");
        return FLUSH_STUCK;
    }
    w->last_ok_ms = th_wall_ms();
    pthread_mutex_lock(&w->mu);
    w->spooled = th_spool_count(w->spool, -1);
    w->spool_flushed += flushed;
    w->written += flushed;
    w->failed += refused;
    pthread_mutex_unlock(&w->mu);
    if (w->spooled == 0)
        th_log_msg(TH_LOG_INFO, "store", "the spool is flushed");
    return FLUSH_DONE;
}

/*
 * On the writer thread, when retry_ms is due: reconnects a lost store (backing off to
 * RETRY_MAX_MS), then flushes one batch of the spool (called again at once while it holds more).
 */
static void recover(struct th_writer *w)
{
    if (w->down) {
        if (th_store_reconnect(w->st) != TH_E_OK) {
            w->backoff_ms = w->backoff_ms * 2 > RETRY_MAX_MS ? RETRY_MAX_MS : w->backoff_ms * 2;
            w->retry_ms = th_wall_ms() + w->backoff_ms;
            return;
        }
        th_log_msg(TH_LOG_INFO, "store", "the store is reachable again");
        w->down = false;
        atomic_store(&w->store_ok, true);
    }
    if (spool_ready(w, false) && th_spool_count(w->spool, -1) > 0) {
        enum flushed r = flush_some(w);
        if (r == FLUSH_LOST) {
            mark_down(w);
            return;
        }
        if (r == FLUSH_STUCK) {
            w->retry_ms = th_wall_ms() + RETRY_MAX_MS;
            return;
        }
    }
    w->retry_ms = 0;
    w->last_ok_ms = th_wall_ms();
}

/* Whether recover() has work now: a lost store, or rows left in the spool. */
static bool recovery_due(struct th_writer *w, int64_t now)
{
    bool pending = w->down || (w->spool && th_spool_count(w->spool, -1) > 0);
    return pending && now >= w->retry_ms;
}

/* An idle writer's round trip to a shared store: /readyz learns of a lost one this way. */
static void ping(struct th_writer *w)
{
    w->last_ok_ms = th_wall_ms();
    if (th_store_ping(w->st) != TH_E_OK)
        mark_down(w);
}

/* ---- verifications, on the writer thread ---- */

/* A match made here: the sender is told here when it is us (or a record without a node). */
static void matched_here(void *ud, const struct th_verified *v)
{
    struct th_writer *w = ud;
    if (!w->on_verified || (v->node[0] && strcmp(v->node, w->node) != 0))
        return; /* another node's delivery: it learns of it by its poll */
    w->on_verified(w->on_verified_ud, v);
    pthread_mutex_lock(&w->mu);
    w->vstats.callbacks++;
    pthread_mutex_unlock(&w->mu);
}

static void matched_elsewhere(void *ud, const struct th_verified *v)
{
    struct th_writer *w = ud;
    if (w->on_verified)
        w->on_verified(w->on_verified_ud, v);
    pthread_mutex_lock(&w->mu);
    w->vstats.callbacks++;
    w->vstats.polled++;
    pthread_mutex_unlock(&w->mu);
}

/* Looks each event up once; an unmatched one (or one the lost store could not take) goes to
 * the retry list until its tries are spent. Consumes the list. */
static void verify_items(struct th_writer *w, struct item *list)
{
    pthread_mutex_lock(&w->mu);
    bool stopping = w->stopping; /* then nothing waits for a retry */
    pthread_mutex_unlock(&w->mu);
    for (struct item *it = list, *next; it; it = next) {
        next = it->next;
        enum th_verify_result res = TH_VERIFY_UNMATCHED;
        th_err e = TH_E_STORE;
        if (!w->down) {
            e = th_store_verify(w->st, &it->row.verify, &res, matched_here, w);
            if (e != TH_E_OK && th_store_lost(w->st))
                mark_down(w);
        }
        it->tries++;
        bool again =
            (e != TH_E_OK || res == TH_VERIFY_UNMATCHED) && it->tries < VERIFY_TRIES && !stopping;
        if (again) {
            it->due_ms = th_wall_ms() + (w->vretry_ms ? w->vretry_ms : VERIFY_RETRY_MS);
            it->next = w->retry;
            w->retry = it;
            continue;
        }
        pthread_mutex_lock(&w->mu);
        if (e != TH_E_OK)
            w->vstats.failed[it->tag]++;
        else if (res == TH_VERIFY_MATCHED)
            w->vstats.matched[it->tag]++;
        else if (res == TH_VERIFY_DUPLICATE)
            w->vstats.duplicate[it->tag]++;
        else
            w->vstats.unmatched[it->tag]++;
        pthread_mutex_unlock(&w->mu);
        free(it);
    }
}

/* The earliest retry (INT64_MAX: none). */
static int64_t retry_due(const struct th_writer *w)
{
    int64_t due = INT64_MAX;
    for (const struct item *it = w->retry; it; it = it->next)
        due = it->due_ms < due ? it->due_ms : due;
    return due;
}

/* Takes the retries due by now (all of them when stopping) and looks them up again. */
static void verify_retries(struct th_writer *w, int64_t now)
{
    pthread_mutex_lock(&w->mu);
    bool stopping = w->stopping;
    pthread_mutex_unlock(&w->mu);
    struct item *due = NULL, **p = &w->retry;
    while (*p) {
        struct item *it = *p;
        if (stopping || it->due_ms <= now) {
            *p = it->next;
            it->next = due;
            due = it;
        } else {
            p = &it->next;
        }
    }
    verify_items(w, due);
}

static void poll_verified(struct th_writer *w)
{
    w->next_poll_ms = th_wall_ms() + (w->poll_ms ? w->poll_ms : VERIFY_POLL_MS);
    if (w->down)
        return;
    if (th_store_verifications_since(w->st, w->node, &w->poll_seq, VERIFY_POLL_ROWS,
                                     matched_elsewhere, w) != TH_E_OK &&
        th_store_lost(w->st))
        mark_down(w);
}

/* A batch from the queue: the rows in one transaction, then the events (after the rows: a
 * delivery and the event crediting it may arrive in one batch). */
static void process(struct th_writer *w, struct item *batch)
{
    struct item *rows = NULL, **rt = &rows, *events = NULL, **et = &events;
    for (struct item *it = batch, *next; it; it = next) {
        next = it->next;
        it->next = NULL;
        if (it->kind == ITEM_VERIFY) {
            *et = it;
            et = &it->next;
        } else {
            *rt = it;
            rt = &it->next;
        }
    }
    if (rows)
        write_batch(w, rows);
    verify_items(w, events);
}

void th_writer_on_receipt(struct th_writer *w, th_writer_receipt_fn fn, void *ud,
                          size_t max_receipts, int64_t retry_ms, int tries)
{
    pthread_mutex_lock(&w->mu);
    w->on_receipt = fn;
    w->on_receipt_ud = ud;
    w->rmax = max_receipts ? max_receipts : RECEIPTS_MAX;
    w->rretry_ms = retry_ms > 0 ? retry_ms : RECEIPT_RETRY_MS;
    w->rtries = tries > 0 ? tries : RECEIPT_TRIES;
    pthread_mutex_unlock(&w->mu);
}

th_err th_writer_receipt(struct th_writer *w, const struct th_receipt_row *row)
{
    struct rcpt *r = calloc(1, sizeof *r);
    if (!r)
        return TH_E_NOMEM;
    r->row = *row;
    r->row.provider = r->provider;
    r->row.transaction_id = r->transaction_id;
    r->row.status = r->status;
    r->row.error = r->error;
    th_strlcpy(r->provider, row->provider, sizeof r->provider);
    th_strlcpy(r->transaction_id, row->transaction_id, sizeof r->transaction_id);
    th_strlcpy(r->status, row->status, sizeof r->status);
    th_strlcpy(r->error, row->error ? row->error : "", sizeof r->error);
    pthread_mutex_lock(&w->mu);
    if (w->stopping || w->rqueued + w->rwaiting >= w->rmax) {
        w->r_full++;
        pthread_mutex_unlock(&w->mu);
        free(r);
        return TH_E_OVERLOAD;
    }
    if (w->rtail)
        w->rtail->next = r;
    else
        w->rhead = r;
    w->rtail = r;
    w->rqueued++;
    if (!w->lingering)
        pthread_cond_signal(&w->cv);
    pthread_mutex_unlock(&w->mu);
    return TH_E_OK;
}

/* The earliest retry due (INT64_MAX: none). Writer thread. */
static int64_t receipts_due(const struct th_writer *w)
{
    int64_t due = INT64_MAX;
    for (const struct rcpt *r = w->rretry; r; r = r->next)
        due = r->due_ms < due ? r->due_ms : due;
    return due;
}

/*
 * One turn: the queued receipts and the retries due, in one transaction; the callbacks after
 * the commit. Called without mu, on the writer thread, while the store is within reach. A lost
 * store puts the turn back in the retry list (its tries kept) and marks the writer down.
 */
static void apply_receipts(struct th_writer *w, struct rcpt *queued)
{
    int64_t now = th_wall_ms();
    struct rcpt *turn = queued, **tail = &turn;
    size_t n = 0;
    while (*tail) {
        tail = &(*tail)->next;
        n++;
    }
    size_t from_retry = n; /* the queued ones were moved into rwaiting by the caller */
    for (struct rcpt **p = &w->rretry; *p && n < RECEIPTS_TURN;) {
        if ((*p)->due_ms <= now || w->stopping) {
            from_retry++;
            struct rcpt *r = *p;
            *p = r->next;
            r->next = NULL;
            *tail = r;
            tail = &r->next;
            n++;
        } else {
            p = &(*p)->next;
        }
    }
    if (!turn)
        return;
    struct th_receipt_applied *done = malloc(n * sizeof *done);
    th_err *res = malloc(n * sizeof *res);
    bool *changed = calloc(n, sizeof *changed);
    bool ok = done && res && changed && th_store_begin(w->st) == TH_E_OK;
    size_t i = 0;
    for (struct rcpt *r = turn; ok && r; r = r->next, i++) {
        res[i] = th_store_receipt_apply(w->st, &r->row, &done[i], &changed[i]);
        if (res[i] == TH_E_STORE) {
            ok = false;
        }
    }
    if (ok && th_store_commit(w->st) != TH_E_OK)
        ok = false;
    if (!ok) {
        bool lost = th_store_lost(w->st);
        th_store_rollback(w->st);
        if (lost)
            mark_down(w);
    }
    unsigned long long applied = 0, stale = 0, unmatched = 0, failed = 0;
    size_t back = 0;
    i = 0;
    for (struct rcpt *r = turn, *next; r; r = next, i++) {
        next = r->next;
        bool again = false;
        if (!ok) {
            /* the store failed (or memory): nothing of the turn is in; a lost store gets them
             * later, a receipt the store refuses for itself is counted failed */
            again = w->down || !done;
            failed += !again;
        } else if (res[i] == TH_E_NOTFOUND) {
            again = ++r->tries < w->rtries;
            unmatched += !again;
        } else if (res[i] == TH_E_OK && changed[i]) {
            applied++;
            if (w->on_receipt)
                w->on_receipt(w->on_receipt_ud, &done[i]);
        } else if (res[i] == TH_E_OK) {
            stale++;
        } else {
            failed++;
        }
        if (again) {
            r->due_ms = now + w->rretry_ms;
            r->next = w->rretry;
            w->rretry = r;
            back++;
        } else {
            free(r);
        }
    }
    free(done);
    free(res);
    free(changed);
    pthread_mutex_lock(&w->mu);
    w->r_applied += applied;
    w->r_stale += stale;
    w->r_unmatched += unmatched;
    w->r_failed += failed;
    w->rwaiting = w->rwaiting - from_retry + back;
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
        if (!w->stopping && recovery_due(w, th_wall_ms())) {
            pthread_mutex_unlock(&w->mu);
            recover(w);
            pthread_mutex_lock(&w->mu);
            continue;
        }
        while (!w->head && !w->stopping && !w->dlq_count_wanted && !(w->rhead && !w->down)) {
            int64_t now = th_wall_ms();
            if (recovery_due(w, now))
                break;
            if (retry_due(w) <= now) {
                pthread_mutex_unlock(&w->mu);
                verify_retries(w, now);
                pthread_mutex_lock(&w->mu);
                continue;
            }
            if (w->next_poll_ms && now >= w->next_poll_ms) {
                pthread_mutex_unlock(&w->mu);
                poll_verified(w);
                pthread_mutex_lock(&w->mu);
                continue;
            }
            int64_t rdue = w->down ? INT64_MAX : receipts_due(w);
            if (rdue <= now)
                break;
            if (w->shared && !w->down && now - w->last_ok_ms >= PING_MS) {
                pthread_mutex_unlock(&w->mu);
                ping(w);
                pthread_mutex_lock(&w->mu);
                continue;
            }
            bool keep = w->retention_days[0] || w->retention_days[1] || w->retention_days[2];
            if (keep && !w->down && now >= w->next_purge_ms) {
                int days[3] = {w->retention_days[0], w->retention_days[1], w->retention_days[2]};
                w->next_purge_ms = th_wall_ms() + 3600 * 1000; /* hourly */
                pthread_mutex_unlock(&w->mu);
                purge(w, days);
                count_dlq(w);
                pthread_mutex_lock(&w->mu);
                w->dlq_counted_ms = th_wall_ms();
                continue;
            }
            int64_t wake = keep && !w->down ? w->next_purge_ms : INT64_MAX;
            int64_t verify_at = retry_due(w);
            if (w->next_poll_ms && w->next_poll_ms < verify_at)
                verify_at = w->next_poll_ms;
            wake = verify_at < wake ? verify_at : wake;
            wake = rdue < wake ? rdue : wake;
            if (w->shared) {
                bool pending = w->down || (w->spool && th_spool_count(w->spool, -1) > 0);
                int64_t at = pending ? w->retry_ms : w->last_ok_ms + PING_MS;
                wake = at < wake ? at : wake;
            }
            if (wake == INT64_MAX) {
                pthread_cond_wait(&w->cv, &w->mu);
            } else {
                struct timespec ts = {.tv_sec = (time_t)(wake / 1000),
                                      .tv_nsec = (long)(wake % 1000) * 1000000L};
                pthread_cond_timedwait(&w->cv, &w->mu, &ts);
            }
        }
        if (w->dlq_count_wanted && !w->stopping)
            continue;
        /* receipts between batches (a turn each time round, so rows under load never starve
         * them); when stopping, one last turn for everything waiting */
        if (!w->down &&
            (w->rhead || (w->rretry && (w->stopping || receipts_due(w) <= th_wall_ms())))) {
            struct rcpt *q = w->rhead;
            w->rhead = w->rtail = NULL;
            w->rwaiting += w->rqueued; /* the turn's own count: taken back as it is settled */
            w->rqueued = 0;
            pthread_mutex_unlock(&w->mu);
            apply_receipts(w, q);
            pthread_mutex_lock(&w->mu);
            if (!w->stopping)
                continue;
        }
        if (!w->head) {
            if (w->stopping && w->retry) { /* a last lookup for what waits, then they go */
                pthread_mutex_unlock(&w->mu);
                verify_retries(w, th_wall_ms());
                pthread_mutex_lock(&w->mu);
                continue;
            }
            if (w->stopping)
                break; /* stopping and drained */
            continue;  /* a recovery is due */
        }
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
        process(w, batch);
        pthread_mutex_lock(&w->mu);
    }
    pthread_mutex_unlock(&w->mu);
    return NULL;
}

th_err th_writer_start(struct th_store *st, size_t max_queue, struct th_writer **out)
{
    struct th_writer_opts o = {.max_queue = max_queue};
    return th_writer_start_opts(st, &o, out);
}

th_err th_writer_start_opts(struct th_store *st, const struct th_writer_opts *o,
                            struct th_writer **out)
{
    struct th_writer *w = calloc(1, sizeof *w);
    if (!w)
        return TH_E_NOMEM;
    w->st = st;
    w->max_queue = o->max_queue ? o->max_queue : 1;
    w->dlq_refresh_ms = TH_WRITER_DLQ_REFRESH_MS;
    w->shared = th_store_shared(st);
    w->spool_max = o->spool_max ? o->spool_max : SPOOL_MAX_DEFAULT;
    w->last_ok_ms = th_wall_ms();
    w->rmax = RECEIPTS_MAX;
    w->rretry_ms = RECEIPT_RETRY_MS;
    w->rtries = RECEIPT_TRIES;
    atomic_init(&w->store_ok, true);
    if (w->shared && o->spool_path && *o->spool_path && !(w->spool_path = strdup(o->spool_path))) {
        free(w);
        return TH_E_NOMEM;
    }
    /* rows a previous run could not hand over: flushed first */
    if (w->shared && spool_ready(w, false))
        w->spooled = th_spool_count(w->spool, -1);
    pthread_mutex_init(&w->mu, NULL);
    pthread_cond_init(&w->cv, NULL);
    if (pthread_create(&w->thread, NULL, writer_main, w) != 0) {
        pthread_mutex_destroy(&w->mu);
        pthread_cond_destroy(&w->cv);
        th_spool_close(w->spool);
        free(w->spool_path);
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
    for (struct rcpt *r = w->rretry, *next; r; r = next) { /* unmatched at the end: dropped */
        next = r->next;
        free(r);
    }
    for (struct rcpt *r = w->rhead, *next; r; r = next) { /* the store was out of reach */
        next = r->next;
        free(r);
    }
    th_store_close(w->st);
    th_spool_close(w->spool);
    free(w->spool_path);
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
    /* a stale depth asks the writer for a count (done between batches); this read never waits
     */
    if (!w->dlq_count_wanted && th_wall_ms() - w->dlq_counted_ms >= w->dlq_refresh_ms) {
        w->dlq_count_wanted = true;
        pthread_cond_signal(&w->cv);
    }
    out->dlq_depth = atomic_load(&w->dlq_depth);
    out->written = w->written;
    out->failed = w->failed;
    out->rejected_full = w->rejected_full;
    out->queued = w->queued;
    out->spooled = (size_t)w->spooled;
    out->spool_flushed = w->spool_flushed;
    out->spool_dropped = w->spool_dropped;
    out->store_up = atomic_load(&w->store_ok);
    out->receipts_applied = w->r_applied;
    out->receipts_stale = w->r_stale;
    out->receipts_unmatched = w->r_unmatched;
    out->receipts_failed = w->r_failed;
    out->receipts_rejected_full = w->r_full;
    out->receipts_waiting = w->rqueued + w->rwaiting;
    pthread_mutex_unlock(&w->mu);
}

bool th_writer_store_ready(struct th_writer *w)
{
    return atomic_load(&w->store_ok);
}
