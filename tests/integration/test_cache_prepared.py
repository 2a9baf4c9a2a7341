# SPDX-License-Identifier: PostgreSQL
"""A completion-cache hit needs no server, also for drivers that prepare (issue 14, item 8).

psycopg 3 prepares a statement on the server from its 6th execution (prepare_threshold=5):
Parse of a named statement and Sync, then Bind/Describe/Execute/Sync of that name.
docs/ai-middleware.md promises that a hit is answered while PostgreSQL is down; these
tests hold pgsluice to it for prepared statements too:

- with psycopg's defaults, 200 of 200 lookups whose answers are cached are answered
  while PostgreSQL is stopped, by connections made after the stop (so their Parse of the
  named statement is answered by pgsluice);
- a Parse / Describe of the statement / Sync is answered with ParseComplete,
  ParameterDescription and RowDescription, exactly the bytes PostgreSQL sends;
- a statement prepared with unspecified parameter types is described from the cache once
  a server described it (its ParameterDescription is kept);
- node-postgres' named statements (Parse/Bind/Describe/Execute, then Bind/...) are hits;
- a statement answered that way still works when a later miss goes to a server;
- a lookup not in the cache while PostgreSQL is down gets the error it got before.
"""

import psycopg
import pytest

import harness
import pgwire
from test_ai_cache import (ANSWER, SYNC, TABLE, answer, create_cache_table, m_bind, m_describe,
                           m_execute, m_parse, tag, wire_run)

pytestmark = pytest.mark.skipif(harness.is_pgbouncer(), reason="the AI middleware is pgsluice's own")

KEYS = 10
RUNS = 20           # per connection: psycopg prepares at the 6th
CONNECTIONS = 10    # 10 x 20 = 200 lookups


@pytest.fixture
def table(pg):
    if not pg.running:
        pg.start()
    create_cache_table(pg)
    return TABLE


def warm(conn):
    """Every key looked up once through the server (unnamed statements: prepare=False)."""
    for k in range(1, KEYS + 1):
        assert conn.execute(tag(ANSWER), (k,), prepare=False).fetchall() == [(answer(k),)]


def test_200_of_200_prepared_hits_while_postgres_is_stopped(sluice, pg, table):
    """Transaction pooling (a session-pooled client needs its own server to log in)."""
    pooler = sluice(pool_mode="transaction", query_wait_timeout=3)
    with pooler.connect() as conn:
        warm(conn)
    hits = 0
    try:
        pg.stop()
        for _ in range(CONNECTIONS):
            with pooler.connect() as conn:    # psycopg's defaults: prepare_threshold=5
                for i in range(RUNS):
                    k = 1 + i % KEYS
                    # one key over and over, so the 6th execution is of a statement
                    # psycopg then prepares; then the others
                    if conn.execute(tag(ANSWER), (k if i >= 6 else 1,)).fetchall() == \
                            [(answer(k if i >= 6 else 1),)]:
                        hits += 1
                assert conn.info.transaction_status == psycopg.pq.TransactionStatus.IDLE
    finally:
        if not pg.running:
            pg.start()
    print(f"prepared hits while PostgreSQL was stopped: {hits} of {CONNECTIONS * RUNS}")
    assert hits == CONNECTIONS * RUNS


def test_a_prepared_statement_answered_locally_works_on_a_server_later(sluice, pg, table):
    """The Parse was answered by pgsluice; a miss of the same statement is prepared on the
    server lazily and gets PostgreSQL's rows."""
    pooler = sluice(pool_mode="transaction", query_wait_timeout=3)
    with pooler.connect() as conn:
        warm(conn)
    try:
        pg.stop()
        with pooler.connect() as conn:
            for _ in range(8):
                assert conn.execute(tag(ANSWER), (1,)).fetchall() == [(answer(1),)]
            pg.start()
            # a key never looked up: a miss of the prepared statement
            for k in (150, 151, 150):
                assert conn.execute(tag(ANSWER), (k,)).fetchall() == [(answer(k),)]
    finally:
        if not pg.running:
            pg.start()


def test_a_miss_while_postgres_is_stopped_gets_todays_error(sluice, pg, table):
    pooler = sluice(pool_mode="transaction", query_wait_timeout=2)
    with pooler.connect() as conn:
        warm(conn)
    try:
        pg.stop()
        with pooler.connect() as conn:
            for _ in range(7):
                assert conn.execute(tag(ANSWER), (1,)).fetchall() == [(answer(1),)]
            # as before item 8: the client waits for a server, then gets FATAL 08006
            with pytest.raises(psycopg.OperationalError, match="could not connect to server"):
                conn.execute(tag(ANSWER), (99,)).fetchall()
    finally:
        if not pg.running:
            pg.start()


def test_parse_describe_sync_is_answered_as_postgres_does(sluice, pg, table):
    """Parse(name, int4)/Describe(S)/Sync and then Bind/Describe(P)/Execute/Sync of the name:
    the same replies, byte for byte, from PostgreSQL and from pgsluice's cache while
    PostgreSQL is stopped."""
    sql = tag(ANSWER.replace("%s", "$1"))
    first = [m_parse(sql, "s1", (23,)), m_describe("S", "s1"), SYNC]
    then = [m_bind(("3",), "s1"), m_describe("P"), m_execute(), SYNC]
    with pgwire.login(pg.host, pg.port, "app", "app", password=harness.APP_PASSWORD) as sess:
        expect_first = wire_run(sess, first)
        expect_then = wire_run(sess, then)
    pooler = sluice(pool_mode="transaction", query_wait_timeout=2)
    with pgwire.login(pooler.host, pooler.port, "app", "app", password=harness.APP_PASSWORD) as sess:
        assert wire_run(sess, first) == expect_first
        assert wire_run(sess, then) == expect_then    # the fill
    assert [t for t, _ in expect_first] == ["1", "t", "T", "Z"], expect_first
    try:
        pg.stop()
        with pgwire.login(pooler.host, pooler.port, "app", "app", password=harness.APP_PASSWORD) as sess:
            assert wire_run(sess, first) == expect_first
            assert wire_run(sess, then) == expect_then
    finally:
        if not pg.running:
            pg.start()


def test_node_postgres_named_statements_are_hits_while_postgres_is_stopped(sluice, pg, table):
    """node-postgres' named query ({name, text, values}): Parse(name, no types)/Bind/
    Describe(P)/Execute/Sync the first time on a connection, Bind/Describe(P)/Execute/Sync
    after. Sent by hand (node-postgres is not installed in CI), byte for byte as PostgreSQL
    answers them."""
    sql = tag(ANSWER.replace("%s", "$1"))
    first = [m_parse(sql, "lookup"), m_bind(("4",), "lookup"), m_describe("P"), m_execute(), SYNC]
    again = [m_bind(("4",), "lookup"), m_describe("P"), m_execute(), SYNC]
    with pgwire.login(pg.host, pg.port, "app", "app", password=harness.APP_PASSWORD) as sess:
        expect_first = wire_run(sess, first)
        expect_again = wire_run(sess, again)
    pooler = sluice(pool_mode="transaction", query_wait_timeout=2)
    with pgwire.login(pooler.host, pooler.port, "app", "app", password=harness.APP_PASSWORD) as sess:
        assert wire_run(sess, first) == expect_first    # the fill
    try:
        pg.stop()
        for _ in range(3):
            with pgwire.login(pooler.host, pooler.port, "app", "app",
                              password=harness.APP_PASSWORD) as sess:
                assert wire_run(sess, first) == expect_first
                for _ in range(5):
                    assert wire_run(sess, again) == expect_again
    finally:
        if not pg.running:
            pg.start()


def test_a_describe_of_a_statement_without_types_is_answered_once_postgres_described_it(
        sluice, pg, table):
    """Parse with an unspecified parameter type (asyncpg, JDBC): pgsluice cannot know the
    type PostgreSQL infers, so it keeps the ParameterDescription a server sent for the first
    Describe of the statement; later ones are answered from the cache, also with PostgreSQL
    stopped."""
    sql = tag(ANSWER.replace("%s", "$1"))
    prepare = [m_parse(sql, "u1"), m_describe("S", "u1"), SYNC]
    run = [m_bind(("6",), "u1"), m_describe("P"), m_execute(), SYNC]
    with pgwire.login(pg.host, pg.port, "app", "app", password=harness.APP_PASSWORD) as sess:
        expect_prepare = wire_run(sess, prepare)
        expect_run = wire_run(sess, run)
    assert [t for t, _ in expect_prepare] == ["1", "t", "T", "Z"], expect_prepare
    pooler = sluice(pool_mode="transaction", query_wait_timeout=2)
    with pgwire.login(pooler.host, pooler.port, "app", "app", password=harness.APP_PASSWORD) as sess:
        assert wire_run(sess, prepare) == expect_prepare    # described by PostgreSQL
        assert wire_run(sess, run) == expect_run            # the fill
    try:
        pg.stop()
        with pgwire.login(pooler.host, pooler.port, "app", "app", password=harness.APP_PASSWORD) as sess:
            assert wire_run(sess, prepare) == expect_prepare
            assert wire_run(sess, run) == expect_run
    finally:
        if not pg.running:
            pg.start()
