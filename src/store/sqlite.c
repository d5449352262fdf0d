/* The SQLite backend: the embedded default. WAL mode, versioned migrations, prepared statements. */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <sys/stat.h>

#include <sqlite3.h>

#include "common/util.h"
#include "store/internal.h"

/*
 * Schema migrations, applied in order, each once, each in its own transaction; the version is
 * recorded in schema_version. Never edit a released migration: add one.
 */
static const char *const migrations[] = {
    /* 1: templates (seeded with English and Spanish), outbox, deliveries */
    "CREATE TABLE templates ("
    "  language TEXT NOT NULL, channel TEXT NOT NULL CHECK (channel IN ('sms', 'voice')),"
    "  body TEXT NOT NULL, voice_id TEXT NOT NULL DEFAULT '', updated_ms INTEGER NOT NULL,"
    "  PRIMARY KEY (language, channel));"
    "CREATE TABLE outbox ("
    "  id TEXT PRIMARY KEY, created_ms INTEGER NOT NULL, request_id TEXT NOT NULL,"
    "  recipient TEXT NOT NULL, channel TEXT NOT NULL, language TEXT NOT NULL,"
    "  body TEXT NOT NULL, voice_id TEXT NOT NULL DEFAULT '');"
    "CREATE INDEX outbox_created ON outbox (created_ms);"
    "CREATE TABLE deliveries ("
    "  request_id TEXT PRIMARY KEY, event_id TEXT NOT NULL, created_ms INTEGER NOT NULL,"
    "  request_type TEXT NOT NULL, phone_masked TEXT NOT NULL, country TEXT NOT NULL,"
    "  channel TEXT NOT NULL, language TEXT NOT NULL, source TEXT NOT NULL,"
    "  provider TEXT NOT NULL, outcome TEXT NOT NULL, transaction_id TEXT NOT NULL,"
    "  error TEXT NOT NULL, latency_us INTEGER NOT NULL);"
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
    "  country TEXT NOT NULL, attempts TEXT NOT NULL, updated_ms INTEGER NOT NULL,"
    "  PRIMARY KEY (channel, country));"
    "ALTER TABLE deliveries ADD COLUMN attempts INTEGER NOT NULL DEFAULT 0;",
    /* 3: the dead-letter queue (the payload is AES-256-GCM sealed; the rest is plain) */
    "CREATE TABLE dlq ("
    "  id TEXT PRIMARY KEY, created_ms INTEGER NOT NULL, request_id TEXT NOT NULL,"
    "  event_id TEXT NOT NULL, phone_masked TEXT NOT NULL, country TEXT NOT NULL,"
    "  channel TEXT NOT NULL, language TEXT NOT NULL, outcome TEXT NOT NULL,"
    "  errors TEXT NOT NULL, attempts INTEGER NOT NULL, otp_expires_ms INTEGER NOT NULL,"
    "  key_id TEXT NOT NULL, payload BLOB);"
    "CREATE INDEX dlq_created ON dlq (created_ms);",
    /* 4: deliveries become a rowid table, appended in time order: a random TEXT primary key
     * (and the eventId index, unused) put every insert on a random B-tree page */
    "CREATE TABLE deliveries_v4 ("
    "  request_id TEXT NOT NULL, event_id TEXT NOT NULL, created_ms INTEGER NOT NULL,"
    "  request_type TEXT NOT NULL, phone_masked TEXT NOT NULL, country TEXT NOT NULL,"
    "  channel TEXT NOT NULL, language TEXT NOT NULL, source TEXT NOT NULL,"
    "  provider TEXT NOT NULL, outcome TEXT NOT NULL, transaction_id TEXT NOT NULL,"
    "  error TEXT NOT NULL, latency_us INTEGER NOT NULL, attempts INTEGER NOT NULL DEFAULT 0);"
    "INSERT INTO deliveries_v4 SELECT request_id, event_id, created_ms, request_type,"
    "  phone_masked, country, channel, language, source, provider, outcome, transaction_id,"
    "  error, latency_us, attempts FROM deliveries ORDER BY created_ms;"
    "DROP TABLE deliveries;"
    "ALTER TABLE deliveries_v4 RENAME TO deliveries;"
    "CREATE INDEX deliveries_created ON deliveries (created_ms);"
    "CREATE INDEX deliveries_request ON deliveries (request_id);",
    /* 5: a helpdesk finds a user's requests: Okta's user id, and the login and the number as
     * HMACs under guard.secret (never in clear). No index: each would put every insert on a
     * random page (see 4); a search scans the time range it is given. */
    "ALTER TABLE deliveries ADD COLUMN user_id TEXT NOT NULL DEFAULT '';"
    "ALTER TABLE deliveries ADD COLUMN login_hash TEXT NOT NULL DEFAULT '';"
    "ALTER TABLE deliveries ADD COLUMN phone_hash TEXT NOT NULL DEFAULT '';",
    /* 6: the seeded English and Spanish SMS texts said "1 minutes" / "1 minutos": the plural
     * form agrees with the number. Only the seeds as shipped change; an edited text stays. */
    "UPDATE templates SET body = 'Your verification code is {{otp}}. It expires in "
    "{{expires_minutes:minute|minutes}}.' WHERE language = 'en' AND channel = 'sms' AND body = "
    "'Your verification code is {{otp}}. It expires in {{expires_minutes}} minutes.';"
    "UPDATE templates SET body = 'Su código de verificación es {{otp}}. Caduca en "
    "{{expires_minutes:minuto|minutos}}.' WHERE language = 'es' AND channel = 'sms' AND body = "
    "'Su código de verificación es {{otp}}. Caduca en {{expires_minutes}} minutos.';",
    /* 7: users' language preferences; what a delivery was asked for (locale) and the
     * preference applied; the seeded en/es templates go where nobody changed them, so the
     * built-in language pack (src/message/pack.c) speaks instead of its old copy. A seed is
     * unchanged when updated_ms is still 0 and its body is as migration 1 wrote it or as
     * migration 6 rewrote it (the plural form). */
    "CREATE TABLE prefs ("
    "  user_key TEXT NOT NULL COLLATE NOCASE PRIMARY KEY, language TEXT NOT NULL,"
    "  channel TEXT NOT NULL DEFAULT '' CHECK (channel IN ('', 'sms', 'voice')),"
    "  updated_ms INTEGER NOT NULL);"
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
    /* 8: as PostgreSQL's 8: a delivery record is identified by (request id, time), so a
     * record inserted twice is kept once (a node on PostgreSQL replays its spool; here the
     * same schema). The unique index replaces the plain one on the request id; twins go first,
     * the older row kept. */
    "DELETE FROM deliveries WHERE rowid NOT IN"
    "  (SELECT min(rowid) FROM deliveries GROUP BY request_id, created_ms);"
    "DROP INDEX IF EXISTS deliveries_request;"
    "CREATE UNIQUE INDEX IF NOT EXISTS deliveries_once ON deliveries (request_id, created_ms);",
    /* 9: conversion (docs/conversion.md): what credits a delivery with the sign-in it carried.
     * The destination prefix's key and the sending node on each record; when and by which Okta
     * event it was verified (NULL: not yet); verifications, one row per Okta event (its uuid
     * unique: Okta retries a batch, and a duplicate must change nothing), which other nodes
     * poll for the matches of their own deliveries. The index an event's lookup of a user needs
     * is built only when the event hook is on (th_store_ensure_indexes). */
    "ALTER TABLE deliveries ADD COLUMN prefix_hash TEXT NOT NULL DEFAULT '';"
    "ALTER TABLE deliveries ADD COLUMN node TEXT NOT NULL DEFAULT '';"
    "ALTER TABLE deliveries ADD COLUMN verified_ms INTEGER;"
    "ALTER TABLE deliveries ADD COLUMN verified_event TEXT NOT NULL DEFAULT '';"
    "CREATE TABLE IF NOT EXISTS verifications ("
    "  seq INTEGER PRIMARY KEY AUTOINCREMENT, event_id TEXT NOT NULL UNIQUE,"
    "  request_id TEXT NOT NULL, node TEXT NOT NULL, matched_by TEXT NOT NULL,"
    "  country TEXT NOT NULL, prefix_hash TEXT NOT NULL, provider TEXT NOT NULL,"
    "  channel TEXT NOT NULL, transaction_id TEXT NOT NULL, sent_ms INTEGER NOT NULL,"
    "  verified_ms INTEGER NOT NULL, phone_hash TEXT NOT NULL DEFAULT '');"
    "CREATE INDEX IF NOT EXISTS verifications_sent ON verifications (sent_ms);",
    /* 10: a provider's delivery receipt on its record, found by provider + transaction id (its
     * index built only when receipts are on: th_store_ensure_indexes). receipt_final keeps a
     * late non-final status from replacing a final one. Codes and statuses only, never a
     * number. */
    "ALTER TABLE deliveries ADD COLUMN receipt_status TEXT NOT NULL DEFAULT '';"
    "ALTER TABLE deliveries ADD COLUMN receipt_error TEXT NOT NULL DEFAULT '';"
    "ALTER TABLE deliveries ADD COLUMN receipt_ms INTEGER NOT NULL DEFAULT 0;"
    "ALTER TABLE deliveries ADD COLUMN receipt_final INTEGER NOT NULL DEFAULT 0;",
    /* 11, as PostgreSQL's: conversion blocks (guard/conv.h),
     * shared by the nodes and listed or cleared by `telehook guard blocks`. */
    "CREATE TABLE IF NOT EXISTS conversion_blocks ("
    "  id TEXT PRIMARY KEY, kind TEXT NOT NULL CHECK (kind IN ('prefix', 'country')),"
    "  key TEXT NOT NULL, country TEXT NOT NULL DEFAULT '', masked TEXT NOT NULL DEFAULT '',"
    "  since_ms INTEGER NOT NULL, until_ms INTEGER NOT NULL, cleared_ms INTEGER NOT NULL DEFAULT 0,"
    "  sends INTEGER NOT NULL DEFAULT 0, verified INTEGER NOT NULL DEFAULT 0,"
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
    S_RCPT_FIND,
    S_RCPT_SET,
    S_BEGIN,
    S_COMMIT,
    S_ROLLBACK,
    S__COUNT
};

static const char *const sql[S__COUNT] = {
    [S_TPL_EACH] = "SELECT language, channel, body, voice_id, updated_ms FROM templates "
                   "ORDER BY language, channel",
    [S_TPL_PUT] = "INSERT INTO templates (language, channel, body, voice_id, updated_ms) "
                  "VALUES (?, ?, ?, ?, ?) ON CONFLICT (language, channel) DO UPDATE SET "
                  "body = excluded.body, voice_id = excluded.voice_id, "
                  "updated_ms = excluded.updated_ms",
    [S_TPL_DEL] = "DELETE FROM templates WHERE language = ? AND channel = ?",
    [S_OUTBOX_INS] = "INSERT INTO outbox (id, created_ms, request_id, recipient, channel, "
                     "language, body, voice_id) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
    [S_OUTBOX_EACH] = "SELECT id, created_ms, request_id, recipient, channel, language, body, "
                      "voice_id FROM outbox ORDER BY created_ms DESC, rowid DESC LIMIT ?",
    [S_DELIV_INS] = "INSERT INTO deliveries (request_id, event_id, created_ms, request_type, "
                    "phone_masked, country, channel, language, source, provider, outcome, "
                    "transaction_id, error, latency_us, attempts, user_id, login_hash, "
                    "phone_hash, locale, preference, prefix_hash, node, verified_ms, "
                    "verified_event) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, "
                    "?, ?, ?, ?, ?, ?) ON CONFLICT (request_id, created_ms) DO NOTHING",
    [S_ROUTE_EACH] = "SELECT channel, country, attempts, updated_ms FROM routes "
                     "ORDER BY channel, country",
    [S_ROUTE_PUT] = "INSERT INTO routes (channel, country, attempts, updated_ms) VALUES "
                    "(?, ?, ?, ?) ON CONFLICT (channel, country) DO UPDATE SET "
                    "attempts = excluded.attempts, updated_ms = excluded.updated_ms",
    [S_ROUTE_DEL] = "DELETE FROM routes WHERE channel = ? AND country = ?",
    [S_DLQ_INS] = "INSERT INTO dlq (id, created_ms, request_id, event_id, phone_masked, country, "
                  "channel, language, outcome, errors, attempts, otp_expires_ms, key_id, payload) "
                  "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
    [S_DLQ_EACH] = "SELECT id, created_ms, request_id, event_id, phone_masked, country, channel, "
                   "language, outcome, errors, attempts, otp_expires_ms, key_id, payload FROM dlq "
                   "ORDER BY created_ms DESC, rowid DESC LIMIT ?",
    [S_DLQ_GET] =
        "SELECT id, created_ms, request_id, event_id, phone_masked, country, channel, language, "
        "outcome, errors, attempts, otp_expires_ms, key_id, payload FROM dlq WHERE id = ?",
    [S_DLQ_DEL] = "DELETE FROM dlq WHERE id = ?",
    [S_DLQ_COUNT] = "SELECT count(*) FROM dlq",
    [S_PURGE_DLQ] = "DELETE FROM dlq WHERE created_ms < ?",
    [S_PURGE_DELIV] = "DELETE FROM deliveries WHERE created_ms < ?",
    [S_PURGE_OUTBOX] = "DELETE FROM outbox WHERE created_ms < ?",
    [S_PURGE_VERIF] = "DELETE FROM verifications WHERE sent_ms < ?",
    [S_PURGE_CONV] = "DELETE FROM conversion_blocks WHERE until_ms < ?1 AND cleared_ms < ?1",
    [S_PREF_EACH] = "SELECT user_key, language, channel, updated_ms FROM prefs ORDER BY user_key",
    [S_PREF_PUT] =
        "INSERT INTO prefs (user_key, language, channel, updated_ms) VALUES "
        "(?, ?, ?, ?) ON CONFLICT (user_key) DO UPDATE SET user_key = excluded.user_key, "
        "language = excluded.language, channel = excluded.channel, "
        "updated_ms = excluded.updated_ms",
    [S_PREF_DEL] = "DELETE FROM prefs WHERE user_key = ?",
    [S_RCPT_FIND] = "SELECT rowid, request_id, created_ms, country, channel, receipt_status, "
                    "receipt_final, receipt_ms FROM deliveries WHERE provider = ? AND "
                    "transaction_id = ? ORDER BY created_ms DESC, rowid DESC LIMIT 1",
    [S_RCPT_SET] = "UPDATE deliveries SET receipt_status = ?, receipt_error = ?, receipt_ms = ?, "
                   "receipt_final = ? WHERE rowid = ?",
    [S_BEGIN] = "BEGIN",
    [S_COMMIT] = "COMMIT",
    [S_ROLLBACK] = "ROLLBACK",
};

struct sqlite_store {
    struct th_store base;
    sqlite3 *db;
    sqlite3_stmt *stmt[S__COUNT];
};

static struct sqlite_store *S(struct th_store *st)
{
    return (struct sqlite_store *)st;
}

/* mkdir -p of path's parent directory (0700: the outbox holds message text). */
int th_store_make_parent(const char *path)
{
    char dir[4096];
    if (th_strlcpy(dir, path, sizeof dir) >= sizeof dir)
        return -1;
    char *slash = strrchr(dir, '/');
    if (!slash || slash == dir)
        return 0;
    *slash = '\0';
    for (char *p = dir + 1; *p; p++) {
        if (*p != '/')
            continue;
        *p = '\0';
        if (mkdir(dir, 0700) != 0 && errno != EEXIST)
            return -1;
        *p = '/';
    }
    return mkdir(dir, 0700) != 0 && errno != EEXIST ? -1 : 0;
}

static th_err exec(sqlite3 *db, const char *q, char *err, size_t errlen)
{
    char *msg = NULL;
    if (sqlite3_exec(db, q, NULL, NULL, &msg) != SQLITE_OK) {
        snprintf(err, errlen, "sqlite: %s", msg ? msg : sqlite3_errmsg(db));
        sqlite3_free(msg);
        return TH_E_STORE;
    }
    return TH_E_OK;
}

static void rollback_quiet(sqlite3 *db)
{
    sqlite3_exec(db, "ROLLBACK", NULL, NULL, NULL);
}

static int user_version(sqlite3 *db, int *v)
{
    sqlite3_stmt *s;
    if (sqlite3_prepare_v2(db, "SELECT coalesce(max(version), 0) FROM schema_version", -1, &s,
                           NULL) != SQLITE_OK)
        return -1;
    int rc = sqlite3_step(s);
    if (rc == SQLITE_ROW)
        *v = sqlite3_column_int(s, 0);
    sqlite3_finalize(s);
    return rc == SQLITE_ROW ? 0 : -1;
}

/*
 * The page cache of a connection (PRAGMA cache_size, KiB). Every B-tree a delivery record goes
 * into is appended in time order (rowid, created_ms, the time-ordered request id), so the writer
 * touches the right edge of each and 1 MiB holds them with room (measured: the same pwrite per
 * record as SQLite's default 2 MiB, 1.7 MiB less peak RSS in bench/run's scenario a). Conversion
 * tracking's indexes (deliveries_user, deliveries_transaction: th_store_ensure_indexes) take
 * every record on a random page: with either present, SQLite's default, which keeps more of
 * their interior pages.
 */
#define CACHE_KIB        1024
#define CACHE_KIB_RANDOM 2000

static int cache_kib(sqlite3 *db)
{
    sqlite3_stmt *s;
    if (sqlite3_prepare_v2(db,
                           "SELECT count(*) FROM sqlite_master WHERE type = 'index' AND name IN "
                           "('deliveries_user', 'deliveries_transaction')",
                           -1, &s, NULL) != SQLITE_OK)
        return CACHE_KIB_RANDOM;
    int n = sqlite3_step(s) == SQLITE_ROW ? sqlite3_column_int(s, 0) : 1;
    sqlite3_finalize(s);
    return n > 0 ? CACHE_KIB_RANDOM : CACHE_KIB;
}

/*
 * Applies pending migrations. BEGIN IMMEDIATE takes the write lock before reading the version,
 * so two processes starting on a new file cannot both apply migration 1.
 */
static th_err migrate(sqlite3 *db, char *err, size_t errlen)
{
    th_err e = exec(db,
                    "CREATE TABLE IF NOT EXISTS schema_version (version INTEGER NOT NULL, "
                    "applied_ms INTEGER NOT NULL)",
                    err, errlen);
    for (;;) {
        if (e != TH_E_OK || (e = exec(db, "BEGIN IMMEDIATE", err, errlen)) != TH_E_OK)
            return e;
        int v = 0;
        if (user_version(db, &v) != 0) {
            snprintf(err, errlen, "sqlite: cannot read the schema version: %s", sqlite3_errmsg(db));
            rollback_quiet(db);
            return TH_E_STORE;
        }
        if (v > SCHEMA_VERSION) {
            rollback_quiet(db);
            snprintf(err, errlen,
                     "database schema version %d is newer than this telehook (%d): upgrade "
                     "telehook",
                     v, SCHEMA_VERSION);
            return TH_E_STORE;
        }
        if (v == SCHEMA_VERSION)
            return exec(db, "COMMIT", err, errlen);
        char record[128];
        snprintf(record, sizeof record, "INSERT INTO schema_version VALUES (%d, %lld)", v + 1,
                 (long long)th_wall_ms());
        e = exec(db, migrations[v], err, errlen);
        if (e == TH_E_OK)
            e = exec(db, record, err, errlen);
        if (e == TH_E_OK)
            e = exec(db, "COMMIT", err, errlen);
        if (e != TH_E_OK) {
            rollback_quiet(db);
            return e;
        }
    }
}

static void sqlite_close(struct th_store *st)
{
    struct sqlite_store *s = S(st);
    for (int i = 0; i < S__COUNT; i++)
        sqlite3_finalize(s->stmt[i]);
    sqlite3_close(s->db);
    free(s);
}

static th_err sqlite_open_mode(const char *path, bool apply, struct th_store **out, char *err,
                               size_t errlen)
{
    struct sqlite_store *s = calloc(1, sizeof *s);
    if (!s)
        return TH_E_NOMEM;
    s->base.ops = &th_store_sqlite_ops;
    snprintf(s->base.describe, sizeof s->base.describe, "sqlite:%s", path);
    bool memory = strcmp(path, ":memory:") == 0;
    if (!memory && apply) {
        if (th_store_make_parent(path) != 0) {
            snprintf(err, errlen, "sqlite: cannot create the directory of %s: %s", path,
                     strerror(errno));
            free(s);
            return TH_E_STORE;
        }
        /*
         * Create the file 0600 ourselves: SQLite would make it 0644, and the outbox holds text
         * (the -wal and -shm take the database file's mode). O_EXCL: nothing but a file this
         * call creates is ever opened outside SQLite. POSIX locks belong to the process, and
         * closing any descriptor of a file drops all of them, those of the process's live
         * connections included; the next process to close would then take itself for the last
         * connection and check-point and delete the WAL they still write to. A file that did
         * not exist holds no lock of ours (two opens of one store never run at once in a
         * process); an existing one is SQLite's alone, which shares one descriptor per file
         * among its connections.
         */
        int fd = open(path, O_RDWR | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
        if (fd >= 0)
            close(fd);
    }
    th_err e = TH_E_STORE;
    int flags = SQLITE_OPEN_READWRITE | (apply ? SQLITE_OPEN_CREATE : 0) | SQLITE_OPEN_NOMUTEX;
    if (sqlite3_open_v2(path, &s->db, flags, NULL) != SQLITE_OK) {
        snprintf(err, errlen, "sqlite: %s: %s", s->db ? sqlite3_errmsg(s->db) : "out of memory",
                 path);
        goto fail;
    }
    sqlite3_busy_timeout(s->db, 5000);
    if (!apply) { /* `store status`: the schema as it is; statements only on the latest */
        int v = 0;
        if (user_version(s->db, &v) != 0 || v != SCHEMA_VERSION) {
            *out = &s->base;
            return TH_E_OK;
        }
    } else if ((e = exec(s->db,
                         "PRAGMA journal_mode = WAL; PRAGMA synchronous = NORMAL; "
                         "PRAGMA foreign_keys = ON;",
                         err, errlen)) != TH_E_OK ||
               (e = migrate(s->db, err, errlen)) != TH_E_OK)
        goto fail;
    if (apply) {
        char q[64];
        snprintf(q, sizeof q, "PRAGMA cache_size = -%d", cache_kib(s->db));
        if ((e = exec(s->db, q, err, errlen)) != TH_E_OK)
            goto fail;
    }
    for (int i = 0; i < S__COUNT; i++) {
        if (sqlite3_prepare_v3(s->db, sql[i], -1, SQLITE_PREPARE_PERSISTENT, &s->stmt[i], NULL) !=
            SQLITE_OK) {
            snprintf(err, errlen, "sqlite: %s", sqlite3_errmsg(s->db));
            e = TH_E_STORE;
            goto fail;
        }
    }
    *out = &s->base;
    return TH_E_OK;
fail:
    sqlite_close(&s->base);
    return e;
}

static th_err sqlite_open(const char *path, struct th_store **out, char *err, size_t errlen)
{
    return sqlite_open_mode(path, true, out, err, errlen);
}

static th_err sqlite_open_unmigrated(const char *path, struct th_store **out, char *err,
                                     size_t errlen)
{
    return sqlite_open_mode(path, false, out, err, errlen);
}

/* Runs a prepared write statement to completion and resets it. */
static th_err step_done(sqlite3_stmt *st)
{
    int rc = sqlite3_step(st);
    sqlite3_reset(st);
    sqlite3_clear_bindings(st);
    return rc == SQLITE_DONE ? TH_E_OK : TH_E_STORE;
}

static void bind_text(sqlite3_stmt *st, int i, const char *v)
{
    sqlite3_bind_text(st, i, v ? v : "", -1, SQLITE_STATIC);
}

static const char *col(sqlite3_stmt *st, int i)
{
    const unsigned char *v = sqlite3_column_text(st, i);
    return v ? (const char *)v : "";
}

/*
 * The current row of a delivery query: the columns of deliveries in the schema's order; with
 * keys the search keys (login_hash, phone_hash) follow user_id, as `store copy` reads them;
 * without, they stay in the store. The strings are the statement's until its next step.
 */
static struct th_delivery_row delivery_of(sqlite3_stmt *s, bool keys)
{
    int k = keys ? 2 : 0;
    return (struct th_delivery_row){
        .request_id = col(s, 0),
        .event_id = col(s, 1),
        .created_ms = sqlite3_column_int64(s, 2),
        .request_type = col(s, 3),
        .phone_masked = col(s, 4),
        .country = col(s, 5),
        .channel = col(s, 6),
        .language = col(s, 7),
        .source = col(s, 8),
        .provider = col(s, 9),
        .outcome = col(s, 10),
        .transaction_id = col(s, 11),
        .error = col(s, 12),
        .latency_us = sqlite3_column_int64(s, 13),
        .attempts = sqlite3_column_int(s, 14),
        .user_id = col(s, 15),
        .login_hash = keys ? col(s, 16) : "",
        .phone_hash = keys ? col(s, 17) : "",
        .locale = col(s, 16 + k),
        .preference = col(s, 17 + k),
        .prefix_hash = col(s, 18 + k),
        .node = col(s, 19 + k),
        .verified_ms = sqlite3_column_int64(s, 20 + k), /* NULL reads 0 */
        .verified_event = col(s, 21 + k),
    };
}

static th_err sqlite_templates_each(struct th_store *st, th_template_row_fn fn, void *ud)
{
    sqlite3_stmt *q = S(st)->stmt[S_TPL_EACH];
    int rc;
    while ((rc = sqlite3_step(q)) == SQLITE_ROW) {
        struct th_template_row row = {col(q, 0), col(q, 1), col(q, 2), col(q, 3),
                                      sqlite3_column_int64(q, 4)};
        if (fn(ud, &row))
            break;
    }
    sqlite3_reset(q);
    return rc == SQLITE_ROW || rc == SQLITE_DONE ? TH_E_OK : TH_E_STORE;
}

static th_err sqlite_template_put(struct th_store *st, const struct th_template_row *row)
{
    sqlite3_stmt *q = S(st)->stmt[S_TPL_PUT];
    bind_text(q, 1, row->language);
    bind_text(q, 2, row->channel);
    bind_text(q, 3, row->body);
    bind_text(q, 4, row->voice_id);
    sqlite3_bind_int64(q, 5, row->updated_ms);
    return step_done(q);
}

static th_err sqlite_template_delete(struct th_store *st, const char *language, const char *channel)
{
    sqlite3_stmt *q = S(st)->stmt[S_TPL_DEL];
    bind_text(q, 1, language);
    bind_text(q, 2, channel);
    th_err e = step_done(q);
    if (e == TH_E_OK && sqlite3_changes(S(st)->db) == 0)
        return TH_E_NOTFOUND;
    return e;
}

static th_err sqlite_outbox_insert(struct th_store *st, const struct th_outbox_row *row)
{
    sqlite3_stmt *q = S(st)->stmt[S_OUTBOX_INS];
    bind_text(q, 1, row->id);
    sqlite3_bind_int64(q, 2, row->created_ms);
    bind_text(q, 3, row->request_id);
    bind_text(q, 4, row->to);
    bind_text(q, 5, row->channel);
    bind_text(q, 6, row->language);
    bind_text(q, 7, row->body);
    bind_text(q, 8, row->voice_id);
    return step_done(q);
}

static th_err sqlite_outbox_each(struct th_store *st, int limit, th_outbox_row_fn fn, void *ud)
{
    sqlite3_stmt *q = S(st)->stmt[S_OUTBOX_EACH];
    sqlite3_bind_int(q, 1, limit);
    int rc;
    while ((rc = sqlite3_step(q)) == SQLITE_ROW) {
        struct th_outbox_row row = {
            .id = col(q, 0),
            .created_ms = sqlite3_column_int64(q, 1),
            .request_id = col(q, 2),
            .to = col(q, 3),
            .channel = col(q, 4),
            .language = col(q, 5),
            .body = col(q, 6),
            .voice_id = col(q, 7),
        };
        if (fn(ud, &row))
            break;
    }
    sqlite3_reset(q);
    return rc == SQLITE_ROW || rc == SQLITE_DONE ? TH_E_OK : TH_E_STORE;
}

static th_err sqlite_delivery_insert(struct th_store *st, const struct th_delivery_row *row)
{
    sqlite3_stmt *q = S(st)->stmt[S_DELIV_INS];
    bind_text(q, 1, row->request_id);
    bind_text(q, 2, row->event_id);
    sqlite3_bind_int64(q, 3, row->created_ms);
    bind_text(q, 4, row->request_type);
    bind_text(q, 5, row->phone_masked);
    bind_text(q, 6, row->country);
    bind_text(q, 7, row->channel);
    bind_text(q, 8, row->language);
    bind_text(q, 9, row->source);
    bind_text(q, 10, row->provider);
    bind_text(q, 11, row->outcome);
    bind_text(q, 12, row->transaction_id);
    bind_text(q, 13, row->error);
    sqlite3_bind_int64(q, 14, row->latency_us);
    sqlite3_bind_int(q, 15, row->attempts);
    bind_text(q, 16, row->user_id);
    bind_text(q, 17, row->login_hash);
    bind_text(q, 18, row->phone_hash);
    bind_text(q, 19, row->locale);
    bind_text(q, 20, row->preference);
    bind_text(q, 21, row->prefix_hash);
    bind_text(q, 22, row->node);
    if (row->verified_ms)
        sqlite3_bind_int64(q, 23, row->verified_ms);
    else
        sqlite3_bind_null(q, 23);
    bind_text(q, 24, row->verified_event);
    return step_done(q);
}

static th_err sqlite_prefs_each(struct th_store *st, th_pref_row_fn fn, void *ud)
{
    sqlite3_stmt *q = S(st)->stmt[S_PREF_EACH];
    int rc;
    while ((rc = sqlite3_step(q)) == SQLITE_ROW) {
        struct th_pref_row row = {col(q, 0), col(q, 1), col(q, 2), sqlite3_column_int64(q, 3)};
        if (fn(ud, &row))
            break;
    }
    sqlite3_reset(q);
    return rc == SQLITE_ROW || rc == SQLITE_DONE ? TH_E_OK : TH_E_STORE;
}

static th_err sqlite_pref_put(struct th_store *st, const struct th_pref_row *row)
{
    sqlite3_stmt *q = S(st)->stmt[S_PREF_PUT];
    bind_text(q, 1, row->user);
    bind_text(q, 2, row->language);
    bind_text(q, 3, row->channel);
    sqlite3_bind_int64(q, 4, row->updated_ms);
    return step_done(q);
}

static th_err sqlite_pref_delete(struct th_store *st, const char *user)
{
    sqlite3_stmt *q = S(st)->stmt[S_PREF_DEL];
    bind_text(q, 1, user);
    th_err e = step_done(q);
    if (e == TH_E_OK && sqlite3_changes(S(st)->db) == 0)
        return TH_E_NOTFOUND;
    return e;
}

static th_err sqlite_routes_each(struct th_store *st, th_route_row_fn fn, void *ud)
{
    sqlite3_stmt *q = S(st)->stmt[S_ROUTE_EACH];
    int rc;
    while ((rc = sqlite3_step(q)) == SQLITE_ROW) {
        struct th_route_row row = {col(q, 0), col(q, 1), col(q, 2), sqlite3_column_int64(q, 3)};
        if (fn(ud, &row))
            break;
    }
    sqlite3_reset(q);
    return rc == SQLITE_ROW || rc == SQLITE_DONE ? TH_E_OK : TH_E_STORE;
}

static th_err sqlite_route_put(struct th_store *st, const struct th_route_row *row)
{
    sqlite3_stmt *q = S(st)->stmt[S_ROUTE_PUT];
    bind_text(q, 1, row->channel);
    bind_text(q, 2, row->country);
    bind_text(q, 3, row->attempts);
    sqlite3_bind_int64(q, 4, row->updated_ms);
    return step_done(q);
}

static th_err sqlite_route_delete(struct th_store *st, const char *channel, const char *country)
{
    sqlite3_stmt *q = S(st)->stmt[S_ROUTE_DEL];
    bind_text(q, 1, channel);
    bind_text(q, 2, country);
    th_err e = step_done(q);
    if (e == TH_E_OK && sqlite3_changes(S(st)->db) == 0)
        return TH_E_NOTFOUND;
    return e;
}

/* A filtered listing: the WHERE clause is built from fixed pieces, every value is bound. */
static th_err sqlite_deliveries_query(struct th_store *st, const struct th_delivery_filter *f,
                                      th_delivery_row_fn fn, void *ud)
{
    char q[2048] = "SELECT request_id, event_id, created_ms, request_type, phone_masked, country, "
                   "channel, language, source, provider, outcome, transaction_id, error, "
                   "latency_us, attempts, user_id, locale, preference, prefix_hash, node, "
                   "verified_ms, verified_event, receipt_status, receipt_error, receipt_ms "
                   "FROM deliveries WHERE 1 = 1";
    const char *texts[] = {f->outcome,    f->provider, f->country,   f->channel,
                           f->request_id, f->event_id, f->phone_hash};
    static const char *const cols[] = {"outcome",    "provider", "country",   "channel",
                                       "request_id", "event_id", "phone_hash"};
    bool user = f->user_id && *f->user_id, login = f->login_hash && *f->login_hash;
    if (f->since_ms)
        strcat(q, " AND created_ms >= ?");
    if (f->until_ms)
        strcat(q, " AND created_ms < ?");
    for (size_t i = 0; i < TH_ARRAY_LEN(texts); i++) {
        if (texts[i] && *texts[i]) {
            strcat(q, " AND ");
            strcat(q, cols[i]);
            strcat(q, " = ?");
        }
    }
    if (user && login)
        strcat(q, " AND (user_id = ? OR login_hash = ?)");
    else if (user)
        strcat(q, " AND user_id = ?");
    else if (login)
        strcat(q, " AND login_hash = ?");
    strcat(q, " ORDER BY created_ms DESC, rowid DESC LIMIT ?");
    sqlite3_stmt *stmt;
    if (sqlite3_prepare_v2(S(st)->db, q, -1, &stmt, NULL) != SQLITE_OK)
        return TH_E_STORE;
    int n = 1;
    if (f->since_ms)
        sqlite3_bind_int64(stmt, n++, f->since_ms);
    if (f->until_ms)
        sqlite3_bind_int64(stmt, n++, f->until_ms);
    for (size_t i = 0; i < TH_ARRAY_LEN(texts); i++)
        if (texts[i] && *texts[i])
            bind_text(stmt, n++, texts[i]);
    if (user)
        bind_text(stmt, n++, f->user_id);
    if (login)
        bind_text(stmt, n++, f->login_hash);
    sqlite3_bind_int(stmt, n, f->limit > 0 ? f->limit : 20);
    int rc;
    while ((rc = sqlite3_step(stmt)) == SQLITE_ROW) {
        struct th_delivery_row row = delivery_of(stmt, false);
        row.receipt_status = col(stmt, 22);
        row.receipt_error = col(stmt, 23);
        row.receipt_ms = sqlite3_column_int64(stmt, 24);
        if (fn(ud, &row))
            break;
    }
    sqlite3_finalize(stmt);
    return rc == SQLITE_ROW || rc == SQLITE_DONE ? TH_E_OK : TH_E_STORE;
}

static th_err sqlite_receipt_find(struct th_store *st, const char *provider,
                                  const char *transaction_id, int64_t *row,
                                  struct th_receipt_applied *t, char *cur_status, size_t cur_len,
                                  bool *cur_final, int64_t *cur_ms)
{
    sqlite3_stmt *q = S(st)->stmt[S_RCPT_FIND];
    bind_text(q, 1, provider);
    bind_text(q, 2, transaction_id);
    int rc = sqlite3_step(q);
    th_err e = rc == SQLITE_ROW ? TH_E_OK : rc == SQLITE_DONE ? TH_E_NOTFOUND : TH_E_STORE;
    if (e == TH_E_OK) {
        *row = sqlite3_column_int64(q, 0);
        th_strlcpy(t->request_id, col(q, 1), sizeof t->request_id);
        t->sent_ms = sqlite3_column_int64(q, 2);
        th_strlcpy(t->country, col(q, 3), sizeof t->country);
        th_strlcpy(t->channel, col(q, 4), sizeof t->channel);
        th_strlcpy(cur_status, col(q, 5), cur_len);
        *cur_final = sqlite3_column_int(q, 6) != 0;
        *cur_ms = sqlite3_column_int64(q, 7);
    }
    sqlite3_reset(q);
    return e;
}

static th_err sqlite_receipt_set(struct th_store *st, int64_t row, const struct th_receipt_row *r)
{
    sqlite3_stmt *q = S(st)->stmt[S_RCPT_SET];
    bind_text(q, 1, r->status);
    bind_text(q, 2, r->error ? r->error : "");
    sqlite3_bind_int64(q, 3, r->event_ms);
    sqlite3_bind_int(q, 4, r->final ? 1 : 0);
    sqlite3_bind_int64(q, 5, row);
    return step_done(q);
}

static th_err sqlite_dlq_insert(struct th_store *st, const struct th_dlq_row *row)
{
    sqlite3_stmt *q = S(st)->stmt[S_DLQ_INS];
    bind_text(q, 1, row->id);
    sqlite3_bind_int64(q, 2, row->created_ms);
    bind_text(q, 3, row->request_id);
    bind_text(q, 4, row->event_id);
    bind_text(q, 5, row->phone_masked);
    bind_text(q, 6, row->country);
    bind_text(q, 7, row->channel);
    bind_text(q, 8, row->language);
    bind_text(q, 9, row->outcome);
    bind_text(q, 10, row->errors);
    sqlite3_bind_int(q, 11, row->attempts);
    sqlite3_bind_int64(q, 12, row->otp_expires_ms);
    bind_text(q, 13, row->key_id);
    if (row->payload_len)
        sqlite3_bind_blob(q, 14, row->payload, (int)row->payload_len, SQLITE_STATIC);
    else
        sqlite3_bind_null(q, 14);
    return step_done(q);
}

static void dlq_from(sqlite3_stmt *q, struct th_dlq_row *row)
{
    *row = (struct th_dlq_row){
        .id = col(q, 0),
        .created_ms = sqlite3_column_int64(q, 1),
        .request_id = col(q, 2),
        .event_id = col(q, 3),
        .phone_masked = col(q, 4),
        .country = col(q, 5),
        .channel = col(q, 6),
        .language = col(q, 7),
        .outcome = col(q, 8),
        .errors = col(q, 9),
        .attempts = sqlite3_column_int(q, 10),
        .otp_expires_ms = sqlite3_column_int64(q, 11),
        .key_id = col(q, 12),
        .payload = sqlite3_column_blob(q, 13),
        .payload_len = (size_t)sqlite3_column_bytes(q, 13),
    };
}

static th_err sqlite_dlq_each(struct th_store *st, int limit, th_dlq_row_fn fn, void *ud)
{
    sqlite3_stmt *q = S(st)->stmt[S_DLQ_EACH];
    sqlite3_bind_int(q, 1, limit);
    int rc;
    while ((rc = sqlite3_step(q)) == SQLITE_ROW) {
        struct th_dlq_row row;
        dlq_from(q, &row);
        if (fn(ud, &row))
            break;
    }
    sqlite3_reset(q);
    return rc == SQLITE_ROW || rc == SQLITE_DONE ? TH_E_OK : TH_E_STORE;
}

static th_err sqlite_dlq_get(struct th_store *st, const char *id, th_dlq_row_fn fn, void *ud)
{
    sqlite3_stmt *q = S(st)->stmt[S_DLQ_GET];
    bind_text(q, 1, id);
    int rc = sqlite3_step(q);
    th_err e = rc == SQLITE_ROW ? TH_E_OK : rc == SQLITE_DONE ? TH_E_NOTFOUND : TH_E_STORE;
    if (rc == SQLITE_ROW) {
        struct th_dlq_row row;
        dlq_from(q, &row);
        fn(ud, &row);
    }
    sqlite3_reset(q);
    sqlite3_clear_bindings(q);
    return e;
}

static th_err sqlite_dlq_delete(struct th_store *st, const char *id)
{
    sqlite3_stmt *q = S(st)->stmt[S_DLQ_DEL];
    bind_text(q, 1, id);
    th_err e = step_done(q);
    if (e == TH_E_OK && sqlite3_changes(S(st)->db) == 0)
        return TH_E_NOTFOUND;
    return e;
}

static th_err sqlite_dlq_count(struct th_store *st, long *n)
{
    sqlite3_stmt *q = S(st)->stmt[S_DLQ_COUNT];
    th_err e = TH_E_STORE;
    if (sqlite3_step(q) == SQLITE_ROW) {
        *n = (long)sqlite3_column_int64(q, 0);
        e = TH_E_OK;
    }
    sqlite3_reset(q);
    return e;
}

static th_err purge_one(struct th_store *st, enum stmt which, int64_t before_ms, long *n)
{
    sqlite3_stmt *q = S(st)->stmt[which];
    sqlite3_bind_int64(q, 1, before_ms);
    th_err e = step_done(q);
    *n += e == TH_E_OK ? sqlite3_changes(S(st)->db) : 0;
    return e;
}

static th_err sqlite_purge(struct th_store *st, const struct th_purge *p, long *removed)
{
    *removed = 0;
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
    return e;
}

/* ---- verifications (store.h) ---- */

static sqlite3_stmt *prepare(struct th_store *st, const char *q)
{
    sqlite3_stmt *s = NULL;
    if (sqlite3_prepare_v2(S(st)->db, q, -1, &s, NULL) != SQLITE_OK) {
        sqlite3_finalize(s);
        return NULL;
    }
    return s;
}

/* The verification's row, the match and the mark in one write transaction (BEGIN IMMEDIATE:
 * two processes matching one user's delivery cannot both credit it). */
static th_err sqlite_verify(struct th_store *st, const struct th_verify_event *ev,
                            enum th_verify_result *res, th_verified_fn fn, void *ud)
{
    char err[256];
    *res = TH_VERIFY_UNMATCHED;
    if (exec(S(st)->db, "BEGIN IMMEDIATE", err, sizeof err) != TH_E_OK)
        return TH_E_STORE;
    th_err e = TH_E_STORE;
    sqlite3_stmt *seen = prepare(st, "SELECT 1 FROM verifications WHERE event_id = ?");
    sqlite3_stmt *find =
        prepare(st, "SELECT rowid, request_id, created_ms, node, country, prefix_hash, provider, "
                    "channel, transaction_id, phone_hash FROM deliveries WHERE user_id = ? AND "
                    "channel = ? AND "
                    "outcome = 'SUCCESSFUL' AND created_ms >= ? AND created_ms <= ? AND "
                    "verified_ms IS NULL ORDER BY created_ms DESC, rowid DESC LIMIT 1");
    sqlite3_stmt *mark =
        prepare(st, "UPDATE deliveries SET verified_ms = ?, verified_event = ? WHERE rowid = ?");
    sqlite3_stmt *ins =
        prepare(st, "INSERT INTO verifications (event_id, request_id, node, matched_by, country, "
                    "prefix_hash, provider, channel, transaction_id, sent_ms, verified_ms, "
                    "phone_hash) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)");
    if (!seen || !find || !mark || !ins)
        goto done;
    bind_text(seen, 1, ev->event_id);
    int rc = sqlite3_step(seen);
    if (rc == SQLITE_ROW) {
        *res = TH_VERIFY_DUPLICATE;
        e = TH_E_OK;
        goto done;
    }
    if (rc != SQLITE_DONE)
        goto done;
    bind_text(find, 1, ev->user_id);
    bind_text(find, 2, ev->channel);
    sqlite3_bind_int64(find, 3, ev->from_ms);
    sqlite3_bind_int64(find, 4, ev->to_ms);
    rc = sqlite3_step(find);
    if (rc == SQLITE_DONE) {
        e = TH_E_OK;
        goto done;
    }
    if (rc != SQLITE_ROW)
        goto done;
    struct th_verified v = {
        .event_id = ev->event_id,
        .request_id = col(find, 1),
        .sent_ms = sqlite3_column_int64(find, 2),
        .node = col(find, 3),
        .country = col(find, 4),
        .prefix_hash = col(find, 5),
        .provider = col(find, 6),
        .channel = col(find, 7),
        .transaction_id = col(find, 8),
        .phone_hash = col(find, 9),
        .verified_ms = ev->verified_ms,
    };
    sqlite3_bind_int64(mark, 1, ev->verified_ms);
    bind_text(mark, 2, ev->event_id);
    sqlite3_bind_int64(mark, 3, sqlite3_column_int64(find, 0));
    bind_text(ins, 1, ev->event_id);
    bind_text(ins, 2, v.request_id);
    bind_text(ins, 3, v.node);
    bind_text(ins, 4, ev->matched_by);
    bind_text(ins, 5, v.country);
    bind_text(ins, 6, v.prefix_hash);
    bind_text(ins, 7, v.provider);
    bind_text(ins, 8, v.channel);
    bind_text(ins, 9, v.transaction_id);
    sqlite3_bind_int64(ins, 10, v.sent_ms);
    sqlite3_bind_int64(ins, 11, v.verified_ms);
    bind_text(ins, 12, v.phone_hash);
    if (sqlite3_step(mark) != SQLITE_DONE || sqlite3_step(ins) != SQLITE_DONE)
        goto done;
    if (exec(S(st)->db, "COMMIT", err, sizeof err) != TH_E_OK)
        goto done;
    v.seq = sqlite3_last_insert_rowid(S(st)->db);
    *res = TH_VERIFY_MATCHED;
    if (fn)
        fn(ud, &v); /* find's strings are still the statement's */
    sqlite3_finalize(seen);
    sqlite3_finalize(find);
    sqlite3_finalize(mark);
    sqlite3_finalize(ins);
    return TH_E_OK;
done:
    sqlite3_finalize(seen);
    sqlite3_finalize(find);
    sqlite3_finalize(mark);
    sqlite3_finalize(ins);
    if (e == TH_E_OK)
        e = exec(S(st)->db, "COMMIT", err, sizeof err);
    else
        exec(S(st)->db, "ROLLBACK", err, sizeof err);
    if (e != TH_E_OK)
        *res = TH_VERIFY_UNMATCHED;
    return e;
}

th_err th_store_sqlite_query(struct th_store *st, const char *q, char *out, size_t outlen,
                             char *err, size_t errlen)
{
    sqlite3_stmt *s;
    if (sqlite3_prepare_v2(S(st)->db, q, -1, &s, NULL) != SQLITE_OK) {
        snprintf(err, errlen, "sqlite: %s", sqlite3_errmsg(S(st)->db));
        return TH_E_STORE;
    }
    int rc = sqlite3_step(s);
    if (out && outlen) {
        const unsigned char *v = rc == SQLITE_ROW ? sqlite3_column_text(s, 0) : NULL;
        snprintf(out, outlen, "%s", v ? (const char *)v : "");
    }
    if (rc != SQLITE_ROW && rc != SQLITE_DONE)
        snprintf(err, errlen, "sqlite: %s", sqlite3_errmsg(S(st)->db));
    sqlite3_finalize(s);
    return rc == SQLITE_ROW || rc == SQLITE_DONE ? TH_E_OK : TH_E_STORE;
}

static th_err sqlite_ensure_index(struct th_store *st, const char *name, const char *columns,
                                  char *err, size_t errlen)
{
    char q[256];
    snprintf(q, sizeof q, "CREATE INDEX IF NOT EXISTS %s ON deliveries (%s)", name, columns);
    return exec(S(st)->db, q, err, errlen);
}

static th_err sqlite_verifications_since(struct th_store *st, const char *node, int64_t *after_seq,
                                         int limit, th_verified_fn fn, void *ud)
{
    sqlite3_stmt *q;
    if (*after_seq < 0) {
        q = prepare(st, "SELECT coalesce(max(seq), 0) FROM verifications");
        if (!q)
            return TH_E_STORE;
        int rc = sqlite3_step(q);
        if (rc == SQLITE_ROW)
            *after_seq = sqlite3_column_int64(q, 0);
        sqlite3_finalize(q);
        return rc == SQLITE_ROW ? TH_E_OK : TH_E_STORE;
    }
    q = prepare(st, "SELECT seq, event_id, request_id, node, country, prefix_hash, provider, "
                    "channel, transaction_id, sent_ms, verified_ms, phone_hash FROM verifications "
                    "WHERE seq > ? AND node = ? AND matched_by <> node ORDER BY seq LIMIT ?");
    if (!q)
        return TH_E_STORE;
    sqlite3_bind_int64(q, 1, *after_seq);
    bind_text(q, 2, node);
    sqlite3_bind_int(q, 3, limit);
    int rc;
    while ((rc = sqlite3_step(q)) == SQLITE_ROW) {
        struct th_verified v = {
            .seq = sqlite3_column_int64(q, 0),
            .event_id = col(q, 1),
            .request_id = col(q, 2),
            .node = col(q, 3),
            .country = col(q, 4),
            .prefix_hash = col(q, 5),
            .provider = col(q, 6),
            .channel = col(q, 7),
            .transaction_id = col(q, 8),
            .sent_ms = sqlite3_column_int64(q, 9),
            .verified_ms = sqlite3_column_int64(q, 10),
            .phone_hash = col(q, 11),
        };
        *after_seq = v.seq;
        if (fn)
            fn(ud, &v);
    }
    sqlite3_finalize(q);
    return rc == SQLITE_DONE ? TH_E_OK : TH_E_STORE;
}

static th_err sqlite_stats(struct th_store *st, enum th_stats_by by, int64_t since_ms,
                           int64_t until_ms, th_stats_row_fn fn, void *ud)
{
    char q[1024];
    snprintf(q, sizeof q, TH_STATS_SQL("?", "?"), th_stats_group(by),
             by == TH_STATS_PREFIX ? "max(country)" : "''");
    sqlite3_stmt *s = prepare(st, q);
    if (!s)
        return TH_E_STORE;
    sqlite3_bind_int64(s, 1, since_ms);
    sqlite3_bind_int64(s, 2, until_ms);
    int rc;
    while ((rc = sqlite3_step(s)) == SQLITE_ROW) {
        struct th_stats_row row = {
            .group = col(s, 0),
            .country = col(s, 1),
            .sends = sqlite3_column_int64(s, 2),
            .verified = sqlite3_column_int64(s, 3),
            .refused = sqlite3_column_int64(s, 4),
            .failed = sqlite3_column_int64(s, 5),
        };
        if (fn(ud, &row))
            break;
    }
    sqlite3_finalize(s);
    return rc == SQLITE_ROW || rc == SQLITE_DONE ? TH_E_OK : TH_E_STORE;
}

static th_err sqlite_begin(struct th_store *st)
{
    return step_done(S(st)->stmt[S_BEGIN]);
}

static th_err sqlite_commit(struct th_store *st)
{
    return step_done(S(st)->stmt[S_COMMIT]);
}

static th_err sqlite_rollback(struct th_store *st)
{
    return step_done(S(st)->stmt[S_ROLLBACK]);
}

/* The schema version and the rows of each table that exists. */
static th_err sqlite_status(struct th_store *st, struct th_store_status *out)
{
    sqlite3 *db = S(st)->db;
    out->latest = SCHEMA_VERSION;
    out->version = 0;
    user_version(db, &out->version); /* no schema_version table yet: 0 */
    for (size_t i = 0; i < TH_STORE_TABLES; i++) {
        /* a table name from the fixed list, not a value: it cannot be bound */
        char q[96];
        snprintf(q, sizeof q, "SELECT count(*) FROM %s", th_store_tables[i]);
        sqlite3_stmt *c;
        out->rows[i] = -1;
        if (sqlite3_prepare_v2(db, q, -1, &c, NULL) != SQLITE_OK)
            continue; /* no such table (yet) */
        if (sqlite3_step(c) == SQLITE_ROW)
            out->rows[i] = (long)sqlite3_column_int64(c, 0);
        sqlite3_finalize(c);
    }
    return TH_E_OK;
}

/* ---- `store copy`: the history tables in insertion order, a page at a time ---- */

#define OUTBOX_COLS "id, created_ms, request_id, recipient, channel, language, body, voice_id"
#define DELIV_COLS                                                                                 \
    "request_id, event_id, created_ms, request_type, phone_masked, country, channel, language, "   \
    "source, provider, outcome, transaction_id, error, latency_us, attempts, user_id, "            \
    "login_hash, phone_hash, locale, preference, prefix_hash, node, verified_ms, verified_event"
#define DLQ_COLS                                                                                   \
    "id, created_ms, request_id, event_id, phone_masked, country, channel, language, outcome, "    \
    "errors, attempts, otp_expires_ms, key_id, payload"

static th_err sqlite_scan(struct th_store *st, int table, int64_t *after, int limit,
                          const struct th_store_scan_fns *f, int *n)
{
    /* the rowid last: the row's columns keep the positions the readers above use */
    static const char *const q[] = {
        [TH_STORE_T_OUTBOX] = "SELECT " OUTBOX_COLS ", rowid FROM outbox WHERE rowid > ? "
                              "ORDER BY rowid LIMIT ?",
        [TH_STORE_T_DELIVERIES] = "SELECT " DELIV_COLS ", receipt_status, receipt_error, "
                                  "receipt_ms, receipt_final, rowid FROM deliveries WHERE "
                                  "rowid > ? ORDER BY rowid LIMIT ?",
        [TH_STORE_T_DLQ] = "SELECT " DLQ_COLS ", rowid FROM dlq WHERE rowid > ? "
                           "ORDER BY rowid LIMIT ?",
    };
    static const int ncols[] = {
        [TH_STORE_T_OUTBOX] = 8, [TH_STORE_T_DELIVERIES] = 28, [TH_STORE_T_DLQ] = 14};
    *n = 0;
    if (table < TH_STORE_T_OUTBOX || table > TH_STORE_T_DLQ)
        return TH_E_INVAL;
    sqlite3_stmt *s;
    if (sqlite3_prepare_v2(S(st)->db, q[table], -1, &s, NULL) != SQLITE_OK)
        return TH_E_STORE;
    sqlite3_bind_int64(s, 1, *after);
    sqlite3_bind_int(s, 2, limit);
    int rc = SQLITE_DONE, stop = 0;
    while (!stop && (rc = sqlite3_step(s)) == SQLITE_ROW) {
        *after = sqlite3_column_int64(s, ncols[table]);
        (*n)++;
        if (table == TH_STORE_T_OUTBOX) {
            struct th_outbox_row row = {
                .id = col(s, 0),
                .created_ms = sqlite3_column_int64(s, 1),
                .request_id = col(s, 2),
                .to = col(s, 3),
                .channel = col(s, 4),
                .language = col(s, 5),
                .body = col(s, 6),
                .voice_id = col(s, 7),
            };
            stop = f->outbox(f->ud, &row);
        } else if (table == TH_STORE_T_DELIVERIES) {
            struct th_delivery_row row = delivery_of(s, true);
            row.receipt_status = col(s, 24);
            row.receipt_error = col(s, 25);
            row.receipt_ms = sqlite3_column_int64(s, 26);
            row.receipt_final = sqlite3_column_int(s, 27) != 0;
            stop = f->delivery(f->ud, &row);
        } else {
            struct th_dlq_row row;
            dlq_from(s, &row); /* the sealed payload as its bytes: never opened here */
            stop = f->dlq(f->ud, &row);
        }
    }
    sqlite3_finalize(s);
    return stop || rc == SQLITE_ROW || rc == SQLITE_DONE ? TH_E_OK : TH_E_STORE;
}

/* ---- conversion blocks: a few statements every 2 s, prepared per call (off the hot path) ---- */

#define CONV_COLS                                                                                  \
    "id, kind, key, country, masked, since_ms, until_ms, cleared_ms, sends, verified, mode"

static th_err sqlite_conv_block_put(struct th_store *st, const struct th_conv_block_row *row)
{
    sqlite3_stmt *q;
    if (sqlite3_prepare_v2(S(st)->db,
                           "INSERT INTO conversion_blocks (" CONV_COLS ") VALUES "
                           "(?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT (id) DO NOTHING",
                           -1, &q, NULL) != SQLITE_OK)
        return TH_E_STORE;
    bind_text(q, 1, row->id);
    bind_text(q, 2, row->kind);
    bind_text(q, 3, row->key);
    bind_text(q, 4, row->country);
    bind_text(q, 5, row->masked);
    sqlite3_bind_int64(q, 6, row->since_ms);
    sqlite3_bind_int64(q, 7, row->until_ms);
    sqlite3_bind_int64(q, 8, row->cleared_ms);
    sqlite3_bind_int64(q, 9, row->sends);
    sqlite3_bind_int64(q, 10, row->verified);
    bind_text(q, 11, row->mode);
    th_err e = step_done(q);
    sqlite3_finalize(q);
    return e;
}

static th_err sqlite_conv_blocks_each(struct th_store *st, const struct th_conv_block_filter *f,
                                      th_conv_block_fn fn, void *ud)
{
    sqlite3_stmt *q;
    const char *sql_text =
        f->all ? "SELECT " CONV_COLS " FROM conversion_blocks WHERE ?1 = ?1 AND ?2 = ?2 "
                 "ORDER BY since_ms DESC, id LIMIT ?3"
               : "SELECT " CONV_COLS " FROM conversion_blocks WHERE (cleared_ms = 0 AND "
                 "until_ms > ?1) OR (?2 >= 0 AND cleared_ms > ?2) "
                 "ORDER BY since_ms DESC, id LIMIT ?3";
    if (sqlite3_prepare_v2(S(st)->db, sql_text, -1, &q, NULL) != SQLITE_OK)
        return TH_E_STORE;
    sqlite3_bind_int64(q, 1, f->now_ms);
    sqlite3_bind_int64(q, 2, f->cleared_after_ms);
    sqlite3_bind_int(q, 3, f->limit);
    int rc;
    while ((rc = sqlite3_step(q)) == SQLITE_ROW) {
        struct th_conv_block_row row = {.id = col(q, 0),
                                        .kind = col(q, 1),
                                        .key = col(q, 2),
                                        .country = col(q, 3),
                                        .masked = col(q, 4),
                                        .since_ms = sqlite3_column_int64(q, 5),
                                        .until_ms = sqlite3_column_int64(q, 6),
                                        .cleared_ms = sqlite3_column_int64(q, 7),
                                        .sends = (long)sqlite3_column_int64(q, 8),
                                        .verified = (long)sqlite3_column_int64(q, 9),
                                        .mode = col(q, 10)};
        if (fn(ud, &row))
            break;
    }
    sqlite3_finalize(q);
    return rc == SQLITE_ROW || rc == SQLITE_DONE ? TH_E_OK : TH_E_STORE;
}

static th_err sqlite_conv_blocks_clear(struct th_store *st, const struct th_conv_block_clear *c,
                                       long *cleared)
{
    sqlite3_stmt *q;
    const char *which = c->all  ? ""
                        : c->id ? " AND (kind, key) IN (SELECT kind, key FROM conversion_blocks "
                                  "WHERE id = ?2)"
                                : " AND kind = ?2 AND key = ?3";
    char text[512];
    snprintf(text, sizeof text,
             "UPDATE conversion_blocks SET cleared_ms = ?1 WHERE cleared_ms = 0 AND "
             "until_ms > ?1%s",
             which);
    if (sqlite3_prepare_v2(S(st)->db, text, -1, &q, NULL) != SQLITE_OK)
        return TH_E_STORE;
    sqlite3_bind_int64(q, 1, c->now_ms);
    if (!c->all && c->id) {
        bind_text(q, 2, c->id);
    } else if (!c->all) {
        bind_text(q, 2, c->kind);
        bind_text(q, 3, c->key);
    }
    th_err e = step_done(q);
    sqlite3_finalize(q);
    if (e == TH_E_OK)
        *cleared = sqlite3_changes(S(st)->db);
    return e == TH_E_OK && *cleared == 0 ? TH_E_NOTFOUND : e;
}

const struct th_store_ops th_store_sqlite_ops = {
    .scheme = "sqlite",
    .open = sqlite_open,
    .open_unmigrated = sqlite_open_unmigrated,
    .close = sqlite_close,
    .templates_each = sqlite_templates_each,
    .template_put = sqlite_template_put,
    .template_delete = sqlite_template_delete,
    .outbox_insert = sqlite_outbox_insert,
    .outbox_each = sqlite_outbox_each,
    .delivery_insert = sqlite_delivery_insert,
    .deliveries_query = sqlite_deliveries_query,
    .receipt_find = sqlite_receipt_find,
    .receipt_set = sqlite_receipt_set,
    .dlq_insert = sqlite_dlq_insert,
    .dlq_each = sqlite_dlq_each,
    .dlq_get = sqlite_dlq_get,
    .dlq_delete = sqlite_dlq_delete,
    .dlq_count = sqlite_dlq_count,
    .purge = sqlite_purge,
    .routes_each = sqlite_routes_each,
    .route_put = sqlite_route_put,
    .route_delete = sqlite_route_delete,
    .conv_block_put = sqlite_conv_block_put,
    .conv_blocks_each = sqlite_conv_blocks_each,
    .conv_blocks_clear = sqlite_conv_blocks_clear,
    .prefs_each = sqlite_prefs_each,
    .pref_put = sqlite_pref_put,
    .pref_delete = sqlite_pref_delete,
    .begin = sqlite_begin,
    .commit = sqlite_commit,
    .rollback = sqlite_rollback,
    .status = sqlite_status,
    .scan = sqlite_scan,
    .verify = sqlite_verify,
    .verifications_since = sqlite_verifications_since,
    .ensure_index = sqlite_ensure_index,
    .stats = sqlite_stats,
};
