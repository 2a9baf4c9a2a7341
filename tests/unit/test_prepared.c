/* SPDX-License-Identifier: PostgreSQL */
/* test_prepared.c - how pgsluice reads SQL DEALLOCATE (prepared_parse_deallocate):
 * the statement names a client frees, as PostgreSQL's scanner reads them. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <string.h>

#include "prepared.h"

static enum dealloc_kind parse(const char *text, char *name)
{
	name[0] = '\0';
	return prepared_parse_deallocate(text, strlen(text) + 1, name, 256);   /* with its NUL, as in a Query */
}

static void test_unquoted_names_fold_to_lower_case(void **state)
{
	(void)state;
	char name[256];
	assert_int_equal(parse("DEALLOCATE pdo_stmt_00000001", name), DEALLOC_NAME);
	assert_string_equal(name, "pdo_stmt_00000001");
	assert_int_equal(parse("  deallocate   ABC ;  ", name), DEALLOC_NAME);
	assert_string_equal(name, "abc");
	assert_int_equal(parse("DEALLOCATE PREPARE a1$b", name), DEALLOC_NAME);
	assert_string_equal(name, "a1$b");
	assert_int_equal(parse("Deallocate\n\tPrepare\n_pg3_12", name), DEALLOC_NAME);
	assert_string_equal(name, "_pg3_12");
}

static void test_quoted_names_keep_case_and_doubled_quotes(void **state)
{
	(void)state;
	char name[256];
	assert_int_equal(parse("DEALLOCATE \"Mixed Case\"", name), DEALLOC_NAME);
	assert_string_equal(name, "Mixed Case");
	assert_int_equal(parse("DEALLOCATE PREPARE \"q\"\"x\";", name), DEALLOC_NAME);
	assert_string_equal(name, "q\"x");
	assert_int_equal(parse("DEALLOCATE \"all\"", name), DEALLOC_NAME);    /* a name, not the keyword */
	assert_string_equal(name, "all");
	assert_int_equal(parse("DEALLOCATE \"prepare\"", name), DEALLOC_NAME);
	assert_string_equal(name, "prepare");
}

static void test_all_forms(void **state)
{
	(void)state;
	char name[256];
	assert_int_equal(parse("DEALLOCATE ALL", name), DEALLOC_ALL);
	assert_int_equal(parse("deallocate prepare all;", name), DEALLOC_ALL);
	assert_int_equal(parse("DEALLOCATE allx", name), DEALLOC_NAME);
	assert_string_equal(name, "allx");
	/* PREPARE alone is the name "prepare", as PostgreSQL's grammar reads it */
	assert_int_equal(parse("DEALLOCATE prepare", name), DEALLOC_NAME);
	assert_string_equal(name, "prepare");
	assert_int_equal(parse("DEALLOCATE PREPARE prepare", name), DEALLOC_NAME);
	assert_string_equal(name, "prepare");
}

static void test_what_is_left_to_the_server(void **state)
{
	(void)state;
	char name[256];
	const char *none[] = {
		"DEALLOCATE", "DEALLOCATE \"\"", "DEALLOCATE \"open", "DEALLOCATE a b", "DEALLOCATE a; DEALLOCATE b",
		"DEALLOCATE /* c */ a", "DEALLOCATE 1a", "DEALLOCATEa", "select 1", "DEALLOCATE a;;",
		"DEALLOCATE aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa",  /* 64: truncated by PostgreSQL */
	};
	for (size_t i = 0; i < sizeof(none) / sizeof(none[0]); i++)
		assert_int_equal(parse(none[i], name), DEALLOC_NONE);
	/* the text ends at its first NUL, as PostgreSQL reads a Query */
	assert_int_equal(prepared_parse_deallocate("DEALLOCATE \"a\0b\"", 15, name, 256), DEALLOC_NONE);
	assert_int_equal(prepared_parse_deallocate("DEALLOCATE a\0 b", 15, name, 256), DEALLOC_NAME);
	assert_string_equal(name, "a");
	/* a name longer than the caller's buffer is not cut */
	assert_int_equal(prepared_parse_deallocate("DEALLOCATE abcdef", 17, name, 4), DEALLOC_NONE);
}

/* Random texts around the grammar's pieces: never a read or write out of bounds, names always ended. */
static void test_random_texts(void **state)
{
	(void)state;
	static const char *const pieces[] = { "DEALLOCATE", "deallocate", "PREPARE", "ALL", " ", "\t", ";", "\"",
	                                      "\"\"", "x", "X1", "$", "_", "\xc3\xa9", "/*", "--", "\0" };
	unsigned seed = 17;
	for (int round = 0; round < 20000; round++) {
		char text[96];
		size_t len = 0;
		int n = (int)(seed % 7) + 1;
		for (int i = 0; i < n; i++) {
			seed = seed * 1103515245u + 12345u;
			const char *p = pieces[(seed >> 8) % (sizeof(pieces) / sizeof(pieces[0]))];
			size_t plen = *p ? strlen(p) : 1;
			if (len + plen > sizeof(text))
				break;
			memcpy(text + len, p, plen);
			len += plen;
		}
		size_t size = 1 + (seed >> 16) % 12;
		char *name = test_malloc(size);
		enum dealloc_kind k = prepared_parse_deallocate(text, len, name, size);
		assert_true(k == DEALLOC_NONE || k == DEALLOC_ALL || k == DEALLOC_NAME);
		if (k == DEALLOC_NAME)
			assert_true(strlen(name) > 0 && strlen(name) < size);
		test_free(name);
	}
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_unquoted_names_fold_to_lower_case),
		cmocka_unit_test(test_quoted_names_keep_case_and_doubled_quotes),
		cmocka_unit_test(test_all_forms),
		cmocka_unit_test(test_what_is_left_to_the_server),
		cmocka_unit_test(test_random_texts),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
