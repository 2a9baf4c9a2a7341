/* SPDX-License-Identifier: PostgreSQL */
/*
 * replyq.h - the reply queue: the requests a server has not finished
 * answering, in order, and the replies pgsluice owes the client in between.
 * Owns the ring and the protocol rules of which reply completes which entry.
 */
#ifndef SLUICE_REPLYQ_H
#define SLUICE_REPLYQ_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "proto.h"

/*
 * What becomes of the replies to an entry (protocol-flow.html 55.2.3:
 * replies come in request order):
 *   RQ_FORWARD     a client's message sent to the server: its replies are relayed;
 *   RQ_SWALLOW     a message pgsluice injected (a Parse, Bind or Close of its own):
 *                  its ParseComplete / BindComplete / CloseComplete is dropped;
 *   RQ_SYNTHESISE  a client's message pgsluice answered without the server: the
 *                  reply it owes is written by pgsluice when it reaches the head
 *                  (ParseComplete for a Parse, BindComplete for a Bind,
 *                  CloseComplete for a Close, a cached RowDescription for a
 *                  Describe, cached DataRows for an Execute).
 */
enum replyq_action { RQ_FORWARD, RQ_SWALLOW, RQ_SYNTHESISE };

/* How an entry left the queue. */
enum replyq_outcome {
	RQ_COMPLETED,   /* its request completed (ParseComplete, CommandComplete, ReadyForQuery, ...) */
	RQ_FAILED,      /* it got an ErrorResponse (a Query), or an Execute ended without CommandComplete */
	RQ_SKIPPED,     /* the server skips it after an error, to Sync (protocol-flow.html 55.2.3) */
	RQ_DROPPED,     /* the queue was emptied (server reset or close) */
};

struct prepared_stmt;
struct sessvar_op;
struct ai_token;

/*
 * One request. Kept small (56 bytes on LP64): the head is read on every
 * server reply. The riders are owned by the entry; the owner of the queue
 * settles them in its settle callback (replyq_on_reply, replyq_skip_to_sync,
 * replyq_clear) before the entry is gone.
 */
struct replyq_entry {
	uint8_t type;                  /* the frontend message type (PqMsg_Parse, PqMsg_Query, ...) */
	uint8_t action;                /* enum replyq_action */
	bool failed;                   /* a Query or Sync that got ErrorResponse (its ReadyForQuery still comes) */
	bool fill;                     /* token carries a completion-cache fill its replies are captured into */
	uint32_t row_pos;              /* RQ_SYNTHESISE Execute: the cached portal's next row */
	int32_t max_rows;              /* RQ_SYNTHESISE Execute: the Execute's row limit (0: all) */
	struct prepared_stmt *stmt;    /* prepared.c: the shared statement a Parse/Bind/Describe names */
	struct ai_token *token;        /* the middleware's token (ai/token.h), handed to ai_settle; owned */
	struct sessvar_op *setting;    /* Query/Execute: the SET recorded when it completes; owned */
	char *client_name;             /* Parse: the client's name it binds, unbound if it fails; owned */
	char *notify;                  /* Query/Execute: the LISTEN/UNLISTEN it stands for (notify_relay.h); owned */
};

struct replyq {
	struct replyq_entry *items;    /* ring buffer, cap a power of two */
	uint32_t head, n, cap;
	bool skipping;                 /* an error arrived before the client's Sync */
};

/*
 * Settles entry e as it leaves the queue with outcome o (frees or hands
 * over its riders). Called only for an entry with a rider (stmt, token,
 * setting, client_name or notify). Returns false when a completed request's
 * usage record could not be journaled: the client is then owed an error (53100).
 */
typedef bool (*replyq_settle_fn)(void *arg, struct replyq_entry *e, enum replyq_outcome o);

/* Free the ring (its entries must have been settled: replyq_clear). */
void replyq_free(struct replyq *q);

/* Double the ring (16 entries at first), keeping the order. False when out of memory. */
bool replyq_grow(struct replyq *q);

/*
 * Append an entry of frontend message type and action (no riders but stmt,
 * not owned). False when out of memory (nothing appended). Appends even
 * while skipping: replyq_note_request decides what the server answers.
 * Inline: a few pushes per transaction.
 */
static inline bool replyq_push(struct replyq *q, uint8_t type, enum replyq_action action,
                               struct prepared_stmt *stmt)
{
	if (q->n == q->cap && !replyq_grow(q))
		return false;
	q->items[(q->head + q->n) & (q->cap - 1)] =
		(struct replyq_entry){ .type = type, .action = (uint8_t)action, .stmt = stmt };
	q->n++;
	return true;
}

/*
 * A client message of type was sent to the server: append the entry its
 * replies complete (Query, FunctionCall, Sync always; Parse, Bind,
 * Describe, Execute and Close unless the server skips to Sync; a Sync ends
 * the skipping). Other types (Flush, CopyData, ...) get no entry. False
 * when out of memory.
 */
static inline bool replyq_note_request(struct replyq *q, uint8_t type)
{
	switch (type) {
	case PqMsg_Sync:
		q->skipping = false;
		/* fall through */
	case PqMsg_Query:
	case PqMsg_FunctionCall:
		return replyq_push(q, type, RQ_FORWARD, NULL);
	case PqMsg_Parse:
	case PqMsg_Bind:
	case PqMsg_Describe:
	case PqMsg_Execute:
	case PqMsg_Close:
		return q->skipping || replyq_push(q, type, RQ_FORWARD, NULL);
	default:
		return true;
	}
}

/* The oldest entry, or NULL. */
static inline struct replyq_entry *replyq_head(struct replyq *q)
{
	return q->n ? &q->items[q->head] : NULL;
}

/* The newest entry, or NULL. */
static inline struct replyq_entry *replyq_tail(struct replyq *q)
{
	return q->n ? &q->items[(q->head + q->n - 1) & (q->cap - 1)] : NULL;
}

/* The i-th entry from the head (i < q->n). */
static inline struct replyq_entry *replyq_at(struct replyq *q, uint32_t i)
{
	return &q->items[(q->head + i) & (q->cap - 1)];
}

/* Does the head entry owe the client a reply pgsluice writes (RQ_SYNTHESISE)? Asked before every server message. */
static inline bool replyq_owes_head(const struct replyq *q)
{
	return q->n && q->items[q->head].action == RQ_SYNTHESISE;
}

/* Remove the head entry without settling it (the caller settled it). Inline: once per reply. */
static inline void replyq_pop(struct replyq *q)
{
	q->head = (q->head + 1) & (q->cap - 1);
	q->n--;
}

/*
 * Does server reply type complete the forwarded request e (an RQ_FORWARD
 * entry) without an error? replyq_on_reply's rule for such an entry: a
 * completion message or ReadyForQuery always, RowDescription/NoData a
 * Describe, CommandComplete/EmptyQueryResponse/PortalSuspended an Execute.
 * For server.c's batch relay, which pops entries with no SET, LISTEN or
 * cache fill itself (prepared_settle_head settles a statement, a client's
 * name or a token); replyq_on_reply stays the rule for every other entry.
 */
static inline bool replyq_completes(const struct replyq_entry *e, uint8_t type)
{
	switch (type) {
	case PqMsg_ParseComplete:
	case PqMsg_BindComplete:
	case PqMsg_CloseComplete:
	case PqMsg_ReadyForQuery:
		return true;
	case PqMsg_RowDescription:
	case 'n':   /* NoData */
		return e->type == PqMsg_Describe;
	case PqMsg_CommandComplete:
	case PqMsg_EmptyQueryResponse:
	case 's':   /* PortalSuspended */
		return e->type == PqMsg_Execute;
	default:
		return false;
	}
}

/*
 * A server message of type is about to be relayed: settle and pop the
 * entries it completes. Returns RQ_SWALLOW when the message answers an
 * injected request (drop it), else RQ_FORWARD. *lost is set when the
 * settled request's usage record was lost: the caller writes the 53100
 * error before the message (or, when RQ_SWALLOW is returned for an
 * Execute's end, in its place). An ErrorResponse to an extended-protocol
 * message skips to Sync (replyq_skip_to_sync).
 */
enum replyq_action replyq_on_reply(struct replyq *q, uint8_t type, replyq_settle_fn settle, void *arg,
                                   bool *lost);

/*
 * After an ErrorResponse to an extended-protocol message the server skips to
 * Sync: settle as RQ_SKIPPED and pop every entry before the Sync; with no
 * Sync queued yet, later messages are skipped until the client's Sync
 * (q->skipping).
 */
void replyq_skip_to_sync(struct replyq *q, replyq_settle_fn settle, void *arg);

/* Settle as RQ_DROPPED and pop every entry; the queue starts afresh. */
void replyq_clear(struct replyq *q, replyq_settle_fn settle, void *arg);

/*
 * The backend message type a RQ_SYNTHESISE entry of frontend type owes when
 * it is a plain completion: ParseComplete, BindComplete, CloseComplete; 0
 * for a Describe or Execute (a cached answer, written by the cache).
 */
uint8_t replyq_owed_complete(uint8_t type);

#endif
