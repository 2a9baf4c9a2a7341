/* SPDX-License-Identifier: PostgreSQL */
/*
 * test_varcache.c - the tracked session parameters (src/varcache.h): values
 * are interned, so clients with the same client_encoding share one copy (and
 * clients with the same values one vector of them), and setting, copying,
 * filling and clearing keep every holder's value right.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include <cmocka.h>

#include "varcache.h"

static void test_shared_values(void **state)
{
	(void)state;
	varcache_set_tracked("");
	struct varcache a = { 0 }, b = { 0 }, server = { 0 };
	int enc = varcache_index("client_encoding"), tz = varcache_index("TimeZone");
	assert_true(enc >= 0 && tz >= 0);
	assert_true(varcache_set(&server, "client_encoding", "UTF8"));
	assert_true(varcache_set(&server, "TimeZone", "Europe/Paris"));
	/* one copy of each text, whoever holds it */
	varcache_fill_missing(&a, &server);
	assert_true(varcache_set(&b, "client_encoding", "UTF8"));
	assert_ptr_equal(a.values[enc], server.values[enc]);
	assert_ptr_equal(b.values[enc], server.values[enc]);
	/* and caches with the same values share one vector of them */
	assert_ptr_equal(a.values, server.values);
	assert_ptr_not_equal(b.values, server.values);   /* b lacks TimeZone */
	assert_true(varcache_set(&b, "TimeZone", "Europe/Paris"));
	assert_ptr_equal(b.values, server.values);
	assert_int_not_equal(b.gen, a.gen);               /* gen names a change, not the content */
	assert_string_equal(a.values[tz], "Europe/Paris");
	assert_int_not_equal(a.gen, 0);
	/* a holder's change is its own */
	assert_true(varcache_set(&a, "client_encoding", "LATIN1"));
	assert_string_equal(a.values[enc], "LATIN1");
	assert_string_equal(server.values[enc], "UTF8");
	assert_string_equal(b.values[enc], "UTF8");
	/* the last holder to let go frees it; the others keep theirs */
	varcache_clear(&server);
	assert_null(server.values[enc]);
	assert_string_equal(b.values[enc], "UTF8");
	assert_string_equal(a.values[tz], "Europe/Paris");
	/* copy: b becomes a, a value a lacks goes */
	assert_true(varcache_set(&b, "DateStyle", "ISO, MDY"));
	assert_true(varcache_copy(&b, &a));
	assert_ptr_equal(b.values, a.values);
	assert_ptr_equal(b.values[enc], a.values[enc]);
	assert_ptr_equal(b.values[tz], a.values[tz]);
	assert_null(b.values[varcache_index("DateStyle")]);
	assert_int_equal(b.gen, a.gen);
	char sql[256];
	assert_int_equal(varcache_apply_sql(&a, &b, sql, sizeof(sql)), 0);
	varcache_clear(&a);
	varcache_clear(&b);
	/* a text freed before is made again */
	assert_true(varcache_set(&a, "client_encoding", "LATIN1"));
	assert_string_equal(a.values[enc], "LATIN1");
	varcache_clear(&a);
	/* a zeroed cache (a server's, a pool's) reads as empty */
	struct varcache z = { 0 };
	assert_null(varcache_get(&z, enc));
	varcache_fill_missing(&z, &a);
	assert_null(varcache_get(&z, enc));
	assert_true(varcache_copy(&z, &a));
	assert_null(varcache_get(&z, enc));
	varcache_clear(&z);
}

static void test_many_distinct_values(void **state)
{
	(void)state;
	varcache_set_tracked("");
	enum { N = 2000 };
	static struct varcache v[N];
	char name[32];
	for (int i = 0; i < N; i++) {
		snprintf(name, sizeof(name), "app-%d", i % 700);   /* the table grows past its first size */
		assert_true(varcache_set(&v[i], "application_name", name));
	}
	int app = varcache_index("application_name");
	for (int i = 0; i < N; i++) {
		snprintf(name, sizeof(name), "app-%d", i % 700);
		assert_string_equal(v[i].values[app], name);
		if (i >= 700)
			assert_ptr_equal(v[i].values[app], v[i - 700].values[app]);
	}
	for (int i = 0; i < N; i++)
		varcache_clear(&v[i]);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_shared_values),
		cmocka_unit_test(test_many_distinct_values),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
