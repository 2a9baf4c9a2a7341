# SPDX-License-Identifier: PostgreSQL
"""Issue 12, item 4: shutdown as PgBouncer >= 1.23 (usage.md "Signals", "Process control commands").

SIGTERM (SHUTDOWN WAIT_FOR_CLIENTS) serves the connected clients until they disconnect;
SIGINT (SHUTDOWN WAIT_FOR_SERVERS) closes each client once it holds no transaction open;
a second SIGINT/SIGTERM stops waiting; every path stores usage records and removes the pidfile.
New pooled logins meanwhile: TCP is closed, the unix socket answers 57P03.
"""
import signal
import socket
import struct
import time

import psycopg
import pytest

import harness
import pgwire
from harness import wait_for
from test_ai_usage import connect as usage_connect
from test_ai_usage import insert, usage_count, usage_pooler
from test_admin import Background
from test_migrate import fresh_db  # noqa: F401 (fixture)

ADMIN_SHUTDOWN = "57P01"
CANNOT_CONNECT_NOW = "57P03"


# -- helpers -------------------------------------------------------------------------
def unix_login_error(pooler, dbname="app", user="app"):
    """The ErrorResponse a StartupMessage on the unix socket gets (trust-free: it is sent
    before authentication), as a pgwire.ServerError."""
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.settimeout(5)
    sock.connect(str(pooler.workdir / f".s.PGSQL.{pooler.port}"))
    sess = pgwire.Session(sock, 5)
    try:
        body = struct.pack("!I", 196608)
        for key, value in {"user": user, "database": dbname}.items():
            body += key.encode() + b"\0" + value.encode() + b"\0"
        sess.send(b"", body + b"\0")
        msg_type, body = sess.read()
        assert msg_type == "E", f"expected an ErrorResponse, got {msg_type!r}"
        return pgwire.ServerError(pgwire._parse_fields(body))
    finally:
        sess.close()


def console_unix(pooler):
    """A console session over the unix socket (TCP is closed while a shutdown waits)."""
    return psycopg.connect(pooler.dsn(dbname="pgsluice", host=str(pooler.workdir)),
                           autocommit=True, cursor_factory=psycopg.ClientCursor)


def tcp_refused(pooler):
    with pytest.raises(OSError):
        socket.create_connection((pooler.host, pooler.port), timeout=2).close()
    return True


def exited(pooler, timeout=10):
    """Wait for the process to end on its own; it must exit 0 with its pidfile removed."""
    assert pooler.proc.wait(timeout=timeout) == 0, pooler.log_text()
    assert not pooler.pidfile.exists(), "pidfile left behind"
    pooler._stopped = True      # stopped on purpose: nothing for the fixture to report
    pooler._stderr.close()
    reports = [line for line in pooler.log_text(lines=None).splitlines()
               if harness.SANITIZER_REPORT.search(line)]
    assert not reports, "\n".join(reports[:20])
    return True


def still_running(pooler, seconds=0.6):
    time.sleep(seconds)
    return pooler.proc.poll() is None


# -- SIGTERM: WAIT_FOR_CLIENTS -------------------------------------------------------
def test_sigterm_lets_a_client_in_a_transaction_commit_then_exits(sluice, pg, fresh_db):
    pooler = usage_pooler(sluice, pg, fresh_db, usage_flush_interval="60")
    pooler.start()
    conn = usage_connect(pooler, autocommit=False)
    insert(conn, 1, extended=False)                      # a transaction is open
    pooler.proc.send_signal(signal.SIGTERM)
    assert still_running(pooler), "SIGTERM did not wait for the connected client"

    assert tcp_refused(pooler)
    err = unix_login_error(pooler, dbname="usage")
    assert (err.severity, err.sqlstate, err.message) == ("FATAL", CANNOT_CONNECT_NOW,
                                                         "pgsluice is shutting down")
    insert(conn, 2, extended=True)                       # the client keeps working
    conn.commit()
    assert conn.execute("SELECT count(*) FROM answers").fetchone() == (2,)
    assert still_running(pooler, 0.3)
    conn.close()
    assert exited(pooler)
    assert usage_count(pg, fresh_db) == (2, 2)           # stored before exit
    assert pg.query("SELECT count(*) FROM answers", dbname=fresh_db) == [(2,)]


def test_a_second_sigterm_stops_waiting_for_clients(sluice):
    pooler = sluice()
    conn = pooler.connect()
    conn.execute("SELECT 1")
    pooler.proc.send_signal(signal.SIGTERM)
    assert still_running(pooler)
    started = time.monotonic()
    pooler.proc.send_signal(signal.SIGTERM)
    assert exited(pooler)
    assert time.monotonic() - started < 5
    with pytest.raises(psycopg.OperationalError):
        conn.execute("SELECT 1")
    conn.close()


# -- SIGINT: WAIT_FOR_SERVERS ---------------------------------------------------------
# transaction pooling: under session pooling an idle client keeps its server until it
# disconnects, as PgBouncer's (test_pgb_parity_d.py test_repeated_signal_waits_then_exits)
@pytest.mark.parametrize("pool_mode", ["transaction"])
def test_sigint_closes_idle_clients_and_lets_a_transaction_finish(sluice, pool_mode):
    pooler = sluice(pool_mode=pool_mode)
    idle = pooler.connect()
    idle.execute("SELECT 1")
    busy = pooler.connect(autocommit=False)
    busy.execute("CREATE TEMP TABLE t (x int)" if pool_mode == "session" else "SELECT 1")
    pooler.proc.send_signal(signal.SIGINT)

    # idle sends nothing until pgsluice sent it the FATAL (logged as a pooler error then;
    # "closing because" comes only when the lingering close ends, up to 5 s later): a
    # query in flight before could be answered by the kernel's RST instead
    wait_for(lambda: "pooler error: server shutting down" in pooler.logfile.read_text(errors="replace"),
             10, what="idle client sent its FATAL")
    with pytest.raises(psycopg.OperationalError) as closed:
        idle.execute("SELECT 1")
    assert "server shutting down" in str(closed.value)
    assert tcp_refused(pooler)
    assert pooler.proc.poll() is None, "SIGINT did not wait for the open transaction"

    assert busy.execute("SELECT 2").fetchone() == (2,)  # its transaction goes on
    busy.commit()
    assert exited(pooler)
    with pytest.raises(psycopg.OperationalError):
        busy.execute("SELECT 3")
    idle.close()
    busy.close()


def test_sigint_with_only_idle_clients_tells_them_why_and_exits(sluice):
    pooler = sluice(pool_mode="transaction")
    idle = pooler.connect()
    idle.execute("SELECT 1")
    pooler.proc.send_signal(signal.SIGINT)
    assert exited(pooler, timeout=5)
    with pytest.raises(psycopg.OperationalError) as closed:
        idle.execute("SELECT 1")
    assert "server shutting down" in str(closed.value)
    idle.close()


def test_a_second_sigint_stops_waiting_for_a_transaction(sluice):
    pooler = sluice()
    busy = pooler.connect(autocommit=False)
    busy.execute("SELECT 1")
    pooler.proc.send_signal(signal.SIGINT)
    assert still_running(pooler)
    pooler.proc.send_signal(signal.SIGINT)
    assert exited(pooler, timeout=5)
    busy.close()


# -- the console ----------------------------------------------------------------------
def test_shutdown_wait_for_clients_on_the_console(sluice):
    pooler = sluice()
    client = pooler.connect()
    client.execute("SELECT 1")
    with console_unix(pooler) as admin:
        admin.execute("SHUTDOWN WAIT_FOR_CLIENTS")
        assert tcp_refused(pooler)
        assert still_running(pooler)
        # the console stays usable; RESUME does not undo a shutdown (PgBouncer)
        assert admin.execute("SHOW VERSION").fetchone()
        with pytest.raises(psycopg.Error) as again:
            admin.execute("SHUTDOWN WAIT_FOR_SERVERS")
        assert again.value.sqlstate == "55000"
        assert again.value.diag.message_primary == "pgsluice is already shutting down"
        with pytest.raises(psycopg.Error) as resume:
            admin.execute("RESUME")
        assert resume.value.sqlstate == "08P01"                       # PgBouncer's
        assert resume.value.diag.message_primary == "pooler is shutting down"
        assert client.execute("SELECT 2").fetchone() == (2,)
        client.close()
        assert exited(pooler)


def test_shutdown_wait_for_servers_on_the_console(sluice):
    pooler = sluice(pool_mode="transaction")
    busy = pooler.connect(autocommit=False)
    busy.execute("SELECT 1")
    with console_unix(pooler) as admin:
        admin.execute("SHUTDOWN WAIT_FOR_SERVERS")
        assert still_running(pooler)
        err = unix_login_error(pooler)
        assert (err.sqlstate, err.message) == (CANNOT_CONNECT_NOW, "pgsluice is shutting down")
        busy.commit()
        assert exited(pooler)
    busy.close()


def test_plain_shutdown_ends_a_waiting_shutdown_at_once(sluice):
    """SHUTDOWN WAIT_FOR_CLIENTS waits for the client in a transaction; a plain SHUTDOWN
    then stops at once, as a second SIGTERM would."""
    pooler = sluice()
    busy = pooler.connect(autocommit=False)
    busy.execute("SELECT 1")
    with console_unix(pooler) as admin:
        with pytest.raises(psycopg.Error) as bad:
            admin.execute("SHUTDOWN WAIT_FOR_NOBODY")
        assert bad.value.sqlstate == "42601"
        assert still_running(pooler, 0.1)
        admin.execute("SHUTDOWN WAIT_FOR_CLIENTS")
        assert still_running(pooler)
        try:
            admin.execute("SHUTDOWN")
        except psycopg.OperationalError:
            pass    # the answer may be lost with the connection
    assert exited(pooler, timeout=5)
    busy.close()


def show(conn, what):
    cur = conn.execute(f"SHOW {what}")
    names = [d.name for d in cur.description]
    return [dict(zip(names, row)) for row in cur.fetchall()]


def test_disable_refuses_new_logins_until_enable(sluice):
    pooler = sluice()
    connected = pooler.connect()
    with console_unix(pooler) as admin:
        admin.execute("DISABLE app")
        assert {r["name"]: r for r in show(admin, "DATABASES")}["app"]["disabled"] == 1
        err = pgwire.login_error(pooler.host, pooler.port, "app", "app", password="app_pw")
        assert (err.severity, err.sqlstate, err.message) == (
            "FATAL", "55000", 'database "app" is disabled')
        assert connected.execute("SELECT 1").fetchone() == (1,)   # connected clients stay
        for bad, sqlstate in (("DISABLE", "42601"), ("DISABLE nosuchdb", "08P01"),
                              ("ENABLE", "42601")):
            with pytest.raises(psycopg.Error) as refused:
                admin.execute(bad)
            assert refused.value.sqlstate == sqlstate, bad
        admin.execute("ENABLE app")
        assert {r["name"]: r for r in show(admin, "DATABASES")}["app"]["disabled"] == 0
    with pooler.connect() as again:
        assert again.execute("SELECT 2").fetchone() == (2,)
    connected.close()


def state(admin):
    return dict(admin.execute("SHOW STATE").fetchall())


def test_suspend_holds_every_socket_until_resume(sluice):
    pooler = sluice()
    client = pooler.connect()
    client.execute("SELECT 1")
    with console_unix(pooler) as admin:
        admin.execute("SUSPEND")
        assert state(admin) == {"active": "no", "paused": "no", "suspended": "yes"}
        query = Background(lambda: client.execute("SELECT 2").fetchone())
        assert not query.finished(1.0), "a suspended pgsluice answered a query"
        with pytest.raises(TimeoutError):      # accepted by the kernel, not by pgsluice
            pgwire.login(pooler.host, pooler.port, "app", "app", password="app_pw", timeout=1)
        for command in ("SUSPEND", "PAUSE"):
            with pytest.raises(psycopg.Error) as refused:
                admin.execute(command)
            assert refused.value.sqlstate == "55000", command
            assert refused.value.diag.message_primary == "pgsluice is already suspended"

        admin.execute("RESUME")
        assert query.finished(5) and query.error is None and query.result == (2,)
        assert state(admin) == {"active": "yes", "paused": "no", "suspended": "no"}
        with pooler.connect() as other:
            assert other.execute("SELECT 3").fetchone() == (3,)

        # SIGTERM while suspended goes down at once (PgBouncer)
        admin.execute("SUSPEND")
        pooler.proc.send_signal(signal.SIGTERM)
        assert exited(pooler, timeout=5)
    client.close()
