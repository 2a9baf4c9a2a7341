/* SPDX-License-Identifier: PostgreSQL */
/*
 * authquery.c - see authquery.h. One side channel per database it looks
 * users up in; queries of the same user while one is under way share it.
 */
#include "authquery.h"

#include <event2/event.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "auth.h"
#include "config.h"
#include "log.h"
#include "proto.h"
#include "sidechan.h"
#include "sluice.h"
#include "target.h"
#include "util.h"

struct aq_cache {
	struct aq_cache *next;
	char *user;
	char *password;     /* "" when none */
	bool found;         /* the query returned a row for user */
	usec_t expires;     /* monotonic */
};

/*
 * One side channel per (entry it connects to, auth_user, auth_query): the
 * settings a [databases] entry may give its own (PgBouncer 1.25). Its cache
 * holds what that query answered, so a role looked up for one database is
 * never taken as checked for a database that asks differently.
 */
struct aq_conn {
	struct aq_conn *next;
	char *dbname;       /* the [databases] entry it connects to */
	char *auth_user;
	char *auth_query;
	struct sidechan *sc;
	struct aq_cache *cache;
};

/* The lookup settings in force for a client of database: its entry's, else the global keys. */
struct aq_settings {
	const char *auth_user;    /* "" = no lookups */
	const char *auth_query;
	const char *dbname;       /* the entry the query runs in */
	bool dbname_is_client_db; /* no auth_dbname: dbname is the client's own database */
};

struct aq_wait {        /* one lookup under way, for one client */
	struct sluice *sl;
	uint64_t client_id;
	authquery_done_fn done;   /* told the answer, with client_id */
	char user[128];
	struct aq_conn *conn; /* the side channel it is queued on; lives until authquery_reset */
	struct sidechan *sc;  /* conn's */
	char error[256];    /* why the lookup could not run, for lookup_failed */
	const char *sqlstate;  /* lookup_failed's: NULL for a connection failure */
	const char *message;   /* its primary text when sqlstate is set (static) */
};

struct authquery {
	struct aq_conn *conns;
};

static struct aq_settings settings_for(const struct sluice_config *cfg, const char *database)
{
	const struct db_config *db = database ? config_find_db(cfg, database) : NULL;
	struct aq_settings a = {
		.auth_user = db && db->auth_user ? db->auth_user : cfg->auth_user,
		.auth_query = db && db->auth_query ? db->auth_query : cfg->auth_query,
		.dbname = db && db->auth_dbname ? db->auth_dbname : cfg->auth_dbname,
	};
	if (!a.dbname[0]) {
		a.dbname = database ? database : "";
		a.dbname_is_client_db = true;
	}
	return a;
}

bool authquery_enabled(const struct sluice *sl, const char *database)
{
	return settings_for(sl->cfg, database).auth_user[0] != '\0';
}

const char *authquery_user(const struct sluice_config *cfg, const char *database)
{
	const char *user = settings_for(cfg, database).auth_user;
	return user && user[0] ? user : NULL;
}

static struct aq_conn *find_conn(struct authquery *aq, const struct aq_settings *a)
{
	for (struct aq_conn *k = aq ? aq->conns : NULL; k; k = k->next)
		if (strcmp(k->dbname, a->dbname) == 0 && strcmp(k->auth_user, a->auth_user) == 0 &&
		    strcmp(k->auth_query, a->auth_query) == 0)
			return k;
	return NULL;
}

static struct authquery *state(struct sluice *sl)
{
	if (!sl->authquery)
		sl->authquery = calloc(1, sizeof(struct authquery));
	return sl->authquery;
}

const char *authquery_cached(struct sluice *sl, const char *database, const char *user, bool *found)
{
	struct aq_settings a = settings_for(sl->cfg, database);
	struct aq_conn *k = a.auth_user[0] ? find_conn(sl->authquery, &a) : NULL;
	usec_t now = now_usec();
	for (struct aq_cache *e = k ? k->cache : NULL; e; e = e->next)
		if (strcmp(e->user, user) == 0 && e->expires > now) {
			*found = e->found;
			return e->password;
		}
	return NULL;
}

static void cache_put(struct aq_conn *k, const char *user, const char *password, bool found)
{
	struct aq_cache *e;
	for (e = k->cache; e; e = e->next)
		if (strcmp(e->user, user) == 0)
			break;
	if (!e) {
		e = calloc(1, sizeof(*e));
		if (!e || !(e->user = strdup(user))) {
			free(e);
			return;
		}
		e->next = k->cache;
		k->cache = e;
	}
	char *copy = strdup(password);
	if (!copy)
		return;
	free(e->password);
	e->password = copy;
	e->found = found;
	e->expires = now_usec() + AUTHQUERY_CACHE_USEC;
}

static void conn_free(struct aq_conn *k)
{
	if (!k)
		return;
	sidechan_free(k->sc);    /* pending lookups are answered with NULL */
	while (k->cache) {
		struct aq_cache *e = k->cache;
		k->cache = e->next;
		free(e->user);
		free(e->password);
		free(e);
	}
	free(k->dbname);
	free(k->auth_user);
	free(k->auth_query);
	free(k);
}

/* The side channel to entry a->dbname as a->auth_user, started on first use. */
static struct aq_conn *conn_for(struct sluice *sl, const struct aq_settings *a)
{
	struct authquery *aq = state(sl);
	if (!aq)
		return NULL;
	struct aq_conn *found = find_conn(aq, a);
	if (found)
		return found;
	const char *dbname = a->dbname;
	if (!config_find_db(sl->cfg, dbname))
		return NULL;
	/*
	 * As auth_user, with auth_user's own search_path (as PgBouncer: an
	 * auth_query may call a function by its unqualified name). pg_catalog is
	 * searched first all the same, so pg_shadow cannot be shadowed; no
	 * client's settings ever reach this connection.
	 */
	struct db_target t;
	char err[256];
	if (!db_target_resolve(sl->cfg, sl->userlist, "auth_dbname", dbname, a->auth_user,
	                       "pgsluice-auth-query", 5, NULL, &t, err, sizeof(err))) {
		log_warning("auth_query: %s", err);
		return NULL;
	}
	if (t.hashed_password)
		/* libpq logs in with the password itself: a hash cannot (PgBouncer's own login can) */
		log_warning("auth_query: auth_file holds only a hash of auth_user \"%s\"'s password; the lookup "
		            "connection needs the plain-text password there (or a server that trusts %s, or ~/.pgpass)",
		            a->auth_user, a->auth_user);
	struct aq_conn *k = calloc(1, sizeof(*k));
	if (!k || !(k->dbname = strdup(dbname)) || !(k->auth_user = strdup(a->auth_user)) ||
	    !(k->auth_query = strdup(a->auth_query)) ||
	    !(k->sc = sidechan_new(sl->base, "auth_query", t.keys, t.values, NULL, NULL))) {
		conn_free(k);
		return NULL;
	}
	/* A client waits for the answer: a database that cannot be reached
	 * fails its login now, not after the reconnect backoff. */
	sidechan_set_fail_fast(k->sc, true);
	k->next = aq->conns;
	aq->conns = k;
	return k;
}

/* The lookup could not run: the client gets the connection's error, now. */
static void lookup_failed(evutil_socket_t fd, short what, void *arg)
{
	struct aq_wait *w = arg;
	(void)fd;
	(void)what;
	char text[200];
	struct authquery_answer ans = { .sqlstate = w->sqlstate };
	if (!w->sl->authquery)
		;   /* shut down: nobody waits */
	else if (w->sqlstate) {
		ans.message = w->message;
		ans.detail = w->message != w->error && w->error[0] ? w->error : NULL;
		w->done(w->sl, w->client_id, &ans);
	} else {
		snprintf(text, sizeof(text), "could not look up user \"%s\" with auth_query", w->user);
		ans.sqlstate = SQLSTATE_CONNECTION_FAILURE;
		ans.message = text;
		ans.detail = w->error[0] ? w->error : NULL;
		ans.hint = "pgsluice looks users up with auth_query in the database named by auth_dbname.";
		w->done(w->sl, w->client_id, &ans);
	}
	free(w);
}

/* Fail w's client from the event loop, never inside the caller's own call. */
static void fail_lookup_soon(struct aq_wait *w, const char *why)
{
	str_copy(w->error, why ? why : "", sizeof(w->error));
	struct timeval now = { 0, 0 };
	if (event_base_once(w->sl->base, -1, EV_TIMEOUT, lookup_failed, w, &now) != 0)
		free(w);
}

static void looked_up(void *arg, const PGresult *res)
{
	struct aq_wait *w = arg;
	struct sluice *sl = w->sl;
	const char *password = NULL;
	if (!sl->authquery) {
		free(w);      /* shutting down */
		return;
	}
	if (!res) {
		/* connection failed or lost: the role may exist, say why it cannot be checked */
		fail_lookup_soon(w, sidechan_last_error(w->sc));
		return;
	}
	if (PQresultStatus(res) != PGRES_TUPLES_OK) {
		/* PgBouncer's outcome: the query itself is wrong, PostgreSQL's reason goes to the log */
		char why[256];
		str_copy(why, PQresultErrorMessage(res), sizeof(why));
		why[strcspn(why, "\n")] = '\0';
		log_warning("auth_query for \"%s\" failed: %s", w->user, why);
		w->sqlstate = SQLSTATE_CONFIG_FILE_ERROR;
		w->message = "bouncer config error";
		fail_lookup_soon(w, why);
		return;
	}
	bool found = PQntuples(res) >= 1;
	if (PQntuples(res) == 1 && PQnfields(res) >= 2 && !PQgetisnull(res, 0, 1))
		password = PQgetvalue(res, 0, 1);
	cache_put(w->conn, w->user, password ? password : "", found);
	struct authquery_answer ans = { .password = password && *password ? password : NULL, .found = found };
	w->done(sl, w->client_id, &ans);
	free(w);
}

/*
 * Why auth_dbname a cannot be used, as PgBouncer 1.25 says it (logged; the
 * client gets *sqlstate and *message), or NULL when it can.
 */
static const char *unusable_auth_dbname(struct sluice *sl, const struct aq_settings *a, char *buf, size_t len,
                                        const char **sqlstate, const char **message)
{
	*sqlstate = SQLSTATE_CONFIG_FILE_ERROR;
	*message = "bouncer config error";
	if (sluice_is_console_db(a->dbname))
		snprintf(buf, len, "cannot use the reserved \"%s\" database as an auth_dbname", a->dbname);
	else if (!config_find_db(sl->cfg, a->dbname)) {
		/* an unknown database asked for is told only after the exchange (errors.md, 3D000) */
		if (a->dbname_is_client_db)
			return NULL;
		snprintf(buf, len, "authentication database \"%s\" is not configured", a->dbname);
	}
	else if (!a->dbname_is_client_db && sluice_db_disabled(sl, a->dbname)) {
		snprintf(buf, len, "authentication database \"%s\" is disabled", a->dbname);
		*sqlstate = SQLSTATE_OBJECT_NOT_IN_STATE;
		*message = buf;
	} else
		return NULL;
	return buf;
}

bool authquery_lookup(struct sluice *sl, uint64_t client_id, const char *database, const char *user,
                      authquery_done_fn done)
{
	struct aq_settings a = settings_for(sl->cfg, database);
	if (!a.auth_user[0])
		return false;
	char why[256];
	const char *sqlstate, *message;
	if (unusable_auth_dbname(sl, &a, why, sizeof(why), &sqlstate, &message)) {
		/* state(): lookup_failed answers only while sl->authquery is set */
		struct aq_wait *w = state(sl) ? calloc(1, sizeof(*w)) : NULL;
		if (!w)
			return false;
		log_warning("C-%llu: %s", (unsigned long long)client_id, why);
		w->sl = sl;
		w->client_id = client_id;
		w->done = done;
		str_copy(w->user, user, sizeof(w->user));
		w->sqlstate = sqlstate;
		/* the text is the primary when it is the message (disabled), else the DETAIL */
		w->message = message == why ? w->error : message;
		fail_lookup_soon(w, why);
		return true;
	}
	struct aq_conn *k = conn_for(sl, &a);
	struct sidechan *sc = k ? k->sc : NULL;
	struct aq_wait *w = sc ? calloc(1, sizeof(*w)) : NULL;
	if (!w)
		return false;
	w->sl = sl;
	w->client_id = client_id;
	w->done = done;
	w->conn = k;
	w->sc = sc;
	str_copy(w->user, user, sizeof(w->user));
	if (sidechan_is_down(sc)) {
		/* the last attempt failed: fail now, until a reconnect succeeds */
		fail_lookup_soon(w, sidechan_last_error(sc));
		return true;
	}
	const char *params[1] = { user };
	if (!sidechan_query(sc, k->auth_query, 1, params, looked_up, w)) {
		free(w);
		return false;
	}
	return true;
}

/* Close the side channels and empty their caches; aq itself stays. */
static void drop_conns_and_cache(struct authquery *aq)
{
	while (aq->conns) {
		struct aq_conn *k = aq->conns;
		aq->conns = k->next;
		conn_free(k);
	}
}

void authquery_reset(struct sluice *sl)
{
	/* sl->authquery stays set, so looked_up() still answers the waiting clients */
	if (sl->authquery)
		drop_conns_and_cache(sl->authquery);
}

void authquery_free(struct sluice *sl)
{
	struct authquery *aq = sl->authquery;
	if (!aq)
		return;
	sl->authquery = NULL;
	drop_conns_and_cache(aq);
	free(aq);
}
