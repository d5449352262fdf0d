#include "guard/guard.h"

#include <ctype.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>

#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>
#include <openssl/rand.h>

#include "common/hmac.h"
#include "common/rate.h"
#include "common/util.h"
#include "guard/internal.h"
#include "obs/log.h"

#define KEY_LEN           16 /* truncated HMAC-SHA256: collisions are not a practical concern */
#define PROBE             8
#define DEFAULT_WINDOW_MS (10 * 60 * 1000) /* dedupe window when Okta gives no otpExpires */
#define MAX_WINDOW_MS     (30 * 60 * 1000)
#define NREGIONS          (26 * 26 + 1) /* "AA".."ZZ", and non-geographic */
#define NCODES            1000          /* calling codes 1..999 */
#define MAX_WAITERS       64 /* per dedupe record: beyond it a duplicate waits for its deadline */
#define NREFS             8  /* reference answers (struct answer_ref) */
#define DEDUPE_ANSWER_MAX UINT16_MAX /* a longer answer is not kept (the hook's are <= 4 KiB) */
/* Shared state: a duplicate is woken by the first's notification (LISTEN guard_done), and asks
 * again after POLL_FIRST_MS, doubling up to POLL_MAX_MS, in case the notification was lost (a
 * listener reconnecting). */
#define POLL_FIRST_MS 50
#define POLL_MAX_MS   400

static const char *const block_names[] = {
#define TH_BLOCK_NAME(name, text) text,
    TH_BLOCKS(TH_BLOCK_NAME)
#undef TH_BLOCK_NAME
};

const char *th_block_name(th_block b)
{
    return (size_t)b < TH_ARRAY_LEN(block_names) ? block_names[b] : "?";
}

/*
 * The in-memory tables keep 8 bytes of a key's HMAC (its bytes 8..15; bytes 0..7 choose the home
 * slot, so the two are independent). Under a secret key nobody can aim at a collision, and by
 * chance one lookup compares at most PROBE slots: 8 × 2^-64 ≈ 4e-19 of a false match (2^-62 for
 * the person table, whose keys give two bits to the limit's kind): with six lookups a request,
 * about 4e-8 over a million requests a day for ten years. A false match would share a limiter's
 * count (stricter for both keys) or replay another request's answer.
 */
typedef uint64_t slot_key;

/* The limit a person slot counts for: its key's two low bits (person()). */
enum { PERSON_SHORT, PERSON_LONG, PERSON_USER };

struct pslot { /* per-person limiter state: 16 bytes a key */
    slot_key key;
    int64_t tat_us; /* theoretical arrival time; <= now means "no state" */
};

/*
 * A dedupe record, shared by its eventId and (phone, otp, channel) slots and the tickets of the
 * requests that found it. Kept small because the table holds one per request remembered (up to
 * guard.max_entries): REC_SLOT bytes in the guard's record pool (struct th_guard's pool), the
 * answer stored as a difference from a reference answer (struct answer_ref) — Okta's answers
 * differ mostly by their transactionId, so a SUCCESSFUL answer of ~190 bytes keeps ~40, and ~22
 * once its hex digits are packed two to a byte (pack_hex): inside the record (u.in). A middle
 * that does not fit REC_INLINE is malloc'ed (u.mid). Records come from the pool, not the heap:
 * they live for minutes and would otherwise be interleaved, 32 and 48 bytes at a time, with the
 * requests' short-lived allocations in the loops' arenas, holding their pages.
 */
#define REC_SLOT   48
#define REC_INLINE (REC_SLOT - 16)
struct rec {
    uint32_t refs;
    uint16_t status;
    uint16_t len; /* the whole answer: ref's first pre bytes, the middle, ref's last suf bytes */
    uint16_t pre, suf;
    uint16_t stored;       /* once done: the middle's bytes as kept (in u.in up to REC_INLINE) */
    uint8_t nwaiters;      /* <= MAX_WAITERS */
    uint8_t done : 1;      /* the answer is stored */
    uint8_t abandoned : 1; /* the first gave its ticket back without an answer */
    uint8_t ref : 3;       /* g->refs[ref]: the reference answer (when pre + suf > 0) */
    uint8_t run : 1;       /* the middle begins with a run of the reference's (struct mid_run) */
    uint8_t packed : 1;    /* the middle's other bytes are pack_hex's form, not plain */
    union {
        struct th_dedupe
            *waiters;          /* until done or abandoned: duplicates to wake (under the lock) */
        char in[REC_INLINE];   /* once done, stored <= REC_INLINE: the middle */
        char *mid;             /* once done, stored > REC_INLINE: the middle, malloc'ed */
        struct rec *next_free; /* in the pool's free list */
    } u;
};
_Static_assert(sizeof(struct rec) == REC_SLOT, "a dedupe record is one pool slot");

/*
 * An answer's middle often shares a run with its reference's too (the bytes between two
 * differing values: `","transactionMetadata":"attempts=1;ms=` between a transactionId and a
 * latency). Then the kept middle holds this (run_put: at, the run's shift from its place in the
 * reference's middle, and len, as varints — 3 bytes for an answer's usual few dozen), then the
 * bytes before the run (at bytes of them) and the bytes after it, plain or packed (rec.packed):
 * what differs, and 3 bytes.
 */
struct mid_run {
    uint16_t at;     /* the run's place in the answer's middle */
    uint16_t ref_at; /* its place in the reference */
    uint16_t len;    /* its length */
};
#define MIN_RUN 12 /* shorter runs are kept as bytes: the header would save little */
#define RUN_MAX 9  /* run_put's bytes at most: three varints of 16 bits */

static size_t put_varint(unsigned char *o, size_t v)
{
    size_t n = 0;
    for (; v >= 0x80; v >>= 7)
        o[n++] = (unsigned char)(v | 0x80);
    o[n++] = (unsigned char)v;
    return n;
}

static size_t get_varint(const unsigned char *in, size_t *v)
{
    size_t n = 0;
    *v = 0;
    do
        *v |= (size_t)(in[n] & 0x7f) << (7 * n);
    while (in[n++] & 0x80);
    return n;
}

/* h as kept in a middle (out NULL: only counted); pre: the answer's shared start. */
static size_t run_put(const struct mid_run *h, size_t pre, unsigned char *out)
{
    unsigned char tmp[RUN_MAX];
    long shift = (long)h->ref_at - (long)pre - (long)h->at; /* zigzag: small either way */
    size_t n = put_varint(tmp, h->at);
    n += put_varint(tmp + n, shift < 0 ? (size_t)(-shift) * 2 - 1 : (size_t)shift * 2);
    n += put_varint(tmp + n, h->len);
    if (out)
        memcpy(out, tmp, n);
    return n;
}

static size_t run_get(const unsigned char *in, size_t pre, struct mid_run *h)
{
    size_t at, z, len, n = get_varint(in, &at);
    n += get_varint(in + n, &z);
    n += get_varint(in + n, &len);
    long shift = z & 1 ? -(long)((z + 1) / 2) : (long)(z / 2);
    *h = (struct mid_run){(uint16_t)at, (uint16_t)((long)pre + (long)at + shift), (uint16_t)len};
    return n;
}

/*
 * A reference answer: an answer recorded earlier, kept for the guard's life, that later answers
 * are stored as differences from (the bytes they share at the start and at the end). At most
 * NREFS, each at most DEDUPE_ANSWER_MAX: a body that no reference shares half of becomes one
 * while there is room. Written once under the lock, then only read (published by nrefs).
 */
struct answer_ref {
    char *body;
    size_t len;
};

/*
 * A dedupe slot: 16 bytes a key (one is touched per slot of the index once the guard is full:
 * 2 MiB at the default 131,072). The window's end is in ms after the index's base (struct
 * th_guard's dd_base_ms), exact to the millisecond; the record is its place in the pool + 1, so
 * 0 (with any expire) is an empty slot.
 */
struct dslot {
    slot_key key;
    uint32_t expire; /* the window's end: dd_base_ms + expire ms */
    uint32_t rec;    /* g->pool[rec - 1]; 0: empty */
};
_Static_assert(sizeof(struct dslot) == 16, "a dedupe slot is 16 bytes");

struct budget {
    int64_t day; /* unix day of count */
    long count;
};

struct th_guard {
    unsigned char secret[32];
    struct th_hmac_key *mac; /* prepared from secret */
    bool dedupe, answer_failed;
    struct th_rate phone_short, phone_long, user, country, global; /* GCRA limits */
    long code_budget_default;
    long code_budget[NCODES]; /* per calling code; -1 = the default */
    bool deny[NREGIONS], allow[NREGIONS], have_allow;
    /* the same by calling code (code_deny holds the codes non-geographic stands for) */
    bool code_deny[NCODES], code_allow[NCODES], have_code_allow;
    bool refuse[2][TH_PHONE_UNKNOWN + 1]; /* [channel][type] */

    pthread_mutex_t mu;
    struct pslot *people;
    size_t npeople; /* power of two */
    struct dslot *dd;
    size_t ndd;
    size_t max_entries; /* guard.max_entries: the tables have the power of two above */
    size_t sweep;       /* the next dedupe slot the incremental sweep looks at */
    size_t nrecs; /* dedupe records allocated (a record outlives its slots while tickets hold it) */
    int64_t dd_base_ms; /* the slots' expire counts from here (dd_now moves it every ~24 days) */
    /* The record pool, mmap'ed so its pages are touched only as records come; slots
     * [0, pool_used) have been used, and the freed ones are reused last-freed first, so the
     * touched pages stay at the high-water mark. npool slots: a record is referenced by dedupe
     * slots (ndd records at most) or only by the tickets of requests still answering whose slots
     * newer keys took (pool_bound at most), so the pool does not run out; if it does anyway (see
     * pool_bound), th_guard_dedupe_begin sends without the dedupe. */
    struct rec *pool;
    size_t npool, pool_used;
    struct rec *pool_free;
    size_t rec_bytes; /* heap bytes beyond the pool (middles over REC_INLINE, reference answers),
                         with malloc's overhead (alloc_cost) */
    struct answer_ref refs[NREFS];
    atomic_int nrefs;    /* refs[0..nrefs) are set (release: read without the lock) */
    atomic_int last_ref; /* the reference the last answer matched: tried first */
    size_t nwaiters;     /* duplicates linked in some record's waiters */
    int64_t country_tat[NREGIONS];
    struct budget budget[NCODES];
    int64_t global_tat;
    atomic_uint_fast64_t counts[TH_BLOCK__COUNT];
    int64_t (*clock)(void *ud); /* tests only (th_guard_set_clock); NULL: the system clocks */
    void *clock_ud;

    /* the shared state (several nodes): one pool of connections per loop, made on first use */
    char *url;            /* NULL: in memory only */
    char *schema;         /* schema_lines joined */
    bool closed;          /* store.unavailable = closed */
    struct gpool *pools;  /* under mu */
    atomic_bool degraded; /* the last decision could not reach the database */
    atomic_uint_fast64_t decisions, statements, fallbacks, refused, notified;
    int poll_first_ms, poll_max_ms; /* th_guard_set_poll */
};

/* The connections of one loop to the shared state. Freed with the guard (a ticket may still
 * point here after the loop has finished: pg is NULL then). */
struct gpool {
    struct th_guard *g;
    struct th_loop *loop;
    struct th_pg *pg;
    struct gpool *next;
    bool purger; /* the first pool runs the periodic purge */
    bool purging;
    struct th_timer purge;
    struct th_pg_query pq;
    const char *pparams[1];
    char pbuf[24];
    struct th_dedupe *waiters; /* shared tickets waiting on this loop (notification targets) */
    atomic_int up, failed;     /* its connections ready now; attempts failed (th_pg_options) */
    bool was_up;               /* th_guard_ready saw a connection up once (under g->mu) */
    /* Finishes (answers to store) wait here while a batch of them is out: one statement per
     * batch, after the answers (guard_finish_batch); the batch out is fout. */
    struct th_dedupe *fhead, *ftail, *fout;
    int nqueued;
    struct th_pg_query fq;
    const char *fparams[4];
    char *fbuf;
};

struct th_dedupe {
    struct rec *rec;
    bool first;                    /* the sender's ticket, not a duplicate's */
    bool waiting;                  /* linked in rec->waiters (under the lock) */
    struct th_dedupe *prev, *next; /* rec->waiters */
    struct th_loop_call wake;      /* th_guard_dedupe_wait's callback */

    /* A ticket in the shared state (pool != NULL): its rows' keys; a waiter asks the database
     * again on a short backoff until the first's answer is there (or the rows are gone). */
    struct gpool *pool;
    char keys[80]; /* "{hex,hex}": the text form of a text[] parameter */
    bool done, gone, busy, released;
    int status;
    char *body;
    size_t len;
    int backoff_ms;
    bool kicked;   /* a notification came while a poll was out: ask again at once */
    bool notified; /* a notification came (counted when it is what woke the waiter) */
    struct th_dedupe *wprev, *wnext; /* pool->waiters, while waiting */
    struct th_dedupe *fnext;         /* pool's finishes queued or out (a first's ticket) */
    bool listed;
    th_loop_fn fn;
    void *ud;
    struct th_timer poll;
    struct th_pg_query q;
    const char *params[3];
    char num[24];
};

/* ---- clocks ---- */

/* Monotonic µs for the rate limits; wall ms for the dedupe window (compared with Okta's
 * otpExpires) and the budget's UTC day. A test clock stands for both. */
static int64_t now_us(const struct th_guard *g)
{
    return g->clock ? g->clock(g->clock_ud) : th_mono_us();
}

static int64_t now_ms(const struct th_guard *g)
{
    return g->clock ? g->clock(g->clock_ud) / 1000 : th_wall_ms();
}

void th_guard_set_poll(struct th_guard *g, int first_ms, int max_ms)
{
    g->poll_first_ms = first_ms;
    g->poll_max_ms = max_ms;
}

static void dd_rebase(struct th_guard *g, int64_t now);

void th_guard_set_clock(struct th_guard *g, int64_t (*clock)(void *ud), void *ud)
{
    pthread_mutex_lock(&g->mu);
    g->clock = clock;
    g->clock_ud = ud;
    dd_rebase(g, now_ms(g)); /* the slots' times count from the new clock's now */
    pthread_mutex_unlock(&g->mu);
}

/* ---- parsing ---- */

static int region_index(const char *r)
{
    if (!r || strlen(r) != 2 || !isupper((unsigned char)r[0]) || !isupper((unsigned char)r[1]))
        return NREGIONS - 1;
    return (r[0] - 'A') * 26 + (r[1] - 'A');
}

static bool parse_regions(const char *list, bool *set, bool *any, char *err, size_t errlen)
{
    char buf[1024];
    th_strlcpy(buf, list ? list : "", sizeof buf);
    for (char *t = strtok(buf, " ,"); t; t = strtok(NULL, " ,")) {
        for (char *c = t; *c; c++)
            *c = (char)toupper((unsigned char)*c);
        int i = region_index(t);
        if (i == NREGIONS - 1 || !th_phone_region_known(t)) {
            snprintf(err, errlen,
                     "unknown country code '%.8s' (ISO 3166 alpha-2, like US; calling codes such "
                     "as +881 go in calling_codes_allow or calling_codes_deny)",
                     t);
            return false;
        }
        set[i] = true;
        *any = true;
    }
    return true;
}

/* "+1 +44", "881", and "non-geographic" (sets *word instead of naming codes). */
static bool parse_codes(const char *list, bool *set, bool *word, char *err, size_t errlen)
{
    char buf[1024];
    th_strlcpy(buf, list ? list : "", sizeof buf);
    for (char *t = strtok(buf, " ,"); t; t = strtok(NULL, " ,")) {
        if (strcasecmp(t, "non-geographic") == 0) {
            *word = true;
            continue;
        }
        const char *d = t[0] == '+' ? t + 1 : t;
        char *end;
        long cc = strtol(d, &end, 10);
        if (!isdigit((unsigned char)d[0]) || *end || cc < 1 || cc >= NCODES ||
            !th_phone_code_known((int)cc)) {
            snprintf(err, errlen,
                     "unknown calling code '%.8s' (like +44 or 881, or non-geographic)", t);
            return false;
        }
        set[cc] = true;
    }
    return true;
}

/*
 * The calling-code lists. A code named in calling_codes_allow overrides the word non-geographic
 * in calling_codes_deny (so "calling_codes_allow = +881" with the default deny-list allows
 * Iridium), but a code named in both, or the word in both, is a contradiction: refused.
 */
static bool parse_code_rules(struct th_guard *g, const struct th_config *cfg, char *err,
                             size_t errlen)
{
    bool named_deny[NCODES] = {false}, named_allow[NCODES] = {false};
    bool word_deny = false, word_allow = false;
    if (!parse_codes(cfg->guard_calling_codes_deny, named_deny, &word_deny, err, errlen) ||
        !parse_codes(cfg->guard_calling_codes_allow, named_allow, &word_allow, err, errlen))
        return false;
    if (word_deny && word_allow) {
        snprintf(err, errlen,
                 "non-geographic is in both calling_codes_allow and "
                 "calling_codes_deny");
        return false;
    }
    for (int cc = 1; cc < NCODES; cc++) {
        bool ng = th_phone_code_non_geographic(cc);
        bool allow = named_allow[cc] || (word_allow && ng);
        if (named_deny[cc] && allow) {
            snprintf(err, errlen,
                     "calling code +%d is in both calling_codes_allow and "
                     "calling_codes_deny",
                     cc);
            return false;
        }
        g->code_deny[cc] = named_deny[cc] || (word_deny && ng && !named_allow[cc]);
        g->code_allow[cc] = allow;
        g->have_code_allow |= allow;
    }
    return true;
}

static bool parse_types(const char *list, bool *refuse, char *err, size_t errlen)
{
    char buf[512];
    th_strlcpy(buf, list ? list : "", sizeof buf);
    for (char *t = strtok(buf, " ,"); t; t = strtok(NULL, " ,")) {
        bool found = false;
        for (int i = 0; i <= TH_PHONE_UNKNOWN; i++) {
            if (strcasecmp(t, th_phone_type_name((th_phone_type)i)) == 0) {
                refuse[i] = found = true;
                break;
            }
        }
        if (!found) {
            snprintf(err, errlen,
                     "unknown number type '%.24s' (FIXED_LINE, MOBILE, FIXED_LINE_OR_MOBILE, "
                     "TOLL_FREE, PREMIUM_RATE, SHARED_COST, VOIP, PERSONAL_NUMBER, PAGER, UAN, "
                     "VOICEMAIL, UNKNOWN)",
                     t);
            return false;
        }
    }
    return true;
}

/* "1:100000, 44:20000" */
static bool parse_budgets(struct th_guard *g, const char *list, char *err, size_t errlen)
{
    char buf[1024];
    th_strlcpy(buf, list ? list : "", sizeof buf);
    for (char *t = strtok(buf, " ,"); t; t = strtok(NULL, " ,")) {
        char *end;
        long code = strtol(t[0] == '+' ? t + 1 : t, &end, 10);
        long n = *end == ':' ? strtol(end + 1, &end, 10) : -1;
        if (code < 1 || code >= NCODES || n < 0 || *end) {
            snprintf(err, errlen, "budgets: expected CODE:COUNT like 44:20000 (got '%.20s')", t);
            return false;
        }
        g->code_budget[code] = n;
    }
    return true;
}

static char *schema_join(void);

/* A PostgreSQL store URL, as the store takes them: a libpq URI (postgresql://, postgres://) or
 * "postgresql:" + a libpq connection string. */
static bool is_pg_url(const char *url)
{
    return strncmp(url, "postgresql:", 11) == 0 || strncmp(url, "postgres:", 9) == 0;
}

/*
 * The most records held only by tickets: one per request between its dedupe decision and its
 * answer. dispatch.max_in_flight does not bound those (the decision comes before the dispatch,
 * which refuses beyond its cap rather than holding requests back); the requests in the hook do,
 * and they come one per connection: server.max_connections per process. Not strictly — a
 * request whose client has gone keeps its ticket until its deadline answers it, while a new
 * connection takes its place — so the pool may still run out under such churn: then requests
 * are sent without the dedupe, never replayed wrongly.
 */
static size_t pool_bound(const struct th_config *cfg)
{
    return cfg->max_connections > 0 ? (size_t)cfg->max_connections : 1;
}

th_err th_guard_new(const struct th_config *cfg, struct th_guard **out, char *err, size_t errlen)
{
    struct th_guard *g = calloc(1, sizeof *g);
    if (!g)
        return TH_E_NOMEM;
    pthread_mutex_init(&g->mu, NULL);
    g->dedupe = cfg->guard_dedupe;
    g->answer_failed = cfg->guard_block_answer == 0;
    if (cfg->guard_secret[0]) {
        unsigned int n = 32;
        EVP_Digest(cfg->guard_secret, strlen(cfg->guard_secret), g->secret, &n, EVP_sha256(), NULL);
    } else if (RAND_bytes(g->secret, sizeof g->secret) != 1) {
        th_guard_free(g);
        return TH_E_NOMEM;
    }
    if (th_hmac_key_new(g->secret, sizeof g->secret, &g->mac) != TH_E_OK) {
        th_guard_free(g);
        return TH_E_NOMEM;
    }
    g->phone_short = th_rate_from_spec(cfg->guard_limit_phone);
    g->phone_long = th_rate_from_spec(cfg->guard_limit_phone_daily);
    g->user = th_rate_from_spec(cfg->guard_limit_user);
    g->country = th_rate_from_spec(cfg->guard_limit_country);
    g->global = th_rate_from_spec(cfg->guard_limit_global);
    long n = 0, p = 0;
    th_rate_parse(cfg->guard_budget_calling_code, &n, &p);
    g->code_budget_default = n; /* per day; 0 = no budget */
    for (int i = 0; i < NCODES; i++)
        g->code_budget[i] = -1;
    bool dummy;
    if (!parse_budgets(g, cfg->guard_budgets, err, errlen) ||
        !parse_regions(cfg->guard_countries_deny, g->deny, &dummy, err, errlen) ||
        !parse_regions(cfg->guard_countries_allow, g->allow, &g->have_allow, err, errlen) ||
        !parse_code_rules(g, cfg, err, errlen) ||
        !parse_types(cfg->guard_sms_refuse, g->refuse[TH_CHANNEL_SMS], err, errlen) ||
        !parse_types(cfg->guard_voice_refuse, g->refuse[TH_CHANNEL_VOICE], err, errlen)) {
        th_guard_free(g);
        return TH_E_CONFIG;
    }
    const char *url = cfg->guard_url && cfg->guard_url[0] ? cfg->guard_url : NULL;
    if (!url && cfg->store_url && is_pg_url(cfg->store_url)) {
        /* The store on PostgreSQL: the guard shares it when the nodes share a secret; without
         * one (a key drawn per node: no two nodes' keys would match) it stays in memory. */
        if (cfg->guard_secret[0])
            url = cfg->store_url;
        else
            th_log_msg(TH_LOG_WARN, "guard_local",
                       "the store is on PostgreSQL but guard.secret is empty: dedupe, limits and "
                       "budgets stay in this node's memory (set guard.secret, the same on every "
                       "node, to share them)");
    }
    url = url ? th_pg_conninfo(url) : NULL;
    if (url && !cfg->guard_secret[0]) { /* a key per node would make every node's keys differ */
        snprintf(err, errlen,
                 "secret must be set (the same on every node) when the guard's state is shared "
                 "through PostgreSQL");
        th_guard_free(g);
        return TH_E_CONFIG;
    }
    if (url && !(g->url = strdup(url))) {
        th_guard_free(g);
        return TH_E_NOMEM;
    }
    g->closed = cfg->store_unavailable == 1;
    g->poll_first_ms = POLL_FIRST_MS;
    g->poll_max_ms = POLL_MAX_MS;
    if (url && !(g->schema = schema_join())) {
        th_guard_free(g);
        return TH_E_NOMEM;
    }
    size_t cap = 1024;
    while (cap < (size_t)cfg->guard_max_entries)
        cap <<= 1;
    g->npeople = g->ndd = cap;
    g->npool = cap + pool_bound(cfg); /* < 2^32: max_entries and max_connections are bounded */
    g->max_entries = (size_t)cfg->guard_max_entries;
    g->people = calloc(cap, sizeof *g->people);
    g->dd = calloc(cap, sizeof *g->dd);
    g->dd_base_ms = now_ms(g);
    /* mmap, not calloc: its pages must stay untouched until records come (a calloc of this size
     * may come from a heap whose free pages it has to zero) */
    void *pool = mmap(NULL, g->npool * sizeof *g->pool, PROT_READ | PROT_WRITE,
                      MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    g->pool = pool == MAP_FAILED ? NULL : pool;
    if (!g->people || !g->dd || !g->pool) {
        th_guard_free(g);
        return TH_E_NOMEM;
    }
    *out = g;
    return TH_E_OK;
}

/* The heap bytes malloc(n) takes: glibc's chunk on 64-bit systems (the request and an 8-byte
 * header, in 16-byte steps, 32 at least) — what the records' count in th_guard_memory adds. */
static size_t alloc_cost(size_t n)
{
    size_t c = (n + 8 + 15) & ~(size_t)15;
    return c < 32 ? 32 : c;
}

/* A new record (zeroed), counted: the last freed pool slot, else an unused one. NULL when the
 * pool is exhausted (pool_bound: it should not be). Under the lock. */
static struct rec *rec_new(struct th_guard *g)
{
    struct rec *r = g->pool_free;
    if (r)
        g->pool_free = r->u.next_free;
    else if (g->pool_used < g->npool)
        r = &g->pool[g->pool_used++];
    if (r) {
        *r = (struct rec){0};
        g->nrecs++;
    }
    return r;
}

static void rec_unref(struct th_guard *g, struct rec *r)
{
    if (r && --r->refs == 0) {
        g->nrecs--;
        if (r->done && r->stored > REC_INLINE) {
            g->rec_bytes -= alloc_cost(r->stored);
            free(r->u.mid);
        }
        r->u.next_free = g->pool_free;
        g->pool_free = r;
    }
}

/* A slot's record (NULL: empty), and the value a slot keeps for r. */
static struct rec *dd_rec(const struct th_guard *g, const struct dslot *s)
{
    return s->rec ? &g->pool[s->rec - 1] : NULL;
}

static uint32_t rec_index(const struct th_guard *g, const struct rec *r)
{
    return (uint32_t)(r - g->pool) + 1;
}

void th_guard_free(struct th_guard *g)
{
    if (!g)
        return;
    while (g->pools) {
        struct gpool *p = g->pools;
        g->pools = p->next;
        th_pg_free(p->pg); /* NULL once its loop has finished (pool_exit) */
        free(p);
    }
    free(g->url);
    free(g->schema);
    for (size_t i = 0; g->dd && g->pool && i < g->ndd; i++)
        rec_unref(g, dd_rec(g, &g->dd[i]));
    free(g->dd);
    if (g->pool)
        munmap(g->pool, g->npool * sizeof *g->pool);
    free(g->people);
    for (int i = 0; i < atomic_load(&g->nrefs); i++)
        free(g->refs[i].body);
    th_hmac_key_free(g->mac);
    pthread_mutex_destroy(&g->mu);
    OPENSSL_cleanse(g->secret, sizeof g->secret);
    free(g);
}

bool th_guard_answer_failed(const struct th_guard *g)
{
    return g->answer_failed;
}

void th_guard_count_block(struct th_guard *g, th_block b)
{
    if (g && b > TH_BLOCK_NONE && b < TH_BLOCK__COUNT)
        atomic_fetch_add(&g->counts[b], 1);
}

void th_guard_counts(struct th_guard *g, uint64_t out[TH_BLOCK__COUNT])
{
    for (int i = 0; i < TH_BLOCK__COUNT; i++)
        out[i] = atomic_load(&g->counts[i]);
}

size_t th_guard_entries(struct th_guard *g)
{
    int64_t now = now_us(g);
    size_t n = 0;
    pthread_mutex_lock(&g->mu);
    for (size_t i = 0; i < g->npeople; i++)
        n += g->people[i].tat_us > now;
    pthread_mutex_unlock(&g->mu);
    return n;
}

void th_guard_dedupe_sizes(struct th_guard *g, size_t *records, size_t *waiters)
{
    pthread_mutex_lock(&g->mu);
    *records = g->nrecs;
    *waiters = g->nwaiters;
    pthread_mutex_unlock(&g->mu);
}

void th_guard_memory(struct th_guard *g, struct th_guard_memory *out)
{
    pthread_mutex_lock(&g->mu);
    *out = (struct th_guard_memory){.people_slots = g->npeople,
                                    .people_bytes = g->npeople * sizeof *g->people,
                                    .dedupe_slots = g->ndd,
                                    .dedupe_bytes = g->ndd * sizeof *g->dd,
                                    .records = g->nrecs,
                                    .record_bytes = g->pool_used * sizeof *g->pool + g->rec_bytes,
                                    .max_entries = g->max_entries};
    pthread_mutex_unlock(&g->mu);
}

/* ---- keys ---- */

/* HMAC(secret, label 0 a 0 b 0 c) truncated: the only form in which personal data is kept. */
static void make_key(const struct th_guard *g, const char *label, const char *a, const char *b,
                     const char *c, unsigned char out[KEY_LEN])
{
    static const char zero = 0;
    a = a ? a : "";
    b = b ? b : "";
    c = c ? c : "";
    const void *parts[] = {label, &zero, a, &zero, b, &zero, c};
    size_t lens[] = {strlen(label), 1, strlen(a), 1, strlen(b), 1, strlen(c)};
    unsigned char mac[32];
    th_hmac_sha256(g->mac, parts, lens, TH_ARRAY_LEN(parts), mac);
    memcpy(out, mac, KEY_LEN);
}

static size_t home(const unsigned char k[KEY_LEN], size_t cap)
{
    size_t h;
    memcpy(&h, k, sizeof h);
    return h & (cap - 1);
}

static slot_key stored_key(const unsigned char k[KEY_LEN])
{
    slot_key v;
    memcpy(&v, k + 8, sizeof v);
    return v;
}

/*
 * The person slot for k (a key of limit kind: PERSON_*): its own, else one to take over. The
 * slot taken is the one whose loss gives back the fewest sends: an empty or stale one (none),
 * else the one whose state is worth the fewest emission intervals of its own limit. A flood of
 * new numbers makes entries worth one send each (at most), so a number whose state is worth more
 * — one at or near its limit — is never pushed out by it; once its state is worth one send or
 * less, forgetting it gives at most that one send back. (Comparing bare TATs instead would let a
 * flood's daily-limit entries, 72 minutes of state each, push out every 15-minute entry.)
 * Never one of taken[0..ntaken): the slots the same check already holds for its other keys (a
 * slot just claimed has no state yet, so it would look the least useful, and two limits would
 * then share one counter).
 */
static struct pslot *person(struct th_guard *g, const unsigned char k[KEY_LEN], int kind,
                            int64_t now, struct pslot *const *taken, int ntaken)
{
    const struct th_rate *rates[] = {&g->phone_short, &g->phone_long, &g->user, NULL};
    size_t h = home(k, g->npeople);
    slot_key sk = (stored_key(k) & ~(slot_key)3) | (slot_key)kind;
    struct pslot *victim = NULL;
    double least = 0;
    for (int i = 0; i < PROBE; i++) {
        struct pslot *s = &g->people[(h + (size_t)i) & (g->npeople - 1)];
        if (s->key == sk)
            return s;
        bool held = false;
        for (int j = 0; j < ntaken; j++)
            held |= taken[j] == s;
        if (held)
            continue;
        const struct th_rate *r = rates[s->key & 3];
        double worth = s->tat_us <= now || !r || r->interval_us <= 0
                           ? 0
                           : (double)(s->tat_us - now) / (double)r->interval_us;
        if (!victim || worth < least) {
            victim = s;
            least = worth;
        }
    }
    victim->key = sk;
    victim->tat_us = 0; /* a fresh start: GCRA state "nothing seen" */
    return victim;
}

/* The calling-code budgets' day: UTC, from midnight to midnight (unix time has no leap seconds). */
static int64_t unix_day(const struct th_guard *g)
{
    return now_ms(g) / 86400000;
}

/* The destination rules: configuration, the same on every node (never shared state). */
static th_block rules_block(const struct th_guard *g, const struct th_phone *ph, th_channel ch)
{
    int ri = region_index(ph->region);
    int code = ph->country_code > 0 && ph->country_code < NCODES ? ph->country_code : 0;
    /* Denied by country or calling code; or, with allow-lists, in none of them. A number of no
     * country (+881, +882, ...: ri is the non-geographic slot) is in no country list. */
    bool listed = g->allow[ri] || g->code_allow[code];
    if (g->deny[ri] || g->code_deny[code] || ((g->have_allow || g->have_code_allow) && !listed))
        return TH_BLOCK_COUNTRY;
    if (g->refuse[ch == TH_CHANNEL_VOICE][ph->type])
        return TH_BLOCK_NUMBER_TYPE;
    return TH_BLOCK_NONE;
}

th_block th_guard_check(struct th_guard *g, const struct th_phone *ph, th_channel ch,
                        const char *user_id)
{
    int ri = region_index(ph->region);
    int code = ph->country_code > 0 && ph->country_code < NCODES ? ph->country_code : 0;
    th_block b = rules_block(g, ph, ch);
    if (b != TH_BLOCK_NONE) {
        atomic_fetch_add(&g->counts[b], 1);
        return b;
    }
    unsigned char kshort[KEY_LEN], klong[KEY_LEN], kuser[KEY_LEN];
    if (g->phone_short.on)
        make_key(g, "phone", ph->e164, NULL, NULL, kshort);
    if (g->phone_long.on)
        make_key(g, "phone-day", ph->e164, NULL, NULL, klong);
    bool has_user = user_id && user_id[0] && g->user.on;
    if (has_user)
        make_key(g, "user", user_id, NULL, NULL, kuser);

    int64_t now = now_us(g);
    /* An override applies as given (0: no sends at all); the default 0 means no budget. */
    bool budgeted = g->code_budget[code] >= 0 || g->code_budget_default > 0;
    long budget = g->code_budget[code] >= 0 ? g->code_budget[code] : g->code_budget_default;
    int64_t day = unix_day(g);

    pthread_mutex_lock(&g->mu);
    /* Phase 1: would every limit let it through? Nothing is written yet. */
    struct pslot *held[2] = {NULL, NULL};
    int nheld = 0;
    struct pslot *ps = g->phone_short.on ? person(g, kshort, PERSON_SHORT, now, held, nheld) : NULL;
    if (ps)
        held[nheld++] = ps;
    struct pslot *pl = g->phone_long.on ? person(g, klong, PERSON_LONG, now, held, nheld) : NULL;
    if (pl)
        held[nheld++] = pl;
    struct pslot *pu = has_user ? person(g, kuser, PERSON_USER, now, held, nheld) : NULL;
    int64_t n_short = 0, n_long = 0, n_user = 0, n_country = 0, n_global = 0;
    long used = g->budget[code].day == day ? g->budget[code].count : 0;
    if (ps && !th_rate_allow(&g->phone_short, ps->tat_us, now, &n_short))
        b = TH_BLOCK_PHONE_SHORT;
    else if (pl && !th_rate_allow(&g->phone_long, pl->tat_us, now, &n_long))
        b = TH_BLOCK_PHONE_LONG;
    else if (pu && !th_rate_allow(&g->user, pu->tat_us, now, &n_user))
        b = TH_BLOCK_USER;
    else if (g->country.on && !th_rate_allow(&g->country, g->country_tat[ri], now, &n_country))
        b = TH_BLOCK_COUNTRY_RATE;
    else if (budgeted && used >= budget)
        b = TH_BLOCK_CODE_BUDGET;
    else if (g->global.on && !th_rate_allow(&g->global, g->global_tat, now, &n_global))
        b = TH_BLOCK_GLOBAL;
    /* Phase 2: all passed: count the send everywhere. */
    if (b == TH_BLOCK_NONE) {
        if (ps)
            ps->tat_us = n_short;
        if (pl)
            pl->tat_us = n_long;
        if (pu)
            pu->tat_us = n_user;
        if (g->country.on)
            g->country_tat[ri] = n_country;
        if (g->global.on)
            g->global_tat = n_global;
        g->budget[code].day = day;
        g->budget[code].count = used + 1;
    }
    pthread_mutex_unlock(&g->mu);
    if (b != TH_BLOCK_NONE)
        atomic_fetch_add(&g->counts[b], 1);
    return b;
}

/* ---- dedupe ---- */

/*
 * The dedupe slot of k, or (create) a slot for it: an empty or expired one, else the one closest
 * to expiry — never avoid, the slot the same request just took for its other key (its record
 * would be freed while the request still stores it in this slot).
 */
static struct dslot *dd_find(struct th_guard *g, const unsigned char k[KEY_LEN], uint32_t now,
                             bool create, const struct dslot *avoid)
{
    size_t h = home(k, g->ndd);
    slot_key sk = stored_key(k);
    struct dslot *victim = NULL;
    for (int i = 0; i < PROBE; i++) {
        struct dslot *s = &g->dd[(h + (size_t)i) & (g->ndd - 1)];
        if (s->rec && s->expire <= now) { /* expired: free the slot on the way */
            rec_unref(g, dd_rec(g, s));
            s->rec = 0;
        }
        if (s->rec && s->key == sk)
            return s;
        if (s != avoid && (!victim || !s->rec || (victim->rec && s->expire < victim->expire)))
            victim = s;
    }
    if (!create || !victim)
        return NULL;
    rec_unref(g, dd_rec(g, victim)); /* full: the record closest to expiry goes */
    victim->rec = 0;
    victim->key = sk;
    return victim;
}

/* Frees a few expired dedupe records per call, so memory follows the live entries instead of
 * waiting for their slots to be probed again. Under the lock. */
static void dd_sweep(struct th_guard *g, uint32_t now)
{
    for (int i = 0; i < 4; i++) {
        struct dslot *s = &g->dd[g->sweep];
        g->sweep = (g->sweep + 1) & (g->ndd - 1);
        if (s->rec && s->expire <= now) {
            rec_unref(g, dd_rec(g, s));
            s->rec = 0;
        }
    }
}

/*
 * Moves the slots' base to now: each expired slot is emptied (its record unreferenced, as
 * dd_find and dd_sweep do), the others keep their end to the millisecond. Once every ~24 days
 * (dd_now), O(ndd) under the lock: for 131,072 slots 0.13 ms keeping 75,000 records, 2-2.5 ms
 * freeing them (bench/guard_cost). A wall clock stepped back before the base rebases too; a
 * window that would then end more than 2^32 ms ahead (a step back of ~49 days) ends there.
 */
static void dd_rebase(struct th_guard *g, int64_t now)
{
    for (size_t i = 0; i < g->ndd; i++) {
        struct dslot *s = &g->dd[i];
        if (!s->rec)
            continue;
        int64_t end = g->dd_base_ms + s->expire;
        if (end <= now) {
            rec_unref(g, dd_rec(g, s));
            s->rec = 0;
        } else {
            s->expire = end - now > UINT32_MAX ? UINT32_MAX : (uint32_t)(end - now);
        }
    }
    g->dd_base_ms = now;
}

/*
 * now (wall ms) as a slot's expire counts it, rebasing first once it is 2^31 ms past the base:
 * a window ends within MAX_WINDOW_MS of its start, so every end then fits in 32 bits. Under the
 * lock.
 */
static uint32_t dd_now(struct th_guard *g, int64_t now)
{
    if (now < g->dd_base_ms || now - g->dd_base_ms > INT32_MAX)
        dd_rebase(g, now);
    return (uint32_t)(now - g->dd_base_ms);
}

/*
 * The middle's plain bytes packed: runs of hex digits — a transactionId's: 32 in a Twilio SID
 * ("SM" and 32) or nginx's request id, 32 in a UUID's 36 characters (an AWS MessageId) — two to
 * a byte. Parts, each opened by a byte h:
 *   h < 0x80           h + 1 bytes as they are;
 *   h & 0x20 (h >= 0x80) a UUID's 32 digits (8-4-4-4-12, the dashes implied): 16 bytes;
 *   else (h >= 0x80)   (h & 0x1f) + MIN_HEX digits, two a byte, high nibble first (an odd count's
 *                      last low nibble is 0);
 * h & 0x40 in the last two: the run's letters are upper-case. A run is of one case (a-f and A-F
 * never mix in it), so the digits come back as they were. Kept only when shorter than the bytes
 * themselves: 32 hex digits take 17 bytes, not 32; a UUID 17, not 36.
 */
#define MIN_HEX  4 /* shorter runs stay plain: 2 digits would take 2 bytes as 2 */
#define MAX_HEX  (MIN_HEX + 0x1f)
#define UUID_LEN 36

/* The plain bytes to pack: a's then b's (the middle around its shared run). */
struct span {
    const char *a, *b;
    size_t na, nb;
};

static int span_at(const struct span *s, size_t i)
{
    return (unsigned char)(i < s->na ? s->a[i] : s->b[i - s->na]);
}

/* c's value as a hex digit, -1 if none; *cs: -1 until a letter sets the run's case (0 lower, 1
 * upper), and a letter of the other case is no digit of this run. */
static int hex_digit(int c, int *cs)
{
    unsigned d = (unsigned)c - '0', l = ((unsigned)c | 0x20) - 'a';
    if (d < 10)
        return (int)d;
    if (l >= 6)
        return -1;
    int up = !(c & 0x20);
    if (*cs >= 0 && *cs != up)
        return -1;
    *cs = up;
    return (int)l + 10;
}

/* Whether a UUID of one case starts at i (*cs: its case). */
static bool is_uuid(const struct span *s, size_t i, size_t n, int *cs)
{
    *cs = -1;
    if (n - i < UUID_LEN || span_at(s, i + 8) != '-')
        return false;
    for (size_t k = 0; k < UUID_LEN; k++) {
        int c = span_at(s, i + k);
        bool dash = k == 8 || k == 13 || k == 18 || k == 23;
        if (dash ? c != '-' : hex_digit(c, cs) < 0)
            return false;
    }
    return true;
}

/* The length of the hex run of one case at i (at most MAX_HEX), or UUID_LEN with *uuid. */
static size_t hex_run(const struct span *s, size_t i, size_t n, bool *uuid, int *cs)
{
    if ((*uuid = is_uuid(s, i, n, cs)))
        return UUID_LEN;
    *cs = -1;
    size_t k = 0;
    while (k < MAX_HEX && i + k < n && hex_digit(span_at(s, i + k), cs) >= 0)
        k++;
    return k;
}

/* Plain bytes [from, to) as parts of at most 128; returns o advanced (out NULL: counts only). */
static size_t pack_plain(const struct span *s, size_t from, size_t to, unsigned char *out, size_t o)
{
    while (from < to) {
        size_t k = to - from < 128 ? to - from : 128;
        if (out) {
            out[o] = (unsigned char)(k - 1);
            for (size_t j = 0; j < k; j++)
                out[o + 1 + j] = (unsigned char)span_at(s, from + j);
        }
        o += 1 + k;
        from += k;
    }
    return o;
}

/* s's n bytes packed into out (NULL: only counted); returns the packed length. */
static size_t pack_hex(const struct span *s, size_t n, unsigned char *out)
{
    size_t o = 0, plain = 0, i = 0;
    while (i < n) {
        bool uuid;
        int cs;
        size_t k = hex_run(s, i, n, &uuid, &cs);
        if (k < MIN_HEX) { /* past a short run that ended at a byte no run takes */
            int c = -1;
            i += k > 0 && (i + k == n || hex_digit(span_at(s, i + k), &c) < 0) ? k : 1;
            continue;
        }
        o = pack_plain(s, plain, i, out, o);
        if (out) {
            out[o] = (unsigned char)(0x80 | (cs == 1 ? 0x40 : 0) |
                                     (uuid ? 0x20 : (unsigned)(k - MIN_HEX)));
            size_t nib = 0;
            for (size_t j = 0; j < k; j++) {
                int v = hex_digit(span_at(s, i + j), &cs);
                if (v < 0) /* a UUID's dash */
                    continue;
                unsigned char *b = &out[o + 1 + nib / 2];
                *b = nib & 1 ? (unsigned char)(*b | v) : (unsigned char)(v << 4);
                nib++;
            }
        }
        o += 1 + (uuid ? 16 : (k + 1) / 2);
        i += k;
        plain = i;
    }
    return pack_plain(s, plain, n, out, o);
}

/* pack_hex's n bytes unpacked into out; returns the bytes written. */
static size_t unpack_hex(const unsigned char *in, size_t n, char *out)
{
    size_t o = 0;
    for (size_t i = 0; i < n;) {
        unsigned h = in[i++];
        if (h < 0x80) {
            memcpy(out + o, in + i, h + 1);
            o += h + 1;
            i += h + 1;
            continue;
        }
        const char *digits = h & 0x40 ? "0123456789ABCDEF" : "0123456789abcdef";
        bool uuid = h & 0x20;
        size_t k = uuid ? 32 : (h & 0x1f) + MIN_HEX;
        for (size_t j = 0; j < k; j++) {
            if (uuid && (j == 8 || j == 12 || j == 16 || j == 20))
                out[o++] = '-';
            unsigned v = in[i + j / 2];
            out[o++] = digits[j & 1 ? v & 15 : v >> 4];
        }
        i += (k + 1) / 2;
    }
    return o;
}

/* The answer r keeps (done), rebuilt from its reference. Under the lock. */
static void copy_answer(const struct th_guard *g, const struct rec *r, struct th_dedupe_answer *a)
{
    a->status = r->status;
    a->len = r->len;
    a->body = malloc((size_t)r->len + 1);
    if (a->body) {
        const struct answer_ref *ref = &g->refs[r->ref];
        size_t mid = (size_t)(r->len - r->pre - r->suf), nkept = r->stored;
        const char *kept = nkept > REC_INLINE ? r->u.mid : r->u.in;
        char *o = a->body + r->pre;
        if (r->pre)
            memcpy(a->body, ref->body, r->pre);
        struct mid_run h = {0, 0, 0};
        if (r->run) {
            size_t n = run_get((const unsigned char *)kept, r->pre, &h);
            kept += n;
            nkept -= n;
        }
        /* the bytes before the run and after it, together; then the run between them */
        if (r->packed)
            unpack_hex((const unsigned char *)kept, nkept, o);
        else if (nkept)
            memcpy(o, kept, nkept);
        if (r->run) {
            memmove(o + h.at + h.len, o + h.at, mid - h.at - h.len);
            memcpy(o + h.at, ref->body + h.ref_at, h.len);
        }
        if (r->suf)
            memcpy(o + mid, ref->body + ref->len - r->suf, r->suf);
        a->body[r->len] = '\0';
    }
}

/* The bytes body shares with ref at its start (*pre) and then at its end (*suf). */
static void shared_ends(const struct answer_ref *ref, const char *body, size_t len, size_t *pre,
                        size_t *suf)
{
    size_t n = len < ref->len ? len : ref->len, p = 0, s = 0;
    while (p < n && body[p] == ref->body[p])
        p++;
    while (s < n - p && body[len - 1 - s] == ref->body[ref->len - 1 - s])
        s++;
    *pre = p;
    *suf = s;
}

/*
 * How the answer (body, len) is stored: the reference it shares most with (*ref, *pre, *suf) and
 * the bytes in between. Reads the references without the lock (they never change once
 * published); when none shares half of it and there is room, *new_ref is a copy of it to make a
 * reference of (under the lock, by the caller). Returns the middle bytes, malloc'ed (NULL when
 * there are none, or no memory: *ok false then).
 */
/*
 * The longest run body's middle [pre, len - suf) shares with ref's middle at the same distance
 * from the start, or from the end, or from their first or last quote: values of the same length,
 * or of the same length counted from the end, or ending (starting) at a quote whatever their
 * lengths (a UUID where the reference has 32 digits) leave the bytes between them aligned.
 * O(middle): four alignments, no search.
 */
static struct mid_run find_run(const struct answer_ref *ref, const char *body, size_t len,
                               size_t pre, size_t suf)
{
    struct mid_run best = {0, 0, 0};
    if (ref->len < pre + suf) /* suf was measured within min(len, ref->len) - pre */
        return best;
    long bm = (long)(len - pre - suf), rm = (long)(ref->len - pre - suf);
    /* the alignments tried: the starts', the ends', and the first and the last quotes' (a JSON
     * value's end and the next one's start: the bytes between two values of other lengths) */
    const char *bmid = body + pre, *rmid = ref->body + pre;
    const char *qb = memchr(bmid, '"', (size_t)bm), *qr = memchr(rmid, '"', (size_t)rm);
    const char *lb = memrchr(bmid, '"', (size_t)bm), *lr = memrchr(rmid, '"', (size_t)rm);
    long shifts[4] = {0, bm - rm, qb && qr ? (qb - bmid) - (qr - rmid) : 0,
                      lb && lr ? (lb - bmid) - (lr - rmid) : 0};
    for (int d = 0; d < 4; d++) {
        long shift = shifts[d]; /* the body's byte i is the reference's i - shift */
        bool tried = false;
        for (int e = 0; e < d; e++)
            tried |= shifts[e] == shift;
        if (tried)
            continue;
        size_t run = 0;
        for (long i = shift > 0 ? shift : 0;; i++) {
            bool in = i < bm && i - shift < rm;
            if (in && body[pre + (size_t)i] == ref->body[pre + (size_t)(i - shift)]) {
                run++;
                continue;
            }
            if (run > best.len) /* the run ended before byte i */
                best = (struct mid_run){(uint16_t)((size_t)i - run),
                                        (uint16_t)(pre + (size_t)(i - shift) - run), (uint16_t)run};
            run = 0;
            if (!in)
                break;
        }
    }
    return best;
}

/* How an answer's middle [pre, len - suf) is kept: its run of ref's (none: h.len 0), the other
 * bytes (sp), packed or not, and the bytes it takes. ref NULL: no reference yet. */
struct layout {
    struct mid_run h;
    struct span sp;
    bool packed;
    size_t stored;
};

static struct layout lay_out(const struct answer_ref *ref, const char *body, size_t len, size_t pre,
                             size_t suf)
{
    struct layout l = {{0, 0, 0}, {NULL, NULL, 0, 0}, false, 0};
    size_t mid = len - pre - suf;
    if (ref && mid >= MIN_RUN)
        l.h = find_run(ref, body, len, pre, suf);
    if (l.h.len < MIN_RUN)
        l.h = (struct mid_run){0, 0, 0};
    const char *m = body + pre;
    l.sp = (struct span){m, m + l.h.at + l.h.len, l.h.at, mid - l.h.at - l.h.len};
    size_t plain = l.sp.na + l.sp.nb;
    size_t npacked = plain >= MIN_HEX ? pack_hex(&l.sp, plain, NULL) : plain;
    l.packed = npacked < plain;
    l.stored = (l.h.len ? run_put(&l.h, pre, NULL) : 0) + (l.packed ? npacked : plain);
    return l;
}

static bool hex_or_dash(int c)
{
    int cs = -1;
    return c == '-' || hex_digit(c, &cs) >= 0;
}

/* Moves *pre back to the start of a UUID it cuts into, and *suf to the end of one. */
static void uuid_whole(const char *body, size_t len, size_t *pre, size_t *suf)
{
    struct span s = {body, NULL, len, 0};
    int cs;
    if (*pre > 0 && *pre < len && hex_or_dash((unsigned char)body[*pre - 1]) &&
        hex_or_dash((unsigned char)body[*pre]))
        for (size_t k = 1; k < UUID_LEN && k <= *pre; k++)
            if (is_uuid(&s, *pre - k, len, &cs)) {
                *pre -= k;
                break;
            }
    size_t end = len - *suf;
    if (*suf > 0 && end > *pre && hex_or_dash((unsigned char)body[end]) &&
        hex_or_dash((unsigned char)body[end - 1]))
        for (size_t k = 1; k < UUID_LEN && k <= *suf; k++)
            if (end + k >= *pre + UUID_LEN && is_uuid(&s, end + k - UUID_LEN, len, &cs)) {
                *suf -= k;
                break;
            }
}

/* Returns the middle as kept (*stored bytes: a struct mid_run when *run, then the other bytes,
 * packed when *packed): in small when it fits REC_INLINE, else malloc'ed (NULL without memory:
 * *ok false then). */
static char *encode_answer(struct th_guard *g, const char *body, size_t len, int *ref, size_t *pre,
                           size_t *suf, char **new_ref, bool *ok, bool *run, bool *packed,
                           size_t *stored, char small[REC_INLINE])
{
    int n = atomic_load_explicit(&g->nrefs, memory_order_acquire);
    int hint = atomic_load_explicit(&g->last_ref, memory_order_relaxed);
    size_t best = 0;
    *ref = 0;
    *pre = *suf = 0;
    *new_ref = NULL;
    *ok = true;
    for (int k = -1; k < n; k++) { /* the last reference matched first: usually the one */
        int i = k < 0 ? hint : k;
        if (i >= n || (k >= 0 && i == hint))
            continue;
        size_t p, s;
        shared_ends(&g->refs[i], body, len, &p, &s);
        if (p + s > best) {
            best = p + s;
            *ref = i;
            *pre = p;
            *suf = s;
        }
        if (best >= len / 2)
            break;
    }
    if (best < len / 2 && n < NREFS && len >= 32) {
        *new_ref = malloc(len);
        if (*new_ref)
            memcpy(*new_ref, body, len);
    }
    if (best > 0)
        atomic_store_explicit(&g->last_ref, *ref, memory_order_relaxed);
    struct layout l = lay_out(n > 0 ? &g->refs[*ref] : NULL, body, len, *pre, *suf);
    /* a UUID the shared ends cut into packs badly (its dashes break the digits into runs):
     * the same answer with the ends moved off it, when that keeps fewer bytes */
    size_t pre2 = *pre, suf2 = *suf;
    uuid_whole(body, len, &pre2, &suf2);
    if (pre2 != *pre || suf2 != *suf) {
        struct layout l2 = lay_out(n > 0 ? &g->refs[*ref] : NULL, body, len, pre2, suf2);
        if (l2.stored < l.stored) {
            l = l2;
            *pre = pre2;
            *suf = suf2;
        }
    }
    struct mid_run h = l.h;
    struct span sp = l.sp;
    size_t plain = sp.na + sp.nb;
    *run = h.len > 0;
    *packed = l.packed;
    *stored = l.stored;
    char *out = *stored <= REC_INLINE ? small : malloc(*stored);
    if (!out) {
        *ok = false;
        return NULL;
    }
    char *o = out;
    if (*run)
        o += run_put(&h, *pre, (unsigned char *)o);
    if (*packed) {
        pack_hex(&sp, plain, (unsigned char *)o);
    } else if (plain) {
        memcpy(o, sp.a, sp.na);
        memcpy(o + sp.na, sp.b, sp.nb);
    }
    return out;
}

th_dedupe_state th_guard_dedupe_begin(struct th_guard *g, const char *event_id, const char *e164,
                                      const char *otp, th_channel ch, int64_t expires_ms,
                                      struct th_dedupe **ticket, struct th_dedupe_answer *answer)
{
    *ticket = NULL;
    if (!g->dedupe)
        return TH_DEDUPE_OFF;
    unsigned char ke[KEY_LEN], kp[KEY_LEN];
    bool has_event = event_id && event_id[0];
    if (has_event)
        make_key(g, "event", event_id, NULL, NULL, ke);
    make_key(g, "otp", e164, otp, th_channel_name(ch), kp);

    struct th_dedupe *t = calloc(1, sizeof *t);
    if (!t)
        return TH_DEDUPE_OFF; /* out of memory: send rather than lose the code */
    pthread_mutex_lock(&g->mu);
    /* the time under the lock: a thread that read it before another rebased would find it
     * behind the base and rebase again */
    int64_t now_wall = now_ms(g);
    int64_t until = expires_ms > now_wall ? expires_ms : now_wall + DEFAULT_WINDOW_MS;
    if (until > now_wall + MAX_WINDOW_MS)
        until = now_wall + MAX_WINDOW_MS;
    uint32_t now = dd_now(g, now_wall), end = (uint32_t)(until - g->dd_base_ms);
    dd_sweep(g, now);
    struct dslot *se = has_event ? dd_find(g, ke, now, false, NULL) : NULL;
    struct dslot *sp = dd_find(g, kp, now, false, NULL);
    struct rec *r = se ? dd_rec(g, se) : sp ? dd_rec(g, sp) : NULL;
    th_dedupe_state st;
    if (r) {
        st = r->done ? TH_DEDUPE_DONE : TH_DEDUPE_PENDING;
        if (r->done)
            copy_answer(g, r, answer);
    } else {
        st = TH_DEDUPE_FIRST;
        /* the slots first: a record they evict gives its pool slot to the new one */
        struct dslot *a = has_event ? dd_find(g, ke, now, true, NULL) : NULL;
        struct dslot *b = dd_find(g, kp, now, true, a);
        r = rec_new(g);
        if (r && a) {
            a->rec = rec_index(g, r);
            a->expire = end;
            r->refs++;
        }
        if (r && b) {
            b->rec = rec_index(g, r);
            b->expire = end;
            r->refs++;
        }
    }
    if (r && st != TH_DEDUPE_DONE) {
        r->refs++; /* the ticket's */
        t->rec = r;
        t->first = st == TH_DEDUPE_FIRST;
    }
    pthread_mutex_unlock(&g->mu);
    if (st == TH_DEDUPE_DONE || !r) {
        free(t);
        if (st == TH_DEDUPE_DONE)
            atomic_fetch_add(&g->counts[TH_BLOCK_NONE], 1);
        return r ? st : TH_DEDUPE_OFF;
    }
    if (st == TH_DEDUPE_PENDING)
        atomic_fetch_add(&g->counts[TH_BLOCK_NONE], 1);
    *ticket = t;
    return st;
}

/*
 * Wakes every waiter of r through its own loop. Under the lock: the post happens before a
 * waiter's release can look, so a release that finds its ticket unlinked knows the wake is
 * queued on its loop (or was cancelled: the loop has finished) and withdraws it.
 */
static void wake_waiters(struct th_guard *g, struct rec *r)
{
    while (r->u.waiters) {
        struct th_dedupe *w = r->u.waiters;
        r->u.waiters = w->next;
        w->prev = w->next = NULL;
        w->waiting = false;
        th_loop_call_post(&w->wake);
    }
    g->nwaiters -= (size_t)r->nwaiters;
    r->nwaiters = 0;
}

static void shared_finish(struct th_dedupe *t, int status, const char *body, size_t len);
static void shared_release(struct th_dedupe *t);
static void shared_wait(struct th_dedupe *t, th_loop_fn fn, void *ud);

void th_guard_dedupe_finish(struct th_guard *g, struct th_dedupe *t, int status, const char *body,
                            size_t len)
{
    if (!t)
        return;
    if (t->pool) {
        shared_finish(t, status, body, len);
        return;
    }
    /* The answer's encoding is worked out before the lock: only its storing is under it. */
    int ref = 0;
    size_t pre = 0, suf = 0;
    char *new_ref = NULL, *kept = NULL, small[REC_INLINE];
    bool ok = len <= DEDUPE_ANSWER_MAX, run = false, packed = false;
    size_t stored = 0;
    if (ok)
        kept = encode_answer(g, body, len, &ref, &pre, &suf, &new_ref, &ok, &run, &packed, &stored,
                             small);
    pthread_mutex_lock(&g->mu);
    struct rec *r = t->rec;
    wake_waiters(g, r); /* before the answer takes the waiters' place (r->u) */
    int n = atomic_load_explicit(&g->nrefs, memory_order_relaxed);
    if (ok && new_ref && n < NREFS) { /* a reference of itself: nothing in between to keep */
        g->refs[n] = (struct answer_ref){new_ref, len};
        g->rec_bytes += alloc_cost(len);
        atomic_store_explicit(&g->nrefs, n + 1, memory_order_release);
        new_ref = NULL;
        if (kept != small)
            free(kept);
        kept = NULL;
        ref = n;
        pre = len;
        suf = 0;
        run = packed = false;
        stored = 0;
    }
    r->status = (uint16_t)status;
    if (ok) {
        r->len = (uint16_t)len;
        r->pre = (uint16_t)pre;
        r->suf = (uint16_t)suf;
        r->ref = (uint8_t)ref & 7;
        r->run = run;
        r->packed = packed;
        r->stored = (uint16_t)stored;
        if (stored > REC_INLINE) { /* the record owns the malloc'ed middle now */
            r->u.mid = kept;
            g->rec_bytes += alloc_cost(stored);
        } else if (stored) {
            memcpy(r->u.in, kept, stored);
        }
    }
    r->done = ok;
    r->abandoned = !ok;
    rec_unref(g, r);
    pthread_mutex_unlock(&g->mu);
    free(new_ref); /* another thread took the last reference slot meanwhile */
    free(t);
}

th_dedupe_state th_guard_dedupe_poll(struct th_guard *g, struct th_dedupe *t,
                                     struct th_dedupe_answer *answer)
{
    if (t->pool) {
        if (!t->done)
            return TH_DEDUPE_PENDING;
        answer->status = t->status;
        answer->len = t->len;
        answer->body = strndup(t->body ? t->body : "", t->len);
        return TH_DEDUPE_DONE;
    }
    pthread_mutex_lock(&g->mu);
    bool done = t->rec->done;
    if (done)
        copy_answer(g, t->rec, answer);
    pthread_mutex_unlock(&g->mu);
    return done ? TH_DEDUPE_DONE : TH_DEDUPE_PENDING;
}

th_err th_guard_dedupe_wait(struct th_guard *g, struct th_dedupe *t, struct th_loop *loop,
                            th_loop_fn fn, void *ud)
{
    if (t->pool) {
        if (t->first || t->fn)
            return TH_E_INVAL;
        shared_wait(t, fn, ud);
        return TH_E_OK;
    }
    th_loop_call_init(&t->wake, loop, fn, NULL, ud);
    pthread_mutex_lock(&g->mu);
    struct rec *r = t->rec;
    th_err e = TH_E_OK;
    if (t->first || t->waiting) {
        e = TH_E_INVAL;
    } else if (r->done || r->abandoned) { /* finished between begin and now: wake at once */
        th_loop_call_post(&t->wake);
    } else if (r->nwaiters >= MAX_WAITERS) {
        e = TH_E_OVERLOAD;
    } else {
        t->next = r->u.waiters;
        if (r->u.waiters)
            r->u.waiters->prev = t;
        r->u.waiters = t;
        r->nwaiters++;
        g->nwaiters++;
        t->waiting = true;
    }
    pthread_mutex_unlock(&g->mu);
    return e;
}

void th_guard_dedupe_release(struct th_guard *g, struct th_dedupe *t)
{
    if (!t)
        return;
    if (t->pool) {
        shared_release(t);
        return;
    }
    pthread_mutex_lock(&g->mu);
    struct rec *r = t->rec;
    if (t->first) { /* no answer will come: the waiters decide at their deadlines */
        r->abandoned = true;
        wake_waiters(g, r);
    } else if (t->waiting) { /* not woken yet: unregister, no callback */
        if (t->prev)
            t->prev->next = t->next;
        else
            r->u.waiters = t->next;
        if (t->next)
            t->next->prev = t->prev;
        r->nwaiters--;
        g->nwaiters--;
        t->waiting = false;
    } else { /* woken (or never waiting): a wake still queued on our loop is taken back */
        th_loop_call_withdraw(&t->wake);
    }
    rec_unref(g, r);
    pthread_mutex_unlock(&g->mu);
    free(t);
}

/* ---- the shared state (several nodes on one PostgreSQL) ---- */

/*
 * The guard's schema, applied by every new connection before it takes queries: idempotent, and
 * under a transaction-level advisory lock so nodes starting together migrate once. The version
 * lives in guard_schema_version (the store's own migrations keep theirs apart).
 *
 * guard_decide() is the hot path's one round trip. Dedupe first: a live row under either key
 * (eventId, or number + code + channel) answers DONE or PENDING; else this request inserts its
 * rows, and the unique key decides between two nodes inserting at once (the loser takes its
 * own rows back and is a duplicate). A PENDING duplicate marks the row (waited) so that its
 * first's finish notifies: the mark is an UPDATE of a row still in state 0, so it serialises
 * with the finish on the row lock; when the finish won, nothing is marked and the row is read
 * again (DONE). Finishes nobody waits for notify nobody (version 2: before it, every finish
 * woke every node's listeners). Then the limits: GCRA rows (key, tat) and the budget row of
 * (calling code, UTC day), created if missing and locked in one order (rates by key, then the
 * budget; INSERT … ON CONFLICT DO UPDATE … WHERE false locks a row that exists without writing
 * it) so concurrent requests serialise on the rows they share and cannot deadlock; then read in
 * one statement, decided in arrays, written back in one. A request is counted everywhere only
 * when every limit lets it through, as in memory.
 *
 * The purge (every minute, one node at a time) never waits for a row lock (SKIP LOCKED) and
 * leaves rate rows touched in the last minute: version 1 deleted the global and country rows
 * too (their tat trails the clock by microseconds), holding them until its commit while it
 * waited for a row a decision held — a deadlock PostgreSQL breaks after deadlock_timeout (1 s),
 * every decision of every node stalled meanwhile (measured: p99 436–446 ms at half load).
 *
 * Version 2 keeps guard_decide()'s signature and answers: a node of version 1 (which stops at
 * "version >= 1") calls it unchanged, and its finishes still notify every row (harmless).
 */
static const char *const schema_lines[] = {
    "DO $mig$ BEGIN\n",
    "PERFORM pg_advisory_xact_lock(7246175001);\n",
    "CREATE TABLE IF NOT EXISTS guard_schema_version (version int NOT NULL);\n",
    "IF coalesce((SELECT max(version) FROM guard_schema_version), 0) >= 2 THEN RETURN; END IF;\n",
    "IF coalesce((SELECT max(version) FROM guard_schema_version), 0) < 1 THEN\n",
    "CREATE TABLE guard_dedupe (key bytea PRIMARY KEY, state smallint NOT NULL, status int,\n",
    "  answer text, expires_ms bigint NOT NULL);\n",
    "CREATE TABLE guard_rate (key bytea PRIMARY KEY, tat_us bigint NOT NULL);\n",
    "CREATE TABLE guard_budget (key bytea NOT NULL, day int NOT NULL, used bigint NOT NULL,\n",
    "  PRIMARY KEY (key, day));\n",
    "CREATE OR REPLACE FUNCTION guard_purge(p_now_us bigint) RETURNS bigint\n",
    "LANGUAGE plpgsql AS $f$\n",
    "DECLARE n bigint := 0; m bigint;\n",
    "BEGIN\n",
    "  IF NOT pg_try_advisory_xact_lock(7246175002) THEN RETURN -1; END IF;\n",
    "  DELETE FROM guard_dedupe WHERE expires_ms <= p_now_us / 1000;\n",
    "  GET DIAGNOSTICS n = ROW_COUNT;\n",
    "  DELETE FROM guard_rate WHERE tat_us <= p_now_us;\n",
    "  GET DIAGNOSTICS m = ROW_COUNT; n := n + m;\n",
    "  DELETE FROM guard_budget WHERE day < (p_now_us / 86400000000)::int - 1;\n",
    "  GET DIAGNOSTICS m = ROW_COUNT;\n",
    "  RETURN n + m;\n",
    "END $f$;\n",
    "INSERT INTO guard_schema_version VALUES (1);\n",
    "END IF;\n",
    "ALTER TABLE guard_dedupe ADD COLUMN IF NOT EXISTS waited boolean NOT NULL DEFAULT false;\n",
    "CREATE OR REPLACE FUNCTION guard_decide(p_keys text[], p_expires_ms bigint, p_now_us "
    "bigint,\n",
    "  p_rkeys text[], p_rint bigint[], p_rtol bigint[], p_rblock text[], p_bkey text,\n",
    "  p_budget bigint)\n",
    "RETURNS TABLE(verdict text, block text, status int, answer text) LANGUAGE plpgsql AS $f$\n",
    "DECLARE\n",
    "  now_ms bigint := p_now_us / 1000;\n",
    "  v_day int := (p_now_us / 86400000000)::int;\n",
    "  dk bytea[] := ARRAY(SELECT decode(k, 'hex') FROM unnest(p_keys) k);\n",
    "  rk bytea[] := ARRAY(SELECT decode(k, 'hex') FROM unnest(p_rkeys) k);\n",
    "  bk bytea := decode(p_bkey, 'hex');\n",
    "  mine bytea[]; d record; ks bytea[]; ts bigint[]; nexts bigint[] := '{}'; t bigint;\n",
    "  v_used bigint; blk text := 'none'; budget_seen boolean := false;\n",
    "BEGIN\n",
    "  IF cardinality(dk) > 0 THEN\n",
    "    FOR attempt IN 1 .. 3 LOOP\n",
    "      SELECT g.state, g.status, g.answer INTO d FROM guard_dedupe g\n",
    "        WHERE g.key = ANY(dk) AND g.expires_ms > now_ms ORDER BY g.state DESC LIMIT 1;\n",
    "      IF FOUND THEN\n",
    "        IF d.state = 1 THEN\n",
    "          RETURN QUERY SELECT 'done'::text, 'none'::text, d.status, d.answer;\n",
    "          RETURN;\n",
    "        END IF;\n",
    "        UPDATE guard_dedupe g SET waited = true\n",
    "          WHERE g.key = ANY(dk) AND g.state = 0 AND g.expires_ms > now_ms;\n",
    "        IF FOUND THEN\n",
    "          RETURN QUERY SELECT 'pending'::text, 'none'::text, NULL::int, NULL::text;\n",
    "          RETURN;\n",
    "        END IF;\n",
    "        CONTINUE;\n",
    "      END IF;\n",
    "      WITH ins AS (INSERT INTO guard_dedupe AS g (key, state, expires_ms)\n",
    "          SELECT k, 0, p_expires_ms FROM unnest(dk) AS k ORDER BY k\n",
    "          ON CONFLICT (key) DO UPDATE SET state = 0, status = NULL, answer = NULL,\n",
    "            waited = false, expires_ms = excluded.expires_ms WHERE g.expires_ms <= now_ms\n",
    "          RETURNING g.key)\n",
    "      SELECT array_agg(ins.key) INTO mine FROM ins;\n",
    "      EXIT WHEN coalesce(cardinality(mine), 0) = cardinality(dk);\n",
    "      DELETE FROM guard_dedupe g WHERE g.key = ANY(coalesce(mine, '{}'));\n",
    "      mine := NULL;\n",
    "    END LOOP;\n",
    "    IF coalesce(cardinality(mine), 0) < cardinality(dk) THEN\n",
    "      RETURN QUERY SELECT 'pending'::text, 'none'::text, NULL::int, NULL::text;\n",
    "      RETURN;\n",
    "    END IF;\n",
    "  END IF;\n",
    "  IF cardinality(rk) > 0 THEN\n",
    "    INSERT INTO guard_rate AS r (key, tat_us) SELECT k, 0 FROM unnest(rk) k ORDER BY k\n",
    "      ON CONFLICT (key) DO UPDATE SET tat_us = r.tat_us WHERE false;\n",
    "  END IF;\n",
    "  IF p_budget >= 0 THEN\n",
    "    INSERT INTO guard_budget AS b (key, day, used) VALUES (bk, v_day, 0)\n",
    "      ON CONFLICT (key, day) DO UPDATE SET used = b.used WHERE false;\n",
    "  END IF;\n",
    "  SELECT array_agg(r.key), array_agg(r.tat_us),\n",
    "      (SELECT b.used FROM guard_budget b WHERE b.key = bk AND b.day = v_day)\n",
    "    INTO ks, ts, v_used FROM guard_rate r WHERE r.key = ANY(rk);\n",
    "  v_used := coalesce(v_used, 0);\n",
    "  FOR i IN 1 .. cardinality(rk) LOOP\n",
    "    IF p_rblock[i] = 'global_rate' AND p_budget >= 0 THEN\n",
    "      budget_seen := true;\n",
    "      IF v_used >= p_budget THEN blk := 'calling_code_budget'; EXIT; END IF;\n",
    "    END IF;\n",
    "    t := ts[array_position(ks, rk[i])];\n",
    "    IF t < p_now_us THEN t := p_now_us; END IF;\n",
    "    IF t - p_now_us > p_rtol[i] THEN blk := p_rblock[i]; EXIT; END IF;\n",
    "    nexts[i] := t + p_rint[i];\n",
    "  END LOOP;\n",
    "  IF blk = 'none' AND p_budget >= 0 AND NOT budget_seen AND v_used >= p_budget THEN\n",
    "    blk := 'calling_code_budget';\n",
    "  END IF;\n",
    "  IF blk = 'none' THEN\n",
    "    WITH b AS (UPDATE guard_budget b SET used = b.used + 1\n",
    "        WHERE p_budget >= 0 AND b.key = bk AND b.day = v_day)\n",
    "    UPDATE guard_rate r SET tat_us = n.tat FROM unnest(rk, nexts) AS n(key, tat)\n",
    "      WHERE r.key = n.key;\n",
    "  END IF;\n",
    "  RETURN QUERY SELECT CASE WHEN cardinality(dk) > 0 THEN 'first' ELSE 'off' END, blk,\n",
    "    NULL::int, NULL::text;\n",
    "END $f$;\n",
    "CREATE OR REPLACE FUNCTION guard_purge(p_now_us bigint) RETURNS bigint\n",
    "LANGUAGE plpgsql AS $f$\n",
    "DECLARE n bigint := 0; m bigint;\n",
    "BEGIN\n",
    "  IF NOT pg_try_advisory_xact_lock(7246175002) THEN RETURN -1; END IF;\n",
    "  DELETE FROM guard_dedupe WHERE ctid = ANY(ARRAY(SELECT ctid FROM guard_dedupe\n",
    "    WHERE expires_ms <= p_now_us / 1000 FOR UPDATE SKIP LOCKED));\n",
    "  GET DIAGNOSTICS n = ROW_COUNT;\n",
    "  DELETE FROM guard_rate WHERE ctid = ANY(ARRAY(SELECT ctid FROM guard_rate\n",
    "    WHERE tat_us <= p_now_us - 60000000 FOR UPDATE SKIP LOCKED));\n",
    "  GET DIAGNOSTICS m = ROW_COUNT; n := n + m;\n",
    "  DELETE FROM guard_budget WHERE ctid = ANY(ARRAY(SELECT ctid FROM guard_budget\n",
    "    WHERE day < (p_now_us / 86400000000)::int - 1 FOR UPDATE SKIP LOCKED));\n",
    "  GET DIAGNOSTICS m = ROW_COUNT;\n",
    "  RETURN n + m;\n",
    "END $f$;\n",
    "INSERT INTO guard_schema_version VALUES (2);\n",
    "END $mig$;",
};

static char *schema_join(void)
{
    size_t n = 1;
    for (size_t i = 0; i < TH_ARRAY_LEN(schema_lines); i++)
        n += strlen(schema_lines[i]);
    char *out = malloc(n), *cur = out;
    for (size_t i = 0; out && i < TH_ARRAY_LEN(schema_lines); i++)
        cur = stpcpy(cur, schema_lines[i]);
    return out;
}

#define KEYS_SQL "ARRAY(SELECT decode(k, 'hex') FROM unnest($1::text[]) k)"

static const struct th_pg_stmt guard_stmts[] = {
    {"guard_decide",
     "SELECT verdict, block, status, answer FROM guard_decide($1::text[], $2::bigint, "
     "$3::bigint, $4::text[], $5::bigint[], $6::bigint[], $7::text[], $8::text, $9::bigint)",
     9},
    /* answers stored, a batch of them (send_finishes): $1 every ticket's keys, $4 each key's
     * ticket (1-based), $2 and $3 each ticket's status and answer; the waiters on every node
     * told (LISTEN guard_done) only when a duplicate marked the row: waited is read on the row
     * this UPDATE locked, so a mark that committed first is seen, and a mark after it finds
     * state = 1 and reads the answer */
    {"guard_finish_batch",
     "WITH u AS (UPDATE guard_dedupe SET state = 1, "
     "status = ($2::int[])[($4::int[])[array_position(" KEYS_SQL ", key)]], "
     "answer = ($3::text[])[($4::int[])[array_position(" KEYS_SQL ", key)]] "
     "WHERE key = ANY(" KEYS_SQL ") AND state = 0 RETURNING key, waited) "
     "SELECT pg_notify('guard_done', encode(key, 'hex')) FROM u WHERE u.waited",
     4},
    {"guard_abandon",
     "WITH d AS (DELETE FROM guard_dedupe WHERE key = ANY(" KEYS_SQL ") AND state = 0 "
     "RETURNING key, waited) SELECT pg_notify('guard_done', encode(key, 'hex')) FROM d "
     "WHERE d.waited",
     1},
    {"guard_poll",
     "SELECT state, status, answer FROM guard_dedupe WHERE key = ANY(" KEYS_SQL
     ") AND expires_ms > $2::bigint ORDER BY state DESC LIMIT 1",
     2},
    {"guard_purge", "SELECT guard_purge($1::bigint)", 1},
};

#define DB_WAIT_MS       500   /* a statement off the hot path (an answer stored, a wait) */
#define FINISH_BATCH     64    /* answers stored per statement at most */
#define FINISH_QUEUE_MAX 4096  /* answers waiting to be stored on one loop at most */
#define PURGE_EVERY_MS   60000 /* expired rows are deleted this often, by one node at a time */

bool th_guard_shared(const struct th_guard *g)
{
    return g->url != NULL;
}

bool th_guard_ready(struct th_guard *g)
{
    if (!g->url)
        return true;
    pthread_mutex_lock(&g->mu);
    bool ready = true;
    for (struct gpool *p = g->pools; p; p = p->next) {
        bool up = atomic_load(&p->up) > 0;
        p->was_up |= up;
        ready = ready && (g->closed ? up : p->was_up || atomic_load(&p->failed) > 0);
    }
    pthread_mutex_unlock(&g->mu);
    return ready;
}

void th_guard_db_stats(struct th_guard *g, struct th_guard_db_stats *out)
{
    out->decisions = atomic_load(&g->decisions);
    out->statements = atomic_load(&g->statements);
    out->fallbacks = atomic_load(&g->fallbacks);
    out->refused = atomic_load(&g->refused);
    out->notified = atomic_load(&g->notified);
    out->connections = 0;
    pthread_mutex_lock(&g->mu);
    for (struct gpool *p = g->pools; p; p = p->next)
        out->connections += atomic_load(&p->up);
    pthread_mutex_unlock(&g->mu);
}

/* Wall time in µs: the shared limits compare times taken on different nodes (NTP-synchronised
 * clocks; a skew of s ms lets a window's edge move by s ms). A test clock stands for it. */
static int64_t wall_us(const struct th_guard *g)
{
    if (g->clock)
        return g->clock(g->clock_ud);
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (int64_t)ts.tv_sec * 1000000 + ts.tv_nsec / 1000;
}

static void exec_counted(struct gpool *p, struct th_pg_query *q)
{
    atomic_fetch_add(&p->g->statements, 1);
    th_pg_exec(p->pg, q);
}

static void on_purged(void *ud, const struct th_pg_result *res)
{
    struct gpool *p = ud;
    p->purging = false;
}

static void on_purge_timer(void *ud)
{
    struct gpool *p = ud;
    if (!p->pg)
        return;
    th_loop_timer_set(p->loop, &p->purge, th_mono_us() + PURGE_EVERY_MS * 1000LL, on_purge_timer,
                      p);
    if (p->purging)
        return;
    snprintf(p->pbuf, sizeof p->pbuf, "%lld", (long long)wall_us(p->g));
    p->pparams[0] = p->pbuf;
    p->pq = (struct th_pg_query){.stmt = "guard_purge",
                                 .nparams = 1,
                                 .params = p->pparams,
                                 .deadline_us = th_mono_us() + 5000000,
                                 .done = on_purged,
                                 .ud = p};
    p->purging = true;
    exec_counted(p, &p->pq);
}

static void on_poll_timer(void *ud);
static void free_finishes(struct th_dedupe *t);

static void unlist(struct th_dedupe *t)
{
    if (!t->listed)
        return;
    if (t->wprev)
        t->wprev->wnext = t->wnext;
    else
        t->pool->waiters = t->wnext;
    if (t->wnext)
        t->wnext->wprev = t->wprev;
    t->wprev = t->wnext = NULL;
    t->listed = false;
}

/* A first's rows were answered or given up (on any node): its waiters here ask at once. */
static void on_notify(void *ud, const char *payload)
{
    struct gpool *p = ud;
    if (strlen(payload) != 2 * KEY_LEN)
        return;
    for (struct th_dedupe *t = p->waiters; t; t = t->wnext) {
        if (!strstr(t->keys, payload))
            continue;
        t->notified = true;
        if (t->busy)
            t->kicked = true;
        else
            th_loop_timer_set(p->loop, &t->poll, 0, on_poll_timer, t);
    }
}

/* The loop is finishing: its connections close on its own thread; what they owed is called
 * back (with TH_E_BUSY) now. The pool's memory stays until the guard is freed. */
static void pool_exit(void *ud)
{
    struct gpool *p = ud;
    th_loop_timer_cancel(p->loop, &p->purge);
    struct th_pg *pg = p->pg;
    p->pg = NULL;
    th_pg_free(pg);          /* the batch out is called back (and freed) */
    free_finishes(p->fhead); /* answers not stored: their waiters' deadlines answer */
    p->fhead = p->ftail = NULL;
    p->nqueued = 0;
}

static struct gpool *pool_for(struct th_guard *g, struct th_loop *loop)
{
    pthread_mutex_lock(&g->mu);
    struct gpool *p = g->pools;
    while (p && p->loop != loop)
        p = p->next;
    if (!p && (p = calloc(1, sizeof *p))) {
        p->g = g;
        p->loop = loop;
        atomic_init(&p->up, 0);
        atomic_init(&p->failed, 0);
        p->purger = g->pools == NULL;
        struct th_pg_options o = {.conninfo = g->url,
                                  .connections = 2,
                                  .setup = g->schema,
                                  .stmts = guard_stmts,
                                  .nstmts = (int)TH_ARRAY_LEN(guard_stmts),
                                  .statement_timeout_ms = 2000,
                                  /* two commits per request must not each wait for a disk
                                   * flush; a database crash may forget the last ~0.6 s of
                                   * sends (bounded slack, docs/abuse.md) */
                                  .async_commit = true,
                                  .listen = "guard_done",
                                  .notify = on_notify,
                                  .notify_ud = p,
                                  .up = &p->up,
                                  .failed = &p->failed};
        if (th_pg_new(loop, &o, &p->pg) != TH_E_OK ||
            th_loop_at_exit(loop, pool_exit, p) != TH_E_OK) {
            th_pg_free(p->pg);
            free(p);
            p = NULL;
        } else {
            p->next = g->pools;
            g->pools = p;
            if (p->purger)
                th_loop_timer_set(loop, &p->purge, th_mono_us() + 5000000, on_purge_timer, p);
        }
    }
    pthread_mutex_unlock(&g->mu);
    return p && p->pg ? p : NULL;
}

th_err th_guard_attach(struct th_guard *g, struct th_loop *loop)
{
    if (!g || !g->url)
        return TH_E_OK;
    return pool_for(g, loop) ? TH_E_OK : TH_E_NOMEM;
}

static void hex_key(const unsigned char k[KEY_LEN], char *out)
{
    static const char hex[] = "0123456789abcdef";
    for (int i = 0; i < KEY_LEN; i++) {
        out[2 * i] = hex[k[i] >> 4];
        out[2 * i + 1] = hex[k[i] & 15];
    }
    out[2 * KEY_LEN] = '\0';
}

/* Appends "hex" of key(label, a, b, c) to a text[] literal being built in *cur. */
static void put_key(const struct th_guard *g, char **cur, const char *label, const char *a,
                    const char *b, const char *c)
{
    unsigned char k[KEY_LEN];
    make_key(g, label, a, b, c, k);
    if ((*cur)[-1] != '{')
        *(*cur)++ = ',';
    hex_key(k, *cur);
    *cur += 2 * KEY_LEN;
}

static void local_decide(struct th_guard *g, struct th_guard_ask *a, struct th_guard_verdict *v)
{
    v->dedupe = th_guard_dedupe_begin(g, a->event_id, a->ph->e164, a->otp, a->ch, a->expires_ms,
                                      &v->ticket, &v->answer);
    if (v->dedupe == TH_DEDUPE_FIRST || v->dedupe == TH_DEDUPE_OFF)
        v->block = th_guard_check(g, a->ph, a->ch, a->user_id);
}

static th_block block_from_name(const char *name)
{
    for (int i = 0; i < TH_BLOCK__COUNT; i++)
        if (name && strcmp(block_names[i], name) == 0)
            return (th_block)i;
    return TH_BLOCK_NONE;
}

/* The database answered (or not): a transition between the two is logged once. */
static void db_health(struct th_guard *g, bool ok, const char *why)
{
    bool was = atomic_exchange(&g->degraded, !ok);
    if (was == !ok)
        return;
    if (ok)
        th_log_msg(TH_LOG_INFO, "guard_shared", "shared guard state answering again");
    else
        th_log_msg(TH_LOG_WARN, "guard_unavailable", "shared guard state not answering (%s): %s",
                   why ? why : "no answer",
                   g->closed ? "requests refused (store.unavailable = closed)"
                             : "this node's limits decide (store.unavailable = open)");
}

static struct th_dedupe *shared_ticket(struct gpool *p, const char *keys, bool first)
{
    struct th_dedupe *t = calloc(1, sizeof *t);
    if (!t)
        return NULL;
    t->pool = p;
    t->first = first;
    th_strlcpy(t->keys, keys, sizeof t->keys);
    return t;
}

static void on_decided(void *ud, const struct th_pg_result *res)
{
    struct th_guard_ask *a = ud;
    struct th_guard *g = a->g_;
    struct th_guard_verdict v = {0};
    const char *verdict =
        res->err == TH_E_OK && th_pg_nrows(res->rows) == 1 ? th_pg_value(res->rows, 0, 0) : NULL;
    if (verdict) {
        db_health(g, true, NULL);
        const char *keys = a->params_[0];
        if (strcmp(verdict, "done") == 0) {
            const char *st = th_pg_value(res->rows, 0, 2), *body = th_pg_value(res->rows, 0, 3);
            v.dedupe = TH_DEDUPE_DONE;
            v.answer.status = st ? atoi(st) : 200;
            v.answer.body = strdup(body ? body : "");
            v.answer.len = body ? strlen(body) : 0;
            atomic_fetch_add(&g->counts[TH_BLOCK_NONE], 1);
        } else if (strcmp(verdict, "pending") == 0) {
            v.dedupe = TH_DEDUPE_PENDING;
            v.ticket = shared_ticket(pool_for(g, a->loop_), keys, false);
            if (!v.ticket || !v.ticket->pool) { /* no memory: the deadline answers */
                free(v.ticket);
                v.ticket = NULL;
            }
            atomic_fetch_add(&g->counts[TH_BLOCK_NONE], 1);
        } else {
            v.dedupe = strcmp(verdict, "first") == 0 ? TH_DEDUPE_FIRST : TH_DEDUPE_OFF;
            v.block = block_from_name(th_pg_value(res->rows, 0, 1));
            if (v.dedupe == TH_DEDUPE_FIRST) {
                v.ticket = shared_ticket(pool_for(g, a->loop_), keys, true);
                if (v.ticket && !v.ticket->pool) {
                    free(v.ticket);
                    v.ticket = NULL;
                }
            }
            if (v.block != TH_BLOCK_NONE)
                atomic_fetch_add(&g->counts[v.block], 1);
        }
    } else {
        const char *why = res->err == TH_E_OK ? "no row" : th_strerror(res->err);
        db_health(g, false, res->detail && res->err == TH_E_STORE ? res->detail : why);
        if (g->closed) {
            atomic_fetch_add(&g->refused, 1);
            v.unavailable = true;
        } else {
            atomic_fetch_add(&g->fallbacks, 1);
            local_decide(g, a, &v);
        }
    }
    a->fn_(a->ud_, &v);
}

struct lim {
    const struct th_rate *r;
    const char *label, *a;
    th_block b;
};

bool th_guard_decide(struct th_guard *g, struct th_loop *loop, struct th_guard_ask *a,
                     struct th_guard_verdict *v, th_guard_fn fn, void *ud)
{
    memset(v, 0, sizeof *v);
    if (!g->url) {
        local_decide(g, a, v);
        return true;
    }
    th_block b = rules_block(g, a->ph, a->ch);
    if (b != TH_BLOCK_NONE) { /* configuration, not state: no need to ask */
        atomic_fetch_add(&g->counts[b], 1);
        v->dedupe = TH_DEDUPE_OFF;
        v->block = b;
        return true;
    }
    struct gpool *p = pool_for(g, loop);
    a->g_ = g;
    a->loop_ = loop;
    a->fn_ = fn;
    a->ud_ = ud;
    if (!p) { /* no memory for the pool: as if the database did not answer */
        if (g->closed) {
            v->unavailable = true;
            atomic_fetch_add(&g->refused, 1);
        } else {
            atomic_fetch_add(&g->fallbacks, 1);
            local_decide(g, a, v);
        }
        return true;
    }
    /* The parameters, as text, in the ask's own buffer: keys (HMACs only), then numbers. */
    char *cur = a->buf_, *end = a->buf_ + sizeof a->buf_;
    int64_t now = wall_us(g), now_ms_ = now / 1000;
    int64_t until = a->expires_ms > now_ms_ ? a->expires_ms : now_ms_ + DEFAULT_WINDOW_MS;
    if (until > now_ms_ + MAX_WINDOW_MS)
        until = now_ms_ + MAX_WINDOW_MS;

    a->params_[0] = cur;
    *cur++ = '{';
    if (g->dedupe) {
        if (a->event_id && a->event_id[0])
            put_key(g, &cur, "event", a->event_id, NULL, NULL);
        put_key(g, &cur, "otp", a->ph->e164, a->otp, th_channel_name(a->ch));
    }
    *cur++ = '}';
    *cur++ = '\0';
    a->params_[1] = cur;
    cur += snprintf(cur, (size_t)(end - cur), "%lld", (long long)until) + 1;
    a->params_[2] = cur;
    cur += snprintf(cur, (size_t)(end - cur), "%lld", (long long)now) + 1;

    /* The limits in the in-memory order; the budget is checked just before the global rate. */
    struct lim lim[5];
    int n = 0;
    bool has_user = a->user_id && a->user_id[0];
    if (g->phone_short.on)
        lim[n++] = (struct lim){&g->phone_short, "phone", a->ph->e164, TH_BLOCK_PHONE_SHORT};
    if (g->phone_long.on)
        lim[n++] = (struct lim){&g->phone_long, "phone-day", a->ph->e164, TH_BLOCK_PHONE_LONG};
    if (has_user && g->user.on)
        lim[n++] = (struct lim){&g->user, "user", a->user_id, TH_BLOCK_USER};
    if (g->country.on)
        lim[n++] = (struct lim){&g->country, "country", a->ph->region, TH_BLOCK_COUNTRY_RATE};
    if (g->global.on)
        lim[n++] = (struct lim){&g->global, "global", "", TH_BLOCK_GLOBAL};
    a->params_[3] = cur;
    *cur++ = '{';
    for (int i = 0; i < n; i++)
        put_key(g, &cur, lim[i].label, lim[i].a, NULL, NULL);
    *cur++ = '}';
    *cur++ = '\0';
    for (int f = 0; f < 3; f++) {
        a->params_[4 + f] = cur;
        *cur++ = '{';
        for (int i = 0; i < n; i++) {
            if (i)
                *cur++ = ',';
            if (f == 0)
                cur += snprintf(cur, (size_t)(end - cur), "%lld", (long long)lim[i].r->interval_us);
            else if (f == 1)
                cur += snprintf(cur, (size_t)(end - cur), "%lld",
                                (long long)(lim[i].r->period_us - lim[i].r->interval_us));
            else
                cur += snprintf(cur, (size_t)(end - cur), "%s", th_block_name(lim[i].b));
        }
        *cur++ = '}';
        *cur++ = '\0';
    }
    int code = a->ph->country_code > 0 && a->ph->country_code < NCODES ? a->ph->country_code : 0;
    bool budgeted = g->code_budget[code] >= 0 || g->code_budget_default > 0;
    long budget = g->code_budget[code] >= 0 ? g->code_budget[code] : g->code_budget_default;
    /* the budget's row is keyed by an HMAC of the code too: deployments with their own secret
     * on one database keep their budgets apart */
    char cc[8];
    snprintf(cc, sizeof cc, "%d", code);
    unsigned char bk[KEY_LEN];
    make_key(g, "budget", cc, NULL, NULL, bk);
    a->params_[7] = cur;
    hex_key(bk, cur);
    cur += 2 * KEY_LEN + 1;
    a->params_[8] = cur;
    snprintf(cur, (size_t)(end - cur), "%ld", budgeted ? budget : -1L);

    a->q_ = (struct th_pg_query){.stmt = "guard_decide",
                                 .nparams = 9,
                                 .params = a->params_,
                                 .deadline_us = a->deadline_us,
                                 .done = on_decided,
                                 .ud = a};
    atomic_fetch_add(&g->decisions, 1);
    exec_counted(p, &a->q_);
    return false;
}

/* ---- shared tickets ---- */

static void on_ticket_written(void *ud, const struct th_pg_result *res)
{
    struct th_dedupe *t = ud;
    free(t->body);
    free(t);
}

/* Sends stmt for a ticket that is then freed when the statement is done (the answer stored, or
 * the rows given back): off the hot path, after Okta has its answer. */
static void ticket_statement(struct th_dedupe *t, const char *stmt, int nparams)
{
    struct gpool *p = t->pool;
    if (!p->pg) { /* the loop has finished: nothing more goes out */
        on_ticket_written(t, NULL);
        return;
    }
    t->params[0] = t->keys;
    t->q = (struct th_pg_query){.stmt = stmt,
                                .nparams = nparams,
                                .params = t->params,
                                .deadline_us = th_mono_us() + DB_WAIT_MS * 1000,
                                .done = on_ticket_written,
                                .ud = t};
    exec_counted(p, &t->q);
}

/* Frees a list of finished tickets (linked by fnext). */
static void free_finishes(struct th_dedupe *t)
{
    while (t) {
        struct th_dedupe *next = t->fnext;
        free(t->body);
        free(t);
        t = next;
    }
}

static void send_finishes(struct gpool *p);

static void on_finishes_stored(void *ud, const struct th_pg_result *res)
{
    struct gpool *p = ud;
    free_finishes(p->fout);
    p->fout = NULL;
    free(p->fbuf);
    p->fbuf = NULL;
    if (p->pg)
        send_finishes(p);
}

/* Appends s as one element of a text[] literal: quoted, with " and \ escaped. */
static char *put_elem(char *cur, const char *v, bool comma)
{
    if (comma)
        *cur++ = ',';
    *cur++ = '"';
    for (; *v; v++) {
        if (*v == '"' || *v == '\\')
            *cur++ = '\\';
        *cur++ = *v;
    }
    *cur++ = '"';
    return cur;
}

/* The answers queued on this loop go out in one statement (at most FINISH_BATCH of them), when
 * no batch is out: under load a batch gathers what came while the one before was out; alone, a
 * finish goes at once. One round trip and one transaction for many answers, after them. */
static void send_finishes(struct gpool *p)
{
    if (p->fout || !p->fhead)
        return;
    struct th_dedupe *batch = p->fhead, *t = batch, *last = NULL;
    size_t n = 0, bytes = 64;
    for (; t && n < FINISH_BATCH; last = t, t = t->fnext, n++)
        bytes += 2 * strlen(t->keys) + 2 * strlen(t->body) + 48;
    p->fhead = t;
    if (!t)
        p->ftail = NULL;
    last->fnext = NULL;
    p->nqueued -= (int)n;
    char *cur = p->fbuf = malloc(bytes);
    if (!cur) { /* no memory: these answers are not stored; their waiters' deadlines answer */
        free_finishes(batch);
        send_finishes(p);
        return;
    }
    p->fout = batch;
    const char *end = cur + bytes;
    (void)end;
    p->fparams[0] = cur; /* every key: the tickets' "{a,b}" lists joined */
    *cur++ = '{';
    bool any = false;
    for (t = batch; t; t = t->fnext) {
        size_t k = strlen(t->keys);
        if (k <= 2)
            continue;
        if (any)
            *cur++ = ',';
        memcpy(cur, t->keys + 1, k - 2);
        cur += k - 2;
        any = true;
    }
    *cur++ = '}';
    *cur++ = '\0';
    p->fparams[3] = cur; /* each key's ticket */
    *cur++ = '{';
    any = false;
    int i = 1;
    for (t = batch; t; t = t->fnext, i++)
        for (const char *c = t->keys + 1; *c && *c != '}'; c++)
            if (c == t->keys + 1 || c[-1] == ',') {
                cur += sprintf(cur, any ? ",%d" : "%d", i);
                any = true;
            }
    *cur++ = '}';
    *cur++ = '\0';
    p->fparams[1] = cur; /* each ticket's status */
    *cur++ = '{';
    for (t = batch; t; t = t->fnext)
        cur += sprintf(cur, t == batch ? "%d" : ",%d", t->status);
    *cur++ = '}';
    *cur++ = '\0';
    p->fparams[2] = cur; /* each ticket's answer */
    *cur++ = '{';
    for (t = batch; t; t = t->fnext)
        cur = put_elem(cur, t->body, t != batch);
    *cur++ = '}';
    *cur++ = '\0';
    p->fq = (struct th_pg_query){.stmt = "guard_finish_batch",
                                 .nparams = 4,
                                 .params = p->fparams,
                                 .deadline_us = th_mono_us() + DB_WAIT_MS * 1000,
                                 .done = on_finishes_stored,
                                 .ud = p};
    exec_counted(p, &p->fq);
}

static void shared_finish(struct th_dedupe *t, int status, const char *body, size_t len)
{
    struct gpool *p = t->pool;
    t->body = strndup(body, len);
    if (!t->body || !p->pg || p->nqueued >= FINISH_QUEUE_MAX) {
        /* no memory, the loop finishing, or the database far behind: the rows are given
         * back (a retry is sent again) rather than queued without end */
        free(t->body);
        t->body = NULL;
        ticket_statement(t, "guard_abandon", 1);
        return;
    }
    t->status = status;
    t->fnext = NULL;
    if (p->ftail)
        p->ftail->fnext = t;
    else
        p->fhead = t;
    p->ftail = t;
    p->nqueued++;
    send_finishes(p);
}

static void poll_later(struct th_dedupe *t);

static void on_polled(void *ud, const struct th_pg_result *res)
{
    struct th_dedupe *t = ud;
    t->busy = false;
    if (t->released) {
        free(t->body);
        free(t);
        return;
    }
    if (res->err == TH_E_OK) {
        const char *st = th_pg_value(res->rows, 0, 0);
        if (!st) {
            t->gone = true; /* the first gave up (or its rows expired): our deadline answers */
        } else if (strcmp(st, "1") == 0) {
            const char *status = th_pg_value(res->rows, 0, 1);
            const char *body = th_pg_value(res->rows, 0, 2);
            t->status = status ? atoi(status) : 200;
            t->body = strdup(body ? body : "");
            t->len = t->body ? strlen(t->body) : 0;
            t->done = t->body != NULL;
        }
    }
    if (t->done || t->gone) {
        unlist(t);
        if (t->notified)
            atomic_fetch_add(&t->pool->g->notified, 1);
        th_loop_fn fn = t->fn;
        fn(t->ud); /* last: the waiter may release (free) t in it */
        return;
    }
    if (t->kicked) {
        t->kicked = false;
        th_loop_timer_set(t->pool->loop, &t->poll, 0, on_poll_timer, t);
        return;
    }
    poll_later(t);
}

static void on_poll_timer(void *ud)
{
    struct th_dedupe *t = ud;
    struct gpool *p = t->pool;
    if (!p->pg)
        return; /* the loop is finishing: the waiter's deadline answers */
    snprintf(t->num, sizeof t->num, "%lld", (long long)now_ms(p->g));
    t->params[0] = t->keys;
    t->params[1] = t->num;
    t->q = (struct th_pg_query){.stmt = "guard_poll",
                                .nparams = 2,
                                .params = t->params,
                                .deadline_us = th_mono_us() + DB_WAIT_MS * 1000,
                                .done = on_polled,
                                .ud = t};
    t->busy = true;
    exec_counted(p, &t->q);
}

static void poll_later(struct th_dedupe *t)
{
    th_loop_timer_set(t->pool->loop, &t->poll, th_mono_us() + t->backoff_ms * 1000LL, on_poll_timer,
                      t);
    int max = t->pool->g->poll_max_ms;
    t->backoff_ms = t->backoff_ms * 2 > max ? max : t->backoff_ms * 2;
}

/* A duplicate in flight on another node (or this one): ask again on a short backoff until the
 * first's answer is stored; the waiter's deadline bounds it (it releases the ticket then). */
static void shared_wait(struct th_dedupe *t, th_loop_fn fn, void *ud)
{
    t->fn = fn;
    t->ud = ud;
    t->backoff_ms = t->pool->g->poll_first_ms;
    t->wnext = t->pool->waiters;
    if (t->wnext)
        t->wnext->wprev = t;
    t->pool->waiters = t;
    t->listed = true;
    poll_later(t);
}

static void shared_release(struct th_dedupe *t)
{
    if (t->first) { /* no answer will come: the rows go, so a retry is sent again */
        ticket_statement(t, "guard_abandon", 1);
        return;
    }
    unlist(t);
    if (t->pool->pg)
        th_loop_timer_cancel(t->pool->loop, &t->poll);
    if (t->busy) { /* a poll is out: freed when it comes back */
        t->released = true;
        return;
    }
    free(t->body);
    free(t);
}

/* ---- search keys of delivery records ---- */

th_err th_guard_record_key_new(const char *secret, struct th_hmac_key **out)
{
    *out = NULL;
    if (!secret || !secret[0])
        return TH_E_OK;
    /* SHA-256 of the secret as the guard takes it, then a key of its own for records */
    static const char label[] = "telehook delivery record keys";
    unsigned char base[32], key[32];
    th_sha256(secret, strlen(secret), base);
    th_hmac_sha256_once(base, sizeof base, label, sizeof label - 1, key);
    th_err e = th_hmac_key_new(key, sizeof key, out);
    OPENSSL_cleanse(base, sizeof base);
    OPENSSL_cleanse(key, sizeof key);
    return e;
}

static void record_hash(const struct th_hmac_key *k, const char *label, const char *v, size_t n,
                        char out[TH_RECORD_HASH_HEX])
{
    static const char zero = 0, hex[] = "0123456789abcdef";
    const void *parts[] = {label, &zero, v};
    size_t lens[] = {strlen(label), 1, n};
    unsigned char mac[32];
    th_hmac_sha256(k, parts, lens, TH_ARRAY_LEN(parts), mac);
    for (int i = 0; i < (TH_RECORD_HASH_HEX - 1) / 2; i++) {
        out[2 * i] = hex[mac[i] >> 4];
        out[2 * i + 1] = hex[mac[i] & 15];
    }
    out[TH_RECORD_HASH_HEX - 1] = '\0';
}

void th_guard_record_phone(const struct th_hmac_key *k, const char *e164,
                           char out[TH_RECORD_HASH_HEX])
{
    record_hash(k, "phone", e164, strlen(e164), out);
}

void th_guard_record_prefix(const struct th_hmac_key *k, const char *e164,
                            char out[TH_RECORD_HASH_HEX])
{
    size_t n = strlen(e164);
    if (n <= 5) { /* "+" and at most 4 digits: no prefix to keep */
        out[0] = '\0';
        return;
    }
    record_hash(k, "prefix", e164, n - 4, out);
}

void th_guard_record_login(const struct th_hmac_key *k, const char *login,
                           char out[TH_RECORD_HASH_HEX])
{
    char lower[256];
    size_t n = strlen(login);
    if (n >= sizeof lower) { /* longer than Okta allows: taken as it is, on both sides */
        record_hash(k, "login", login, n, out);
        return;
    }
    for (size_t i = 0; i < n; i++)
        lower[i] = (char)tolower((unsigned char)login[i]);
    record_hash(k, "login", lower, n, out);
}

/* ---- for src/guard/admin.c (guard/internal.h) ---- */

const char *th_guard_url_(const struct th_guard *g)
{
    return g->url;
}

int64_t th_guard_wall_us_(const struct th_guard *g)
{
    return wall_us(g);
}

void th_guard_key_hex_(const struct th_guard *g, const char *label, const char *a,
                       char out[TH_GUARD_KEY_HEX])
{
    unsigned char k[KEY_LEN];
    make_key(g, label, a, NULL, NULL, k);
    hex_key(k, out);
}

const struct th_rate *th_guard_rate_(const struct th_guard *g, th_block b)
{
    switch (b) {
    case TH_BLOCK_PHONE_SHORT:
        return &g->phone_short;
    case TH_BLOCK_PHONE_LONG:
        return &g->phone_long;
    case TH_BLOCK_USER:
        return &g->user;
    case TH_BLOCK_COUNTRY_RATE:
        return &g->country;
    case TH_BLOCK_GLOBAL:
        return &g->global;
    default:
        return NULL;
    }
}

long th_guard_budget_(const struct th_guard *g, int code)
{
    if (code > 0 && code < NCODES && g->code_budget[code] >= 0)
        return g->code_budget[code];
    return g->code_budget_default > 0 ? g->code_budget_default : -1;
}
