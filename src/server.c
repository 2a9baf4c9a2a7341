/* SPDX-License-Identifier: PostgreSQL */
/*
 * server.c - see server.h. Login follows protocol-flow.html 55.2.1 from the
 * client's side; replies of a linked server are relayed to its client with
 * only ReadyForQuery and ParameterStatus inspected (DESIGN.md section 3).
 */
#include "server.h"

#include <errno.h>
#include <event2/buffer.h>
#include <event2/bufferevent.h>
#include <event2/bufferevent_ssl.h>
#include <event2/dns.h>
#include <event2/event.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <openssl/evp.h>
#include <openssl/ssl.h>
#include <sys/un.h>

#include "ai/cache_proto.h"
#include "auth.h"
#include "authquery.h"
#include "cancel.h"
#include "client.h"
#include "client_step.h"
#include "log.h"
#include "pool.h"
#include "proto.h"
#include "sluice.h"
#include "tls.h"
#include "util.h"

/* Messages pgsluice reads whole from a server (login, internal queries,
 * ReadyForQuery, ParameterStatus) are far below this; a larger one is
 * a broken server. */
#define MAX_INSPECTED_LEN (1024 * 1024)

static uint64_t next_server_id = 1;

static void server_read_cb(struct bufferevent *bev, void *arg);
static void server_write_cb(struct bufferevent *bev, void *arg);
static void server_event_cb(struct bufferevent *bev, short events, void *arg);
static void ssl_response(struct server *s);

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
	for (int i = 0; i < varcache_count(); i++)
		if (p->startup_vars.values[i]) {
			msg_add_string(&m, varcache_name(i));
			msg_add_string(&m, p->startup_vars.values[i]);
		}
	msg_add_byte(&m, 0);
	msg_end(&m);
	msg_flush_to(&m, bufferevent_get_output(s->bev));
	msg_free(&m);
}

static bool start_connect(struct server *s)
{
	struct pool *p = s->pool;
	struct sluice *sl = p->sl;
	if (!p->host || p->host[0] == '/') {
		struct sockaddr_un un;
		memset(&un, 0, sizeof(un));
		un.sun_family = AF_UNIX;
		snprintf(un.sun_path, sizeof(un.sun_path), "%s/.s.PGSQL.%d",
		         p->host ? p->host : sl->cfg->unix_socket_dir, p->port);
		return bufferevent_socket_connect(s->bev, (struct sockaddr *)&un, sizeof(un)) == 0;
	}
	return bufferevent_socket_connect_hostname(s->bev, sl->dns, AF_UNSPEC, p->host, p->port) == 0;
}

struct server *server_launch(struct pool *p)
{
	struct sluice *sl = p->sl;
	struct server *s = calloc(1, sizeof(*s));
	if (!s)
		return NULL;
	s->bev = bufferevent_socket_new(sl->base, -1, BEV_OPT_CLOSE_ON_FREE);
	if (!s->bev) {
		free(s);
		return NULL;
	}
	s->pool = p;
	s->id = next_server_id++;
	s->tx_status = 'I';
	s->connect_time = s->last_used = now_usec();
	s->state = SV_LOGIN;
	TAILQ_INSERT_TAIL(&p->login_servers, s, entry);
	p->n_login++;
	bufferevent_setcb(s->bev, server_read_cb, server_write_cb, server_event_cb, s);
	bufferevent_setwatermark(s->bev, EV_WRITE, RELAY_HIGH_WATER / 2, 0);
	bufferevent_enable(s->bev, EV_READ | EV_WRITE);
	log_debug("S-%llu: %s/%s new connection to server", (unsigned long long)s->id, p->db_name, p->user_name);
	if (!start_connect(s)) {
		char err[256];
		snprintf(err, sizeof(err), "could not start connection: %s", strerror(errno));
		usec_t started = s->connect_time;
		server_close(s, err);
		pool_login_failed(p, started, NULL, 0, err);
		return NULL;
	}
	return s;
}

void server_close(struct server *s, const char *reason)
{
	struct pool *p = s->pool;
	struct client *c = s->client;
	if (p->sl->cfg->log_disconnections || s->state == SV_LOGIN)
		log_info("S-%llu: %s/%s closing because: %s (age=%llds)", (unsigned long long)s->id,
		         p->db_name, p->user_name, reason,
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
	pool_unlist_server(s);
	cancel_detach(s);
	bufferevent_free(s->bev);
	varcache_clear(&s->vars);
	prepared_server_free(s);
	free_params(s->other_params);
	if (s->scram_started)
		scram_client_free(&s->scram);
	free(s);
	if (requeue)
		pool_request_server(p, c);
}

static bool send_query(struct server *s, const char *sql, enum server_internal why)
{
	struct msgbuf m;
	msg_init(&m);
	msg_begin(&m, PqMsg_Query);
	msg_add_string(&m, sql);
	msg_end(&m);
	bool ok = msg_flush_to(&m, bufferevent_get_output(s->bev));
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
	const char *looked_up = authquery_cached(p->sl, p->db_name, p->user_name);
	return looked_up && *looked_up ? looked_up : NULL;
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
	msg_flush_to(&m, bufferevent_get_output(s->bev));
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
		return "SCRAM login to the server needs a plain-text password, or a client that logged in with SCRAM first";
	}
	s->scram_started = true;
	/* Over TLS, bind the exchange to the channel when the server offers it, so
	 * a man in the middle holding a valid certificate cannot relay it. */
	const char *mechanism = "SCRAM-SHA-256";
	unsigned char cbind[EVP_MAX_MD_SIZE];
	size_t cbind_len = 0;
	SSL *ssl = s->tls ? bufferevent_openssl_get_ssl(s->bev) : NULL;
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
	msg_flush_to(&m, bufferevent_get_output(s->bev));
	msg_free(&m);
	free(first);
	return NULL;
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
			return "server asks for a cleartext password, and pgsluice has no plain-text password for this user";
		send_password_message(s, pw, strlen(pw), true);
		return NULL;
	case AUTH_REQ_MD5: {
		const uint8_t *salt = mr_bytes(r, 4);
		char stored[MD5_PASSWD_LEN + 1], response[MD5_PASSWD_LEN + 1];
		if (!salt)
			return "malformed MD5 authentication request";
		if (!pw || password_kind_of(pw) == PASSWORD_SCRAM)
			return "server asks for MD5, and pgsluice has no plain-text password or MD5 hash for this user";
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
	case AUTH_REQ_SASL_CONT: {
		if (!s->scram_started)
			return "unexpected SASL continue message";
		size_t len = mr_remaining(r);
		char *final = scram_client_handle_server_first(&s->scram, (const char *)mr_bytes(r, len), len, &err);
		if (!final)
			return err;
		send_password_message(s, final, strlen(final), false);
		free(final);
		return NULL;
	}
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

static void login_done(struct server *s)
{
	struct pool *p = s->pool;
	log_debug("S-%llu: %s/%s login finished", (unsigned long long)s->id, p->db_name, p->user_name);
	pool_set_welcome(p, &s->vars, s->other_params);
	pool_server_ready(s);
}

static void login_fail(struct server *s, const uint8_t *msg, size_t len, const char *why)
{
	struct pool *p = s->pool;
	if (msg) {
		struct pg_error f;
		if (proto_parse_error(msg + PROTO_HEADER_LEN, len - PROTO_HEADER_LEN, &f))
			log_warning("S-%llu: %s/%s server login failed: %s %s", (unsigned long long)s->id,
			            p->db_name, p->user_name, f.sqlstate, f.message);
	} else {
		log_warning("S-%llu: %s/%s server login failed: %s", (unsigned long long)s->id,
		            p->db_name, p->user_name, why);
	}
	usec_t started = s->connect_time;
	server_close(s, "login failed");
	pool_login_failed(p, started, msg, len, why);
}

/* One whole message of a server in SV_LOGIN. Returns false when s is gone. */
static bool login_message(struct server *s, uint8_t type, const uint8_t *msg, size_t len)
{
	struct msgreader r;
	mr_init(&r, msg + PROTO_HEADER_LEN, len - PROTO_HEADER_LEN);
	switch (type) {
	case PqMsg_AuthenticationRequest: {
		const char *err = handle_auth_request(s, &r);
		if (err) {
			login_fail(s, NULL, 0, err);
			return false;
		}
		return true;
	}
	case PqMsg_ErrorResponse:
		login_fail(s, msg, len, NULL);
		return false;
	case PqMsg_ParameterStatus: {
		const char *name = mr_string(&r), *value = mr_string(&r);
		if (!r.bad && !varcache_set(&s->vars, name, value))
			add_other_param(s, name, value);
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
		if (!r.bad && !varcache_set(&s->vars, name, value))
			add_other_param(s, name, value);
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
		pool_server_ready(s);
		return false;
	}
	return true;
}

/* Inspect a whole ParameterStatus or ReadyForQuery on its way to the client. */
static void note_server_message(struct server *s, uint8_t type, const uint8_t *body, size_t len)
{
	struct msgreader r;
	mr_init(&r, body, len);
	if (type == PqMsg_ReadyForQuery) {
		s->tx_status = (char)mr_byte(&r);
		s->block_begun = false;
		s->last_ready = now_usec();
		if (s->pending_ready > 0)
			s->pending_ready--;
		if (s->tx_status == 'I' && s->client) {
			s->client->sl->stats.xact_count++;
			/* portals end with their transaction; with more batches in flight
			 * the names may already belong to the next one */
			if (s->client->n_portals && s->pending_ready == 0)
				client_step_transaction_ended(s->client);
		}
		pool_note_ready(s);   /* per-database stats (admin console) */
	} else if (type == PqMsg_ParameterStatus) {
		const char *name = mr_string(&r), *value = mr_string(&r);
		if (r.bad)
			return;
		if (!varcache_set(&s->vars, name, value))
			add_other_param(s, name, value);
		else if (s->client)
			varcache_set(&s->client->vars, name, value);   /* the client's own SET */
	}
}

/*
 * Transaction and statement pooling: after a ReadyForQuery the server goes
 * back to the pool when it is outside a transaction and has answered every
 * request of the client, and no message of the client is half relayed.
 * Returns true when s left c (then the relay of s stops).
 */
static bool transaction_end(struct server *s, struct client *c)
{
	if (s->tx_status != 'I' || s->pending_ready > 0 || s->unsynced || c->relay_left > 0)
		return false;
	c->server = NULL;
	s->client = NULL;
	pool_release_server(s, true);
	client_resume(c);   /* relays what the client pipelined after this transaction */
	return true;
}

/* The completion-cache fill the reply at the head of the queue is captured into, or NULL. */
static struct cache_entry *head_fill(const struct server *s)
{
	return s->replies.n > 0 ? s->replies.items[s->replies.head].cache : NULL;
}

static bool needs_whole(struct server *s, uint8_t type)
{
	return s->state == SV_LOGIN || s->internal != SV_INTERNAL_NONE || !s->client ||
	       type == PqMsg_ReadyForQuery || type == PqMsg_ParameterStatus ||
	       (type == PqMsg_RowDescription && head_fill(s)) ||
	       type == PqMsg_ParseComplete || type == PqMsg_BindComplete || type == PqMsg_CloseComplete ||
	       type == PqMsg_CommandComplete || prepared_wants_reply(s, type);
}

/* Handle one whole message; returns false when the relay loop must stop. */
static bool whole_message(struct server *s, uint8_t type, struct evbuffer *in, uint32_t len)
{
	size_t total = 1 + (size_t)len;
	uint8_t *msg = evbuffer_pullup(in, (ev_ssize_t)total);
	if (!msg) {
		server_close(s, "out of memory");
		return false;
	}
	if (s->state == SV_LOGIN || s->internal != SV_INTERNAL_NONE) {
		/* A copy, as the handlers may free s and with it the buffer. */
		uint8_t *copy = malloc(total);
		if (!copy) {
			server_close(s, "out of memory");
			return false;
		}
		memcpy(copy, msg, total);
		evbuffer_drain(in, total);
		bool go_on = s->state == SV_LOGIN ? login_message(s, type, copy, total)
		                                  : internal_message(s, type, copy, total);
		free(copy);
		return go_on;
	}
	if (!s->client) {
		/* An idle server speaks only to say it is going away. */
		struct pg_error f;
		if (type == PqMsg_ErrorResponse && proto_parse_error(msg + PROTO_HEADER_LEN, len - 4, &f))
			log_info("S-%llu: idle server sent: %s %s", (unsigned long long)s->id, f.sqlstate, f.message);
		if (type == PqMsg_ParameterStatus || type == PqMsg_NoticeResponse) {
			evbuffer_drain(in, total);
			return true;
		}
		server_close(s, "unexpected message from idle server");
		return false;
	}
	if (type == PqMsg_CommandComplete && len >= 9 &&
	    (memcmp(msg + PROTO_HEADER_LEN, "BEGIN", 5) == 0 || memcmp(msg + PROTO_HEADER_LEN, "START", 5) == 0))
		s->block_begun = true;    /* a block opened inside a batch: its reads may be rolled back */
	if (head_fill(s))
		cache_capture_whole(s, type, msg, total);
	prepared_see_reply(s, type, msg + PROTO_HEADER_LEN, len - 4);
	if (prepared_on_reply(s, type) == REPLY_SWALLOW) {
		evbuffer_drain(in, total);
		return true;
	}
	note_server_message(s, type, msg + PROTO_HEADER_LEN, len - 4);
	struct client *c = s->client;
	if (type == PqMsg_ReadyForQuery && s->tx_status != 'I' && s->pool->pool_mode == POOL_MODE_STATEMENT) {
		/* The client never sees itself inside a transaction block. */
		client_fatal(c, SQLSTATE_FEATURE_NOT_SUPPORTED, NULL,
		             "Use pool_mode = transaction or session for this database or user.",
		             "transaction blocks are not allowed in statement pooling mode");
		return false;   /* the server was closed with the client, as it is inside a transaction */
	}
	evbuffer_remove_buffer(in, bufferevent_get_output(c->bev), total);
	c->sl->stats.bytes_sent += total;
	s->pool->stats.bytes_sent += total;
	if (type == PqMsg_ReadyForQuery && s->pool->pool_mode != POOL_MODE_SESSION) {
		if (transaction_end(s, c))
			return false;
		if (s->pending_ready > 0 || evbuffer_get_length(bufferevent_get_input(c->bev)) == 0)
			return true;
		/* a client message waits for the server's answers (prepared.h,
		 * CLIENT_MSG_WAIT); what else s sent is relayed at its next read */
		client_resume(c);
		return false;
	}
	if (type == PqMsg_ReadyForQuery && s->pool->stale && s->pool->sl->cfg->server_fast_close &&
	    server_is_clean(s)) {
		/* session pooling: the target changed, and the operator asked not to
		 * wait for the client to leave */
		server_close(s, "server_fast_close: the database entry changed");
		return false;
	}
	return true;
}

static void server_relay(struct server *s)
{
	struct evbuffer *in = bufferevent_get_input(s->bev);
	for (;;) {
		struct client *c = s->client;
		if (c && s->internal == SV_INTERNAL_NONE && s->state != SV_LOGIN) {
			struct evbuffer *out = bufferevent_get_output(c->bev);
			if (evbuffer_get_length(out) >= RELAY_HIGH_WATER) {
				bufferevent_disable(s->bev, EV_READ);
				return;   /* client_write_cb resumes us */
			}
			if (s->relay_left == 0)
				prepared_flush_owed(s);
			if (s->relay_left > 0) {
				size_t n = evbuffer_get_length(in);
				if (n == 0)
					return;
				if (n > s->relay_left)
					n = s->relay_left;
				if (s->capture)
					cache_capture_stream(s, in, n);
				evbuffer_remove_buffer(in, out, n);
				s->relay_left -= (uint32_t)n;
				c->sl->stats.bytes_sent += n;
				s->pool->stats.bytes_sent += n;
				continue;
			}
		}
		uint8_t type;
		uint32_t len;
		if (!proto_peek_header(in, &type, &len))
			return;
		if (len < 4 || (needs_whole(s, type) && len > MAX_INSPECTED_LEN)) {
			server_close(s, "invalid message from server");
			return;
		}
		if (!needs_whole(s, type)) {
			if (head_fill(s))
				cache_capture_begin(s, type, len);
			prepared_on_reply(s, type);
			s->relay_left = 1 + len;
			continue;
		}
		if (evbuffer_get_length(in) < 1 + (size_t)len)
			return;
		if (!whole_message(s, type, in, len))
			return;
	}
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

bool server_link(struct server *s, struct client *c)
{
	char sql[4096];
	s->client = c;
	c->server = s;
	pool_move_server(s, SV_ACTIVE);
	/* One round trip checks the server and sets the client's parameters. */
	size_t check_len;
	bool check = add_check_query(s, sql, sizeof(sql), &check_len);
	int n = varcache_apply_sql(&c->vars, &s->vars, sql + check_len, sizeof(sql) - check_len);
	if (n < 0) {
		server_close(s, "client parameters too long");
		return false;
	}
	if (n > 0 || check) {
		log_debug("S-%llu: setting client parameters: %s", (unsigned long long)s->id, sql);
		/* PostgreSQL reports only some of them back: remember what s has now
		 * (on failure the server is closed) */
		if (n > 0 && !varcache_copy(&s->vars, &c->vars)) {
			server_close(s, "out of memory");
			return false;
		}
		if (!send_query(s, sql, SV_INTERNAL_SETUP)) {
			server_close(s, "out of memory");
			return false;
		}
		return true;
	}
	client_server_linked(c);
	return true;
}

void server_start_reset(struct server *s)
{
	const char *q = s->pool->sl->cfg->server_reset_query;
	if (!q || !*q) {
		pool_server_ready(s);
		return;
	}
	pool_move_server(s, SV_RESET);
	prepared_server_reset(s, strcasestr(q, "DISCARD ALL") || strcasestr(q, "DEALLOCATE ALL"));
	if (!send_query(s, q, SV_INTERNAL_RESET))
		server_close(s, "out of memory");
}

bool server_is_clean(const struct server *s)
{
	return s->state == SV_ACTIVE && s->internal == SV_INTERNAL_NONE && s->pending_ready == 0 &&
	       !s->unsynced && s->tx_status == 'I' && s->relay_left == 0 &&
	       evbuffer_get_length(bufferevent_get_input(s->bev)) == 0;
}

void server_resume(struct server *s)
{
	bufferevent_enable(s->bev, EV_READ);
	server_relay(s);
}

static void server_read_cb(struct bufferevent *bev, void *arg)
{
	struct server *s = arg;
	(void)bev;
	if (s->login_step == SV_STEP_SSL)
		ssl_response(s);
	else
		server_relay(s);
}

static void server_write_cb(struct bufferevent *bev, void *arg)
{
	struct server *s = arg;
	(void)bev;
	if (s->client && s->internal == SV_INTERNAL_NONE)
		client_resume(s->client);
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
	msg_flush_to(&m, bufferevent_get_output(s->bev));
	msg_free(&m);
	s->login_step = SV_STEP_SSL;
}

/* The server's one-byte answer to SSLRequest (protocol-flow.html 55.2.10). */
static void ssl_response(struct server *s)
{
	struct evbuffer *in = bufferevent_get_input(s->bev);
	uint8_t answer;
	if (evbuffer_remove(in, &answer, 1) != 1)
		return;
	struct sluice *sl = s->pool->sl;
	s->login_step = SV_STEP_STARTUP;
	if (answer == 'N') {
		if (sl->tls.server_mode >= TLS_REQUIRE)
			login_fail(s, NULL, 0, "server does not support SSL, and server_tls_sslmode requires it");
		else
			send_startup(s);
		return;
	}
	if (answer != 'S') {
		login_fail(s, NULL, 0, "unexpected answer to SSLRequest");
		return;
	}
	SSL *ssl = tls_new_connect(&sl->tls, s->pool->host);
	struct bufferevent *f = ssl ? bufferevent_openssl_filter_new(sl->base, s->bev, ssl, BUFFEREVENT_SSL_CONNECTING,
	                                                             BEV_OPT_CLOSE_ON_FREE) : NULL;
	if (!f) {
		if (ssl)
			SSL_free(ssl);
		login_fail(s, NULL, 0, "could not start TLS");
		return;
	}
	s->bev = f;
	s->tls = true;
	bufferevent_setcb(f, server_read_cb, server_write_cb, server_event_cb, s);
	bufferevent_setwatermark(f, EV_WRITE, RELAY_HIGH_WATER / 2, 0);
	bufferevent_enable(f, EV_READ | EV_WRITE);
}

static void server_event_cb(struct bufferevent *bev, short events, void *arg)
{
	struct server *s = arg;
	if ((events & BEV_EVENT_CONNECTED) && s->tls) {
		send_startup(s);    /* the TLS handshake finished */
		return;
	}
	if (events & BEV_EVENT_CONNECTED) {
		int fd = bufferevent_getfd(bev);
		s->addr_len = sizeof(s->addr);
		if (getpeername(fd, (struct sockaddr *)&s->addr, &s->addr_len) != 0)
			s->addr_len = 0;
		socket_tune(fd, s->pool->sl->cfg);
		if (want_tls(s))
			send_ssl_request(s);
		else
			send_startup(s);
		return;
	}
	char why[256];
	int dns_err = s->tls ? 0 : bufferevent_socket_get_dns_error(bev);
	unsigned long tls_err = s->tls ? bufferevent_get_openssl_error(bev) : 0;
	if (tls_err)
		snprintf(why, sizeof(why), "TLS connection to the server failed: %s", tls_error_text(tls_err));
	else if (dns_err)
		snprintf(why, sizeof(why), "could not resolve host \"%s\": %s", s->pool->host, evutil_gai_strerror(dns_err));
	else if (events & BEV_EVENT_ERROR)
		snprintf(why, sizeof(why), "%s", evutil_socket_error_to_string(EVUTIL_SOCKET_ERROR()));
	else
		snprintf(why, sizeof(why), "server closed the connection unexpectedly");
	if (s->state == SV_LOGIN)
		login_fail(s, NULL, 0, why);
	else
		server_close(s, why);
}
