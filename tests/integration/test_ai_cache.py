# SPDX-License-Identifier: PostgreSQL
"""The completion cache (docs/ai-middleware.md, issue 7).

An AI application looks a stored completion up before paying for an LLM call:
`SELECT answer FROM llm_cache WHERE k = $1 /*ai_cache='lookup'*/`. pgsluice
answers a repeated lookup itself, without a server round trip. What these tests
hold pgsluice to, as a user of a PostgreSQL driver sees it:

- a lookup reaches PostgreSQL once; later identical lookups are answered by
  pgsluice with exactly what PostgreSQL sent (same replies on the wire, same
  Python values in psycopg), under the simple and the extended protocol
  (unnamed and named statements, binary results, pipelines), in transaction
  and session pooling;
- the key is the database, the login role, the statement text without its tag
  comment, the parameters (values, formats, types) and the result formats: a
  lookup never gets an answer made for another key, nor one written for another
  client_encoding or TimeZone, nor one of a statement PostgreSQL no longer has;
- errors and empty results are never stored, nor results over
  cache_max_entry_size; entries live ai_ttl (else cache_default_ttl) seconds;
  memory stays under cache_max_memory (LRU); 0 turns the cache off;
  ai_cache='refresh' always runs and replaces the entry;
- identical misses arriving together run once on PostgreSQL, and a waiter is
  not harmed by the failure, cancellation or departure of the client it waits for;
- a hit outside a transaction block needs no server (it is answered even with
  PostgreSQL stopped); inside a block the block goes on (a failed block gets
  PostgreSQL's own 25P02);
- SHOW CACHE, CACHE FLUSH and /metrics report and control it; every hit is a
  usage row with cached = true.

How often a statement ran on PostgreSQL is read from pg_stat_statements
(preloaded by the harness): the calls of the statements that name the table
ai_cache_t, in database app, run by the pooler's roles (not the superuser the
tests set up and check with). It counts completed executions only, and inside
a transaction block an unnamed portal's execution is counted when the portal
goes, so counts are read outside transaction blocks.
"""

import hashlib
import socket
import struct
import threading
import time
from datetime import datetime, timezone
from decimal import Decimal

import psycopg
import pytest
from psycopg import errors
from psycopg.pq import TransactionStatus
from psycopg.types.numeric import Int4, Int8

import harness
import pgwire
from harness import wait_until
from test_admin import console, scrape, show, value
from test_ai_limits import limited_pooler
from test_ai_usage import connect as usage_connect
from test_ai_usage import usage_count, usage_pooler, wait_for_rows
from test_migrate import fresh_db  # noqa: F401 (fixture)

pytestmark = pytest.mark.skipif(harness.is_pgbouncer(), reason="the AI middleware is pgsluice's own")

TABLE = "ai_cache_t"
ROWS = 200                      # k = 1 .. 200; g = k / 10 groups them by ten
BIG_LEN = 2000                  # bytes of column big: one entry of about 2 kB

ANSWER = f"SELECT answer FROM {TABLE} WHERE k = %s"
TYPED = f"SELECT k, i8, answer, n, ts, b, j, nul FROM {TABLE} WHERE k = %s"
GROUP = f"SELECT k, answer FROM {TABLE} WHERE g = %s ORDER BY k"
BIG = f"SELECT big FROM {TABLE} WHERE k = %s"
SLOW = f"SELECT answer FROM {TABLE}, pg_sleep(0.5) WHERE k = %s"


# -- helpers -------------------------------------------------------------------------
def tag(sql, mode="lookup", **tags):
    """sql with a sqlcommenter comment at its end: tag(ANSWER, ai_ttl=2)."""
    items = {"ai_cache": mode, **tags}
    return f"{sql} /*" + ",".join(f"{k}='{v}'" for k, v in items.items()) + "*/"


def answer(k):
    return f"answer-{k}"


def big(k):
    return chr(65 + k % 26) * BIG_LEN


def create_cache_table(pg, dbname="app", prefix="answer"):
    """ai_cache_t with ROWS rows of several types, readable and writable by app."""
    pg.query(f"DROP TABLE IF EXISTS {TABLE}", dbname=dbname)
    pg.query(f"""CREATE TABLE {TABLE} (
                   k int PRIMARY KEY, g int, answer text, i8 bigint, n numeric, ts timestamptz,
                   b bytea, j jsonb, nul text, big text, d int)""", dbname=dbname)
    pg.query(f"""INSERT INTO {TABLE}
                 SELECT k, k / 10, '{prefix}-' || k, k * 10000000000, k + 0.125,
                        '2024-01-01 00:00:00+00'::timestamptz + k * interval '1 hour 1.5 s',
                        decode(md5(k::text), 'hex'),
                        jsonb_build_object('k', k, 'l', jsonb_build_array('a', k)),
                        NULL, repeat(chr(65 + k % 26), {BIG_LEN}), 2
                 FROM generate_series(1, {ROWS}) k""", dbname=dbname)
    pg.query(f"GRANT ALL ON {TABLE} TO app", dbname=dbname)


@pytest.fixture
def table(pg):
    """A fresh ai_cache_t in database app, and pg_stat_statements emptied."""
    if not pg.running:
        pg.start()
    create_cache_table(pg)
    pg.query("CREATE EXTENSION IF NOT EXISTS pg_stat_statements")
    pg.query("SELECT pg_stat_statements_reset()")
    return TABLE


def executions(pg, dbnames=("app",)):
    """Completed executions on PostgreSQL of the SELECTs naming ai_cache_t in dbnames, by
    anyone but the superuser (so by the pooler's server connections, and the tests' own
    direct sessions as app)."""
    return pg.query(
        "SELECT coalesce(sum(s.calls), 0)::int FROM pg_stat_statements s"
        " JOIN pg_database d ON d.oid = s.dbid"
        " WHERE d.datname = ANY(%s)"
        " AND s.userid <> (SELECT oid FROM pg_roles WHERE rolname = current_user)"
        " AND s.query LIKE %s AND ltrim(s.query) ILIKE 'select%%'",
        (list(dbnames), f"%{TABLE}%"))[0][0]


def rows_of(conn, sql, params=None, **kw):
    return conn.execute(sql, params, **kw).fetchall()


def cache_row(pooler):
    """SHOW CACHE's one row, as a dict."""
    with console(pooler) as admin:
        rows = show(admin, "CACHE")
    assert len(rows) == 1, rows
    return rows[0]


def direct(pg, sql, params=None, binary=False):
    """(rows, [(name, type oid)], [result formats], status) of sql run on PostgreSQL directly
    (as the superuser: not counted by executions())."""
    with pg.connect() as conn:
        cur = conn.execute(sql, params, binary=binary)
        return (cur.fetchall(), [(d.name, d.type_code) for d in cur.description],
                [cur.pgresult.fformat(i) for i in range(cur.pgresult.nfields)], cur.statusmessage)


def assert_hit_rate(row):
    """hit_rate = hits / (hits + misses) (docs/admin.md)."""
    assert abs(float(row["hit_rate"]) - row["hits"] / (row["hits"] + row["misses"])) < 0.001, row


# -- the wire: messages built by hand, sent alike to pgsluice and to PostgreSQL ---------
def _cstr(s):
    return (s.encode() if isinstance(s, str) else s) + b"\0"


def m_query(sql):
    return (b"Q", _cstr(sql))


def m_parse(sql, name="", types=()):
    return (b"P", _cstr(name) + _cstr(sql) + struct.pack("!h", len(types))
            + b"".join(struct.pack("!I", t) for t in types))


def m_bind(params=(), stmt="", portal="", result_formats=()):
    body = _cstr(portal) + _cstr(stmt) + struct.pack("!h", 0) + struct.pack("!h", len(params))
    for p in params:
        if p is None:
            body += struct.pack("!i", -1)
        else:
            data = p.encode() if isinstance(p, str) else p
            body += struct.pack("!i", len(data)) + data
    body += struct.pack("!h", len(result_formats))
    body += b"".join(struct.pack("!h", f) for f in result_formats)
    return (b"B", body)


def m_describe(kind, name=""):
    return (b"D", kind.encode() + _cstr(name))


def m_execute(portal="", max_rows=0):
    return (b"E", _cstr(portal) + struct.pack("!i", max_rows))


SYNC = (b"S", b"")


def wire_run(sess, messages, pause=None):
    """Send messages in one write, as libpq does (pause: one write per message, that many
    seconds apart, so that they arrive one by one); every reply up to and including
    ReadyForQuery, as (type, body)."""
    if pause is None:
        sess.sock.sendall(b"".join(t + struct.pack("!I", len(b) + 4) + b for t, b in messages))
    else:
        for msg_type, body in messages:
            sess.send(msg_type, body)
            time.sleep(pause)
    replies = []
    while True:
        msg_type, body = sess.read()
        replies.append((msg_type, body))
        if msg_type == "Z":
            return replies


def describe_replies(replies):
    return [t + (f"({b.decode()})" if t == "Z" else "") for t, b in replies]


# -- a lookup reaches PostgreSQL once ---------------------------------------------------
@pytest.mark.parametrize("pool_mode", ["transaction", "session"])
def test_twenty_identical_lookups_reach_postgres_once(sluice, pg, table, pool_mode):
    """psycopg's defaults: five runs with the unnamed statement, then a prepared one."""
    pooler = sluice(pool_mode=pool_mode)
    with pooler.connect() as conn:
        for _ in range(20):
            assert rows_of(conn, tag(ANSWER), (7,)) == [(answer(7),)]
    assert executions(pg) == 1
    row = cache_row(pooler)
    assert (row["entries"], row["hits"], row["misses"], row["evictions"]) == (1, 19, 1, 0), row


def test_lookups_from_several_connections_share_the_entry(sluice, pg, table):
    pooler = sluice(pool_mode="transaction")
    for _ in range(5):
        with pooler.connect() as conn:
            assert rows_of(conn, tag(ANSWER), (7,), prepare=False) == [(answer(7),)]
    assert executions(pg) == 1


def test_a_different_parameter_value_is_a_different_entry(sluice, pg, table):
    pooler = sluice(pool_mode="transaction")
    with pooler.connect() as conn:
        for _ in range(3):
            for k in (1, 2, 3):
                assert rows_of(conn, tag(ANSWER), (k,), prepare=False) == [(answer(k),)]
    assert executions(pg) == 3


def test_a_multi_row_result_is_replayed_whole_and_in_order(sluice, pg, table):
    pooler = sluice(pool_mode="transaction")
    expect = [(k, answer(k)) for k in range(10, 20)]
    with pooler.connect() as conn:
        for _ in range(3):
            cur = conn.execute(tag(GROUP), (1,), prepare=False)
            assert cur.fetchall() == expect
            assert cur.statusmessage == "SELECT 10" and cur.rowcount == 10
    assert executions(pg) == 1


def test_statements_without_ai_cache_lookup_always_run(sluice, pg, table):
    """Untagged, and tagged without ai_cache: every run reaches PostgreSQL, even when a lookup
    of the very same statement text is in the cache."""
    pooler = sluice(pool_mode="transaction")
    with pooler.connect() as conn:
        assert rows_of(conn, tag(ANSWER), (1,), prepare=False) == [(answer(1),)]
        for _ in range(3):
            assert rows_of(conn, ANSWER, (1,), prepare=False) == [(answer(1),)]
            assert rows_of(conn, f"{ANSWER} /*ai_user='alice'*/", (1,), prepare=False) == \
                [(answer(1),)]
            assert rows_of(conn, f"SELECT answer FROM {TABLE} WHERE k = 1", prepare=False) == \
                [(answer(1),)]
    assert executions(pg) == 1 + 9


def test_the_tag_comment_is_not_part_of_the_key(sluice, pg, table):
    """The same statement with other tags (user, model, ttl) is the same entry."""
    pooler = sluice(pool_mode="transaction")
    with pooler.connect() as conn:
        assert rows_of(conn, tag(ANSWER, ai_user="alice"), (1,), prepare=False) == [(answer(1),)]
        assert rows_of(conn, tag(ANSWER, ai_user="bob", ai_model="gpt-4o"), (1,),
                       prepare=False) == [(answer(1),)]
        assert rows_of(conn, tag(ANSWER, ai_ttl=60), (1,), prepare=False) == [(answer(1),)]
    assert executions(pg) == 1


# -- what a hit looks like ----------------------------------------------------------------
PROTOCOLS = {
    # name: (how psycopg sends it, binary results)
    "simple": ("simple", False),
    "unnamed": ("unnamed", False),
    "unnamed-binary": ("unnamed", True),
    "named": ("named", False),
    "named-binary": ("named", True),
}


def run_typed(conn, k, protocol, binary):
    if protocol == "simple":
        cur = psycopg.ClientCursor(conn).execute(tag(TYPED), (k,))
    else:
        cur = conn.execute(tag(TYPED), (k,), binary=binary, prepare=protocol == "named")
    return (cur.fetchall(), [(d.name, d.type_code) for d in cur.description],
            [cur.pgresult.fformat(i) for i in range(cur.pgresult.nfields)], cur.statusmessage)


@pytest.mark.parametrize("protocol", sorted(PROTOCOLS))
def test_a_hit_decodes_to_the_same_values_as_a_direct_query(sluice, pg, table, protocol):
    """int4, int8, text, numeric, timestamptz, bytea, jsonb and NULL; the same column types
    and result formats, the same command tag."""
    how, binary = PROTOCOLS[protocol]
    expect = {k: direct(pg, TYPED, (k,), binary=binary) for k in (5, 6)}
    assert expect[5][0] == [(5, 50000000000, answer(5), Decimal("5.125"),
                             datetime(2024, 1, 1, 5, 0, 7, 500000, tzinfo=timezone.utc),
                             hashlib.md5(b"5").digest(), {"k": 5, "l": ["a", 5]}, None)]
    pooler = sluice(pool_mode="transaction")
    with pooler.connect() as conn:
        for _ in range(3):
            for k in (5, 6):
                assert run_typed(conn, k, how, binary) == expect[k]
    assert executions(pg) == 2


def test_result_format_is_part_of_the_key(sluice, pg, table):
    """The text answer is not replayed to a client that asked for binary, nor the reverse."""
    text, binary = direct(pg, TYPED, (9,)), direct(pg, TYPED, (9,), binary=True)
    assert text[2] == [0] * 8 and binary[2] == [1] * 8
    pooler = sluice(pool_mode="transaction")
    with pooler.connect() as conn:
        for _ in range(2):
            assert run_typed(conn, 9, "unnamed", False) == text
            assert run_typed(conn, 9, "unnamed", True) == binary
    assert executions(pg) == 2


def test_parameter_types_are_part_of_the_key(sluice, pg, table):
    """Same text, same parameter bytes ('1', text format), different parameter type: a
    different answer from PostgreSQL, so a different entry."""
    sql = tag(f"SELECT pg_typeof(%t)::text, answer FROM {TABLE} WHERE k = 1")
    pooler = sluice(pool_mode="transaction")
    with pooler.connect() as conn:
        for _ in range(2):
            assert rows_of(conn, sql, (Int4(1),), prepare=False) == [("integer", answer(1))]
            assert rows_of(conn, sql, (Int8(1),), prepare=False) == [("bigint", answer(1))]
    assert executions(pg) == 2


def test_a_null_parameter_and_an_empty_one_are_different_entries(sluice, pg, table):
    sql = tag(f"SELECT coalesce(%s::text, 'was null'), answer FROM {TABLE} WHERE k = 1")
    pooler = sluice(pool_mode="transaction")
    with pooler.connect() as conn:
        for _ in range(2):
            assert rows_of(conn, sql, (None,)) == [("was null", answer(1))]
            assert rows_of(conn, sql, ("",)) == [("", answer(1))]
    assert executions(pg) == 2


def test_the_login_role_is_part_of_the_key(sluice, pg, table):
    """app's cached answer is not given to trust_user, who may not read the table."""
    pooler = sluice(pool_mode="transaction")
    with pooler.connect() as conn:
        assert rows_of(conn, tag(ANSWER), (1,)) == [(answer(1),)]
        assert rows_of(conn, tag(ANSWER), (1,)) == [(answer(1),)]
    with pooler.connect(user="trust_user") as other:
        with pytest.raises(errors.InsufficientPrivilege):     # PostgreSQL's, not app's rows
            other.execute(tag(ANSWER), (1,))
        pg.query(f"GRANT SELECT ON {TABLE} TO trust_user")
        assert rows_of(other, tag(ANSWER), (1,)) == [(answer(1),)]
        assert rows_of(other, tag(ANSWER), (1,)) == [(answer(1),)]
    assert executions(pg) == 2


def test_the_database_is_part_of_the_key(sluice, pg, table, fresh_db):
    """Same role, same text, same parameters, another database with other rows."""
    create_cache_table(pg, fresh_db, prefix="other")
    pooler = sluice(pool_mode="transaction",
                    databases={"other": f"host={pg.host} port={pg.port} dbname={fresh_db}"})
    with pooler.connect() as conn, pooler.connect(dbname="other") as other:
        for _ in range(2):
            assert rows_of(conn, tag(ANSWER), (4,)) == [("answer-4",)]
            assert rows_of(other, tag(ANSWER), (4,)) == [("other-4",)]
    assert executions(pg, ("app", fresh_db)) == 2


def test_a_hit_is_in_the_clients_client_encoding(sluice, pg, table):
    """An answer with non-ASCII text stored for a UTF8 client, looked up by a LATIN1 client:
    the same string as PostgreSQL gives that client."""
    pg.query(f"UPDATE {TABLE} SET answer = 'café crème' WHERE k = 1")
    pooler = sluice(pool_mode="transaction")
    with pooler.connect() as utf8, pooler.connect() as latin1:
        latin1.execute("SET client_encoding TO 'LATIN1'")
        assert latin1.info.encoding == "iso8859-1"
        for _ in range(2):
            assert rows_of(utf8, tag(ANSWER), (1,)) == [("café crème",)]
            assert rows_of(latin1, tag(ANSWER), (1,)) == [("café crème",)]


def test_a_hit_is_in_the_clients_timezone(sluice, pg, table):
    """timestamptz as text is written in the session's TimeZone: a Tokyo client does not get
    the UTC client's text."""
    sql = tag(f"SELECT ts::text, ts FROM {TABLE} WHERE k = %s")
    pooler = sluice(pool_mode="transaction")
    with pooler.connect() as utc, pooler.connect() as tokyo:
        utc.execute("SET TimeZone TO 'UTC'")
        tokyo.execute("SET TimeZone TO 'Asia/Tokyo'")
        for _ in range(2):
            [(text, ts)] = rows_of(utc, sql, (5,))
            assert text == "2024-01-01 05:00:07.5+00" and ts.utcoffset().total_seconds() == 0
            [(text, ts)] = rows_of(tokyo, sql, (5,))
            assert text == "2024-01-01 14:00:07.5+09" and ts.utcoffset().total_seconds() == 9 * 3600


@pytest.mark.parametrize("protocol", ["simple", "extended"])
def test_a_client_changing_its_timezone_between_lookups_gets_the_new_timezones_answer(
        sluice, pg, table, protocol):
    """A client keeps the start of its keys (database, role, tracked settings) between
    lookups: a SET TimeZone after its first lookups gives its next ones the new TimeZone's
    answer, and going back gives the first answer again, from the cache."""
    sql = tag(f"SELECT ts::text FROM {TABLE} WHERE k = %s")
    pooler = sluice(pool_mode="transaction")
    with pooler.connect() as conn:
        cur = psycopg.ClientCursor(conn) if protocol == "simple" else conn.cursor()
        conn.execute("SET TimeZone TO 'UTC'")
        for tz, text in (("UTC", "2024-01-01 05:00:07.5+00"), ("Asia/Tokyo", "2024-01-01 14:00:07.5+09"),
                         ("UTC", "2024-01-01 05:00:07.5+00"), ("Asia/Tokyo", "2024-01-01 14:00:07.5+09")):
            conn.execute(f"SET TimeZone TO '{tz}'")
            for _ in range(2):
                assert cur.execute(sql, (5,)).fetchall() == [(text,)]
    assert executions(pg) == 2    # once per TimeZone


def test_a_hit_is_in_the_clients_datestyle_and_intervalstyle(sluice, pg, table):
    """Two more of the settings PostgreSQL reports to the client (ParameterStatus) and that
    change how values are written."""
    sql = tag(f"SELECT ts::text, (ts - '2024-01-01 00:00:00+00')::text FROM {TABLE} WHERE k = %s")
    pooler = sluice(pool_mode="transaction")
    with pooler.connect() as iso, pooler.connect() as other:
        iso.execute("SET TimeZone TO 'UTC'")
        other.execute("SET TimeZone TO 'UTC'")
        other.execute("SET DateStyle TO 'SQL, DMY'")
        other.execute("SET IntervalStyle TO 'iso_8601'")
        for _ in range(2):
            assert rows_of(iso, sql, (5,)) == [("2024-01-01 05:00:07.5+00", "05:00:07.5")]
            assert rows_of(other, sql, (5,)) == [("01/01/2024 05:00:07.5 UTC", "PT5H7.5S")]


def test_multi_statement_query_gets_every_result_each_time(sluice, pg, table):
    sql = tag(f"SELECT answer FROM {TABLE} WHERE k = 1; SELECT k FROM {TABLE} WHERE k = 2")
    pooler = sluice(pool_mode="transaction")
    with pooler.connect() as conn:
        for _ in range(3):
            cur = conn.execute(sql, prepare=False)
            assert cur.fetchall() == [(answer(1),)]
            assert cur.nextset()
            assert cur.fetchall() == [(2,)]
            assert not cur.nextset()


@pytest.mark.parametrize("setting", ["SET DateStyle TO 'German'", "SELECT set_config('DateStyle', 'German', false)"])
def test_a_lookup_that_changes_a_setting_always_runs(sluice, pg, table, setting):
    """A tagged lookup whose Query also changes a session setting is never answered
    from the cache: the setting must take effect for every client that sends it,
    which only running it does."""
    sql = tag(f"{setting}; SELECT answer FROM {TABLE} WHERE k = 1")
    pooler = sluice(pool_mode="transaction")
    with pooler.connect() as first:
        cur = first.execute(sql, prepare=False)
        assert cur.nextset() and cur.fetchall() == [(answer(1),)]
        assert first.execute("SHOW DateStyle").fetchone()[0] == "German, DMY"
    for _ in range(2):
        with pooler.connect() as again:
            assert again.execute("SHOW DateStyle").fetchone()[0] == "ISO, MDY"
            cur = again.execute(sql, prepare=False)
            assert cur.nextset() and cur.fetchall() == [(answer(1),)]
            assert again.execute("SHOW DateStyle").fetchone()[0] == "German, DMY"
    assert executions(pg) == 3


# Each case: (setup runs, repeated runs, executions expected on PostgreSQL or None when the
# contract leaves it open). A run is a list of messages ending in Sync or a Query.
_W = f"SELECT k, answer, j FROM {TABLE} WHERE g = $1 ORDER BY k /*ai_cache='lookup'*/"
_PBDES = [m_parse(_W), m_bind(["0"]), m_describe("P"), m_execute(), SYNC]
_W2 = f"SELECT k, answer, j FROM {TABLE} WHERE g = $1::int + 1 ORDER BY k /*ai_cache='lookup'*/"
WIRE_CASES = {
    "simple-query": ([], [[m_query(f"SELECT k, answer, j FROM {TABLE} WHERE g = 0 ORDER BY k"
                                   " /*ai_cache='lookup'*/")]], 1),
    "parse-bind-describe-execute": ([], [_PBDES], 1),
    "parse-bind-execute": ([], [[m_parse(_W), m_bind(["0"]), m_execute(), SYNC]], 1),
    "binary-results": ([], [[m_parse(_W), m_bind(["0"], result_formats=[1]), m_describe("P"),
                             m_execute(), SYNC]], 1),
    "named-statement": ([[m_parse(_W, "s1"), SYNC]],
                        [[m_bind(["0"], stmt="s1"), m_execute(), SYNC]], 1),
    "named-statement-described": ([[m_parse(_W, "s1"), SYNC]],
                                  [[m_bind(["0"], stmt="s1"), m_describe("P"), m_execute(),
                                    SYNC]], 1),
    "two-lookups-one-sync": ([_PBDES],
                             [[m_parse(_W), m_bind(["0"]), m_describe("P"), m_execute(),
                               m_parse(_W), m_bind(["1"]), m_describe("P"), m_execute(), SYNC]], 2),
    "inside-a-transaction-block": ([_PBDES], [[m_query("BEGIN")], _PBDES, [m_query("COMMIT")]], 1),
    "describe-statement": ([], [[m_parse(_W), m_describe("S"), m_bind(["0"]), m_execute(), SYNC]],
                           None),
    "row-limit": ([], [[m_parse(_W), m_bind(["0"]), m_describe("P"), m_execute(max_rows=2), SYNC]],
                  None),
    "without-then-with-describe": ([], [[m_parse(_W), m_bind(["0"]), m_execute(), SYNC], _PBDES],
                                   None),
    "named-statement-two-keys": ([[m_parse(_W, "s1"), SYNC]],
                                 [[m_bind(["0"], stmt="s1"), m_describe("P"), m_execute(), SYNC],
                                  [m_bind(["1"], stmt="s1"), m_describe("P"), m_execute(), SYNC]], 2),
    "close-portal": ([], [[m_parse(_W), m_bind(["0"]), m_describe("P"), m_execute(),
                           (b"C", b"P\0"), SYNC]], 1),
    "row-limit-from-a-stored-answer": ([_PBDES],
                                       [[m_parse(_W), m_bind(["0"]), m_describe("P")]
                                        + [m_execute(max_rows=3)] * 4 + [SYNC]], 1),
    "execute-twice": ([], [[m_parse(_W), m_bind(["0"]), m_describe("P"), m_execute(), m_execute(),
                            SYNC]], None),
    "miss-then-hit-one-sync": ([_PBDES],
                               [[m_parse(_W), m_bind(["1"]), m_describe("P"), m_execute(),
                                 m_parse(_W), m_bind(["0"]), m_describe("P"), m_execute(), SYNC]], 2),
    "hit-then-plain-statement-one-sync": (
        [_PBDES],
        [[m_parse(_W), m_bind(["0"]), m_describe("P"), m_execute(),
          m_parse(f"SELECT count(*) FROM {TABLE}"), m_bind(), m_describe("P"), m_execute(), SYNC]],
        1 + 3),
    "error-then-lookup-one-sync": ([_PBDES],
                                   [[m_parse("SELECT 1 / (random() < 2)::int / 0"), m_bind(),
                                     m_execute(), m_parse(_W), m_bind(["0"]), m_describe("P"),
                                     m_execute(), SYNC]], 1),
    "lookup-then-error-one-sync": ([_PBDES],
                                   [[m_parse(_W), m_bind(["0"]), m_describe("P"), m_execute(),
                                     m_parse("SELECT 1 / (random() < 2)::int / 0"), m_bind(),
                                     m_execute(), SYNC]], 1),
    "begin-and-lookup-in-one-query": ([], [[m_query(f"BEGIN; SELECT answer FROM {TABLE} WHERE k = 1"
                                                    " /*ai_cache='lookup'*/")],
                                           [m_query("COMMIT")]], None),
    "empty-query": ([], [[m_query("/*ai_cache='lookup'*/")]], None),
    "copy-out": ([], [[m_query(f"COPY (SELECT k, answer FROM {TABLE} WHERE k < 4) TO STDOUT"
                               " /*ai_cache='lookup'*/")]], None),
    "bind-after-a-query-dropped-the-unnamed-statement": (
        [_PBDES], [[m_query("SELECT 1")], [m_bind(["0"]), m_describe("P"), m_execute(), SYNC]], 1),
    "parse-of-an-existing-name-fails": (
        [[m_parse(_W2), m_bind(["0"]), m_describe("P"), m_execute(), SYNC], [m_parse(_W, "s1"), SYNC]],
        [[m_parse(_W2, "s1"), SYNC], [m_bind(["0"], stmt="s1"), m_describe("P"), m_execute(), SYNC]],
        None),
    "describe-after-execute": ([[m_parse(_W), m_bind(["0"]), m_execute(), SYNC]],
                               [[m_parse(_W), m_bind(["0"]), m_execute(), m_describe("P"), SYNC]],
                               None),
}


# Under transaction pooling a Parse reusing a statement name is answered by pgsluice's
# prepared statement emulation (it replaces the statement, untagged statements too), so
# that case is the cache's business in session pooling only. In session pooling (a server
# always linked) the cases where the server's state matters run too.
SESSION_ONLY = {"parse-of-an-existing-name-fails"}
IN_SESSION_TOO = {"simple-query", "parse-bind-describe-execute", "named-statement",
                  "two-lookups-one-sync", "miss-then-hit-one-sync", "inside-a-transaction-block",
                  "error-then-lookup-one-sync", "lookup-then-error-one-sync",
                  "bind-after-a-query-dropped-the-unnamed-statement",
                  "begin-and-lookup-in-one-query", "row-limit-from-a-stored-answer"}


@pytest.mark.parametrize("case,pool_mode",
                         [(c, "transaction") for c in sorted(WIRE_CASES) if c not in SESSION_ONLY]
                         + [(c, "session") for c in sorted(IN_SESSION_TOO | SESSION_ONLY)])
def test_a_hit_sends_exactly_the_replies_postgres_sends(sluice, pg, table, case, pool_mode):
    """The same messages sent straight to PostgreSQL and three times to pgsluice: every run
    gets PostgreSQL's replies, byte for byte (ParseComplete, BindComplete, RowDescription,
    DataRows, CommandComplete, ReadyForQuery with the real transaction status)."""
    setup, repeated, expect_runs = WIRE_CASES[case]
    with pgwire.login(pg.host, pg.port, "app", "app", password=harness.APP_PASSWORD) as sess:
        for run in setup:
            wire_run(sess, run)
        reference = [wire_run(sess, run) for run in repeated]
    before = executions(pg)
    pooler = sluice(pool_mode=pool_mode)
    with pgwire.login(pooler.host, pooler.port, "app", "app", password=harness.APP_PASSWORD) as sess:
        for run in setup:
            wire_run(sess, run)
        for attempt in range(3):
            for n, run in enumerate(repeated):
                got = wire_run(sess, run)
                assert got == reference[n], (
                    f"attempt {attempt}, run {n}: got {describe_replies(got)}, PostgreSQL sent "
                    f"{describe_replies(reference[n])}\n{got}\n{reference[n]}")
    if expect_runs is not None:
        assert executions(pg) - before == expect_runs


def test_a_batch_arriving_message_by_message_is_still_a_hit(sluice, pg, table):
    """Bind, Execute and Sync of a prepared lookup, each in its own TCP segment (a client may
    write them so; pgsluice must not guess what follows before it arrives): PostgreSQL's
    replies every time, and one execution. The answer was stored without a RowDescription
    (nothing asked for one), so a Describe could not be answered from it: only a hit that
    needs none."""
    parse = [m_parse(_W, "s1"), SYNC]
    run = [m_bind(["0"], stmt="s1"), m_execute(), SYNC]
    with pgwire.login(pg.host, pg.port, "app", "app", password=harness.APP_PASSWORD) as sess:
        wire_run(sess, parse)
        reference = wire_run(sess, run)
    before = executions(pg)
    pooler = sluice(pool_mode="transaction")
    with pgwire.login(pooler.host, pooler.port, "app", "app", password=harness.APP_PASSWORD) as sess:
        sess.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        wire_run(sess, parse)
        for attempt in range(3):
            got = wire_run(sess, run, pause=0.05)
            assert got == reference, (attempt, describe_replies(got), describe_replies(reference))
    assert executions(pg) - before == 1
    row = cache_row(pooler)
    assert (row["hits"], row["misses"]) == (2, 1), row


@pytest.mark.parametrize("pool_mode", ["transaction", "session"])
def test_pipeline_mixes_hits_and_misses(sluice, pg, table, pool_mode):
    """One pipeline: hits, misses, the same miss twice, an untagged statement; every result in
    order, and afterwards the misses are hits."""
    pooler = sluice(pool_mode=pool_mode)
    with pooler.connect() as conn:
        for k in (1, 2):
            assert rows_of(conn, tag(ANSWER), (k,)) == [(answer(k),)]
        assert executions(pg) == 2
        with conn.pipeline():
            ks = [1, 3, 2, 4, 3]
            curs = [conn.execute(tag(ANSWER), (k,)) for k in ks]
            plain = conn.execute(ANSWER, (5,))
        assert [c.fetchall() for c in curs] == [[(answer(k),)] for k in ks]
        assert plain.fetchall() == [(answer(5),)]
        assert conn.info.transaction_status == TransactionStatus.IDLE
        # 3 and 4 ran, the untagged one ran; the second 3 may have waited for the first
        ran = executions(pg)
        assert ran in (5, 6), ran
        for k in (1, 2, 3, 4):
            assert rows_of(conn, tag(ANSWER), (k,)) == [(answer(k),)]
        assert executions(pg) == ran


# -- transaction blocks -----------------------------------------------------------------
@pytest.mark.parametrize("pool_mode", ["transaction", "session"])
def test_a_hit_inside_a_transaction_block_keeps_the_block(sluice, pg, table, pool_mode):
    """The hit is answered, the block stays open (ReadyForQuery 'T'), and what the block did
    is committed or rolled back as the client says."""
    pooler = sluice(pool_mode=pool_mode)
    simple = tag(f"SELECT answer FROM {TABLE} WHERE k = 2")
    with pooler.connect() as conn:
        assert rows_of(conn, tag(ANSWER), (1,)) == [(answer(1),)]
        assert rows_of(conn, simple, prepare=False) == [(answer(2),)]
        for end in ("ROLLBACK", "COMMIT"):
            conn.execute("BEGIN")
            assert rows_of(conn, tag(ANSWER), (1,)) == [(answer(1),)]   # first in the block
            assert conn.info.transaction_status == TransactionStatus.INTRANS
            conn.execute(f"UPDATE {TABLE} SET answer = %s WHERE k = 200", (end,))
            assert rows_of(conn, tag(ANSWER), (1,)) == [(answer(1),)]
            assert rows_of(conn, simple, prepare=False) == [(answer(2),)]
            assert conn.info.transaction_status == TransactionStatus.INTRANS
            assert rows_of(conn, f"SELECT answer FROM {TABLE} WHERE k = 200") == [(end,)]
            conn.execute(end)
            assert conn.info.transaction_status == TransactionStatus.IDLE
            stored = pg.query(f"SELECT answer FROM {TABLE} WHERE k = 200")[0][0]
            assert stored == ("COMMIT" if end == "COMMIT" else answer(200))
    # one execution of each lookup, plus the two plain SELECTs of k = 200
    assert executions(pg) == 2 + 2


@pytest.mark.parametrize("pool_mode", ["transaction", "session"])
@pytest.mark.parametrize("protocol", ["simple", "extended"])
def test_an_answer_read_inside_a_transaction_block_is_not_stored(sluice, pg, table, pool_mode,
                                                                 protocol):
    """A lookup inside BEGIN sees the block's own uncommitted row; after ROLLBACK that row
    never existed, so the next lookup must not be answered with it."""
    pooler = sluice(pool_mode=pool_mode)
    sql = tag(f"SELECT answer FROM {TABLE} WHERE k = %s")
    with pooler.connect() as conn:
        cur = psycopg.ClientCursor(conn) if protocol == "simple" else conn.cursor()
        conn.execute("BEGIN")
        conn.execute(f"INSERT INTO {TABLE} (k, answer) VALUES (9999, 'uncommitted')")
        assert cur.execute(sql, (9999,)).fetchall() == [("uncommitted",)]
        conn.execute("ROLLBACK")
        assert cur.execute(sql, (9999,)).fetchall() == []
        assert cur.execute(sql, (9999,)).fetchall() == []


@pytest.mark.parametrize("pool_mode", ["transaction", "session"])
def test_a_block_opened_in_the_lookups_batch_stores_nothing_it_read(sluice, pg, table, pool_mode):
    """BEGIN, an INSERT and the lookup in one batch (the last ReadyForQuery still said idle, as
    in a pipeline without autocommit): the lookup's answer must not outlive the ROLLBACK."""
    pooler = sluice(pool_mode=pool_mode)
    lookup = f"SELECT answer FROM {TABLE} WHERE k = $1 /*ai_cache='lookup'*/"
    with pgwire.login(pooler.host, pooler.port, "app", "app", password=harness.APP_PASSWORD) as sess:
        got = wire_run(sess, [m_parse("BEGIN"), m_bind(), m_execute(),
                              m_parse(f"INSERT INTO {TABLE} (k, answer) VALUES (9998, 'uncommitted')"),
                              m_bind(), m_execute(),
                              m_parse(lookup), m_bind(["9998"]), m_describe("P"), m_execute(), SYNC])
        assert (b"D", b"\x00\x01\x00\x00\x00\x0buncommitted") in [(t.encode(), b) for t, b in got], got
        assert got[-1] == ("Z", b"T")
        assert wire_run(sess, [m_query("ROLLBACK")])[-1] == ("Z", b"I")
        again = wire_run(sess, [m_parse(lookup), m_bind(["9998"]), m_describe("P"), m_execute(), SYNC])
        assert [t for t, _ in again] == ["1", "2", "T", "C", "Z"], again


def test_a_lookup_in_a_failed_transaction_block_gets_25p02(sluice, pg, table):
    pooler = sluice(pool_mode="transaction")
    simple = tag(f"SELECT answer FROM {TABLE} WHERE k = 1")
    with pooler.connect() as conn:
        assert rows_of(conn, tag(ANSWER), (1,)) == [(answer(1),)]
        assert rows_of(conn, simple, prepare=False) == [(answer(1),)]
        conn.execute("BEGIN")
        assert rows_of(conn, tag(ANSWER), (1,)) == [(answer(1),)]
        with pytest.raises(errors.DivisionByZero):
            conn.execute("SELECT 1 / 0")
        assert conn.info.transaction_status == TransactionStatus.INERROR
        with pytest.raises(errors.InFailedSqlTransaction):
            conn.execute(tag(ANSWER), (1,))
        assert conn.info.transaction_status == TransactionStatus.INERROR
        with pytest.raises(errors.InFailedSqlTransaction):
            conn.execute(simple, prepare=False)
        assert conn.info.transaction_status == TransactionStatus.INERROR
        conn.execute("ROLLBACK")
        assert conn.info.transaction_status == TransactionStatus.IDLE
        assert rows_of(conn, tag(ANSWER), (1,)) == [(answer(1),)]
    assert executions(pg) == 2


# -- what is stored, for how long -----------------------------------------------------------
def test_errors_are_not_cached(sluice, pg, table):
    """An error (at once, or after some rows were sent) is not stored: once the data is fixed
    the same lookup gets the right rows."""
    pg.query(f"UPDATE {TABLE} SET d = 0 WHERE k IN (5, 15)")
    one = tag(f"SELECT k, 10 / d FROM {TABLE} WHERE k = %s")
    many = tag(f"SELECT k, 10 / d FROM {TABLE} WHERE g = %s")
    pooler = sluice(pool_mode="transaction")
    with pooler.connect() as conn:
        for _ in range(2):
            with pytest.raises(errors.DivisionByZero):
                conn.execute(one, (5,))
            with pytest.raises(errors.DivisionByZero):
                conn.execute(many, (1,))
        pg.query(f"UPDATE {TABLE} SET d = 2 WHERE k IN (5, 15)")
        for _ in range(2):
            assert rows_of(conn, one, (5,)) == [(5, 5)]
            assert sorted(rows_of(conn, many, (1,))) == [(k, 5) for k in range(10, 20)]
    assert executions(pg) == 2
    assert cache_row(pooler)["entries"] == 2


def test_empty_results_are_not_cached(sluice, pg, table):
    pooler = sluice(pool_mode="transaction")
    with pooler.connect() as conn:
        assert rows_of(conn, tag(ANSWER), (1000,)) == []
        assert rows_of(conn, tag(ANSWER), (1000,)) == []
        assert cache_row(pooler)["entries"] == 0
        pg.query(f"INSERT INTO {TABLE} (k, answer) VALUES (1000, 'late answer')")
        assert rows_of(conn, tag(ANSWER), (1000,)) == [("late answer",)]
        assert rows_of(conn, tag(ANSWER), (1000,)) == [("late answer",)]
    assert executions(pg) == 3


def test_refresh_always_runs_and_replaces_the_entry(sluice, pg, table):
    pooler = sluice(pool_mode="transaction")
    with pooler.connect() as conn:
        assert rows_of(conn, tag(ANSWER), (1,)) == [(answer(1),)]
        pg.query(f"UPDATE {TABLE} SET answer = 'new answer' WHERE k = 1")
        assert rows_of(conn, tag(ANSWER), (1,)) == [(answer(1),)]        # still the stored one
        assert executions(pg) == 1
        assert rows_of(conn, tag(ANSWER, "refresh"), (1,)) == [("new answer",)]
        assert rows_of(conn, tag(ANSWER, "refresh"), (1,)) == [("new answer",)]
        assert executions(pg) == 3
        assert rows_of(conn, tag(ANSWER), (1,)) == [("new answer",)]
        assert executions(pg) == 3


def test_ai_ttl_expiry_runs_the_lookup_again(sluice, pg, table):
    pooler = sluice(pool_mode="transaction")
    with pooler.connect() as conn:
        assert rows_of(conn, tag(ANSWER, ai_ttl=1), (1,)) == [(answer(1),)]
        assert rows_of(conn, tag(ANSWER, ai_ttl=1), (1,)) == [(answer(1),)]
        assert rows_of(conn, tag(ANSWER), (2,)) == [(answer(2),)]      # default ttl: 300 s
        assert executions(pg) == 2
        time.sleep(1.2)
        assert rows_of(conn, tag(ANSWER, ai_ttl=1), (1,)) == [(answer(1),)]
        assert executions(pg) == 3
        assert rows_of(conn, tag(ANSWER), (2,)) == [(answer(2),)]
        assert executions(pg) == 3


@pytest.mark.parametrize("ttl", ["1", "1s"])
def test_cache_default_ttl_applies_without_ai_ttl(sluice, pg, table, ttl):
    pooler = sluice(pool_mode="transaction", cache_default_ttl=ttl)
    with pooler.connect() as conn:
        assert rows_of(conn, tag(ANSWER), (1,)) == [(answer(1),)]
        assert rows_of(conn, tag(ANSWER, ai_ttl=60), (2,)) == [(answer(2),)]
        assert rows_of(conn, tag(ANSWER), (1,)) == [(answer(1),)]
        assert executions(pg) == 2
        time.sleep(1.2)
        assert rows_of(conn, tag(ANSWER), (1,)) == [(answer(1),)]
        assert rows_of(conn, tag(ANSWER), (2,)) == [(answer(2),)]
        assert executions(pg) == 3


def test_results_over_cache_max_entry_size_are_not_stored(sluice, pg, table):
    """cache_max_entry_size = 4 kB: one 2 kB row is stored, ten of them (20 kB) are not, and
    both are answered whole every time."""
    pooler = sluice(pool_mode="transaction", cache_max_entry_size="4kB")
    many = tag(f"SELECT k, big FROM {TABLE} WHERE g = %s ORDER BY k")
    with pooler.connect() as conn:
        for _ in range(2):
            assert rows_of(conn, tag(BIG), (3,)) == [(big(3),)]
            assert rows_of(conn, many, (2,)) == [(k, big(k)) for k in range(20, 30)]
    assert executions(pg) == 1 + 2
    assert cache_row(pooler)["entries"] == 1


def test_a_lookup_with_a_key_larger_than_cache_max_entry_size_is_answered_right(sluice, pg, table):
    """A 10 kB parameter (extended protocol) or statement text (simple protocol) under
    cache_max_entry_size = 4 kB: right every time, whether or not it is stored."""
    pooler = sluice(pool_mode="transaction", cache_max_entry_size="4kB")
    sql = tag(f"SELECT length(%s), answer FROM {TABLE} WHERE k = 1")
    with pooler.connect() as conn:
        for n in range(3):
            value = chr(97 + n) * 10000
            for _ in range(2):
                assert rows_of(conn, sql, (value,)) == [(10000, answer(1))]
                assert psycopg.ClientCursor(conn).execute(sql, (value,)).fetchall() == \
                    [(10000, answer(1))]


def test_lru_keeps_memory_under_cache_max_memory(sluice, pg, table):
    """100 entries of about 2 kB in 64 kB: SHOW CACHE bytes never passes the bound, entries
    are evicted, the least recently used first: an early entry runs again, the most recent
    one and an early one used all along do not."""
    limit = 65536
    pooler = sluice(pool_mode="transaction", cache_max_memory=limit)
    with pooler.connect() as conn, console(pooler) as admin:
        assert rows_of(conn, tag(BIG), (1,)) == [(big(1),)]
        for k in range(2, 101):
            assert rows_of(conn, tag(BIG), (k,)) == [(big(k),)]
            if k % 5 == 0:
                assert rows_of(conn, tag(BIG), (1,)) == [(big(1),)]   # keeps k = 1 recent
            if k % 10 == 0:
                row = show(admin, "CACHE")[0]
                assert 0 < row["bytes"] <= limit, row
        row = show(admin, "CACHE")[0]
        assert row["evictions"] > 0 and row["entries"] < 100, row
        assert row["entries"] >= 10, f"64 kB should hold more than ten 2 kB entries: {row}"
        assert executions(pg) == 100
        assert rows_of(conn, tag(BIG), (100,)) == [(big(100),)]
        assert rows_of(conn, tag(BIG), (1,)) == [(big(1),)]
        assert executions(pg) == 100
        assert rows_of(conn, tag(BIG), (2,)) == [(big(2),)]
        assert executions(pg) == 101
        assert show(admin, "CACHE")[0]["bytes"] <= limit


def test_reload_applies_cache_max_memory(sluice, pg, table):
    """cache_max_memory is reloadable: a smaller bound evicts down to it, 0 turns the cache
    off."""
    pooler = sluice(pool_mode="transaction")
    with pooler.connect() as conn:
        for k in range(1, 21):
            assert rows_of(conn, tag(BIG), (k,)) == [(big(k),)]
        assert cache_row(pooler)["entries"] == 20
        pooler.reload(cache_max_memory="8kB")
        wait_until(lambda: 0 < cache_row(pooler)["bytes"] <= 8192, 5, "the cache to shrink")
        assert rows_of(conn, tag(BIG), (20,)) == [(big(20),)]      # the most recent stays
        assert executions(pg) == 20
        pooler.reload(cache_max_memory=0)
        time.sleep(0.3)
        for _ in range(2):
            assert rows_of(conn, tag(BIG), (20,)) == [(big(20),)]
        assert executions(pg) == 22


def test_cache_max_memory_0_turns_the_cache_off(sluice, pg, table):
    pooler = sluice(pool_mode="transaction", cache_max_memory=0)
    with pooler.connect() as conn:
        for _ in range(3):
            assert rows_of(conn, tag(ANSWER), (1,)) == [(answer(1),)]
    assert executions(pg) == 3
    row = cache_row(pooler)
    assert (row["entries"], row["bytes"], row["hits"]) == (0, 0, 0), row


# -- concurrency, no server -------------------------------------------------------------------
@pytest.mark.parametrize("pool_size,protocol", [(5, "extended"), (60, "extended"), (5, "simple")])
def test_fifty_concurrent_identical_misses_run_once(sluice, pg, table, pool_size, protocol):
    """50 clients send the same slow lookup at the same moment: it runs once on PostgreSQL
    and all 50 get its row, with fewer servers than clients and with more."""
    pooler = sluice(pool_mode="transaction", default_pool_size=pool_size)
    conns = [pooler.connect() for _ in range(50)]
    barrier = threading.Barrier(50)
    results, failures = [None] * 50, []

    def client(i):
        try:
            barrier.wait(10)
            if protocol == "simple":
                results[i] = psycopg.ClientCursor(conns[i]).execute(tag(SLOW), (3,)).fetchall()
            else:
                results[i] = rows_of(conns[i], tag(SLOW), (3,), prepare=False)
        except Exception as e:      # reported below
            failures.append(e)
    try:
        threads = [threading.Thread(target=client, args=(i,)) for i in range(50)]
        t0 = time.monotonic()
        for t in threads:
            t.start()
        for t in threads:
            t.join(20)
        elapsed = time.monotonic() - t0
    finally:
        for c in conns:
            c.close()
    assert not failures, failures
    assert results == [[(answer(3),)]] * 50
    assert executions(pg) == 1
    row = cache_row(pooler)
    assert row["hits"] + row["misses"] == 50 and row["entries"] == 1, row
    print(f"50 coalesced lookups in {elapsed:.2f} s")


def run_together(n, fn):
    """fn(i) in n threads released at once; returns (results, exceptions) by i."""
    barrier = threading.Barrier(n)
    results, failures = [None] * n, [None] * n

    def body(i):
        try:
            barrier.wait(10)
            results[i] = fn(i)
        except Exception as e:      # the caller looks
            failures[i] = e
    threads = [threading.Thread(target=body, args=(i,)) for i in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(20)
    assert not any(t.is_alive() for t in threads), "a client never got its answer"
    return results, failures


def test_concurrent_identical_misses_that_fail_all_get_the_error(sluice, pg, table):
    """An error is not stored: clients that waited for it get PostgreSQL's error too (or run
    the statement themselves), none hangs, and once the data is fixed the rows come."""
    pg.query(f"UPDATE {TABLE} SET d = 0 WHERE k = 3")
    sql = tag(f"SELECT k, 10 / d FROM {TABLE}, pg_sleep(0.2) WHERE k = %s")
    pooler = sluice(pool_mode="transaction", default_pool_size=3)
    conns = [pooler.connect() for _ in range(8)]
    try:
        results, failures = run_together(8, lambda i: rows_of(conns[i], sql, (3,), prepare=False))
        assert all(isinstance(e, errors.DivisionByZero) for e in failures), (results, failures)
        pg.query(f"UPDATE {TABLE} SET d = 2 WHERE k = 3")
        results, failures = run_together(8, lambda i: rows_of(conns[i], sql, (3,), prepare=False))
        assert failures == [None] * 8 and results == [[(3, 5)]] * 8, (results, failures)
    finally:
        for c in conns:
            c.close()
    assert executions(pg) == 1


def test_concurrent_identical_empty_misses_all_get_no_rows(sluice, pg, table):
    sql = tag(f"SELECT answer FROM {TABLE}, pg_sleep(0.2) WHERE k = %s")
    pooler = sluice(pool_mode="transaction", default_pool_size=3)
    conns = [pooler.connect() for _ in range(8)]
    try:
        results, failures = run_together(8, lambda i: rows_of(conns[i], sql, (1000,), prepare=False))
        assert failures == [None] * 8 and results == [[]] * 8, (results, failures)
    finally:
        for c in conns:
            c.close()
    assert cache_row(pooler)["entries"] == 0


def slow_query_message(k):
    return m_query(tag(SLOW.replace("%s", str(k))))


def test_a_client_leaving_while_it_waits_for_an_identical_miss_harms_no_one(sluice, pg, table):
    """A runs a slow lookup; B sends the same and disconnects while it waits; C sends the same
    after B: A and C get the row, from one execution."""
    pooler = sluice(pool_mode="transaction")
    simple = tag(SLOW.replace("%s", "3"))
    with pooler.connect() as a, pooler.connect() as c:
        got = {}
        first = threading.Thread(target=lambda: got.setdefault("a", rows_of(a, simple, prepare=False)))
        first.start()
        time.sleep(0.1)
        b = pgwire.login(pooler.host, pooler.port, "app", "app", password=harness.APP_PASSWORD)
        b.send(*slow_query_message(3))
        time.sleep(0.05)
        b.sock.close()
        got["c"] = rows_of(c, simple, prepare=False)
        first.join(10)
        assert got == {"a": [(answer(3),)], "c": [(answer(3),)]}
        assert rows_of(c, simple, prepare=False) == [(answer(3),)]
    assert executions(pg) == 1


def test_the_client_filling_an_entry_leaving_harms_no_one(sluice, pg, table):
    """A sends a slow lookup and disconnects before the answer; B, which sent the same
    meanwhile, still gets the row, and so does C later."""
    pooler = sluice(pool_mode="transaction")
    simple = tag(SLOW.replace("%s", "4"))
    a = pgwire.login(pooler.host, pooler.port, "app", "app", password=harness.APP_PASSWORD)
    a.send(*slow_query_message(4))
    time.sleep(0.1)
    with pooler.connect() as b:
        got = {}
        waiter = threading.Thread(target=lambda: got.setdefault("b", rows_of(b, simple, prepare=False)))
        waiter.start()
        time.sleep(0.1)
        a.sock.close()
        waiter.join(10)
        assert got == {"b": [(answer(4),)]}
    with pooler.connect() as c:
        assert rows_of(c, simple, prepare=False) == [(answer(4),)]


def test_large_answers_are_replayed_whole(sluice, pg, table):
    """Under the default cache_max_entry_size (1MB): one row of 640 kB and 5000 rows of 128
    bytes, each stored and replayed byte for byte; 8000 rows (about 1.2 MB) are not stored
    and come whole every time."""
    one_big = tag(f"SELECT repeat(md5(k::text), 20000) FROM {TABLE} WHERE k = %s")
    many = tag("SELECT i, repeat(md5(i::text), 4) FROM generate_series(1, %s) i"
               f" WHERE EXISTS (SELECT FROM {TABLE} WHERE k = 1)")
    expect_big = [(hashlib.md5(b"7").hexdigest() * 20000,)]
    expect_many = {n: [(i, hashlib.md5(str(i).encode()).hexdigest() * 4) for i in range(1, n + 1)]
                   for n in (5000, 8000)}
    pooler = sluice(pool_mode="transaction")
    with pooler.connect() as conn:
        for _ in range(2):
            assert rows_of(conn, one_big, (7,)) == expect_big
            for n in (5000, 8000):
                assert rows_of(conn, many, (n,)) == expect_many[n]
            assert rows_of(conn, one_big, (7,), binary=True) == expect_big
    assert executions(pg) == 1 + 1 + 2 + 1
    assert cache_row(pooler)["entries"] == 3


def test_a_hit_outside_a_transaction_block_needs_no_server(sluice, pg, table):
    """default_pool_size = 1 and its server held by another client's open transaction: a
    hit is answered at once (a wait for the server would end in query_wait_timeout)."""
    pooler = sluice(pool_mode="transaction", default_pool_size=1, query_wait_timeout=2)
    with pooler.connect() as conn, pooler.connect() as holder:
        simple = psycopg.ClientCursor(conn)
        assert rows_of(conn, tag(ANSWER), (1,)) == [(answer(1),)]
        assert simple.execute(tag(ANSWER), (1,)).fetchall() == [(answer(1),)]
        holder.execute("BEGIN")
        holder.execute("SELECT 1")
        t0 = time.monotonic()
        assert rows_of(conn, tag(ANSWER), (1,)) == [(answer(1),)]
        assert simple.execute(tag(ANSWER), (1,)).fetchall() == [(answer(1),)]
        assert time.monotonic() - t0 < 1
        holder.execute("COMMIT")
    assert executions(pg) == 2


def test_a_hit_is_answered_while_postgres_is_stopped(sluice, pg, table):
    """Entries stored, PostgreSQL stopped: a client connected before the stop and one that
    logs in after it both get the stored answers (login needs no server once the pool has
    PostgreSQL's parameters)."""
    pooler = sluice(pool_mode="transaction", query_wait_timeout=3)
    simple = tag(f"SELECT answer FROM {TABLE} WHERE k = 2")
    with pooler.connect() as before:
        assert rows_of(before, tag(ANSWER), (1,)) == [(answer(1),)]
        assert rows_of(before, simple, prepare=False) == [(answer(2),)]
        assert rows_of(before, tag(TYPED), (3,), binary=True) == direct(pg, TYPED, (3,), True)[0]
        try:
            pg.stop()
            assert rows_of(before, tag(ANSWER), (1,)) == [(answer(1),)]
            assert rows_of(before, simple, prepare=False) == [(answer(2),)]
            assert before.info.transaction_status == TransactionStatus.IDLE
            with pooler.connect() as after:
                assert rows_of(after, tag(ANSWER), (1,)) == [(answer(1),)]
                assert rows_of(after, tag(TYPED), (3,), binary=True)[0][:3] == \
                    (3, 30000000000, answer(3))
        finally:
            if not pg.running:
                pg.start()
        # and once it is back, a miss goes to it again
        assert rows_of(before, tag(ANSWER), (4,)) == [(answer(4),)]


# -- admin console, metrics -----------------------------------------------------------------
def test_show_cache_counts_and_cache_flush_empties_it(sluice, pg, table):
    pooler = sluice(pool_mode="transaction")
    with pooler.connect() as conn:
        for _ in range(4):
            rows_of(conn, tag(ANSWER), (1,))
        rows_of(conn, tag(ANSWER), (2,))
        with console(pooler) as admin:
            row = show(admin, "CACHE")[0]
            assert (row["entries"], row["hits"], row["misses"], row["evictions"]) == (2, 3, 2, 0), row
            assert row["bytes"] > 0
            assert_hit_rate(row)
            admin.execute("CACHE FLUSH")
            row = show(admin, "CACHE")[0]
            assert (row["entries"], row["bytes"]) == (0, 0), row
            assert executions(pg) == 2
            assert rows_of(conn, tag(ANSWER), (1,)) == [(answer(1),)]
            assert executions(pg) == 3
            row = show(admin, "CACHE")[0]
            assert row["entries"] == 1 and row["misses"] >= 3, row


def test_metrics_report_the_cache(sluice, pg, table):
    port = harness.free_port()
    pooler = sluice(pool_mode="transaction", metrics_listen_addr="127.0.0.1",
                    metrics_listen_port=port, cache_max_memory=8192)
    with pooler.connect() as conn:
        for _ in range(3):
            rows_of(conn, tag(ANSWER), (1,))
        for k in range(10, 20):         # 2 kB each in 8 kB: evictions
            rows_of(conn, tag(BIG), (k,))
    m = scrape(port)
    row = cache_row(pooler)
    assert row["hits"] == 2 and row["misses"] == 11 and row["evictions"] > 0, row
    assert m["pgsluice_ai_cache_entries"]["type"] == "gauge"
    assert m["pgsluice_ai_cache_bytes"]["type"] == "gauge"
    got = {name: value(m, f"pgsluice_ai_cache_{name}") for name in
           ("entries", "bytes", "hits_total", "misses_total", "evictions_total")}
    assert got == {"entries": row["entries"], "bytes": row["bytes"], "hits_total": row["hits"],
                   "misses_total": row["misses"], "evictions_total": row["evictions"]}
    assert 0 < got["bytes"] <= 8192


# -- usage records ----------------------------------------------------------------------------
def test_every_hit_makes_one_cached_usage_row(sluice, pg, fresh_db):
    """One miss and three hits tagged ai_user/ai_model: three rows with cached = true, no
    tokens, no cost; the miss (no ai_tokens_in/out) makes none, nor a lone miss."""
    pooler = usage_pooler(sluice, pg, fresh_db).start()
    create_cache_table(pg, fresh_db)
    with usage_connect(pooler) as conn:
        for _ in range(4):
            assert rows_of(conn, tag(ANSWER, ai_user="alice", ai_model="gpt-4o"), (1,)) == \
                [(answer(1),)]
        assert rows_of(conn, tag(ANSWER, ai_user="alice", ai_model="gpt-4o"), (2,)) == \
            [(answer(2),)]
    wait_for_rows(pg, fresh_db, 3)
    time.sleep(0.5)         # a few more flushes: nothing else comes
    rows = pg.query("SELECT subject, db_user, database, model, input_tokens, output_tokens,"
                    " cost_cents, cached FROM sluice.llm_usage", dbname=fresh_db)
    assert rows == [("alice", "app", "usage", "gpt-4o", 0, 0, Decimal("0"), True)] * 3
    assert usage_count(pg, fresh_db) == (3, 3)


def test_many_hits_from_several_connections_make_as_many_usage_rows(sluice, pg, fresh_db):
    """4 connections, 50 hits each, simple and extended protocol: 200 cached rows, 200
    distinct ids (a record id used twice would lose a row to ON CONFLICT DO NOTHING)."""
    pooler = usage_pooler(sluice, pg, fresh_db).start()
    create_cache_table(pg, fresh_db)
    with usage_connect(pooler) as conn:
        assert rows_of(conn, tag(ANSWER, ai_user="warm"), (1,)) == [(answer(1),)]
        assert psycopg.ClientCursor(conn).execute(tag(ANSWER, ai_user="warm"), (1,)).fetchall() \
            == [(answer(1),)]

    def client(i):
        with usage_connect(pooler) as conn:
            simple = psycopg.ClientCursor(conn)
            for n in range(50):
                sql = tag(ANSWER, ai_user=f"user{i}")
                rows = (simple.execute(sql, (1,)) if n % 2 else conn.execute(sql, (1,))).fetchall()
                assert rows == [(answer(1),)]
    results, failures = run_together(4, client)
    assert failures == [None] * 4, failures
    wait_for_rows(pg, fresh_db, 200, where="subject LIKE 'user%'")
    time.sleep(0.5)
    assert usage_count(pg, fresh_db) == (200, 200)
    assert pg.query("SELECT subject, count(*) FILTER (WHERE cached) FROM sluice.llm_usage"
                    " GROUP BY 1 ORDER BY 1", dbname=fresh_db) == \
        [(f"user{i}", 50) for i in range(4)]


def test_a_hit_of_a_lookup_tagged_with_tokens_records_no_tokens(sluice, pg, fresh_db):
    """The miss completes with its tokens (a usage row as any tagged statement, cached =
    false); the hit spent none: cached = true, 0 tokens, cost 0."""
    pooler = usage_pooler(sluice, pg, fresh_db).start()
    create_cache_table(pg, fresh_db)
    sql = tag(ANSWER, ai_user="alice", ai_model="gpt-4o", ai_tokens_in=1000, ai_tokens_out=200)
    with usage_connect(pooler) as conn:
        for _ in range(2):
            assert rows_of(conn, sql, (1,)) == [(answer(1),)]
    wait_for_rows(pg, fresh_db, 2)
    time.sleep(0.5)
    rows = pg.query("SELECT cached, subject, model, input_tokens, output_tokens, cost_cents"
                    " FROM sluice.llm_usage ORDER BY cached", dbname=fresh_db)
    assert rows == [(False, "alice", "gpt-4o", 1000, 200, Decimal("0.4500")),
                    (True, "alice", "gpt-4o", 0, 0, Decimal("0"))]


def test_a_hit_without_ai_user_is_recorded_for_the_login_role(sluice, pg, fresh_db):
    pooler = usage_pooler(sluice, pg, fresh_db).start()
    create_cache_table(pg, fresh_db)
    with usage_connect(pooler) as conn:
        for _ in range(2):
            assert rows_of(conn, tag(ANSWER), (1,)) == [(answer(1),)]
    wait_for_rows(pg, fresh_db, 1)
    time.sleep(0.5)
    rows = pg.query("SELECT subject, db_user, database, model, input_tokens, output_tokens,"
                    " cost_cents, cached FROM sluice.llm_usage", dbname=fresh_db)
    assert rows == [("app", "app", "usage", None, 0, 0, Decimal("0"), True)]


def test_a_hit_counts_against_requests_per_minute(sluice, pg, table):
    """docs/ai-middleware.md: a hit is an attributed statement like any other."""
    pooler = limited_pooler(sluice, {"alice": "requests_per_minute=3"}, pool_mode="transaction")
    sql = tag(ANSWER, ai_user="alice")
    with pooler.connect() as conn:
        for _ in range(3):
            assert rows_of(conn, sql, (1,)) == [(answer(1),)]
        with pytest.raises(errors.ConfigurationLimitExceeded):
            conn.execute(sql, (1,))
        assert rows_of(conn, tag(ANSWER, ai_user="bob"), (1,)) == [(answer(1),)]
    assert executions(pg) == 1


# The application flow of docs/ai-middleware.md ("The flow, end to end"), as written there.
LOOKUP = ("SELECT answer FROM llm_cache WHERE prompt_hash = %s"
          " /*ai_cache='lookup',ai_ttl='3600',ai_user='alice',ai_model='gpt-4o'*/")
STORE = ("INSERT INTO llm_cache (prompt_hash, answer) VALUES (%s, %s)"
         " ON CONFLICT (prompt_hash) DO UPDATE SET answer = excluded.answer"
         " /*ai_user='alice',ai_model='gpt-4o',ai_tokens_in='{tin}',ai_tokens_out='{tout}'*/")


def complete(conn, prompt, call_model):
    key = hashlib.sha256(prompt.encode()).hexdigest()
    row = conn.execute(LOOKUP, (key,)).fetchone()
    if row:
        return row[0]
    answer, tokens_in, tokens_out = call_model(prompt)
    conn.execute(STORE.format(tin=tokens_in, tout=tokens_out), (key, answer))
    return answer


def test_the_documented_application_flow(sluice, pg, fresh_db):
    """Three calls for one prompt: the model is called once; the usage table holds the model
    call (12 and 3 tokens) and one cached row; the third lookup never reached PostgreSQL."""
    pooler = usage_pooler(sluice, pg, fresh_db).start()
    pg.query("CREATE TABLE llm_cache (prompt_hash text PRIMARY KEY, answer text)", dbname=fresh_db)
    pg.query("GRANT ALL ON llm_cache TO app", dbname=fresh_db)
    calls = []

    def fake_model(prompt):
        calls.append(prompt)
        return prompt.upper(), 12, 3
    with usage_connect(pooler) as conn:
        answers = [complete(conn, "what is a connection pooler?", fake_model) for _ in range(3)]
    assert answers == ["WHAT IS A CONNECTION POOLER?"] * 3 and len(calls) == 1
    wait_for_rows(pg, fresh_db, 2)
    time.sleep(0.5)
    assert pg.query("SELECT cached, subject, model, input_tokens, output_tokens"
                    " FROM sluice.llm_usage ORDER BY cached", dbname=fresh_db) == \
        [(False, "alice", "gpt-4o", 12, 3), (True, "alice", "gpt-4o", 0, 0)]
    row = cache_row(pooler)
    assert (row["entries"], row["hits"], row["misses"]) == (1, 1, 2), row
