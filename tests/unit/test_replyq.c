/* SPDX-License-Identifier: PostgreSQL */
/* test_replyq.c - the reply queue (replyq.c): each action (forwarded,
 * swallowed, synthesised), the outcome each settled entry gets, the ring
 * growing while wrapped, and the skip to Sync after an error. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <stdlib.h>
#include <string.h>

#include "proto.h"
#include "replyq.h"

/* What the settle callback saw, in order. */
struct seen {
	uint8_t type[64];
	enum replyq_outcome outcome[64];
	int n;
	bool lose;    /* answer "usage record lost" */
};

static bool settle(void *arg, struct replyq_entry *e, enum replyq_outcome o)
{
	struct seen *s = arg;
	assert_true(s->n < 64);
	s->type[s->n] = e->type;
	s->outcome[s->n] = o;
	s->n++;
	return !s->lose;
}

/* A rider for entries under test: settle is called only for an entry that carries one. */
static int rider;

/* Note a request and put a rider on its entry (when it got one). */
static bool note(struct replyq *q, uint8_t type)
{
	uint32_t n = q->n;
	bool ok = replyq_note_request(q, type);
	if (q->n > n)
		replyq_tail(q)->token = (struct ai_token *)&rider;
	return ok;
}

static bool push(struct replyq *q, uint8_t type, enum replyq_action action)
{
	bool ok = replyq_push(q, type, action, NULL);
	if (ok)
		replyq_tail(q)->token = (struct ai_token *)&rider;
	return ok;
}

static enum replyq_action reply(struct replyq *q, uint8_t type, struct seen *s)
{
	bool lost;
	return replyq_on_reply(q, type, settle, s, &lost);
}

static void test_simple_query_pops_at_ready_for_query(void **state)
{
	(void)state;
	struct replyq q = { 0 };
	struct seen s = { 0 };
	assert_true(note(&q, PqMsg_Query));
	assert_int_equal(q.n, 1);
	assert_int_equal(replyq_head(&q)->action, RQ_FORWARD);
	assert_int_equal(reply(&q, PqMsg_RowDescription, &s), RQ_FORWARD);
	assert_int_equal(reply(&q, PqMsg_DataRow, &s), RQ_FORWARD);
	assert_int_equal(reply(&q, PqMsg_CommandComplete, &s), RQ_FORWARD);
	assert_int_equal(q.n, 1);    /* a Query ends at ReadyForQuery */
	assert_int_equal(reply(&q, PqMsg_ReadyForQuery, &s), RQ_FORWARD);
	assert_int_equal(q.n, 0);
	assert_int_equal(s.n, 1);
	assert_int_equal(s.type[0], PqMsg_Query);
	assert_int_equal(s.outcome[0], RQ_COMPLETED);
	replyq_free(&q);
}

static void test_failed_query_settles_failed(void **state)
{
	(void)state;
	struct replyq q = { 0 };
	struct seen s = { 0 };
	note(&q, PqMsg_Query);
	assert_int_equal(reply(&q, PqMsg_ErrorResponse, &s), RQ_FORWARD);
	assert_true(replyq_head(&q)->failed);
	assert_int_equal(s.n, 0);
	reply(&q, PqMsg_ReadyForQuery, &s);
	assert_int_equal(s.n, 1);
	assert_int_equal(s.outcome[0], RQ_FAILED);
	replyq_free(&q);
}

static void test_extended_batch_forwarded(void **state)
{
	(void)state;
	struct replyq q = { 0 };
	struct seen s = { 0 };
	const uint8_t sent[] = { PqMsg_Parse, PqMsg_Bind, PqMsg_Describe, PqMsg_Execute, PqMsg_Sync };
	for (size_t i = 0; i < sizeof(sent); i++)
		note(&q, sent[i]);
	note(&q, PqMsg_Flush);    /* no reply: no entry */
	assert_int_equal(q.n, 5);
	assert_int_equal(reply(&q, PqMsg_ParseComplete, &s), RQ_FORWARD);
	assert_int_equal(reply(&q, PqMsg_BindComplete, &s), RQ_FORWARD);
	assert_int_equal(reply(&q, PqMsg_RowDescription, &s), RQ_FORWARD);
	assert_int_equal(reply(&q, PqMsg_DataRow, &s), RQ_FORWARD);
	assert_int_equal(reply(&q, PqMsg_CommandComplete, &s), RQ_FORWARD);
	assert_int_equal(reply(&q, PqMsg_ReadyForQuery, &s), RQ_FORWARD);
	assert_int_equal(q.n, 0);
	assert_int_equal(s.n, 5);
	for (int i = 0; i < 5; i++) {
		assert_int_equal(s.type[i], sent[i]);
		assert_int_equal(s.outcome[i], RQ_COMPLETED);
	}
	replyq_free(&q);
}

static void test_injected_replies_are_swallowed(void **state)
{
	(void)state;
	struct replyq q = { 0 };
	struct seen s = { 0 };
	push(&q, PqMsg_Close, RQ_SWALLOW);
	push(&q, PqMsg_Parse, RQ_SWALLOW);
	push(&q, PqMsg_Bind, RQ_SWALLOW);
	note(&q, PqMsg_Execute);
	assert_int_equal(reply(&q, PqMsg_CloseComplete, &s), RQ_SWALLOW);
	assert_int_equal(reply(&q, PqMsg_ParseComplete, &s), RQ_SWALLOW);
	assert_int_equal(reply(&q, PqMsg_BindComplete, &s), RQ_SWALLOW);
	assert_int_equal(reply(&q, PqMsg_CommandComplete, &s), RQ_FORWARD);
	assert_int_equal(q.n, 0);
	assert_int_equal(s.n, 4);
	replyq_free(&q);
}

static void test_synthesised_entry_is_owed_and_not_popped_by_server_replies(void **state)
{
	(void)state;
	struct replyq q = { 0 };
	struct seen s = { 0 };
	push(&q, PqMsg_Describe, RQ_SYNTHESISE);
	assert_true(replyq_owes_head(&q));
	/* a RowDescription or CommandComplete of the server answers no owed entry */
	assert_int_equal(reply(&q, PqMsg_RowDescription, &s), RQ_FORWARD);
	push(&q, PqMsg_Execute, RQ_SYNTHESISE);
	assert_int_equal(reply(&q, PqMsg_CommandComplete, &s), RQ_FORWARD);
	assert_int_equal(q.n, 2);
	assert_int_equal(s.n, 0);
	assert_int_equal(replyq_owed_complete(PqMsg_Parse), PqMsg_ParseComplete);
	assert_int_equal(replyq_owed_complete(PqMsg_Bind), PqMsg_BindComplete);
	assert_int_equal(replyq_owed_complete(PqMsg_Close), PqMsg_CloseComplete);
	assert_int_equal(replyq_owed_complete(PqMsg_Execute), 0);
	/* the relay writes the owed reply, settles and pops it */
	settle(&s, replyq_head(&q), RQ_COMPLETED);
	replyq_pop(&q);
	assert_true(replyq_owes_head(&q));
	replyq_clear(&q, settle, &s);
	assert_int_equal(q.n, 0);
	assert_false(replyq_owes_head(&q));
	assert_int_equal(s.outcome[1], RQ_DROPPED);
	replyq_free(&q);
}

static void test_error_skips_to_sync(void **state)
{
	(void)state;
	struct replyq q = { 0 };
	struct seen s = { 0 };
	note(&q, PqMsg_Parse);
	note(&q, PqMsg_Bind);
	push(&q, PqMsg_Execute, RQ_SYNTHESISE);
	note(&q, PqMsg_Sync);
	assert_int_equal(reply(&q, PqMsg_ErrorResponse, &s), RQ_FORWARD);
	assert_int_equal(q.n, 1);
	assert_int_equal(replyq_head(&q)->type, PqMsg_Sync);
	assert_int_equal(s.n, 3);
	for (int i = 0; i < 3; i++)
		assert_int_equal(s.outcome[i], RQ_SKIPPED);
	assert_false(q.skipping);
	reply(&q, PqMsg_ReadyForQuery, &s);
	assert_int_equal(q.n, 0);
	replyq_free(&q);
}

static void test_error_before_sync_skips_later_messages(void **state)
{
	(void)state;
	struct replyq q = { 0 };
	struct seen s = { 0 };
	note(&q, PqMsg_Parse);
	reply(&q, PqMsg_ErrorResponse, &s);
	assert_true(q.skipping);
	/* the server skips these: they get no entry */
	note(&q, PqMsg_Bind);
	note(&q, PqMsg_Execute);
	assert_int_equal(q.n, 0);
	note(&q, PqMsg_Sync);
	assert_false(q.skipping);
	assert_int_equal(q.n, 1);
	replyq_free(&q);
}

static void test_lost_usage_record(void **state)
{
	(void)state;
	struct replyq q = { 0 };
	struct seen s = { .lose = true };
	bool lost;
	note(&q, PqMsg_Execute);
	/* the error replaces the Execute's CommandComplete */
	assert_int_equal(replyq_on_reply(&q, PqMsg_CommandComplete, settle, &s, &lost), RQ_SWALLOW);
	assert_true(lost);
	note(&q, PqMsg_Query);
	assert_int_equal(replyq_on_reply(&q, PqMsg_ReadyForQuery, settle, &s, &lost), RQ_FORWARD);
	assert_true(lost);
	note(&q, PqMsg_Execute);
	s.lose = false;
	assert_int_equal(replyq_on_reply(&q, 's', settle, &s, &lost), RQ_FORWARD);    /* PortalSuspended */
	assert_false(lost);
	assert_int_equal(s.outcome[2], RQ_FAILED);
	replyq_free(&q);
}

static void test_ring_grows_while_wrapped(void **state)
{
	(void)state;
	struct replyq q = { 0 };
	struct seen s = { 0 };
	/* wrap the head: 10 in, 10 out, then 40 in (past the first 16 slots) */
	for (int i = 0; i < 10; i++)
		note(&q, PqMsg_Query);
	for (int i = 0; i < 10; i++)
		reply(&q, PqMsg_ReadyForQuery, &s);
	assert_int_equal(q.head, 10);
	for (int i = 0; i < 40; i++) {
		assert_true(push(&q, i % 2 ? PqMsg_Bind : PqMsg_Parse, RQ_FORWARD));
		replyq_tail(&q)->row_pos = (uint32_t)i;
	}
	assert_int_equal(q.n, 40);
	assert_true(q.cap >= 40);
	assert_int_equal(q.cap & (q.cap - 1), 0);
	for (uint32_t i = 0; i < 40; i++)
		assert_int_equal(replyq_at(&q, i)->row_pos, i);
	for (uint32_t i = 0; i < 40; i++) {
		assert_int_equal(replyq_head(&q)->row_pos, i);
		reply(&q, i % 2 ? PqMsg_BindComplete : PqMsg_ParseComplete, &s);
	}
	assert_null(replyq_head(&q));
	assert_null(replyq_tail(&q));
	replyq_free(&q);
}

/* The replies pgsluice owes the client are told from the head's action alone, wherever the ring starts. */
static void test_owes_head(void **state)
{
	(void)state;
	struct replyq_entry items[4];
	memset(items, 0, sizeof(items));
	struct replyq q = { .items = items, .head = 0, .n = 0, .cap = 4 };
	assert_false(replyq_owes_head(&q));      /* empty */
	static const uint8_t types[] = { PqMsg_Query, PqMsg_Parse, PqMsg_Bind, PqMsg_Describe,
	                                 PqMsg_Execute, PqMsg_Sync, PqMsg_Close, PqMsg_FunctionCall };
	for (uint32_t head = 0; head < 4; head++) {
		q.head = head;
		q.n = 2;
		for (size_t i = 0; i < sizeof(types); i++) {
			items[head].type = types[i];
			items[head].action = RQ_SYNTHESISE;
			assert_true(replyq_owes_head(&q));
			items[head].action = RQ_FORWARD;
			assert_false(replyq_owes_head(&q));
			items[head].action = RQ_SWALLOW;
			assert_false(replyq_owes_head(&q));
		}
	}
}

static void test_entry_without_rider_pops_without_settle(void **state)
{
	(void)state;
	struct replyq q = { 0 };
	struct seen s = { 0 };
	replyq_note_request(&q, PqMsg_Query);    /* an untagged statement: nothing rides on it */
	note(&q, PqMsg_Query);
	reply(&q, PqMsg_ReadyForQuery, &s);
	assert_int_equal(s.n, 0);
	assert_int_equal(q.n, 1);
	reply(&q, PqMsg_ReadyForQuery, &s);
	assert_int_equal(s.n, 1);
	assert_int_equal(q.n, 0);
	replyq_free(&q);
}

/* replyq_completes (server.c's batch relay) pops a forwarded entry exactly when replyq_on_reply does. */
static void test_completes_agrees_with_on_reply(void **state)
{
	(void)state;
	static const uint8_t requests[] = { PqMsg_Query, PqMsg_Parse, PqMsg_Bind, PqMsg_Describe, PqMsg_Execute,
	                                    PqMsg_Close, PqMsg_Sync, PqMsg_FunctionCall };
	static const uint8_t replies[] = { PqMsg_ParseComplete, PqMsg_BindComplete, PqMsg_CloseComplete,
	                                   PqMsg_RowDescription, 'n', 't', PqMsg_DataRow, PqMsg_CommandComplete,
	                                   PqMsg_EmptyQueryResponse, 's', PqMsg_ReadyForQuery, PqMsg_NoticeResponse,
	                                   PqMsg_ParameterStatus, 'A', 'G', 'H', 'd', 'c' };
	for (size_t i = 0; i < sizeof(requests); i++)
		for (size_t j = 0; j < sizeof(replies); j++) {
			struct replyq q = { 0 };
			struct seen s = { 0 };
			assert_true(replyq_push(&q, requests[i], RQ_FORWARD, NULL));
			bool completes = replyq_completes(replyq_head(&q), replies[j]);
			assert_int_equal(reply(&q, replies[j], &s), RQ_FORWARD);
			if (completes != (q.n == 0))
				fail_msg("request %c, reply %c: completes %d, popped %d", requests[i], replies[j],
				         (int)completes, (int)(q.n == 0));
			replyq_free(&q);
		}
}

static void test_entry_is_small(void **state)
{
	(void)state;
	assert_true(sizeof(struct replyq_entry) <= 56);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_simple_query_pops_at_ready_for_query),
		cmocka_unit_test(test_failed_query_settles_failed),
		cmocka_unit_test(test_extended_batch_forwarded),
		cmocka_unit_test(test_injected_replies_are_swallowed),
		cmocka_unit_test(test_synthesised_entry_is_owed_and_not_popped_by_server_replies),
		cmocka_unit_test(test_error_skips_to_sync),
		cmocka_unit_test(test_error_before_sync_skips_later_messages),
		cmocka_unit_test(test_lost_usage_record),
		cmocka_unit_test(test_ring_grows_while_wrapped),
		cmocka_unit_test(test_entry_without_rider_pops_without_settle),
		cmocka_unit_test(test_owes_head),
		cmocka_unit_test(test_entry_is_small),
		cmocka_unit_test(test_completes_agrees_with_on_reply),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
