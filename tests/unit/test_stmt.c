/* SPDX-License-Identifier: PostgreSQL */
/* test_stmt.c - stmt.c: a client message read once into its fields
 * (Parse, Execute, a header's length word), malformed and cut-short bodies. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <string.h>

#include "proto.h"
#include "stmt.h"

static void test_header_len(void **state)
{
	(void)state;
	static const uint8_t hdr[5] = { 'Q', 0x00, 0x01, 0x02, 0x03 };
	assert_int_equal(stmt_header_len(hdr), 0x00010203);
	static const uint8_t big[5] = { 'D', 0x80, 0, 0, 4 };
	assert_int_equal(stmt_header_len(big), 0x80000004u);
}

static void test_parse_named_with_types(void **state)
{
	(void)state;
	static const uint8_t body[] = { 's', '1', 0, 'S', 'E', 'L', 'E', 'C', 'T', ' ', '$', '1', 0,
	                                0, 1, 0, 0, 0, 23 };
	struct stmt_parse p;
	assert_true(stmt_read_parse(body, sizeof(body), &p));
	assert_string_equal(p.name, "s1");
	assert_string_equal(p.query, "SELECT $1");
	assert_int_equal(p.query_len, 9);
	assert_int_equal(p.n_types, 1);
	assert_ptr_equal(p.types, body + 15);    /* a slice of the message, not a copy */
}

static void test_parse_unnamed_without_types(void **state)
{
	(void)state;
	static const uint8_t body[] = { 0, 'S', 'E', 'L', 'E', 'C', 'T', ' ', '1', 0, 0, 0 };
	struct stmt_parse p;
	assert_true(stmt_read_parse(body, sizeof(body), &p));
	assert_string_equal(p.name, "");
	assert_int_equal(p.query_len, 8);
	assert_int_equal(p.n_types, 0);
	assert_null(p.types);
}

static void test_parse_malformed(void **state)
{
	(void)state;
	struct stmt_parse p;
	static const uint8_t no_nul[] = { 's', '1', 0, 'S', 'E', 'L' };
	assert_false(stmt_read_parse(no_nul, sizeof(no_nul), &p));
	static const uint8_t short_types[] = { 0, 'x', 0, 0, 2, 0, 0, 0, 23 };    /* 2 types, 1 given */
	assert_false(stmt_read_parse(short_types, sizeof(short_types), &p));
	static const uint8_t negative[] = { 0, 'x', 0, 0xff, 0xff };
	assert_false(stmt_read_parse(negative, sizeof(negative), &p));
	static const uint8_t no_count[] = { 0, 'x', 0 };
	assert_false(stmt_read_parse(no_count, sizeof(no_count), &p));
}

static void test_execute(void **state)
{
	(void)state;
	struct stmt_execute e;
	static const uint8_t unnamed[] = { 0, 0, 0, 0, 0 };
	assert_true(stmt_read_execute(unnamed, sizeof(unnamed), &e));
	assert_string_equal(e.portal, "");
	assert_int_equal(e.max_rows, 0);
	static const uint8_t named[] = { 'c', 'u', 0, 0, 0, 0x01, 0x00 };
	assert_true(stmt_read_execute(named, sizeof(named), &e));
	assert_string_equal(e.portal, "cu");
	assert_int_equal(e.max_rows, 256);
	/* the start of a longer message: a name without its NUL, or no row limit */
	assert_false(stmt_read_execute(named, 2, &e));
	assert_false(stmt_read_execute(named, 5, &e));
}

static void test_target(void **state)
{
	(void)state;
	struct stmt_target t;
	static const uint8_t portal[] = { 'P', 0 };
	assert_true(stmt_read_target(portal, sizeof(portal), &t));
	assert_int_equal(t.what, STMT_TARGET_PORTAL);
	assert_string_equal(t.name, "");
	static const uint8_t statement[] = { 'S', 's', '1', 0 };
	assert_true(stmt_read_target(statement, sizeof(statement), &t));
	assert_int_equal(t.what, STMT_TARGET_STATEMENT);
	assert_string_equal(t.name, "s1");
	/* a name without its NUL (the start of a longer message), or no name at all */
	assert_false(stmt_read_target(statement, 3, &t));
	assert_false(stmt_read_target(statement, 1, &t));
	assert_false(stmt_read_target(statement, 0, &t));
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_header_len),
		cmocka_unit_test(test_parse_named_with_types),
		cmocka_unit_test(test_parse_unnamed_without_types),
		cmocka_unit_test(test_parse_malformed),
		cmocka_unit_test(test_execute),
		cmocka_unit_test(test_target),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
