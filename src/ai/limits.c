/* SPDX-License-Identifier: PostgreSQL */
/*
 * limits.c - rate limits and budgets; see limits.h and docs/limits.md.
 * Rules and counters live in two chained hash tables keyed by (subject, model);
 * per-minute limits are sliding windows of one-second slots, budgets are UTC
 * day / month counters, and statements in flight hold reservations.
 */
#include "ai/limits.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "proto.h"
#include "util.h"

#define MINUTE_MS LIMITS_MINUTE_MS
#define DAY_MS    LIMITS_DAY_MS

/* Slack for floating-point bucket levels, in requests or tokens. */
#define LEVEL_EPSILON 1e-6

/* Cost is counted in millionths of a cent, so sums are exact. */
#define UCENTS_PER_CENT 1000000.0

#define MIN_MAX_ENTRIES 16
#define INITIAL_BUCKETS 64

/* The two sliding windows of a counter, by dimension. */
#define BUCKET_REQUESTS 0   /* LIMIT_REQUESTS_PER_MINUTE */
#define BUCKET_TOKENS   1   /* LIMIT_TOKENS_PER_MINUTE */

/*
 * One-second slots of a per-minute window: the 60 seconds before now plus the
 * second now is in, so that everything of the last 60 s is counted (and at
 * most one second more: the window errs on the strict side by under 1 s).
 */
#define WINDOW_SLOTS 61

static const char *const dim_names[LIMIT_N_DIMS] = {
	"requests_per_minute", "tokens_per_minute", "tokens_per_day", "cost_cents_per_month",
	"max_concurrent",
};

static const char *const dim_windows[LIMIT_N_DIMS] = {
	"in the last minute", "in the last minute", "today (UTC)", "this month (UTC)", "in flight",
};

const char *limit_dim_name(enum limit_dim dim)
{
	return (unsigned)dim < LIMIT_N_DIMS ? dim_names[dim] : "?";
}

void limit_values_init(struct limit_values *v)
{
	v->requests_per_minute = LIMIT_INHERIT;
	v->tokens_per_minute = LIMIT_INHERIT;
	v->tokens_per_day = LIMIT_INHERIT;
	v->cost_cents_per_month = LIMIT_INHERIT;
	v->max_concurrent = LIMIT_INHERIT;
}

/* ---- UTC calendar ---- */

static int64_t floor_div(int64_t a, int64_t b)
{
	int64_t q = a / b;
	return (a % b != 0 && (a < 0) != (b < 0)) ? q - 1 : q;
}

/* Days since 1970-01-01 of a proleptic Gregorian date (H. Hinnant's algorithm). */
static int64_t days_from_civil(int64_t y, int m, int d)
{
	y -= m <= 2;
	int64_t era = floor_div(y, 400);
	int64_t yoe = y - era * 400;
	int64_t doy = (153 * (m + (m > 2 ? -3 : 9)) + 2) / 5 + d - 1;
	int64_t doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
	return era * 146097 + doe - 719468;
}

/* The date of a day number (inverse of days_from_civil). */
static void civil_from_days(int64_t z, int64_t *y, int *m, int *d)
{
	z += 719468;
	int64_t era = floor_div(z, 146097);
	int64_t doe = z - era * 146097;
	int64_t yoe = (doe - doe / 1460 + doe / 36524 - doe / 146096) / 365;
	int64_t doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
	int64_t mp = (5 * doy + 2) / 153;
	*d = (int)(doy - (153 * mp + 2) / 5 + 1);
	*m = (int)(mp < 10 ? mp + 3 : mp - 9);
	*y = yoe + era * 400 + (*m <= 2);
}

static int64_t day_start(int64_t ms)
{
	return floor_div(ms, DAY_MS) * DAY_MS;
}

static int64_t month_start(int64_t ms)
{
	int64_t y;
	int m, d;
	civil_from_days(floor_div(ms, DAY_MS), &y, &m, &d);
	return days_from_civil(y, m, 1) * DAY_MS;
}

static int64_t next_month_start(int64_t ms)
{
	int64_t y;
	int m, d;
	civil_from_days(floor_div(ms, DAY_MS), &y, &m, &d);
	return (m == 12 ? days_from_civil(y + 1, 1, 1) : days_from_civil(y, m + 1, 1)) * DAY_MS;
}

/* "YYYY-MM-DD HH:MM:SS UTC" */
static void format_utc(int64_t ms, char *buf, size_t len)
{
	int64_t days = floor_div(ms, DAY_MS);
	int64_t sec = (ms - days * DAY_MS) / 1000;
	int64_t y;
	int m, d;
	civil_from_days(days, &y, &m, &d);
	snprintf(buf, len, "%04lld-%02d-%02d %02d:%02d:%02d UTC", (long long)y, m, d,
	         (int)(sec / 3600), (int)(sec / 60 % 60), (int)(sec % 60));
}

/* ---- (subject, model) keys and a chained hash table of them ---- */

struct name_key {
	const char *subject;
	size_t subject_len;     /* at most LIMITS_NAME_MAX */
	const char *model;      /* "" for subject-wide */
	size_t model_len;
	uint64_t hash;
};

/* Embedded first in every rule and counter; the names follow the struct in one allocation. */
struct hnode {
	struct hnode *next;     /* bucket chain */
	uint64_t hash;
	char *subject;
	size_t subject_len;
	char *model;
	size_t model_len;
};

struct htab {
	struct hnode **buckets;
	size_t n_buckets;       /* a power of two */
	size_t count;
};

static size_t name_len(const char *s)
{
	return s ? strnlen(s, LIMITS_NAME_MAX) : 0;
}

/* FNV-1a over subject, a 0 byte, model. Unseeded: names come from trusted roles. */
static uint64_t hash_names(const char *subject, size_t slen, const char *model, size_t mlen)
{
	uint64_t h = hash_fnv1a(HASH_FNV1A_BASIS, subject, slen);
	h = hash_fnv1a(h, "", 1);
	return hash_fnv1a(h, model, mlen);
}

/* Model NULL, "" and "*" all mean "every model of the subject". */
static struct name_key make_key(const char *subject, const char *model)
{
	struct name_key k;
	if (!model || strcmp(model, "*") == 0)
		model = "";
	k.subject = subject ? subject : "";
	k.subject_len = name_len(k.subject);
	k.model = model;
	k.model_len = name_len(model);
	k.hash = hash_names(k.subject, k.subject_len, k.model, k.model_len);
	return k;
}

static bool htab_init(struct htab *t)
{
	t->buckets = calloc(INITIAL_BUCKETS, sizeof(*t->buckets));
	t->n_buckets = INITIAL_BUCKETS;
	t->count = 0;
	return t->buckets != NULL;
}

static struct hnode *htab_find(const struct htab *t, const struct name_key *k)
{
	for (struct hnode *n = t->buckets[k->hash & (t->n_buckets - 1)]; n; n = n->next)
		if (n->hash == k->hash && n->subject_len == k->subject_len &&
		    n->model_len == k->model_len && memcmp(n->subject, k->subject, k->subject_len) == 0 &&
		    memcmp(n->model, k->model, k->model_len) == 0)
			return n;
	return NULL;
}

/* Double the buckets when the load passes 1; on allocation failure chains just grow. */
static void htab_insert(struct htab *t, struct hnode *n)
{
	if (t->count >= t->n_buckets) {
		size_t nb = t->n_buckets * 2;
		struct hnode **b = calloc(nb, sizeof(*b));
		if (b) {
			for (size_t i = 0; i < t->n_buckets; i++) {
				struct hnode *c = t->buckets[i];
				while (c) {
					struct hnode *next = c->next;
					c->next = b[c->hash & (nb - 1)];
					b[c->hash & (nb - 1)] = c;
					c = next;
				}
			}
			free(t->buckets);
			t->buckets = b;
			t->n_buckets = nb;
		}
	}
	struct hnode **head = &t->buckets[n->hash & (t->n_buckets - 1)];
	n->next = *head;
	*head = n;
	t->count++;
}

static void htab_remove(struct htab *t, struct hnode *n)
{
	for (struct hnode **p = &t->buckets[n->hash & (t->n_buckets - 1)]; *p; p = &(*p)->next)
		if (*p == n) {
			*p = n->next;
			t->count--;
			return;
		}
}

/* malloc a struct of size bytes with hnode first and the key's names after it. */
static void *alloc_named(size_t size, const struct name_key *k)
{
	char *mem = calloc(1, size + k->subject_len + 1 + k->model_len + 1);
	if (!mem)
		return NULL;
	struct hnode *n = (struct hnode *)mem;
	n->hash = k->hash;
	n->subject = mem + size;
	memcpy(n->subject, k->subject, k->subject_len);
	n->subject_len = k->subject_len;
	n->model = n->subject + k->subject_len + 1;
	memcpy(n->model, k->model, k->model_len);
	n->model_len = k->model_len;
	return mem;
}

/* ---- rules ---- */

struct limit_rule {
	struct hnode node;             /* first: the (subject, model) it is written for */
	double ini[LIMIT_N_DIMS];      /* from [limits]; < 0: not set */
	double table[LIMIT_N_DIMS];    /* from sluice.limits; < 0: not set */
};

struct limit_rules {
	struct htab tab;
	uint64_t generation;           /* bumped on every change; counters re-resolve */
};

struct limit_rules *limits_rules_new(void)
{
	struct limit_rules *rules = calloc(1, sizeof(*rules));
	if (!rules)
		return NULL;
	if (!htab_init(&rules->tab)) {
		free(rules);
		return NULL;
	}
	return rules;
}

void limits_rules_free(struct limit_rules *rules)
{
	if (!rules)
		return;
	for (size_t i = 0; i < rules->tab.n_buckets; i++) {
		struct hnode *n = rules->tab.buckets[i];
		while (n) {
			struct hnode *next = n->next;
			free(n);
			n = next;
		}
	}
	free(rules->tab.buckets);
	free(rules);
}

static struct limit_rule *rule_find(const struct limit_rules *rules, const char *subject,
                                    const char *model)
{
	struct name_key k = make_key(subject, model);
	return (struct limit_rule *)htab_find(&rules->tab, &k);
}

static struct limit_rule *rule_get(struct limit_rules *rules, const char *subject,
                                   const char *model)
{
	struct name_key k = make_key(subject, model);
	struct limit_rule *r = (struct limit_rule *)htab_find(&rules->tab, &k);
	if (r)
		return r;
	r = alloc_named(sizeof(*r), &k);
	if (!r)
		return NULL;
	for (int d = 0; d < LIMIT_N_DIMS; d++)
		r->ini[d] = r->table[d] = -1;
	htab_insert(&rules->tab, &r->node);
	return r;
}

static bool rule_is_empty(const struct limit_rule *r)
{
	for (int d = 0; d < LIMIT_N_DIMS; d++)
		if (r->ini[d] >= 0 || r->table[d] >= 0)
			return false;
	return true;
}

static void rule_drop_if_empty(struct limit_rules *rules, struct limit_rule *r)
{
	if (rule_is_empty(r)) {
		htab_remove(&rules->tab, &r->node);
		free(r);
	}
}

/* The value a rule sets for d (the override first), or -1. */
static double rule_value(const struct limit_rule *r, int d)
{
	if (!r)
		return -1;
	return r->table[d] >= 0 ? r->table[d] : r->ini[d];
}

static void resolve_into(const struct limit_rules *rules, const char *subject, const char *model,
                         double out[LIMIT_N_DIMS])
{
	bool per_model = model && *model && strcmp(model, "*") != 0;
	const struct limit_rule *own = rule_find(rules, subject, per_model ? model : NULL);
	const struct limit_rule *subj = per_model ? rule_find(rules, subject, NULL) : NULL;
	/* a group's counters have only the group's own limits: "default" is per subject */
	bool group = subject && strncmp(subject, LIMITS_GROUP_PREFIX, strlen(LIMITS_GROUP_PREFIX)) == 0;
	const struct limit_rule *dflt = group ? NULL : rule_find(rules, "default", per_model ? model : NULL);
	for (int d = 0; d < LIMIT_N_DIMS; d++) {
		double v = rule_value(own, d);
		if (v < 0 && rule_value(subj, d) < 0)
			v = rule_value(dflt, d);
		out[d] = v < 0 ? -1 : v;
	}
}

void limits_resolve(const struct limit_rules *rules, const char *subject, const char *model,
                    struct limit_values *out)
{
	double v[LIMIT_N_DIMS];
	resolve_into(rules, subject, model, v);
	out->requests_per_minute = v[0] < 0 ? LIMIT_INHERIT : (int64_t)v[0];
	out->tokens_per_minute = v[1] < 0 ? LIMIT_INHERIT : (int64_t)v[1];
	out->tokens_per_day = v[2] < 0 ? LIMIT_INHERIT : (int64_t)v[2];
	out->cost_cents_per_month = v[3] < 0 ? LIMIT_INHERIT : v[3];
	out->max_concurrent = v[4] < 0 ? LIMIT_INHERIT : (int64_t)v[4];
}

static bool is_separator(char c)
{
	return c == ' ' || c == '\t' || c == ',' || c == '\r' || c == '\n';
}

static const char *skip_blanks(const char *p)
{
	while (*p == ' ' || *p == '\t')
		p++;
	return p;
}

/*
 * Parse the text of one value: digits for the integer dimensions, digits with
 * an optional fraction for cost. Returns false with errbuf set.
 */
static bool parse_limit_value(int d, const char *text, size_t len, const char *key,
                              const char *name, size_t nlen, double *out,
                              char *errbuf, size_t errlen)
{
	bool is_cost = d == LIMIT_COST_CENTS_PER_MONTH;
	size_t int_digits = 0, frac_digits = 0;
	bool dot = false, bad = len == 0;
	for (size_t i = 0; i < len && !bad; i++) {
		if (text[i] >= '0' && text[i] <= '9')
			dot ? frac_digits++ : int_digits++;
		else if (text[i] == '.' && is_cost && !dot)
			dot = true;
		else
			bad = true;
	}
	/* cost: "5", "0.5", ".5" but not "." or "5."; the others: digits only */
	if (bad || (dot && frac_digits == 0) || int_digits + frac_digits == 0) {
		snprintf(errbuf, errlen, "invalid limit \"%.*s=%.*s\" for \"%s\": expected a non-negative %s",
		         (int)nlen, name, (int)len, text, key, is_cost ? "number" : "integer");
		return false;
	}
	double max = is_cost ? LIMITS_MAX_CENTS : (double)LIMITS_MAX_COUNT;
	double v = HUGE_VAL;
	if (int_digits <= 16) {
		char num[64];
		snprintf(num, sizeof(num), "%.*s", (int)len, text);
		v = strtod(num, NULL);
	}
	if (v > max) {
		snprintf(errbuf, errlen, "invalid limit \"%.*s=%.*s\" for \"%s\": the maximum is %.0f",
		         (int)nlen, name, (int)len, text, key, max);
		return false;
	}
	*out = v;
	return true;
}

bool limits_parse_line(struct limit_rules *rules, const char *key, const char *value,
                       char *errbuf, size_t errlen)
{
	if (!key)
		key = "";
	if (!value)
		value = "";
	const char *slash = strchr(key, '/');
	size_t subject_len = slash ? (size_t)(slash - key) : strlen(key);
	if (subject_len == 0 || (slash && slash[1] == '\0')) {
		snprintf(errbuf, errlen, "invalid limits key \"%s\": expected subject or subject/model", key);
		return false;
	}

	double vals[LIMIT_N_DIMS];
	for (int d = 0; d < LIMIT_N_DIMS; d++)
		vals[d] = -1;
	int given = 0;
	const char *p = value;
	for (;;) {
		while (is_separator(*p))
			p++;
		if (!*p)
			break;
		const char *name = p;
		while (*p && !is_separator(*p) && *p != '=')
			p++;
		size_t nlen = (size_t)(p - name);
		p = skip_blanks(p);
		if (*p != '=' || nlen == 0) {
			const char *end = name + nlen + (nlen == 0);   /* "=60": show the token */
			while (*end && !is_separator(*end))
				end++;
			snprintf(errbuf, errlen,
			         "invalid limit \"%.*s\" for \"%s\": expected dimension=value, e.g. requests_per_minute=60",
			         (int)(end - name), name, key);
			return false;
		}
		p = skip_blanks(p + 1);
		const char *text = p;
		while (*p && !is_separator(*p))
			p++;
		size_t tlen = (size_t)(p - text);

		int d = 0;
		while (d < LIMIT_N_DIMS && !(strlen(dim_names[d]) == nlen &&
		                             strncasecmp(dim_names[d], name, nlen) == 0))
			d++;
		if (d == LIMIT_N_DIMS) {
			snprintf(errbuf, errlen,
			         "unknown limit dimension \"%.*s\" for \"%s\": expected requests_per_minute, "
			         "tokens_per_minute, tokens_per_day, cost_cents_per_month or max_concurrent",
			         (int)nlen, name, key);
			return false;
		}
		if (!parse_limit_value(d, text, tlen, key, name, nlen, &vals[d], errbuf, errlen))
			return false;
		given++;
	}
	if (!given) {
		snprintf(errbuf, errlen,
		         "no limits given for \"%s\": expected dimension=value, e.g. requests_per_minute=60", key);
		return false;
	}

	char subject[LIMITS_NAME_MAX + 1];
	if (subject_len > LIMITS_NAME_MAX)
		subject_len = LIMITS_NAME_MAX;
	snprintf(subject, sizeof(subject), "%.*s", (int)subject_len, key);
	struct limit_rule *r = rule_get(rules, subject, slash ? slash + 1 : NULL);
	if (!r) {
		snprintf(errbuf, errlen, "out of memory");
		return false;
	}
	for (int d = 0; d < LIMIT_N_DIMS; d++)
		if (vals[d] >= 0)
			r->ini[d] = vals[d];
	rules->generation++;
	return true;
}

/* values as the per-dimension array; false when one is above the maximum or NaN. */
static bool values_to_array(const struct limit_values *v, double out[LIMIT_N_DIMS])
{
	int64_t ints[LIMIT_N_DIMS] = { v->requests_per_minute, v->tokens_per_minute, v->tokens_per_day, 0,
	                               v->max_concurrent };
	for (int d = 0; d < LIMIT_N_DIMS; d++) {
		if (d == LIMIT_COST_CENTS_PER_MONTH)
			continue;
		if (ints[d] > LIMITS_MAX_COUNT)
			return false;
		out[d] = ints[d] < 0 ? -1 : (double)ints[d];
	}
	double c = v->cost_cents_per_month;
	if (isnan(c) || c > LIMITS_MAX_CENTS)
		return false;
	out[LIMIT_COST_CENTS_PER_MONTH] = c < 0 ? -1 : c;
	return true;
}

bool limits_set_override(struct limit_rules *rules, const char *subject, const char *model,
                         const struct limit_values *values)
{
	double v[LIMIT_N_DIMS];
	if (!subject || !*subject || !values || !values_to_array(values, v))
		return false;
	struct limit_rule *r = rule_get(rules, subject, model);
	if (!r)
		return false;
	memcpy(r->table, v, sizeof(r->table));
	rule_drop_if_empty(rules, r);
	rules->generation++;
	return true;
}

void limits_clear_overrides(struct limit_rules *rules)
{
	for (size_t i = 0; i < rules->tab.n_buckets; i++) {
		struct hnode *n = rules->tab.buckets[i];
		while (n) {
			struct hnode *next = n->next;
			struct limit_rule *r = (struct limit_rule *)n;
			for (int d = 0; d < LIMIT_N_DIMS; d++)
				r->table[d] = -1;
			rule_drop_if_empty(rules, r);
			n = next;
		}
	}
	rules->generation++;
}

bool limits_copy_overrides(struct limit_rules *dst, const struct limit_rules *src)
{
	bool ok = true;
	for (size_t i = 0; i < src->tab.n_buckets; i++)
		for (const struct hnode *n = src->tab.buckets[i]; n; n = n->next) {
			const struct limit_rule *s = (const struct limit_rule *)n;
			bool any = false;
			for (int d = 0; d < LIMIT_N_DIMS; d++)
				any |= s->table[d] >= 0;
			if (!any)
				continue;
			struct limit_rule *r = rule_get(dst, n->subject, n->model);
			if (!r) {
				ok = false;
				continue;
			}
			memcpy(r->table, s->table, sizeof(r->table));
		}
	dst->generation++;
	return ok;
}

/* ---- counters ---- */

/* Local use of one UTC day not yet exported. */
struct limit_pending {
	bool used;
	int64_t day_start_ms;
	int64_t requests;
	int64_t tokens;
	int64_t ucents;
};

/*
 * A sliding minute: use per one-second slot, slot[s % WINDOW_SLOTS] holding
 * second s for s in (head_sec - WINDOW_SLOTS, head_sec]. Allocated only for
 * a per-minute limit in force (504 bytes).
 */
struct minute_window {
	int64_t head_sec;                /* the newest second counted */
	int64_t total;                   /* the sum of slot[] */
	int64_t slot[WINDOW_SLOTS];
};

/*
 * What the statements in flight hold, by reservation epoch (now_ms /
 * LIMITS_RESERVATION_EPOCH_MS): slot [epoch & 1]. A slot older than the
 * previous epoch is dropped, so a reservation nobody settles lives 1 to 2 epochs.
 */
struct resv_slot {
	int64_t epoch;
	int64_t tokens;
	int64_t ucents;
	int64_t inflight;                /* statements */
};

/* One leased slice (sluice.rate_leases): spendable until ends_ms. */
struct lease_part {
	int64_t amount;                  /* not yet spent */
	int64_t grant_sec;               /* PostgreSQL's second it was granted in (for giving back) */
	int64_t ends_ms;
};

#define LEASE_PARTS 4

/* The slices one counter holds for one per-minute dimension, oldest first. */
struct lease_bucket {
	struct lease_part part[LEASE_PARTS];
	int n;
	int64_t debt;                    /* tokens charged beyond what was held, paid from the next slice */
	int64_t ask_amount;              /* what the next ask wants */
	int64_t next_ask_ms;             /* no ask before (back-off after a refusal or a failure) */
	bool want;                       /* an ask is due */
	bool in_flight;                  /* an ask is out */
};

struct entry_lease {
	struct lease_bucket b[2];        /* BUCKET_REQUESTS, BUCKET_TOKENS */
	struct limit_entry *next, *prev; /* the limits' list of counters with leases */
};

struct limit_entry {
	struct hnode node;               /* first: (subject, model); model "" = subject-wide */
	struct limit_entry *newer;       /* LRU list, most recently used first */
	struct limit_entry *older;
	int64_t last_used_ms;
	uint64_t rules_generation;       /* of the rules limit[] was resolved from */
	double limit[LIMIT_N_DIMS];      /* in force; < 0: none */
	bool limited;                    /* some limit[] >= 0 */
	int64_t fresh_ms;                /* the start of the second entry_refresh last did its work in */
	struct minute_window *win[2];    /* requests / tokens (BUCKET_*); NULL: nothing counted */
	struct resv_slot resv[2];
	uint8_t alerted[2];              /* thresholds already reported this day / month (tokens_per_day, cost) */
	bool budget_dirty;               /* a budget's use or reservation changed since limits_foreach_changed_budget */
	double mean_tokens;              /* running mean of the tokens of recent local calls */
	double mean_ucents;              /* and of their cost */
	int64_t day_start_ms;            /* the UTC day tokens_day counts */
	int64_t tokens_day;
	int64_t month_start_ms;          /* the UTC month ucents_month counts */
	int64_t ucents_month;            /* millionths of a cent */
	struct limit_pending pending[2]; /* at most two days awaiting export */
	struct entry_lease *lease;       /* NULL unless leasing touched this counter */
};

/* A budget threshold crossed, waiting for limits_take_alerts (names owned). */
struct queued_alert {
	struct limit_alert a;
	char *subject, *model;
};

#define MAX_QUEUED_ALERTS 4096

struct limits {
	struct limit_rules *rules;
	struct htab entries;
	struct limit_entry *newest;
	struct limit_entry *oldest;
	size_t max_entries;
	struct limits_stats stats;
	double thresholds[LIMITS_MAX_THRESHOLDS];   /* ascending percents */
	size_t n_thresholds;
	struct queued_alert *alerts;
	size_t n_alerts, cap_alerts;
	size_t dirty_budgets;            /* counters with budget_dirty set */
	struct htab members;             /* subject -> its groups (struct group_member) */
	int lease_instances;             /* 0: leasing off */
	struct limit_entry *leased;      /* counters with e->lease, newest first */
	/* the UTC day and month day_start_of and month_start_of last computed:
	 * every statement asks, the divisions and calendar math are done once */
	int64_t cal_day_start, cal_day_end;
	int64_t cal_month_start, cal_month_end;
};

/* The groups a subject belongs to (sluice.subject_groups), as counter names "group:<name>". */
struct group_member {
	struct hnode node;               /* first: (subject, "") */
	size_t n;
	char *groups[LIMITS_MAX_GROUPS];
};

/*
 * Counters freed by any struct limits of the process: a reservation's
 * counter pointers (limit_reservation.counters) are good while it is
 * unchanged. Event loop only, as the limits are.
 */
static uint64_t counters_freed;

struct limits *limits_new(struct limit_rules *rules, size_t max_entries)
{
	struct limits *l = calloc(1, sizeof(*l));
	if (!l)
		return NULL;
	if (!rules)
		rules = limits_rules_new();
	if (!rules || !htab_init(&l->entries) || !htab_init(&l->members)) {
		free(l->entries.buckets);
		limits_rules_free(rules);
		free(l);
		return NULL;
	}
	l->rules = rules;
	if (max_entries == 0)
		max_entries = LIMITS_DEFAULT_MAX_ENTRIES;
	l->max_entries = max_entries < MIN_MAX_ENTRIES ? MIN_MAX_ENTRIES : max_entries;
	return l;
}

void limits_free(struct limits *l)
{
	if (!l)
		return;
	struct limit_entry *e = l->newest;
	counters_freed++;
	while (e) {
		struct limit_entry *next = e->older;
		free(e->win[0]);
		free(e->win[1]);
		free(e->lease);
		free(e);
		e = next;
	}
	free(l->entries.buckets);
	limits_rules_free(l->rules);
	for (size_t i = 0; i < l->n_alerts; i++) {
		free(l->alerts[i].subject);
		free(l->alerts[i].model);
	}
	free(l->alerts);
	limits_clear_groups(l);
	free(l->members.buckets);
	free(l);
}

void limits_set_rules(struct limits *l, struct limit_rules *rules)
{
	if (!rules)
		rules = limits_rules_new();
	if (!rules)
		return;   /* out of memory: keep the old rules */
	uint64_t old_gen = l->rules->generation;
	rules->generation = (rules->generation > old_gen ? rules->generation : old_gen) + 1;
	limits_rules_free(l->rules);
	l->rules = rules;
}

struct limit_rules *limits_get_rules(struct limits *l)
{
	return l->rules;
}

static void lru_unlink(struct limits *l, struct limit_entry *e)
{
	if (e->newer)
		e->newer->older = e->older;
	else
		l->newest = e->older;
	if (e->older)
		e->older->newer = e->newer;
	else
		l->oldest = e->newer;
	e->newer = e->older = NULL;
}

static void lru_push_newest(struct limits *l, struct limit_entry *e)
{
	e->older = l->newest;
	e->newer = NULL;
	if (l->newest)
		l->newest->newer = e;
	else
		l->oldest = e;
	l->newest = e;
}

/* day_start(ms), from the cached day when ms is in it. */
static int64_t day_start_of(struct limits *l, int64_t ms)
{
	if (ms < l->cal_day_start || ms >= l->cal_day_end) {
		l->cal_day_start = day_start(ms);
		l->cal_day_end = l->cal_day_start + DAY_MS;
	}
	return l->cal_day_start;
}

/* month_start(ms), from the cached month when ms is in it. */
static int64_t month_start_of(struct limits *l, int64_t ms)
{
	if (ms < l->cal_month_start || ms >= l->cal_month_end) {
		l->cal_month_start = month_start(ms);
		l->cal_month_end = next_month_start(ms);
	}
	return l->cal_month_start;
}

static int64_t second_of(int64_t ms)
{
	return floor_div(ms, 1000);
}

static size_t slot_of(int64_t sec)
{
	return (size_t)(((sec % WINDOW_SLOTS) + WINDOW_SLOTS) % WINDOW_SLOTS);
}

/* Move w's head to second sec, dropping the slots that leave the window. */
static void window_advance(struct minute_window *w, int64_t sec)
{
	if (sec <= w->head_sec)
		return;   /* a clock stepping back counts into the newest slot */
	if (sec - w->head_sec >= WINDOW_SLOTS) {
		memset(w->slot, 0, sizeof(w->slot));
		w->total = 0;
	} else {
		for (int64_t s = w->head_sec + 1; s <= sec; s++) {
			int64_t *slot = &w->slot[slot_of(s)];
			w->total -= *slot;
			*slot = 0;
		}
	}
	w->head_sec = sec;
}

static int64_t window_total(const struct minute_window *w)
{
	return w ? w->total : 0;
}

/*
 * Milliseconds from now until at least need (> 0) has left window w; when all
 * of it leaving is not enough, until it is empty (at least 1).
 */
static int64_t window_retry_ms(const struct minute_window *w, double need, int64_t now)
{
	if (!w || w->total <= 0)
		return 1000;   /* only statements in flight hold the room: they settle soon */
	double dropped = 0;
	int64_t s = w->head_sec - (WINDOW_SLOTS - 1);
	for (; s < w->head_sec; s++) {
		dropped += (double)w->slot[slot_of(s)];
		if (dropped >= need - LEVEL_EPSILON)
			break;
	}
	int64_t ms = (s + WINDOW_SLOTS) * 1000 - now;   /* second s leaves the window then */
	return ms < 1 ? 1 : ms;
}

/* a + b for non-negative counts, saturating instead of overflowing. */
static int64_t add_count(int64_t a, int64_t b)
{
	return a > INT64_MAX - b ? INT64_MAX : a + b;
}

/* Count n (> 0) into the window of bucket b at now; no window when out of memory (fails open). */
static void window_add(struct limit_entry *e, int b, int64_t now, int64_t n)
{
	if (n <= 0)
		return;
	if (!e->win[b]) {
		e->win[b] = calloc(1, sizeof(*e->win[b]));
		if (!e->win[b])
			return;
		e->win[b]->head_sec = second_of(now);
	}
	struct minute_window *w = e->win[b];
	window_advance(w, second_of(now));
	int64_t *slot = &w->slot[slot_of(w->head_sec)];
	*slot = add_count(*slot, n);
	w->total = add_count(w->total, n);
}

static int64_t resv_epoch(int64_t now)
{
	return floor_div(now, LIMITS_RESERVATION_EPOCH_MS);
}

/* Drop reservation slots older than the previous epoch: their statements are presumed gone. */
static void resv_expire(struct limit_entry *e, int64_t now)
{
	int64_t epoch = resv_epoch(now);
	for (int i = 0; i < 2; i++)
		if (e->resv[i].epoch < epoch - 1 && (e->resv[i].tokens || e->resv[i].ucents || e->resv[i].inflight))
			memset(&e->resv[i], 0, sizeof(e->resv[i]));
}

/* What statements in flight hold on e (expired slots already dropped). */
static void resv_totals(const struct limit_entry *e, int64_t *tokens, int64_t *ucents, int64_t *inflight)
{
	*tokens = add_count(e->resv[0].tokens, e->resv[1].tokens);
	*ucents = add_count(e->resv[0].ucents, e->resv[1].ucents);
	*inflight = e->resv[0].inflight + e->resv[1].inflight;
}

/* entry_refresh's work, when it has some (out of line: the usual call has none). */
static __attribute__((noinline)) void entry_refresh_slow(struct limits *l, struct limit_entry *e, int64_t now)
{
	if (e->rules_generation != l->rules->generation) {
		resolve_into(l->rules, e->node.subject, e->node.model, e->limit);
		e->rules_generation = l->rules->generation;
		e->limited = false;
		for (int d = 0; d < LIMIT_N_DIMS; d++)
			e->limited |= e->limit[d] >= 0;
	}
	e->fresh_ms = second_of(now) * 1000;
	for (int b = 0; b < 2; b++) {
		if (e->limit[b] <= 0) {
			free(e->win[b]);   /* no limit, or 0: nothing to remember */
			e->win[b] = NULL;
		} else if (e->win[b]) {
			window_advance(e->win[b], second_of(now));
		}
	}
	resv_expire(e, now);
	int64_t ds = day_start_of(l, now);
	if (ds > e->day_start_ms) {
		e->day_start_ms = ds;
		e->tokens_day = 0;
		e->alerted[0] = 0;
	}
	int64_t ms = month_start_of(l, now);
	if (ms > e->month_start_ms) {
		e->month_start_ms = ms;
		e->ucents_month = 0;
		e->alerted[1] = 0;
	}
}

/* Resolve limits if the rules changed, move the windows to now, roll day and month. */
static inline void entry_refresh(struct limits *l, struct limit_entry *e, int64_t now)
{
	/* Same rules, same second as the last refresh: windows move by the
	 * second, and epochs, days and months are whole seconds, so the work
	 * would change nothing. */
	if (e->rules_generation == l->rules->generation && now >= e->fresh_ms && now - e->fresh_ms < 1000)
		return;
	entry_refresh_slow(l, e, now);
}

static bool entry_at_rest(const struct limit_entry *e)
{
	int64_t rt, ru, ri;
	resv_totals(e, &rt, &ru, &ri);
	return window_total(e->win[0]) == 0 && window_total(e->win[1]) == 0 && e->tokens_day == 0 &&
	       e->ucents_month == 0 && !e->pending[0].used && !e->pending[1].used && !rt && !ru && !ri;
}

static void lease_drop(struct limits *l, struct limit_entry *e);

static void entry_free(struct limits *l, struct limit_entry *e)
{
	counters_freed++;
	lease_drop(l, e);   /* what it held is lost: PostgreSQL counts it until it ages out */
	if (e->budget_dirty)
		l->dirty_budgets--;
	lru_unlink(l, e);
	htab_remove(&l->entries, &e->node);
	free(e->win[0]);
	free(e->win[1]);
	free(e);
}

/* Does model name one: not NULL, "" or "*" (all models of the subject)? */
static bool has_model(const char *model)
{
	return model && *model && strcmp(model, "*") != 0;
}

/*
 * The two most recently used counters, when one is (subject, model): a
 * statement gets its subject's and its subject/model counter, so a subject
 * that runs statements in a row finds both here, without hashing its names
 * (the lengths are compared first, the bytes only of a counter that may
 * match). NULL: look in the table.
 */
static struct limit_entry *entry_recent(const struct limits *l, const char *subject, const char *model)
{
	if (!model || (model[0] == '*' && model[1] == '\0'))
		model = "";
	if (!subject)
		subject = "";
	size_t slen = strnlen(subject, LIMITS_NAME_MAX), mlen = model[0] ? strnlen(model, LIMITS_NAME_MAX) : 0;
	struct limit_entry *e = l->newest;
	for (int i = 0; i < 2 && e; i++, e = e->older)
		if (e->node.subject_len == slen && e->node.model_len == mlen &&
		    memcmp(e->node.subject, subject, slen) == 0 && (mlen == 0 || memcmp(e->node.model, model, mlen) == 0))
			return e;
	return NULL;
}

/* The counter for (subject, model) if there is one, as it is (not refreshed, not moved). */
static struct limit_entry *entry_find(const struct limits *l, const char *subject, const char *model)
{
	struct limit_entry *e = entry_recent(l, subject, model);
	if (e)
		return e;
	struct name_key k = make_key(subject, model);
	return (struct limit_entry *)htab_find(&l->entries, &k);
}

/*
 * The counter for (subject, model), created if needed, refreshed to now and
 * moved to the front of the LRU list. NULL when out of memory.
 */
/* An existing counter e used at now: to the front of the LRU list, refreshed. */
static struct limit_entry *entry_touch(struct limits *l, struct limit_entry *e, int64_t now)
{
	if (l->newest != e) {
		lru_unlink(l, e);
		lru_push_newest(l, e);
	}
	if (now > e->last_used_ms)
		e->last_used_ms = now;
	entry_refresh(l, e, now);
	return e;
}

/*
 * entry_touch of s, then of m (NULL: none). Either way the LRU list ends
 * with m, s first; when it already is (a subject's statements in a row),
 * only their times and refresh.
 */
static void pair_touch(struct limits *l, struct limit_entry *s, struct limit_entry *m, int64_t now)
{
	if (m && l->newest == m && m->older == s) {
		if (now > s->last_used_ms)
			s->last_used_ms = now;
		entry_refresh(l, s, now);
		if (now > m->last_used_ms)
			m->last_used_ms = now;
		entry_refresh(l, m, now);
		return;
	}
	entry_touch(l, s, now);
	if (m)
		entry_touch(l, m, now);
}

static struct limit_entry *entry_get(struct limits *l, const char *subject, const char *model,
                                     int64_t now)
{
	struct limit_entry *e = entry_recent(l, subject, model);
	if (e)
		return entry_touch(l, e, now);
	struct name_key k = make_key(subject, model);
	e = (struct limit_entry *)htab_find(&l->entries, &k);
	if (e) {
		lru_unlink(l, e);
	} else {
		if (l->entries.count >= l->max_entries && l->oldest) {
			struct limit_entry *victim = l->oldest;
			entry_refresh(l, victim, now);
			if (entry_at_rest(victim))
				l->stats.evicted_idle++;
			else
				l->stats.evicted_full++;
			entry_free(l, victim);
		}
		e = alloc_named(sizeof(*e), &k);
		if (!e)
			return NULL;
		e->rules_generation = l->rules->generation - 1;   /* resolve on first refresh */
		e->day_start_ms = day_start_of(l, now);
		e->month_start_ms = month_start_of(l, now);
		htab_insert(&l->entries, &e->node);
	}
	lru_push_newest(l, e);
	if (now > e->last_used_ms)
		e->last_used_ms = now;
	entry_refresh(l, e, now);
	return e;
}

/*
 * entry_get of (subject, "") into *s and, when model names one, of
 * (subject, model) into *m (else NULL), in that order: the counters a
 * statement of subject uses. Its names are measured once and compared with
 * the two most recently used counters, which a subject's statements in a
 * row leave there; else entry_get asks the table.
 */
/*
 * Is name (NUL-terminated) keyed as kept (kept_len bytes, its first
 * LIMITS_NAME_MAX at most)? One strncmp, no measuring of name.
 */
static inline bool key_is(const char *kept, size_t kept_len, const char *name)
{
	return strncmp(kept, name, kept_len) == 0 && (kept_len == LIMITS_NAME_MAX || name[kept_len] == '\0');
}

static void entry_get_pair(struct limits *l, const char *subject, const char *model, int64_t now,
                           struct limit_entry **s, struct limit_entry **m)
{
	/* has_model without a call to strcmp */
	bool with_model = model && model[0] && !(model[0] == '*' && model[1] == '\0');
	const char *subj = subject ? subject : "";
	struct limit_entry *fs = NULL, *fm = NULL, *e = l->newest;
	for (int i = 0; i < 2 && e; i++, e = e->older) {
		if (!key_is(e->node.subject, e->node.subject_len, subj))
			continue;
		if (e->node.model_len == 0)
			fs = e;
		else if (with_model && key_is(e->node.model, e->node.model_len, model))
			fm = e;
	}
	if (!fs) {
		/* a new counter may evict one: the second lookup must not keep a pointer from before */
		*s = entry_get(l, subject, NULL, now);
		*m = with_model ? entry_get(l, subject, model, now) : NULL;
		return;
	}
	if (fm || !with_model) {
		pair_touch(l, fs, fm, now);
		*s = fs;
		*m = fm;
		return;
	}
	*s = entry_touch(l, fs, now);
	*m = entry_get(l, subject, model, now);
}

/* Add local use to the pending delta of now's UTC day. */
static void pending_add(struct limits *l, struct limit_entry *e, int64_t now, int64_t requests,
                        int64_t tokens, int64_t ucents)
{
	int64_t ds = day_start_of(l, now);
	struct limit_pending *slot = NULL;
	for (int i = 0; i < 2 && !slot; i++)
		if (e->pending[i].used && e->pending[i].day_start_ms == ds)
			slot = &e->pending[i];
	for (int i = 0; i < 2 && !slot; i++)
		if (!e->pending[i].used)
			slot = &e->pending[i];
	if (!slot) {
		slot = e->pending[0].day_start_ms < e->pending[1].day_start_ms ? &e->pending[0] : &e->pending[1];
		l->stats.dropped_deltas++;
		memset(slot, 0, sizeof(*slot));
	}
	if (!slot->used) {
		slot->used = true;
		slot->day_start_ms = ds;
	}
	slot->requests = add_count(slot->requests, requests);
	if (tokens)    /* an admission adds a request only */
		slot->tokens = add_count(slot->tokens, tokens);
	if (ucents)
		slot->ucents = add_count(slot->ucents, ucents);
}

static void mark_dirty(struct limits *l, struct limit_entry *e)
{
	bool budgets = e->limit[LIMIT_TOKENS_PER_DAY] >= 0 || e->limit[LIMIT_COST_CENTS_PER_MONTH] >= 0;
	if (budgets && !e->budget_dirty) {
		e->budget_dirty = true;
		l->dirty_budgets++;
	}
}

/* Queue an alert for every threshold e's budgets passed since the last one reported this period. */
static void check_alerts(struct limits *l, struct limit_entry *e, int64_t now)
{
	for (int i = 0; i < 2; i++) {
		enum limit_dim d = i == 0 ? LIMIT_TOKENS_PER_DAY : LIMIT_COST_CENTS_PER_MONTH;
		double lim = e->limit[d];
		if (lim <= 0)
			continue;
		double used = i == 0 ? (double)e->tokens_day : (double)e->ucents_month / UCENTS_PER_CENT;
		while (e->alerted[i] < l->n_thresholds && used * 100 >= l->thresholds[e->alerted[i]] * lim - LEVEL_EPSILON) {
			double pct = l->thresholds[e->alerted[i]++];
			if (l->n_alerts == l->cap_alerts) {
				size_t cap = l->cap_alerts ? l->cap_alerts * 2 : 16;
				struct queued_alert *grown = cap <= MAX_QUEUED_ALERTS ? realloc(l->alerts, cap * sizeof(*grown)) : NULL;
				if (!grown) {
					l->stats.dropped_alerts++;
					continue;
				}
				l->alerts = grown;
				l->cap_alerts = cap;
			}
			struct queued_alert *q = &l->alerts[l->n_alerts];
			q->subject = strndup(e->node.subject, e->node.subject_len);
			q->model = strndup(e->node.model, e->node.model_len);
			if (!q->subject || !q->model) {
				free(q->subject);
				free(q->model);
				l->stats.dropped_alerts++;
				continue;
			}
			q->a.dim = d;
			q->a.threshold_pct = pct;
			q->a.limit = lim;
			q->a.used = used;
			q->a.period_start_ms = i == 0 ? e->day_start_ms : e->month_start_ms;
			q->a.resets_at_ms = i == 0 ? e->day_start_ms + DAY_MS : next_month_start(now);
			l->n_alerts++;
		}
	}
}

/* A refusal candidate, kept when it needs a longer wait than *best. */
static void consider(struct limit_refusal *best, bool *refused, enum limit_dim d, const char *model,
                     const char *group, double limit, double used, double reserved, int64_t retry_ms, int64_t now)
{
	bool longer = !*refused || (best->retry_after_ms >= 0 && (retry_ms < 0 || retry_ms > best->retry_after_ms));
	if (!longer)
		return;
	*refused = true;
	best->dim = d;
	best->model = model;
	best->group = group;
	best->limit = limit;
	best->used = used;
	best->reserved = reserved;
	best->window = dim_windows[d];
	best->retry_after_ms = retry_ms;
	best->reset_at_ms = retry_ms < 0 ? -1 : now + retry_ms;
}

/*
 * Does a statement that needs ask more fit under lim, with used counted and
 * reserved held by statements in flight? Room for ask is needed, except that
 * with nothing used or held one statement always fits (so that a call larger
 * than the whole limit is not refused forever: the overshoot is one call).
 */
static bool fits(double lim, double used, double reserved, double ask)
{
	if (lim == 0)
		return false;
	if (ask < 1)
		ask = 1;
	return used + reserved <= LEVEL_EPSILON || used + reserved + ask <= lim + LEVEL_EPSILON;
}

/* Check every limit of e at now (already refreshed) for one more statement
 * asking for tokens and ucents; model names e's model or NULL. */
static void entry_check(const struct limit_entry *e, const char *model, const char *group, int64_t now,
                        int64_t ask_tokens,
                        int64_t ask_ucents, struct limit_refusal *best, bool *refused)
{
	int64_t rtokens, rucents, inflight;
	resv_totals(e, &rtokens, &rucents, &inflight);
	double lim = e->limit[LIMIT_REQUESTS_PER_MINUTE];
	double used = (double)window_total(e->win[BUCKET_REQUESTS]);
	if (lim >= 0 && !fits(lim, used, 0, 1))
		consider(best, refused, LIMIT_REQUESTS_PER_MINUTE, model, group, lim, used, 0,
		         lim == 0 ? -1 : window_retry_ms(e->win[BUCKET_REQUESTS], used + 1 - lim, now), now);
	lim = e->limit[LIMIT_TOKENS_PER_MINUTE];
	used = (double)window_total(e->win[BUCKET_TOKENS]);
	double ask = ask_tokens < 1 ? 1 : (double)ask_tokens;
	if (lim >= 0 && !fits(lim, used, (double)rtokens, ask))
		consider(best, refused, LIMIT_TOKENS_PER_MINUTE, model, group, lim, used, (double)rtokens,
		         lim == 0 ? -1 : window_retry_ms(e->win[BUCKET_TOKENS], used + (double)rtokens + ask - lim, now),
		         now);
	lim = e->limit[LIMIT_TOKENS_PER_DAY];
	if (lim >= 0 && !fits(lim, (double)e->tokens_day, (double)rtokens, ask))
		consider(best, refused, LIMIT_TOKENS_PER_DAY, model, group, lim, (double)e->tokens_day, (double)rtokens,
		         lim == 0 ? -1 : e->day_start_ms + DAY_MS - now, now);
	lim = e->limit[LIMIT_COST_CENTS_PER_MONTH];
	if (lim >= 0 && !fits((double)llround(lim * UCENTS_PER_CENT), (double)e->ucents_month, (double)rucents,
	                      (double)ask_ucents))
		consider(best, refused, LIMIT_COST_CENTS_PER_MONTH, model, group, lim,
		         (double)e->ucents_month / UCENTS_PER_CENT, (double)rucents / UCENTS_PER_CENT,
		         lim == 0 ? -1 : next_month_start(now) - now, now);
	lim = e->limit[LIMIT_MAX_CONCURRENT];
	if (lim >= 0 && (double)inflight + 1 > lim + LEVEL_EPSILON)
		consider(best, refused, LIMIT_MAX_CONCURRENT, model, group, lim, (double)inflight, 0,
		         lim == 0 ? -1 : LIMITS_CONCURRENT_RETRY_MS, now);
}

/* Cents as millionths of a cent; negative and NaN count as 0, at most LIMITS_MAX_CENTS. */
static int64_t to_ucents(double cents)
{
	if (!(cents > 0))
		return 0;
	if (cents > LIMITS_MAX_CENTS)
		cents = LIMITS_MAX_CENTS;
	return llround(cents * UCENTS_PER_CENT);
}

/* The counters' subjects a statement of subject is charged to: subject, then its groups. Returns how many. */
static size_t payers_of(const struct limits *l, const char *subject, const char *out[1 + LIMITS_MAX_GROUPS])
{
	out[0] = subject;
	if (l->members.count == 0)
		return 1;
	struct name_key k = make_key(subject, NULL);
	const struct group_member *g = (const struct group_member *)htab_find(&l->members, &k);
	size_t n = 1;
	for (size_t i = 0; g && i < g->n; i++)
		out[n++] = g->groups[i];
	return n;
}


/* ---- leases (see limits.h) ---- */

static bool leasing(const struct limits *l, const struct limit_entry *e, int b)
{
	return l->lease_instances > 0 && e->limit[b] > 0;
}

int64_t limits_lease_slice(const struct limits *l, double limit)
{
	if (l->lease_instances <= 0 || !(limit > 0))
		return 0;
	double slice = floor(limit / (4.0 * l->lease_instances));
	return slice < 1 ? 1 : (int64_t)slice;
}

static struct entry_lease *lease_of(struct limits *l, struct limit_entry *e)
{
	if (e->lease)
		return e->lease;
	e->lease = calloc(1, sizeof(*e->lease));
	if (!e->lease)
		return NULL;
	e->lease->next = l->leased;
	if (l->leased)
		l->leased->lease->prev = e;
	l->leased = e;
	return e->lease;
}

static void lease_drop(struct limits *l, struct limit_entry *e)
{
	struct entry_lease *le = e->lease;
	if (!le)
		return;
	if (le->prev)
		le->prev->lease->next = le->next;
	else
		l->leased = le->next;
	if (le->next)
		le->next->lease->prev = le->prev;
	free(le);
	e->lease = NULL;
}

/* What lb holds spendable at now, less its debt (may be negative). */
static int64_t lease_avail(const struct lease_bucket *lb, int64_t now)
{
	int64_t sum = 0;
	for (int i = 0; i < lb->n; i++)
		if (lb->part[i].ends_ms > now)
			sum = add_count(sum, lb->part[i].amount);
	return sum - lb->debt;
}

/* Spend x from the unexpired slices, oldest first; what they lack becomes debt. */
static void lease_spend(struct lease_bucket *lb, int64_t now, int64_t x)
{
	for (int i = 0; i < lb->n && x > 0; i++) {
		struct lease_part *p = &lb->part[i];
		if (p->ends_ms <= now)
			continue;
		int64_t t = p->amount < x ? p->amount : x;
		p->amount -= t;
		x -= t;
	}
	if (x > 0)
		lb->debt = add_count(lb->debt, x);
	int kept = 0;    /* spent slices have nothing to give back: room for the next */
	for (int i = 0; i < lb->n; i++)
		if (lb->part[i].amount > 0)
			lb->part[kept++] = lb->part[i];
	lb->n = kept;
}

/* Give x back to the newest unexpired slice (a reservation larger than the call); none: forgotten (strict side). */
static void lease_credit(struct lease_bucket *lb, int64_t now, int64_t x)
{
	if (x <= 0)
		return;
	int64_t pay = lb->debt < x ? lb->debt : x;
	lb->debt -= pay;
	x -= pay;
	for (int i = lb->n - 1; i >= 0 && x > 0; i--)
		if (lb->part[i].ends_ms > now) {
			lb->part[i].amount = add_count(lb->part[i].amount, x);
			return;
		}
}

/*
 * Leasing refusals for a statement asking ask_tokens: every leased dimension
 * of e that cannot pay for it from what it holds wants a slice and refuses.
 */
static void entry_lease_check(struct limits *l, struct limit_entry *e, const char *model, const char *group,
                              int64_t now, int64_t ask_tokens, struct limit_refusal *best, bool *refused)
{
	for (int b = 0; b < 2; b++) {
		if (!leasing(l, e, b))
			continue;
		struct entry_lease *le = lease_of(l, e);
		if (!le)
			continue;   /* out of memory: the window alone decides (fails open, as elsewhere) */
		struct lease_bucket *lb = &le->b[b];
		int64_t need = b == BUCKET_REQUESTS ? 1 : (ask_tokens < 1 ? 1 : ask_tokens);
		int64_t avail = lease_avail(lb, now);
		if (avail >= need)
			continue;
		int64_t slice = limits_lease_slice(l, e->limit[b]);
		int64_t want = add_count(need, lb->debt) - (avail + lb->debt > 0 ? avail + lb->debt : 0);
		lb->ask_amount = want > slice ? want : slice;
		lb->want = true;
		double used = (double)window_total(e->win[b]);
		consider(best, refused, (enum limit_dim)b, model, group, e->limit[b], used, 0, LIMITS_LEASE_RETRY_MS, now);
	}
}

/* An admitted statement spends from e's slices; below half a slice left, the next is asked for. */
static void entry_lease_spend(struct limits *l, struct limit_entry *e, int64_t now, int64_t ask_tokens)
{
	for (int b = 0; b < 2; b++) {
		if (!leasing(l, e, b) || !e->lease)
			continue;
		struct lease_bucket *lb = &e->lease->b[b];
		lease_spend(lb, now, b == BUCKET_REQUESTS ? 1 : (ask_tokens < 1 ? 1 : ask_tokens));
		int64_t slice = limits_lease_slice(l, e->limit[b]);
		if (lease_avail(lb, now) * 2 < slice) {
			lb->ask_amount = add_count(slice, lb->debt);
			lb->want = true;
		}
	}
}

/* Tokens charged (delta > 0) or reserved in excess (delta < 0) against the token slices of subject's counters. */
static void lease_adjust_tokens(struct limits *l, const char *subject, const char *model, int64_t delta,
                                int64_t now)
{
	if (l->lease_instances <= 0 || delta == 0 || !subject || !*subject)
		return;
	const char *payer[1 + LIMITS_MAX_GROUPS];
	size_t n_payers = payers_of(l, subject, payer);
	for (size_t p = 0; p < n_payers; p++)
		for (int i = 0; i < 2; i++) {
			if (i == 1 && !has_model(model))
				continue;
			struct name_key k = make_key(payer[p], i ? model : NULL);
			struct limit_entry *e = (struct limit_entry *)htab_find(&l->entries, &k);
			if (!e || !e->lease || !leasing(l, e, BUCKET_TOKENS))
				continue;
			if (delta > 0)
				lease_spend(&e->lease->b[BUCKET_TOKENS], now, delta);
			else
				lease_credit(&e->lease->b[BUCKET_TOKENS], now, -delta);
		}
}

void limits_set_leasing(struct limits *l, int instances)
{
	if (instances < 0)
		instances = 0;
	if (instances == 0)
		while (l->leased)
			lease_drop(l, l->leased);
	l->lease_instances = instances;
}

size_t limits_lease_asks(struct limits *l, int64_t now_ms, limits_lease_fn fn, void *arg)
{
	size_t n = 0;
	for (struct limit_entry *e = l->leased; e; e = e->lease->next)
		for (int b = 0; b < 2; b++) {
			struct lease_bucket *lb = &e->lease->b[b];
			if (!lb->want || lb->in_flight || now_ms < lb->next_ask_ms || lb->n >= LEASE_PARTS - 1)
				continue;
			lb->want = false;
			if (!leasing(l, e, b))
				continue;
			struct limit_lease ask = {
				.subject = e->node.subject, .model = e->node.model, .dim = (enum limit_dim)b,
				.limit = (int64_t)e->limit[b],
				.amount = lb->ask_amount > 0 ? lb->ask_amount : limits_lease_slice(l, e->limit[b]),
			};
			lb->in_flight = true;
			fn(&ask, arg);
			n++;
		}
	return n;
}

static struct lease_bucket *lease_find(struct limits *l, const char *subject, const char *model, enum limit_dim dim)
{
	if (dim != LIMIT_REQUESTS_PER_MINUTE && dim != LIMIT_TOKENS_PER_MINUTE)
		return NULL;
	struct name_key k = make_key(subject, model);
	struct limit_entry *e = (struct limit_entry *)htab_find(&l->entries, &k);
	return e && e->lease ? &e->lease->b[dim] : NULL;
}

void limits_lease_granted(struct limits *l, const char *subject, const char *model, enum limit_dim dim,
                          int64_t grant_sec, int64_t amount, int64_t sent_ms, int64_t now_ms)
{
	struct lease_bucket *lb = lease_find(l, subject, model, dim);
	if (!lb)
		return;
	lb->in_flight = false;
	if (amount <= 0) {
		lb->next_ask_ms = now_ms + LIMITS_LEASE_BACKOFF_MS;   /* none left: the window moves on */
		return;
	}
	int64_t pay = lb->debt < amount ? lb->debt : amount;
	lb->debt -= pay;
	if (lb->n == LEASE_PARTS) {
		/* cannot happen (asks need a free part); keep the newest rather than overflow */
		memmove(&lb->part[0], &lb->part[1], (LEASE_PARTS - 1) * sizeof(lb->part[0]));
		lb->n--;
	}
	struct lease_part *p = &lb->part[lb->n++];
	p->amount = amount - pay;
	p->grant_sec = grant_sec;
	p->ends_ms = sent_ms + LIMITS_LEASE_MS;
}

void limits_lease_fail_in_flight(struct limits *l, int64_t now_ms)
{
	for (struct limit_entry *e = l->leased; e; e = e->lease->next)
		for (int b = 0; b < 2; b++) {
			struct lease_bucket *lb = &e->lease->b[b];
			if (!lb->in_flight)
				continue;
			lb->in_flight = false;
			lb->want = true;
			lb->next_ask_ms = now_ms + LIMITS_LEASE_BACKOFF_MS;
		}
}

size_t limits_lease_gives(struct limits *l, int64_t now_ms, bool all, limits_lease_fn fn, void *arg)
{
	size_t n = 0;
	struct limit_entry *e = l->leased;
	while (e) {
		struct limit_entry *next = e->lease->next;
		bool idle = true;
		for (int b = 0; b < 2; b++) {
			struct lease_bucket *lb = &e->lease->b[b];
			int kept = 0;
			for (int i = 0; i < lb->n; i++) {
				struct lease_part *p = &lb->part[i];
				if (!all && p->ends_ms > now_ms) {
					lb->part[kept++] = *p;
					continue;
				}
				if (p->amount > 0) {
					struct limit_lease give = {
						.subject = e->node.subject, .model = e->node.model, .dim = (enum limit_dim)b,
						.limit = (int64_t)e->limit[b], .amount = p->amount, .grant_sec = p->grant_sec,
					};
					fn(&give, arg);
					n++;
				}
			}
			lb->n = kept;
			if (lb->n || lb->in_flight || lb->want || lb->debt)
				idle = false;
		}
		if (idle)
			lease_drop(l, e);   /* gone cold: the next statement asks afresh */
		e = next;
	}
	return n;
}

void limits_lease_held(struct limits *l, int64_t now_ms, int64_t *requests, int64_t *tokens)
{
	int64_t sum[2] = { 0, 0 };
	for (struct limit_entry *e = l->leased; e; e = e->lease->next)
		for (int b = 0; b < 2; b++) {
			int64_t a = lease_avail(&e->lease->b[b], now_ms) + e->lease->b[b].debt;
			sum[b] = add_count(sum[b], a > 0 ? a : 0);
		}
	*requests = sum[0];
	*tokens = sum[1];
}

bool limits_rules_empty(const struct limits *l)
{
	return l && l->rules->tab.count == 0;
}

bool limits_admit(struct limits *l, const char *subject, const char *model, int64_t now_ms,
                  struct limit_refusal *refusal)
{
	return limits_admit_reserve(l, subject, model, now_ms, NULL, NULL, refusal);
}

bool limits_admit_reserve(struct limits *l, const char *subject, const char *model, int64_t now_ms,
                          const struct limit_estimate *est, struct limit_reservation *resv,
                          struct limit_refusal *refusal)
{
	if (resv)
		memset(resv, 0, sizeof(*resv));
	if (!subject || !*subject)
		return true;
	const char *payer[1 + LIMITS_MAX_GROUPS];
	size_t n_payers = payers_of(l, subject, payer);
	struct limit_entry *ents[2 * (1 + LIMITS_MAX_GROUPS)];
	ents[0] = ents[1] = NULL;    /* payers_of gives the subject at least; the compiler cannot tell */
	for (size_t p = 0; p < n_payers; p++)
		entry_get_pair(l, payer[p], model, now_ms, &ents[2 * p], &ents[2 * p + 1]);
	struct limit_entry *s = ents[0], *m = ents[1];
	if (!s)
		return true;   /* out of memory: fail open */
	if (resv) {
		/* for limits_settle: the subject's counters, good while none is freed */
		resv->counters[0] = s;
		resv->counters[1] = m;
		resv->counters_of = l;
		resv->counters_gen = counters_freed;
	}
	bool limited = false;
	for (size_t i = 0; i < 2 * n_payers; i++)
		limited |= ents[i] && ents[i]->limited;
	if (!limited) {
		/* No limit applies to any counter of the statement: nothing to check
		 * and nothing to reserve (no window is kept, leases need a limit).
		 * The request is counted all the same, for the other instances. */
		pending_add(l, m ? m : s, now_ms, 1, 0, 0);
		return true;
	}

	/* the estimate: given, else the running mean of the subject's most specific counter */
	int64_t ask_tokens = 0, ask_ucents = 0;
	if (est) {
		const struct limit_entry *mean = m ? m : s;
		ask_tokens = est->tokens >= 0 ? est->tokens : llround(mean->mean_tokens);
		ask_ucents = est->cost_cents >= 0 ? to_ucents(est->cost_cents) : llround(mean->mean_ucents);
		if (ask_tokens > LIMITS_MAX_COUNT)
			ask_tokens = LIMITS_MAX_COUNT;
	}

	struct limit_refusal best;
	bool refused = false;
	memset(&best, 0, sizeof(best));
	for (size_t i = 0; i < 2 * n_payers; i++)
		if (ents[i])
			entry_check(ents[i], i % 2 ? model : NULL,
			            i >= 2 ? payer[i / 2] + strlen(LIMITS_GROUP_PREFIX) : NULL, now_ms,
			            ask_tokens, ask_ucents, &best, &refused);
	if (l->lease_instances > 0)
		for (size_t i = 0; i < 2 * n_payers; i++)
			if (ents[i])
				entry_lease_check(l, ents[i], i % 2 ? model : NULL,
				                  i >= 2 ? payer[i / 2] + strlen(LIMITS_GROUP_PREFIX) : NULL, now_ms,
				                  ask_tokens, &best, &refused);
	if (refused) {
		if (refusal)
			*refusal = best;
		return false;
	}
	int64_t epoch = resv_epoch(now_ms);
	for (size_t i = 0; i < 2 * n_payers; i++) {
		struct limit_entry *e = ents[i];
		if (!e)
			continue;
		if (e->limit[BUCKET_REQUESTS] > 0)
			window_add(e, BUCKET_REQUESTS, now_ms, 1);
		if (l->lease_instances > 0)
			entry_lease_spend(l, e, now_ms, resv ? ask_tokens : 0);
		if (resv) {
			struct resv_slot *slot = &e->resv[epoch & 1];
			if (slot->epoch != epoch) {
				memset(slot, 0, sizeof(*slot));
				slot->epoch = epoch;
			}
			slot->tokens = add_count(slot->tokens, ask_tokens);
			slot->ucents = add_count(slot->ucents, ask_ucents);
			slot->inflight++;
			mark_dirty(l, e);
		}
	}
	if (resv) {
		resv->held = true;
		resv->epoch = epoch;
		resv->tokens = ask_tokens;
		resv->ucents = ask_ucents;
	}
	pending_add(l, m ? m : s, now_ms, 1, 0, 0);
	return true;
}

/* Give back what r holds on the counter (subject, model), if it still exists and r has not expired. */
static void resv_give_back(struct limits *l, const char *subject, const char *model,
                           const struct limit_reservation *r, int64_t now)
{
	struct limit_entry *e = entry_find(l, subject, model);
	if (!e)
		return;
	resv_expire(e, now);
	struct resv_slot *slot = &e->resv[r->epoch & 1];
	if (slot->epoch != r->epoch)
		return;   /* expired: already dropped */
	slot->tokens = slot->tokens > r->tokens ? slot->tokens - r->tokens : 0;
	slot->ucents = slot->ucents > r->ucents ? slot->ucents - r->ucents : 0;
	slot->inflight = slot->inflight > 0 ? slot->inflight - 1 : 0;
	mark_dirty(l, e);
}

void limits_release(struct limits *l, const char *subject, const char *model,
                    struct limit_reservation *resv, int64_t now_ms)
{
	if (!l || !resv || !resv->held || !subject || !*subject)
		return;
	const char *payer[1 + LIMITS_MAX_GROUPS];
	size_t n_payers = payers_of(l, subject, payer);
	for (size_t p = 0; p < n_payers; p++) {
		resv_give_back(l, payer[p], NULL, resv, now_ms);
		if (has_model(model))
			resv_give_back(l, payer[p], model, resv, now_ms);
	}
	lease_adjust_tokens(l, subject, model, -resv->tokens, now_ms);   /* unspent: back to the slices */
	resv->held = false;
}

static void add_use_at(struct limits *l, const char *subject, const char *model, int64_t now,
                       int64_t requests, int64_t tokens, int64_t ucents, int64_t at_day,
                       bool bucket, bool local, bool call, const struct limit_reservation *hint);

void limits_settle(struct limits *l, const char *subject, const char *model,
                   struct limit_reservation *resv, int64_t tokens, double cost_cents, int64_t now_ms)
{
	limits_release(l, subject, model, resv, now_ms);
	int64_t ucents = to_ucents(cost_cents);
	if (tokens <= 0 && ucents <= 0)
		return;    /* nothing spent (a cache hit): admission counted the request; adding zeros changes nothing */
	lease_adjust_tokens(l, subject, model, tokens, now_ms);
	/* limits_charge, finding the subject's counters from admission */
	add_use_at(l, subject, model, now_ms, 0, tokens, ucents, -1, true, true, true, resv);
}

/*
 * entry_get_pair(l, subject, model) from hint's counters, when they are
 * still there (no counter freed since) and are (subject, "") and (subject,
 * model): touched as entry_get_pair touches them. False: look them up.
 */
static bool entry_pair_from(struct limits *l, const struct limit_reservation *hint, const char *subject,
                            const char *model, int64_t now, struct limit_entry **s, struct limit_entry **m)
{
	struct limit_entry *hs = hint->counters[0], *hm = hint->counters[1];
	if (!hs || hint->counters_of != l || hint->counters_gen != counters_freed || !subject || hs->node.model_len != 0 ||
	    !key_is(hs->node.subject, hs->node.subject_len, subject))
		return false;
	bool with_model = model && model[0] && !(model[0] == '*' && model[1] == '\0');
	if (with_model ? !hm || !key_is(hm->node.model, hm->node.model_len, model) : hm != NULL)
		return false;
	/* hm was found with hs's subject: its subject is hs's */
	pair_touch(l, hs, hm, now);
	*s = hs;
	*m = hm;
	return true;
}

/*
 * Add use to the subject-wide and subject/model counters: requests and tokens
 * into the buckets (when bucket), tokens and ucents into the budgets (at_day
 * -1: the counters' current day and month; else only if at_day is that day /
 * in that month), and to the pending delta (when local).
 */
static void add_use(struct limits *l, const char *subject, const char *model, int64_t now,
                    int64_t requests, int64_t tokens, int64_t ucents, int64_t at_day,
                    bool bucket, bool local, bool call)
{
	add_use_at(l, subject, model, now, requests, tokens, ucents, at_day, bucket, local, call, NULL);
}

/* add_use; hint (may be NULL): a reservation whose counters may spare the subject's lookup. */
static void add_use_at(struct limits *l, const char *subject, const char *model, int64_t now,
                       int64_t requests, int64_t tokens, int64_t ucents, int64_t at_day,
                       bool bucket, bool local, bool call, const struct limit_reservation *hint)
{
	if (!subject || !*subject)
		return;
	if (tokens < 0)
		tokens = 0;
	const char *payer[1 + LIMITS_MAX_GROUPS];
	size_t n_payers = payers_of(l, subject, payer);
	struct limit_entry *s = NULL, *m = NULL;
	for (size_t p = 0; p < n_payers; p++) {
		struct limit_entry *both[2];
		if (p > 0 || !hint || !entry_pair_from(l, hint, payer[p], model, now, &both[0], &both[1]))
			entry_get_pair(l, payer[p], model, now, &both[0], &both[1]);
		if (p == 0) {
			s = both[0];
			m = both[1];
		}
		for (int i = 0; i < 2; i++) {
			struct limit_entry *e = both[i];
			if (!e)
				continue;
			if (bucket) {
				if (e->limit[BUCKET_REQUESTS] > 0)
					window_add(e, BUCKET_REQUESTS, now, requests);
				if (e->limit[BUCKET_TOKENS] > 0)
					window_add(e, BUCKET_TOKENS, now, tokens);
			}
			if (call && p == 0 && (tokens > 0 || ucents > 0)) {
				/* exponentially weighted: each call counts 1/LIMITS_MEAN_WEIGHT */
				e->mean_tokens += ((double)tokens - e->mean_tokens) / LIMITS_MEAN_WEIGHT;
				e->mean_ucents += ((double)ucents - e->mean_ucents) / LIMITS_MEAN_WEIGHT;
			}
			if (at_day < 0 || at_day == e->day_start_ms)
				e->tokens_day = add_count(e->tokens_day, tokens);
			if (at_day < 0 || month_start_of(l, at_day) == e->month_start_ms)
				e->ucents_month = add_count(e->ucents_month, ucents);
			if (tokens > 0 || ucents > 0) {
				mark_dirty(l, e);
				check_alerts(l, e, now);
			}
		}
	}
	if (local && (m || s))
		pending_add(l, m ? m : s, now, requests, tokens, ucents);   /* groups are not exported: each instance adds them */
}

void limits_charge(struct limits *l, const char *subject, const char *model, int64_t tokens,
                   double cost_cents, int64_t now_ms)
{
	add_use(l, subject, model, now_ms, 0, tokens, to_ucents(cost_cents), -1, true, true, true);
}

void limits_seed(struct limits *l, const char *subject, const char *model, int64_t tokens_today,
                 double cost_cents_month, int64_t now_ms)
{
	add_use(l, subject, model, now_ms, 0, tokens_today, to_ucents(cost_cents_month), -1,
	        false, false, false);
}

void limits_apply_remote(struct limits *l, const char *subject, const char *model,
                         int64_t day_start_ms, int64_t requests, int64_t tokens,
                         double cost_cents, int64_t now_ms)
{
	int64_t day = day_start(day_start_ms);
	bool recent = day + DAY_MS > now_ms - MINUTE_MS;
	add_use(l, subject, model, now_ms, requests < 0 ? 0 : requests, tokens, to_ucents(cost_cents),
	        day, recent, false, false);
}

/* ---- reporting ---- */

/* cents (as a limit or use) as decimal text with at most 6 decimals, no trailing zeros. */
static void format_cents(double cents, char *buf, size_t len)
{
	double scaled = cents * UCENTS_PER_CENT;
	long long u = scaled >= 9.2e18 ? INT64_MAX : scaled > 0 ? llround(scaled) : 0;
	int n = snprintf(buf, len, "%lld.%06lld", u / 1000000, u % 1000000);
	if (n <= 0 || (size_t)n >= len)
		return;
	while (n > 0 && buf[n - 1] == '0')
		buf[--n] = '\0';
	if (n > 0 && buf[n - 1] == '.')
		buf[--n] = '\0';
}

static void format_amount(enum limit_dim d, double v, char *buf, size_t len)
{
	if (d == LIMIT_COST_CENTS_PER_MONTH)
		format_cents(v, buf, len);
	else
		snprintf(buf, len, "%.0f", v);
}

void limits_format_refusal(const struct limit_refusal *r, const char *subject, struct pg_error *out)
{
	static const char *const nouns[LIMIT_N_DIMS] = { "request", "token", "token", "cent", "statement" };
	static const char *const verbs[LIMIT_N_DIMS] = { "", "", " used", " spent", "" };
	char limit[64], used[64], model[LIMITS_NAME_MAX + 16] = "";
	enum limit_dim d = (unsigned)r->dim < LIMIT_N_DIMS ? r->dim : LIMIT_REQUESTS_PER_MINUTE;

	format_amount(d, r->limit, limit, sizeof(limit));
	format_amount(d, r->used, used, sizeof(used));
	if (r->model)
		snprintf(model, sizeof(model), "model \"%.*s\"", LIMITS_NAME_MAX, r->model);
	memset(out, 0, sizeof(*out));
	snprintf(out->severity, sizeof(out->severity), "ERROR");
	snprintf(out->sqlstate, sizeof(out->sqlstate), "%s", SQLSTATE_RATE_LIMIT_EXCEEDED);
	if (r->group)
		snprintf(out->message, sizeof(out->message), "rate limit exceeded for \"%s\" in group \"%.*s\": %s %s",
		         subject ? subject : "", LIMITS_NAME_MAX, r->group, dim_names[d], limit);
	else
		snprintf(out->message, sizeof(out->message), "rate limit exceeded for \"%s\": %s %s",
		         subject ? subject : "", dim_names[d], limit);
	const char *sep = r->model ? " " : "";
	if (r->limit == 0)
		snprintf(out->detail, sizeof(out->detail), "The limit%s%s%s is 0, so every statement is refused.",
		         r->model ? " for" : "", sep, model);
	else
	{
		char reserved[128] = "";
		if (r->reserved > 0) {
			char amount[64];
			format_amount(d, r->reserved, amount, sizeof(amount));
			snprintf(reserved, sizeof(reserved), " and %s reserved by statements in flight", amount);
		}
		snprintf(out->detail, sizeof(out->detail), "%s %s%s%s%s%s%s %s%s; the limit is %s.", used, nouns[d],
		         r->used == 1 ? "" : "s", verbs[d], r->model ? " with" : "", sep, model,
		         dim_windows[d], reserved, limit);
	}
	if (r->retry_after_ms < 0) {
		/* no hint: waiting does not help */
	} else if (d == LIMIT_MAX_CONCURRENT) {
		snprintf(out->hint, sizeof(out->hint), "Retry when one of the statements in flight has finished.");
	} else if (d == LIMIT_REQUESTS_PER_MINUTE || d == LIMIT_TOKENS_PER_MINUTE) {
		long long tenths = (r->retry_after_ms + 99) / 100;
		snprintf(out->hint, sizeof(out->hint), "Retry after %lld.%lld s.", tenths / 10, tenths % 10);
	} else {
		char when[64];
		format_utc(r->reset_at_ms, when, sizeof(when));
		snprintf(out->hint, sizeof(out->hint), "The budget resets at %s.", when);
	}
}

size_t limits_foreach_status(struct limits *l, int64_t now_ms, limits_status_fn fn, void *arg)
{
	size_t calls = 0;
	for (struct limit_entry *e = l->newest; e; e = e->older) {
		entry_refresh(l, e, now_ms);
		for (int d = 0; d < LIMIT_N_DIMS; d++) {
			double lim = e->limit[d];
			if (lim < 0)
				continue;
			struct limit_status st;
			st.subject = e->node.subject;
			st.model = e->node.model;
			st.dim = (enum limit_dim)d;
			st.limit = lim;
			switch (d) {
			case LIMIT_REQUESTS_PER_MINUTE:
			case LIMIT_TOKENS_PER_MINUTE:
				st.used = (double)window_total(e->win[d]);
				st.reset_at_ms = st.used > 0 ? (e->win[d]->head_sec + WINDOW_SLOTS) * 1000 : now_ms;
				break;
			case LIMIT_MAX_CONCURRENT: {
				int64_t rt, ru, ri;
				resv_totals(e, &rt, &ru, &ri);
				st.used = (double)ri;
				st.reset_at_ms = now_ms;
				break;
			}
			case LIMIT_TOKENS_PER_DAY:
				st.used = (double)e->tokens_day;
				st.reset_at_ms = e->day_start_ms + DAY_MS;
				break;
			default:
				st.used = (double)e->ucents_month / UCENTS_PER_CENT;
				st.reset_at_ms = next_month_start(now_ms);
				break;
			}
			st.remaining = lim > st.used ? lim - st.used : 0;
			fn(&st, arg);
			calls++;
		}
	}
	return calls;
}

size_t limits_export_deltas(struct limits *l, limits_delta_fn fn, void *arg)
{
	size_t n = 0;
	for (struct limit_entry *e = l->newest; e; e = e->older)
		for (int i = 0; i < 2; i++) {
			struct limit_pending *p = &e->pending[i];
			if (!p->used)
				continue;
			struct limit_delta delta = {
				.subject = e->node.subject,
				.model = e->node.model,
				.day_start_ms = p->day_start_ms,
				.requests = p->requests,
				.tokens = p->tokens,
				.cost_cents = (double)p->ucents / UCENTS_PER_CENT,
			};
			memset(p, 0, sizeof(*p));
			fn(&delta, arg);
			n++;
		}
	return n;
}

size_t limits_expire(struct limits *l, int64_t now_ms)
{
	size_t freed = 0;
	struct limit_entry *e = l->oldest;
	while (e && now_ms - e->last_used_ms >= LIMITS_IDLE_MS) {
		struct limit_entry *newer = e->newer;
		entry_refresh(l, e, now_ms);
		if (entry_at_rest(e)) {
			entry_free(l, e);
			l->stats.evicted_idle++;
			freed++;
		}
		e = newer;
	}
	return freed;
}

void limits_get_stats(const struct limits *l, struct limits_stats *out)
{
	*out = l->stats;
	out->entries = l->entries.count;
}

/* ---- budget alerts and status ---- */

bool limits_parse_thresholds(const char *text, double *out, size_t *n, char *errbuf, size_t errlen)
{
	size_t count = 0;
	const char *p = text ? text : "";
	for (;;) {
		while (is_separator(*p))
			p++;
		if (!*p)
			break;
		const char *start = p;
		while (*p && !is_separator(*p))
			p++;
		char num[32];
		size_t len = (size_t)(p - start);
		char *end = NULL;
		snprintf(num, sizeof(num), "%.*s", (int)(len < sizeof(num) ? len : sizeof(num) - 1), start);
		double v = len < sizeof(num) && (num[0] >= '0' && num[0] <= '9') ? strtod(num, &end) : -1;
		if (!end || *end || !(v > 0) || v > 1000) {
			snprintf(errbuf, errlen, "invalid budget alert threshold \"%.*s\": expected a percentage above 0 and at most 1000",
			         (int)(len > 64 ? 64 : len), start);
			return false;
		}
		if (count == LIMITS_MAX_THRESHOLDS) {
			snprintf(errbuf, errlen, "too many budget alert thresholds: at most %d", LIMITS_MAX_THRESHOLDS);
			return false;
		}
		size_t i = count;
		while (i > 0 && out[i - 1] > v) {   /* keep them ascending */
			out[i] = out[i - 1];
			i--;
		}
		if (i > 0 && out[i - 1] == v) {     /* a repeat: once is enough */
			memmove(&out[i], &out[i + 1], (count - i) * sizeof(*out));
			continue;
		}
		out[i] = v;
		count++;
	}
	*n = count;
	return true;
}

void limits_set_alert_thresholds(struct limits *l, const double *pcts, size_t n)
{
	if (n > LIMITS_MAX_THRESHOLDS)
		n = LIMITS_MAX_THRESHOLDS;
	memcpy(l->thresholds, pcts, n * sizeof(*pcts));
	l->n_thresholds = n;
}

size_t limits_take_alerts(struct limits *l, limits_alert_fn fn, void *arg)
{
	size_t n = l->n_alerts;
	for (size_t i = 0; i < n; i++) {
		struct queued_alert *q = &l->alerts[i];
		q->a.subject = q->subject;
		q->a.model = q->model;
		fn(&q->a, arg);
		free(q->subject);
		free(q->model);
	}
	l->n_alerts = 0;
	return n;
}

size_t limits_foreach_changed_budget(struct limits *l, int64_t now_ms, limits_budget_fn fn, void *arg)
{
	size_t calls = 0;
	for (struct limit_entry *e = l->newest; e && l->dirty_budgets > 0; e = e->older) {
		if (!e->budget_dirty)
			continue;
		e->budget_dirty = false;
		l->dirty_budgets--;
		entry_refresh(l, e, now_ms);
		int64_t rtokens, rucents, inflight;
		resv_totals(e, &rtokens, &rucents, &inflight);
		for (int i = 0; i < 2; i++) {
			enum limit_dim d = i == 0 ? LIMIT_TOKENS_PER_DAY : LIMIT_COST_CENTS_PER_MONTH;
			if (e->limit[d] < 0)
				continue;
			struct limit_budget b = {
				.subject = e->node.subject,
				.model = e->node.model,
				.dim = d,
				.limit = e->limit[d],
				.used = i == 0 ? (double)e->tokens_day : (double)e->ucents_month / UCENTS_PER_CENT,
				.reserved = i == 0 ? (double)rtokens : (double)rucents / UCENTS_PER_CENT,
				.resets_at_ms = i == 0 ? e->day_start_ms + DAY_MS : next_month_start(now_ms),
			};
			fn(&b, arg);
			calls++;
		}
	}
	return calls;
}

/* ---- groups ---- */

void limits_clear_groups(struct limits *l)
{
	for (size_t i = 0; i < l->members.n_buckets; i++) {
		struct hnode *n = l->members.buckets[i];
		while (n) {
			struct hnode *next = n->next;
			struct group_member *g = (struct group_member *)n;
			for (size_t k = 0; k < g->n; k++)
				free(g->groups[k]);
			free(g);
			n = next;
		}
		l->members.buckets[i] = NULL;
	}
	l->members.count = 0;
}

bool limits_add_group(struct limits *l, const char *subject, const char *group)
{
	if (!subject || !*subject || !group || !*group)
		return false;
	struct name_key k = make_key(subject, NULL);
	struct group_member *g = (struct group_member *)htab_find(&l->members, &k);
	if (!g) {
		g = alloc_named(sizeof(*g), &k);
		if (!g)
			return false;
		htab_insert(&l->members, &g->node);
	}
	char name[sizeof(LIMITS_GROUP_PREFIX) + LIMITS_NAME_MAX];
	snprintf(name, sizeof(name), "%s%.*s", LIMITS_GROUP_PREFIX, LIMITS_NAME_MAX, group);
	for (size_t i = 0; i < g->n; i++)
		if (strcmp(g->groups[i], name) == 0)
			return true;
	if (g->n == LIMITS_MAX_GROUPS)
		return false;
	g->groups[g->n] = strdup(name);
	if (!g->groups[g->n])
		return false;
	g->n++;
	return true;
}
