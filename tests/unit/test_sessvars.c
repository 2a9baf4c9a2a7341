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
	/* role and session_authorization follow the client too (RESET ALL leaves them) */
	expect("SET ROLE reader", SESSVAR_SET, "role", "reader");
	expect("set session role 'Reader';", SESSVAR_SET, "role", "'Reader'");
	expect("SET ROLE \"Reader\"", SESSVAR_SET, "role", "\"Reader\"");
	expect("SET role TO reader", SESSVAR_SET, "role", "reader");
	expect("SET role = reader", SESSVAR_SET, "role", "reader");
	expect("SET ROLE NONE", SESSVAR_RESET, "role", NULL);
	expect("SET role TO DEFAULT", SESSVAR_RESET, "role", NULL);
	expect("RESET ROLE", SESSVAR_RESET, "role", NULL);
	expect("SET SESSION AUTHORIZATION reader", SESSVAR_SET, "session_authorization", "reader");
	expect("SET SESSION AUTHORIZATION DEFAULT", SESSVAR_RESET, "session_authorization", NULL);
	expect("RESET SESSION AUTHORIZATION;", SESSVAR_RESET, "session_authorization", NULL);
	expect("SELECT set_config('role', 'reader', false)", SESSVAR_SET_STRING, "role", "reader");
	expect("SET LOCAL ROLE reader", SESSVAR_LOCAL, NULL, NULL);
	expect("SET ROLE reader, writer", SESSVAR_UNKNOWN, NULL, NULL);
	expect("SET ROLE reader; SELECT 1", SESSVAR_UNKNOWN, NULL, NULL);
	expect("SET SESSION CHARACTERISTICS AS TRANSACTION READ ONLY", SESSVAR_UNKNOWN, NULL, NULL);
	expect("RESET SESSION", SESSVAR_UNKNOWN, NULL, NULL);
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
	/* an unterminated quoted name longer than the parser's buffer: no name, and
	 * nothing read past the buffer (found by fuzz_sessvars under ASan) */
	char unterminated[400] = "RESET \"";
	memset(unterminated + 7, 'A', sizeof(unterminated) - 8);
	expect(unterminated, SESSVAR_UNKNOWN, NULL, NULL);
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
	struct sessvar_op set = { .kind = SESSVAR_SET, .name = "app.tenant", .value = "'it''s'" };
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
	struct sessvar_op reset = { .kind = SESSVAR_RESET, .name = "search_path", .value = NULL };
	struct sessvar_op other = { .kind = SESSVAR_SET, .name = "search_path", .value = "c" };
	assert_int_equal(sessvars_apply(&client, &startup, &other), 0);
	assert_int_equal(sessvars_apply(&client, &startup, &reset), 0);
	assert_string_equal(sessvars_get(&client, "search_path")->value, "a,b");
	struct sessvar_op all = { .kind = SESSVAR_RESET_ALL, .name = NULL, .value = NULL };
	assert_int_equal(sessvars_apply(&client, &startup, &all), 0);
	assert_null(sessvars_get(&client, "app.tenant"));
	sql = sessvars_diff_sql(&client, &server, false, &count);
	assert_int_equal(count, 1);
	assert_string_equal(sql, "RESET \"app.tenant\";");
	free(sql);
	/* a value with a quote and a backslash, sent back with E'' */
	assert_int_equal(sessvars_put(&client, "x.q", "a'b\\c", true), 0);
	sql = sessvars_diff_sql(&client, &(struct sessvars){ 0 }, true, &count);
	assert_string_equal(sql, "RESET ALL;RESET SESSION AUTHORIZATION;RESET ROLE;"
	                         "SELECT pg_catalog.set_config(E'search_path', E'a,b', false);"
	                         "SELECT pg_catalog.set_config(E'x.q', E'a''b\\\\c', false);");
	free(sql);
	sessvars_clear(&client);
	sessvars_clear(&server);
	sessvars_clear(&startup);
}

static void test_role_and_session_authorization(void **state)
{
	(void)state;
	struct sessvars client = { 0 }, server = { 0 };
	int count;
	struct sessvar_op role = { .kind = SESSVAR_SET, .name = "role", .value = "r" };
	struct sessvar_op sa = { .kind = SESSVAR_SET, .name = "session_authorization", .value = "u" };
	struct sessvar_op tenant = { .kind = SESSVAR_SET, .name = "app.tenant", .value = "'a'" };
	struct sessvar_op all = { .kind = SESSVAR_RESET_ALL, .name = NULL, .value = NULL };
	assert_int_equal(sessvars_apply(&client, NULL, &role), 0);
	assert_int_equal(sessvars_apply(&client, NULL, &tenant), 0);
	/* RESET ALL keeps the role (GUC_NO_RESET_ALL) */
	assert_int_equal(sessvars_apply(&client, NULL, &all), 0);
	assert_null(sessvars_get(&client, "app.tenant"));
	assert_string_equal(sessvars_get(&client, "role")->value, "r");
	assert_int_equal(sessvars_apply(&client, NULL, &tenant), 0);
	char *sql = sessvars_diff_sql(&client, &server, false, &count);
	assert_string_equal(sql, "SET \"app.tenant\" TO 'a';SET ROLE r;");
	assert_int_equal(count, 2);
	free(sql);
	/* a reset of all: role after the others */
	sql = sessvars_diff_sql(&client, &server, true, &count);
	assert_string_equal(sql, "RESET ALL;RESET SESSION AUTHORIZATION;RESET ROLE;SET \"app.tenant\" TO 'a';SET ROLE r;");
	free(sql);
	assert_true(sessvars_copy(&server, &client));
	/* SET SESSION AUTHORIZATION resets the role: the record drops it, the
	 * diff sends the authorization, then the role again when wanted */
	assert_int_equal(sessvars_apply(&client, NULL, &sa), 0);
	assert_null(sessvars_get(&client, "role"));
	sql = sessvars_diff_sql(&client, &server, false, &count);
	assert_string_equal(sql, "SET SESSION AUTHORIZATION u;RESET ROLE;");
	free(sql);
	assert_int_equal(sessvars_apply(&client, NULL, &role), 0);
	sql = sessvars_diff_sql(&client, &server, false, &count);
	assert_string_equal(sql, "SET SESSION AUTHORIZATION u;SET ROLE r;");
	free(sql);
	/* the server's record back to none of them */
	sql = sessvars_diff_sql(&(struct sessvars){ 0 }, &client, false, &count);
	assert_string_equal(sql, "RESET \"app.tenant\";RESET SESSION AUTHORIZATION;RESET ROLE;");
	assert_int_equal(count, 3);
	free(sql);
	sessvars_clear(&client);
	sessvars_clear(&server);
}

static void test_template_and_bind(void **state)
{
	(void)state;
	struct sessvar_op t, op;
	const char *values[2] = { "App.Tenant", "it's" };
	uint32_t lens[2] = { 10, 4 };
	/* the simple Query path takes no parameters */
	assert_int_equal(sessvars_parse("SELECT set_config($1, $2, false)", 32, &t), SESSVAR_NONE);
	const char *q = "SELECT set_config($1, $2::text, false)";
	assert_int_equal(sessvars_parse_template(q, strlen(q), &t), SESSVAR_SET_STRING);
	assert_int_equal(t.name_param, 1);
	assert_int_equal(t.value_param, 2);
	assert_int_equal(sessvars_bind(&t, 2, values, lens, &op), SESSVAR_SET_STRING);
	assert_string_equal(op.name, "app.tenant");
	assert_string_equal(op.value, "it's");
	sessvar_op_free(&op);
	/* a missing or NULL parameter, a reported or LOCAL name: not followed */
	assert_int_equal(sessvars_bind(&t, 1, values, lens, &op), SESSVAR_UNKNOWN);
	const char *nulls[2] = { "x.y", NULL };
	assert_int_equal(sessvars_bind(&t, 2, nulls, lens, &op), SESSVAR_UNKNOWN);
	const char *reported[2] = { "TimeZone", "UTC" };
	uint32_t rlens[2] = { 8, 3 };
	assert_int_equal(sessvars_bind(&t, 2, reported, rlens, &op), SESSVAR_REPORTED);
	sessvar_op_free(&t);
	/* a literal name, a parameter value */
	q = "select pg_catalog.set_config('search_path', $1, false);";
	assert_int_equal(sessvars_parse_template(q, strlen(q), &t), SESSVAR_SET_STRING);
	assert_string_equal(t.name, "search_path");
	assert_int_equal(sessvars_bind(&t, 1, &values[1], &lens[1], &op), SESSVAR_SET_STRING);
	assert_string_equal(op.name, "search_path");
	assert_string_equal(op.value, "it's");
	sessvar_op_free(&op);
	sessvar_op_free(&t);
	/* SET has no parameters: bound as it is */
	q = "SET search_path TO tenant_a";
	assert_int_equal(sessvars_parse_template(q, strlen(q), &t), SESSVAR_SET);
	assert_int_equal(sessvars_bind(&t, 0, NULL, NULL, &op), SESSVAR_SET);
	assert_string_equal(op.value, "tenant_a");
	sessvar_op_free(&op);
	sessvar_op_free(&t);
	/* is_local from a parameter, other casts: not recognised */
	q = "SELECT set_config('x.y', $1, $2)";
	assert_int_equal(sessvars_parse_template(q, strlen(q), &t), SESSVAR_NONE);
	q = "SELECT set_config('x.y', $1::int, false)";
	assert_int_equal(sessvars_parse_template(q, strlen(q), &t), SESSVAR_NONE);
	q = "SELECT set_config('x.y', $1, true)";
	assert_int_equal(sessvars_parse_template(q, strlen(q), &t), SESSVAR_LOCAL);
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
	struct sessvar_op big = { .kind = SESSVAR_SET, .name = "app.v2", .value = NULL };
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
		cmocka_unit_test(test_role_and_session_authorization),
		cmocka_unit_test(test_template_and_bind),
		cmocka_unit_test(test_limits),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
