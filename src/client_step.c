/* SPDX-License-Identifier: PostgreSQL */
/*
 * client_step.c - see client_step.h. Each step looks at one message while
 * it is still in the client's input; what it answers itself goes out in the
 * order PostgreSQL would have answered, through the server's reply queue
 * (prepared.h) when a server is linked.
 */
#include "client_step.h"

#include <event2/event.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "ai/cache.h"
#include "ai/cache_proto.h"
#include "ai/client_state.h"
#include "ai/context.h"
#include "ai/decide.h"
#include "cacheio.h"
#include "ai/middleware.h"
#include "ai/settings_scan.h"
#include "settings_ext.h"
#include "ai/usage.h"
#include "client.h"
#include "log.h"
#include "pool.h"
#include "prepared.h"
#include "proto.h"
#include "refuse.h"
#include "server.h"
#include "settings.h"
#include "sluice.h"
#include "sqltext.h"
#include "stmt.h"
#include "util.h"
#include "varcache.h"

/* ---- the client's middleware state ---- */

/* c's sluice.user / sluice.model (empty for a client without middleware state). */
static inline const struct ai_session *session_of(const struct client *c)
{
	return ai_client_session(c->aic);
}

/* c's middleware state for writing: made on first need (ai/client_state.h). NULL when out of memory. */
static void cache_woken(void *arg);
static void cache_wake_cb(evutil_socket_t fd, short what, void *arg);
static struct ai_client *W(struct client *c)
{
	if (!c->aic)
		c->aic = ai_client_new(cache_woken, c);
	return c->aic;
}

/* Whose answer c's cache keys name (ai/cache_proto.h). */
static struct cache_key_owner key_owner(const struct client *c)
{
	return (struct cache_key_owner){ .database = c->database, .user = c->user, .vars = c->vars.values,
	                                 .n_vars = varcache_count(), .vars_gen = c->vars.gen,
	                                 .settings_hash = settings_current(c)->hash,
	                                 .memo = ai_client_key_memo(c->aic) };
}

/*
 * The middleware's decision on c's statement st (ai/decide.h), with what it
 * is told of c in *ctx (ai/context.h; the cache's part only for a statement
 * tagged ai_cache). may_answer: can a hit be written now, in order (the
 * core's reply order decides). Filled in place: it is asked per statement.
 */
static bool cache_on(struct client *c);
static inline void decide(struct client *c, const struct stmt *st, bool may_answer, struct ai_context *ctx,
                          struct ai_decision *d)
{
	bool cached = st->tags && st->tags->cache != AI_CACHE_NONE;
	struct ai_client *a = cached ? W(c) : c->aic;
	ctx->sl = c->sl;
	ctx->user = c->user;
	ctx->database = c->database;
	ctx->session = session_of(c);
	ctx->cache_on = cached && cache_on(c);
	ctx->may_answer = may_answer;
	ctx->may_wait = !c->server;
	ctx->in_block = c->server && c->server->tx_status != 'I';
	if (cached)
		ctx->key = key_owner(c);
	ai_decide(ctx, a, st, d);
}

/*
 * c waits for an identical miss (AI_WAIT, c holds no server): ready to be
 * woken from the event loop, not from inside the fill that ends. False when
 * it cannot be (out of memory): the wait is undone.
 */
static bool wake_ready(struct client *c)
{
	if (!c->cache_wake_ev)
		c->cache_wake_ev = event_new(c->sl->base, -1, 0, cache_wake_cb, c);
	if (c->cache_wake_ev)
		return true;
	ai_client_unwait(c->aic);    /* asked again, it goes to the server */
	return false;
}

/*
 * What rides on c's message at the front (decision d's record, fill and
 * Parse tags) waits in c's middleware state until the message is relayed
 * (client_step_relayed). False when out of memory: d is dropped and c was
 * sent FATAL.
 */
static bool carry_slow(struct client *c, const struct ai_context *ctx, struct ai_decision *d)
{
	struct ai_client *a = W(c);
	if (!a) {
		ai_decision_drop(ctx, d);
		client_fatal(c, SQLSTATE_INTERNAL_ERROR, NULL, NULL, "out of memory");
		return false;
	}
	ai_client_carry(a, c->sl->cache, d);
	return true;
}

static inline bool carry(struct client *c, const struct ai_context *ctx, struct ai_decision *d)
{
	if (!d->usage && !d->capture && !d->parsed && !ai_client_carries(c->aic))
		return true;    /* nothing rides on it, nothing left to give back: the usual case */
	return carry_slow(c, ctx, d);
}

static void write_command_complete(struct msgbuf *m, const char *tag)
{
	msg_begin(m, PqMsg_CommandComplete);
	msg_add_string(m, tag);
	msg_end(m);
}

/*
 * Answer a simple Query the client sent (already consumed) with success tag,
 * or fail it with an ERROR. With no server in the way the answer is local;
 * a server that owes replies or holds a transaction gets a statement that
 * raises the error itself, so the reply order and the transaction's failed
 * state stay exactly PostgreSQL's.
 */
static void answer_query(struct client *c, const char *tag, const char *sqlstate, const char *message,
                         const char *detail, const char *hint)
{
	struct server *s = c->server;
	struct msgbuf m;
	msg_init(&m);
	if (s && (sqlstate || s->pending_ready > 0 || s->unsynced)) {
		char sql[2048];
		if (!sqlstate)   /* the same tag, in order, and nothing the server keeps */
			snprintf(sql, sizeof(sql), strcmp(tag, "SET") == 0 ? "SET pgsluice.noop TO DEFAULT"
			                                                   : "RESET pgsluice.noop");
		else if (!refuse_build_raise_sql(sql, sizeof(sql), sqlstate, message, detail, hint))
			snprintf(sql, sizeof(sql), "DO $pgsluice$BEGIN RAISE EXCEPTION USING ERRCODE = '%s'; END$pgsluice$",
			         sqlstate);
		msg_begin(&m, PqMsg_Query);
		msg_add_string(&m, sql);
		msg_end(&m);
		msg_flush_to(&m, &s->io.out);
		server_note_request(s, c, PqMsg_Query);
		prepared_note_request(s, PqMsg_Query);
	} else {
		if (sqlstate)
			msg_add_error(&m, PqMsg_ErrorResponse, "ERROR", sqlstate, detail, hint, "%s", message);
		else
			write_command_complete(&m, tag);
		msg_add_ready(&m, s ? s->tx_status : 'I');
		msg_flush_to(&m, &c->io.out);
	}
	msg_free(&m);
}

/*
 * SHOW sluice.user: one row, one text column, as PostgreSQL answers SHOW.
 * A server that still owes replies answers a SELECT of the same value
 * instead, so the order holds (its tag then reads SELECT 1).
 */
static void answer_show(struct client *c, const char *name, const char *value)
{
	struct server *s = c->server;
	struct msgbuf m;
	msg_init(&m);
	if (s && (s->pending_ready > 0 || s->unsynced)) {
		struct sqltext q = { 0 };
		sqltext_str(&q, "SELECT ");
		char lit[2 * AI_NAME_MAX + 8];
		size_t n = 0;
		lit[n++] = '\'';
		for (const char *p = value; *p && n + 3 < sizeof(lit); p++) {
			if (*p == '\'')
				lit[n++] = '\'';
			lit[n++] = *p;
		}
		lit[n++] = '\'';
		lit[n] = '\0';
		sqltext_str(&q, lit);
		sqltext_str(&q, " AS \"");
		sqltext_str(&q, name);
		sqltext_str(&q, "\"");
		msg_begin(&m, PqMsg_Query);
		msg_add_string(&m, q.failed ? "SELECT ''" : q.s);
		msg_end(&m);
		sqltext_free(&q);
		msg_flush_to(&m, &s->io.out);
		server_note_request(s, c, PqMsg_Query);
		prepared_note_request(s, PqMsg_Query);
	} else {
		msg_begin(&m, PqMsg_RowDescription);
		msg_add_int16(&m, 1);
		msg_add_string(&m, name);
		msg_add_int32(&m, 0);       /* no table */
		msg_add_int16(&m, 0);
		msg_add_int32(&m, 25);      /* text */
		msg_add_int16(&m, -1);
		msg_add_int32(&m, -1);
		msg_add_int16(&m, 0);       /* text format */
		msg_end(&m);
		msg_begin(&m, PqMsg_DataRow);
		msg_add_int16(&m, 1);
		msg_add_int32(&m, (int32_t)strlen(value));
		msg_add_bytes(&m, value, strlen(value));
		msg_end(&m);
		write_command_complete(&m, "SHOW");
		msg_add_ready(&m, s ? s->tx_status : 'I');
		msg_flush_to(&m, &c->io.out);
	}
	msg_free(&m);
}

/*
 * A simple Query of SET/RESET sluice.user or sluice.model: kept by pgsluice
 * per client, so it follows the client across pooled servers. Returns true
 * when the message was consumed.
 */
/*
 * Is the word at t[0..n) the lower-case keyword kw, in any case? The word is
 * its first five letters at most (a longer one is cut there), as
 * client_intercept_set has always read it.
 */
static inline __attribute__((always_inline)) bool lead_word_is(const uint8_t *t, size_t n, const char *kw)
{
	size_t k = 0;
	for (; kw[k]; k++)
		if (k >= n || (t[k] | 0x20) != (uint8_t)kw[k])
			return false;
	return k >= 5 || k >= n || !((t[k] | 0x20) >= 'a' && (t[k] | 0x20) <= 'z');
}

/* client_intercept_set for a statement that may be ours: away from the quick
 * test so that the test needs no stack frame for the text and the error. */
static __attribute__((noinline)) bool intercept_set(struct client *c, uint32_t len)
{
	char text[512];
	size_t n = len - 4;
	struct iobuf *in = &c->io.in;
	const uint8_t *body = iobuf_data(in) + PROTO_HEADER_LEN;
	memcpy(text, body, n);
	const char *tag = NULL;
	char err[256];
	/* a client without middleware state gets one only when a SET gives it a value */
	struct ai_session next = *session_of(c);
	enum ai_set_result r = ai_session_match_set(&next, text, n, &tag, err, sizeof(err));
	if (r == AI_SET_NONE)
		return false;
	if (r == AI_SET_DONE && memcmp(&next, session_of(c), sizeof(next)) != 0) {
		struct ai_client *a = W(c);
		if (!a) {
			client_fatal(c, SQLSTATE_INTERNAL_ERROR, NULL, NULL, "out of memory");
			return true;
		}
		ai_client_set_session(a, &next);
	}
	iobuf_drain(in, 1 + (size_t)len);
	c->sl->stats.query_count++;
	if (r == AI_SET_SHOW)
		answer_show(c, tag, strcmp(tag, "sluice.user") == 0 ? session_of(c)->user : session_of(c)->model);
	else if (r == AI_SET_DONE)
		answer_query(c, tag, NULL, NULL, NULL, NULL);
	else
		answer_query(c, NULL, strstr(err, "unrecognized") ? SQLSTATE_UNDEFINED_OBJECT : SQLSTATE_INVALID_PARAMETER_VALUE,
		             err, NULL, NULL);
	return true;
}

bool client_intercept_set(struct client *c, uint32_t len)
{
	size_t n = len - 4;
	if (n >= 512)
		return false;    /* intercept_set's text buffer */
	struct iobuf *in = &c->io.in;
	if (iobuf_len(in) < 1 + (size_t)len)
		return false;
	/* Every simple Query passes here: only SET, RESET and SHOW (or a leading comment) can be ours. */
	const uint8_t *body = iobuf_data(in) + PROTO_HEADER_LEN;
	size_t i = 0;
	while (i < n && (body[i] == ' ' || body[i] == '\t' || body[i] == '\n' || body[i] == '\r'))
		i++;
	if (!client_may_intercept_set(body, n))
		return false;
	if (i < n && body[i] != '/' && body[i] != '-' &&
	    !lead_word_is(body + i, n - i, "set") && !lead_word_is(body + i, n - i, "show") &&
	    !lead_word_is(body + i, n - i, "reset"))
		return false;    /* compared in place: e.g. SETTINGS is no SET */
	return intercept_set(c, len);
}

/* ---- the middleware's step ---- */

/* Offset of the comment opener in the message body at [from, 1 + len) of the input, or -1. */
long client_step_find_comment(const struct iobuf *in, size_t from, uint32_t len)
{
	/* iobuf_find(in, from, 1 + len - from, "slash star", 2), written out: every
	 * Query and most Parses pass here, nearly all without a comment */
	size_t have = iobuf_len(in), end = 1 + (size_t)len;
	if (end > have)
		end = have;
	if (from >= end)
		return -1;
	const uint8_t *base = iobuf_data(in), *p = base + from, *stop = base + end;
	while (stop - p >= 2 && (p = memchr(p, '/', (size_t)(stop - p) - 1)) != NULL) {
		if (p[1] == '*')
			return (long)(p - base);
		p++;
	}
	return -1;
}

/*
 * Does text[0..len) hold a comment opener? As client_step_find_comment, in
 * place: a memchr scan for '/' (strstr costs more). Asked before
 * middleware_parse_tags so that a text without a comment neither parses
 * nor takes the place of the last tagged text in its memo.
 */
static inline bool has_comment_opener(const char *text, size_t len)
{
	const char *p = text, *stop = text + len;
	while (stop - p >= 2 && (p = memchr(p, '/', (size_t)(stop - p) - 1)) != NULL) {
		if (p[1] == '*')
			return true;
		p++;
	}
	return false;
}

/* Refuse the simple Query at the front of the input (whole, not consumed yet). */
static void refuse_query(struct client *c, uint32_t len, const struct pg_error *r)
{
	iobuf_drain(&c->io.in, 1 + (size_t)len);
	c->sl->stats.query_count++;
	answer_query(c, NULL, r->sqlstate, r->message, r->detail[0] ? r->detail : NULL,
	             r->hint[0] ? r->hint : NULL);
}

/* ---- the completion cache: shared pieces ---- */

/*
 * Is the cache on for c? Not for a client that may have changed settings
 * its key does not hold (note_settings): its session may return other rows
 * than the key says, so it neither looks up nor fills. After a SET of a
 * reported setting, not until the server owes c nothing: by then its
 * ParameterStatus has updated c->vars, which the key holds.
 */
static bool cache_on(struct client *c)
{
	if (c->settings_tainted || c->settings_local)
		return false;
	if (c->settings_changing) {
		if (c->server && (c->server->pending_ready > 0 || c->server->unsynced))
			return false;
		c->settings_changing = false;
	}
	return c->sl->cache && c->sl->cfg->cache_max_memory > 0;
}

/*
 * Note what the statement text[0..len) the client sends may do to its
 * settings (ai/settings_scan.h). A SET of a reported setting in a simple
 * Query is followed through ParameterStatus; in a Parse it may run again at
 * any later Execute, so, as anything else that may change settings, it
 * taints the client for the rest of its connection.
 */
static void note_effect(struct client *c, enum settings_effect effect, bool simple)
{
	if (effect == SETTINGS_REPORTED && simple)
		c->settings_changing = true;
	else if (effect != SETTINGS_NONE && !c->settings_tainted) {
		c->settings_tainted = true;
		log_debug("C-%llu: may change settings the completion cache cannot key on: no lookups from now on",
		          (unsigned long long)c->id);
	}
}

/*
 * settings_effect of a Parse's text through the process's memo: parameterised
 * statements come again and again, and a Parse is looked at before and after
 * its server is linked. (A simple Query carries its literals: it rarely
 * repeats, so query_step scans it directly.)
 */
static enum settings_effect effect_of(struct client *c, const char *text, size_t len)
{
	struct sluice *sl = c->sl;
	if (!sl->settings_memo && !(sl->settings_memo = calloc(1, sizeof(*sl->settings_memo))))
		return settings_effect(text, len);
	return settings_effect_memo(sl->settings_memo, text, len);
}

static void note_settings(struct client *c, const char *text, size_t len, bool simple)
{
	if (c->settings_tainted)
		return;     /* for good: nothing to learn from more statements */
	note_effect(c, effect_of(c, text, len), simple);
}

void client_drop_pending_setting(struct client *c)
{
	if (!c->pending_setting)
		return;
	sessvar_op_free(c->pending_setting);
	free(c->pending_setting);
	c->pending_setting = NULL;
}

/*
 * Under transaction and statement pooling, a simple Query that is one
 * SET/RESET/set_config() statement (sessvars_parse): keep it in
 * c->pending_setting, to enter c's record when the server accepts it
 * (settings.h). Returns 1 when it was one (the completion cache then keys on
 * the record and need not stop), 0 when not, -1 when it was refused here
 * (the record would pass its limits: 54000, consumed).
 */
/* Does pgsluice follow c's settings (transaction and statement pooling)? */
static bool follows_settings(const struct client *c)
{
	return c->pool && c->pool->pool_mode != POOL_MODE_SESSION;
}

static int settings_step(struct client *c, const char *text, size_t len, uint32_t msg_len)
{
	size_t lead = 0;
	while (lead < len && (text[lead] == ' ' || text[lead] == '\n' || text[lead] == '\t' || text[lead] == '\r'))
		lead++;
	/* most statements stop here: only s, r or a comment may start one */
	if (lead == len || !((text[lead] | 0x20) == 's' || (text[lead] | 0x20) == 'r' || text[lead] == '/' ||
	                     text[lead] == '-'))
		return 0;
	if (!follows_settings(c))
		return 0;
	struct sessvar_op op;
	switch (sessvars_parse(text, len, &op)) {
	case SESSVAR_SET:
	case SESSVAR_SET_STRING:
	case SESSVAR_RESET:
	case SESSVAR_RESET_ALL:
		break;
	case SESSVAR_LOCAL:
		c->settings_local = true;    /* until the block ends (settings_ready) */
		return 1;
	default:
		return 0;
	}
	if (!sessvars_fits(settings_current(c), &op)) {
		struct pg_error r = { 0 };
		str_copy(r.sqlstate, SQLSTATE_PROGRAM_LIMIT_EXCEEDED, sizeof(r.sqlstate));
		snprintf(r.message, sizeof(r.message), "too many session settings for transaction pooling");
		snprintf(r.detail, sizeof(r.detail), "pgsluice records at most %d settings of %d bytes in all per client.",
		         SESSVARS_MAX_COUNT, SESSVARS_MAX_BYTES);
		snprintf(r.hint, sizeof(r.hint), "RESET settings the session no longer needs, or use SET LOCAL.");
		sessvar_op_free(&op);
		refuse_query(c, msg_len, &r);
		return -1;
	}
	client_drop_pending_setting(c);
	c->pending_setting = malloc(sizeof(*c->pending_setting));
	if (!c->pending_setting) {
		sessvar_op_free(&op);
		return 0;      /* taints the client instead: the cache stops, another client's next link resets all */
	}
	*c->pending_setting = op;
	c->settings_changing = true;     /* the key changes when the server has accepted it */
	return 1;
}

/* The unnamed portal is replaced or gone: forget its hit or its fill. */
static void portal_forget(struct client *c)
{
	if (c->aic)
		ai_portal_forget(c->aic, c->sl->cache);
}

/* The fill client arg waited for ended: resume its relay from the event loop, not from inside the fill. */
static void cache_woken(void *arg)
{
	struct client *c = arg;
	if (c->cache_wake_ev)
		event_active(c->cache_wake_ev, EV_TIMEOUT, 0);
}

static void cache_wake_cb(evutil_socket_t fd, short what, void *arg)
{
	(void)fd;
	(void)what;
	client_resume(arg);
}

/* Park c until the FILLING entry e ends (c has no server: it holds none while it waits). */
static int cache_park(struct client *c, struct cache_entry *e)
{
	struct ai_client *a = W(c);    /* its waiter's wake hook is set when made */
	if (!a || !ai_client_wait(a, e))
		return 1;    /* out of memory: go to the server instead */
	return wake_ready(c) ? -1 : 1;    /* cannot be woken: go to the server instead */
}

/* ---- simple Query ---- */

/* Can a hit for a simple Query be written now, in order, with the right status? */
static bool query_answerable(const struct server *s)
{
	return !s || (s->pending_ready == 0 && !s->unsynced && s->replies.n == 0 && s->tx_status != 'E');
}

/* Answer the simple Query at the front (admitted) from the cache, as PostgreSQL did. */
static void answer_query_hit(struct client *c, uint32_t len, const struct ai_context *ctx, struct ai_decision *d)
{
	struct server *s = c->server;
	iobuf_drain(&c->io.in, 1 + (size_t)len);
	c->sl->stats.query_count++;
	c->pool->stats.query_count++;
	cacheio_write_answer(&c->io.out, d->answer);
	ai_answered(ctx, d);    /* before ReadyForQuery; a lost record is logged and counted */
	client_send_ready(c, s ? s->tx_status : 'I');
}

/*
 * A simple Query: parse its tags (one scan when it has no comment), look it
 * up in the completion cache when tagged so, and ask the middleware.
 * Returns 1 to relay it, 0 when it was answered or refused (consumed), -1 to
 * wait for the rest of the message or for an identical miss.
 */
static int query_step(struct client *c, uint32_t len)
{
	struct iobuf *in = &c->io.in;
	if (iobuf_len(in) < 1 + (size_t)len)
		return -1;
	{
		const uint8_t *msg = iobuf_data(in);
		if (!msg) {
			client_fatal(c, SQLSTATE_INTERNAL_ERROR, NULL, NULL, "out of memory");
			return 0;
		}
		const char *text = (const char *)msg + PROTO_HEADER_LEN;
		size_t text_len = strnlen(text, len - 4);
		/* settings_effect looks at every statement anyway; only one that may
		 * change settings is parsed for the record (most statements are not) */
		enum settings_effect effect = c->settings_tainted ? SETTINGS_UNKNOWN : settings_effect(text, text_len);
		if (effect != SETTINGS_NONE) {
			int recorded = settings_step(c, text, text_len, len);
			if (recorded < 0)
				return 0;
			if (!recorded && !c->settings_tainted)
				note_effect(c, effect, true);
		}
	}
	struct ai_tags tags;
	struct pg_error r;
	struct stmt st = { .kind = STMT_QUERY };
	if (client_step_find_comment(in, PROTO_HEADER_LEN, len) >= 0) {
		st.text = (const char *)iobuf_data(in) + PROTO_HEADER_LEN;
		st.text_len = strnlen(st.text, len - 4);
		enum tags_result tr = middleware_tags(st.text, st.text_len, &tags, &r);
		if (tr == TAGS_INVALID) {
			refuse_query(c, len, &r);
			return 0;
		}
		st.tags = tr == TAGS_OK ? &tags : NULL;
	}
	if (!st.tags && !session_of(c)->user[0])
		return 1;    /* not attributed, no lookup: nothing to decide */
	struct ai_decision d;
	struct ai_context ctx;
	do
		decide(c, &st, query_answerable(c->server), &ctx, &d);
	while (d.verdict == AI_WAIT && !wake_ready(c));    /* cannot wait: asked again, it goes to the server */
	switch (d.verdict) {
	case AI_WAIT:
		return -1;
	case AI_REFUSE:
		refuse_query(c, len, &d.refusal);
		return 0;
	case AI_ANSWER:
		answer_query_hit(c, len, &ctx, &d);
		return 0;
	case AI_FORWARD:
		break;
	}
	return carry(c, &ctx, &d) ? 1 : 0;
}

/* ---- the extended protocol's statements ---- */

#define PORTAL_NAME_MAX 320    /* as much of a Bind as bind_step reads: longer names are not tracked */

/* ai_statement_keep for c: a client without middleware state gets one only for tags. False: OOM. */
static bool keep_statement_tags(struct client *c, const char *name, const struct ai_tags *tags,
                                struct cache_stmt *cstmt)
{
	struct ai_client *a = tags || c->aic ? W(c) : NULL;
	if (!a) {
		free(cstmt);
		return !tags;
	}
	return ai_statement_keep(a, name, tags, cstmt);
}

static inline const struct ai_tags *statement_tags(const struct client *c, const char *name,
                                                   const struct cache_stmt **cstmt)
{
	return ai_statement_tags(c->aic, name, cstmt);
}

/* ai_portal_keep for c (forgetting needs no middleware state). */
static void keep_portal_tags(struct client *c, const char *name, const struct ai_tags *tags)
{
	struct ai_client *a = tags || c->aic ? W(c) : NULL;
	if (a)
		ai_portal_keep(a, name, tags);
}

void client_step_transaction_ended(struct client *c)
{
	ai_client_transaction_ended(c->aic);
}

/* Parse, any: note what its text may do to settings. Returns 1 to go on, -1 to wait for more bytes. */
static int parse_settings_step(struct client *c, uint32_t len)
{
	struct iobuf *in = &c->io.in;
	if (iobuf_len(in) < 1 + (size_t)len)
		return -1;
	const uint8_t *msg = iobuf_data(in);
	struct stmt_parse p;
	if (!msg || !stmt_read_parse(msg + PROTO_HEADER_LEN, len - 4, &p))
		c->settings_tainted = true;    /* unreadable: PostgreSQL will refuse it, but be safe */
	else if (!follows_settings(c))
		note_settings(c, p.query, p.query_len, false);
	else {
		/* As query_step: the scan first; only a text that may change settings (or a
		 * name that held a kept SET) is parsed for the record, most Parses are not. */
		enum settings_effect effect = effect_of(c, p.query, p.query_len);
		if ((effect != SETTINGS_NONE || settings_ext_has(c, p.name)) && settings_ext_parse(c, p.name, p.query))
			return 1;
		if (!c->settings_tainted)
			note_effect(c, effect, false);
	}
	return 1;
}

/*
 * Bind, Execute or Close of a client with extended-protocol SET statements
 * (settings_ext.h): a Bind of one binds its op to the portal, an Execute of
 * that portal records it when it completes (c->pending_setting rides on the
 * Execute), a Close forgets. Returns 1 to go on, -1 to wait for more bytes.
 */
static int settings_ext_step(struct client *c, uint8_t type, uint32_t len)
{
	struct iobuf *in = &c->io.in;
	char head[512];
	size_t n = len - 4 < sizeof(head) ? len - 4 : sizeof(head);
	if (iobuf_copyout(in, PROTO_HEADER_LEN, head, n) != n)
		return -1;
	if (type == PqMsg_Bind) {
		const char *nul = memchr(head, 0, n);
		const char *stmt = nul ? nul + 1 : NULL;
		bool whole = !stmt || !memchr(stmt, 0, n - (size_t)(stmt - head));   /* names past head */
		if (!whole && !settings_ext_binds(c, head, stmt))
			return 1;
		if (iobuf_len(in) < 1 + (size_t)len)
			return -1;
		const uint8_t *msg = iobuf_data(in);
		if (msg)
			settings_ext_bind(c, msg + PROTO_HEADER_LEN, len - 4);
		else
			c->settings_tainted = true;
		return 1;
	}
	if (n < len - 4 || !memchr(head, 0, n))
		return 1;     /* a name longer than any kept one: PostgreSQL truncates names at 63 bytes */
	if (type == PqMsg_Close) {
		if (n >= 2)
			settings_ext_close(c, head[0], head + 1);
		return 1;
	}
	client_drop_pending_setting(c);
	c->pending_setting = settings_ext_execute(c, head);
	if (c->pending_setting)
		c->settings_changing = true;     /* the key changes when the server has accepted it */
	return 1;
}

/*
 * Parse: note the statement's tags. An invalid tag fails the Parse itself
 * (as a syntax error would): the server is made to raise 22023 in its place.
 * Returns 1 to relay, 0 when replaced, -1 to wait for more bytes.
 */
static int parse_step(struct client *c, struct server *s, uint32_t len)
{
	struct iobuf *in = &c->io.in;
	/* client_batch_step's reading of this Parse, when it admitted its batch (a reference, or NULL: untagged) */
	struct ai_tags *handed;
	bool known = ai_client_take_batch_parse(c->aic, len, &handed);
	if (!known && !ai_client_has_statement_tags(c->aic) && client_step_find_comment(in, PROTO_HEADER_LEN, len) < 0)
		return 1;   /* nothing tagged before, nothing tagged now */
	struct stmt_parse p;
	if (known && !(handed && handed->cache != AI_CACHE_NONE)) {
		p = (struct stmt_parse){ .name = "" };    /* the unnamed statement; its text is for a lookup only */
	} else if (iobuf_len(in) < 1 + (size_t)len || !stmt_read_parse(iobuf_data(in) + PROTO_HEADER_LEN, len - 4, &p)) {
		ai_tags_unref(handed);
		return iobuf_len(in) < 1 + (size_t)len ? -1 : 1;
	}
	struct ai_tags *k = handed;    /* the statement's kept tags (a reference), NULL: untagged */
	if (!known) {
		struct ai_tags tags;
		struct pg_error r;
		enum tags_result tr = has_comment_opener(p.query, p.query_len) ?
		                      middleware_parse_tags(p.query, p.query_len, &tags, &r) : TAGS_NONE;
		if (tr == TAGS_INVALID) {
			iobuf_drain(in, 1 + (size_t)len);
			prepared_raise_error(s, r.sqlstate, r.message, r.detail[0] ? r.detail : NULL, r.hint);
			return 0;
		}
		if (tr == TAGS_OK && tags.has_ai_key && !(k = ai_tags_keep(&tags))) {
			client_fatal(c, SQLSTATE_INTERNAL_ERROR, NULL, NULL, "out of memory");
			return 0;
		}
	}
	/* pgsluice's own statement names: a name in use keeps its statement (prepared.c: 42P05) */
	bool deferred = !prepared_active(c);
	if (!deferred && *p.name && prepared_client_has(c, p.name)) {
		ai_tags_unref(k);
		return 1;
	}
	/* Under session pooling the server may refuse the Parse (a name in use, a
	 * syntax error): its tags count from its ParseComplete on (client_step_parsed). */
	if (k && !W(c)) {
		ai_tags_unref(k);
		client_fatal(c, SQLSTATE_INTERNAL_ERROR, NULL, NULL, "out of memory");
		return 0;
	}
	struct stmt st = { .kind = STMT_PARSE, .tags = k, .name = p.name, .text = p.query, .text_len = p.query_len,
	                   .types = p.types, .n_types = p.n_types, .deferred = deferred };
	struct ai_decision d;
	struct ai_context ctx;
	decide(c, &st, false, &ctx, &d);
	ai_tags_unref(k);
	if (d.verdict == AI_REFUSE) {
		iobuf_drain(in, 1 + (size_t)len);
		prepared_raise_error(s, d.refusal.sqlstate, d.refusal.message, NULL, NULL);
		return 0;
	}
	return carry(c, &ctx, &d) ? 1 : 0;
}

void client_step_parsed(struct client *c, struct stmt_tags *st, bool ok)
{
	if (!st)
		return;
	if (c)
		ai_client_parse_done(c->aic);
	if (c && ok) {
		keep_statement_tags(c, st->name, st->tags, st->cstmt);
		st->cstmt = NULL;
	} else if (c && !*st->name) {
		keep_statement_tags(c, "", NULL, NULL);    /* a failed Parse still drops the unnamed statement */
	}
	ai_stmt_tags_free(st);
}

/* Close of a statement: it is gone for PostgreSQL whether or not it existed. */
static int close_step(struct client *c, uint32_t len)
{
	struct iobuf *in = &c->io.in;
	if (iobuf_len(in) < 1 + (size_t)len)
		return -1;
	struct stmt_target t;
	if (!stmt_read_target(iobuf_data(in) + PROTO_HEADER_LEN, len - 4, &t))
		return 1;    /* malformed: PostgreSQL says so */
	if (t.what == STMT_TARGET_STATEMENT)
		keep_statement_tags(c, t.name, NULL, NULL);
	else if (t.what == STMT_TARGET_PORTAL)
		keep_portal_tags(c, t.name, NULL);
	return 1;
}

/*
 * May the batch ask for the unnamed portal's RowDescription after its Bind
 * (whose end is at `from` in the input)? True when a Describe comes before
 * the Sync, or when the batch is not buffered up to its Sync yet.
 */
static bool describe_follows(struct iobuf *in, size_t from)
{
	size_t total = iobuf_len(in);
	while (from + PROTO_HEADER_LEN <= total) {
		uint8_t hdr[PROTO_HEADER_LEN];
		iobuf_copyout(in, from, hdr, sizeof(hdr));
		if (hdr[0] == PqMsg_Describe || hdr[0] == PqMsg_Bind)
			return hdr[0] == PqMsg_Describe;    /* a new Bind replaces the portal */
		if (hdr[0] == PqMsg_Sync)
			return false;
		from += 1 + (size_t)stmt_header_len(hdr);
	}
	return true;
}

/*
 * Bind of the unnamed portal to a lookup statement, with server s linked:
 * a fresh answer is owed in order (BindComplete now, the rest at Describe
 * and Execute); else it goes to s and its answer is captured.
 */
static int bind_cache_step(struct client *c, struct server *s, const struct ai_tags *t,
                           const struct cache_stmt *cs, uint32_t len)
{
	struct iobuf *in = &c->io.in;
	if ((int64_t)len > c->sl->cfg->cache_max_entry_size)
		return 1;    /* a key larger than any answer kept: not worth reading the message */
	if (iobuf_len(in) < 1 + (size_t)len)
		return -1;
	struct stmt st = { .kind = STMT_BIND, .tags = t, .cstmt = cs,
	                   .params = iobuf_data(in) + PROTO_HEADER_LEN, .params_len = len - 4,
	                   .describe_follows = describe_follows(in, 1 + (size_t)len) };
	struct ai_decision d;
	struct ai_context ctx;
	decide(c, &st, s->pending_ready == 0 && s->tx_status != 'E' && !s->replies.skipping, &ctx, &d);
	if (d.verdict != AI_ANSWER)
		return 1;    /* the portal's fill, if any, waits for its Describe or Execute */
	iobuf_drain(in, 1 + (size_t)len);
	if (!prepared_owe(s, PqMsg_Bind, NULL, 0, 0, NULL))
		client_fatal(c, SQLSTATE_INTERNAL_ERROR, NULL, NULL, "out of memory");
	return 0;
}

/* Bind to the unnamed portal: it carries its statement's tags. */
static int bind_step(struct client *c, struct server *s, uint32_t len)
{
	struct iobuf *in = &c->io.in;
	char head[320];
	size_t n = len - 4 < sizeof(head) ? len - 4 : sizeof(head);
	if (iobuf_copyout(in, PROTO_HEADER_LEN, head, n) != (size_t)n)
		return n < len - 4 ? -1 : 1;
	const char *nul = memchr(head, 0, n);
	if (!nul)
		return 1;
	const char *stmt = nul + 1;
	if (!memchr(stmt, 0, n - (size_t)(stmt - head)))
		return iobuf_len(in) < 1 + (size_t)len ? -1 : 1;
	const struct cache_stmt *cs;
	const struct stmt_tags *parsing = prepared_active(c) ? NULL : prepared_pending_parse(s, stmt);
	const struct ai_tags *t = parsing ? parsing->tags : statement_tags(c, stmt, &cs);
	if (parsing)
		cs = parsing->cstmt;    /* if that Parse fails, so does this Bind */
	if (head[0]) {
		/* a named portal: its Executes are admitted with these tags (never cached) */
		keep_portal_tags(c, head, t);
		return 1;
	}
	if (t || c->aic) {
		struct ai_client *a = W(c);
		if (!a)
			return 1;    /* out of memory: the portal goes untagged */
		ai_client_set_portal_tags(a, ai_tags_ref(t));
	}
	portal_forget(c);
	if (t && cs && t->cache != AI_CACHE_NONE && cache_on(c))
		return bind_cache_step(c, s, t, cs, len);
	return 1;
}

/*
 * Describe or Close of the unnamed portal that is a hit (answered in order
 * from the cache) or a miss (its RowDescription captured). Returns as client_step.
 */
static int portal_step(struct client *c, struct server *s, uint8_t type, uint32_t len)
{
	struct iobuf *in = &c->io.in;
	struct ai_client *a = c->aic;    /* made by the Bind that left a hit or a fill */
	uint8_t head[2];
	struct stmt_target target;
	if (!a)
		return 1;
	if (len < 6 || iobuf_copyout(in, PROTO_HEADER_LEN, head, 2) != 2)
		return len < 6 ? 1 : -1;
	if (!stmt_read_target(head, 2, &target) || target.what != STMT_TARGET_PORTAL)
		return 1;    /* a statement, or a named portal (its name does not end in two bytes) */
	struct stmt st = { .kind = type == PqMsg_Close ? STMT_CLOSE_PORTAL : STMT_DESCRIBE_PORTAL,
	                   .tags = ai_client_portal_tags(a) };
	struct ai_decision d;
	struct ai_context ctx;
	decide(c, &st, true, &ctx, &d);
	if (d.verdict == AI_FORWARD)
		return carry(c, &ctx, &d) ? 1 : 0;
	iobuf_drain(in, 1 + (size_t)len);
	if (d.verdict == AI_REFUSE)
		prepared_raise_error(s, d.refusal.sqlstate, d.refusal.message, NULL,
		                     d.refusal.hint[0] ? d.refusal.hint : NULL);
	else if (!prepared_owe(s, type, d.answer, 0, 0, NULL))
		client_fatal(c, SQLSTATE_INTERNAL_ERROR, NULL, NULL, "out of memory");
	return 0;
}

/* Execute of a portal: the middleware decides; a refusal fails it in place. */
static int execute_step(struct client *c, struct server *s, uint32_t len)
{
	struct iobuf *in = &c->io.in;
	struct ai_client *a = c->aic;    /* client_step asks only a client with tags, sluice.user or a batch decided */
	uint8_t head[PORTAL_NAME_MAX + 5];
	if (!a)
		return 1;
	size_t n = len - 4 < sizeof(head) ? len - 4 : sizeof(head);
	if (iobuf_copyout(in, PROTO_HEADER_LEN, head, n) != (size_t)n)
		return -1;
	struct stmt_execute ex;
	if (!stmt_read_execute(head, n, &ex))
		return 1;   /* malformed, or a name longer than any portal Bind tracked: PostgreSQL decides */
	struct stmt st = { .kind = STMT_EXECUTE, .portal = ex.portal, .max_rows = ex.max_rows,
	                   .tags = ex.portal[0] ? ai_portal_tags(a, ex.portal) : ai_client_portal_tags(a) };
	struct ai_decision d;
	struct ai_context ctx;
	decide(c, &st, true, &ctx, &d);
	if (d.verdict == AI_REFUSE) {
		iobuf_drain(in, 1 + (size_t)len);
		struct pg_error *r = &d.refusal;
		prepared_raise_error(s, r->sqlstate, r->message, r->detail[0] ? r->detail : NULL, r->hint[0] ? r->hint : NULL);
		return 0;
	}
	/* the portal's fill rides on the Execute; a hit's record on what is owed */
	struct usage_pending *owed = d.verdict == AI_ANSWER ? d.usage : NULL;
	if (owed)
		d.usage = NULL;
	if (!carry(c, &ctx, &d)) {
		usage_discard(owed);
		cache_entry_release(c->sl->cache, d.answer);
		return 0;
	}
	if (d.verdict == AI_FORWARD)
		return 1;
	iobuf_drain(in, 1 + (size_t)len);
	c->sl->stats.query_count++;
	c->pool->stats.query_count++;
	if (!prepared_owe(s, PqMsg_Execute, d.answer, d.from_row, ex.max_rows, owed))
		client_fatal(c, SQLSTATE_INTERNAL_ERROR, NULL, NULL, "out of memory");
	return 0;
}

/*
 * Describe of a lookup statement going to server s: when the cache lacks the
 * statement's parameter types, capture PostgreSQL's ParameterDescription and
 * RowDescription into its description (cache_describe_begin), so the next
 * Parse/Describe of it needs no server. Returns 1 to go on, -1 for more bytes.
 */
static int describe_statement_step(struct client *c, struct server *s, uint32_t len)
{
	struct iobuf *in = &c->io.in;
	if (iobuf_len(in) < 1 + (size_t)len)
		return -1;
	struct stmt_target target;
	if (!stmt_read_target(iobuf_data(in) + PROTO_HEADER_LEN, len - 4, &target) ||
	    target.what != STMT_TARGET_STATEMENT || !cache_on(c))
		return 1;
	const char *name = target.name;
	const struct cache_stmt *cs = NULL;
	const struct stmt_tags *parsing = prepared_active(c) ? NULL : prepared_pending_parse(s, name);
	const struct ai_tags *t = parsing ? parsing->tags : statement_tags(c, name, &cs);
	if (parsing)
		cs = parsing->cstmt;
	if (!t || !cs || t->cache != AI_CACHE_LOOKUP)
		return 1;
	struct stmt st = { .kind = STMT_DESCRIBE_STATEMENT, .tags = t, .cstmt = cs };
	struct ai_decision d;
	struct ai_context ctx;
	decide(c, &st, false, &ctx, &d);
	return carry(c, &ctx, &d) ? 1 : 0;
}

/* ---- a whole batch answered from the cache, no server taken ---- */

#define LOCAL_MAX_MESSAGES 64        /* a longer batch goes to a server */
#define LOCAL_MAX_PARSES 8
#define LOCAL_MAX_BYTES (256 * 1024)

struct local_msg {
	uint8_t type;
	size_t off;                      /* of its header in the input */
	uint32_t len;
	int parse;                       /* Parse: its index in local_batch.parses; Bind: the statement's, or -1 */
	struct cache_entry *hit;         /* Bind: its answer (a reference) */
	const struct ai_tags *tags;      /* Bind: its statement's tags */
	bool tags_kept;                  /* and they are kept tags (a reference can be taken) */
};

struct local_parse {
	struct stmt_parse p;
	const struct ai_tags *t;         /* its tags: &tags, or the batch's first (first_tags) */
	bool t_kept;                     /* t is kept tags (a reference can be taken) */
	struct ai_tags tags;
	struct cache_stmt *cstmt;        /* owned until kept by the client */
	struct cache_entry *desc;        /* the statement's description (a reference), or NULL */
};

struct local_batch {
	struct local_msg msgs[LOCAL_MAX_MESSAGES];
	int n;
	struct local_parse parses[LOCAL_MAX_PARSES];
	int n_parses;
	struct cache_entry *wait_for;    /* a Bind's identical miss in flight */
	const struct stmt_parse *first;  /* the first message, a Parse read by client_batch_step, or NULL */
	const struct ai_tags *first_tags; /* and its tags (a lookup) */
	bool first_kept;                 /* first_tags are kept tags (tags_new), not a copy on the stack */
	size_t bytes;                    /* of the batch, up to its Sync */
};

static void local_free(struct client *c, struct local_batch *b)
{
	for (int i = 0; i < b->n; i++)
		cache_entry_release(c->sl->cache, b->msgs[i].hit);
	for (int i = 0; i < b->n_parses; i++) {
		free(b->parses[i].cstmt);
		cache_entry_release(c->sl->cache, b->parses[i].desc);
	}
}

enum local_scan {
	LOCAL_WHOLE,      /* up to a Sync, or a Flush that ends what is buffered */
	LOCAL_PARTIAL,    /* the rest is still on its way (a client gets no reply before Sync or Flush) */
	LOCAL_TOO_LONG,   /* longer than a batch answered locally may be */
};

/* Headers of the buffered batch up to its Sync (or a final Flush): b->n whole messages, b->bytes. */
static enum local_scan local_scan(struct iobuf *in, struct local_batch *b)
{
	size_t off = 0, total = iobuf_len(in);
	for (;;) {
		b->bytes = off;
		if (off + PROTO_HEADER_LEN > total)
			return LOCAL_PARTIAL;
		if (b->n == LOCAL_MAX_MESSAGES)
			return LOCAL_TOO_LONG;
		const uint8_t *hdr = iobuf_data(in) + off;    /* one block: read in place */
		uint32_t len = stmt_header_len(hdr);
		if (len < 4 || off + 1 + (size_t)len > LOCAL_MAX_BYTES)
			return LOCAL_TOO_LONG;
		if (off + 1 + (size_t)len > total)
			return LOCAL_PARTIAL;
		b->msgs[b->n++] = (struct local_msg){ .type = hdr[0], .off = off, .len = len, .parse = -1 };
		off += 1 + (size_t)len;
		if (hdr[0] == PqMsg_Sync || (hdr[0] == PqMsg_Flush && off == total)) {
			b->bytes = off;
			return LOCAL_WHOLE;
		}
	}
}

/* A Parse of the batch: it must be a lookup (named ones need pgsluice's statement names). */
static bool local_parse(struct client *c, struct local_batch *b, struct local_msg *m, const uint8_t *body)
{
	if (b->n_parses == LOCAL_MAX_PARSES)
		return false;
	struct pg_error r;
	int i = b->n_parses;
	bool first = m->off == 0 && b->first;    /* read, and its tags parsed, by client_batch_step */
	if (first)
		b->parses[i].p = *b->first;
	else if (!stmt_read_parse(body, m->len - 4, &b->parses[i].p))
		return false;
	if (*b->parses[i].p.name && (!prepared_active(c) || prepared_client_has(c, b->parses[i].p.name)))
		return false;    /* a name in use: 42P05 comes the usual way */
	const char *q = b->parses[i].p.query;
	size_t q_len = b->parses[i].p.query_len;
	if (effect_of(c, q, q_len) != SETTINGS_NONE)
		return false;    /* the server's way notes it (note_settings) */
	b->parses[i].t = first ? b->first_tags : &b->parses[i].tags;
	b->parses[i].t_kept = first && b->first_kept;
	if (!first && (middleware_parse_tags(q, q_len, &b->parses[i].tags, &r) != TAGS_OK ||
	               b->parses[i].tags.cache != AI_CACHE_LOOKUP))
		return false;
	const struct stmt_parse *p = &b->parses[i].p;
	struct stmt st = { .kind = STMT_PARSE, .ahead = true, .tags = b->parses[i].t, .name = p->name,
	                   .text = p->query, .text_len = p->query_len, .types = p->types, .n_types = p->n_types };
	struct ai_decision d;
	struct ai_context ctx;
	decide(c, &st, false, &ctx, &d);
	if (d.verdict != AI_ANSWER)
		return false;
	b->parses[i].cstmt = d.cstmt;
	b->parses[i].desc = d.answer;
	m->parse = b->n_parses++;
	return true;
}

/* A Bind of the batch: to the unnamed portal, of a lookup statement whose answer is fresh. */
static bool local_bind(struct client *c, struct local_batch *b, struct local_msg *m, const uint8_t *body)
{
	struct msgreader rd;
	mr_init(&rd, body, m->len - 4);
	const char *portal = mr_string(&rd), *stmt = mr_string(&rd);
	if (rd.bad || *portal)
		return false;
	const struct cache_stmt *cs = NULL;
	m->tags = NULL;
	for (int i = b->n_parses - 1; i >= 0 && !m->tags; i--)
		if (strcmp(b->parses[i].p.name, stmt) == 0) {
			m->tags = b->parses[i].t;
			m->tags_kept = b->parses[i].t_kept;
			cs = b->parses[i].cstmt;
			m->parse = i;
		}
	if (!m->tags) {
		m->tags = statement_tags(c, stmt, &cs);
		m->tags_kept = true;    /* a statement's tags are kept tags */
	}
	if (!m->tags || !cs || m->tags->cache != AI_CACHE_LOOKUP)
		return false;
	struct stmt st = { .kind = STMT_BIND, .tags = m->tags, .cstmt = cs, .params = body,
	                   .params_len = m->len - 4, .ahead = true,
	                   .described = m->parse >= 0 && b->parses[m->parse].desc };
	struct ai_decision d;
	struct ai_context ctx;
	decide(c, &st, false, &ctx, &d);
	if (d.verdict == AI_WAIT && !b->wait_for)
		b->wait_for = d.answer;
	m->hit = d.verdict == AI_ANSWER ? d.answer : NULL;
	return d.verdict != AI_FORWARD;
}

/*
 * A Describe of statement name (body: 'S', name) in the batch: answerable
 * when the statement is a lookup (parsed in the batch, or before) whose
 * description the cache holds with its parameter types. m->hit takes a
 * reference on the description.
 */
static bool local_describe_statement(struct client *c, struct local_batch *b, struct local_msg *m,
                                     const uint8_t *body)
{
	struct stmt_target target;
	if (!stmt_read_target(body, m->len - 4, &target))
		return false;
	const char *name = target.name;
	struct cache_entry *d = NULL;
	bool in_batch = false;
	for (int i = b->n_parses - 1; i >= 0 && !in_batch; i--)
		if (strcmp(b->parses[i].p.name, name) == 0) {
			in_batch = true;
			d = b->parses[i].desc;
			if (d)
				cache_entry_hold(d);
		}
	if (!in_batch) {
		const struct cache_stmt *cs = NULL;
		const struct ai_tags *t = statement_tags(c, name, &cs);
		if (!t || !cs || t->cache != AI_CACHE_LOOKUP)
			return false;
		struct stmt st = { .kind = STMT_DESCRIBE_STATEMENT, .ahead = true, .tags = t, .cstmt = cs };
		struct ai_decision dd;
		struct ai_context ctx;
		decide(c, &st, false, &ctx, &dd);
		d = dd.answer;
	}
	m->hit = d;
	return d && d->rowdesc && d->rows_len > 0;
}

/*
 * Can every message of the batch be answered without a server? Looks every
 * Bind up (references kept in b). Describe and Execute must be of the
 * unnamed portal just bound; Describe needs the answer's RowDescription.
 * A whole batch must execute something (else it is no lookup).
 */
static bool local_plan(struct client *c, struct local_batch *b, bool whole)
{
	const uint8_t *all = iobuf_data(&c->io.in);
	struct local_msg *bound = NULL;
	bool executes = false, described = false;
	for (int i = 0; all && i < b->n; i++) {
		struct local_msg *m = &b->msgs[i];
		const uint8_t *body = all + m->off + PROTO_HEADER_LEN;
		switch (m->type) {
		case PqMsg_Parse:
			if (!local_parse(c, b, m, body))
				return false;
			break;
		case PqMsg_Bind:
			if (!local_bind(c, b, m, body))
				return false;
			bound = m;
			break;
		case PqMsg_Describe:
			if (body[0] == STMT_TARGET_STATEMENT) {
				if (!local_describe_statement(c, b, m, body))
					return false;
				described = true;
				break;
			}
			/* fall through */
		case PqMsg_Close: {
			struct stmt_target target;    /* the unnamed portal only */
			if (m->len != 6 || !stmt_read_target(body, m->len - 4, &target) || target.what != STMT_TARGET_PORTAL ||
			    target.name[0] || (m->type == PqMsg_Describe && !bound))
				return false;
		}
			if (m->type == PqMsg_Describe && bound->hit && !bound->hit->rowdesc)
				return false;
			if (m->type == PqMsg_Close)
				bound = NULL;
			break;
		case PqMsg_Execute:
			if (!bound || body[0] != 0)
				return false;
			executes = true;
			break;
		case PqMsg_Flush:
		case PqMsg_Sync:
			break;
		default:
			return false;
		}
	}
	if (!all)
		return false;
	if (executes || !whole)
		return true;
	/* Parse / Describe of statements only (a driver preparing one, as psycopg
	 * does from the 6th execution): answered when the cache knows each
	 * statement, and each is named: pgsluice's statement names are prepared
	 * on a server at their first use there, an unnamed statement would not be */
	for (int i = 0; i < b->n_parses; i++)
		if (!b->parses[i].desc || !*b->parses[i].p.name)
			return false;
	return b->n_parses > 0 || described;
}

static void add_message(struct iobuf *out, uint8_t type)
{
	uint8_t msg[5] = { type, 0, 0, 0, 4 };
	iobuf_add(out, msg, sizeof(msg));
}

/* Answer one planned message of the batch; *failed: an Execute was refused, skip to Sync. */
static bool local_answer(struct client *c, struct local_batch *b, struct local_msg *m, const uint8_t *body,
                         bool *failed)
{
	struct iobuf *out = &c->io.out;
	switch (m->type) {
	case PqMsg_Parse: {
		struct local_parse *p = &b->parses[m->parse];
		if (*p->p.name && !prepared_client_parse(c, p->p.name, p->p.query, p->p.types, p->p.n_types))
			return false;
		struct ai_tags *k = p->t_kept ? ai_tags_ref(p->t) : ai_tags_keep(p->t);
		bool kept = k && keep_statement_tags(c, p->p.name, k, p->cstmt);
		if (!k)
			free(p->cstmt);
		ai_tags_unref(k);
		p->cstmt = NULL;
		add_message(out, PqMsg_ParseComplete);
		return kept;
	}
	case PqMsg_Bind: {
		struct ai_client *a = W(c);
		if (!a)
			return false;
		portal_forget(c);
		struct ai_tags *k = m->tags_kept ? ai_tags_ref(m->tags) : ai_tags_keep(m->tags);    /* (or the batch's own copy) */
		ai_client_set_portal_tags(a, k);
		ai_client_set_cached_portal(a, m->hit);
		m->hit = NULL;
		add_message(out, PqMsg_BindComplete);
		return k != NULL;
	}
	case PqMsg_Describe:
		if (body[0] == STMT_TARGET_STATEMENT)
			cacheio_write_statement(out, m->hit);
		else
			cacheio_write_rowdesc(out, ai_client_cached_portal(c->aic));
		return true;
	case PqMsg_Close:
		portal_forget(c);
		add_message(out, PqMsg_CloseComplete);
		return true;
	case PqMsg_Execute: {
		if (!ai_client_cached_portal(c->aic))
			return false;    /* the Bind before it bound the portal to its hit */
		struct stmt_execute ex;
		struct stmt st = { .kind = STMT_EXECUTE, .portal = "", .tags = ai_client_portal_tags(c->aic),
		                   .max_rows = stmt_read_execute(body, m->len - 4, &ex) ? ex.max_rows : 0 };
		struct ai_decision d;
		struct ai_context ctx;
		decide(c, &st, true, &ctx, &d);
		if (d.verdict == AI_REFUSE) {
			struct pg_error *r = &d.refusal;
			struct msgbuf em;
			msg_init(&em);
			msg_add_error(&em, PqMsg_ErrorResponse, "ERROR", r->sqlstate, r->detail[0] ? r->detail : NULL,
			              r->hint[0] ? r->hint : NULL, "%s", r->message);
			msg_flush_to(&em, out);
			msg_free(&em);
			*failed = true;
			return true;
		}
		uint32_t pos = d.from_row;
		cacheio_write_rows(out, d.answer, &pos, st.max_rows);
		c->sl->stats.query_count++;
		c->pool->stats.query_count++;
		ai_answered(&ctx, &d);    /* before ReadyForQuery; a lost record is logged and counted */
		return true;
	}
	case PqMsg_Sync:
		portal_forget(c);
		client_send_ready(c, 'I');
		return true;
	default:
		return true;    /* Flush: everything is written at once anyway */
	}
}

/*
 * With no server linked, answer the buffered batch from the cache when every
 * Execute in it is a fresh hit: no server is taken, as for a simple Query.
 * Returns 1 when it cannot be (the usual way follows), 0 when answered, -1
 * when c was parked for an identical miss. first (NULL: none) is the batch's
 * first message, a Parse client_batch_step read, with its lookup tags first_tags
 * (kept tags when first_kept, else a copy that lasts as long as the call).
 */
static int local_batch_step(struct client *c, const struct stmt_parse *first, const struct ai_tags *first_tags,
                            bool first_kept)
{
	/* on the stack and not zeroed: calloc of its 9 kB cost more than the rest of a hit */
	struct local_batch batch, *b = &batch;
	struct iobuf *in = &c->io.in;
	b->n = b->n_parses = 0;
	b->wait_for = NULL;
	b->bytes = 0;
	b->first = first;
	b->first_tags = first_tags;
	b->first_kept = first_kept;
	enum local_scan scan = local_scan(in, b);
	bool planned = scan != LOCAL_TOO_LONG && local_plan(c, b, scan == LOCAL_WHOLE);
	int step = 1;
	if (planned && scan == LOCAL_PARTIAL) {
		step = -1;    /* so far every message can be answered: wait for the rest */
	} else if (planned && b->wait_for) {
		if (!ai_client_take_bypass(c->aic))
			step = cache_park(c, b->wait_for);
	} else if (planned) {
		const uint8_t *all = iobuf_data(in);
		bool failed = false, ok = true;
		for (int i = 0; i < b->n && ok; i++) {
			if (failed && b->msgs[i].type != PqMsg_Sync)
				continue;    /* skipped after an error, as PostgreSQL does */
			ok = local_answer(c, b, &b->msgs[i], all + b->msgs[i].off + PROTO_HEADER_LEN, &failed);
		}
		iobuf_drain(in, b->bytes);
		c->local_batch_open = b->msgs[b->n - 1].type == PqMsg_Flush;
		step = 0;
		if (!ok)
			client_fatal(c, SQLSTATE_INTERNAL_ERROR, NULL, NULL, "out of memory");
	}
	local_free(c, b);
	return step;
}

/*
 * Refuse an extended-protocol batch with no server linked: the error answers
 * its first message and the rest is dropped up to Sync, which gets
 * ReadyForQuery, as PostgreSQL skips after an error. No server is taken.
 */
static void refuse_batch(struct client *c, uint32_t len, const struct pg_error *r)
{
	struct msgbuf m;
	msg_init(&m);
	msg_add_error(&m, PqMsg_ErrorResponse, "ERROR", r->sqlstate, r->detail[0] ? r->detail : NULL,
	              r->hint[0] ? r->hint : NULL, "%s", r->message);
	msg_flush_to(&m, &c->io.out);
	msg_free(&m);
	c->skipping_to_sync = true;
	c->drop_left = 1 + len;
}

/*
 * The buffered batch starts [Parse] Bind [Describe] Execute, the shape
 * drivers send for one statement? Then *exec_at is the Execute's offset.
 * Anything else (or a batch not wholly buffered) is decided the usual way,
 * at its Execute, with a server.
 */
static bool simple_batch(struct iobuf *in, size_t *exec_at)
{
	static const char shape[] = "PBDE";
	size_t off = 0, total = iobuf_len(in);
	const uint8_t *all = iobuf_data(in);    /* one block: read in place, no copy */
	for (int k = 0; k < 4; k++) {
		if (off + PROTO_HEADER_LEN > total)
			return false;
		const uint8_t *hdr = all + off;
		if (shape[k] != hdr[0]) {
			if (k == 0 || k == 2)
				continue;    /* Parse and Describe are optional */
			return false;
		}
		uint32_t len = proto_header_len(hdr);
		if (len < 4)
			return false;
		if (hdr[0] == PqMsg_Execute) {
			*exec_at = off;
			return true;
		}
		off += 1 + (size_t)len;
	}
	return false;
}

/*
 * The first message of a batch while no server is linked (outside a
 * transaction under transaction pooling): answer it from the completion
 * cache when it can be; else, for a one-statement batch, decide for its
 * Execute now, so that a refusal takes no server; the Execute then goes
 * through without a second count. Returns 1 to go on, 0 when the batch was
 * answered or refused, -1 to wait (more bytes, or parked).
 */
static int batch_step(struct client *c, uint8_t type, uint32_t len, struct ai_tags **kept)
{
	struct iobuf *in = &c->io.in;
	size_t exec_at;
	struct ai_tags stack_tags, *tags = &stack_tags;    /* on the heap when kept, for parse_step */
	const struct ai_tags *t = NULL;
	struct pg_error r;
	/* A first Parse is read, and its tags parsed, once here: local_plan
	 * answers no batch whose first Parse is not a lookup, so such a batch
	 * skips it. (The message may not be whole yet: then local_batch_step
	 * decides, waiting for it when it may answer the batch.) */
	struct stmt_parse p;
	bool parse_read = false;
	enum tags_result tr = TAGS_NONE;
	if (type == PqMsg_Parse && iobuf_len(in) >= 1 + (size_t)len &&
	    stmt_read_parse(iobuf_data(in) + PROTO_HEADER_LEN, len - 4, &p)) {
		parse_read = true;
		if (has_comment_opener(p.query, p.query_len)) {
			if ((*kept = ai_tags_new()) != NULL)
				tags = *kept;    /* parsed where parse_step will find them: no copy */
			tr = middleware_parse_tags(p.query, p.query_len, tags, &r);
		}
	}
	if ((!parse_read || (tr == TAGS_OK && tags->cache == AI_CACHE_LOOKUP)) && cache_on(c)) {
		int local = local_batch_step(c, parse_read ? &p : NULL, tags, tags == *kept);
		if (local <= 0)
			return local;
	}
	if (!simple_batch(in, &exec_at))
		return 1;
	const uint8_t *all = iobuf_data(in);
	struct msgreader rd;
	size_t bind_off = 0;
	if (type == PqMsg_Parse) {
		if (!parse_read) {
			/* a Parse stmt_read_parse refuses (its type list): its name and text as far as they read */
			mr_init(&rd, all + PROTO_HEADER_LEN, len - 4);
			p.name = mr_string(&rd);
			const char *query = mr_string(&rd);
			if (!rd.bad && has_comment_opener(query, strlen(query)))
				tr = middleware_parse_tags(query, strlen(query), tags, &r);
		}
		if (tr == TAGS_INVALID) {
			refuse_batch(c, len, &r);
			return 0;
		}
		if (tr == TAGS_OK && tags->has_ai_key)
			t = tags;
		bind_off = 1 + (size_t)len;
		/* the Bind must use the statement just parsed */
		struct msgreader br;
		mr_init(&br, all + bind_off + PROTO_HEADER_LEN, exec_at - bind_off - PROTO_HEADER_LEN);
		mr_string(&br);
		if (br.bad || strcmp(mr_string(&br), p.name) != 0)
			return 1;
	} else {
		mr_init(&rd, all + PROTO_HEADER_LEN, len - 4);
		mr_string(&rd);
		const char *stmt = mr_string(&rd);
		if (rd.bad)
			return 1;
		t = statement_tags(c, stmt, NULL);
	}
	if (!t && !session_of(c)->user[0])
		return 1;    /* not attributed: nothing to decide */
	struct ai_client *a = W(c);
	if (!a) {
		client_fatal(c, SQLSTATE_INTERNAL_ERROR, NULL, NULL, "out of memory");
		return 0;
	}
	struct stmt st = { .kind = STMT_EXECUTE, .portal = "", .tags = t, .ahead = true };
	struct ai_decision d;
	struct ai_context ctx;
	decide(c, &st, false, &ctx, &d);
	if (d.verdict == AI_REFUSE) {
		refuse_batch(c, len, &d.refusal);
		return 0;
	}
	if (type == PqMsg_Parse && parse_read && !*p.name) {
		/* hand the Parse's reading to parse_step once a server is linked: the
		 * unnamed statement's Parse stays at the front until then (pgsluice
		 * answers only named ones without a server) */
		struct ai_tags *k = !t ? NULL : t == *kept ? *kept : ai_tags_keep(t);
		if (t && t == *kept)
			*kept = NULL;    /* taken over */
		ai_client_hand_batch_parse(a, k, !t || k, len);    /* out of memory: parse_step reads it again */
	}
	return 1;
}

int client_batch_step(struct client *c, uint8_t type, uint32_t len)
{
	struct ai_tags *kept = NULL;    /* the first Parse's tags, unless handed to parse_step */
	int step = batch_step(c, type, len, &kept);
	ai_tags_unref(kept);
	return step;
}

int client_step(struct client *c, struct server *s, uint8_t type, uint32_t len)
{
	const struct ai_client *a = c->aic;    /* NULL for a client that never used the middleware */
	client_drop_pending_setting(c);    /* what an earlier message left, unrelayed */
	if (s && (type == PqMsg_Bind || type == PqMsg_Execute || type == PqMsg_Close) && settings_ext_active(c) &&
	    settings_ext_step(c, type, len) < 0)
		return -1;
	switch (type) {
	case PqMsg_Query:
		if (s && s->internal != SV_INTERNAL_NONE)
			return -1;
		if (ai_client_unnamed_tagged(a))
			keep_statement_tags(c, "", NULL, NULL);    /* a simple Query drops the unnamed statement */
	{
		int done = query_step(c, len);
		if (done == 0)
			client_drop_pending_setting(c);    /* answered without a server */
		return done;
	}
	case PqMsg_Parse:
		/* also before a server is linked: pgsluice may answer it (prepared.h); once per
		 * message, so the step after the link (parse_noted) skips it */
		if (!c->parse_noted && (!c->settings_tainted || follows_settings(c)) && parse_settings_step(c, len) < 0)
			return -1;
		if (!s) {
			c->parse_noted = true;
			return 1;
		}
		c->parse_noted = false;
		return parse_step(c, s, len);
	case PqMsg_FunctionCall:
		c->settings_tainted = true;    /* set_config() by its OID, for all pgsluice can tell */
		return 1;
	case PqMsg_Bind:
		return s && ai_client_sees_bind(a) ? bind_step(c, s, len) : 1;
	case PqMsg_Close:
		if (s && ai_client_sees_close(a)) {
			int step = close_step(c, len);
			if (step <= 0)
				return step;
		}
		/* fall through */
	case PqMsg_Describe:
		if (s && ai_client_sees_describe(a)) {
			int step = describe_statement_step(c, s, len);
			if (step <= 0)
				return step;
		}
		return s && ai_client_portal_cached(a) ? portal_step(c, s, type, len) : 1;
	case PqMsg_Execute:
		return s && ai_client_sees_execute(a) ? execute_step(c, s, len) : 1;
	default:
		return 1;
	}
}

bool client_step_batch_ready(const struct client *c)
{
	return ai_client_batch_ready(c->aic);
}

bool client_step_batch_message(struct client *c, struct server *s, uint8_t type, const uint8_t *body,
                               size_t body_len)
{
	struct ai_client *a = c->aic;
	switch (type) {
	case PqMsg_Bind: {
		/* the unnamed portal of the unnamed statement only (relay_batch read the
		 * portal name's NUL and the byte after it); bind_step's tag bookkeeping */
		if (body[0] != 0 || body[1] != 0)
			return false;    /* a named portal or statement: bind_step's lists */
		const struct stmt_tags *parsing = ai_client_parsing(a) && !prepared_active(c) ? prepared_pending_parse(s, "") : NULL;
		const struct cache_stmt *cs;
		const struct ai_tags *t = parsing ? parsing->tags : ai_client_unnamed_statement(a, &cs);
		if (parsing ? parsing->cstmt != NULL : cs != NULL)
			return false;    /* a cache lookup statement: bind_cache_step */
		ai_client_set_portal_tags(a, ai_tags_ref(t));    /* as bind_step */
		return true;
	}
	case PqMsg_Describe:
		return body[0] == STMT_TARGET_PORTAL;    /* a statement's may start a capture (describe_statement_step) */
	case PqMsg_Execute: {
		if (body_len < 5 || body[0] != 0)
			return false;    /* a named portal: execute_step's list */
		if (!ai_client_portal_tags(a) && !ai_client_session(a)->user[0] && !ai_client_batch_admitted(a))
			return true;     /* a portal of an unattributed statement */
		/* admitted ahead: relay_batch attaches its record to the Execute's entry; else
		 * admission may refuse it, and execute_step fails it in place */
		return ai_client_take_ahead(a);
	}
	case PqMsg_Sync:
		client_step_batch_end(c);    /* as client_relay before client_step_sync */
		return true;
	default:
		return true;     /* Flush */
	}
}

bool client_step_sync(struct client *c)
{
	portal_forget(c);
	if (!c->local_batch_open || c->server)
		return false;
	/* the batch was answered up to a Flush without a server: its Sync too */
	c->local_batch_open = false;
	client_send_ready(c, 'I');
	return true;
}

void client_step_relayed(struct client *c, struct server *s)
{
	c->local_batch_open = false;    /* the server's ReadyForQuery ends the batch */
	struct ai_client *a = c->aic;
	if (!a)
		return;
	struct usage_pending *usage;
	struct cache_entry *fill;
	struct stmt_tags *parsed;
	ai_client_take(a, &usage, &fill, &parsed);
	if (usage)
		prepared_attach_usage(s, usage);
	if (fill)
		prepared_attach_fill(s, fill);
	if (parsed && prepared_attach_parse(s, parsed))
		ai_client_parse_sent(a);
}

void client_step_free(struct client *c)
{
	ai_client_free(c->aic, c->sl->cache);
	c->aic = NULL;
	if (c->cache_wake_ev) {
		event_free(c->cache_wake_ev);
		c->cache_wake_ev = NULL;
	}
}

bool client_step_startup_options(struct client *c, const char *options, const char *ignored, char *errbuf,
                                 size_t errlen)
{
	struct ai_session next = *session_of(c);
	if (!ai_session_apply_options(&next, &c->vars, c->settings_startup, options, ignored, errbuf, errlen))
		return false;
	if (memcmp(&next, session_of(c), sizeof(next)) == 0)
		return true;    /* no sluice.* option: no middleware state */
	struct ai_client *a = W(c);
	if (!a) {
		snprintf(errbuf, errlen, "out of memory");
		return false;
	}
	ai_client_set_session(a, &next);
	return true;
}

bool client_step_has_pending(const struct client *c)
{
	return ai_client_carries(c->aic);
}

void client_step_batch_end(struct client *c)
{
	ai_batch_end(c->aic);
}

bool client_step_batch_admitted(const struct client *c)
{
	return ai_client_batch_admitted(c->aic);
}

bool client_step_attributed(const struct client *c)
{
	return session_of(c)->user[0] || ai_client_has_statement_tags(c->aic);
}

void client_step_attach_fill(struct client *c, struct server *s)
{
	struct cache_entry *fill = ai_client_take_fill(c->aic);
	if (fill)
		prepared_attach_fill(s, fill);
}
