/* SPDX-License-Identifier: PostgreSQL */
/*
 * test_limits.c - rate limits and budgets: [limits] parsing and precedence,
 * sliding-window per-minute limits, reservations and max_concurrent, UTC
 * day and month budgets, seeding, the refusal
 * text, memory bounds, and the multi-instance overshoot bound.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <cmocka.h>

#include "ai/limits.h"

/* ms since the epoch of a UTC date and time. */
static int64_t utc_ms(int y, int mon, int d, int h, int min, int s)
{
	struct tm tm = { .tm_year = y - 1900, .tm_mon = mon - 1, .tm_mday = d,
	                 .tm_hour = h, .tm_min = min, .tm_sec = s };
	return (int64_t)timegm(&tm) * 1000;
}

/* A fixed "now" in the middle of a UTC day and month. */
#define T0 utc_ms(2026, 3, 14, 12, 0, 0)

/* Rules from [limits] lines "key = value" separated by ';'. */
static struct limit_rules *rules_from(const char *lines)
{
	struct limit_rules *rules = limits_rules_new();
	char buf[1024], err[256];
	assert_non_null(rules);
	snprintf(buf, sizeof(buf), "%s", lines);
	char *save = NULL;
	for (char *line = strtok_r(buf, ";", &save); line; line = strtok_r(NULL, ";", &save)) {
		char *eq = strchr(line, '=');
		assert_non_null(eq);
		*eq = '\0';
		char *key = line, *end = eq;
		while (*key == ' ')
			key++;
		while (end > key && end[-1] == ' ')
			*--end = '\0';
		if (!limits_parse_line(rules, key, eq + 1, err, sizeof(err)))
			fail_msg("unexpected parse error: %s", err);
	}
	return rules;
}

static struct limits *limits_from(const char *lines)
{
	struct limits *l = limits_new(rules_from(lines), 0);
	assert_non_null(l);
	return l;
}

/* How many of n statements at now are admitted. */
static int admit_n(struct limits *l, const char *subject, const char *model, int n, int64_t now)
{
	int ok = 0;
	for (int i = 0; i < n; i++)
		ok += limits_admit(l, subject, model, now, NULL);
	return ok;
}

/* The parse error for one line (static buffer); fails if it parses. */
static const char *parse_error(const char *key, const char *value)
{
	static char err[512];
	struct limit_rules *rules = limits_rules_new();
	err[0] = '\0';
	bool ok = limits_parse_line(rules, key, value, err, sizeof(err));
	limits_rules_free(rules);
	if (ok)
		fail_msg("\"%s = %s\" parsed", key, value);
	return err;
}

static struct pg_error format(const struct limit_refusal *r, const char *subject)
{
	struct pg_error f;
	limits_format_refusal(r, subject, &f);
	return f;
}

/* ---- parsing ---- */

static void test_parse_reads_every_dimension(void **state)
{
	struct limit_rules *rules = rules_from(
		"alice = requests_per_minute=60 tokens_per_minute=1000 tokens_per_day=50000 cost_cents_per_month=0.5");
	struct limit_values v;
	limits_resolve(rules, "alice", NULL, &v);
	assert_int_equal(v.requests_per_minute, 60);
	assert_int_equal(v.tokens_per_minute, 1000);
	assert_int_equal(v.tokens_per_day, 50000);
	assert_true(v.cost_cents_per_month == 0.5);
	limits_rules_free(rules);
}

static void test_parse_accepts_commas_spaces_and_any_case(void **state)
{
	struct limit_rules *rules =
		rules_from("alice =  Requests_Per_Minute = 5,tokens_per_day=7 , COST_CENTS_PER_MONTH=.25");
	struct limit_values v;
	limits_resolve(rules, "alice", NULL, &v);
	assert_int_equal(v.requests_per_minute, 5);
	assert_int_equal(v.tokens_per_day, 7);
	assert_true(v.cost_cents_per_month == 0.25);
	assert_int_equal(v.tokens_per_minute, LIMIT_INHERIT);
	limits_rules_free(rules);
}

static void test_parse_later_value_wins_and_lines_merge(void **state)
{
	struct limit_rules *rules = rules_from(
		"alice = requests_per_minute=5 requests_per_minute=6; alice = tokens_per_day=9");
	struct limit_values v;
	limits_resolve(rules, "alice", NULL, &v);
	assert_int_equal(v.requests_per_minute, 6);
	assert_int_equal(v.tokens_per_day, 9);
	limits_rules_free(rules);
}

static void test_parse_splits_model_at_first_slash(void **state)
{
	struct limit_rules *rules =
		rules_from("alice/meta-llama/Llama-3-70b = tokens_per_day=10; bob/* = tokens_per_day=20");
	struct limit_values v;
	limits_resolve(rules, "alice", "meta-llama/Llama-3-70b", &v);
	assert_int_equal(v.tokens_per_day, 10);
	limits_resolve(rules, "bob", NULL, &v);   /* model "*" is the subject-wide line */
	assert_int_equal(v.tokens_per_day, 20);
	limits_rules_free(rules);
}

static void test_parse_errors_name_the_line_and_what_was_expected(void **state)
{
	assert_string_equal(parse_error("alice", "requests_per_minute=abc"),
	                    "invalid limit \"requests_per_minute=abc\" for \"alice\": expected a non-negative integer");
	assert_string_equal(parse_error("alice", "tokens_per_day=-1"),
	                    "invalid limit \"tokens_per_day=-1\" for \"alice\": expected a non-negative integer");
	assert_string_equal(parse_error("alice", "tokens_per_minute=1.5"),
	                    "invalid limit \"tokens_per_minute=1.5\" for \"alice\": expected a non-negative integer");
	assert_string_equal(parse_error("alice/gpt-4o", "requests_per_minute="),
	                    "invalid limit \"requests_per_minute=\" for \"alice/gpt-4o\": expected a non-negative integer");
	assert_string_equal(parse_error("alice", "cost_cents_per_month=1e3"),
	                    "invalid limit \"cost_cents_per_month=1e3\" for \"alice\": expected a non-negative number");
	assert_string_equal(parse_error("alice", "cost_cents_per_month=5."),
	                    "invalid limit \"cost_cents_per_month=5.\" for \"alice\": expected a non-negative number");
	assert_string_equal(parse_error("alice", "requests_per_minute=99999999999999999999"),
	                    "invalid limit \"requests_per_minute=99999999999999999999\" for \"alice\": "
	                    "the maximum is 1000000000000000");
	assert_string_equal(parse_error("alice", "requests_per_hour=5"),
	                    "unknown limit dimension \"requests_per_hour\" for \"alice\": expected "
	                    "requests_per_minute, tokens_per_minute, tokens_per_day, cost_cents_per_month or max_concurrent");
	assert_string_equal(parse_error("alice", "requests_per_minute 60"),
	                    "invalid limit \"requests_per_minute\" for \"alice\": expected dimension=value, "
	                    "e.g. requests_per_minute=60");
	assert_string_equal(parse_error("alice", "=60"),
	                    "invalid limit \"=60\" for \"alice\": expected dimension=value, "
	                    "e.g. requests_per_minute=60");
	assert_string_equal(parse_error("alice", "  "),
	                    "no limits given for \"alice\": expected dimension=value, e.g. requests_per_minute=60");
	assert_string_equal(parse_error("/gpt-4o", "requests_per_minute=1"),
	                    "invalid limits key \"/gpt-4o\": expected subject or subject/model");
	assert_string_equal(parse_error("alice/", "requests_per_minute=1"),
	                    "invalid limits key \"alice/\": expected subject or subject/model");
}

static void test_parse_error_leaves_rules_unchanged(void **state)
{
	struct limit_rules *rules = rules_from("alice = requests_per_minute=5");
	char err[256];
	assert_false(limits_parse_line(rules, "alice", "requests_per_minute=6 tokens_per_day=x", err, sizeof(err)));
	struct limit_values v;
	limits_resolve(rules, "alice", NULL, &v);
	assert_int_equal(v.requests_per_minute, 5);
	assert_int_equal(v.tokens_per_day, LIMIT_INHERIT);
	limits_rules_free(rules);
}

static void test_parse_error_fits_small_buffer(void **state)
{
	struct limit_rules *rules = limits_rules_new();
	char err[16];
	memset(err, 'x', sizeof(err));
	assert_false(limits_parse_line(rules, "alice", "requests_per_minute=abc", err, sizeof(err)));
	assert_int_equal(strlen(err), sizeof(err) - 1);
	limits_rules_free(rules);
}

/* ---- requests_per_minute (sliding window) ---- */

static void test_requests_per_minute_is_n_in_any_60_seconds(void **state)
{
	struct limits *l = limits_from("alice = requests_per_minute=60");
	struct limit_refusal r;

	assert_int_equal(admit_n(l, "alice", NULL, 60, T0), 60);
	assert_false(limits_admit(l, "alice", NULL, T0, &r));
	assert_int_equal(r.dim, LIMIT_REQUESTS_PER_MINUTE);
	assert_null(r.model);
	assert_true(r.limit == 60);
	assert_true(r.used == 60);
	/* one-second slots, the oldest counted whole: T0's second leaves at T0 + 61 s */
	assert_int_equal(r.retry_after_ms, 61000);
	assert_int_equal(r.reset_at_ms, T0 + 61000);
	assert_string_equal(r.window, "in the last minute");

	/* no GCRA refill: nothing fits during the whole window */
	assert_int_equal(admit_n(l, "alice", NULL, 5, T0 + 1000), 0);
	assert_false(limits_admit(l, "alice", NULL, T0 + 60999, &r));
	assert_int_equal(r.retry_after_ms, 1);
	assert_int_equal(admit_n(l, "alice", NULL, 61, T0 + 61000), 60);
	limits_free(l);
}

/* The HINT's wait is exact: retrying then is admitted, a millisecond earlier is not. */
static void test_requests_per_minute_retry_after_is_exact(void **state)
{
	struct limits *l = limits_from("alice = requests_per_minute=10");
	struct limit_refusal r;
	int64_t t = T0 + 250;
	for (int i = 0; i < 10; i++)
		assert_true(limits_admit(l, "alice", NULL, t + i * 7000, NULL));   /* spread over 63 s */
	/* at t + 63 s the first (second T0) has left: one fits */
	int64_t now = t + 63000;
	assert_true(limits_admit(l, "alice", NULL, now, NULL));
	assert_false(limits_admit(l, "alice", NULL, now, &r));
	int64_t retry = r.retry_after_ms;
	assert_true(retry > 0 && retry <= 61000);
	assert_false(limits_admit(l, "alice", NULL, now + retry - 1, NULL));
	assert_true(limits_admit(l, "alice", NULL, now + retry, NULL));
	limits_free(l);
}

/* A client that retries as fast as it can gets at most N in any 60 s window. */
static void test_requests_per_minute_sliding_bound_under_pressure(void **state)
{
	enum { N = 100, STEP = 50, SPAN = 300000 };
	struct limits *l = limits_from("alice = requests_per_minute=100");
	static int64_t at[SPAN / STEP * 3];
	size_t n = 0;
	for (int64_t t = T0 + 123; t < T0 + 123 + SPAN; t += STEP)
		for (int k = 0; k < 3; k++)
			if (limits_admit(l, "alice", NULL, t, NULL))
				at[n++] = t;
	assert_true(n > 4 * N);   /* it keeps admitting */
	for (size_t i = 0, j = 0; i < n; i++) {
		while (at[j] <= at[i] - 60000)
			j++;
		if (i - j + 1 > N)
			fail_msg("%zu admitted in the 60 s before %lld", i - j + 1, (long long)(at[i] - T0));
	}
	limits_free(l);
}

static void test_refused_statements_are_not_counted(void **state)
{
	struct limits *l = limits_from("alice = requests_per_minute=60");
	assert_int_equal(admit_n(l, "alice", NULL, 1000, T0), 60);
	/* 940 refusals cost nothing: once T0's second has left, 60 fit again */
	assert_int_equal(admit_n(l, "alice", NULL, 100, T0 + 61000), 60);
	limits_free(l);
}

static void test_other_subject_is_unaffected(void **state)
{
	struct limits *l = limits_from("default = requests_per_minute=3");
	assert_int_equal(admit_n(l, "alice", NULL, 5, T0), 3);
	assert_int_equal(admit_n(l, "bob", NULL, 5, T0), 3);
	assert_int_equal(admit_n(l, "alice", "gpt-4o", 1, T0), 0);
	limits_free(l);
}

static void test_default_applies_to_unknown_subjects(void **state)
{
	struct limits *l = limits_from("default = requests_per_minute=2; alice = requests_per_minute=4");
	assert_int_equal(admit_n(l, "nobody-configured", NULL, 10, T0), 2);
	assert_int_equal(admit_n(l, "alice", NULL, 10, T0), 4);
	limits_free(l);
}

static void test_unattributed_statement_is_never_limited(void **state)
{
	struct limits *l = limits_from("default = requests_per_minute=0");
	assert_true(limits_admit(l, NULL, NULL, T0, NULL));
	assert_true(limits_admit(l, "", "gpt-4o", T0, NULL));
	struct limits_stats st;
	limits_get_stats(l, &st);
	assert_int_equal(st.entries, 0);
	limits_free(l);
}

static void test_no_rules_means_no_limits(void **state)
{
	struct limits *l = limits_new(NULL, 0);
	assert_non_null(l);
	assert_int_equal(admit_n(l, "alice", "gpt-4o", 10000, T0), 10000);
	limits_charge(l, "alice", "gpt-4o", 1000000000, 1e9, T0);
	assert_true(limits_admit(l, "alice", "gpt-4o", T0, NULL));
	limits_free(l);
}

static void test_limit_zero_refuses_every_statement_without_hint(void **state)
{
	struct limits *l = limits_from("alice = requests_per_minute=0");
	struct limit_refusal r;
	assert_false(limits_admit(l, "alice", NULL, T0, &r));
	assert_int_equal(r.retry_after_ms, -1);
	assert_int_equal(r.reset_at_ms, -1);
	struct pg_error f = format(&r, "alice");
	assert_string_equal(f.message, "rate limit exceeded for \"alice\": requests_per_minute 0");
	assert_string_equal(f.detail, "The limit is 0, so every statement is refused.");
	assert_string_equal(f.hint, "");
	assert_false(limits_admit(l, "alice", NULL, T0 + 3600000, NULL));
	limits_free(l);
}

/* ---- precedence ---- */

static void test_subject_model_is_more_specific_than_subject(void **state)
{
	struct limits *l = limits_from("alice = requests_per_minute=10; alice/gpt-4o = requests_per_minute=2");
	struct limit_refusal r;

	assert_int_equal(admit_n(l, "alice", "gpt-4o", 2, T0), 2);
	assert_false(limits_admit(l, "alice", "gpt-4o", T0, &r));
	assert_non_null(r.model);
	assert_string_equal(r.model, "gpt-4o");
	assert_true(r.limit == 2);
	/* other models only count against alice's subject-wide 10 (2 used) */
	assert_int_equal(admit_n(l, "alice", "gpt-4o-mini", 20, T0), 8);
	assert_false(limits_admit(l, "alice", "gpt-4o-mini", T0, &r));
	assert_null(r.model);
	assert_true(r.limit == 10);
	limits_free(l);
}

static void test_subject_wide_limit_counts_every_model(void **state)
{
	struct limits *l = limits_from("alice = requests_per_minute=4");
	assert_int_equal(admit_n(l, "alice", "a", 2, T0), 2);
	assert_int_equal(admit_n(l, "alice", "b", 1, T0), 1);
	assert_int_equal(admit_n(l, "alice", NULL, 1, T0), 1);
	assert_int_equal(admit_n(l, "alice", "c", 1, T0), 0);
	limits_free(l);
}

static void test_precedence_subject_model_then_subject_then_default_model_then_default(void **state)
{
	struct limit_rules *rules = rules_from(
		"default = tokens_per_day=1000 requests_per_minute=600;"
		"default/gpt-4o = tokens_per_day=100;"
		"alice = tokens_per_day=5000;"
		"carol/gpt-4o = tokens_per_day=7");
	struct limit_values v;

	/* bob has no line: default/gpt-4o caps his gpt-4o use, default his total */
	limits_resolve(rules, "bob", "gpt-4o", &v);
	assert_int_equal(v.tokens_per_day, 100);
	assert_int_equal(v.requests_per_minute, LIMIT_INHERIT);   /* enforced subject-wide */
	limits_resolve(rules, "bob", NULL, &v);
	assert_int_equal(v.tokens_per_day, 1000);
	assert_int_equal(v.requests_per_minute, 600);
	/* alice's own tokens_per_day governs all her models: default/gpt-4o does not apply */
	limits_resolve(rules, "alice", "gpt-4o", &v);
	assert_int_equal(v.tokens_per_day, LIMIT_INHERIT);
	limits_resolve(rules, "alice", NULL, &v);
	assert_int_equal(v.tokens_per_day, 5000);
	/* carol/gpt-4o beats everything */
	limits_resolve(rules, "carol", "gpt-4o", &v);
	assert_int_equal(v.tokens_per_day, 7);

	struct limits *l = limits_new(rules, 0);
	limits_charge(l, "bob", "gpt-4o", 100, 0, T0);
	assert_false(limits_admit(l, "bob", "gpt-4o", T0, NULL));
	assert_true(limits_admit(l, "bob", "o3", T0, NULL));
	limits_charge(l, "alice", "gpt-4o", 4999, 0, T0);
	assert_true(limits_admit(l, "alice", "gpt-4o", T0, NULL));
	limits_charge(l, "alice", "gpt-4o", 1, 0, T0);
	assert_false(limits_admit(l, "alice", "gpt-4o", T0, NULL));
	limits_free(l);
}

static void test_override_beats_ini_and_inherit_falls_through(void **state)
{
	struct limits *l = limits_from("alice = requests_per_minute=5 tokens_per_day=100; default = tokens_per_minute=50");
	struct limit_values v, got;
	limit_values_init(&v);
	v.requests_per_minute = 2;   /* the rest NULL in sluice.limits */
	assert_true(limits_set_override(limits_get_rules(l), "alice", "*", &v));

	limits_resolve(limits_get_rules(l), "alice", NULL, &got);
	assert_int_equal(got.requests_per_minute, 2);
	assert_int_equal(got.tokens_per_day, 100);          /* ini, same level */
	assert_int_equal(got.tokens_per_minute, 50);        /* default */
	assert_true(got.cost_cents_per_month == LIMIT_INHERIT);
	assert_int_equal(admit_n(l, "alice", NULL, 10, T0), 2);

	limits_clear_overrides(limits_get_rules(l));
	limits_resolve(limits_get_rules(l), "alice", NULL, &got);
	assert_int_equal(got.requests_per_minute, 5);
	/* use stays counted: 2 of 5 */
	assert_int_equal(admit_n(l, "alice", NULL, 10, T0), 3);
	limits_free(l);
}

static void test_override_for_unknown_subject_and_default_model(void **state)
{
	struct limits *l = limits_from("default = requests_per_minute=100");
	struct limit_values v;
	limit_values_init(&v);
	v.tokens_per_day = 10;
	assert_true(limits_set_override(limits_get_rules(l), "default", "gpt-4o", &v));
	v.tokens_per_day = 20;
	assert_true(limits_set_override(limits_get_rules(l), "dave", NULL, &v));
	struct limit_values got;
	limits_resolve(limits_get_rules(l), "erin", "gpt-4o", &got);
	assert_int_equal(got.tokens_per_day, 10);
	limits_resolve(limits_get_rules(l), "dave", "gpt-4o", &got);
	assert_int_equal(got.tokens_per_day, LIMIT_INHERIT);   /* dave's own 20 governs */
	limits_resolve(limits_get_rules(l), "dave", NULL, &got);
	assert_int_equal(got.tokens_per_day, 20);
	limits_free(l);
}

static void test_override_rejects_bad_values(void **state)
{
	struct limit_rules *rules = limits_rules_new();
	struct limit_values v;
	limit_values_init(&v);
	assert_false(limits_set_override(rules, "", NULL, &v));
	assert_false(limits_set_override(rules, NULL, NULL, &v));
	v.tokens_per_day = LIMITS_MAX_COUNT + 1;
	assert_false(limits_set_override(rules, "alice", NULL, &v));
	limit_values_init(&v);
	v.cost_cents_per_month = 0.0 / 0.0;
	assert_false(limits_set_override(rules, "alice", NULL, &v));
	limits_rules_free(rules);
}

static void test_reload_replaces_rules_and_keeps_use(void **state)
{
	struct limits *l = limits_from("alice = requests_per_minute=5");
	struct limit_values v;
	limit_values_init(&v);
	v.tokens_per_day = 3;
	assert_true(limits_set_override(limits_get_rules(l), "alice", NULL, &v));
	assert_int_equal(admit_n(l, "alice", NULL, 4, T0), 4);

	struct limit_rules *next = rules_from("alice = requests_per_minute=6");
	assert_true(limits_copy_overrides(next, limits_get_rules(l)));
	limits_set_rules(l, next);
	struct limit_values got;
	limits_resolve(limits_get_rules(l), "alice", NULL, &got);
	assert_int_equal(got.requests_per_minute, 6);
	assert_int_equal(got.tokens_per_day, 3);
	assert_int_equal(admit_n(l, "alice", NULL, 10, T0), 2);

	limits_set_rules(l, NULL);   /* an empty [limits] */
	assert_int_equal(admit_n(l, "alice", NULL, 10, T0), 10);
	limits_free(l);
}

/* ---- tokens_per_minute ---- */

static void test_tokens_per_minute_charge_refuses_next_statement(void **state)
{
	struct limits *l = limits_from("alice = tokens_per_minute=1000");
	struct limit_refusal r;

	assert_true(limits_admit(l, "alice", "gpt-4o", T0, NULL));
	limits_charge(l, "alice", "gpt-4o", 999, 0.1, T0);
	assert_true(limits_admit(l, "alice", "gpt-4o", T0, NULL));
	limits_charge(l, "alice", "gpt-4o", 1, 0, T0);
	assert_false(limits_admit(l, "alice", "gpt-4o", T0, &r));
	assert_int_equal(r.dim, LIMIT_TOKENS_PER_MINUTE);
	assert_true(r.used == 1000);
	assert_int_equal(r.retry_after_ms, 61000);   /* until T0's second leaves the window */
	assert_false(limits_admit(l, "alice", "gpt-4o", T0 + 60999, NULL));
	assert_true(limits_admit(l, "alice", "gpt-4o", T0 + 61000, NULL));
	limits_free(l);
}

static void test_tokens_per_minute_overuse_stays_a_minute(void **state)
{
	struct limits *l = limits_from("alice = tokens_per_minute=1000");
	struct limit_refusal r;
	assert_true(limits_admit(l, "alice", NULL, T0, NULL));
	limits_charge(l, "alice", NULL, 3000, 0, T0);   /* never refuses */
	assert_false(limits_admit(l, "alice", NULL, T0, &r));
	assert_true(r.used == 3000);
	assert_int_equal(r.retry_after_ms, 61000);   /* the window forgets it whole */
	assert_false(limits_admit(l, "alice", NULL, T0 + 60999, NULL));
	assert_true(limits_admit(l, "alice", NULL, T0 + 61000, NULL));
	limits_free(l);
}

static void test_huge_and_negative_charges_are_safe(void **state)
{
	struct limits *l = limits_from("alice = tokens_per_minute=1000 tokens_per_day=1000");
	struct limit_refusal r;
	limits_charge(l, "alice", "m", -5, -1.0, T0);
	limits_charge(l, "alice", "m", 0, 0.0 / 0.0, T0);
	assert_true(limits_admit(l, "alice", "m", T0, NULL));
	for (int i = 0; i < 3; i++)
		limits_charge(l, "alice", "m", INT64_MAX, 1e300, T0);
	assert_false(limits_admit(l, "alice", "m", T0, &r));
	assert_int_equal(r.dim, LIMIT_TOKENS_PER_DAY);   /* the longest wait: the day */
	assert_true(r.used == (double)INT64_MAX);        /* saturated, not overflowed */
	assert_int_equal(r.retry_after_ms, 12 * 3600 * 1000);
	assert_false(limits_admit(l, "alice", "m", T0 + 61000, &r));
	limits_free(l);

	l = limits_from("alice = cost_cents_per_month=5");
	for (int i = 0; i < 3; i++)
		limits_charge(l, "alice", NULL, 0, 1e300, T0);   /* one call counts at most 10^12 cents */
	assert_false(limits_admit(l, "alice", NULL, T0, &r));
	assert_true(r.used == LIMITS_MAX_CENTS * 3);
	for (int i = 0; i < 10000; i++)
		limits_charge(l, "alice", NULL, 0, 1e300, T0);   /* the sum saturates */
	assert_false(limits_admit(l, "alice", NULL, T0, &r));
	assert_string_equal(format(&r, "alice").detail,
	                    "9223372036854.775807 cents spent this month (UTC); the limit is 5.");
	limits_free(l);
}

/* ---- reservations and max_concurrent ---- */

/* 50 statements in flight at once, each estimated 100 tokens: only what fits is admitted. */
static void test_reservations_hold_tokens_until_settled(void **state)
{
	struct limits *l = limits_from("alice = tokens_per_minute=1000");
	struct limit_estimate est = { 100, -1 };
	struct limit_reservation resv[50];
	struct limit_refusal r;
	int admitted = 0;
	for (int i = 0; i < 50; i++)
		admitted += limits_admit_reserve(l, "alice", "m", T0, &est, &resv[i], &r);
	assert_int_equal(admitted, 10);
	assert_int_equal(r.dim, LIMIT_TOKENS_PER_MINUTE);
	assert_true(r.used == 0 && r.reserved == 1000);
	assert_string_equal(format(&r, "alice").detail,
	                    "0 tokens in the last minute and 1000 reserved by statements in flight; the limit is 1000.");
	/* settling with fewer tokens than reserved makes room for the difference */
	for (int i = 0; i < 10; i++) {
		assert_true(resv[i].held);
		limits_settle(l, "alice", "m", &resv[i], 50, 0, T0 + 10);
		assert_false(resv[i].held);
	}
	admitted = 0;
	for (int i = 0; i < 50; i++)
		admitted += limits_admit_reserve(l, "alice", "m", T0 + 20, &est, &resv[i], NULL);
	assert_int_equal(admitted, 5);
	/* released (failed statements): nothing charged, the room comes back */
	for (int i = 0; i < 5; i++)
		limits_release(l, "alice", "m", &resv[i], T0 + 30);
	limits_release(l, "alice", "m", &resv[0], T0 + 30);   /* twice: nothing more */
	admitted = 0;
	for (int i = 0; i < 50; i++)
		admitted += limits_admit_reserve(l, "alice", "m", T0 + 40, &est, &resv[i], NULL);
	assert_int_equal(admitted, 5);
	limits_free(l);
}

/*
 * limits_settle charges the counters of the names it is given, whatever
 * its reservation remembers from admission: when those counters were
 * evicted since, and when the names differ from admission's.
 */
static void test_settle_charges_its_names_counters(void **state)
{
	(void)state;
	struct limits *l = limits_new(rules_from("alice = tokens_per_day=1000; bob = tokens_per_day=1000"), 2);
	struct limit_estimate est = { 0, -1 };
	struct limit_reservation a, b;
	struct limit_refusal r;
	assert_non_null(l);
	assert_true(limits_admit_reserve(l, "alice", "m", T0, &est, &a, NULL));
	/* two more counters evict alice's two */
	assert_true(limits_admit(l, "carol", "m", T0, NULL));
	limits_settle(l, "alice", "m", &a, 900, 0, T0 + 1);
	est.tokens = 200;
	assert_false(limits_admit_reserve(l, "alice", "m", T0 + 2, &est, &b, &r));
	assert_int_equal(r.dim, LIMIT_TOKENS_PER_DAY);
	/* alice's reservation settled as bob's charges bob */
	est.tokens = 0;
	assert_true(limits_admit_reserve(l, "alice", "m", T0 + 3, &est, &a, NULL));
	limits_settle(l, "bob", "m", &a, 900, 0, T0 + 4);
	est.tokens = 200;
	assert_false(limits_admit_reserve(l, "bob", "m", T0 + 5, &est, &b, &r));
	assert_int_equal(r.dim, LIMIT_TOKENS_PER_DAY);
	/* a reservation of l settled on another struct limits charges that one's counters */
	struct limits *l2 = limits_new(rules_from("alice = tokens_per_day=1000"), 0);
	assert_non_null(l2);
	est.tokens = 0;
	assert_true(limits_admit_reserve(l2, "alice", "m", T0 + 6, &est, &b, NULL));
	assert_true(limits_admit_reserve(l, "alice", "m", T0 + 6, &est, &a, NULL));
	limits_settle(l2, "alice", "m", &a, 900, 0, T0 + 7);
	est.tokens = 200;
	assert_false(limits_admit_reserve(l2, "alice", "m", T0 + 8, &est, &b, &r));
	assert_int_equal(r.dim, LIMIT_TOKENS_PER_DAY);
	limits_free(l2);
	limits_free(l);
}

/* Nothing used or held: one call larger than the whole limit still runs, alone. */
static void test_one_call_larger_than_the_limit_runs_alone(void **state)
{
	struct limits *l = limits_from("alice = tokens_per_day=1000 cost_cents_per_month=10");
	struct limit_estimate big = { 5000, 20 };
	struct limit_reservation a, b;
	assert_true(limits_admit_reserve(l, "alice", NULL, T0, &big, &a, NULL));
	assert_false(limits_admit_reserve(l, "alice", NULL, T0, &big, &b, NULL));
	limits_settle(l, "alice", NULL, &a, 5000, 20, T0);
	struct limit_estimate small = { 1, 0.001 };
	assert_false(limits_admit_reserve(l, "alice", NULL, T0, &small, &b, NULL));
	limits_free(l);
}

/* The cost budget with 200 statements in flight: spent <= budget + one call. */
static void test_cost_budget_holds_under_concurrency(void **state)
{
	struct limits *l = limits_from("alice = cost_cents_per_month=100");
	struct limit_reservation resv[200];
	double spent = 0;
	for (int round = 0; round < 50; round++) {
		bool held[200];
		for (int i = 0; i < 200; i++) {
			struct limit_estimate est = { 10, 0.3 + (i % 7) * 0.1 };
			held[i] = limits_admit_reserve(l, "alice", NULL, T0 + round, &est, &resv[i], NULL);
		}
		for (int i = 0; i < 200; i++)
			if (held[i]) {
				double cost = 0.3 + (i % 7) * 0.1;
				limits_settle(l, "alice", NULL, &resv[i], 10, cost, T0 + round);
				spent += cost;
			}
	}
	assert_true(spent <= 100 + 0.9 + 1e-9);
	assert_true(spent >= 99);
	limits_free(l);
}

/* Without an estimate tag the running mean of recent calls is reserved. */
static void test_running_mean_is_the_default_estimate(void **state)
{
	struct limits *l = limits_from("alice = tokens_per_minute=10000");
	struct limit_estimate mean = { -1, -1 };
	struct limit_reservation resv[100];
	for (int i = 0; i < 40; i++) {
		assert_true(limits_admit_reserve(l, "alice", "m", T0 + i, &mean, &resv[0], NULL) || i >= 25);
		limits_settle(l, "alice", "m", &resv[0], 400, 0, T0 + i);
	}
	int admitted = 0;
	for (int i = 0; i < 100; i++)
		admitted += limits_admit_reserve(l, "alice", "m", T0 + 61000, &mean, &resv[i], NULL);
	assert_true(resv[0].tokens > 380 && resv[0].tokens <= 400);
	assert_true(admitted >= 25 && admitted <= 27);   /* 10000 / ~400 */
	limits_free(l);
}

static void test_unsettled_reservations_expire(void **state)
{
	struct limits *l = limits_from("alice = max_concurrent=2 tokens_per_day=100");
	struct limit_estimate est = { 50, -1 };
	struct limit_reservation a, b, c;
	struct limit_refusal r;
	assert_true(limits_admit_reserve(l, "alice", NULL, T0, &est, &a, NULL));
	assert_true(limits_admit_reserve(l, "alice", NULL, T0, &est, &b, NULL));
	assert_false(limits_admit_reserve(l, "alice", NULL, T0 + 1000, &est, &c, &r));
	/* both max_concurrent and the day budget refuse; the day needs the longer wait */
	assert_int_equal(r.dim, LIMIT_TOKENS_PER_DAY);
	/* still held just before two epochs have passed */
	int64_t epoch_end = (T0 / LIMITS_RESERVATION_EPOCH_MS + 2) * LIMITS_RESERVATION_EPOCH_MS;
	assert_false(limits_admit_reserve(l, "alice", NULL, epoch_end - 1, &est, &c, NULL));
	assert_true(limits_admit_reserve(l, "alice", NULL, epoch_end, &est, &c, NULL));
	/* the late settle of an expired reservation gives back nothing */
	limits_settle(l, "alice", NULL, &a, 0, 0, epoch_end);
	struct limit_reservation d;
	assert_true(limits_admit_reserve(l, "alice", NULL, epoch_end, &est, &d, NULL));
	assert_false(limits_admit_reserve(l, "alice", NULL, epoch_end, &est, &a, NULL));
	limits_free(l);
}

static void test_max_concurrent_counts_statements_in_flight(void **state)
{
	struct limits *l = limits_from("alice = max_concurrent=3");
	struct limit_reservation resv[5];
	struct limit_refusal r;
	for (int i = 0; i < 3; i++)
		assert_true(limits_admit_reserve(l, "alice", i % 2 ? "m1" : "m2", T0, NULL, &resv[i], NULL));
	assert_false(limits_admit_reserve(l, "alice", "m3", T0, NULL, &resv[3], &r));
	assert_int_equal(r.dim, LIMIT_MAX_CONCURRENT);
	struct pg_error f = format(&r, "alice");
	assert_string_equal(f.message, "rate limit exceeded for \"alice\": max_concurrent 3");
	assert_string_equal(f.detail, "3 statements in flight; the limit is 3.");
	assert_string_equal(f.hint, "Retry when one of the statements in flight has finished.");
	limits_release(l, "alice", "m1", &resv[1], T0);
	assert_true(limits_admit_reserve(l, "alice", "m3", T0, NULL, &resv[3], NULL));
	assert_true(limits_admit_reserve(l, "bob", NULL, T0, NULL, &resv[4], NULL));
	limits_free(l);

	struct limit_values v;
	struct limit_rules *rules = rules_from("alice = max_concurrent=3");
	limits_resolve(rules, "alice", NULL, &v);
	assert_int_equal(v.max_concurrent, 3);
	limit_values_init(&v);
	v.max_concurrent = 0;
	assert_true(limits_set_override(rules, "bob", NULL, &v));
	l = limits_new(rules, 0);
	assert_false(limits_admit_reserve(l, "bob", NULL, T0, NULL, &resv[0], &r));
	assert_int_equal(r.retry_after_ms, -1);
	assert_string_equal(format(&r, "bob").hint, "");
	limits_free(l);
}

/* ---- budget alerts and status ---- */

struct alerts_seen {
	int n;
	double pct[8];
	char model[8][32];
	enum limit_dim dim[8];
	int64_t period[8];
};

static void note_alert(const struct limit_alert *a, void *arg)
{
	struct alerts_seen *s = arg;
	if (s->n < 8) {
		s->pct[s->n] = a->threshold_pct;
		snprintf(s->model[s->n], sizeof(s->model[0]), "%s", a->model);
		s->dim[s->n] = a->dim;
		s->period[s->n] = a->period_start_ms;
	}
	s->n++;
}

static void test_alert_thresholds_parse(void **state)
{
	double p[LIMITS_MAX_THRESHOLDS];
	size_t n;
	char err[256];
	assert_true(limits_parse_thresholds("100, 80,80 50.5", p, &n, err, sizeof(err)));
	assert_int_equal(n, 3);
	assert_true(p[0] == 50.5 && p[1] == 80 && p[2] == 100);
	assert_true(limits_parse_thresholds("", p, &n, err, sizeof(err)));
	assert_int_equal(n, 0);
	assert_false(limits_parse_thresholds("80%", p, &n, err, sizeof(err)));
	assert_string_equal(err, "invalid budget alert threshold \"80%\": expected a percentage above 0 and at most 1000");
	assert_false(limits_parse_thresholds("0", p, &n, err, sizeof(err)));
	assert_false(limits_parse_thresholds("1,2,3,4,5,6,7,8,9", p, &n, err, sizeof(err)));
	assert_string_equal(err, "too many budget alert thresholds: at most 8");
}

static void test_alerts_once_per_threshold_and_period(void **state)
{
	struct limits *l = limits_from("alice = cost_cents_per_month=10; alice/m = tokens_per_day=1000");
	double p[2] = { 80, 100 };
	limits_set_alert_thresholds(l, p, 2);
	struct alerts_seen seen = { 0 };
	for (int i = 0; i < 7; i++)
		limits_charge(l, "alice", "m", 100, 1, T0);
	assert_int_equal(limits_take_alerts(l, note_alert, &seen), 0);
	limits_charge(l, "alice", "m", 100, 1, T0);        /* 8 cents, 800 tokens: both 80 % */
	assert_int_equal(limits_take_alerts(l, note_alert, &seen), 2);
	limits_charge(l, "alice", "m", 300, 5, T0);        /* past 100 % of both at once */
	limits_charge(l, "alice", "m", 300, 5, T0);        /* nothing new */
	assert_int_equal(limits_take_alerts(l, note_alert, &seen), 2);
	assert_int_equal(seen.n, 4);
	for (int i = 0; i < 4; i++) {
		bool day = seen.dim[i] == LIMIT_TOKENS_PER_DAY;
		assert_string_equal(seen.model[i], day ? "m" : "");
		assert_true(seen.pct[i] == (i < 2 ? 80 : 100));
		assert_int_equal(seen.period[i], day ? utc_ms(2026, 3, 14, 0, 0, 0) : utc_ms(2026, 3, 1, 0, 0, 0));
	}
	/* a new day: the day budget may alert again, the month budget not */
	memset(&seen, 0, sizeof(seen));
	limits_charge(l, "alice", "m", 900, 0, T0 + LIMITS_DAY_MS);
	assert_int_equal(limits_take_alerts(l, note_alert, &seen), 1);
	assert_int_equal(seen.dim[0], LIMIT_TOKENS_PER_DAY);
	limits_free(l);
}

struct budgets_seen {
	int n;
	double used, reserved, limit;
};

static void note_budget(const struct limit_budget *b, void *arg)
{
	struct budgets_seen *s = arg;
	s->n++;
	s->used = b->used;
	s->reserved = b->reserved;
	s->limit = b->limit;
}

static void test_changed_budgets_are_reported_once(void **state)
{
	struct limits *l = limits_from("alice = cost_cents_per_month=10");
	struct budgets_seen seen = { 0 };
	assert_int_equal(limits_foreach_changed_budget(l, T0, note_budget, &seen), 0);
	struct limit_estimate est = { 0, 2 };
	struct limit_reservation r;
	assert_true(limits_admit_reserve(l, "alice", NULL, T0, &est, &r, NULL));
	assert_int_equal(limits_foreach_changed_budget(l, T0, note_budget, &seen), 1);
	assert_true(seen.reserved == 2 && seen.used == 0 && seen.limit == 10);
	assert_int_equal(limits_foreach_changed_budget(l, T0, note_budget, &seen), 0);
	limits_settle(l, "alice", NULL, &r, 0, 3, T0);
	assert_int_equal(limits_foreach_changed_budget(l, T0, note_budget, &seen), 1);
	assert_true(seen.reserved == 0 && seen.used == 3);
	limits_free(l);
}

/* ---- groups ---- */

static void test_groups_are_charged_and_the_tighter_refusal_names_the_group(void **state)
{
	struct limits *l = limits_from("group:eng = tokens_per_day=1000; alice = tokens_per_day=5000; "
	                               "default = tokens_per_day=100000");
	assert_true(limits_add_group(l, "alice", "eng"));
	assert_true(limits_add_group(l, "bob", "eng"));
	assert_true(limits_add_group(l, "bob", "eng"));   /* twice: once */
	struct limit_estimate est = { 600, -1 };
	struct limit_reservation a, b;
	struct limit_refusal r;
	assert_true(limits_admit_reserve(l, "alice", "m", T0, &est, &a, NULL));
	/* bob's own limit (the default's 100000) has room, the group's 1000 has not */
	assert_false(limits_admit_reserve(l, "bob", "m", T0, &est, &b, &r));
	assert_int_equal(r.dim, LIMIT_TOKENS_PER_DAY);
	assert_string_equal(r.group, "eng");
	struct pg_error f = format(&r, "bob");
	assert_string_equal(f.message, "rate limit exceeded for \"bob\" in group \"eng\": tokens_per_day 1000");
	limits_settle(l, "alice", "m", &a, 600, 0, T0);
	assert_false(limits_admit_reserve(l, "bob", "m", T0, &est, &b, NULL));
	/* carol is in no group: only her own (default) limit */
	assert_true(limits_admit_reserve(l, "carol", "m", T0, &est, &b, NULL));
	/* the default does not apply to a group: a group without a line is unlimited */
	limits_clear_groups(l);
	assert_true(limits_add_group(l, "bob", "ops"));
	assert_true(limits_admit_reserve(l, "bob", "m", T0, &est, &b, NULL));
	limits_free(l);
}

static void test_group_max_concurrent_spans_its_members(void **state)
{
	struct limits *l = limits_from("group:eng = max_concurrent=2");
	assert_true(limits_add_group(l, "alice", "eng"));
	assert_true(limits_add_group(l, "bob", "eng"));
	struct limit_reservation r[3];
	assert_true(limits_admit_reserve(l, "alice", NULL, T0, NULL, &r[0], NULL));
	assert_true(limits_admit_reserve(l, "bob", NULL, T0, NULL, &r[1], NULL));
	assert_false(limits_admit_reserve(l, "alice", NULL, T0, NULL, &r[2], NULL));
	limits_release(l, "bob", NULL, &r[1], T0);
	assert_true(limits_admit_reserve(l, "alice", NULL, T0, NULL, &r[2], NULL));
	for (int i = 0; i < LIMITS_MAX_GROUPS - 1; i++) {
		char g[16];
		snprintf(g, sizeof(g), "g%d", i);
		assert_true(limits_add_group(l, "alice", g));
	}
	assert_false(limits_add_group(l, "alice", "one-too-many"));
	limits_free(l);
}

/* ---- budgets ---- */

static void test_tokens_per_day_resets_at_utc_midnight(void **state)
{
	struct limits *l = limits_from("alice/gpt-4o = tokens_per_day=500");
	int64_t late = utc_ms(2026, 3, 14, 23, 59, 0);
	struct limit_refusal r;

	assert_true(limits_admit(l, "alice", "gpt-4o", late, NULL));
	limits_charge(l, "alice", "gpt-4o", 500, 0, late);
	assert_false(limits_admit(l, "alice", "gpt-4o", late + 1000, &r));
	assert_int_equal(r.dim, LIMIT_TOKENS_PER_DAY);
	assert_string_equal(r.model, "gpt-4o");
	assert_true(r.used == 500);
	assert_int_equal(r.retry_after_ms, 59000);
	assert_int_equal(r.reset_at_ms, utc_ms(2026, 3, 15, 0, 0, 0));
	struct pg_error f = format(&r, "alice");
	assert_string_equal(f.message, "rate limit exceeded for \"alice\": tokens_per_day 500");
	assert_string_equal(f.detail,
	                    "500 tokens used with model \"gpt-4o\" today (UTC); the limit is 500.");
	assert_string_equal(f.hint, "The budget resets at 2026-03-15 00:00:00 UTC.");

	assert_false(limits_admit(l, "alice", "gpt-4o", utc_ms(2026, 3, 14, 23, 59, 59) + 999, NULL));
	assert_true(limits_admit(l, "alice", "gpt-4o", utc_ms(2026, 3, 15, 0, 0, 0), NULL));
	/* other models are not limited */
	limits_charge(l, "alice", "o3", 100000, 0, late);
	assert_true(limits_admit(l, "alice", "o3", late, NULL));
	limits_free(l);
}

static void test_cost_per_month_resets_on_the_first(void **state)
{
	struct limits *l = limits_from("alice = cost_cents_per_month=0.5");
	int64_t t = utc_ms(2026, 11, 30, 12, 0, 0);
	struct limit_refusal r;

	limits_charge(l, "alice", "gpt-4o", 10, 0.25, t);
	assert_true(limits_admit(l, "alice", "gpt-4o", t, NULL));
	limits_charge(l, "alice", "o3", 10, 0.2, t);
	assert_true(limits_admit(l, "alice", NULL, t, NULL));
	limits_charge(l, "alice", NULL, 10, 0.05, t);
	assert_false(limits_admit(l, "alice", "gpt-4o", t, &r));
	assert_int_equal(r.dim, LIMIT_COST_CENTS_PER_MONTH);
	assert_null(r.model);
	assert_true(r.used == 0.5);
	assert_int_equal(r.reset_at_ms, utc_ms(2026, 12, 1, 0, 0, 0));
	assert_int_equal(r.retry_after_ms, 12 * 3600 * 1000);
	struct pg_error f = format(&r, "alice");
	assert_string_equal(f.message, "rate limit exceeded for \"alice\": cost_cents_per_month 0.5");
	assert_string_equal(f.detail, "0.5 cents spent this month (UTC); the limit is 0.5.");
	assert_string_equal(f.hint, "The budget resets at 2026-12-01 00:00:00 UTC.");

	assert_false(limits_admit(l, "alice", NULL, utc_ms(2026, 11, 30, 23, 59, 59), NULL));
	assert_true(limits_admit(l, "alice", NULL, utc_ms(2026, 12, 1, 0, 0, 0), NULL));
	limits_free(l);
}

static void test_month_windows_cross_years_and_leap_days(void **state)
{
	struct limits *l = limits_from("alice = cost_cents_per_month=1");
	struct limit_refusal r;

	limits_charge(l, "alice", NULL, 0, 1, utc_ms(2026, 12, 31, 23, 0, 0));
	assert_false(limits_admit(l, "alice", NULL, utc_ms(2026, 12, 31, 23, 0, 0), &r));
	assert_int_equal(r.reset_at_ms, utc_ms(2027, 1, 1, 0, 0, 0));
	assert_true(limits_admit(l, "alice", NULL, utc_ms(2027, 1, 1, 0, 0, 0), NULL));

	limits_charge(l, "alice", NULL, 0, 1, utc_ms(2028, 2, 29, 8, 0, 0));
	assert_false(limits_admit(l, "alice", NULL, utc_ms(2028, 2, 29, 8, 0, 0), &r));
	assert_int_equal(r.reset_at_ms, utc_ms(2028, 3, 1, 0, 0, 0));
	struct pg_error f = format(&r, "alice");
	assert_string_equal(f.detail, "1 cent spent this month (UTC); the limit is 1.");
	assert_string_equal(f.hint, "The budget resets at 2028-03-01 00:00:00 UTC.");
	limits_free(l);
}

static void test_seed_keeps_budget_across_restart(void **state)
{
	const char *ini = "alice = tokens_per_day=1000 cost_cents_per_month=300";
	struct limits *before = limits_from(ini);
	limits_charge(before, "alice", "gpt-4o", 600, 120.5, T0 - 3600000);
	limits_charge(before, "alice", "o3", 300, 100, T0 - 3600000);
	limits_free(before);   /* "restart" */

	struct limits *l = limits_from(ini);
	/* what sluice.llm_usage says, one row per (subject, model) */
	limits_seed(l, "alice", "gpt-4o", 600, 120.5, T0);
	limits_seed(l, "alice", "o3", 300, 100, T0);
	assert_true(limits_admit(l, "alice", "gpt-4o", T0, NULL));
	limits_charge(l, "alice", "gpt-4o", 100, 0, T0);
	struct limit_refusal r;
	assert_false(limits_admit(l, "alice", "o3", T0, &r));
	assert_int_equal(r.dim, LIMIT_TOKENS_PER_DAY);
	assert_true(r.used == 1000);
	limits_free(l);
}

static void test_refusal_reports_the_longest_wait(void **state)
{
	struct limits *l = limits_from("alice = requests_per_minute=1 tokens_per_day=10");
	struct limit_refusal r;
	assert_true(limits_admit(l, "alice", NULL, T0, NULL));
	limits_charge(l, "alice", NULL, 10, 0, T0);
	assert_false(limits_admit(l, "alice", NULL, T0, &r));
	assert_int_equal(r.dim, LIMIT_TOKENS_PER_DAY);   /* 12 h, not 60 s */
	assert_int_equal(r.retry_after_ms, 12 * 3600 * 1000);
	limits_free(l);
}

/* ---- refusal text ---- */

static void test_format_requests_per_minute_refusal(void **state)
{
	struct limits *l = limits_from("alice = requests_per_minute=60");
	struct limit_refusal r;
	admit_n(l, "alice", NULL, 60, T0);
	assert_false(limits_admit(l, "alice", NULL, T0, &r));
	struct pg_error f = format(&r, "alice");
	assert_string_equal(f.message, "rate limit exceeded for \"alice\": requests_per_minute 60");
	assert_string_equal(f.detail, "60 requests in the last minute; the limit is 60.");
	assert_string_equal(f.hint, "Retry after 61.0 s.");

	r.retry_after_ms = 1400;
	assert_string_equal(format(&r, "alice").hint, "Retry after 1.4 s.");
	r.retry_after_ms = 1401;   /* rounded up: retrying then succeeds */
	assert_string_equal(format(&r, "alice").hint, "Retry after 1.5 s.");
	r.retry_after_ms = 1;
	assert_string_equal(format(&r, "alice").hint, "Retry after 0.1 s.");
	r.retry_after_ms = 125000;
	assert_string_equal(format(&r, "alice").hint, "Retry after 125.0 s.");
	limits_free(l);
}

static void test_format_singular_and_per_model_detail(void **state)
{
	struct limits *l = limits_from("bob/gpt-4o = requests_per_minute=1; bob = tokens_per_minute=1");
	struct limit_refusal r;
	assert_true(limits_admit(l, "bob", "gpt-4o", T0, NULL));
	assert_false(limits_admit(l, "bob", "gpt-4o", T0, &r));
	struct pg_error f = format(&r, "bob");
	assert_string_equal(f.message, "rate limit exceeded for \"bob\": requests_per_minute 1");
	assert_string_equal(f.detail, "1 request with model \"gpt-4o\" in the last minute; the limit is 1.");
	assert_string_equal(f.hint, "Retry after 61.0 s.");

	limits_charge(l, "bob", NULL, 1, 0, T0);
	assert_false(limits_admit(l, "bob", NULL, T0, &r));
	f = format(&r, "bob");
	assert_string_equal(f.message, "rate limit exceeded for \"bob\": tokens_per_minute 1");
	assert_string_equal(f.detail, "1 token in the last minute; the limit is 1.");
	limits_free(l);
}

static void test_format_limit_zero_for_model(void **state)
{
	struct limits *l = limits_from("default/o1-pro = cost_cents_per_month=0");
	struct limit_refusal r;
	assert_false(limits_admit(l, "carol", "o1-pro", T0, &r));
	struct pg_error f = format(&r, "carol");
	assert_string_equal(f.message, "rate limit exceeded for \"carol\": cost_cents_per_month 0");
	assert_string_equal(f.detail, "The limit for model \"o1-pro\" is 0, so every statement is refused.");
	assert_string_equal(f.hint, "");
	limits_free(l);
}

static void test_format_cuts_texts_to_their_fields(void **state)
{
	(void)state;
	char subject[700], model[LIMITS_NAME_MAX + 1];
	memset(subject, 's', sizeof(subject) - 1);
	subject[sizeof(subject) - 1] = '\0';
	memset(model, 'm', sizeof(model) - 1);
	model[sizeof(model) - 1] = '\0';
	struct limit_refusal r = { .dim = LIMIT_REQUESTS_PER_MINUTE, .limit = 60, .used = 60, .model = model,
	                           .window = "in the last minute", .retry_after_ms = 1000 };
	struct pg_error f;
	limits_format_refusal(&r, subject, &f);
	assert_string_equal(f.severity, "ERROR");
	assert_string_equal(f.sqlstate, "53400");
	assert_int_equal(strlen(f.message), sizeof(f.message) - 1);
	const char *start = "rate limit exceeded for \"sss";
	assert_true(strncmp(f.message, start, strlen(start)) == 0);
	assert_int_equal(strlen(f.detail), sizeof(f.detail) - 1);
	assert_string_equal(f.hint, "Retry after 1.0 s.");
}

/* ---- SHOW LIMITS ---- */

struct status_seen {
	int calls;
	struct limit_status last_day;
	int day_calls;
};

static void record_status(const struct limit_status *st, void *arg)
{
	struct status_seen *seen = arg;
	seen->calls++;
	if (st->dim == LIMIT_TOKENS_PER_DAY && strcmp(st->subject, "alice") == 0 &&
	    strcmp(st->model, "gpt-4o") == 0) {
		seen->last_day = *st;
		seen->day_calls++;
	}
}

static void test_foreach_status_reports_limit_use_remaining_and_reset(void **state)
{
	struct limits *l = limits_from("alice = requests_per_minute=60; alice/gpt-4o = tokens_per_day=500");
	struct status_seen seen = { 0 };
	assert_true(limits_admit(l, "alice", "gpt-4o", T0, NULL));
	limits_charge(l, "alice", "gpt-4o", 123, 0, T0);
	/* alice: requests_per_minute; alice/gpt-4o: tokens_per_day */
	assert_int_equal(limits_foreach_status(l, T0, record_status, &seen), 2);
	assert_int_equal(seen.calls, 2);
	assert_int_equal(seen.day_calls, 1);
	assert_true(seen.last_day.limit == 500);
	assert_true(seen.last_day.used == 123);
	assert_true(seen.last_day.remaining == 377);
	assert_int_equal(seen.last_day.reset_at_ms, utc_ms(2026, 3, 15, 0, 0, 0));
	limits_free(l);
}

/* ---- memory ---- */

static void count_delta(const struct limit_delta *d, void *arg)
{
	(*(int *)arg)++;
}

static void test_expire_keeps_counters_with_unexported_deltas(void **state)
{
	struct limits *l = limits_from("default = requests_per_minute=10");
	int64_t t = utc_ms(2026, 3, 10, 12, 0, 0);
	struct limits_stats st;
	int n = 0;

	admit_n(l, "idle", "gpt-4o", 3, t);
	assert_int_equal(limits_expire(l, t + LIMITS_IDLE_MS), 1);   /* idle: nothing pending */
	limits_get_stats(l, &st);
	assert_int_equal(st.entries, 1);   /* idle/gpt-4o holds the delta */
	limits_export_deltas(l, count_delta, &n);
	assert_int_equal(n, 1);
	assert_int_equal(limits_expire(l, t + LIMITS_IDLE_MS), 1);
	limits_get_stats(l, &st);
	assert_int_equal(st.entries, 0);
	assert_int_equal(st.evicted_idle, 2);
	limits_free(l);
}

static void test_expire_frees_idle_counters_but_keeps_monthly_spend(void **state)
{
	struct limits *l = limits_from("default = requests_per_minute=10 cost_cents_per_month=100");
	int64_t t = utc_ms(2026, 3, 10, 12, 0, 0);
	struct limits_stats st;
	int n = 0;

	admit_n(l, "idle", NULL, 3, t);
	admit_n(l, "spender", "gpt-4o", 1, t);
	limits_charge(l, "spender", "gpt-4o", 10, 99, t);
	limits_export_deltas(l, count_delta, &n);
	assert_int_equal(n, 2);   /* idle, spender/gpt-4o */
	assert_int_equal(limits_expire(l, t + LIMITS_IDLE_MS - 1), 0);   /* not idle long enough */
	assert_int_equal(limits_expire(l, t + LIMITS_IDLE_MS), 1);       /* idle */
	limits_get_stats(l, &st);
	assert_int_equal(st.entries, 2);
	assert_int_equal(st.evicted_idle, 1);

	/* the spend is remembered two days later ... */
	limits_charge(l, "spender", NULL, 0, 1, t + 2 * LIMITS_IDLE_MS);
	assert_false(limits_admit(l, "spender", NULL, t + 2 * LIMITS_IDLE_MS, NULL));
	limits_export_deltas(l, count_delta, &n);
	/* ... and until the month ends */
	assert_int_equal(limits_expire(l, utc_ms(2026, 3, 31, 23, 0, 0)), 0);
	assert_int_equal(limits_expire(l, utc_ms(2026, 4, 1, 0, 0, 0)), 2);
	limits_get_stats(l, &st);
	assert_int_equal(st.entries, 0);
	limits_free(l);
}

static void test_max_entries_evicts_least_recently_used(void **state)
{
	struct limits *l = limits_new(rules_from("default = requests_per_minute=1"), 16);
	struct limits_stats st;
	char name[32];
	for (int i = 0; i < 16; i++) {
		snprintf(name, sizeof(name), "s%d", i);
		assert_true(limits_admit(l, name, NULL, T0, NULL));
	}
	assert_false(limits_admit(l, "s0", NULL, T0, NULL));   /* s0 becomes the most recent */
	assert_true(limits_admit(l, "newcomer", NULL, T0, NULL));
	limits_get_stats(l, &st);
	assert_int_equal(st.entries, 16);
	assert_int_equal(st.evicted_full, 1);
	assert_false(limits_admit(l, "s0", NULL, T0, NULL));   /* kept */
	assert_true(limits_admit(l, "s1", NULL, T0, NULL));    /* evicted, forgotten */
	limits_free(l);
}

static void test_many_subjects_and_long_names(void **state)
{
	struct limits *l = limits_from("default = requests_per_minute=2");
	char name[64];
	for (int i = 0; i < 20000; i++) {
		snprintf(name, sizeof(name), "user-%d", i);
		assert_int_equal(admit_n(l, name, "m", 3, T0), 2);
	}
	struct limits_stats st;
	limits_get_stats(l, &st);
	assert_int_equal(st.entries, 40000);

	/* names are keyed by their first LIMITS_NAME_MAX bytes */
	char a[LIMITS_NAME_MAX + 50], b[LIMITS_NAME_MAX + 50];
	memset(a, 'x', sizeof(a));
	a[sizeof(a) - 1] = '\0';
	memcpy(b, a, sizeof(b));
	b[LIMITS_NAME_MAX + 10] = 'y';
	assert_int_equal(admit_n(l, a, NULL, 2, T0), 2);
	assert_false(limits_admit(l, b, NULL, T0, NULL));
	limits_free(l);
}

/* ---- sharing counters between instances ---- */

#define MAX_INSTANCES 4

struct delta_batch {
	struct limit_delta d[64];
	char names[64][2][64];
	int n;
};

static void keep_delta(const struct limit_delta *d, void *arg)
{
	struct delta_batch *b = arg;
	assert_true(b->n < 64);
	b->d[b->n] = *d;
	snprintf(b->names[b->n][0], 64, "%s", d->subject);
	snprintf(b->names[b->n][1], 64, "%s", d->model);
	b->d[b->n].subject = b->names[b->n][0];
	b->d[b->n].model = b->names[b->n][1];
	b->n++;
}

/* Export every instance's deltas and apply each to all the others. */
static void sync_instances(struct limits **inst, int n, int64_t now)
{
	struct delta_batch batch[MAX_INSTANCES];
	for (int i = 0; i < n; i++) {
		batch[i].n = 0;
		limits_export_deltas(inst[i], keep_delta, &batch[i]);
	}
	for (int i = 0; i < n; i++)
		for (int j = 0; j < n; j++)
			for (int k = 0; j != i && k < batch[j].n; k++) {
				const struct limit_delta *d = &batch[j].d[k];
				limits_apply_remote(inst[i], d->subject, d->model, d->day_start_ms,
				                    d->requests, d->tokens, d->cost_cents, now);
			}
}

/*
 * A statement no limit applies to (none on its subject, model or groups)
 * reserves nothing, so its end has nothing to give back; its request is
 * still counted for the other instances. One with a limit reserves.
 */
static void test_no_limit_reserves_nothing_but_counts_the_request(void **state)
{
	struct limits *l = limits_from("bob = max_concurrent=1");
	struct limit_estimate est = { 10, -1 };
	struct limit_reservation resv;
	struct delta_batch b = { .n = 0 };
	for (int i = 0; i < 3; i++) {
		assert_true(limits_admit_reserve(l, "alice", "gpt-4o", T0, &est, &resv, NULL));
		assert_false(resv.held);
	}
	limits_release(l, "alice", "gpt-4o", &resv, T0);    /* nothing held: nothing happens */
	assert_true(limits_admit_reserve(l, "bob", NULL, T0, &est, &resv, NULL));
	assert_true(resv.held);
	assert_false(limits_admit_reserve(l, "bob", NULL, T0 + 1, &est, NULL, NULL));
	limits_release(l, "bob", NULL, &resv, T0 + 2);
	assert_true(limits_admit_reserve(l, "bob", NULL, T0 + 3, &est, &resv, NULL));
	assert_int_equal(limits_export_deltas(l, keep_delta, &b), 2);
	for (int i = 0; i < b.n; i++)
		assert_int_equal(b.d[i].requests, strcmp(b.d[i].subject, "alice") == 0 ? 3 : 2);
	limits_free(l);
}

/* A rule changed within the second a counter was last looked at applies at once. */
static void test_rule_change_applies_within_the_same_second(void **state)
{
	struct limits *l = limits_from("alice = requests_per_minute=100");
	struct limit_values v;
	limit_values_init(&v);
	assert_int_equal(admit_n(l, "alice", NULL, 2, T0), 2);
	v.requests_per_minute = 2;
	assert_true(limits_set_override(limits_get_rules(l), "alice", NULL, &v));
	assert_false(limits_admit(l, "alice", NULL, T0 + 1, NULL));
	limits_free(l);
}

static void test_export_hands_out_local_use_once(void **state)
{
	struct limits *l = limits_from("alice = requests_per_minute=100");
	struct delta_batch b = { .n = 0 };
	admit_n(l, "alice", "gpt-4o", 3, T0);
	admit_n(l, "alice", NULL, 2, T0);
	limits_charge(l, "alice", "gpt-4o", 40, 1.25, T0);
	limits_seed(l, "alice", "gpt-4o", 1000, 50, T0);              /* not local use */
	limits_apply_remote(l, "alice", "gpt-4o", T0, 7, 70, 7, T0);   /* not local use */
	assert_int_equal(limits_export_deltas(l, keep_delta, &b), 2);
	for (int i = 0; i < b.n; i++) {
		const struct limit_delta *d = &b.d[i];
		assert_string_equal(d->subject, "alice");
		assert_int_equal(d->day_start_ms, utc_ms(2026, 3, 14, 0, 0, 0));
		if (strcmp(d->model, "gpt-4o") == 0) {
			assert_int_equal(d->requests, 3);
			assert_int_equal(d->tokens, 40);
			assert_true(d->cost_cents == 1.25);
		} else {
			assert_string_equal(d->model, "");
			assert_int_equal(d->requests, 2);
			assert_int_equal(d->tokens, 0);
		}
	}
	b.n = 0;
	assert_int_equal(limits_export_deltas(l, keep_delta, &b), 0);
	limits_free(l);
}

static void test_export_splits_use_at_utc_midnight(void **state)
{
	struct limits *l = limits_new(NULL, 0);
	struct delta_batch b = { .n = 0 };
	int64_t midnight = utc_ms(2026, 3, 15, 0, 0, 0);
	limits_charge(l, "alice", NULL, 5, 0, midnight - 1);
	limits_charge(l, "alice", NULL, 7, 0, midnight);
	assert_int_equal(limits_export_deltas(l, keep_delta, &b), 2);
	for (int i = 0; i < 2; i++)
		assert_int_equal(b.d[i].tokens, b.d[i].day_start_ms == midnight ? 7 : 5);
	/* a third day before any export drops the oldest */
	limits_charge(l, "alice", NULL, 1, 0, midnight - 1);
	limits_charge(l, "alice", NULL, 1, 0, midnight);
	limits_charge(l, "alice", NULL, 1, 0, midnight + LIMITS_DAY_MS);
	struct limits_stats st;
	limits_get_stats(l, &st);
	assert_int_equal(st.dropped_deltas, 1);
	limits_free(l);
}

static void test_remote_use_counts_against_local_limits(void **state)
{
	const char *ini = "alice = requests_per_minute=60 tokens_per_day=1000";
	struct limits *inst[2] = { limits_from(ini), limits_from(ini) };
	assert_int_equal(admit_n(inst[0], "alice", "gpt-4o", 30, T0), 30);
	assert_int_equal(admit_n(inst[1], "alice", NULL, 30, T0), 30);
	limits_charge(inst[0], "alice", "gpt-4o", 600, 0, T0);
	sync_instances(inst, 2, T0);
	for (int i = 0; i < 2; i++) {
		struct limit_refusal r;
		assert_false(limits_admit(inst[i], "alice", NULL, T0, &r));
		assert_int_equal(r.dim, LIMIT_REQUESTS_PER_MINUTE);
		assert_true(r.used == 60);
	}
	limits_charge(inst[1], "alice", "o3", 400, 0, T0);
	sync_instances(inst, 2, T0);
	struct limit_refusal r;
	assert_false(limits_admit(inst[0], "alice", NULL, T0 + 60000, &r));
	assert_int_equal(r.dim, LIMIT_TOKENS_PER_DAY);
	assert_true(r.used == 1000);
	limits_free(inst[0]);
	limits_free(inst[1]);

	/* a remote delta of an earlier day does not count against today's budget */
	struct limits *l = limits_from(ini);
	limits_apply_remote(l, "alice", NULL, T0 - LIMITS_DAY_MS, 0, 5000, 0, T0);
	assert_true(limits_admit(l, "alice", NULL, T0, NULL));
	limits_apply_remote(l, "alice", NULL, T0 - 3600000, 0, 5000, 0, T0);   /* today */
	assert_false(limits_admit(l, "alice", NULL, T0, NULL));
	limits_free(l);
}

/*
 * N instances, each offered one statement of 1 token every 10 ms, a shared
 * budget of B tokens, counters synced every I ms. docs/limits.md: the total
 * admitted is at most B + sum over the other instances of what they admit
 * within one sync lag L (here L = I, the ticks being aligned), so
 * at most B + (N - 1) * (I / 10 ms).
 */
static void test_overshoot_is_bounded_by_one_sync_interval(void **state)
{
	enum { N = 4, B = 1000, STEP_MS = 10, SYNC_MS = 1000 };
	const char *ini = "default = tokens_per_day=1000";
	struct limits *inst[N];
	int admitted = 0, admitted_alone = 0;
	int64_t t0 = utc_ms(2026, 3, 14, 1, 0, 0);

	for (int i = 0; i < N; i++)
		inst[i] = limits_from(ini);
	for (int64_t t = t0; t < t0 + 30000; t += STEP_MS) {
		if (t > t0 && (t - t0) % SYNC_MS == 0)
			sync_instances(inst, N, t);
		for (int i = 0; i < N; i++)
			if (limits_admit(inst[i], "alice", "gpt-4o", t, NULL)) {
				limits_charge(inst[i], "alice", "gpt-4o", 1, 0, t);
				admitted++;
			}
	}
	sync_instances(inst, N, t0 + 30000);
	int bound = B + (N - 1) * (SYNC_MS / STEP_MS);
	print_message("shared budget %d, %d instances: admitted %d, bound %d\n", B, N, admitted, bound);
	assert_true(admitted > B);   /* the overshoot is real ... */
	assert_true(admitted <= bound);   /* ... and bounded */
	/* after the last sync every instance sees the true total */
	for (int i = 0; i < N; i++) {
		struct limit_refusal r;
		assert_false(limits_admit(inst[i], "alice", "gpt-4o", t0 + 30000, &r));
		assert_true(r.used == admitted);
		limits_free(inst[i]);
	}

	/* without sync each instance would spend the whole budget */
	for (int i = 0; i < N; i++) {
		struct limits *l = limits_from(ini);
		for (int64_t t = t0; t < t0 + 30000; t += STEP_MS)
			if (limits_admit(l, "alice", "gpt-4o", t, NULL)) {
				limits_charge(l, "alice", "gpt-4o", 1, 0, t);
				admitted_alone++;
			}
		limits_free(l);
	}
	assert_int_equal(admitted_alone, N * B);
}

/* ---- leases ---- */

struct lease_log {
	int n;
	struct limit_lease last;
	int64_t sum;
};

static void note_lease(const struct limit_lease *lease, void *arg)
{
	struct lease_log *log = arg;
	log->n++;
	log->last = *lease;
	log->last.subject = NULL;   /* borrowed: not kept */
	log->last.model = NULL;
	log->sum += lease->amount;
}

static void test_lease_slice_is_a_quarter_share(void **state)
{
	(void)state;
	struct limits *l = limits_from("a = requests_per_minute=100");
	assert_int_equal(limits_lease_slice(l, 100), 0);           /* off */
	limits_set_leasing(l, 3);
	assert_int_equal(limits_lease_slice(l, 100), 8);           /* 100 / 12 */
	assert_int_equal(limits_lease_slice(l, 5), 1);             /* at least one */
	limits_free(l);
}

static void test_lease_admits_only_what_is_held(void **state)
{
	(void)state;
	struct limits *l = limits_from("a = requests_per_minute=100");
	limits_set_leasing(l, 3);
	struct limit_refusal r;
	/* nothing held: refused, and one slice asked for */
	assert_false(limits_admit(l, "a", NULL, T0, &r));
	assert_int_equal(r.dim, LIMIT_REQUESTS_PER_MINUTE);
	assert_int_equal(r.retry_after_ms, LIMITS_LEASE_RETRY_MS);
	struct lease_log asks = { 0 };
	assert_int_equal(limits_lease_asks(l, T0, note_lease, &asks), 1);
	assert_int_equal(asks.last.amount, 8);
	assert_int_equal(asks.last.limit, 100);
	assert_int_equal(limits_lease_asks(l, T0, note_lease, &asks), 0);   /* one in flight at a time */
	limits_lease_granted(l, "a", "", LIMIT_REQUESTS_PER_MINUTE, T0 / 1000, 8, T0, T0 + 10);
	/* 8 admitted from the slice; below half a slice the next is asked for */
	assert_int_equal(admit_n(l, "a", NULL, 10, T0 + 20), 8);
	struct lease_log more = { 0 };
	assert_int_equal(limits_lease_asks(l, T0 + 20, note_lease, &more), 1);
	limits_lease_granted(l, "a", "", LIMIT_REQUESTS_PER_MINUTE, T0 / 1000, 0, T0 + 20, T0 + 30);
	assert_int_equal(admit_n(l, "a", NULL, 3, T0 + 40), 0);             /* nothing granted */
	limits_free(l);
}

static void test_lease_unspent_goes_back_when_it_ends(void **state)
{
	(void)state;
	struct limits *l = limits_from("a = requests_per_minute=100");
	limits_set_leasing(l, 3);
	assert_false(limits_admit(l, "a", NULL, T0, NULL));
	struct lease_log asks = { 0 };
	limits_lease_asks(l, T0, note_lease, &asks);
	limits_lease_granted(l, "a", "", LIMIT_REQUESTS_PER_MINUTE, T0 / 1000 + 1, 8, T0, T0 + 10);
	assert_int_equal(admit_n(l, "a", NULL, 3, T0 + 20), 3);
	struct lease_log gives = { 0 };
	assert_int_equal(limits_lease_gives(l, T0 + 1000, false, note_lease, &gives), 0);   /* not ended */
	int64_t req, tok;
	limits_lease_held(l, T0 + 1000, &req, &tok);
	assert_int_equal(req, 5);
	assert_int_equal(limits_lease_gives(l, T0 + LIMITS_LEASE_MS, false, note_lease, &gives), 1);
	assert_int_equal(gives.last.amount, 5);
	assert_int_equal(gives.last.grant_sec, T0 / 1000 + 1);
	/* an ended slice admits nothing */
	limits_lease_held(l, T0 + LIMITS_LEASE_MS, &req, &tok);
	assert_int_equal(req, 0);
	assert_int_equal(admit_n(l, "a", NULL, 1, T0 + LIMITS_LEASE_MS + 1), 0);
	limits_free(l);
}

static void test_lease_tokens_settle_against_the_slice(void **state)
{
	(void)state;
	struct limits *l = limits_from("a = tokens_per_minute=1200");
	limits_set_leasing(l, 3);     /* slice 100 */
	struct limit_estimate est = { .tokens = 60, .cost_cents = -1 };
	struct limit_reservation resv;
	assert_false(limits_admit_reserve(l, "a", NULL, T0, &est, &resv, NULL));
	struct lease_log asks = { 0 };
	limits_lease_asks(l, T0, note_lease, &asks);
	assert_int_equal(asks.last.amount, 100);
	limits_lease_granted(l, "a", "", LIMIT_TOKENS_PER_MINUTE, T0 / 1000, 100, T0, T0 + 10);
	assert_true(limits_admit_reserve(l, "a", NULL, T0 + 20, &est, &resv, NULL));
	struct limit_reservation resv2;
	assert_false(limits_admit_reserve(l, "a", NULL, T0 + 20, &est, &resv2, NULL));   /* 40 left < 60 */
	/* the call used 20 tokens: 40 of its 60 come back, and 80 are held */
	limits_settle(l, "a", NULL, &resv, 20, 0, T0 + 30);
	int64_t req, tok;
	limits_lease_held(l, T0 + 30, &req, &tok);
	assert_int_equal(tok, 80);
	assert_true(limits_admit_reserve(l, "a", NULL, T0 + 40, &est, &resv, NULL));
	/* it used 100: 40 more than reserved, 20 held, so 20 become debt */
	limits_settle(l, "a", NULL, &resv, 100, 0, T0 + 50);
	limits_lease_held(l, T0 + 50, &req, &tok);
	assert_int_equal(tok, 0);
	limits_free(l);
}

static void test_lease_failed_asks_are_asked_again(void **state)
{
	(void)state;
	struct limits *l = limits_from("a = requests_per_minute=100");
	limits_set_leasing(l, 3);
	assert_false(limits_admit(l, "a", NULL, T0, NULL));
	struct lease_log asks = { 0 };
	assert_int_equal(limits_lease_asks(l, T0, note_lease, &asks), 1);
	limits_lease_fail_in_flight(l, T0 + 5);
	assert_int_equal(limits_lease_asks(l, T0 + 10, note_lease, &asks), 0);   /* backing off */
	assert_int_equal(limits_lease_asks(l, T0 + 5 + LIMITS_LEASE_BACKOFF_MS, note_lease, &asks), 1);
	limits_free(l);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_parse_reads_every_dimension),
		cmocka_unit_test(test_parse_accepts_commas_spaces_and_any_case),
		cmocka_unit_test(test_parse_later_value_wins_and_lines_merge),
		cmocka_unit_test(test_parse_splits_model_at_first_slash),
		cmocka_unit_test(test_parse_errors_name_the_line_and_what_was_expected),
		cmocka_unit_test(test_parse_error_leaves_rules_unchanged),
		cmocka_unit_test(test_parse_error_fits_small_buffer),
		cmocka_unit_test(test_requests_per_minute_is_n_in_any_60_seconds),
		cmocka_unit_test(test_requests_per_minute_retry_after_is_exact),
		cmocka_unit_test(test_requests_per_minute_sliding_bound_under_pressure),
		cmocka_unit_test(test_reservations_hold_tokens_until_settled),
		cmocka_unit_test(test_one_call_larger_than_the_limit_runs_alone),
		cmocka_unit_test(test_cost_budget_holds_under_concurrency),
		cmocka_unit_test(test_running_mean_is_the_default_estimate),
		cmocka_unit_test(test_unsettled_reservations_expire),
		cmocka_unit_test(test_settle_charges_its_names_counters),
		cmocka_unit_test(test_max_concurrent_counts_statements_in_flight),
		cmocka_unit_test(test_groups_are_charged_and_the_tighter_refusal_names_the_group),
		cmocka_unit_test(test_group_max_concurrent_spans_its_members),
		cmocka_unit_test(test_alert_thresholds_parse),
		cmocka_unit_test(test_alerts_once_per_threshold_and_period),
		cmocka_unit_test(test_changed_budgets_are_reported_once),
		cmocka_unit_test(test_refused_statements_are_not_counted),
		cmocka_unit_test(test_other_subject_is_unaffected),
		cmocka_unit_test(test_default_applies_to_unknown_subjects),
		cmocka_unit_test(test_unattributed_statement_is_never_limited),
		cmocka_unit_test(test_no_rules_means_no_limits),
		cmocka_unit_test(test_limit_zero_refuses_every_statement_without_hint),
		cmocka_unit_test(test_subject_model_is_more_specific_than_subject),
		cmocka_unit_test(test_subject_wide_limit_counts_every_model),
		cmocka_unit_test(test_precedence_subject_model_then_subject_then_default_model_then_default),
		cmocka_unit_test(test_override_beats_ini_and_inherit_falls_through),
		cmocka_unit_test(test_override_for_unknown_subject_and_default_model),
		cmocka_unit_test(test_override_rejects_bad_values),
		cmocka_unit_test(test_reload_replaces_rules_and_keeps_use),
		cmocka_unit_test(test_tokens_per_minute_charge_refuses_next_statement),
		cmocka_unit_test(test_tokens_per_minute_overuse_stays_a_minute),
		cmocka_unit_test(test_huge_and_negative_charges_are_safe),
		cmocka_unit_test(test_tokens_per_day_resets_at_utc_midnight),
		cmocka_unit_test(test_cost_per_month_resets_on_the_first),
		cmocka_unit_test(test_month_windows_cross_years_and_leap_days),
		cmocka_unit_test(test_seed_keeps_budget_across_restart),
		cmocka_unit_test(test_refusal_reports_the_longest_wait),
		cmocka_unit_test(test_format_requests_per_minute_refusal),
		cmocka_unit_test(test_format_singular_and_per_model_detail),
		cmocka_unit_test(test_format_limit_zero_for_model),
		cmocka_unit_test(test_format_cuts_texts_to_their_fields),
		cmocka_unit_test(test_foreach_status_reports_limit_use_remaining_and_reset),
		cmocka_unit_test(test_expire_keeps_counters_with_unexported_deltas),
		cmocka_unit_test(test_expire_frees_idle_counters_but_keeps_monthly_spend),
		cmocka_unit_test(test_max_entries_evicts_least_recently_used),
		cmocka_unit_test(test_many_subjects_and_long_names),
		cmocka_unit_test(test_no_limit_reserves_nothing_but_counts_the_request),
		cmocka_unit_test(test_rule_change_applies_within_the_same_second),
		cmocka_unit_test(test_export_hands_out_local_use_once),
		cmocka_unit_test(test_export_splits_use_at_utc_midnight),
		cmocka_unit_test(test_remote_use_counts_against_local_limits),
		cmocka_unit_test(test_overshoot_is_bounded_by_one_sync_interval),
		cmocka_unit_test(test_lease_slice_is_a_quarter_share),
		cmocka_unit_test(test_lease_admits_only_what_is_held),
		cmocka_unit_test(test_lease_unspent_goes_back_when_it_ends),
		cmocka_unit_test(test_lease_tokens_settle_against_the_slice),
		cmocka_unit_test(test_lease_failed_asks_are_asked_again),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
