/* SPDX-License-Identifier: PostgreSQL */
/*
 * test_hba.c - auth_hba_file: PostgreSQL's pg_hba.conf format as pgsluice
 * reads it, which rule a connection meets first, and every refused line.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <arpa/inet.h>
#include <ifaddrs.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <sys/stat.h>

#include <cmocka.h>

#include "hba.h"
#include "ldapauth.h"

/* ---- helpers ---- */

static struct hba *parse_ok(const char *text)
{
	char err[512];
	struct hba *hba = hba_parse(text, "pg_hba.conf", err, sizeof(err));

	if (!hba)
		fail_msg("unexpected load error: %s", err);
	return hba;
}

/* The text must be refused as a whole, with exactly this message. */
static void assert_refused(const char *text, const char *message)
{
	char err[512];
	struct hba *hba = hba_parse(text, "pg_hba.conf", err, sizeof(err));

	if (hba) {
		hba_free(hba);
		fail_msg("loaded, expected: %s", message);
	}
	assert_string_equal(err, message);
}

static struct sockaddr_storage ip(const char *text)
{
	struct sockaddr_storage ss;

	memset(&ss, 0, sizeof(ss));
	if (inet_pton(AF_INET, text, &((struct sockaddr_in *) &ss)->sin_addr) == 1) {
		ss.ss_family = AF_INET;
	} else {
		assert_int_equal(inet_pton(AF_INET6, text, &((struct sockaddr_in6 *) &ss)->sin6_addr), 1);
		ss.ss_family = AF_INET6;
	}
	return ss;
}

/* A TCP client from address, without TLS. */
static enum hba_method tcp(const struct hba *hba, const char *address, const char *db,
                           const char *user, int *line)
{
	struct sockaddr_storage ss = ip(address);

	return hba_match(hba, false, false, (struct sockaddr *) &ss, db, user, line);
}

static enum hba_method tls(const struct hba *hba, const char *address, const char *db,
                           const char *user, int *line)
{
	struct sockaddr_storage ss = ip(address);

	return hba_match(hba, false, true, (struct sockaddr *) &ss, db, user, line);
}

static enum hba_method unix_socket(const struct hba *hba, const char *db, const char *user, int *line)
{
	return hba_match(hba, true, false, NULL, db, user, line);
}

/* True when address is one of this machine's interface addresses. */
static bool is_local_address(const char *address)
{
	struct sockaddr_storage ss = ip(address);
	struct ifaddrs *list, *ifa;
	bool found = false;

	if (getifaddrs(&list) != 0)
		return false;
	for (ifa = list; ifa && !found; ifa = ifa->ifa_next)
		found = ifa->ifa_addr && ifa->ifa_addr->sa_family == AF_INET &&
		        ((struct sockaddr_in *) ifa->ifa_addr)->sin_addr.s_addr ==
		        ((struct sockaddr_in *) &ss)->sin_addr.s_addr;
	freeifaddrs(list);
	return found;
}

static void write_file(const char *path, const char *text)
{
	FILE *f = fopen(path, "w");

	assert_non_null(f);
	assert_int_equal(fputs(text, f) >= 0, 1);
	assert_int_equal(fclose(f), 0);
}

/* ---- first match, types ---- */

static void test_first_matching_rule_wins(void **state)
{
	struct hba *hba = parse_ok("host all all 10.0.0.0/8 reject\n"
	                           "host all all 10.1.0.0/16 trust\n"
	                           "host app all 0.0.0.0/0 scram-sha-256\n"
	                           "host all all 0.0.0.0/0 md5\n");
	int line = -1;

	(void) state;
	/* 10.1.2.3 is in both 10/8 and 10.1/16: the earlier reject wins */
	assert_int_equal(tcp(hba, "10.1.2.3", "app", "alice", &line), HBA_REJECT);
	assert_int_equal(line, 1);
	assert_int_equal(tcp(hba, "192.168.1.1", "app", "alice", &line), HBA_SCRAM_SHA_256);
	assert_int_equal(line, 3);
	assert_int_equal(tcp(hba, "192.168.1.1", "other", "alice", &line), HBA_MD5);
	assert_int_equal(line, 4);
	hba_free(hba);
}

static void test_no_matching_rule_rejects_with_line_zero(void **state)
{
	struct hba *hba = parse_ok("host app alice 10.0.0.0/8 trust\n");
	int line = -1;

	(void) state;
	assert_int_equal(tcp(hba, "10.0.0.1", "app", "bob", &line), HBA_REJECT);
	assert_int_equal(line, 0);
	assert_int_equal(tcp(hba, "11.0.0.1", "app", "alice", &line), HBA_REJECT);
	assert_int_equal(line, 0);
	assert_int_equal(unix_socket(hba, "app", "alice", &line), HBA_REJECT);
	assert_int_equal(line, 0);
	/* line may be NULL; NULL names and a NULL rule set match nothing */
	assert_int_equal(tcp(hba, "10.0.0.1", "app", "alice", NULL), HBA_TRUST);
	assert_int_equal(hba_match(hba, true, false, NULL, NULL, "alice", &line), HBA_REJECT);
	assert_int_equal(hba_match(NULL, true, false, NULL, "app", "alice", &line), HBA_REJECT);
	assert_int_equal(line, 0);
	hba_free(hba);
}

static void test_empty_file_rejects_everyone(void **state)
{
	struct hba *hba = parse_ok("# nothing but a comment\n\n   \n\t# indented comment\n");
	int line = -1;

	(void) state;
	assert_int_equal(unix_socket(hba, "app", "alice", &line), HBA_REJECT);
	assert_int_equal(line, 0);
	hba_free(hba);
	hba = parse_ok("");
	assert_int_equal(tcp(hba, "127.0.0.1", "app", "alice", &line), HBA_REJECT);
	hba_free(hba);
}

static void test_reject_rule_reports_its_line(void **state)
{
	struct hba *hba = parse_ok("# comment\n"
	                           "local all mallory reject\n"
	                           "local all all trust\n");
	int line = -1;

	(void) state;
	assert_int_equal(unix_socket(hba, "app", "mallory", &line), HBA_REJECT);
	assert_int_equal(line, 2);
	assert_int_equal(unix_socket(hba, "app", "alice", &line), HBA_TRUST);
	assert_int_equal(line, 3);
	hba_free(hba);
}

static void test_local_rules_match_only_the_unix_socket(void **state)
{
	struct hba *hba = parse_ok("local all all trust\n"
	                           "host all all 127.0.0.1/32 md5\n");
	int line = -1;

	(void) state;
	assert_int_equal(unix_socket(hba, "app", "alice", &line), HBA_TRUST);
	assert_int_equal(line, 1);
	assert_int_equal(tcp(hba, "127.0.0.1", "app", "alice", &line), HBA_MD5);
	assert_int_equal(line, 2);
	/* a unix client never meets host rules, whatever address is passed */
	hba_free(hba);
	hba = parse_ok("host all all all trust\n");
	{
		struct sockaddr_storage ss = ip("127.0.0.1");

		assert_int_equal(hba_match(hba, true, false, (struct sockaddr *) &ss, "app", "alice", &line),
		                 HBA_REJECT);
	}
	hba_free(hba);
}

static void test_hostssl_and_hostnossl_follow_tls(void **state)
{
	struct hba *hba = parse_ok("hostssl   all all all scram-sha-256\n"
	                           "hostnossl all all all md5\n");
	int line = -1;

	(void) state;
	assert_int_equal(tls(hba, "10.0.0.1", "app", "alice", &line), HBA_SCRAM_SHA_256);
	assert_int_equal(line, 1);
	assert_int_equal(tcp(hba, "10.0.0.1", "app", "alice", &line), HBA_MD5);
	assert_int_equal(line, 2);
	assert_int_equal(unix_socket(hba, "app", "alice", &line), HBA_REJECT);
	hba_free(hba);

	/* host takes both */
	hba = parse_ok("host all all all password\n");
	assert_int_equal(tls(hba, "10.0.0.1", "app", "alice", &line), HBA_PASSWORD);
	assert_int_equal(tcp(hba, "10.0.0.1", "app", "alice", &line), HBA_PASSWORD);
	hba_free(hba);

	/* hostnossl only: a TLS client has no entry */
	hba = parse_ok("hostnossl all all all md5\n");
	assert_int_equal(tls(hba, "10.0.0.1", "app", "alice", &line), HBA_REJECT);
	assert_int_equal(line, 0);
	assert_int_equal(tcp(hba, "10.0.0.1", "app", "alice", &line), HBA_MD5);
	hba_free(hba);

	/* hostssl only: a plain TCP client has no entry */
	hba = parse_ok("hostssl all all all cert\n");
	assert_int_equal(tls(hba, "::1", "app", "alice", &line), HBA_CERT);
	assert_int_equal(tcp(hba, "::1", "app", "alice", &line), HBA_REJECT);
	assert_int_equal(line, 0);
	hba_free(hba);
}

/* ---- addresses ---- */

static void test_ipv4_cidr_edges(void **state)
{
	struct hba *hba = parse_ok("host all all 192.168.1.0/24 trust\n"
	                           "host all all 10.0.0.128/25 md5\n"
	                           "host all all 172.16.0.5/32 password\n"
	                           "host all all 0.0.0.0/0 scram-sha-256\n");
	int line = -1;

	(void) state;
	assert_int_equal(tcp(hba, "192.168.1.0", "db", "u", &line), HBA_TRUST);
	assert_int_equal(tcp(hba, "192.168.1.255", "db", "u", &line), HBA_TRUST);
	assert_int_equal(tcp(hba, "192.168.0.255", "db", "u", &line), HBA_SCRAM_SHA_256);
	assert_int_equal(tcp(hba, "192.168.2.0", "db", "u", &line), HBA_SCRAM_SHA_256);
	/* a prefix that ends inside a byte */
	assert_int_equal(tcp(hba, "10.0.0.128", "db", "u", &line), HBA_MD5);
	assert_int_equal(tcp(hba, "10.0.0.255", "db", "u", &line), HBA_MD5);
	assert_int_equal(tcp(hba, "10.0.0.127", "db", "u", &line), HBA_SCRAM_SHA_256);
	/* /32 is one address */
	assert_int_equal(tcp(hba, "172.16.0.5", "db", "u", &line), HBA_PASSWORD);
	assert_int_equal(line, 3);
	assert_int_equal(tcp(hba, "172.16.0.4", "db", "u", &line), HBA_SCRAM_SHA_256);
	assert_int_equal(tcp(hba, "172.16.0.6", "db", "u", &line), HBA_SCRAM_SHA_256);
	/* /0 is every IPv4 address, and no IPv6 one */
	assert_int_equal(tcp(hba, "0.0.0.0", "db", "u", &line), HBA_SCRAM_SHA_256);
	assert_int_equal(tcp(hba, "255.255.255.255", "db", "u", &line), HBA_SCRAM_SHA_256);
	assert_int_equal(line, 4);
	assert_int_equal(tcp(hba, "2001:db8::1", "db", "u", &line), HBA_REJECT);
	assert_int_equal(line, 0);
	hba_free(hba);
}

static void test_ipv6_cidr_edges(void **state)
{
	struct hba *hba = parse_ok("host all all ::1/128 trust\n"
	                           "host all all 2001:db8:8000::/33 md5\n"
	                           "host all all 2001:db8::/32 password\n"
	                           "host all all ::/0 scram-sha-256\n");
	int line = -1;

	(void) state;
	assert_int_equal(tcp(hba, "::1", "db", "u", &line), HBA_TRUST);
	assert_int_equal(line, 1);
	assert_int_equal(tcp(hba, "::2", "db", "u", &line), HBA_SCRAM_SHA_256);
	assert_int_equal(tcp(hba, "::", "db", "u", &line), HBA_SCRAM_SHA_256);
	assert_int_equal(tcp(hba, "2001:db8:8000::", "db", "u", &line), HBA_MD5);
	assert_int_equal(tcp(hba, "2001:db8:ffff:ffff:ffff:ffff:ffff:ffff", "db", "u", &line), HBA_MD5);
	assert_int_equal(tcp(hba, "2001:db8:7fff:ffff::1", "db", "u", &line), HBA_PASSWORD);
	assert_int_equal(tcp(hba, "2001:db8::", "db", "u", &line), HBA_PASSWORD);
	assert_int_equal(tcp(hba, "2001:db9::", "db", "u", &line), HBA_SCRAM_SHA_256);
	assert_int_equal(tcp(hba, "2001:db7:ffff::", "db", "u", &line), HBA_SCRAM_SHA_256);
	assert_int_equal(tcp(hba, "ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff", "db", "u", &line), HBA_SCRAM_SHA_256);
	/* ::/0 is every IPv6 address, and no IPv4 one */
	assert_int_equal(tcp(hba, "127.0.0.1", "db", "u", &line), HBA_REJECT);
	hba_free(hba);
}

static void test_mask_column_form(void **state)
{
	struct hba *hba = parse_ok("host all all 127.0.0.1 255.255.255.255 trust\n"
	                           "host all all 10.0.0.0  255.0.0.0       md5\n"
	                           "host all all fe80:: ffff:ffff:ffff:ffff:: password\n");
	int line = -1;

	(void) state;
	assert_int_equal(tcp(hba, "127.0.0.1", "db", "u", &line), HBA_TRUST);
	assert_int_equal(tcp(hba, "127.0.0.2", "db", "u", &line), HBA_REJECT);
	assert_int_equal(tcp(hba, "10.255.255.255", "db", "u", &line), HBA_MD5);
	assert_int_equal(line, 2);
	assert_int_equal(tcp(hba, "11.0.0.0", "db", "u", &line), HBA_REJECT);
	assert_int_equal(tcp(hba, "fe80::abcd:1", "db", "u", &line), HBA_PASSWORD);
	assert_int_equal(line, 3);
	assert_int_equal(tcp(hba, "fe80:0:0:1::1", "db", "u", &line), HBA_REJECT);
	hba_free(hba);
}

static void test_host_bits_after_the_prefix_are_ignored(void **state)
{
	/* PostgreSQL compares under the mask: 192.168.1.77/24 is 192.168.1.0/24 */
	struct hba *hba = parse_ok("host all all 192.168.1.77/24 trust\n");

	(void) state;
	assert_int_equal(tcp(hba, "192.168.1.5", "db", "u", NULL), HBA_TRUST);
	assert_int_equal(tcp(hba, "192.168.2.77", "db", "u", NULL), HBA_REJECT);
	hba_free(hba);
}

static void test_ipv4_mapped_ipv6_client_meets_ipv4_rules(void **state)
{
	struct hba *hba = parse_ok("host all all ::/0 reject\n"
	                           "host all all 10.0.0.0/8 md5\n"
	                           "host all all 0.0.0.0/0 scram-sha-256\n");
	int line = -1;

	(void) state;
	/* a dual-stack listener reports IPv4 clients as ::ffff:a.b.c.d */
	assert_int_equal(tcp(hba, "::ffff:10.1.2.3", "db", "u", &line), HBA_MD5);
	assert_int_equal(line, 2);
	assert_int_equal(tcp(hba, "::ffff:192.0.2.1", "db", "u", &line), HBA_SCRAM_SHA_256);
	assert_int_equal(line, 3);
	/* a real IPv6 client still meets the IPv6 rule */
	assert_int_equal(tcp(hba, "2001:db8::1", "db", "u", &line), HBA_REJECT);
	assert_int_equal(line, 1);
	hba_free(hba);

	hba = parse_ok("host all all 127.0.0.1/32 trust\n");
	assert_int_equal(tcp(hba, "::ffff:127.0.0.1", "db", "u", &line), HBA_TRUST);
	assert_int_equal(tcp(hba, "::ffff:127.0.0.2", "db", "u", &line), HBA_REJECT);
	/* ::127.0.0.1 (IPv4-compatible, not mapped) is an IPv6 address */
	assert_int_equal(tcp(hba, "::127.0.0.1", "db", "u", &line), HBA_REJECT);
	hba_free(hba);
}

static void test_address_all_takes_ipv4_and_ipv6_but_needs_an_address(void **state)
{
	struct hba *hba = parse_ok("host all all all trust\n");
	struct sockaddr_storage other;
	int line = -1;

	(void) state;
	assert_int_equal(tcp(hba, "203.0.113.9", "db", "u", &line), HBA_TRUST);
	assert_int_equal(tcp(hba, "2001:db8::9", "db", "u", &line), HBA_TRUST);
	assert_int_equal(hba_match(hba, false, false, NULL, "db", "u", &line), HBA_REJECT);
	memset(&other, 0, sizeof(other));
	other.ss_family = AF_UNIX;
	assert_int_equal(hba_match(hba, false, false, (struct sockaddr *) &other, "db", "u", &line), HBA_REJECT);
	hba_free(hba);
}

static void test_samehost_and_samenet_use_this_machines_interfaces(void **state)
{
	struct hba *hba = parse_ok("host all all samehost trust\n"
	                           "host all all samenet md5\n");
	int line = -1;

	(void) state;
	/* 127.0.0.1 is on lo (127.0.0.0/8); 127.0.0.2 is in its net but not on it */
	assert_int_equal(tcp(hba, "127.0.0.1", "db", "u", &line), HBA_TRUST);
	assert_int_equal(line, 1);
	assert_int_equal(tcp(hba, "::ffff:127.0.0.1", "db", "u", &line), HBA_TRUST);
	assert_int_equal(tcp(hba, "127.0.0.2", "db", "u", &line), HBA_MD5);
	assert_int_equal(line, 2);
	if (is_local_address("198.51.100.77"))
		skip();
	assert_int_equal(tcp(hba, "198.51.100.77", "db", "u", &line), HBA_REJECT);
	hba_free(hba);
}

/* ---- database and user columns ---- */

static void test_database_and_user_keywords_and_lists(void **state)
{
	struct hba *hba = parse_ok("local sameuser all trust\n"
	                           "local app,reports alice,bob md5\n"
	                           "local sales, ops   carol, \"dave\" password\n"
	                           "local all all reject\n");
	int line = -1;

	(void) state;
	/* sameuser: the database named like the user */
	assert_int_equal(unix_socket(hba, "alice", "alice", &line), HBA_TRUST);
	assert_int_equal(unix_socket(hba, "app", "alice", &line), HBA_MD5);
	assert_int_equal(line, 2);
	assert_int_equal(unix_socket(hba, "reports", "bob", &line), HBA_MD5);
	assert_int_equal(unix_socket(hba, "reports", "carol", &line), HBA_REJECT);
	assert_int_equal(line, 4);
	/* blanks after a comma keep the list going */
	assert_int_equal(unix_socket(hba, "ops", "dave", &line), HBA_PASSWORD);
	assert_int_equal(line, 3);
	assert_int_equal(unix_socket(hba, "ops", "carol", &line), HBA_PASSWORD);
	/* names are compared exactly */
	assert_int_equal(unix_socket(hba, "App", "alice", &line), HBA_REJECT);
	assert_int_equal(unix_socket(hba, "app", "Alice", &line), HBA_REJECT);
	hba_free(hba);
}

static void test_quoted_keywords_are_plain_names(void **state)
{
	struct hba *hba = parse_ok("local \"all\" all trust\n"
	                           "local \"sameuser\" \"+admins\" md5\n"
	                           "local \"my db\" \"o\"\"brien\" password\n"
	                           "local \"replication\" \"all\" scram-sha-256\n"
	                           "local \"@dbs\" all trust\n");
	int line = -1;

	(void) state;
	assert_int_equal(unix_socket(hba, "all", "alice", &line), HBA_TRUST);
	assert_int_equal(unix_socket(hba, "app", "alice", &line), HBA_REJECT);
	assert_int_equal(unix_socket(hba, "sameuser", "+admins", &line), HBA_MD5);
	assert_int_equal(unix_socket(hba, "sameuser", "sameuser", &line), HBA_REJECT);
	assert_int_equal(unix_socket(hba, "my db", "o\"brien", &line), HBA_PASSWORD);
	assert_int_equal(unix_socket(hba, "replication", "all", &line), HBA_SCRAM_SHA_256);
	assert_int_equal(unix_socket(hba, "replication", "alice", &line), HBA_REJECT);
	assert_int_equal(unix_socket(hba, "@dbs", "alice", &line), HBA_TRUST);
	assert_int_equal(line, 5);
	hba_free(hba);
}

static void test_replication_keyword_matches_only_physical_replication(void **state)
{
	struct hba *hba = parse_ok("host replication all all trust\n"
	                           "host replication,app all all password\n"
	                           "host all all all md5\n");
	struct hba *no_repl = parse_ok("host all all all md5\n");
	struct sockaddr_storage ss = ip("10.0.0.1");
	int line = -1;

	(void) state;
	/* an ordinary or logical replication client: a database called
	 * "replication" is not what the keyword means */
	assert_int_equal(tcp(hba, "10.0.0.1", "replication", "u", &line), HBA_MD5);
	assert_int_equal(line, 3);
	assert_int_equal(tcp(hba, "10.0.0.1", "app", "u", &line), HBA_PASSWORD);
	assert_int_equal(line, 2);
	/* a physical replication client (pg_basebackup): the keyword's lines only */
	assert_int_equal(hba_match_replication(hba, false, false, (struct sockaddr *) &ss, "u", &line), HBA_TRUST);
	assert_int_equal(line, 1);
	assert_int_equal(hba_match_replication(no_repl, false, false, (struct sockaddr *) &ss, "u", &line),
	                 HBA_REJECT);
	assert_int_equal(line, 0);
	hba_free(hba);
	hba_free(no_repl);
}

static void test_at_file_lists_names_relative_to_the_hba_file(void **state)
{
	char dir[] = "/tmp/test_hba.XXXXXX", path[4096], err[512];
	struct hba *hba;
	int line = -1;

	(void) state;
	assert_non_null(mkdtemp(dir));
	snprintf(path, sizeof(path), "%s/sub", dir);
	assert_int_equal(mkdir(path, 0700), 0);
	snprintf(path, sizeof(path), "%s/users.txt", dir);
	write_file(path, "# staff\nalice, bob\tcarol\n\"eve smith\" @sub/more.txt\n");
	/* more.txt names even_more.txt relative to its own directory, sub/ */
	snprintf(path, sizeof(path), "%s/sub/more.txt", dir);
	write_file(path, "frank @even_more.txt\n");
	snprintf(path, sizeof(path), "%s/sub/even_more.txt", dir);
	write_file(path, "grace\n");
	snprintf(path, sizeof(path), "%s/sub/dbs.txt", dir);
	write_file(path, "app reports\n");
	snprintf(path, sizeof(path), "%s/pg_hba.conf", dir);
	write_file(path, "local @sub/dbs.txt @users.txt md5\n"
	                 "local all all reject\n");

	hba = hba_load(path, err, sizeof(err));
	if (!hba)
		fail_msg("%s", err);
	assert_int_equal(unix_socket(hba, "app", "alice", &line), HBA_MD5);
	assert_int_equal(line, 1);
	assert_int_equal(unix_socket(hba, "reports", "carol", &line), HBA_MD5);
	assert_int_equal(unix_socket(hba, "reports", "eve smith", &line), HBA_MD5);
	assert_int_equal(unix_socket(hba, "reports", "frank", &line), HBA_MD5);
	assert_int_equal(unix_socket(hba, "reports", "grace", &line), HBA_MD5);
	assert_int_equal(unix_socket(hba, "reports", "staff", &line), HBA_REJECT);
	assert_int_equal(unix_socket(hba, "other", "alice", &line), HBA_REJECT);
	assert_int_equal(line, 2);
	hba_free(hba);

	/* a missing @file refuses the hba file at the line naming it */
	write_file(path, "local all all trust\nlocal all @nobody.txt md5\n");
	assert_null(hba_load(path, err, sizeof(err)));
	{
		char want[8192];

		snprintf(want, sizeof(want),
		         "%s/pg_hba.conf:2: could not open file \"%s/nobody.txt\": No such file or directory",
		         dir, dir);
		assert_string_equal(err, want);
	}

	/* a bad name inside an @file is reported where it is written */
	snprintf(path, sizeof(path), "%s/users.txt", dir);
	write_file(path, "alice\n+admins\n");
	snprintf(path, sizeof(path), "%s/pg_hba.conf", dir);
	write_file(path, "local all @users.txt md5\n");
	assert_null(hba_load(path, err, sizeof(err)));
	{
		char want[8192];

		snprintf(want, sizeof(want),
		         "%s/users.txt:2: group membership \"+admins\" is not supported by pgsluice "
		         "(role membership is known only to the server); list the users or use an @file", dir);
		assert_string_equal(err, want);
	}

	/* an @file that names itself stops at the nesting limit */
	snprintf(path, sizeof(path), "%s/users.txt", dir);
	write_file(path, "@users.txt\n");
	snprintf(path, sizeof(path), "%s/pg_hba.conf", dir);
	assert_null(hba_load(path, err, sizeof(err)));
	assert_non_null(strstr(err, "nested more than 10 deep"));

	snprintf(path, sizeof(path), "%s/sub/more.txt", dir);
	unlink(path);
	snprintf(path, sizeof(path), "%s/sub/even_more.txt", dir);
	unlink(path);
	snprintf(path, sizeof(path), "%s/sub/dbs.txt", dir);
	unlink(path);
	snprintf(path, sizeof(path), "%s/sub", dir);
	rmdir(path);
	snprintf(path, sizeof(path), "%s/users.txt", dir);
	unlink(path);
	snprintf(path, sizeof(path), "%s/pg_hba.conf", dir);
	unlink(path);
	rmdir(dir);
}

/* ---- lines ---- */

static void test_comments_crlf_and_backslash_continuation(void **state)
{
	struct hba *hba = parse_ok("# TYPE DATABASE USER ADDRESS METHOD\r\n"
	                           "host all alice \\\n"
	                           "     10.0.0.0/8 \\\r\n"
	                           "     md5   # a record over three lines\r\n"
	                           "host all all all trust#no blank before the comment\n"
	                           "# a comment that goes on \\\n"
	                           "local all all reject\n"
	                           "local all all password");
	int line = -1;

	(void) state;
	assert_int_equal(tcp(hba, "10.0.0.1", "db", "alice", &line), HBA_MD5);
	assert_int_equal(line, 2);
	assert_int_equal(tcp(hba, "10.0.0.1", "db", "bob", &line), HBA_TRUST);
	assert_int_equal(line, 5);
	/* the continued comment swallowed "local all all reject" */
	assert_int_equal(unix_socket(hba, "db", "bob", &line), HBA_PASSWORD);
	assert_int_equal(line, 8);
	hba_free(hba);

	/* an error in a continued record names its first line */
	assert_refused("local all all trust\n"
	               "host all all \\\n"
	               "  10.0.0.0/8 \\\n"
	               "  sspi\n",
	               "pg_hba.conf:2: authentication method \"sspi\" is not supported by pgsluice");
}

/* peer and ident (local: peer), map=, and ldap/pam rules that load but refuse at login */
static void test_peer_ident_map_ldap_and_pam_rules_load(void **state)
{
	int line;
	struct hba *hba = parse_ok("local app all peer map=ops\n"
	                           "local all all ident\n"
	                           "host all alice all ident map=x\n"
	                           "host all all 10.0.0.0/8 ldap ldapserver=ldap.example.com ldapprefix=\"cn=\"\n"
	                           "host all all all pam pamservice=postgresql\n"
	                           "hostssl all all all cert map=certs\n");

	(void) state;
	assert_int_equal(unix_socket(hba, "app", "bob", &line), HBA_PEER);
	assert_string_equal(hba_map(hba, line), "ops");
	assert_int_equal(unix_socket(hba, "other", "bob", &line), HBA_PEER);
	assert_int_equal(line, 2);
	assert_null(hba_map(hba, line));
	assert_int_equal(tcp(hba, "192.0.2.1", "db", "alice", &line), HBA_IDENT);
	assert_int_equal(tcp(hba, "10.1.2.3", "db", "bob", &line), HBA_LDAP);
	assert_int_equal(tcp(hba, "192.0.2.1", "db", "bob", &line), HBA_PAM);
	assert_int_equal(tls(hba, "192.0.2.1", "db", "bob", &line), HBA_PAM);
	hba_free(hba);
	hba = parse_ok("hostssl all all all cert map=certs\n");
	assert_int_equal(tls(hba, "192.0.2.1", "db", "bob", &line), HBA_CERT);
	assert_string_equal(hba_map(hba, line), "certs");
	hba_free(hba);
	assert_refused("host all all all peer\n", "pg_hba.conf:1: peer authentication is only supported on local sockets");
	assert_refused("local all all peer map=\n", "pg_hba.conf:1: map= needs the name of a map in auth_ident_file");
	assert_refused("local all all pam ldapserver=x\n",
	               "pg_hba.conf:1: unrecognized authentication option name: \"ldapserver\"");
}

/* ldap lines keep their options for the login (hba_ldap); PgBouncer's ",name=value" among them */
static void test_ldap_options_are_kept_and_checked(void **state)
{
	int line;
	struct hba *hba = parse_ok("host all all all ldap ldapserver=127.0.0.1 \"ldapport\"=3890 "
	                           "ldapbasedn=\"dc=example,dc=net\" ,ldapsearchfilter=\"uid=$username\"\n"
	                           "host all all all md5\n");
	const struct ldap_params *p;

	(void) state;
	assert_int_equal(tcp(hba, "192.0.2.1", "db", "bob", &line), HBA_LDAP);
	p = hba_ldap(hba, line);
	assert_non_null(p);
	assert_string_equal(p->server, "127.0.0.1");
	assert_int_equal(p->port, 3890);
	assert_string_equal(p->basedn, "dc=example,dc=net");
	assert_string_equal(p->searchfilter, "uid=$username");
	assert_null(hba_ldap(hba, 2));
	hba_free(hba);
	assert_refused("host all all all ldap ldapport=389\n",
	               "pg_hba.conf:1: authentication method \"ldap\" requires argument \"ldapserver\" to be set");
	assert_refused("host all all all ldap ldapserver=x ldapprefix=a ldapbasedn=b\n",
	               "pg_hba.conf:1: cannot mix options for simple bind and search+bind modes");
	assert_refused("host ,all all all md5\n", "pg_hba.conf:1: empty entry in a comma-separated list");
	assert_refused("host all all all md5 ,\n", "pg_hba.conf:1: empty entry in a comma-separated list");
}

static void test_options_that_restate_cert_are_accepted(void **state)
{
	struct hba *hba = parse_ok("hostssl all all all cert clientcert=verify-full clientname=CN\n");

	(void) state;
	assert_int_equal(tls(hba, "10.0.0.1", "db", "u", NULL), HBA_CERT);
	hba_free(hba);
}

/* ---- refused files ---- */

static void test_unsupported_methods_refuse_the_file(void **state)
{
	static const char *const methods[] = {
		"gss", "sspi", "radius", "bsd", NULL
	};
	char text[256], want[256];
	size_t i;

	(void) state;
	for (i = 0; methods[i]; i++) {
		snprintf(text, sizeof(text), "local all all trust\nlocal all all %s\n", methods[i]);
		snprintf(want, sizeof(want),
		         "pg_hba.conf:2: authentication method \"%s\" is not supported by pgsluice", methods[i]);
		assert_refused(text, want);
	}
	assert_refused("host all all all md6\n", "pg_hba.conf:1: invalid authentication method \"md6\"");
	assert_refused("host all all all MD5\n", "pg_hba.conf:1: invalid authentication method \"MD5\"");
	assert_refused("host all all all cert\n",
	               "pg_hba.conf:1: cert authentication is only supported on hostssl connections");
	assert_refused("local all all cert\n",
	               "pg_hba.conf:1: cert authentication is only supported on hostssl connections");
	assert_refused("host all all all md5,trust\n",
	               "pg_hba.conf:1: multiple values specified for authentication type");
}

static void test_group_samerole_and_regex_names_refuse_the_file(void **state)
{
	(void) state;
	assert_refused("local all all trust\n\nhost all +admins 10.0.0.0/8 md5\n",
	               "pg_hba.conf:3: group membership \"+admins\" is not supported by pgsluice "
	               "(role membership is known only to the server); list the users or use an @file");
	assert_refused("local samerole all md5\n",
	               "pg_hba.conf:1: database keyword \"samerole\" is not supported by pgsluice "
	               "(role membership is known only to the server); list the databases");
	assert_refused("local samegroup all md5\n",
	               "pg_hba.conf:1: database keyword \"samegroup\" is not supported by pgsluice "
	               "(role membership is known only to the server); list the databases");
	assert_refused("local all /^app md5\n",
	               "pg_hba.conf:1: regular expression \"/^app\" is not supported by pgsluice; list the names");
	assert_refused("local /^app all md5\n",
	               "pg_hba.conf:1: regular expression \"/^app\" is not supported by pgsluice; list the names");
	assert_refused("local all @ md5\n", "pg_hba.conf:1: missing file name after \"@\"");
}

static void test_host_names_refuse_the_file(void **state)
{
	(void) state;
	assert_refused("host all all db.example.com md5\n",
	               "pg_hba.conf:1: host name \"db.example.com\" in the address column is not supported "
	               "by pgsluice (no DNS lookups at login); write an IP address range such as 10.0.0.0/8");
	assert_refused("host all all .example.com md5\n",
	               "pg_hba.conf:1: host name \".example.com\" in the address column is not supported "
	               "by pgsluice (no DNS lookups at login); write an IP address range such as 10.0.0.0/8");
	/* a quoted keyword is a host name, as in PostgreSQL */
	assert_refused("host all all \"all\" md5\n",
	               "pg_hba.conf:1: host name \"all\" in the address column is not supported "
	               "by pgsluice (no DNS lookups at login); write an IP address range such as 10.0.0.0/8");
}

static void test_bad_addresses_refuse_the_file(void **state)
{
	(void) state;
	assert_refused("host all all 10.0.0.0/33 md5\n",
	               "pg_hba.conf:1: invalid CIDR mask in address \"10.0.0.0/33\" (0 to 32 for IPv4)");
	assert_refused("host all all ::1/129 md5\n",
	               "pg_hba.conf:1: invalid CIDR mask in address \"::1/129\" (0 to 128 for IPv6)");
	assert_refused("host all all 10.0.0.0/ md5\n",
	               "pg_hba.conf:1: invalid CIDR mask in address \"10.0.0.0/\" (0 to 32 for IPv4)");
	assert_refused("host all all 10.0.0.0/8x md5\n",
	               "pg_hba.conf:1: invalid CIDR mask in address \"10.0.0.0/8x\" (0 to 32 for IPv4)");
	assert_refused("host all all 10.0.0.0/-1 md5\n",
	               "pg_hba.conf:1: invalid CIDR mask in address \"10.0.0.0/-1\" (0 to 32 for IPv4)");
	assert_refused("host all all 10.0.0.0/99999999999999999999 md5\n",
	               "pg_hba.conf:1: invalid CIDR mask in address \"10.0.0.0/99999999999999999999\" (0 to 32 for IPv4)");
	assert_refused("host all all 10.0.0.256/32 md5\n", "pg_hba.conf:1: invalid IP address \"10.0.0.256\"");
	assert_refused("host all all db.example.com/32 md5\n", "pg_hba.conf:1: invalid IP address \"db.example.com\"");
	assert_refused("host all all 10.0.0 md5\n", "pg_hba.conf:1: invalid IP address \"10.0.0\"");
	assert_refused("host all all fe80::1%eth0 md5\n", "pg_hba.conf:1: invalid IP address \"fe80::1%eth0\"");
	assert_refused("host all all 10.0.0.1 md5\n",
	               "pg_hba.conf:1: invalid IP mask \"md5\"; write \"10.0.0.1/len\" or give the mask in the next column");
	assert_refused("host all all 10.0.0.1\n", "pg_hba.conf:1: end-of-line before netmask specification");
	assert_refused("host all all 10.0.0.1 ffff:: md5\n",
	               "pg_hba.conf:1: IP address and mask do not match: \"10.0.0.1\" \"ffff::\"");
	assert_refused("host all all 10.0.0.0/8,10.1.0.0/16 md5\n",
	               "pg_hba.conf:1: multiple values specified for host address");
}

static void test_malformed_lines_refuse_the_file(void **state)
{
	(void) state;
	assert_refused("local all all trust\nlocal\n", "pg_hba.conf:2: end-of-line before database specification");
	assert_refused("local all\n", "pg_hba.conf:1: end-of-line before role specification");
	assert_refused("local all all\n", "pg_hba.conf:1: end-of-line before authentication method");
	assert_refused("host all all\n", "pg_hba.conf:1: end-of-line before IP address specification");
	assert_refused("host all all 10.0.0.0/8\n", "pg_hba.conf:1: end-of-line before authentication method");
	assert_refused("hots all all all md5\n", "pg_hba.conf:1: invalid connection type \"hots\"");
	assert_refused("local,host all all md5\n", "pg_hba.conf:1: multiple values specified for connection type");
	assert_refused("hostgssenc all all all md5\n",
	               "pg_hba.conf:1: connection type \"hostgssenc\" is not supported by pgsluice (no GSSAPI)");
	assert_refused("include other.conf\n",
	               "pg_hba.conf:1: \"include\" is not supported by pgsluice; write the rules in this file");
	assert_refused("local \"all all trust\n", "pg_hba.conf:1: unterminated quoted string");
	assert_refused("local app,,reports all trust\n", "pg_hba.conf:1: empty entry in a comma-separated list");
	assert_refused("local app, all trust\n", "pg_hba.conf:1: end-of-line before authentication method");
	assert_refused("local app all, # oops\n", "pg_hba.conf:1: empty entry in a comma-separated list");
}

static void test_options_that_pgsluice_cannot_honour_refuse_the_file(void **state)
{
	(void) state;
	assert_refused("host all all all md5 garbage\n",
	               "pg_hba.conf:1: authentication option not in name=value format: garbage");
	assert_refused("host all all all md5 =x\n",
	               "pg_hba.conf:1: authentication option not in name=value format: =x");
	assert_refused("host all all all md5 ldapserver=x\n",
	               "pg_hba.conf:1: unrecognized authentication option name: \"ldapserver\"");
	assert_refused("host all all all md5 map=m\n",
	               "pg_hba.conf:1: authentication option \"map\" is only valid for authentication methods "
	               "ident, peer, gssapi, sspi, and cert");
	assert_refused("hostssl all all all md5 clientcert=verify-full\n",
	               "pg_hba.conf:1: option \"clientcert\" is not supported by pgsluice with method \"md5\"; "
	               "use method \"cert\"");
	assert_refused("host all all all md5 clientcert=verify-ca\n",
	               "pg_hba.conf:1: clientcert can only be configured for \"hostssl\" rows");
	assert_refused("hostssl all all all cert clientcert=verify-ca\n",
	               "pg_hba.conf:1: clientcert only accepts \"verify-full\" when using \"cert\" authentication");
	assert_refused("hostssl all all all cert clientcert=yes\n",
	               "pg_hba.conf:1: invalid value for clientcert: \"yes\"");
	assert_refused("hostssl all all all cert clientname=DN\n",
	               "pg_hba.conf:1: clientname=DN is not supported by pgsluice; the user name is the certificate's CN");
	assert_refused("hostssl all all all md5 clientname=CN\n",
	               "pg_hba.conf:1: clientname can only be configured with method \"cert\"");
}

static void test_first_bad_line_refuses_the_whole_file(void **state)
{
	char err[512];

	(void) state;
	/* good lines before and after do not make it load */
	assert_null(hba_parse("local all all trust\nhost all all 10.0.0.0/40 md5\nlocal all all peer\n",
	                      "pg_hba.conf", err, sizeof(err)));
	assert_string_equal(err, "pg_hba.conf:2: invalid CIDR mask in address \"10.0.0.0/40\" (0 to 32 for IPv4)");
	/* default name, a short buffer and no buffer at all */
	assert_null(hba_parse("local all all sspi\n", NULL, err, sizeof(err)));
	assert_string_equal(err, "auth_hba_file:1: authentication method \"sspi\" is not supported by pgsluice");
	assert_null(hba_parse("local all all sspi\n", "pg_hba.conf", err, 8));
	assert_string_equal(err, "pg_hba.");
	assert_null(hba_parse("local all all sspi\n", "pg_hba.conf", NULL, 0));
}

static void test_load_reports_unreadable_files(void **state)
{
	char err[512];

	(void) state;
	assert_null(hba_load("/nonexistent/pg_hba.conf", err, sizeof(err)));
	assert_string_equal(err, "could not open file \"/nonexistent/pg_hba.conf\": No such file or directory");
}

static void test_load_refuses_nul_bytes(void **state)
{
	char path[] = "/tmp/test_hba_nul.XXXXXX", err[512], want[600];
	int fd;

	(void) state;
	fd = mkstemp(path);
	assert_true(fd >= 0);
	assert_int_equal(write(fd, "local all all trust\nlocal all\0 all md5\n", 39), 39);
	close(fd);
	assert_null(hba_load(path, err, sizeof(err)));
	snprintf(want, sizeof(want), "%s:2: unexpected NUL byte", path);
	assert_string_equal(err, want);
	unlink(path);
}

static void test_method_names_are_as_written_in_pg_hba_conf(void **state)
{
	(void) state;
	assert_string_equal(hba_method_name(HBA_TRUST), "trust");
	assert_string_equal(hba_method_name(HBA_REJECT), "reject");
	assert_string_equal(hba_method_name(HBA_MD5), "md5");
	assert_string_equal(hba_method_name(HBA_SCRAM_SHA_256), "scram-sha-256");
	assert_string_equal(hba_method_name(HBA_PASSWORD), "password");
	assert_string_equal(hba_method_name(HBA_CERT), "cert");
	assert_string_equal(hba_method_name((enum hba_method) 99), "unknown");
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_first_matching_rule_wins),
		cmocka_unit_test(test_no_matching_rule_rejects_with_line_zero),
		cmocka_unit_test(test_empty_file_rejects_everyone),
		cmocka_unit_test(test_reject_rule_reports_its_line),
		cmocka_unit_test(test_local_rules_match_only_the_unix_socket),
		cmocka_unit_test(test_hostssl_and_hostnossl_follow_tls),
		cmocka_unit_test(test_ipv4_cidr_edges),
		cmocka_unit_test(test_ipv6_cidr_edges),
		cmocka_unit_test(test_mask_column_form),
		cmocka_unit_test(test_host_bits_after_the_prefix_are_ignored),
		cmocka_unit_test(test_ipv4_mapped_ipv6_client_meets_ipv4_rules),
		cmocka_unit_test(test_address_all_takes_ipv4_and_ipv6_but_needs_an_address),
		cmocka_unit_test(test_samehost_and_samenet_use_this_machines_interfaces),
		cmocka_unit_test(test_database_and_user_keywords_and_lists),
		cmocka_unit_test(test_quoted_keywords_are_plain_names),
		cmocka_unit_test(test_replication_keyword_matches_only_physical_replication),
		cmocka_unit_test(test_at_file_lists_names_relative_to_the_hba_file),
		cmocka_unit_test(test_comments_crlf_and_backslash_continuation),
		cmocka_unit_test(test_options_that_restate_cert_are_accepted),
		cmocka_unit_test(test_peer_ident_map_ldap_and_pam_rules_load),
		cmocka_unit_test(test_ldap_options_are_kept_and_checked),
		cmocka_unit_test(test_unsupported_methods_refuse_the_file),
		cmocka_unit_test(test_group_samerole_and_regex_names_refuse_the_file),
		cmocka_unit_test(test_host_names_refuse_the_file),
		cmocka_unit_test(test_bad_addresses_refuse_the_file),
		cmocka_unit_test(test_malformed_lines_refuse_the_file),
		cmocka_unit_test(test_options_that_pgsluice_cannot_honour_refuse_the_file),
		cmocka_unit_test(test_first_bad_line_refuses_the_whole_file),
		cmocka_unit_test(test_load_reports_unreadable_files),
		cmocka_unit_test(test_load_refuses_nul_bytes),
		cmocka_unit_test(test_method_names_are_as_written_in_pg_hba_conf),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
