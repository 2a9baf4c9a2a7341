# SPDX-License-Identifier: PostgreSQL
"""Transaction and statement pooling (PgBouncer's semantics, docs/design.md, docs/errors.md).

In transaction pooling a server connection goes back to the pool when the
client's transaction ends (ReadyForQuery 'I' with no request of the client
left unanswered); in statement pooling after every statement, and transaction
blocks are refused. What these tests hold pgsluice to:

- many clients share few server connections, and real clients (pgbench in
  every query mode, psycopg with prepared statements, pipelines, COPY) work;
- session state never leaks between clients: the tracked parameters follow
  their client from server to server, and a server left dirty (a timed-out
  transaction, a dead connection) is never handed to another client;
- clients wait for a server in a queue bounded by query_wait_timeout, and the
  timeouts end a client with the SQLSTATE of docs/pooling.md;
- named prepared statements (protocol level) work whichever server a client
  lands on, as PgBouncer's max_prepared_statements support.

SQLSTATEs of FATAL errors are read with pgwire.py: libpq reports a FATAL error
followed by a closed connection as text only.
"""

import asyncio
import os
import re
import struct
import subprocess
import threading
import time

import psycopg
import pytest
from harness import wait_for

import pgwire
from pgwire import data_rows

APP_PASSWORD = "app_pw"

# A timeout of N seconds fires within N + 1/3 s (the janitor runs every 1/3 s);
# the bounds below leave room for a slow machine.
TIMEOUT_SLACK_S = 2.0


# -- helpers -------------------------------------------------------------------------


def transaction_pooler(sluice, **overrides):
    """A pooler in transaction pooling mode (overrides win)."""
    settings = {"pool_mode": "transaction"}
    settings.update(overrides)
    return sluice(**settings)


def login(pooler, dbname="app", user="app", password=APP_PASSWORD, timeout=5.0, params=None):
    return pgwire.login(pooler.host, pooler.port, user, dbname, password=password,
                        timeout=timeout, params=params)


def backend_gone(pg, pid):
    return not pg.query("select 1 from pg_stat_activity where pid = %s", (pid,),
                        dbname="postgres")


def app_backends_in_transaction(pg):
    """Server connections of role app that sit inside a transaction right now."""
    return pg.query("select count(*) from pg_stat_activity where usename = 'app'"
                    " and backend_type = 'client backend'"
                    " and state like 'idle in transaction%'", dbname="postgres")[0][0]


def no_leftover_backends(pg):
    """Earlier tests' poolers are stopped; wait until their server connections are gone."""
    wait_for(lambda: pg.pooler_backends() == 0, 10, interval=0.1,
             what="no leftover server connections of role app")


class BackendSampler(threading.Thread):
    """Samples the pooler's server connections (pg_stat_activity) until stopped."""

    def __init__(self, pg, interval=0.1):
        super().__init__(daemon=True)
        self.pg = pg
        self.interval = interval
        self.samples = []
        self.stopped = threading.Event()

    def run(self):
        while not self.stopped.is_set():
            try:
                self.samples.append(self.pg.pooler_backends())
            except psycopg.Error:
                pass
            self.stopped.wait(self.interval)

    def stop(self):
        self.stopped.set()
        self.join(10)
        return max(self.samples, default=0)


# -- extended query protocol over pgwire (psycopg cannot name its statements) ----------
def _cstr(text):
    return text.encode() + b"\0"


def send_parse(sess, name, sql, param_types=()):
    body = _cstr(name) + _cstr(sql) + struct.pack("!H", len(param_types))
    body += b"".join(struct.pack("!I", oid) for oid in param_types)
    sess.send(b"P", body)


def send_bind(sess, statement, params=(), portal=""):
    body = _cstr(portal) + _cstr(statement) + struct.pack("!H", 0)   # all parameters text
    body += struct.pack("!H", len(params))
    for value in params:
        if value is None:
            body += struct.pack("!i", -1)
        else:
            data = str(value).encode()
            body += struct.pack("!i", len(data)) + data
    body += struct.pack("!H", 0)                                      # all results text
    sess.send(b"B", body)


def send_describe(sess, kind, name):
    sess.send(b"D", kind.encode() + _cstr(name))


def send_execute(sess, portal="", max_rows=0):
    sess.send(b"E", _cstr(portal) + struct.pack("!i", max_rows))


def send_close(sess, kind, name):
    sess.send(b"C", kind.encode() + _cstr(name))


def send_sync(sess):
    sess.send(b"S")


def prepare(sess, name, sql, param_types=()):
    """Parse a named statement and Sync; fails unless ParseComplete comes back."""
    send_parse(sess, name, sql, param_types)
    send_sync(sess)
    types = [t for t, _ in sess.read_until_ready()]
    assert types == ["1"], f"Parse of {name!r}: got {types}"


def run_prepared(sess, name, params=()):
    """Bind + Execute + Sync of a named statement; returns the rows."""
    send_bind(sess, name, params)
    send_execute(sess)
    send_sync(sess)
    return data_rows(sess.read_until_ready())


def describe_statement(sess, name):
    """Describe a named statement: (parameter type OIDs, column names)."""
    send_describe(sess, "S", name)
    send_sync(sess)
    params, columns = None, None
    for msg_type, body in sess.read_until_ready():
        if msg_type == "t":
            n = struct.unpack("!H", body[:2])[0]
            params = list(struct.unpack(f"!{n}I", body[2:2 + 4 * n]))
        elif msg_type == "T":
            n = struct.unpack("!H", body[:2])[0]
            pos, columns = 2, []
            for _ in range(n):
                end = body.index(b"\0", pos)
                columns.append(body[pos:end].decode())
                pos = end + 1 + 18
        elif msg_type == "n":
            columns = []
    return params, columns


def close_statement(sess, name):
    send_close(sess, "S", name)
    send_sync(sess)
    types = [t for t, _ in sess.read_until_ready()]
    assert types == ["3"], f"Close of {name!r}: got {types}"


INT4, TEXT = 23, 25


# -- pgbench ---------------------------------------------------------------------------
@pytest.fixture(scope="module")
def pgbench_tables(pg):
    """pgbench's tables (scale 1) in database app, made directly on PostgreSQL."""
    if not pg.running:
        pg.start()
    env = dict(os.environ, PGPASSWORD=APP_PASSWORD, PGCONNECT_TIMEOUT="5")
    init = subprocess.run([str(pg.bindir / "pgbench"), "-i", "-s", "1", "-q", "-h", pg.host,
                           "-p", str(pg.port), "-U", "app", "app"],
                          capture_output=True, text=True, env=env, timeout=120)
    assert init.returncode == 0, init.stderr
    return env


@pytest.mark.parametrize("query_mode", ["simple", "extended", "prepared"])
def test_pgbench_50_clients_on_10_servers_without_failures(pg, sluice, pgbench_tables,
                                                           query_mode):
    no_leftover_backends(pg)
    # md5 towards the pooler: pgbench's -T includes connecting, and 50 SCRAM logins
    # (PBKDF2 on both sides) take seconds of a 3 s run under AddressSanitizer.
    pooler = transaction_pooler(sluice, default_pool_size=10, max_client_conn=100,
                                auth_type="md5")
    sampler = BackendSampler(pg)
    sampler.start()
    try:
        run = subprocess.run([str(pg.bindir / "pgbench"), "-n", "-S", "-M", query_mode,
                              "-c", "50", "-j", "2", "-T", "3",
                              "-h", pooler.host, "-p", str(pooler.port), "-U", "app", "app"],
                             capture_output=True, text=True, env=pgbench_tables, timeout=25)
    finally:
        most = sampler.stop()
    output = run.stdout + run.stderr
    # pgbench prints "failed transactions: 0" even when clients aborted on an
    # error (exit status 2): the exit status and stderr are checked too.
    assert run.returncode == 0, output
    assert "error" not in run.stderr.lower(), output
    assert re.search(r"number of failed transactions: 0\b", run.stdout), output
    processed = re.search(r"number of transactions actually processed: (\d+)", run.stdout)
    assert processed and int(processed.group(1)) > 0, output
    assert 0 < most <= 10, f"pooler used {most} server connections (pool size 10)"
    assert pg.pooler_backends() <= 10


# -- real clients --------------------------------------------------------------------------
def test_psycopg_prepared_statements_from_30_threads_on_5_servers(pg, sluice):
    no_leftover_backends(pg)
    pooler = transaction_pooler(sluice, default_pool_size=5)
    threads_n, rounds = 30, 20
    start = threading.Barrier(threads_n, timeout=15)
    errors, done = [], []
    lock = threading.Lock()

    def client(n):
        try:
            with psycopg.connect(pooler.dsn(), autocommit=True, prepare_threshold=1) as conn:
                start.wait()
                for i in range(rounds):
                    value = n * 1000 + i
                    if i % 10 == 9:
                        # a rolled back transaction: psycopg then sends DEALLOCATE ALL
                        with conn.transaction():
                            row = conn.execute("select %s::int + 1", (value,)).fetchone()
                            assert row == (value + 1,), row
                            raise psycopg.Rollback()
                    elif i % 5 == 4:
                        # now and then inside a transaction block
                        with conn.transaction():
                            row = conn.execute("select %s::int + 1", (value,)).fetchone()
                            assert row == (value + 1,), row
                            row = conn.execute("select %s::text || '-' || %s::int",
                                               (f"c{n}", i)).fetchone()
                            assert row == (f"c{n}-{i}",), row
                    else:
                        row = conn.execute("select %s::int + 1", (value,)).fetchone()
                        assert row == (value + 1,), row
                        row = conn.execute("select %s::text || '-' || %s::int",
                                           (f"c{n}", i)).fetchone()
                        assert row == (f"c{n}-{i}",), row
                made = getattr(getattr(conn, "_prepared", None), "_prepared_idx", None)
                if made is not None:   # psycopg's count of statements it prepared
                    assert made >= 2, "psycopg prepared no statement"
            with lock:
                done.append(n)
        except Exception as exc:  # reported below
            with lock:
                errors.append(f"client {n}: {type(exc).__name__}: {exc}")

    sampler = BackendSampler(pg)
    sampler.start()
    threads = [threading.Thread(target=client, args=(n,), daemon=True)
               for n in range(threads_n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(25)
    most = sampler.stop()
    assert not errors, "\n".join(errors[:10])
    assert len(done) == threads_n
    assert most <= 5, f"pooler used {most} server connections (pool size 5)"


def test_psycopg_pipeline_results_and_error_recovery(sluice):
    pooler = transaction_pooler(sluice, default_pool_size=2)
    with pooler.connect() as conn, pooler.connect() as other:
        with conn.pipeline():
            curs = [conn.execute("select %s::int * 2, %s::text", (i, f"q{i}"))
                    for i in range(10)]
            with conn.transaction():
                tx = conn.execute("select count(*) from generate_series(1, %s)", (50,))
        assert [c.fetchone() for c in curs] == [(i * 2, f"q{i}") for i in range(10)]
        assert tx.fetchone() == (50,)
        assert other.execute("select 'other'").fetchone() == ("other",)

        # An error in the middle: the queries after it are skipped, the error is
        # raised at the end, and the connection is fine afterwards.
        with pytest.raises(psycopg.errors.DivisionByZero):
            with conn.pipeline():
                first = conn.execute("select 1")
                conn.execute("select 1/0")
                conn.execute("select 3")
        assert first.fetchone() == (1,)
        assert conn.info.transaction_status == psycopg.pq.TransactionStatus.IDLE
        assert conn.execute("select 42").fetchone() == (42,)
        assert other.execute("select 43").fetchone() == (43,)
        with conn.pipeline():
            again = [conn.execute("select %s::int", (i,)) for i in range(3)]
        assert [c.fetchone() for c in again] == [(0,), (1,), (2,)]


def test_copy_in_and_out_inside_a_transaction(pg, sluice):
    pg.query("drop table if exists tp_copy")
    pg.query("create table tp_copy (id int, label text)")
    pg.query("alter table tp_copy owner to app")
    pooler = transaction_pooler(sluice, default_pool_size=1)
    try:
        with pooler.connect() as conn, pooler.connect() as other:
            rows = [(i, f"label {i}") for i in range(1, 1001)]
            with conn.transaction():
                with conn.cursor() as cur:
                    with cur.copy("copy tp_copy (id, label) from stdin") as copy:
                        for row in rows:
                            copy.write_row(row)
                    assert cur.rowcount == 1000
                    out = []
                    with cur.copy("copy (select id, label from tp_copy order by id)"
                                  " to stdout") as copy:
                        for row in copy.rows():
                            out.append((int(row[0]), row[1]))
                    assert out == rows
            # The server came back to the pool after the commit: the other client
            # (same single server) sees the committed rows.
            assert other.execute("select count(*) from tp_copy").fetchone() == (1000,)
            # COPY in autocommit mode, too.
            with conn.cursor() as cur:
                with cur.copy("copy tp_copy (id, label) from stdin") as copy:
                    copy.write_row((1001, "last"))
            assert other.execute("select max(id) from tp_copy").fetchone() == (1001,)
    finally:
        pg.query("drop table if exists tp_copy")


# -- session state ---------------------------------------------------------------------------
@pytest.mark.parametrize("param,value", [
    ("TimeZone", "Asia/Tokyo"),
    ("application_name", "set_by_client_a"),
    ("DateStyle", "SQL, DMY"),
    ("IntervalStyle", "iso_8601"),
])
def test_tracked_parameter_set_by_one_client_does_not_leak(pg, sluice, param, value):
    pooler = transaction_pooler(sluice, default_pool_size=1)
    with pooler.connect(application_name="client_a") as a, \
            pooler.connect(application_name="client_b") as b:
        pid_a = a.execute("select pg_backend_pid()").fetchone()[0]
        pid_b = b.execute("select pg_backend_pid()").fetchone()[0]
        assert pid_a == pid_b, "pool_size=1: both clients should share one server"
        before_b = b.execute(f"show {param}").fetchone()[0]
        assert before_b != value

        a.execute(f"set {param} = '{value}'")
        assert b.execute(f"show {param}").fetchone()[0] == before_b
        assert a.execute(f"show {param}").fetchone()[0] == value
        assert b.execute(f"show {param}").fetchone()[0] == before_b
        assert a.info.parameter_status(param) == value
        assert b.info.parameter_status(param) == before_b

        # It follows A to another server, too.
        pg.query("select pg_terminate_backend(%s)", (pid_a,), dbname="postgres")
        wait_for(lambda: backend_gone(pg, pid_a), 5, what="terminated server gone")
        time.sleep(0.2)
        assert a.execute("select pg_backend_pid()").fetchone()[0] != pid_a
        assert a.execute(f"show {param}").fetchone()[0] == value
        assert b.execute(f"show {param}").fetchone()[0] == before_b

        # A's RESET does not touch B either.
        a.execute(f"reset {param}")
        assert a.execute(f"show {param}").fetchone()[0] != value
        assert b.execute(f"show {param}").fetchone()[0] == before_b


# -- many clients, the wait queue and its timeouts ---------------------------------------------
def test_500_clients_on_10_servers_all_finish(pg, sluice):
    no_leftover_backends(pg)
    # md5 rather than SCRAM towards the pooler: 500 SCRAM logins cost the test
    # process (one asyncio thread doing libpq's PBKDF2) about 8 s of CPU, which
    # would measure the test machine instead of the wait queue.
    pooler = transaction_pooler(sluice, default_pool_size=10, max_client_conn=600,
                                query_wait_timeout=20, listen_backlog=1024, auth_type="md5")
    dsn = pooler.dsn(connect_timeout=20)
    clients = 500

    async def one(n):
        started = time.monotonic()
        async with await psycopg.AsyncConnection.connect(dsn, autocommit=True) as conn:
            cur = await conn.execute("select %s::int + 1", (n,))
            assert await cur.fetchone() == (n + 1,)
            async with conn.transaction():
                cur = await conn.execute("select %s::text, pg_sleep(0.002)", (f"c{n}",))
                assert (await cur.fetchone())[0] == f"c{n}"
            cur = await conn.execute("select pg_backend_pid()")
            await cur.fetchone()
        return time.monotonic() - started

    async def everyone():
        tasks = [one(n) for n in range(clients)]
        return await asyncio.wait_for(asyncio.gather(*tasks, return_exceptions=True), 25)

    sampler = BackendSampler(pg, interval=0.2)
    sampler.start()
    try:
        results = asyncio.run(everyone())
    finally:
        most = sampler.stop()
    failures = [r for r in results if isinstance(r, BaseException)]
    assert not failures, f"{len(failures)} of {clients} clients failed, e.g. " + \
        "; ".join(f"{type(f).__name__}: {f}" for f in failures[:5])
    slowest = max(results)
    assert slowest < 15, f"a client took {slowest:.1f} s (query_wait_timeout is 20 s)"
    assert most <= 10, f"pooler used {most} server connections (pool size 10)"


def test_query_wait_timeout_is_53300(sluice):
    pooler = transaction_pooler(sluice, default_pool_size=1, query_wait_timeout=1)
    holder = pooler.connect(autocommit=False)
    try:
        holder.execute("select 1")                  # BEGIN; select 1 -- holds the server
        started = time.monotonic()
        with pytest.raises(pgwire.ServerError) as caught:
            with login(pooler) as sess:
                sess.query("select 1")
        elapsed = time.monotonic() - started
        err = caught.value
        assert err.sqlstate == "53300", err
        assert err.severity == "FATAL"
        assert "query_wait_timeout" in err.message
        assert 0.9 <= elapsed <= 1 + TIMEOUT_SLACK_S, f"fired after {elapsed:.2f} s"

        # psycopg sees the message (libpq drops the SQLSTATE of a FATAL-then-close).
        with pooler.connect() as waiter:
            with pytest.raises(psycopg.Error, match="query_wait_timeout"):
                waiter.execute("select 1")

        holder.commit()
        assert holder.execute("select 2").fetchone() == (2,)
        holder.commit()
    finally:
        holder.close()
    with pooler.connect() as newcomer:
        assert newcomer.execute("select 3").fetchone() == (3,)


def test_idle_transaction_timeout_is_25P03_and_the_server_is_not_reused_dirty(pg, sluice):
    pg.query("drop table if exists tp_idle_tx")
    pg.query("create table tp_idle_tx (v int)")
    pg.query("alter table tp_idle_tx owner to app")
    pooler = transaction_pooler(sluice, default_pool_size=1, idle_transaction_timeout=1)
    try:
        with login(pooler, timeout=5) as sess:
            sess.query("begin")
            sess.query("insert into tp_idle_tx values (1)")
            xid = sess.query("select txid_current()")[0][0]
            started = time.monotonic()
            # Idle inside the transaction: the pooler ends the client by itself.
            with pytest.raises(pgwire.ServerError) as caught:
                sess.read_until_ready()
            elapsed = time.monotonic() - started
            err = caught.value
            assert err.sqlstate == "25P03", err
            assert err.severity == "FATAL"
            assert "idle_transaction_timeout" in err.message
            assert 0.9 <= elapsed <= 1 + TIMEOUT_SLACK_S, f"fired after {elapsed:.2f} s"
            assert sess.is_closed_by_peer(), "client left connected after the timeout"

        with pooler.connect() as newcomer:
            row = newcomer.execute("select txid_current_if_assigned() is null,"
                                   " now() = statement_timestamp(),"
                                   " (select count(*) from tp_idle_tx)").fetchone()
            assert row == (True, True, 0), f"newcomer inside the old transaction: {row}"
            assert newcomer.execute("select 1").fetchone() == (1,)
        assert pg.query("select count(*) from tp_idle_tx")[0][0] == 0, \
            "the timed-out transaction was committed"
        wait_for(lambda: app_backends_in_transaction(pg) == 0, 5,
                 what="no server left idle in transaction")
        assert pg.query("select txid_status(%s)", (int(xid),))[0][0] == "aborted"
    finally:
        pg.query("drop table if exists tp_idle_tx")


def test_query_timeout_is_57014_and_the_busy_server_is_not_reused(sluice):
    pooler = transaction_pooler(sluice, default_pool_size=1, query_timeout=1)
    with login(pooler) as sess:
        started = time.monotonic()
        with pytest.raises(pgwire.ServerError) as caught:
            sess.query("select pg_sleep(5)")
        elapsed = time.monotonic() - started
        err = caught.value
        assert err.sqlstate == "57014", err
        assert err.severity == "FATAL"
        assert "query_timeout" in err.message
        assert 0.9 <= elapsed <= 1 + TIMEOUT_SLACK_S, f"fired after {elapsed:.2f} s"
    started = time.monotonic()
    with pooler.connect() as newcomer:
        assert newcomer.execute("select 1").fetchone() == (1,)
    assert time.monotonic() - started < 2.5, "newcomer waited for the timed-out query"


def test_client_idle_timeout_is_57P05(sluice):
    pooler = transaction_pooler(sluice, client_idle_timeout=1)
    with login(pooler) as sess:
        sess.query("select 1")
        started = time.monotonic()
        with pytest.raises(pgwire.ServerError) as caught:
            sess.read_until_ready()
        elapsed = time.monotonic() - started
        assert caught.value.sqlstate == "57P05", caught.value
        assert "client_idle_timeout" in caught.value.message
        assert 0.9 <= elapsed <= 1 + TIMEOUT_SLACK_S, f"fired after {elapsed:.2f} s"


# -- statement pooling and per-database / per-user modes -------------------------------------
STATEMENT_MODE_MESSAGE = "transaction blocks not allowed in statement pooling mode"


def refusal_of_begin(sess):
    """Send BEGIN; returns (the ServerError that refused it, message types seen before it)."""
    sess.send(b"Q", b"begin\0")
    answered = []
    while True:
        try:
            msg_type, body = sess.read()
        except pgwire.WireError:
            raise AssertionError(f"connection closed without an error; saw {answered}")
        if msg_type == "E":
            return pgwire.ServerError(pgwire._parse_fields(body)), answered
        answered.append(msg_type)


def test_statement_mode_refuses_transaction_blocks_with_0A000(pg, sluice):
    pooler = sluice(pool_mode="statement", default_pool_size=2)
    with pooler.connect() as bystander:
        for n in range(5):
            assert bystander.execute("select %s::int", (n,)).fetchone() == (n,)

        with login(pooler) as sess:
            assert sess.query("select 1") == [["1"]]
            err, answered = refusal_of_begin(sess)
            assert err.sqlstate == "0A000", err
            assert err.severity == "FATAL"
            assert err.message == STATEMENT_MODE_MESSAGE
            # The refusal is the answer to BEGIN (PgBouncer's behaviour): a client
            # that saw ReadyForQuery 'T' first thinks BEGIN worked, and libpq
            # then reports only "server closed the connection unexpectedly".
            assert "Z" not in answered, \
                f"BEGIN was answered with {answered} before the refusal"
            assert sess.is_closed_by_peer(), "connection left open after the refusal"

        # psycopg outside autocommit sends BEGIN first.
        conn = pooler.connect(autocommit=False)
        try:
            with pytest.raises(psycopg.Error, match=STATEMENT_MODE_MESSAGE):
                conn.execute("select 1")
        finally:
            conn.close()

        assert bystander.execute("select 'still here'").fetchone() == ("still here",)
    with pooler.connect() as newcomer:
        assert newcomer.execute("select 1").fetchone() == (1,)
        assert newcomer.execute("select txid_current_if_assigned() is null").fetchone() == \
            (True,)
    wait_for(lambda: app_backends_in_transaction(pg) == 0, 5,
             what="no server left idle in transaction")


def test_pool_mode_of_database_entry_and_users_section(pg, sluice):
    base = f"host={pg.host} port={pg.port} dbname=app"
    pooler = sluice(pool_mode="session",
                    databases={"txdb": f"{base} pool_mode=transaction pool_size=1",
                               "stmtdb": f"{base} pool_mode=statement"},
                    extra_ini="[users]\ntrust_user = pool_mode=transaction")
    # txdb: transaction pooling, two idle clients share its one server.
    with pooler.connect(dbname="txdb") as a, pooler.connect(dbname="txdb") as b:
        pid_a = a.execute("select pg_backend_pid()").fetchone()[0]
        pid_b = b.execute("select pg_backend_pid()").fetchone()[0]
        assert pid_a == pid_b
        with a.transaction():
            a.execute("select 1")
    # stmtdb: statement pooling for app ...
    with login(pooler, dbname="stmtdb") as sess:
        err, _ = refusal_of_begin(sess)
        assert err.sqlstate == "0A000", err
    # ... but [users] trust_user says transaction, which wins over the database's mode.
    with login(pooler, dbname="stmtdb", user="trust_user", password="trust_pw") as sess:
        sess.query("begin")
        assert sess.query("select 1") == [["1"]]
        sess.query("commit")
    # app: the global session pooling allows transaction blocks.
    with login(pooler) as sess:
        sess.query("begin")
        sess.query("commit")


# -- server failures ---------------------------------------------------------------------------
def test_server_dying_mid_transaction_fails_only_its_client(pg, sluice):
    no_leftover_backends(pg)
    pooler = transaction_pooler(sluice, default_pool_size=1)
    with pooler.connect() as bystander:
        assert bystander.execute("select 1").fetchone() == (1,)
        with login(pooler) as sess:
            sess.query("begin")
            dead_pid = int(sess.query("select pg_backend_pid()")[0][0])
            pg.query("select pg_terminate_backend(%s)", (dead_pid,), dbname="postgres")
            with pytest.raises(pgwire.ServerError) as caught:
                sess.read_until_ready()
            err = caught.value
            assert err.sqlstate in ("57P01", "08006"), err
            assert err.severity == "FATAL"
            assert sess.is_closed_by_peer(), "client of a dead server left connected"

        for _ in range(3):
            pid = bystander.execute("select pg_backend_pid()").fetchone()[0]
            assert pid != dead_pid, "the dead server was handed to another client"
        with pooler.connect() as newcomer:
            assert newcomer.execute("select pg_backend_pid()").fetchone()[0] != dead_pid
        wait_for(lambda: backend_gone(pg, dead_pid), 5, what="terminated server gone")
        assert pg.pooler_backends() <= 1

        # An idle server that dies is not handed out either.
        idle_pid = bystander.execute("select pg_backend_pid()").fetchone()[0]
        pg.query("select pg_terminate_backend(%s)", (idle_pid,), dbname="postgres")
        wait_for(lambda: backend_gone(pg, idle_pid), 5, what="terminated server gone")
        time.sleep(0.2)
        new_pid = bystander.execute("select pg_backend_pid()").fetchone()[0]
        assert new_pid not in (dead_pid, idle_pid)
        assert bystander.execute("select 'ok'").fetchone() == ("ok",)


# -- named prepared statements ---------------------------------------------------------------
def test_same_statement_name_from_two_clients_on_one_server(sluice):
    pooler = transaction_pooler(sluice, default_pool_size=1)
    with login(pooler) as a, login(pooler) as b:
        assert a.query("select pg_backend_pid()") == b.query("select pg_backend_pid()")
        prepare(a, "stmt", "select $1::int + 100")
        prepare(b, "stmt", "select $1::text || '-b'")
        for n in range(3):
            assert run_prepared(a, "stmt", [n]) == [[str(100 + n)]]
            assert run_prepared(b, "stmt", [f"x{n}"]) == [[f"x{n}-b"]]
        assert describe_statement(a, "stmt") == ([INT4], ["?column?"])
        assert describe_statement(b, "stmt") == ([TEXT], ["?column?"])
        # The unnamed statement keeps working beside them.
        send_parse(a, "", "select $1::int * 3")
        send_bind(a, "", [7])
        send_execute(a)
        send_sync(a)
        assert data_rows(a.read_until_ready()) == [["21"]]


def test_named_statement_works_on_a_new_server(pg, sluice):
    pooler = transaction_pooler(sluice, default_pool_size=1)
    with login(pooler) as sess:
        prepare(sess, "doubler", "select $1::int * 2 as doubled")
        assert run_prepared(sess, "doubler", [21]) == [["42"]]
        old_pid = int(sess.query("select pg_backend_pid()")[0][0])
        pg.query("select pg_terminate_backend(%s)", (old_pid,), dbname="postgres")
        wait_for(lambda: backend_gone(pg, old_pid), 5, what="terminated server gone")
        time.sleep(0.2)

        assert describe_statement(sess, "doubler") == ([INT4], ["doubled"])
        assert run_prepared(sess, "doubler", [5]) == [["10"]]
        assert int(sess.query("select pg_backend_pid()")[0][0]) != old_pid
        # Parse, Bind and Execute pipelined in one go, before any answer.
        send_parse(sess, "adder", "select $1::int + $2::int")
        send_sync(sess)
        send_bind(sess, "adder", [2, 3])
        send_execute(sess)
        send_sync(sess)
        assert [t for t, _ in sess.read_until_ready()] == ["1"]
        assert data_rows(sess.read_until_ready()) == [["5"]]


def test_named_statement_inside_transaction_then_outside(sluice):
    pooler = transaction_pooler(sluice, default_pool_size=1)
    with login(pooler) as a, login(pooler) as b:
        a.query("begin")
        prepare(a, "in_tx", "select $1::int - 1")
        assert run_prepared(a, "in_tx", [10]) == [["9"]]
        a.query("commit")
        prepare(b, "in_tx", "select 'b'")         # same name, another client
        assert run_prepared(b, "in_tx") == [["b"]]
        assert run_prepared(a, "in_tx", [1]) == [["0"]]
        b.query("begin")
        assert run_prepared(b, "in_tx") == [["b"]]
        b.query("commit")


def test_close_forgets_only_the_clients_own_statement(sluice):
    pooler = transaction_pooler(sluice, default_pool_size=1)
    with login(pooler) as a, login(pooler) as b:
        prepare(a, "s1", "select 'a1'")
        prepare(b, "s1", "select 'b1'")
        close_statement(a, "s1")
        with pytest.raises(pgwire.ServerError) as caught:
            run_prepared(a, "s1")
        assert caught.value.sqlstate == "26000", caught.value
        assert run_prepared(b, "s1") == [["b1"]]
        prepare(a, "s1", "select 'a2'")          # the name is free again
        assert run_prepared(a, "s1") == [["a2"]]
        assert run_prepared(b, "s1") == [["b1"]]
        # Closing a statement that does not exist is not an error (PostgreSQL's rule).
        close_statement(a, "never_prepared")


@pytest.mark.parametrize("command", ["DEALLOCATE ALL", "DISCARD ALL"])
def test_deallocate_all_and_discard_all_from_the_client(sluice, command):
    pooler = transaction_pooler(sluice, default_pool_size=1)
    with login(pooler) as a, login(pooler) as b:
        prepare(a, "sa", "select 'a'")
        prepare(b, "sb", "select 'b'")
        a.query(command)                     # runs on the server b's statement is on, too
        with pytest.raises(pgwire.ServerError) as caught:
            run_prepared(a, "sa")
        assert caught.value.sqlstate == "26000", caught.value
        prepare(a, "sa", "select 'a again'")
        assert run_prepared(a, "sa") == [["a again"]]
        assert run_prepared(b, "sb") == [["b"]]


def test_psycopg_rollback_with_prepared_statements_on_a_shared_server(sluice):
    # After a rollback psycopg forgets its prepared statements and sends
    # DEALLOCATE ALL, which also drops what the pooler prepared on that server
    # for the other client.
    pooler = transaction_pooler(sluice, default_pool_size=1)
    queries = [("select %s::text || '1'", lambda v: (f"{v}1",)),
               ("select length(%s::text) + 2", lambda v: (len(v) + 2,))]
    with psycopg.connect(pooler.dsn(), autocommit=True, prepare_threshold=0) as a, \
            psycopg.connect(pooler.dsn(), autocommit=True, prepare_threshold=0) as b:
        for conn, tag in ((a, "a"), (b, "bb")):
            for sql, expect in queries:
                assert conn.execute(sql, (tag,)).fetchone() == expect(tag)
        with a.transaction():
            assert a.execute(queries[0][0], ("in tx",)).fetchone() == ("in tx1",)
            raise psycopg.Rollback()
        for round_ in range(2):
            for conn, tag in ((a, f"a{round_}"), (b, f"bb{round_}")):
                for sql, expect in queries:
                    assert conn.execute(sql, (tag,)).fetchone() == expect(tag)


def test_more_statements_than_max_prepared_statements(sluice):
    pooler = transaction_pooler(sluice, default_pool_size=1, max_prepared_statements=2)
    with login(pooler) as sess:
        for k in range(5):
            prepare(sess, f"s{k}", f"select $1::int + {k * 10}")
        for _ in range(2):
            for k in range(5):
                assert run_prepared(sess, f"s{k}", [1]) == [[str(1 + k * 10)]]
        on_server = int(sess.query("select count(*) from pg_prepared_statements")[0][0])
        assert on_server <= 2, f"{on_server} statements on the server (max 2)"


def test_max_prepared_statements_0_passes_named_statements_through(sluice):
    pooler = transaction_pooler(sluice, default_pool_size=1, max_prepared_statements=0)
    with login(pooler) as a, login(pooler) as b:
        prepare(a, "shared", "select 1")
        send_parse(b, "shared", "select 2")
        send_sync(b)
        with pytest.raises(pgwire.ServerError) as caught:
            b.read_until_ready()
        assert caught.value.sqlstate == "42P05", caught.value   # the server's own error
        assert caught.value.severity == "ERROR"
        assert b.query("select 'b fine'") == [["b fine"]]
