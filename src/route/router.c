#include "route/router.h"

#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/buf.h"
#include "common/retired.h"
#include "common/util.h"
#include "obs/log.h"
#include "obs/metrics.h"

#define MAX_PROVIDERS  4
#define MARGIN_US      (30 * 1000) /* kept back from the deadline to build and send the answer */
#define MIN_ATTEMPT_US (20 * 1000)
/* Route health: (provider, country) pairs tracked at most (countries as they come; past it a new
 * pair is not tracked: its provider keeps its place), buckets of the window, the margin above
 * the threshold a demoted provider must reach to come back (no flapping around the threshold),
 * and one request in PROBE_EVERY keeping the demoted provider first so receipts keep coming. */
#define HEALTH_PAIRS   512
#define HEALTH_BUCKETS 8
#define HEALTH_MARGIN  10
#define PROBE_EVERY    10

/* How an attempt ended (telehook_provider_attempts_total{result}). */
enum { ATTEMPT_OK, ATTEMPT_RETRYABLE, ATTEMPT_PERMANENT, ATTEMPT_TIMEOUT, ATTEMPT__COUNT };
static const char *const attempt_results[] = {"ok", "retryable", "permanent", "timeout"};
/* attempt latency buckets, microseconds (shown in seconds) */
static const int64_t attempt_le_us[] = {10000,  25000,   50000,   100000, 250000,
                                        500000, 1000000, 2500000, 5000000};

struct slot {
    struct th_provider *p;
    const struct th_router *r; /* for the metrics sampled at render time */
    int timeout_ms;
    atomic_int failures;        /* consecutive retryable failures */
    atomic_llong open_until_us; /* circuit open until then (monotonic) */
    struct th_counter attempts[ATTEMPT__COUNT];
    struct th_histogram attempt_seconds;
};

/* One (provider, country): final receipts in time buckets, under th_router's health_mu. */
struct health {
    int slot; /* -1: free */
    char country[4];
    int64_t bucket_start[HEALTH_BUCKETS]; /* seconds (monotonic) the bucket began; 0 unused */
    int delivered[HEALTH_BUCKETS], total[HEALTH_BUCKETS];
    bool demoted;
    int64_t demoted_s; /* when it was demoted (monotonic seconds) */
    unsigned probes;   /* requests seen while demoted: every PROBE_EVERY-th keeps the order */
};

struct th_router {
    const struct th_config *cfg;
    /* Route health: a few instructions under the lock, per receipt and, only while a pair is
     * demoted (ndemoted > 0), per send. */
    pthread_mutex_t health_mu;
    struct health health[HEALTH_PAIRS];
    atomic_int ndemoted;
    struct th_counter reorders[MAX_PROVIDERS]; /* sends where the slot's provider went behind */
    struct slot slots[MAX_PROVIDERS];
    int nslots;
    int default_slot;
    struct th_route default_route; /* the default provider alone: when no stored route matches */
    _Atomic(struct th_routes *) routes;
    pthread_mutex_t retired_mu;
    struct th_retired retired; /* route tables replaced by reloads: a job may still read one */
    int per_loop_in_flight;
    char describe[64];
    atomic_int routes_skipped; /* routes of the running table cut for a provider not set up */
};

/* One message on its way. */
struct job {
    struct th_router *r;
    struct th_loop *loop;
    struct th_http *http;
    struct th_send msg;           /* borrowed pointers: the caller keeps them until done */
    const struct th_route *route; /* in the table (a replaced one is kept until the router is
                                     freed: th_retired) or the router's default_route */
    int next;
    int first; /* route health: the attempt run first, the others after in order; 0 = as is */
    struct th_route_result res;
    size_t errlen;
    struct th_timer defer;
    th_err last_err;    /* the last attempt's failure: TH_E_TIMEOUT makes the outcome a timeout */
    int64_t attempt_us; /* when the current attempt started */
    th_route_done_fn done;
    void *ud;
    struct th_arena *arena; /* the request's: the job's memory and its attempts' */
};

static void free_routes(void *rs)
{
    th_routes_free(rs);
}

/* ---- providers and breakers ---- */

static int find_slot(const struct th_router *r, const char *name)
{
    for (int i = 0; i < r->nslots; i++)
        if (strcmp(r->slots[i].p->name, name) == 0)
            return i;
    return -1;
}

/* Takes p (NULL: built from the registry by name); freed here when it cannot be kept. */
static th_err add_provider(struct th_router *r, const char *name, struct th_provider *p,
                           const struct th_outbox_sink *outbox, char *err, size_t errlen)
{
    if (find_slot(r, name) >= 0) {
        th_provider_free(p);
        return TH_E_OK;
    }
    if (r->nslots == MAX_PROVIDERS) {
        th_provider_free(p);
        snprintf(err, errlen, "too many providers");
        return TH_E_CONFIG;
    }
    struct slot *s = &r->slots[r->nslots];
    char why[256] = "";
    th_err e = p ? TH_E_OK : th_provider_new(name, r->cfg, outbox, &p, why, sizeof why);
    if (e != TH_E_OK) {
        snprintf(err, errlen, "provider %s: %s", name, why[0] ? why : th_strerror(e));
        return TH_E_CONFIG;
    }
    s->r = r;
    s->p = p;
    s->timeout_ms = s->p->timeout_ms > 0 ? s->p->timeout_ms : 2000;
    th_histogram_init(&s->attempt_seconds, attempt_le_us, TH_ARRAY_LEN(attempt_le_us), 1e6);
    atomic_init(&s->failures, 0);
    atomic_init(&s->open_until_us, 0);
    r->nslots++;
    return TH_E_OK;
}

static bool breaker_open(const struct th_router *r, struct slot *s, int64_t now)
{
    return r->cfg->dispatch_breaker_failures > 0 && atomic_load(&s->open_until_us) > now;
}

static void breaker_record(const struct th_router *r, struct slot *s, bool failed)
{
    if (!failed) {
        if (atomic_exchange(&s->failures, 0) >= r->cfg->dispatch_breaker_failures &&
            r->cfg->dispatch_breaker_failures > 0)
            th_log_msg(TH_LOG_INFO, "circuit_closed", "provider %s answers again", s->p->name);
        atomic_store(&s->open_until_us, 0);
        return;
    }
    int n = atomic_fetch_add(&s->failures, 1) + 1;
    int limit = r->cfg->dispatch_breaker_failures;
    if (limit > 0 && n >= limit) {
        /* Re-opened at each failure while over the limit: a half-open probe that fails
         * closes the door again for a full period. */
        atomic_store(&s->open_until_us,
                     th_mono_us() + (int64_t)r->cfg->dispatch_breaker_seconds * 1000000);
        if (n == limit)
            th_log_msg(TH_LOG_WARN, "circuit_open",
                       "provider %s failed %d times in a row: skipped for %d s", s->p->name, n,
                       r->cfg->dispatch_breaker_seconds);
    }
}

/* ---- route health ---- */

enum health_change { HEALTH_SAME, HEALTH_DEMOTED, HEALTH_RESTORED };

static int64_t bucket_width_s(const struct th_router *r)
{
    return r->cfg->routing_health_window / HEALTH_BUCKETS; /* >= 7: the window is >= 60 s */
}

/* The pair's entry; create: made when absent (NULL when the table is full). health_mu held. */
static struct health *health_find(struct th_router *r, int slot, const char *country, bool create)
{
    unsigned h = (unsigned)slot * 31u;
    for (const char *c = country; *c; c++)
        h = h * 131u + (unsigned char)*c;
    for (unsigned i = 0; i < HEALTH_PAIRS; i++) {
        struct health *e = &r->health[(h + i) % HEALTH_PAIRS];
        if (e->slot == slot && strcmp(e->country, country) == 0)
            return e;
        if (e->slot < 0) {
            if (!create)
                return NULL;
            memset(e, 0, sizeof *e);
            e->slot = slot;
            th_strlcpy(e->country, country, sizeof e->country);
            return e;
        }
    }
    return NULL;
}

/* Demotes or restores the pair from the receipts of its window. health_mu held: no I/O here, the
 * caller logs the change once the lock is released. */
static enum health_change health_judge(struct th_router *r, struct health *e, int64_t now_s)
{
    int64_t epoch = now_s / bucket_width_s(r) + 1;
    int d = 0, t = 0;
    for (int b = 0; b < HEALTH_BUCKETS; b++)
        if (e->bucket_start[b] && epoch - e->bucket_start[b] < HEALTH_BUCKETS) {
            d += e->delivered[b];
            t += e->total[b];
        }
    int thr = r->cfg->routing_health_threshold;
    int back = thr + HEALTH_MARGIN > 100 ? 100 : thr + HEALTH_MARGIN;
    bool enough = t >= r->cfg->routing_health_min_receipts;
    if (!e->demoted && enough && (int64_t)d * 100 < (int64_t)thr * t) {
        e->demoted = true;
        e->demoted_s = now_s;
        e->probes = 0;
        atomic_fetch_add(&r->ndemoted, 1);
        return HEALTH_DEMOTED;
    }
    /* Back above the threshold plus the margin; or, demoted as it is and so sent little, a
     * whole window without enough receipts to judge: it gets its place back and is judged anew. */
    if (e->demoted && (enough ? (int64_t)d * 100 >= (int64_t)back * t
                              : now_s - e->demoted_s >= r->cfg->routing_health_window)) {
        e->demoted = false;
        atomic_fetch_sub(&r->ndemoted, 1);
        return HEALTH_RESTORED;
    }
    return HEALTH_SAME;
}

static void health_log(const struct th_router *r, enum health_change c, int slot,
                       const char *country)
{
    if (c == HEALTH_DEMOTED)
        th_log_msg(TH_LOG_WARN, "route_health_demoted",
                   "provider %s delivers under %d%% to %s: moved behind the next provider of its "
                   "routes there",
                   r->slots[slot].p->name, r->cfg->routing_health_threshold,
                   country[0] ? country : "(no country)");
    else if (c == HEALTH_RESTORED)
        th_log_msg(TH_LOG_INFO, "route_health_restored", "provider %s back in its place for %s",
                   r->slots[slot].p->name, country[0] ? country : "(no country)");
}

void th_router_health_receipt(struct th_router *r, const char *provider, const char *country,
                              bool delivered)
{
    if (r->cfg->routing_health_threshold <= 0)
        return;
    int si = find_slot(r, provider);
    if (si < 0)
        return;
    char cc[4];
    th_strlcpy(cc, country ? country : "", sizeof cc);
    int64_t now_s = th_mono_us() / 1000000;
    int64_t epoch = now_s / bucket_width_s(r) + 1;
    enum health_change c = HEALTH_SAME;
    pthread_mutex_lock(&r->health_mu);
    struct health *e = health_find(r, si, cc, true);
    if (e) {
        int b = (int)(epoch % HEALTH_BUCKETS);
        if (e->bucket_start[b] != epoch) {
            e->bucket_start[b] = epoch;
            e->delivered[b] = e->total[b] = 0;
        }
        e->total[b]++;
        e->delivered[b] += delivered ? 1 : 0;
        c = health_judge(r, e, now_s);
    }
    pthread_mutex_unlock(&r->health_mu);
    health_log(r, c, si, cc);
}

/*
 * Which attempt of the route this request runs first (0: the route's order). When its first
 * provider is demoted for the message's country, the first later attempt whose provider is
 * neither demoted there nor behind an open circuit; the demoted one then runs after it, as a
 * fallback. Every PROBE_EVERY-th request keeps the order: a probe, so the demoted provider's
 * receipts keep coming and it can recover.
 */
static int health_first(struct th_router *r, const struct th_route *rt, const char *country)
{
    int first = find_slot(r, rt->at[0].provider);
    if (first < 0)
        return 0;
    char cc[4];
    th_strlcpy(cc, country ? country : "", sizeof cc);
    int64_t now_us = th_mono_us();
    int64_t now_s = now_us / 1000000;
    int pick = 0;
    enum health_change c = HEALTH_SAME;
    pthread_mutex_lock(&r->health_mu);
    struct health *e = health_find(r, first, cc, false);
    if (e && e->demoted)
        c = health_judge(r, e, now_s);
    if (e && e->demoted && ++e->probes % PROBE_EVERY != 0) {
        for (int k = 1; k < rt->n && !pick; k++) {
            int sk = find_slot(r, rt->at[k].provider);
            if (sk < 0 || sk == first || breaker_open(r, &r->slots[sk], now_us))
                continue;
            struct health *o = health_find(r, sk, cc, false);
            if (!o || !o->demoted)
                pick = k;
        }
    }
    pthread_mutex_unlock(&r->health_mu);
    health_log(r, c, first, cc);
    if (pick)
        th_counter_inc(&r->reorders[first]);
    return pick;
}

/* One attempt done: a few relaxed adds, the only metrics work on the request path. */
static void attempt_record(struct slot *s, const struct th_send_result *res, int64_t took_us)
{
    int k = res->err == TH_E_OK        ? ATTEMPT_OK
            : res->err == TH_E_TIMEOUT ? ATTEMPT_TIMEOUT
            : res->retryable           ? ATTEMPT_RETRYABLE
                                       : ATTEMPT_PERMANENT;
    th_counter_inc(&s->attempts[k]);
    th_histogram_observe(&s->attempt_seconds, took_us);
}

/* ---- the loop's outbound client ---- */

static void free_http(void *ud)
{
    th_http_free(ud);
}

static struct th_http *loop_http(struct th_router *r, struct th_loop *loop)
{
    struct th_http *h = th_loop_user(loop);
    if (h)
        return h;
    if (th_http_new(loop, r->per_loop_in_flight, &h) != TH_E_OK)
        return NULL;
    if (th_loop_at_exit(loop, free_http, h) != TH_E_OK) {
        th_http_free(h);
        return NULL;
    }
    th_loop_set_user(loop, h);
    return h;
}

/* ---- one message ---- */

static void note(struct job *j, const char *provider, const char *what)
{
    size_t cap = sizeof j->res.errors;
    if (j->errlen >= cap - 1)
        return;
    int w = snprintf(j->res.errors + j->errlen, cap - j->errlen, "%s%s: %s", j->errlen ? "; " : "",
                     provider, what);
    if (w > 0)
        j->errlen += (size_t)w < cap - j->errlen ? (size_t)w : cap - 1 - j->errlen;
}

static void finish(struct job *j)
{
    j->done(j->ud, &j->res); /* the job is the arena's: it goes with the request */
}

static void finish_deferred(void *ud)
{
    finish(ud);
}

static void on_attempt(void *ud, const struct th_send_result *res);

/* The route's k-th attempt as this job runs it: route health may have moved one first. */
static const struct th_route_attempt *attempt_at(const struct job *j, int k)
{
    int f = j->first;
    return &j->route->at[f == 0 ? k : k == 0 ? f : k <= f ? k - 1 : k];
}

/* Whether an attempt after the current one has a provider whose circuit is closed. */
static bool alternative_after(const struct job *j, int64_t now)
{
    for (int k = j->next; k < j->route->n; k++) {
        int si = find_slot(j->r, attempt_at(j, k)->provider);
        if (si >= 0 && !breaker_open(j->r, &j->r->slots[si], now))
            return true;
    }
    return false;
}

/* Starts the next attempt that can run; false when none is left (res says why). */
static bool start_next(struct job *j)
{
    struct th_router *r = j->r;
    while (j->next < j->route->n) {
        const struct th_route_attempt *a = attempt_at(j, j->next++);
        int si = find_slot(r, a->provider);
        if (si < 0) { /* cannot happen: routes are checked against the providers */
            note(j, a->provider, "not configured");
            continue;
        }
        struct slot *s = &r->slots[si];
        int64_t now = th_mono_us();
        if (breaker_open(r, s, now) && alternative_after(j, now)) {
            note(j, a->provider, "skipped (circuit open)");
            continue;
        }
        /* With no closed alternative left, it is tried anyway: a breaker reorders and
         * shortens a route, it never fails a request on its own. */
        int64_t left = j->msg.deadline_us - MARGIN_US - now;
        if (left < MIN_ATTEMPT_US) {
            note(j, a->provider, "no time left");
            j->res.err = TH_E_TIMEOUT;
            return false;
        }
        int64_t timeout = (int64_t)s->timeout_ms * 1000;
        if (timeout > left)
            timeout = left;
        struct th_attempt at = {
            .loop = j->loop,
            .http = j->http,
            .sender = a->sender,
            .timeout_ms = timeout / 1000,
            .arena = j->arena,
        };
        j->res.provider = s->p->name;
        j->attempt_us = now;
        th_err e = th_provider_send(s->p, &at, &j->msg, on_attempt, j);
        if (e == TH_E_OK)
            return true;
        if (e == TH_E_OVERLOAD && j->res.attempts == 0)
            j->res.overload = true;
        note(j, a->provider, e == TH_E_OVERLOAD ? "overloaded" : th_strerror(e));
    }
    if (j->res.err == TH_E_OK)
        j->res.err = j->last_err != TH_E_OK ? j->last_err : TH_E_PROVIDER;
    return false;
}

static void on_attempt(void *ud, const struct th_send_result *res)
{
    struct job *j = ud;
    struct th_router *r = j->r;
    j->res.attempts++;
    int si = find_slot(r, j->res.provider);
    bool failed_retryable = res->err != TH_E_OK && res->retryable;
    if (si >= 0) {
        attempt_record(&r->slots[si], res, th_mono_us() - j->attempt_us);
        breaker_record(r, &r->slots[si], failed_retryable);
    }
    if (res->err == TH_E_OK) {
        j->res.err = TH_E_OK;
        j->res.overload = false;
        th_strlcpy(j->res.transaction_id, res->transaction_id, sizeof j->res.transaction_id);
        finish(j);
        return;
    }
    note(j, j->res.provider, res->error[0] ? res->error : "failed");
    j->last_err = res->err;
    if (!res->retryable) { /* permanent: another route would fail the same way, or worse */
        j->res.err = TH_E_PROVIDER;
        finish(j);
        return;
    }
    j->res.err = TH_E_OK;
    if (!start_next(j))
        finish(j);
}

void th_router_send(struct th_router *r, struct th_loop *loop, struct th_arena *arena,
                    const struct th_send *msg, th_route_done_fn done, void *ud)
{
    struct job *j = arena ? th_arena_calloc(arena, sizeof *j) : NULL;
    if (!j) {
        struct th_route_result res = {.err = arena ? TH_E_NOMEM : TH_E_INVAL, .provider = ""};
        snprintf(res.errors, sizeof res.errors, arena ? "out of memory" : "no arena");
        done(ud, &res); /* documented as later; no memory is the one exception */
        return;
    }
    j->r = r;
    j->arena = arena;
    j->loop = loop;
    j->msg = *msg;
    j->done = done;
    j->ud = ud;
    j->res.provider = "";
    const struct th_route *route =
        th_routes_find(atomic_load(&r->routes), msg->channel, msg->region);
    j->route = route ? route : &r->default_route;
    /* One branch while every provider is healthy. */
    if (atomic_load_explicit(&r->ndemoted, memory_order_relaxed) > 0 && j->route->n > 1)
        j->first = health_first(r, j->route, msg->region);
    j->http = loop_http(r, loop);
    if (!j->http) {
        j->res.err = TH_E_NOMEM;
        note(j, "dispatch", "cannot create the HTTP client");
    } else if (start_next(j)) {
        return;
    }
    th_loop_timer_set(loop, &j->defer, th_mono_us(), finish_deferred, j);
}

/* ---- set-up ---- */

/* Why a provider a route names could not be set up at start (for the log line). */
struct unset {
    char name[16];
    char why[256];
};

/*
 * The routes as they can run: an attempt naming a provider that is not set up is dropped, and a
 * route left with no attempt is dropped whole (the default route carries its messages), each
 * with an error line. A stored route never stops a start or a reload: the admin may have stored
 * it with `routes set --force`, or removed the provider's configuration since. Consumes routes;
 * NULL when out of memory.
 */
static struct th_routes *runnable(struct th_router *r, struct th_routes *routes,
                                  const struct unset *unset, int nunset)
{
    struct th_routes *out = NULL;
    if (th_routes_new(&out) != TH_E_OK) {
        th_routes_free(routes);
        return NULL;
    }
    int skipped = 0;
    for (size_t i = 0; i < th_routes_count(routes); i++) {
        struct th_route rt = *th_routes_find_index(routes, i);
        char dropped[512] = "";
        size_t dl = 0;
        int kept = 0;
        for (int k = 0; k < rt.n; k++) {
            const char *name = rt.at[k].provider;
            if (find_slot(r, name) >= 0) {
                rt.at[kept++] = rt.at[k];
                continue;
            }
            const char *why = "not set up at start: configure it and restart";
            for (int u = 0; u < nunset; u++)
                if (strcmp(unset[u].name, name) == 0)
                    why = unset[u].why;
            int w =
                snprintf(dropped + dl, sizeof dropped - dl, "%s%s (%s)", dl ? "; " : "", name, why);
            if (w > 0 && (size_t)w < sizeof dropped - dl)
                dl += (size_t)w;
        }
        if (kept < rt.n) {
            skipped++;
            char rest[TH_ROUTE_MAX_ATTEMPTS * (TH_ROUTE_SENDER_MAX + 24)] = "";
            rt.n = kept;
            th_route_format(&rt, rest, sizeof rest);
            if (kept)
                th_log_msg(TH_LOG_ERROR, "route_skipped",
                           "route %s %s: attempts skipped, their provider is not set up: %s; "
                           "the route goes on with %s",
                           rt.channel, rt.country, dropped, rest);
            else
                th_log_msg(TH_LOG_ERROR, "route_skipped",
                           "route %s %s left out, its provider is not set up: %s; the default "
                           "provider (%s) carries its messages",
                           rt.channel, rt.country, dropped, r->slots[r->default_slot].p->name);
        }
        if (kept > 0 && th_routes_add(out, &rt) != TH_E_OK) {
            th_routes_free(out);
            th_routes_free(routes);
            return NULL;
        }
    }
    th_routes_free(routes);
    atomic_store(&r->routes_skipped, skipped);
    return out;
}

static struct th_router *router_alloc(const struct th_config *cfg)
{
    struct th_router *r = calloc(1, sizeof *r);
    if (!r)
        return NULL;
    r->cfg = cfg;
    pthread_mutex_init(&r->retired_mu, NULL);
    pthread_mutex_init(&r->health_mu, NULL);
    for (int i = 0; i < HEALTH_PAIRS; i++)
        r->health[i].slot = -1;
    atomic_init(&r->ndemoted, 0);
    th_retired_init(&r->retired, free_routes);
    int threads = cfg->threads > 0 ? cfg->threads : 1;
    r->per_loop_in_flight = (cfg->dispatch_max_in_flight + threads - 1) / threads;
    atomic_init(&r->routes, NULL);
    atomic_init(&r->routes_skipped, 0);
    return r;
}

/* The providers are in place: the runnable routes, the description. Consumes routes and, on
 * failure, r. */
static th_err router_finish(struct th_router *r, struct th_routes *routes,
                            const struct unset *unset, int nunset, struct th_router **out)
{
    r->default_slot = 0;
    r->default_route.n = r->nslots > 0;
    if (r->nslots > 0)
        th_strlcpy(r->default_route.at[0].provider, r->slots[r->default_slot].p->name,
                   sizeof r->default_route.at[0].provider);
    if (!(routes = runnable(r, routes, unset, nunset))) {
        th_router_free(r);
        return TH_E_NOMEM;
    }
    atomic_store(&r->routes, routes);
    size_t pos = 0;
    for (int i = 0; i < r->nslots; i++)
        pos += (size_t)snprintf(r->describe + pos, sizeof r->describe - pos, "%s%s", i ? "," : "",
                                r->slots[i].p->name);
    *out = r;
    return TH_E_OK;
}

th_err th_router_new(const struct th_config *cfg, const struct th_outbox_sink *outbox,
                     struct th_routes *routes, struct th_router **out, char *err, size_t errlen)
{
    struct th_router *r = router_alloc(cfg);
    if (!r) {
        th_routes_free(routes);
        return TH_E_NOMEM;
    }
    if (!routes && th_routes_new(&routes) != TH_E_OK) {
        th_router_free(r);
        return TH_E_NOMEM;
    }
    th_err e = add_provider(r, cfg->provider_name, NULL, outbox, err, errlen);
    /* Every provider a route names is set up now; one that cannot be is left out of the routes
     * (runnable, below) rather than failing the start: the default provider still serves. */
    struct unset unset[MAX_PROVIDERS + 1];
    int nunset = 0;
    for (size_t i = 0; e == TH_E_OK && i < th_routes_count(routes); i++) {
        const struct th_route *rt = th_routes_find_index(routes, i);
        for (int k = 0; k < rt->n; k++) {
            const char *name = rt->at[k].provider;
            bool known_unset = false;
            for (int u = 0; u < nunset; u++)
                known_unset = known_unset || strcmp(unset[u].name, name) == 0;
            char why[256];
            if (known_unset || add_provider(r, name, NULL, outbox, why, sizeof why) == TH_E_OK ||
                nunset == (int)TH_ARRAY_LEN(unset))
                continue;
            char prefix[32]; /* add_provider's "provider NAME: " is in the log line already */
            int pl = snprintf(prefix, sizeof prefix, "provider %s: ", name);
            th_strlcpy(unset[nunset].name, name, sizeof unset[nunset].name);
            th_strlcpy(unset[nunset].why, strncmp(why, prefix, (size_t)pl) == 0 ? why + pl : why,
                       sizeof unset[nunset].why);
            nunset++;
        }
    }
    /* Providers whose section is filled in are set up too, so a reloaded route can use them. */
    const struct th_provider_kind *k;
    for (size_t i = 0; e == TH_E_OK && (k = th_provider_kind_at(i)); i++)
        if (k->configured && k->configured(cfg))
            e = add_provider(r, k->name, NULL, outbox, err, errlen);
    if (e != TH_E_OK) {
        th_routes_free(routes);
        th_router_free(r);
        return e;
    }
    return router_finish(r, routes, unset, nunset, out);
}

th_err th_router_new_with(const struct th_config *cfg, struct th_provider *const *providers, int n,
                          struct th_routes *routes, struct th_router **out, char *err,
                          size_t errlen)
{
    struct th_router *r = router_alloc(cfg);
    th_err e = r ? TH_E_OK : TH_E_NOMEM;
    if (e == TH_E_OK && !routes && th_routes_new(&routes) != TH_E_OK)
        e = TH_E_NOMEM;
    for (int i = 0; i < n; i++) {
        if (e == TH_E_OK)
            e = add_provider(r, providers[i]->name, providers[i], NULL, err, errlen);
        else
            th_provider_free(providers[i]);
    }
    if (e == TH_E_OK && n == 0) {
        snprintf(err, errlen, "no provider");
        e = TH_E_CONFIG;
    }
    if (e != TH_E_OK) {
        th_routes_free(routes);
        th_router_free(r);
        return e;
    }
    return router_finish(r, routes, NULL, 0, out);
}

void th_router_free(struct th_router *r)
{
    if (!r)
        return;
    for (int i = 0; i < r->nslots; i++)
        th_provider_free(r->slots[i].p);
    th_routes_free(atomic_load(&r->routes));
    th_retired_release(&r->retired, NULL);
    pthread_mutex_destroy(&r->retired_mu);
    pthread_mutex_destroy(&r->health_mu);
    free(r);
}

static double circuit_open_now(void *ud)
{
    struct slot *s = ud;
    return breaker_open(s->r, s, th_mono_us()) ? 1 : 0;
}

static double failures_now(void *ud)
{
    return atomic_load(&((struct slot *)ud)->failures);
}

static double routes_skipped_now(void *ud)
{
    return atomic_load(&((struct th_router *)ud)->routes_skipped);
}

static double demoted_now(void *ud)
{
    struct slot *s = ud;
    struct th_router *r = (struct th_router *)s->r; /* the lock is the router's own */
    int si = (int)(s - r->slots), n = 0;
    pthread_mutex_lock(&r->health_mu);
    for (int i = 0; i < HEALTH_PAIRS; i++)
        n += r->health[i].slot == si && r->health[i].demoted;
    pthread_mutex_unlock(&r->health_mu);
    return n;
}

int th_router_health_demoted(struct th_router *r, const char *provider)
{
    int si = find_slot(r, provider);
    return si < 0 ? 0 : (int)demoted_now(&r->slots[si]);
}

struct th_provider *th_router_provider(struct th_router *r, const char *name)
{
    int si = find_slot(r, name);
    return si < 0 ? NULL : r->slots[si].p;
}

th_err th_router_metrics(struct th_router *r, struct th_metrics *m)
{
    static const char *const by_provider[] = {"provider", NULL};
    static const char *const by_result[] = {"provider", "result", NULL};
    struct th_metric_family *open, *fails, *att, *secs, *f;
    th_err e =
        th_metrics_family(m, "telehook_provider_circuit_open", "1 while the provider is skipped.",
                          TH_METRIC_GAUGE, by_provider, MAX_PROVIDERS, &open);
    if (e == TH_E_OK)
        e = th_metrics_family(m, "telehook_provider_consecutive_failures",
                              "Retryable failures of the provider in a row (the circuit opens at "
                              "dispatch.breaker_failures).",
                              TH_METRIC_GAUGE, by_provider, MAX_PROVIDERS, &fails);
    if (e == TH_E_OK)
        e = th_metrics_family(m, "telehook_provider_attempts_total",
                              "Attempts to send through the provider, by how they ended (ok, "
                              "retryable, permanent, timeout).",
                              TH_METRIC_COUNTER, by_result, MAX_PROVIDERS * ATTEMPT__COUNT, &att);
    if (e == TH_E_OK)
        e = th_metrics_family(m, "telehook_provider_attempt_seconds",
                              "Time from the start of an attempt to the provider's answer.",
                              TH_METRIC_HISTOGRAM, by_provider, MAX_PROVIDERS, &secs);
    for (int i = 0; e == TH_E_OK && i < r->nslots; i++) {
        struct slot *s = &r->slots[i];
        const char *const v[] = {s->p->name, NULL};
        e = th_metrics_fn(open, v, circuit_open_now, s);
        if (e == TH_E_OK)
            e = th_metrics_fn(fails, v, failures_now, s);
        for (int k = 0; e == TH_E_OK && k < ATTEMPT__COUNT; k++)
            e = th_metrics_counter(att, (const char *const[]){s->p->name, attempt_results[k], NULL},
                                   &s->attempts[k]);
        if (e == TH_E_OK)
            e = th_metrics_histogram(secs, v, &s->attempt_seconds);
    }
    struct th_metric_family *dem, *reo;
    if (e == TH_E_OK)
        e = th_metrics_family(m, "telehook_route_health_demoted",
                              "Countries for which the provider is moved behind the next one of "
                              "its routes now (delivered share of receipts under "
                              "routing.health_threshold).",
                              TH_METRIC_GAUGE, by_provider, MAX_PROVIDERS, &dem);
    if (e == TH_E_OK)
        e = th_metrics_family(m, "telehook_route_health_reorders_total",
                              "Sends whose route was run with this provider moved behind the "
                              "next one (route health).",
                              TH_METRIC_COUNTER, by_provider, MAX_PROVIDERS, &reo);
    for (int i = 0; e == TH_E_OK && i < r->nslots; i++) {
        const char *const v[] = {r->slots[i].p->name, NULL};
        e = th_metrics_fn(dem, v, demoted_now, &r->slots[i]);
        if (e == TH_E_OK)
            e = th_metrics_counter(reo, v, &r->reorders[i]);
    }
    if (e == TH_E_OK)
        e = th_metrics_family(m, "telehook_routes_skipped",
                              "Stored routes cut short or left out because a provider they name "
                              "is not set up.",
                              TH_METRIC_GAUGE, NULL, 1, &f);
    if (e == TH_E_OK)
        e = th_metrics_fn(f, NULL, routes_skipped_now, r);
    return e;
}

int th_router_circuits_open(struct th_router *r)
{
    int64_t now = th_mono_us();
    int n = 0;
    for (int i = 0; i < r->nslots; i++)
        n += breaker_open(r, &r->slots[i], now) ? 1 : 0;
    return n;
}

bool th_router_ready(const struct th_router *r)
{
    for (int i = 0; i < r->nslots; i++)
        if (!th_provider_ready(r->slots[i].p))
            return false;
    return true;
}

const char *th_router_describe(const struct th_router *r)
{
    return r->describe;
}

th_err th_router_swap_routes(struct th_router *r, struct th_routes *routes, char *err,
                             size_t errlen)
{
    if (!(routes = runnable(r, routes, NULL, 0))) {
        snprintf(err, errlen, "out of memory");
        return TH_E_NOMEM;
    }
    pthread_mutex_lock(&r->retired_mu);
    if (th_retired_reserve(&r->retired) != TH_E_OK) {
        pthread_mutex_unlock(&r->retired_mu);
        th_routes_free(routes);
        snprintf(err, errlen, "out of memory");
        return TH_E_NOMEM;
    }
    th_retired_add(&r->retired, atomic_exchange(&r->routes, routes));
    pthread_mutex_unlock(&r->retired_mu);
    return TH_E_OK;
}
