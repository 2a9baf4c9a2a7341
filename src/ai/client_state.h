/* SPDX-License-Identifier: PostgreSQL */
/*
 * ai/client_state.h - one client's middleware state: sluice.user/model, the
 * tags of its statements and portals (kept tags, shared by reference), records
 * and cache fills not yet on a reply-queue entry, its cache hit portal and cache wait.
 */
#ifndef SLUICE_AI_CLIENT_STATE_H
#define SLUICE_AI_CLIENT_STATE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "ai/cache.h"
#include "ai/session.h"
#include "ai/tags.h"
#include "ai/usage.h"

struct ai_tags;
struct cache;
struct cache_key_memo;
struct cache_stmt;
struct event;
struct usage_pending;

/* A Parse's tags waiting for its ParseComplete (session pooling: the server may refuse it). */
struct stmt_tags {
	char *name;                    /* "" for the unnamed statement; stored after the struct (one allocation) */
	struct ai_tags *tags;          /* a reference to kept tags (ai_tags_keep); NULL: untagged */
	struct cache_stmt *cstmt;      /* its cache key part, or NULL */
};

/* A named prepared statement or portal whose text carries tags (and, for a cache lookup, its key part). */
struct tagged_stmt { char *name; struct ai_tags *tags; struct cache_stmt *cstmt; };

/*
 * struct client holds a pointer to one (NULL until the client first needs
 * it: a sluice.* setting, a tagged statement, a cache lookup), freed with
 * the client (ai_client_free). Its decisions are ai_decide's (ai/decide.h);
 * the core's middleware step (client_step.c) reads it and hands it what
 * rides on a message; every pointer is owned.
 */
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
	struct event *cache_wake_ev;        /* resumes the relay after that */
	struct cache_key_memo *key_memo;    /* how its keys start, kept between lookups (cache_key_owner) */
};

/* A client's middleware state, all empty; NULL when out of memory. Freed by ai_client_free. */
struct ai_client *ai_client_new(void);

/*
 * Free a and everything it holds: its wait, hit and fills (dropped from
 * cache), records not yet on a reply queue (their reservations given back),
 * kept tags. NULL is ignored.
 */
void ai_client_free(struct ai_client *a, struct cache *cache);

/*
 * Kept tags: a statement's tags on the heap, shared by reference by the
 * statement, its Parse in flight and its portals, so that they are copied
 * once. ai_tags_new: one reference, fields for the caller to fill;
 * ai_tags_keep: a kept copy of t. Both NULL when out of memory.
 * ai_tags_ref: one more reference to kept tags (NULL gives NULL);
 * ai_tags_unref drops one (NULL is ignored). Event loop thread only.
 */
struct ai_tags *ai_tags_new(void);
struct ai_tags *ai_tags_keep(const struct ai_tags *t);

/*
 * Shared, never changed: a new Parse keeps new tags, and a portal keeps the
 * old ones (PostgreSQL's portal outlives a new Parse of its statement).
 * Inline, as a statement takes and drops references several times.
 */
struct kept_tags {
	unsigned refs;
	struct ai_tags tags;
};

static inline struct kept_tags *ai_kept_of(const struct ai_tags *t)
{
	return (struct kept_tags *)((char *)(uintptr_t)t - offsetof(struct kept_tags, tags));
}

static inline struct ai_tags *ai_tags_ref(const struct ai_tags *t)
{
	if (!t)
		return NULL;
	ai_kept_of(t)->refs++;
	return (struct ai_tags *)(uintptr_t)t;
}

/* The last reference to k was dropped: it waits for reuse or is freed. */
void ai_tags_release(struct kept_tags *k);

static inline void ai_tags_unref(struct ai_tags *t)
{
	if (t && --ai_kept_of(t)->refs == 0)
		ai_tags_release(ai_kept_of(t));
}

/*
 * Statement name ("" the unnamed one) now has kept tags (a reference is
 * taken; NULL: untagged, forgotten) and, for a cache lookup, key part cstmt
 * (taken over, may be NULL). False when out of memory (cstmt freed).
 */
bool ai_statement_keep(struct ai_client *a, const char *name, const struct ai_tags *tags, struct cache_stmt *cstmt);

/* The kept tags of statement name (NULL: untagged) and, when cstmt is not NULL, its cache key part. */
const struct ai_tags *ai_statement_tags(const struct ai_client *a, const char *name,
                                        const struct cache_stmt **cstmt);

/* True when a has a statement with kept tags (the unnamed one or a named one). */
static inline bool ai_client_has_statement_tags(const struct ai_client *a)
{
	return a->n_tagged || a->unnamed_tags;
}

/*
 * Named portal name now has kept tags (NULL: forgotten). At most
 * MAX_TRACKED_PORTALS are kept; the oldest goes first (out of memory: untracked).
 */
#define MAX_TRACKED_PORTALS 64
void ai_portal_keep(struct ai_client *a, const char *name, const struct ai_tags *tags);

/* The kept tags of named portal name, or NULL. */
const struct ai_tags *ai_portal_tags(const struct ai_client *a, const char *name);

/* The transaction ended: every named portal is gone (protocol-flow.html 55.2.3). */
void ai_portals_end(struct ai_client *a);

/* The unnamed portal is replaced or gone: its hit is released, its fill dropped from cache. */
void ai_portal_forget(struct ai_client *a, struct cache *cache);

/* A fill that will not complete (*fill, NULL: nothing): dropped, its waiters go to the server. */
void ai_fill_abandon(struct cache *cache, struct cache_entry **fill);

/* Free a Parse's tags in flight (its name and key part with it); NULL is ignored. */
void ai_stmt_tags_free(struct stmt_tags *st);

/*
 * The batch's Execute was admitted ahead (ai_decide, STMT_EXECUTE with
 * ahead): its record replaces *usage (discarded), for the Execute now
 * relayed (NULL when none). True when a decision was waiting (the Execute
 * is not admitted again). Inline: asked at every Execute of a client with state.
 */
static inline bool ai_take_ahead(struct ai_client *a, struct usage_pending **usage)
{
	if (!a || !a->batch_admitted)
		return false;
	a->batch_admitted = false;
	usage_discard(*usage);
	*usage = a->batch_usage;
	a->batch_usage = NULL;
	return true;
}

/*
 * a waits for the FILLING entry e (an identical lookup being answered; the
 * client holds no server meanwhile): its waiter's wake hook is called when
 * the fill ends. True when waiting (also when it was already); false when
 * a has no wake hook (it cannot be woken: go to the server instead).
 */
bool ai_client_wait(struct ai_client *a, struct cache_entry *e);

struct ai_decision;

/*
 * What rides on decision d's statement (its usage record, the fill its
 * answer is captured into, a deferred Parse's tags: ai/decide.h) waits in a
 * until the message is relayed (ai_client_take). A record an earlier
 * message left there, unrelayed, is given back; a fill or Parse tags only
 * when d brings new ones. d's riders are taken (NULL after).
 */
void ai_client_carry(struct ai_client *a, struct cache *cache, struct ai_decision *d);

/* What a carries for the message just relayed, handed to the caller (each NULL when none). */
void ai_client_take(struct ai_client *a, struct usage_pending **usage, struct cache_entry **fill,
                    struct stmt_tags **parsed);

/* Does a carry anything for the message at the front? NULL a: no. */
static inline bool ai_client_carries(const struct ai_client *a)
{
	return a && (a->pending_usage || a->pending_fill || a->pending_parse);
}

/* A Sync ends the batch: what was decided ahead for its first Execute is spent. */
void ai_batch_end(struct ai_client *a);

#endif
