#include "auth/keys.h"

#include <errno.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>

#include <jansson.h>

#include "common/buf.h"
#include "common/util.h"
#include "loop/refresher.h"
#include "net/fetch.h"
#include "obs/log.h"

#define FETCH_TIMEOUT_MS  5000
#define MAX_DOC           (256 * 1024)
#define EARLY_MIN_GAP_MS  (30 * 1000)
#define DEFAULT_MAX_AGE_S 3600
#define MIN_MAX_AGE_S     60
#define MAX_MAX_AGE_S     86400

struct set {
    struct th_jwks *jwks;
    uint64_t gen; /* th_keys_generation() while this set is the current one */
    atomic_int refs;
};

struct th_keys {
    char issuer[512];
    char jwks_url[1024]; /* configured or discovered */
    bool discovered;
    bool configured_url;
    const char *const *algs;
    size_t nalgs;

    pthread_mutex_t mu; /* guards cur, waiters */
    struct set *cur;
    struct th_refresher *fetcher; /* NULL: keys from a file, nothing to fetch */
    int64_t backoff_ms;           /* the fetcher's thread only */
    atomic_uint_fast64_t epoch, fetches;
    atomic_uint_fast64_t gen;       /* the current set's gen */
    atomic_llong last_fetch_ms;     /* when the last fetch started */
    atomic_llong last_early_ms;     /* when an unknown kid last asked for an early fetch */
    struct th_keys_waiter *waiters; /* requests waiting for the next completed fetch */
};

static void set_unref(struct set *s)
{
    if (s && atomic_fetch_sub(&s->refs, 1) == 1) {
        th_jwks_free(s->jwks);
        free(s);
    }
}

/*
 * Makes j the current set. Its generation is the old set's when j still holds every key of the
 * old one (same kid, algorithm and public key): a refresh that only adds keys, or changes
 * nothing (the hourly case), leaves the tokens verified so far standing. When a key was
 * withdrawn or replaced, the generation moves on and every token verified before stops
 * counting (auth.c's cache): it is verified again against the new set, once.
 */
static void publish(struct th_keys *k, struct th_jwks *j)
{
    struct set *s = malloc(sizeof *s);
    if (!s) {
        th_jwks_free(j);
        return;
    }
    s->jwks = j;
    atomic_init(&s->refs, 1);
    pthread_mutex_lock(&k->mu);
    struct set *old = k->cur;
    s->gen = !old ? 1 : th_jwks_covers(j, old->jwks) ? old->gen : old->gen + 1;
    k->cur = s;
    atomic_store_explicit(&k->gen, s->gen, memory_order_release);
    pthread_mutex_unlock(&k->mu);
    if (old && s->gen != old->gen)
        th_log_msg(TH_LOG_INFO, "jwks",
                   "a signing key was withdrawn or replaced: tokens verified with the previous "
                   "keys are verified again");
    set_unref(old);
}

const struct th_jwks *th_keys_acquire(struct th_keys *k, void **handle, uint64_t *gen)
{
    pthread_mutex_lock(&k->mu);
    struct set *s = k->cur;
    if (s)
        atomic_fetch_add(&s->refs, 1);
    pthread_mutex_unlock(&k->mu);
    *handle = s;
    *gen = s ? s->gen : 0;
    return s ? s->jwks : NULL;
}

uint64_t th_keys_generation(const struct th_keys *k)
{
    return atomic_load_explicit(&k->gen, memory_order_acquire);
}

void th_keys_release(struct th_keys *k, void *handle)
{
    (void)k;
    set_unref(handle);
}

uint64_t th_keys_epoch(const struct th_keys *k)
{
    return atomic_load(&k->epoch);
}

uint64_t th_keys_fetches(const struct th_keys *k)
{
    return atomic_load(&k->fetches);
}

bool th_keys_ready(const struct th_keys *k)
{
    struct th_keys *m = (struct th_keys *)k;
    pthread_mutex_lock(&m->mu);
    bool ok = m->cur != NULL;
    pthread_mutex_unlock(&m->mu);
    return ok;
}

bool th_keys_refresh_soon(struct th_keys *k)
{
    if (!k->fetcher)
        return false; /* a file: nothing to fetch */
    int64_t now = th_wall_ms();
    long long last = atomic_load(&k->last_early_ms);
    /* One early fetch per 30 s, whoever asks: compare-and-swap so racing loops agree. */
    if (now - last < EARLY_MIN_GAP_MS ||
        !atomic_compare_exchange_strong(&k->last_early_ms, &last, now))
        return false;
    th_refresher_kick(k->fetcher);
    return true;
}

/* ---- waiters ---- */

bool th_keys_wait(struct th_keys *k, struct th_keys_waiter *w, uint64_t seen, struct th_loop *loop,
                  th_loop_fn fn, void *ud)
{
    th_loop_call_init(&w->call, loop, fn, NULL, ud);
    pthread_mutex_lock(&k->mu);
    /* The fetcher moves the epoch before it takes the lock to wake: read under the lock, a
     * fetch that completed since `seen` is seen here, or its wake finds us in the list. */
    bool wait = atomic_load(&k->epoch) == seen && !w->waiting;
    if (wait) {
        w->prev = NULL;
        w->next = k->waiters;
        if (k->waiters)
            k->waiters->prev = w;
        k->waiters = w;
        w->waiting = true;
    }
    pthread_mutex_unlock(&k->mu);
    return wait;
}

void th_keys_wait_cancel(struct th_keys *k, struct th_keys_waiter *w)
{
    if (!w->call.loop)
        return; /* never waited */
    pthread_mutex_lock(&k->mu);
    if (w->waiting) {
        if (w->prev)
            w->prev->next = w->next;
        else
            k->waiters = w->next;
        if (w->next)
            w->next->prev = w->prev;
        w->prev = w->next = NULL;
        w->waiting = false;
    } else { /* woken: the wake was posted under this lock, so it is queued or has run */
        th_loop_call_withdraw(&w->call);
    }
    pthread_mutex_unlock(&k->mu);
}

/* The fetcher, after a fetch completed: every waiter, through its own loop. */
static void wake_waiters(struct th_keys *k)
{
    pthread_mutex_lock(&k->mu);
    while (k->waiters) {
        struct th_keys_waiter *w = k->waiters;
        k->waiters = w->next;
        w->prev = w->next = NULL;
        w->waiting = false;
        th_loop_call_post(&w->call); /* under the lock: see th_keys_wait_cancel */
    }
    pthread_mutex_unlock(&k->mu);
}

/* ---- fetching (the keys thread only) ---- */

struct fetch {
    struct th_buf body;
    long max_age; /* from Cache-Control, -1 when absent */
};

/* GET url as JSON; reads the answer's Cache-Control max-age (0 for no-store / no-cache). */
static long get(const char *url, struct fetch *f, char *why, size_t whylen)
{
    static const char *const accept[] = {"Accept: application/json"};
    struct th_fetch req = {.method = "GET",
                           .url = url,
                           .headers = accept,
                           .nheaders = 1,
                           .timeout_ms = FETCH_TIMEOUT_MS,
                           .capture = "cache-control"};
    long status = th_fetch(&req, &f->body, why, whylen);
    f->max_age = -1;
    const char *m = strcasestr(req.captured, "max-age=");
    if (m)
        f->max_age = strtol(m + 8, NULL, 10);
    if (strcasestr(req.captured, "no-store") || strcasestr(req.captured, "no-cache"))
        f->max_age = 0;
    return status;
}

enum discovery { DISC_NONE, DISC_FOUND, DISC_REFUSED };

/*
 * Finds jwks_uri in the issuer's discovery document. DISC_NONE keeps the fallback; DISC_REFUSED
 * (reason in why, logged) fails this fetch: a document of the right issuer that puts its keys
 * behind plain http (not loopback) is not fetched from, nor worked around by the fallback — the
 * keys already held are kept and the operator has to fix the issuer.
 */
static enum discovery discover(struct th_keys *k, struct fetch *f, char *why, size_t whylen)
{
    static const char *const paths[] = {"/.well-known/openid-configuration",
                                        "/.well-known/oauth-authorization-server"};
    for (size_t i = 0; i < TH_ARRAY_LEN(paths); i++) {
        char url[1200], gwhy[256] = "";
        snprintf(url, sizeof url, "%s%s", k->issuer, paths[i]);
        if (get(url, f, gwhy, sizeof gwhy) != 200)
            continue;
        json_t *doc = json_loadb(th_buf_str(&f->body), f->body.len, 0, NULL);
        const char *iss = json_string_value(json_object_get(doc, "issuer"));
        const char *uri = json_string_value(json_object_get(doc, "jwks_uri"));
        enum discovery d = DISC_NONE;
        if (!iss || strcmp(iss, k->issuer) != 0) {
            th_log_msg(TH_LOG_WARN, "jwks", "discovery at %s names another issuer: ignored", url);
        } else if (uri && !th_url_https_or_loopback(uri)) {
            snprintf(why, whylen,
                     "the discovery document's jwks_uri is not an https URL (plain http only to "
                     "loopback): refused, not fetched");
            th_log_msg(TH_LOG_ERROR, "jwks",
                       "discovery at %s gives jwks_uri %.200s: not https, so anyone on the path "
                       "could replace the issuer's keys; key set refused (keys held: %s)",
                       url, uri, th_keys_ready(k) ? "yes, kept" : "none");
            d = DISC_REFUSED;
        } else if (uri && strlen(uri) < sizeof k->jwks_url) {
            th_strlcpy(k->jwks_url, uri, sizeof k->jwks_url);
            k->discovered = true;
            d = DISC_FOUND;
        }
        json_decref(doc);
        if (d != DISC_NONE)
            return d;
    }
    return DISC_NONE;
}

/* One fetch; returns the max-age to wait before the next (seconds), or -1 on failure. */
static long fetch_once(struct th_keys *k, char *why, size_t whylen)
{
    struct fetch f;
    th_buf_init(&f.body, MAX_DOC);
    atomic_store(&k->last_fetch_ms, th_wall_ms());
    atomic_fetch_add(&k->fetches, 1);
    enum discovery d = DISC_FOUND;
    if (!k->discovered && !k->jwks_url[0] && (d = discover(k, &f, why, whylen)) == DISC_NONE)
        snprintf(k->jwks_url, sizeof k->jwks_url, "%s/v1/keys", k->issuer); /* Okta's layout */
    long age = -1;
    if (d != DISC_REFUSED && get(k->jwks_url, &f, why, whylen) == 200) {
        struct th_jwks *j = NULL;
        if (th_jwks_parse(th_buf_str(&f.body), f.body.len, k->algs, k->nalgs, &j, why, whylen) ==
            TH_E_OK) {
            size_t n = th_jwks_count(j);
            if (n == 0) {
                snprintf(why, whylen, "no usable signing key in the JWKS");
                th_jwks_free(j);
            } else {
                publish(k, j);
                age = f.max_age < 0 ? DEFAULT_MAX_AGE_S : f.max_age;
                if (age < MIN_MAX_AGE_S)
                    age = MIN_MAX_AGE_S;
                if (age > MAX_MAX_AGE_S)
                    age = MAX_MAX_AGE_S;
                th_log_msg(TH_LOG_INFO, "jwks", "%zu signing keys from %s (refresh in %ld s)", n,
                           k->jwks_url, age);
            }
        }
    }
    if (age < 0 && !k->configured_url) { /* discover again next time: the issuer may have moved */
        k->jwks_url[0] = '\0';
        k->discovered = false;
    }
    th_buf_release(&f.body);
    return age;
}

/* One round of the fetcher (loop/refresher.h): fetch, wake the waiters, and how long to wait
 * (th_keys_refresh_soon kicks it earlier). */
static int64_t fetch_round(void *ud)
{
    struct th_keys *k = ud;
    char why[256] = "";
    long age = fetch_once(k, why, sizeof why);
    atomic_fetch_add(&k->epoch, 1);
    wake_waiters(k);
    if (age >= 0) {
        k->backoff_ms = 1000;
        return (int64_t)age * 1000;
    }
    th_log_msg(TH_LOG_WARN, "jwks",
               "cannot fetch the issuer's keys from %s (retry in "
               "%lld ms; keys held: %s): %s",
               k->jwks_url[0] ? k->jwks_url : k->issuer, (long long)k->backoff_ms,
               th_keys_ready(k) ? "yes" : "none", why);
    int64_t wait_ms = k->backoff_ms;
    k->backoff_ms = k->backoff_ms * 2 > 60000 ? 60000 : k->backoff_ms * 2;
    return wait_ms;
}

th_err th_keys_new(const struct th_keys_opts *o, struct th_keys **out, char *err, size_t errlen)
{
    struct th_keys *k = calloc(1, sizeof *k);
    if (!k)
        return TH_E_NOMEM;
    pthread_mutex_init(&k->mu, NULL);
    k->backoff_ms = 1000;
    k->algs = o->algorithms;
    k->nalgs = o->nalgorithms;
    th_strlcpy(k->issuer, o->issuer, sizeof k->issuer);
    size_t il = strlen(k->issuer);
    if (il && k->issuer[il - 1] == '/')
        k->issuer[il - 1] = '\0';
    th_strlcpy(k->jwks_url, o->jwks_url ? o->jwks_url : "", sizeof k->jwks_url);
    k->configured_url = k->jwks_url[0] != '\0';
    atomic_init(&k->last_early_ms, -EARLY_MIN_GAP_MS);
    if (o->jwks_file && o->jwks_file[0]) {
        FILE *f = fopen(o->jwks_file, "r");
        if (!f) {
            snprintf(err, errlen, "auth.jwks_file %s: %s", o->jwks_file, strerror(errno));
            th_keys_free(k);
            return TH_E_CONFIG;
        }
        struct th_buf b;
        th_buf_init(&b, MAX_DOC);
        char chunk[4096];
        size_t n;
        th_err e = TH_E_OK;
        while (e == TH_E_OK && (n = fread(chunk, 1, sizeof chunk, f)) > 0)
            e = th_buf_append(&b, chunk, n);
        fclose(f);
        struct th_jwks *j = NULL;
        char why[256] = "too large";
        if (e != TH_E_OK ||
            th_jwks_parse(th_buf_str(&b), b.len, k->algs, k->nalgs, &j, why, sizeof why) !=
                TH_E_OK ||
            th_jwks_count(j) == 0) {
            snprintf(err, errlen, "auth.jwks_file %s: %s", o->jwks_file,
                     j ? "no usable signing key" : why);
            th_jwks_free(j);
            th_buf_release(&b);
            th_keys_free(k);
            return TH_E_CONFIG;
        }
        th_buf_release(&b);
        publish(k, j);
        atomic_store(&k->epoch, 1);
        *out = k;
        return TH_E_OK;
    }
    if (th_refresher_start(fetch_round, k, 0, &k->fetcher) != TH_E_OK) {
        snprintf(err, errlen, "cannot start the key fetcher");
        th_keys_free(k);
        return TH_E_NOMEM;
    }
    *out = k;
    return TH_E_OK;
}

void th_keys_free(struct th_keys *k)
{
    if (!k)
        return;
    th_refresher_stop(k->fetcher); /* a fetch in progress ends within its timeout */
    set_unref(k->cur);
    pthread_mutex_destroy(&k->mu);
    free(k);
}
