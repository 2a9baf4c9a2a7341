/* SPDX-License-Identifier: PostgreSQL */
/*
 * fuzz_auth_file.c - libFuzzer target for auth.c's auth_file parser
 * (userlist_parse, PgBouncer's userlist.txt format): any text gives a list
 * or an error naming a line; every entry found can be looked up by name and
 * classified, SCRAM secrets parsed, and the MD5 check runs on it.
 */
#include "fuzz.h"

#include "auth.h"
#include "scram.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	char *text = fuzz_cstring(data, size);
	char err[512];
	struct userlist *list;

	err[0] = '\0';
	list = userlist_parse(text, "userlist.txt", err, sizeof err);
	if (!list) {
		CHECK(err[0] != '\0' && strnlen(err, sizeof err) < sizeof err);
	} else {
		for (size_t i = 0; i < list->n_entries; i++) {
			const struct userlist_entry *e = &list->entries[i];
			static const uint8_t salt[4] = { 1, 2, 3, 4 };

			CHECK(e->name != NULL && e->name[0] != '\0' && e->password != NULL);
			CHECK(userlist_find(list, e->name) != NULL);
			CHECK(e->kind == password_kind_of(e->password));
			if (e->kind == PASSWORD_SCRAM) {
				struct scram_secret sc;

				if (scram_parse_secret(e->password, &sc))
					CHECK(sc.iterations >= 1 && sc.salt_len <= SCRAM_MAX_SALT_LEN);
			}
			if (e->kind == PASSWORD_MD5)
				(void) md5_check_response(e->password, e->name, salt, "md5" "00000000000000000000000000000000");
		}
		userlist_free(list);
	}
	free(text);
	return 0;
}
