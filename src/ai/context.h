/* SPDX-License-Identifier: PostgreSQL */
/*
 * ai/context.h - what src/ai/ is told of the client a decision is for: its
 * role, database and sluice.* settings, and the process whose limits, usage
 * writer and counters it uses. Filled by the core for each call.
 */
#ifndef SLUICE_AI_CONTEXT_H
#define SLUICE_AI_CONTEXT_H

#include <stdbool.h>

#include "ai/cache_proto.h"

struct ai_session;
struct sluice;

struct ai_context {
	struct sluice *sl;                 /* the process: config, limits, usage writer, AI counters */
	const char *user;                  /* the client's login role (borrowed) */
	const char *database;              /* the client's database (borrowed) */
	const struct ai_session *session;  /* its sluice.user / sluice.model (borrowed, never NULL) */
	/* Filled only for a statement tagged ai_cache (ai_decide's lookups): */
	bool cache_on;                     /* the client may look up and fill (no setting its keys cannot hold) */
	bool may_answer;                   /* a hit can be written now, in order, with the right status */
	bool may_wait;                     /* no server is held: it may wait for an identical miss */
	bool in_block;                     /* its server is inside a transaction block: nothing read is stored */
	struct cache_key_owner key;        /* whose answers its keys name */
};

#endif
