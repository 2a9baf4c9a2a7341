# SPDX-License-Identifier: PostgreSQL
"""Hardening under pressure (issue 13): connection storms, file descriptor exhaustion,
a PostgreSQL restart, and clients that hang up while they wait for a server.

Each test is bounded: a fixed number of sockets on loopback, loops that end by
themselves, and timing bounds several times what a loaded 2-core machine needs.
"""

import os
import resource
import socket
import struct
import threading
import time

import psycopg
import pytest
from harness import wait_for

import pgwire

# serial (conftest.py): file descriptor limits, CPU spent and time bounds need the
# machine to themselves, not two more pytest-xdist workers beside them
pytestmark = pytest.mark.serial

PROTOCOL_V3 = 196608


def raw_sockets(pooler, n, startup_user=None):
    """n TCP connections to the pooler. With startup_user, each sends a StartupMessage
    and then stays silent in the middle of authentication (a slow login); without,
    each sends the first byte of a packet and stops (an idle socket). A socket that
    sends nothing at all is not even accepted (tcp_defer_accept, on by default:
    test_pgb_parity_c.py); one byte gets it past the kernel to pgsluice's own bounds."""
    socks = []
    for _ in range(n):
        s = socket.create_connection((pooler.host, pooler.port), timeout=10)
        if startup_user:
            body = struct.pack("!I", PROTOCOL_V3)
            for key, value in (("user", startup_user), ("database", "app")):
                body += key.encode() + b"\0" + value.encode() + b"\0"
            body += b"\0"
            s.sendall(struct.pack("!I", len(body) + 4) + body)
        else:
            s.sendall(b"\0")
        socks.append(s)
    return socks


def close_all(socks):
    for s in socks:
        try:
            s.close()
        except OSError:
            pass


def select_one(pooler, timeout=20):
    with pooler.connect(connect_timeout=timeout) as conn:
        return conn.execute("select 1").fetchone()[0]


def logins_in_parallel(pooler, n):
    """n psycopg logins at once, each running one query; the errors (empty: all worked)."""
    errors = []

    def one():
        try:
            assert select_one(pooler) == 1
        except Exception as err:    # noqa: BLE001 - reported below
            errors.append(err)
    threads = [threading.Thread(target=one, daemon=True) for _ in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    return errors


# -- 1. connection storms ------------------------------------------------------------
def test_sockets_still_logging_in_do_not_count_against_max_client_conn(sluice):
    """120 sockets that never finish logging in (half say nothing, half stop after the
    StartupMessage) with max_client_conn = 50: real clients still log in, because only
    logged-in clients count against max_client_conn (PgBouncer counts every socket, and
    so did pgsluice: such a burst refused everyone with 53300)."""
    pooler = sluice(max_client_conn=50, default_pool_size=10)
    burst = raw_sockets(pooler, 60) + raw_sockets(pooler, 60, startup_user="app")
    try:
        time.sleep(0.5)    # all of them accepted
        errors = logins_in_parallel(pooler, 10)
        assert not errors, errors[:3]
        with pooler.connect(dbname="pgsluice") as admin:
            lists = dict(admin.execute("SHOW LISTS").fetchall())
        assert lists["login_clients"] >= 100, lists
    finally:
        close_all(burst)
    started = time.monotonic()
    assert select_one(pooler) == 1
    assert time.monotonic() - started < 5, "a client after the burst waited too long"


def test_logged_in_clients_still_bounded_by_max_client_conn(sluice):
    """The bound moved, it did not go: with max_client_conn logged-in clients, the next
    is refused with 53300 even while sockets are still logging in."""
    pooler = sluice(max_client_conn=3, default_pool_size=3)
    slow = raw_sockets(pooler, 10, startup_user="app")
    conns = [pooler.connect() for _ in range(3)]
    try:
        err = pgwire.login_error(pooler.host, pooler.port, "app", "app", password="app_pw")
        assert err.sqlstate == "53300", err
        assert err.message == "no more connections allowed (max_client_conn)", err
    finally:
        close_all(slow)
        for conn in conns:
            conn.close()


def test_idle_sockets_beyond_max_login_clients_do_not_lock_out_a_client(sluice):
    """More idle sockets than max_login_clients (the 2,000 idle sockets of issue 13,
    scaled down): accepting pauses at the bound, the idle ones that have said nothing
    for a second make way, and a real client logs in."""
    pooler = sluice(max_client_conn=50, max_login_clients=40, default_pool_size=5)
    idle = raw_sockets(pooler, 120)
    try:
        started = time.monotonic()
        assert select_one(pooler, timeout=30) == 1
        assert time.monotonic() - started < 20, "idle sockets held a real client out too long"
        with pooler.connect(dbname="pgsluice", connect_timeout=30) as admin:
            lists = dict(admin.execute("SHOW LISTS").fetchall())
        assert lists["login_clients"] <= 40, lists    # never more than the bound
    finally:
        close_all(idle)
    assert "max_login_clients reached" in pooler.log_text(lines=None)


# -- 2. file descriptor exhaustion ---------------------------------------------------------
FD_LIMIT = 64


def _low_fd_limit():
    resource.setrlimit(resource.RLIMIT_NOFILE, (FD_LIMIT, FD_LIMIT))


def _cpu_seconds(pid):
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def test_fd_exhaustion_backs_off_quietly_and_recovers(sluice):
    pooler = sluice(start=False, max_client_conn=200, default_pool_size=2)
    pooler.child_setup = _low_fd_limit
    pooler.start()
    log = pooler.log_text(lines=None)
    assert "file descriptor limit (64) is below" in log, log

    extra = raw_sockets(pooler, FD_LIMIT + 40)     # more than the process may open
    try:
        time.sleep(1)     # accept() has hit EMFILE by now
        before = _cpu_seconds(pooler.pid)
        time.sleep(2)
        spent = _cpu_seconds(pooler.pid) - before
        assert spent < 0.5, f"pgsluice used {spent:.2f} s of CPU in 2 s at the fd limit"
        failures = [line for line in pooler.log_text(lines=None).splitlines()
                    if "accept() failed" in line]
        assert 1 <= len(failures) <= 5, failures[:10]
        assert "Too many open files" in failures[0], failures[0]
    finally:
        close_all(extra)
    wait_for(lambda: _logs_in(pooler), 15, interval=0.5,
             what="a client logs in once the extra sockets are gone")


def _logs_in(pooler):
    try:
        return select_one(pooler, timeout=5) == 1
    except psycopg.Error:
        return False


# -- 3. PostgreSQL restart -------------------------------------------------------------------
def test_waiting_client_is_served_soon_after_postgres_restarts(pg, sluice):
    """A client that arrives while PostgreSQL is down waits while pgsluice retries
    (100 ms doubling) and is served soon after PostgreSQL is back, instead of getting
    the last connection error replayed for server_login_retry (here 30 s)."""
    pooler = sluice(server_login_retry=30, query_wait_timeout=120)
    assert select_one(pooler) == 1
    result = {}

    def client():
        try:
            result["value"] = select_one(pooler, timeout=60)
        except Exception as err:    # noqa: BLE001 - checked below
            result["error"] = err
        result["done"] = time.monotonic()

    pg.stop()
    try:
        waiter = threading.Thread(target=client, daemon=True)
        waiter.start()
        time.sleep(1.5)      # several attempts fail meanwhile
        assert "done" not in result, f"the waiting client was answered: {result}"
    finally:
        pg.start()
    back = time.monotonic()
    waiter.join(30)
    assert result.get("value") == 1, result
    assert result["done"] - back < 5, f"served {result['done'] - back:.1f} s after the restart"
    with pooler.connect() as conn:
        assert conn.execute("select 2").fetchone() == (2,)


def test_client_waits_for_postgresql_until_query_wait_timeout_and_learns_why(pg, sluice):
    """PostgreSQL down for good: a client waits while the login is retried, as
    with PgBouncer, and gets query_wait_timeout naming the last failure."""
    pooler = sluice(server_login_retry=1, query_wait_timeout=2)
    assert select_one(pooler) == 1
    pg.stop()
    try:
        for _ in range(2):
            started = time.monotonic()
            with pytest.raises(pgwire.ServerError) as caught:
                with pgwire.login(pooler.host, pooler.port, "app", "app", password="app_pw",
                                  timeout=15) as sess:
                    sess.query("select 1")
            err = caught.value
            waited = time.monotonic() - started
            assert (err.sqlstate, err.message) == ("53300", "query_wait_timeout"), err
            assert "The last server login failed" in err.fields.get("detail", ""), err.fields
            assert 1.9 <= waited < 8, f"answered after {waited:.1f} s"
    finally:
        pg.start()


# -- 4. clients that hang up while waiting for a server -------------------------------------------
def _cl_waiting(pooler):
    with pooler.connect(dbname="pgsluice") as admin:
        cur = admin.execute("SHOW POOLS")
        cols = [d.name for d in cur.description]
        return sum(dict(zip(cols, row))["cl_waiting"] for row in cur.fetchall()
                   if dict(zip(cols, row))["database"] == "app")


def test_waiting_client_hangup_leaves_the_queue_at_once(sluice):
    pooler = sluice(default_pool_size=1, pool_mode="transaction", query_wait_timeout=60)
    holder = pooler.connect(autocommit=False)
    holder.execute("select 1")          # in a transaction: the pool's only server is taken
    hangers = []
    try:
        for _ in range(20):
            sess = pgwire.login(pooler.host, pooler.port, "app", "app", password="app_pw")
            sess.send(b"Q", b"select 1\0")    # queues for the server
            hangers.append(sess)
        wait_for(lambda: _cl_waiting(pooler) == 20, 10, what="20 clients waiting")
        result = {}

        def live():
            try:
                result["value"] = select_one(pooler, timeout=30)
            except psycopg.Error as err:
                result["error"] = err
        live_thread = threading.Thread(target=live, daemon=True)
        live_thread.start()
        wait_for(lambda: _cl_waiting(pooler) == 21, 10, what="the live client waiting too")
        for sess in hangers:
            sess.close()
        wait_for(lambda: _cl_waiting(pooler) == 1, 5, interval=0.2,
                 what="clients that hung up gone from the queue")
        holder.commit()
        live_thread.join(10)
        assert result.get("value") == 1, result
    finally:
        for sess in hangers:
            sess.close()
        holder.close()
