/* SPDX-License-Identifier: PostgreSQL */
/*
 * config.h - pgsluice's configuration: the key table, the ini loader (inih),
 * [databases] / [users] entries, validation and reload. Owns struct
 * sluice_config; nothing else parses configuration text.
 */
#ifndef SLUICE_CONFIG_H
#define SLUICE_CONFIG_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

struct limit_rules;

/* Microseconds. Every time-valued key is stored in this unit. */
typedef int64_t usec_t;
#define USEC_PER_SEC  ((usec_t)1000000)
#define USEC_PER_MSEC ((usec_t)1000)

enum pool_mode { POOL_MODE_INHERIT = -1, POOL_MODE_SESSION = 0, POOL_MODE_TRANSACTION, POOL_MODE_STATEMENT };

/*
 * PgBouncer's auth_type values; "password" is accepted as an alias of plain.
 * LDAP and PAM load but refuse every login: pgsluice is built without them.
 */
enum auth_type { AUTH_TYPE_ANY, AUTH_TYPE_TRUST, AUTH_TYPE_PLAIN, AUTH_TYPE_MD5,
                 AUTH_TYPE_SCRAM_SHA_256, AUTH_TYPE_CERT, AUTH_TYPE_HBA, AUTH_TYPE_PEER,
                 AUTH_TYPE_LDAP, AUTH_TYPE_PAM };

/* One [databases] line: "name = host=... port=... dbname=... ...". */
struct db_config {
	char *name;              /* the name clients connect to; "*" is the fallback */
	char *host;              /* NULL: unix socket in unix_socket_dir; "/dir": unix socket there;
	                            "a,b,c": a host list (PgBouncer 1.25) */
	int port;                /* default 5432; of a port list, the first */
	char *port_list;         /* "5432,5433,...": one port per host; NULL: port for every host */
	char *load_balance_hosts; /* NULL: the global key; else "round-robin" or "disable" */
	char *dbname;            /* NULL: same as name (for "*": the client's database) */
	char *user;              /* NULL: the client's user; else every client logs in as this */
	char *password;          /* NULL: from auth_file */
	int pool_size;           /* -1: default_pool_size */
	int min_pool_size;       /* -1: min_pool_size */
	int reserve_pool;        /* -1: reserve_pool_size */
	int max_db_connections;  /* -1: max_db_connections */
	int max_db_client_connections; /* -1: max_db_client_connections */
	usec_t server_lifetime;  /* -1: server_lifetime */
	usec_t query_wait_timeout; /* negative: not set ([users], then query_wait_timeout) */
	char *auth_user;         /* NULL: auth_user; the two below likewise */
	char *auth_query;
	char *auth_dbname;
	enum pool_mode pool_mode; /* POOL_MODE_INHERIT: from [users] or pool_mode */
	char *connect_query;     /* NULL: none */
	char *client_encoding;   /* NULL: server's default; the rest likewise */
	char *datestyle;
	char *timezone;
	char *application_name;
	int line;                /* line in the config file, for messages */
};

/* One [users] line: "name = pool_mode=... max_user_connections=...". */
struct user_config {
	char *name;
	enum pool_mode pool_mode;   /* POOL_MODE_INHERIT: not set */
	int pool_size;              /* -1: not set */
	int reserve_pool;           /* -1: not set */
	int max_user_connections;   /* -1: max_user_connections */
	int max_user_client_connections; /* -1: max_user_client_connections */
	usec_t query_timeout;       /* -1: query_timeout; the rest likewise */
	usec_t idle_transaction_timeout;
	usec_t transaction_timeout;
	usec_t client_idle_timeout;
	usec_t query_wait_timeout;  /* negative: not set ([databases], then query_wait_timeout) */
	int line;
};

/*
 * One [peers] line: "peer_id = host=... port=... pool_size=...", another
 * pgsluice (or PgBouncer) process a CancelRequest carrying its peer id in
 * the key is forwarded to (cancel.h).
 */
struct peer_config {
	int id;                   /* 1..16383 */
	char *host;               /* "/dir": unix socket there; NULL: unix socket in unix_socket_dir */
	int port;                 /* default 6432 */
	int pool_size;            /* -1: default_pool_size; cancels in flight to it at once */
	int line;
};

/*
 * The whole configuration. Fields are named as their ini keys; times are
 * usec_t, sizes are bytes, booleans are bool, strings are owned (may be "",
 * never NULL after config_load).
 */
struct sluice_config {
	char *config_file;        /* path it was loaded from */
	char *conffile;           /* the file RELOAD reads (PgBouncer's conffile): config_file unless set */
	/* [pgsluice] / [pgbouncer] */
	char *logfile;
	char *pidfile;
	char *listen_addr;        /* comma list, "*" = all; "" = no TCP */
	int listen_port;
	char *unix_socket_dir;    /* "" = no unix socket */
	int unix_socket_mode;
	char *unix_socket_group;  /* group the unix socket is given (chown); "" = the process's */
	char *user;               /* -u: drop privileges to this OS user */
	char *auth_file;
	char *auth_hba_file;      /* pg_hba.conf-style rules for auth_type = hba */
	char *auth_ident_file;    /* pg_ident.conf-style user name maps for hba map= */
	char *auth_ldap_options;  /* accepted for PgBouncer's ini; LDAP logins are refused */
	char *auth_pam_confdir;   /* directory of the PAM service file; "" = /etc/pam.d */
	char *auth_user;          /* looks up roles missing from auth_file; "" = off */
	char *auth_query;         /* $1 = the role; returns (name, stored password) */
	char *auth_dbname;        /* [databases] entry to run it in; "" = the client's */
	enum auth_type auth_type;
	char *admin_users;
	char *stats_users;
	enum pool_mode pool_mode;
	char *load_balance_hosts;   /* "round-robin" (default) or "disable" */
	int max_client_conn;      /* logged-in clients (pools and admin console) */
	int max_login_clients;    /* clients still in startup or authentication */
	int default_pool_size;
	int min_pool_size;
	int reserve_pool_size;
	usec_t reserve_pool_timeout;
	int max_db_connections;
	int max_user_connections;
	int max_db_client_connections;   /* clients of one database; 0 = no limit */
	int max_user_client_connections; /* clients of one login user; 0 = no limit */
	char *server_reset_query;
	bool server_reset_query_always;
	char *server_check_query;
	usec_t server_check_delay;
	char *login_notify_message;   /* NOTICE sent at login; "" = none */
	bool server_fast_close;
	bool server_round_robin;  /* idle servers are reused oldest first (FIFO) instead of LIFO */
	bool disable_pqexec;      /* a simple-protocol Query ends the client (08P01 PQexec disallowed) */
	usec_t autodb_idle_timeout; /* pools of the "*" entry unused this long are dropped; 0 = never */
	usec_t suspend_timeout;   /* SUSPEND drops connections whose output is not flushed by then; 0 = waits */
	usec_t server_lifetime;
	usec_t server_idle_timeout;
	usec_t server_connect_timeout;
	usec_t server_login_retry;
	usec_t dns_max_ttl;            /* how long a server host name's addresses are kept (dnscache.c) */
	usec_t dns_nxdomain_ttl;       /* how long a name that does not exist is kept */
	usec_t client_login_timeout;
	usec_t query_timeout;
	usec_t query_wait_timeout;
	usec_t query_wait_notify;     /* NOTICE a waiting client after this; 0 = never */
	usec_t cancel_wait_timeout;
	usec_t client_idle_timeout;
	usec_t idle_transaction_timeout;
	usec_t transaction_timeout;  /* longest transaction, from its first request; 0 = off */
	char *ignore_startup_parameters;
	char *track_extra_parameters;
	int max_prepared_statements;
	int notify_queue_size;         /* notifications held per client, oldest dropped past it */
	int scram_iterations;     /* for secrets derived from plain auth_file passwords */
	int server_scram_max_iterations; /* the most PBKDF2 rounds a server may ask of pgsluice */
	bool application_name_add_host;
	int listen_backlog;
	int64_t max_packet_size;  /* bytes */
	bool so_reuseport;
	bool tcp_defer_accept;    /* TCP_DEFER_ACCEPT (45 s) on the TCP listening sockets (Linux) */
	int peer_id;              /* 0: not peered; else this process's id in [peers] (cancel.h) */
	bool tcp_keepalive;
	int tcp_keepidle;         /* seconds; 0 = OS default */
	int tcp_keepintvl;        /* seconds; 0 = OS default */
	int tcp_keepcnt;          /* probes; 0 = OS default */
	int tcp_user_timeout;     /* milliseconds; 0 = OS default */
	int tcp_socket_buffer;    /* bytes of SO_SNDBUF and SO_RCVBUF; 0 = OS default */
	char *resolv_conf;        /* resolver configuration for server host names; "" = the system's */
	bool syslog;
	char *syslog_ident;
	char *syslog_facility;
	bool log_connections;
	bool log_disconnections;
	bool log_pooler_errors;
	bool log_stats;
	usec_t stats_period;
	int verbose;
	/* pgsluice's own keys (docs/configuration.md) */
	char *ai_database;        /* [databases] entry holding the sluice schema; "" = none */

	char *tag_trusted_roles;  /* roles allowed to set ai_user; "" = every role */
	int limits_lease_instances;     /* lease per-minute allowances from sluice.rate_leases; 0: off */
	usec_t limits_refresh_interval; /* re-read sluice.limits */
	usec_t limits_sync_interval;    /* share counters through sluice.rate_counters */
	char *budget_alert_thresholds;  /* percents of a budget that NOTIFY sluice_budget ("80,100") */
	char *usage_journal_dir;  /* where usage records wait for PostgreSQL */
	usec_t usage_flush_interval;
	int64_t cache_max_memory;     /* bytes the completion cache may hold; 0: off */
	int64_t cache_max_entry_size; /* bytes of the largest answer it stores */
	usec_t cache_default_ttl;     /* how long an answer lives without ai_ttl */
	int usage_batch_size;     /* records per journal segment shipped */
	int usage_retention_months; /* 0: keep usage forever; else drop older monthly partitions */
	char *metrics_listen_addr; /* Prometheus /metrics address; "" = off */
	int metrics_listen_port;
	struct limit_rules *limit_rules; /* [limits] lines; NULL when none; owned until taken */

	/* TLS (tls.h): towards clients, then towards servers; PgBouncer's keys */
	char *client_tls_sslmode;
	char *client_tls_key_file;
	char *client_tls_cert_file;
	char *client_tls_ca_file;
	char *client_tls_protocols;
	char *client_tls_ciphers;
	char *client_tls13_ciphers; /* TLS 1.3 suites; "" = OpenSSL's */
	char *client_tls_ecdhcurve;  /* ECDHE group: "auto"/"none" (OpenSSL's), or a curve name */
	char *client_tls_dheparams;  /* DHE of TLS 1.2: "auto", "legacy" (as auto), "none" (no DHE) */
	char *server_tls13_ciphers;  /* TLS 1.3 suites towards servers; "" = OpenSSL's */
	char *server_tls_sslmode;
	char *server_tls_key_file;
	char *server_tls_cert_file;
	char *server_tls_ca_file;
	char *server_tls_protocols;
	char *server_tls_ciphers;

	struct db_config *databases;
	size_t n_databases;
	struct user_config *users;
	size_t n_users;
	struct peer_config *peers;
	size_t n_peers;
};

/* The longest value a key may have, with its NUL: a line of the file (bytes). */
#define CONFIG_MAX_VALUE_BYTES (64 * 1024)

/* server_check_query's value for "check with an empty Query" (PgBouncer 1.25's default). */
#define SERVER_CHECK_EMPTY_QUERY "<empty>"

enum config_type { CONFIG_BOOL, CONFIG_INT, CONFIG_STRING, CONFIG_TIME, CONFIG_SIZE,
                   CONFIG_POOL_MODE, CONFIG_AUTH_TYPE };

/*
 * Each type has one C storage type: BOOL bool, INT int, STRING char * (owned),
 * TIME usec_t, SIZE int64_t (bytes), POOL_MODE enum pool_mode, AUTH_TYPE
 * enum auth_type.
 */

/* config_key.flags */
#define CONFIG_OCTAL 0x1          /* INT written and shown in octal (unix_socket_mode) */

/* One row of the key table (PgBouncer's name, meaning and default). */
struct config_key {
	const char *name;
	enum config_type type;
	size_t offset;            /* offsetof(struct sluice_config, field) */
	const char *default_value; /* as it would be written in the ini file */
	bool reloadable;          /* SIGHUP / RELOAD may change it */
	int64_t min_value;        /* INT, TIME (usec), SIZE (bytes): inclusive range */
	int64_t max_value;
	unsigned flags;           /* CONFIG_OCTAL */
};

/*
 * Load the ini file at path. Section [pgsluice] and [pgbouncer] are the same;
 * [databases] and [users] fill the entry arrays. Unknown keys and PgBouncer
 * keys pgsluice does not implement are logged as warnings with file:line.
 * Returns a new config (free with config_free) or NULL with errbuf set to
 * "file:line: message" naming the key and what was expected.
 */
struct sluice_config *config_load(const char *path, char *errbuf, size_t errlen);

/* Receives one error of config_load_all as "file:line: message"; msg is borrowed for the call. */
typedef void (*config_error_fn)(const char *msg, void *arg);

/*
 * config_load that does not stop at the first error (pgsluice --check-config):
 * every error of the file goes to on_error(msg, arg) as it is found and
 * loading goes on with the next line (a bad key keeps its default, a bad
 * [databases] or [users] entry is left out). Warnings are logged as by
 * config_load. Returns that config, errors or not, so that the files it
 * names can be checked too; the caller counts what on_error received, and
 * errbuf holds the first error, if any. NULL (errbuf set, reported only when
 * it is out of memory) when the file cannot be opened or memory runs out.
 * on_error NULL: exactly config_load.
 */
struct sluice_config *config_load_all(const char *path, char *errbuf, size_t errlen,
                                      config_error_fn on_error, void *arg);

/* Free a config from config_load; NULL is ignored. */
void config_free(struct sluice_config *cfg);

/*
 * Prepare a freshly loaded config to replace old on reload: keys that are not
 * reloadable keep old's values in next (with a warning naming each key that
 * changed). Takes no ownership. Returns the number of keys kept.
 */
int config_carry_over(const struct sluice_config *old, struct sluice_config *next);

/* The key table and its length; rows are in SHOW CONFIG order. */
const struct config_key *config_keys(size_t *n);

/* Write key's current value as ini text into buf (bytes); returns buf. */
const char *config_format_value(const struct sluice_config *cfg, const struct config_key *key,
                                char *buf, size_t len);

/*
 * Set one [pgsluice] key from text (admin SET, tests). Returns false with
 * errbuf set to what was expected when the value is invalid, the key
 * unknown, or the key not reloadable (a running pgsluice cannot apply it);
 * cfg is unchanged then.
 */
bool config_set(struct sluice_config *cfg, const char *name, const char *value,
                char *errbuf, size_t errlen);

/* The table row for a [pgsluice] key (case-insensitive) or NULL. */
const struct config_key *config_find_key(const char *name);

/* The [databases] entry for name, else the "*" entry, else NULL. Borrowed. */
const struct db_config *config_find_db(const struct sluice_config *cfg, const char *name);

/* The [users] entry for name or NULL. Borrowed. */
const struct user_config *config_find_user(const struct sluice_config *cfg, const char *name);

/* The [peers] entry of peer id, or NULL. */
const struct peer_config *config_find_peer(const struct sluice_config *cfg, int id);

/*
 * True for load_balance_hosts = round-robin (each server login starts at
 * the next host of a host list), false for disable (each starts at the
 * first). Values are checked when the config loads.
 */
bool config_load_balance_round_robin(const char *value);

/* Text of a pool_mode ("session", "transaction", "statement"; "" for inherit). */
const char *pool_mode_name(enum pool_mode mode);

/* Text of an auth_type as written in the ini file ("md5", "scram-sha-256", ...). */
const char *auth_type_name(enum auth_type type);

#endif
