/* SPDX-License-Identifier: PostgreSQL */
/*
 * authquery.h - passwords of roles that are not in auth_file, looked up in
 * PostgreSQL's own catalog with auth_query as auth_user, over side channels
 * driven by the event loop, and cached for a bounded time (PgBouncer's auth_query).
 */
#ifndef SLUICE_AUTHQUERY_H
#define SLUICE_AUTHQUERY_H

#include <stdbool.h>
#include <stdint.h>

struct sluice;
struct sluice_config;

/* How long a looked-up password (or its absence) is trusted, microseconds. */
#define AUTHQUERY_CACHE_USEC (60 * 1000000LL)

/*
 * True when auth_user is in force for clients of database (the name a
 * client asked for): the [databases] entry's auth_user, else the global key
 * (PgBouncer 1.25, config.html "auth_user"). Unknown roles are looked up then.
 */
bool authquery_enabled(const struct sluice *sl, const char *database);

/*
 * The auth_user in force for clients of database (its [databases] entry's,
 * else the global key), borrowed from cfg; NULL when none is set.
 */
const char *authquery_user(const struct sluice_config *cfg, const char *database);

/*
 * The cached stored password of user for clients of database ("" when the
 * lookup found no usable password) if a fresh entry exists, else NULL;
 * *found says whether auth_query returned a row for user at all.
 * Entries are kept per (auth_dbname, auth_user, auth_query) in force, so a
 * database with its own settings has its own answers. Borrowed until the
 * next lookup, expiry or reset.
 */
const char *authquery_cached(struct sluice *sl, const char *database, const char *user, bool *found);

/*
 * What a lookup found. sqlstate NULL: password is the role's stored password
 * (plain, md5 or SCRAM secret; NULL when it has none), found false when
 * auth_query returned no row. sqlstate set: the lookup failed and the login
 * fails with that error (message, detail and hint as an ErrorResponse's).
 * Every pointer is borrowed for the call.
 */
struct authquery_answer {
	const char *password;
	bool found;
	const char *sqlstate, *message, *detail, *hint;
};

/* Told a lookup's answer for the client with id client_id (which may be gone by then). */
typedef void (*authquery_done_fn)(struct sluice *sl, uint64_t client_id, const struct authquery_answer *ans);

/*
 * Look user up for the client with id client_id, which asked for database:
 * runs auth_query on a side channel to auth_dbname (or the client's database
 * entry) as auth_user, each the client's [databases] entry's when it sets
 * one, else the global key. done is called once from the event loop, never
 * inside this call, unless pgsluice shuts down first. An auth_dbname that is
 * the admin console, has no [databases] entry (nor "*") or is DISABLEd, and
 * a query PostgreSQL rejects, fail with PgBouncer 1.25's texts: F0000
 * "bouncer config error" (the reason in the DETAIL and the log), 55000
 * 'authentication database "x" is disabled'; a database that cannot be
 * reached with 08006. Returns false when the lookup cannot start (then done
 * is never called).
 */
bool authquery_lookup(struct sluice *sl, uint64_t client_id, const char *database, const char *user,
                      authquery_done_fn done);

/*
 * A reload or SET changed what a lookup depends on (auth_user, auth_query,
 * auth_dbname, auth_file): close every side channel and drop the cache, so
 * the next lookup logs in and asks anew. Lookups under way end as "no such
 * role" (their clients get 28P01).
 */
void authquery_reset(struct sluice *sl);

/* Close every side channel and drop the cache (shutdown). */
void authquery_free(struct sluice *sl);

#endif
