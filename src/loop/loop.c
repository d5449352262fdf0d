#include "loop/loop.h"

#include <errno.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <sys/epoll.h>
#include <sys/eventfd.h>

#include "common/util.h"

struct io_watch {
    th_loop_io_fn fn;
    void *ud;
};

/* The at-exit list (the mailbox holds struct th_loop_call, loop.h). */
struct post {
    th_loop_fn fn;
    void *ud;
    struct post *next;
};

struct th_loop {
    int epfd;
    int wakefd; /* eventfd: th_loop_post / th_loop_stop wake the loop */
    int64_t now_us;
    atomic_bool stopping;

    struct io_watch *watch; /* indexed by fd */
    size_t nwatch;

    struct th_timer **heap; /* min-heap on when_us; timer->slot = index + 1 */
    size_t nheap, capheap;

    pthread_mutex_t mu; /* guards the mailbox: head, tail, closed and every queued call's flag */
    struct th_loop_call *head, *tail;
    struct th_loop_call *running; /* the batch being run (the loop's thread only) */
    bool closed;                  /* finished: no more posts accepted */

    void *user;           /* the loop's per-thread context (the dispatch engine's client) */
    struct post *at_exit; /* run LIFO on the loop's thread when th_loop_run returns */
    th_loop_fn idle_fn;   /* before each wait */
    void *idle_ud;

    atomic_uint_fast64_t pings, pongs; /* liveness: th_loop_ping / th_loop_answered */
};

/* ---- timers: a binary min-heap of pointers to embedded timers ---- */

static void heap_place(struct th_loop *l, size_t i, struct th_timer *t)
{
    l->heap[i] = t;
    t->slot = i + 1;
}

static void heap_up(struct th_loop *l, size_t i)
{
    struct th_timer *t = l->heap[i];
    while (i > 0) {
        size_t p = (i - 1) / 2;
        if (l->heap[p]->when_us <= t->when_us)
            break;
        heap_place(l, i, l->heap[p]);
        i = p;
    }
    heap_place(l, i, t);
}

static void heap_down(struct th_loop *l, size_t i)
{
    struct th_timer *t = l->heap[i];
    for (;;) {
        size_t c = 2 * i + 1;
        if (c >= l->nheap)
            break;
        if (c + 1 < l->nheap && l->heap[c + 1]->when_us < l->heap[c]->when_us)
            c++;
        if (t->when_us <= l->heap[c]->when_us)
            break;
        heap_place(l, i, l->heap[c]);
        i = c;
    }
    heap_place(l, i, t);
}

static void heap_remove(struct th_loop *l, struct th_timer *t)
{
    size_t i = t->slot - 1;
    t->slot = 0;
    l->nheap--;
    if (i == l->nheap)
        return;
    heap_place(l, i, l->heap[l->nheap]);
    heap_down(l, i);
    heap_up(l, l->heap[i]->slot - 1);
}

void th_loop_timer_cancel(struct th_loop *loop, struct th_timer *t)
{
    if (t->slot)
        heap_remove(loop, t);
}

void th_loop_timer_set(struct th_loop *loop, struct th_timer *t, int64_t when_us, th_loop_fn fn,
                       void *ud)
{
    th_loop_timer_cancel(loop, t);
    t->when_us = when_us;
    t->fn = fn;
    t->ud = ud;
    if (loop->nheap == loop->capheap) {
        size_t ncap = loop->capheap ? loop->capheap * 2 : 64;
        struct th_timer **h = realloc(loop->heap, ncap * sizeof *h);
        if (!h)
            abort(); /* a timer we cannot arm would be a request never answered */
        loop->heap = h;
        loop->capheap = ncap;
    }
    heap_place(loop, loop->nheap++, t);
    heap_up(loop, loop->nheap - 1);
}

static void run_timers(struct th_loop *l)
{
    while (l->nheap && l->heap[0]->when_us <= l->now_us) {
        struct th_timer *t = l->heap[0];
        heap_remove(l, t);
        t->fn(t->ud); /* may set or cancel timers */
    }
}

/* ---- fds ---- */

static th_err watch_slot(struct th_loop *l, int fd, struct io_watch **out)
{
    if (fd < 0)
        return TH_E_INVAL;
    void *w = l->watch;
    th_err e = th_grow_to_index(&w, &l->nwatch, sizeof *l->watch, (size_t)fd);
    l->watch = w;
    if (e != TH_E_OK)
        return e;
    *out = &l->watch[fd];
    return TH_E_OK;
}

static th_err ctl(struct th_loop *l, int op, int fd, uint32_t events, th_loop_io_fn fn, void *ud)
{
    struct io_watch *w;
    th_err e = watch_slot(l, fd, &w);
    if (e != TH_E_OK)
        return e;
    struct epoll_event ev = {.events = events, .data.fd = fd};
    if (epoll_ctl(l->epfd, op, fd, &ev) != 0)
        return TH_E_IO;
    w->fn = fn;
    w->ud = ud;
    return TH_E_OK;
}

th_err th_loop_add_fd(struct th_loop *loop, int fd, uint32_t events, th_loop_io_fn fn, void *ud)
{
    return ctl(loop, EPOLL_CTL_ADD, fd, events, fn, ud);
}

th_err th_loop_mod_fd(struct th_loop *loop, int fd, uint32_t events, th_loop_io_fn fn, void *ud)
{
    return ctl(loop, EPOLL_CTL_MOD, fd, events, fn, ud);
}

void th_loop_del_fd(struct th_loop *loop, int fd)
{
    if (fd < 0 || (size_t)fd >= loop->nwatch)
        return;
    epoll_ctl(loop->epfd, EPOLL_CTL_DEL, fd, NULL);
    loop->watch[fd].fn = NULL;
    loop->watch[fd].ud = NULL;
}

/* ---- mailbox ---- */

void th_loop_call_init(struct th_loop_call *c, struct th_loop *loop, th_loop_fn fn,
                       th_loop_fn cancel, void *ud)
{
    *c = (struct th_loop_call){.loop = loop, .fn = fn, .cancel = cancel, .ud = ud};
}

/* Queues c; false when the loop has finished (nothing queued). */
static bool enqueue(struct th_loop *loop, struct th_loop_call *c)
{
    c->next = NULL;
    pthread_mutex_lock(&loop->mu);
    if (loop->closed) {
        pthread_mutex_unlock(&loop->mu);
        return false;
    }
    c->queued = true;
    bool was_empty = loop->head == NULL;
    if (loop->tail)
        loop->tail->next = c;
    else
        loop->head = c;
    loop->tail = c;
    pthread_mutex_unlock(&loop->mu);
    if (was_empty) { /* one wake-up per batch, not per post */
        uint64_t one = 1;
        ssize_t r = write(loop->wakefd, &one, sizeof one);
        (void)r; /* EAGAIN means the counter is already non-zero: the loop will wake */
    }
    return true;
}

bool th_loop_call_post(struct th_loop_call *c)
{
    if (enqueue(c->loop, c))
        return true;
    if (c->cancel)
        c->cancel(c->ud);
    return false;
}

/* Unlinks c from the singly linked list at *head (and *tail when given); false if absent. */
static bool unlink_call(struct th_loop_call **head, struct th_loop_call **tail,
                        struct th_loop_call *c)
{
    struct th_loop_call *prev = NULL;
    for (struct th_loop_call *p = *head; p; prev = p, p = p->next) {
        if (p != c)
            continue;
        if (prev)
            prev->next = p->next;
        else
            *head = p->next;
        if (tail && *tail == p)
            *tail = prev;
        return true;
    }
    return false;
}

void th_loop_call_withdraw(struct th_loop_call *c)
{
    struct th_loop *l = c->loop;
    if (!l)
        return; /* never posted */
    pthread_mutex_lock(&l->mu);
    if (c->queued && !unlink_call(&l->head, &l->tail, c))
        unlink_call(&l->running, NULL, c); /* taken by the batch now running on this thread */
    c->queued = false;
    pthread_mutex_unlock(&l->mu);
}

/* A th_loop_post: a call the mailbox allocated, freed once it has run. */
struct owned_call {
    struct th_loop_call call;
    th_loop_fn fn;
    void *ud;
};

static void run_owned(void *ud)
{
    struct owned_call *o = ud;
    th_loop_fn fn = o->fn;
    void *arg = o->ud;
    free(o);
    fn(arg);
}

th_err th_loop_post(struct th_loop *loop, th_loop_fn fn, void *ud)
{
    struct owned_call *o = malloc(sizeof *o);
    if (!o)
        return TH_E_NOMEM;
    o->fn = fn;
    o->ud = ud;
    th_loop_call_init(&o->call, loop, run_owned, NULL, o);
    if (!enqueue(loop, &o->call)) {
        free(o);
        return TH_E_BUSY;
    }
    return TH_E_OK;
}

/*
 * Runs what is queued, one call at a time: each is taken off `running` (under the lock, so a
 * withdraw from a call of the same batch finds the list consistent) before it runs.
 */
static void run_calls(struct th_loop *l, struct th_loop_call *batch)
{
    pthread_mutex_lock(&l->mu);
    l->running = batch;
    while (l->running) {
        struct th_loop_call *c = l->running;
        l->running = c->next;
        c->queued = false;
        pthread_mutex_unlock(&l->mu);
        c->fn(c->ud); /* may free c, withdraw others, post again */
        pthread_mutex_lock(&l->mu);
    }
    pthread_mutex_unlock(&l->mu);
}

static void run_posts(struct th_loop *l)
{
    pthread_mutex_lock(&l->mu);
    struct th_loop_call *batch = l->head;
    l->head = l->tail = NULL;
    pthread_mutex_unlock(&l->mu);
    run_calls(l, batch);
}

/* Refuses further posts, then runs those accepted before (their posters were told so). */
static void close_mailbox(struct th_loop *l)
{
    pthread_mutex_lock(&l->mu);
    l->closed = true;
    struct th_loop_call *batch = l->head;
    l->head = l->tail = NULL;
    pthread_mutex_unlock(&l->mu);
    run_calls(l, batch);
}

static void on_wake(void *ud, uint32_t events)
{
    struct th_loop *l = ud;
    uint64_t v;
    ssize_t r = read(l->wakefd, &v, sizeof v);
    (void)r;
    (void)events;
    run_posts(l);
}

/* ---- lifecycle ---- */

th_err th_loop_new(struct th_loop **out)
{
    struct th_loop *l = calloc(1, sizeof *l);
    if (!l)
        return TH_E_NOMEM;
    l->epfd = epoll_create1(EPOLL_CLOEXEC);
    l->wakefd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
    pthread_mutex_init(&l->mu, NULL);
    atomic_init(&l->stopping, false);
    atomic_init(&l->pings, 0);
    atomic_init(&l->pongs, 0);
    l->now_us = th_mono_us();
    if (l->epfd < 0 || l->wakefd < 0 || th_loop_add_fd(l, l->wakefd, EPOLLIN, on_wake, l)) {
        th_loop_free(l);
        return TH_E_IO;
    }
    *out = l;
    return TH_E_OK;
}

void th_loop_free(struct th_loop *loop)
{
    if (!loop)
        return;
    close_mailbox(loop);    /* posts that never ran: their owners were told TH_E_OK, so run them */
    while (loop->at_exit) { /* the loop never ran: tear down what was attached to it */
        struct post *q = loop->at_exit;
        loop->at_exit = q->next;
        q->fn(q->ud);
        free(q);
    }
    if (loop->wakefd >= 0)
        close(loop->wakefd);
    if (loop->epfd >= 0)
        close(loop->epfd);
    pthread_mutex_destroy(&loop->mu);
    free(loop->watch);
    free(loop->heap);
    free(loop);
}

int64_t th_loop_now_us(const struct th_loop *loop)
{
    return loop->now_us;
}

void th_loop_stop(struct th_loop *loop)
{
    atomic_store(&loop->stopping, true);
    uint64_t one = 1;
    ssize_t r = write(loop->wakefd, &one, sizeof one);
    (void)r;
}

void th_loop_run(struct th_loop *loop)
{
    struct epoll_event evs[64];
    pthread_mutex_lock(&loop->mu); /* run again (a test, the CLI's replay): open again */
    loop->closed = false;
    pthread_mutex_unlock(&loop->mu);
    while (!atomic_load(&loop->stopping)) {
        loop->now_us = th_mono_us();
        int timeout = -1;
        if (loop->nheap) {
            int64_t d = loop->heap[0]->when_us - loop->now_us;
            timeout = d <= 0 ? 0 : (int)((d + 999) / 1000); /* round up: never wake early */
        }
        if (loop->idle_fn)
            loop->idle_fn(loop->idle_ud);
        int n = epoll_wait(loop->epfd, evs, (int)TH_ARRAY_LEN(evs), timeout);
        if (n < 0 && errno != EINTR)
            break;
        loop->now_us = th_mono_us();
        for (int i = 0; i < n; i++) {
            int fd = evs[i].data.fd;
            /* A callback earlier in this batch may have removed this fd: skip it then. */
            if ((size_t)fd < loop->nwatch && loop->watch[fd].fn)
                loop->watch[fd].fn(loop->watch[fd].ud, evs[i].events);
        }
        run_timers(loop);
    }
    run_posts(loop);
    while (loop->at_exit) { /* LIFO: what was set up last is torn down first */
        struct post *p = loop->at_exit;
        loop->at_exit = p->next;
        p->fn(p->ud);
        free(p);
    }
    run_posts(loop); /* what the exit handlers posted (their last completions) */
    /* Timers will never fire now: disarmed, so an owner freed by a cancel on another thread
     * (th_loop_call) leaves no pointer in the heap for a later cancel to follow. */
    while (loop->nheap)
        heap_remove(loop, loop->heap[loop->nheap - 1]);
    /* Finished: from now on a post is refused (th_loop_call_post runs its cancel instead), so
     * no completion runs after the loop's owner has torn down what it would touch. */
    close_mailbox(loop);
    if (loop->idle_fn)
        loop->idle_fn(loop->idle_ud);
}

void th_loop_set_idle(struct th_loop *loop, th_loop_fn fn, void *ud)
{
    loop->idle_fn = fn;
    loop->idle_ud = ud;
}

void th_loop_set_user(struct th_loop *loop, void *user)
{
    loop->user = user;
}

void *th_loop_user(const struct th_loop *loop)
{
    return loop->user;
}

th_err th_loop_at_exit(struct th_loop *loop, th_loop_fn fn, void *ud)
{
    struct post *p = malloc(sizeof *p);
    if (!p)
        return TH_E_NOMEM;
    p->fn = fn;
    p->ud = ud;
    p->next = loop->at_exit;
    loop->at_exit = p;
    return TH_E_OK;
}

static void pong(void *ud)
{
    struct th_loop *loop = ud;
    atomic_fetch_add_explicit(&loop->pongs, 1, memory_order_release);
}

th_err th_loop_ping(struct th_loop *loop)
{
    atomic_fetch_add_explicit(&loop->pings, 1, memory_order_relaxed);
    th_err e = th_loop_post(loop, pong, loop);
    if (e != TH_E_OK) /* never posted: not owed */
        atomic_fetch_sub_explicit(&loop->pings, 1, memory_order_relaxed);
    return e;
}

bool th_loop_answered(const struct th_loop *loop)
{
    struct th_loop *l = (struct th_loop *)loop;
    return atomic_load_explicit(&l->pongs, memory_order_acquire) ==
           atomic_load_explicit(&l->pings, memory_order_relaxed);
}
