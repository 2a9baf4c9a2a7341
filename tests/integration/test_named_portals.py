# SPDX-License-Identifier: PostgreSQL
"""A tagged statement run through a named portal is limited and recorded like one run
through the unnamed portal (docs/ai-middleware.md, "Tags"). Drivers that fetch in
batches (pgjdbc with a fetch size, psycopg's server-side cursors over the protocol)
bind named portals; before this, their Executes skipped admission and made no usage
record, so a subject over its budget went on and its tokens were never stored.
"""

import struct

import pytest

import harness
import pgwire
from test_ai_limits import limited_pooler
from test_ai_usage import tags, usage_count, usage_pooler, wait_for_rows
from test_migrate import fresh_db  # noqa: F401 (fixture)

pytestmark = pytest.mark.skipif(harness.is_pgbouncer(), reason="the AI middleware is pgsluice's own")


def run_in_named_portal(sess, sql, portal=b"p1", statement=b"s1", max_rows=0, close=False):
    """Parse a named statement, Bind it to a named portal, Execute it, Sync; returns the
    message types answered and the ReadyForQuery status, or raises pgwire.ServerError."""
    sess.send(b"P", statement + b"\0" + sql.encode() + b"\0" + struct.pack("!h", 0))
    sess.send(b"B", portal + b"\0" + statement + b"\0" + struct.pack("!hhh", 0, 0, 0))
    sess.send(b"E", portal + b"\0" + struct.pack("!i", max_rows))
    if close:
        sess.send(b"C", b"S" + statement + b"\0")
    sess.send(b"S")
    return [t for t, _ in sess.read_until_ready()]


@pytest.mark.parametrize("pool_mode", ["session", "transaction"])
def test_named_portal_execute_is_admitted_by_the_rate_limit(sluice, pool_mode):
    pooler = limited_pooler(sluice, {"alice": "requests_per_minute=2"}, pool_mode=pool_mode)
    sql = "select 1 /*ai_user='alice'*/"
    with pgwire.login(pooler.host, pooler.port, "app", "app", password="app_pw") as sess:
        for n in range(2):
            assert run_in_named_portal(sess, sql, statement=f"s{n}".encode(), close=True) == \
                ["1", "2", "D", "C", "3"]
        with pytest.raises(pgwire.ServerError) as info:
            run_in_named_portal(sess, sql, statement=b"s2")
        assert info.value.sqlstate == "53400", info.value
        assert 'rate limit exceeded for "alice"' in info.value.message
        assert sess.query("select 2") == [["2"]]        # the connection stays usable


def test_named_portal_of_an_untagged_statement_is_not_limited(sluice):
    pooler = limited_pooler(sluice, {"default": "requests_per_minute=1"}, pool_mode="transaction")
    with pgwire.login(pooler.host, pooler.port, "app", "app", password="app_pw") as sess:
        for n in range(3):
            assert run_in_named_portal(sess, "select 1", statement=f"s{n}".encode()) == \
                ["1", "2", "D", "C"]


def test_named_portal_fetched_in_parts_inside_a_transaction_is_admitted(sluice):
    """pgjdbc's fetch size: BEGIN, Bind a named portal, Execute it with a row limit
    several times across Syncs. Every Execute counts as a request, as with the unnamed
    portal; the portal is forgotten when the transaction ends."""
    pooler = limited_pooler(sluice, {"alice": "requests_per_minute=2"}, pool_mode="transaction")
    sql = "select g from generate_series(1, 5) g /*ai_user='alice'*/"
    with pgwire.login(pooler.host, pooler.port, "app", "app", password="app_pw") as sess:
        sess.query("BEGIN")
        assert run_in_named_portal(sess, sql, max_rows=2) == ["1", "2", "D", "D", "s"]
        sess.send(b"E", b"p1\0" + struct.pack("!i", 2))
        sess.send(b"S")
        assert [t for t, _ in sess.read_until_ready()] == ["D", "D", "s"]
        sess.send(b"E", b"p1\0" + struct.pack("!i", 2))
        sess.send(b"S")
        with pytest.raises(pgwire.ServerError) as info:
            sess.read_until_ready()
        assert info.value.sqlstate == "53400", info.value
        sess.query("ROLLBACK")


def test_named_portal_execute_makes_its_usage_record(sluice, pg, fresh_db):
    pooler = usage_pooler(sluice, pg, fresh_db)
    pooler.start()
    with pgwire.login(pooler.host, pooler.port, "app", "usage", password="app_pw") as sess:
        sql = f"select 1 {tags(7, subject='nina', model='gpt-4o', tokens_in=1200, tokens_out=30)}"
        assert run_in_named_portal(sess, sql, statement=b"") == ["1", "2", "D", "C"]
    wait_for_rows(pg, fresh_db, 1, where="subject = 'nina'")
    assert usage_count(pg, fresh_db, "subject = 'nina' AND input_tokens = 1200 "
                                     "AND output_tokens = 30") == (1, 1)
