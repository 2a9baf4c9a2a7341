# SPDX-License-Identifier: PostgreSQL
"""Crossing clients and hangs (issue 17): cancels reach only their own client's
query, failed server logins answer waiting clients at once, per-database and
per-user limits make room by closing other pools' idle servers, and every
shutdown signal removes the pidfile."""

import signal
import socket
import struct
import threading
import time

import psycopg
import pytest
import harness
from harness import wait_for

import pgwire


# -- item 10: signals and the pidfile ---------------------------------------------------
def test_every_shutdown_signal_exits_promptly_and_removes_the_pidfile(sluice):
    # SIGQUIT is PgBouncer's immediate shutdown; SIGTERM and SIGINT stop as before.
    for sig in (signal.SIGQUIT, signal.SIGTERM, signal.SIGINT):
        pooler = sluice()
        with pooler.connect() as conn:
            assert conn.execute("select 1").fetchone() == (1,)
        assert pooler.pidfile.exists()
        started = time.monotonic()
        problems = pooler.stop(sig=sig)
        assert not problems, problems
        assert time.monotonic() - started < 5
        name = signal.Signals(sig).name
        assert pooler.proc.returncode == 0, f"exit status {pooler.proc.returncode} after {name}"
        assert not pooler.pidfile.exists(), f"pidfile left behind after {name}"

    # a fatal start-up error after the pidfile was written: the listen port is taken
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as blocker:
        blocker.bind(("127.0.0.1", 0))
        blocker.listen(1)
        pooler = sluice(start=False, listen_port=blocker.getsockname()[1])
        out = harness.run_binary([pooler.ini_path], cwd=pooler.workdir)
        assert out.returncode > 0, out.stdout
        assert not pooler.pidfile.exists(), "pidfile left behind after a failed start"


def test_a_sighup_while_start_up_still_blocks_is_a_reload_once_it_ends(sluice):
    # The port accepts before start-up is over: with ai_database, the limits' preload waits
    # on a blocking connection (here to a socket that never answers, up to its 5 s connect
    # timeout). A reload sent then must be held until the event loop runs, not kill the
    # process (SIGHUP's default action).
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as silent:
        silent.bind(("127.0.0.1", 0))
        silent.listen(8)              # the kernel completes the handshake; nobody answers
        port = silent.getsockname()[1]
        pooler = sluice(start=False, ai_database="usage",
                        databases={"usage": f"host=127.0.0.1 port={port} dbname=usage user=app"})
        pooler.start()                # returns once the port accepts
        assert "started, process" not in pooler.log_text(lines=None), "start-up did not block"
        pooler.reload()
        time.sleep(0.5)
        assert pooler.proc.poll() is None, f"SIGHUP during start-up: exit {pooler.proc.returncode}"
        wait_for(lambda: "got SIGHUP" in pooler.log_text(lines=None), 15, what="the held SIGHUP")
    with pooler.connect() as conn:
        assert conn.execute("select 1").fetchone() == (1,)


def test_sigquit_with_a_client_inside_a_query_exits_at_once(sluice):
    pooler = sluice()
    conn = pooler.connect()
    worker = threading.Thread(target=_swallow, args=(conn.execute, "select pg_sleep(10)"),
                              daemon=True)
    worker.start()
    time.sleep(0.3)
    started = time.monotonic()
    problems = pooler.stop(sig=signal.SIGQUIT)
    assert not problems, problems
    assert time.monotonic() - started < 3
    assert pooler.proc.returncode == 0
    assert not pooler.pidfile.exists()
    worker.join(5)
    conn.close()


def _swallow(fn, *args):
    try:
        fn(*args)
    except psycopg.Error:
        pass


# -- item 8: a failing server login answers waiting clients at once ----------------------
def _login_error_within(pooler, dbname, seconds, user="app"):
    """Log in to dbname and run a query; returns (ServerError or None, elapsed s)."""
    started = time.monotonic()
    try:
        with pgwire.login(pooler.host, pooler.port, user, dbname,
                          password=harness.PASSWORDS[user], timeout=seconds) as sess:
            sess.query("select 1")
    except pgwire.ServerError as err:
        return err, time.monotonic() - started
    return None, time.monotonic() - started


def test_wrong_server_password_fails_clients_at_once_and_a_reload_fixes_it(pg, sluice):
    entry = f"host={pg.host} port={pg.port} dbname=app user=app password=wrong_pw"
    pooler = sluice(databases={"badpw": entry}, server_login_retry=15, query_wait_timeout=120)
    results = [None] * 4

    def one(i):
        results[i] = _login_error_within(pooler, "badpw", 10)
    threads = [threading.Thread(target=one, args=(i,)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(15)
    for err, elapsed in results:
        assert err is not None, "query succeeded with a wrong server password"
        assert err.sqlstate == "28P01", err
        assert elapsed < 3, f"client waited {elapsed:.1f} s for the server's error"
    # a newcomer inside server_login_retry fails fast too
    err, elapsed = _login_error_within(pooler, "badpw", 10)
    assert err is not None and err.sqlstate == "28P01", err
    assert elapsed < 3

    # the operator fixes the entry: the next login works, without waiting
    # out server_login_retry (15 s)
    pooler.databases["badpw"] = entry.replace("wrong_pw", "app_pw")
    pooler.reload()
    wait_for(lambda: _login_error_within(pooler, "badpw", 5)[0] is None, 5, interval=0.3,
             what="a login after the password was fixed")


def test_password_broken_by_reload_fails_waiting_client_while_a_session_holds_a_server(pg, sluice):
    good = f"host={pg.host} port={pg.port} dbname=app user=app password=app_pw"
    pooler = sluice(databases={"held": good}, server_login_retry=15, query_wait_timeout=120)
    holder = pooler.connect(dbname="held")
    try:
        assert holder.execute("select 1").fetchone() == (1,)
        # the password in the entry goes wrong; the held server keeps its session
        pooler.databases["held"] = good.replace("app_pw", "wrong_pw")
        pooler.reload()
        time.sleep(0.5)
        err, elapsed = _login_error_within(pooler, "held", 20)
        assert err is not None and err.sqlstate == "28P01", err
        assert elapsed < 3, f"client waited {elapsed:.1f} s for the server's error"
        err, elapsed = _login_error_within(pooler, "held", 20)
        assert err is not None and err.sqlstate == "28P01", err
        assert elapsed < 3
        assert holder.execute("select 2").fetchone() == (2,)
    finally:
        holder.close()


def test_password_changed_in_postgres_fails_clients_at_once_until_auth_file_is_fixed(
        pg, sluice, monkeypatch):
    pg.query("DROP ROLE IF EXISTS stale_user")
    pg.query("CREATE ROLE stale_user LOGIN PASSWORD 'new_pw'")
    monkeypatch.setitem(harness.PASSWORDS, "stale_user", "old_pw")   # auth_file is behind
    pooler = sluice(server_login_retry=15, query_wait_timeout=120)
    try:
        for _ in range(2):    # the first client, and a newcomer inside server_login_retry
            err, elapsed = _login_error_within(pooler, "app", 10, user="stale_user")
            assert err is not None and err.sqlstate == "28P01", err
            assert elapsed < 3, f"client waited {elapsed:.1f} s for the server's error"
        # the operator updates auth_file and reloads: logins work at once
        monkeypatch.setitem(harness.PASSWORDS, "stale_user", "new_pw")
        pooler.reload()
        wait_for(lambda: _login_error_within(pooler, "app", 5, user="stale_user")[0] is None,
                 5, interval=0.3, what="a login after auth_file was fixed")
    finally:
        pg.query("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE usename = 'stale_user'")
        wait_for(lambda: not pg.query("SELECT 1 FROM pg_stat_activity WHERE usename = 'stale_user'"),
                 5, what="stale_user's backends gone")
        pg.query("DROP ROLE IF EXISTS stale_user")


def test_auth_query_database_that_cannot_be_reached_fails_logins_at_once(pg, sluice, monkeypatch):
    pg.query("DROP ROLE IF EXISTS aq_fix_lookup")
    pg.query("DROP ROLE IF EXISTS aq_fix_role")
    pg.query("CREATE ROLE aq_fix_lookup LOGIN SUPERUSER PASSWORD 'lookup_pw'")
    pg.query("CREATE ROLE aq_fix_role LOGIN PASSWORD 'aq_pw'")
    monkeypatch.setitem(harness.PASSWORDS, "aq_fix_lookup", "lookup_pw")
    bad = f"host={pg.host} port={pg.port} dbname=no_such_database"
    pooler = sluice(auth_type="scram-sha-256", auth_user="aq_fix_lookup", auth_dbname="aqbad",
                    databases={"aqbad": bad})
    try:
        for _ in range(3):    # the first login, and the ones while the side channel is down
            started = time.monotonic()
            err = pgwire.login_error(pooler.host, pooler.port, "aq_fix_role", "app",
                                     password="aq_pw", timeout=10)
            assert time.monotonic() - started < 3, "login waited for the auth_query database"
            assert err.sqlstate == "08006", err
            assert "no_such_database" in err.fields.get("detail", ""), err.fields
        # roles in auth_file are not affected
        with pooler.connect() as conn:
            assert conn.execute("select 1").fetchone() == (1,)
    finally:
        pg.query("DROP ROLE IF EXISTS aq_fix_role")
        pg.query("DROP ROLE IF EXISTS aq_fix_lookup")


# -- item 4: a cancel reaches only its own client's query -------------------------------
CANCEL_REQUEST_CODE = 80877102


def _send_cancel(pooler, key):
    """One CancelRequest for key (pid, secret) on its own connection, as libpq sends it."""
    with socket.create_connection((pooler.host, pooler.port), timeout=10) as sock:
        sock.sendall(struct.pack("!IIII", 16, CANCEL_REQUEST_CODE, key[0], key[1]))
        sock.settimeout(10)
        try:
            sock.recv(1)      # the pooler closes the connection
        except OSError:
            pass


def _cancel_storm(pooler, key, n=100):
    """n CancelRequests for key, sent as close to at once as threads allow."""
    gate = threading.Barrier(n)

    def one():
        gate.wait(10)
        _send_cancel(pooler, key)
    threads = [threading.Thread(target=one, daemon=True) for _ in range(n)]
    for t in threads:
        t.start()
    return threads


def _session(pooler):
    return pgwire.login(pooler.host, pooler.port, "app", "app", password="app_pw", timeout=20)


def test_100_concurrent_cancels_stop_only_the_owners_query(sluice):
    pooler = sluice(pool_mode="transaction", default_pool_size=1, reserve_pool_size=0)
    for _ in range(3):     # the race is timing-dependent: three rounds
        _one_cancel_round(pooler)
    # a cancel for a client without a server (idle or waiting) hits nobody
    _cancel_without_server(pooler)


def _one_cancel_round(pooler):
    with _session(pooler) as a, _session(pooler) as b:
        a.send(b"Q", b"select pg_sleep(5)\0")
        time.sleep(0.5)
        # b queues behind a for the one server
        b.send(b"Q", b"select pg_sleep(1), 'b finished'\0")
        time.sleep(0.3)
        storm = _cancel_storm(pooler, a.backend_key)
        with pytest.raises(pgwire.ServerError) as caught:
            a.read_until_ready()
        assert caught.value.sqlstate == "57014", caught.value
        rows = pgwire.data_rows(b.read_until_ready())
        assert rows == [["", "b finished"]], rows
        for t in storm:
            t.join(15)
        # both sessions go on working
        assert a.query("select 1") == [["1"]]
        assert b.query("select 2") == [["2"]]


def _cancel_without_server(pooler):
    with _session(pooler) as idle, _session(pooler) as busy, _session(pooler) as waiting:
        busy.send(b"Q", b"select pg_sleep(1.5), 'busy finished'\0")
        time.sleep(0.3)
        waiting.send(b"Q", b"select 'waiting finished'\0")
        time.sleep(0.2)
        # idle has no server (transaction pooling), waiting waits for one
        storm = _cancel_storm(pooler, idle.backend_key, 50) + \
            _cancel_storm(pooler, waiting.backend_key, 50)
        for t in storm:
            t.join(15)
        assert pgwire.data_rows(busy.read_until_ready()) == [["", "busy finished"]]
        assert pgwire.data_rows(waiting.read_until_ready()) == [["waiting finished"]]
        assert idle.query("select 3") == [["3"]]


# -- item 9: per-database and per-user limits do not starve a pool ----------------------
LIMIT_USERS = [f"lim_user{i}" for i in range(5)]


@pytest.fixture
def five_users(pg, monkeypatch):
    """Five roles that log in to database app, known to the pooler's auth_file."""
    for user in LIMIT_USERS:
        pg.query(f"DROP ROLE IF EXISTS {user}")
        pg.query(f"CREATE ROLE {user} LOGIN PASSWORD '{user}_pw'")
        monkeypatch.setitem(harness.PASSWORDS, user, f"{user}_pw")
    yield LIMIT_USERS
    for user in LIMIT_USERS:
        pg.query("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE usename = %s",
                 (user,))
    for user in LIMIT_USERS:
        wait_for(lambda: not pg.query("SELECT 1 FROM pg_stat_activity WHERE usename = %s",
                                      (user,)), 5, what=f"{user}'s backends gone")
        pg.query(f"DROP ROLE IF EXISTS {user}")


def _server_counter(pooler, column, value):
    """A function counting the pooler's own servers (SHOW SERVERS) whose column is value.

    PostgreSQL lists a backend a moment after its connection closed, so the
    limit is checked on the pooler's side."""
    console = pgwire.login(pooler.host, pooler.port, "app", "pgsluice", password="app_pw")
    index = {"user": 1, "database": 2}[column]

    def count():
        return sum(1 for row in console.query("SHOW SERVERS") if row[index] == value)
    return console, count


def _clients_all_finish(pooler, logins, max_servers, count_servers):
    """Run one short session per (user, dbname) at once; all must finish within the limit."""
    errors, done = [], []
    peak = 0

    def one(user, dbname):
        try:
            with pooler.connect(user=user, dbname=dbname, connect_timeout=20) as conn:
                assert conn.execute("select pg_sleep(0.3), 1").fetchone()[1] == 1
            done.append(user)
        except Exception as exc:   # reported below
            errors.append(f"{user}@{dbname}: {exc!r}")
    threads = [threading.Thread(target=one, args=login, daemon=True) for login in logins]
    for t in threads:
        t.start()
    deadline = time.monotonic() + 20
    while any(t.is_alive() for t in threads) and time.monotonic() < deadline:
        peak = max(peak, count_servers())
        time.sleep(0.05)
    for t in threads:
        t.join(1)
    assert not errors, errors
    assert len(done) == len(logins), f"{len(done)} of {len(logins)} clients finished"
    assert 0 < peak <= max_servers, f"{peak} servers, limit {max_servers}"


def test_max_db_connections_serves_ten_clients_of_five_users(pg, sluice, five_users):
    pooler = sluice(max_db_connections=4, default_pool_size=4, query_wait_timeout=15)
    logins = [(user, "app") for user in five_users for _ in range(2)]
    console, servers = _server_counter(pooler, "database", "app")
    with console:
        _clients_all_finish(pooler, logins, 4, servers)
        # and once more, now that other pools hold idle servers
        _clients_all_finish(pooler, logins, 4, servers)


def test_max_user_connections_serves_ten_clients_of_five_databases(pg, sluice):
    entry = f"host={pg.host} port={pg.port} dbname=app"
    databases = {f"limdb{i}": entry for i in range(5)}
    pooler = sluice(databases=databases, max_user_connections=2, default_pool_size=2,
                    query_wait_timeout=15)
    logins = [("app", db) for db in databases for _ in range(2)]
    console, servers = _server_counter(pooler, "user", "app")
    with console:
        _clients_all_finish(pooler, logins, 2, servers)
        _clients_all_finish(pooler, logins, 2, servers)
