/* SPDX-License-Identifier: PostgreSQL */
/*
 * client_step.h - the middleware's look at each client message before it is
 * relayed (for client.c; server.c reports transaction ends): tags, admission, the
 * sluice.* settings pgsluice answers itself, and the completion cache.
 */
#ifndef SLUICE_CLIENT_STEP_H
#define SLUICE_CLIENT_STEP_H

#include <event2/util.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

struct client;
struct server;
struct iobuf;

/*
 * The middleware's look at client c's message of type and len (header in
 * the input, not consumed) on its way to server s (NULL when none is linked
 * yet). Returns 1 to relay it, 0 when it was answered or replaced (consumed),
 * -1 to wait: for more bytes, or (parked on the completion cache) for an
 * identical miss to be answered.
 */
int client_step(struct client *c, struct server *s, uint8_t type, uint32_t len);

/* Free the SET of the Query at the front that will not be relayed (c->pending_setting). */
void client_drop_pending_setting(struct client *c);

/*
 * The first message of an extended-protocol batch while no server is linked:
 * answer the whole batch from the completion cache when it can be, or decide
 * a one-statement batch's admission now so that a refusal takes no server.
 * Returns as client_step.
 */
int client_batch_step(struct client *c, uint8_t type, uint32_t len);

/* A simple Query of SET/RESET/SHOW sluice.user or sluice.model, answered by pgsluice? (consumed) */
bool client_intercept_set(struct client *c, uint32_t len);

/*
 * May client_intercept_set answer a simple Query whose text is body[0..n)?
 * Only one that begins (after blanks) with SET, SHOW, RES(ET) or a comment
 * can be ours: false for nearly every statement, from its first three
 * letters. Inline, so that the relay asks it before the call; a true
 * answer only means client_intercept_set looks.
 */
static inline bool client_may_intercept_set(const uint8_t *body, size_t n)
{
	size_t i = 0;
	while (i < n && (body[i] == ' ' || body[i] == '\t' || body[i] == '\n' || body[i] == '\r'))
		i++;
	if (i >= n || body[i] == '/' || body[i] == '-')
		return true;
	uint8_t first = body[i] | 0x20, second = i + 1 < n ? body[i + 1] | 0x20 : 0;
	uint8_t third = i + 2 < n ? body[i + 2] | 0x20 : 0;
	if (first == 's')
		return second == 'e' ? third == 't' : second == 'h';
	return first == 'r' && second == 'e' && third == 's';
}

/* Offset of a comment opener in [from, 1 + len) of the input, or -1. */
long client_step_find_comment(const struct iobuf *in, size_t from, uint32_t len);

/*
 * c sent Sync (still in its input, len bytes): the unnamed portal (and what
 * the cache kept of it) ends. True when the Sync was answered and must be
 * dropped: it ends a batch pgsluice answered up to a Flush without a server.
 */
bool client_step_sync(struct client *c);

/*
 * c's server said ReadyForQuery with transaction status 'I': every portal is
 * gone (protocol-flow.html 55.2.3: portals live until the transaction ends),
 * so pgsluice forgets the named ones it tracked.
 */
void client_step_transaction_ended(struct client *c);

/* Hand what rides on the message just relayed to server s (usage record, cache fill). */
void client_step_relayed(struct client *c, struct server *s);

struct stmt_tags;    /* a Parse's tags in flight (ai/client_state.h) */

/*
 * The Parse of st completed (ok) or failed or was skipped: c's statement
 * takes its tags, or keeps its old ones. c NULL (the client is gone) just
 * frees. Frees st; NULL is ignored.
 */
void client_step_parsed(struct client *c, struct stmt_tags *st, bool ok);

/* Free c's statement tags, cache state and pending records (the client is freed). */
void client_step_free(struct client *c);

/*
 * The StartupMessage's options (PostgreSQL's -c name=value / --name=value):
 * sluice.user and sluice.model go to c's middleware state (made only when
 * one is given), the rest as ai_session_apply_options says (ai/session.h).
 * False with errbuf set when the options cannot be honoured (or out of memory).
 */
bool client_step_startup_options(struct client *c, const char *options, const char *ignored, char *errbuf,
                                 size_t errlen);

/* Does c hold a usage record, cache fill or Parse tags for the message at the front (client_step_relayed)? */
bool client_step_has_pending(const struct client *c);

/*
 * May client_step_batch_message carry c's messages in the batch relay's
 * runs? True for a client without middleware state, or with nothing riding
 * on its next message: no cache hit or fill of the unnamed portal, no usage
 * record, cache fill or Parse tags waiting to be attached.
 */
bool client_step_batch_ready(const struct client *c);

/*
 * For client.c's relay_batch: the middleware's step for message type
 * (Bind, Describe, Execute, Flush or Sync; body[0..body_len) whole, after the
 * length word; a Bind's portal name and the byte after its NUL readable) of
 * client c, which has middleware state and is batch-ready, on its way to
 * server s in a run. Does what client_step (and, for a Sync, the batch end)
 * does for it when that needs no reply: the unnamed portal takes the tags
 * of the unnamed statement, an Execute admitted with its batch takes the
 * batch's usage record (then in c's pending usage, for client_step_relayed
 * once its reply-queue entry is made). Returns false, having changed
 * nothing, for a message whose step might answer, refuse or capture it
 * (named portals and statements, a cache lookup statement, an Execute not
 * yet admitted, a Describe of a statement): it takes the per-message path.
 */
bool client_step_batch_message(struct client *c, struct server *s, uint8_t type, const uint8_t *body,
                               size_t body_len);

/* A Sync ends c's batch: what was decided for its first Execute (client_batch_step) is spent. */
void client_step_batch_end(struct client *c);

/* Was c's batch admitted before a server was taken (client_batch_step)? */
bool client_step_batch_admitted(const struct client *c);

/* Is c attributed to a subject beyond its role: sluice.user set, or tagged statements? */
bool client_step_attributed(const struct client *c);

/* The message at the front was rewritten by prepared.c (a Describe renamed): its cache fill rides on s's queue. */
void client_step_attach_fill(struct client *c, struct server *s);

#endif
