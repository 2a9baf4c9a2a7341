/* SPDX-License-Identifier: PostgreSQL */
/*
 * test_middleware.c - middleware_parse_tags: a Parse's query parsed again
 * gets the same tags from the memo as tags_parse gives, and a different
 * text (same length, or after an invalid one) is parsed afresh.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "ai/middleware.h"

/* Both parses of sql agree field by field (texts as strings). */
static void assert_same_as_tags_parse(const char *sql)
{
	struct ai_tags want, got;
	struct pg_error r;
	char err[TAGS_ERRBUF_SIZE];
	memset(&got, 0x5a, sizeof(got));    /* every byte the memo leaves alone shows */
	enum tags_result wr = tags_parse(sql, strlen(sql), &want, err, sizeof(err));
	enum tags_result gr = middleware_parse_tags(sql, strlen(sql), &got, &r);
	assert_int_equal(gr, wr);
	if (wr == TAGS_INVALID) {
		assert_string_equal(r.message, err);
		return;
	}
	assert_int_equal(got.present, want.present);
	assert_int_equal(got.has_ai_key, want.has_ai_key);
	assert_int_equal(got.tokens_in, want.tokens_in);
	assert_int_equal(got.tokens_out, want.tokens_out);
	assert_int_equal(got.latency_ms, want.latency_ms);
	assert_int_equal(got.cache, want.cache);
	assert_int_equal(got.ttl_s, want.ttl_s);
	assert_int_equal(got.tokens_estimate, want.tokens_estimate);
	assert_true(got.cost_estimate_cents == want.cost_estimate_cents);
	assert_int_equal(got.comment_start, want.comment_start);
	assert_int_equal(got.comment_end, want.comment_end);
	assert_string_equal(got.user, want.user);
	assert_string_equal(got.model, want.model);
	assert_string_equal(got.conversation, want.conversation);
	assert_string_equal(got.traceparent, want.traceparent);
}

static void test_parse_memo_gives_what_tags_parse_gives(void **state)
{
	static const char *const texts[] = {
		"SELECT $1 /*ai_user='alice',ai_model='gpt-4o',ai_tokens_in='12'*/",
		"SELECT $1 /*ai_user='alice',ai_model='gpt-4o',ai_tokens_in='12'*/",    /* the memo */
		"SELECT $1 /*ai_user='alice',ai_model='gpt-4o',ai_tokens_in='13'*/",    /* same length */
		"SELECT $1 /*ai_user='bob'*/ /*traceparent='00-0af7651916cd43dd8448eb211c80317c-b7ad6b7169203331-01'*/",
		"SELECT $1 /*ai_user='bob'*/ /*traceparent='00-0af7651916cd43dd8448eb211c80317c-b7ad6b7169203331-01'*/",
		"SELECT $1 /*ai_conversation='c1',ai_cache='lookup',ai_ttl='60'*/",
		"SELECT $1 /*ai_tokens_in='ten'*/",                                     /* invalid: not kept */
		"SELECT $1 /*ai_tokens_in='ten'*/",
		"SELECT $1",
		"SELECT $1",
		"SELECT $1 /*ai_conversation='c1',ai_cache='lookup',ai_ttl='60'*/",
	};
	for (size_t i = 0; i < sizeof(texts) / sizeof(texts[0]); i++)
		assert_same_as_tags_parse(texts[i]);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_parse_memo_gives_what_tags_parse_gives),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
