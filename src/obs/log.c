#include "obs/log.h"

#include <limits.h>
#include <stdatomic.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "common/util.h"

/* Read by every thread on every line; changed at run time only by a reload (th_log_set_level). */
static _Atomic int min_level = TH_LOG_INFO;
static int log_fd = 2;

_Static_assert(TH_LOG_BATCH >= TH_LOG_LINE_MAX, "a line always fits an empty batch");
_Static_assert(TH_LOG_BATCH <= PIPE_BUF, "a batch is written atomically to a pipe");

/* This thread's batch (event-loop threads only); data NULL when not batching. */
static _Thread_local struct {
    char *data;
    size_t len;
} batch;

static void write_all(const char *p, size_t n)
{
    ssize_t r = write(log_fd, p, n);
    (void)r; /* a log that cannot be written must not take the server down */
}

bool th_log_batch_begin(void)
{
    if (!batch.data)
        batch.data = malloc(TH_LOG_BATCH);
    batch.len = 0;
    return batch.data != NULL;
}

void th_log_flush(void)
{
    if (batch.len)
        write_all(batch.data, batch.len);
    batch.len = 0;
}

void th_log_batch_end(void)
{
    th_log_flush();
    free(batch.data);
    batch.data = NULL;
}

static const char *const level_names[] = {"debug", "info", "warn", "error"};

void th_log_init(th_log_level level, int fd)
{
    atomic_store_explicit(&min_level, (int)level, memory_order_relaxed);
    log_fd = fd;
}

void th_log_set_level(th_log_level level)
{
    atomic_store_explicit(&min_level, (int)level, memory_order_relaxed);
}

bool th_log_enabled(th_log_level level)
{
    return (int)level >= atomic_load_explicit(&min_level, memory_order_relaxed);
}

const char *th_log_level_name(th_log_level level)
{
    return (unsigned)level < TH_ARRAY_LEN(level_names) ? level_names[level] : "info";
}

/*
 * The line lives in the struct's own array: th_buf gets it as storage with cap set, so appends
 * never allocate (max < cap keeps grow() from calling realloc).
 */
static void buf_on_stack(struct th_logline *l)
{
    l->b.data = l->mem;
    l->b.cap = sizeof l->mem;
    l->b.len = 0;
    l->b.max = sizeof l->mem - 2; /* room for "}\n" */
    l->b.arena = NULL;
    l->b.err = TH_E_OK;
    l->mem[0] = '\0';
    l->dropped = false;
}

bool th_log_begin(struct th_logline *l, th_log_level level, const char *event)
{
    if (!th_log_enabled(level))
        return false;
    buf_on_stack(l);
    l->level = level;
    char ts[25];
    th_format_iso8601(th_wall_ms(), ts);
    th_buf_appends(&l->b, "{\"ts\":\"");
    th_buf_appends(&l->b, ts);
    th_buf_appends(&l->b, "\",\"level\":\"");
    th_buf_appends(&l->b, th_log_level_name(level));
    th_buf_appends(&l->b, "\",\"event\":");
    th_buf_append_json(&l->b, event, (size_t)-1);
    return true;
}

/*
 * A field is built in a th_buf of its own over the free tail of the line: when it does not fit,
 * the buffer's sticky failure empties that field only and the line before it stays intact.
 */
static void field_begin(struct th_logline *l, struct th_buf *f, const char *k)
{
    size_t room = l->b.max - l->b.len;
    f->data = l->mem + l->b.len;
    f->len = 0;
    f->cap = room + 1; /* never below max + 1: grow() never calls realloc */
    f->max = room;
    f->err = TH_E_OK;
    f->arena = NULL;
    th_buf_appendc(f, ',');
    th_buf_append_json(f, k, (size_t)-1);
    th_buf_appendc(f, ':');
}

/* Keeps the field, or drops it whole rather than emit broken JSON. */
static void field_done(struct th_logline *l, const struct th_buf *f)
{
    if (th_buf_err(f) == TH_E_OK) {
        l->b.len += f->len;
        return;
    }
    l->mem[l->b.len] = '\0';
    l->dropped = true;
}

void th_log_str(struct th_logline *l, const char *k, const char *value)
{
    if (!value)
        return;
    size_t n = strlen(value);
    if (n > TH_LOG_VALUE_MAX)
        n = TH_LOG_VALUE_MAX;
    struct th_buf f;
    field_begin(l, &f, k);
    th_buf_append_json(&f, value, n);
    field_done(l, &f);
}

void th_log_int(struct th_logline *l, const char *k, long long value)
{
    struct th_buf f;
    field_begin(l, &f, k);
    th_buf_append_int(&f, value);
    field_done(l, &f);
}

/* us as milliseconds with three decimals: "%lld.%03lld" without printf (and -0.500 for -500). */
static void append_ms(struct th_buf *b, int64_t us)
{
    long long ms = (long long)(us / 1000), frac = (long long)(us % 1000);
    if (frac < 0) {
        frac = -frac;
        if (ms == 0)
            th_buf_appendc(b, '-');
    }
    char f[4] = {'.', (char)('0' + frac / 100), (char)('0' + frac / 10 % 10),
                 (char)('0' + frac % 10)};
    th_buf_append_int(b, ms);
    th_buf_append(b, f, sizeof f);
}

void th_log_ms(struct th_logline *l, const char *k, int64_t us)
{
    struct th_buf f;
    field_begin(l, &f, k);
    append_ms(&f, us);
    field_done(l, &f);
}

void th_log_bool(struct th_logline *l, const char *k, bool value)
{
    struct th_buf f;
    field_begin(l, &f, k);
    th_buf_appends(&f, value ? "true" : "false");
    field_done(l, &f);
}

void th_log_end(struct th_logline *l)
{
    if (l->dropped) { /* as a field: when even this does not fit, the line goes without it */
        struct th_buf f;
        field_begin(l, &f, "truncated");
        th_buf_appends(&f, "true");
        field_done(l, &f);
    }
    /* max was set 2 below the array, so "}\n" always fits */
    l->mem[l->b.len++] = '}';
    l->mem[l->b.len++] = '\n';
    if (!batch.data) {
        write_all(l->mem, l->b.len);
        return;
    }
    if (batch.len + l->b.len > TH_LOG_BATCH)
        th_log_flush();
    memcpy(batch.data + batch.len, l->mem, l->b.len); /* a line is at most TH_LOG_LINE_MAX */
    batch.len += l->b.len;
    if (l->level >= TH_LOG_WARN)
        th_log_flush();
}

void th_log_raw(const char *line, size_t n)
{
    th_log_flush();
    write_all(line, n);
}

void th_log_msg(th_log_level level, const char *event, const char *fmt, ...)
{
    struct th_logline l;
    if (!th_log_begin(&l, level, event))
        return;
    char msg[TH_LOG_VALUE_MAX + 1];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    th_log_str(&l, "msg", msg);
    th_log_end(&l);
}
