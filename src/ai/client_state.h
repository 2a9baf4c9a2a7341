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
 * One client's middleware state, opaque outside src/ai/ (its fields:
 * ai/client_state_impl.h). struct client holds a pointer to one (NULL until
 * the client first needs it: a sluice.* setting, a tagged statement, a cache
 * lookup), freed with the client (ai_client_free). Its decisions are
 * ai_decide's (ai/decide.h); the core's middleware step (client_step.c) asks
 * it through the functions below and hands it what rides on a message.
 * Functions that only read take NULL as a client that never used the
 * middleware (nothing kept, no sluice.* setting).
 */
struct ai_client;

/*
 * A client's middleware state, all empty; NULL when out of memory. Freed by
 * ai_client_free. woken(arg) is called (arg borrowed, e.g. the client) when a
 * cache fill the client waited for ends (ai_client_wait), from inside that
 * fill: the core resumes the client from the event loop, not in the call.
 */
struct ai_client *ai_client_new(void (*woken)(void *arg), void *arg);

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

/* The kept tags of statement name (NULL: untagged; NULL a too) and, when cstmt is not NULL, its cache key part. */
const struct ai_tags *ai_statement_tags(const struct ai_client *a, const char *name,
                                        const struct cache_stmt **cstmt);

/* True when a has a statement with kept tags (the unnamed one or a named one). */
bool ai_client_has_statement_tags(const struct ai_client *a);

/* ai_statement_tags of the unnamed statement, without the name: asked at every Bind of a batch. */
const struct ai_tags *ai_client_unnamed_statement(const struct ai_client *a, const struct cache_stmt **cstmt);

/* True when the unnamed statement has kept tags or is a cache lookup (a simple Query drops it). */
bool ai_client_unnamed_tagged(const struct ai_client *a);

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
 * is not admitted again); NULL a: false.
 */
bool ai_take_ahead(struct ai_client *a, struct usage_pending **usage);

/*
 * ai_take_ahead for the Execute of a batch relayed in one move: its record
 * becomes what a carries for it (ai_client_take). True when it was admitted ahead.
 */
bool ai_client_take_ahead(struct ai_client *a);

/* Was the batch's first Execute admitted ahead (before a server was taken)? */
bool ai_client_batch_admitted(const struct ai_client *a);

/*
 * The batch's first message is an unnamed Parse of len bytes read before a
 * server was linked, with kept tags tags (a reference, taken over; NULL:
 * untagged). known false: it must be read again (its tags could not be kept).
 */
void ai_client_hand_batch_parse(struct ai_client *a, struct ai_tags *tags, bool known, uint32_t len);

/*
 * The Parse of len bytes at the front: when it is the batch's first (as
 * handed, same length), true with its kept tags in *tags (a reference for
 * the caller; NULL: untagged); else false, *tags NULL. What was handed is spent.
 */
bool ai_client_take_batch_parse(struct ai_client *a, uint32_t len, struct ai_tags **tags);

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
bool ai_client_carries(const struct ai_client *a);

/* The fill a carries for the message at the front, handed to the caller (NULL: none). */
struct cache_entry *ai_client_take_fill(struct ai_client *a);

/* sluice.user / sluice.model of a (an empty session for NULL a); borrowed while a lives. */
const struct ai_session *ai_client_session(const struct ai_client *a);

/* SET sluice.user / sluice.model, or a StartupMessage's options: a's session is now *s (copied). */
void ai_client_set_session(struct ai_client *a, const struct ai_session *s);

/* Where a keeps how its cache keys start (cache_key_owner.memo); NULL for NULL a. */
struct cache_key_memo **ai_client_key_memo(struct ai_client *a);

/*
 * The unnamed portal's kept tags (NULL: untagged); ai_client_set_portal_tags
 * takes over the reference tags (NULL: untagged) and drops the old one.
 */
const struct ai_tags *ai_client_portal_tags(const struct ai_client *a);
void ai_client_set_portal_tags(struct ai_client *a, struct ai_tags *tags);

/*
 * The hit the unnamed portal is bound to (NULL: none); a Bind answered from
 * the cache binds it to hit (a reference, taken over).
 */
struct cache_entry *ai_client_cached_portal(const struct ai_client *a);
void ai_client_set_cached_portal(struct ai_client *a, struct cache_entry *hit);

/* Is the unnamed portal a hit or a fill (its Describe, Execute and Close go to ai_decide)? */
bool ai_client_portal_cached(const struct ai_client *a);

/*
 * What the middleware must see of a client's extended protocol, asked per
 * message before a server is linked or while one is: a Bind (statements or
 * portals with tags, Parses in flight), a Close (kept statements or named
 * portals), a Describe of a statement (kept statements, Parses in flight),
 * an Execute (portal tags, sluice.user, named portals, a batch admitted
 * ahead). False: the message is relayed without a look. NULL a: false.
 */
bool ai_client_sees_bind(const struct ai_client *a);
bool ai_client_sees_close(const struct ai_client *a);
bool ai_client_sees_describe(const struct ai_client *a);
bool ai_client_sees_execute(const struct ai_client *a);

/*
 * A batch of Bind/Describe/Execute/Sync may be relayed in one move (the
 * core's relay_batch): the unnamed portal is no hit or fill and nothing
 * rides on the message at the front. NULL a: true.
 */
bool ai_client_batch_ready(const struct ai_client *a);

/*
 * A tagged Parse went to the server (its ParseComplete is owed), or its
 * answer came back; ai_client_parsing: is one in flight (its tags ride on
 * the reply queue, prepared_pending_parse)?
 */
void ai_client_parse_sent(struct ai_client *a);
void ai_client_parse_done(struct ai_client *a);
bool ai_client_parsing(const struct ai_client *a);

/*
 * a's wait (ai_client_wait) cannot be woken (the core could not arm its
 * wake): undone, and the lookup, asked again, goes to the server.
 */
void ai_client_unwait(struct ai_client *a);

/*
 * The fill a waited for ended without an answer stored (or the wait was
 * undone): true once, and the lookup asked again goes to the server.
 */
bool ai_client_take_bypass(struct ai_client *a);

/* The transaction ended: a's named portals are gone (ai_portals_end); NULL a: nothing. */
void ai_client_transaction_ended(struct ai_client *a);

/* A Sync ends the batch: what was decided ahead for its first Execute is spent. NULL a: nothing. */
void ai_batch_end(struct ai_client *a);

#endif
