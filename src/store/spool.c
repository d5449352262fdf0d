#include "store/spool.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <sqlite3.h>

#include "store/internal.h"

#define KINDS 4 /* kinds counted in memory: 0..KINDS-1 */

enum { Q_PUT, Q_EACH, Q_REMOVE, Q_DROP, Q__COUNT };

static const char *const sql[Q__COUNT] = {
    [Q_PUT] = "INSERT INTO spool (kind, body) VALUES (?1, ?2)",
    [Q_EACH] = "SELECT seq, kind, body FROM spool ORDER BY seq LIMIT ?1",
    [Q_REMOVE] = "DELETE FROM spool WHERE seq <= ?1",
    [Q_DROP] = "DELETE FROM spool WHERE seq = (SELECT min(seq) FROM spool WHERE kind = ?1)",
};

struct th_spool {
    sqlite3 *db;
    sqlite3_stmt *q[Q__COUNT];
    long count[KINDS];
};

static th_err fail(struct th_spool *sp, char *err, size_t errlen, const char *path)
{
    snprintf(err, errlen, "spool %s: %s", path, sp->db ? sqlite3_errmsg(sp->db) : "out of memory");
    th_spool_close(sp);
    return TH_E_STORE;
}

th_err th_spool_open(const char *path, bool create, struct th_spool **out, char *err, size_t errlen)
{
    struct stat st;
    if (stat(path, &st) != 0) {
        if (!create)
            return TH_E_NOTFOUND;
        if (th_store_make_parent(path) != 0) {
            snprintf(err, errlen, "spool %s: cannot create its directory: %s", path,
                     strerror(errno));
            return TH_E_STORE;
        }
        /* 0600 before SQLite makes it 0644: the rows are records of people's sign-ins */
        int fd = open(path, O_RDWR | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
        if (fd >= 0)
            close(fd);
    }
    struct th_spool *sp = calloc(1, sizeof *sp);
    if (!sp)
        return TH_E_NOMEM;
    if (sqlite3_open_v2(path, &sp->db, SQLITE_OPEN_READWRITE | SQLITE_OPEN_NOMUTEX, NULL) !=
        SQLITE_OK)
        return fail(sp, err, errlen, path);
    sqlite3_busy_timeout(sp->db, 5000);
    /* FULL: a spooled DLQ entry counts as committed for the request that waits for it */
    if (sqlite3_exec(sp->db,
                     "PRAGMA journal_mode = WAL; PRAGMA synchronous = FULL; "
                     "CREATE TABLE IF NOT EXISTS spool (seq INTEGER PRIMARY KEY AUTOINCREMENT, "
                     "kind INTEGER NOT NULL, body BLOB NOT NULL)",
                     NULL, NULL, NULL) != SQLITE_OK)
        return fail(sp, err, errlen, path);
    for (int i = 0; i < Q__COUNT; i++)
        if (sqlite3_prepare_v3(sp->db, sql[i], -1, SQLITE_PREPARE_PERSISTENT, &sp->q[i], NULL) !=
            SQLITE_OK)
            return fail(sp, err, errlen, path);
    sqlite3_stmt *c = NULL;
    if (sqlite3_prepare_v2(sp->db, "SELECT kind, count(*) FROM spool GROUP BY kind", -1, &c,
                           NULL) != SQLITE_OK)
        return fail(sp, err, errlen, path);
    while (sqlite3_step(c) == SQLITE_ROW) {
        int k = sqlite3_column_int(c, 0);
        if (k >= 0 && k < KINDS)
            sp->count[k] = sqlite3_column_int(c, 1);
    }
    sqlite3_finalize(c);
    *out = sp;
    return TH_E_OK;
}

void th_spool_close(struct th_spool *sp)
{
    if (!sp)
        return;
    for (int i = 0; i < Q__COUNT; i++)
        sqlite3_finalize(sp->q[i]);
    sqlite3_close(sp->db);
    free(sp);
}

long th_spool_count(const struct th_spool *sp, int kind)
{
    if (kind >= 0)
        return kind < KINDS ? sp->count[kind] : 0;
    long n = 0;
    for (int i = 0; i < KINDS; i++)
        n += sp->count[i];
    return n;
}

th_err th_spool_begin(struct th_spool *sp)
{
    return sqlite3_exec(sp->db, "BEGIN IMMEDIATE", NULL, NULL, NULL) == SQLITE_OK ? TH_E_OK
                                                                                  : TH_E_STORE;
}

th_err th_spool_commit(struct th_spool *sp)
{
    if (sqlite3_exec(sp->db, "COMMIT", NULL, NULL, NULL) == SQLITE_OK)
        return TH_E_OK;
    sqlite3_exec(sp->db, "ROLLBACK", NULL, NULL, NULL);
    /* what this transaction put is gone: count again */
    for (int i = 0; i < KINDS; i++)
        sp->count[i] = 0;
    sqlite3_stmt *c = NULL;
    if (sqlite3_prepare_v2(sp->db, "SELECT kind, count(*) FROM spool GROUP BY kind", -1, &c,
                           NULL) == SQLITE_OK)
        while (sqlite3_step(c) == SQLITE_ROW) {
            int k = sqlite3_column_int(c, 0);
            if (k >= 0 && k < KINDS)
                sp->count[k] = sqlite3_column_int(c, 1);
        }
    sqlite3_finalize(c);
    return TH_E_STORE;
}

/* Steps a write statement once and resets it: SQLITE_DONE is success. */
static th_err step(sqlite3_stmt *q)
{
    int rc = sqlite3_step(q);
    sqlite3_reset(q);
    sqlite3_clear_bindings(q);
    return rc == SQLITE_DONE ? TH_E_OK : TH_E_STORE;
}

th_err th_spool_put(struct th_spool *sp, int kind, const void *blob, size_t len)
{
    if (kind < 0 || kind >= KINDS)
        return TH_E_INVAL;
    sqlite3_stmt *q = sp->q[Q_PUT];
    sqlite3_bind_int(q, 1, kind);
    sqlite3_bind_blob64(q, 2, blob, len, SQLITE_STATIC);
    th_err e = step(q);
    if (e == TH_E_OK)
        sp->count[kind]++;
    return e;
}

th_err th_spool_drop_oldest(struct th_spool *sp, int kind)
{
    if (kind < 0 || kind >= KINDS || sp->count[kind] == 0)
        return TH_E_NOTFOUND;
    sqlite3_bind_int(sp->q[Q_DROP], 1, kind);
    th_err e = step(sp->q[Q_DROP]);
    if (e == TH_E_OK && sqlite3_changes(sp->db) > 0)
        sp->count[kind]--;
    return e;
}

th_err th_spool_each(struct th_spool *sp, int limit, th_spool_fn fn, void *ud)
{
    sqlite3_stmt *q = sp->q[Q_EACH];
    sqlite3_bind_int(q, 1, limit);
    int rc;
    while ((rc = sqlite3_step(q)) == SQLITE_ROW) {
        const void *b = sqlite3_column_blob(q, 2);
        size_t n = (size_t)sqlite3_column_bytes(q, 2);
        if (fn(ud, sqlite3_column_int64(q, 0), sqlite3_column_int(q, 1), b ? b : "", n))
            break;
    }
    sqlite3_reset(q);
    return rc == SQLITE_ROW || rc == SQLITE_DONE ? TH_E_OK : TH_E_STORE;
}

th_err th_spool_remove_upto(struct th_spool *sp, int64_t seq)
{
    /* count what goes, by kind, before it goes */
    sqlite3_stmt *c = NULL;
    long gone[KINDS] = {0};
    if (sqlite3_prepare_v2(sp->db, "SELECT kind, count(*) FROM spool WHERE seq <= ?1 GROUP BY kind",
                           -1, &c, NULL) != SQLITE_OK)
        return TH_E_STORE;
    sqlite3_bind_int64(c, 1, seq);
    while (sqlite3_step(c) == SQLITE_ROW) {
        int k = sqlite3_column_int(c, 0);
        if (k >= 0 && k < KINDS)
            gone[k] = sqlite3_column_int(c, 1);
    }
    sqlite3_finalize(c);
    sqlite3_bind_int64(sp->q[Q_REMOVE], 1, seq);
    th_err e = step(sp->q[Q_REMOVE]);
    if (e == TH_E_OK)
        for (int i = 0; i < KINDS; i++)
            sp->count[i] -= gone[i];
    return e;
}
