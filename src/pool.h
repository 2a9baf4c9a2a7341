/* SPDX-License-Identifier: PostgreSQL */
/*
 * pool.h - server pools per (database, user): which server a client gets,
 * who waits for one, when servers are opened and closed. Owns struct pool
 * and the lists of servers and attached clients; pool_size and the
 * per-database / per-user limits are enforced here.
 */
#ifndef SLUICE_POOL_H
#define SLUICE_POOL_H

#include <stdbool.h>
#include <stdint.h>
#include <sys/queue.h>

#include "client.h"
#include "config.h"
#include "scram.h"
#include "sluice.h"
#include "varcache.h"

/*
 * Counters of one pool since start, for SHOW STATS and /metrics (admin.h,
 * metrics.h). Each is one increment on the data path; times in usec.
 */
#define POOL_WAIT_BUCKETS 12      /* wait time histogram; bounds in metrics.c */
struct pool_stats {
	uint64_t server_assignments;   /* a server was linked to a client */
	uint64_t xact_count;           /* ReadyForQuery 'I' relayed */
	uint64_t query_count;          /* Query, FunctionCall, Execute */
	uint64_t parse_count;          /* Parse messages of clients */
	uint64_t bind_count;           /* Bind messages of clients */
	uint64_t bytes_received;       /* from clients */
	uint64_t bytes_sent;           /* to clients */
	uint64_t xact_time_usec;       /* from the first request outside a transaction to ReadyForQuery 'I' */
	uint64_t query_time_usec;      /* from the oldest unanswered request to the ReadyForQuery that answers all */
	uint64_t wait_time_usec;       /* clients waiting for a server */
	uint64_t wait_buckets[POOL_WAIT_BUCKETS]; /* assignments by wait time, not cumulative */
};

/* Bounds of wait_buckets but the last (+Inf), usec. */
extern const usec_t pool_wait_bucket_bounds[POOL_WAIT_BUCKETS - 1];

struct pool {
	TAILQ_ENTRY(pool) entry;
	struct sluice *sl;
	char *db_name;                 /* the name clients use */
	char *user_name;               /* the role servers log in as */
	/* where and how servers connect, copied from the config (reload-safe) */
	char *host;                    /* NULL: unix socket in unix_socket_dir; may be a list "a,b,c" */
	int port;                      /* the first (or only) port */
	char *port_list;               /* "5432,5433": one port per host; NULL: port for every host */
	bool round_robin;              /* load_balance_hosts = round-robin */
	unsigned host_cursor;          /* round-robin: the host the next server login starts at */
	char *dbname;
	char *password;                /* NULL: take it from auth_file */
	char *connect_query;
	struct varcache startup_vars;  /* client_encoding/datestyle/... of the db entry */
	int pool_size;
	int min_pool_size;
	int reserve_pool;              /* reserve_pool_size of [users], [databases] or global */
	usec_t server_lifetime;        /* of the [databases] entry, else global */
	enum pool_mode pool_mode;

	struct server_list login_servers;  /* SV_LOGIN */
	struct server_list idle_servers;   /* SV_IDLE */
	struct server_list active_servers; /* SV_ACTIVE, SV_RESET, SV_BEING_CANCELED */
	struct client_list waiting_clients; /* CL_WAITING_LOGIN and CL_WAITING, FIFO */
	struct client_list active_clients;  /* CL_ACTIVE */
	int n_login, n_idle, n_active, n_waiting, n_clients;
	int n_waiting_login;             /* of n_waiting, those in CL_WAITING_LOGIN */
	int n_replication_waiting;       /* replication clients (in active_clients) waiting for room in pool_size */
	bool starting_replication;       /* pool_start_waiting_replication is running: no re-entry */

	/* ParameterStatus of the first server that logged in: what clients are
	 * welcomed with before they have a server of their own. */
	struct varcache welcome_vars;
	char **welcome_other;          /* untracked name/value pairs, NULL-terminated */
	bool have_welcome;

	/* LISTEN/NOTIFY under transaction pooling: the listening connection, or NULL (notify_relay.c) */
	struct notify_listener *notify;

	/* SCRAM keys recovered from a client's login, to log servers in with. */
	struct scram_secret scram_secret;
	uint8_t scram_client_key[SCRAM_KEY_LEN];
	bool have_scram_keys;
	char *proved_password;         /* owned: a PAM/LDAP client's cleartext password, for server logins
	                                  when the entry and auth_file have none */

	usec_t last_login_failure;     /* 0: the last attempt succeeded */
	bool login_failure_transient;  /* it may pass by itself (unreachable, 57P03...): retry soon */
	usec_t login_retry_delay;      /* then: the back-off before the next attempt (100 ms doubling) */
	struct event *login_retry_ev;  /* owned; makes that attempt when clients wait */
	usec_t reconfigured_at;        /* monotonic, last reload: older login attempts say nothing */
	uint8_t *last_login_error;     /* ErrorResponse message to give waiting clients, owned */
	size_t last_login_error_len;
	bool stale;                    /* config changed its target: close servers when released */
	usec_t unused_since;           /* monotonic: its last client left (autodb_idle_timeout); 0: in use */
	const char *reconnect_reason; /* why close_when_released servers go (pool_reconnect), static */

	/* admin console: counters, and their values at the last two stats_period ticks */
	struct pool_stats stats, stats_newer, stats_older;
};

/*
 * The pool for the database a client named (db_name, configured by entry db,
 * which may be the "*" fallback) and the server login user, created on
 * first use. Returns NULL on OOM.
 */
struct pool *pool_get(struct sluice *sl, const struct db_config *db, const char *db_name, const char *user);

/*
 * Client c (CL_ACTIVE, no server) needs a server: link an idle one, or queue
 * c (CL_WAITING) and open a server when the limits allow. Fails c with the
 * pool's last login error when servers cannot be reached.
 */
void pool_request_server(struct pool *p, struct client *c);

/*
 * Client c finished login and waits for the pool's welcome parameters
 * (CL_WAITING_LOGIN) because no server has logged in yet.
 */
void pool_wait_for_welcome(struct pool *p, struct client *c);


/*
 * Client c (authenticated) asked for a replication connection (its
 * StartupMessage's replication=database|true, PgBouncer 1.23): open a server
 * for c alone, with that parameter and c's parameters in the server's
 * StartupMessage, whatever the pool_mode. c is welcomed with that server's
 * parameters once it logged in, the two are linked for c's life, and the
 * server is closed with c, never pooled or reused. c gets a FATAL when the
 * server cannot log in (the server's own ErrorResponse when it sent one).
 * Replication servers count against pool_size as PgBouncer 1.23 counts
 * them: idle servers are closed to make room ("evicted for pool_size"),
 * and with none idle c waits (reading paused) until a server of p closes.
 */
void pool_start_replication(struct pool *p, struct client *c);

/*
 * A server of p closed: start the replication clients waiting for room, in
 * arrival order, while pool_size allows. Called by server_close().
 */
void pool_start_waiting_replication(struct pool *p);

/*
 * The client gave its server back (session end or, later, transaction end).
 * Runs server_reset_query or closes the server when it is not clean.
 */
void pool_release_server(struct server *s, bool clean);

/* Server s finished login or reset: hand it to the first waiter or park it idle. */
void pool_server_ready(struct server *s);

/*
 * The last CancelRequest forwarded to s finished (cancel.h). A release held
 * back for it goes ahead now: the server may serve another client.
 */
void pool_cancels_done(struct server *s);

/*
 * A server login begun at attempt_start (monotonic usec) failed with the
 * ErrorResponse msg (len bytes, whole message with header) or, when msg is
 * NULL, with a connection error text. A failure that may pass by itself (no
 * ErrorResponse: refused, reset, timed out; or SQLSTATE class 08, 57P01-03,
 * 53300, as during a PostgreSQL restart) is retried while clients wait,
 * after 100 ms doubling up to 1 s (at most server_login_retry), one
 * attempt at a time; clients wait through it until query_wait_timeout (or
 * query_timeout), as with PgBouncer. Any other error (a wrong
 * password, a missing database) goes to every waiting client and to new
 * ones for server_login_retry, as PgBouncer. A login begun before the last
 * reload used old settings: it only makes way for a new attempt.
 * permanent: a failure without msg that retrying cannot cure (a server
 * certificate that does not verify, no TLS where server_tls_sslmode needs
 * it): treated as an error of the server's, given to waiting clients at once.
 */
void pool_login_failed(struct pool *p, usec_t attempt_start, const uint8_t *msg, size_t len,
                       const char *conn_error, bool permanent);

/*
 * The one mover of client states: take c off the list its state names (the
 * sluice's login/closing/admin lists or pool p's waiting/active lists, with
 * their counts), set state, and put it on the new state's list. p is the pool
 * for CL_WAITING_LOGIN, CL_WAITING and CL_ACTIVE and is kept in c->pool for
 * CL_NONE (login_succeeded hands a client to its pool that way); NULL
 * otherwise. Constant time: no list is walked. A client leaving CL_LOGIN
 * tells the listener (sl->login_slot_free).
 */
void pool_move_client(struct client *c, struct pool *p, enum client_state state);

/*
 * Put the pool's handlers of server.c's events (a login finished or failed,
 * a server ready for a client, a server closed) in sl->server_events;
 * before any server connects (main.c).
 */
void pool_start(struct sluice *sl);

/* Periodic work: timeouts of waiting clients and idle servers, min_pool_size. */
void pool_janitor(struct sluice *sl);

/* Re-read pool settings from sl->cfg after a reload. */
void pool_reconfigure(struct sluice *sl);

/* Total servers (any state) of database db_name / of user user_name. */
int pool_count_db_servers(struct sluice *sl, const char *db_name);
int pool_count_user_servers(struct sluice *sl, const char *user_name);

/*
 * Clients (waiting or active) of database db_name across its pools, and
 * clients that logged in as user_name across all pools: what
 * max_db_client_connections and max_user_client_connections count
 * (PgBouncer's client_connection_count, config.html).
 */
int pool_count_db_clients(struct sluice *sl, const char *db_name);
int pool_count_user_clients(struct sluice *sl, const char *user_name);

/*
 * The client limits in force for database db_name / login user user_name:
 * the [databases] / [users] entry's value when it sets one, else the global
 * key. 0 means no limit.
 */
int pool_max_db_clients(const struct sluice_config *cfg, const char *db_name);
int pool_max_user_clients(const struct sluice_config *cfg, const char *user_name);

/* ---- admin console (admin.c): PAUSE, RESUME, RECONNECT, KILL ---- */

/* True when PAUSE or KILL holds p: clients wait, no server is linked or opened. */
bool pool_is_paused(const struct pool *p);

/* Close p's idle servers now (PAUSE, RECONNECT); reason is logged. */
void pool_close_idle(struct pool *p, const char *reason);

/*
 * Close every server of p once released, idle ones now (RECONNECT, a
 * server_tls_* change); reason (static) is what the log says for each,
 * PgBouncer's "database configuration changed" for a configuration change.
 */
void pool_reconnect(struct pool *p, const char *reason);

/* Disconnect p's clients (SQLSTATE 57P01) and close its servers now (KILL); p must be paused. */
void pool_kill(struct pool *p);

/* p is no longer paused: open servers for the clients that waited (RESUME). */
void pool_resume(struct pool *p);

/*
 * Account a ReadyForQuery server s relays to its client (per-database
 * stats): transactions, transaction and query time. Called by server.c.
 */
void pool_note_ready(struct server *s);

/*
 * SHUTDOWN WAIT_FOR_SERVERS (SIGINT), called every 100 ms while it waits:
 * send FATAL 57P01 "server shutting down" (PgBouncer's text) to every client
 * waiting for a server and to every client between transactions that holds
 * no server. Clients inside a transaction keep their server until it ends; a
 * session pooling client keeps its server until it disconnects (PgBouncer's
 * test_repeated_sigint), so the wait ends then or at a second SIGINT.
 */
void pool_close_released_clients(struct sluice *sl);

/* Close every pool's servers and free the pools (shutdown). */
void pool_free_all(struct sluice *sl);

/*
 * How many of p's idle servers are "used" at now (usec, now_usec()):
 * idled server_check_delay or longer, so server_check_query runs before the
 * next client gets one; 0 when server_check_query is "" (no check). PgBouncer's
 * sv_used (SHOW POOLS, usage.html); counted at each call, for SHOW POOLS and
 * /metrics.
 */
int pool_count_used(const struct pool *p, usec_t now);

#endif
