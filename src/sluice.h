/* SPDX-License-Identifier: PostgreSQL */
/*
 * sluice.h - the per-process state of pgsluice: the event loop, the current
 * configuration and auth_file, the lists every connection sits on, and the
 * counters. One struct passed by pointer, so a worker-per-thread mode can
 * later own one each (docs/design.md).
 */
#ifndef SLUICE_SLUICE_H
#define SLUICE_SLUICE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>
#include <sys/queue.h>

#include "config.h"
#include "prepared.h"
#include "scram.h"
#include "tls.h"

struct event_base;
struct sluice;
struct evdns_base;
struct event;
struct userlist;
struct hba;
struct ident_map;
struct authquery;
struct dnscache;
struct limits;
struct limits_sync;
struct usage;
struct listener;
struct client;
struct server;
struct pool;
struct admin;
struct metrics;
struct ai_stats;
struct cancel_req;
struct connio_ops;
struct client_events;
struct server_events;

TAILQ_HEAD(client_list, client);
TAILQ_HEAD(server_list, server);
TAILQ_HEAD(pool_list, pool);

/* Counters for the stats_period log line (and later SHOW STATS). */
struct sluice_stats {
	uint64_t xact_count;
	uint64_t query_count;
	uint64_t bytes_received;   /* from clients */
	uint64_t bytes_sent;       /* to clients */
	uint64_t xact_time_usec;
	uint64_t wait_time_usec;
};

/*
 * How pgsluice is stopping (PgBouncer's cf_shutdown, usage.md "Signals" and
 * "SHUTDOWN"). Every mode but SHUTDOWN_NONE refuses new clients; the
 * waiting ones end, like SHUTDOWN_NOW, by storing usage records (up to 5 s).
 */
enum sluice_shutdown {
	SHUTDOWN_NONE,
	SHUTDOWN_WAIT_FOR_SERVERS, /* SIGINT: clients closed once they hold no server */
	SHUTDOWN_WAIT_FOR_CLIENTS, /* SIGTERM: clients served until they disconnect */
	SHUTDOWN_NOW,              /* SHUTDOWN, or a second SIGINT/SIGTERM: stop waiting */
};

/*
 * What the admin console asks of main.c, which owns the process (RELOAD,
 * SHUTDOWN, SET). Set by main.c before the loop starts; NULL: unavailable.
 * reload and set return false with errbuf (bytes errlen) saying why, the
 * running configuration unchanged then.
 */
struct sluice_hooks {
	/* RELOAD: what SIGHUP does; errbuf is "file:line: message" for a bad file */
	bool (*reload)(struct sluice *sl, char *errbuf, size_t errlen);
	/* SHUTDOWN [WAIT_FOR_SERVERS | WAIT_FOR_CLIENTS]: what SIGINT / SIGTERM do */
	void (*shutdown)(struct sluice *sl, enum sluice_shutdown mode);
	/* SET: change one reloadable key and apply it as a reload would */
	bool (*set)(struct sluice *sl, const char *key, const char *value, char *errbuf, size_t errlen);
};

/*
 * The admin console as client.c sees it. admin.c, above client.c, fills it
 * in (admin_start) so that client.c never calls the console by name: the
 * console is a module that uses clients, not one that clients use.
 * login: c (CL_LOGIN) authenticated for the console database; admit it or
 * close it. input: run what console session c has buffered (its read event,
 * and its write event once its answers drained). forget: console session c is
 * going away, drop its waits. NULL until admin_start ran.
 */
struct sluice_console {
	void (*login)(struct client *c);
	void (*input)(struct client *c);
	void (*forget)(struct client *c);
};

/* True when a client naming database asks for the admin console ("pgsluice" or PgBouncer's "pgbouncer"). */
static inline bool sluice_is_console_db(const char *database)
{
	return database && (strcmp(database, "pgsluice") == 0 || strcmp(database, "pgbouncer") == 0);
}

/* A SCRAM secret pgsluice derived from a plain auth_file password. */
struct derived_secret {
	struct derived_secret *next;
	char *user;
	char *password;            /* the password it was derived from: a reload may change it */
	struct scram_secret secret;
};

struct sluice {
	struct event_base *base;
	struct evdns_base *dns;
	struct sluice_config *cfg;        /* owned; replaced on reload */
	struct userlist *userlist;        /* owned; NULL when auth_file is unset */
	struct hba *hba;                  /* owned; NULL when auth_hba_file is unset */
	struct ident_map *ident;          /* owned; NULL when auth_ident_file is unset */
	struct settings_memo *settings_memo; /* owned; statement texts' settings effects (ai/settings_scan.h),
	                                        made at the first Query or Parse */
	struct tls_config tls;            /* owned; both legs' TLS contexts */
	struct dnscache *dnscache;        /* server host name answers (dnscache.c); NULL until one is kept */
	struct authquery *authquery;      /* auth_query side channels and cache; NULL until used */
	char *config_path;
	bool quiet;

	struct listener *listeners;       /* owned, linked list */
	struct client_list login_clients; /* CL_LOGIN */
	struct client_list closing_clients; /* CL_CLOSING */
	struct pool_list pools;
	int n_clients;                    /* every client socket (SHOW LISTS, SHOW MEM) */
	int n_login_clients;              /* CL_LOGIN, bounded by max_login_clients */
	int n_logged_in;                  /* in a pool or the admin console, for max_client_conn */
	bool accepting;                   /* the listeners' accept events are on (listener.c) */
	bool accept_suspended;            /* SUSPEND: listener_set_accepting(false) */
	struct event *accept_retry;       /* owned by listener.c: ends an accept() back-off */
	usec_t accept_backoff;            /* current back-off after EMFILE/ENFILE; 0: none */
	unsigned long accept_failures;    /* failed accept() calls not logged yet */
	usec_t accept_failure_logged;     /* monotonic, the last such log line; 0: none yet */
	bool accept_failure_told;         /* that line awaits its "accepting again" line */

	struct prepared_registry prepared; /* statement text -> server-side name */
	struct limits *limits;            /* per-subject rate limits and budgets; owned */
	struct limits_sync *limits_sync;  /* their link to PostgreSQL; NULL without ai_database */
	struct usage *usage;              /* usage records: journal and writer; NULL without ai_database */
	struct cache *cache;              /* the completion cache (ai/cache.h); owned */
	struct scram_secret mock_secret;
	struct derived_secret *derived_secrets; /* one per user, so a login costs no PBKDF2 */
	struct workers *workers;          /* threads for PBKDF2 off the loop (workers.h); owned */
	char instance[160];               /* "host:listen_port": this pgsluice among those sharing a database */  /* for users not in auth_file: fail after a full exchange */
	struct sluice_stats stats, stats_last;
	uint64_t notify_dropped;          /* notifications dropped past notify_queue_size (notify_relay.c) */
	/* admin console and metrics (admin.h, metrics.h) */
	struct client_list admin_clients; /* CL_ADMIN: sessions of the admin console */
	struct admin *admin;              /* commands waiting (PAUSE, WAIT_CLOSE); owned by admin.c */
	struct metrics *metrics;          /* /metrics, stats_period averages; owned by metrics.c */
	struct ai_stats *ai_stats;        /* the AI middleware's counters (ai/stats.h); owned */
	bool paused;                      /* PAUSE, KILL or SIGUSR1 without a database: every pool */
	bool suspended;                   /* SUSPEND: not accepting, pooled sockets not read (admin.c) */
	char **paused_dbs;                /* databases paused one by one, NULL-terminated; owned */
	char **disabled_dbs;              /* DISABLE db: logins refused, NULL-terminated; owned by admin.c */
	usec_t start_time;                /* wall clock at start, for /metrics */
	struct sluice_hooks hooks;
	const struct sluice_console *console; /* set by admin_start; NULL: no console */
	const struct client_events *client_events; /* what modules below client.c tell a client (client_start) */
	const struct connio_ops *server_io_ops; /* every server socket's callbacks: relay.c's (relay_start) */
	const struct server_events *server_events; /* what server.c tells its pool (pool_start) */
	/* A client left CL_LOGIN, so a max_login_clients slot may be free: listener.c's
	 * listener_update, set by listener_start (client.c is below the listener). */
	void (*login_slot_free)(struct sluice *sl);
	usec_t stats_last_time;
	bool shutting_down;               /* any shutdown_mode but SHUTDOWN_NONE */
	enum sluice_shutdown shutdown_mode;
	struct event *shutdown_timer;     /* owned (main.c): checks a waiting shutdown every 100 ms */
	struct cancel_req *cancels;       /* CancelRequests on their way to PostgreSQL (cancel.c) */
};

/* True when db is in list, a NULL-terminated list of database names (paused_dbs, disabled_dbs); NULL: no. */
static inline bool sluice_name_list_has(char *const *list, const char *db)
{
	for (; list && *list; list++)
		if (strcmp(*list, db) == 0)
			return true;
	return false;
}

/*
 * True when the console's DISABLE db is in force for database db (until
 * ENABLE db): new logins to it are refused (client.c, authquery.c: 55000).
 */
static inline bool sluice_db_disabled(const struct sluice *sl, const char *db)
{
	return sluice_name_list_has(sl->disabled_dbs, db);
}

/* glibc's sys/queue.h lacks the _SAFE iterators that BSD's has. */
#ifndef TAILQ_FOREACH_SAFE
#define TAILQ_FOREACH_SAFE(var, head, field, tvar) \
	for ((var) = TAILQ_FIRST((head)); (var) && ((tvar) = TAILQ_NEXT((var), field), 1); (var) = (tvar))
#endif

#endif
