/* SPDX-License-Identifier: PostgreSQL */
/*
 * config.c - the key table, the ini loader (inih) and [databases] / [users]
 * entries; see config.h. Every [pgsluice] key is defined once, in
 * config_table below: defaults, parsing, formatting, reload and SHOW CONFIG
 * all read that table.
 */
#include "config.h"
#include "ai/limits.h"
#include "log.h"

#include <ctype.h>
#include <errno.h>
#include <ini.h>
#include <limits.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#define RELOAD    true
#define NO_RELOAD false
#define NO_MAX_INT  ((int64_t)INT_MAX)
#define NO_MAX      INT64_MAX

#define KEY(field, key_type, def, reload, lo, hi)                                   \
	{ .name = #field, .type = key_type, .offset = offsetof(struct sluice_config, field), \
	  .default_value = def, .reloadable = reload, .min_value = lo, .max_value = hi }

/*
 * PgBouncer's keys that pgsluice implements, with PgBouncer's defaults and
 * reloadability, and pgsluice's own keys (docs/configuration.md), all in PgBouncer's
 * SHOW CONFIG (alphabetical) order. Ranges: TIME in usec, SIZE in bytes.
 */
static const struct config_key config_table[] = {
	KEY(admin_users, CONFIG_STRING, "", RELOAD, 0, 0),
	/* pgsluice's own: the [databases] entry holding the sluice schema; "" = none */
	KEY(ai_database, CONFIG_STRING, "", NO_RELOAD, 0, 0),
	KEY(application_name_add_host, CONFIG_BOOL, "0", RELOAD, 0, 0),
	KEY(auth_dbname, CONFIG_STRING, "", RELOAD, 0, 0),
	KEY(auth_file, CONFIG_STRING, "", RELOAD, 0, 0),
	KEY(auth_hba_file, CONFIG_STRING, "", RELOAD, 0, 0),
	KEY(auth_ident_file, CONFIG_STRING, "", RELOAD, 0, 0),
	KEY(auth_ldap_options, CONFIG_STRING, "", RELOAD, 0, 0),
	KEY(auth_pam_confdir, CONFIG_STRING, "", RELOAD, 0, 0),
	KEY(auth_query, CONFIG_STRING, "SELECT rolname, CASE WHEN rolvaliduntil < pg_catalog.now() THEN NULL ELSE rolpassword END FROM pg_catalog.pg_authid WHERE rolname = $1 AND rolcanlogin", RELOAD, 0, 0),
	KEY(auth_type, CONFIG_AUTH_TYPE, "md5", RELOAD, 0, 0),
	KEY(auth_user, CONFIG_STRING, "", RELOAD, 0, 0),
	KEY(autodb_idle_timeout, CONFIG_TIME, "3600", RELOAD, 0, NO_MAX),
	/* pgsluice's own: NOTIFY sluice_budget at these percents of a budget; "" = never */
	KEY(budget_alert_thresholds, CONFIG_STRING, "80,100", RELOAD, 0, 0),
	KEY(cache_default_ttl, CONFIG_TIME, "300", RELOAD, USEC_PER_SEC, 31536000LL * USEC_PER_SEC),
	KEY(cache_max_entry_size, CONFIG_SIZE, "1048576", RELOAD, 0, INT32_MAX),
	KEY(cache_max_memory, CONFIG_SIZE, "67108864", RELOAD, 0, INT64_MAX / 2),
	KEY(cancel_wait_timeout, CONFIG_TIME, "10", RELOAD, 0, NO_MAX),
	KEY(client_idle_timeout, CONFIG_TIME, "0", RELOAD, 0, NO_MAX),
	KEY(client_login_timeout, CONFIG_TIME, "60", RELOAD, 0, NO_MAX),
	/* TLS 1.3 suites (SSL_CTX_set_ciphersuites); "" = OpenSSL's */
	KEY(client_tls13_ciphers, CONFIG_STRING, "", RELOAD, 0, 0),
	KEY(client_tls_ca_file, CONFIG_STRING, "", RELOAD, 0, 0),
	KEY(client_tls_cert_file, CONFIG_STRING, "", RELOAD, 0, 0),
	KEY(client_tls_ciphers, CONFIG_STRING, "default", RELOAD, 0, 0),
	KEY(client_tls_dheparams, CONFIG_STRING, "auto", RELOAD, 0, 0),
	KEY(client_tls_ecdhcurve, CONFIG_STRING, "auto", RELOAD, 0, 0),
	KEY(client_tls_key_file, CONFIG_STRING, "", RELOAD, 0, 0),
	KEY(client_tls_protocols, CONFIG_STRING, "secure", RELOAD, 0, 0),
	KEY(client_tls_sslmode, CONFIG_STRING, "disable", RELOAD, 0, 0),
	/* the file RELOAD reads; "" here, set to the loaded file's path (new_default_config) */
	KEY(conffile, CONFIG_STRING, "", RELOAD, 0, 0),
	KEY(default_pool_size, CONFIG_INT, "20", RELOAD, 0, NO_MAX_INT),
	KEY(disable_pqexec, CONFIG_BOOL, "0", NO_RELOAD, 0, 0),
	KEY(dns_max_ttl, CONFIG_TIME, "15", RELOAD, 0, NO_MAX),
	KEY(dns_nxdomain_ttl, CONFIG_TIME, "15", RELOAD, 0, NO_MAX),
	KEY(idle_transaction_timeout, CONFIG_TIME, "0", RELOAD, 0, NO_MAX),
	KEY(ignore_startup_parameters, CONFIG_STRING, "", RELOAD, 0, 0),
	/* instances expected to share the limits; 0: no leases (docs/limits.md) */
	KEY(limits_lease_instances, CONFIG_INT, "0", RELOAD, 0, 1000),
	KEY(limits_refresh_interval, CONFIG_TIME, "10", RELOAD, 100 * USEC_PER_MSEC, NO_MAX),
	KEY(limits_sync_interval, CONFIG_TIME, "1", RELOAD, 100 * USEC_PER_MSEC, NO_MAX),
	KEY(listen_addr, CONFIG_STRING, "", NO_RELOAD, 0, 0),
	KEY(load_balance_hosts, CONFIG_STRING, "round-robin", RELOAD, 0, 0),
	KEY(listen_backlog, CONFIG_INT, "128", NO_RELOAD, 1, NO_MAX_INT),
	KEY(listen_port, CONFIG_INT, "6432", NO_RELOAD, 1, 65535),
	KEY(log_connections, CONFIG_BOOL, "1", RELOAD, 0, 0),
	KEY(log_disconnections, CONFIG_BOOL, "1", RELOAD, 0, 0),
	KEY(log_pooler_errors, CONFIG_BOOL, "1", RELOAD, 0, 0),
	KEY(log_stats, CONFIG_BOOL, "1", RELOAD, 0, 0),
	/* reloadable because PgBouncer reopens the log file on reload */
	KEY(logfile, CONFIG_STRING, "", RELOAD, 0, 0),
	/* PgBouncer 1.25: a NOTICE to every client at login; "" = none */
	KEY(login_notify_message, CONFIG_STRING, "", RELOAD, 0, 0),
	KEY(max_client_conn, CONFIG_INT, "100", RELOAD, 1, NO_MAX_INT),
	KEY(max_db_client_connections, CONFIG_INT, "0", RELOAD, 0, NO_MAX_INT),
	KEY(max_db_connections, CONFIG_INT, "0", RELOAD, 0, NO_MAX_INT),
	/* pgsluice's own: sockets still logging in; at the bound the listeners pause */
	KEY(max_login_clients, CONFIG_INT, "1000", RELOAD, 1, NO_MAX_INT),
	/* below 1 kB not even a startup packet fits; above 2^31-1 the length word overflows */
	KEY(max_packet_size, CONFIG_SIZE, "2147483647", RELOAD, 1024, INT32_MAX),
	KEY(max_prepared_statements, CONFIG_INT, "200", RELOAD, 0, NO_MAX_INT),
	KEY(max_user_client_connections, CONFIG_INT, "0", RELOAD, 0, NO_MAX_INT),
	KEY(max_user_connections, CONFIG_INT, "0", RELOAD, 0, NO_MAX_INT),
	/* admin console: Prometheus /metrics; "" = off (docs/admin.md) */
	KEY(metrics_listen_addr, CONFIG_STRING, "", NO_RELOAD, 0, 0),
	KEY(metrics_listen_port, CONFIG_INT, "9127", NO_RELOAD, 1, 65535),
	KEY(min_pool_size, CONFIG_INT, "0", RELOAD, 0, NO_MAX_INT),
	KEY(peer_id, CONFIG_INT, "0", NO_RELOAD, 0, 16383),
	KEY(pidfile, CONFIG_STRING, "", NO_RELOAD, 0, 0),
	/* pgsluice's own: notifications held per client under transaction pooling (docs/pooling.md) */
	KEY(notify_queue_size, CONFIG_INT, "1000", RELOAD, 0, NO_MAX_INT),
	KEY(pool_mode, CONFIG_POOL_MODE, "session", RELOAD, 0, 0),
	KEY(query_timeout, CONFIG_TIME, "0", RELOAD, 0, NO_MAX),
	/* PgBouncer 1.25: a NOTICE to a client waiting this long; 0 = never */
	KEY(query_wait_notify, CONFIG_TIME, "5", RELOAD, 0, NO_MAX),
	KEY(query_wait_timeout, CONFIG_TIME, "120", RELOAD, 0, NO_MAX),
	KEY(reserve_pool_size, CONFIG_INT, "0", RELOAD, 0, NO_MAX_INT),
	KEY(reserve_pool_timeout, CONFIG_TIME, "5", RELOAD, 0, NO_MAX),
	/* PBKDF2 rounds for secrets of plain auth_file passwords; PostgreSQL's range */
	KEY(resolv_conf, CONFIG_STRING, "", NO_RELOAD, 0, 0),
	KEY(scram_iterations, CONFIG_INT, "4096", RELOAD, 1, NO_MAX_INT),
	KEY(server_check_delay, CONFIG_TIME, "30", RELOAD, 0, NO_MAX),
	/* PgBouncer 1.25: "<empty>" checks with an empty Query, "" turns the check off */
	KEY(server_check_query, CONFIG_STRING, SERVER_CHECK_EMPTY_QUERY, RELOAD, 0, 0),
	KEY(server_connect_timeout, CONFIG_TIME, "15", RELOAD, 0, NO_MAX),
	KEY(server_fast_close, CONFIG_BOOL, "0", RELOAD, 0, 0),
	KEY(server_idle_timeout, CONFIG_TIME, "600", RELOAD, 0, NO_MAX),
	KEY(server_lifetime, CONFIG_TIME, "3600", RELOAD, 0, NO_MAX),
	KEY(server_login_retry, CONFIG_TIME, "15", RELOAD, 0, NO_MAX),
	KEY(server_reset_query, CONFIG_STRING, "DISCARD ALL", RELOAD, 0, 0),
	KEY(server_reset_query_always, CONFIG_BOOL, "0", RELOAD, 0, 0),
	/* a server's i= above this fails the login: each round is pgsluice's CPU time */
	KEY(server_round_robin, CONFIG_BOOL, "0", RELOAD, 0, 0),
	KEY(server_scram_max_iterations, CONFIG_INT, "100000", RELOAD, 1, NO_MAX_INT),
	/* TLS 1.3 suites towards servers (SSL_CTX_set_ciphersuites); "" = OpenSSL's */
	KEY(server_tls13_ciphers, CONFIG_STRING, "", RELOAD, 0, 0),
	KEY(server_tls_ca_file, CONFIG_STRING, "", RELOAD, 0, 0),
	KEY(server_tls_cert_file, CONFIG_STRING, "", RELOAD, 0, 0),
	KEY(server_tls_ciphers, CONFIG_STRING, "default", RELOAD, 0, 0),
	KEY(server_tls_key_file, CONFIG_STRING, "", RELOAD, 0, 0),
	KEY(server_tls_protocols, CONFIG_STRING, "secure", RELOAD, 0, 0),
	KEY(server_tls_sslmode, CONFIG_STRING, "prefer", RELOAD, 0, 0),
	KEY(so_reuseport, CONFIG_BOOL, "0", NO_RELOAD, 0, 0),
	/* 0 would make the stats timer spin; PgBouncer's smallest useful period is 1 s */
	KEY(stats_period, CONFIG_TIME, "60", RELOAD, USEC_PER_SEC, NO_MAX),
	KEY(stats_users, CONFIG_STRING, "", RELOAD, 0, 0),
	KEY(suspend_timeout, CONFIG_TIME, "10", RELOAD, 0, NO_MAX),
	KEY(syslog, CONFIG_BOOL, "0", RELOAD, 0, 0),
	KEY(syslog_facility, CONFIG_STRING, "daemon", RELOAD, 0, 0),
	KEY(syslog_ident, CONFIG_STRING, "pgsluice", RELOAD, 0, 0),
	KEY(tcp_defer_accept, CONFIG_BOOL, "1", RELOAD, 0, 0),
	KEY(tcp_keepalive, CONFIG_BOOL, "1", RELOAD, 0, 0),
	/* 0 = the OS default; upper bounds are Linux's (MAX_TCP_KEEPCNT, MAX_TCP_KEEPIDLE, MAX_TCP_KEEPINTVL) */
	KEY(tcp_keepcnt, CONFIG_INT, "0", RELOAD, 0, 127),
	KEY(tcp_keepidle, CONFIG_INT, "0", RELOAD, 0, 32767),
	KEY(tcp_keepintvl, CONFIG_INT, "0", RELOAD, 0, 32767),
	/* milliseconds, as PgBouncer and TCP_USER_TIMEOUT; 0 = the OS default */
	KEY(tcp_socket_buffer, CONFIG_INT, "0", RELOAD, 0, NO_MAX_INT),
	KEY(tcp_user_timeout, CONFIG_INT, "0", RELOAD, 0, NO_MAX_INT),
	KEY(tag_trusted_roles, CONFIG_STRING, "", RELOAD, 0, 0),
	KEY(track_extra_parameters, CONFIG_STRING, "IntervalStyle", RELOAD, 0, 0),
	KEY(transaction_timeout, CONFIG_TIME, "0", RELOAD, 0, NO_MAX),
	KEY(unix_socket_group, CONFIG_STRING, "", NO_RELOAD, 0, 0),
	KEY(unix_socket_dir, CONFIG_STRING, "/tmp", NO_RELOAD, 0, 0),
	{ .name = "unix_socket_mode", .type = CONFIG_INT,
	  .offset = offsetof(struct sluice_config, unix_socket_mode), .default_value = "0777",
	  .reloadable = NO_RELOAD, .min_value = 0, .max_value = 07777, .flags = CONFIG_OCTAL },
	KEY(usage_batch_size, CONFIG_INT, "1000", RELOAD, 1, 1000000),
	KEY(usage_flush_interval, CONFIG_TIME, "0.2", RELOAD, 10 * USEC_PER_MSEC, NO_MAX),
	KEY(usage_journal_dir, CONFIG_STRING, "/var/lib/pgsluice/journal", NO_RELOAD, 0, 0),
	KEY(usage_retention_months, CONFIG_INT, "0", RELOAD, 0, 1200),
	KEY(user, CONFIG_STRING, "", NO_RELOAD, 0, 0),
	KEY(verbose, CONFIG_INT, "0", RELOAD, 0, NO_MAX_INT),
};
#define N_CONFIG_KEYS (sizeof(config_table) / sizeof(config_table[0]))

/*
 * PgBouncer 1.2x keys pgsluice does not implement. A pgbouncer.ini must load
 * unchanged, so these are warned about by name and ignored, never silently.
 * pkt_buf and sbuf_loopcnt tune PgBouncer's sbuf; pgsluice's own buffers
 * (iobuf.c) grow with the data up to max_packet_size.
 */
static const char *const unsupported_pgbouncer_keys[] = {
	"dns_zone_check_period", "job_name",
	"pkt_buf", "pool_idle_timeout",
	"sbuf_loopcnt",
	"service_name",
	NULL
};

/* pgsluice's own keys (docs/design.md, docs/configuration.md) whose modules do not exist yet. */
static const char *const planned_keys[] = {
	"workers", NULL
};

#define ENTRY_KEY(entry, name_, field, key_type, lo, hi) \
	{ .name = name_, .type = key_type, .offset = offsetof(struct entry, field), \
	  .reloadable = RELOAD, .min_value = lo, .max_value = hi }

/* Connect-string keys of a [databases] line; "reserve_pool_size" is PgBouncer 1.24's name. */
static const struct config_key db_keys[] = {
	ENTRY_KEY(db_config, "host", host, CONFIG_STRING, 0, 0),
	ENTRY_KEY(db_config, "port", port, CONFIG_INT, 1, 65535),
	ENTRY_KEY(db_config, "dbname", dbname, CONFIG_STRING, 0, 0),
	ENTRY_KEY(db_config, "user", user, CONFIG_STRING, 0, 0),
	ENTRY_KEY(db_config, "password", password, CONFIG_STRING, 0, 0),
	ENTRY_KEY(db_config, "pool_size", pool_size, CONFIG_INT, 0, NO_MAX_INT),
	ENTRY_KEY(db_config, "min_pool_size", min_pool_size, CONFIG_INT, 0, NO_MAX_INT),
	ENTRY_KEY(db_config, "reserve_pool", reserve_pool, CONFIG_INT, 0, NO_MAX_INT),
	ENTRY_KEY(db_config, "reserve_pool_size", reserve_pool, CONFIG_INT, 0, NO_MAX_INT),
	ENTRY_KEY(db_config, "max_db_connections", max_db_connections, CONFIG_INT, 0, NO_MAX_INT),
	ENTRY_KEY(db_config, "max_db_client_connections", max_db_client_connections, CONFIG_INT, 0, NO_MAX_INT),
	ENTRY_KEY(db_config, "server_lifetime", server_lifetime, CONFIG_TIME, 0, NO_MAX),
	/* PgBouncer: -1 means "not set" */
	ENTRY_KEY(db_config, "query_wait_timeout", query_wait_timeout, CONFIG_TIME, -USEC_PER_SEC, NO_MAX),
	ENTRY_KEY(db_config, "auth_user", auth_user, CONFIG_STRING, 0, 0),
	ENTRY_KEY(db_config, "auth_query", auth_query, CONFIG_STRING, 0, 0),
	ENTRY_KEY(db_config, "auth_dbname", auth_dbname, CONFIG_STRING, 0, 0),
	ENTRY_KEY(db_config, "pool_mode", pool_mode, CONFIG_POOL_MODE, 0, 0),
	ENTRY_KEY(db_config, "connect_query", connect_query, CONFIG_STRING, 0, 0),
	ENTRY_KEY(db_config, "client_encoding", client_encoding, CONFIG_STRING, 0, 0),
	ENTRY_KEY(db_config, "datestyle", datestyle, CONFIG_STRING, 0, 0),
	ENTRY_KEY(db_config, "timezone", timezone, CONFIG_STRING, 0, 0),
	ENTRY_KEY(db_config, "application_name", application_name, CONFIG_STRING, 0, 0),
	ENTRY_KEY(db_config, "load_balance_hosts", load_balance_hosts, CONFIG_STRING, 0, 0),
};

static const char *const unsupported_db_keys[] = {
	"target_session_attrs", NULL
};

static const struct config_key user_keys[] = {
	ENTRY_KEY(user_config, "pool_mode", pool_mode, CONFIG_POOL_MODE, 0, 0),
	ENTRY_KEY(user_config, "pool_size", pool_size, CONFIG_INT, 0, NO_MAX_INT),
	ENTRY_KEY(user_config, "reserve_pool_size", reserve_pool, CONFIG_INT, 0, NO_MAX_INT),
	ENTRY_KEY(user_config, "max_user_connections", max_user_connections, CONFIG_INT, 0, NO_MAX_INT),
	ENTRY_KEY(user_config, "max_user_client_connections", max_user_client_connections, CONFIG_INT, 0, NO_MAX_INT),
	ENTRY_KEY(user_config, "query_timeout", query_timeout, CONFIG_TIME, 0, NO_MAX),
	ENTRY_KEY(user_config, "idle_transaction_timeout", idle_transaction_timeout, CONFIG_TIME, 0, NO_MAX),
	ENTRY_KEY(user_config, "transaction_timeout", transaction_timeout, CONFIG_TIME, 0, NO_MAX),
	ENTRY_KEY(user_config, "client_idle_timeout", client_idle_timeout, CONFIG_TIME, 0, NO_MAX),
	ENTRY_KEY(user_config, "query_wait_timeout", query_wait_timeout, CONFIG_TIME, -USEC_PER_SEC, NO_MAX),
};

static const char *const unsupported_user_keys[] = {
	NULL
};

/* What a [databases] or [users] line may contain. */
struct entry_kind {
	const char *what;                  /* "database" or "user", for messages */
	const struct config_key *keys;
	size_t n_keys;
	const char *const *unsupported;    /* PgBouncer's keys that are warned about */
};

static const struct entry_kind database_kind = {
	"database", db_keys, sizeof(db_keys) / sizeof(db_keys[0]), unsupported_db_keys
};
static const struct entry_kind user_kind = {
	"user", user_keys, sizeof(user_keys) / sizeof(user_keys[0]), unsupported_user_keys
};

/* Connection-string keys of a [peers] line (PgBouncer's). */
static const struct config_key peer_keys[] = {
	ENTRY_KEY(peer_config, "host", host, CONFIG_STRING, 0, 0),
	ENTRY_KEY(peer_config, "port", port, CONFIG_INT, 1, 65535),
	ENTRY_KEY(peer_config, "pool_size", pool_size, CONFIG_INT, 0, NO_MAX_INT),
};

static const char *const unsupported_peer_keys[] = {
	NULL
};

static const struct entry_kind peer_kind = {
	"peer", peer_keys, sizeof(peer_keys) / sizeof(peer_keys[0]), unsupported_peer_keys
};

static const char *const pool_mode_names[] = { "session", "transaction", "statement" };

static const struct { const char *name; enum auth_type type; } auth_type_names[] = {
	{ "any", AUTH_TYPE_ANY }, { "trust", AUTH_TYPE_TRUST }, { "plain", AUTH_TYPE_PLAIN },
	{ "password", AUTH_TYPE_PLAIN }, { "md5", AUTH_TYPE_MD5 },
	{ "scram-sha-256", AUTH_TYPE_SCRAM_SHA_256 }, { "cert", AUTH_TYPE_CERT },
	{ "hba", AUTH_TYPE_HBA }, { "peer", AUTH_TYPE_PEER }, { "ldap", AUTH_TYPE_LDAP },
	{ "pam", AUTH_TYPE_PAM },
};

/* A parsed value before it is stored; TIME and SIZE both use n. */
union config_value {
	bool b;
	int64_t n;
	char *s;
	enum pool_mode mode;
	enum auth_type auth;
};

/* ---- values: parse, format, store ---- */

struct unit {
	const char *suffix;
	int64_t scale;
};

/* PostgreSQL's time units; a plain number is seconds as in PgBouncer. */
static const struct unit time_units[] = {
	{ "", USEC_PER_SEC }, { "us", 1 }, { "ms", USEC_PER_MSEC }, { "s", USEC_PER_SEC },
	{ "min", 60 * USEC_PER_SEC }, { "h", 3600 * USEC_PER_SEC }, { "d", 86400 * USEC_PER_SEC },
	{ NULL, 0 }
};

/* PostgreSQL's memory units, 1024-based; a plain number is bytes. */
static const struct unit size_units[] = {
	{ "", 1 }, { "B", 1 }, { "kB", 1024 }, { "MB", 1024 * 1024 },
	{ "GB", 1024 * 1024 * 1024 }, { NULL, 0 }
};

enum scaled_result { SCALED_OK, SCALED_SYNTAX, SCALED_OVERFLOW };

/*
 * Parse "[-]digits[.digits][ ]unit" exactly (no floating point, so values
 * round-trip): fraction digits past the sixth are dropped, which keeps one
 * microsecond of precision for every time unit.
 */
static enum scaled_result parse_scaled(const char *text, const struct unit *units, int64_t *out)
{
	const char *p = text;
	bool negative = (*p == '-');
	int64_t whole = 0, frac = 0, frac_scale = 1, value;
	int digits = 0;

	if (negative)
		p++;
	for (; isdigit((unsigned char)*p); p++, digits++)
		if (__builtin_mul_overflow(whole, 10, &whole) ||
		    __builtin_add_overflow(whole, *p - '0', &whole))
			return SCALED_OVERFLOW;
	if (*p == '.')
		for (p++; isdigit((unsigned char)*p); p++, digits++)
			if (frac_scale < 1000000) {
				frac = frac * 10 + (*p - '0');
				frac_scale *= 10;
			}
	if (digits == 0)
		return SCALED_SYNTAX;
	while (*p == ' ' || *p == '\t')
		p++;
	const struct unit *u = units;
	while (u->suffix && strcasecmp(u->suffix, p) != 0)
		u++;
	if (!u->suffix)
		return SCALED_SYNTAX;
	if (__builtin_mul_overflow(whole, u->scale, &value) ||
	    __builtin_add_overflow(value, (frac * u->scale + frac_scale / 2) / frac_scale, &value))
		return SCALED_OVERFLOW;
	*out = negative ? -value : value;
	return SCALED_OK;
}

/* Seconds with up to six decimals and no trailing zeros: "15", "0.5". */
static void format_usec(usec_t usec, char *buf, size_t len)
{
	unsigned long long abs_usec = usec < 0 ? -(unsigned long long)usec : (unsigned long long)usec;
	unsigned long long frac = abs_usec % USEC_PER_SEC;
	const char *sign = usec < 0 ? "-" : "";

	if (frac == 0) {
		snprintf(buf, len, "%s%llu", sign, abs_usec / USEC_PER_SEC);
		return;
	}
	char digits[8];
	snprintf(digits, sizeof(digits), "%06llu", frac);
	for (size_t i = strlen(digits); i > 0 && digits[i - 1] == '0'; i--)
		digits[i - 1] = '\0';
	snprintf(buf, len, "%s%llu.%s", sign, abs_usec / USEC_PER_SEC, digits);
}

/* A number in key's unit as it is written in messages ("1s", "1024 bytes", "0777"). */
static void format_bound(const struct config_key *key, int64_t n, char *buf, size_t len)
{
	if (key->type == CONFIG_TIME) {
		format_usec(n, buf, len);
		strncat(buf, "s", len - strlen(buf) - 1);
	} else if (key->type == CONFIG_SIZE) {
		snprintf(buf, len, "%lld bytes", (long long)n);
	} else if (key->flags & CONFIG_OCTAL) {
		snprintf(buf, len, "0%llo", (unsigned long long)n);
	} else {
		snprintf(buf, len, "%lld", (long long)n);
	}
}

static bool check_range(const struct config_key *key, int64_t n, char *why, size_t whylen)
{
	if (n >= key->min_value && n <= key->max_value)
		return true;
	char lo[48], hi[48];
	format_bound(key, key->min_value, lo, sizeof(lo));
	format_bound(key, key->max_value, hi, sizeof(hi));
	bool unbounded = key->max_value == (key->type == CONFIG_INT ? NO_MAX_INT : NO_MAX);
	if (!unbounded)
		snprintf(why, whylen, "must be between %s and %s", lo, hi);
	else if (n < key->min_value)
		snprintf(why, whylen, "must be at least %s", lo);
	else
		snprintf(why, whylen, "must be at most %s", hi);
	return false;
}

/* PgBouncer's booleans are integers 0/1; PostgreSQL's spellings are accepted too. */
static bool parse_bool(const char *text, bool *out)
{
	static const char *const yes[] = { "1", "on", "true", "yes" };
	static const char *const no[] = { "0", "off", "false", "no" };
	for (size_t i = 0; i < 4; i++) {
		if (strcasecmp(text, yes[i]) == 0 || strcasecmp(text, no[i]) == 0) {
			*out = strcasecmp(text, yes[i]) == 0;
			return true;
		}
	}
	return false;
}

static bool parse_pool_mode(const char *text, enum pool_mode *out)
{
	for (int i = 0; i < 3; i++) {
		if (strcasecmp(text, pool_mode_names[i]) == 0) {
			*out = (enum pool_mode)i;
			return true;
		}
	}
	return false;
}

static bool parse_auth_type(const char *text, enum auth_type *out)
{
	for (size_t i = 0; i < sizeof(auth_type_names) / sizeof(auth_type_names[0]); i++) {
		if (strcasecmp(text, auth_type_names[i].name) == 0) {
			*out = auth_type_names[i].type;
			return true;
		}
	}
	return false;
}

/* INT keys are decimal; CONFIG_OCTAL keys take C notation ("0777") as PgBouncer does. */
static bool parse_int(const struct config_key *key, const char *text, int64_t *out,
                      char *why, size_t whylen)
{
	char *end;
	errno = 0;
	long long n = strtoll(text, &end, (key->flags & CONFIG_OCTAL) ? 0 : 10);
	if (end == text || *end != '\0') {
		snprintf(why, whylen, (key->flags & CONFIG_OCTAL)
		         ? "expected an integer such as 0777 (leading 0 for octal)" : "expected an integer");
		return false;
	}
	*out = n;   /* ERANGE leaves LLONG_MIN/MAX, which check_range refuses */
	return check_range(key, n, why, whylen);
}

static bool parse_with_units(const struct config_key *key, const char *text, int64_t *out,
                             char *why, size_t whylen)
{
	bool is_time = key->type == CONFIG_TIME;
	switch (parse_scaled(text, is_time ? time_units : size_units, out)) {
	case SCALED_OK:
		return check_range(key, *out, why, whylen);
	case SCALED_OVERFLOW:
		snprintf(why, whylen, "value is too large");
		return false;
	case SCALED_SYNTAX:
		break;
	}
	snprintf(why, whylen, is_time
	         ? "expected a time such as 30, 0.5, 500ms or 2min (units us, ms, s, min, h, d; default s)"
	         : "expected a size such as 4096, 64kB or 1MB (units B, kB, MB, GB)");
	return false;
}

/*
 * PgBouncer's documentation and sample pgbouncer.ini write placeholders in
 * angle brackets where a value is "nothing": "<empty>" and "<none>". They mean
 * the empty value (not set), except that server_check_query = <empty> is
 * PgBouncer 1.25's empty-Query check and is kept. "<system default>" of the
 * *_tls_ca_file keys is kept too: tls.c reads it as OpenSSL's default CAs.
 */
static const char *placeholder_value(const struct config_key *key, const char *text)
{
	if (strcmp(text, "<none>") == 0)
		return "";
	if (strcmp(text, SERVER_CHECK_EMPTY_QUERY) == 0 && strcmp(key->name, "server_check_query") != 0)
		return "";
	return text;
}

/* Parse text for key into out (strings are malloc'ed); why says what was expected. */
/*
 * A main-section value that parses, and PgBouncer 1.25 still refuses: the
 * admin console as the global auth_dbname (a [databases] entry's is refused
 * at login instead, as PgBouncer does). False with why set.
 */
static bool main_value_allowed(const struct config_key *key, const char *text, char *why, size_t whylen)
{
	if (strcmp(key->name, "auth_dbname") == 0 &&
	    (strcmp(text, "pgbouncer") == 0 || strcmp(text, "pgsluice") == 0)) {
		snprintf(why, whylen, "cannot use the reserved \"%s\" database as an auth_dbname", text);
		return false;
	}
	return true;
}

static bool parse_value(const struct config_key *key, const char *text, union config_value *out,
                        char *why, size_t whylen)
{
	switch (key->type) {
	case CONFIG_BOOL:
		if (parse_bool(text, &out->b))
			return true;
		snprintf(why, whylen, "expected a boolean (0, 1, on, off, true, false, yes, no)");
		return false;
	case CONFIG_INT:
		return parse_int(key, text, &out->n, why, whylen);
	case CONFIG_TIME:
	case CONFIG_SIZE:
		return parse_with_units(key, text, &out->n, why, whylen);
	case CONFIG_STRING:
		if (strcmp(key->name, "budget_alert_thresholds") == 0) {
			double pcts[LIMITS_MAX_THRESHOLDS];
			size_t n;
			if (!limits_parse_thresholds(text, pcts, &n, why, whylen))
				return false;
		}
		if (strcmp(key->name, "load_balance_hosts") == 0 && strcasecmp(text, "round-robin") != 0 &&
		    strcasecmp(text, "disable") != 0) {
			snprintf(why, whylen, "expected round-robin or disable");
			return false;
		}
		out->s = strdup(placeholder_value(key, text));
		if (out->s)
			return true;
		snprintf(why, whylen, "out of memory");
		return false;
	case CONFIG_POOL_MODE:
		if (parse_pool_mode(text, &out->mode))
			return true;
		snprintf(why, whylen, "expected session, transaction or statement");
		return false;
	case CONFIG_AUTH_TYPE:
		if (parse_auth_type(text, &out->auth))
			return true;
		snprintf(why, whylen, "expected any, trust, plain, password, md5, scram-sha-256, cert, hba, peer, ldap or pam");
		return false;
	}
	snprintf(why, whylen, "unknown key type");
	return false;
}

/* Store v in the field key describes inside base; takes ownership of a string. */
static void store_value(void *base, const struct config_key *key, const union config_value *v)
{
	void *field = (char *)base + key->offset;
	switch (key->type) {
	case CONFIG_BOOL:      *(bool *)field = v->b; break;
	case CONFIG_INT:       *(int *)field = (int)v->n; break;
	case CONFIG_TIME:
	case CONFIG_SIZE:      *(int64_t *)field = v->n; break;
	case CONFIG_POOL_MODE: *(enum pool_mode *)field = v->mode; break;
	case CONFIG_AUTH_TYPE: *(enum auth_type *)field = v->auth; break;
	case CONFIG_STRING:
		free(*(char **)field);
		*(char **)field = v->s;
		break;
	}
}

/* Copy the field key describes out of base; a string is duplicated. */
static bool copy_value(const void *base, const struct config_key *key, union config_value *v)
{
	const void *field = (const char *)base + key->offset;
	switch (key->type) {
	case CONFIG_BOOL:      v->b = *(const bool *)field; return true;
	case CONFIG_INT:       v->n = *(const int *)field; return true;
	case CONFIG_TIME:
	case CONFIG_SIZE:      v->n = *(const int64_t *)field; return true;
	case CONFIG_POOL_MODE: v->mode = *(const enum pool_mode *)field; return true;
	case CONFIG_AUTH_TYPE: v->auth = *(const enum auth_type *)field; return true;
	case CONFIG_STRING: {
		const char *s = *(char *const *)field;
		v->s = strdup(s ? s : "");
		return v->s != NULL;
	}
	}
	return false;
}

static bool values_equal(const void *a, const void *b, const struct config_key *key)
{
	const void *fa = (const char *)a + key->offset, *fb = (const char *)b + key->offset;
	switch (key->type) {
	case CONFIG_BOOL:      return *(const bool *)fa == *(const bool *)fb;
	case CONFIG_INT:       return *(const int *)fa == *(const int *)fb;
	case CONFIG_TIME:
	case CONFIG_SIZE:      return *(const int64_t *)fa == *(const int64_t *)fb;
	case CONFIG_POOL_MODE: return *(const enum pool_mode *)fa == *(const enum pool_mode *)fb;
	case CONFIG_AUTH_TYPE: return *(const enum auth_type *)fa == *(const enum auth_type *)fb;
	case CONFIG_STRING: {
		const char *sa = *(char *const *)fa, *sb = *(char *const *)fb;
		return sa == sb || (sa && sb && strcmp(sa, sb) == 0);
	}
	}
	return false;
}

bool config_load_balance_round_robin(const char *value)
{
	return !value || strcasecmp(value, "disable") != 0;
}

const char *pool_mode_name(enum pool_mode mode)
{
	if (mode < POOL_MODE_SESSION || mode > POOL_MODE_STATEMENT)
		return "";
	return pool_mode_names[mode];
}

const char *auth_type_name(enum auth_type type)
{
	/* the first spelling of each type is the canonical one ("plain", not "password") */
	for (size_t i = 0; i < sizeof(auth_type_names) / sizeof(auth_type_names[0]); i++)
		if (auth_type_names[i].type == type)
			return auth_type_names[i].name;
	return "";
}

const char *config_format_value(const struct sluice_config *cfg, const struct config_key *key,
                                char *buf, size_t len)
{
	const void *field = (const char *)cfg + key->offset;
	if (len == 0)
		return buf;
	switch (key->type) {
	case CONFIG_BOOL:
		snprintf(buf, len, "%d", *(const bool *)field ? 1 : 0);
		break;
	case CONFIG_INT:
		if ((key->flags & CONFIG_OCTAL) && *(const int *)field > 0)
			snprintf(buf, len, "0%o", (unsigned)*(const int *)field);
		else
			snprintf(buf, len, "%d", *(const int *)field);
		break;
	case CONFIG_TIME:
		format_usec(*(const usec_t *)field, buf, len);
		break;
	case CONFIG_SIZE:
		snprintf(buf, len, "%lld", (long long)*(const int64_t *)field);
		break;
	case CONFIG_STRING: {
		const char *s = *(char *const *)field;
		snprintf(buf, len, "%s", s ? s : "");
		break;
	}
	case CONFIG_POOL_MODE:
		snprintf(buf, len, "%s", pool_mode_name(*(const enum pool_mode *)field));
		break;
	case CONFIG_AUTH_TYPE:
		snprintf(buf, len, "%s", auth_type_name(*(const enum auth_type *)field));
		break;
	}
	return buf;
}

const struct config_key *config_keys(size_t *n)
{
	if (n)
		*n = N_CONFIG_KEYS;
	return config_table;
}

static const struct config_key *find_key_in(const struct config_key *keys, size_t n,
                                            const char *name)
{
	for (size_t i = 0; i < n; i++)
		if (strcasecmp(keys[i].name, name) == 0)
			return &keys[i];
	return NULL;
}

const struct config_key *config_find_key(const char *name)
{
	return find_key_in(config_table, N_CONFIG_KEYS, name);
}

static bool in_list(const char *const *list, const char *name)
{
	for (; *list; list++)
		if (strcasecmp(*list, name) == 0)
			return true;
	return false;
}

/* Values can be 64 kB connect strings; messages quote at most the start. */
static const char *shorten(const char *text, char *buf, size_t len)
{
	if (strlen(text) < len)
		return text;
	snprintf(buf, len, "%.*s...", (int)(len - 4), text);
	return buf;
}

/* ---- entries: [databases] and [users] ---- */

static void free_db(struct db_config *db)
{
	free(db->name);
	free(db->host);
	free(db->port_list);
	free(db->load_balance_hosts);
	free(db->dbname);
	free(db->user);
	free(db->password);
	free(db->connect_query);
	free(db->client_encoding);
	free(db->datestyle);
	free(db->timezone);
	free(db->application_name);
	free(db->auth_user);
	free(db->auth_query);
	free(db->auth_dbname);
}

static void free_user(struct user_config *user)
{
	free(user->name);
}

static void free_peer(struct peer_config *peer)
{
	free(peer->host);
}

void config_free(struct sluice_config *cfg)
{
	if (!cfg)
		return;
	for (size_t i = 0; i < N_CONFIG_KEYS; i++)
		if (config_table[i].type == CONFIG_STRING)
			free(*(char **)((char *)cfg + config_table[i].offset));
	for (size_t i = 0; i < cfg->n_databases; i++)
		free_db(&cfg->databases[i]);
	for (size_t i = 0; i < cfg->n_users; i++)
		free_user(&cfg->users[i]);
	for (size_t i = 0; i < cfg->n_peers; i++)
		free_peer(&cfg->peers[i]);
	free(cfg->peers);
	free(cfg->databases);
	free(cfg->users);
	free(cfg->config_file);
	limits_rules_free(cfg->limit_rules);
	free(cfg);
}

const struct db_config *config_find_db(const struct sluice_config *cfg, const char *name)
{
	const struct db_config *fallback = NULL;
	for (size_t i = 0; i < cfg->n_databases; i++) {
		if (strcmp(cfg->databases[i].name, name) == 0)
			return &cfg->databases[i];
		if (strcmp(cfg->databases[i].name, "*") == 0)
			fallback = &cfg->databases[i];
	}
	return fallback;
}

const struct peer_config *config_find_peer(const struct sluice_config *cfg, int id)
{
	for (size_t i = 0; i < cfg->n_peers; i++)
		if (cfg->peers[i].id == id)
			return &cfg->peers[i];
	return NULL;
}

const struct user_config *config_find_user(const struct sluice_config *cfg, const char *name)
{
	for (size_t i = 0; i < cfg->n_users; i++)
		if (strcmp(cfg->users[i].name, name) == 0)
			return &cfg->users[i];
	return NULL;
}

enum token_result { TOKEN_PAIR, TOKEN_END, TOKEN_ERROR };

/*
 * Read one value of a connect string at *pos into out (malloc'ed): unquoted up
 * to white space, or single-quoted. Quoted values take both PgBouncer's ''
 * and libpq's \' for a quote; a backslash escapes the next character.
 */
static bool read_conninfo_value(const char **pos, char **out, char *why, size_t whylen)
{
	const char *p = *pos;
	bool quoted = (*p == '\'');
	char *dst = malloc(strlen(p) + 1), *d = dst;

	if (!dst) {
		snprintf(why, whylen, "out of memory");
		return false;
	}
	if (quoted)
		p++;
	for (;;) {
		if (*p == '\0' && quoted) {
			free(dst);
			snprintf(why, whylen, "unterminated quoted string");
			return false;
		}
		if (*p == '\0' || (!quoted && isspace((unsigned char)*p)))
			break;
		if (quoted && p[0] == '\'' && p[1] != '\'') {
			p++;
			break;
		}
		if (p[0] == '\\' && p[1] != '\0')
			p++;  /* the escaped character follows */
		else if (quoted && p[0] == '\'')
			p++;  /* '' inside quotes: the second one is the character */
		*d++ = *p++;
	}
	*d = '\0';
	*pos = p;
	*out = dst;
	return true;
}

/* Next "key=value" of a libpq-style connect string; key and value are malloc'ed. */
static enum token_result next_conninfo_pair(const char **pos, char **key, char **value,
                                            char *why, size_t whylen)
{
	const char *p = *pos;
	while (isspace((unsigned char)*p))
		p++;
	if (*p == '\0')
		return TOKEN_END;
	const char *start = p;
	while (*p && *p != '=' && !isspace((unsigned char)*p))
		p++;
	size_t key_len = (size_t)(p - start);
	while (isspace((unsigned char)*p))
		p++;
	if (*p != '=') {
		snprintf(why, whylen, "missing \"=\" after \"%.*s\"", (int)(key_len > 64 ? 64 : key_len), start);
		return TOKEN_ERROR;
	}
	if (key_len == 0) {
		snprintf(why, whylen, "missing key before \"=\"");
		return TOKEN_ERROR;
	}
	for (p++; isspace((unsigned char)*p); p++)
		;
	*key = strndup(start, key_len);
	if (!*key || !read_conninfo_value(&p, value, why, whylen)) {
		if (!*key)
			snprintf(why, whylen, "out of memory");
		free(*key);
		return TOKEN_ERROR;
	}
	*pos = p;
	return TOKEN_PAIR;
}

/*
 * A [databases] or [users] name: as written, or SQL-quoted ("my-db", with ""
 * for a quote) as PgBouncer allows. NULL on bad quoting or out of memory.
 */
static char *unquote_name(const char *name)
{
	if (name[0] == '\0')
		return NULL;
	if (name[0] != '"')
		return strdup(name);
	char *out = malloc(strlen(name) + 1), *d = out;
	const char *p = name + 1;
	if (!out)
		return NULL;
	for (;; p++) {
		if (*p == '\0')
			goto bad;
		if (*p == '"') {
			if (p[1] != '"')
				break;
			p++;
		}
		*d++ = *p;
	}
	if (p[1] != '\0' || d == out)
		goto bad;
	*d = '\0';
	return out;
bad:
	free(out);
	return NULL;
}

/* ---- the loader ---- */

#define MAX_INCLUDE_DEPTH 10
#define MAX_LINE_BYTES (64 * 1024)  /* connect strings with long passwords and queries */

/* One file being read: the main file or a %include. */
struct ini_source {
	FILE *file;
	char *path;
	int line;            /* line now being read, 1-based */
	size_t line_len;     /* bytes of it read so far */
	bool at_line_start;  /* the next read starts a new line */
};

/* Everything the inih callbacks share; lives on config_load's stack. */
struct load_state {
	struct sluice_config *cfg;
	struct ini_source sources[MAX_INCLUDE_DEPTH];
	int depth;           /* sources[depth - 1] is being read */
	char error[1024];    /* the first error as "path:line: message"; "" while none */
	int n_errors;
	/* config_load_all: every error goes here and loading goes on; NULL: stop at the first */
	config_error_fn on_error;
	void *on_error_arg;
	/* inih splits "name = value" at the first '=' or ':'; true when the line being
	 * handled was split at ':' (a [limits] subject "group:eng" must be put back together) */
	bool split_at_colon;
};

enum section { SECTION_NONE, SECTION_MAIN, SECTION_DATABASES, SECTION_USERS, SECTION_LIMITS,
               SECTION_PEERS, SECTION_UNKNOWN };

static enum section classify_section(const char *name)
{
	static const struct { const char *name; enum section section; } known[] = {
		{ "pgsluice", SECTION_MAIN }, { "pgbouncer", SECTION_MAIN },
		{ "databases", SECTION_DATABASES }, { "users", SECTION_USERS },
		{ "limits", SECTION_LIMITS }, { "peers", SECTION_PEERS },
	};
	if (name[0] == '\0')
		return SECTION_NONE;
	for (size_t i = 0; i < sizeof(known) / sizeof(known[0]); i++)
		if (strcasecmp(name, known[i].name) == 0)
			return known[i].section;
	return SECTION_UNKNOWN;
}

static const struct ini_source *current_source(const struct load_state *st)
{
	return st->depth > 0 ? &st->sources[st->depth - 1] : NULL;
}

/* Record an error, prefixed with the current file:line: the first is kept, each is reported when collecting. */
__attribute__((format(printf, 2, 3)))
static void set_load_error(struct load_state *st, const char *fmt, ...)
{
	if (st->error[0] && !st->on_error)
		return;
	const struct ini_source *src = current_source(st);
	char msg[768], line[1024];
	va_list ap;
	va_start(ap, fmt);
	vsnprintf(msg, sizeof(msg), fmt, ap);
	va_end(ap);
	if (src)
		snprintf(line, sizeof(line), "%s:%d: %s", src->path, src->line, msg);
	else
		snprintf(line, sizeof(line), "%s", msg);
	if (!st->error[0])
		snprintf(st->error, sizeof(st->error), "%s", line);
	st->n_errors++;
	if (st->on_error)
		st->on_error(line, st->on_error_arg);
}

/* Whether parsing goes on after a failed line: only when every error is collected. */
static bool keep_going(const struct load_state *st)
{
	return !st->error[0] || st->on_error;
}

__attribute__((format(printf, 2, 3)))
static void warn_at(const struct load_state *st, const char *fmt, ...)
{
	const struct ini_source *src = current_source(st);
	char msg[768];
	va_list ap;
	va_start(ap, fmt);
	vsnprintf(msg, sizeof(msg), fmt, ap);
	va_end(ap);
	log_warning("%s:%d: %s", src ? src->path : "?", src ? src->line : 0, msg);
}

/* Start reading path (the main file or an %include); false with errno set. */
static bool push_source(struct load_state *st, const char *path)
{
	FILE *file = fopen(path, "r");
	if (!file)
		return false;
	char *copy = strdup(path);
	if (!copy) {
		fclose(file);
		errno = ENOMEM;
		return false;
	}
	st->sources[st->depth++] = (struct ini_source){ .file = file, .path = copy,
	                                                .at_line_start = true };
	return true;
}

static void pop_source(struct load_state *st)
{
	struct ini_source *src = &st->sources[--st->depth];
	fclose(src->file);
	free(src->path);
}

/* "%include file" as PgBouncer: a relative name is taken from the working directory. */
static void include_file(struct load_state *st, const char *rest)
{
	char name[4096];
	while (isspace((unsigned char)*rest))
		rest++;
	snprintf(name, sizeof(name), "%s", rest);
	for (size_t n = strlen(name); n > 0 && isspace((unsigned char)name[n - 1]); n--)
		name[n - 1] = '\0';
	if (name[0] == '\0')
		set_load_error(st, "%%include needs a file name");
	else if (st->depth == MAX_INCLUDE_DEPTH)
		set_load_error(st, "%%include nested more than %d files deep", MAX_INCLUDE_DEPTH);
	else if (!push_source(st, name))
		set_load_error(st, "could not open included file \"%s\": %s", name, strerror(errno));
}

/*
 * A line inih rejects (with configure_inih()'s switches): not blank, not a
 * comment, and either a "[" without "]" or no "=" / ":" between name and value.
 */
static bool is_syntax_error(const char *line)
{
	if (strncmp(line, "\xEF\xBB\xBF", 3) == 0)   /* a UTF-8 BOM, which inih skips */
		line += 3;
	if (line[0] == '\0' || line[0] == '\n' || line[0] == '\r' || line[0] == ';' || line[0] == '#')
		return false;
	if (line[0] == '[')
		return !strchr(line, ']');
	return !strpbrk(line, "=:");
}

/*
 * Look at a whole line before inih does: %include is ours to expand, and a
 * section header is warned about here so that an empty unknown section is
 * reported too. Returns true when the line is consumed.
 */
static bool inspect_line(struct load_state *st, const char *line)
{
	while (isspace((unsigned char)*line))
		line++;
	if (strncmp(line, "%include", 8) == 0 && (line[8] == '\0' || isspace((unsigned char)line[8]))) {
		include_file(st, line + 8);
		return true;
	}
	if (st->on_error && is_syntax_error(line)) {
		/* inih would skip it and name only the first such line, with its own count */
		set_load_error(st, "syntax error: expected \"name = value\", \"[section]\" or a comment");
		return true;
	}
	const char *end = line[0] == '[' ? strchr(line, ']') : NULL;
	if (!end)
		return false;
	char name[128];
	snprintf(name, sizeof(name), "%.*s", (int)(end - line - 1), line + 1);
	switch (classify_section(name)) {
	case SECTION_UNKNOWN:
	case SECTION_NONE:
		warn_at(st, "unknown section [%s] ignored", name);
		break;
	default:
		break;  /* [limits] is read by the limits module */
	}
	return false;
}

/* Drop what is left of a too long line, so that collecting goes on at the next one. */
static void skip_rest_of_line(struct ini_source *src)
{
	int ch;
	while ((ch = fgetc(src->file)) != EOF && ch != '\n')
		;
	src->at_line_start = true;
}

/*
 * inih's reader: fgets over the include stack, counting lines so that the
 * handler, which inih runs right after the line is read, can name file:line.
 * inih may read one long line in several calls; only the first counts.
 */
/* True when inih will split line at a ':' (its first '=' or ':'), on a "name = value" line. */
static bool first_separator_is_colon(const char *line)
{
	while (isspace((unsigned char)*line))
		line++;
	if (*line == ';' || *line == '#' || *line == '[')
		return false;
	const char *sep = strpbrk(line, "=:");
	return sep && *sep == ':';
}

static char *read_config_line(char *buf, int size, void *stream)
{
	struct load_state *st = stream;
	while (st->depth > 0 && keep_going(st)) {
		struct ini_source *src = &st->sources[st->depth - 1];
		if (!fgets(buf, size, src->file)) {
			if (ferror(src->file)) {
				set_load_error(st, "could not read file: %s", strerror(errno));
				return NULL;
			}
			/* The main file stays on the stack until config_load ends: inih
			 * hands over a last line that had no newline after this EOF, and
			 * its handler names the file and line (found by fuzz_config). */
			if (st->depth == 1)
				return NULL;
			pop_source(st);
			continue;
		}
		size_t len = strlen(buf);
		bool starts_line = src->at_line_start;
		if (starts_line) {
			src->line++;
			src->line_len = 0;
		}
		src->line_len += len;
		src->at_line_start = (len > 0 && buf[len - 1] == '\n') || feof(src->file);
		if (!src->at_line_start && src->line_len >= MAX_LINE_BYTES - 1) {
			set_load_error(st, "line is longer than %d bytes", MAX_LINE_BYTES - 2);
			if (!st->on_error)
				return NULL;
			skip_rest_of_line(src);
			continue;
		}
		if (starts_line && src->at_line_start && inspect_line(st, buf))
			continue;
		if (starts_line)
			st->split_at_colon = first_separator_is_colon(buf);
		return buf;
	}
	return NULL;
}

static bool load_main_key(struct load_state *st, const char *name, const char *value)
{
	const struct config_key *key = config_find_key(name);
	char why[256], shown[128];
	union config_value v;

	if (!key) {
		if (in_list(unsupported_pgbouncer_keys, name))
			warn_at(st, "PgBouncer key \"%s\" is not supported by pgsluice and is ignored", name);
		else if (in_list(planned_keys, name))
			warn_at(st, "key \"%s\" is not implemented yet by pgsluice and is ignored", name);
		else
			warn_at(st, "unknown configuration key \"%s\" ignored", name);
		return true;
	}
	if (!main_value_allowed(key, value, why, sizeof(why)) || !parse_value(key, value, &v, why, sizeof(why))) {
		set_load_error(st, "invalid value \"%s\" for key \"%s\": %s",
		               shorten(value, shown, sizeof(shown)), key->name, why);
		return false;
	}
	store_value(st->cfg, key, &v);
	return true;
}

/* Apply one key=value of a [databases] / [users] line to entry. */
/*
 * A [databases] port: one number, or PgBouncer 1.25's list "5432,5433" (one
 * port per host). Each item is checked as the single port always was; port
 * keeps the first, port_list the whole list.
 */
static bool set_port_list(struct load_state *st, const struct config_key *key, const char *entry_name,
                          struct db_config *db, const char *value)
{
	char why[256], shown[128], item[32];
	const char *text = value;
	bool first = true;
	for (;;) {
		size_t n = strcspn(text, ",");
		union config_value v;
		bool fits = n < sizeof(item);
		if (fits) {
			memcpy(item, text, n);
			item[n] = '\0';
		} else {
			snprintf(why, sizeof(why), "expected an integer");
		}
		/* a single port is parsed whole, as before port lists */
		const char *one = text == value && text[n] == '\0' ? value : item;
		if ((!fits && one != value) || !parse_value(key, one, &v, why, sizeof(why))) {
			set_load_error(st, "invalid value \"%s\" for key \"%s\" of database \"%s\": %s",
			               shorten(value, shown, sizeof(shown)), key->name, entry_name, why);
			return false;
		}
		if (first)
			db->port = (int)v.n;
		first = false;
		if (text[n] == '\0')
			break;
		text += n + 1;
	}
	free(db->port_list);
	db->port_list = NULL;
	if (strchr(value, ',') && (db->port_list = strdup(value)) == NULL) {
		set_load_error(st, "out of memory");
		return false;
	}
	return true;
}

static bool apply_entry_setting(struct load_state *st, const struct entry_kind *kind,
                                const char *entry_name, void *entry,
                                const char *name, const char *value)
{
	const struct config_key *key = find_key_in(kind->keys, kind->n_keys, name);
	char why[256], shown[128];
	union config_value v;

	if (!key) {
		if (in_list(kind->unsupported, name)) {
			warn_at(st, "PgBouncer key \"%s\" of %s \"%s\" is not supported by pgsluice and is ignored",
			        name, kind->what, entry_name);
			return true;
		}
		set_load_error(st, "unknown key \"%s\" in the settings of %s \"%s\"",
		               name, kind->what, entry_name);
		return false;
	}
	if (kind == &database_kind && strcmp(name, "port") == 0)
		return set_port_list(st, key, entry_name, entry, value);
	if (!parse_value(key, value, &v, why, sizeof(why))) {
		set_load_error(st, "invalid value \"%s\" for key \"%s\" of %s \"%s\": %s",
		               shorten(value, shown, sizeof(shown)), key->name, kind->what,
		               entry_name, why);
		return false;
	}
	if (key->type == CONFIG_STRING && v.s[0] == '\0') {
		free(v.s);  /* in an entry, empty means "not set", which is NULL */
		v.s = NULL;
	}
	store_value(entry, key, &v);
	return true;
}

static bool parse_entry_settings(struct load_state *st, const struct entry_kind *kind,
                                 const char *entry_name, void *entry, const char *text)
{
	char *key, *value, why[256];
	for (;;) {
		switch (next_conninfo_pair(&text, &key, &value, why, sizeof(why))) {
		case TOKEN_END:
			return true;
		case TOKEN_ERROR:
			set_load_error(st, "invalid settings for %s \"%s\": %s", kind->what, entry_name, why);
			return false;
		case TOKEN_PAIR:
			break;
		}
		bool ok = apply_entry_setting(st, kind, entry_name, entry, key, value);
		free(key);
		free(value);
		if (!ok)
			return false;
	}
}

static void report_bad_name(struct load_state *st, const struct entry_kind *kind, const char *raw)
{
	if (raw[0] == '\0')
		set_load_error(st, "missing %s name before \"=\"", kind->what);
	else if (raw[0] == '"')
		set_load_error(st, "invalid %s name %s: a quoted name needs a closing \" and no text after it",
		               kind->what, raw);
	else
		set_load_error(st, "out of memory");
}

/* Grow *array (of elem_size items, *count used) by one; NULL when out of memory. */
static void *append_slot(void **array, size_t *count, size_t elem_size)
{
	/* capacity is the next power of two: grow when count reaches one */
	if ((*count & (*count - 1)) == 0) {
		size_t cap = *count ? *count * 2 : 1;
		void *grown = realloc(*array, cap * elem_size);
		if (!grown)
			return NULL;
		*array = grown;
	}
	return (char *)*array + (*count)++ * elem_size;
}

/* host=a,b,c: no empty names; a port list has one port per host. */
static bool check_host_list(struct load_state *st, const struct db_config *db)
{
	int hosts = 1, ports = 1;
	if (db->host) {
		size_t len = strlen(db->host);
		if (db->host[0] == ',' || db->host[len - 1] == ',' || strstr(db->host, ",,")) {
			set_load_error(st, "invalid host list \"%s\" of database \"%s\": a host name is empty",
			               db->host, db->name);
			return false;
		}
		for (const char *h = db->host; (h = strchr(h, ',')) != NULL; h++)
			hosts++;
	}
	for (const char *q = db->port_list; q && (q = strchr(q, ',')) != NULL; q++)
		ports++;
	if (ports > 1 && ports != hosts) {
		set_load_error(st, "database \"%s\" has an invalid number of ports: %d ports for %d hosts; give one port, or one for each host",
		               db->name, ports, hosts);
		return false;
	}
	return true;
}

static bool load_database(struct load_state *st, const char *raw_name, const char *value)
{
	struct sluice_config *cfg = st->cfg;
	struct db_config db = {
		.port = 5432, .pool_size = -1, .min_pool_size = -1, .reserve_pool = -1,
		.max_db_connections = -1, .max_db_client_connections = -1, .server_lifetime = -1,
		.query_wait_timeout = -1,
		.pool_mode = POOL_MODE_INHERIT,
		.line = current_source(st)->line,
	};

	db.name = unquote_name(raw_name);
	if (!db.name) {
		report_bad_name(st, &database_kind, raw_name);
		return false;
	}
	if (strcmp(db.name, "pgsluice") == 0 || strcmp(db.name, "pgbouncer") == 0) {
		set_load_error(st, "database name \"%s\" is reserved for the admin console", db.name);
		free_db(&db);
		return false;
	}
	if (!parse_entry_settings(st, &database_kind, db.name, &db, value)) {
		free_db(&db);
		return false;
	}
	if (!check_host_list(st, &db)) {
		free_db(&db);
		return false;
	}
	for (size_t i = 0; i < cfg->n_databases; i++) {
		if (strcmp(cfg->databases[i].name, db.name) == 0) {
			warn_at(st, "database \"%s\" is defined again; this definition replaces the one on line %d",
			        db.name, cfg->databases[i].line);
			free_db(&cfg->databases[i]);
			cfg->databases[i] = db;
			return true;
		}
	}
	struct db_config *slot = append_slot((void **)&cfg->databases, &cfg->n_databases, sizeof(db));
	if (!slot) {
		set_load_error(st, "out of memory");
		free_db(&db);
		return false;
	}
	*slot = db;
	return true;
}

static bool load_user(struct load_state *st, const char *raw_name, const char *value)
{
	struct sluice_config *cfg = st->cfg;
	struct user_config user = {
		.pool_mode = POOL_MODE_INHERIT, .pool_size = -1, .reserve_pool = -1, .max_user_connections = -1,
		.max_user_client_connections = -1, .query_timeout = -1, .idle_transaction_timeout = -1,
		.transaction_timeout = -1, .client_idle_timeout = -1, .query_wait_timeout = -1,
		.line = current_source(st)->line,
	};

	user.name = unquote_name(raw_name);
	if (!user.name) {
		report_bad_name(st, &user_kind, raw_name);
		return false;
	}
	if (!parse_entry_settings(st, &user_kind, user.name, &user, value)) {
		free_user(&user);
		return false;
	}
	for (size_t i = 0; i < cfg->n_users; i++) {
		if (strcmp(cfg->users[i].name, user.name) == 0) {
			warn_at(st, "user \"%s\" is defined again; this definition replaces the one on line %d",
			        user.name, cfg->users[i].line);
			free_user(&cfg->users[i]);
			cfg->users[i] = user;
			return true;
		}
	}
	struct user_config *slot = append_slot((void **)&cfg->users, &cfg->n_users, sizeof(user));
	if (!slot) {
		set_load_error(st, "out of memory");
		free_user(&user);
		return false;
	}
	*slot = user;
	return true;
}

/* One [peers] line: "peer_id = host=... port=... pool_size=..." (PgBouncer's). */
static bool load_peer(struct load_state *st, const char *raw_id, const char *value)
{
	struct sluice_config *cfg = st->cfg;
	struct peer_config peer = { .port = 6432, .pool_size = -1, .line = current_source(st)->line };
	char *end;
	long id = strtol(raw_id, &end, 10);
	if (*raw_id == '\0' || *end != '\0' || id < 1 || id > 16383) {
		set_load_error(st, "invalid peer id \"%s\" in [peers]: expected an integer from 1 to 16383", raw_id);
		return false;
	}
	peer.id = (int)id;
	if (!parse_entry_settings(st, &peer_kind, raw_id, &peer, value)) {
		free_peer(&peer);
		return false;
	}
	for (size_t i = 0; i < cfg->n_peers; i++) {
		if (cfg->peers[i].id == peer.id) {
			warn_at(st, "peer %d is defined again; this definition replaces the one on line %d", peer.id,
			        cfg->peers[i].line);
			free_peer(&cfg->peers[i]);
			cfg->peers[i] = peer;
			return true;
		}
	}
	struct peer_config *slot = append_slot((void **)&cfg->peers, &cfg->n_peers, sizeof(peer));
	if (!slot) {
		set_load_error(st, "out of memory");
		free_peer(&peer);
		return false;
	}
	*slot = peer;
	return true;
}

/* One [limits] line: "subject[/model] = dimension=value ..." (ai/limits.h). A subject with
 * a ':' ("group:eng", docs/limits.md) comes split at it by inih: name "group", value
 * "eng = dimension=value ..."; it is put back together here. */
static int load_limit(struct load_state *st, const char *name, const char *value)
{
	char err[256], subject[512];
	const char *eq = st->split_at_colon ? strchr(value, '=') : NULL;
	if (eq) {
		size_t len = (size_t)(eq - value);
		while (len > 0 && isspace((unsigned char)value[len - 1]))
			len--;
		if (snprintf(subject, sizeof(subject), "%s:%.*s", name, (int)len, value) >= (int)sizeof(subject)) {
			set_load_error(st, "subject \"%.64s...\" is longer than %zu bytes", subject, sizeof(subject) - 1);
			return 0;
		}
		name = subject;
		value = eq + 1;
		while (isspace((unsigned char)*value))
			value++;
	}
	if (!st->cfg->limit_rules && !(st->cfg->limit_rules = limits_rules_new())) {
		set_load_error(st, "out of memory");
		return 0;
	}
	if (!limits_parse_line(st->cfg->limit_rules, name, value, err, sizeof(err))) {
		set_load_error(st, "%s", err);
		return 0;
	}
	return 1;
}

/* inih's handler: one "name = value" of section. Returns 0 to stop parsing. */
static int handle_ini_entry(void *user, const char *section, const char *name, const char *value)
{
	struct load_state *st = user;
	if (!keep_going(st))
		return 0;
	bool ok;
	switch (classify_section(section)) {
	case SECTION_MAIN:
		ok = load_main_key(st, name, value);
		break;
	case SECTION_DATABASES:
		ok = load_database(st, name, value);
		break;
	case SECTION_USERS:
		ok = load_user(st, name, value);
		break;
	case SECTION_LIMITS:
		ok = load_limit(st, name, value);
		break;
	case SECTION_PEERS:
		ok = load_peer(st, name, value);
		break;
	case SECTION_NONE:
		warn_at(st, "key \"%s\" is not in any section and is ignored", name);
		return 1;
	default:
		return 1;  /* warned at the section header */
	}
	return ok || keep_going(st);
}

/* A config holding every key's default, parsed from the table's text. */
static struct sluice_config *new_default_config(const char *path, char *why, size_t whylen)
{
	struct sluice_config *cfg = calloc(1, sizeof(*cfg));
	if (!cfg || !(cfg->config_file = strdup(path))) {
		free(cfg);
		snprintf(why, whylen, "out of memory");
		return NULL;
	}
	for (size_t i = 0; i < N_CONFIG_KEYS; i++) {
		union config_value v;
		char reason[256];
		if (!parse_value(&config_table[i], config_table[i].default_value, &v, reason, sizeof(reason))) {
			snprintf(why, whylen, "default \"%s\" of key \"%s\" is invalid: %s",
			         config_table[i].default_value, config_table[i].name, reason);
			config_free(cfg);
			return NULL;
		}
		store_value(cfg, &config_table[i], &v);
	}
	char *here = strdup(path);     /* conffile: the file itself, unless the file says otherwise */
	if (!here) {
		config_free(cfg);
		snprintf(why, whylen, "out of memory");
		return NULL;
	}
	free(cfg->conffile);
	cfg->conffile = here;
	return cfg;
}

/* inih's switches are process globals; set them on every load. */
static void configure_inih(bool collect)
{
	ini_use_stack = false;
	ini_allow_realloc = true;
	ini_max_line = MAX_LINE_BYTES;
	ini_allow_inline_comments = false;  /* ';' and '#' start comments only at line start */
	ini_allow_multiline = false;        /* an indented line is a key of its own */
	ini_allow_no_value = false;
	ini_stop_on_first_error = !collect; /* so the reader still points at the bad line */
}

struct sluice_config *config_load(const char *path, char *errbuf, size_t errlen)
{
	return config_load_all(path, errbuf, errlen, NULL, NULL);
}

struct sluice_config *config_load_all(const char *path, char *errbuf, size_t errlen,
                                      config_error_fn on_error, void *arg)
{
	struct load_state st = { .on_error = on_error, .on_error_arg = arg };
	char why[512];

	st.cfg = new_default_config(path, why, sizeof(why));
	if (!st.cfg) {
		snprintf(errbuf, errlen, "%s: %s", path, why);
		return NULL;
	}
	if (!push_source(&st, path)) {
		snprintf(errbuf, errlen, "could not open configuration file \"%s\": %s", path, strerror(errno));
		config_free(st.cfg);
		return NULL;
	}
	configure_inih(on_error != NULL);
	int rc = ini_parse_stream(read_config_line, &st, handle_ini_entry, &st);
	if (rc == -2)
		set_load_error(&st, "out of memory");
	else if (rc != 0 && (!on_error || st.n_errors == 0))
		set_load_error(&st, "syntax error: expected \"name = value\", \"[section]\" or a comment");
	while (st.depth > 0)
		pop_source(&st);
	if (st.error[0])
		snprintf(errbuf, errlen, "%s", st.error);
	if (st.error[0] && (!on_error || rc == -2)) {
		config_free(st.cfg);
		return NULL;
	}
	return st.cfg;
}

/* ---- reload and SET ---- */

int config_carry_over(const struct sluice_config *old, struct sluice_config *next)
{
	int kept = 0;
	for (size_t i = 0; i < N_CONFIG_KEYS; i++) {
		const struct config_key *key = &config_table[i];
		if (key->reloadable || values_equal(old, next, key))
			continue;
		union config_value v;
		if (!copy_value(old, key, &v)) {
			log_error("out of memory keeping %s over reload", key->name);
			continue;
		}
		store_value(next, key, &v);
		log_warning("%s cannot be changed by reload; restart pgsluice to apply it", key->name);
		kept++;
	}
	return kept;
}

bool config_set(struct sluice_config *cfg, const char *name, const char *value,
                char *errbuf, size_t errlen)
{
	const struct config_key *key = config_find_key(name);
	char why[256], shown[128], *text;
	union config_value v;

	if (!key) {
		snprintf(errbuf, errlen, "unknown configuration key \"%s\"", name);
		return false;
	}
	if (!key->reloadable) {
		snprintf(errbuf, errlen, "%s cannot be changed while pgsluice is running; "
		         "change it in the configuration file and restart pgsluice", key->name);
		return false;
	}
	/* the same trimming inih applies to file values */
	while (isspace((unsigned char)*value))
		value++;
	text = strdup(value);
	if (!text) {
		snprintf(errbuf, errlen, "out of memory");
		return false;
	}
	for (size_t n = strlen(text); n > 0 && isspace((unsigned char)text[n - 1]); n--)
		text[n - 1] = '\0';
	bool ok = main_value_allowed(key, text, why, sizeof(why)) && parse_value(key, text, &v, why, sizeof(why));
	if (ok)
		store_value(cfg, key, &v);
	else
		snprintf(errbuf, errlen, "invalid value \"%s\" for key \"%s\": %s",
		         shorten(text, shown, sizeof(shown)), key->name, why);
	free(text);
	return ok;
}
