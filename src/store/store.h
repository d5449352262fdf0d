/*
 * The store: one interface over the persistent state, backends behind an ops table
 * (SQLite now, PostgreSQL later). Nothing here knows HTTP; no OTP is ever stored except in the
 * outbox (which plays the handset in development and must hold the text it "received").
 *
 * A struct th_store is one connection: use it from one thread at a time. The server keeps one
 * for its reads (start-up and every SIGHUP reload, on its main thread) and gives one to the
 * writer thread (store/writer.h).
 */
#ifndef TH_STORE_STORE_H
#define TH_STORE_STORE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "common/err.h"

struct th_store;

/*
 * Opens the store named by url: "sqlite:PATH", "sqlite://PATH" or a bare PATH (SQLite);
 * "postgresql://..." / "postgres://..." (a libpq URI) or "postgresql:" + a libpq connection
 * string ("postgresql:host=db dbname=telehook"), where everything libpq reads (PG* environment
 * variables, ~/.pgpass, sslmode, sslrootcert) applies (store/postgres.c).
 * The parent directory is created if missing, the file 0600. Applies pending schema migrations
 * (each in a transaction, recorded in schema_version) and seeds the default templates on first
 * creation. TH_E_STORE with a message in err on failure.
 * Several connections to one file, in one process or many, are safe: nothing but SQLite opens
 * an existing database file (a stray close would drop the process's locks on it).
 */
th_err th_store_open(const char *url, struct th_store **out, char *err, size_t errlen);
void th_store_close(struct th_store *st); /* NULL is a no-op */

/*
 * A short description for logs, e.g. "sqlite:/var/lib/telehook/telehook.db" or
 * "postgresql://telehook@db/telehook" (never a password).
 */
const char *th_store_describe(const struct th_store *st);

/* ---- templates ---- */
struct th_template_row {
    const char *language; /* normalised tag */
    const char *channel;  /* "sms" | "voice" */
    const char *body;
    const char *voice_id; /* "" when none */
    int64_t updated_ms;   /* unix ms */
};
/* Called once per row; strings valid only during the call. Return non-zero to stop. */
typedef int (*th_template_row_fn)(void *ud, const struct th_template_row *row);
th_err th_store_templates_each(struct th_store *st, th_template_row_fn fn, void *ud);
/* Insert or replace (language, channel). */
th_err th_store_template_put(struct th_store *st, const struct th_template_row *row);
/* TH_E_NOTFOUND when absent. */
th_err th_store_template_delete(struct th_store *st, const char *language, const char *channel);

/* ---- user preferences: a language (and a channel hint) per Okta user ---- */
struct th_pref_row {
    const char *user;     /* Okta userId or login; unique without case */
    const char *language; /* normalised tag */
    const char *channel;  /* "", "sms" or "voice" */
    int64_t updated_ms;
};
typedef int (*th_pref_row_fn)(void *ud, const struct th_pref_row *row);
/* Ordered by user. */
th_err th_store_prefs_each(struct th_store *st, th_pref_row_fn fn, void *ud);
/* Insert or replace the user's row (matched without case). */
th_err th_store_pref_put(struct th_store *st, const struct th_pref_row *row);
/* TH_E_NOTFOUND when absent. */
th_err th_store_pref_delete(struct th_store *st, const char *user);

/* ---- outbox (development provider: the "handset") ---- */
struct th_outbox_row {
    const char *id; /* transaction id returned to Okta */
    int64_t created_ms;
    const char *request_id; /* telehook's request id */
    const char *to;         /* E.164 */
    const char *channel;    /* "sms" | "voice" */
    const char *language;
    const char *body;     /* rendered text or SSML (holds the OTP: outbox only) */
    const char *voice_id; /* "" when none */
};
th_err th_store_outbox_insert(struct th_store *st, const struct th_outbox_row *row);
typedef int (*th_outbox_row_fn)(void *ud, const struct th_outbox_row *row);
/* Newest first, at most limit rows (limit <= 0: 20). */
th_err th_store_outbox_each(struct th_store *st, int limit, th_outbox_row_fn fn, void *ud);

/*
 * ---- delivery records: one per answered request; never the OTP, never the full number ----
 * A record is identified by its request id and time (unique): inserting one already there is
 * TH_E_OK and changes nothing, so a spooled record replayed is never recorded twice.
 */
struct th_delivery_row {
    const char *request_id;
    const char *event_id; /* Okta's eventId ("" when absent) */
    int64_t created_ms;
    const char *request_type;   /* "com.okta.user.telephony.mfa-verification" or "" */
    const char *phone_masked;   /* "+1206*****23" or "" when it did not parse */
    const char *country;        /* region "US" or "" */
    const char *channel;        /* "sms" | "voice" */
    const char *language;       /* language of the text sent, "" when none */
    const char *source;         /* "template" | "okta" | "builtin" | "" */
    const char *provider;       /* "outbox" ... or "" */
    const char *outcome;        /* "SUCCESSFUL" | "FAILED" | "REJECTED" | "TIMEOUT" | "ERROR" */
    const char *transaction_id; /* "" when none */
    const char *error;          /* short reason ("" when none); never user data */
    int64_t latency_us;         /* arrival to answer */
    int attempts;               /* provider attempts made (0: none) */
    /*
     * For a helpdesk's search (`deliveries list --user / --phone`), never the number or the
     * login in clear: Okta's user id ("00u..."; an opaque id, kept as it is), and hex
     * HMAC-SHA256 keys of the login and of the E.164 number under guard.secret
     * (th_guard_record_hash). "" when unknown or when no guard.secret is set.
     */
    const char *user_id;
    const char *login_hash;
    const char *phone_hash;
    const char *locale;     /* the request's locale, normalised ("" when none) */
    const char *preference; /* the user's preference found: "pt", "pt/voice"; "" none */
    /* conversion (docs/conversion.md): the destination prefix's key (the number less its last
     * 4 digits, th_guard_record_prefix; "" as phone_hash), the sending process's node id
     * (th_node_id), and, once an Okta event credited it, when (0: not verified) and which */
    const char *prefix_hash;
    const char *node;
    int64_t verified_ms;
    const char *verified_event;
    /* The provider's delivery receipt (th_store_receipt_apply), "" / 0 until one came: read by
     * th_store_deliveries_query; an insert leaves them empty. */
    const char *receipt_status; /* normalised (receipt/receipt.h): "delivered", "spam", ... */
    const char *receipt_error;  /* the provider's code ("30007", "CARRIER_BLOCKED") or "" */
    int64_t receipt_ms;         /* the event's time (the provider's, else when it arrived) */
    bool receipt_final;         /* no later status expected (read by `store copy` only) */
};
th_err th_store_delivery_insert(struct th_store *st, const struct th_delivery_row *row);
typedef int (*th_delivery_row_fn)(void *ud, const struct th_delivery_row *row);
/* Newest first, at most limit rows (limit <= 0: 20). */
th_err th_store_deliveries_each(struct th_store *st, int limit, th_delivery_row_fn fn, void *ud);

/*
 * ---- verifications: an Okta event (a sign-in passed with SMS or voice, a phone enrolled)
 * credited to the delivery that carried its code ----
 * The match: the newest SUCCESSFUL delivery of user_id on channel with created_ms in
 * [from_ms, to_ms], not verified yet (a resend: the last one sent before the event gets the
 * credit). It is marked (verified_ms, verified_event) and a row is added to verifications
 * (event_id unique: Okta retries, and a duplicate changes nothing), all in one transaction.
 */
struct th_verify_event {
    const char *event_id; /* Okta's uuid */
    const char *user_id;  /* "00u..." */
    const char *channel;  /* "sms" | "voice" */
    int64_t from_ms, to_ms;
    int64_t verified_ms;    /* the event's published time */
    const char *matched_by; /* this node's id */
};
/* What a match credited (strings valid during the callback only). */
struct th_verified {
    int64_t seq; /* the verifications row */
    const char *event_id, *request_id, *node, *country, *prefix_hash, *provider, *channel,
        *transaction_id;
    const char *phone_hash; /* the number's key: a number that verified is never blocked */
    int64_t sent_ms, verified_ms;
};
typedef void (*th_verified_fn)(void *ud, const struct th_verified *v);
enum th_verify_result { TH_VERIFY_MATCHED, TH_VERIFY_UNMATCHED, TH_VERIFY_DUPLICATE };
/* fn (may be NULL) runs once on a match, after the commit. */
th_err th_store_verify(struct th_store *st, const struct th_verify_event *ev,
                       enum th_verify_result *res, th_verified_fn fn, void *ud);
/*
 * Other nodes' matches of node's deliveries: verifications with seq > *after_seq, credited to
 * node and matched by another, oldest first, at most limit; *after_seq moves past them.
 * *after_seq < 0: set to the newest seq, no rows (a node starting does not replay history).
 */
th_err th_store_verifications_since(struct th_store *st, const char *node, int64_t *after_seq,
                                    int limit, th_verified_fn fn, void *ud);

/*
 * ---- indexes an optional feature needs ----
 * Each index on the delivery records costs every insert a random B-tree insert (measured: a
 * third of the maximum throughput on SQLite, bench/README.md), so the two that serve only
 * conversion tracking are built when the feature is turned on, not by a migration:
 * TH_STORE_INDEX_VERIFY (deliveries by user and time: Okta's events look a user up) and
 * TH_STORE_INDEX_RECEIPTS (by provider and transaction id: receipts find their record). Idempotent
 * (IF NOT EXISTS); on PostgreSQL built CONCURRENTLY (other nodes keep writing; no statement
 * timeout), an invalid one left by an interrupted build dropped and built again. May take a
 * while on a big table: at start, before serving. TH_E_STORE with the reason in err.
 */
enum { TH_STORE_INDEX_VERIFY = 1u << 0, TH_STORE_INDEX_RECEIPTS = 1u << 1 };
th_err th_store_ensure_indexes(struct th_store *st, unsigned which, char *err, size_t errlen);

/*
 * ---- conversion statistics (`deliveries stats`) ----
 * Delivery records created in [since_ms, until_ms) grouped by one column: sends (SUCCESSFUL),
 * verified (of those), refused (REJECTED), failed (FAILED, TIMEOUT, ERROR); by TH_STATS_PREFIX
 * the group is prefix_hash and country the prefix's country.
 */
enum th_stats_by {
    TH_STATS_COUNTRY,
    TH_STATS_PREFIX,
    TH_STATS_PROVIDER,
    TH_STATS_ROUTE,
    TH_STATS_CHANNEL
};
struct th_stats_row {
    const char *group, *country;
    long long sends, verified, refused, failed;
};
typedef int (*th_stats_row_fn)(void *ud, const struct th_stats_row *row);
/* Sorted by sends, most first. */
th_err th_store_delivery_stats(struct th_store *st, enum th_stats_by by, int64_t since_ms,
                               int64_t until_ms, th_stats_row_fn fn, void *ud);

/*
 * ---- delivery receipts: what the provider says became of a message ----
 * A receipt names its record by provider + transaction id (indexed). The newest record of that
 * pair takes it when it is news: the record has none yet, or it is final where the record's is
 * not, or it is as final and not older (event time). A final status is never replaced by a
 * later non-final one (a late "sent" after "delivered"), nor taken again (the same final status
 * repeated: a retry or a replay, stale), and an older event never overwrites a newer one. Only
 * codes and statuses are stored: never a number or a message text.
 */
struct th_receipt_row {
    const char *provider, *transaction_id;
    const char *status; /* normalised */
    const char *error;  /* provider's code or "" */
    bool final, delivered;
    int64_t event_ms; /* the provider's event time, else the arrival time (unix ms) */
};
/* A receipt applied to its record (the common plan's on_receipt argument): copies, so it can
 * travel to another thread. */
struct th_receipt_applied {
    char provider[16], country[4], channel[8];
    char transaction_id[96], request_id[64];
    char status[16], error[48];
    bool final, delivered;
    int64_t event_ms; /* the receipt's time */
    int64_t sent_ms;  /* the delivery record's created_ms */
};
/*
 * TH_E_OK and *changed true when the record took the receipt (out filled), *changed false when
 * it already holds a newer or more final one (out filled with the receipt and the record's
 * country, channel, request id); TH_E_NOTFOUND when no record has that provider and id (yet:
 * the writer retries). On the writer's connection, inside its transaction.
 */
th_err th_store_receipt_apply(struct th_store *st, const struct th_receipt_row *r,
                              struct th_receipt_applied *out, bool *changed);

/* ---- routes: (channel, country) → ordered attempts, e.g. "aws:+12065550100, twilio" ---- */
struct th_route_row {
    const char *channel;  /* "sms" | "voice" | "*" */
    const char *country;  /* ISO alpha-2 region or "*" */
    const char *attempts; /* the attempt list as text (route/route.h parses it) */
    int64_t updated_ms;
};
typedef int (*th_route_row_fn)(void *ud, const struct th_route_row *row);
th_err th_store_routes_each(struct th_store *st, th_route_row_fn fn, void *ud);
/* Insert or replace (channel, country). */
th_err th_store_route_put(struct th_store *st, const struct th_route_row *row);
/* TH_E_NOTFOUND when absent. */
th_err th_store_route_delete(struct th_store *st, const char *channel, const char *country);

/*
 * ---- conversion blocks (guard/conv.h): prefixes and countries whose sends stopped converting ----
 * Written by each node's sync thread, read by every node (to adopt others' blocks and drop the
 * cleared ones) and by `telehook guard blocks`. A prefix is kept as its HMAC (key) and shown
 * masked ("+44770090****": 10,000 numbers, not a person).
 */
struct th_conv_block_row {
    const char *id;
    const char *kind;                       /* "prefix" | "country" */
    const char *key;                        /* the prefix's hash, or the ISO country */
    const char *country;                    /* ISO */
    const char *masked;                     /* "" when not known */
    int64_t since_ms, until_ms, cleared_ms; /* cleared_ms 0: not cleared */
    long sends, verified;                   /* the counts it was made on */
    const char *mode;                       /* "enforce" | "monitor" */
};
typedef int (*th_conv_block_fn)(void *ud, const struct th_conv_block_row *row);
/* Inserts the row; an id already there is left as it is. */
th_err th_store_conv_block_put(struct th_store *st, const struct th_conv_block_row *row);
/*
 * Rows newest first, at most limit: all of them (all), else those active at now_ms (not cleared,
 * until_ms later) and those cleared after cleared_after_ms (-1: none).
 */
struct th_conv_block_filter {
    bool all;
    int64_t now_ms, cleared_after_ms;
    int limit;
};
th_err th_store_conv_blocks_each(struct th_store *st, const struct th_conv_block_filter *f,
                                 th_conv_block_fn fn, void *ud);
/*
 * Clears the blocks active at now_ms: every one (all), those of (kind, key), or those of the
 * (kind, key) of block id (another node may have blocked the same prefix under its own id).
 * *cleared: rows changed; TH_E_NOTFOUND when none.
 */
struct th_conv_block_clear {
    bool all;
    const char *id;         /* or NULL */
    const char *kind, *key; /* or NULL */
    int64_t now_ms;
};
th_err th_store_conv_blocks_clear(struct th_store *st, const struct th_conv_block_clear *c,
                                  long *cleared);

/*
 * Filters for th_store_deliveries_query; NULL / "" / 0 fields do not filter. Values are compared
 * exactly (the caller normalises: outcome upper case, channel and provider lower, country upper).
 * user_id and login_hash together match a record holding either (a user given as an id or a
 * login). Only the time bounds use an index: the others scan the rows in the time range.
 */
struct th_delivery_filter {
    int64_t since_ms, until_ms;
    const char *outcome, *provider, *country, *channel, *request_id;
    int limit; /* <= 0: 20 */
    const char *event_id, *user_id, *login_hash, *phone_hash;
};
/* Newest first. */
th_err th_store_deliveries_query(struct th_store *st, const struct th_delivery_filter *f,
                                 th_delivery_row_fn fn, void *ud);

/* ---- dead-letter queue: requests no attempt delivered ---- */
struct th_dlq_row {
    const char *id; /* "dlq-..." */
    int64_t created_ms;
    const char *request_id, *event_id, *phone_masked, *country, *channel, *language;
    const char *outcome; /* "FAILED" | "TIMEOUT" | "OVERLOAD" | "ERROR" */
    const char *errors;  /* every attempt's reason; never message content */
    int attempts;
    int64_t otp_expires_ms; /* after it, a replay is pointless */
    const char *key_id;     /* the key that sealed the payload; "" = no payload */
    const void *payload;    /* nonce || AES-256-GCM ciphertext || tag (dlq/dlq.h) */
    size_t payload_len;
};
typedef int (*th_dlq_row_fn)(void *ud, const struct th_dlq_row *row);
th_err th_store_dlq_insert(struct th_store *st, const struct th_dlq_row *row);
/* Newest first, at most limit rows (limit <= 0: 20). */
th_err th_store_dlq_each(struct th_store *st, int limit, th_dlq_row_fn fn, void *ud);
/* fn is called once when found; TH_E_NOTFOUND otherwise. */
th_err th_store_dlq_get(struct th_store *st, const char *id, th_dlq_row_fn fn, void *ud);
th_err th_store_dlq_delete(struct th_store *st, const char *id); /* TH_E_NOTFOUND */
/* Entries held now, all processes' writes and deletes included (a full count: for the writer's
 * occasional refresh of the depth gauge, never per request). */
th_err th_store_dlq_count(struct th_store *st, long *n);

/* ---- retention: rows older than each cut-off (unix ms; 0 = keep) are deleted ---- */
struct th_purge {
    int64_t dlq_before_ms, deliveries_before_ms, outbox_before_ms;
};
/*
 * On PostgreSQL, one node at a time: TH_E_BUSY (nothing removed) while another connection
 * purges (an advisory lock taken without waiting).
 */
th_err th_store_purge(struct th_store *st, const struct th_purge *p, long *removed);

/* ---- status (`telehook store status`) ---- */
#define TH_STORE_TABLES 6
/* The tables counted, in the order of th_store_status.rows. */
extern const char *const th_store_tables[TH_STORE_TABLES];
struct th_store_status {
    int version;                /* the schema version of the database (0: none yet) */
    int latest;                 /* the schema version this telehook writes */
    long rows[TH_STORE_TABLES]; /* -1: the table does not exist yet */
};
th_err th_store_status(struct th_store *st, struct th_store_status *out);
/*
 * Opens the store as th_store_open does but applies no migration (the schema is reported as it
 * is). An SQLite file must exist. Only th_store_status, th_store_describe and th_store_close may
 * be used on it when its version is not the latest.
 */
th_err th_store_open_unmigrated(const char *url, struct th_store **out, char *err, size_t errlen);

/*
 * ---- copying a store into another (`telehook store copy`, store/copy.c) ----
 *
 * Every table of from into to (both open, so both migrated to this telehook's schema): the
 * catalog rows as puts, the history rows (outbox, deliveries, DLQ) as inserts in their
 * insertion order, ids, times and search keys as they are, a delivery's receipt applied to it as
 * it was, DLQ payloads as their sealed bytes.
 * One transaction on the target (a failure leaves it unchanged) and one read snapshot on the
 * source; the history tables are read a page at a time (bounded memory).
 * A target holding any row is refused (TH_E_BUSY, nothing written, its rows in target_rows)
 * unless append: then catalog rows replace the target's of the same key and history rows are
 * added (a DLQ or outbox id already there fails the whole copy). TH_E_INVAL when from and to
 * are the same store. The reason in err (never a password).
 */
struct th_store_copy {
    bool append;
    bool dry_run;               /* count only: rows gets the source's counts, nothing is written */
    int batch;                  /* history rows per page read (<= 0: 500) */
    long rows[TH_STORE_TABLES]; /* out: rows copied (or to copy), per th_store_tables */
    long target_rows[TH_STORE_TABLES]; /* out: the target's rows before */
};
th_err th_store_copy(struct th_store *from, struct th_store *to, struct th_store_copy *o, char *err,
                     size_t errlen);

/*
 * ---- change notifications: the catalog (templates, prefs, routes) changed on another node ----
 *
 * On PostgreSQL every put and delete of a catalog row notifies the channel "telehook_catalog"
 * (payload: the table's name) in the same transaction, so a notification is delivered to every
 * listening connection when, and only when, the change commits. A listener is its own blocking
 * connection, for one thread (serve's watcher), never an event loop. SQLite has none: a node on
 * SQLite is the only one and reloads on SIGHUP.
 * Changes made to the tables by hand (psql) send nothing: `NOTIFY telehook_catalog` or SIGHUP.
 */
enum {
    TH_STORE_CHANGED_TEMPLATES = 1u << 0,
    TH_STORE_CHANGED_PREFS = 1u << 1,
    TH_STORE_CHANGED_ROUTES = 1u << 2,
    TH_STORE_CHANGED_ALL = (1u << 3) - 1,
    /* the connection was lost and is back: notifications sent meanwhile are lost, so every
     * table is reported changed (with this bit, so the caller can say why) */
    TH_STORE_RECONNECTED = 1u << 3,
};
struct th_store_listener;
/*
 * Connects to the store at url (as th_store_open does, no migration) and LISTENs. TH_E_INVAL
 * when the backend has no notifications (SQLite); TH_E_STORE with a message when the
 * connection fails.
 */
th_err th_store_listen(const char *url, struct th_store_listener **out, char *err, size_t errlen);
/*
 * Waits up to timeout_ms for notifications; *changed gets TH_STORE_CHANGED_* bits (0: none
 * came, or th_store_listener_interrupt was called). TH_E_STORE with a message when the
 * connection is lost: the next call reconnects (the caller paces the retries) and, once
 * connected again, returns TH_STORE_CHANGED_ALL | TH_STORE_RECONNECTED. A reconnection waits at
 * most the connection timeout (10 s) or until interrupted.
 */
th_err th_store_wait_change(struct th_store_listener *l, int timeout_ms, unsigned *changed,
                            char *err, size_t errlen);
/* Makes the current or next wait return at once; from any thread (async-signal-safe). */
void th_store_listener_interrupt(struct th_store_listener *l);
void th_store_listener_close(struct th_store_listener *l); /* NULL is a no-op */

/*
 * ---- the writer's batch: each table's rows in one statement ----
 * Inserts every row, inside the caller's transaction, with one multi-row INSERT per table that
 * has rows: a constant number of round trips for a batch, where a row at a time costs one (three
 * with its savepoint) per row. All or nothing: TH_E_STORE when any row fails, the transaction
 * then aborted (roll it back); th_store_lost says whether the server was the cause, else a row
 * was (a duplicate id, text that is not UTF-8) and the caller inserts the rows one by one, so
 * that it fails alone. A delivery record already there (the same request id and time: a
 * spooled one replayed) is skipped, not an error. TH_E_INVAL, nothing done, on a backend
 * without it (SQLite: a row costs no round trip there).
 */
struct th_store_rows {
    const struct th_delivery_row *const *deliveries;
    size_t ndeliveries;
    const struct th_outbox_row *const *outbox;
    size_t noutbox;
    const struct th_dlq_row *const *dlq;
    size_t ndlq;
};
th_err th_store_insert_many(struct th_store *st, const struct th_store_rows *rows);

/* ---- transactions (the writer batches many inserts in one) ---- */
th_err th_store_begin(struct th_store *st);
th_err th_store_commit(struct th_store *st);
th_err th_store_rollback(struct th_store *st);

/*
 * ---- the connection's health (the writer's spool, /readyz) ----
 * A shared store (PostgreSQL) is a server that may go away and come back; SQLite's file does
 * not: on it lost is always false and ping and reconnect succeed at once.
 */
bool th_store_shared(const struct th_store *st);
/*
 * Whether the last failed operation failed because the server was out of reach (connection
 * lost, statement timeout, server shutting down) rather than for its row (a duplicate key):
 * the row may succeed later. Stays true until th_store_reconnect succeeds.
 */
bool th_store_lost(const struct th_store *st);
/* A cheap round trip (SELECT 1); a failure sets lost. */
th_err th_store_ping(struct th_store *st);
/* Connects again with the same parameters (and prepares the statements again). */
th_err th_store_reconnect(struct th_store *st);

#endif
