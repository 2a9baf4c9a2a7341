# SPDX-License-Identifier: PostgreSQL
"""Prepared statements under pooling (issue 17, items 6, 11, 12, 13).

Each test holds pgsluice to what a direct PostgreSQL connection does, and
runs the same steps against PostgreSQL itself where the answer is compared:

- Parse of a name already in use is 42P05, in every pool mode, and the old
  statement keeps its text (item 6);
- SQL `DEALLOCATE name` forgets the client's statement under transaction
  pooling, without failing the transaction it runs in (item 11);
- pgbench -M prepared makes progress when every server is held by a client
  that waits on the same pgbench thread (item 12);
- a shared statement whose result type changed (ALTER TABLE) is prepared
  afresh instead of failing every client with 0A000 (item 13).
"""

import os
import re
import struct
import subprocess

import psycopg
import pytest

import pgwire
from pgwire import data_rows

APP_PASSWORD = "app_pw"


def _cstr(text):
    return text.encode() + b"\0"


def send_parse(sess, name, sql):
    sess.send(b"P", _cstr(name) + _cstr(sql) + struct.pack("!H", 0))


def send_bind(sess, statement, portal=""):
    sess.send(b"B", _cstr(portal) + _cstr(statement) + struct.pack("!HHH", 0, 0, 0))


def send_execute(sess):
    sess.send(b"E", _cstr("") + struct.pack("!i", 0))


def send_sync(sess):
    sess.send(b"S")


class one_write:
    """Within the block, sess.send collects its messages; they leave in one write at its end."""

    def __init__(self, sess):
        self.sess, self.chunks = sess, []

    def __enter__(self):
        self.sess.send = lambda msg_type, body=b"": self.chunks.append(
            msg_type + struct.pack("!I", len(body) + 4) + body)
        return self

    def __exit__(self, *exc):
        del self.sess.send
        self.sess.sock.sendall(b"".join(self.chunks))


def read_batch(sess):
    """Messages up to ReadyForQuery: (types, sqlstate of the error or None, status, rows)."""
    types, error, seen = [], None, []
    while True:
        msg_type, body = sess.read()
        if msg_type == "Z":
            return types, error, body.decode(), data_rows(seen)
        if msg_type == "E":
            error = pgwire._parse_fields(body).get("sqlstate")
        if msg_type not in ("N", "S"):
            types.append(msg_type)
            seen.append((msg_type, body))


def direct_login(pg):
    return pgwire.login(pg.host, pg.port, "app", "app", password=APP_PASSWORD)


def pooled_login(pooler):
    return pgwire.login(pooler.host, pooler.port, "app", "app", password=APP_PASSWORD)


# -- item 6: Parse of a name in use ----------------------------------------------------------
def redefine_steps(sess):
    """Parse x, then Parse x again (other text, then same text) in one batch each."""
    out = []
    send_parse(sess, "x", "select 'old' as v")
    send_sync(sess)
    out.append(read_batch(sess)[:3])
    # a second Parse of x, then a Bind/Execute of x in the same batch: all skipped
    send_parse(sess, "x", "select 'new' as v")
    send_bind(sess, "x")
    send_execute(sess)
    send_sync(sess)
    out.append(read_batch(sess)[:3])
    send_parse(sess, "x", "select 'old' as v")     # the same text: 42P05 as well
    send_sync(sess)
    out.append(read_batch(sess)[:3])
    send_bind(sess, "x")
    send_execute(sess)
    send_sync(sess)
    types, error, status, rows = read_batch(sess)
    out.append((types, error, status, rows))
    # a Parse that fails defines nothing: the name is free for the next one
    send_parse(sess, "bad", "selec 1")
    send_sync(sess)
    out.append(read_batch(sess)[:3])
    send_parse(sess, "bad", "select 'fixed'")
    send_bind(sess, "bad")
    send_execute(sess)
    send_sync(sess)
    out.append(read_batch(sess)[1:])
    # the same, pipelined in one write: the second Parse waits for the first one's answer
    with one_write(sess):
        send_parse(sess, "bad2", "selec 1")
        send_sync(sess)
        send_parse(sess, "bad2", "select 'fixed again'")
        send_bind(sess, "bad2")
        send_execute(sess)
        send_sync(sess)
        send_parse(sess, "bad2", "select 'dup'")
        send_sync(sess)
    out += [read_batch(sess)[:3], read_batch(sess)[1:], read_batch(sess)[:3]]
    # the unnamed statement is always replaceable
    send_parse(sess, "", "select 1")
    send_parse(sess, "", "select 2")
    send_bind(sess, "")
    send_execute(sess)
    send_sync(sess)
    out.append(read_batch(sess)[1:])
    return out


@pytest.mark.parametrize("mode", ["session", "transaction", "statement"])
def test_parse_of_a_name_in_use_is_42P05_as_on_postgresql(pg, sluice, mode):
    pooler = sluice(pool_mode=mode, default_pool_size=1)
    with direct_login(pg) as direct:
        expected = redefine_steps(direct)
    assert expected[1] == (["E"], "42P05", "I"), expected
    assert expected[3][3] == [["old"]], expected
    with pooled_login(pooler) as sess:
        assert redefine_steps(sess) == expected


def test_parse_of_a_name_in_use_inside_a_transaction_fails_it(pg, sluice):
    pooler = sluice(pool_mode="transaction", default_pool_size=1)
    with pooled_login(pooler) as sess, pooled_login(pooler) as other:
        sess.query("begin")
        send_parse(sess, "y", "select 1")
        send_sync(sess)
        assert read_batch(sess)[:3] == (["1"], None, "T")
        send_parse(sess, "y", "select 2")
        send_sync(sess)
        assert read_batch(sess)[:3] == (["E"], "42P05", "E")
        sess.query("rollback")
        # the name is still the old statement, and the server went back to the pool
        send_bind(sess, "y")
        send_execute(sess)
        send_sync(sess)
        assert read_batch(sess)[3] == [["1"]]
        assert other.query("select 'other'") == [["other"]]


# -- item 11: SQL DEALLOCATE name --------------------------------------------------------------
def test_deallocate_name_inside_a_transaction_keeps_the_commit(pg, sluice):
    """PHP PDO's way: DEALLOCATE each statement inside the transaction, then COMMIT."""
    pg.query("drop table if exists fp_dealloc")
    pg.query("create table fp_dealloc (id int)")
    pg.query("alter table fp_dealloc owner to app")
    pooler = sluice(pool_mode="transaction", default_pool_size=1)
    try:
        with pooled_login(pooler) as sess:
            sess.query("begin")
            send_parse(sess, "pdo_stmt_00000001", "insert into fp_dealloc values (1)")
            send_bind(sess, "pdo_stmt_00000001")
            send_execute(sess)
            send_sync(sess)
            assert read_batch(sess)[:3] == (["1", "2", "C"], None, "T")
            sess.send(b"Q", _cstr("DEALLOCATE pdo_stmt_00000001"))
            types, error, status, _ = read_batch(sess)
            assert (error, status) == (None, "T")
            assert sess.query("commit") == []
            # the name is gone, as on PostgreSQL
            send_bind(sess, "pdo_stmt_00000001")
            send_execute(sess)
            send_sync(sess)
            assert read_batch(sess)[1:3] == ("26000", "I")
        assert pg.query("select count(*) from fp_dealloc") == [(1,)]
    finally:
        pg.query("drop table if exists fp_dealloc")


def deallocate_forms(sess):
    """DEALLOCATE in its spellings: simple and extended protocol, quoting, case folding."""
    out = []
    for name, command in [("abc", "deallocate ABC"),
                          ("Mixed", 'DEALLOCATE PREPARE "Mixed";'),
                          ("q\"x", 'DEALLOCATE "q""x"'),
                          ("abc", "deallocate abc")]:       # the second time: 26000
        if command != "deallocate abc":
            send_parse(sess, name, "select 1")
            send_sync(sess)
            read_batch(sess)
        sess.send(b"Q", _cstr(command))
        types, error, status, _ = read_batch(sess)
        out.append((command, [t for t in types if t != "E"], error, status))
    # extended protocol (psycopg in pipeline mode, drivers that prepare everything)
    send_parse(sess, "ext", "select 1")
    send_sync(sess)
    read_batch(sess)
    for _ in range(2):
        send_parse(sess, "", "DEALLOCATE ext")
        send_bind(sess, "")
        send_execute(sess)
        send_sync(sess)
        out.append(read_batch(sess)[:3])
    send_bind(sess, "ext")
    send_execute(sess)
    send_sync(sess)
    out.append(read_batch(sess)[1:3])
    return out


def test_deallocate_name_forms_as_on_postgresql(pg, sluice):
    pooler = sluice(pool_mode="transaction", default_pool_size=1)
    with direct_login(pg) as direct:
        expected = deallocate_forms(direct)
    assert expected[-1] == ("26000", "I"), expected
    with pooled_login(pooler) as sess, pooled_login(pooler) as other:
        send_parse(other, "abc", "select 'other'")     # another client's statement of that name
        send_sync(other)
        read_batch(other)
        assert deallocate_forms(sess) == expected
        send_bind(other, "abc")
        send_execute(other)
        send_sync(other)
        assert read_batch(other)[3] == [["other"]]


def pipelined_deallocate(sess):
    """Simple Queries sent back to back: DEALLOCATE waits for the answers before it."""
    out = []
    for first in ["select pg_sleep(0.2)", "select 1/0"]:
        send_parse(sess, "pipe", "select 1")
        send_sync(sess)
        read_batch(sess)
        for sql in ["begin", first, "DEALLOCATE pipe", "commit"]:
            sess.send(b"Q", _cstr(sql))
        for _ in range(4):
            types, error, status, _ = read_batch(sess)
            out.append((error, status))
        # the name is gone after the first round, kept after the failed one
        send_bind(sess, "pipe")
        send_execute(sess)
        send_sync(sess)
        out.append(read_batch(sess)[1:])
        sess.query("DEALLOCATE ALL")
    return out


def test_pipelined_deallocate_name_as_on_postgresql(pg, sluice):
    pooler = sluice(pool_mode="transaction", default_pool_size=1)
    with direct_login(pg) as direct:
        expected = pipelined_deallocate(direct)
    assert expected[2] == (None, "T") and expected[7] == ("25P02", "E"), expected
    with pooled_login(pooler) as sess, pooled_login(pooler) as other:
        assert pipelined_deallocate(sess) == expected
        assert other.query("select 'other'") == [["other"]]


def test_psycopg_prepared_max_eviction(pg, sluice):
    """psycopg 3 sends DEALLOCATE name when its prepared_max is reached."""
    pooler = sluice(pool_mode="transaction", default_pool_size=1)
    with psycopg.connect(pooler.dsn(), autocommit=True, prepare_threshold=0) as conn:
        conn.prepared_max = 2
        for round_ in range(3):
            for k in range(5):
                row = conn.execute(f"select %s::int + {k}", (round_,)).fetchone()
                assert row == (round_ + k,)
            with conn.transaction():
                for k in range(5):
                    row = conn.execute(f"select %s::int * {k + 1}", (round_,)).fetchone()
                    assert row == (round_ * (k + 1),)


# -- item 12: pgbench -M prepared on a pool smaller than its clients -----------------------------
def test_pgbench_prepared_tpcb_on_one_server_makes_progress(pg, sluice):
    env = dict(os.environ, PGPASSWORD=APP_PASSWORD, PGCONNECT_TIMEOUT="5")
    init = subprocess.run([str(pg.bindir / "pgbench"), "-i", "-s", "1", "-q", "-h", pg.host,
                           "-p", str(pg.port), "-U", "app", "app"],
                          capture_output=True, text=True, env=env, timeout=120)
    assert init.returncode == 0, init.stderr
    pooler = sluice(pool_mode="transaction", default_pool_size=1, auth_type="md5")
    try:
        run = subprocess.run([str(pg.bindir / "pgbench"), "-n", "-M", "prepared", "-c", "2",
                              "-j", "1", "-t", "20", "-h", pooler.host, "-p", str(pooler.port),
                              "-U", "app", "app"],
                             capture_output=True, text=True, env=env, timeout=30)
    except subprocess.TimeoutExpired:
        pytest.fail("pgbench -M prepared made no progress in 30 s")
    output = run.stdout + run.stderr
    assert run.returncode == 0, output
    processed = re.search(r"number of transactions actually processed: (\d+)", run.stdout)
    assert processed and int(processed.group(1)) == 40, output


def test_parse_of_a_known_text_needs_no_server(pg, sluice):
    """The only server is held inside a transaction: another client still prepares."""
    pooler = sluice(pool_mode="transaction", default_pool_size=1, query_wait_timeout=30)
    with pooled_login(pooler) as holder, pooled_login(pooler) as other:
        send_parse(holder, "h", "select $1::int + 1")
        send_sync(holder)
        assert read_batch(holder)[:3] == (["1"], None, "I")
        holder.query("begin")
        send_parse(other, "o", "select $1::int + 1")      # the same text: no server needed
        send_sync(other)
        assert read_batch(other)[:3] == (["1"], None, "I")
        send_parse(other, "o", "select 2")                # a name in use: 42P05, still no server
        send_parse(other, "o2", "select 2")               # skipped up to Sync
        send_sync(other)
        assert read_batch(other)[:3] == (["E"], "42P05", "I")
        holder.query("commit")
        other.send(b"B", _cstr("") + _cstr("o") + struct.pack("!HHi", 0, 1, 1) + b"4" + struct.pack("!H", 0))
        send_execute(other)
        send_sync(other)
        assert read_batch(other)[1:] == (None, "I", [["5"]])
        send_bind(other, "o2")                            # never defined
        send_execute(other)
        send_sync(other)
        assert read_batch(other)[1:3] == ("26000", "I")


# -- item 13: a shared statement after ALTER TABLE ---------------------------------------------
def test_shared_statement_after_alter_table_is_prepared_afresh(pg, sluice):
    pg.query("drop table if exists fp_alter")
    pg.query("create table fp_alter (a int)")
    pg.query("insert into fp_alter values (1)")
    pg.query("alter table fp_alter owner to app")
    pooler = sluice(pool_mode="transaction", default_pool_size=1)
    sql = "select * from fp_alter"

    def run(sess):
        send_bind(sess, "s")
        send_execute(sess)
        send_sync(sess)
        types, error, status, rows = read_batch(sess)
        return error, rows

    try:
        with pooled_login(pooler) as first:
            send_parse(first, "s", sql)
            send_sync(first)
            read_batch(first)
            assert run(first) == (None, [["1"]])
            pg.query("alter table fp_alter add column b int default 7")
            # a brand-new client never sees 0A000 (PostgreSQL parses it afresh)
            with pooled_login(pooler) as second:
                send_parse(second, "other_name", sql)
                send_sync(second)
                assert read_batch(second)[:2] == (["1"], None)
                send_bind(second, "other_name")
                send_execute(second)
                send_sync(second)
                assert read_batch(second)[1:] == (None, "I", [["1", "7"]])
            # the first client: 0A000 at most once, then the new columns
            error, rows = run(first)
            if error is not None:
                assert error == "0A000"
                error, rows = run(first)
            assert (error, rows) == (None, [["1", "7"]])
            pg.query("alter table fp_alter add column c int default 8")
            error, rows = run(first)
            if error is not None:
                assert error == "0A000"
                error, rows = run(first)
            assert (error, rows) == (None, [["1", "7", "8"]])
            # a client new after that change, on the statement prepared afresh
            with pooled_login(pooler) as third:
                send_parse(third, "s", sql)
                send_bind(third, "s")
                send_execute(third)
                send_sync(third)
                assert read_batch(third)[1:] == (None, "I", [["1", "7", "8"]])
    finally:
        pg.query("drop table if exists fp_alter")


def test_psycopg_clients_after_alter_table(pg, sluice):
    pg.query("drop table if exists fp_alter2")
    pg.query("create table fp_alter2 (a int)")
    pg.query("insert into fp_alter2 values (1)")
    pg.query("alter table fp_alter2 owner to app")
    pooler = sluice(pool_mode="transaction", default_pool_size=2)
    sql = "select * from fp_alter2 where a = %s"
    try:
        with psycopg.connect(pooler.dsn(), autocommit=True, prepare_threshold=0) as a:
            assert a.execute(sql, (1,)).fetchall() == [(1,)]
            pg.query("alter table fp_alter2 add column b text default 'x'")
            for _ in range(3):
                with psycopg.connect(pooler.dsn(), autocommit=True, prepare_threshold=0) as b:
                    assert b.execute(sql, (1,)).fetchall() == [(1, "x")]
            try:
                rows = a.execute(sql, (1,)).fetchall()
            except psycopg.errors.FeatureNotSupported:
                rows = a.execute(sql, (1,)).fetchall()
            assert rows == [(1, "x")]
    finally:
        pg.query("drop table if exists fp_alter2")


# -- a reset query that keeps prepared statements ---------------------------------------------
@pytest.mark.parametrize("reset_query", ["RESET ALL", "DISCARD ALL"])
def test_server_reset_query_always_keeps_track_of_what_the_reset_drops(pg, sluice, reset_query):
    """server_reset_query_always = 1 runs the reset after every transaction. RESET ALL keeps the
    server's prepared statements, so pgsluice must not forget them (it used to, and the next
    Parse it injected failed with 42P05); DISCARD ALL drops them, so pgsluice prepares again."""
    pooler = sluice(pool_mode="transaction", default_pool_size=1, server_reset_query_always=1,
                    server_reset_query=reset_query)
    with psycopg.connect(pooler.dsn(), autocommit=True, prepare_threshold=0) as conn:
        for n in range(4):
            assert conn.execute("select %s::int * 2", (n,)).fetchone() == (n * 2,)
        with conn.transaction():
            assert conn.execute("select %s::int * 2", (5,)).fetchone() == (10,)
