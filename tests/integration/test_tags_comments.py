# SPDX-License-Identifier: PostgreSQL
"""Tags from every comment of a statement (docs/ai-middleware.md, "Writing tags").

ORMs put their sqlcommenter comment first (knex .comment(), drizzle .comment()) and
OpenTelemetry's instrumentation-pg appends /*traceparent='...'*/ last: pgsluice merges
the keys of all comments, the last value of a key winning.
"""

import pytest

import harness
from test_ai_usage import connect, usage_pooler, wait_for_rows
from test_migrate import fresh_db  # noqa: F401 (fixture)

pytestmark = pytest.mark.skipif(harness.is_pgbouncer(), reason="the AI middleware is pgsluice's own")

TRACEPARENT = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"


def test_orm_comment_first_and_traceparent_last_both_count(sluice, pg, fresh_db):
    """A knex-style comment with the ai_ tags first, OpenTelemetry's traceparent comment
    last, both on the simple and the extended protocol: one row each, with the subject,
    the tokens and the trace id."""
    pooler = usage_pooler(sluice, pg, fresh_db)
    pooler.start()
    with connect(pooler) as conn:
        conn.execute("/* ai_user='kim',ai_model='gpt-4o',ai_tokens_in='12',ai_tokens_out='3' */ "
                     f"select 1 /*traceparent='{TRACEPARENT}'*/")
        conn.execute("/* ai_user='kim',ai_model='gpt-4o',ai_tokens_in='20',ai_tokens_out='5' */ "
                     f"select %s::int /*traceparent='{TRACEPARENT}'*/", (1,))
    wait_for_rows(pg, fresh_db, 2)
    assert pg.query("SELECT subject, model, input_tokens, output_tokens, trace_id FROM sluice.llm_usage"
                    " ORDER BY input_tokens", dbname=fresh_db) == [
        ("kim", "gpt-4o", 12, 3, "0af7651916cd43dd8448eb211c80319c"),
        ("kim", "gpt-4o", 20, 5, "0af7651916cd43dd8448eb211c80319c")]


def test_a_key_given_twice_takes_its_last_value(sluice, pg, fresh_db):
    """ai_user in a leading comment and again in a trailing one: the trailing one is charged;
    a plain comment between them changes nothing."""
    pooler = usage_pooler(sluice, pg, fresh_db)
    pooler.start()
    with connect(pooler) as conn:
        conn.execute("/*ai_user='lee',ai_tokens_in='7'*/ select 1 /* fetch the answer */ "
                     "/*ai_user='max'*/")
    wait_for_rows(pg, fresh_db, 1)
    assert pg.query("SELECT subject, input_tokens FROM sluice.llm_usage", dbname=fresh_db) == [("max", 7)]
