/* SPDX-License-Identifier: PostgreSQL */
/*
 * test_sqltext.c - the parameter builders of sqltext.h: text arrays quoted,
 * and binary arrays laid out as PostgreSQL's array_recv reads them (header,
 * NULLs, big-endian numbers), reused without their old elements.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <string.h>

#include "sqltext.h"

static uint32_t be32(const char *p)
{
	const unsigned char *u = (const unsigned char *)p;
	return (uint32_t)u[0] << 24 | (uint32_t)u[1] << 16 | (uint32_t)u[2] << 8 | u[3];
}

static void test_text_elements_are_quoted(void **state)
{
	(void)state;
	struct sqltext t = { 0 };
	sqltext_str(&t, "{");
	sqltext_sep(&t);
	sqltext_quoted(&t, "a\"b\\c");
	sqltext_sep(&t);
	sqltext_quoted(&t, "");
	sqltext_str(&t, "}");
	assert_false(t.failed);
	assert_string_equal(t.s, "{\"a\\\"b\\\\c\",\"\"}");
	sqltext_free(&t);
}

static void test_binary_int8_array_with_a_null(void **state)
{
	(void)state;
	struct sqlarray a;
	int len = 0;
	sqlarray_init(&a, SQL_OID_INT8, false);
	sqlarray_add_i64(&a, 1);
	sqlarray_add_null(&a);
	sqlarray_add_i64(&a, -2);
	const char *p = sqlarray_finish(&a, &len);
	assert_non_null(p);
	assert_int_equal(len, 20 + (4 + 8) + 4 + (4 + 8));
	assert_int_equal(be32(p), 1);              /* dimensions */
	assert_int_equal(be32(p + 4), 1);          /* has NULLs */
	assert_int_equal(be32(p + 8), 20);         /* int8 */
	assert_int_equal(be32(p + 12), 3);         /* elements */
	assert_int_equal(be32(p + 16), 1);         /* lower bound */
	assert_int_equal(be32(p + 20), 8);
	assert_memory_equal(p + 24, "\0\0\0\0\0\0\0\1", 8);
	assert_int_equal(be32(p + 32), UINT32_MAX); /* -1: NULL */
	assert_int_equal(be32(p + 36), 8);
	assert_memory_equal(p + 40, "\xff\xff\xff\xff\xff\xff\xff\xfe", 8);
	sqlarray_free(&a);
}

static void test_binary_text_float8_bool_and_empty(void **state)
{
	(void)state;
	struct sqlarray a;
	int len = 0;
	sqlarray_init(&a, SQL_OID_TEXT, false);
	sqlarray_add(&a, "héllo", strlen("héllo"));
	sqlarray_add(&a, "", 0);
	const char *p = sqlarray_finish(&a, &len);
	assert_int_equal(len, 20 + 4 + 6 + 4);
	assert_int_equal(be32(p + 4), 0);          /* no NULLs */
	assert_int_equal(be32(p + 8), 25);
	assert_int_equal(be32(p + 20), 6);
	assert_memory_equal(p + 24, "héllo", 6);
	assert_int_equal(be32(p + 30), 0);         /* '' is not NULL */

	/* reused: the old elements are gone, the element type is the new one */
	sqlarray_init(&a, SQL_OID_FLOAT8, true);
	sqlarray_add_f64(&a, 1.5);
	p = sqlarray_finish(&a, &len);
	assert_int_equal(len, 20 + 4 + 8);
	assert_int_equal(be32(p + 8), 701);
	assert_int_equal(be32(p + 12), 1);
	assert_memory_equal(p + 24, "\x3f\xf8\0\0\0\0\0\0", 8);

	sqlarray_init(&a, SQL_OID_BOOL, true);
	sqlarray_add_bool(&a, true);
	sqlarray_add_bool(&a, false);
	p = sqlarray_finish(&a, &len);
	assert_int_equal(len, 20 + 2 * (4 + 1));
	assert_int_equal(p[24], 1);
	assert_int_equal(p[29], 0);

	/* no elements: '{}', zero dimensions */
	sqlarray_init(&a, SQL_OID_UUID, true);
	p = sqlarray_finish(&a, &len);
	assert_int_equal(len, 12);
	assert_int_equal(be32(p), 0);
	assert_int_equal(be32(p + 8), 2950);
	sqlarray_free(&a);
}

static void test_binary_array_grows_past_its_first_buffer(void **state)
{
	(void)state;
	struct sqlarray a;
	int len = 0;
	char big[1000];
	memset(big, 'x', sizeof(big));
	sqlarray_init(&a, SQL_OID_TEXT, false);
	for (int i = 0; i < 100; i++)
		sqlarray_add(&a, big, (size_t)i * 10);
	const char *p = sqlarray_finish(&a, &len);
	assert_non_null(p);
	assert_int_equal(be32(p + 12), 100);
	size_t at = 20;
	for (int i = 0; i < 100; i++) {
		assert_int_equal(be32(p + at), (uint32_t)i * 10);
		at += 4 + (size_t)i * 10;
	}
	assert_int_equal((size_t)len, at);
	sqlarray_free(&a);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_text_elements_are_quoted),
		cmocka_unit_test(test_binary_int8_array_with_a_null),
		cmocka_unit_test(test_binary_text_float8_bool_and_empty),
		cmocka_unit_test(test_binary_array_grows_past_its_first_buffer),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
