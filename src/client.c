/* SPDX-License-Identifier: PostgreSQL */
/*
 * client.c - see client.h. Login follows protocol-flow.html 55.2.1 (start-up)
 * and 55.3 (SASL); after login, messages are relayed to the linked server
 * whole or in streamed pieces, inspecting only their headers.
 */
#include "client.h"

#include <arpa/inet.h>
#include <errno.h>
#include <event2/event.h>
#include <netinet/in.h>
#include <openssl/crypto.h>
#include <openssl/rand.h>
#include <openssl/ssl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/un.h>
#include <unistd.h>

#include "ai/usage.h"
#include "auth.h"
#include "autoconfig.h"
#include "client_step.h"
#include "authquery.h"
#include "tls.h"
#include "hba.h"
#include "ident.h"
#include "cancel.h"
#include "log.h"
#include "ldapauth.h"
#include "pamauth.h"
#include "pool.h"
#include "relay.h"
#include "server.h"
#include "settings_ext.h"
#include "sluice.h"
#include "util.h"
#include "workers.h"

/* A password or SASL message larger than this is a protocol violation. */
#define MAX_AUTH_MESSAGE_LEN 8192

static void client_io_read(void *arg);
static void client_io_drain(void *arg);
static void client_io_connect(void *arg);
static void client_io_error(void *arg, const char *why);
static const struct connio_ops client_io_ops = {
	client_io_read, client_io_drain, client_io_connect, client_io_error,
};
static void client_relay(struct client *c);
static void login_input(struct client *c);

const char *client_addr(const struct client *c, char *buf)
{
	const char *ok = NULL;
	if (c->peer.sa.sa_family == AF_INET)
		ok = inet_ntop(AF_INET, &c->peer.in.sin_addr, buf, CLIENT_ADDR_LEN);
	else if (c->peer.sa.sa_family == AF_INET6)
		ok = inet_ntop(AF_INET6, &c->peer.in6.sin6_addr, buf, CLIENT_ADDR_LEN);
	if (!ok)
		str_copy(buf, "unix", CLIENT_ADDR_LEN);
	return buf;
}

int client_port(const struct client *c)
{
	if (c->peer.sa.sa_family == AF_INET)
		return ntohs(c->peer.in.sin_port);
	if (c->peer.sa.sa_family == AF_INET6)
		return ntohs(c->peer.in6.sin6_port);
	return 0;
}

bool client_close_oldest_silent(struct sluice *sl, usec_t min_age)
{
	struct client *c = TAILQ_FIRST(&sl->login_clients);   /* the oldest: appended on accept */
	if (!c || c->user || now_usec() - c->connect_time < min_age)
		return false;
	client_close(c, "max_login_clients reached: no startup packet from the oldest client");
	return true;
}

void client_accept(struct sluice *sl, int fd, const struct sockaddr *addr, socklen_t len)
{
	struct client *c = calloc(1, sizeof(*c));
	struct client_login *login = c ? calloc(1, sizeof(*login)) : NULL;
	if (!login || !connio_open(&c->io, sl->base, fd, &client_io_ops, c)) {
		log_error("out of memory accepting a client connection");
		free(login);
		free(c);
		close(fd);
		return;
	}
	socket_tune(fd, sl->cfg);
	c->sl = sl;
	c->id = socket_id_next();
	c->login = login;
	varcache_init(&c->vars);   /* ai/cache_proto.c reads c->vars.values[i] */
	c->login->step = CL_AUTH_STARTUP;
	c->connect_time = c->last_activity = now_usec();
	if ((addr->sa_family == AF_INET || addr->sa_family == AF_INET6) && len <= sizeof(c->peer))
		memcpy(&c->peer, addr, len);
	else
		c->peer.sa.sa_family = AF_UNIX;
	c->state = CL_NONE;
	pool_move_client(c, NULL, CL_LOGIN);
	sl->n_clients++;
}


/* Take c off every list and give back its server; c stays allocated. */
static void client_detach(struct client *c)
{
	struct server *s = c->server;
	if (s) {
		c->server = NULL;
		s->client = NULL;
		pool_release_server(s, server_is_clean(s));
	}
	if (c->state == CL_ADMIN && c->sl->console)
		c->sl->console->forget(c);   /* its waits on the console */
	notify_client_free(c);   /* leaves its channels while its pool is known */
	pool_move_client(c, NULL, CL_NONE);
}

/* Free what only the login needed (its secrets, its SCRAM state, a derivation in flight). */
static void login_free(struct client *c)
{
	struct client_login *l = c->login;
	if (!l)
		return;
	if (l->job)
		workers_cancel(c->sl->workers, l->job);   /* its secret is dropped */
	if (l->scram) {
		scram_server_free(l->scram);
		free(l->scram);
	}
	if (l->ldap) {
		ldapauth_clear(l->ldap);
		free(l->ldap);
	}
	free_secret(l->proved_password);
	free(l->password);
	free(l);
	c->login = NULL;
}

static void client_free(struct client *c)
{
	login_free(c);
	if (c->close_timer)
		event_free(c->close_timer);
	c->sl->n_clients--;
	connio_close(&c->io);
	free(c->close_reason);
	varcache_clear(&c->vars);
	if (c->settings_startup) {
		sessvars_clear(c->settings_startup);
		free(c->settings_startup);
	}
	sessvars_clear(&c->settings);
	if (c->settings_tx) {
		sessvars_clear(c->settings_tx);
		free(c->settings_tx);
	}
	client_drop_pending_setting(c);
	settings_ext_free(c);
	prepared_client_free(c);
	client_step_free(c);
	notify_client_free(c);
	free(c->user);
	free(c->database);
	free(c);
}

static void close_client(struct client *c, const char *reason)
{
	if (c->sl->cfg->log_disconnections && c->state != CL_CANCEL)
		log_info("C-%llu: %s/%s@%s:%d closing because: %s (age=%llds)",
		         (unsigned long long)c->id, c->database ? c->database : "(nodb)",
		         c->user ? c->user : "(nouser)", CLIENT_ADDR(c), client_port(c), reason,
		         (long long)((now_usec() - c->connect_time) / USEC_PER_SEC));
	if (c->state == CL_CLOSING)
		pool_move_client(c, NULL, CL_NONE);
	else
		client_detach(c);
	client_free(c);
}

static void close_later_cb(evutil_socket_t fd, short what, void *arg);


static const char *close_reason_of(const struct client *c)
{
	return c->close_reason ? c->close_reason : "closing after an error";
}

/*
 * Closing after an error is a lingering close: the error is written, our
 * side shut down for writing, and input drained until the client hangs up.
 * Closing with unread input would make the kernel send RST, and the client
 * could lose the error it is owed.
 */
static void client_close_after_flush(struct client *c)
{
	if (c->state == CL_CLOSING)
		return;
	client_detach(c);
	pool_move_client(c, NULL, CL_CLOSING);
	/* A client that neither reads its error nor hangs up is closed after 5 s. */
	struct timeval tv = { 5, 0 };
	if (!c->close_timer)
		c->close_timer = evtimer_new(c->sl->base, close_later_cb, c);
	if (c->close_timer)
		evtimer_add(c->close_timer, &tv);
	connio_resume_read(&c->io);
	iobuf_drain(&c->io.in, iobuf_len(&c->io.in));
	/* Under TLS a FIN could cut the alert-less record stream short: a TLS
	 * client is left to hang up after reading its error (or the timer ends it). */
	connio_shut_when_flushed(&c->io);
}

static void fatal_client(struct client *c, const char *sqlstate, const char *detail, const char *hint,
                         const char *text)
{
	struct msgbuf m;
	if (c->sl->cfg->log_pooler_errors)
		log_warning("C-%llu: %s/%s@%s:%d pooler error: %s", (unsigned long long)c->id,
		            c->database ? c->database : "(nodb)", c->user ? c->user : "(nouser)",
		            CLIENT_ADDR(c), client_port(c), text);
	client_set_close_reason(c, text);
	msg_init(&m);
	msg_add_error(&m, PqMsg_ErrorResponse, "FATAL", sqlstate, detail, hint, "%s", text);
	msg_flush_to(&m, &c->io.out);
	msg_free(&m);
	client_close_after_flush(c);
}

static void fatal_raw_client(struct client *c, const uint8_t *msg, size_t len)
{
	struct pg_error f;
	if (len > PROTO_HEADER_LEN && proto_parse_error(msg + PROTO_HEADER_LEN, len - PROTO_HEADER_LEN, &f))
		client_set_close_reason(c, f.message);
	connio_add(&c->io, msg, len);
	client_close_after_flush(c);
}

static struct client *find_by_key(struct sluice *sl, int32_t pid, int32_t key)
{
	struct pool *p;
	struct client *c;
	TAILQ_FOREACH(p, &sl->pools, entry) {
		TAILQ_FOREACH(c, &p->active_clients, entry)
			if (c->cancel_pid == pid && c->cancel_key == key)
				return c;
		TAILQ_FOREACH(c, &p->waiting_clients, entry)
			if (c->cancel_pid == pid && c->cancel_key == key)
				return c;
	}
	return NULL;
}

/* ---- login ---- */

static void send_auth_request(struct client *c, int32_t code, const void *data, size_t len)
{
	struct msgbuf m;
	msg_init(&m);
	msg_begin(&m, PqMsg_AuthenticationRequest);
	msg_add_int32(&m, code);
	msg_add_bytes(&m, data, len);
	msg_end(&m);
	msg_flush_to(&m, &c->io.out);
	msg_free(&m);
}

/*
 * PgBouncer's texts, which its users' scripts match: "SASL authentication
 * failed" after SCRAM, PostgreSQL's "password authentication failed"
 * otherwise; a role auth_query did not find also carries PgBouncer's DETAIL
 * "no such user" (it tells no more than PgBouncer does).
 */
static void auth_failed(struct client *c)
{
	const char *detail = c->login->no_such_user ? "no such user" : NULL;
	if (c->login->method == AUTH_TYPE_SCRAM_SHA_256)
		client_fatal(c, SQLSTATE_INVALID_PASSWORD, detail, NULL, "SASL authentication failed");
	else
		client_fatal(c, SQLSTATE_INVALID_PASSWORD, detail, NULL,
		             "password authentication failed for user \"%s\"", c->user);
}

static void login_succeeded(struct client *c);

/*
 * The SCRAM secret for a plain auth_file password, derived once per user
 * with a random salt (as PostgreSQL stores one) and scram_iterations PBKDF2
 * rounds (too much to spend on every login), then kept. A reload that
 * changes scram_iterations derives anew. True with *out set when kept.
 */
static bool find_derived_secret(struct sluice *sl, const char *user, const char *password,
                                struct scram_secret *out)
{
	for (struct derived_secret *d = sl->derived_secrets; d; d = d->next)
		if (strcmp(d->user, user) == 0 && strcmp(d->password, password) == 0 &&
		    d->secret.iterations == sl->cfg->scram_iterations) {
			*out = d->secret;
			return true;
		}
	return false;
}

/* Keep a freshly derived secret (on OOM it is simply derived again next time). */
static void keep_derived_secret(struct sluice *sl, const char *user, const char *password,
                                const struct scram_secret *secret)
{
	struct derived_secret *d;
	for (d = sl->derived_secrets; d; d = d->next)
		if (strcmp(d->user, user) == 0 && strcmp(d->password, password) == 0) {
			d->secret = *secret;
			return;
		}
	d = calloc(1, sizeof(*d));
	if (d && (d->user = strdup(user)) && (d->password = strdup(password))) {
		d->secret = *secret;
		d->next = sl->derived_secrets;
		sl->derived_secrets = d;
	} else if (d) {
		free(d->user);
		free(d);
	}
}

/*
 * A secret being derived on a worker thread (workers.h) while its client
 * waits in CL_AUTH_DERIVING: the PBKDF2 of scram_iterations rounds must not
 * hold the other clients. For users not in auth_file (mock) the password is
 * a random one, renewing sl->mock_secret (main.c makes the first one at
 * start-up with the default count). The job owns its copies; c is touched
 * only on the loop's thread, and client_free cancels the job.
 */
struct derive_job {
	struct client *c;
	char *password;
	bool mock;
	uint8_t salt[16];
	int iterations;
	struct scram_secret out;
	bool ok;
};

static void derive_job_run(void *arg)
{
	struct derive_job *j = arg;
	j->ok = scram_secret_from_password(j->password, j->salt, sizeof(j->salt), j->iterations, &j->out);
}

static void derive_job_free(void *arg)
{
	struct derive_job *j = arg;
	free_secret(j->password);
	free(j);
}

static void begin_scram_exchange(struct client *c, const struct scram_secret *secret);
static void login_input(struct client *c);

static void derive_job_done(void *arg)
{
	struct derive_job *j = arg;
	struct client *c = j->c;
	c->login->job = NULL;
	if (c->state != CL_LOGIN || c->login->step != CL_AUTH_DERIVING) {
		derive_job_free(j);    /* refused meanwhile (client_login_timeout): FATAL already sent */
		return;
	}
	if (!j->ok) {
		derive_job_free(j);
		client_fatal(c, SQLSTATE_INTERNAL_ERROR, NULL, NULL, "could not derive a SCRAM secret");
		return;
	}
	if (j->mock)
		c->sl->mock_secret = j->out;
	else
		keep_derived_secret(c->sl, c->user, j->password, &j->out);
	struct scram_secret secret = j->out;
	derive_job_free(j);
	begin_scram_exchange(c, &secret);
	if (c->state == CL_LOGIN && iobuf_len(&c->io.in) > 0)
		login_input(c);    /* bytes that came meanwhile */
}

/* Derive a secret for c off the loop (password NULL: a new mock secret); c waits meanwhile. */
static void start_derive(struct client *c, const char *password)
{
	struct derive_job *j = calloc(1, sizeof(*j));
	char pw[33];
	if (!password) {
		if (RAND_bytes((unsigned char *)pw, sizeof(pw) - 1) != 1)
			goto fail;
		for (size_t i = 0; i < sizeof(pw) - 1; i++)
			pw[i] = (char)('a' + ((unsigned char)pw[i] % 26));
		pw[sizeof(pw) - 1] = '\0';
	}
	if (!j || RAND_bytes(j->salt, sizeof(j->salt)) != 1 || !(j->password = strdup(password ? password : pw)))
		goto fail;
	OPENSSL_cleanse(pw, sizeof(pw));
	j->c = c;
	j->mock = !password;
	j->iterations = c->sl->cfg->scram_iterations;
	c->login->step = CL_AUTH_DERIVING;
	c->login->job = workers_submit(c->sl->workers, derive_job_run, derive_job_done, derive_job_free, j);
	if (!c->login->job)
		client_fatal(c, SQLSTATE_INTERNAL_ERROR, NULL, NULL, "could not derive a SCRAM secret");
	return;
fail:
	OPENSSL_cleanse(pw, sizeof(pw));
	free(j);
	client_fatal(c, SQLSTATE_INTERNAL_ERROR, NULL, NULL, "could not derive a SCRAM secret");
}

void client_free_derived_secrets(struct sluice *sl)
{
	struct derived_secret *d;
	while ((d = sl->derived_secrets) != NULL) {
		sl->derived_secrets = d->next;
		OPENSSL_cleanse(d->password, strlen(d->password));
		free(d->user);
		free(d->password);
		free(d);
	}
}

static void start_scram(struct client *c, const char *stored)
{
	struct scram_secret secret;
	if (!stored) {
		/* The mock exchange must look like a real one, i= included. */
		if (c->sl->mock_secret.iterations != c->sl->cfg->scram_iterations) {
			start_derive(c, NULL);
			return;
		}
		secret = c->sl->mock_secret;
	} else if (password_kind_of(stored) == PASSWORD_SCRAM) {
		if (!scram_parse_secret(stored, &secret)) {
			client_fatal(c, SQLSTATE_INVALID_AUTH_SPEC, NULL, NULL,
			             "invalid SCRAM secret for user \"%s\" in auth_file", c->user);
			return;
		}
	} else if (password_kind_of(stored) == PASSWORD_PLAIN) {
		if (!find_derived_secret(c->sl, c->user, stored, &secret)) {
			start_derive(c, stored);
			return;
		}
	} else {
		/* PostgreSQL's outcome for an MD5-stored role under scram-sha-256 */
		client_fatal(c, SQLSTATE_INVALID_PASSWORD,
		             "The stored password is an MD5 hash, which cannot verify SCRAM.",
		             "Store the plain password or its SCRAM secret in auth_file.",
		             "password authentication failed for user \"%s\"", c->user);
		return;
	}
	begin_scram_exchange(c, &secret);
}

/* AuthenticationSASL for secret: the exchange of start_scram begins. */
static void begin_scram_exchange(struct client *c, const struct scram_secret *secret)
{
	if (!c->login->scram && !(c->login->scram = calloc(1, sizeof(*c->login->scram)))) {
		client_fatal(c, SQLSTATE_INTERNAL_ERROR, NULL, NULL, "out of memory");
		return;
	}
	scram_server_init(c->login->scram, secret);
	static const char mech[] = "SCRAM-SHA-256\0";   /* list ends with an empty name */
	send_auth_request(c, AUTH_REQ_SASL, mech, sizeof(mech));
	c->login->step = CL_AUTH_SASL_FIRST;
}

/* auth_type = cert: the verified client certificate's CN is the user name (or maps to it: hba map=). */
static void start_cert_auth(struct client *c, const char *map)
{
	char cn[256];
	SSL *ssl = c->tls ? c->io.ssl : NULL;
	if (!ssl || !tls_peer_common_name(ssl, cn, sizeof(cn))) {
		client_fatal(c, SQLSTATE_INVALID_AUTH_SPEC, NULL,
		             "auth_type = cert needs TLS and a client certificate signed by client_tls_ca_file.",
		             "connection requires a valid client certificate");
		return;
	}
	if (map ? !ident_map_allows(c->sl->ident, map, cn, c->user) : strcmp(cn, c->user) != 0) {
		if (map)
			log_info("C-%llu: ident map: %s does not have a match (no match in usermap \"%s\" "
			         "for user \"%s\" authenticated as \"%s\")",
			         (unsigned long long)c->id, map, map, c->user, cn);
		client_fatal(c, SQLSTATE_INVALID_AUTH_SPEC, NULL, NULL,
		             "certificate authentication failed for user \"%s\"", c->user);
		return;
	}
	login_succeeded(c);
}

/*
 * auth_type = peer, or an hba "peer" rule: the operating system user at the
 * other end of the unix socket is the role, or maps to it in auth_ident_file
 * (map, may be NULL). PostgreSQL's texts; the reason goes to the log only.
 */
static void peer_login(struct client *c, const char *map)
{
	char sysuser[256], why[300];
	uid_t uid;
	if (c->peer.sa.sa_family != AF_UNIX) {
		client_fatal(c, SQLSTATE_INVALID_AUTH_SPEC, NULL,
		             "Connect over the Unix socket (unix_socket_dir), or use a password method for TCP.",
		             "peer authentication is only supported on local sockets");
		return;
	}
	if (!ident_peer_user(c->io.fd, &uid, sysuser, sizeof(sysuser), why, sizeof(why))) {
		log_warning("C-%llu: %s", (unsigned long long)c->id, why);
		client_fatal(c, SQLSTATE_INVALID_AUTH_SPEC, NULL, NULL, "Peer authentication failed for user \"%s\"",
		             c->user);
		return;
	}
	if (map ? !ident_map_allows(c->sl->ident, map, sysuser, c->user) : strcmp(sysuser, c->user) != 0) {
		if (map)
			log_info("C-%llu: ident map %s cannot be matched (no match in usermap \"%s\" for user \"%s\" "
			         "authenticated as \"%s\"%s)",
			         (unsigned long long)c->id, map, map, c->user, sysuser,
			         c->sl->ident ? "" : " (auth_ident_file is not set)");
		else
			log_info("C-%llu: provided user name (%s) and authenticated user name (%s) do not match",
			         (unsigned long long)c->id, c->user, sysuser);
		client_fatal(c, SQLSTATE_INVALID_AUTH_SPEC, NULL, NULL, "Peer authentication failed for user \"%s\"",
		             c->user);
		return;
	}
	login_succeeded(c);
}

/* auth_type ldap or pam, or such an hba rule: pgsluice is built without them (docs/hba.md). */
static void refuse_unbuilt_method(struct client *c, const char *method)
{
	client_fatal(c, SQLSTATE_INVALID_AUTH_SPEC, NULL,
	             "Use another auth_type or hba method; pgsluice does not link the library it needs.",
	             "%s authentication is not supported: pgsluice was built without %s support", method, method);
}

/*
 * With auth_type = hba the first matching auth_hba_file rule picks the
 * method (client-authentication.html, pg_hba.conf). Returns false after
 * refusing the client.
 */
static bool method_from_hba(struct client *c, enum auth_type *method, const char **map, int *rule_line)
{
	int line = 0;
	bool is_unix = c->peer.sa.sa_family == AF_UNIX;
	const struct sockaddr *addr = is_unix ? NULL : &c->peer.sa;
	enum hba_method m = !c->sl->hba ? HBA_REJECT
	                    : c->replication == REPLICATION_PHYSICAL
	                    ? hba_match_replication(c->sl->hba, is_unix, c->tls, addr, c->user, &line)
	                    : hba_match(c->sl->hba, is_unix, c->tls, addr, c->database, c->user, &line);
	*map = hba_map(c->sl->hba, line);
	*rule_line = line;
	switch (m) {
	case HBA_TRUST: *method = AUTH_TYPE_ANY; return true;
	case HBA_PEER: *method = AUTH_TYPE_PEER; return true;
	case HBA_LDAP: *method = AUTH_TYPE_LDAP; return true;
	case HBA_PAM: *method = AUTH_TYPE_PAM; return true;
	case HBA_IDENT:
		client_fatal(c, SQLSTATE_INVALID_AUTH_SPEC, NULL,
		             "Use \"peer\" on a local rule, or a password method for TCP.",
		             "ident authentication over TCP is not supported by pgsluice (pg_hba.conf line %d)", line);
		return false;
	case HBA_MD5: *method = AUTH_TYPE_MD5; return true;
	case HBA_SCRAM_SHA_256: *method = AUTH_TYPE_SCRAM_SHA_256; return true;
	case HBA_PASSWORD: *method = AUTH_TYPE_PLAIN; return true;
	case HBA_CERT: *method = AUTH_TYPE_CERT; return true;
	default:
		break;
	}
	if (line == 0)
		client_fatal(c, SQLSTATE_INVALID_AUTH_SPEC, NULL, NULL,
		             "no pg_hba.conf entry for host \"%s\", user \"%s\", database \"%s\", no encryption",
		             CLIENT_ADDR(c), c->user, c->database);
	else
		client_fatal(c, SQLSTATE_INVALID_AUTH_SPEC, NULL, NULL,
		             "pg_hba.conf rejects connection for host \"%s\", user \"%s\", database \"%s\", no encryption",
		             CLIENT_ADDR(c), c->user, c->database);
	return false;
}

/* Choose the exchange for auth_type and the stored password (PgBouncer's rules). */
static void begin_auth_method(struct client *c, const struct userlist_entry *e);
static void auth_query_done(struct client *c, const char *password, bool role_found);

/*
 * LDAP: keep a copy of the options (the hba rule's at hba_line, or
 * auth_ldap_options) and ask for the password, which start_password_check checks.
 */
static void start_ldap_login(struct client *c, int hba_line)
{
	char err[256];
	const struct ldap_params *rule = hba_line ? hba_ldap(c->sl->hba, hba_line) : NULL;
	c->login->ldap = malloc(sizeof(*c->login->ldap));
	if (!c->login->ldap) {
		client_fatal(c, SQLSTATE_INTERNAL_ERROR, NULL, NULL, "out of memory");
		return;
	}
	ldapauth_init(c->login->ldap);
	bool ok = rule ? ldapauth_copy(c->login->ldap, rule)
	               : ldapauth_parse_options(c->sl->cfg->auth_ldap_options, c->login->ldap, err, sizeof(err));
	if (!ok) {
		if (rule)
			snprintf(err, sizeof(err), "out of memory");
		log_error("C-%llu: auth_ldap_options: %s", (unsigned long long)c->id, err);
		client_fatal(c, SQLSTATE_INVALID_AUTH_SPEC, NULL, NULL, "LDAP authentication failed for user \"%s\"",
		             c->user);
		return;
	}
	send_auth_request(c, AUTH_REQ_PASSWORD, NULL, 0);
	c->login->step = CL_AUTH_PASSWORD;
}

bool client_is_console_owner(const struct client *c)
{
	char name[256], why[300];
	uid_t uid;
	if (c->peer.sa.sa_family != AF_UNIX || !c->user || !sluice_is_console_db(c->database) ||
	    (strcmp(c->user, "pgbouncer") != 0 && strcmp(c->user, "pgsluice") != 0))
		return false;
	return ident_peer_user(c->io.fd, &uid, name, sizeof(name), why, sizeof(why)) &&
	       uid == geteuid();
}

/* authquery_lookup's answer: the client it was for, if it still waits, goes on or fails. */
static void auth_query_answered(struct sluice *sl, uint64_t client_id, const struct authquery_answer *ans)
{
	struct client *c;
	TAILQ_FOREACH(c, &sl->login_clients, entry)
		if (c->id == client_id)
			break;
	if (!c)
		return;
	if (ans->sqlstate)
		client_fatal(c, ans->sqlstate, ans->detail, ans->hint, "%s", ans->message);
	else
		auth_query_done(c, ans->password, ans->found);
}

static void start_auth(struct client *c)
{
	struct sluice *sl = c->sl;
	if (client_is_console_owner(c)) {   /* PgBouncer's rule: no password over the unix socket */
		login_succeeded(c);
		return;
	}
	const struct userlist_entry *e = sl->userlist ? userlist_find(sl->userlist, c->user) : NULL;
	if (e) {
		c->login->password = strdup(e->password);
		if (!c->login->password) {
			client_fatal(c, SQLSTATE_INTERNAL_ERROR, NULL, NULL, "out of memory");
			return;
		}
	} else if (authquery_enabled(sl, c->database) && sl->cfg->auth_type != AUTH_TYPE_ANY &&
	           sl->cfg->auth_type != AUTH_TYPE_CERT && sl->cfg->auth_type != AUTH_TYPE_PEER &&
	           sl->cfg->auth_type != AUTH_TYPE_PAM && sl->cfg->auth_type != AUTH_TYPE_LDAP) {
		/* not in auth_file: PostgreSQL's own catalog may know the role */
		bool found = false;
		const char *cached = authquery_cached(sl, c->database, c->user, &found);
		if (cached) {
			auth_query_done(c, *cached ? cached : NULL, found);
			return;
		}
		if (authquery_lookup(sl, c->id, c->database, c->user, auth_query_answered)) {
			c->login->step = CL_AUTH_QUERY;
			return;
		}
	}
	begin_auth_method(c, e);
}

/*
 * auth_query answered for c (waiting in CL_AUTH_QUERY): password is the
 * role's stored password (plain, md5 or SCRAM secret), or NULL when the
 * role has none; role_found false when the query returned no row (the
 * failure then says PgBouncer's "no such user"). The login continues with
 * auth_type's exchange.
 */
static void auth_query_done(struct client *c, const char *password, bool role_found)
{
	c->login->no_such_user = !role_found;
	struct userlist_entry found = { c->user, (char *)password, password ? password_kind_of(password) : PASSWORD_PLAIN };
	c->login->step = CL_AUTH_PASSWORD;
	if (password && !(c->login->password = strdup(password))) {
		client_fatal(c, SQLSTATE_INTERNAL_ERROR, NULL, NULL, "out of memory");
		return;
	}
	/* A role the catalog does not know goes through the exchange anyway and fails.
	 * Under trust a role it knows is enough, a password or not (PgBouncer). */
	bool known = password || (role_found && c->sl->cfg->auth_type == AUTH_TYPE_TRUST);
	begin_auth_method(c, known ? &found : NULL);
}

static void begin_auth_method(struct client *c, const struct userlist_entry *e)
{
	const struct sluice_config *cfg = c->sl->cfg;
	const char *map = NULL;
	c->login->method = cfg->auth_type;
	int hba_line = 0;
	if (c->login->method == AUTH_TYPE_HBA && !method_from_hba(c, &c->login->method, &map, &hba_line))
		return;
	switch (c->login->method) {
	case AUTH_TYPE_ANY:
		login_succeeded(c);
		return;
	case AUTH_TYPE_TRUST:
		if (!e) {
			/* PgBouncer's text; its "no such user" when auth_query did not find the role either */
			client_fatal(c, SQLSTATE_INVALID_AUTH_SPEC,
			             c->login->no_such_user ? "no such user" : "auth_type is trust, and the user is not in auth_file.",
			             NULL, "\"trust\" authentication failed");
			return;
		}
		login_succeeded(c);
		return;
	case AUTH_TYPE_PLAIN:
		send_auth_request(c, AUTH_REQ_PASSWORD, NULL, 0);
		c->login->step = CL_AUTH_PASSWORD;
		return;
	case AUTH_TYPE_MD5:
		if (e && e->kind == PASSWORD_SCRAM) {
			start_scram(c, e->password);
			return;
		}
		RAND_bytes(c->login->md5_salt, sizeof(c->login->md5_salt));
		send_auth_request(c, AUTH_REQ_MD5, c->login->md5_salt, sizeof(c->login->md5_salt));
		c->login->step = CL_AUTH_PASSWORD;
		return;
	case AUTH_TYPE_SCRAM_SHA_256:
		start_scram(c, e ? e->password : NULL);
		return;
	case AUTH_TYPE_CERT:
		start_cert_auth(c, map);
		return;
	case AUTH_TYPE_PEER:
		peer_login(c, map);
		return;
	case AUTH_TYPE_LDAP:
		if (!ldapauth_available()) {
			refuse_unbuilt_method(c, "LDAP");
			return;
		}
		start_ldap_login(c, hba_line);
		return;
	case AUTH_TYPE_PAM:
		if (!pamauth_available()) {
			refuse_unbuilt_method(c, "PAM");
			return;
		}
		send_auth_request(c, AUTH_REQ_PASSWORD, NULL, 0);   /* PAM needs the password itself */
		c->login->step = CL_AUTH_PASSWORD;
		return;
	default:
		client_fatal(c, SQLSTATE_INVALID_AUTH_SPEC, NULL, NULL, "unsupported authentication method");
		return;
	}
}

/* Cleartext check against any stored form: plain, md5 hash or SCRAM secret. */
static bool check_plain_password(const char *stored, const char *user, const char *given)
{
	switch (password_kind_of(stored)) {
	case PASSWORD_PLAIN:
		return secure_streq(stored, given);
	case PASSWORD_MD5: {
		char hash[MD5_PASSWD_LEN + 1];
		md5_password_hash(given, user, hash);
		return secure_streq(stored, hash);
	}
	case PASSWORD_SCRAM: {
		struct scram_secret want, got;
		if (!scram_parse_secret(stored, &want) ||
		    !scram_secret_from_password(given, want.salt, want.salt_len, want.iterations, &got))
			return false;
		return CRYPTO_memcmp(want.stored_key, got.stored_key, SCRAM_KEY_LEN) == 0;
	}
	}
	return false;
}

/* A PAM or LDAP check on a worker thread: both block (pamauth.h, ldapauth.h). */
struct password_job {
	struct client *c;
	char *user, *password, *rhost, *confdir;
	struct ldap_params *ldap;   /* LDAP: the options (a copy); NULL: PAM */
	struct pamauth_result res;
};

static void password_job_run(void *arg)
{
	struct password_job *j = arg;
	if (j->ldap) {
		struct ldapauth_result lr;
		ldapauth_check(j->ldap, j->user, j->password, &lr);
		j->res.ok = lr.ok;
		snprintf(j->res.message, sizeof(j->res.message), "%s", lr.message);
		return;
	}
	pamauth_check(j->confdir, j->user, j->password, j->rhost, &j->res);
}

static void password_job_free(void *arg)
{
	struct password_job *j = arg;
	free_secret(j->password);
	free(j->user);
	free(j->rhost);
	free(j->confdir);
	if (j->ldap) {
		ldapauth_clear(j->ldap);
		free(j->ldap);
	}
	free(j);
}

static void password_job_done(void *arg)
{
	struct password_job *j = arg;
	struct client *c = j->c;
	c->login->job = NULL;
	bool ok = j->res.ok;
	if (!ok)
		log_warning("C-%llu: %s/%s@%s:%d %s", (unsigned long long)c->id, c->database, c->user, CLIENT_ADDR(c),
		            client_port(c), j->res.message);
	if (ok && !c->login->proved_password) {
		c->login->proved_password = j->password;   /* for server logins (login_succeeded) */
		j->password = NULL;
	}
	password_job_free(j);
	if (c->state != CL_LOGIN || c->login->step != CL_AUTH_PAM)
		return;    /* refused meanwhile (client_login_timeout): FATAL already sent */
	if (!ok) {
		/* PostgreSQL's words and SQLSTATE (auth.c, auth_failed) */
		client_fatal(c, SQLSTATE_INVALID_AUTH_SPEC, NULL, NULL, "%s authentication failed for user \"%s\"",
		             c->login->method == AUTH_TYPE_LDAP ? "LDAP" : "PAM", c->user);
		return;
	}
	login_succeeded(c);
	if (c->state == CL_LOGIN && iobuf_len(&c->io.in) > 0)
		login_input(c);    /* bytes that came meanwhile */
}

/* Check c's cleartext password with PAM or LDAP (c->login->ldap) off the loop; c waits in CL_AUTH_PAM. */
static void start_password_check(struct client *c, const char *password)
{
	struct password_job *j = calloc(1, sizeof(*j));
	if (j && c->login->ldap) {
		j->ldap = c->login->ldap;     /* the job's now */
		c->login->ldap = NULL;
	}
	if (!j || !(j->user = strdup(c->user)) || !(j->password = strdup(password)) ||
	    !(j->rhost = strdup(c->peer.sa.sa_family == AF_UNIX ? "" : CLIENT_ADDR(c))) ||
	    !(j->confdir = strdup(c->sl->cfg->auth_pam_confdir))) {
		if (j)
			password_job_free(j);
		client_fatal(c, SQLSTATE_INTERNAL_ERROR, NULL, NULL, "out of memory");
		return;
	}
	j->c = c;
	c->login->step = CL_AUTH_PAM;
	c->login->job = workers_submit(c->sl->workers, password_job_run, password_job_done, password_job_free, j);
	if (!c->login->job)
		client_fatal(c, SQLSTATE_INTERNAL_ERROR, NULL, NULL, "could not start PAM authentication");
}

static void handle_password(struct client *c, struct msgreader *r)
{
	const char *given = mr_string(r);
	if (r->bad) {
		client_fatal(c, SQLSTATE_PROTOCOL_VIOLATION, NULL, NULL, "invalid password packet");
		return;
	}
	if (c->login->method == AUTH_TYPE_PAM || c->login->method == AUTH_TYPE_LDAP) {
		start_password_check(c, given);
		return;
	}
	bool ok = false;
	if (c->login->password) {
		if (c->login->method == AUTH_TYPE_PLAIN)
			ok = check_plain_password(c->login->password, c->user, given);
		else
			ok = md5_check_response(c->login->password, c->user, c->login->md5_salt, given);
	}
	if (ok)
		login_succeeded(c);
	else
		auth_failed(c);
}

static void handle_sasl(struct client *c, struct msgreader *r)
{
	const char *err = NULL;
	char *reply;
	if (c->login->step == CL_AUTH_SASL_FIRST) {
		const char *mech = mr_string(r);
		int32_t len = mr_int32(r);
		const uint8_t *data = len >= 0 ? mr_bytes(r, (size_t)len) : NULL;
		if (r->bad || !data || strcmp(mech, "SCRAM-SHA-256") != 0) {
			client_fatal(c, SQLSTATE_PROTOCOL_VIOLATION, NULL, NULL,
			             "client selected an invalid SASL authentication mechanism");
			return;
		}
		reply = scram_server_handle_first(c->login->scram, (const char *)data, (size_t)len, &err);
		if (!reply) {
			client_fatal(c, SQLSTATE_PROTOCOL_VIOLATION, NULL, NULL, "malformed SCRAM message: %s", err);
			return;
		}
		send_auth_request(c, AUTH_REQ_SASL_CONT, reply, strlen(reply));
		free(reply);
		c->login->step = CL_AUTH_SASL_FINAL;
		return;
	}
	size_t len = mr_remaining(r);
	reply = scram_server_handle_final(c->login->scram, (const char *)mr_bytes(r, len), len, &err);
	if (!reply || !c->login->password) {
		free(reply);
		auth_failed(c);
		return;
	}
	send_auth_request(c, AUTH_REQ_SASL_FIN, reply, strlen(reply));
	free(reply);
	login_succeeded(c);
}

static void send_negotiate_version(struct client *c, uint32_t version, const char **unknown, int n_unknown)
{
	struct msgbuf m;
	msg_init(&m);
	msg_begin(&m, PqMsg_NegotiateProtocolVersion);
	msg_add_int32(&m, (int32_t)PROTO_V3_0 & 0xffff);
	msg_add_int32(&m, n_unknown);
	for (int i = 0; i < n_unknown; i++)
		msg_add_string(&m, unknown[i]);
	msg_end(&m);
	msg_flush_to(&m, &c->io.out);
	msg_free(&m);
	(void)version;
}

/* Read the StartupMessage's name/value pairs into c; false after a FATAL. */
static bool read_startup_params(struct client *c, struct msgreader *r, uint32_t version)
{
	const struct sluice_config *cfg = c->sl->cfg;
	const char *unknown[32];
	int n_unknown = 0;
	const char *name, *value;
	/* the settings its options give; kept after this only when there are some */
	if (!c->settings_startup && !(c->settings_startup = calloc(1, sizeof(*c->settings_startup)))) {
		client_fatal(c, SQLSTATE_INTERNAL_ERROR, NULL, NULL, "out of memory");
		return false;
	}
	struct sessvars *startup = c->settings_startup;
	while (proto_startup_param(r, &name, &value)) {
		if (strcmp(name, "user") == 0) {
			free(c->user);
			c->user = strdup(value);
		} else if (strcmp(name, "database") == 0) {
			free(c->database);
			c->database = strdup(value);
		} else if (strncmp(name, "_pq_.", 5) == 0) {
			if (n_unknown < 32)
				unknown[n_unknown++] = name;
		} else if (varcache_index(name) >= 0) {
			varcache_set(&c->vars, name, value);
		} else if (strcmp(name, "replication") == 0) {
			if (!proto_parse_replication(value, &c->replication)) {
				client_fatal(c, SQLSTATE_INVALID_PARAMETER_VALUE, NULL, NULL,
				             "invalid value for parameter \"replication\": \"%s\"", value);
				return false;
			}
		} else if (strcmp(name, "options") == 0) {
			char err[256];
			if (!client_step_startup_options(c, value, cfg->ignore_startup_parameters, err, sizeof(err)) &&
			    !str_list_contains(cfg->ignore_startup_parameters, name)) {
				/* a bad sluice.* value is 22023, as SET's; an option pgsluice cannot honour, 08P01 */
				client_fatal(c, strncmp(err, "invalid value", 13) == 0 ? SQLSTATE_INVALID_PARAMETER_VALUE
				                : strncmp(err, "too many", 8) == 0   ? SQLSTATE_PROGRAM_LIMIT_EXCEEDED
				                                                      : SQLSTATE_PROTOCOL_VIOLATION, NULL,
				             "pgsluice honours -c name=value and --name=value in options; "
				             "add options to ignore_startup_parameters to ignore them.",
				             "%s", err);
				return false;
			}
		} else if (!str_list_contains(cfg->ignore_startup_parameters, name)) {
			client_fatal(c, SQLSTATE_PROTOCOL_VIOLATION, NULL,
			             "Add it to ignore_startup_parameters in the pgsluice configuration to ignore it.",
			             "unsupported startup parameter: %s", name);   /* PgBouncer's text */
			return false;
		}
	}
	if (c->replication != REPLICATION_NONE && startup->n > 0) {
		/* a replication server is the client's own, started with its tracked parameters only */
		client_fatal(c, SQLSTATE_PROTOCOL_VIOLATION, NULL,
		             "Add it to ignore_startup_parameters in the pgsluice configuration to ignore it.",
		             "unsupported startup parameter \"%s\" on a replication connection",
		             startup->items[0].name);
		return false;
	}
	if (!sessvars_copy(&c->settings, startup)) {
		client_fatal(c, SQLSTATE_INTERNAL_ERROR, NULL, NULL, "out of memory");
		return false;
	}
	if (startup->n == 0 && startup->gen == 0) {
		free(startup);    /* none: RESET goes to the server's defaults (sessvars_apply's NULL) */
		c->settings_startup = NULL;
	}
	if (r->bad) {
		client_fatal(c, SQLSTATE_PROTOCOL_VIOLATION, NULL, NULL, "invalid startup packet layout");
		return false;
	}
	if ((version & 0xffff) > 0 || n_unknown > 0)
		send_negotiate_version(c, version, unknown, n_unknown);
	return true;
}

/*
 * application_name_add_host: "<application_name> - <host>:<port>" as
 * PgBouncer 1.25 writes it (set_appname), "app" when the client sent none,
 * so pg_stat_activity shows which client a server connection serves.
 */
static bool add_host_to_application_name(struct client *c)
{
	const char *given = varcache_get(&c->vars, varcache_index("application_name"));
	char name[400];
	if (c->peer.sa.sa_family == AF_UNIX)
		snprintf(name, sizeof(name), "%s - unix:%d", given ? given : "app", c->sl->cfg->listen_port);
	else if (c->peer.sa.sa_family == AF_INET6)
		snprintf(name, sizeof(name), "%s - [%s]:%d", given ? given : "app", CLIENT_ADDR(c), client_port(c));
	else
		snprintf(name, sizeof(name), "%s - %s:%d", given ? given : "app", CLIENT_ADDR(c), client_port(c));
	return varcache_set(&c->vars, "application_name", name);
}

/*
 * max_client_conn counts logged-in clients only: asked at the StartupMessage
 * (an early answer, as PgBouncer's) and again when authentication is done,
 * since many may authenticate at once. Sockets still logging in are bounded
 * by max_login_clients instead (the listener).
 */
static bool refuse_over_max_client_conn(struct client *c)
{
	struct sluice *sl = c->sl;
	if (sl->n_logged_in < sl->cfg->max_client_conn)
		return false;
	char detail[128];
	snprintf(detail, sizeof(detail), "max_client_conn (%d) is reached.", sl->cfg->max_client_conn);
	/* PgBouncer's text (scripts and its tests match "max_client_conn"), PostgreSQL's SQLSTATE */
	client_fatal(c, SQLSTATE_TOO_MANY_CONNECTIONS, detail, NULL, "no more connections allowed (max_client_conn)");
	return true;
}

static void handle_startup(struct client *c, const uint8_t *body, size_t len, uint32_t version)
{
	struct msgreader r;
	struct sluice *sl = c->sl;
	mr_init(&r, body, len);
	if (!read_startup_params(c, &r, version))
		return;
	if (!c->user || !*c->user) {
		client_fatal(c, SQLSTATE_INVALID_AUTH_SPEC, NULL, NULL,
		             "no PostgreSQL user name specified in startup packet");
		return;
	}
	if (!c->database || !*c->database) {
		free(c->database);
		c->database = strdup(c->user);
	}
	if (!c->database || (sl->cfg->application_name_add_host && !sluice_is_console_db(c->database) &&
	                     !add_host_to_application_name(c))) {
		client_fatal(c, SQLSTATE_INTERNAL_ERROR, NULL, NULL, "out of memory");
		return;
	}
	if (refuse_over_max_client_conn(c))
		return;
	if (sl->shutting_down && !sluice_is_console_db(c->database)) {   /* the console stays open */
		client_fatal(c, SQLSTATE_CANNOT_CONNECT_NOW, NULL, NULL, "pgsluice is shutting down");
		return;
	}
	if (!c->tls && sl->tls.client_mode >= TLS_REQUIRE && c->peer.sa.sa_family != AF_UNIX) {
		client_fatal(c, SQLSTATE_INVALID_AUTH_SPEC, "client_tls_sslmode requires TLS on TCP connections.",
		             "Connect with sslmode=require or stricter.", "SSL required");
		return;
	}
	/* An unknown database is told only after authentication (login_succeeded):
	 * the client goes through the same exchange either way, so neither the
	 * answer nor its timing says which databases exist (as PgBouncer's fake db). */
	if (sl->cfg->log_connections)
		log_info("C-%llu: %s/%s@%s:%d login attempt", (unsigned long long)c->id,
		         c->database, c->user, CLIENT_ADDR(c), client_port(c));
	start_auth(c);
}

static void handle_cancel_request(struct client *c, const uint8_t *body)
{
	struct msgreader r;
	mr_init(&r, body, 8);
	int32_t pid = mr_int32(&r), key = mr_int32(&r);
	struct sluice *sl = c->sl;
	pool_move_client(c, NULL, CL_CANCEL);
	if (cancel_route(sl, pid, &key)) {
		struct client *target = find_by_key(sl, pid, key);
		if (target && target->server)
			cancel_forward(target->server, pool_cancels_done);
		else
			log_debug("cancel request for an unknown client or one without a server ignored");
	}
	client_close(c, "cancel request");
}

/*
 * Answer SSLRequest with 'S' and run the handshake (protocol-flow.html
 * 55.2.10): from here the client's bytes are read and written through
 * OpenSSL on the same socket.
 */
static void start_tls(struct client *c)
{
	connio_add(&c->io, "S", 1);
	SSL *ssl = SSL_new(c->sl->tls.accept_ctx);
	if (!ssl || !connio_start_tls(&c->io, ssl, true)) {
		client_close(c, "could not start TLS");
		return;
	}
	c->tls = true;
}

/* The untyped first packets: SSLRequest, GSSENCRequest, CancelRequest, StartupMessage. */
static bool startup_packet(struct client *c, struct iobuf *in)
{
	if (iobuf_len(in) < 8)
		return false;
	const uint8_t *hdr = iobuf_data(in);
	uint32_t len = ((uint32_t)hdr[0] << 24) | ((uint32_t)hdr[1] << 16) | ((uint32_t)hdr[2] << 8) | hdr[3];
	uint32_t code = ((uint32_t)hdr[4] << 24) | ((uint32_t)hdr[5] << 16) | ((uint32_t)hdr[6] << 8) | hdr[7];
	if (len < 8 || len > PROTO_MAX_STARTUP_LEN) {
		client_fatal(c, SQLSTATE_PROTOCOL_VIOLATION, NULL, NULL, "invalid length of startup packet");
		return false;
	}
	if (iobuf_len(in) < len)
		return false;
	const uint8_t *pkt = iobuf_data(in);
	if (code == PROTO_SSL_REQUEST && !c->tls && c->sl->tls.accept_ctx && c->peer.sa.sa_family != AF_UNIX) {
		iobuf_drain(in, len);
		if (iobuf_len(in) > 0) {
			/* bytes sent before the handshake could be a man in the middle's (CVE-2021-23214) */
			client_fatal(c, SQLSTATE_PROTOCOL_VIOLATION, NULL, NULL,
			             "received unencrypted data after SSL request");
			return false;
		}
		start_tls(c);
		return false;   /* the startup packet comes through TLS */
	}
	if (code == PROTO_SSL_REQUEST || code == PROTO_GSSENC_REQUEST) {
		iobuf_drain(in, len);
		connio_add(&c->io, "N", 1);
		return true;
	}
	if (code == PROTO_CANCEL_REQUEST && len == 16) {
		handle_cancel_request(c, pkt + 8);
		return false;
	}
	if ((code >> 16) != 3) {
		client_fatal(c, SQLSTATE_PROTOCOL_VIOLATION, NULL, NULL,
		             "unsupported frontend protocol %u.%u: pgsluice supports 3.0",
		             code >> 16, code & 0xffff);
		return false;
	}
	uint8_t *copy = malloc(len - 8);
	if (!copy) {
		client_fatal(c, SQLSTATE_INTERNAL_ERROR, NULL, NULL, "out of memory");
		return false;
	}
	memcpy(copy, pkt + 8, len - 8);
	iobuf_drain(in, len);
	c->login->step = CL_AUTH_PASSWORD;   /* until start_auth says otherwise */
	handle_startup(c, copy, len - 8, code);
	free(copy);
	return false;   /* the caller re-checks the state */
}

static void login_input(struct client *c)
{
	struct iobuf *in = &c->io.in;
	while (c->state == CL_LOGIN) {
		if (c->login->step == CL_AUTH_QUERY || c->login->step == CL_AUTH_DERIVING)
			return;     /* the client speaks after our next request; keep its bytes */
		if (c->login->step == CL_AUTH_STARTUP) {
			if (!startup_packet(c, in))
				return;
			continue;
		}
		uint8_t type;
		uint32_t len;
		if (!proto_peek_header(in, &type, &len))
			return;
		if (type != PqMsg_PasswordMessage) {
			client_fatal(c, SQLSTATE_PROTOCOL_VIOLATION, NULL, NULL,
			             "expected password response, got message type %d", type);
			return;
		}
		if (len < 4 || len > MAX_AUTH_MESSAGE_LEN) {
			char detail[128];
			snprintf(detail, sizeof(detail), "Its length is %u bytes; pgsluice accepts at most %d.",
			         (unsigned)len, MAX_AUTH_MESSAGE_LEN);
			client_fatal(c, SQLSTATE_PROTOCOL_VIOLATION, len < 4 ? NULL : detail, NULL, "%s",
			             len < 4 ? "invalid message length" : "password packet too long");
			return;
		}
		if (iobuf_len(in) < 1 + (size_t)len)
			return;
		uint8_t body[MAX_AUTH_MESSAGE_LEN];
		memcpy(body, iobuf_data(in) + PROTO_HEADER_LEN, len - 4);
		iobuf_drain(in, 1 + (size_t)len);
		struct msgreader r;
		mr_init(&r, body, len - 4);
		if (c->login->step == CL_AUTH_PASSWORD)
			handle_password(c, &r);
		else
			handle_sasl(c, &r);
	}
}

/* Refuse c over max_db_client_connections / max_user_client_connections (key), PgBouncer's text. */
static void refuse_client_limit(struct client *c, const char *key, int max, const char *what, const char *name)
{
	char detail[200];
	snprintf(detail, sizeof(detail), "%s (%d) is reached for %s \"%s\".", key, max, what, name);
	client_fatal(c, SQLSTATE_TOO_MANY_CONNECTIONS, detail, NULL, "client connections exceeded (%s)", key);
}

static void login_succeeded(struct client *c)
{
	struct sluice *sl = c->sl;
	if (refuse_over_max_client_conn(c))
		return;
	if (sluice_is_console_db(c->database)) {
		if (sl->console)
			sl->console->login(c);   /* the admin console, not a pool */
		else
			client_fatal(c, SQLSTATE_INTERNAL_ERROR, NULL, NULL, "the admin console is not available");
		return;
	}
	const struct db_config *db = config_find_db(sl->cfg, c->database);
	send_auth_request(c, AUTH_REQ_OK, NULL, 0);
	if (!db) {
		/* PostgreSQL too checks the database after authentication (InitPostgres) */
		client_fatal(c, SQLSTATE_INVALID_CATALOG_NAME,
		             "pgsluice has no [databases] entry for it and no \"*\" fallback entry.", NULL,
		             "no such database: %s", c->database);   /* PgBouncer's text */
		return;
	}
	if (sluice_db_disabled(sl, c->database)) {   /* the console's DISABLE, as PgBouncer */
		client_fatal(c, SQLSTATE_OBJECT_NOT_IN_STATE, NULL, NULL,
		             "database \"%s\" is disabled", c->database);   /* PgBouncer 1.25's text */
		return;
	}
	/* the counts walk pools and clients: only where a limit is set */
	int max = pool_max_db_clients(sl->cfg, c->database);
	if (max > 0 && pool_count_db_clients(sl, c->database) >= max) {
		refuse_client_limit(c, "max_db_client_connections", max, "database", c->database);
		return;
	}
	max = pool_max_user_clients(sl->cfg, c->user);
	if (max > 0 && pool_count_user_clients(sl, c->user) >= max) {
		refuse_client_limit(c, "max_user_client_connections", max, "user", c->user);
		return;
	}
	struct pool *p = pool_get(sl, db, c->database, db->user ? db->user : c->user);
	if (!p) {
		client_fatal(c, SQLSTATE_INTERNAL_ERROR, NULL, NULL, "out of memory");
		return;
	}
	/* Pass-through: the client proved it knows the password behind a SCRAM
	 * secret, so its ClientKey can log the same role into servers. */
	if (c->login->scram && c->login->scram->have_client_key && !db->user && !p->password &&
	    c->login->password && password_kind_of(c->login->password) == PASSWORD_SCRAM) {
		scram_parse_secret(c->login->password, &p->scram_secret);
		memcpy(p->scram_client_key, c->login->scram->client_key, SCRAM_KEY_LEN);
		p->have_scram_keys = true;
	}
	/* PAM and LDAP: the password the client proved logs the same role into
	 * servers when nothing else has one (PgBouncer keeps it likewise, #285). */
	if (c->login && (c->login->method == AUTH_TYPE_PAM || c->login->method == AUTH_TYPE_LDAP) &&
	    c->login->proved_password && !db->user && !p->password) {
		free(p->proved_password);
		p->proved_password = c->login->proved_password;
		c->login->proved_password = NULL;
	}
	login_free(c);   /* an idle client keeps nothing of its login */
	pool_move_client(c, p, CL_NONE);
	do {
		RAND_bytes((unsigned char *)&c->cancel_pid, sizeof(c->cancel_pid));
		RAND_bytes((unsigned char *)&c->cancel_key, sizeof(c->cancel_key));
		cancel_key_stamp(sl->cfg, &c->cancel_pid, &c->cancel_key);   /* peer_id, for [peers] */
	} while (find_by_key(sl, c->cancel_pid, c->cancel_key));
	if (c->replication) {
		pool_start_replication(p, c);   /* welcomed once its own server logged in */
		return;
	}
	if (p->have_welcome)
		client_welcome(c);
	else
		pool_wait_for_welcome(p, c);
}

static void welcome_client(struct client *c)
{
	struct pool *p = c->pool;
	struct msgbuf m;
	if (c->state != CL_ACTIVE)
		pool_move_client(c, p, CL_ACTIVE);
	varcache_fill_missing(&c->vars, &p->welcome_vars);
	msg_init(&m);
	for (int i = 0; i < varcache_count(); i++)
		if (varcache_get(&c->vars, i))
			msg_add_parameter_status(&m, varcache_name(i), varcache_get(&c->vars, i));
	for (char **kv = p->welcome_other; kv && kv[0]; kv += 2)
		msg_add_parameter_status(&m, kv[0], kv[1]);
	/* PgBouncer 1.25 tells every client its version and the pooling it gets */
	char maxps[24];
	snprintf(maxps, sizeof(maxps), "%d", c->sl->cfg->max_prepared_statements);
	msg_add_parameter_status(&m, "pgbouncer.version", PACKAGE_VERSION);
	msg_add_parameter_status(&m, "pgbouncer.max_prepared_statements", maxps);
	msg_add_parameter_status(&m, "pgbouncer.pool_mode", pool_mode_name(p->pool_mode));
	if (c->sl->cfg->login_notify_message && c->sl->cfg->login_notify_message[0]) {
		/* before ReadyForQuery, as PgBouncer's login_notify_message */
		msg_add_error(&m, PqMsg_NoticeResponse, "NOTICE", SQLSTATE_SUCCESSFUL_COMPLETION, NULL, NULL, "%s",
		              c->sl->cfg->login_notify_message);
	}
	msg_begin(&m, PqMsg_BackendKeyData);
	msg_add_int32(&m, c->cancel_pid);
	msg_add_int32(&m, c->cancel_key);
	msg_end(&m);
	msg_add_ready(&m, 'I');
	if (!msg_flush_to(&m, &c->io.out)) {
		msg_free(&m);
		client_fatal(c, SQLSTATE_INTERNAL_ERROR, NULL, NULL, "out of memory");
		return;
	}
	msg_free(&m);
	connio_resume_read(&c->io);
	if (iobuf_len(&c->io.in) > 0)
		client_relay(c);
}


/* ---- relay ---- */

/* Check the header of the next client message; false after a FATAL. */
static bool check_header(struct client *c, uint8_t type, uint32_t len)
{
	if (len < 4) {
		client_fatal(c, SQLSTATE_PROTOCOL_VIOLATION, NULL, NULL,
		             "invalid message length %u for message type \"%c\"", len, type);
		return false;
	}
	if (type == PqMsg_Query && c->sl->cfg->disable_pqexec) {
		/* PgBouncer's disable_pqexec: one Query can carry many statements (SQL injection) */
		log_error("C-%llu: client used \"Query\" packet type", (unsigned long long)c->id);
		client_fatal(c, SQLSTATE_PROTOCOL_VIOLATION, NULL, NULL, "PQexec disallowed");
		return false;
	}
	if ((int64_t)len > c->sl->cfg->max_packet_size) {
		char detail[160];
		snprintf(detail, sizeof(detail), "The message is %u bytes; max_packet_size is %lld bytes.",
		         len, (long long)c->sl->cfg->max_packet_size);
		client_fatal(c, SQLSTATE_PROTOCOL_VIOLATION, detail, NULL, "message too large");
		return false;
	}
	return true;
}

/* The message types relay_batch may forward (it looks further at Bind and Describe). */
static inline bool batch_type(uint8_t type)
{
	return type == PqMsg_Bind || type == PqMsg_Describe || type == PqMsg_Execute || type == PqMsg_Sync ||
	       type == PqMsg_Flush;
}

/*
 * Bind, Describe (of a portal or the unnamed statement), Execute, Flush and
 * Sync forwarded in one move to the linked server s (a named statement's
 * Bind, which prepared.c renames, first in the run only): the messages whole in c's input from its front, for a client
 * none of whose steps has anything to do with them (no LISTEN state, no
 * SET pending or tracked through the extended protocol, not skipping to a
 * Sync, no batch answered locally; middleware state only as far as
 * client_step_batch_message does its step in the run: the unnamed
 * portal's tags, a batch's admitted Execute, no cache). For such a
 * client and message every step of client_relay's per-message path passes
 * (client_step, notify_intercept, prepared_client_message); what is left is
 * the accounting (server_note_request), the reply queue's entry and the
 * bytes. Returns the bytes moved; 0: the next message takes the
 * per-message path (or the client FATALed on out of memory: its state is
 * no longer CL_ACTIVE).
 */
/* relay_batch's loop; mw (c has middleware state) a constant, so that the usual
 * client's copy of the loop has none of the middleware's branches. */
static inline __attribute__((always_inline)) size_t relay_batch_run(struct client *c, struct server *s,
                                                                     size_t pending, const bool mw)
{
	struct iobuf *in = &c->io.in;
	const uint8_t *data = iobuf_data(in);
	size_t have = iobuf_len(in), at = pending, out_len = connio_out_len(&s->io);
	int64_t max_len = c->sl->cfg->max_packet_size;
	if (have - at >= PROTO_HEADER_LEN)
		c->last_activity = now_usec();    /* as the per-message path sets it at every header */
	while (have - at >= PROTO_HEADER_LEN && out_len + at < RELAY_HIGH_WATER) {
		const uint8_t *msg = data + at, *body = msg + PROTO_HEADER_LEN;
		uint8_t type = msg[0];
		uint32_t len = proto_header_len(msg);
		size_t total = 1 + (size_t)len, body_len = (size_t)len - 4;
		if (len < 4 || (int64_t)len > max_len || have - at < total)
			break;     /* check_header's cases, or not whole yet */
		if (type == PqMsg_Bind) {
			const uint8_t *nul = memchr(body, 0, body_len);
			if (!nul || nul + 1 >= body + body_len || (mw && nul[1] != 0))
				break;    /* (a named statement's tags: bind_step) */
			if (nul[1] != 0 && prepared_active(c)) {
				/* A named statement's Bind, which prepared.c renames: its new head
				 * goes to the server at once, so only as the run's first message. */
				if (at > 0)
					break;    /* also behind pending bytes of the message before */
				enum client_msg_result res = prepared_client_message(c, s, type, len);
				if (res == CLIENT_MSG_FAILED) {
					client_fatal(c, SQLSTATE_INTERNAL_ERROR, NULL, NULL, "out of memory");
					return 0;
				}
				if (res == CLIENT_MSG_DONE) {
					/* the head went; the parameters that follow it are the run's first bytes */
					server_note_request(s, c, type);
					at = c->relay_left;
					c->relay_left = 0;
					data = iobuf_data(in);
					have = iobuf_len(in);
					continue;
				}
				if (res != CLIENT_MSG_PASS)
					return 0;    /* not whole: cannot be, the per-message path waits */
			}
		} else if (type == PqMsg_Describe) {
			/* a named statement's Describe is renamed too */
			if (body_len < 1 || (body[0] == 'S' && (body_len < 2 || body[1] != 0)))
				break;
		} else if (!batch_type(type)) {
			break;
		}
		if (mw && !client_step_batch_message(c, s, type, body, body_len))
			break;    /* the middleware's step may answer or refuse it */
		server_note_request(s, c, type);    /* reads c->last_activity */
		replyq_note_request(&s->replies, type);    /* prepared_note_request, inline */
		if (mw && type == PqMsg_Execute)
			client_step_relayed(c, s);    /* its usage record rides on the entry just made */
		at += total;
	}
	if (at == pending)
		return 0;    /* no message added: the caller moves what is pending */
	c->relay_left = 0;    /* the pending rest of a message goes with the run */
	if (c->settings_tainted) {
		s->settings_tainted = true;    /* its answers may depend on what c changed */
		s->settings_dirty = true;      /* and the next other client's settings too */
	}
	if (!iobuf_move(&s->io.out, in, at)) {
		client_fatal(c, SQLSTATE_INTERNAL_ERROR, NULL, NULL, "out of memory");
		return 0;
	}
	c->sl->stats.bytes_received += at;
	c->pool->stats.bytes_received += at;
	return at;
}

/* The batch relay for c: see relay_batch_run above. */
static size_t relay_batch(struct client *c, struct server *s, size_t pending)
{
	if (c->notify || c->pending_setting || c->skipping_to_sync || c->local_batch_open ||
	    (c->settings_ext && settings_ext_active(c)))
		return 0;
	if (!c->aic)
		return relay_batch_run(c, s, pending, false);    /* (the loop without the middleware's steps) */
	return client_step_batch_ready(c) ? relay_batch_run(c, s, pending, true) : 0;
}

static void client_relay(struct client *c)
{
	struct iobuf *in = &c->io.in;
	for (;;) {
		struct server *s = c->server;
		if (c->state != CL_ACTIVE)
			return;
		if (s && s->internal != SV_INTERNAL_NONE)
			return;      /* setup running; client_server_linked resumes */
		if (c->drop_left > 0) {
			size_t n = iobuf_len(in);
			if (n == 0)
				return;
			if (n > c->drop_left)
				n = c->drop_left;
			iobuf_drain(in, n);
			c->drop_left -= (uint32_t)n;
			continue;
		}
		if (s && c->relay_left > 0) {
			size_t n = iobuf_len(in);
			if (n == 0)
				return;
			if (n > (size_t)c->relay_left + PROTO_HEADER_LEN && !c->checked &&
			    batch_type(iobuf_data(in)[c->relay_left])) {
				/* the rest of a message (a Parse, a Query) and a run behind it: one move */
				if (relay_batch(c, s, c->relay_left) > 0)
					continue;
				if (c->state != CL_ACTIVE)
					return;    /* relay_batch's out of memory */
			}
			if (n > c->relay_left)
				n = c->relay_left;
			if (!iobuf_move(&s->io.out, in, n)) {
				client_fatal(c, SQLSTATE_INTERNAL_ERROR, NULL, NULL, "out of memory");
				return;
			}
			c->relay_left -= (uint32_t)n;
			c->sl->stats.bytes_received += n;
			c->pool->stats.bytes_received += n;
			continue;
		}
		if (s && !c->checked && iobuf_len(in) >= PROTO_HEADER_LEN && batch_type(iobuf_data(in)[0])) {
			if (relay_batch(c, s, 0) > 0)
				continue;
			if (c->state != CL_ACTIVE)
				return;    /* relay_batch's out of memory */
		}
		uint8_t type;
		uint32_t len;
		if (!proto_peek_header(in, &type, &len))
			return;
		if (s && c->checked && type == PqMsg_Query) {
			/* a Query looked at before its server was linked (every simple
			 * transaction): its header checks and steps are done, and nothing
			 * in between changes what the checks below would find */
			c->last_activity = now_usec();
			goto linked;
		}
		if (!check_header(c, type, len))
			return;
		c->last_activity = now_usec();
		if (type == PqMsg_Terminate) {
			client_close(c, "client close request");
			return;
		}
		if (c->skipping_to_sync) {
			if (type == PqMsg_Sync) {
				c->skipping_to_sync = false;
				client_send_ready(c, 'I');
			}
			c->parse_noted = false;
			c->drop_left = 1 + len;
			continue;
		}
		if (type == PqMsg_Sync) {
			/* a batch ends: what was decided for its first Execute is spent */
			if (c->aic)
				client_step_batch_end(c);
			if (client_step_sync(c)) {
				c->drop_left = 1 + len;
				continue;
			}
		}
		if (!s && !c->checked && (type == PqMsg_Parse || type == PqMsg_Bind) &&
		    (!c->aic || !client_step_batch_admitted(c)) &&
		    ((c->aic && client_step_attributed(c)) || client_step_find_comment(in, PROTO_HEADER_LEN, len) >= 0)) {
			int step = client_batch_step(c, type, len);
			if (step < 0)
				return;
			if (step == 0)
				continue;
		}
		if (!c->checked) {
			/* once per message, even when the relay stops and resumes */
			if (type == PqMsg_Query && iobuf_len(in) >= 1 + (size_t)len) {
				/* each asked only when the statement's first letters allow it */
				const uint8_t *text = iobuf_data(in) + PROTO_HEADER_LEN;
				if (client_may_intercept_set(text, len - 4) && client_intercept_set(c, len))
					continue;
				int dealloc = prepared_may_be_deallocate(text, len - 4) ? prepared_intercept_deallocate(c, len) : 1;
				if (dealloc < 0)
					return;    /* the server's ReadyForQuery resumes it */
				if (dealloc == 0)
					continue;
			}
			int step = client_step(c, s, type, len);
			if (step < 0)
				return;
			if (step == 0)
				continue;
			/* Parse/Bind/Execute are looked at once a server is linked. */
			c->checked = s || type == PqMsg_Query;
		}
		if (!s && type == PqMsg_Parse) {
			int local = prepared_answer_unlinked(c, type, len);
			if (local < 0)
				return;
			if (local == 0) {
				c->parse_noted = false;    /* answered here: no second step */
				continue;
			}
		}
		if (!s) {
			c->wait_start = now_usec();
			pool_request_server(c->pool, c);
			return;   /* linking resumes the relay */
		}
linked:
		if (connio_out_len(&s->io) >= RELAY_HIGH_WATER) {
			connio_pause_read(&c->io);
			return;   /* the server's drain resumes us */
		}
		if (s->pool->pool_mode != POOL_MODE_SESSION) {
			int n = notify_intercept(c, s, type, len);
			if (n < 0)
				return;   /* more bytes, or the listening connection's LISTEN resumes it */
			if (n == 0)
				continue;
		}
		/* (a longer Query is passed by prepared.c unread: no call for it) */
		enum client_msg_result res = (type != PqMsg_Query || len - 4 <= PREPARED_QUERY_LOOK_MAX) && prepared_active(c)
		                             ? prepared_client_message(c, s, type, len) : CLIENT_MSG_PASS;
		if (res == CLIENT_MSG_NEED_MORE || res == CLIENT_MSG_WAIT)
			return;
		if (res == CLIENT_MSG_FAILED) {
			client_fatal(c, SQLSTATE_INTERNAL_ERROR, NULL, NULL, "out of memory");
			return;
		}
		server_note_request(s, c, type);
		if (c->settings_tainted) {
			s->settings_tainted = true;    /* its answers may depend on what c changed */
			s->settings_dirty = true;      /* and the next other client's settings too */
		}
		c->checked = false;
		if (res == CLIENT_MSG_DONE) {
			if (c->aic)    /* a Describe of a statement, renamed by prepared.c: its capture rides on it */
				client_step_attach_fill(c, s);
			client_drop_pending_setting(c);
			continue;
		}
		replyq_note_request(&s->replies, type);    /* prepared_note_request, inline */
		if (c->notify && c->notify->exec_pending)
			notify_relayed(c, s, type);
		if (c->pending_setting) {
			prepared_attach_setting(s, type, c->pending_setting);
			c->pending_setting = NULL;
		}
		if ((c->aic && client_step_has_pending(c)) || c->local_batch_open)
			client_step_relayed(c, s);
		c->relay_left = 1 + len;
	}
}

static void server_linked(struct client *c)
{
	connio_resume_read(&c->io);
	client_relay(c);
}

static void resume_client(struct client *c)
{
	if (c->state == CL_CLOSING)
		return;
	connio_resume_read(&c->io);
	if (iobuf_len(&c->io.in) > 0)
		client_relay(c);    /* with nothing read it has nothing to do (each transaction's end) */
}

static void client_io_read(void *arg)
{
	struct client *c = arg;
	if (c->state == CL_CLOSING) {
		iobuf_drain(&c->io.in, iobuf_len(&c->io.in));
		return;
	}
	if (c->state == CL_LOGIN)
		login_input(c);
	else if (c->state == CL_ACTIVE)
		client_relay(c);
	else if (c->state == CL_ADMIN)
		c->sl->console->input(c);
	else if ((c->state == CL_WAITING || c->state == CL_WAITING_LOGIN) &&
	         iobuf_len(&c->io.in) >= RELAY_HIGH_WATER)
		connio_pause_read(&c->io);   /* linking reads on; below this, reading notices a hang-up */
	/* CL_WAITING*: the data waits in the buffer until a server is linked */
}

static void client_io_drain(void *arg)
{
	struct client *c = arg;
	if (c->state == CL_CLOSING)
		return;
	if (c->state == CL_ADMIN)
		c->sl->console->input(c);   /* its answers drained: read on */
	else if (c->server)
		relay_resume(c->server);
	else
		notify_client_idle(c);   /* notifications held while its output was backed up */
}

/* Only a connecting side is told of a finished handshake; a client always accepts. */
static void client_io_connect(void *arg)
{
	(void)arg;
}

static void close_later_cb(evutil_socket_t fd, short what, void *arg)
{
	struct client *c = arg;
	(void)fd;
	(void)what;
	client_close(c, close_reason_of(c));
}

/*
 * A failed TLS handshake has its alert (unknown CA, certificate required)
 * on the way: keep the socket a moment so the client learns why, instead
 * of seeing the connection vanish.
 */
static void close_after_tls_error(struct client *c, const char *why)
{
	struct timeval tv = { 0, 200000 };
	if (!c->close_timer)
		c->close_timer = evtimer_new(c->sl->base, close_later_cb, c);
	if (!c->close_timer) {
		client_close(c, why);
		return;
	}
	log_info("C-%llu: %s:%d TLS handshake failed: %s", (unsigned long long)c->id, CLIENT_ADDR(c), client_port(c), why);
	client_set_close_reason(c, why);
	client_detach(c);
	pool_move_client(c, NULL, CL_CLOSING);
	connio_stop(&c->io);
	evtimer_add(c->close_timer, &tv);
}

static void client_io_error(void *arg, const char *why)
{
	struct client *c = arg;
	if (c->state == CL_CLOSING)
		client_close(c, close_reason_of(c));
	else if (!why)
		client_close(c, "client unexpected eof");
	else if (c->io.state == IO_HANDSHAKE)
		close_after_tls_error(c, why);
	else
		client_close(c, why);
}

void client_start(struct sluice *sl)
{
	static const struct client_events events = {
		.fatal = fatal_client, .fatal_raw = fatal_raw_client, .close = close_client,
		.resume = resume_client, .linked = server_linked, .welcome = welcome_client,
		.parsed = client_step_parsed,
	};
	sl->client_events = &events;
}
