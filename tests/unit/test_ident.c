/* SPDX-License-Identifier: PostgreSQL */
/*
 * test_ident.c - auth_ident_file: PostgreSQL's pg_ident.conf format as
 * pgsluice reads it, which (system user, role) pairs a map allows, and every
 * refused line.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "ident.h"

static struct ident_map *parse_ok(const char *text)
{
	char err[512];
	struct ident_map *im = ident_parse(text, "pg_ident.conf", err, sizeof(err));
	if (!im)
		fail_msg("refused: %s", err);
	return im;
}

static void assert_refused(const char *text, const char *want)
{
	char err[512];
	struct ident_map *im = ident_parse(text, "pg_ident.conf", err, sizeof(err));
	assert_null(im);
	assert_string_equal(err, want);
}

static void test_literal_lines_map_a_system_user_to_roles(void **state)
{
	(void)state;
	struct ident_map *im = parse_ok("# MAPNAME SYSTEM-USERNAME PG-USERNAME\n"
	                                "ops   root      app   # root may be app\n"
	                                "ops   root      admin\n"
	                                "\n"
	                                "other \"deploy user\" all\n"
	                                "quoted alice \"all\"\n");
	assert_true(ident_map_allows(im, "ops", "root", "app"));
	assert_true(ident_map_allows(im, "ops", "root", "admin"));
	assert_false(ident_map_allows(im, "ops", "root", "bob"));
	assert_false(ident_map_allows(im, "ops", "alice", "app"));
	assert_false(ident_map_allows(im, "nosuchmap", "root", "app"));
	assert_true(ident_map_allows(im, "other", "deploy user", "anyrole"));   /* the keyword all */
	assert_true(ident_map_allows(im, "quoted", "alice", "all"));            /* "all" quoted: a role */
	assert_false(ident_map_allows(im, "quoted", "alice", "bob"));
	assert_false(ident_map_allows(NULL, "ops", "root", "app"));
	ident_free(im);
}

static void test_regex_lines_and_backreference(void **state)
{
	(void)state;
	struct ident_map *im = parse_ok("m /^(.*)@example\\.com$ \\1\n"
	                                "m /^svc-   service\n"
	                                "n /^x(y)?$ pre_\\1_post\n");
	assert_true(ident_map_allows(im, "m", "alice@example.com", "alice"));
	assert_false(ident_map_allows(im, "m", "alice@example.com", "bob"));
	assert_false(ident_map_allows(im, "m", "alice@example.org", "alice"));
	assert_true(ident_map_allows(im, "m", "svc-web", "service"));
	assert_true(ident_map_allows(im, "n", "xy", "pre_y_post"));
	assert_false(ident_map_allows(im, "n", "xy", "pre_y_pos"));
	ident_free(im);
}

static void test_bad_lines_refuse_the_file(void **state)
{
	(void)state;
	assert_refused("ops root\n", "pg_ident.conf:1: missing entry at end of line; write MAPNAME SYSTEM-USERNAME DATABASE-USERNAME");
	assert_refused("\nops root app extra\n",
	               "pg_ident.conf:2: extra fields at end of line; write MAPNAME SYSTEM-USERNAME DATABASE-USERNAME");
	assert_refused("ops \"root app\n",
	               "pg_ident.conf:1: unterminated quoted string or name longer than 255 bytes");
	assert_refused("ops root +admins\n",
	               "pg_ident.conf:1: DATABASE-USERNAME \"+admins\" is not supported by pgsluice: write a role name or all");
	assert_refused("include other.conf x\n",
	               "pg_ident.conf:1: \"include\" is not supported by pgsluice; write the maps in this file");
	char err[512];
	assert_null(ident_parse("m /(unclosed x\n", "pg_ident.conf", err, sizeof(err)));
	assert_non_null(strstr(err, "pg_ident.conf:1: invalid regular expression \"(unclosed\""));
	assert_null(ident_load("/nonexistent/pg_ident.conf", err, sizeof(err)));
	assert_string_equal(err, "could not open file \"/nonexistent/pg_ident.conf\": No such file or directory");
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_literal_lines_map_a_system_user_to_roles),
		cmocka_unit_test(test_regex_lines_and_backreference),
		cmocka_unit_test(test_bad_lines_refuse_the_file),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
