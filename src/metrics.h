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

/* Why the AI middleware refused a statement; the first five are enum limit_dim's. */
enum refusal_reason {
	REFUSAL_REQUESTS_PER_MINUTE,
	REFUSAL_TOKENS_PER_MINUTE,
	REFUSAL_TOKENS_PER_DAY,
	REFUSAL_COST_CENTS_PER_MONTH,
	REFUSAL_MAX_CONCURRENT,
	REFUSAL_UNTRUSTED_AI_USER,   /* ai_user set by a role not in tag_trusted_roles */
	N_REFUSAL_REASONS,
	REFUSAL_NONE = -1            /* admitted */
};

/* Label text of a reason ("requests_per_minute", ..., "untrusted_ai_user"). */
const char *refusal_reason_name(enum refusal_reason reason);

/*
 * An attributed statement of subject (model "" or NULL: none) was admitted
 * (REFUSAL_NONE) or refused. Called by the AI middleware; costs a hash
 * lookup. At most METRICS_MAX_SUBJECTS (subject, model) pairs are kept;
 * the rest are summed in subject "(other)".
 */
#define METRICS_MAX_SUBJECTS 100000
void metrics_note_ai_statement(struct sluice *sl, const char *subject, const char *model,
                               enum refusal_reason reason);

/*
 * A usage record of subject/model was made: tokens and cost (cents) for
 * SHOW USAGE and /metrics. For the usage recorder (src/ai/README.md).
 */
void metrics_note_ai_usage(struct sluice *sl, const char *subject, const char *model,
                           int64_t input_tokens, int64_t output_tokens, double cost_cents);

/* One (subject, model) of SHOW USAGE, since start. Strings borrowed for the callback. */
struct ai_usage_row {
	const char *subject;
	const char *model;          /* "" when the statements named no model */
	uint64_t requests;          /* admitted attributed statements */
	uint64_t refusals;
	uint64_t input_tokens;
	uint64_t output_tokens;
	double cost_cents;
	uint64_t rejected;          /* usage records moved to sluice.usage_rejects */
};

typedef void (*metrics_usage_fn)(const struct ai_usage_row *row, void *arg);

/*
 * A usage record of (subject, model) that PostgreSQL refused to store was
 * moved to sluice.usage_rejects: counted in SHOW USAGE (rejected) and in
 * /metrics (pgsluice_ai_usage_rejected_total). Names are borrowed.
 */
void metrics_note_ai_rejected(struct sluice *sl, const char *subject, const char *model);

/* Call fn for every (subject, model), in no particular order. */
void metrics_foreach_usage(struct sluice *sl, metrics_usage_fn fn, void *arg);

/* Refusals since start by reason (REFUSAL_* index); 0 before metrics_start. */
uint64_t metrics_refusals(const struct sluice *sl, enum refusal_reason reason);

/* (subject, model) pairs kept and the bytes of one, names not included (SHOW MEM). */
size_t metrics_usage_entries(const struct sluice *sl);
size_t metrics_usage_entry_size(void);

/*
 * Append the Prometheus text exposition (format 0.0.4) of sl to out;
 * returns false on OOM. What GET /metrics answers.
 */
struct evbuffer;
bool metrics_render(struct sluice *sl, struct evbuffer *out);

#endif
