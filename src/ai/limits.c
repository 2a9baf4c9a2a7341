/* SPDX-License-Identifier: PostgreSQL */
/*
 * limits.c - rate limits and budgets; see limits.h and docs/limits.md.
 * Rules and counters live in two chained hash tables keyed by (subject, model);
 * per-minute limits are GCRA buckets, budgets are UTC day / month counters.
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

/* The two GCRA buckets of a counter, by dimension. */
#define BUCKET_REQUESTS 0   /* LIMIT_REQUESTS_PER_MINUTE */
#define BUCKET_TOKENS   1   /* LIMIT_TOKENS_PER_MINUTE */

static const char *const dim_names[LIMIT_N_DIMS] = {
	"requests_per_minute", "tokens_per_minute", "tokens_per_day", "cost_cents_per_month",
};

static const char *const dim_windows[LIMIT_N_DIMS] = {
	"in the last minute", "in the last minute", "today (UTC)", "this month (UTC)",
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
	const struct limit_rule *dflt = rule_find(rules, "default", per_model ? model : NULL);
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
			         "tokens_per_minute, tokens_per_day or cost_cents_per_month",
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
	int64_t ints[3] = { v->requests_per_minute, v->tokens_per_minute, v->tokens_per_day };
	for (int d = 0; d < 3; d++) {
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

struct limit_entry {
	struct hnode node;               /* first: (subject, model); model "" = subject-wide */
	struct limit_entry *newer;       /* LRU list, most recently used first */
	struct limit_entry *older;
	int64_t last_used_ms;
	uint64_t rules_generation;       /* of the rules limit[] was resolved from */
	double limit[LIMIT_N_DIMS];      /* in force; < 0: none */
	double level[2];                 /* GCRA bucket fill in requests / tokens (BUCKET_*) */
	int64_t level_at_ms;             /* when the buckets were last drained */
	int64_t day_start_ms;            /* the UTC day tokens_day counts */
	int64_t tokens_day;
	int64_t month_start_ms;          /* the UTC month ucents_month counts */
	int64_t ucents_month;            /* millionths of a cent */
	struct limit_pending pending[2]; /* at most two days awaiting export */
};

struct limits {
	struct limit_rules *rules;
	struct htab entries;
	struct limit_entry *newest;
	struct limit_entry *oldest;
	size_t max_entries;
	struct limits_stats stats;
};

struct limits *limits_new(struct limit_rules *rules, size_t max_entries)
{
	struct limits *l = calloc(1, sizeof(*l));
	if (!l)
		return NULL;
	if (!rules)
		rules = limits_rules_new();
	if (!rules || !htab_init(&l->entries)) {
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
	while (e) {
		struct limit_entry *next = e->older;
		free(e);
		e = next;
	}
	free(l->entries.buckets);
	limits_rules_free(l->rules);
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

/* Resolve limits if the rules changed, drain the buckets, roll day and month. */
static void entry_refresh(struct limits *l, struct limit_entry *e, int64_t now)
{
	if (e->rules_generation != l->rules->generation) {
		resolve_into(l->rules, e->node.subject, e->node.model, e->limit);
		e->rules_generation = l->rules->generation;
	}
	double elapsed = now > e->level_at_ms ? (double)(now - e->level_at_ms) : 0;
	for (int b = 0; b < 2; b++) {
		double lim = e->limit[b];
		if (lim <= 0)
			e->level[b] = 0;   /* no limit, or 0: nothing to remember */
		else if (e->level[b] > 0)
			e->level[b] = fmax(0, e->level[b] - elapsed * lim / MINUTE_MS);
	}
	if (now > e->level_at_ms)
		e->level_at_ms = now;   /* a clock stepping back drains nothing */
	int64_t ds = day_start(now);
	if (ds > e->day_start_ms) {
		e->day_start_ms = ds;
		e->tokens_day = 0;
	}
	int64_t ms = month_start(now);
	if (ms > e->month_start_ms) {
		e->month_start_ms = ms;
		e->ucents_month = 0;
	}
}

static bool entry_at_rest(const struct limit_entry *e)
{
	return e->level[0] <= LEVEL_EPSILON && e->level[1] <= LEVEL_EPSILON && e->tokens_day == 0 &&
	       e->ucents_month == 0 && !e->pending[0].used && !e->pending[1].used;
}

static void entry_free(struct limits *l, struct limit_entry *e)
{
	lru_unlink(l, e);
	htab_remove(&l->entries, &e->node);
	free(e);
}

/*
 * The counter for (subject, model), created if needed, refreshed to now and
 * moved to the front of the LRU list. NULL when out of memory.
 */
static struct limit_entry *entry_get(struct limits *l, const char *subject, const char *model,
                                     int64_t now)
{
	struct name_key k = make_key(subject, model);
	struct limit_entry *e = (struct limit_entry *)htab_find(&l->entries, &k);
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
		e->level_at_ms = now;
		e->day_start_ms = day_start(now);
		e->month_start_ms = month_start(now);
		htab_insert(&l->entries, &e->node);
	}
	lru_push_newest(l, e);
	if (now > e->last_used_ms)
		e->last_used_ms = now;
	entry_refresh(l, e, now);
	return e;
}

/* a + b for non-negative counts, saturating instead of overflowing. */
static int64_t add_count(int64_t a, int64_t b)
{
	return a > INT64_MAX - b ? INT64_MAX : a + b;
}

/* Add local use to the pending delta of now's UTC day. */
static void pending_add(struct limits *l, struct limit_entry *e, int64_t now, int64_t requests,
                        int64_t tokens, int64_t ucents)
{
	int64_t ds = day_start(now);
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
	slot->tokens = add_count(slot->tokens, tokens);
	slot->ucents = add_count(slot->ucents, ucents);
}

/* A refusal candidate, kept when it needs a longer wait than *best. */
static void consider(struct limit_refusal *best, bool *refused, enum limit_dim d, const char *model,
                     double limit, double used, int64_t retry_ms, int64_t now)
{
	bool longer = !*refused || (best->retry_after_ms >= 0 && (retry_ms < 0 || retry_ms > best->retry_after_ms));
	if (!longer)
		return;
	*refused = true;
	best->dim = d;
	best->model = model;
	best->limit = limit;
	best->used = used;
	best->window = dim_windows[d];
	best->retry_after_ms = retry_ms;
	best->reset_at_ms = retry_ms < 0 ? -1 : now + retry_ms;
}

/* Milliseconds (rounded up) to drain amount from a bucket of limit per minute; at most ~31,700 years. */
static int64_t drain_ms(double amount, double limit)
{
	double ms = ceil(amount * MINUTE_MS / limit - LEVEL_EPSILON);
	if (!(ms > 0))
		return 0;
	return ms < (double)LIMITS_MAX_COUNT ? (int64_t)ms : LIMITS_MAX_COUNT;
}

/* The use shown for a bucket level: requests or tokens, rounded up. */
static double bucket_used(double level)
{
	return level > LEVEL_EPSILON ? ceil(level - LEVEL_EPSILON) : 0;
}

/* Check every limit of e at now (already refreshed); model names e's model or NULL. */
static void entry_check(const struct limit_entry *e, const char *model, int64_t now,
                        struct limit_refusal *best, bool *refused)
{
	for (int b = 0; b < 2; b++) {
		double lim = e->limit[b];
		if (lim < 0)
			continue;
		double need = e->level[b] + 1 - lim;   /* to drain before one more fits */
		if (lim == 0) {
			consider(best, refused, (enum limit_dim)b, model, 0, bucket_used(e->level[b]), -1, now);
		} else if (need > LEVEL_EPSILON) {
			int64_t retry = drain_ms(need, lim);
			consider(best, refused, (enum limit_dim)b, model, lim, bucket_used(e->level[b]),
			         retry < 1 ? 1 : retry, now);
		}
	}
	double lim = e->limit[LIMIT_TOKENS_PER_DAY];
	if (lim >= 0 && (double)e->tokens_day >= lim)
		consider(best, refused, LIMIT_TOKENS_PER_DAY, model, lim, (double)e->tokens_day,
		         lim == 0 ? -1 : e->day_start_ms + DAY_MS - now, now);
	lim = e->limit[LIMIT_COST_CENTS_PER_MONTH];
	if (lim >= 0 && e->ucents_month >= llround(lim * UCENTS_PER_CENT))
		consider(best, refused, LIMIT_COST_CENTS_PER_MONTH, model, lim,
		         (double)e->ucents_month / UCENTS_PER_CENT,
		         lim == 0 ? -1 : next_month_start(now) - now, now);
}

static bool has_model(const char *model)
{
	return model && *model && strcmp(model, "*") != 0;
}

bool limits_admit(struct limits *l, const char *subject, const char *model, int64_t now_ms,
                  struct limit_refusal *refusal)
{
	if (!subject || !*subject)
		return true;
	struct limit_entry *s = entry_get(l, subject, NULL, now_ms);
	struct limit_entry *m = has_model(model) ? entry_get(l, subject, model, now_ms) : NULL;
	if (!s)
		return true;   /* out of memory: fail open */

	struct limit_refusal best;
	bool refused = false;
	memset(&best, 0, sizeof(best));
	entry_check(s, NULL, now_ms, &best, &refused);
	if (m)
		entry_check(m, model, now_ms, &best, &refused);
	if (refused) {
		if (refusal)
			*refusal = best;
		return false;
	}
	struct limit_entry *both[2] = { s, m };
	for (int i = 0; i < 2 && both[i]; i++)
		if (both[i]->limit[BUCKET_REQUESTS] > 0)
			both[i]->level[BUCKET_REQUESTS] += 1;
	pending_add(l, m ? m : s, now_ms, 1, 0, 0);
	return true;
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

/*
 * Add use to the subject-wide and subject/model counters: requests and tokens
 * into the buckets (when bucket), tokens and ucents into the budgets (at_day
 * -1: the counters' current day and month; else only if at_day is that day /
 * in that month), and to the pending delta (when local).
 */
static void add_use(struct limits *l, const char *subject, const char *model, int64_t now,
                    int64_t requests, int64_t tokens, int64_t ucents, int64_t at_day,
                    bool bucket, bool local)
{
	if (!subject || !*subject)
		return;
	if (tokens < 0)
		tokens = 0;
	struct limit_entry *s = entry_get(l, subject, NULL, now);
	struct limit_entry *m = has_model(model) ? entry_get(l, subject, model, now) : NULL;
	struct limit_entry *both[2] = { s, m };
	for (int i = 0; i < 2; i++) {
		struct limit_entry *e = both[i];
		if (!e)
			continue;
		if (bucket) {
			if (e->limit[BUCKET_REQUESTS] > 0)
				e->level[BUCKET_REQUESTS] += (double)requests;
			if (e->limit[BUCKET_TOKENS] > 0)
				e->level[BUCKET_TOKENS] += (double)tokens;
		}
		if (at_day < 0 || at_day == e->day_start_ms)
			e->tokens_day = add_count(e->tokens_day, tokens);
		if (at_day < 0 || month_start(at_day) == e->month_start_ms)
			e->ucents_month = add_count(e->ucents_month, ucents);
	}
	if (local && (m || s))
		pending_add(l, m ? m : s, now, requests, tokens, ucents);
}

void limits_charge(struct limits *l, const char *subject, const char *model, int64_t tokens,
                   double cost_cents, int64_t now_ms)
{
	add_use(l, subject, model, now_ms, 0, tokens, to_ucents(cost_cents), -1, true, true);
}

void limits_seed(struct limits *l, const char *subject, const char *model, int64_t tokens_today,
                 double cost_cents_month, int64_t now_ms)
{
	add_use(l, subject, model, now_ms, 0, tokens_today, to_ucents(cost_cents_month), -1,
	        false, false);
}

void limits_apply_remote(struct limits *l, const char *subject, const char *model,
                         int64_t day_start_ms, int64_t requests, int64_t tokens,
                         double cost_cents, int64_t now_ms)
{
	int64_t day = day_start(day_start_ms);
	bool recent = day + DAY_MS > now_ms - MINUTE_MS;
	add_use(l, subject, model, now_ms, requests < 0 ? 0 : requests, tokens, to_ucents(cost_cents),
	        day, recent, false);
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
	static const char *const nouns[LIMIT_N_DIMS] = { "request", "token", "token", "cent" };
	static const char *const verbs[LIMIT_N_DIMS] = { "", "", " used", " spent" };
	char limit[64], used[64], model[LIMITS_NAME_MAX + 16] = "";
	enum limit_dim d = (unsigned)r->dim < LIMIT_N_DIMS ? r->dim : LIMIT_REQUESTS_PER_MINUTE;

	format_amount(d, r->limit, limit, sizeof(limit));
	format_amount(d, r->used, used, sizeof(used));
	if (r->model)
		snprintf(model, sizeof(model), "model \"%.*s\"", LIMITS_NAME_MAX, r->model);
	memset(out, 0, sizeof(*out));
	snprintf(out->severity, sizeof(out->severity), "ERROR");
	snprintf(out->sqlstate, sizeof(out->sqlstate), "%s", SQLSTATE_RATE_LIMIT_EXCEEDED);
	snprintf(out->message, sizeof(out->message), "rate limit exceeded for \"%s\": %s %s",
	         subject ? subject : "", dim_names[d], limit);
	const char *sep = r->model ? " " : "";
	if (r->limit == 0)
		snprintf(out->detail, sizeof(out->detail), "The limit%s%s%s is 0, so every statement is refused.",
		         r->model ? " for" : "", sep, model);
	else
		snprintf(out->detail, sizeof(out->detail), "%s %s%s%s%s%s%s %s; the limit is %s.", used, nouns[d],
		         r->used == 1 ? "" : "s", verbs[d], r->model ? " with" : "", sep, model,
		         dim_windows[d], limit);
	if (r->retry_after_ms < 0) {
		/* no hint: waiting does not help */
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
				st.used = bucket_used(e->level[d]);
				st.reset_at_ms = now_ms + (lim > 0 ? drain_ms(e->level[d], lim) : 0);
				break;
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
