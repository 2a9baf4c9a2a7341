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
#include "client.h"
#include "config.h"
#include "log.h"
#include "sidechan.h"
#include "sluice.h"
#include "target.h"
#include "util.h"

struct aq_cache {
	struct aq_cache *next;
	char *user;
	char *password;     /* "" when none */
	usec_t expires;     /* monotonic */
};

struct aq_conn {
	struct aq_conn *next;
	char *dbname;       /* the [databases] entry it connects to */
	struct sidechan *sc;
};

struct aq_wait {        /* one lookup under way, for one client */
	struct sluice *sl;
	uint64_t client_id;
	char user[128];
	struct sidechan *sc;  /* the side channel it is queued on; lives until authquery_free */
	char error[256];    /* why the lookup could not run, for lookup_failed */
};

struct authquery {
	struct aq_cache *cache;
	struct aq_conn *conns;
};

bool authquery_enabled(const struct sluice *sl)
{
	return sl->cfg->auth_user[0] != '\0';
}

static struct authquery *state(struct sluice *sl)
{
	if (!sl->authquery)
		sl->authquery = calloc(1, sizeof(struct authquery));
	return sl->authquery;
}

const char *authquery_cached(struct sluice *sl, const char *user)
{
	struct authquery *aq = sl->authquery;
	usec_t now = now_usec();
	for (struct aq_cache *e = aq ? aq->cache : NULL; e; e = e->next)
		if (strcmp(e->user, user) == 0 && e->expires > now)
			return e->password;
	return NULL;
}

static void cache_put(struct authquery *aq, const char *user, const char *password)
{
	struct aq_cache *e;
	for (e = aq->cache; e; e = e->next)
		if (strcmp(e->user, user) == 0)
			break;
	if (!e) {
		e = calloc(1, sizeof(*e));
		if (!e || !(e->user = strdup(user))) {
			free(e);
			return;
		}
		e->next = aq->cache;
		aq->cache = e;
	}
	char *copy = strdup(password);
	if (!copy)
		return;
	free(e->password);
	e->password = copy;
	e->expires = now_usec() + AUTHQUERY_CACHE_USEC;
}

/* The side channel to entry dbname as auth_user, started on first use. */
static struct sidechan *conn_for(struct sluice *sl, const char *dbname)
{
	struct authquery *aq = state(sl);
	if (!aq)
		return NULL;
	for (struct aq_conn *k = aq->conns; k; k = k->next)
		if (strcmp(k->dbname, dbname) == 0)
			return k->sc;
	if (!config_find_db(sl->cfg, dbname))
		return NULL;
	/* As auth_user; a fixed search_path: the query cannot be redirected to a user's objects. */
	struct db_target t;
	char err[256];
	if (!db_target_resolve(sl->cfg, sl->userlist, "auth_dbname", dbname, sl->cfg->auth_user,
	                       "pgsluice-auth-query", 5, "-c search_path=pg_catalog", &t, err, sizeof(err))) {
		log_warning("auth_query: %s", err);
		return NULL;
	}
	struct aq_conn *k = calloc(1, sizeof(*k));
	if (!k || !(k->dbname = strdup(dbname)) ||
	    !(k->sc = sidechan_new(sl->base, "auth_query", t.keys, t.values, NULL, NULL))) {
		if (k)
			free(k->dbname);
		free(k);
		return NULL;
	}
	/* A client waits for the answer: a database that cannot be reached
	 * fails its login now, not after the reconnect backoff. */
	sidechan_set_fail_fast(k->sc, true);
	k->next = aq->conns;
	aq->conns = k;
	return k->sc;
}

/* The client whose lookup w was, if it is still logging in. */
static struct client *waiting_client(struct aq_wait *w)
{
	struct client *c;
	TAILQ_FOREACH(c, &w->sl->login_clients, entry)
		if (c->id == w->client_id)
			return c;
	return NULL;
}

/* The lookup could not run: the client gets the connection's error, now. */
static void lookup_failed(evutil_socket_t fd, short what, void *arg)
{
	struct aq_wait *w = arg;
	(void)fd;
	(void)what;
	struct client *c = w->sl->authquery ? waiting_client(w) : NULL;
	if (c)
		client_fatal(c, SQLSTATE_CONNECTION_FAILURE, w->error[0] ? w->error : NULL,
		             "pgsluice looks users up with auth_query in the database named by auth_dbname.",
		             "could not look up user \"%s\" with auth_query", w->user);
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
	bool answered = res && PQresultStatus(res) == PGRES_TUPLES_OK;
	if (res && !answered)
		log_warning("auth_query for \"%s\" failed: %s", w->user, PQresultErrorMessage(res));
	if (answered && PQntuples(res) == 1 && PQnfields(res) >= 2 && !PQgetisnull(res, 0, 1))
		password = PQgetvalue(res, 0, 1);
	if (answered && state(sl))
		cache_put(sl->authquery, w->user, password ? password : "");
	struct client *c = waiting_client(w);
	if (c)
		client_auth_query_done(c, password && *password ? password : NULL);
	free(w);
}

bool authquery_lookup(struct sluice *sl, struct client *c)
{
	const char *dbname = sl->cfg->auth_dbname[0] ? sl->cfg->auth_dbname : c->database;
	struct sidechan *sc = conn_for(sl, dbname);
	struct aq_wait *w = sc ? calloc(1, sizeof(*w)) : NULL;
	if (!w)
		return false;
	w->sl = sl;
	w->client_id = c->id;
	w->sc = sc;
	str_copy(w->user, c->user, sizeof(w->user));
	if (sidechan_is_down(sc)) {
		/* the last attempt failed: fail now, until a reconnect succeeds */
		fail_lookup_soon(w, sidechan_last_error(sc));
		return true;
	}
	const char *params[1] = { c->user };
	if (!sidechan_query(sc, sl->cfg->auth_query, 1, params, looked_up, w)) {
		free(w);
		return false;
	}
	return true;
}

/* Close the side channels and empty the cache; aq itself stays. */
static void drop_conns_and_cache(struct authquery *aq)
{
	while (aq->conns) {
		struct aq_conn *k = aq->conns;
		aq->conns = k->next;
		sidechan_free(k->sc);    /* pending lookups are answered with NULL */
		free(k->dbname);
		free(k);
	}
	while (aq->cache) {
		struct aq_cache *e = aq->cache;
		aq->cache = e->next;
		free(e->user);
		free(e->password);
		free(e);
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
