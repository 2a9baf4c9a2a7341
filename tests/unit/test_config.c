/* SPDX-License-Identifier: PostgreSQL */
/*
 * test_config.c - the configuration loader: PgBouncer's defaults, every value
 * type, [databases] / [users], errors with file:line, warnings for keys
 * pgsluice ignores, reload carry-over, SHOW CONFIG formatting and admin SET.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "config.h"
#include "log.h"

static char test_dir[] = "/tmp/test_config.XXXXXX";
static char log_path[256];
static char ini_path[256];   /* the file the last load_text() wrote */
static int ini_counter;

/* Write text to a fresh file in test_dir; returns its path (static buffer). */
static const char *write_file(const char *name, const char *text)
{
	static char path[256];
	snprintf(path, sizeof(path), "%s/%s", test_dir, name);
	FILE *f = fopen(path, "w");
	assert_non_null(f);
	fputs(text, f);
	fclose(f);
	return path;
}

static struct sluice_config *load_text(const char *text, char *err, size_t errlen)
{
	char name[64];
	snprintf(name, sizeof(name), "test%d.ini", ++ini_counter);
	snprintf(ini_path, sizeof(ini_path), "%s", write_file(name, text));
	err[0] = '\0';
	return config_load(ini_path, err, errlen);
}

/* Load text that must be valid. */
static struct sluice_config *load_ok(const char *text)
{
	char err[1024];
	struct sluice_config *cfg = load_text(text, err, sizeof(err));
	if (!cfg)
		fail_msg("unexpected load error: %s", err);
	return cfg;
}

/* Load text that must fail; returns the error with ini_path replaced by "FILE". */
static const char *load_error(const char *text)
{
	static char err[1024], shown[1024];
	struct sluice_config *cfg = load_text(text, err, sizeof(err));
	if (cfg) {
		config_free(cfg);
		fail_msg("load of %s unexpectedly succeeded", ini_path);
	}
	size_t n = strlen(ini_path);
	if (strncmp(err, ini_path, n) == 0)
		snprintf(shown, sizeof(shown), "FILE%s", err + n);
	else
		snprintf(shown, sizeof(shown), "%s", err);
	return shown;
}

/* One [pgsluice] key set to value; the config must load. */
static struct sluice_config *load_key(const char *key, const char *value)
{
	char text[512];
	snprintf(text, sizeof(text), "[pgsluice]\n%s = %s\n", key, value);
	return load_ok(text);
}

static const char *load_key_error(const char *key, const char *value)
{
	char text[512];
	snprintf(text, sizeof(text), "[pgsluice]\n%s = %s\n", key, value);
	return load_error(text);
}

/* The warnings logged since the last call (the log file is then emptied). */
static char *take_log(void)
{
	static char buf[65536];
	FILE *f = fopen(log_path, "r");
	size_t n = f ? fread(buf, 1, sizeof(buf) - 1, f) : 0;
	buf[n] = '\0';
	if (f)
		fclose(f);
	assert_int_equal(truncate(log_path, 0), 0);
	return buf;
}

/* Assert that the log holds "<ini_path>:<line>: <message>". */
static void assert_logged(const char *log, int line, const char *message)
{
	char want[1024];
	snprintf(want, sizeof(want), "%s:%d: %s", ini_path, line, message);
	if (!strstr(log, want))
		fail_msg("log lacks \"%s\"; log is:\n%s", want, log);
}

static int setup_group(void **state)
{
	if (!mkdtemp(test_dir))
		return -1;
	snprintf(log_path, sizeof(log_path), "%s/test.log", test_dir);
	/* warnings go to a file the tests read back; quiet keeps stderr clean */
	return log_setup(log_path, false, NULL, NULL, 0, true) ? 0 : -1;
}

static int teardown_group(void **state)
{
	char cmd[512];
	log_setup(NULL, false, NULL, NULL, 0, true);
	snprintf(cmd, sizeof(cmd), "rm -rf '%s'", test_dir);
	return system(cmd) == 0 ? 0 : -1;
}

static int clear_log(void **state)
{
	take_log();
	return 0;
}

/* ---- defaults and sections ---- */

static void test_defaults_apply_when_file_has_only_databases(void **state)
{
	struct sluice_config *cfg = load_ok("[databases]\napp = host=127.0.0.1 port=5432 dbname=app\n");

	assert_string_equal(cfg->config_file, ini_path);
	assert_string_equal(cfg->logfile, "");
	assert_string_equal(cfg->pidfile, "");
	assert_string_equal(cfg->listen_addr, "");
	assert_int_equal(cfg->listen_port, 6432);
	assert_string_equal(cfg->unix_socket_dir, "/tmp");
	assert_int_equal(cfg->unix_socket_mode, 0777);
	assert_string_equal(cfg->user, "");
	assert_string_equal(cfg->auth_file, "");
	assert_int_equal(cfg->auth_type, AUTH_TYPE_MD5);
	assert_string_equal(cfg->admin_users, "");
	assert_string_equal(cfg->stats_users, "");
	assert_int_equal(cfg->pool_mode, POOL_MODE_SESSION);
	assert_int_equal(cfg->max_client_conn, 100);
	assert_int_equal(cfg->max_login_clients, 1000);
	assert_int_equal(cfg->default_pool_size, 20);
	assert_int_equal(cfg->min_pool_size, 0);
	assert_int_equal(cfg->reserve_pool_size, 0);
	assert_int_equal(cfg->reserve_pool_timeout, 5 * USEC_PER_SEC);
	assert_int_equal(cfg->max_db_connections, 0);
	assert_int_equal(cfg->max_user_connections, 0);
	assert_string_equal(cfg->server_reset_query, "DISCARD ALL");
	assert_false(cfg->server_reset_query_always);
	assert_string_equal(cfg->server_check_query, "<empty>");
	assert_int_equal(cfg->server_check_delay, 30 * USEC_PER_SEC);
	assert_false(cfg->server_fast_close);
	assert_int_equal(cfg->server_lifetime, 3600 * USEC_PER_SEC);
	assert_int_equal(cfg->server_idle_timeout, 600 * USEC_PER_SEC);
	assert_int_equal(cfg->server_connect_timeout, 15 * USEC_PER_SEC);
	assert_int_equal(cfg->server_login_retry, 15 * USEC_PER_SEC);
	assert_int_equal(cfg->client_login_timeout, 60 * USEC_PER_SEC);
	assert_int_equal(cfg->query_timeout, 0);
	assert_int_equal(cfg->query_wait_timeout, 120 * USEC_PER_SEC);
	assert_int_equal(cfg->query_wait_notify, 5 * USEC_PER_SEC);
	assert_int_equal(cfg->scram_iterations, 4096);
	assert_string_equal(cfg->client_tls13_ciphers, "");
	assert_int_equal(cfg->cancel_wait_timeout, 10 * USEC_PER_SEC);
	assert_int_equal(cfg->client_idle_timeout, 0);
	assert_int_equal(cfg->idle_transaction_timeout, 0);
	assert_string_equal(cfg->ignore_startup_parameters, "");
	assert_string_equal(cfg->track_extra_parameters, "IntervalStyle");
	assert_int_equal(cfg->max_prepared_statements, 200);
	assert_false(cfg->application_name_add_host);
	assert_int_equal(cfg->listen_backlog, 128);
	assert_int_equal(cfg->max_packet_size, 2147483647);
	assert_false(cfg->so_reuseport);
	assert_true(cfg->tcp_keepalive);
	assert_int_equal(cfg->tcp_keepidle, 0);
	assert_int_equal(cfg->tcp_keepintvl, 0);
	assert_int_equal(cfg->tcp_keepcnt, 0);
	assert_int_equal(cfg->tcp_user_timeout, 0);
	assert_false(cfg->syslog);
	assert_string_equal(cfg->syslog_ident, "pgsluice");
	assert_string_equal(cfg->syslog_facility, "daemon");
	assert_true(cfg->log_connections);
	assert_true(cfg->log_disconnections);
	assert_true(cfg->log_pooler_errors);
	assert_true(cfg->log_stats);
	assert_int_equal(cfg->stats_period, 60 * USEC_PER_SEC);
	assert_int_equal(cfg->verbose, 0);
	assert_int_equal(cfg->n_databases, 1);
	assert_int_equal(cfg->n_users, 0);
	assert_string_equal(take_log(), "");
	config_free(cfg);
}

static void test_every_default_is_shown_as_written_in_the_table(void **state)
{
	struct sluice_config *cfg = load_ok("");
	size_t n;
	const struct config_key *keys = config_keys(&n);
	char buf[256];

	assert_true(n >= 50);
	for (size_t i = 0; i < n; i++) {
		assert_non_null(config_find_key(keys[i].name));
		if (keys[i].type == CONFIG_STRING)
			assert_non_null(*(char **)((char *)cfg + keys[i].offset));
		if (strcmp(keys[i].name, "conffile") == 0) {   /* the file itself (PgBouncer's conffile) */
			assert_string_equal(config_format_value(cfg, &keys[i], buf, sizeof(buf)), cfg->config_file);
			continue;
		}
		assert_string_equal(config_format_value(cfg, &keys[i], buf, sizeof(buf)),
		                    keys[i].default_value);
	}
	config_free(cfg);
}

static void test_pgbouncer_section_is_read_as_pgsluice(void **state)
{
	struct sluice_config *cfg = load_ok("[PgBouncer]\nlisten_port = 7000\nPOOL_MODE = transaction\n"
	                                    "[pgsluice]\nmax_client_conn = 500\n");
	assert_int_equal(cfg->listen_port, 7000);
	assert_int_equal(cfg->pool_mode, POOL_MODE_TRANSACTION);
	assert_int_equal(cfg->max_client_conn, 500);
	assert_string_equal(take_log(), "");
	config_free(cfg);
}

static void test_semicolon_and_hash_inside_a_value_are_not_comments(void **state)
{
	struct sluice_config *cfg = load_ok("; a comment\n# another\n[pgsluice]\n"
	                                    "server_reset_query = DISCARD ALL; SELECT '#x'\n"
	                                    "    listen_port = 6000\n");
	assert_string_equal(cfg->server_reset_query, "DISCARD ALL; SELECT '#x'");
	assert_int_equal(cfg->listen_port, 6000);
	config_free(cfg);
}

/* ---- value types ---- */

static void test_bool_accepts_pgbouncer_and_postgresql_spellings(void **state)
{
	static const struct { const char *text; bool value; } cases[] = {
		{ "1", true }, { "0", false }, { "on", true }, { "off", false }, { "TRUE", true },
		{ "false", false }, { "yes", true }, { "No", false },
	};
	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		struct sluice_config *cfg = load_key("so_reuseport", cases[i].text);
		assert_int_equal(cfg->so_reuseport, cases[i].value);
		config_free(cfg);
	}
	assert_string_equal(load_key_error("log_stats", "2"),
	                    "FILE:2: invalid value \"2\" for key \"log_stats\": "
	                    "expected a boolean (0, 1, on, off, true, false, yes, no)");
}

static void test_int_is_decimal_and_unix_socket_mode_is_octal(void **state)
{
	struct sluice_config *cfg = load_key("listen_port", "06432");
	assert_int_equal(cfg->listen_port, 6432);
	config_free(cfg);

	cfg = load_key("unix_socket_mode", "0700");
	assert_int_equal(cfg->unix_socket_mode, 0700);
	config_free(cfg);

	cfg = load_key("verbose", "2");
	assert_int_equal(cfg->verbose, 2);
	config_free(cfg);

	assert_string_equal(load_key_error("unix_socket_mode", "0999"),
	                    "FILE:2: invalid value \"0999\" for key \"unix_socket_mode\": "
	                    "expected an integer such as 0777 (leading 0 for octal)");
	assert_string_equal(load_key_error("listen_port", "64k"),
	                    "FILE:2: invalid value \"64k\" for key \"listen_port\": expected an integer");
}

static void test_time_takes_seconds_fractions_and_postgresql_units(void **state)
{
	static const struct { const char *text; usec_t usec; } cases[] = {
		{ "10", 10 * USEC_PER_SEC }, { "0.5", 500 * USEC_PER_MSEC }, { "500ms", 500 * USEC_PER_MSEC },
		{ "250us", 250 }, { "3 s", 3 * USEC_PER_SEC }, { "2min", 120 * USEC_PER_SEC },
		{ "1.5h", 5400 * USEC_PER_SEC }, { "1d", 86400 * USEC_PER_SEC }, { "1.5ms", 1500 },
		{ "0.000001", 1 }, { "0", 0 }, { "7MIN", 420 * USEC_PER_SEC },
	};
	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		struct sluice_config *cfg = load_key("query_wait_timeout", cases[i].text);
		assert_int_equal(cfg->query_wait_timeout, cases[i].usec);
		config_free(cfg);
	}
	static const char *const bad[] = { "5 parsecs", "1.2.3", "ms", ".", "1e3", "" };
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++)
		assert_non_null(strstr(load_key_error("server_lifetime", bad[i]),
		                       "expected a time such as 30, 0.5, 500ms or 2min"));
	assert_string_equal(load_key_error("query_timeout", "-1"),
	                    "FILE:2: invalid value \"-1\" for key \"query_timeout\": must be at least 0s");
	assert_string_equal(load_key_error("stats_period", "500ms"),
	                    "FILE:2: invalid value \"500ms\" for key \"stats_period\": must be at least 1s");
	assert_string_equal(load_key_error("query_timeout", "99999999999999999999d"),
	                    "FILE:2: invalid value \"99999999999999999999d\" for key \"query_timeout\": "
	                    "value is too large");
}

static void test_size_takes_bytes_and_1024_based_units(void **state)
{
	static const struct { const char *text; int64_t bytes; } cases[] = {
		{ "4096", 4096 }, { "64kB", 65536 }, { "1MB", 1048576 }, { "1GB", 1073741824 },
		{ "1.5kB", 1536 }, { "2048B", 2048 }, { "8 kb", 8192 },
	};
	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		struct sluice_config *cfg = load_key("max_packet_size", cases[i].text);
		assert_int_equal(cfg->max_packet_size, cases[i].bytes);
		config_free(cfg);
	}
	assert_string_equal(load_key_error("max_packet_size", "2GB"),
	                    "FILE:2: invalid value \"2GB\" for key \"max_packet_size\": "
	                    "must be between 1024 bytes and 2147483647 bytes");
	assert_non_null(strstr(load_key_error("max_packet_size", "1TB"),
	                       "expected a size such as 4096, 64kB or 1MB (units B, kB, MB, GB)"));
}

static void test_pool_mode_and_auth_type_take_pgbouncer_names(void **state)
{
	static const struct { const char *text; enum auth_type type; } auth[] = {
		{ "any", AUTH_TYPE_ANY }, { "trust", AUTH_TYPE_TRUST }, { "plain", AUTH_TYPE_PLAIN },
		{ "password", AUTH_TYPE_PLAIN }, { "md5", AUTH_TYPE_MD5 },
		{ "scram-sha-256", AUTH_TYPE_SCRAM_SHA_256 }, { "cert", AUTH_TYPE_CERT }, { "hba", AUTH_TYPE_HBA },
	};
	for (size_t i = 0; i < sizeof(auth) / sizeof(auth[0]); i++) {
		struct sluice_config *cfg = load_key("auth_type", auth[i].text);
		assert_int_equal(cfg->auth_type, auth[i].type);
		config_free(cfg);
	}
	struct sluice_config *cfg = load_key("pool_mode", "statement");
	assert_int_equal(cfg->pool_mode, POOL_MODE_STATEMENT);
	config_free(cfg);

	assert_string_equal(load_key_error("auth_type", "gss"),
	                    "FILE:2: invalid value \"gss\" for key \"auth_type\": "
	                    "expected any, trust, plain, password, md5, scram-sha-256, cert, hba, peer, ldap or pam");
	assert_string_equal(load_key_error("pool_mode", "txn"),
	                    "FILE:2: invalid value \"txn\" for key \"pool_mode\": "
	                    "expected session, transaction or statement");
	assert_string_equal(pool_mode_name(POOL_MODE_TRANSACTION), "transaction");
	assert_string_equal(pool_mode_name(POOL_MODE_INHERIT), "");
	assert_string_equal(auth_type_name(AUTH_TYPE_PLAIN), "plain");
}

/* ---- errors and warnings ---- */

static void test_invalid_value_names_file_line_key_and_expectation(void **state)
{
	assert_string_equal(load_error("[databases]\napp = host=x\n[pgsluice]\nlisten_port = abc\n"
	                               "listen_port = 7000\n"),
	                    "FILE:4: invalid value \"abc\" for key \"listen_port\": expected an integer");
	assert_string_equal(load_key_error("listen_port", "70000"),
	                    "FILE:2: invalid value \"70000\" for key \"listen_port\": must be between 1 and 65535");
	assert_string_equal(load_key_error("max_client_conn", "0"),
	                    "FILE:2: invalid value \"0\" for key \"max_client_conn\": must be at least 1");
	assert_string_equal(load_key_error("default_pool_size", "-5"),
	                    "FILE:2: invalid value \"-5\" for key \"default_pool_size\": must be at least 0");
	assert_string_equal(load_key_error("listen_backlog", "0"),
	                    "FILE:2: invalid value \"0\" for key \"listen_backlog\": must be at least 1");
	assert_string_equal(load_key_error("max_client_conn", "3000000000"),
	                    "FILE:2: invalid value \"3000000000\" for key \"max_client_conn\": "
	                    "must be at most 2147483647");
}

static void test_syntax_error_names_its_line(void **state)
{
	assert_string_equal(load_error("[pgsluice]\nlisten_port = 7000\nthis line has no equals sign\n"
	                               "listen_port = 7001\n"),
	                    "FILE:3: syntax error: expected \"name = value\", \"[section]\" or a comment");
	assert_string_equal(load_error("[pgsluice\nlisten_port = 1\n"),
	                    "FILE:1: syntax error: expected \"name = value\", \"[section]\" or a comment");
}

static void test_missing_file_is_an_error(void **state)
{
	char err[512], path[300];
	snprintf(path, sizeof(path), "%s/does-not-exist.ini", test_dir);
	assert_null(config_load(path, err, sizeof(err)));
	assert_non_null(strstr(err, "could not open configuration file"));
	assert_non_null(strstr(err, "No such file or directory"));
}

static void test_unknown_and_unsupported_keys_warn_by_name_and_load(void **state)
{
	struct sluice_config *cfg = load_ok(
		"[pgsluice]\n"                       /* 1 */
		"foo = bar\n"                        /* 2 */
		"pkt_buf = 4096\n"                  /* 3 */
		"sbuf_loopcnt = 5\n"                /* 4 */
		"workers = 2\n"                      /* 5 */
		"listen_port = 7432\n"               /* 6 */
		"[peers]\n"                          /* 7 */
		"1 = host=/tmp/p1\n"                 /* 8 */
		"[limits]\n"                         /* 9 */
		"default = requests_per_minute=600\n" /* 10 */
		"[nonsense]\n"                       /* 11 */
		"x = y\n");                          /* 12 */
	assert_int_equal(cfg->listen_port, 7432);
	char *log = take_log();
	assert_logged(log, 2, "unknown configuration key \"foo\" ignored");
	assert_logged(log, 3, "PgBouncer key \"pkt_buf\" is not supported by pgsluice and is ignored");
	assert_logged(log, 4, "PgBouncer key \"sbuf_loopcnt\" is not supported by pgsluice and is ignored");
	assert_logged(log, 5, "key \"workers\" is not implemented yet by pgsluice and is ignored");
	assert_null(strstr(log, "[peers]"));   /* read since peering: no warning */
	assert_int_equal(cfg->n_peers, 1);
	assert_string_equal(config_find_peer(cfg, 1)->host, "/tmp/p1");
	assert_int_equal(config_find_peer(cfg, 1)->port, 6432);
	assert_logged(log, 11, "unknown section [nonsense] ignored");
	assert_null(strstr(log, "limits"));
	assert_null(strstr(log, "requests_per_minute"));
	config_free(cfg);
}

static void test_key_before_any_section_is_warned(void **state)
{
	struct sluice_config *cfg = load_ok("listen_port = 1234\n[pgsluice]\n");
	assert_int_equal(cfg->listen_port, 6432);
	assert_logged(take_log(), 1, "key \"listen_port\" is not in any section and is ignored");
	config_free(cfg);
}

/* ---- [databases] and [users] ---- */

static void test_databases_take_libpq_style_settings(void **state)
{
	struct sluice_config *cfg = load_ok(
		"[databases]\n"
		"app = host=127.0.0.1 port=5433 dbname=appdb user=bob password='it''s a \\'secret\\''"
		" pool_size=5 min_pool_size=1 reserve_pool=2 max_db_connections=9 pool_mode=transaction"
		" connect_query='select 1; select 2' client_encoding=UTF8 datestyle=ISO"
		" timezone=UTC application_name=my\\ app\n"
		"\"my-db\" = dbname = other   port=6543\n"
		"bare =\n");
	assert_int_equal(cfg->n_databases, 3);

	const struct db_config *db = config_find_db(cfg, "app");
	assert_non_null(db);
	assert_string_equal(db->name, "app");
	assert_string_equal(db->host, "127.0.0.1");
	assert_int_equal(db->port, 5433);
	assert_string_equal(db->dbname, "appdb");
	assert_string_equal(db->user, "bob");
	assert_string_equal(db->password, "it's a 'secret'");
	assert_int_equal(db->pool_size, 5);
	assert_int_equal(db->min_pool_size, 1);
	assert_int_equal(db->reserve_pool, 2);
	assert_int_equal(db->max_db_connections, 9);
	assert_int_equal(db->pool_mode, POOL_MODE_TRANSACTION);
	assert_string_equal(db->connect_query, "select 1; select 2");
	assert_string_equal(db->client_encoding, "UTF8");
	assert_string_equal(db->datestyle, "ISO");
	assert_string_equal(db->timezone, "UTC");
	assert_string_equal(db->application_name, "my app");
	assert_int_equal(db->line, 2);

	db = config_find_db(cfg, "my-db");
	assert_non_null(db);
	assert_string_equal(db->dbname, "other");
	assert_int_equal(db->port, 6543);

	db = config_find_db(cfg, "bare");
	assert_non_null(db);
	assert_null(db->host);
	assert_null(db->dbname);
	assert_null(db->user);
	assert_null(db->password);
	assert_int_equal(db->port, 5432);
	assert_int_equal(db->pool_size, -1);
	assert_int_equal(db->min_pool_size, -1);
	assert_int_equal(db->reserve_pool, -1);
	assert_int_equal(db->max_db_connections, -1);
	assert_int_equal(db->pool_mode, POOL_MODE_INHERIT);

	assert_null(config_find_db(cfg, "nothere"));
	assert_null(config_find_db(cfg, "APP"));
	config_free(cfg);
}

static void test_star_database_is_the_fallback(void **state)
{
	struct sluice_config *cfg = load_ok("[databases]\n* = host=/var/run/postgresql\n"
	                                    "app = host=10.0.0.1\n");
	const struct db_config *db = config_find_db(cfg, "app");
	assert_string_equal(db->host, "10.0.0.1");
	db = config_find_db(cfg, "anything");
	assert_non_null(db);
	assert_string_equal(db->name, "*");
	assert_string_equal(db->host, "/var/run/postgresql");
	config_free(cfg);
}

static void test_bad_database_line_fails_with_its_line(void **state)
{
	assert_string_equal(load_error("[pgsluice]\nlisten_port = 7000\n[databases]\n"
	                               "app = host=x bogus=1\n"),
	                    "FILE:4: unknown key \"bogus\" in the settings of database \"app\"");
	assert_string_equal(load_error("[databases]\napp = port=abc\n"),
	                    "FILE:2: invalid value \"abc\" for key \"port\" of database \"app\": expected an integer");
	assert_string_equal(load_error("[databases]\napp = password='open\n"),
	                    "FILE:2: invalid settings for database \"app\": unterminated quoted string");
	assert_string_equal(load_error("[databases]\napp = host\n"),
	                    "FILE:2: invalid settings for database \"app\": missing \"=\" after \"host\"");
	assert_string_equal(load_error("[databases]\npgsluice = host=x\n"),
	                    "FILE:2: database name \"pgsluice\" is reserved for the admin console");
	assert_string_equal(load_error("[databases]\n\"open = host=x\n"),
	                    "FILE:2: invalid database name \"open: a quoted name needs a closing \" "
	                    "and no text after it");
}

static void test_pgbouncer_database_keys_pgsluice_lacks_are_warned(void **state)
{
	struct sluice_config *cfg = load_ok("[databases]\napp = host=x target_session_attrs=any port=5000\n");
	assert_int_equal(config_find_db(cfg, "app")->port, 5000);
	assert_logged(take_log(), 2, "PgBouncer key \"target_session_attrs\" of database \"app\" is not "
	                             "supported by pgsluice and is ignored");
	config_free(cfg);

	/* auth_user, auth_query, auth_dbname and server_lifetime are taken per database */
	cfg = load_ok("[databases]\napp = host=x auth_user=pgb auth_dbname=postgres "
	              "auth_query='SELECT 1' server_lifetime=10\n");
	const struct db_config *db = config_find_db(cfg, "app");
	assert_string_equal(db->auth_user, "pgb");
	assert_string_equal(db->auth_dbname, "postgres");
	assert_string_equal(db->auth_query, "SELECT 1");
	assert_int_equal(db->server_lifetime, 10 * USEC_PER_SEC);
	config_free(cfg);
}

static void test_duplicate_database_later_wins_with_warning(void **state)
{
	struct sluice_config *cfg = load_ok("[databases]\napp = host=first\nother = host=o\n"
	                                    "app = host=second\n");
	assert_int_equal(cfg->n_databases, 2);
	assert_string_equal(config_find_db(cfg, "app")->host, "second");
	assert_int_equal(config_find_db(cfg, "app")->line, 4);
	assert_logged(take_log(), 4, "database \"app\" is defined again; this definition replaces "
	                             "the one on line 2");
	config_free(cfg);
}

static void test_many_databases_are_kept(void **state)
{
	char text[8192] = "[databases]\n";
	for (int i = 0; i < 100; i++) {
		char line[64];
		snprintf(line, sizeof(line), "db%d = port=%d\n", i, 1000 + i);
		strcat(text, line);
	}
	struct sluice_config *cfg = load_ok(text);
	assert_int_equal(cfg->n_databases, 100);
	assert_int_equal(config_find_db(cfg, "db77")->port, 1077);
	config_free(cfg);
}

static void test_users_take_pool_mode_pool_size_and_max_user_connections(void **state)
{
	struct sluice_config *cfg = load_ok("[users]\nbob = pool_mode=statement pool_size=3 "
	                                    "max_user_connections=7\nalice = pool_mode=session "
	                                    "query_timeout=5\n");
	const struct user_config *user = config_find_user(cfg, "bob");
	assert_non_null(user);
	assert_int_equal(user->pool_mode, POOL_MODE_STATEMENT);
	assert_int_equal(user->pool_size, 3);
	assert_int_equal(user->max_user_connections, 7);
	assert_int_equal(user->line, 2);

	user = config_find_user(cfg, "alice");
	assert_int_equal(user->pool_mode, POOL_MODE_SESSION);
	assert_int_equal(user->pool_size, -1);
	assert_int_equal(user->max_user_connections, -1);
	assert_int_equal(user->query_timeout, 5 * USEC_PER_SEC);
	assert_int_equal(user->transaction_timeout, -1);
	assert_null(config_find_user(cfg, "carol"));
	config_free(cfg);

	/* [peers]: PgBouncer's peer ids and keys */
	cfg = load_ok("[pgsluice]\npeer_id = 2\n[peers]\n1 = host=10.0.0.1 port=7000 pool_size=3\n2 = host=/run/p2\n");
	assert_int_equal(cfg->peer_id, 2);
	assert_int_equal(config_find_peer(cfg, 1)->port, 7000);
	assert_int_equal(config_find_peer(cfg, 1)->pool_size, 3);
	assert_int_equal(config_find_peer(cfg, 2)->pool_size, -1);
	assert_null(config_find_peer(cfg, 3));
	config_free(cfg);
	assert_string_equal(load_error("[peers]\n0 = host=x\n"),
	                    "FILE:2: invalid peer id \"0\" in [peers]: expected an integer from 1 to 16383");
	assert_non_null(strstr(load_error("[peers]\n1 = host=x color=blue\n"), "unknown key \"color\""));

	/* query_wait_timeout per user and per database; -1 (PgBouncer's "not set") and unset are negative */
	cfg = load_ok("[users]\nalice = query_wait_timeout=5\nbob = query_wait_timeout=-1\ncarol = pool_size=1\n"
	              "[databases]\nd1 = query_wait_timeout=0\nd2 = host=h\n");
	assert_int_equal(config_find_user(cfg, "alice")->query_wait_timeout, 5 * USEC_PER_SEC);
	assert_true(config_find_user(cfg, "bob")->query_wait_timeout < 0);
	assert_true(config_find_user(cfg, "carol")->query_wait_timeout < 0);
	assert_int_equal(config_find_db(cfg, "d1")->query_wait_timeout, 0);
	assert_true(config_find_db(cfg, "d2")->query_wait_timeout < 0);
	config_free(cfg);
	assert_non_null(strstr(load_error("[users]\nalice = query_wait_timeout=-2\n"), "query_wait_timeout"));

	assert_string_equal(load_error("[users]\nbob = pool_mode=session color=blue\n"),
	                    "FILE:2: unknown key \"color\" in the settings of user \"bob\"");
	assert_string_equal(load_error("[users]\nbob = pool_mode=fast\n"),
	                    "FILE:2: invalid value \"fast\" for key \"pool_mode\" of user \"bob\": "
	                    "expected session, transaction or statement");
}

/* ---- files: %include and long lines ---- */

static void test_include_reads_another_file_and_errors_name_it(void **state)
{
	char text[512], sub_path[300];
	snprintf(sub_path, sizeof(sub_path), "%s", write_file("sub.ini", "[databases]\nsub = port=7777\n"));
	snprintf(text, sizeof(text), "[pgsluice]\nlisten_port = 7000\n%%include %s\n"
	         "[pgsluice]\ndefault_pool_size = 3\n", sub_path);
	struct sluice_config *cfg = load_ok(text);
	assert_int_equal(config_find_db(cfg, "sub")->port, 7777);
	assert_int_equal(cfg->default_pool_size, 3);
	config_free(cfg);

	write_file("sub.ini", "[pgsluice]\n\nlisten_port = nope\n");
	char err[1024], want[1024];
	cfg = load_text(text, err, sizeof(err));
	assert_null(cfg);
	snprintf(want, sizeof(want), "%s:3: invalid value \"nope\" for key \"listen_port\": "
	         "expected an integer", sub_path);
	assert_string_equal(err, want);

	assert_string_equal(load_error("[pgsluice]\n%include /nonexistent/x.ini\n"),
	                    "FILE:2: could not open included file \"/nonexistent/x.ini\": "
	                    "No such file or directory");
}

static void test_long_connect_strings_load_and_overlong_lines_fail(void **state)
{
	size_t n = 20000;
	char *text = malloc(n + 100);
	strcpy(text, "[databases]\napp = host=x password=");
	size_t len = strlen(text);
	memset(text + len, 'p', n);
	strcpy(text + len + n, " port=5555\n");
	struct sluice_config *cfg = load_ok(text);
	const struct db_config *db = config_find_db(cfg, "app");
	assert_int_equal(strlen(db->password), n);
	assert_int_equal(db->port, 5555);
	config_free(cfg);
	free(text);

	n = 70000;
	text = malloc(n + 100);
	strcpy(text, "[databases]\napp = host=x password=");
	len = strlen(text);
	memset(text + len, 'p', n);
	strcpy(text + len + n, "\nnext = port=1\n");
	assert_string_equal(load_error(text), "FILE:2: line is longer than 65534 bytes");
	free(text);
}

/*
 * A last line without a newline that exactly fills inih's buffer (199 bytes
 * in its first 200, then 399, 799, ...): inih asks for the rest, the reader
 * reaches the end of the file, and inih then hands the line over. The loader
 * had left the file by then and crashed looking up the line number for the
 * handler (found by fuzz_config; tests/fuzz/corpus/config/regress-*).
 */
static void test_last_line_filling_inih_buffer_without_newline_loads(void **state)
{
	static const char *const keys[] = { "app = pool_mode=session ", "app = host=x port=5555 ",
	                                    "admin_users = ops," };
	static const char *const sections[] = { "[users]\n", "[databases]\n", "[pgsluice]\n" };
	static const int lengths[] = { 199, 399, 799 };
	for (size_t i = 0; i < sizeof(keys) / sizeof(keys[0]); i++) {
		for (size_t k = 0; k < sizeof(lengths) / sizeof(lengths[0]); k++) {
			char text[1000], err[1024], prefix[300];
			int head = snprintf(text, sizeof(text), "%s", sections[i]);
			int n = snprintf(text + head, sizeof(text) - (size_t)head, "%s", keys[i]);
			memset(text + head + n, 'a', (size_t)(lengths[k] - n));
			text[head + lengths[k]] = '\0';     /* no newline at the end */
			struct sluice_config *cfg = load_text(text, err, sizeof(err));
			if (cfg) {
				if (i == 2)
					assert_int_equal(strlen(cfg->admin_users), lengths[k] - strlen("admin_users = "));
				config_free(cfg);
				continue;
			}
			/* refused is fine for a nonsense value, but naming the file and its line */
			assert_true(i != 2);
			snprintf(prefix, sizeof(prefix), "%s:2: ", ini_path);
			if (strncmp(err, prefix, strlen(prefix)) != 0)
				fail_msg("error without file:line: %s", err);
		}
	}
}

/* ---- reload, SHOW CONFIG, SET ---- */

static void test_carry_over_keeps_listen_port_and_changes_default_pool_size(void **state)
{
	struct sluice_config *old = load_ok("[pgsluice]\nlisten_port = 6000\ndefault_pool_size = 10\n");
	struct sluice_config *next = load_ok("[pgsluice]\nlisten_port = 7000\ndefault_pool_size = 30\n"
	                                     "unix_socket_dir = /var/run/pgsluice\nlogfile = /tmp/x.log\n");
	take_log();

	assert_int_equal(config_carry_over(old, next), 2);
	assert_int_equal(next->listen_port, 6000);
	assert_string_equal(next->unix_socket_dir, "/tmp");
	assert_int_equal(next->default_pool_size, 30);
	assert_string_equal(next->logfile, "/tmp/x.log");
	char *log = take_log();
	assert_non_null(strstr(log, "listen_port cannot be changed by reload; restart pgsluice to apply it"));
	assert_non_null(strstr(log, "unix_socket_dir cannot be changed by reload"));

	assert_int_equal(config_carry_over(old, next), 0);
	config_free(old);
	config_free(next);
}

static void test_formatted_values_load_back_to_the_same_values(void **state)
{
	struct sluice_config *cfg = load_ok(
		"[pgsluice]\nquery_timeout = 1500ms\nserver_lifetime = 2h\nclient_idle_timeout = 0.25\n"
		"max_packet_size = 1MB\nunix_socket_mode = 0700\nauth_type = password\n"
		"pool_mode = transaction\nso_reuseport = yes\nserver_reset_query = DISCARD ALL; -- #1\n"
		"listen_addr = *\nverbose = 3\nidle_transaction_timeout = 1us\n");
	size_t n;
	const struct config_key *keys = config_keys(&n);
	size_t cap = 65536, used = 0;
	char *text = malloc(cap), buf[512];
	used += (size_t)snprintf(text, cap, "[pgsluice]\n");
	for (size_t i = 0; i < n; i++)
		used += (size_t)snprintf(text + used, cap - used, "%s = %s\n", keys[i].name,
		                         config_format_value(cfg, &keys[i], buf, sizeof(buf)));
	struct sluice_config *again = load_ok(text);
	free(text);

	for (size_t i = 0; i < n; i++) {
		char other[512];
		assert_string_equal(config_format_value(again, &keys[i], other, sizeof(other)),
		                    config_format_value(cfg, &keys[i], buf, sizeof(buf)));
	}
	const struct config_key *key = config_find_key("query_timeout");
	assert_string_equal(config_format_value(cfg, key, buf, sizeof(buf)), "1.5");
	assert_string_equal(config_format_value(cfg, config_find_key("unix_socket_mode"), buf, sizeof(buf)), "0700");
	assert_string_equal(config_format_value(cfg, config_find_key("auth_type"), buf, sizeof(buf)), "plain");
	assert_string_equal(config_format_value(cfg, config_find_key("max_packet_size"), buf, sizeof(buf)), "1048576");
	assert_string_equal(config_format_value(cfg, config_find_key("idle_transaction_timeout"), buf, sizeof(buf)),
	                    "0.000001");
	assert_int_equal(again->idle_transaction_timeout, 1);
	config_free(cfg);
	config_free(again);
}

static void test_pgbouncer_placeholders_mean_not_set_except_where_pgbouncer_gives_them_a_meaning(void **state)
{
	(void)state;
	struct sluice_config *cfg = load_key("server_reset_query", "<empty>");
	assert_string_equal(cfg->server_reset_query, "");
	config_free(cfg);
	cfg = load_key("auth_user", "<none>");
	assert_string_equal(cfg->auth_user, "");
	config_free(cfg);
	/* PgBouncer 1.25: an empty Query as the check, kept as written */
	cfg = load_key("server_check_query", "<empty>");
	assert_string_equal(cfg->server_check_query, "<empty>");
	config_free(cfg);
	cfg = load_key("server_check_query", "");
	assert_string_equal(cfg->server_check_query, "");
	config_free(cfg);
	/* the sample pgbouncer.ini's CA placeholder is tls.c's to read */
	cfg = load_key("server_tls_ca_file", "<system default>");
	assert_string_equal(cfg->server_tls_ca_file, "<system default>");
	config_free(cfg);
}

static void test_config_set_changes_reloadable_keys_only(void **state)
{
	struct sluice_config *cfg = load_ok("");
	char err[512];

	assert_true(config_set(cfg, "default_pool_size", "42", err, sizeof(err)));
	assert_int_equal(cfg->default_pool_size, 42);
	assert_true(config_set(cfg, "QUERY_TIMEOUT", " 2min ", err, sizeof(err)));
	assert_int_equal(cfg->query_timeout, 120 * USEC_PER_SEC);
	assert_true(config_set(cfg, "server_reset_query", "DEALLOCATE ALL", err, sizeof(err)));
	assert_string_equal(cfg->server_reset_query, "DEALLOCATE ALL");

	assert_false(config_set(cfg, "default_pool_size", "-1", err, sizeof(err)));
	assert_string_equal(err, "invalid value \"-1\" for key \"default_pool_size\": must be at least 0");
	assert_int_equal(cfg->default_pool_size, 42);

	assert_false(config_set(cfg, "pool_mode", "sometimes", err, sizeof(err)));
	assert_string_equal(err, "invalid value \"sometimes\" for key \"pool_mode\": "
	                         "expected session, transaction or statement");
	assert_int_equal(cfg->pool_mode, POOL_MODE_SESSION);

	assert_false(config_set(cfg, "no_such_key", "1", err, sizeof(err)));
	assert_string_equal(err, "unknown configuration key \"no_such_key\"");

	assert_false(config_set(cfg, "listen_port", "7000", err, sizeof(err)));
	assert_non_null(strstr(err, "listen_port cannot be changed while pgsluice is running"));
	assert_int_equal(cfg->listen_port, 6432);
	config_free(cfg);
}

/* config_load_all's collector: the errors, one per line. */
struct collected {
	int n;
	char text[4096];
};

static void collect_error(const char *msg, void *arg)
{
	struct collected *c = arg;
	c->n++;
	size_t used = strlen(c->text);
	snprintf(c->text + used, sizeof(c->text) - used, "%s\n", msg);
}

static void test_load_all_reports_every_error_and_goes_on(void **state)
{
	(void)state;
	static const char text[] =
		"[pgsluice]\n"
		"listen_port = abc\n"                     /* 2: bad value */
		"no equals sign here\n"                   /* 3: syntax */
		"[broken\n"                               /* 4: syntax */
		"max_client_conn = 77\n"                  /* 5: fine, still applied */
		"[databases]\n"
		"app = host=h nokey=1\n"                  /* 7: bad entry */
		"other = host=h\n"                        /* 8: fine */
		"[limits]\n"
		"alice = nonsense\n";                     /* 10: bad limit */
	const char *path = write_file("all.ini", text);
	struct collected c = { 0 };
	char err[1024];
	struct sluice_config *cfg = config_load_all(path, err, sizeof(err), collect_error, &c);
	assert_non_null(cfg);
	assert_int_equal(c.n, 5);
	for (int line = 2; line <= 10; line++) {
		char at[64];
		snprintf(at, sizeof(at), "all.ini:%d: ", line);
		bool expected = line == 2 || line == 3 || line == 4 || line == 7 || line == 10;
		if ((strstr(c.text, at) != NULL) != expected)
			fail_msg("line %d %s reported: %s", line, expected ? "not" : "wrongly", c.text);
	}
	assert_non_null(strstr(err, "all.ini:2: "));   /* errbuf: the first */
	assert_int_equal(cfg->max_client_conn, 77);
	assert_int_equal(cfg->listen_port, 6432);       /* the bad value kept the default */
	assert_int_equal(cfg->n_databases, 1);
	assert_string_equal(cfg->databases[0].name, "other");
	config_free(cfg);

	/* config_load still stops at the first error, with the same message */
	assert_null(config_load(path, err, sizeof(err)));
	assert_non_null(strstr(err, "all.ini:2: invalid value \"abc\" for key \"listen_port\""));
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test_setup(test_defaults_apply_when_file_has_only_databases, clear_log),
		cmocka_unit_test_setup(test_every_default_is_shown_as_written_in_the_table, clear_log),
		cmocka_unit_test_setup(test_pgbouncer_section_is_read_as_pgsluice, clear_log),
		cmocka_unit_test_setup(test_semicolon_and_hash_inside_a_value_are_not_comments, clear_log),
		cmocka_unit_test_setup(test_bool_accepts_pgbouncer_and_postgresql_spellings, clear_log),
		cmocka_unit_test_setup(test_int_is_decimal_and_unix_socket_mode_is_octal, clear_log),
		cmocka_unit_test_setup(test_time_takes_seconds_fractions_and_postgresql_units, clear_log),
		cmocka_unit_test_setup(test_size_takes_bytes_and_1024_based_units, clear_log),
		cmocka_unit_test_setup(test_pool_mode_and_auth_type_take_pgbouncer_names, clear_log),
		cmocka_unit_test_setup(test_invalid_value_names_file_line_key_and_expectation, clear_log),
		cmocka_unit_test_setup(test_syntax_error_names_its_line, clear_log),
		cmocka_unit_test_setup(test_missing_file_is_an_error, clear_log),
		cmocka_unit_test_setup(test_unknown_and_unsupported_keys_warn_by_name_and_load, clear_log),
		cmocka_unit_test_setup(test_key_before_any_section_is_warned, clear_log),
		cmocka_unit_test_setup(test_databases_take_libpq_style_settings, clear_log),
		cmocka_unit_test_setup(test_star_database_is_the_fallback, clear_log),
		cmocka_unit_test_setup(test_bad_database_line_fails_with_its_line, clear_log),
		cmocka_unit_test_setup(test_pgbouncer_database_keys_pgsluice_lacks_are_warned, clear_log),
		cmocka_unit_test_setup(test_duplicate_database_later_wins_with_warning, clear_log),
		cmocka_unit_test_setup(test_many_databases_are_kept, clear_log),
		cmocka_unit_test_setup(test_users_take_pool_mode_pool_size_and_max_user_connections, clear_log),
		cmocka_unit_test_setup(test_include_reads_another_file_and_errors_name_it, clear_log),
		cmocka_unit_test_setup(test_long_connect_strings_load_and_overlong_lines_fail, clear_log),
		cmocka_unit_test_setup(test_last_line_filling_inih_buffer_without_newline_loads, clear_log),
		cmocka_unit_test_setup(test_carry_over_keeps_listen_port_and_changes_default_pool_size, clear_log),
		cmocka_unit_test_setup(test_formatted_values_load_back_to_the_same_values, clear_log),
		cmocka_unit_test_setup(test_pgbouncer_placeholders_mean_not_set_except_where_pgbouncer_gives_them_a_meaning, clear_log),
		cmocka_unit_test_setup(test_config_set_changes_reloadable_keys_only, clear_log),
		cmocka_unit_test_setup(test_load_all_reports_every_error_and_goes_on, clear_log),
	};
	return cmocka_run_group_tests(tests, setup_group, teardown_group);
}
