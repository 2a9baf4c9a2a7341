/* SPDX-License-Identifier: PostgreSQL */
/*
 * test_sessvars.c - the session settings record (src/sessvars.h): which
 * statements enter it and how, and the SQL that makes a server match it
 * (docs/pooling.md, "Session settings under transaction pooling").
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "sessvars.h"
#include "varcache.h"

static void expect(const char *sql, enum sessvar_kind kind, const char *name, const char *value)
{
	struct sessvar_op op;
	enum sessvar_kind got = sessvars_parse(sql, strlen(sql), &op);
	if (got != kind)
		fail_msg("<%s>: expected kind %d, got %d", sql, (int)kind, (int)got);
	if (name && (!op.name || strcmp(op.name, name) != 0))
		fail_msg("<%s>: expected name <%s>, got <%s>", sql, name, op.name ? op.name : "(null)");
	if (value && (!op.value || strcmp(op.value, value) != 0))
		fail_msg("<%s>: expected value <%s>, got <%s>", sql, value, op.value ? op.value : "(null)");
	sessvar_op_free(&op);
}

static void test_parse(void **state)
{
	(void)state;
	varcache_set_tracked("IntervalStyle");
	expect("SET search_path TO tenant_a, public", SESSVAR_SET, "search_path", "tenant_a, public");
	expect("set Search_Path = \"$user\", public;", SESSVAR_SET, "search_path", "\"$user\", public");
	expect("SET SESSION app.Tenant = 'it''s'", SESSVAR_SET, "app.tenant", "'it''s'");
	expect("/* c */ SET \"App\".\"Tenant\" TO 'b' -- x", SESSVAR_SET, "app.tenant", "'b'");
	expect("SET statement_timeout = -1", SESSVAR_SET, "statement_timeout", "-1");
	expect("SET work_mem = 4.5", SESSVAR_SET, "work_mem", "4.5");
	expect("SET SCHEMA 'x'", SESSVAR_SET, "search_path", "'x'");
	expect("SET search_path TO DEFAULT", SESSVAR_RESET, "search_path", NULL);
	expect("RESET app.tenant;", SESSVAR_RESET, "app.tenant", NULL);
	expect("RESET ALL", SESSVAR_RESET_ALL, NULL, NULL);
	expect("SELECT set_config('App.Tenant', 'a''b', false)", SESSVAR_SET_STRING, "app.tenant", "a'b");
	expect("select pg_catalog.set_config('x.y','v',false);", SESSVAR_SET_STRING, "x.y", "v");
	expect("SELECT set_config('x.y', 'v', true)", SESSVAR_LOCAL, NULL, NULL);
	expect("SET LOCAL app.tenant = 'b'", SESSVAR_LOCAL, NULL, NULL);
	expect("SET TRANSACTION ISOLATION LEVEL SERIALIZABLE", SESSVAR_LOCAL, NULL, NULL);
	expect("SET TimeZone = 'UTC'", SESSVAR_REPORTED, NULL, NULL);
	expect("SET TIME ZONE 'UTC'", SESSVAR_REPORTED, NULL, NULL);
	expect("SET intervalstyle = iso_8601", SESSVAR_REPORTED, NULL, NULL);
	expect("SET ROLE reader", SESSVAR_UNKNOWN, NULL, NULL);
	expect("SET SESSION AUTHORIZATION reader", SESSVAR_UNKNOWN, NULL, NULL);
	expect("RESET ROLE", SESSVAR_UNKNOWN, NULL, NULL);
	expect("SET search_path = a; SELECT 1", SESSVAR_UNKNOWN, NULL, NULL);
	expect("SET x.y = E'a\\\\b'", SESSVAR_UNKNOWN, NULL, NULL);
	expect("SET x.y = 'a\\b'", SESSVAR_UNKNOWN, NULL, NULL);
	expect("SET x.y = $$v$$", SESSVAR_UNKNOWN, NULL, NULL);
	expect("SET x.y = 'unterminated", SESSVAR_UNKNOWN, NULL, NULL);
	expect("SELECT set_config('x.y', $1, false)", SESSVAR_NONE, NULL, NULL);
	expect("SELECT set_config('x.y', 'v', false), 1", SESSVAR_NONE, NULL, NULL);
	expect("SELECT 1", SESSVAR_NONE, NULL, NULL);
	expect("UPDATE t SET a = 1", SESSVAR_NONE, NULL, NULL);
	/* PostgreSQL refuses an empty name: nothing to record (found by fuzz_sessvars) */
	expect("SELECT set_config('', 'v', false)", SESSVAR_UNKNOWN, NULL, NULL);
	/* a Query's text ends at its NUL: what follows is not read */
	static const char nul[] = "SELECT set_config('\0x.y', 'v', false)";
	struct sessvar_op op;
	assert_int_equal(sessvars_parse(nul, sizeof(nul) - 1, &op), SESSVAR_NONE);
	sessvar_op_free(&op);
}

static void test_record_and_diff(void **state)
{
	(void)state;
	struct sessvars client = { 0 }, server = { 0 }, startup = { 0 };
	int count;
	assert_int_equal(sessvars_put(&startup, "Search_Path", "a,b", true), 0);
	assert_true(sessvars_copy(&client, &startup));
	struct sessvar_op set = { SESSVAR_SET, "app.tenant", "'it''s'" };
	assert_int_equal(sessvars_apply(&client, &startup, &set), 0);
	char *sql = sessvars_diff_sql(&client, &server, false, &count);
	assert_int_equal(count, 2);
	assert_string_equal(sql, "SET \"app.tenant\" TO 'it''s';"
	                         "SELECT pg_catalog.set_config(E'search_path', E'a,b', false);");
	free(sql);
	assert_true(sessvars_copy(&server, &client));
	assert_int_equal(server.gen, client.gen);
	sql = sessvars_diff_sql(&client, &server, false, &count);
	assert_int_equal(count, 0);
	free(sql);
	/* RESET goes back to the startup value; RESET ALL to the startup record */
	struct sessvar_op reset = { SESSVAR_RESET, "search_path", NULL };
	struct sessvar_op other = { SESSVAR_SET, "search_path", "c" };
	assert_int_equal(sessvars_apply(&client, &startup, &other), 0);
	assert_int_equal(sessvars_apply(&client, &startup, &reset), 0);
	assert_string_equal(sessvars_get(&client, "search_path")->value, "a,b");
	struct sessvar_op all = { SESSVAR_RESET_ALL, NULL, NULL };
	assert_int_equal(sessvars_apply(&client, &startup, &all), 0);
	assert_null(sessvars_get(&client, "app.tenant"));
	sql = sessvars_diff_sql(&client, &server, false, &count);
	assert_int_equal(count, 1);
	assert_string_equal(sql, "RESET \"app.tenant\";");
	free(sql);
	/* a value with a quote and a backslash, sent back with E'' */
	assert_int_equal(sessvars_put(&client, "x.q", "a'b\\c", true), 0);
	sql = sessvars_diff_sql(&client, &(struct sessvars){ 0 }, true, &count);
	assert_string_equal(sql, "RESET ALL;SELECT pg_catalog.set_config(E'search_path', E'a,b', false);"
	                         "SELECT pg_catalog.set_config(E'x.q', E'a''b\\\\c', false);");
	free(sql);
	sessvars_clear(&client);
	sessvars_clear(&server);
	sessvars_clear(&startup);
}

static void test_limits(void **state)
{
	(void)state;
	struct sessvars rec = { 0 };
	char name[32];
	for (int i = 0; i < SESSVARS_MAX_COUNT; i++) {
		snprintf(name, sizeof(name), "app.v%d", i);
		assert_int_equal(sessvars_put(&rec, name, "1", false), 0);
	}
	assert_int_equal(sessvars_put(&rec, "app.more", "1", false), -2);
	assert_int_equal(sessvars_put(&rec, "app.v1", "2", false), 0);    /* a change fits */
	struct sessvar_op big = { SESSVAR_SET, "app.v2", NULL };
	big.value = calloc(1, SESSVARS_MAX_BYTES + 1);
	memset(big.value, 'x', SESSVARS_MAX_BYTES);
	assert_false(sessvars_fits(&rec, &big));
	free(big.value);
	assert_int_equal(rec.n, SESSVARS_MAX_COUNT);
	sessvars_clear(&rec);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_parse),
		cmocka_unit_test(test_record_and_diff),
		cmocka_unit_test(test_limits),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
