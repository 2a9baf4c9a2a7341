/* SPDX-License-Identifier: PostgreSQL */
/*
 * test_stats.c - the AI middleware's per (subject, model) counters: what
 * SHOW USAGE lists, with the last pair looked up again without hashing
 * (names cut at LIMITS_NAME_MAX bytes, model NULL and "" alike).
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "ai/limits.h"
#include "ai/stats.h"

struct row_list {
	size_t n;
	char subject[8][LIMITS_NAME_MAX + 1];
	char model[8][LIMITS_NAME_MAX + 1];
	uint64_t requests[8], refusals[8];
};

static void keep_row(const struct ai_usage_row *row, void *arg)
{
	struct row_list *rl = arg;
	assert_true(rl->n < 8);
	snprintf(rl->subject[rl->n], sizeof(rl->subject[0]), "%s", row->subject);
	snprintf(rl->model[rl->n], sizeof(rl->model[0]), "%s", row->model);
	rl->requests[rl->n] = row->requests;
	rl->refusals[rl->n] = row->refusals;
	rl->n++;
}

/* The row of (subject, model); fails when there is none. */
static size_t row_of(const struct row_list *rl, const char *subject, const char *model)
{
	for (size_t i = 0; i < rl->n; i++)
		if (strcmp(rl->subject[i], subject) == 0 && strcmp(rl->model[i], model) == 0)
			return i;
	fail_msg("no row for (%s, %s)", subject, model);
	return 0;
}

static void test_pairs_are_counted_apart_in_any_order(void **state)
{
	struct ai_stats *st = ai_stats_new();
	struct row_list rl = { 0 };
	assert_non_null(st);
	/* runs of one pair, pairs that differ in one name only, a prefix of a name */
	const char *seq[][2] = {
		{ "alice", "gpt-4o" }, { "alice", "gpt-4o" }, { "alice", NULL }, { "alice", "" },
		{ "alic", "" }, { "alice", "gpt-4" }, { "bob", "gpt-4o" }, { "alice", "gpt-4o" },
		{ "alicee", "" },
	};
	for (size_t i = 0; i < sizeof(seq) / sizeof(seq[0]); i++)
		ai_stats_note_statement(st, seq[i][0], seq[i][1], REFUSAL_NONE);
	ai_stats_note_statement(st, "bob", "gpt-4o", REFUSAL_REQUESTS_PER_MINUTE);
	ai_stats_foreach(st, keep_row, &rl);
	assert_int_equal(rl.n, 6);
	assert_int_equal(ai_stats_entries(st), 6);
	assert_int_equal(rl.requests[row_of(&rl, "alice", "gpt-4o")], 3);
	assert_int_equal(rl.requests[row_of(&rl, "alice", "")], 2);
	assert_int_equal(rl.requests[row_of(&rl, "alic", "")], 1);
	assert_int_equal(rl.requests[row_of(&rl, "alicee", "")], 1);
	assert_int_equal(rl.requests[row_of(&rl, "alice", "gpt-4")], 1);
	assert_int_equal(rl.requests[row_of(&rl, "bob", "gpt-4o")], 1);
	assert_int_equal(rl.refusals[row_of(&rl, "bob", "gpt-4o")], 1);
	ai_stats_free(st);
}

/* Names longer than LIMITS_NAME_MAX bytes count as their first LIMITS_NAME_MAX. */
static void test_long_names_are_cut(void **state)
{
	struct ai_stats *st = ai_stats_new();
	struct row_list rl = { 0 };
	char a[LIMITS_NAME_MAX + 20], b[LIMITS_NAME_MAX + 20], cut[LIMITS_NAME_MAX + 1];
	memset(a, 'x', sizeof(a) - 1);
	a[sizeof(a) - 1] = '\0';
	memcpy(b, a, sizeof(b));
	b[LIMITS_NAME_MAX + 5] = 'y';            /* differs after the cut: the same subject */
	memcpy(cut, a, LIMITS_NAME_MAX);
	cut[LIMITS_NAME_MAX] = '\0';
	ai_stats_note_statement(st, a, "m", REFUSAL_NONE);
	ai_stats_note_statement(st, b, "m", REFUSAL_NONE);
	ai_stats_note_statement(st, cut, "m", REFUSAL_NONE);
	cut[LIMITS_NAME_MAX - 1] = 'z';          /* differs before it: another one */
	ai_stats_note_statement(st, cut, "m", REFUSAL_NONE);
	ai_stats_foreach(st, keep_row, &rl);
	assert_int_equal(rl.n, 2);
	cut[LIMITS_NAME_MAX - 1] = 'x';
	assert_int_equal(rl.requests[row_of(&rl, cut, "m")], 3);
	ai_stats_free(st);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_pairs_are_counted_apart_in_any_order),
		cmocka_unit_test(test_long_names_are_cut),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
