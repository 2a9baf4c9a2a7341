/* SPDX-License-Identifier: PostgreSQL */
/*
 * server.h - pgsluice's connections to PostgreSQL: connect, StartupMessage,
 * authentication as a client (cleartext, md5, SCRAM-SHA-256), setup (SET)
 * and reset queries; a linked server's replies are relay.c's. Owns struct
 * server; its state names the pool list it sits on (server_move).
 */
#ifndef SLUICE_SERVER_H
#define SLUICE_SERVER_H

#include <stdbool.h>
#include <stdint.h>
#include <sys/queue.h>
#include <sys/socket.h>

#include "config.h"
#include "dnscache.h"
#include "connio.h"
#include "pgerror.h"
#include "proto.h"
#include "prepared.h"
#include "replyq.h"
#include "scram.h"
#include "varcache.h"
#include "sessvars.h"
#include "client.h"
#include "pool.h"
#include "sluice.h"
#include "util.h"

struct pool;
struct client;

/* Messages pgsluice reads whole from a server (login, internal queries,
 * ReadyForQuery, ParameterStatus) are far below this (bytes); a larger one
 * is a broken server. */
#define MAX_INSPECTED_LEN (1024 * 1024)
struct evdns_getaddrinfo_request;
struct cache_entry;
struct cancel_req;
struct worker_job;

enum server_state {
	SV_LOGIN,     /* connecting and authenticating: pool->login_servers */
	SV_IDLE,      /* ready, unlinked: pool->idle_servers */
	SV_ACTIVE,    /* linked to a client: pool->active_servers */
	SV_RESET,     /* running server_reset_query: pool->active_servers */
	SV_BEING_CANCELED, /* released while a cancel to it was on its way: pool->active_servers (cancel.h) */
};

/* What the server is doing with the queries pgsluice itself sent. */
enum server_internal {
	SV_INTERNAL_NONE,      /* replies go to the linked client */
	SV_INTERNAL_CONNECT,   /* connect_query after login */
	SV_INTERNAL_SETUP,     /* SET of tracked parameters before the client's traffic */
	SV_INTERNAL_RESET,     /* server_reset_query after release */
};

enum server_login_step { SV_STEP_STARTUP, SV_STEP_AUTH, SV_STEP_PARAMS, SV_STEP_SSL };

struct server {
	TAILQ_ENTRY(server) entry;
	enum server_state state;
	enum server_internal internal;
	enum server_login_step login_step;
	struct pool *pool;
	struct client *client;         /* linked client or NULL */
	struct connio io;              /* the socket, its buffers and events */
	struct evdns_getaddrinfo_request *dns_req; /* the host name being resolved, or NULL */
	/* while connecting: the host of the pool's host list being tried, how many
	 * hosts are still to try, and the addresses of its name not tried yet */
	int host_index;
	int hosts_left;
	char host_name[256];           /* "" or "/dir": a unix socket */
	int host_port;
	struct dns_addrs *addrs;       /* the host's addresses (dnscache.h), owned; NULL once connected */
	int addr_next;                 /* the next of them to try */
	enum replication_mode replication; /* a replication connection: its client's alone (pool_start_replication) */
	uint64_t id;

	struct varcache vars;          /* the server's current ParameterStatus values */
	struct sessvars settings;      /* the recorded settings it has now (settings.h) */
	uint64_t settings_owner;       /* id of the client whose settings those are */
	bool settings_dirty;           /* a statement pgsluice cannot follow ran since its last RESET ALL */
	bool settings_reset_all;       /* settings is in doubt: RESET ALL before the next client */
	bool saw_rollback;             /* a ROLLBACK completed since the last ReadyForQuery */
	bool settings_implicit;        /* an Execute's SET in the implicit transaction of a batch (settings.h) */
	char **other_params;           /* untracked ParameterStatus pairs, NULL-terminated */
	int32_t cancel_pid, cancel_key;
	struct sockaddr_storage addr;  /* where to send a CancelRequest */
	socklen_t addr_len;
	struct scram_client scram;
	bool scram_started;
	struct worker_job *scram_job;  /* the SaltedPassword being computed off the loop, or NULL */

	usec_t connect_time;           /* monotonic */
	usec_t last_used;              /* monotonic, last release or login */
	usec_t request_start;          /* monotonic, when the oldest unanswered request was sent */
	usec_t last_ready;             /* monotonic, last ReadyForQuery */
	int pending_ready;             /* ReadyForQuery replies still owed */
	bool unsynced;                 /* extended-protocol messages sent since the last Sync */
	char tx_status;                /* last ReadyForQuery status: 'I', 'T', 'E' */
	uint32_t relay_left;           /* bytes of the current message still to relay */
	bool internal_failed;          /* an internal query got ErrorResponse */
	struct pg_error internal_error;   /* and its fields */
	bool tls;                      /* io runs TLS */
	struct replyq replies;         /* requests not answered yet, in order (replyq.h) */
	struct server_stmts stmts;     /* statements prepared on this server */
	struct cache_entry *capture;   /* the fill the DataRow being relayed goes to (cache_proto.h) */
	uint32_t capture_left;         /* bytes of it still to capture */
	bool block_begun;              /* a BEGIN completed since the last ReadyForQuery: answers are not kept */
	bool close_when_released;
	bool settings_tainted;         /* relayed a client's statement that may have changed settings
	                                  pgsluice does not track: stores no answer until DISCARD ALL */
	struct cancel_req *cancels;    /* CancelRequests on their way to this server (cancel.h) */
};

/* Open a new server for pool p (SV_LOGIN). Returns NULL on immediate failure (logged). */
struct server *server_launch(struct pool *p);

/*
 * Open a replication server for client c alone (pool_start_replication):
 * linked to c from the start, c->replication and c's parameters in its
 * StartupMessage. On failure, now or later, c gets the FATAL and the pool's
 * login state is left alone (the error is c's, not the pool's).
 */
void server_launch_replication(struct pool *p, struct client *c);

/*
 * server_connect_timeout passed for s while its host name was being
 * resolved or its TCP connect was still under way: move on to the next
 * address, or the next host of the pool's host list (the timer restarts),
 * and return true (s may be gone then: that login failed too); false when
 * there is none left (the caller fails the login).
 */
bool server_connect_next(struct server *s);

/*
 * What server.c tells s's pool. pool.c, above server.c in the call graph
 * (docs/design.md, section 10), fills it in (pool_start):
 *  logged_in: s's login finished: its ParameterStatus set (s->vars,
 *   s->other_params) may become the pool's welcome (the first login's).
 *  ready: s finished its login or reset: give it to the first waiting
 *   client or idle it (pool_server_ready).
 *  login_failed: a login of p begun at attempt_start (monotonic usec) failed
 *   with the ErrorResponse msg (len bytes, whole) or, msg NULL, conn_error;
 *   permanent: retrying cannot cure it (pool_login_failed).
 *  closed: a server of p was closed and freed; requeue, when not NULL, is
 *   the client it was being set up for, which waits for another.
 * Pointers are borrowed for the call.
 */
struct server_events {
	void (*logged_in)(struct server *s);
	void (*ready)(struct server *s);
	void (*login_failed)(struct pool *p, usec_t attempt_start, const uint8_t *msg, size_t len,
	                     const char *conn_error, bool permanent);
	void (*closed)(struct pool *p, struct client *requeue);
};

/*
 * The one mover of server states: take s off the pool list its state names
 * (login_servers, idle_servers or active_servers, with their counts), set
 * new_state and put it on that state's list. Idle servers are reused last
 * in first out (server_round_robin: first in first out, as PgBouncer).
 * Constant time.
 */
void server_move(struct server *s, enum server_state new_state);

/* Take s off the list its state keeps it on, and out of that count; s->state stays (server_close). */
void server_unlist(struct server *s);

/*
 * How many hosts p's entry names (PgBouncer 1.25's host=a,b,c; 1 for a
 * single host or the unix socket). For SHOW DATABASES' load_balance_hosts.
 */
int server_host_count(const struct pool *p);

/* Close and free s, unlinking it from its client and pool. reason is logged. */
void server_close(struct server *s, const char *reason);

/*
 * Link s (SV_IDLE) to client c: set the client's tracked parameters first if
 * they differ, then let the client's traffic flow. Returns false (s closed)
 * when the setup query cannot be sent.
 */
bool server_link(struct server *s, struct client *c);

/* Start server_reset_query on s (SV_RESET); idles it when there is none. */
void server_start_reset(struct server *s);

/* True when s has answered everything sent and is outside a transaction. */
bool server_is_clean(const struct server *s);

/*
 * True when server_check_query must run on s before a client gets it, at
 * now (usec, now_usec()): the query is set and s idled server_check_delay
 * or longer (0: always). As PgBouncer's server_check_delay (config.html);
 * an idle server it is true for is counted in sv_used.
 */
bool server_check_due(const struct server *s, usec_t now);

/*
 * A whole message (type, msg: len bytes from the type byte on, the
 * caller's) of s in SV_LOGIN or answering pgsluice's own query (s->internal):
 * the login's exchange (protocol-flow.html 55.2.1), ParameterStatus kept,
 * ReadyForQuery ending the login (s to its pool or its replication client)
 * or the setup or reset query. Returns false when s is gone or changed role
 * (the caller stops reading it and looks again).
 */
bool server_take_message(struct server *s, uint8_t type, const uint8_t *msg, size_t len);

/*
 * A ParameterStatus (name, value: NUL-terminated, borrowed) of s: kept in
 * s->vars and true when pgsluice tracks it for clients (varcache.h), else
 * kept with the other parameters given to new clients and false.
 */
bool server_note_parameter(struct server *s, const char *name, const char *value);

/* The answer to s's SSLRequest arrived (s->login_step is SV_STEP_SSL): start TLS or go on in plain text. */
void server_ssl_response(struct server *s);

/* s's socket connected (or finished its TLS handshake): start the login. */
void server_on_connect(struct server *s);

/*
 * s's socket failed (why) or the server hung up (why NULL): the next address
 * or host while connecting, a failed login, else s is closed.
 */
void server_on_error(struct server *s, const char *why);

/*
 * Account a message of client c on its way to server s (forwarded, or
 * answered by pgsluice in its place): s's requests in flight (a Query, a
 * FunctionCall and a Sync each owe a ReadyForQuery), whether s is between
 * Syncs, when the request and the transaction began (SHOW STATS' times), and
 * the query, Parse and Bind counts of the sluice and c's pool. Inline: once
 * per message on the relay's path.
 */
static inline __attribute__((always_inline)) void server_note_request(struct server *s, struct client *c, uint8_t type)
{
	struct pool_stats *ps = &c->pool->stats;   /* per-database stats (admin console) */
	if (s->pending_ready == 0) {
		s->request_start = c->last_activity;
		if (s->tx_status == 'I' && !s->unsynced)
			c->xact_start = now_usec();   /* a transaction begins */
	}
	switch (type) {
	case PqMsg_Query:
	case PqMsg_FunctionCall:
		s->pending_ready++;
		c->sl->stats.query_count++;
		ps->query_count++;
		break;
	case PqMsg_Sync:
		s->pending_ready++;
		s->unsynced = false;
		break;
	case PqMsg_Parse:
		ps->parse_count++;
		s->unsynced = true;
		break;
	case PqMsg_Bind:
		ps->bind_count++;
		s->unsynced = true;
		break;
	case PqMsg_Describe:
	case PqMsg_Close:
	case PqMsg_Flush:
		s->unsynced = true;
		break;
	case PqMsg_Execute:
		s->unsynced = true;
		c->sl->stats.query_count++;
		ps->query_count++;
		break;
	default:
		break;
	}
}

#endif
