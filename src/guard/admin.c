/*
 * The shared guard state for an operator: `telehook guard show|reset` (guard/guard.h). One
 * blocking libpq connection of the command's own; the keys computed from what the operator
 * typed under guard.secret (guard.c's make_key, through guard/internal.h), so the database is
 * asked about HMACs only, as guard_decide() writes them.
 *
 * A limit's row is GCRA state (key, tat_us: the theoretical arrival time); what it means now:
 * the requests counted in the window are ceil((tat - now) / interval), and the next request is
 * refused while tat - now > period - interval. Deleting the row is "nothing seen": the full
 * allowance again. A budget row is (key, UTC day, used).
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <libpq-fe.h>

#include "common/util.h"
#include "guard/internal.h"

#define NCODES 1000 /* calling codes 1..999, as guard.c */

struct th_guard_admin {
    struct th_guard *g;
    PGconn *conn;
    bool tables; /* the guard's tables exist (a node has run on this database) */
    char describe[512];
};

static th_err fail(struct th_guard_admin *a, char *err, size_t errlen, const char *what)
{
    /* libpq's messages name the host and the user, never the password */
    const char *m = a->conn ? PQerrorMessage(a->conn) : "";
    snprintf(err, errlen, "%s: %.*s", what, (int)strcspn(m, "\n"), m);
    return TH_E_STORE;
}

th_err th_guard_admin_open(const struct th_config *cfg, struct th_guard_admin **out, char *err,
                           size_t errlen)
{
    struct th_guard_admin *a = calloc(1, sizeof *a);
    if (!a)
        return TH_E_NOMEM;
    th_err e = th_guard_new(cfg, &a->g, err, errlen);
    if (e != TH_E_OK) {
        free(a);
        return e;
    }
    const char *url = th_guard_url_(a->g);
    if (!url) {
        snprintf(err, errlen,
                 "the guard's state is in memory: each `telehook serve` process keeps its own "
                 "(guard.url is empty and store.url is %s), and nothing outside the process can "
                 "read or clear it. A restart of the node clears every limit and budget; "
                 "/metrics counts the blocks (telehook_blocked_total)",
                 cfg->store_url && strncmp(cfg->store_url, "postgres", 8) == 0
                     ? "PostgreSQL but guard.secret is empty"
                     : "not PostgreSQL");
        th_guard_admin_close(a);
        return TH_E_INVAL;
    }
    a->conn = PQconnectdb(url);
    if (PQstatus(a->conn) != CONNECTION_OK) {
        e = fail(a, err, errlen, "cannot connect to the guard's database");
        th_guard_admin_close(a);
        return e;
    }
    snprintf(a->describe, sizeof a->describe, "postgresql://%s@%s:%s/%s", PQuser(a->conn),
             PQhost(a->conn), PQport(a->conn), PQdb(a->conn));
    PGresult *r = PQexec(a->conn, "SELECT to_regclass('guard_rate') IS NOT NULL AND "
                                  "to_regclass('guard_budget') IS NOT NULL");
    if (PQresultStatus(r) != PGRES_TUPLES_OK) {
        PQclear(r);
        e = fail(a, err, errlen, "cannot read the guard's tables");
        th_guard_admin_close(a);
        return e;
    }
    a->tables = strcmp(PQgetvalue(r, 0, 0), "t") == 0;
    PQclear(r);
    *out = a;
    return TH_E_OK;
}

void th_guard_admin_close(struct th_guard_admin *a)
{
    if (!a)
        return;
    PQfinish(a->conn);
    th_guard_free(a->g);
    free(a);
}

void th_guard_admin_set_clock(struct th_guard_admin *a, int64_t (*clock)(void *ud), void *ud)
{
    th_guard_set_clock(a->g, clock, ud);
}

const char *th_guard_admin_describe(const struct th_guard_admin *a)
{
    return a->describe;
}

/* The limits counting a subject: their block, their key's label. */
struct subj_limit {
    th_block b;
    const char *label;
};

static int limits_of(th_guard_subject s, struct subj_limit out[2])
{
    switch (s) {
    case TH_GUARD_PHONE:
        out[0] = (struct subj_limit){TH_BLOCK_PHONE_SHORT, "phone"};
        out[1] = (struct subj_limit){TH_BLOCK_PHONE_LONG, "phone-day"};
        return 2;
    case TH_GUARD_USER:
        out[0] = (struct subj_limit){TH_BLOCK_USER, "user"};
        return 1;
    case TH_GUARD_COUNTRY:
        out[0] = (struct subj_limit){TH_BLOCK_COUNTRY_RATE, "country"};
        return 1;
    case TH_GUARD_GLOBAL:
        out[0] = (struct subj_limit){TH_BLOCK_GLOBAL, "global"};
        return 1;
    }
    return 0;
}

th_err th_guard_admin_limits(struct th_guard_admin *a, th_guard_subject s, const char *value,
                             struct th_guard_limit_state out[2], int *n, char *err, size_t errlen)
{
    struct subj_limit l[2];
    int nl = limits_of(s, l);
    *n = 0;
    for (int i = 0; i < nl; i++) {
        const struct th_rate *rate = th_guard_rate_(a->g, l[i].b);
        if (!rate || !rate->on)
            continue;
        struct th_guard_limit_state *o = &out[(*n)++];
        *o = (struct th_guard_limit_state){
            .limit = l[i].b,
            .count = (long)(rate->period_us / rate->interval_us),
            .period_us = rate->period_us,
        };
        if (!a->tables)
            continue;
        char key[TH_GUARD_KEY_HEX];
        th_guard_key_hex_(a->g, l[i].label, value, key);
        const char *v[] = {key};
        PGresult *r =
            PQexecParams(a->conn, "SELECT tat_us FROM guard_rate WHERE key = decode($1, 'hex')", 1,
                         NULL, v, NULL, NULL, 0);
        if (PQresultStatus(r) != PGRES_TUPLES_OK) {
            PQclear(r);
            return fail(a, err, errlen, "cannot read guard_rate");
        }
        if (PQntuples(r) == 1) {
            int64_t tat = strtoll(PQgetvalue(r, 0, 0), NULL, 10), now = th_guard_wall_us_(a->g);
            int64_t ahead = tat > now ? tat - now : 0;
            int64_t tolerance = rate->period_us - rate->interval_us;
            o->held = true;
            o->used = (long)((ahead + rate->interval_us - 1) / rate->interval_us);
            o->wait_us = ahead > tolerance ? ahead - tolerance : 0;
        }
        PQclear(r);
    }
    return TH_E_OK;
}

th_err th_guard_admin_reset_limits(struct th_guard_admin *a, th_guard_subject s, const char *value,
                                   long *removed, char *err, size_t errlen)
{
    struct subj_limit l[2];
    int nl = limits_of(s, l);
    *removed = 0;
    if (!a->tables)
        return TH_E_OK;
    /* every key the subject may have, configured now or not (a limit turned off since) */
    char keys[2][TH_GUARD_KEY_HEX], arr[2 * TH_GUARD_KEY_HEX + 4] = "{";
    for (int i = 0; i < nl; i++) {
        th_guard_key_hex_(a->g, l[i].label, value, keys[i]);
        if (i)
            strcat(arr, ",");
        strcat(arr, keys[i]);
    }
    strcat(arr, "}");
    const char *v[] = {arr};
    PGresult *r = PQexecParams(a->conn,
                               "DELETE FROM guard_rate WHERE key = ANY(ARRAY(SELECT decode(k, "
                               "'hex') FROM unnest($1::text[]) k))",
                               1, NULL, v, NULL, NULL, 0);
    if (PQresultStatus(r) != PGRES_COMMAND_OK) {
        PQclear(r);
        return fail(a, err, errlen, "cannot delete from guard_rate");
    }
    *removed = strtol(PQcmdTuples(r), NULL, 10);
    PQclear(r);
    return TH_E_OK;
}

static int today(const struct th_guard_admin *a)
{
    return (int)(th_guard_wall_us_(a->g) / 86400000000LL); /* guard_decide()'s UTC day */
}

th_err th_guard_admin_budgets(struct th_guard_admin *a, th_guard_budget_fn fn, void *ud, char *err,
                              size_t errlen)
{
    if (!a->tables)
        return TH_E_OK;
    char day[16];
    snprintf(day, sizeof day, "%d", today(a));
    const char *v[] = {day};
    PGresult *r = PQexecParams(a->conn,
                               "SELECT encode(key, 'hex'), used FROM guard_budget WHERE day = "
                               "$1::int",
                               1, NULL, v, NULL, NULL, 0);
    if (PQresultStatus(r) != PGRES_TUPLES_OK) {
        PQclear(r);
        return fail(a, err, errlen, "cannot read guard_budget");
    }
    /* the rows are keyed by an HMAC of the code: each code's key, then a match per row */
    int nrows = PQntuples(r);
    int *code_of = calloc((size_t)nrows + 1, sizeof *code_of);
    if (!code_of) {
        PQclear(r);
        return TH_E_NOMEM;
    }
    for (int c = 0; c < NCODES; c++) {
        char cc[8], key[TH_GUARD_KEY_HEX];
        snprintf(cc, sizeof cc, "%d", c);
        th_guard_key_hex_(a->g, "budget", cc, key);
        for (int i = 0; i < nrows; i++)
            if (strcmp(PQgetvalue(r, i, 0), key) == 0)
                code_of[i] = c;
    }
    int stop = 0;
    for (int c = 0; c < NCODES && !stop; c++) {
        for (int i = 0; i < nrows && !stop; i++) {
            if (code_of[i] != c)
                continue;
            struct th_guard_budget_state b = {c, strtol(PQgetvalue(r, i, 1), NULL, 10),
                                              th_guard_budget_(a->g, c)};
            stop = fn(ud, &b);
        }
    }
    free(code_of);
    PQclear(r);
    return TH_E_OK;
}

long th_guard_admin_budget(const struct th_guard_admin *a, int code)
{
    return th_guard_budget_(a->g, code);
}

th_err th_guard_admin_reset_budget(struct th_guard_admin *a, int code, long *removed, char *err,
                                   size_t errlen)
{
    *removed = 0;
    if (!a->tables)
        return TH_E_OK;
    char cc[8], key[TH_GUARD_KEY_HEX], day[16];
    snprintf(cc, sizeof cc, "%d", code);
    snprintf(day, sizeof day, "%d", today(a));
    th_guard_key_hex_(a->g, "budget", cc, key);
    const char *v[] = {key, day};
    PGresult *r = PQexecParams(a->conn,
                               "DELETE FROM guard_budget WHERE key = decode($1, 'hex') AND "
                               "day = $2::int",
                               2, NULL, v, NULL, NULL, 0);
    if (PQresultStatus(r) != PGRES_COMMAND_OK) {
        PQclear(r);
        return fail(a, err, errlen, "cannot delete from guard_budget");
    }
    *removed = strtol(PQcmdTuples(r), NULL, 10);
    PQclear(r);
    return TH_E_OK;
}

th_err th_guard_admin_sizes(struct th_guard_admin *a, struct th_guard_sizes *out, char *err,
                            size_t errlen)
{
    *out = (struct th_guard_sizes){0};
    if (!a->tables)
        return TH_E_OK;
    PGresult *r = PQexec(a->conn, "SELECT (SELECT count(*) FROM guard_dedupe), "
                                  "(SELECT count(*) FROM guard_rate), "
                                  "(SELECT count(*) FROM guard_budget)");
    if (PQresultStatus(r) != PGRES_TUPLES_OK) {
        PQclear(r);
        return fail(a, err, errlen, "cannot count the guard's rows");
    }
    out->dedupe = strtol(PQgetvalue(r, 0, 0), NULL, 10);
    out->rate = strtol(PQgetvalue(r, 0, 1), NULL, 10);
    out->budget = strtol(PQgetvalue(r, 0, 2), NULL, 10);
    PQclear(r);
    return TH_E_OK;
}
