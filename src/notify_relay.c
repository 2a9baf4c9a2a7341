/* SPDX-License-Identifier: PostgreSQL */
/*
 * notify_relay.c - see notify_relay.h.
 *
 * Under transaction pooling a LISTEN sent to a pooled server would register
 * that server, which the client loses at its next transaction. pgsluice
 * keeps the client's channels itself and runs the real LISTENs on one
 * connection per pool (a side channel, sidechan.c). The client's LISTEN
 * still goes to its server as a no-op (UNLISTEN of a channel nobody uses),
 * so order, errors and transaction status are the server's; its
 * CommandComplete is rewritten to the client's tag. The action takes effect
 * when the transaction ends without a rollback, as async.c's pendingActions.
 */
#include "notify_relay.h"

#include <event2/event.h>
#include <libpq-fe.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "authquery.h"
#include "client.h"
#include "client_step.h"
#include "config.h"
#include "connio.h"
#include "log.h"
#include "pool.h"
#include "prepared.h"
#include "proto.h"
#include "refuse.h"
#include "server.h"
#include "sidechan.h"
#include "sqllex.h"
#include "sluice.h"
#include "target.h"

/* The statement sent in place of LISTEN/UNLISTEN: no effect, and allowed wherever they are. */
#define NOOP_SQL "UNLISTEN pgsluice_noop"

struct notify_chan {
	char *name;       /* owned */
	int refs;         /* clients that listen on it (committed) */
	bool live;        /* the listening connection's LISTEN of it completed */
};

struct notify_listener {
	struct pool *pool;
	struct sidechan *sc;
	struct notify_chan *chans;
	size_t n_chans, cap_chans;
	bool up;          /* connected */
	bool was_up;      /* was connected before: a new connection may have missed notifications */
	bool down;        /* the last attempt failed or the connection broke: LISTENs do not wait */
	bool freeing;
	struct event *kick;   /* writes held notifications once the output written so far is sent;
	                         closes the connection when no listener is left */
	bool kicked;
	bool close_pending;   /* the last listener left: close from kick_cb, outside every callback */
};

struct listen_query { struct notify_listener *nl; char *name; };

/* ---- statement text ---- */

/* Cut s (n bytes) to NOTIFY_CHANNEL_MAX bytes, not inside a UTF-8 character (pg_mbcliplen). */
static size_t clip(const char *s, size_t n)
{
	if (n <= NOTIFY_CHANNEL_MAX)
		return n;
	n = NOTIFY_CHANNEL_MAX;
	while (n > 0 && ((unsigned char)s[n] & 0xC0) == 0x80)
		n--;
	return n;
}

enum notify_stmt notify_parse_statement(const char *t, size_t len, char *channel)
{
	while (len > 0 && t[len - 1] == '\0')
		len--;
	struct sqllex lx;
	sqllex_init(&lx, t, len);
	enum notify_stmt kind;
	if (sqllex_keyword(&lx, "listen"))
		kind = NOTIFY_STMT_LISTEN;
	else if (sqllex_keyword(&lx, "unlisten"))
		kind = NOTIFY_STMT_UNLISTEN;
	else
		return NOTIFY_STMT_NONE;
	/* longer names are cut below, as PostgreSQL does (NAMEDATALEN) */
	char buf[4 * NOTIFY_CHANNEL_MAX + 1];
	size_t n = 0;
	bool quoted;
	if (kind == NOTIFY_STMT_UNLISTEN && sqllex_peek(&lx, '*')) {
		kind = NOTIFY_STMT_UNLISTEN_ALL;
		lx.p++;
	} else {
		/* none, unterminated or "": the server's syntax error */
		n = sqllex_ident(&lx, buf, sizeof(buf), &quoted);
		if (n == 0)
			return NOTIFY_STMT_NONE;
		if (n >= sizeof(buf))
			n = sizeof(buf) - 1;
	}
	/* an unterminated comment after it (lx.bad) is the server's error, as before */
	if (sqllex_peek(&lx, ';'))
		lx.p++;
	sqllex_skip_blanks(&lx);
	if (lx.p < lx.end)
		return NOTIFY_STMT_MIXED;
	if (kind != NOTIFY_STMT_UNLISTEN_ALL) {
		n = clip(buf, n);
		memcpy(channel, buf, n);
		channel[n] = '\0';
	}
	return kind;
}

/* ---- the listening connection ---- */

static struct notify_chan *chan_find(struct notify_listener *nl, const char *name)
{
	for (size_t i = 0; i < nl->n_chans; i++)
		if (strcmp(nl->chans[i].name, name) == 0)
			return &nl->chans[i];
	return NULL;
}

static void listener_close(struct notify_listener *nl);

/* Wake the clients that wait for a channel to be live. */
static void wake_waiting(struct notify_listener *nl)
{
	struct pool *p = nl->pool;
	struct client *c, *next;
	TAILQ_FOREACH_SAFE(c, &p->active_clients, entry, next)
		if (c->notify && c->notify->waiting) {
			c->notify->waiting = false;
			client_resume(c);
		}
}

static void listen_done(void *arg, const PGresult *res)
{
	struct listen_query *q = arg;
	struct notify_listener *nl = q->nl;
	if (!nl->freeing && !res) {
		/* the connection failed or broke first (fail-fast): do not hold the LISTEN; on_state LISTENs again */
		wake_waiting(nl);
	} else if (!nl->freeing) {
		struct notify_chan *ch = chan_find(nl, q->name);
		if (PQresultStatus(res) == PGRES_COMMAND_OK) {
			if (ch)
				ch->live = true;
		} else {
			log_warning("%s/%s: listening connection: LISTEN \"%s\" failed: %s", nl->pool->db_name,
			            nl->pool->user_name, q->name, PQresultErrorMessage(res));
			if (ch)
				ch->live = true;   /* do not hold clients on it */
		}
		wake_waiting(nl);
	}
	free(q->name);
	free(q);
}

static void ignore_result(void *arg, const PGresult *res)
{
	(void)arg;
	(void)res;
}

/* "LISTEN "quoted"" / "UNLISTEN ..." for name, into sql (size bytes); false when it does not fit. */
static bool quote_command(char *sql, size_t size, const char *verb, const char *name)
{
	size_t n = (size_t)snprintf(sql, size, "%s \"", verb);
	for (const char *p = name; *p; p++) {
		if (n + 3 >= size)
			return false;
		if (*p == '"')
			sql[n++] = '"';
		sql[n++] = *p;
	}
	if (n + 2 > size)
		return false;
	sql[n++] = '"';
	sql[n] = '\0';
	return true;
}

static void send_listen(struct notify_listener *nl, const char *name)
{
	char sql[4 * NOTIFY_CHANNEL_MAX + 32];
	struct listen_query *q = calloc(1, sizeof(*q));
	if (q)
		q->nl = nl;
	if (!q || !(q->name = strdup(name)) || !quote_command(sql, sizeof(sql), "LISTEN", name) ||
	    !sidechan_query(nl->sc, sql, 0, NULL, listen_done, q)) {
		if (q)
			free(q->name);
		free(q);
		log_warning("%s/%s: listening connection: cannot queue LISTEN", nl->pool->db_name, nl->pool->user_name);
	}
}

/* A WARNING NoticeResponse (SQLSTATE 01000, ERRCODE_WARNING) to c. */
static void send_notice(struct client *c, const char *detail, const char *message)
{
	struct msgbuf m;
	msg_init(&m);
	msg_add_error(&m, PqMsg_NoticeResponse, "WARNING", "01000", detail, NULL, "%s", message);
	msg_flush_to(&m, &c->io.out);
	msg_free(&m);
}

static void hold(struct client *c, const uint8_t *msg, size_t len);
static void write_held(struct client *c);
static void kick(struct notify_listener *nl);

/* May c be written to now: no server, nothing waiting for one, output not backed up? */
static bool client_idle(const struct client *c)
{
	return c->state == CL_ACTIVE && !c->server && c->relay_left == 0 &&
	       connio_out_len(&c->io) < RELAY_HIGH_WATER;
}

static bool listens_on(const struct client *c, const char *name)
{
	if (!c->notify)
		return false;
	for (size_t i = 0; i < c->notify->n_channels; i++)
		if (strcmp(c->notify->channels[i], name) == 0)
			return true;
	return false;
}

/* Clients that listen on a channel of nl, or whose LISTEN waits for it. */
static int listeners_left(struct notify_listener *nl)
{
	int total = 0;
	for (size_t i = 0; i < nl->n_chans; i++)
		total += nl->chans[i].refs;
	struct client *c;
	TAILQ_FOREACH(c, &nl->pool->active_clients, entry)
		total += c->notify && c->notify->waiting;
	return total;
}

/*
 * Notifications held for idle clients while their output was above
 * RELAY_HIGH_WATER: when the kernel then takes the whole output no drain
 * callback comes, so this event (run after the loop's pending sends) writes
 * the next part. A client whose output is still above the mark when it runs
 * could not take it: its drain callback follows (notify_client_idle).
 */
static void kick_cb(evutil_socket_t fd, short what, void *arg)
{
	struct notify_listener *nl = arg;
	(void)fd;
	(void)what;
	nl->kicked = false;
	struct client *c;
	if (nl->close_pending) {
		nl->close_pending = false;
		if (listeners_left(nl) == 0) {
			listener_close(nl);
			return;
		}
	}
	TAILQ_FOREACH(c, &nl->pool->active_clients, entry)
		if (c->notify && c->notify->n_held && client_idle(c))
			write_held(c);   /* kicks again while some are left */
}

static void kick(struct notify_listener *nl)
{
	if (!nl->kicked && nl->kick) {
		nl->kicked = true;
		event_active(nl->kick, EV_TIMEOUT, 0);
	}
}

static void on_notify(void *arg, const PGnotify *n)
{
	struct notify_listener *nl = arg;
	if (nl->freeing)
		return;
	/* NotificationResponse (protocol-message-formats.html): 'A', length, pid, channel, payload */
	const char *payload = n->extra ? n->extra : "";
	size_t rl = strlen(n->relname) + 1, pl = strlen(payload) + 1;
	size_t len = 1 + 4 + 4 + rl + pl;
	uint8_t *msg = malloc(len);
	if (!msg)
		return;
	uint32_t body = (uint32_t)(len - 1);
	uint32_t pid = (uint32_t)n->be_pid;
	msg[0] = PqMsg_NotificationResponse;
	for (int i = 0; i < 4; i++) {
		msg[1 + i] = (uint8_t)(body >> (24 - 8 * i));
		msg[5 + i] = (uint8_t)(pid >> (24 - 8 * i));
	}
	memcpy(msg + 9, n->relname, rl);
	memcpy(msg + 9 + rl, payload, pl);
	struct client *c;
	TAILQ_FOREACH(c, &nl->pool->active_clients, entry)
		if (listens_on(c, n->relname))
			hold(c, msg, len);
	TAILQ_FOREACH(c, &nl->pool->waiting_clients, entry)
		if (listens_on(c, n->relname))
			hold(c, msg, len);
	free(msg);
	kick(nl);
}

static void on_state(void *arg, bool up)
{
	struct notify_listener *nl = arg;
	if (nl->freeing)
		return;
	nl->up = up;
	if (!up) {
		nl->down = true;
		for (size_t i = 0; i < nl->n_chans; i++)
			nl->chans[i].live = false;
		log_warning("%s/%s: listening connection lost: %s", nl->pool->db_name, nl->pool->user_name,
		            sidechan_last_error(nl->sc));
		wake_waiting(nl);    /* do not hold LISTENs while it is down */
		return;
	}
	nl->down = false;
	for (size_t i = 0; i < nl->n_chans; i++)
		send_listen(nl, nl->chans[i].name);
	if (nl->was_up) {
		/* Notifications sent while it was away are gone: say so to every listener. */
		struct client *c;
		TAILQ_FOREACH(c, &nl->pool->active_clients, entry)
			if (c->notify && c->notify->n_channels > 0) {
				c->notify->owes_lost_notice = true;
				if (client_idle(c))
					write_held(c);
			}
		TAILQ_FOREACH(c, &nl->pool->waiting_clients, entry)
			if (c->notify && c->notify->n_channels > 0)
				c->notify->owes_lost_notice = true;
	}
	nl->was_up = true;
}

static struct notify_listener *listener_get(struct pool *p)
{
	if (p->notify)
		return p->notify;
	struct sluice *sl = p->sl;
	struct notify_listener *nl = calloc(1, sizeof(*nl));
	if (!nl)
		return NULL;
	nl->pool = p;
	struct db_target t, as_auth;
	const struct db_target *use = &t;
	char err[256], name[300];
	if (!db_target_resolve(sl->cfg, sl->userlist, "notify", p->db_name, p->user_name, "pgsluice-listen", 5,
	                       NULL, &t, err, sizeof(err))) {
		log_warning("%s/%s: cannot open a listening connection: %s", p->db_name, p->user_name, err);
		free(nl);
		return NULL;
	}
	const char *auth_user = t.password ? NULL : authquery_user(sl->cfg, p->db_name);
	if (auth_user && strcmp(auth_user, p->user_name) != 0) {
		/* No plain password for the pool's role (auth_query, or a secret in
		 * auth_file: its servers log in by SCRAM pass-through or md5, which
		 * libpq cannot). Notifications are the database's, whoever listens:
		 * auth_user, whose password pgsluice must know for auth_query, listens. */
		if (db_target_resolve(sl->cfg, sl->userlist, "notify", p->db_name, auth_user, "pgsluice-listen", 5,
		                      NULL, &as_auth, err, sizeof(err)) && as_auth.password) {
			use = &as_auth;
			log_info("%s/%s: listening as auth_user \"%s\": no plain password for \"%s\"", p->db_name,
			         p->user_name, auth_user, p->user_name);
		}
	}
	snprintf(name, sizeof(name), "listen %s/%s", p->db_name, p->user_name);
	nl->sc = sidechan_new(sl->base, name, use->keys, use->values, on_state, nl);
	if (!nl->sc) {
		free(nl);
		return NULL;
	}
	sidechan_set_notify(nl->sc, on_notify, nl);
	sidechan_set_fail_fast(nl->sc, true);    /* a failed attempt releases the LISTENs waiting for it */
	nl->kick = event_new(sl->base, -1, 0, kick_cb, nl);
	p->notify = nl;
	log_info("%s/%s: listening connection opened", p->db_name, p->user_name);
	return nl;
}

static void listener_close(struct notify_listener *nl)
{
	struct pool *p = nl->pool;
	log_info("%s/%s: listening connection closed: no listener left", p->db_name, p->user_name);
	nl->freeing = true;
	sidechan_free(nl->sc);
	if (nl->kick)
		event_free(nl->kick);
	for (size_t i = 0; i < nl->n_chans; i++)
		free(nl->chans[i].name);
	free(nl->chans);
	free(nl);
	p->notify = NULL;
}

void notify_pool_free(struct pool *p)
{
	if (p->notify)
		listener_close(p->notify);
}

/* Make sure name is (being) listened on; returns it, or NULL when out of memory. */
static struct notify_chan *chan_want(struct notify_listener *nl, const char *name)
{
	struct notify_chan *ch = chan_find(nl, name);
	if (ch)
		return ch;
	if (nl->n_chans == nl->cap_chans) {
		size_t cap = nl->cap_chans ? 2 * nl->cap_chans : 8;
		struct notify_chan *a = realloc(nl->chans, cap * sizeof(*a));
		if (!a)
			return NULL;
		nl->chans = a;
		nl->cap_chans = cap;
	}
	ch = &nl->chans[nl->n_chans];
	ch->name = strdup(name);
	if (!ch->name)
		return NULL;
	ch->refs = 0;
	ch->live = false;
	nl->n_chans++;
	/* Queued while connecting too: a failed attempt answers it (fail-fast),
	 * which releases the clients waiting for it; on_state LISTENs every
	 * channel again at each connect (a second LISTEN is a no-op). */
	send_listen(nl, name);
	return ch;
}

/* One client left name: UNLISTEN when it was the last; close the connection with the last channel. */
static void chan_leave(struct notify_listener *nl, const char *name)
{
	struct notify_chan *ch = chan_find(nl, name);
	if (!ch || --ch->refs > 0)
		return;
	char sql[4 * NOTIFY_CHANNEL_MAX + 32];
	if (nl->up && quote_command(sql, sizeof(sql), "UNLISTEN", name))
		sidechan_query(nl->sc, sql, 0, NULL, ignore_result, NULL);
	free(ch->name);
	*ch = nl->chans[--nl->n_chans];
	/* Not here: this may run inside the side channel's own callback or a
	 * server's relay (or for a client being freed); kick_cb closes it if no
	 * one listens then. */
	nl->close_pending = true;
	kick(nl);
}

/* ---- a client's channels ---- */

static bool strv_push(char ***v, size_t *n, size_t *cap, char *s)
{
	if (*n == *cap) {
		size_t nc = *cap ? 2 * *cap : 4;
		char **a = realloc(*v, nc * sizeof(*a));
		if (!a)
			return false;
		*v = a;
		*cap = nc;
	}
	(*v)[(*n)++] = s;
	return true;
}

static void client_listen(struct client *c, const char *name)
{
	if (listens_on(c, name))
		return;
	struct notify_listener *nl = listener_get(c->pool);
	struct notify_chan *ch = nl ? chan_want(nl, name) : NULL;
	char *dup = ch ? strdup(name) : NULL;
	struct notify_client *nc = c->notify;   /* it has a pending LISTEN */
	if (!dup || !strv_push(&nc->channels, &nc->n_channels, &nc->cap_channels, dup)) {
		free(dup);
		log_warning("C-%llu: LISTEN \"%s\" not registered", (unsigned long long)c->id, name);
		return;
	}
	ch->refs++;
}

static void client_unlisten(struct client *c, const char *name)
{
	struct notify_client *nc = c->notify;   /* it has a pending UNLISTEN */
	for (size_t i = 0; i < nc->n_channels; i++)
		if (strcmp(nc->channels[i], name) == 0) {
			free(nc->channels[i]);
			nc->channels[i] = nc->channels[--nc->n_channels];
			if (c->pool->notify)
				chan_leave(c->pool->notify, name);
			return;
		}
}

static void client_unlisten_all(struct client *c)
{
	struct notify_client *nc = c->notify;   /* never NULL here */
	while (nc->n_channels > 0) {
		char *name = nc->channels[--nc->n_channels];
		if (c->pool && c->pool->notify)
			chan_leave(c->pool->notify, name);
		free(name);
	}
}

static void drop_pending(struct notify_client *nc)
{
	for (size_t i = 0; i < nc->n_pending; i++)
		free(nc->pending[i]);
	nc->n_pending = 0;
}

/* c's LISTEN state, made on first use; NULL when out of memory. */
static struct notify_client *nc_get(struct client *c)
{
	if (!c->notify)
		c->notify = calloc(1, sizeof(*c->notify));
	return c->notify;
}

/*
 * Free c's LISTEN state once it holds nothing (at ReadyForQuery), so a client
 * that listened once and stopped, or ran one UNLISTEN, costs nothing again.
 */
static void nc_trim(struct client *c)
{
	struct notify_client *nc = c->notify;
	if (!nc || nc->n_channels || nc->n_pending || nc->unnamed || nc->portal || nc->exec_pending ||
	    nc->waiting || nc->n_held || nc->dropped || nc->owes_lost_notice)
		return;
	free(nc->channels);
	free(nc->pending);
	free(nc->held);
	free(nc);
	c->notify = NULL;
}

/* ---- held notifications ---- */

static void write_held(struct client *c)
{
	struct notify_client *nc = c->notify;   /* it listens, or held something */
	if (nc->owes_lost_notice) {
		nc->owes_lost_notice = false;
		send_notice(c, "pgsluice's listening connection to the server was lost and has been opened again.",
		            "notifications may have been missed");
	}
	if (nc->dropped > 0) {
		char detail[160];
		snprintf(detail, sizeof(detail), "More than notify_queue_size (%d) notifications were waiting for this client.",
		         c->sl->cfg->notify_queue_size);
		char msg[96];
		snprintf(msg, sizeof(msg), "%llu notifications were dropped", (unsigned long long)nc->dropped);
		send_notice(c, detail, msg);
		nc->dropped = 0;
	}
	while (nc->n_held > 0 && connio_out_len(&c->io) < RELAY_HIGH_WATER) {
		uint8_t *m = nc->held[nc->held_head];
		uint32_t len = ((uint32_t)m[1] << 24) | ((uint32_t)m[2] << 16) | ((uint32_t)m[3] << 8) | m[4];
		connio_add(&c->io, m, 1 + (size_t)len);
		free(m);
		nc->held_head = (nc->held_head + 1) % nc->held_cap;
		nc->n_held--;
	}
	/* Output at RELAY_HIGH_WATER: the rest follows once it is sent (kick_cb or the drain callback). */
	if (nc->n_held > 0 && c->pool && c->pool->notify)
		kick(c->pool->notify);
}

static void hold(struct client *c, const uint8_t *msg, size_t len)
{
	struct notify_client *nc = c->notify;   /* it listens on the channel */
	if (client_idle(c)) {
		write_held(c);    /* a NOTICE it is owed and older notifications go first */
		if (nc->n_held == 0 && connio_out_len(&c->io) < RELAY_HIGH_WATER) {
			connio_add(&c->io, msg, len);
			return;
		}
	}
	int limit = c->sl->cfg->notify_queue_size;
	if (limit <= 0) {
		nc->dropped++;
		c->sl->notify_dropped++;
		return;
	}
	if (nc->n_held >= (size_t)limit) {
		/* the oldest goes */
		free(nc->held[nc->held_head]);
		nc->held_head = (nc->held_head + 1) % nc->held_cap;
		nc->n_held--;
		nc->dropped++;
		c->sl->notify_dropped++;
	}
	if (nc->n_held == nc->held_cap) {
		size_t cap = nc->held_cap ? 2 * nc->held_cap : 16;
		uint8_t **a = malloc(cap * sizeof(*a));
		if (!a) {
			nc->dropped++;
			c->sl->notify_dropped++;
			return;
		}
		for (size_t i = 0; i < nc->n_held; i++)
			a[i] = nc->held[(nc->held_head + i) % nc->held_cap];
		free(nc->held);
		nc->held = a;
		nc->held_cap = cap;
		nc->held_head = 0;
	}
	uint8_t *copy = malloc(len);
	if (!copy) {
		nc->dropped++;
		c->sl->notify_dropped++;
		return;
	}
	memcpy(copy, msg, len);
	nc->held[(nc->held_head + nc->n_held) % nc->held_cap] = copy;
	nc->n_held++;
}

void notify_client_idle(struct client *c)
{
	struct notify_client *nc = c->notify;
	if (nc && (nc->n_held || nc->dropped || nc->owes_lost_notice) && client_idle(c))
		write_held(c);
}

void notify_before_ready(struct client *c, char status)
{
	struct notify_client *nc = c->notify;
	bool commit = !c->notify_tx_failed && !c->notify_tx_rolled_back;
	c->notify_tx_failed = false;
	c->notify_tx_rolled_back = false;
	if (!nc)
		return;
	if (status == 'I' && nc->n_pending > 0) {
		/* A LISTEN may close nothing; an UNLISTEN may close the connection: run in order. */
		for (size_t i = 0; commit && i < nc->n_pending; i++) {
			const char *a = nc->pending[i];
			if (a[0] == 'L')
				client_listen(c, a + 1);
			else if (a[0] == 'U')
				client_unlisten(c, a + 1);
			else
				client_unlisten_all(c);
		}
		drop_pending(nc);
	}
	if (nc->n_held || nc->dropped || nc->owes_lost_notice)
		write_held(c);
	nc_trim(c);
}

void notify_client_free(struct client *c)
{
	struct notify_client *nc = c->notify;
	if (!nc)
		return;
	nc->waiting = false;
	drop_pending(nc);
	free(nc->pending);
	free(nc->unnamed);
	free(nc->portal);
	client_unlisten_all(c);
	free(nc->channels);
	while (nc->n_held > 0) {
		free(nc->held[nc->held_head]);
		nc->held_head = (nc->held_head + 1) % nc->held_cap;
		nc->n_held--;
	}
	free(nc->held);
	free(nc);
	c->notify = NULL;
}

/* ---- the client's statements ---- */

/* The action text of a statement: "L"/"U" + channel, or "*". NULL when out of memory. */
static char *make_action(enum notify_stmt kind, const char *channel)
{
	size_t n = strlen(channel);
	char *a = malloc(n + 2);
	if (!a)
		return NULL;
	a[0] = kind == NOTIFY_STMT_LISTEN ? 'L' : kind == NOTIFY_STMT_UNLISTEN ? 'U' : '*';
	memcpy(a + 1, channel, kind == NOTIFY_STMT_UNLISTEN_ALL ? 0 : n);
	a[kind == NOTIFY_STMT_UNLISTEN_ALL ? 1 : n + 1] = '\0';
	return a;
}

/*
 * A LISTEN must not answer before the listening connection listens, or a
 * NOTIFY right after it would be missed. True when c must wait for that.
 */
static bool must_wait(struct client *c, enum notify_stmt kind, const char *channel)
{
	if (kind != NOTIFY_STMT_LISTEN)
		return false;
	struct notify_listener *nl = listener_get(c->pool);
	if (!nl)
		return false;
	if (nl->down || sidechan_is_down(nl->sc)) {
		/* no connection to wait for: the LISTEN is answered, and the NOTICE
		 * that notifications may have been missed follows the next connect */
		nl->was_up = true;
		return false;
	}
	struct notify_chan *ch = chan_want(nl, channel);
	if (!ch || ch->live)
		return false;
	struct notify_client *nc = nc_get(c);
	if (!nc)
		return false;   /* out of memory: answered without waiting, as when no connection is up */
	nc->waiting = true;
	return true;
}

static void set_str(char **slot, char *s)
{
	free(*slot);
	*slot = s;
}

/* A simple Query drops the unnamed statement and portal: so do their actions. */
static void forget_unnamed(struct client *c)
{
	if (c->notify) {
		set_str(&c->notify->unnamed, NULL);
		set_str(&c->notify->portal, NULL);
	}
}

static const char MIXED_MSG[] = "LISTEN and UNLISTEN must be sent alone under transaction pooling";
static const char MIXED_HINT[] = "Send LISTEN or UNLISTEN as a query of its own.";

/*
 * Could the statement text whose first n bytes (of len) are at t be
 * LISTEN/UNLISTEN? Only then is the whole message waited for: any other
 * statement streams to the server as before, however long it is.
 */
static bool may_be_listen(const char *t, size_t n, size_t len)
{
	size_t i = 0;
	while (i < n && sqllex_is_space((unsigned char)t[i]))
		i++;
	if (i == n)
		return len < 65536;   /* not known yet */
	char ch = (char)(t[i] | 0x20);
	if (ch == 'l' || ch == 'u')
		return len < 65536;
	return (t[i] == '/' || t[i] == '-') && len < 65536;   /* a comment first: look further */
}

/* A simple Query of LISTEN/UNLISTEN: the no-op goes to s in its place. */
static int intercept_query(struct client *c, struct server *s, uint32_t len)
{
	struct iobuf *in = &c->io.in;
	size_t have = iobuf_len(in) - PROTO_HEADER_LEN;
	if (!may_be_listen((const char *)iobuf_data(in) + PROTO_HEADER_LEN, have < len - 4 ? have : len - 4, len - 4)) {
		forget_unnamed(c);   /* a simple Query drops the unnamed statement and portal */
		return 1;
	}
	if (iobuf_len(in) < 1 + (size_t)len)
		return -1;
	const char *text = (const char *)iobuf_data(in) + PROTO_HEADER_LEN;
	char channel[NOTIFY_CHANNEL_MAX + 1];
	enum notify_stmt kind = notify_parse_statement(text, len - 4, channel);
	forget_unnamed(c);     /* a simple Query drops the unnamed statement and portal */
	if (kind == NOTIFY_STMT_NONE)
		return 1;
	if (kind != NOTIFY_STMT_MIXED && must_wait(c, kind, channel))
		return -1;
	char sql[2048];
	char *action = NULL;
	if (kind == NOTIFY_STMT_MIXED) {
		if (!refuse_build_raise_sql(sql, sizeof(sql), SQLSTATE_FEATURE_NOT_SUPPORTED, MIXED_MSG, NULL, MIXED_HINT))
			return 1;
	} else {
		action = make_action(kind, channel);
		if (!action)
			return 1;
		snprintf(sql, sizeof(sql), "%s", NOOP_SQL);
	}
	iobuf_drain(in, 1 + (size_t)len);
	struct msgbuf m;
	msg_init(&m);
	msg_begin(&m, PqMsg_Query);
	msg_add_string(&m, sql);
	msg_end(&m);
	msg_flush_to(&m, &s->io.out);
	msg_free(&m);
	server_note_request(s, c, PqMsg_Query);
	prepared_note_request(s, PqMsg_Query);
	struct replyq_entry *e = replyq_tail(&s->replies);
	if (e && action)
		e->notify = action;
	else
		free(action);
	c->checked = false;
	return 0;
}

/* Parse of LISTEN/UNLISTEN: the unnamed statement becomes the no-op; a named one is refused. */
static int intercept_parse(struct client *c, struct server *s, uint32_t len)
{
	struct iobuf *in = &c->io.in;
	if (len - 4 >= 65536) {
		if (c->notify)
			set_str(&c->notify->unnamed, NULL);   /* too long to be LISTEN: streamed as before */
		return 1;
	}
	if (iobuf_len(in) < 1 + (size_t)len)
		return -1;
	const uint8_t *body = iobuf_data(in) + PROTO_HEADER_LEN;
	size_t blen = len - 4;
	const char *name = (const char *)body;
	size_t nlen = strnlen(name, blen);
	if (nlen >= blen)
		return 1;
	const char *text = name + nlen + 1;
	size_t tlen = strnlen(text, blen - nlen - 1);
	if (nlen + 1 + tlen >= blen)
		return 1;
	char channel[NOTIFY_CHANNEL_MAX + 1];
	/* most statements are not LISTEN/UNLISTEN: their first character says so */
	enum notify_stmt kind = may_be_listen(text, tlen, len - 4) ? notify_parse_statement(text, tlen, channel)
	                                                           : NOTIFY_STMT_NONE;
	if (name[0] == '\0' && c->notify)
		set_str(&c->notify->unnamed, NULL);
	if (kind == NOTIFY_STMT_NONE)
		return 1;
	if (name[0] != '\0' || kind == NOTIFY_STMT_MIXED) {
		iobuf_drain(in, 1 + (size_t)len);
		server_note_request(s, c, PqMsg_Parse);
		prepared_raise_error(s, SQLSTATE_FEATURE_NOT_SUPPORTED,
		                     kind == NOTIFY_STMT_MIXED ? MIXED_MSG
		                     : "LISTEN and UNLISTEN cannot be named prepared statements under transaction pooling",
		                     NULL, kind == NOTIFY_STMT_MIXED ? MIXED_HINT : "Use the unnamed statement.");
		c->checked = false;
		return 0;
	}
	if (must_wait(c, kind, channel))
		return -1;
	char *action = make_action(kind, channel);
	struct notify_client *nc = action ? nc_get(c) : NULL;
	if (!nc) {
		free(action);
		return 1;
	}
	iobuf_drain(in, 1 + (size_t)len);
	struct msgbuf m;
	msg_init(&m);
	msg_begin(&m, PqMsg_Parse);
	msg_add_string(&m, "");
	msg_add_string(&m, NOOP_SQL);
	msg_add_int16(&m, 0);
	msg_end(&m);
	msg_flush_to(&m, &s->io.out);
	msg_free(&m);
	server_note_request(s, c, PqMsg_Parse);
	prepared_note_request(s, PqMsg_Parse);
	if (c->aic && client_step_has_pending(c))
		client_step_relayed(c, s);
	set_str(&nc->unnamed, action);
	c->checked = false;
	return 0;
}

/* Bind: the unnamed portal of the unnamed statement takes its action. */
static int track_bind(struct client *c, uint32_t len)
{
	struct iobuf *in = &c->io.in;
	if (iobuf_len(in) < 1 + (size_t)len)
		return -1;
	const char *body = (const char *)iobuf_data(in) + PROTO_HEADER_LEN;
	size_t blen = len - 4;
	size_t plen = strnlen(body, blen);
	if (plen >= blen)
		return 1;
	const char *stmt = body + plen + 1;
	if (strnlen(stmt, blen - plen - 1) >= blen - plen - 1)
		return 1;
	if (plen == 0) {
		char *a = NULL;
		if (stmt[0] == '\0' && c->notify->unnamed)
			a = strdup(c->notify->unnamed);
		set_str(&c->notify->portal, a);
	}
	return 1;
}

int notify_intercept(struct client *c, struct server *s, uint8_t type, uint32_t len)
{
	switch (type) {
	case PqMsg_Query:
		return intercept_query(c, s, len);
	case PqMsg_Parse:
		return intercept_parse(c, s, len);
	case PqMsg_Bind:
		return c->notify && (c->notify->unnamed || c->notify->portal) ? track_bind(c, len) : 1;
	case PqMsg_Execute:
		if (c->notify && c->notify->portal) {
			struct iobuf *in = &c->io.in;
			if (iobuf_len(in) < 1 + (size_t)len)
				return -1;
			c->notify->exec_pending = len > 4 && iobuf_data(in)[PROTO_HEADER_LEN] == '\0';
		}
		return 1;
	default:
		return 1;
	}
}

void notify_relayed(struct client *c, struct server *s, uint8_t type)
{
	if (type != PqMsg_Execute || !c->notify || !c->notify->exec_pending)
		return;
	c->notify->exec_pending = false;
	struct replyq_entry *e = replyq_tail(&s->replies);
	if (e && e->type == PqMsg_Execute && e->action == RQ_FORWARD && !e->notify)
		e->notify = strdup(c->notify->portal);
}

bool notify_server_reply(struct client *c, struct server *s, uint8_t type, const uint8_t *msg, size_t total)
{
	if (type == PqMsg_ErrorResponse) {
		c->notify_tx_failed = true;
		return false;
	}
	if (type != PqMsg_CommandComplete)
		return false;
	if (total >= 1 + 4 + 9 && memcmp(msg + PROTO_HEADER_LEN, "ROLLBACK", 9) == 0)
		c->notify_tx_rolled_back = true;
	struct replyq_entry *e = replyq_head(&s->replies);
	if (!e || !e->notify)
		return false;
	char *action = e->notify;
	e->notify = NULL;
	struct msgbuf m;
	msg_init(&m);
	msg_begin(&m, PqMsg_CommandComplete);
	msg_add_string(&m, action[0] == 'L' ? "LISTEN" : "UNLISTEN");
	msg_end(&m);
	msg_flush_to(&m, &c->io.out);
	msg_free(&m);
	struct notify_client *nc = nc_get(c);
	if (!nc || !strv_push(&nc->pending, &nc->n_pending, &nc->cap_pending, action))
		free(action);
	return true;
}
