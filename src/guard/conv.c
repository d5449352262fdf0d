#include "guard/conv.h"

#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/util.h"

#define PROBE          8   /* neighbouring slots a prefix may take */
#define VPROBE         4   /* the same for a verified number */
#define QUEUE_MAX      256 /* block rows waiting for the sync thread */
#define CELL_COUNTRIES 40  /* metric label sets: distinct countries, then "other" */
#define CELL_PROVIDERS 8
#define CELLS_MAX      128

/*
 * Sends and verifications per bucket; head: the bucket number of the newest. A prefix's csent and
 * cverified are the part of them its country counts (at most country_share a window). A prefix's
 * counts are 16-bit (struct pcounts: the prefix table holds max_prefixes of them), saturating at
 * 65,535 a bucket — a prefix is judged from prefix_min_sends (at most 100,000, default 20) on, so
 * one that reaches it has been judged long before; a country's are 32-bit.
 */
#define COUNTS(T)                                                                                  \
    {                                                                                              \
        int64_t head;                                                                              \
        T sent[CONV_BUCKETS], verified[CONV_BUCKETS];                                              \
        uint16_t csent[CONV_BUCKETS], cverified[CONV_BUCKETS];                                     \
    }
struct counts COUNTS(uint32_t);
struct pcounts COUNTS(uint16_t);

struct block_state {
    int64_t since_ms, until_ms;
    char id[40];
};

/* 176 bytes a prefix (was 232: a 16-byte key, a used flag and 32-bit counts). */
struct prefix {
    uint64_t key; /* the prefix key's first 8 bytes (parse_key); 0: the slot is empty */
    char country[4];
    struct pcounts n;
    struct block_state b;
};

struct country {
    struct counts n;
    struct block_state b;
};

struct verified { /* 16 bytes a number (was 32) */
    uint64_t key; /* as struct prefix's: 0 empty */
    int64_t ms;
};

struct cell {
    char country[8], provider[24], channel[8];
    struct th_counter sent, verified;
    bool registered;
};

struct th_conv {
    pthread_mutex_t mu;
    struct th_conv_settings s;
    int64_t bucket_ms;
    long share; /* a prefix's sends (and verifications) a window its country counts at most */
    int64_t (*clock)(void *ud);
    void *clock_ud;

    struct prefix *prefixes;
    size_t pmask, nprefixes;
    struct country countries[26 * 26];
    struct verified *verified;
    size_t vmask, nverified;
    int64_t last_verified_ms;

    struct th_conv_block queue[QUEUE_MAX];
    size_t qhead, qlen;

    struct cell cells[CELLS_MAX];
    size_t ncells, ncountries, nproviders;
    struct th_metrics *metrics;
    struct th_metric_family *f_sent, *f_verified;

    struct th_counter refused[3], would[3];
    uint64_t exempt, made[3], dropped, evicted;
    size_t bytes;
};

static const char *const kind_names[] = {"none", "prefix", "country"};

const char *th_conv_kind_name(th_conv_kind k)
{
    return (unsigned)k < 3 ? kind_names[k] : "none";
}

void th_conv_settings_from(const struct th_config *cfg, struct th_conv_settings *out)
{
    *out = (struct th_conv_settings){
        .mode = (th_conv_mode)cfg->conversion_mode,
        .require_signal = cfg->conversion_require_signal,
        .window_ms = (int64_t)cfg->conversion_window_minutes * 60000,
        .prefix_min_sends = cfg->conversion_prefix_min_sends,
        .prefix_min_rate = cfg->conversion_prefix_min_rate,
        .country_min_sends = cfg->conversion_country_min_sends,
        .country_min_rate = cfg->conversion_country_min_rate,
        .block_minutes = cfg->conversion_block_minutes,
        .max_prefixes = (size_t)cfg->conversion_max_prefixes,
        .max_verified = (size_t)cfg->conversion_max_verified,
    };
}

static size_t pow2_at_least(size_t n)
{
    size_t c = 16;
    while (c < n)
        c <<= 1;
    return c;
}

th_err th_conv_new(const struct th_conv_settings *s, struct th_conv **out)
{
    *out = NULL;
    struct th_conv *c = calloc(1, sizeof *c);
    if (!c)
        return TH_E_NOMEM;
    c->s = *s;
    if (c->s.window_ms < CONV_BUCKETS)
        c->s.window_ms = CONV_BUCKETS;
    c->bucket_ms = (c->s.window_ms + CONV_BUCKETS - 1) / CONV_BUCKETS;
    c->share = s->prefix_min_sends / 4 > 0 ? s->prefix_min_sends / 4 : 1;
    size_t np = pow2_at_least(s->max_prefixes), nv = pow2_at_least(s->max_verified);
    c->prefixes = calloc(np, sizeof *c->prefixes);
    c->verified = calloc(nv, sizeof *c->verified);
    if (!c->prefixes || !c->verified) {
        th_conv_free(c);
        return TH_E_NOMEM;
    }
    c->pmask = np - 1;
    c->vmask = nv - 1;
    c->bytes = sizeof *c + np * sizeof *c->prefixes + nv * sizeof *c->verified;
    pthread_mutex_init(&c->mu, NULL);
    *out = c;
    return TH_E_OK;
}

void th_conv_free(struct th_conv *c)
{
    if (!c)
        return;
    if (c->prefixes && c->verified)
        pthread_mutex_destroy(&c->mu);
    free(c->prefixes);
    free(c->verified);
    free(c);
}

th_conv_mode th_conv_get_mode(const struct th_conv *c)
{
    return c->s.mode;
}

void th_conv_set_clock(struct th_conv *c, int64_t (*clock)(void *ud), void *ud)
{
    c->clock = clock;
    c->clock_ud = ud;
}

static int64_t now_ms(const struct th_conv *c)
{
    return c->clock ? c->clock(c->clock_ud) : th_wall_ms();
}

/* ---- counts ---- */

/* The window functions, for a country's counts and a prefix's. */
#define COUNTS_FNS(S)                                                                              \
    /* Moves the window to bucket b (the buckets passed are emptied). */                           \
    static void advance_##S(struct S *n, int64_t b)                                                \
    {                                                                                              \
        if (b <= n->head)                                                                          \
            return;                                                                                \
        int64_t k = b - n->head;                                                                   \
        if (k > CONV_BUCKETS)                                                                      \
            k = CONV_BUCKETS;                                                                      \
        for (int64_t i = 1; i <= k; i++) {                                                         \
            size_t j = (size_t)((n->head + i) % CONV_BUCKETS);                                     \
            n->sent[j] = n->verified[j] = 0;                                                       \
            n->csent[j] = n->cverified[j] = 0;                                                     \
        }                                                                                          \
        n->head = b;                                                                               \
    }                                                                                              \
    static void sums_##S(struct S *n, int64_t b, long *sent, long *verified)                       \
    {                                                                                              \
        advance_##S(n, b);                                                                         \
        long s = 0, v = 0;                                                                         \
        for (size_t i = 0; i < CONV_BUCKETS; i++) {                                                \
            s += n->sent[i];                                                                       \
            v += n->verified[i];                                                                   \
        }                                                                                          \
        *sent = s;                                                                                 \
        *verified = v;                                                                             \
    }                                                                                              \
    /* The bucket of t is still in n's window (b: now's bucket). */                                \
    static bool in_window_##S(const struct S *n, int64_t tb, int64_t b)                            \
    {                                                                                              \
        return tb <= b && tb > b - CONV_BUCKETS && tb > n->head - CONV_BUCKETS && tb <= n->head;   \
    }                                                                                              \
    static void zero_##S(struct S *n)                                                              \
    {                                                                                              \
        memset(n->sent, 0, sizeof n->sent);                                                        \
        memset(n->verified, 0, sizeof n->verified);                                                \
        memset(n->csent, 0, sizeof n->csent);                                                      \
        memset(n->cverified, 0, sizeof n->cverified);                                              \
    }
COUNTS_FNS(counts)
COUNTS_FNS(pcounts)
#define COUNTS_CALL(f, n)                                                                          \
    _Generic((n), struct counts *: f##_counts, const struct counts *: f##_counts,                  \
             struct pcounts *: f##_pcounts, const struct pcounts *: f##_pcounts)
#define advance(n, b)       COUNTS_CALL(advance, n)(n, b)
#define sums(n, b, s, v)    COUNTS_CALL(sums, n)(n, b, s, v)
#define in_window(n, tb, b) COUNTS_CALL(in_window, n)(n, tb, b)
#define zero(n)             COUNTS_CALL(zero, n)(n)

/* One more in a prefix's 16-bit bucket, saturating (struct pcounts). */
static void inc16(uint16_t *v)
{
    if (*v < UINT16_MAX)
        (*v)++;
}

static long window_sum(const uint16_t *v)
{
    long s = 0;
    for (size_t i = 0; i < CONV_BUCKETS; i++)
        s += v[i];
    return s;
}

/* ---- keys ---- */

static int hexval(char ch)
{
    if (ch >= '0' && ch <= '9')
        return ch - '0';
    if (ch >= 'a' && ch <= 'f')
        return ch - 'a' + 10;
    if (ch >= 'A' && ch <= 'F')
        return ch - 'A' + 10;
    return -1;
}

/*
 * The first 8 bytes of a hex key (an HMAC: uniform, so 64 bits keep 16,384 prefixes apart with a
 * chance of a collision about 1 in 10^11), never 0, which marks an empty slot (a key of 0 counts
 * as 1). false: not a key (too short, not hex).
 */
static bool parse_key(const char *hex, uint64_t *out)
{
    if (!hex)
        return false;
    uint64_t k = 0;
    for (size_t i = 0; i < 16; i++) {
        int d = hexval(hex[i]);
        if (d < 0)
            return false;
        k = k << 4 | (uint64_t)d;
    }
    *out = k ? k : 1;
    return true;
}

static size_t slot_of(uint64_t key, size_t mask)
{
    return (size_t)key & mask; /* an HMAC: already uniform */
}

static int region_index(const char *r)
{
    if (!r || r[0] < 'A' || r[0] > 'Z' || r[1] < 'A' || r[1] > 'Z' || r[2])
        return -1;
    return (r[0] - 'A') * 26 + (r[1] - 'A');
}

static struct prefix *find_prefix(struct th_conv *c, uint64_t key)
{
    size_t s = slot_of(key, c->pmask);
    for (size_t i = 0; i < PROBE; i++) {
        struct prefix *p = &c->prefixes[(s + i) & c->pmask];
        if (p->key == key)
            return p;
    }
    return NULL;
}

/* Finds or makes the prefix: a new one takes an empty neighbour, else the coldest unblocked. */
static struct prefix *take_prefix(struct th_conv *c, uint64_t key, int64_t b, int64_t now)
{
    struct prefix *p = find_prefix(c, key);
    if (p)
        return p;
    size_t s = slot_of(key, c->pmask);
    struct prefix *victim = NULL;
    long vsent = 0;
    bool vblocked = true;
    for (size_t i = 0; i < PROBE; i++) {
        struct prefix *q = &c->prefixes[(s + i) & c->pmask];
        if (!q->key) {
            victim = q;
            break;
        }
        long sent, ver;
        sums(&q->n, b, &sent, &ver);
        bool blocked = q->b.until_ms > now;
        if (!victim || (vblocked && !blocked) || (vblocked == blocked && sent < vsent)) {
            victim = q;
            vsent = sent;
            vblocked = blocked;
        }
    }
    if (victim->key)
        c->evicted++;
    else
        c->nprefixes++;
    memset(victim, 0, sizeof *victim);
    victim->key = key;
    victim->n.head = b;
    return victim;
}

static bool verified_has(struct th_conv *c, uint64_t key)
{
    size_t s = slot_of(key, c->vmask);
    for (size_t i = 0; i < VPROBE; i++) {
        const struct verified *v = &c->verified[(s + i) & c->vmask];
        if (v->key == key)
            return true;
    }
    return false;
}

static void verified_put(struct th_conv *c, uint64_t key, int64_t now)
{
    size_t s = slot_of(key, c->vmask);
    struct verified *oldest = NULL;
    for (size_t i = 0; i < VPROBE; i++) {
        struct verified *v = &c->verified[(s + i) & c->vmask];
        if (v->key == key) {
            v->ms = now;
            return;
        }
        if (!v->key) {
            oldest = v;
            break;
        }
        if (!oldest || v->ms < oldest->ms)
            oldest = v;
    }
    if (!oldest->key)
        c->nverified++;
    oldest->key = key;
    oldest->ms = now;
}

/* ---- blocks ---- */

static bool below(long sent, long verified, long min_sends, int min_rate)
{
    return min_sends > 0 && sent >= min_sends && verified * 100 < (long)min_rate * sent;
}

static void enqueue(struct th_conv *c, const struct th_conv_block *b)
{
    if (c->qlen == QUEUE_MAX) {
        c->dropped++;
        return;
    }
    c->queue[(c->qhead + c->qlen) % QUEUE_MAX] = *b;
    c->qlen++;
}

static void make_block(struct th_conv *c, struct block_state *bs, th_conv_kind kind,
                       const char *key, const char *country, const char *masked, long sent,
                       long verified, bool refusing, int64_t now)
{
    bs->since_ms = now;
    bs->until_ms = now + (int64_t)c->s.block_minutes * 60000;
    if (th_random_id(kind == TH_CONV_PREFIX ? "cbp-" : "cbc-", bs->id, sizeof bs->id) != TH_E_OK)
        snprintf(bs->id, sizeof bs->id, "cb-%lld", (long long)now);
    c->made[kind]++;
    struct th_conv_block row = {.kind = kind,
                                .since_ms = bs->since_ms,
                                .until_ms = bs->until_ms,
                                .sends = sent,
                                .verified = verified};
    th_strlcpy(row.id, bs->id, sizeof row.id);
    th_strlcpy(row.key, key, sizeof row.key);
    th_strlcpy(row.country, country ? country : "", sizeof row.country);
    th_strlcpy(row.masked, masked ? masked : "", sizeof row.masked);
    th_strlcpy(row.mode, refusing ? "enforce" : "monitor", sizeof row.mode);
    enqueue(c, &row);
}

/* A prefix's window leaves its country's counts (it is blocked: the country rule ignores it). */
static void leave_country(struct th_conv *c, struct prefix *p, int64_t b)
{
    int ri = region_index(p->country);
    if (ri < 0)
        return;
    struct counts *cn = &c->countries[ri].n;
    advance(cn, b);
    advance(&p->n, b);
    for (size_t i = 0; i < CONV_BUCKETS; i++) {
        cn->sent[i] -= p->n.csent[i] < cn->sent[i] ? p->n.csent[i] : cn->sent[i];
        cn->verified[i] -=
            p->n.cverified[i] < cn->verified[i] ? p->n.cverified[i] : cn->verified[i];
    }
}

static bool signal_now(const struct th_conv *c, int64_t now)
{
    return c->last_verified_ms > 0 && now - c->last_verified_ms <= c->s.window_ms;
}

void th_conv_check(struct th_conv *c, const struct th_conv_key *k, struct th_conv_verdict *v)
{
    *v = (struct th_conv_verdict){.kind = TH_CONV_PASS};
    uint64_t pk, fk;
    if (!c || c->s.mode == TH_CONV_OFF || !parse_key(k->prefix, &pk))
        return;
    bool has_phone = parse_key(k->phone, &fk);
    pthread_mutex_lock(&c->mu);
    int64_t now = now_ms(c), b = now / c->bucket_ms;
    bool refusing = c->s.mode == TH_CONV_ENFORCE && (!c->s.require_signal || signal_now(c, now));
    struct prefix *p = find_prefix(c, pk);
    if (p) {
        if (p->b.until_ms > now) {
            v->kind = TH_CONV_PREFIX;
        } else {
            long sent, ver;
            sums(&p->n, b, &sent, &ver);
            if (below(sent, ver, c->s.prefix_min_sends, c->s.prefix_min_rate)) {
                leave_country(c, p, b);
                make_block(c, &p->b, TH_CONV_PREFIX, k->prefix, p->country, k->prefix_masked, sent,
                           ver, refusing, now);
                zero(&p->n); /* judged again on prefix_min_sends new sends */
                v->kind = TH_CONV_PREFIX;
                v->new_block = true;
                v->sends = sent;
                v->verified = ver;
            }
        }
    }
    int ri = region_index(k->country);
    if (v->kind == TH_CONV_PASS && ri >= 0) {
        struct country *cn = &c->countries[ri];
        if (cn->b.until_ms > now) {
            v->kind = TH_CONV_COUNTRY;
        } else {
            long sent, ver;
            sums(&cn->n, b, &sent, &ver);
            if (below(sent, ver, c->s.country_min_sends, c->s.country_min_rate)) {
                make_block(c, &cn->b, TH_CONV_COUNTRY, k->country, k->country, "", sent, ver,
                           refusing, now);
                zero(&cn->n);
                v->kind = TH_CONV_COUNTRY;
                v->new_block = true;
                v->sends = sent;
                v->verified = ver;
            }
        }
    }
    v->enforcing = refusing;
    if (v->kind != TH_CONV_PASS) {
        if (has_phone && verified_has(c, fk)) {
            v->exempt = true;
            c->exempt++;
        } else if (refusing) {
            v->refuse = true;
            th_counter_inc(&c->refused[v->kind]);
        } else {
            th_counter_inc(&c->would[v->kind]);
        }
    }
    pthread_mutex_unlock(&c->mu);
}

/* ---- metrics cells ---- */

static bool seen(const struct th_conv *c, size_t field, const char *v)
{
    for (size_t i = 0; i < c->ncells; i++) {
        const char *have = (const char *)&c->cells[i] + field;
        if (strcmp(have, v) == 0)
            return true;
    }
    return false;
}

/* The cell of (country, provider, channel), made on first sight; *fresh: to register. */
static struct cell *cell_of(struct th_conv *c, const char *country, const char *provider,
                            const char *channel, bool *fresh)
{
    *fresh = false;
    if (!country || !country[0])
        country = "none";
    if (!provider || !provider[0])
        provider = "none";
    if (!channel)
        channel = "";
    if (!seen(c, offsetof(struct cell, country), country)) {
        if (c->ncountries >= CELL_COUNTRIES)
            country = "other";
    }
    if (!seen(c, offsetof(struct cell, provider), provider)) {
        if (c->nproviders >= CELL_PROVIDERS)
            provider = "other";
    }
    for (size_t i = 0; i < c->ncells; i++) {
        struct cell *x = &c->cells[i];
        if (!strcmp(x->country, country) && !strcmp(x->provider, provider) &&
            !strcmp(x->channel, channel))
            return x;
    }
    if (c->ncells == CELLS_MAX)
        return &c->cells[CELLS_MAX - 1]; /* the last made stands for the rest: bounded */
    bool new_country = !seen(c, offsetof(struct cell, country), country);
    bool new_provider = !seen(c, offsetof(struct cell, provider), provider);
    struct cell *x = &c->cells[c->ncells++];
    th_strlcpy(x->country, country, sizeof x->country);
    th_strlcpy(x->provider, provider, sizeof x->provider);
    th_strlcpy(x->channel, channel, sizeof x->channel);
    c->ncountries += new_country;
    c->nproviders += new_provider;
    *fresh = true;
    return x;
}

/* Outside c->mu: rendering holds the registry's lock and samples c (lock order). */
static void register_cell(struct th_conv *c, struct th_metrics *m, struct cell *x)
{
    if (!m)
        return;
    const char *const v[] = {x->country, x->provider, x->channel, NULL};
    if (th_metrics_counter(c->f_sent, v, &x->sent) == TH_E_OK)
        th_metrics_counter(c->f_verified, v, &x->verified);
}

void th_conv_sent(struct th_conv *c, const struct th_conv_key *k, const char *provider,
                  const char *channel)
{
    uint64_t pk;
    if (!c || c->s.mode == TH_CONV_OFF)
        return;
    bool fresh;
    pthread_mutex_lock(&c->mu);
    int64_t now = now_ms(c), b = now / c->bucket_ms;
    if (parse_key(k->prefix, &pk)) {
        struct prefix *p = take_prefix(c, pk, b, now);
        th_strlcpy(p->country, k->country ? k->country : "", sizeof p->country);
        advance(&p->n, b);
        inc16(&p->n.sent[b % CONV_BUCKETS]);
        int ri = region_index(k->country);
        /* a blocked prefix's sends are not the country's, nor more than its share */
        if (ri >= 0 && p->b.until_ms <= now && window_sum(p->n.csent) < c->share) {
            advance(&c->countries[ri].n, b);
            c->countries[ri].n.sent[b % CONV_BUCKETS]++;
            p->n.csent[b % CONV_BUCKETS]++;
        }
    }
    struct cell *x = cell_of(c, k->country, provider, channel, &fresh);
    th_counter_inc(&x->sent);
    struct th_metrics *m = fresh ? c->metrics : NULL;
    pthread_mutex_unlock(&c->mu);
    register_cell(c, m, x);
}

void th_conv_verified(struct th_conv *c, const struct th_conv_verification *v)
{
    uint64_t pk, fk;
    if (!c || c->s.mode == TH_CONV_OFF)
        return;
    bool fresh;
    pthread_mutex_lock(&c->mu);
    int64_t now = now_ms(c), b = now / c->bucket_ms, tb = v->sent_ms / c->bucket_ms;
    c->last_verified_ms = now;
    bool to_country = true;
    if (parse_key(v->prefix, &pk)) {
        struct prefix *p = find_prefix(c, pk);
        if (p) {
            advance(&p->n, b);
            bool in = in_window(&p->n, tb, b);
            if (in)
                inc16(&p->n.verified[tb % CONV_BUCKETS]);
            to_country = in && p->b.until_ms <= now && window_sum(p->n.cverified) < c->share;
            if (to_country)
                p->n.cverified[tb % CONV_BUCKETS]++;
        }
    }
    int ri = region_index(v->country);
    if (ri >= 0 && to_country) {
        struct counts *cn = &c->countries[ri].n;
        advance(cn, b);
        if (in_window(cn, tb, b))
            cn->verified[tb % CONV_BUCKETS]++;
    }
    if (parse_key(v->phone, &fk))
        verified_put(c, fk, now);
    struct cell *x = cell_of(c, v->country, v->provider, v->channel, &fresh);
    th_counter_inc(&x->verified);
    struct th_metrics *m = fresh ? c->metrics : NULL;
    pthread_mutex_unlock(&c->mu);
    register_cell(c, m, x);
}

size_t th_conv_take_blocks(struct th_conv *c, struct th_conv_block *out, size_t max)
{
    pthread_mutex_lock(&c->mu);
    size_t n = 0;
    while (n < max && c->qlen) {
        out[n++] = c->queue[c->qhead];
        c->qhead = (c->qhead + 1) % QUEUE_MAX;
        c->qlen--;
    }
    pthread_mutex_unlock(&c->mu);
    return n;
}

bool th_conv_adopt(struct th_conv *c, const struct th_conv_block *blk)
{
    uint64_t pk;
    if (!c || c->s.mode == TH_CONV_OFF || blk->cleared_ms)
        return false;
    bool taken = false;
    pthread_mutex_lock(&c->mu);
    int64_t now = now_ms(c), b = now / c->bucket_ms;
    struct block_state *bs = NULL;
    if (blk->until_ms <= now) {
        bs = NULL;
    } else if (blk->kind == TH_CONV_PREFIX && parse_key(blk->key, &pk)) {
        struct prefix *p = take_prefix(c, pk, b, now);
        if (!p->country[0])
            th_strlcpy(p->country, blk->country, sizeof p->country);
        if (p->b.until_ms < blk->until_ms) {
            if (p->b.until_ms <= now) {
                leave_country(c, p, b);
                zero(&p->n);
            }
            bs = &p->b;
        }
    } else if (blk->kind == TH_CONV_COUNTRY && region_index(blk->key) >= 0) {
        struct country *cn = &c->countries[region_index(blk->key)];
        if (cn->b.until_ms < blk->until_ms) {
            if (cn->b.until_ms <= now)
                zero(&cn->n);
            bs = &cn->b;
        }
    }
    if (bs) {
        bs->since_ms = blk->since_ms;
        bs->until_ms = blk->until_ms;
        th_strlcpy(bs->id, blk->id, sizeof bs->id);
        taken = true;
    }
    pthread_mutex_unlock(&c->mu);
    return taken;
}

bool th_conv_clear(struct th_conv *c, th_conv_kind kind, const char *key, int64_t cleared_ms)
{
    uint64_t pk;
    if (!c)
        return false;
    bool held = false;
    pthread_mutex_lock(&c->mu);
    int64_t now = now_ms(c);
    struct block_state *bs = NULL;
    struct pcounts *pn = NULL;
    struct counts *cn = NULL;
    if (kind == TH_CONV_PREFIX && parse_key(key, &pk)) {
        struct prefix *p = find_prefix(c, pk);
        if (p) {
            bs = &p->b;
            pn = &p->n;
        }
    } else if (kind == TH_CONV_COUNTRY && region_index(key) >= 0) {
        bs = &c->countries[region_index(key)].b;
        cn = &c->countries[region_index(key)].n;
    }
    if (bs && bs->until_ms > now && bs->since_ms <= cleared_ms) {
        held = true;
        *bs = (struct block_state){0};
        /* a cleared block comes back only after min_sends new sends */
        if (pn)
            zero(pn);
        else
            zero(cn);
    }
    pthread_mutex_unlock(&c->mu);
    return held;
}

void th_conv_stats(struct th_conv *c, struct th_conv_stats *out)
{
    *out = (struct th_conv_stats){0};
    if (!c)
        return;
    pthread_mutex_lock(&c->mu);
    int64_t now = now_ms(c);
    for (size_t i = 0; i <= c->pmask; i++)
        if (c->prefixes[i].key && c->prefixes[i].b.until_ms > now)
            out->active[TH_CONV_PREFIX]++;
    for (size_t i = 0; i < 26 * 26; i++)
        if (c->countries[i].b.until_ms > now)
            out->active[TH_CONV_COUNTRY]++;
    for (int k = 1; k < 3; k++) {
        out->refused[k] = th_counter_get(&c->refused[k]);
        out->would_refuse[k] = th_counter_get(&c->would[k]);
        out->blocks_made[k] = c->made[k];
    }
    out->exempt = c->exempt;
    out->queue_dropped = c->dropped;
    out->evicted = c->evicted;
    out->prefixes = c->nprefixes;
    out->verified_numbers = c->nverified;
    out->bytes = c->bytes;
    out->signal = signal_now(c, now);
    pthread_mutex_unlock(&c->mu);
}

static double active_prefix(void *ud)
{
    struct th_conv_stats s;
    th_conv_stats(ud, &s);
    return (double)s.active[TH_CONV_PREFIX];
}

static double active_country(void *ud)
{
    struct th_conv_stats s;
    th_conv_stats(ud, &s);
    return (double)s.active[TH_CONV_COUNTRY];
}

static double signal_fn(void *ud)
{
    struct th_conv_stats s;
    th_conv_stats(ud, &s);
    return s.signal ? 1 : 0;
}

th_err th_conv_metrics(struct th_conv *c, struct th_metrics *m)
{
    static const char *const by_cell[] = {"country", "provider", "channel", NULL};
    static const char *const by_kind[] = {"kind", NULL};
    struct th_metric_family *f;
    th_err e = th_metrics_family(m, "telehook_conversion_sent_total",
                                 "Messages a provider accepted, as the conversion tracker counts "
                                 "them (countries past the first 40, providers past 8: other).",
                                 TH_METRIC_COUNTER, by_cell, CELLS_MAX, &c->f_sent);
    if (e == TH_E_OK)
        e = th_metrics_family(m, "telehook_conversion_verified_total",
                              "Messages whose code Okta reported as used (Okta event hook).",
                              TH_METRIC_COUNTER, by_cell, CELLS_MAX, &c->f_verified);
    if (e == TH_E_OK)
        e = th_metrics_family(m, "telehook_conversion_refused_total",
                              "Requests refused by a conversion block (conversion.mode = "
                              "enforce, verifications seen), by kind.",
                              TH_METRIC_COUNTER, by_kind, 2, &f);
    for (int k = 1; e == TH_E_OK && k < 3; k++)
        e = th_metrics_counter(f, (const char *const[]){kind_names[k], NULL}, &c->refused[k]);
    if (e == TH_E_OK)
        e = th_metrics_family(m, "telehook_conversion_would_refuse_total",
                              "Requests a conversion block would have refused but were sent "
                              "(conversion.mode = monitor, or no verification seen yet), by kind.",
                              TH_METRIC_COUNTER, by_kind, 2, &f);
    for (int k = 1; e == TH_E_OK && k < 3; k++)
        e = th_metrics_counter(f, (const char *const[]){kind_names[k], NULL}, &c->would[k]);
    if (e == TH_E_OK)
        e = th_metrics_family(m, "telehook_conversion_blocks",
                              "Conversion blocks active now, by kind.", TH_METRIC_GAUGE, by_kind, 2,
                              &f);
    if (e == TH_E_OK)
        e = th_metrics_fn(f, (const char *const[]){"prefix", NULL}, active_prefix, c);
    if (e == TH_E_OK)
        e = th_metrics_fn(f, (const char *const[]){"country", NULL}, active_country, c);
    if (e == TH_E_OK)
        e = th_metrics_family(m, "telehook_conversion_signal",
                              "1 while a verification was seen within conversion.window_minutes: "
                              "enforce refuses only then.",
                              TH_METRIC_GAUGE, NULL, 1, &f);
    if (e == TH_E_OK)
        e = th_metrics_fn(f, NULL, signal_fn, c);
    if (e != TH_E_OK)
        return e;
    pthread_mutex_lock(&c->mu);
    c->metrics = m;
    size_t n = c->ncells;
    pthread_mutex_unlock(&c->mu);
    for (size_t i = 0; i < n; i++)
        register_cell(c, m, &c->cells[i]);
    return TH_E_OK;
}
