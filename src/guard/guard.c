#include "guard/guard.h"

#include <ctype.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>
#include <openssl/rand.h>

#include "common/hmac.h"
#include "common/rate.h"
#include "common/util.h"

#define KEY_LEN           16 /* truncated HMAC-SHA256: collisions are not a practical concern */
#define PROBE             8
#define DEFAULT_WINDOW_MS (10 * 60 * 1000) /* dedupe window when Okta gives no otpExpires */
#define MAX_WINDOW_MS     (30 * 60 * 1000)
#define NREGIONS          (26 * 26 + 1) /* "AA".."ZZ", and non-geographic */
#define NCODES            1000          /* calling codes 1..999 */
#define MAX_WAITERS       64 /* per dedupe record: beyond it a duplicate waits for its deadline */

static const char *const block_names[] = {
#define TH_BLOCK_NAME(name, text) text,
    TH_BLOCKS(TH_BLOCK_NAME)
#undef TH_BLOCK_NAME
};

const char *th_block_name(th_block b)
{
    return (size_t)b < TH_ARRAY_LEN(block_names) ? block_names[b] : "?";
}

struct pslot { /* per-person limiter state */
    unsigned char key[KEY_LEN];
    int64_t tat_us; /* theoretical arrival time; <= now means "no state" */
};

struct rec { /* a dedupe record, shared by its eventId and (phone, otp, channel) slots */
    int refs;
    bool done;
    bool abandoned;            /* the first gave its ticket back without an answer */
    struct th_dedupe *waiters; /* duplicates to wake when the first finishes (under the lock) */
    int nwaiters;
    int status;
    char *body;
    size_t len;
};

struct dslot {
    unsigned char key[KEY_LEN];
    int64_t expire_ms;
    struct rec *rec;
};

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
    size_t sweep; /* the next dedupe slot the incremental sweep looks at */
    size_t nrecs; /* dedupe records allocated (a record outlives its slots while tickets hold it) */
    size_t nwaiters; /* duplicates linked in some record's waiters */
    int64_t country_tat[NREGIONS];
    struct budget budget[NCODES];
    int64_t global_tat;
    atomic_uint_fast64_t counts[TH_BLOCK__COUNT];
    int64_t (*clock)(void *ud); /* tests only (th_guard_set_clock); NULL: the system clocks */
    void *clock_ud;
};

struct th_dedupe {
    struct rec *rec;
    bool first;                    /* the sender's ticket, not a duplicate's */
    bool waiting;                  /* linked in rec->waiters (under the lock) */
    struct th_dedupe *prev, *next; /* rec->waiters */
    struct th_loop_call wake;      /* th_guard_dedupe_wait's callback */
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

void th_guard_set_clock(struct th_guard *g, int64_t (*clock)(void *ud), void *ud)
{
    g->clock = clock;
    g->clock_ud = ud;
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
    size_t cap = 1024;
    while (cap < (size_t)cfg->guard_max_entries)
        cap <<= 1;
    g->npeople = g->ndd = cap;
    g->people = calloc(cap, sizeof *g->people);
    g->dd = calloc(cap, sizeof *g->dd);
    if (!g->people || !g->dd) {
        th_guard_free(g);
        return TH_E_NOMEM;
    }
    *out = g;
    return TH_E_OK;
}

static void rec_unref(struct th_guard *g, struct rec *r)
{
    if (r && --r->refs == 0) {
        g->nrecs--;
        free(r->body);
        free(r);
    }
}

void th_guard_free(struct th_guard *g)
{
    if (!g)
        return;
    for (size_t i = 0; g->dd && i < g->ndd; i++)
        rec_unref(g, g->dd[i].rec);
    free(g->dd);
    free(g->people);
    th_hmac_key_free(g->mac);
    pthread_mutex_destroy(&g->mu);
    OPENSSL_cleanse(g->secret, sizeof g->secret);
    free(g);
}

bool th_guard_answer_failed(const struct th_guard *g)
{
    return g->answer_failed;
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

/*
 * The person slot for k: its own, else an empty or stale one, else the least useful. Never one
 * of taken[0..ntaken): the slots the same check already holds for its other keys (a slot just
 * claimed has no state yet, so it would look the least useful, and two limits would then share
 * one counter).
 */
static struct pslot *person(struct th_guard *g, const unsigned char k[KEY_LEN],
                            struct pslot *const *taken, int ntaken)
{
    size_t h = home(k, g->npeople);
    struct pslot *victim = NULL;
    for (int i = 0; i < PROBE; i++) {
        struct pslot *s = &g->people[(h + (size_t)i) & (g->npeople - 1)];
        if (memcmp(s->key, k, KEY_LEN) == 0)
            return s;
        bool held = false;
        for (int j = 0; j < ntaken; j++)
            held |= taken[j] == s;
        if (!held && (!victim || s->tat_us < victim->tat_us))
            victim = s;
    }
    memcpy(victim->key, k, KEY_LEN);
    victim->tat_us = 0; /* a fresh start: GCRA state "nothing seen" */
    return victim;
}

/* The calling-code budgets' day: UTC, from midnight to midnight (unix time has no leap seconds). */
static int64_t unix_day(const struct th_guard *g)
{
    return now_ms(g) / 86400000;
}

th_block th_guard_check(struct th_guard *g, const struct th_phone *ph, th_channel ch,
                        const char *user_id)
{
    int ri = region_index(ph->region);
    int code = ph->country_code > 0 && ph->country_code < NCODES ? ph->country_code : 0;
    th_block b = TH_BLOCK_NONE;
    /* Denied by country or calling code; or, with allow-lists, in none of them. A number of no
     * country (+881, +882, ...: ri is the non-geographic slot) is in no country list. */
    bool listed = g->allow[ri] || g->code_allow[code];
    if (g->deny[ri] || g->code_deny[code] || ((g->have_allow || g->have_code_allow) && !listed))
        b = TH_BLOCK_COUNTRY;
    else if (g->refuse[ch == TH_CHANNEL_VOICE][ph->type])
        b = TH_BLOCK_NUMBER_TYPE;
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
    struct pslot *ps = g->phone_short.on ? person(g, kshort, held, nheld) : NULL;
    if (ps)
        held[nheld++] = ps;
    struct pslot *pl = g->phone_long.on ? person(g, klong, held, nheld) : NULL;
    if (pl)
        held[nheld++] = pl;
    struct pslot *pu = has_user ? person(g, kuser, held, nheld) : NULL;
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

static struct dslot *dd_find(struct th_guard *g, const unsigned char k[KEY_LEN], int64_t now_ms,
                             bool create)
{
    size_t h = home(k, g->ndd);
    struct dslot *victim = NULL;
    for (int i = 0; i < PROBE; i++) {
        struct dslot *s = &g->dd[(h + (size_t)i) & (g->ndd - 1)];
        if (s->rec && s->expire_ms <= now_ms) { /* expired: free the slot on the way */
            rec_unref(g, s->rec);
            s->rec = NULL;
        }
        if (s->rec && memcmp(s->key, k, KEY_LEN) == 0)
            return s;
        if (!victim || !s->rec || (victim->rec && s->expire_ms < victim->expire_ms))
            victim = s;
    }
    if (!create)
        return NULL;
    rec_unref(g, victim->rec); /* full: the record closest to expiry goes */
    victim->rec = NULL;
    memcpy(victim->key, k, KEY_LEN);
    return victim;
}

/* Frees a few expired dedupe records per call, so memory follows the live entries instead of
 * waiting for their slots to be probed again. Under the lock. */
static void dd_sweep(struct th_guard *g, int64_t now_ms)
{
    for (int i = 0; i < 4; i++) {
        struct dslot *s = &g->dd[g->sweep];
        g->sweep = (g->sweep + 1) & (g->ndd - 1);
        if (s->rec && s->expire_ms <= now_ms) {
            rec_unref(g, s->rec);
            s->rec = NULL;
        }
    }
}

static void copy_answer(const struct rec *r, struct th_dedupe_answer *a)
{
    a->status = r->status;
    a->len = r->len;
    a->body = malloc(r->len + 1);
    if (a->body) {
        memcpy(a->body, r->body, r->len);
        a->body[r->len] = '\0';
    }
}

th_dedupe_state th_guard_dedupe_begin(struct th_guard *g, const char *event_id, const char *e164,
                                      const char *otp, th_channel ch, int64_t expires_ms,
                                      struct th_dedupe **ticket, struct th_dedupe_answer *answer)
{
    *ticket = NULL;
    if (!g->dedupe)
        return TH_DEDUPE_OFF;
    int64_t now = now_ms(g);
    int64_t until = expires_ms > now ? expires_ms : now + DEFAULT_WINDOW_MS;
    if (until > now + MAX_WINDOW_MS)
        until = now + MAX_WINDOW_MS;
    unsigned char ke[KEY_LEN], kp[KEY_LEN];
    bool has_event = event_id && event_id[0];
    if (has_event)
        make_key(g, "event", event_id, NULL, NULL, ke);
    make_key(g, "otp", e164, otp, th_channel_name(ch), kp);

    struct th_dedupe *t = calloc(1, sizeof *t);
    if (!t)
        return TH_DEDUPE_OFF; /* out of memory: send rather than lose the code */
    pthread_mutex_lock(&g->mu);
    dd_sweep(g, now);
    struct dslot *se = has_event ? dd_find(g, ke, now, false) : NULL;
    struct dslot *sp = dd_find(g, kp, now, false);
    struct rec *r = se ? se->rec : sp ? sp->rec : NULL;
    th_dedupe_state st;
    if (r) {
        st = r->done ? TH_DEDUPE_DONE : TH_DEDUPE_PENDING;
        if (r->done)
            copy_answer(r, answer);
    } else {
        r = calloc(1, sizeof *r);
        st = TH_DEDUPE_FIRST;
        g->nrecs += r != NULL;
        struct dslot *a = r && has_event ? dd_find(g, ke, now, true) : NULL;
        if (a) {
            a->rec = r;
            a->expire_ms = until;
            r->refs++;
        }
        struct dslot *b = r ? dd_find(g, kp, now, true) : NULL;
        if (b) {
            b->rec = r;
            b->expire_ms = until;
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
    while (r->waiters) {
        struct th_dedupe *w = r->waiters;
        r->waiters = w->next;
        w->prev = w->next = NULL;
        w->waiting = false;
        th_loop_call_post(&w->wake);
    }
    g->nwaiters -= (size_t)r->nwaiters;
    r->nwaiters = 0;
}

void th_guard_dedupe_finish(struct th_guard *g, struct th_dedupe *t, int status, const char *body,
                            size_t len)
{
    if (!t)
        return;
    char *copy = malloc(len + 1);
    if (copy) {
        memcpy(copy, body, len);
        copy[len] = '\0';
    }
    pthread_mutex_lock(&g->mu);
    struct rec *r = t->rec;
    r->status = status;
    r->body = copy;
    r->len = copy ? len : 0;
    r->done = copy != NULL;
    r->abandoned = copy == NULL;
    wake_waiters(g, r);
    rec_unref(g, r);
    pthread_mutex_unlock(&g->mu);
    free(t);
}

th_dedupe_state th_guard_dedupe_poll(struct th_guard *g, struct th_dedupe *t,
                                     struct th_dedupe_answer *answer)
{
    pthread_mutex_lock(&g->mu);
    bool done = t->rec->done;
    if (done)
        copy_answer(t->rec, answer);
    pthread_mutex_unlock(&g->mu);
    return done ? TH_DEDUPE_DONE : TH_DEDUPE_PENDING;
}

th_err th_guard_dedupe_wait(struct th_guard *g, struct th_dedupe *t, struct th_loop *loop,
                            th_loop_fn fn, void *ud)
{
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
        t->next = r->waiters;
        if (r->waiters)
            r->waiters->prev = t;
        r->waiters = t;
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
    pthread_mutex_lock(&g->mu);
    struct rec *r = t->rec;
    if (t->first) { /* no answer will come: the waiters decide at their deadlines */
        r->abandoned = true;
        wake_waiters(g, r);
    } else if (t->waiting) { /* not woken yet: unregister, no callback */
        if (t->prev)
            t->prev->next = t->next;
        else
            r->waiters = t->next;
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
