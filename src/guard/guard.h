/*
 * Abuse controls, applied before any provider is paid (SMS pumping and runaway resends are the
 * costliest failures of an OTP service):
 *
 *   dedupe  a request whose Okta eventId — or whose (phone, OTP, channel) — was already handled
 *           within the OTP's validity is not sent again: it gets the first outcome (waiting for
 *           it while the first is in flight), same transactionId.
 *   rules   allow/deny lists by country and by calling code (every non-geographic code — +881
 *           satellite, +882 networks, +800 freephone, ... — denied by default); line types
 *           refused per channel (premium-rate, toll-free, fixed-line for SMS, ...), from
 *           libphonenumber.
 *   limits  per phone number (short and long windows), per Okta user, per destination country
 *           per hour, a daily budget per calling code (a small country cannot be pumped under
 *           a global cap), and a global sends-per-minute ceiling.
 *
 * Nothing personal is kept: numbers, user ids, event ids and OTPs are only ever stored as
 * HMAC-SHA256 keys under a server secret. State lives in bounded in-memory tables sized at start
 * to guard.max_entries (16 bytes a per-person key, 24 a dedupe key, a record of 32 bytes and the
 * answer's difference from a reference answer per request remembered); when full, a new key takes
 * the slot whose loss gives back the fewest sends, so a flood of new numbers buys a number at
 * most one send over its limit. The country, calling-code and global counters are fixed arrays.
 *
 * Several nodes: when guard.url (or store.url) names PostgreSQL, dedupe, limits and budgets are
 * decided there for every node at once, in one round trip per request (th_guard_decide: one call
 * of the guard_decide() function, on the loop's own non-blocking connections, pg/pg.h); the
 * destination rules stay local (they are configuration). A duplicate in flight on another node
 * is woken by the first's notification (LISTEN guard_done; sent only for a row a waiting
 * duplicate marked), with a backoff of polls behind it. Answers are stored after Okta has them,
 * batched per loop (th_guard_dedupe_finish). The keys are HMACs under guard.secret, which the
 * nodes then share. When the database does not answer
 * in time, store.unavailable says what happens: open = this node's in-memory guard decides (logged
 * once per transition, counted), closed = the request is refused with Okta's error object.
 *
 * Thread-safe: every loop calls in; one short lock per call.
 */
#ifndef TH_GUARD_GUARD_H
#define TH_GUARD_GUARD_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "common/err.h"
#include "config/config.h"
#include "common/types.h"
#include "loop/loop.h"
#include "pg/pg.h"
#include "phone/phone.h"

struct th_guard;

th_err th_guard_new(const struct th_config *cfg, struct th_guard **out, char *err, size_t errlen);
void th_guard_free(struct th_guard *g); /* NULL is a no-op */

/* ---- dedupe ---- */

struct th_dedupe; /* a request's hold on a dedupe record */

typedef enum {
    TH_DEDUPE_FIRST,   /* new: send it, then th_guard_dedupe_finish() */
    TH_DEDUPE_DONE,    /* seen and answered: replay *answer */
    TH_DEDUPE_PENDING, /* seen and still in flight: th_guard_dedupe_wait() for its answer */
    TH_DEDUPE_OFF      /* dedupe disabled */
} th_dedupe_state;

struct th_dedupe_answer {
    int status; /* HTTP status */
    char *body; /* malloc'ed copy: the caller frees */
    size_t len;
};

/*
 * event_id may be NULL or "". expires_ms: the OTP's expiry (unix ms; 0 = unknown: a default
 * window). On FIRST and PENDING *ticket is set and must be given back (finish or release).
 */
th_dedupe_state th_guard_dedupe_begin(struct th_guard *g, const char *event_id, const char *e164,
                                      const char *otp, th_channel ch, int64_t expires_ms,
                                      struct th_dedupe **ticket, struct th_dedupe_answer *answer);
/* FIRST: records the answer given to Okta, wakes the waiters and releases the ticket. */
void th_guard_dedupe_finish(struct th_guard *g, struct th_dedupe *ticket, int status,
                            const char *body, size_t len);
/* PENDING: DONE (answer filled) or still PENDING (in flight, or the first gave up). */
th_dedupe_state th_guard_dedupe_poll(struct th_guard *g, struct th_dedupe *ticket,
                                     struct th_dedupe_answer *answer);
/*
 * PENDING: notification instead of polling. fn(ud) runs once, on loop (loop/loop.h
 * th_loop_call), when the first finishes or gives its ticket back — or at once (still through
 * the loop) when that happened since begin; then th_guard_dedupe_poll() says which: DONE with
 * the answer to replay, or PENDING when the first gave up without one (the waiter's own deadline
 * answers, as when it waited in vain). Called once per ticket, on loop's thread.
 * TH_E_OVERLOAD: the record already has its cap of waiters; nothing will call fn (the deadline
 * answers). TH_E_INVAL: not a PENDING ticket, or already waiting.
 */
th_err th_guard_dedupe_wait(struct th_guard *g, struct th_dedupe *ticket, struct th_loop *loop,
                            th_loop_fn fn, void *ud);
/*
 * Gives the ticket back. FIRST without an answer: the waiters are woken (the first gave up).
 * PENDING (on the loop the ticket waits on, if it waits): unregisters; fn is not called after
 * this returns, even when the first finished on another thread at the same moment.
 */
void th_guard_dedupe_release(struct th_guard *g, struct th_dedupe *ticket);

/* ---- rules and limits ---- */

#define TH_BLOCKS(X)                                                                               \
    X(NONE, "none")                                                                                \
    X(COUNTRY, "country_not_allowed")                                                              \
    X(NUMBER_TYPE, "number_type_refused")                                                          \
    X(PHONE_SHORT, "phone_rate")                                                                   \
    X(PHONE_LONG, "phone_daily")                                                                   \
    X(USER, "user_rate")                                                                           \
    X(COUNTRY_RATE, "country_rate")                                                                \
    X(CODE_BUDGET, "calling_code_budget")                                                          \
    X(GLOBAL, "global_rate")                                                                       \
    X(CONV_PREFIX, "conversion_prefix")                                                            \
    X(CONV_COUNTRY, "conversion_country")

typedef enum {
#define TH_BLOCK_ENUM(name, text) TH_BLOCK_##name,
    TH_BLOCKS(TH_BLOCK_ENUM)
#undef TH_BLOCK_ENUM
        TH_BLOCK__COUNT
} th_block;

const char *th_block_name(th_block b);

/*
 * Applies the destination rules, then every limit; the request is counted against the limits
 * only when all of them let it through. user_id may be NULL.
 */
th_block th_guard_check(struct th_guard *g, const struct th_phone *ph, th_channel ch,
                        const char *user_id);

/* ---- one decision: dedupe, then rules and limits ---- */

struct th_guard_verdict {
    th_dedupe_state dedupe;         /* as th_guard_dedupe_begin */
    struct th_dedupe *ticket;       /* FIRST and PENDING: give it back (finish or release) */
    struct th_dedupe_answer answer; /* DONE */
    th_block block;                 /* FIRST and OFF: the rules' and limits' verdict */
    bool unavailable; /* the shared state did not answer and store.unavailable = closed */
};

typedef void (*th_guard_fn)(void *ud, struct th_guard_verdict *v);

/* A request's question to the guard, in the caller's memory (its arena) until fn has run. */
struct th_guard_ask {
    const char *event_id; /* may be NULL */
    const char *otp;
    const struct th_phone *ph;
    th_channel ch;
    int64_t expires_ms;  /* as th_guard_dedupe_begin */
    const char *user_id; /* may be NULL */
    int64_t deadline_us; /* monotonic: the database must have answered by then */
    /* private */
    struct th_guard *g_;
    struct th_loop *loop_;
    th_guard_fn fn_;
    void *ud_;
    struct th_pg_query q_;
    const char *params_[9];
    char buf_[768];
};

/*
 * Dedupe, destination rules and limits for one request, as th_guard_dedupe_begin followed (on
 * FIRST or OFF) by th_guard_check. In memory — and for a request the destination rules refuse —
 * it is decided at once: true, *v filled, fn not called. With the shared state it is one
 * database round trip: false, and fn(ud, v) runs once, later, on loop (v is valid during the
 * call). Call on loop's thread.
 */
bool th_guard_decide(struct th_guard *g, struct th_loop *loop, struct th_guard_ask *ask,
                     struct th_guard_verdict *v, th_guard_fn fn, void *ud);

/* True when the guard's state is shared through PostgreSQL. */
bool th_guard_shared(const struct th_guard *g);

/*
 * Opens loop's connections to the shared state now rather than on the loop's first request:
 * called for each loop before it runs (or on its thread), so the first requests of a fresh node
 * are not left to the in-memory guard while a connection is still being made. Once attached,
 * th_guard_ready waits for the loop's pool. No-op in memory; TH_E_NOMEM when the pool cannot be
 * made (the loop then tries again on its first request).
 */
th_err th_guard_attach(struct th_guard *g, struct th_loop *loop);

/*
 * For /readyz (any thread): false while some loop's pool would leave its requests to the
 * in-memory guard or refuse them. With store.unavailable = closed: every pool has a connection
 * up now (connections retry by themselves, so a node taken out of a load balancer comes back
 * when the database does). With open: every pool has had a connection up once — or its
 * attempts failed, the database being away, when serving from memory is open's rule rather than
 * an accident of a connection still being made; a later outage does not take the node out (it
 * serves without the database). True in memory, and before any loop has a pool.
 */
bool th_guard_ready(struct th_guard *g);

/* The shared state's figures since start (zeros in memory). */
struct th_guard_db_stats {
    uint64_t decisions;  /* guard_decide calls sent (the hot path's round trips) */
    uint64_t statements; /* every statement sent: decisions, answers stored, waits, purges */
    uint64_t fallbacks;  /* requests decided in memory because the database did not answer */
    uint64_t refused;    /* requests refused for the same reason (store.unavailable = closed) */
    uint64_t notified;   /* waiting duplicates woken by the first's notification */
    int connections;     /* connections ready now, over every loop */
};
void th_guard_db_stats(struct th_guard *g, struct th_guard_db_stats *out);

/* How a blocked request is answered: true = Okta's FAILED status, false = Okta's error object. */
bool th_guard_answer_failed(const struct th_guard *g);

/* Counts a block decided outside the guard (the conversion blocks: guard/conv.h). */
void th_guard_count_block(struct th_guard *g, th_block b);

/* Blocks since start, by reason (out[TH_BLOCK_NONE] counts dedupe replays). */
void th_guard_counts(struct th_guard *g, uint64_t out[TH_BLOCK__COUNT]);

/*
 * ---- the shared state for an operator (`telehook guard show|reset`; guard/admin.c) ----
 *
 * Blocking, on a connection of its own (a command, never an event loop). The keys are computed
 * here from what the operator typed, under guard.secret, exactly as guard_decide() computes
 * them: nothing personal is read from or written to the database.
 */
struct th_guard_admin;
/*
 * Connects to the shared state cfg names (guard.url, else store.url on PostgreSQL with
 * guard.secret set). TH_E_INVAL with the reason in err when the state is in memory (each serve
 * process's own: nothing outside the process can read or clear it); TH_E_CONFIG on a bad guard
 * setting; TH_E_STORE when the database cannot be reached (err never holds a password).
 */
th_err th_guard_admin_open(const struct th_config *cfg, struct th_guard_admin **out, char *err,
                           size_t errlen);
void th_guard_admin_close(struct th_guard_admin *a); /* NULL is a no-op */
/* Test hook: th_guard_set_clock for the admin's own guard (the budgets' day, the limits' now). */
void th_guard_admin_set_clock(struct th_guard_admin *a, int64_t (*clock)(void *ud), void *ud);
/* "postgresql://user@host:port/db" (never a password). */
const char *th_guard_admin_describe(const struct th_guard_admin *a);

typedef enum {
    TH_GUARD_PHONE,   /* an E.164 number: phone_rate and phone_daily */
    TH_GUARD_USER,    /* an Okta user id (00u...): user_rate */
    TH_GUARD_COUNTRY, /* an ISO region (US): country_rate */
    TH_GUARD_GLOBAL   /* "": global_rate */
} th_guard_subject;

struct th_guard_limit_state {
    th_block limit;    /* which limit */
    long count;        /* as configured: count per period */
    int64_t period_us; /* */
    bool held;         /* the database holds a row for it */
    long used;         /* requests counted in the window now (GCRA: rounded up) */
    int64_t wait_us;   /* 0: the next request passes this limit; else refused this long */
};
/* The configured limits of subject's value (up to 2) into out, their number in *n. */
th_err th_guard_admin_limits(struct th_guard_admin *a, th_guard_subject s, const char *value,
                             struct th_guard_limit_state out[2], int *n, char *err, size_t errlen);
/* Deletes those limits' rows (a fresh start: the full allowance); *removed rows deleted. */
th_err th_guard_admin_reset_limits(struct th_guard_admin *a, th_guard_subject s, const char *value,
                                   long *removed, char *err, size_t errlen);

struct th_guard_budget_state {
    int code;    /* the calling code; 0: a row of no code this guard.secret knows */
    long used;   /* counted today (UTC) */
    long budget; /* the configured daily budget; -1: none */
};
typedef int (*th_guard_budget_fn)(void *ud, const struct th_guard_budget_state *b);
/* Today's (UTC) budget rows, by calling code ascending; fn's non-zero return stops. */
th_err th_guard_admin_budgets(struct th_guard_admin *a, th_guard_budget_fn fn, void *ud, char *err,
                              size_t errlen);
/* A calling code's configured daily budget; -1: none. */
long th_guard_admin_budget(const struct th_guard_admin *a, int code);
/* Sets today's count of a calling code back to 0 (deletes its row); *removed: 0 or 1. */
th_err th_guard_admin_reset_budget(struct th_guard_admin *a, int code, long *removed, char *err,
                                   size_t errlen);

/* Rows per table of the shared state (guard_dedupe, guard_rate, guard_budget). */
struct th_guard_sizes {
    long dedupe, rate, budget;
};
th_err th_guard_admin_sizes(struct th_guard_admin *a, struct th_guard_sizes *out, char *err,
                            size_t errlen);

/* Entries held in the per-person tables (for the bounded-memory test and logs). */
size_t th_guard_entries(struct th_guard *g);

/*
 * The dedupe table's use, for /metrics: records held (one per first request still remembered or
 * still answering; freed when its window ends and no ticket holds it) and duplicates waiting for
 * a first one's answer. Both are bounded: records by the table, waiters per record.
 */
void th_guard_dedupe_sizes(struct th_guard *g, size_t *records, size_t *waiters);

/*
 * The in-memory state's bytes, for /metrics and the memory tests. The two tables are allocated
 * at start, sized to guard.max_entries (a power of two at least as large: up to twice the slots;
 * their pages are touched as keys arrive; 16 bytes a slot each). The dedupe records come from a
 * pool of one 48-byte slot per dedupe slot and one per server.max_connections (records held only
 * by requests still answering), mapped at start and touched as records come: record_bytes
 * counts the pool's high-water mark (the slots ever used, 48 bytes each: freed ones are reused
 * first, so it does not grow with traffic, only with the records held at once), plus what is on
 * the heap as malloc takes it — answers whose stored middle does not fit in their record and the
 * reference answers.
 */
struct th_guard_memory {
    size_t people_slots, people_bytes; /* per-number and per-user limiter state: one slot a key */
    size_t dedupe_slots, dedupe_bytes; /* the dedupe index: eventId and number+code+channel keys */
    size_t records, record_bytes;      /* dedupe records, their answers and reference answers */
    size_t max_entries;                /* guard.max_entries */
};
void th_guard_memory(struct th_guard *g, struct th_guard_memory *out);

/*
 * Test hook: the guard reads time from clock(ud), unix microseconds, instead of the system
 * clocks (monotonic for the rate limits, wall time for the dedupe window and the budgets' UTC
 * day); NULL restores them. Set it before the guard is shared between threads. The dedupe
 * index's times are moved to count from the new clock's now (its windows kept).
 */
void th_guard_set_clock(struct th_guard *g, int64_t (*clock)(void *ud), void *ud);

/* Test hook: how soon (and at most how often) a waiting duplicate asks the shared state again
 * when no notification comes (defaults 50 and 400 ms). Before the guard is shared. */
void th_guard_set_poll(struct th_guard *g, int first_ms, int max_ms);

/* ---- search keys of delivery records ---- */

struct th_hmac_key;

/* 16 bytes of HMAC-SHA256 in hex, and the NUL */
#define TH_RECORD_HASH_HEX 33

/*
 * The key under which delivery records keep a searchable form of the number and the login
 * (`deliveries list --phone / --user`): derived from guard.secret, apart from the guard's own
 * keys. *out is NULL when guard.secret is empty: a key drawn at random at each start would make
 * the records unsearchable, so none are kept. Free with th_hmac_key_free.
 */
th_err th_guard_record_key_new(const char *secret, struct th_hmac_key **out);

/* The search key of an E.164 number ("+12015550123"), as hex. */
void th_guard_record_phone(const struct th_hmac_key *k, const char *e164,
                           char out[TH_RECORD_HASH_HEX]);
/*
 * The key of a number's prefix: the number less its last 4 digits ("+44770090" of
 * "+447700900123"), 10,000 numbers, kept as an HMAC like every other number key. The conversion
 * tracker (guard/conv.h), the delivery records and the blocks use this hex string. A number of
 * 4 digits or fewer after the '+' gives "" (not tracked).
 */
void th_guard_record_prefix(const struct th_hmac_key *k, const char *e164,
                            char out[TH_RECORD_HASH_HEX]);
/* The search key of an Okta login, ASCII letters lower-cased first (logins ignore case). */
void th_guard_record_login(const struct th_hmac_key *k, const char *login,
                           char out[TH_RECORD_HASH_HEX]);

#endif
