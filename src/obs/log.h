/*
 * Logs: one JSON object per line on stderr (or another fd), written with a single write(2) so
 * lines from several threads never interleave.
 *
 *   struct th_logline l;
 *   if (th_log_begin(&l, TH_LOG_INFO, "request")) {
 *       th_log_str(&l, "req", id);
 *       th_log_int(&l, "status", 200);
 *       th_log_end(&l);
 *   }
 *
 * Redaction is by construction: callers pass only what may be logged (masked numbers, ids,
 * reasons), never an OTP, a secret or a full phone number; the e2e suite greps every log line.
 * Values are JSON-escaped and cut to TH_LOG_VALUE_MAX bytes; a line never exceeds TH_LOG_LINE_MAX.
 */
#ifndef TH_OBS_LOG_H
#define TH_OBS_LOG_H

#include <stdbool.h>
#include <stdint.h>

#include "common/buf.h"
#include "common/types.h"

#define TH_LOG_LINE_MAX  4096
#define TH_LOG_VALUE_MAX 512

/* Sets the minimum level and the fd (default: TH_LOG_INFO, 2). Call before threads start. */
void th_log_init(th_log_level level, int fd);
/* Thread-safe: the minimum level from now on (a SIGHUP reload of log.level). */
void th_log_set_level(th_log_level level);
bool th_log_enabled(th_log_level level);
const char *th_log_level_name(th_log_level level);

struct th_logline {
    struct th_buf b;
    char mem[TH_LOG_LINE_MAX];
    bool dropped; /* a field did not fit: "truncated": true is added */
    th_log_level level;
};

/* Starts a line with ts, level and event; false (and nothing to end) when the level is off. */
bool th_log_begin(struct th_logline *l, th_log_level level, const char *event);
void th_log_str(struct th_logline *l, const char *key, const char *value); /* NULL: skipped */
void th_log_int(struct th_logline *l, const char *key, long long value);
void th_log_ms(struct th_logline *l, const char *key, int64_t us); /* microseconds as ms.3 */
void th_log_bool(struct th_logline *l, const char *key, bool value);
void th_log_end(struct th_logline *l);

/*
 * Batching, for event-loop threads: between th_log_batch_begin() and th_log_batch_end(), the
 * calling thread's lines collect in a buffer (TH_LOG_BATCH bytes, whole lines only) that
 * th_log_flush() writes in one write(2) (at most TH_LOG_BATCH bytes: about nine request lines); a
 * line that does not fit flushes the buffer first. The
 * loop flushes before it waits for events, so a line is out within the iteration that made it,
 * and a loop's lines never interleave with another thread's inside a line. The HTTP server also
 * flushes before libmicrohttpd can send an answer, so a request's line is written before its
 * answer leaves (a test, or an operator, that sees the answer finds the line). Lines of level warn
 * and above are written through at once (with what is buffered before them). A crash loses at most
 * the info lines of the current iteration. Other threads write each line directly.
 */
/* PIPE_BUF: a write to a pipe of at most this much is never interleaved with another writer's,
 * even when the pipe is full (journald, a log shipper): so neither is a line. */
#define TH_LOG_BATCH 4096
bool th_log_batch_begin(void); /* false: no memory, lines are written directly */
void th_log_flush(void);
void th_log_batch_end(void); /* flushes, frees */

/*
 * A complete line built elsewhere (an EMF metrics line, ending in '\n'), written at once in one
 * write(2) whatever log.level says: metrics are not a severity. Flushes this thread's batch first.
 */
void th_log_raw(const char *line, size_t n);

/* One-shot: {"ts":…,"level":…,"event":…,"msg":"<formatted>"}. */
void th_log_msg(th_log_level level, const char *event, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

#endif
