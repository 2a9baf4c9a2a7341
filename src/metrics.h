/* SPDX-License-Identifier: PostgreSQL */
/*
 * metrics.h - pgsluice's counters as operators read them: the pools'
 * counters summed per database with their stats_period averages (SHOW
 * STATS), statements of the AI middleware per subject and model (SHOW
 * USAGE), and the Prometheus text exposition served with libevent's evhttp
 * on metrics_listen_addr:metrics_listen_port (docs/admin.md lists every
 * metric). Owns struct metrics (sl->metrics); the counters themselves are
 * incremented on the data path (pool.h struct pool_stats, sl->stats).
 */
#ifndef SLUICE_METRICS_H
#define SLUICE_METRICS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "pool.h"

struct sluice;

/*
 * Start the stats_period timer and, when metrics_listen_addr is set, the
 * HTTP listener (GET /metrics). Returns false with errbuf set when the
 * address cannot be bound or on OOM.
 */
bool metrics_start(struct sluice *sl, char *errbuf, size_t errlen);

/* Stop both and free sl->metrics; safe when metrics_start was not called. */
void metrics_stop(struct sluice *sl);

/*
 * Call fn once per database that has pools, in order of first use: the sum
 * of its pools' counters since start (total) and the stats_period averages
 * (avg): counts and bytes per second, times per transaction, query or
 * server assignment (usec), as PgBouncer's SHOW STATS.
 */
typedef void (*metrics_db_fn)(const char *database, const struct pool_stats *total,
                              const struct pool_stats *avg, void *arg);
void metrics_foreach_database(struct sluice *sl, metrics_db_fn fn, void *arg);

/*
 * Append the Prometheus text exposition (format 0.0.4) of sl to out;
 * returns false on OOM. What GET /metrics answers.
 */
struct evbuffer;
bool metrics_render(struct sluice *sl, struct evbuffer *out);

#endif
