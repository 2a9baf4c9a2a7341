/* SPDX-License-Identifier: PostgreSQL */
/*
 * prepared.c - see prepared.h. PgBouncer's approach (1.21+), pgsluice's code:
 * a client's statement names map to one shared server-side name per
 * distinct text and parameter types; a server is given a statement with an
 * injected Parse the first time a client uses it there, and pgsluice answers
 * the client's own Parse/Close itself when the server needs neither.
 */
#include "prepared.h"

#include <arpa/inet.h>
#include <ctype.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "ai/cache.h"
#include "ai/client_state.h"
#include "ai/token.h"
#include "ai/usage.h"
#include "cacheio.h"
#include "client.h"
#include "client_step.h"
#include "config.h"
#include "log.h"
#include "pool.h"
#include "proto.h"
#include "refuse.h"
#include "replyq.h"
#include "server.h"
#include "settings.h"
#include "sluice.h"
#include "util.h"

/* ---- registry ---- */

static bool drops_all_statements(const char *text, size_t len);
static void forget_all(struct server *s);

static void stmt_release(struct prepared_registry *reg, struct prepared_stmt *st)
{
	if (--st->refcount > 0)
		return;
	struct prepared_stmt **pp = &reg->buckets[st->hash % PREPARED_BUCKETS];
	while (*pp && *pp != st)
		pp = &(*pp)->next;
	if (*pp)
		*pp = st->next;
	reg->count--;
	free(st->query);
	free(st->param_types);
	free(st);
}

static uint64_t stmt_hash(const char *query, size_t qlen, const uint8_t *types, uint16_t n_params)
{
	return hash_fnv1a(hash_fnv1a(HASH_FNV1A_BASIS, query, qlen), types, (size_t)n_params * 4);
}

/* The shared entry for (query, types), or NULL; no reference taken. */
static struct prepared_stmt *stmt_find(struct prepared_registry *reg, const char *query, size_t qlen,
                                       const uint8_t *types, uint16_t n_params)
{
	uint64_t h = stmt_hash(query, qlen, types, n_params);
	struct prepared_stmt *st;
	for (st = reg->buckets[h % PREPARED_BUCKETS]; st; st = st->next)
		if (st->hash == h && st->n_params == n_params && strlen(st->query) == qlen &&
		    memcmp(st->query, query, qlen) == 0 && memcmp(st->param_types, types, (size_t)n_params * 4) == 0)
			return st;
	return NULL;
}

/* The shared entry for (query, types), created on first use; refcount taken. */
static struct prepared_stmt *stmt_acquire(struct prepared_registry *reg, const char *query, size_t qlen,
                                          const uint8_t *types, uint16_t n_params)
{
	uint64_t h = stmt_hash(query, qlen, types, n_params);
	struct prepared_stmt *st = stmt_find(reg, query, qlen, types, n_params);
	if (st) {
		st->refcount++;
		return st;
	}
	st = calloc(1, sizeof(*st));
	if (!st)
		return NULL;
	st->query = strndup(query, qlen);
	st->param_types = malloc((size_t)n_params * 4 + 1);
	if (!st->query || !st->param_types) {
		free(st->query);
		free(st->param_types);
		free(st);
		return NULL;
	}
	memcpy(st->param_types, types, (size_t)n_params * 4);
	st->n_params = n_params;
	st->drops_all = drops_all_statements(query, qlen);
	st->hash = h;
	st->refcount = 1;
	/* DEALLOCATE ALL / DISCARD ALL drop every statement when they run, so
	 * they go to the server as the unnamed statement, parsed at each use. */
	if (!st->drops_all)
		snprintf(st->server_name, sizeof(st->server_name), "PGSLUICE_%llu",
		         (unsigned long long)++reg->next_id);
	st->next = reg->buckets[h % PREPARED_BUCKETS];
	reg->buckets[h % PREPARED_BUCKETS] = st;
	reg->count++;
	return st;
}

void prepared_registry_free(struct prepared_registry *reg)
{
	for (size_t i = 0; i < PREPARED_BUCKETS; i++) {
		struct prepared_stmt *st = reg->buckets[i], *next;
		for (; st; st = next) {
			next = st->next;
			free(st->query);
			free(st->param_types);
			free(st);
		}
		reg->buckets[i] = NULL;
	}
	reg->count = 0;
}

/* prepared_active's body, inline for the calls in this file (every Query and Parse). */
static inline bool active(const struct client *c)
{
	return c->pool && c->pool->pool_mode != POOL_MODE_SESSION && c->sl->cfg->max_prepared_statements > 0;
}

bool prepared_active(const struct client *c)
{
	return active(c);
}

/* ---- a client's names ---- */

static struct client_stmt *client_find(const struct client *c, const char *name)
{
	for (size_t i = 0; i < c->stmts.n; i++)
		if (strcmp(c->stmts.items[i].name, name) == 0)
			return &c->stmts.items[i];
	return NULL;
}

bool prepared_client_has(const struct client *c, const char *name)
{
	return client_find(c, name) != NULL;
}

static void client_drop(struct client *c, struct client_stmt *cs)
{
	free(cs->name);
	stmt_release(&c->sl->prepared, cs->stmt);
	*cs = c->stmts.items[--c->stmts.n];
}

static void client_drop_all(struct client *c)
{
	while (c->stmts.n > 0)
		client_drop(c, &c->stmts.items[c->stmts.n - 1]);
}

/* Bind name to st (whose reference the client takes over). False on OOM. */
static bool client_bind_name(struct client *c, const char *name, struct prepared_stmt *st)
{
	struct client_stmt *cs = client_find(c, name);
	if (cs) {
		/* Callers refuse a Parse of a live name with 42P05 first (PostgreSQL's
		 * rule); should one get here, the new text replaces the old. */
		stmt_release(&c->sl->prepared, cs->stmt);
		cs->stmt = st;
		return true;
	}
	if (c->stmts.n == c->stmts.cap) {
		size_t cap = c->stmts.cap ? c->stmts.cap * 2 : 8;
		struct client_stmt *items = realloc(c->stmts.items, cap * sizeof(*items));
		if (!items)
			return false;
		c->stmts.items = items;
		c->stmts.cap = cap;
	}
	char *copy = strdup(name);
	if (!copy)
		return false;
	c->stmts.items[c->stmts.n++] = (struct client_stmt){ copy, st, false };
	return true;
}

bool prepared_client_parse(struct client *c, const char *name, const char *query, const uint8_t *types,
                           uint16_t n_types)
{
	/* no types: a Parse's NULL list; memcpy/memcmp take no NULL even for 0 bytes */
	struct prepared_stmt *st = stmt_acquire(&c->sl->prepared, query, strlen(query),
	                                        types ? types : (const uint8_t *)"", n_types);
	if (!st)
		return false;
	if (!client_bind_name(c, name, st)) {
		stmt_release(&c->sl->prepared, st);
		return false;
	}
	return true;
}

void prepared_client_free(struct client *c)
{
	client_drop_all(c);
	free(c->stmts.items);
	c->stmts.items = NULL;
	c->stmts.cap = 0;
}

/* ---- a server's prepared set and reply queue ---- */

static struct server_stmt *server_find(struct server *s, const struct prepared_stmt *st)
{
	for (size_t i = 0; i < s->stmts.n; i++)
		if (s->stmts.items[i].stmt == st)
			return &s->stmts.items[i];
	return NULL;
}

static void server_forget(struct server *s, struct prepared_stmt *st)
{
	struct server_stmt *ss = server_find(s, st);
	if (!ss)
		return;
	*ss = s->stmts.items[--s->stmts.n];
	stmt_release(&s->pool->sl->prepared, st);
}

/* Append an entry of frontend message type and action to s's reply queue. */
static bool queue_push(struct server *s, uint8_t type, enum replyq_action action, struct prepared_stmt *st)
{
	return replyq_push(&s->replies, type, action, st);
}

/* The client is owed an error in place of success: its usage record was not journaled. */
void prepared_write_unrecorded(struct server *s)
{
	if (!s->client)
		return;
	struct msgbuf m;
	msg_init(&m);
	msg_add_error(&m, PqMsg_ErrorResponse, "ERROR", SQLSTATE_DISK_FULL,
	              "The statement ran, but its LLM usage could not be written to the usage journal.",
	              "Check the free space and permissions of usage_journal_dir.",
	              "could not record LLM usage: the usage journal cannot be written");
	msg_flush_to(&m, &s->client->io.out);
	msg_free(&m);
}

/*
 * The replyq settle callback (arg: the server): entry e leaves s's queue
 * with outcome o. The middleware's token goes back to ai_settle; the core's
 * riders are applied (completed) or dropped. Returns false when a completed
 * request's usage record could not be journaled.
 */
static bool settle_entry(void *arg, struct replyq_entry *e, enum replyq_outcome o)
{
	struct server *s = arg;
	bool ok = o == RQ_COMPLETED;
	bool done = ok && !e->failed;
	bool recorded = true;
	if (ok && e->type == PqMsg_Parse && e->action != RQ_SYNTHESISE && e->stmt)
		e->stmt->parsed = true;    /* known good: a later Parse of it needs no server */
	if (o == RQ_SKIPPED && e->type == PqMsg_Parse && e->stmt)
		server_forget(s, e->stmt);   /* the Parse failed: not prepared there */
	if (e->token) {
		enum ai_outcome ao = done ? AI_COMPLETED : o == RQ_COMPLETED || o == RQ_FAILED ? AI_FAILED : AI_SKIPPED;
		if (s->capture && s->capture == ai_token_cache(e->token))
			s->capture = NULL;
		/* an answer read inside a transaction block may be rolled back; one
		 * read on a server whose settings a client may have changed unseen
		 * may not be what the key says */
		bool cacheable = s->tx_status == 'I' && !s->block_begun && !s->settings_tainted;
		struct stmt_tags *parsed;
		recorded = ai_settle(s->pool->sl, e->token, ao, cacheable, &parsed);
		e->token = NULL;
		if (parsed)
			client_parsed(s->pool->sl, s->client, parsed, ok);
	}
	if (e->setting) {
		if (done)
			settings_query_done(s, e->setting, e->type == PqMsg_Execute);
		sessvar_op_free(e->setting);
		free(e->setting);
		e->setting = NULL;
	}
	if (e->client_name) {
		/* a Parse that failed or was skipped defined nothing: the name is free again */
		struct client_stmt *cs = ok || !s->client ? NULL : client_find(s->client, e->client_name);
		if (cs)
			client_drop(s->client, cs);
		free(e->client_name);
		e->client_name = NULL;
	}
	if ((e->type == PqMsg_Bind || e->type == PqMsg_Describe) && e->action == RQ_FORWARD && e->stmt) {
		stmt_release(&s->pool->sl->prepared, e->stmt);    /* the reference the request held */
		e->stmt = NULL;
	}
	if (e->notify) {
		free(e->notify);    /* its statement failed or was skipped (notify_server_reply takes a success's) */
		e->notify = NULL;
	}
	return recorded;
}

/* The newest entry, when it is a forwarded request of type. */
static struct replyq_entry *tail_forwarded(struct server *s, uint8_t type)
{
	struct replyq_entry *e = replyq_tail(&s->replies);
	return e && e->type == type && e->action == RQ_FORWARD ? e : NULL;
}

void prepared_attach_usage(struct server *s, struct usage_pending *usage)
{
	struct replyq_entry *e = replyq_tail(&s->replies);
	if (!usage)
		return;
	if (!e) {
		usage_discard(usage);    /* nothing to ride on: the server will not answer it */
		return;
	}
	ai_token_add_usage(&e->token, usage);
}

void prepared_attach_setting(struct server *s, uint8_t type, struct sessvar_op *op)
{
	struct replyq_entry *e = tail_forwarded(s, type);
	if (!op)
		return;
	/* an Execute while skipping to Sync pushed no entry: the tail is another's */
	if (!e || e->setting || (type != PqMsg_Query && type != PqMsg_Execute) ||
	    (type == PqMsg_Execute && s->replies.skipping)) {
		sessvar_op_free(op);
		free(op);
		return;
	}
	e->setting = op;
}

void prepared_attach_fill(struct server *s, struct cache_entry *fill)
{
	struct replyq_entry *e = replyq_tail(&s->replies);
	if (!fill)
		return;
	if (!e || e->action != RQ_FORWARD ||
	    (e->type != PqMsg_Query && e->type != PqMsg_Describe && e->type != PqMsg_Execute) ||
	    !ai_token_add_cache(&e->token, fill, false)) {
		ai_fill_abandon(s->pool->sl->cache, &fill);    /* the server will not answer it (skipping) */
		return;
	}
	e->fill = true;    /* asked for every reply: the relay needs no call into ai/ for a token without one */
}

bool prepared_attach_parse(struct server *s, struct stmt_tags *parsed)
{
	struct replyq_entry *e = tail_forwarded(s, PqMsg_Parse);
	if (!e || !ai_token_add_parsed(&e->token, parsed)) {
		ai_stmt_tags_free(parsed);    /* skipped by the server */
		return false;
	}
	return true;
}

const struct stmt_tags *prepared_pending_parse(struct server *s, const char *name)
{
	struct replyq *q = &s->replies;
	for (uint32_t i = q->n; i-- > 0;) {
		const struct stmt_tags *st = ai_token_parsed(replyq_at(q, i)->token);
		if (st && strcmp(st->name, name) == 0)
			return st;
	}
	return NULL;
}

bool prepared_owe(struct server *s, uint8_t type, struct cache_entry *hit, uint32_t row_pos,
                  int32_t max_rows, struct usage_pending *usage)
{
	struct ai_token *tok = NULL;
	bool made = !hit || ai_token_add_cache(&tok, hit, true);
	if (!made)
		cache_entry_release(s->pool->sl->cache, hit);
	made = ai_token_add_usage(&tok, usage) && made;    /* takes usage in any case */
	bool skipped = s->replies.skipping;
	if (!made || skipped ||
	    !queue_push(s, type, RQ_SYNTHESISE, NULL)) {
		struct stmt_tags *parsed;
		ai_settle(s->pool->sl, tok, AI_SKIPPED, false, &parsed);    /* releases the hit, discards usage */
		return skipped;
	}
	struct replyq_entry *e = replyq_tail(&s->replies);
	e->token = tok;
	e->row_pos = row_pos;
	e->max_rows = max_rows;
	prepared_flush_owed(s);
	return true;
}

void prepared_note_request(struct server *s, uint8_t type)
{
	replyq_note_request(&s->replies, type);
}

enum reply_action prepared_on_reply(struct server *s, uint8_t type)
{
	bool lost;
	enum replyq_action a = replyq_on_reply(&s->replies, type, settle_entry, s, &lost);
	if (lost)
		prepared_write_unrecorded(s);    /* before the message, or in place of an Execute's end */
	return a == RQ_SWALLOW ? REPLY_SWALLOW : REPLY_FORWARD;
}

/* replyq_on_reply's outcome for a forwarded entry e that server reply type completes */
static inline enum replyq_outcome completed_by(const struct replyq_entry *e, uint8_t type)
{
	return type == PqMsg_EmptyQueryResponse || type == 's' ||
	       (type == PqMsg_ReadyForQuery && e->failed) ? RQ_FAILED : RQ_COMPLETED;
}

/* prepared_settle_head for a head with a middleware token: its usage record may be lost. */
static __attribute__((noinline)) enum head_settled settle_token_head(struct server *s, uint8_t type)
{
	struct replyq_entry *e = replyq_head(&s->replies);
	enum replyq_outcome o = completed_by(e, type);
	bool execute = e->type == PqMsg_Execute;
	bool recorded = settle_entry(s, e, o);
	replyq_pop(&s->replies);
	if (recorded)
		return HEAD_SETTLED;
	/* replyq_on_reply's rule: the error replaces an Execute's end */
	return execute && (type == PqMsg_CommandComplete || type == PqMsg_EmptyQueryResponse || type == 's')
	       ? HEAD_LOST_SWALLOW : HEAD_LOST;
}

enum head_settled prepared_settle_head(struct server *s, uint8_t type)
{
	struct replyq_entry *e = replyq_head(&s->replies);
	if (e->token)
		return settle_token_head(s, type);
	/* a statement or a client's name: settling them cannot fail */
	settle_entry(s, e, completed_by(e, type));
	replyq_pop(&s->replies);
	return HEAD_SETTLED;
}

static void add_complete(struct iobuf *out, uint8_t type)
{
	uint8_t msg[5] = { type, 0, 0, 0, 4 };
	iobuf_add(out, msg, sizeof(msg));
}

void prepared_flush_owed(struct server *s)
{
	struct replyq_entry *e;
	if (!s->client || s->relay_left > 0)
		return;
	struct iobuf *out = &s->client->io.out;
	while ((e = replyq_head(&s->replies)) != NULL && e->action == RQ_SYNTHESISE) {
		if (e->type == PqMsg_Describe)
			cacheio_write_rowdesc(out, ai_token_cache(e->token));
		else if (e->type == PqMsg_Execute)
			cacheio_write_rows(out, ai_token_cache(e->token), &e->row_pos, e->max_rows);
		else
			add_complete(out, replyq_owed_complete(e->type));
		/* a hit's usage record cannot fail the hit: its loss is logged and counted */
		settle_entry(s, e, RQ_COMPLETED);
		replyq_pop(&s->replies);
	}
}

static void forget_all(struct server *s)
{
	while (s->stmts.n > 0)
		server_forget(s, s->stmts.items[s->stmts.n - 1].stmt);
}

void prepared_server_reset(struct server *s, bool statements_dropped)
{
	s->capture = NULL;
	if (statements_dropped)
		forget_all(s);
	replyq_clear(&s->replies, settle_entry, s);
}

void prepared_server_free(struct server *s)
{
	prepared_server_reset(s, true);
	free(s->stmts.items);
	replyq_free(&s->replies);
}

/* ---- failing a client's message in place ---- */

void prepared_raise_error(struct server *s, const char *sqlstate, const char *message,
                          const char *detail, const char *hint)
{
	char sql[2048];
	if (!refuse_build_raise_sql(sql, sizeof(sql), sqlstate, message, detail, hint))
		refuse_build_raise_sql(sql, sizeof(sql), sqlstate, "statement refused by pgsluice", NULL, NULL);
	struct iobuf *out = &s->io.out;
	struct msgbuf m;
	msg_init(&m);
	msg_begin(&m, PqMsg_Parse);
	msg_add_string(&m, "");
	msg_add_string(&m, sql);
	msg_add_int16(&m, 0);
	msg_end(&m);
	msg_begin(&m, PqMsg_Bind);
	msg_add_string(&m, "");
	msg_add_string(&m, "");
	msg_add_int16(&m, 0);
	msg_add_int16(&m, 0);
	msg_add_int16(&m, 0);
	msg_end(&m);
	msg_begin(&m, PqMsg_Execute);
	msg_add_string(&m, "");
	msg_add_int32(&m, 0);
	msg_end(&m);
	msg_flush_to(&m, out);
	msg_free(&m);
	s->unsynced = true;
	if (s->replies.skipping)
		return;    /* the server skips all of it, as it would have the client's message */
	queue_push(s, PqMsg_Parse, RQ_SWALLOW, NULL);
	queue_push(s, PqMsg_Bind, RQ_SWALLOW, NULL);
	queue_push(s, PqMsg_Execute, RQ_FORWARD, NULL);
}

/* ---- rewriting client messages ---- */

static void note_statement_text(struct client *c, struct server *s, const char *text, size_t len);

static void add_parse(struct iobuf *out, const struct prepared_stmt *st)
{
	struct msgbuf m;
	msg_init(&m);
	msg_begin(&m, PqMsg_Parse);
	msg_add_string(&m, st->server_name);
	msg_add_string(&m, st->query);
	msg_add_int16(&m, (int16_t)st->n_params);
	msg_add_bytes(&m, st->param_types, (size_t)st->n_params * 4);
	msg_end(&m);
	msg_flush_to(&m, out);
	msg_free(&m);
}

static void add_close(struct iobuf *out, const struct prepared_stmt *st)
{
	struct msgbuf m;
	msg_init(&m);
	msg_begin(&m, PqMsg_Close);
	msg_add_byte(&m, 'S');
	msg_add_string(&m, st->server_name);
	msg_end(&m);
	msg_flush_to(&m, out);
	msg_free(&m);
}

/*
 * Make st prepared on s: Close the least recently used statement when
 * max_prepared_statements is reached, then Parse st (replies swallowed).
 * afresh: parse it anew even when s has it (a client's own Parse: a new
 * PostgreSQL connection would plan it now, not before an ALTER); so is a
 * statement whose result type changed since s parsed it (st->gen).
 */
static bool ensure_prepared(struct server *s, struct prepared_stmt *st, bool afresh)
{
	struct server_stmt *ss = server_find(s, st);
	struct iobuf *out = &s->io.out;
	if (ss) {
		ss->used = ++s->stmts.clock;
		if (!afresh && ss->gen == st->gen)
			return true;
		ss->gen = st->gen;
		add_close(out, st);
		add_parse(out, st);
		return queue_push(s, PqMsg_Close, RQ_SWALLOW, NULL) && queue_push(s, PqMsg_Parse, RQ_SWALLOW, st);
	}
	if (st->drops_all) {
		forget_all(s);
		add_parse(out, st);
		return queue_push(s, PqMsg_Parse, RQ_SWALLOW, NULL);
	}
	size_t max = (size_t)s->pool->sl->cfg->max_prepared_statements;
	if (s->stmts.n >= max && s->stmts.n > 0) {
		size_t lru = 0;
		for (size_t i = 1; i < s->stmts.n; i++)
			if (s->stmts.items[i].used < s->stmts.items[lru].used)
				lru = i;
		struct prepared_stmt *victim = s->stmts.items[lru].stmt;
		add_close(out, victim);
		if (!queue_push(s, PqMsg_Close, RQ_SWALLOW, NULL))
			return false;
		server_forget(s, victim);
	}
	if (s->stmts.n == s->stmts.cap) {
		size_t cap = s->stmts.cap ? s->stmts.cap * 2 : 16;
		struct server_stmt *items = realloc(s->stmts.items, cap * sizeof(*items));
		if (!items)
			return false;
		s->stmts.items = items;
		s->stmts.cap = cap;
	}
	add_parse(out, st);
	if (!queue_push(s, PqMsg_Parse, RQ_SWALLOW, st))
		return false;
	st->refcount++;
	s->stmts.items[s->stmts.n++] = (struct server_stmt){ st, ++s->stmts.clock, st->gen };
	return true;
}

/* The request just noted (a Bind or Describe of st) keeps st alive until answered: an 0A000 names it. */
static void hold_stmt(struct server *s, uint8_t type, struct prepared_stmt *st)
{
	struct replyq_entry *e = tail_forwarded(s, type);
	if (s->replies.skipping || !e || e->stmt)
		return;
	e->stmt = st;
	st->refcount++;
}

/* Owe the client the completion of its message of type (Parse, Close) pgsluice answered itself. */
static void owe_complete(struct server *s, uint8_t type)
{
	queue_push(s, type, RQ_SYNTHESISE, NULL);
	prepared_flush_owed(s);
}

static void already_exists(char *msg, size_t size, const char *name)
{
	snprintf(msg, size, "prepared statement \"%s\" already exists", name);
}

/* The statement "DEALLOCATE name" runs on: one pgsluice prepares just before. */
#define DEALLOCATE_TARGET "PGSLUICE_DEALLOCATE"

/*
 * The client's DEALLOCATE of its own statement is run as a DEALLOCATE of a
 * statement pgsluice prepares for it on s: the server's statement stays for
 * the other clients, and the reply (DEALLOCATE, or 25P02 in a failed
 * transaction) and its order are the server's own.
 */
static bool add_deallocate_target(struct server *s)
{
	struct iobuf *out = &s->io.out;
	struct msgbuf m;
	msg_init(&m);
	msg_begin(&m, PqMsg_Close);
	msg_add_byte(&m, 'S');
	msg_add_string(&m, DEALLOCATE_TARGET);
	msg_end(&m);
	msg_begin(&m, PqMsg_Parse);
	msg_add_string(&m, DEALLOCATE_TARGET);
	msg_add_string(&m, "SELECT");
	msg_add_int16(&m, 0);
	msg_end(&m);
	msg_flush_to(&m, out);
	msg_free(&m);
	return queue_push(s, PqMsg_Close, RQ_SWALLOW, NULL) && queue_push(s, PqMsg_Parse, RQ_SWALLOW, NULL);
}

/*
 * Is text DEALLOCATE of a statement of c's that pgsluice runs on s (see
 * add_deallocate_target)? Not in a failed transaction: the server refuses
 * the client's own text there (25P02) and c keeps its statement.
 */
static struct client_stmt *own_deallocate(struct client *c, struct server *s, const char *text, size_t len)
{
	char name[256];
	if (s->replies.skipping || s->tx_status == 'E' ||
	    prepared_parse_deallocate(text, len, name, sizeof(name)) != DEALLOC_NAME)
		return NULL;
	return client_find(c, name);
}

/* Is a Parse of the client's name still unanswered on s? */
static bool parse_in_flight(struct server *s, const char *name)
{
	struct replyq *q = &s->replies;
	for (uint32_t i = 0; i < q->n; i++) {
		const struct replyq_entry *e = replyq_at(q, i);
		if (e->client_name && strcmp(e->client_name, name) == 0)
			return true;
	}
	return false;
}

/* Parse of a named statement: remember it, prepare it on s unless it is. */
static enum client_msg_result rewrite_parse(struct client *c, struct server *s, const uint8_t *body, size_t len)
{
	struct msgreader r;
	mr_init(&r, body, len);
	const char *name = mr_string(&r);
	size_t at = r.pos;
	const char *query = mr_string(&r);
	size_t query_len = r.pos - at - 1;    /* strlen(query), when the reader is not bad */
	uint16_t n_params = (uint16_t)mr_int16(&r);
	const uint8_t *types = mr_bytes(&r, (size_t)n_params * 4);
	if (r.bad)
		return CLIENT_MSG_PASS;    /* malformed: the server judges it */
	if (!*name) {
		struct client_stmt *cs = own_deallocate(c, s, query, query_len);
		if (!cs) {
			note_statement_text(c, s, query, query_len);
			return CLIENT_MSG_PASS;
		}
		client_drop(c, cs);
		if (!add_deallocate_target(s))
			return CLIENT_MSG_FAILED;
		struct msgbuf m;
		msg_init(&m);
		msg_begin(&m, PqMsg_Parse);
		msg_add_string(&m, "");
		msg_add_string(&m, "DEALLOCATE \"" DEALLOCATE_TARGET "\"");
		msg_add_int16(&m, (int16_t)n_params);
		msg_add_bytes(&m, types, (size_t)n_params * 4);
		msg_end(&m);
		msg_flush_to(&m, &s->io.out);
		msg_free(&m);
		prepared_note_request(s, PqMsg_Parse);
		return CLIENT_MSG_DONE;
	}
	if (s->replies.skipping)
		return CLIENT_MSG_DONE;    /* the server would skip it: nothing is defined */
	if (client_find(c, name)) {
		/* Its Parse, in an earlier batch, may still fail and free the name:
		 * its answer decides (in the same batch a failure skips this one anyway). */
		if (!s->unsynced && parse_in_flight(s, name))
			return CLIENT_MSG_WAIT;
		char msg[320];
		already_exists(msg, sizeof(msg), name);
		prepared_raise_error(s, SQLSTATE_DUPLICATE_PSTATEMENT, msg, NULL, NULL);
		return CLIENT_MSG_DONE;
	}
	struct prepared_stmt *st = stmt_acquire(&c->sl->prepared, query, strlen(query), types, n_params);
	if (!st || !client_bind_name(c, name, st)) {
		if (st)
			stmt_release(&c->sl->prepared, st);
		return CLIENT_MSG_FAILED;
	}
	if (st->drops_all) {
		owe_complete(s, PqMsg_Parse);
		return CLIENT_MSG_DONE;
	}
	if (!ensure_prepared(s, st, true))
		return CLIENT_MSG_FAILED;
	/* The injected Parse stands for the client's: its ParseComplete is the client's,
	 * and if it fails, the client's name is free again. */
	struct replyq_entry *e = replyq_tail(&s->replies);
	e->action = RQ_FORWARD;
	e->client_name = strdup(name);
	return e->client_name ? CLIENT_MSG_DONE : CLIENT_MSG_FAILED;
}

/* Describe 'S' or Close 'S' of a named statement. */
static enum client_msg_result rewrite_describe_close(struct client *c, struct server *s, uint8_t type,
                                                     const uint8_t *body, size_t len)
{
	struct msgreader r;
	mr_init(&r, body, len);
	uint8_t what = mr_byte(&r);
	const char *name = mr_string(&r);
	if (r.bad || what != 'S' || !*name)
		return CLIENT_MSG_PASS;
	struct client_stmt *cs = client_find(c, name);
	if (type == PqMsg_Close) {
		/* The server keeps it for other clients; CloseComplete is owed either way. */
		if (cs)
			client_drop(c, cs);
		if (!s->replies.skipping)
			owe_complete(s, PqMsg_Close);
		return CLIENT_MSG_DONE;
	}
	if (!cs)
		return CLIENT_MSG_PASS;    /* the server says "does not exist" */
	if (!s->replies.skipping && !ensure_prepared(s, cs->stmt, cs->fresh))
		return CLIENT_MSG_FAILED;
	cs->fresh = cs->fresh && s->replies.skipping;
	struct msgbuf m;
	msg_init(&m);
	msg_begin(&m, PqMsg_Describe);
	msg_add_byte(&m, 'S');
	msg_add_string(&m, cs->stmt->server_name);
	msg_end(&m);
	msg_flush_to(&m, &s->io.out);
	msg_free(&m);
	prepared_note_request(s, PqMsg_Describe);
	hold_stmt(s, PqMsg_Describe, cs->stmt);
	return CLIENT_MSG_DONE;
}

/* Bind: only the statement name is rewritten; parameters stream unchanged. */
static enum client_msg_result rewrite_bind(struct client *c, struct server *s, struct iobuf *in, uint32_t len)
{
	size_t avail = iobuf_len(in) - PROTO_HEADER_LEN;
	size_t body_len = len - 4;
	size_t look = avail < body_len ? avail : body_len;
	if (look > 4096)
		look = 4096;
	const uint8_t *body = iobuf_data(in) + PROTO_HEADER_LEN;
	const uint8_t *nul1 = memchr(body, 0, look);
	const uint8_t *nul2 = nul1 ? memchr(nul1 + 1, 0, look - (size_t)(nul1 + 1 - body)) : NULL;
	if (!nul2)
		return look < body_len && look < 4096 ? CLIENT_MSG_NEED_MORE : CLIENT_MSG_PASS;
	const char *name = (const char *)nul1 + 1;
	struct client_stmt *cs = *name ? client_find(c, name) : NULL;
	if (!cs)
		return CLIENT_MSG_PASS;
	if (!s->replies.skipping && !ensure_prepared(s, cs->stmt, cs->fresh))
		return CLIENT_MSG_FAILED;
	cs->fresh = cs->fresh && s->replies.skipping;
	size_t portal_len = (size_t)(nul1 - body) + 1;
	size_t old_name_len = strlen(name) + 1;
	size_t new_name_len = strlen(cs->stmt->server_name) + 1;
	/* the length covers the parameters that follow unchanged */
	uint32_t new_len = htonl((uint32_t)(len - old_name_len + new_name_len));
	struct iobuf *out = &s->io.out;
	uint8_t head[PROTO_HEADER_LEN + 128];
	size_t head_len = PROTO_HEADER_LEN + portal_len + new_name_len;
	if (head_len <= sizeof(head)) {
		/* the usual short names: one copy into the output, no message builder */
		head[0] = PqMsg_Bind;
		memcpy(head + 1, &new_len, 4);
		memcpy(head + PROTO_HEADER_LEN, body, portal_len);
		memcpy(head + PROTO_HEADER_LEN + portal_len, cs->stmt->server_name, new_name_len);
		iobuf_add(out, head, head_len);
	} else {
		struct msgbuf m;
		msg_init(&m);
		msg_begin(&m, PqMsg_Bind);
		msg_add_bytes(&m, body, portal_len);
		msg_add_bytes(&m, cs->stmt->server_name, new_name_len);
		msg_end(&m);
		memcpy(m.data + 1, &new_len, 4);
		msg_flush_to(&m, out);
		msg_free(&m);
	}
	iobuf_drain(in, PROTO_HEADER_LEN + portal_len + old_name_len);
	c->relay_left = (uint32_t)(body_len - portal_len - old_name_len);
	prepared_note_request(s, PqMsg_Bind);
	hold_stmt(s, PqMsg_Bind, cs->stmt);
	return CLIENT_MSG_DONE;
}

/* Is text DEALLOCATE ALL or DISCARD ALL (case, blanks and ';' aside)? */
static bool drops_all_statements(const char *text, size_t len)
{
	while (len > 0 && (*text == ' ' || *text == '\n' || *text == '\t' || *text == '\r')) {
		text++;
		len--;
	}
	while (len > 0 && (text[len - 1] == ' ' || text[len - 1] == '\n' || text[len - 1] == '\t' ||
	                   text[len - 1] == '\r' || text[len - 1] == ';' || text[len - 1] == '\0'))
		len--;
	static const char *const forms[] = { "DEALLOCATE ALL", "DEALLOCATE PREPARE ALL", "DISCARD ALL" };
	for (size_t i = 0; i < sizeof(forms) / sizeof(forms[0]); i++)
		if (len == strlen(forms[i]) && strncasecmp(text, forms[i], len) == 0)
			return true;
	return false;
}

/* The server forgets every statement when it runs DEALLOCATE ALL / DISCARD ALL,
 * and the client expects its names gone. */
static void note_statement_text(struct client *c, struct server *s, const char *text, size_t len)
{
	if (len > PREPARED_QUERY_LOOK_MAX || !drops_all_statements(text, len))
		return;
	client_drop_all(c);
	forget_all(s);
}

/* Longest simple Query looked at for DEALLOCATE: the command, a quoted 63-byte name with every quote doubled. */
#define DEALLOCATE_TEXT_MAX 200

/* The simple Query's text when it is short enough to be a DEALLOCATE (whole in the input), else 0. */
static size_t short_query(struct iobuf *in, uint32_t len, char *text, size_t size)
{
	if (len - 4 >= size || iobuf_len(in) < 1 + (size_t)len)
		return 0;
	if (iobuf_copyout(in, PROTO_HEADER_LEN, text, len - 4) != (size_t)(len - 4))
		return 0;
	text[len - 4] = '\0';
	return len - 4;
}

static enum client_msg_result check_query(struct client *c, struct server *s, struct iobuf *in, uint32_t len)
{
	char text[DEALLOCATE_TEXT_MAX + 1];
	if (len - 4 > PREPARED_QUERY_LOOK_MAX)
		return CLIENT_MSG_PASS;    /* no DEALLOCATE ALL / DISCARD ALL */
	size_t n = short_query(in, len, text, sizeof(text));
	if (n == 0)
		return CLIENT_MSG_PASS;
	/* A simple DEALLOCATE name with nothing in the way was answered already
	 * (prepared_intercept_deallocate); one pipelined behind unanswered
	 * queries goes to the server as it is. */
	note_statement_text(c, s, text, n);
	return CLIENT_MSG_PASS;
}

static bool is_blank(char ch)
{
	return ch == ' ' || ch == '\t' || ch == '\n' || ch == '\r' || ch == '\f' || ch == '\v';
}

/* Skip blanks; then, when the keyword kw (upper case) follows as a whole word, skip it too. */
static bool take_keyword(const char **p, const char *end, const char *kw)
{
	while (*p < end && is_blank(**p))
		(*p)++;
	size_t n = strlen(kw);
	if ((size_t)(end - *p) < n || strncasecmp(*p, kw, n) != 0)
		return false;
	const char *after = *p + n;
	if (after < end && (isalnum((unsigned char)*after) || *after == '_' || *after == '$' ||
	                    (unsigned char)*after >= 0x80))
		return false;
	*p = after;
	return true;
}

enum dealloc_kind prepared_parse_deallocate(const char *text, size_t len, char *name, size_t size)
{
	/* every Parse and many Queries pass here: the first letter after the blanks rules most out */
	size_t lead = 0;
	while (lead < len && is_blank(text[lead]))
		lead++;
	if (lead == len || (text[lead] | 0x20) != 'd')
		return DEALLOC_NONE;
	const char *p = text, *end = text + strnlen(text, len);    /* a Query's text ends at its first NUL */
	while (end > p && is_blank(end[-1]))
		end--;
	if (end > p && end[-1] == ';')
		end--;
	if (!take_keyword(&p, end, "DEALLOCATE"))
		return DEALLOC_NONE;
	const char *before_prepare = p;
	if (take_keyword(&p, end, "PREPARE")) {
		const char *rest = p;
		while (rest < end && is_blank(*rest))
			rest++;
		if (rest == end)
			p = before_prepare;    /* DEALLOCATE prepare: the statement named "prepare" */
	}
	const char *before_all = p;
	if (take_keyword(&p, end, "ALL")) {
		while (p < end && is_blank(*p))
			p++;
		return p == end ? DEALLOC_ALL : DEALLOC_NONE;
	}
	p = before_all;
	while (p < end && is_blank(*p))
		p++;
	size_t n = 0;
	if (p < end && *p == '"') {
		/* "quoted": as written, "" for a quote; never empty */
		for (p++;; p++) {
			if (p >= end)
				return DEALLOC_NONE;
			if (*p == '"') {
				if (p + 1 < end && p[1] == '"')
					p++;
				else
					break;
			}
			if (n + 1 >= size)
				return DEALLOC_NONE;
			name[n++] = *p;
		}
		p++;
		if (n == 0)
			return DEALLOC_NONE;
	} else {
		/* unquoted: a letter or _ (or a byte of a multibyte letter), then also digits and $;
		 * ASCII letters fold to lower case */
		if (p >= end || !(isalpha((unsigned char)*p) || *p == '_' || (unsigned char)*p >= 0x80))
			return DEALLOC_NONE;
		for (; p < end && (isalnum((unsigned char)*p) || *p == '_' || *p == '$' || (unsigned char)*p >= 0x80); p++) {
			if (n + 1 >= size)
				return DEALLOC_NONE;
			name[n++] = *p >= 'A' && *p <= 'Z' ? (char)(*p - 'A' + 'a') : *p;
		}
	}
	while (p < end && is_blank(*p))
		p++;
	if (p != end || n >= 64)    /* NAMEDATALEN - 1: a longer name PostgreSQL truncates; leave it to the server */
		return DEALLOC_NONE;
	name[n] = '\0';
	return DEALLOC_NAME;
}

/* prepared_intercept_deallocate for a Query that may be a DEALLOCATE: away
 * from the quick test so that the test needs no stack frame for the text. */
static __attribute__((noinline)) int intercept_deallocate(struct client *c, struct server *s, uint32_t len)
{
	struct iobuf *in = &c->io.in;
	char text[DEALLOCATE_TEXT_MAX + 1], name[256];
	size_t n = short_query(in, len, text, sizeof(text));
	if (n == 0 || prepared_parse_deallocate(text, n, name, sizeof(name)) != DEALLOC_NAME)
		return 1;
	struct client_stmt *cs = client_find(c, name);
	if (!cs)
		return 1;    /* the server says 26000, and fails the transaction as PostgreSQL does */
	if (s && s->pending_ready > 0)
		return -1;   /* earlier queries may still fail the transaction: their answers first */
	if (s && (s->tx_status == 'E' || s->replies.n > 0 || s->relay_left > 0))
		return 1;    /* 25P02 from the server; the statement stays, as on PostgreSQL */
	client_drop(c, cs);
	iobuf_drain(in, 1 + (size_t)len);
	c->sl->stats.query_count++;
	c->pool->stats.query_count++;
	struct msgbuf m;
	msg_init(&m);
	msg_begin(&m, PqMsg_CommandComplete);
	msg_add_string(&m, "DEALLOCATE");
	msg_end(&m);
	msg_add_ready(&m, s ? s->tx_status : 'I');
	msg_flush_to(&m, &c->io.out);
	msg_free(&m);
	return 0;
}

int prepared_intercept_deallocate(struct client *c, uint32_t len)
{
	struct server *s = c->server;
	if (!active(c) || (s && (s->unsynced || s->internal != SV_INTERNAL_NONE)))
		return 1;    /* behind an unfinished batch PostgreSQL would skip or reorder nothing: relay it */
	struct iobuf *in = &c->io.in;
	/* Every simple Query passes here: most are told apart by their first letter. */
	size_t h = len - 4 < 16 ? len - 4 : 16;
	if (iobuf_len(in) < PROTO_HEADER_LEN + h)
		return 1;
	if (!prepared_may_be_deallocate(iobuf_data(in) + PROTO_HEADER_LEN, len - 4))    /* looked at in place */
		return 1;
	return intercept_deallocate(c, s, len);
}

int prepared_answer_unlinked(struct client *c, uint8_t type, uint32_t len)
{
	if (type != PqMsg_Parse || c->server || !active(c) || (c->aic && ai_client_has_statement_tags(c->aic)) ||
	    len > 65536)
		return 1;
	struct iobuf *in = &c->io.in;
	if (iobuf_len(in) < 1 + (size_t)len)
		return -1;
	const uint8_t *msg = iobuf_data(in);
	if (!msg)
		return 1;
	struct msgreader r;
	mr_init(&r, msg + PROTO_HEADER_LEN, len - 4);
	const char *name = mr_string(&r);
	if (r.bad || !*name)
		return 1;    /* the unnamed statement is always the server's */
	const char *query = mr_string(&r);
	int16_t n_params = mr_int16(&r);
	const uint8_t *types = n_params > 0 ? mr_bytes(&r, (size_t)n_params * 4) : NULL;
	if (r.bad || n_params < 0 || strstr(query, "/*"))
		return 1;    /* a tagged text: the middleware looks at it with a server */
	struct msgbuf m;
	msg_init(&m);
	if (client_find(c, name)) {
		char text[320];
		already_exists(text, sizeof(text), name);
		msg_add_error(&m, PqMsg_ErrorResponse, "ERROR", SQLSTATE_DUPLICATE_PSTATEMENT, NULL, NULL, "%s", text);
		c->skipping_to_sync = true;    /* PostgreSQL skips the rest of the batch */
	} else {
		struct prepared_stmt *st = stmt_find(&c->sl->prepared, query, strlen(query), types ? types : (const uint8_t *)"",
		                                     (uint16_t)n_params);
		if (!st || !st->parsed || st->drops_all) {
			msg_free(&m);
			return 1;
		}
		st->refcount++;
		if (!client_bind_name(c, name, st)) {
			stmt_release(&c->sl->prepared, st);
			msg_free(&m);
			client_fatal(c, SQLSTATE_INTERNAL_ERROR, NULL, NULL, "out of memory");
			return 0;
		}
		client_find(c, name)->fresh = true;
		msg_begin(&m, PqMsg_ParseComplete);
		msg_end(&m);
		c->local_batch_open = true;    /* its Sync is answered here too, unless a server is taken first */
	}
	c->pool->stats.parse_count++;
	iobuf_drain(in, 1 + (size_t)len);
	msg_flush_to(&m, &c->io.out);
	msg_free(&m);
	return 0;
}

/* The oldest request s has not answered, for a const s. */
static const struct replyq_entry *head_of(const struct server *s)
{
	return s->replies.n ? &s->replies.items[s->replies.head] : NULL;
}

bool prepared_wants_reply(struct server *s, uint8_t type)
{
	const struct replyq_entry *e = head_of(s);
	return type == PqMsg_ErrorResponse && e && e->stmt && e->action == RQ_FORWARD &&
	       (e->type == PqMsg_Bind || e->type == PqMsg_Describe);
}

void prepared_see_reply(struct server *s, uint8_t type, const uint8_t *body, size_t len)
{
	struct pg_error f;
	if (!prepared_wants_reply(s, type) || !proto_parse_error(body, len, &f) ||
	    strcmp(f.sqlstate, SQLSTATE_FEATURE_NOT_SUPPORTED) != 0)
		return;
	/* cached plan must not change result type: every server's copy predates a
	 * schema change; each is parsed anew at its next use */
	struct prepared_stmt *st = head_of(s)->stmt;
	st->gen++;
	log_info("S-%llu: statement %s changed its result type; it is prepared again at its next use",
	         (unsigned long long)s->id, st->server_name);
}

enum client_msg_result prepared_client_message(struct client *c, struct server *s, uint8_t type, uint32_t len)
{
	struct iobuf *in = &c->io.in;
	if (type == PqMsg_Query)
		return check_query(c, s, in, len);
	if (type == PqMsg_Bind)
		return rewrite_bind(c, s, in, len);
	if (type != PqMsg_Parse && type != PqMsg_Describe && type != PqMsg_Close)
		return CLIENT_MSG_PASS;
	if (iobuf_len(in) < 1 + (size_t)len)
		return CLIENT_MSG_NEED_MORE;
	const uint8_t *msg = iobuf_data(in);
	if (!msg)
		return CLIENT_MSG_FAILED;
	enum client_msg_result res = type == PqMsg_Parse
		? rewrite_parse(c, s, msg + PROTO_HEADER_LEN, len - 4)
		: rewrite_describe_close(c, s, type, msg + PROTO_HEADER_LEN, len - 4);
	if (res == CLIENT_MSG_DONE)
		iobuf_drain(in, 1 + (size_t)len);
	return res;
}
