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


