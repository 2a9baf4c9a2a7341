/* SPDX-License-Identifier: PostgreSQL */
/*
 * ai/decide.h - the middleware's one door: a client's statement, read by the
 * core into a struct stmt (stmt.h), gets one decision here: forward it (with
 * what rides on its reply), refuse it, answer it from the completion cache, or wait.
 */
#ifndef SLUICE_AI_DECIDE_H
#define SLUICE_AI_DECIDE_H

#include <stdbool.h>
#include <stdint.h>

#include "pgerror.h"

struct ai_client;
struct ai_context;
struct cache_entry;
struct cache_stmt;
struct stmt;
struct stmt_tags;
struct usage_pending;

/* What the core does with the statement. */
enum ai_verdict {
	AI_FORWARD,   /* relay it; usage and capture (either may be NULL) ride on its reply */
	AI_REFUSE,    /* do not run it: answer refusal (severity ERROR) in its place */
	AI_ANSWER,    /* answer it from the cache's answer, with usage, without running it */
	AI_WAIT,      /* an identical lookup is being answered: the client waits (ai_client's waiter) */
};

/*
 * A decision. Every pointer is handed to the core: usage goes on the
 * request's reply-queue entry (ai_token_add_usage) or to usage_commit when
 * answered; capture (a fill, one reference) on the entry of the request whose
 * answer the server sends (ai_token_add_cache); answer (one reference) is
 * released once written (the hit of an Execute rides on the reply queue instead).
 */
struct ai_decision {
	enum ai_verdict verdict;
	struct usage_pending *usage;    /* the record the statement makes once it completes, or NULL */
	struct cache_entry *capture;    /* AI_FORWARD: the fill its answer is captured into, or NULL */
	struct cache_entry *answer;     /* AI_ANSWER: the cached answer */
	uint32_t from_row, rows;        /* AI_ANSWER of an Execute: rows [from_row, from_row + rows) of answer */
	struct stmt_tags *parsed;       /* AI_FORWARD of a deferred Parse: its tags in flight, for its reply-queue entry */
	struct cache_stmt *cstmt;       /* STMT_PARSE ahead: the lookup statement's cache key part (the caller's) */
	struct pg_error refusal;        /* AI_REFUSE */
};

/*
 * Decide statement st of the client ctx describes (its middleware state a;
 * NULL only when the client has none and could not get one: out of memory,
 * then nothing is looked up) (docs/ai-middleware.md, docs/limits.md,
 * docs/cache.md):
 * - STMT_QUERY: tags (already parsed into st), a lookup when tagged ai_cache,
 *   then admission; a hit is AI_ANSWER with its cached = true record.
 * - STMT_BIND (the unnamed portal, to a lookup statement, a server linked):
 *   a fresh answer binds the portal (AI_ANSWER: the core owes BindComplete;
 *   the portal's Describe and Execute are answered from it); else
 *   AI_FORWARD, the portal's fill kept when the answer is to be stored.
 *   st->ahead (a batch planned without a server, nothing answered yet): only
 *   looked up: AI_ANSWER with a fresh answer (a reference), AI_WAIT with the
 *   FILLING entry of an identical miss (no reference, not waited on: the
 *   core waits once the batch is planned), else AI_FORWARD.
 * - STMT_PARSE: the statement's tags are kept now, or (deferred) ride on
 *   the Parse as parsed, kept at its ParseComplete (client_step_parsed).
 *   AI_REFUSE 53200 when out of memory. st->ahead (a batch planned without
 *   a server): nothing kept; a lookup statement is AI_ANSWER with its key
 *   part (cstmt) and the description the cache keeps of it (answer, a
 *   reference, or NULL); anything else is AI_FORWARD.
 * - STMT_DESCRIBE_STATEMENT: a lookup statement whose description the
 *   cache lacks gets its ParameterDescription and RowDescription captured.
 *   st->ahead: AI_ANSWER with the description the cache keeps (a
 *   reference), else AI_FORWARD.
 * - STMT_DESCRIBE_PORTAL / STMT_CLOSE_PORTAL of the unnamed portal bound to
 *   a hit: AI_ANSWER (the core owes the RowDescription from answer, or
 *   CloseComplete; answer is NULL for a Close); a Describe of a hit without
 *   one is AI_REFUSE 0A000; of a fill: AI_FORWARD capturing it.
 * - STMT_EXECUTE: admission with the portal's tags; the unnamed portal's hit
 *   is AI_ANSWER (from_row, rows), its fill rides on the Execute (capture).
 *   st->ahead: the batch's Execute decided before a server was taken (no
 *   cache): its decision is kept for the Execute itself (ai_take_ahead).
 * The refusal's SQLSTATE: 22023 (a malformed tag), 42501 (ai_user not
 * trusted), 53400 (a limit). Fills d; never fails (out of memory: forward).
 */
void ai_decide(const struct ai_context *ctx, struct ai_client *a, const struct stmt *st, struct ai_decision *d);


/*
 * The core wrote d's answer without a server (AI_ANSWER of a Query, or of
 * an Execute in a batch answered whole): journal its record, before the
 * client's ReadyForQuery, and release the answer. False when the record
 * could not be journaled (logged and counted, as usage_commit says).
 */
bool ai_answered(const struct ai_context *ctx, struct ai_decision *d);

/* Drop a decision's references (the core could not apply it: out of memory, client gone). */
void ai_decision_drop(const struct ai_context *ctx, struct ai_decision *d);

#endif
