/* SPDX-License-Identifier: PostgreSQL */
/* client_state.c - see client_state.h. A client's middleware state; no socket, buffer or core struct. */
#include "ai/client_state_impl.h"

#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "ai/cache.h"
#include "ai/cache_proto.h"
#include "ai/decide.h"
#include "ai/tags.h"
#include "ai/usage.h"
#include "util.h"

/* The fill a waited for ended: remember whether it stored an answer, and let the core resume the client. */
static void cache_woken(struct cache_waiter *w, bool filled)
{
	struct ai_client *a = (struct ai_client *)((char *)w - offsetof(struct ai_client, cache_waiter));
	a->cache_bypass = !filled;
	a->woken(a->woken_arg);
}

struct ai_client *ai_client_new(void (*woken)(void *arg), void *arg)
{
	struct ai_client *a = calloc(1, sizeof(struct ai_client));
	if (a && woken) {
		a->woken = woken;
		a->woken_arg = arg;
		a->cache_waiter.wake = cache_woken;
	}
	return a;
}

/*
 * Freed kept tags waiting for reuse: a tagged extended statement keeps tags
 * per Parse and drops them a transaction later, and a malloc and free of
 * ~600 bytes cost ~130 instructions a statement (callgrind). Only the event
 * loop's thread keeps tags, so one list for the process; a few entries
 * cover the statements in flight of a pipelining client.
 */
#define KEPT_TAGS_SPARE 8
static struct kept_tags *kept_spare[KEPT_TAGS_SPARE];
static unsigned n_kept_spare;

/* Kept tags (one reference) whose fields the caller fills, or NULL when out of memory. */
struct ai_tags *ai_tags_new(void)
{
	struct kept_tags *k = n_kept_spare > 0 ? kept_spare[--n_kept_spare] : malloc(sizeof(*k));
	if (!k)
		return NULL;
	k->refs = 1;
	return &k->tags;
}

/* A kept copy of t (one reference), or NULL when out of memory. */
struct ai_tags *ai_tags_keep(const struct ai_tags *t)
{
	struct ai_tags *k = ai_tags_new();
	if (k)
		*k = *t;
	return k;
}

void ai_tags_release(struct kept_tags *k)
{
	if (n_kept_spare < KEPT_TAGS_SPARE)
		kept_spare[n_kept_spare++] = k;
	else
		free(k);
}

/*
 * Remember the tags of a Parse (unnamed statement or a named one: kept tags,
 * tags_keep, of which the statement takes a reference; NULL: untagged) and,
 * for a cache lookup, its key part cstmt (taken over, may be NULL). False: OOM.
 */
bool ai_statement_keep(struct ai_client *a, const char *name, const struct ai_tags *tags, struct cache_stmt *cstmt)
{
	if (!*name) {
		ai_tags_unref(a->unnamed_tags);
		free(a->unnamed_cstmt);
		a->unnamed_tags = ai_tags_ref(tags);
		a->unnamed_cstmt = tags ? cstmt : NULL;
		if (!tags)
			free(cstmt);
		return true;
	}
	for (size_t i = 0; i < a->n_tagged; i++)
		if (strcmp(a->tagged[i].name, name) == 0) {
			ai_tags_unref(a->tagged[i].tags);
			free(a->tagged[i].cstmt);
			a->tagged[i].tags = ai_tags_ref(tags);
			a->tagged[i].cstmt = tags ? cstmt : NULL;
			if (!tags)
				free(cstmt);
			return true;
		}
	if (!tags) {
		free(cstmt);
		return true;
	}
	struct tagged_stmt *grown = realloc(a->tagged, (a->n_tagged + 1) * sizeof(*grown));
	if (!grown) {
		free(cstmt);
		return false;
	}
	a->tagged = grown;
	a->tagged[a->n_tagged].name = strdup(name);
	if (!a->tagged[a->n_tagged].name) {
		free(cstmt);
		return false;
	}
	a->tagged[a->n_tagged].tags = ai_tags_ref(tags);
	a->tagged[a->n_tagged++].cstmt = cstmt;
	return true;
}

/* The tags of statement name (and its cache key part, when cstmt is not NULL). */
const struct ai_tags *ai_statement_tags(const struct ai_client *a, const char *name,
                                        const struct cache_stmt **cstmt)
{
	if (cstmt)
		*cstmt = NULL;
	if (!a)
		return NULL;
	if (!*name) {
		if (cstmt)
			*cstmt = a->unnamed_cstmt;
		return a->unnamed_tags;
	}
	for (size_t i = 0; i < a->n_tagged; i++)
		if (strcmp(a->tagged[i].name, name) == 0) {
			if (cstmt)
				*cstmt = a->tagged[i].cstmt;
			return a->tagged[i].tags;
		}
	return NULL;
}

/*
 * Remember (tags not NULL) or forget (NULL) the tags of named portal name.
 * Bounded: a client holds at most MAX_TRACKED_PORTALS at once (PostgreSQL
 * drops them at the end of the transaction), the oldest goes first.
 */
#define MAX_TRACKED_PORTALS 64
void ai_portal_keep(struct ai_client *a, const char *name, const struct ai_tags *tags)
{
	for (size_t i = 0; i < a->n_portals; i++)
		if (strcmp(a->portals[i].name, name) == 0) {
			free(a->portals[i].name);
			ai_tags_unref(a->portals[i].tags);
			a->portals[i] = a->portals[--a->n_portals];
			break;
		}
	if (!tags)
		return;
	if (a->n_portals == MAX_TRACKED_PORTALS) {
		free(a->portals[0].name);
		ai_tags_unref(a->portals[0].tags);
		a->portals[0] = a->portals[--a->n_portals];
	}
	if (!a->portals && !(a->portals = calloc(MAX_TRACKED_PORTALS, sizeof(*a->portals))))
		return;
	struct tagged_stmt *p = &a->portals[a->n_portals];
	p->name = strdup(name);
	p->tags = ai_tags_ref(tags);
	p->cstmt = NULL;
	if (p->name) {
		a->n_portals++;
	} else {
		ai_tags_unref(p->tags);
	}
}

const struct ai_tags *ai_portal_tags(const struct ai_client *a, const char *name)
{
	for (size_t i = 0; i < a->n_portals; i++)
		if (strcmp(a->portals[i].name, name) == 0)
			return a->portals[i].tags;
	return NULL;
}

void ai_portals_end(struct ai_client *a)
{
	while (a->n_portals > 0) {
		a->n_portals--;
		free(a->portals[a->n_portals].name);
		ai_tags_unref(a->portals[a->n_portals].tags);
	}
}


void ai_fill_abandon(struct cache *cache, struct cache_entry **fill)
{
	if (!*fill)
		return;
	cache_fill_fail(*fill);
	cache_fill_drop(cache, *fill, now_usec());
	*fill = NULL;
}

void ai_portal_forget(struct ai_client *a, struct cache *cache)
{
	cache_entry_release(cache, a->cached_portal);
	a->cached_portal = NULL;
	a->cached_portal_row = 0;
	ai_fill_abandon(cache, &a->portal_fill);
}

void ai_stmt_tags_free(struct stmt_tags *st)
{
	if (!st)
		return;
	free(st->cstmt);
	ai_tags_unref(st->tags);
	free(st);    /* and its name, stored after it */
}

void ai_batch_end(struct ai_client *a)
{
	if (!a || !(a->batch_admitted || a->batch_usage || a->batch_parse_tags || a->batch_parse_known))
		return;
	a->batch_admitted = false;
	usage_discard(a->batch_usage);
	a->batch_usage = NULL;
	ai_tags_unref(a->batch_parse_tags);
	a->batch_parse_tags = NULL;
	a->batch_parse_known = false;
}

void ai_client_free(struct ai_client *a, struct cache *cache)
{
	if (!a)
		return;
	cache_unwait(&a->cache_waiter);
	ai_portal_forget(a, cache);
	ai_fill_abandon(cache, &a->pending_fill);
	ai_stmt_tags_free(a->pending_parse);
	usage_discard(a->pending_usage);
	ai_batch_end(a);
	ai_tags_unref(a->unnamed_tags);
	free(a->unnamed_cstmt);
	ai_tags_unref(a->portal_tags);
	cache_key_memo_free(a->key_memo);
	for (size_t i = 0; i < a->n_tagged; i++) {
		free(a->tagged[i].name);
		ai_tags_unref(a->tagged[i].tags);
		free(a->tagged[i].cstmt);
	}
	free(a->tagged);
	ai_portals_end(a);
	free(a->portals);
	free(a);
}

bool ai_client_wait(struct ai_client *a, struct cache_entry *e)
{
	if (a->cache_waiter.on)
		return true;     /* waiting already; more input arrived meanwhile */
	if (!a->cache_waiter.wake)
		return false;
	cache_wait(e, &a->cache_waiter);
	return true;
}

void ai_client_carry(struct ai_client *a, struct cache *cache, struct ai_decision *d)
{
	usage_discard(a->pending_usage);
	a->pending_usage = d->usage;
	d->usage = NULL;
	if (d->capture) {
		ai_fill_abandon(cache, &a->pending_fill);
		a->pending_fill = d->capture;
		d->capture = NULL;
	}
	if (d->parsed) {
		ai_stmt_tags_free(a->pending_parse);
		a->pending_parse = d->parsed;
		d->parsed = NULL;
	}
}

void ai_client_take(struct ai_client *a, struct usage_pending **usage, struct cache_entry **fill,
                    struct stmt_tags **parsed)
{
	*usage = a->pending_usage;
	*fill = a->pending_fill;
	*parsed = a->pending_parse;
	a->pending_usage = NULL;
	a->pending_fill = NULL;
	a->pending_parse = NULL;
}

bool ai_client_has_statement_tags(const struct ai_client *a)
{
	return a && (a->n_tagged || a->unnamed_tags);
}

const struct ai_tags *ai_client_unnamed_statement(const struct ai_client *a, const struct cache_stmt **cstmt)
{
	*cstmt = a ? a->unnamed_cstmt : NULL;
	return a ? a->unnamed_tags : NULL;
}

bool ai_client_unnamed_tagged(const struct ai_client *a)
{
	return a && (a->unnamed_tags || a->unnamed_cstmt);
}

bool ai_take_ahead(struct ai_client *a, struct usage_pending **usage)
{
	if (!a || !a->batch_admitted)
		return false;
	a->batch_admitted = false;
	usage_discard(*usage);
	*usage = a->batch_usage;
	a->batch_usage = NULL;
	return true;
}

bool ai_client_take_ahead(struct ai_client *a)
{
	return ai_take_ahead(a, &a->pending_usage);
}

bool ai_client_batch_admitted(const struct ai_client *a)
{
	return a && a->batch_admitted;
}

void ai_client_hand_batch_parse(struct ai_client *a, struct ai_tags *tags, bool known, uint32_t len)
{
	ai_tags_unref(a->batch_parse_tags);
	a->batch_parse_tags = tags;
	a->batch_parse_known = known;
	a->batch_parse_len = len;
}

bool ai_client_take_batch_parse(struct ai_client *a, uint32_t len, struct ai_tags **tags)
{
	*tags = NULL;
	if (!a || !a->batch_parse_known)
		return false;
	bool known = a->batch_parse_len == len;
	a->batch_parse_known = false;
	if (known)
		*tags = a->batch_parse_tags;
	else
		ai_tags_unref(a->batch_parse_tags);
	a->batch_parse_tags = NULL;
	return known;
}

bool ai_client_carries(const struct ai_client *a)
{
	return a && (a->pending_usage || a->pending_fill || a->pending_parse);
}

struct cache_entry *ai_client_take_fill(struct ai_client *a)
{
	if (!a)
		return NULL;
	struct cache_entry *fill = a->pending_fill;
	a->pending_fill = NULL;
	return fill;
}

const struct ai_session *ai_client_session(const struct ai_client *a)
{
	static const struct ai_session none;
	return a ? &a->session : &none;
}

void ai_client_set_session(struct ai_client *a, const struct ai_session *s)
{
	a->session = *s;
}

struct cache_key_memo **ai_client_key_memo(struct ai_client *a)
{
	return a ? &a->key_memo : NULL;
}

const struct ai_tags *ai_client_portal_tags(const struct ai_client *a)
{
	return a ? a->portal_tags : NULL;
}

void ai_client_set_portal_tags(struct ai_client *a, struct ai_tags *tags)
{
	ai_tags_unref(a->portal_tags);
	a->portal_tags = tags;
}

struct cache_entry *ai_client_cached_portal(const struct ai_client *a)
{
	return a ? a->cached_portal : NULL;
}

void ai_client_set_cached_portal(struct ai_client *a, struct cache_entry *hit)
{
	a->cached_portal = hit;
}

bool ai_client_portal_cached(const struct ai_client *a)
{
	return a && (a->cached_portal || a->portal_fill);
}

bool ai_client_sees_bind(const struct ai_client *a)
{
	return a && (a->n_tagged || a->unnamed_tags || a->portal_tags || a->parses_in_flight || a->n_portals);
}

bool ai_client_sees_close(const struct ai_client *a)
{
	return a && (a->n_tagged || a->unnamed_tags || a->n_portals);
}

bool ai_client_sees_describe(const struct ai_client *a)
{
	return a && (a->n_tagged || a->unnamed_tags || a->parses_in_flight);
}

bool ai_client_sees_execute(const struct ai_client *a)
{
	return a && (a->portal_tags || a->session.user[0] || a->n_portals || a->batch_admitted);
}

bool ai_client_batch_ready(const struct ai_client *a)
{
	return !a || (!a->cached_portal && !a->portal_fill && !ai_client_carries(a));
}

void ai_client_parse_sent(struct ai_client *a)
{
	a->parses_in_flight++;
}

bool ai_client_parsing(const struct ai_client *a)
{
	return a && a->parses_in_flight > 0;
}

void ai_client_parse_done(struct ai_client *a)
{
	if (a && a->parses_in_flight > 0)
		a->parses_in_flight--;
}

void ai_client_unwait(struct ai_client *a)
{
	cache_unwait(&a->cache_waiter);
	a->cache_bypass = true;
}

bool ai_client_take_bypass(struct ai_client *a)
{
	if (!a || !a->cache_bypass)
		return false;
	a->cache_bypass = false;
	return true;
}

void ai_client_transaction_ended(struct ai_client *a)
{
	if (a && a->n_portals)
		ai_portals_end(a);
}
