/* SPDX-License-Identifier: PostgreSQL */
/*
 * test_decide.c - ai_decide, the middleware's one door: an unattributed
 * statement is forwarded with nothing riding on it, an untrusted ai_user is
 * refused with 42501, a cache lookup is captured on its miss and answered on
 * its hit, a hit that cannot be written in order goes to the server without
 * a refill, an identical lookup in flight makes a client with no server wait,
 * and a Parse's tags are kept at once or ride on the Parse (deferred).
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cmocka.h>

#include "ai/cache.h"
#include "ai/client_state.h"
#include "ai/context.h"
#include "ai/decide.h"
#include "ai/tags.h"
#include "config.h"
#include "proto.h"
#include "sluice.h"
#include "stmt.h"
#include "util.h"

static struct sluice sl;
static struct ai_session no_session;

static int setup(void **state)
{
	(void)state;
	char path[] = "/tmp/test_decide_XXXXXX";
	int fd = mkstemp(path);
	assert_true(fd >= 0);
	const char ini[] = "[pgsluice]\ntag_trusted_roles = alice\ncache_default_ttl = 60\n";
	assert_int_equal(write(fd, ini, sizeof(ini) - 1), (ssize_t)(sizeof(ini) - 1));
	close(fd);
	char err[256];
	memset(&sl, 0, sizeof(sl));
	sl.cfg = config_load(path, err, sizeof(err));
	unlink(path);
	assert_non_null(sl.cfg);
	sl.cache = cache_new(1 << 20, 64 << 10);
	assert_non_null(sl.cache);
	return 0;
}

static int teardown(void **state)
{
	(void)state;
	cache_free(sl.cache);
	config_free(sl.cfg);
	return 0;
}

/* What the core tells of role user with no server (may wait) or one that may be answered in order. */
static struct ai_context ctx_for(const char *user, bool may_answer, bool may_wait)
{
	static char *no_vars[1];
	return (struct ai_context){ .sl = &sl, .user = user, .database = "app", .session = &no_session,
	                            .cache_on = true, .may_answer = may_answer, .may_wait = may_wait,
	                            .key = { .database = "app", .user = user, .vars = no_vars, .n_vars = 0 } };
}

static struct stmt query(const char *text, struct ai_tags *tags)
{
	char err[TAGS_ERRBUF_SIZE];
	enum tags_result r = tags_parse(text, strlen(text), tags, err, sizeof(err));
	assert_int_not_equal(r, TAGS_INVALID);
	return (struct stmt){ .kind = STMT_QUERY, .text = text, .text_len = strlen(text),
	                      .tags = r == TAGS_OK ? tags : NULL };
}

static void test_unattributed_is_forwarded_bare(void **state)
{
	(void)state;
	struct ai_tags tags;
	struct stmt st = query("SELECT 1", &tags);
	struct ai_context ctx = ctx_for("mallory", true, true);
	struct ai_decision d;
	ai_decide(&ctx, NULL, &st, &d);
	assert_int_equal(d.verdict, AI_FORWARD);
	assert_null(d.usage);
	assert_null(d.capture);
	assert_null(d.answer);
}

static void test_untrusted_ai_user_is_refused(void **state)
{
	(void)state;
	struct ai_tags tags;
	struct stmt st = query("SELECT 1 /*ai_user='bob'*/", &tags);
	struct ai_context ctx = ctx_for("mallory", true, true);
	struct ai_decision d;
	ai_decide(&ctx, NULL, &st, &d);
	assert_int_equal(d.verdict, AI_REFUSE);
	assert_string_equal(d.refusal.sqlstate, "42501");
	assert_null(d.usage);
	assert_null(d.capture);
}

/* The server's answer to the lookup, captured into fill as the relay would, and stored. */
static void answer_fill(struct cache_entry *fill)
{
	struct msgbuf m;
	msg_init(&m);
	msg_begin(&m, PqMsg_RowDescription);
	msg_add_int16(&m, 1);
	msg_add_string(&m, "v");
	msg_add_int32(&m, 0);
	msg_add_int16(&m, 0);
	msg_add_int32(&m, 25);
	msg_add_int16(&m, -1);
	msg_add_int32(&m, -1);
	msg_add_int16(&m, 0);
	msg_end(&m);
	assert_true(cache_fill_rowdesc(sl.cache, fill, m.data, m.len));
	m.len = 0;
	msg_begin(&m, PqMsg_DataRow);
	msg_add_int16(&m, 1);
	msg_add_int32(&m, 2);
	msg_add_bytes(&m, "42", 2);
	msg_end(&m);
	msg_begin(&m, PqMsg_CommandComplete);
	msg_add_string(&m, "SELECT 1");
	msg_end(&m);
	assert_true(cache_fill_rows(sl.cache, fill, m.data, m.len));
	fill->n_rows = 1;
	fill->complete = true;
	msg_free(&m);
	cache_fill_drop(sl.cache, fill, now_usec());
}

static void test_lookup_captures_then_answers(void **state)
{
	(void)state;
	struct ai_tags tags;
	struct stmt st = query("SELECT v FROM t /*ai_cache='lookup',ai_user='alice'*/", &tags);
	struct ai_client *a = ai_client_new(NULL, NULL);
	assert_non_null(a);
	struct ai_context ctx = ctx_for("alice", true, false);
	struct ai_decision d;

	ai_decide(&ctx, a, &st, &d);    /* a miss: forwarded, its answer to be captured */
	assert_int_equal(d.verdict, AI_FORWARD);
	assert_non_null(d.capture);
	assert_null(d.answer);
	answer_fill(d.capture);

	ai_decide(&ctx, a, &st, &d);    /* the same statement: answered from the cache */
	assert_int_equal(d.verdict, AI_ANSWER);
	assert_non_null(d.answer);
	assert_non_null(d.answer->rowdesc);
	assert_int_equal(d.answer->n_rows, 1);
	assert_null(d.capture);
	ai_answered(&ctx, &d);
	assert_null(d.answer);

	ctx.may_answer = false;         /* replies owed before it: to the server, the stored answer kept */
	ai_decide(&ctx, a, &st, &d);
	assert_int_equal(d.verdict, AI_FORWARD);
	assert_null(d.capture);
	assert_null(d.answer);

	ai_client_free(a, sl.cache);
}

static void count_woken(void *arg)
{
	(*(int *)arg)++;
}

static void test_identical_lookup_in_flight_waits(void **state)
{
	(void)state;
	struct ai_tags tags;
	struct stmt st = query("SELECT w FROM t /*ai_cache='lookup',ai_user='alice'*/", &tags);
	int woken = 0;
	struct ai_client *first = ai_client_new(NULL, NULL), *second = ai_client_new(NULL, NULL),
	                 *third = ai_client_new(count_woken, &woken);
	assert_non_null(first);
	assert_non_null(second);
	assert_non_null(third);
	struct ai_context ctx = ctx_for("alice", true, true);
	struct ai_decision d1, d2, d3;
	ai_decide(&ctx, first, &st, &d1);
	assert_int_equal(d1.verdict, AI_FORWARD);
	assert_non_null(d1.capture);

	ai_decide(&ctx, second, &st, &d2);    /* no wake hook: it cannot wait, so it goes to the server */
	assert_int_equal(d2.verdict, AI_FORWARD);
	ai_decision_drop(&ctx, &d2);

	ai_decide(&ctx, third, &st, &d3);
	assert_int_equal(d3.verdict, AI_WAIT);
	assert_int_equal(woken, 0);
	assert_false(ai_client_take_bypass(third));

	ai_decision_drop(&ctx, &d1);    /* the fill ends with nothing stored: the waiter is woken */
	assert_int_equal(woken, 1);
	assert_true(ai_client_take_bypass(third));     /* asked again, it goes to the server */
	assert_false(ai_client_take_bypass(third));
	ai_client_free(first, sl.cache);
	ai_client_free(second, sl.cache);
	ai_client_free(third, sl.cache);
}

static void test_parse_keeps_tags_now_or_deferred(void **state)
{
	(void)state;
	const char *sql = "SELECT $1 /*ai_user='alice',ai_model='gpt-4o'*/";
	struct ai_tags parsed;
	char err[TAGS_ERRBUF_SIZE];
	assert_int_equal(tags_parse(sql, strlen(sql), &parsed, err, sizeof(err)), TAGS_OK);
	struct ai_tags *kept = ai_tags_keep(&parsed);
	assert_non_null(kept);
	struct ai_client *a = ai_client_new(NULL, NULL);
	assert_non_null(a);
	struct ai_context ctx = ctx_for("alice", true, false);
	struct ai_decision d;
	struct stmt st = { .kind = STMT_PARSE, .tags = kept, .name = "s1", .text = sql, .text_len = strlen(sql) };

	ai_decide(&ctx, a, &st, &d);    /* pgsluice's statement names: kept at once */
	assert_int_equal(d.verdict, AI_FORWARD);
	assert_null(d.parsed);
	assert_ptr_equal(ai_statement_tags(a, "s1", NULL), kept);

	st.name = "s2";
	st.deferred = true;             /* session pooling: only from its ParseComplete on */
	ai_decide(&ctx, a, &st, &d);
	assert_int_equal(d.verdict, AI_FORWARD);
	assert_non_null(d.parsed);
	assert_string_equal(d.parsed->name, "s2");
	assert_ptr_equal(d.parsed->tags, kept);
	assert_null(ai_statement_tags(a, "s2", NULL));

	st.tags = NULL;                 /* s1 parsed again untagged: its old tags ride until ParseComplete */
	st.name = "s1";
	struct ai_decision d2;
	ai_decide(&ctx, a, &st, &d2);
	assert_non_null(d2.parsed);
	assert_null(d2.parsed->tags);

	ai_decision_drop(&ctx, &d);
	ai_decision_drop(&ctx, &d2);
	ai_tags_unref(kept);
	ai_client_free(a, sl.cache);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_unattributed_is_forwarded_bare),
		cmocka_unit_test(test_untrusted_ai_user_is_refused),
		cmocka_unit_test(test_lookup_captures_then_answers),
		cmocka_unit_test(test_identical_lookup_in_flight_waits),
		cmocka_unit_test(test_parse_keeps_tags_now_or_deferred),
	};
	return cmocka_run_group_tests(tests, setup, teardown);
}
