/* SPDX-License-Identifier: PostgreSQL */
/*
 * migrate.h - the sluice schema's migrations (docs/schema.md): apply the
 * sql/NNNN_name.sql files to the database of the ai_database entry
 * ("pgsluice --migrate CONFIG"), and the check at daemon start that the
 * schema is current. Owns its libpq connection for the length of one call.
 *
 * Both calls use blocking libpq: command line and start-up only, never from
 * inside the event loop.
 *
 * Connection: the [databases] entry named by ai_database gives host, port,
 * dbname and user, as for a server connection (host unset: the Unix socket
 * in unix_socket_dir, or libpq's default when that is empty; dbname unset:
 * the entry's name). An entry without
 * user= connects as $PGUSER, else the operating system user. The password
 * is the entry's password=, else that user's plain-text password in
 * auth_file, else libpq's own sources (PGPASSWORD, ~/.pgpass).
 * application_name is "pgsluice-migrate".
 *
 * Migrations: files named NNNN_name.sql (NNNN a positive version number,
 * name letters, digits, '_' or '-') in sqldir, applied in version order,
 * each in its own transaction together with its row in
 * sluice.schema_migrations. Concurrent runs take turns on a transaction
 * advisory lock (key 8317151707346042881, "sluice\0\1"), so each version is
 * applied once. Other files in sqldir are ignored, except a misnamed *.sql,
 * which is an error.
 */
#ifndef SLUICE_AI_MIGRATE_H
#define SLUICE_AI_MIGRATE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdio.h>

#include "target.h"

struct sluice_config;
struct userlist;

/*
 * Resolve the connection to cfg's ai_database entry with db_target_resolve
 * (target.h: the entry's host/port/dbname/user, its password or a plain
 * auth_file one), with application_name (borrowed) and connect_timeout
 * (seconds). Fills t->keys/values for PQconnectStartParams; t borrows from
 * cfg and users, so it lives no longer than they do. Returns false with
 * errbuf set when ai_database is unset or names no entry.
 */
bool ai_db_target_resolve(const struct sluice_config *cfg, const struct userlist *users,
                          const char *application_name, int connect_timeout_s,
                          struct db_target *t, char *errbuf, size_t errlen);

/*
 * Apply every migration in sqldir not yet recorded in
 * sluice.schema_migrations on the ai_database's database, each in its own
 * transaction. Prints one line per migration (applied or skipped) and the
 * resulting version to out; errors go to stderr as "pgsluice: error: ...",
 * with detail and hint lines. users may be NULL (no auth_file).
 * Returns 0 on success (also when nothing was to do), 1 on failure; the
 * migrations applied before a failing one stay applied.
 */
int migrate_run(const struct sluice_config *cfg, const struct userlist *users,
                const char *sqldir, FILE *out);

/* migrate_check results */
#define MIGRATE_CURRENT     0   /* every migration in sqldir is applied */
#define MIGRATE_BEHIND      1   /* some are not: msg names them and the command to run */
#define MIGRATE_UNCHECKED   2   /* could not tell: msg says why */

/*
 * At daemon start, before the event loop: compare sqldir with
 * sluice.schema_migrations (connect_timeout 5 s). Writes one line without a
 * trailing newline into msg (msglen bytes): for MIGRATE_CURRENT the schema
 * version, for MIGRATE_BEHIND what is missing and the exact command to run,
 * for MIGRATE_UNCHECKED the reason. pgsluice should start in every case.
 * Call only when cfg->ai_database is set (unset gives MIGRATE_UNCHECKED).
 */
int migrate_check(const struct sluice_config *cfg, const struct userlist *users,
                  const char *sqldir, char *msg, size_t msglen);

/*
 * The migrations directory to use, into buf (len bytes), returned: the
 * environment variable PGSLUICE_SQLDIR when set; else SQLDIR (the installed
 * $(pkgdatadir)/sql) when it is a directory; else <directory of the running
 * binary>/../sql (a build directory inside the source checkout), then
 * <directory of the running binary>/sql (an in-tree build), when it is a
 * directory; else SQLDIR, so that the error names the installed path.
 */
const char *migrate_sqldir(char *buf, size_t len);

#endif
