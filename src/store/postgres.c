/*
 * The PostgreSQL backend: the store shared by several telehook nodes. The same contract as the
 * SQLite backend (store.h), row for row and error for error.
 *
 * Blocking libpq on purpose: a store connection is used by the writer thread, the admin CLI and
 * the server's start-up and reload reads, never on an event loop. Two timeouts keep a stalled
 * database from holding them forever: connect_timeout (10 s unless the URL, a service file or
 * PGCONNECT_TIMEOUT says otherwise) and the session's statement_timeout (5 s unless the URL's
 * options, PGOPTIONS or the role's settings give one).
 *
 * Every statement is prepared once per connection (PQprepare) and every value is bound; SQL is
 * never built from values. Text comparisons and orderings are bytewise (COLLATE "C") and the
 * user of a preference is folded to ASCII lower case, exactly as SQLite's BINARY and NOCASE.
 */
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <libpq-fe.h>

#include "common/util.h"
#include "obs/log.h"
#include "pg/pg.h"
#include "store/internal.h"

/* The session's statement_timeout when none is configured (ms). */
#define STATEMENT_TIMEOUT_MS 5000
/* The shortest pause between two reconnections of a dropped store connection (ms). */
#define REVIVE_EVERY_MS 1000
/* tcp_user_timeout when none is configured (ms). */
#define TCP_USER_TIMEOUT_MS "10000"
/* connect_timeout when none is configured (s). */
#define CONNECT_TIMEOUT_S "10"
/* The channel of catalog change notifications (store.h); the payload is the table. */
#define CATALOG_CHANNEL "telehook_catalog"
/* pg_advisory_xact_lock key of the migrations: "telehook" in ASCII, as a bigint. */
#define MIGRATE_LOCK "7522525363725609835"
/* pg_try_advisory_lock key of the retention purge: one node at a time (the next one up). */
#define PURGE_LOCK "7522525363725609836"

/*
 * Migrations, numbered as SQLite's so that one version means one schema on both backends. Never
 * edit a released migration: add one (here and in sqlite.c). Each runs in its own transaction
 * under the advisory lock, recorded in schema_version.
 * seq (an identity) orders rows inserted in the same millisecond as SQLite's rowid does.
 */
static const char *const migrations[] = {
    /* 1: templates (seeded with English and Spanish), outbox, deliveries */
    "CREATE TABLE templates ("
    "  language TEXT NOT NULL, channel TEXT NOT NULL CHECK (channel IN ('sms', 'voice')),"
    "  body TEXT NOT NULL, voice_id TEXT NOT NULL DEFAULT '', updated_ms BIGINT NOT NULL,"
    "  PRIMARY KEY (language, channel));"
    "CREATE TABLE outbox ("
    "  seq BIGINT GENERATED ALWAYS AS IDENTITY,"
    "  id TEXT PRIMARY KEY, created_ms BIGINT NOT NULL, request_id TEXT NOT NULL,"
    "  recipient TEXT NOT NULL, channel TEXT NOT NULL, language TEXT NOT NULL,"
    "  body TEXT NOT NULL, voice_id TEXT NOT NULL DEFAULT '');"
    "CREATE INDEX outbox_created ON outbox (created_ms);"
    "CREATE TABLE deliveries ("
    "  seq BIGINT GENERATED ALWAYS AS IDENTITY,"
    "  request_id TEXT PRIMARY KEY, event_id TEXT NOT NULL, created_ms BIGINT NOT NULL,"
    "  request_type TEXT NOT NULL, phone_masked TEXT NOT NULL, country TEXT NOT NULL,"
    "  channel TEXT NOT NULL, language TEXT NOT NULL, source TEXT NOT NULL,"
    "  provider TEXT NOT NULL, outcome TEXT NOT NULL, transaction_id TEXT NOT NULL,"
    "  error TEXT NOT NULL, latency_us BIGINT NOT NULL);"
    "CREATE INDEX deliveries_created ON deliveries (created_ms);"
    "CREATE INDEX deliveries_event ON deliveries (event_id);"
    "INSERT INTO templates (language, channel, body, voice_id, updated_ms) VALUES"
    " ('en', 'sms', 'Your verification code is {{otp}}. It expires in {{expires_minutes}} "
    "minutes.', '', 0),"
    " ('es', 'sms', 'Su código de verificación es {{otp}}. Caduca en {{expires_minutes}} "
    "minutos.', '', 0),"
    " ('en', 'voice', '<speak>Your verification code is <break time=\"300ms\"/>{{otp_spaced}}. "
    "<break time=\"1s\"/>Again, your code is {{otp_spaced}}.</speak>', 'Joanna', 0),"
    " ('es', 'voice', '<speak>Su código de verificación es <break "
    "time=\"300ms\"/>{{otp_spaced}}. <break time=\"1s\"/>Repito, su código es "
    "{{otp_spaced}}.</speak>', 'Lupe', 0);",
    /* 2: delivery routes; attempts per delivery */
    "CREATE TABLE routes ("
    "  channel TEXT NOT NULL CHECK (channel IN ('sms', 'voice', '*')),"
    "  country TEXT NOT NULL, attempts TEXT NOT NULL, updated_ms BIGINT NOT NULL,"
    "  PRIMARY KEY (channel, country));"
    "ALTER TABLE deliveries ADD COLUMN attempts INTEGER NOT NULL DEFAULT 0;",
    /* 3: the dead-letter queue (the payload is AES-256-GCM sealed; the rest is plain) */
    "CREATE TABLE dlq ("
    "  seq BIGINT GENERATED ALWAYS AS IDENTITY,"
    "  id TEXT PRIMARY KEY, created_ms BIGINT NOT NULL, request_id TEXT NOT NULL,"
    "  event_id TEXT NOT NULL, phone_masked TEXT NOT NULL, country TEXT NOT NULL,"
    "  channel TEXT NOT NULL, language TEXT NOT NULL, outcome TEXT NOT NULL,"
    "  errors TEXT NOT NULL, attempts INTEGER NOT NULL, otp_expires_ms BIGINT NOT NULL,"
    "  key_id TEXT NOT NULL, payload BYTEA);"
    "CREATE INDEX dlq_created ON dlq (created_ms);",
    /* 4: as SQLite's 4: no unique random key on deliveries (each insert on a random B-tree
     * page), no eventId index (unused); a plain index on the request id */
    "ALTER TABLE deliveries DROP CONSTRAINT deliveries_pkey;"
    "DROP INDEX deliveries_event;"
    "CREATE INDEX deliveries_request ON deliveries (request_id);",
    /* 5: a helpdesk's search keys (HMACs under guard.secret; no index, as in SQLite) */
    "ALTER TABLE deliveries ADD COLUMN user_id TEXT NOT NULL DEFAULT '';"
    "ALTER TABLE deliveries ADD COLUMN login_hash TEXT NOT NULL DEFAULT '';"
    "ALTER TABLE deliveries ADD COLUMN phone_hash TEXT NOT NULL DEFAULT '';",
    /* 6: the seeded SMS texts take the plural form (only the seeds as shipped) */
    "UPDATE templates SET body = 'Your verification code is {{otp}}. It expires in "
    "{{expires_minutes:minute|minutes}}.' WHERE language = 'en' AND channel = 'sms' AND body = "
    "'Your verification code is {{otp}}. It expires in {{expires_minutes}} minutes.';"
    "UPDATE templates SET body = 'Su código de verificación es {{otp}}. Caduca en "
    "{{expires_minutes:minuto|minutos}}.' WHERE language = 'es' AND channel = 'sms' AND body = "
    "'Su código de verificación es {{otp}}. Caduca en {{expires_minutes}} minutos.';",
    /* 7: preferences (one row per user without case: SQLite's NOCASE folds ASCII only, as
     * lower() under the "C" collation does); what a delivery asked for; the unchanged seeds go */
    "CREATE TABLE prefs ("
    "  user_key TEXT NOT NULL, language TEXT NOT NULL,"
    "  channel TEXT NOT NULL DEFAULT '' CHECK (channel IN ('', 'sms', 'voice')),"
    "  updated_ms BIGINT NOT NULL);"
    "CREATE UNIQUE INDEX prefs_user ON prefs ((lower(user_key COLLATE \"C\")));"
    "ALTER TABLE deliveries ADD COLUMN locale TEXT NOT NULL DEFAULT '';"
    "ALTER TABLE deliveries ADD COLUMN preference TEXT NOT NULL DEFAULT '';"
    "DELETE FROM templates WHERE updated_ms = 0 AND voice_id = '' AND channel = 'sms' AND ("
    " (language = 'en' AND body IN ('Your verification code is {{otp}}. It expires in "
    "{{expires_minutes}} minutes.', 'Your verification code is {{otp}}. It expires in "
    "{{expires_minutes:minute|minutes}}.')) OR"
    " (language = 'es' AND body IN ('Su código de verificación es {{otp}}. Caduca en "
    "{{expires_minutes}} minutos.', 'Su código de verificación es {{otp}}. Caduca en "
    "{{expires_minutes:minuto|minutos}}.')));"
    "DELETE FROM templates WHERE updated_ms = 0 AND channel = 'voice' AND ("
    " (language = 'en' AND body = '<speak>Your verification code is "
    "<break time=\"300ms\"/>{{otp_spaced}}. <break time=\"1s\"/>Again, your code is "
    "{{otp_spaced}}.</speak>' AND voice_id = 'Joanna') OR"
    " (language = 'es' AND body = '<speak>Su código de verificación es "
    "<break time=\"300ms\"/>{{otp_spaced}}. <break time=\"1s\"/>Repito, su código es "
    "{{otp_spaced}}.</speak>' AND voice_id = 'Lupe'));",
    /* 8: a delivery record's identity, (request id, time): a spooled record replayed after a
     * commit whose answer was lost is skipped (ON CONFLICT DO NOTHING), not recorded twice. The
     * unique index replaces the plain one on the request id (the same cost per insert); the
     * twins such a replay left before are removed first, the older row kept. IF EXISTS / NOT
     * EXISTS: a test takes a store back to an older version and migrates it again. */
    "DELETE FROM deliveries a USING deliveries b WHERE a.request_id = b.request_id"
    "  AND a.created_ms = b.created_ms AND a.seq > b.seq;"
    "DROP INDEX IF EXISTS deliveries_request;"
    "CREATE UNIQUE INDEX IF NOT EXISTS deliveries_once ON deliveries (request_id, created_ms);",
    /* 9: conversion, as SQLite's 9: the prefix's key, the sending node, the verification on
     * each record; verifications (one row per Okta event, its uuid unique), which every node
     * polls by (node, seq) for the matches other nodes made of its deliveries. */
    "ALTER TABLE deliveries ADD COLUMN IF NOT EXISTS prefix_hash TEXT NOT NULL DEFAULT '';"
    "ALTER TABLE deliveries ADD COLUMN IF NOT EXISTS node TEXT NOT NULL DEFAULT '';"
    "ALTER TABLE deliveries ADD COLUMN IF NOT EXISTS verified_ms BIGINT;"
    "ALTER TABLE deliveries ADD COLUMN IF NOT EXISTS verified_event TEXT NOT NULL DEFAULT '';"
    "CREATE TABLE IF NOT EXISTS verifications ("
    "  seq BIGSERIAL PRIMARY KEY, event_id TEXT NOT NULL UNIQUE,"
    "  request_id TEXT NOT NULL, node TEXT NOT NULL, matched_by TEXT NOT NULL,"
    "  country TEXT NOT NULL, prefix_hash TEXT NOT NULL, provider TEXT NOT NULL,"
    "  channel TEXT NOT NULL, transaction_id TEXT NOT NULL, sent_ms BIGINT NOT NULL,"
    "  verified_ms BIGINT NOT NULL, phone_hash TEXT NOT NULL DEFAULT '');"
    "CREATE INDEX IF NOT EXISTS verifications_node ON verifications (node, seq);"
    "CREATE INDEX IF NOT EXISTS verifications_sent ON verifications (sent_ms);",
    /* 10: as SQLite's 10 — a provider's delivery receipt on
     * its record, found by provider + transaction id (indexed: receipts come long after the
     * insert); receipt_final keeps a late non-final status from replacing a final one. */
    "ALTER TABLE deliveries ADD COLUMN IF NOT EXISTS receipt_status TEXT NOT NULL DEFAULT '';"
    "ALTER TABLE deliveries ADD COLUMN IF NOT EXISTS receipt_error TEXT NOT NULL DEFAULT '';"
    "ALTER TABLE deliveries ADD COLUMN IF NOT EXISTS receipt_ms BIGINT NOT NULL DEFAULT 0;"
    "ALTER TABLE deliveries ADD COLUMN IF NOT EXISTS receipt_final BOOLEAN NOT NULL DEFAULT false;",
    /* 11: conversion blocks (guard/conv.h): each node writes
     * the blocks it makes and polls the table every 2 s for the others' and for clears. */
    "CREATE TABLE IF NOT EXISTS conversion_blocks ("
    "  id TEXT PRIMARY KEY, kind TEXT NOT NULL CHECK (kind IN ('prefix', 'country')),"
    "  key TEXT NOT NULL, country TEXT NOT NULL DEFAULT '', masked TEXT NOT NULL DEFAULT '',"
    "  since_ms BIGINT NOT NULL, until_ms BIGINT NOT NULL, cleared_ms BIGINT NOT NULL DEFAULT 0,"
    "  sends BIGINT NOT NULL DEFAULT 0, verified BIGINT NOT NULL DEFAULT 0,"
    "  mode TEXT NOT NULL DEFAULT 'enforce');"
    "CREATE INDEX IF NOT EXISTS conversion_blocks_until ON conversion_blocks (until_ms);"
    "CREATE INDEX IF NOT EXISTS conversion_blocks_key ON conversion_blocks (kind, key);",
};
#define SCHEMA_VERSION ((int)(sizeof migrations / sizeof migrations[0]))

enum stmt {
    S_TPL_EACH,
    S_TPL_PUT,
    S_TPL_DEL,
    S_OUTBOX_INS,
    S_OUTBOX_EACH,
    S_DELIV_INS,
    S_ROUTE_EACH,
    S_ROUTE_PUT,
    S_ROUTE_DEL,
    S_DLQ_INS,
    S_DLQ_EACH,
    S_DLQ_GET,
    S_DLQ_DEL,
    S_DLQ_COUNT,
    S_PURGE_DLQ,
    S_PURGE_DELIV,
    S_PURGE_OUTBOX,
    S_PURGE_VERIF,
    S_PURGE_CONV,
    S_PREF_EACH,
    S_PREF_PUT,
    S_PREF_DEL,
    S_NOTIFY,
    S_RCPT_FIND,
    S_RCPT_SET,
    S__COUNT
};

static const char *const sql[S__COUNT] = {
    [S_TPL_EACH] = "SELECT language, channel, body, voice_id, updated_ms FROM templates "
                   "ORDER BY language COLLATE \"C\", channel COLLATE \"C\"",
    [S_TPL_PUT] = "INSERT INTO templates (language, channel, body, voice_id, updated_ms) "
                  "VALUES ($1, $2, $3, $4, $5) ON CONFLICT (language, channel) DO UPDATE SET "
                  "body = excluded.body, voice_id = excluded.voice_id, "
                  "updated_ms = excluded.updated_ms",
    [S_TPL_DEL] = "DELETE FROM templates WHERE language = $1 AND channel = $2",
    [S_OUTBOX_INS] = "INSERT INTO outbox (id, created_ms, request_id, recipient, channel, "
                     "language, body, voice_id) VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
    [S_OUTBOX_EACH] = "SELECT id, created_ms, request_id, recipient, channel, language, body, "
                      "voice_id FROM outbox ORDER BY created_ms DESC, seq DESC LIMIT $1",
    [S_DELIV_INS] = "INSERT INTO deliveries (request_id, event_id, created_ms, request_type, "
                    "phone_masked, country, channel, language, source, provider, outcome, "
                    "transaction_id, error, latency_us, attempts, user_id, login_hash, "
                    "phone_hash, locale, preference, prefix_hash, node, verified_ms, "
                    "verified_event) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, "
                    "$9, $10, $11, $12, $13, $14, $15, $16, $17, $18, $19, $20, $21, $22, $23, "
                    "$24) ON CONFLICT (request_id, created_ms) DO NOTHING",
    [S_ROUTE_EACH] = "SELECT channel, country, attempts, updated_ms FROM routes "
                     "ORDER BY channel COLLATE \"C\", country COLLATE \"C\"",
    [S_ROUTE_PUT] = "INSERT INTO routes (channel, country, attempts, updated_ms) VALUES "
                    "($1, $2, $3, $4) ON CONFLICT (channel, country) DO UPDATE SET "
                    "attempts = excluded.attempts, updated_ms = excluded.updated_ms",
    [S_ROUTE_DEL] = "DELETE FROM routes WHERE channel = $1 AND country = $2",
    [S_DLQ_INS] = "INSERT INTO dlq (id, created_ms, request_id, event_id, phone_masked, country, "
                  "channel, language, outcome, errors, attempts, otp_expires_ms, key_id, payload) "
                  "VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14)",
    [S_DLQ_EACH] = "SELECT id, created_ms, request_id, event_id, phone_masked, country, channel, "
                   "language, outcome, errors, attempts, otp_expires_ms, key_id, payload FROM dlq "
                   "ORDER BY created_ms DESC, seq DESC LIMIT $1",
    [S_DLQ_GET] =
        "SELECT id, created_ms, request_id, event_id, phone_masked, country, channel, language, "
        "outcome, errors, attempts, otp_expires_ms, key_id, payload FROM dlq WHERE id = $1",
    [S_DLQ_DEL] = "DELETE FROM dlq WHERE id = $1",
    [S_DLQ_COUNT] = "SELECT count(*) FROM dlq",
    [S_PURGE_DLQ] = "DELETE FROM dlq WHERE created_ms < $1",
    [S_PURGE_DELIV] = "DELETE FROM deliveries WHERE created_ms < $1",
    [S_PURGE_OUTBOX] = "DELETE FROM outbox WHERE created_ms < $1",
    [S_PURGE_VERIF] = "DELETE FROM verifications WHERE sent_ms < $1",
    [S_PURGE_CONV] = "DELETE FROM conversion_blocks WHERE until_ms < $1 AND cleared_ms < $1",
    [S_PREF_EACH] = "SELECT user_key, language, channel, updated_ms FROM prefs "
                    "ORDER BY lower(user_key COLLATE \"C\")",
    [S_PREF_PUT] = "INSERT INTO prefs (user_key, language, channel, updated_ms) VALUES "
                   "($1, $2, $3, $4) ON CONFLICT ((lower(user_key COLLATE \"C\"))) DO UPDATE SET "
                   "user_key = excluded.user_key, language = excluded.language, "
                   "channel = excluded.channel, updated_ms = excluded.updated_ms",
    [S_PREF_DEL] =
        "DELETE FROM prefs WHERE lower(user_key COLLATE \"C\") = lower($1 COLLATE \"C\")",
    [S_NOTIFY] = "SELECT pg_notify('" CATALOG_CHANNEL "', $1)",
    [S_RCPT_FIND] = "SELECT seq, request_id, created_ms, country, channel, receipt_status, "
                    "receipt_final, receipt_ms FROM deliveries WHERE provider = $1 AND "
                    "transaction_id = $2 ORDER BY created_ms DESC, seq DESC LIMIT 1",
    [S_RCPT_SET] = "UPDATE deliveries SET receipt_status = $1, receipt_error = $2, "
                   "receipt_ms = $3, receipt_final = $4 WHERE seq = $5",
};

/* The filters of deliveries_query, one bit each: a statement is prepared per combination used. */
#define DQ_SHAPES 2048

struct pg_store {
    struct th_store base;
    PGconn *conn;
    bool in_tx;    /* between begin and commit/rollback: a failed write must not abort the rest */
    bool prepared; /* the schema is the latest: the fixed statements are prepared */
    bool broken;   /* reconnected but not set up: revive again */
    bool lost;     /* a statement failed for want of the server, not for its row (th_store_lost) */
    int64_t revived_ms;
    long reconnects; /* tests read it (th_store_pg_reconnects) */
    /* statements sent (round trips: blocking libpq waits for each answer); any thread reads it
     * (th_store_pg_round_trips) */
    atomic_long trips;
    unsigned char dq_prepared[DQ_SHAPES / 8];
};

static struct pg_store *P(struct th_store *st)
{
    return (struct pg_store *)st;
}

static void set_err(PGconn *c, char *err, size_t errlen, const char *what)
{
    const char *m = c ? PQerrorMessage(c) : "out of memory";
    size_t n = strlen(m);
    while (n && (m[n - 1] == '\n' || m[n - 1] == ' '))
        n--; /* libpq ends its messages with a newline */
    snprintf(err, errlen, "postgresql: %s%s%.*s", what, *what ? ": " : "", (int)n, m);
}

/* ---- the URL: forms (pg/pg.h), the description without a password ---- */

/* Appends s to out[*n..cap), truncating; keeps out terminated. */
static void put(char *out, size_t cap, size_t *n, const char *s, size_t len)
{
    if (*n + 1 >= cap)
        return;
    size_t room = cap - 1 - *n;
    if (len > room)
        len = room;
    memcpy(out + *n, s, len);
    *n += len;
    out[*n] = '\0';
}

/* A URI without the password of its user-info and without a password= query parameter. */
static void describe_uri(const char *url, char *out, size_t cap)
{
    size_t n = 0;
    out[0] = '\0';
    const char *rest = strstr(url, "://") + 3;
    put(out, cap, &n, url, (size_t)(rest - url));
    size_t auth_len = strcspn(rest, "/?");
    const char *at = NULL;
    for (const char *p = rest; p < rest + auth_len; p++)
        if (*p == '@')
            at = p;
    if (at) {
        size_t user_len = strcspn(rest, ":@");
        put(out, cap, &n, rest, user_len);
        rest = at; /* from the '@' on */
    }
    const char *q = strchr(rest, '?');
    put(out, cap, &n, rest, q ? (size_t)(q - rest) : strlen(rest));
    if (!q)
        return;
    bool first = true;
    for (const char *p = q + 1; *p;) {
        size_t len = strcspn(p, "&");
        if (!(len >= 9 && strncmp(p, "password=", 9) == 0)) {
            put(out, cap, &n, first ? "?" : "&", 1);
            put(out, cap, &n, p, len);
            first = false;
        }
        p += len + (p[len] == '&');
    }
}

/* A conninfo string rebuilt from its parsed keywords, the password left out. */
static bool describe_conninfo(const char *conninfo, char *out, size_t cap)
{
    PQconninfoOption *opts = PQconninfoParse(conninfo, NULL);
    if (!opts)
        return false;
    size_t n = 0;
    out[0] = '\0';
    put(out, cap, &n, "postgresql:", 11);
    bool first = true;
    for (PQconninfoOption *o = opts; o->keyword; o++) {
        if (!o->val || !*o->val || strcmp(o->keyword, "password") == 0)
            continue;
        if (!first)
            put(out, cap, &n, " ", 1);
        first = false;
        put(out, cap, &n, o->keyword, strlen(o->keyword));
        bool quote = strpbrk(o->val, " '\\") != NULL;
        put(out, cap, &n, quote ? "='" : "=", quote ? 2 : 1);
        for (const char *v = o->val; *v; v++) {
            if (*v == '\'' || *v == '\\')
                put(out, cap, &n, "\\", 1);
            put(out, cap, &n, v, 1);
        }
        if (quote)
            put(out, cap, &n, "'", 1);
    }
    PQconninfoFree(opts);
    return true;
}

bool th_store_pg_describe(const char *url, char *out, size_t cap)
{
    if (cap == 0)
        return false;
    if (th_pg_is_uri(url)) {
        /* refuse what libpq would refuse, so the description never names a broken URL */
        PQconninfoOption *opts = PQconninfoParse(url, NULL);
        if (!opts)
            return false;
        PQconninfoFree(opts);
        describe_uri(url, out, cap);
        return true;
    }
    return describe_conninfo(th_pg_conninfo(url), out, cap);
}

/* ---- running statements ---- */

static bool ok_result(PGresult *r)
{
    ExecStatusType t = PQresultStatus(r);
    return t == PGRES_COMMAND_OK || t == PGRES_TUPLES_OK;
}

/*
 * Whether a failed result says the server is out of reach rather than the row at fault: no
 * result or no connection (connection lost), SQLSTATE class 08 (connection exception) or 57
 * (operator intervention: statement_timeout's cancel, the server shutting down or starting).
 */
static void note(struct pg_store *s, const PGresult *r)
{
    if (r && ok_result((PGresult *)r))
        return;
    const char *state = r ? PQresultErrorField(r, PG_DIAG_SQLSTATE) : NULL;
    if (!r || PQstatus(s->conn) != CONNECTION_OK || !state || strncmp(state, "08", 2) == 0 ||
        strncmp(state, "57", 2) == 0)
        s->lost = true;
}

/* One more round trip on the store's connection. */
static void trip(struct pg_store *s)
{
    atomic_fetch_add_explicit(&s->trips, 1, memory_order_relaxed);
}

static PGresult *exec_prepared(struct pg_store *s, const char *name, int n, const char *const *vals,
                               const int *lens, const int *fmts)
{
    trip(s);
    return PQexecPrepared(s->conn, name, n, vals, lens, fmts, 0);
}

static const char *stmt_name(enum stmt i, char buf[16])
{
    snprintf(buf, 16, "th_%d", (int)i);
    return buf;
}

static PGresult *run(struct pg_store *s, enum stmt i, int n, const char *const *vals,
                     const int *lens, const int *fmts)
{
    char name[16];
    return exec_prepared(s, stmt_name(i, name), n, vals, lens, fmts);
}

static th_err simple(PGconn *c, const char *q, char *err, size_t errlen)
{
    PGresult *r = PQexec(c, q);
    th_err e = ok_result(r) ? TH_E_OK : TH_E_STORE;
    if (e != TH_E_OK && err)
        set_err(c, err, errlen, "");
    PQclear(r);
    return e;
}

/* simple() on the store's connection, noting a lost server (the writer's statements). */
static th_err noted(struct pg_store *s, const char *q)
{
    trip(s);
    PGresult *r = PQexec(s->conn, q);
    th_err e = ok_result(r) ? TH_E_OK : TH_E_STORE;
    note(s, r);
    PQclear(r);
    return e;
}

/*
 * A write that may fail (a duplicate id, text that is not UTF-8): inside the writer's
 * transaction (its row-by-row path, store.h's th_store_insert_many) PostgreSQL would
 * abort the whole transaction where SQLite goes on with the next row, so it runs under a
 * savepoint there. Returns the rows it changed in *changed (may be NULL).
 */
static th_err write_stmt(struct pg_store *s, enum stmt i, int n, const char *const *vals,
                         const int *lens, const int *fmts, long *changed)
{
    bool guard = s->in_tx && (i == S_OUTBOX_INS || i == S_DLQ_INS || i == S_DELIV_INS);
    if (guard && noted(s, "SAVEPOINT th_write") != TH_E_OK)
        return TH_E_STORE;
    PGresult *r = run(s, i, n, vals, lens, fmts);
    th_err e = PQresultStatus(r) == PGRES_COMMAND_OK ? TH_E_OK : TH_E_STORE;
    note(s, r);
    if (e == TH_E_OK && changed)
        *changed = strtol(PQcmdTuples(r), NULL, 10);
    PQclear(r);
    if (guard) {
        trip(s);
        simple(s->conn,
               e == TH_E_OK ? "RELEASE SAVEPOINT th_write" : "ROLLBACK TO SAVEPOINT th_write", NULL,
               0);
    }
    return e;
}

/* A delete of one keyed row: TH_E_NOTFOUND when nothing matched. */
static th_err delete_stmt(struct pg_store *s, enum stmt i, int n, const char *const *vals)
{
    long changed = 0;
    th_err e = write_stmt(s, i, n, vals, NULL, NULL, &changed);
    return e == TH_E_OK && changed == 0 ? TH_E_NOTFOUND : e;
}

static const char *txt(const char *v)
{
    return v ? v : "";
}

static int64_t i64(const PGresult *r, int row, int col)
{
    return strtoll(PQgetvalue(r, row, col), NULL, 10);
}

/*
 * Row i of a delivery query: the columns of deliveries in the schema's order; with keys the
 * search keys (login_hash, phone_hash) follow user_id, as `store copy` reads them; without,
 * they stay in the store. The strings are r's.
 */
static struct th_delivery_row delivery_of(const PGresult *r, int i, bool keys)
{
    int k = keys ? 2 : 0;
    return (struct th_delivery_row){
        .request_id = PQgetvalue(r, i, 0),
        .event_id = PQgetvalue(r, i, 1),
        .created_ms = i64(r, i, 2),
        .request_type = PQgetvalue(r, i, 3),
        .phone_masked = PQgetvalue(r, i, 4),
        .country = PQgetvalue(r, i, 5),
        .channel = PQgetvalue(r, i, 6),
        .language = PQgetvalue(r, i, 7),
        .source = PQgetvalue(r, i, 8),
        .provider = PQgetvalue(r, i, 9),
        .outcome = PQgetvalue(r, i, 10),
        .transaction_id = PQgetvalue(r, i, 11),
        .error = PQgetvalue(r, i, 12),
        .latency_us = i64(r, i, 13),
        .attempts = (int)i64(r, i, 14),
        .user_id = PQgetvalue(r, i, 15),
        .login_hash = keys ? PQgetvalue(r, i, 16) : "",
        .phone_hash = keys ? PQgetvalue(r, i, 17) : "",
        .locale = PQgetvalue(r, i, 16 + k),
        .preference = PQgetvalue(r, i, 17 + k),
        .prefix_hash = PQgetvalue(r, i, 18 + k),
        .node = PQgetvalue(r, i, 19 + k),
        .verified_ms = i64(r, i, 20 + k), /* NULL reads "": 0 */
        .verified_event = PQgetvalue(r, i, 21 + k),
    };
}

/* ---- migrations ---- */

/* Reads max(version) into *v; the caller holds the transaction. */
static th_err schema_version(PGconn *c, int *v, char *err, size_t errlen)
{
    PGresult *r = PQexec(c, "SELECT coalesce(max(version), 0) FROM schema_version");
    th_err e = PQresultStatus(r) == PGRES_TUPLES_OK && PQntuples(r) == 1 ? TH_E_OK : TH_E_STORE;
    if (e == TH_E_OK)
        *v = atoi(PQgetvalue(r, 0, 0));
    else
        set_err(c, err, errlen, "cannot read the schema version");
    PQclear(r);
    return e;
}

/*
 * Applies pending migrations, one transaction each. The transaction-scoped advisory lock is
 * taken before the version is read, so nodes starting together on a new database wait for each
 * other and each migration runs once; the lock goes with the transaction.
 */
static th_err migrate(PGconn *c, bool apply, int *version, char *err, size_t errlen)
{
    if (!apply) { /* `store status`: read only, no bookkeeping table created */
        PGresult *r = PQexec(c, "SELECT to_regclass('schema_version') IS NOT NULL");
        bool exists = PQresultStatus(r) == PGRES_TUPLES_OK && PQntuples(r) == 1 &&
                      strcmp(PQgetvalue(r, 0, 0), "t") == 0;
        th_err e = PQresultStatus(r) == PGRES_TUPLES_OK ? TH_E_OK : TH_E_STORE;
        if (e != TH_E_OK)
            set_err(c, err, errlen, "");
        PQclear(r);
        *version = 0;
        if (e != TH_E_OK || !exists)
            return e;
        return schema_version(c, version, err, errlen);
    }
    for (;;) {
        th_err e = simple(c, "BEGIN", err, errlen);
        if (e == TH_E_OK)
            e = simple(c, "SELECT pg_advisory_xact_lock(" MIGRATE_LOCK ")", err, errlen);
        if (e == TH_E_OK)
            e = simple(c,
                       "CREATE TABLE IF NOT EXISTS schema_version (version INTEGER NOT NULL, "
                       "applied_ms BIGINT NOT NULL)",
                       err, errlen);
        int v = 0;
        if (e == TH_E_OK)
            e = schema_version(c, &v, err, errlen);
        if (e == TH_E_OK && v > SCHEMA_VERSION) {
            snprintf(err, errlen,
                     "database schema version %d is newer than this telehook (%d): upgrade "
                     "telehook",
                     v, SCHEMA_VERSION);
            e = TH_E_STORE;
        }
        if (e == TH_E_OK && v == SCHEMA_VERSION) {
            *version = v;
            return simple(c, "COMMIT", err, errlen);
        }
        if (e == TH_E_OK)
            e = simple(c, migrations[v], err, errlen);
        if (e == TH_E_OK) {
            char ver[16], now[24];
            snprintf(ver, sizeof ver, "%d", v + 1);
            snprintf(now, sizeof now, "%lld", (long long)th_wall_ms());
            const char *vals[] = {ver, now};
            PGresult *r = PQexecParams(c, "INSERT INTO schema_version VALUES ($1, $2)", 2, NULL,
                                       vals, NULL, NULL, 0);
            if (!ok_result(r)) {
                set_err(c, err, errlen, "");
                e = TH_E_STORE;
            }
            PQclear(r);
        }
        if (e == TH_E_OK)
            e = simple(c, "COMMIT", err, errlen);
        if (e != TH_E_OK) {
            simple(c, "ROLLBACK", NULL, 0);
            return e;
        }
    }
}

/* ---- open / close ---- */

static void pg_close(struct th_store *st)
{
    struct pg_store *s = P(st);
    PQfinish(s->conn);
    free(s);
}

/* Whether the connection string sets keyword (a URI's query or a conninfo's keyword). */
static bool sets(const char *conninfo, const char *keyword)
{
    PQconninfoOption *opts = PQconninfoParse(conninfo, NULL);
    bool set = false;
    for (PQconninfoOption *o = opts; o && o->keyword; o++)
        if (strcmp(o->keyword, keyword) == 0 && o->val && *o->val)
            set = true;
    PQconninfoFree(opts);
    return set;
}

#define CONN_KEYS 10

/*
 * libpq's keywords for url: the URL first (expanded), then defaults it does not set (later
 * keywords override, so a default is added only where nothing set it). TCP keepalives, since a
 * listener only reads and a reload connection idles: without them a dead network would leave
 * them waiting for hours.
 */
static void conn_params(const char *url, bool listener, const char *keys[CONN_KEYS],
                        const char *vals[CONN_KEYS])
{
    const char *conninfo = th_pg_conninfo(url);
    int n = 0;
    keys[n] = "dbname";
    vals[n++] = conninfo;
    keys[n] = "fallback_application_name";
    vals[n++] = listener ? "telehook-listen" : "telehook";
    if (!sets(conninfo, "connect_timeout") && !getenv("PGCONNECT_TIMEOUT")) {
        keys[n] = "connect_timeout";
        vals[n++] = CONNECT_TIMEOUT_S;
    }
    if (!sets(conninfo, "keepalives_idle")) {
        keys[n] = "keepalives_idle";
        vals[n++] = "10";
        keys[n] = "keepalives_interval";
        vals[n++] = "5";
        keys[n] = "keepalives_count";
        vals[n++] = "3";
    }
    /* data sent to a database that vanished without a reset (a partition, a dead machine):
     * given up after this, not after the kernel's ~15 minutes of retransmissions */
    if (!sets(conninfo, "tcp_user_timeout")) {
        keys[n] = "tcp_user_timeout";
        vals[n++] = TCP_USER_TIMEOUT_MS;
    }
    keys[n] = vals[n] = NULL;
}

/* The session's settings, on a new connection and on every reconnection. */
static th_err session_setup(PGconn *c, char *err, size_t errlen)
{
    /* 5 s per statement unless the URL's options, PGOPTIONS or the role already set one */
    char set_timeout[160];
    snprintf(set_timeout, sizeof set_timeout,
             "SELECT set_config('statement_timeout', '%d', false) "
             "WHERE current_setting('statement_timeout') = '0'",
             STATEMENT_TIMEOUT_MS);
    th_err e = simple(c, set_timeout, err, errlen);
    return e != TH_E_OK ? e : simple(c, "SET client_min_messages = warning", err, errlen);
}

/* Prepares every fixed statement (a session's: again after a reconnection). */
static th_err prepare_all(struct pg_store *s, char *err, size_t errlen)
{
    memset(s->dq_prepared, 0, sizeof s->dq_prepared);
    for (int i = 0; i < S__COUNT; i++) {
        char name[16];
        PGresult *r = PQprepare(s->conn, stmt_name((enum stmt)i, name), sql[i], 0, NULL);
        bool ok = ok_result(r);
        PQclear(r);
        if (!ok) {
            set_err(s->conn, err, errlen, "");
            return TH_E_STORE;
        }
    }
    return TH_E_OK;
}

/*
 * A connection the server dropped (a failover, a restart, a terminated backend) is made again
 * before the store's next operation (store.c calls this first), never inside a transaction:
 * that died with the connection, and its operations fail until the caller's commit or rollback;
 * the next begin revives it. The operation that found the connection dead has failed and is
 * not retried here (a write may or may not have committed). Tried at most once a second, so a
 * database that stays away costs an operation a failed check, not a connection attempt each.
 */
static void pg_revive(struct th_store *st)
{
    struct pg_store *s = P(st);
    if (s->in_tx || (PQstatus(s->conn) != CONNECTION_BAD && !s->broken))
        return;
    int64_t now = th_mono_us() / 1000;
    if (s->revived_ms && now - s->revived_ms < REVIVE_EVERY_MS)
        return;
    bool first = !s->broken; /* the first try of this outage: said once, not every second */
    s->revived_ms = now;
    PQreset(s->conn);
    char err[512] = "";
    if (PQstatus(s->conn) != CONNECTION_OK)
        set_err(s->conn, err, sizeof err, "");
    s->broken = err[0] || session_setup(s->conn, err, sizeof err) != TH_E_OK ||
                (s->prepared && prepare_all(s, err, sizeof err) != TH_E_OK);
    if (!s->broken) {
        s->lost = false;
        s->reconnects++;
        th_log_msg(TH_LOG_INFO, "store", "connection to %s made again", s->base.describe);
    } else if (first) {
        th_log_msg(TH_LOG_WARN, "store", "connection to %s lost, retried every second: %s",
                   s->base.describe, err);
    }
}

static th_err pg_open_mode(const char *url, bool apply, struct th_store **out, char *err,
                           size_t errlen)
{
    struct pg_store *s = calloc(1, sizeof *s);
    if (!s)
        return TH_E_NOMEM;
    s->base.ops = &th_store_pg_ops;
    if (!th_store_pg_describe(url, s->base.describe, sizeof s->base.describe)) {
        /* libpq's parse message may quote the password: say what is wrong without it */
        snprintf(err, errlen,
                 "postgresql: the store URL is neither a libpq URI (postgresql://...) nor a "
                 "connection string (postgresql:host=... dbname=...)");
        free(s);
        return TH_E_STORE;
    }
    const char *keys[CONN_KEYS], *vals[CONN_KEYS];
    conn_params(url, false, keys, vals);
    s->conn = PQconnectdbParams(keys, vals, 1);
    th_err e = TH_E_STORE;
    if (!s->conn || PQstatus(s->conn) != CONNECTION_OK) {
        char what[600];
        snprintf(what, sizeof what, "cannot connect to %s", s->base.describe);
        set_err(s->conn, err, errlen, what);
        goto fail;
    }
    int version = 0;
    if ((e = session_setup(s->conn, err, errlen)) != TH_E_OK ||
        (e = migrate(s->conn, apply, &version, err, errlen)) != TH_E_OK)
        goto fail;
    s->prepared = version == SCHEMA_VERSION;
    if (s->prepared && (e = prepare_all(s, err, errlen)) != TH_E_OK)
        goto fail;
    *out = &s->base;
    return TH_E_OK;
fail:
    pg_close(&s->base);
    return e;
}

static th_err pg_open(const char *url, struct th_store **out, char *err, size_t errlen)
{
    return pg_open_mode(url, true, out, err, errlen);
}

static th_err pg_open_unmigrated(const char *url, struct th_store **out, char *err, size_t errlen)
{
    return pg_open_mode(url, false, out, err, errlen);
}

/* ---- templates, preferences, routes ---- */

/* COMMIT, checking the tag: a COMMIT of an aborted transaction answers ROLLBACK, no error. */
static th_err commit_checked(PGconn *c)
{
    PGresult *r = PQexec(c, "COMMIT");
    th_err e = PQresultStatus(r) == PGRES_COMMAND_OK && strcmp(PQcmdStatus(r), "COMMIT") == 0
                   ? TH_E_OK
                   : TH_E_STORE;
    PQclear(r);
    return e;
}

/*
 * A put or delete of a catalog row, and its notification to every listening node in the same
 * transaction: delivered when, and only when, the change commits (a rolled-back change wakes
 * nobody; a committed one is never missed by a connected listener). Outside the caller's
 * transaction the write gets its own. A delete that matched nothing is TH_E_NOTFOUND and
 * notifies nothing.
 */
static th_err catalog_stmt(struct pg_store *s, enum stmt i, int n, const char *const *vals,
                           const char *table, bool del)
{
    bool own = !s->in_tx;
    if (own && simple(s->conn, "BEGIN", NULL, 0) != TH_E_OK)
        return TH_E_STORE;
    long changed = 0;
    th_err e = write_stmt(s, i, n, vals, NULL, NULL, &changed);
    if (e == TH_E_OK && del && changed == 0)
        e = TH_E_NOTFOUND;
    if (e == TH_E_OK) {
        const char *v[] = {table};
        PGresult *r = run(s, S_NOTIFY, 1, v, NULL, NULL);
        e = ok_result(r) ? TH_E_OK : TH_E_STORE;
        PQclear(r);
    }
    if (own && e == TH_E_OK)
        e = commit_checked(s->conn);
    else if (own)
        simple(s->conn, "ROLLBACK", NULL, 0);
    return e;
}

static th_err pg_templates_each(struct th_store *st, th_template_row_fn fn, void *ud)
{
    PGresult *r = run(P(st), S_TPL_EACH, 0, NULL, NULL, NULL);
    th_err e = PQresultStatus(r) == PGRES_TUPLES_OK ? TH_E_OK : TH_E_STORE;
    for (int i = 0; e == TH_E_OK && i < PQntuples(r); i++) {
        struct th_template_row row = {PQgetvalue(r, i, 0), PQgetvalue(r, i, 1), PQgetvalue(r, i, 2),
                                      PQgetvalue(r, i, 3), i64(r, i, 4)};
        if (fn(ud, &row))
            break;
    }
    PQclear(r);
    return e;
}

static th_err pg_template_put(struct th_store *st, const struct th_template_row *row)
{
    char ms[24];
    snprintf(ms, sizeof ms, "%lld", (long long)row->updated_ms);
    const char *v[] = {txt(row->language), txt(row->channel), txt(row->body), txt(row->voice_id),
                       ms};
    return catalog_stmt(P(st), S_TPL_PUT, 5, v, "templates", false);
}

static th_err pg_template_delete(struct th_store *st, const char *language, const char *channel)
{
    const char *v[] = {txt(language), txt(channel)};
    return catalog_stmt(P(st), S_TPL_DEL, 2, v, "templates", true);
}

static th_err pg_prefs_each(struct th_store *st, th_pref_row_fn fn, void *ud)
{
    PGresult *r = run(P(st), S_PREF_EACH, 0, NULL, NULL, NULL);
    th_err e = PQresultStatus(r) == PGRES_TUPLES_OK ? TH_E_OK : TH_E_STORE;
    for (int i = 0; e == TH_E_OK && i < PQntuples(r); i++) {
        struct th_pref_row row = {PQgetvalue(r, i, 0), PQgetvalue(r, i, 1), PQgetvalue(r, i, 2),
                                  i64(r, i, 3)};
        if (fn(ud, &row))
            break;
    }
    PQclear(r);
    return e;
}

static th_err pg_pref_put(struct th_store *st, const struct th_pref_row *row)
{
    char ms[24];
    snprintf(ms, sizeof ms, "%lld", (long long)row->updated_ms);
    const char *v[] = {txt(row->user), txt(row->language), txt(row->channel), ms};
    return catalog_stmt(P(st), S_PREF_PUT, 4, v, "prefs", false);
}

static th_err pg_pref_delete(struct th_store *st, const char *user)
{
    const char *v[] = {txt(user)};
    return catalog_stmt(P(st), S_PREF_DEL, 1, v, "prefs", true);
}

static th_err pg_routes_each(struct th_store *st, th_route_row_fn fn, void *ud)
{
    PGresult *r = run(P(st), S_ROUTE_EACH, 0, NULL, NULL, NULL);
    th_err e = PQresultStatus(r) == PGRES_TUPLES_OK ? TH_E_OK : TH_E_STORE;
    for (int i = 0; e == TH_E_OK && i < PQntuples(r); i++) {
        struct th_route_row row = {PQgetvalue(r, i, 0), PQgetvalue(r, i, 1), PQgetvalue(r, i, 2),
                                   i64(r, i, 3)};
        if (fn(ud, &row))
            break;
    }
    PQclear(r);
    return e;
}

static th_err pg_route_put(struct th_store *st, const struct th_route_row *row)
{
    char ms[24];
    snprintf(ms, sizeof ms, "%lld", (long long)row->updated_ms);
    const char *v[] = {txt(row->channel), txt(row->country), txt(row->attempts), ms};
    return catalog_stmt(P(st), S_ROUTE_PUT, 4, v, "routes", false);
}

static th_err pg_route_delete(struct th_store *st, const char *channel, const char *country)
{
    const char *v[] = {txt(channel), txt(country)};
    return catalog_stmt(P(st), S_ROUTE_DEL, 2, v, "routes", true);
}

/* ---- outbox, deliveries ---- */

/*
 * A row's values in its INSERT's column order, for the one-row statements and the multi-row
 * INSERT alike (a column added is added here once). The numbers are written as text into num;
 * lens and fmts (may be NULL: all text) mark a DLQ entry's payload as binary.
 */
#define NUMS        4 /* numbers per row at most */
#define OUTBOX_COLS 8
#define DELIV_COLS  24
#define DLQ_COLS    14

static void outbox_vals(const void *r, const char **v, int *lens, int *fmts, char num[NUMS][24])
{
    const struct th_outbox_row *row = r;
    (void)lens;
    (void)fmts;
    snprintf(num[0], 24, "%lld", (long long)row->created_ms);
    const char *x[OUTBOX_COLS] = {
        txt(row->id),       num[0],         txt(row->request_id), txt(row->to), txt(row->channel),
        txt(row->language), txt(row->body), txt(row->voice_id)};
    memcpy(v, x, sizeof x);
}

static void delivery_vals(const void *r, const char **v, int *lens, int *fmts, char num[NUMS][24])
{
    const struct th_delivery_row *row = r;
    (void)lens;
    (void)fmts;
    snprintf(num[0], 24, "%lld", (long long)row->created_ms);
    snprintf(num[1], 24, "%lld", (long long)row->latency_us);
    snprintf(num[2], 24, "%d", row->attempts);
    snprintf(num[3], 24, "%lld", (long long)row->verified_ms);
    const char *x[DELIV_COLS] = {txt(row->request_id),
                                 txt(row->event_id),
                                 num[0],
                                 txt(row->request_type),
                                 txt(row->phone_masked),
                                 txt(row->country),
                                 txt(row->channel),
                                 txt(row->language),
                                 txt(row->source),
                                 txt(row->provider),
                                 txt(row->outcome),
                                 txt(row->transaction_id),
                                 txt(row->error),
                                 num[1],
                                 num[2],
                                 txt(row->user_id),
                                 txt(row->login_hash),
                                 txt(row->phone_hash),
                                 txt(row->locale),
                                 txt(row->preference),
                                 txt(row->prefix_hash),
                                 txt(row->node),
                                 row->verified_ms ? num[3] : NULL, /* NULL: not verified */
                                 txt(row->verified_event)};
    memcpy(v, x, sizeof x);
}

static void dlq_vals(const void *r, const char **v, int *lens, int *fmts, char num[NUMS][24])
{
    const struct th_dlq_row *row = r;
    snprintf(num[0], 24, "%lld", (long long)row->created_ms);
    snprintf(num[1], 24, "%d", row->attempts);
    snprintf(num[2], 24, "%lld", (long long)row->otp_expires_ms);
    const char *x[DLQ_COLS] = {txt(row->id), num[0], txt(row->request_id), txt(row->event_id),
                               txt(row->phone_masked), txt(row->country), txt(row->channel),
                               txt(row->language), txt(row->outcome), txt(row->errors), num[1],
                               num[2], txt(row->key_id),
                               /* NULL: SQL NULL */
                               row->payload_len ? (const char *)row->payload : NULL};
    memcpy(v, x, sizeof x);
    if (lens && fmts) {
        lens[DLQ_COLS - 1] = (int)row->payload_len;
        fmts[DLQ_COLS - 1] = 1; /* the sealed payload goes as binary bytea */
    }
}

static th_err pg_outbox_insert(struct th_store *st, const struct th_outbox_row *row)
{
    const char *v[OUTBOX_COLS];
    char num[NUMS][24];
    outbox_vals(row, v, NULL, NULL, num);
    return write_stmt(P(st), S_OUTBOX_INS, OUTBOX_COLS, v, NULL, NULL, NULL);
}

static th_err pg_outbox_each(struct th_store *st, int limit, th_outbox_row_fn fn, void *ud)
{
    char lim[16];
    snprintf(lim, sizeof lim, "%d", limit);
    const char *v[] = {lim};
    PGresult *r = run(P(st), S_OUTBOX_EACH, 1, v, NULL, NULL);
    th_err e = PQresultStatus(r) == PGRES_TUPLES_OK ? TH_E_OK : TH_E_STORE;
    for (int i = 0; e == TH_E_OK && i < PQntuples(r); i++) {
        struct th_outbox_row row = {
            .id = PQgetvalue(r, i, 0),
            .created_ms = i64(r, i, 1),
            .request_id = PQgetvalue(r, i, 2),
            .to = PQgetvalue(r, i, 3),
            .channel = PQgetvalue(r, i, 4),
            .language = PQgetvalue(r, i, 5),
            .body = PQgetvalue(r, i, 6),
            .voice_id = PQgetvalue(r, i, 7),
        };
        if (fn(ud, &row))
            break;
    }
    PQclear(r);
    return e;
}

static th_err pg_delivery_insert(struct th_store *st, const struct th_delivery_row *row)
{
    const char *v[DELIV_COLS];
    char num[NUMS][24];
    delivery_vals(row, v, NULL, NULL, num);
    return write_stmt(P(st), S_DELIV_INS, DELIV_COLS, v, NULL, NULL, NULL);
}

/*
 * One table's rows in one INSERT ... VALUES ($1, ...), ($21, ...), ...: one round trip for the
 * lot (at most 65535 parameters a statement: a longer list goes in several). The SQL is built
 * from placeholders only; every value is bound. Not prepared: its length varies with the batch,
 * and parsing it costs the server far less than a round trip a row.
 */
static th_err insert_rows(struct pg_store *s, const char *head, const char *tail, int ncols,
                          void (*vals)(const void *, const char **, int *, int *, char[NUMS][24]),
                          const void *const *rows, size_t nrows)
{
    size_t chunk = 65535 / (size_t)ncols;
    for (size_t at = 0; at < nrows; at += chunk) {
        size_t n = nrows - at < chunk ? nrows - at : chunk, np = n * (size_t)ncols;
        size_t cap = strlen(head) + strlen(tail) + n * ((size_t)ncols * 8 + 4) + 1;
        char *text = malloc(cap), (*num)[NUMS][24] = malloc(n * sizeof *num);
        const char **v = malloc(np * sizeof *v);
        int *lens = calloc(np, sizeof *lens), *fmts = calloc(np, sizeof *fmts);
        th_err e = TH_E_NOMEM;
        if (text && num && v && lens && fmts) {
            size_t len = (size_t)snprintf(text, cap, "%s", head);
            for (size_t i = 0; i < n; i++) {
                size_t k = i * (size_t)ncols;
                vals(rows[at + i], v + k, lens + k, fmts + k, num[i]);
                for (int c = 0; c < ncols; c++)
                    len += (size_t)snprintf(text + len, cap - len, "%s$%zu%s",
                                            c   ? ""
                                            : i ? ", ("
                                                : "(",
                                            k + (size_t)c + 1, c + 1 < ncols ? ", " : ")");
            }
            snprintf(text + len, cap - len, "%s", tail);
            trip(s);
            PGresult *r = PQexecParams(s->conn, text, (int)np, NULL, v, lens, fmts, 0);
            e = PQresultStatus(r) == PGRES_COMMAND_OK ? TH_E_OK : TH_E_STORE;
            note(s, r);
            PQclear(r);
        }
        free(text);
        free(num);
        free(v);
        free(lens);
        free(fmts);
        if (e != TH_E_OK)
            return e;
    }
    return TH_E_OK;
}

/* store.h: each table's rows in one statement, all or nothing, in the caller's transaction. */
static th_err pg_insert_many(struct th_store *st, const struct th_store_rows *rows)
{
    struct pg_store *s = P(st);
    th_err e = TH_E_OK;
    if (rows->ndeliveries)
        e = insert_rows(s,
                        "INSERT INTO deliveries (request_id, event_id, created_ms, request_type, "
                        "phone_masked, country, channel, language, source, provider, outcome, "
                        "transaction_id, error, latency_us, attempts, user_id, login_hash, "
                        "phone_hash, locale, preference, prefix_hash, node, verified_ms, "
                        "verified_event) VALUES ",
                        " ON CONFLICT (request_id, created_ms) DO NOTHING", DELIV_COLS,
                        delivery_vals, (const void *const *)rows->deliveries, rows->ndeliveries);
    if (e == TH_E_OK && rows->noutbox)
        e = insert_rows(s,
                        "INSERT INTO outbox (id, created_ms, request_id, recipient, channel, "
                        "language, body, voice_id) VALUES ",
                        "", OUTBOX_COLS, outbox_vals, (const void *const *)rows->outbox,
                        rows->noutbox);
    if (e == TH_E_OK && rows->ndlq)
        e = insert_rows(s,
                        "INSERT INTO dlq (id, created_ms, request_id, event_id, phone_masked, "
                        "country, channel, language, outcome, errors, attempts, otp_expires_ms, "
                        "key_id, payload) VALUES ",
                        "", DLQ_COLS, dlq_vals, (const void *const *)rows->dlq, rows->ndlq);
    return e;
}

/*
 * A filtered listing: the WHERE clause is built from fixed pieces, every value is bound, and
 * each combination of filters is prepared once per connection (named by its bits).
 */
static th_err pg_deliveries_query(struct th_store *st, const struct th_delivery_filter *f,
                                  th_delivery_row_fn fn, void *ud)
{
    struct pg_store *s = P(st);
    const char *texts[] = {f->outcome,    f->provider, f->country,   f->channel,
                           f->request_id, f->event_id, f->phone_hash};
    static const char *const cols[] = {"outcome",    "provider", "country",   "channel",
                                       "request_id", "event_id", "phone_hash"};
    bool user = f->user_id && *f->user_id, login = f->login_hash && *f->login_hash;
    unsigned shape =
        (f->since_ms ? 1u : 0) | (f->until_ms ? 2u : 0) | (user ? 4u : 0) | (login ? 8u : 0);
    for (size_t i = 0; i < TH_ARRAY_LEN(texts); i++)
        if (texts[i] && *texts[i])
            shape |= 16u << i;
    char name[24];
    snprintf(name, sizeof name, "th_dq_%u", shape);
    char since[24], until[24], lim[16];
    const char *vals[16];
    int n = 0;
    char q[2048] = "SELECT request_id, event_id, created_ms, request_type, phone_masked, country, "
                   "channel, language, source, provider, outcome, transaction_id, error, "
                   "latency_us, attempts, user_id, locale, preference, prefix_hash, node, "
                   "verified_ms, verified_event, receipt_status, receipt_error, receipt_ms "
                   "FROM deliveries WHERE true";
    size_t ql = strlen(q);
#define ADD(...) (ql += (size_t)snprintf(q + ql, sizeof q - ql, __VA_ARGS__))
    if (f->since_ms) {
        snprintf(since, sizeof since, "%lld", (long long)f->since_ms);
        vals[n++] = since;
        ADD(" AND created_ms >= $%d", n);
    }
    if (f->until_ms) {
        snprintf(until, sizeof until, "%lld", (long long)f->until_ms);
        vals[n++] = until;
        ADD(" AND created_ms < $%d", n);
    }
    for (size_t i = 0; i < TH_ARRAY_LEN(texts); i++) {
        if (texts[i] && *texts[i]) {
            vals[n++] = texts[i];
            ADD(" AND %s = $%d", cols[i], n);
        }
    }
    if (user && login) {
        vals[n++] = f->user_id;
        vals[n++] = f->login_hash;
        ADD(" AND (user_id = $%d OR login_hash = $%d)", n - 1, n);
    } else if (user) {
        vals[n++] = f->user_id;
        ADD(" AND user_id = $%d", n);
    } else if (login) {
        vals[n++] = f->login_hash;
        ADD(" AND login_hash = $%d", n);
    }
    snprintf(lim, sizeof lim, "%d", f->limit > 0 ? f->limit : 20);
    vals[n++] = lim;
    ADD(" ORDER BY created_ms DESC, seq DESC LIMIT $%d", n);
#undef ADD
    if (!(s->dq_prepared[shape / 8] & (1u << (shape % 8)))) {
        PGresult *p = PQprepare(s->conn, name, q, 0, NULL);
        bool ok = ok_result(p);
        PQclear(p);
        if (!ok)
            return TH_E_STORE;
        s->dq_prepared[shape / 8] |= (unsigned char)(1u << (shape % 8));
    }
    PGresult *r = exec_prepared(s, name, n, vals, NULL, NULL);
    th_err e = PQresultStatus(r) == PGRES_TUPLES_OK ? TH_E_OK : TH_E_STORE;
    for (int i = 0; e == TH_E_OK && i < PQntuples(r); i++) {
        struct th_delivery_row row = delivery_of(r, i, false);
        row.receipt_status = PQgetvalue(r, i, 22);
        row.receipt_error = PQgetvalue(r, i, 23);
        row.receipt_ms = i64(r, i, 24);
        if (fn(ud, &row))
            break;
    }
    PQclear(r);
    return e;
}

/* ---- delivery receipts ---- */

static th_err pg_receipt_find(struct th_store *st, const char *provider, const char *transaction_id,
                              int64_t *row, struct th_receipt_applied *t, char *cur_status,
                              size_t cur_len, bool *cur_final, int64_t *cur_ms)
{
    struct pg_store *s = P(st);
    const char *v[] = {provider, transaction_id};
    PGresult *r = run(s, S_RCPT_FIND, 2, v, NULL, NULL);
    th_err e = PQresultStatus(r) != PGRES_TUPLES_OK ? TH_E_STORE
               : PQntuples(r) == 0                  ? TH_E_NOTFOUND
                                                    : TH_E_OK;
    note(s, r);
    if (e == TH_E_OK) {
        *row = i64(r, 0, 0);
        th_strlcpy(t->request_id, PQgetvalue(r, 0, 1), sizeof t->request_id);
        t->sent_ms = i64(r, 0, 2);
        th_strlcpy(t->country, PQgetvalue(r, 0, 3), sizeof t->country);
        th_strlcpy(t->channel, PQgetvalue(r, 0, 4), sizeof t->channel);
        th_strlcpy(cur_status, PQgetvalue(r, 0, 5), cur_len);
        *cur_final = PQgetvalue(r, 0, 6)[0] == 't';
        *cur_ms = i64(r, 0, 7);
    }
    PQclear(r);
    return e;
}

static th_err pg_receipt_set(struct th_store *st, int64_t row, const struct th_receipt_row *rc)
{
    char ms[24], seq[24];
    snprintf(ms, sizeof ms, "%lld", (long long)rc->event_ms);
    snprintf(seq, sizeof seq, "%lld", (long long)row);
    const char *v[] = {rc->status, rc->error ? rc->error : "", ms, rc->final ? "t" : "f", seq};
    return write_stmt(P(st), S_RCPT_SET, 5, v, NULL, NULL, NULL);
}

/* ---- dead-letter queue ---- */

static th_err pg_dlq_insert(struct th_store *st, const struct th_dlq_row *row)
{
    const char *v[DLQ_COLS];
    int lens[DLQ_COLS] = {0}, fmts[DLQ_COLS] = {0};
    char num[NUMS][24];
    dlq_vals(row, v, lens, fmts, num);
    return write_stmt(P(st), S_DLQ_INS, DLQ_COLS, v, lens, fmts, NULL);
}

/* Calls fn with row i of r; the payload unescaped for the call. */
static int dlq_call(const PGresult *r, int i, th_dlq_row_fn fn, void *ud, th_err *e)
{
    size_t plen = 0;
    unsigned char *payload = NULL;
    if (!PQgetisnull(r, i, 13)) {
        payload = PQunescapeBytea((const unsigned char *)PQgetvalue(r, i, 13), &plen);
        if (!payload) {
            *e = TH_E_NOMEM;
            return 1;
        }
    }
    struct th_dlq_row row = {
        .id = PQgetvalue(r, i, 0),
        .created_ms = i64(r, i, 1),
        .request_id = PQgetvalue(r, i, 2),
        .event_id = PQgetvalue(r, i, 3),
        .phone_masked = PQgetvalue(r, i, 4),
        .country = PQgetvalue(r, i, 5),
        .channel = PQgetvalue(r, i, 6),
        .language = PQgetvalue(r, i, 7),
        .outcome = PQgetvalue(r, i, 8),
        .errors = PQgetvalue(r, i, 9),
        .attempts = (int)i64(r, i, 10),
        .otp_expires_ms = i64(r, i, 11),
        .key_id = PQgetvalue(r, i, 12),
        .payload = plen ? payload : NULL,
        .payload_len = plen,
    };
    int stop = fn(ud, &row);
    PQfreemem(payload);
    return stop;
}

static th_err pg_dlq_each(struct th_store *st, int limit, th_dlq_row_fn fn, void *ud)
{
    char lim[16];
    snprintf(lim, sizeof lim, "%d", limit);
    const char *v[] = {lim};
    PGresult *r = run(P(st), S_DLQ_EACH, 1, v, NULL, NULL);
    th_err e = PQresultStatus(r) == PGRES_TUPLES_OK ? TH_E_OK : TH_E_STORE;
    for (int i = 0; e == TH_E_OK && i < PQntuples(r); i++)
        if (dlq_call(r, i, fn, ud, &e))
            break;
    PQclear(r);
    return e;
}

static th_err pg_dlq_get(struct th_store *st, const char *id, th_dlq_row_fn fn, void *ud)
{
    const char *v[] = {txt(id)};
    PGresult *r = run(P(st), S_DLQ_GET, 1, v, NULL, NULL);
    th_err e = PQresultStatus(r) != PGRES_TUPLES_OK ? TH_E_STORE
               : PQntuples(r) == 0                  ? TH_E_NOTFOUND
                                                    : TH_E_OK;
    if (e == TH_E_OK)
        dlq_call(r, 0, fn, ud, &e);
    PQclear(r);
    return e;
}

static th_err pg_dlq_delete(struct th_store *st, const char *id)
{
    const char *v[] = {txt(id)};
    return delete_stmt(P(st), S_DLQ_DEL, 1, v);
}

static th_err pg_dlq_count(struct th_store *st, long *n)
{
    PGresult *r = run(P(st), S_DLQ_COUNT, 0, NULL, NULL, NULL);
    th_err e = PQresultStatus(r) == PGRES_TUPLES_OK && PQntuples(r) == 1 ? TH_E_OK : TH_E_STORE;
    if (e == TH_E_OK)
        *n = (long)i64(r, 0, 0);
    PQclear(r);
    return e;
}

static th_err purge_one(struct th_store *st, enum stmt which, int64_t before_ms, long *n)
{
    char ms[24];
    snprintf(ms, sizeof ms, "%lld", (long long)before_ms);
    const char *v[] = {ms};
    long changed = 0;
    th_err e = write_stmt(P(st), which, 1, v, NULL, NULL, &changed);
    *n += e == TH_E_OK ? changed : 0;
    return e;
}

/*
 * Under a session advisory lock taken without waiting: of N nodes sharing the database, one
 * purges and the others skip (TH_E_BUSY) until their next turn. A node that dies holding it
 * loses it with its connection.
 */
static th_err pg_purge(struct th_store *st, const struct th_purge *p, long *removed)
{
    *removed = 0;
    PGresult *r = PQexec(P(st)->conn, "SELECT pg_try_advisory_lock(" PURGE_LOCK ")");
    note(P(st), r);
    bool ok = PQresultStatus(r) == PGRES_TUPLES_OK && PQntuples(r) == 1;
    bool mine = ok && strcmp(PQgetvalue(r, 0, 0), "t") == 0;
    PQclear(r);
    if (!mine)
        return ok ? TH_E_BUSY : TH_E_STORE;
    th_err e = TH_E_OK;
    if (e == TH_E_OK && p->dlq_before_ms > 0)
        e = purge_one(st, S_PURGE_DLQ, p->dlq_before_ms, removed);
    if (e == TH_E_OK && p->deliveries_before_ms > 0)
        e = purge_one(st, S_PURGE_DELIV, p->deliveries_before_ms, removed);
    if (e == TH_E_OK && p->deliveries_before_ms > 0) /* verifications go with their deliveries */
        e = purge_one(st, S_PURGE_VERIF, p->deliveries_before_ms, removed);
    /* blocks long over go with the deliveries they were made on: else the table grows for ever
     * and every node's poll of it (each second) reads more */
    if (e == TH_E_OK && p->deliveries_before_ms > 0)
        e = purge_one(st, S_PURGE_CONV, p->deliveries_before_ms, removed);
    if (e == TH_E_OK && p->outbox_before_ms > 0)
        e = purge_one(st, S_PURGE_OUTBOX, p->outbox_before_ms, removed);
    noted(P(st), "SELECT pg_advisory_unlock(" PURGE_LOCK ")");
    return e;
}

/* ---- transactions ---- */

/* ---- verifications (store.h) ---- */

/* A statement not prepared (rare ones: an Okta event, a poll, a report), noting a lost server. */
static PGresult *adhoc(struct pg_store *s, const char *q, int n, const char *const *vals)
{
    trip(s);
    PGresult *r = PQexecParams(s->conn, q, n, NULL, vals, NULL, NULL, 0);
    note(s, r);
    return r;
}

/*
 * One statement, one round trip: the duplicate check, the match (locked: two events cannot
 * credit one delivery), the verification's row and the mark. Two nodes taking one event at
 * once: the unique event_id lets one insert, the other finds no row inserted (a duplicate).
 */
static th_err pg_verify(struct th_store *st, const struct th_verify_event *ev,
                        enum th_verify_result *res, th_verified_fn fn, void *ud)
{
    static const char q[] =
        "WITH dup AS (SELECT 1 FROM verifications WHERE event_id = $1),"
        " d AS (SELECT seq, request_id, created_ms, node, country, prefix_hash, provider,"
        "   channel, transaction_id, phone_hash FROM deliveries WHERE user_id = $2 AND"
        "   channel = $3 AND"
        "   outcome = 'SUCCESSFUL' AND created_ms >= $4::bigint AND created_ms <= $5::bigint AND"
        "   verified_ms IS NULL AND NOT EXISTS (SELECT 1 FROM dup)"
        "   ORDER BY created_ms DESC, seq DESC LIMIT 1 FOR UPDATE),"
        " v AS (INSERT INTO verifications (event_id, request_id, node, matched_by, country,"
        "   prefix_hash, provider, channel, transaction_id, sent_ms, verified_ms, phone_hash)"
        "   SELECT $1, request_id, node, $7, country, prefix_hash, provider, channel,"
        "   transaction_id, created_ms, $6::bigint, phone_hash FROM d"
        "   ON CONFLICT (event_id) DO NOTHING"
        "   RETURNING seq),"
        " u AS (UPDATE deliveries SET verified_ms = $6::bigint, verified_event = $1 FROM d, v"
        "   WHERE deliveries.seq = d.seq)"
        " SELECT (SELECT count(*) FROM dup), v.seq, d.request_id, d.created_ms, d.node,"
        " d.country, d.prefix_hash, d.provider, d.channel, d.transaction_id, d.phone_hash"
        " FROM (SELECT 1) one LEFT JOIN d ON true LEFT JOIN v ON true";
    char from[24], to[24], at[24];
    snprintf(from, sizeof from, "%lld", (long long)ev->from_ms);
    snprintf(to, sizeof to, "%lld", (long long)ev->to_ms);
    snprintf(at, sizeof at, "%lld", (long long)ev->verified_ms);
    const char *v[] = {txt(ev->event_id),  txt(ev->user_id), txt(ev->channel), from, to, at,
                       txt(ev->matched_by)};
    *res = TH_VERIFY_UNMATCHED;
    PGresult *r = adhoc(P(st), q, 7, v);
    if (PQresultStatus(r) != PGRES_TUPLES_OK || PQntuples(r) != 1) {
        PQclear(r);
        return TH_E_STORE;
    }
    if (i64(r, 0, 0) > 0 || (!PQgetisnull(r, 0, 2) && PQgetisnull(r, 0, 1))) {
        *res = TH_VERIFY_DUPLICATE; /* seen before, or another node took it this instant */
    } else if (!PQgetisnull(r, 0, 1)) {
        *res = TH_VERIFY_MATCHED;
        struct th_verified m = {
            .seq = i64(r, 0, 1),
            .event_id = ev->event_id,
            .request_id = PQgetvalue(r, 0, 2),
            .sent_ms = i64(r, 0, 3),
            .node = PQgetvalue(r, 0, 4),
            .country = PQgetvalue(r, 0, 5),
            .prefix_hash = PQgetvalue(r, 0, 6),
            .provider = PQgetvalue(r, 0, 7),
            .channel = PQgetvalue(r, 0, 8),
            .transaction_id = PQgetvalue(r, 0, 9),
            .phone_hash = PQgetvalue(r, 0, 10),
            .verified_ms = ev->verified_ms,
        };
        if (fn)
            fn(ud, &m);
    }
    PQclear(r);
    return TH_E_OK;
}

/*
 * CONCURRENTLY: the other nodes go on writing while it builds; outside any transaction and with
 * no statement timeout (a big table takes minutes). A build that was interrupted leaves an
 * invalid index, which IF NOT EXISTS would keep: it is dropped and built again.
 */
static th_err pg_ensure_index(struct th_store *st, const char *name, const char *columns, char *err,
                              size_t errlen)
{
    struct pg_store *s = P(st);
    const char *v[] = {name};
    PGresult *r = adhoc(s,
                        "SELECT i.indisvalid FROM pg_index i JOIN pg_class c ON c.oid = "
                        "i.indexrelid WHERE c.relname = $1 AND c.relnamespace = "
                        "(SELECT oid FROM pg_namespace WHERE nspname = current_schema())",
                        1, v);
    bool ok = PQresultStatus(r) == PGRES_TUPLES_OK;
    bool exists = ok && PQntuples(r) == 1, valid = exists && PQgetvalue(r, 0, 0)[0] == 't';
    PQclear(r);
    char q[320];
    if (ok && exists && !valid) {
        snprintf(q, sizeof q, "DROP INDEX CONCURRENTLY IF EXISTS %s", name);
        r = adhoc(s, q, 0, NULL);
        ok = PQresultStatus(r) == PGRES_COMMAND_OK;
        PQclear(r);
    }
    if (ok && !valid) { /* the session's timeout is put back as it was (not RESET: the URL's) */
        char was[32] = "";
        r = adhoc(s, "SELECT current_setting('statement_timeout')", 0, NULL);
        if (PQresultStatus(r) == PGRES_TUPLES_OK && PQntuples(r) == 1)
            snprintf(was, sizeof was, "%s", PQgetvalue(r, 0, 0));
        PQclear(r);
        r = adhoc(s, "SET statement_timeout = 0", 0, NULL);
        PQclear(r);
        snprintf(q, sizeof q, "CREATE INDEX CONCURRENTLY IF NOT EXISTS %s ON deliveries (%s)", name,
                 columns);
        r = adhoc(s, q, 0, NULL);
        ok = PQresultStatus(r) == PGRES_COMMAND_OK;
        if (!ok)
            set_err(s->conn, err, errlen, name);
        PQclear(r);
        const char *w[] = {was};
        r = adhoc(s, "SELECT set_config('statement_timeout', $1, false)", 1, w);
        PQclear(r);
        return ok ? TH_E_OK : TH_E_STORE;
    }
    if (!ok)
        set_err(s->conn, err, errlen, name);
    return ok ? TH_E_OK : TH_E_STORE;
}

static th_err pg_verifications_since(struct th_store *st, const char *node, int64_t *after_seq,
                                     int limit, th_verified_fn fn, void *ud)
{
    if (*after_seq < 0) {
        PGresult *r = adhoc(P(st), "SELECT coalesce(max(seq), 0) FROM verifications", 0, NULL);
        th_err e = PQresultStatus(r) == PGRES_TUPLES_OK && PQntuples(r) == 1 ? TH_E_OK : TH_E_STORE;
        if (e == TH_E_OK)
            *after_seq = i64(r, 0, 0);
        PQclear(r);
        return e;
    }
    char after[24], lim[16];
    snprintf(after, sizeof after, "%lld", (long long)*after_seq);
    snprintf(lim, sizeof lim, "%d", limit);
    const char *v[] = {after, txt(node), lim};
    PGresult *r = adhoc(P(st),
                        "SELECT seq, event_id, request_id, node, country, prefix_hash, provider, "
                        "channel, transaction_id, sent_ms, verified_ms, phone_hash FROM "
                        "verifications WHERE node = $2 AND seq > $1::bigint AND matched_by <> "
                        "node ORDER BY seq "
                        "LIMIT $3::int",
                        3, v);
    th_err e = PQresultStatus(r) == PGRES_TUPLES_OK ? TH_E_OK : TH_E_STORE;
    for (int i = 0; e == TH_E_OK && i < PQntuples(r); i++) {
        struct th_verified m = {
            .seq = i64(r, i, 0),
            .event_id = PQgetvalue(r, i, 1),
            .request_id = PQgetvalue(r, i, 2),
            .node = PQgetvalue(r, i, 3),
            .country = PQgetvalue(r, i, 4),
            .prefix_hash = PQgetvalue(r, i, 5),
            .provider = PQgetvalue(r, i, 6),
            .channel = PQgetvalue(r, i, 7),
            .transaction_id = PQgetvalue(r, i, 8),
            .sent_ms = i64(r, i, 9),
            .verified_ms = i64(r, i, 10),
            .phone_hash = PQgetvalue(r, i, 11),
        };
        *after_seq = m.seq;
        if (fn)
            fn(ud, &m);
    }
    PQclear(r);
    return e;
}

static th_err pg_stats(struct th_store *st, enum th_stats_by by, int64_t since_ms, int64_t until_ms,
                       th_stats_row_fn fn, void *ud)
{
    char q[1024], since[24], until[24];
    snprintf(q, sizeof q, TH_STATS_SQL("$1::bigint", "$2::bigint"), th_stats_group(by),
             by == TH_STATS_PREFIX ? "max(country)" : "''");
    snprintf(since, sizeof since, "%lld", (long long)since_ms);
    snprintf(until, sizeof until, "%lld", (long long)until_ms);
    const char *v[] = {since, until};
    PGresult *r = adhoc(P(st), q, 2, v);
    th_err e = PQresultStatus(r) == PGRES_TUPLES_OK ? TH_E_OK : TH_E_STORE;
    for (int i = 0; e == TH_E_OK && i < PQntuples(r); i++) {
        struct th_stats_row row = {
            .group = PQgetvalue(r, i, 0),
            .country = PQgetvalue(r, i, 1),
            .sends = i64(r, i, 2),
            .verified = i64(r, i, 3),
            .refused = i64(r, i, 4),
            .failed = i64(r, i, 5),
        };
        if (fn(ud, &row))
            break;
    }
    PQclear(r);
    return e;
}

static th_err pg_begin(struct th_store *st)
{
    th_err e = noted(P(st), "BEGIN");
    P(st)->in_tx = e == TH_E_OK;
    return e;
}

static th_err pg_commit(struct th_store *st)
{
    /* a COMMIT of an aborted transaction answers ROLLBACK without an error: check the tag */
    trip(P(st));
    PGresult *r = PQexec(P(st)->conn, "COMMIT");
    th_err e = PQresultStatus(r) == PGRES_COMMAND_OK && strcmp(PQcmdStatus(r), "COMMIT") == 0
                   ? TH_E_OK
                   : TH_E_STORE;
    note(P(st), r);
    PQclear(r);
    P(st)->in_tx = false;
    return e;
}

static th_err pg_rollback(struct th_store *st)
{
    P(st)->in_tx = false;
    trip(P(st));
    return simple(P(st)->conn, "ROLLBACK", NULL, 0);
}

/* ---- the connection's health ---- */

static bool pg_lost(const struct th_store *st)
{
    const struct pg_store *s = (const struct pg_store *)st;
    return s->lost || PQstatus(s->conn) != CONNECTION_OK;
}

static th_err pg_ping(struct th_store *st)
{
    return noted(P(st), "SELECT 1");
}

/* PQreset keeps the connection's parameters: the same server, user and options again. */
static th_err pg_reconnect(struct th_store *st)
{
    struct pg_store *s = P(st);
    PQreset(s->conn);
    s->in_tx = false;
    char err[256];
    if (PQstatus(s->conn) != CONNECTION_OK || session_setup(s->conn, err, sizeof err) != TH_E_OK ||
        prepare_all(s, err, sizeof err) != TH_E_OK)
        return TH_E_STORE;
    s->lost = false;
    s->broken = false;
    return TH_E_OK;
}

/* ---- status ---- */

static th_err pg_status(struct th_store *st, struct th_store_status *out)
{
    struct pg_store *s = P(st);
    char err[256];
    th_err e = migrate(s->conn, false, &out->version, err, sizeof err);
    out->latest = SCHEMA_VERSION;
    for (size_t i = 0; e == TH_E_OK && i < TH_STORE_TABLES; i++) {
        /* a table name from the fixed list, not a value: it cannot be bound */
        char q[96];
        snprintf(q, sizeof q, "SELECT count(*) FROM %s", th_store_tables[i]);
        const char *v[] = {th_store_tables[i]};
        PGresult *t =
            PQexecParams(s->conn, "SELECT to_regclass($1) IS NOT NULL", 1, NULL, v, NULL, NULL, 0);
        bool exists = PQresultStatus(t) == PGRES_TUPLES_OK && PQntuples(t) == 1 &&
                      strcmp(PQgetvalue(t, 0, 0), "t") == 0;
        PQclear(t);
        out->rows[i] = -1;
        if (!exists)
            continue;
        PGresult *c = PQexec(s->conn, q);
        if (PQresultStatus(c) == PGRES_TUPLES_OK && PQntuples(c) == 1)
            out->rows[i] = strtol(PQgetvalue(c, 0, 0), NULL, 10);
        else
            e = TH_E_STORE;
        PQclear(c);
    }
    return e;
}

/* ---- change notifications (store.h) ---- */

/* How long a listener's (re)connection may take before it gives up and is retried (ms). */
#define LISTEN_CONNECT_MS 10000

struct th_store_listener {
    char *url; /* owned: reconnections need it (it may hold the password: never logged) */
    char describe[512];
    PGconn *conn; /* NULL while disconnected */
    int wake[2];  /* a pipe: th_store_listener_interrupt writes, every poll reads */
};

static int64_t mono_ms(void)
{
    return th_mono_us() / 1000;
}

static void quiet_notice(void *arg, const char *message)
{
    (void)arg;
    (void)message;
}

static void drain_wake(struct th_store_listener *l)
{
    char buf[64];
    while (read(l->wake[0], buf, sizeof buf) > 0) {
    }
}

/*
 * Connects without blocking past LISTEN_CONNECT_MS or an interrupt (PQconnectStartParams and
 * PQconnectPoll, as libpq's documentation loops), then LISTENs.
 */
static th_err listener_connect(struct th_store_listener *l, char *err, size_t errlen)
{
    const char *keys[CONN_KEYS], *vals[CONN_KEYS];
    conn_params(l->url, true, keys, vals);
    PGconn *c = PQconnectStartParams(keys, vals, 1);
    char what[600];
    snprintf(what, sizeof what, "cannot connect to %s", l->describe);
    if (!c || PQstatus(c) == CONNECTION_BAD) {
        set_err(c, err, errlen, what);
        PQfinish(c);
        return TH_E_STORE;
    }
    int64_t deadline = mono_ms() + LISTEN_CONNECT_MS;
    PostgresPollingStatusType ps = PGRES_POLLING_WRITING; /* libpq: start as if writing */
    while (ps != PGRES_POLLING_OK) {
        if (ps == PGRES_POLLING_FAILED) {
            set_err(c, err, errlen, what);
            PQfinish(c);
            return TH_E_STORE;
        }
        int64_t left = deadline - mono_ms();
        if (left <= 0) {
            snprintf(err, errlen, "postgresql: %s: timed out", what);
            PQfinish(c);
            return TH_E_STORE;
        }
        struct pollfd p[2] = {
            {.fd = PQsocket(c), .events = ps == PGRES_POLLING_READING ? POLLIN : POLLOUT},
            {.fd = l->wake[0], .events = POLLIN}};
        int rc = poll(p, 2, (int)left);
        if (rc < 0 && errno != EINTR) {
            snprintf(err, errlen, "postgresql: poll: %s", strerror(errno));
            PQfinish(c);
            return TH_E_STORE;
        }
        if (rc > 0 && p[1].revents) {
            drain_wake(l);
            snprintf(err, errlen, "postgresql: %s: interrupted", what);
            PQfinish(c);
            return TH_E_STORE;
        }
        if (rc > 0)
            ps = PQconnectPoll(c);
    }
    /* libpq would print the server's goodbye (a FATAL on a terminated backend) on stderr: the
     * caller logs the loss itself */
    PQsetNoticeProcessor(c, quiet_notice, NULL);
    if (simple(c, "LISTEN " CATALOG_CHANNEL, err, errlen) != TH_E_OK) {
        PQfinish(c);
        return TH_E_STORE;
    }
    l->conn = c;
    return TH_E_OK;
}

void th_store_listener_close(struct th_store_listener *l)
{
    if (!l)
        return;
    PQfinish(l->conn);
    if (l->url) {
        memset(l->url, 0, strlen(l->url)); /* it may hold the password */
        free(l->url);
    }
    close(l->wake[0]);
    close(l->wake[1]);
    free(l);
}

static th_err pg_listen(const char *url, struct th_store_listener **out, char *err, size_t errlen)
{
    struct th_store_listener *l = calloc(1, sizeof *l);
    if (!l)
        return TH_E_NOMEM;
    l->wake[0] = l->wake[1] = -1;
    if (!th_store_pg_describe(url, l->describe, sizeof l->describe)) {
        snprintf(err, errlen, "postgresql: the store URL is not a libpq URI or connection string");
        free(l);
        return TH_E_STORE;
    }
    l->url = strdup(url);
    if (!l->url || pipe2(l->wake, O_NONBLOCK | O_CLOEXEC) != 0) {
        snprintf(err, errlen, "out of memory or file descriptors");
        th_store_listener_close(l);
        return TH_E_NOMEM;
    }
    th_err e = listener_connect(l, err, errlen);
    if (e != TH_E_OK) {
        th_store_listener_close(l);
        return e;
    }
    *out = l;
    return TH_E_OK;
}

/* Moves the notifications libpq holds into *changed. */
static void collect(PGconn *c, unsigned *changed)
{
    PGnotify *n;
    while ((n = PQnotifies(c)) != NULL) {
        if (strcmp(n->extra, "templates") == 0)
            *changed |= TH_STORE_CHANGED_TEMPLATES;
        else if (strcmp(n->extra, "prefs") == 0)
            *changed |= TH_STORE_CHANGED_PREFS;
        else if (strcmp(n->extra, "routes") == 0)
            *changed |= TH_STORE_CHANGED_ROUTES;
        else /* a NOTIFY by hand (no or another payload): everything */
            *changed |= TH_STORE_CHANGED_ALL;
        PQfreemem(n);
    }
}

static th_err listener_lost(struct th_store_listener *l, char *err, size_t errlen)
{
    set_err(l->conn, err, errlen, "catalog listener connection lost");
    PQfinish(l->conn);
    l->conn = NULL;
    return TH_E_STORE;
}

th_err th_store_wait_change(struct th_store_listener *l, int timeout_ms, unsigned *changed,
                            char *err, size_t errlen)
{
    *changed = 0;
    if (!l->conn) {
        th_err e = listener_connect(l, err, errlen);
        if (e == TH_E_OK)
            *changed = TH_STORE_CHANGED_ALL | TH_STORE_RECONNECTED;
        return e;
    }
    collect(l->conn, changed);
    if (*changed)
        return TH_E_OK;
    struct pollfd p[2] = {{.fd = PQsocket(l->conn), .events = POLLIN},
                          {.fd = l->wake[0], .events = POLLIN}};
    int rc = poll(p, 2, timeout_ms < 0 ? 0 : timeout_ms);
    if (rc < 0 && errno != EINTR) {
        snprintf(err, errlen, "postgresql: poll: %s", strerror(errno));
        return TH_E_STORE;
    }
    if (rc > 0 && p[1].revents)
        drain_wake(l);
    if (rc > 0 && p[0].revents) {
        /* readable: notifications, or the server's goodbye (a failover, a terminated backend) */
        if (!PQconsumeInput(l->conn) || PQstatus(l->conn) != CONNECTION_OK)
            return listener_lost(l, err, errlen);
        collect(l->conn, changed);
    }
    return TH_E_OK;
}

void th_store_listener_interrupt(struct th_store_listener *l)
{
    ssize_t w = write(l->wake[1], "x", 1); /* a full pipe already wakes the reader */
    (void)w;
}

th_err th_store_pg_query(struct th_store *st, const char *q, char *out, size_t outlen, char *err,
                         size_t errlen)
{
    if (st->ops != &th_store_pg_ops) {
        snprintf(err, errlen, "not a postgresql store");
        return TH_E_INVAL;
    }
    PGconn *c = P(st)->conn;
    PGresult *r = PQexec(c, q);
    th_err e = ok_result(r) ? TH_E_OK : TH_E_STORE;
    if (e != TH_E_OK)
        set_err(c, err, errlen, "");
    else if (out && outlen)
        snprintf(out, outlen, "%s",
                 PQresultStatus(r) == PGRES_TUPLES_OK && PQntuples(r) > 0 && PQnfields(r) > 0
                     ? PQgetvalue(r, 0, 0)
                     : "");
    PQclear(r);
    return e;
}

/* ---- `store copy`: the history tables in insertion order, a page at a time ---- */

#define OUTBOX_SELECT "id, created_ms, request_id, recipient, channel, language, body, voice_id"
#define DELIV_SELECT                                                                               \
    "request_id, event_id, created_ms, request_type, phone_masked, country, channel, language, "   \
    "source, provider, outcome, transaction_id, error, latency_us, attempts, user_id, "            \
    "login_hash, phone_hash, locale, preference, prefix_hash, node, verified_ms, verified_event"
#define DLQ_SELECT                                                                                 \
    "id, created_ms, request_id, event_id, phone_masked, country, channel, language, outcome, "    \
    "errors, attempts, otp_expires_ms, key_id, payload"

static th_err pg_scan(struct th_store *st, int table, int64_t *after, int limit,
                      const struct th_store_scan_fns *f, int *n)
{
    /*
     * A cursor, not keyset pages: seq has no index (nothing else needs one), so each "seq > $1
     * ORDER BY seq LIMIT" page would scan and sort the whole table again. The cursor sorts once
     * and hands out a page per FETCH; it lives in the caller's transaction (the copy's read
     * snapshot). seq last: the row's columns keep the positions the readers above use.
     */
    static const char *const q[] = {
        [TH_STORE_T_OUTBOX] = "DECLARE th_copy NO SCROLL CURSOR FOR SELECT " OUTBOX_SELECT
                              ", seq FROM outbox ORDER BY seq",
        [TH_STORE_T_DELIVERIES] = "DECLARE th_copy NO SCROLL CURSOR FOR SELECT " DELIV_SELECT
                                  ", receipt_status, receipt_error, receipt_ms, receipt_final, "
                                  "seq FROM deliveries ORDER BY seq",
        [TH_STORE_T_DLQ] =
            "DECLARE th_copy NO SCROLL CURSOR FOR SELECT " DLQ_SELECT ", seq FROM dlq ORDER BY seq",
    };
    static const int ncols[] = {
        [TH_STORE_T_OUTBOX] = 8, [TH_STORE_T_DELIVERIES] = 28, [TH_STORE_T_DLQ] = 14};
    *n = 0;
    if (table < TH_STORE_T_OUTBOX || table > TH_STORE_T_DLQ || limit <= 0)
        return TH_E_INVAL;
    struct pg_store *s = P(st);
    if (*after == 0 && noted(s, q[table]) != TH_E_OK)
        return TH_E_STORE;
    char fetch[48];
    snprintf(fetch, sizeof fetch, "FETCH FORWARD %d FROM th_copy", limit);
    PGresult *r = PQexec(s->conn, fetch);
    note(s, r);
    th_err e = PQresultStatus(r) == PGRES_TUPLES_OK ? TH_E_OK : TH_E_STORE;
    if (e == TH_E_OK && PQntuples(r) < limit) /* the last page: the next table's cursor */
        e = noted(s, "CLOSE th_copy");
    int stop = 0;
    for (int i = 0; e == TH_E_OK && !stop && i < PQntuples(r); i++) {
        *after = i64(r, i, ncols[table]);
        (*n)++;
        if (table == TH_STORE_T_OUTBOX) {
            struct th_outbox_row row = {
                .id = PQgetvalue(r, i, 0),
                .created_ms = i64(r, i, 1),
                .request_id = PQgetvalue(r, i, 2),
                .to = PQgetvalue(r, i, 3),
                .channel = PQgetvalue(r, i, 4),
                .language = PQgetvalue(r, i, 5),
                .body = PQgetvalue(r, i, 6),
                .voice_id = PQgetvalue(r, i, 7),
            };
            stop = f->outbox(f->ud, &row);
        } else if (table == TH_STORE_T_DELIVERIES) {
            struct th_delivery_row row = delivery_of(r, i, true);
            row.receipt_status = PQgetvalue(r, i, 24);
            row.receipt_error = PQgetvalue(r, i, 25);
            row.receipt_ms = i64(r, i, 26);
            row.receipt_final = PQgetvalue(r, i, 27)[0] == 't';
            stop = f->delivery(f->ud, &row);
        } else {
            stop = dlq_call(r, i, f->dlq, f->ud, &e); /* the sealed bytes, never opened */
        }
    }
    PQclear(r);
    return e;
}

/* ---- conversion blocks: a few statements every 2 s, unprepared (off the hot path) ---- */

#define CONV_COLS                                                                                  \
    "id, kind, key, country, masked, since_ms, until_ms, cleared_ms, sends, verified, mode"

static PGresult *params(struct pg_store *s, const char *q, int n, const char *const *v)
{
    trip(s);
    PGresult *r = PQexecParams(s->conn, q, n, NULL, v, NULL, NULL, 0);
    note(s, r);
    return r;
}

static th_err pg_conv_block_put(struct th_store *st, const struct th_conv_block_row *row)
{
    char num[5][24];
    int64_t n[5] = {row->since_ms, row->until_ms, row->cleared_ms, row->sends, row->verified};
    for (int i = 0; i < 5; i++)
        snprintf(num[i], sizeof num[i], "%lld", (long long)n[i]);
    const char *v[] = {txt(row->id),     txt(row->kind), txt(row->key), txt(row->country),
                       txt(row->masked), num[0],         num[1],        num[2],
                       num[3],           num[4],         txt(row->mode)};
    PGresult *r = params(P(st),
                         "INSERT INTO conversion_blocks (" CONV_COLS ") VALUES ($1, $2, $3, $4, "
                         "$5, $6, $7, $8, $9, $10, $11) ON CONFLICT (id) DO NOTHING",
                         11, v);
    th_err e = PQresultStatus(r) == PGRES_COMMAND_OK ? TH_E_OK : TH_E_STORE;
    PQclear(r);
    return e;
}

static th_err pg_conv_blocks_each(struct th_store *st, const struct th_conv_block_filter *f,
                                  th_conv_block_fn fn, void *ud)
{
    char now[24], after[24], limit[16];
    snprintf(now, sizeof now, "%lld", (long long)f->now_ms);
    snprintf(after, sizeof after, "%lld", (long long)f->cleared_after_ms);
    snprintf(limit, sizeof limit, "%d", f->limit);
    const char *v[] = {now, after, limit};
    PGresult *r =
        f->all ? params(P(st),
                        "SELECT " CONV_COLS " FROM conversion_blocks WHERE $1::bigint IS NOT NULL "
                        "AND $2::bigint IS NOT NULL ORDER BY since_ms DESC, id COLLATE \"C\" "
                        "LIMIT $3::int",
                        3, v)
               : params(P(st),
                        "SELECT " CONV_COLS " FROM conversion_blocks WHERE (cleared_ms = 0 AND "
                        "until_ms > $1::bigint) OR ($2::bigint >= 0 AND cleared_ms > $2::bigint) "
                        "ORDER BY since_ms DESC, id COLLATE \"C\" LIMIT $3::int",
                        3, v);
    th_err e = PQresultStatus(r) == PGRES_TUPLES_OK ? TH_E_OK : TH_E_STORE;
    for (int i = 0; e == TH_E_OK && i < PQntuples(r); i++) {
        struct th_conv_block_row row = {.id = PQgetvalue(r, i, 0),
                                        .kind = PQgetvalue(r, i, 1),
                                        .key = PQgetvalue(r, i, 2),
                                        .country = PQgetvalue(r, i, 3),
                                        .masked = PQgetvalue(r, i, 4),
                                        .since_ms = i64(r, i, 5),
                                        .until_ms = i64(r, i, 6),
                                        .cleared_ms = i64(r, i, 7),
                                        .sends = (long)i64(r, i, 8),
                                        .verified = (long)i64(r, i, 9),
                                        .mode = PQgetvalue(r, i, 10)};
        if (fn(ud, &row))
            break;
    }
    PQclear(r);
    return e;
}

static th_err pg_conv_blocks_clear(struct th_store *st, const struct th_conv_block_clear *c,
                                   long *cleared)
{
    char now[24];
    snprintf(now, sizeof now, "%lld", (long long)c->now_ms);
    static const char head[] = "UPDATE conversion_blocks SET cleared_ms = $1 WHERE cleared_ms = "
                               "0 AND until_ms > $1";
    PGresult *r;
    if (c->all) {
        const char *v[] = {now};
        r = params(P(st), head, 1, v);
    } else if (c->id) {
        const char *v[] = {now, c->id};
        r = params(P(st),
                   "UPDATE conversion_blocks SET cleared_ms = $1 WHERE cleared_ms = 0 AND "
                   "until_ms > $1 AND (kind, key) IN (SELECT kind, key FROM conversion_blocks "
                   "WHERE id = $2)",
                   2, v);
    } else {
        const char *v[] = {now, txt(c->kind), txt(c->key)};
        r = params(P(st),
                   "UPDATE conversion_blocks SET cleared_ms = $1 WHERE cleared_ms = 0 AND "
                   "until_ms > $1 AND kind = $2 AND key = $3",
                   3, v);
    }
    th_err e = PQresultStatus(r) == PGRES_COMMAND_OK ? TH_E_OK : TH_E_STORE;
    if (e == TH_E_OK)
        *cleared = strtol(PQcmdTuples(r), NULL, 10);
    PQclear(r);
    return e == TH_E_OK && *cleared == 0 ? TH_E_NOTFOUND : e;
}

const struct th_store_ops th_store_pg_ops = {
    .scheme = "postgresql",
    .full_url = true,
    .open = pg_open,
    .open_unmigrated = pg_open_unmigrated,
    .close = pg_close,
    .templates_each = pg_templates_each,
    .template_put = pg_template_put,
    .template_delete = pg_template_delete,
    .outbox_insert = pg_outbox_insert,
    .outbox_each = pg_outbox_each,
    .delivery_insert = pg_delivery_insert,
    .insert_many = pg_insert_many,
    .deliveries_query = pg_deliveries_query,
    .receipt_find = pg_receipt_find,
    .receipt_set = pg_receipt_set,
    .dlq_insert = pg_dlq_insert,
    .dlq_each = pg_dlq_each,
    .dlq_get = pg_dlq_get,
    .dlq_delete = pg_dlq_delete,
    .dlq_count = pg_dlq_count,
    .purge = pg_purge,
    .routes_each = pg_routes_each,
    .route_put = pg_route_put,
    .route_delete = pg_route_delete,
    .conv_block_put = pg_conv_block_put,
    .conv_blocks_each = pg_conv_blocks_each,
    .conv_blocks_clear = pg_conv_blocks_clear,
    .prefs_each = pg_prefs_each,
    .pref_put = pg_pref_put,
    .pref_delete = pg_pref_delete,
    .begin = pg_begin,
    .commit = pg_commit,
    .rollback = pg_rollback,
    .status = pg_status,
    .scan = pg_scan,
    .verify = pg_verify,
    .verifications_since = pg_verifications_since,
    .ensure_index = pg_ensure_index,
    .stats = pg_stats,
    .lost = pg_lost,
    .ping = pg_ping,
    .reconnect = pg_reconnect,
    .listen = pg_listen,
    .revive = pg_revive,
};

long th_store_pg_reconnects(const struct th_store *st)
{
    return st->ops == &th_store_pg_ops ? ((const struct pg_store *)st)->reconnects : 0;
}

long th_store_pg_round_trips(const struct th_store *st)
{
    if (st->ops != &th_store_pg_ops)
        return 0;
    return atomic_load(&((struct pg_store *)st)->trips);
}
