/*
 * Conversion: SMS pumping stopped by what it never does — use the code.
 *
 * Per destination prefix (th_guard_record_prefix: the number less its last 4 digits, as an HMAC)
 * and per country, the tracker counts the messages a provider accepted (th_conv_sent) and the
 * ones Okta reported as used (th_conv_verified, credited to the bucket of the message's send
 * time) in a sliding window of CONV_BUCKETS buckets. th_conv_check, on the hot path, decides from
 * those in-memory counts alone:
 *
 *   prefix   at least prefix_min_sends sends in the window and a conversion below
 *            prefix_min_rate %: the prefix is blocked for block_minutes;
 *   country  the same with the country's own thresholds, counting only sends to prefixes not
 *            blocked, and of each prefix at most a quarter of prefix_min_sends sends (and
 *            verifications) a window: an attack on a few prefixes weighs little in its country
 *            before those prefixes are blocked and nothing after (their share leaves the
 *            country's counts), so it never drags the country's rate down onto its legitimate
 *            users; a spread attack (many prefixes, a few sends each) is what the country rule
 *            sees.
 *
 * A number that verified before (a bounded set of phone keys) is never refused: a legitimate user
 * inside an attacked prefix. A block zeroes the prefix's counts, so after it ends or is cleared
 * the prefix is judged again only after prefix_min_sends new sends.
 *
 * Modes: off (nothing counted), monitor (blocks are made, logged, listed and counted as
 * would_refuse; nothing refused), enforce (refused) — but enforce refuses only while the signal
 * is there: some verification seen within the window. A new install whose Okta event hook does
 * not deliver yet sees every prefix at 0 % and must not block the org: until the first
 * verification it behaves as monitor (logged once at each transition).
 *
 * Memory is fixed at th_conv_new: a table of max_prefixes prefixes (a new prefix takes the
 * coldest of 8 neighbouring slots, blocked prefixes last), one entry per country (ISO letters),
 * a set of max_verified phone keys (a new key takes the oldest of 4 neighbours).
 *
 * Blocks are made here and taken by the sync thread (guard/conv_sync.c) to the store
 * (conversion_blocks) through a bounded queue (drops counted); blocks of other nodes and clears
 * come back through th_conv_adopt and th_conv_clear.
 *
 * Thread-safe: one mutex, held only for in-memory work (no I/O, no allocation, no logging).
 */
#ifndef TH_GUARD_CONV_H
#define TH_GUARD_CONV_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "common/err.h"
#include "config/config.h"
#include "obs/metrics.h"

#define CONV_BUCKETS 12

typedef enum { TH_CONV_OFF, TH_CONV_MONITOR, TH_CONV_ENFORCE } th_conv_mode;
typedef enum { TH_CONV_PASS, TH_CONV_PREFIX, TH_CONV_COUNTRY } th_conv_kind;

const char *th_conv_kind_name(th_conv_kind k); /* "none", "prefix", "country" */

struct th_conv_settings {
    th_conv_mode mode;
    bool require_signal; /* enforce refuses only with the signal (see above) */
    int64_t window_ms;
    long prefix_min_sends;
    int prefix_min_rate; /* percent */
    long country_min_sends;
    int country_min_rate;
    int block_minutes;
    size_t max_prefixes;
    size_t max_verified;
};
/* [conversion] of cfg. */
void th_conv_settings_from(const struct th_config *cfg, struct th_conv_settings *out);

struct th_conv;
th_err th_conv_new(const struct th_conv_settings *s, struct th_conv **out);
void th_conv_free(struct th_conv *c); /* NULL is a no-op */
th_conv_mode th_conv_get_mode(const struct th_conv *c);

/* Test hook: unix milliseconds from clock(ud) instead of the wall clock. Before sharing. */
void th_conv_set_clock(struct th_conv *c, int64_t (*clock)(void *ud), void *ud);

/* One destination. Strings borrowed for the call; hex keys as th_guard_record_*. */
struct th_conv_key {
    const char *prefix;        /* th_guard_record_prefix hex */
    const char *phone;         /* th_guard_record_phone hex; "" or NULL: none */
    const char *country;       /* ISO alpha-2; "" : none (no country rule) */
    const char *prefix_masked; /* "+44770090****", shown in block rows and logs; may be NULL */
};

struct th_conv_verdict {
    th_conv_kind kind;    /* what blocks the destination (PASS: nothing) */
    bool refuse;          /* enforce, with the signal there: answer as a guard block */
    bool exempt;          /* blocked, but the number verified before: sent */
    bool enforcing;       /* blocks refuse now (enforce, and the signal if it is required) */
    bool new_block;       /* this call made the block: log it once */
    long sends, verified; /* the counts the new block was made on */
};
void th_conv_check(struct th_conv *c, const struct th_conv_key *k, struct th_conv_verdict *v);

/* A provider accepted the message. provider and channel name the metric's labels. */
void th_conv_sent(struct th_conv *c, const struct th_conv_key *k, const char *provider,
                  const char *channel);

/* A delivery was verified (part A's on_verified, from the writer thread). */
struct th_conv_verification {
    const char *prefix;  /* prefix hash of the delivery record */
    const char *phone;   /* phone hash of the record; "" or NULL: none */
    const char *country; /* ISO */
    const char *provider, *channel;
    int64_t sent_ms, verified_ms; /* unix ms */
};
void th_conv_verified(struct th_conv *c, const struct th_conv_verification *v);

/* ---- blocks, as rows of conversion_blocks ---- */

struct th_conv_block {
    char id[40];
    th_conv_kind kind;
    char key[40]; /* prefix hash or ISO country */
    char country[4];
    char masked[24]; /* "+44770090****" or "" (country blocks, adopted blocks) */
    int64_t since_ms, until_ms, cleared_ms;
    long sends, verified;
    char mode[8]; /* "enforce" | "monitor": whether it refused when it was made */
};

/* Takes up to max blocks made here since the last call (for the store), oldest first. */
size_t th_conv_take_blocks(struct th_conv *c, struct th_conv_block *out, size_t max);
/* A block of the store (another node's, or ours): held until its until_ms. false: not taken. */
bool th_conv_adopt(struct th_conv *c, const struct th_conv_block *b);
/*
 * An admin cleared (kind, key) at cleared_ms: the block goes if it was made then or before (not
 * one made since, on new sends), and the counts start again. true: one was held.
 */
bool th_conv_clear(struct th_conv *c, th_conv_kind kind, const char *key, int64_t cleared_ms);

/*
 * The sync thread: every interval_ms it writes the blocks made here to the store at url
 * (conversion_blocks; its own connection, opened again after a failure) and reads the blocks
 * active there and the ones cleared since its last read: others' blocks are adopted, cleared
 * ones dropped. Bounded: the queue (th_conv_take_blocks) and up to 1,000 rows a read.
 */
struct th_conv_sync;
th_err th_conv_sync_start(struct th_conv *c, const char *url, int interval_ms,
                          struct th_conv_sync **out);
void th_conv_sync_stop(struct th_conv_sync *s); /* NULL is a no-op; joins the thread */

/* ---- figures ---- */

struct th_conv_stats {
    uint64_t refused[3];      /* by kind (PREFIX, COUNTRY): requests refused */
    uint64_t would_refuse[3]; /* by kind: requests a block would have refused (monitor, or no
                                 signal yet) */
    uint64_t exempt;          /* requests sent despite a block: the number verified before */
    uint64_t blocks_made[3];
    uint64_t queue_dropped; /* block rows dropped: the queue to the store was full */
    uint64_t evicted;       /* prefixes forgotten for a new one */
    size_t active[3];       /* blocks active now */
    size_t prefixes, verified_numbers;
    size_t bytes; /* memory allocated at th_conv_new */
    bool signal;  /* a verification was seen within the window */
};
void th_conv_stats(struct th_conv *c, struct th_conv_stats *out);

/*
 * telehook_conversion_sent_total and _verified_total{country,provider,channel} (countries past
 * the first 40 and providers past 8 as "other"), refusals and would-refuse by kind, blocks
 * active by kind. m must outlive c's use.
 */
th_err th_conv_metrics(struct th_conv *c, struct th_metrics *m);

#endif
