/*
 * Unit tests: the store contract (migrations, seeds, templates, prefs, routes, outbox,
 * deliveries, DLQ, purge, transactions), each run on SQLite and on PostgreSQL. The PostgreSQL
 * cases need TH_TEST_PG_URL (scripts/with-postgres.sh sets it; each case gets its own schema);
 * without it they are skipped, or fail when TH_TEST_REQUIRE_PG is set (make unit / make check).
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <libpq-fe.h>
#include <pthread.h>
#include <sqlite3.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/sysmacros.h>
#include <time.h>
#include <unistd.h>

#include "store/internal.h"
#include "store/store.h"

#include "tmpdir.h"

#define dir tmpdir
static char url[600], path[560];

static int setup(void **state)
{
    if (tmpdir_setup(state) != 0)
        return -1;
    snprintf(path, sizeof path, "%s/sub/dir/t.db", dir); /* parents are created */
    snprintf(url, sizeof url, "sqlite:%s", path);
    return 0;
}

/* ---- the backend of the running case ---- */

enum backend { SQLITE, PG };
static int on_sqlite = SQLITE, on_pg = PG;
static enum backend be;
static int fresh_n;
static char fresh_buf[1200];

/* Sets the case's backend; a PostgreSQL case without a database is skipped or fails. */
static void use(void **state)
{
    be = *(int *)*state;
    if (be == PG && !getenv("TH_TEST_PG_URL")) {
        if (getenv("TH_TEST_REQUIRE_PG"))
            fail_msg("TH_TEST_PG_URL is not set: run under scripts/with-postgres.sh");
        skip();
    }
}

/* Runs sql on a PostgreSQL URL; fails the case when it does not succeed. */
static void pg_exec(const char *u, const char *sql)
{
    const char *ci =
        strncmp(u, "postgresql:", 11) == 0 && strncmp(u, "postgresql://", 13) != 0 ? u + 11 : u;
    PGconn *c = PQconnectdb(ci);
    if (PQstatus(c) != CONNECTION_OK)
        fail_msg("connect: %s", PQerrorMessage(c));
    PGresult *r = PQexec(c, sql);
    ExecStatusType t = PQresultStatus(r);
    if (t != PGRES_COMMAND_OK && t != PGRES_TUPLES_OK)
        fail_msg("%s: %s", sql, PQerrorMessage(c));
    PQclear(r);
    PQfinish(c);
}

/* The test database's URL with a search path of schema (and more -c options). */
static const char *pg_url_in(const char *schema, const char *more, char *out, size_t cap)
{
    const char *base = getenv("TH_TEST_PG_URL");
    snprintf(out, cap, "%s%coptions=-csearch_path%%3D%s%s", base, strchr(base, '?') ? '&' : '?',
             schema, more ? more : "");
    return out;
}

/*
 * A new, empty store of the case's backend: SQLite in memory (or in a new file when file is
 * set: a case that reopens it), PostgreSQL in a new schema of the test database.
 */
static const char *fresh(bool file)
{
    fresh_n++;
    if (be == SQLITE) {
        if (!file)
            return ":memory:";
        snprintf(fresh_buf, sizeof fresh_buf, "sqlite:%s/fresh-%d.db", tmpdir, fresh_n);
        return fresh_buf;
    }
    char schema[32], q[192];
    snprintf(schema, sizeof schema, "t_%d_%d", (int)getpid(), fresh_n);
    snprintf(
        q, sizeof q,
        "SET client_min_messages = warning; DROP SCHEMA IF EXISTS %s CASCADE; CREATE SCHEMA %s",
        schema, schema);
    pg_exec(getenv("TH_TEST_PG_URL"), q);
    return pg_url_in(schema, NULL, fresh_buf, sizeof fresh_buf);
}

/* Runs sql on the store at u directly (not through telehook), on either backend. */
static void raw_exec(const char *u, const char *sql)
{
    if (be == PG) {
        pg_exec(u, sql);
        return;
    }
    const char *p = strncmp(u, "sqlite:", 7) == 0 ? u + 7 : u;
    sqlite3 *db;
    assert_int_equal(sqlite3_open(p, &db), SQLITE_OK);
    char *msg = NULL;
    if (sqlite3_exec(db, sql, NULL, NULL, &msg) != SQLITE_OK)
        fail_msg("%s: %s", sql, msg);
    sqlite3_close(db);
}

static struct th_store *open_ok(const char *u)
{
    struct th_store *st = NULL;
    char err[512];
    th_err e = th_store_open(u, &st, err, sizeof err);
    if (e != TH_E_OK)
        fail_msg("open %s: %s", u, err);
    return st;
}

struct rows {
    int n;
    char first[8][256];
};

static int count_tpl(void *ud, const struct th_template_row *row)
{
    struct rows *r = ud;
    if (r->n < 8)
        snprintf(r->first[r->n], sizeof r->first[0], "%s/%s/%s/%s", row->language, row->channel,
                 row->voice_id, row->body);
    r->n++;
    return 0;
}

/* The test database's password (to check that no message or description shows it). */
static void pg_password(char *out, size_t cap)
{
    PQconninfoOption *o = PQconninfoParse(getenv("TH_TEST_PG_URL"), NULL);
    assert_non_null(o);
    out[0] = '\0';
    for (PQconninfoOption *i = o; i->keyword; i++)
        if (strcmp(i->keyword, "password") == 0 && i->val)
            snprintf(out, cap, "%s", i->val);
    PQconninfoFree(o);
    assert_true(strlen(out) >= 8);
}

static void test_migrate_and_seed(void **state)
{
    use(state);
    const char *u = be == SQLITE ? url : fresh(true);
    char pg_url[1200];
    snprintf(pg_url, sizeof pg_url, "%s", u); /* fresh's buffer is reused */
    u = pg_url;
    struct th_store *st = open_ok(u);
    struct rows r = {0};
    /* migration 1 seeds en/es, 6 rewrites the SMS seeds, 7 removes the seeds nobody changed:
     * none is left, so the seeds, 6's UPDATE and 7's DELETE agree word for word (the built-in
     * pack speaks instead) */
    assert_int_equal(th_store_templates_each(st, count_tpl, &r), TH_E_OK);
    assert_int_equal(r.n, 0);
    if (be == SQLITE) {
        assert_non_null(strstr(th_store_describe(st), "t.db"));
    } else {
        char pw[128];
        pg_password(pw, sizeof pw);
        assert_non_null(strstr(th_store_describe(st), "postgresql://telehook@127.0.0.1:"));
        assert_null(strstr(th_store_describe(st), pw));
    }
    /* a template survives a reopen */
    struct th_template_row row = {"en", "sms", "Changed {{otp}}", "", 1};
    assert_int_equal(th_store_template_put(st, &row), TH_E_OK);
    th_store_close(st);
    st = open_ok(u);
    memset(&r, 0, sizeof r);
    assert_int_equal(th_store_templates_each(st, count_tpl, &r), TH_E_OK);
    assert_int_equal(r.n, 1);
    assert_string_equal(r.first[0], "en/sms//Changed {{otp}}");
    struct th_store_status ss;
    assert_int_equal(th_store_status(st, &ss), TH_E_OK);
    assert_int_equal(ss.version, 11);
    assert_int_equal(ss.latest, 11);
    assert_int_equal(ss.rows[0], 1); /* templates */
    assert_int_equal(ss.rows[4], 0); /* deliveries */
    th_store_close(st);
    if (be == PG)
        return; /* the rest is SQLite's file */

    struct stat sb;
    assert_int_equal(stat(path, &sb), 0);
    assert_int_equal(sb.st_mode & 0777, 0600);
    sqlite3 *db;
    assert_int_equal(sqlite3_open(path, &db), SQLITE_OK);
    sqlite3_stmt *q;
    assert_int_equal(sqlite3_prepare_v2(db, "PRAGMA journal_mode", -1, &q, NULL), SQLITE_OK);
    assert_int_equal(sqlite3_step(q), SQLITE_ROW);
    assert_string_equal((const char *)sqlite3_column_text(q, 0), "wal");
    sqlite3_finalize(q);
    sqlite3_close(db);
}

/* Takes the store at p back to schema 4, then inserts rows (the templates as they were then). */
static void back_to_schema_4(const char *p, const char *rows)
{
    const char *back =
        "DROP INDEX IF EXISTS deliveries_user; DROP TABLE verifications;"
        "ALTER TABLE deliveries DROP COLUMN prefix_hash; ALTER TABLE deliveries DROP COLUMN node;"
        "ALTER TABLE deliveries DROP COLUMN verified_ms; ALTER TABLE deliveries DROP COLUMN "
        "verified_event;"
        "DELETE FROM schema_version WHERE version >= 5; DROP TABLE prefs;"
        "DROP INDEX IF EXISTS deliveries_transaction; ALTER TABLE deliveries DROP COLUMN "
        "receipt_status; ALTER TABLE deliveries DROP COLUMN receipt_error; ALTER TABLE "
        "deliveries DROP COLUMN receipt_ms; ALTER TABLE deliveries DROP COLUMN receipt_final;"
        "ALTER TABLE deliveries DROP COLUMN user_id; ALTER TABLE deliveries DROP COLUMN "
        "login_hash; ALTER TABLE deliveries DROP COLUMN phone_hash;"
        "ALTER TABLE deliveries DROP COLUMN locale; ALTER TABLE deliveries DROP COLUMN "
        "preference;";
    raw_exec(p, back);
    raw_exec(p, rows);
}

#define SEED_EN_VOICE                                                                              \
    "'<speak>Your verification code is <break time=\"300ms\"/>{{otp_spaced}}. <break "             \
    "time=\"1s\"/>Again, your code is {{otp_spaced}}.</speak>'"
#define SEED_ES_VOICE                                                                              \
    "'<speak>Su código de verificación es <break time=\"300ms\"/>{{otp_spaced}}. <break "        \
    "time=\"1s\"/>Repito, su código es {{otp_spaced}}.</speak>'"

/*
 * A store at schema 4 with migration 1's seeds: migration 6 gives the seeded SMS texts the plural
 * form (wherever the text is the seed's, even one an admin set again), migration 7 removes the
 * seeds nobody changed (updated_ms 0, as 6 left them) and keeps what an admin changed.
 */
static void test_migrations_6_and_7_on_seeds(void **state)
{
    use(state);
    char u5[1200];
    snprintf(u5, sizeof u5, "%s", fresh(true));
    th_store_close(open_ok(u5));
    back_to_schema_4(
        u5, "INSERT INTO templates VALUES ('en', 'sms', 'Your verification code is {{otp}}. It "
            "expires in {{expires_minutes}} minutes.', '', 0),"
            "('es', 'sms', 'Su código de verificación es {{otp}}. Caduca en {{expires_minutes}} "
            "minutos.', '', 7),"
            "('en', 'voice', " SEED_EN_VOICE ", 'Joanna', 0),"
            "('es', 'voice', " SEED_ES_VOICE ", 'Mia', 0);");
    struct th_store *st = open_ok(u5);
    struct rows r = {0};
    assert_int_equal(th_store_templates_each(st, count_tpl, &r), TH_E_OK);
    assert_int_equal(r.n, 2); /* the text set again (6 rewrote it) and the changed voice stay */
    assert_string_equal(r.first[0], "es/sms//Su código de verificación es {{otp}}. Caduca en "
                                    "{{expires_minutes:minuto|minutos}}.");
    assert_non_null(strstr(r.first[1], "es/voice/Mia/<speak>"));
    /* and the new table and columns are there */
    struct th_pref_row pr = {"Ana@Example.com", "pt-br", "voice", 5};
    assert_int_equal(th_store_pref_put(st, &pr), TH_E_OK);
    struct th_delivery_row d = {.request_id = "r",
                                .event_id = "",
                                .request_type = "",
                                .phone_masked = "",
                                .country = "",
                                .channel = "sms",
                                .language = "en",
                                .source = "",
                                .provider = "",
                                .outcome = "ERROR",
                                .transaction_id = "",
                                .error = "",
                                .user_id = "00u",
                                .login_hash = "l",
                                .phone_hash = "p",
                                .locale = "en-us",
                                .preference = "de"};
    assert_int_equal(th_store_delivery_insert(st, &d), TH_E_OK);
    th_store_close(st);
}

/* A store that had migration 6 (the plural seeds) before 7 existed: 7 removes those too. */
static void test_migration_7_after_6(void **state)
{
    use(state);
    char u6[1200];
    snprintf(u6, sizeof u6, "%s", fresh(true));
    th_store_close(open_ok(u6));
    const char *back =
        "DROP INDEX IF EXISTS deliveries_user; DROP TABLE verifications;"
        "ALTER TABLE deliveries DROP COLUMN prefix_hash; ALTER TABLE deliveries DROP COLUMN node;"
        "ALTER TABLE deliveries DROP COLUMN verified_ms; ALTER TABLE deliveries DROP COLUMN "
        "verified_event;"
        "DELETE FROM schema_version WHERE version >= 7; DROP TABLE prefs;"
        "DROP INDEX IF EXISTS deliveries_transaction; ALTER TABLE deliveries DROP COLUMN "
        "receipt_status; ALTER TABLE deliveries DROP COLUMN receipt_error; ALTER TABLE "
        "deliveries DROP COLUMN receipt_ms; ALTER TABLE deliveries DROP COLUMN receipt_final;"
        "ALTER TABLE deliveries DROP COLUMN locale; ALTER TABLE deliveries DROP COLUMN "
        "preference;"
        "INSERT INTO templates VALUES ('en', 'sms', 'Your verification code is {{otp}}. It "
        "expires in {{expires_minutes:minute|minutes}}.', '', 0),"
        "('es', 'sms', 'Su código de verificación es {{otp}}. Caduca en "
        "{{expires_minutes:minuto|minutos}}.', '', 0),"
        "('en', 'voice', " SEED_EN_VOICE ", 'Joanna', 0),"
        "('es', 'voice', " SEED_ES_VOICE ", 'Lupe', 0);";
    raw_exec(u6, back);
    struct th_store *st = open_ok(u6);
    struct rows r = {0};
    assert_int_equal(th_store_templates_each(st, count_tpl, &r), TH_E_OK);
    assert_int_equal(r.n, 0);
    th_store_close(st);
}

static int collect_pref(void *ud, const struct th_pref_row *row)
{
    struct rows *r = ud;
    if (r->n < 8)
        snprintf(r->first[r->n], sizeof r->first[0], "%s %s %s %lld", row->user, row->language,
                 row->channel, (long long)row->updated_ms);
    r->n++;
    return 0;
}

static int collect_block(void *ud, const struct th_conv_block_row *row)
{
    struct rows *r = ud;
    if (r->n < 8)
        snprintf(r->first[r->n], sizeof r->first[r->n], "%s %s %s %s %s %lld %lld %s %ld/%ld %s",
                 row->id, row->kind, row->key, row->country, row->masked, (long long)row->since_ms,
                 (long long)row->until_ms, row->cleared_ms ? "cleared" : "-", row->sends,
                 row->verified, row->mode);
    r->n++;
    return 0;
}

/* Indexes named name on the store at u (st open on it). */
static int index_count(struct th_store *st, const char *u, const char *name)
{
    char q[256], got[16], err[256];
    if (be == PG) {
        snprintf(q, sizeof q,
                 "SELECT count(*) FROM pg_indexes WHERE schemaname = current_schema() AND "
                 "indexname = '%s'",
                 name);
        assert_int_equal(th_store_pg_query(st, q, got, sizeof got, err, sizeof err), TH_E_OK);
        return atoi(got);
    }
    sqlite3 *db;
    assert_int_equal(sqlite3_open(u + 7, &db), SQLITE_OK);
    sqlite3_stmt *c;
    assert_int_equal(sqlite3_prepare_v2(db,
                                        "SELECT count(*) FROM sqlite_master WHERE type = 'index' "
                                        "AND name = ?",
                                        -1, &c, NULL),
                     SQLITE_OK);
    sqlite3_bind_text(c, 1, name, -1, SQLITE_STATIC);
    assert_int_equal(sqlite3_step(c), SQLITE_ROW);
    int n = sqlite3_column_int(c, 0);
    sqlite3_finalize(c);
    sqlite3_close(db);
    return n;
}

/*
 * Conversion tracking's two indexes: none after the migrations (an install without the feature
 * does not pay an index insert per record for them), each built when asked, idempotently; on
 * PostgreSQL the session's statement timeout is as it was after the build.
 */
static void test_feature_indexes(void **state)
{
    use(state);
    const char *u = fresh(true);
    struct th_store *st = open_ok(u);
    char err[256];
    assert_int_equal(index_count(st, u, "deliveries_user"), 0);
    assert_int_equal(index_count(st, u, "deliveries_transaction"), 0);
    assert_int_equal(th_store_ensure_indexes(st, TH_STORE_INDEX_VERIFY, err, sizeof err), TH_E_OK);
    assert_int_equal(index_count(st, u, "deliveries_user"), 1);
    assert_int_equal(index_count(st, u, "deliveries_transaction"), 0);
    for (int i = 0; i < 2; i++)
        assert_int_equal(th_store_ensure_indexes(
                             st, TH_STORE_INDEX_VERIFY | TH_STORE_INDEX_RECEIPTS, err, sizeof err),
                         TH_E_OK);
    assert_int_equal(index_count(st, u, "deliveries_user"), 1);
    assert_int_equal(index_count(st, u, "deliveries_transaction"), 1);
    if (be == PG) {
        char got[16];
        assert_int_equal(
            th_store_pg_query(st, "SHOW statement_timeout", got, sizeof got, err, sizeof err),
            TH_E_OK);
        assert_string_equal(got, "5s");
    }
    th_store_close(st);
}

/* SQLite's page cache: 1 MiB while every index takes records in time order, SQLite's default
 * once conversion tracking's random-order indexes are there (a connection opened after them). */
static void test_sqlite_cache(void **state)
{
    use(state);
    const char *u = fresh(true);
    char got[32], err[256];
    struct th_store *st = open_ok(u);
    assert_int_equal(
        th_store_sqlite_query(st, "PRAGMA cache_size", got, sizeof got, err, sizeof err), TH_E_OK);
    assert_string_equal(got, "-1024");
    assert_int_equal(th_store_ensure_indexes(st, TH_STORE_INDEX_RECEIPTS, err, sizeof err),
                     TH_E_OK);
    struct th_store *st2 = open_ok(u);
    assert_int_equal(
        th_store_sqlite_query(st2, "PRAGMA cache_size", got, sizeof got, err, sizeof err), TH_E_OK);
    assert_string_equal(got, "-2000");
    th_store_close(st2);
    th_store_close(st);
}

/* conversion_blocks: put (an id twice is kept once), active and recently cleared, clears. */
static void test_conv_blocks(void **state)
{
    use(state);
    struct th_store *st = open_ok(fresh(false));
    struct th_conv_block_row a = {"cbp-a", "prefix", "aaaa", "GB", "+44770090****", 1000,
                                  5000,    0,        20,     1,    "enforce"};
    struct th_conv_block_row b = {"cbp-b", "prefix", "bbbb", "GB", "+44770091****", 2000,
                                  9000,    0,        20,     0,    "monitor"};
    struct th_conv_block_row c = {"cbc-c", "country", "NG", "NG", "",       3000,
                                  9000,    0,         200,  3,    "enforce"};
    struct th_conv_block_row d = {
        "cbp-d", "prefix", "bbbb", "GB", "",       2500,
        9000,    0,        20,     0,    "enforce"}; /* another node's block of b's prefix */
    assert_int_equal(th_store_conv_block_put(st, &a), TH_E_OK);
    assert_int_equal(th_store_conv_block_put(st, &b), TH_E_OK);
    assert_int_equal(th_store_conv_block_put(st, &c), TH_E_OK);
    assert_int_equal(th_store_conv_block_put(st, &d), TH_E_OK);
    assert_int_equal(th_store_conv_block_put(st, &a), TH_E_OK); /* kept once */
    struct th_conv_block_filter f = {.now_ms = 6000, .cleared_after_ms = -1, .limit = 100};
    struct rows r = {0};
    assert_int_equal(th_store_conv_blocks_each(st, &f, collect_block, &r), TH_E_OK);
    assert_int_equal(r.n, 3); /* a ended at 5000 */
    assert_string_equal(r.first[0], "cbc-c country NG NG  3000 9000 - 200/3 enforce");
    assert_string_equal(r.first[2], "cbp-b prefix bbbb GB +44770091**** 2000 9000 - 20/0 monitor");
    f.all = true;
    r = (struct rows){0};
    assert_int_equal(th_store_conv_blocks_each(st, &f, collect_block, &r), TH_E_OK);
    assert_int_equal(r.n, 4);
    /* clear by id takes every active block of that prefix; then nothing is left to clear */
    long n = 0;
    struct th_conv_block_clear cl = {.id = "cbp-b", .now_ms = 6000};
    assert_int_equal(th_store_conv_blocks_clear(st, &cl, &n), TH_E_OK);
    assert_int_equal(n, 2);
    assert_int_equal(th_store_conv_blocks_clear(st, &cl, &n), TH_E_NOTFOUND);
    assert_int_equal(n, 0);
    cl = (struct th_conv_block_clear){.kind = "prefix", .key = "aaaa", .now_ms = 6000};
    assert_int_equal(th_store_conv_blocks_clear(st, &cl, &n), TH_E_NOTFOUND); /* ended */
    /* the nodes' read: active ones and those cleared after their last read */
    f = (struct th_conv_block_filter){.now_ms = 6500, .cleared_after_ms = 5999, .limit = 100};
    r = (struct rows){0};
    assert_int_equal(th_store_conv_blocks_each(st, &f, collect_block, &r), TH_E_OK);
    assert_int_equal(r.n, 3);
    assert_string_equal(r.first[1], "cbp-d prefix bbbb GB  2500 9000 cleared 20/0 enforce");
    f.cleared_after_ms = 6000;
    r = (struct rows){0};
    assert_int_equal(th_store_conv_blocks_each(st, &f, collect_block, &r), TH_E_OK);
    assert_int_equal(r.n, 1);
    cl = (struct th_conv_block_clear){.kind = "country", .key = "NG", .now_ms = 7000};
    assert_int_equal(th_store_conv_blocks_clear(st, &cl, &n), TH_E_OK);
    assert_int_equal(n, 1);
    cl = (struct th_conv_block_clear){.all = true, .now_ms = 7000};
    assert_int_equal(th_store_conv_blocks_clear(st, &cl, &n), TH_E_NOTFOUND);
    /* times as the nodes give them: unix ms, past 32 bits */
    struct th_conv_block_row e = {"cbp-e",       "prefix", "eeee", "GB", "",       1764900000000,
                                  1764903600000, 0,        20,     0,    "enforce"};
    assert_int_equal(th_store_conv_block_put(st, &e), TH_E_OK);
    f = (struct th_conv_block_filter){
        .now_ms = 1764900001000, .cleared_after_ms = 1764899995000, .limit = 100};
    r = (struct rows){0};
    assert_int_equal(th_store_conv_blocks_each(st, &f, collect_block, &r), TH_E_OK);
    assert_int_equal(r.n, 1);
    /* retention: a block over (and cleared) before the deliveries' cut-off goes with them */
    long removed = 0;
    assert_int_equal(th_store_purge(st, &(struct th_purge){.deliveries_before_ms = 8000}, &removed),
                     TH_E_OK);
    assert_int_equal(removed, 1); /* a, over at 5000; b, c, d last till 9000; e till 2025 */
    f = (struct th_conv_block_filter){.all = true, .limit = 100};
    r = (struct rows){0};
    assert_int_equal(th_store_conv_blocks_each(st, &f, collect_block, &r), TH_E_OK);
    assert_int_equal(r.n, 4);
    th_store_close(st);
}

/* A final receipt repeated (a sender's retry, a replayed callback) changes nothing: the writer
 * calls on_receipt only for a change, and route health counts each call as one more delivery. */
static void test_receipt_repeated(void **state)
{
    use(state);
    struct th_store *st = open_ok(fresh(false));
    struct th_delivery_row d = {.request_id = "req-r",
                                .event_id = "",
                                .created_ms = 1000,
                                .outcome = "SUCCESSFUL",
                                .phone_masked = "+1201*****23",
                                .country = "US",
                                .channel = "sms",
                                .provider = "twilio",
                                .transaction_id = "SMr"};
    assert_int_equal(th_store_delivery_insert(st, &d), TH_E_OK);
    struct th_receipt_applied ra;
    bool changed;
    struct th_receipt_row rr = {"twilio", "SMr", "undelivered", "30003", true, false, 2000};
    assert_int_equal(th_store_receipt_apply(st, &rr, &ra, &changed), TH_E_OK);
    assert_true(changed);
    /* the same again, then again as a later arrival (Twilio's time is the arrival's) */
    assert_int_equal(th_store_receipt_apply(st, &rr, &ra, &changed), TH_E_OK);
    assert_false(changed);
    rr.event_ms = 5000;
    assert_int_equal(th_store_receipt_apply(st, &rr, &ra, &changed), TH_E_OK);
    assert_false(changed);
    /* another final status, newer: taken (a correction), then it is the one not taken twice */
    rr = (struct th_receipt_row){"twilio", "SMr", "delivered", "", true, true, 6000};
    assert_int_equal(th_store_receipt_apply(st, &rr, &ra, &changed), TH_E_OK);
    assert_true(changed);
    rr.event_ms = 7000;
    assert_int_equal(th_store_receipt_apply(st, &rr, &ra, &changed), TH_E_OK);
    assert_false(changed);
    th_store_close(st);
}

static void test_prefs(void **state)
{
    use(state);
    struct th_store *st = open_ok(fresh(false));
    struct th_pref_row a = {"Ana@Example.com", "pt-br", "voice", 5};
    struct th_pref_row b = {"00u1ABC", "de", "", 6};
    assert_int_equal(th_store_pref_put(st, &a), TH_E_OK);
    assert_int_equal(th_store_pref_put(st, &b), TH_E_OK);
    /* the same user in other case replaces the row (logins are case-insensitive in Okta) */
    struct th_pref_row a2 = {"ana@example.com", "fr", "sms", 7};
    assert_int_equal(th_store_pref_put(st, &a2), TH_E_OK);
    struct th_pref_row bad = {"x", "fr", "fax", 7};
    assert_int_equal(th_store_pref_put(st, &bad), TH_E_STORE); /* CHECK constraint */
    struct rows r = {0};
    assert_int_equal(th_store_prefs_each(st, collect_pref, &r), TH_E_OK);
    assert_int_equal(r.n, 2);
    assert_string_equal(r.first[0], "00u1ABC de  6");
    assert_string_equal(r.first[1], "ana@example.com fr sms 7");
    assert_int_equal(th_store_pref_delete(st, "ANA@EXAMPLE.COM"), TH_E_OK);
    assert_int_equal(th_store_pref_delete(st, "ana@example.com"), TH_E_NOTFOUND);
    th_store_close(st);
}

static void test_newer_schema_refused(void **state)
{
    use(state);
    char p2[600], u2[1200];
    snprintf(p2, sizeof p2, "%s/newer.db", dir);
    snprintf(u2, sizeof u2, "sqlite://%s", p2);
    if (be == PG)
        snprintf(u2, sizeof u2, "%s", fresh(true));
    th_store_close(open_ok(u2));
    raw_exec(be == PG ? u2 : p2, "INSERT INTO schema_version VALUES (99, 0)");
    struct th_store *st = NULL;
    char err[512];
    assert_int_equal(th_store_open(u2, &st, err, sizeof err), TH_E_STORE);
    assert_non_null(strstr(err, "newer than this telehook"));
}

static void test_bad_urls(void **state)
{
    (void)state;
    struct th_store *st = NULL;
    char err[512];
    assert_int_equal(th_store_open("mysql://user:hunter2@db/telehook", &st, err, sizeof err),
                     TH_E_STORE);
    assert_non_null(strstr(err, "unsupported store URL scheme 'mysql'"));
    assert_null(strstr(err, "hunter2"));
    assert_int_equal(th_store_open("sqlite:", &st, err, sizeof err), TH_E_STORE);
    assert_int_equal(th_store_open("sqlite:/proc/nope/x.db", &st, err, sizeof err), TH_E_STORE);
    /* a bare path and :memory: work */
    st = open_ok(":memory:");
    th_store_close(st);
    th_store_close(NULL);
}

static void test_template_delete(void **state)
{
    use(state);
    struct th_store *st = open_ok(fresh(false));
    struct th_template_row es = {"es", "voice", "<speak>{{otp_spaced}}</speak>", "Lupe", 1};
    struct th_template_row en = {"en", "sms", "{{otp}}", "", 1};
    assert_int_equal(th_store_template_put(st, &es), TH_E_OK);
    assert_int_equal(th_store_template_put(st, &en), TH_E_OK);
    assert_int_equal(th_store_template_delete(st, "es", "voice"), TH_E_OK);
    assert_int_equal(th_store_template_delete(st, "es", "voice"), TH_E_NOTFOUND);
    struct th_template_row bad = {"fr", "fax", "x", "", 0};
    assert_int_equal(th_store_template_put(st, &bad), TH_E_STORE); /* CHECK constraint */
    struct rows r = {0};
    assert_int_equal(th_store_templates_each(st, count_tpl, &r), TH_E_OK);
    assert_int_equal(r.n, 1);
    th_store_close(st);
}

static int collect_outbox(void *ud, const struct th_outbox_row *row)
{
    struct rows *r = ud;
    if (r->n < 8)
        snprintf(r->first[r->n], sizeof r->first[0], "%s %s %s %s", row->id, row->to, row->channel,
                 row->body);
    r->n++;
    return 0;
}

static void test_outbox(void **state)
{
    use(state);
    struct th_store *st = open_ok(fresh(false));
    for (int i = 0; i < 5; i++) {
        char id[16], body[32];
        snprintf(id, sizeof id, "ob-%d", i);
        snprintf(body, sizeof body, "code %d", i);
        struct th_outbox_row row = {id, 1000 + i, "r-1", "+12015550123", "sms", "en", body, ""};
        assert_int_equal(th_store_outbox_insert(st, &row), TH_E_OK);
    }
    struct th_outbox_row dup = {"ob-1", 1, "r", "+1", "sms", "en", "x", ""};
    assert_int_equal(th_store_outbox_insert(st, &dup), TH_E_STORE);
    struct rows r = {0};
    assert_int_equal(th_store_outbox_each(st, 3, collect_outbox, &r), TH_E_OK);
    assert_int_equal(r.n, 3);
    assert_string_equal(r.first[0], "ob-4 +12015550123 sms code 4"); /* newest first */
    assert_string_equal(r.first[2], "ob-2 +12015550123 sms code 2");
    th_store_close(st);
}

struct receipt_seen {
    char text[96];
};

static int see_receipt(void *ud, const struct th_delivery_row *row)
{
    struct receipt_seen *r = ud;
    snprintf(r->text, sizeof r->text, "%s %s %lld", row->receipt_status, row->receipt_error,
             (long long)row->receipt_ms);
    return 0;
}

static int collect_delivery(void *ud, const struct th_delivery_row *row)
{
    struct rows *r = ud;
    if (r->n < 8)
        snprintf(r->first[r->n], sizeof r->first[0], "%s %s %s %s %s %lld", row->request_id,
                 row->outcome, row->phone_masked, row->country, row->error,
                 (long long)row->latency_us);
    r->n++;
    return 0;
}

static int collect_asked(void *ud, const struct th_delivery_row *row)
{
    struct rows *r = ud;
    snprintf(r->first[r->n++ % 8], sizeof r->first[0], "%s %s", row->locale, row->preference);
    return 0;
}

static void test_deliveries(void **state)
{
    use(state);
    struct th_store *st = open_ok(fresh(false));
    assert_int_equal(th_store_begin(st), TH_E_OK);
    struct th_delivery_row a = {"r-1",        "ev",   10,    "mfa",      "+1201*****23",
                                "US",         "sms",  "en",  "template", "outbox",
                                "SUCCESSFUL", "ob-1", "",    1500,       1,
                                "00u1",       "lh1",  "ph1", "es-mx",    "pt/voice",
                                "",           "",     0,     "",         "",
                                "",           0,      false};
    struct th_delivery_row b = {
        "r-2", "ev2", 20, "mfa", "", "", "", "", "", "", "REJECTED", "", "invalid phone number",
        90,    0,     "", "",    "", "", "", "", "", 0,  "",         "", "",
        0,     false};
    assert_int_equal(th_store_delivery_insert(st, &a), TH_E_OK);
    assert_int_equal(th_store_delivery_insert(st, &b), TH_E_OK);
    assert_int_equal(th_store_commit(st), TH_E_OK);
    struct rows r = {0};
    assert_int_equal(th_store_deliveries_each(st, 0, collect_delivery, &r), TH_E_OK);
    assert_int_equal(r.n, 2);
    assert_string_equal(r.first[0], "r-2 REJECTED   invalid phone number 90");
    assert_string_equal(r.first[1], "r-1 SUCCESSFUL +1201*****23 US  1500");
    /* what the request asked for and the preference applied are kept */
    struct th_delivery_filter f = {.request_id = "r-1"};
    memset(&r, 0, sizeof r);
    assert_int_equal(th_store_deliveries_query(st, &f, collect_asked, &r), TH_E_OK);
    assert_int_equal(r.n, 1);
    assert_string_equal(r.first[0], "es-mx pt/voice");
    /* a rolled-back transaction leaves nothing */
    assert_int_equal(th_store_begin(st), TH_E_OK);
    struct th_delivery_row c = a;
    c.request_id = "r-3";
    assert_int_equal(th_store_delivery_insert(st, &c), TH_E_OK);
    assert_int_equal(th_store_rollback(st), TH_E_OK);
    memset(&r, 0, sizeof r);
    assert_int_equal(th_store_deliveries_each(st, 10, collect_delivery, &r), TH_E_OK);
    assert_int_equal(r.n, 2);
    th_store_close(st);
}

/*
 * Whether a POSIX lock is held on SQLite's lock bytes of p (at 1 GiB: PENDING, RESERVED and the
 * 510 SHARED bytes), read from /proc/locks: a process cannot ask F_GETLK about its own locks,
 * and opening the file here to ask would drop them. (A forked child could ask, but under
 * valgrind the child's own exit report changes its status.)
 */
static bool locked_for_others(const char *p)
{
    struct stat sb;
    assert_int_equal(stat(p, &sb), 0);
    FILE *f = fopen("/proc/locks", "r");
    assert_non_null(f);
    char line[256];
    bool held = false;
    while (!held && fgets(line, sizeof line, f)) {
        unsigned maj, min;
        unsigned long long ino, start;
        char kind[16];
        /* "1: POSIX  ADVISORY  READ 1234 08:01:5678 1073741826 1073742335" */
        if (sscanf(line, "%*s %15s %*s %*s %*d %x:%x:%llu %llu", kind, &maj, &min, &ino, &start) ==
                5 &&
            strcmp(kind, "POSIX") == 0 && ino == (unsigned long long)sb.st_ino &&
            maj == major(sb.st_dev) && min == minor(sb.st_dev) && start >= 0x40000000ULL)
            held = true;
    }
    fclose(f);
    return held;
}

/*
 * A WAL connection holds a SHARED lock on the database file as long as it is open: that is how
 * the last one to close knows it may check-point and delete the WAL. Opening the same store
 * again in the same process (the server's second connection, a reload, `dlq replay`) must not
 * drop it: closing any descriptor of the file would, for every connection of the process.
 */
static void test_second_connection_keeps_the_first_ones_lock(void **state)
{
    (void)state;
    char p[600];
    snprintf(p, sizeof p, "%s/shared.db", dir);
    struct th_store *first = open_ok(p);
    assert_true(locked_for_others(p));
    struct th_store *second = open_ok(p);
    assert_true(locked_for_others(p));
    th_store_close(second);
    assert_true(locked_for_others(p));
    th_store_close(first);
    assert_false(locked_for_others(p));
    struct stat sb; /* created 0600 all the same */
    assert_int_equal(stat(p, &sb), 0);
    assert_int_equal(sb.st_mode & 0777, 0600);
}

static void find(struct th_store *st, const struct th_delivery_filter *f, const char *want)
{
    struct rows r = {0};
    assert_int_equal(th_store_deliveries_query(st, f, collect_delivery, &r), TH_E_OK);
    char got[512] = "";
    for (int i = 0; i < r.n && i < 8; i++) {
        char id[16];
        sscanf(r.first[i], "%15s", id);
        strcat(got, i ? " " : "");
        strcat(got, id);
    }
    assert_string_equal(got, want);
}

static int collect_keys(void *ud, const struct th_delivery_row *row)
{
    struct rows *r = ud;
    if (r->n < 8)
        snprintf(r->first[r->n], sizeof r->first[0], "%s user=%s login=%s phone=%s",
                 row->request_id, row->user_id, row->login_hash, row->phone_hash);
    r->n++;
    return 0;
}

/* The helpdesk's filters: event id, user (id or login key), phone key, and their combinations. */
static void test_delivery_search(void **state)
{
    use(state);
    struct th_store *st = open_ok(fresh(false));
    struct {
        const char *req, *event, *user, *login, *phone, *outcome;
        int64_t t;
    } rows[] = {
        {"r-1", "ev-a", "00u1", "L1", "P1", "SUCCESSFUL", 10},
        {"r-2", "ev-b", "00u1", "L1", "P2", "FAILED", 20},
        {"r-3", "ev-c", "00u2", "L2", "P1", "SUCCESSFUL", 30},
        {"r-4", "ev-d", "", "", "", "REJECTED", 40}, /* an old row: no keys */
    };
    for (size_t i = 0; i < sizeof rows / sizeof rows[0]; i++) {
        struct th_delivery_row d = {.request_id = rows[i].req,
                                    .event_id = rows[i].event,
                                    .created_ms = rows[i].t,
                                    .outcome = rows[i].outcome,
                                    .user_id = rows[i].user,
                                    .login_hash = rows[i].login,
                                    .phone_hash = rows[i].phone};
        assert_int_equal(th_store_delivery_insert(st, &d), TH_E_OK);
    }
    find(st, &(struct th_delivery_filter){.event_id = "ev-b"}, "r-2");
    find(st, &(struct th_delivery_filter){.phone_hash = "P1"}, "r-3 r-1");
    find(st, &(struct th_delivery_filter){.user_id = "00u1"}, "r-2 r-1");
    find(st, &(struct th_delivery_filter){.login_hash = "L2"}, "r-3");
    /* a user given as text: its id or its login's key */
    find(st, &(struct th_delivery_filter){.user_id = "L2", .login_hash = "L2"}, "r-3");
    find(st, &(struct th_delivery_filter){.user_id = "00u2", .login_hash = "nope"}, "r-3");
    find(st,
         &(struct th_delivery_filter){.phone_hash = "P1", .outcome = "SUCCESSFUL", .since_ms = 15},
         "r-3");
    find(st, &(struct th_delivery_filter){.phone_hash = "P3"}, "");
    find(st, &(struct th_delivery_filter){.user_id = ""}, "r-4 r-3 r-2 r-1"); /* "" is no filter */
    /* the user id is read back; the keys are for searching and are not */
    struct rows r = {0};
    assert_int_equal(th_store_deliveries_query(st, &(struct th_delivery_filter){.event_id = "ev-a"},
                                               collect_keys, &r),
                     TH_E_OK);
    assert_int_equal(r.n, 1);
    assert_string_equal(r.first[0], "r-1 user=00u1 login= phone=");
    th_store_close(st);
}

/* The DLQ depth: what is held now, following inserts, deletes and the retention purge. */
static void test_dlq_count(void **state)
{
    use(state);
    struct th_store *st = open_ok(fresh(false));
    long n = -1;
    assert_int_equal(th_store_dlq_count(st, &n), TH_E_OK);
    assert_int_equal(n, 0);
    for (int i = 0; i < 3; i++) {
        char id[16];
        snprintf(id, sizeof id, "dlq-%d", i);
        struct th_dlq_row row = {.id = id,
                                 .created_ms = 1000 + i,
                                 .request_id = "r",
                                 .outcome = "FAILED",
                                 .payload = "p",
                                 .payload_len = 1};
        assert_int_equal(th_store_dlq_insert(st, &row), TH_E_OK);
    }
    assert_int_equal(th_store_dlq_count(st, &n), TH_E_OK);
    assert_int_equal(n, 3);
    assert_int_equal(th_store_dlq_delete(st, "dlq-1"), TH_E_OK);
    assert_int_equal(th_store_dlq_count(st, &n), TH_E_OK);
    assert_int_equal(n, 2);
    long removed = 0;
    struct th_purge p = {.dlq_before_ms = 1001}; /* dlq-0 only */
    assert_int_equal(th_store_purge(st, &p, &removed), TH_E_OK);
    assert_int_equal(removed, 1);
    assert_int_equal(th_store_dlq_count(st, &n), TH_E_OK);
    assert_int_equal(n, 1);
    th_store_close(st);
}

static int collect_route(void *ud, const struct th_route_row *row)
{
    struct rows *r = ud;
    if (r->n < 8)
        snprintf(r->first[r->n], sizeof r->first[0], "%s/%s %s %lld", row->channel, row->country,
                 row->attempts, (long long)row->updated_ms);
    r->n++;
    return 0;
}

/* Routes: insert or replace by (channel, country), bytewise order, NOTFOUND, CHECK. */
static void test_routes(void **state)
{
    use(state);
    struct th_store *st = open_ok(fresh(false));
    struct th_route_row a = {"sms", "US", "aws, twilio", 1};
    struct th_route_row b = {"*", "*", "outbox", 2};
    struct th_route_row c = {"sms", "Us", "webhook", 3}; /* another country: bytes differ */
    assert_int_equal(th_store_route_put(st, &a), TH_E_OK);
    assert_int_equal(th_store_route_put(st, &b), TH_E_OK);
    assert_int_equal(th_store_route_put(st, &c), TH_E_OK);
    struct th_route_row a2 = {"sms", "US", "twilio", 4};
    assert_int_equal(th_store_route_put(st, &a2), TH_E_OK);
    struct th_route_row bad = {"fax", "US", "x", 5};
    assert_int_equal(th_store_route_put(st, &bad), TH_E_STORE);
    struct rows r = {0};
    assert_int_equal(th_store_routes_each(st, collect_route, &r), TH_E_OK);
    assert_int_equal(r.n, 3);
    assert_string_equal(r.first[0], "*/* outbox 2");
    assert_string_equal(r.first[1], "sms/US twilio 4"); /* 'U' 's' < 'U' 'S'? no: 'S' < 's' */
    assert_string_equal(r.first[2], "sms/Us webhook 3");
    assert_int_equal(th_store_route_delete(st, "sms", "US"), TH_E_OK);
    assert_int_equal(th_store_route_delete(st, "sms", "US"), TH_E_NOTFOUND);
    th_store_close(st);
}

static int collect_dlq(void *ud, const struct th_dlq_row *row)
{
    struct rows *r = ud;
    if (r->n < 8) {
        int n = snprintf(r->first[r->n], sizeof r->first[0], "%s %s %d %lld %s %zu:", row->id,
                         row->outcome, row->attempts, (long long)row->otp_expires_ms, row->key_id,
                         row->payload_len);
        const unsigned char *p = row->payload;
        for (size_t i = 0; i < row->payload_len && n < 200; i++)
            n += snprintf(r->first[r->n] + n, sizeof r->first[0] - (size_t)n, "%02x", p[i]);
        if (!row->payload_len && row->payload)
            strcat(r->first[r->n], " (payload not NULL)");
    }
    r->n++;
    return 0;
}

/* The DLQ: a binary payload (zero bytes included) back as it went in, none as none; purge. */
static void test_dlq_and_purge(void **state)
{
    use(state);
    struct th_store *st = open_ok(fresh(false));
    static const unsigned char sealed[] = {0x00, 0xff, 0x5c, 0x27, 0x00, 0x01};
    struct th_dlq_row a = {.id = "dlq-1",
                           .created_ms = 100,
                           .request_id = "r-1",
                           .event_id = "ev",
                           .phone_masked = "+1201*****23",
                           .country = "US",
                           .channel = "sms",
                           .language = "en",
                           .outcome = "FAILED",
                           .errors = "aws: throttled",
                           .attempts = 2,
                           .otp_expires_ms = 400,
                           .key_id = "k1",
                           .payload = sealed,
                           .payload_len = sizeof sealed};
    struct th_dlq_row b = a;
    b.id = "dlq-2";
    b.created_ms = 200;
    b.outcome = "TIMEOUT";
    b.key_id = "";
    b.payload = NULL;
    b.payload_len = 0;
    assert_int_equal(th_store_dlq_insert(st, &a), TH_E_OK);
    assert_int_equal(th_store_dlq_insert(st, &b), TH_E_OK);
    assert_int_equal(th_store_dlq_insert(st, &a), TH_E_STORE); /* the id is unique */
    struct rows r = {0};
    assert_int_equal(th_store_dlq_each(st, 0, collect_dlq, &r), TH_E_OK);
    assert_int_equal(r.n, 2);
    assert_string_equal(r.first[0], "dlq-2 TIMEOUT 2 400  0:");
    assert_string_equal(r.first[1], "dlq-1 FAILED 2 400 k1 6:00ff5c270001");
    memset(&r, 0, sizeof r);
    assert_int_equal(th_store_dlq_get(st, "dlq-1", collect_dlq, &r), TH_E_OK);
    assert_int_equal(r.n, 1);
    assert_string_equal(r.first[0], "dlq-1 FAILED 2 400 k1 6:00ff5c270001");
    assert_int_equal(th_store_dlq_get(st, "dlq-9", collect_dlq, &r), TH_E_NOTFOUND);
    assert_int_equal(r.n, 1);
    assert_int_equal(th_store_dlq_delete(st, "dlq-2"), TH_E_OK);
    assert_int_equal(th_store_dlq_delete(st, "dlq-2"), TH_E_NOTFOUND);
    /* purge by age: each table by its own cut-off, 0 keeps */
    struct th_outbox_row o = {"ob-1", 50, "r", "+1", "sms", "en", "x", ""};
    assert_int_equal(th_store_outbox_insert(st, &o), TH_E_OK);
    struct th_delivery_row d = {.request_id = "r-1", .created_ms = 50, .outcome = "ERROR"};
    assert_int_equal(th_store_delivery_insert(st, &d), TH_E_OK);
    d.created_ms = 500;
    assert_int_equal(th_store_delivery_insert(st, &d), TH_E_OK);
    long removed = -1;
    assert_int_equal(th_store_purge(st, &(struct th_purge){.deliveries_before_ms = 100}, &removed),
                     TH_E_OK);
    assert_int_equal(removed, 1);
    assert_int_equal(th_store_purge(st,
                                    &(struct th_purge){.dlq_before_ms = 101,
                                                       .deliveries_before_ms = 100,
                                                       .outbox_before_ms = 51},
                                    &removed),
                     TH_E_OK);
    assert_int_equal(removed, 2); /* dlq-1 and ob-1 */
    memset(&r, 0, sizeof r);
    assert_int_equal(th_store_deliveries_each(st, 0, collect_delivery, &r), TH_E_OK);
    assert_int_equal(r.n, 1);
    th_store_close(st);
}

/*
 * The writer's batch: a failed insert (a duplicate id) inside a transaction fails alone; the
 * other rows of the batch commit (PostgreSQL would abort the whole transaction without care).
 */
static void test_failed_insert_in_a_batch(void **state)
{
    use(state);
    struct th_store *st = open_ok(fresh(false));
    struct th_outbox_row o = {"ob-1", 1, "r", "+1", "sms", "en", "x", ""};
    assert_int_equal(th_store_begin(st), TH_E_OK);
    assert_int_equal(th_store_outbox_insert(st, &o), TH_E_OK);
    assert_int_equal(th_store_outbox_insert(st, &o), TH_E_STORE);
    struct th_dlq_row q = {.id = "dlq-1", .outcome = "FAILED"};
    assert_int_equal(th_store_dlq_insert(st, &q), TH_E_OK);
    assert_int_equal(th_store_dlq_insert(st, &q), TH_E_STORE);
    struct th_delivery_row d = {.request_id = "r-1", .created_ms = 5, .outcome = "ERROR"};
    assert_int_equal(th_store_delivery_insert(st, &d), TH_E_OK);
    assert_int_equal(th_store_commit(st), TH_E_OK);
    struct th_store_status ss;
    assert_int_equal(th_store_status(st, &ss), TH_E_OK);
    assert_int_equal(ss.rows[3], 1); /* outbox */
    assert_int_equal(ss.rows[4], 1); /* deliveries */
    assert_int_equal(ss.rows[5], 1); /* dlq */
    th_store_close(st);
}

/* ---- PostgreSQL only ---- */

static void expect_describe(const char *in, const char *want)
{
    char out[512];
    assert_true(th_store_pg_describe(in, out, sizeof out));
    assert_string_equal(out, want);
}

/* Both URL forms; the description never holds a password. Needs no database. */
static void test_pg_url_forms(void **state)
{
    (void)state;
    expect_describe("postgresql://telehook:hunter2@db.example:5433/th?sslmode=verify-full",
                    "postgresql://telehook@db.example:5433/th?sslmode=verify-full");
    expect_describe("postgres://u:p%40ss@[::1]/th?password=hunter2&sslmode=require",
                    "postgres://u@[::1]/th?sslmode=require");
    expect_describe("postgresql://db/th?password=hunter2", "postgresql://db/th");
    expect_describe("postgresql:///th", "postgresql:///th");
    expect_describe("postgresql://u@db/th", "postgresql://u@db/th");
    expect_describe("postgresql:host=db dbname=th password=hunter2 sslrootcert='/etc/a b.pem'",
                    "postgresql:dbname=th host=db sslrootcert='/etc/a b.pem'");
    expect_describe("postgresql:password='hun ter2' user=x", "postgresql:user=x");
    char out[512];
    assert_false(th_store_pg_describe("postgresql:host=db hunter2", out, sizeof out));
    /* a URL libpq cannot parse: the message says so without echoing it */
    struct th_store *st = NULL;
    char err[512];
    assert_int_equal(th_store_open("postgresql:host=db password", &st, err, sizeof err),
                     TH_E_STORE);
    assert_non_null(strstr(err, "neither a libpq URI"));
    assert_int_equal(th_store_open("postgresql:dbname=x pass=hunter2", &st, err, sizeof err),
                     TH_E_STORE);
    assert_null(strstr(err, "hunter2"));
}

/* The conninfo form, the postgres:// scheme, PGPASSWORD; a wrong password is a clear error. */
static void test_pg_connect_forms(void **state)
{
    use(state);
    char pw[128], u[1200];
    pg_password(pw, sizeof pw);
    const char *base = getenv("TH_TEST_PG_URL");
    PQconninfoOption *o = PQconninfoParse(base, NULL);
    const char *host = "", *port = "", *db = "", *user = "";
    for (PQconninfoOption *i = o; i->keyword; i++) {
        const char *v = i->val ? i->val : "";
        if (strcmp(i->keyword, "host") == 0)
            host = v;
        else if (strcmp(i->keyword, "port") == 0)
            port = v;
        else if (strcmp(i->keyword, "dbname") == 0)
            db = v;
        else if (strcmp(i->keyword, "user") == 0)
            user = v;
    }
    snprintf(u, sizeof u, "postgresql:host=%s port=%s dbname=%s user=%s password=%s", host, port,
             db, user, pw);
    struct th_store *st = open_ok(u);
    assert_null(strstr(th_store_describe(st), pw));
    assert_non_null(strstr(th_store_describe(st), "host=127.0.0.1"));
    th_store_close(st);
    /* the password from the environment, as every libpq tool takes it */
    snprintf(u, sizeof u, "postgres://%s@%s:%s/%s", user, host, port, db);
    setenv("PGPASSWORD", pw, 1);
    st = open_ok(u);
    th_store_close(st);
    /* a wrong one: the reason, never the password */
    setenv("PGPASSWORD", "wrong-hunter2", 1);
    char err[512];
    st = NULL;
    assert_int_equal(th_store_open(u, &st, err, sizeof err), TH_E_STORE);
    unsetenv("PGPASSWORD");
    assert_null(st);
    assert_non_null(strstr(err, "password authentication failed"));
    assert_non_null(strstr(err, "cannot connect to postgres://"));
    assert_null(strstr(err, "hunter2"));
    snprintf(u, sizeof u, "postgresql://%s:wrong-hunter2@%s:%s/%s", user, host, port, db);
    assert_int_equal(th_store_open(u, &st, err, sizeof err), TH_E_STORE);
    assert_non_null(strstr(err, "password authentication failed"));
    assert_null(strstr(err, "hunter2"));
    PQconninfoFree(o);
}

struct opener {
    const char *url;
    th_err e;
    char err[512];
};

static void *open_concurrently(void *arg)
{
    struct opener *op = arg;
    struct th_store *st = NULL;
    op->e = th_store_open(op->url, &st, op->err, sizeof op->err);
    th_store_close(st);
    return NULL;
}

/* Nodes starting together on a new database: every open succeeds and each migration ran once. */
static void test_pg_concurrent_migrations(void **state)
{
    use(state);
    for (int round = 0; round < 3; round++) {
        char u[1200];
        snprintf(u, sizeof u, "%s", fresh(true));
        struct opener ops[4];
        pthread_t t[4];
        for (int i = 0; i < 4; i++) {
            ops[i] = (struct opener){.url = u};
            assert_int_equal(pthread_create(&t[i], NULL, open_concurrently, &ops[i]), 0);
        }
        for (int i = 0; i < 4; i++) {
            assert_int_equal(pthread_join(t[i], NULL), 0);
            if (ops[i].e != TH_E_OK)
                fail_msg("round %d, opener %d: %s", round, i, ops[i].err);
        }
        struct th_store *st = open_ok(u);
        char got[64], err[512];
        assert_int_equal(th_store_pg_query(st,
                                           "SELECT count(*) || '/' || count(DISTINCT version) || "
                                           "'/' || max(version) FROM schema_version",
                                           got, sizeof got, err, sizeof err),
                         TH_E_OK);
        assert_string_equal(got, "11/11/11");
        th_store_close(st);
    }
}

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

/* A stalled statement ends with a clear error at the session's statement_timeout. */
static void test_pg_statement_timeout(void **state)
{
    use(state);
    struct th_store *st = open_ok(fresh(false));
    char got[64], err[512];
    assert_int_equal(
        th_store_pg_query(st, "SHOW statement_timeout", got, sizeof got, err, sizeof err), TH_E_OK);
    assert_string_equal(got, "5s");
    double t0 = now_s();
    assert_int_equal(th_store_pg_query(st, "SELECT pg_sleep(30)", got, sizeof got, err, sizeof err),
                     TH_E_STORE);
    double took = now_s() - t0;
    assert_true(took >= 4.5 && took < 8);
    assert_non_null(strstr(err, "statement timeout"));
    /* the connection still serves */
    struct rows r = {0};
    assert_int_equal(th_store_templates_each(st, count_tpl, &r), TH_E_OK);
    th_store_close(st);
    /* a timeout the URL sets wins over the default */
    char u[1200];
    pg_url_in("public", "%20-cstatement_timeout%3D200", u, sizeof u);
    st = open_ok(u);
    assert_int_equal(
        th_store_pg_query(st, "SHOW statement_timeout", got, sizeof got, err, sizeof err), TH_E_OK);
    assert_string_equal(got, "200ms");
    th_store_close(st);
}

/* `store status` before `store migrate`: nothing applied, the tables absent. */
static void test_status_unmigrated(void **state)
{
    use(state);
    char u[1200];
    if (be == SQLITE) {
        snprintf(u, sizeof u, "sqlite:%s/none.db", dir);
        struct th_store *st = NULL;
        char err[512];
        assert_int_equal(th_store_open_unmigrated(u, &st, err, sizeof err), TH_E_STORE);
        assert_int_equal(access(u + 7, F_OK), -1); /* not created */
        raw_exec(u, "CREATE TABLE x (a)");
    } else {
        snprintf(u, sizeof u, "%s", fresh(true));
    }
    struct th_store *st = NULL;
    char err[512];
    assert_int_equal(th_store_open_unmigrated(u, &st, err, sizeof err), TH_E_OK);
    struct th_store_status ss;
    assert_int_equal(th_store_status(st, &ss), TH_E_OK);
    assert_int_equal(ss.version, 0);
    assert_int_equal(ss.latest, 11);
    for (int i = 0; i < TH_STORE_TABLES; i++)
        assert_int_equal(ss.rows[i], -1);
    th_store_close(st);
    /* looking created nothing, not even the bookkeeping table */
    assert_int_equal(th_store_open_unmigrated(u, &st, err, sizeof err), TH_E_OK);
    assert_int_equal(th_store_status(st, &ss), TH_E_OK);
    assert_int_equal(ss.version, 0);
    if (be == PG) {
        char got[16];
        assert_int_equal(th_store_pg_query(st, "SELECT to_regclass('schema_version') IS NULL", got,
                                           sizeof got, err, sizeof err),
                         TH_E_OK);
        assert_string_equal(got, "t");
    }
    th_store_close(st);
    th_store_close(open_ok(u));
    assert_int_equal(th_store_open_unmigrated(u, &st, err, sizeof err), TH_E_OK);
    assert_int_equal(th_store_status(st, &ss), TH_E_OK);
    assert_int_equal(ss.version, 11);
    assert_int_equal(ss.rows[0], 0);
    th_store_close(st);
}

/* Waits up to ms for a change; the bits seen (0: none) and the time it took in *took_ms. */
static unsigned wait_bits(struct th_store_listener *l, int ms, double *took_ms)
{
    double t0 = now_s();
    unsigned all = 0;
    while (now_s() - t0 < ms / 1000.0 && !all) {
        unsigned got = 0;
        char err[512];
        assert_int_equal(th_store_wait_change(l, 100, &got, err, sizeof err), TH_E_OK);
        all |= got;
    }
    if (took_ms)
        *took_ms = (now_s() - t0) * 1000;
    return all;
}

/*
 * Change propagation: a put or delete of a catalog row on one connection wakes a listener on
 * another within a second, naming the table; nothing else (a delivery, a failed delete) does;
 * a lost listener connection reconnects and reports everything changed.
 */
static void test_pg_change_notifications(void **state)
{
    use(state);
    struct th_store *st = open_ok(fresh(false));
    struct th_store_listener *l = NULL;
    char err[512];
    assert_int_equal(th_store_listen(getenv("TH_TEST_PG_URL"), &l, err, sizeof err), TH_E_OK);
    /* quiet first: nothing pending (other cases' notifications were sent before LISTEN) */
    assert_int_equal(wait_bits(l, 200, NULL), 0);

    double took;
    struct th_template_row t = {"fr", "sms", "Code {{otp}}", "", 1};
    assert_int_equal(th_store_template_put(st, &t), TH_E_OK);
    assert_int_equal(wait_bits(l, 1000, &took), TH_STORE_CHANGED_TEMPLATES);
    assert_true(took < 1000);
    struct th_route_row r = {"sms", "FR", "outbox", 1};
    assert_int_equal(th_store_route_put(st, &r), TH_E_OK);
    assert_int_equal(wait_bits(l, 1000, NULL), TH_STORE_CHANGED_ROUTES);
    struct th_pref_row p = {"Ana@Example.com", "pt", "", 1};
    assert_int_equal(th_store_pref_put(st, &p), TH_E_OK);
    assert_int_equal(wait_bits(l, 1000, NULL), TH_STORE_CHANGED_PREFS);
    assert_int_equal(th_store_pref_delete(st, "ana@example.com"), TH_E_OK);
    assert_int_equal(wait_bits(l, 1000, NULL), TH_STORE_CHANGED_PREFS);
    assert_int_equal(th_store_template_delete(st, "fr", "sms"), TH_E_OK);
    assert_int_equal(wait_bits(l, 1000, NULL), TH_STORE_CHANGED_TEMPLATES);
    assert_int_equal(th_store_route_delete(st, "sms", "FR"), TH_E_OK);
    assert_int_equal(wait_bits(l, 1000, NULL), TH_STORE_CHANGED_ROUTES);

    /* not a catalog change: a delivery, a delete that matched nothing, a rolled-back put */
    struct th_delivery_row d = {.request_id = "r1", .created_ms = 1, .outcome = "SUCCESSFUL"};
    assert_int_equal(th_store_delivery_insert(st, &d), TH_E_OK);
    assert_int_equal(th_store_template_delete(st, "fr", "sms"), TH_E_NOTFOUND);
    assert_int_equal(th_store_begin(st), TH_E_OK);
    assert_int_equal(th_store_template_put(st, &t), TH_E_OK);
    assert_int_equal(th_store_rollback(st), TH_E_OK);
    assert_int_equal(wait_bits(l, 300, NULL), 0);
    /* in the caller's transaction: heard once it commits */
    assert_int_equal(th_store_begin(st), TH_E_OK);
    assert_int_equal(th_store_template_put(st, &t), TH_E_OK);
    assert_int_equal(wait_bits(l, 200, NULL), 0);
    assert_int_equal(th_store_commit(st), TH_E_OK);
    assert_int_equal(wait_bits(l, 1000, NULL), TH_STORE_CHANGED_TEMPLATES);

    /* an interrupt ends a wait at once, with nothing */
    th_store_listener_interrupt(l);
    unsigned got = 99;
    double t0 = now_s();
    assert_int_equal(th_store_wait_change(l, 5000, &got, err, sizeof err), TH_E_OK);
    assert_int_equal(got, 0);
    assert_true(now_s() - t0 < 1);

    /* the listener's backend killed (as a failover does): lost, then back with everything */
    pg_exec(getenv("TH_TEST_PG_URL"),
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
            "WHERE application_name = 'telehook-listen' AND pid <> pg_backend_pid()");
    th_err e = TH_E_OK;
    t0 = now_s();
    while (e == TH_E_OK && now_s() - t0 < 2)
        e = th_store_wait_change(l, 100, &got, err, sizeof err);
    assert_int_equal(e, TH_E_STORE);
    assert_non_null(strstr(err, "lost"));
    assert_int_equal(th_store_wait_change(l, 100, &got, err, sizeof err), TH_E_OK);
    assert_int_equal(got, TH_STORE_CHANGED_ALL | TH_STORE_RECONNECTED);
    /* and it listens again */
    t.body = "Code: {{otp}}";
    assert_int_equal(th_store_template_put(st, &t), TH_E_OK);
    assert_int_equal(wait_bits(l, 1000, NULL), TH_STORE_CHANGED_TEMPLATES);

    th_store_listener_close(l);
    th_store_close(st);
}

static int count_deliv(void *ud, const struct th_delivery_row *row)
{
    (void)row;
    ((struct rows *)ud)->n++;
    return 0;
}

/* Ends the backend of st (as a failover or a restart does) and waits until it is gone. */
static void drop_backend(struct th_store *st, struct th_store *other)
{
    char pid[32], got[32], q[160], err[512];
    assert_int_equal(
        th_store_pg_query(st, "SELECT pg_backend_pid()", pid, sizeof pid, err, sizeof err),
        TH_E_OK);
    snprintf(q, sizeof q, "SELECT pg_terminate_backend(%s)", pid);
    assert_int_equal(th_store_pg_query(other, q, got, sizeof got, err, sizeof err), TH_E_OK);
    snprintf(q, sizeof q, "SELECT count(*) FROM pg_stat_activity WHERE pid = %s", pid);
    double t0 = now_s();
    do {
        assert_int_equal(th_store_pg_query(other, q, got, sizeof got, err, sizeof err), TH_E_OK);
        assert_true(now_s() - t0 < 5);
    } while (strcmp(got, "0") != 0);
}

/*
 * A store connection the server dropped is made again before the next operation (the one that
 * found it dead fails), with its session as before: statements prepared again, including a
 * filtered listing's, and the statement timeout; never inside a transaction.
 */
static void test_pg_store_reconnects(void **state)
{
    use(state);
    const char *u = fresh(false);
    struct th_store *st = open_ok(u), *other = open_ok(u);
    struct th_delivery_filter f = {.channel = "sms", .limit = 5};
    struct rows r = {0};
    assert_int_equal(th_store_deliveries_query(st, &f, count_deliv, &r), TH_E_OK);

    drop_backend(st, other);
    struct th_template_row t = {"fr", "sms", "Code {{otp}}", "", 1};
    assert_int_equal(th_store_template_put(st, &t), TH_E_STORE); /* found dead */
    assert_int_equal(th_store_pg_reconnects(st), 0);
    assert_int_equal(th_store_template_put(st, &t), TH_E_OK); /* made again */
    assert_int_equal(th_store_pg_reconnects(st), 1);
    assert_int_equal(th_store_deliveries_query(st, &f, count_deliv, &r), TH_E_OK);
    char got[64], err[512];
    assert_int_equal(
        th_store_pg_query(st, "SHOW statement_timeout", got, sizeof got, err, sizeof err), TH_E_OK);
    assert_string_equal(got, "5s");
    assert_int_equal(th_store_template_delete(st, "fr", "sms"), TH_E_OK);

    /* in a transaction: it fails to its end, and the next one runs */
    assert_int_equal(th_store_begin(st), TH_E_OK);
    drop_backend(st, other);
    assert_int_equal(th_store_template_put(st, &t), TH_E_STORE);
    assert_int_equal(th_store_template_put(st, &t), TH_E_STORE);
    assert_int_equal(th_store_rollback(st), TH_E_STORE);
    sleep(1); /* one try a second */
    assert_int_equal(th_store_begin(st), TH_E_OK);
    assert_int_equal(th_store_template_put(st, &t), TH_E_OK);
    assert_int_equal(th_store_commit(st), TH_E_OK);
    assert_int_equal(th_store_pg_reconnects(st), 2);
    th_store_close(other);
    th_store_close(st);
}

/* SQLite has no notifications: serve keeps SIGHUP. */
static void test_sqlite_has_no_listener(void **state)
{
    (void)state;
    struct th_store_listener *l = NULL;
    char err[512];
    assert_int_equal(th_store_listen(url, &l, err, sizeof err), TH_E_INVAL);
    assert_null(l);
    assert_non_null(strstr(err, "no change notifications"));
    th_store_listener_close(NULL);
}

/*
 * store copy: every table from the case's backend into a new SQLite file, the history read in
 * pages of 2 (so page boundaries fall inside runs of rows of one millisecond): counts, order,
 * ids, times and the DLQ's binary payload as they were; a non-empty target refused; --append.
 */
static void test_copy(void **state)
{
    use(state);
    struct th_store *src = open_ok(fresh(true));
    struct th_template_row t = {"fr", "sms", "Code {{otp}}", "", 42};
    struct th_pref_row p = {"Ana@Example.com", "pt", "voice", 43};
    struct th_route_row r = {"sms", "US", "webhook", 44};
    assert_int_equal(th_store_template_put(src, &t), TH_E_OK);
    assert_int_equal(th_store_pref_put(src, &p), TH_E_OK);
    assert_int_equal(th_store_route_put(src, &r), TH_E_OK);
    for (int i = 0; i < 5; i++) {
        char id[16];
        snprintf(id, sizeof id, "ob-%d", i);
        struct th_outbox_row row = {id, 1000 + i / 3, "r-1", "+12015550123", "sms", "en", id, ""};
        assert_int_equal(th_store_outbox_insert(src, &row), TH_E_OK);
    }
    for (int i = 0; i < 7; i++) { /* 2000 x3, 2001 x3, 2002: the inserted order must hold */
        char id[16];
        snprintf(id, sizeof id, "req-%d", 6 - i);
        struct th_delivery_row d = {.request_id = id,
                                    .event_id = "",
                                    .created_ms = 2000 + i / 3,
                                    .outcome = "SUCCESSFUL",
                                    .phone_masked = "+1201*****23",
                                    .country = "US",
                                    .channel = "sms",
                                    .latency_us = i,
                                    .login_hash = "lh",
                                    .phone_hash = "ph",
                                    .provider = "twilio",
                                    .transaction_id = id};
        assert_int_equal(th_store_delivery_insert(src, &d), TH_E_OK);
    }
    /* a final receipt on one record, a non-final one on another: both travel as they are */
    struct th_receipt_applied ra;
    bool changed;
    struct th_receipt_row rr = {"twilio", "req-3", "spam", "30007", true, false, 777};
    assert_int_equal(th_store_receipt_apply(src, &rr, &ra, &changed), TH_E_OK);
    assert_true(changed);
    rr = (struct th_receipt_row){"twilio", "req-5", "sent", "", false, false, 555};
    assert_int_equal(th_store_receipt_apply(src, &rr, &ra, &changed), TH_E_OK);
    static const unsigned char sealed[] = {0x00, 0xff, 0x5c, 0x27, 0x00, 0x01};
    for (int i = 0; i < 3; i++) {
        char id[16];
        snprintf(id, sizeof id, "dlq-%d", i);
        struct th_dlq_row d = {.id = id,
                               .created_ms = 3000,
                               .request_id = "r",
                               .event_id = "",
                               .phone_masked = "",
                               .country = "",
                               .channel = "sms",
                               .language = "en",
                               .outcome = "FAILED",
                               .errors = "e",
                               .attempts = 1,
                               .otp_expires_ms = 9,
                               .key_id = i ? "k1" : "",
                               .payload = i ? sealed : NULL,
                               .payload_len = i ? sizeof sealed : 0};
        assert_int_equal(th_store_dlq_insert(src, &d), TH_E_OK);
    }
    char dst_url[600];
    snprintf(dst_url, sizeof dst_url, "sqlite:%s/copy-%d-%d.db", tmpdir, (int)be, fresh_n);
    struct th_store *dst = open_ok(dst_url);
    char err[1024];
    struct th_store_copy o = {.dry_run = true, .batch = 2};
    assert_int_equal(th_store_copy(src, dst, &o, err, sizeof err), TH_E_OK);
    long want[TH_STORE_TABLES] = {1, 1, 1, 5, 7, 3};
    assert_memory_equal(o.rows, want, sizeof want);
    struct th_store_status s;
    assert_int_equal(th_store_status(dst, &s), TH_E_OK);
    assert_int_equal(s.rows[4], 0); /* a dry run writes nothing */

    o = (struct th_store_copy){.batch = 2};
    assert_int_equal(th_store_copy(src, dst, &o, err, sizeof err), TH_E_OK);
    assert_memory_equal(o.rows, want, sizeof want);
    struct th_delivery_filter f = {.limit = 100};
    struct rows a = {0}, b = {0};
    assert_int_equal(th_store_deliveries_query(src, &f, collect_delivery, &a), TH_E_OK);
    assert_int_equal(th_store_deliveries_query(dst, &f, collect_delivery, &b), TH_E_OK);
    assert_int_equal(b.n, 7);
    assert_memory_equal(a.first, b.first, sizeof a.first); /* same rows, same order */
    assert_string_equal(b.first[0], "req-0 SUCCESSFUL +1201*****23 US  6");
    struct th_delivery_filter one = {.request_id = "req-3"};
    struct receipt_seen rs = {0};
    assert_int_equal(th_store_deliveries_query(dst, &one, see_receipt, &rs), TH_E_OK);
    assert_string_equal(rs.text, "spam 30007 777");
    /* copied final: a later non-final receipt does not replace it on the target either */
    rr = (struct th_receipt_row){"twilio", "req-3", "sent", "", false, false, 999};
    assert_int_equal(th_store_receipt_apply(dst, &rr, &ra, &changed), TH_E_OK);
    assert_false(changed);
    one.request_id = "req-5";
    assert_int_equal(th_store_deliveries_query(dst, &one, see_receipt, &rs), TH_E_OK);
    assert_string_equal(rs.text, "sent  555");
    rr = (struct th_receipt_row){"twilio", "req-5", "delivered", "", true, true, 556};
    assert_int_equal(th_store_receipt_apply(dst, &rr, &ra, &changed), TH_E_OK);
    assert_true(changed);
    assert_string_equal(ra.request_id, "req-5");
    memset(&a, 0, sizeof a), memset(&b, 0, sizeof b);
    assert_int_equal(th_store_outbox_each(src, 100, collect_outbox, &a), TH_E_OK);
    assert_int_equal(th_store_outbox_each(dst, 100, collect_outbox, &b), TH_E_OK);
    assert_int_equal(b.n, 5);
    assert_memory_equal(a.first, b.first, sizeof a.first);
    memset(&a, 0, sizeof a), memset(&b, 0, sizeof b);
    assert_int_equal(th_store_dlq_each(src, 100, collect_dlq, &a), TH_E_OK);
    assert_int_equal(th_store_dlq_each(dst, 100, collect_dlq, &b), TH_E_OK);
    assert_int_equal(b.n, 3);
    assert_memory_equal(a.first, b.first, sizeof a.first);
    assert_string_equal(b.first[0], "dlq-2 FAILED 1 9 k1 6:00ff5c270001");
    assert_string_equal(b.first[2], "dlq-0 FAILED 1 9  0:");
    memset(&b, 0, sizeof b);
    assert_int_equal(th_store_prefs_each(dst, collect_pref, &b), TH_E_OK);
    assert_int_equal(b.n, 1);
    /* pages of 5: the outbox's 5 rows fill one page exactly (then an empty one ends it) */
    char dst5_url[620];
    snprintf(dst5_url, sizeof dst5_url, "%s.5", dst_url);
    struct th_store *dst5 = open_ok(dst5_url);
    o = (struct th_store_copy){.batch = 5};
    assert_int_equal(th_store_copy(src, dst5, &o, err, sizeof err), TH_E_OK);
    assert_memory_equal(o.rows, want, sizeof want);
    th_store_close(dst5);

    /* again: refused, nothing written; with append the catalog is replaced and a DLQ id that
     * is there already fails the whole copy, the target unchanged */
    o = (struct th_store_copy){.batch = 2};
    assert_int_equal(th_store_copy(src, dst, &o, err, sizeof err), TH_E_BUSY);
    assert_non_null(strstr(err, "is not empty (templates 1, prefs 1, routes 1, outbox 5"));
    assert_int_equal(o.target_rows[4], 7);
    assert_int_equal(th_store_delivery_insert(dst, &(struct th_delivery_row){.request_id = "extra",
                                                                             .event_id = "",
                                                                             .outcome = "FAILED",
                                                                             .channel = "sms"}),
                     TH_E_OK);
    struct th_template_row mine = {"fr", "sms", "Mine {{otp}}", "", 50};
    assert_int_equal(th_store_template_put(dst, &mine), TH_E_OK);
    o = (struct th_store_copy){.batch = 2, .append = true};
    assert_int_equal(th_store_copy(src, dst, &o, err, sizeof err), TH_E_STORE);
    assert_non_null(strstr(err, "outbox: row 1 could not be written"));
    assert_int_equal(th_store_status(dst, &s), TH_E_OK);
    assert_int_equal(s.rows[4], 8);
    memset(&b, 0, sizeof b); /* the put of the source's fr/sms inside the copy was rolled back */
    assert_int_equal(th_store_templates_each(dst, count_tpl, &b), TH_E_OK);
    assert_int_equal(b.n, 1);
    assert_string_equal(b.first[0], "fr/sms//Mine {{otp}}");
    /* the same store on both sides */
    assert_int_equal(th_store_copy(dst, dst, &o, err, sizeof err), TH_E_INVAL);
    th_store_close(dst);
    th_store_close(src);
}

/* A case named for its backend: "test_prefs/sqlite", "test_prefs/postgresql". */
#define ON(f, b, name)                                                                             \
    {                                                                                              \
#f "/" name, f, NULL, NULL, &b                                                             \
    }
#define BOTH(f)    ON(f, on_sqlite, "sqlite"), ON(f, on_pg, "postgresql")
#define PG_ONLY(f) ON(f, on_pg, "postgresql")

static int stats_row(void *ud, const struct th_stats_row *row)
{
    struct {
        int n;
        long long sends, verified, failed;
    } *sr = ud;
    sr->n++;
    sr->sends += row->sends;
    sr->verified += row->verified;
    sr->failed += row->failed;
    return 0;
}

/* ---- verifications (issue 23) ---- */

static void delivery(struct th_store *st, const char *req, int64_t ms, const char *user,
                     const char *channel, const char *outcome, const char *node)
{
    struct th_delivery_row d = {
        .request_id = req,
        .event_id = "",
        .created_ms = ms,
        .request_type = "mfa",
        .phone_masked = "",
        .country = "US",
        .channel = channel,
        .language = "en",
        .source = "",
        .provider = "outbox",
        .outcome = outcome,
        .transaction_id = req,
        .error = "",
        .attempts = 1,
        .user_id = user,
        .login_hash = "",
        .phone_hash = "",
        .locale = "",
        .preference = "",
        .prefix_hash = "p1",
        .node = node,
        .verified_event = "",
    };
    assert_int_equal(th_store_delivery_insert(st, &d), TH_E_OK);
}

struct got_verified {
    int n;
    char req[32], node[32];
    int64_t sent_ms, seq;
};

static void on_verified(void *ud, const struct th_verified *v)
{
    struct got_verified *g = ud;
    g->n++;
    snprintf(g->req, sizeof g->req, "%s", v->request_id);
    snprintf(g->node, sizeof g->node, "%s", v->node);
    g->sent_ms = v->sent_ms;
    g->seq = v->seq;
}

static enum th_verify_result verify(struct th_store *st, const char *event, const char *user,
                                    const char *channel, int64_t at, const char *me,
                                    struct got_verified *g)
{
    struct th_verify_event ev = {event, user, channel, at - 600000, at + 60000, at, me};
    enum th_verify_result res = TH_VERIFY_MATCHED;
    assert_int_equal(th_store_verify(st, &ev, &res, on_verified, g), TH_E_OK);
    return res;
}

static void test_verify_matching(void **state)
{
    use(state);
    struct th_store *st = open_ok(fresh(false));
    int64_t t = 1800000000000LL;
    delivery(st, "r-old", t - 900000, "00u1", "sms", "SUCCESSFUL", "n1"); /* outside the window */
    delivery(st, "r-1", t - 120000, "00u1", "sms", "SUCCESSFUL", "n1");
    delivery(st, "r-2", t - 60000, "00u1", "sms", "SUCCESSFUL", "n2"); /* the resend */
    delivery(st, "r-v", t - 30000, "00u1", "voice", "SUCCESSFUL", "n1");
    delivery(st, "r-f", t - 20000, "00u1", "sms", "FAILED", "n1");
    delivery(st, "r-late", t + 120000, "00u1", "sms", "SUCCESSFUL", "n1"); /* after event+skew */
    delivery(st, "r-u2", t - 60000, "00u2", "sms", "SUCCESSFUL", "n1");
    struct got_verified g = {0};
    /* the last successful SMS sent before the event gets the credit: the resend */
    assert_int_equal(verify(st, "e-1", "00u1", "sms", t, "n1", &g), TH_VERIFY_MATCHED);
    assert_int_equal(g.n, 1);
    assert_string_equal(g.req, "r-2");
    assert_string_equal(g.node, "n2");
    assert_int_equal(g.sent_ms, t - 60000);
    /* Okta's retry of the same event changes nothing */
    assert_int_equal(verify(st, "e-1", "00u1", "sms", t, "n1", &g), TH_VERIFY_DUPLICATE);
    assert_int_equal(g.n, 1);
    /* a second sign-in credits the one left in the window */
    assert_int_equal(verify(st, "e-2", "00u1", "sms", t, "n1", &g), TH_VERIFY_MATCHED);
    assert_string_equal(g.req, "r-1");
    /* none left: the old one is out of the window, the failed one never counts */
    assert_int_equal(verify(st, "e-3", "00u1", "sms", t, "n1", &g), TH_VERIFY_UNMATCHED);
    assert_int_equal(g.n, 2);
    /* the channel must agree */
    assert_int_equal(verify(st, "e-4", "00u1", "voice", t, "n1", &g), TH_VERIFY_MATCHED);
    assert_string_equal(g.req, "r-v");
    assert_int_equal(verify(st, "e-5", "00u9", "sms", t, "n1", &g), TH_VERIFY_UNMATCHED);
    assert_int_equal(g.n, 3);
    /* n2's delivery was matched by n1: n2's poll sees it once, n1's does not */
    int64_t seq2 = -1, seq1 = -1;
    struct got_verified p2 = {0}, p1 = {0};
    assert_int_equal(th_store_verifications_since(st, "n2", &seq2, 10, on_verified, &p2), TH_E_OK);
    assert_int_equal(p2.n, 0); /* the first poll only learns where history ends */
    seq2 = 0;
    assert_int_equal(th_store_verifications_since(st, "n2", &seq2, 10, on_verified, &p2), TH_E_OK);
    assert_int_equal(p2.n, 1);
    assert_string_equal(p2.req, "r-2");
    assert_int_equal(seq2, p2.seq);
    assert_int_equal(th_store_verifications_since(st, "n2", &seq2, 10, on_verified, &p2), TH_E_OK);
    assert_int_equal(p2.n, 1);
    seq1 = 0;
    assert_int_equal(th_store_verifications_since(st, "n1", &seq1, 10, on_verified, &p1), TH_E_OK);
    assert_int_equal(p1.n, 0); /* n1 matched its own: told at once, never by the poll */
    /* the statistics count what was credited */
    struct stat_rows {
        int n;
        long long sends, verified, failed;
    } sr = {0};
    assert_int_equal(th_store_delivery_stats(st, TH_STATS_CHANNEL, 0, t + 3600000, stats_row, &sr),
                     TH_E_OK);
    assert_int_equal(sr.n, 2);
    assert_int_equal(sr.sends, 7 - 1);
    assert_int_equal(sr.verified, 3);
    assert_int_equal(sr.failed, 1);
    /* retention: verifications go with their deliveries */
    long removed = 0;
    struct th_purge pu = {.deliveries_before_ms = t + 3600000};
    assert_int_equal(th_store_purge(st, &pu, &removed), TH_E_OK);
    assert_int_equal(removed, 7 + 3);
    th_store_close(st);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        BOTH(test_migrate_and_seed),
        BOTH(test_migrations_6_and_7_on_seeds),
        BOTH(test_migration_7_after_6),
        BOTH(test_prefs),
        BOTH(test_conv_blocks),
        BOTH(test_feature_indexes),
        ON(test_sqlite_cache, on_sqlite, "sqlite"),
        BOTH(test_newer_schema_refused),
        cmocka_unit_test(test_bad_urls),
        BOTH(test_template_delete),
        BOTH(test_outbox),
        BOTH(test_dlq_count),
        BOTH(test_deliveries),
        cmocka_unit_test(test_second_connection_keeps_the_first_ones_lock),
        BOTH(test_delivery_search),
        BOTH(test_routes),
        BOTH(test_dlq_and_purge),
        BOTH(test_receipt_repeated),
        BOTH(test_failed_insert_in_a_batch),
        BOTH(test_status_unmigrated),
        BOTH(test_copy),
        BOTH(test_verify_matching),
        cmocka_unit_test(test_pg_url_forms),
        PG_ONLY(test_pg_connect_forms),
        PG_ONLY(test_pg_concurrent_migrations),
        PG_ONLY(test_pg_statement_timeout),
        PG_ONLY(test_pg_change_notifications),
        PG_ONLY(test_pg_store_reconnects),
        cmocka_unit_test(test_sqlite_has_no_listener),
    };
    return cmocka_run_group_tests(tests, setup, tmpdir_teardown);
}
