/* SPDX-License-Identifier: PostgreSQL */
/*
 * test_auth.c - the auth_file parser (PgBouncer's userlist.txt format) and
 * PostgreSQL's MD5 password scheme, checked against values PostgreSQL wrote.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cmocka.h>

#include "auth.h"

/* pg_authid.rolpassword written by PostgreSQL 15 for CREATE ROLE bar PASSWORD 'foo' (md5). */
#define PG_MD5_FOO_BAR "md53858f62230ac3c915f300c664312c63f"
/* PostgreSQL 15's SCRAM secret for password "pencil". */
#define PG_SCRAM_PENCIL "SCRAM-SHA-256$4096:liaTXxEtwsC23qnGKAm/Aw==$" \
                        "0H510I8AOPah0Nhpbjv1KvJolbMhRnREs99ipX1SzUQ=:" \
                        "CkqA/1kV9atBbBtSIY14JRVCg2HsT8NQymvLyX4KxiQ="

static const uint8_t salt_1234[4] = { 1, 2, 3, 4 };
static const uint8_t salt_deadbeef[4] = { 0xde, 0xad, 0xbe, 0xef };
/* "md5" || md5(hex || salt), computed with Python's hashlib */
#define RESPONSE_1234 "md56e4f0b50f7277feb74acbf2a7734c9cb"
#define RESPONSE_DEADBEEF "md52b78b77e45561717c37da3bf5624c95b"

/* ---- md5 ---- */

static void test_md5_password_hash_matches_postgresql(void **state)
{
	char out[MD5_PASSWD_LEN + 1];

	(void) state;
	/* password first, then user: pg_md5_encrypt(password, user) */
	md5_password_hash("foo", "bar", out);
	assert_string_equal(out, PG_MD5_FOO_BAR);
	md5_password_hash("bar", "foo", out);
	assert_string_equal(out, "md596948aad3fcae80c08a35c9b5958cd89");
	md5_password_hash("", "", out);
	assert_string_equal(out, "md5d41d8cd98f00b204e9800998ecf8427e");
}

static void test_md5_salted_response_hashes_hex_with_salt(void **state)
{
	char out[MD5_PASSWD_LEN + 1];

	(void) state;
	md5_salted_response(PG_MD5_FOO_BAR, salt_1234, out);
	assert_string_equal(out, RESPONSE_1234);
	md5_salted_response(PG_MD5_FOO_BAR, salt_deadbeef, out);
	assert_string_equal(out, RESPONSE_DEADBEEF);
	md5_salted_response("foo", salt_1234, out);
	assert_string_equal(out, "");
}

static void test_md5_check_response_accepts_plain_and_md5_stored(void **state)
{
	(void) state;
	assert_true(md5_check_response("foo", "bar", salt_1234, RESPONSE_1234));
	assert_true(md5_check_response(PG_MD5_FOO_BAR, "bar", salt_1234, RESPONSE_1234));
	assert_true(md5_check_response(PG_MD5_FOO_BAR, "bar", salt_deadbeef, RESPONSE_DEADBEEF));
}

static void test_md5_check_response_refuses_wrong_answers(void **state)
{
	(void) state;
	/* wrong password, wrong user, wrong salt */
	assert_false(md5_check_response("fooo", "bar", salt_1234, RESPONSE_1234));
	assert_false(md5_check_response("foo", "baz", salt_1234, RESPONSE_1234));
	assert_false(md5_check_response(PG_MD5_FOO_BAR, "bar", salt_deadbeef, RESPONSE_1234));
	/* not the response at all */
	assert_false(md5_check_response("foo", "bar", salt_1234, ""));
	assert_false(md5_check_response("foo", "bar", salt_1234, "foo"));
	assert_false(md5_check_response("foo", "bar", salt_1234, PG_MD5_FOO_BAR));
	assert_false(md5_check_response("foo", "bar", salt_1234, RESPONSE_1234 "0"));
	assert_false(md5_check_response("foo", "bar", salt_1234, "MD56E4F0B50F7277FEB74ACBF2A7734C9CB"));
	assert_false(md5_check_response("foo", "bar", salt_1234, NULL));
	assert_false(md5_check_response(NULL, "bar", salt_1234, RESPONSE_1234));
}

static void test_md5_check_response_refuses_scram_secret(void **state)
{
	char hashed[MD5_PASSWD_LEN + 1], response[MD5_PASSWD_LEN + 1];

	(void) state;
	/* even the response computed from the secret's text as a plain password */
	md5_password_hash(PG_SCRAM_PENCIL, "user", hashed);
	md5_salted_response(hashed, salt_1234, response);
	assert_false(md5_check_response(PG_SCRAM_PENCIL, "user", salt_1234, response));
}

static void test_password_kind_of_classifies_like_postgresql(void **state)
{
	(void) state;
	assert_int_equal(password_kind_of(PG_MD5_FOO_BAR), PASSWORD_MD5);
	assert_int_equal(password_kind_of(PG_SCRAM_PENCIL), PASSWORD_SCRAM);
	assert_int_equal(password_kind_of("foo"), PASSWORD_PLAIN);
	assert_int_equal(password_kind_of(""), PASSWORD_PLAIN);
	assert_int_equal(password_kind_of(NULL), PASSWORD_PLAIN);
	assert_int_equal(password_kind_of("md5"), PASSWORD_PLAIN);
	/* 31 and 33 digits, upper case and non-hex are plain text to PostgreSQL too */
	assert_int_equal(password_kind_of("md53858f62230ac3c915f300c664312c63"), PASSWORD_PLAIN);
	assert_int_equal(password_kind_of(PG_MD5_FOO_BAR "0"), PASSWORD_PLAIN);
	assert_int_equal(password_kind_of("md53858F62230AC3C915F300C664312C63F"), PASSWORD_PLAIN);
	assert_int_equal(password_kind_of("md53858f62230ac3c915f300c664312c63g"), PASSWORD_PLAIN);
	assert_int_equal(password_kind_of("MD53858f62230ac3c915f300c664312c63f"), PASSWORD_PLAIN);
	assert_int_equal(password_kind_of("SCRAM-SHA-256$"), PASSWORD_PLAIN);
	assert_int_equal(password_kind_of("SCRAM-SHA-256$4096:salt$broken"), PASSWORD_PLAIN);
}

static void test_secure_streq(void **state)
{
	(void) state;
	assert_true(secure_streq("", ""));
	assert_true(secure_streq("abc", "abc"));
	assert_false(secure_streq("abc", "abd"));
	assert_false(secure_streq("abc", "ab"));
	assert_false(secure_streq("ab", "abc"));
	assert_false(secure_streq("", "a"));
	assert_false(secure_streq(NULL, "a"));
	assert_false(secure_streq("a", NULL));
}

/* ---- userlist ---- */

static struct userlist *parse_ok(const char *text)
{
	char err[256] = "unset";
	struct userlist *list = userlist_parse(text, "userlist.txt", err, sizeof(err));

	if (!list)
		fail_msg("parse failed: %s", err);
	assert_string_equal(err, "");
	return list;
}

static void assert_user(const struct userlist *list, const char *name, const char *password)
{
	const struct userlist_entry *e = userlist_find(list, name);

	if (!e)
		fail_msg("user \"%s\" not found", name);
	assert_string_equal(e->name, name);
	assert_string_equal(e->password, password);
}

static void test_userlist_skips_comments_and_blank_lines(void **state)
{
	struct userlist *list = parse_ok(
		"; PgBouncer comment\n"
		"# shell comment\n"
		"\n"
		"   \t\n"
		"  ; indented comment \"not\" \"a user\"\n"
		"\"alice\" \"secret\"\n"
		"\t \"bob\"\t\"hunter2\"\n");

	(void) state;
	assert_int_equal(list->n_entries, 2);
	assert_user(list, "alice", "secret");
	assert_user(list, "bob", "hunter2");
	userlist_free(list);
}

static void test_userlist_doubled_quote_is_one_quote(void **state)
{
	struct userlist *list = parse_ok(
		"\"say \"\"hi\"\"\" \"pa\"\"ss\"\n"
		"\"\"\"\" \"\"\"\"\"\"\n");

	(void) state;
	assert_int_equal(list->n_entries, 2);
	assert_user(list, "say \"hi\"", "pa\"ss");
	assert_user(list, "\"", "\"\"");
	userlist_free(list);
}

static void test_userlist_ignores_text_after_password(void **state)
{
	struct userlist *list = parse_ok(
		"\"alice\" \"secret\" \"extra\" field\n"
		"\"bob\" \"pw\"; comment\n"
		"\"carol\" \"pw2\"garbage\n");

	(void) state;
	assert_int_equal(list->n_entries, 3);
	assert_user(list, "alice", "secret");
	assert_user(list, "bob", "pw");
	assert_user(list, "carol", "pw2");
	userlist_free(list);
}

static void test_userlist_keeps_spaces_and_specials_inside_fields(void **state)
{
	/* a backslash is an ordinary character; only "" stands for a quote */
	struct userlist *list = parse_ok("\" spaced user \" \"p a;s#s,=\\\"\"\"\n");

	(void) state;
	assert_user(list, " spaced user ", "p a;s#s,=\\\"");
	userlist_free(list);
}

static void test_userlist_entries_are_sorted_and_found(void **state)
{
	struct userlist *list = parse_ok(
		"\"zoe\" \"1\"\n\"adam\" \"2\"\n\"mia\" \"3\"\n\"Zed\" \"4\"\n\"bob\" \"5\"\n");
	size_t i;

	(void) state;
	assert_int_equal(list->n_entries, 5);
	for (i = 1; i < list->n_entries; i++)
		assert_true(strcmp(list->entries[i - 1].name, list->entries[i].name) < 0);
	assert_user(list, "zoe", "1");
	assert_user(list, "adam", "2");
	assert_user(list, "mia", "3");
	assert_user(list, "Zed", "4");
	assert_user(list, "bob", "5");
	assert_null(userlist_find(list, "zed"));
	assert_null(userlist_find(list, "carl"));
	assert_null(userlist_find(list, ""));
	assert_null(userlist_find(list, NULL));
	assert_null(userlist_find(NULL, "bob"));
	userlist_free(list);
}

static void test_userlist_later_duplicate_wins(void **state)
{
	struct userlist *list = parse_ok(
		"\"alice\" \"first\"\n\"bob\" \"b\"\n\"alice\" \"second\"\n\"alice\" \"third\"\n");

	(void) state;
	assert_int_equal(list->n_entries, 2);
	assert_user(list, "alice", "third");
	assert_user(list, "bob", "b");
	userlist_free(list);
}

static void test_userlist_allows_empty_password(void **state)
{
	struct userlist *list = parse_ok("\"nopass\" \"\"\n");

	(void) state;
	assert_user(list, "nopass", "");
	assert_int_equal(userlist_find(list, "nopass")->kind, PASSWORD_PLAIN);
	userlist_free(list);
}

static void test_userlist_records_password_kinds(void **state)
{
	struct userlist *list = parse_ok(
		"\"plain\" \"foo\"\n"
		"\"bar\" \"" PG_MD5_FOO_BAR "\"\n"
		"\"user\" \"" PG_SCRAM_PENCIL "\"\n");

	(void) state;
	assert_int_equal(userlist_find(list, "plain")->kind, PASSWORD_PLAIN);
	assert_int_equal(userlist_find(list, "bar")->kind, PASSWORD_MD5);
	assert_int_equal(userlist_find(list, "user")->kind, PASSWORD_SCRAM);
	userlist_free(list);
}

static void test_userlist_accepts_crlf_and_missing_final_newline(void **state)
{
	struct userlist *list = parse_ok("\"alice\" \"a\"\r\n; c\r\n\r\n\"bob\" \"b\"");

	(void) state;
	assert_int_equal(list->n_entries, 2);
	assert_user(list, "alice", "a");
	assert_user(list, "bob", "b");
	userlist_free(list);
}

static void test_userlist_empty_text_is_an_empty_list(void **state)
{
	struct userlist *list = parse_ok("");

	(void) state;
	assert_int_equal(list->n_entries, 0);
	assert_null(userlist_find(list, "alice"));
	userlist_free(list);
	list = parse_ok("# only a comment\n\n");
	assert_int_equal(list->n_entries, 0);
	userlist_free(list);
}

static void test_userlist_malformed_lines_report_file_and_line(void **state)
{
	static const struct {
		const char *text;
		const char *error;
	} cases[] = {
		{ "alice \"secret\"\n", "userlist.txt:1: missing opening quote before user name" },
		{ "\"a\" \"b\"\n\n'alice' 'secret'\n", "userlist.txt:3: missing opening quote before user name" },
		{ "\"a\" \"b\"\n\"c\" \"d\"\n\"alice \"secret\n", "userlist.txt:3: missing password for user \"alice \"" },
		{ "\"a\" \"b\"\n\"c\" \"d\"\n\"alice\n", "userlist.txt:3: missing closing quote in user name" },
		{ "\"alice\" \"secret\n\"bob\" \"x\"\n", "userlist.txt:1: missing closing quote in password" },
		{ "\"alice\" \"sec\"\"ret\n", "userlist.txt:1: missing closing quote in password" },
		{ "\"alice\"\n", "userlist.txt:1: missing password for user \"alice\"" },
		{ "\"alice\"   \n", "userlist.txt:1: missing password for user \"alice\"" },
		{ "\"alice\" secret\n", "userlist.txt:1: missing password for user \"alice\"" },
		/* no blank between the fields: "" reads as a quote inside the user name */
		{ "# c\n\"alice\"\"secret\"\n", "userlist.txt:2: missing password for user \"alice\"secret\"" },
		{ "\"\" \"secret\"\n", "userlist.txt:1: empty user name" },
		{ "\"", "userlist.txt:1: missing closing quote in user name" },
	};
	size_t i;

	(void) state;
	for (i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		char err[256] = "";
		struct userlist *list = userlist_parse(cases[i].text, "userlist.txt", err, sizeof(err));

		if (list)
			fail_msg("accepted malformed auth_file: %s", cases[i].text);
		assert_string_equal(err, cases[i].error);
	}
}

static void test_userlist_error_fits_small_buffer(void **state)
{
	char err[8];

	(void) state;
	assert_null(userlist_parse("oops\n", "userlist.txt", err, sizeof(err)));
	assert_string_equal(err, "userlis");
	assert_null(userlist_parse("oops\n", "userlist.txt", NULL, 0));
}

static void test_userlist_many_entries_in_reverse_order(void **state)
{
	size_t n = 5000, i, len = 0;
	char *text = malloc(n * 32);
	char name[16], password[16];
	struct userlist *list;

	(void) state;
	assert_non_null(text);
	for (i = n; i-- > 0;)
		len += (size_t) sprintf(text + len, "\"user%05zu\" \"pw%zu\"\n", i, i);
	list = parse_ok(text);
	free(text);
	assert_int_equal(list->n_entries, n);
	for (i = 0; i < n; i++) {
		snprintf(name, sizeof(name), "user%05zu", i);
		snprintf(password, sizeof(password), "pw%zu", i);
		assert_user(list, name, password);
	}
	userlist_free(list);
}

/* Writes text to a fresh temporary file; returns its path (caller unlinks and frees). */
static char *write_temp(const char *text, size_t len)
{
	char *path = strdup("/tmp/test_auth_userlist_XXXXXX");
	int fd;

	assert_non_null(path);
	fd = mkstemp(path);
	assert_true(fd >= 0);
	assert_int_equal(write(fd, text, len), (ssize_t) len);
	close(fd);
	return path;
}

static void test_userlist_load_reads_file(void **state)
{
	static const char text[] = ";; users\n\"alice\" \"" PG_MD5_FOO_BAR "\"\n\"bob\" \"pw\"\n";
	char err[256];
	char *path = write_temp(text, strlen(text));
	struct userlist *list = userlist_load(path, err, sizeof(err));

	(void) state;
	assert_non_null(list);
	assert_int_equal(list->n_entries, 2);
	assert_user(list, "alice", PG_MD5_FOO_BAR);
	assert_int_equal(userlist_find(list, "alice")->kind, PASSWORD_MD5);
	assert_user(list, "bob", "pw");
	userlist_free(list);
	unlink(path);
	free(path);
}

static void test_userlist_load_names_path_and_line(void **state)
{
	static const char text[] = "\"alice\" \"a\"\n\"bob\"\n";
	char err[512], expected[512];
	char *path = write_temp(text, strlen(text));

	(void) state;
	assert_null(userlist_load(path, err, sizeof(err)));
	snprintf(expected, sizeof(expected), "%s:2: missing password for user \"bob\"", path);
	assert_string_equal(err, expected);
	unlink(path);
	free(path);
}

static void test_userlist_load_refuses_nul_byte(void **state)
{
	static const char text[] = "\"alice\" \"a\"\n\"bob\" \"b\0c\"\n";
	char err[512], expected[512];
	char *path = write_temp(text, sizeof(text) - 1);

	(void) state;
	assert_null(userlist_load(path, err, sizeof(err)));
	snprintf(expected, sizeof(expected), "%s:2: unexpected NUL byte", path);
	assert_string_equal(err, expected);
	unlink(path);
	free(path);
}

static void test_userlist_load_missing_file(void **state)
{
	char err[256];

	(void) state;
	assert_null(userlist_load("/nonexistent/userlist.txt", err, sizeof(err)));
	assert_string_equal(err, "could not open file \"/nonexistent/userlist.txt\": No such file or directory");
}

static void test_userlist_load_directory_reports_read_error(void **state)
{
	char err[256];

	(void) state;
	assert_null(userlist_load("/tmp", err, sizeof(err)));
	assert_string_equal(err, "could not read file \"/tmp\": Is a directory");
}

static void test_userlist_load_large_file(void **state)
{
	size_t n = 3000, i, len = 0;
	char *text = malloc(n * 40), *path;
	char err[256];
	struct userlist *list;

	(void) state;
	assert_non_null(text);
	for (i = 0; i < n; i++)
		len += (size_t) sprintf(text + len, "\"u%zu\" \"password number %zu\"\n", i, i);
	path = write_temp(text, len);
	free(text);
	list = userlist_load(path, err, sizeof(err));
	assert_non_null(list);
	assert_int_equal(list->n_entries, n);
	assert_user(list, "u0", "password number 0");
	assert_user(list, "u2999", "password number 2999");
	userlist_free(list);
	unlink(path);
	free(path);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_md5_password_hash_matches_postgresql),
		cmocka_unit_test(test_md5_salted_response_hashes_hex_with_salt),
		cmocka_unit_test(test_md5_check_response_accepts_plain_and_md5_stored),
		cmocka_unit_test(test_md5_check_response_refuses_wrong_answers),
		cmocka_unit_test(test_md5_check_response_refuses_scram_secret),
		cmocka_unit_test(test_password_kind_of_classifies_like_postgresql),
		cmocka_unit_test(test_secure_streq),
		cmocka_unit_test(test_userlist_skips_comments_and_blank_lines),
		cmocka_unit_test(test_userlist_doubled_quote_is_one_quote),
		cmocka_unit_test(test_userlist_ignores_text_after_password),
		cmocka_unit_test(test_userlist_keeps_spaces_and_specials_inside_fields),
		cmocka_unit_test(test_userlist_entries_are_sorted_and_found),
		cmocka_unit_test(test_userlist_later_duplicate_wins),
		cmocka_unit_test(test_userlist_allows_empty_password),
		cmocka_unit_test(test_userlist_records_password_kinds),
		cmocka_unit_test(test_userlist_accepts_crlf_and_missing_final_newline),
		cmocka_unit_test(test_userlist_empty_text_is_an_empty_list),
		cmocka_unit_test(test_userlist_malformed_lines_report_file_and_line),
		cmocka_unit_test(test_userlist_error_fits_small_buffer),
		cmocka_unit_test(test_userlist_many_entries_in_reverse_order),
		cmocka_unit_test(test_userlist_load_reads_file),
		cmocka_unit_test(test_userlist_load_names_path_and_line),
		cmocka_unit_test(test_userlist_load_refuses_nul_byte),
		cmocka_unit_test(test_userlist_load_missing_file),
		cmocka_unit_test(test_userlist_load_directory_reports_read_error),
		cmocka_unit_test(test_userlist_load_large_file),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
