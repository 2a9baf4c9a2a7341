/* SPDX-License-Identifier: PostgreSQL */
/*
 * limits.h - rate limits and budgets of the AI middleware (docs/limits.md): the
 * [limits] rules and their sluice.limits overrides, per-subject and per-model
 * counters, admission with reservations, settling, counter sync between
 * instances and leased slices of per-minute limits. Pure: no I/O.
 */
#ifndef SLUICE_LIMITS_H
#define SLUICE_LIMITS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "pgerror.h"

/*
 * Time: every function takes now_ms, wall-clock milliseconds since the Unix
 * epoch (UTC); days and months are UTC calendar days and months. Nothing here
 * reads a clock, so tests are deterministic. Not thread-safe: one event loop
 * owns a struct limits. Algorithms, precedence and the multi-instance bound
 * are explained in docs/limits.md.
 */

enum limit_dim {
	LIMIT_REQUESTS_PER_MINUTE,   /* attributed statements in any 60 s (sliding window) */
	LIMIT_TOKENS_PER_MINUTE,     /* tokens charged or reserved in any 60 s (sliding window) */
	LIMIT_TOKENS_PER_DAY,        /* tokens charged or reserved in the current UTC day */
	LIMIT_COST_CENTS_PER_MONTH,  /* cents charged or reserved in the current UTC month */
	LIMIT_MAX_CONCURRENT,        /* attributed statements in flight (admitted, not yet settled) */
	LIMIT_N_DIMS
};

/* A limit value that is not set at this level (sluice.limits NULL): inherit. */
#define LIMIT_INHERIT (-1)

/* Largest value of an integer dimension, and of cost_cents_per_month. */
#define LIMITS_MAX_COUNT 1000000000000000LL   /* 10^15 requests or tokens */
#define LIMITS_MAX_CENTS 1000000000000.0      /* 10^12 cents */

#define LIMITS_MINUTE_MS ((int64_t)60000)
#define LIMITS_DAY_MS    ((int64_t)86400000)

/* Counters idle this long, with nothing left to remember, are freed (limits_expire). */
#define LIMITS_IDLE_MS   LIMITS_DAY_MS

/*
 * A reservation that is never settled or released (a statement whose end
 * pgsluice never saw) is dropped 5 to 10 minutes after its admission: it is
 * kept for the epoch of 5 minutes it was made in and the next one.
 */
#define LIMITS_RESERVATION_EPOCH_MS ((int64_t)300000)

/* The running mean of a counter's calls weighs each new call 1/8. */
#define LIMITS_MEAN_WEIGHT 8.0

/* retry_after_ms of a max_concurrent refusal (orders it among refusals; the HINT says why). */
#define LIMITS_CONCURRENT_RETRY_MS 100

/* max_entries when limits_new is given 0; the smallest accepted is 16. */
#define LIMITS_DEFAULT_MAX_ENTRIES 1000000

/*
 * Subject and model names are keyed by their first LIMITS_NAME_MAX bytes, so
 * that one counter costs a bounded amount of memory whatever a tag says.
 */
#define LIMITS_NAME_MAX 256

/*
 * The limits written for one (subject, model) in one place: a [limits] line
 * or a sluice.limits row. LIMIT_INHERIT (any negative value) = not set here.
 */
struct limit_values {
	int64_t requests_per_minute;
	int64_t tokens_per_minute;
	int64_t tokens_per_day;
	double cost_cents_per_month;    /* fractions allowed: 0.5 */
	int64_t max_concurrent;
};

/* The ini name of a dimension ("requests_per_minute", ...). */
const char *limit_dim_name(enum limit_dim dim);

/* Set every value of v to LIMIT_INHERIT. */
void limit_values_init(struct limit_values *v);

/* ---- rules: what the limits are ---- */

/*
 * The rule set: [limits] lines plus sluice.limits overrides, keyed by
 * (subject, model). Subject "default" applies to every subject; model "" (or
 * NULL, or "*" as sluice.limits writes it) means "all models of the subject".
 */
struct limit_rules;

/* An empty rule set (no limits at all), or NULL when out of memory. */
struct limit_rules *limits_rules_new(void);

/* Free a rule set that no struct limits owns; NULL is ignored. */
void limits_rules_free(struct limit_rules *rules);

/*
 * Add one [limits] line: key "subject" or "subject/model" (split at the first
 * '/'; names are case-sensitive; model "*" = no model), value
 * "dimension=value ..." separated by spaces or commas, spaces around '='
 * allowed, dimension names case-insensitive. Integers for the first three
 * dimensions, a decimal number (0.5) for cost_cents_per_month; 0 refuses every
 * statement. A dimension given again (same line or a later line for the same
 * key) takes the later value; dimensions not given are left as they were.
 * Returns false with errbuf set, rules unchanged, on e.g.
 *   invalid limit "requests_per_minute=abc" for "alice": expected a non-negative integer
 * (the config loader adds "file:line: " in front).
 */
bool limits_parse_line(struct limit_rules *rules, const char *key, const char *value,
                       char *errbuf, size_t errlen);

/*
 * Set the sluice.limits override for (subject, model) to values, replacing
 * any earlier override for that key; LIMIT_INHERIT (NULL in the table) leaves
 * a dimension to the [limits] line or the less specific levels. An override
 * beats the [limits] line of the same (subject, model). Returns false, rules
 * unchanged, when subject is NULL or "" or a value is above the maximum or NaN.
 */
bool limits_set_override(struct limit_rules *rules, const char *subject, const char *model,
                         const struct limit_values *values);

/* Drop every override (before loading sluice.limits afresh); [limits] lines stay. */
void limits_clear_overrides(struct limit_rules *rules);

/*
 * Copy src's overrides into dst (on reload: dst is the freshly parsed [limits]
 * section, src the rules in use). Returns false when out of memory (dst then
 * holds some of them).
 */
bool limits_copy_overrides(struct limit_rules *dst, const struct limit_rules *src);

/*
 * The limits in force for one counter, per dimension (LIMIT_INHERIT: none):
 *   subject-wide counter (model NULL or ""): subject, else default;
 *   per-model counter: subject/model, else (unless the subject sets that
 *   dimension itself, which then governs all its models) default/model.
 * At each level an override beats the [limits] line. Both counters are
 * checked on every statement, so the effective precedence is
 * subject/model > subject > default/model > default.
 */
void limits_resolve(const struct limit_rules *rules, const char *subject, const char *model,
                    struct limit_values *out);

/* ---- counters: how much has been used ---- */

struct limits;

/*
 * New counters governed by rules (owned from now on; NULL = no limits).
 * max_entries bounds the number of (subject, model) counters (0: the
 * default; each costs about 330 bytes plus its names, and 504 per per-minute limit in force). When a new counter would pass
 * it, the least recently used counter is freed; if it still held use, that
 * use is forgotten (limits_stats.evicted_full), so size max_entries above the
 * number of subjects and models active in a month. NULL when out of memory.
 */
struct limits *limits_new(struct limit_rules *rules, size_t max_entries);

/* Free l and its rules; NULL is ignored. */
void limits_free(struct limits *l);

/*
 * Replace the rules at once (reload), freeing the old set; takes ownership of
 * rules (NULL = no limits). Counters are kept: use stays counted, and the new
 * limits apply from the next call.
 */
void limits_set_rules(struct limits *l, struct limit_rules *rules);

/*
 * The rules in use, borrowed. They may be changed in place (e.g. clear and
 * set the sluice.limits overrides in one event-loop callback); counters
 * notice on their next use.
 */
struct limit_rules *limits_get_rules(struct limits *l);

/* Why a statement was refused: the dimension that needs the longest wait. */
struct limit_refusal {
	enum limit_dim dim;
	const char *model;       /* the model whose own limit refused, borrowed from
	                            limits_admit's argument; NULL: a subject-wide limit */
	const char *group;       /* the group whose limit refused (borrowed, valid until the
	                            groups change); NULL: the subject's own */
	double limit;            /* the limit in force (cents for cost) */
	double used;             /* use counted against it: requests or tokens in the
	                            last minute, tokens today, cents this month, statements in flight */
	double reserved;         /* tokens or cents held by statements in flight (0 for the others) */
	const char *window;      /* "in the last minute", "today (UTC)", "this month (UTC)"; static */
	int64_t retry_after_ms;  /* per-minute: until one more request or token fits;
	                            budgets: until the window resets; -1: never (the limit is 0) */
	int64_t reset_at_ms;     /* now_ms + retry_after_ms; -1 with it */
};

/*
 * May an attributed statement of subject (using model; NULL or "" = none)
 * run at now_ms? Checks the subject-wide counter and, with a model, the
 * subject/model counter, in every dimension: requests_per_minute needs the
 * requests of the last 60 s plus this one to be at most the limit; a token
 * or cost limit needs use plus what statements in flight reserved plus this
 * one's estimate (at least one token / one millionth of a cent) to be at
 * most the limit, or nothing used or reserved at all (one call larger than
 * the whole limit is admitted, alone); max_concurrent needs room for one more
 * statement in flight. When allowed, counts one request on both and returns
 * true. Otherwise counts nothing, fills *refusal (may be NULL) with the
 * dimension that needs the longest wait, and returns false. subject NULL or
 * "" is not limited (true). Out of memory: fails open (true, not counted).
 * Same as limits_admit_reserve without an estimate or reservation.
 */
bool limits_admit(struct limits *l, const char *subject, const char *model, int64_t now_ms,
                  struct limit_refusal *refusal);

/*
 * True when l holds no rule at all ([limits] or sluice.limits): then no
 * counter is limited, and limits_admit_reserve neither checks nor reserves
 * an estimate (a caller may skip computing one). False for l NULL.
 */
bool limits_rules_empty(const struct limits *l);

/* What a statement is expected to spend; a negative field: the counter's running mean. */
struct limit_estimate {
	int64_t tokens;
	double cost_cents;
};

/*
 * What an admitted statement holds on its counters until limits_settle or
 * limits_release (exactly one of them, at most once); plain data, kept by the
 * caller with the statement. held is false when nothing was reserved.
 */
struct limit_reservation {
	bool held;
	int64_t epoch;           /* now_ms / LIMITS_RESERVATION_EPOCH_MS at admission */
	int64_t tokens;          /* reserved tokens */
	int64_t ucents;          /* reserved cost, millionths of a cent */
	/* the subject's counters admission used (opaque; limits_settle uses them,
	   after checking their names, while no counter has been freed since) */
	void *counters[2];
	const void *counters_of;     /* the struct limits they belong to */
	uint64_t counters_gen;
};

/*
 * limits_admit, and when admitted reserve est on the subject-wide and the
 * subject/model counter: its tokens and cost count against tokens_per_minute,
 * tokens_per_day and cost_cents_per_month, and the statement against
 * max_concurrent, until limits_settle or limits_release, or until the
 * reservation expires (LIMITS_RESERVATION_EPOCH_MS). est NULL: nothing but
 * the statement is reserved; a negative est field: the running mean of the
 * most specific counter's recent calls (weight 1/LIMITS_MEAN_WEIGHT per call,
 * 0 before the first). *resv (may be NULL: no reservation) is always written.
 */
bool limits_admit_reserve(struct limits *l, const char *subject, const char *model, int64_t now_ms,
                          const struct limit_estimate *est, struct limit_reservation *resv,
                          struct limit_refusal *refusal);

/*
 * The statement of *resv made its usage record: give back the reservation
 * and charge the real tokens and cost (limits_charge). resv not held: only
 * the charge. Marks *resv not held.
 */
void limits_settle(struct limits *l, const char *subject, const char *model,
                   struct limit_reservation *resv, int64_t tokens, double cost_cents, int64_t now_ms);

/* The statement ended without a record (failed, client gone): give back *resv. NULL l or resv, or not held: nothing. */
void limits_release(struct limits *l, const char *subject, const char *model,
                    struct limit_reservation *resv, int64_t now_ms);

/*
 * Charge a completed LLM call's tokens and cost (cents, fractions allowed)
 * when its usage record is made, to the subject-wide and the subject/model
 * counters. Never refuses: a subject pushed over a limit is refused on its
 * next statement (docs/limits.md); per-minute overuse becomes debt that drains
 * at the limit's rate. Negative or NaN amounts count as 0, one call's cost
 * at most LIMITS_MAX_CENTS; sums saturate instead of overflowing.
 */
void limits_charge(struct limits *l, const char *subject, const char *model, int64_t tokens,
                   double cost_cents, int64_t now_ms);

/*
 * At start, add stored usage (sluice.llm_usage: tokens of the current UTC
 * day, cents of the current UTC month, as of now_ms) for (subject, model)
 * to the day and month budgets; call once per (subject, model) row, model
 * NULL/"" for usage without a model. Adds, so rows for several models of a
 * subject sum up in the subject-wide counter. Not exported to other
 * instances (they seed from the same table).
 */
void limits_seed(struct limits *l, const char *subject, const char *model, int64_t tokens_today,
                 double cost_cents_month, int64_t now_ms);

/*
 * The error for a refusal into *out: severity ERROR, SQLSTATE 53400, and
 * texts following PostgreSQL's Error Message Style Guide, each cut to its
 * field's size:
 *   msg:    rate limit exceeded for "alice": requests_per_minute 60
 *   detail: 60 requests in the last minute; the limit is 60.
 *           (with model: 50000 tokens used with model "gpt-4o" today (UTC); ...)
 *   hint:   Retry after 1.4 s.   (per-minute; tenths of a second, rounded up)
 *           The budget resets at 2026-12-01 00:00:00 UTC.   (budgets)
 *           "" when the limit is 0 (waiting does not help)
 */
void limits_format_refusal(const struct limit_refusal *r, const char *subject, struct pg_error *out);

/* One limit in force on one counter, for SHOW LIMITS. */
struct limit_status {
	const char *subject;     /* borrowed for the callback only */
	const char *model;       /* "" for the subject-wide counter */
	enum limit_dim dim;
	double limit;
	double used;             /* as in struct limit_refusal (reservations not included) */
	double remaining;        /* limit - used, at least 0 */
	int64_t reset_at_ms;     /* per-minute: when the window is empty (now_ms if it is);
	                            budgets: the start of the next day or month */
};

typedef void (*limits_status_fn)(const struct limit_status *status, void *arg);

/*
 * Call fn for every limit in force on every counter, in no particular order.
 * fn must not call into l. Returns the number of calls.
 */
size_t limits_foreach_status(struct limits *l, int64_t now_ms, limits_status_fn fn, void *arg);

/* ---- sharing counters between instances (sluice.rate_counters) ---- */

/*
 * What one instance counted locally for (subject, model) during one UTC day
 * since its previous export: admitted requests, charged tokens and cents.
 * Only local use is exported, never what limits_apply_remote added.
 */
struct limit_delta {
	const char *subject;     /* borrowed for the callback only */
	const char *model;       /* "" when the statements named no model */
	int64_t day_start_ms;    /* UTC midnight of the day the counts belong to */
	int64_t requests;
	int64_t tokens;
	double cost_cents;
};

typedef void (*limits_delta_fn)(const struct limit_delta *delta, void *arg);

/*
 * Hand every pending local delta to fn and forget it; the caller keeps its
 * copy until sluice.rate_counters has it (and re-sends it on failure). At
 * most two days are pending per counter: if no export happens for a whole
 * UTC day, older days are dropped (counted in limits_stats.dropped_deltas).
 * fn must not call into l. Returns the number of deltas handed out.
 */
size_t limits_export_deltas(struct limits *l, limits_delta_fn fn, void *arg);

/*
 * Add another instance's delta, read from sluice.rate_counters: requests and
 * tokens go into the per-minute buckets as if used at now_ms (so limits err on
 * the strict side; skipped when the whole day ended more than a minute ago),
 * tokens into the day budget if day_start_ms is today, cents into the month
 * budget if that day is in the current month. Applies to the subject-wide and
 * (model not NULL/"") the subject/model counter, like local use. Not exported again.
 */
void limits_apply_remote(struct limits *l, const char *subject, const char *model,
                         int64_t day_start_ms, int64_t requests, int64_t tokens,
                         double cost_cents, int64_t now_ms);

/* ---- leased per-minute allowances across instances (sluice.rate_leases) ---- */

/*
 * With leasing on, a counter with a requests_per_minute or tokens_per_minute
 * limit admits only from slices of that limit leased from PostgreSQL (one
 * INSERT ... ON CONFLICT DO UPDATE ... RETURNING on sluice.rate_leases), on
 * top of its own sliding window. A slice is spendable from the moment it was
 * asked for until LIMITS_LEASE_MS later; what is left then goes back.
 * PostgreSQL grants at most the limit in any LIMITS_LEASE_SPAN_S consecutive
 * seconds, so a slice spent in [g, g + LIMITS_LEASE_MS] is counted for every
 * 60 s window it can touch (docs/limits.md, "Leases across instances").
 */
#define LIMITS_LEASE_MS       ((int64_t)5000)
#define LIMITS_LEASE_SPAN_S   67            /* 60 s + the lease + 2 s of whole-second rounding */
#define LIMITS_LEASE_RETRY_MS 100           /* retry_after_ms of a refusal for want of a lease */
#define LIMITS_LEASE_BACKOFF_MS 250         /* before asking again after nothing was granted */

/*
 * Lease with instances expected instances sharing the limits (0: off, the
 * default; counters then admit from their own window alone). Turning it
 * off drops every lease held (not given back).
 */
void limits_set_leasing(struct limits *l, int instances);

/* The slice asked for a limit: max(1, limit / (4 x instances)); 0 when leasing is off. */
int64_t limits_lease_slice(const struct limits *l, double limit);

/* One slice to ask for, or one to give back. Names borrowed for the callback. */
struct limit_lease {
	const char *subject;
	const char *model;       /* "" for the subject-wide counter */
	enum limit_dim dim;      /* LIMIT_REQUESTS_PER_MINUTE or LIMIT_TOKENS_PER_MINUTE */
	int64_t limit;           /* asks: the limit in force */
	int64_t amount;          /* asks: wanted; gives: unspent */
	int64_t grant_sec;       /* gives: PostgreSQL's epoch second the slice was granted in */
};

typedef void (*limits_lease_fn)(const struct limit_lease *lease, void *arg);

/*
 * Hand every slice a counter needs (it refused for want of one, or holds
 * less than half a slice after admitting) to fn, marking it in flight from
 * now_ms: exactly one limits_lease_granted or limits_lease_failed must
 * follow for each. fn must not call into l. Returns the number handed out.
 */
size_t limits_lease_asks(struct limits *l, int64_t now_ms, limits_lease_fn fn, void *arg);

/*
 * PostgreSQL answered an ask of (subject, model, dim) made at sent_ms:
 * amount (0: none left this minute) granted in epoch second grant_sec,
 * spendable until sent_ms + LIMITS_LEASE_MS. A counter freed meanwhile
 * loses it (PostgreSQL counts it until it ages out: the strict side).
 */
void limits_lease_granted(struct limits *l, const char *subject, const char *model, enum limit_dim dim,
                          int64_t grant_sec, int64_t amount, int64_t sent_ms, int64_t now_ms);

/*
 * Every ask still in flight got no answer (PostgreSQL unreachable, or the
 * row missing from the answer): asked again LIMITS_LEASE_BACKOFF_MS after now_ms.
 */
void limits_lease_fail_in_flight(struct limits *l, int64_t now_ms);

/*
 * Hand the unspent part of every slice past its end at now_ms to fn (every
 * slice held when all, at shutdown) and forget them. fn must not call into
 * l. Returns the number handed out.
 */
size_t limits_lease_gives(struct limits *l, int64_t now_ms, bool all, limits_lease_fn fn, void *arg);

/* Requests and tokens held in unexpired slices, summed over counters (the metrics). */
void limits_lease_held(struct limits *l, int64_t now_ms, int64_t *requests, int64_t *tokens);

/* ---- memory ---- */

/*
 * Free the counters idle for LIMITS_IDLE_MS or longer whose state is back to
 * that of a new counter (per-minute buckets empty, no tokens today, no cost
 * this month, no pending delta), so freeing them loses nothing. A subject with
 * spend this month keeps its counter until the month ends. Call from the
 * janitor, e.g. once a minute; costs O(idle counters). Returns how many were freed.
 */
size_t limits_expire(struct limits *l, int64_t now_ms);

struct limits_stats {
	size_t entries;             /* counters in memory */
	uint64_t evicted_idle;      /* freed with nothing to remember */
	uint64_t evicted_full;      /* freed at max_entries while still holding use (lost) */
	uint64_t dropped_deltas;    /* pending deltas overwritten before an export */
	uint64_t dropped_alerts;    /* budget alerts not queued (more than 4096 waiting, or out of memory) */
};

void limits_get_stats(const struct limits *l, struct limits_stats *out);

/* ---- groups (sluice.subject_groups) ---- */

/*
 * Limits of a group are written for the subject "group:<name>" ([limits] key
 * group:eng, or a sluice.limits row with that subject); "default" does not
 * apply to groups. A statement of a subject is checked against and charged
 * to the subject's counters and to those of each of its groups (at most
 * LIMITS_MAX_GROUPS); the refusal that needs the longest wait names the group.
 * Groups are not exported to other instances: each adds its members' use.
 */
#define LIMITS_GROUP_PREFIX "group:"
#define LIMITS_MAX_GROUPS 4

/* Forget every membership (before loading sluice.subject_groups afresh). */
void limits_clear_groups(struct limits *l);

/* subject belongs to group (a name without the prefix). False: out of memory, empty names, or more than LIMITS_MAX_GROUPS. */
bool limits_add_group(struct limits *l, const char *subject, const char *group);

/* ---- budget alerts and status (sluice_budget, sluice.budget_status) ---- */

#define LIMITS_MAX_THRESHOLDS 8

/*
 * Parse budget_alert_thresholds: percentages (above 0, at most 1000, decimals
 * allowed) separated by commas or spaces, into out[LIMITS_MAX_THRESHOLDS]
 * ascending without repeats, *n of them ("" gives 0: no alerts). False with
 * errbuf set, e.g. invalid budget alert threshold "80%": expected a percentage
 * above 0 and at most 1000.
 */
bool limits_parse_thresholds(const char *text, double *out, size_t *n, char *errbuf, size_t errlen);

/* Alert when a budget's use reaches each of pcts (ascending, n at most LIMITS_MAX_THRESHOLDS). */
void limits_set_alert_thresholds(struct limits *l, const double *pcts, size_t n);

/*
 * A tokens_per_day or cost_cents_per_month budget of one counter reached
 * threshold_pct percent of its limit (charged use, local or from another
 * instance or the start-up seed); reported once per counter, threshold and
 * period (UTC day or month) by this instance. Names borrowed for the callback.
 */
struct limit_alert {
	const char *subject;
	const char *model;           /* "" for the subject-wide counter */
	enum limit_dim dim;
	double threshold_pct;
	double limit;                /* tokens, or cents */
	double used;                 /* when the threshold was reached */
	int64_t period_start_ms;     /* the UTC day or month */
	int64_t resets_at_ms;
};

typedef void (*limits_alert_fn)(const struct limit_alert *alert, void *arg);

/* Hand every alert queued since the last call to fn, oldest first, and forget them. Returns how many. */
size_t limits_take_alerts(struct limits *l, limits_alert_fn fn, void *arg);

/* A budget of one counter as it stands: for sluice.budget_status. Names borrowed for the callback. */
struct limit_budget {
	const char *subject;
	const char *model;           /* "" for the subject-wide counter */
	enum limit_dim dim;          /* LIMIT_TOKENS_PER_DAY or LIMIT_COST_CENTS_PER_MONTH */
	double limit;
	double used;                 /* charged this day / month (local, remote and seeded) */
	double reserved;             /* held by this instance's statements in flight */
	int64_t resets_at_ms;
};

typedef void (*limits_budget_fn)(const struct limit_budget *budget, void *arg);

/*
 * Call fn for each budget in force on every counter whose use or
 * reservations changed since the previous call (nothing when none did; else
 * a walk of all counters). fn must not call into l. Returns the number of calls.
 */
size_t limits_foreach_changed_budget(struct limits *l, int64_t now_ms, limits_budget_fn fn, void *arg);

#endif
