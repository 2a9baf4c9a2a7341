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
