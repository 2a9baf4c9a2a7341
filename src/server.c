/* SPDX-License-Identifier: PostgreSQL */
/*
 * server.c - see server.h. Login follows protocol-flow.html 55.2.1 from the
 * client's side; replies of a linked server are relayed to its client with
 * only ReadyForQuery and ParameterStatus inspected (docs/design.md).
 */
#include "server.h"

#include <arpa/inet.h>
#include <errno.h>
#include <event2/dns.h>
#include <event2/event.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <openssl/evp.h>
#include <openssl/ssl.h>
#include <sys/un.h>

#include "cacheio.h"
#include "ai/token.h"
#include "auth.h"
#include "dnscache.h"
#include "authquery.h"
#include "cancel.h"
#include "client.h"
#include "client_step.h"
#include "log.h"
#include "notify_relay.h"
#include "pool.h"
#include "proto.h"
#include "settings.h"
#include "sluice.h"
#include "tls.h"
#include "util.h"
#include "workers.h"

/* Set while start_connect runs: a failure reported inside it is returned, not acted on. */
static bool connecting_now;
static char connect_error[256];
static void login_fail(struct server *s, const uint8_t *msg, size_t len, const char *why);
static void login_fail_as(struct server *s, const uint8_t *msg, size_t len, const char *why,
                          const char *close_reason, bool permanent);

static void free_params(char **kv)
{
	for (char **p = kv; p && *p; p++)
		free(*p);
	free(kv);
}

/* Remember an untracked ParameterStatus pair (server_version and the like). */
static void add_other_param(struct server *s, const char *name, const char *value)
{
	size_t n = 0;
	while (s->other_params && s->other_params[n]) {
		if (n % 2 == 0 && strcmp(s->other_params[n], name) == 0) {
			char *v = strdup(value);
			if (v) {
				free(s->other_params[n + 1]);
				s->other_params[n + 1] = v;
			}
			return;
		}
		n++;
	}
	char **kv = realloc(s->other_params, (n + 3) * sizeof(char *));
	if (!kv)
		return;
	kv[n] = strdup(name);
	kv[n + 1] = strdup(value);
	kv[n + 2] = NULL;
	if (!kv[n] || !kv[n + 1]) {
		free(kv[n]);
		free(kv[n + 1]);
		kv[n] = NULL;
	}
	s->other_params = kv;
}

static void send_startup(struct server *s)
{
	struct pool *p = s->pool;
	struct msgbuf m;
	msg_init(&m);
	msg_begin(&m, 0);
	msg_add_int32(&m, (int32_t)PROTO_V3_0);
	msg_add_string(&m, "user");
	msg_add_string(&m, p->user_name);
	msg_add_string(&m, "database");
	msg_add_string(&m, p->dbname);
	/* A replication connection takes no SET (physical replication runs no
	 * SQL): its client's parameters go in the StartupMessage, as PgBouncer's. */
	const struct varcache *own = s->replication && s->client ? &s->client->vars : NULL;
	if (own) {
		msg_add_string(&m, "replication");
		msg_add_string(&m, proto_replication_value(s->replication));
	}
	for (int i = 0; i < varcache_count(); i++) {
		const char *value = own && varcache_get(own, i) ? varcache_get(own, i) : varcache_get(&p->startup_vars, i);
		if (value) {
			msg_add_string(&m, varcache_name(i));
			msg_add_string(&m, value);
		}
	}
	msg_add_byte(&m, 0);
	msg_end(&m);
	msg_flush_to(&m, &s->io.out);
	msg_free(&m);
}

/* "host:port" of the host being tried or used, "unix:port" for a unix socket: PgBouncer's log prefix. */
static const char *server_where(const struct server *s, char *buf, size_t len)
{
	if (s->host_name[0] == '\0' || s->host_name[0] == '/')
		snprintf(buf, len, "unix:%d", s->host_port);
	else
		snprintf(buf, len, "%s:%d", s->host_name, s->host_port);
	return buf;
}

static void connect_failed(struct server *s, const char *why)
{
	if (connecting_now)
		str_copy(connect_error, why, sizeof(connect_error));
	else
		login_fail_as(s, NULL, 0, why, "connect failed", false);   /* PgBouncer's log words */
}

static bool connect_host(struct server *s);

/*
 * The host being tried cannot be reached (no address answers, or its name
 * does not resolve): go on to the next host of the pool's host list, and
 * fail the login with why once each host was tried (PgBouncer 1.25 skips a
 * host that is down the same way).
 */
static void host_failed(struct server *s, const char *why)
{
	struct pool *p = s->pool;
	free(s->addrs);
	s->addrs = NULL;
	s->addr_next = 0;
	if (--s->hosts_left <= 0) {
		connect_failed(s, why);
		return;
	}
	char where[300];
	/* PgBouncer's words first, so its log patterns match; then which host and why */
	const char *what = strncmp(why, "could not resolve host", 22) == 0 ? "server DNS lookup failed" : "connect failed";
	log_warning("S-%llu: %s/%s@%s closing because: %s: host \"%s\" port %d failed (%s), "
	            "trying the next host", (unsigned long long)s->id, p->db_name, p->user_name,
	            server_where(s, where, sizeof(where)), what, s->host_name, s->host_port, why);
	s->host_index = (s->host_index + 1) % server_host_count(p);
	connect_host(s);
}

/*
 * Host lists (PgBouncer 1.25's host=a,b,c and port=p1,p2,p3): the i-th
 * (0-based) host of p's entry: its name into buf (len bytes; "" for
 * unix_socket_dir) and its port into *port; false when i is out of range or
 * the name does not fit. first_host: with load_balance_hosts = round-robin
 * the one after the previous login's, with disable the first; the login
 * moves on through the list from there when a host is down.
 */

/* The i-th comma-separated item of list into buf; false when there is none or it does not fit. */
static bool list_item(const char *list, int i, char *buf, size_t len)
{
	for (; i > 0; i--) {
		list = strchr(list, ',');
		if (!list)
			return false;
		list++;
	}
	size_t n = strcspn(list, ",");
	if (n >= len)
		return false;
	memcpy(buf, list, n);
	buf[n] = '\0';
	return true;
}

int server_host_count(const struct pool *p)
{
	int n = 1;
	for (const char *h = p->host; h && (h = strchr(h, ',')) != NULL; h++)
		n++;
	return n;
}

static bool host_at(const struct pool *p, int i, char *buf, size_t len, int *port)
{
	if (i < 0 || i >= server_host_count(p))
		return false;
	*port = p->port;
	if (p->port_list) {
		char text[16];
		if (!list_item(p->port_list, i, text, sizeof(text)))
			return false;
		*port = atoi(text);    /* validated when the config was loaded */
	}
	if (!p->host) {
		if (len == 0)
			return false;
		buf[0] = '\0';
		return true;
	}
	return list_item(p->host, i, buf, len);
}

static int first_host(struct pool *p)
{
	int n = server_host_count(p);
	if (!p->round_robin || n == 1)
		return 0;
	return (int)(p->host_cursor++ % (unsigned)n);
}

void server_unlist(struct server *s)
{
	struct pool *p = s->pool;
	switch (s->state) {
	case SV_LOGIN: TAILQ_REMOVE(&p->login_servers, s, entry); p->n_login--; break;
	case SV_IDLE: TAILQ_REMOVE(&p->idle_servers, s, entry); p->n_idle--; break;
	case SV_ACTIVE:
	case SV_RESET:
	case SV_BEING_CANCELED: TAILQ_REMOVE(&p->active_servers, s, entry); p->n_active--; break;
	}
}

void server_move(struct server *s, enum server_state new_state)
{
	struct pool *p = s->pool;
	server_unlist(s);
	s->state = new_state;
	switch (s->state) {
	case SV_LOGIN: TAILQ_INSERT_TAIL(&p->login_servers, s, entry); p->n_login++; break;
	/* LIFO idle list: the most recently used server is reused first, so
	 * surplus servers age out by server_idle_timeout; server_round_robin
	 * makes it FIFO so load spreads over every server (PgBouncer). */
	case SV_IDLE:
		if (p->sl->cfg->server_round_robin)
			TAILQ_INSERT_TAIL(&p->idle_servers, s, entry);
		else
			TAILQ_INSERT_HEAD(&p->idle_servers, s, entry);
		p->n_idle++;
		break;
	case SV_ACTIVE:
	case SV_RESET:
	case SV_BEING_CANCELED: TAILQ_INSERT_TAIL(&p->active_servers, s, entry); p->n_active++; break;
	}
}

/* Connect to the next address the host name resolved to; each one is tried before the host counts as down. */
static void try_next_address(struct server *s)
{
	char why[256] = "no address";
	while (s->addrs && s->addr_next < s->addrs->n) {
		int i = s->addr_next++;
		if (connio_connect(&s->io, s->pool->sl->base, (struct sockaddr *)&s->addrs->addr[i], s->addrs->len[i],
		                   s->pool->sl->server_io_ops, s))
			return;
		snprintf(why, sizeof(why), "%s", strerror(errno));
	}
	host_failed(s, why);
}

/* An address written as such: nothing to keep, evdns answers it at once. */
static bool numeric_host(const char *host)
{
	struct in6_addr any;
	return inet_pton(AF_INET, host, &any) == 1 || inet_pton(AF_INET6, host, &any) == 1;
}

/* Connect to the addresses of s->host_name (err 0), or count the host as down (err: EVUTIL_EAI_*). */
static void addresses_known(struct server *s, int err)
{
	if (err || !s->addrs || s->addrs->n == 0) {
		char why[512];
		snprintf(why, sizeof(why), "could not resolve host \"%s\": %s", s->host_name,
		         evutil_gai_strerror(err ? err : EVUTIL_EAI_NONAME));
		host_failed(s, why);
		return;
	}
	s->addr_next = 0;
	try_next_address(s);
}

/* The host name resolved (libevent's evdns, asynchronous): keep the answer, connect to its addresses in turn. */
static void dns_done(int err, struct evutil_addrinfo *res, void *arg)
{
	struct server *s = arg;
	if (err == EVUTIL_EAI_CANCEL)
		return;    /* s is being closed */
	s->dns_req = NULL;
	struct sluice *sl = s->pool->sl;
	if (!err && res && !numeric_host(s->host_name))
		dnscache_store(sl, s->host_name, res, 0);
	else if (err)
		dnscache_store(sl, s->host_name, NULL, err);
	free(s->addrs);
	s->addrs = (!err && res) ? malloc(sizeof(*s->addrs)) : NULL;
	if (s->addrs)
		dnscache_addrs_from(res, s->host_port, s->addrs);
	if (res)
		evutil_freeaddrinfo(res);
	addresses_known(s, err ? err : s->addrs ? 0 : EVUTIL_EAI_MEMORY);
}

/* Start connecting to host s->host_index of the pool's list; false when the attempt is over (failed). */
static bool connect_host(struct server *s)
{
	struct pool *p = s->pool;
	struct sluice *sl = p->sl;
	if (!host_at(p, s->host_index, s->host_name, sizeof(s->host_name), &s->host_port)) {
		/* a reload shortened the list under this login, or a name of 256 bytes or more */
		connect_failed(s, "host of the host list not found, or its name too long");
		return false;
	}
	if (s->host_name[0] == '\0' || s->host_name[0] == '/') {
		struct sockaddr_un un;
		memset(&un, 0, sizeof(un));
		un.sun_family = AF_UNIX;
		const char *dir = s->host_name[0] ? s->host_name : sl->cfg->unix_socket_dir;
		int n = snprintf(un.sun_path, sizeof(un.sun_path), "%.*s/.s.PGSQL.%d",
		                 (int)(sizeof(un.sun_path) - 1), dir, s->host_port);
		if (n >= (int)sizeof(un.sun_path))
			errno = ENAMETOOLONG;
		else if (connio_connect(&s->io, sl->base, (struct sockaddr *)&un, sizeof(un), sl->server_io_ops, s))
			return true;
		char why[256];
		snprintf(why, sizeof(why), "%s", strerror(errno));
		host_failed(s, why);
		return false;
	}
	char port[16];
	struct evutil_addrinfo hints;
	memset(&hints, 0, sizeof(hints));
	hints.ai_family = AF_UNSPEC;
	hints.ai_socktype = SOCK_STREAM;
	hints.ai_protocol = IPPROTO_TCP;
	hints.ai_flags = EVUTIL_AI_ADDRCONFIG;
	snprintf(port, sizeof(port), "%d", s->host_port);
	/* an answer kept for dns_max_ttl (or a missing name for dns_nxdomain_ttl) */
	struct dns_addrs known;
	int known_err = 0;
	if (dnscache_lookup(sl, s->host_name, s->host_port, &known, &known_err)) {
		free(s->addrs);
		s->addrs = known_err ? NULL : malloc(sizeof(*s->addrs));
		if (s->addrs)
			*s->addrs = known;
		addresses_known(s, known_err ? known_err : s->addrs ? 0 : EVUTIL_EAI_MEMORY);
		return true;
	}
	/* the answer may come before this returns (a numeric address, /etc/hosts):
	 * then the request is NULL and dns_done already ran */
	struct evdns_getaddrinfo_request *req = evdns_getaddrinfo(sl->dns, s->host_name, port, &hints, dns_done, s);
	if (req)
		s->dns_req = req;
	return true;
}

/* Start connecting; false with connect_error set when it failed at once. */
static bool start_connect(struct server *s)
{
	struct pool *p = s->pool;
	connect_error[0] = '\0';
	connecting_now = true;
	s->host_index = first_host(p);
	s->hosts_left = server_host_count(p);
	connect_host(s);
	connecting_now = false;
	return connect_error[0] == '\0';
}

bool server_connect_next(struct server *s)
{
	if (s->state != SV_LOGIN)
		return false;
	if (s->dns_req && s->hosts_left > 1) {
		/* the name server does not answer: the next host (dns_done ignores the cancel) */
		evdns_getaddrinfo_cancel(s->dns_req);
		s->dns_req = NULL;
		s->connect_time = now_usec();
		host_failed(s, "could not resolve host: no answer within server_connect_timeout");
		return true;
	}
	if (s->io.state != IO_CONNECTING)
		return false;
	bool more = s->addrs && s->addr_next < s->addrs->n;
	if (!more && s->hosts_left <= 1)
		return false;
	connio_close(&s->io);
	s->connect_time = now_usec();
	if (more)
		try_next_address(s);
	else
		host_failed(s, "no answer within server_connect_timeout");
	return true;
}

/* A new server in SV_LOGIN; c: the replication client it is for, else NULL. */
static struct server *server_new(struct pool *p, struct client *c)
{
	struct server *s = calloc(1, sizeof(*s));
	if (!s)
		return NULL;
	if (c) {
		s->replication = c->replication;
		s->client = c;
		c->server = s;
	}
	s->io.fd = -1;
	s->pool = p;
	s->id = socket_id_next();
	s->tx_status = 'I';
	s->connect_time = s->last_used = now_usec();
	s->state = SV_LOGIN;
	TAILQ_INSERT_TAIL(&p->login_servers, s, entry);
	p->n_login++;
	log_debug("S-%llu: %s/%s launching a %sserver connection", (unsigned long long)s->id, p->db_name,
	          p->user_name, c ? "replication " : "");
	return s;
}

void server_launch_replication(struct pool *p, struct client *c)
{
	struct server *s = server_new(p, c);
	if (!s) {
		client_fatal(c, SQLSTATE_INTERNAL_ERROR, NULL, NULL, "out of memory");
		return;
	}
	if (!start_connect(s)) {
		char err[300];
		snprintf(err, sizeof(err), "%s", connect_error);
		login_fail(s, NULL, 0, err);
	}
}

struct server *server_launch(struct pool *p)
{
	struct server *s = server_new(p, NULL);
	if (!s)
		return NULL;
	if (!start_connect(s)) {
		char err[300];
		snprintf(err, sizeof(err), "could not start connection: %s", connect_error);
		usec_t started = s->connect_time;
		char reason[340];
		snprintf(reason, sizeof(reason), "connect failed: %s", connect_error);   /* PgBouncer's log words */
		server_close(s, reason);
		p->sl->server_events->login_failed(p, started, NULL, 0, err, false);
		return NULL;
	}
	return s;
}

void server_close(struct server *s, const char *reason)
{
	struct pool *p = s->pool;
	struct client *c = s->client;
	char where[300];
	if (p->sl->cfg->log_disconnections || s->state == SV_LOGIN)
		log_info("S-%llu: %s/%s@%s closing because: %s (age=%llds)", (unsigned long long)s->id,
		         p->db_name, p->user_name, server_where(s, where, sizeof(where)), reason,
		         (long long)((now_usec() - s->connect_time) / USEC_PER_SEC));
	bool requeue = c && s->internal == SV_INTERNAL_SETUP;
	if (c) {
		s->client = NULL;
		c->server = NULL;
		/* Lost before the client sent it anything (a server that died while
		 * idle): the client waits for another one instead of failing. */
		if (!requeue)
			client_fatal(c, SQLSTATE_CONNECTION_FAILURE, reason, NULL, "server connection lost");
	}
	server_unlist(s);
	cancel_detach(s);
	if (s->dns_req)
		evdns_getaddrinfo_cancel(s->dns_req);
	free(s->addrs);
	connio_close(&s->io);
	varcache_clear(&s->vars);
	sessvars_clear(&s->settings);
	prepared_server_free(s);
	free_params(s->other_params);
	if (s->scram_job)
		workers_cancel(p->sl->workers, s->scram_job);   /* its result is dropped */
	if (s->scram_started)
		scram_client_free(&s->scram);
	free(s);
	p->sl->server_events->closed(p, requeue ? c : NULL);
}

static bool send_query(struct server *s, const char *sql, enum server_internal why)
{
	struct msgbuf m;
	msg_init(&m);
	msg_begin(&m, PqMsg_Query);
	msg_add_string(&m, sql);
	msg_end(&m);
	bool ok = msg_flush_to(&m, &s->io.out);
	msg_free(&m);
	s->internal = why;
	s->internal_failed = false;
	s->pending_ready++;
	return ok;
}

/* ---- login ---- */

/* The password pgsluice logs in with: the [databases] entry's, else auth_file's. */
static const char *login_password(struct server *s)
{
	struct pool *p = s->pool;
	if (p->password)
		return p->password;
	const struct userlist_entry *e = p->sl->userlist ? userlist_find(p->sl->userlist, p->user_name) : NULL;
	if (e)
		return e->password;
	bool found;
	const char *looked_up = authquery_cached(p->sl, p->db_name, p->user_name, &found);
	if (looked_up && *looked_up)
		return looked_up;
	return p->proved_password;   /* a PAM/LDAP client's, or NULL */
}

static void send_password_message(struct server *s, const void *data, size_t len, bool with_nul)
{
	struct msgbuf m;
	msg_init(&m);
	msg_begin(&m, PqMsg_PasswordMessage);
	msg_add_bytes(&m, data, len);
	if (with_nul)
		msg_add_byte(&m, 0);
	msg_end(&m);
	msg_flush_to(&m, &s->io.out);
	msg_free(&m);
}

static const char *start_sasl(struct server *s, struct msgreader *r)
{
	bool offered = false, plus_offered = false;
	for (;;) {
		const char *mech = mr_string(r);
		if (r->bad || !*mech)
			break;
		if (strcmp(mech, "SCRAM-SHA-256") == 0)
			offered = true;
		else if (strcmp(mech, "SCRAM-SHA-256-PLUS") == 0)
			plus_offered = true;
	}
	if (!offered && !plus_offered)
		return "server offers no SASL mechanism pgsluice supports";
	const char *pw = login_password(s);
	struct pool *p = s->pool;
	if (pw && password_kind_of(pw) == PASSWORD_PLAIN) {
		if (!scram_client_init_password(&s->scram, pw))
			return "out of memory";
	} else if (!p->password && p->have_scram_keys) {
		scram_client_init_keys(&s->scram, &p->scram_secret, p->scram_client_key);
	} else {
		return "cannot do SCRAM authentication: wrong password type (the server needs a plain-text password, "
		       "or a client that logged in with SCRAM first)";
	}
	s->scram_started = true;
	/* Over TLS, bind the exchange to the channel when the server offers it, so
	 * a man in the middle holding a valid certificate cannot relay it. */
	const char *mechanism = "SCRAM-SHA-256";
	unsigned char cbind[EVP_MAX_MD_SIZE];
	size_t cbind_len = 0;
	SSL *ssl = s->tls ? s->io.ssl : NULL;
	if (plus_offered && ssl && tls_server_end_point(ssl, cbind, &cbind_len) &&
	    scram_client_set_channel_binding(&s->scram, cbind, cbind_len))
		mechanism = "SCRAM-SHA-256-PLUS";
	else if (!offered)
		return "server requires SCRAM channel binding, which this connection cannot provide";
	char *first = scram_client_first(&s->scram);
	if (!first)
		return "out of memory";
	struct msgbuf m;
	msg_init(&m);
	msg_begin(&m, PqMsg_PasswordMessage);
	msg_add_string(&m, mechanism);
	msg_add_int32(&m, (int32_t)strlen(first));
	msg_add_bytes(&m, first, strlen(first));
	msg_end(&m);
	msg_flush_to(&m, &s->io.out);
	msg_free(&m);
	free(first);
	return NULL;
}

/*
 * The SaltedPassword of a SCRAM login, computed on a worker thread: a
 * server's iteration count must not stall every other client. The job owns
 * copies of what the PBKDF2 reads; s is touched only on the loop's thread,
 * and server_close cancels the job, so a job never outlives its server.
 */
struct salted_job {
	struct server *s;
	char *password;
	uint8_t salt[SCRAM_MAX_SALT_LEN];
	size_t salt_len;
	int iterations;
	uint8_t salted[SCRAM_KEY_LEN];
	bool ok;
};

static void salted_job_run(void *arg)
{
	struct salted_job *j = arg;
	j->ok = scram_salted_password(j->password, j->salt, j->salt_len, j->iterations, j->salted);
}

static void salted_job_free(void *arg)
{
	struct salted_job *j = arg;
	OPENSSL_cleanse(j->password, strlen(j->password));
	OPENSSL_cleanse(j->salted, sizeof(j->salted));
	free(j->password);
	free(j);
}

/* Send client-final-message made from salted (NULL with pass-through keys); an error text or NULL. */
static const char *send_client_final(struct server *s, const uint8_t *salted)
{
	const char *err = NULL;
	char *final = scram_client_final(&s->scram, salted, &err);
	if (!final)
		return err;
	send_password_message(s, final, strlen(final), false);
	free(final);
	return NULL;
}

static void salted_job_done(void *arg)
{
	struct salted_job *j = arg;
	struct server *s = j->s;
	s->scram_job = NULL;
	const char *err = j->ok ? send_client_final(s, j->salted) : "could not compute the SCRAM proof";
	salted_job_free(j);
	if (err)
		login_fail(s, NULL, 0, err);
}

/* A server asking for more PBKDF2 rounds than server_scram_max_iterations: 28000, not retried. */
static void refuse_iterations(struct server *s, int iterations, int max)
{
	struct msgbuf m;
	msg_init(&m);
	msg_add_error(&m, PqMsg_ErrorResponse, "FATAL", SQLSTATE_INVALID_AUTH_SPEC,
	              "Each iteration costs pgsluice CPU time; a server or a man in the middle could stall it.",
	              "Raise server_scram_max_iterations if the server is trusted, or set the role's password again with a lower scram_iterations.",
	              "server asks for %d SCRAM iterations, more than server_scram_max_iterations (%d)",
	              iterations, max);
	if (m.failed) {
		msg_free(&m);
		login_fail(s, NULL, 0, "server asks for too many SCRAM iterations");
		return;
	}
	login_fail(s, m.data, m.len, NULL);
	msg_free(&m);
}

/* Returned instead of an error text when s was closed on the way (login_fail ran). */
static const char SERVER_GONE[] = "";

/* AuthenticationSASLContinue: server-first-message. An error text, or NULL (also when s is gone). */
static const char *handle_server_first(struct server *s, struct msgreader *r)
{
	const char *err = NULL;
	int iterations = 0;
	if (!s->scram_started)
		return "unexpected SASL continue message";
	size_t len = mr_remaining(r);
	if (!scram_client_read_server_first(&s->scram, (const char *)mr_bytes(r, len), len, &iterations, &err))
		return err;
	int max = s->pool->sl->cfg->server_scram_max_iterations;
	if (iterations > max) {
		refuse_iterations(s, iterations, max);
		return SERVER_GONE;
	}
	if (!scram_client_needs_salted_password(&s->scram))
		return send_client_final(s, NULL);
	struct salted_job *j = calloc(1, sizeof(*j));
	if (!j || !(j->password = strdup(s->scram.password))) {
		free(j);
		return "out of memory";
	}
	j->s = s;
	memcpy(j->salt, s->scram.server.salt, s->scram.server.salt_len);
	j->salt_len = s->scram.server.salt_len;
	j->iterations = iterations;
	s->scram_job = workers_submit(s->pool->sl->workers, salted_job_run, salted_job_done, salted_job_free, j);
	return s->scram_job ? NULL : "could not start a worker thread for SCRAM";
}

/* Answer an AuthenticationRequest; returns an error text or NULL. */
static const char *handle_auth_request(struct server *s, struct msgreader *r)
{
	int32_t code = mr_int32(r);
	const char *pw = login_password(s);
	const char *err = NULL;
	switch (code) {
	case AUTH_REQ_OK:
		s->login_step = SV_STEP_PARAMS;
		return NULL;
	case AUTH_REQ_PASSWORD:
		if (!pw || password_kind_of(pw) != PASSWORD_PLAIN)
			return "cannot do plain-text authentication: wrong password type (the server asks for the "
			       "password itself, and pgsluice has only a hash of it)";
		send_password_message(s, pw, strlen(pw), true);
		return NULL;
	case AUTH_REQ_MD5: {
		const uint8_t *salt = mr_bytes(r, 4);
		char stored[MD5_PASSWD_LEN + 1], response[MD5_PASSWD_LEN + 1];
		if (!salt)
			return "malformed MD5 authentication request";
		if (!pw || password_kind_of(pw) == PASSWORD_SCRAM)
			return "cannot do MD5 authentication: wrong password type (the server needs a plain-text "
			       "password or an MD5 hash)";
		if (password_kind_of(pw) == PASSWORD_PLAIN)
			md5_password_hash(pw, s->pool->user_name, stored);
		else
			str_copy(stored, pw, sizeof(stored));
		md5_salted_response(stored, salt, response);
		send_password_message(s, response, strlen(response), true);
		return NULL;
	}
	case AUTH_REQ_SASL:
		return start_sasl(s, r);
	case AUTH_REQ_SASL_CONT:
		return handle_server_first(s, r);
	case AUTH_REQ_SASL_FIN: {
		size_t len = mr_remaining(r);
		if (!s->scram_started ||
		    !scram_client_verify_server_final(&s->scram, (const char *)mr_bytes(r, len), len, &err))
			return err ? err : "unexpected SASL final message";
		return NULL;
	}
	default:
		return "server asks for an authentication method pgsluice does not support";
	}
}

/* A replication server logged in: welcome its client with the server's own parameters. */
static void replication_ready(struct server *s)
{
	struct client *c = s->client;
	server_move(s, SV_ACTIVE);
	if (!c) {
		server_close(s, "replication client disconnected");
		return;
	}
	varcache_fill_missing(&c->vars, &s->vars);
	client_welcome(c);
}

static void login_done(struct server *s)
{
	struct pool *p = s->pool;
	log_debug("S-%llu: %s/%s login finished", (unsigned long long)s->id, p->db_name, p->user_name);
	p->sl->server_events->logged_in(s);
	if (s->replication) {
		replication_ready(s);
		return;
	}
	s->pool->sl->server_events->ready(s);
}

static void login_fail(struct server *s, const uint8_t *msg, size_t len, const char *why)
{
	login_fail_as(s, msg, len, why, "login failed", false);
}

/*
 * login_fail, with the words of the "closing because:" log line; permanent:
 * retrying cannot cure it (pool_login_failed).
 */
static void login_fail_as(struct server *s, const uint8_t *msg, size_t len, const char *why,
                          const char *close_reason, bool permanent)
{
	struct pool *p = s->pool;
	if (msg) {
		struct pg_error f;
		if (proto_parse_error(msg + PROTO_HEADER_LEN, len - PROTO_HEADER_LEN, &f))
			log_warning("S-%llu: %s/%s server login failed: %s %s (%s)", (unsigned long long)s->id,
			            p->db_name, p->user_name, f.severity, f.message, f.sqlstate);   /* PgBouncer's words */
	} else {
		log_warning("S-%llu: %s/%s server login failed: %s", (unsigned long long)s->id,
		            p->db_name, p->user_name, why);
	}
	usec_t started = s->connect_time;
	bool replication = s->replication;
	struct client *c = replication ? s->client : NULL;
	if (c) {
		/* the error is the replication client's, not the pool's */
		s->client = NULL;
		c->server = NULL;
		server_close(s, close_reason);
		struct pg_error f;
		char detail[sizeof(f.detail) + 80];
		if (msg && proto_parse_error(msg + PROTO_HEADER_LEN, len - PROTO_HEADER_LEN, &f)) {
			/* PostgreSQL's error, with PgBouncer's "login failed" that its users match */
			snprintf(detail, sizeof(detail), "%s%slogin failed: PostgreSQL refused the replication connection.",
			         f.detail, f.detail[0] ? " " : "");
			client_fatal(c, f.sqlstate, detail, f.hint[0] ? f.hint : NULL, "%s", f.message);
		} else if (msg)
			client_fatal_raw(c, msg, len);
		else
			client_fatal(c, SQLSTATE_CONNECTION_FAILURE, why, NULL,
			             "could not connect to server for database \"%s\"", p->db_name);
		return;
	}
	server_close(s, close_reason);
	if (!replication)
		p->sl->server_events->login_failed(p, started, msg, len, why, permanent);
}

/* One whole message of a server in SV_LOGIN. Returns false when s is gone. */
static bool login_message(struct server *s, uint8_t type, const uint8_t *msg, size_t len)
{
	struct msgreader r;
	mr_init(&r, msg + PROTO_HEADER_LEN, len - PROTO_HEADER_LEN);
	switch (type) {
	case PqMsg_AuthenticationRequest: {
		const char *err = handle_auth_request(s, &r);
		if (err == SERVER_GONE)
			return false;
		if (err) {
			login_fail_as(s, NULL, 0, err, "login failed", true);   /* no retry cures a method pgsluice cannot answer */
			return false;
		}
		return true;
	}
	case PqMsg_ErrorResponse:
		login_fail(s, msg, len, NULL);
		return false;
	case PqMsg_ParameterStatus: {
		const char *name = mr_string(&r), *value = mr_string(&r);
		if (!r.bad)
			server_note_parameter(s, name, value);
		return true;
	}
	case PqMsg_BackendKeyData:
		s->cancel_pid = mr_int32(&r);
		s->cancel_key = mr_int32(&r);
		return true;
	case PqMsg_ReadyForQuery:
		if (s->internal == SV_INTERNAL_CONNECT) {
			s->pending_ready--;
			s->internal = SV_INTERNAL_NONE;
			if (s->internal_failed) {
				login_fail(s, NULL, 0, "connect_query failed");
				return false;
			}
		} else if (s->pool->connect_query && *s->pool->connect_query) {
			send_query(s, s->pool->connect_query, SV_INTERNAL_CONNECT);
			return true;
		}
		login_done(s);
		return false;    /* s may be linked now: the caller re-dispatches */
	default:
		return true;     /* NoticeResponse, NegotiateProtocolVersion, connect_query rows */
	}
}

/* ---- internal queries and relay ---- */

/* A whole message in reply to pgsluice's own query. Returns false when s is gone or changed role. */
static bool internal_message(struct server *s, uint8_t type, const uint8_t *msg, size_t len)
{
	struct msgreader r;
	mr_init(&r, msg + PROTO_HEADER_LEN, len - PROTO_HEADER_LEN);
	if (type == PqMsg_ParameterStatus) {
		const char *name = mr_string(&r), *value = mr_string(&r);
		if (!r.bad)
			server_note_parameter(s, name, value);
		return true;
	}
	if (type == PqMsg_ErrorResponse) {
		struct pg_error f;
		if (proto_parse_error(r.data, r.len, &f)) {
			log_warning("S-%llu: %s/%s internal query failed: %s %s", (unsigned long long)s->id,
			            s->pool->db_name, s->pool->user_name, f.sqlstate, f.message);
			s->internal_error = f;
		}
		s->internal_failed = true;
		return true;
	}
	if (type != PqMsg_ReadyForQuery)
		return true;
	s->tx_status = (char)mr_byte(&r);
	if (--s->pending_ready > 0)
		return true;
	enum server_internal was = s->internal;
	s->internal = SV_INTERNAL_NONE;
	if ((s->internal_failed || s->tx_status != 'I') && was == SV_INTERNAL_SETUP && s->client) {
		/* The client's own parameter values were refused: its error, as at login. */
		struct client *c = s->client;
		const struct pg_error *e = &s->internal_error;
		char state[sizeof(e->sqlstate)], text[sizeof(e->message)];
		str_copy(state, e->sqlstate[0] ? e->sqlstate : SQLSTATE_PROTOCOL_VIOLATION, sizeof(state));
		str_copy(text, e->message[0] ? e->message : "setting client parameters failed", sizeof(text));
		s->client = NULL;
		c->server = NULL;
		server_close(s, "setting client parameters failed");
		client_fatal(c, state, NULL, NULL, "%s", text);
		return false;
	}
	if (s->internal_failed || s->tx_status != 'I') {
		server_close(s, "server_reset_query failed");
		return false;
	}
	if (was == SV_INTERNAL_SETUP && s->client) {
		client_server_linked(s->client);
		return false;
	}
	if (was == SV_INTERNAL_RESET) {
		const char *q = s->pool->sl->cfg->server_reset_query;
		if (q && strcasestr(q, "DISCARD ALL"))
			s->settings_tainted = false;    /* every setting is back to its default */
		if (q && (strcasestr(q, "DISCARD ALL") || strcasestr(q, "RESET ALL")))
			settings_server_reset(s);
		s->pool->sl->server_events->ready(s);
		return false;
	}
	return true;
}

bool server_take_message(struct server *s, uint8_t type, const uint8_t *msg, size_t len)
{
	return s->state == SV_LOGIN ? login_message(s, type, msg, len) : internal_message(s, type, msg, len);
}

bool server_note_parameter(struct server *s, const char *name, const char *value)
{
	if (varcache_set(&s->vars, name, value))
		return true;
	add_other_param(s, name, value);
	return false;
}

/*
 * server_check_query is due when the server idled server_check_delay (0:
 * always). As in PgBouncer 1.25: "" disables the check and "<empty>" (the
 * default) checks with an empty Query, which needs no SQL at all: the round
 * trip to ReadyForQuery is the check. Writes the SQL to put first into sql
 * (size bytes, "" for <empty>) and returns whether a check is due.
 */
bool server_check_due(const struct server *s, usec_t now)
{
	const struct sluice_config *cfg = s->pool->sl->cfg;
	return cfg->server_check_query[0] && now - s->last_used >= cfg->server_check_delay;
}

static bool add_check_query(const struct server *s, char *sql, size_t size, size_t *len)
{
	const struct sluice_config *cfg = s->pool->sl->cfg;
	*len = 0;
	sql[0] = '\0';
	if (!server_check_due(s, now_usec()))
		return false;
	if (strcmp(cfg->server_check_query, SERVER_CHECK_EMPTY_QUERY) == 0)
		return true;
	int n = snprintf(sql, size, "%s;", cfg->server_check_query);
	if (n > 0 && (size_t)n < size)
		*len = (size_t)n;
	else
		sql[0] = '\0';
	return true;
}

/*
 * The link of c to s when their recorded settings differ (settings.h), or
 * s's are in doubt: one round trip checks the server (check: sql holds
 * check_len bytes of it), brings its settings to c's and sets c's
 * parameters. Apart from server_link so that the usual link stays short.
 */
static bool link_with_settings(struct server *s, struct client *c, char *sql, size_t size, bool check,
                               size_t check_len)
{
	bool reset_all = false, failed = false;
	char *rec_sql = settings_link_sql(s, c, &reset_all, &failed);
	if (failed) {
		server_close(s, "out of memory");
		return false;
	}
	/* after a RESET ALL every parameter is set again */
	static const struct varcache reset_vars = { .gen = UINT64_MAX };
	int n = varcache_apply_sql(&c->vars, reset_all ? &reset_vars : &s->vars, sql + check_len, size - check_len);
	if (n < 0) {
		free(rec_sql);
		server_close(s, "client parameters too long");
		return false;
	}
	if (n == 0 && !reset_all)
		s->vars.gen = c->vars.gen;
	if (n == 0 && !check && !rec_sql) {
		client_server_linked(c);
		return true;
	}
	/* the recorded settings first: a RESET ALL among them resets the reported ones too */
	size_t rec_len = rec_sql ? strlen(rec_sql) : 0, var_len = strlen(sql + check_len);
	char *all = malloc(check_len + rec_len + var_len + 1);
	if (!all || (n > 0 && !varcache_copy(&s->vars, &c->vars))) {
		free(all);
		free(rec_sql);
		server_close(s, "out of memory");
		return false;
	}
	memcpy(all, sql, check_len);
	if (rec_len)
		memcpy(all + check_len, rec_sql, rec_len);
	memcpy(all + check_len + rec_len, sql + check_len, var_len + 1);
	if (check_len && !rec_len && !var_len)
		all[check_len - 1] = '\0';   /* a lone check query as written: PostgreSQL logs it so */
	free(rec_sql);
	log_debug("S-%llu: setting client parameters: %s", (unsigned long long)s->id, all);
	bool sent = send_query(s, all, SV_INTERNAL_SETUP);
	free(all);
	if (!sent) {
		server_close(s, "out of memory");
		return false;
	}
	return true;
}

/* server_link when the server needs a check or a setting: the SQL is built in a 4 kB buffer. */
static __attribute__((noinline)) bool link_with_sql(struct server *s, struct client *c)
{
	char sql[4096];
	/* One round trip checks the server and sets the client's parameters. */
	size_t check_len;
	bool check = add_check_query(s, sql, sizeof(sql), &check_len);
	if (s->settings.gen != c->settings.gen || s->settings_reset_all ||
	    (s->settings_dirty && s->settings_owner != c->id))
		return link_with_settings(s, c, sql, sizeof(sql), check, check_len);
	s->settings_owner = c->id;    /* the usual case: no settings, or c back on the server it left */
	int n = varcache_apply_sql(&c->vars, &s->vars, sql + check_len, sizeof(sql) - check_len);
	if (n < 0) {
		server_close(s, "client parameters too long");
		return false;
	}
	if (n == 0)
		s->vars.gen = c->vars.gen;   /* equal values: the next link of c skips the comparison */
	if (n > 0 || check) {
		log_debug("S-%llu: varcache_apply: %s", (unsigned long long)s->id, sql);   /* PgBouncer's words */
		/* PostgreSQL reports only some of them back: remember what s has now
		 * (on failure the server is closed) */
		if (n > 0 && !varcache_copy(&s->vars, &c->vars)) {
			server_close(s, "out of memory");
			return false;
		}
		if (n == 0 && check_len)
			sql[check_len - 1] = '\0';   /* a lone check query as written, as PgBouncer sends it */
		if (!send_query(s, sql, SV_INTERNAL_SETUP)) {
			server_close(s, "out of memory");
			return false;
		}
		return true;
	}
	client_server_linked(c);
	return true;
}

bool server_link(struct server *s, struct client *c)
{
	s->client = c;
	c->server = s;
	server_move(s, SV_ACTIVE);
	/* the usual link, every transaction: c back on a server with its settings
	 * and parameters and no check due (link_with_sql's cases otherwise) */
	if (s->settings.gen == c->settings.gen && !s->settings_reset_all &&
	    !(s->settings_dirty && s->settings_owner != c->id) && c->vars.gen == s->vars.gen &&
	    !server_check_due(s, now_usec())) {
		s->settings_owner = c->id;
		client_server_linked(c);
		return true;
	}
	return link_with_sql(s, c);
}

void server_start_reset(struct server *s)
{
	const char *q = s->pool->sl->cfg->server_reset_query;
	if (!q || !*q) {
		s->pool->sl->server_events->ready(s);
		return;
	}
	server_move(s, SV_RESET);
	prepared_server_reset(s, strcasestr(q, "DISCARD ALL") || strcasestr(q, "DEALLOCATE ALL"));
	/* RESET ALL leaves role and session_authorization alone (sql-reset.html);
	 * DISCARD ALL resets them. A reset query with RESET ALL resets them too,
	 * so that no client's SET ROLE reaches the next client of the server. */
	char *full = NULL;
	if (strcasestr(q, "RESET ALL") && !strcasestr(q, "DISCARD ALL")) {
		size_t qlen = strlen(q);
		full = malloc(qlen + sizeof(";" SESSVARS_RESET_ROLES_SQL));
		if (!full) {
			server_close(s, "out of memory");
			return;
		}
		memcpy(full, q, qlen);
		memcpy(full + qlen, ";" SESSVARS_RESET_ROLES_SQL, sizeof(";" SESSVARS_RESET_ROLES_SQL));
	}
	bool sent = send_query(s, full ? full : q, SV_INTERNAL_RESET);
	free(full);
	if (!sent)
		server_close(s, "out of memory");
}

bool server_is_clean(const struct server *s)
{
	return s->state == SV_ACTIVE && s->internal == SV_INTERNAL_NONE && s->pending_ready == 0 &&
	       !s->unsynced && s->tx_status == 'I' && s->relay_left == 0 &&
	       iobuf_len(&s->io.in) == 0;
}


/* TLS towards TCP servers from server_tls_sslmode = prefer on ("allow" stays plain). */
static bool want_tls(const struct server *s)
{
	const struct tls_config *t = &s->pool->sl->tls;
	return t->connect_ctx && t->server_mode >= TLS_PREFER && s->pool->host && s->pool->host[0] != '/';
}

static void send_ssl_request(struct server *s)
{
	struct msgbuf m;
	msg_init(&m);
	msg_begin(&m, 0);
	msg_add_int32(&m, PROTO_SSL_REQUEST);
	msg_end(&m);
	msg_flush_to(&m, &s->io.out);
	msg_free(&m);
	s->login_step = SV_STEP_SSL;
}

/* The server's one-byte answer to SSLRequest (protocol-flow.html 55.2.10). */
void server_ssl_response(struct server *s)
{
	struct iobuf *in = &s->io.in;
	if (iobuf_len(in) < 1)
		return;
	uint8_t answer = iobuf_data(in)[0];
	iobuf_drain(in, 1);
	struct sluice *sl = s->pool->sl;
	s->login_step = SV_STEP_STARTUP;
	if (answer == 'N') {
		if (sl->tls.server_mode >= TLS_REQUIRE)
			login_fail_as(s, NULL, 0, "server does not support SSL, and server_tls_sslmode requires it",
			              "login failed", true);   /* a configuration error: no use waiting */
		else
			send_startup(s);
		return;
	}
	if (answer != 'S') {
		login_fail(s, NULL, 0, "unexpected answer to SSLRequest");
		return;
	}
	if (iobuf_len(in) > 0) {
		/* bytes before the handshake could be a man in the middle's (CVE-2021-23222) */
		login_fail(s, NULL, 0, "received unencrypted data after SSL response");
		return;
	}
	SSL *ssl = tls_new_connect(&sl->tls, s->host_name);
	if (!ssl || !connio_start_tls(&s->io, ssl, false)) {
		login_fail(s, NULL, 0, "could not start TLS");
		return;
	}
	s->tls = true;
}

/* Connected (TCP or unix socket), or the TLS handshake finished. */
/*
 * PgBouncer's "new connection to server (from ADDR:PORT)" line, with the
 * local end of the socket, once connect() succeeded; log watches count it.
 */
static void log_new_connection(const struct server *s)
{
	const struct pool *p = s->pool;
	if (!p->sl->cfg->log_connections)
		return;
	struct sockaddr_storage local;
	socklen_t len = sizeof(local);
	char host[INET6_ADDRSTRLEN + 2] = "unix", from[INET6_ADDRSTRLEN + 16];
	int port = 0;
	if (getsockname(s->io.fd, (struct sockaddr *)&local, &len) == 0) {
		if (local.ss_family == AF_INET) {
			const struct sockaddr_in *in = (const struct sockaddr_in *)&local;
			inet_ntop(AF_INET, &in->sin_addr, host, sizeof(host));
			port = ntohs(in->sin_port);
		} else if (local.ss_family == AF_INET6) {
			const struct sockaddr_in6 *in6 = (const struct sockaddr_in6 *)&local;
			char a[INET6_ADDRSTRLEN];
			inet_ntop(AF_INET6, &in6->sin6_addr, a, sizeof(a));
			snprintf(host, sizeof(host), "[%s]", a);
			port = ntohs(in6->sin6_port);
		}
	}
	snprintf(from, sizeof(from), "%s:%d", host, port);
	char where[300];
	log_info("S-%llu: %s/%s@%s new %sconnection to server (from %s)", (unsigned long long)s->id, p->db_name,
	         p->user_name, server_where(s, where, sizeof(where)), s->replication ? "replication " : "", from);
}

void server_on_connect(struct server *s)
{
	if (s->tls) {
		send_startup(s);
		return;
	}
	free(s->addrs);
	s->addrs = NULL;
	s->addr_next = 0;
	s->addr_len = sizeof(s->addr);
	if (getpeername(s->io.fd, (struct sockaddr *)&s->addr, &s->addr_len) != 0)
		s->addr_len = 0;
	socket_tune(s->io.fd, s->pool->sl->cfg);
	log_new_connection(s);
	if (want_tls(s))
		send_ssl_request(s);
	else
		send_startup(s);
}

void server_on_error(struct server *s, const char *why)
{
	char text[300];
	bool permanent = false;
	if (!why)
		why = "server closed the connection unexpectedly";
	else if (s->tls && s->io.state == IO_HANDSHAKE) {
		snprintf(text, sizeof(text), "TLS connection to the server failed: %s", why);
		why = text;
		/* a certificate that does not verify will not verify on the next try either */
		permanent = s->io.ssl && SSL_get_verify_result(s->io.ssl) != X509_V_OK;
	}
	if (s->state == SV_LOGIN && s->io.state == IO_CONNECTING) {
		/* refused or unreachable: the next address, then the next host */
		char reason[300];
		str_copy(reason, why, sizeof(reason));
		connio_close(&s->io);
		if (s->addrs && s->addr_next < s->addrs->n)
			try_next_address(s);
		else
			host_failed(s, reason);
		return;
	}
	if (s->state == SV_LOGIN)
		login_fail_as(s, NULL, 0, why, "login failed", permanent);
	else
		server_close(s, why);
}
