/* SPDX-License-Identifier: PostgreSQL */
/*
 * ai/context.h - what src/ai/ is told of the client a decision is for: its
 * role, database and sluice.* settings, and the process whose limits, usage
 * writer and counters it uses. Filled by the core for each call.
 */
#ifndef SLUICE_AI_CONTEXT_H
#define SLUICE_AI_CONTEXT_H

struct ai_session;
struct sluice;

struct ai_context {
	struct sluice *sl;                 /* the process: config, limits, usage writer, AI counters */
	const char *user;                  /* the client's login role (borrowed) */
	const char *database;              /* the client's database (borrowed) */
	const struct ai_session *session;  /* its sluice.user / sluice.model (borrowed, never NULL) */
};

#endif
