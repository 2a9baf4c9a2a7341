/* SPDX-License-Identifier: PostgreSQL */
/*
 * replyq.c - the reply queue (replyq.h): a ring of the requests a server owes
 * replies to, and which server reply completes which of them
 * (protocol-flow.html 55.2.3). No sockets, no server or client struct.
 */
#include "replyq.h"

#include <stdlib.h>

#include "proto.h"

void replyq_free(struct replyq *q)
{
	free(q->items);
	*q = (struct replyq){ 0 };
}

bool replyq_grow(struct replyq *q)
{
	uint32_t cap = q->cap ? q->cap * 2 : 16;
	struct replyq_entry *items = malloc(cap * sizeof(*items));
	if (!items)
		return false;
	for (uint32_t i = 0; i < q->n; i++)
		items[i] = *replyq_at(q, i);
	free(q->items);
	q->items = items;
	q->head = 0;
	q->cap = cap;
	return true;
}

/*
 * Settle the head with outcome o and pop it; false when its usage record
 * was lost. An entry with no rider has nothing to settle: most requests
 * (an untagged statement's) pop without the call.
 */
static inline __attribute__((always_inline)) bool settle_pop(struct replyq *q, enum replyq_outcome o,
                                                             replyq_settle_fn settle, void *arg)
{
	struct replyq_entry *e = &q->items[q->head];
	bool recorded = true;
	if (e->stmt || e->token || e->setting || e->client_name || e->notify)
		recorded = settle(arg, e, o);
	replyq_pop(q);
	return recorded;
}

void replyq_skip_to_sync(struct replyq *q, replyq_settle_fn settle, void *arg)
{
	struct replyq_entry *e;
	while ((e = replyq_head(q)) != NULL && e->type != PqMsg_Sync)
		settle_pop(q, RQ_SKIPPED, settle, arg);
	if (!e)
		q->skipping = true;
}

void replyq_clear(struct replyq *q, replyq_settle_fn settle, void *arg)
{
	while (q->n > 0)
		settle_pop(q, RQ_DROPPED, settle, arg);
	q->head = 0;
	q->skipping = false;
}

enum replyq_action replyq_on_reply(struct replyq *q, uint8_t type, replyq_settle_fn settle, void *arg,
                                   bool *lost)
{
	struct replyq_entry *e = replyq_head(q);
	*lost = false;
	if (!e)
		return RQ_FORWARD;
	/* a reply pgsluice writes itself answers no server message: only a
	 * completion or ReadyForQuery pops it (the relay writes owed replies
	 * before each server message, so this is a server without a client) */
	bool forwarded = e->action != RQ_SYNTHESISE;
	enum replyq_action action = (enum replyq_action)e->action;
	switch (type) {
	case PqMsg_ParseComplete:
	case PqMsg_BindComplete:
	case PqMsg_CloseComplete:
		*lost = !settle_pop(q, RQ_COMPLETED, settle, arg);
		return action == RQ_SWALLOW ? RQ_SWALLOW : RQ_FORWARD;
	case PqMsg_RowDescription:
	case 'n':   /* NoData */
		if (forwarded && e->type == PqMsg_Describe)
			*lost = !settle_pop(q, RQ_COMPLETED, settle, arg);
		return RQ_FORWARD;
	case PqMsg_CommandComplete:
	case PqMsg_EmptyQueryResponse:
	case 's':   /* PortalSuspended */
		if (forwarded && e->type == PqMsg_Execute &&
		    !settle_pop(q, type == PqMsg_CommandComplete ? RQ_COMPLETED : RQ_FAILED, settle, arg)) {
			*lost = true;    /* the error replaces the Execute's CommandComplete */
			return RQ_SWALLOW;
		}
		return RQ_FORWARD;
	case PqMsg_ReadyForQuery:
		*lost = !settle_pop(q, e->failed ? RQ_FAILED : RQ_COMPLETED, settle, arg);
		return RQ_FORWARD;
	case PqMsg_ErrorResponse:
		if (!forwarded || (e->type != PqMsg_Query && e->type != PqMsg_FunctionCall && e->type != PqMsg_Sync))
			replyq_skip_to_sync(q, settle, arg);
		else
			e->failed = true;     /* its ReadyForQuery still comes */
		return RQ_FORWARD;
	default:
		return RQ_FORWARD;
	}
}

uint8_t replyq_owed_complete(uint8_t type)
{
	switch (type) {
	case PqMsg_Parse:
		return PqMsg_ParseComplete;
	case PqMsg_Bind:
		return PqMsg_BindComplete;
	case PqMsg_Close:
		return PqMsg_CloseComplete;
	default:
		return 0;
	}
}
