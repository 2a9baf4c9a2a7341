/* SPDX-License-Identifier: PostgreSQL */
/*
 * client.h - one application connection: SSLRequest/GSSENCRequest refusal,
 * StartupMessage, authentication against auth_file, the welcome, and the
 * relay of the client's messages to its server. Owns struct client; its
 * state names the list it sits on (pool.c's pool_move_client). What the
 * modules below tell a client comes through struct client_events.
 */
#ifndef SLUICE_CLIENT_H
#define SLUICE_CLIENT_H

#include <stdarg.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/queue.h>
#include <netinet/in.h>
#include <sys/socket.h>

#include "config.h"
#include "connio.h"
#include "notify_relay.h"
#include "prepared.h"
#include "proto.h"
#include "scram.h"
#include "varcache.h"
#include "sessvars.h"
#include "sluice.h"

struct sluice;
struct pool;
struct ai_tags;
struct usage_pending;
struct stmt_tags;

struct ai_client;
struct server;
struct event;
struct worker_job;

enum client_state {
	CL_NONE,           /* between lists, for the length of one call */
	CL_LOGIN,          /* startup and authentication: sl->login_clients */
	CL_CANCEL,         /* sent a CancelRequest, being closed: on no list */
	CL_WAITING_LOGIN,  /* authenticated, waits for the pool's first server: pool->waiting_clients */
	CL_ACTIVE,         /* logged in, with or without a server: pool->active_clients */
	CL_WAITING,        /* wants a server, none free yet: pool->waiting_clients */
	CL_CLOSING,        /* FATAL sent, closes once its output drains: sl->closing_clients */
	CL_ADMIN,          /* logged in to the admin console (admin.c): sl->admin_clients */
};

enum client_auth_step { CL_AUTH_STARTUP, CL_AUTH_PASSWORD, CL_AUTH_SASL_FIRST, CL_AUTH_SASL_FINAL,
                        CL_AUTH_QUERY /* waiting for auth_query's answer */,
                        CL_AUTH_DERIVING /* its SCRAM secret is derived on a worker thread */,
                        CL_AUTH_PAM /* its password is checked by PAM or LDAP on a worker thread */ };

/*
 * What only a login needs: made at accept, freed when the login succeeds
 * (login_succeeded) or the client goes, so an idle client keeps none of it.
 */
struct client_login {
	enum client_auth_step step;
	enum auth_type method;         /* the method chosen for this login */
	uint8_t md5_salt[4];
	bool no_such_user;             /* auth_query found no such role: the failure says so (PgBouncer) */
	char *password;                /* stored password for the user (copy), owned */
	struct scram_server *scram;    /* owned; during a SCRAM login only */
	struct ldap_params *ldap;      /* owned; during an LDAP login only: the options it goes by */
	char *proved_password;         /* owned; the cleartext password PAM or LDAP accepted, until
	                                  login_succeeded hands it to the pool */
	struct worker_job *job;        /* its SCRAM secret being derived (CL_AUTH_DERIVING) or its PAM/LDAP
	                                  check (CL_AUTH_PAM), or NULL */
};

struct client {
	TAILQ_ENTRY(client) entry;
	enum client_state state;
	enum replication_mode replication; /* the StartupMessage's replication: a dedicated server (pool.h) */
	struct sluice *sl;
	struct pool *pool;
	struct server *server;         /* linked server or NULL */
	struct connio io;              /* the socket, its buffers and events */
	uint64_t id;

	union client_peer {            /* peer address, for auth_hba_file rules; sa.sa_family alone
	                                  (AF_UNIX) for a unix socket. Its text is made when shown
	                                  (client_addr), not kept: 28 bytes instead of 196 */
		struct sockaddr sa;
		struct sockaddr_in in;
		struct sockaddr_in6 in6;
	} peer;
	/* (small fields together: no padding holes; an idle client's bytes count) */
	bool tls;                      /* io runs TLS */
	bool replication_waiting;      /* a replication client waiting for room in its pool's pool_size */
	bool settings_in_tx;                /* settings_tx holds SETs not committed yet */
	bool settings_local;                /* ran SET LOCAL in this block: no cache lookup until it ends */
	/* CL_ADMIN only (admin.c) */
	bool admin_may_control;        /* in admin_users: every command; else SHOW only (stats_users) */
	bool admin_skip_to_sync;       /* an extended-protocol message was refused: skip to Sync */
	bool parse_noted;              /* the Parse at the front had its settings noted before a server
	                                  was linked: its second step skips that (client_step) */
	struct event *close_timer;     /* owned; closes it a moment after a failed handshake */
	char *user;                    /* login role from the StartupMessage, owned */
	char *database;                /* database name from the StartupMessage, owned */
	struct varcache vars;          /* the values this client believes it has */
	/* Session settings under transaction pooling (settings.h): */
	struct sessvars *settings_startup;  /* owned; from the StartupMessage: what RESET goes back to;
	                                       NULL when it gave no settings (most clients) */
	struct sessvars settings;           /* committed: what its next server is made to have */
	struct sessvars *settings_tx;       /* owned; the record inside a transaction block while
	                                       settings_in_tx, NULL otherwise */
	struct sessvar_op *pending_setting; /* the SET of the Query or Execute at the front, handed on when relayed */
	struct settings_ext *settings_ext;  /* its extended-protocol SET statements and portals (settings_ext.h) */
	struct client_stmts stmts;     /* named prepared statements, under transaction pooling */
	struct ai_client *aic;         /* the middleware's state (ai/client_state.h); NULL until first needed */
	struct event *cache_wake_ev;   /* owned; resumes the relay when a cache fill it waited for ends */
	struct notify_client *notify;  /* owned; LISTEN state under transaction pooling, NULL until
	                                  its first LISTEN/UNLISTEN (notify_relay.h) */
	bool skipping_to_sync;         /* refused: its messages are dropped up to Sync */
	/* Protocol and settings state the middleware reads, set for every client: */
	bool local_batch_open;         /* a batch answered without a server up to a Flush: its Sync is ours */
	bool settings_tainted;         /* sent a statement that may change settings the key does not
	                                  hold (ai/settings_scan.h): no lookup, no fill, for good */
	bool settings_changing;        /* sent a SET of a reported setting: no lookup until its
	                                  ParameterStatus is in (the server owes nothing) */
	uint32_t drop_left;            /* bytes of a dropped message still to drop */
	int32_t cancel_pid, cancel_key; /* the BackendKeyData pgsluice gave it */

	struct client_login *login;    /* owned; until the login succeeds, NULL after */

	usec_t connect_time;           /* monotonic */
	usec_t wait_start;             /* monotonic, when it started waiting for a server */
	usec_t last_activity;          /* monotonic, last message from the client */
	usec_t xact_start;             /* monotonic, first request of its current transaction (stats) */
	char *close_reason;            /* owned; the error a CL_CLOSING client was sent, for the log */
	uint32_t relay_left;           /* bytes of the current message still to relay */
	bool wait_notified;            /* sent the query_wait_notify NOTICE for this wait */
	bool checked;                  /* the middleware saw the message at the front */
	bool notify_tx_failed;         /* an ErrorResponse since the last ReadyForQuery: a LISTEN in
	                                  this transaction will not take effect (notify_relay.c) */
	bool notify_tx_rolled_back;    /* a ROLLBACK since the last ReadyForQuery (notify_relay.c) */
};

/* Room for client_addr's text: INET6_ADDRSTRLEN (46) and then some. */
#define CLIENT_ADDR_LEN 64

/*
 * The text of c's peer address as inet_ntop writes it, "unix" for a unix
 * socket, written to buf (CLIENT_ADDR_LEN bytes). Returns buf.
 */
const char *client_addr(const struct client *c, char *buf);

/* client_addr into a buffer that lives to the end of the caller's block (for log lines). */
#define CLIENT_ADDR(c) client_addr((c), (char[CLIENT_ADDR_LEN]){ 0 })

/* c's peer port (host order), 0 for a unix socket. */
int client_port(const struct client *c);

/* Take over an accepted socket fd (non-blocking). Closes fd on failure. */
void client_accept(struct sluice *sl, int fd, const struct sockaddr *addr, socklen_t len);

/*
 * max_login_clients is reached: close the oldest client still logging in
 * when it has sent no StartupMessage and is at least min_age (usec) old, so
 * a flood of idle sockets cannot lock real clients out. Returns true when
 * one was closed (no error is sent: it asked nothing, as PostgreSQL's
 * authentication_timeout), false when the oldest does not qualify.
 */
bool client_close_oldest_silent(struct sluice *sl, usec_t min_age);

/*
 * What the modules under client.c tell a client. relay.c, notify_relay.c,
 * client_step.c, pool.c, server.c and prepared.c sit below client.c in the
 * call graph (docs/design.md, section 10) and reach it only through this
 * table, which client.c fills in (client_start) and the inline functions
 * below call: one indirect call each, none per message.
 *  fatal: send c an ErrorResponse with severity FATAL (text its message, per
 *   the Error Message Style Guide; detail and hint may be NULL) and close c
 *   once it is written; its server is released at once.
 *  fatal_raw: the same with a prebuilt ErrorResponse (whole, len bytes).
 *  close: close and free c now, releasing its server; reason is logged
 *   (log_disconnections).
 *  resume: relay what c has buffered (its server's transaction ended, its
 *   server's output drained, a wait of its own ended); nothing when c is closing.
 *  linked: c's server is linked and set up: relay what c has buffered.
 *  welcome: the pool has its welcome parameters: finish c's login
 *   (CL_WAITING_LOGIN -> CL_ACTIVE: ParameterStatus, BackendKeyData, ReadyForQuery).
 *  parsed: the ParseComplete (ok) or failure of a Parse whose tags st rode on
 *   the reply queue came back (client_step_parsed; st is taken, c may be NULL).
 * Every pointer argument is borrowed for the call.
 */
struct stmt_tags;
struct client_events {
	void (*fatal)(struct client *c, const char *sqlstate, const char *detail, const char *hint, const char *text);
	void (*fatal_raw)(struct client *c, const uint8_t *msg, size_t len);
	void (*close)(struct client *c, const char *reason);
	void (*resume)(struct client *c);
	void (*linked)(struct client *c);
	void (*welcome)(struct client *c);
	void (*parsed)(struct client *c, struct stmt_tags *st, bool ok);
};

/* Put client.c's client_events in sl->client_events; before any client connects (main.c). */
void client_start(struct sluice *sl);

/* client_events' fatal, with the message formatted from fmt (at most 1 kB is kept). */
static inline __attribute__((format(printf, 5, 6))) void
client_fatal(struct client *c, const char *sqlstate, const char *detail, const char *hint, const char *fmt, ...)
{
	char text[1024];
	va_list ap;
	va_start(ap, fmt);
	vsnprintf(text, sizeof(text), fmt, ap);
	va_end(ap);
	c->sl->client_events->fatal(c, sqlstate, detail, hint, text);
}

/* client_events' fatal_raw, close, resume, linked, welcome and parsed (above). */
static inline void client_fatal_raw(struct client *c, const uint8_t *msg, size_t len)
{
	c->sl->client_events->fatal_raw(c, msg, len);
}

static inline void client_close(struct client *c, const char *reason)
{
	c->sl->client_events->close(c, reason);
}

static inline void client_resume(struct client *c)
{
	c->sl->client_events->resume(c);
}

static inline void client_server_linked(struct client *c)
{
	c->sl->client_events->linked(c);
}

static inline void client_welcome(struct client *c)
{
	c->sl->client_events->welcome(c);
}

static inline void client_parsed(struct sluice *sl, struct client *c, struct stmt_tags *st, bool ok)
{
	sl->client_events->parsed(c, st, ok);
}

/*
 * The words the "closing because:" log line gives for c (copied; out of
 * memory: none), replacing the error text client_fatal kept: PgBouncer's log
 * wording where an operator's log watch matches it ("query timeout", "idle
 * transaction timeout").
 */
static inline void client_set_close_reason(struct client *c, const char *why)
{
	free(c->close_reason);
	c->close_reason = strdup(why);
}

/* Send c a ReadyForQuery with transaction status 'I', 'T' or 'E' (protocol-message-formats.html). */
static inline void client_send_ready(struct client *c, char status)
{
	const uint8_t msg[6] = { PqMsg_ReadyForQuery, 0, 0, 0, 5, (uint8_t)status };
	connio_add(&c->io, msg, sizeof(msg));
}

/*
 * PgBouncer's rule for the console: user "pgbouncer" (or "pgsluice") asking
 * for the console database over the unix socket, from a process of the same
 * OS user as pgsluice (SO_PEERCRED), logs in without a password and may run
 * every command. True when c (CL_LOGIN or CL_ADMIN, startup packet read) is
 * that login. False on any other socket or when the peer cannot be read.
 */
bool client_is_console_owner(const struct client *c);

/* Free the SCRAM secrets derived from plain passwords (reload, shutdown). */
void client_free_derived_secrets(struct sluice *sl);

#endif
