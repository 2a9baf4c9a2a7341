/* SPDX-License-Identifier: PostgreSQL */
/*
 * test_tags.c - the sqlcommenter parser: every key, every way of writing a
 * value, which comment wins, sqlcommenter's own examples, the exact error
 * for each bad value, and bounds (text not NUL-terminated, truncations).
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "ai/tags.h"

/* A traceparent from the W3C Trace Context examples. */
#define TRACEPARENT "00-0af7651916cd43dd8448eb211c80317c-b7ad6b7169203331-01"

static struct ai_tags tags;
static char err[TAGS_ERRBUF_SIZE];

static enum tags_result parse(const char *sql)
{
	memset(err, 0, sizeof err);
	return tags_parse(sql, strlen(sql), &tags, err, sizeof err);
}

/* sql must parse as TAGS_OK. */
static void parse_ok(const char *sql)
{
	enum tags_result r = parse(sql);

	if (r != TAGS_OK)
		fail_msg("expected TAGS_OK for <%s>, got %d (%s)", sql, (int) r, err);
}

/* sql must be refused with exactly message. */
static void parse_invalid(const char *sql, const char *message)
{
	enum tags_result r = parse(sql);

	if (r != TAGS_INVALID)
		fail_msg("expected TAGS_INVALID for <%s>, got %d", sql, (int) r);
	assert_string_equal(err, message);
}

static void assert_no_tags(void)
{
	assert_false(tags.present);
	assert_false(tags.has_ai_key);
	assert_string_equal(tags.user, "");
	assert_string_equal(tags.model, "");
	assert_string_equal(tags.conversation, "");
	assert_string_equal(tags.traceparent, "");
	assert_int_equal(tags.tokens_in, -1);
	assert_int_equal(tags.tokens_out, -1);
	assert_int_equal(tags.latency_ms, -1);
	assert_int_equal(tags.ttl_s, -1);
	assert_int_equal(tags.cache, AI_CACHE_NONE);
	assert_int_equal(tags.comment_start, 0);
	assert_int_equal(tags.comment_end, 0);
}

static void parse_none(const char *sql)
{
	enum tags_result r = parse(sql);

	if (r != TAGS_NONE)
		fail_msg("expected TAGS_NONE for <%s>, got %d (%s)", sql, (int) r, err);
	assert_no_tags();
}

/* ---- each key ---- */

static void test_statement_without_comment_has_no_tags(void **state)
{
	parse_none("SELECT 1");
	parse_none("");
	parse_none("SELECT 4 / 2 * 3, '*/'");
	assert_int_equal(tags_parse(NULL, 0, &tags, err, sizeof err), TAGS_NONE);
	assert_no_tags();
}

static void test_ai_user_is_read_and_attributes_the_statement(void **state)
{
	parse_ok("SELECT 1 /*ai_user='alice'*/");
	assert_true(tags.present);
	assert_true(tags.has_ai_key);
	assert_string_equal(tags.user, "alice");
	assert_int_equal(tags.tokens_in, -1);
	assert_int_equal(tags.cache, AI_CACHE_NONE);
}

static void test_ai_model_and_conversation_are_read(void **state)
{
	parse_ok("SELECT 1 /*ai_model='gpt-4o',ai_conversation='c-42'*/");
	assert_string_equal(tags.model, "gpt-4o");
	assert_string_equal(tags.conversation, "c-42");
	assert_string_equal(tags.user, "");
}

static void test_token_counts_and_latency_are_read(void **state)
{
	parse_ok("INSERT INTO chat VALUES (1) /*ai_tokens_in='1200',ai_tokens_out='350',ai_latency_ms='812'*/");
	assert_int_equal(tags.tokens_in, 1200);
	assert_int_equal(tags.tokens_out, 350);
	assert_int_equal(tags.latency_ms, 812);
	assert_true(tags.has_ai_key);
}

static void test_zero_and_leading_zeros_and_the_maximum_are_accepted(void **state)
{
	parse_ok("SELECT 1 /*ai_tokens_in='0',ai_tokens_out='007',ai_latency_ms='86400000'*/");
	assert_int_equal(tags.tokens_in, 0);
	assert_int_equal(tags.tokens_out, 7);
	assert_int_equal(tags.latency_ms, TAGS_LATENCY_MAX_MS);
	parse_ok("SELECT 1 /*ai_tokens_in='1000000000',ai_tokens_out='0001000000000'*/");
	assert_int_equal(tags.tokens_in, TAGS_TOKENS_MAX);
	assert_int_equal(tags.tokens_out, TAGS_TOKENS_MAX);
	parse_ok("SELECT 1 /*ai_tokens_in='0000000000000000000000001'*/");
	assert_int_equal(tags.tokens_in, 1);
}

static void test_ai_cache_lookup_and_refresh_are_read_in_any_case(void **state)
{
	parse_ok("SELECT answer FROM llm_cache /*ai_cache='lookup'*/");
	assert_int_equal(tags.cache, AI_CACHE_LOOKUP);
	parse_ok("SELECT answer FROM llm_cache /*ai_cache='refresh'*/");
	assert_int_equal(tags.cache, AI_CACHE_REFRESH);
	parse_ok("SELECT answer FROM llm_cache /*ai_cache='LookUp'*/");
	assert_int_equal(tags.cache, AI_CACHE_LOOKUP);
}

static void test_ai_ttl_is_read_within_one_second_to_one_year(void **state)
{
	parse_ok("SELECT 1 /*ai_cache='lookup',ai_ttl='600'*/");
	assert_int_equal(tags.ttl_s, 600);
	parse_ok("SELECT 1 /*ai_ttl='1'*/");
	assert_int_equal(tags.ttl_s, 1);
	parse_ok("SELECT 1 /*ai_ttl='31536000'*/");
	assert_int_equal(tags.ttl_s, 31536000);
}

static void test_traceparent_alone_is_present_but_not_attributed(void **state)
{
	parse_ok("SELECT 1 /*traceparent='" TRACEPARENT "'*/");
	assert_true(tags.present);
	assert_false(tags.has_ai_key);
	assert_string_equal(tags.traceparent, TRACEPARENT);
}

static void test_all_keys_together(void **state)
{
	parse_ok("SELECT * FROM docs ORDER BY embedding <-> $1 LIMIT 5 "
	         "/*ai_user='tenant-7',ai_model='text-embedding-3-small',ai_tokens_in='12',"
	         "ai_tokens_out='0',ai_latency_ms='40',ai_conversation='9f1c',ai_cache='lookup',"
	         "ai_ttl='300',traceparent='" TRACEPARENT "'*/");
	assert_string_equal(tags.user, "tenant-7");
	assert_string_equal(tags.model, "text-embedding-3-small");
	assert_int_equal(tags.tokens_in, 12);
	assert_int_equal(tags.tokens_out, 0);
	assert_int_equal(tags.latency_ms, 40);
	assert_string_equal(tags.conversation, "9f1c");
	assert_int_equal(tags.cache, AI_CACHE_LOOKUP);
	assert_int_equal(tags.ttl_s, 300);
	assert_string_equal(tags.traceparent, TRACEPARENT);
}

/* ---- ways of writing a value ---- */

static void test_url_encoded_values_are_decoded(void **state)
{
	parse_ok("SELECT 1 /*ai_user='alice%40example.com',ai_model='gpt%2D4o%20mini',"
	         "ai_conversation='it%27s%2Bme'*/");
	assert_string_equal(tags.user, "alice@example.com");
	assert_string_equal(tags.model, "gpt-4o mini");
	assert_string_equal(tags.conversation, "it's+me");
}

static void test_plus_is_a_space(void **state)
{
	parse_ok("SELECT 1 /*ai_user='Ada+Lovelace'*/");
	assert_string_equal(tags.user, "Ada Lovelace");
}

static void test_utf8_values_are_kept(void **state)
{
	parse_ok("SELECT 1 /*ai_user='J%C3%BCrgen',ai_model='mod\xc3\xa8le'*/");
	assert_string_equal(tags.user, "J\xc3\xbcrgen");
	assert_string_equal(tags.model, "mod\xc3\xa8le");
}

static void test_backslash_escaped_quotes_inside_quotes(void **state)
{
	parse_ok("SELECT 1 /*ai_user='o\\'brien',ai_model='a\\\\b',ai_conversation='c\\d'*/");
	assert_string_equal(tags.user, "o'brien");
	assert_string_equal(tags.model, "a\\b");
	assert_string_equal(tags.conversation, "c\\d");  /* other backslashes stay */
}

static void test_escaped_quote_before_closing_quote_does_not_close(void **state)
{
	parse_ok("SELECT 1 /*ai_user='it\\',ai_model=x',ai_tokens_in='5'*/");
	assert_string_equal(tags.user, "it',ai_model=x");
	assert_string_equal(tags.model, "");
	assert_int_equal(tags.tokens_in, 5);
}

static void test_plain_values_run_to_the_next_comma(void **state)
{
	parse_ok("SELECT 1 /*ai_user=alice,ai_tokens_in=10,ai_cache=lookup,ai_model=a=b*/");
	assert_string_equal(tags.user, "alice");
	assert_int_equal(tags.tokens_in, 10);
	assert_int_equal(tags.cache, AI_CACHE_LOOKUP);
	assert_string_equal(tags.model, "a=b");
}

static void test_whitespace_around_keys_equals_and_commas_is_allowed(void **state)
{
	parse_ok("SELECT 1 /* ai_user = 'alice' ,\n\tai_tokens_in = 10 , ai_model =gpt x ,*/");
	assert_string_equal(tags.user, "alice");
	assert_int_equal(tags.tokens_in, 10);
	assert_string_equal(tags.model, "gpt x");
	assert_int_equal(tags.comment_end, strlen("SELECT 1 /* ai_user = 'alice' ,\n\tai_tokens_in = 10 , ai_model =gpt x ,*/"));
}

static void test_url_encoded_keys_are_decoded(void **state)
{
	parse_ok("SELECT 1 /*ai%5Fuser='alice',%61i_model='m'*/");
	assert_string_equal(tags.user, "alice");
	assert_string_equal(tags.model, "m");
}

static void test_keys_are_case_sensitive(void **state)
{
	parse_none("SELECT 1 /*AI_USER='alice'*/");
}

static void test_repeated_key_last_one_wins(void **state)
{
	parse_ok("SELECT 1 /*ai_user='alice',ai_user='bob',ai_tokens_in='1',ai_tokens_in='2'*/");
	assert_string_equal(tags.user, "bob");
	assert_int_equal(tags.tokens_in, 2);
}

static void test_empty_items_are_skipped(void **state)
{
	parse_ok("SELECT 1 /*,ai_user='alice',, ,ai_model='m',*/");
	assert_string_equal(tags.user, "alice");
	assert_string_equal(tags.model, "m");
}

/* ---- which comment ---- */

static void test_keys_merge_across_comments_last_value_wins(void **state)
{
	parse_ok("SELECT /*ai_user='alice'*/ 1 /*ai_user='bob',ai_model='m'*/");
	assert_string_equal(tags.user, "bob");
	parse_ok("/*ai_user='alice',ai_model='m'*/ SELECT 1 /*ai_user='bob'*/");
	assert_string_equal(tags.user, "bob");
	assert_string_equal(tags.model, "m");   /* kept from the earlier comment */
	assert_int_equal(tags.comment_start, 42);   /* the last comment that gave a key */
}

static void test_knex_comment_first_then_opentelemetry_traceparent(void **state)
{
	/* knex .comment() / drizzle put theirs first; instrumentation-pg appends */
	parse_ok("/* ai_user='alice',ai_tokens_in='12' */ select 1 "
	         "/*traceparent='00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01'*/");
	assert_string_equal(tags.user, "alice");
	assert_int_equal(tags.tokens_in, 12);
	assert_string_equal(tags.traceparent, "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01");
	assert_true(tags.has_ai_key);
}

static void test_plain_comment_after_the_tags_does_not_hide_them(void **state)
{
	parse_ok("SELECT 1 /*ai_user='alice'*/ /* fetch the answer */");
	assert_string_equal(tags.user, "alice");
}

static void test_estimate_tags(void **state)
{
	parse_ok("SELECT 1 /*ai_user='a',ai_tokens_estimate='1500',ai_cost_estimate='0.25'*/");
	assert_int_equal(tags.tokens_estimate, 1500);
	assert_true(tags.cost_estimate_cents > 0.2499 && tags.cost_estimate_cents < 0.2501);
	parse_ok("SELECT 1 /*ai_user='a'*/");
	assert_int_equal(tags.tokens_estimate, -1);
	assert_true(tags.cost_estimate_cents < 0);
	parse_invalid("SELECT 1 /*ai_cost_estimate='1e3'*/", "invalid value for tag \"ai_cost_estimate\": \"1e3\"");
	parse_invalid("SELECT 1 /*ai_cost_estimate='5.'*/", "invalid value for tag \"ai_cost_estimate\": \"5.\"");
}

static void test_comment_may_be_anywhere(void **state)
{
	parse_ok("/*ai_user='alice'*/SELECT 1");
	assert_int_equal(tags.comment_start, 0);
	assert_int_equal(tags.comment_end, 19);
	parse_ok("SELECT /*ai_user='alice'*/ 1");
	assert_string_equal(tags.user, "alice");
}

static void test_comment_in_string_literal_is_not_special(void **state)
{
	/* documented limitation: the parser does not know SQL string literals */
	parse_ok("INSERT INTO msg VALUES ('/*ai_user=mallory*/')");
	assert_string_equal(tags.user, "mallory");
	/* but an application tag comment after the literal wins */
	parse_ok("INSERT INTO msg VALUES ('/*ai_user=mallory*/') /*ai_user='alice'*/");
	assert_string_equal(tags.user, "alice");
}

static void test_stray_opener_in_literal_before_tags_does_not_hide_them(void **state)
{
	parse_ok("SELECT '/*' AS x /*ai_user='alice'*/");
	assert_string_equal(tags.user, "alice");
	assert_int_equal(tags.comment_start, 17);
	parse_ok("SELECT '*/' AS x /*ai_user='alice'*/");
	assert_string_equal(tags.user, "alice");
}

static void test_nested_comment_innermost_pair_counts(void **state)
{
	parse_ok("SELECT 1 /* outer /*ai_user='alice'*/ */");
	assert_string_equal(tags.user, "alice");
	assert_int_equal(tags.comment_start, 18);
	parse_none("SELECT 1 /*ai_user='alice' /* inner */ */");
}

static void test_unterminated_comment_is_no_comment(void **state)
{
	parse_none("SELECT 1 /*ai_user='alice'");
	parse_none("SELECT 1 /*ai_user='alice'*");
	parse_none("SELECT 1 /*/");
	/* an earlier complete comment still counts */
	parse_ok("SELECT 1 /*ai_user='alice'*/ /* unterminated ai_user='bob'");
	assert_string_equal(tags.user, "alice");
}

static void test_star_slash_outside_a_comment_is_text(void **state)
{
	parse_ok("SELECT 2*/*ai_user='alice'*/3");
	assert_string_equal(tags.user, "alice");
	assert_int_equal(tags.comment_start, 9);
}

static void test_empty_comment_has_no_tags(void **state)
{
	parse_none("SELECT 1 /**/");
	parse_none("SELECT 1 /*   */");
}

static void test_plain_english_comment_is_no_tag_comment(void **state)
{
	memset(err, 'X', sizeof err);
	assert_int_equal(tags_parse("SELECT 1 /* plain english comment */", 36, &tags, err, sizeof err), TAGS_NONE);
	assert_int_equal(err[0], 'X');     /* errbuf untouched */
	assert_no_tags();
	parse_none("SELECT 1 /* note: see http://example.com/x */");
	parse_none("SELECT 1 /* the daily AI report */");    /* "AI" is no ai_ key */
	parse_none("SELECT 1 /* see chai_tea */");           /* nor is a word containing ai_ */
}

/* sql must be refused with message and DETAIL detail (issue 13 item 6). */
static void parse_malformed(const char *sql, const char *message, const char *detail)
{
	parse_invalid(sql, message);
	assert_non_null(tags.error_detail);
	assert_string_equal(tags.error_detail, detail);
}

#define DETAIL_QUOTE "A quote inside a quoted value is written \\' or %27."
#define DETAIL_SHAPE "A sqlcommenter comment is a list of key='value' items separated by commas."

static void test_malformed_comment_naming_ai_key_is_refused(void **state)
{
	/* a raw quote inside a value: before, the statement ran unattributed */
	parse_malformed("SELECT 1 /*ai_user='o'brien',ai_model='gpt'*/",
	                "invalid sqlcommenter comment: unexpected text after the quoted value of key \"ai_user\"",
	                DETAIL_QUOTE);
	parse_malformed("SELECT 1 /*ai_user='alice*/",
	                "invalid sqlcommenter comment: unterminated quoted value of key \"ai_user\"", DETAIL_QUOTE);
	parse_malformed("SELECT 1 /*ai_user='alice' 'bob'*/",
	                "invalid sqlcommenter comment: unexpected text after the quoted value of key \"ai_user\"",
	                DETAIL_QUOTE);
	parse_malformed("SELECT 1 /*ai_user*/", "invalid sqlcommenter comment: missing \"=\" after key \"ai_user\"",
	                DETAIL_SHAPE);
	parse_malformed("SELECT 1 /*ai_user='alice',ai_model*/",
	                "invalid sqlcommenter comment: missing \"=\" after key \"ai_model\"", DETAIL_SHAPE);
	parse_malformed("SELECT 1 /*='alice',ai_user='bob'*/",
	                "invalid sqlcommenter comment: expected a key at \"='alice',ai_user='bob'\"", DETAIL_SHAPE);
	/* the problem is named even when the ai_ key comes after it, or is one pgsluice does not know */
	parse_malformed("SELECT 1 /*app='it's',ai_user='alice'*/",
	                "invalid sqlcommenter comment: unexpected text after the quoted value of key \"app\"",
	                DETAIL_QUOTE);
	parse_malformed("SELECT 1 /*ai_priority='high*/",
	                "invalid sqlcommenter comment: unterminated quoted value of key \"ai_priority\"", DETAIL_QUOTE);
	/* prose naming an ai_ key is refused too: it reads as a tag comment gone wrong */
	parse_malformed("SELECT 1 /* ai_user is alice */",
	                "invalid sqlcommenter comment: missing \"=\" after key \"ai_user\"", DETAIL_SHAPE);
	/* a bad value before the syntax error is the first problem */
	parse_invalid("SELECT 1 /*ai_tokens_in='ten', and then prose*/", "invalid value for tag \"ai_tokens_in\": \"ten\"");
	assert_null(tags.error_detail);
	/* a bad %-escape of a known key says how one is written */
	parse_invalid("SELECT 1 /*ai_user='al%zzice'*/", "invalid value for tag \"ai_user\": \"al%zzice\"");
	assert_string_equal(tags.error_detail,
	                    "A %-escape is % followed by two hexadecimal digits: %27 is a quote, %25 a percent sign.");
	/* a message that fits errbuf is the same with a small one, cut */
	memset(err, 0, sizeof err);
	{
		char small[20];

		assert_int_equal(tags_parse("SELECT 1 /*ai_user='x*/", 23, &tags, small, sizeof small), TAGS_INVALID);
		assert_string_equal(small, "invalid sqlcommente");
	}
}

static void test_malformed_comment_without_ai_key_is_ignored(void **state)
{
	parse_none("SELECT 1 /*app='it's'*/");
	parse_none("SELECT 1 /*route='/x*/");
	parse_none("SELECT 1 /*framework*/");
	parse_none("SELECT 1 /*='x'*/");
	parse_none("SELECT 1 /*traceparent='" TRACEPARENT "' x*/");
	assert_null(tags.error_detail);
}

/* ---- sqlcommenter's own examples ---- */

static void test_sqlcommenter_spec_example_gives_traceparent_only(void **state)
{
	parse_ok("SELECT * FROM FOO /*action='%2Fparam*d',controller='index',framework='spring',"
	         "traceparent='00-5bd66ef5095369c7b0d1f8f4bd33716a-c532cb4098ac3dd2-01',"
	         "tracestate='congo%3Dt61rcWkgMzE%2Crojo%3D00f067aa0ba902b7'*/");
	assert_true(tags.present);
	assert_false(tags.has_ai_key);
	assert_string_equal(tags.traceparent, "00-5bd66ef5095369c7b0d1f8f4bd33716a-c532cb4098ac3dd2-01");
	assert_string_equal(tags.user, "");
	assert_int_equal(tags.comment_start, 18);
}

static void test_sqlcommenter_framework_keys_alone_are_no_tags(void **state)
{
	parse_none("SELECT * FROM FOO /*action='%2Fparam*d',controller='index',framework='spring'*/");
	parse_none("SELECT * FROM polls_question /*controller='index',db_driver='django.db.backends.postgresql',"
	           "framework='django%3A2.2.1',route='%5Epolls/%24'*/");
}

static void test_sqlcommenter_keys_mixed_with_ai_keys(void **state)
{
	parse_ok("SELECT * FROM polls_question /*ai_user='alice',controller='index',"
	         "db_driver='django.db.backends.postgresql',framework='django%3A2.2.1',"
	         "route='%5Epolls/%24',traceparent='" TRACEPARENT "'*/");
	assert_string_equal(tags.user, "alice");
	assert_string_equal(tags.traceparent, TRACEPARENT);
}

static void test_bad_encoding_in_other_keys_is_ignored(void **state)
{
	parse_ok("SELECT 1 /*route='%zz',ai_user='alice',controller='\\q'*/");
	assert_string_equal(tags.user, "alice");
}

/* ---- keys ignored ---- */

static void test_unknown_ai_key_is_ignored_and_does_not_attribute(void **state)
{
	parse_none("SELECT 1 /*ai_priority='high'*/");
	parse_none("SELECT 1 /*ai_tokens='ten'*/");
	parse_ok("SELECT 1 /*ai_priority='%zz',ai_user='alice'*/");
	assert_string_equal(tags.user, "alice");
}

static void test_malformed_traceparent_is_ignored(void **state)
{
	static const char *const bad[] = {
		"00-0AF7651916CD43DD8448EB211C80317C-B7AD6B7169203331-01",   /* upper case */
		"01-0af7651916cd43dd8448eb211c80317c-b7ad6b7169203331-01",   /* unknown version */
		"00-00000000000000000000000000000000-b7ad6b7169203331-01",   /* zero trace id */
		"00-0af7651916cd43dd8448eb211c80317c-0000000000000000-01",   /* zero parent id */
		"00-0af7651916cd43dd8448eb211c80317c-b7ad6b7169203331-1",    /* short flags */
		"00-0af7651916cd43dd8448eb211c80317c-b7ad6b7169203331-01-x", /* trailing */
		"00_0af7651916cd43dd8448eb211c80317c_b7ad6b7169203331_01",
		"00-0af7651916cd43dd8448eb211c80317g-b7ad6b7169203331-01",
		"%zz", "",
	};
	char sql[256];
	size_t i;

	for (i = 0; i < sizeof bad / sizeof bad[0]; i++) {
		snprintf(sql, sizeof sql, "SELECT 1 /*traceparent='%s'*/", bad[i]);
		parse_none(sql);
		snprintf(sql, sizeof sql, "SELECT 1 /*traceparent='%s',ai_user='alice'*/", bad[i]);
		parse_ok(sql);
		assert_string_equal(tags.traceparent, "");
		assert_string_equal(tags.user, "alice");
	}
}

static void test_url_encoded_traceparent_is_decoded(void **state)
{
	parse_ok("SELECT 1 /*traceparent='00%2D0af7651916cd43dd8448eb211c80317c-b7ad6b7169203331-01'*/");
	assert_string_equal(tags.traceparent, TRACEPARENT);
}

/* ---- invalid values: the exact message ---- */

static void test_non_numeric_count_is_invalid(void **state)
{
	parse_invalid("SELECT 1 /*ai_tokens_in='ten'*/", "invalid value for tag \"ai_tokens_in\": \"ten\"");
	parse_invalid("SELECT 1 /*ai_tokens_out=ten*/", "invalid value for tag \"ai_tokens_out\": \"ten\"");
	parse_invalid("SELECT 1 /*ai_latency_ms='1.5'*/", "invalid value for tag \"ai_latency_ms\": \"1.5\"");
	parse_invalid("SELECT 1 /*ai_tokens_in='0x10'*/", "invalid value for tag \"ai_tokens_in\": \"0x10\"");
}

static void test_signed_or_spaced_count_is_invalid(void **state)
{
	parse_invalid("SELECT 1 /*ai_tokens_in='-5'*/", "invalid value for tag \"ai_tokens_in\": \"-5\"");
	parse_invalid("SELECT 1 /*ai_tokens_in='+5'*/", "invalid value for tag \"ai_tokens_in\": \"+5\"");
	parse_invalid("SELECT 1 /*ai_tokens_in='%2B5'*/", "invalid value for tag \"ai_tokens_in\": \"%2B5\"");
	parse_invalid("SELECT 1 /*ai_tokens_in=' 5'*/", "invalid value for tag \"ai_tokens_in\": \" 5\"");
	parse_invalid("SELECT 1 /*ai_tokens_in='1 000'*/", "invalid value for tag \"ai_tokens_in\": \"1 000\"");
}

static void test_empty_values_are_invalid(void **state)
{
	parse_invalid("SELECT 1 /*ai_tokens_in=''*/", "invalid value for tag \"ai_tokens_in\": \"\"");
	parse_invalid("SELECT 1 /*ai_user=''*/", "invalid value for tag \"ai_user\": \"\"");
	parse_invalid("SELECT 1 /*ai_model=,ai_user='a'*/", "invalid value for tag \"ai_model\": \"\"");
	parse_invalid("SELECT 1 /*ai_conversation=*/", "invalid value for tag \"ai_conversation\": \"\"");
	parse_invalid("SELECT 1 /*ai_cache=''*/", "invalid value for tag \"ai_cache\": \"\"");
}

/* What sluice.user and the writer check names with: UTF-8 as pg_verify_mbstr accepts it. */
static void test_text_is_clean_accepts_utf8_only(void **state)
{
	(void) state;
	assert_true(tags_text_is_clean("alice", 5));
	assert_true(tags_text_is_clean("J\xc3\xbcrgen \xe2\x82\xac \xf0\x9f\x98\x80", 16));
	assert_true(tags_text_is_clean("", 0));
	assert_false(tags_text_is_clean("\xff\xfe", 2));
	assert_false(tags_text_is_clean("a\0b", 3));
	assert_false(tags_text_is_clean("\xc3", 1));             /* cut short */
	assert_false(tags_text_is_clean("\xc0\xaf", 2));         /* overlong */
	assert_false(tags_text_is_clean("\xed\xa0\x80", 3));     /* surrogate */
	assert_false(tags_text_is_clean("\xf4\x90\x80\x80", 4)); /* above U+10FFFF */
}

static void test_count_above_its_bound_is_out_of_range(void **state)
{
	/* 10^9 tokens per call, one day of latency: a record beyond them would not fit llm_usage */
	parse_invalid("SELECT 1 /*ai_tokens_in='1000000001'*/",
	              "1000000001 is outside the valid range for tag \"ai_tokens_in\" "
	              "(0 .. 1000000000)");
	parse_invalid("SELECT 1 /*ai_tokens_out='999999999999999999'*/",
	              "999999999999999999 is outside the valid range for tag \"ai_tokens_out\" "
	              "(0 .. 1000000000)");
	parse_invalid("SELECT 1 /*ai_tokens_in='1000000000000000000'*/",
	              "1000000000000000000 is outside the valid range for tag \"ai_tokens_in\" "
	              "(0 .. 1000000000)");
	parse_invalid("SELECT 1 /*ai_latency_ms='86400001'*/",
	              "86400001 is outside the valid range for tag \"ai_latency_ms\" "
	              "(0 .. 86400000)");
	parse_invalid("SELECT 1 /*ai_latency_ms='99999999999999999999999'*/",
	              "99999999999999999999999 is outside the valid range for tag \"ai_latency_ms\" "
	              "(0 .. 86400000)");
}

static void test_ttl_outside_one_second_to_one_year_is_out_of_range(void **state)
{
	parse_invalid("SELECT 1 /*ai_ttl='0'*/",
	              "0 is outside the valid range for tag \"ai_ttl\" (1 .. 31536000)");
	parse_invalid("SELECT 1 /*ai_ttl='31536001'*/",
	              "31536001 is outside the valid range for tag \"ai_ttl\" (1 .. 31536000)");
	parse_invalid("SELECT 1 /*ai_ttl='5m'*/", "invalid value for tag \"ai_ttl\": \"5m\"");
}

static void test_unknown_cache_mode_is_invalid(void **state)
{
	parse_invalid("SELECT 1 /*ai_cache='maybe'*/", "invalid value for tag \"ai_cache\": \"maybe\"");
	parse_invalid("SELECT 1 /*ai_cache='none'*/", "invalid value for tag \"ai_cache\": \"none\"");
}

static void test_text_value_over_127_bytes_is_too_long(void **state)
{
	char sql[512], value[200];

	memset(value, 'u', 127);
	value[127] = '\0';
	snprintf(sql, sizeof sql, "SELECT 1 /*ai_user='%s'*/", value);
	parse_ok(sql);
	assert_string_equal(tags.user, value);

	value[127] = 'u';
	value[128] = '\0';
	snprintf(sql, sizeof sql, "SELECT 1 /*ai_user='%s'*/", value);
	parse_invalid(sql, "value too long for tag \"ai_user\" (limit 127 bytes)");
	snprintf(sql, sizeof sql, "SELECT 1 /*ai_conversation=%s*/", value);
	parse_invalid(sql, "value too long for tag \"ai_conversation\" (limit 127 bytes)");
}

static void test_limit_counts_decoded_bytes(void **state)
{
	char sql[1024], value[600] = "";
	size_t i;

	for (i = 0; i < 127; i++)
		strcat(value, "%41");          /* 381 bytes written, 127 decoded */
	snprintf(sql, sizeof sql, "SELECT 1 /*ai_model='%s'*/", value);
	parse_ok(sql);
	assert_int_equal(strlen(tags.model), 127);
	strcat(value, "%41");
	snprintf(sql, sizeof sql, "SELECT 1 /*ai_model='%s'*/", value);
	parse_invalid(sql, "value too long for tag \"ai_model\" (limit 127 bytes)");
}

static void test_bad_percent_encoding_is_invalid(void **state)
{
	parse_invalid("SELECT 1 /*ai_user='a%zz'*/", "invalid value for tag \"ai_user\": \"a%zz\"");
	parse_invalid("SELECT 1 /*ai_user='a%4'*/", "invalid value for tag \"ai_user\": \"a%4\"");
	parse_invalid("SELECT 1 /*ai_user='a%'*/", "invalid value for tag \"ai_user\": \"a%\"");
	parse_invalid("SELECT 1 /*ai_tokens_in='1%'*/", "invalid value for tag \"ai_tokens_in\": \"1%\"");
}

static void test_nul_or_invalid_utf8_in_text_is_invalid(void **state)
{
	parse_invalid("SELECT 1 /*ai_user='a%00b'*/", "invalid value for tag \"ai_user\": \"a%00b\"");
	parse_invalid("SELECT 1 /*ai_user='%FF'*/", "invalid value for tag \"ai_user\": \"%FF\"");
	parse_invalid("SELECT 1 /*ai_user='%C0%AF'*/", "invalid value for tag \"ai_user\": \"%C0%AF\"");
	parse_invalid("SELECT 1 /*ai_user='%ED%A0%80'*/", "invalid value for tag \"ai_user\": \"%ED%A0%80\"");
	/* a raw invalid byte is shown escaped */
	parse_invalid("SELECT 1 /*ai_model='a\xff'*/", "invalid value for tag \"ai_model\": \"a\\xff\"");
}

static void test_control_bytes_in_shown_value_are_escaped(void **state)
{
	parse_invalid("SELECT 1 /*ai_tokens_in='1\x01\x7f'*/",
	              "invalid value for tag \"ai_tokens_in\": \"1\\x01\\x7f\"");
	parse_invalid("SELECT 1 /*ai_tokens_in='\xc3\xa9'*/",
	              "invalid value for tag \"ai_tokens_in\": \"\xc3\xa9\"");
}

static void test_long_bad_value_is_cut_in_the_message(void **state)
{
	char sql[512], value[300];

	memset(value, 'x', 200);
	value[200] = '\0';
	snprintf(sql, sizeof sql, "SELECT 1 /*ai_tokens_in='%s'*/", value);
	parse_invalid(sql, "invalid value for tag \"ai_tokens_in\": "
	                   "\"xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx...\"");
	assert_true(strlen(err) < TAGS_ERRBUF_SIZE);
}

static void test_first_bad_value_is_reported(void **state)
{
	parse_invalid("SELECT 1 /*ai_user='alice',ai_tokens_in='ten',ai_ttl='0'*/",
	              "invalid value for tag \"ai_tokens_in\": \"ten\"");
}

static void test_bad_value_then_good_repeat_is_still_invalid(void **state)
{
	parse_invalid("SELECT 1 /*ai_tokens_in='ten',ai_tokens_in='10'*/",
	              "invalid value for tag \"ai_tokens_in\": \"ten\"");
}

static void test_bad_value_in_earlier_comment_is_an_error(void **state)
{
	parse_invalid("SELECT /*ai_tokens_in='ten'*/ 1 /*ai_tokens_in='10'*/",
	              "invalid value for tag \"ai_tokens_in\": \"ten\"");
}

static void test_error_message_fits_small_or_missing_errbuf(void **state)
{
	const char *sql = "SELECT 1 /*ai_tokens_in='ten'*/";
	char small[8];

	assert_int_equal(tags_parse(sql, strlen(sql), &tags, small, sizeof small), TAGS_INVALID);
	assert_string_equal(small, "invalid");
	assert_int_equal(tags_parse(sql, strlen(sql), &tags, NULL, 0), TAGS_INVALID);
	assert_int_equal(tags_parse(sql, strlen(sql), &tags, small, 0), TAGS_INVALID);
}

/* ---- bounds and offsets ---- */

static void test_text_need_not_be_nul_terminated(void **state)
{
	const char *sql = "SELECT 1 /*ai_user='alice'*/";
	size_t len = strlen(sql);
	char *buf = malloc(len + 15);

	assert_non_null(buf);
	memcpy(buf, sql, len);
	memcpy(buf + len, "garbage*/'\xff/*x", 15);   /* no NUL after len */
	assert_int_equal(tags_parse(buf, len, &tags, err, sizeof err), TAGS_OK);
	assert_string_equal(tags.user, "alice");
	assert_int_equal(tags.comment_end, len);

	/* the closer just past len does not count */
	assert_int_equal(tags_parse(buf, len - 1, &tags, err, sizeof err), TAGS_NONE);
	assert_no_tags();

	/* a closer after len that would end an open comment does not count either */
	memcpy(buf, "SELECT 1 /*ai_user='alice'  ", len);
	memcpy(buf + len, "*/", 2);
	assert_int_equal(tags_parse(buf, len, &tags, err, sizeof err), TAGS_NONE);
	free(buf);
}

static void test_every_truncation_stays_in_bounds(void **state)
{
	/* each prefix in an exactly sized heap block: ASan catches any read past len */
	const char *sql = "SELECT '/*' /*ai_user='o\\'b%40c',ai_tokens_in=12 ,ai_cache='lookup',"
	                  "traceparent='" TRACEPARENT "',ai_ttl='60'*/";
	size_t len = strlen(sql), n;

	for (n = 0; n <= len; n++) {
		char *buf = malloc(n ? n : 1);
		enum tags_result r;

		assert_non_null(buf);
		memcpy(buf, sql, n);
		r = tags_parse(buf, n, &tags, err, sizeof err);
		assert_int_equal(r, n == len ? TAGS_OK : TAGS_NONE);
		free(buf);
	}
	assert_string_equal(tags.user, "o'b@c");
}

static void test_comment_offsets_cut_out_the_tag_comment(void **state)
{
	const char *sql = "SELECT answer FROM llm_cache WHERE k = $1 /*ai_cache='lookup',ai_user='alice'*/ FOR SHARE";
	char key[256];

	parse_ok(sql);
	assert_int_equal(tags.comment_start, strlen("SELECT answer FROM llm_cache WHERE k = $1 "));
	assert_memory_equal(sql + tags.comment_start, "/*", 2);
	assert_memory_equal(sql + tags.comment_end - 2, "*/", 2);
	snprintf(key, sizeof key, "%.*s%s", (int) tags.comment_start, sql, sql + tags.comment_end);
	assert_string_equal(key, "SELECT answer FROM llm_cache WHERE k = $1  FOR SHARE");
}

static void test_out_is_reset_between_calls(void **state)
{
	parse_ok("SELECT 1 /*ai_user='alice',ai_tokens_in='5',ai_cache='refresh',traceparent='" TRACEPARENT "'*/");
	parse_ok("SELECT 1 /*ai_model='m'*/");
	assert_string_equal(tags.user, "");
	assert_int_equal(tags.tokens_in, -1);
	assert_int_equal(tags.cache, AI_CACHE_NONE);
	assert_string_equal(tags.traceparent, "");
	parse_ok("SELECT 1 /*ai_user='alice'*/");
	parse_none("SELECT 1");
}

static void test_random_bytes_never_crash(void **state)
{
	static const char alphabet[] = "/*'\\,= %+aiu_serxt0129AFf\x00\xff\xc3\xa9";
	unsigned seed = 12345;
	char buf[96];
	int round;

	for (round = 0; round < 200000; round++) {
		size_t n = (size_t) (round % (int) sizeof buf), i;
		enum tags_result r;

		for (i = 0; i < n; i++) {
			seed = seed * 1103515245u + 12345u;
			buf[i] = alphabet[(seed >> 16) % (sizeof alphabet - 1)];
		}
		r = tags_parse(buf, n, &tags, err, sizeof err);
		assert_true(r == TAGS_NONE || r == TAGS_OK || r == TAGS_INVALID);
		if (r == TAGS_OK) {
			assert_true(tags.comment_start + 4 <= tags.comment_end);
			assert_true(tags.comment_end <= n);
		}
	}
}

/* Every field tags_parse sets, as tags_parse_memo must reproduce it. */
static void assert_same_tags(const struct ai_tags *a, const struct ai_tags *b)
{
	assert_int_equal(a->present, b->present);
	assert_int_equal(a->has_ai_key, b->has_ai_key);
	assert_int_equal(a->tokens_in, b->tokens_in);
	assert_int_equal(a->tokens_out, b->tokens_out);
	assert_int_equal(a->latency_ms, b->latency_ms);
	assert_int_equal(a->cache, b->cache);
	assert_int_equal(a->ttl_s, b->ttl_s);
	assert_int_equal(a->tokens_estimate, b->tokens_estimate);
	assert_true(a->cost_estimate_cents == b->cost_estimate_cents);
	assert_int_equal(a->comment_start, b->comment_start);
	assert_int_equal(a->comment_end, b->comment_end);
	assert_string_equal(a->user, b->user);
	assert_string_equal(a->model, b->model);
	assert_string_equal(a->conversation, b->conversation);
	assert_string_equal(a->traceparent, b->traceparent);
	/* the lengths the parser hands on, as strlen would measure them */
	assert_int_equal(a->user_len, strlen(a->user));
	assert_int_equal(a->model_len, strlen(a->model));
	assert_int_equal(a->conversation_len, strlen(a->conversation));
	assert_int_equal(a->traceparent_len, strlen(a->traceparent));
	assert_int_equal(b->user_len, strlen(b->user));
}

/*
 * The memo gives what tags_parse gives, for the same comment around other
 * text (offsets moved), for texts with two comments (the later one wins,
 * never memoised), for a comment without our keys, and for invalid ones.
 */
static void test_memo_gives_what_parse_gives(void **state)
{
	static const char *const texts[] = {
		"SELECT 1 /*ai_user='u',ai_model='m',ai_tokens_in='120',ai_tokens_out='30'*/",
		"SELECT 12345 /*ai_user='u',ai_model='m',ai_tokens_in='120',ai_tokens_out='30'*/",
		"/*ai_user='u',ai_model='m',ai_tokens_in='120',ai_tokens_out='30'*/ SELECT 7",
		"SELECT 1 /*ai_user='u',ai_model='m',ai_tokens_in='120',ai_tokens_out='30'*/ /*ai_user='v'*/",
		"SELECT 1 /*ai_user='u',ai_model='m',ai_tokens_in='120',ai_tokens_out='30'*/",
		"SELECT 1 /*ai_user='v'*/ /*ai_user='u',ai_model='m',ai_tokens_in='120',ai_tokens_out='30'*/",
		"SELECT 2 /*ai_user='u',ai_model='m',ai_tokens_in='120',ai_tokens_out='30'*/",
		"SELECT 1 /* plain words */",
		"SELECT 2 /* plain words */",
		"SELECT 3 /*ai_tokens_in='ten'*/",
		"SELECT 4 /*ai_tokens_in='ten'*/",
		"SELECT 5 /*ai_cache='lookup',traceparent='" TRACEPARENT "',ai_conversation='c'*/",
		"SELECT 6 /*ai_cache='lookup',traceparent='" TRACEPARENT "',ai_conversation='c'*/",
		"SELECT 7",
		"SELECT 8 /*ai_cache='lookup',traceparent='" TRACEPARENT "',ai_conversation='c'*/",
		"SELECT 9 /*ai_user='u',ai_model='m'",
		"SELECT '/*' /*ai_user='w'*/",
		"SELECT 10 /*ai_user='w'*/",
	};
	struct tags_memo *memo = calloc(1, sizeof(*memo));
	struct ai_tags want, got;
	char want_err[TAGS_ERRBUF_SIZE], got_err[TAGS_ERRBUF_SIZE];

	(void) state;
	assert_non_null(memo);
	for (size_t i = 0; i < sizeof texts / sizeof texts[0]; i++) {
		size_t n = strlen(texts[i]);
		enum tags_result rw = tags_parse(texts[i], n, &want, want_err, sizeof want_err);
		enum tags_result rg = tags_parse_memo(memo, texts[i], n, &got, got_err, sizeof got_err);

		assert_int_equal(rg, rw);
		if (rw == TAGS_INVALID) {
			assert_string_equal(got_err, want_err);
			continue;
		}
		assert_same_tags(&got, &want);
	}
	free(memo);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_statement_without_comment_has_no_tags),
		cmocka_unit_test(test_ai_user_is_read_and_attributes_the_statement),
		cmocka_unit_test(test_ai_model_and_conversation_are_read),
		cmocka_unit_test(test_token_counts_and_latency_are_read),
		cmocka_unit_test(test_zero_and_leading_zeros_and_the_maximum_are_accepted),
		cmocka_unit_test(test_ai_cache_lookup_and_refresh_are_read_in_any_case),
		cmocka_unit_test(test_ai_ttl_is_read_within_one_second_to_one_year),
		cmocka_unit_test(test_traceparent_alone_is_present_but_not_attributed),
		cmocka_unit_test(test_all_keys_together),
		cmocka_unit_test(test_url_encoded_values_are_decoded),
		cmocka_unit_test(test_plus_is_a_space),
		cmocka_unit_test(test_utf8_values_are_kept),
		cmocka_unit_test(test_backslash_escaped_quotes_inside_quotes),
		cmocka_unit_test(test_escaped_quote_before_closing_quote_does_not_close),
		cmocka_unit_test(test_plain_values_run_to_the_next_comma),
		cmocka_unit_test(test_whitespace_around_keys_equals_and_commas_is_allowed),
		cmocka_unit_test(test_url_encoded_keys_are_decoded),
		cmocka_unit_test(test_keys_are_case_sensitive),
		cmocka_unit_test(test_repeated_key_last_one_wins),
		cmocka_unit_test(test_empty_items_are_skipped),
		cmocka_unit_test(test_keys_merge_across_comments_last_value_wins),
		cmocka_unit_test(test_knex_comment_first_then_opentelemetry_traceparent),
		cmocka_unit_test(test_estimate_tags),
		cmocka_unit_test(test_plain_comment_after_the_tags_does_not_hide_them),
		cmocka_unit_test(test_comment_may_be_anywhere),
		cmocka_unit_test(test_comment_in_string_literal_is_not_special),
		cmocka_unit_test(test_stray_opener_in_literal_before_tags_does_not_hide_them),
		cmocka_unit_test(test_nested_comment_innermost_pair_counts),
		cmocka_unit_test(test_unterminated_comment_is_no_comment),
		cmocka_unit_test(test_star_slash_outside_a_comment_is_text),
		cmocka_unit_test(test_empty_comment_has_no_tags),
		cmocka_unit_test(test_plain_english_comment_is_no_tag_comment),
		cmocka_unit_test(test_malformed_comment_naming_ai_key_is_refused),
		cmocka_unit_test(test_malformed_comment_without_ai_key_is_ignored),
		cmocka_unit_test(test_sqlcommenter_spec_example_gives_traceparent_only),
		cmocka_unit_test(test_sqlcommenter_framework_keys_alone_are_no_tags),
		cmocka_unit_test(test_sqlcommenter_keys_mixed_with_ai_keys),
		cmocka_unit_test(test_bad_encoding_in_other_keys_is_ignored),
		cmocka_unit_test(test_unknown_ai_key_is_ignored_and_does_not_attribute),
		cmocka_unit_test(test_malformed_traceparent_is_ignored),
		cmocka_unit_test(test_url_encoded_traceparent_is_decoded),
		cmocka_unit_test(test_non_numeric_count_is_invalid),
		cmocka_unit_test(test_signed_or_spaced_count_is_invalid),
		cmocka_unit_test(test_empty_values_are_invalid),
		cmocka_unit_test(test_count_above_its_bound_is_out_of_range),
		cmocka_unit_test(test_ttl_outside_one_second_to_one_year_is_out_of_range),
		cmocka_unit_test(test_unknown_cache_mode_is_invalid),
		cmocka_unit_test(test_text_value_over_127_bytes_is_too_long),
		cmocka_unit_test(test_limit_counts_decoded_bytes),
		cmocka_unit_test(test_bad_percent_encoding_is_invalid),
		cmocka_unit_test(test_nul_or_invalid_utf8_in_text_is_invalid),
		cmocka_unit_test(test_control_bytes_in_shown_value_are_escaped),
		cmocka_unit_test(test_long_bad_value_is_cut_in_the_message),
		cmocka_unit_test(test_first_bad_value_is_reported),
		cmocka_unit_test(test_bad_value_then_good_repeat_is_still_invalid),
		cmocka_unit_test(test_bad_value_in_earlier_comment_is_an_error),
		cmocka_unit_test(test_error_message_fits_small_or_missing_errbuf),
		cmocka_unit_test(test_text_need_not_be_nul_terminated),
		cmocka_unit_test(test_every_truncation_stays_in_bounds),
		cmocka_unit_test(test_comment_offsets_cut_out_the_tag_comment),
		cmocka_unit_test(test_out_is_reset_between_calls),
		cmocka_unit_test(test_random_bytes_never_crash),
		cmocka_unit_test(test_text_is_clean_accepts_utf8_only),
		cmocka_unit_test(test_memo_gives_what_parse_gives),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
