/* SPDX-License-Identifier: PostgreSQL */
/*
 * relay.c - see relay.h. Replies are relayed with only ReadyForQuery,
 * ParameterStatus and what the reply queue asks for inspected; the usual
 * replies go to the client in one move (relay_batch).
 */
#include "relay.h"

#include <stdlib.h>
#include <string.h>

#include "ai/token.h"
#include "cacheio.h"
#include "client.h"
#include "client_step.h"
#include "connio.h"
#include "log.h"
#include "notify_relay.h"
#include "pool.h"
#include "prepared.h"
#include "proto.h"
#include "server.h"
#include "settings.h"
#include "sluice.h"
#include "util.h"

/*
 * A ReadyForQuery with transaction status byte status on its way to the
 * client (a message too short for it gives 0, as the reader does).
 */
static void note_ready(struct server *s, char status)
{
	char was = s->tx_status;
	s->tx_status = status;
	s->block_begun = false;
	if (s->client && (s->client->settings_in_tx || s->client->settings_local))
		settings_ready(s, was, s->tx_status);
	s->settings_implicit = false;
	s->last_ready = now_usec();
	if (s->pending_ready > 0)
		s->pending_ready--;
	if (s->tx_status == 'I' && s->client) {
		s->client->sl->stats.xact_count++;
		/* portals end with their transaction; with more batches in flight
		 * the names may already belong to the next one */
		if (s->client->aic && s->pending_ready == 0)
			client_step_transaction_ended(s->client);
	}
	pool_note_ready(s);   /* per-database stats (admin console) */
}

/* Inspect a whole ParameterStatus or ReadyForQuery on its way to the client. */
static void note_server_message(struct server *s, uint8_t type, const uint8_t *body, size_t len)
{
	struct msgreader r;
	if (type == PqMsg_ReadyForQuery) {
		note_ready(s, len > 0 ? (char)body[0] : 0);
		return;
	}
	mr_init(&r, body, len);
	if (type == PqMsg_ParameterStatus) {
		const char *name = mr_string(&r), *value = mr_string(&r);
		if (r.bad)
			return;
		if (server_note_parameter(s, name, value) && s->client)
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
	if (s->tx_status != 'I' || s->pending_ready > 0 || s->unsynced || c->relay_left > 0 || s->replication)
		return false;
	c->server = NULL;
	s->client = NULL;
	pool_release_server(s, true);
	/* relays what the client pipelined after this transaction; a client that
	 * reads on with nothing buffered (most) needs no call through client_events */
	if (!c->io.reading || iobuf_len(&c->io.in) > 0)
		client_resume(c);
	return true;
}

/* The completion-cache fill the reply at the head of the queue is captured into, or NULL. */
static struct cache_entry *head_fill(const struct server *s)
{
	const struct replyq_entry *h = s->replies.n > 0 ? &s->replies.items[s->replies.head] : NULL;
	return h && h->fill ? ai_token_cache(h->token) : NULL;    /* asked for every message: no call without a fill */
}

static bool needs_whole(struct server *s, uint8_t type)
{
	return s->state == SV_LOGIN || s->internal != SV_INTERNAL_NONE || !s->client ||
	       type == PqMsg_ReadyForQuery || type == PqMsg_ParameterStatus ||
	       ((type == PqMsg_RowDescription || type == 't') && head_fill(s)) ||
	       type == PqMsg_ParseComplete || type == PqMsg_BindComplete || type == PqMsg_CloseComplete ||
	       type == PqMsg_CommandComplete || prepared_wants_reply(s, type);
}

/*
 * A ReadyForQuery of s went to c: the transaction may have ended (s goes
 * back to the pool), a message of c may wait for it. Returns false when the
 * relay of s must stop.
 */
static bool after_ready(struct server *s, struct client *c)
{
	if (s->pool->pool_mode != POOL_MODE_SESSION) {
		if (transaction_end(s, c))
			return false;
		if (s->pending_ready > 0 || iobuf_len(&c->io.in) == 0)
			return true;
		/* a client message waits for the server's answers (prepared.h,
		 * CLIENT_MSG_WAIT); what else s sent is relayed at its next read */
		client_resume(c);
		return false;
	}
	if ((s->pool->stale || s->close_when_released) &&
	    s->pool->sl->cfg->server_fast_close && server_is_clean(s)) {
		/* session pooling: the target changed or RECONNECT asked for new
		 * servers, and the operator asked not to wait for the client to leave */
		/* PgBouncer's words for both causes, which log watches match */
		server_close(s, "database configuration changed");
		return false;
	}
	return true;
}

/* Handle one whole message; returns false when the relay loop must stop. */
static bool whole_message(struct server *s, uint8_t type, struct iobuf *in, uint32_t len)
{
	size_t total = 1 + (size_t)len;
	const uint8_t *msg = iobuf_data(in);
	if (s->state == SV_LOGIN || s->internal != SV_INTERNAL_NONE) {
		/* A copy, as the handlers may free s and with it the buffer. */
		uint8_t *copy = malloc(total);
		if (!copy) {
			server_close(s, "out of memory");
			return false;
		}
		memcpy(copy, msg, total);
		iobuf_drain(in, total);
		bool go_on = server_take_message(s, type, copy, total);
		free(copy);
		return go_on;
	}
	if (!s->client) {
		/* An idle server speaks only to say it is going away. */
		struct pg_error f;
		if (type == PqMsg_ErrorResponse && proto_parse_error(msg + PROTO_HEADER_LEN, len - 4, &f))
			log_info("S-%llu: idle server sent: %s %s", (unsigned long long)s->id, f.sqlstate, f.message);
		if (type == PqMsg_ParameterStatus || type == PqMsg_NoticeResponse) {
			iobuf_drain(in, total);
			return true;
		}
		server_close(s, "unexpected message from idle server");
		return false;
	}
	if (type == PqMsg_CommandComplete && len >= 9 &&
	    (memcmp(msg + PROTO_HEADER_LEN, "BEGIN", 5) == 0 || memcmp(msg + PROTO_HEADER_LEN, "START", 5) == 0))
		s->block_begun = true;    /* a block opened inside a batch: its reads may be rolled back */
	if (type == PqMsg_CommandComplete && s->client->settings_in_tx)
		settings_command_complete(s, msg + PROTO_HEADER_LEN, len - 4);
	if (head_fill(s))
		cacheio_capture_whole(s, type, msg, total);
	prepared_see_reply(s, type, msg + PROTO_HEADER_LEN, len - 4);
	if (type == PqMsg_CommandComplete && s->pool->pool_mode != POOL_MODE_SESSION &&
	    notify_server_reply(s->client, s, type, msg, total)) {
		/* the no-op that stood for a LISTEN/UNLISTEN: the client got its own tag */
		prepared_on_reply(s, type);
		iobuf_drain(in, total);
		return true;
	}
	if (prepared_on_reply(s, type) == REPLY_SWALLOW) {
		iobuf_drain(in, total);
		return true;
	}
	note_server_message(s, type, msg + PROTO_HEADER_LEN, len - 4);
	struct client *c = s->client;
	if (type == PqMsg_ReadyForQuery && s->tx_status != 'I' && s->pool->pool_mode == POOL_MODE_STATEMENT) {
		/* The client never sees itself inside a transaction block. */
		client_fatal(c, SQLSTATE_FEATURE_NOT_SUPPORTED, NULL,
		             "Use pool_mode = transaction or session for this database or user.",
		             "transaction blocks not allowed in statement pooling mode");
		return false;   /* the server was closed with the client, as it is inside a transaction */
	}
	if (type == PqMsg_ReadyForQuery && s->pool->pool_mode != POOL_MODE_SESSION) {
		notify_before_ready(c, s->tx_status);   /* LISTENs take effect; held notifications go first */
	}
	if (!iobuf_move(&c->io.out, in, total)) {
		server_close(s, "out of memory");
		return false;
	}
	c->sl->stats.bytes_sent += total;
	s->pool->stats.bytes_sent += total;
	return type == PqMsg_ReadyForQuery ? after_ready(s, c) : true;
}

/*
 * Does the reply queue's head (if any) let a reply pass the batch below?
 * Only an entry whose reply is forwarded, with no SET and no LISTEN riding
 * on it and no cache fill capturing the reply: popping it writes nothing
 * to the client but, rarely, the error of a lost usage record, which the
 * batch places as prepared_on_reply would. A token with a usage record or
 * a Parse's tags is settled inline (prepared_settle_head).
 */
static inline bool head_is_plain(const struct replyq *q)
{
	const struct replyq_entry *e = q->n ? &q->items[q->head] : NULL;
	/* action RQ_FORWARD (0) and no fill in one test: this runs after every pop */
	_Static_assert(RQ_FORWARD == 0, "RQ_FORWARD must be 0");
	return !e || ((e->action | e->fill) == 0 && !e->setting && !e->notify);
}

enum batch_result { BATCH_SLOW, BATCH_STOP, BATCH_AGAIN };

/*
 * The end of a batch run whose message of type at at (total bytes)
 * settled a request whose usage record was lost (how: prepared_settle_head):
 * the run before it goes to c, then the 53100 error, then the message
 * unless the error replaces it; a ReadyForQuery gets relay_batch's
 * bookkeeping. Out of line and apart from the batch loop: it happens only
 * while the journal cannot be written.
 */
static __attribute__((noinline, cold)) enum batch_result relay_lost(struct server *s, struct client *c,
                                                                    size_t at, size_t total, uint8_t type,
                                                                    enum head_settled how)
{
	struct iobuf *in = &s->io.in, *out = &c->io.out;
	bool swallow = how == HEAD_LOST_SWALLOW;
	char status = type == PqMsg_ReadyForQuery && total > 5 ? (char)iobuf_data(in)[at + PROTO_HEADER_LEN] : 0;
	if (at > 0 && !iobuf_move(out, in, at))
		goto oom;
	prepared_write_unrecorded(s);
	if (swallow) {
		iobuf_drain(in, total);
		total = 0;
	} else if (!iobuf_move(out, in, total))
		goto oom;
	c->sl->stats.bytes_sent += at + total;
	s->pool->stats.bytes_sent += at + total;
	if (type != PqMsg_ReadyForQuery)
		return BATCH_AGAIN;
	note_ready(s, status);
	if (s->pool->pool_mode != POOL_MODE_SESSION && (c->notify_tx_failed || c->notify_tx_rolled_back))
		notify_before_ready(c, s->tx_status);
	return after_ready(s, c) ? BATCH_AGAIN : BATCH_STOP;
oom:
	server_close(s, "out of memory");
	return BATCH_STOP;
}

/*
 * The usual replies of a linked server, forwarded in one move: the
 * messages whole in s's input from its front whose handling writes nothing
 * to the client (DataRow, RowDescription, the completions, CommandComplete,
 * ReadyForQuery, ...) get the same bookkeeping as whole_message and
 * relay_input's streaming give them, and the bytes then go to the client
 * at once (the whole block handed over when that is all s sent). Stops
 * before the first message that needs more (an error, a ParameterStatus, a
 * reply pgsluice owes or swallows, a cache fill, a SET or LISTEN waiting
 * for its completion, a message not yet whole). A usage record settled
 * here is journaled before the client gets the ReadyForQuery, as the bytes
 * go to the client only at the end; when one is lost the run ends with
 * the message that settled it (relay_lost). BATCH_SLOW: the next
 * message takes the per-message path; BATCH_STOP: the relay of s stops
 * (as after whole_message's false); BATCH_AGAIN: look again from the top.
 */
static enum batch_result relay_batch(struct server *s, struct client *c)
{
	struct iobuf *in = &s->io.in, *out = &c->io.out;
	const uint8_t *data = iobuf_data(in);
	size_t have = iobuf_len(in), at = 0, room = RELAY_HIGH_WATER - iobuf_len(out);
	bool session = s->pool->pool_mode == POOL_MODE_SESSION, ready = false, plain = head_is_plain(&s->replies);
	if (s->capture || s->pool->pool_mode == POOL_MODE_STATEMENT)
		return BATCH_SLOW;
	while (have - at >= PROTO_HEADER_LEN && at < room) {
		const uint8_t *msg = data + at;
		uint8_t type = msg[0];
		uint32_t len = proto_header_len(msg);
		size_t total = 1 + (size_t)len;
		if (len - 4 > MAX_INSPECTED_LEN - 4 || have - at < total || !plain)
			break;     /* (unsigned: also a length below 4) */
		switch (type) {
		case PqMsg_DataRow:
			at += total;     /* the reply queue has nothing to do with a row */
			continue;
		case PqMsg_ErrorResponse:
		case PqMsg_ParameterStatus:
			goto end;
		case PqMsg_CommandComplete:
			if (c->settings_in_tx)
				goto end;
			if (len >= 9 && (memcmp(msg + PROTO_HEADER_LEN, "BEGIN", 5) == 0 ||
			                 memcmp(msg + PROTO_HEADER_LEN, "START", 5) == 0))
				s->block_begun = true;
			/* with no LISTEN riding on the head notify_server_reply only notes a
			 * ROLLBACK (notify_tx_rolled_back): asked for a tag that may be one */
			if (!session && len > 4 && msg[PROTO_HEADER_LEN] == 'R')
				notify_server_reply(c, s, type, msg, total);
			break;
		case PqMsg_ReadyForQuery:
			if (c->settings_in_tx || c->settings_local || c->notify)
				goto end;
			break;
		default:
			break;
		}
		/* a plain head: the reply pops it or not and is forwarded (replyq_on_reply);
		 * only a statement, a client's name or a token riding on it needs
		 * settling. A new head that is not plain (a reply pgsluice owes, a
		 * fill) ends the run before the next message: relay_input writes
		 * owed replies first. */
		struct replyq_entry *e = replyq_head(&s->replies);
		if (e && replyq_completes(e, type)) {
			/* one test for the three riders: no branch per field on the usual path */
			if ((uintptr_t)e->stmt | (uintptr_t)e->client_name | (uintptr_t)e->token) {
				enum head_settled how = prepared_settle_head(s, type);
				if (how != HEAD_SETTLED)
					return relay_lost(s, c, at, total, type, how);    /* the run ends with it */
			} else
				replyq_pop(&s->replies);
			plain = head_is_plain(&s->replies);
		}
		at += total;
		if (type == PqMsg_ReadyForQuery) {
			note_ready(s, len > 4 ? (char)msg[PROTO_HEADER_LEN] : 0);
			/* without LISTEN state (c->notify) notify_before_ready only clears
			 * these two flags: called when one is set */
			if (!session && (c->notify_tx_failed || c->notify_tx_rolled_back))
				notify_before_ready(c, s->tx_status);
			ready = true;
			break;
		}
	}
end:
	if (at == 0)
		return BATCH_SLOW;
	if (!iobuf_move(out, in, at)) {
		server_close(s, "out of memory");
		return BATCH_STOP;
	}
	c->sl->stats.bytes_sent += at;
	s->pool->stats.bytes_sent += at;
	if (ready && !after_ready(s, c))
		return BATCH_STOP;
	return BATCH_AGAIN;
}

static void relay_input(struct server *s)
{
	struct iobuf *in = &s->io.in;
	for (;;) {
		struct client *c = s->client;
		if (c && s->internal == SV_INTERNAL_NONE && s->state != SV_LOGIN) {
			struct iobuf *out = &c->io.out;
			if (iobuf_len(out) >= RELAY_HIGH_WATER) {
				connio_pause_read(&s->io);
				return;   /* the client's drain resumes us */
			}
			if (s->relay_left == 0 && replyq_owes_head(&s->replies))
				prepared_flush_owed(s);
			if (s->relay_left > 0) {
				size_t n = iobuf_len(in);
				if (n == 0)
					return;
				if (n > s->relay_left)
					n = s->relay_left;
				if (s->capture)
					cacheio_capture_stream(s, iobuf_data(in), n);
				if (!iobuf_move(out, in, n)) {
					server_close(s, "out of memory");
					return;
				}
				s->relay_left -= (uint32_t)n;
				c->sl->stats.bytes_sent += n;
				s->pool->stats.bytes_sent += n;
				continue;
			}
			enum batch_result b = relay_batch(s, c);
			if (b == BATCH_STOP)
				return;
			if (b == BATCH_AGAIN)
				continue;
		}
		uint8_t type;
		uint32_t len;
		if (!proto_peek_header(in, &type, &len))
			return;
		bool whole = needs_whole(s, type);
		if (len < 4 || (whole && len > MAX_INSPECTED_LEN)) {
			server_close(s, "invalid message from server");
			return;
		}
		if (type == PqMsg_ErrorResponse && c && s->internal == SV_INTERNAL_NONE && s->state != SV_LOGIN) {
			c->notify_tx_failed = true;    /* a LISTEN in this transaction will not take effect */
			settings_error(s);             /* nor a SET in an implicit transaction */
		}
		if (!whole) {
			if (head_fill(s))
				cacheio_capture_begin(s, type, len);
			prepared_on_reply(s, type);
			s->relay_left = 1 + len;
			continue;
		}
		if (iobuf_len(in) < 1 + (size_t)len)
			return;
		if (!whole_message(s, type, in, len))
			return;
	}
}


/* A server's socket: its replies, its drained output, and (server.c) its connect and failure. */
static void relay_on_read(void *arg)
{
	struct server *s = arg;
	if (s->login_step == SV_STEP_SSL)
		server_ssl_response(s);
	else
		relay_input(s);
}

static void relay_on_drain(void *arg)
{
	struct server *s = arg;
	if (s->client && s->internal == SV_INTERNAL_NONE)
		client_resume(s->client);
}

static void relay_on_connect(void *arg)
{
	server_on_connect(arg);
}

static void relay_on_error(void *arg, const char *why)
{
	server_on_error(arg, why);
}

static const struct connio_ops relay_server_ops = {
	relay_on_read, relay_on_drain, relay_on_connect, relay_on_error,
};

void relay_start(struct sluice *sl)
{
	sl->server_io_ops = &relay_server_ops;
}

void relay_resume(struct server *s)
{
	connio_resume_read(&s->io);
	relay_input(s);
}
