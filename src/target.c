/* SPDX-License-Identifier: PostgreSQL */
/* target.c - see target.h. */
#include "target.h"

#include <pwd.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "auth.h"
#include "config.h"

static void fill_params(struct db_target *t, const char *application_name, const char *options)
{
	int n = 0;
#define PARAM(k, v) do { t->keys[n] = (k); t->values[n] = (v); n++; } while (0)
	if (t->host)
		PARAM("host", t->host);
	PARAM("port", t->port);
	PARAM("dbname", t->dbname);
	PARAM("user", t->user);
	if (t->password)
		PARAM("password", t->password);
	PARAM("application_name", application_name);
	PARAM("connect_timeout", t->connect_timeout);
	PARAM("client_encoding", "UTF8");
	if (options)
		PARAM("options", options);
#undef PARAM
	t->keys[n] = t->values[n] = NULL;
}

bool db_target_resolve(const struct sluice_config *cfg, const struct userlist *users, const char *key,
                       const char *entry, const char *user, const char *application_name,
                       int connect_timeout_s, const char *options, struct db_target *t,
                       char *errbuf, size_t errlen)
{
	memset(t, 0, sizeof(*t));
	t->entry = entry;
	const struct db_config *db = config_find_db(cfg, entry);
	if (!db) {
		snprintf(errbuf, errlen, "%s \"%s\" is not an entry of the [databases] section", key, entry);
		return false;
	}
	t->host = db->host ? db->host : (cfg->unix_socket_dir[0] ? cfg->unix_socket_dir : NULL);
	snprintf(t->port, sizeof(t->port), "%d", db->port);
	t->dbname = db->dbname ? db->dbname : entry;
	t->user = user ? user : db->user;
	if (!t->user)
		t->user = getenv("PGUSER");
	if (!t->user || !t->user[0]) {
		struct passwd *pw = getpwuid(geteuid());
		if (!pw) {
			snprintf(errbuf, errlen, "%s \"%s\" has no user= and the operating system user is unknown",
			         key, entry);
			return false;
		}
		snprintf(t->os_user, sizeof(t->os_user), "%s", pw->pw_name);
		t->user = t->os_user;
	}
	t->password = db->password;
	if (!t->password && users) {
		const struct userlist_entry *e = userlist_find(users, t->user);
		if (e && e->kind == PASSWORD_PLAIN)
			t->password = e->password;
		else if (e)
			t->hashed_password = true;
	}
	snprintf(t->connect_timeout, sizeof(t->connect_timeout), "%d", connect_timeout_s);
	fill_params(t, application_name, options);
	return true;
}
