/* SPDX-License-Identifier: PostgreSQL */
/* decide.c - see decide.h. Sees a struct stmt and a client's ai_client; never a socket or buffer. */
#include "ai/decide.h"

#include <stddef.h>
#include <stdlib.h>
#include <string.h>

#include "ai/cache.h"
#include "ai/cache_proto.h"
#include "ai/client_state_impl.h"
#include "ai/context.h"
#include "ai/middleware.h"
#include "ai/usage.h"
#include "proto.h"
#include "sluice.h"
#include "stmt.h"
#include "util.h"

/*
 * middleware_admit for a statement with tags (NULL: untagged). One that is
 * not attributed (no ai_ tag, no sluice.user) passes there at once; it is
 * told here without the call, as most statements are. A cache hit is
 * admitted (refused over a limit as any statement) without a record or a
 * reservation: it spends nothing, and its record is the hit's (hit true).
 */
static inline bool admit(const struct ai_context *ctx, const struct ai_tags *tags, struct pg_error *refusal,
                         struct usage_pending **usage, bool hit)
{
	*usage = NULL;
	if (!(tags && tags->has_ai_key) && !ctx->session->user[0])
		return true;
	return middleware_admit(ctx, tags, refusal, hit ? NULL : usage);
}

/* How long an answer of a statement with tags lives (ai_ttl, else cache_default_ttl), microseconds. */
static int64_t answer_ttl(const struct ai_context *ctx, const struct ai_tags *tags)
{
	return tags->ttl_s > 0 ? (int64_t)tags->ttl_s * USEC_PER_SEC : (int64_t)ctx->sl->cfg->cache_default_ttl;
}

/*
 * A lookup under key k goes to PostgreSQL (f, e: what cache_lookup found;
 * e's reference is dropped). Returns the fill its answer is captured into,
 * or NULL: a READY answer is filled again only when it lacks the
 * RowDescription the client asks for (needs_rowdesc); nothing read inside a
 * transaction block is kept (it may show the block's uncommitted writes);
 * after a failed fill the new one is unpublished, so others do not wait for it.
 */
static struct cache_entry *miss(const struct ai_context *ctx, const struct msgbuf *k, const struct ai_tags *tags,
                                enum cache_find f, struct cache_entry *e, bool needs_rowdesc, bool bypass)
{
	struct cache *cache = ctx->sl->cache;
	bool refill = (f == CACHE_FOUND_MISS || (f == CACHE_FOUND_READY && needs_rowdesc && !e->rowdesc)) &&
	              !ctx->in_block;
	cache_entry_release(cache, f == CACHE_FOUND_READY ? e : NULL);
	cache_note_miss(cache);
	if (!refill)
		return NULL;
	return cache_fill_begin(cache, k->data, k->len, answer_ttl(ctx, tags),
	                        tags->cache == AI_CACHE_LOOKUP && !bypass);
}

/* Look key k up for a statement with tags (ai_cache='refresh' never finds). */
static enum cache_find lookup(const struct ai_context *ctx, const struct msgbuf *k, const struct ai_tags *tags,
                              struct cache_entry **e)
{
	*e = NULL;
	return tags->cache == AI_CACHE_LOOKUP ? cache_lookup(ctx->sl->cache, k->data, k->len, now_usec(), e)
	                                      : CACHE_FOUND_MISS;
}

/* The record of a hit (cached = true), charged as admission decided; the admitted one is dropped. */
static struct usage_pending *hit_record(const struct ai_context *ctx, const struct ai_tags *tags,
                                        struct usage_pending *admitted)
{
	usage_discard(admitted);
	return middleware_hit_usage(ctx, tags);
}

/* A simple Query: look it up when tagged ai_cache, then admit it. */
static void decide_query(const struct ai_context *ctx, struct ai_client *a, const struct stmt *st,
                         struct ai_decision *d)
{
	const struct ai_tags *tags = st->tags;
	struct cache_entry *hit = NULL;
	if (a && tags && tags->cache != AI_CACHE_NONE && ctx->cache_on &&
	    (int64_t)st->text_len <= ctx->sl->cfg->cache_max_entry_size) {
		bool bypass = a->cache_bypass;
		struct msgbuf k;
		msg_init(&k);
		if (cache_key_query_text(&k, &ctx->key, st->text, st->text_len, tags)) {
			struct cache_entry *e;
			enum cache_find f = lookup(ctx, &k, tags, &e);
			if (f == CACHE_FOUND_FILLING && ctx->may_wait && !bypass && ai_client_wait(a, e)) {
				msg_free(&k);
				d->verdict = AI_WAIT;
				return;
			}
			a->cache_bypass = false;
			if (f == CACHE_FOUND_READY && e->rowdesc && ctx->may_answer)
				hit = e;
			else
				d->capture = miss(ctx, &k, tags, f, e, true, bypass);
		}
		msg_free(&k);
	}
	if (!admit(ctx, tags, &d->refusal, &d->usage, hit != NULL)) {
		cache_entry_release(ctx->sl->cache, hit);
		ai_fill_abandon(ctx->sl->cache, &d->capture);
		d->verdict = AI_REFUSE;
		return;
	}
	if (hit) {
		cache_note_hit(ctx->sl->cache);
		d->usage = hit_record(ctx, tags, d->usage);
		d->answer = hit;
		d->verdict = AI_ANSWER;
	}
}

/*
 * A Bind (params[0..params_len)) of lookup statement cs was a hit of e, or
 * goes to a server with fill: keep the statement's description in the
 * cache with its answers, so that a later Parse or Describe of the
 * statement needs no server (cache_proto.h, cache_key_statement).
 */
static void statement_seen(const struct ai_context *ctx, const struct stmt *st, const struct cache_entry *e,
                           struct cache_entry *fill)
{
	struct msgbuf sk;
	msg_init(&sk);
	if (cache_key_statement(&sk, &ctx->key, st->cstmt)) {
		if (fill)
			cache_fill_statement(fill, &sk, st->cstmt, st->params, st->params_len);
		else if (e->rowdesc)
			cache_note_statement(ctx->sl->cache, &sk, st->cstmt, st->params, st->params_len, e,
			                     answer_ttl(ctx, st->tags));
	}
	msg_free(&sk);
}

/*
 * A Bind in a batch that may be answered without a server, planned before
 * any of it is answered: only looked up (no fill, nothing counted).
 */
static void plan_bind(const struct ai_context *ctx, const struct stmt *st, struct ai_decision *d)
{
	struct msgbuf k;
	msg_init(&k);
	struct cache_entry *e = NULL;
	enum cache_find f = cache_key_bind(&k, &ctx->key, st->cstmt, st->params, st->params_len) ?
	                    lookup(ctx, &k, st->tags, &e) : CACHE_FOUND_MISS;
	msg_free(&k);
	if (f == CACHE_FOUND_READY) {
		if (!st->described)
			statement_seen(ctx, st, e, NULL);
		d->answer = e;
		d->verdict = AI_ANSWER;
	} else if (f == CACHE_FOUND_FILLING) {
		d->answer = e;    /* no reference: the core waits on it (ai_client_wait) */
		d->verdict = AI_WAIT;
	}
}

/* A Bind of the unnamed portal to a lookup statement: bind it to a fresh answer, or capture the server's. */
static void decide_bind(const struct ai_context *ctx, struct ai_client *a, const struct stmt *st,
                        struct ai_decision *d)
{
	if (st->ahead) {
		plan_bind(ctx, st, d);
		return;
	}
	if (!a || !ctx->cache_on || (int64_t)st->params_len + 4 > ctx->sl->cfg->cache_max_entry_size)
		return;    /* a key larger than any answer kept: not worth copying the message */
	struct msgbuf k;
	msg_init(&k);
	if (!cache_key_bind(&k, &ctx->key, st->cstmt, st->params, st->params_len)) {
		msg_free(&k);
		return;
	}
	bool bypass = a->cache_bypass;
	a->cache_bypass = false;
	struct cache_entry *e;
	enum cache_find f = lookup(ctx, &k, st->tags, &e);
	bool describes = f == CACHE_FOUND_READY && st->describe_follows;
	if (f == CACHE_FOUND_READY && ctx->may_answer && (e->rowdesc || !describes)) {
		msg_free(&k);
		statement_seen(ctx, st, e, NULL);
		a->cached_portal = e;
		a->cached_portal_row = 0;
		d->verdict = AI_ANSWER;
		return;
	}
	a->portal_fill = miss(ctx, &k, st->tags, f, e, describes, bypass);
	msg_free(&k);
	if (a->portal_fill)
		statement_seen(ctx, st, NULL, a->portal_fill);
}

/* Rows an Execute with max_rows takes from a hit with n rows, from row pos on. */
static uint32_t rows_taken(uint32_t n, uint32_t pos, int32_t max_rows)
{
	uint32_t left = pos < n ? n - pos : 0;
	return max_rows > 0 && (uint32_t)max_rows < left ? (uint32_t)max_rows : left;
}

/* An Execute: admission with its portal's tags; the unnamed portal's hit or fill. */
static void decide_execute(const struct ai_context *ctx, struct ai_client *a, const struct stmt *st,
                           struct ai_decision *d)
{
	if (st->ahead) {
		if (!admit(ctx, st->tags, &d->refusal, &d->usage, false)) {
			d->verdict = AI_REFUSE;
			return;
		}
		if (!a) {
			usage_discard(d->usage);
			d->usage = NULL;
			return;    /* out of memory: the Execute is admitted again when it comes */
		}
		usage_discard(a->batch_usage);
		a->batch_usage = d->usage;
		a->batch_admitted = true;
		d->usage = NULL;
		return;
	}
	if (!a)
		return;
	if (!ai_take_ahead(a, &d->usage)) {
		if (!st->tags && !ctx->session->user[0])
			return;    /* a portal of an unattributed statement */
		/* the unnamed portal bound to a hit is answered from it */
		if (!admit(ctx, st->tags, &d->refusal, &d->usage, !st->portal[0] && a->cached_portal)) {
			d->verdict = AI_REFUSE;
			return;
		}
	}
	if (st->portal[0])
		return;    /* the completion cache serves the unnamed portal only */
	if (a->portal_fill) {
		if (st->max_rows != 0)
			cache_fill_fail(a->portal_fill);    /* a part of the answer is no answer */
		d->capture = a->portal_fill;            /* the portal's reference rides on the Execute */
		a->portal_fill = NULL;
	}
	struct cache_entry *e = a->cached_portal;
	if (!e)
		return;
	d->from_row = a->cached_portal_row;
	d->rows = rows_taken(e->n_rows, d->from_row, st->max_rows);
	a->cached_portal_row += d->rows;
	cache_note_hit(ctx->sl->cache);
	cache_entry_hold(e);
	d->answer = e;
	d->usage = hit_record(ctx, st->tags, d->usage);
	d->verdict = AI_ANSWER;
}

/* Refuse the statement with ERROR sqlstate, message and hint (NULL: none). */
static void refuse(struct ai_decision *d, const char *sqlstate, const char *message, const char *hint)
{
	refusal_start(&d->refusal, sqlstate);
	str_copy(d->refusal.message, message, sizeof(d->refusal.message));
	if (hint)
		str_copy(d->refusal.hint, hint, sizeof(d->refusal.hint));
	d->verdict = AI_REFUSE;
}

/* Out of memory deciding: the statement fails with 53200 in place, nothing kept. */
static void refuse_oom(struct ai_decision *d)
{
	refuse(d, SQLSTATE_OUT_OF_MEMORY, "out of memory", NULL);
}

static struct cache_entry *statement_desc(const struct ai_context *ctx, const struct cache_stmt *cs);

/*
 * A Parse in a batch planned without a server: a lookup statement's key
 * part (the caller's) and the description the cache keeps of it (answer,
 * NULL when none).
 */
static void plan_parse(const struct ai_context *ctx, const struct stmt *st, struct ai_decision *d)
{
	const struct ai_tags *t = st->tags;
	if (!t || t->cache != AI_CACHE_LOOKUP || !ctx->cache_on)
		return;
	d->cstmt = cache_stmt_new(st->text, st->text_len, t, st->types, st->n_types);
	if (!d->cstmt)
		return;
	d->answer = statement_desc(ctx, d->cstmt);
	d->verdict = AI_ANSWER;
}

/* A Parse of a tagged statement (or one that was): its tags kept now, or on the Parse in flight. */
static void decide_parse(const struct ai_context *ctx, struct ai_client *a, const struct stmt *st,
                         struct ai_decision *d)
{
	const struct ai_tags *k = st->tags;
	if (st->ahead) {
		plan_parse(ctx, st, d);
		return;
	}
	if (!a) {
		if (k)
			refuse_oom(d);
		return;
	}
	struct cache_stmt *cs = k && k->cache != AI_CACHE_NONE && ctx->cache_on ?
	                        cache_stmt_new(st->text, st->text_len, k, st->types, st->n_types) : NULL;
	if (!st->deferred) {
		if (!ai_statement_keep(a, st->name, k, cs))
			refuse_oom(d);
		return;
	}
	if (!k && !ai_statement_tags(a, st->name, NULL)) {
		free(cs);
		return;    /* untagged then and now */
	}
	size_t name_len = strlen(st->name);
	struct stmt_tags *p = malloc(sizeof(*p) + name_len + 1);    /* its name after it: one allocation */
	if (!p) {
		free(cs);
		refuse_oom(d);
		return;
	}
	p->name = memcpy(p + 1, st->name, name_len + 1);
	p->tags = ai_tags_ref(k);
	p->cstmt = cs;
	d->parsed = p;
}

/* The description (parameter types, RowDescription) the cache keeps of lookup statement cs, a reference; NULL: none. */
static struct cache_entry *statement_desc(const struct ai_context *ctx, const struct cache_stmt *cs)
{
	struct msgbuf sk;
	struct cache_entry *e = NULL;
	msg_init(&sk);
	if (!cache_key_statement(&sk, &ctx->key, cs) ||
	    cache_lookup(ctx->sl->cache, sk.data, sk.len, now_usec(), &e) != CACHE_FOUND_READY)
		e = NULL;
	msg_free(&sk);
	return e;
}

/* A Describe of a lookup statement: capture PostgreSQL's description when the cache lacks it. */
static void decide_describe_statement(const struct ai_context *ctx, const struct stmt *st, struct ai_decision *d)
{
	if (!ctx->cache_on || !st->cstmt || st->tags->cache != AI_CACHE_LOOKUP)
		return;
	struct cache_entry *e = statement_desc(ctx, st->cstmt);
	if (st->ahead) {
		d->answer = e;    /* planned without a server: the description itself */
		d->verdict = e ? AI_ANSWER : AI_FORWARD;
		return;
	}
	bool known = e && e->rows_len > 0;
	cache_entry_release(ctx->sl->cache, e);
	if (known)
		return;
	struct msgbuf sk;
	msg_init(&sk);
	if (cache_key_statement(&sk, &ctx->key, st->cstmt))
		d->capture = cache_describe_begin(ctx->sl->cache, &sk, answer_ttl(ctx, st->tags));
	msg_free(&sk);
}

/* A Describe or Close of the unnamed portal, bound to a hit (answered) or a fill (captured). */
static void decide_portal(const struct ai_context *ctx, struct ai_client *a, const struct stmt *st,
                          struct ai_decision *d)
{
	if (!a)
		return;
	if (st->kind == STMT_CLOSE_PORTAL) {
		bool hit = a->cached_portal != NULL;
		ai_portal_forget(a, ctx->sl->cache);
		if (hit)
			d->verdict = AI_ANSWER;    /* CloseComplete, in order */
		return;
	}
	if (a->portal_fill) {
		cache_fill_hold(a->portal_fill);
		d->capture = a->portal_fill;    /* its RowDescription is captured */
		return;
	}
	if (!a->cached_portal)
		return;
	if (!a->cached_portal->rowdesc) {
		/* Defensive: a Bind binds such an answer only when the batch is
		 * buffered up to its Sync without a Describe. */
		refuse(d, SQLSTATE_FEATURE_NOT_SUPPORTED, "cannot describe a portal answered from the completion cache",
		       "Describe the portal before its Execute, in the same batch.");
		return;
	}
	cache_entry_hold(a->cached_portal);
	d->answer = a->cached_portal;
	d->verdict = AI_ANSWER;
}

void ai_decide(const struct ai_context *ctx, struct ai_client *a, const struct stmt *st, struct ai_decision *d)
{
	d->verdict = AI_FORWARD;
	d->usage = NULL;
	d->capture = d->answer = NULL;
	d->from_row = d->rows = 0;
	d->parsed = NULL;
	d->cstmt = NULL;
	switch (st->kind) {
	case STMT_QUERY:
		decide_query(ctx, a, st, d);
		break;
	case STMT_PARSE:
		decide_parse(ctx, a, st, d);
		break;
	case STMT_DESCRIBE_STATEMENT:
		decide_describe_statement(ctx, st, d);
		break;
	case STMT_DESCRIBE_PORTAL:
	case STMT_CLOSE_PORTAL:
		decide_portal(ctx, a, st, d);
		break;
	case STMT_BIND:
		decide_bind(ctx, a, st, d);
		break;
	case STMT_EXECUTE:
		decide_execute(ctx, a, st, d);
		break;
	}
}

bool ai_answered(const struct ai_context *ctx, struct ai_decision *d)
{
	bool journaled = usage_commit(ctx->sl, d->usage);
	d->usage = NULL;
	cache_entry_release(ctx->sl->cache, d->answer);
	d->answer = NULL;
	return journaled;
}

void ai_decision_drop(const struct ai_context *ctx, struct ai_decision *d)
{
	ai_stmt_tags_free(d->parsed);
	d->parsed = NULL;
	free(d->cstmt);
	d->cstmt = NULL;
	usage_discard(d->usage);
	d->usage = NULL;
	ai_fill_abandon(ctx->sl->cache, &d->capture);
	cache_entry_release(ctx->sl->cache, d->answer);
	d->answer = NULL;
}
