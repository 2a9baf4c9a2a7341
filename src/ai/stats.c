/* SPDX-License-Identifier: PostgreSQL */
/*
 * stats.c - see stats.h. A chained hash table keyed by (subject, model),
 * bounded by AI_STATS_MAX_SUBJECTS; the data path only increments.
 */
#include "ai/stats.h"

#include <stdbool.h>
#include <stdlib.h>
#include <string.h>

#include "ai/limits.h"
#include "util.h"

struct ai_entry {
	struct ai_entry *next;
	uint64_t hash;
	char *subject;
	char *model;
	uint16_t subject_len, model_len;    /* strlen of each, at most LIMITS_NAME_MAX */
	uint64_t requests;
	uint64_t refusals;
	uint64_t input_tokens;
	uint64_t output_tokens;
	double cost_cents;
	uint64_t rejected;                  /* usage records moved to sluice.usage_rejects */
};

struct ai_stats {
	struct ai_entry **buckets;
	size_t n_buckets;
	size_t n_entries;
	struct ai_entry other;              /* past AI_STATS_MAX_SUBJECTS */
	struct ai_stats_totals totals;
	struct ai_entry *last;              /* found last (never other): a subject's statements come in runs */
};

static const char *const refusal_names[N_REFUSAL_REASONS] = {
	"requests_per_minute", "tokens_per_minute", "tokens_per_day", "cost_cents_per_month",
	"max_concurrent", "untrusted_ai_user",
};

const char *refusal_reason_name(enum refusal_reason reason)
{
	return reason >= 0 && reason < N_REFUSAL_REASONS ? refusal_names[reason] : "unknown";
}


/*
 * FNV-1a over subject, a 0xff byte, model. It starts from 1469598103934665603,
 * not HASH_FNV1A_BASIS (a digit short of it): kept, because the exporter
 * walks the table in bucket order, so the hash decides the order of the
 * per-model samples and, past MAX_MODEL_LABELS, which models get a label.
 */
static uint64_t hash_names(const char *subject, const char *model)
{
	uint64_t h = hash_fnv1a(HASH_FNV1A_BASIS, subject, strlen(subject));
	h = hash_fnv1a(h, "\xff", 1);
	return hash_fnv1a(h, model, strlen(model));
}

static bool grow_table(struct ai_stats *m)
{
	size_t n = m->n_buckets ? m->n_buckets * 2 : 64;
	struct ai_entry **b = calloc(n, sizeof(*b));
	if (!b)
		return false;
	for (size_t i = 0; i < m->n_buckets; i++) {
		struct ai_entry *e, *next;
		for (e = m->buckets[i]; e; e = next) {
			next = e->next;
			e->next = b[e->hash % n];
			b[e->hash % n] = e;
		}
	}
	free(m->buckets);
	m->buckets = b;
	m->n_buckets = n;
	return true;
}

/* find_entry by the hash table. */
static struct ai_entry *find_entry_hashed(struct ai_stats *m, const char *subject, const char *model)
{
	char s[LIMITS_NAME_MAX + 1], mo[LIMITS_NAME_MAX + 1];
	str_copy(s, subject ? subject : "", sizeof(s));
	str_copy(mo, model ? model : "", sizeof(mo));
	uint64_t h = hash_names(s, mo);
	if (m->n_buckets) {
		for (struct ai_entry *e = m->buckets[h % m->n_buckets]; e; e = e->next)
			if (e->hash == h && strcmp(e->subject, s) == 0 && strcmp(e->model, mo) == 0)
				return e;
	}
	if (m->n_entries >= AI_STATS_MAX_SUBJECTS)
		return &m->other;
	if (m->n_entries >= m->n_buckets && !grow_table(m))
		return &m->other;
	struct ai_entry *e = calloc(1, sizeof(*e));
	if (!e || !(e->subject = strdup(s)) || !(e->model = strdup(mo))) {
		if (e)
			free(e->subject);
		free(e);
		return &m->other;
	}
	e->hash = h;
	e->subject_len = (uint16_t)strlen(s);
	e->model_len = (uint16_t)strlen(mo);
	e->next = m->buckets[h % m->n_buckets];
	m->buckets[h % m->n_buckets] = e;
	m->n_entries++;
	return e;
}

/*
 * Is name (NULL: "") keyed as kept (kept_len bytes), the entry's name: its
 * first LIMITS_NAME_MAX bytes? The lengths first, the bytes only then.
 */
static inline bool name_is(const char *name, const char *kept, size_t kept_len)
{
	if (!name || !name[0])
		return kept_len == 0;
	/* one strncmp, no measuring of name: equal in kept_len bytes, and name ends there (or is cut there) */
	return strncmp(kept, name, kept_len) == 0 && (kept_len == LIMITS_NAME_MAX || name[kept_len] == '\0');
}

/* The entry of (subject, model), made on first use; the "(other)" entry when full or OOM. */
static struct ai_entry *find_entry(struct ai_stats *m, const char *subject, const char *model)
{
	/* the same pair as last time: no copies, no hash */
	if (m->last && name_is(model, m->last->model, m->last->model_len) &&
	    name_is(subject, m->last->subject, m->last->subject_len))
		return m->last;
	struct ai_entry *e = find_entry_hashed(m, subject, model);
	if (e != &m->other)
		m->last = e;
	return e;
}

struct ai_stats *ai_stats_new(void)
{
	struct ai_stats *st = calloc(1, sizeof(*st));
	if (st) {
		st->other.subject = "(other)";
		st->other.model = "";
	}
	return st;
}

void ai_stats_free(struct ai_stats *st)
{
	if (!st)
		return;
	for (size_t i = 0; i < st->n_buckets; i++) {
		struct ai_entry *e, *next;
		for (e = st->buckets[i]; e; e = next) {
			next = e->next;
			free(e->subject);
			free(e->model);
			free(e);
		}
	}
	free(st->buckets);
	free(st);
}

void ai_stats_note_statement(struct ai_stats *st, const char *subject, const char *model,
                             enum refusal_reason reason)
{
	if (!st)
		return;
	struct ai_entry *e = find_entry(st, subject, model);
	if (reason == REFUSAL_NONE) {
		e->requests++;
		return;
	}
	e->refusals++;
	if (reason >= 0 && reason < N_REFUSAL_REASONS)
		st->totals.refusals[reason]++;
}

void ai_stats_note_usage(struct ai_stats *st, const char *subject, const char *model,
                         int64_t input_tokens, int64_t output_tokens, double cost_cents)
{
	if (!st)
		return;
	struct ai_entry *e = find_entry(st, subject, model);
	e->input_tokens += input_tokens > 0 ? (uint64_t)input_tokens : 0;
	e->output_tokens += output_tokens > 0 ? (uint64_t)output_tokens : 0;
	if (cost_cents > 0)
		e->cost_cents += cost_cents;
}

void ai_stats_note_journaled(struct ai_stats *st, bool journaled)
{
	if (st && journaled)
		st->totals.usage_records++;
	else if (st)
		st->totals.usage_lost++;
}

void ai_stats_note_rejected(struct ai_stats *st, const char *subject, const char *model)
{
	if (!st)
		return;
	st->totals.usage_rejected++;
	find_entry(st, subject, model)->rejected++;
}

static void entry_row(const struct ai_entry *e, struct ai_usage_row *row)
{
	row->subject = e->subject;
	row->model = e->model;
	row->requests = e->requests;
	row->refusals = e->refusals;
	row->input_tokens = e->input_tokens;
	row->output_tokens = e->output_tokens;
	row->cost_cents = e->cost_cents;
	row->rejected = e->rejected;
}

void ai_stats_foreach(const struct ai_stats *st, ai_usage_fn fn, void *arg)
{
	struct ai_usage_row row;
	if (!st)
		return;
	for (size_t i = 0; i < st->n_buckets; i++)
		for (struct ai_entry *e = st->buckets[i]; e; e = e->next) {
			entry_row(e, &row);
			fn(&row, arg);
		}
	const struct ai_entry *o = &st->other;
	if (o->requests || o->refusals || o->input_tokens || o->output_tokens || o->cost_cents > 0 || o->rejected) {
		entry_row(o, &row);
		fn(&row, arg);
	}
}

void ai_stats_totals(const struct ai_stats *st, struct ai_stats_totals *out)
{
	if (st)
		*out = st->totals;
	else
		memset(out, 0, sizeof(*out));
}

size_t ai_stats_entries(const struct ai_stats *st)
{
	return st ? st->n_entries : 0;
}

size_t ai_stats_entry_size(void)
{
	return sizeof(struct ai_entry);
}
