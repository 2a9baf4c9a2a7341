/* SPDX-License-Identifier: PostgreSQL */
/*
 * test_sqllex.c - the lexical rules of PostgreSQL's scan.l that pgsluice
 * recognises statements with (src/sqllex.h): blanks and comments,
 * identifiers, keywords, strings.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "sqllex.h"

static struct sqllex lex(const char *s)
{
	struct sqllex lx;
	sqllex_init(&lx, s, strlen(s));
	return lx;
}

static void test_blanks_and_comments(void **state)
{
	(void)state;
	struct sqllex lx = lex(" \t\n\r\f\v-- to the end\n/* a /* nested */ one */x");
	sqllex_skip_blanks(&lx);
	assert_false(lx.bad);
	assert_int_equal(*lx.p, 'x');
	/* "--" ends at \r too (scan.l non_newline) */
	lx = lex("-- c\rx");
	sqllex_skip_blanks(&lx);
	assert_int_equal(*lx.p, 'x');
	/* an unterminated block comment */
	lx = lex("/* a /* b */ x");
	sqllex_skip_blanks(&lx);
	assert_true(lx.bad);
	assert_true(lx.p == lx.end);
	assert_false(sqllex_at_end(&lx));
	/* a lone '/' or '-' is no comment */
	lx = lex("  /x");
	sqllex_skip_blanks(&lx);
	assert_int_equal(*lx.p, '/');
	lx = lex(" ; -- done");
	assert_true(sqllex_at_end(&lx));
	lx = lex(" ; ;");
	assert_false(sqllex_at_end(&lx));
}

static void test_identifiers(void **state)
{
	(void)state;
	char out[8];
	bool quoted;
	struct sqllex lx = lex("  Foo_$1 rest");
	assert_int_equal(sqllex_ident(&lx, out, sizeof(out), &quoted), 6);
	assert_string_equal(out, "foo_$1");
	assert_false(quoted);
	lx = lex("\"Fo\"\"o\"x");
	assert_int_equal(sqllex_ident(&lx, out, sizeof(out), &quoted), 4);
	assert_string_equal(out, "Fo\"o");
	assert_true(quoted);
	assert_int_equal(*lx.p, 'x');
	/* cut: the whole length comes back, out holds what fits */
	lx = lex("abcdefghij;");
	assert_int_equal(sqllex_ident(&lx, out, sizeof(out), &quoted), 10);
	assert_string_equal(out, "abcdefg");
	assert_int_equal(*lx.p, ';');
	/* none: a digit first, "", unterminated */
	lx = lex("1abc");
	assert_int_equal(sqllex_ident(&lx, out, sizeof(out), &quoted), 0);
	lx = lex("\"\"");
	assert_int_equal(sqllex_ident(&lx, out, sizeof(out), &quoted), 0);
	lx = lex("\"abc");
	assert_int_equal(sqllex_ident(&lx, out, sizeof(out), &quoted), 0);
	assert_string_equal(out, "");    /* no half-copied name left without its NUL (fuzz_sessvars) */
	lx = lex("\"abcdefghijk");
	assert_int_equal(sqllex_ident(&lx, out, sizeof(out), &quoted), 0);
	assert_string_equal(out, "");
	/* bytes >= 0x80 are identifier bytes, not folded */
	lx = lex("\xc3\x89t\xc3\xa9");
	assert_int_equal(sqllex_ident(&lx, out, sizeof(out), &quoted), 5);
	assert_string_equal(out, "\xc3\x89t\xc3\xa9");
	assert_true(sqllex_ident_start('_'));
	assert_false(sqllex_ident_start('$'));
	assert_true(sqllex_ident_cont('$'));
	assert_false(sqllex_ident_cont('-'));
}

static void test_keywords_and_strings(void **state)
{
	(void)state;
	struct sqllex lx = lex(" /* c */ LiStEn ch");
	assert_false(sqllex_keyword(&lx, "list"));
	assert_true(sqllex_keyword(&lx, "listen"));
	assert_true(sqllex_peek(&lx, 'c'));
	lx = lex("listen_x");
	assert_false(sqllex_keyword(&lx, "listen"));
	lx = lex("\"listen\"");
	assert_false(sqllex_keyword(&lx, "listen"));
	char *s = NULL;
	lx = lex(" 'it''s' x");
	assert_true(sqllex_string(&lx, &s));
	assert_string_equal(s, "it's");
	free(s);
	assert_true(sqllex_peek(&lx, 'x'));
	lx = lex("'a\\b'");
	assert_false(sqllex_string(&lx, NULL));
	lx = lex("'open");
	assert_false(sqllex_string(&lx, NULL));
	assert_true(sqllex_word_is("SET", 3, "set"));
	assert_false(sqllex_word_is("SETS", 4, "set"));
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_blanks_and_comments),
		cmocka_unit_test(test_identifiers),
		cmocka_unit_test(test_keywords_and_strings),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
