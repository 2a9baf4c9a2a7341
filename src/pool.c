/* SPDX-License-Identifier: PostgreSQL */
/*
 * pool.c - see pool.h. A waiting client is served in arrival order; servers
 * are opened on demand up to pool_size and the per-database / per-user
 * limits, and a pool whose logins fail answers its clients at once instead
 * of letting them hang (PgBouncer's server_login_retry behaviour).
 */
#include "pool.h"

#include <event2/buffer.h>
#include <event2/event.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "client.h"
#include "log.h"
#include "notify_relay.h"
#include "proto.h"
#include "server.h"
#include "util.h"

/* PgBouncer's precedence for pool settings: [users], then [databases], then the global key. */
static int pick_pool_size(const struct sluice_config *cfg, const struct db_config *db,
                          const struct user_config *u)
{
	if (u && u->pool_size >= 0)
		return u->pool_size;
	if (db && db->pool_size >= 0)
		return db->pool_size;
	return cfg->default_pool_size;
}

static int pick_reserve_pool(const struct sluice_config *cfg, const struct db_config *db,
                             const struct user_config *u)
{
	if (u && u->reserve_pool >= 0)
		return u->reserve_pool;
	if (db && db->reserve_pool >= 0)
		return db->reserve_pool;
	return cfg->reserve_pool_size;
}

static enum pool_mode pick_pool_mode(const struct sluice_config *cfg, const struct db_config *db,
                                     const struct user_config *u)
{
	if (u && u->pool_mode != POOL_MODE_INHERIT)
		return u->pool_mode;
	if (db && db->pool_mode != POOL_MODE_INHERIT)
		return db->pool_mode;
	return cfg->pool_mode;
}

static bool str_eq_null(const char *a, const char *b)
{
	return (!a && !b) || (a && b && strcmp(a, b) == 0);
}

/* Copy db's target and limits into p; returns false on OOM. Marks p stale
 * when the target of existing servers changed. */
static bool pool_apply(struct pool *p, const struct sluice_config *cfg, const struct db_config *db)
{
	const struct user_config *u = config_find_user(cfg, p->user_name);
	const char *dbname = db->dbname ? db->dbname : p->db_name;
	bool changed = !str_eq_null(p->host, db->host) || p->port != db->port ||
	               !str_eq_null(p->port_list, db->port_list) ||
	               !str_eq_null(p->dbname, dbname) || !str_eq_null(p->password, db->password);
	if (changed) {
		free(p->host);
		free(p->port_list);
		free(p->dbname);
		free(p->password);
		p->host = str_dup_or_null(db->host);
		p->port_list = str_dup_or_null(db->port_list);
		p->dbname = strdup(dbname);
		p->password = str_dup_or_null(db->password);
		p->host_cursor = 0;
		if ((db->host && !p->host) || (db->port_list && !p->port_list) || !p->dbname ||
		    (db->password && !p->password))
			return false;
		p->port = db->port;
		p->stale = p->n_idle + p->n_active + p->n_login > 0;
	}
	free(p->connect_query);
	p->connect_query = str_dup_or_null(db->connect_query);
	varcache_clear(&p->startup_vars);
	if (db->client_encoding)
		varcache_set(&p->startup_vars, "client_encoding", db->client_encoding);
	if (db->datestyle)
		varcache_set(&p->startup_vars, "DateStyle", db->datestyle);
	if (db->timezone)
		varcache_set(&p->startup_vars, "TimeZone", db->timezone);
	if (db->application_name)
		varcache_set(&p->startup_vars, "application_name", db->application_name);
	p->pool_size = pick_pool_size(cfg, db, u);
	p->min_pool_size = db->min_pool_size >= 0 ? db->min_pool_size : cfg->min_pool_size;
	p->reserve_pool = pick_reserve_pool(cfg, db, u);
	p->server_lifetime = db->server_lifetime >= 0 ? db->server_lifetime : cfg->server_lifetime;
	p->pool_mode = pick_pool_mode(cfg, db, u);
	p->round_robin = config_load_balance_round_robin(db->load_balance_hosts ? db->load_balance_hosts
	                                                                        : cfg->load_balance_hosts);
	return true;
}

static void pool_free(struct pool *p);
static void clear_login_failure(struct pool *p);

/* The back-off after a login failure that may pass by itself: the first, and
 * the longest (also never above server_login_retry). One attempt a second at
 * most, and one at a time (can_launch), costs a down server nothing, and the
 * first query after PostgreSQL is back waits at most that second. */
#define LOGIN_RETRY_FIRST (100 * USEC_PER_MSEC)
#define LOGIN_RETRY_MAX   (1 * USEC_PER_SEC)
/* The shortest wait, also with server_login_retry = 0: a login that fails at
 * once (a name kept as NXDOMAIN, a refused unix socket) would otherwise be
 * retried in a loop that never returns to the event loop. */
#define LOGIN_RETRY_MIN   (10 * USEC_PER_MSEC)

/* How long p holds back new server logins after its last failed one. */
static usec_t login_retry_wait(const struct pool *p)
{
	usec_t wait = p->login_failure_transient ? p->login_retry_delay : p->sl->cfg->server_login_retry;
	return wait < LOGIN_RETRY_MIN ? LOGIN_RETRY_MIN : wait;
}

/* Is p holding back new server logins after a failed one? */
static bool login_backing_off(const struct pool *p, usec_t now)
{
	if (!p->last_login_failure)
		return false;
	return now - p->last_login_failure < login_retry_wait(p);
}

struct pool *pool_get(struct sluice *sl, const struct db_config *db, const char *db_name, const char *user)
{
	struct pool *p;
	bool db_known = false;
	/* A "*" entry serves every database name, each with its own pool. */
	TAILQ_FOREACH(p, &sl->pools, entry) {
		if (strcmp(p->user_name, user) == 0 && strcmp(p->db_name, db_name) == 0)
			return p;
		db_known = db_known || strcmp(p->db_name, db_name) == 0;
	}
	if (!db_known && strcmp(db->name, "*") == 0)   /* PgBouncer's log line */
		log_info("registered new auto-database: %s", db_name);
	p = calloc(1, sizeof(*p));
	if (!p)
		return NULL;
	p->sl = sl;
	p->db_name = strdup(db_name);
	p->user_name = strdup(user);
	TAILQ_INIT(&p->login_servers);
	TAILQ_INIT(&p->idle_servers);
	TAILQ_INIT(&p->active_servers);
	TAILQ_INIT(&p->waiting_clients);
	TAILQ_INIT(&p->active_clients);
	if (!p->db_name || !p->user_name || !pool_apply(p, sl->cfg, db)) {
		pool_free(p);
		return NULL;
	}
	TAILQ_INSERT_TAIL(&sl->pools, p, entry);
	return p;
}

int pool_count_db_servers(struct sluice *sl, const char *db_name)
{
	int n = 0;
	struct pool *p;
	TAILQ_FOREACH(p, &sl->pools, entry)
		if (strcmp(p->db_name, db_name) == 0)
			n += p->n_login + p->n_idle + p->n_active;
	return n;
}

int pool_count_user_servers(struct sluice *sl, const char *user_name)
{
	int n = 0;
	struct pool *p;
	TAILQ_FOREACH(p, &sl->pools, entry)
		if (strcmp(p->user_name, user_name) == 0)
			n += p->n_login + p->n_idle + p->n_active;
	return n;
}

int pool_count_db_clients(struct sluice *sl, const char *db_name)
{
	int n = 0;
	struct pool *p;
	TAILQ_FOREACH(p, &sl->pools, entry)
		if (strcmp(p->db_name, db_name) == 0)
			n += p->n_clients + p->n_waiting;
	return n;
}

int pool_count_user_clients(struct sluice *sl, const char *user_name)
{
	int n = 0;
	struct pool *p;
	struct client *c;
	TAILQ_FOREACH(p, &sl->pools, entry) {
		TAILQ_FOREACH(c, &p->active_clients, entry)
			n += c->user && strcmp(c->user, user_name) == 0;
		TAILQ_FOREACH(c, &p->waiting_clients, entry)
			n += c->user && strcmp(c->user, user_name) == 0;
	}
	return n;
}

int pool_max_db_clients(const struct sluice_config *cfg, const char *db_name)
{
	const struct db_config *db = config_find_db(cfg, db_name);
	return db && db->max_db_client_connections >= 0 ? db->max_db_client_connections
	                                                : cfg->max_db_client_connections;
}

int pool_max_user_clients(const struct sluice_config *cfg, const char *user_name)
{
	const struct user_config *u = config_find_user(cfg, user_name);
	return u && u->max_user_client_connections >= 0 ? u->max_user_client_connections
	                                                : cfg->max_user_client_connections;
}

/* Upper bounds (usec) of the wait time histogram's buckets; the last bucket is +Inf. */
const usec_t pool_wait_bucket_bounds[POOL_WAIT_BUCKETS - 1] = {
	1000, 5000, 10000, 50000, 100000, 500000, 1000000, 5000000, 10000000, 30000000, 60000000,
};

/* admin console: per-database stats of one server assignment after waiting waited usec. */
static void note_assignment(struct pool *p, usec_t waited)
{
	int b = 0;
	while (b < POOL_WAIT_BUCKETS - 1 && waited > pool_wait_bucket_bounds[b])
		b++;
	p->stats.wait_buckets[b]++;
	p->stats.server_assignments++;
	p->stats.wait_time_usec += (uint64_t)waited;
}

bool pool_is_paused(const struct pool *p)
{
	const struct sluice *sl = p->sl;
	/* SIGINT pauses as PgBouncer's does: no client gets a server any more */
	if (sl->paused || sl->shutdown_mode == SHUTDOWN_WAIT_FOR_SERVERS)
		return true;
	for (char **db = sl->paused_dbs; db && *db; db++)
		if (strcmp(*db, p->db_name) == 0)
			return true;
	return false;
}

/*
 * pool_is_paused for the per-transaction calls (a server requested,
 * released, made ready): one look at the process-wide flags, the call
 * only when a pause of some kind exists.
 */
static inline bool paused(const struct pool *p)
{
	const struct sluice *sl = p->sl;
	return (sl->paused || sl->shutdown_mode == SHUTDOWN_WAIT_FOR_SERVERS || sl->paused_dbs) && pool_is_paused(p);
}

static int max_db_connections(const struct sluice_config *cfg, const char *db_name)
{
	const struct db_config *db = config_find_db(cfg, db_name);
	return db && db->max_db_connections >= 0 ? db->max_db_connections : cfg->max_db_connections;
}

static int max_user_connections(const struct sluice_config *cfg, const char *user_name)
{
	const struct user_config *u = config_find_user(cfg, user_name);
	return u && u->max_user_connections >= 0 ? u->max_user_connections : cfg->max_user_connections;
}

/*
 * Close the server idle longest among the other pools of database db_name
 * (or, when db_name is NULL, of user user_name). Returns false when there
 * is none.
 */
static bool evict_idle(struct pool *p, const char *db_name, const char *user_name)
{
	struct server *oldest = NULL;
	struct pool *q;
	TAILQ_FOREACH(q, &p->sl->pools, entry) {
		if (q == p || (db_name ? strcmp(q->db_name, db_name) : strcmp(q->user_name, user_name)) != 0)
			continue;
		/* the longest idle is at one end: the tail (LIFO), the head (server_round_robin) */
		struct server *ends[2] = { TAILQ_LAST(&q->idle_servers, server_list), TAILQ_FIRST(&q->idle_servers) };
		for (int i = 0; i < 2; i++)
			if (ends[i] && (!oldest || ends[i]->last_used < oldest->last_used))
				oldest = ends[i];
	}
	if (!oldest)
		return false;
	server_close(oldest, db_name ? "max_db_connections reached: room for another pool"
	                             : "max_user_connections reached: room for another pool");
	return true;
}

/*
 * p has clients waiting and no server at all, and max_db_connections or
 * max_user_connections is taken up by other pools: close their idle servers
 * to make room, or p could wait forever (PgBouncer's evict_connection).
 */
static void make_room(struct pool *p)
{
	struct sluice *sl = p->sl;
	if (p->n_waiting == 0 || p->pool_size <= 0 || p->n_login + p->n_idle + p->n_active > 0 || pool_is_paused(p) ||
	    login_backing_off(p, now_usec()))
		return;
	int max_db = max_db_connections(sl->cfg, p->db_name);
	while (max_db > 0 && pool_count_db_servers(sl, p->db_name) >= max_db && evict_idle(p, p->db_name, NULL))
		;
	int max_user = max_user_connections(sl->cfg, p->user_name);
	while (max_user > 0 && pool_count_user_servers(sl, p->user_name) >= max_user &&
	       evict_idle(p, NULL, p->user_name))
		;
}

/* May p open one more server now? */
static bool can_launch(struct pool *p)
{
	struct sluice *sl = p->sl;
	const struct sluice_config *cfg = sl->cfg;
	if (pool_is_paused(p))
		return false;   /* admin console: PAUSE / KILL */
	/* reserve_pool_size more servers once a client waited reserve_pool_timeout */
	int limit = p->pool_size;
	struct client *first = TAILQ_FIRST(&p->waiting_clients);
	if (first && p->reserve_pool > 0 && now_usec() - first->wait_start >= cfg->reserve_pool_timeout)
		limit += p->reserve_pool;
	if (p->n_login + p->n_idle + p->n_active >= limit)
		return false;
	if (login_backing_off(p, now_usec()))
		return false;
	if (p->last_login_failure && p->n_login > 0)
		return false;   /* after a failure, one attempt at a time finds out */
	int max_db = max_db_connections(cfg, p->db_name);
	if (max_db > 0 && pool_count_db_servers(sl, p->db_name) >= max_db)
		return false;
	int max_user = max_user_connections(cfg, p->user_name);
	if (max_user > 0 && pool_count_user_servers(sl, p->user_name) >= max_user)
		return false;
	return true;
}

static void schedule_login_retry(struct pool *p);

/* Open servers while clients wait for more than the logins under way can serve. */
static void launch_for_waiters(struct pool *p)
{
	make_room(p);
	while (p->n_waiting > p->n_login && can_launch(p)) {
		bool reserve = p->n_login + p->n_idle + p->n_active >= p->pool_size;
		if (!server_launch(p))
			break;
		if (reserve)   /* PgBouncer's log line */
			log_info("%s/%s taking connection from reserve_pool", p->db_name, p->user_name);
	}
	if (p->n_waiting > p->n_login && p->login_failure_transient && login_backing_off(p, now_usec()))
		schedule_login_retry(p);
}

static void enqueue_client(struct pool *p, struct client *c, enum client_state state)
{
	pool_move_client(c, p, state);
	c->wait_start = now_usec();
	c->wait_notified = false;
	/* Reading goes on, so a hang-up is seen at once (client_io_error takes it
	 * off the queue); client.c stops reading at RELAY_HIGH_WATER bytes. */
}

/*
 * A pool whose last login failed recently fails its waiters now unless a
 * logged-in server may still serve them. Logins under way do not count: they
 * go to the same server with the same credentials (PgBouncer's
 * kill_pool_logins), and servers of a stale pool are closed once released.
 * After a failure that may pass by itself only the clients that have waited
 * server_login_retry, and saw an attempt fail since they came, get its
 * error (the waiting list is in arrival order); the others wait for the
 * next attempt, which the back-off makes soon.
 */
static void give_login_error(struct pool *p, struct client *c)
{
	if (p->last_login_error)
		client_fatal_raw(c, p->last_login_error, p->last_login_error_len);
	else
		client_fatal(c, SQLSTATE_CONNECTION_FAILURE, NULL, NULL,
		             "server login has been failing, try again later");
}

static bool fail_fast(struct pool *p)
{
	if (!p->last_login_failure || (p->n_idle + p->n_active > 0 && !p->stale))
		return false;
	usec_t now = now_usec();
	struct client *c;
	if (p->login_failure_transient)
		return false;   /* PgBouncer: clients wait while the login is retried, up to
		                 * query_wait_timeout (or query_timeout), not server_login_retry */
	if (now - p->last_login_failure >= p->sl->cfg->server_login_retry)
		return false;
	while ((c = TAILQ_FIRST(&p->waiting_clients)) != NULL)
		give_login_error(p, c);
	return true;
}

void pool_wait_for_welcome(struct pool *p, struct client *c)
{
	enqueue_client(p, c, CL_WAITING_LOGIN);
	if (!fail_fast(p))
		launch_for_waiters(p);
}

void pool_request_server(struct pool *p, struct client *c)
{
	struct server *s = TAILQ_FIRST(&p->idle_servers);
	if (s && TAILQ_EMPTY(&p->waiting_clients) && !paused(p)) {
		note_assignment(p, 0);
		server_link(s, c);
		return;
	}
	enqueue_client(p, c, CL_WAITING);
	if (fail_fast(p))
		return;
	launch_for_waiters(p);
}

/* Does a client in this state hold a max_client_conn slot? */
static int client_logged_in(enum client_state state)
{
	return state == CL_WAITING_LOGIN || state == CL_WAITING || state == CL_ACTIVE || state == CL_ADMIN;
}

void pool_move_client(struct client *c, struct pool *p, enum client_state state)
{
	struct sluice *sl = c->sl;
	struct pool *old = c->pool;
	bool left_login = c->state == CL_LOGIN && state != CL_LOGIN;
	sl->n_logged_in += client_logged_in(state) - client_logged_in(c->state);
	switch (c->state) {
	case CL_LOGIN: TAILQ_REMOVE(&sl->login_clients, c, entry); sl->n_login_clients--; break;
	case CL_CLOSING: TAILQ_REMOVE(&sl->closing_clients, c, entry); break;
	case CL_ADMIN: TAILQ_REMOVE(&sl->admin_clients, c, entry); break;
	case CL_WAITING_LOGIN:
		old->n_waiting_login--;
		/* fall through */
	case CL_WAITING:
		TAILQ_REMOVE(&old->waiting_clients, c, entry);
		old->n_waiting--;
		break;
	case CL_ACTIVE:
		TAILQ_REMOVE(&old->active_clients, c, entry);
		old->n_clients--;
		if (c->replication_waiting) {
			c->replication_waiting = false;
			old->n_replication_waiting--;
		}
		break;
	case CL_NONE:
	case CL_CANCEL:
		break;
	}
	if (old && !p)
		old->unused_since = now_usec();   /* autodb_idle_timeout counts from here */
	c->state = state;
	c->pool = p;
	switch (state) {
	case CL_LOGIN: TAILQ_INSERT_TAIL(&sl->login_clients, c, entry); sl->n_login_clients++; break;
	case CL_CLOSING: TAILQ_INSERT_TAIL(&sl->closing_clients, c, entry); break;
	case CL_ADMIN: TAILQ_INSERT_TAIL(&sl->admin_clients, c, entry); break;
	case CL_WAITING_LOGIN:
		p->n_waiting_login++;
		/* fall through */
	case CL_WAITING:
		TAILQ_INSERT_TAIL(&p->waiting_clients, c, entry);
		p->n_waiting++;
		break;
	case CL_ACTIVE:
		TAILQ_INSERT_TAIL(&p->active_clients, c, entry);
		p->n_clients++;
		break;
	case CL_NONE:
	case CL_CANCEL:
		break;
	}
	if (left_login && sl->login_slot_free)
		sl->login_slot_free(sl);   /* the listener may accept again */
}


/*
 * Room in pool_size for one more (replication) server, closing idle servers
 * to make it as PgBouncer does; pool_size 0 means no limit here.
 */
static bool replication_room(struct pool *p)
{
	if (p->pool_size <= 0)
		return true;
	struct server *s;
	while (p->n_login + p->n_idle + p->n_active >= p->pool_size && (s = TAILQ_FIRST(&p->idle_servers)) != NULL)
		server_close(s, "evicted for pool_size");
	return p->n_login + p->n_idle + p->n_active < p->pool_size;
}

void pool_start_replication(struct pool *p, struct client *c)
{
	pool_move_client(c, p, CL_ACTIVE);
	connio_pause_read(&c->io);    /* nothing is relayed before the welcome */
	p->starting_replication = true;   /* the evictions below must not start waiting clients first */
	bool room = p->n_replication_waiting == 0 && replication_room(p);
	p->starting_replication = false;
	if (room) {
		server_launch_replication(p, c);
		return;
	}
	c->replication_waiting = true;
	p->n_replication_waiting++;
	c->wait_start = now_usec();
}

void pool_start_waiting_replication(struct pool *p)
{
	if (p->n_replication_waiting == 0 || p->starting_replication)
		return;
	p->starting_replication = true;
	struct client *c, *next;
	TAILQ_FOREACH_SAFE(c, &p->active_clients, entry, next) {
		if (!c->replication_waiting)
			continue;
		if (!replication_room(p))
			break;
		c->replication_waiting = false;
		p->n_replication_waiting--;
		server_launch_replication(p, c);   /* may fail c at once; next was taken before */
	}
	p->starting_replication = false;
}

void pool_release_server(struct server *s, bool clean)
{
	struct pool *p = s->pool;
	s->client = NULL;
	if (s->replication) {
		server_close(s, "replication client disconnected");
		return;
	}
	if (clean && s->cancels) {
		/* A CancelRequest of the client that just left may still land: no
		 * other client's query runs here before it did (pool_cancels_done).
		 * The server stays on active_servers, so it counts against the limits. */
		server_move(s, SV_BEING_CANCELED);
		return;
	}
	if (!clean || s->close_when_released || p->stale || paused(p)) {
		server_close(s, !clean ? "client disconnected with the server busy"
		                : pool_is_paused(p) ? "database paused"
		                : s->close_when_released && p->reconnect_reason ? p->reconnect_reason
		                : "database configuration changed");
		launch_for_waiters(p);
		return;
	}
	/* server_lifetime is enforced at release too (PgBouncer's release_server): a
	 * server that is never idle would otherwise outlive it; 0 = use once. */
	if (p->server_lifetime >= 0 && now_usec() - s->connect_time >= p->server_lifetime) {
		server_close(s, "server lifetime over");
		launch_for_waiters(p);
		return;
	}
	if (p->pool_mode == POOL_MODE_SESSION || p->sl->cfg->server_reset_query_always)
		server_start_reset(s);
	else
		pool_server_ready(s);
}

void pool_cancels_done(struct server *s)
{
	if (s->state != SV_BEING_CANCELED)
		return;
	server_move(s, SV_ACTIVE);
	pool_release_server(s, server_is_clean(s));
}

/* server_events' logged_in: the first logged-in server's ParameterStatus set is the pool's welcome. */
static void server_logged_in(struct server *s)
{
	struct pool *p = s->pool;
	char **other = s->other_params;
	if (p->have_welcome)
		return;
	varcache_fill_missing(&p->welcome_vars, &s->vars);
	size_t n = 0;
	while (other && other[n])
		n++;
	p->welcome_other = calloc(n + 2, sizeof(char *));
	for (size_t i = 0; p->welcome_other && i < n; i++)
		p->welcome_other[i] = strdup(other[i]);
	p->have_welcome = true;
}

void pool_server_ready(struct server *s)
{
	struct pool *p = s->pool;
	if (p->last_login_failure || p->last_login_error)
		clear_login_failure(p);    /* set together by pool_login_failed: no free(NULL) per transaction */
	s->last_used = now_usec();
	/* Clients waiting for the welcome need no server of their own yet. Only
	 * before a pool's first login are there any: no walk per transaction. */
	struct client *c, *next;
	if (p->n_waiting_login > 0)
		TAILQ_FOREACH_SAFE(c, &p->waiting_clients, entry, next)
			if (c->state == CL_WAITING_LOGIN)
				client_welcome(c);
	if (paused(p) || s->close_when_released) {
		/* admin console: PAUSE closes servers as they come free, RECONNECT too */
		server_close(s, pool_is_paused(p) ? "database paused"
		                : p->reconnect_reason ? p->reconnect_reason : "reconnect requested");
		return;
	}
	if (s->state != SV_IDLE)
		server_move(s, SV_IDLE);
	c = TAILQ_FIRST(&p->waiting_clients);
	if (c) {
		pool_move_client(c, p, CL_ACTIVE);
		usec_t waited = now_usec() - c->wait_start;
		p->sl->stats.wait_time_usec += (uint64_t)waited;
		note_assignment(p, waited);
		server_link(s, c);
	}
}

/* Could a failed server login pass by itself? msg: its ErrorResponse or NULL. */
static bool failure_may_pass(const uint8_t *msg, size_t len)
{
	struct pg_error f;
	if (!msg)
		return true;   /* connect, TLS or I/O failure: the server may be restarting */
	if (len <= PROTO_HEADER_LEN || !proto_parse_error(msg + PROTO_HEADER_LEN, len - PROTO_HEADER_LEN, &f))
		return false;
	/* connection_exception; admin_shutdown, crash_shutdown, cannot_connect_now
	 * (starting up, shutting down, in recovery); too_many_connections */
	return strncmp(f.sqlstate, "08", 2) == 0 || strcmp(f.sqlstate, "57P01") == 0 ||
	       strcmp(f.sqlstate, "57P02") == 0 || strcmp(f.sqlstate, "57P03") == 0 ||
	       strcmp(f.sqlstate, "53300") == 0;
}

static void login_retry_cb(evutil_socket_t fd, short what, void *arg)
{
	struct pool *p = arg;
	(void)fd;
	(void)what;
	if (!fail_fast(p))
		launch_for_waiters(p);
}

/* The next attempt when the back-off ends, not at the janitor's next tick. */
static void schedule_login_retry(struct pool *p)
{
	if (!p->login_retry_ev)
		p->login_retry_ev = evtimer_new(p->sl->base, login_retry_cb, p);
	if (!p->login_retry_ev || evtimer_pending(p->login_retry_ev, NULL))
		return;   /* no memory: the janitor retries */
	usec_t now = now_usec(), due = p->last_login_failure + login_retry_wait(p);
	usec_t left = due > now ? due - now : 0;
	struct timeval tv = { (time_t)(left / USEC_PER_SEC), (suseconds_t)(left % USEC_PER_SEC) };
	evtimer_add(p->login_retry_ev, &tv);
}

void pool_login_failed(struct pool *p, usec_t attempt_start, const uint8_t *msg, size_t len,
                       const char *conn_error, bool permanent)
{
	if (attempt_start < p->reconfigured_at) {
		launch_for_waiters(p);
		return;
	}
	usec_t now = now_usec();
	bool transient = !permanent && failure_may_pass(msg, len);
	if (transient) {
		/* doubling while failures follow each other; a failure after a quiet
		 * spell (or after a slow attempt) starts short again */
		bool in_a_row = p->last_login_failure && p->login_failure_transient &&
		                now - p->last_login_failure <= 2 * p->login_retry_delay + LOGIN_RETRY_FIRST;
		p->login_retry_delay = in_a_row ? 2 * p->login_retry_delay : LOGIN_RETRY_FIRST;
		if (p->login_retry_delay > LOGIN_RETRY_MAX)
			p->login_retry_delay = LOGIN_RETRY_MAX;
		if (p->login_retry_delay > p->sl->cfg->server_login_retry)
			p->login_retry_delay = p->sl->cfg->server_login_retry;
	}
	p->login_failure_transient = transient;
	p->last_login_failure = now;
	free(p->last_login_error);
	p->last_login_error = NULL;
	p->last_login_error_len = 0;
	struct msgbuf m;
	msg_init(&m);
	if (msg) {
		msg_add_bytes(&m, msg, len);
	} else {
		char detail[512];
		snprintf(detail, sizeof(detail), "%s", conn_error ? conn_error : "unknown error");
		msg_add_error(&m, PqMsg_ErrorResponse, "FATAL", SQLSTATE_CONNECTION_FAILURE, detail,
		              "pgsluice retries the connection while clients wait.",
		              "could not connect to server for database \"%s\"", p->db_name);
	}
	if (!m.failed && (p->last_login_error = malloc(m.len)) != NULL) {
		memcpy(p->last_login_error, m.data, m.len);
		p->last_login_error_len = m.len;
	}
	msg_free(&m);
	if (!fail_fast(p))
		launch_for_waiters(p);   /* after a transient failure: schedules the retry */
}

/*
 * query_wait_notify: one NOTICE to a logged-in client that has waited this
 * long for a server, PgBouncer 1.25's text. NoticeResponse may come at any
 * time (protocol-flow.html, 55.2.7), and a waiting client has no server
 * streaming to it, so the message goes between whole messages.
 */
static void notify_waiting(struct client *c)
{
	struct msgbuf m;
	msg_init(&m);
	msg_add_error(&m, PqMsg_NoticeResponse, "NOTICE", SQLSTATE_SUCCESSFUL_COMPLETION, NULL, NULL,
	              "No server connection available in postgres backend, client being queued");
	msg_end(&m);
	if (!msg_flush_to(&m, &c->io.out))
		log_warning("C-%llu: could not queue the query_wait_notify NOTICE", (unsigned long long)c->id);
	msg_free(&m);
	c->wait_notified = true;
}

/*
 * query_wait_notify, then query_wait_timeout, for the clients that wait for
 * a server (janitor.c's tick, so up to 333 ms late). The list is in the
 * order the clients began to wait: the walk stops at the first one that is
 * due for neither.
 */
static void check_waiting(struct pool *p, usec_t now)
{
	const struct sluice_config *cfg = p->sl->cfg;
	const struct db_config *db = config_find_db(cfg, p->db_name);
	/* PgBouncer's precedence: [users], then [databases], then the global key */
	usec_t notify = cfg->query_wait_notify;
	usec_t pool_limit = db && db->query_wait_timeout >= 0 ? db->query_wait_timeout : cfg->query_wait_timeout;
	bool per_user = false;
	for (size_t i = 0; i < cfg->n_users && !per_user; i++)
		per_user = cfg->users[i].query_wait_timeout >= 0 || cfg->users[i].query_timeout >= 0;
	struct client *c, *next;
	TAILQ_FOREACH_SAFE(c, &p->waiting_clients, entry, next) {
		usec_t waited = now - c->wait_start, limit = pool_limit, query_limit = cfg->query_timeout;
		if (per_user) {
			const struct user_config *u = config_find_user(cfg, c->user);
			if (u && u->query_wait_timeout >= 0)
				limit = u->query_wait_timeout;
			if (u && u->query_timeout >= 0)
				query_limit = u->query_timeout;
		}
		/* PgBouncer counts a waiting client's query against query_timeout too */
		bool query_expired = query_limit > 0 && waited >= query_limit;
		bool notify_due = notify > 0 && waited >= notify, expired = limit > 0 && waited >= limit;
		if (!notify_due && !expired && !query_expired && per_user)
			continue;    /* limits differ by client: a later one may be due */
		if (!notify_due && !expired && !query_expired)
			break;
		if (notify_due && c->state == CL_WAITING && !c->wait_notified)
			notify_waiting(c);
		if (query_expired && (!expired || query_limit < limit)) {
			client_fatal(c, SQLSTATE_QUERY_CANCELED, "No server connection was free within query_timeout.",
			             NULL, "query_timeout");
			client_set_close_reason(c, "query timeout");
		} else if (expired) {
			char detail[1024];
			int n = snprintf(detail, sizeof(detail), "No server connection was free within query_wait_timeout (%lld s).",
			                 (long long)(limit / USEC_PER_SEC));
			struct pg_error f;
			/* while PostgreSQL is down the clients waited for the retries: say why they failed */
			if (p->login_failure_transient && p->last_login_error && n > 0 && (size_t)n < sizeof(detail) &&
			    p->last_login_error_len > PROTO_HEADER_LEN &&
			    proto_parse_error(p->last_login_error + PROTO_HEADER_LEN,
			                      p->last_login_error_len - PROTO_HEADER_LEN, &f))
				snprintf(detail + n, sizeof(detail) - (size_t)n, " The last server login failed: %s%s%s",
				         f.message, f.detail[0] ? ": " : "", f.detail);
			client_fatal(c, SQLSTATE_TOO_MANY_CONNECTIONS, detail, NULL, "query_wait_timeout");
		}
	}
}

/* A [users] timeout when set, else the global key. */
static usec_t user_timeout(usec_t user_value, usec_t global)
{
	return user_value >= 0 ? user_value : global;
}

/*
 * query_timeout, transaction_timeout, idle_transaction_timeout and
 * client_idle_timeout (PgBouncer's meanings), each from the client's login
 * user's [users] entry when set there.
 */
static void expire_active(struct pool *p, usec_t now)
{
	const struct sluice_config *cfg = p->sl->cfg;
	struct client *c, *next;
	TAILQ_FOREACH_SAFE(c, &p->active_clients, entry, next) {
		struct server *s = c->server;
		const struct user_config *u = config_find_user(cfg, c->user);
		usec_t query_timeout = user_timeout(u ? u->query_timeout : -1, cfg->query_timeout);
		usec_t xact_timeout = user_timeout(u ? u->transaction_timeout : -1, cfg->transaction_timeout);
		usec_t idle_xact_timeout = user_timeout(u ? u->idle_transaction_timeout : -1,
		                                        cfg->idle_transaction_timeout);
		usec_t idle_timeout = user_timeout(u ? u->client_idle_timeout : -1, cfg->client_idle_timeout);
		bool in_xact = s && s->internal == SV_INTERNAL_NONE && (s->pending_ready > 0 || s->tx_status != 'I');
		/* the "closing because:" words are PgBouncer's log text, which log watches match */
		if (in_xact && xact_timeout > 0 && c->xact_start > 0 && now - c->xact_start >= xact_timeout) {
			client_fatal(c, SQLSTATE_TRANSACTION_TIMEOUT, NULL, NULL, "transaction timeout");
		} else if (s && s->internal == SV_INTERNAL_NONE && s->pending_ready > 0) {
			if (query_timeout > 0 && now - s->request_start >= query_timeout) {
				client_fatal(c, SQLSTATE_QUERY_CANCELED, NULL, NULL, "query_timeout");
				client_set_close_reason(c, "query timeout");
			}
		} else if (s && s->tx_status != 'I') {
			if (idle_xact_timeout > 0 && now - s->last_ready >= idle_xact_timeout) {
				client_fatal(c, SQLSTATE_IDLE_IN_TRANSACTION_TIMEOUT, NULL, NULL, "idle_transaction_timeout");
				client_set_close_reason(c, "idle transaction timeout");
			}
		} else if (idle_timeout > 0 && now - c->last_activity >= idle_timeout) {
			client_fatal(c, SQLSTATE_IDLE_SESSION_TIMEOUT, NULL, NULL, "client_idle_timeout");
		}
	}
}

/* server_lifetime, server_idle_timeout and server_connect_timeout. */
static void expire_servers(struct pool *p, usec_t now)
{
	const struct sluice_config *cfg = p->sl->cfg;
	struct server *s, *next;
	TAILQ_FOREACH_SAFE(s, &p->login_servers, entry, next)
		if (cfg->server_connect_timeout > 0 && now - s->connect_time >= cfg->server_connect_timeout) {
			if (server_connect_next(s))
				continue;    /* a host of a host list that does not answer: the next one */
			usec_t started = s->connect_time;
			bool replication = s->replication;   /* its client alone gets the error */
			server_close(s, "connect timeout");   /* PgBouncer's log words */
			if (replication)
				continue;
			pool_login_failed(p, started, NULL, 0, "server_connect_timeout expired", false);
		}
	int total = p->n_idle + p->n_active + p->n_login;
	TAILQ_FOREACH_SAFE(s, &p->idle_servers, entry, next) {
		if (p->server_lifetime > 0 && now - s->connect_time >= p->server_lifetime) {
			server_close(s, "server lifetime over");
			total--;
		} else if (cfg->server_idle_timeout > 0 && now - s->last_used >= cfg->server_idle_timeout &&
		           total > p->min_pool_size) {
			server_close(s, "server idle timeout");
			total--;
		} else if (p->stale) {
			server_close(s, "database configuration changed");   /* PgBouncer's words */
			total--;
		}
	}
}

/*
 * A [databases] entry with a forced user has one pool whatever the client:
 * create it without waiting for a client, so that its min_pool_size servers
 * are open from the start (as PgBouncer does).
 */
static void create_forced_user_pools(struct sluice *sl)
{
	const struct sluice_config *cfg = sl->cfg;
	for (size_t i = 0; i < cfg->n_databases; i++) {
		const struct db_config *db = &cfg->databases[i];
		int min = db->min_pool_size >= 0 ? db->min_pool_size : cfg->min_pool_size;
		if (db->user && min > 0 && strcmp(db->name, "*") != 0 && !pool_get(sl, db, db->name, db->user))
			log_error("out of memory creating the pool of database %s", db->name);
	}
}

/*
 * autodb_idle_timeout: has p, a pool of the "*" entry, had no client and no
 * server for that long? PgBouncer drops such a database with its statistics
 * (janitor.c cleanup_inactive_autodatabases); so does pgsluice, per pool.
 */
static bool autodb_expired(struct pool *p, usec_t now)
{
	if (p->n_clients + p->n_waiting + p->n_login + p->n_idle + p->n_active > 0 || p->starting_replication) {
		p->unused_since = 0;
		return false;
	}
	const struct db_config *db = config_find_db(p->sl->cfg, p->db_name);
	if (!db || strcmp(db->name, "*") != 0 || p->sl->cfg->autodb_idle_timeout <= 0)
		return false;
	if (!p->unused_since)
		p->unused_since = now;
	return now - p->unused_since >= p->sl->cfg->autodb_idle_timeout;
}

void pool_janitor(struct sluice *sl)
{
	usec_t now = now_usec();
	struct pool *p, *next;
	create_forced_user_pools(sl);
	TAILQ_FOREACH_SAFE(p, &sl->pools, entry, next) {
		if (autodb_expired(p, now)) {
			log_info("dropping database '%s' as it does not exist anymore or inactive auto-database",
			         p->db_name);   /* PgBouncer's words */
			TAILQ_REMOVE(&sl->pools, p, entry);
			pool_free(p);
			continue;
		}
		check_waiting(p, now);
		expire_active(p, now);
		expire_servers(p, now);
		if (p->stale && p->n_idle + p->n_active + p->n_login == 0)
			p->stale = false;
		if (!fail_fast(p))
			launch_for_waiters(p);
		while (p->n_idle + p->n_active + p->n_login < p->min_pool_size && can_launch(p))
			if (!server_launch(p))
				break;
	}
}

/* Forget p's failed login: the next client tries a new login at once. */
static void clear_login_failure(struct pool *p)
{
	p->last_login_failure = 0;
	p->login_failure_transient = false;
	p->login_retry_delay = 0;
	free(p->last_login_error);
	p->last_login_error = NULL;
	p->last_login_error_len = 0;
}

void pool_reconfigure(struct sluice *sl)
{
	struct pool *p;
	TAILQ_FOREACH(p, &sl->pools, entry) {
		/* A reload may have fixed the password (entry or auth_file): do not
		 * wait server_login_retry to find out. */
		clear_login_failure(p);
		p->reconfigured_at = now_usec();
		const struct db_config *db = config_find_db(sl->cfg, p->db_name);
		if (!db) {
			/* The entry is gone: close what is idle, refuse new logins (3D000). */
			p->stale = true;
			continue;
		}
		if (!pool_apply(p, sl->cfg, db))
			log_error("out of memory applying the new configuration to pool %s/%s",
			          p->db_name, p->user_name);
		launch_for_waiters(p);
	}
}

/* ---- admin console: PAUSE, RESUME, RECONNECT, KILL ---- */

void pool_close_idle(struct pool *p, const char *reason)
{
	struct server *s;
	while ((s = TAILQ_FIRST(&p->idle_servers)) != NULL)
		server_close(s, reason);
}

void pool_reconnect(struct pool *p, const char *reason)
{
	struct server *s;
	p->reconnect_reason = reason;
	TAILQ_FOREACH(s, &p->login_servers, entry)
		s->close_when_released = true;
	TAILQ_FOREACH(s, &p->active_servers, entry)
		s->close_when_released = true;
	pool_close_idle(p, reason);
}

void pool_kill(struct pool *p)
{
	struct client *c;
	/* waiting clients first, so that no server released by an active one is given to them */
	while ((c = TAILQ_FIRST(&p->waiting_clients)) != NULL)
		client_fatal(c, SQLSTATE_ADMIN_SHUTDOWN, NULL, NULL, "terminating connection due to administrator command");
	while ((c = TAILQ_FIRST(&p->active_clients)) != NULL)
		client_fatal(c, SQLSTATE_ADMIN_SHUTDOWN, NULL, NULL, "terminating connection due to administrator command");
	struct server *s;
	while ((s = TAILQ_FIRST(&p->login_servers)) != NULL)
		server_close(s, "killed by the admin console");
	while ((s = TAILQ_FIRST(&p->idle_servers)) != NULL)
		server_close(s, "killed by the admin console");
	while ((s = TAILQ_FIRST(&p->active_servers)) != NULL)
		server_close(s, "killed by the admin console");
}

void pool_resume(struct pool *p)
{
	if (!fail_fast(p))
		launch_for_waiters(p);
}

void pool_note_ready(struct server *s)
{
	struct pool *p = s->pool;
	struct client *c = s->client;
	usec_t now = s->last_ready;
	if (s->pending_ready == 0 && s->request_start > 0 && now > s->request_start)
		p->stats.query_time_usec += (uint64_t)(now - s->request_start);
	if (s->tx_status != 'I')
		return;
	p->stats.xact_count++;
	if (s->pending_ready == 0 && c && c->xact_start > 0 && now > c->xact_start)
		p->stats.xact_time_usec += (uint64_t)(now - c->xact_start);
}

static void pool_free(struct pool *p)
{
	notify_pool_free(p);
	if (p->login_retry_ev)
		event_free(p->login_retry_ev);
	free(p->db_name);
	free(p->user_name);
	free(p->host);
	free(p->port_list);
	free(p->dbname);
	free(p->password);
	free_secret(p->proved_password);
	free(p->connect_query);
	free(p->last_login_error);
	varcache_clear(&p->startup_vars);
	varcache_clear(&p->welcome_vars);
	for (char **kv = p->welcome_other; kv && *kv; kv++)
		free(*kv);
	free(p->welcome_other);
	free(p);
}

void pool_free_all(struct sluice *sl)
{
	struct pool *p;
	while ((p = TAILQ_FIRST(&sl->pools)) != NULL) {
		struct client *c;
		while ((c = TAILQ_FIRST(&p->active_clients)) != NULL)
			client_close(c, "pgsluice shutting down");
		while ((c = TAILQ_FIRST(&p->waiting_clients)) != NULL)
			client_close(c, "pgsluice shutting down");
		struct server *s;
		while ((s = TAILQ_FIRST(&p->login_servers)) != NULL)
			server_close(s, "pgsluice shutting down");
		while ((s = TAILQ_FIRST(&p->idle_servers)) != NULL)
			server_close(s, "pgsluice shutting down");
		while ((s = TAILQ_FIRST(&p->active_servers)) != NULL)
			server_close(s, "pgsluice shutting down");
		TAILQ_REMOVE(&sl->pools, p, entry);
		pool_free(p);
	}
}

int pool_count_used(const struct pool *p, usec_t now)
{
	int n = 0;
	const struct server *s;
	if (!p->sl->cfg->server_check_query[0])
		return 0;      /* no check: nothing to walk */
	TAILQ_FOREACH(s, &p->idle_servers, entry)
		n += server_check_due(s, now);
	return n;
}


/*
 * A client may go under SHUTDOWN WAIT_FOR_SERVERS once it holds no server,
 * or holds one (session pooling) between transactions with nothing in flight.
 */
static bool client_between_transactions(const struct client *c)
{
	const struct server *s = c->server;
	if (c->relay_left > 0)
		return false;
	return !s || (s->state == SV_ACTIVE && s->tx_status == 'I' && s->pending_ready == 0);
}

/*
 * SHUTDOWN WAIT_FOR_SERVERS: close the clients that hold no transaction open (57P01, PgBouncer's text).
 * A session client keeps the server it holds until it disconnects: PgBouncer
 * closes only clients that would have to wait for a server (test_repeated_sigint).
 */
void pool_close_released_clients(struct sluice *sl)
{
	struct pool *p;
	struct client *c, *next;
	TAILQ_FOREACH(p, &sl->pools, entry) {
		TAILQ_FOREACH_SAFE(c, &p->waiting_clients, entry, next)
			client_fatal(c, SQLSTATE_ADMIN_SHUTDOWN, NULL, NULL, "server shutting down");
		TAILQ_FOREACH_SAFE(c, &p->active_clients, entry, next)
			if (client_between_transactions(c) && !(p->pool_mode == POOL_MODE_SESSION && c->server))
				client_fatal(c, SQLSTATE_ADMIN_SHUTDOWN, NULL, NULL, "server shutting down");
	}
}

/* server.c's events, as the pool handles them (server.h, struct server_events); logged_in is above. */
static void server_closed(struct pool *p, struct client *requeue)
{
	if (requeue)
		pool_request_server(p, requeue);
	pool_start_waiting_replication(p);   /* room in pool_size for a waiting replication client */
}

void pool_start(struct sluice *sl)
{
	static const struct server_events events = {
		.logged_in = server_logged_in, .ready = pool_server_ready,
		.login_failed = pool_login_failed, .closed = server_closed,
	};
	sl->server_events = &events;
}
