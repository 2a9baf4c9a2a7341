/* SPDX-License-Identifier: PostgreSQL */
/*
 * main.c - pgsluice's entry point: command line (PgBouncer's), pidfile,
 * daemonizing, privilege drop, signals (HUP reload, TERM shutdown waiting for
 * clients, INT waiting for servers, QUIT immediate shutdown, USR1 pause, USR2
 * resume; PgBouncer 1.23+, usage.md "Signals") and the event loop.
 */
#include "autoconfig.h"

#include <errno.h>
#include <event2/buffer.h>
#include <event2/dns.h>
#include <event2/event.h>
#include <fcntl.h>
#include <getopt.h>
#include <grp.h>
#include <openssl/rand.h>
#include <pwd.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <unistd.h>

#include "ai/cache.h"
#include "ai/limits.h"
#include "ai/limits_sync.h"
#include "ai/migrate.h"
#include "ai/stats.h"
#include "ai/usage.h"
#include "admin.h"
#include "relay.h"
#include "auth.h"
#include "authquery.h"
#include "dnscache.h"
#include "cancel.h"
#include "hba.h"
#include "ident.h"
#include "client.h"
#include "config.h"
#include "connio.h"
#include "janitor.h"
#include "listener.h"
#include "log.h"
#include "metrics.h"
#include "notify.h"
#include "pool.h"
#include "scram.h"
#include "sluice.h"
#include "util.h"
#include "varcache.h"
#include "workers.h"

struct options {
	bool daemonize;
	bool quiet;
	bool migrate;
	bool check_config;
	int verbose;
	const char *user;
	const char *config;
};

static void usage(FILE *out)
{
	fprintf(out,
	        "pgsluice is a PostgreSQL connection pooler with AI middleware.\n\n"
	        "Usage:\n  pgsluice [OPTION]... CONFIG_FILE\n\n"
	        "Options:\n"
	        "  -d, --daemon      run in the background (needs pidfile, and logfile or syslog)\n"
	        "  -v, --verbose     increase verbosity (repeatable)\n"
	        "  -q, --quiet       do not log to stderr\n"
	        "  -u, --user=USER   run as this operating system user\n"
	        "      --migrate     apply the sluice schema migrations to ai_database and exit\n"
	        "  -t, --check-config  check the configuration file (and the files it names),\n"
	        "                    print every warning and error, and exit: 0 valid, 1 not\n"
	        "  -V, --version     print the version and exit\n"
	        "  -h, --help        print this help and exit\n");
}

static int parse_args(int argc, char **argv, struct options *o)
{
	static const struct option longopts[] = {
		{ "daemon", no_argument, NULL, 'd' }, { "verbose", no_argument, NULL, 'v' },
		{ "quiet", no_argument, NULL, 'q' }, { "user", required_argument, NULL, 'u' },
		{ "version", no_argument, NULL, 'V' }, { "help", no_argument, NULL, 'h' },
		{ "migrate", no_argument, NULL, 'M' }, { "check-config", no_argument, NULL, 't' },
		{ NULL, 0, NULL, 0 },
	};
	int ch;
	memset(o, 0, sizeof(*o));
	while ((ch = getopt_long(argc, argv, "dvqu:Vht", longopts, NULL)) != -1) {
		switch (ch) {
		case 'd': o->daemonize = true; break;
		case 'v': o->verbose++; break;
		case 'q': o->quiet = true; break;
		case 'u': o->user = optarg; break;
		case 'M': o->migrate = true; break;
		case 't': o->check_config = true; break;
		case 'V': printf("pgsluice %s\n", PACKAGE_VERSION); exit(0);
		case 'h': usage(stdout); exit(0);
		default: usage(stderr); return -1;
		}
	}
	if (optind != argc - 1) {
		fprintf(stderr, "pgsluice: exactly one configuration file is required\n");
		usage(stderr);
		return -1;
	}
	o->config = argv[optind];
	return 0;
}

static bool apply_logging(const struct sluice_config *cfg, const struct options *o)
{
	int verbose = cfg->verbose > o->verbose ? cfg->verbose : o->verbose;
	return log_setup(cfg->logfile, cfg->syslog, cfg->syslog_ident, cfg->syslog_facility, verbose,
	                 o->quiet || o->daemonize);
}

/* Load auth_file; NULL when unset. *ok is false (err says why) when it is set but unreadable. */
static struct userlist *load_userlist(const struct sluice_config *cfg, bool *ok, char *err, size_t errlen)
{
	*ok = true;
	if (!cfg->auth_file[0])
		return NULL;
	char why[1024];
	struct userlist *ul = userlist_load(cfg->auth_file, why, sizeof(why));
	if (!ul) {
		*ok = false;
		snprintf(err, errlen, "could not load auth_file: %s", why);
	}
	return ul;
}

/* Load auth_hba_file; NULL when unset. *ok is false (err says why) when it is set but bad. */
static struct hba *load_hba(const struct sluice_config *cfg, bool *ok, char *err, size_t errlen)
{
	*ok = true;
	if (!cfg->auth_hba_file[0])
		return NULL;
	char why[1024];
	struct hba *hba = hba_load(cfg->auth_hba_file, why, sizeof(why));
	if (!hba) {
		*ok = false;
		snprintf(err, errlen, "could not load auth_hba_file: %s", why);
	}
	return hba;
}

/* Load auth_ident_file; NULL when unset. *ok is false (err says why) when it is set but bad. */
static struct ident_map *load_ident(const struct sluice_config *cfg, bool *ok, char *err, size_t errlen)
{
	*ok = true;
	if (!cfg->auth_ident_file[0])
		return NULL;
	struct ident_map *im = ident_load(cfg->auth_ident_file, err, errlen);
	if (!im)
		*ok = false;
	return im;
}

static bool check_pidfile(const char *path)
{
	FILE *f = fopen(path, "r");
	if (!f)
		return true;
	long pid = 0;
	bool running = fscanf(f, "%ld", &pid) == 1 && pid > 0 && kill((pid_t)pid, 0) == 0;
	fclose(f);
	if (running) {
		log_error("pidfile \"%s\" names running process %ld: is pgsluice already running?", path, pid);
		return false;
	}
	unlink(path);
	return true;
}

/* The pidfile this process wrote; empty until then. Every exit path removes it. */
static char written_pidfile[4096];

static bool write_pidfile(const char *path)
{
	int fd = open(path, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0644);
	if (fd < 0) {
		log_error("could not create pidfile \"%s\": %s", path, strerror(errno));
		return false;
	}
	str_copy(written_pidfile, path, sizeof(written_pidfile));
	char buf[32];
	int n = snprintf(buf, sizeof(buf), "%d\n", (int)getpid());
	bool ok = write(fd, buf, (size_t)n) == n;
	close(fd);
	if (!ok)
		log_error("could not write pidfile \"%s\": %s", path, strerror(errno));
	return ok;
}

static void remove_pidfile(void)
{
	if (written_pidfile[0] && unlink(written_pidfile) != 0 && errno != ENOENT)
		log_warning("could not remove pidfile \"%s\": %s", written_pidfile, strerror(errno));
	written_pidfile[0] = '\0';
}

static bool daemonize(void)
{
	pid_t pid = fork();
	if (pid < 0)
		return false;
	if (pid > 0)
		_exit(0);
	if (setsid() < 0)
		return false;
	pid = fork();   /* never reacquire a controlling terminal */
	if (pid < 0)
		return false;
	if (pid > 0)
		_exit(0);
	int fd = open("/dev/null", O_RDWR);
	if (fd >= 0) {
		dup2(fd, 0);
		dup2(fd, 1);
		dup2(fd, 2);
		if (fd > 2)
			close(fd);
	}
	return true;
}

static bool drop_privileges(const char *user)
{
	if (!user || !*user)
		return true;
	struct passwd *pw = getpwnam(user);
	if (!pw) {
		log_error("user \"%s\" does not exist", user);
		return false;
	}
	if (getuid() == pw->pw_uid)
		return true;
	if (setgroups(0, NULL) != 0 || setgid(pw->pw_gid) != 0 || setuid(pw->pw_uid) != 0) {
		log_error("could not switch to user \"%s\": %s", user, strerror(errno));
		return false;
	}
	return true;
}

static const struct options *g_opts;

/* conffile (PgBouncer): a file named by the configuration or SET is what the next RELOAD reads. */
static void follow_conffile(struct sluice *sl)
{
	const char *want = sl->cfg->conffile;
	if (!*want || (sl->config_path && strcmp(want, sl->config_path) == 0))
		return;
	char *copy = strdup(want);
	if (!copy) {
		log_error("out of memory setting conffile");
		return;
	}
	free(sl->config_path);
	sl->config_path = copy;
	log_info("conffile: RELOAD and SIGHUP read %s from now on", copy);
}

/* Apply the reloadable settings of sl->cfg to the running process (RELOAD, admin SET). */
static void apply_settings(struct sluice *sl)
{
	follow_conffile(sl);
	if (!apply_logging(sl->cfg, g_opts))
		log_error("could not open logfile \"%s\": %s", sl->cfg->logfile, strerror(errno));
	varcache_set_tracked(sl->cfg->track_extra_parameters);
	listener_apply_settings(sl);
	pool_reconfigure(sl);
	limits_sync_reconfigure(sl);
	usage_reconfigure(sl);
	cache_configure(sl->cache, (size_t)sl->cfg->cache_max_memory, (size_t)sl->cfg->cache_max_entry_size);
}

#define FIELD(name) offsetof(struct sluice_config, name)
#define N_FIELDS(a) (sizeof(a) / sizeof((a)[0]))

/* The keys of the server leg's TLS: a change retires the server connections made with the old ones. */
static const size_t server_tls_fields[] = {
	FIELD(server_tls_sslmode), FIELD(server_tls_key_file), FIELD(server_tls_cert_file),
	FIELD(server_tls_ca_file), FIELD(server_tls_protocols), FIELD(server_tls_ciphers),
	FIELD(server_tls13_ciphers),
};

/* What auth_query lookups depend on: a change drops their connections and cache. */
static const size_t auth_lookup_fields[] = {
	FIELD(auth_user), FIELD(auth_query), FIELD(auth_dbname), FIELD(auth_file),
};

/* The string keys at fields of cfg as one text, to compare before and after a change; NULL on OOM. */
static char *settings_text(const struct sluice_config *cfg, const size_t *fields, size_t n)
{
	size_t len = 1;
	for (size_t i = 0; i < n; i++)
		len += strlen(*(char *const *)((const char *)cfg + fields[i])) + 1;
	char *text = malloc(len);
	if (!text)
		return NULL;
	text[0] = '\0';
	for (size_t i = 0; i < n; i++) {
		strcat(text, *(char *const *)((const char *)cfg + fields[i]));
		strcat(text, "\n");
	}
	return text;
}

/* The settings a change of which needs more than apply_settings(); NULL members on OOM. */
struct watched_settings {
	char *server_tls;
	char *auth_lookup;
};

static struct watched_settings watch_settings(const struct sluice_config *cfg)
{
	return (struct watched_settings){
		settings_text(cfg, server_tls_fields, N_FIELDS(server_tls_fields)),
		settings_text(cfg, auth_lookup_fields, N_FIELDS(auth_lookup_fields)),
	};
}

/* True unless both texts exist and are equal (out of memory counts as a change). */
static bool text_changed(const char *before, const char *after)
{
	return !before || !after || strcmp(before, after) != 0;
}

/*
 * After sl->cfg changed from before: server connections made with other
 * server_tls_* settings go (PgBouncer reconnects on any TLS change): idle
 * ones now, the others when released, so no client is served over a leg the
 * new settings would not allow; auth_query lookups start afresh; kept DNS
 * answers are dropped. Frees before.
 */
static void apply_watched_changes(struct sluice *sl, struct watched_settings *before)
{
	struct watched_settings after = watch_settings(sl->cfg);
	if (text_changed(before->server_tls, after.server_tls)) {
		log_info("server_tls settings changed: server connections are closed when idle");
		struct pool *p;
		TAILQ_FOREACH(p, &sl->pools, entry)
			pool_reconnect(p, "database configuration changed");
	}
	if (text_changed(before->auth_lookup, after.auth_lookup))
		authquery_reset(sl);
	/* host names are looked up anew: an operator who reloads after a DNS change sees it at once */
	dnscache_free(sl);
	free(before->server_tls);
	free(before->auth_lookup);
	free(after.server_tls);
	free(after.auth_lookup);
}

/*
 * Load auth_file, auth_hba_file and the TLS contexts cfg names and put them
 * in place of sl's (new connections use them; open ones keep theirs). On
 * failure sl is unchanged and err says which file and why.
 */
static bool swap_in_files(struct sluice *sl, const struct sluice_config *cfg, char *err, size_t errlen)
{
	bool ok, hba_ok = true, ident_ok = true;
	struct tls_config tls;
	struct userlist *ul = load_userlist(cfg, &ok, err, errlen);
	struct hba *hba = ok ? load_hba(cfg, &hba_ok, err, errlen) : NULL;
	struct ident_map *im = ok && hba_ok ? load_ident(cfg, &ident_ok, err, errlen) : NULL;
	if (!ok || !hba_ok || !ident_ok || !tls_load(cfg, &tls, err, errlen)) {
		userlist_free(ul);
		hba_free(hba);
		ident_free(im);
		return false;
	}
	tls_free(&sl->tls);
	sl->tls = tls;
	hba_free(sl->hba);
	sl->hba = hba;
	ident_free(sl->ident);
	sl->ident = im;
	userlist_free(sl->userlist);
	sl->userlist = ul;
	return true;
}

/* RELOAD and SIGHUP: false with err ("file:line: ...") when the old configuration is kept. */
static bool reload(struct sluice *sl, char *err, size_t errlen)
{
	log_info("reloading configuration from %s", sl->config_path);
	struct sluice_config *next = config_load(sl->config_path, err, errlen);
	if (!next) {
		log_error("reload failed, keeping the old configuration: %s", err);
		return false;
	}
	config_carry_over(sl->cfg, next);
	if (!swap_in_files(sl, next, err, errlen)) {
		log_error("reload failed, keeping the old configuration: %s", err);
		config_free(next);
		return false;
	}
	struct watched_settings before = watch_settings(sl->cfg);
	/* The new [limits] lines, keeping the sluice.limits overrides and the counts. */
	if (!next->limit_rules)
		next->limit_rules = limits_rules_new();
	if (next->limit_rules) {
		limits_copy_overrides(next->limit_rules, limits_get_rules(sl->limits));
		limits_set_rules(sl->limits, next->limit_rules);
		next->limit_rules = NULL;
	}
	config_free(sl->cfg);
	sl->cfg = next;
	apply_settings(sl);
	apply_watched_changes(sl, &before);
	return true;
}

/* Keys whose files or contexts main.c loads: a SET of one loads them again. */
static bool names_a_file(const char *key)
{
	return strcmp(key, "auth_file") == 0 || strcmp(key, "auth_hba_file") == 0 ||
	       strcmp(key, "auth_ident_file") == 0 ||
	       strncmp(key, "client_tls_", 11) == 0 || strncmp(key, "server_tls_", 11) == 0;
}

/*
 * Admin SET: change one key and apply it as a reload would; a value whose
 * files or TLS contexts cannot be loaded is refused and the old one kept.
 */
static bool set_setting(struct sluice *sl, const char *name, const char *value, char *err, size_t errlen)
{
	const struct config_key *key = config_find_key(name);
	if (!key) {
		snprintf(err, errlen, "unknown configuration key \"%s\"", name);
		return false;
	}
	char *old_value = malloc(CONFIG_MAX_VALUE_BYTES);
	if (!old_value) {
		snprintf(err, errlen, "out of memory");
		return false;
	}
	struct watched_settings before = watch_settings(sl->cfg);
	config_format_value(sl->cfg, key, old_value, CONFIG_MAX_VALUE_BYTES);
	bool ok = config_set(sl->cfg, name, value, err, errlen);
	if (ok && names_a_file(key->name) && !swap_in_files(sl, sl->cfg, err, errlen)) {
		char ignored[256];
		config_set(sl->cfg, name, old_value, ignored, sizeof(ignored));
		ok = false;
	}
	if (ok)
		apply_settings(sl);
	apply_watched_changes(sl, &before);   /* unchanged after a refused value: nothing happens */
	free(old_value);
	return ok;
}

static void stop_loop(struct sluice *sl)
{
	event_base_loopbreak(sl->base);
}

/* The wait is over (or was never asked for): store usage records for up to 5 s, then leave the loop. */
static void finish_shutdown(struct sluice *sl)
{
	sl->shutdown_mode = SHUTDOWN_NOW;
	if (sl->shutdown_timer) {
		event_free(sl->shutdown_timer);
		sl->shutdown_timer = NULL;
	}
	listener_stop(sl);
	if (!usage_drain(sl, 5000, stop_loop))
		event_base_loopbreak(sl->base);
}

/* Pooled clients still connected, logging in or logged in (the console's sessions do not count). */
static int clients_connected(struct sluice *sl)
{
	int n = 0;
	struct pool *p;
	struct client *c;
	TAILQ_FOREACH(p, &sl->pools, entry)
		n += p->n_clients;
	TAILQ_FOREACH(c, &sl->login_clients, entry)
		n++;
	return n;
}

/* Servers a client holds (or that are being reset or canceled after one). */
static int servers_in_use(struct sluice *sl)
{
	int n = 0;
	struct pool *p;
	TAILQ_FOREACH(p, &sl->pools, entry)
		n += p->n_active;
	return n;
}

/* A client was sent a FATAL (57P01, 57P03) that is not written yet: leaving the loop now would lose it. */
static bool fatal_unwritten(struct sluice *sl)
{
	struct client *c;
	TAILQ_FOREACH(c, &sl->closing_clients, entry)
		if (connio_out_len(&c->io) > 0)
			return true;
	return false;
}

/* Every 100 ms while a shutdown waits, as PgBouncer's janitor: has the wait ended? */
static void shutdown_tick(evutil_socket_t fd, short what, void *arg)
{
	struct sluice *sl = arg;
	(void)fd;
	(void)what;
	if (sl->shutdown_mode == SHUTDOWN_WAIT_FOR_SERVERS) {
		pool_close_released_clients(sl);
		if (servers_in_use(sl) == 0 && !fatal_unwritten(sl)) {
			log_info("server connections dropped, exiting");
			finish_shutdown(sl);
		}
	} else if (sl->shutdown_mode == SHUTDOWN_WAIT_FOR_CLIENTS && clients_connected(sl) == 0 &&
	           !fatal_unwritten(sl)) {
		log_info("client connections dropped, exiting");
		finish_shutdown(sl);
	}
}

/*
 * SIGINT, SIGTERM and the admin console's SHUTDOWN (PgBouncer >= 1.23):
 * WAIT_FOR_SERVERS and WAIT_FOR_CLIENTS stop listening on TCP and wait;
 * SHUTDOWN_NOW, or any request while one waits, stops waiting.
 */
static void begin_shutdown(struct sluice *sl, enum sluice_shutdown mode)
{
	if (sl->shutting_down) {
		if (sl->shutdown_mode == SHUTDOWN_NOW)
			event_base_loopbreak(sl->base);   /* already storing usage records: stop now */
		else
			finish_shutdown(sl);
		return;
	}
	sl->shutting_down = true;
	sl->shutdown_mode = mode;
	notify_stopping();
	if (sl->suspended)   /* nothing moves while suspended: as PgBouncer, go down now */
		log_info("suspend was in progress, going down immediately");
	if (mode == SHUTDOWN_NOW || sl->suspended) {
		finish_shutdown(sl);
		return;
	}
	listener_stop_tcp(sl);
	if (mode == SHUTDOWN_WAIT_FOR_SERVERS) {
		struct pool *p;
		TAILQ_FOREACH(p, &sl->pools, entry)
			pool_close_idle(p, "server shutting down");
	}
	static const struct timeval every = { 0, 100000 };
	sl->shutdown_timer = event_new(sl->base, -1, EV_PERSIST, shutdown_tick, sl);
	if (!sl->shutdown_timer || event_add(sl->shutdown_timer, &every) != 0) {
		log_warning("could not wait for the shutdown: out of memory");
		finish_shutdown(sl);
		return;
	}
	shutdown_tick(-1, 0, sl);
}

static void signal_cb(evutil_socket_t sig, short what, void *arg)
{
	struct sluice *sl = arg;
	(void)what;
	if (sig == SIGHUP) {
		char err[1024];
		log_info("got SIGHUP");
		notify_reloading();
		reload(sl, err, sizeof(err));   /* a failure is logged */
		notify_ready();
		return;
	}
	if (sig == SIGUSR2 && sl->shutting_down) {   /* PgBouncer's log line */
		log_info("got SIGUSR2 while shutting down, ignoring");
		return;
	}
	if (sig == SIGUSR1 || sig == SIGUSR2) {   /* PAUSE / RESUME, as PgBouncer */
		char err[128];
		log_info("got SIG%s", sig == SIGUSR1 ? "USR1, pausing" : "USR2, resuming");
		if (!(sig == SIGUSR1 ? admin_pause(sl, err, sizeof(err)) : admin_resume(sl, err, sizeof(err))))
			log_warning("%s", err);
		return;
	}
	if (sig == SIGQUIT) {
		/* PgBouncer's immediate shutdown: no wait for usage records to be
		 * stored, as they stay in the journal on disk for the next start. */
		log_info("got SIGQUIT, immediate shutdown");
		notify_stopping();
		sl->shutting_down = true;
		sl->shutdown_mode = SHUTDOWN_NOW;
		event_base_loopbreak(sl->base);
		return;
	}
	const char *name = sig == SIGINT ? "SIGINT" : "SIGTERM";
	if (sl->shutting_down)
		log_info("got %s while shutting down, fast exit", name);
	else if (sig == SIGINT)
		log_info("got SIGINT, shutting down, waiting for all servers connections to be released");
	else
		log_info("got SIGTERM, shutting down, waiting for all clients disconnect");
	begin_shutdown(sl, sig == SIGINT ? SHUTDOWN_WAIT_FOR_SERVERS : SHUTDOWN_WAIT_FOR_CLIENTS);
}

static bool init_sluice(struct sluice *sl, struct sluice_config *cfg, const char *path)
{
	memset(sl, 0, sizeof(*sl));
	sl->cfg = cfg;
	sl->config_path = strdup(path);
	follow_conffile(sl);
	/* Unique among instances that share a database: host name and port. */
	char host[64] = "localhost";
	gethostname(host, sizeof(host) - 1);
	snprintf(sl->instance, sizeof(sl->instance), "%s:%d", host, cfg->listen_port);
	sl->limits = limits_new(cfg->limit_rules, 0);
	cfg->limit_rules = NULL;
	sl->cache = cache_new((size_t)cfg->cache_max_memory, (size_t)cfg->cache_max_entry_size);
	sl->ai_stats = ai_stats_new();
	TAILQ_INIT(&sl->login_clients);
	TAILQ_INIT(&sl->closing_clients);
	TAILQ_INIT(&sl->pools);
	TAILQ_INIT(&sl->admin_clients);
	sl->start_time = wall_usec();
	sl->hooks.reload = reload;
	sl->hooks.shutdown = begin_shutdown;
	sl->hooks.set = set_setting;
	/* Users not in auth_file go through a full SCRAM exchange against a
	 * secret nobody knows, so the reply does not tell whether they exist. */
	uint8_t salt[16];
	char pw[33];
	RAND_bytes(salt, sizeof(salt));
	RAND_bytes((unsigned char *)pw, sizeof(pw) - 1);
	for (size_t i = 0; i < sizeof(pw) - 1; i++)
		pw[i] = (char)('a' + ((unsigned char)pw[i] % 26));
	pw[sizeof(pw) - 1] = '\0';
	return sl->config_path && sl->limits && sl->cache && sl->ai_stats && scram_secret_from_password(pw, salt, sizeof(salt), SCRAM_DEFAULT_ITERATIONS,
	                                                     &sl->mock_secret);
}

/* Everything run() started, stopped and freed: the same on error as on exit. */
static void teardown(struct sluice *sl, struct event **sigs, int n_sigs)
{
	if (sl->shutdown_timer)
		event_free(sl->shutdown_timer);
	sl->shutdown_timer = NULL;
	listener_stop(sl);
	janitor_stop();
	limits_sync_stop(sl);
	usage_stop(sl);
	pool_free_all(sl);
	cancel_free_all(sl);
	admin_stop(sl);
	metrics_stop(sl);
	while (!TAILQ_EMPTY(&sl->login_clients))
		client_close(TAILQ_FIRST(&sl->login_clients), "pgsluice shutting down");
	while (!TAILQ_EMPTY(&sl->closing_clients))
		client_close(TAILQ_FIRST(&sl->closing_clients), "pgsluice shutting down");
	for (int i = 0; i < n_sigs; i++)
		if (sigs[i])
			event_free(sigs[i]);
	prepared_registry_free(&sl->prepared);
	workers_free(sl->workers);   /* after the clients and servers that had jobs */
	sl->workers = NULL;
	client_free_derived_secrets(sl);
	authquery_free(sl);
	dnscache_free(sl);
	limits_free(sl->limits);
	sl->limits = NULL;
	cache_free(sl->cache);    /* after the clients and servers that held its entries */
	sl->cache = NULL;
	ai_stats_free(sl->ai_stats);
	sl->ai_stats = NULL;
	if (sl->dns)
		evdns_base_free(sl->dns, 0);
	connio_global_free();
	event_base_free(sl->base);
}

/*
 * Raise the soft RLIMIT_NOFILE to the hard limit, as PgBouncer does at
 * start, and warn when the configured clients and servers cannot fit: at
 * the limit accept() fails with EMFILE and the listeners back off
 * (listener.c). The server count is one pool per [databases] entry; pools
 * of several users or of the "*" entry need more.
 */
static void raise_fd_limit(const struct sluice_config *cfg)
{
	struct rlimit rl;
	if (getrlimit(RLIMIT_NOFILE, &rl) != 0) {
		log_warning("getrlimit(RLIMIT_NOFILE) failed: %s", strerror(errno));
		return;
	}
	if (rl.rlim_cur < rl.rlim_max) {
		rlim_t was = rl.rlim_cur;
		rl.rlim_cur = rl.rlim_max;
		if (setrlimit(RLIMIT_NOFILE, &rl) != 0) {
			log_warning("could not raise the file descriptor limit from %llu to %llu: %s",
			            (unsigned long long)was, (unsigned long long)rl.rlim_max, strerror(errno));
			rl.rlim_cur = was;
		}
	}
	long long servers = 0;
	for (size_t i = 0; i < cfg->n_databases; i++) {
		const struct db_config *db = &cfg->databases[i];
		servers += (db->pool_size >= 0 ? db->pool_size : cfg->default_pool_size) +
		           (db->reserve_pool >= 0 ? db->reserve_pool : cfg->reserve_pool_size);
	}
	/* listeners, log file, journal, side channels, cancel connections */
	long long need = (long long)cfg->max_client_conn + cfg->max_login_clients + servers + 20;
	if (rl.rlim_cur != RLIM_INFINITY && (unsigned long long)need > (unsigned long long)rl.rlim_cur)
		log_warning("the file descriptor limit (%llu) is below what max_client_conn (%d), "
		            "max_login_clients (%d) and the pools (%lld servers) may need (%lld): "
		            "raise it (ulimit -n, LimitNOFILE=) or lower them",
		            (unsigned long long)rl.rlim_cur, cfg->max_client_conn, cfg->max_login_clients,
		            servers, need);
}

#define N_SIGNALS 6

/* Start every part in order; false after logging why. */
static bool start_parts(struct sluice *sl, const struct options *o, struct event **sigs)
{
	char err[1024];
	static const int signums[N_SIGNALS] = { SIGHUP, SIGINT, SIGTERM, SIGQUIT, SIGUSR1, SIGUSR2 };
	/* Before the listeners: from the moment the port accepts, a reload or stop must not
	 * meet the default action (SIGHUP would kill the process while the limits' preload
	 * still blocks). libevent holds a signal until the loop runs, after every part started. */
	for (int i = 0; i < N_SIGNALS; i++) {
		sigs[i] = evsignal_new(sl->base, signums[i], signal_cb, sl);
		if (!sigs[i] || event_add(sigs[i], NULL) != 0) {
			log_error("could not install signal handlers");
			return false;
		}
	}
	client_start(sl);  /* before any client connects */
	pool_start(sl);    /* before any server connects */
	relay_start(sl);
	if (!listener_start(sl, err, sizeof(err))) {
		log_error("%s", err);
		return false;
	}
	/* the journal is opened as the user pgsluice runs as, so it can rotate */
	if (!drop_privileges(o->user ? o->user : sl->cfg->user) || !janitor_start(sl) || !limits_sync_start(sl) ||
	    !usage_start(sl))
		return false;
	if (!admin_start(sl) || !metrics_start(sl, err, sizeof(err))) {
		log_error("%s", sl->admin ? err : "out of memory");
		return false;
	}
	return true;
}

static bool start_resolver(struct sluice *sl);

static int run(struct sluice *sl, const struct options *o)
{
	struct event *sigs[N_SIGNALS] = { NULL };
	sl->base = event_base_new();
	if (sl->base)
		sl->workers = workers_new(sl->base);
	if (!sl->base || !connio_global_init(sl->base) || !sl->workers) {
		log_error("could not create the event loop");
		return 1;
	}
	if (!start_resolver(sl))
		return 1;
	int rc = 1;
	raise_fd_limit(sl->cfg);
	if (start_parts(sl, o, sigs)) {
		log_info("pgsluice %s started, process %d", PACKAGE_VERSION, (int)getpid());
		notify_ready();
		event_base_dispatch(sl->base);
		rc = 0;
	}
	teardown(sl, sigs, N_SIGNALS);
	return rc;
}

/*
 * The resolver for server host names: the system's resolv.conf and hosts
 * file, or resolv_conf's (PgBouncer's key: other name servers for pgsluice
 * alone). False, logged, when resolv_conf cannot be read.
 */
static bool start_resolver(struct sluice *sl)
{
	const char *path = sl->cfg->resolv_conf;
	if (*path) {
		sl->dns = evdns_base_new(sl->base, 0);
		int rc = sl->dns ? evdns_base_resolv_conf_parse(sl->dns, DNS_OPTIONS_ALL, path) : -1;
		if (rc != 0) {
			/* evdns: 1 = cannot open, 2 = cannot stat, 3 = too large, 4 = out of memory,
			 * 5 = short read, 6 = no name servers in it */
			log_error("could not use resolv_conf \"%s\": %s", path,
			          rc == 1 || rc == 2 ? strerror(errno) : rc == 6 ? "it names no name server" :
			          "it could not be read");
			return false;
		}
		return true;
	}
	sl->dns = evdns_base_new(sl->base, EVDNS_BASE_INITIALIZE_NAMESERVERS);
	if (!sl->dns)
		sl->dns = evdns_base_new(sl->base, 0);   /* no resolv.conf: numeric hosts still work */
	return true;
}

/* What main() loaded before the loop; safe on a partly filled sl. */
static void free_loaded(struct sluice *sl)
{
	userlist_free(sl->userlist);
	hba_free(sl->hba);
	ident_free(sl->ident);
	free(sl->settings_memo);
	tls_free(&sl->tls);
	limits_free(sl->limits);
	cache_free(sl->cache);
	ai_stats_free(sl->ai_stats);
	config_free(sl->cfg);
	free(sl->config_path);
}

/* Load auth_file, auth_hba_file and TLS; false after logging why. */
static bool load_auth(struct sluice *sl)
{
	char err[1024];
	bool ok;
	sl->userlist = load_userlist(sl->cfg, &ok, err, sizeof(err));
	if (ok)
		sl->hba = load_hba(sl->cfg, &ok, err, sizeof(err));
	if (ok)
		sl->ident = load_ident(sl->cfg, &ok, err, sizeof(err));
	if (ok && !tls_load(sl->cfg, &sl->tls, err, sizeof(err)))
		ok = false;
	if (!ok)
		log_error("%s", err);
	return ok;
}

/* At start: say what to run when the sluice schema is behind (a few seconds at most). */
static void check_schema(const struct sluice *sl)
{
	char dir[4096], msg[1024];
	int st = migrate_check(sl->cfg, sl->userlist, migrate_sqldir(dir, sizeof(dir)), msg, sizeof(msg));
	if (st == MIGRATE_CURRENT)
		log_info("%s", msg);
	else
		log_warning("%s", msg);
}

static void report_config_error(const char *msg, void *arg)
{
	(*(int *)arg)++;
	log_error("%s", msg);
}

/*
 * --check-config: load path and the files it names (auth_file,
 * auth_hba_file, TLS keys and certificates) as a start would, reporting every
 * warning and error, and start nothing: no socket, no PostgreSQL connection,
 * no journal directory. Returns the exit status: 0 valid, 1 not.
 */
static int check_config(const char *path)
{
	char err[1024];
	int n_errors = 0;
	struct sluice_config *cfg = config_load_all(path, err, sizeof(err), report_config_error, &n_errors);
	if (cfg) {
		bool ok;
		struct tls_config tls;
		userlist_free(load_userlist(cfg, &ok, err, sizeof(err)));
		if (!ok)
			report_config_error(err, &n_errors);
		hba_free(load_hba(cfg, &ok, err, sizeof(err)));
		if (!ok)
			report_config_error(err, &n_errors);
		if (tls_load(cfg, &tls, err, sizeof(err)))
			tls_free(&tls);
		else
			report_config_error(err, &n_errors);
		config_free(cfg);
	} else if (n_errors == 0) {   /* the file could not be opened: not reported yet */
		report_config_error(err, &n_errors);
	}
	if (n_errors == 0) {
		printf("pgsluice: configuration file \"%s\" is valid\n", path);
		return 0;
	}
	fprintf(stderr, "pgsluice: configuration file \"%s\" has %d error%s\n", path, n_errors,
	        n_errors == 1 ? "" : "s");
	return 1;
}

int main(int argc, char **argv)
{
	struct options o;
	struct sluice sl;
	char err[1024];
	if (parse_args(argc, argv, &o) != 0)
		return 2;
	g_opts = &o;
	/* -q and -d: nothing on stderr, the configuration's warnings included (PgBouncer's -q) */
	bool quiet = o.quiet || o.daemonize;
	log_setup(NULL, false, NULL, NULL, o.verbose, quiet);
	if (o.check_config)
		return check_config(o.config);
	struct sluice_config *cfg = config_load(o.config, err, sizeof(err));
	if (!cfg) {
		if (quiet)    /* a failed start still says why, as PgBouncer's fatal() */
			log_setup(NULL, false, NULL, NULL, o.verbose, false);
		log_error("%s", err);
		return 1;
	}
	/* PgBouncer: -d needs pidfile, and logfile or syslog */
	bool no_log = o.daemonize && !cfg->logfile[0] && !cfg->syslog;
	if (!apply_logging(cfg, &o) || no_log || (o.daemonize && !cfg->pidfile[0])) {
		log_setup(NULL, false, NULL, NULL, o.verbose, false);
		log_error(o.daemonize && (no_log || !cfg->pidfile[0])
		          ? "-d needs pidfile, and logfile or syslog, in the configuration"
		          : "could not open the logfile");
		config_free(cfg);
		return 1;
	}
	if (quiet && (cfg->logfile[0] || cfg->syslog)) {
		/* the warnings of the first load went nowhere: load once more (no side effects) into the log */
		struct sluice_config *again = config_load(o.config, err, sizeof(err));
		config_free(again);
	}
	if (!init_sluice(&sl, cfg, o.config) || !load_auth(&sl)) {
		free_loaded(&sl);
		return 1;
	}
	if (o.migrate) {
		char dir[4096];
		int rc = migrate_run(cfg, sl.userlist, migrate_sqldir(dir, sizeof(dir)), stdout);
		free_loaded(&sl);
		return rc;
	}
	varcache_set_tracked(cfg->track_extra_parameters);
	signal(SIGPIPE, SIG_IGN);
	if (cfg->ai_database[0])
		check_schema(&sl);
	int rc = 1;
	if ((!cfg->pidfile[0] || check_pidfile(cfg->pidfile)) && (!o.daemonize || daemonize()) &&
	    (!cfg->pidfile[0] || write_pidfile(cfg->pidfile))) {
		rc = run(&sl, &o);
		remove_pidfile();
		log_info("pgsluice stopped");
	} else {
		remove_pidfile();    /* written, but not completely */
		if (o.daemonize)
			log_error("could not start in the background: %s", strerror(errno));
	}
	free_loaded(&sl);
	return rc;
}
