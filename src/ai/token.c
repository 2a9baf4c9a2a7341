/* SPDX-License-Identifier: PostgreSQL */
/*
 * ai/token.c - see ai/token.h. A token is made only for a request the
 * middleware has something riding on; an untagged statement has none.
 */
#include "ai/token.h"

#include <stdlib.h>

#include "ai/cache.h"
#include "ai/cache_proto.h"
#include "ai/usage.h"
#include "sluice.h"

struct ai_token {
	struct usage_pending *usage;   /* owned */
	struct cache_entry *cache;     /* one reference owned */
	struct stmt_tags *parsed;      /* owned until settled */
	bool hit;                      /* cache is a hit answered from, not a fill */
};

static struct ai_token *token_of(struct ai_token **tok)
{
	if (!*tok)
		*tok = calloc(1, sizeof(**tok));
	return *tok;
}

bool ai_token_add_usage(struct ai_token **tok, struct usage_pending *u)
{
	if (!u)
		return true;
	struct ai_token *t = token_of(tok);
	if (!t) {
		usage_discard(u);
		return false;
	}
	usage_discard(t->usage);
	t->usage = u;
	return true;
}

bool ai_token_add_cache(struct ai_token **tok, struct cache_entry *e, bool hit)
{
	if (*tok && (*tok)->cache)
		return false;
	struct ai_token *t = token_of(tok);
	if (!t)
		return false;
	t->cache = e;
	t->hit = hit;
	return true;
}

bool ai_token_add_parsed(struct ai_token **tok, struct stmt_tags *st)
{
	if (*tok && (*tok)->parsed)
		return false;
	struct ai_token *t = token_of(tok);
	if (!t)
		return false;
	t->parsed = st;
	return true;
}

struct cache_entry *ai_token_cache(const struct ai_token *tok)
{
	return tok ? tok->cache : NULL;
}

const struct stmt_tags *ai_token_parsed(const struct ai_token *tok)
{
	return tok ? tok->parsed : NULL;
}

bool ai_settle(struct sluice *sl, struct ai_token *tok, enum ai_outcome outcome, bool cacheable,
               struct stmt_tags **parsed)
{
	bool recorded = true;
	*parsed = NULL;
	if (!tok)
		return true;
	if (tok->usage) {
		if (outcome == AI_COMPLETED)
			recorded = usage_commit(sl, tok->usage);
		else
			usage_discard(tok->usage);
	}
	if (tok->cache) {
		if (tok->hit)
			cache_entry_release(sl->cache, tok->cache);
		else
			cache_fill_done(sl->cache, tok->cache, outcome == AI_COMPLETED && cacheable);
	}
	*parsed = tok->parsed;
	free(tok);
	return recorded;
}
