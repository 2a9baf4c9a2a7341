/* SPDX-License-Identifier: PostgreSQL */
/*
 * stats.h - the AI middleware's counters: per (subject, model) statements
 * admitted and refused, tokens, cost and rejected usage records, refusals by
 * reason, usage records journaled and lost. ai/ counts; metrics.c and the
 * admin console read (ai_stats_foreach, ai_stats_totals): nothing is pushed
 * into the core.
 */
#ifndef SLUICE_AI_STATS_H
#define SLUICE_AI_STATS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

struct ai_stats;

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

/* At most this many (subject, model) pairs are kept; the rest are summed in subject "(other)". */
#define AI_STATS_MAX_SUBJECTS 100000

/* A new, empty set of counters (owned by the caller; ai_stats_free), or NULL when out of memory. */
struct ai_stats *ai_stats_new(void);

/* Free st and its entries; NULL is fine. */
void ai_stats_free(struct ai_stats *st);

/*
 * An attributed statement of subject (model "" or NULL: none) was admitted
 * (REFUSAL_NONE) or refused. Costs a hash lookup. st NULL: nothing.
 */
void ai_stats_note_statement(struct ai_stats *st, const char *subject, const char *model,
                             enum refusal_reason reason);

/* A usage record of subject/model was made (journaled or lost): its tokens and cost (US cents). */
void ai_stats_note_usage(struct ai_stats *st, const char *subject, const char *model,
                         int64_t input_tokens, int64_t output_tokens, double cost_cents);

/* A usage record was journaled (true) or could not be and is lost (false). */
void ai_stats_note_journaled(struct ai_stats *st, bool journaled);

/* A usage record of (subject, model) PostgreSQL refused was moved to sluice.usage_rejects. */
void ai_stats_note_rejected(struct ai_stats *st, const char *subject, const char *model);

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

typedef void (*ai_usage_fn)(const struct ai_usage_row *row, void *arg);

/* Call fn for every (subject, model) in the table's order, then "(other)" when it counted anything. */
void ai_stats_foreach(const struct ai_stats *st, ai_usage_fn fn, void *arg);

/* Totals since start. */
struct ai_stats_totals {
	uint64_t refusals[N_REFUSAL_REASONS];
	uint64_t usage_records;     /* journaled */
	uint64_t usage_lost;        /* could not be journaled */
	uint64_t usage_rejected;    /* moved to sluice.usage_rejects */
};
void ai_stats_totals(const struct ai_stats *st, struct ai_stats_totals *out);

/* (subject, model) pairs kept, and the bytes of one without its names (SHOW MEM). */
size_t ai_stats_entries(const struct ai_stats *st);
size_t ai_stats_entry_size(void);

#endif
