/* SPDX-License-Identifier: PostgreSQL */
/*
 * ai/client_state_impl.h - the fields of struct ai_client, for src/ai/'s own
 * files (client_state.c, decide.c) and their unit tests only; the core sees
 * an opaque struct and asks through ai/client_state.h.
 */
#ifndef SLUICE_AI_CLIENT_STATE_IMPL_H
#define SLUICE_AI_CLIENT_STATE_IMPL_H

#include "ai/client_state.h"

/* Every pointer is owned. */
struct ai_client {
	struct ai_session session;     /* sluice.user / sluice.model of this client */
	/* Tags of the extended protocol's statements, kept only once one is tagged. */
	struct ai_tags *unnamed_tags;  /* of the unnamed statement; NULL: untagged */
	struct cache_stmt *unnamed_cstmt; /* its completion-cache key part, when it is a lookup */
	struct tagged_stmt *tagged;    /* named statements with tags */
	size_t n_tagged;
	struct tagged_stmt *portals;   /* named portals of attributed statements (cstmt unused):
	                                  their Executes are admitted and recorded as the unnamed one's */
	size_t n_portals;
	struct ai_tags *portal_tags;   /* of the unnamed portal (a reference, shared with its statement); NULL: untagged */
	struct stmt_tags *pending_parse; /* of the Parse at the front, handed on when relayed */
	int parses_in_flight;          /* tagged Parses sent, their ParseComplete not back yet */
	struct usage_pending *pending_usage; /* of the admitted message at the front, until it is relayed */
	/* An extended-protocol batch decided before any server was taken: */
	bool batch_admitted;           /* its first Execute is admitted already */
	struct usage_pending *batch_usage; /* and makes this record */
	bool batch_parse_known;        /* its first message, an unnamed Parse of batch_parse_len, was read: */
	uint32_t batch_parse_len;
	struct ai_tags *batch_parse_tags; /* its tags (a reference; NULL: untagged), for parse_step */
	/* The completion cache (src/ai/cache_proto.h): */
	bool cache_bypass;                  /* the miss waited for was not stored: go to the server */
	uint32_t cached_portal_row;         /* the hit portal's next row */
	struct cache_entry *pending_fill;   /* of the message at the front, handed on when relayed */
	struct cache_entry *portal_fill;    /* the unnamed portal's answer, to be captured (a miss) */
	struct cache_entry *cached_portal;  /* the unnamed portal, bound to a hit */
	struct cache_waiter cache_waiter;   /* parked until an identical miss is answered */
	void (*woken)(void *arg);           /* the core's: resume the client after that (ai_client_new) */
	void *woken_arg;
	struct cache_key_memo *key_memo;    /* how its keys start, kept between lookups (cache_key_owner) */
};


#endif
