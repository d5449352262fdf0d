/*
 * The writer's local spool (private to src/store): rows a shared store (PostgreSQL) could not
 * take because it was out of reach, kept in a small SQLite file on this node until the writer
 * flushes them, oldest first. A row is an opaque blob of a kind (the writer encodes it; a DLQ
 * entry's message is already sealed, so nothing in clear reaches this file).
 *
 * One thread at a time (the writer's). Counts are kept in memory: no query to know them.
 */
#ifndef TH_STORE_SPOOL_H
#define TH_STORE_SPOOL_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "common/err.h"

struct th_spool;

/*
 * Opens the spool at path, creating it (0600, its directory too) when create; otherwise
 * TH_E_NOTFOUND when the file does not exist. TH_E_STORE with a message in err on failure.
 */
th_err th_spool_open(const char *path, bool create, struct th_spool **out, char *err,
                     size_t errlen);
void th_spool_close(struct th_spool *sp); /* NULL is a no-op */

/* Rows held of a kind (kind < 0: all). */
long th_spool_count(const struct th_spool *sp, int kind);

/* Many puts in one transaction (one sync); put outside one is its own. */
th_err th_spool_begin(struct th_spool *sp);
th_err th_spool_commit(struct th_spool *sp);
th_err th_spool_put(struct th_spool *sp, int kind, const void *blob, size_t len);
/* Deletes the oldest row of kind: TH_E_NOTFOUND when there is none. */
th_err th_spool_drop_oldest(struct th_spool *sp, int kind);

/* Oldest first, at most limit rows; blob valid during the call. Non-zero from fn stops. */
typedef int (*th_spool_fn)(void *ud, int64_t seq, int kind, const void *blob, size_t len);
th_err th_spool_each(struct th_spool *sp, int limit, th_spool_fn fn, void *ud);
/* Deletes every row up to seq (the rows a flush has handed over). */
th_err th_spool_remove_upto(struct th_spool *sp, int64_t seq);

#endif
