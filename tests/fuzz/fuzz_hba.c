/* SPDX-License-Identifier: PostgreSQL */
/*
 * fuzz_hba.c - libFuzzer target for hba.c (auth_hba_file in pg_hba.conf
 * format): any text gives rules or an error, and the rules answer a few
 * lookups (unix socket, IPv4, IPv6, TLS) with a method hba.h lists.
 * Inputs that could make "@file" read an absolute path (a '/' after an '@')
 * are skipped: /dev/zero or a FIFO would stall the run, and auth_hba_file is
 * written by the administrator, not by clients. Relative "@file" names are
 * looked up in a directory that does not exist.
 */
#include "fuzz.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>

#include "hba.h"

static bool known_method(enum hba_method m)
{
	return m == HBA_TRUST || m == HBA_REJECT || m == HBA_MD5 || m == HBA_SCRAM_SHA_256 ||
	       m == HBA_PASSWORD || m == HBA_CERT || m == HBA_PEER || m == HBA_IDENT || m == HBA_LDAP ||
	       m == HBA_PAM;
}

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
	fuzz_quiet_log();
	return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	const uint8_t *at = memchr(data, '@', size);
	char err[512];
	struct hba *hba;
	char *text;

	if (at && memchr(at, '/', size - (size_t) (at - data)))
		return 0;
	text = fuzz_cstring(data, size);
	err[0] = '\0';
	hba = hba_parse(text, "/nonexistent-pgsluice-fuzz/pg_hba.conf", err, sizeof err);
	if (!hba) {
		CHECK(err[0] != '\0' && strnlen(err, sizeof err) < sizeof err);
	} else {
		struct sockaddr_in v4 = { .sin_family = AF_INET };
		struct sockaddr_in6 v6 = { .sin6_family = AF_INET6 };
		struct sockaddr_in6 mapped = { .sin6_family = AF_INET6 };
		int line = -1;

		inet_pton(AF_INET, "10.1.2.3", &v4.sin_addr);
		inet_pton(AF_INET6, "2001:db8::1", &v6.sin6_addr);
		inet_pton(AF_INET6, "::ffff:127.0.0.1", &mapped.sin6_addr);
		CHECK(known_method(hba_match(hba, true, false, NULL, "app", "app", &line)) && line >= 0);
		CHECK(known_method(hba_match(hba, false, false, (struct sockaddr *) &v4, "app", "alice", &line)));
		CHECK(known_method(hba_match(hba, false, true, (struct sockaddr *) &v6, "all", "bob", &line)));
		CHECK(known_method(hba_match(hba, false, true, (struct sockaddr *) &mapped, "pgsluice", "admin",
		                             NULL)));
		CHECK(known_method(hba_match(hba, false, false, NULL, NULL, NULL, NULL)));
		CHECK(hba_method_name(hba_match(hba, true, false, NULL, "db", "u", NULL)) != NULL);
		hba_free(hba);
	}
	free(text);
	return 0;
}
