/* SPDX-License-Identifier: PostgreSQL */
/* test_util.c - the shared helpers of util.c: hash_fnv1a against the
 * published FNV-1a 64-bit test vectors (draft-eastlake-fnv, test suite). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <string.h>

#include "util.h"

static uint64_t fnv(const char *s)
{
	return hash_fnv1a(HASH_FNV1A_BASIS, s, strlen(s));
}

static void test_fnv1a_matches_the_published_vectors(void **state)
{
	(void)state;
	assert_true(fnv("") == 0xcbf29ce484222325ULL);
	assert_true(fnv("a") == 0xaf63dc4c8601ec8cULL);
	assert_true(fnv("foobar") == 0x85944171f73967e8ULL);
	assert_true(hash_fnv1a(HASH_FNV1A_BASIS, NULL, 0) == HASH_FNV1A_BASIS);
}

static void test_fnv1a_hashes_a_key_in_pieces_as_a_whole(void **state)
{
	(void)state;
	uint64_t h = hash_fnv1a(HASH_FNV1A_BASIS, "foo", 3);
	assert_true(hash_fnv1a(h, "bar", 3) == fnv("foobar"));
	/* a separator byte keeps ("ab", "c") apart from ("a", "bc") */
	uint64_t x = hash_fnv1a(hash_fnv1a(hash_fnv1a(HASH_FNV1A_BASIS, "ab", 2), "", 1), "c", 1);
	uint64_t y = hash_fnv1a(hash_fnv1a(hash_fnv1a(HASH_FNV1A_BASIS, "a", 1), "", 1), "bc", 2);
	assert_true(x != y);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_fnv1a_matches_the_published_vectors),
		cmocka_unit_test(test_fnv1a_hashes_a_key_in_pieces_as_a_whole),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
