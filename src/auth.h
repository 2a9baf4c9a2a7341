/* SPDX-License-Identifier: PostgreSQL */
/*
 * auth.h - who may log in: the auth_file (PgBouncer's userlist.txt format)
 * and the MD5 password scheme of PostgreSQL. Pure functions, no sockets;
 * SCRAM lives in scram.h.
 */
#ifndef SLUICE_AUTH_H
#define SLUICE_AUTH_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* "md5" + 32 hex digits + NUL */
#define MD5_PASSWD_LEN 35

enum password_kind { PASSWORD_PLAIN, PASSWORD_MD5, PASSWORD_SCRAM };

struct userlist_entry {
	char *name;
	char *password;            /* as written: plain text, "md5..." or "SCRAM-SHA-256$..." */
	enum password_kind kind;
};

struct userlist {
	struct userlist_entry *entries;   /* sorted by name */
	size_t n_entries;
};

/*
 * Parse an auth_file: one `"user" "password"` per line, '"' inside a field
 * doubled, lines starting with ';' or '#' and blank lines ignored, further
 * fields ignored (PgBouncer's format, doc "Authentication file format").
 * A field may not span lines; the password may be empty, the user name not.
 * When a user appears twice the later line wins, as a later setting would.
 * Returns a new list (free with userlist_free), or NULL with errbuf set to
 * "file:line: message" when a line is malformed, or to
 * "could not open file "path": reason" when the file cannot be read.
 */
struct userlist *userlist_load(const char *path, char *errbuf, size_t errlen);

/* Same as userlist_load on text in memory; name is used in messages. */
struct userlist *userlist_parse(const char *text, const char *name, char *errbuf, size_t errlen);

void userlist_free(struct userlist *list);

/* The entry for user or NULL (binary search). Borrowed from list. */
const struct userlist_entry *userlist_find(const struct userlist *list, const char *user);

/* Classify a stored password (plain, md5 hash, SCRAM secret). */
enum password_kind password_kind_of(const char *password);

/*
 * PostgreSQL's stored MD5 form: "md5" || hex(md5(password || user)).
 * out must hold MD5_PASSWD_LEN + 1 bytes. (PostgreSQL src/common/md5_common.c
 * pg_md5_encrypt semantics; protocol-flow.html AuthenticationMD5Password.)
 * out is "" when OpenSSL offers no MD5 (FIPS mode), which matches nothing.
 */
void md5_password_hash(const char *password, const char *user, char out[MD5_PASSWD_LEN + 1]);

/*
 * The MD5 response to salt for a stored hash ("md5..." as above):
 * "md5" || hex(md5(hash_without_prefix || salt)). out as above; "" also
 * when stored_md5 is not an md5 hash.
 */
void md5_salted_response(const char *stored_md5, const uint8_t salt[4],
                         char out[MD5_PASSWD_LEN + 1]);

/*
 * Check a client's MD5 PasswordMessage against the stored password (plain or
 * md5 hash) for user and salt, in constant time. False for SCRAM secrets.
 */
bool md5_check_response(const char *stored, const char *user, const uint8_t salt[4],
                        const char *response);

/*
 * Comparison of two NUL-terminated strings whose time depends on their
 * lengths only, never on where the contents differ. False if either is NULL.
 */
bool secure_streq(const char *a, const char *b);

#endif
