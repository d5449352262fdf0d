/* Unit tests: store (SQLite backend: migrations, seeds, templates, outbox, deliveries). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <sqlite3.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/sysmacros.h>
#include <unistd.h>

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

static void test_migrate_and_seed(void **state)
{
    (void)state;
    struct th_store *st = open_ok(url);
    struct rows r = {0};
    /* migration 1 seeds en/es, 6 rewrites the SMS seeds, 7 removes the seeds nobody changed:
     * none is left, so the seeds, 6's UPDATE and 7's DELETE agree word for word (the built-in
     * pack speaks instead) */
    assert_int_equal(th_store_templates_each(st, count_tpl, &r), TH_E_OK);
    assert_int_equal(r.n, 0);
    assert_non_null(strstr(th_store_describe(st), "t.db"));
    /* a template survives a reopen */
    struct th_template_row row = {"en", "sms", "Changed {{otp}}", "", 1};
    assert_int_equal(th_store_template_put(st, &row), TH_E_OK);
    th_store_close(st);
    st = open_ok(url);
    memset(&r, 0, sizeof r);
    assert_int_equal(th_store_templates_each(st, count_tpl, &r), TH_E_OK);
    assert_int_equal(r.n, 1);
    assert_string_equal(r.first[0], "en/sms//Changed {{otp}}");
    th_store_close(st);

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
    sqlite3 *db;
    assert_int_equal(sqlite3_open(p, &db), SQLITE_OK);
    const char *back =
        "DELETE FROM schema_version WHERE version >= 5; DROP TABLE prefs;"
        "ALTER TABLE deliveries DROP COLUMN user_id; ALTER TABLE deliveries DROP COLUMN "
        "login_hash; ALTER TABLE deliveries DROP COLUMN phone_hash;"
        "ALTER TABLE deliveries DROP COLUMN locale; ALTER TABLE deliveries DROP COLUMN "
        "preference;";
    assert_int_equal(sqlite3_exec(db, back, NULL, NULL, NULL), SQLITE_OK);
    assert_int_equal(sqlite3_exec(db, rows, NULL, NULL, NULL), SQLITE_OK);
    sqlite3_close(db);
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
    (void)state;
    char p5[600], u5[620];
    snprintf(p5, sizeof p5, "%s/v4.db", dir);
    snprintf(u5, sizeof u5, "sqlite:%s", p5);
    th_store_close(open_ok(u5));
    back_to_schema_4(
        p5, "INSERT INTO templates VALUES ('en', 'sms', 'Your verification code is {{otp}}. It "
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
    (void)state;
    char p6[600], u6[620];
    snprintf(p6, sizeof p6, "%s/v6.db", dir);
    snprintf(u6, sizeof u6, "sqlite:%s", p6);
    th_store_close(open_ok(u6));
    sqlite3 *db;
    assert_int_equal(sqlite3_open(p6, &db), SQLITE_OK);
    const char *back =
        "DELETE FROM schema_version WHERE version = 7; DROP TABLE prefs;"
        "ALTER TABLE deliveries DROP COLUMN locale; ALTER TABLE deliveries DROP COLUMN "
        "preference;"
        "INSERT INTO templates VALUES ('en', 'sms', 'Your verification code is {{otp}}. It "
        "expires in {{expires_minutes:minute|minutes}}.', '', 0),"
        "('es', 'sms', 'Su código de verificación es {{otp}}. Caduca en "
        "{{expires_minutes:minuto|minutos}}.', '', 0),"
        "('en', 'voice', " SEED_EN_VOICE ", 'Joanna', 0),"
        "('es', 'voice', " SEED_ES_VOICE ", 'Lupe', 0);";
    assert_int_equal(sqlite3_exec(db, back, NULL, NULL, NULL), SQLITE_OK);
    sqlite3_close(db);
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

static void test_prefs(void **state)
{
    (void)state;
    struct th_store *st = open_ok(":memory:");
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
    (void)state;
    char p2[600], u2[620];
    snprintf(p2, sizeof p2, "%s/newer.db", dir);
    snprintf(u2, sizeof u2, "sqlite://%s", p2);
    th_store_close(open_ok(u2));
    sqlite3 *db;
    assert_int_equal(sqlite3_open(p2, &db), SQLITE_OK);
    assert_int_equal(
        sqlite3_exec(db, "INSERT INTO schema_version VALUES (99, 0)", NULL, NULL, NULL), SQLITE_OK);
    sqlite3_close(db);
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
    assert_int_equal(th_store_open("postgres://user:hunter2@db/telehook", &st, err, sizeof err),
                     TH_E_STORE);
    assert_non_null(strstr(err, "unsupported store URL scheme 'postgres'"));
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
    (void)state;
    struct th_store *st = open_ok(":memory:");
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
    (void)state;
    struct th_store *st = open_ok(":memory:");
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
    (void)state;
    struct th_store *st = open_ok(":memory:");
    assert_int_equal(th_store_begin(st), TH_E_OK);
    struct th_delivery_row a = {"r-1",        "ev",   10,    "mfa",      "+1201*****23",
                                "US",         "sms",  "en",  "template", "outbox",
                                "SUCCESSFUL", "ob-1", "",    1500,       1,
                                "00u1",       "lh1",  "ph1", "es-mx",    "pt/voice"};
    struct th_delivery_row b = {
        "r-2", "ev2", 20, "mfa", "", "", "", "", "", "", "REJECTED", "", "invalid phone number",
        90,    0,     "", "",    "", "", ""};
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
    (void)state;
    struct th_store *st = open_ok(":memory:");
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
    (void)state;
    struct th_store *st = open_ok(":memory:");
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

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_migrate_and_seed),
        cmocka_unit_test(test_migrations_6_and_7_on_seeds),
        cmocka_unit_test(test_migration_7_after_6),
        cmocka_unit_test(test_prefs),
        cmocka_unit_test(test_newer_schema_refused),
        cmocka_unit_test(test_bad_urls),
        cmocka_unit_test(test_template_delete),
        cmocka_unit_test(test_outbox),
        cmocka_unit_test(test_dlq_count),
        cmocka_unit_test(test_deliveries),
        cmocka_unit_test(test_second_connection_keeps_the_first_ones_lock),
        cmocka_unit_test(test_delivery_search),
    };
    return cmocka_run_group_tests(tests, setup, tmpdir_teardown);
}
