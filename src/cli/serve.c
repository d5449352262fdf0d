/* `telehook serve`: wires the modules together and runs until SIGTERM/SIGINT. */
#include <errno.h>
#include <pthread.h>
#include <signal.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "auth/auth.h"
#include "cli/internal.h"
#include "cli/receipts.h"
#include "common/retired.h"
#include "common/util.h"
#include "dlq/dlq.h"
#include "guard/conv.h"
#include "guard/guard.h"
#include "hook/hook.h"
#include "http/server.h"
#include "message/message.h"
#include "obs/emf.h"
#include "obs/log.h"
#include "obs/metrics.h"
#include "phone/phone.h"
#include "net/http.h"
#include "route/feedback.h"
#include "route/router.h"
#include "net/trust.h"
#include "store/store.h"
#include "store/writer.h"
#include "http/events.h"

#include <systemd/sd-daemon.h>

#define WRITER_QUEUE 65536
/* conversion blocks: how often a node sends its new blocks and reads the others' and the clears */
#define CONV_SYNC_MS 2000
/* The watcher's wake-up to the main thread: "the catalog changed in the store". */
#define CATALOG_SIGNAL SIGUSR1
/* A burst of changes (a `routes import`) within this window is one reload (ms). */
#define CATALOG_DEBOUNCE_MS 150
/* Retries of a lost listener connection: from the first to the longest pause (ms). */
#define LISTEN_RETRY_MIN_MS 250
#define LISTEN_RETRY_MAX_MS 5000

static th_err outbox_put(void *ud, const struct th_outbox_item *it,
                         const struct th_loop_reply *reply)
{
    struct th_outbox_row row = {
        .id = it->id,
        .created_ms = it->created_ms,
        .request_id = it->request_id,
        .to = it->to,
        .channel = it->channel,
        .language = it->language,
        .body = it->body,
        .voice_id = it->voice_id,
    };
    return th_writer_outbox_on(ud, &row, reply); /* completes on the sending loop */
}

struct th_outbox_sink th_cli_outbox_sink(struct th_writer *writer)
{
    return (struct th_outbox_sink){.put = outbox_put, .ud = writer};
}

/*
 * Where the conversion signals go (issue 23), on the store writer's thread: a verification (an
 * Okta event credited to a delivery this node sent) and a final delivery receipt. Each consumer
 * is O(1) and thread-safe: provider feedback queues, route health counts.
 */
struct conversion_sinks {
    struct th_feedback *feedback; /* NULL: [feedback] off */
    struct th_router *router;
    struct th_conv *conv; /* NULL: [conversion] off */
};

static void on_verified(void *ud, const struct th_verified *v)
{
    struct conversion_sinks *c = ud;
    struct th_logline l;
    if (th_log_begin(&l, TH_LOG_INFO, "verified")) {
        th_log_str(&l, "req", v->request_id);
        th_log_str(&l, "okta_event", v->event_id);
        th_log_str(&l, "provider", v->provider);
        th_log_str(&l, "channel", v->channel);
        th_log_str(&l, "country", v->country);
        th_log_int(&l, "after_ms", (long long)(v->verified_ms - v->sent_ms));
        th_log_end(&l);
    }
    th_feedback_verified(c->feedback, v->provider, v->transaction_id);
    if (c->conv) {
        struct th_conv_verification cv = {.prefix = v->prefix_hash,
                                          .phone = v->phone_hash,
                                          .country = v->country,
                                          .provider = v->provider,
                                          .channel = v->channel,
                                          .sent_ms = v->sent_ms,
                                          .verified_ms = v->verified_ms};
        th_conv_verified(c->conv, &cv);
    }
}

/* Route health learns from final receipts only: "sent" says nothing of the handset. */
static void on_receipt(void *ud, const struct th_receipt_applied *r)
{
    struct conversion_sinks *c = ud;
    if (r->final)
        th_router_health_receipt(c->router, r->provider, r->country, r->delivered);
}

/* The hook's sender and recorder: the router and the store writer. */
static void hook_send(void *ud, struct th_loop *loop, struct th_arena *arena,
                      const struct th_send *msg, th_route_done_fn done, void *done_ud)
{
    th_router_send(ud, loop, arena, msg, done, done_ud);
}

static th_err hook_delivery(void *ud, const struct th_delivery_row *row)
{
    return th_writer_delivery(ud, row);
}

static th_err hook_dlq(void *ud, const struct th_dlq_row *row, const struct th_loop_reply *reply)
{
    return th_writer_dlq_on(ud, row, reply);
}

static int write_port_file(const char *path, int port)
{
    char tmp[4096];
    if (snprintf(tmp, sizeof tmp, "%s.tmp", path) >= (int)sizeof tmp)
        return -1;
    FILE *f = fopen(tmp, "w");
    if (!f)
        return -1;
    fprintf(f, "%d\n", port);
    if (fclose(f) != 0)
        return -1;
    return rename(tmp, path); /* atomic: a reader never sees a half-written file */
}

static void sleep_ms(int ms)
{
    struct timespec ts = {.tv_sec = ms / 1000, .tv_nsec = (long)(ms % 1000) * 1000000L};
    while (nanosleep(&ts, &ts) != 0 && errno == EINTR) {
    }
}

/*
 * A reason the server cannot start. `serve` logs it (a JSON line); `config check` runs the same
 * start-up and prints it for a person, so the two can never disagree (like nginx -t).
 */
__attribute__((format(printf, 2, 3))) static void startup_error(const struct th_cli *cli,
                                                                const char *fmt, ...)
{
    char msg[1024];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    if (cli->check_only)
        fprintf(stderr, "telehook: %s\n", msg);
    else
        th_log_msg(TH_LOG_ERROR, "startup", "%s", msg);
}

/* What reloads replaced: kept until shutdown, since a request may still point into one. */
struct retired {
    struct th_retired sets;  /* struct th_templates */
    struct th_retired prefs; /* struct th_prefs */
};

static void free_templates(void *p)
{
    th_templates_free(p);
}

static void free_prefs(void *p)
{
    th_prefs_free(p);
}

/*
 * SIGHUP: re-reads the templates through the server's read connection (st); on any error the
 * running set stays.
 */
static void reload_templates(struct th_store *st, const struct th_config *cfg, struct th_hook *hook,
                             struct retired *old)
{
    char err[512];
    struct th_templates *set = NULL;
    if (th_retired_reserve(&old->sets) != TH_E_OK) {
        th_log_msg(TH_LOG_ERROR, "reload", "out of memory: templates not reloaded");
        return;
    }
    if (th_catalog_templates_load(st, cfg, false, &set, err, sizeof err) != TH_E_OK) {
        th_log_msg(TH_LOG_ERROR, "reload", "templates not reloaded, the running set stays: %s",
                   err);
        return;
    }
    th_retired_add(&old->sets, th_hook_swap_templates(hook, set));
    th_log_msg(TH_LOG_INFO, "reload", "templates reloaded: %zu", th_templates_count(set));
}

/* SIGHUP: re-reads the users' preferences; on any error the running map stays. */
static void reload_prefs(struct th_store *st, struct th_hook *hook, struct retired *old)
{
    char err[512];
    struct th_prefs *prefs = NULL;
    if (th_retired_reserve(&old->prefs) != TH_E_OK) {
        th_log_msg(TH_LOG_ERROR, "reload", "out of memory: preferences not reloaded");
        return;
    }
    if (th_catalog_prefs_load(st, &prefs, err, sizeof err) != TH_E_OK) {
        th_log_msg(TH_LOG_ERROR, "reload", "preferences not reloaded, the running ones stay: %s",
                   err);
        return;
    }
    th_retired_add(&old->prefs, th_hook_swap_prefs(hook, prefs));
    th_log_msg(TH_LOG_INFO, "reload", "preferences reloaded: %zu", th_prefs_count(prefs));
}

/* SIGHUP: re-reads the routes; on any error (or a route to a provider not set up) they stay. */
static void reload_routes(struct th_store *st, struct th_router *router)
{
    char err[512];
    struct th_routes *routes = NULL;
    if (th_catalog_routes_load(st, &routes, err, sizeof err) != TH_E_OK) {
        th_log_msg(TH_LOG_ERROR, "reload", "routes not reloaded, the running ones stay: %s", err);
        return;
    }
    size_t n = th_routes_count(routes);
    if (th_router_swap_routes(router, routes, err, sizeof err) != TH_E_OK) {
        th_log_msg(TH_LOG_ERROR, "reload", "routes not reloaded, the running ones stay: %s", err);
        return;
    }
    th_log_msg(TH_LOG_INFO, "reload", "routes reloaded: %zu", n);
}

struct changes {
    char applied[512], restart[2048];
    th_log_level log_level;
    bool level_changed;
};

static void add_name(char *list, size_t cap, const char *section, const char *key)
{
    size_t n = strlen(list);
    snprintf(list + n, cap - n, "%s%s.%s", n ? ", " : "", section, key);
}

static void on_change(void *ud, const char *section, const char *key)
{
    struct changes *c = ud;
    if (strcmp(section, "log") == 0 && strcmp(key, "level") == 0) {
        c->level_changed = true;
        add_name(c->applied, sizeof c->applied, section, key);
    } else {
        add_name(c->restart, sizeof c->restart, section, key);
    }
}

/*
 * SIGHUP: reads the configuration file (and environment) again and says exactly what it did.
 * What can change under running requests is applied — log.level; templates and routes come from
 * the store (below) — and every other changed key is named as waiting for a restart (its value
 * never: it may be a secret). A file that no longer loads changes nothing.
 */
static void reload_config(const struct th_cli *cli)
{
    struct th_config fresh;
    char err[1024];
    if (th_config_load(&fresh, cli->config_path, NULL, err, sizeof err) != TH_E_OK) {
        th_log_msg(TH_LOG_ERROR, "reload", "configuration not re-read, the running one stays: %s",
                   err);
        return;
    }
    struct changes c = {.log_level = fresh.log_level};
    th_config_each_change(&cli->cfg, &fresh, on_change, &c);
    if (c.level_changed)
        th_log_set_level(c.log_level);
    struct th_logline l;
    if (th_log_begin(&l, c.restart[0] ? TH_LOG_WARN : TH_LOG_INFO, "reload")) {
        th_log_str(&l, "msg",
                   c.restart[0] ? "configuration re-read: some changes wait for a restart"
                                : "configuration re-read");
        th_log_str(&l, "applied", c.applied[0] ? c.applied : "none");
        th_log_str(&l, "restart_needed", c.restart[0] ? c.restart : "none");
        th_log_end(&l);
    }
    th_config_release(&fresh);
}

/*
 * Change propagation (PostgreSQL): a thread of its own waits on the store's catalog
 * notifications (a blocking connection, never an event loop), gathers a burst into one, and
 * hands the changed tables to the main thread with CATALOG_SIGNAL, so the reload runs where
 * SIGHUP's does, on the read connection that only the main thread uses. After a lost
 * connection it retries with backoff, and once back it has every table reloaded: changes
 * made meanwhile sent notifications nobody heard.
 */
struct watcher {
    struct th_store_listener *listener; /* NULL: SQLite, SIGHUP only */
    pthread_t thread, main;
    bool started;
    atomic_bool stop;
    atomic_uint pending; /* TH_STORE_CHANGED_* bits the main thread has not reloaded yet */
};

static void *watch_catalog(void *arg)
{
    struct watcher *w = arg;
    unsigned got = 0;
    int64_t fire_at = 0;
    int retry_ms = 0;
    while (!atomic_load(&w->stop)) {
        int64_t now = th_mono_us() / 1000;
        int timeout = got ? (int)(fire_at > now ? fire_at - now : 0) : 1000;
        unsigned changed = 0;
        char err[512];
        if (th_store_wait_change(w->listener, timeout, &changed, err, sizeof err) != TH_E_OK) {
            retry_ms = retry_ms ? retry_ms * 2 : LISTEN_RETRY_MIN_MS;
            if (retry_ms > LISTEN_RETRY_MAX_MS)
                retry_ms = LISTEN_RETRY_MAX_MS;
            if (!atomic_load(&w->stop))
                th_log_msg(TH_LOG_WARN, "catalog_listen",
                           "%s; changes on other nodes wait until it is back (retry in %d ms)", err,
                           retry_ms);
            for (int slept = 0; slept < retry_ms && !atomic_load(&w->stop); slept += 50)
                sleep_ms(50);
            continue;
        }
        if (changed & TH_STORE_RECONNECTED) {
            th_log_msg(TH_LOG_INFO, "catalog_listen",
                       "listening for catalog changes again; reloading everything once, since "
                       "changes made meanwhile were not heard");
            retry_ms = 0;
        }
        if (changed && !got)
            fire_at = th_mono_us() / 1000 + CATALOG_DEBOUNCE_MS;
        got |= changed;
        if (got && th_mono_us() / 1000 >= fire_at) {
            atomic_fetch_or(&w->pending, got);
            pthread_kill(w->main, CATALOG_SIGNAL);
            got = 0;
        }
    }
    return NULL;
}

static void watch_stop(struct watcher *w)
{
    if (w->started) {
        atomic_store(&w->stop, true);
        th_store_listener_interrupt(w->listener);
        pthread_join(w->thread, NULL);
        w->started = false;
    }
    th_store_listener_close(w->listener);
    w->listener = NULL;
}

/* CATALOG_SIGNAL: reloads what the watcher says changed, through SIGHUP's functions. */
static void reload_changed(struct th_store *st, const struct th_config *cfg, struct th_hook *hook,
                           struct th_router *router, struct retired *old, struct watcher *w)
{
    unsigned bits = w ? atomic_exchange(&w->pending, 0u) : 0;
    if (!(bits & TH_STORE_CHANGED_ALL))
        return; /* a stray SIGUSR1 */
    char what[64];
    snprintf(what, sizeof what, "%s%s%s", bits & TH_STORE_CHANGED_TEMPLATES ? "templates " : "",
             bits & TH_STORE_CHANGED_PREFS ? "prefs " : "",
             bits & TH_STORE_CHANGED_ROUTES ? "routes " : "");
    what[strlen(what) - 1] = '\0'; /* the last space; one bit at least is set */
    struct th_logline l;
    if (th_log_begin(&l, TH_LOG_INFO, "reload")) {
        th_log_str(&l, "msg", "catalog changed in the store: reloading");
        th_log_str(&l, "cause", bits & TH_STORE_RECONNECTED ? "listener reconnected" : "notify");
        th_log_str(&l, "tables", what);
        th_log_end(&l);
    }
    if (bits & TH_STORE_CHANGED_TEMPLATES)
        reload_templates(st, cfg, hook, old);
    if (bits & TH_STORE_CHANGED_PREFS)
        reload_prefs(st, hook, old);
    if (bits & TH_STORE_CHANGED_ROUTES)
        reload_routes(st, router);
}

/* log.emf: CloudWatch metrics lines, written by this (the main) thread between signals. */
struct emf;
static void emf_tick(struct emf *m);
static int64_t emf_due(const struct emf *m); /* monotonic us of the next line; INT64_MAX: off */

/*
 * Waits for SIGTERM or SIGINT; SIGHUP reloads meanwhile: the configuration (what can change
 * safely, the rest named), then templates, preferences and routes; CATALOG_SIGNAL (PostgreSQL:
 * the watcher) reloads the tables changed on another node. Under systemd (Type=notify) the
 * reload is announced as RELOADING=1 ... READY=1, as sd_notify(3) describes.
 */
static int wait_for_signal(const struct th_cli *cli, const sigset_t *set, struct th_store *st,
                           struct th_hook *hook, struct th_router *router, struct retired *old,
                           struct th_server *server, struct emf *emf, struct watcher *w)
{
    /*
     * systemd's watchdog (WatchdogSec; WATCHDOG_USEC in the environment): every half period,
     * WATCHDOG=1 — but only when every event loop ran the probe the previous tick posted to it,
     * so a loop stuck in a callback or deadlocked gets the service restarted, not kept alive by
     * a healthy main thread.
     */
    uint64_t wd_usec = 0;
    bool watchdog = sd_watchdog_enabled(0, &wd_usec) > 0 && wd_usec > 0;
    int64_t next = th_mono_us();
    bool warned = false;
    for (;;) {
        if (th_mono_us() >= emf_due(emf))
            emf_tick(emf);
        if (watchdog && th_mono_us() >= next) {
            int late = th_server_ping(server);
            if (late < 0) {
                sd_notify(0, "WATCHDOG=1");
                warned = false;
            } else if (!warned) {
                th_log_msg(TH_LOG_ERROR, "watchdog",
                           "event loop %d has not run for half the watchdog period: systemd's "
                           "watchdog is no longer fed",
                           late);
                warned = true;
            }
            next = th_mono_us() + (int64_t)(wd_usec / 2);
        }
        bool timed = watchdog || emf_due(emf) != INT64_MAX;
        int64_t wake = watchdog && next < emf_due(emf) ? next : emf_due(emf);
        int64_t left = wake - th_mono_us();
        if (left < 0)
            left = 0;
        struct timespec tick = {.tv_sec = (time_t)(left / 1000000),
                                .tv_nsec = (long)(left % 1000000) * 1000};
        int sig = timed ? sigtimedwait(set, NULL, &tick) : sigwaitinfo(set, NULL);
        if (sig < 0)
            continue; /* the tick (EAGAIN) or EINTR */
        if (sig == SIGTERM || sig == SIGINT)
            return sig;
        if (sig == CATALOG_SIGNAL)
            reload_changed(st, &cli->cfg, hook, router, old, w);
        if (sig == SIGHUP) {
            sd_notifyf(0, "RELOADING=1\nMONOTONIC_USEC=%llu", (unsigned long long)th_mono_us());
            reload_config(cli);
            reload_templates(st, &cli->cfg, hook, old);
            reload_prefs(st, hook, old);
            reload_routes(st, router);
            th_server_reload_tls(server);
            sd_notify(0, "READY=1\nSTATUS=serving (reloaded)");
        }
    }
}

/* What /metrics samples from modules that keep their own counts (auth, guard, store writer). */
enum sampled {
    S_VERIFIED,
    S_CACHE_HITS,
    S_TOKENS_REFUSED,
    S_KEY_FETCHES,
    S_ROWS_WRITTEN,
    S_ROWS_FAILED,
    S_ROWS_DROPPED,
    S_STORE_QUEUE,
    S_DLQ_DEPTH,
    S_SPOOLED,
    S_SPOOL_FLUSHED,
    S_SPOOL_DROPPED,
    S_STORE_UP,
    S_GUARD_ENTRIES,
    S_DEDUPE_RECORDS,
    S_DEDUPE_WAITERS,
    S_GUARD_BYTES, /* then + 1, + 2: th_guard_memory's tables, + 3 the conversion tracker's */
    S_GUARD_DECISIONS = S_GUARD_BYTES + 4, /* the shared guard state's (several nodes) */
    S_GUARD_FALLBACKS,
    S_GUARD_REFUSED,
    S_GUARD_CONNECTIONS,
    S_BLOCKS, /* then one per th_block: th_guard_counts' order */
    S__COUNT = S_BLOCKS + TH_BLOCK__COUNT
};

struct readiness;
struct sample_ref {
    struct readiness *r;
    int what;
};

struct readiness {
    struct th_router *router;
    struct th_auth *auth;
    struct th_hook *hook;
    struct th_guard *guard;
    struct th_conv *conv;      /* NULL: none */
    pthread_mutex_t writer_mu; /* the writer is stopped while the loops still answer /metrics */
    struct th_writer *writer;  /* NULL once stopped */
    struct th_metrics *metrics;
    struct sample_ref refs[S__COUNT];
};

static double guard_cap(void *ud)
{
    return ((const struct th_config *)ud)->guard_max_entries;
}

/* GET /metrics: every family the modules registered, in Prometheus text format. */
static void all_metrics(void *ud, struct th_buf *out)
{
    const struct readiness *r = ud;
    th_metrics_render(r->metrics, out);
}

static double sampled(void *ud)
{
    const struct sample_ref *ref = ud;
    struct readiness *r = ref->r;
    if (ref->what >= S_BLOCKS) {
        uint64_t b[TH_BLOCK__COUNT];
        th_guard_counts(r->guard, b);
        return (double)b[ref->what - S_BLOCKS];
    }
    if (ref->what == S_GUARD_ENTRIES)
        return (double)th_guard_entries(r->guard);
    if (ref->what == S_DEDUPE_RECORDS || ref->what == S_DEDUPE_WAITERS) {
        size_t recs, waits;
        th_guard_dedupe_sizes(r->guard, &recs, &waits);
        return (double)(ref->what == S_DEDUPE_RECORDS ? recs : waits);
    }
    if (ref->what >= S_GUARD_BYTES && ref->what < S_GUARD_DECISIONS) {
        struct th_guard_memory m;
        th_guard_memory(r->guard, &m);
        struct th_conv_stats cs;
        th_conv_stats(r->conv, &cs);
        size_t v[] = {m.people_bytes, m.dedupe_bytes, m.record_bytes, cs.bytes};
        return (double)v[ref->what - S_GUARD_BYTES];
    }
    if (ref->what >= S_GUARD_DECISIONS) {
        struct th_guard_db_stats gs;
        th_guard_db_stats(r->guard, &gs);
        double v[] = {(double)gs.decisions, (double)gs.fallbacks, (double)gs.refused,
                      (double)gs.connections};
        return v[ref->what - S_GUARD_DECISIONS];
    }
    if (ref->what <= S_KEY_FETCHES) {
        struct th_auth_stats as;
        th_auth_stats(r->auth, &as);
        uint64_t v[] = {as.verified, as.cache_hits, as.refused, as.key_fetches};
        return (double)v[ref->what - S_VERIFIED];
    }
    struct th_writer_stats ws = {0};
    pthread_mutex_lock(&r->writer_mu);
    if (r->writer)
        th_writer_stats(r->writer, &ws);
    pthread_mutex_unlock(&r->writer_mu);
    unsigned long long v[] = {ws.written,
                              ws.failed,
                              ws.rejected_full,
                              ws.queued,
                              (unsigned long long)ws.dlq_depth,
                              ws.spooled,
                              ws.spool_flushed,
                              ws.spool_dropped,
                              (unsigned)ws.store_up};
    return (double)v[ref->what - S_ROWS_WRITTEN];
}

static th_err sampled_family(struct readiness *r, const char *name, const char *help,
                             th_metric_type type, int what)
{
    struct th_metric_family *f;
    th_err e = th_metrics_family(r->metrics, name, help, type, NULL, 1, &f);
    r->refs[what] = (struct sample_ref){r, what};
    return e != TH_E_OK ? e : th_metrics_fn(f, NULL, sampled, &r->refs[what]);
}

/* Every metric but the HTTP front's (registered once the server exists). */
static th_err register_metrics(struct readiness *r, const struct th_config *cfg)
{
    static const struct {
        const char *name, *help;
        th_metric_type type;
        int what;
    } fixed[] = {
        {"telehook_tokens_verified_total",
         "Bearer tokens whose signature was checked and accepted.", TH_METRIC_COUNTER, S_VERIFIED},
        {"telehook_token_cache_hits_total", "Requests accepted from the verified-token cache.",
         TH_METRIC_COUNTER, S_CACHE_HITS},
        {"telehook_tokens_refused_total", "Bearer tokens refused.", TH_METRIC_COUNTER,
         S_TOKENS_REFUSED},
        {"telehook_key_fetches_total", "Fetches of the issuer's signing keys.", TH_METRIC_COUNTER,
         S_KEY_FETCHES},
        {"telehook_duplicates_total", "Duplicate requests answered with the first one's answer.",
         TH_METRIC_COUNTER, S_BLOCKS + TH_BLOCK_NONE},
        {"telehook_store_rows_written_total", "Rows the store writer committed.", TH_METRIC_COUNTER,
         S_ROWS_WRITTEN},
        {"telehook_store_rows_failed_total", "Rows the store refused.", TH_METRIC_COUNTER,
         S_ROWS_FAILED},
        {"telehook_store_rows_dropped_total",
         "Rows dropped because the store writer's queue was full.", TH_METRIC_COUNTER,
         S_ROWS_DROPPED},
        {"telehook_store_queue", "Rows waiting for the store writer.", TH_METRIC_GAUGE,
         S_STORE_QUEUE},
        {"telehook_dlq_depth",
         "Dead-letter entries the store holds (counted again at most every dlq.depth_refresh "
         "seconds).",
         TH_METRIC_GAUGE, S_DLQ_DEPTH},
        {"telehook_store_spooled",
         "Rows kept in the local spool while the shared store is out of reach.", TH_METRIC_GAUGE,
         S_SPOOLED},
        {"telehook_store_spool_flushed_total", "Spooled rows handed over to the store.",
         TH_METRIC_COUNTER, S_SPOOL_FLUSHED},
        {"telehook_store_spool_dropped_total",
         "Rows dropped because the spool was full (delivery records first).", TH_METRIC_COUNTER,
         S_SPOOL_DROPPED},
        {"telehook_store_up", "1 while the store is in reach (its last round trip succeeded).",
         TH_METRIC_GAUGE, S_STORE_UP},
        {"telehook_guard_entries",
         "Entries held in the abuse controls' per-person rate tables (capped at "
         "guard.max_entries).",
         TH_METRIC_GAUGE, S_GUARD_ENTRIES},
        {"telehook_guard_dedupe_records",
         "Requests the duplicate check remembers (answered within their window, or in flight).",
         TH_METRIC_GAUGE, S_DEDUPE_RECORDS},
        {"telehook_guard_dedupe_waiters", "Duplicate requests waiting for the first one's answer.",
         TH_METRIC_GAUGE, S_DEDUPE_WAITERS},
        {"telehook_guard_db_decisions_total",
         "Requests decided by the shared guard state on PostgreSQL (one round trip each).",
         TH_METRIC_COUNTER, S_GUARD_DECISIONS},
        {"telehook_guard_db_fallbacks_total",
         "Requests decided by this node's in-memory guard because the shared state did not "
         "answer in time (store.unavailable = open).",
         TH_METRIC_COUNTER, S_GUARD_FALLBACKS},
        {"telehook_guard_db_refused_total",
         "Requests answered with Okta's error object because the shared guard state did not "
         "answer in time (store.unavailable = closed).",
         TH_METRIC_COUNTER, S_GUARD_REFUSED},
        {"telehook_guard_db_connections",
         "Connections to the shared guard state ready now, over every event loop.", TH_METRIC_GAUGE,
         S_GUARD_CONNECTIONS},
    };
    th_err e = th_hook_metrics(r->hook, r->metrics);
    if (e == TH_E_OK)
        e = th_router_metrics(r->router, r->metrics);
    for (size_t i = 0; e == TH_E_OK && i < TH_ARRAY_LEN(fixed); i++)
        e = sampled_family(r, fixed[i].name, fixed[i].help, fixed[i].type, fixed[i].what);
    struct th_metric_family *f;
    static const char *const by_reason[] = {"reason", NULL};
    if (e == TH_E_OK)
        e = th_metrics_family(r->metrics, "telehook_blocked_total",
                              "Requests refused by the abuse controls, by rule.", TH_METRIC_COUNTER,
                              by_reason, TH_BLOCK__COUNT, &f);
    for (int i = 1; e == TH_E_OK && i < TH_BLOCK__COUNT; i++) {
        r->refs[S_BLOCKS + i] = (struct sample_ref){r, S_BLOCKS + i};
        e = th_metrics_fn(f, (const char *const[]){th_block_name((th_block)i), NULL}, sampled,
                          &r->refs[S_BLOCKS + i]);
    }
    static const char *const by_table[] = {"table", NULL};
    static const char *const tables[] = {"people", "dedupe", "records", "conversion"};
    if (e == TH_E_OK)
        e = th_metrics_family(r->metrics, "telehook_guard_bytes",
                              "Bytes of the abuse controls' in-memory state: the per-person rate "
                              "table and the dedupe table (allocated at start), the dedupe records "
                              "with their answers (as they come and go), the conversion tracker's "
                              "tables (allocated at start).",
                              TH_METRIC_GAUGE, by_table, 4, &f);
    for (int i = 0; e == TH_E_OK && i < 4; i++) {
        r->refs[S_GUARD_BYTES + i] = (struct sample_ref){r, S_GUARD_BYTES + i};
        e = th_metrics_fn(f, (const char *const[]){tables[i], NULL}, sampled,
                          &r->refs[S_GUARD_BYTES + i]);
    }
    if (e == TH_E_OK)
        e = th_metrics_family(r->metrics, "telehook_guard_max_entries",
                              "guard.max_entries: the cap of the per-person rate tables.",
                              TH_METRIC_GAUGE, NULL, 1, &f);
    if (e == TH_E_OK)
        e = th_metrics_fn(f, NULL, guard_cap, (void *)cfg);
    if (e == TH_E_OK)
        e = th_metrics_add_build_info(r->metrics, TH_VERSION);
    if (e == TH_E_OK && cfg->process_metrics)
        e = th_metrics_add_process(r->metrics);
    return e;
}

/*
 * log.emf: every log.emf_interval seconds one EMF line with what happened in the interval —
 * requests by outcome, mean answer time, duplicates, blocks by reason, tokens refused, open
 * circuits, store rows dropped or failed. Names come from fixed lists (outcomes, block reasons):
 * never a number, a code or an id. The counters at the last line are kept to report deltas.
 */
#define EMF_MAX 32
struct emf {
    const struct th_config *cfg;
    struct readiness *r; /* NULL: off */
    struct th_emf_value v[EMF_MAX];
    char names[EMF_MAX][48];
    size_t n;
    int64_t due_us;
};

static void emf_put(struct emf *m, const char *name, th_emf_kind kind, uint64_t after,
                    uint64_t n_after)
{
    if (m->n >= EMF_MAX)
        return;
    struct th_emf_value *v = &m->v[m->n];
    th_strlcpy(m->names[m->n], name, sizeof m->names[m->n]);
    v->name = m->names[m->n++];
    v->kind = kind;
    v->after = after;
    v->n_after = n_after;
}

/* Fills every value's `after` with the counters now (the list is rebuilt, `before` kept). */
static void emf_snapshot(struct emf *m)
{
    struct readiness *r = m->r;
    char name[64];
    m->n = 0;
    struct th_hook_counts hc;
    th_hook_counts(r->hook, &hc);
    for (size_t i = 0; th_hook_outcome_name(i); i++) {
        snprintf(name, sizeof name, "Requests.%s", th_hook_outcome_name(i));
        emf_put(m, name, TH_EMF_COUNT, hc.by_outcome[i], 0);
    }
    emf_put(m, "AnswerTime", TH_EMF_MEAN_MS, hc.latency_sum_us, hc.answered);
    uint64_t b[TH_BLOCK__COUNT];
    th_guard_counts(r->guard, b);
    emf_put(m, "Duplicates", TH_EMF_COUNT, b[TH_BLOCK_NONE], 0);
    for (int i = 1; i < TH_BLOCK__COUNT; i++) {
        snprintf(name, sizeof name, "Blocked.%s", th_block_name((th_block)i));
        emf_put(m, name, TH_EMF_COUNT, b[i], 0);
    }
    struct th_auth_stats as;
    th_auth_stats(r->auth, &as);
    emf_put(m, "TokensRefused", TH_EMF_COUNT, as.refused, 0);
    emf_put(m, "ProvidersCircuitOpen", TH_EMF_GAUGE, (uint64_t)th_router_circuits_open(r->router),
            0);
    struct th_writer_stats ws = {0};
    pthread_mutex_lock(&r->writer_mu);
    if (r->writer)
        th_writer_stats(r->writer, &ws);
    pthread_mutex_unlock(&r->writer_mu);
    emf_put(m, "StoreRowsDropped", TH_EMF_COUNT, ws.rejected_full, 0);
    emf_put(m, "StoreRowsFailed", TH_EMF_COUNT, ws.failed, 0);
}

static void emf_start(struct emf *m, const struct th_config *cfg, struct readiness *r)
{
    *m = (struct emf){.cfg = cfg, .r = cfg->log_emf ? r : NULL};
    if (!m->r)
        return;
    emf_snapshot(m);
    for (size_t i = 0; i < m->n; i++) {
        m->v[i].before = m->v[i].after;
        m->v[i].n_before = m->v[i].n_after;
    }
    m->due_us = th_mono_us() + (int64_t)cfg->log_emf_interval * 1000000;
}

static int64_t emf_due(const struct emf *m)
{
    return m && m->r ? m->due_us : INT64_MAX;
}

/* Writes the line for the interval now ending (also at shutdown: the last partial interval). */
static void emf_tick(struct emf *m)
{
    if (!m || !m->r)
        return;
    emf_snapshot(m);
    struct th_buf b;
    th_buf_init(&b, 256 * 1024);
    if (th_emf_build(&b, m->cfg->log_emf_namespace, th_wall_ms(), m->v, m->n) == TH_E_OK)
        th_log_raw(b.data, b.len);
    else
        th_log_msg(TH_LOG_WARN, "metrics", "EMF metrics line not written (too large)");
    th_buf_release(&b);
    for (size_t i = 0; i < m->n; i++) {
        m->v[i].before = m->v[i].after;
        m->v[i].n_before = m->v[i].n_after;
    }
    /* the next line an interval from now: a late tick (a long SIGHUP) never makes a burst */
    m->due_us = th_mono_us() + (int64_t)m->cfg->log_emf_interval * 1000000;
}

/*
 * Each event loop's connections to the shared guard state, opened before it takes requests; the
 * first loop also drains the provider feedback queue (a few calls at a time, off every hook's
 * path: it only shares the loop).
 */
struct loops_start {
    struct th_guard *guard;
    struct th_feedback *feedback;
    bool feedback_started;
};

static void guard_loop_start(void *ud, struct th_loop *loop)
{
    struct loops_start *ls = ud;
    if (th_guard_attach(ls->guard, loop) != TH_E_OK)
        th_log_msg(TH_LOG_WARN, "guard", "a loop's guard connections wait for its first request");
    if (ls->feedback && !ls->feedback_started) {
        ls->feedback_started = true;
        if (th_feedback_start(ls->feedback, loop) != TH_E_OK)
            th_log_msg(TH_LOG_ERROR, "feedback", "cannot start the provider feedback queue");
    }
}

/*
 * Ready when every provider can send, the issuer's keys (oauth2) are held, the store is in reach
 * (its writer's last round trip succeeded: PostgreSQL) and every loop's connections to the
 * shared guard state can decide (th_guard_ready); each one missing is named.
 */
static bool all_ready(void *ud, const char *missing[], size_t *n)
{
    struct readiness *r = ud;
    *n = 0;
    if (!th_router_ready(r->router))
        missing[(*n)++] = "providers";
    if (!th_auth_ready(r->auth))
        missing[(*n)++] = "issuer_keys";
    pthread_mutex_lock(&r->writer_mu);
    if (r->writer && !th_writer_store_ready(r->writer))
        missing[(*n)++] = "store";
    pthread_mutex_unlock(&r->writer_mu);
    if (!th_guard_ready(r->guard))
        missing[(*n)++] = "guard_store";
    return *n == 0;
}

int th_cmd_serve(struct th_cli *cli)
{
    th_err e;
    int rc = 1;
    char err[512];
    struct th_store *store = NULL;  /* reads: start-up, then every SIGHUP (this thread only) */
    struct th_store *wstore = NULL; /* the writer's */
    struct th_templates *templates = NULL;
    struct th_prefs *prefs = NULL;
    struct th_writer *writer = NULL;
    struct th_events *events = NULL; /* [events] enabled: Okta's event hook */
    struct th_router *router = NULL;
    struct th_feedback *feedback = NULL; /* [feedback] enabled: verified messages reported */
    struct th_guard *guard = NULL;
    struct th_dlq *dlq = NULL;
    struct th_conv *conv = NULL;
    struct th_conv_sync *conv_sync = NULL;
    struct th_routes *routes = NULL;
    struct th_auth *auth = NULL;
    struct th_hook *hook = NULL;
    struct th_server *server = NULL;
    struct th_metrics *metrics = NULL;   /* bound to the modules' counters: freed after them */
    struct th_receipts *receipts = NULL; /* delivery receipt routes (cli/receipts.h) */
    struct th_side_route side[4];        /* the events route and at most 3 receipt routes */
    size_t nside = 0;
    struct retired retired = {.sets.free_fn = free_templates, .prefs.free_fn = free_prefs};
    struct th_tls_creds *tls = NULL; /* until the server takes it */
    struct watcher watch = {.main = pthread_self()};
    const struct th_config *cfg = &cli->cfg;
    int64_t t0 = th_mono_us();

    /* Signals are taken synchronously by this thread; workers inherit the blocked mask. */
    sigset_t set;
    sigemptyset(&set);
    sigaddset(&set, SIGTERM);
    sigaddset(&set, SIGINT);
    sigaddset(&set, SIGHUP);
    pthread_sigmask(SIG_BLOCK, &set, NULL);
    signal(SIGPIPE, SIG_IGN);

    th_phone_init();
    if (th_http_global_init() != TH_E_OK) {
        startup_error(cli, "cannot initialise libcurl");
        return 1;
    }
    if (th_trust_set_default(cfg->tls_ca_file, cfg->tls_ca_path, err, sizeof err) != TH_E_OK) {
        th_log_msg(TH_LOG_ERROR, "startup", "%s", err);
        goto out;
    }
    if (th_store_open(cfg->store_url, &store, err, sizeof err) != TH_E_OK) {
        startup_error(cli, "store: %s", err);
        goto out;
    }
    /*
     * Listening before the catalog is read: a change committed between the read and the
     * watcher's start is then heard, not missed (it only costs one reload more).
     */
    if (!cli->check_only) {
        e = th_store_listen(cfg->store_url, &watch.listener, err, sizeof err);
        if (e == TH_E_INVAL) {
            watch.listener = NULL; /* SQLite: one node, SIGHUP reloads */
        } else if (e != TH_E_OK) {
            startup_error(cli, "store: %s", err);
            goto out;
        } else { /* taken by this thread only; no other thread exists yet to inherit less */
            sigaddset(&set, CATALOG_SIGNAL);
            pthread_sigmask(SIG_BLOCK, &set, NULL);
        }
    }
    if (th_catalog_templates_load(store, cfg, false, &templates, err, sizeof err) != TH_E_OK) {
        startup_error(cli, "templates: %s", err);
        goto out;
    }
    if (th_catalog_prefs_load(store, &prefs, err, sizeof err) != TH_E_OK) {
        startup_error(cli, "preferences: %s", err);
        goto out;
    }
    if (th_catalog_routes_load(store, &routes, err, sizeof err) != TH_E_OK) {
        startup_error(cli, "routes: %s", err);
        goto out;
    }
    /* the indexes conversion tracking needs, once it is turned on (store.h: they cost every
     * record an insert, so an install without the feature does not pay for them) */
    unsigned indexes = (cfg->events_enabled ? TH_STORE_INDEX_VERIFY : 0u) |
                       (cfg->receipts_twilio_status_url[0] || cfg->receipts_sns_topic_arns[0] ||
                                cfg->receipts_eventbridge_secret[0]
                            ? TH_STORE_INDEX_RECEIPTS
                            : 0u);
    if (indexes && !cli->check_only) {
        int64_t built_from = th_mono_us();
        if (th_store_ensure_indexes(store, indexes, err, sizeof err) != TH_E_OK) {
            startup_error(cli, "store: the conversion tracking index: %s", err);
            goto out;
        }
        if (th_mono_us() - built_from > 1000000)
            th_log_msg(TH_LOG_INFO, "store", "conversion tracking's indexes built in %lld ms",
                       (long long)((th_mono_us() - built_from) / 1000));
    }
    const char *store_desc = th_store_describe(store);
    char store_copy[512];
    th_strlcpy(store_copy, store_desc, sizeof store_copy);
    if (th_store_open(cfg->store_url, &wstore, err, sizeof err) != TH_E_OK) {
        startup_error(cli, "store: %s", err);
        goto out;
    }
    struct th_writer_opts wopts = {.max_queue = WRITER_QUEUE,
                                   .spool_path = cfg->store_spool,
                                   .spool_max = (size_t)cfg->store_spool_max};
    if (th_writer_start_opts(wstore, &wopts, &writer) != TH_E_OK) {
        startup_error(cli, "cannot start the store writer");
        goto out;
    }
    wstore = NULL; /* owned by the writer now */
    th_writer_set_dlq_refresh(writer, (int64_t)cfg->dlq_depth_refresh * 1000);
    size_t nroutes = th_routes_count(routes);
    struct th_outbox_sink outbox = th_cli_outbox_sink(writer);
    e = th_router_new(cfg, &outbox, routes, &router, err, sizeof err);
    routes = NULL; /* owned by the router, even on failure */
    if (e != TH_E_OK) {
        startup_error(cli, "%s", err);
        goto out;
    }
    if (th_auth_new(cfg, &auth, err, sizeof err) != TH_E_OK) {
        startup_error(cli, "authentication: %s", err);
        goto out;
    }
    if (th_guard_new(cfg, &guard, err, sizeof err) != TH_E_OK) {
        startup_error(cli, "[guard] %s", err);
        goto out;
    }
    if (th_dlq_new(cfg, &dlq, err, sizeof err) != TH_E_OK) {
        startup_error(cli, "%s", err);
        goto out;
    }
    /* conversion blocks: off, or without guard.secret (no prefix keys: monitor has nothing to
     * count; enforce is refused by the configuration check) */
    if (cfg->conversion_mode != 0 && cfg->guard_secret[0]) {
        struct th_conv_settings cs;
        th_conv_settings_from(cfg, &cs);
        if (th_conv_new(&cs, &conv) != TH_E_OK) {
            startup_error(cli, "[conversion] out of memory");
            goto out;
        }
    }
    if (cfg->tls_cert[0]) { /* HTTPS: the pair is checked here, so config check does too */
        char warn[1024];
        if (th_tls_creds_load(cfg->tls_cert, cfg->tls_key, (int64_t)time(NULL), &tls, warn,
                              sizeof warn, err, sizeof err) != TH_E_OK) {
            startup_error(cli, "%s", err);
            goto out;
        }
        if (warn[0] && cli->check_only)
            fprintf(stderr, "telehook: warning: %s\n", warn);
        else if (warn[0])
            th_log_msg(TH_LOG_WARN, "tls", "%s", warn);
    }
    if (cli->check_only) {
        if (tls) {
            char when[64];
            time_t na = (time_t)th_tls_creds_not_after(tls);
            struct tm tm;
            strftime(when, sizeof when, "%Y-%m-%dT%H:%M:%SZ", gmtime_r(&na, &tm));
            fprintf(stderr, "HTTPS: certificate for %s, valid until %s\n", th_tls_creds_names(tls),
                    when);
        }
        /* Everything serve builds before it listens was built: the configuration holds. */
        rc = th_cli_print_config(cli) == 0 ? 0 : 1;
        if (cfg->conversion_mode != 0 && !conv)
            fprintf(stderr, "telehook: note: [conversion] needs [guard] secret: conversion is "
                            "not tracked\n");
        else if (cfg->conversion_mode == 2 && cfg->conversion_require_signal)
            fprintf(stderr, "telehook: note: [conversion] mode = enforce refuses only once a "
                            "verification has been seen (the Okta event hook delivers); until "
                            "then blocks are logged as monitor\n");
        fprintf(stderr,
                "configuration OK (%s): store %s, providers %s, %zu routes, %zu templates, %zu "
                "preferences\n",
                cli->config_path ? cli->config_path : "defaults", store_copy,
                th_router_describe(router), nroutes, th_templates_count(templates),
                th_prefs_count(prefs));
        goto out;
    }
    if (th_dlq_enabled(dlq) && !th_dlq_can_seal(dlq))
        th_log_msg(TH_LOG_WARN, "dlq_no_key",
                   "no [dlq] key: undelivered requests are kept without their message, so they "
                   "cannot be replayed (`telehook dlq keygen` makes a key)");
    th_writer_set_retention(writer, cfg->dlq_retention_days, cfg->store_deliveries_retention_days,
                            cfg->store_outbox_retention_days);
    th_catalog_log_startup(cfg, templates, prefs);
    struct th_hook_deps hd = {
        .cfg = cfg,
        .templates = templates,
        .prefs = prefs,
        .sender = {.send = hook_send, .ud = router},
        .recorder = {.delivery = hook_delivery, .dlq = hook_dlq, .ud = writer},
        .guard = guard,
        .dlq = dlq,
        .conv = conv};
    if (th_hook_new(&hd, &hook) != TH_E_OK)
        goto out;
    if (th_metrics_new(&metrics) != TH_E_OK)
        goto out;
    struct readiness ready = {.router = router,
                              .auth = auth,
                              .hook = hook,
                              .guard = guard,
                              .conv = conv,
                              .writer = writer,
                              .metrics = metrics};
    pthread_mutex_init(&ready.writer_mu, NULL);
    if (register_metrics(&ready, cfg) != TH_E_OK ||
        (conv && th_conv_metrics(conv, metrics) != TH_E_OK)) {
        startup_error(cli, "cannot register the metrics");
        goto out;
    }
    if (th_feedback_new(cfg, router, &feedback) != TH_E_OK ||
        th_feedback_metrics(feedback, metrics) != TH_E_OK) {
        startup_error(cli, "cannot start the provider feedback queue");
        goto out;
    }
    struct conversion_sinks sinks = {.feedback = feedback, .router = router, .conv = conv};
    struct loops_start loops = {.guard = guard, .feedback = feedback};
    if (cfg->events_enabled) {
        th_writer_on_verified(writer, th_node_id(), on_verified, &sinks);
        if (th_events_new(cfg, writer, &events) != TH_E_OK ||
            th_events_metrics(events, metrics) != TH_E_OK) {
            startup_error(cli, "cannot start the event hook endpoint");
            goto out;
        }
        side[nside++] = *th_events_route(events);
    }
    if (th_receipts_new(cfg, writer, metrics, on_receipt, &sinks, &receipts) != TH_E_OK) {
        startup_error(cli, "cannot register the receipt metrics");
        goto out;
    }
    nside += th_receipts_routes(receipts, side + nside, sizeof side / sizeof side[0] - nside);
    struct emf emf;
    struct th_server_deps sd = {.cfg = cfg,
                                .auth = auth,
                                .hook = hook,
                                .ready = all_ready,
                                .ready_ud = &ready,
                                .loop_start = guard_loop_start,
                                .loop_start_ud = &loops,
                                .metrics = all_metrics,
                                .metrics_ud = &ready,
                                .tls = tls,
                                .side = side,
                                .nside = nside};
    tls = NULL; /* the server's now, even on failure */
    if (th_server_start(&sd, &server, err, sizeof err) != TH_E_OK) {
        startup_error(cli, "%s (listen %s)", err, cfg->listen);
        goto out;
    }
    if (th_server_metrics(server, metrics) != TH_E_OK) {
        startup_error(cli, "cannot register the metrics");
        goto out;
    }
    if (conv && th_conv_sync_start(conv, cfg->store_url, CONV_SYNC_MS, &conv_sync) != TH_E_OK) {
        startup_error(cli, "[conversion] cannot start the blocks' sync thread");
        goto out;
    }
    if (cfg->conversion_mode != 0 && !conv)
        th_log_msg(TH_LOG_WARN, "conversion",
                   "[conversion] mode = monitor needs [guard] secret (prefixes are HMAC keys "
                   "under it): conversion is not tracked");
    else if (cfg->conversion_mode == 2 && cfg->conversion_require_signal)
        th_log_msg(TH_LOG_INFO, "conversion",
                   "[conversion] mode = enforce: blocks refuse only once a verification has been "
                   "seen (the Okta event hook delivers); until then they are logged as monitor");
    int port = th_server_port(server);
    if (cfg->port_file && cfg->port_file[0] && write_port_file(cfg->port_file, port) != 0)
        th_log_msg(TH_LOG_WARN, "startup", "cannot write server.port_file %s: %s", cfg->port_file,
                   strerror(errno));

    char host[256] = "";
    th_hostport_parse(cfg->listen, host, sizeof host, NULL);
    const char *h = host;
    if (strstr(th_router_describe(router), "outbox") && !th_host_is_loopback(h))
        th_log_msg(TH_LOG_WARN, "outbox_exposed",
                   "the outbox provider records messages instead of sending them, and this "
                   "server listens on %s, not loopback: configure a real provider for production",
                   cfg->listen);
    if (cfg->auth_mode == TH_AUTH_NONE)
        th_log_msg(TH_LOG_WARN, "auth_disabled",
                   "auth.mode = none: requests are NOT authenticated (development only)");

    struct th_logline l;
    if (th_log_begin(&l, TH_LOG_INFO, "listening")) {
        th_log_str(&l, "listen", cfg->listen);
        th_log_str(&l, "scheme", cfg->tls_cert[0] ? "https" : "http");
        th_log_int(&l, "port", port);
        th_log_int(&l, "threads", th_server_threads(server));
        th_log_str(&l, "store", store_copy);
        th_log_str(&l, "providers", th_router_describe(router));
        th_log_int(&l, "routes", (long long)nroutes);
        th_log_int(&l, "templates", (long long)th_templates_count(templates));
        th_log_ms(&l, "startup_ms", th_mono_us() - t0);
        th_log_end(&l);
    }

    /* systemd (Type=notify): ready only now, listening with the store open; a no-op elsewhere. */
    sd_notifyf(0, "READY=1\nSTATUS=serving on %s (port %d)\nMAINPID=%lu", cfg->listen, port,
               (unsigned long)getpid());
    emf_start(&emf, cfg, &ready);
    if (watch.listener) {
        if (pthread_create(&watch.thread, NULL, watch_catalog, &watch) == 0) {
            watch.started = true;
            th_log_msg(TH_LOG_INFO, "catalog_listen",
                       "listening for catalog changes: templates, prefs and routes changed on "
                       "any node are reloaded here");
        } else {
            th_log_msg(TH_LOG_ERROR, "catalog_listen",
                       "cannot start the catalog watcher: changes on other nodes need SIGHUP");
        }
    }
    int sig = wait_for_signal(cli, &set, store, hook, router, &retired, server, &emf, &watch);
    watch_stop(&watch); /* no reload may start while the modules are torn down */
    sd_notify(0, "STOPPING=1\nSTATUS=finishing requests in flight");
    th_log_msg(TH_LOG_INFO, "shutdown", "%s: no new connections; finishing requests in flight",
               sig == SIGTERM ? "SIGTERM" : "SIGINT");
    th_server_quiesce(server);
    /* Every request is answered by its deadline, so this wait is bounded. */
    int64_t limit = th_mono_us() + ((int64_t)cfg->deadline_ms + 1000) * 1000;
    while (th_hook_in_flight(hook) > 0 && th_mono_us() < limit)
        sleep_ms(5);
    sleep_ms(50);   /* let the loops write the last answers */
    emf_tick(&emf); /* the last, partial interval, while the writer's counts are still there */
    /* Drain the writer while the loops still run: its completions are posted to them. */
    pthread_mutex_lock(&ready.writer_mu);
    ready.writer = NULL;
    pthread_mutex_unlock(&ready.writer_mu);
    th_events_detach(events);
    th_receipts_detach(receipts);
    th_writer_stop(writer);
    writer = NULL;
    th_server_stop(server);
    server = NULL;
    struct th_auth_stats as;
    th_auth_stats(auth, &as);
    if (th_log_begin(&l, TH_LOG_INFO, "stopped")) {
        th_log_str(&l, "msg", "clean shutdown");
        th_log_int(&l, "tokens_verified", (long long)as.verified);
        th_log_int(&l, "token_cache_hits", (long long)as.cache_hits);
        th_log_int(&l, "tokens_refused", (long long)as.refused);
        th_log_int(&l, "key_fetches", (long long)as.key_fetches);
        uint64_t blocks[TH_BLOCK__COUNT];
        th_guard_counts(guard, blocks);
        th_log_int(&l, "duplicates", (long long)blocks[TH_BLOCK_NONE]);
        for (int i = 1; i < TH_BLOCK__COUNT; i++) {
            char name[64];
            snprintf(name, sizeof name, "blocked_%s", th_block_name((th_block)i));
            th_log_int(&l, name, (long long)blocks[i]);
        }
        th_log_end(&l);
    }
    rc = 0;
out:
    watch_stop(&watch);
    th_server_stop(server);
    th_metrics_free(metrics); /* nothing renders it now: its children point into the modules */
    th_tls_creds_free(tls);
    th_events_detach(events);
    th_receipts_detach(receipts);
    th_writer_stop(writer);
    th_events_free(events);
    th_receipts_free(receipts); /* the server and the writer, which call it, are stopped */
    th_conv_sync_stop(conv_sync);
    if (hook) { /* the current set and map may be ones a reload installed */
        templates = (struct th_templates *)th_hook_swap_templates(hook, templates);
        prefs = (struct th_prefs *)th_hook_swap_prefs(hook, prefs);
    }
    th_hook_free(hook);
    th_conv_free(conv);
    th_guard_free(guard);
    th_dlq_free(dlq);
    th_feedback_free(feedback); /* after its loop, before the router whose providers it uses */
    th_router_free(router);     /* after the loops: they tore down their HTTP clients */
    th_routes_free(routes);
    th_retired_release(&retired.sets, templates);
    th_retired_release(&retired.prefs, prefs);
    th_prefs_free(prefs);
    th_auth_free(auth);
    th_templates_free(templates);
    th_store_close(wstore);
    th_store_close(store);
    th_http_global_cleanup();
    return rc;
}
