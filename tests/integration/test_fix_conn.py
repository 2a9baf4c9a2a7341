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
