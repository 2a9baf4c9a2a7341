/* SPDX-License-Identifier: PostgreSQL */
/*
 * ai/token.h - the middleware's token: what one request owes src/ai/ when it
 * completes (a usage record, a completion-cache fill or hit, a Parse's tags).
 * The core keeps it opaque on a reply-queue entry and hands it to ai_settle.
 */
#ifndef SLUICE_AI_TOKEN_H
#define SLUICE_AI_TOKEN_H

#include <stdbool.h>

struct ai_token;
struct cache_entry;
struct sluice;
struct stmt_tags;
struct usage_pending;

/* How the request a token rides on ended. */
enum ai_outcome {
	AI_COMPLETED,   /* it completed without error (CommandComplete, ParseComplete, ...) */
	AI_FAILED,      /* it got an ErrorResponse (or an Execute ended without CommandComplete) */
	AI_SKIPPED,     /* the server skipped it after an error, or it was dropped with its server */
};

/*
 * Put usage record u on *tok (allocated on first use): journaled when the
 * request completes, discarded otherwise. A record already there is
 * discarded (the newer one stands). Takes ownership of u, also on false
 * (out of memory: u is discarded). u NULL: nothing.
 */
bool ai_token_add_usage(struct ai_token **tok, struct usage_pending *u);

/*
 * Put a completion-cache entry on *tok: a fill the server's answer is
 * captured into (hit false), stored when the request completes in a
 * cacheable state; or a hit pgsluice answers from (hit true), released at
 * settle. Takes the caller's reference on success; false (nothing taken)
 * when *tok already carries one or out of memory.
 */
bool ai_token_add_cache(struct ai_token **tok, struct cache_entry *e, bool hit);

/*
 * Put a Parse's tags on *tok; handed back by ai_settle for the client's
 * statement. Takes ownership on success; false (nothing taken) when *tok
 * already carries tags or out of memory.
 */
bool ai_token_add_parsed(struct ai_token **tok, struct stmt_tags *st);

/* The fill or hit tok carries (NULL tok: NULL). */
struct cache_entry *ai_token_cache(const struct ai_token *tok);

/* The Parse tags tok carries (NULL tok: NULL). */
const struct stmt_tags *ai_token_parsed(const struct ai_token *tok);

/*
 * The request tok rode on ended with outcome: journal its usage record
 * (completed) or give its reservation back; store its fill when completed
 * and cacheable (the server answered outside a transaction block, with
 * settings the key describes), else drop it; release a hit. Frees tok
 * (NULL: nothing). *parsed receives the Parse tags, owned by the caller
 * (client_step_parsed), or NULL. Returns false when a completed request's
 * usage record could not be journaled (the client is owed 53100).
 */
bool ai_settle(struct sluice *sl, struct ai_token *tok, enum ai_outcome outcome, bool cacheable,
               struct stmt_tags **parsed);

#endif
