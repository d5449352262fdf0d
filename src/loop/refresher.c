#include "loop/refresher.h"

#include <errno.h>
#include <pthread.h>
#include <stdlib.h>
#include <time.h>

struct th_refresher {
    th_refresher_fn fn;
    void *ud;
    int64_t first_delay_ms;
    pthread_t thread;
    pthread_mutex_t mu; /* guards stop, kicked */
    pthread_cond_t cv;  /* on CLOCK_MONOTONIC */
    bool stop, kicked;
};

/* Waits delay_ms (< 0: no limit) or until kicked or stopped; true when stopped. Consumes a kick. */
static bool wait_round(struct th_refresher *r, int64_t delay_ms)
{
    struct timespec until;
    clock_gettime(CLOCK_MONOTONIC, &until);
    if (delay_ms > 0) {
        until.tv_sec += (time_t)(delay_ms / 1000);
        until.tv_nsec += (long)(delay_ms % 1000) * 1000000L;
        if (until.tv_nsec >= 1000000000L) {
            until.tv_sec++;
            until.tv_nsec -= 1000000000L;
        }
    }
    pthread_mutex_lock(&r->mu);
    while (!r->stop && !r->kicked) {
        if (delay_ms < 0)
            pthread_cond_wait(&r->cv, &r->mu);
        else if (pthread_cond_timedwait(&r->cv, &r->mu, &until) == ETIMEDOUT)
            break;
    }
    bool stop = r->stop;
    r->kicked = false;
    pthread_mutex_unlock(&r->mu);
    return stop;
}

static void *run(void *arg)
{
    struct th_refresher *r = arg;
    int64_t delay = r->first_delay_ms;
    while (!wait_round(r, delay))
        delay = r->fn(r->ud);
    return NULL;
}

th_err th_refresher_start(th_refresher_fn fn, void *ud, int64_t first_delay_ms,
                          struct th_refresher **out)
{
    *out = NULL;
    struct th_refresher *r = calloc(1, sizeof *r);
    if (!r)
        return TH_E_NOMEM;
    r->fn = fn;
    r->ud = ud;
    r->first_delay_ms = first_delay_ms;
    pthread_condattr_t ca;
    pthread_condattr_init(&ca);
    pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
    pthread_cond_init(&r->cv, &ca);
    pthread_condattr_destroy(&ca);
    pthread_mutex_init(&r->mu, NULL);
    *out = r; /* before the thread: fn may look for it */
    if (pthread_create(&r->thread, NULL, run, r) != 0) {
        *out = NULL;
        pthread_cond_destroy(&r->cv);
        pthread_mutex_destroy(&r->mu);
        free(r);
        return TH_E_NOMEM;
    }
    return TH_E_OK;
}

void th_refresher_kick(struct th_refresher *r)
{
    pthread_mutex_lock(&r->mu);
    r->kicked = true;
    pthread_cond_signal(&r->cv);
    pthread_mutex_unlock(&r->mu);
}

bool th_refresher_stopping(struct th_refresher *r)
{
    pthread_mutex_lock(&r->mu);
    bool stop = r->stop;
    pthread_mutex_unlock(&r->mu);
    return stop;
}

void th_refresher_stop(struct th_refresher *r)
{
    if (!r)
        return;
    pthread_mutex_lock(&r->mu);
    r->stop = true;
    pthread_cond_signal(&r->cv);
    pthread_mutex_unlock(&r->mu);
    pthread_join(r->thread, NULL);
    pthread_cond_destroy(&r->cv);
    pthread_mutex_destroy(&r->mu);
    free(r);
}
