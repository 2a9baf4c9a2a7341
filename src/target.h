/* SPDX-License-Identifier: PostgreSQL */
/*
 * target.h - where and as whom pgsluice's own connections to PostgreSQL
 * connect (auth_query, the AI middleware's side channels, --migrate): a
 * [databases] entry and a role turned into libpq's keyword/value arrays
 * (libpq-connect.html, "Parameter Key Words"). Client traffic goes through
 * server.c instead, which speaks the protocol itself.
 */
#ifndef SLUICE_TARGET_H
#define SLUICE_TARGET_H

#include <stdbool.h>
#include <stddef.h>

struct sluice_config;
struct userlist;

/* One resolved connection; strings are borrowed from the config, the userlist, the caller's arguments or the buffers here. */
struct db_target {
	const char *entry;        /* the [databases] name asked for */
	const char *host;         /* NULL: libpq's default socket */
	char port[16];
	const char *dbname;
	const char *user;
	const char *password;     /* NULL: libpq's PGPASSWORD / ~/.pgpass */
	bool hashed_password;     /* auth_file holds only a hash for user */
	char connect_timeout[16];
	char os_user[256];
	const char *keys[12];     /* the above as libpq keyword/value arrays, NULL-terminated */
	const char *values[12];
};

/*
 * Resolve the connection to [databases] entry `entry` (the "*" entry serves
 * any name) as pgsluice's own connections make it:
 * - host: the entry's host=; unset, the Unix socket in unix_socket_dir, or
 *   libpq's default when that is empty (as server.c does);
 * - port: the entry's; dbname: the entry's dbname=, else entry itself;
 * - user: `user` when not NULL, else the entry's user=, else $PGUSER, else
 *   the operating system user;
 * - password: the entry's password= (also when `user` overrides the entry's
 *   user), else user's plain-text password in auth_file (users may be NULL),
 *   else none (libpq's PGPASSWORD, ~/.pgpass);
 * - application_name and options (NULL: none) as given, connect_timeout in
 *   seconds, client_encoding UTF8.
 * key names the setting that chose entry ("ai_database"), for errbuf.
 * Fills t; it borrows from cfg, users, entry, user, application_name and
 * options, and lives no longer than they do (libpq and sidechan_new copy
 * what they keep). Returns false with errbuf (errlen bytes) set when entry
 * is no [databases] entry or no user can be found.
 */
bool db_target_resolve(const struct sluice_config *cfg, const struct userlist *users, const char *key,
                       const char *entry, const char *user, const char *application_name,
                       int connect_timeout_s, const char *options, struct db_target *t,
                       char *errbuf, size_t errlen);

#endif
