/* SPDX-License-Identifier: PostgreSQL */
/*
 * test_settings_scan.c - which statement texts may change session settings
 * (the completion cache's rule, docs/ai-middleware.md "Completion cache"):
 * every way a client can change them is caught, however it is written, and
 * ordinary statements that merely contain the words are not.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "ai/settings_scan.h"

static void expect(const char *sql, enum settings_effect want)
{
	enum settings_effect got = settings_effect(sql, strlen(sql));
	if (got != want)
		fail_msg("<%s>: expected %d, got %d", sql, (int)want, (int)got);
	for (int path = SETTINGS_SCAN_BYTES; path <= SETTINGS_SCAN_AVX2; path++) {
		got = settings_effect_by(sql, strlen(sql), (enum settings_scan_path)path);
		if (got != want)
			fail_msg("<%s>: path %d: expected %d, got %d", sql, path, (int)want, (int)got);
	}
}

static void test_statements_that_change_settings_are_unknown(void **state)
{
	(void)state;
	static const char *const changing[] = {
		"SET search_path = tenant_b",
		"set search_path to tenant_b;",
		"SET app.tenant = 'b'",
		"SET LOCAL app.tenant = 'b'",
		"SET SESSION app.tenant TO 'b'",
		"SET ROLE reader",
		"SET SESSION AUTHORIZATION reader",
		"SET search_path TO DEFAULT",
		"SET TIME ZONE 'UTC'",                        /* reported, but not the name = value form */
		"RESET search_path",
		"RESET ALL",
		"RESET ROLE",
		"DISCARD ALL",
		"SELECT set_config('app.tenant', 'b', false)",
		"select pg_catalog.SET_CONFIG('x','y',false)",
		"SELECT \"set_config\"('x','y',false)",
		"WITH t AS (SELECT set_config('x','y',false)) SELECT 1",
		"SELECT 1; SET search_path = b",
		"SELECT 1;SET search_path = b",
		"BEGIN; SET LOCAL app.tenant = 'b'; SELECT 1; COMMIT",
		"/* leading */ SET search_path = b",
		"/*a*/SET search_path = b",
		"-- a comment ending in a word\nSET search_path = b",
		"SELECT 1 -- x)\nSET search_path = b",
		"SELECT '--' \nRESET ALL",
		"DO $$BEGIN PERFORM 1; END$$",
		"DO $$BEGIN SET search_path = b; END$$",
		"CALL tenant.switch('b')",
		"$$SET search_path=b$$",
		"SET TimeZone = 'UTC'; SET search_path = b",  /* a reported one first does not hide the rest */
		"SET TimeZone = 'UTC' /* unterminated",
		"CREATE TEMP TABLE ai_cache_t (k int)",
		"create temporary view v as select 1",
		"SELECT * INTO TEMP t FROM x",
		"CREATE TABLE pg_temp.t (k int)",
		"PREPARE p AS SELECT set_config('x', 'y', false)",
	};
	for (size_t i = 0; i < sizeof(changing) / sizeof(changing[0]); i++)
		expect(changing[i], SETTINGS_UNKNOWN);
}

static void test_one_set_of_a_reported_parameter_is_reported(void **state)
{
	(void)state;
	expect("SET TimeZone TO 'UTC'", SETTINGS_REPORTED);
	expect("set timezone = 'Asia/Tokyo';", SETTINGS_REPORTED);
	expect("SET SESSION DateStyle = 'SQL, DMY'", SETTINGS_REPORTED);
	expect("SET DateStyle = ISO, MDY", SETTINGS_REPORTED);
	expect("SET \"IntervalStyle\" TO iso_8601", SETTINGS_REPORTED);
	expect("SET client_encoding TO 'LATIN1' /*traceparent='00-1-2-01'*/", SETTINGS_REPORTED);
	expect("SET application_name = 'it''s' -- trailing", SETTINGS_REPORTED);
	expect("SET standard_conforming_strings = on", SETTINGS_REPORTED);
	expect("SET TimeZone = -7", SETTINGS_REPORTED);
	expect("SET TimeZone TO DEFAULT", SETTINGS_REPORTED);
	/* not exactly that: unknown */
	expect("SET LOCAL TimeZone = 'UTC'", SETTINGS_UNKNOWN);
	expect("SET TimeZone = E'UTC'", SETTINGS_UNKNOWN);
	expect("SET TimeZone = 'a\\'; SET search_path = b; --'", SETTINGS_UNKNOWN);
	expect("SET TimeZone = $$UTC$$", SETTINGS_UNKNOWN);
	expect("SET TimeZone.x = 'UTC'", SETTINGS_UNKNOWN);
}

static void test_ordinary_statements_change_nothing(void **state)
{
	(void)state;
	static const char *const plain[] = {
		"SELECT answer FROM llm_cache WHERE k = $1 /*ai_cache='lookup'*/",
		"UPDATE t SET a = 1 WHERE k = 2",
		"update \"T\" set a = 1",
		"UPDATE t AS x\nSET a = 1",
		"INSERT INTO t VALUES (1) ON CONFLICT (k) DO UPDATE SET a = 1",
		"INSERT INTO t VALUES (1) ON CONFLICT DO NOTHING",
		"ALTER TABLE t ALTER COLUMN c SET DEFAULT 0",
		"SELECT reset_at, settings, offset_set FROM t",
		"SELECT current_setting('search_path')",
		"SELECT 'how to reset my password' AS q",
		"SELECT temp FROM weather",
		"CREATE TABLE t (k int)",
		"",
	};
	for (size_t i = 0; i < sizeof(plain) / sizeof(plain[0]); i++)
		expect(plain[i], SETTINGS_NONE);
}

/* The first word decides whether the SET lexer runs; keywords are matched by length, in any case. */
static void test_first_word_and_keyword_lengths(void **state)
{
	(void)state;
	expect("  \n\tSET TimeZone = 'UTC'", SETTINGS_REPORTED);
	expect("SET/**/TimeZone = 'UTC'", SETTINGS_REPORTED);
	expect("sEt TimeZone = 'UTC'", SETTINGS_REPORTED);
	expect("SETtimezone = 'UTC'", SETTINGS_NONE);           /* one word, not SET */
	expect("SELECT 1", SETTINGS_NONE);
	expect("SE", SETTINGS_NONE);
	expect("SET", SETTINGS_UNKNOWN);
	expect("Do $$ BEGIN END $$", SETTINGS_UNKNOWN);         /* 2 letters */
	expect("cAlL p()", SETTINGS_UNKNOWN);                   /* 4 */
	expect("ReSeT ALL", SETTINGS_UNKNOWN);                  /* 5 */
	expect("DISCARD all", SETTINGS_UNKNOWN);                /* 7 */
	expect("select SET_CONFIG('a', 'b', false)", SETTINGS_UNKNOWN);  /* 10 */
	expect("CREATE TEMP TABLE x (k int)", SETTINGS_UNKNOWN);          /* 6 and 4 */
	expect("create temporary table x (k int)", SETTINGS_UNKNOWN);     /* 9 */
	expect("SELECT 1 INTO Pg_Temp.x", SETTINGS_UNKNOWN);              /* 4 and 7 */
	expect("SELECT docall, dox, tempo, creates, discards FROM t", SETTINGS_NONE);
}

static void test_text_need_not_be_nul_terminated(void **state)
{
	(void)state;
	const char text[] = "SELECT 1; SETx";
	assert_int_equal(settings_effect(text, sizeof(text) - 2), SETTINGS_UNKNOWN);   /* "...; SET" */
	assert_int_equal(settings_effect("SET TimeZone = 'UTC'", 19), SETTINGS_UNKNOWN); /* unterminated string */
	assert_int_equal(settings_effect(NULL, 0), SETTINGS_NONE);
}

/* The memo answers as settings_effect does: texts of one length share a slot, a long text is never kept. */
static void test_memo_answers_as_the_scan(void **state)
{
	static struct settings_memo memo;   /* zeroed: empty */
	const char *texts[] = {
		"SELECT abalance FROM pgbench_accounts WHERE aid = $1",
		"SET search_path = other_schema, public, pg_catalog;;",   /* same length, other answer */
		"SELECT abalance FROM pgbench_accounts WHERE aid = $1",
		"SET application_name = 'x'",
		"select set_config('a.b', 'c', false)",
	};
	(void) state;
	assert_int_equal(strlen(texts[0]), strlen(texts[1]));
	for (int round = 0; round < 2; round++)
		for (size_t i = 0; i < sizeof(texts) / sizeof(texts[0]); i++)
			assert_int_equal(settings_effect_memo(&memo, texts[i], strlen(texts[i])),
			                 settings_effect(texts[i], strlen(texts[i])));
	char long_text[SETTINGS_MEMO_TEXT + 20];
	memset(long_text, 'x', sizeof(long_text));
	memcpy(long_text, "SET a = 1; -- ", 14);
	assert_int_equal(settings_effect_memo(&memo, long_text, sizeof(long_text)), SETTINGS_UNKNOWN);
	memcpy(long_text, "SELECT 1; --  ", 14);
	assert_int_equal(settings_effect_memo(&memo, long_text, sizeof(long_text)), SETTINGS_NONE);
}

/*
 * settings_effect's block paths (16 bytes at a time with SSE2, 32 with AVX2)
 * answer as the byte loop does: keywords at and across every 16-byte boundary, after digits or '$'
 * ("1set" begins a word, "x1set" does not), next to multibyte characters,
 * and random texts made of keywords, pieces of them and punctuation.
 */
static void test_block_scan_answers_as_the_byte_loop(void **state)
{
	(void)state;
	static const char *const pieces[] = {
		"set", "SET", "do", "call", "into", "temp", "reset", "create", "discard", "pg_temp",
		"temporary", "set_config", "Set_Config", "x", "x1", "1", "$1", "$", "_", "\xc3\xa9", "\xff",
		" ", "  ", "\n", "--", "/*", "*/", "(", ")", "\"", "'", ";", ",", ".", "=", "update t",
		"pgbench_accounts", "selectsetx", "ts", "dd", "setsetset", "abcdefghijk", "t1", "c$",
	};
	const size_t n_pieces = sizeof(pieces) / sizeof(pieces[0]);
	char text[200];
	/* one keyword at every offset from 0 to 40, after filler of each kind */
	static const char *const fillers[] = { "a", "1", " ", "$", "_", "\xc3" };
	static const char *const words[] = { "set", "do", "set_config", "temporary", "create temp", "x1set", "1set" };
	for (size_t f = 0; f < sizeof(fillers) / sizeof(fillers[0]); f++)
		for (size_t w = 0; w < sizeof(words) / sizeof(words[0]); w++)
			for (size_t at = 0; at <= 40; at++) {
				size_t len = 0;
				for (size_t i = 0; i < at; i++)
					text[len++] = fillers[f][0];
				size_t wl = strlen(words[w]);
				memcpy(text + len, words[w], wl);
				len += wl;
				for (size_t tail = 0; tail < 3; tail++) {
					for (int path = SETTINGS_SCAN_SSE2; path <= SETTINGS_SCAN_AVX2; path++)
						assert_int_equal(settings_effect_by(text, len + tail, (enum settings_scan_path)path),
						                 settings_effect_by(text, len + tail, SETTINGS_SCAN_BYTES));
					text[len + tail] = tail == 0 ? 'x' : ' ';
				}
			}
	unsigned seed = 12345;
	for (int round = 0; round < 20000; round++) {
		size_t len = 0;
		for (;;) {
			seed = seed * 1103515245u + 12345u;
			const char *piece = pieces[(seed >> 8) % n_pieces];
			size_t pl = strlen(piece);
			if (len + pl > 120)
				break;
			memcpy(text + len, piece, pl);
			len += pl;
		}
		for (size_t cut = len; cut + 8 > len && cut > 0; cut--) {
			enum settings_effect b = settings_effect_by(text, cut, SETTINGS_SCAN_BYTES);
			for (int path = SETTINGS_SCAN_SSE2; path <= SETTINGS_SCAN_AVX2; path++) {
				enum settings_effect a = settings_effect_by(text, cut, (enum settings_scan_path)path);
				if (a != b)
					fail_msg("<%.*s>: path %d: %d, bytewise %d", (int)cut, text, path, (int)a, (int)b);
			}
		}
	}
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_statements_that_change_settings_are_unknown),
		cmocka_unit_test(test_one_set_of_a_reported_parameter_is_reported),
		cmocka_unit_test(test_ordinary_statements_change_nothing),
		cmocka_unit_test(test_first_word_and_keyword_lengths),
		cmocka_unit_test(test_text_need_not_be_nul_terminated),
		cmocka_unit_test(test_memo_answers_as_the_scan),
		cmocka_unit_test(test_block_scan_answers_as_the_byte_loop),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
